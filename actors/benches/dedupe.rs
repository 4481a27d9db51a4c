//! The dedupe and order decision for a 100-record batch: all new, and all resent.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use otg_actors::benchmarked::{decide, seqs_to_look_up};
use otg_actors::store::{SeqEntry, StoredRecord};
use otg_actors::Incoming;
use otg_actors::SeqRanges;
use otg_schema::{RecordKind, ValidRecord};
use std::collections::HashMap;

fn batch(first_seq: u64) -> Vec<Incoming> {
    (first_seq..first_seq + 100)
        .map(|seq| {
            let record = ValidRecord {
                seq,
                record_id: format!("7f8c2a8e-3c1d-4b7e-9a51-{seq:012}"),
                kind: RecordKind::CheckIn,
                employee_id: "emp-1".into(),
                recorded_at: 1_764_028_800_000 + seq as i64,
                uptime_ms: None,
                offline: true,
                geo: None,
                face: None,
                qr: None,
                leave: None,
                note: None,
            };
            Incoming { seq: seq as i64, record_id: record.record_id.clone(), verdict: Ok(record) }
        })
        .collect()
}

fn dedupe_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedupe_decision");
    group.throughput(Throughput::Elements(100));

    let mut received = SeqRanges::default();
    for seq in 1..=10_000 {
        received.insert(seq);
    }
    let fresh = batch(10_001);
    group.bench_function("100_new_records", |b| {
        b.iter(|| {
            assert!(seqs_to_look_up(&received, &fresh).is_empty());
            decide(&received, &fresh, &HashMap::new())
        })
    });

    let resent = batch(9_901);
    let previously: HashMap<u64, SeqEntry> = resent
        .iter()
        .map(|incoming| {
            let record = incoming.verdict.clone().unwrap();
            let stored = StoredRecord {
                device_id: "dev".into(),
                org_id: "acme".into(),
                batch_id: "b".into(),
                received_at: 0,
                record,
            };
            (incoming.seq as u64, SeqEntry::Stored(stored))
        })
        .collect();
    group.bench_function("100_resent_records", |b| {
        b.iter(|| {
            let lookups = seqs_to_look_up(&received, &resent);
            assert_eq!(lookups.len(), 100);
            decide(&received, &resent, &previously)
        })
    });
    group.finish();
}

criterion_group!(benches, dedupe_decision);
criterion_main!(benches);
