//! One employee's timeline as a conflict actor keeps it: the UTC-day partitions read
//! from the store and cached, the evaluation of new records against the effective
//! timeline with the org's policy, and an administrator's resolution.
//!
//! The cache is updated before the device's commit; a failed commit makes the conflict
//! actor forget it.

use crate::conflict_rules::{self, ConflictKind, Event, RuleSettings};
use crate::store::{
    AdminResolution, Commit, CommitId, ConflictRecord, EmployeeAdvance, PolicyOutcome, RecordRef, RecordStatus,
    Resolution, Resolved, Store, StoreError, TimelineEntry,
};
use otg_schema::{ConflictResolution, UtcDay};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most UTC days with entries an employee keeps cached; beyond that the days farthest
/// from the last ones read are dropped.
const MAX_CACHED_DAYS: usize = 32;

/// Days asked beyond the ones needed when an employee walks through its days, a batch
/// a day (a kiosk's backlog): one read of the store for two months of the walk. Of
/// those days, no more than `READ_AHEAD_DAYS` that hold anything are read.
const WALK_AHEAD_DAYS: i32 = 64;

/// Most days ahead of a walk whose entries are read: half the cache, so the days
/// behind the walk stay cached beside them.
const READ_AHEAD_DAYS: usize = MAX_CACHED_DAYS / 2;

/// What placing one employee's records decided, and the timeline version the decisions
/// were made on (the commit advances it from there, or fails if it moved).
#[derive(Debug, Clone, PartialEq)]
pub struct EmployeePlaced {
    pub placed: Vec<Placed>,
    /// The employee's version the decisions were made on, and the one they advance to.
    pub advance: EmployeeAdvance,
}

/// What placing one record decided, in the order of the request's records.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The record's timeline entry, with its status after the org's policy.
    pub entry: TimelineEntry,
    /// Stored entries the policy superseded.
    pub superseded: Vec<TimelineEntry>,
    /// The conflicts found for the record (none if it was not evaluated).
    pub conflicts: Vec<ConflictRecord>,
}

/// One record to place in its employee's timeline, and whether its turn to be
/// evaluated has come (a record behind a gap in its device's seqs waits).
#[derive(Debug)]
pub struct ToPlace {
    pub entry: TimelineEntry,
    pub evaluate_now: bool,
}

/// An administrator's decision on a conflict.
#[derive(Debug, Clone)]
pub struct AdminDecision {
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

/// What a conflict actor knows of an employee's timeline without asking the store.
#[derive(Default)]
pub(crate) struct Cache {
    /// Days read from the store, each with its entries, kept up to date with this
    /// cache's decisions.
    days: BTreeMap<UtcDay, Vec<TimelineEntry>>,
    /// A span of days asked of the store: each of its days that holds anything is in
    /// `days`, so the others hold nothing. A day neither in it nor in `days` is asked
    /// when needed.
    known: Option<(UtcDay, UtcDay)>,
    /// The first day of the last span read: the cache keeps the days nearest it.
    recent: Option<UtcDay>,
    /// The employee's timeline version (`Store::employee_version`), read before any
    /// day, and advanced with every commit of this cache's decisions.
    version: Option<i64>,
    /// The version the decisions on this cache advance to, once their commit succeeds.
    advancing_to: Option<i64>,
}

impl Cache {
    /// A commit of what was decided on this cache succeeded: it advanced the version.
    pub(crate) fn committed(&mut self) {
        self.version = self.advancing_to.take();
    }

    /// Whether the cache holds all of `day`'s entries (or knows it has none).
    fn knows(&self, day: UtcDay) -> bool {
        self.known.is_some_and(|(first, last)| first <= day && day <= last) || self.days.contains_key(&day)
    }

    /// The span to ask the store about for the unknown days `(first, last)`: with
    /// `WALK_AHEAD_DAYS` more on the side away from a known neighbouring day, since the
    /// next batch most likely needs the day after in that direction. One read of a
    /// wider span costs little more than one of a day (`Store::timeline_days`); with
    /// no neighbour known (an employee's first record, most of a live load's) the span
    /// is asked as it is.
    fn walk_ahead(&self, (first, last): (UtcDay, UtcDay)) -> (UtcDay, UtcDay) {
        match (self.knows(UtcDay(first.0 - 1)), self.knows(UtcDay(last.0 + 1))) {
            (false, true) => (UtcDay(first.0 - WALK_AHEAD_DAYS), last),
            (true, false) => (first, UtcDay(last.0 + WALK_AHEAD_DAYS)),
            _ => (first, last),
        }
    }

    /// Narrows a span asked for the days `needed` (`walk_ahead`) to the
    /// `READ_AHEAD_DAYS` days beyond them that hold anything (`written`, in order),
    /// dropping the others from `written`.
    fn within_reach(
        (mut first, mut last): (UtcDay, UtcDay),
        needed: (UtcDay, UtcDay),
        written: &mut Vec<UtcDay>,
    ) -> (UtcDay, UtcDay) {
        let before = written.iter().filter(|day| **day < needed.0).count();
        if let Some(beyond) = before.checked_sub(READ_AHEAD_DAYS).filter(|beyond| *beyond > 0) {
            first = written[beyond - 1].next();
            written.drain(..beyond);
        }
        let after = written.iter().filter(|day| **day > needed.1).count();
        if let Some(beyond) = after.checked_sub(READ_AHEAD_DAYS).filter(|beyond| *beyond > 0) {
            let kept = written.len() - beyond;
            last = UtcDay(written[kept].0 - 1);
            written.truncate(kept);
        }
        (first, last)
    }

    /// Takes in the days of a span asked of the store, read: the known span grows by
    /// it when they touch, and is replaced by it otherwise (the days read before stay).
    fn learned(&mut self, asked: (UtcDay, UtcDay), read: impl IntoIterator<Item = (UtcDay, Vec<TimelineEntry>)>) {
        self.days.extend(read);
        self.known = match self.known {
            Some((first, last)) if asked.0 .0 <= last.0 + 1 && first.0 <= asked.1 .0 + 1 => {
                Some((first.min(asked.0), last.max(asked.1)))
            }
            _ => Some(asked),
        };
    }

    /// Drops the cached days farthest from the recent ones, down to `MAX_CACHED_DAYS`;
    /// the known span ends before a day dropped from it.
    pub(crate) fn trim(&mut self) {
        let Some(recent) = self.recent else { return };
        while self.days.len() > MAX_CACHED_DAYS {
            let (Some((&first, _)), Some((&last, _))) = (self.days.first_key_value(), self.days.last_key_value())
            else {
                return;
            };
            if recent.0 - first.0 > last.0 - recent.0 {
                self.days.pop_first();
                self.known = self.known.map(|(from, to)| (from.max(first.next()), to));
            } else {
                self.days.pop_last();
                self.known = self.known.map(|(from, to)| (from, to.min(UtcDay(last.0 - 1))));
            }
        }
    }
}

/// An employee's cached days, and the store to read the missing ones from.
pub(crate) struct CachedTimeline {
    pub(crate) cache: Cache,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) org_id: Arc<str>,
    pub(crate) employee_id: Arc<str>,
}

impl CachedTimeline {
    /// Places records in the timeline, in the device's seq order, evaluating those
    /// marked so one at a time.
    pub(crate) async fn place(
        &mut self,
        records: Vec<ToPlace>,
        received_at: i64,
        rules: RuleSettings,
        policy: ConflictResolution,
    ) -> Result<EmployeePlaced, StoreError> {
        fail::fail_point!("employee_timeline::place");
        let read_version = self.version().await?;
        let advance = EmployeeAdvance::next(&self.org_id, &self.employee_id, read_version);
        self.cache.advancing_to = Some(advance.new_version);
        let mut placed = Vec::with_capacity(records.len());
        for ToPlace { mut entry, evaluate_now } in records {
            entry.status = if evaluate_now { RecordStatus::Active } else { RecordStatus::Pending };
            let (mut superseded, mut conflicts) = (Vec::new(), Vec::new());
            if evaluate_now {
                self.load(window(&entry, rules.max_shift_ms)).await?;
                let (found, server_entries) = self.evaluate(&entry, received_at, rules, policy);
                if found.iter().any(|conflict| conflict.outcome == PolicyOutcome::NewcomerSuperseded) {
                    entry.status = RecordStatus::Superseded;
                }
                for mut server_entry in server_entries {
                    server_entry.status = RecordStatus::Superseded;
                    // A leave stands in every day it covers: each must show the new status.
                    self.load(days_of(&server_entry)).await?;
                    self.put(&server_entry);
                    superseded.push(server_entry);
                }
                conflicts = found;
            }
            self.put(&entry);
            placed.push(Placed { entry, superseded, conflicts });
        }
        Ok(EmployeePlaced { placed, advance })
    }

    /// The store's version of the timeline, with the cache emptied if it is behind it:
    /// for a resolution, rare enough to check first rather than fail on a stale cache
    /// (another gateway may have placed the very record it resolves).
    async fn fresh_version(&mut self) -> Result<i64, StoreError> {
        let stored = self.store.employee_version(&self.org_id, &self.employee_id).await?;
        if self.cache.version != Some(stored) {
            self.cache = Cache { version: Some(stored), ..Cache::default() };
        }
        Ok(stored)
    }

    /// The timeline version the cache's days are at least as new as: read from the
    /// store before any day, when the cache is empty.
    async fn version(&mut self) -> Result<i64, StoreError> {
        if let Some(version) = self.cache.version {
            return Ok(version);
        }
        self.cache = Cache::default();
        let version = self.store.employee_version(&self.org_id, &self.employee_id).await?;
        self.cache.version = Some(version);
        Ok(version)
    }

    /// Records the decision and sets the records' statuses, in one durable commit;
    /// nothing is deleted.
    pub(crate) async fn resolve(&mut self, resolve: AdminDecision) -> Result<ConflictRecord, ResolveError> {
        let read_version = self.fresh_version().await?;
        let conflict = self
            .store
            .conflict(&resolve.conflict_id)
            .await?
            .ok_or_else(|| ResolveError::NotFound(resolve.conflict_id.clone()))?;
        let decision =
            AdminResolution { resolution: resolve.resolution, note: resolve.note, resolved_at: resolve.resolved_at };
        // Another decision stands: refused. The same one (a retry whose effects may not
        // have been written) goes on, and the store writes its effects again.
        if conflict.resolution.as_ref().is_some_and(|standing| !standing.same_decision(&decision)) {
            return Err(ResolveError::AlreadyResolved(conflict.id));
        }
        let (device_status, server_status) = match resolve.resolution {
            Resolution::KeepServer if conflict.server_record.is_some() => {
                (RecordStatus::Superseded, RecordStatus::Active)
            }
            Resolution::KeepDevice => (RecordStatus::Active, RecordStatus::Superseded),
            Resolution::DiscardBoth => (RecordStatus::Discarded, RecordStatus::Discarded),
            Resolution::KeepServer | Resolution::KeepBoth => (RecordStatus::Active, RecordStatus::Active),
        };
        let mut timeline = Vec::new();
        let records =
            [(Some(conflict.device_record.clone()), device_status), (conflict.server_record.clone(), server_status)];
        for (record, status) in records {
            if let Some(record) = record {
                let mut entry = self.entry_of(&record).await?;
                entry.status = status;
                timeline.push(entry);
            }
        }
        let employee = EmployeeAdvance::next(&self.org_id, &self.employee_id, read_version);
        self.cache.advancing_to = Some(employee.new_version);
        let effects = Commit {
            id: CommitId::fresh(),
            employees: vec![employee],
            timeline: timeline.clone(),
            ..Commit::default()
        };
        match self.store.resolve_conflict(&conflict.id, &decision, &effects).await {
            Ok(Resolved::Now(resolved)) => {
                for entry in &timeline {
                    self.put(entry);
                }
                Ok(resolved)
            }
            Ok(Resolved::Already(resolved)) => Err(ResolveError::AlreadyResolved(resolved.id)),
            Ok(Resolved::NotFound) => Err(ResolveError::NotFound(conflict.id)),
            Err(error) => {
                self.cache = Cache::default();
                Err(error.into())
            }
        }
    }

    /// The stored timeline entry of a record of a conflict.
    async fn entry_of(&mut self, record: &RecordRef) -> Result<TimelineEntry, StoreError> {
        let day = UtcDay::of_unix_ms(record.recorded_at);
        self.load((day, day)).await?;
        self.cache
            .days
            .get(&day)
            .and_then(|entries| entries.iter().find(|entry| *entry.record_id == *record.record_id))
            .cloned()
            .ok_or_else(|| {
                StoreError::Corrupt(format!("record {} of a conflict is not in its timeline", record.record_id))
            })
    }

    /// The conflicts of `newcomer` against the effective timeline, and the stored
    /// entries the policy supersedes. A record is evaluated once: it is written with
    /// its conflicts in one commit, so none of them can exist yet.
    fn evaluate(
        &self,
        newcomer: &TimelineEntry,
        received_at: i64,
        rules: RuleSettings,
        policy: ConflictResolution,
    ) -> (Vec<ConflictRecord>, Vec<TimelineEntry>) {
        let around = self.effective(window(newcomer, rules.max_shift_ms), newcomer);
        let events: Vec<Event> = around.iter().map(|entry| event(entry)).collect();
        let findings = conflict_rules::evaluate(&event(newcomer), received_at, &events, rules);
        let (mut conflicts, mut superseded) = (Vec::new(), Vec::new());
        for finding in findings {
            let other = finding.other.map(|index| around[index]);
            let id =
                conflict_rules::conflict_id(finding.kind, &newcomer.record_id, other.map(|entry| &*entry.record_id));
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

    /// Caches the days of `span` not known yet: asks the store which of them have
    /// entries, and reads only those. An employee walking through its days one at a
    /// time (a kiosk's backlog, a day a batch) has the days ahead of the walk asked too.
    async fn load(&mut self, span: (UtcDay, UtcDay)) -> Result<(), StoreError> {
        self.cache.recent = Some(span.0);
        let mut unknown = span.0.through(span.1).filter(|day| !self.cache.knows(*day));
        let Some(first) = unknown.next() else {
            return Ok(());
        };
        let last = unknown.last().unwrap_or(first);
        let asked = self.cache.walk_ahead((first, last));
        let mut written = self.store.timeline_days(&self.org_id, &self.employee_id, asked).await?;
        written.retain(|day| !self.cache.days.contains_key(day));
        let asked = Cache::within_reach(asked, (first, last), &mut written);
        // At once: a leave's span can be many days, each a request to a remote store.
        let reads = written.iter().map(|day| self.store.timeline(&self.org_id, &self.employee_id, *day));
        let read = futures_util::future::try_join_all(reads).await?;
        self.cache.learned(asked, written.into_iter().zip(read));
        Ok(())
    }

    /// The effective entries of `span`, once each, in time order, without `newcomer`'s
    /// own seq: its own entry, and any other record once placed on that seq by a run
    /// that lost it (two gateways sent one seq with different records at once: the
    /// loser's timeline row stands without a commit point, and the seq is in the
    /// device's progress through the winner). Only a leave request can stand in several
    /// days, so only those are deduplicated.
    fn effective(&self, span: (UtcDay, UtcDay), newcomer: &TimelineEntry) -> Vec<&TimelineEntry> {
        let mut leaves_seen: Vec<&str> = Vec::new();
        let mut effective: Vec<&TimelineEntry> = self
            .cache
            .days
            .range(span.0..=span.1)
            .flat_map(|(_, entries)| entries)
            .filter(|entry| entry.status == RecordStatus::Active && *entry.record_id != *newcomer.record_id)
            .filter(|entry| !(entry.device_id == newcomer.device_id && entry.seq == newcomer.seq))
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

    /// Puts an entry (new, or with a new status) into every known day it belongs to.
    /// A day not known is read from the store when next needed.
    fn put(&mut self, entry: &TimelineEntry) {
        let (first, last) = days_of(entry);
        for day in first.through(last) {
            if let Some(entries) = self.cache.days.get_mut(&day) {
                entries.retain(|cached| cached.record_id != entry.record_id);
                entries.push(entry.clone());
            } else if self.cache.knows(day) {
                self.cache.days.insert(day, vec![entry.clone()]);
            }
        }
    }
}

/// The days an entry stands in: its own, and for a leave request every day it covers.
fn days_of(entry: &TimelineEntry) -> (UtcDay, UtcDay) {
    let day = UtcDay::of_unix_ms(entry.recorded_at);
    entry.leave.map_or((day, day), |(from, to)| (from.min(day), to.max(day)))
}

/// The days whose records can collide with `entry`.
fn window(entry: &TimelineEntry, max_shift_ms: i64) -> (UtcDay, UtcDay) {
    match entry.leave {
        Some((from, to)) => (from, to),
        None => {
            (UtcDay::of_unix_ms(entry.recorded_at - max_shift_ms), UtcDay::of_unix_ms(entry.recorded_at + max_shift_ms))
        }
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

    fn span(first: i32, last: i32) -> (UtcDay, UtcDay) {
        (UtcDay(first), UtcDay(last))
    }

    #[test]
    fn trimming_keeps_the_days_nearest_the_recent_ones() {
        let mut cache = Cache { recent: Some(UtcDay(100)), ..Cache::default() };
        cache.learned(span(50, 120), (60..=110).map(|day| (UtcDay(day), Vec::new())));
        cache.trim();
        let kept: Vec<i32> = cache.days.keys().map(|day| day.0).collect();
        assert_eq!(kept.len(), MAX_CACHED_DAYS);
        assert_eq!((kept[0], kept[kept.len() - 1]), (79, 110), "the ten days after 100 and the 22 before it");
        assert_eq!(cache.known, Some(span(79, 120)), "days before 79 are no longer known to be empty");
        assert!(cache.knows(UtcDay(115)) && !cache.knows(UtcDay(78)));
    }

    #[test]
    fn a_walk_through_the_days_asks_ahead_of_it() {
        let mut cache = Cache::default();
        assert_eq!(cache.walk_ahead(span(99, 100)), span(99, 100), "nothing known: the span as it is");
        cache.learned(span(99, 100), []);
        assert_eq!(cache.walk_ahead(span(98, 98)), span(98 - WALK_AHEAD_DAYS, 98), "walking back");
        assert_eq!(cache.walk_ahead(span(101, 101)), span(101, 101 + WALK_AHEAD_DAYS), "walking on");
        assert_eq!(cache.walk_ahead(span(90, 91)), span(90, 91), "no neighbour known");
        cache.days.insert(UtcDay(102), Vec::new());
        assert_eq!(cache.walk_ahead(span(101, 101)), span(101, 101), "a gap between known days");
    }

    #[test]
    fn a_walk_reads_half_the_cache_ahead_and_knows_only_that() {
        let needed = span(100, 100);
        let mut written: Vec<UtcDay> = (40..=100).map(UtcDay).collect();
        let asked = Cache::within_reach(span(36, 100), needed, &mut written);
        assert_eq!(written.len(), READ_AHEAD_DAYS + 1, "the day needed and the nearest ahead");
        assert_eq!((asked, written[0]), (span(84, 100), UtcDay(84)));
        let mut written: Vec<UtcDay> = vec![UtcDay(100), UtcDay(101), UtcDay(130)];
        assert_eq!(Cache::within_reach(span(100, 164), needed, &mut written), span(100, 164), "few days: all");
        assert_eq!(written.len(), 3);
        let mut written: Vec<UtcDay> = (101..=140).map(UtcDay).collect();
        assert_eq!(Cache::within_reach(span(100, 164), needed, &mut written), span(100, 116));
        assert_eq!(written.last(), Some(&UtcDay(116)));
    }

    #[test]
    fn a_span_asked_apart_from_the_known_one_replaces_it() {
        let mut cache = Cache::default();
        cache.learned(span(10, 20), [(UtcDay(15), Vec::new())]);
        cache.learned(span(21, 25), []);
        assert_eq!(cache.known, Some(span(10, 25)), "touching spans join");
        cache.learned(span(40, 41), []);
        assert_eq!(cache.known, Some(span(40, 41)));
        assert!(cache.knows(UtcDay(15)) && !cache.knows(UtcDay(16)), "a day read stays known");
    }
}
