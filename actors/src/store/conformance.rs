//! The behaviour every `Store` must show, run against each implementation.
//!
//! The embedded store runs it in every test run, and the ScyllaDB store against the
//! CQL cluster the test command starts. Other crates reach it through the
//! `conformance` cargo feature. Every run uses ids of its own (a fresh prefix), so it
//! can run again and again against one long-lived cluster.
//!
//! `FlakyStore` wraps a store so that a write lands and the call then reports the
//! store unavailable, as a timed-out write does; the caller's retry must change
//! nothing: records, audit entries and statistics counted once.

use super::*;
use otg_schema::wire::{AckStatus, RejectReason};
use otg_schema::{ConflictResolution, OrgSettings, RecordKind, ValidRecord};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const DAY_START: i64 = 1_764_028_800_000; // 2025-11-25T00:00:00Z
const HOUR: i64 = 3_600_000;

/// Runs every case against `store`, with ids no earlier run used.
pub async fn run_all(store: &dyn Store) {
    let ids = Ids::fresh();
    devices_enrol_once_and_revoke_once(store, &ids).await;
    commits_are_readable_by_seq_and_by_timeline(store, &ids).await;
    a_new_device_has_received_nothing(store, &ids).await;
    org_settings_default_until_replaced(store, &ids).await;
    audit_trail_and_statistics(store, &ids).await;
    a_batch_decided_again_files_one_entry_and_counts_once(store, &ids).await;
    live_commits_are_readable_once_acked(store, &ids).await;
    conflicts_are_listed_and_resolved_once(store, &ids).await;
    waiting_devices_are_listed(store, &ids).await;
    retried_writes_count_once(store, &ids).await;
    a_device_commits_only_under_its_latest_claim(store, &ids).await;
    a_placement_on_a_moved_timeline_is_refused(store, &ids).await;
    a_commit_is_known_by_its_identity(store, &ids).await;
    a_later_decision_stands_whatever_the_clocks(store, &ids).await;
    gateways_are_live_until_they_leave_or_expire(store, &ids).await;
}

/// Ids unique to one run of the suite.
pub struct Ids(String);

impl Ids {
    pub fn fresh() -> Self {
        Ids(format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
    }

    /// `name`, made unique to this run.
    pub fn of(&self, name: &str) -> String {
        format!("{}-{name}", self.0)
    }
}

/// A device commit of a device nobody claimed (epoch 0): what the store's own tests
/// write; gateways always claim first.
pub fn device_commit(device_id: &str, entries: Vec<SeqEntry>, progress: DeviceProgress) -> Commit {
    Commit::of_device(DeviceWrite {
        device_id: device_id.into(),
        entries,
        progress,
        epoch: 0,
        after: None,
        was_waiting: false,
    })
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
    stored_in("acme", device_id, record)
}

fn stored_in(org_id: &str, device_id: &str, record: ValidRecord) -> SeqEntry {
    SeqEntry::Stored(StoredRecord {
        device_id: device_id.into(),
        org_id: org_id.into(),
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

/// The audit entry of a one-record batch acked `ok` at `at`.
pub fn batch_received(org_id: &str, device_id: &str, at: i64) -> AuditEvent {
    AuditEvent {
        at,
        org_id: org_id.into(),
        device_id: device_id.into(),
        event: AuditKind::BatchReceived {
            batch_id: Some("b-1".into()),
            outcome: "ok".into(),
            http_status: 200,
            latency_ms: 3,
            records: 1,
            acks: Vec::new(),
        },
    }
}

fn enrolment(device_id: &str, org_id: &str) -> DeviceEnrolment {
    DeviceEnrolment {
        device_id: device_id.into(),
        org_id: org_id.into(),
        employee_id: Some("emp-1".into()),
        secret: [7; 32],
        enrolled_at: DAY_START,
        revoked_at: None,
    }
}

async fn trail(store: &dyn Store, scope: AuditScope<'_>) -> Vec<AuditEvent> {
    let page = Page { after: None, limit: 1000 };
    store.audit(scope, 0, i64::MAX - 1, page).await.unwrap().into_iter().map(|(event, _)| event).collect()
}

async fn devices_enrol_once_and_revoke_once(store: &dyn Store, ids: &Ids) {
    let (device, org) = (ids.of("dev-1"), ids.of("org"));
    let enrolled = enrolment(&device, &org);
    store.enrol_device(&enrolled).await.unwrap();
    store.enrol_device(&enrolled).await.expect("the same enrolment again is a retry, and succeeds");
    let other = DeviceEnrolment { secret: [8; 32], ..enrolled.clone() };
    assert!(matches!(store.enrol_device(&other).await, Err(StoreError::AlreadyExists)));
    assert_eq!(store.device(&device).await.unwrap(), Some(enrolled.clone()));
    assert_eq!(store.device(&ids.of("unknown")).await.unwrap(), None);

    let revoked = store.revoke_device(&device, DAY_START + 5).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(DAY_START + 5));
    let again = store.revoke_device(&device, DAY_START + 9).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(DAY_START + 5), "the first revocation time stands");
    assert_eq!(store.device(&device).await.unwrap().unwrap().revoked_at, Some(DAY_START + 5));
    assert_eq!(store.revoke_device(&ids.of("unknown"), DAY_START).await.unwrap(), None);

    let events: Vec<AuditKind> = trail(store, AuditScope::Device(&device)).await.into_iter().map(|e| e.event).collect();
    assert_eq!(
        events,
        vec![AuditKind::DeviceEnrolled { employee_id: Some("emp-1".into()) }, AuditKind::DeviceRevoked],
        "one entry for the enrolment and one for the revocation, however often each was asked for"
    );
}

async fn commits_are_readable_by_seq_and_by_timeline(store: &dyn Store, ids: &Ids) {
    let (device, employee) = (ids.of("dev-2"), ids.of("emp-2"));
    let health = DeviceHealth {
        queue_bytes: Some(48_000),
        app_version: Some("2.4.1".into()),
        oldest_pending_at: Some(DAY_START - 86_400_000),
        reported_at: Some(DAY_START),
    };
    let mut progress =
        DeviceProgress { last_sync_at: Some(DAY_START), reported_pending: Some(3), health, ..Default::default() };
    for seq in [1, 2, 4, 5] {
        progress.received.insert(seq);
    }
    // Out of time order across a midnight, with a rejected seq in between.
    let late = stored(&device, record(1, &employee, DAY_START + 3_000));
    let early = stored(&device, record(4, &employee, DAY_START + 2_000));
    let next_day = stored(&device, record(5, &employee, DAY_START + 86_400_000));
    let rejected = SeqEntry::Rejected { seq: 2, record_id: "r-2".into(), reason: RejectReason::TooOld, detail: None };
    let entries = vec![late.clone(), rejected.clone(), early.clone(), next_day];
    let commit = device_commit(&device, entries, progress.clone());
    store.commit(&commit).await.unwrap();

    let mut progress = DeviceProgress { last_commit: Some(commit.id), ..progress };
    assert_eq!(store.device_progress(&device).await.unwrap(), progress, "marked with the commit that wrote it");
    let entries = store.seq_entries(&device, &[1, 2, 3, 4]).await.unwrap();
    assert_eq!(entries, vec![Some(late), Some(rejected), None, Some(early)]);

    let first_day = UtcDay::of_unix_ms(DAY_START);
    let day = store.timeline("acme", &employee, first_day).await.unwrap();
    let seqs: Vec<u64> = day.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, vec![4, 1], "one UTC day, in recorded_at order, no other day");
    assert_eq!(&*day[0].record_id, "00000000-0000-4000-8000-000000000004");
    assert!(store.timeline("acme", &ids.of("emp-2x"), first_day).await.unwrap().is_empty());
    let around = (UtcDay(first_day.0 - 1), UtcDay(first_day.0 + 2));
    assert_eq!(store.timeline_days("acme", &employee, around).await.unwrap(), vec![first_day, first_day.next()]);
    let month = (UtcDay(first_day.0 - 15), UtcDay(first_day.0 + 15));
    assert_eq!(store.timeline_days("acme", &employee, month).await.unwrap(), vec![first_day, first_day.next()]);
    let second = (first_day.next(), first_day.next());
    assert_eq!(store.timeline_days("acme", &employee, second).await.unwrap(), vec![first_day.next()], "the span only");
    for span in [around, month] {
        assert!(store.timeline_days("acme", &ids.of("emp-2x"), span).await.unwrap().is_empty(), "no other employee's");
    }

    // Writing the same commit again changes nothing: writes are idempotent.
    store.commit(&commit).await.unwrap();
    assert_eq!(store.timeline("acme", &employee, first_day).await.unwrap().len(), 2);
    assert_eq!(store.device_progress(&device).await.unwrap(), progress);

    // A seq beyond a device's first 4096 lands in another partition and reads the same.
    let far = stored(&device, record(10_000, &employee, DAY_START + 4_000));
    progress.received.insert(10_000);
    store.commit(&device_commit(&device, vec![far.clone()], progress.clone())).await.unwrap();
    assert_eq!(store.seq_entries(&device, &[4, 10_000]).await.unwrap()[1], Some(far));
}

async fn a_new_device_has_received_nothing(store: &dyn Store, ids: &Ids) {
    let progress = store.device_progress(&ids.of("never-seen")).await.unwrap();
    assert_eq!(progress.received.next_seq(), 1);
    assert_eq!(progress.last_sync_at, None);
    assert_eq!(store.seq_entries(&ids.of("never-seen"), &[1, 2]).await.unwrap(), vec![None, None]);
    store.ping().await.unwrap();
}

async fn org_settings_default_until_replaced(store: &dyn Store, ids: &Ids) {
    let org = ids.of("settings-org");
    assert_eq!(store.org_settings(&org).await.unwrap(), OrgSettings::default());
    let strict = OrgSettings { max_offline_days: 2, duplicate_window_s: 30, ..OrgSettings::default() };
    store.put_org_settings(&org, &strict).await.unwrap();
    assert_eq!(store.org_settings(&org).await.unwrap(), strict);
    assert_eq!(store.org_settings(&ids.of("settings-org-2")).await.unwrap(), OrgSettings::default());
}

/// A batch whose first run wrote its audit entry and counts but not its commit point
/// (fenced, or a timeline moved), then decided again with other acks and another
/// latency: one entry in the trail, and the upload counted once.
async fn a_batch_decided_again_files_one_entry_and_counts_once(store: &dyn Store, ids: &Ids) {
    let (org, device) = (ids.of("again-org"), ids.of("again-dev"));
    let run = |outcome: &str, latency_ms: u64, status: AckStatus| AuditEvent {
        at: DAY_START + 7,
        org_id: org.clone(),
        device_id: device.clone(),
        event: AuditKind::BatchReceived {
            batch_id: Some("b-again".into()),
            outcome: outcome.into(),
            http_status: if outcome == "ok" { 200 } else { 503 },
            latency_ms,
            records: 1,
            acks: vec![AuditAck { seq: 1, status, reason: None, conflict_id: None }],
        },
    };
    let first = run("ok", 12, AckStatus::Accepted);
    let again = run("ok", 250, AckStatus::Duplicate);
    assert_eq!(first.key(), again.key(), "one upload, one key, whatever its runs answered");
    let other_upload = AuditEvent { at: DAY_START + 8, ..first.clone() };
    assert_ne!(first.key(), other_upload.key(), "a resend is another upload");
    let refused = run("store_unavailable", 2_000, AckStatus::Accepted);
    assert_ne!(first.key(), refused.key(), "a refusal never writes over counts that may stand");

    for (event, totals) in [
        (&first, SyncTotals { batches_succeeded: 1, accepted: 1, ..SyncTotals::default() }),
        (&again, SyncTotals { batches_succeeded: 1, duplicate: 1, ..SyncTotals::default() }),
    ] {
        let commit =
            Commit { audit: vec![event.clone()], stats: vec![SyncCounts::of(event, totals)], ..Commit::default() };
        store.commit(&commit).await.unwrap();
    }
    let trail = store.audit(AuditScope::Device(&device), DAY_START, DAY_START + 10, Page { after: None, limit: 10 });
    assert_eq!(trail.await.unwrap().len(), 1, "one entry for the upload");
    let totals = store.sync_totals(&org, DAY_START).await.unwrap();
    assert_eq!(totals.batches_succeeded, 1, "counted once");
    assert_eq!(totals.accepted + totals.duplicate, 1, "its records counted once");
}

async fn audit_trail_and_statistics(store: &dyn Store, ids: &Ids) {
    let org = ids.of("audit-org");
    let (device_a, device_b) = (ids.of("audit-a"), ids.of("audit-b"));
    let event = |at: i64, device_id: &str| AuditEvent {
        at,
        org_id: org.clone(),
        device_id: device_id.into(),
        event: AuditKind::BatchReceived {
            batch_id: Some(format!("b-{at}")),
            outcome: "ok".into(),
            http_status: 200,
            latency_ms: 1,
            records: 1,
            acks: Vec::new(),
        },
    };
    let counts = |event: &AuditEvent, accepted: u64| {
        SyncCounts::of(event, SyncTotals { batches_succeeded: 1, accepted, ..SyncTotals::default() })
    };
    let events = [
        event(DAY_START + 3, &device_a),
        event(DAY_START + 1, &device_a),
        event(DAY_START + 2, &device_b),
        event(DAY_START + 2 * HOUR, &device_a),
        // Another day: a trail read across days in one listing.
        event(DAY_START + 30 * HOUR, &device_b),
    ];
    let commit = Commit {
        audit: events.to_vec(),
        stats: vec![counts(&events[0], 5), counts(&events[2], 7), counts(&events[3], 1), counts(&events[4], 2)],
        ..Commit::default()
    };
    store.commit(&commit).await.unwrap();

    let page = |limit| Page { after: None, limit };
    let device_a_trail = store.audit(AuditScope::Device(&device_a), DAY_START, DAY_START + 10, page(10)).await.unwrap();
    let times: Vec<i64> = device_a_trail.iter().map(|(event, _)| event.at).collect();
    assert_eq!(times, vec![DAY_START + 1, DAY_START + 3], "a device's trail, oldest first, in the window");
    let org_trail = store.audit(AuditScope::Org(&org), DAY_START, DAY_START + 40 * HOUR, page(2)).await.unwrap();
    assert_eq!(org_trail.len(), 2);
    let mut rest = Vec::new();
    let mut after = org_trail[1].1.clone();
    loop {
        let next = store
            .audit(AuditScope::Org(&org), DAY_START, DAY_START + 40 * HOUR, Page { after: Some(&after), limit: 2 })
            .await
            .unwrap();
        let Some((_, cursor)) = next.last() else { break };
        after = cursor.clone();
        rest.extend(next.into_iter().map(|(event, _)| event.at));
    }
    assert_eq!(
        rest,
        vec![DAY_START + 3, DAY_START + 2 * HOUR, DAY_START + 30 * HOUR],
        "the next pages go on after the cursor, across days"
    );
    let window = store.audit(AuditScope::Device(&device_a), DAY_START + 2, DAY_START + 2, page(10)).await.unwrap();
    assert!(window.is_empty());
    let foreign = store
        .audit(
            AuditScope::Device(&device_b),
            DAY_START,
            DAY_START + 10,
            Page { after: Some(&org_trail[0].1), limit: 10 },
        )
        .await
        .unwrap();
    assert_eq!(foreign.len(), 1, "a cursor of another listing reads from the start, never another's trail");

    let all = store.sync_totals(&org, DAY_START).await.unwrap();
    assert_eq!((all.batches_succeeded, all.accepted), (4, 15));
    let from_hour_two = store.sync_totals(&org, DAY_START + 2 * HOUR + 5).await.unwrap();
    assert_eq!((from_hour_two.batches_succeeded, from_hour_two.accepted), (2, 3), "whole UTC hours from `since` on");
    assert_eq!(store.device_totals(&device_a).await.unwrap().accepted, 6);
    assert_eq!(store.device_totals(&device_b).await.unwrap().accepted, 9);
    assert_eq!(store.device_totals(&ids.of("audit-none")).await.unwrap(), SyncTotals::default());

    for device_id in ["audit-z", "audit-y", "audit-x"] {
        store.enrol_device(&enrolment(&ids.of(device_id), &org)).await.unwrap();
    }
    let first = store.devices_of_org(&org, page(2)).await.unwrap();
    let listed: Vec<&str> = first.iter().map(|(device, _)| device.device_id.as_str()).collect();
    assert_eq!(listed, vec![ids.of("audit-x"), ids.of("audit-y")]);
    let rest = store.devices_of_org(&org, Page { after: Some(&first[1].1), limit: 2 }).await.unwrap();
    assert_eq!(rest.iter().map(|(device, _)| device.device_id.clone()).collect::<Vec<_>>(), vec![ids.of("audit-z")]);
    assert!(store.devices_of_org(&ids.of("no-org"), page(2)).await.unwrap().is_empty());
}

/// A live commit (records received as they were recorded: a check-in) is read back in
/// full the moment it is acked, by every read, however the store makes it durable.
async fn live_commits_are_readable_once_acked(store: &dyn Store, ids: &Ids) {
    let (org, device): (Arc<str>, Arc<str>) = (ids.of("live-org").into(), ids.of("live").into());
    let mut progress = DeviceProgress::default();
    for seq in 1..=20u64 {
        progress.received.insert(seq);
        progress.totals.accepted = seq;
        let SeqEntry::Stored(stored) =
            stored_in(&org, &device, record(seq, "emp-live", DAY_START + seq as i64 * 60_000))
        else {
            unreachable!()
        };
        let audit = AuditEvent {
            at: DAY_START + seq as i64,
            org_id: org.to_string(),
            device_id: device.to_string(),
            event: AuditKind::DeviceRevoked,
        };
        let commit = Commit {
            timeline: vec![TimelineEntry::of(&stored, &org, &device, RecordStatus::Active)],
            stats: vec![SyncCounts::of(&audit, SyncTotals { accepted: 1, ..SyncTotals::default() })],
            audit: vec![audit],
            ..device_commit(&device, vec![SeqEntry::Stored(stored)], progress.clone())
        };
        store.commit(&commit).await.unwrap();
        assert_eq!(store.device_progress(&device).await.unwrap().received.next_seq(), seq + 1);
        assert!(store.seq_entries(&device, &[seq]).await.unwrap()[0].is_some(), "seq {seq} is readable once acked");
        assert_eq!(store.timeline(&org, "emp-live", UtcDay::of_unix_ms(DAY_START)).await.unwrap().len(), seq as usize);
        assert_eq!(store.device_totals(&device).await.unwrap().accepted, seq);
        assert_eq!(trail(store, AuditScope::Device(&device)).await.len(), seq as usize);
    }
}

/// A conflict between two records of two devices, as a conflict actor writes it.
fn conflict_between(ids: &Ids, n: u64, detected_at: i64) -> (ConflictRecord, [TimelineEntry; 2]) {
    let (org, employee): (Arc<str>, Arc<str>) = (ids.of("conflict-org").into(), ids.of("emp-c").into());
    let at = DAY_START + n as i64 * HOUR;
    let entry = |device: &str, seq: u64| {
        let record = ValidRecord { record_id: ids.of(&format!("{device}-record-{seq}")), ..record(seq, &employee, at) };
        let device: Arc<str> = ids.of(device).into();
        let SeqEntry::Stored(stored) = stored_in(&org, &device, record) else { unreachable!() };
        TimelineEntry::of(&stored, &org, &device, RecordStatus::Active)
    };
    let (server, newcomer) = (entry("kiosk", n), entry("phone", n));
    let conflict = ConflictRecord {
        id: crate::conflict_rules::conflict_id(
            crate::conflict_rules::ConflictKind::DuplicateEvent,
            &newcomer.record_id,
            Some(&server.record_id),
        ),
        org_id: org.to_string(),
        employee_id: employee.to_string(),
        kind: crate::conflict_rules::ConflictKind::DuplicateEvent,
        device_record: newcomer.reference(),
        server_record: Some(server.reference()),
        policy: ConflictResolution::Manual,
        outcome: PolicyOutcome::BothStand,
        detected_at,
        resolution: None,
    };
    (conflict, [server, newcomer])
}

async fn conflicts_are_listed_and_resolved_once(store: &dyn Store, ids: &Ids) {
    let org = ids.of("conflict-org");
    let (mut conflicts, mut progress) = (Vec::new(), DeviceProgress::default());
    for n in 1..=3 {
        // The phone's commit of seq n, as its device actor makes it: the record, the
        // conflict it is in, and the progress that commits them.
        let (conflict, timeline) = conflict_between(ids, n, DAY_START + 10 * HOUR - n as i64);
        progress.received.insert(n);
        let phone = ids.of("phone");
        let entries = vec![stored_in(&org, &phone, record(n, &ids.of("emp-c"), DAY_START + n as i64 * HOUR))];
        let commit = Commit {
            timeline: timeline.to_vec(),
            conflicts: vec![conflict.clone()],
            ..device_commit(&phone, entries, progress.clone())
        };
        store.commit(&commit).await.unwrap();
        conflicts.push(conflict);
    }
    assert_eq!(store.conflict(&conflicts[0].id).await.unwrap().as_ref(), Some(&conflicts[0]));
    assert_eq!(store.conflict(&ids.of("no-conflict")).await.unwrap(), None);
    let listed = store.conflicts(&org, None, Page { after: None, limit: 2 }).await.unwrap();
    let order: Vec<&str> = listed.iter().map(|(conflict, _)| conflict.id.as_str()).collect();
    assert_eq!(order, vec![conflicts[2].id.as_str(), conflicts[1].id.as_str()], "in detection order");
    let rest = store.conflicts(&org, None, Page { after: Some(&listed[1].1), limit: 2 }).await.unwrap();
    assert_eq!(rest.iter().map(|(conflict, _)| conflict.id.clone()).collect::<Vec<_>>(), vec![conflicts[0].id.clone()]);
    let phone = ids.of("phone");
    assert_eq!(store.open_conflicts_of_device(&phone).await.unwrap().len(), 3);

    let decision = |resolution, note: &str, at| AdminResolution { resolution, note: note.into(), resolved_at: at };
    let keep_server = decision(Resolution::KeepServer, "the kiosk saw them", DAY_START + 20 * HOUR);
    let [server, newcomer] = conflict_between(ids, 1, 0).1;
    let effects =
        Commit { timeline: vec![TimelineEntry { status: RecordStatus::Superseded, ..newcomer }], ..Commit::default() };
    let Resolved::Now(resolved) = store.resolve_conflict(&conflicts[0].id, &keep_server, &effects).await.unwrap()
    else {
        panic!("the first decision on an open conflict stands")
    };
    assert_eq!(resolved.resolution.as_ref(), Some(&keep_server));
    let day = UtcDay::of_unix_ms(server.recorded_at);
    let statuses: Vec<RecordStatus> = store
        .timeline(&org, &server.employee_id, day)
        .await
        .unwrap()
        .into_iter()
        .filter(|entry| entry.recorded_at == server.recorded_at)
        .map(|entry| entry.status)
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&RecordStatus::Superseded) && statuses.contains(&RecordStatus::Active));

    let retried = decision(Resolution::KeepServer, "the kiosk saw them", DAY_START + 21 * HOUR);
    assert!(
        matches!(store.resolve_conflict(&conflicts[0].id, &retried, &effects).await.unwrap(), Resolved::Now(_)),
        "the same decision again is a retry"
    );
    let other = decision(Resolution::DiscardBoth, "", DAY_START + 22 * HOUR);
    let Resolved::Already(standing) =
        store.resolve_conflict(&conflicts[0].id, &other, &Commit::default()).await.unwrap()
    else {
        panic!("a second, different decision loses")
    };
    assert_eq!(standing.resolution, Some(keep_server.clone()));
    assert_eq!(
        store.resolve_conflict(&ids.of("no-conflict"), &other, &Commit::default()).await.unwrap(),
        Resolved::NotFound
    );
    let filed = trail(store, AuditScope::Device(&phone)).await;
    assert_eq!(filed.len(), 1, "the retried decision, made an hour later, filed no second entry: {filed:?}");
    assert_eq!(filed[0].at, keep_server.resolved_at, "filed at the time of the decision that stands");
    let kiosk = ids.of("kiosk");
    assert_eq!(trail(store, AuditScope::Device(&kiosk)).await.len(), 1, "and once for the other record's device");

    // Detected again (a cut commit's device resends): the resolution stands.
    store.commit(&Commit { conflicts: vec![conflicts[0].clone()], ..Commit::default() }).await.unwrap();
    assert_eq!(store.conflict(&conflicts[0].id).await.unwrap().unwrap().resolution, Some(keep_server));

    // A commit cut short before its progress: its conflict is not one yet, anywhere.
    let (cut, timeline) = conflict_between(ids, 4, DAY_START + 11 * HOUR);
    let entries = vec![stored_in(&org, &phone, record(4, &ids.of("emp-c"), DAY_START + 4 * HOUR))];
    let mut cut_commit = Commit {
        timeline: timeline.to_vec(),
        conflicts: vec![cut.clone()],
        ..device_commit(&phone, entries, DeviceProgress::default())
    };
    cut_commit.device = None;
    store.commit(&cut_commit).await.unwrap();
    assert_eq!(store.conflict(&cut.id).await.unwrap(), None, "not committed: the progress does not cover it");

    let open = store.conflicts(&org, Some(true), Page { after: None, limit: 10 }).await.unwrap();
    assert_eq!(open.len(), 2);
    let resolved = store.conflicts(&org, Some(false), Page { after: None, limit: 10 }).await.unwrap();
    assert_eq!(
        resolved.iter().map(|(conflict, _)| conflict.id.clone()).collect::<Vec<_>>(),
        vec![conflicts[0].id.clone()]
    );
    assert_eq!(store.open_conflicts_of_device(&phone).await.unwrap().len(), 2);
}

/// A device with records waiting behind a gap is listed in its bucket, and only there,
/// until a commit ends the wait.
async fn waiting_devices_are_listed(store: &dyn Store, ids: &Ids) {
    let device = ids.of("waiting");
    let bucket = waiting_bucket(&device);
    let other = (bucket + 1) % WAITING_BUCKETS;
    let mut progress = DeviceProgress::default();
    progress.received.insert(3);
    progress.evaluation.waiting_since = Some(DAY_START);
    store.commit(&device_commit(&device, Vec::new(), progress.clone())).await.unwrap();
    assert!(store.devices_waiting(&[other, bucket]).await.unwrap().contains(&device));
    assert!(!store.devices_waiting(&[other]).await.unwrap().contains(&device), "listed in its own bucket only");
    progress.evaluation.waiting_since = None;
    let ended = DeviceWrite {
        device_id: device.clone(),
        entries: Vec::new(),
        progress,
        epoch: 0,
        after: None,
        was_waiting: true,
    };
    store.commit(&Commit::of_device(ended)).await.unwrap();
    assert!(!store.devices_waiting(&[bucket]).await.unwrap().contains(&device), "no longer once evaluated");
}

/// A store whose next write lands and then reports the store unavailable.
pub struct FlakyStore<'a> {
    pub inner: &'a dyn Store,
    pub fail_after_write: AtomicBool,
}

impl FlakyStore<'_> {
    fn landed<T>(&self, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        let value = outcome?;
        if self.fail_after_write.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: the write landed, the answer was lost".into()));
        }
        Ok(value)
    }

    /// Calls `write` with the next write failing after it landed, then again: the retry.
    async fn twice<T, F: std::future::Future<Output = Result<T, StoreError>>>(&self, write: impl Fn() -> F) -> T {
        self.fail_after_write.store(true, Ordering::SeqCst);
        assert!(matches!(write().await, Err(StoreError::Unavailable(_))), "the injected failure is reported");
        write().await.expect("the retry succeeds")
    }
}

async fn retried_writes_count_once(store: &dyn Store, ids: &Ids) {
    let flaky = FlakyStore { inner: store, fail_after_write: AtomicBool::new(false) };
    let (org, device) = (ids.of("retry-org"), ids.of("retry-dev"));
    let enrolled = enrolment(&device, &org);
    flaky.twice(|| async { flaky.landed(flaky.inner.enrol_device(&enrolled).await) }).await;
    flaky.twice(|| async { flaky.landed(flaky.inner.revoke_device(&device, DAY_START + 1).await) }).await;

    let mut progress = DeviceProgress::default();
    progress.received.insert(1);
    progress.totals = SyncTotals { batches_succeeded: 1, accepted: 1, ..SyncTotals::default() };
    let audit = batch_received(&org, &device, DAY_START + 2);
    let commit = Commit {
        stats: vec![SyncCounts::of(&audit, SyncTotals { batches_succeeded: 1, accepted: 1, ..SyncTotals::default() })],
        audit: vec![audit],
        ..device_commit(&device, vec![stored_in(&org, &device, record(1, "emp-r", DAY_START))], progress)
    };
    flaky.twice(|| async { flaky.landed(flaky.inner.commit(&commit).await) }).await;

    let totals = store.device_totals(&device).await.unwrap();
    assert_eq!((totals.batches_succeeded, totals.accepted), (1, 1), "a retried commit counts once");
    let org_totals = store.sync_totals(&org, DAY_START).await.unwrap();
    assert_eq!((org_totals.batches_succeeded, org_totals.accepted), (1, 1));
    assert_eq!(trail(store, AuditScope::Device(&device)).await.len(), 3, "enrolled, revoked, one batch");
    assert_eq!(trail(store, AuditScope::Org(&org)).await.len(), 3);
    assert_eq!(store.timeline(&org, "emp-r", UtcDay::of_unix_ms(DAY_START)).await.unwrap().len(), 1);
}

/// Two gateways hold one device: the later claim fences the earlier one. A commit under
/// the earlier epoch writes no progress, and the seq row it may have written never
/// hides the one the newer owner wrote (whatever order they landed in).
async fn a_device_commits_only_under_its_latest_claim(store: &dyn Store, ids: &Ids) {
    let device = ids.of("dev-owned");
    let first = store.claim_device(&device).await.unwrap();
    assert_eq!(first.progress, DeviceProgress::default(), "a new device has received nothing");
    let commit_under = |claim: &DeviceClaim, seq: u64, record_id: &str, received: &[u64]| {
        let mut progress = DeviceProgress::default();
        for &seq in received {
            progress.received.insert(seq);
        }
        let record = ValidRecord { record_id: record_id.into(), ..record(seq, "emp-1", DAY_START + seq as i64 * HOUR) };
        let (epoch, after) = (claim.epoch, claim.progress.last_commit);
        let write = DeviceWrite {
            device_id: device.clone(),
            entries: vec![stored(&device, record)],
            progress,
            epoch,
            after,
            was_waiting: false,
        };
        Commit::of_device(write)
    };
    store.commit(&commit_under(&first, 1, "00000000-0000-4000-8000-00000000000a", &[1])).await.unwrap();

    let second = store.claim_device(&device).await.unwrap();
    assert!(second.epoch > first.epoch, "each claim is under a greater epoch");
    assert!(second.progress.received.contains(1), "a claim sees every commit made before it");
    let newer = commit_under(&second, 2, "00000000-0000-4000-8000-00000000000b", &[1, 2]);
    store.commit(&newer).await.unwrap();
    let mut stale = commit_under(&first, 2, "00000000-0000-4000-8000-00000000000c", &[1, 2]);
    let org = ids.of("owned-org");
    let received = batch_received(&org, &device, DAY_START + 9);
    stale.stats = vec![SyncCounts::of(&received, SyncTotals { batches_succeeded: 1, ..SyncTotals::default() })];
    stale.audit = vec![received];
    assert!(matches!(store.commit(&stale).await, Err(StoreError::Fenced(_))), "the earlier owner is fenced");
    assert!(trail(store, AuditScope::Device(&device)).await.is_empty(), "a fenced commit files nothing");
    assert_eq!(store.sync_totals(&org, DAY_START).await.unwrap(), SyncTotals::default(), "and counts nothing");

    let progress = store.device_progress(&device).await.unwrap();
    assert_eq!(progress.received.next_seq(), 3);
    let Some(SeqEntry::Stored(kept)) = store.seq_entries(&device, &[2]).await.unwrap().remove(0) else {
        panic!("seq 2 holds a record");
    };
    assert_eq!(kept.record.record_id, "00000000-0000-4000-8000-00000000000b", "the newer owner's record stands");
}

/// Two placements of one employee made on the same timeline version: the first commit
/// advances it, the second is refused and writes no progress, to be placed again; each
/// commit advances the version by one (a conflict actor's cache counts on it).
async fn a_placement_on_a_moved_timeline_is_refused(store: &dyn Store, ids: &Ids) {
    let (org, employee) = (ids.of("versions-org"), ids.of("emp"));
    let read_version = store.employee_version(&org, &employee).await.unwrap();
    assert_eq!(read_version, 0, "an employee never placed is at version 0");
    let placement = |device: &str, read_version: i64| {
        let mut progress = DeviceProgress::default();
        progress.received.insert(1);
        let entries = vec![stored_in(&org, device, record(1, &employee, DAY_START))];
        let new_version = read_version + 1;
        let advance = EmployeeAdvance { org_id: org.clone(), employee_id: employee.clone(), read_version, new_version };
        Commit { employees: vec![advance], ..device_commit(device, entries, progress) }
    };
    let (kiosk, phone) = (ids.of("versions-kiosk"), ids.of("versions-phone"));
    store.commit(&placement(&kiosk, read_version)).await.unwrap();
    assert_eq!(store.employee_version(&org, &employee).await.unwrap(), 1);
    let refused = store.commit(&placement(&phone, read_version)).await;
    assert!(matches!(refused, Err(StoreError::TimelineMoved(_))), "{refused:?}");
    let progress = store.device_progress(&phone).await.unwrap();
    assert_eq!(progress.received.next_seq(), 1, "the refused placement's batch is not received");
    assert_eq!(store.employee_version(&org, &employee).await.unwrap(), 1, "a refused placement advances nothing");
    store.commit(&placement(&phone, 1)).await.unwrap();
    assert_eq!(store.employee_version(&org, &employee).await.unwrap(), 2, "placed again, on the version it read");
}

/// Every conditional write names its commit: a commit sent again after its answer was
/// lost (its progress and employee advance landed) is recognised as done, not taken
/// for a moved timeline or another owner; and a commit that lands late, after the one
/// that followed it, puts nothing back.
async fn a_commit_is_known_by_its_identity(store: &dyn Store, ids: &Ids) {
    let (org, employee, device) = (ids.of("identity-org"), ids.of("identity-emp"), ids.of("identity-dev"));
    let claim = store.claim_device(&device).await.unwrap();
    let commit_of = |seq: u64, after: Option<CommitId>| {
        let mut progress = DeviceProgress::default();
        for seq in 1..=seq {
            progress.received.insert(seq);
        }
        let entries = vec![stored_in(&org, &device, record(seq, &employee, DAY_START + seq as i64 * HOUR))];
        let write =
            DeviceWrite { device_id: device.clone(), entries, progress, epoch: claim.epoch, after, was_waiting: false };
        Commit::of_device(write)
    };
    let read_version = store.employee_version(&org, &employee).await.unwrap();
    let advance = EmployeeAdvance::next(&org, &employee, read_version);
    let first = Commit { employees: vec![advance.clone()], ..commit_of(1, claim.progress.last_commit) };
    let flaky = FlakyStore { inner: store, fail_after_write: AtomicBool::new(false) };
    flaky.twice(|| async { flaky.landed(flaky.inner.commit(&first).await) }).await;
    assert_eq!(store.employee_version(&org, &employee).await.unwrap(), advance.new_version, "advanced once");
    assert_eq!(store.device_progress(&device).await.unwrap().last_commit, Some(first.id));

    let second = commit_of(2, Some(first.id));
    store.commit(&second).await.unwrap();
    let late = store.commit(&commit_of(1, claim.progress.last_commit)).await;
    assert!(matches!(late, Err(StoreError::Fenced(_))), "a commit that no longer follows the progress: {late:?}");
    let progress = store.device_progress(&device).await.unwrap();
    assert_eq!((progress.last_commit, progress.received.next_seq()), (Some(second.id), 3), "nothing put back");
}

/// Which status of a record stands follows the order of the decisions, not the clocks
/// of the gateways that made them: a record placed by a gateway whose clock is ten
/// minutes ahead, then discarded by an administrator through one whose clock is right.
async fn a_later_decision_stands_whatever_the_clocks(store: &dyn Store, ids: &Ids) {
    let (org, employee, device) = (ids.of("clocks-org"), ids.of("clocks-emp"), ids.of("clocks-dev"));
    let ahead_micros = chrono::Utc::now().timestamp_micros() + 600_000_000;
    let read_version = store.employee_version(&org, &employee).await.unwrap();
    let new_version = EmployeeAdvance::next_version(read_version, ahead_micros);
    let advance = EmployeeAdvance { org_id: org.clone(), employee_id: employee.clone(), read_version, new_version };
    let mut progress = DeviceProgress::default();
    progress.received.insert(1);
    let entries = vec![stored_in(&org, &device, record(1, &employee, DAY_START))];
    let placed = Commit { employees: vec![advance], ..device_commit(&device, entries, progress) };
    store.commit(&placed).await.unwrap();

    let read_version = store.employee_version(&org, &employee).await.unwrap();
    let advance = EmployeeAdvance::next(&org, &employee, read_version);
    assert_eq!(advance.new_version, new_version + 1, "the next version follows the last, not the clock behind it");
    let discarded = TimelineEntry { status: RecordStatus::Discarded, ..placed.timeline[0].clone() };
    let decision =
        Commit { id: CommitId::fresh(), employees: vec![advance], timeline: vec![discarded], ..Commit::default() };
    store.commit(&decision).await.unwrap();
    let day = store.timeline(&org, &employee, UtcDay::of_unix_ms(DAY_START)).await.unwrap();
    assert_eq!(day.iter().map(|entry| entry.status).collect::<Vec<_>>(), vec![RecordStatus::Discarded]);
}

/// Cuts a device commit before each of its writes in turn (the store fails there, as a
/// node or the gateway dies), then reads back what people read: before the commit point
/// nothing of the commit is seen (its progress, conflict, listings, audit, statistics,
/// and, where `timeline_hides_uncommitted`, its timeline entries); after it, the commit
/// stands. Sent again, as the device actor's retry does, the same commit completes
/// once: one audit entry, counted once, listed once. Drives the fail point
/// `store::write` (`write_point`), so run it in a process of its own. Returns how many
/// writes the commit made: how many places it was cut at.
pub async fn commits_cut_between_any_two_writes(store: &dyn Store, timeline_hides_uncommitted: bool) -> i64 {
    let ids = Ids::fresh();
    for cut_at in 0.. {
        let (org, device, employee) = (ids.of("cut-org"), ids.of(&format!("cut-dev-{cut_at}")), ids.of("cut-emp"));
        let claim = store.claim_device(&device).await.unwrap();
        let day = UtcDay::of_unix_ms(DAY_START + cut_at * HOUR);
        let recorded = |seq: u64| {
            let record = record(seq, &employee, DAY_START + cut_at * HOUR + seq as i64 * 60_000);
            ValidRecord { record_id: ids.of(&format!("record-{cut_at}-{seq}")), ..record }
        };
        let counts = SyncTotals { batches_succeeded: 1, accepted: 2, ..SyncTotals::default() };
        let mut progress = DeviceProgress { totals: counts, ..DeviceProgress::default() };
        progress.received.insert(1);
        progress.received.insert(2);
        let entries = vec![stored_in(&org, &device, recorded(1)), stored_in(&org, &device, recorded(2))];
        let (epoch, after) = (claim.epoch, claim.progress.last_commit);
        let write = DeviceWrite { device_id: device.clone(), entries, progress, epoch, after, was_waiting: false };
        let mut commit = Commit::of_device(write);
        let read_version = store.employee_version(&org, &employee).await.unwrap();
        commit.employees = vec![EmployeeAdvance::next(&org, &employee, read_version)];
        let (first, second) = (&commit.timeline[0], &commit.timeline[1]);
        let kind = crate::conflict_rules::ConflictKind::DuplicateEvent;
        let conflict = ConflictRecord {
            id: crate::conflict_rules::conflict_id(kind, &second.record_id, Some(&first.record_id)),
            org_id: org.clone(),
            employee_id: employee.clone(),
            kind,
            device_record: second.reference(),
            server_record: Some(first.reference()),
            policy: ConflictResolution::Manual,
            outcome: PolicyOutcome::BothStand,
            detected_at: DAY_START + cut_at * HOUR,
            resolution: None,
        };
        commit.conflicts = vec![conflict.clone()];
        let received = batch_received(&org, &device, DAY_START + cut_at * HOUR);
        commit.stats = vec![SyncCounts::of(&received, counts)];
        commit.audit = vec![received];

        fail::cfg("store::write", &format!("{cut_at}*off->return")).unwrap();
        let cut = store.commit(&commit).await;
        fail::remove("store::write");
        if cut.is_ok() {
            assert!(cut_at > 0, "the first write was cut");
            return cut_at;
        }
        let committed = store.device_progress(&device).await.unwrap().received.contains(1);
        let at = format!("cut before write {cut_at}, committed: {committed}");
        assert_eq!(store.conflict(&conflict.id).await.unwrap().is_some(), committed, "{at}");
        let listed = store.conflicts(&org, None, Page { after: None, limit: 100 }).await.unwrap();
        let listed = listed.iter().filter(|(listed, _)| listed.id == conflict.id).count();
        assert_eq!(listed, usize::from(committed), "{at}");
        assert_eq!(store.open_conflicts_of_device(&device).await.unwrap().len(), usize::from(committed), "{at}");
        // A commit that reached its point may have filed its entry before the cut.
        let filed = trail(store, AuditScope::Device(&device)).await.len();
        assert!(filed <= usize::from(committed), "{at}: a commit cut before its point files nothing");
        let totals = store.device_totals(&device).await.unwrap();
        assert_eq!(totals.batches_succeeded, u64::from(committed), "{at}: the progress's counts, nothing more");
        if timeline_hides_uncommitted && !committed {
            let entries = store.timeline(&org, &employee, day).await.unwrap();
            assert!(!entries.iter().any(|entry| *entry.device_id == *device), "{at}: no entry seen");
        }

        store.commit(&commit).await.unwrap_or_else(|error| panic!("{at}: sent again: {error}"));
        assert_eq!(store.device_progress(&device).await.unwrap().last_commit, Some(commit.id), "{at}");
        let stands = store.conflict(&conflict.id).await.unwrap();
        assert_eq!(stands.map(|conflict| conflict.device_record), Some(conflict.device_record.clone()), "{at}");
        assert_eq!(trail(store, AuditScope::Device(&device)).await.len(), 1, "{at}: filed once");
        assert_eq!(store.device_totals(&device).await.unwrap().accepted, 2, "{at}: counted once");
        let entries = store.timeline(&org, &employee, day).await.unwrap();
        let mine = entries.iter().filter(|entry| *entry.device_id == *device).count();
        assert_eq!(mine, 2, "{at}: both records in the timeline, once each");
    }
    unreachable!("a commit makes finitely many writes")
}

/// A heartbeat makes a gateway live until its TTL runs out; leaving ends it at once.
async fn gateways_are_live_until_they_leave_or_expire(store: &dyn Store, ids: &Ids) {
    let member = |name: &str| GatewayMember { gateway_id: ids.of(name), started_at: DAY_START };
    let live =
        |gateways: Vec<GatewayMember>, name: &str| gateways.iter().any(|gateway| gateway.gateway_id == ids.of(name));
    store.heartbeat(&member("gw-staying"), std::time::Duration::from_secs(60)).await.unwrap();
    store.heartbeat(&member("gw-leaving"), std::time::Duration::from_secs(60)).await.unwrap();
    store.heartbeat(&member("gw-dying"), std::time::Duration::from_secs(1)).await.unwrap();
    let gateways = store.live_gateways().await.unwrap();
    assert!(live(gateways.clone(), "gw-staying") && live(gateways.clone(), "gw-leaving") && live(gateways, "gw-dying"));
    store.leave(&ids.of("gw-leaving")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let gateways = store.live_gateways().await.unwrap();
    assert!(live(gateways.clone(), "gw-staying"), "a gateway that keeps its heartbeat stays");
    assert!(!live(gateways.clone(), "gw-leaving"), "a gateway that left is gone at once");
    assert!(!live(gateways, "gw-dying"), "a gateway whose heartbeat expired is gone");
    store.leave(&ids.of("gw-staying")).await.unwrap();
}
