//! The WAL writer: appends framed records to the current segment, rotates
//! segments, and group-commits fsyncs for concurrent callers.
//!
//! Owns: the current segment file and the two sequence numbers that make
//! group commit safe. `written_seq` counts `log` calls whose bytes are in the
//! page cache; `synced` is the highest `written_seq` known durable. A caller
//! under `FsyncPolicy::Always` notes its sequence number and waits until
//! `synced` reaches it. If no fsync is running, it becomes the leader: it
//! snapshots `written_seq` and the current file, fsyncs without holding any
//! lock, publishes the snapshot and wakes every waiter. Writers arriving
//! during an fsync keep writing and wait; the next fsync covers all of them.
//! Rotation fsyncs the old segment before switching, so fsyncing the current
//! file covers every earlier sequence number.
//!
//! Must not: append to a segment it did not create (see `mod.rs`), or keep
//! accepting writes after an fsync failure.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::checkpoint::{checkpoint, CheckpointStats};
use super::reader::{replay, ReplayStats};
use super::record::Record;
use super::segment::{
    list_dir, remove_file_if_exists, segment_header, segment_path, sync_dir, FRAME_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use super::{FsyncPolicy, WalError, WalOptions};

/// An open WAL. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Wal {
    inner: Arc<Inner>,
    syncer: Option<JoinHandle<()>>,
}

struct Inner {
    /// Holds the exclusive `flock` on `<dir>/LOCK` for the WAL's lifetime.
    _lock: File,
    dir: PathBuf,
    opts: WalOptions,
    state: Mutex<State>,
    /// Group-commit state; at most one fsync runs at a time.
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    /// Serializes checkpoints.
    checkpointing: Mutex<()>,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    counters: Counters,
}

struct State {
    file: Arc<File>,
    index: u64,
    size: u64,
    written_seq: u64,
    poisoned: Option<String>,
}

#[derive(Default)]
struct SyncState {
    /// Highest `written_seq` known durable.
    synced: u64,
    /// An fsync is running (outside the lock).
    in_progress: bool,
    /// The fsync failure that poisoned the WAL, for callers that waited on it.
    failed: Option<String>,
}

#[derive(Default)]
struct Counters {
    log_calls: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    fsyncs: AtomicU64,
    segments_created: AtomicU64,
}

/// Writer counters since open.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalStats {
    pub log_calls: u64,
    pub records: u64,
    pub bytes: u64,
    /// fsyncs of segment data (group commit makes this ≤ `log_calls`).
    pub fsyncs: u64,
    pub segments_created: u64,
    /// Index of the segment being written.
    pub current_segment: u64,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`: replays it into
    /// `handler` (repairing a torn tail), removes leftovers of an interrupted
    /// checkpoint, and starts a new segment after the last one. Corrupt
    /// records are reported in the returned stats, not as an error.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        handler: impl FnMut(Record<'_>),
    ) -> Result<(Wal, ReplayStats), WalError> {
        std::fs::create_dir_all(dir).map_err(|e| WalError::io("create WAL directory", dir, e))?;
        // Taken before replay, which may truncate a torn tail that another
        // live writer is in the middle of appending.
        let lock = lock_dir(dir)?;
        let stats = replay(dir, handler)?;
        let listing = list_dir(dir)?;
        for tmp in &listing.tmp_checkpoints {
            std::fs::remove_dir_all(tmp)
                .map_err(|e| WalError::io("remove unfinished checkpoint", tmp, e))?;
        }
        let cp = listing.latest_checkpoint().map(|c| c.0);
        if let Some(cp) = cp {
            // A crash between publishing a checkpoint and deleting what it
            // covers leaves these behind; replay already ignored them.
            for (i, path) in &listing.segments {
                if *i <= cp {
                    remove_file_if_exists(path)?;
                }
            }
            for (i, path) in &listing.checkpoints {
                if *i < cp {
                    std::fs::remove_dir_all(path)
                        .map_err(|e| WalError::io("remove old checkpoint", path, e))?;
                }
            }
        }
        let next = listing
            .segments
            .last()
            .map(|s| s.0 + 1)
            .max(cp.map(|c| c + 1))
            .unwrap_or(0);
        let file = create_segment(dir, next)?;
        let inner = Arc::new(Inner {
            _lock: lock,
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                file: Arc::new(file),
                index: next,
                size: SEGMENT_HEADER_LEN,
                written_seq: 0,
                poisoned: None,
            }),
            sync: Mutex::new(SyncState::default()),
            sync_cv: Condvar::new(),
            checkpointing: Mutex::new(()),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            counters: Counters::default(),
            opts,
        });
        inner
            .counters
            .segments_created
            .fetch_add(1, Ordering::Relaxed);
        let syncer = match inner.opts.fsync {
            FsyncPolicy::Always => None,
            FsyncPolicy::Interval(every) => {
                let inner = Arc::clone(&inner);
                let h = std::thread::Builder::new()
                    .name("pharos-wal-sync".to_string())
                    .spawn(move || inner.sync_loop(every))
                    .map_err(|e| WalError::io("spawn WAL sync thread", dir, e))?;
                Some(h)
            }
        };
        Ok((Wal { inner, syncer }, stats))
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The fsync policy it was opened with.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.inner.opts.fsync
    }

    /// Appends `records` in order and returns once they are written and, under
    /// `FsyncPolicy::Always`, fsynced (see the module contract). On error
    /// nothing is acknowledged: records may or may not be on disk, and a
    /// replay may return them.
    pub fn log(&self, records: &[Record<'_>]) -> Result<(), WalError> {
        let seq = self.write(records)?;
        self.wait_durable(seq)
    }

    /// The first half of [`Wal::log`]: writes `records` (page cache only) and
    /// returns the write's sequence number for [`Wal::wait_durable`]. Lets a
    /// caller order its WAL writes under its own lock while sharing fsyncs
    /// outside it.
    pub fn write(&self, records: &[Record<'_>]) -> Result<u64, WalError> {
        let mut buf = Vec::new();
        let mut ends = Vec::with_capacity(records.len());
        for r in records {
            encode_record_frame(&mut buf, r)?;
            ends.push(buf.len());
        }
        let seq = self.inner.write(&buf, &ends)?;
        let c = &self.inner.counters;
        c.log_calls.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(records.len() as u64, Ordering::Relaxed);
        c.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(seq)
    }

    /// The second half of [`Wal::log`]: under `FsyncPolicy::Always`, returns
    /// once write `seq` (and every earlier one) is fsynced, sharing the fsync
    /// with concurrent callers; under `Interval`, returns at once.
    pub fn wait_durable(&self, seq: u64) -> Result<(), WalError> {
        match self.inner.opts.fsync {
            FsyncPolicy::Always => self.inner.sync_to(seq),
            FsyncPolicy::Interval(_) => Ok(()),
        }
    }

    /// Makes everything written so far durable, whatever the policy.
    pub fn sync(&self) -> Result<(), WalError> {
        let seq = self.inner.state.lock().written_seq;
        self.inner.sync_to(seq)
    }

    /// Closes the current segment (fsynced) and starts the next one, so
    /// that every record logged so far is in segments `< returned index`.
    /// Does nothing if the current segment holds no record yet.
    pub fn rotate(&self) -> Result<u64, WalError> {
        let mut st = self.inner.state.lock();
        self.inner.check_poison(&st)?;
        if st.size > SEGMENT_HEADER_LEN {
            self.inner.rotate_locked(&mut st)?;
        }
        Ok(st.index)
    }

    /// Rotates, then checkpoints every segment before the new one: keeps the
    /// series for which `keep(ref)` holds and their samples and tombstones
    /// with time `>= mint`, and deletes the covered segments. Returns `None`
    /// when there was nothing to checkpoint.
    pub fn checkpoint(
        &self,
        keep: impl Fn(u64) -> bool,
        mint: i64,
    ) -> Result<Option<CheckpointStats>, WalError> {
        let _one = self.inner.checkpointing.lock();
        let current = self.rotate()?;
        let listing = list_dir(&self.inner.dir)?;
        let Some(first) = listing.segments.first().map(|s| s.0) else {
            return Ok(None);
        };
        if first >= current {
            return Ok(None);
        }
        checkpoint(&self.inner.dir, current - 1, keep, mint).map(Some)
    }

    /// Writer counters since open.
    pub fn stats(&self) -> WalStats {
        let c = &self.inner.counters;
        WalStats {
            log_calls: c.log_calls.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            segments_created: c.segments_created.load(Ordering::Relaxed),
            current_segment: self.inner.state.lock().index,
        }
    }

    /// Stops the sync thread and fsyncs what was written. Dropping the WAL
    /// does the same but can only log a failure.
    pub fn close(mut self) -> Result<(), WalError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), WalError> {
        if let Some(h) = self.syncer.take() {
            *self.inner.stop.lock() = true;
            self.inner.stop_cv.notify_all();
            // The sync thread only exits its loop; a panic there is a bug we
            // surface as a log line rather than a second panic in drop.
            if h.join().is_err() {
                tracing::error!(dir = %self.inner.dir.display(), "WAL sync thread panicked");
            }
        }
        let poisoned = self.inner.state.lock().poisoned.is_some();
        if poisoned {
            return Ok(());
        }
        self.sync()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "final WAL fsync failed");
        }
    }
}

/// Takes an exclusive, non-blocking `flock` on `<dir>/LOCK`, so that a second
/// process (or a second `Wal` in this one) cannot interleave its segments with
/// ours. The kernel drops the lock when the process dies, SIGKILL included.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, WalError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| WalError::io("open lock file", &path, e))?;
    // SAFETY: flock only reads the descriptor, which `f` keeps open for the
    // duration of the call.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(WalError::Locked {
                dir: dir.to_path_buf(),
            });
        }
        return Err(WalError::io("lock WAL directory", &path, e));
    }
    Ok(f)
}

/// Appends a frame for `r` to `out`, encoding the payload in place.
fn encode_record_frame(out: &mut Vec<u8>, r: &Record<'_>) -> Result<(), WalError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    r.encode(out);
    let payload_len = out.len() - start - FRAME_HEADER_LEN;
    let len =
        u32::try_from(payload_len).map_err(|_| WalError::RecordTooLarge { len: payload_len })?;
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER_LEN..]);
    let h = &mut out[start..start + FRAME_HEADER_LEN];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[..8]);
    h[8..].copy_from_slice(&hcrc.to_le_bytes());
    Ok(())
}

/// Creates segment `index` with its header, fsyncing file and directory so
/// that the new segment is never lost while later ones survive.
pub(super) fn create_segment(dir: &Path, index: u64) -> Result<File, WalError> {
    let path = segment_path(dir, index);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| WalError::io("create segment", &path, e))?;
    f.write_all_at(&segment_header(), 0)
        .map_err(|e| WalError::io("write segment header", &path, e))?;
    f.sync_all()
        .map_err(|e| WalError::io("fsync new segment", &path, e))?;
    sync_dir(dir)?;
    Ok(f)
}

impl Inner {
    fn check_poison(&self, st: &State) -> Result<(), WalError> {
        match &st.poisoned {
            Some(reason) => Err(WalError::Poisoned {
                dir: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Writes the frames in `buf` (frame ends at `ends`), rotating between
    /// frames when the segment is full. Returns this write's sequence number.
    fn write(&self, buf: &[u8], ends: &[usize]) -> Result<u64, WalError> {
        let mut st = self.state.lock();
        self.check_poison(&st)?;
        let mut from = 0;
        let mut frame_start = 0;
        for &end in ends {
            let pending = (frame_start - from) as u64;
            let frame = (end - frame_start) as u64;
            if st.size + pending + frame > self.opts.segment_size
                && st.size + pending > SEGMENT_HEADER_LEN
            {
                self.write_at_end(&mut st, &buf[from..frame_start])?;
                self.rotate_locked(&mut st)?;
                from = frame_start;
            }
            frame_start = end;
        }
        self.write_at_end(&mut st, &buf[from..])?;
        st.written_seq += 1;
        Ok(st.written_seq)
    }

    fn write_at_end(&self, st: &mut State, bytes: &[u8]) -> Result<(), WalError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let path = segment_path(&self.dir, st.index);
        if let Err(e) = st.file.write_all_at(bytes, st.size) {
            // Cut back a partial write so the next record does not follow
            // garbage; if even that fails, stop accepting writes.
            if let Err(e2) = st.file.set_len(st.size) {
                st.poisoned = Some(format!(
                    "write to {} failed ({e}) and truncating back failed ({e2})",
                    path.display()
                ));
            }
            return Err(WalError::io("write segment", &path, e));
        }
        st.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate_locked(&self, st: &mut State) -> Result<(), WalError> {
        let old = segment_path(&self.dir, st.index);
        if let Err(e) = st.file.sync_data() {
            st.poisoned = Some(format!("fsync of {} failed: {e}", old.display()));
            return Err(WalError::io("fsync segment", &old, e));
        }
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let file = create_segment(&self.dir, st.index + 1)?;
        st.file = Arc::new(file);
        st.index += 1;
        st.size = SEGMENT_HEADER_LEN;
        self.counters
            .segments_created
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Returns once every write with sequence number `<= seq` is durable.
    ///
    /// The sync lock is not held during the fsync: a caller whose bytes an
    /// in-flight fsync already covers must be able to see that as soon as it
    /// finishes, not queue behind the next fsync.
    fn sync_to(&self, seq: u64) -> Result<(), WalError> {
        let mut g = self.sync.lock();
        loop {
            if g.synced >= seq {
                return Ok(());
            }
            if let Some(reason) = &g.failed {
                return Err(WalError::Poisoned {
                    dir: self.dir.clone(),
                    reason: reason.clone(),
                });
            }
            if g.in_progress {
                self.sync_cv.wait(&mut g);
                continue;
            }
            g.in_progress = true;
            drop(g);
            let snapshot = {
                let st = self.state.lock();
                self.check_poison(&st)
                    .map(|()| (Arc::clone(&st.file), st.written_seq, st.index))
            };
            let result = snapshot.and_then(|(file, target, index)| {
                file.sync_data().map(|()| target).map_err(|e| {
                    let path = segment_path(&self.dir, index);
                    self.state.lock().poisoned =
                        Some(format!("fsync of {} failed: {e}", path.display()));
                    WalError::io("fsync segment", &path, e)
                })
            });
            g = self.sync.lock();
            g.in_progress = false;
            self.sync_cv.notify_all();
            match result {
                Ok(target) => {
                    self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                    g.synced = g.synced.max(target);
                }
                Err(e) => {
                    g.failed = Some(e.to_string());
                    return Err(e);
                }
            }
        }
    }

    fn sync_loop(&self, every: Duration) {
        let mut stop = self.stop.lock();
        while !*stop {
            let timed_out = self.stop_cv.wait_for(&mut stop, every).timed_out();
            if !timed_out && *stop {
                break;
            }
            drop(stop);
            let seq = self.state.lock().written_seq;
            if let Err(error) = self.sync_to(seq) {
                tracing::error!(%error, "periodic WAL fsync failed");
            }
            stop = self.stop.lock();
        }
    }
}
