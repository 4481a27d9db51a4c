//! Replay of the live log at open: the entries acked before a crash or a stop and not
//! yet in the tables are applied, each exactly once (the applied mark is written with
//! them).

use super::committer::Committer;
use super::live_log::LiveLog;
use super::unavailable;
use super::write_set::{batch_of, LiveEntry, Write};
use crate::store::codec::decode;
use crate::store::StoreError;
use fjall::PersistMode;

/// The longest key fjall stores; an empty key it refuses too.
const MAX_KEY_BYTES: usize = u16::MAX as usize;

/// Applies the live log's entries after `applied` (acked before a crash or a stop,
/// not yet in the tables), durably; returns the last entry's number.
pub(super) fn replay_live_log(committer: &Committer, dir: &std::path::Path, applied: u64) -> Result<u64, StoreError> {
    let mut last = applied;
    LiveLog::recover(dir, |lsn, payload| {
        if lsn <= applied {
            return Ok(());
        }
        let LiveEntry { writes, stats } = decode(&payload)?;
        // fjall panics on a key it cannot hold: an entry with one is damage, refused.
        if let Some(Write(_, key, _)) = writes.iter().find(|Write(_, key, _)| !(1..=MAX_KEY_BYTES).contains(&key.len()))
        {
            return Err(StoreError::Corrupt(format!("live log entry {lsn}: a key of {} bytes", key.len())));
        }
        last = lsn;
        committer.write(batch_of(&committer.db, &committer.tables, writes), stats, Some(lsn))
    })?;
    // Always: the mark read at open may not be on disk yet, and the log is deleted next.
    committer.db.persist(PersistMode::SyncAll).map_err(unavailable)?;
    if last > applied {
        tracing::info!(entries = last - applied, "applied the live log's entries acked before the last stop");
    }
    Ok(last)
}
