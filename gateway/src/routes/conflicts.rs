//! Admin endpoints for conflicts (JSON, bearer token): list an org's conflicts, paged
//! and filtered by status, and resolve one.

use crate::auth::authenticate_admin;
use crate::error::ApiError;
use crate::routes::paging::{next_cursor, PageQuery};
use crate::state::AppState;
use crate::views;
use actix_web::{web, HttpRequest, HttpResponse};
use otg_actors::store::{ConflictRecord, Page, Resolution};
use serde::{Deserialize, Serialize};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/admin/conflicts", web::get().to(list_conflicts))
        .route("/v1/admin/conflicts/{conflict_id}/resolve", web::post().to(resolve_conflict));
}

#[derive(Deserialize)]
pub struct ConflictsQuery {
    org_id: String,
    status: Option<String>,
}

/// A conflict as administrators see it.
#[derive(Serialize)]
pub struct ConflictView<'a> {
    #[serde(flatten)]
    conflict: &'a ConflictRecord,
    status: &'static str,
}

impl<'a> From<&'a ConflictRecord> for ConflictView<'a> {
    fn from(conflict: &'a ConflictRecord) -> Self {
        ConflictView { conflict, status: if conflict.is_open() { "open" } else { "resolved" } }
    }
}

async fn list_conflicts(
    request: HttpRequest,
    query: web::Query<ConflictsQuery>,
    page: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let (limit, after) = (page.limit()?, page.after()?);
    let page = Page { after: after.as_deref(), limit };
    let found = views::conflicts_page(&state, &query.org_id, query.status.as_deref(), page).await?;
    let conflicts: Vec<ConflictView> = found.iter().map(|(conflict, _)| conflict.into()).collect();
    let next = next_cursor(found.last().map(|(_, cursor)| cursor.as_slice()), found.len(), limit);
    Ok(HttpResponse::Ok().json(serde_json::json!({"conflicts": conflicts, "next_cursor": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    resolution: Resolution,
    #[serde(default)]
    note: String,
}

async fn resolve_conflict(
    request: HttpRequest,
    conflict_id: web::Path<String>,
    body: web::Json<ResolveBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let ResolveBody { resolution, note } = body.into_inner();
    let resolved = views::resolve_conflict(&state, &conflict_id, resolution, note).await?;
    Ok(HttpResponse::Ok().json(ConflictView::from(&resolved)))
}
