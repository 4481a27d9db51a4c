//! `ConflictActor`: one per active (org, employee), the keeper of that employee's
//! timeline while device actors place records in it.
//!
//! It caches the employee's UTC-day partitions it has read, evaluates records one at a
//! time (so two devices of one employee never race each other), applies the org's
//! policy, and returns the timeline entries and conflicts to write. The cache is
//! updated before the device actor's commit; a failed commit makes it forget.

use crate::conflict_rules::{self, ConflictKind, Event, RuleSettings};
use crate::conflict_actors::ActorHandle;
use crate::store::{AdminResolution, AuditEvent, AuditKind, Commit, ConflictRecord, PolicyOutcome, RecordRef, RecordStatus, Resolution, Store, StoreError, TimelineEntry};
use actix::prelude::*;
use otg_schema::{ConflictResolution, OrgSettings, UtcDay};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use tokio::sync::oneshot;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most UTC days an actor keeps cached; beyond that it drops the days farthest from
/// the last ones it read.
const MAX_CACHED_DAYS: usize = 32;
const MS_PER_HOUR: i64 = 3_600_000;

/// Place records of this employee in the timeline; evaluate those marked so, in order.
/// The answer comes on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PlaceRecords {
    /// In the device's seq order, each with whether to evaluate it now; shared, so a
    /// request that must be asked again of a fresh actor copies nothing.
    pub records: Arc<Vec<(TimelineEntry, bool)>>,
    pub received_at: i64,
    pub rules: RuleSettings,
    pub policy: ConflictResolution,
    pub reply: oneshot::Sender<Result<Vec<Placed>, StoreError>>,
    /// Whether the device's commit of these records succeeded. The actor takes no
    /// other request until it knows, so the employee's statuses are written in the
    /// order they were decided; a failed (or abandoned) commit empties its cache.
    pub committed: oneshot::Receiver<bool>,
}

impl PlaceRecords {
    pub fn new(
        records: Arc<Vec<(TimelineEntry, bool)>>,
        received_at: i64,
        settings: &OrgSettings,
        reply: oneshot::Sender<Result<Vec<Placed>, StoreError>>,
        committed: oneshot::Receiver<bool>,
    ) -> Self {
        let rules = RuleSettings {
            duplicate_window_ms: i64::from(settings.duplicate_window_s) * 1000,
            max_shift_ms: i64::from(settings.max_shift_hours) * MS_PER_HOUR,
            max_clock_skew_ms: i64::from(settings.max_clock_skew_s) * 1000,
        };
        PlaceRecords { records, received_at, rules, policy: settings.conflict_resolution, reply, committed }
    }
}

/// What placing one record decided, in the order of the request's records.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The record's status after the org's policy.
    pub status: RecordStatus,
    /// Stored entries the policy superseded.
    pub superseded: Vec<TimelineEntry>,
    /// The conflicts found for the record (none if it was not evaluated).
    pub conflicts: Vec<ConflictRecord>,
}

/// Settle a conflict of this employee as an administrator decided.
#[derive(Message)]
#[rtype(result = "Result<ConflictRecord, ResolveError>")]
pub struct ResolveConflict {
    pub conflict_id: String,
    pub resolution: Resolution,
    pub note: String,
    pub resolved_at: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("no conflict {0}")]
    NotFound(String),
    #[error("conflict {0} is already resolved")]
    AlreadyResolved(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct ConflictActor {
    org_id: Arc<str>,
    employee_id: Arc<str>,
    store: Arc<dyn Store>,
    handle: ActorHandle<ConflictActor>,
    cache: Cache,
    last_active: Instant,
    idle_timeout: Duration,
}

impl ConflictActor {
    pub(crate) fn new(org_id: Arc<str>, employee_id: Arc<str>, store: Arc<dyn Store>, handle: ActorHandle<ConflictActor>, idle_timeout: Duration) -> Self {
        ConflictActor { org_id, employee_id, store, handle, cache: Cache::default(), last_active: Instant::now(), idle_timeout }
    }
}

impl Actor for ConflictActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.idle_timeout / 2, |actor, ctx| {
            if actor.last_active.elapsed() >= actor.idle_timeout {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.handle.forget(&ctx.address());
    }
}

impl ConflictActor {
    /// Runs `work` on the employee's cached timeline, one request at a time, and keeps
    /// what it cached for the next one.
    fn with_timeline<T: 'static, Work: Future<Output = (T, CachedTimeline)> + 'static>(
        &mut self,
        work: impl FnOnce(CachedTimeline) -> Work,
    ) -> impl ActorFuture<Self, Output = T> + 'static {
        self.last_active = Instant::now();
        self.cache.trim();
        let timeline = CachedTimeline {
            cache: std::mem::take(&mut self.cache),
            store: self.store.clone(),
            org_id: self.org_id.clone(),
            employee_id: self.employee_id.clone(),
        };
        work(timeline).into_actor(self).map(|(result, timeline), actor, _ctx| {
            actor.cache = timeline.cache;
            result
        })
    }
}

impl Handler<PlaceRecords> for ConflictActor {
    type Result = ();

    fn handle(&mut self, place: PlaceRecords, ctx: &mut Self::Context) {
        let PlaceRecords { records, received_at, rules, policy, reply, committed } = place;
        let placing = self.with_timeline(move |mut timeline| async move {
            let placed = timeline.place(&records, received_at, rules, policy).await;
            if placed.is_err() {
                // Part of the request may be cached but will not be stored.
                timeline.cache = Cache::default();
            }
            (placed, timeline)
        });
        ctx.wait(placing.map(|placed, actor, ctx| {
            let _ = reply.send(placed);
            ctx.wait(async move { committed.await.unwrap_or(false) }.into_actor(actor).map(|committed, actor, _ctx| {
                if !committed {
                    actor.cache = Cache::default();
                }
            }));
        }));
    }
}

impl Handler<ResolveConflict> for ConflictActor {
    type Result = AtomicResponse<Self, Result<ConflictRecord, ResolveError>>;

    fn handle(&mut self, resolve: ResolveConflict, _ctx: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(Box::pin(self.with_timeline(|mut timeline| async move {
            let resolved = timeline.resolve(resolve).await;
            (resolved, timeline)
        })))
    }
}

/// What an actor knows of its employee's timeline without asking the store.
#[derive(Default)]
struct Cache {
    days: BTreeMap<UtcDay, Vec<TimelineEntry>>,
    /// Every day the employee has entries in (and perhaps a few more whose write
    /// failed), read once; a day outside it is empty and needs no read.
    written: Option<BTreeSet<UtcDay>>,
    /// The first day of the last span read: the cache keeps the days nearest it.
    recent: Option<UtcDay>,
}

impl Cache {
    /// Drops the cached days farthest from the recent ones, down to `MAX_CACHED_DAYS`.
    fn trim(&mut self) {
        let Some(recent) = self.recent else { return };
        while self.days.len() > MAX_CACHED_DAYS {
            let (Some((&first, _)), Some((&last, _))) = (self.days.first_key_value(), self.days.last_key_value()) else { return };
            if recent.0 - first.0 > last.0 - recent.0 {
                self.days.pop_first();
            } else {
                self.days.pop_last();
            }
        }
    }
}

/// The employee's cached days, and the store to read the missing ones from.
struct CachedTimeline {
    cache: Cache,
    store: Arc<dyn Store>,
    org_id: Arc<str>,
    employee_id: Arc<str>,
}

impl CachedTimeline {
    async fn place(
        &mut self,
        records: &[(TimelineEntry, bool)],
        received_at: i64,
        rules: RuleSettings,
        policy: ConflictResolution,
    ) -> Result<Vec<Placed>, StoreError> {
        let mut placed = Vec::with_capacity(records.len());
        for (entry, evaluate_now) in records {
            let status = if *evaluate_now { RecordStatus::Active } else { RecordStatus::Pending };
            let mut decided = Placed { status, superseded: Vec::new(), conflicts: Vec::new() };
            if *evaluate_now {
                self.load(window(entry, rules.max_shift_ms)).await?;
                let (found, superseded) = self.evaluate(entry, received_at, rules, policy);
                if found.iter().any(|conflict| conflict.outcome == PolicyOutcome::NewcomerSuperseded) {
                    decided.status = RecordStatus::Superseded;
                }
                for mut server_entry in superseded {
                    server_entry.status = RecordStatus::Superseded;
                    self.put(&server_entry);
                    decided.superseded.push(server_entry);
                }
                decided.conflicts = found;
            }
            self.put(&TimelineEntry { status: decided.status, ..entry.clone() });
            placed.push(decided);
        }
        Ok(placed)
    }

    /// Records the decision and sets the records' statuses, in one durable commit;
    /// nothing is deleted.
    async fn resolve(&mut self, resolve: ResolveConflict) -> Result<ConflictRecord, ResolveError> {
        let mut conflict = self.store.conflict(&resolve.conflict_id).await?.ok_or_else(|| ResolveError::NotFound(resolve.conflict_id.clone()))?;
        if !conflict.is_open() {
            return Err(ResolveError::AlreadyResolved(conflict.id));
        }
        let (device_status, server_status) = match resolve.resolution {
            Resolution::KeepServer if conflict.server_record.is_some() => (RecordStatus::Superseded, RecordStatus::Active),
            Resolution::KeepDevice => (RecordStatus::Active, RecordStatus::Superseded),
            Resolution::DiscardBoth => (RecordStatus::Discarded, RecordStatus::Discarded),
            Resolution::KeepServer | Resolution::KeepBoth => (RecordStatus::Active, RecordStatus::Active),
        };
        let mut timeline = Vec::new();
        let records = [(Some(conflict.device_record.clone()), device_status), (conflict.server_record.clone(), server_status)];
        for (record, status) in records {
            if let Some(record) = record {
                let mut entry = self.entry_of(&record).await?;
                entry.status = status;
                timeline.push(entry);
            }
        }
        let audit = std::iter::once(&conflict.device_record)
            .chain(&conflict.server_record)
            .map(|record| AuditEvent {
                at: resolve.resolved_at,
                org_id: conflict.org_id.clone(),
                device_id: record.device_id.clone(),
                event: AuditKind::ConflictResolved { conflict_id: conflict.id.clone(), resolution: resolve.resolution, note: resolve.note.clone() },
            })
            .collect();
        conflict.resolution = Some(AdminResolution { resolution: resolve.resolution, note: resolve.note, resolved_at: resolve.resolved_at });
        let commit = Commit { timeline: timeline.clone(), conflicts: vec![conflict.clone()], audit, ..Commit::default() };
        if let Err(error) = self.store.commit(&commit).await {
            self.cache = Cache::default();
            return Err(error.into());
        }
        for entry in &timeline {
            self.put(entry);
        }
        Ok(conflict)
    }

    /// The stored timeline entry of a record of a conflict.
    async fn entry_of(&mut self, record: &RecordRef) -> Result<TimelineEntry, StoreError> {
        let day = UtcDay::of_unix_ms(record.recorded_at);
        self.load((day, day)).await?;
        self.cache.days[&day]
            .iter()
            .find(|entry| *entry.record_id == *record.record_id)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("record {} of a conflict is not in its timeline", record.record_id)))
    }

    /// The conflicts of `newcomer` against the effective timeline, and the stored
    /// entries the policy supersedes. A record is evaluated once: it is written with
    /// its conflicts in one commit, so none of them can exist yet.
    fn evaluate(&self, newcomer: &TimelineEntry, received_at: i64, rules: RuleSettings, policy: ConflictResolution) -> (Vec<ConflictRecord>, Vec<TimelineEntry>) {
        let around = self.effective(window(newcomer, rules.max_shift_ms), &newcomer.record_id);
        let events: Vec<Event> = around.iter().map(|entry| event(entry)).collect();
        let findings = conflict_rules::evaluate(&event(newcomer), received_at, &events, rules);
        let (mut conflicts, mut superseded) = (Vec::new(), Vec::new());
        for finding in findings {
            let other = finding.other.map(|index| around[index]);
            let id = conflict_rules::conflict_id(finding.kind, &newcomer.record_id, other.map(|entry| &*entry.record_id));
            let outcome = policy_outcome(finding.kind, policy);
            if let (PolicyOutcome::ServerSuperseded, Some(other)) = (outcome, other) {
                superseded.push(other.clone());
            }
            conflicts.push(ConflictRecord {
                id,
                org_id: self.org_id.to_string(),
                employee_id: self.employee_id.to_string(),
                kind: finding.kind,
                device_record: newcomer.reference(),
                server_record: other.map(TimelineEntry::reference),
                policy,
                outcome,
                detected_at: received_at,
                resolution: None,
            });
        }
        (conflicts, superseded)
    }

    /// Reads the days of `span` that are not cached and have entries.
    async fn load(&mut self, span: (UtcDay, UtcDay)) -> Result<(), StoreError> {
        if self.cache.written.is_none() {
            let written = self.store.timeline_days(&self.org_id, &self.employee_id).await?;
            self.cache.written = Some(written.into_iter().collect());
        }
        self.cache.recent = Some(span.0);
        let mut day = span.0;
        while day <= span.1 {
            if !self.cache.days.contains_key(&day) {
                let written = self.cache.written.as_ref().is_some_and(|written| written.contains(&day));
                let entries = if written { self.store.timeline(&self.org_id, &self.employee_id, day).await? } else { Vec::new() };
                self.cache.days.insert(day, entries);
            }
            day = day.next();
        }
        Ok(())
    }

    /// The effective entries of `span`, once each, in time order, without `except`.
    /// Only a leave request can stand in several days, so only those are deduplicated.
    fn effective(&self, span: (UtcDay, UtcDay), except: &str) -> Vec<&TimelineEntry> {
        let mut leaves_seen: Vec<&str> = Vec::new();
        let mut effective: Vec<&TimelineEntry> = self
            .cache
            .days
            .range(span.0..=span.1)
            .flat_map(|(_, entries)| entries)
            .filter(|entry| entry.status == RecordStatus::Active && *entry.record_id != *except)
            .filter(|entry| {
                entry.leave.is_none() || {
                    let first = !leaves_seen.contains(&&*entry.record_id);
                    leaves_seen.push(&entry.record_id);
                    first
                }
            })
            .collect();
        effective.sort_by(|a, b| (a.recorded_at, &a.device_id, a.seq).cmp(&(b.recorded_at, &b.device_id, b.seq)));
        effective
    }

    /// Puts an entry (new, or with a new status) into every cached day it belongs to.
    fn put(&mut self, entry: &TimelineEntry) {
        let (first, last) = entry.leave.map_or_else(|| {
            let day = UtcDay::of_unix_ms(entry.recorded_at);
            (day, day)
        }, |(from, to)| (from.min(UtcDay::of_unix_ms(entry.recorded_at)), to.max(UtcDay::of_unix_ms(entry.recorded_at))));
        if let Some(written) = self.cache.written.as_mut() {
            written.extend((first.0..=last.0).map(UtcDay));
        }
        for (_, entries) in self.cache.days.range_mut(first..=last) {
            entries.retain(|cached| cached.record_id != entry.record_id);
            entries.push(entry.clone());
        }
    }
}

/// The days whose records can collide with `entry`.
fn window(entry: &TimelineEntry, max_shift_ms: i64) -> (UtcDay, UtcDay) {
    match entry.leave {
        Some((from, to)) => (from, to),
        None => (UtcDay::of_unix_ms(entry.recorded_at - max_shift_ms), UtcDay::of_unix_ms(entry.recorded_at + max_shift_ms)),
    }
}

fn event(entry: &TimelineEntry) -> Event<'_> {
    Event { record_id: &entry.record_id, kind: entry.kind, recorded_at: entry.recorded_at, leave: entry.leave }
}

/// What the org's policy does with a new conflict.
fn policy_outcome(kind: ConflictKind, policy: ConflictResolution) -> PolicyOutcome {
    if !kind.is_between_two() {
        return PolicyOutcome::BothStand;
    }
    match policy {
        ConflictResolution::ServerWins => PolicyOutcome::NewcomerSuperseded,
        ConflictResolution::DeviceWins => PolicyOutcome::ServerSuperseded,
        ConflictResolution::Manual => PolicyOutcome::BothStand,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_the_days_nearest_the_recent_ones() {
        let mut cache = Cache { recent: Some(UtcDay(100)), ..Cache::default() };
        for day in 60..=110 {
            cache.days.insert(UtcDay(day), Vec::new());
        }
        cache.trim();
        let kept: Vec<i32> = cache.days.keys().map(|day| day.0).collect();
        assert_eq!(kept.len(), MAX_CACHED_DAYS);
        assert_eq!((kept[0], kept[kept.len() - 1]), (79, 110), "the ten days after 100 and the 22 before it");
    }
}
