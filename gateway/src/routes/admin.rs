//! Admin endpoints (JSON, bearer token): enrol, show and revoke devices.

use crate::auth::authenticate_admin;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::{self, DeviceSyncStatus};
use actix_web::{web, HttpRequest, HttpResponse};
use otg_actors::store::DeviceEnrolment;
use serde::{Deserialize, Serialize};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/admin/devices", web::post().to(enrol_device))
        .route("/v1/admin/devices/{device_id}", web::get().to(show_device))
        .route("/v1/admin/devices/{device_id}", web::delete().to(revoke_device));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    device_id: String,
    org_id: String,
    employee_id: Option<String>,
}

#[derive(Serialize)]
struct Enrolled {
    device_id: String,
    /// Shown this once: the base64url form of the device's 32-byte HMAC key.
    secret: String,
}

/// A device as administrators see it: never its secret.
#[derive(Serialize)]
struct DeviceView {
    device_id: String,
    org_id: String,
    employee_id: Option<String>,
    enrolled_at: i64,
    revoked_at: Option<i64>,
    status: &'static str,
    /// `GET` only: its sync status and health, as in the org's sync status.
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<DeviceSyncStatus>,
}

impl From<DeviceEnrolment> for DeviceView {
    fn from(device: DeviceEnrolment) -> Self {
        DeviceView {
            status: views::device_status(&device),
            device_id: device.device_id,
            org_id: device.org_id,
            employee_id: device.employee_id,
            enrolled_at: device.enrolled_at,
            revoked_at: device.revoked_at,
            sync: None,
        }
    }
}

async fn enrol_device(
    request: HttpRequest,
    enrol: web::Json<EnrolRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let EnrolRequest { device_id, org_id, employee_id } = enrol.into_inner();
    let enrolled = views::enrol_device(&state, device_id, org_id, employee_id).await?;
    Ok(HttpResponse::Created().json(Enrolled { device_id: enrolled.device_id, secret: enrolled.secret.to_base64() }))
}

async fn show_device(
    request: HttpRequest,
    device_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let device = views::show_device(&state, &device_id).await?;
    let settings = state.store.org_settings(&device.org_id).await?;
    let sync = views::device_sync_status(&state, &device, &settings, now_ms()).await?;
    Ok(HttpResponse::Ok().json(DeviceView { sync: Some(sync), ..DeviceView::from(device) }))
}

async fn revoke_device(
    request: HttpRequest,
    device_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    Ok(HttpResponse::Ok().json(DeviceView::from(views::revoke_device(&state, &device_id).await?)))
}
