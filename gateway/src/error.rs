//! Every error the gateway answers with, and the one place that maps each to an HTTP
//! status and a JSON body `{"error": code, "message": text}`.

use crate::admission::decide;
use crate::state::StoreCorruption;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::web;
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
    /// Not the device's doing and not cured by a retry: an operator must act.
    #[error("the store holds a corrupt value: {0}")]
    StoreCorrupt(String),
    #[error(
        "the request body arrived too slowly (at least {min_bytes_per_s} bytes a second after the first {grace_s} s)"
    )]
    BodyTooSlow { min_bytes_per_s: u64, grace_s: u64 },
    #[error("the gateway is shutting down")]
    Draining,
}

/// A store error as the caller should see it: a value already there is a conflict,
/// corruption is the server's fault (500, and `/readyz` turns red), and the rest is
/// unavailability a device rides out by retrying (a device another gateway took over,
/// or a timeline that kept moving, only reach here after the pipeline's own retries).
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::AlreadyExists => ApiError::AlreadyExists("it already exists".into()),
            StoreError::Corrupt(what) => ApiError::StoreCorrupt(what),
            StoreError::Unavailable(_)
            | StoreError::Failed(_)
            | StoreError::Fenced(_)
            | StoreError::TimelineMoved(_) => ApiError::StoreUnavailable(error.to_string()),
        }
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
            ApiError::StoreCorrupt(_) => "store_corrupt",
            ApiError::BodyTooSlow { .. } => "body_too_slow",
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
            ApiError::StoreCorrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BodyTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
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
        // The rest of the body is not read: the connection cannot carry another request.
        if matches!(self, ApiError::PayloadTooLarge(_) | ApiError::BodyTooSlow { .. }) {
            response.force_close();
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
            retry_after_ms: retry_after.map(|wait| wait.as_millis()),
        })
    }
}

/// Middleware: a response that reports store corruption turns `/readyz` red, wherever
/// the corrupt value was met (a handler, a device actor, the admin API).
pub async fn watch_for_store_corruption(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let corruption = request.app_data::<web::Data<StoreCorruption>>().cloned();
    let response = next.call(request).await?;
    if let (Some(corruption), Some(ApiError::StoreCorrupt(what))) =
        (corruption, response.response().error().and_then(|error| error.as_error::<ApiError>()))
    {
        corruption.seen(what);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::{App, HttpResponse};

    /// Each store error as a device or an administrator sees it: status, code, and
    /// whether it says when to come back.
    #[test]
    fn store_errors_map_to_what_they_mean() {
        let cases = [
            (StoreError::AlreadyExists, 409, "already_exists", false),
            (StoreError::Unavailable("a node timed out".into()), 503, "store_unavailable", true),
            (StoreError::Failed("a disk write failed".into()), 503, "store_unavailable", true),
            (StoreError::Fenced("dev-1 was claimed by another gateway".into()), 503, "store_unavailable", true),
            (StoreError::TimelineMoved("acme/emp-1".into()), 503, "store_unavailable", true),
            (StoreError::Corrupt("a progress row does not decode".into()), 500, "store_corrupt", false),
        ];
        for (store_error, status, code, says_when) in cases {
            let shown = format!("{store_error:?}");
            let error = ApiError::from(store_error);
            let response = error.error_response();
            assert_eq!(response.status().as_u16(), status, "{shown}");
            assert_eq!(error.code(), code, "{shown}");
            assert_eq!(response.headers().contains_key(header::RETRY_AFTER), says_when, "{shown}");
        }
    }

    #[actix_web::test]
    async fn a_response_reporting_corruption_is_remembered() {
        let corruption = web::Data::new(StoreCorruption::default());
        let app = init_service(
            App::new()
                .app_data(corruption.clone())
                .wrap(actix_web::middleware::from_fn(watch_for_store_corruption))
                .route("/fine", web::get().to(|| async { HttpResponse::Ok().finish() }))
                .route(
                    "/busy",
                    web::get().to(|| async { Err::<HttpResponse, _>(ApiError::StoreUnavailable("x".into())) }),
                )
                .route(
                    "/corrupt",
                    web::get().to(|| async { Err::<HttpResponse, _>(ApiError::StoreCorrupt("row 7".into())) }),
                ),
        )
        .await;
        for path in ["/fine", "/busy"] {
            call_service(&app, TestRequest::get().uri(path).to_request()).await;
        }
        assert_eq!(corruption.first(), None, "neither success nor unavailability is corruption");
        let response = call_service(&app, TestRequest::get().uri("/corrupt").to_request()).await;
        assert_eq!(response.status().as_u16(), 500);
        assert_eq!(corruption.first(), Some("row 7"));
    }
}
