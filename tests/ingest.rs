//! The device and admin protocol of PROTOCOL.md, end to end against the real binary.

mod support;

use otg_schema::wire::{AckStatus, BatchResponse, DeviceStatus, Leave, RejectReason};
use otg_schema::{DeviceConfig, RecordKind};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::*;

// Every test runs on the embedded store and on a CQL cluster: see `TestStore`.
on_both_stores!(
    every_ack_status_of_the_protocol,
    a_kiosk_records_for_any_employee_and_leave_requests_are_stored,
    gaps_hold_next_seq_until_filled,
    whole_batch_errors_leave_the_batch_unprocessed,
    an_oversized_body_gets_413_even_while_the_client_is_still_sending,
    a_device_over_its_mailbox_gets_429_with_retry_after,
    device_reads_config_and_status,
    enrolment_and_revocation,
    health_readiness_and_metrics,
    an_acked_batch_says_where_its_time_went,
    a_clean_restart_keeps_everything_and_a_resend_is_all_duplicate,
    an_evicted_device_actor_resumes_from_the_store,
);

fn gateway(store: &TestStore, settings: &[(&str, &str)]) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (store.start(dir.path(), settings), dir)
}

fn statuses(response: &BatchResponse) -> Vec<(AckStatus, Option<RejectReason>)> {
    response.acks.iter().map(|ack| (ack.status, ack.reason)).collect()
}

fn every_ack_status_of_the_protocol(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[]);
    let personal = gateway.enrol("dev-personal", "acme", Some("emp-1"));

    let first = vec![record(1, "emp-1"), record(2, "emp-1")];
    let response = gateway.upload_ok(&personal, &batch(&personal.id, "b-1", first.clone()));
    assert_eq!(response.batch_id, "b-1");
    assert_eq!(statuses(&response), vec![(AckStatus::Accepted, None); 2]);
    assert_eq!(response.next_seq, 3);
    assert!((response.server_time - now_ms()).abs() < 60_000);

    let too_old = otg_schema::wire::Record { recorded_at: now_ms() - 8 * 24 * HOUR_MS, ..record(4, "emp-1") };
    let invalid = otg_schema::wire::Record { kind: "lunch".into(), ..record(5, "emp-1") };
    let reused = otg_schema::wire::Record { record_id: uuid::Uuid::new_v4().to_string(), ..first[1].clone() };
    let mismatch = record(6, "emp-2");
    let second = vec![first[0].clone(), reused, record(3, "emp-1"), too_old, invalid, mismatch];
    let response = gateway.upload_ok(&personal, &batch(&personal.id, "b-2", second));
    assert_eq!(
        statuses(&response),
        vec![
            (AckStatus::Duplicate, None),
            (AckStatus::Rejected, Some(RejectReason::SeqReused)),
            (AckStatus::Accepted, None),
            (AckStatus::Rejected, Some(RejectReason::TooOld)),
            (AckStatus::Rejected, Some(RejectReason::Invalid)),
            (AckStatus::Rejected, Some(RejectReason::EmployeeMismatch)),
        ]
    );
    let seqs: Vec<i64> = response.acks.iter().map(|ack| ack.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6], "one ack per record, in order");
    assert!(response.acks[4].detail.as_deref().unwrap().starts_with("kind"), "invalid names the field");
    assert_eq!(response.next_seq, 7, "rejected records leave no gap");
}

fn a_kiosk_records_for_any_employee_and_leave_requests_are_stored(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[]);
    let kiosk = gateway.enrol("kiosk-1", "acme", None);
    let leave =
        Leave { from: "2030-01-02".into(), to: "2030-01-04".into(), leave_type: "vacation".into(), reason: None };
    let request = otg_schema::wire::Record { kind: "leave_request".into(), leave: Some(leave), ..record(3, "emp-3") };
    let emp_2_checks_in = otg_schema::wire::Record { kind: "check_in".into(), ..record(2, "emp-2") };
    let records = vec![record(1, "emp-1"), emp_2_checks_in, request];
    let response = gateway.upload_ok(&kiosk, &batch(&kiosk.id, "b-1", records));
    assert_eq!(statuses(&response), vec![(AckStatus::Accepted, None); 3]);
}

fn gaps_hold_next_seq_until_filled(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[]);
    let device = gateway.enrol("dev-gap", "acme", Some("emp-1"));
    let response = gateway.upload_ok(&device, &batch(&device.id, "b-1", vec![record(1, "emp-1"), record(3, "emp-1")]));
    assert_eq!(response.next_seq, 2);
    let status: DeviceStatus = gateway.device_get(&device, "/v1/sync/status").msgpack();
    assert_eq!(status.next_seq, 2);
    let response = gateway.upload_ok(&device, &batch(&device.id, "b-2", vec![record(2, "emp-1")]));
    assert_eq!(response.next_seq, 4);
}

fn whole_batch_errors_leave_the_batch_unprocessed(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[]);
    let device = gateway.enrol("dev-errors", "acme", Some("emp-1"));
    let good = batch(&device.id, "b-1", vec![record(1, "emp-1")]);
    let signed = |body: &[u8]| device.signed(&gateway.url(""), "POST", "/v1/sync/batches", body);

    let expect = |reply: Reply, status: u16, code: &str| {
        assert_eq!(reply.status, status, "{}", reply.text());
        assert!(reply.content_type.starts_with("application/json"));
        assert_eq!(reply.error_code(), code, "{}", reply.text());
        assert!(!reply.json()["message"].as_str().unwrap().is_empty());
        reply
    };

    expect(send(signed(b"\xc1\x00"), b"\xc1\x00"), 400, "malformed_body");
    let mut missing_key =
        rmp_serde::to_vec_named(&serde_json::json!({"device_id": device.id, "batch_id": "b", "sent_at": 1})).unwrap();
    expect(send(signed(&missing_key), &missing_key), 400, "malformed_body");
    let mistyped = rmp_serde::to_vec_named(&serde_json::json!({
        "device_id": device.id, "batch_id": "b", "sent_at": 1,
        "records": [{"seq": "one", "record_id": "x", "kind": "check_in", "employee_id": "emp-1", "recorded_at": 1}]
    }))
    .unwrap();
    let reply = expect(send(signed(&mistyped), &mistyped), 400, "malformed_body");
    assert!(reply.json()["message"].as_str().unwrap().contains("records[0].seq"), "{}", reply.text());
    let empty = batch(&device.id, "b-2", vec![]);
    expect(send(signed(&empty), &empty), 400, "invalid_batch");
    let too_many = batch(&device.id, "b-3", (1..=501).map(|seq| record(seq, "emp-1")).collect());
    expect(send(signed(&too_many), &too_many), 400, "invalid_batch");
    let other_device = batch("dev-other", "b-4", vec![record(1, "emp-1")]);
    expect(send(signed(&other_device), &other_device), 400, "invalid_batch");

    let unsigned = ureq::post(&gateway.url("/v1/sync/batches")).set("Content-Type", "application/msgpack");
    expect(send(unsigned.set("X-Device-Id", &device.id), &good), 401, "unauthorized");
    let forged = TestDevice { id: device.id.clone(), secret: otg_schema::DeviceSecret([9; 32]) };
    expect(gateway.upload(&forged, &good), 401, "unauthorized");
    let stranger = TestDevice { id: "dev-unknown".into(), ..device.clone() };
    expect(gateway.upload(&stranger, &good), 401, "unauthorized");
    // The signature covers the body: a tampered body fails it.
    expect(send(signed(&good), &missing_key.split_off(0)), 401, "unauthorized");

    expect(send(signed(&good).set("Content-Type", "application/json"), &good), 415, "unsupported_media_type");
    let x_msgpack = send(signed(&good).set("Content-Type", "application/x-msgpack"), &good);
    assert_eq!(x_msgpack.status, 200, "application/x-msgpack is accepted too");

    // Nothing above was stored: seq 1 was first acked by the x-msgpack upload.
    let response: BatchResponse = x_msgpack.msgpack();
    assert_eq!(statuses(&response), vec![(AckStatus::Accepted, None)]);

    gateway.admin("DELETE", "/v1/admin/devices/dev-errors", None);
    expect(gateway.upload(&device, &good), 403, "device_revoked");
    expect(gateway.device_get(&device, "/v1/sync/config"), 403, "device_revoked");
}

fn an_oversized_body_gets_413_even_while_the_client_is_still_sending(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[("OTG_BODY_LIMIT_BYTES", "65536")]);
    let device = gateway.enrol("dev-big", "acme", None);
    let address = gateway.base_url.trim_start_matches("http://").to_owned();

    // Declared too large: answered after the body is swallowed, sent slowly in chunks.
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let length = 1024 * 1024;
    write!(stream, "POST /v1/sync/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\nX-Device-Id: {}\r\nContent-Length: {length}\r\n\r\n", device.id).unwrap();
    for _ in 0..16 {
        stream.write_all(&vec![0x90; length / 16]).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..read]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&head[..read])
    );

    // Chunked, with no length declared: found out while reading.
    let body = vec![0x90; 100 * 1024];
    let reply = send(device.signed(&gateway.url(""), "POST", "/v1/sync/batches", &body), &body);
    assert_eq!((reply.status, reply.error_code().as_str()), (413, "payload_too_large"));
}

fn a_device_over_its_mailbox_gets_429_with_retry_after(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[("OTG_DEVICE_MAILBOX_CAPACITY", "1")]);
    let device = gateway.enrol("dev-flood", "acme", Some("emp-1"));
    let mut busy = None;
    for round in 0..20 {
        let replies: Vec<Reply> = std::thread::scope(|scope| {
            let uploads: Vec<_> = (0..12)
                .map(|slot| {
                    let (gateway, device) = (&gateway, &device);
                    scope.spawn(move || {
                        let first = (round * 12 + slot) * 500 + 1;
                        let records = (first..first + 500).map(|seq| record(seq, "emp-1")).collect();
                        gateway.upload(device, &batch(&device.id, "b", records))
                    })
                })
                .collect();
            uploads.into_iter().map(|upload| upload.join().unwrap()).collect()
        });
        for reply in &replies {
            assert!(reply.status == 200 || reply.status == 429, "{}: {}", reply.status, reply.text());
        }
        if let Some(reply) = replies.into_iter().find(|reply| reply.status == 429) {
            busy = Some(reply);
            break;
        }
    }
    let busy = busy.expect("a flood of one device's batches hits its mailbox bound");
    assert_eq!(busy.error_code(), "device_busy");
    assert!(busy.retry_after.as_deref().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(busy.json()["retry_after_ms"].as_u64().unwrap() >= 1000);
}

fn device_reads_config_and_status(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[]);
    let device = gateway.enrol("dev-reads", "acme", Some("emp-1"));
    let config: DeviceConfig = gateway.device_get(&device, "/v1/sync/config").msgpack();
    assert_eq!((config.max_offline_days, config.storage_limit_bytes, config.max_batch_records), (7, 104_857_600, 500));
    assert!(!config.sync_on_wifi_only && config.auto_retry);
    assert_eq!(config.sync_priorities, RecordKind::ALL.to_vec());

    let status: DeviceStatus = gateway.device_get(&device, "/v1/sync/status").msgpack();
    assert_eq!((status.next_seq, status.last_sync_at), (1, None));
    gateway.upload_ok(&device, &batch(&device.id, "b-1", vec![record(1, "emp-1")]));
    let status: DeviceStatus = gateway.device_get(&device, "/v1/sync/status").msgpack();
    assert_eq!(status.next_seq, 2);
    assert!(status.last_sync_at.unwrap() > now_ms() - 60_000);

    let unsigned = send(ureq::get(&gateway.url("/v1/sync/status")), b"");
    assert_eq!(unsigned.status, 401);
}

fn enrolment_and_revocation(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[]);
    let device = gateway.enrol("dev-admin", "acme", Some("emp-1"));
    assert_eq!(device.secret.0.len(), 32);

    let again = gateway.admin(
        "POST",
        "/v1/admin/devices",
        Some(serde_json::json!({"device_id": "dev-admin", "org_id": "acme"})),
    );
    assert_eq!((again.status, again.error_code().as_str()), (409, "already_exists"));

    let shown = gateway.admin("GET", "/v1/admin/devices/dev-admin", None);
    assert_eq!(shown.status, 200);
    let view = shown.json();
    assert_eq!(
        (view["org_id"].as_str(), view["employee_id"].as_str(), view["status"].as_str()),
        (Some("acme"), Some("emp-1"), Some("active"))
    );
    assert!(
        view.get("secret").is_none() && !shown.text().contains(&device.secret.to_base64()),
        "the secret is never shown again"
    );

    let revoked = gateway.admin("DELETE", "/v1/admin/devices/dev-admin", None);
    assert_eq!((revoked.status, revoked.json()["status"].as_str()), (200, Some("revoked")));
    assert_eq!(gateway.admin("GET", "/v1/admin/devices/dev-admin", None).json()["status"], "revoked");
    assert_eq!(gateway.admin("GET", "/v1/admin/devices/nobody", None).status, 404);
    assert_eq!(gateway.admin("DELETE", "/v1/admin/devices/nobody", None).status, 404);

    let no_token = send(ureq::get(&gateway.url("/v1/admin/devices/dev-admin")), b"");
    assert_eq!((no_token.status, no_token.error_code().as_str()), (401, "unauthorized"));
    let wrong_token =
        send(ureq::get(&gateway.url("/v1/admin/devices/dev-admin")).set("Authorization", "Bearer nope"), b"");
    assert_eq!(wrong_token.status, 401);
    let bad_id =
        gateway.admin("POST", "/v1/admin/devices", Some(serde_json::json!({"device_id": "", "org_id": "acme"})));
    assert_eq!((bad_id.status, bad_id.error_code().as_str()), (400, "bad_request"));
    let not_json = send(
        ureq::post(&gateway.url("/v1/admin/devices"))
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .set("Content-Type", "text/plain"),
        b"{}",
    );
    assert_eq!(not_json.status, 415);
}

fn health_readiness_and_metrics(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[]);
    assert_eq!(send(ureq::get(&gateway.url("/healthz")), b"").status, 200);
    assert_eq!(send(ureq::get(&gateway.url("/readyz")), b"").status, 200);
    let device = gateway.enrol("dev-metrics", "acme", None);
    gateway.upload_ok(&device, &batch(&device.id, "b-1", vec![record(1, "emp-1"), record(2, "emp-1")]));
    let metrics = send(ureq::get(&gateway.url("/metrics")), b"").text();
    assert!(metrics.contains("otg_ingest_records_total{status=\"accepted\"} 2"), "{metrics}");
    assert!(metrics.contains("otg_ingest_batches_total{outcome=\"ok\"} 1"), "{metrics}");
    assert_eq!(gateway.metric("otg_device_actors_active"), 1.0);
    assert_eq!(send(ureq::get(&gateway.url("/nowhere")), b"").status, 404);
}

fn an_acked_batch_says_where_its_time_went(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[]);
    let device = gateway.enrol("dev-timing", "acme", None);
    let started = std::time::Instant::now();
    let reply = gateway.upload(&device, &batch(&device.id, "b-1", vec![record(1, "emp-1"), record(2, "emp-2")]));
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let header = reply.server_timing.expect("a Server-Timing header");
    let stages: Vec<(&str, f64)> = header
        .split(", ")
        .map(|metric| {
            let (name, duration) = metric.split_once(";dur=").unwrap_or_else(|| panic!("{header}"));
            (name, duration.parse().unwrap_or_else(|_| panic!("{header}")))
        })
        .collect();
    let names: Vec<&str> = stages.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["admission", "queue", "placement", "commit", "answer", "total"], "{header}");
    let (parts, total) = (stages[..5].iter().map(|(_, ms)| ms).sum::<f64>(), stages[5].1);
    // Each figure is rounded to 0.01 ms.
    assert!((parts - total).abs() < 0.05, "the stages add up to the total: {header}");
    assert!(total > 0.0 && total <= took_ms, "the gateway's total is within what the device saw: {header}");

    // Records of four days ago make a backlog batch; each of its stages was observed once.
    let metrics = send(ureq::get(&gateway.url("/metrics")), b"").text();
    for stage in ["admission", "queue", "placement", "commit", "answer"] {
        let count = metrics.lines().find(|line| {
            line.starts_with("otg_ingest_batch_stage_seconds_count{")
                && line.contains(&format!("stage=\"{stage}\""))
                && line.contains("priority=\"backlog\"")
        });
        assert!(count.is_some_and(|line| line.ends_with(" 1")), "{stage}: {count:?}");
    }
}

fn a_clean_restart_keeps_everything_and_a_resend_is_all_duplicate(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = store.start(dir.path(), &[]);
    let device = gateway.enrol("dev-restart", "acme", Some("emp-1"));
    let body = batch(&device.id, "b-1", (1..=50).map(|seq| record(seq, "emp-1")).collect());
    gateway.upload_ok(&device, &body);
    assert!(gateway.terminate().success(), "SIGTERM exits 0");

    let gateway = store.start(dir.path(), &[]);
    let response = gateway.upload_ok(&device, &body);
    assert_eq!(statuses(&response), vec![(AckStatus::Duplicate, None); 50]);
    assert_eq!(response.next_seq, 51);
}

fn an_evicted_device_actor_resumes_from_the_store(store: &TestStore) {
    let (gateway, _dir) = gateway(store, &[("OTG_DEVICE_IDLE_TIMEOUT_MS", "200")]);
    let device = gateway.enrol("dev-idle", "acme", Some("emp-1"));
    let first = batch(&device.id, "b-1", vec![record(1, "emp-1"), record(2, "emp-1"), record(4, "emp-1")]);
    gateway.upload_ok(&device, &first);
    assert!(
        eventually(Duration::from_secs(10), || gateway.metric("otg_device_actors_active") == 0.0),
        "the idle actor stops"
    );
    assert!(gateway.metric("otg_device_actors_evicted_total") >= 1.0);

    let response = gateway.upload_ok(&device, &first);
    assert_eq!(statuses(&response), vec![(AckStatus::Duplicate, None); 3]);
    assert_eq!(response.next_seq, 3, "the gap at 3 is remembered");
    let response = gateway.upload_ok(&device, &batch(&device.id, "b-2", vec![record(3, "emp-1"), record(5, "emp-1")]));
    assert_eq!(statuses(&response), vec![(AckStatus::Accepted, None); 2]);
    assert_eq!(response.next_seq, 6);
}
