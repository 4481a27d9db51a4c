//! What a commit writes, built on the caller's thread: every key and value, in the
//! form a live log entry carries them (so that applying an entry again writes the same
//! keys), and the atomic batch they go into.

use super::read_barrier::Touched;
use super::tables::{Table, Tables};
use crate::store::codec::encode;
use crate::store::{keys, AuditEvent, Commit, SyncCounts};
use fjall::{Database, OwnedWriteBatch};
use serde::{Deserialize, Serialize};

/// One key and value a commit writes. The value is fjall's shared slice: copied once
/// from its encoding, then shared by every key that holds it (a leave's days).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Write(
    pub Table,
    #[serde(with = "serde_bytes")] pub Vec<u8>,
    #[serde(with = "value_bytes")] pub fjall::UserValue,
);

/// A value as MessagePack bytes in a live log entry.
mod value_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &fjall::UserValue, serializer: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(&**value, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<fjall::UserValue, D::Error> {
        let bytes: serde_bytes::ByteBuf = serde_bytes::deserialize(deserializer)?;
        Ok(bytes.into_vec().into())
    }
}

/// A live log entry's payload: a commit's writes (its audit keys included, so that
/// applying it again writes the same keys) and the counts it adds.
#[derive(Serialize, Deserialize)]
pub(super) struct LiveEntry {
    pub writes: Vec<Write>,
    pub stats: Vec<SyncCounts>,
}

/// Every key and value `commit` writes (the statistics aside, which the committer
/// adds), built on the caller's thread.
pub(super) fn writes_of(commit: &Commit) -> Vec<Write> {
    let Commit { device, timeline, conflicts, audit, .. } = commit;
    let capacity = device.as_ref().map_or(0, |device| device.entries.len() + 1)
        + timeline.len() * 2
        + conflicts.len() * 4
        + audit.len() * 2;
    let mut writes = Vec::with_capacity(capacity);
    if let Some(device) = device {
        for entry in &device.entries {
            writes.push(Write(Table::Seqs, keys::seq(&device.device_id, entry.seq()), encode(entry).into()));
        }
        writes.push(Write(Table::Progress, device.device_id.as_bytes().to_vec(), encode(&device.progress).into()));
    }
    let mut partitions = std::collections::HashSet::new();
    for entry in timeline {
        let value = fjall::UserValue::from(encode(entry));
        for (day, at) in entry.positions() {
            let key = keys::timeline(&entry.org_id, &entry.employee_id, day, at, &entry.device_id, entry.seq);
            writes.push(Write(Table::Timeline, key, value.clone()));
            partitions.insert(keys::timeline_partition(&entry.org_id, &entry.employee_id, day));
        }
    }
    for partition in partitions {
        writes.push(Write(Table::TimelineDays, partition, fjall::UserValue::empty()));
    }
    for conflict in conflicts {
        let id = fjall::UserValue::from(conflict.id.as_bytes());
        writes.push(Write(Table::Conflicts, conflict.id.as_bytes().to_vec(), encode(conflict).into()));
        writes.push(Write(
            Table::ConflictsByOrg,
            keys::conflict_of_org(&conflict.org_id, conflict.detected_at, &conflict.id),
            id.clone(),
        ));
        for device_id in conflict.device_ids() {
            writes.push(Write(Table::ConflictsByDevice, keys::conflict_of_device(device_id, &conflict.id), id.clone()));
        }
    }
    writes.extend(audit.iter().flat_map(audit_writes));
    writes
}

/// The atomic batch of `writes`, with room for the statistics the committer adds.
pub(super) fn batch_of(db: &Database, tables: &Tables, writes: Vec<Write>) -> OwnedWriteBatch {
    let mut batch = OwnedWriteBatch::with_capacity(db.clone(), writes.len() + 3);
    for Write(table, key, value) in writes {
        batch.insert(tables.of(table), key, value);
    }
    batch
}

/// The two keys of an audit entry, by device and by org, each ordered by time and told
/// apart by the entry's key (`AuditEvent::key`), so writing it again writes the same keys.
pub(super) fn audit_writes(event: &AuditEvent) -> [Write; 2] {
    let key = event.key();
    let value = fjall::UserValue::from(encode(event));
    [
        Write(Table::AuditByDevice, keys::timed(&event.device_id, event.at, key), value.clone()),
        Write(Table::AuditByOrg, keys::timed(&event.org_id, event.at, key), value),
    ]
}

/// What a live commit touches that a read may wait for: its device and employees.
pub(super) fn touched_by(commit: &Commit) -> Vec<Touched> {
    let employees =
        commit.timeline.iter().map(|entry| Touched::Employee(entry.org_id.to_string(), entry.employee_id.to_string()));
    let touched: std::collections::HashSet<Touched> =
        commit.device.iter().map(|device| Touched::Device(device.device_id.clone())).chain(employees).collect();
    touched.into_iter().collect()
}
