//! Device epochs and employee versions for the embedded store. Only one gateway ever
//! opens an embedded store, and a restart starts every actor afresh, so both live in
//! memory: they keep the trait's contract (a stale epoch's commit is refused, a
//! placement on a moved timeline is refused) for that one process, which is all the
//! contract asks of a store used by one process.

use crate::store::{DeviceWrite, EmployeeAdvance, GatewayMember, StoreError};
use dashmap::DashMap;
use std::time::{Duration, Instant};

#[derive(Default)]
pub(super) struct Ownership {
    epochs: DashMap<String, i64>,
    versions: DashMap<(String, String), i64>,
    /// The gateways' heartbeats and when each expires: only ever this process's own.
    gateways: DashMap<String, (GatewayMember, Instant)>,
}

impl Ownership {
    /// A new epoch for the device, one past the last.
    pub(super) fn claim(&self, device_id: &str) -> i64 {
        let mut epoch = self.epochs.entry(device_id.to_owned()).or_insert(0);
        *epoch += 1;
        *epoch
    }

    /// Refuses a device write under an epoch that is not the device's latest (0 for a
    /// device nobody claimed).
    pub(super) fn check_epoch(&self, device: &DeviceWrite) -> Result<(), StoreError> {
        let latest = self.epochs.get(&device.device_id).map_or(0, |epoch| *epoch);
        if latest == device.epoch {
            Ok(())
        } else {
            Err(StoreError::Fenced(format!("device {} was claimed again", device.device_id)))
        }
    }

    pub(super) fn employee_version(&self, org_id: &str, employee_id: &str) -> i64 {
        self.versions.get(&(org_id.to_owned(), employee_id.to_owned())).map_or(0, |version| *version)
    }

    /// Advances each employee's version from the one its placement read; the first that
    /// moved fails (those advanced before it only make their readers read again).
    pub(super) fn advance(&self, employees: &[EmployeeAdvance]) -> Result<(), StoreError> {
        for advance in employees {
            let key = (advance.org_id.clone(), advance.employee_id.clone());
            let mut version = self.versions.entry(key).or_insert(0);
            if *version != advance.read_version {
                return Err(StoreError::TimelineMoved(format!("{}/{}", advance.org_id, advance.employee_id)));
            }
            *version += 1;
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
