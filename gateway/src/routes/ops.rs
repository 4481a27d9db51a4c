//! Operations endpoints: liveness, readiness and Prometheus metrics.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use prometheus::{Encoder, TextEncoder};
use serde_json::json;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "alive"}))
}

/// Ready when the store answers, has never returned a corrupt value, and the gateway
/// is not shutting down.
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.is_draining() {
        return Err(ApiError::Draining);
    }
    if let Some(corruption) = state.store_corruption.first() {
        return Err(ApiError::StoreCorrupt(corruption.to_owned()));
    }
    state.store.ping().await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut text = Vec::new();
    TextEncoder::new().encode(&state.metrics_registry.gather(), &mut text).expect("metric families always encode");
    HttpResponse::Ok().content_type(prometheus::TEXT_FORMAT).body(text)
}
