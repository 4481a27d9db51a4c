//! Finds or starts the `DeviceActor` of a device, spreading actors over one arbiter
//! (thread) per core by a stable hash of the device id.
//!
//! Memory follows active devices: an actor stops itself after its idle timeout and
//! leaves the registry, and the next batch of that device starts a fresh one, which
//! resumes from the store.

use crate::device_actor::{BatchOutcome, DeviceActor, IngestBatch, ReadProgress, Upload};
use crate::metrics::DeviceMetrics;
use crate::store::{DeviceProgress, Store, StoreError};
use actix::dev::SendError;
use actix::prelude::*;
use dashmap::DashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

/// How device actors live.
#[derive(Debug, Clone)]
pub struct DeviceActorOptions {
    /// An actor with no message for this long stops.
    pub idle_timeout: Duration,
    /// Batches that may queue for one device; beyond it the device gets 429.
    pub mailbox_capacity: usize,
    /// Arbiter threads the actors are spread over.
    pub arbiters: usize,
}

/// A device's mailbox is full: it is sending faster than it is being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this device already has {0} batches waiting")]
pub struct DeviceBusy(pub usize);

#[derive(Clone)]
pub struct DeviceRegistry {
    inner: RegistryHandle,
}

/// What a device actor holds of its registry, to leave it when it stops.
#[derive(Clone)]
pub(crate) struct RegistryHandle(Arc<Inner>);

/// A live actor and the slots of its mailbox.
#[derive(Clone)]
struct DeviceEntry {
    actor: Addr<DeviceActor>,
    mailbox: Arc<Semaphore>,
}

struct Inner {
    actors: DashMap<Arc<str>, DeviceEntry>,
    arbiters: Vec<ArbiterHandle>,
    store: Arc<dyn Store>,
    options: DeviceActorOptions,
    metrics: DeviceMetrics,
}

impl DeviceRegistry {
    /// Starts the arbiters; must run inside an actix `System`.
    pub fn start(store: Arc<dyn Store>, options: DeviceActorOptions, metrics: DeviceMetrics) -> Self {
        let arbiters = (0..options.arbiters.max(1)).map(|_| Arbiter::new().handle()).collect();
        let inner = Inner { actors: DashMap::new(), arbiters, store, options, metrics };
        DeviceRegistry { inner: RegistryHandle(Arc::new(inner)) }
    }

    /// Queues an upload for its device without waiting, and returns where its outcome
    /// will arrive; `DeviceBusy` if the device already has a full mailbox.
    pub fn ingest(&self, device_id: &str, upload: Upload) -> Result<oneshot::Receiver<Result<BatchOutcome, StoreError>>, DeviceBusy> {
        let busy = DeviceBusy(self.inner.0.options.mailbox_capacity);
        let (reply, outcome) = oneshot::channel();
        let mut entry = self.entry(device_id);
        let Ok(mailbox_slot) = entry.mailbox.clone().try_acquire_owned() else {
            self.inner.0.metrics.mailbox_full.inc();
            return Err(busy);
        };
        let mut message = IngestBatch { upload, reply, mailbox_slot };
        // A stopped actor may linger in the map for a moment: retry once on a fresh one.
        for _ in 0..2 {
            match entry.actor.try_send(message) {
                Ok(()) => return Ok(outcome),
                Err(SendError::Full(_)) => break,
                Err(SendError::Closed(returned)) => {
                    self.inner.forget(device_id, &entry.actor);
                    message = returned;
                    entry = self.entry(device_id);
                }
            }
        }
        Err(busy)
    }

    /// The device's progress as its actor sees it.
    pub async fn progress(&self, device_id: &str) -> Result<DeviceProgress, StoreError> {
        self.entry(device_id)
            .actor
            .send(ReadProgress)
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?
    }

    /// Device actors alive now.
    pub fn active(&self) -> usize {
        self.inner.0.actors.len()
    }

    /// Stops the arbiters once nothing more will be sent.
    pub fn stop(&self) {
        for arbiter in &self.inner.0.arbiters {
            arbiter.stop();
        }
    }

    fn entry(&self, device_id: &str) -> DeviceEntry {
        if let Some(entry) = self.inner.0.actors.get(device_id) {
            return entry.clone();
        }
        let inner = &self.inner.0;
        inner
            .actors
            .entry(Arc::from(device_id))
            .or_insert_with(|| {
                let arbiter = &inner.arbiters[shard_of(device_id, inner.arbiters.len())];
                let (id, store, registry) = (Arc::from(device_id), inner.store.clone(), self.inner.clone());
                let idle_timeout = inner.options.idle_timeout;
                inner.metrics.active_actors.inc();
                let actor = DeviceActor::start_in_arbiter(arbiter, move |_ctx| DeviceActor::new(id, store, registry, idle_timeout));
                DeviceEntry { actor, mailbox: Arc::new(Semaphore::new(inner.options.mailbox_capacity)) }
            })
            .clone()
    }
}

impl RegistryHandle {
    /// Drops the map entry if it still names this (stopped) actor.
    pub(crate) fn forget(&self, device_id: &str, actor: &Addr<DeviceActor>) {
        if self.0.actors.remove_if(device_id, |_, current| current.actor == *actor).is_some() {
            self.0.metrics.active_actors.dec();
        }
    }

    pub(crate) fn evicted(&self) {
        self.0.metrics.actors_evicted.inc();
    }
}

/// The arbiter a device lives on: the same for a device id in every run.
fn shard_of(device_id: &str, shards: usize) -> usize {
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(device_id) % shards as u64) as usize
}
