//! `GET /v1/admin/employees/{employee_id}/attendance?org_id=&day=`: one UTC day of an
//! employee's records in time order, each with its status (nothing is ever deleted),
//! and the effective shifts they make.

use crate::auth::authenticate_admin;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use otg_actors::store::{RecordStatus, TimelineEntry};
use otg_schema::{RecordKind, UtcDay};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/v1/admin/employees/{employee_id}/attendance", web::get().to(attendance));
}

#[derive(Deserialize)]
pub struct AttendanceQuery {
    org_id: String,
    day: String,
}

/// A shift: a check-in and the check-out that closes it, if one has yet.
#[derive(Debug, PartialEq, Serialize)]
struct Shift {
    check_in: String,
    from: i64,
    check_out: Option<String>,
    to: Option<i64>,
}

async fn attendance(
    request: HttpRequest,
    employee_id: web::Path<String>,
    query: web::Query<AttendanceQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let day = UtcDay::parse(&query.day).ok_or_else(|| ApiError::BadRequest("day: must be a date YYYY-MM-DD".into()))?;
    let settings = state.store.org_settings(&query.org_id).await?;
    let records = state.store.timeline(&query.org_id, &employee_id, day).await?;
    // The next day too: a shift begun late this day closes after midnight.
    let next_day = state.store.timeline(&query.org_id, &employee_id, day.next()).await?;
    let max_shift_ms = i64::from(settings.max_shift_hours) * 3_600_000;
    let shifts = effective_shifts(records.iter().chain(&next_day), day, max_shift_ms);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "org_id": query.org_id,
        "employee_id": employee_id.as_str(),
        "day": day.to_string(),
        "records": records,
        "shifts": shifts,
    })))
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
}
