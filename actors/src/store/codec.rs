//! How both stores encode the values they keep.
//!
//! Stored values are MessagePack arrays (struct fields by position): half the bytes of
//! named maps on the hottest path. The rule that keeps them readable across releases,
//! in both directions, as a rolling deploy needs: **a stored struct only ever gains
//! fields, at its end, each `#[serde(default)]`; no field is removed, reordered or
//! retyped, and no enum variant is removed or reordered.** A value of an older release
//! then reads with the new fields' defaults, and a value of a newer release reads with
//! the fields this release does not know skipped (`tolerant`). `tests/fixtures/stored/`
//! holds values of each layout, and `tests` below reads them.

use super::tolerant::Tolerant;
use super::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("stored types always encode")
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    T::deserialize(Tolerant(&mut deserializer)).map_err(|error| StoreError::Corrupt(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConflictRecord, DeviceProgress, SeqEntry, TimelineEntry};
    use std::path::PathBuf;

    /// A value of a layout, as a fixture file keeps it.
    fn fixture(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stored").join(name);
        std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    /// Values written before this release added `DeviceProgress::last_commit`, and
    /// values a newer release wrote with fields appended to every struct (at every
    /// level: the progress, its health, a stored record and the record inside it, a
    /// timeline entry, a conflict and its record references), read by this one.
    #[test]
    fn values_of_older_and_newer_layouts_read() {
        let older: DeviceProgress = decode(&fixture("progress_before_last_commit.msgpack")).unwrap();
        assert_eq!(older.last_commit, None, "an older value gets the default");
        assert_eq!(older.received.next_seq(), 3);
        assert_eq!(older.health.app_version.as_deref(), Some("2.4.1"));

        let newer_bytes = fixture("progress_with_appended_fields.msgpack");
        assert!(
            rmp_serde::from_slice::<DeviceProgress>(&newer_bytes).is_err(),
            "a reader that is not tolerant refuses it: the fixture has fields this release does not know"
        );
        let newer: DeviceProgress = decode(&newer_bytes).unwrap();
        assert_eq!(newer.received.next_seq(), 3, "the fields this release knows are read");
        assert_eq!(newer.health.app_version.as_deref(), Some("2.4.1"), "a nested struct's too");
        assert!(newer.last_commit.is_some());

        let SeqEntry::Stored(stored) = decode::<SeqEntry>(&fixture("seq_with_appended_fields.msgpack")).unwrap() else {
            panic!("a stored record")
        };
        assert_eq!((stored.record.seq, stored.record.employee_id.as_str()), (7, "emp-9"));
        assert!(stored.record.geo.is_some(), "an optional struct inside, with a field appended to it too");

        let entry: TimelineEntry = decode(&fixture("timeline_with_appended_fields.msgpack")).unwrap();
        assert_eq!((&*entry.employee_id, entry.seq), ("emp-9", 7));

        let conflict: ConflictRecord = decode(&fixture("conflict_with_appended_fields.msgpack")).unwrap();
        assert_eq!(conflict.device_record.seq, 7);
        assert_eq!(conflict.resolution.map(|resolution| resolution.note), Some("kept".to_string()));
    }

    /// This release's own values still read as written, through the tolerant reader.
    #[test]
    fn values_of_this_release_read_back_unchanged() {
        let mut progress = DeviceProgress::default();
        progress.received.insert(1);
        progress.last_commit = Some(crate::store::CommitId::fresh());
        assert_eq!(decode::<DeviceProgress>(&encode(&progress)).unwrap(), progress);
        let values: Vec<Option<(u8, String)>> = vec![Some((1, "a".into())), None];
        assert_eq!(decode::<Vec<Option<(u8, String)>>>(&encode(&values)).unwrap(), values);
    }

    /// Writes the fixtures `values_of_older_and_newer_layouts_read` reads: run once,
    /// by hand, when a layout is added (`cargo test -p otg-actors write_layout_fixtures
    /// -- --ignored`), then commit them; never regenerate an existing one. Each layout
    /// is spelled out as tuples, which MessagePack encodes as positional arrays exactly
    /// as it does structs: an older layout without the fields added since, and a
    /// newer one with a field appended at every level.
    #[test]
    #[ignore = "writes the committed fixtures"]
    fn write_layout_fixtures() {
        use otg_schema::RecordKind;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stored");
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
        let appended = "a field of a newer release";
        let mut received = crate::seq_ranges::SeqRanges::default();
        received.insert(1);
        received.insert(2);
        let evaluation = crate::store::EvaluationProgress::default();
        let totals = crate::store::SyncTotals::default();
        let health = (Some(48_000u64), Some("2.4.1"), Some(1_763_942_400_000i64), Some(1_764_028_800_000i64));
        let older = (&received, Some(1_764_028_800_000i64), Some(3u64), evaluation, totals, health);
        write("progress_before_last_commit.msgpack", encode(&older));
        let health = (health.0, health.1, health.2, health.3, appended);
        let commit = crate::store::CommitId::fresh();
        let newer = (&received, Some(1_764_028_800_000i64), Some(3u64), evaluation, totals, health, Some(commit), 7u8);
        write("progress_with_appended_fields.msgpack", encode(&newer));

        let geo = (52.52f64, 13.405f64, 8.5f64, appended);
        let record = (
            7u64,
            "7f8c2a8e-3c1d-4b7e-9a51-2f0d6c1e4b9a",
            RecordKind::CheckIn,
            "emp-9",
            1_764_057_600_000i64,
            None::<i64>,
            true,
            Some(geo),
            None::<()>,
            None::<String>,
            None::<()>,
            None::<String>,
            appended,
        );
        let stored = ("dev-123", "acme", "b-0001", 1_764_057_600_100i64, record, appended);
        #[derive(Serialize)]
        enum SeqEntryLayout<T> {
            Stored(T),
        }
        write("seq_with_appended_fields.msgpack", encode(&SeqEntryLayout::Stored(stored)));

        let entry = (
            "acme",
            "emp-9",
            1_764_057_600_000i64,
            "dev-123",
            7u64,
            "7f8c2a8e-3c1d-4b7e-9a51-2f0d6c1e4b9a",
            RecordKind::CheckIn,
            None::<()>,
            crate::store::RecordStatus::Active,
            appended,
        );
        write("timeline_with_appended_fields.msgpack", encode(&entry));

        let reference = |seq: u64| {
            (
                "7f8c2a8e-3c1d-4b7e-9a51-2f0d6c1e4b9a",
                "dev-123",
                seq,
                1_764_057_600_000i64,
                RecordKind::CheckIn,
                appended,
            )
        };
        let resolution = (crate::store::Resolution::KeepBoth, "kept", 1_764_060_000_000i64, appended);
        let conflict = (
            "conflict-1",
            "acme",
            "emp-9",
            crate::conflict_rules::ConflictKind::DuplicateEvent,
            reference(7),
            Some(reference(3)),
            otg_schema::ConflictResolution::Manual,
            crate::store::PolicyOutcome::BothStand,
            1_764_057_600_100i64,
            Some(resolution),
            appended,
        );
        write("conflict_with_appended_fields.msgpack", encode(&conflict));
    }

    /// A wrong value is still refused, not read as a default.
    #[test]
    fn a_value_of_another_type_is_corrupt() {
        assert!(matches!(decode::<DeviceProgress>(&encode(&"text")), Err(StoreError::Corrupt(_))));
    }
}
