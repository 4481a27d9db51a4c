//! otg's device-side library: what an attendance app's Rust core does with its records.
//!
//! The app captures each check-in, break or leave request into a durable queue
//! (`SqliteQueue`; `MemoryQueue` for simulations), which numbers it with the device's
//! next `seq`. `Client::sync_now` uploads the queue in signed batches, in the order of
//! the org's `sync_priorities`, deletes what the acks say is safe to delete, and honours
//! `Retry-After` and the org's retry settings (`backoff`). The transport is a trait so
//! an app can bring its own (TLS, proxies); `HttpTransport` is plain HTTP on reqwest.

pub mod backoff;
mod client;
pub mod queue;
mod transport;

pub use client::{Client, ClientError, Network, SyncOutcome, SyncReport};
pub use queue::{MemoryQueue, QueueError, RecordQueue, SqliteQueue};
#[cfg(feature = "http")]
pub use transport::HttpTransport;
pub use transport::{Request, Response, Transport, TransportError};
