//! What the admin API and the console both show and do, read from and written to the
//! store in one place: the JSON routes serialise these values, the console renders them
//! as HTML. So the two can never disagree on a figure or on a rule.
//!
//! Every read here is one page of at most `MAX_LIMIT` items, or a fixed number of
//! reads: nothing reads a whole org.

use crate::clock::now_ms;
use crate::error::ApiError;
use crate::state::AppState;
use otg_actors::store::{
    ConflictRecord, DeviceEnrolment, DeviceHealth, DeviceProgress, Page, RecordStatus, Resolution, StoreError,
    SyncTotals, TimelineEntry,
};
use otg_actors::ResolveError;
use otg_schema::validate::check_id;
use otg_schema::{DeviceSecret, OrgSettings, RecordKind, UtcDay};
use serde::Serialize;
use std::collections::HashSet;

const DAY_MS: i64 = 86_400_000;

/// One device's line of the sync status: its progress, totals and open conflicts, and
/// its health against the org's limits.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSyncStatus {
    pub device_id: String,
    pub employee_id: Option<String>,
    pub status: &'static str,
    pub last_sync_at: Option<i64>,
    pub next_seq: u64,
    pub pending: Option<u64>,
    pub batches_succeeded: u64,
    pub failures: u64,
    pub open_conflicts: usize,
    pub health: HealthView,
}

/// What a device reported of its health, beside the org's limits it is read against.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    pub queue_bytes: Option<u64>,
    pub storage_limit_bytes: u64,
    /// `queue_bytes` as a share of the org's storage limit, in percent.
    pub storage_used_percent: Option<f64>,
    pub app_version: Option<String>,
    pub oldest_pending_at: Option<i64>,
    pub reported_at: Option<i64>,
    pub max_offline_days: u32,
    /// Silent (no batch acked) for longer than the org's max offline days, or never
    /// synced since it was enrolled that long ago.
    pub silent_too_long: bool,
    /// Its oldest queued record is older than the org's max offline days: the gateway
    /// will reject it `too_old`.
    pub pending_too_old: bool,
}

impl HealthView {
    fn of(device: &DeviceEnrolment, progress: &DeviceProgress, settings: &OrgSettings, now: i64) -> Self {
        let DeviceHealth { queue_bytes, app_version, oldest_pending_at, reported_at } = progress.health.clone();
        let offline_limit = i64::from(settings.max_offline_days) * DAY_MS;
        let last_heard = progress.last_sync_at.unwrap_or(device.enrolled_at);
        HealthView {
            queue_bytes,
            storage_limit_bytes: settings.storage_limit_bytes,
            storage_used_percent: queue_bytes
                .map(|bytes| (bytes as f64 * 100.0 / settings.storage_limit_bytes.max(1) as f64 * 10.0).round() / 10.0),
            app_version,
            oldest_pending_at,
            reported_at,
            max_offline_days: settings.max_offline_days,
            silent_too_long: device.revoked_at.is_none() && now - last_heard > offline_limit,
            pending_too_old: oldest_pending_at.is_some_and(|oldest| now - oldest > offline_limit),
        }
    }
}

/// `status` of a device as the admin views name it.
pub fn device_status(device: &DeviceEnrolment) -> &'static str {
    if device.revoked_at.is_some() {
        "revoked"
    } else {
        "active"
    }
}

/// One page of an org's devices in device id order with their sync status, and the
/// cursor after the last one read.
pub async fn sync_status_page(
    state: &AppState,
    org_id: &str,
    page: Page<'_>,
) -> Result<(Vec<DeviceSyncStatus>, Option<Vec<u8>>), ApiError> {
    let settings = state.store.org_settings(org_id).await?;
    let devices = state.store.devices_of_org(org_id, page).await?;
    let now = now_ms();
    let mut rows = Vec::with_capacity(devices.len());
    for (device, _) in &devices {
        rows.push(device_sync_status(state, device, &settings, now).await?);
    }
    let last = devices.last().map(|(_, cursor)| cursor.clone());
    Ok((rows, last))
}

/// One device's sync status.
pub async fn device_sync_status(
    state: &AppState,
    device: &DeviceEnrolment,
    settings: &OrgSettings,
    now: i64,
) -> Result<DeviceSyncStatus, ApiError> {
    let progress = state.store.device_progress(&device.device_id).await?;
    let totals = state.store.device_totals(&device.device_id).await?;
    let open_conflicts = state.store.open_conflicts_of_device(&device.device_id).await?.len();
    Ok(DeviceSyncStatus {
        device_id: device.device_id.clone(),
        employee_id: device.employee_id.clone(),
        status: device_status(device),
        last_sync_at: progress.last_sync_at,
        next_seq: progress.received.next_seq(),
        pending: progress.reported_pending,
        batches_succeeded: totals.batches_succeeded,
        failures: totals.batches_failed,
        open_conflicts,
        health: HealthView::of(device, &progress, settings, now),
    })
}

/// The windows the sync statistics are read over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsWindow {
    Hour,
    Day,
    Week,
}

impl StatsWindow {
    pub const ALL: [StatsWindow; 3] = [StatsWindow::Hour, StatsWindow::Day, StatsWindow::Week];

    pub fn parse(window: &str) -> Result<Self, ApiError> {
        match window {
            "1h" => Ok(StatsWindow::Hour),
            "24h" => Ok(StatsWindow::Day),
            "7d" => Ok(StatsWindow::Week),
            other => Err(ApiError::BadRequest(format!("window: {other:?} is not 1h, 24h or 7d"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatsWindow::Hour => "1h",
            StatsWindow::Day => "24h",
            StatsWindow::Week => "7d",
        }
    }

    pub fn hours(self) -> i64 {
        match self {
            StatsWindow::Hour => 1,
            StatsWindow::Day => 24,
            StatsWindow::Week => 168,
        }
    }
}

/// An org's sync statistics over a window of whole UTC hours (the current one and those
/// before it).
#[derive(Debug, Clone, Serialize)]
pub struct SyncStats {
    pub org_id: String,
    pub window: &'static str,
    pub batches_succeeded: u64,
    pub batches_failed: u64,
    pub records: RecordCounts,
    pub success_rate: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RecordCounts {
    pub accepted: u64,
    pub duplicate: u64,
    pub conflict: u64,
    pub rejected: u64,
}

pub async fn sync_stats(state: &AppState, org_id: &str, window: StatsWindow) -> Result<SyncStats, ApiError> {
    let since = now_ms() - (window.hours() - 1) * 3_600_000;
    let SyncTotals { batches_succeeded, batches_failed, accepted, duplicate, conflict, rejected } =
        state.store.sync_totals(org_id, since).await?;
    let batches = batches_succeeded + batches_failed;
    Ok(SyncStats {
        org_id: org_id.to_owned(),
        window: window.as_str(),
        batches_succeeded,
        batches_failed,
        records: RecordCounts { accepted, duplicate, conflict, rejected },
        success_rate: (batches > 0).then(|| batches_succeeded as f64 / batches as f64),
    })
}

/// The conflicts of an org, open or resolved (or both), one page.
pub async fn conflicts_page(
    state: &AppState,
    org_id: &str,
    status: Option<&str>,
    page: Page<'_>,
) -> Result<Vec<(ConflictRecord, Vec<u8>)>, ApiError> {
    let open = match status {
        None => None,
        Some("open") => Some(true),
        Some("resolved") => Some(false),
        Some(other) => return Err(ApiError::BadRequest(format!("status: {other:?} is not open or resolved"))),
    };
    Ok(state.store.conflicts(org_id, open, page).await?)
}

/// An administrator's decision on a conflict.
pub async fn resolve_conflict(
    state: &AppState,
    conflict_id: &str,
    resolution: Resolution,
    note: String,
) -> Result<ConflictRecord, ApiError> {
    let conflict = state
        .store
        .conflict(conflict_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no conflict {conflict_id}")))?;
    state.devices.resolve_conflict(&conflict, resolution, note, now_ms()).await.map_err(|error| match error {
        ResolveError::NotFound(id) => ApiError::NotFound(format!("no conflict {id}")),
        ResolveError::AlreadyResolved(id) => ApiError::AlreadyResolved(format!("conflict {id} is already resolved")),
        ResolveError::Store(error) => error.into(),
    })
}

/// A device enrolled now, with its secret: shown this once.
pub struct Enrolled {
    pub device_id: String,
    pub secret: DeviceSecret,
}

/// Enrols a device; ids are 1 to 128 characters without control characters.
pub async fn enrol_device(
    state: &AppState,
    device_id: String,
    org_id: String,
    employee_id: Option<String>,
) -> Result<Enrolled, ApiError> {
    let ids = [("device_id", Some(&device_id)), ("org_id", Some(&org_id)), ("employee_id", employee_id.as_ref())];
    for (field, id) in ids {
        if let Some(id) = id {
            check_id(field, id).map_err(|rejection| ApiError::BadRequest(rejection.detail.unwrap_or_default()))?;
        }
    }
    let secret = DeviceSecret(rand::random());
    let enrolment = DeviceEnrolment {
        device_id: device_id.clone(),
        org_id,
        employee_id,
        secret: secret.0,
        enrolled_at: now_ms(),
        revoked_at: None,
    };
    match state.store.enrol_device(&enrolment).await {
        Ok(()) => Ok(Enrolled { device_id, secret }),
        Err(StoreError::AlreadyExists) => {
            Err(ApiError::AlreadyExists(format!("device {device_id:?} is already enrolled")))
        }
        Err(error) => Err(error.into()),
    }
}

/// An enrolled device (the caller shows it without its secret).
pub async fn show_device(state: &AppState, device_id: &str) -> Result<DeviceEnrolment, ApiError> {
    state.store.device(device_id).await?.ok_or_else(|| unknown_device(device_id))
}

pub async fn revoke_device(state: &AppState, device_id: &str) -> Result<DeviceEnrolment, ApiError> {
    state.store.revoke_device(device_id, now_ms()).await?.ok_or_else(|| unknown_device(device_id))
}

fn unknown_device(device_id: &str) -> ApiError {
    ApiError::NotFound(format!("no device {device_id:?}"))
}

/// Replaces an org's settings after checking every field; the error names the field
/// (`field: rule`).
pub async fn replace_settings(state: &AppState, org_id: &str, settings: &OrgSettings) -> Result<(), ApiError> {
    check_id("org_id", org_id).map_err(|rejection| ApiError::BadRequest(rejection.detail.unwrap_or_default()))?;
    settings.validate().map_err(ApiError::BadRequest)?;
    Ok(state.store.put_org_settings(org_id, settings).await?)
}

/// A shift: a check-in and the check-out that closes it, if one has yet.
#[derive(Debug, PartialEq, Serialize)]
pub struct Shift {
    pub check_in: String,
    pub from: i64,
    pub check_out: Option<String>,
    pub to: Option<i64>,
}

/// One UTC day of an employee's records in time order, and the effective shifts.
#[derive(Debug, Serialize)]
pub struct AttendanceDay {
    pub org_id: String,
    pub employee_id: String,
    pub day: String,
    pub records: Vec<TimelineEntry>,
    pub shifts: Vec<Shift>,
}

pub async fn attendance_day(
    state: &AppState,
    org_id: &str,
    employee_id: &str,
    day: &str,
) -> Result<AttendanceDay, ApiError> {
    let day = UtcDay::parse(day).ok_or_else(|| ApiError::BadRequest("day: must be a date YYYY-MM-DD".into()))?;
    let settings = state.store.org_settings(org_id).await?;
    let records = state.store.timeline(org_id, employee_id, day).await?;
    // The next day too: a shift begun late this day closes after midnight.
    let next_day = state.store.timeline(org_id, employee_id, day.next()).await?;
    let max_shift_ms = i64::from(settings.max_shift_hours) * 3_600_000;
    let shifts = effective_shifts(records.iter().chain(&next_day), day, max_shift_ms);
    Ok(AttendanceDay {
        org_id: org_id.to_owned(),
        employee_id: employee_id.to_owned(),
        day: day.to_string(),
        records,
        shifts,
    })
}

/// The shifts begun on `day`: each active check-in with the next active check-out,
/// if it comes before another check-in and within `max_shift_ms`.
fn effective_shifts<'a>(
    entries: impl Iterator<Item = &'a TimelineEntry>,
    day: UtcDay,
    max_shift_ms: i64,
) -> Vec<Shift> {
    let mut seen = HashSet::new();
    let mut effective: Vec<&TimelineEntry> = entries
        .filter(|entry| entry.status == RecordStatus::Active && entry.leave.is_none())
        .filter(|entry| matches!(entry.kind, RecordKind::CheckIn | RecordKind::CheckOut))
        .filter(|entry| seen.insert(&*entry.record_id))
        .collect();
    effective.sort_by_key(|entry| entry.recorded_at);
    let mut shifts = Vec::new();
    for (index, check_in) in effective.iter().enumerate() {
        if check_in.kind != RecordKind::CheckIn || UtcDay::of_unix_ms(check_in.recorded_at) != day {
            continue;
        }
        let check_out = effective[index + 1..].first().filter(|next| {
            next.kind == RecordKind::CheckOut && next.recorded_at - check_in.recorded_at <= max_shift_ms
        });
        shifts.push(Shift {
            check_in: check_in.record_id.to_string(),
            from: check_in.recorded_at,
            check_out: check_out.map(|entry| entry.record_id.to_string()),
            to: check_out.map(|entry| entry.recorded_at),
        });
    }
    shifts
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY0: i64 = 1_764_028_800_000;
    const HOUR: i64 = 3_600_000;

    fn entry(id: &str, kind: RecordKind, at: i64, status: RecordStatus) -> TimelineEntry {
        TimelineEntry {
            org_id: "acme".into(),
            employee_id: "emp".into(),
            recorded_at: at,
            device_id: "dev".into(),
            seq: 1,
            record_id: id.into(),
            kind,
            leave: None,
            status,
        }
    }

    #[test]
    fn shifts_pair_active_check_ins_with_the_next_check_out_across_midnight() {
        use RecordKind::*;
        use RecordStatus::*;
        let entries = [
            entry("in-1", CheckIn, DAY0 + 8 * HOUR, Active),
            entry("dup", CheckIn, DAY0 + 8 * HOUR + 30_000, Superseded),
            entry("break", BreakStart, DAY0 + 12 * HOUR, Active),
            entry("out-1", CheckOut, DAY0 + 16 * HOUR, Active),
            entry("in-2", CheckIn, DAY0 + 22 * HOUR, Active),
            entry("out-2", CheckOut, DAY0 + 30 * HOUR, Active),
        ];
        let shifts = effective_shifts(entries.iter(), UtcDay::of_unix_ms(DAY0), 16 * HOUR);
        let pairs: Vec<(&str, Option<&str>)> =
            shifts.iter().map(|shift| (shift.check_in.as_str(), shift.check_out.as_deref())).collect();
        assert_eq!(pairs, vec![("in-1", Some("out-1")), ("in-2", Some("out-2"))]);
    }

    fn device(enrolled_at: i64, revoked_at: Option<i64>) -> DeviceEnrolment {
        DeviceEnrolment {
            device_id: "dev".into(),
            org_id: "acme".into(),
            employee_id: None,
            secret: [0; 32],
            enrolled_at,
            revoked_at,
        }
    }

    #[test]
    fn health_is_read_against_the_orgs_limits() {
        let settings = OrgSettings { max_offline_days: 7, storage_limit_bytes: 1_000_000, ..OrgSettings::default() };
        let now = DAY0 + 30 * DAY_MS;
        let progress = DeviceProgress {
            last_sync_at: Some(now - 8 * DAY_MS),
            health: DeviceHealth {
                queue_bytes: Some(250_000),
                app_version: Some("2.4.1".into()),
                oldest_pending_at: Some(now - 9 * DAY_MS),
                reported_at: Some(now - 8 * DAY_MS),
            },
            ..DeviceProgress::default()
        };
        let health = HealthView::of(&device(DAY0, None), &progress, &settings, now);
        assert_eq!(health.storage_used_percent, Some(25.0));
        assert!(health.silent_too_long && health.pending_too_old);
        let recent = DeviceProgress { last_sync_at: Some(now - DAY_MS), ..DeviceProgress::default() };
        let health = HealthView::of(&device(DAY0, None), &recent, &settings, now);
        assert!(!health.silent_too_long && !health.pending_too_old);
        assert_eq!(health.storage_used_percent, None, "nothing reported, nothing computed");
        let never = HealthView::of(&device(now - 8 * DAY_MS, None), &DeviceProgress::default(), &settings, now);
        assert!(never.silent_too_long, "enrolled long ago and never synced");
        let revoked = HealthView::of(&device(DAY0, Some(DAY0)), &DeviceProgress::default(), &settings, now);
        assert!(!revoked.silent_too_long, "a revoked device is expected to be silent");
    }
}
