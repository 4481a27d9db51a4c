//! Replays every target's committed corpus (`fuzz/corpus/<target>/`: the minimised
//! corpus and the reproducers of bugs fuzzing found) through the target's body, so that
//! plain `cargo test` on stable keeps every input that once mattered passing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn replay(target: &str, body: fn(&[u8])) {
    let inputs = corpus(target);
    assert!(!inputs.is_empty(), "fuzz/corpus/{target}/ holds no inputs");
    let failed: Vec<String> = inputs
        .iter()
        .filter(|input| {
            let data = std::fs::read(input).unwrap();
            catch_unwind(AssertUnwindSafe(|| body(&data))).is_err()
        })
        .map(|input| input.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{} of {} inputs of {target} panic: {failed:#?}", failed.len(), inputs.len());
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn batch_corpus() {
    replay("batch", otg_fuzz::batch);
}

#[test]
fn signature_corpus() {
    replay("signature", otg_fuzz::signature);
}

#[test]
fn live_log_corpus() {
    replay("live_log", otg_fuzz::live_log);
}

#[test]
fn admin_body_corpus() {
    replay("admin_body", otg_fuzz::admin_body);
}

#[test]
fn admin_query_corpus() {
    replay("admin_query", otg_fuzz::admin_query);
}

#[test]
fn config_corpus() {
    replay("config", otg_fuzz::config);
}
