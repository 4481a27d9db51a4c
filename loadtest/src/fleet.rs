//! The simulated devices: site kiosks, each an `otg-client` over an in-memory queue,
//! recording realistic shifts and syncing as a real app would.

use crate::routing::Route;
use crate::stats::Stats;
use otg_client::{Client, MemoryQueue, Network, SyncOutcome, SyncReport};
use otg_schema::wire::{AckStatus, Record};
use otg_schema::DeviceSecret;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// Employees who use one kiosk.
const EMPLOYEES_PER_KIOSK: usize = 11;
/// A shift's four events, and their offsets in steps.
const SHIFT: [&str; 4] = ["check_in", "break_start", "break_end", "check_out"];

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}

pub struct Device {
    pub id: String,
    client: Client<MemoryQueue, Route>,
    /// Acks received, by seq.
    acks: Vec<u8>,
    /// Records queued so far; their seqs are 1..=generated.
    pub generated: u64,
    /// Syncs that ended on an error a retry does not mend.
    pub failures: u64,
}

/// How the fleet's acks came out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AckCount {
    pub records: u64,
    pub acked_once: u64,
    pub acked_more_than_once: u64,
    pub never_acked: u64,
    pub rejected: u64,
}

impl Device {
    pub fn new(id: String, secret: DeviceSecret, transport: Route) -> Self {
        let client = Client::new(id.clone(), secret, MemoryQueue::default(), transport);
        Device { id, client, acks: vec![0], generated: 0, failures: 0 }
    }

    /// Queues `count` records of shifts (check-in, break, check-out) of this kiosk's
    /// employees from `first_employee` on, evenly spread over `[from_ms, to_ms)`: what it
    /// recorded while offline.
    pub fn record_backlog(&mut self, count: usize, first_employee: usize, from_ms: i64, to_ms: i64) {
        let step = ((to_ms - from_ms) / count.max(1) as i64).max(1);
        for n in 0..count {
            let employee = first_employee + (n / SHIFT.len()) % EMPLOYEES_PER_KIOSK;
            self.record(SHIFT[n % SHIFT.len()], employee, from_ms + n as i64 * step);
        }
    }

    /// Queues one event of `employee` at `at_ms`.
    pub fn record(&mut self, kind: &str, employee: usize, at_ms: i64) {
        let record = Record::new(0, uuid::Uuid::new_v4().to_string(), kind, format!("{}-e{employee}", self.id), at_ms);
        self.client.record(record).expect("an in-memory queue under the default storage limit takes every record");
        self.generated += 1;
        self.acks.push(0);
    }

    /// One `sync_now`, counted; the outcome tells the caller what next.
    pub async fn sync(&mut self, stats: &Stats, connections: &Semaphore) -> SyncOutcome {
        self.sync_due(None, stats, connections).await
    }

    /// A sync that was due at `due`: how late it starts (a free connection, this
    /// process's scheduling) is the load tester's own lag, kept apart from the
    /// gateway's latency.
    pub async fn sync_due(&mut self, due: Option<Instant>, stats: &Stats, connections: &Semaphore) -> SyncOutcome {
        let report = {
            let _connection = connections.acquire().await.expect("the connection semaphore stays open");
            if let Some(due) = due {
                stats.observe_lag(due.elapsed());
            }
            self.client.sync_now(Some(Network::Wifi)).await
        };
        match report {
            Ok(report) => {
                self.count(&report);
                stats.observe(&report, now_ms());
                if matches!(report.outcome, SyncOutcome::Failed(_)) {
                    self.failures += 1;
                }
                report.outcome
            }
            Err(error) => {
                self.failures += 1;
                SyncOutcome::Failed(error.to_string())
            }
        }
    }

    /// Syncs until the queue is drained, waiting as told; gives up after `max_failures`
    /// failures a retry does not mend.
    pub async fn drain(&mut self, stats: &Stats, connections: &Semaphore, max_failures: u64) {
        loop {
            match self.sync(stats, connections).await {
                SyncOutcome::Drained | SyncOutcome::Skipped(_) => return,
                SyncOutcome::RetryIn(wait) => tokio::time::sleep(wait).await,
                SyncOutcome::Failed(_) if self.failures >= max_failures => return,
                SyncOutcome::Failed(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    fn count(&mut self, report: &SyncReport) {
        for ack in &report.acks {
            if let Some(count) = usize::try_from(ack.seq).ok().and_then(|seq| self.acks.get_mut(seq)) {
                *count = count.saturating_add(if ack.status == AckStatus::Rejected { 100 } else { 1 });
            }
        }
    }

    pub fn ack_count(&self) -> AckCount {
        let mut count = AckCount { records: self.generated, ..AckCount::default() };
        for &acks in &self.acks[1..] {
            match acks {
                0 => count.never_acked += 1,
                1 => count.acked_once += 1,
                100.. => count.rejected += 1,
                _ => count.acked_more_than_once += 1,
            }
        }
        count
    }
}

impl std::ops::AddAssign for AckCount {
    fn add_assign(&mut self, other: AckCount) {
        self.records += other.records;
        self.acked_once += other.acked_once;
        self.acked_more_than_once += other.acked_more_than_once;
        self.never_acked += other.never_acked;
        self.rejected += other.rejected;
    }
}

/// A kiosk online throughout: one event every `interval`, synced at once (a live
/// batch), until `stop` says so. Employees take turns so none repeats an event within
/// the duplicate window.
pub async fn live_kiosk(
    mut device: Device,
    interval: Duration,
    stats: Arc<Stats>,
    connections: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
) -> Device {
    const EMPLOYEES: usize = 300;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut free_since = Instant::now();
    for turn in 0usize.. {
        // A tick missed while the kiosk's last sync was still running (the gateway
        // was slow, or asked it to wait) is the gateway's doing: the lag counts from
        // when the kiosk was free again.
        let due = ticks.tick().await.into_std().max(free_since);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let employee = turn % EMPLOYEES;
        let kind = if (turn / EMPLOYEES).is_multiple_of(2) { "check_in" } else { "check_out" };
        device.record(kind, employee, now_ms());
        if let SyncOutcome::RetryIn(wait) = device.sync_due(Some(due), &stats, &connections).await {
            tokio::time::sleep(wait).await;
        }
        free_since = Instant::now();
    }
    device.drain(&stats, &connections, 20).await;
    device
}

/// A kiosk uploading full days back to back, as fast as it is answered, until `stop`.
pub async fn busy_kiosk(
    mut device: Device,
    records_per_batch: usize,
    stats: Arc<Stats>,
    connections: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
) -> Device {
    let yesterday = now_ms() - 86_400_000;
    // Each batch is a day of other employees, so none of them conflicts.
    for batch in 0usize.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        device.record_backlog(records_per_batch, batch * EMPLOYEES_PER_KIOSK, yesterday, yesterday + 8 * 3_600_000);
        device.drain(&stats, &connections, 20).await;
    }
    device
}
