//! The behaviour every `Store` must show, run against each implementation.
//!
//! The embedded store runs it in every test run; the ScyllaDB store runs it whenever
//! `OTG_SCYLLA_NODES` names a live cluster.

use super::*;
use otg_schema::wire::RejectReason;
use otg_schema::{OrgSettings, RecordKind, ValidRecord};
use std::sync::Arc;

const DAY_START: i64 = 1_764_028_800_000; // 2025-11-25T00:00:00Z

pub fn device_commit(device_id: &str, entries: Vec<SeqEntry>, progress: DeviceProgress) -> Commit {
    Commit::of_device(DeviceWrite { device_id: device_id.into(), entries, progress })
}

pub async fn run_all(store: &dyn Store) {
    devices_enrol_once_and_revoke(store).await;
    commits_are_readable_by_seq_and_by_timeline(store).await;
    a_new_device_has_received_nothing(store).await;
    org_settings_default_until_replaced(store).await;
    audit_trail_and_statistics(store).await;
    live_commits_are_readable_once_acked(store).await;
}

pub fn record(seq: u64, employee_id: &str, recorded_at: i64) -> ValidRecord {
    ValidRecord {
        seq,
        record_id: format!("00000000-0000-4000-8000-{seq:012}"),
        kind: RecordKind::CheckIn,
        employee_id: employee_id.into(),
        recorded_at,
        uptime_ms: None,
        offline: true,
        geo: None,
        face: None,
        qr: None,
        leave: None,
        note: None,
    }
}

pub fn stored(device_id: &str, record: ValidRecord) -> SeqEntry {
    SeqEntry::Stored(StoredRecord {
        device_id: device_id.into(),
        org_id: "acme".into(),
        batch_id: "b-1".into(),
        received_at: DAY_START,
        record,
    })
}

/// Commits seq 1 for `device_id`, leaving `next_seq` at 2.
pub async fn commit_one_record(store: &dyn Store, device_id: &str) {
    let mut progress = DeviceProgress::default();
    progress.received.insert(1);
    let entries = vec![stored(device_id, record(1, "emp-1", DAY_START + 1_000))];
    store.commit(&device_commit(device_id, entries, progress)).await.unwrap();
}

async fn devices_enrol_once_and_revoke(store: &dyn Store) {
    let enrolment = DeviceEnrolment {
        device_id: "conf-dev-1".into(),
        org_id: "acme".into(),
        employee_id: Some("emp-1".into()),
        secret: [7; 32],
        enrolled_at: DAY_START,
        revoked_at: None,
    };
    store.enrol_device(&enrolment).await.unwrap();
    assert!(matches!(store.enrol_device(&enrolment).await, Err(StoreError::AlreadyExists)));
    assert_eq!(store.device("conf-dev-1").await.unwrap(), Some(enrolment.clone()));
    assert_eq!(store.device("conf-unknown").await.unwrap(), None);

    let revoked = store.revoke_device("conf-dev-1", DAY_START + 5).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(DAY_START + 5));
    let again = store.revoke_device("conf-dev-1", DAY_START + 9).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(DAY_START + 5), "the first revocation time stands");
    assert_eq!(store.device("conf-dev-1").await.unwrap().unwrap().revoked_at, Some(DAY_START + 5));
    assert_eq!(store.revoke_device("conf-unknown", DAY_START).await.unwrap(), None);
}

async fn commits_are_readable_by_seq_and_by_timeline(store: &dyn Store) {
    let mut progress =
        DeviceProgress { last_sync_at: Some(DAY_START), reported_pending: Some(3), ..Default::default() };
    for seq in [1, 2, 4] {
        progress.received.insert(seq);
    }
    // Out of time order across a midnight, with a rejected seq in between.
    let late = stored("conf-dev-2", record(1, "emp-2", DAY_START + 3_000));
    let early = stored("conf-dev-2", record(4, "emp-2", DAY_START + 2_000));
    let next_day = stored("conf-dev-2", record(5, "emp-2", DAY_START + 86_400_000));
    let rejected = SeqEntry::Rejected { seq: 2, record_id: "r-2".into(), reason: RejectReason::TooOld, detail: None };
    progress.received.insert(5);
    let entries = vec![late.clone(), rejected.clone(), early.clone(), next_day];
    store.commit(&device_commit("conf-dev-2", entries, progress.clone())).await.unwrap();

    assert_eq!(store.device_progress("conf-dev-2").await.unwrap(), progress);
    let entries = store.seq_entries("conf-dev-2", &[1, 2, 3, 4]).await.unwrap();
    assert_eq!(entries, vec![Some(late), Some(rejected), None, Some(early)]);

    let day = store.timeline("acme", "emp-2", UtcDay::of_unix_ms(DAY_START)).await.unwrap();
    let seqs: Vec<u64> = day.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, vec![4, 1], "one UTC day, in recorded_at order, no other day");
    assert_eq!(&*day[0].record_id, "00000000-0000-4000-8000-000000000004");
    assert!(store.timeline("acme", "emp-2x", UtcDay::of_unix_ms(DAY_START)).await.unwrap().is_empty());
    let first_day = UtcDay::of_unix_ms(DAY_START);
    assert_eq!(store.timeline_days("acme", "emp-2").await.unwrap(), vec![first_day, first_day.next()]);
    assert!(store.timeline_days("acme", "emp-2x").await.unwrap().is_empty(), "no other employee's days");

    // Writing the same commit again changes nothing: writes are idempotent.
    let entries = store.seq_entries("conf-dev-2", &[1]).await.unwrap();
    let again = device_commit("conf-dev-2", entries.into_iter().flatten().collect(), progress.clone());
    store.commit(&again).await.unwrap();
    assert_eq!(store.timeline("acme", "emp-2", UtcDay::of_unix_ms(DAY_START)).await.unwrap().len(), 2);
}

async fn a_new_device_has_received_nothing(store: &dyn Store) {
    let progress = store.device_progress("conf-never-seen").await.unwrap();
    assert_eq!(progress.received.next_seq(), 1);
    assert_eq!(progress.last_sync_at, None);
    store.ping().await.unwrap();
}

async fn org_settings_default_until_replaced(store: &dyn Store) {
    assert_eq!(store.org_settings("conf-org").await.unwrap(), OrgSettings::default());
    let strict = OrgSettings { max_offline_days: 2, duplicate_window_s: 30, ..OrgSettings::default() };
    store.put_org_settings("conf-org", &strict).await.unwrap();
    assert_eq!(store.org_settings("conf-org").await.unwrap(), strict);
    assert_eq!(store.org_settings("conf-org-2").await.unwrap(), OrgSettings::default());
}

async fn audit_trail_and_statistics(store: &dyn Store) {
    let event = |at: i64, device_id: &str| AuditEvent {
        at,
        org_id: "audit-org".into(),
        device_id: device_id.into(),
        event: AuditKind::DeviceRevoked,
    };
    let counts = |at: i64, device_id: &str, accepted: u64| SyncCounts {
        org_id: "audit-org".into(),
        device_id: device_id.into(),
        at,
        totals: SyncTotals { batches_succeeded: 1, accepted, ..SyncTotals::default() },
    };
    let hour = 3_600_000;
    let commit = Commit {
        audit: vec![event(DAY_START + 3, "audit-a"), event(DAY_START + 1, "audit-a"), event(DAY_START + 2, "audit-b")],
        stats: vec![
            counts(DAY_START, "audit-a", 5),
            counts(DAY_START + 10, "audit-b", 7),
            counts(DAY_START + 2 * hour, "audit-a", 1),
        ],
        ..Commit::default()
    };
    store.commit(&commit).await.unwrap();

    let device_a = store
        .audit(AuditScope::Device("audit-a"), DAY_START, DAY_START + 10, Page { after: None, limit: 10 })
        .await
        .unwrap();
    let times: Vec<i64> = device_a.iter().map(|(event, _)| event.at).collect();
    assert_eq!(times, vec![DAY_START + 1, DAY_START + 3], "a device's trail, oldest first");
    let org = store
        .audit(AuditScope::Org("audit-org"), DAY_START, DAY_START + 10, Page { after: None, limit: 2 })
        .await
        .unwrap();
    assert_eq!(org.len(), 2);
    let rest = store
        .audit(AuditScope::Org("audit-org"), DAY_START, DAY_START + 10, Page { after: Some(&org[1].1), limit: 2 })
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|(event, _)| event.at).collect::<Vec<_>>(),
        vec![DAY_START + 3],
        "the next page goes on after the cursor"
    );
    let window = store
        .audit(AuditScope::Device("audit-a"), DAY_START + 2, DAY_START + 2, Page { after: None, limit: 10 })
        .await
        .unwrap();
    assert!(window.is_empty());

    let all = store.sync_totals("audit-org", DAY_START).await.unwrap();
    assert_eq!((all.batches_succeeded, all.accepted), (3, 13));
    let last_hour = store.sync_totals("audit-org", DAY_START + 2 * hour).await.unwrap();
    assert_eq!((last_hour.batches_succeeded, last_hour.accepted), (1, 1));
    assert_eq!(store.device_totals("audit-a").await.unwrap().accepted, 6);

    let enrolment = |device_id: &str| DeviceEnrolment {
        device_id: device_id.into(),
        org_id: "audit-org".into(),
        employee_id: None,
        secret: [1; 32],
        enrolled_at: DAY_START,
        revoked_at: None,
    };
    for device_id in ["audit-z", "audit-y", "audit-x"] {
        store.enrol_device(&enrolment(device_id)).await.unwrap();
    }
    let first = store.devices_of_org("audit-org", Page { after: None, limit: 2 }).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|(device, _)| device.device_id.as_str()).collect();
    assert_eq!(ids, vec!["audit-x", "audit-y"]);
    let rest = store.devices_of_org("audit-org", Page { after: Some(&first[1].1), limit: 2 }).await.unwrap();
    assert_eq!(rest.len(), 1);
}

/// A live commit is read back in full the moment it is acked, by every read, however
/// the store makes it durable.
async fn live_commits_are_readable_once_acked(store: &dyn Store) {
    let (org, device): (Arc<str>, Arc<str>) = ("live-org".into(), "conf-live".into());
    let mut progress = DeviceProgress::default();
    for seq in 1..=20u64 {
        progress.received.insert(seq);
        let SeqEntry::Stored(stored) = stored(&device, record(seq, "emp-live", DAY_START + seq as i64 * 60_000)) else {
            unreachable!()
        };
        let commit = Commit {
            timeline: vec![TimelineEntry::of(&stored, &org, &device, RecordStatus::Active)],
            audit: vec![AuditEvent {
                at: DAY_START + seq as i64,
                org_id: org.to_string(),
                device_id: device.to_string(),
                event: AuditKind::DeviceRevoked,
            }],
            stats: vec![SyncCounts {
                org_id: org.to_string(),
                device_id: device.to_string(),
                at: DAY_START,
                totals: SyncTotals { accepted: 1, ..SyncTotals::default() },
            }],
            live: true,
            ..device_commit(&device, vec![SeqEntry::Stored(stored)], progress.clone())
        };
        store.commit(&commit).await.unwrap();
        assert_eq!(store.device_progress(&device).await.unwrap().received.next_seq(), seq + 1);
        assert!(store.seq_entries(&device, &[seq]).await.unwrap()[0].is_some(), "seq {seq} is readable once acked");
        assert_eq!(store.timeline(&org, "emp-live", UtcDay::of_unix_ms(DAY_START)).await.unwrap().len(), seq as usize);
        assert_eq!(store.device_totals(&device).await.unwrap().accepted, seq);
        let trail = store
            .audit(AuditScope::Device(&device), DAY_START, DAY_START + 100, Page { after: None, limit: 100 })
            .await
            .unwrap();
        assert_eq!(trail.len(), seq as usize);
    }
}
