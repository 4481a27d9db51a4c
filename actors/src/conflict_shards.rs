//! `ConflictShards`: the conflict actors, as many as `device_arbiters`, each on an
//! arbiter of its own, and which employee each keeps: the one its (org, employee)
//! hashes to. On threads of
//! their own, a placement (a live check-in's among them) never queues behind device
//! actors building their commits.
//!
//! A device actor asks them in one order (by index) and waits for each answer, holding
//! the employees already placed until its commit is known; since every device asks in
//! the same order, two devices sharing employees can never wait on each other.

use crate::conflict_actor::{
    ConflictActor, ConflictActorOptions, EmployeeKey, EmployeeRecords, PlaceRecords, ResolveConflict,
};
use crate::employee_timeline::{AdminDecision, EmployeePlaced, ResolveError};
use crate::sharding::shard_of;
use crate::store::{ConflictRecord, StoreError};
use actix::prelude::*;
use otg_schema::OrgSettings;
use prometheus::IntCounterVec;
use tokio::sync::oneshot;

pub(crate) struct ConflictShards {
    actors: Vec<Addr<ConflictActor>>,
    arbiters: Vec<ArbiterHandle>,
    detected: IntCounterVec,
}

impl ConflictShards {
    /// Starts `count` conflict actors, each on a new arbiter; `max_employees` is shared
    /// out evenly. Must run inside an actix `System`.
    pub(crate) fn start(mut options: ConflictActorOptions, count: usize, detected: IntCounterVec) -> Self {
        let count = count.max(1);
        options.max_employees = options.max_employees.div_ceil(count).max(1);
        let arbiters: Vec<ArbiterHandle> = (0..count).map(|_| Arbiter::new().handle()).collect();
        let actors = arbiters
            .iter()
            .map(|arbiter| {
                let options = options.clone();
                ConflictActor::start_in_arbiter(arbiter, move |_| ConflictActor::new(options))
            })
            .collect();
        ConflictShards { actors, arbiters, detected }
    }

    /// Stops their arbiters once nothing more will be sent.
    pub(crate) fn stop(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }

    /// Counts a conflict found and stored.
    pub(crate) fn count_detected(&self, kind: crate::conflict_rules::ConflictKind) {
        self.detected.with_label_values(&[kind.as_str()]).inc();
    }

    /// Places each employee's records in its timeline, and returns what was decided,
    /// employee by employee in the order given (with the timeline version each
    /// placement read), with the senders on which the caller must say whether its
    /// commit succeeded (dropping them says no). Until then the employees take no other
    /// request. A `live` batch's placement does not wait for backlog placements to start.
    pub(crate) async fn place(
        &self,
        employees: Vec<EmployeeRecords>,
        received_at: i64,
        settings: &OrgSettings,
        live: bool,
    ) -> Result<(Vec<(EmployeeKey, EmployeePlaced)>, Vec<oneshot::Sender<bool>>), StoreError> {
        let mut by_actor: Vec<(Vec<usize>, Vec<EmployeeRecords>)> =
            (0..self.actors.len()).map(|_| (Vec::new(), Vec::new())).collect();
        let keys: Vec<EmployeeKey> = employees.iter().map(|employee| employee.employee.clone()).collect();
        for (position, employee) in employees.into_iter().enumerate() {
            let (positions, of_actor) = &mut by_actor[self.index_of(&employee.employee)];
            positions.push(position);
            of_actor.push(employee);
        }
        let mut placed: Vec<Option<EmployeePlaced>> = keys.iter().map(|_| None).collect();
        let mut commit_signals = Vec::new();
        for (actor, (positions, employees)) in
            self.actors.iter().zip(by_actor).filter(|(_, (positions, _))| !positions.is_empty())
        {
            let ((reply, answer), (commit_known, committed)) = (oneshot::channel(), oneshot::channel());
            // Device actors wait for each answer, so a conflict actor's mailbox holds at
            // most one request per device actor with a batch in work.
            actor.do_send(PlaceRecords {
                live,
                ..PlaceRecords::new(employees, received_at, settings, reply, committed)
            });
            let decided = answer.await.map_err(|_| StoreError::Unavailable("a conflict actor stopped".into()))??;
            // On an error below, the signals collected so far drop: those employees forget.
            commit_signals.push(commit_known);
            for (position, decided) in positions.into_iter().zip(decided) {
                placed[position] = Some(decided);
            }
        }
        let placed = keys
            .into_iter()
            .zip(placed)
            .map(|(key, placed)| (key, placed.expect("every employee was sent to its actor and answered")))
            .collect();
        Ok((placed, commit_signals))
    }

    /// Settles a conflict through its employee's actor, which keeps its cache right.
    pub(crate) async fn resolve(
        &self,
        conflict: &ConflictRecord,
        decision: AdminDecision,
    ) -> Result<ConflictRecord, ResolveError> {
        let employee: EmployeeKey = (conflict.org_id.as_str().into(), conflict.employee_id.as_str().into());
        let (reply, answer) = oneshot::channel();
        self.actors[self.index_of(&employee)].do_send(ResolveConflict { employee, decision, reply });
        answer.await.map_err(|_| ResolveError::Store(StoreError::Unavailable("a conflict actor stopped".into())))?
    }

    /// The actor an employee belongs to: the same in every run.
    fn index_of(&self, (org_id, employee_id): &EmployeeKey) -> usize {
        shard_of(&(&**org_id, &**employee_id), self.actors.len())
    }
}
