//! The admin lists that walk several partitions: an audit trail over its days, an
//! org's conflicts over their months.
//!
//! Each page ends at a cursor of its own (the clustering position of its last item,
//! with the listing's owner), not the driver's paging state, which cannot span
//! partitions. A cursor of another listing is ignored: the listing starts over, and
//! can never read someone else's trail.

use super::ScyllaStore;
use crate::store::codec::{decode, encode};
use crate::store::{AuditEvent, AuditScope, ConflictRecord, Cursor, Page, StoreError};
use otg_schema::UtcDay;
use serde::{Deserialize, Serialize};

/// Where an audit listing goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AuditCursor {
    /// ("d", device) or ("o", org), as `audit_days` keys the trail.
    owner: (String, String),
    day: i32,
    at: i64,
    /// Empty in a device's trail, whose rows the device id does not order.
    device_id: String,
    key: i64,
}

/// Where a conflict listing goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ConflictCursor {
    org_id: String,
    month: i32,
    detected_at: i64,
    conflict_id: String,
}

impl ScyllaStore {
    pub(super) async fn audit_page(
        &self,
        scope: AuditScope<'_>,
        since: i64,
        until: i64,
        page: Page<'_>,
    ) -> Result<Vec<(AuditEvent, Cursor)>, StoreError> {
        let owner = match scope {
            AuditScope::Device(device_id) => ("d".to_string(), device_id.to_string()),
            AuditScope::Org(org_id) => ("o".to_string(), org_id.to_string()),
        };
        let after = page
            .after
            .and_then(|bytes| decode::<AuditCursor>(bytes).ok())
            .filter(|cursor| cursor.owner == owner && (since..=until).contains(&cursor.at));
        let from_day = after.as_ref().map_or(day_of(since), |cursor| cursor.day);
        let values = (owner.0.as_str(), owner.1.as_str(), from_day, day_of(until));
        let days: Vec<(i32,)> = self.all_rows(&self.statements.select_audit_days, values).await?;
        let mut found = Vec::with_capacity(page.limit);
        for (day,) in days {
            let mut after_here = after.clone().filter(|cursor| cursor.day == day);
            loop {
                let want = page.limit - found.len();
                let rows = self.audit_rows(scope, day, since, after_here.as_ref(), want).await?;
                let complete = rows.len() < want;
                for (at, device_id, key, event) in rows {
                    if at > until {
                        return Ok(found);
                    }
                    let cursor = AuditCursor { owner: owner.clone(), day, at, device_id, key };
                    found.push((decode(&event)?, encode(&cursor)));
                    after_here = Some(cursor);
                }
                if found.len() == page.limit {
                    return Ok(found);
                }
                if complete {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Up to `want` rows of one day of a trail after `after` (or from `since`):
    /// (at, device id, key, entry).
    async fn audit_rows(
        &self,
        scope: AuditScope<'_>,
        day: i32,
        since: i64,
        after: Option<&AuditCursor>,
        want: usize,
    ) -> Result<Vec<(i64, String, i64, Vec<u8>)>, StoreError> {
        let (statements, limit) = (&self.statements, want.min(i32::MAX as usize) as i32);
        let of_device = |rows: Vec<(i64, i64, Vec<u8>)>| {
            rows.into_iter().map(|(at, key, event)| (at, String::new(), key, event)).collect()
        };
        Ok(match (scope, after) {
            (AuditScope::Device(device), None) => {
                of_device(self.rows(&statements.select_audit_of_device_from, (device, day, since, limit)).await?)
            }
            (AuditScope::Device(device), Some(after)) => {
                let values = (device, day, after.at, after.key, limit);
                of_device(self.rows(&statements.select_audit_of_device_after, values).await?)
            }
            (AuditScope::Org(org), None) => {
                self.rows(&statements.select_audit_of_org_from, (org, day, since, limit)).await?
            }
            (AuditScope::Org(org), Some(after)) => {
                let values = (org, day, after.at, after.device_id.as_str(), after.key, limit);
                self.rows(&statements.select_audit_of_org_after, values).await?
            }
        })
    }

    /// An org's conflicts in detection order, month by month. A row whose conflict is
    /// not (yet) committed, or that an earlier detection of the conflict left behind,
    /// is skipped: the list shows each committed conflict once.
    pub(super) async fn conflicts_page(
        &self,
        org_id: &str,
        open: Option<bool>,
        page: Page<'_>,
    ) -> Result<Vec<(ConflictRecord, Cursor)>, StoreError> {
        let after = page.after.and_then(|bytes| decode::<ConflictCursor>(bytes).ok()).filter(|c| c.org_id == org_id);
        let first_month = after.as_ref().map_or(i32::MIN, |cursor| cursor.month);
        let months: Vec<(i32,)> = self.all_rows(&self.statements.select_conflict_months, (org_id, first_month)).await?;
        let mut found = Vec::with_capacity(page.limit);
        for (month,) in months {
            let mut position = match after.as_ref().filter(|cursor| cursor.month == month) {
                Some(cursor) => (cursor.detected_at, cursor.conflict_id.clone()),
                None => (i64::MIN, String::new()),
            };
            loop {
                let want = page.limit - found.len();
                let values = (org_id, month, position.0, position.1.as_str(), want.min(i32::MAX as usize) as i32);
                let rows: Vec<(i64, String)> = self.rows(&self.statements.select_conflicts_of_org, values).await?;
                let complete = rows.len() < want;
                for (detected_at, conflict_id) in rows {
                    let conflict = self.committed_conflict(&conflict_id).await?;
                    let listed = conflict.filter(|conflict| {
                        conflict.detected_at == detected_at && open.is_none_or(|open| open == conflict.is_open())
                    });
                    if let Some(conflict) = listed {
                        let cursor = ConflictCursor {
                            org_id: org_id.to_string(),
                            month,
                            detected_at,
                            conflict_id: conflict_id.clone(),
                        };
                        found.push((conflict, encode(&cursor)));
                        if found.len() == page.limit {
                            return Ok(found);
                        }
                    }
                    position = (detected_at, conflict_id);
                }
                if complete {
                    break;
                }
            }
        }
        Ok(found)
    }
}

/// The UTC day of a unix ms time, for any `i64` (a listing's open end included).
fn day_of(at: i64) -> i32 {
    UtcDay::of_unix_ms(at.clamp(UtcDay(i32::MIN).start_unix_ms(), UtcDay(i32::MAX).start_unix_ms())).0
}
