//! The device library (`otg-client`) against the real gateway: it uploads its durable
//! queue in the org's priority order, deletes what is acked, survives an app restart,
//! honours Retry-After and the org's network and age settings.

mod support;

use otg_client::{Client, HttpTransport, MemoryQueue, Network, RecordQueue, SqliteQueue, SyncOutcome};
use otg_schema::wire::DeviceStatus;
use otg_schema::wire::{Leave, Record};
use std::time::Duration;
use support::*;

fn transport(gateway: &Gateway) -> HttpTransport {
    HttpTransport::new(&gateway.base_url, Duration::from_secs(10)).unwrap()
}

fn client<Q: RecordQueue>(gateway: &Gateway, device: &TestDevice, queue: Q) -> Client<Q, HttpTransport> {
    Client::new(device.id.clone(), device.secret.clone(), queue, transport(gateway))
}

fn event(kind: &str, minutes_ago: i64) -> Record {
    Record::new(0, uuid::Uuid::new_v4().to_string(), kind, "emp-1", now_ms() - minutes_ago * MINUTE_MS)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The seqs acked in each `batch_received` of the device's audit trail, in order.
fn batches_in_trail(gateway: &Gateway, device_id: &str) -> Vec<Vec<u64>> {
    let trail = gateway.admin("GET", &format!("/v1/admin/audit?device_id={device_id}"), None).json();
    trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["event"]["type"] == "batch_received")
        .map(|event| {
            event["event"]["acks"].as_array().unwrap().iter().map(|ack| ack["seq"].as_u64().unwrap()).collect()
        })
        .collect()
}

#[test]
fn the_queue_goes_up_in_priority_order_and_what_is_acked_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path(), &[]);
    gateway.admin("PUT", "/v1/admin/orgs/acme/settings", Some(serde_json::json!({"max_batch_records": 2})));
    let device = gateway.enrol("phone-1", "acme", Some("emp-1"));
    let mut leave = event("leave_request", 50);
    let today = otg_schema::UtcDay::of_unix_ms(now_ms() + 3 * 86_400_000);
    leave.leave = Some(Leave {
        from: today.date().to_string(),
        to: today.date().to_string(),
        leave_type: "vacation".into(),
        reason: None,
    });
    runtime().block_on(async {
        let mut client = client(&gateway, &device, SqliteQueue::open(&dir.path().join("queue.db")).unwrap());
        client.refresh_config().await.unwrap();
        assert_eq!(client.config().max_batch_records, 2);
        for record in
            [leave, event("check_in", 40), event("break_start", 30), event("break_end", 20), event("check_out", 10)]
        {
            client.record(record).unwrap();
        }
        assert_eq!(client.pending().unwrap(), 5);
        let report = client.sync_now(Some(Network::Wifi)).await.unwrap();
        assert_eq!(report.outcome, SyncOutcome::Drained);
        assert_eq!((report.acked(), report.pending, report.uploads.len()), (5, 0, 3));
        assert_eq!(report.to_show().count(), 0, "{report:?}");
        // Each upload keeps the gateway's word on where its time went.
        for upload in &report.uploads {
            assert!(upload.server_timing.as_deref().is_some_and(|timing| timing.contains("commit;dur=")), "{upload:?}");
        }
    });
    // Check-in and check-out first, then the breaks, the leave request (seq 1) last.
    assert_eq!(batches_in_trail(&gateway, "phone-1"), vec![vec![2, 5], vec![3, 4], vec![1]]);
    let status: DeviceStatus = gateway.device_get(&device, "/v1/sync/status").msgpack();
    assert_eq!(status.next_seq, 6);
}

#[test]
fn the_queue_survives_an_app_restart() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path(), &[]);
    let device = gateway.enrol("kiosk-1", "acme", None);
    let path = dir.path().join("queue.db");
    runtime().block_on(async {
        let mut before = client(&gateway, &device, SqliteQueue::open(&path).unwrap());
        for minutes_ago in [30, 20, 10] {
            before.record(event("check_in", minutes_ago)).unwrap();
        }
        drop(before);
        let mut after = client(&gateway, &device, SqliteQueue::open(&path).unwrap());
        assert_eq!(after.pending().unwrap(), 3, "nothing captured is lost");
        assert_eq!(after.record(event("check_out", 5)).unwrap(), 4, "seqs go on");
        let report = after.sync_now(Some(Network::Cellular)).await.unwrap();
        assert_eq!((report.outcome.clone(), report.acked()), (SyncOutcome::Drained, 4));
    });
    let status: DeviceStatus = gateway.device_get(&device, "/v1/sync/status").msgpack();
    assert_eq!(status.next_seq, 5);
}

#[test]
fn a_refusal_is_waited_out_before_the_next_upload() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path(), &[("OTG_DEVICE_BATCHES_PER_S", "1"), ("OTG_DEVICE_BATCH_BURST", "1")]);
    gateway.admin("PUT", "/v1/admin/orgs/acme/settings", Some(serde_json::json!({"max_batch_records": 1})));
    let device = gateway.enrol("kiosk-2", "acme", None);
    runtime().block_on(async {
        let mut client = client(&gateway, &device, MemoryQueue::default());
        client.refresh_config().await.unwrap();
        client.record(event("check_in", 2)).unwrap();
        client.record(event("check_out", 1)).unwrap();
        let first = client.sync_now(Some(Network::Wifi)).await.unwrap();
        let SyncOutcome::RetryIn(wait) = first.outcome else {
            panic!("the second batch is over the device's rate: {first:?}")
        };
        assert!(wait >= Duration::from_secs(1), "at least what the gateway said: {wait:?}");
        assert_eq!(
            (first.acked(), first.uploads.iter().map(|upload| upload.status).collect::<Vec<_>>()),
            (1, vec![200, 429])
        );
        let early = client.sync_now(Some(Network::Wifi)).await.unwrap();
        assert!(
            matches!(early.outcome, SyncOutcome::RetryIn(_)) && early.uploads.is_empty(),
            "nothing is sent before the wait: {early:?}"
        );
        tokio::time::sleep(wait).await;
        let after = client.sync_now(Some(Network::Wifi)).await.unwrap();
        assert_eq!((after.outcome.clone(), after.acked(), after.pending), (SyncOutcome::Drained, 1, 0));
    });
}

#[test]
fn org_settings_decide_when_and_what_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path(), &[]);
    gateway.admin(
        "PUT",
        "/v1/admin/orgs/acme/settings",
        Some(serde_json::json!({"sync_on_wifi_only": true, "max_offline_days": 2})),
    );
    let device = gateway.enrol("phone-2", "acme", Some("emp-1"));
    runtime().block_on(async {
        let mut client = client(&gateway, &device, MemoryQueue::default());
        client.refresh_config().await.unwrap();
        client.record(event("check_in", 3 * 24 * 60)).unwrap();
        client.record(event("check_in", 5)).unwrap();
        assert_eq!(client.sync_now(None).await.unwrap().outcome, SyncOutcome::Skipped("offline"));
        let cellular = client.sync_now(Some(Network::Cellular)).await.unwrap();
        assert!(matches!(cellular.outcome, SyncOutcome::Skipped(_)) && cellular.uploads.is_empty());
        let wifi = client.sync_now(Some(Network::Wifi)).await.unwrap();
        assert_eq!(
            (wifi.outcome.clone(), wifi.expired, wifi.acked()),
            (SyncOutcome::Drained, 1, 1),
            "the 3-day-old record is past the org's 2 days"
        );
    });
}

#[test]
fn an_unreachable_gateway_is_backed_off_and_nothing_is_dropped() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    runtime().block_on(async {
        let transport = HttpTransport::new(&format!("http://{address}"), Duration::from_secs(2)).unwrap();
        let secret = otg_schema::DeviceSecret([7; 32]);
        let mut client = Client::new("nowhere", secret, MemoryQueue::default(), transport);
        client.record(event("check_in", 1)).unwrap();
        let report = client.sync_now(Some(Network::Wifi)).await.unwrap();
        let SyncOutcome::RetryIn(wait) = report.outcome else { panic!("auto_retry backs off: {report:?}") };
        assert!(
            wait <= Duration::from_millis(client.config().retry_base_ms),
            "the first wait is within the base: {wait:?}"
        );
        assert_eq!((report.uploads[0].status, report.pending), (0, 1));
    });
}
