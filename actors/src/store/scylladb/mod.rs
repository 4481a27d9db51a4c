//! The ScyllaDB store: the `Store` model on a CQL cluster (ScyllaDB in production,
//! Apache Cassandra 5.0 in this project's tests).
//!
//! One session, prepared statements, token-aware routing, the configured consistency
//! (`LOCAL_QUORUM` by default) on every read and write, client-side write timestamps
//! (so that a row rewritten through another coordinator never loses to an older write
//! by clock skew). A commit writes its rows as `writes.rs` orders them, around the
//! device's progress: the commit point of `Store::commit`. Conditional writes (LWT)
//! only where two writers race for one outcome: enrolment, revocation, a conflict's
//! resolution, a device's epoch and progress, an employee's timeline version
//! (`ownership.rs`). docs/scylla.md has the data model table by table.

mod errors;
mod listings;
mod ownership;
mod queries;
mod schema;
mod statements;
mod writes;

pub use schema::{valid_keyspace, Replication};

use super::codec::decode;
use super::{
    AdminResolution, AuditEvent, AuditKind, AuditScope, Commit, ConflictRecord, Cursor, DeviceClaim, DeviceEnrolment,
    DeviceProgress, GatewayMember, Page, Resolved, SeqEntry, Store, StoreError, SyncTotals, TimelineEntry,
};
use crate::store::codec::encode;
use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use otg_schema::{OrgSettings, UtcDay};
use queries::Conditional;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::statement::{Consistency, SerialConsistency};
use statements::Statements;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use writes::{year_of, Writes, SEQ_BUCKET};

/// Statements of all commits in flight at once, per gateway: beyond it writes wait,
/// which backs up into the device mailboxes and so into 429s.
const WRITES_IN_FLIGHT: usize = 1024;
/// Most values in one `IN` list (ScyllaDB refuses more than 100 by default).
const IN_VALUES: usize = 100;
/// The first year a device's statistics can be in (otg's first release).
const FIRST_STATS_YEAR: i32 = 2025;
/// Attempts at the rows that follow a won enrolment before the caller is told.
const FOLLOW_UP_ATTEMPTS: u32 = 4;

/// Where and how to reach the cluster.
#[derive(Debug, Clone)]
pub struct ScyllaStoreOptions {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// Every read and write (`LOCAL_QUORUM` by default): an ack means the write is on
    /// that many replicas.
    pub consistency: Consistency,
    /// Route requests to this data centre's nodes only (token-aware within it).
    pub local_datacenter: Option<String>,
    /// How long one request may take before it counts as failed (and is retried if
    /// idempotent, or answered 503).
    pub request_timeout: Duration,
}

impl ScyllaStoreOptions {
    pub fn new(nodes: Vec<String>, keyspace: impl Into<String>) -> Self {
        ScyllaStoreOptions {
            nodes,
            keyspace: keyspace.into(),
            consistency: Consistency::LocalQuorum,
            local_datacenter: None,
            request_timeout: Duration::from_secs(5),
        }
    }

    /// The Paxos consistency of conditional writes: within the local data centre when
    /// reads and writes are, else across all of them (two data centres must not each
    /// pick a winner).
    fn serial_consistency(&self) -> SerialConsistency {
        match self.consistency {
            Consistency::LocalQuorum => SerialConsistency::LocalSerial,
            _ => SerialConsistency::Serial,
        }
    }
}

/// An enrolment as `devices` holds it: org, employee, secret, enrolled and revoked at.
type DeviceRow = (String, Option<String>, Vec<u8>, i64, Option<i64>);
/// A conflict as `conflicts` holds it: the detection and the resolution.
type ConflictRow = (Option<Vec<u8>>, Option<Vec<u8>>);

pub struct ScyllaStore {
    session: Arc<Session>,
    statements: Statements,
    writes_in_flight: Semaphore,
    closed: AtomicBool,
    _runtime: CqlRuntime,
}

/// The driver's connections and their I/O run here, on threads of their own, so that
/// no HTTP worker or actor thread carries the cluster's traffic. Dropped from async
/// code, so it shuts down without waiting.
struct CqlRuntime(Option<tokio::runtime::Runtime>);

impl Drop for CqlRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Connects to the cluster (without a keyspace) and applies the schema: what
/// `otg-gateway migrate` runs. Returns the versions it applied.
pub async fn migrate(options: &ScyllaStoreOptions, replication: &Replication) -> Result<Vec<i32>, StoreError> {
    let (session, _runtime) = connect(options).await?;
    schema::migrate(&session, &options.keyspace, replication, options.serial_consistency()).await
}

/// A session on its own runtime.
async fn connect(options: &ScyllaStoreOptions) -> Result<(Arc<Session>, CqlRuntime), StoreError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("otg-cql")
        .enable_all()
        .build()
        .map_err(|error| StoreError::Failed(format!("start the CQL runtime: {error}")))?;
    let runtime = CqlRuntime(Some(runtime));
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(datacenter) = &options.local_datacenter {
        policy = policy.prefer_datacenter(datacenter.clone()).permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(options.consistency)
        .serial_consistency(Some(options.serial_consistency()))
        .request_timeout(Some(options.request_timeout))
        .load_balancing_policy(policy.build())
        .build();
    let builder = SessionBuilder::new()
        .known_nodes(&options.nodes)
        .connection_timeout(Duration::from_secs(5))
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
        .default_execution_profile_handle(profile.into_handle());
    let build = runtime.0.as_ref().map(|runtime| runtime.spawn(async move { builder.build().await }));
    let session = build
        .expect("the runtime is there until dropped")
        .await
        .map_err(|error| StoreError::Failed(error.to_string()))?
        .map_err(|error| StoreError::Unavailable(format!("connect to {:?}: {error}", options.nodes)))?;
    if let Some(datacenter) = &options.local_datacenter {
        let state = session.get_cluster_state();
        if !state.get_nodes_info().iter().any(|node| node.datacenter.as_deref() == Some(datacenter.as_str())) {
            return Err(StoreError::Failed(format!(
                "scylla_local_datacenter {datacenter:?}: no node of the cluster is in it"
            )));
        }
    }
    Ok((Arc::new(session), runtime))
}

impl ScyllaStore {
    /// Connects, checks that the keyspace has the schema this build needs, and
    /// prepares every statement.
    pub async fn open(options: &ScyllaStoreOptions) -> Result<Self, StoreError> {
        schema::check_keyspace(&options.keyspace)?;
        let (session, runtime) = connect(options).await?;
        let (consistency, serial) = (options.consistency, options.serial_consistency());
        // First: with too few replicas every later read fails, the version's too.
        schema::check_replication(&session, &options.keyspace, serial).await?;
        schema::check_version(&session, &options.keyspace).await?;
        let statements = Statements::prepare(&session, &options.keyspace, consistency, serial).await?;
        Ok(ScyllaStore {
            session,
            statements,
            writes_in_flight: Semaphore::new(WRITES_IN_FLIGHT),
            closed: AtomicBool::new(false),
            _runtime: runtime,
        })
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Failed("the store is closed".into()));
        }
        Ok(())
    }

    async fn read_device(&self, device_id: &str, serial: bool) -> Result<Option<DeviceEnrolment>, StoreError> {
        let statement = if serial { &self.statements.select_device_serial } else { &self.statements.select_device };
        let rows: Vec<DeviceRow> = self.rows(statement, (device_id,)).await?;
        let Some((org_id, employee_id, secret, enrolled_at, revoked_at)) = rows.into_iter().next() else {
            return Ok(None);
        };
        let secret = secret.try_into().map_err(|_| StoreError::Corrupt(format!("device {device_id}: its secret")))?;
        Ok(Some(DeviceEnrolment { device_id: device_id.into(), org_id, employee_id, secret, enrolled_at, revoked_at }))
    }

    /// A conflict as stored: its detection with the resolution, if any.
    async fn read_conflict(&self, conflict_id: &str, serial: bool) -> Result<Option<ConflictRecord>, StoreError> {
        let statement = if serial { &self.statements.select_conflict_serial } else { &self.statements.select_conflict };
        let rows: Vec<ConflictRow> = self.rows(statement, (conflict_id,)).await?;
        let Some((Some(detected), resolution)) = rows.into_iter().next() else { return Ok(None) };
        let mut conflict: ConflictRecord = decode(&detected)?;
        conflict.resolution = resolution.map(|bytes| decode(&bytes)).transpose()?;
        Ok(Some(conflict))
    }

    /// A conflict whose commit reached its commit point (the newcomer's seq is in its
    /// device's progress). One a cut commit left is no conflict yet: the device's resend
    /// writes it again, and then it is.
    async fn committed_conflict(&self, conflict_id: &str) -> Result<Option<ConflictRecord>, StoreError> {
        let Some(conflict) = self.read_conflict(conflict_id, false).await? else { return Ok(None) };
        let progress = self.device_progress(&conflict.device_record.device_id).await?;
        Ok(progress.received.contains(conflict.device_record.seq).then_some(conflict))
    }

    /// Runs the writes `build` adds, a few times if they fail: for rows that must
    /// follow a conditional write that already won.
    async fn follow_up<'a>(&'a self, build: impl Fn(&mut Writes<'a>)) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            let mut writes = Writes::new(self);
            build(&mut writes);
            match writes.run().await {
                Err(StoreError::Unavailable(_)) if attempt + 1 < FOLLOW_UP_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                outcome => return outcome,
            }
        }
    }
}

#[async_trait]
impl Store for ScyllaStore {
    async fn enrol_device(&self, enrolment: &DeviceEnrolment) -> Result<(), StoreError> {
        let DeviceEnrolment { device_id, org_id, employee_id, secret, enrolled_at, .. } = enrolment;
        let values = (device_id.as_str(), org_id.as_str(), employee_id.as_deref(), &secret[..], *enrolled_at);
        match self.conditional(&self.statements.insert_device, values).await? {
            Conditional::Applied => {}
            // Lost, or unknown: what stands decides. Our own enrolment standing is a
            // retry of a write that did land (its audit entry may not have).
            outcome => match self.read_device(device_id, true).await? {
                Some(stored) if stored == *enrolment => {}
                Some(_) => return Err(StoreError::AlreadyExists),
                None if matches!(outcome, Conditional::Unknown(_)) => {
                    return Err(StoreError::Unavailable(format!("enrolment of {device_id}: outcome unknown")));
                }
                None => return Err(StoreError::Failed(format!("enrolment of {device_id}: refused, yet absent"))),
            },
        }
        let event = AuditKind::DeviceEnrolled { employee_id: employee_id.clone() };
        let audit = [enrolment.audit(*enrolled_at, event)];
        self.follow_up(|writes| {
            writes.one(&self.statements.insert_org_device, (org_id.as_str(), device_id.as_str()));
            self.audit_writes(&audit, writes);
        })
        .await
    }

    async fn device(&self, device_id: &str) -> Result<Option<DeviceEnrolment>, StoreError> {
        self.read_device(device_id, false).await
    }

    async fn revoke_device(&self, device_id: &str, at: i64) -> Result<Option<DeviceEnrolment>, StoreError> {
        if self.read_device(device_id, false).await?.is_none() {
            return Ok(None);
        }
        if let Conditional::Unknown(error) = self.conditional(&self.statements.revoke_device, (at, device_id)).await? {
            tracing::warn!(%error, device_id, "a revocation's outcome is unknown; reading it back");
        }
        // Whoever won, the revocation that stands gets its one audit entry (again, if
        // an earlier call was cut off before filing it: the same key, the same row).
        let Some(device) = self.read_device(device_id, true).await? else { return Ok(None) };
        let Some(revoked_at) = device.revoked_at else {
            return Err(StoreError::Unavailable(format!("revocation of {device_id}: it did not land")));
        };
        let audit = [device.audit(revoked_at, AuditKind::DeviceRevoked)];
        self.follow_up(|writes| self.audit_writes(&audit, writes)).await?;
        Ok(Some(device))
    }

    async fn device_progress(&self, device_id: &str) -> Result<DeviceProgress, StoreError> {
        let rows: Vec<(Option<Vec<u8>>,)> = self.rows(&self.statements.select_progress, (device_id,)).await?;
        match rows.into_iter().next() {
            Some((Some(progress),)) => decode(&progress),
            _ => Ok(DeviceProgress::default()),
        }
    }

    /// A scan of every device's progress, page by page, filtered here: a filter on the
    /// server (`ALLOW FILTERING`) could scan the whole table for one page and time out.
    async fn claim_device(&self, device_id: &str) -> Result<DeviceClaim, StoreError> {
        self.claim(device_id).await
    }

    async fn employee_version(&self, org_id: &str, employee_id: &str) -> Result<i64, StoreError> {
        self.read_employee_version(org_id, employee_id).await
    }

    async fn heartbeat(&self, gateway: &GatewayMember, ttl: Duration) -> Result<(), StoreError> {
        self.write_heartbeat(gateway, ttl).await
    }

    async fn live_gateways(&self) -> Result<Vec<GatewayMember>, StoreError> {
        self.read_live_gateways().await
    }

    async fn leave(&self, gateway_id: &str) -> Result<(), StoreError> {
        self.delete_gateway(gateway_id).await
    }

    async fn devices_waiting(&self, buckets: &[u16]) -> Result<Vec<String>, StoreError> {
        let buckets: Vec<i32> = buckets.iter().map(|bucket| i32::from(*bucket)).collect();
        let reads = buckets.into_iter().map(|bucket| async move {
            self.all_rows::<(String,)>(&self.statements.select_waiting_devices, (bucket,)).await
        });
        let partitions: Vec<Vec<(String,)>> =
            futures_util::stream::iter(reads).buffer_unordered(16).try_collect().await?;
        Ok(partitions.into_iter().flatten().map(|(device_id,)| device_id).collect())
    }

    async fn seq_entries(&self, device_id: &str, seqs: &[u64]) -> Result<Vec<Option<SeqEntry>>, StoreError> {
        let mut buckets: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for &seq in seqs {
            buckets.entry((seq / SEQ_BUCKET) as i64).or_default().push(seq as i64);
        }
        let reads = buckets.into_iter().flat_map(|(bucket, seqs)| {
            let chunks: Vec<Vec<i64>> = seqs.chunks(IN_VALUES).map(<[i64]>::to_vec).collect();
            chunks.into_iter().map(move |chunk| async move {
                self.rows::<(i64, Vec<u8>)>(&self.statements.select_seqs, (device_id, bucket, chunk)).await
            })
        });
        let mut found: BTreeMap<u64, SeqEntry> = BTreeMap::new();
        for rows in futures_util::future::try_join_all(reads).await? {
            for (seq, entry) in rows {
                found.insert(seq as u64, decode(&entry)?);
            }
        }
        Ok(seqs.iter().map(|seq| found.get(seq).cloned()).collect())
    }

    async fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.write_commit(commit).await
    }

    async fn resolve_conflict(
        &self,
        conflict_id: &str,
        resolution: &AdminResolution,
        effects: &Commit,
    ) -> Result<Resolved, StoreError> {
        if self.committed_conflict(conflict_id).await?.is_none() {
            return Ok(Resolved::NotFound);
        }
        let values = (encode(resolution), conflict_id);
        if let Conditional::Unknown(error) = self.conditional(&self.statements.resolve_conflict, values).await? {
            tracing::warn!(%error, conflict_id, "a resolution's outcome is unknown; reading it back");
        }
        let Some(conflict) = self.read_conflict(conflict_id, true).await? else { return Ok(Resolved::NotFound) };
        match &conflict.resolution {
            Some(standing) if standing.same_decision(resolution) => {
                self.write_commit(&Commit { audit: conflict.resolution_audit(), ..effects.clone() }).await?;
                Ok(Resolved::Now(conflict))
            }
            Some(_) => Ok(Resolved::Already(conflict)),
            None => Err(StoreError::Unavailable(format!("resolution of conflict {conflict_id}: it did not land"))),
        }
    }

    async fn timeline(&self, org_id: &str, employee_id: &str, day: UtcDay) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows: Vec<(Vec<u8>,)> =
            self.all_rows(&self.statements.select_timeline, (org_id, employee_id, day.0)).await?;
        rows.iter().map(|(entry,)| decode(entry)).collect()
    }

    async fn timeline_days(
        &self,
        org_id: &str,
        employee_id: &str,
        (first, last): (UtcDay, UtcDay),
    ) -> Result<Vec<UtcDay>, StoreError> {
        let rows: Vec<(i32,)> =
            self.all_rows(&self.statements.select_timeline_days, (org_id, employee_id, first.0, last.0)).await?;
        Ok(rows.into_iter().map(|(day,)| UtcDay(day)).collect())
    }

    async fn conflict(&self, conflict_id: &str) -> Result<Option<ConflictRecord>, StoreError> {
        self.committed_conflict(conflict_id).await
    }

    async fn conflicts(
        &self,
        org_id: &str,
        open: Option<bool>,
        page: Page<'_>,
    ) -> Result<Vec<(ConflictRecord, Cursor)>, StoreError> {
        self.conflicts_page(org_id, open, page).await
    }

    async fn open_conflicts_of_device(&self, device_id: &str) -> Result<Vec<ConflictRecord>, StoreError> {
        let ids: Vec<(String,)> = self.all_rows(&self.statements.select_conflicts_of_device, (device_id,)).await?;
        let reads = ids.iter().map(|(conflict_id,)| self.committed_conflict(conflict_id));
        let conflicts = futures_util::future::try_join_all(reads).await?;
        Ok(conflicts.into_iter().flatten().filter(ConflictRecord::is_open).collect())
    }

    async fn audit(
        &self,
        scope: AuditScope<'_>,
        since: i64,
        until: i64,
        page: Page<'_>,
    ) -> Result<Vec<(AuditEvent, Cursor)>, StoreError> {
        self.audit_page(scope, since, until, page).await
    }

    async fn sync_totals(&self, org_id: &str, since: i64) -> Result<SyncTotals, StoreError> {
        let hour = since.div_euclid(3_600_000) * 3_600_000;
        let (first, last) = (UtcDay::of_unix_ms(hour).0, UtcDay::of_unix_ms(now_ms()).0);
        let reads = (first..=last).map(|day| async move {
            self.all_rows::<(Vec<u8>,)>(&self.statements.select_sync_stats, (org_id, day, hour)).await
        });
        let days: Vec<Vec<(Vec<u8>,)>> = futures_util::stream::iter(reads).buffer_unordered(16).try_collect().await?;
        sum(days.iter().flatten())
    }

    async fn device_totals(&self, device_id: &str) -> Result<SyncTotals, StoreError> {
        let refused = (FIRST_STATS_YEAR..=year_of(now_ms()) + 1).map(|year| async move {
            self.all_rows::<(Vec<u8>,)>(&self.statements.select_device_stats, (device_id, year)).await
        });
        let (progress, years) = futures_util::future::try_join(
            self.device_progress(device_id),
            futures_util::future::try_join_all(refused),
        )
        .await?;
        let mut totals = sum(years.iter().flatten())?;
        totals.add(&progress.totals);
        Ok(totals)
    }

    async fn devices_of_org(&self, org_id: &str, page: Page<'_>) -> Result<Vec<(DeviceEnrolment, Cursor)>, StoreError> {
        let after = page.after.and_then(|after| std::str::from_utf8(after).ok()).unwrap_or("");
        let limit = page.limit.min(i32::MAX as usize) as i32;
        let ids: Vec<(String,)> = self.rows(&self.statements.select_org_devices, (org_id, after, limit)).await?;
        let reads = ids.iter().map(|(device_id,)| self.read_device(device_id, false));
        let devices = futures_util::future::try_join_all(reads).await?;
        Ok(devices
            .into_iter()
            .flatten()
            .map(|device| {
                let cursor = device.device_id.clone().into_bytes();
                (device, cursor)
            })
            .collect())
    }

    async fn org_settings(&self, org_id: &str) -> Result<OrgSettings, StoreError> {
        let rows: Vec<(Option<Vec<u8>>,)> = self.rows(&self.statements.select_org_settings, (org_id,)).await?;
        match rows.into_iter().next() {
            Some((Some(settings),)) => decode(&settings),
            _ => Ok(OrgSettings::default()),
        }
    }

    async fn put_org_settings(&self, org_id: &str, settings: &OrgSettings) -> Result<(), StoreError> {
        self.execute(&self.statements.insert_org_settings, (org_id, encode(settings))).await.map(drop)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A point read at the configured consistency: red while too few replicas
        // answer. Whether the key exists does not matter.
        self.org_settings("otg-readiness-probe").await.map(drop)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Every acked write is already on its replicas; nothing is buffered here.
        self.closed.store(true, Ordering::Relaxed);
        self.writes_in_flight.close();
        Ok(())
    }
}

fn sum<'a>(rows: impl Iterator<Item = &'a (Vec<u8>,)>) -> Result<SyncTotals, StoreError> {
    let mut totals = SyncTotals::default();
    for (counts,) in rows {
        totals.add(&decode(counts)?);
    }
    Ok(totals)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema is applied once per test process, by the first test to ask: tests run
    /// at once, and `migrate` must not run twice at once on one keyspace.
    static MIGRATED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

    /// The cluster the test command started (`scripts/cassandra up`), named by
    /// `OTG_SCYLLA_NODES`; the schema is applied to a test keyspace first. `None`
    /// outside the test command (`cargo test` alone), which then skips with a note, and
    /// a failure in CI, where the cluster must be there.
    pub(crate) async fn test_store() -> Option<ScyllaStore> {
        let Ok(nodes) = std::env::var("OTG_SCYLLA_NODES") else {
            assert!(std::env::var_os("CI").is_none(), "CI runs scripts/test, which starts a cluster");
            eprintln!("OTG_SCYLLA_NODES is not set: skipped (scripts/test starts a Cassandra cluster and sets it)");
            return None;
        };
        let nodes: Vec<String> = nodes.split(',').map(str::to_string).collect();
        let replication = Replication::Simple(nodes.len().min(3) as u32);
        let options = ScyllaStoreOptions::new(nodes, "otg_store_tests");
        let migrated = MIGRATED.get_or_init(|| async {
            migrate(&options, &replication).await.expect("migrate the test keyspace");
        });
        migrated.await;
        Some(ScyllaStore::open(&options).await.expect("open the store"))
    }

    #[actix_rt::test]
    async fn passes_the_store_conformance_suite() {
        let Some(store) = test_store().await else { return };
        super::super::conformance::run_all(&store).await;
        store.close().await.unwrap();
        assert!(store.device_progress("any").await.is_err(), "a closed store refuses calls");
    }

    /// A gateway killed between a commit's point and its tail: the commit took effect
    /// (its progress says so) and its audit entry and counts are written by the next
    /// claim of the device, once however often it is claimed.
    #[actix_rt::test]
    async fn a_claim_writes_the_tail_of_a_commit_cut_after_its_commit_point() {
        use super::super::conformance::{batch_received, Ids, DAY_START};
        use super::super::{CommitId, DeviceWrite, SyncCounts};
        let Some(store) = test_store().await else { return };
        let ids = Ids::fresh();
        let (org, device) = (ids.of("tail-org"), ids.of("tail-dev"));
        let claim = store.claim_device(&device).await.unwrap();
        let mut progress = DeviceProgress::default();
        progress.received.insert(1);
        progress.last_commit = Some(CommitId::fresh());
        let (epoch, after) = (claim.epoch, claim.progress.last_commit);
        let write =
            DeviceWrite { device_id: device.clone(), entries: Vec::new(), progress, epoch, after, was_waiting: false };
        let received = batch_received(&org, &device, DAY_START + 5);
        let counts =
            SyncCounts::of(&received, SyncTotals { batches_succeeded: 1, accepted: 1, ..SyncTotals::default() });
        store.write_progress(&write, &writes::CommitTail::encode(&[received], &[counts])).await.unwrap();
        assert_eq!(store.sync_totals(&org, DAY_START).await.unwrap(), SyncTotals::default(), "the tail is not written");

        for _ in 0..2 {
            let claim = store.claim_device(&device).await.unwrap();
            assert!(claim.progress.received.contains(1), "the commit took effect");
            let totals = store.sync_totals(&org, DAY_START).await.unwrap();
            assert_eq!((totals.batches_succeeded, totals.accepted), (1, 1), "counted once, by the claim");
            let page = Page { after: None, limit: 10 };
            let trail = store.audit(AuditScope::Device(&device), DAY_START, DAY_START + 10, page).await.unwrap();
            assert_eq!(trail.len(), 1, "filed once");
        }
    }

    /// `migrate` cut after a version's statements but before the version was recorded
    /// runs them again: a column already added is not added twice.
    #[actix_rt::test]
    async fn a_migration_cut_before_its_version_was_recorded_runs_again() {
        let Some(store) = test_store().await else { return };
        let nodes: Vec<String> = std::env::var("OTG_SCYLLA_NODES").unwrap().split(',').map(str::to_string).collect();
        let options = ScyllaStoreOptions::new(nodes, "otg_migrate_tests");
        let replication = Replication::Simple(1);
        migrate(&options, &replication).await.unwrap();
        // A device left waiting by a release before the waiting_devices table: the
        // migration that adds the table lists it.
        let device = format!("dev-waiting-{}", uuid::Uuid::new_v4().simple());
        let waiting = "INSERT INTO otg_migrate_tests.device_state (device_id, waiting) VALUES (?, true)";
        store.session.query_unpaged(waiting, (device.as_str(),)).await.unwrap();
        let latest = otg_schema::cql::latest_version();
        assert_eq!(latest, 5, "the newest version is the one that adds waiting_devices");
        let forget = "DELETE FROM otg_migrate_tests.schema_migrations WHERE version = ?";
        store.session.query_unpaged(forget, (latest,)).await.unwrap();
        assert_eq!(migrate(&options, &replication).await.unwrap(), vec![latest], "the cut version runs again");
        assert_eq!(migrate(&options, &replication).await.unwrap(), Vec::<i32>::new(), "and is then recorded");
        let listed = "SELECT device_id FROM otg_migrate_tests.waiting_devices WHERE bucket = ?";
        let rows = store.session.query_unpaged(listed, (i32::from(super::super::waiting_bucket(&device)),)).await;
        let rows = rows.unwrap().into_rows_result().unwrap();
        let devices: Vec<String> = rows.rows::<(String,)>().unwrap().map(|row| row.unwrap().0).collect();
        assert!(devices.contains(&device), "filled from device_state: {devices:?}");
    }

    #[actix_rt::test]
    async fn a_keyspace_without_the_schema_is_refused_with_the_command_that_fixes_it() {
        let Some(store) = test_store().await else { return };
        drop(store);
        let nodes: Vec<String> = std::env::var("OTG_SCYLLA_NODES").unwrap().split(',').map(str::to_string).collect();
        let options = ScyllaStoreOptions::new(nodes, "otg_never_migrated");
        let Err(StoreError::Failed(message)) = ScyllaStore::open(&options).await else {
            panic!("a keyspace that was never migrated must be refused")
        };
        assert!(message.contains("otg-gateway migrate"), "{message}");
    }

    /// `migrate` with a replication factor above the cluster's nodes refuses before it
    /// creates anything, naming the setting and a value that works; a gateway refuses a
    /// keyspace made that way elsewhere, before any read fails on it.
    #[actix_rt::test]
    async fn a_replication_factor_above_the_nodes_is_refused_naming_the_fix() {
        let Some(store) = test_store().await else { return };
        let nodes: Vec<String> = std::env::var("OTG_SCYLLA_NODES").unwrap().split(',').map(str::to_string).collect();
        let known = store.session.get_cluster_state().get_nodes_info().len() as u32;
        let keyspace = format!("otg_rf_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let options = ScyllaStoreOptions::new(nodes, keyspace.as_str());
        let Err(StoreError::Failed(message)) = migrate(&options, &Replication::Simple(known + 1)).await else {
            panic!("a factor above the nodes must be refused")
        };
        assert!(message.contains(&format!("\"simple:{known}\"")), "{message}");
        let created = format!(
            "CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            known + 1
        );
        store.session.query_unpaged(created, ()).await.unwrap();
        let Err(StoreError::Failed(message)) = ScyllaStore::open(&options).await else {
            panic!("a keyspace the cluster cannot serve must be refused")
        };
        assert!(message.contains("replication factor") && message.contains(&keyspace), "{message}");
        store.session.query_unpaged(format!("DROP KEYSPACE {keyspace}"), ()).await.unwrap();
    }

    #[test]
    fn conditional_writes_stay_in_the_data_centre_only_when_everything_does() {
        let options = |consistency| ScyllaStoreOptions { consistency, ..ScyllaStoreOptions::new(vec![], "otg") };
        assert_eq!(options(Consistency::LocalQuorum).serial_consistency(), SerialConsistency::LocalSerial);
        assert_eq!(options(Consistency::Quorum).serial_consistency(), SerialConsistency::Serial);
        assert_eq!(options(Consistency::EachQuorum).serial_consistency(), SerialConsistency::Serial);
    }
}
