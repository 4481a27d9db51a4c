//! The embedded store's options and its tables (fjall keyspaces), and how a table is
//! read.

use super::unavailable;
use crate::store::codec::decode;
use crate::store::StoreError;
use fjall::{AbstractTree, Database, Keyspace, KeyspaceCreateOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedStoreOptions {
    pub path: PathBuf,
    /// Commits that may wait for the committer; callers beyond it wait to enqueue.
    pub commit_queue_capacity: usize,
    /// The most commits one group commit covers.
    pub max_group_commits: usize,
    /// The most device records one group commit covers (one commit may pass it alone).
    pub max_group_records: usize,
    /// A live commit of at most this many records goes through the live log; a larger
    /// one (a device catching up, not a check-in) through the committer, so the log
    /// stays small and fast. 0: none does.
    pub live_log_max_records: usize,
    /// A commit is live when its newest record was recorded at most this long before
    /// the gateway received it: the admission's rule for a live batch, read from the
    /// records themselves.
    pub live_window_ms: i64,
    /// fjall block cache, bytes.
    pub cache_bytes: u64,
    /// Largest memtable of the seqs and timeline tables (a row per record) before it is
    /// flushed, bytes; the other tables' is at most 4 MiB.
    pub memtable_bytes: u64,
    /// Most bytes of journal kept: once the journals pass it (checked when a memtable
    /// is flushed), every table with writes still in the oldest is flushed too, so a
    /// table with few writes does not hold them for long. The hard bound on all
    /// memtables together is `write_buffer_bytes` (at least 64 MiB; applies at every
    /// open).
    pub journal_bytes: u64,
    /// Most bytes all memtables may hold (active and sealed, waiting for their flush):
    /// beyond it the committer waits for flushes, so memory stays bounded when writes
    /// outrun them.
    pub write_buffer_bytes: u64,
    /// fjall's threads that flush and compact the tables; `None`: as fjall chooses, one
    /// per CPU the process may use, at most four. The tests take one, as a one-CPU pod
    /// has: the fewest there are to flush with.
    pub background_threads: Option<usize>,
}

impl EmbeddedStoreOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        EmbeddedStoreOptions {
            path: path.into(),
            commit_queue_capacity: 4096,
            max_group_commits: 1024,
            max_group_records: 4_000,
            live_log_max_records: 64,
            live_window_ms: otg_schema::signing::LIVE_WINDOW_MS,
            cache_bytes: 64 * 1024 * 1024,
            memtable_bytes: 64 * 1024 * 1024,
            journal_bytes: 64 * 1024 * 1024,
            write_buffer_bytes: 256 * 1024 * 1024,
            background_threads: None,
        }
    }
}

/// The memtable of a table that takes a few rows per batch (all but seqs and timeline).
const SMALL_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

/// fjall's own memtable size for the tables this store creates: never reached, since
/// the sealer seals memtables ([`Tables::seal_full_memtables`]). fjall's trigger asks
/// its workers to seal a table after every write while the table is over its size, on
/// the bounded queue the workers read; when those requests fill it, a worker that seals
/// a table waits on that queue to have the flush done, and once every worker waits so,
/// nothing is ever flushed again and every write stops (fjall 3.1; fjall-rs/fjall#323).
/// With one worker, as a one-CPU pod has, a long run of small commits did it in its
/// first seconds. Tables made before keep the size they were made with: fjall then asks
/// once, for the write that passes it, and the sealer seals the table right after.
const FJALL_MEMTABLE_BYTES: u64 = u64::MAX;

#[derive(Clone)]
pub(super) struct Tables {
    pub(super) devices: Keyspace,
    pub(super) orgs: Keyspace,
    pub(super) progress: Keyspace,
    pub(super) seqs: Keyspace,
    pub(super) timeline: Keyspace,
    pub(super) conflicts: Keyspace,
    /// A conflict's resolution, apart from its detection, so that writing a detection
    /// again can never undo a resolution.
    pub(super) conflict_resolutions: Keyspace,
    pub(super) conflicts_by_org: Keyspace,
    pub(super) conflicts_by_device: Keyspace,
    /// One empty value per timeline partition that holds anything: a point read with a
    /// bloom filter answers "this day is empty" far cheaper than a prefix scan.
    pub(super) timeline_days: Keyspace,
    pub(super) audit_by_device: Keyspace,
    pub(super) audit_by_org: Keyspace,
    pub(super) stats_by_org_hour: Keyspace,
    pub(super) stats_by_device: Keyspace,
    /// The (device, event key) of every event the statistics count: counts written
    /// again are not added again.
    pub(super) stats_counted: Keyspace,
    pub(super) org_devices: Keyspace,
    /// The store's own bookkeeping: how far the live log is applied.
    pub(super) meta: Keyspace,
    /// The size at which a memtable of seqs or timeline is sealed.
    memtable_bytes: u64,
}

/// The tables a commit writes, named in live log entries (by name: a table may be
/// added, never renamed while a log may hold it).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) enum Table {
    Progress,
    Seqs,
    Timeline,
    TimelineDays,
    Conflicts,
    ConflictsByOrg,
    ConflictsByDevice,
    AuditByDevice,
    AuditByOrg,
}

impl Tables {
    /// Opens every table, creating those that are missing. `memtable_bytes` is when
    /// the sealer seals a memtable of seqs or timeline ([`Tables::seal_full_memtables`]).
    pub(super) fn open(db: &Database, memtable_bytes: u64) -> Result<Tables, StoreError> {
        // lz4 on every level, not only from L2 on as fjall does by default: a storm's
        // flushes and first compactions then write about 43% fewer bytes (docs/benchmarks.md).
        // Options apply when a keyspace is created; existing ones keep theirs.
        let options = || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(FJALL_MEMTABLE_BYTES)
                .data_block_compression_policy(fjall::config::CompressionPolicy::all(fjall::CompressionType::Lz4))
        };
        let keyspace = |name: &str| db.keyspace(name, options).map_err(unavailable);
        Ok(Tables {
            devices: keyspace("devices")?,
            orgs: keyspace("orgs")?,
            progress: keyspace("progress")?,
            seqs: keyspace("seqs")?,
            timeline: keyspace("timeline")?,
            conflicts: keyspace("conflicts")?,
            conflict_resolutions: keyspace("conflict_resolutions")?,
            conflicts_by_org: keyspace("conflicts_by_org")?,
            conflicts_by_device: keyspace("conflicts_by_device")?,
            timeline_days: keyspace("timeline_days")?,
            audit_by_device: keyspace("audit_by_device")?,
            audit_by_org: keyspace("audit_by_org")?,
            stats_by_org_hour: keyspace("stats_by_org_hour")?,
            stats_by_device: keyspace("stats_by_device")?,
            stats_counted: keyspace("stats_counted")?,
            org_devices: keyspace("org_devices")?,
            meta: keyspace("meta")?,
            memtable_bytes,
        })
    }

    /// Every table with the size at which its memtable is sealed. The tables a backlog
    /// batch writes a row of per record take `memtable_bytes`; every other table takes
    /// a few rows per batch and a small memtable, so that one-record batches, which
    /// write every table alike, do not fill them all.
    fn memtable_limits(&self) -> [(&Keyspace, u64); 17] {
        let (large, small) = (self.memtable_bytes, self.memtable_bytes.min(SMALL_MEMTABLE_BYTES));
        [
            (&self.seqs, large),
            (&self.timeline, large),
            (&self.devices, small),
            (&self.orgs, small),
            (&self.progress, small),
            (&self.conflicts, small),
            (&self.conflict_resolutions, small),
            (&self.conflicts_by_org, small),
            (&self.conflicts_by_device, small),
            (&self.timeline_days, small),
            (&self.audit_by_device, small),
            (&self.audit_by_org, small),
            (&self.stats_by_org_hour, small),
            (&self.stats_by_device, small),
            (&self.stats_counted, small),
            (&self.org_devices, small),
            (&self.meta, small),
        ]
    }

    /// The tables whose memtable has reached its size.
    fn full_memtables(&self) -> impl Iterator<Item = &Keyspace> {
        self.memtable_limits()
            .into_iter()
            .filter(|(keyspace, limit)| keyspace.tree.active_memtable().size() >= *limit)
            .map(|(keyspace, _)| keyspace)
    }

    /// Whether a memtable has reached its size and waits to be sealed.
    pub(super) fn memtable_full(&self) -> bool {
        self.full_memtables().next().is_some()
    }

    /// Seals each memtable that has reached its size, for fjall's workers to flush. Only
    /// the sealer calls it (`sealer.rs`), when the committer asks after a group: so a
    /// table is sealed once, and fjall's workers are asked once, however many writes
    /// reach it meanwhile.
    pub(super) fn seal_full_memtables(&self) -> Result<(), StoreError> {
        for keyspace in self.full_memtables() {
            keyspace.rotate_memtable().map_err(unavailable)?;
        }
        Ok(())
    }

    /// Whether a sealed memtable waits for its flush (each sealed one has its flush
    /// queued or under way).
    pub(super) fn flush_pending(&self) -> bool {
        self.memtable_limits().iter().any(|(keyspace, _)| keyspace.sealed_memtable_count() > 0)
    }

    pub(super) fn of(&self, table: Table) -> &Keyspace {
        match table {
            Table::Progress => &self.progress,
            Table::Seqs => &self.seqs,
            Table::Timeline => &self.timeline,
            Table::TimelineDays => &self.timeline_days,
            Table::Conflicts => &self.conflicts,
            Table::ConflictsByOrg => &self.conflicts_by_org,
            Table::ConflictsByDevice => &self.conflicts_by_device,
            Table::AuditByDevice => &self.audit_by_device,
            Table::AuditByOrg => &self.audit_by_org,
        }
    }
}

/// The items of a partition (`prefix`) that come after the key `after`.
pub(super) fn scan_after(keyspace: &Keyspace, prefix: &[u8], after: Option<&[u8]>) -> fjall::Iter {
    match after.filter(|after| after.starts_with(prefix)) {
        Some(after) => {
            let (_, end) = fjall::util::prefix_to_range(prefix);
            keyspace.range((std::ops::Bound::Excluded(fjall::UserKey::from(after)), end))
        }
        None => keyspace.prefix(prefix),
    }
}

pub(super) fn read<T: DeserializeOwned>(keyspace: &Keyspace, key: &[u8]) -> Result<Option<T>, StoreError> {
    keyspace.get(key).map_err(unavailable)?.map(|bytes| decode(&bytes)).transpose()
}
