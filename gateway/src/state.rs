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
    draining: AtomicBool,
}

impl AppState {
    pub fn new(
        config: Config,
        admin_token: String,
        store: Arc<dyn Store>,
        devices: DeviceRegistry,
        metrics: GatewayMetrics,
        metrics_registry: prometheus::Registry,
        failed_batches: FailedBatches,
        admission: Admission,
    ) -> Self {
        AppState {
            config,
            admin_token,
            store,
            devices,
            metrics,
            metrics_registry,
            failed_batches,
            admission,
            draining: AtomicBool::new(false),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
