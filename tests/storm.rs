//! The load tester's storm scenarios, small, against the real gateway: a few hundred
//! devices reconnect at once with their backlog while live check-ins go on (and, in
//! the crash scenario, the gateway is killed with -9 and restarted mid-storm). Each
//! must end with every record acked exactly once and stored exactly once. On the CQL
//! cluster, a fleet of three gateways with every request routed at random, one of them
//! killed with -9 and restarted mid-storm.

mod support;

use clap::Parser;
use otg_loadtest::Options;
use support::ScyllaKeyspace;

fn storm(scenario: &[&str]) -> otg_loadtest::report::Report {
    let out = tempfile::tempdir().unwrap();
    let gateway = env!("CARGO_BIN_EXE_otg-gateway");
    let mut arguments = vec!["otg-loadtest"];
    arguments.extend_from_slice(scenario);
    arguments.extend_from_slice(&["--gateway-bin", gateway, "--out", out.path().to_str().unwrap(), "--quiet"]);
    // A small in-flight budget, so that even a few hundred devices overflow it.
    arguments.extend_from_slice(&["--gateway-env", "OTG_MAX_IN_FLIGHT_RECORDS=2000"]);
    let options = Options::try_parse_from(arguments).unwrap();
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(otg_loadtest::run(options))
        .unwrap();
    for file in ["report.json", "report.md", "report.svg"] {
        assert!(out.path().join(file).metadata().unwrap().len() > 0, "{file} written");
    }
    report
}

fn assert_nothing_lost_nothing_twice(report: &otg_loadtest::report::Report, backlog: u64) {
    let check = &report.verification;
    assert!(check.ok, "{}", report.markdown());
    assert_eq!((check.acks.never_acked, check.acks.acked_more_than_once, check.next_seq_mismatches), (0, 0, 0));
    assert_eq!(check.stored, check.acks.records, "stored exactly once");
    assert_eq!(report.storm.as_ref().unwrap().backlog_records, backlog);
    assert!(check.acks.records > backlog, "the backlog and the live check-ins");
    assert!(report.live.batches > 0);
}

#[test]
fn an_outage_of_300_devices_loses_nothing_and_stores_nothing_twice() {
    let report = storm(&[
        "outage",
        "--devices",
        "300",
        "--records-per-device",
        "40",
        "--steady-seconds",
        "2",
        "--steady-devices",
        "8",
        "--outage-seconds",
        "1",
        "--reconnect-window",
        "2",
        "--live-devices",
        "4",
        "--live-interval-ms",
        "200",
    ]);
    assert_nothing_lost_nothing_twice(&report, 12_000);
    assert!(report.steady_records_per_s.unwrap() > 0.0);
}

#[test]
fn a_gateway_killed_mid_storm_loses_nothing_and_stores_nothing_twice() {
    let report = storm(&[
        "crash",
        "--devices",
        "300",
        "--records-per-device",
        "60",
        "--steady-seconds",
        "0",
        "--outage-seconds",
        "1",
        "--reconnect-window",
        "3",
        "--kill-after",
        "2",
        "--live-devices",
        "4",
        "--live-interval-ms",
        "200",
    ]);
    assert_nothing_lost_nothing_twice(&report, 18_000);
}

#[test]
fn three_gateways_with_random_routing_and_one_killed_lose_nothing_and_store_nothing_twice() {
    let Some(keyspace) = ScyllaKeyspace::create() else { return };
    let mut arguments = vec!["crash", "--gateways", "3", "--routing", "random", "--kill-after", "2"];
    let settings: Vec<String> = keyspace.settings().iter().map(|(name, value)| format!("{name}={value}")).collect();
    for setting in &settings {
        arguments.extend_from_slice(&["--gateway-env", setting]);
    }
    arguments.extend_from_slice(&[
        "--devices",
        "150",
        "--records-per-device",
        "40",
        "--steady-seconds",
        "0",
        "--outage-seconds",
        "1",
        "--reconnect-window",
        "3",
        "--live-devices",
        "4",
        "--live-interval-ms",
        "250",
    ]);
    let report = storm(&arguments);
    assert_nothing_lost_nothing_twice(&report, 6_000);
    assert_eq!(report.gateways, 3);
    // The live kiosks' batches reached several gateways, so devices were claimed more
    // than once; the fleet's figures are summed from every gateway's /metrics.
    assert!(report.ownership.claimed > 154, "{:?}", report.ownership);
}
