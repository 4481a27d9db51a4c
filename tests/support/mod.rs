//! Starts the real `otg-gateway` binary on port 0 with a fresh data dir and talks
//! HTTP to it, as a device and as an administrator would.

#![allow(dead_code)] // each test file uses its own part of this harness

use otg_schema::signing::{DEVICE_ID_HEADER, REQUEST_TIME_HEADER, SIGNATURE_HEADER};
use otg_schema::wire::{self, Batch, BatchResponse, Record};
use otg_schema::DeviceSecret;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const HOUR_MS: i64 = 3_600_000;
pub const MINUTE_MS: i64 = 60_000;

/// A fresh keyspace on the CQL cluster (ScyllaDB or Cassandra) the test command names
/// in `OTG_SCYLLA_NODES`, with otg's schema applied: one per test, so tests never see
/// each other's devices, orgs or totals.
pub struct ScyllaKeyspace {
    /// The contact points, comma-separated.
    pub nodes: String,
    pub name: String,
    /// One replica per node, up to three: every node of a three-node cluster holds
    /// every row, so one of them can be killed under a quorum.
    replication: String,
}

impl ScyllaKeyspace {
    /// Makes one and applies the schema with the real `otg-gateway migrate`, as an
    /// operator must before any gateway starts on it. `None` (with a note) when
    /// `OTG_SCYLLA_NODES` is unset, except in CI, which must run the CQL tests.
    pub fn create() -> Option<ScyllaKeyspace> {
        let Ok(nodes) = std::env::var("OTG_SCYLLA_NODES") else {
            assert!(std::env::var_os("CI").is_none(), "CI runs scripts/test, which starts a cluster");
            eprintln!("OTG_SCYLLA_NODES is not set: skipped (scripts/test starts a Cassandra cluster and sets it)");
            return None;
        };
        let name = format!("otg_e2e_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let replication = format!("simple:{}", nodes.split(',').count().min(3));
        let keyspace = ScyllaKeyspace { nodes, name, replication };
        let output = Command::new(env!("CARGO_BIN_EXE_otg-gateway"))
            .arg("migrate")
            .envs(keyspace.settings())
            .env("OTG_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("OTG_LOG", "warn")
            .output()
            .expect("the gateway binary starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains(&format!("keyspace {}: applied", keyspace.name)),
            "otg-gateway migrate: {}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Some(keyspace)
    }

    /// The `OTG_*` settings that put a gateway on this keyspace, for [`Gateway::start`].
    pub fn settings(&self) -> [(&str, &str); 4] {
        [
            ("OTG_STORE", "scylla"),
            ("OTG_SCYLLA_NODES", &self.nodes),
            ("OTG_SCYLLA_KEYSPACE", &self.name),
            ("OTG_SCYLLA_REPLICATION", &self.replication),
        ]
    }
}

impl Drop for ScyllaKeyspace {
    /// Drops the keyspace, best effort. A Cassandra node keeps heap for every table
    /// (about a megabyte each): the keyspaces of a whole test run, eighteen tables each,
    /// left in place fill a small test node's heap until it dies of `OutOfMemoryError`.
    fn drop(&mut self) {
        if let Err(error) = cql_execute(&self.nodes, &format!("DROP KEYSPACE IF EXISTS {}", self.name)) {
            eprintln!("keyspace {} left on the cluster: {error}", self.name);
        }
    }
}

/// Runs one CQL statement on the cluster, with the `scylla` driver on a runtime of its
/// own (the tests are plain threads).
fn cql_execute(nodes: &str, statement: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let session = scylla::client::session_builder::SessionBuilder::new()
            .known_nodes(nodes.split(','))
            .build()
            .await
            .map_err(|error| error.to_string())?;
        session.query_unpaged(statement, ()).await.map(drop).map_err(|error| error.to_string())
    })
}

/// The store a test's gateways run on. The end-to-end tests of the protocol and the
/// admin API hold for every store, so each runs once per store through
/// [`on_both_stores!`], with the same assertions: a store that answers differently is
/// a bug of that store, not a reason for a second copy of the test.
pub enum TestStore {
    /// The embedded store in the gateway's data dir: the default, needing no settings.
    Embedded,
    /// A fresh keyspace of its own on the CQL cluster `OTG_SCYLLA_NODES` names, dropped
    /// with the value when the test ends.
    Cql(ScyllaKeyspace),
}

impl TestStore {
    /// A fresh migrated keyspace, or `None` (with a note) when no cluster is configured:
    /// see [`ScyllaKeyspace::create`].
    pub fn cql() -> Option<TestStore> {
        ScyllaKeyspace::create().map(TestStore::Cql)
    }

    /// Starts a gateway on `data_dir` with the test's own `settings` followed by the
    /// store's. Starting again from the same `TestStore` (a restart) finds the same data:
    /// the same data dir for the embedded store, the same keyspace for the CQL one.
    pub fn start(&self, data_dir: &Path, settings: &[(&str, &str)]) -> Gateway {
        match self {
            TestStore::Embedded => Gateway::start(data_dir, settings),
            TestStore::Cql(keyspace) => Gateway::start(data_dir, &[settings, &keyspace.settings()].concat()),
        }
    }
}

/// Runs each listed `fn name(store: &TestStore)` as two tests, `embedded_store::name`
/// and `cql_store::name`, so one body and one set of assertions covers both stores.
/// Each CQL test makes its own keyspace (tests run in parallel and must never see each
/// other's devices, orgs or totals) and is skipped, with a note, when no cluster is
/// configured, as [`ScyllaKeyspace::create`] is.
#[allow(unused_macros)] // as `dead_code` above: not every test file uses it
macro_rules! on_both_stores {
    ($($test:ident),+ $(,)?) => {
        mod embedded_store {
            $(
                #[test]
                fn $test() {
                    super::$test(&$crate::support::TestStore::Embedded)
                }
            )+
        }

        mod cql_store {
            $(
                #[test]
                fn $test() {
                    if let Some(store) = $crate::support::TestStore::cql() {
                        super::$test(&store)
                    }
                }
            )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_stores;

/// A running gateway process.
pub struct Gateway {
    child: Child,
    pub base_url: String,
    pub data_dir: PathBuf,
}

impl Gateway {
    /// Starts the binary on `data_dir` with extra `OTG_*` settings; waits until it listens.
    pub fn start(data_dir: &Path, settings: &[(&str, &str)]) -> Gateway {
        let mut command = Command::new(env!("CARGO_BIN_EXE_otg-gateway"));
        command
            .env("OTG_LISTEN_ADDR", "127.0.0.1:0")
            .env("OTG_DATA_DIR", data_dir)
            .env("OTG_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("OTG_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in settings {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the gateway binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base_url = loop {
            let line = lines.next().expect("the gateway prints its address").unwrap();
            if let Some(url) = line.strip_prefix("otg-gateway listening on ") {
                break url.to_owned();
            }
        };
        // Keep reading stdout so the gateway never blocks writing to it.
        std::thread::spawn(move || lines.for_each(drop));
        Gateway { child, base_url, data_dir: data_dir.to_owned() }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `signal` (SIGTERM, SIGINT), then waits for the process to exit.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        unsafe { libc::kill(self.pid(), signal) };
        self.child.wait().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Enrols a device through the admin API and returns it, secret included.
    pub fn enrol(&self, device_id: &str, org_id: &str, employee_id: Option<&str>) -> TestDevice {
        let mut body = serde_json::json!({"device_id": device_id, "org_id": org_id});
        if let Some(employee_id) = employee_id {
            body["employee_id"] = employee_id.into();
        }
        let reply = self.admin("POST", "/v1/admin/devices", Some(body));
        assert_eq!(reply.status, 201, "enrolling {device_id}: {}", reply.text());
        let secret = reply.json()["secret"].as_str().unwrap().to_owned();
        TestDevice { id: device_id.into(), secret: DeviceSecret::from_base64(&secret).unwrap() }
    }

    /// An admin call with the right token.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let request = ureq::request(method, &self.url(path)).set("Authorization", &format!("Bearer {ADMIN_TOKEN}"));
        match body {
            Some(body) => send(request.set("Content-Type", "application/json"), body.to_string().as_bytes()),
            None => send(request, b""),
        }
    }

    /// Uploads a batch as `device`, signed, and returns the raw reply.
    pub fn upload(&self, device: &TestDevice, body: &[u8]) -> Reply {
        send(device.signed(&self.url(""), "POST", "/v1/sync/batches", body), body)
    }

    /// Uploads a batch that must be acked, and returns its decoded response.
    pub fn upload_ok(&self, device: &TestDevice, body: &[u8]) -> BatchResponse {
        let reply = self.upload(device, body);
        assert_eq!(reply.status, 200, "upload: {}", reply.text());
        reply.msgpack()
    }

    /// A signed GET of a device endpoint.
    pub fn device_get(&self, device: &TestDevice, path: &str) -> Reply {
        send(device.signed(&self.url(""), "GET", path, b""), b"")
    }

    /// The value of an unlabelled metric, from `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = send(ureq::get(&self.url("/metrics")), b"").text();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An enrolled device: its id and the secret it signs with.
#[derive(Clone)]
pub struct TestDevice {
    pub id: String,
    pub secret: DeviceSecret,
}

impl TestDevice {
    /// A request with the three signature headers over `body`.
    pub fn signed(&self, base_url: &str, method: &str, path: &str, body: &[u8]) -> ureq::Request {
        let request_time = chrono::Utc::now().timestamp_millis().to_string();
        let signature = self.secret.sign(method, path, &request_time, body);
        ureq::request(method, &format!("{base_url}{path}"))
            .set("Content-Type", "application/msgpack")
            .set(DEVICE_ID_HEADER, &self.id)
            .set(REQUEST_TIME_HEADER, &request_time)
            .set(SIGNATURE_HEADER, &signature)
    }
}

/// A reply of any status, read whole.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub server_timing: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }

    pub fn msgpack<T: serde::de::DeserializeOwned>(&self) -> T {
        wire::decode(&self.body)
            .unwrap_or_else(|error| panic!("not the expected MessagePack ({error}): {:?}", self.body))
    }

    /// The `error` code of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends a request and reads the reply, whatever its status.
pub fn send(request: ureq::Request, body: &[u8]) -> Reply {
    let response = match request.send_bytes(body) {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("request failed: {error}"),
    };
    let status = response.status();
    let retry_after = response.header("Retry-After").map(str::to_owned);
    let server_timing = response.header("Server-Timing").map(str::to_owned);
    let content_type = response.header("Content-Type").unwrap_or_default().to_owned();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut body).unwrap();
    Reply { status, retry_after, server_timing, content_type, body }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A valid record with a fresh id: a check-in on odd seqs, a check-out on even ones,
/// ten minutes apart from four days ago on, so one device's records make a
/// conflict-free run of short shifts.
pub fn record(seq: i64, employee_id: &str) -> Record {
    let kind = if seq % 2 == 1 { "check_in" } else { "check_out" };
    let recorded_at = now_ms() / HOUR_MS * HOUR_MS - 96 * HOUR_MS + seq * 10 * MINUTE_MS;
    Record { offline: Some(true), ..Record::new(seq, uuid::Uuid::new_v4().to_string(), kind, employee_id, recorded_at) }
}

/// Encodes a batch of `records` for `device_id`.
pub fn batch(device_id: &str, batch_id: &str, records: Vec<Record>) -> Vec<u8> {
    wire::encode(&Batch { pending: Some(0), ..Batch::new(device_id, batch_id, now_ms(), records) })
}

/// Sends again while the answer is 503, as a device does after `Retry-After`, for up to
/// `timeout`: a node just restarted may still time the store's reads out.
pub fn after_503s(timeout: Duration, mut send: impl FnMut() -> Reply) -> Reply {
    let deadline = Instant::now() + timeout;
    loop {
        let reply = send();
        if reply.status != 503 || Instant::now() >= deadline {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    condition()
}
