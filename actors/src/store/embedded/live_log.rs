//! The live log: where a live commit becomes durable before it is acked, so that a live
//! check-in never waits behind the backlog the committer is writing or behind fjall's
//! own flushes and compactions (which hold a table's writes while they fsync).
//!
//! One writer thread appends each live commit as an entry numbered one past the last
//! (its LSN, log sequence number), fdatasyncs once for all that arrived meanwhile,
//! acks them, and hands each to the committer to apply to the tables. The apply writes
//! the entry's number with it, atomically; at start-up every entry after that number
//! is applied again, so each is applied exactly once. Segments whose entries are all
//! durably applied are deleted.
//!
//! A segment is a run of frames: length (u32 LE), CRC-32 of the body (u32 LE), body =
//! the entry's number (u64 LE) then its payload. A frame that is short, empty or fails
//! its CRC at the end of the last segment ends the log: it was being written when the
//! process died, and nothing in it was acked. Anywhere else it is corruption, and the
//! store does not open.

use super::committer::{Origin, PendingCommit};
use super::read_barrier::{ReadBarrier, Touched};
use super::{failed_earlier, halt};
use crate::store::{StoreError, SyncCounts};
use fjall::OwnedWriteBatch;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// A segment is closed once it holds this many bytes.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
const HEADER_BYTES: usize = 8;
/// Larger than any entry: a length beyond it is damage, not an entry.
const MAX_BODY_BYTES: usize = 1 << 30;

/// The files of the live log, in one directory.
pub(super) struct LiveLog {
    dir: PathBuf,
    file: File,
    bytes: u64,
    next_lsn: u64,
    /// Closed segments, oldest first, with the last entry each holds.
    closed: Vec<(PathBuf, u64)>,
    current: PathBuf,
}

/// A live commit on its way to the log.
pub(super) struct LiveCommit {
    /// The entry's payload: everything needed to apply it again after a crash.
    pub payload: Vec<u8>,
    /// What the committer applies once the entry is durable.
    pub batch: OwnedWriteBatch,
    pub records: usize,
    pub stats: Vec<SyncCounts>,
    pub touched: Vec<Touched>,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

impl LiveLog {
    /// Hands every entry in `dir` to `apply`, in order, up to a torn frame at the end.
    pub fn recover(
        dir: &Path,
        mut apply: impl FnMut(u64, Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let segments = segments(dir)?;
        let mut previous: Option<u64> = None;
        for (index, segment) in segments.iter().enumerate() {
            let mut reader = BufReader::new(File::open(segment).map_err(io)?);
            loop {
                match read_frame(&mut reader)? {
                    Frame::Entry(lsn, payload) => {
                        if let Some(previous) = previous.filter(|previous| lsn != previous + 1) {
                            return Err(corrupt(segment, &format!("entry {lsn} follows entry {previous}")));
                        }
                        previous = Some(lsn);
                        apply(lsn, payload)?;
                    }
                    Frame::End => break,
                    // The group being written when the process died: none of it was acked.
                    Frame::Damaged if index + 1 == segments.len() => return Ok(()),
                    Frame::Damaged => return Err(corrupt(segment, "a damaged entry before the last segment")),
                }
            }
        }
        Ok(())
    }

    /// Starts a fresh log whose first entry is `next_lsn`, deleting the old segments:
    /// the caller has applied them durably.
    pub fn create(dir: &Path, next_lsn: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io)?;
        for segment in segments(dir)? {
            std::fs::remove_file(segment).map_err(io)?;
        }
        let (file, current) = new_segment(dir, next_lsn)?;
        Ok(LiveLog { dir: dir.to_owned(), file, bytes: 0, next_lsn, closed: Vec::new(), current })
    }

    /// Appends the payloads as consecutive entries and makes them durable; returns
    /// the number of the first.
    pub fn append<'a>(&mut self, payloads: impl Iterator<Item = &'a [u8]>) -> Result<u64, StoreError> {
        if self.bytes >= SEGMENT_BYTES {
            let (file, path) = new_segment(&self.dir, self.next_lsn)?;
            self.closed.push((std::mem::replace(&mut self.current, path), self.next_lsn - 1));
            (self.file, self.bytes) = (file, 0);
        }
        let first = self.next_lsn;
        let mut frames = Vec::new();
        for payload in payloads {
            frame(self.next_lsn, payload, &mut frames);
            self.next_lsn += 1;
        }
        self.file.write_all(&frames).and_then(|()| self.file.sync_data()).map_err(io)?;
        self.bytes += frames.len() as u64;
        Ok(first)
    }

    /// Deletes the closed segments whose entries are all applied durably.
    pub fn forget_through(&mut self, durable_lsn: u64) -> Result<(), StoreError> {
        while let Some((segment, last)) = self.closed.first() {
            if *last > durable_lsn {
                break;
            }
            std::fs::remove_file(segment).map_err(io)?;
            self.closed.remove(0);
        }
        Ok(())
    }
}

/// The thread that writes the live log.
pub(super) struct LiveWriter {
    pub log: LiveLog,
    /// Where acked entries go for the committer to apply.
    pub applies: mpsc::Sender<PendingCommit>,
    pub barrier: Arc<ReadBarrier>,
    pub durable_lsn: Arc<AtomicU64>,
    pub failed: Arc<AtomicBool>,
    pub metrics: crate::metrics::StoreMetrics,
}

impl LiveWriter {
    /// Logs what arrives until the channel closes: every commit waiting goes into one
    /// write and one fdatasync, then each is acked and handed to the committer.
    pub fn run(mut self, mut queue: mpsc::Receiver<LiveCommit>) {
        let mut group = Vec::new();
        while let Some(first) = queue.blocking_recv() {
            group.push(first);
            while let Ok(more) = queue.try_recv() {
                group.push(more);
            }
            let started = std::time::Instant::now();
            let logged = if self.failed.load(Ordering::Relaxed) {
                Err(failed_earlier())
            } else {
                self.log.append(group.iter().map(|commit| commit.payload.as_slice()))
            };
            self.metrics.observe_live_log(started.elapsed());
            match logged {
                Ok(first_lsn) => {
                    for (lsn, LiveCommit { batch, records, stats, touched, done, .. }) in
                        (first_lsn..).zip(group.drain(..))
                    {
                        // Known to the barrier and queued for the committer before the
                        // ack, so every later read and commit comes after it.
                        self.barrier.acked(lsn, touched);
                        let apply = PendingCommit { batch, records, stats, origin: Origin::LiveLog(lsn) };
                        if self.applies.blocking_send(apply).is_err() {
                            // Reads waiting for it would wait for ever: fail them.
                            halt(&self.failed, &self.barrier);
                            tracing::error!(lsn, "the committer stopped; the live entry is applied at the next start");
                        }
                        let _ = done.send(Ok(()));
                    }
                }
                Err(error) => {
                    self.failed.store(true, Ordering::Relaxed);
                    tracing::error!(%error, commits = group.len(), "writing the live log failed; nothing in it is acked");
                    for commit in group.drain(..) {
                        let _ = commit.done.send(Err(error.clone()));
                    }
                }
            }
            if let Err(error) = self.log.forget_through(self.durable_lsn.load(Ordering::Acquire)) {
                tracing::warn!(%error, "deleting applied live log segments failed; retrying later");
            }
        }
    }
}

/// The segment files in `dir`, oldest first (their names are their first entry's
/// number, zero-padded).
fn segments(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|entry| entry.path()).map_err(io))
        .filter(|path| path.as_ref().map_or(true, |path| path.extension().is_some_and(|extension| extension == "log")))
        .collect::<Result<_, _>>()?;
    found.sort();
    Ok(found)
}

/// Creates the segment that starts at entry `first`, durably (the directory too).
fn new_segment(dir: &Path, first: u64) -> Result<(File, PathBuf), StoreError> {
    let path = dir.join(format!("{first:020}.log"));
    let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
    file.sync_all().and_then(|()| File::open(dir)?.sync_all()).map_err(io)?;
    Ok((file, path))
}

/// Appends entry `lsn`'s frame to `frames`.
fn frame(lsn: u64, payload: &[u8], frames: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(8 + payload.len());
    body.extend_from_slice(&lsn.to_le_bytes());
    body.extend_from_slice(payload);
    frames.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frames.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    frames.extend_from_slice(&body);
}

/// What the next bytes of a segment hold.
enum Frame {
    Entry(u64, Vec<u8>),
    /// The segment ends here, cleanly.
    End,
    /// Cut short, or failing its length or CRC check.
    Damaged,
}

fn read_frame(reader: &mut impl Read) -> Result<Frame, StoreError> {
    let header = read_up_to(reader, HEADER_BYTES)?;
    match header.len() {
        0 => return Ok(Frame::End),
        HEADER_BYTES => {}
        _ => return Ok(Frame::Damaged),
    }
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if !(8..=MAX_BODY_BYTES).contains(&length) {
        return Ok(Frame::Damaged);
    }
    let mut body = read_up_to(reader, length)?;
    if body.len() < length || crc32fast::hash(&body) != crc {
        return Ok(Frame::Damaged);
    }
    let lsn = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    body.drain(..8);
    Ok(Frame::Entry(lsn, body))
}

/// The next `count` bytes, or fewer where the segment ends.
fn read_up_to(reader: &mut impl Read, count: usize) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(count);
    reader.take(count as u64).read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

fn corrupt(segment: &Path, what: &str) -> StoreError {
    StoreError::Corrupt(format!("live log {}: {what}; the store will not open until it is repaired", segment.display()))
}

fn io(error: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("live log: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut found = Vec::new();
        LiveLog::recover(dir, |lsn, payload| {
            found.push((lsn, payload));
            Ok(())
        })?;
        Ok(found)
    }

    fn append_to(segment: &Path, bytes: &[u8]) {
        OpenOptions::new().append(true).open(segment).unwrap().write_all(bytes).unwrap();
    }

    #[test]
    fn entries_read_back_in_order_up_to_a_torn_frame_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LiveLog::create(dir.path(), 7).unwrap();
        assert_eq!(log.append([b"one".as_slice(), b"two"].into_iter()).unwrap(), 7);
        assert_eq!(log.append([b"three".as_slice()].into_iter()).unwrap(), 9);
        let segment = log.current.clone();
        drop(log);
        // A group cut short by a crash: a whole frame's header, then too few bytes.
        append_to(&segment, &[40, 0, 0, 0, 1, 2, 3, 4, 10, 0]);
        let expected = vec![(7, b"one".to_vec()), (8, b"two".to_vec()), (9, b"three".to_vec())];
        assert_eq!(entries(dir.path()).unwrap(), expected);
    }

    #[test]
    fn a_frame_that_fails_its_checksum_ends_the_last_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LiveLog::create(dir.path(), 1).unwrap();
        log.append([b"kept".as_slice(), b"flipped"].into_iter()).unwrap();
        let segment = log.current.clone();
        drop(log);
        let mut bytes = std::fs::read(&segment).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&segment, bytes).unwrap();
        assert_eq!(entries(dir.path()).unwrap(), vec![(1, b"kept".to_vec())]);
    }

    /// Writes a segment of the given entries by hand.
    fn segment(dir: &Path, entries: &[(u64, &[u8])], then: &[u8]) {
        let mut bytes = Vec::new();
        for (lsn, payload) in entries {
            frame(*lsn, payload, &mut bytes);
        }
        bytes.extend_from_slice(then);
        std::fs::write(dir.join(format!("{:020}.log", entries[0].0)), bytes).unwrap();
    }

    #[test]
    fn damage_before_the_last_segment_or_a_missing_entry_refuses_to_open() {
        let damaged = tempfile::tempdir().unwrap();
        segment(damaged.path(), &[(1, b"a")], &[1, 2, 3]);
        segment(damaged.path(), &[(2, b"b")], &[]);
        assert!(
            matches!(entries(damaged.path()), Err(StoreError::Corrupt(_))),
            "a damaged frame with entries after it"
        );
        let gap = tempfile::tempdir().unwrap();
        segment(gap.path(), &[(1, b"a")], &[]);
        segment(gap.path(), &[(3, b"c")], &[]);
        assert!(matches!(entries(gap.path()), Err(StoreError::Corrupt(_))), "entry 3 after entry 1");
        let whole = tempfile::tempdir().unwrap();
        segment(whole.path(), &[(1, b"a"), (2, b"b")], &[]);
        segment(whole.path(), &[(3, b"c")], &[9, 9]);
        assert_eq!(entries(whole.path()).unwrap().len(), 3);
    }

    #[test]
    fn closed_segments_go_once_durably_applied_and_a_new_log_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LiveLog::create(dir.path(), 1).unwrap();
        let big = vec![7u8; SEGMENT_BYTES as usize];
        log.append([big.as_slice()].into_iter()).unwrap();
        log.append([b"next segment".as_slice()].into_iter()).unwrap();
        assert_eq!(segments(dir.path()).unwrap().len(), 2);
        log.forget_through(0).unwrap();
        assert_eq!(segments(dir.path()).unwrap().len(), 2, "entry 1 is not durably applied yet");
        log.forget_through(1).unwrap();
        assert_eq!(entries(dir.path()).unwrap(), vec![(2, b"next segment".to_vec())]);
        drop(log);
        LiveLog::create(dir.path(), 3).unwrap();
        assert!(entries(dir.path()).unwrap().is_empty());
    }
}
