//! The dedupe and order decision for one device's batch: a pure function of what the
//! device has delivered before and what this batch carries.
//!
//! `(device, seq)` is the idempotency key: a seq is filled once, by the first record to
//! arrive for it, and every later arrival is answered from what that first one got.

use crate::seq_ranges::SeqRanges;
use crate::store::SeqEntry;
use otg_schema::validate::Rejection;
use otg_schema::wire::{AckStatus, RejectReason};
use otg_schema::ValidRecord;
use std::collections::HashMap;

/// One record of a batch after the gateway's field checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// As sent; may be out of range, in which case `verdict` says so.
    pub seq: i64,
    pub record_id: String,
    pub verdict: Result<ValidRecord, Rejection>,
}

/// What to do with one incoming record, given what its seq already holds.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordDecision {
    /// A new seq with a valid record: store it.
    Store,
    /// A new seq with a refused record: keep the refusal so the seq leaves no gap.
    Refuse,
    /// The seq already holds this record id: answer as the first arrival was answered.
    Replay { status: AckStatus, reason: Option<RejectReason>, detail: Option<String> },
    /// The seq already holds another record id.
    SeqReused,
    /// The seq itself is out of range, so the record fills no slot.
    NoSlot,
}

/// The seqs of this batch that were received before and must be read back.
pub fn seqs_to_look_up(received: &SeqRanges, incoming: &[Incoming]) -> Vec<u64> {
    let mut seqs: Vec<u64> = incoming
        .iter()
        .filter_map(|record| u64::try_from(record.seq).ok())
        .filter(|&seq| received.contains(seq))
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    seqs
}

/// Decides every record of a batch, in order, and returns the seqs received afterwards.
/// `previously` holds the stored entry of every seq `seqs_to_look_up` named.
pub fn decide(
    received: &SeqRanges,
    incoming: &[Incoming],
    previously: &HashMap<u64, SeqEntry>,
) -> (Vec<RecordDecision>, SeqRanges) {
    let mut after = received.clone();
    // Seqs this batch fills, with the index of the record that fills each.
    let mut filled_here: HashMap<u64, usize> = HashMap::new();
    let decisions = incoming
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let Some(seq) = u64::try_from(record.seq).ok().filter(|&seq| seq >= 1) else {
                return RecordDecision::NoSlot;
            };
            if let Some(&first) = filled_here.get(&seq) {
                let first = &incoming[first];
                return if first.record_id != record.record_id {
                    RecordDecision::SeqReused
                } else {
                    match &first.verdict {
                        Ok(_) => replay(AckStatus::Duplicate, None, None),
                        Err(rejection) => replay(AckStatus::Rejected, Some(rejection.reason), rejection.detail.clone()),
                    }
                };
            }
            if let Some(entry) = previously.get(&seq).filter(|_| received.contains(seq)) {
                return if entry.record_id() != record.record_id {
                    RecordDecision::SeqReused
                } else {
                    match entry {
                        SeqEntry::Stored(_) => replay(AckStatus::Duplicate, None, None),
                        SeqEntry::Rejected { reason, detail, .. } => {
                            replay(AckStatus::Rejected, Some(*reason), detail.clone())
                        }
                    }
                };
            }
            filled_here.insert(seq, index);
            after.insert(seq);
            if record.verdict.is_ok() {
                RecordDecision::Store
            } else {
                RecordDecision::Refuse
            }
        })
        .collect();
    (decisions, after)
}

fn replay(status: AckStatus, reason: Option<RejectReason>, detail: Option<String>) -> RecordDecision {
    RecordDecision::Replay { status, reason, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn valid(seq: i64, id: &str) -> Incoming {
        let mut record = conformance::record(seq.max(1) as u64, "emp-1", 1_764_028_800_000);
        record.record_id = id.into();
        Incoming { seq, record_id: id.into(), verdict: Ok(record) }
    }

    fn refused(seq: i64, id: &str) -> Incoming {
        let rejection = Rejection { reason: RejectReason::TooOld, detail: None };
        Incoming { seq, record_id: id.into(), verdict: Err(rejection) }
    }

    /// Runs a batch the way the device actor does, keeping `store` as the stored seqs.
    fn run(received: &mut SeqRanges, store: &mut HashMap<u64, SeqEntry>, batch: &[Incoming]) -> Vec<RecordDecision> {
        let lookups = seqs_to_look_up(received, batch);
        let previously = lookups.iter().filter_map(|seq| store.get(seq).map(|e| (*seq, e.clone()))).collect();
        let (decisions, after) = decide(received, batch, &previously);
        for (record, decision) in batch.iter().zip(&decisions) {
            let entry = match (decision, &record.verdict) {
                (RecordDecision::Store, Ok(valid)) => conformance::stored("dev", valid.clone()),
                (RecordDecision::Refuse, Err(rejection)) => SeqEntry::Rejected {
                    seq: record.seq as u64,
                    record_id: record.record_id.clone(),
                    reason: rejection.reason,
                    detail: None,
                },
                _ => continue,
            };
            assert!(store.insert(entry.seq(), entry).is_none(), "a seq is filled once");
        }
        *received = after;
        decisions
    }

    #[test]
    fn every_kind_of_decision() {
        let (mut received, mut store) = (SeqRanges::default(), HashMap::new());
        let first = run(&mut received, &mut store, &[valid(1, "a"), refused(2, "b"), valid(0, "z")]);
        assert_eq!(first, vec![RecordDecision::Store, RecordDecision::Refuse, RecordDecision::NoSlot]);
        assert_eq!(received.next_seq(), 3, "a refused seq leaves no gap");

        let again = run(
            &mut received,
            &mut store,
            &[valid(1, "a"), refused(2, "b"), valid(2, "c"), valid(3, "d"), valid(3, "d"), valid(3, "e")],
        );
        assert_eq!(again[0], replay(AckStatus::Duplicate, None, None));
        assert_eq!(again[1], replay(AckStatus::Rejected, Some(RejectReason::TooOld), None));
        assert_eq!(again[2], RecordDecision::SeqReused);
        assert_eq!(again[3], RecordDecision::Store);
        assert_eq!(again[4], replay(AckStatus::Duplicate, None, None), "a seq repeated within a batch");
        assert_eq!(again[5], RecordDecision::SeqReused);
    }

    #[test]
    fn gaps_are_tracked_and_filled() {
        let (mut received, mut store) = (SeqRanges::default(), HashMap::new());
        run(&mut received, &mut store, &[valid(1, "a"), valid(4, "d")]);
        assert_eq!(received.next_seq(), 2);
        assert_eq!(run(&mut received, &mut store, &[valid(4, "d")])[0], replay(AckStatus::Duplicate, None, None));
        run(&mut received, &mut store, &[valid(3, "c"), valid(2, "b")]);
        assert_eq!(received.next_seq(), 5);
    }

    /// One record in the reference model: what a seq was first filled with.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct ModelSlot {
        id: u8,
        refused: bool,
    }

    fn arb_batch() -> impl Strategy<Value = Vec<(i64, u8, bool)>> {
        proptest::collection::vec((-1i64..24, 0u8..3, proptest::bool::weighted(0.2)), 1..12)
    }

    proptest! {
        /// Against a model that is just "a seq keeps whatever first filled it".
        #[test]
        fn matches_the_reference_model(batches in proptest::collection::vec(arb_batch(), 1..8)) {
            let (mut received, mut store) = (SeqRanges::default(), HashMap::new());
            let mut model: BTreeMap<i64, ModelSlot> = BTreeMap::new();
            for batch in batches {
                let incoming: Vec<Incoming> = batch.iter().map(|&(seq, id, bad)| {
                    let id = format!("id-{id}");
                    if bad { refused(seq, &id) } else { valid(seq, &id) }
                }).collect();
                let decisions = run(&mut received, &mut store, &incoming);
                for (&(seq, id, bad), decision) in batch.iter().zip(&decisions) {
                    let expected = if seq < 1 {
                        RecordDecision::NoSlot
                    } else {
                        match model.get(&seq) {
                            None => {
                                model.insert(seq, ModelSlot { id, refused: bad });
                                if bad { RecordDecision::Refuse } else { RecordDecision::Store }
                            }
                            Some(slot) if slot.id != id => RecordDecision::SeqReused,
                            Some(slot) if slot.refused => replay(AckStatus::Rejected, Some(RejectReason::TooOld), None),
                            Some(_) => replay(AckStatus::Duplicate, None, None),
                        }
                    };
                    prop_assert_eq!(decision, &expected);
                }
                let first_missing = (1..).find(|seq| !model.contains_key(seq)).unwrap();
                prop_assert_eq!(received.next_seq(), first_missing as u64);
            }
        }
    }
}
