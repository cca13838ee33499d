//! The write-ahead log: numbered segment files of checksummed records, a
//! group-committing writer, replay with torn-tail repair and corruption
//! reports, and checkpoints that let old segments be deleted.
//!
//! Owns: everything under the WAL directory (`NNNNNNNN` segments and
//! `checkpoint.NNNNNNNN/` directories) and its format, specified in
//! `storage/docs/wal.md`. Must not: know about the head, chunks or blocks; it
//! stores opaque series refs, label bytes and samples, and hands them back in
//! order.
//!
//! # Durability and ordering contract
//!
//! * [`Wal::log`] returns `Ok` only after the records' bytes are written to the
//!   current segment (in the OS page cache), and, under
//!   [`FsyncPolicy::Always`], after an fsync that covers them. Concurrent
//!   callers share fsyncs (group commit): one `fdatasync` covers every caller
//!   whose bytes were written before it started.
//! * Under [`FsyncPolicy::Interval`] a background thread fsyncs every interval;
//!   an acknowledged record survives a process crash (the page cache outlives
//!   the process) but may be lost on power failure or kernel crash if it was
//!   written less than one interval before.
//! * Records are replayed in the order `log` calls wrote them (calls are
//!   serialized by the writer lock; the records of one call stay contiguous
//!   and in order, possibly split across a segment rotation).
//! * After an fsync error the WAL is poisoned: every later call fails, because
//!   the kernel may have dropped the dirty pages it could not write.
//! * Replay truncates a torn tail of the last segment (a write cut short by a
//!   crash), and reports, without failing, any corrupt record elsewhere: the
//!   rest of that segment is skipped and later segments are replayed.
//! * The writer never appends to a segment that existed when it opened: every
//!   open starts a new segment, so a record the previous process tore or
//!   corrupted is never followed by new records in the same file.

mod checkpoint;
mod reader;
mod record;
mod segment;
#[cfg(test)]
mod tests;
pub(crate) mod writer;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use checkpoint::{checkpoint, CheckpointStats};
pub use reader::{replay, ReplayStats};
pub use record::{
    encode_samples, encode_series, encode_st_samples, encode_tombstones, DecodeError, Decoder,
    Record, RefSample, RefSeries, RefStSample, Tombstone,
};
pub use segment::{checkpoint_name, list_dir, segment_name, DirListing};
pub use writer::{Wal, WalStats};

/// Default maximum segment size: 128 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 128 << 20;

/// When the writer fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every `log` call returns only after an fsync covering its records.
    Always,
    /// A background thread fsyncs at this interval; `log` returns once the
    /// bytes are written.
    Interval(Duration),
}

/// WAL settings.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Rotate to a new segment before a write would exceed this size. A single
    /// record larger than this gets a segment of its own.
    pub segment_size: u64,
    pub fsync: FsyncPolicy,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            fsync: FsyncPolicy::Always,
        }
    }
}

/// A corrupt record found during replay or checkpointing: the file, the
/// byte offset of the frame (or of the segment header at offset 0), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
    /// Bytes after `offset` in that file that were not replayed.
    pub skipped_bytes: u64,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt WAL record in {} at offset {}: {} ({} bytes skipped)",
            self.path.display(),
            self.offset,
            self.reason,
            self.skipped_bytes
        )
    }
}

/// WAL errors. Every variant names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error ({op}) on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Corrupt(Corruption),
    #[error("WAL record of {len} bytes exceeds the 4 GiB frame limit")]
    RecordTooLarge { len: usize },
    #[error("WAL in {dir} is poisoned by an earlier failure and accepts no writes: {reason}")]
    Poisoned { dir: PathBuf, reason: String },
    #[error("WAL directory {dir} is in use by another writer (LOCK is held)")]
    Locked { dir: PathBuf },
    #[error("cannot checkpoint {dir} up to segment {upto}: {reason}")]
    Checkpoint {
        dir: PathBuf,
        upto: u64,
        reason: String,
    },
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
