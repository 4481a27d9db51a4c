//! A record after validation: typed, and the form both stores keep.

use crate::time_bucket::UtcDay;
use crate::wire::{Face, Geo};
use serde::{Deserialize, Serialize};

/// What an employee did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    CheckIn,
    CheckOut,
    BreakStart,
    BreakEnd,
    LeaveRequest,
}

impl RecordKind {
    /// Upload order a device uses unless its org says otherwise.
    pub const ALL: [RecordKind; 5] =
        [Self::CheckIn, Self::CheckOut, Self::BreakStart, Self::BreakEnd, Self::LeaveRequest];
    pub(crate) const NAMES: &'static str = "check_in, check_out, break_start, break_end, leave_request";

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CheckIn => "check_in",
            Self::CheckOut => "check_out",
            Self::BreakStart => "break_start",
            Self::BreakEnd => "break_end",
            Self::LeaveRequest => "leave_request",
        }
    }
}

/// The dates a leave request covers, both inclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaveSpan {
    pub from: UtcDay,
    pub to: UtcDay,
    pub leave_type: String,
    pub reason: Option<String>,
}

/// A record whose every field is in range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidRecord {
    pub seq: u64,
    /// Exactly as the device sent it (a UUID), so a resend compares equal byte for byte.
    pub record_id: String,
    pub kind: RecordKind,
    pub employee_id: String,
    pub recorded_at: i64,
    pub uptime_ms: Option<i64>,
    pub offline: bool,
    pub geo: Option<Geo>,
    pub face: Option<Face>,
    pub qr: Option<String>,
    pub leave: Option<LeaveSpan>,
    pub note: Option<String>,
}

impl ValidRecord {
    /// The UTC day bucket of the employee's timeline this record belongs to.
    pub fn day(&self) -> UtcDay {
        UtcDay::of_unix_ms(self.recorded_at)
    }
}
