//! otg's shared vocabulary: the wire types of PROTOCOL.md, their validation, request
//! signing and the UTC day buckets of the timeline.
//!
//! This crate has no runtime and no storage, so the gateway, the device client and the
//! loadtest all speak exactly the same protocol.

pub mod cql;
pub mod record;
pub mod settings;
pub mod signing;
pub mod time_bucket;
pub mod validate;
pub mod wire;

pub use record::{LeaveSpan, RecordKind, ValidRecord};
pub use settings::{ConflictResolution, DeviceConfig, OrgSettings};
pub use signing::DeviceSecret;
pub use time_bucket::UtcDay;
