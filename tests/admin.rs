//! Administrator views and settings, end to end against the real binary.

mod support;

use otg_schema::wire::{AckStatus, RejectReason};
use otg_schema::DeviceConfig;
use serde_json::json;
use support::*;

fn gateway() -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Gateway::start(dir.path(), &[]), dir)
}

#[test]
fn org_settings_take_effect_on_the_next_batch_and_in_the_device_config() {
    let (gateway, _dir) = gateway();
    let device = gateway.enrol("dev-settings", "acme", Some("emp-1"));
    let defaults = gateway.admin("GET", "/v1/admin/orgs/acme/settings", None).json();
    assert_eq!((defaults["max_offline_days"].as_u64(), defaults["conflict_resolution"].as_str()), (Some(7), Some("server_wins")));
    assert_eq!((defaults["max_clock_skew_s"].as_u64(), defaults["duplicate_window_s"].as_u64(), defaults["max_shift_hours"].as_u64()), (Some(300), Some(120), Some(16)));

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
    assert_eq!(gateway.admin("GET", "/v1/admin/orgs/other/settings", None).json()["max_offline_days"], 7, "settings are per org");
}

#[test]
fn org_settings_are_validated() {
    let (gateway, _dir) = gateway();
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
