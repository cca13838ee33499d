//! [`Db`]: one node's storage engine — the WAL and the in-memory head behind
//! one append path and one read seam.
//!
//! Owns: the data directory (`<dir>/wal/` and one `<dir>/<ulid>/` per
//! persisted block, see `storage/docs/db.md`), WAL replay into the head on
//! open, the order in which appends reach the WAL and the head, WAL
//! checkpointing, and (in [`maintain`](self::maintain)) cutting blocks from
//! the head, compaction, retention and deletes. Must not: decide what a
//! sample may be (the head's append rules do), how the WAL or a block is
//! laid out, or which blocks to merge (the compact planner does).
//!
//! The server calls [`Db::start_background`] (or [`Db::maintain`] from its
//! own loop, Prometheus checks every minute) so the head is persisted once it
//! spans 1.5 block ranges; [`Db::open_with`] takes the block range and the
//! retention limits ([`BlockOptions`]).
//!
//! Reads ([`Querier`] for `Db`) merge the head with every block overlapping
//! the range; the block set is an `Arc` snapshot swapped atomically, so a
//! compaction never invalidates a read in flight.
//!
//! # Durability contract
//!
//! [`Db::append`] returns `Ok` only after the Series and Samples records of
//! every sample it reports as appended are written to the WAL, and:
//!
//! * under [`FsyncPolicy::Always`], fsynced: an acknowledged sample survives a
//!   process crash, a kernel crash and a power loss, and is replayed exactly
//!   once on the next [`Db::open`];
//! * under [`FsyncPolicy::Interval`]`(d)`, in the OS page cache and fsynced
//!   within `d`: it survives a process crash (SIGKILL included), but a power
//!   loss or kernel crash may lose what was acknowledged in the last `d`.
//!
//! Rejected samples (out of order, too old, duplicate timestamp with another
//! value, invalid labels) are neither logged nor applied; they are returned in
//! [`AppendStats::rejected`], one entry per sample, each naming the series.
//! The rest of the batch is appended, as Prometheus does. If the WAL write
//! itself fails, `append` returns the error and nothing of the batch is
//! acknowledged; its samples may already be visible to queries (they were
//! applied to the head) and may or may not reappear after a restart. A retry
//! of the same batch is safe: re-appending an identical sample is a no-op.
//!
//! # Blocking
//!
//! Every method is synchronous: `append` blocks on the WAL write and, under
//! `Always`, on the fsync; `open` replays the whole WAL. Async callers run
//! them on a blocking pool (`tokio::task::spawn_blocking`). Concurrent
//! `append` calls from many threads are what makes group commit pay off.
//!
//! # Ordering
//!
//! The WAL must list each series' samples in the order the head accepted
//! them, or a replay could reject a sample that was acknowledged (e.g. `t=12`
//! logged before `t=10` makes `t=10` out of order on replay). So applying a
//! batch to the head and writing its records happen under one lock; the
//! fsync, which dominates latency, happens outside it and is shared by every
//! batch waiting at the time (group commit). A series' Series record is
//! always written before the first Samples record that uses its ref: it is
//! created and logged in the same critical section, and a series whose record
//! failed to write is logged again by the next batch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::block::Block;
use crate::compact::{block_ranges, Compactor, CompactorOptions};
use crate::error::StorageError;
use crate::head::{Head, HeadOptions, SeriesRef};
use crate::labels::{Labels, Matcher};
use crate::querier::{MergeQuerier, Querier, SelectHints};
use crate::series::Series;
use crate::wal::{
    CheckpointStats, Corruption, FsyncPolicy, Record, RefSample, RefSeries, RefStSample,
    ReplayStats, Wal, WalOptions,
};

mod maintain;

pub use maintain::{Background, BlockOptions, DeleteStats, MaintainReport};

/// Settings of a [`Db`].
#[derive(Debug, Clone, Default)]
pub struct DbOptions {
    pub wal: WalOptions,
    pub head: HeadOptions,
}

/// What [`Db::open`] found while replaying the WAL.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub replay: ReplayStats,
    /// Series recreated in the head.
    pub series: u64,
    /// Series records whose labels already existed under another ref; their
    /// samples are mapped to the existing series.
    pub remapped_refs: u64,
    /// Samples applied to the head (including identical re-appends, which
    /// the head treats as no-ops).
    pub samples_applied: u64,
    /// Samples the head refused during replay (out of order, too old,
    /// duplicate with another value). Counted, logged once, not fatal.
    pub samples_rejected: u64,
    /// Samples whose series record was lost (e.g. to corruption).
    pub samples_unknown_series: u64,
    /// Tombstone entries read from the WAL and applied to the head.
    pub tombstones_applied: u64,
    /// Tombstone entries whose series is gone or holds nothing in range.
    pub tombstones_ignored: u64,
    /// WAL samples older than the newest block's end: already persisted in
    /// a block (the process stopped between writing a block and
    /// checkpointing the WAL), so not replayed into the head.
    pub samples_in_blocks: u64,
    /// Blocks loaded.
    pub blocks: usize,
    /// Block directories that could not be opened: moved aside to
    /// `<ulid>.corrupt` and not served (path, reason).
    pub corrupt_blocks: Vec<(PathBuf, String)>,
    /// Leftovers of interrupted writes, compactions and deletions removed.
    pub leftovers_removed: usize,
}

impl OpenReport {
    /// Corrupt WAL records skipped during replay (file, offset, reason).
    pub fn corruptions(&self) -> &[Corruption] {
        &self.replay.corruptions
    }
}

/// A sample of a batch that was not appended.
#[derive(Debug)]
pub struct Rejection {
    /// Position of the sample in the batch passed to [`Db::append`].
    pub index: usize,
    /// Why; every variant names the series.
    pub error: StorageError,
}

/// Outcome of one [`Db::append`].
#[derive(Debug, Default)]
pub struct AppendStats {
    /// Samples appended and acknowledged (durable per the policy).
    pub appended: usize,
    /// Series created by this batch.
    pub series_created: usize,
    /// Samples not appended, in batch order.
    pub rejected: Vec<Rejection>,
}

/// State guarded by the append lock.
struct AppendState {
    /// Series created in the head whose Series record failed to reach the
    /// WAL; the next batch logs them first.
    unlogged: Vec<RefSeries>,
    /// Ref for the next series created. The Db assigns refs itself, above
    /// every ref the WAL has ever mentioned, so that a ref in the WAL never
    /// names two label sets (the head alone would only stay above the refs
    /// of series it still holds).
    next_ref: u64,
}

/// The blocks served, sorted by (min time, id). Replaced as a whole.
type BlockSet = Arc<Vec<Arc<Block>>>;

/// One node's storage engine: WAL + head + blocks. Share it behind an `Arc`.
pub struct Db {
    dir: PathBuf,
    /// Exclusive `flock` on `<dir>/LOCK` for the Db's lifetime.
    _dir_lock: std::fs::File,
    head: Arc<Head>,
    blocks: RwLock<BlockSet>,
    /// Serialises head persistence, compaction, retention and deletes
    /// (the compactor's contract); never held by appends or reads.
    maint: Mutex<()>,
    compactor: Compactor,
    bopts: BlockOptions,
    /// End of the newest range persisted from the head (or loaded on open);
    /// head cuts start here. Advanced only once a block is served, so a cut
    /// that failed is retried.
    persisted_until: std::sync::atomic::AtomicI64,
    /// Held shared by every read (block set snapshot + head read) and
    /// exclusively by head truncation, so a read sees each persisted range
    /// in the block set or in the head, never in neither.
    read_gate: RwLock<()>,
    wal: Wal,
    append: Mutex<AppendState>,
    /// WAL ref → head ref, for Series records whose labels the head already
    /// knew under another ref at replay. Consulted by checkpoints so that the
    /// records of a remapped ref are kept while its series lives.
    ref_map: RwLock<HashMap<u64, u64>>,
    report: OpenReport,
}

impl Db {
    /// Opens (creating if needed) the database in `dir` with default
    /// [`BlockOptions`]; see [`Db::open_with`].
    pub fn open(dir: impl AsRef<Path>, opts: DbOptions) -> Result<Db, StorageError> {
        Db::open_with(dir, opts, BlockOptions::default())
    }

    /// Opens (creating if needed) the database in `dir`: removes leftovers
    /// of interrupted block writes, compactions and deletions, loads every
    /// complete block (a block that cannot be opened is moved aside to
    /// `<ulid>.corrupt`, reported, and not served), then replays the WAL
    /// into a new head whose lower bound is the newest block's end (so data
    /// already persisted is not replayed twice) and starts a new WAL
    /// segment. Corrupt WAL records do not fail the open; they are logged
    /// and listed in [`Db::open_report`].
    pub fn open_with(
        dir: impl AsRef<Path>,
        opts: DbOptions,
        bopts: BlockOptions,
    ) -> Result<Db, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        let start = Instant::now();
        let mut head_opts = opts.head.clone();
        if let Some(r) = bopts.block_range_ms.filter(|&r| r > 0) {
            // Chunks must be cut at block boundaries, or a truncation could
            // not drop exactly what a block holds.
            head_opts.chunk_range_ms = r;
        }
        let block_range = head_opts.chunk_range_ms.max(1);
        std::fs::create_dir_all(&dir).map_err(|source| crate::block::BlockError::Io {
            path: dir.clone(),
            source,
        })?;
        // Before anything in the directory changes: a second Db on the same
        // directory must be refused before it empties chunks_head/ or removes
        // block leftovers under a running one.
        let dir_lock = crate::wal::writer::lock_dir(&dir)?;
        // Completed head chunks live in mapped files under chunks_head/,
        // emptied here and rebuilt by the replay below (the WAL is the
        // source of truth; see storage/docs/head_chunks.md).
        let head = Arc::new(Head::with_chunks_dir(head_opts, dir.join("chunks_head"))?);
        let mut report = OpenReport::default();
        let compactor = Compactor::new(
            &dir,
            CompactorOptions {
                ranges: block_ranges(block_range, bopts.retention_time_ms),
                ..CompactorOptions::default()
            },
        );
        let scan = maintain::scan_blocks(&dir)?;
        let persisted_until = scan.persisted_until();
        if let Some(t) = persisted_until {
            head.set_min_valid_time(t);
        }
        let mut ref_map: HashMap<u64, u64> = HashMap::new();
        let mut first_reject: Option<StorageError> = None;
        let mut first_replay_error: Option<StorageError> = None;
        let mut max_ref = 0u64;
        let (wal, replay) = Wal::open(&dir.join("wal"), opts.wal.clone(), |rec| match rec {
            Record::Series(series) => {
                for s in series {
                    max_ref = max_ref.max(s.series_ref);
                    match head.get_or_create_with_ref(SeriesRef(s.series_ref), &s.labels) {
                        Ok((r, created)) => {
                            report.series += u64::from(created);
                            if r.0 != s.series_ref {
                                report.remapped_refs += 1;
                                ref_map.insert(s.series_ref, r.0);
                            } else {
                                ref_map.remove(&s.series_ref);
                            }
                        }
                        Err(e) => {
                            first_replay_error.get_or_insert(e);
                        }
                    }
                }
            }
            Record::Samples(samples) => {
                let map = &ref_map;
                for s in samples {
                    let r = if map.is_empty() {
                        s.series_ref
                    } else {
                        map.get(&s.series_ref).copied().unwrap_or(s.series_ref)
                    };
                    let res = head.append_ref(SeriesRef(r), s.t, s.v);
                    tally_replayed(&mut report, &mut first_reject, persisted_until, res);
                }
            }
            Record::StSamples(samples) => {
                // As Samples, restoring each sample's start timestamp.
                for s in samples {
                    let r = ref_map.get(&s.series_ref).copied().unwrap_or(s.series_ref);
                    let res = head.append_ref_with_st(SeriesRef(r), s.t, s.v, s.st);
                    tally_replayed(&mut report, &mut first_reject, persisted_until, res);
                }
            }
            Record::Tombstones(ts) => {
                for t in ts {
                    let r = ref_map.get(&t.series_ref).copied().unwrap_or(t.series_ref);
                    match head.delete_ref(SeriesRef(r), t.mint, t.maxt) {
                        Some(_) => report.tombstones_applied += 1,
                        None => report.tombstones_ignored += 1,
                    }
                }
            }
        })?;
        // The WAL lock is ours now: the directory may be tidied.
        let blocks = maintain::tidy_blocks(scan, &compactor, &mut report)?;
        if let Some(t) = persisted_until {
            // Series whose replayed samples were all in blocks are empty;
            // drop them as the next cut would.
            head.truncate_before(t);
        }
        if let Some(error) = first_replay_error {
            // A Series record the head cannot take (e.g. a ref clash) means
            // the WAL contradicts itself; refusing to open would make the node
            // unusable, so its samples are counted as unknown instead.
            tracing::error!(%error, "WAL series record could not be replayed");
        }
        if let Some(error) = first_reject {
            tracing::warn!(
                rejected = report.samples_rejected,
                first = %error,
                "head rejected samples during WAL replay"
            );
        }
        if report.samples_unknown_series > 0 {
            tracing::warn!(
                samples = report.samples_unknown_series,
                "WAL samples reference series whose record was lost"
            );
        }
        for c in &replay.corruptions {
            tracing::error!(corruption = %c, "WAL corruption skipped during replay");
        }
        report.replay = replay;
        tracing::info!(
            dir = %dir.display(),
            blocks = report.blocks,
            corrupt_blocks = report.corrupt_blocks.len(),
            series = report.series,
            samples = report.samples_applied,
            samples_in_blocks = report.samples_in_blocks,
            rejected = report.samples_rejected,
            corruptions = report.replay.corruptions.len(),
            elapsed_ms = start.elapsed().as_millis() as u64,
            "database opened"
        );
        let next_ref = max_ref.max(head.last_series_ref().0) + 1;
        Ok(Db {
            dir,
            _dir_lock: dir_lock,
            head,
            blocks: RwLock::new(Arc::new(blocks)),
            read_gate: RwLock::new(()),
            persisted_until: std::sync::atomic::AtomicI64::new(persisted_until.unwrap_or(i64::MIN)),
            maint: Mutex::new(()),
            compactor,
            bopts: BlockOptions {
                block_range_ms: Some(block_range),
                ..bopts
            },
            wal,
            append: Mutex::new(AppendState {
                unlogged: Vec::new(),
                next_ref,
            }),
            ref_map: RwLock::new(ref_map),
            report,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The in-memory head (for block writing and statistics).
    pub fn head(&self) -> &Arc<Head> {
        &self.head
    }

    /// The WAL (for statistics and tools).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// What the WAL replay on open found.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Appends a batch of `(labels, timestamp ms, value)` samples.
    ///
    /// Valid samples are applied and logged; invalid ones (bad labels, out of
    /// order, too old, duplicate timestamp with another value) are skipped and
    /// listed in [`AppendStats::rejected`] with their batch index and an error
    /// naming the series. `Ok` means every sample counted in
    /// [`AppendStats::appended`] is acknowledged:
    ///
    /// * `FsyncPolicy::Always`: written and fsynced; it survives a process
    ///   crash, a kernel crash and a power loss.
    /// * `FsyncPolicy::Interval(d)`: written to the page cache; it survives a
    ///   process crash, but a power loss or kernel crash may lose samples
    ///   acknowledged less than `d` before it.
    ///
    /// `Err` acknowledges nothing (see the module docs for what a failed WAL
    /// write leaves behind; retrying the batch is safe).
    pub fn append(&self, samples: &[(Labels, i64, f64)]) -> Result<AppendStats, StorageError> {
        self.append_inner(samples, None)
    }

    /// As [`Db::append`], with each sample's start timestamp
    /// (`start_timestamps[i]` for `samples[i]`, ms; 0 = unknown). Samples
    /// with a non-zero one are logged in an StSamples record
    /// (`docs/wal.md`), so replay restores it; blocks do not keep start
    /// timestamps (`docs/block.md`). Mismatched lengths are an error that
    /// applies nothing.
    pub fn append_with_st(
        &self,
        samples: &[(Labels, i64, f64)],
        start_timestamps: &[i64],
    ) -> Result<AppendStats, StorageError> {
        if start_timestamps.len() != samples.len() {
            return Err(StorageError::Internal(format!(
                "append_with_st: {} start timestamps for {} samples",
                start_timestamps.len(),
                samples.len()
            )));
        }
        self.append_inner(samples, Some(start_timestamps))
    }

    /// As [`Db::append`], with a series ref hint per sample (`hints[i]` for
    /// `samples[i]`; `hints` may be shorter than `samples`, missing hints are
    /// `None`), e.g. the refs an earlier call returned. A hinted sample skips
    /// the lookup by labels and is appended by ref; the hint must name the
    /// series of `samples[i].0` (refs are never reused, so a ref returned for
    /// these labels stays valid or becomes unknown). A stale hint (the series
    /// was removed by a head truncation) falls back to the labels, creating
    /// the series again if needed. Samples are logged to the WAL exactly as
    /// by [`Db::append`], under the same ordering rules.
    ///
    /// Also returns, per sample, the ref of its series when it was appended
    /// (`None` when rejected), to be passed as the hint next time.
    pub fn append_hinted(
        &self,
        samples: &[(Labels, i64, f64)],
        hints: &[Option<SeriesRef>],
    ) -> Result<(AppendStats, Vec<Option<SeriesRef>>), StorageError> {
        let mut out = vec![None; samples.len()];
        let stats = self.append_core(samples, None, hints, Some(&mut out), true)?;
        Ok((stats, out))
    }

    /// As [`Db::append_hinted`], but returns once the samples are written
    /// to the WAL, without waiting for the fsync [`FsyncPolicy::Always`]
    /// asks for acknowledged writes. For scraped samples, which no client
    /// waits on (Prometheus does not fsync its WAL per append either). They
    /// become durable with the next fsync: of a later acknowledged append,
    /// a segment rotation, the interval timer, or [`Db::sync`] at shutdown.
    /// A process crash loses none of them (they are in the page cache); a
    /// kernel crash or power loss may lose those written since that fsync.
    pub fn append_hinted_unsynced(
        &self,
        samples: &[(Labels, i64, f64)],
        hints: &[Option<SeriesRef>],
    ) -> Result<(AppendStats, Vec<Option<SeriesRef>>), StorageError> {
        let mut out = vec![None; samples.len()];
        let stats = self.append_core(samples, None, hints, Some(&mut out), false)?;
        Ok((stats, out))
    }

    fn append_inner(
        &self,
        samples: &[(Labels, i64, f64)],
        sts: Option<&[i64]>,
    ) -> Result<AppendStats, StorageError> {
        self.append_core(samples, sts, &[], None, true)
    }

    fn append_core(
        &self,
        samples: &[(Labels, i64, f64)],
        sts: Option<&[i64]>,
        hints: &[Option<SeriesRef>],
        mut out_refs: Option<&mut Vec<Option<SeriesRef>>>,
        durable: bool,
    ) -> Result<AppendStats, StorageError> {
        let mut stats = AppendStats::default();
        // Resolve known series outside the lock; only creation needs it.
        let mut refs: Vec<Option<SeriesRef>> = Vec::with_capacity(samples.len());
        let mut invalid = vec![false; samples.len()];
        for (i, (labels, _, _)) in samples.iter().enumerate() {
            if let Some(Some(h)) = hints.get(i) {
                refs.push(Some(*h));
                continue;
            }
            let r = self.head.get_ref(labels);
            if r.is_none() {
                if let Err(e) = labels.validate() {
                    invalid[i] = true;
                    stats.rejected.push(Rejection {
                        index: i,
                        error: e.into(),
                    });
                }
            }
            refs.push(r);
        }

        let mut new_series: Vec<RefSeries> = Vec::new();
        let mut accepted: Vec<RefSample> = Vec::with_capacity(samples.len());
        let mut accepted_st: Vec<RefStSample> = Vec::new();
        let seq = {
            let mut st = self.append.lock();
            // Series an earlier failed batch created but could not log.
            new_series.append(&mut st.unlogged);
            let carried = new_series.len();
            for (i, (labels, t, v)) in samples.iter().enumerate() {
                if invalid[i] {
                    continue;
                }
                let start_t = sts.map_or(0, |s| s[i]);
                let new = &mut new_series;
                let res = self.append_one(refs[i], labels, *t, *v, start_t, new, &mut st.next_ref);
                if let (Ok(r), Some(o)) = (&res, out_refs.as_deref_mut()) {
                    if let Some(slot) = o.get_mut(i) {
                        *slot = Some(*r);
                    }
                }
                match res {
                    Ok(r) if start_t != 0 => accepted_st.push(RefStSample {
                        series_ref: r.0,
                        t: *t,
                        v: *v,
                        st: start_t,
                    }),
                    Ok(r) => accepted.push(RefSample {
                        series_ref: r.0,
                        t: *t,
                        v: *v,
                    }),
                    Err(error) => stats.rejected.push(Rejection { index: i, error }),
                }
            }
            stats.series_created = new_series.len() - carried;
            let mut records = Vec::with_capacity(3);
            if !new_series.is_empty() {
                records.push(Record::Series(&new_series));
            }
            if !accepted.is_empty() {
                records.push(Record::Samples(&accepted));
            }
            if !accepted_st.is_empty() {
                records.push(Record::StSamples(&accepted_st));
            }
            if records.is_empty() {
                None
            } else {
                match self.wal.write(&records) {
                    Ok(seq) => Some(seq),
                    Err(e) => {
                        st.unlogged = new_series;
                        return Err(e.into());
                    }
                }
            }
        };
        if let (Some(seq), true) = (seq, durable) {
            self.wal.wait_durable(seq)?;
        }
        stats.appended = accepted.len() + accepted_st.len();
        stats.rejected.sort_by_key(|r| r.index);
        Ok(stats)
    }

    /// Applies one sample to the head (creating its series when needed,
    /// noting it in `new_series`). Called under the append lock.
    fn append_one(
        &self,
        known: Option<SeriesRef>,
        labels: &Labels,
        t: i64,
        v: f64,
        start_t: i64,
        new_series: &mut Vec<RefSeries>,
        next_ref: &mut u64,
    ) -> Result<SeriesRef, StorageError> {
        if let Some(r) = known {
            match self.head.append_ref_with_st(r, t, v, start_t) {
                // A head truncation removed the series since the lookup:
                // create it again below.
                Err(StorageError::UnknownSeriesRef(_)) => {}
                other => return other.map(|()| r),
            }
        }
        let (r, created) = self
            .head
            .get_or_create_with_ref(SeriesRef(*next_ref), labels)?;
        if created {
            *next_ref += 1;
            new_series.push(RefSeries {
                series_ref: r.0,
                labels: labels.clone(),
            });
        }
        self.head.append_ref_with_st(r, t, v, start_t).map(|()| r)
    }

    /// Drops head data older than `mint` (already persisted in blocks) and
    /// checkpoints the WAL: every closed segment is replaced by a checkpoint
    /// holding the series still in the head and their samples `>= mint`.
    /// Returns `None` when there was no closed segment.
    pub fn checkpoint(&self, mint: i64) -> Result<Option<CheckpointStats>, StorageError> {
        // Waits for reads in flight: one may hold a block set taken before
        // the block of this range was added, and must still find the range
        // in the head.
        let dropped = {
            let _g = self.read_gate.write();
            self.head.truncate_before(mint)
        };
        let map = self.ref_map.read();
        let head = &self.head;
        let keep = |r: u64| {
            let r = map.get(&r).copied().unwrap_or(r);
            head.labels(SeriesRef(r)).is_some()
        };
        let stats = self.wal.checkpoint(keep, mint)?;
        tracing::info!(
            mint,
            series_dropped = dropped.len(),
            "head truncated and WAL checkpointed"
        );
        Ok(stats)
    }

    /// fsyncs everything written (useful under `FsyncPolicy::Interval`).
    pub fn sync(&self) -> Result<(), StorageError> {
        Ok(self.wal.sync()?)
    }

    /// Flushes the WAL and closes the database.
    pub fn close(self) -> Result<(), StorageError> {
        Ok(self.wal.close()?)
    }

    /// The fsync policy in force.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.wal.fsync_policy()
    }
}

impl Db {
    /// The blocks served now (a snapshot: a later compaction does not change
    /// it, and its blocks stay readable while it is held).
    pub fn blocks(&self) -> Arc<Vec<Arc<Block>>> {
        self.blocks.read().clone()
    }

    /// A querier over every block overlapping `[mint, maxt]` and the head.
    /// It holds the blocks it reads, so it stays valid across compactions;
    /// the caller holds `read_gate` while using it, so that no head
    /// truncation falls between taking the block set and reading the head.
    fn querier(&self, mint: i64, maxt: i64) -> MergeQuerier {
        let blocks = self.blocks();
        let mut qs: Vec<Arc<dyn Querier>> = Vec::with_capacity(blocks.len() + 1);
        for b in blocks.iter().filter(|b| b.overlaps(mint, maxt)) {
            qs.push(b.clone());
        }
        qs.push(self.head.clone());
        MergeQuerier::new(qs)
    }
}

/// Head and blocks merged: series present in several are merged, samples
/// with equal timestamps de-duplicated, tombstones applied.
impl Querier for Db {
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, StorageError> {
        let _g = self.read_gate.read();
        self.querier(mint, maxt).select(mint, maxt, matchers, hints)
    }

    fn label_names(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        let _g = self.read_gate.read();
        self.querier(mint, maxt).label_names(mint, maxt, matchers)
    }

    fn label_values(
        &self,
        name: &str,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        let _g = self.read_gate.read();
        self.querier(mint, maxt)
            .label_values(name, mint, maxt, matchers)
    }
}

/// Counts one replayed sample's outcome in the open report. A sample the
/// head refuses as too old because a block already holds its range is
/// expected after a crash between a block write and the WAL checkpoint.
fn tally_replayed(
    report: &mut OpenReport,
    first_reject: &mut Option<StorageError>,
    persisted_until: Option<i64>,
    res: Result<(), StorageError>,
) {
    match res {
        Ok(()) => report.samples_applied += 1,
        Err(StorageError::UnknownSeriesRef(_)) => report.samples_unknown_series += 1,
        Err(StorageError::TooOldSample { timestamp, .. })
            if persisted_until.is_some_and(|p| timestamp < p) =>
        {
            report.samples_in_blocks += 1
        }
        Err(e) => {
            report.samples_rejected += 1;
            first_reject.get_or_insert(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::chunk::{SampleIterator, ValueType};
    use crate::labels::MatchType;

    type Dump = BTreeMap<String, Vec<(i64, u64)>>;

    /// Every sample of every series; also checks the head stored no
    /// timestamp twice (chunk sample counts equal the de-duplicated count).
    fn dump(db: &Db) -> Dump {
        let m = Matcher::new(MatchType::Regex, "__name__", ".+").unwrap();
        let mut out = Dump::new();
        for s in db.select(i64::MIN, i64::MAX, &[m], None).unwrap() {
            let stored: usize = s.chunks.iter().map(|c| c.chunk.num_samples()).sum();
            let mut it = s.iter();
            let mut v = Vec::new();
            while it.next() == ValueType::Float {
                let (t, x) = it.at();
                v.push((t, x.to_bits()));
            }
            assert!(it.err().is_none());
            assert_eq!(
                stored,
                v.len(),
                "head holds duplicate samples for {}",
                s.labels
            );
            out.insert(s.labels.to_string(), v);
        }
        out
    }

    fn lbl(name: &str, i: u64) -> Labels {
        Labels::from_pairs([("__name__", name), ("i", &i.to_string())])
    }

    fn opts() -> DbOptions {
        DbOptions {
            wal: WalOptions {
                segment_size: 4096,
                fsync: FsyncPolicy::Always,
            },
            head: HeadOptions::default(),
        }
    }

    #[test]
    fn hinted_appends_log_and_replay_like_label_appends() {
        let by_ref = tempfile::tempdir().unwrap();
        let by_labels = tempfile::tempdir().unwrap();
        let a = Db::open(by_ref.path(), opts()).unwrap();
        let b = Db::open(by_labels.path(), opts()).unwrap();
        let mut hints: Vec<Option<SeriesRef>> = Vec::new();
        for round in 0..20i64 {
            // Round 7 goes out of order for series 3 (rejected both ways).
            let batch: Vec<(Labels, i64, f64)> = (0..10)
                .map(|i| {
                    let t = if round == 7 && i == 3 {
                        5
                    } else {
                        1000 + round * 15
                    };
                    (lbl("m", i), t, (round * 10 + i as i64) as f64)
                })
                .collect();
            let (sa, refs) = a.append_hinted(&batch, &hints).unwrap();
            let sb = b.append(&batch).unwrap();
            assert_eq!(sa.appended, sb.appended);
            assert_eq!(sa.series_created, sb.series_created);
            let ia: Vec<usize> = sa.rejected.iter().map(|r| r.index).collect();
            let ib: Vec<usize> = sb.rejected.iter().map(|r| r.index).collect();
            assert_eq!(ia, ib);
            for (i, r) in refs.iter().enumerate() {
                assert_eq!(r.is_none(), ia.contains(&i));
                if let Some(r) = r {
                    assert_eq!(a.head().get_ref(&batch[i].0), Some(*r));
                }
            }
            if round > 0 && round != 7 {
                // Refs stay valid from one batch to the next.
                assert_eq!(refs, hints);
            }
            if round != 7 {
                hints = refs;
            }
        }
        let want = dump(&b);
        assert_eq!(dump(&a), want);
        drop(a);
        drop(b);
        let a = Db::open(by_ref.path(), opts()).unwrap();
        assert_eq!(dump(&a), want);
        assert_eq!(a.open_report().samples_applied, 199);
        assert!(a.open_report().corruptions().is_empty());
    }

    #[test]
    fn unsynced_appends_skip_the_fsync_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(); // fsync: always
        let db = Db::open(dir.path(), o.clone()).unwrap();
        let before = db.wal().stats().fsyncs;
        let (st, refs) = db
            .append_hinted_unsynced(&[(lbl("m", 0), 1000, 1.0), (lbl("m", 1), 1000, 2.0)], &[])
            .unwrap();
        assert_eq!(st.appended, 2);
        assert_eq!(db.wal().stats().fsyncs, before, "no fsync waited for");
        db.append_hinted_unsynced(&[(lbl("m", 0), 2000, 3.0)], &refs)
            .unwrap();
        assert_eq!(db.wal().stats().fsyncs, before);
        // An acknowledged append fsyncs, covering what was written before.
        db.append(&[(lbl("m", 1), 2000, 4.0)]).unwrap();
        assert!(db.wal().stats().fsyncs > before);
        let want = dump(&db);
        drop(db);
        let db = Db::open(dir.path(), o).unwrap();
        assert_eq!(dump(&db), want);
        assert_eq!(db.open_report().samples_applied, 4);
    }

    #[test]
    fn stale_hint_after_head_truncation_falls_back_to_labels() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        let (_, refs) = db
            .append_hinted(&[(lbl("m", 0), 1000, 1.0), (lbl("m", 1), 1000, 1.0)], &[])
            .unwrap();
        let old = refs[0].unwrap();
        // Series 1 keeps data after 2000, series 0 does not: truncation
        // removes series 0 and its ref becomes unknown.
        db.append(&[(lbl("m", 1), 3000, 2.0)]).unwrap();
        let dropped = db.head().truncate_before(2000);
        assert_eq!(dropped, vec![old]);
        let (st, again) = db
            .append_hinted(&[(lbl("m", 0), 4000, 3.0), (lbl("m", 1), 4000, 3.0)], &refs)
            .unwrap();
        assert_eq!(st.appended, 2);
        assert!(st.rejected.is_empty());
        assert_eq!(st.series_created, 1);
        let new = again[0].unwrap();
        assert_ne!(new, old);
        assert_eq!(again[1], refs[1]);
        assert_eq!(db.head().get_ref(&lbl("m", 0)), Some(new));
        let got = dump(&db);
        assert_eq!(got[&lbl("m", 0).to_string()], vec![(4000, 3f64.to_bits())]);
        drop(db);
        // Without a checkpoint the WAL still holds the truncated samples;
        // what was appended after the truncation replays unchanged.
        let db = Db::open(dir.path(), opts()).unwrap();
        let recent = |d: Dump| -> Dump {
            d.into_iter()
                .map(|(k, v)| (k, v.into_iter().filter(|(t, _)| *t >= 2000).collect()))
                .collect()
        };
        assert_eq!(recent(dump(&db)), recent(got));
    }

    #[test]
    fn append_reopen_restores_everything() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        for round in 0..20i64 {
            let batch: Vec<(Labels, i64, f64)> = (0..10)
                .map(|i| {
                    (
                        lbl("m", i),
                        1000 + round * 15,
                        (round * 10 + i as i64) as f64,
                    )
                })
                .collect();
            let st = db.append(&batch).unwrap();
            assert_eq!(st.appended, 10);
            assert!(st.rejected.is_empty());
            assert_eq!(st.series_created, if round == 0 { 10 } else { 0 });
        }
        let before = dump(&db);
        assert_eq!(before.len(), 10);
        assert!(before.values().all(|v| v.len() == 20));
        drop(db);
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(dump(&db), before);
        assert_eq!(db.open_report().series, 10);
        assert_eq!(db.open_report().samples_applied, 200);
        assert!(db.open_report().corruptions().is_empty());
        // Refs survive, so new series do not collide with replayed ones.
        db.append(&[(lbl("n", 0), 5000, 1.0)]).unwrap();
        let mut want = before.clone();
        want.insert(lbl("n", 0).to_string(), vec![(5000, 1f64.to_bits())]);
        drop(db);
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(dump(&db), want);
    }

    #[test]
    fn bad_samples_are_reported_and_the_rest_appended() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        db.append(&[(lbl("m", 1), 100, 1.0), (lbl("m", 2), 100, 1.0)])
            .unwrap();
        let bad_name = Labels::from_pairs([("__name__", "m"), ("bad-name", "x")]);
        let st = db
            .append(&[
                (lbl("m", 1), 50, 2.0),  // out of order
                (lbl("m", 1), 200, 3.0), // fine
                (lbl("m", 2), 100, 9.0), // duplicate timestamp, other value
                (lbl("m", 2), 100, 1.0), // identical re-append: accepted no-op
                (bad_name, 100, 1.0),
                (Labels::empty(), 100, 1.0),
            ])
            .unwrap();
        assert_eq!(st.appended, 2);
        let idx: Vec<usize> = st.rejected.iter().map(|r| r.index).collect();
        assert_eq!(idx, vec![0, 2, 4, 5]);
        assert!(matches!(
            st.rejected[0].error,
            StorageError::OutOfOrderSample { .. }
        ));
        assert!(matches!(
            st.rejected[1].error,
            StorageError::DuplicateSample { .. }
        ));
        assert!(matches!(st.rejected[2].error, StorageError::Label(_)));
        assert!(st.rejected[0].error.to_string().contains(r#"i="1""#));
        assert!(st.rejected[1].error.to_string().contains(r#"i="2""#));
        let before = dump(&db);
        drop(db);
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(dump(&db), before);
        assert_eq!(db.open_report().samples_rejected, 0);
        assert_eq!(
            before[&lbl("m", 1).to_string()],
            vec![(100, 1f64.to_bits()), (200, 3f64.to_bits())]
        );
    }

    #[test]
    fn concurrent_appenders_replay_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), opts()).unwrap());
        // Writers race on shared series with overlapping timestamps, so the
        // head accepts some and rejects others; replay must reproduce exactly
        // the accepted set.
        let hs: Vec<_> = (0..6u64)
            .map(|w| {
                let db = Arc::clone(&db);
                std::thread::spawn(move || {
                    let mut acked = 0;
                    for k in 0..40i64 {
                        let batch: Vec<(Labels, i64, f64)> = (0..5)
                            .map(|i| (lbl("c", (w + i) % 7), k * 10 + (w as i64 % 3), w as f64))
                            .collect();
                        acked += db.append(&batch).unwrap().appended;
                    }
                    acked
                })
            })
            .collect();
        let acked: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        let before = dump(&db);
        assert_eq!(before.values().map(Vec::len).sum::<usize>(), acked);
        drop(db);
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(db.open_report().samples_rejected, 0);
        assert_eq!(dump(&db), before);
    }

    #[test]
    fn checkpoint_keeps_live_data_and_drops_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        // Series 0 only has old data; series 1 spans the cut.
        for t in 0..100i64 {
            let mut batch = vec![(lbl("m", 1), t, -(t as f64))];
            if t < 40 {
                batch.push((lbl("m", 0), t, t as f64));
            }
            db.append(&batch).unwrap();
        }
        let cp = db.checkpoint(50).unwrap().unwrap();
        assert_eq!((cp.series_dropped, cp.samples_dropped), (1, 90));
        for t in 100..120i64 {
            db.append(&[(lbl("m", 1), t, -(t as f64)), (lbl("m", 0), t, 1.0)])
                .unwrap();
        }
        let before = dump(&db);
        drop(db);
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(db.open_report().replay.checkpoint, Some(cp.index));
        let after = dump(&db);
        // Samples >= 50 of series 1 all come back; series 0 comes back with
        // only its post-checkpoint samples (it was dropped and re-created).
        let s1: Vec<i64> = after[&lbl("m", 1).to_string()]
            .iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(s1.first(), Some(&50));
        assert_eq!(s1.len(), 70);
        assert_eq!(after[&lbl("m", 0).to_string()].len(), 20);
        // What was still in the head before the restart comes back as is
        // (the head had dropped chunks before 50 already or keeps them).
        for (k, v) in &after {
            let b = &before[k];
            assert!(v.iter().all(|x| b.contains(x)), "{k}");
        }
        assert!(db.open_report().corruptions().is_empty());
    }

    #[test]
    fn refs_are_never_reused_after_a_remap() {
        // A WAL where series A was logged under ref 1 and again under ref 3
        // (truncated from the head and re-created before a checkpoint could
        // publish): replay maps 3 -> 1, and new series must still get refs
        // above 3, or ref 3 would name two label sets in the WAL.
        let dir = tempfile::tempdir().unwrap();
        let a = lbl("a", 0);
        let b = lbl("b", 0);
        {
            let (wal, _) = Wal::open(&dir.path().join("wal"), opts().wal, |_| {}).unwrap();
            let s = |r: u64, l: &Labels| RefSeries {
                series_ref: r,
                labels: l.clone(),
            };
            let x = |r: u64, t: i64| RefSample {
                series_ref: r,
                t,
                v: t as f64,
            };
            wal.log(&[
                Record::Series(&[s(1, &a), s(2, &b)]),
                Record::Samples(&[x(1, 10), x(2, 10)]),
                Record::Series(&[s(3, &a)]),
                Record::Samples(&[x(3, 20)]),
            ])
            .unwrap();
        }
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(db.open_report().remapped_refs, 1);
        let c = lbl("c", 0);
        db.append(&[(c.clone(), 30, 3.0), (a.clone(), 30, 30.0)])
            .unwrap();
        assert_eq!(db.head().get_ref(&c), Some(SeriesRef(4)));
        let before = dump(&db);
        assert_eq!(before[&a.to_string()].len(), 3);
        drop(db);
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(dump(&db), before);
    }
}
