//! `DeviceActor`: one per active device, the only writer of that device's seqs.
//!
//! It handles one batch at a time (an atomic response), so a device's batches are
//! decided in arrival order against an up-to-date picture of what it has delivered. The
//! work itself is the ingest pipeline (`ingest`); the actor keeps the device's progress
//! between batches, its mailbox, its wake-ups and its lifetime, and answers only once
//! the store said durable.
//!
//! A panic in the pipeline is caught (`supervision`): that batch gets an error and
//! nothing of it is acked, and the actor drops its claim on the device and claims it
//! again from the store, where a commit is either whole or not there (the progress row
//! is its commit point).
//!
//! Several gateways may hold actors of one device: each claims the device (a new
//! epoch) before its first commit, and a commit under an epoch another gateway has
//! since claimed writes no progress and is decided again (`Ingest::run_owned`).

use crate::ingest::{unix_now_ms, BatchOutcome, Ingest, IngestServices, Upload};
use crate::store::{DeviceClaim, StoreError};
use crate::supervision::PanicWatch;
use actix::prelude::*;
use prometheus::{IntCounter, IntCounterVec};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Where device actors are found: told when one stops, asked to wake a device later.
/// The registry is one; an actor knows it only through this, so the two modules do not
/// import each other.
pub(crate) trait DeviceDirectory: Send + Sync {
    /// The actor stopped: drop it from the directory if it is still the one named.
    fn forget(&self, device_id: &str, actor: &Addr<DeviceActor>);
    /// Wakes the device after `due_in`, to evaluate records waiting behind a gap.
    fn wake_up(&self, device_id: &str, due_in: Duration);
}

/// What every device actor shares, handed over when it is built.
pub(crate) struct DeviceActorShared {
    pub services: IngestServices,
    pub directory: Arc<dyn DeviceDirectory>,
    /// An actor with no message for this long stops.
    pub idle_timeout: Duration,
    /// All the slots of a device's mailbox, as a stopping actor takes them.
    pub mailbox_capacity: u32,
    /// Stops by reason, and idle stops alone (`otg_device_actors_evicted_total`).
    pub stops: IntCounterVec,
    pub evicted: IntCounter,
    pub panic_watch: PanicWatch,
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

/// Why a device actor stopped: the label of `otg_device_actor_stops_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// No message for its idle timeout: memory follows active devices.
    Idle,
    /// It handled a batch of the other lane; the device's next batch starts on its own.
    OtherLane,
}

impl StopReason {
    pub(crate) const ALL: [StopReason; 2] = [StopReason::Idle, StopReason::OtherLane];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StopReason::Idle => "idle",
            StopReason::OtherLane => "other_lane",
        }
    }
}

/// Ingest one upload; the outcome comes back on `reply` once durable. The mailbox
/// slot is held until then, which is what bounds a device's queue.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct IngestBatch {
    pub upload: Upload,
    pub reply: oneshot::Sender<Result<BatchOutcome, StoreError>>,
    pub mailbox_slot: MailboxSlot,
    /// When it was put in the mailbox: its wait there is `Stages::queued`.
    pub queued_at: Instant,
}

/// A device's mailbox slot, held by a batch from queueing until it is answered; it
/// keeps the all-devices mailbox gauge.
pub(crate) struct MailboxSlot {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl MailboxSlot {
    pub(crate) fn new(permit: OwnedSemaphorePermit, gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        MailboxSlot { _permit: permit, gauge }
    }
}

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Evaluate the records that have waited behind a gap for the org's gap timeout.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct EvaluateWaiting;

pub(crate) struct DeviceActor {
    device_id: Arc<str>,
    /// The arbiters it runs on.
    lane: Lane,
    shared: Arc<DeviceActorShared>,
    /// The slots of this device's mailbox, shared with the registry.
    mailbox: Arc<Semaphore>,
    /// The device as this process holds it (its epoch and progress): claimed on first
    /// use, then kept current by every commit; dropped on an error, claimed again.
    claim: Option<DeviceClaim>,
    last_active: Instant,
    /// The org's gap timeout, as last read, and when the wake-up set is due (unix ms).
    gap_timeout: Option<Duration>,
    wake_up_set_for: Option<i64>,
    stop_reason: Option<StopReason>,
}

impl DeviceActor {
    pub(crate) fn new(
        device_id: Arc<str>,
        lane: Lane,
        mailbox: Arc<Semaphore>,
        shared: Arc<DeviceActorShared>,
    ) -> Self {
        DeviceActor {
            device_id,
            lane,
            shared,
            mailbox,
            claim: None,
            last_active: Instant::now(),
            gap_timeout: None,
            wake_up_set_for: None,
            stop_reason: None,
        }
    }

    /// Records wait behind a gap since `waiting_since`: have the directory wake this
    /// device when the gap timeout is due (the actor itself may stop for idleness
    /// meanwhile).
    fn wake_up_for_waiting(&mut self, waiting_since: Option<i64>) {
        let (Some(since), Some(timeout)) = (waiting_since, self.gap_timeout) else {
            return;
        };
        let due = since + timeout.as_millis() as i64;
        if self.wake_up_set_for != Some(due) {
            self.wake_up_set_for = Some(due);
            self.shared.directory.wake_up(&self.device_id, Duration::from_millis((due - unix_now_ms()).max(0) as u64));
        }
    }

    /// Stops if idle and nothing is queued.
    fn stop_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.last_active.elapsed() >= self.shared.idle_timeout {
            self.stop_unless_queued(StopReason::Idle, ctx);
        }
    }

    /// Stops for `reason` if no batch is queued. Taking every mailbox slot and closing
    /// the mailbox first means no batch can arrive once it has decided to.
    fn stop_unless_queued(&mut self, reason: StopReason, ctx: &mut Context<Self>) {
        let Ok(all_slots) = self.mailbox.try_acquire_many(self.shared.mailbox_capacity) else {
            return;
        };
        all_slots.forget();
        self.mailbox.close();
        self.stop_reason = Some(reason);
        ctx.stop();
    }

    /// `work` with its panic caught and answered as an error. Whatever `work` took
    /// goes with it: the device's claim (taken out of the actor for it) is made again
    /// next time.
    fn supervised<T>(
        &self,
        doing: &'static str,
        work: impl Future<Output = Result<T, StoreError>> + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + 'static {
        let watch = self.shared.panic_watch.clone();
        async move {
            watch.run(doing, work).await.unwrap_or_else(|panic| {
                Err(StoreError::Unavailable(format!(
                    "the device's actor was interrupted ({panic}); nothing of the batch was acked"
                )))
            })
        }
    }
}

impl Actor for DeviceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.shared.idle_timeout / 2, Self::stop_if_idle);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if let Some(reason) = self.stop_reason {
            self.shared.stops.with_label_values(&[reason.as_str()]).inc();
            if reason == StopReason::Idle {
                self.shared.evicted.inc();
            }
        }
        self.shared.directory.forget(&self.device_id, &ctx.address());
    }
}

impl Handler<IngestBatch> for DeviceActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, batch: IngestBatch, _ctx: &mut Self::Context) -> Self::Result {
        self.last_active = Instant::now();
        let (shared, claim) = (self.shared.clone(), self.claim.take());
        let IngestBatch { upload, reply, mailbox_slot, queued_at } = batch;
        let queued = queued_at.elapsed();
        let Upload { org_id, batch_id, received_at, reported_pending, reported_health, records, settings, live } =
            upload;
        self.gap_timeout = Some(Duration::from_secs(settings.gap_timeout_s.into()));
        let ingest = Ingest {
            device_id: self.device_id.clone(),
            org_id: org_id.into(),
            batch_id,
            received_at,
            reported_pending,
            reported_health,
            settings,
            live,
        };
        let run = async move { ingest.run_owned(&shared.services, claim, records).await };
        AtomicResponse::new(Box::pin(self.supervised("ingesting a batch", run).into_actor(self).map(
            move |result, actor, ctx| {
                actor.last_active = Instant::now();
                let outcome = result.map(|(mut outcome, claim)| {
                    actor.wake_up_for_waiting(claim.progress.evaluation.waiting_since);
                    actor.claim = Some(claim);
                    outcome.stages.queued = queued;
                    outcome
                });
                // The device may have hung up; its records were stored all the same.
                let _ = reply.send(outcome);
                drop(mailbox_slot);
                if Lane::of(live) != actor.lane {
                    actor.stop_unless_queued(StopReason::OtherLane, ctx);
                }
            },
        )))
    }
}

impl Handler<EvaluateWaiting> for DeviceActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: EvaluateWaiting, _ctx: &mut Self::Context) -> Self::Result {
        let (shared, device_id, claim) = (self.shared.clone(), self.device_id.clone(), self.claim.take());
        let run = async move {
            let store = &shared.services.store;
            let device = store
                .device(&device_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("device {device_id} has progress but no enrolment")))?;
            let settings = store.org_settings(&device.org_id).await?;
            let gap_timeout = Duration::from_secs(settings.gap_timeout_s.into());
            let progress = match &claim {
                Some(claim) => claim.progress.clone(),
                None => store.device_progress(&device_id).await?,
            };
            let now = unix_now_ms();
            let due =
                progress.evaluation.waiting_since.is_some_and(|since| now - since >= gap_timeout.as_millis() as i64);
            if !due {
                return Ok((claim, gap_timeout, progress.evaluation.waiting_since));
            }
            let ingest = Ingest {
                device_id,
                org_id: device.org_id.into(),
                batch_id: String::new(),
                received_at: now,
                reported_pending: None,
                reported_health: None,
                settings,
                live: false,
            };
            let (_, claim) = ingest.run_owned(&shared.services, claim, Vec::new()).await?;
            let waiting_since = claim.progress.evaluation.waiting_since;
            Ok((Some(claim), gap_timeout, waiting_since))
        };
        AtomicResponse::new(Box::pin(self.supervised("evaluating records a gap held", run).into_actor(self).map(
            |result, actor, _ctx| match result {
                Ok((claim, gap_timeout, waiting_since)) => {
                    actor.claim = claim;
                    actor.gap_timeout = Some(gap_timeout);
                    actor.wake_up_for_waiting(waiting_since);
                }
                Err(error) => {
                    tracing::warn!(%error, device_id = %actor.device_id, "evaluating records that waited behind a gap failed; retrying in 30 s");
                    actor.wake_up_set_for = None;
                    actor.shared.directory.wake_up(&actor.device_id, Duration::from_secs(30));
                }
            },
        )))
    }
}
