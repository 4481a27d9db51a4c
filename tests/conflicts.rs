//! Conflict detection, policies and resolution, end to end against the real binary.

mod support;

use otg_schema::wire::{AckStatus, BatchResponse, DeviceStatus, Leave, Record};
use serde_json::{json, Value};
use support::*;

// Every test runs on the embedded store and on a CQL cluster: see `TestStore`.
on_both_stores!(
    two_devices_checking_in_30_s_apart_give_one_duplicate_event,
    an_overnight_shift_is_one_shift_and_a_normal_day_has_no_conflict,
    every_conflict_kind_is_detected,
    policies_decide_which_record_stands,
    an_administrator_resolves_a_conflict_once,
    a_conflict_behind_a_gap_is_found_once_the_gap_fills,
    conflicts_page_and_survive_a_restart,
    records_behind_a_gap_are_evaluated_at_the_gap_timeout_even_across_a_restart,
    the_duplicate_window_setting_applies_from_the_next_batch,
    records_are_evaluated_in_seq_order_even_when_they_arrive_out_of_it,
    a_seq_far_beyond_the_gap_is_released_at_the_timeout_without_walking_the_gap,
);

/// Midnight UTC two days before the tests began: every record of these tests falls in
/// its 48 hours. Taken once, so a run across midnight reads the days it wrote.
fn day_start() -> i64 {
    static DAY_START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *DAY_START.get_or_init(|| now_ms() / (24 * HOUR_MS) * (24 * HOUR_MS) - 48 * HOUR_MS)
}

fn at(seq: i64, kind: &str, employee_id: &str, offset_ms: i64) -> Record {
    Record::new(seq, uuid::Uuid::new_v4().to_string(), kind, employee_id, day_start() + offset_ms)
}

fn started(store: &TestStore, settings: Option<Value>) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let gateway = store.start(dir.path(), &[]);
    if let Some(settings) = settings {
        assert_eq!(gateway.admin("PUT", "/v1/admin/orgs/acme/settings", Some(settings)).status, 200);
    }
    (gateway, dir)
}

fn conflicts(gateway: &Gateway, query: &str) -> Vec<Value> {
    let reply = gateway.admin("GET", &format!("/v1/admin/conflicts?org_id=acme{query}"), None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["conflicts"].as_array().unwrap().clone()
}

fn attendance(gateway: &Gateway, employee_id: &str, day_offset_ms: i64) -> Value {
    let day = otg_schema::UtcDay::of_unix_ms(day_start() + day_offset_ms);
    let reply =
        gateway.admin("GET", &format!("/v1/admin/employees/{employee_id}/attendance?org_id=acme&day={day}"), None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn status_of(day: &Value, record_id: &str) -> String {
    let records = day["records"].as_array().unwrap();
    let record = records
        .iter()
        .find(|record| record["record_id"] == record_id)
        .unwrap_or_else(|| panic!("{record_id} not in {day}"));
    record["status"].as_str().unwrap().to_owned()
}

fn upload(gateway: &Gateway, device: &TestDevice, records: Vec<Record>) -> BatchResponse {
    gateway.upload_ok(device, &batch(&device.id, "b", records))
}

fn two_devices_checking_in_30_s_apart_give_one_duplicate_event(store: &TestStore) {
    let (gateway, _dir) = started(store, None);
    let phone = gateway.enrol("phone", "acme", Some("emp-1"));
    let kiosk = gateway.enrol("kiosk", "acme", None);
    let first = at(1, "check_in", "emp-1", 8 * HOUR_MS);
    assert_eq!(upload(&gateway, &phone, vec![first.clone()]).acks[0].status, AckStatus::Accepted);
    let second = at(1, "check_in", "emp-1", 8 * HOUR_MS + 30_000);
    let ack = upload(&gateway, &kiosk, vec![second.clone()]).acks.remove(0);
    assert_eq!(ack.status, AckStatus::Conflict);
    let conflict_id = ack.conflict_id.unwrap();

    let listed = conflicts(&gateway, "&status=open");
    assert_eq!(listed.len(), 1, "exactly one conflict: {listed:?}");
    let conflict = &listed[0];
    assert_eq!(
        (conflict["conflict_id"].as_str(), conflict["kind"].as_str()),
        (Some(conflict_id.as_str()), Some("duplicate_event"))
    );
    assert_eq!(conflict["device_record"]["record_id"], second.record_id.as_str());
    assert_eq!(conflict["server_record"]["record_id"], first.record_id.as_str());
    assert_eq!(
        (conflict["policy"].as_str(), conflict["outcome"].as_str()),
        (Some("server_wins"), Some("newcomer_superseded"))
    );

    // server_wins: the newcomer is kept, marked superseded; nothing is deleted.
    let day = attendance(&gateway, "emp-1", 0);
    assert_eq!(status_of(&day, &first.record_id), "active");
    assert_eq!(status_of(&day, &second.record_id), "superseded");
    for device in [&phone, &kiosk] {
        let status: DeviceStatus = gateway.device_get(device, "/v1/sync/status").msgpack();
        assert_eq!(status.open_conflicts.len(), 1, "both devices see the conflict");
        assert_eq!(status.open_conflicts[0].conflict_id, conflict_id);
    }
    let kiosk_status: DeviceStatus = gateway.device_get(&kiosk, "/v1/sync/status").msgpack();
    assert!(kiosk_status.open_conflicts[0].superseded);
}

fn an_overnight_shift_is_one_shift_and_a_normal_day_has_no_conflict(store: &TestStore) {
    let (gateway, _dir) = started(store, None);
    let phone = gateway.enrol("phone", "acme", Some("emp-1"));
    let records = vec![
        at(1, "check_in", "emp-1", 8 * HOUR_MS),
        at(2, "break_start", "emp-1", 12 * HOUR_MS),
        at(3, "break_end", "emp-1", 12 * HOUR_MS + 1_800_000),
        at(4, "check_out", "emp-1", 16 * HOUR_MS),
        at(5, "check_in", "emp-1", 22 * HOUR_MS),
        at(6, "check_out", "emp-1", 30 * HOUR_MS),
    ];
    let response = upload(&gateway, &phone, records.clone());
    assert!(response.acks.iter().all(|ack| ack.status == AckStatus::Accepted), "{:?}", response.acks);
    assert!(conflicts(&gateway, "").is_empty());
    let shifts = attendance(&gateway, "emp-1", 0)["shifts"].as_array().unwrap().clone();
    assert_eq!(shifts.len(), 2);
    assert_eq!(shifts[1]["check_in"], records[4].record_id.as_str());
    assert_eq!(shifts[1]["check_out"], records[5].record_id.as_str(), "the 22:00 to 06:00 shift is one shift");
}

fn every_conflict_kind_is_detected(store: &TestStore) {
    let (gateway, _dir) = started(store, None);
    let kiosk = gateway.enrol("kiosk", "acme", None);
    let skewed = Record::new(6, uuid::Uuid::new_v4().to_string(), "check_in", "emp-6", now_ms() + HOUR_MS);
    let first_leave_day = otg_schema::UtcDay::of_unix_ms(day_start());
    let leave = Leave {
        from: first_leave_day.to_string(),
        to: first_leave_day.to_string(),
        leave_type: "sick".into(),
        reason: None,
    };
    let records = vec![
        at(1, "check_in", "emp-1", 8 * HOUR_MS),
        at(2, "check_in", "emp-1", 10 * HOUR_MS), // overlap: emp-1's shift is open
        at(3, "check_out", "emp-3", 17 * HOUR_MS), // orphan_check_out
        at(4, "break_start", "emp-4", 12 * HOUR_MS), // break_outside_shift
        at(5, "check_in", "emp-5", 9 * HOUR_MS),
        skewed,                                                                        // clock_skew
        Record { leave: Some(leave), ..at(7, "leave_request", "emp-5", 7 * HOUR_MS) }, // leave_overlap
    ];
    let response = upload(&gateway, &kiosk, records);
    let statuses: Vec<AckStatus> = response.acks.iter().map(|ack| ack.status).collect();
    use AckStatus::{Accepted, Conflict};
    assert_eq!(statuses, vec![Accepted, Conflict, Conflict, Conflict, Accepted, Conflict, Conflict]);
    let mut kinds: Vec<String> =
        conflicts(&gateway, "").iter().map(|c| c["kind"].as_str().unwrap().to_owned()).collect();
    kinds.sort();
    assert_eq!(kinds, vec!["break_outside_shift", "clock_skew", "leave_overlap", "orphan_check_out", "overlap"]);
}

/// One gateway and store for both policies (a restart on the same store would keep the
/// first policy's devices): each policy gets its own devices and employee.
fn policies_decide_which_record_stands(store: &TestStore) {
    let (gateway, _dir) = started(store, None);
    for (policy, first_status, second_status, outcome) in
        [("device_wins", "superseded", "active", "server_superseded"), ("manual", "active", "active", "both_stand")]
    {
        let settings = json!({"conflict_resolution": policy});
        assert_eq!(gateway.admin("PUT", "/v1/admin/orgs/acme/settings", Some(settings)).status, 200);
        let employee = format!("emp-{policy}");
        let phone = gateway.enrol(&format!("phone-{policy}"), "acme", Some(&employee));
        let kiosk = gateway.enrol(&format!("kiosk-{policy}"), "acme", None);
        let first = at(1, "check_in", &employee, 8 * HOUR_MS);
        let second = at(1, "check_in", &employee, 8 * HOUR_MS + 10_000);
        upload(&gateway, &phone, vec![first.clone()]);
        let ack = upload(&gateway, &kiosk, vec![second.clone()]).acks.remove(0);
        assert_eq!(ack.status, AckStatus::Conflict);
        let day = attendance(&gateway, &employee, 0);
        assert_eq!(
            (status_of(&day, &first.record_id), status_of(&day, &second.record_id)),
            (first_status.into(), second_status.into()),
            "{policy}"
        );
        let listed = conflicts(&gateway, "");
        let conflict = listed.iter().find(|conflict| conflict["conflict_id"] == ack.conflict_id.as_deref().unwrap());
        assert_eq!(conflict.unwrap_or_else(|| panic!("{policy}: {listed:?}"))["outcome"], outcome, "{policy}");
    }
}

fn an_administrator_resolves_a_conflict_once(store: &TestStore) {
    let (gateway, _dir) = started(store, Some(json!({"conflict_resolution": "manual"})));
    let phone = gateway.enrol("phone", "acme", Some("emp-1"));
    let kiosk = gateway.enrol("kiosk", "acme", None);
    let first = at(1, "check_in", "emp-1", 8 * HOUR_MS);
    let second = at(1, "check_in", "emp-1", 8 * HOUR_MS + 10_000);
    upload(&gateway, &phone, vec![first.clone()]);
    let conflict_id = upload(&gateway, &kiosk, vec![second.clone()]).acks[0].conflict_id.clone().unwrap();

    let path = format!("/v1/admin/conflicts/{conflict_id}/resolve");
    let resolved =
        gateway.admin("POST", &path, Some(json!({"resolution": "keep_device", "note": "the kiosk photo matches"})));
    assert_eq!(resolved.status, 200, "{}", resolved.text());
    assert_eq!(resolved.json()["status"], "resolved");
    assert_eq!(resolved.json()["resolution"]["note"], "the kiosk photo matches");
    let day = attendance(&gateway, "emp-1", 0);
    assert_eq!(
        (status_of(&day, &first.record_id), status_of(&day, &second.record_id)),
        ("superseded".into(), "active".into())
    );

    let again = gateway.admin("POST", &path, Some(json!({"resolution": "keep_server", "note": ""})));
    assert_eq!((again.status, again.error_code().as_str()), (409, "already_resolved"));
    let retried =
        gateway.admin("POST", &path, Some(json!({"resolution": "keep_device", "note": "the kiosk photo matches"})));
    assert_eq!(retried.status, 200, "the same decision again is a retry: {}", retried.text());
    let unknown =
        gateway.admin("POST", "/v1/admin/conflicts/nope/resolve", Some(json!({"resolution": "keep_both", "note": ""})));
    assert_eq!(unknown.status, 404);
    let bad = gateway.admin("POST", &path, Some(json!({"resolution": "flip_a_coin"})));
    assert_eq!(bad.status, 400);

    assert!(conflicts(&gateway, "&status=open").is_empty());
    assert_eq!(conflicts(&gateway, "&status=resolved").len(), 1);
    for device in ["phone", "kiosk"] {
        let trail = gateway.admin("GET", &format!("/v1/admin/audit?device_id={device}"), None).json();
        let resolution = trail["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|event| event["event"]["type"] == "conflict_resolved")
            .cloned();
        let resolution = resolution.unwrap_or_else(|| panic!("{device}'s trail has the resolution: {trail}"));
        assert_eq!(
            (resolution["event"]["resolution"].as_str(), resolution["event"]["note"].as_str()),
            (Some("keep_device"), Some("the kiosk photo matches"))
        );
    }
    let status: DeviceStatus = gateway.device_get(&kiosk, "/v1/sync/status").msgpack();
    assert!(status.open_conflicts.is_empty());
}

fn a_conflict_behind_a_gap_is_found_once_the_gap_fills(store: &TestStore) {
    let (gateway, _dir) = started(store, None);
    let phone = gateway.enrol("phone", "acme", Some("emp-1"));
    let kiosk = gateway.enrol("kiosk", "acme", None);
    upload(&gateway, &kiosk, vec![at(1, "check_in", "emp-1", 8 * HOUR_MS)]);

    // seq 3 duplicates the kiosk's check-in, but seq 2 is still on the phone.
    let behind_gap = at(3, "check_in", "emp-1", 8 * HOUR_MS + 20_000);
    let response = upload(&gateway, &phone, vec![at(1, "check_in", "emp-2", 8 * HOUR_MS), behind_gap.clone()]);
    assert_eq!(response.acks[1].status, AckStatus::Accepted, "stored, evaluation waits for seq 2");
    assert!(conflicts(&gateway, "").is_empty());

    let response = upload(&gateway, &phone, vec![at(2, "check_out", "emp-2", 16 * HOUR_MS)]);
    assert_eq!(response.next_seq, 4);
    let found = conflicts(&gateway, "");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0]["kind"].as_str(), found[0]["device_record"]["record_id"].as_str()),
        (Some("duplicate_event"), Some(behind_gap.record_id.as_str()))
    );
    let status: DeviceStatus = gateway.device_get(&phone, "/v1/sync/status").msgpack();
    assert_eq!(status.open_conflicts[0].seq, 3);
}

fn conflicts_page_and_survive_a_restart(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = store.start(dir.path(), &[]);
    let kiosk = gateway.enrol("kiosk", "acme", None);
    let orphans = (1..=5).map(|seq| at(seq, "check_out", &format!("emp-{seq}"), 17 * HOUR_MS)).collect();
    upload(&gateway, &kiosk, orphans);
    assert!(gateway.terminate().success());

    let gateway = store.start(dir.path(), &[]);
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let reply = gateway.admin("GET", &format!("/v1/admin/conflicts?org_id=acme&limit=2{cursor}"), None).json();
        seen.extend(
            reply["conflicts"].as_array().unwrap().iter().map(|c| c["conflict_id"].as_str().unwrap().to_owned()),
        );
        match reply["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
        assert!(seen.len() <= 5, "paging ends");
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "every conflict once, across pages, after a restart");
    assert_eq!(gateway.admin("GET", "/v1/admin/conflicts?org_id=acme&cursor=!!", None).status, 400);
    assert_eq!(gateway.admin("GET", "/v1/admin/conflicts", None).status, 400, "org_id is required");
}

fn records_behind_a_gap_are_evaluated_at_the_gap_timeout_even_across_a_restart(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    // After a kill -9 the dead gateway's heartbeat stands until it expires, and the
    // waiting devices it owned are woken then: kept short here.
    let settings = [("OTG_MEMBERSHIP_TTL_S", "2")];
    let mut gateway = store.start(dir.path(), &settings);
    assert_eq!(gateway.admin("PUT", "/v1/admin/orgs/acme/settings", Some(json!({"gap_timeout_s": 2}))).status, 200);
    let kiosk = gateway.enrol("kiosk", "acme", None);
    let phone = gateway.enrol("phone", "acme", Some("emp-1"));
    upload(&gateway, &kiosk, vec![at(1, "check_in", "emp-1", 8 * HOUR_MS)]);
    // Seq 1 never arrives: seq 2 waits behind the gap.
    let response = upload(&gateway, &phone, vec![at(2, "check_in", "emp-1", 8 * HOUR_MS + 20_000)]);
    assert_eq!((response.acks[0].status, response.next_seq), (AckStatus::Accepted, 1));
    assert!(
        eventually(std::time::Duration::from_secs(10), || conflicts(&gateway, "").len() == 1),
        "found at the gap timeout, with no further batch"
    );

    // Again, but the gateway restarts while the record waits.
    upload(&gateway, &kiosk, vec![at(2, "check_out", "emp-1", 16 * HOUR_MS)]);
    let response = upload(&gateway, &phone, vec![at(4, "check_out", "emp-1", 16 * HOUR_MS + 20_000)]);
    assert_eq!(response.acks[0].status, AckStatus::Accepted);
    gateway.kill_hard();
    let gateway = store.start(dir.path(), &settings);
    assert!(
        eventually(std::time::Duration::from_secs(10), || conflicts(&gateway, "").len() == 2),
        "found after the restart too"
    );
}

fn the_duplicate_window_setting_applies_from_the_next_batch(store: &TestStore) {
    let (gateway, _dir) = started(store, None);
    let phone = gateway.enrol("phone", "acme", Some("emp-1"));
    let kiosk = gateway.enrol("kiosk", "acme", None);
    upload(&gateway, &phone, vec![at(1, "check_in", "emp-1", 8 * HOUR_MS)]);
    assert_eq!(
        gateway.admin("PUT", "/v1/admin/orgs/acme/settings", Some(json!({"duplicate_window_s": 10}))).status,
        200
    );
    upload(&gateway, &kiosk, vec![at(1, "check_in", "emp-1", 8 * HOUR_MS + 30_000)]);
    let kinds: Vec<Value> = conflicts(&gateway, "").iter().map(|conflict| conflict["kind"].clone()).collect();
    assert_eq!(
        kinds,
        vec![json!("overlap")],
        "30 s apart is no duplicate within a 10 s window: a check-in in an open shift"
    );
}

fn records_are_evaluated_in_seq_order_even_when_they_arrive_out_of_it(store: &TestStore) {
    let (gateway, _dir) = started(store, None);
    let phone = gateway.enrol("phone", "acme", Some("emp-1"));
    let late_seq = at(3, "check_in", "emp-1", 9 * HOUR_MS + 60_000);
    let response = upload(&gateway, &phone, vec![at(1, "break_start", "emp-1", 6 * HOUR_MS), late_seq.clone()]);
    assert_eq!(response.acks[1].status, AckStatus::Accepted, "seq 3 waits for seq 2");
    assert_eq!(status_of(&attendance(&gateway, "emp-1", 0), &late_seq.record_id), "pending");

    // Seq 2 is evaluated first: it must not see seq 3, which comes after it.
    let early_seq = at(2, "check_in", "emp-1", 9 * HOUR_MS);
    let response = upload(&gateway, &phone, vec![early_seq.clone()]);
    assert_eq!(response.acks[0].status, AckStatus::Accepted);
    let found = conflicts(&gateway, "");
    let duplicates: Vec<&Value> = found.iter().filter(|c| c["kind"] == "duplicate_event").collect();
    assert_eq!(duplicates.len(), 1, "{found:?}");
    assert_eq!(
        duplicates[0]["device_record"]["record_id"],
        late_seq.record_id.as_str(),
        "the later seq is the newcomer"
    );
    let day = attendance(&gateway, "emp-1", 0);
    assert_eq!(
        (status_of(&day, &early_seq.record_id), status_of(&day, &late_seq.record_id)),
        ("active".into(), "superseded".into())
    );
}

fn a_seq_far_beyond_the_gap_is_released_at_the_timeout_without_walking_the_gap(store: &TestStore) {
    let (gateway, _dir) = started(store, Some(json!({"gap_timeout_s": 1})));
    let phone = gateway.enrol("phone", "acme", Some("emp-1"));
    let far = at(i64::MAX, "check_out", "emp-1", 17 * HOUR_MS);
    upload(&gateway, &phone, vec![at(1, "check_in", "emp-1", 8 * HOUR_MS), far.clone()]);
    assert!(
        eventually(std::time::Duration::from_secs(10), || status_of(&attendance(&gateway, "emp-1", 0), &far.record_id)
            == "active"),
        "evaluated at the gap timeout"
    );
    let response = upload(&gateway, &phone, vec![at(2, "break_start", "emp-1", 12 * HOUR_MS)]);
    assert_eq!(response.acks[0].status, AckStatus::Accepted, "the device is still served");
}
