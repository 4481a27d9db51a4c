//! The console's one static asset, its stylesheet, compiled into the binary: no build
//! step, nothing fetched from elsewhere.

use actix_web::http::header;
use actix_web::HttpResponse;

const STYLESHEET: &str = include_str!("console.css");

pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .body(STYLESHEET)
}
