//! Every HTTP route of the gateway, and how request-parsing errors become `ApiError`s.

mod admin;
mod attendance;
mod conflicts;
mod ops;
mod orgs;
pub(crate) mod paging;
mod reports;
mod sync;

use crate::error::ApiError;
use actix_web::error::JsonPayloadError;
use actix_web::web;

/// Largest admin JSON body.
const ADMIN_BODY_LIMIT_BYTES: usize = 64 * 1024;

/// The admin API's request shapes, for the fuzz targets (`fuzz/`) only.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use super::admin::EnrolRequest;
    pub use super::attendance::AttendanceQuery;
    pub use super::conflicts::{ConflictsQuery, ResolveBody};
    pub use super::paging::{next_cursor, PageQuery, MAX_LIMIT};
    pub use super::reports::{AuditQuery, OrgQuery, StatsQuery};
}

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .app_data(web::JsonConfig::default().limit(ADMIN_BODY_LIMIT_BYTES).error_handler(|error, _| {
            match error {
                JsonPayloadError::ContentType => ApiError::NotJson,
                JsonPayloadError::OverflowKnownLength { limit, .. } | JsonPayloadError::Overflow { limit } => {
                    ApiError::PayloadTooLarge(limit)
                }
                other => ApiError::BadRequest(format!("invalid JSON body: {other}")),
            }
            .into()
        }))
        .app_data(
            web::QueryConfig::default()
                .error_handler(|error, _| ApiError::BadRequest(format!("invalid query: {error}")).into()),
        )
        .configure(sync::routes)
        .configure(admin::routes)
        .configure(orgs::routes)
        .configure(conflicts::routes)
        .configure(attendance::routes)
        .configure(reports::routes)
        .configure(ops::routes)
        .route("/v1/openapi.json", web::get().to(crate::openapi::serve))
        .configure(crate::console::configure)
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(ApiError::NotFound("no such endpoint".into()))
        }));
}
