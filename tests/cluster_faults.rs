//! Faults of the CQL cluster under a running gateway: three Apache Cassandra nodes,
//! replication factor 3, every read and write at `LOCAL_QUORUM`.
//!
//! One node killed with `-9` in the middle of many devices' uploads: ingest goes on,
//! and every acked record is there afterwards. A second node killed: the gateway
//! answers 503 with `Retry-After`, acks nothing, and `/readyz` turns red; once the node
//! is back the gateway serves again by itself.
//!
//! It needs the three-node cluster that the test command's second phase starts
//! (`CQL_FAULT_TESTS=1`, `scripts/cassandra up --nodes 3`), and kills and restarts
//! its nodes with `scripts/cassandra kill N` / `start N`. Elsewhere it says it was
//! skipped.

mod support;

use otg_schema::wire::{AckStatus, DeviceStatus, Record};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;

const DEVICES: usize = 8;
const RECORDS_PER_BATCH: i64 = 20;

/// Runs `scripts/cassandra` with `args`, which must succeed.
fn cassandra(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cassandra");
    let status = std::process::Command::new(script).args(args).status().expect("run scripts/cassandra");
    assert!(status.success(), "scripts/cassandra {args:?} failed");
}

/// What one device uploaded: each batch's records, and whether it was acked.
struct Uploaded {
    device: TestDevice,
    batches: Vec<(Vec<Record>, bool)>,
}

/// Uploads one device's batches back to back until `stop`, sending a refused batch
/// again after its `Retry-After`, as the device library does.
fn upload_until(gateway: &Gateway, device: &TestDevice, acked: &AtomicUsize, stop: &AtomicBool) -> Uploaded {
    let (mut batches, mut next_seq) = (Vec::new(), 1);
    let mut records: Vec<Record> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if records.is_empty() {
            records = (next_seq..next_seq + RECORDS_PER_BATCH).map(|seq| record(seq, "emp-1")).collect();
            next_seq += RECORDS_PER_BATCH;
        }
        let reply = gateway.upload(device, &batch(&device.id, "b", records.clone()));
        match reply.status {
            200 => {
                batches.push((std::mem::take(&mut records), true));
                acked.fetch_add(1, Ordering::Relaxed);
            }
            429 | 503 => {
                let wait: u64 = reply.retry_after.expect("a refusal says when to come back").parse().unwrap();
                std::thread::sleep(Duration::from_secs(wait.min(2)));
            }
            other => panic!("{}: unexpected status {other}: {}", device.id, reply.text()),
        }
    }
    if !records.is_empty() {
        batches.push((records, false));
    }
    Uploaded { device: device.clone(), batches }
}

#[test]
fn a_node_down_loses_nothing_acked_and_two_down_are_503_until_one_returns() {
    if std::env::var_os("CQL_FAULT_TESTS").is_none() {
        eprintln!("skipped: runs on the three-node cluster of the test command's second phase (CQL_FAULT_TESTS=1)");
        return;
    }
    let keyspace = ScyllaKeyspace::create().expect("OTG_SCYLLA_NODES names the three-node cluster");
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path(), &keyspace.settings());
    let devices: Vec<TestDevice> = (0..DEVICES).map(|n| gateway.enrol(&format!("fault-{n}"), "acme", None)).collect();

    // One node killed mid-upload: ingest goes on.
    let (acked, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
    let uploaded: Vec<Uploaded> = std::thread::scope(|scope| {
        let uploaders: Vec<_> = devices
            .iter()
            .map(|device| {
                let (gateway, acked, stop) = (&gateway, &acked, &stop);
                scope.spawn(move || upload_until(gateway, device, acked, stop))
            })
            .collect();
        assert!(eventually(Duration::from_secs(60), || acked.load(Ordering::Relaxed) >= 40));
        cassandra(&["kill", "3"]);
        let at_kill = acked.load(Ordering::Relaxed);
        assert!(
            eventually(Duration::from_secs(90), || acked.load(Ordering::Relaxed) >= at_kill + 80),
            "ingest goes on with one node of three down"
        );
        stop.store(true, Ordering::Relaxed);
        uploaders.into_iter().map(|uploader| uploader.join().unwrap()).collect()
    });

    // A second node down: no quorum. Nothing is acked; 503 with Retry-After.
    cassandra(&["kill", "2"]);
    let device = &devices[0];
    let next = uploaded[0].batches.iter().map(|(records, _)| records.len() as i64).sum::<i64>() + 1;
    let refused: Vec<Record> = (next..next + RECORDS_PER_BATCH).map(|seq| record(seq, "emp-1")).collect();
    let started = Instant::now();
    for attempt in 0..3 {
        let reply = gateway.upload(device, &batch(&device.id, "no-quorum", refused.clone()));
        assert_eq!(reply.status, 503, "attempt {attempt}: without a quorum nothing is acked: {}", reply.text());
        assert_eq!(reply.error_code(), "store_unavailable");
        assert!(reply.retry_after.is_some(), "a 503 says when to come back");
    }
    assert!(
        eventually(Duration::from_secs(60), || send(ureq::get(&gateway.url("/readyz")), b"").status == 503),
        "/readyz is red without a quorum"
    );
    eprintln!("two nodes down: refused for {:?}", started.elapsed());

    // One node back: the gateway recovers by itself.
    cassandra(&["start", "2"]);
    assert!(
        eventually(Duration::from_secs(90), || gateway
            .upload(device, &batch(&device.id, "back", refused.clone()))
            .status
            == 200),
        "the gateway serves again once a quorum is back"
    );
    assert_eq!(send(ureq::get(&gateway.url("/readyz")), b"").status, 200);
    cassandra(&["start", "3"]);

    // Every acked record is there: sent again, each one is a duplicate.
    for Uploaded { device, batches } in &uploaded {
        for (index, (records, acked)) in batches.iter().enumerate() {
            let response = gateway.upload_ok(device, &batch(&device.id, &format!("again-{index}"), records.clone()));
            let statuses: HashSet<AckStatus> = response.acks.iter().map(|ack| ack.status).collect();
            if *acked {
                assert_eq!(statuses, HashSet::from([AckStatus::Duplicate]), "{}: acked batch {index} lost", device.id);
            }
        }
        let status: DeviceStatus = gateway.device_get(device, "/v1/sync/status").msgpack();
        let sent: i64 = batches.iter().map(|(records, _)| records.len() as i64).sum();
        let extra = if device.id == devices[0].id { RECORDS_PER_BATCH } else { 0 };
        assert_eq!(status.next_seq, (sent + extra) as u64 + 1, "{}: every seq stored once, no gap", device.id);
    }
}
