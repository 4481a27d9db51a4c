//! The set of seqs a device has delivered, as disjoint ranges.
//!
//! A device's seqs are dense, so the set is almost always one range `1..next_seq`;
//! a permanent gap (records the device dropped) costs one more range, not one entry
//! per later record.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Seqs received, as `start -> end` (exclusive) ranges that never touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRanges {
    /// Every seq below this was received.
    next_seq: u64,
    /// Ranges above `next_seq`, each starting after a gap.
    above: BTreeMap<u64, u64>,
}

impl Default for SeqRanges {
    fn default() -> Self {
        SeqRanges { next_seq: 1, above: BTreeMap::new() }
    }
}

impl SeqRanges {
    /// The lowest seq not received: the contiguous high-water mark.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The highest seq received, if any.
    pub fn highest(&self) -> Option<u64> {
        match self.above.last_key_value() {
            Some((_, &end)) => Some(end - 1),
            None => self.next_seq.checked_sub(1).filter(|&seq| seq >= 1),
        }
    }

    /// The received seqs in `within`, in order; walks only what was received.
    pub fn received_in(&self, within: std::ops::Range<u64>) -> impl Iterator<Item = u64> + '_ {
        std::iter::once((1, self.next_seq))
            .chain(self.above.iter().map(|(&start, &end)| (start, end)))
            .flat_map(move |(start, end)| start.max(within.start)..end.min(within.end))
    }

    /// How many separate runs of seqs lie above the first gap.
    pub fn gap_count(&self) -> usize {
        self.above.len()
    }

    pub fn contains(&self, seq: u64) -> bool {
        seq < self.next_seq || self.above.range(..=seq).next_back().is_some_and(|(_, &end)| seq < end)
    }

    /// Adds a seq (>= 1); returns whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        let mut start = seq;
        let mut end = seq + 1;
        if let Some((&before_start, &before_end)) = self.above.range(..seq).next_back() {
            if before_end == seq {
                start = before_start;
                self.above.remove(&before_start);
            }
        }
        if let Some(after_end) = self.above.remove(&end) {
            end = after_end;
        }
        if start == self.next_seq {
            self.next_seq = end;
        } else {
            self.above.insert(start, end);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn gaps_fill_and_the_mark_advances() {
        let mut ranges = SeqRanges::default();
        assert!(ranges.insert(1));
        assert!(ranges.insert(3));
        assert!(ranges.insert(5));
        assert_eq!((ranges.next_seq(), ranges.gap_count()), (2, 2));
        assert!(ranges.insert(4));
        assert_eq!(ranges.gap_count(), 1);
        assert!(ranges.insert(2));
        assert_eq!((ranges.next_seq(), ranges.gap_count()), (6, 0));
        assert!(!ranges.insert(3));
    }

    proptest! {
        /// Against the obvious model: a set of seqs, and the first one missing.
        #[test]
        fn behaves_like_a_set(seqs in proptest::collection::vec(1u64..64, 0..200)) {
            let mut ranges = SeqRanges::default();
            let mut model = BTreeSet::new();
            for seq in seqs {
                prop_assert_eq!(ranges.insert(seq), model.insert(seq));
                let first_missing = (1..).find(|s| !model.contains(s)).unwrap();
                prop_assert_eq!(ranges.next_seq(), first_missing);
                for probe in 1..70 {
                    prop_assert_eq!(ranges.contains(probe), model.contains(&probe));
                }
                prop_assert_eq!(ranges.highest(), model.last().copied());
                let within: Vec<u64> = ranges.received_in(3..40).collect();
                prop_assert_eq!(within, model.range(3..40).copied().collect::<Vec<_>>());
                let runs_above = model.iter().filter(|&&s| s > first_missing && !model.contains(&(s - 1))).count();
                prop_assert_eq!(ranges.gap_count(), runs_above);
            }
        }
    }
}
