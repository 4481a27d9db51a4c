//! `GET /v1/admin/employees/{employee_id}/attendance?org_id=&day=`: one UTC day of an
//! employee's records in time order, each with its status (nothing is ever deleted),
//! and the effective shifts they make.

use crate::auth::authenticate_admin;
use crate::error::ApiError;
use crate::state::AppState;
use crate::views;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/v1/admin/employees/{employee_id}/attendance", web::get().to(attendance));
}

#[derive(Deserialize)]
pub struct AttendanceQuery {
    org_id: String,
    day: String,
}

async fn attendance(
    request: HttpRequest,
    employee_id: web::Path<String>,
    query: web::Query<AttendanceQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate_admin(&request, &state.admin_token)?;
    Ok(HttpResponse::Ok().json(views::attendance_day(&state, &query.org_id, &employee_id, &query.day).await?))
}
