//! Admin endpoints (JSON, bearer token): enrol, show and revoke devices.

use crate::auth::authenticate_admin;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use otg_actors::store::{DeviceEnrolment, StoreError};
use otg_schema::validate::check_id;
use otg_schema::DeviceSecret;
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
}

impl From<DeviceEnrolment> for DeviceView {
    fn from(device: DeviceEnrolment) -> Self {
        DeviceView {
            status: if device.revoked_at.is_some() { "revoked" } else { "active" },
            device_id: device.device_id,
            org_id: device.org_id,
            employee_id: device.employee_id,
            enrolled_at: device.enrolled_at,
            revoked_at: device.revoked_at,
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
    let ids = [("device_id", Some(&device_id)), ("org_id", Some(&org_id)), ("employee_id", employee_id.as_ref())];
    for (field, id) in ids {
        if let Some(id) = id {
            check_id(field, id).map_err(|rejection| ApiError::BadRequest(rejection.detail.unwrap_or_default()))?;
        }
    }
    let secret = DeviceSecret(rand::random());
    let enrolment = DeviceEnrolment {
        device_id: device_id.clone(),
        org_id,
        employee_id,
        secret: secret.0,
        enrolled_at: now_ms(),
        revoked_at: None,
    };
    match state.store.enrol_device(&enrolment).await {
        Ok(()) => Ok(HttpResponse::Created().json(Enrolled { device_id, secret: secret.to_base64() })),
        Err(StoreError::AlreadyExists) => {
            Err(ApiError::AlreadyExists(format!("device {device_id:?} is already enrolled")))
        }
        Err(error) => Err(error.into()),
    }
}

async fn show_device(
    request: HttpRequest,
    device_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let device = state.store.device(&device_id).await?.ok_or_else(|| unknown(&device_id))?;
    Ok(HttpResponse::Ok().json(DeviceView::from(device)))
}

async fn revoke_device(
    request: HttpRequest,
    device_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    let device = state.store.revoke_device(&device_id, now_ms()).await?.ok_or_else(|| unknown(&device_id))?;
    Ok(HttpResponse::Ok().json(DeviceView::from(device)))
}

fn unknown(device_id: &str) -> ApiError {
    ApiError::NotFound(format!("no device {device_id:?}"))
}
