//! Admin reports (JSON, bearer token): per-device sync status, an org's sync
//! statistics over a window, and the audit trail.

use crate::auth::authenticate_admin;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::routes::paging::{next_cursor, PageQuery};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use otg_actors::store::{AuditScope, Page, SyncTotals};
use serde::Deserialize;
use serde_json::json;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/admin/sync-status", web::get().to(sync_status))
        .route("/v1/admin/sync-stats", web::get().to(sync_stats))
        .route("/v1/admin/audit", web::get().to(audit));
}

#[derive(Deserialize)]
pub struct OrgQuery {
    org_id: String,
}

/// Per device of the org: last sync, next_seq, reported pending, failures, open conflicts.
async fn sync_status(
    request: HttpRequest,
    query: web::Query<OrgQuery>,
    page: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let (limit, after) = (page.limit()?, page.after()?);
    let devices = state.store.devices_of_org(&query.org_id, Page { after: after.as_deref(), limit }).await?;
    let mut rows = Vec::with_capacity(devices.len());
    for (device, _) in &devices {
        let progress = state.store.device_progress(&device.device_id).await?;
        let totals = state.store.device_totals(&device.device_id).await?;
        let open_conflicts = state.store.open_conflicts_of_device(&device.device_id).await?.len();
        rows.push(json!({
            "device_id": device.device_id,
            "employee_id": device.employee_id,
            "status": if device.revoked_at.is_some() { "revoked" } else { "active" },
            "last_sync_at": progress.last_sync_at,
            "next_seq": progress.received.next_seq(),
            "pending": progress.reported_pending,
            "batches_succeeded": totals.batches_succeeded,
            "failures": totals.batches_failed,
            "open_conflicts": open_conflicts,
        }));
    }
    let next = next_cursor(devices.last().map(|(_, cursor)| cursor.as_slice()), devices.len(), limit);
    Ok(HttpResponse::Ok().json(json!({"org_id": query.org_id, "devices": rows, "next_cursor": next})))
}

#[derive(Deserialize)]
pub struct StatsQuery {
    org_id: String,
    window: Option<String>,
}

/// Batches succeeded and failed, records by ack status and the success rate, over the
/// last 1h, 24h or 7d (whole UTC hours: the current one and those before it).
async fn sync_stats(
    request: HttpRequest,
    query: web::Query<StatsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let window = query.window.as_deref().unwrap_or("24h");
    let hours = match window {
        "1h" => 1,
        "24h" => 24,
        "7d" => 168,
        other => return Err(ApiError::BadRequest(format!("window: {other:?} is not 1h, 24h or 7d"))),
    };
    let since = now_ms() - (hours - 1) * 3_600_000;
    let SyncTotals { batches_succeeded, batches_failed, accepted, duplicate, conflict, rejected } =
        state.store.sync_totals(&query.org_id, since).await?;
    let batches = batches_succeeded + batches_failed;
    let success_rate = if batches == 0 { None } else { Some(batches_succeeded as f64 / batches as f64) };
    Ok(HttpResponse::Ok().json(json!({
        "org_id": query.org_id,
        "window": window,
        "batches_succeeded": batches_succeeded,
        "batches_failed": batches_failed,
        "records": {"accepted": accepted, "duplicate": duplicate, "conflict": conflict, "rejected": rejected},
        "success_rate": success_rate,
    })))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    device_id: Option<String>,
    org_id: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
}

/// A device's (or, with `org_id`, an org's) audit trail between `since` and `until`
/// (unix ms, both inclusive), oldest first.
async fn audit(
    request: HttpRequest,
    query: web::Query<AuditQuery>,
    page: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let scope = match (&query.device_id, &query.org_id) {
        (Some(device_id), _) => AuditScope::Device(device_id),
        (None, Some(org_id)) => AuditScope::Org(org_id),
        (None, None) => return Err(ApiError::BadRequest("device_id or org_id: one is required".into())),
    };
    let (since, until) = (query.since.unwrap_or(0), query.until.unwrap_or(i64::MAX - 1));
    let (limit, after) = (page.limit()?, page.after()?);
    let events = state.store.audit(scope, since, until, Page { after: after.as_deref(), limit }).await?;
    let next = next_cursor(events.last().map(|(_, cursor)| cursor.as_slice()), events.len(), limit);
    let events: Vec<_> = events.into_iter().map(|(event, _)| event).collect();
    Ok(HttpResponse::Ok().json(json!({"events": events, "next_cursor": next})))
}
