//! How both stores encode the values they keep.

use super::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Stored values are MessagePack arrays (struct fields by position): half the bytes
/// of named maps on the hottest path. A field may only ever be appended, with
/// `#[serde(default)]`, so that values written before still read.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("stored types always encode")
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|error| StoreError::Corrupt(error.to_string()))
}
