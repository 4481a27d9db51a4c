//! Writes the hand-made seeds into the corpora, before fuzzing grows and `cargo fuzz
//! cmin` minimises them: `cargo test -p otg-fuzz --test seeds -- --ignored`.
//! Batches come from the interop fixtures (MessagePack written by Python), the live log
//! from the embedded store's own writer, the rest from the documented examples.

use otg_actors::store::conformance::commit_one_record;
use otg_schema::wire::{self, Batch, Geo, Leave, Record};
use otg_schema::DeviceSecret;
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn seed(target: &str, name: &str, data: &[u8]) {
    std::fs::write(corpus(target).join(format!("seed-{name}")), data).unwrap();
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/tests/fixtures").join(format!("{name}.msgpack"));
    std::fs::read(path).unwrap()
}

const FIXTURES: [&str; 4] = ["protocol_vector", "every_field", "nil_optionals", "mistyped_seq"];
/// The PROTOCOL.md test vector's secret: the bytes 0 to 31.
const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

#[test]
#[ignore = "writes into fuzz/corpus; run by hand before fuzzing"]
fn write_seeds() {
    for name in FIXTURES {
        seed("batch", name, &fixture(name));
    }
    seed("batch", "leave_and_geo", &wire::encode(&leave_and_geo_batch()));

    let secret = DeviceSecret::from_base64(SECRET).unwrap();
    for (name, method, path, body) in [
        ("upload", "POST", "/v1/sync/batches", fixture("protocol_vector")),
        ("config", "GET", "/v1/sync/config", Vec::new()),
    ] {
        let request_time = "1764072000123";
        let signature = secret.sign(method, path, request_time, &body);
        let mut data = secret.0.to_vec();
        data.extend_from_slice(format!("{method}\n{path}\n{request_time}\n{signature}\n").as_bytes());
        data.extend_from_slice(&body);
        seed("signature", name, &data);
    }
    seed("signature", "secret_base64", format!("{:32}{SECRET}", "").as_bytes());

    let segment = live_log_segment();
    for (layout, name) in [(0u8, "as_written"), (1, "checksums_repaired"), (3, "split_in_two")] {
        let mut data = vec![layout];
        if layout & 2 != 0 {
            data.extend_from_slice(&(segment.len() as u16 / 2).to_le_bytes());
        }
        data.extend_from_slice(&segment);
        seed("live_log", name, &data);
    }
    let torn = [&[0u8][..], &segment, &[40, 0, 0, 0, 1, 2, 3, 4, 10, 0]].concat();
    seed("live_log", "torn_at_the_end", &torn);

    for (name, body) in [
        ("settings_readme", r#"{"conflict_resolution": "manual", "max_offline_days": 14}"#.to_owned()),
        ("settings_all", serde_json::to_string(&otg_schema::OrgSettings::default()).unwrap()),
        ("enrol", r#"{"device_id": "dev-123", "org_id": "acme", "employee_id": "emp-9"}"#.to_owned()),
        ("enrol_kiosk", r#"{"device_id": "kiosk-1", "org_id": "acme", "employee_id": null}"#.to_owned()),
        ("resolve", r#"{"resolution": "keep_both", "note": "both were on site"}"#.to_owned()),
    ] {
        seed("admin_body", name, body.as_bytes());
    }
    for (name, query) in [
        ("conflicts", "org_id=acme&status=open&limit=10&cursor=AAECAwQ"),
        ("sync_status", "org_id=acme&limit=500"),
        ("sync_stats", "org_id=acme&window=24h"),
        ("audit", "device_id=dev-123&since=0&until=1764072000000"),
        ("attendance", "org_id=acme&day=2025-11-25"),
    ] {
        seed("admin_query", name, query.as_bytes());
    }
}

fn leave_and_geo_batch() -> Batch {
    let at = otg_fuzz::NOW_MS - 3_600_000;
    let check_in = Record {
        geo: Some(Geo { lat: 52.52, lon: 13.405, accuracy_m: 8.0 }),
        qr: Some("site-7".into()),
        ..Record::new(1, "7f8c2a8e-3c1d-4b7e-9a51-2f0d6c1e4b9a", "check_in", "emp-9", at)
    };
    let leave = Leave { from: "2025-12-01".into(), to: "2025-12-03".into(), leave_type: "sick".into(), reason: None };
    let leave_request = Record {
        leave: Some(leave),
        ..Record::new(2, "0b7e5f0c-1d2e-4f3a-8b9c-0d1e2f3a4b5c", "leave_request", "emp-9", at + 1)
    };
    Batch {
        pending: Some(0),
        app_version: Some("4.2.0".into()),
        ..Batch::new("dev-1", "b-0001", otg_fuzz::NOW_MS, vec![check_in, leave_request])
    }
}

/// A live log segment as the embedded store writes it: two live commits.
fn live_log_segment() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = otg_fuzz::open_store(dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        commit_one_record(&store, "dev-a").await;
        commit_one_record(&store, "dev-b").await;
    });
    otg_fuzz::close(store);
    let segments: Vec<PathBuf> =
        std::fs::read_dir(dir.path().join("live-log")).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(segments.len(), 1, "one segment: {segments:?}");
    let segment = std::fs::read(&segments[0]).unwrap();
    assert!(segment.len() > 16, "the live commits went through the live log");
    segment
}
