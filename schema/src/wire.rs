//! The MessagePack shapes of PROTOCOL.md, exactly as devices send and read them.
//!
//! Structs are maps with string keys; unknown keys are ignored and optional keys may be
//! absent or nil. Field values are checked in [`crate::validate`], not here: a value of
//! the wrong *type* fails decoding (a whole-batch 400), a value *out of range* rejects
//! only its record.

use serde::{Deserialize, Serialize};

/// The most records one batch may carry.
pub const MAX_BATCH_RECORDS: usize = 500;
/// The longest `batch_id`, in characters.
pub const MAX_BATCH_ID_CHARS: usize = 64;
/// The longest `app_version`, in characters.
pub const MAX_APP_VERSION_CHARS: usize = 64;

/// `POST /v1/sync/batches` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub device_id: String,
    pub batch_id: String,
    /// Device clock when sending, unix ms.
    pub sent_at: i64,
    /// Records still queued on the device after this batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    pub records: Vec<Record>,
    /// otg addition (device health): bytes the device's queue takes in its storage
    /// after this batch, to be read against the org's `storage_limit_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_bytes: Option<u64>,
    /// otg addition (device health): the app's version, 1 to 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// otg addition (device health): `recorded_at` of the oldest record still queued
    /// after this batch, unix ms; absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending_at: Option<i64>,
}

impl Batch {
    /// A batch with only the required keys; set the optional ones with `..`.
    pub fn new(device_id: impl Into<String>, batch_id: impl Into<String>, sent_at: i64, records: Vec<Record>) -> Self {
        Batch {
            device_id: device_id.into(),
            batch_id: batch_id.into(),
            sent_at,
            pending: None,
            network: None,
            records,
            queue_bytes: None,
            app_version: None,
            oldest_pending_at: None,
        }
    }

    /// Whether the device reported any of the health fields (an older app reports none).
    pub fn reports_health(&self) -> bool {
        self.queue_bytes.is_some() || self.app_version.is_some() || self.oldest_pending_at.is_some()
    }
}

/// The connection a device reports it is uploading over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Wifi,
    Cellular,
    /// Also what a newer app's unknown network name decodes to.
    #[serde(other)]
    Other,
}

/// One attendance record as the device sent it. `kind` and `record_id` stay strings
/// here so that an unknown kind or a malformed id rejects one record, not the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Per-device sequence number, >= 1; signed so that 0 and negatives are
    /// out of range (rejected) rather than mistyped (400).
    pub seq: i64,
    pub record_id: String,
    pub kind: String,
    pub employee_id: String,
    /// Device clock when the employee acted, unix ms.
    pub recorded_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<Geo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face: Option<Face>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave: Option<Leave>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Record {
    /// A record with only the required keys; set the optional ones with `..`.
    pub fn new(
        seq: i64,
        record_id: impl Into<String>,
        kind: &str,
        employee_id: impl Into<String>,
        recorded_at: i64,
    ) -> Self {
        Record {
            seq,
            record_id: record_id.into(),
            kind: kind.into(),
            employee_id: employee_id.into(),
            recorded_at,
            uptime_ms: None,
            offline: None,
            geo: None,
            face: None,
            qr: None,
            leave: None,
            note: None,
        }
    }
}

/// GPS fix captured with a record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Geo {
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: f64,
}

/// On-device face match result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Face {
    pub matched: bool,
    pub score: f64,
}

/// The leave a `leave_request` asks for; dates are `YYYY-MM-DD`, inclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leave {
    pub from: String,
    pub to: String,
    pub leave_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The 200 answer to a batch: one ack per record, in the order of `records`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub batch_id: String,
    pub acks: Vec<Ack>,
    /// Lowest seq of this device the server has not received.
    pub next_seq: u64,
    /// Server clock, unix ms.
    pub server_time: i64,
}

/// What the gateway did with one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: i64,
    pub status: AckStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_id: Option<String>,
    /// otg addition: for `invalid`, the field and the rule it broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    Accepted,
    Duplicate,
    Conflict,
    Rejected,
}

impl AckStatus {
    pub const ALL: [AckStatus; 4] = [Self::Accepted, Self::Duplicate, Self::Conflict, Self::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Conflict => "conflict",
            Self::Rejected => "rejected",
        }
    }
}

/// Why a record will never be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    TooOld,
    Invalid,
    SeqReused,
    EmployeeMismatch,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [Self::TooOld, Self::Invalid, Self::SeqReused, Self::EmployeeMismatch];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooOld => "too_old",
            Self::Invalid => "invalid",
            Self::SeqReused => "seq_reused",
            Self::EmployeeMismatch => "employee_mismatch",
        }
    }
}

/// `GET /v1/sync/status` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub next_seq: u64,
    /// Unix ms of the last batch this device had acked; nil before the first.
    pub last_sync_at: Option<i64>,
    pub open_conflicts: Vec<OpenConflict>,
}

/// An open conflict one of this device's records takes part in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenConflict {
    pub conflict_id: String,
    /// `duplicate_event`, `overlap`, `orphan_check_out`, ...
    pub kind: String,
    /// This device's record in the conflict.
    pub seq: u64,
    pub record_id: String,
    /// Whether the org's policy set this device's record aside for the other one.
    pub superseded: bool,
}

/// Decodes a MessagePack value, naming the path of the first key that is missing or
/// mistyped (`records[3].seq: invalid type ...`). Tracking the path costs time, so it
/// is done only to explain a value that failed to decode.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut deserializer = deserializer(bytes);
    match T::deserialize(&mut deserializer) {
        Ok(value) if deserializer.position() as usize == bytes.len() => Ok(value),
        Ok(_) => Err(DecodeError("trailing bytes after the MessagePack value".into())),
        Err(_) => Err(explain::<T>(bytes)),
    }
}

/// Decodes again, tracking the path, to say where decoding failed.
fn explain<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> DecodeError {
    let mut deserializer = deserializer(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(_) => DecodeError("the value does not decode".into()),
        Err(error) => {
            let path = error.path().to_string();
            DecodeError(if path == "." {
                error.into_inner().to_string()
            } else {
                format!("{path}: {}", error.into_inner())
            })
        }
    }
}

/// The deepest nesting a body may have. The wire types nest four levels (a batch, its
/// records, a record, its `geo`); the rest is room for what newer apps add under keys
/// this gateway ignores. rmp-serde's own limit (1024) is deeper than a 2 MiB thread's
/// stack in a debug build: a 1 KiB body of nested arrays under an unknown key aborted
/// the process (found by fuzzing, docs/fuzzing.md).
pub const MAX_DEPTH: usize = 32;

fn deserializer(bytes: &[u8]) -> rmp_serde::Deserializer<rmp_serde::decode::ReadReader<std::io::Cursor<&[u8]>>> {
    let mut deserializer = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    deserializer.set_max_depth(MAX_DEPTH);
    deserializer
}

/// Encodes a value as a MessagePack map with string keys, as devices expect.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("wire types always encode")
}

/// Why a body is not a well-formed value of the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);
