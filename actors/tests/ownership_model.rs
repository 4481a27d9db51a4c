//! A model of the device-ownership protocol several gateways follow on one ScyllaDB
//! keyspace (docs/scylla.md, "Several gateways on one keyspace"), run under generated
//! interleavings: gateways claim a device by raising its epoch, decide a batch against
//! the progress their claim read, write the seq rows stamped with their epoch (the
//! newest epoch's row wins, whatever order rows land in), then write the progress only
//! if the epoch is still theirs, and only then ack; a gateway fenced claims again and
//! decides the batch anew. Devices send the same batch to several gateways, and now
//! and then a different record on a seq already used.
//!
//! What must hold, however the steps interleave: no seq is acked `accepted` for two
//! different records; every record acked `accepted` or `duplicate` is what the seq
//! holds in the end (nothing acked is lost); a record acked `seq_reused` is not; and
//! every seq the progress covers has its row.
//!
//! It checks the protocol's design with a model of the store's two primitives (a
//! conditional write on the epoch, last-write-wins by timestamp on rows); the real
//! stores' implementation of them is checked by the conformance suite
//! (`a_device_commits_only_under_its_latest_claim`) and the end-to-end tests
//! (`tests/gateways.rs`, `tests/cluster_faults.rs`).

use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    Accepted,
    Duplicate,
    SeqReused,
}

/// The store: the device's epoch and progress (seq -> record), and its seq rows, each
/// with the epoch it was written under.
#[derive(Default)]
struct Store {
    epoch: u64,
    progress: BTreeMap<u64, u32>,
    rows: HashMap<u64, (u64, u32)>,
}

/// Where a gateway is with the batch in hand.
#[derive(Debug, Clone)]
enum Stage {
    Claim,
    Decide,
    WriteRows { new: Vec<(u64, u32)>, acks: Vec<(u64, u32, Ack)> },
    Commit { new: Vec<(u64, u32)>, acks: Vec<(u64, u32, Ack)> },
}

#[derive(Default)]
struct Gateway {
    /// The epoch it holds the device by and the progress as it knows it.
    claim: Option<(u64, BTreeMap<u64, u32>)>,
    batch: Option<(Vec<(u64, u32)>, Stage)>,
    queued: Vec<Vec<(u64, u32)>>,
}

impl Gateway {
    /// One step of the protocol; acks it gives go to `acked`.
    fn step(&mut self, store: &mut Store, acked: &mut Vec<(u64, u32, Ack)>) {
        if self.batch.is_none() {
            if self.queued.is_empty() {
                return;
            }
            self.batch = Some((self.queued.remove(0), Stage::Claim));
        }
        let (records, stage) = self.batch.take().expect("a batch in hand");
        let next = match stage {
            Stage::Claim if self.claim.is_some() => Stage::Decide,
            Stage::Claim => {
                store.epoch += 1;
                self.claim = Some((store.epoch, store.progress.clone()));
                Stage::Decide
            }
            Stage::Decide => {
                let (_, progress) = self.claim.as_ref().expect("claimed before deciding");
                let (mut new, mut acks) = (Vec::new(), Vec::new());
                for &(seq, record) in &records {
                    let status = if progress.contains_key(&seq) || new.iter().any(|(s, _)| *s == seq) {
                        let holds = store.rows.get(&seq).map(|(_, held)| *held);
                        let holds = holds.or_else(|| new.iter().find(|(s, _)| *s == seq).map(|(_, r)| *r));
                        if holds == Some(record) {
                            Ack::Duplicate
                        } else {
                            Ack::SeqReused
                        }
                    } else {
                        new.push((seq, record));
                        Ack::Accepted
                    };
                    acks.push((seq, record, status));
                }
                Stage::WriteRows { new, acks }
            }
            Stage::WriteRows { new, acks } => {
                let (epoch, _) = self.claim.as_ref().expect("claimed");
                for &(seq, record) in &new {
                    let row = store.rows.entry(seq).or_insert((0, record));
                    if *epoch >= row.0 {
                        *row = (*epoch, record);
                    }
                }
                Stage::Commit { new, acks }
            }
            Stage::Commit { new, acks } => {
                let (epoch, progress) = self.claim.as_mut().expect("claimed");
                if *epoch == store.epoch {
                    for &(seq, record) in &new {
                        progress.insert(seq, record);
                    }
                    store.progress = progress.clone();
                    acked.extend(acks);
                    return;
                }
                // Fenced: nothing acked; claim again and decide the batch anew.
                self.claim = None;
                Stage::Claim
            }
        };
        self.batch = Some((records, next));
    }
}

/// A batch: seqs `first..first + len`, each its own record, or (`reuse`) a record of
/// another id on the same seqs.
fn batch_of(first: u64, len: u64, reuse: bool) -> Vec<(u64, u32)> {
    (first..first + len).map(|seq| (seq, seq as u32 * 10 + u32::from(reuse))).collect()
}

#[derive(Debug, Clone)]
enum Event {
    /// A device sends a batch to a gateway.
    Send { gateway: usize, first: u64, len: u64, reuse: bool },
    /// A gateway takes one step.
    Step { gateway: usize },
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    let event = prop_oneof![
        1 => (0..3usize, 1..12u64, 1..4u64, prop::bool::weighted(0.15))
            .prop_map(|(gateway, first, len, reuse)| Event::Send { gateway, first, len, reuse }),
        4 => (0..3usize).prop_map(|gateway| Event::Step { gateway }),
    ];
    prop::collection::vec(event, 1..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn no_seq_is_acked_twice_and_nothing_acked_is_lost(events in events()) {
        let mut store = Store::default();
        let mut gateways: Vec<Gateway> = (0..3).map(|_| Gateway::default()).collect();
        let mut acked = Vec::new();
        for event in events {
            match event {
                Event::Send { gateway, first, len, reuse } => gateways[gateway].queued.push(batch_of(first, len, reuse)),
                Event::Step { gateway } => gateways[gateway].step(&mut store, &mut acked),
            }
        }
        // Then each gateway finishes what it holds while the others wait, as the
        // jittered backoff between runs lets one of several racing gateways do.
        for gateway in &mut gateways {
            for _ in 0..1_000 {
                gateway.step(&mut store, &mut acked);
            }
        }
        prop_assert!(gateways.iter().all(|gateway| gateway.batch.is_none() && gateway.queued.is_empty()));

        let mut accepted: BTreeMap<u64, u32> = BTreeMap::new();
        for &(seq, record, ack) in &acked {
            let holds = store.progress.get(&seq).copied();
            match ack {
                Ack::Accepted => {
                    let earlier = accepted.insert(seq, record);
                    prop_assert!(earlier.is_none() || earlier == Some(record), "seq {seq} accepted twice");
                    prop_assert_eq!(holds, Some(record), "seq {} acked accepted, then lost", seq);
                }
                Ack::Duplicate => prop_assert_eq!(holds, Some(record), "seq {} acked duplicate of another", seq),
                Ack::SeqReused => prop_assert_ne!(holds, Some(record), "seq {} refused its own record", seq),
            }
        }
        for (seq, record) in &store.progress {
            prop_assert_eq!(store.rows.get(seq).map(|(_, held)| *held), Some(*record), "seq {} has no row", seq);
        }
    }
}
