//! The sync status page: an org's devices, a page at a time, filtered and sorted on the
//! server, with what each reported of its health against the org's limits.
//!
//! It reloads itself every `REFRESH_S` seconds (a meta refresh: no script), and each
//! load reads at most `MAX_SCANNED` devices, never the whole org.

use super::layout::{self, bytes, html_response, optional_time, org_picker, query_escape, time, PageMeta};
use super::{Admin, ConsoleError};
use crate::routes::paging::{next_cursor, PageQuery};
use crate::state::AppState;
use crate::views::{self, DeviceSyncStatus};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::html;
use otg_actors::store::Page;
use serde::Deserialize;

/// Seconds between reloads of the page.
const REFRESH_S: u32 = 5;
/// The most devices one load reads while looking for a page of matches.
const MAX_SCANNED: usize = 500;
/// Storage use, in percent of the org's limit, from which a device is flagged.
const STORAGE_WARNING_PERCENT: f64 = 80.0;

#[derive(Deserialize)]
pub struct StatusQuery {
    org_id: Option<String>,
    /// all, attention (silent, failing, conflicts, storage), silent, failing, conflicts, revoked.
    show: Option<String>,
    /// device (default), last_sync, pending, failures, conflicts: within the page.
    sort: Option<String>,
    /// `off` stops the page reloading itself.
    refresh: Option<String>,
}

const FILTERS: [(&str, &str); 7] = [
    ("all", "all devices"),
    ("attention", "need attention"),
    ("silent", "silent too long"),
    ("failing", "with failures"),
    ("conflicts", "with open conflicts"),
    ("storage", "storage nearly full"),
    ("revoked", "revoked"),
];
const SORTS: [(&str, &str); 5] = [
    ("device", "device id"),
    ("last_sync", "last sync, oldest first"),
    ("pending", "pending, most first"),
    ("failures", "failures, most first"),
    ("conflicts", "open conflicts, most first"),
];

fn storage_nearly_full(row: &DeviceSyncStatus) -> bool {
    row.health.storage_used_percent.is_some_and(|percent| percent >= STORAGE_WARNING_PERCENT)
}

fn needs_attention(row: &DeviceSyncStatus) -> bool {
    row.health.silent_too_long
        || row.health.pending_too_old
        || row.failures > 0
        || row.open_conflicts > 0
        || storage_nearly_full(row)
}

fn matches(show: &str, row: &DeviceSyncStatus) -> bool {
    match show {
        "attention" => needs_attention(row),
        "silent" => row.health.silent_too_long,
        "failing" => row.failures > 0,
        "conflicts" => row.open_conflicts > 0,
        "storage" => storage_nearly_full(row),
        "revoked" => row.status == "revoked",
        _ => true,
    }
}

fn sort(rows: &mut [DeviceSyncStatus], by: &str) {
    match by {
        "last_sync" => rows.sort_by_key(|row| row.last_sync_at.unwrap_or(i64::MIN)),
        "pending" => rows.sort_by_key(|row| std::cmp::Reverse(row.pending.unwrap_or(0))),
        "failures" => rows.sort_by_key(|row| std::cmp::Reverse(row.failures)),
        "conflicts" => rows.sort_by_key(|row| std::cmp::Reverse(row.open_conflicts)),
        _ => {}
    }
}

pub async fn page(
    admin: Admin,
    query: web::Query<StatusQuery>,
    paging: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let Some(org_id) = query.org_id.as_deref().filter(|org| !org.is_empty()) else {
        let meta = PageMeta { title: "Sync status", org_id: None, refresh_s: None };
        return Ok(html_response(StatusCode::OK, layout::page(&admin, meta, org_picker("/admin/", None))));
    };
    let show = query.show.as_deref().unwrap_or("all");
    let sort_by = query.sort.as_deref().unwrap_or("device");
    let limit = paging.limit()?;
    // Pages of the store are read until a page of matches is found or the scan bound
    // is reached; the cursor continues after the last device read either way.
    let (mut rows, mut after, mut scanned, mut exhausted) = (Vec::new(), paging.after()?, 0, false);
    while rows.len() < limit && scanned < MAX_SCANNED {
        let (found, last) = views::sync_status_page(&state, org_id, Page { after: after.as_deref(), limit }).await?;
        scanned += found.len();
        let read = found.len();
        rows.extend(found.into_iter().filter(|row| matches(show, row)));
        if last.is_some() {
            after = last;
        }
        if read < limit {
            exhausted = true;
            break;
        }
    }
    rows.truncate(limit);
    sort(&mut rows, sort_by);
    let next = if exhausted { None } else { next_cursor(after.as_deref(), limit, limit) };
    let refresh_s = (query.refresh.as_deref() != Some("off")).then_some(REFRESH_S);
    let base = format!("/admin/?org_id={}&show={}&sort={}", query_escape(org_id), show, sort_by);
    let body = html! {
        (org_picker("/admin/", Some(org_id)))
        form.filters method="get" action="/admin/" {
            input type="hidden" name="org_id" value=(org_id);
            label { "Show " select name="show" {
                @for (value, title) in FILTERS { option value=(value) selected[value == show] { (title) } }
            } }
            label { "Sort " select name="sort" {
                @for (value, title) in SORTS { option value=(value) selected[value == sort_by] { (title) } }
            } }
            button type="submit" { "Apply" }
            @if refresh_s.is_some() {
                a href={ (base) "&refresh=off" } { "Stop refreshing" }
            } @else {
                a href=(base) { "Refresh every " (REFRESH_S) " s" }
            }
        }
        p.muted {
            "Read " (scanned) " devices for this page (at most " (MAX_SCANNED) "). "
            "Devices silent for longer than the org's max offline days are marked."
        }
        table #devices {
            thead { tr {
                th { "Device" } th { "Employee" } th { "Status" } th { "Last sync" }
                th.number { "Pending" } th.number { "next_seq" } th.number { "Batches" } th.number { "Failures" }
                th.number { "Open conflicts" } th { "Storage" } th { "Oldest pending" } th { "App" }
            } }
            tbody {
                @for row in &rows {
                    tr class=[needs_attention(row).then_some("alert")] data-device=(row.device_id) {
                        td { a href={ "/admin/devices/" (query_escape(&row.device_id)) } { (row.device_id) } }
                        td { (row.employee_id.as_deref().unwrap_or("shared kiosk")) }
                        td {
                            (row.status)
                            @if row.health.silent_too_long {
                                " " span.badge.bad title={ "no sync for more than " (row.health.max_offline_days) " days" } { "silent" }
                            }
                        }
                        td { (optional_time(row.last_sync_at)) }
                        td.number { (row.pending.map(|pending| pending.to_string()).unwrap_or_else(|| "—".into())) }
                        td.number { (row.next_seq) }
                        td.number { (row.batches_succeeded) }
                        td.number { (row.failures) }
                        td.number { (row.open_conflicts) }
                        td {
                            @match (row.health.queue_bytes, row.health.storage_used_percent) {
                                (Some(used), Some(percent)) => {
                                    (bytes(used)) " of " (bytes(row.health.storage_limit_bytes)) " (" (percent) "%)"
                                    @if storage_nearly_full(row) { " " span.badge.warn { "nearly full" } }
                                }
                                _ => span.muted { "not reported" },
                            }
                        }
                        td {
                            @match row.health.oldest_pending_at {
                                Some(oldest) => {
                                    (time(oldest))
                                    @if row.health.pending_too_old { " " span.badge.bad { "too old" } }
                                }
                                None => span.muted { "—" },
                            }
                        }
                        td { (row.health.app_version.as_deref().unwrap_or("—")) }
                    }
                }
            }
        }
        @if rows.is_empty() { p.muted { "No device on this page matches." } }
        p.pager {
            @if let Some(next) = next { a href={ (base) "&cursor=" (next) } { "Next page →" } }
        }
    };
    let meta = PageMeta { title: "Sync status", org_id: Some(org_id), refresh_s };
    Ok(html_response(StatusCode::OK, layout::page(&admin, meta, body)))
}
