//! The attendance conflict rules: pure functions from an employee's stored timeline
//! and one newly evaluated record to the conflicts that record takes part in.
//!
//! A shift runs from a check-in to the employee's next check-out, across midnight,
//! looking back at most `max_shift_hours`; UTC day buckets never split one. Only
//! effective records (not superseded, not discarded) count. A conflict's id is derived
//! from its kind and the records in it, so evaluating the same record against the same
//! timeline, on any gateway, yields the same conflict.

use otg_schema::{RecordKind, UtcDay};
use serde::{Deserialize, Serialize};

/// What kind of collision a conflict is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    DuplicateEvent,
    Overlap,
    OrphanCheckOut,
    BreakOutsideShift,
    LeaveOverlap,
    ClockSkew,
}

impl ConflictKind {
    pub const ALL: [ConflictKind; 6] = [
        Self::DuplicateEvent,
        Self::Overlap,
        Self::OrphanCheckOut,
        Self::BreakOutsideShift,
        Self::LeaveOverlap,
        Self::ClockSkew,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateEvent => "duplicate_event",
            Self::Overlap => "overlap",
            Self::OrphanCheckOut => "orphan_check_out",
            Self::BreakOutsideShift => "break_outside_shift",
            Self::LeaveOverlap => "leave_overlap",
            Self::ClockSkew => "clock_skew",
        }
    }

    /// Whether the conflict is between two records (so a policy can pick one).
    pub fn is_between_two(self) -> bool {
        matches!(self, Self::DuplicateEvent | Self::Overlap | Self::LeaveOverlap)
    }
}

/// What the rules read of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub record_id: &'a str,
    pub kind: RecordKind,
    pub recorded_at: i64,
    /// The days a leave request covers, both inclusive.
    pub leave: Option<(UtcDay, UtcDay)>,
}

/// The org settings the rules apply, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSettings {
    pub duplicate_window_ms: i64,
    pub max_shift_ms: i64,
    pub max_clock_skew_ms: i64,
}

/// One conflict the newcomer takes part in; `other` indexes the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub kind: ConflictKind,
    pub other: Option<usize>,
}

/// The conflicts `newcomer` takes part in against `timeline` (the employee's effective
/// records around it, in `recorded_at` order, without the newcomer). `received_at` is
/// the server clock when the newcomer arrived.
pub fn evaluate(newcomer: &Event, received_at: i64, timeline: &[Event], settings: RuleSettings) -> Vec<Finding> {
    let mut findings = Vec::new();
    if newcomer.recorded_at > received_at + settings.max_clock_skew_ms {
        findings.push(Finding { kind: ConflictKind::ClockSkew, other: None });
    }
    if newcomer.kind == RecordKind::LeaveRequest {
        let (from, to) = newcomer.leave.expect("a leave request carries its days");
        if let Some(other) = timeline.iter().position(|event| covers(from, to, event)) {
            findings.push(Finding { kind: ConflictKind::LeaveOverlap, other: Some(other) });
        }
        return findings;
    }

    let day = UtcDay::of_unix_ms(newcomer.recorded_at);
    if let Some(other) =
        timeline.iter().position(|event| event.kind == RecordKind::LeaveRequest && covers_day(event, day))
    {
        findings.push(Finding { kind: ConflictKind::LeaveOverlap, other: Some(other) });
    }
    let duplicate = timeline
        .iter()
        .enumerate()
        .filter(|(_, event)| event.kind == newcomer.kind && event.record_id != newcomer.record_id)
        .filter(|(_, event)| (event.recorded_at - newcomer.recorded_at).abs() <= settings.duplicate_window_ms)
        .min_by_key(|(_, event)| (event.recorded_at - newcomer.recorded_at).abs());
    if let Some((other, _)) = duplicate {
        // A duplicate is that, not also an overlap or an orphan.
        findings.push(Finding { kind: ConflictKind::DuplicateEvent, other: Some(other) });
        return findings;
    }

    let open_shift = open_check_in(timeline, newcomer.recorded_at, settings.max_shift_ms);
    match newcomer.kind {
        RecordKind::CheckIn => {
            let overlapping = open_shift
                .or_else(|| next_check_in_before_check_out(timeline, newcomer.recorded_at, settings.max_shift_ms));
            if let Some(other) = overlapping {
                findings.push(Finding { kind: ConflictKind::Overlap, other: Some(other) });
            }
        }
        RecordKind::CheckOut if open_shift.is_none() => {
            findings.push(Finding { kind: ConflictKind::OrphanCheckOut, other: None });
        }
        RecordKind::BreakStart | RecordKind::BreakEnd if open_shift.is_none() => {
            findings.push(Finding { kind: ConflictKind::BreakOutsideShift, other: None });
        }
        _ => {}
    }
    findings
}

/// The check-in of the shift open at `at`: the latest check-in at most `max_shift_ms`
/// before it with no check-out between.
fn open_check_in(timeline: &[Event], at: i64, max_shift_ms: i64) -> Option<usize> {
    let before = timeline.partition_point(|event| event.recorded_at <= at);
    first_check_in(timeline[..before].iter().enumerate().rev(), |time| time >= at - max_shift_ms)
}

/// A check-in after `at` that comes before the check-out closing a shift begun at
/// `at`: the newcomer's shift would overlap that one.
fn next_check_in_before_check_out(timeline: &[Event], at: i64, max_shift_ms: i64) -> Option<usize> {
    let after = timeline.partition_point(|event| event.recorded_at <= at);
    first_check_in(timeline.iter().enumerate().skip(after), |time| time <= at + max_shift_ms)
}

/// Walking `events`, the index of a check-in met before any check-out, while `within`.
fn first_check_in<'a, 'e: 'a>(
    events: impl Iterator<Item = (usize, &'a Event<'e>)>,
    within: impl Fn(i64) -> bool,
) -> Option<usize> {
    for (index, event) in events {
        if !within(event.recorded_at) {
            return None;
        }
        match event.kind {
            RecordKind::CheckOut => return None,
            RecordKind::CheckIn => return Some(index),
            _ => {}
        }
    }
    None
}

fn covers_day(leave: &Event, day: UtcDay) -> bool {
    leave.leave.is_some_and(|(from, to)| from <= day && day <= to)
}

/// Whether `event` falls in (attendance) or overlaps (leave) the days `from..=to`.
fn covers(from: UtcDay, to: UtcDay, event: &Event) -> bool {
    match event.leave {
        Some((other_from, other_to)) => other_from <= to && from <= other_to,
        None => {
            let day = UtcDay::of_unix_ms(event.recorded_at);
            from <= day && day <= to
        }
    }
}

/// The id of a conflict: the same kind and records give the same id everywhere,
/// whichever of two records was evaluated first (two gateways, or a re-evaluation
/// after a cut commit, may see them in either order).
pub fn conflict_id(kind: ConflictKind, newcomer_record_id: &str, other_record_id: Option<&str>) -> String {
    let (first, second) = match other_record_id {
        Some(other) if other < newcomer_record_id => (other, newcomer_record_id),
        Some(other) => (newcomer_record_id, other),
        None => (newcomer_record_id, ""),
    };
    let name = format!("{}/{first}/{second}", kind.as_str());
    uuid::Uuid::new_v5(&CONFLICT_NAMESPACE, name.as_bytes()).to_string()
}

/// Namespace of conflict ids (a random UUID, fixed forever).
const CONFLICT_NAMESPACE: uuid::Uuid = uuid::uuid!("5b0c3c55-8e5d-4f4b-a3a0-6f3f6c3e9b21");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY0: i64 = 1_764_028_800_000; // 2025-11-25T00:00:00Z
    const SETTINGS: RuleSettings =
        RuleSettings { duplicate_window_ms: 2 * MINUTE, max_shift_ms: 16 * HOUR, max_clock_skew_ms: 5 * MINUTE };

    fn event(id: &'static str, kind: RecordKind, at: i64) -> Event<'static> {
        Event { record_id: id, kind, recorded_at: at, leave: None }
    }

    fn kinds(findings: &[Finding]) -> Vec<ConflictKind> {
        findings.iter().map(|finding| finding.kind).collect()
    }

    use RecordKind::*;

    #[test]
    fn a_normal_day_has_no_conflicts() {
        let day = [
            event("in", CheckIn, DAY0 + 8 * HOUR),
            event("b1", BreakStart, DAY0 + 12 * HOUR),
            event("b2", BreakEnd, DAY0 + 12 * HOUR + 30 * MINUTE),
        ];
        let out = event("out", CheckOut, DAY0 + 17 * HOUR);
        assert!(evaluate(&out, DAY0 + 18 * HOUR, &day, SETTINGS).is_empty());
    }

    #[test]
    fn an_overnight_shift_is_one_shift() {
        let timeline = [event("in", CheckIn, DAY0 + 22 * HOUR)];
        let out = event("out", CheckOut, DAY0 + 30 * HOUR);
        assert!(evaluate(&out, DAY0 + 31 * HOUR, &timeline, SETTINGS).is_empty());
        let next_in = event("in-2", CheckIn, DAY0 + 46 * HOUR);
        assert!(evaluate(&next_in, DAY0 + 47 * HOUR, &[timeline[0].clone(), out], SETTINGS).is_empty());
    }

    #[test]
    fn two_check_ins_30_seconds_apart_are_one_duplicate() {
        let timeline = [event("phone", CheckIn, DAY0 + 8 * HOUR)];
        let kiosk = event("kiosk", CheckIn, DAY0 + 8 * HOUR + 30_000);
        let findings = evaluate(&kiosk, DAY0 + 9 * HOUR, &timeline, SETTINGS);
        assert_eq!(findings, vec![Finding { kind: ConflictKind::DuplicateEvent, other: Some(0) }]);
    }

    #[test]
    fn a_check_in_during_an_open_shift_overlaps() {
        let timeline = [event("in", CheckIn, DAY0 + 8 * HOUR)];
        assert_eq!(
            kinds(&evaluate(&event("in-2", CheckIn, DAY0 + 10 * HOUR), DAY0 + 11 * HOUR, &timeline, SETTINGS)),
            vec![ConflictKind::Overlap]
        );
        // A late-arriving check-in before a stored shift that it would overlap.
        let stored = [event("in", CheckIn, DAY0 + 9 * HOUR), event("out", CheckOut, DAY0 + 17 * HOUR)];
        let early = evaluate(&event("early", CheckIn, DAY0 + 8 * HOUR), DAY0 + 18 * HOUR, &stored, SETTINGS);
        assert_eq!(early, vec![Finding { kind: ConflictKind::Overlap, other: Some(0) }]);
    }

    #[test]
    fn orphans_and_breaks_outside_a_shift() {
        let timeline = [event("in", CheckIn, DAY0 + 8 * HOUR), event("out", CheckOut, DAY0 + 12 * HOUR)];
        assert_eq!(
            kinds(&evaluate(&event("o", CheckOut, DAY0 + 15 * HOUR), DAY0 + 16 * HOUR, &timeline, SETTINGS)),
            vec![ConflictKind::OrphanCheckOut]
        );
        assert_eq!(
            kinds(&evaluate(&event("b", BreakStart, DAY0 + 13 * HOUR), DAY0 + 16 * HOUR, &timeline, SETTINGS)),
            vec![ConflictKind::BreakOutsideShift]
        );
        let too_long_ago = [event("in", CheckIn, DAY0)];
        assert_eq!(
            kinds(&evaluate(&event("o", CheckOut, DAY0 + 17 * HOUR), DAY0 + 18 * HOUR, &too_long_ago, SETTINGS)),
            vec![ConflictKind::OrphanCheckOut]
        );
    }

    #[test]
    fn leave_overlaps_attendance_and_other_leave_both_ways() {
        let day = UtcDay::of_unix_ms(DAY0);
        let leave = Event {
            record_id: "leave",
            kind: LeaveRequest,
            recorded_at: DAY0 - 3 * 24 * HOUR,
            leave: Some((day, day.next())),
        };
        let check_in = event("in", CheckIn, DAY0 + 8 * HOUR);
        assert_eq!(
            kinds(&evaluate(&check_in, DAY0 + 9 * HOUR, std::slice::from_ref(&leave), SETTINGS)),
            vec![ConflictKind::LeaveOverlap]
        );
        assert_eq!(kinds(&evaluate(&leave, DAY0 + 9 * HOUR, &[check_in], SETTINGS)), vec![ConflictKind::LeaveOverlap]);
        let other_leave = Event { record_id: "leave-2", leave: Some((day.next(), day.next().next())), ..leave.clone() };
        assert_eq!(
            kinds(&evaluate(&other_leave, DAY0, std::slice::from_ref(&leave), SETTINGS)),
            vec![ConflictKind::LeaveOverlap]
        );
        let later_leave =
            Event { record_id: "leave-3", leave: Some((day.next().next(), day.next().next())), ..leave.clone() };
        assert!(evaluate(&later_leave, DAY0, &[leave], SETTINGS).is_empty());
    }

    #[test]
    fn a_clock_ahead_of_the_server_is_skewed() {
        let ahead = event("in", CheckIn, DAY0 + 10 * MINUTE);
        assert_eq!(kinds(&evaluate(&ahead, DAY0, &[], SETTINGS)), vec![ConflictKind::ClockSkew]);
        assert!(evaluate(&ahead, DAY0 + 5 * MINUTE, &[], SETTINGS).is_empty());
    }

    #[test]
    fn conflict_ids_depend_only_on_kind_and_records() {
        let id = conflict_id(ConflictKind::DuplicateEvent, "a", Some("b"));
        assert_eq!(id, conflict_id(ConflictKind::DuplicateEvent, "a", Some("b")));
        assert_ne!(id, conflict_id(ConflictKind::Overlap, "a", Some("b")));
        assert_eq!(id, conflict_id(ConflictKind::DuplicateEvent, "b", Some("a")), "in either order");
        assert_ne!(id, conflict_id(ConflictKind::DuplicateEvent, "a", None));
    }

    /// The reference model: replays the whole timeline to find whether a shift is open.
    fn model_open_shift(timeline: &[Event], at: i64, max_shift_ms: i64) -> bool {
        let mut open: Option<i64> = None;
        for event in timeline.iter().filter(|event| event.recorded_at <= at) {
            match event.kind {
                CheckIn => open = Some(event.recorded_at),
                CheckOut => open = None,
                _ => {}
            }
        }
        open.is_some_and(|since| since >= at - max_shift_ms)
    }

    const IDS: [&str; 12] = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11"];

    proptest! {
        /// Orphans, breaks outside shifts and overlapping check-ins agree with a model
        /// that replays the day in time order.
        #[test]
        fn shift_rules_match_the_replay_model(
            stored in proptest::collection::vec((0usize..4, 0i64..48), 0..12),
            newcomer in (0usize..4, 0i64..48, proptest::bool::ANY),
        ) {
            let kind_of = |k: usize| [CheckIn, CheckOut, BreakStart, BreakEnd][k];
            let mut timeline: Vec<Event> = stored.iter().enumerate()
                .map(|(i, &(k, hour))| event(IDS[i], kind_of(k), DAY0 + hour * HOUR))
                .collect();
            timeline.sort_by_key(|event| event.recorded_at);
            let minutes = if newcomer.2 { MINUTE } else { 30 * MINUTE };
            let new = event("new", kind_of(newcomer.0), DAY0 + newcomer.1 * HOUR + minutes);
            let found = kinds(&evaluate(&new, DAY0 + 100 * HOUR, &timeline, SETTINGS));

            let duplicate = timeline.iter().any(|e| e.kind == new.kind && (e.recorded_at - new.recorded_at).abs() <= SETTINGS.duplicate_window_ms);
            let open = model_open_shift(&timeline, new.recorded_at, SETTINGS.max_shift_ms);
            let next_shift_overlaps = timeline.iter()
                .filter(|e| e.recorded_at > new.recorded_at && e.recorded_at <= new.recorded_at + SETTINGS.max_shift_ms)
                .find(|e| matches!(e.kind, CheckIn | CheckOut))
                .is_some_and(|e| e.kind == CheckIn);
            let expected: Vec<ConflictKind> = if duplicate {
                vec![ConflictKind::DuplicateEvent]
            } else {
                match new.kind {
                    CheckOut if !open => vec![ConflictKind::OrphanCheckOut],
                    BreakStart | BreakEnd if !open => vec![ConflictKind::BreakOutsideShift],
                    CheckIn if open || next_shift_overlaps => vec![ConflictKind::Overlap],
                    _ => vec![],
                }
            };
            prop_assert_eq!(found, expected);
        }
    }
}
