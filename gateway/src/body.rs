//! Reads a request body up to the configured limit, at a minimum pace.
//!
//! An oversized upload is read to its end and thrown away (up to a bound) before the
//! 413 goes out: a client still sending would otherwise have its connection reset
//! under it and never see the status.
//!
//! A body that arrives too slowly (after a grace period, slower than the minimum rate;
//! one silent, trickling or half-closed connection) gets 408 and its connection is
//! closed: what was reserved for it goes back to the budgets, so slow clients cannot
//! hold them (the way nginx's `client_body_timeout` and Apache's `mod_reqtimeout` do).

use crate::error::ApiError;
use actix_web::web::{Bytes, BytesMut, Payload};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::time::Instant;

/// How much of an oversized body is swallowed, at most, so the 413 can be read.
const DRAIN_LIMIT_BYTES: usize = 64 * 1024 * 1024;
/// How long an oversized body may take to swallow.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// How fast a body must arrive: within `grace` it may pause, after it every byte must
/// have come by `grace + its offset / min_bytes_per_s` from the start.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    pub grace: Duration,
    pub min_bytes_per_s: u64,
}

impl BodyPace {
    /// When more than `received` bytes must have arrived, for a body begun at `started`.
    fn deadline_for_more(&self, started: Instant, received: usize) -> Instant {
        started + self.grace + Duration::from_secs_f64(received as f64 / self.min_bytes_per_s.max(1) as f64)
    }

    fn too_slow(&self) -> ApiError {
        ApiError::BodyTooSlow { min_bytes_per_s: self.min_bytes_per_s, grace_s: self.grace.as_secs() }
    }
}

/// Reads a body of at most `limit` bytes (`declared_length`, within the limit, sizes
/// the buffer; a body declared larger is refused by its caller from the headers).
pub async fn read_limited(
    mut payload: Payload,
    limit: usize,
    declared_length: Option<usize>,
    pace: BodyPace,
) -> Result<Bytes, ApiError> {
    let started = Instant::now();
    let mut body = BytesMut::with_capacity(declared_length.unwrap_or(8 * 1024).min(limit));
    loop {
        let next = tokio::time::timeout_at(pace.deadline_for_more(started, body.len()), payload.next());
        let Some(chunk) = next.await.map_err(|_| pace.too_slow())? else { break };
        let chunk = chunk.map_err(|error| ApiError::BadRequest(format!("could not read the body: {error}")))?;
        if body.len() + chunk.len() > limit {
            drain(payload).await;
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads a body to its end (up to a bound) and throws it away, so that an error status
/// sent before reading it reaches a client that is still sending.
pub async fn drain(mut payload: Payload) {
    let swallow = async {
        let mut swallowed = 0;
        while let Some(Ok(chunk)) = payload.next().await {
            swallowed += chunk.len();
            if swallowed > DRAIN_LIMIT_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, swallow).await;
}
