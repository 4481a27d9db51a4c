//! Every error the gateway answers with, and the one place that maps each to an HTTP
//! status and a JSON body `{"error": code, "message": text}`.

use crate::admission::decide;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use otg_actors::store::StoreError;
use otg_actors::DeviceBusy;
use otg_schema::validate::BatchError;
use otg_schema::wire::DecodeError;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Content-Type must be application/msgpack (or application/x-msgpack)")]
    UnsupportedMediaType,
    #[error("Content-Type must be application/json")]
    NotJson,
    #[error("the body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this device has been revoked")]
    DeviceRevoked,
    #[error("malformed MessagePack: {0}")]
    Malformed(DecodeError),
    #[error("{0}")]
    InvalidBatch(#[from] BatchError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    AlreadyResolved(String),
    #[error("{0}")]
    DeviceBusy(#[from] DeviceBusy),
    #[error("this {scope} is over its upload rate")]
    RateLimited { scope: &'static str, retry_after: Duration },
    #[error("the gateway is at capacity ({reason}); try again later")]
    Overloaded { reason: &'static str, retry_after: Duration },
    #[error("the store is unavailable: {0}")]
    StoreUnavailable(String),
    #[error("the gateway is shutting down")]
    Draining,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::StoreUnavailable(error.to_string())
    }
}

impl ApiError {
    /// The machine-readable code in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnsupportedMediaType | ApiError::NotJson => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::DeviceRevoked => "device_revoked",
            ApiError::Malformed(_) => "malformed_body",
            ApiError::InvalidBatch(_) => "invalid_batch",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::AlreadyResolved(_) => "already_resolved",
            ApiError::DeviceBusy(_) => "device_busy",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::Draining => "draining",
        }
    }

    /// How long a device should wait before retrying, for 429 and 503; fixed waits are
    /// spread with jitter like admission's own.
    fn retry_after(&self) -> Option<Duration> {
        let spread = |seconds| decide::spread(Duration::from_secs(seconds), rand::random());
        match self {
            ApiError::RateLimited { retry_after, .. } | ApiError::Overloaded { retry_after, .. } => Some(*retry_after),
            ApiError::DeviceBusy(_) => Some(spread(1)),
            ApiError::StoreUnavailable(_) | ApiError::Draining => Some(spread(5)),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u128>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnsupportedMediaType | ApiError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::DeviceRevoked => StatusCode::FORBIDDEN,
            ApiError::Malformed(_) | ApiError::InvalidBatch(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::AlreadyResolved(_) => StatusCode::CONFLICT,
            ApiError::DeviceBusy(_) | ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StoreUnavailable(_) | ApiError::Draining | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let retry_after = self.retry_after();
        let mut response = HttpResponse::build(self.status_code());
        if let Some(wait) = retry_after {
            // Whole seconds, rounded up: a device never comes back before it was told.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.insert_header((header::RETRY_AFTER, seconds.max(1).to_string()));
        }
        if matches!(self, ApiError::PayloadTooLarge(_)) {
            response.insert_header((header::CONNECTION, "close"));
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
            retry_after_ms: retry_after.map(|wait| wait.as_millis()),
        })
    }
}
