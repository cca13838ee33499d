//! Executes compactions in a directory of blocks.
//!
//! Crash safety: the merged block is written and renamed into place before
//! any source is touched; sources are then renamed to
//! `<ulid>.tmp-for-deletion` and removed. A crash in between leaves the
//! sources next to a block that lists them as parents; [`Compactor::cleanup`]
//! (run at startup) deletes such parents and any unfinished `.tmp*`
//! directories, so no sample is ever lost or served twice from disk.

use std::collections::{BTreeSet, HashSet};
use std::iter::Peekable;
use std::path::{Path, PathBuf};

use crate::block::{
    sync_dir, Block, BlockDesc, BlockError, BlockMeta, BlockWriter, Ulid, WriteOptions,
    DEFAULT_SEGMENT_SIZE, MAX_SAMPLES_PER_CHUNK, META_FILENAME, TMP_SUFFIX,
};

use super::planner::Planner;
use crate::labels::Labels;
use crate::series::Series;

/// K-way merge of per-block series streams (each sorted by labels) into one
/// sorted stream; series present in several blocks are merged with
/// [`Series::merge`] (each block's tombstones applied to its own chunks).
struct MergeSeries<I: Iterator<Item = Result<Series, BlockError>>> {
    inputs: Vec<Peekable<I>>,
}

impl<I: Iterator<Item = Result<Series, BlockError>>> Iterator for MergeSeries<I> {
    type Item = Result<Series, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The number of inputs is small (the blocks of one compaction), so a
        // linear scan per series beats a heap.
        let mut min: Option<Labels> = None;
        for it in &mut self.inputs {
            match it.peek() {
                Some(Ok(s)) if min.as_ref().is_none_or(|m| s.labels < *m) => {
                    min = Some(s.labels.clone());
                }
                Some(Err(_)) => return it.next(),
                _ => {}
            }
        }
        let min = min?;
        let mut acc: Option<Series> = None;
        for it in &mut self.inputs {
            if !matches!(it.peek(), Some(Ok(s)) if s.labels == min) {
                continue;
            }
            if let Some(Ok(s)) = it.next() {
                acc = Some(match acc {
                    None => s,
                    Some(a) => Series::merge(a, s),
                });
            }
        }
        acc.map(Ok)
    }
}

/// Suffix of a block directory being deleted.
pub const DELETION_SUFFIX: &str = ".tmp-for-deletion";

#[derive(Debug, Clone)]
pub struct CompactorOptions {
    /// Compaction ranges, as from [`block_ranges`](super::block_ranges).
    pub ranges: Vec<i64>,
    pub max_samples_per_chunk: usize,
    pub segment_size: u64,
}

impl Default for CompactorOptions {
    fn default() -> Self {
        CompactorOptions {
            ranges: super::block_ranges(super::DEFAULT_BLOCK_DURATION, None),
            max_samples_per_chunk: MAX_SAMPLES_PER_CHUNK,
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// Compacts the blocks of one data directory.
#[derive(Debug, Clone)]
pub struct Compactor {
    dir: PathBuf,
    opts: CompactorOptions,
    planner: Planner,
}

/// Whether `name` is a block directory name (a ULID, nothing else).
fn block_id(name: &str) -> Option<Ulid> {
    name.parse().ok()
}

/// Lists the complete blocks in `dir` (directories named by a ULID that
/// have a `meta.json`), sorted by min time.
pub fn list_blocks(dir: &Path) -> Result<Vec<BlockMeta>, BlockError> {
    let io = |source| BlockError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name();
        let Some(_) = name.to_str().and_then(block_id) else {
            continue;
        };
        let p = e.path();
        if p.join(META_FILENAME).exists() {
            out.push(BlockMeta::read(&p)?);
        }
    }
    out.sort_by_key(|m| (m.min_time, m.max_time, m.ulid));
    Ok(out)
}

/// Deletes block `id` under `dir`: renamed first, so a half-deleted block is
/// never mistaken for a complete one.
pub fn delete_block(dir: &Path, id: Ulid) -> Result<(), BlockError> {
    let src = dir.join(id.to_string());
    let tmp = dir.join(format!("{id}{DELETION_SUFFIX}"));
    std::fs::rename(&src, &tmp).map_err(|source| BlockError::Io {
        path: src.clone(),
        source,
    })?;
    sync_dir(dir)?;
    std::fs::remove_dir_all(&tmp).map_err(|source| BlockError::Io { path: tmp, source })
}

impl Compactor {
    pub fn new(dir: &Path, opts: CompactorOptions) -> Compactor {
        Compactor {
            dir: dir.to_path_buf(),
            planner: Planner::new(opts.ranges.clone()),
            opts,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes what an interrupted write, compaction or deletion left
    /// behind: `.tmp*` directories and blocks listed as a parent of another
    /// block. Returns the ids of the parent blocks removed.
    pub fn cleanup(&self) -> Result<Vec<Ulid>, BlockError> {
        let io = |source| BlockError::Io {
            path: self.dir.clone(),
            source,
        };
        for e in std::fs::read_dir(&self.dir).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((stem, _)) = name.split_once(TMP_SUFFIX) else {
                continue;
            };
            if block_id(stem).is_some() && e.path().is_dir() {
                tracing::warn!(dir = %e.path().display(), "removing unfinished block directory");
                std::fs::remove_dir_all(e.path()).map_err(|source| BlockError::Io {
                    path: e.path(),
                    source,
                })?;
            }
        }
        let metas = list_blocks(&self.dir)?;
        let parents: HashSet<Ulid> = metas
            .iter()
            .flat_map(|m| m.compaction.parents.iter().map(|p| p.ulid))
            .collect();
        let mut removed = Vec::new();
        for m in &metas {
            if parents.contains(&m.ulid) {
                tracing::warn!(block = %m.ulid, "removing block already merged into another (interrupted compaction)");
                delete_block(&self.dir, m.ulid)?;
                removed.push(m.ulid);
            }
        }
        Ok(removed)
    }

    /// The next group of blocks the planner would compact.
    pub fn plan(&self) -> Result<Vec<Ulid>, BlockError> {
        Ok(self.planner.plan(&list_blocks(&self.dir)?))
    }

    /// Merges blocks `ids` into one new block (vertically when they
    /// overlap: samples with equal timestamps de-duplicated), dropping
    /// tombstoned data, then deletes the sources. Returns the new block's
    /// meta, or `None` when nothing was left (the sources are deleted
    /// anyway).
    pub fn compact(&self, ids: &[Ulid]) -> Result<Option<BlockMeta>, BlockError> {
        let ids: BTreeSet<Ulid> = ids.iter().copied().collect();
        if ids.is_empty() {
            return Ok(None);
        }
        let mut blocks = Vec::with_capacity(ids.len());
        for id in &ids {
            blocks.push(Block::open(&self.dir.join(id.to_string()))?);
        }
        blocks.sort_by_key(|b| (b.min_time(), b.id()));
        let metas: Vec<BlockMeta> = blocks.iter().map(Block::meta).collect();
        let min_time = metas.iter().map(|m| m.min_time).min().unwrap_or(0);
        let max_time = metas.iter().map(|m| m.max_time).max().unwrap_or(0);
        let sources: BTreeSet<Ulid> = metas
            .iter()
            .flat_map(|m| {
                if m.compaction.sources.is_empty() {
                    vec![m.ulid]
                } else {
                    m.compaction.sources.clone()
                }
            })
            .collect();
        let opts = WriteOptions {
            ulid: None,
            level: metas.iter().map(|m| m.compaction.level).max().unwrap_or(0) + 1,
            sources: sources.into_iter().collect(),
            parents: metas
                .iter()
                .map(|m| BlockDesc {
                    ulid: m.ulid,
                    min_time: m.min_time,
                    max_time: m.max_time,
                })
                .collect(),
            hints: Vec::new(),
            segment_size: self.opts.segment_size,
            max_samples_per_chunk: self.opts.max_samples_per_chunk,
        };

        let symbols: BTreeSet<&str> = blocks.iter().flat_map(|b| b.index().symbols()).collect();
        let mut inputs = Vec::with_capacity(blocks.len());
        for b in &blocks {
            inputs.push(b.series_iter()?.peekable());
        }
        let merged = MergeSeries { inputs };
        let meta = BlockWriter::new(&self.dir, min_time, max_time)
            .with_options(opts)
            .write_sorted(symbols, merged)?;
        let result = if meta.stats.num_samples == 0 {
            delete_block(&self.dir, meta.ulid)?;
            tracing::info!(sources = ?ids, "compacted blocks held no data; deleting them");
            None
        } else {
            tracing::info!(
                block = %meta.ulid,
                level = meta.compaction.level,
                min_time = meta.min_time,
                max_time = meta.max_time,
                samples = meta.stats.num_samples,
                parents = ?ids,
                "compacted blocks"
            );
            Some(meta)
        };
        drop(blocks);
        for m in &metas {
            delete_block(&self.dir, m.ulid)?;
        }
        Ok(result)
    }

    /// Plans and compacts until the planner has nothing left; returns the
    /// metas of the blocks written.
    pub fn run(&self) -> Result<Vec<BlockMeta>, BlockError> {
        let mut written = Vec::new();
        loop {
            let plan = self.plan()?;
            if plan.is_empty() {
                return Ok(written);
            }
            if let Some(m) = self.compact(&plan)? {
                written.push(m);
            }
        }
    }
}
