//! What a live device actor costs, and that idle ones are evicted: RSS with 100,000
//! live device actors (each has claimed its device and committed an empty batch), then
//! after their idle timeout.
//!
//! `cargo bench -p otg-actors --bench actor_memory` (env: `BENCH_ACTORS`).

use otg_actors::metrics::{DeviceMetrics, StoreMetrics};
use otg_actors::store::{EmbeddedStore, EmbeddedStoreOptions, Store};
use otg_actors::{DeviceActorOptions, DeviceRegistry, Upload};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    if !std::env::args().any(|argument| argument == "--bench") {
        return;
    }
    let actors: usize = std::env::var("BENCH_ACTORS").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    actix_rt::System::new().block_on(async move {
        let registry = prometheus::Registry::new();
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(EmbeddedStoreOptions::new(dir.path()), StoreMetrics::register(&registry).unwrap())
                .unwrap(),
        );
        let options = DeviceActorOptions {
            idle_timeout: IDLE_TIMEOUT,
            conflict_idle_timeout: IDLE_TIMEOUT,
            conflict_cached_employees: 1_000,
            mailbox_capacity: 4,
            arbiters: 2,
            detect_conflicts: true,
            conflict_backlog_placements: 1,
            store_retry: Default::default(),
        };
        let devices = DeviceRegistry::start(store.clone(), options, DeviceMetrics::register(&registry).unwrap());
        let ids: Vec<String> = (0..actors).map(|n| format!("device-{n:08}")).collect();

        // Warm the allocator and the store with one round, so the figure is the actors'.
        for id in ids.iter().take(1_000) {
            start_actor(&devices, id).await;
        }
        tokio::time::sleep(IDLE_TIMEOUT * 2).await;
        let before = rss_bytes();
        let started = Instant::now();
        for id in &ids {
            start_actor(&devices, id).await;
        }
        let live = rss_bytes();
        let per_actor = (live - before) as f64 / actors as f64;
        println!(
            "{actors} live device actors in {:.1?}: RSS {} MiB -> {} MiB, {per_actor:.0} bytes per live actor",
            started.elapsed(),
            before >> 20,
            live >> 20
        );

        let evicted = Instant::now();
        while devices.active() > 0 && evicted.elapsed() < IDLE_TIMEOUT * 4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "{} actors left {:.1?} after going idle (timeout {IDLE_TIMEOUT:?}); RSS now {} MiB",
            devices.active(),
            evicted.elapsed(),
            rss_bytes() >> 20
        );
        store.close().await.unwrap();
        devices.stop();
    });
}

/// Starts the device's actor with a batch of no records: it claims the device and
/// commits its progress.
async fn start_actor(devices: &DeviceRegistry, device_id: &str) {
    let upload = Upload {
        org_id: "acme".into(),
        batch_id: "b".into(),
        received_at: 0,
        reported_pending: None,
        reported_health: None,
        records: Vec::new(),
        settings: Default::default(),
        live: false,
    };
    devices.ingest(device_id, upload).unwrap().await.unwrap().unwrap();
}

/// Resident set size of this process, from /proc.
fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: i64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
