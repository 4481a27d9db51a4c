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
    /// Checks every field's range; the error names the field and the rule.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ((1..=365).contains(&self.max_offline_days), "max_offline_days: must be 1 to 365"),
            (self.storage_limit_bytes >= 1 << 20, "storage_limit_bytes: must be at least 1048576"),
            ((100..=3_600_000).contains(&self.retry_base_ms), "retry_base_ms: must be 100 to 3600000"),
            (
                self.retry_max_ms >= self.retry_base_ms && self.retry_max_ms <= 86_400_000,
                "retry_max_ms: must be at least retry_base_ms and at most 86400000",
            ),
            ((1..=500).contains(&self.max_batch_records), "max_batch_records: must be 1 to 500"),
            (self.max_clock_skew_s <= 86_400, "max_clock_skew_s: must be at most 86400"),
            (self.duplicate_window_s <= 3_600, "duplicate_window_s: must be at most 3600"),
            ((1..=48).contains(&self.max_shift_hours), "max_shift_hours: must be 1 to 48"),
            ((1..=604_800).contains(&self.gap_timeout_s), "gap_timeout_s: must be 1 to 604800"),
        ];
        if let Some((_, message)) = checks.iter().find(|(ok, _)| !ok) {
            return Err((*message).to_owned());
        }
        let mut kinds = self.sync_priorities.clone();
        kinds.sort();
        if kinds != RecordKind::ALL.to_vec() {
            return Err("sync_priorities: must name each record kind exactly once".into());
        }
        Ok(())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_out_of_range_values_are_named() {
        assert_eq!(OrgSettings::default().validate(), Ok(()));
        let zero_days = OrgSettings { max_offline_days: 0, ..OrgSettings::default() };
        assert!(zero_days.validate().unwrap_err().starts_with("max_offline_days"));
        let upside_down = OrgSettings { retry_max_ms: 10, ..OrgSettings::default() };
        assert!(upside_down.validate().unwrap_err().starts_with("retry_max_ms"));
        let missing_kind = OrgSettings { sync_priorities: vec![RecordKind::CheckIn], ..OrgSettings::default() };
        assert!(missing_kind.validate().unwrap_err().starts_with("sync_priorities"));
    }
}
