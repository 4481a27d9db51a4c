//! otg's actors and stores: per-device dedupe and ordering, durable group commit.
//!
//! `DeviceRegistry` hands each batch to its device's `DeviceActor`, which decides it
//! (`dedupe`), writes it through a `Store`, and answers once the write is durable.

pub mod conflict_actor;
pub mod conflict_actors;
pub mod conflict_rules;
pub mod dedupe;
pub mod device_actor;
pub mod employee_timeline;
pub mod evaluation;
pub mod metrics;
pub mod registry;
pub mod retry;
pub mod seq_ranges;
pub mod store;

pub use device_actor::{BatchOutcome, Upload};
pub use registry::{DeviceActorOptions, DeviceBusy, DeviceRegistry};
