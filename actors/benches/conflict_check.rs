//! The conflict rules for one record against the two days around it: a kiosk
//! employee's day (check-in, break, check-out) on each, the newcomer a clean check-out
//! and a duplicate check-in.

use criterion::{criterion_group, criterion_main, Criterion};
use otg_actors::benchmarked::{evaluate, Event, RuleSettings};
use otg_schema::RecordKind;

const HOUR: i64 = 3_600_000;
const DAY0: i64 = 1_764_028_800_000;

fn main_bench(c: &mut Criterion) {
    let ids: Vec<String> = (0..8).map(|n| format!("7f8c2a8e-3c1d-4b7e-9a51-{n:012}")).collect();
    let day = [
        (RecordKind::CheckIn, 8 * HOUR),
        (RecordKind::BreakStart, 12 * HOUR),
        (RecordKind::BreakEnd, 12 * HOUR + HOUR / 2),
        (RecordKind::CheckOut, 17 * HOUR),
    ];
    let timeline: Vec<Event> = (0..2)
        .flat_map(|n| day.iter().map(move |&(kind, at)| (n, kind, DAY0 + n * 24 * HOUR + at)))
        .zip(&ids)
        .map(|((_, kind, recorded_at), record_id)| Event { record_id, kind, recorded_at, leave: None })
        .collect();
    let settings = RuleSettings { duplicate_window_ms: 120_000, max_shift_ms: 16 * HOUR, max_clock_skew_ms: 300_000 };
    let received_at = DAY0 + 3 * 24 * HOUR;
    // The second day without its check-out, which arrives as the newcomer.
    let clean = Event {
        record_id: "new-check-out",
        kind: RecordKind::CheckOut,
        recorded_at: DAY0 + 24 * HOUR + 17 * HOUR,
        leave: None,
    };
    let duplicate = Event {
        record_id: "new-check-in",
        kind: RecordKind::CheckIn,
        recorded_at: DAY0 + 24 * HOUR + 8 * HOUR + 30_000,
        leave: None,
    };
    c.bench_function("conflict rules: a clean check-out against 7 records", |b| {
        b.iter(|| evaluate(&clean, received_at, &timeline[..7], settings))
    });
    c.bench_function("conflict rules: a duplicate check-in against 8 records", |b| {
        b.iter(|| evaluate(&duplicate, received_at, &timeline, settings))
    });
}

criterion_group!(benches, main_bench);
criterion_main!(benches);
