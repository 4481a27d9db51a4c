//! The gateway's configuration: one typed struct with defaults, read from an optional
//! TOML file (`--config`) and overridden by `OTG_*` environment variables
//! (`OTG_LISTEN_ADDR`, `OTG_DATA_DIR`, `OTG_DEVICE_MAILBOX_CAPACITY`, ...).
//!
//! An unknown `OTG_*` variable stops start-up, except one named like the variables
//! Kubernetes gives every pod for each Service of its namespace (`OTG_SERVICE_HOST`,
//! `OTG_PORT_8080_TCP_ADDR`, ... for a Service named `otg`): those are no settings, and
//! refusing them would crash-loop every pod of such a namespace.

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use otg_actors::store::{Consistency, Replication, ScyllaStoreOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The prefix of the environment variables that set the gateway's settings.
const ENV_PREFIX: &str = "OTG_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (printed at start-up).
    pub listen_addr: SocketAddr,
    /// Bearer token of the admin API; generated and kept in `data_dir` when unset.
    pub admin_token: Option<String>,
    /// Where records are kept: `embedded` (files in `data_dir`, one gateway, no set-up)
    /// or `scylla` (a ScyllaDB cluster, or Apache Cassandra 5, shared by many gateways).
    pub store: StoreKind,
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    /// The cluster's contact points, `host:port`, comma-separated (`store = "scylla"`).
    pub scylla_nodes: String,
    /// The keyspace otg's tables live in.
    pub scylla_keyspace: String,
    /// How `otg-gateway migrate` replicates a keyspace it creates: `simple:3`
    /// (SimpleStrategy, factor 3) or `dc1:3,dc2:3` (NetworkTopologyStrategy).
    pub scylla_replication: String,
    /// Consistency of every read and write: `local_quorum` (default), `quorum`,
    /// `each_quorum` or `all`. A batch is acked only once its writes reached it.
    /// `one` and `local_one` are refused: an ack on one replica is lost with it.
    pub scylla_consistency: String,
    /// Send requests to this data centre's nodes only.
    pub scylla_local_datacenter: Option<String>,
    /// How long one CQL request may take before it fails (a 503 if no retry succeeds).
    pub scylla_request_timeout_ms: u64,
    /// Largest request body; larger uploads get 413.
    pub body_limit_bytes: usize,
    /// HTTP worker threads; 0 means one per core.
    pub http_workers: usize,
    /// Device actor threads; 0 means one per core.
    pub device_arbiters: usize,
    /// A device actor with no batch for this long stops and frees its memory.
    pub device_idle_timeout_ms: u64,
    /// Batches that may wait for one device; beyond it that device gets 429.
    pub device_mailbox_capacity: usize,
    /// Evaluate records for attendance conflicts; off, records are stored and acked only.
    pub conflict_detection: bool,
    /// Device commits that may wait for the store's committer.
    pub commit_queue_capacity: usize,
    /// Most device commits one group commit covers.
    pub max_group_commits: usize,
    /// Most device records one group commit covers.
    pub max_group_records: usize,
    /// A live batch whose commit holds at most this many records (its own, and those it
    /// releases from behind a gap) is acked from the embedded store's live log; a larger
    /// one (a device catching up, not a check-in) goes with the backlog through the
    /// committer. 0: never.
    pub live_log_max_records: usize,
    /// Block cache of the embedded store, MiB.
    pub store_cache_mib: u64,
    /// Largest memtable of the embedded store's seqs and timeline tables before it is
    /// flushed, MiB; the other tables' is at most 4 MiB.
    pub store_memtable_mib: u64,
    /// Most journal the embedded store keeps, MiB: flushes the tables that lag behind.
    pub store_journal_mib: u64,
    /// Most bytes all the embedded store's memtables hold, MiB: beyond it commits wait
    /// for flushes.
    pub store_write_buffer_mib: u64,
    /// fjall's threads that flush and compact the embedded store's tables; 0: as fjall
    /// chooses, one per core, at most four. One by default: with more, fjall's first
    /// thread hands every compaction request back to the queue until another thread
    /// takes it, a busy loop of a whole core while the others compact (fjall 3.1).
    /// With one, a flush waits for a running compaction (docs/benchmarks.md).
    pub store_background_threads: usize,
    /// An employee's cached timeline with no request for this long is dropped.
    pub conflict_idle_timeout_ms: u64,
    /// The most employees whose timelines are cached at once (least recently used go).
    pub conflict_cached_employees: usize,
    /// Backlog placements each conflict actor runs at once; 0: 1 on the embedded store
    /// (its reads take microseconds, and one at a time keeps a live check-in's wait
    /// behind backlog shortest), 32 on ScyllaDB (each placement waits for reads across
    /// the network).
    pub conflict_backlog_placements: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub shutdown_timeout_s: u64,
    /// How often this gateway writes its heartbeat into the store and reads which other
    /// gateways are alive.
    pub membership_heartbeat_ms: u64,
    /// A gateway whose heartbeat is this old is dead: the others wake the waiting
    /// devices it owned (devices themselves move at once, to whichever gateway they reach).
    pub membership_ttl_s: u64,
    /// A batch whose newest record is at most this old is `live`; the rest is `backlog`.
    pub live_window_s: u64,
    /// Records admitted and not yet answered, all devices together; beyond it, 503.
    pub max_in_flight_records: u64,
    /// Share of `max_in_flight_records` backlog batches may hold, in percent: the rest
    /// is kept for live batches.
    pub backlog_share_percent: u64,
    /// Request bytes being read or in work, all devices together; beyond it, 503.
    pub max_in_flight_bytes: u64,
    /// Of those, what the requests from one client address whose bodies are still
    /// arriving may hold; beyond it that address gets 503, and others go on.
    pub client_max_unread_bytes: u64,
    /// After `body_grace_ms`, a request body must keep arriving at least this fast, or
    /// its connection is closed (408) and what it reserved freed.
    pub body_min_bytes_per_s: u64,
    /// How long a request body may take to start arriving at `body_min_bytes_per_s`.
    pub body_grace_ms: u64,
    /// Backlog batches (by the device's priority hint) that may wait, bodies unread,
    /// for the backlog's share to have room; beyond it, 503 at once.
    pub backlog_queue_batches: usize,
    /// The longest a backlog batch waits in that queue before it is refused with 503.
    pub backlog_queue_wait_ms: u64,
    /// Batches a second one device may upload, sustained; beyond it, 429.
    pub device_batches_per_s: u32,
    /// Batches one device may upload at once above its rate.
    pub device_batch_burst: u32,
    /// Records a second one org may upload, sustained; beyond it, 429.
    pub org_records_per_s: u32,
    /// Records one org may upload at once above its rate.
    pub org_record_burst: u32,
    /// The store's drain rate, records/s, assumed for `Retry-After` until one is measured.
    pub drain_records_per_s: u64,
    /// The gateway's memory cap, MiB: above 90% of it, new batches get 503.
    pub memory_limit_mib: u64,
    /// A transient store failure is retried after a wait of up to this, doubling...
    pub store_retry_base_ms: u64,
    /// ...up to this...
    pub store_retry_max_ms: u64,
    /// ...until this long after the first attempt; then the batch gets 503.
    pub store_retry_deadline_ms: u64,
    /// An acked batch that took at least this long is logged (a warning) with its time
    /// by stage; 0: never.
    pub slow_batch_log_ms: u64,
    /// `tracing` filter, e.g. `info` or `otg_gateway=debug`.
    pub log: String,
    /// How log lines are written to stderr: `text` for people, `json` (one object a
    /// line) for a log collector.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            store: StoreKind::Embedded,
            data_dir: PathBuf::from("./data"),
            scylla_nodes: "127.0.0.1:9042".into(),
            scylla_keyspace: "otg".into(),
            scylla_replication: "simple:3".into(),
            scylla_consistency: "local_quorum".into(),
            scylla_local_datacenter: None,
            scylla_request_timeout_ms: 5_000,
            body_limit_bytes: 1024 * 1024,
            http_workers: 0,
            device_arbiters: 0,
            device_idle_timeout_ms: 300_000,
            device_mailbox_capacity: 4,
            conflict_detection: true,
            commit_queue_capacity: 4096,
            max_group_commits: 1024,
            max_group_records: 4_000,
            live_log_max_records: 64,
            store_cache_mib: 64,
            store_memtable_mib: 64,
            store_journal_mib: 64,
            store_write_buffer_mib: 256,
            store_background_threads: 1,
            conflict_idle_timeout_ms: 10_000,
            conflict_cached_employees: 10_000,
            conflict_backlog_placements: 0,
            shutdown_timeout_s: 30,
            membership_heartbeat_ms: 1_000,
            membership_ttl_s: 10,
            live_window_s: (otg_schema::signing::LIVE_WINDOW_MS / 1000) as u64,
            max_in_flight_records: 12_000,
            backlog_share_percent: 75,
            max_in_flight_bytes: 32 * 1024 * 1024,
            client_max_unread_bytes: 8 * 1024 * 1024,
            body_min_bytes_per_s: 4 * 1024,
            body_grace_ms: 10_000,
            backlog_queue_batches: 1024,
            backlog_queue_wait_ms: 10_000,
            device_batches_per_s: 50,
            device_batch_burst: 50,
            org_records_per_s: 1_000_000,
            org_record_burst: 1_000_000,
            drain_records_per_s: 100_000,
            memory_limit_mib: 1024,
            store_retry_base_ms: 20,
            store_retry_max_ms: 500,
            store_retry_deadline_ms: 2_000,
            slow_batch_log_ms: 250,
            log: "info,fjall=warn,lsm_tree=warn".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Which store the gateway runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Embedded,
    Scylla,
}

impl Config {
    /// Defaults, then the TOML file if given, then `OTG_*` variables; then validated.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let toml = match file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|error| anyhow::anyhow!("config file {}: {error}", file.display()))?,
            ),
            None => None,
        };
        Self::from_sources(toml.as_deref(), std::env::vars())
    }

    /// Defaults, then `toml` (a config file's text), then the `OTG_*` variables among
    /// `environment`; then validated. `load` with its sources handed in: what the
    /// config fuzz target drives.
    pub fn from_sources(
        toml: Option<&str>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(toml) = toml {
            figment = figment.merge(Toml::string(toml));
        }
        // As figment's `Env::prefixed` reads the process's: the prefix in any case, the
        // rest lower-cased, the value parsed as TOML would be (`42`, `true`, `"text"`).
        for (name, value) in environment {
            let Some(name) = name
                .get(ENV_PREFIX.len()..)
                .filter(|_| name.get(..ENV_PREFIX.len()).is_some_and(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX)))
            else {
                continue;
            };
            if name.is_empty() || is_ignored_service_link(name) {
                continue;
            }
            let value: figment::value::Value = value.parse().unwrap_or_else(|never| match never {});
            figment = figment.merge((name.to_ascii_lowercase(), value));
        }
        let config: Config = figment.extract().map_err(|error| anyhow::anyhow!("invalid configuration: {error}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let checks = [
            (self.body_limit_bytes >= 1024, "body_limit_bytes must be at least 1024"),
            (self.device_idle_timeout_ms >= 10, "device_idle_timeout_ms must be at least 10"),
            (self.conflict_idle_timeout_ms >= 10, "conflict_idle_timeout_ms must be at least 10"),
            (self.conflict_cached_employees >= 1, "conflict_cached_employees must be at least 1"),
            (self.store_memtable_mib >= 1, "store_memtable_mib must be at least 1"),
            (self.store_journal_mib >= 64, "store_journal_mib must be at least 64"),
            (self.store_write_buffer_mib >= 16, "store_write_buffer_mib must be at least 16"),
            (self.device_mailbox_capacity >= 1, "device_mailbox_capacity must be at least 1"),
            (self.commit_queue_capacity >= 1, "commit_queue_capacity must be at least 1"),
            (self.max_group_commits >= 1, "max_group_commits must be at least 1"),
            (self.max_group_records >= 1, "max_group_records must be at least 1"),
            (
                self.admin_token.as_ref().is_none_or(|token| token.len() >= 16),
                "admin_token must be at least 16 characters",
            ),
            (self.max_in_flight_records >= 500, "max_in_flight_records must hold at least one full batch (500)"),
            ((1..=100).contains(&self.backlog_share_percent), "backlog_share_percent must be 1 to 100"),
            (
                self.max_in_flight_bytes >= self.body_limit_bytes as u64,
                "max_in_flight_bytes must be at least body_limit_bytes",
            ),
            (
                self.client_max_unread_bytes >= self.body_limit_bytes as u64,
                "client_max_unread_bytes must be at least body_limit_bytes (one request's body)",
            ),
            (self.body_min_bytes_per_s >= 1, "body_min_bytes_per_s must be at least 1"),
            (self.body_grace_ms >= 100, "body_grace_ms must be at least 100"),
            (self.membership_heartbeat_ms >= 100, "membership_heartbeat_ms must be at least 100"),
            (
                self.membership_ttl_s * 1000 >= 2 * self.membership_heartbeat_ms,
                "membership_ttl_s must be at least two heartbeats (membership_heartbeat_ms)",
            ),
            (
                self.backlog_queue_wait_ms <= 60_000,
                "backlog_queue_wait_ms must be at most 60000 (clients give up on a silent request)",
            ),
            (
                self.device_batches_per_s >= 1 && self.device_batch_burst >= 1,
                "device_batches_per_s and device_batch_burst must be at least 1",
            ),
            (
                self.org_records_per_s >= 1 && self.org_record_burst >= 500,
                "org_records_per_s must be at least 1 and org_record_burst at least 500 (one full batch)",
            ),
            (self.drain_records_per_s >= 1, "drain_records_per_s must be at least 1"),
            (self.memory_limit_mib >= 64, "memory_limit_mib must be at least 64"),
            (
                otg_actors::store::valid_keyspace(&self.scylla_keyspace),
                "scylla_keyspace must be 1 to 48 letters, digits and underscores",
            ),
            (self.scylla_request_timeout_ms >= 100, "scylla_request_timeout_ms must be at least 100"),
            (
                self.store != StoreKind::Scylla || self.admin_token.is_some(),
                "admin_token must be set with store = \"scylla\": every gateway of the cluster needs the same one",
            ),
            (
                self.store_retry_base_ms <= self.store_retry_max_ms,
                "store_retry_base_ms must not exceed store_retry_max_ms",
            ),
        ];
        for (ok, message) in checks {
            anyhow::ensure!(ok, "invalid configuration: {message}");
        }
        Ok(())
    }

    /// How to reach the cluster, when `store = "scylla"`.
    pub fn scylla_options(&self) -> anyhow::Result<ScyllaStoreOptions> {
        let nodes: Vec<String> =
            self.scylla_nodes.split(',').map(str::trim).filter(|node| !node.is_empty()).map(String::from).collect();
        anyhow::ensure!(!nodes.is_empty(), "invalid configuration: scylla_nodes names no node");
        let consistency = match self.scylla_consistency.as_str() {
            "local_quorum" => Consistency::LocalQuorum,
            "quorum" => Consistency::Quorum,
            "each_quorum" => Consistency::EachQuorum,
            "all" => Consistency::All,
            weak @ ("local_one" | "one") => anyhow::bail!(
                "invalid configuration: scylla_consistency {weak:?} is refused: an ack would rest on one replica, which \
                 a node's crash loses, and a read at it may miss what another gateway acked; use \"local_quorum\" \
                 (the default) or \"quorum\""
            ),
            other => anyhow::bail!(
                "invalid configuration: scylla_consistency {other:?} is not local_quorum, quorum, each_quorum or all"
            ),
        };
        Ok(ScyllaStoreOptions {
            consistency,
            local_datacenter: self.scylla_local_datacenter.clone(),
            request_timeout: std::time::Duration::from_millis(self.scylla_request_timeout_ms),
            ..ScyllaStoreOptions::new(nodes, self.scylla_keyspace.clone())
        })
    }

    /// The replication `otg-gateway migrate` gives a keyspace it creates.
    pub fn scylla_replication(&self) -> anyhow::Result<Replication> {
        let invalid = || {
            anyhow::anyhow!(
                "invalid configuration: scylla_replication {:?} is not simple:N or dc1:N,dc2:N",
                self.scylla_replication
            )
        };
        let factor = |text: &str| text.trim().parse::<u32>().ok().filter(|factor| *factor >= 1).ok_or_else(invalid);
        if let Some(factor_text) = self.scylla_replication.strip_prefix("simple:") {
            return Ok(Replication::Simple(factor(factor_text)?));
        }
        let centres = self
            .scylla_replication
            .split(',')
            .map(|centre| {
                let (name, factor_text) = centre.split_once(':').ok_or_else(invalid)?;
                let name = name.trim();
                let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
                anyhow::ensure!(valid, invalid());
                Ok((name.to_string(), factor(factor_text)?))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Replication::PerDataCentre(centres))
    }

    pub fn http_workers(&self) -> usize {
        or_cores(self.http_workers)
    }

    pub fn conflict_backlog_placements(&self) -> usize {
        match (self.conflict_backlog_placements, self.store) {
            (0, StoreKind::Embedded) => 1,
            (0, StoreKind::Scylla) => 32,
            (configured, _) => configured,
        }
    }

    pub fn device_arbiters(&self) -> usize {
        or_cores(self.device_arbiters)
    }
}

/// The names of the `OTG_*` environment variables [`Config::load`] ignores as
/// Kubernetes service links, for one log line at start-up.
pub fn ignored_service_link_variables() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            name.get(..ENV_PREFIX.len()).is_some_and(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
                && is_ignored_service_link(&name[ENV_PREFIX.len()..])
        })
        .collect()
}

/// Every setting's name, so that a real setting is never mistaken for a service link
/// (`OTG_` followed by a setting's name always sets it).
static SETTING_NAMES: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
    let serde_json::Value::Object(settings) = serde_json::to_value(Config::default()).expect("the config serializes")
    else {
        unreachable!("the config is a struct")
    };
    settings.into_iter().map(|(name, _)| name).collect()
});

/// Whether `OTG_<key>` is no setting but a Kubernetes service link.
fn is_ignored_service_link(key: &str) -> bool {
    !SETTING_NAMES.contains(&key.to_ascii_lowercase()) && is_service_link(&format!("{ENV_PREFIX}{key}"))
}

/// Whether `name` is one of the variables Kubernetes gives a pod for each Service of
/// its namespace (unless `enableServiceLinks` is off): `<SVC>_SERVICE_HOST`,
/// `<SVC>_SERVICE_PORT`, `<SVC>_SERVICE_PORT_<PORT NAME>`, `<SVC>_PORT`,
/// `<SVC>_PORT_<N>_<PROTO>` and that followed by `_ADDR`, `_PORT` or `_PROTO`, where
/// SVC is the Service's name upper-cased with `-` as `_`.
fn is_service_link(name: &str) -> bool {
    let words: Vec<&str> = name.split('_').collect();
    let is_word = |word: &&str| !word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let service_name_starts_with_a_letter = name.starts_with(|c: char| c.is_ascii_uppercase());
    service_name_starts_with_a_letter
        && words.iter().all(is_word)
        && (1..words.len()).any(|service_end| is_service_link_suffix(&words[service_end..]))
}

/// The part of a service link after the Service's name, split at `_`.
fn is_service_link_suffix(words: &[&str]) -> bool {
    let port_number = |word: &str| word.parse::<u16>().is_ok_and(|port| port > 0);
    let protocol = |word: &str| matches!(word, "TCP" | "UDP" | "SCTP");
    match words {
        ["SERVICE", "HOST"] | ["SERVICE", "PORT", ..] | ["PORT"] => true,
        ["PORT", number, proto] | ["PORT", number, proto, "ADDR" | "PORT" | "PROTO"] => {
            port_number(number) && protocol(proto)
        }
        _ => false,
    }
}

fn or_cores(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(2, usize::from)
    }
}

// `figment::Jail` fixes its closures' error type to `figment::Error`, which is large.
#[allow(clippy::result_large_err)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_override_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("otg.toml", "data_dir = \"/var/lib/otg\"\nbody_limit_bytes = 2048\n")?;
            jail.set_env("OTG_BODY_LIMIT_BYTES", "4096");
            jail.set_env("OTG_SCYLLA_NODES", "10.0.0.1:9042, 10.0.0.2:9042");
            let config = Config::load(Some(Path::new("otg.toml"))).unwrap();
            assert_eq!(config.scylla_options().unwrap().nodes, vec!["10.0.0.1:9042", "10.0.0.2:9042"]);
            assert_eq!(config.data_dir, PathBuf::from("/var/lib/otg"));
            assert_eq!(config.body_limit_bytes, 4096);
            assert_eq!(config.listen_addr, Config::default().listen_addr);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_name() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "listen_adr = \"0.0.0.0:80\"\n")?;
            let error = Config::load(Some(Path::new("typo.toml"))).unwrap_err().to_string();
            assert!(error.contains("listen_adr"), "{error}");
            jail.set_env("OTG_DEVICE_MAILBOX_CAPACITY", "0");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("device_mailbox_capacity"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn kubernetes_service_link_names_are_recognised() {
        let table = [
            ("OTG_SERVICE_HOST", true),
            ("OTG_SERVICE_PORT", true),
            ("OTG_SERVICE_PORT_HTTP", true),
            ("OTG_SERVICE_PORT_HTTP_METRICS", true),
            ("OTG_PORT", true),
            ("OTG_PORT_8080_TCP", true),
            ("OTG_PORT_8080_TCP_ADDR", true),
            ("OTG_PORT_8080_TCP_PORT", true),
            ("OTG_PORT_8080_TCP_PROTO", true),
            ("OTG_PORT_53_UDP", true),
            ("OTG_PORT_9000_SCTP_ADDR", true),
            ("OTG_SCYLLA_CLIENT_SERVICE_HOST", true),
            ("OTG_GATEWAY_V2_PORT_443_TCP", true),
            ("OTG_LISTEN_ADDR", false),
            ("OTG_PORT_8080", false),
            ("OTG_PORT_8080_HTTP", false),
            ("OTG_PORT_0_TCP", false),
            ("OTG_PORT_70000_TCP", false),
            ("OTG_PORT_8080_TCP_HOST", false),
            ("OTG_PORT_8080_TCP_ADDR_X", false),
            ("OTG_SERVICE", false),
            ("OTG_SERVICE_HOSTS", false),
            ("OTG__PORT", false),
            ("OTG_PORT_", false),
            ("otg_service_host", false),
            ("SERVICE_HOST", false),
            ("PORT", false),
            ("9OTG_PORT", false),
        ];
        for (name, expected) in table {
            assert_eq!(is_service_link(name), expected, "{name}");
        }
    }

    #[test]
    fn service_links_are_ignored_and_other_unknown_variables_refused() {
        figment::Jail::expect_with(|jail| {
            for (name, value) in [
                ("OTG_SERVICE_HOST", "10.96.0.12"),
                ("OTG_SERVICE_PORT", "8080"),
                ("OTG_SERVICE_PORT_HTTP", "8080"),
                ("OTG_PORT", "tcp://10.96.0.12:8080"),
                ("OTG_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
                ("OTG_PORT_8080_TCP_ADDR", "10.96.0.12"),
                ("OTG_PORT_8080_TCP_PORT", "8080"),
                ("OTG_PORT_8080_TCP_PROTO", "tcp"),
            ] {
                jail.set_env(name, value);
            }
            jail.set_env("OTG_LOG_FORMAT", "json");
            let config = Config::load(None).unwrap();
            assert_eq!(config.log_format, LogFormat::Json);
            let ignored = ignored_service_link_variables();
            assert!(ignored.contains(&"OTG_PORT_8080_TCP_ADDR".to_owned()) && ignored.len() >= 8, "{ignored:?}");
            jail.set_env("OTG_LISTEN_ADRESS", "0.0.0.0:80");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("listen_adress"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn every_setting_is_known_by_name() {
        for name in ["listen_addr", "admin_token", "scylla_local_datacenter", "log_format"] {
            assert!(SETTING_NAMES.contains(name), "{name}");
        }
        assert!(!is_ignored_service_link("LISTEN_ADDR"));
        assert!(is_ignored_service_link("PORT_8080_TCP_ADDR"));
    }

    #[test]
    fn scylla_settings_are_checked_with_their_name() {
        let config = Config { scylla_replication: "dc1:3, us-east-1:2".into(), ..Config::default() };
        assert_eq!(
            config.scylla_replication().unwrap(),
            Replication::PerDataCentre(vec![("dc1".into(), 3), ("us-east-1".into(), 2)])
        );
        assert_eq!(Config::default().scylla_replication().unwrap(), Replication::Simple(3));
        for bad in ["simple:0", "three", "dc1:x"] {
            let config = Config { scylla_replication: bad.into(), ..Config::default() };
            assert!(config.scylla_replication().unwrap_err().to_string().contains("scylla_replication"), "{bad}");
        }
        let config = Config { scylla_consistency: "most".into(), ..Config::default() };
        assert!(config.scylla_options().unwrap_err().to_string().contains("scylla_consistency"));
        for weak in ["one", "local_one"] {
            let config = Config { scylla_consistency: weak.into(), ..Config::default() };
            let refusal = config.scylla_options().unwrap_err().to_string();
            assert!(refusal.contains("one replica") && refusal.contains("local_quorum"), "{refusal}");
        }
        let config = Config { store: StoreKind::Scylla, ..Config::default() };
        assert!(config.validate().unwrap_err().to_string().contains("admin_token"));
    }
}
