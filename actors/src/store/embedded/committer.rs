//! The thread that commits queued batches in groups, with one fsync per group.
//!
//! Two kinds of commit reach it. A backlog commit's caller waits for the group's fsync.
//! A live commit was already made durable (and acked) in the live log; the committer
//! applies it to the tables ahead of any backlog, and records in the
//! same atomic batch that its log entry is applied, so a crash replays it exactly once.
//! After one failed write it writes nothing more: a later entry's mark would otherwise
//! pass over an entry that was never applied.
//!
//! A group of live applies alone is not fsynced: its entries are durable in the live
//! log, which keeps them until an fsync covers their apply ([`LIVE_PERSIST_INTERVAL`]).
//! Under a steady live load that spares the disk hundreds of fsyncs a second, each of
//! which the live log's own fsync would otherwise queue behind.

use super::read_barrier::ReadBarrier;
use super::sealer::SealRequests;
use super::{encode, failed_earlier, halt, keys, read, unavailable, Tables, LIVE_APPLIED};
use crate::metrics::StoreMetrics;
use crate::store::{StoreError, SyncCounts, SyncTotals};
use fjall::{Database, OwnedWriteBatch, PersistMode};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// At most how long a live log entry's apply waits for an fsync, once applied. Until
/// then the live log keeps the entry, and a crash applies it again at the next start.
const LIVE_PERSIST_INTERVAL: Duration = Duration::from_millis(100);

/// A commit's atomic batch, built by its caller, waiting for the committer.
pub(super) struct PendingCommit {
    pub batch: OwnedWriteBatch,
    /// Device records in it, for the group's cap.
    pub records: usize,
    /// Counts the committer adds to the statistics, as their single writer.
    pub stats: Vec<SyncCounts>,
    pub origin: Origin,
}

/// Who waits for a commit.
pub(super) enum Origin {
    /// A backlog caller, answered after the group's fsync.
    Caller(oneshot::Sender<Result<(), StoreError>>),
    /// The live log's entry of this number, acked already.
    LiveLog(u64),
}

pub(super) struct Committer {
    pub db: Database,
    pub tables: Tables,
    pub max_group: usize,
    pub max_group_records: usize,
    /// Commits taken off the channel and waiting, at most this many.
    pub max_waiting: usize,
    pub metrics: StoreMetrics,
    pub failed: Arc<AtomicBool>,
    /// Live log entries applied to the tables (readable) and waiting readers.
    pub barrier: Arc<ReadBarrier>,
    /// The number of the last live log entry whose apply is durable: the log may
    /// forget it.
    pub durable_lsn: Arc<AtomicU64>,
    /// Bytes the memtables may hold before a group waits for flushes to catch up.
    pub write_buffer_limit: u64,
    /// Asked after a group that filled a memtable.
    pub sealer: SealRequests,
}

/// Commits taken off the channel, applies of the live log apart so they go first.
struct Waiting<T> {
    live: VecDeque<T>,
    backlog: VecDeque<T>,
}

/// What the group being written holds so far.
#[derive(Debug, Default)]
struct Group {
    commits: usize,
    records: usize,
}

/// How much one fsync may cover.
#[derive(Debug, Clone, Copy)]
struct GroupCaps {
    commits: usize,
    records: usize,
}

impl<T> Waiting<T> {
    fn new() -> Self {
        Waiting { live: VecDeque::new(), backlog: VecDeque::new() }
    }

    fn len(&self) -> usize {
        self.live.len() + self.backlog.len()
    }

    fn push(&mut self, commit: T, live: bool) {
        if live { &mut self.live } else { &mut self.backlog }.push_back(commit);
    }

    /// The commit to write next into `group`, if the group takes another: live
    /// applies first (readers may be waiting for them), then backlog, while the caps
    /// leave room (for both). The first commit of a group always goes.
    fn next(&mut self, group: &Group, caps: GroupCaps) -> Option<T> {
        let full = group.commits >= caps.commits || (group.commits > 0 && group.records >= caps.records);
        if full {
            return None;
        }
        self.live.pop_front().or_else(|| self.backlog.pop_front())
    }
}

impl Waiting<PendingCommit> {
    fn take(&mut self, commit: PendingCommit) {
        let live = matches!(commit.origin, Origin::LiveLog(_));
        self.push(commit, live);
    }
}

/// What reaches the committer: live log entries to apply on a queue of their own, so
/// a backlog queue that is full never holds up the live log writer.
pub(super) struct Queues {
    pub applies: mpsc::Receiver<PendingCommit>,
    pub backlog: mpsc::Receiver<PendingCommit>,
}

/// What waiting on the queues gave.
enum Next {
    Commit(PendingCommit),
    /// Nothing arrived before the deadline.
    Due,
    /// Both queues are closed and empty.
    Closed,
}

/// Live log entries applied since the last fsync: the last one, and when the first was.
#[derive(Clone, Copy)]
struct Unpersisted {
    lsn: u64,
    since: Instant,
}

impl Queues {
    /// Waits for the next commit, an apply first, or for `until` to pass.
    fn next(&mut self, waiter: &tokio::runtime::Runtime, until: Option<Instant>) -> Next {
        waiter.block_on(async {
            let due = async {
                if let Some(until) = until {
                    tokio::time::sleep_until(until.into()).await;
                }
            };
            tokio::select! {
                biased;
                Some(apply) = self.applies.recv() => Next::Commit(apply),
                Some(commit) = self.backlog.recv() => Next::Commit(commit),
                () = due, if until.is_some() => Next::Due,
                else => Next::Closed,
            }
        })
    }

    /// Moves into `waiting` every apply queued and backlog up to `max_waiting`.
    fn take_queued(&mut self, waiting: &mut Waiting<PendingCommit>, max_waiting: usize) {
        while let Ok(apply) = self.applies.try_recv() {
            waiting.take(apply);
        }
        while waiting.len() < max_waiting {
            let Ok(commit) = self.backlog.try_recv() else { break };
            waiting.take(commit);
        }
    }
}

impl Committer {
    /// Holds the next group while the memtables hold more than `write_buffer_limit` and
    /// one of them is full or sealed, waiting for the sealer or its flush: when writes
    /// outrun fjall's flushes, sealed memtables would otherwise pile up without bound.
    /// Callers wait meanwhile, which backs up into admission's 503s. With none full or
    /// sealed, waiting could free nothing: the active memtables are bounded by their
    /// sizes, and fjall's count can stay above the truth (a batch's bytes are added
    /// after its memtable may have been flushed, and what a flush takes off stops at
    /// zero).
    fn wait_for_flushes(&self) {
        while self.db.write_buffer_size() > self.write_buffer_limit
            && (self.tables.flush_pending() || self.tables.memtable_full())
            && !self.failed.load(Ordering::Relaxed)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Writes groups until both queues close. A group is the commits written together,
    /// then fsynced if a caller waits for it or applies waited long enough.
    pub fn run(self, mut queues: Queues) {
        // Only to wait on two queues and a deadline at once from this thread.
        let waiter = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime with a timer builds");
        let caps = GroupCaps { commits: self.max_group, records: self.max_group_records };
        let mut waiting = Waiting::new();
        let mut answers = Vec::with_capacity(self.max_group);
        let mut unpersisted: Option<Unpersisted> = None;
        loop {
            if waiting.len() == 0 {
                let due = unpersisted.map(|applies| applies.since + LIVE_PERSIST_INTERVAL);
                match queues.next(&waiter, due) {
                    Next::Commit(first) => waiting.take(first),
                    Next::Due => {
                        self.persist_applies(unpersisted.take());
                        continue;
                    }
                    Next::Closed => {
                        self.persist_applies(unpersisted.take());
                        return;
                    }
                }
            }
            self.wait_for_flushes();
            let started = Instant::now();
            let (mut group, mut outcome, mut applied) = (Group::default(), Ok(()), None);
            loop {
                queues.take_queued(&mut waiting, self.max_waiting);
                let Some(PendingCommit { batch, stats, records, origin }) = waiting.next(&group, caps) else { break };
                group = Group { commits: group.commits + 1, records: group.records + records };
                let lsn = match origin {
                    Origin::Caller(done) => {
                        answers.push(done);
                        None
                    }
                    Origin::LiveLog(lsn) => Some(lsn),
                };
                outcome = self.write(batch, stats, lsn);
                if outcome.is_err() {
                    break;
                }
                if let Some(lsn) = lsn {
                    self.barrier.applied(lsn);
                    applied = Some(lsn);
                }
            }
            self.metrics.queue_depth.set((queues.applies.len() + queues.backlog.len() + waiting.len()) as i64);
            self.metrics.write_buffer.set(self.db.write_buffer_size() as i64);
            if let Some(lsn) = applied {
                let since = unpersisted.map_or(started, |applies| applies.since);
                unpersisted = Some(Unpersisted { lsn, since });
            }
            // A caller waits for the fsync; applies alone only once the interval is up.
            let persist_now = !answers.is_empty()
                || unpersisted.is_some_and(|applies| applies.since.elapsed() >= LIVE_PERSIST_INTERVAL);
            if self.tables.memtable_full() {
                self.sealer.request();
            }
            let outcome = outcome.and_then(|()| if persist_now { self.persist(unpersisted.take()) } else { Ok(()) });
            self.metrics.observe_group(group.commits, started.elapsed(), outcome.is_ok());
            if let Err(error) = &outcome {
                self.fail(error, group.commits);
            }
            for done in answers.drain(..) {
                let _ = done.send(outcome.clone());
            }
        }
    }

    /// fsyncs what was written, and lets the live log forget the entries applied.
    fn persist(&self, applies: Option<Unpersisted>) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncData).map_err(unavailable)?;
        if let Some(applies) = applies {
            self.durable_lsn.store(applies.lsn, Ordering::Release);
        }
        Ok(())
    }

    /// fsyncs applies of the live log still waiting for it, with no group to go with.
    fn persist_applies(&self, applies: Option<Unpersisted>) {
        if applies.is_some() && !self.failed.load(Ordering::Relaxed) {
            if let Err(error) = self.persist(applies) {
                self.fail(&error, 0);
            }
        }
    }

    /// Writes nothing more after a failed write or fsync: see the module's doc.
    fn fail(&self, error: &StoreError, commits: usize) {
        halt(&self.failed, &self.barrier);
        tracing::error!(%error, commits, "group commit failed; nothing in it is acked");
    }

    /// Writes one commit's batch with its counts added to the statistics and, for a
    /// live log entry, the mark that it is applied, atomically: a crash leaves all of
    /// it or none of it, so the statistics always count exactly the records stored.
    /// Durable only after the group's fsync.
    pub fn write(
        &self,
        mut batch: OwnedWriteBatch,
        stats: Vec<SyncCounts>,
        lsn: Option<u64>,
    ) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(failed_earlier());
        }
        self.add_stats(stats, &mut batch)?;
        if let Some(lsn) = lsn {
            batch.insert(&self.tables.meta, LIVE_APPLIED, encode(&lsn));
        }
        batch.commit().map_err(unavailable)
    }

    /// Adds a commit's counts to the hourly org totals and the device totals, each
    /// event's once: an event already counted (a retried commit) is skipped, and the
    /// event is marked counted in the same atomic batch. The committer is the only
    /// writer of all three, so reading and adding loses nothing.
    fn add_stats(&self, stats: Vec<SyncCounts>, batch: &mut OwnedWriteBatch) -> Result<(), StoreError> {
        /// The totals a commit adds to: an org's hour, or a device's all-time.
        #[derive(PartialEq, Eq, Hash)]
        enum TotalsOf {
            OrgHour(Vec<u8>),
            Device(Vec<u8>),
        }
        // Summed first: the batch's own writes are not read back.
        let mut sums: std::collections::HashMap<TotalsOf, SyncTotals> = std::collections::HashMap::new();
        let mut counted = std::collections::HashSet::new();
        for counts in stats {
            let event = keys::event(&counts.device_id, counts.key);
            if !counted.insert(event.clone()) || self.tables.stats_counted.contains_key(&event).map_err(unavailable)? {
                continue;
            }
            batch.insert(&self.tables.stats_counted, event, []);
            let org_hour = keys::timed_from(&counts.org_id, super::hour_of(counts.at));
            sums.entry(TotalsOf::OrgHour(org_hour)).or_default().add(&counts.totals);
            sums.entry(TotalsOf::Device(counts.device_id.into_bytes())).or_default().add(&counts.totals);
        }
        for (of, sum) in sums {
            let (keyspace, key) = match of {
                TotalsOf::OrgHour(key) => (&self.tables.stats_by_org_hour, key),
                TotalsOf::Device(key) => (&self.tables.stats_by_device, key),
            };
            let mut totals: SyncTotals = read(keyspace, &key)?.unwrap_or_default();
            totals.add(&sum);
            batch.insert(keyspace, key, encode(&totals));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commits a committer would write into one group, in order.
    fn group_of(waiting: &mut Waiting<(&'static str, usize, bool)>, caps: GroupCaps) -> Vec<&'static str> {
        let mut group = Group::default();
        let mut written = Vec::new();
        while let Some((name, records, _)) = waiting.next(&group, caps) {
            group = Group { commits: group.commits + 1, records: group.records + records };
            written.push(name);
        }
        written
    }

    fn waiting(commits: &[(&'static str, usize, bool)]) -> Waiting<(&'static str, usize, bool)> {
        let mut waiting = Waiting::new();
        for &commit in commits {
            waiting.push(commit, commit.2);
        }
        waiting
    }

    #[test]
    fn an_apply_is_taken_before_backlog_and_past_the_waiting_cap() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let commit = |origin| PendingCommit {
            batch: OwnedWriteBatch::with_capacity(db.clone(), 0),
            records: 0,
            stats: vec![],
            origin,
        };
        let ((backlog_sender, backlog), (applies_sender, applies)) = (mpsc::channel(8), mpsc::channel(8));
        let mut queues = Queues { applies, backlog };
        backlog_sender.try_send(commit(Origin::Caller(oneshot::channel().0))).unwrap();
        applies_sender.try_send(commit(Origin::LiveLog(1))).unwrap();
        applies_sender.try_send(commit(Origin::LiveLog(2))).unwrap();
        let waiter = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let next = |queues: &mut Queues| match queues.next(&waiter, None) {
            Next::Commit(commit) => Some(commit),
            Next::Due => panic!("no deadline was given"),
            Next::Closed => None,
        };
        assert!(matches!(next(&mut queues).unwrap().origin, Origin::LiveLog(1)), "an apply first");
        let mut waiting = Waiting::new();
        queues.take_queued(&mut waiting, 0);
        assert_eq!(
            (waiting.live.len(), waiting.backlog.len()),
            (1, 0),
            "applies pass the cap on waiting commits, backlog does not"
        );
        drop((backlog_sender, applies_sender));
        assert!(
            matches!(next(&mut queues).unwrap().origin, Origin::Caller(_)),
            "what was queued is taken after the queues close"
        );
        assert!(next(&mut queues).is_none());
    }

    /// A committer on a fresh store in `dir`, and what tells how far its applies of the
    /// live log are durable.
    fn committer(dir: &std::path::Path) -> (Committer, Arc<AtomicU64>) {
        let db = Database::builder(dir).open().unwrap();
        let tables = Tables::open(&db, 64 * 1024 * 1024).unwrap();
        let (failed, barrier) = (Arc::new(AtomicBool::new(false)), Arc::new(ReadBarrier::new(0)));
        // Its sealer is dropped: these memtables do not fill.
        let (_, sealer) = super::super::sealer::sealer(tables.clone(), failed.clone(), barrier.clone());
        let durable_lsn = Arc::new(AtomicU64::new(0));
        let committer = Committer {
            db,
            tables,
            max_group: 4,
            max_group_records: 100,
            max_waiting: 16,
            metrics: StoreMetrics::register(&prometheus::Registry::new()).unwrap(),
            failed,
            barrier,
            durable_lsn: durable_lsn.clone(),
            write_buffer_limit: u64::MAX,
            sealer,
        };
        (committer, durable_lsn)
    }

    /// Applies of the live log alone are not fsynced group by group, but none is left
    /// without one: when no more commits come, and when the queues close.
    #[test]
    fn applies_alone_are_made_durable_when_idle_and_at_the_close() {
        for close_at_once in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (committer, durable_lsn) = committer(dir.path());
            let apply = |lsn| PendingCommit {
                batch: OwnedWriteBatch::with_capacity(committer.db.clone(), 0),
                records: 1,
                stats: vec![],
                origin: Origin::LiveLog(lsn),
            };
            let ((applies_sender, applies), (backlog_sender, backlog)) = (mpsc::channel(64), mpsc::channel(64));
            for lsn in 1..=40 {
                applies_sender.try_send(apply(lsn)).unwrap();
            }
            let running = std::thread::spawn(move || committer.run(Queues { applies, backlog }));
            if close_at_once {
                drop((applies_sender, backlog_sender));
                running.join().unwrap();
                assert_eq!(durable_lsn.load(Ordering::Acquire), 40, "the close made every apply durable");
            } else {
                let waited = Instant::now();
                while durable_lsn.load(Ordering::Acquire) < 40 {
                    assert!(waited.elapsed() < Duration::from_secs(10), "idle for 10 s and still not durable");
                    std::thread::sleep(Duration::from_millis(10));
                }
                drop((applies_sender, backlog_sender));
                running.join().unwrap();
            }
        }
    }

    #[test]
    fn live_applies_go_first_and_the_group_goes_on_with_backlog() {
        let caps = GroupCaps { commits: 100, records: 1_000 };
        let mut queue = waiting(&[("b1", 300, false), ("l1", 1, true), ("b2", 300, false), ("l2", 1, true)]);
        assert_eq!(group_of(&mut queue, caps), vec!["l1", "l2", "b1", "b2"]);
    }

    #[test]
    fn groups_stop_at_the_caps_and_a_large_commit_goes_alone() {
        let mut queue = waiting(&[
            ("big", 5_000, false),
            ("b1", 300, false),
            ("b2", 300, false),
            ("b3", 300, false),
            ("b4", 300, false),
        ]);
        let caps = GroupCaps { commits: 100, records: 600 };
        assert_eq!(group_of(&mut queue, caps), vec!["big"]);
        assert_eq!(group_of(&mut queue, caps), vec!["b1", "b2"]);
        let caps = GroupCaps { commits: 1, records: 600 };
        assert_eq!(group_of(&mut queue, caps), vec!["b3"]);
        let mut live = waiting(&[("l1", 400, true), ("l2", 400, true), ("l3", 400, true)]);
        assert_eq!(
            group_of(&mut live, GroupCaps { commits: 100, records: 600 }),
            vec!["l1", "l2"],
            "live applies are capped too"
        );
    }
}
