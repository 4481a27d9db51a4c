//! `ConflictActor`: the keeper of the timelines of the employees whose (org, employee)
//! hashes to it. There are as many as `device_arbiters`, each on an arbiter of its own;
//! device actors place each batch's records with one request per conflict actor, not
//! one per employee.
//!
//! An employee is placed by one request at a time: a request holds its employees from
//! placement until the device says whether its commit succeeded, so an employee's
//! statuses reach the store in the order they were decided. A request that meets a
//! held employee waits (parked) and starts once all its employees are free; others go
//! on meanwhile. The cached days of an employee idle for `idle_timeout` are dropped,
//! and at most `max_employees` employees are cached at once.
//!
//! Both lanes of device actors share these actors (an employee has one keeper), so a
//! live batch's placement starts at once, while backlog placements go one at a time
//! (the rest wait, deferred, in arrival order): a check-in waits for one backlog
//! placement at most, not for every one queued ahead of it.

use crate::conflict_rules::RuleSettings;
use crate::employee_timeline::{AdminDecision, Cache, CachedTimeline, EmployeePlaced, ResolveError, ToPlace};
use crate::store::{ConflictRecord, Store, StoreError};
use crate::supervision::PanicWatch;
use actix::prelude::*;
use foldhash::fast::RandomState;
use otg_schema::{ConflictResolution, OrgSettings};
use prometheus::IntGauge;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const MS_PER_HOUR: i64 = 3_600_000;

/// What the caller of work that panicked is told: nothing of it was done, try again.
fn interrupted(panic: String) -> StoreError {
    StoreError::Unavailable(format!("the conflict actor's work was interrupted ({panic}); nothing of it was stored"))
}
/// Most often the idle employees are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// An employee: (org, employee).
pub type EmployeeKey = (Arc<str>, Arc<str>);

/// One employee's records of a device's batch, in the device's seq order.
#[derive(Debug)]
pub struct EmployeeRecords {
    pub employee: EmployeeKey,
    pub records: Vec<ToPlace>,
}

/// Place records of these employees in their timelines; the answer (what was decided
/// for each employee, in order) comes on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PlaceRecords {
    pub employees: Vec<EmployeeRecords>,
    pub received_at: i64,
    pub rules: RuleSettings,
    pub policy: ConflictResolution,
    pub reply: oneshot::Sender<Result<Vec<EmployeePlaced>, StoreError>>,
    /// Whether the device's commit of these records succeeded; until it is known the
    /// employees are held. A failed (or abandoned) commit empties their caches.
    pub committed: oneshot::Receiver<bool>,
    /// A live batch's placement: it starts without waiting for backlog placements.
    pub live: bool,
}

impl PlaceRecords {
    pub fn new(
        employees: Vec<EmployeeRecords>,
        received_at: i64,
        settings: &OrgSettings,
        reply: oneshot::Sender<Result<Vec<EmployeePlaced>, StoreError>>,
        committed: oneshot::Receiver<bool>,
    ) -> Self {
        let rules = RuleSettings {
            duplicate_window_ms: i64::from(settings.duplicate_window_s) * 1000,
            max_shift_ms: i64::from(settings.max_shift_hours) * MS_PER_HOUR,
            max_clock_skew_ms: i64::from(settings.max_clock_skew_s) * 1000,
        };
        PlaceRecords {
            employees,
            received_at,
            rules,
            policy: settings.conflict_resolution,
            reply,
            committed,
            live: false,
        }
    }
}

/// Settle a conflict of this employee as an administrator decided; the answer comes
/// on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResolveConflict {
    pub employee: EmployeeKey,
    pub decision: AdminDecision,
    pub reply: oneshot::Sender<Result<ConflictRecord, ResolveError>>,
}

/// What a conflict actor needs to start.
#[derive(Clone)]
pub(crate) struct ConflictActorOptions {
    pub store: Arc<dyn Store>,
    pub idle_timeout: Duration,
    pub max_employees: usize,
    /// Backlog placements that may run at once (a live one always starts at once).
    pub backlog_placements: usize,
    /// Employees cached and requests waiting, all conflict actors together.
    pub cached: IntGauge,
    pub waiting: IntGauge,
    pub panic_watch: PanicWatch,
}

pub struct ConflictActor {
    options: ConflictActorOptions,
    employees: HashMap<EmployeeKey, Employee, RandomState>,
    /// Requests waiting for a held employee, in arrival order.
    parked: VecDeque<Work>,
    /// Backlog placements waiting for a running one to end, in arrival order.
    deferred: VecDeque<PlaceRecords>,
    /// Backlog placements running.
    placing_backlog: usize,
}

struct Employee {
    /// Empty while a request has the timeline out.
    cache: Cache,
    held: bool,
    last_used: Instant,
}

enum Work {
    Place(PlaceRecords),
    Resolve(ResolveConflict),
}

impl Work {
    fn employees(&self) -> impl Iterator<Item = &EmployeeKey> {
        let (placing, resolving) = match self {
            Work::Place(place) => (Some(&place.employees), None),
            Work::Resolve(resolve) => (None, Some(&resolve.employee)),
        };
        placing.into_iter().flatten().map(|employee| &employee.employee).chain(resolving)
    }
}

impl ConflictActor {
    pub(crate) fn new(options: ConflictActorOptions) -> Self {
        // At least one, or a backlog placement would never start.
        let backlog_placements = options.backlog_placements.max(1);
        ConflictActor {
            options: ConflictActorOptions { backlog_placements, ..options },
            employees: HashMap::default(),
            parked: VecDeque::new(),
            deferred: VecDeque::new(),
            placing_backlog: 0,
        }
    }

    /// Starts `work` now if none of its employees is held or wanted by a request parked
    /// before it (so a request for several employees is not overtaken for ever by
    /// requests for one of them), else parks it; a backlog placement is deferred while
    /// another one runs.
    fn submit(&mut self, work: Work, ctx: &mut Context<Self>) {
        let held = |employee: &EmployeeKey| self.employees.get(employee).is_some_and(|employee| employee.held);
        let wanted =
            |employee: &EmployeeKey| self.parked.iter().any(|parked| parked.employees().any(|other| other == employee));
        if work.employees().any(|employee| held(employee) || wanted(employee)) {
            self.parked.push_back(work);
            self.options.waiting.inc();
            return;
        }
        match work {
            Work::Place(place) if !place.live && self.placing_backlog >= self.options.backlog_placements => {
                self.deferred.push_back(place);
                self.options.waiting.inc();
            }
            Work::Place(place) => self.place(place, ctx),
            Work::Resolve(resolve) => self.resolve(resolve, ctx),
        }
    }

    /// Starts deferred backlog placements until one runs or none is left.
    fn start_deferred(&mut self, ctx: &mut Context<Self>) {
        while self.placing_backlog < self.options.backlog_placements {
            let Some(next) = self.deferred.pop_front() else { return };
            self.options.waiting.dec();
            self.submit(Work::Place(next), ctx);
        }
    }

    fn place(&mut self, place: PlaceRecords, ctx: &mut Context<Self>) {
        let PlaceRecords { employees, received_at, rules, policy, reply, committed, live } = place;
        self.placing_backlog += usize::from(!live);
        let keys: Vec<EmployeeKey> = employees.iter().map(|employee| employee.employee.clone()).collect();
        let mut timelines: Vec<CachedTimeline> = keys.iter().map(|key| self.take(key)).collect();
        // The employees' timelines are apart, so they are placed at once: a store
        // across the network (ScyllaDB) reads all their days in one round of requests,
        // not one employee after another. An error means the device will not commit:
        // its dropped signal empties the caches.
        let placing = async move {
            let placing = timelines
                .iter_mut()
                .zip(employees)
                .map(|(timeline, employee)| timeline.place(employee.records, received_at, rules, policy));
            let placed = futures_util::future::join_all(placing).await.into_iter().collect();
            (placed, timelines)
        };
        // A panic while placing loses the timelines taken out: those employees' caches
        // stay empty and are read again, and the device gets an error, so it commits
        // nothing (its dropped commit signal frees the employees).
        let placing = self.options.panic_watch.clone().run("placing records", placing);
        ctx.spawn(placing.into_actor(self).map(move |outcome, actor, ctx| {
            let (placed, timelines) = outcome.unwrap_or_else(|panic| (Err(interrupted(panic)), Vec::new()));
            actor.give_back(timelines);
            let _ = reply.send(placed);
            if !live {
                // Through the mailbox, not at once: work spawned now would be polled
                // before the live placements already waiting to be.
                ctx.address().do_send(BacklogPlaced);
            }
            let commit_known = async move { committed.await.unwrap_or(false) };
            ctx.spawn(
                commit_known.into_actor(actor).map(move |committed, actor, ctx| actor.release(&keys, committed, ctx)),
            );
        }));
    }

    fn resolve(&mut self, resolve: ResolveConflict, ctx: &mut Context<Self>) {
        let ResolveConflict { employee, decision, reply } = resolve;
        let mut timeline = self.take(&employee);
        let resolving = async move {
            let resolved = timeline.resolve(decision).await;
            (resolved, timeline)
        };
        let resolving = self.options.panic_watch.clone().run("resolving a conflict", resolving);
        ctx.spawn(resolving.into_actor(self).map(move |outcome, actor, ctx| {
            let committed = matches!(outcome, Ok((Ok(_), _)));
            let (resolved, timelines) = match outcome {
                Ok((resolved, timeline)) => (resolved, vec![timeline]),
                Err(panic) => (Err(ResolveError::Store(interrupted(panic))), Vec::new()),
            };
            actor.give_back(timelines);
            let _ = reply.send(resolved);
            actor.release(&[employee], committed, ctx);
        }));
    }

    /// Holds an employee and takes its timeline out for a request.
    fn take(&mut self, key: &EmployeeKey) -> CachedTimeline {
        if !self.employees.contains_key(key) && self.employees.len() >= self.options.max_employees {
            self.evict_oldest();
        }
        let employee = self.employees.entry(key.clone()).or_insert_with(|| {
            self.options.cached.inc();
            Employee { cache: Cache::default(), held: false, last_used: Instant::now() }
        });
        employee.held = true;
        employee.last_used = Instant::now();
        employee.cache.trim();
        CachedTimeline {
            cache: std::mem::take(&mut employee.cache),
            store: self.options.store.clone(),
            org_id: key.0.clone(),
            employee_id: key.1.clone(),
        }
    }

    /// Puts timelines back, still held.
    fn give_back(&mut self, timelines: Vec<CachedTimeline>) {
        for timeline in timelines {
            if let Some(employee) = self.employees.get_mut(&(timeline.org_id, timeline.employee_id)) {
                employee.cache = timeline.cache;
            }
        }
    }

    /// Frees a request's employees (a commit that succeeded advanced each one's
    /// timeline version; one that failed makes them forget what they cached) and starts
    /// the parked requests that can go now.
    fn release(&mut self, keys: &[EmployeeKey], committed: bool, ctx: &mut Context<Self>) {
        for key in keys {
            if let Some(employee) = self.employees.get_mut(key) {
                employee.held = false;
                employee.last_used = Instant::now();
                if committed {
                    employee.cache.committed();
                } else {
                    employee.cache = Cache::default();
                }
            }
        }
        let parked = std::mem::take(&mut self.parked);
        self.options.waiting.sub(parked.len() as i64);
        for work in parked {
            self.submit(work, ctx);
        }
    }

    /// Drops the employees idle for the idle timeout.
    fn sweep(&mut self) {
        let idle_timeout = self.options.idle_timeout;
        let before = self.employees.len();
        self.employees.retain(|_, employee| employee.held || employee.last_used.elapsed() < idle_timeout);
        self.options.cached.sub((before - self.employees.len()) as i64);
    }

    /// Makes room at the cap: drops the tenth of the employees least recently used
    /// (held ones stay), so the cost of finding them is spread over many insertions.
    fn evict_oldest(&mut self) {
        let mut idle: Vec<Instant> =
            self.employees.values().filter(|employee| !employee.held).map(|employee| employee.last_used).collect();
        if idle.is_empty() {
            return;
        }
        let evict = (self.options.max_employees / 10).clamp(1, idle.len());
        let (_, &mut cutoff, _) = idle.select_nth_unstable(evict - 1);
        let before = self.employees.len();
        self.employees.retain(|_, employee| employee.held || employee.last_used > cutoff);
        self.options.cached.sub((before - self.employees.len()) as i64);
    }
}

impl Actor for ConflictActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_EVERY.min(self.options.idle_timeout / 2), |actor, _ctx| actor.sweep());
    }
}

impl Handler<PlaceRecords> for ConflictActor {
    type Result = ();

    fn handle(&mut self, place: PlaceRecords, ctx: &mut Self::Context) {
        self.submit(Work::Place(place), ctx);
    }
}

/// The running backlog placement has answered: the next deferred one may start.
#[derive(Message)]
#[rtype(result = "()")]
struct BacklogPlaced;

impl Handler<BacklogPlaced> for ConflictActor {
    type Result = ();

    fn handle(&mut self, _: BacklogPlaced, ctx: &mut Self::Context) {
        self.placing_backlog -= 1;
        self.start_deferred(ctx);
    }
}

impl Handler<ResolveConflict> for ConflictActor {
    type Result = ();

    fn handle(&mut self, resolve: ResolveConflict, ctx: &mut Self::Context) {
        self.submit(Work::Resolve(resolve), ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::StoreMetrics;
    use crate::store::{EmbeddedStore, EmbeddedStoreOptions, RecordStatus, TimelineEntry};
    use otg_schema::RecordKind;

    const CHECK_IN_AT: i64 = 1_764_057_600_000;

    fn store(dir: &tempfile::TempDir) -> EmbeddedStore {
        EmbeddedStore::open(
            EmbeddedStoreOptions::new(dir.path()),
            StoreMetrics::register(&prometheus::Registry::new()).unwrap(),
        )
        .unwrap()
    }

    /// A conflict actor on `store`, and its gauge of employees cached.
    fn actor(store: EmbeddedStore, max_employees: usize) -> (Addr<ConflictActor>, IntGauge) {
        let cached = IntGauge::new("cached", "cached").unwrap();
        let options = ConflictActorOptions {
            store: Arc::new(store),
            idle_timeout: Duration::from_secs(60),
            max_employees,
            backlog_placements: 1,
            cached: cached.clone(),
            waiting: IntGauge::new("waiting", "waiting").unwrap(),
            panic_watch: PanicWatch {
                kind: crate::supervision::ActorKind::Conflict,
                panics: prometheus::IntCounterVec::new(prometheus::Opts::new("panics", "panics"), &["actor"]).unwrap(),
            },
        };
        (ConflictActor::new(options).start(), cached)
    }

    fn check_in(device_id: &str, employee_id: &str, at: i64) -> EmployeeRecords {
        let entry = TimelineEntry {
            org_id: "acme".into(),
            employee_id: employee_id.into(),
            recorded_at: at,
            device_id: device_id.into(),
            seq: 1,
            record_id: uuid::Uuid::new_v4().to_string().into(),
            kind: RecordKind::CheckIn,
            leave: None,
            status: RecordStatus::Pending,
        };
        EmployeeRecords {
            employee: ("acme".into(), employee_id.into()),
            records: vec![ToPlace { entry, evaluate_now: true }],
        }
    }

    /// Where a placement's answer comes: each employee's placed records, or the store's error.
    type PlacementAnswer = oneshot::Receiver<Result<Vec<EmployeePlaced>, StoreError>>;

    /// Sends a placement; returns where its answer comes and the sender of its commit's outcome.
    fn place(actor: &Addr<ConflictActor>, employees: Vec<EmployeeRecords>) -> (PlacementAnswer, oneshot::Sender<bool>) {
        let ((reply, answer), (commit_known, committed)) = (oneshot::channel(), oneshot::channel());
        actor.do_send(PlaceRecords::new(employees, CHECK_IN_AT + 60_000, &OrgSettings::default(), reply, committed));
        (answer, commit_known)
    }

    fn conflicts(placed: Vec<EmployeePlaced>) -> usize {
        placed.iter().flat_map(|employee| &employee.placed).map(|placed| placed.conflicts.len()).sum()
    }

    /// Each answer is awaited by a task of its own, parked before anything is sent, so
    /// the tasks wake, and note their answer, in the order the actor answers.
    #[actix_rt::test]
    async fn a_live_placement_is_not_queued_behind_backlog_placements() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, _) = actor(store(&dir), 100);
        let answered = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let (mut watchers, mut requests) = (Vec::new(), Vec::new());
        // Sent in this order; actix polls spawned work in no fixed order, and with every
        // placement started at once this one answers the live placement last.
        for (name, live) in [("b1", false), ("live", true), ("b2", false), ("b3", false), ("b4", false)] {
            let ((reply, answer), (commit_known, committed)) = (oneshot::channel(), oneshot::channel());
            let records = vec![check_in("dev", name, CHECK_IN_AT)];
            requests.push((
                PlaceRecords {
                    live,
                    ..PlaceRecords::new(records, CHECK_IN_AT + 60_000, &OrgSettings::default(), reply, committed)
                },
                commit_known,
            ));
            let answered = answered.clone();
            watchers.push(actix_rt::spawn(async move {
                answer.await.unwrap().unwrap();
                answered.borrow_mut().push(name);
            }));
        }
        tokio::task::yield_now().await;
        let mut commits = Vec::new();
        for (request, commit_known) in requests {
            actor.do_send(request);
            commits.push(commit_known);
        }
        for watcher in watchers {
            watcher.await.unwrap();
        }
        let answered = answered.borrow();
        assert_eq!(answered.len(), 5, "the deferred backlog placements ran too: {answered:?}");
        assert!(
            answered.iter().position(|name| *name == "live") < Some(2),
            "the live placement went before the queued backlog: {answered:?}"
        );
    }

    #[actix_rt::test]
    async fn a_held_employee_waits_for_the_commit_before_it_and_sees_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, _) = actor(store(&dir), 100);
        let (first, first_committed) = place(&actor, vec![check_in("phone", "emp-1", CHECK_IN_AT)]);
        assert_eq!(conflicts(first.await.unwrap().unwrap()), 0);
        let (second, second_committed) = place(&actor, vec![check_in("kiosk", "emp-1", CHECK_IN_AT + 30_000)]);
        let (mut second, other) = (Box::pin(second), place(&actor, vec![check_in("kiosk", "emp-2", CHECK_IN_AT)]));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut second).await.is_err(),
            "emp-1 is held until the first commit is known"
        );
        assert_eq!(conflicts(other.0.await.unwrap().unwrap()), 0, "another employee goes on meanwhile");
        first_committed.send(true).unwrap();
        assert_eq!(
            conflicts(second.await.unwrap().unwrap()),
            1,
            "the second check-in 30 s later is a duplicate of the first"
        );
        drop((second_committed, other.1));
    }

    #[actix_rt::test]
    async fn a_request_for_several_employees_is_not_overtaken() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, _) = actor(store(&dir), 100);
        let (first, first_committed) = place(&actor, vec![check_in("phone", "emp-1", CHECK_IN_AT)]);
        first.await.unwrap().unwrap();
        let (both, both_committed) = place(
            &actor,
            vec![check_in("kiosk", "emp-1", CHECK_IN_AT + 60_000), check_in("kiosk", "emp-2", CHECK_IN_AT)],
        );
        let (later, _later_committed) = place(&actor, vec![check_in("tablet", "emp-2", CHECK_IN_AT + 30_000)]);
        let mut later = Box::pin(later);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut later).await.is_err(),
            "emp-2 is wanted by the request parked before"
        );
        first_committed.send(true).unwrap();
        both.await.unwrap().unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(200), &mut later).await.is_err(), "and then held by it");
        both_committed.send(true).unwrap();
        assert_eq!(conflicts(later.await.unwrap().unwrap()), 1, "it goes last, and sees the kiosk's check-in");
    }

    #[actix_rt::test]
    async fn a_leave_superseded_in_a_day_is_superseded_in_every_day_it_covers() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let day = |n: i32| otg_schema::UtcDay(otg_schema::UtcDay::of_unix_ms(CHECK_IN_AT).0 + n);
        let EmployeeRecords { records: mut leave, .. } = check_in("phone", "emp-1", day(0).start_unix_ms());
        leave[0].entry.kind = RecordKind::LeaveRequest;
        leave[0].entry.leave = Some((day(1), day(5)));
        leave[0].entry.status = RecordStatus::Active;
        let leave = leave[0].entry.clone();
        store.commit(&crate::store::Commit { timeline: vec![leave], ..Default::default() }).await.unwrap();
        let (actor, _) = actor(store, 100);

        // Device wins: a check-in on day 3 supersedes the leave; a check-in on day 5 then
        // finds no leave standing, though day 5 was not read for the first.
        let mut records = check_in("kiosk", "emp-1", day(3).start_unix_ms() + 12 * 3_600_000);
        records.records.extend(check_in("kiosk", "emp-1", day(5).start_unix_ms() + 12 * 3_600_000).records);
        records.records[1].entry.seq = 2;
        let settings = OrgSettings { conflict_resolution: ConflictResolution::DeviceWins, ..OrgSettings::default() };
        let ((reply, answer), (_commit_known, committed)) = (oneshot::channel(), oneshot::channel());
        actor.do_send(PlaceRecords::new(vec![records], day(6).start_unix_ms(), &settings, reply, committed));
        let placed = answer.await.unwrap().unwrap().remove(0).placed;
        assert_eq!(placed[0].conflicts.len(), 1, "the day-3 check-in overlaps the leave");
        assert_eq!(placed[0].superseded.len(), 1);
        assert!(placed[1].conflicts.is_empty(), "the leave no longer stands on day 5: {:?}", placed[1].conflicts);
    }

    /// A kiosk's backlog walks back a day a batch; the cache asks the store for many days
    /// ahead of the walk at once, and must still find every record stored in them.
    #[actix_rt::test]
    async fn a_backlog_walking_back_finds_every_record_stored_ahead_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let day_start = |n: i64| CHECK_IN_AT - n * 86_400_000;
        // The phone checked in every other day going back: more days than the cache
        // reads ahead of a walk at once.
        let phone_days: Vec<i64> = (1..=20).map(|n| 2 * n).collect();
        let timeline = phone_days.iter().map(|n| check_in("phone", "emp-1", day_start(*n)).records.remove(0).entry);
        let timeline =
            timeline.map(|entry| TimelineEntry { status: RecordStatus::Active, ..entry }).collect::<Vec<_>>();
        store.commit(&crate::store::Commit { timeline, ..Default::default() }).await.unwrap();
        let (actor, _) = actor(store, 100);

        let mut found = Vec::new();
        for n in 0..=45 {
            let (answer, committed) = place(&actor, vec![check_in("kiosk", "emp-1", day_start(n) + 30_000)]);
            if conflicts(answer.await.unwrap().unwrap()) > 0 {
                found.push(n);
            }
            committed.send(true).unwrap();
            tokio::task::yield_now().await;
        }
        assert_eq!(found, phone_days, "the days the kiosk's check-in duplicates the phone's");
    }

    #[actix_rt::test]
    async fn a_failed_commit_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, _) = actor(store(&dir), 100);
        let (first, first_committed) = place(&actor, vec![check_in("phone", "emp-1", CHECK_IN_AT)]);
        first.await.unwrap().unwrap();
        drop(first_committed);
        let (second, _committed) = place(&actor, vec![check_in("kiosk", "emp-1", CHECK_IN_AT + 30_000)]);
        assert_eq!(conflicts(second.await.unwrap().unwrap()), 0, "the first check-in was never stored");
    }

    #[actix_rt::test]
    async fn at_most_the_cap_of_employees_stays_cached() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, cached) = actor(store(&dir), 10);
        for employee in 0..25 {
            let (answer, committed) = place(&actor, vec![check_in("kiosk", &format!("emp-{employee}"), CHECK_IN_AT)]);
            answer.await.unwrap().unwrap();
            committed.send(true).unwrap();
            // The commit's outcome reaches the actor before the next request.
            tokio::task::yield_now().await;
        }
        assert!(cached.get() <= 10, "{} employees cached", cached.get());
        assert!(cached.get() >= 9, "only the least recently used ones went: {}", cached.get());
    }
}
