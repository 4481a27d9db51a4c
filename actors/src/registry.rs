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
use crate::conflict_shards::ConflictShards;
use crate::device_actor::{
    DeviceActor, DeviceActorShared, DeviceDirectory, EvaluateWaiting, IngestBatch, Lane, MailboxSlot,
};
use crate::employee_timeline::{AdminDecision, ResolveError};
use crate::ingest::{BatchOutcome, IngestServices, Upload};
use crate::metrics::DeviceMetrics;
use crate::retry::RetryPolicy;
use crate::sharding::shard_of;
use crate::store::{ConflictRecord, Resolution};
use crate::store::{Store, StoreError};
use crate::supervision::{ActorKind, PanicWatch};
use actix::dev::SendError;
use actix::prelude::*;
use dashmap::DashMap;
use prometheus::IntGauge;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
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

/// Builds the device and conflict actors and hands each batch to its device's actor.
#[derive(Clone)]
pub struct DeviceRegistry {
    inner: Arc<Inner>,
}

/// A live actor and the slots of its mailbox.
#[derive(Clone)]
struct DeviceEntry {
    actor: Addr<DeviceActor>,
    mailbox: Arc<Semaphore>,
}

/// The device actors alive now, by device; what an actor tells when it stops.
struct Directory {
    actors: DashMap<Arc<str>, DeviceEntry>,
    /// Devices to wake when records waiting behind a gap are due (see `run_wake_ups`).
    wake_ups: mpsc::UnboundedSender<(Instant, Arc<str>)>,
    active_actors: IntGauge,
}

impl DeviceDirectory for Directory {
    fn forget(&self, device_id: &str, actor: &Addr<DeviceActor>) {
        if self.actors.remove_if(device_id, |_, current| current.actor == *actor).is_some() {
            self.active_actors.dec();
        }
    }

    fn wake_up(&self, device_id: &str, due_in: Duration) {
        let _ = self.wake_ups.send((Instant::now() + due_in, Arc::from(device_id)));
    }
}

struct Inner {
    directory: Arc<Directory>,
    /// What every device actor is built with.
    shared: Arc<DeviceActorShared>,
    conflicts: Arc<ConflictShards>,
    live_arbiters: Vec<ArbiterHandle>,
    backlog_arbiters: Vec<ArbiterHandle>,
    store: Arc<dyn Store>,
    options: DeviceActorOptions,
    metrics: DeviceMetrics,
}

impl DeviceRegistry {
    /// Starts the arbiters and the conflict actors; must run inside an actix `System`.
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
            panic_watch: PanicWatch { kind: ActorKind::Conflict, panics: metrics.actor_panics.clone() },
        };
        let conflicts =
            Arc::new(ConflictShards::start(conflict_options, backlog_arbiters.len(), metrics.conflicts.clone()));
        metrics.conflict_actors_active.set(backlog_arbiters.len() as i64);
        let (wake_ups, due) = mpsc::unbounded_channel();
        let directory =
            Arc::new(Directory { actors: DashMap::new(), wake_ups, active_actors: metrics.active_actors.clone() });
        let shared = Arc::new(DeviceActorShared {
            services: IngestServices {
                store: store.clone(),
                conflicts: options.detect_conflicts.then(|| conflicts.clone()),
                store_retry: options.store_retry,
                store_retries: metrics.store_retries.clone(),
                ownership: metrics.ownership.clone(),
            },
            directory: directory.clone(),
            idle_timeout: options.idle_timeout,
            mailbox_capacity: options.mailbox_capacity as u32,
            stops: metrics.device_actor_stops.clone(),
            evicted: metrics.actors_evicted.clone(),
            panic_watch: PanicWatch { kind: ActorKind::Device, panics: metrics.actor_panics.clone() },
        });
        let inner = Inner { directory, shared, conflicts, live_arbiters, backlog_arbiters, store, options, metrics };
        let registry = DeviceRegistry { inner: Arc::new(inner) };
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
                    self.inner.directory.forget(device_id, &entry.actor);
                    continue;
                }
            };
            let (upload_now, reply) = upload.take().expect("an upload is sent at most once");
            let mailbox_slot = MailboxSlot::new(mailbox_slot, self.inner.metrics.mailbox_batches.clone());
            let queued_at = Instant::now();
            match entry.actor.try_send(IngestBatch { upload: upload_now, reply, mailbox_slot, queued_at }) {
                Ok(()) => return Ok(outcome),
                Err(SendError::Full(_)) => break,
                Err(SendError::Closed(returned)) => {
                    self.inner.directory.forget(device_id, &entry.actor);
                    upload = Some((returned.upload, returned.reply));
                }
            }
        }
        self.inner.metrics.mailbox_full.inc();
        Err(DeviceBusy(self.inner.options.mailbox_capacity))
    }

    /// Settles a conflict as an administrator decided.
    pub async fn resolve_conflict(
        &self,
        conflict: &ConflictRecord,
        resolution: Resolution,
        note: String,
        resolved_at: i64,
    ) -> Result<ConflictRecord, ResolveError> {
        let decision = AdminDecision { conflict_id: conflict.id.clone(), resolution, note, resolved_at };
        self.inner.conflicts.resolve(conflict, decision).await
    }

    /// Wakes the actors of the devices whose records wait behind a gap in `buckets`
    /// (`waiting_bucket`: those this gateway owns, or newly owns), so the gap timeout
    /// evaluates them even if the device never sends again; returns how many. Waking
    /// one that is not due changes nothing.
    pub async fn resume_waiting(&self, buckets: &[u16]) -> Result<usize, StoreError> {
        if buckets.is_empty() {
            return Ok(0);
        }
        let waiting = self.inner.store.devices_waiting(buckets).await?;
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
            self.inner.directory.forget(device_id, &entry.actor);
            let _ = self.entry(device_id, Lane::Backlog).actor.send(EvaluateWaiting).await;
        }
    }

    /// Device actors alive now.
    pub fn active(&self) -> usize {
        self.inner.directory.actors.len()
    }

    /// Stops the arbiters once nothing more will be sent.
    pub fn stop(&self) {
        for arbiter in self.inner.live_arbiters.iter().chain(&self.inner.backlog_arbiters) {
            arbiter.stop();
        }
        self.inner.conflicts.stop();
    }

    /// The device's actor; a new one starts on `lane`.
    fn entry(&self, device_id: &str, lane: Lane) -> DeviceEntry {
        let inner = &self.inner;
        if let Some(entry) = inner.directory.actors.get(device_id) {
            return entry.clone();
        }
        inner
            .directory
            .actors
            .entry(Arc::from(device_id))
            .or_insert_with(|| {
                let arbiters = if lane == Lane::Live { &inner.live_arbiters } else { &inner.backlog_arbiters };
                let arbiter = &arbiters[shard_of(device_id, arbiters.len())];
                let (id, shared) = (Arc::from(device_id), inner.shared.clone());
                let mailbox = Arc::new(Semaphore::new(inner.options.mailbox_capacity));
                let actor_mailbox = mailbox.clone();
                inner.metrics.active_actors.inc();
                let actor = DeviceActor::start_in_arbiter(arbiter, move |_ctx| {
                    DeviceActor::new(id, lane, actor_mailbox, shared)
                });
                DeviceEntry { actor, mailbox }
            })
            .clone()
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
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
            reported_health: None,
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

    /// A seq the progress says was received but whose row is missing (a replica that
    /// lost it, a bug) is an error for the batch, never a seq to fill again.
    #[actix_rt::test]
    async fn a_received_seq_without_its_row_is_an_error_not_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let prometheus = prometheus::Registry::new();
        let options_of_store = EmbeddedStoreOptions::new(dir.path());
        let store =
            Arc::new(EmbeddedStore::open(options_of_store, StoreMetrics::register(&prometheus).unwrap()).unwrap());
        let mut progress = crate::store::DeviceProgress::default();
        progress.received.insert(1);
        store.commit(&conformance::device_commit("dev-lost", Vec::new(), progress)).await.unwrap();
        let metrics = DeviceMetrics::register(&prometheus).unwrap();
        let devices = DeviceRegistry::start(store.clone(), options(Duration::from_secs(600), 4), metrics);
        let outcome = devices.ingest("dev-lost", upload(1)).unwrap().await.unwrap();
        let Err(StoreError::Unavailable(message)) = outcome else { panic!("refused, not {outcome:?}") };
        assert!(message.contains("seq 1 is received"), "{message}");
        assert_eq!(store.seq_entries("dev-lost", &[1]).await.unwrap(), vec![None], "nothing was stored in its stead");
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
