//! The bodies of otg's fuzz targets: each takes the raw bytes libFuzzer made and drives
//! the code that reads untrusted input with them, asserting what must hold.
//!
//! Every target is one function here, called by its libFuzzer binary
//! (`fuzz_targets/`, built only with the `libfuzzer` feature on nightly) and by the
//! replay test (`tests/replay.rs`) on the committed corpus under plain `cargo test`.
//! A panic anywhere in these is a bug in otg: the input came from outside.

use otg_actors::metrics::StoreMetrics;
use otg_actors::store::{EmbeddedStore, EmbeddedStoreOptions, Store};
use otg_gateway::config::Config;
use otg_gateway::routes::fuzzing::{
    next_cursor, AttendanceQuery, AuditQuery, ConflictsQuery, EnrolRequest, OrgQuery, PageQuery, ResolveBody,
    StatsQuery, MAX_LIMIT,
};
use otg_schema::validate::{check_batch, check_record, RecordRules};
use otg_schema::wire::{self, Batch};
use otg_schema::{DeviceSecret, OrgSettings, UtcDay};
use std::path::Path;
use std::sync::OnceLock;

/// The server clock the record rules are checked against (2025-11-25T12:00Z): the
/// gateway's own clock, never the device's.
pub const NOW_MS: i64 = 1_764_072_000_000;

/// A device's batch body, as `routes/sync.rs` takes it once the signature holds:
/// decode, the batch checks, then each record's checks, for a shared kiosk with the
/// default offline window and for a personal device with the longest one.
pub fn batch(data: &[u8]) {
    let Ok(batch) = wire::decode::<Batch>(data) else { return };
    // What decodes must encode (`wire::encode` panics otherwise) and read back the same.
    let encoded = wire::encode(&batch);
    let again: Batch = wire::decode(&encoded).expect("an encoded batch decodes");
    assert_eq!(wire::encode(&again), encoded, "a batch reads back as it was written");

    let _ = check_batch(&batch, "dev-1");
    if check_batch(&batch, &batch.device_id).is_err() {
        return;
    }
    let kiosk = RecordRules { now_ms: NOW_MS, max_offline_days: 7, enrolled_employee: None };
    let employee = batch.records[0].employee_id.clone();
    let personal = RecordRules { now_ms: NOW_MS, max_offline_days: 365, enrolled_employee: Some(&employee) };
    for record in &batch.records {
        for rules in [&kiosk, &personal] {
            let Ok(valid) = check_record(record.clone(), rules) else { continue };
            // What the actors and stores do with a valid record next.
            let _ = valid.day().to_string();
            if let Some(leave) = &valid.leave {
                assert!(leave.from <= leave.to, "a leave ends on or after its first day");
                let _ = (leave.from.to_string(), leave.to.to_string());
            }
        }
    }
}

/// A signed device request, as `auth.rs` checks it: the 32-byte secret, then method,
/// path, `X-Request-Time` and `X-Signature`, each ended by a newline, then the body.
/// `authenticate_device` itself needs an actix request and a store, so this drives
/// what it calls: the request time's parse and `DeviceSecret::verify`.
pub fn signature(data: &[u8]) {
    let Some((secret, rest)) = data.split_first_chunk::<32>() else { return };
    let secret = DeviceSecret(*secret);
    let mut parts = rest.splitn(5, |&byte| byte == b'\n');
    let mut next_text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (method, path, request_time, claimed) = (next_text(), next_text(), next_text(), next_text());
    let body = parts.next().unwrap_or_default();

    let _ = request_time.parse::<i64>();
    let expected = secret.sign(&method, &path, &request_time, body);
    assert!(secret.verify(&method, &path, &request_time, body, &expected), "a request verifies with its own signature");
    // Hex is read in either case; anything else is simply wrong.
    assert_eq!(
        secret.verify(&method, &path, &request_time, body, &claimed),
        claimed.eq_ignore_ascii_case(&expected),
        "only the request's own signature verifies"
    );
    if let Some(secret) = DeviceSecret::from_base64(&String::from_utf8_lossy(rest)) {
        assert_eq!(DeviceSecret::from_base64(&secret.to_base64()), Some(secret), "a secret reads back as shown");
    }
}

/// The embedded store opened on a damaged live log: the first byte says how to lay
/// out the rest (bit 0: give every whole frame its right CRC, so the fuzzer reaches
/// the entries' contents; bit 1: split it into two segments at the offset in the next
/// two bytes), the rest is the log. The store must refuse to open or open; one that
/// opened must close and open again.
pub fn live_log(data: &[u8]) {
    let Some((&layout, log)) = data.split_first() else { return };
    let mut segments = match log {
        [low, high, rest @ ..] if layout & 2 != 0 => {
            let split = usize::from(u16::from_le_bytes([*low, *high])) % (rest.len() + 1);
            vec![rest[..split].to_vec(), rest[split..].to_vec()]
        }
        _ => vec![log.to_vec()],
    };
    if layout & 1 != 0 {
        segments.iter_mut().for_each(|segment| repair_checksums(segment));
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_segments(&dir.path().join("live-log"), &segments);
    if let Ok(store) = open_store(dir.path()) {
        close(store);
        close(open_store(dir.path()).expect("a store that opened once opens again"));
    }
}

/// The admin API's JSON bodies, read as actix's `web::Json` reads them
/// (`serde_json::from_slice`), then checked as the handlers check them.
pub fn admin_body(data: &[u8]) {
    if let Ok(settings) = serde_json::from_slice::<OrgSettings>(data) {
        if settings.validate().is_ok() {
            // What the handler answers and what devices read back.
            let json = serde_json::to_vec(&settings).expect("settings encode as JSON");
            assert_eq!(serde_json::from_slice::<OrgSettings>(&json).ok(), Some(settings.clone()));
            let _ = wire::encode(&settings.device_config());
        }
    }
    let _ = serde_json::from_slice::<EnrolRequest>(data);
    let _ = serde_json::from_slice::<ResolveBody>(data);
}

/// The admin API's query strings, read as actix's `web::Query` reads them
/// (`serde_urlencoded::from_str`), then checked as the handlers check them.
pub fn admin_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else { return };
    if let Ok(page) = serde_urlencoded::from_str::<PageQuery>(query) {
        if let (Ok(limit), Ok(after)) = (page.limit(), page.after()) {
            assert!((1..=MAX_LIMIT).contains(&limit));
            if let Some(position) = after {
                // The cursor the gateway would give for this position leads back to it.
                let cursor = next_cursor(Some(&position), limit, limit).expect("a full page has a next page");
                let again: PageQuery = serde_urlencoded::from_str(&format!("cursor={cursor}")).expect("a cursor");
                assert_eq!(again.after().ok(), Some(Some(position)));
            }
        }
    }
    let _ = serde_urlencoded::from_str::<OrgQuery>(query);
    let _ = serde_urlencoded::from_str::<ConflictsQuery>(query);
    let _ = serde_urlencoded::from_str::<StatsQuery>(query);
    let _ = serde_urlencoded::from_str::<AuditQuery>(query);
    if serde_urlencoded::from_str::<AttendanceQuery>(query).is_ok() {
        // The attendance handler's reading of `day` (its field is private).
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        for (_, day) in pairs.iter().filter(|(key, _)| key == "day") {
            if let Some(day) = UtcDay::parse(day) {
                let _ = (day.to_string(), day.next());
            }
        }
    }
}

/// The gateway's configuration, as `otg-gateway` reads it at start-up: a config file's
/// text, then environment variables (`Config::from_sources`). The input is the file's
/// text, a NUL byte, then `NAME=value` lines. Whatever is accepted must validate the
/// same way twice, and read back the same from its own TOML (what `check-config`
/// prints) with no environment at all.
pub fn config(data: &[u8]) {
    let (file, environment) = match data.iter().position(|&byte| byte == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(file) = std::str::from_utf8(file) else { return };
    let environment: Vec<(String, String)> = String::from_utf8_lossy(environment)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let Ok(config) = Config::from_sources(Some(file), environment.clone()) else { return };
    let again = Config::from_sources(Some(file), environment).expect("the same sources validate again");
    assert_eq!(again, config);
    let printed = toml::to_string(&config).expect("a valid config prints as TOML");
    let read_back = Config::from_sources(Some(&printed), std::iter::empty()).expect("its printed form validates");
    assert_eq!(read_back, config, "{printed}");
}

/// Sets the CRC of every whole frame (length, CRC, body) to its body's, up to the
/// first frame that is not whole, the way the live log writer frames its entries.
pub fn repair_checksums(segment: &mut [u8]) {
    let mut at = 0;
    while let Some(header) = segment.get(at..at + 8) {
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let Some(body) = segment.get(at + 8..).and_then(|rest| rest.get(..length)) else { return };
        let crc = crc32fast::hash(body);
        segment[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at += 8 + length;
    }
}

/// Writes the segments into the live log directory under the names the writer gives
/// them (the first entry's number, zero-padded: so they sort in order).
pub fn write_segments(log_dir: &Path, segments: &[Vec<u8>]) {
    std::fs::create_dir_all(log_dir).expect("the live log directory");
    for (index, segment) in segments.iter().enumerate() {
        std::fs::write(log_dir.join(format!("{:020}.log", index + 1)), segment).expect("a segment");
    }
}

/// The embedded store in `dir`, small: the fuzzer opens thousands.
pub fn open_store(dir: &Path) -> Result<EmbeddedStore, otg_actors::store::StoreError> {
    let options = EmbeddedStoreOptions {
        cache_bytes: 1 << 20,
        memtable_bytes: 1 << 20,
        commit_queue_capacity: 16,
        ..EmbeddedStoreOptions::new(dir)
    };
    let metrics = StoreMetrics::register(&prometheus::Registry::new()).expect("fresh metrics");
    EmbeddedStore::open(options, metrics)
}

/// Closes the store: its threads joined, everything synced.
pub fn close(store: EmbeddedStore) {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME
        .get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime"));
    runtime.block_on(store.close()).expect("an opened store closes");
}
