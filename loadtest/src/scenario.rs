//! The scenarios and what they measure; `run` sets up the gateway and the fleet, runs
//! one, verifies, and returns the report.

use crate::admin::Admin;
use crate::fleet::{busy_kiosk, live_kiosk, now_ms, AckCount, Device};
use crate::gateway::LocalGateway;
use crate::report::{Ownership, Report, Storm, Verification};
use crate::routing::{Gateways, Routing};
use crate::stats::Stats;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const HOUR_MS: i64 = 3_600_000;
/// Backlog records end this long before the outage ends: older than the live window.
const BACKLOG_ENDS_BEFORE_MS: i64 = 15 * 60_000;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "otg-loadtest",
    version,
    about = "Simulates a fleet of devices against an otg gateway and proves nothing was lost or stored twice."
)]
pub struct Options {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// A gateway to load; repeat it for a fleet of gateways on one store. Unset,
    /// --gateways are started (see --gateway-bin).
    #[arg(long = "url", global = true)]
    pub urls: Vec<String>,
    /// The admin token of the gateways at --url.
    #[arg(long, global = true, env = "OTG_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// How many gateways to start when no --url is given, each on a fresh data dir;
    /// more than one share a ScyllaDB keyspace (--gateway-env OTG_STORE=scylla).
    #[arg(long, global = true, default_value_t = 1)]
    pub gateways: usize,
    /// How devices reach the gateways: `hash` keeps each device on one, as an ingress
    /// hashing X-Device-Id would; `random` sends each request to any (affinity broken).
    #[arg(long, global = true, value_enum, default_value_t = Routing::Hash)]
    pub routing: Routing,
    /// The gateway binary to start; by default `otg-gateway` beside this binary.
    #[arg(long, global = true)]
    pub gateway_bin: Option<PathBuf>,
    /// An `OTG_*` setting for the started gateways, as NAME=VALUE; repeatable.
    #[arg(long = "gateway-env", global = true, value_parser = setting)]
    pub gateway_env: Vec<(String, String)>,
    /// Where report.json, report.md and report.svg are written.
    #[arg(long, global = true, default_value = "loadtest-report")]
    pub out: PathBuf,
    /// Most uploads the fleet has in flight at once (its connections). 256 overflow a
    /// 2-core gateway's admission budget several times over; more mostly spend the
    /// load tester's own CPU on refused uploads.
    #[arg(long, global = true, default_value_t = 256)]
    pub connections: usize,
    /// No progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// A second whose live p99 is over this many ms is named in the report, with the
    /// stage its live batches spent most of their time in.
    #[arg(long, global = true, default_value_t = 50.0)]
    pub slow_ms: f64,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Kiosks upload full batches back to back: the gateway's steady-state throughput.
    Steady(Steady),
    /// Every device offline, recording; then all reconnect within a window with their
    /// backlog while live check-ins go on throughout.
    Outage(Outage),
    /// A fleet syncing at realistic rates for a long time: latency and memory over time.
    Soak(Soak),
    /// The outage, with a started gateway (the first) killed (-9) and restarted
    /// mid-storm, and a database node too if --db-fault says how.
    Crash(Crash),
}

#[derive(Debug, Clone, Args)]
pub struct Steady {
    #[arg(long, default_value_t = 64)]
    pub devices: usize,
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    #[arg(long, default_value_t = 100)]
    pub records_per_batch: usize,
}

#[derive(Debug, Clone, Args)]
pub struct Outage {
    /// Devices that go offline and reconnect.
    #[arg(long, default_value_t = 2_000)]
    pub devices: usize,
    #[arg(long, default_value_t = 300)]
    pub records_per_device: usize,
    /// How long the devices were offline: their records are spread over it (the
    /// default org keeps records for 7 days).
    #[arg(long, default_value_t = 48)]
    pub offline_hours: u64,
    /// How long the outage lasts in this run; live check-ins go on meanwhile.
    #[arg(long, default_value_t = 5)]
    pub outage_seconds: u64,
    /// Every device reconnects at a random moment within this many seconds.
    #[arg(long, default_value_t = 30)]
    pub reconnect_window: u64,
    /// Kiosks online throughout, each checking someone in or out every --live-interval-ms.
    #[arg(long, default_value_t = 20)]
    pub live_devices: usize,
    #[arg(long, default_value_t = 1_000)]
    pub live_interval_ms: u64,
    /// Seconds of steady-state load measured first, to compare the drain with (0: none).
    #[arg(long, default_value_t = 15)]
    pub steady_seconds: u64,
    #[arg(long, default_value_t = 64)]
    pub steady_devices: usize,
}

#[derive(Debug, Clone, Args)]
pub struct Crash {
    #[command(flatten)]
    pub outage: Outage,
    /// Seconds into the reconnect storm the gateway is killed and restarted.
    #[arg(long, default_value_t = 5)]
    pub kill_after: u64,
    /// A shell command run at the same moment to kill a database node, e.g.
    /// `scripts/cassandra kill 3` or `kubectl delete pod scylla-2 --force`.
    #[arg(long)]
    pub db_fault: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct Soak {
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
    /// Each device records and syncs one event this often (at a random phase).
    #[arg(long, default_value_t = 10)]
    pub event_interval_s: u64,
}

fn setting(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok((name.to_owned(), value.to_owned()))
}

/// What every phase shares.
struct Run {
    /// The admin API of the first gateway: they all share one store.
    admin: Admin,
    /// Every gateway's, for its metrics.
    admins: Vec<Admin>,
    urls: Vec<String>,
    routing: Routing,
    /// The fleet's way to the gateways (the live kiosks have their own connections).
    gateways: Gateways,
    org_id: String,
    stats: Arc<Stats>,
    connections: Arc<Semaphore>,
    /// The gateways this run started, if it started them.
    started: Vec<Arc<Mutex<LocalGateway>>>,
    quiet: bool,
    slow_ms: f64,
}

/// Runs the scenario `options` names and returns its report (also written to `--out`).
pub async fn run(options: Options) -> anyhow::Result<Report> {
    raise_open_file_limit();
    let started = if options.urls.is_empty() {
        let binary = match &options.gateway_bin {
            Some(binary) => binary.clone(),
            None => std::env::current_exe()?.with_file_name("otg-gateway"),
        };
        LocalGateway::start_fleet(&binary, options.gateway_env.clone(), options.gateways.max(1))?
    } else {
        Vec::new()
    };
    let (urls, token) = match started.first() {
        Some(first) => (started.iter().map(|gateway| gateway.base_url.clone()).collect(), first.admin_token.clone()),
        None => (
            options.urls.clone(),
            options.admin_token.clone().context("--admin-token (or OTG_ADMIN_TOKEN) is needed with --url")?,
        ),
    };
    let admins: Vec<Admin> = urls.iter().map(|url| Admin::new(url, &token)).collect();
    let run = Run {
        admin: admins[0].clone(),
        admins,
        gateways: Gateways::new(&urls, options.routing, Duration::from_secs(30))?,
        urls,
        routing: options.routing,
        org_id: format!("loadtest-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        stats: Arc::new(Stats::new()),
        connections: Arc::new(Semaphore::new(options.connections.max(1))),
        started: started.into_iter().map(|gateway| Arc::new(Mutex::new(gateway))).collect(),
        quiet: options.quiet,
        slow_ms: options.slow_ms,
    };
    let sampler = tokio::spawn(sample_memory(run.admins.clone(), run.started.clone(), run.stats.clone()));
    let mut report = match &options.scenario {
        Scenario::Steady(steady) => {
            let (devices, records_per_s) = run.steady(steady).await?;
            run.report("steady", devices, Some(records_per_s), None).await?
        }
        Scenario::Outage(outage) => run.outage(outage, None).await?,
        Scenario::Crash(crash) => {
            anyhow::ensure!(!run.started.is_empty(), "the crash scenario kills a gateway it started: leave out --url");
            run.outage(&crash.outage, Some(crash)).await?
        }
        Scenario::Soak(soak) => run.soak(soak).await?,
    };
    sampler.abort();
    report.command = std::env::args().collect::<Vec<_>>().join(" ");
    report.write(&options.out)?;
    Ok(report)
}

impl Run {
    async fn enrol(&self, prefix: &str, count: usize) -> anyhow::Result<Vec<Device>> {
        self.enrol_over(prefix, count, &self.gateways).await
    }

    async fn enrol_over(&self, prefix: &str, count: usize, gateways: &Gateways) -> anyhow::Result<Vec<Device>> {
        let mut enrolments = JoinSet::new();
        let limit = Arc::new(Semaphore::new(64));
        for n in 0..count {
            let (admin, org_id, limit) = (self.admin.clone(), self.org_id.clone(), limit.clone());
            let id = format!("{}-{prefix}-{n}", self.org_id);
            let route = gateways.route(&id);
            enrolments.spawn(async move {
                let _slot = limit.acquire().await?;
                let secret = admin.enrol(&id, &org_id).await?;
                anyhow::Ok(Device::new(id, secret, route))
            });
        }
        let mut devices = Vec::with_capacity(count);
        while let Some(enrolled) = enrolments.join_next().await {
            devices.push(enrolled??);
        }
        Ok(devices)
    }

    /// Busy kiosks for `seconds`: the records/s acked.
    async fn steady(&self, steady: &Steady) -> anyhow::Result<(Vec<Device>, f64)> {
        let devices = self.enrol("steady", steady.devices).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let started = self.stats.elapsed();
        let progress = self.progress(None, "steady");
        let mut kiosks = JoinSet::new();
        for device in devices {
            kiosks.spawn(busy_kiosk(
                device,
                steady.records_per_batch,
                self.stats.clone(),
                self.connections.clone(),
                stop.clone(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(steady.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let ended = self.stats.elapsed();
        let devices = join_all(kiosks).await?;
        progress.finish_and_clear();
        // Whole seconds inside the phase, so partial ones at its edges do not count.
        let (from, to) = (started + Duration::from_secs(1), ended);
        let seconds = to.as_secs().saturating_sub(from.as_secs()).max(1);
        Ok((devices, self.stats.acked_between(from, to) as f64 / seconds as f64))
    }

    async fn outage(&self, outage: &Outage, crash: Option<&Crash>) -> anyhow::Result<Report> {
        let (mut devices, steady_rate) = if outage.steady_seconds > 0 {
            let steady =
                Steady { devices: outage.steady_devices, seconds: outage.steady_seconds, records_per_batch: 100 };
            let (devices, rate) = self.steady(&steady).await?;
            (devices, Some(rate))
        } else {
            (Vec::new(), None)
        };
        let mut fleet = self.enrol("fleet", outage.devices).await?;
        // Live kiosks have connections and a thread of their own, as they would in the
        // field: their latency is not the fleet's queueing in this process.
        let live = self
            .enrol_over("live", outage.live_devices, &Gateways::new(&self.urls, self.routing, Duration::from_secs(30))?)
            .await?;

        // The outage: live kiosks go on; the fleet records its backlog offline.
        let stop_live = Arc::new(AtomicBool::new(false));
        let live_kiosks = {
            let (stats, stop, interval) =
                (self.stats.clone(), stop_live.clone(), Duration::from_millis(outage.live_interval_ms));
            std::thread::spawn(move || -> anyhow::Result<Vec<Device>> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async move {
                    let connections = Arc::new(Semaphore::new(live.len().max(1)));
                    let mut kiosks = JoinSet::new();
                    for device in live {
                        kiosks.spawn(live_kiosk(device, interval, stats.clone(), connections.clone(), stop.clone()));
                    }
                    join_all(kiosks).await
                })
            })
        };
        let now = now_ms();
        let offline_from = now - (outage.offline_hours as i64 * HOUR_MS).max(2 * BACKLOG_ENDS_BEFORE_MS);
        for device in &mut fleet {
            device.record_backlog(outage.records_per_device, 0, offline_from, now - BACKLOG_ENDS_BEFORE_MS);
        }
        tokio::time::sleep(Duration::from_secs(outage.outage_seconds)).await;

        // The storm: everyone reconnects within the window.
        let backlog = (outage.devices * outage.records_per_device) as u64;
        let progress = self.progress(Some(backlog), "storm");
        let reconnected = self.stats.elapsed();
        let window = Duration::from_secs(outage.reconnect_window);
        let mut storm = JoinSet::new();
        for mut device in fleet {
            let (stats, connections) = (self.stats.clone(), self.connections.clone());
            let delay = window.mul_f64(rand::random());
            storm.spawn(async move {
                tokio::time::sleep(delay).await;
                device.drain(&stats, &connections, 20).await;
                device
            });
        }
        let faults = crash.map(|crash| tokio::spawn(inject_faults(crash.clone(), self.started[0].clone())));
        let fleet = join_all(storm).await?;
        let drain = self.stats.elapsed() - reconnected;
        if let Some(faults) = faults {
            faults.await??;
        }
        stop_live.store(true, Ordering::Relaxed);
        devices.extend(
            tokio::task::spawn_blocking(move || live_kiosks.join())
                .await?
                .map_err(|_| anyhow::anyhow!("a live kiosk panicked"))??,
        );
        progress.finish_and_clear();

        let storm = Storm::measure(&self.stats, backlog, reconnected, drain, steady_rate);
        devices.extend(fleet);
        let name = if crash.is_some() { "crash" } else { "outage" };
        self.report(name, devices, steady_rate, Some(storm)).await
    }

    async fn soak(&self, soak: &Soak) -> anyhow::Result<Report> {
        let devices = self.enrol("soak", soak.devices).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let interval = Duration::from_secs(soak.event_interval_s.max(1));
        let progress = self.progress(None, "soak");
        let mut fleet = JoinSet::new();
        for device in devices {
            let (stats, connections, stop) = (self.stats.clone(), self.connections.clone(), stop.clone());
            fleet.spawn(async move {
                tokio::time::sleep(interval.mul_f64(rand::random())).await;
                live_kiosk(device, interval, stats, connections, stop).await
            });
        }
        tokio::time::sleep(Duration::from_secs(soak.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let devices = join_all(fleet).await?;
        progress.finish_and_clear();
        self.report("soak", devices, None, None).await
    }

    /// Checks every record against the gateway and puts the report together.
    async fn report(
        &self,
        scenario: &str,
        devices: Vec<Device>,
        steady_rate: Option<f64>,
        storm: Option<Storm>,
    ) -> anyhow::Result<Report> {
        let mut acks = AckCount::default();
        let mut failures = 0;
        for device in &devices {
            acks += device.ack_count();
            failures += device.failures;
        }
        let next_seqs: std::collections::HashMap<String, u64> =
            self.admin.next_seqs(&self.org_id).await?.into_iter().collect();
        let next_seq_mismatches =
            devices.iter().filter(|device| next_seqs.get(&device.id) != Some(&(device.generated + 1))).count() as u64;
        let records = self.admin.records_by_status(&self.org_id).await?;
        let count = |status: &str| records[status].as_u64().unwrap_or(0);
        let verification = Verification::new(
            acks,
            next_seq_mismatches,
            count("accepted") + count("conflict"),
            count("duplicate"),
            failures,
        );
        let observed = self.stats.finish();
        let (devices, slow_ms) = (devices.len(), self.slow_ms);
        let mut report =
            Report::new(scenario, &self.org_id, devices, steady_rate, storm, observed, slow_ms, verification);
        report.gateways = self.urls.len();
        report.routing = self.routing;
        report.ownership = Ownership::sum(&self.admins).await;
        Ok(report)
    }

    fn progress(&self, records: Option<u64>, phase: &'static str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = match records {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} backlog records ({per_sec}) {msg}",
                )
                .expect("a valid template"),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{prefix} [{elapsed_precise}] {spinner} {msg}").expect("a valid template"),
            ),
        };
        bar.set_prefix(phase);
        let (stats, shown, started) = (self.stats.clone(), bar.clone(), self.stats.elapsed());
        tokio::spawn(async move {
            while !shown.is_finished() {
                let (backlog, live, refused_429, refused_503) = stats.totals_since(started);
                shown.set_position(backlog);
                shown.set_message(format!("live {live}, 429 {refused_429}, 503 {refused_503}"));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        bar
    }
}

async fn join_all(mut tasks: JoinSet<Device>) -> anyhow::Result<Vec<Device>> {
    let mut devices = Vec::with_capacity(tasks.len());
    while let Some(device) = tasks.join_next().await {
        devices.push(device?);
    }
    Ok(devices)
}

/// `kill -9` of the first started gateway `crash.kill_after` into the storm, with the
/// database fault at the same moment, then the gateway's restart on its address.
async fn inject_faults(crash: Crash, gateway: Arc<Mutex<LocalGateway>>) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(crash.kill_after)).await;
    let database = match &crash.db_fault {
        Some(command) => Some(std::process::Command::new("sh").arg("-c").arg(command).spawn()?),
        None => None,
    };
    tokio::task::spawn_blocking(move || {
        gateway.lock().expect("gateway lock").crash_and_restart().context("restarting the gateway after the crash")?;
        if let Some(mut database) = database {
            let status = database.wait().context("running --db-fault")?;
            anyhow::ensure!(status.success(), "--db-fault exited with {status}");
        }
        Ok(())
    })
    .await?
}

/// The largest gateway's memory once a second: from /proc for started gateways, else
/// from their `/metrics`.
async fn sample_memory(admins: Vec<Admin>, started: Vec<Arc<Mutex<LocalGateway>>>, stats: Arc<Stats>) {
    loop {
        let rss = if started.is_empty() {
            let mut largest = None;
            for admin in &admins {
                largest =
                    largest.max(admin.metric("otg_process_resident_memory_bytes").await.map(|bytes| bytes as u64));
            }
            largest
        } else {
            started.iter().filter_map(|gateway| gateway.lock().expect("gateway lock").rss_bytes()).max()
        };
        if let Some(rss) = rss {
            stats.sample_rss(rss);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A fleet of thousands keeps thousands of sockets open.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
