//! otg's actors and stores: per-device dedupe and ordering, conflict detection against
//! each employee's timeline, and the durable group commit.
//!
//! `DeviceRegistry` hands each batch to its device's `DeviceActor`, which runs it through
//! the ingest pipeline (`ingest`: dedupe, placement by the conflict actors, the commit
//! through a `Store`) and answers once the write is durable.
//!
//! The public surface is what the gateway uses; `benchmarked` adds the hot functions
//! the criterion benches measure.

mod conflict_actor;
mod conflict_rules;
mod conflict_shards;
mod dedupe;
mod device_actor;
mod employee_timeline;
mod evaluation;
mod ingest;
pub mod metrics;
mod registry;
mod retry;
mod seq_ranges;
mod sharding;
pub mod store;
mod supervision;

pub use conflict_rules::ConflictKind;
pub use dedupe::Incoming;
pub use employee_timeline::ResolveError;
pub use ingest::{BatchOutcome, Stages, Upload};
pub use registry::{DeviceActorOptions, DeviceBusy, DeviceRegistry};
pub use retry::RetryPolicy;
pub use seq_ranges::SeqRanges;

/// The hot functions the criterion benches measure (`actors/benches`), and nothing
/// else depends on.
#[doc(hidden)]
pub mod benchmarked {
    pub use crate::conflict_rules::{evaluate, Event, RuleSettings};
    pub use crate::dedupe::{decide, seqs_to_look_up};
}
