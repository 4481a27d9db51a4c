//! The audit trail page: a device's or an org's trail between two times, oldest first,
//! a page at a time (the same store read as `GET /v1/admin/audit`).

use super::layout::{self, html_response, query_escape, PageMeta};
use super::{Admin, ConsoleError};
use crate::routes::paging::{next_cursor, PageQuery};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::NaiveDate;
use maud::{html, Markup};
use otg_actors::store::{AuditEvent, AuditKind, AuditScope, Page};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct AuditQuery {
    org_id: Option<String>,
    device_id: Option<String>,
    /// First UTC day shown, `YYYY-MM-DD`.
    from: Option<String>,
    /// Last UTC day shown, `YYYY-MM-DD`.
    to: Option<String>,
}

/// A day's start (or, with `end`, its last millisecond) in unix ms.
fn day_bound(day: Option<&str>, end: bool) -> Result<Option<i64>, ConsoleError> {
    let Some(day) = day.filter(|day| !day.is_empty()) else { return Ok(None) };
    let date = NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|_| crate::error::ApiError::BadRequest("from, to: dates are YYYY-MM-DD".into()))?;
    let start = date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis();
    Ok(Some(if end { start + 86_400_000 - 1 } else { start }))
}

pub async fn page(
    admin: Admin,
    query: web::Query<AuditQuery>,
    paging: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let org_id = query.org_id.as_deref().filter(|id| !id.is_empty());
    let device_id = query.device_id.as_deref().filter(|id| !id.is_empty());
    let scope = match (device_id, org_id) {
        (Some(device_id), _) => Some(AuditScope::Device(device_id)),
        (None, Some(org_id)) => Some(AuditScope::Org(org_id)),
        (None, None) => None,
    };
    let (since, until) = (day_bound(query.from.as_deref(), false)?, day_bound(query.to.as_deref(), true)?);
    let limit = paging.limit()?;
    let after = paging.after()?;
    let events = match scope {
        Some(scope) => {
            let page = Page { after: after.as_deref(), limit };
            state.store.audit(scope, since.unwrap_or(0), until.unwrap_or(i64::MAX - 1), page).await?
        }
        None => Vec::new(),
    };
    let next = next_cursor(events.last().map(|(_, cursor)| cursor.as_slice()), events.len(), limit);
    let base = format!(
        "/admin/audit?org_id={}&device_id={}&from={}&to={}",
        query_escape(org_id.unwrap_or_default()),
        query_escape(device_id.unwrap_or_default()),
        query_escape(query.from.as_deref().unwrap_or_default()),
        query_escape(query.to.as_deref().unwrap_or_default()),
    );
    let body = html! {
        form.filters method="get" action="/admin/audit" {
            label { "Org " input type="text" name="org_id" value=[org_id]; }
            label { "or device " input type="text" name="device_id" value=[device_id]; }
            label { "From " input type="date" name="from" value=[query.from.as_deref()]; }
            label { "To " input type="date" name="to" value=[query.to.as_deref()]; }
            button type="submit" { "Show" }
        }
        @if scope.is_none() { p.muted { "Name an org or a device." } } @else {
            table #audit {
                thead { tr { th { "at (UTC)" } th { "device" } th { "event" } th { "details" } } }
                tbody { @for (event, _) in &events { (event_row(event)) } }
            }
            @if events.is_empty() { p.muted { "Nothing in this range." } }
            p.pager { @if let Some(next) = next { a href={ (base) "&cursor=" (next) } { "Next page →" } } }
        }
    };
    let meta = PageMeta { title: "Audit trail", org_id, refresh_s: None };
    Ok(html_response(StatusCode::OK, layout::page(&admin, meta, body)))
}

fn event_row(event: &AuditEvent) -> Markup {
    html! {
        tr {
            td { (layout::time(event.at)) }
            td { (event.device_id) }
            @match &event.event {
                AuditKind::BatchReceived { batch_id, outcome, http_status, latency_ms, records, acks } => {
                    td { "batch received" }
                    td {
                        "batch " (batch_id.as_deref().unwrap_or("—")) " · " (outcome) " (" (http_status) ") · "
                        (records) " records · " (latency_ms) " ms"
                        @if !acks.is_empty() {
                            " · acks: "
                            @for ack in acks.iter().take(20) {
                                (ack.seq) "=" (ack.status.as_str()) " "
                            }
                            @if acks.len() > 20 { "…" }
                        }
                    }
                }
                AuditKind::DeviceEnrolled { employee_id } => {
                    td { "device enrolled" }
                    td { "employee " (employee_id.as_deref().unwrap_or("any (shared kiosk)")) }
                }
                AuditKind::DeviceRevoked => { td { "device revoked" } td {} }
                AuditKind::ConflictResolved { conflict_id, resolution, note } => {
                    td { "conflict resolved" }
                    td { (conflict_id) " · " (format!("{resolution:?}")) @if !note.is_empty() { " · “" (note) "”" } }
                }
            }
        }
    }
}
