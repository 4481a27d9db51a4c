//! Reads a request body up to the configured limit.
//!
//! An oversized upload is read to its end and thrown away (up to a bound) before the
//! 413 goes out: a client still sending would otherwise have its connection reset
//! under it and never see the status.

use crate::error::ApiError;
use actix_web::web::{Bytes, BytesMut, Payload};
use futures_util::StreamExt;
use std::time::Duration;

/// How much of an oversized body is swallowed, at most, so the 413 can be read.
const DRAIN_LIMIT_BYTES: usize = 64 * 1024 * 1024;
/// How long an oversized body may take to swallow.
const DRAIN_TIME: Duration = Duration::from_secs(10);

pub async fn read_limited(
    mut payload: Payload,
    limit: usize,
    declared_length: Option<usize>,
) -> Result<Bytes, ApiError> {
    if declared_length.is_some_and(|length| length > limit) {
        drain(payload).await;
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = BytesMut::with_capacity(declared_length.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
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
