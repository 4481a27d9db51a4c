//! Admission: what the gateway takes on, and what it refuses with 429 (a device or org
//! over its rate) or 503 (the gateway is full), each with a jittered `Retry-After`.
//!
//! A batch passes four gates, each as early as what it needs is known: the memory cap
//! and the bytes budget before its body is read (the `Content-Length` is reserved), the
//! device's rate once it is authenticated, and the org's rate and the records budget
//! once it is decoded and its priority known. What a batch holds is released when it is
//! answered. The decisions themselves are pure (`decide`).
//!
//! A batch its device says is backlog (`X-OTG-Priority: backlog`) that finds the
//! backlog's share taken waits for room, before its body is read, in a queue woken
//! in arrival order and bounded in length and in time; only past those bounds is it
//! refused. A refused device builds, signs and sends its batch again later, which costs
//! both sides more than a wait.

pub mod decide;
mod memory;
mod meter;
mod unread;

use crate::config::Config;
use crate::error::ApiError;
use decide::{Budget, Priority};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use memory::MemoryWatch;
use meter::{DrainMeter, RecentCount};
use otg_schema::wire::MAX_BATCH_RECORDS;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use unread::UnreadBytes;

#[derive(Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

struct Shared {
    budget: Budget,
    max_bytes: u64,
    live_window: Duration,
    records: AtomicU64,
    bytes: AtomicU64,
    devices: DefaultKeyedRateLimiter<String>,
    orgs: OrgRates,
    drain: DrainMeter,
    /// Records refused lately: demand that will come back, so it counts as work ahead.
    refused: RecentCount,
    /// Backlog records and batches admitted: the size of a batch the backlog queue holds
    /// room for, or one refused before decoding.
    admitted_records: AtomicU64,
    admitted_batches: AtomicU64,
    memory: MemoryWatch,
    /// Bytes of bodies still arriving, by client address.
    unread: UnreadBytes,
    backlog_queue: BacklogQueue,
    metrics: AdmissionMetrics,
}

/// Backlog batches waiting, bodies unread, for the backlog's share to have room.
struct BacklogQueue {
    /// Woken, one waiter at a time in arrival order, whenever records are released.
    room: Notify,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
}

/// A place in the backlog queue; left on drop.
struct QueuePlace<'a>(&'a Shared);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.backlog_queue.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.queue_waiting.dec();
    }
}

/// What a request holds before its body is read: bytes for its body (counted against
/// its client address too, until the body has arrived) and, for a batch its device says
/// is backlog, room for an average batch's records until its own count is known.
/// Released on drop.
pub struct Reserved {
    shared: Arc<Shared>,
    bytes: u64,
    records: u64,
    /// The client address and the bytes counted against it while the body arrives.
    unread_from: Option<(IpAddr, u64)>,
}

/// An admitted batch's records and bytes; released on drop, once it is answered.
pub struct Admitted {
    _reserved: Reserved,
    records: u64,
    pub priority: Priority,
}

impl Admission {
    /// Sets up the gates from the config and starts their upkeep (memory samples, the
    /// drain rate, forgetting idle devices' rate state) on the current runtime.
    pub fn start(config: &Config, registry: &Registry) -> anyhow::Result<Self> {
        let device_quota =
            Quota::per_second(nonzero(config.device_batches_per_s)).allow_burst(nonzero(config.device_batch_burst));
        let shared = Arc::new(Shared {
            budget: Budget::new(config.max_in_flight_records, config.backlog_share_percent),
            max_bytes: config.max_in_flight_bytes,
            live_window: Duration::from_secs(config.live_window_s),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            devices: RateLimiter::keyed(device_quota),
            orgs: OrgRates::new(config.org_records_per_s, config.org_record_burst),
            drain: DrainMeter::new(config.drain_records_per_s as f64),
            refused: RecentCount::default(),
            admitted_records: AtomicU64::new(0),
            admitted_batches: AtomicU64::new(0),
            memory: MemoryWatch::new(config.memory_limit_mib * 1024 * 1024),
            unread: UnreadBytes::new(config.client_max_unread_bytes),
            backlog_queue: BacklogQueue {
                room: Notify::new(),
                waiting: AtomicUsize::new(0),
                max_waiting: config.backlog_queue_batches,
                max_wait: Duration::from_millis(config.backlog_queue_wait_ms),
            },
            metrics: AdmissionMetrics::register(registry)?,
        });
        actix_web::rt::spawn(upkeep(shared.clone()));
        Ok(Admission { shared })
    }

    /// Reserves what a request needs before its body is read: for a batch its device
    /// says is backlog (the `X-OTG-Priority` hint), room for an average batch in the
    /// backlog's share, waited for in the backlog queue; then room for a body of
    /// `bytes`: 503 while the gateway holds its bytes budget, or, with work in hand,
    /// while memory refuses it (`decide::memory_admits`). With nothing in hand waiting
    /// frees nothing (the store's memtables stay until they fill), so one request at a
    /// time is let in rather than none. First of all, 429 if the client's address
    /// already holds its share of bodies still arriving (`client_max_unread_bytes`).
    pub async fn reserve(
        &self,
        client: Option<IpAddr>,
        hint: Option<Priority>,
        bytes: u64,
    ) -> Result<Reserved, ApiError> {
        let shared = &self.shared;
        let mut reserved = Reserved { shared: shared.clone(), bytes: 0, records: 0, unread_from: None };
        if let Some(address) = client {
            if !shared.unread.take(address, bytes) {
                return Err(self.rate_limited("client address", Duration::from_secs(1)));
            }
            reserved.unread_from = Some((address, bytes));
        }
        if hint == Some(Priority::Backlog) {
            reserved.records = self.wait_for_backlog_room().await?;
        }
        let in_hand = shared.bytes.load(Ordering::Acquire) > 0;
        // The room this request took in the backlog queue is not the backlog in hand.
        let held = shared.records.load(Ordering::Acquire).saturating_sub(reserved.records);
        if in_hand && !decide::memory_admits(shared.memory.level(), hint, held, &shared.budget) {
            return Err(self.overloaded("memory", hint, None));
        }
        let fits = |held: u64| (held == 0 || held.saturating_add(bytes) <= shared.max_bytes).then(|| held + bytes);
        if shared.bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, fits).is_err() {
            return Err(self.overloaded("bytes_budget", hint, None));
        }
        reserved.bytes = bytes;
        Ok(reserved)
    }

    /// Takes room for an average batch in the backlog's share, waiting for it if need
    /// be: in arrival order, at most `backlog_queue_wait_ms`, and only while fewer than
    /// `backlog_queue_batches` wait; past either bound, 503. Returns the records taken.
    async fn wait_for_backlog_room(&self) -> Result<u64, ApiError> {
        let shared = &*self.shared;
        let records = shared.average_batch();
        let take_room = || {
            let fits = |held: u64| shared.budget.fits(held, records, Priority::Backlog).then(|| held + records);
            shared.records.fetch_update(Ordering::AcqRel, Ordering::Acquire, fits).is_ok()
        };
        let queue = &shared.backlog_queue;
        // Nobody waiting: no queue to join.
        if queue.waiting.load(Ordering::Acquire) == 0 && take_room() {
            return Ok(records);
        }
        if queue.waiting.fetch_add(1, Ordering::AcqRel) >= queue.max_waiting {
            queue.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.overloaded("records_budget", Some(Priority::Backlog), None));
        }
        shared.metrics.queue_waiting.inc();
        let _place = QueuePlace(shared);
        let deadline = tokio::time::Instant::now() + queue.max_wait;
        loop {
            let released = queue.room.notified();
            tokio::pin!(released);
            // Registered before looking, so a release in between is not missed.
            released.as_mut().enable();
            if take_room() {
                // A release may have made room for more than one: pass it on.
                queue.room.notify_one();
                return Ok(records);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(self.overloaded("records_budget", Some(Priority::Backlog), None));
            }
        }
    }

    /// 429 if the device is over its batch rate.
    pub fn check_device(&self, device_id: &str) -> Result<(), ApiError> {
        let limiter = &self.shared.devices;
        limiter.check_key(&device_id.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
            self.rate_limited("device", wait)
        })
    }

    pub fn priority(&self, newest_recorded_at: i64, received_at: i64) -> Priority {
        Priority::of(newest_recorded_at, received_at, self.shared.live_window)
    }

    /// Admits a decoded batch of `records` for `org_id`: 429 if the org is over its
    /// record rate, 503 if the records budget has no room at this priority. Room taken
    /// in the backlog queue counts towards it.
    pub fn admit(
        &self,
        mut reserved: Reserved,
        org_id: &str,
        records: u64,
        priority: Priority,
    ) -> Result<Admitted, ApiError> {
        let shared = &self.shared;
        // Room taken in the backlog queue becomes the batch's own count.
        let provisional = reserved.records;
        let fits = |held: u64| {
            let others = held.saturating_sub(provisional);
            let room = if provisional > 0 {
                shared.budget.fits_waited(others, records)
            } else {
                shared.budget.fits(others, records, priority)
            };
            room.then(|| others + records)
        };
        if shared.records.fetch_update(Ordering::AcqRel, Ordering::Acquire, fits).is_err() {
            return Err(self.overloaded("records_budget", Some(priority), Some(records)));
        }
        reserved.records = 0;
        if provisional > records {
            shared.wake_a_waiter();
        }
        // Room first, then the org's rate: a batch refused for room spends no tokens.
        let admitted = Admitted { _reserved: reserved, records, priority };
        let count = NonZeroU32::new(records.clamp(1, u32::MAX as u64) as u32).expect("clamped to at least 1");
        let orgs = shared.orgs.limiter();
        match orgs.check_key_n(&org_id.to_owned(), count) {
            Ok(Ok(())) => {}
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(orgs.clock()));
                return Err(self.rate_limited("org", wait));
            }
            // Config validation keeps the burst at least one full batch.
            Err(_) => return Err(self.rate_limited("org", Duration::from_secs(1))),
        }
        shared.metrics.admitted.with_label_values(&[priority.as_str()]).inc();
        if priority == Priority::Backlog {
            shared.admitted_records.fetch_add(records, Ordering::Relaxed);
            shared.admitted_batches.fetch_add(1, Ordering::Relaxed);
        }
        Ok(admitted)
    }

    /// Shares each org's record rate among `gateways` live gateways (see `OrgRates`).
    pub fn share_org_rates(&self, gateways: usize) {
        self.shared.orgs.share_among(gateways);
    }

    /// Counts records durably acked: the drain rate `Retry-After` is computed from.
    pub fn drained(&self, records: u64) {
        self.shared.drain.add(records);
    }

    /// A 503 for a batch of `records` (`None`: refused before decoding, counted as
    /// an average batch).
    fn overloaded(&self, reason: &'static str, priority: Option<Priority>, records: Option<u64>) -> ApiError {
        let shared = &self.shared;
        shared.refused.add(records.unwrap_or_else(|| shared.average_batch()));
        shared.metrics.count_refused(reason, priority);
        let ahead = shared.records.load(Ordering::Acquire) + shared.refused.get();
        ApiError::Overloaded {
            reason,
            retry_after: decide::retry_after(ahead, shared.drain.per_second(), rand::random()),
        }
    }

    /// A 429 for a `scope` ("device" or "org") over its rate, counted as `<scope>_rate`.
    fn rate_limited(&self, scope: &'static str, wait: Duration) -> ApiError {
        self.shared.metrics.count_refused(&format!("{scope}_rate"), None);
        ApiError::RateLimited { scope, retry_after: decide::spread(wait, rand::random()) }
    }
}

impl Reserved {
    /// The request's body is in: its address's share is free for its next body.
    pub fn body_arrived(&mut self) {
        if let Some((address, bytes)) = self.unread_from.take() {
            self.shared.unread.give_back(address, bytes);
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.body_arrived();
        self.shared.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.shared.release_records(self.records);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self._reserved.shared.release_records(self.records);
    }
}

impl Shared {
    /// Gives records back to the budget and wakes the next backlog batch waiting.
    fn release_records(&self, records: u64) {
        if records == 0 {
            return;
        }
        self.records.fetch_sub(records, Ordering::AcqRel);
        self.wake_a_waiter();
    }

    fn wake_a_waiter(&self) {
        if self.backlog_queue.waiting.load(Ordering::Acquire) > 0 {
            self.backlog_queue.room.notify_one();
        }
    }

    /// Records in an admitted backlog batch, on average; before any, the largest a batch
    /// may be.
    fn average_batch(&self) -> u64 {
        match self.admitted_batches.load(Ordering::Relaxed) {
            0 => MAX_BATCH_RECORDS as u64,
            batches => (self.admitted_records.load(Ordering::Relaxed) / batches).max(1),
        }
    }
}

/// Each org's record rate (`org_records_per_s`, `org_record_burst`), shared out among
/// the live gateways: each admits its share, so the fleet admits about the configured
/// rate whichever gateways an org's devices reach (evenly, by hash or at random). A
/// change of the live set starts the shares afresh (a burst's worth of slack, once).
struct OrgRates {
    limiter: std::sync::RwLock<Arc<DefaultKeyedRateLimiter<String>>>,
    per_second: u32,
    burst: u32,
    gateways: AtomicUsize,
}

impl OrgRates {
    fn new(per_second: u32, burst: u32) -> Self {
        let rates = OrgRates {
            limiter: std::sync::RwLock::new(Arc::new(RateLimiter::keyed(Quota::per_second(NonZeroU32::MIN)))),
            per_second,
            burst,
            gateways: AtomicUsize::new(0),
        };
        rates.share_among(1);
        rates
    }

    fn limiter(&self) -> Arc<DefaultKeyedRateLimiter<String>> {
        self.limiter.read().expect("org rates lock").clone()
    }

    fn share_among(&self, gateways: usize) {
        let gateways = gateways.max(1);
        if self.gateways.swap(gateways, Ordering::AcqRel) == gateways {
            return;
        }
        let share = |total: u32| total.div_ceil(gateways as u32);
        // Never below one full batch: a share that small would refuse every batch.
        let burst = share(self.burst).max(MAX_BATCH_RECORDS as u32);
        let quota = Quota::per_second(nonzero(share(self.per_second))).allow_burst(nonzero(burst));
        *self.limiter.write().expect("org rates lock") = Arc::new(RateLimiter::keyed(quota));
    }
}

fn nonzero(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).unwrap_or(NonZeroU32::MIN)
}

/// Samples memory four times a second; each second updates the drain rate and the
/// gauges; each minute forgets the rate state of devices and orgs at full allowance.
async fn upkeep(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    for tick in 0u64.. {
        ticks.tick().await;
        shared.memory.sample();
        if tick % 4 == 0 {
            let under_pressure = shared.refused.get() > 0;
            shared.drain.tick(under_pressure);
            shared.refused.tick();
            let metrics = &shared.metrics;
            metrics.in_flight_records.set(shared.records.load(Ordering::Relaxed) as i64);
            metrics.in_flight_bytes.set(shared.bytes.load(Ordering::Relaxed) as i64);
            metrics.drain_rate.set(shared.drain.per_second() as i64);
            metrics.rss.set(shared.memory.rss() as i64);
        }
        if tick % 240 == 0 {
            let orgs = shared.orgs.limiter();
            for limiter in [&shared.devices, &*orgs] {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

struct AdmissionMetrics {
    queue_waiting: IntGauge,
    refused: IntCounterVec,
    admitted: IntCounterVec,
    in_flight_records: IntGauge,
    in_flight_bytes: IntGauge,
    drain_rate: IntGauge,
    rss: IntGauge,
}

impl AdmissionMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = AdmissionMetrics {
            queue_waiting: IntGauge::new(
                "otg_admission_backlog_waiting",
                "Backlog batches waiting, bodies unread, for the backlog's share to have room.",
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "otg_admission_refused_total",
                    "Batches refused with 429 or 503, by gate and priority (unknown before decoding).",
                ),
                &["reason", "priority"],
            )?,
            admitted: IntCounterVec::new(
                Opts::new("otg_admission_admitted_total", "Batches admitted, by priority."),
                &["priority"],
            )?,
            in_flight_records: IntGauge::new(
                "otg_admission_in_flight_records",
                "Records admitted and not yet answered.",
            )?,
            in_flight_bytes: IntGauge::new(
                "otg_admission_in_flight_bytes",
                "Request bytes reserved: being read or in work.",
            )?,
            drain_rate: IntGauge::new(
                "otg_admission_drain_records_per_second",
                "The drain rate Retry-After is computed from.",
            )?,
            rss: IntGauge::new(
                "otg_process_resident_memory_bytes",
                "The gateway's resident memory, as the memory cap sees it.",
            )?,
        };
        registry.register(Box::new(metrics.queue_waiting.clone()))?;
        registry.register(Box::new(metrics.refused.clone()))?;
        registry.register(Box::new(metrics.admitted.clone()))?;
        registry.register(Box::new(metrics.in_flight_records.clone()))?;
        registry.register(Box::new(metrics.in_flight_bytes.clone()))?;
        registry.register(Box::new(metrics.drain_rate.clone()))?;
        registry.register(Box::new(metrics.rss.clone()))?;
        Ok(metrics)
    }

    fn count_refused(&self, reason: &str, priority: Option<Priority>) {
        self.refused.with_label_values(&[reason, priority.map_or("unknown", Priority::as_str)]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(rates: &OrgRates, records: u32) -> bool {
        let count = NonZeroU32::new(records).unwrap();
        matches!(rates.limiter().check_key_n(&"acme".to_owned(), count), Ok(Ok(())))
    }

    #[test]
    fn an_orgs_rate_is_shared_among_the_live_gateways_never_below_one_batch() {
        let rates = OrgRates::new(2_000, 2_000);
        assert!(admits(&rates, 2_000), "one gateway admits the whole burst");
        rates.share_among(2);
        assert!(!admits(&rates, 1_001), "two gateways admit half each");
        assert!(admits(&rates, 1_000));
        rates.share_among(8);
        assert!(admits(&rates, 500), "a share is never below one full batch");
    }
}
