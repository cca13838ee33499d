//! Writes a block directory from a set of series.
//!
//! The whole block is staged in `<parent>/<ulid>.tmp` and renamed into place
//! only after every file and directory in it is fsynced, so a crash leaves
//! either a complete block or a `.tmp` directory to delete.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{
    sync_dir, BlockCompaction, BlockDesc, BlockError, BlockMeta, BlockStats, ChunkWriter,
    Tombstones, Ulid, CHUNKS_DIRNAME, DEFAULT_SEGMENT_SIZE, INDEX_FILENAME, MAX_SAMPLES_PER_CHUNK,
    META_VERSION, TMP_SUFFIX,
};
use crate::chunk::SampleIterator;
use crate::index::{ChunkEntry, IndexWriter};
use crate::series::{encode_chunks, ChunkMeta, Series};

/// Lineage and layout settings of a block being written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Id of the new block; a fresh ULID when `None`.
    pub ulid: Option<Ulid>,
    /// Compaction level (1 for blocks cut from the head).
    pub level: u32,
    /// Level-1 ancestors; when empty the block is its own source.
    pub sources: Vec<Ulid>,
    pub parents: Vec<BlockDesc>,
    pub hints: Vec<String>,
    /// Maximum chunk segment file size.
    pub segment_size: u64,
    /// Samples per chunk when chunks have to be re-cut.
    pub max_samples_per_chunk: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            ulid: None,
            level: 1,
            sources: Vec::new(),
            parents: Vec::new(),
            hints: Vec::new(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_samples_per_chunk: MAX_SAMPLES_PER_CHUNK,
        }
    }
}

/// Writes blocks covering `[min_time, max_time)` into a parent directory.
#[derive(Debug, Clone)]
pub struct BlockWriter {
    parent: PathBuf,
    min_time: i64,
    max_time: i64,
    opts: WriteOptions,
}

impl BlockWriter {
    pub fn new(parent: &Path, min_time: i64, max_time: i64) -> BlockWriter {
        BlockWriter {
            parent: parent.to_path_buf(),
            min_time,
            max_time,
            opts: WriteOptions::default(),
        }
    }

    pub fn with_options(mut self, opts: WriteOptions) -> BlockWriter {
        self.opts = opts;
        self
    }

    /// Writes the samples of `series` that fall in `[min_time, max_time)`
    /// (minus their `deleted` intervals) as a new block and returns its
    /// meta; the block is in `parent/<ulid>`. Series may come in any order
    /// and may repeat (repeats are merged, samples de-duplicated by
    /// timestamp); series left without samples are dropped.
    pub fn write(&self, mut series: Vec<Series>) -> Result<BlockMeta, BlockError> {
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut merged: Vec<Series> = Vec::with_capacity(series.len());
        for s in series {
            match merged.last_mut() {
                Some(last) if last.labels == s.labels => {
                    let prev = std::mem::take(last);
                    *last = Series::merge(prev, s);
                }
                _ => merged.push(s),
            }
        }
        let symbols: BTreeSet<String> = merged
            .iter()
            .flat_map(|s| {
                s.labels
                    .iter()
                    .flat_map(|(n, v)| [n.to_string(), v.to_string()])
            })
            .collect();
        self.write_sorted(
            symbols.iter().map(String::as_str),
            merged.into_iter().map(Ok),
        )
    }

    /// Streaming form of [`BlockWriter::write`] for inputs too large to hold
    /// at once: `series` must come strictly sorted by labels (one entry per
    /// label set) and `symbols` must include every label name and value in
    /// them (extra symbols are harmless). Only one series is in memory at a
    /// time; an error from the input aborts the write and removes the
    /// partial block.
    pub fn write_sorted<'a, I>(
        &self,
        symbols: impl IntoIterator<Item = &'a str>,
        series: I,
    ) -> Result<BlockMeta, BlockError>
    where
        I: Iterator<Item = Result<Series, BlockError>>,
    {
        if self.min_time >= self.max_time {
            return Err(BlockError::EmptyRange {
                path: self.parent.clone(),
                min_time: self.min_time,
                max_time: self.max_time,
            });
        }
        let id = self.opts.ulid.unwrap_or_default();
        std::fs::create_dir_all(&self.parent).map_err(|source| BlockError::Io {
            path: self.parent.clone(),
            source,
        })?;
        let final_dir = self.parent.join(id.to_string());
        let tmp = self.parent.join(format!("{id}{TMP_SUFFIX}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|source| BlockError::Io {
                path: tmp.clone(),
                source,
            })?;
        }
        std::fs::create_dir_all(&tmp).map_err(|source| BlockError::Io {
            path: tmp.clone(),
            source,
        })?;
        let meta = match self.write_files(id, &tmp, symbols, series) {
            Ok(m) => m,
            Err(e) => {
                // Best effort: Compactor::cleanup also removes leftover
                // .tmp directories at startup.
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, &final_dir).map_err(|source| BlockError::Io {
            path: final_dir.clone(),
            source,
        })?;
        sync_dir(&self.parent)?;
        Ok(meta)
    }

    /// The chunks series `s` contributes to the block: its own when they lie
    /// inside the range, do not overlap and carry no deletions, else its
    /// samples in range re-cut into chunks of `max_samples_per_chunk`.
    fn block_chunks(&self, id: Ulid, s: &Series) -> Result<Vec<ChunkMeta>, BlockError> {
        let maxt_incl = self.max_time - 1;
        let inside = s
            .chunks
            .iter()
            .all(|c| c.min_time >= self.min_time && c.max_time <= maxt_incl);
        let mut chunks = if inside && s.deleted.is_empty() && !s.has_overlapping_chunks() {
            let mut c = s.chunks.clone();
            c.sort_by_key(|c| c.min_time);
            c
        } else {
            let mut it = s.iter_range(self.min_time, maxt_incl);
            let c = encode_chunks(&mut it, self.opts.max_samples_per_chunk);
            if let Some(e) = it.err() {
                return Err(BlockError::Chunk {
                    block: id,
                    series: s.labels.to_string(),
                    source: e.clone(),
                });
            }
            c
        };
        chunks.retain(|c| c.chunk.num_samples() > 0);
        Ok(chunks)
    }

    fn write_files<'a, I>(
        &self,
        id: Ulid,
        dir: &Path,
        symbols: impl IntoIterator<Item = &'a str>,
        series: I,
    ) -> Result<BlockMeta, BlockError>
    where
        I: Iterator<Item = Result<Series, BlockError>>,
    {
        let chunks_dir = dir.join(CHUNKS_DIRNAME);
        let mut cw = ChunkWriter::new(&chunks_dir, self.opts.segment_size)?;
        let mut iw = IndexWriter::create(&dir.join(INDEX_FILENAME), symbols)?;
        let mut stats = BlockStats::default();
        let mut entries: Vec<ChunkEntry> = Vec::new();
        for s in series {
            let s = s?;
            let chunks = self.block_chunks(id, &s)?;
            if chunks.is_empty() {
                continue;
            }
            entries.clear();
            for c in &chunks {
                let chunk_ref = cw.write(&c.chunk)?;
                stats.num_samples += c.chunk.num_samples() as u64;
                entries.push(ChunkEntry {
                    min_time: c.min_time,
                    max_time: c.max_time,
                    chunk_ref,
                });
            }
            iw.add_series(&s.labels, &entries)?;
            stats.num_chunks += chunks.len() as u64;
            stats.num_series += 1;
        }
        cw.finish()?;
        sync_dir(&chunks_dir)?;
        iw.finish()?;

        Tombstones::default().write(dir)?;
        let meta = BlockMeta {
            ulid: id,
            min_time: self.min_time,
            max_time: self.max_time,
            stats,
            compaction: BlockCompaction {
                level: self.opts.level.max(1),
                sources: if self.opts.sources.is_empty() {
                    vec![id]
                } else {
                    self.opts.sources.clone()
                },
                parents: self.opts.parents.clone(),
                hints: self.opts.hints.clone(),
                ..Default::default()
            },
            version: META_VERSION,
        };
        meta.write(dir)?;
        Ok(meta)
    }
}
