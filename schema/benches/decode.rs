//! Decode + validate of a 100-record batch: the CPU the gateway spends per batch
//! before any actor or store sees it.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use otg_schema::validate::{check_batch, check_record, RecordRules};
use otg_schema::wire::{decode, encode, Batch, Geo, Record};

const NOW: i64 = 1_764_072_000_000;

fn batch(records: usize) -> Vec<u8> {
    let records = (1..=records as i64)
        .map(|seq| Record {
            uptime_ms: Some(123_456 + seq),
            offline: Some(true),
            geo: Some(Geo { lat: 52.52, lon: 13.405, accuracy_m: 8.5 }),
            ..Record::new(
                seq,
                format!("7f8c2a8e-3c1d-4b7e-9a51-{seq:012}"),
                if seq % 2 == 1 { "check_in" } else { "check_out" },
                "emp-9",
                NOW - 3_600_000 + seq,
            )
        })
        .collect();
    encode(&Batch { pending: Some(0), ..Batch::new("dev-123", "b-0001", NOW, records) })
}

fn decode_and_validate(c: &mut Criterion) {
    let body = batch(100);
    let rules = RecordRules { now_ms: NOW, max_offline_days: 7, enrolled_employee: Some("emp-9") };
    let mut group = c.benchmark_group("decode_validate");
    group.throughput(Throughput::Elements(100));
    group.bench_with_input(
        BenchmarkId::from_parameter(format!("100_records_{}_bytes", body.len())),
        &body,
        |b, body| {
            b.iter(|| {
                let batch: Batch = decode(body).unwrap();
                check_batch(&batch, "dev-123").unwrap();
                batch.records.into_iter().map(|record| check_record(record, &rules).is_ok()).filter(|ok| *ok).count()
            })
        },
    );
    group.finish();
}

criterion_group!(benches, decode_and_validate);
criterion_main!(benches);
