//! Several gateway processes on one CQL cluster, end to end over HTTP, as a load
//! balancer without device affinity would use them: a device's batches reach any
//! gateway, alternately and at once, and an employee's phone and the site kiosk reach
//! different ones. Each seq is stored once and answered as one gateway answers; a
//! cross-device duplicate is found exactly once; of two resolutions, one wins.

mod support;

use otg_schema::wire::{AckStatus, BatchResponse, Record, RejectReason};
use serde_json::json;
use std::collections::BTreeMap;
use support::*;

/// `count` gateways on one fresh keyspace, or `None` when no cluster is configured.
fn fleet(count: usize) -> Option<(Vec<Gateway>, ScyllaKeyspace, Vec<tempfile::TempDir>)> {
    let keyspace = ScyllaKeyspace::create()?;
    let dirs: Vec<_> = (0..count).map(|_| tempfile::tempdir().unwrap()).collect();
    let gateways = dirs.iter().map(|dir| Gateway::start(dir.path(), &keyspace.settings())).collect();
    Some((gateways, keyspace, dirs))
}

fn statuses(response: &BatchResponse) -> Vec<(AckStatus, Option<RejectReason>)> {
    response.acks.iter().map(|ack| (ack.status, ack.reason)).collect()
}

/// Sends each batch from a thread of its own, all at once; the responses in order. A
/// 503 (gateways racing for the device for longer than their retries) is sent again,
/// as a device does, sooner than its `Retry-After` says only to keep the test short.
fn all_at_once(sends: Vec<(&Gateway, &TestDevice, Vec<u8>)>) -> Vec<BatchResponse> {
    let barrier = std::sync::Barrier::new(sends.len());
    std::thread::scope(|scope| {
        let running: Vec<_> = sends
            .iter()
            .map(|(gateway, device, body)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let reply = after_503s(std::time::Duration::from_secs(60), || gateway.upload(device, body));
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    reply.msgpack()
                })
            })
            .collect();
        running.into_iter().map(|thread| thread.join().unwrap()).collect()
    })
}

#[test]
fn a_device_sent_to_every_gateway_is_stored_once_and_answered_as_by_one() {
    let Some((gateways, _keyspace, _dirs)) = fleet(3) else { return };
    let device = gateways[0].enrol("dev-roaming", "acme", Some("emp-1"));
    let records: Vec<Record> = (1..=30).map(|seq| record(seq, "emp-1")).collect();

    // Alternately: batch after batch, each to the next gateway.
    let batches: Vec<Vec<Record>> = records[..20].chunks(2).map(<[Record]>::to_vec).collect();
    for (n, records) in batches.iter().enumerate() {
        let response = gateways[n % 3].upload_ok(&device, &batch(&device.id, &format!("b-{n}"), records.clone()));
        assert_eq!(statuses(&response), vec![(AckStatus::Accepted, None); 2], "batch {n}");
        assert_eq!(response.next_seq, 2 * n as u64 + 3);
    }
    // Sent again, each to another gateway: all duplicates.
    for (n, records) in batches.iter().enumerate() {
        let response = gateways[(n + 1) % 3].upload_ok(&device, &batch(&device.id, &format!("b-{n}"), records.clone()));
        assert_eq!(statuses(&response), vec![(AckStatus::Duplicate, None); 2], "batch {n} again");
    }

    // At once: the same batch to all three gateways; each seq is accepted by one of
    // them, and the others answer duplicate, as a resend to one gateway would be.
    let same = batch(&device.id, "b-at-once", records[20..25].to_vec());
    let responses = all_at_once(gateways.iter().map(|gateway| (gateway, &device, same.clone())).collect());
    for seq_index in 0..5 {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for response in &responses {
            *counts.entry(format!("{:?}", response.acks[seq_index].status)).or_default() += 1;
        }
        assert_eq!(counts.get("Accepted"), Some(&1), "seq {}: {counts:?}", seq_index + 21);
        assert_eq!(counts.get("Duplicate"), Some(&2), "seq {}: {counts:?}", seq_index + 21);
    }

    // At once: two different records on one new seq; one is stored, the other is
    // `seq_reused`, never both accepted.
    let mine = record(26, "emp-1");
    let other = Record { record_id: uuid::Uuid::new_v4().to_string(), ..mine.clone() };
    let responses = all_at_once(vec![
        (&gateways[1], &device, batch(&device.id, "b-mine", vec![mine])),
        (&gateways[2], &device, batch(&device.id, "b-other", vec![other])),
    ]);
    let mut outcomes: Vec<_> = responses.iter().map(|response| statuses(response)[0]).collect();
    outcomes.sort_by_key(|outcome| format!("{outcome:?}"));
    assert_eq!(outcomes, vec![(AckStatus::Accepted, None), (AckStatus::Rejected, Some(RejectReason::SeqReused))]);

    // A reused seq sent to a gateway that never saw the device is still refused.
    let reused = Record { record_id: uuid::Uuid::new_v4().to_string(), ..records[4].clone() };
    let response = gateways[2].upload_ok(&device, &batch(&device.id, "b-reused", vec![reused]));
    assert_eq!(statuses(&response), vec![(AckStatus::Rejected, Some(RejectReason::SeqReused))]);
    for gateway in &gateways {
        let status: otg_schema::wire::DeviceStatus = gateway.device_get(&device, "/v1/sync/status").msgpack();
        assert_eq!(status.next_seq, 27, "every gateway tells the device the same next seq");
    }
}

#[test]
fn phones_and_kiosks_on_two_gateways_give_one_duplicate_each_and_one_resolution_wins() {
    let Some((gateways, _keyspace, _dirs)) = fleet(2) else { return };
    let kiosk = gateways[0].enrol("kiosk", "acme", None);
    let employees = 8;
    let phones: Vec<_> =
        (0..employees).map(|n| gateways[0].enrol(&format!("phone-{n}"), "acme", Some(&format!("emp-{n}")))).collect();
    let checked_in_at = now_ms() / HOUR_MS * HOUR_MS - 2 * HOUR_MS;

    // Each employee checks in on the kiosk (through gateway 0) and on the phone
    // (through gateway 1) 30 s apart, both sent at the same moment.
    for (n, phone) in phones.iter().enumerate() {
        let employee = format!("emp-{n}");
        let on_kiosk =
            Record::new(n as i64 + 1, uuid::Uuid::new_v4().to_string(), "check_in", &employee, checked_in_at);
        let on_phone = Record::new(1, uuid::Uuid::new_v4().to_string(), "check_in", &employee, checked_in_at + 30_000);
        let responses = all_at_once(vec![
            (&gateways[0], &kiosk, batch(&kiosk.id, &format!("k-{n}"), vec![on_kiosk])),
            (&gateways[1], phone, batch(&phone.id, "p", vec![on_phone])),
        ]);
        let conflicts = responses.iter().filter(|response| response.acks[0].status == AckStatus::Conflict).count();
        assert_eq!(conflicts, 1, "{employee}: exactly one of the two check-ins is acked conflict: {responses:?}");
    }
    let listed = gateways[1].admin("GET", "/v1/admin/conflicts?org_id=acme&status=open&limit=100", None);
    let listed = listed.json()["conflicts"].as_array().unwrap().clone();
    assert_eq!(listed.len(), employees, "one conflict per employee, found once: {listed:#?}");
    assert!(listed.iter().all(|conflict| conflict["kind"] == "duplicate_event"));

    // Two administrators decide the same conflict differently through two gateways.
    // One whose decision met a timed-out write (503: it may have landed) sends it again,
    // as an administrator does after Retry-After: the same decision again is not
    // refused, another one is.
    let path = format!("/v1/admin/conflicts/{}/resolve", listed[0]["conflict_id"].as_str().unwrap());
    let decisions =
        [json!({"resolution": "keep_server", "note": "a"}), json!({"resolution": "keep_device", "note": "b"})];
    let mut replies: Vec<(u16, String)> = std::thread::scope(|scope| {
        let running: Vec<_> = gateways
            .iter()
            .zip(decisions)
            .map(|(gateway, decision)| {
                let path = &path;
                scope.spawn(move || {
                    let reply = after_503s(std::time::Duration::from_secs(60), || {
                        gateway.admin("POST", path, Some(decision.clone()))
                    });
                    (reply.status, reply.text())
                })
            })
            .collect();
        running.into_iter().map(|thread| thread.join().unwrap()).collect()
    });
    replies.sort_unstable();
    let statuses: Vec<u16> = replies.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, vec![200, 409], "one decision wins, the other is told it lost: {replies:?}");
}
