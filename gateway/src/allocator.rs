//! Tuning of mimalloc, the gateway's allocator (see `main.rs`).

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc 3's option enum; the crate does not name it.
const PURGE_DELAY: mi_option_t = 15;
/// How long freed memory is kept for reuse before it goes back to the system, ms.
const PURGE_DELAY_MS: i64 = 100;

/// mimalloc keeps freed memory a second before giving it back. Under a reconnect
/// storm's churn (request bodies, batches, memtables) that second was 100-200 MiB of
/// resident memory, which the memory cap counts and a container limit would too;
/// 100 ms keeps most of the reuse. An operator's `MIMALLOC_PURGE_DELAY` wins.
pub fn return_freed_memory_sooner() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a numeric option; mimalloc reads options with atomic loads.
        unsafe { mi_option_set(PURGE_DELAY, PURGE_DELAY_MS as _) }
    }
}

/// The purge delay in force, ms.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads a numeric option.
    unsafe { mi_option_get(PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        // mimalloc 3's default purge delay: a different value means the enum moved.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1_000, "option {PURGE_DELAY} is no longer mimalloc's purge delay");
            return_freed_memory_sooner();
            assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
        }
    }
}
