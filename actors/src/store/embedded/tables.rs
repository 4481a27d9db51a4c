//! The embedded store's options and its tables (fjall keyspaces), and how a table is
//! read.

use super::unavailable;
use crate::store::codec::decode;
use crate::store::StoreError;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedStoreOptions {
    pub path: PathBuf,
    /// Commits that may wait for the committer; callers beyond it wait to enqueue.
    pub commit_queue_capacity: usize,
    /// The most commits one fsync covers.
    pub max_group_commits: usize,
    /// The most device records one fsync covers (one commit may pass it alone).
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
    /// flushed, bytes; the other tables' is at most 4 MiB. Fixed when a table is created
    /// (fjall keeps it with the table).
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
        }
    }
}

/// The memtable of a table that takes a few rows per batch (all but seqs and timeline).
const SMALL_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

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
    /// Opens every table, creating those that are missing.
    pub(super) fn open(db: &Database, memtable_bytes: u64) -> Result<Tables, StoreError> {
        // lz4 on every level, not only from L2 on as fjall does by default: a storm's
        // flushes and first compactions then write about 43% fewer bytes (docs/benchmarks.md).
        // Options apply when a keyspace is created; existing ones keep theirs.
        let compression = fjall::config::CompressionPolicy::all(fjall::CompressionType::Lz4);
        let sized = |name: &str, memtable_bytes: u64| {
            let options = || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable_bytes)
                    .data_block_compression_policy(compression.clone())
            };
            db.keyspace(name, options).map_err(unavailable)
        };
        // The tables a backlog batch writes a row of per record take `memtable_bytes`;
        // every other table takes a few rows per batch and a small memtable, so that
        // one-record batches, which write every table alike, do not fill them all.
        let keyspace = |name: &str| sized(name, memtable_bytes.min(SMALL_MEMTABLE_BYTES));
        Ok(Tables {
            devices: keyspace("devices")?,
            orgs: keyspace("orgs")?,
            progress: keyspace("progress")?,
            seqs: sized("seqs", memtable_bytes)?,
            timeline: sized("timeline", memtable_bytes)?,
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
        })
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
