//! Turns decoded wire values into checked ones, naming the field and the rule broken.
//!
//! Batch-level problems reject the whole batch (400, the device keeps every record);
//! record-level problems reject only that record with a reason the device can show.

use crate::record::{LeaveSpan, RecordKind, ValidRecord};
use crate::time_bucket::UtcDay;
use crate::wire::{self, Batch, RejectReason, MAX_APP_VERSION_CHARS, MAX_BATCH_ID_CHARS, MAX_BATCH_RECORDS};

/// Longest `qr` payload, in characters.
pub const MAX_QR_CHARS: usize = 512;
/// Longest `note`, in characters.
pub const MAX_NOTE_CHARS: usize = 1000;
/// Longest id (device, org, employee), in characters: an otg limit, not a protocol one.
pub const MAX_ID_CHARS: usize = 128;
/// The longest leave one request may cover: a leave is written into every day it covers.
pub const MAX_LEAVE_DAYS: i32 = 366;
/// Records stamped before 2000-01-01 come from a device whose clock was never set.
const EARLIEST_RECORDED_AT_MS: i64 = 946_684_800_000;
/// How far ahead of the server a device clock may be before a record is nonsense.
const LATEST_RECORDED_AT_AHEAD_MS: i64 = 366 * 86_400_000;
const MS_PER_DAY: i64 = 86_400_000;

/// Why a whole batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("device_id {body:?} does not match the X-Device-Id header {header:?}")]
    DeviceMismatch { header: String, body: String },
    #[error("records: a batch carries 1 to {MAX_BATCH_RECORDS} records, this one has {0}")]
    RecordCount(usize),
    #[error("batch_id: must be 1 to {MAX_BATCH_ID_CHARS} characters")]
    BatchId,
    #[error("app_version: must be 1 to {MAX_APP_VERSION_CHARS} characters, none of them control characters")]
    AppVersion,
}

/// Checks what applies to the batch as a whole.
pub fn check_batch(batch: &Batch, header_device_id: &str) -> Result<(), BatchError> {
    if batch.device_id != header_device_id {
        return Err(BatchError::DeviceMismatch { header: header_device_id.to_owned(), body: batch.device_id.clone() });
    }
    if batch.records.is_empty() || batch.records.len() > MAX_BATCH_RECORDS {
        return Err(BatchError::RecordCount(batch.records.len()));
    }
    let batch_id_chars = batch.batch_id.chars().count();
    if batch_id_chars == 0 || batch_id_chars > MAX_BATCH_ID_CHARS {
        return Err(BatchError::BatchId);
    }
    // Shown to administrators: a version the app cannot state plainly is refused where
    // its developer sees it, like a malformed `batch_id`.
    if let Some(version) = &batch.app_version {
        let chars = version.chars().count();
        if chars == 0 || chars > MAX_APP_VERSION_CHARS || version.chars().any(char::is_control) {
            return Err(BatchError::AppVersion);
        }
    }
    Ok(())
}

/// What a record is checked against besides itself.
#[derive(Debug, Clone, Copy)]
pub struct RecordRules<'a> {
    pub now_ms: i64,
    pub max_offline_days: u32,
    /// The employee a personal device is enrolled for; `None` for a shared kiosk.
    pub enrolled_employee: Option<&'a str>,
}

/// Why one record will never be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// The field and the rule, for `invalid`.
    pub detail: Option<String>,
}

impl Rejection {
    fn invalid(detail: impl Into<String>) -> Self {
        Rejection { reason: RejectReason::Invalid, detail: Some(detail.into()) }
    }

    fn because(reason: RejectReason) -> Self {
        Rejection { reason, detail: None }
    }
}

/// Checks one record: first that every field is in range (`invalid`), then that the
/// device may record for this employee, then that it is not too old.
pub fn check_record(record: wire::Record, rules: &RecordRules) -> Result<ValidRecord, Rejection> {
    let seq = u64::try_from(record.seq)
        .ok()
        .filter(|&seq| seq >= 1)
        .ok_or_else(|| Rejection::invalid("seq: must be at least 1"))?;
    if uuid::Uuid::try_parse(&record.record_id).is_err() {
        return Err(Rejection::invalid("record_id: must be a UUID"));
    }
    let kind = RecordKind::parse(&record.kind)
        .ok_or_else(|| Rejection::invalid(format!("kind: {:?} is not one of {}", record.kind, RecordKind::NAMES)))?;
    check_id("employee_id", &record.employee_id)?;
    if record.recorded_at < EARLIEST_RECORDED_AT_MS || record.recorded_at > rules.now_ms + LATEST_RECORDED_AT_AHEAD_MS {
        return Err(Rejection::invalid(
            "recorded_at: must be unix ms after 2000-01-01 and within a year of the server clock",
        ));
    }
    if record.uptime_ms.is_some_and(|uptime| uptime < 0) {
        return Err(Rejection::invalid("uptime_ms: must not be negative"));
    }
    if let Some(geo) = &record.geo {
        if !(geo.lat.is_finite() && (-90.0..=90.0).contains(&geo.lat)) {
            return Err(Rejection::invalid("geo.lat: must be between -90 and 90"));
        }
        if !(geo.lon.is_finite() && (-180.0..=180.0).contains(&geo.lon)) {
            return Err(Rejection::invalid("geo.lon: must be between -180 and 180"));
        }
        if !(geo.accuracy_m.is_finite() && geo.accuracy_m >= 0.0) {
            return Err(Rejection::invalid("geo.accuracy_m: must be a finite number >= 0"));
        }
    }
    if record.face.is_some_and(|face| !face.score.is_finite()) {
        return Err(Rejection::invalid("face.score: must be a finite number"));
    }
    check_length("qr", record.qr.as_deref(), MAX_QR_CHARS)?;
    check_length("note", record.note.as_deref(), MAX_NOTE_CHARS)?;
    let leave = match (kind, record.leave) {
        (RecordKind::LeaveRequest, Some(leave)) => Some(check_leave(leave)?),
        (RecordKind::LeaveRequest, None) => return Err(Rejection::invalid("leave: required for a leave_request")),
        (_, Some(_)) => return Err(Rejection::invalid("leave: only a leave_request carries one")),
        (_, None) => None,
    };

    if rules.enrolled_employee.is_some_and(|enrolled| enrolled != record.employee_id) {
        return Err(Rejection::because(RejectReason::EmployeeMismatch));
    }
    let oldest_allowed = rules.now_ms - i64::from(rules.max_offline_days) * MS_PER_DAY;
    if record.recorded_at < oldest_allowed {
        return Err(Rejection::because(RejectReason::TooOld));
    }

    Ok(ValidRecord {
        seq,
        record_id: record.record_id,
        kind,
        employee_id: record.employee_id,
        recorded_at: record.recorded_at,
        uptime_ms: record.uptime_ms,
        offline: record.offline.unwrap_or(true),
        geo: record.geo,
        face: record.face,
        qr: record.qr,
        leave,
        note: record.note,
    })
}

/// Checks an id chosen by a device or an administrator.
pub fn check_id(field: &str, id: &str) -> Result<(), Rejection> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS || id.chars().any(char::is_control) {
        return Err(Rejection::invalid(format!(
            "{field}: must be 1 to {MAX_ID_CHARS} characters, none of them control characters"
        )));
    }
    Ok(())
}

fn check_length(field: &str, value: Option<&str>, max_chars: usize) -> Result<(), Rejection> {
    match value {
        Some(text) if text.chars().count() > max_chars => {
            Err(Rejection::invalid(format!("{field}: at most {max_chars} characters")))
        }
        _ => Ok(()),
    }
}

fn check_leave(leave: wire::Leave) -> Result<LeaveSpan, Rejection> {
    let from = UtcDay::parse(&leave.from).ok_or_else(|| Rejection::invalid("leave.from: must be a date YYYY-MM-DD"))?;
    let to = UtcDay::parse(&leave.to).ok_or_else(|| Rejection::invalid("leave.to: must be a date YYYY-MM-DD"))?;
    if to < from {
        return Err(Rejection::invalid("leave.to: must not be before leave.from"));
    }
    if to.0 - from.0 >= MAX_LEAVE_DAYS {
        return Err(Rejection::invalid(format!("leave: at most {MAX_LEAVE_DAYS} days")));
    }
    if leave.leave_type.trim().is_empty() || leave.leave_type.chars().count() > MAX_ID_CHARS {
        return Err(Rejection::invalid(format!("leave.leave_type: must be 1 to {MAX_ID_CHARS} characters")));
    }
    check_length("leave.reason", leave.reason.as_deref(), MAX_NOTE_CHARS)?;
    Ok(LeaveSpan { from, to, leave_type: leave.leave_type, reason: leave.reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Geo, Leave, Record};

    const NOW: i64 = 1_764_072_000_000;

    fn rules() -> RecordRules<'static> {
        RecordRules { now_ms: NOW, max_offline_days: 7, enrolled_employee: None }
    }

    fn record() -> Record {
        Record::new(1, "7f8c2a8e-3c1d-4b7e-9a51-2f0d6c1e4b9a", "check_in", "emp-9", NOW - 3_600_000)
    }

    fn detail_of(record: Record) -> String {
        let rejection = check_record(record, &rules()).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::Invalid);
        rejection.detail.unwrap()
    }

    #[test]
    fn a_plain_check_in_passes_and_defaults_to_offline() {
        let valid = check_record(record(), &rules()).unwrap();
        assert_eq!(valid.kind, RecordKind::CheckIn);
        assert!(valid.offline);
    }

    #[test]
    fn out_of_range_fields_name_the_field() {
        assert!(detail_of(Record { seq: 0, ..record() }).starts_with("seq"));
        assert!(detail_of(Record { record_id: "nope".into(), ..record() }).starts_with("record_id"));
        assert!(detail_of(Record { kind: "lunch".into(), ..record() }).starts_with("kind"));
        assert!(detail_of(Record { employee_id: String::new(), ..record() }).starts_with("employee_id"));
        assert!(detail_of(Record { recorded_at: 5, ..record() }).starts_with("recorded_at"));
        let far_south = Geo { lat: -91.0, lon: 0.0, accuracy_m: 1.0 };
        assert!(detail_of(Record { geo: Some(far_south), ..record() }).starts_with("geo.lat"));
        assert!(detail_of(Record { qr: Some("q".repeat(513)), ..record() }).starts_with("qr"));
        assert!(detail_of(Record { note: Some("n".repeat(1001)), ..record() }).starts_with("note"));
    }

    #[test]
    fn length_limits_count_characters_not_bytes() {
        assert!(check_record(Record { note: Some("é".repeat(1000)), ..record() }, &rules()).is_ok());
    }

    #[test]
    fn leave_is_required_exactly_for_leave_requests() {
        let leave =
            Leave { from: "2025-12-01".into(), to: "2025-12-03".into(), leave_type: "sick".into(), reason: None };
        let request = Record { kind: "leave_request".into(), leave: Some(leave.clone()), ..record() };
        assert_eq!(check_record(request, &rules()).unwrap().leave.unwrap().to, UtcDay::parse("2025-12-03").unwrap());
        assert!(detail_of(Record { kind: "leave_request".into(), ..record() }).starts_with("leave"));
        assert!(detail_of(Record { leave: Some(leave.clone()), ..record() }).starts_with("leave"));
        let backwards = Leave { from: "2025-12-03".into(), to: "2025-12-01".into(), ..leave.clone() };
        let request = Record { kind: "leave_request".into(), leave: Some(backwards), ..record() };
        assert!(detail_of(request).starts_with("leave.to"));
        let forever = Leave { from: "0001-01-01".into(), to: "9999-12-31".into(), ..leave };
        let request = Record { kind: "leave_request".into(), leave: Some(forever), ..record() };
        assert!(detail_of(request).starts_with("leave: at most 366 days"));
    }

    #[test]
    fn personal_devices_record_only_for_their_employee() {
        let personal = RecordRules { enrolled_employee: Some("emp-1"), ..rules() };
        let rejection = check_record(record(), &personal).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::EmployeeMismatch);
    }

    #[test]
    fn records_beyond_the_offline_window_are_too_old() {
        let old = Record { recorded_at: NOW - 8 * MS_PER_DAY, ..record() };
        assert_eq!(check_record(old, &rules()).unwrap_err().reason, RejectReason::TooOld);
        let just_in = Record { recorded_at: NOW - 7 * MS_PER_DAY, ..record() };
        assert!(check_record(just_in, &rules()).is_ok());
    }

    #[test]
    fn batch_level_rules() {
        let batch = Batch::new("dev-1", "b-1", NOW, vec![record()]);
        assert_eq!(check_batch(&batch, "dev-1"), Ok(()));
        assert!(matches!(check_batch(&batch, "dev-2"), Err(BatchError::DeviceMismatch { .. })));
        let empty = Batch { records: vec![], ..batch.clone() };
        assert_eq!(check_batch(&empty, "dev-1"), Err(BatchError::RecordCount(0)));
        let full = Batch { records: vec![record(); 501], ..batch.clone() };
        assert_eq!(check_batch(&full, "dev-1"), Err(BatchError::RecordCount(501)));
        let long_id = Batch { batch_id: "b".repeat(65), ..batch.clone() };
        assert_eq!(check_batch(&long_id, "dev-1"), Err(BatchError::BatchId));
        let version = |version: &str| Batch { app_version: Some(version.into()), ..batch.clone() };
        assert_eq!(check_batch(&version("2.4.1 (build 77)"), "dev-1"), Ok(()));
        assert_eq!(check_batch(&version(&"é".repeat(64)), "dev-1"), Ok(()));
        assert_eq!(check_batch(&version(""), "dev-1"), Err(BatchError::AppVersion));
        assert_eq!(check_batch(&version(&"v".repeat(65)), "dev-1"), Err(BatchError::AppVersion));
        assert_eq!(check_batch(&version("2.4\n<script>"), "dev-1"), Err(BatchError::AppVersion));
    }
}
