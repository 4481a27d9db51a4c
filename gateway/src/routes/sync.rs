//! Device endpoints (MessagePack): upload a batch, read the org's config, read status.
//!
//! A batch goes: content type, declared size, the device named in its headers (enrolled,
//! not revoked), memory and bytes admission (and its client address's share), size
//! limit and pace of the body, signature, the device's rate, decode, batch checks, the
//! org's rate and the records budget at the batch's priority, record checks, then to
//! the device's actor, and is answered once the actor says durable, with a
//! `Server-Timing` header saying where its time went (`batch_timing`). What admission
//! reserved is released with the answer.

use crate::admission::decide::Priority;
use crate::admission::Reserved;
use crate::auth::{authenticate_device, check_signature, enrolled_device};
use crate::batch_timing::BatchTiming;
use crate::body::{drain, read_limited, BodyPace};
use crate::clock::now_ms;
use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use otg_actors::store::{ConflictRecord, DeviceEnrolment, DeviceHealth, PolicyOutcome};
use otg_actors::Incoming;
use otg_actors::Upload;
use otg_schema::signing::PRIORITY_HEADER;
use otg_schema::validate::{check_batch, check_record, RecordRules};
use otg_schema::wire::{self, Batch, BatchResponse, DeviceStatus, OpenConflict};
use serde::Serialize;
use std::time::{Duration, Instant};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/sync/batches", web::post().to(upload_batch))
        .route("/v1/sync/config", web::get().to(device_config))
        .route("/v1/sync/status", web::get().to(device_status));
}

#[tracing::instrument(skip_all, fields(device_id))]
async fn upload_batch(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (started, received_at) = (Instant::now(), now_ms());
    let mut priority = None;
    let result = match authenticated(&request, payload, &state).await {
        Ok((device, body, reserved)) => {
            tracing::Span::current().record("device_id", device.device_id.as_str());
            let mut batch_id = None;
            let arrived = Arrived { received_at, started };
            let result = ingest(&device, body, reserved, arrived, &state, &mut batch_id, &mut priority).await;
            if let Err(error) = &result {
                state.failed_batches.record(&device, error, batch_id, received_at, started.elapsed());
            }
            result
        }
        Err(error) => Err(error),
    };
    let (outcome, acks) = match &result {
        Ok((response, _)) => ("ok", response.acks.as_slice()),
        Err(error) => (error.code(), &[][..]),
    };
    state.metrics.observe_batch(outcome, priority, started.elapsed(), acks);
    let (response, timing) = result?;
    if let Some(priority) = priority {
        state.metrics.observe_stages(priority, &timing);
    }
    state.slow_batches.observe(&response, &timing);
    let mut answer = msgpack(&response);
    if let Ok(value) = header::HeaderValue::from_str(&timing.server_timing()) {
        answer.headers_mut().insert(header::HeaderName::from_static("server-timing"), value);
    }
    Ok(answer)
}

/// When a batch's request arrived: by the server's clock (stored with it) and by the
/// monotonic clock (its stages are measured from it).
struct Arrived {
    received_at: i64,
    started: Instant,
}

/// The body of a well-formed, signed request within its device's rate, the device that
/// signed it, and the bytes admission reserved for it. A request for a device that is
/// not enrolled or is revoked is refused from its headers, before anything is reserved
/// for it; a body that arrives too slowly loses what was reserved (`BodyPace`).
async fn authenticated(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(DeviceEnrolment, Bytes, Reserved), ApiError> {
    if !is_msgpack(request) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let (limit, declared) = (state.config.body_limit_bytes, content_length(request));
    if declared.is_some_and(|length| length > limit) {
        // Swallowed, not read into memory, so a client still sending sees the 413.
        drain(payload).await;
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let device = match enrolled_device(request, state.store.as_ref()).await {
        Ok(device) => device,
        Err(refused) => {
            drain(payload).await;
            return Err(refused);
        }
    };
    let admission = &state.admission;
    let (client, hint) = (request.peer_addr().map(|address| address.ip()), priority_hint(request));
    let mut reserved = match admission.reserve(client, hint, declared.unwrap_or(limit).min(limit) as u64).await {
        Ok(reserved) => reserved,
        Err(refused) => {
            drain(payload).await;
            return Err(refused);
        }
    };
    let body = read_limited(payload, limit, declared, body_pace(&state.config)).await?;
    reserved.body_arrived();
    check_signature(request, &body, &device)?;
    state.admission.check_device(&device.device_id)?;
    Ok((device, body, reserved))
}

fn body_pace(config: &Config) -> BodyPace {
    BodyPace { grace: Duration::from_millis(config.body_grace_ms), min_bytes_per_s: config.body_min_bytes_per_s }
}

/// Decodes, checks and hands a device's batch to its actor; answers once durable, with
/// where the batch's time went.
async fn ingest(
    device: &DeviceEnrolment,
    body: Bytes,
    reserved: Reserved,
    arrived: Arrived,
    state: &AppState,
    batch_id_seen: &mut Option<String>,
    priority_seen: &mut Option<Priority>,
) -> Result<(BatchResponse, BatchTiming), ApiError> {
    let Arrived { received_at, started } = arrived;
    let batch: Batch = wire::decode(&body).map_err(ApiError::Malformed)?;
    drop(body);
    *batch_id_seen = Some(batch.batch_id.clone());
    check_batch(&batch, &device.device_id)?;
    let newest = batch.records.iter().map(|record| record.recorded_at).max().unwrap_or(i64::MIN);
    let priority = state.admission.priority(newest, received_at);
    *priority_seen = Some(priority);
    let admitted = state.admission.admit(reserved, &device.org_id, batch.records.len() as u64, priority)?;

    let settings = state.store.org_settings(&device.org_id).await?;
    let rules = RecordRules {
        now_ms: received_at,
        max_offline_days: settings.max_offline_days,
        enrolled_employee: device.employee_id.as_deref(),
    };
    let reported_health = batch.reports_health().then(|| DeviceHealth {
        queue_bytes: batch.queue_bytes,
        app_version: batch.app_version.clone(),
        oldest_pending_at: batch.oldest_pending_at,
        reported_at: Some(received_at),
    });
    let Batch { batch_id, pending, records, .. } = batch;
    let records = records
        .into_iter()
        .map(|record| Incoming {
            seq: record.seq,
            record_id: record.record_id.clone(),
            verdict: check_record(record, &rules),
        })
        .collect();

    let live = admitted.priority == Priority::Live;
    let upload = Upload {
        org_id: device.org_id.clone(),
        batch_id: batch_id.clone(),
        received_at,
        reported_pending: pending,
        reported_health,
        records,
        settings,
        live,
    };
    let admission = started.elapsed();
    let durable = state.devices.ingest(&device.device_id, upload)?;
    let outcome = durable.await.map_err(|_| ApiError::StoreUnavailable("the device actor stopped".into()))??;
    state.admission.drained(outcome.acks.len() as u64);
    drop(admitted);
    let timing = BatchTiming { admission, stages: outcome.stages, total: started.elapsed() };
    let response = BatchResponse { batch_id, acks: outcome.acks, next_seq: outcome.next_seq, server_time: now_ms() };
    Ok((response, timing))
}

async fn device_config(request: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let device = authenticate_device(&request, b"", state.store.as_ref()).await?;
    Ok(msgpack(&state.store.org_settings(&device.org_id).await?.device_config()))
}

async fn device_status(request: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let device = authenticate_device(&request, b"", state.store.as_ref()).await?;
    // From the store, not a device actor: another gateway may hold the device.
    let progress = state.store.device_progress(&device.device_id).await?;
    let open_conflicts = state.store.open_conflicts_of_device(&device.device_id).await?;
    Ok(msgpack(&DeviceStatus {
        next_seq: progress.received.next_seq(),
        last_sync_at: progress.last_sync_at,
        open_conflicts: open_conflicts
            .iter()
            .filter_map(|conflict| open_conflict(conflict, &device.device_id))
            .collect(),
    }))
}

/// How a device sees a conflict its record takes part in.
fn open_conflict(conflict: &ConflictRecord, device_id: &str) -> Option<OpenConflict> {
    let (record, superseded) = if conflict.device_record.device_id == device_id {
        (&conflict.device_record, conflict.outcome == PolicyOutcome::NewcomerSuperseded)
    } else {
        (conflict.server_record.as_ref()?, conflict.outcome == PolicyOutcome::ServerSuperseded)
    };
    Some(OpenConflict {
        conflict_id: conflict.id.clone(),
        kind: conflict.kind.as_str().to_owned(),
        seq: record.seq,
        record_id: record.record_id.clone(),
        superseded,
    })
}

fn is_msgpack(request: &HttpRequest) -> bool {
    let Some(content_type) = request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/msgpack") || essence.eq_ignore_ascii_case("application/x-msgpack")
}

/// The device's word on its batch's priority (`X-OTG-Priority: live|backlog`).
fn priority_hint(request: &HttpRequest) -> Option<Priority> {
    match request.headers().get(PRIORITY_HEADER)?.to_str().ok()? {
        "live" => Some(Priority::Live),
        "backlog" => Some(Priority::Backlog),
        _ => None,
    }
}

fn content_length(request: &HttpRequest) -> Option<usize> {
    request.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn msgpack<T: Serialize>(value: &T) -> HttpResponse {
    HttpResponse::Ok().content_type("application/msgpack").body(wire::encode(value))
}
