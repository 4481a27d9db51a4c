//! What every request handler shares.

use crate::admission::Admission;
use crate::batch_timing::SlowBatchLog;
use crate::config::Config;
use crate::failed_batches::FailedBatches;
use crate::metrics::GatewayMetrics;
use actix_web::web;
use otg_actors::store::Store;
use otg_actors::DeviceRegistry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub struct AppState {
    pub config: Config,
    pub admin_token: String,
    pub store: Arc<dyn Store>,
    pub devices: DeviceRegistry,
    pub metrics: GatewayMetrics,
    pub metrics_registry: prometheus::Registry,
    pub failed_batches: FailedBatches,
    pub admission: Admission,
    pub slow_batches: SlowBatchLog,
    /// Set once shutdown begins: `/readyz` turns 503 so load balancers move away.
    pub(crate) draining: AtomicBool,
    pub(crate) store_corruption: web::Data<StoreCorruption>,
}

/// The first store corruption a request met: from then on `/readyz` is red, since an
/// operator must look at the store before this gateway is trusted again.
#[derive(Default)]
pub struct StoreCorruption(OnceLock<String>);

impl StoreCorruption {
    /// Remembers the first corruption seen (and logs it once).
    pub fn seen(&self, what: &str) {
        if self.0.set(what.to_owned()).is_ok() {
            tracing::error!(corruption = what, "the store returned a corrupt value; /readyz is red until a restart");
        }
    }

    pub fn first(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
