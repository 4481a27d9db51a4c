//! An org's sync settings: what devices are told (`GET /v1/sync/config`) and what the
//! gateway checks records against.

use crate::record::RecordKind;
use serde::{Deserialize, Serialize};

/// How a conflict is settled when it is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictResolution {
    /// What was stored first stands; the newcomer is kept, marked superseded.
    ServerWins,
    DeviceWins,
    /// Both stand until an administrator decides.
    Manual,
}

/// Every setting of one org, with the defaults of PROTOCOL.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrgSettings {
    pub max_offline_days: u32,
    pub storage_limit_bytes: u64,
    pub sync_on_wifi_only: bool,
    pub auto_retry: bool,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub conflict_resolution: ConflictResolution,
    pub max_batch_records: u32,
    pub sync_priorities: Vec<RecordKind>,
    pub max_clock_skew_s: u32,
    pub duplicate_window_s: u32,
    pub max_shift_hours: u32,
    pub gap_timeout_s: u32,
}

impl Default for OrgSettings {
    fn default() -> Self {
        OrgSettings {
            max_offline_days: 7,
            storage_limit_bytes: 104_857_600,
            sync_on_wifi_only: false,
            auto_retry: true,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            conflict_resolution: ConflictResolution::ServerWins,
            max_batch_records: 500,
            sync_priorities: RecordKind::ALL.to_vec(),
            max_clock_skew_s: 300,
            duplicate_window_s: 120,
            max_shift_hours: 16,
            gap_timeout_s: 300,
        }
    }
}

impl OrgSettings {
    /// The part of the settings a device reads.
    pub fn device_config(&self) -> DeviceConfig {
        DeviceConfig {
            max_offline_days: self.max_offline_days,
            storage_limit_bytes: self.storage_limit_bytes,
            sync_on_wifi_only: self.sync_on_wifi_only,
            auto_retry: self.auto_retry,
            retry_base_ms: self.retry_base_ms,
            retry_max_ms: self.retry_max_ms,
            conflict_resolution: self.conflict_resolution,
            max_batch_records: self.max_batch_records,
            sync_priorities: self.sync_priorities.clone(),
        }
    }
}

/// `GET /v1/sync/config` answer (MessagePack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceConfig {
    pub max_offline_days: u32,
    pub storage_limit_bytes: u64,
    pub sync_on_wifi_only: bool,
    pub auto_retry: bool,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub conflict_resolution: ConflictResolution,
    pub max_batch_records: u32,
    pub sync_priorities: Vec<RecordKind>,
}
