//! Who may write a device's progress and an employee's timeline, when several gateways
//! share one cluster: conditional writes (LWT) on `device_state.epoch` and
//! `employee_versions.version` (schema V002); and which gateways are alive (`gateways`,
//! rows that expire by TTL unless refreshed).
//!
//! A device is claimed by raising its epoch (`IF epoch = <the one read>`); its progress
//! is then read at serial consistency, after the claim, so no commit of the previous
//! owner can land unseen: from the claim on, that owner's progress writes (`IF epoch =
//! <its epoch>`) are refused. An epoch is the greater of one past the last and the
//! clock in microseconds, because it is also the write timestamp of the owner's seq
//! rows: a newer owner's rows then always win over a stale owner's late ones.

use super::queries::Conditional;
use super::writes::CommitTail;
use super::ScyllaStore;
use crate::store::codec::{decode, encode};
use crate::store::{CommitId, DeviceClaim, DeviceProgress, DeviceWrite, EmployeeAdvance, GatewayMember, StoreError};

use std::time::Duration;

/// Claims that may lose a race before the claim fails (the device is being sent to
/// several gateways at once; the caller answers 503 and the device retries).
const CLAIM_ATTEMPTS: usize = 8;

/// A device's row: its progress, its epoch, the tail of its last commit, and that
/// commit's id.
type StateRow = (Option<Vec<u8>>, Option<i64>, Option<Vec<u8>>, Option<uuid::Uuid>);

impl ScyllaStore {
    /// Takes the device for this gateway under a new epoch.
    pub(super) async fn claim(&self, device_id: &str) -> Result<DeviceClaim, StoreError> {
        let mut proposed = None;
        for _ in 0..CLAIM_ATTEMPTS {
            let state = self.serial_state(device_id).await?;
            let current = state.as_ref().and_then(|(_, epoch, _, _)| *epoch);
            if let (Some(proposed), Some(state)) = (proposed, state.clone()) {
                // An earlier attempt whose outcome was unknown did land.
                if current == Some(proposed) {
                    return self.claimed(proposed, state).await;
                }
            }
            let next = current.map_or(0, |epoch| epoch + 1).max(now_micros());
            proposed = Some(next);
            let outcome = match &state {
                None => self.conditional(&self.statements.claim_new_device, (device_id, next)).await?,
                Some(_) => self.conditional(&self.statements.claim_device, (next, device_id, current)).await?,
            };
            if let Conditional::Applied = outcome {
                // Read after the claim: every commit of an earlier owner is in it.
                let state = self.serial_state(device_id).await?.unwrap_or_default();
                return self.claimed(next, state).await;
            }
        }
        Err(StoreError::Unavailable(format!("device {device_id} is being claimed by several gateways at once")))
    }

    /// The device's claim under `epoch`, once the tail of its last commit is written:
    /// its owner may have died between that commit's point and its tail.
    async fn claimed(&self, epoch: i64, (progress, _, unfinished, _): StateRow) -> Result<DeviceClaim, StoreError> {
        if let Some(tail) = unfinished {
            let tail: CommitTail = decode(&tail)?;
            self.write_tail(&tail.audit, &tail.stats).await?;
        }
        Ok(DeviceClaim { epoch, progress: progress_of(progress.as_deref())? })
    }

    /// Writes the device's progress, marked with its commit, and the commit's tail to
    /// write after it, if the device still holds the epoch and the progress is still
    /// that of the commit this one follows: the commit point. A progress already marked
    /// with this commit is this commit's own write, landed by an earlier attempt.
    pub(super) async fn write_progress(&self, device: &DeviceWrite, tail: &[u8]) -> Result<(), StoreError> {
        let waiting = device.progress.evaluation.waiting_since.is_some();
        let encoded = encode(&device.progress);
        let commit = device.progress.last_commit.map(|commit| commit.0);
        let device_id = device.device_id.as_str();
        // Epoch 0 is a device nobody claimed: its row has no epoch yet (or no row at all).
        let epoch = (device.epoch != 0).then_some(device.epoch);
        let outcome = match epoch {
            Some(epoch) => {
                let values = (&encoded, waiting, tail, commit, device_id, epoch, device.after.map(|after| after.0));
                self.conditional(&self.statements.write_progress, values).await?
            }
            None => {
                let values = (&encoded, waiting, tail, commit, device_id);
                self.conditional(&self.statements.write_unclaimed_progress, values).await?
            }
        };
        let unknown = match outcome {
            Conditional::Applied => return Ok(()),
            Conditional::NotApplied => None,
            Conditional::Unknown(error) => Some(error),
        };
        match self.serial_state(device_id).await? {
            Some((_, _, _, Some(stored))) if commit == Some(stored) => Ok(()),
            Some((_, stored_epoch, _, stored_commit)) if unknown.is_none() || stored_epoch != epoch => {
                Err(StoreError::Fenced(format!(
                    "device {device_id} is held under epoch {stored_epoch:?} after commit {stored_commit:?}, this \
                     commit's claim was epoch {epoch:?} after {:?}",
                    device.after
                )))
            }
            // Still ours and not written: the whole commit is tried again.
            _ => Err(StoreError::Unavailable(format!(
                "progress of {device_id}: {}",
                unknown.map_or_else(|| "refused, yet unchanged".to_string(), |error| error.to_string())
            ))),
        }
    }

    /// An employee's timeline version: 0 for one never placed.
    pub(super) async fn read_employee_version(&self, org_id: &str, employee_id: &str) -> Result<i64, StoreError> {
        Ok(self.employee_state(org_id, employee_id).await?.0)
    }

    /// An employee's version (0 for one never placed) and the commit that advanced it.
    async fn employee_state(&self, org_id: &str, employee_id: &str) -> Result<(i64, Option<uuid::Uuid>), StoreError> {
        let rows: Vec<(Option<i64>, Option<uuid::Uuid>)> =
            self.rows(&self.statements.select_employee_version, (org_id, employee_id)).await?;
        Ok(rows.into_iter().next().map_or((0, None), |(version, commit)| (version.unwrap_or(0), commit)))
    }

    /// Advances each employee's version from the one its placement read, marked with
    /// `commit`; one that moved meanwhile fails the commit (`TimelineMoved`) before its
    /// progress: the rows already written are a cut commit's, which readers tolerate.
    /// A version this very commit advanced to (an earlier attempt's write that landed)
    /// counts as advanced; any other outcome, an unknown one too, counts as moved: the
    /// placement is made again on a fresh read, which is always safe.
    pub(super) async fn advance_employees(
        &self,
        employees: &[EmployeeAdvance],
        commit: CommitId,
    ) -> Result<(), StoreError> {
        let advances = employees.iter().map(|advance| async move {
            let (org, employee) = (advance.org_id.as_str(), advance.employee_id.as_str());
            let outcome = if advance.read_version == 0 {
                let values = (org, employee, advance.new_version, commit.0);
                self.conditional(&self.statements.insert_employee_version, values).await?
            } else {
                let values = (advance.new_version, commit.0, org, employee, advance.read_version);
                self.conditional(&self.statements.advance_employee_version, values).await?
            };
            if let Conditional::Applied = outcome {
                return Ok(());
            }
            match self.employee_state(org, employee).await? {
                (version, Some(by)) if version == advance.new_version && by == commit.0 => Ok(()),
                _ => Err(StoreError::TimelineMoved(format!("{org}/{employee}"))),
            }
        });
        futures_util::future::try_join_all(advances).await.map(drop)
    }

    pub(super) async fn write_heartbeat(&self, gateway: &GatewayMember, ttl: Duration) -> Result<(), StoreError> {
        let ttl_s = ttl.as_secs().clamp(1, i32::MAX as u64) as i32;
        let values = (gateway.gateway_id.as_str(), gateway.started_at, ttl_s);
        self.execute(&self.statements.insert_gateway, values).await.map(drop)
    }

    pub(super) async fn read_live_gateways(&self) -> Result<Vec<GatewayMember>, StoreError> {
        let rows: Vec<(String, Option<i64>)> = self.all_rows(&self.statements.select_gateways, ()).await?;
        let mut live: Vec<GatewayMember> = rows
            .into_iter()
            .map(|(gateway_id, started_at)| GatewayMember { gateway_id, started_at: started_at.unwrap_or(0) })
            .collect();
        live.sort_by(|a, b| a.gateway_id.cmp(&b.gateway_id));
        Ok(live)
    }

    pub(super) async fn delete_gateway(&self, gateway_id: &str) -> Result<(), StoreError> {
        self.execute(&self.statements.delete_gateway, (gateway_id,)).await.map(drop)
    }

    async fn serial_state(&self, device_id: &str) -> Result<Option<StateRow>, StoreError> {
        let rows: Vec<StateRow> = self.rows(&self.statements.select_state_serial, (device_id,)).await?;
        Ok(rows.into_iter().next())
    }
}

fn progress_of(encoded: Option<&[u8]>) -> Result<DeviceProgress, StoreError> {
    encoded.map_or(Ok(DeviceProgress::default()), decode)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_micros() as i64)
}
