//! Reads wait for the live commits they could see: a live commit is acked once its log
//! entry is durable, a moment before the committer applies it to the tables.
//!
//! A read of a device's progress or seqs waits only for that device's acked entries, a
//! read of an employee's timeline only for that employee's; every other read (admin
//! listings, totals, conflicts) waits for all entries acked before it began. The
//! committer applies live entries ahead of any backlog, so a wait is short: the
//! backlog commit being written, at most.

use crate::store::StoreError;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::watch;

/// What a live commit touches that a read may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Touched {
    Device(String),
    /// (org, employee)
    Employee(String, String),
}

pub(super) struct ReadBarrier {
    pending: Mutex<Pending>,
    /// The last live log entry applied to the tables; `None` once applying failed.
    applied: watch::Sender<Option<u64>>,
}

#[derive(Default)]
struct Pending {
    /// The last entry acked.
    acked: u64,
    /// The last entry of each thing touched by entries not yet applied.
    last_of: HashMap<Touched, u64>,
    /// Entries acked and not yet applied, in order, with what they touch.
    entries: VecDeque<(u64, Vec<Touched>)>,
}

impl ReadBarrier {
    /// A barrier whose entries up to `applied` are in the tables.
    pub fn new(applied: u64) -> Self {
        ReadBarrier {
            pending: Mutex::new(Pending { acked: applied, ..Pending::default() }),
            applied: watch::Sender::new(Some(applied)),
        }
    }

    /// Entry `lsn` is about to be acked: reads of what it touches wait for its apply.
    pub fn acked(&self, lsn: u64, touched: Vec<Touched>) {
        let mut pending = self.pending.lock().expect("read barrier lock");
        pending.acked = lsn;
        for thing in &touched {
            pending.last_of.insert(thing.clone(), lsn);
        }
        pending.entries.push_back((lsn, touched));
    }

    /// Entries up to `lsn` are in the tables (and so were acked).
    pub fn applied(&self, lsn: u64) {
        let mut pending = self.pending.lock().expect("read barrier lock");
        pending.acked = pending.acked.max(lsn);
        while pending.entries.front().is_some_and(|(entry, _)| *entry <= lsn) {
            let (_, touched) = pending.entries.pop_front().expect("checked above");
            for thing in touched {
                if pending.last_of.get(&thing).is_some_and(|last| *last <= lsn) {
                    pending.last_of.remove(&thing);
                }
            }
        }
        drop(pending);
        // Once failed, always failed.
        self.applied.send_if_modified(|applied| match applied {
            Some(applied) => {
                *applied = lsn;
                true
            }
            None => false,
        });
    }

    /// Applying failed: a read that waits for an entry, now or later, gets an error
    /// instead of stale data.
    pub fn fail(&self) {
        self.applied.send_replace(None);
    }

    /// Waits until what `touched` names (everything, if `None`) is applied.
    pub async fn wait(&self, touched: Option<&Touched>) -> Result<(), StoreError> {
        let target = {
            let pending = self.pending.lock().expect("read barrier lock");
            match touched {
                Some(thing) => pending.last_of.get(thing).copied(),
                None => Some(pending.acked),
            }
        };
        let Some(target) = target else { return Ok(()) };
        let mut applied = self.applied.subscribe();
        let reached = applied.wait_for(|applied| applied.is_none_or(|applied| applied >= target)).await;
        match reached.map(|applied| *applied) {
            Ok(Some(_)) => Ok(()),
            _ => Err(StoreError::Failed(
                "applying acked live commits failed; restart the gateway once the disk is fixed".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn device(id: &str) -> Touched {
        Touched::Device(id.into())
    }

    async fn waits(barrier: &Arc<ReadBarrier>, touched: Option<Touched>) -> bool {
        let barrier = barrier.clone();
        let read = tokio::spawn(async move { barrier.wait(touched.as_ref()).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        !read.is_finished()
    }

    #[tokio::test]
    async fn a_read_waits_only_for_the_entries_it_could_see() {
        let barrier = Arc::new(ReadBarrier::new(4));
        assert!(!waits(&barrier, None).await, "nothing pending: no read waits");
        barrier.acked(5, vec![device("a"), Touched::Employee("acme".into(), "e1".into())]);
        barrier.acked(6, vec![device("b")]);
        assert!(waits(&barrier, Some(device("a"))).await);
        assert!(waits(&barrier, Some(Touched::Employee("acme".into(), "e1".into()))).await);
        assert!(!waits(&barrier, Some(device("c"))).await, "an untouched device reads at once");
        assert!(!waits(&barrier, Some(Touched::Employee("acme".into(), "e2".into()))).await);
        barrier.applied(5);
        assert!(!waits(&barrier, Some(device("a"))).await);
        assert!(waits(&barrier, Some(device("b"))).await);
        assert!(waits(&barrier, None).await, "a listing waits for everything acked");
        barrier.applied(6);
        assert!(!waits(&barrier, None).await);
    }

    #[tokio::test]
    async fn a_waiting_read_is_released_by_the_apply_or_fails_with_the_store() {
        let barrier = Arc::new(ReadBarrier::new(0));
        barrier.acked(1, vec![device("a")]);
        let read = tokio::spawn({
            let barrier = barrier.clone();
            async move { barrier.wait(Some(&device("a"))).await }
        });
        barrier.applied(1);
        assert!(read.await.unwrap().is_ok());
        barrier.acked(2, vec![device("a")]);
        let read = tokio::spawn({
            let barrier = barrier.clone();
            async move { barrier.wait(None).await }
        });
        barrier.fail();
        assert!(read.await.unwrap().is_err(), "no stale read once applying failed");
        barrier.acked(3, vec![device("a")]);
        barrier.applied(2);
        assert!(barrier.wait(Some(&device("a"))).await.is_err(), "an apply after the failure does not clear it");
    }
}
