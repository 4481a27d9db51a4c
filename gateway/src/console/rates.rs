//! The sync rates page: batches succeeded and failed, and records by ack status, over
//! 1h, 24h and 7d, as SVG charts drawn here (no script, no outside asset) with the
//! figures beside them. A load costs 3 + 24 reads of the org's hourly totals.

use super::layout::{self, html_response, org_picker, PageMeta};
use super::{Admin, ConsoleError};
use crate::clock::now_ms;
use crate::state::AppState;
use crate::views::{self, StatsWindow, SyncStats};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use otg_actors::store::SyncTotals;
use serde::Deserialize;

const HOUR_MS: i64 = 3_600_000;
/// Hours in the hourly chart.
const HOURS_CHARTED: usize = 24;

#[derive(Deserialize)]
pub struct RatesQuery {
    org_id: Option<String>,
}

pub async fn page(
    admin: Admin,
    query: web::Query<RatesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let Some(org_id) = query.org_id.as_deref().filter(|org| !org.is_empty()) else {
        let meta = PageMeta { title: "Sync rates", org_id: None, refresh_s: None };
        return Ok(html_response(StatusCode::OK, layout::page(&admin, meta, org_picker("/admin/rates", None))));
    };
    let mut windows = Vec::new();
    for window in StatsWindow::ALL {
        windows.push(views::sync_stats(&state, org_id, window).await?);
    }
    let hourly = hourly_batches(&state, org_id).await?;
    let body = html! {
        (org_picker("/admin/rates", Some(org_id)))
        h2 { "Batches per hour, last " (HOURS_CHARTED) " hours (UTC)" }
        div.charts {
            (hourly_chart(&hourly))
            table {
                thead { tr { th { "hour" } th.number { "succeeded" } th.number { "failed" } } }
                tbody {
                    @for (hour_start, totals) in hourly.iter().rev().take(6) {
                        tr { td { (layout::time(*hour_start)) } td.number { (totals.batches_succeeded) } td.number { (totals.batches_failed) } }
                    }
                }
            }
        }
        @for stats in &windows { (window_section(stats)) }
    };
    let meta = PageMeta { title: "Sync rates", org_id: Some(org_id), refresh_s: None };
    Ok(html_response(StatusCode::OK, layout::page(&admin, meta, body)))
}

/// The org's totals of each of the last `HOURS_CHARTED` UTC hours, oldest first, from
/// the totals since the start of each (the store keeps hourly sums).
async fn hourly_batches(state: &AppState, org_id: &str) -> Result<Vec<(i64, SyncTotals)>, ConsoleError> {
    let current_hour = now_ms() / HOUR_MS * HOUR_MS;
    let mut since_each = Vec::with_capacity(HOURS_CHARTED);
    for back in 0..HOURS_CHARTED as i64 {
        let start = current_hour - back * HOUR_MS;
        since_each.push((start, state.store.sync_totals(org_id, start).await?));
    }
    let mut hourly: Vec<(i64, SyncTotals)> = since_each
        .iter()
        .enumerate()
        .map(|(index, (start, since))| {
            let later = index.checked_sub(1).map(|later| since_each[later].1).unwrap_or_default();
            (*start, difference(since, &later))
        })
        .collect();
    hourly.reverse();
    Ok(hourly)
}

fn difference(total: &SyncTotals, part: &SyncTotals) -> SyncTotals {
    SyncTotals {
        batches_succeeded: total.batches_succeeded.saturating_sub(part.batches_succeeded),
        batches_failed: total.batches_failed.saturating_sub(part.batches_failed),
        accepted: total.accepted.saturating_sub(part.accepted),
        duplicate: total.duplicate.saturating_sub(part.duplicate),
        conflict: total.conflict.saturating_sub(part.conflict),
        rejected: total.rejected.saturating_sub(part.rejected),
    }
}

/// Stacked bars, one per hour: succeeded below, failed above.
fn hourly_chart(hourly: &[(i64, SyncTotals)]) -> Markup {
    let (width, height, bar) = (600.0, 180.0, 600.0 / HOURS_CHARTED as f64);
    let most = hourly.iter().map(|(_, t)| t.batches_succeeded + t.batches_failed).max().unwrap_or(0).max(1) as f64;
    let scale = |count: u64| count as f64 / most * (height - 20.0);
    html! {
        svg width=(width) height=(height + 20.0) viewBox={ "0 0 " (width) " " (height + 20.0) } role="img"
            aria-label="batches succeeded and failed per hour" {
            line x1="0" y1=(height) x2=(width) y2=(height) stroke="#999" {}
            @for (index, (hour_start, totals)) in hourly.iter().enumerate() {
                @let x = index as f64 * bar + 2.0;
                @let ok = scale(totals.batches_succeeded);
                @let failed = scale(totals.batches_failed);
                rect x=(x) y=(height - ok) width=(bar - 4.0) height=(ok) fill="#1a7f37" {
                    title { (layout::time(*hour_start)) ": " (totals.batches_succeeded) " succeeded" }
                }
                rect x=(x) y=(height - ok - failed) width=(bar - 4.0) height=(failed) fill="#b3261e" {
                    title { (layout::time(*hour_start)) ": " (totals.batches_failed) " failed" }
                }
                @if index % 6 == 0 {
                    text x=(x) y=(height + 14.0) { (layout::time(*hour_start)[11..16]) }
                }
            }
            text x="4" y="12" { "max " (most) " batches/hour" }
        }
    }
}

/// One window's figures and a bar chart of its records by ack status.
fn window_section(stats: &SyncStats) -> Markup {
    let records = [
        ("accepted", stats.records.accepted, "#1a7f37"),
        ("duplicate", stats.records.duplicate, "#5b6475"),
        ("conflict", stats.records.conflict, "#9a6700"),
        ("rejected", stats.records.rejected, "#b3261e"),
    ];
    let most = records.iter().map(|(_, count, _)| *count).max().unwrap_or(0).max(1) as f64;
    let rate = stats.success_rate.map(|rate| format!("{:.1}%", rate * 100.0)).unwrap_or_else(|| "—".into());
    html! {
        section.card data-window=(stats.window) {
            h2 { "Last " (stats.window) }
            div.charts {
                svg width="360" height="110" viewBox="0 0 360 110" role="img" aria-label={ "records by ack status, " (stats.window) } {
                    @for (index, (status, count, colour)) in records.iter().enumerate() {
                        @let y = index as f64 * 26.0 + 4.0;
                        text x="0" y=(y + 14.0) { (status) }
                        rect x="80" y=(y) width=(*count as f64 / most * 220.0) height="18" fill=(colour) {}
                        text x=(86.0 + *count as f64 / most * 220.0) y=(y + 14.0) { (count) }
                    }
                }
                dl {
                    dt { "batches succeeded" } dd.succeeded { (stats.batches_succeeded) }
                    dt { "batches failed" } dd.failed { (stats.batches_failed) }
                    dt { "success rate" } dd { (rate) }
                    @for (status, count, _) in records { dt { "records " (status) } dd { (count) } }
                }
            }
        }
    }
}
