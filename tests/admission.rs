//! Admission through HTTP: a flood beyond the budget is shed with 429/503 and a
//! `Retry-After`, never lost; live batches get in while backlog waits; a device over its
//! rate gets 429; memory stays under the configured cap.

mod support;

use otg_schema::signing::PRIORITY_HEADER;
use otg_schema::wire::{AckStatus, BatchResponse, DeviceStatus, Record};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;

/// Checks a refusal is one of admission's, with both forms of its wait, and returns it.
fn retry_wait(reply: &Reply) -> Duration {
    assert!(matches!(reply.status, 429 | 503), "only 429 and 503 shed load, got {}: {}", reply.status, reply.text());
    let header: u64 = reply.retry_after.as_deref().expect("every 429 and 503 carries Retry-After").parse().unwrap();
    let millis = reply.json()["retry_after_ms"].as_u64().expect("and retry_after_ms in its body");
    assert!(header >= 1 && header * 1000 >= millis, "Retry-After {header} s rounds {millis} ms up");
    Duration::from_millis(millis)
}

fn live_check_in(seq: i64, employee_id: &str) -> Record {
    Record::new(seq, uuid::Uuid::new_v4().to_string(), "check_in", employee_id, now_ms())
}

/// A record days old whatever its seq (`record` moves ten minutes a seq, and a long
/// flood would reach the present, where records are live).
fn backlog_record(seq: i64, employee_id: &str) -> Record {
    Record { recorded_at: now_ms() - 72 * HOUR_MS + seq * 10_000, ..record(seq, employee_id) }
}

/// The count of `otg_admission_refused_total` for one reason and priority.
fn refused(gateway: &Gateway, reason: &str, priority: &str) -> f64 {
    let text = send(ureq::get(&gateway.url("/metrics")), b"").text();
    text.lines()
        .filter(|line| line.starts_with("otg_admission_refused_total{"))
        .filter(|line| {
            line.contains(&format!("reason=\"{reason}\"")) && line.contains(&format!("priority=\"{priority}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_flood_beyond_the_budget_is_shed_with_retry_after_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [("OTG_MAX_IN_FLIGHT_RECORDS", "500"), ("OTG_BACKLOG_SHARE_PERCENT", "60")];
    let gateway = Gateway::start(dir.path(), &settings);
    let all = flood(&gateway, None);
    assert!(all.keys().all(|status| [200, 429, 503].contains(status)), "only 200, 429 and 503: {all:?}");
    assert_eq!(all[&200], 200, "every batch acked once: {all:?}");
    assert!(
        all.get(&503).copied().unwrap_or(0) > 0,
        "40 devices x 100 records overflow a 300-record backlog budget: {all:?}"
    );
    assert!(refused(&gateway, "records_budget", "backlog") > 0.0);
}

/// 40 devices upload 5 batches of 100 backlog records each, with `hint` as their
/// `X-OTG-Priority` if given, each batch as soon as the last is acked (or as soon as a
/// refusal's wait, bounded to keep the test short, has passed). Checks every batch was
/// stored whole and once; returns the statuses seen.
fn flood(gateway: &Gateway, hint: Option<&str>) -> BTreeMap<u16, u32> {
    let prefix = hint.unwrap_or("unhinted");
    let devices: Vec<TestDevice> = (0..40).map(|n| gateway.enrol(&format!("{prefix}-{n}"), "acme", None)).collect();
    let per_device: Vec<BTreeMap<u16, u32>> = std::thread::scope(|scope| {
        let senders: Vec<_> = devices
            .iter()
            .map(|device| {
                scope.spawn(move || {
                    let mut statuses = BTreeMap::new();
                    for batch_number in 0..5 {
                        let first = batch_number * 100 + 1;
                        let records = (first..first + 100)
                            .map(|seq| backlog_record(seq, &format!("{}-emp", device.id)))
                            .collect();
                        let body = batch(&device.id, &format!("b-{batch_number}"), records);
                        loop {
                            let mut request = device.signed(&gateway.url(""), "POST", "/v1/sync/batches", &body);
                            if let Some(hint) = hint {
                                request = request.set(PRIORITY_HEADER, hint);
                            }
                            let reply = send(request, &body);
                            *statuses.entry(reply.status).or_insert(0) += 1;
                            if reply.status == 200 {
                                let response: BatchResponse = reply.msgpack();
                                let stored_now = |status| matches!(status, AckStatus::Accepted | AckStatus::Conflict);
                                assert!(
                                    response.acks.iter().all(|ack| stored_now(ack.status)),
                                    "a refused batch was never half stored"
                                );
                                break;
                            }
                            std::thread::sleep(retry_wait(&reply).min(Duration::from_millis(300)));
                        }
                    }
                    statuses
                })
            })
            .collect();
        senders.into_iter().map(|sender| sender.join().unwrap()).collect()
    });
    for device in &devices {
        let status: DeviceStatus = gateway.device_get(device, "/v1/sync/status").msgpack();
        assert_eq!(status.next_seq, 501, "{}: every record stored", device.id);
    }
    let mut all = BTreeMap::new();
    for (status, count) in per_device.into_iter().flatten() {
        *all.entry(status).or_insert(0) += count;
    }
    all
}

#[test]
fn backlog_batches_wait_for_room_instead_of_being_refused() {
    // Backlog may hold 300 records in flight: three of the 40 devices' batches.
    let budget = [("OTG_MAX_IN_FLIGHT_RECORDS", "500"), ("OTG_BACKLOG_SHARE_PERCENT", "60")];
    let dir = tempfile::tempdir().unwrap();
    let queued = Gateway::start(dir.path(), &budget);
    let statuses = flood(&queued, Some("backlog"));
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 200)]),
        "each of the 200 batches waited its turn and was acked at its first upload"
    );
    assert_eq!(refused(&queued, "records_budget", "backlog"), 0.0);
    assert_eq!(queued.metric("otg_admission_backlog_waiting"), 0.0, "nobody is left waiting");

    let dir = tempfile::tempdir().unwrap();
    let unqueued = Gateway::start(dir.path(), &[budget[0], budget[1], ("OTG_BACKLOG_QUEUE_BATCHES", "0")]);
    let statuses = flood(&unqueued, Some("backlog"));
    assert_eq!(statuses[&200], 200);
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "without the queue the same flood is refused: {statuses:?}");
}

#[test]
fn live_batches_are_admitted_while_backlog_is_deferred() {
    let dir = tempfile::tempdir().unwrap();
    // Backlog may hold 300 records in flight; live batches have the other 700.
    let settings = [("OTG_MAX_IN_FLIGHT_RECORDS", "1000"), ("OTG_BACKLOG_SHARE_PERCENT", "30")];
    let gateway = Gateway::start(dir.path(), &settings);
    let backlog: Vec<TestDevice> = (0..32).map(|n| gateway.enrol(&format!("backlog-{n}"), "acme", None)).collect();
    let kiosks: Vec<TestDevice> = (0..2).map(|n| gateway.enrol(&format!("live-{n}"), "acme", None)).collect();
    let flooding = AtomicBool::new(true);

    let (backlog_refusals, live_statuses) = std::thread::scope(|scope| {
        let floods: Vec<_> = backlog
            .iter()
            .map(|device| {
                let (gateway, flooding) = (&gateway, &flooding);
                scope.spawn(move || {
                    let (mut refusals, mut next_seq) = (0, 1);
                    while flooding.load(Ordering::Relaxed) {
                        let records = (next_seq..next_seq + 100)
                            .map(|seq| backlog_record(seq, &format!("{}-emp", device.id)))
                            .collect();
                        let reply = gateway.upload(device, &batch(&device.id, &format!("b-{next_seq}"), records));
                        match reply.status {
                            200 => next_seq += 100,
                            _ => {
                                retry_wait(&reply);
                                refusals += 1;
                                // A fleet that ignores Retry-After keeps the pressure on.
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    refusals
                })
            })
            .collect();
        let started = Instant::now();
        let live: Vec<_> = kiosks
            .iter()
            .map(|kiosk| {
                let gateway = &gateway;
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    let mut statuses = Vec::new();
                    for seq in 1..=30 {
                        let reply = gateway.upload(
                            kiosk,
                            &batch(
                                &kiosk.id,
                                &format!("live-{seq}"),
                                vec![live_check_in(seq, &format!("{}-e{seq}", kiosk.id))],
                            ),
                        );
                        statuses.push(reply.status);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    statuses
                })
            })
            .collect();
        let live_statuses: Vec<u16> = live.into_iter().flat_map(|kiosk| kiosk.join().unwrap()).collect();
        assert!(started.elapsed() < Duration::from_secs(30));
        flooding.store(false, Ordering::Relaxed);
        let refusals: u32 = floods.into_iter().map(|flood| flood.join().unwrap()).sum();
        (refusals, live_statuses)
    });

    assert!(backlog_refusals > 0, "the backlog flood was deferred");
    assert!(refused(&gateway, "records_budget", "backlog") > 0.0);
    assert!(live_statuses.iter().all(|status| *status == 200), "every live batch was admitted: {live_statuses:?}");
    assert_eq!(refused(&gateway, "records_budget", "live"), 0.0);
}

#[test]
fn a_device_over_its_rate_gets_429_and_gets_in_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path(), &[("OTG_DEVICE_BATCHES_PER_S", "1"), ("OTG_DEVICE_BATCH_BURST", "2")]);
    let device = gateway.enrol("eager", "acme", None);
    let body = |seq: i64| batch("eager", &format!("b-{seq}"), vec![record(seq, "emp-1")]);
    gateway.upload_ok(&device, &body(1));
    gateway.upload_ok(&device, &body(2));
    let refused = gateway.upload(&device, &body(3));
    assert_eq!((refused.status, refused.error_code()), (429, "rate_limited".to_owned()), "{}", refused.text());
    std::thread::sleep(retry_wait(&refused));
    let acked = gateway.upload_ok(&device, &body(3));
    assert_eq!(acked.acks[0].status, AckStatus::Accepted, "the refused batch was not stored the first time");
}

/// VmRSS of a process, bytes.
fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_flood_of_large_bodies_keeps_memory_under_the_cap() {
    const CAP_MIB: u64 = 192;
    let dir = tempfile::tempdir().unwrap();
    let cap = CAP_MIB.to_string();
    let settings =
        [("OTG_MEMORY_LIMIT_MIB", cap.as_str()), ("OTG_STORE_CACHE_MIB", "8"), ("OTG_MAX_IN_FLIGHT_BYTES", "4194304")];
    let gateway = Gateway::start(dir.path(), &settings);
    let devices: Vec<TestDevice> = (0..48).map(|n| gateway.enrol(&format!("big-{n}"), "acme", None)).collect();
    // Bodies just under the 1 MiB limit, signed: each is read whole before it fails to decode.
    let junk = vec![0xc1u8; 1_000_000];
    let sampling = AtomicBool::new(true);

    let (statuses, peak) = std::thread::scope(|scope| {
        let peak = scope.spawn(|| {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(rss_bytes(gateway.pid()));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        let senders: Vec<_> = devices
            .iter()
            .map(|device| {
                let (gateway, junk) = (&gateway, &junk);
                scope.spawn(move || (0..10).map(|_| gateway.upload(device, junk)).collect::<Vec<Reply>>())
            })
            .collect();
        let replies: Vec<Reply> = senders.into_iter().flat_map(|sender| sender.join().unwrap()).collect();
        sampling.store(false, Ordering::Relaxed);
        (replies, peak.join().unwrap())
    });

    let shed = statuses.iter().filter(|reply| reply.status != 400).inspect(|reply| {
        retry_wait(reply);
    });
    assert!(shed.count() > 0, "48 senders of 1 MB overflow a 4 MiB bytes budget");
    assert!(
        statuses.iter().all(|reply| matches!(reply.status, 400 | 429 | 503)),
        "malformed bodies are 400, the rest shed"
    );
    assert!(peak < CAP_MIB * 1024 * 1024, "peak RSS {} MiB under the {CAP_MIB} MiB cap", peak / (1024 * 1024));
}

/// A connection that announces a body and then sends it slowly, not at all, or half of
/// it before closing its side, from a client address of its choosing (any 127.x.y.z
/// reaches the gateway on 127.0.0.1).
struct SlowClient {
    stream: std::net::TcpStream,
}

impl SlowClient {
    /// Connects from `from` and sends the head of a 1 MiB upload as `device_id`, signed
    /// with a made-up signature (a signature can only be checked once the body is in).
    fn announce(gateway: &Gateway, from: [u8; 4], device_id: &str) -> SlowClient {
        let target: std::net::SocketAddr = gateway.base_url.trim_start_matches("http://").parse().unwrap();
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&std::net::SocketAddr::from((from, 0)).into()).unwrap();
        socket.connect(&target.into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        let head = format!(
            "POST /v1/sync/batches HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/msgpack\r\n\
             Content-Length: {}\r\nX-Device-Id: {device_id}\r\nX-Request-Time: {}\r\nX-Signature: bWFkZS11cA==\r\n\r\n",
            1024 * 1024,
            now_ms()
        );
        std::io::Write::write_all(&mut stream, head.as_bytes()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        SlowClient { stream }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        std::io::Write::write_all(&mut self.stream, bytes).is_ok()
    }

    /// The status line's code, once the gateway answers, and whether it then closed
    /// the connection; `None` if it never answered.
    fn answer(mut self) -> Option<(u16, bool)> {
        let mut reply = Vec::new();
        let closed = std::io::Read::read_to_end(&mut self.stream, &mut reply).is_ok();
        let text = String::from_utf8_lossy(&reply);
        let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
        Some((status, closed))
    }
}

/// The slow-client lock-out, tried from outside: a crowd of connections that announce
/// 1 MiB bodies and then trickle, stall or half-close, from one address, some for an
/// enrolled device and some for made-up ones. Devices elsewhere are served meanwhile;
/// the crowd's connections are answered and closed once they fall behind the minimum
/// pace, and everything they reserved is given back.
#[test]
fn slow_and_silent_clients_cannot_lock_devices_out() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [("OTG_BODY_GRACE_MS", "2000"), ("OTG_BODY_MIN_BYTES_PER_S", "65536")];
    let gateway = Gateway::start(dir.path(), &settings);
    let victim = gateway.enrol("dev-known-to-the-crowd", "acme", None);
    let device = gateway.enrol("dev-served", "acme", None);
    let crowd_address = [127, 0, 0, 2];

    // Made-up devices are refused from their headers: nothing is reserved for them.
    let strangers: Vec<SlowClient> =
        (0..16).map(|n| SlowClient::announce(&gateway, crowd_address, &format!("dev-made-up-{n}"))).collect();
    // An enrolled device's id gets a connection further: 32 of them, trickling, stalled
    // and half-closed, hold at most the crowd address's share of the bytes budget.
    let mut crowd: Vec<(&str, SlowClient)> = (0..32)
        .map(|n| {
            let behaviour = ["trickle", "stall", "half_close"][n % 3];
            (behaviour, SlowClient::announce(&gateway, crowd_address, &victim.id))
        })
        .collect();
    for (behaviour, client) in &mut crowd {
        if *behaviour == "half_close" {
            client.send(&[0x82; 100]);
            client.stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
    }
    std::thread::scope(|scope| {
        let trickle = scope.spawn(|| {
            for _ in 0..4 {
                for (_, client) in crowd.iter_mut().filter(|(behaviour, _)| *behaviour == "trickle") {
                    client.send(&[0x82]);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        // Meanwhile a device elsewhere syncs, batch after batch, live and backlog alike.
        for seq in 1..=10 {
            let record = if seq % 2 == 0 { live_check_in(seq, "emp-1") } else { backlog_record(seq, "emp-1") };
            let reply = gateway.upload(&device, &batch(&device.id, &format!("b-{seq}"), vec![record]));
            assert_eq!(reply.status, 200, "a device is served while the crowd holds its connections: {}", reply.text());
        }
        trickle.join().unwrap();
    });

    let mut statuses: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for client in strangers {
        let (status, _) = client.answer().expect("a made-up device is answered");
        *statuses.entry(("made_up", status)).or_default() += 1;
    }
    for (behaviour, client) in crowd {
        let (status, closed) = client.answer().expect("every slow connection is answered, none is left hanging");
        assert!(closed, "the gateway closes a {behaviour} connection it answered {status}");
        *statuses.entry((behaviour, status)).or_default() += 1;
    }
    assert_eq!(statuses[&("made_up", 401)], 16, "{statuses:?}");
    let crowd_status = |status: u16| -> usize {
        statuses.iter().filter(|((who, code), _)| *who != "made_up" && *code == status).map(|(_, count)| count).sum()
    };
    // Eight 1 MiB bodies fill the address's 8 MiB share; half-closed ones give theirs
    // back at once (400), letting a few more in.
    assert!(crowd_status(429) >= 16, "past its share the crowd's address is refused at once: {statuses:?}");
    assert!(crowd_status(408) >= 1, "a body behind the minimum pace gets 408: {statuses:?}");
    assert_eq!(
        crowd_status(408) + crowd_status(429) + crowd_status(400),
        32,
        "trickling and stalled get 408, half-closed 400 (an incomplete body), or 429: {statuses:?}"
    );
    assert!(
        eventually(Duration::from_secs(5), || gateway.metric("otg_admission_in_flight_bytes") == 0.0),
        "everything the crowd reserved was given back"
    );
    let after = gateway.upload(&victim, &batch(&victim.id, "b-after", vec![live_check_in(1, "emp-2")]));
    assert_eq!(after.status, 200, "the device whose id the crowd used is served too: {}", after.text());
}
