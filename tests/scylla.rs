//! The real gateway binary on the CQL store (`OTG_STORE=scylla`), end to end over
//! HTTP: each test gets a fresh keyspace, migrated with `otg-gateway migrate`.

mod support;

use otg_schema::wire::{AckStatus, BatchResponse, DeviceStatus, RejectReason};
use serde_json::Value;
use std::time::Duration;
use support::*;

/// A gateway on a fresh keyspace, or `None` when no cluster is configured.
fn gateway_on_cql() -> Option<(Gateway, ScyllaKeyspace, tempfile::TempDir)> {
    let keyspace = ScyllaKeyspace::create()?;
    let dir = tempfile::tempdir().unwrap();
    Some((Gateway::start(dir.path(), &keyspace.settings()), keyspace, dir))
}

fn statuses(response: &BatchResponse) -> Vec<(AckStatus, Option<RejectReason>)> {
    response.acks.iter().map(|ack| (ack.status, ack.reason)).collect()
}

/// The audit trail of `device_id`, oldest first.
fn audit_events(gateway: &Gateway, device_id: &str) -> Vec<Value> {
    let reply = gateway.admin("GET", &format!("/v1/admin/audit?device_id={device_id}"), None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["events"].as_array().unwrap().iter().map(|event| event["event"].clone()).collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|event| event["type"].as_str().unwrap()).collect()
}

#[test]
fn batches_are_acked_once_and_a_reused_seq_is_rejected() {
    let Some((gateway, _keyspace, _dir)) = gateway_on_cql() else { return };
    let device = gateway.enrol("dev-cql", "acme", Some("emp-1"));

    let records: Vec<_> = (1..=3).map(|seq| record(seq, "emp-1")).collect();
    let response = gateway.upload_ok(&device, &batch(&device.id, "b-1", records.clone()));
    assert_eq!(statuses(&response), vec![(AckStatus::Accepted, None); 3]);
    assert_eq!(response.next_seq, 4);

    let response = gateway.upload_ok(&device, &batch(&device.id, "b-1", records.clone()));
    assert_eq!(statuses(&response), vec![(AckStatus::Duplicate, None); 3], "a resent batch is all duplicate");
    assert_eq!(response.next_seq, 4);

    let reused = otg_schema::wire::Record { record_id: uuid::Uuid::new_v4().to_string(), ..records[1].clone() };
    let response = gateway.upload_ok(&device, &batch(&device.id, "b-2", vec![reused, record(4, "emp-1")]));
    assert_eq!(
        statuses(&response),
        vec![(AckStatus::Rejected, Some(RejectReason::SeqReused)), (AckStatus::Accepted, None)]
    );
    assert_eq!(response.next_seq, 5);
    let status: DeviceStatus = gateway.device_get(&device, "/v1/sync/status").msgpack();
    assert_eq!(status.next_seq, 5);
}

#[test]
fn the_admin_views_read_back_from_the_cluster() {
    let Some((gateway, _keyspace, _dir)) = gateway_on_cql() else { return };
    let device = gateway.enrol("dev-views", "acme", Some("emp-1"));
    let first: Vec<_> = (1..=3).map(|seq| record(seq, "emp-1")).collect();
    gateway.upload_ok(&device, &batch(&device.id, "b-1", first.clone()));
    gateway.upload_ok(&device, &batch(&device.id, "b-2", vec![first[2].clone(), record(4, "emp-1")]));
    assert_eq!(gateway.upload(&device, &batch(&device.id, "b-refused", vec![])).status, 400);

    // The refused batch's entry is written off the request path.
    assert!(eventually(Duration::from_secs(5), || audit_events(&gateway, "dev-views").len() == 4));
    let events = audit_events(&gateway, "dev-views");
    assert_eq!(types(&events), vec!["device_enrolled", "batch_received", "batch_received", "batch_received"]);
    let batches: Vec<_> =
        events[1..].iter().map(|event| (event["batch_id"].as_str(), event["outcome"].as_str())).collect();
    assert_eq!(
        batches,
        vec![(Some("b-1"), Some("ok")), (Some("b-2"), Some("ok")), (Some("b-refused"), Some("invalid_batch"))]
    );

    let status = gateway.admin("GET", "/v1/admin/sync-status?org_id=acme", None).json();
    let devices = status["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{status}");
    let row = &devices[0];
    assert_eq!(
        (row["device_id"].as_str(), row["next_seq"].as_u64(), row["status"].as_str()),
        (Some("dev-views"), Some(5), Some("active"))
    );
    assert_eq!((row["batches_succeeded"].as_u64(), row["failures"].as_u64()), (Some(2), Some(1)));
    assert!(row["last_sync_at"].as_i64().is_some());

    let stats = gateway.admin("GET", "/v1/admin/sync-stats?org_id=acme&window=1h", None).json();
    assert_eq!((stats["batches_succeeded"].as_u64(), stats["batches_failed"].as_u64()), (Some(2), Some(1)), "{stats}");
    let records = &stats["records"];
    assert_eq!(
        (records["accepted"].as_u64(), records["duplicate"].as_u64(), records["rejected"].as_u64()),
        (Some(4), Some(1), Some(0)),
        "{stats}"
    );
}

#[test]
fn a_device_is_enrolled_once_and_revoked_once() {
    let Some((gateway, _keyspace, _dir)) = gateway_on_cql() else { return };
    let device = gateway.enrol("dev-once", "acme", None);
    let again = gateway.admin(
        "POST",
        "/v1/admin/devices",
        Some(serde_json::json!({"device_id": "dev-once", "org_id": "acme"})),
    );
    assert_eq!((again.status, again.error_code().as_str()), (409, "already_exists"), "{}", again.text());
    gateway.upload_ok(&device, &batch(&device.id, "b-1", vec![record(1, "emp-1")]));

    let revoked = gateway.admin("DELETE", "/v1/admin/devices/dev-once", None);
    assert_eq!((revoked.status, revoked.json()["status"].as_str()), (200, Some("revoked")), "{}", revoked.text());
    let again = gateway.admin("DELETE", "/v1/admin/devices/dev-once", None);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["revoked_at"], revoked.json()["revoked_at"], "revoking again keeps the first time");
    assert_eq!(gateway.upload(&device, &batch(&device.id, "b-2", vec![record(2, "emp-1")])).status, 403);

    let events = audit_events(&gateway, "dev-once");
    assert_eq!(types(&events), vec!["device_enrolled", "batch_received", "device_revoked"]);
}

#[test]
fn a_new_gateway_process_answers_from_the_cluster() {
    let Some((mut gateway, keyspace, _dir)) = gateway_on_cql() else { return };
    let device = gateway.enrol("dev-restart", "acme", Some("emp-1"));
    let sent = batch(&device.id, "b-1", (1..=4).map(|seq| record(seq, "emp-1")).collect());
    assert_eq!(gateway.upload_ok(&device, &sent).next_seq, 5);
    assert!(gateway.terminate().success(), "SIGTERM exits 0");

    let other_dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(other_dir.path(), &keyspace.settings());
    let status: DeviceStatus = gateway.device_get(&device, "/v1/sync/status").msgpack();
    assert_eq!(status.next_seq, 5, "the new process reads the device's progress from the cluster");
    let response = gateway.upload_ok(&device, &sent);
    assert_eq!(statuses(&response), vec![(AckStatus::Duplicate, None); 4]);
    assert_eq!(response.next_seq, 5);
    let response = gateway.upload_ok(&device, &batch(&device.id, "b-2", vec![record(5, "emp-1")]));
    assert_eq!((statuses(&response), response.next_seq), (vec![(AckStatus::Accepted, None)], 6));
}
