//! The attendance page: an employee's UTC day as a timeline of shifts and breaks, each
//! record with its status (the same view as `GET /v1/admin/employees/{id}/attendance`).

use super::layout::{self, html_response, PageMeta};
use super::{Admin, ConsoleError};
use crate::state::AppState;
use crate::views::{self, AttendanceDay};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use otg_actors::store::RecordStatus;
use otg_schema::{RecordKind, UtcDay};
use serde::Deserialize;

const DAY_MS: i64 = 86_400_000;
const WIDTH: f64 = 720.0;

#[derive(Deserialize)]
pub struct AttendanceQuery {
    org_id: Option<String>,
    employee_id: Option<String>,
    day: Option<String>,
}

pub async fn page(
    admin: Admin,
    query: web::Query<AttendanceQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let org_id = query.org_id.as_deref().filter(|id| !id.is_empty());
    let employee_id = query.employee_id.as_deref().filter(|id| !id.is_empty());
    let today = UtcDay::of_unix_ms(crate::clock::now_ms()).to_string();
    let day = query.day.as_deref().filter(|day| !day.is_empty()).unwrap_or(&today);
    let attendance = match (org_id, employee_id) {
        (Some(org_id), Some(employee_id)) => Some(views::attendance_day(&state, org_id, employee_id, day).await?),
        _ => None,
    };
    let body = html! {
        form.filters method="get" action="/admin/attendance" {
            label { "Org " input type="text" name="org_id" value=[org_id] required; }
            label { "Employee " input type="text" name="employee_id" value=[employee_id] required; }
            label { "Day " input type="date" name="day" value=(day); }
            button type="submit" { "Show" }
        }
        @match &attendance {
            Some(attendance) => (timeline(attendance)),
            None => p.muted { "Name an org and an employee." },
        }
    };
    let meta = PageMeta { title: "Attendance", org_id, refresh_s: None };
    Ok(html_response(StatusCode::OK, layout::page(&admin, meta, body)))
}

fn timeline(attendance: &AttendanceDay) -> Markup {
    let day_start = UtcDay::parse(&attendance.day).map_or(0, |day| day.start_unix_ms());
    let x = |at: i64| ((at - day_start).clamp(0, DAY_MS) as f64 / DAY_MS as f64) * WIDTH;
    let breaks = break_spans(attendance);
    html! {
        h2 { (attendance.employee_id) " on " (attendance.day) " (UTC)" }
        svg width=(WIDTH + 20.0) height="90" viewBox={ "0 0 " (WIDTH + 20.0) " 90" } role="img" aria-label="shifts and breaks" {
            @for hour in (0..=24).step_by(3) {
                @let at = hour as f64 / 24.0 * WIDTH;
                line x1=(at) y1="10" x2=(at) y2="60" stroke="#d7dbe3" {}
                text x=(at) y="75" { (format!("{hour:02}:00")) }
            }
            @for shift in &attendance.shifts {
                @let end = shift.to.unwrap_or(day_start + DAY_MS);
                rect.timeline-bar x=(x(shift.from)) y="20" width=((x(end) - x(shift.from)).max(2.0)) height="30" {
                    title { "shift " (layout::time(shift.from)) " – " (shift.to.map(layout::time).unwrap_or_else(|| "open".into())) }
                }
            }
            @for (from, to) in &breaks {
                rect x=(x(*from)) y="28" width=((x(*to) - x(*from)).max(2.0)) height="14" fill="#9a6700" {
                    title { "break " (layout::time(*from)) " – " (layout::time(*to)) }
                }
            }
            @for record in &attendance.records {
                @let colour = match record.status { RecordStatus::Active => "#1f5fbf", RecordStatus::Pending => "#5b6475", _ => "#b3261e" };
                circle cx=(x(record.recorded_at)) cy="35" r="4" fill=(colour) {
                    title { (record.kind.as_str()) " " (layout::time(record.recorded_at)) " (" (status_name(record.status)) ")" }
                }
            }
        }
        table #records {
            thead { tr { th { "at (UTC)" } th { "kind" } th { "status" } th { "device" } th.number { "seq" } th { "record id" } } }
            tbody {
                @for record in &attendance.records {
                    tr {
                        td { (layout::time(record.recorded_at)) }
                        td { (record.kind.as_str()) }
                        td { span class={ "badge " (status_badge(record.status)) } { (status_name(record.status)) } }
                        td { (record.device_id) }
                        td.number { (record.seq) }
                        td { (record.record_id) }
                    }
                }
            }
        }
        @if attendance.records.is_empty() { p.muted { "No record on this day." } }
    }
}

/// Each active break start with the next active break end of the day.
fn break_spans(attendance: &AttendanceDay) -> Vec<(i64, i64)> {
    let mut spans = Vec::new();
    let mut open = None;
    for record in attendance.records.iter().filter(|record| record.status == RecordStatus::Active) {
        match record.kind {
            RecordKind::BreakStart => open = Some(record.recorded_at),
            RecordKind::BreakEnd => {
                if let Some(from) = open.take() {
                    spans.push((from, record.recorded_at));
                }
            }
            _ => {}
        }
    }
    spans
}

fn status_name(status: RecordStatus) -> &'static str {
    match status {
        RecordStatus::Active => "active",
        RecordStatus::Pending => "pending",
        RecordStatus::Superseded => "superseded",
        RecordStatus::Discarded => "discarded",
    }
}

fn status_badge(status: RecordStatus) -> &'static str {
    match status {
        RecordStatus::Active => "ok",
        RecordStatus::Pending => "warn",
        RecordStatus::Superseded | RecordStatus::Discarded => "bad",
    }
}
