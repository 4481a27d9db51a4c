//! The on-device queue: records waiting for their ack, numbered with the device's
//! `seq`, within the org's storage limit.
//!
//! `SqliteQueue` is durable (the app's queue survives restarts and crashes: each call is
//! one SQLite transaction); `MemoryQueue` keeps the same contract in memory, for
//! simulated fleets and tests. Both pass the same contract tests.

use otg_schema::wire::{self, Record};
use otg_schema::RecordKind;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Taking the record would pass the org's `storage_limit_bytes`.
    #[error("the queue holds {held} bytes; this record would pass the limit of {limit}")]
    Full { held: u64, limit: u64 },
    #[error("queue storage: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("a queued record does not decode: {0}")]
    Corrupt(String),
}

/// What the client needs of a queue.
pub trait RecordQueue {
    /// Numbers `record` with the next seq, stores it, and returns the seq; `Full` if it
    /// would pass `limit_bytes`, in which case nothing changes.
    fn push(&mut self, record: Record, limit_bytes: u64) -> Result<i64, QueueError>;

    /// Up to `max` records in upload order: by the rank of their kind in `priorities`
    /// (kinds not named go last), then by seq.
    fn next_batch(&self, max: usize, priorities: &[RecordKind]) -> Result<Vec<Record>, QueueError>;

    /// Deletes the records of these seqs (acked: safe to delete).
    fn remove(&mut self, seqs: &[i64]) -> Result<(), QueueError>;

    /// Deletes records recorded before `cutoff_ms` (the gateway would reject them
    /// `too_old`); returns how many.
    fn remove_older_than(&mut self, cutoff_ms: i64) -> Result<u64, QueueError>;

    /// Records waiting.
    fn pending(&self) -> Result<u64, QueueError>;

    /// Bytes the waiting records take, encoded.
    fn bytes(&self) -> Result<u64, QueueError>;

    /// The oldest `recorded_at` among the waiting records other than `except` (a batch
    /// on its way), for the device's health report.
    fn oldest_recorded_at(&self, except: &[i64]) -> Result<Option<i64>, QueueError>;
}

/// Upload order of a kind: its place in `priorities`, unnamed kinds last.
fn rank(kind: &str, priorities: &[RecordKind]) -> usize {
    priorities.iter().position(|named| named.as_str() == kind).unwrap_or(priorities.len())
}

/// The queue in a SQLite database of the app's.
pub struct SqliteQueue {
    db: Connection,
}

impl SqliteQueue {
    /// Opens (or creates) the queue at `path`; a seq once given is never given again.
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        let db = Connection::open(path)?;
        // WAL with synchronous=FULL: a record acknowledged to the app survives a crash.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS queue (
                 seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, recorded_at INTEGER NOT NULL, body BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        Ok(SqliteQueue { db })
    }
}

impl RecordQueue for SqliteQueue {
    fn push(&mut self, mut record: Record, limit_bytes: u64) -> Result<i64, QueueError> {
        let transaction = self.db.transaction()?;
        let last: i64 = transaction
            .query_row("SELECT value FROM counters WHERE name = 'last_seq'", [], |row| row.get(0))
            .optional()?
            .unwrap_or(0);
        record.seq = last + 1;
        let body = wire::encode(&record);
        let held: u64 =
            transaction.query_row("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM queue", [], |row| row.get(0))?;
        if held + body.len() as u64 > limit_bytes {
            return Err(QueueError::Full { held, limit: limit_bytes });
        }
        transaction.execute(
            "INSERT INTO queue (seq, kind, recorded_at, body) VALUES (?1, ?2, ?3, ?4)",
            params![record.seq, record.kind, record.recorded_at, body],
        )?;
        transaction.execute(
            "INSERT INTO counters (name, value) VALUES ('last_seq', ?1) ON CONFLICT (name) DO UPDATE SET value = ?1",
            params![record.seq],
        )?;
        transaction.commit()?;
        Ok(record.seq)
    }

    fn next_batch(&self, max: usize, priorities: &[RecordKind]) -> Result<Vec<Record>, QueueError> {
        let mut statement = self.db.prepare_cached("SELECT seq, kind FROM queue")?;
        let mut order: Vec<(usize, i64)> = statement
            .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?
            .map(|row| row.map(|(seq, kind)| (rank(&kind, priorities), seq)))
            .collect::<Result<_, _>>()?;
        order.sort_unstable();
        let mut body = self.db.prepare_cached("SELECT body FROM queue WHERE seq = ?1")?;
        order
            .into_iter()
            .take(max)
            .map(|(_, seq)| {
                let bytes: Vec<u8> = body.query_row([seq], |row| row.get(0))?;
                wire::decode(&bytes).map_err(|error| QueueError::Corrupt(error.to_string()))
            })
            .collect()
    }

    fn remove(&mut self, seqs: &[i64]) -> Result<(), QueueError> {
        let transaction = self.db.transaction()?;
        {
            let mut delete = transaction.prepare_cached("DELETE FROM queue WHERE seq = ?1")?;
            for seq in seqs {
                delete.execute([seq])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    fn remove_older_than(&mut self, cutoff_ms: i64) -> Result<u64, QueueError> {
        Ok(self.db.execute("DELETE FROM queue WHERE recorded_at < ?1", [cutoff_ms])? as u64)
    }

    fn pending(&self) -> Result<u64, QueueError> {
        Ok(self.db.query_row("SELECT COUNT(*) FROM queue", [], |row| row.get(0))?)
    }

    fn bytes(&self) -> Result<u64, QueueError> {
        Ok(self.db.query_row("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM queue", [], |row| row.get(0))?)
    }

    fn oldest_recorded_at(&self, except: &[i64]) -> Result<Option<i64>, QueueError> {
        // Oldest first: at most `except.len() + 1` rows are read before the answer.
        let mut statement = self.db.prepare_cached("SELECT seq, recorded_at FROM queue ORDER BY recorded_at")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            if !except.contains(&row.get::<_, i64>(0)?) {
                return Ok(Some(row.get(1)?));
            }
        }
        Ok(None)
    }
}

/// The same contract in memory: for simulated devices and tests, not durable.
#[derive(Default)]
pub struct MemoryQueue {
    records: BTreeMap<i64, (Record, u64)>,
    last_seq: i64,
    bytes: u64,
}

impl RecordQueue for MemoryQueue {
    fn push(&mut self, mut record: Record, limit_bytes: u64) -> Result<i64, QueueError> {
        record.seq = self.last_seq + 1;
        let size = wire::encode(&record).len() as u64;
        if self.bytes + size > limit_bytes {
            return Err(QueueError::Full { held: self.bytes, limit: limit_bytes });
        }
        self.last_seq = record.seq;
        self.bytes += size;
        self.records.insert(record.seq, (record, size));
        Ok(self.last_seq)
    }

    fn next_batch(&self, max: usize, priorities: &[RecordKind]) -> Result<Vec<Record>, QueueError> {
        let mut order: Vec<(usize, i64)> =
            self.records.values().map(|(record, _)| (rank(&record.kind, priorities), record.seq)).collect();
        order.sort_unstable();
        Ok(order.into_iter().take(max).map(|(_, seq)| self.records[&seq].0.clone()).collect())
    }

    fn remove(&mut self, seqs: &[i64]) -> Result<(), QueueError> {
        for seq in seqs {
            if let Some((_, size)) = self.records.remove(seq) {
                self.bytes -= size;
            }
        }
        Ok(())
    }

    fn remove_older_than(&mut self, cutoff_ms: i64) -> Result<u64, QueueError> {
        let old: Vec<i64> = self
            .records
            .values()
            .filter(|(record, _)| record.recorded_at < cutoff_ms)
            .map(|(record, _)| record.seq)
            .collect();
        self.remove(&old)?;
        Ok(old.len() as u64)
    }

    fn pending(&self) -> Result<u64, QueueError> {
        Ok(self.records.len() as u64)
    }

    fn bytes(&self) -> Result<u64, QueueError> {
        Ok(self.bytes)
    }

    fn oldest_recorded_at(&self, except: &[i64]) -> Result<Option<i64>, QueueError> {
        Ok(self
            .records
            .values()
            .filter(|(record, _)| !except.contains(&record.seq))
            .map(|(record, _)| record.recorded_at)
            .min())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY0: i64 = 1_764_028_800_000;

    fn record(kind: &str, at: i64) -> Record {
        Record::new(0, format!("r-{kind}-{at}"), kind, "emp-1", at)
    }

    /// The contract every queue keeps.
    fn keeps_the_contract(queue: &mut dyn RecordQueue) {
        let limit = 10_000;
        let kinds = ["leave_request", "check_in", "break_start", "break_end", "check_out"];
        for (n, kind) in kinds.iter().enumerate() {
            assert_eq!(queue.push(record(kind, DAY0 + n as i64), limit).unwrap(), n as i64 + 1, "seqs count from 1");
        }
        assert_eq!(queue.pending().unwrap(), 5);
        let priorities = [
            RecordKind::CheckIn,
            RecordKind::CheckOut,
            RecordKind::BreakStart,
            RecordKind::BreakEnd,
            RecordKind::LeaveRequest,
        ];
        let order: Vec<i64> = queue.next_batch(10, &priorities).unwrap().iter().map(|record| record.seq).collect();
        assert_eq!(order, vec![2, 5, 3, 4, 1], "check-in/out, then breaks, then leave");
        assert_eq!(queue.next_batch(2, &priorities).unwrap().len(), 2);

        assert_eq!(queue.oldest_recorded_at(&[]).unwrap(), Some(DAY0));
        assert_eq!(queue.oldest_recorded_at(&[1, 3]).unwrap(), Some(DAY0 + 1), "a batch on its way is left out");
        queue.remove(&[2, 5]).unwrap();
        assert_eq!(queue.pending().unwrap(), 3);
        assert_eq!(queue.remove_older_than(DAY0 + 3).unwrap(), 2, "seqs 1 and 3 are older");
        let left: Vec<i64> = queue.next_batch(10, &priorities).unwrap().iter().map(|record| record.seq).collect();
        assert_eq!(left, vec![4]);
        assert_eq!(queue.push(record("check_in", DAY0 + 9), limit).unwrap(), 6, "a removed seq is never given again");

        let held = queue.bytes().unwrap();
        assert!(matches!(queue.push(record("check_out", DAY0 + 10), held + 10), Err(QueueError::Full { .. })));
        assert_eq!(queue.pending().unwrap(), 2, "a refused record changes nothing");
        assert_eq!(queue.push(record("check_out", DAY0 + 11), limit).unwrap(), 7);
    }

    #[test]
    fn the_memory_queue_keeps_the_contract() {
        keeps_the_contract(&mut MemoryQueue::default());
    }

    #[test]
    fn the_sqlite_queue_keeps_the_contract_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        keeps_the_contract(&mut SqliteQueue::open(&path).unwrap());
        let mut reopened = SqliteQueue::open(&path).unwrap();
        assert_eq!(reopened.pending().unwrap(), 3);
        assert_eq!(reopened.push(record("check_in", DAY0 + 20), 10_000).unwrap(), 8, "the seq counter survives");
    }
}
