//! Nothing acked is lost and nothing is stored twice: the gateway is killed with
//! `kill -9` in the middle of many devices' uploads, restarted on the same data dir,
//! and every record is sent again.

mod support;

use otg_schema::wire::{AckStatus, DeviceStatus, Record};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::*;

const DEVICES: usize = 16;
const RECORDS_PER_BATCH: i64 = 40;

/// What one device sent before the kill, batch by batch, and whether each was acked.
struct Sent {
    device: TestDevice,
    batches: Vec<(Vec<Record>, bool)>,
}

#[test]
fn kill_9_mid_ingest_loses_no_acked_record_and_half_writes_no_batch() {
    kill_9_mid_ingest(Recorded::DaysAgo, &[], |_| {});
}

/// The same on a CQL cluster: an ack means the batch's writes reached the cluster.
#[test]
fn kill_9_mid_ingest_on_the_cql_store_loses_no_acked_record() {
    let Some(keyspace) = ScyllaKeyspace::create() else { return };
    kill_9_mid_ingest(Recorded::DaysAgo, &keyspace.settings(), |_| {});
}

/// Live batches are acked from the live log, before the tables have them: the restart
/// must apply every acked one, once.
#[test]
fn kill_9_mid_live_ingest_loses_no_acked_record_and_half_writes_no_batch() {
    kill_9_mid_ingest(Recorded::Now, &[], |gateway| {
        let metrics = send(ureq::get(&gateway.url("/metrics")), b"").text();
        let logged = metrics.lines().find_map(|line| line.strip_prefix("otg_store_live_log_duration_seconds_count "));
        assert!(logged.is_some_and(|count| count != "0"), "the batches were acked from the live log");
    });
}

/// Kills the gateway (started with `settings`) with `-9` once 100 batches were acked
/// (and `before_kill` looked at it), restarts it on the same data dir and store, and
/// checks every batch sent.
fn kill_9_mid_ingest(recorded: Recorded, settings: &[(&str, &str)], before_kill: impl FnOnce(&Gateway)) {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path(), settings);
    let devices: Vec<TestDevice> = (0..DEVICES).map(|n| gateway.enrol(&format!("crash-{n}"), "acme", None)).collect();
    let sent = upload_until(&gateway.base_url.clone(), &devices, 100, recorded, || {
        before_kill(&gateway);
        gateway.kill_hard()
    });
    check_after_restart(&Gateway::start(dir.path(), settings), &sent);
}

#[test]
fn sigint_mid_ingest_acks_in_flight_batches_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path(), &[]);
    let devices: Vec<TestDevice> = (0..DEVICES).map(|n| gateway.enrol(&format!("drain-{n}"), "acme", None)).collect();
    let mut exit = None;
    let sent = upload_until(&gateway.base_url.clone(), &devices, 100, Recorded::DaysAgo, || {
        exit = Some(gateway.stop_with(libc::SIGINT))
    });
    assert!(exit.unwrap().success(), "SIGINT drains and exits 0");
    check_after_restart(&Gateway::start(dir.path(), &[]), &sent);
}

/// When the records were recorded: days ago (backlog batches) or now (live ones).
#[derive(Clone, Copy)]
enum Recorded {
    DaysAgo,
    Now,
}

/// Every device uploads back to back until `acked` batches were acked in all; then
/// `stop` acts on the gateway, and each device goes on until its gateway stops answering.
fn upload_until(
    base_url: &str,
    devices: &[TestDevice],
    acked: usize,
    recorded: Recorded,
    stop: impl FnOnce(),
) -> Vec<Sent> {
    let acked_batches = AtomicUsize::new(0);
    let stopped = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let uploaders: Vec<_> = devices
            .iter()
            .map(|device| {
                let (acked_batches, stopped) = (&acked_batches, &stopped);
                scope.spawn(move || upload_until_refused(base_url, device, recorded, acked_batches, stopped))
            })
            .collect();
        assert!(eventually(Duration::from_secs(60), || acked_batches.load(Ordering::Relaxed) >= acked));
        stop();
        stopped.store(true, Ordering::Relaxed);
        uploaders.into_iter().map(|uploader| uploader.join().unwrap()).collect()
    })
}

/// Sends every batch again, in order: each acked one must come back all `duplicate`,
/// each unacked one whole (all stored or none), and `next_seq` must follow the last.
fn check_after_restart(gateway: &Gateway, sent: &[Sent]) {
    for Sent { device, batches } in sent {
        for (index, (records, acked)) in batches.iter().enumerate() {
            let response = gateway.upload_ok(device, &batch(&device.id, &format!("again-{index}"), records.clone()));
            let statuses: HashSet<AckStatus> = response.acks.iter().map(|ack| ack.status).collect();
            if *acked {
                assert_eq!(
                    statuses,
                    HashSet::from([AckStatus::Duplicate]),
                    "{}: acked batch {index} was lost",
                    device.id
                );
            } else {
                let stored = response.acks.iter().filter(|ack| ack.status == AckStatus::Duplicate).count();
                assert!(
                    stored == 0 || stored == records.len(),
                    "{}: unacked batch {index} was half-written: {statuses:?}",
                    device.id
                );
            }
        }
        let last_seq = batches.last().map_or(0, |(records, _)| records.last().unwrap().seq);
        let status: DeviceStatus = gateway.device_get(device, "/v1/sync/status").msgpack();
        assert_eq!(status.next_seq, last_seq as u64 + 1, "{}: every seq is stored once, with no gap", device.id);
    }
}

/// Uploads one device's batches back to back until the gateway refuses the connection.
fn upload_until_refused(
    base_url: &str,
    device: &TestDevice,
    recorded: Recorded,
    acked_batches: &AtomicUsize,
    stop: &AtomicBool,
) -> Sent {
    let mut batches = Vec::new();
    let mut next_seq = 1;
    while !stop.load(Ordering::Relaxed) {
        let records: Vec<Record> = (next_seq..next_seq + RECORDS_PER_BATCH)
            .map(|seq| match recorded {
                Recorded::DaysAgo => record(seq, "emp-1"),
                Recorded::Now => Record { recorded_at: now_ms(), offline: Some(false), ..record(seq, "emp-1") },
            })
            .collect();
        next_seq += RECORDS_PER_BATCH;
        let body = batch(&device.id, "b", records.clone());
        let request = device.signed(base_url, "POST", "/v1/sync/batches", &body).timeout(Duration::from_secs(20));
        let acked = match request.send_bytes(&body) {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                true
            }
            Err(ureq::Error::Status(status, _)) => panic!("unexpected status {status} before the kill"),
            Err(ureq::Error::Transport(_)) => false,
        };
        batches.push((records, acked));
        if !acked {
            break;
        }
        acked_batches.fetch_add(1, Ordering::Relaxed);
    }
    Sent { device: device.clone(), batches }
}

/// A tmpfs of a few MiB, unmounted when dropped.
struct SmallDisk {
    path: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts one (root only: CI runs as root; elsewhere the test says it was skipped).
    fn mount(mib: u32) -> Option<SmallDisk> {
        let path = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path.path())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted && std::env::var_os("CI").is_some() {
            panic!("CI runs as root and must be able to mount a tmpfs for this test");
        }
        mounted.then_some(SmallDisk { path })
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        while file.write_all(&[0u8; 64 * 1024]).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.path.path()).status();
    }
}

#[test]
fn a_full_disk_answers_503_acks_nothing_and_loses_nothing_acked() {
    let Some(disk) = SmallDisk::mount(64) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data_dir = disk.path.path().join("otg");
    let mut gateway = Gateway::start(&data_dir, &[]);
    let device = gateway.enrol("dev-full", "acme", None);
    let acked = batch(&device.id, "b-1", (1..=20).map(|seq| record(seq, "emp-1")).collect());
    gateway.upload_ok(&device, &acked);

    let filler = disk.fill();
    // Buffers may absorb a few batches: keep uploading until the full disk bites.
    let mut acked = vec![acked];
    let (refused, reply) = loop {
        assert!(acked.len() < 200, "a full disk never made a write fail");
        let first = acked.len() as i64 * 20 + 1;
        let body = batch(&device.id, "b-next", (first..first + 20).map(|seq| record(seq, "emp-1")).collect());
        let reply = gateway.upload(&device, &body);
        if reply.status != 200 {
            break (body, reply);
        }
        acked.push(body);
    };
    assert_eq!((reply.status, reply.error_code().as_str()), (503, "store_unavailable"), "{}", reply.text());
    assert!(reply.retry_after.is_some() && reply.json()["retry_after_ms"].as_u64().is_some());
    assert_eq!(send(ureq::get(&gateway.url("/readyz")), b"").status, 503, "a failed store is not ready");
    assert_eq!(gateway.upload(&device, &acked[0]).status, 503, "after a failed write nothing more is acked");

    gateway.kill_hard();
    std::fs::remove_file(filler).unwrap();
    let gateway = Gateway::start(&data_dir, &[]);
    for body in &acked {
        let response = gateway.upload_ok(&device, body);
        assert!(
            response.acks.iter().all(|ack| ack.status == AckStatus::Duplicate),
            "acked before the disk filled, kept after"
        );
    }
    let response = gateway.upload_ok(&device, &refused);
    let stored = response.acks.iter().filter(|ack| ack.status == AckStatus::Duplicate).count();
    assert!(
        stored == 0 || stored == response.acks.len(),
        "the refused batch is whole or absent: {stored} of it stored"
    );
}
