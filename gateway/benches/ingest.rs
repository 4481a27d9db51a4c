//! End-to-end ingest over loopback, beside the store's raw group-commit ceiling, in one
//! run so the two figures share the machine's mood.
//!
//! `cargo bench -p otg-gateway --bench ingest` (env: `BENCH_SECONDS`, default 10, per
//! phase; `BENCH_ROUNDS`, default 3; `BENCH_STORE`, `embedded` (default) or `scylla`,
//! which measures the CQL cluster named by `OTG_SCYLLA_NODES`, each run on a fresh
//! keyspace replicated to every node up to three).
//!
//! 1. ceiling: 64 concurrent writers commit the kiosks' 100-record days (below), each
//!    with its audit entry and counts, straight into the store: the statements a batch's
//!    commit makes, with no HTTP, no decode, no signature, no conflict check;
//! 2. saturated, in `BENCH_ROUNDS` rounds: 64 site kiosks upload signed 100-record
//!    batches back to back to the real `otg-gateway` binary (a day of 25 employees each:
//!    check-in, break, check-out; 5% of the records conflicting), once with conflict
//!    detection and once without; durably-acked records/s and batch latency. Alternating
//!    the two spreads the shared machine's drift over both, and each round gives the
//!    check's cost;
//! 3. paced: the same load at a fixed `BENCH_PACED_RATE` records/s (default 50,000),
//!    with detection and without, for the latency at that rate.

#[path = "../../tests/support/mod.rs"]
mod support;

use hdrhistogram::Histogram;
use otg_actors::metrics::StoreMetrics;
use otg_actors::store::{
    AuditEvent, AuditKind, Commit, DeviceProgress, DeviceWrite, EmbeddedStore, EmbeddedStoreOptions, ScyllaStore,
    ScyllaStoreOptions, SeqEntry, Store, StoredRecord, SyncCounts, SyncTotals,
};
use otg_actors::SeqRanges;
use otg_schema::signing::{DEVICE_ID_HEADER, REQUEST_TIME_HEADER, SIGNATURE_HEADER};
use otg_schema::validate::{check_record, RecordRules};
use otg_schema::wire::{self, AckStatus, Batch, BatchResponse, Geo, Record};
use otg_schema::DeviceSecret;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::ScyllaKeyspace;

const CONCURRENT_DEVICES: usize = 64;
const RECORDS_PER_BATCH: i64 = 100;
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: skip the long run then.
    if !std::env::args().any(|argument| argument == "--bench") {
        return;
    }
    let setting = |name: &str, default: u64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let run_for = Duration::from_secs(setting("BENCH_SECONDS", 10));
    let rounds = setting("BENCH_ROUNDS", 3).max(1);

    let store = BenchStore::from_environment();
    if let BenchStore::Scylla = store {
        // A cluster's JVMs just started compile as they go: the first seconds of load
        // would make whichever phase runs first look slow.
        let warm_up = store_ceiling(run_for, &store);
        println!("warm-up (not counted): {:.0} records/s", warm_up.records_per_second);
    }
    let ceiling = store_ceiling(run_for, &store);
    let saturated: Vec<(RunFigures, RunFigures)> = (0..rounds)
        .map(|_| (over_http(run_for, None, true, &store), over_http(run_for, None, false, &store)))
        .collect();
    let paced_rate = setting("BENCH_PACED_RATE", 50_000);
    let paced = over_http(run_for, Some(paced_rate), true, &store);
    let paced_unchecked = over_http(run_for, Some(paced_rate), false, &store);

    println!("\n| measurement | records/s | batch p50 | batch p99 | gateway CPU | conflict acks |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut runs = vec![("store group-commit ceiling (no HTTP)".to_owned(), &ceiling)];
    for (round, (checked, unchecked)) in saturated.iter().enumerate() {
        runs.push((format!("round {}: end to end, 64 kiosks, saturated", round + 1), checked));
        runs.push((format!("round {}: the same, conflict detection off", round + 1), unchecked));
    }
    runs.push((format!("end to end, paced at {paced_rate} records/s"), &paced));
    runs.push((format!("end to end, paced at {paced_rate} records/s, conflict detection off"), &paced_unchecked));
    for (name, run) in runs {
        let cores = run.gateway_cores.map_or("-".into(), |cores| format!("{cores:.2} cores"));
        let conflicts = run.conflict_share.map_or("-".into(), |share| format!("{:.1}%", share * 100.0));
        println!(
            "| {name} | {:.0} | {:.1} ms | {:.1} ms | {cores} | {conflicts} |",
            run.records_per_second, run.p50_ms, run.p99_ms
        );
    }
    let checked: f64 = saturated.iter().map(|(checked, _)| checked.records_per_second).sum::<f64>() / rounds as f64;
    let unchecked: f64 =
        saturated.iter().map(|(_, unchecked)| unchecked.records_per_second).sum::<f64>() / rounds as f64;
    let costs: Vec<String> = saturated
        .iter()
        .map(|(checked, unchecked)| {
            format!("{:.0}%", 100.0 * (1.0 - checked.records_per_second / unchecked.records_per_second))
        })
        .collect();
    println!("\nend-to-end (checked, mean of rounds) / ceiling = {:.2}", checked / ceiling.records_per_second);
    println!(
        "conflict check: {:.0}% of the throughput without it (mean of rounds; by round: {})",
        100.0 * (1.0 - checked / unchecked),
        costs.join(", ")
    );
}

/// The store measured.
enum BenchStore {
    Embedded,
    /// The CQL cluster `OTG_SCYLLA_NODES` names.
    Scylla,
}

impl BenchStore {
    fn from_environment() -> Self {
        match std::env::var("BENCH_STORE").as_deref() {
            Ok("scylla") => BenchStore::Scylla,
            Ok("embedded") | Err(_) => BenchStore::Embedded,
            Ok(other) => panic!("BENCH_STORE={other}: embedded or scylla"),
        }
    }

    /// For the CQL store, a fresh keyspace, migrated and dropped after the run (the
    /// tests' own): each run starts empty, and the many tables of many runs never fill
    /// a small node's heap.
    fn keyspace(&self) -> Option<ScyllaKeyspace> {
        match self {
            BenchStore::Embedded => None,
            BenchStore::Scylla => Some(ScyllaKeyspace::create().expect("BENCH_STORE=scylla needs OTG_SCYLLA_NODES")),
        }
    }

    /// The store, opened on its own: for the ceiling.
    async fn open(&self, dir: &std::path::Path) -> (Arc<dyn Store>, Option<ScyllaKeyspace>) {
        let Some(keyspace) = self.keyspace() else {
            let metrics = StoreMetrics::register(&prometheus::Registry::new()).unwrap();
            return (Arc::new(EmbeddedStore::open(EmbeddedStoreOptions::new(dir), metrics).unwrap()), None);
        };
        let nodes = keyspace.nodes.split(',').map(String::from).collect();
        let store = ScyllaStore::open(&ScyllaStoreOptions::new(nodes, keyspace.name.clone())).await.unwrap();
        (Arc::new(store), Some(keyspace))
    }
}

struct RunFigures {
    records_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Cores the gateway process used on average (startup and enrolment included).
    gateway_cores: Option<f64>,
    /// The share of records acked `conflict`.
    conflict_share: Option<f64>,
}

impl RunFigures {
    fn from(records: u64, took: Duration, latencies: &Histogram<u64>) -> Self {
        RunFigures {
            records_per_second: records as f64 / took.as_secs_f64(),
            p50_ms: latencies.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
            gateway_cores: None,
            conflict_share: None,
        }
    }
}

/// A site kiosk's batch: one day of 25 employees, each checking in at 08:00, taking a
/// break from 12:00 to 12:30 and checking out at 17:00, except that every fifth
/// employee-day has a second check-in 30 s after the first instead of the break's end
/// (a duplicate: 5% of the records conflict). Batch `n` is the `n`-th day back.
fn kiosk_day(device: usize, batch: i64, first_seq: i64, now: i64) -> Vec<Record> {
    const HOUR: i64 = 3_600_000;
    let day_start = (now / (24 * HOUR) - 1 - batch % 300) * 24 * HOUR;
    let group = batch / 300;
    let mut records = Vec::with_capacity(RECORDS_PER_BATCH as usize);
    for employee in 0..25i64 {
        let employee_id = format!("k{device}-e{}", group * 25 + employee);
        let duplicate = (batch * 25 + employee) % 5 == 0;
        let day = [
            ("check_in", 8 * HOUR),
            ("break_start", 12 * HOUR),
            if duplicate { ("check_in", 8 * HOUR + 30_000) } else { ("break_end", 12 * HOUR + HOUR / 2) },
            ("check_out", 17 * HOUR),
        ];
        for (kind, at) in day {
            let seq = first_seq + records.len() as i64;
            records.push(Record {
                offline: Some(true),
                geo: Some(Geo { lat: 52.52, lon: 13.405, accuracy_m: 8.5 }),
                ..Record::new(seq, uuid::Uuid::new_v4().to_string(), kind, employee_id.clone(), day_start + at)
            });
        }
    }
    records
}

/// The kiosks' 100-record commits (their records, all active, in 25 employees'
/// timelines), written by 64 concurrent writers straight to the store.
fn store_ceiling(run_for: Duration, bench_store: &BenchStore) -> RunFigures {
    let dir = tempfile::tempdir().unwrap();
    // The keyspace is dropped after the runtime ends: dropping it runs a runtime of its own.
    let (figures, _keyspace) = actix_web::rt::System::new().block_on(async move {
        let (store, keyspace) = bench_store.open(dir.path()).await;
        let now = chrono::Utc::now().timestamp_millis();
        let rules = RecordRules { now_ms: now, max_offline_days: 365, enrolled_employee: None };
        let started = Instant::now();
        let writers: Vec<_> = (0..CONCURRENT_DEVICES)
            .map(|writer| {
                let store = store.clone();
                actix_web::rt::spawn(async move {
                    let device_id = format!("ceiling-{writer}");
                    let (mut latencies, mut written, mut received) = (latency_histogram(), 0u64, SeqRanges::default());
                    while started.elapsed() < run_for {
                        let first_seq = written as i64 + 1;
                        let batch = first_seq / RECORDS_PER_BATCH;
                        let entries: Vec<SeqEntry> = kiosk_day(writer, batch, first_seq, now)
                            .into_iter()
                            .map(|record| {
                                received.insert(record.seq as u64);
                                SeqEntry::Stored(StoredRecord {
                                    device_id: device_id.clone(),
                                    org_id: "acme".into(),
                                    batch_id: "b".into(),
                                    received_at: now,
                                    record: check_record(record, &rules).unwrap(),
                                })
                            })
                            .collect();
                        let progress = DeviceProgress {
                            received: received.clone(),
                            last_sync_at: Some(now),
                            ..DeviceProgress::default()
                        };
                        // Epoch 0: a device nobody claimed, as the store's own tests write it.
                        let device = DeviceWrite {
                            device_id: device_id.clone(),
                            entries,
                            progress,
                            epoch: 0,
                            after: None,
                            was_waiting: false,
                        };
                        let audit = AuditEvent {
                            at: now + first_seq,
                            org_id: "acme".into(),
                            device_id: device_id.clone(),
                            event: AuditKind::BatchReceived {
                                batch_id: Some(format!("b-{first_seq}")),
                                outcome: "ok".into(),
                                http_status: 200,
                                latency_ms: 5,
                                records: RECORDS_PER_BATCH as u32,
                                acks: Vec::new(),
                            },
                        };
                        let totals = SyncTotals {
                            batches_succeeded: 1,
                            accepted: RECORDS_PER_BATCH as u64,
                            ..SyncTotals::default()
                        };
                        let commit = Commit {
                            stats: vec![SyncCounts::of(&audit, totals)],
                            audit: vec![audit],
                            ..Commit::of_device(device)
                        };
                        let commit_started = Instant::now();
                        store.commit(&commit).await.unwrap();
                        latencies.record(commit_started.elapsed().as_micros() as u64).unwrap();
                        written += RECORDS_PER_BATCH as u64;
                    }
                    (written, latencies)
                })
            })
            .collect();
        let (mut total, mut latencies) = (0, latency_histogram());
        for writer in writers {
            let (written, writer_latencies) = writer.await.unwrap();
            total += written;
            latencies.add(writer_latencies).unwrap();
        }
        let figures = RunFigures::from(total, started.elapsed(), &latencies);
        store.close().await.unwrap();
        (figures, keyspace)
    });
    figures
}

/// Kiosks upload over HTTP to a fresh gateway; paced to `rate` records/s when given.
fn over_http(run_for: Duration, rate: Option<u64>, detect_conflicts: bool, store: &BenchStore) -> RunFigures {
    let dir = tempfile::tempdir().unwrap();
    let keyspace = store.keyspace();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_otg-gateway"))
        .envs(keyspace.iter().flat_map(ScyllaKeyspace::settings))
        .env("OTG_LISTEN_ADDR", "127.0.0.1:0")
        .env("OTG_DATA_DIR", dir.path())
        .env("OTG_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("OTG_LOG", "warn")
        .env("OTG_CONFLICT_DETECTION", detect_conflicts.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let base_url = loop {
        if let Some(url) = lines.next().unwrap().unwrap().strip_prefix("otg-gateway listening on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));

    let agent = ureq::AgentBuilder::new().max_idle_connections_per_host(CONCURRENT_DEVICES).build();
    // A year of backlog is allowed: each kiosk's batches go back a day at a time.
    agent
        .put(&format!("{base_url}/v1/admin/orgs/acme/settings"))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send_json(serde_json::json!({"max_offline_days": 365}))
        .unwrap();
    let devices: Vec<(String, DeviceSecret)> = (0..CONCURRENT_DEVICES)
        .map(|n| {
            let device_id = format!("kiosk-{n}");
            let reply: serde_json::Value = agent
                .post(&format!("{base_url}/v1/admin/devices"))
                .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
                .send_json(serde_json::json!({"device_id": device_id, "org_id": "acme"}))
                .unwrap()
                .into_json()
                .unwrap();
            (device_id, DeviceSecret::from_base64(reply["secret"].as_str().unwrap()).unwrap())
        })
        .collect();

    // Each device's pace, if paced: batches per second split evenly over the devices.
    let batch_interval =
        rate.map(|rate| Duration::from_secs_f64(CONCURRENT_DEVICES as f64 * RECORDS_PER_BATCH as f64 / rate as f64));
    let started = Instant::now();
    let results: Vec<(u64, u64, Histogram<u64>)> = std::thread::scope(|scope| {
        let uploaders: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(index, (device_id, secret))| {
                let (agent, base_url) = (agent.clone(), base_url.as_str());
                scope.spawn(move || {
                    let (mut latencies, mut acked, mut conflicts, mut next_seq) = (latency_histogram(), 0u64, 0u64, 1);
                    // Devices are spread evenly over the interval, not sent in lockstep.
                    let offset = batch_interval
                        .map_or(Duration::ZERO, |interval| interval * index as u32 / CONCURRENT_DEVICES as u32);
                    let mut next_send = Instant::now() + offset;
                    while started.elapsed() < run_for {
                        if let Some(interval) = batch_interval {
                            std::thread::sleep(next_send.saturating_duration_since(Instant::now()));
                            next_send += interval;
                        }
                        let now = chrono::Utc::now().timestamp_millis();
                        let records = kiosk_day(index, next_seq / RECORDS_PER_BATCH, next_seq, now);
                        let body = wire::encode(&Batch {
                            pending: Some(0),
                            ..Batch::new(device_id.clone(), format!("b-{next_seq}"), now, records)
                        });
                        next_seq += RECORDS_PER_BATCH;
                        let request_time = now.to_string();
                        let signature = secret.sign("POST", "/v1/sync/batches", &request_time, &body);
                        let sent = Instant::now();
                        let response = agent
                            .post(&format!("{base_url}/v1/sync/batches"))
                            .set("Content-Type", "application/msgpack")
                            .set(DEVICE_ID_HEADER, device_id)
                            .set(REQUEST_TIME_HEADER, &request_time)
                            .set(SIGNATURE_HEADER, &signature)
                            .send_bytes(&body)
                            .expect("every batch is acked");
                        let mut reply = Vec::new();
                        std::io::Read::read_to_end(&mut response.into_reader(), &mut reply).unwrap();
                        latencies.record(sent.elapsed().as_micros() as u64).unwrap();
                        let acks: BatchResponse = wire::decode(&reply).unwrap();
                        conflicts += acks.acks.iter().filter(|ack| ack.status == AckStatus::Conflict).count() as u64;
                        acked += RECORDS_PER_BATCH as u64;
                    }
                    (acked, conflicts, latencies)
                })
            })
            .collect();
        uploaders.into_iter().map(|uploader| uploader.join().unwrap()).collect()
    });
    let took = started.elapsed();
    let gateway_cores = cpu_seconds(&format!("/proc/{}/stat", gateway.id())) / took.as_secs_f64();
    let (mut total, mut conflicts, mut latencies) = (0, 0, latency_histogram());
    for (acked, device_conflicts, device_latencies) in results {
        total += acked;
        conflicts += device_conflicts;
        latencies.add(device_latencies).unwrap();
    }
    unsafe { libc::kill(gateway.id() as i32, libc::SIGTERM) };
    assert!(gateway.wait().unwrap().success());
    let conflict_share = Some(conflicts as f64 / total.max(1) as f64);
    RunFigures { gateway_cores: Some(gateway_cores), conflict_share, ..RunFigures::from(total, took, &latencies) }
}

/// CPU seconds (user + system) a process has used, from its /proc stat file.
fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}
