//! Who is calling: a device proving itself with an HMAC signature, or an administrator
//! with the bearer token.

use crate::error::ApiError;
use actix_web::http::header;
use actix_web::HttpRequest;
use otg_actors::store::{DeviceEnrolment, Store};
use otg_schema::signing::{DEVICE_ID_HEADER, REQUEST_TIME_HEADER, SIGNATURE_HEADER};
use otg_schema::DeviceSecret;
use subtle::ConstantTimeEq;

/// Checks a device request's signature over the exact body bytes received.
/// Unknown device or bad signature: 401; a revoked device: 403.
pub async fn authenticate_device(
    request: &HttpRequest,
    body: &[u8],
    store: &dyn Store,
) -> Result<DeviceEnrolment, ApiError> {
    let device = enrolled_device(request, store).await?;
    check_signature(request, body, &device)?;
    Ok(device)
}

/// The enrolled, unrevoked device a request names, from its headers alone, so that a
/// request nobody could have signed is refused before its body is read or anything is
/// reserved for it. Unknown device: 401; revoked: 403.
pub async fn enrolled_device(request: &HttpRequest, store: &dyn Store) -> Result<DeviceEnrolment, ApiError> {
    let device_id = header_text(request, DEVICE_ID_HEADER)?;
    header_text(request, SIGNATURE_HEADER)?;
    if header_text(request, REQUEST_TIME_HEADER)?.parse::<i64>().is_err() {
        return Err(ApiError::Unauthorized("X-Request-Time must be unix milliseconds"));
    }
    let device = store.device(device_id).await?.ok_or(ApiError::Unauthorized("unknown device or wrong signature"))?;
    if device.revoked_at.is_some() {
        return Err(ApiError::DeviceRevoked);
    }
    Ok(device)
}

/// Checks the request's signature, by `device`'s secret, over the exact body received.
pub fn check_signature(request: &HttpRequest, body: &[u8], device: &DeviceEnrolment) -> Result<(), ApiError> {
    let request_time = header_text(request, REQUEST_TIME_HEADER)?;
    let signature = header_text(request, SIGNATURE_HEADER)?;
    let secret = DeviceSecret(device.secret);
    if secret.verify(request.method().as_str(), request.path(), request_time, body, signature) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("unknown device or wrong signature"))
    }
}

/// Checks `Authorization: Bearer <admin token>` in constant time.
pub fn authenticate_admin(request: &HttpRequest, admin_token: &str) -> Result<(), ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized("admin endpoints need Authorization: Bearer <admin token>"))?;
    if bool::from(presented.as_bytes().ct_eq(admin_token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("wrong admin token"))
    }
}

fn header_text<'a>(request: &'a HttpRequest, name: &'static str) -> Result<&'a str, ApiError> {
    request.headers().get(name).and_then(|value| value.to_str().ok()).ok_or(match name {
        DEVICE_ID_HEADER => ApiError::Unauthorized("missing X-Device-Id header"),
        REQUEST_TIME_HEADER => ApiError::Unauthorized("missing X-Request-Time header"),
        _ => ApiError::Unauthorized("missing X-Signature header"),
    })
}
