//! Paging of admin lists: `limit` and an opaque `cursor` (the position after the last
//! item of the previous page, base64url).

use crate::error::ApiError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit.unwrap_or(DEFAULT_LIMIT) {
            limit @ 1..=MAX_LIMIT => Ok(limit),
            _ => Err(ApiError::BadRequest(format!("limit: must be 1 to {MAX_LIMIT}"))),
        }
    }

    pub fn after(&self) -> Result<Option<Vec<u8>>, ApiError> {
        self.cursor
            .as_deref()
            .map(|cursor| {
                URL_SAFE_NO_PAD
                    .decode(cursor)
                    .map_err(|_| ApiError::BadRequest("cursor: not one this gateway gave".into()))
            })
            .transpose()
    }
}

/// The cursor of the next page: after the last item, if the page was full.
pub fn next_cursor(last: Option<&[u8]>, returned: usize, limit: usize) -> Option<String> {
    last.filter(|_| returned == limit).map(|position| URL_SAFE_NO_PAD.encode(position))
}
