//! Everything [`Db`] does to its blocks: loading them on open, cutting
//! blocks from the head, compaction, retention, deletes, and the background
//! thread that runs them.
//!
//! # Protocol (see `storage/docs/db.md` for the crash analysis)
//!
//! Head persistence, compaction, retention and deletes run one at a time
//! under `Db::maint`; appends and reads never take that lock. A head cut:
//!
//! 1. picks the oldest whole block-range-aligned part `[mint, maxt)` of the
//!    head, once the head spans more than 1.5 block ranges;
//! 2. raises the head's lower bound to `maxt` under the append lock (held
//!    for that store only), so no sample can land in the range after it is
//!    read: every append through `Db` runs under that lock, so none is
//!    between its bound check and its insert at that moment;
//! 3. writes the range as a level-1 block (`<ulid>.tmp`, fsync, rename)
//!    without any lock appends need, opens it and adds it to the block set;
//! 4. truncates the head before `maxt` and checkpoints the WAL.
//!
//! The head never holds a sample below the newest block's end (its lower
//! bound only rises; on open it starts at that end), so head data never
//! falls into an already persisted range: such a sample is refused as too
//! old and never acknowledged. Should the head hold data in a persisted
//! range anyway (an out-of-order chunk straddling `maxt` keeps its older
//! samples until it is dropped), the next cut starts at the end of the last
//! range persisted, so they are not written twice; and if a range is ever
//! written twice (a cut whose block failed to open is retried) the second
//! block overlaps the first and the planner merges them vertically (samples
//! with equal timestamps de-duplicated); reads merge the same way meanwhile.
//!
//! Blocks removed by compaction or retention are unlinked at once, but an
//! open [`Block`] keeps its index and chunk files open, so a read holding
//! the old block set finishes normally; the space is freed when the last
//! `Arc<Block>` is dropped (deferred deletion by the kernel's reference
//! counts).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Db, OpenReport};
use crate::block::{
    dir_size, Block, BlockError, BlockMeta, BlockWriter, Ulid, META_FILENAME, TMP_SUFFIX,
};
use crate::compact::{apply_retention, delete_block, Compactor, RetentionPolicy};
use crate::error::StorageError;
use crate::labels::Matcher;
use crate::wal::{Record, Tombstone};

/// Block settings of a [`Db`]. `Default`: 2h blocks (the head's chunk
/// range), no retention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockOptions {
    /// Size of blocks cut from the head (ms); overrides
    /// `HeadOptions::chunk_range_ms` when set, since chunks are cut at block
    /// boundaries. Compaction ranges are 1×, 3×, 9×, … of it.
    pub block_range_ms: Option<i64>,
    /// Delete blocks whose end is more than this far behind the newest
    /// block's end (ms).
    pub retention_time_ms: Option<i64>,
    /// Delete the oldest blocks while blocks plus the WAL take more bytes.
    pub retention_bytes: Option<u64>,
}

/// What one [`Db::maintain`] did.
#[derive(Debug, Clone, Default)]
pub struct MaintainReport {
    /// Level-1 blocks cut from the head.
    pub head_blocks: Vec<BlockMeta>,
    /// Blocks written by compaction.
    pub compacted: Vec<BlockMeta>,
    /// Blocks deleted by retention.
    pub retention_deleted: Vec<Ulid>,
}

/// What one [`Db::delete`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteStats {
    /// Series of the head with data deleted.
    pub head_series: u64,
    /// (Block, series) pairs with data deleted.
    pub block_series: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BlockError + '_ {
    move |source| BlockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Blocks found on open, before anything in the directory is changed.
pub(super) struct Scan {
    blocks: Vec<Arc<Block>>,
    failed: Vec<(PathBuf, String)>,
    leftovers: Vec<PathBuf>,
}

impl Scan {
    /// End of the newest block that opened (the head's lower bound).
    pub(super) fn persisted_until(&self) -> Option<i64> {
        self.blocks.iter().map(|b| b.max_time()).max()
    }
}

/// First half of open, read-only (it runs before the WAL lock is taken, so
/// it must not touch a directory another process may own): opens every
/// `<ulid>/` with a `meta.json` and notes `*.tmp*` leftovers and blocks
/// that fail to open.
pub(super) fn scan_blocks(dir: &Path) -> Result<Scan, StorageError> {
    let mut scan = Scan {
        blocks: Vec::new(),
        failed: Vec::new(),
        leftovers: Vec::new(),
    };
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let path = e.path();
        if !path.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((stem, _)) = name.split_once(TMP_SUFFIX) {
            if stem.parse::<Ulid>().is_ok() {
                scan.leftovers.push(path);
            }
            continue;
        }
        if name.parse::<Ulid>().is_err() {
            continue;
        }
        if !path.join(META_FILENAME).exists() {
            // Blocks are renamed into place complete, so this is not one of
            // ours; leave it alone but say so.
            tracing::warn!(dir = %path.display(), "block directory without meta.json ignored");
            continue;
        }
        match Block::open(&path) {
            Ok(b) => scan.blocks.push(Arc::new(b)),
            Err(error) => scan.failed.push((path, error.to_string())),
        }
    }
    Ok(scan)
}

/// Second half of open, under the WAL lock: removes `*.tmp*` leftovers,
/// moves blocks that failed to open aside to `<ulid>.corrupt` (so they are
/// neither served nor planned for compaction), and deletes blocks that an
/// interrupted compaction had already merged into another. Returns the
/// blocks to serve, sorted by (min time, id).
pub(super) fn tidy_blocks(
    scan: Scan,
    compactor: &Compactor,
    report: &mut OpenReport,
) -> Result<Vec<Arc<Block>>, StorageError> {
    for path in scan.leftovers {
        tracing::warn!(dir = %path.display(), "removing unfinished block directory");
        std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
        report.leftovers_removed += 1;
    }
    for (path, error) in scan.failed {
        let mut aside = path.clone().into_os_string();
        aside.push(".corrupt");
        let aside = PathBuf::from(aside);
        tracing::error!(dir = %path.display(), %error, moved_to = %aside.display(),
            "block cannot be opened; moving it aside and not serving it");
        std::fs::rename(&path, &aside).map_err(io_err(&path))?;
        report.corrupt_blocks.push((path, error));
    }
    // A crash between writing a compacted block and deleting its sources
    // leaves both; the sources would be read twice. (They end no later than
    // the merged block, so the head's lower bound is unaffected.)
    let parents = compactor.cleanup()?;
    report.leftovers_removed += parents.len();
    let parents: HashSet<Ulid> = parents.into_iter().collect();
    let mut blocks = scan.blocks;
    blocks.retain(|b| !parents.contains(&b.id()));
    blocks.sort_by_key(|b| (b.min_time(), b.id()));
    report.blocks = blocks.len();
    for b in &blocks {
        tracing::debug!(block = %b.id(), min_time = b.min_time(), max_time = b.max_time(), "block loaded");
    }
    Ok(blocks)
}

impl Db {
    /// Size of blocks cut from the head (ms).
    pub fn block_range_ms(&self) -> i64 {
        self.bopts
            .block_range_ms
            .unwrap_or(self.head.options().chunk_range_ms)
    }

    /// The block settings in force.
    pub fn block_options(&self) -> BlockOptions {
        self.bopts
    }

    /// Replaces the block set: drops `removed`, adds `added`.
    fn swap_blocks(&self, removed: &HashSet<Ulid>, added: Vec<Arc<Block>>) {
        let mut g = self.blocks.write();
        let mut v: Vec<Arc<Block>> = g
            .iter()
            .filter(|b| !removed.contains(&b.id()))
            .cloned()
            .collect();
        v.extend(added);
        v.sort_by_key(|b| (b.min_time(), b.id()));
        *g = Arc::new(v);
    }

    fn open_block(&self, id: Ulid) -> Result<Arc<Block>, StorageError> {
        Ok(Arc::new(Block::open(&self.dir.join(id.to_string()))?))
    }

    /// Persists the head as Prometheus does: while it spans more than 1.5
    /// block ranges, its oldest whole aligned range becomes a level-1 block,
    /// then the head is truncated and the WAL checkpointed. Appends continue
    /// meanwhile. Returns the metas of the blocks written.
    pub fn compact_head(&self) -> Result<Vec<BlockMeta>, StorageError> {
        let _m = self.maint.lock();
        self.compact_head_locked()
    }

    fn compact_head_locked(&self) -> Result<Vec<BlockMeta>, StorageError> {
        let range = self.block_range_ms();
        let mut written = Vec::new();
        loop {
            let hmax = self.head.max_time();
            // Out-of-order chunks may straddle a cut and keep samples below
            // it in the head; they are persisted already.
            let lo = self
                .head
                .min_time()
                .max(self.persisted_until.load(Ordering::Acquire));
            if hmax == i64::MIN || lo == i64::MAX || hmax.saturating_sub(lo) <= range / 2 * 3 {
                return Ok(written);
            }
            let mint = lo.div_euclid(range) * range;
            if let Some(m) = self.persist_range(mint, mint.saturating_add(range))? {
                written.push(m);
            }
        }
    }

    /// Writes the head's `[mint, maxt)` as a block (none when it holds no
    /// sample there), then truncates the head before `maxt` and checkpoints
    /// the WAL.
    fn persist_range(&self, mint: i64, maxt: i64) -> Result<Option<BlockMeta>, StorageError> {
        {
            let _a = self.append.lock();
            self.head.set_min_valid_time(maxt);
        }
        let start = Instant::now();
        let series = self.head.series_for_range(mint, maxt - 1);
        let mut out = None;
        if !series.is_empty() {
            let meta = BlockWriter::new(&self.dir, mint, maxt).write(series)?;
            if meta.stats.num_samples == 0 {
                // Everything in range was deleted by tombstones.
                delete_block(&self.dir, meta.ulid)?;
            } else {
                let block = match self.open_block(meta.ulid) {
                    Ok(b) => b,
                    Err(e) => {
                        // Not served, so not kept: the head still holds the
                        // range and the next round writes it again.
                        if let Err(error) = delete_block(&self.dir, meta.ulid) {
                            tracing::error!(block = %meta.ulid, %error, "removing a block that failed to open");
                        }
                        return Err(e);
                    }
                };
                self.swap_blocks(&HashSet::new(), vec![block]);
                tracing::info!(
                    block = %meta.ulid,
                    min_time = mint,
                    max_time = maxt,
                    series = meta.stats.num_series,
                    samples = meta.stats.num_samples,
                    chunks = meta.stats.num_chunks,
                    duration_ms = start.elapsed().as_millis() as u64,
                    "head block persisted"
                );
                out = Some(meta);
            }
        }
        self.persisted_until.fetch_max(maxt, Ordering::AcqRel);
        // Only now: until the block is served, the head and the WAL hold the
        // only copies of its samples.
        self.checkpoint(maxt)?;
        Ok(out)
    }

    /// Runs the compaction planner until it has nothing left, swapping each
    /// merged block in for its sources. Returns the metas written.
    pub fn compact_blocks(&self) -> Result<Vec<BlockMeta>, StorageError> {
        let _m = self.maint.lock();
        self.compact_blocks_locked()
    }

    fn compact_blocks_locked(&self) -> Result<Vec<BlockMeta>, StorageError> {
        let mut written = Vec::new();
        loop {
            let plan = self.compactor.plan()?;
            if plan.is_empty() {
                return Ok(written);
            }
            let start = Instant::now();
            let meta = self.compactor.compact(&plan)?;
            let added = match &meta {
                Some(m) => vec![self.open_block(m.ulid)?],
                None => Vec::new(),
            };
            self.swap_blocks(&plan.iter().copied().collect(), added);
            if let Some(m) = meta {
                tracing::info!(
                    block = %m.ulid,
                    level = m.compaction.level,
                    sources = plan.len(),
                    duration_ms = start.elapsed().as_millis() as u64,
                    "blocks compacted"
                );
                written.push(m);
            }
        }
    }

    /// Deletes the blocks beyond the retention limits (whole blocks, oldest
    /// first). Returns their ids.
    pub fn apply_retention(&self) -> Result<Vec<Ulid>, StorageError> {
        let _m = self.maint.lock();
        self.apply_retention_locked()
    }

    fn apply_retention_locked(&self) -> Result<Vec<Ulid>, StorageError> {
        let policy = RetentionPolicy {
            max_age_ms: self.bopts.retention_time_ms,
            max_bytes: self.bopts.retention_bytes,
        };
        if policy.max_age_ms.is_none() && policy.max_bytes.is_none() {
            return Ok(Vec::new());
        }
        let wal_dir = self.dir.join("wal");
        let wal_bytes = if wal_dir.exists() {
            dir_size(&wal_dir)?
        } else {
            0
        };
        let deleted = apply_retention(&self.dir, &policy, None, wal_bytes)?;
        if !deleted.is_empty() {
            self.swap_blocks(&deleted.iter().copied().collect(), Vec::new());
        }
        Ok(deleted)
    }

    /// One maintenance round, as Prometheus's compaction loop: persist the
    /// head, compact blocks, apply retention.
    pub fn maintain(&self) -> Result<MaintainReport, StorageError> {
        let _m = self.maint.lock();
        Ok(MaintainReport {
            head_blocks: self.compact_head_locked()?,
            compacted: self.compact_blocks_locked()?,
            retention_deleted: self.apply_retention_locked()?,
        })
    }

    /// Deletes the samples in `[mint, maxt]` of every series matching
    /// `matchers` (at least one), from blocks (their tombstones files) and
    /// the head (a WAL Tombstones record, replayed on open). Returns once
    /// both are durable per the fsync policy. Deleted data disappears from
    /// reads at once and from disk at the next compaction of its block (or
    /// when the head range is cut). On error some blocks may already carry
    /// the tombstones; retrying is safe (deleting twice is a no-op).
    pub fn delete(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<DeleteStats, StorageError> {
        if matchers.is_empty() {
            return Err(StorageError::InvalidMatcher(
                "delete needs at least one matcher".to_string(),
            ));
        }
        let _m = self.maint.lock();
        let mut stats = DeleteStats::default();
        for b in self.blocks().iter().filter(|b| b.overlaps(mint, maxt)) {
            stats.block_series += b.delete(mint, maxt, matchers)?;
        }
        // Under the append lock: the Tombstones record must follow, in the
        // WAL, every sample it hides, or a replay would hide fewer.
        let seq = {
            let _a = self.append.lock();
            let deleted = self.head.delete(matchers, mint, maxt);
            stats.head_series = deleted.len() as u64;
            if deleted.is_empty() {
                None
            } else {
                let ts: Vec<Tombstone> = deleted
                    .iter()
                    .map(|&(r, a, b)| Tombstone {
                        series_ref: r.0,
                        mint: a,
                        maxt: b,
                    })
                    .collect();
                Some(self.wal.write(&[Record::Tombstones(&ts)])?)
            }
        };
        if let Some(seq) = seq {
            self.wal.wait_durable(seq)?;
        }
        tracing::info!(
            mint,
            maxt,
            head_series = stats.head_series,
            block_series = stats.block_series,
            "series deleted"
        );
        Ok(stats)
    }

    /// Starts a thread that calls [`Db::maintain`] every `every` until the
    /// returned handle is dropped (or the `Db` is). Errors are logged and
    /// retried next round.
    pub fn start_background(self: &Arc<Db>, every: Duration) -> Background {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let weak: Weak<Db> = Arc::downgrade(self);
        let s = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("pharos-db-maintain".to_string())
            .spawn(move || loop {
                {
                    let mut stopped = s.0.lock();
                    if !*stopped {
                        s.1.wait_for(&mut stopped, every);
                    }
                    if *stopped {
                        return;
                    }
                }
                let Some(db) = weak.upgrade() else {
                    return;
                };
                if let Err(error) = db.maintain() {
                    tracing::error!(dir = %db.dir.display(), %error, "database maintenance failed");
                }
            });
        match handle {
            Ok(h) => Background {
                stop,
                handle: Some(h),
            },
            Err(error) => {
                tracing::error!(%error, "could not start the maintenance thread");
                Background { stop, handle: None }
            }
        }
    }
}

/// The maintenance thread of [`Db::start_background`]; dropping it stops
/// the thread (waiting for a round in progress to finish).
pub struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Background {
    /// Whether the thread is running.
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
