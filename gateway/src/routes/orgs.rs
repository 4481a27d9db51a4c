//! Admin endpoints for an org's settings (JSON, bearer token). They take effect on the
//! org's next batch and in `GET /v1/sync/config`.

use crate::auth::authenticate_admin;
use crate::error::ApiError;
use crate::state::AppState;
use crate::views;
use actix_web::{web, HttpRequest, HttpResponse};
use otg_schema::OrgSettings;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/admin/orgs/{org_id}/settings", web::get().to(show_settings))
        .route("/v1/admin/orgs/{org_id}/settings", web::put().to(replace_settings));
}

async fn show_settings(
    request: HttpRequest,
    org_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    Ok(HttpResponse::Ok().json(state.store.org_settings(&org_id).await?))
}

/// Replaces the settings; keys left out take their defaults, unknown keys are a 400.
async fn replace_settings(
    request: HttpRequest,
    org_id: web::Path<String>,
    settings: web::Json<OrgSettings>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    views::replace_settings(&state, &org_id, &settings).await?;
    Ok(HttpResponse::Ok().json(settings.into_inner()))
}
