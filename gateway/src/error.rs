//! Every error the gateway answers with, and the one place that maps each to an HTTP
//! status and a JSON body `{"error": code, "message": text}`.

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
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::Draining => "draining",
        }
    }

    /// How long a device should wait before retrying, for 429 and 503.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::DeviceBusy(_) => Some(Duration::from_secs(1)),
            ApiError::StoreUnavailable(_) | ApiError::Draining => Some(Duration::from_secs(5)),
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
            ApiError::DeviceBusy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StoreUnavailable(_) | ApiError::Draining => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let retry_after = self.retry_after();
        let mut response = HttpResponse::build(self.status_code());
        if let Some(wait) = retry_after {
            response.insert_header((header::RETRY_AFTER, wait.as_secs().max(1).to_string()));
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
