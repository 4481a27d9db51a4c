//! Admin reports (JSON, bearer token): per-device sync status, an org's sync
//! statistics over a window, and the audit trail.

use crate::auth::authenticate_admin;
use crate::error::ApiError;
use crate::routes::paging::{next_cursor, PageQuery};
use crate::state::AppState;
use crate::views::{self, StatsWindow};
use actix_web::{web, HttpRequest, HttpResponse};
use otg_actors::store::{AuditScope, Page};
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

/// Per device of the org: last sync, next_seq, reported pending, failures, open
/// conflicts, and its health against the org's limits.
async fn sync_status(
    request: HttpRequest,
    query: web::Query<OrgQuery>,
    page: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let (limit, after) = (page.limit()?, page.after()?);
    let (rows, last) = views::sync_status_page(&state, &query.org_id, Page { after: after.as_deref(), limit }).await?;
    let next = next_cursor(last.as_deref(), rows.len(), limit);
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
    let window = StatsWindow::parse(query.window.as_deref().unwrap_or("24h"))?;
    Ok(HttpResponse::Ok().json(views::sync_stats(&state, &query.org_id, window).await?))
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
