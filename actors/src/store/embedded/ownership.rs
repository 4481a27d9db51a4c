//! Device epochs and employee versions for the embedded store. Only one gateway ever
//! opens an embedded store, and a restart starts every actor afresh, so both live in
//! memory: they keep the trait's contract (a stale epoch's commit is refused, a
//! placement on a moved timeline is refused) for that one process, which is all the
//! contract asks of a store used by one process.
//!
//! Both are bounded: past `TRACKED` devices (or employees) every entry is forgotten at
//! once, and forgetting only ever refuses. Epochs come from one counter, so none is
//! handed out twice: a holder of a forgotten epoch is fenced and claims again. An
//! employee's version goes up by one with each commit (the conflict actors' caches
//! count on it); a forgotten employee reads as the highest version any employee had
//! then, never lower than its own, so a placement that read an older one is placed
//! again and a version never goes back.

use crate::store::{CommitId, DeviceWrite, EmployeeAdvance, GatewayMember, StoreError};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Devices, and employees, tracked at most (about 100 bytes each).
const TRACKED: usize = 100_000;

#[derive(Default)]
pub(super) struct Ownership {
    epochs: DashMap<String, Held>,
    /// The last epoch handed out, to any device.
    last_epoch: AtomicI64,
    versions: Mutex<Versions>,
    /// The gateways' heartbeats and when each expires: only ever this process's own.
    gateways: DashMap<String, (GatewayMember, Instant)>,
}

/// A claimed device: its epoch, and the commit whose progress its next commit follows.
struct Held {
    epoch: i64,
    last_commit: Option<CommitId>,
}

#[derive(Default)]
struct Versions {
    /// Each employee's version and the commit that advanced it to that.
    of: HashMap<(String, String), (i64, Option<CommitId>)>,
    /// What an employee not in `of` reads: the highest version when the map was last
    /// forgotten.
    forgotten: i64,
}

impl Ownership {
    /// A new epoch for the device, greater than any before. Its holder reads the
    /// progress after this (so every commit under an earlier epoch is either in it or
    /// refused), and then says which commit that progress is of (`follows`).
    pub(super) fn claim(&self, device_id: &str) -> i64 {
        if self.epochs.len() >= TRACKED {
            self.epochs.clear();
        }
        let epoch = self.last_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        self.epochs.insert(device_id.to_owned(), Held { epoch, last_commit: None });
        epoch
    }

    /// The next commit under `epoch` must follow `last_commit`: the commit of the
    /// progress its claim read.
    pub(super) fn follows(&self, device_id: &str, epoch: i64, last_commit: Option<CommitId>) {
        if let Some(mut held) = self.epochs.get_mut(device_id).filter(|held| held.epoch == epoch) {
            held.last_commit = last_commit;
        }
    }

    /// Refuses a device write under an epoch that is not the device's latest (0 for a
    /// device nobody claimed), or one that does not follow the device's last commit
    /// (unless it is that commit, sent again); then takes it as the last commit.
    pub(super) fn check_epoch(&self, device: &DeviceWrite) -> Result<(), StoreError> {
        let fenced = |why: &str| Err(StoreError::Fenced(format!("device {} {why}", device.device_id)));
        let Some(mut held) = self.epochs.get_mut(&device.device_id) else {
            return if device.epoch == 0 { Ok(()) } else { fenced("was claimed again") };
        };
        if held.epoch != device.epoch {
            return fenced("was claimed again");
        }
        let this = device.progress.last_commit;
        if device.epoch != 0 && held.last_commit != device.after && held.last_commit != this {
            return fenced("has a newer progress than the one this commit follows");
        }
        held.last_commit = this;
        Ok(())
    }

    pub(super) fn employee_version(&self, org_id: &str, employee_id: &str) -> i64 {
        let versions = self.versions.lock().expect("versions lock");
        versions
            .of
            .get(&(org_id.to_owned(), employee_id.to_owned()))
            .map_or(versions.forgotten, |(version, _)| *version)
    }

    /// Advances each employee's version from the one its placement read, marked with
    /// `commit`; a version `commit` itself advanced to (sent again) counts as advanced.
    /// The first that moved fails (those advanced before it only make their readers
    /// read again).
    pub(super) fn advance(&self, employees: &[EmployeeAdvance], commit: CommitId) -> Result<(), StoreError> {
        let mut versions = self.versions.lock().expect("versions lock");
        if versions.of.len() + employees.len() > TRACKED {
            versions.forgotten = versions.of.values().map(|(version, _)| *version).fold(versions.forgotten, i64::max);
            versions.of.clear();
        }
        for advance in employees {
            let key = (advance.org_id.clone(), advance.employee_id.clone());
            let current = versions.of.get(&key).copied().unwrap_or((versions.forgotten, None));
            if current == (advance.new_version, Some(commit)) {
                continue;
            }
            if current.0 != advance.read_version {
                return Err(StoreError::TimelineMoved(format!("{}/{}", advance.org_id, advance.employee_id)));
            }
            versions.of.insert(key, (advance.new_version, Some(commit)));
        }
        Ok(())
    }

    pub(super) fn heartbeat(&self, gateway: &GatewayMember, ttl: Duration) {
        self.gateways.insert(gateway.gateway_id.clone(), (gateway.clone(), Instant::now() + ttl));
    }

    pub(super) fn live_gateways(&self) -> Vec<GatewayMember> {
        let now = Instant::now();
        self.gateways.retain(|_, (_, expires)| *expires > now);
        let mut live: Vec<GatewayMember> = self.gateways.iter().map(|entry| entry.0.clone()).collect();
        live.sort_by(|a, b| a.gateway_id.cmp(&b.gateway_id));
        live
    }

    pub(super) fn leave(&self, gateway_id: &str) {
        self.gateways.remove(gateway_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advance(org: &str, employee: &str, read_version: i64) -> EmployeeAdvance {
        EmployeeAdvance {
            org_id: org.into(),
            employee_id: employee.into(),
            read_version,
            new_version: read_version + 1,
        }
    }

    /// Past `TRACKED` employees everything is forgotten, and what was forgotten only
    /// ever refuses: an employee reads no lower than before, a placement that read a
    /// version below what it reads now is placed again, and commits go on by one.
    #[test]
    fn forgotten_versions_refuse_and_never_go_back() {
        let ownership = Ownership::default();
        let place = |employee: &str| {
            let read = ownership.employee_version("acme", employee);
            ownership.advance(&[advance("acme", employee, read)], CommitId::fresh())
        };
        place("emp-a").unwrap();
        let read_by_a_placement = ownership.employee_version("acme", "emp-a");
        for _ in 0..3 {
            place("emp-busy").unwrap();
        }
        for n in 0..TRACKED {
            let employee = format!("emp-{n}");
            // The placement that makes it forget is refused too, and placed again.
            place(&employee).or_else(|_| place(&employee)).unwrap();
        }
        assert!(ownership.versions.lock().unwrap().of.len() <= TRACKED, "bounded");
        let fresh = ownership.employee_version("acme", "emp-a");
        assert!(fresh > read_by_a_placement, "{fresh} reads no lower than before, and here higher");
        let moved = ownership.advance(&[advance("acme", "emp-a", read_by_a_placement)], CommitId::fresh());
        assert!(matches!(moved, Err(StoreError::TimelineMoved(_))), "{moved:?}");
        ownership.advance(&[advance("acme", "emp-a", fresh)], CommitId::fresh()).unwrap();
        assert_eq!(ownership.employee_version("acme", "emp-a"), fresh + 1);
    }

    /// Past `TRACKED` devices every epoch is forgotten: their holders are fenced and
    /// claim again, under an epoch greater than any before.
    #[test]
    fn forgotten_epochs_fence_their_holders() {
        let ownership = Ownership::default();
        let held = ownership.claim("dev-a");
        for n in 0..TRACKED {
            ownership.claim(&format!("dev-{n}"));
        }
        assert!(ownership.epochs.len() <= TRACKED, "bounded");
        let write = |epoch| DeviceWrite {
            device_id: "dev-a".into(),
            entries: vec![],
            progress: Default::default(),
            epoch,
            after: None,
            was_waiting: false,
        };
        assert!(matches!(ownership.check_epoch(&write(held)), Err(StoreError::Fenced(_))));
        let again = ownership.claim("dev-a");
        assert!(again > held);
        ownership.check_epoch(&write(again)).unwrap();
    }
}
