//! A device commit cut between any two of its writes, on both stores: nothing of it is
//! seen before its commit point, all of it once after, and the retry completes it
//! (`conformance::commits_cut_between_any_two_writes`). The cut is the fail point
//! `store::write`, which fires in test builds only and is process-wide: this file is a
//! process of its own, and runs the two stores one after the other in one test.

use otg_actors::metrics::StoreMetrics;
use otg_actors::store::conformance::commits_cut_between_any_two_writes;
use otg_actors::store::ScyllaStoreOptions;
use otg_actors::store::{migrate_scylla, EmbeddedStore, EmbeddedStoreOptions, Replication, ScyllaStore};

#[actix_rt::test]
async fn a_commit_cut_between_any_two_writes_is_seen_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = StoreMetrics::register(&prometheus::Registry::new()).unwrap();
    let embedded = EmbeddedStore::open(EmbeddedStoreOptions::new(dir.path()), metrics).unwrap();
    // One atomic write: its rows are never seen without their commit.
    assert_eq!(commits_cut_between_any_two_writes(&embedded, true).await, 1);

    let Ok(nodes) = std::env::var("OTG_SCYLLA_NODES") else {
        assert!(std::env::var_os("CI").is_none(), "CI runs scripts/test, which starts a cluster");
        eprintln!("OTG_SCYLLA_NODES is not set: the CQL store's half skipped (scripts/test starts a cluster)");
        return;
    };
    let nodes: Vec<String> = nodes.split(',').map(str::to_string).collect();
    let replication = Replication::Simple(nodes.len().min(3) as u32);
    let options = ScyllaStoreOptions::new(nodes, "otg_cut_tests");
    migrate_scylla(&options, &replication).await.expect("migrate the test keyspace");
    let cluster = ScyllaStore::open(&options).await.expect("open the store");
    // Its timeline rows are written before the commit point and are still read when
    // the commit never happens (docs/scylla.md, "What a cut commit leaves in the
    // timeline"), so they are checked once the commit is sent again, not before.
    let writes = commits_cut_between_any_two_writes(&cluster, false).await;
    eprintln!("the CQL commit was cut at {writes} places");
    assert!(writes >= 10, "conflicts, rows, the version, the progress, the tail: cut at {writes} places");
}
