//! Finds or starts the `DeviceActor` of a device, spreading actors over the arbiters
//! (threads) of its lane by a stable hash of the device id.
//!
//! There are two lanes of arbiters, each one per core: a device whose actor starts with
//! a live batch runs on the live lane, one that starts with backlog on the backlog lane,
//! so a live check-in never waits in a thread's queue behind a backlog batch being
//! deduplicated and encoded. An actor that gets a batch of the other lane stops after it
//! (if nothing is queued behind it), so the device's next batch starts on its lane.
//!
//! Memory follows active devices: an actor stops itself after its idle timeout and
//! leaves the registry, and the next batch of that device starts a fresh one, which
//! resumes from the store.
//!
//! Each device's mailbox is bounded by a semaphore: a queued batch holds a permit until
//! it is answered. An idle actor stops only after taking every permit and closing the
//! semaphore, so no batch can be queued to an actor that is stopping: a sender that
//! finds the semaphore closed starts a fresh actor instead.

use crate::conflict_actor::ConflictActorOptions;
use crate::conflict_actors::ConflictActors;
use crate::device_actor::{BatchOutcome, DeviceActor, EvaluateWaiting, IngestBatch, MailboxSlot, ReadProgress, Upload};
use crate::employee_timeline::{Decision, ResolveError};
use crate::metrics::DeviceMetrics;
use crate::retry::RetryPolicy;
use crate::store::{ConflictRecord, Resolution};
use crate::store::{DeviceProgress, Store, StoreError};
use actix::dev::SendError;
use actix::prelude::*;
use dashmap::DashMap;
use prometheus::IntCounter;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore, TryAcquireError};

/// How device actors live.
#[derive(Debug, Clone)]
pub struct DeviceActorOptions {
    /// An actor with no message for this long stops.
    pub idle_timeout: Duration,
    /// An employee's cached timeline with no request for this long is dropped; it is
    /// cheap to read again, and a storm touches many employees once each.
    pub conflict_idle_timeout: Duration,
    /// The most employees whose timelines are cached at once, all conflict actors
    /// together; beyond it the least recently used are dropped.
    pub conflict_cached_employees: usize,
    /// Batches that may queue for one device; beyond it the device gets 429.
    pub mailbox_capacity: usize,
    /// Arbiter threads of each lane (live and backlog) the actors are spread over.
    pub arbiters: usize,
    /// Whether records are evaluated for conflicts at all (off: stored and acked only).
    pub detect_conflicts: bool,
    /// Backlog placements each conflict actor runs at once. One keeps a live check-in's
    /// wait behind backlog shortest when the store answers in microseconds (embedded);
    /// a store across the network needs several in flight to keep busy.
    pub conflict_backlog_placements: usize,
    /// How a batch's commit is retried when the store fails transiently.
    pub store_retry: RetryPolicy,
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

/// The arbiters a device actor runs on: chosen by the batch that starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Live,
    Backlog,
}

impl Lane {
    pub(crate) fn of(live: bool) -> Self {
        if live {
            Lane::Live
        } else {
            Lane::Backlog
        }
    }
}

struct Inner {
    actors: DashMap<Arc<str>, DeviceEntry>,
    /// Devices to wake when records waiting behind a gap are due (see `run_wake_ups`).
    wake_ups: mpsc::UnboundedSender<(Instant, Arc<str>)>,
    conflicts: Arc<ConflictActors>,
    live_arbiters: Vec<ArbiterHandle>,
    backlog_arbiters: Vec<ArbiterHandle>,
    store: Arc<dyn Store>,
    options: DeviceActorOptions,
    metrics: DeviceMetrics,
}

impl DeviceRegistry {
    /// Starts the arbiters; must run inside an actix `System`.
    pub fn start(store: Arc<dyn Store>, options: DeviceActorOptions, metrics: DeviceMetrics) -> Self {
        let lane = || -> Vec<ArbiterHandle> { (0..options.arbiters.max(1)).map(|_| Arbiter::new().handle()).collect() };
        let (live_arbiters, backlog_arbiters) = (lane(), lane());
        let conflict_options = ConflictActorOptions {
            store: store.clone(),
            idle_timeout: options.conflict_idle_timeout,
            max_employees: options.conflict_cached_employees,
            backlog_placements: options.conflict_backlog_placements,
            cached: metrics.conflict_employees_cached.clone(),
            waiting: metrics.conflict_requests_waiting.clone(),
        };
        let conflicts = ConflictActors::start(conflict_options, backlog_arbiters.len(), metrics.conflicts.clone());
        metrics.conflict_actors_active.set(backlog_arbiters.len() as i64);
        let (wake_ups, due) = mpsc::unbounded_channel();
        let inner = Inner {
            actors: DashMap::new(),
            wake_ups,
            conflicts: Arc::new(conflicts),
            live_arbiters,
            backlog_arbiters,
            store,
            options,
            metrics,
        };
        let registry = DeviceRegistry { inner: RegistryHandle(Arc::new(inner)) };
        actix::spawn(registry.clone().run_wake_ups(due));
        registry
    }

    /// Queues an upload for its device without waiting, and returns where its outcome
    /// will arrive; `DeviceBusy` if the device already has a full mailbox.
    pub fn ingest(
        &self,
        device_id: &str,
        upload: Upload,
    ) -> Result<oneshot::Receiver<Result<BatchOutcome, StoreError>>, DeviceBusy> {
        let (reply, outcome) = oneshot::channel();
        let lane = Lane::of(upload.live);
        let mut upload = Some((upload, reply));
        // An actor that has just stopped is replaced once by a fresh one.
        for _ in 0..2 {
            let entry = self.entry(device_id, lane);
            let mailbox_slot = match entry.mailbox.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(TryAcquireError::NoPermits) => break,
                Err(TryAcquireError::Closed) => {
                    self.inner.forget(device_id, &entry.actor);
                    continue;
                }
            };
            let (upload_now, reply) = upload.take().expect("an upload is sent at most once");
            let mailbox_slot = MailboxSlot::new(mailbox_slot, self.inner.0.metrics.mailbox_batches.clone());
            match entry.actor.try_send(IngestBatch { upload: upload_now, reply, mailbox_slot }) {
                Ok(()) => return Ok(outcome),
                Err(SendError::Full(_)) => break,
                Err(SendError::Closed(returned)) => {
                    self.inner.forget(device_id, &entry.actor);
                    upload = Some((returned.upload, returned.reply));
                }
            }
        }
        self.inner.0.metrics.mailbox_full.inc();
        Err(DeviceBusy(self.inner.0.options.mailbox_capacity))
    }

    /// The device's progress as its actor sees it.
    pub async fn progress(&self, device_id: &str) -> Result<DeviceProgress, StoreError> {
        // A read has no effect, so it may simply be asked again of a fresh actor.
        let entry = self.entry(device_id, Lane::Backlog);
        if let Ok(progress) = entry.actor.send(ReadProgress).await {
            return progress;
        }
        self.inner.forget(device_id, &entry.actor);
        self.entry(device_id, Lane::Backlog)
            .actor
            .send(ReadProgress)
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?
    }

    /// Settles a conflict as an administrator decided.
    pub async fn resolve_conflict(
        &self,
        conflict: &ConflictRecord,
        resolution: Resolution,
        note: String,
        resolved_at: i64,
    ) -> Result<ConflictRecord, ResolveError> {
        let decision = Decision { conflict_id: conflict.id.clone(), resolution, note, resolved_at };
        self.inner.0.conflicts.resolve(conflict, decision).await
    }

    /// Wakes the actors of devices whose records wait behind a gap (after a restart),
    /// so the gap timeout evaluates them even if the device never sends again.
    pub async fn resume_waiting(&self) -> Result<usize, StoreError> {
        let waiting = self.inner.0.store.devices_waiting_for_evaluation().await?;
        for device_id in &waiting {
            let (registry, device_id) = (self.clone(), device_id.clone());
            actix::spawn(async move { registry.evaluate_waiting(&device_id).await });
        }
        Ok(waiting.len())
    }

    /// Sends `EvaluateWaiting` to each device when its wake-up is due. One entry per
    /// device with records behind a gap, so the queue is bounded by the devices.
    async fn run_wake_ups(self, mut requests: mpsc::UnboundedReceiver<(Instant, Arc<str>)>) {
        let mut due: BinaryHeap<Reverse<(Instant, Arc<str>)>> = BinaryHeap::new();
        loop {
            let next = due.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => due.push(Reverse(request)),
                    None => return,
                },
                () = sleep_until_or_forever(next) => {
                    while let Some(Reverse((at, device_id))) = due.peek() {
                        if *at > Instant::now() {
                            break;
                        }
                        let (registry, device_id) = (self.clone(), device_id.clone());
                        actix::spawn(async move { registry.evaluate_waiting(&device_id).await });
                        due.pop();
                    }
                }
            }
        }
    }

    /// Asks a device's actor to evaluate its waiting records; an actor that stopped
    /// just then is replaced by a fresh one, which resumes from the store.
    async fn evaluate_waiting(&self, device_id: &str) {
        let entry = self.entry(device_id, Lane::Backlog);
        if entry.actor.send(EvaluateWaiting).await.is_err() {
            self.inner.forget(device_id, &entry.actor);
            let _ = self.entry(device_id, Lane::Backlog).actor.send(EvaluateWaiting).await;
        }
    }

    /// Device actors alive now.
    pub fn active(&self) -> usize {
        self.inner.0.actors.len()
    }

    /// Stops the arbiters once nothing more will be sent.
    pub fn stop(&self) {
        for arbiter in self.inner.0.live_arbiters.iter().chain(&self.inner.0.backlog_arbiters) {
            arbiter.stop();
        }
        self.inner.0.conflicts.stop();
    }

    /// The device's actor; a new one starts on `lane`.
    fn entry(&self, device_id: &str, lane: Lane) -> DeviceEntry {
        if let Some(entry) = self.inner.0.actors.get(device_id) {
            return entry.clone();
        }
        let inner = &self.inner.0;
        inner
            .actors
            .entry(Arc::from(device_id))
            .or_insert_with(|| {
                let arbiters = if lane == Lane::Live { &inner.live_arbiters } else { &inner.backlog_arbiters };
                let arbiter = &arbiters[shard_of(device_id, arbiters.len())];
                let (id, store, registry) = (Arc::from(device_id), inner.store.clone(), self.inner.clone());
                let mailbox = Arc::new(Semaphore::new(inner.options.mailbox_capacity));
                let (idle_timeout, actor_mailbox) = (inner.options.idle_timeout, mailbox.clone());
                inner.metrics.active_actors.inc();
                let actor = DeviceActor::start_in_arbiter(arbiter, move |_ctx| {
                    DeviceActor::new(id, lane, store, registry, actor_mailbox, idle_timeout)
                });
                DeviceEntry { actor, mailbox }
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

    /// Wakes the device after `due_in`, to evaluate records waiting behind a gap.
    pub(crate) fn wake_up(&self, device_id: &str, due_in: Duration) {
        let _ = self.0.wake_ups.send((Instant::now() + due_in, Arc::from(device_id)));
    }

    /// The conflict actors, unless conflict detection is off.
    pub(crate) fn conflict_actors(&self) -> Option<Arc<ConflictActors>> {
        self.0.options.detect_conflicts.then(|| self.0.conflicts.clone())
    }

    /// How commits are retried, and the counter of retries.
    pub(crate) fn store_retry(&self) -> (RetryPolicy, IntCounter) {
        (self.0.options.store_retry, self.0.metrics.store_retries.clone())
    }

    /// All the slots of a device's mailbox, as a stopping actor takes them.
    pub(crate) fn mailbox_capacity(&self) -> u32 {
        self.0.options.mailbox_capacity as u32
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Which of `shards` a key belongs to (a device's arbiter, an employee's conflict
/// actor): the same for a key in every run.
pub(crate) fn shard_of<K: Hash + ?Sized>(key: &K, shards: usize) -> usize {
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::Incoming;
    use crate::metrics::StoreMetrics;
    use crate::store::{conformance, EmbeddedStore, EmbeddedStoreOptions};

    fn upload(seq: u64) -> Upload {
        let record = conformance::record(seq, "emp-1", 1_764_028_800_000);
        let incoming = Incoming { seq: seq as i64, record_id: record.record_id.clone(), verdict: Ok(record) };
        Upload {
            org_id: "acme".into(),
            batch_id: "b".into(),
            received_at: 0,
            reported_pending: None,
            records: vec![incoming],
            settings: Default::default(),
            live: false,
        }
    }

    fn start(dir: &tempfile::TempDir, options: DeviceActorOptions) -> (DeviceRegistry, DeviceMetrics) {
        let prometheus = prometheus::Registry::new();
        let store =
            EmbeddedStore::open(EmbeddedStoreOptions::new(dir.path()), StoreMetrics::register(&prometheus).unwrap())
                .unwrap();
        let metrics = DeviceMetrics::register(&prometheus).unwrap();
        (DeviceRegistry::start(Arc::new(store), options, metrics.clone()), metrics)
    }

    fn options(idle_timeout: Duration, mailbox_capacity: usize) -> DeviceActorOptions {
        DeviceActorOptions {
            idle_timeout,
            conflict_idle_timeout: idle_timeout,
            conflict_cached_employees: 1_000,
            mailbox_capacity,
            arbiters: 2,
            detect_conflicts: true,
            conflict_backlog_placements: 1,
            store_retry: Default::default(),
        }
    }

    /// An actor started by a live batch stops after a backlog batch, so the device's
    /// next batch starts on the backlog lane, where its actor then stays; nothing is
    /// lost on the way.
    #[actix_rt::test]
    async fn an_actor_moves_to_the_lane_of_its_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (devices, _) = start(&dir, options(Duration::from_secs(600), 4));
        let live = Upload { live: true, ..upload(1) };
        assert_eq!(devices.ingest("dev-lanes", live).unwrap().await.unwrap().unwrap().next_seq, 2);
        assert_eq!(devices.active(), 1, "a live batch of the live lane keeps its actor");
        assert_eq!(devices.ingest("dev-lanes", upload(2)).unwrap().await.unwrap().unwrap().next_seq, 3);
        for _ in 0..100 {
            if devices.active() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(devices.active(), 0, "the live-lane actor stopped after a backlog batch");
        assert_eq!(
            devices.ingest("dev-lanes", upload(3)).unwrap().await.unwrap().unwrap().next_seq,
            4,
            "a fresh actor resumed from the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(devices.active(), 1, "a backlog batch of the backlog lane keeps its actor");
        devices.stop();
    }

    /// Batches sent just as an idle actor stops are never dropped: each is answered,
    /// by the old actor or by a fresh one that resumed from the store.
    #[actix_rt::test]
    async fn batches_racing_an_idle_stop_are_all_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (devices, metrics) = start(&dir, options(Duration::from_millis(10), 2));
        for seq in 1..=150u64 {
            tokio::time::sleep(Duration::from_micros(seq * 97 % 25_000)).await;
            let outcome = devices.ingest("dev-race", upload(seq)).unwrap().await;
            let outcome = outcome.expect("the batch was answered, not dropped").unwrap();
            assert_eq!(outcome.next_seq, seq + 1);
        }
        assert!(
            metrics.actors_evicted.get() > 10,
            "the actor went idle and stopped between batches: {}",
            metrics.actors_evicted.get()
        );
        devices.stop();
    }
}
