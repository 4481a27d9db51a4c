//! Byte keys of the embedded store, laid out like the ScyllaDB partitions and
//! clustering keys they mirror, so a range scan reads one partition in order.
//!
//! Text parts end with a 0 byte (ids never contain control characters); integers are
//! big-endian with the sign bit flipped, so byte order is numeric order.

use otg_schema::UtcDay;

fn push_text(key: &mut Vec<u8>, text: &str) {
    key.extend_from_slice(text.as_bytes());
    key.push(0);
}

fn push_i64(key: &mut Vec<u8>, value: i64) {
    key.extend_from_slice(&((value as u64) ^ (1 << 63)).to_be_bytes());
}

fn push_i32(key: &mut Vec<u8>, value: i32) {
    key.extend_from_slice(&((value as u32) ^ (1 << 31)).to_be_bytes());
}

/// `conflicts_by_org`: (org) partition, clustered by (detected_at, id).
pub fn conflict_of_org(org_id: &str, detected_at: i64, conflict_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(org_id.len() + conflict_id.len() + 10);
    push_text(&mut key, org_id);
    push_i64(&mut key, detected_at);
    key.extend_from_slice(conflict_id.as_bytes());
    key
}

/// `conflicts_by_device`: (device) partition, clustered by conflict id.
pub fn conflict_of_device(device_id: &str, conflict_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(device_id.len() + conflict_id.len() + 1);
    push_text(&mut key, device_id);
    key.extend_from_slice(conflict_id.as_bytes());
    key
}

/// A partition keyed by one text part, clustered by (time, unique number): the audit
/// trail by device and by org.
pub fn timed(partition: &str, at: i64, unique: u64) -> Vec<u8> {
    let mut key = text_prefix(partition);
    push_i64(&mut key, at);
    key.extend_from_slice(&unique.to_be_bytes());
    key
}

/// `stats_counted`: (device) partition, clustered by the key of an event counted.
pub fn event(device_id: &str, key: u64) -> Vec<u8> {
    let mut key_bytes = text_prefix(device_id);
    key_bytes.extend_from_slice(&key.to_be_bytes());
    key_bytes
}

/// The first key at or after `at` in a `timed` partition.
pub fn timed_from(partition: &str, at: i64) -> Vec<u8> {
    let mut key = text_prefix(partition);
    push_i64(&mut key, at);
    key
}

/// A partition keyed by one text part, clustered by a second one.
pub fn pair(partition: &str, item: &str) -> Vec<u8> {
    let mut key = text_prefix(partition);
    key.extend_from_slice(item.as_bytes());
    key
}

/// The prefix of a partition keyed by one text part.
pub fn text_prefix(text: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(text.len() + 1);
    push_text(&mut key, text);
    key
}

/// `seqs`: (device_id) partition, clustered by seq.
pub fn seq(device_id: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(device_id.len() + 9);
    push_text(&mut key, device_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The prefix every (org, employee, day) partition of one employee shares.
fn employee(org_id: &str, employee_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(org_id.len() + employee_id.len() + 6);
    push_text(&mut key, org_id);
    push_text(&mut key, employee_id);
    key
}

/// `timeline`: (org, employee, day) partition prefix.
pub fn timeline_partition(org_id: &str, employee_id: &str, day: UtcDay) -> Vec<u8> {
    let mut key = employee(org_id, employee_id);
    push_i32(&mut key, day.0);
    key
}

/// The day of a `timeline_partition` key: its last four bytes.
pub fn day_of_timeline_partition(key: &[u8]) -> UtcDay {
    let bytes: [u8; 4] = key[key.len() - 4..].try_into().expect("a timeline partition ends with its day");
    UtcDay((u32::from_be_bytes(bytes) ^ (1 << 31)) as i32)
}

/// `timeline`: one record in the partition of `day`, clustered by (at, device, seq).
/// `at` is the record's `recorded_at`, or the day's start for a leave covering it.
pub fn timeline(org_id: &str, employee_id: &str, day: UtcDay, at: i64, device_id: &str, seq: u64) -> Vec<u8> {
    let mut key = timeline_partition(org_id, employee_id, day);
    push_i64(&mut key, at);
    push_text(&mut key, device_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_time_order_within_a_partition() {
        let day_start = UtcDay(20_000).start_unix_ms();
        let early = timeline("acme", "emp", UtcDay(20_000), day_start + 5, "dev-b", 9);
        let late = timeline("acme", "emp", UtcDay(20_000), day_start + 300, "dev-a", 1);
        assert!(early < late);
        assert!(early.starts_with(&timeline_partition("acme", "emp", UtcDay(20_000))));
        assert!(timeline_partition("acme", "emp", UtcDay(-3)) < timeline_partition("acme", "emp", UtcDay(2)));
        for day in [UtcDay(-3), UtcDay(0), UtcDay(20_000)] {
            assert_eq!(day_of_timeline_partition(&timeline_partition("acme", "emp", day)), day);
        }
    }

    #[test]
    fn one_id_never_prefixes_another_partition() {
        let short = timeline_partition("acme", "emp", UtcDay(1));
        let long = timeline_partition("acme", "emp-2", UtcDay(1));
        assert!(!long.starts_with(&short));
        assert!(seq("dev", 1) < seq("dev", 256));
    }
}
