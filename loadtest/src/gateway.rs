//! The gateways the load tester started: each one's process, data dir and memory, and
//! a `kill -9` and restart on the same address for the `crash` scenario. Several share
//! one ScyllaDB keyspace, as a deployment's gateways share one cluster.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct LocalGateway {
    binary: PathBuf,
    data_dir: tempfile::TempDir,
    settings: Vec<(String, String)>,
    child: Child,
    pub base_url: String,
    pub admin_token: String,
}

impl LocalGateway {
    /// Starts `count` gateways of `binary`, each on a free port and a fresh data dir,
    /// with extra `OTG_*` settings and one admin token. More than one need a store they
    /// can share: ScyllaDB.
    pub fn start_fleet(binary: &Path, settings: Vec<(String, String)>, count: usize) -> anyhow::Result<Vec<Self>> {
        if !binary.exists() {
            bail!(
                "no gateway binary at {}: build it first (cargo build --release --bins) or pass --gateway-bin",
                binary.display()
            );
        }
        if count > 1 && !on_cql(&settings) {
            bail!(
                "{count} gateways need one store to share: add --gateway-env OTG_STORE=scylla (and OTG_SCYLLA_NODES)"
            );
        }
        let admin_token = format!("loadtest-{}", uuid::Uuid::new_v4());
        let settings = prepare_cql_keyspace(binary, settings)?;
        (0..count)
            .map(|_| {
                let data_dir = tempfile::tempdir()?;
                let (child, base_url) = spawn(binary, data_dir.path(), "127.0.0.1:0", &admin_token, &settings)?;
                let (binary, settings, admin_token) = (binary.to_owned(), settings.clone(), admin_token.clone());
                Ok(LocalGateway { binary, data_dir, settings, child, base_url, admin_token })
            })
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, then a fresh process on the same data dir and address.
    pub fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        let address = self.base_url.trim_start_matches("http://").to_owned();
        let (child, _) = spawn(&self.binary, self.data_dir.path(), &address, &self.admin_token, &self.settings)?;
        self.child = child;
        Ok(())
    }

    /// Resident memory now, bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    }
}

impl Drop for LocalGateway {
    fn drop(&mut self) {
        // SIGTERM first: the gateway drains and exits cleanly.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// On the ScyllaDB store (`OTG_STORE=scylla`), a keyspace of its own for this run unless
/// the settings name one (a fleet's device ids would collide with an earlier run's),
/// made ready with `otg-gateway migrate`.
fn prepare_cql_keyspace(binary: &Path, mut settings: Vec<(String, String)>) -> anyhow::Result<Vec<(String, String)>> {
    if !on_cql(&settings) {
        return Ok(settings);
    }
    if !settings.iter().any(|(name, _)| name == "OTG_SCYLLA_KEYSPACE") {
        let keyspace = format!("otg_loadtest_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        settings.push(("OTG_SCYLLA_KEYSPACE".into(), keyspace));
    }
    let mut command = Command::new(binary);
    command.arg("migrate").env("OTG_LOG", "warn").env("OTG_ADMIN_TOKEN", "loadtest-migrate-token");
    for (name, value) in &settings {
        command.env(name, value);
    }
    let output = command.output().with_context(|| format!("running {} migrate", binary.display()))?;
    if !output.status.success() {
        bail!("{} migrate failed: {}", binary.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(settings)
}

fn on_cql(settings: &[(String, String)]) -> bool {
    settings.iter().any(|(name, value)| name == "OTG_STORE" && value == "scylla")
}

fn spawn(
    binary: &Path,
    data_dir: &Path,
    listen: &str,
    token: &str,
    settings: &[(String, String)],
) -> anyhow::Result<(Child, String)> {
    let mut command = Command::new(binary);
    command
        .env("OTG_LISTEN_ADDR", listen)
        .env("OTG_DATA_DIR", data_dir)
        .env("OTG_ADMIN_TOKEN", token)
        .env("OTG_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, value) in settings {
        command.env(name, value);
    }
    let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("gateway stdout")?).lines();
    let base_url = loop {
        let line = lines.next().context("the gateway exited before it listened")??;
        if let Some(url) = line.strip_prefix("otg-gateway listening on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok((child, base_url))
}
