//! otg's gateway: an actix-web server in front of the device actors and the store.
//!
//! `run` starts everything, serves until SIGTERM or SIGINT, then shuts down in order:
//! stop accepting, let in-flight batches finish and be acked, flush the store, exit.

pub mod admission;
pub mod allocator;
pub mod auth;
pub mod batch_timing;
pub mod body;
pub mod clock;
pub mod config;
pub mod console;
pub mod error;
pub mod failed_batches;
pub mod membership;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod views;

use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use config::Config;
use config::StoreKind;
use otg_actors::metrics::{DeviceMetrics, StoreMetrics};
use otg_actors::store::{migrate_scylla, EmbeddedStore, EmbeddedStoreOptions, ScyllaStore, Store, StoreError};
use otg_actors::RetryPolicy;
use otg_actors::{DeviceActorOptions, DeviceRegistry};
use state::AppState;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Runs the gateway until a shutdown signal; must run inside an actix `System`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics_registry = prometheus::Registry::new();
    let store = open_store(&config, &metrics_registry).await?;
    let devices = DeviceRegistry::start(
        store.clone(),
        DeviceActorOptions {
            idle_timeout: Duration::from_millis(config.device_idle_timeout_ms),
            conflict_idle_timeout: Duration::from_millis(config.conflict_idle_timeout_ms),
            conflict_cached_employees: config.conflict_cached_employees,
            mailbox_capacity: config.device_mailbox_capacity,
            arbiters: config.device_arbiters(),
            detect_conflicts: config.conflict_detection,
            conflict_backlog_placements: config.conflict_backlog_placements(),
            store_retry: RetryPolicy {
                base: Duration::from_millis(config.store_retry_base_ms),
                max: Duration::from_millis(config.store_retry_max_ms),
                deadline: Duration::from_millis(config.store_retry_deadline_ms),
            },
        },
        DeviceMetrics::register(&metrics_registry)?,
    );
    let admin_token = admin_token(&config)?;
    let metrics = metrics::GatewayMetrics::register(&metrics_registry)?;
    let failed_batches = failed_batches::FailedBatches::start(store.clone(), &metrics_registry)?;
    let admission = admission::Admission::start(&config, &metrics_registry)?;
    let membership = membership::Membership::join(
        store.clone(),
        Duration::from_millis(config.membership_heartbeat_ms),
        Duration::from_secs(config.membership_ttl_s),
    )
    .await
    .context("joining the gateways")?;
    let starting = membership::LiveSetChange { someone_left: true };
    wake_waiting_devices(&devices, &membership, starting).await.context("finding records waiting behind a gap")?;
    admission.share_org_rates(membership.live_count());
    {
        // A gateway joined, left or died: the waiting devices it owned now have owners
        // among the others, who wake them, and each org's rate has a new share.
        let (devices, admission) = (devices.clone(), admission.clone());
        membership.clone().keep_beating(move |membership, change| {
            admission.share_org_rates(membership.live_count());
            let devices = devices.clone();
            actix_web::rt::spawn(async move {
                if let Err(error) = wake_waiting_devices(&devices, &membership, change).await {
                    tracing::warn!(%error, "waking the waiting devices this gateway now owns failed");
                }
            });
        });
    }
    let listener = listen(config.listen_addr).with_context(|| format!("binding {}", config.listen_addr))?;
    let address = listener.local_addr()?;
    let (workers, shutdown_timeout) = (config.http_workers(), config.shutdown_timeout_s);
    let slow_batches = batch_timing::SlowBatchLog::new(config.slow_batch_log_ms);
    let state = web::Data::new(AppState {
        slow_batches,
        config,
        admin_token,
        store: store.clone(),
        devices: devices.clone(),
        metrics,
        metrics_registry,
        failed_batches,
        admission,
        draining: AtomicBool::new(false),
        store_corruption: Default::default(),
    });

    let server = {
        let state = state.clone();
        HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(state.store_corruption.clone())
                .wrap(actix_web::middleware::from_fn(error::watch_for_store_corruption))
                .configure(routes::configure)
        })
        .workers(workers)
        .disable_signals()
        .tcp_nodelay(true)
        .shutdown_timeout(shutdown_timeout)
        .listen(listener)?
        .run()
    };
    // Before the line below: a SIGTERM right after it must drain, not kill the process.
    let (mut terminate, mut interrupt) = (
        signal(SignalKind::terminate()).context("SIGTERM handler")?,
        signal(SignalKind::interrupt()).context("SIGINT handler")?,
    );
    // Tests and scripts read this line to find the port.
    println!("otg-gateway listening on http://{address}");
    tracing::info!(%address, "listening");

    let handle = server.handle();
    let (after_stop, leaving) = (state.clone(), membership.clone());
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: draining"),
            _ = interrupt.recv() => tracing::info!("SIGINT: draining"),
        }
        // Out of the live gateways first, so the others own what this one did at once.
        leaving.leave().await;
        state.start_draining();
        handle.stop(true).await;
    });
    server.await?;

    after_stop.failed_batches.close().await;
    store.close().await.context("flushing the store")?;
    devices.stop();
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Wakes the devices whose records wait behind a gap and that this gateway owns, so
/// the gap timeout evaluates them even if they never send again; each such device is
/// woken by one gateway, not by all of them.
async fn wake_waiting_devices(
    devices: &DeviceRegistry,
    membership: &membership::Membership,
    change: membership::LiveSetChange,
) -> anyhow::Result<()> {
    let woken = devices.resume_waiting(&membership.buckets_to_wake(change)).await?;
    if woken > 0 {
        tracing::info!(devices = woken, "records wait behind a gap; they are evaluated at their gap timeout");
    }
    Ok(())
}

/// How long a gateway starting on a cluster that does not answer (a node restarting, a
/// request timing out) keeps trying before it gives up: it is not ready meanwhile, and
/// exiting would only have its supervisor start it again.
const STORE_OPEN_DEADLINE: Duration = Duration::from_secs(60);
const STORE_OPEN_PAUSE: Duration = Duration::from_secs(2);

/// The configured admin token, or one kept in the data dir: made and printed once.
/// The store the configuration names, opened.
async fn open_store(config: &Config, metrics_registry: &prometheus::Registry) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config.store {
        StoreKind::Embedded => {
            let options = EmbeddedStoreOptions {
                commit_queue_capacity: config.commit_queue_capacity,
                max_group_commits: config.max_group_commits,
                max_group_records: config.max_group_records,
                live_log_max_records: config.live_log_max_records,
                live_window_ms: config.live_window_s as i64 * 1000,
                cache_bytes: config.store_cache_mib * 1024 * 1024,
                memtable_bytes: config.store_memtable_mib * 1024 * 1024,
                journal_bytes: config.store_journal_mib * 1024 * 1024,
                write_buffer_bytes: config.store_write_buffer_mib * 1024 * 1024,
                background_threads: (config.store_background_threads > 0).then_some(config.store_background_threads),
                ..EmbeddedStoreOptions::new(config.data_dir.join("store"))
            };
            Arc::new(
                EmbeddedStore::open(options, StoreMetrics::register(metrics_registry)?)
                    .with_context(|| format!("opening the embedded store in {}", config.data_dir.display()))?,
            )
        }
        StoreKind::Scylla => {
            let options = config.scylla_options()?;
            let started = std::time::Instant::now();
            let opened = loop {
                match ScyllaStore::open(&options).await {
                    Err(StoreError::Unavailable(error)) if started.elapsed() < STORE_OPEN_DEADLINE => {
                        tracing::warn!(%error, "the cluster does not answer yet; trying again");
                        tokio::time::sleep(STORE_OPEN_PAUSE).await;
                    }
                    opened => break opened,
                }
            };
            Arc::new(opened.with_context(|| format!("opening the ScyllaDB store (nodes {})", config.scylla_nodes))?)
        }
    })
}

/// `otg-gateway migrate`: creates the keyspace if absent and applies every schema
/// version it lacks; safe to run again.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.store == StoreKind::Scylla,
        "migrate is for store = \"scylla\"; the embedded store needs none"
    );
    let options = config.scylla_options()?;
    let applied = migrate_scylla(&options, &config.scylla_replication()?)
        .await
        .with_context(|| format!("migrating keyspace {} on {}", options.keyspace, config.scylla_nodes))?;
    match applied.as_slice() {
        [] => println!("keyspace {}: schema up to date", options.keyspace),
        versions => println!("keyspace {}: applied schema versions {versions:?}", options.keyspace),
    }
    Ok(())
}

fn admin_token(config: &Config) -> anyhow::Result<String> {
    if let Some(token) = &config.admin_token {
        return Ok(token.clone());
    }
    let path = config.data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        println!("otg-gateway admin token: read from {}", path.display());
        return Ok(token.trim().to_owned());
    }
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    println!("otg-gateway admin token (made now, kept in {}): {token}", path.display());
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// A listening socket that may take over its address at once after a crash, while
/// the dead process's connections still linger in TIME_WAIT (`SO_REUSEADDR`).
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
