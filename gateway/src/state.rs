//! What every request handler shares.

use crate::admission::Admission;
use crate::config::Config;
use crate::failed_batches::FailedBatches;
use crate::metrics::GatewayMetrics;
use otg_actors::store::Store;
use otg_actors::DeviceRegistry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct AppState {
    pub config: Config,
    pub admin_token: String,
    pub store: Arc<dyn Store>,
    pub devices: DeviceRegistry,
    pub metrics: GatewayMetrics,
    pub metrics_registry: prometheus::Registry,
    pub failed_batches: FailedBatches,
    pub admission: Admission,
    /// Set once shutdown begins: `/readyz` turns 503 so load balancers move away.
    pub(crate) draining: AtomicBool,
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
