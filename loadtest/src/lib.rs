//! otg's load tester: simulates a fleet of devices (each an `otg-client` with an
//! in-memory queue) against gateways it starts or is pointed at (several on one store), runs a
//! scenario, verifies through the admin API that every record was acked exactly once
//! and stored exactly once, and writes a report (JSON, markdown, SVG chart).
//!
//! `otg-loadtest --help` lists the scenarios: `steady`, `outage`, `soak`, `crash`.

pub mod admin;
pub mod fleet;
pub mod gateway;
pub mod report;
pub mod routing;
pub mod scenario;
pub mod stats;

pub use scenario::{run, Options, Scenario};
