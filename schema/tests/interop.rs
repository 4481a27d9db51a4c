//! Decodes MessagePack written by Python's `msgpack` package (fixtures/make_fixtures.py):
//! the bytes real device libraries produce, not bytes this crate wrote itself.

use otg_schema::wire::{decode, encode, Batch, Network};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}.msgpack", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).unwrap()
}

#[test]
fn the_protocol_test_vector_decodes() {
    let batch: Batch = decode(&fixture("protocol_vector")).unwrap();
    assert_eq!(batch.device_id, "dev-123");
    assert_eq!(batch.batch_id, "b-0001");
    assert_eq!(batch.sent_at, 1_764_072_000_000);
    let record = &batch.records[0];
    assert_eq!((record.seq, record.kind.as_str(), record.employee_id.as_str()), (1, "check_in", "emp-9"));
    assert_eq!(record.recorded_at, 1_764_057_600_000);
    let geo = record.geo.unwrap();
    assert_eq!((geo.lat, geo.lon, geo.accuracy_m), (52.52, 13.405, 8.5));
}

#[test]
fn every_field_single_floats_and_unknown_keys() {
    let batch: Batch = decode(&fixture("every_field")).unwrap();
    assert_eq!(batch.pending, Some(41));
    assert_eq!(batch.network, Some(Network::Cellular));
    let check_in = &batch.records[0];
    assert_eq!(check_in.uptime_ms, Some(123_456));
    assert_eq!(check_in.offline, Some(false));
    assert!((check_in.face.unwrap().score - 0.93).abs() < 1e-6, "float32 widens to f64");
    assert!(check_in.face.unwrap().matched);
    assert_eq!(check_in.qr.as_deref(), Some("SITE-7/GATE-2"));
    assert_eq!(check_in.note.as_deref(), Some("north gate"));
    let leave = batch.records[1].leave.as_ref().unwrap();
    assert_eq!((leave.from.as_str(), leave.to.as_str(), leave.reason.as_deref()), ("2025-12-01", "2025-12-03", None));
}

#[test]
fn nil_optionals_and_unknown_network_names() {
    let batch: Batch = decode(&fixture("nil_optionals")).unwrap();
    assert_eq!(batch.pending, None);
    assert_eq!(batch.network, Some(Network::Other));
    let record = &batch.records[0];
    assert!(record.geo.is_none() && record.face.is_none() && record.offline.is_none());
}

#[test]
fn a_mistyped_required_key_names_its_path() {
    let error = decode::<Batch>(&fixture("mistyped_seq")).unwrap_err();
    assert!(error.0.starts_with("records[0].seq:"), "{error}");
}

#[test]
fn garbage_and_trailing_bytes_are_refused() {
    assert!(decode::<Batch>(b"\xc1").is_err());
    let mut bytes = fixture("protocol_vector");
    bytes.push(0xc0);
    assert!(decode::<Batch>(&bytes).is_err());
    assert!(decode::<Batch>(&bytes[..100]).is_err());
}

#[test]
fn what_we_encode_decodes_to_the_same_batch() {
    let batch: Batch = decode(&fixture("every_field")).unwrap();
    assert_eq!(decode::<Batch>(&encode(&batch)).unwrap(), batch);
}
