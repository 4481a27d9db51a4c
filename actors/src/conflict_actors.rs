//! Finds or starts the `ConflictActor` of an (org, employee), on the device actors'
//! arbiters, and stops it after its idle timeout.
//!
//! Device actors ask and wait (`send`), one request each at a time, so a conflict
//! actor's mailbox holds at most one request per device actor with a batch in work.

use crate::conflict_actor::{ConflictActor, PlaceRecords, Placed, ResolveConflict, ResolveError};
use crate::store::TimelineEntry;
use otg_schema::OrgSettings;
use tokio::sync::oneshot;
use crate::store::{Store, StoreError};
use actix::prelude::*;
use dashmap::DashMap;
use prometheus::{IntCounterVec, IntGauge};
use std::sync::Arc;
use std::time::Duration;

/// An actor's (org, employee).
type Key = (Arc<str>, Arc<str>);

pub struct ConflictActors {
    actors: Arc<DashMap<Key, Addr<ConflictActor>>>,
    arbiters: Vec<ArbiterHandle>,
    store: Arc<dyn Store>,
    idle_timeout: Duration,
    active: IntGauge,
    detected: IntCounterVec,
}

/// What a conflict actor holds of its map, to leave it when it stops.
pub struct ActorHandle<A: Actor> {
    actors: Arc<DashMap<Key, Addr<A>>>,
    key: Key,
    active: IntGauge,
}

impl<A: Actor> ActorHandle<A> {
    pub(crate) fn forget(&self, actor: &Addr<A>) {
        forget(&self.actors, &self.key, actor, &self.active);
    }
}

/// Drops the map entry if it still names this (stopped) actor.
fn forget<A: Actor>(actors: &DashMap<Key, Addr<A>>, key: &Key, actor: &Addr<A>, active: &IntGauge) {
    if actors.remove_if(key, |_, current| current == actor).is_some() {
        active.dec();
    }
}

impl ConflictActors {
    pub(crate) fn new(arbiters: Vec<ArbiterHandle>, store: Arc<dyn Store>, idle_timeout: Duration, active: IntGauge, detected: IntCounterVec) -> Self {
        ConflictActors { actors: Arc::new(DashMap::new()), arbiters, store, idle_timeout, active, detected }
    }

    /// Counts a conflict found and stored.
    pub(crate) fn count_detected(&self, kind: crate::conflict_rules::ConflictKind) {
        self.detected.with_label_values(&[kind.as_str()]).inc();
    }

    /// Places records in the employee's timeline, and returns what was decided with the
    /// sender on which the caller must say whether its commit succeeded (dropping it
    /// says no); the employee's actor takes no other request until then. A request that
    /// met an actor just as it stopped is asked again of a fresh one.
    ///
    /// Called from a device actor: a conflict actor that does not exist yet starts on
    /// that device's arbiter, so an employee recorded by one device (the usual case)
    /// is evaluated without a hop between threads.
    pub(crate) async fn place(
        &self,
        org_id: &Arc<str>,
        employee_id: &Arc<str>,
        records: Arc<Vec<(TimelineEntry, bool)>>,
        received_at: i64,
        settings: &OrgSettings,
    ) -> Result<(Vec<Placed>, oneshot::Sender<bool>), StoreError> {
        let key = (org_id.clone(), employee_id.clone());
        let near = Arbiter::try_current();
        for _ in 0..2 {
            let actor = self.actor(&key, near.as_ref());
            let ((reply, placed), (commit, committed)) = (oneshot::channel(), oneshot::channel());
            // Device actors wait for each answer, so this mailbox never grows past one
            // request per device actor; a request dropped by a stopping actor comes back
            // as a closed reply channel and is asked again.
            actor.do_send(PlaceRecords::new(records.clone(), received_at, settings, reply, committed));
            match placed.await {
                Ok(placed) => return Ok((placed?, commit)),
                Err(_) => self.forget(&key, &actor),
            }
        }
        Err(StoreError::Unavailable("no conflict actor took the records".into()))
    }

    /// Settles a conflict through its employee's actor, which keeps its cache right.
    pub(crate) async fn resolve(&self, org_id: &str, employee_id: &str, resolve: ResolveConflict) -> Result<crate::store::ConflictRecord, ResolveError> {
        let key = (Arc::from(org_id), Arc::from(employee_id));
        self.actor(&key, None)
            .send(resolve)
            .await
            .map_err(|error| ResolveError::Store(StoreError::Unavailable(format!("conflict actor: {error}"))))?
    }

    fn forget(&self, key: &Key, actor: &Addr<ConflictActor>) {
        forget(&self.actors, key, actor, &self.active);
    }

    /// The actor of an (org, employee); a new one starts on `near`, or on the arbiter
    /// the key hashes to.
    fn actor(&self, key: &Key, near: Option<&ArbiterHandle>) -> Addr<ConflictActor> {
        if let Some(actor) = self.actors.get(key) {
            return actor.clone();
        }
        self.actors
            .entry(key.clone())
            .or_insert_with(|| {
                let arbiter = near.unwrap_or_else(|| &self.arbiters[crate::registry::shard_of(&key.1, self.arbiters.len())]);
                let handle = ActorHandle { actors: self.actors.clone(), key: key.clone(), active: self.active.clone() };
                let ((org_id, employee_id), store, idle_timeout) = (key.clone(), self.store.clone(), self.idle_timeout);
                self.active.inc();
                ConflictActor::start_in_arbiter(arbiter, move |_| ConflictActor::new(org_id, employee_id, store, handle, idle_timeout))
            })
            .clone()
    }
}
