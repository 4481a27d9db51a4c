//! A panic in a device or conflict actor's work, injected through a fail point, costs
//! that one batch an error (nothing of it acked) and nothing else: the actors go on,
//! the device's next batches are acked as if the failed one had never come, and the
//! panic is counted. Fail points fire only in test builds (`fail/failpoints` is a
//! dev-dependency feature); this file is its own process, and `FailScenario` runs its
//! tests one at a time.

use otg_actors::metrics::{DeviceMetrics, StoreMetrics};
use otg_actors::store::{EmbeddedStore, EmbeddedStoreOptions};
use otg_actors::{BatchOutcome, DeviceActorOptions, DeviceRegistry, Incoming, Upload};
use otg_schema::validate::{check_record, RecordRules};
use otg_schema::wire::{AckStatus, Record};
use std::sync::Arc;
use std::time::Duration;

const CHECK_IN_AT: i64 = 1_764_057_600_000;

struct Gateway {
    devices: DeviceRegistry,
    prometheus: prometheus::Registry,
    _dir: tempfile::TempDir,
}

fn start() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let prometheus = prometheus::Registry::new();
    let store =
        EmbeddedStore::open(EmbeddedStoreOptions::new(dir.path()), StoreMetrics::register(&prometheus).unwrap())
            .unwrap();
    let options = DeviceActorOptions {
        idle_timeout: Duration::from_secs(600),
        conflict_idle_timeout: Duration::from_secs(600),
        conflict_cached_employees: 1_000,
        mailbox_capacity: 4,
        arbiters: 1,
        detect_conflicts: true,
        conflict_backlog_placements: 1,
        store_retry: Default::default(),
    };
    let metrics = DeviceMetrics::register(&prometheus).unwrap();
    Gateway { devices: DeviceRegistry::start(Arc::new(store), options, metrics), prometheus, _dir: dir }
}

impl Gateway {
    /// Sends one check-in per seq as one batch, each of employee `emp-<seq>` at the same
    /// time whatever the device, and waits for its outcome.
    async fn send(&self, device_id: &str, seqs: std::ops::RangeInclusive<i64>) -> Result<BatchOutcome, String> {
        let rules = RecordRules { now_ms: CHECK_IN_AT + 86_400_000, max_offline_days: 30, enrolled_employee: None };
        let records = seqs
            .map(|seq| {
                let record_id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{device_id}/{seq}").as_bytes());
                let record_id = record_id.to_string();
                let record = Record::new(seq, &record_id, "check_in", format!("emp-{seq}"), CHECK_IN_AT);
                Incoming { seq, record_id, verdict: check_record(record, &rules) }
            })
            .collect();
        let upload = Upload {
            org_id: "acme".into(),
            batch_id: "b".into(),
            received_at: CHECK_IN_AT + 86_400_000,
            reported_pending: None,
            reported_health: None,
            records,
            settings: Default::default(),
            live: false,
        };
        let outcome = self.devices.ingest(device_id, upload).map_err(|busy| busy.to_string())?;
        outcome.await.map_err(|_| "the batch was dropped unanswered".to_owned())?.map_err(|error| error.to_string())
    }

    fn panics_of(&self, actor: &str) -> u64 {
        let families = self.prometheus.gather();
        let family = families.iter().find(|family| family.name() == "otg_actor_panics_total").unwrap();
        let metric = family.get_metric().iter().find(|metric| metric.get_label()[0].value() == actor).unwrap();
        metric.get_counter().get_value() as u64
    }
}

fn statuses(outcome: &BatchOutcome) -> Vec<AckStatus> {
    outcome.acks.iter().map(|ack| ack.status).collect()
}

#[actix_rt::test]
async fn a_panic_in_a_device_actor_costs_one_batch_and_nothing_is_acked_of_it() {
    let scenario = fail::FailScenario::setup();
    let gateway = start();
    assert_eq!(gateway.send("dev-1", 1..=2).await.unwrap().next_seq, 3);

    fail::cfg("ingest::before_commit", "1*panic(injected)").unwrap();
    let failed = gateway.send("dev-1", 3..=4).await.expect_err("the batch in hand when the actor panicked");
    assert!(failed.contains("interrupted") && failed.contains("injected"), "{failed}");
    assert_eq!(gateway.panics_of("device"), 1);

    // The same actor goes on, from what the store holds: seqs 3 and 4 were never
    // stored, so they are accepted now, and 1 and 2 are still duplicates.
    let again = gateway.send("dev-1", 1..=4).await.unwrap();
    assert_eq!(
        statuses(&again),
        [AckStatus::Duplicate, AckStatus::Duplicate, AckStatus::Accepted, AckStatus::Accepted]
    );
    assert_eq!(again.next_seq, 5);
    assert_eq!(gateway.send("dev-2", 1..=1).await.unwrap().next_seq, 2, "other devices were never touched");
    assert_eq!(gateway.devices.active(), 2, "no actor was lost or restarted");
    gateway.devices.stop();
    scenario.teardown();
}

#[actix_rt::test]
async fn a_panic_in_a_conflict_actor_costs_one_placement_and_its_employee_is_read_again() {
    let scenario = fail::FailScenario::setup();
    let gateway = start();
    assert_eq!(gateway.send("phone", 1..=1).await.unwrap().next_seq, 2);

    fail::cfg("employee_timeline::place", "1*panic(injected)").unwrap();
    let failed = gateway.send("kiosk", 1..=1).await.expect_err("the placement panicked");
    assert!(failed.contains("interrupted"), "{failed}");
    assert_eq!(gateway.panics_of("conflict"), 1);

    // The employee's timeline, dropped with the panic, is read again from the store:
    // the kiosk's check-in at the very minute of the phone's is its duplicate.
    let again = gateway.send("kiosk", 1..=1).await.unwrap();
    assert_eq!(statuses(&again), [AckStatus::Conflict], "the phone's stored check-in was seen");
    assert_eq!(gateway.send("phone", 2..=2).await.unwrap().next_seq, 3, "the employee is not held by the panic");
    gateway.devices.stop();
    scenario.teardown();
}
