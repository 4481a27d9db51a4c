//! Administrator views and settings, end to end against the real binary.

mod support;

use otg_schema::wire::{AckStatus, RejectReason};
use otg_schema::DeviceConfig;
use serde_json::json;
use support::*;

// Every test runs on the embedded store and on a CQL cluster: see `TestStore`.
on_both_stores!(
    org_settings_take_effect_on_the_next_batch_and_in_the_device_config,
    org_settings_are_validated,
    audit_trail_sync_stats_and_sync_status_survive_a_restart,
);

fn gateway(store: &TestStore) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (store.start(dir.path(), &[]), dir)
}

fn org_settings_take_effect_on_the_next_batch_and_in_the_device_config(store: &TestStore) {
    let (gateway, _dir) = gateway(store);
    let device = gateway.enrol("dev-settings", "acme", Some("emp-1"));
    let defaults = gateway.admin("GET", "/v1/admin/orgs/acme/settings", None).json();
    assert_eq!(
        (defaults["max_offline_days"].as_u64(), defaults["conflict_resolution"].as_str()),
        (Some(7), Some("server_wins"))
    );
    assert_eq!(
        (
            defaults["max_clock_skew_s"].as_u64(),
            defaults["duplicate_window_s"].as_u64(),
            defaults["max_shift_hours"].as_u64()
        ),
        (Some(300), Some(120), Some(16))
    );

    let two_days_ago = otg_schema::wire::Record { recorded_at: now_ms() - 48 * HOUR_MS, ..record(1, "emp-1") };
    let response = gateway.upload_ok(&device, &batch(&device.id, "b-1", vec![two_days_ago.clone()]));
    assert_eq!(response.acks[0].status, AckStatus::Accepted);

    let strict = json!({"max_offline_days": 1, "sync_on_wifi_only": true, "conflict_resolution": "manual"});
    let replaced = gateway.admin("PUT", "/v1/admin/orgs/acme/settings", Some(strict));
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    assert_eq!(replaced.json()["max_offline_days"], 1);
    assert_eq!(replaced.json()["duplicate_window_s"], 120, "keys left out take their defaults");

    let again = otg_schema::wire::Record { seq: 2, record_id: uuid::Uuid::new_v4().to_string(), ..two_days_ago };
    let response = gateway.upload_ok(&device, &batch(&device.id, "b-2", vec![again]));
    assert_eq!((response.acks[0].status, response.acks[0].reason), (AckStatus::Rejected, Some(RejectReason::TooOld)));
    let config: DeviceConfig = gateway.device_get(&device, "/v1/sync/config").msgpack();
    assert_eq!((config.max_offline_days, config.sync_on_wifi_only), (1, true));
    assert_eq!(
        gateway.admin("GET", "/v1/admin/orgs/other/settings", None).json()["max_offline_days"],
        7,
        "settings are per org"
    );
}

fn org_settings_are_validated(store: &TestStore) {
    let (gateway, _dir) = gateway(store);
    for (body, field) in [
        (json!({"max_offline_days": 0}), "max_offline_days"),
        (json!({"max_shift_hours": 100}), "max_shift_hours"),
        (json!({"sync_priorities": ["check_in"]}), "sync_priorities"),
        (json!({"max_offline_dayz": 3}), "max_offline_dayz"),
        (json!({"conflict_resolution": "coin_toss"}), "coin_toss"),
    ] {
        let reply = gateway.admin("PUT", "/v1/admin/orgs/acme/settings", Some(body));
        assert_eq!((reply.status, reply.error_code().as_str()), (400, "bad_request"), "{}", reply.text());
        assert!(reply.json()["message"].as_str().unwrap().contains(field), "{}", reply.text());
    }
    let no_token = send(ureq::get(&gateway.url("/v1/admin/orgs/acme/settings")), b"");
    assert_eq!(no_token.status, 401);
}

fn audit_types(gateway: &Gateway, query: &str) -> Vec<String> {
    let reply = gateway.admin("GET", &format!("/v1/admin/audit?{query}"), None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event"]["type"].as_str().unwrap().to_owned())
        .collect()
}

fn audit_trail_sync_stats_and_sync_status_survive_a_restart(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = store.start(dir.path(), &[]);
    let device = gateway.enrol("dev-audit", "acme", Some("emp-1"));
    let mut records = vec![record(1, "emp-1"), record(2, "emp-1")];
    records[1].kind = "lunch".into();
    let body = otg_schema::wire::encode(&otg_schema::wire::Batch {
        pending: Some(17),
        ..otg_schema::wire::decode(&batch(&device.id, "b-ok", records)).unwrap()
    });
    gateway.upload_ok(&device, &body);
    let refused = batch(&device.id, "b-refused", vec![]);
    assert_eq!(gateway.upload(&device, &refused).status, 400);

    // The refused batch's entry is written off the request path.
    assert!(eventually(std::time::Duration::from_secs(5), || audit_types(&gateway, "device_id=dev-audit").len() == 3));
    assert!(gateway.terminate().success());
    let gateway = store.start(dir.path(), &[]);
    gateway.admin("DELETE", "/v1/admin/devices/dev-audit", None);

    let trail = gateway.admin("GET", "/v1/admin/audit?device_id=dev-audit", None).json();
    let events = trail["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|event| event["event"]["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["device_enrolled", "batch_received", "batch_received", "device_revoked"]);
    let ok = &events[1]["event"];
    assert_eq!(
        (ok["batch_id"].as_str(), ok["outcome"].as_str(), ok["http_status"].as_u64()),
        (Some("b-ok"), Some("ok"), Some(200))
    );
    assert_eq!(ok["acks"][1]["reason"], "invalid", "every ack is in the trail");
    assert!(ok["latency_ms"].as_u64().is_some());
    let refused = &events[2]["event"];
    assert_eq!((refused["outcome"].as_str(), refused["http_status"].as_u64()), (Some("invalid_batch"), Some(400)));
    let since = events[1]["at"].as_i64().unwrap() + 1;
    assert_eq!(audit_types(&gateway, &format!("device_id=dev-audit&since={since}")).len(), 2, "since filters");
    assert_eq!(audit_types(&gateway, "org_id=acme").len(), 4);

    let stats = gateway.admin("GET", "/v1/admin/sync-stats?org_id=acme&window=1h", None).json();
    assert_eq!((stats["batches_succeeded"].as_u64(), stats["batches_failed"].as_u64()), (Some(1), Some(1)));
    assert_eq!((stats["records"]["accepted"].as_u64(), stats["records"]["rejected"].as_u64()), (Some(1), Some(1)));
    assert_eq!(stats["success_rate"].as_f64(), Some(0.5));
    assert_eq!(gateway.admin("GET", "/v1/admin/sync-stats?org_id=acme&window=2d", None).status, 400);

    let status = gateway.admin("GET", "/v1/admin/sync-status?org_id=acme", None).json();
    let row = &status["devices"][0];
    assert_eq!(
        (row["device_id"].as_str(), row["next_seq"].as_u64(), row["pending"].as_u64()),
        (Some("dev-audit"), Some(3), Some(17))
    );
    assert_eq!(
        (row["failures"].as_u64(), row["open_conflicts"].as_u64(), row["status"].as_str()),
        (Some(1), Some(0), Some("revoked"))
    );
    assert!(row["last_sync_at"].as_i64().is_some());
}

// Embedded store only: it asserts the embedded store's commit and memtable metrics (otg_store_*).
#[test]
fn the_metrics_exposition_passes_promtool_and_names_no_device() {
    let (gateway, _dir) = gateway(&TestStore::Embedded);
    let device = gateway.enrol("dev-metrics-secret-id", "acme", Some("emp-1"));
    let mut records = vec![record(1, "emp-1"), record(2, "emp-1"), record(3, "emp-1")];
    records[2].kind = "check_out".into(); // a check-out right after a check-out: orphan
    records.push(otg_schema::wire::Record { seq: 4, kind: "lunch".into(), ..record(4, "emp-1") });
    gateway.upload_ok(&device, &batch(&device.id, "b-1", records));
    assert_eq!(gateway.upload(&device, &batch(&device.id, "b-2", vec![])).status, 400);

    let text = send(ureq::get(&gateway.url("/metrics")), b"").text();
    for name in [
        "otg_ingest_batches_total{outcome=\"ok\"} 1",
        "otg_ingest_batches_total{outcome=\"invalid_batch\"} 1",
        "otg_ingest_records_total{status=\"conflict\"} 1",
        "otg_ingest_rejections_total{reason=\"invalid\"} 1",
        "otg_conflicts_detected_total{kind=\"orphan_check_out\"} 1",
        "otg_ingest_batch_duration_seconds_bucket",
        "otg_store_commit_duration_seconds_bucket",
        "otg_store_commit_group_size_bucket",
        "otg_store_commit_queue_depth",
        "otg_store_write_buffer_bytes",
        "otg_device_actors_active 1",
        "otg_conflict_actors_active ",
        "otg_conflict_employees_cached 1",
        "otg_conflict_requests_waiting 0",
        "otg_device_mailbox_batches 0",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(!text.contains("dev-metrics-secret-id") && !text.contains("emp-1"), "no id in a label");

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is on PATH (scripts/test installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
