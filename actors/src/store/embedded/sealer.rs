//! The thread that seals full memtables for fjall's workers to flush.
//!
//! Sealing one takes fjall's journal lock for a moment, then tidies every table's old
//! versions and the journals, which took up to 140 ms in a soak. On the committer's
//! thread that held every apply of the live log, and the reads waiting for them;
//! here the committer only asks, and goes on writing. fjall's own trigger is out of
//! reach for the tables this store makes (`tables.rs`, `FJALL_MEMTABLE_BYTES`).

use super::read_barrier::ReadBarrier;
use super::{halt, Tables};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// How the committer asks for a seal: one wake-up waits at most, and a wake-up that
/// waits already covers every memtable full by the time the sealer looks.
pub(super) struct SealRequests(SyncSender<()>);

impl SealRequests {
    /// Asks the sealer to seal every full memtable, without waiting for it. A wake-up
    /// already waiting covers this one; a sealer that stopped after a failure has
    /// reported it.
    pub fn request(&self) {
        let _ = self.0.try_send(());
    }
}

pub(super) struct Sealer {
    tables: Tables,
    wakes: Receiver<()>,
    failed: Arc<AtomicBool>,
    barrier: Arc<ReadBarrier>,
}

/// A sealer of `tables`' memtables and how to wake it; it stops once every
/// `SealRequests` is dropped. A failed seal stops the store as a failed commit does.
pub(super) fn sealer(tables: Tables, failed: Arc<AtomicBool>, barrier: Arc<ReadBarrier>) -> (Sealer, SealRequests) {
    let (wake, wakes) = sync_channel(1);
    (Sealer { tables, wakes, failed, barrier }, SealRequests(wake))
}

impl Sealer {
    pub fn run(self) {
        while self.wakes.recv().is_ok() {
            if let Err(error) = self.tables.seal_full_memtables() {
                halt(&self.failed, &self.barrier);
                tracing::error!(%error, "sealing a memtable failed; the store writes nothing more");
                return;
            }
        }
    }
}
