//! An open block: its meta, index and chunk segments, queried through the
//! [`Querier`] seam, with tombstones applied as [`Series::deleted`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};

use super::{
    coalesce, BlockError, BlockMeta, BlockStats, ChunkReader, Tombstones, Ulid, CHUNKS_DIRNAME,
    INDEX_FILENAME,
};
use crate::chunk::{SampleIterator, ValueType};
use crate::error::StorageError;
use crate::index::{ChunkEntry, IndexReader};
use crate::labels::{Labels, Matcher};
use crate::querier::{Querier, SelectHints};
use crate::series::{ChunkMeta, Series};

/// A persistent block opened for reading (and deleting by tombstones).
pub struct Block {
    dir: PathBuf,
    meta: RwLock<BlockMeta>,
    index: IndexReader,
    chunks: ChunkReader,
    tombstones: RwLock<Tombstones>,
    /// Serialises `delete` calls so tombstone file writes do not race.
    delete_lock: Mutex<()>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("dir", &self.dir)
            .field("meta", &*self.meta.read())
            .finish()
    }
}

impl Block {
    /// Opens the block in `dir`, validating meta.json, the index (header,
    /// TOC, symbols, postings table) and the chunk segment headers.
    pub fn open(dir: &Path) -> Result<Block, BlockError> {
        let meta = BlockMeta::read(dir)?;
        let index = IndexReader::open(&dir.join(INDEX_FILENAME))?;
        let chunks = ChunkReader::open(&dir.join(CHUNKS_DIRNAME))?;
        let tombstones = Tombstones::read(dir)?;
        Ok(Block {
            dir: dir.to_path_buf(),
            meta: RwLock::new(meta),
            index,
            chunks,
            tombstones: RwLock::new(tombstones),
            delete_lock: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> BlockMeta {
        self.meta.read().clone()
    }

    pub fn id(&self) -> Ulid {
        self.meta.read().ulid
    }

    pub fn min_time(&self) -> i64 {
        self.meta.read().min_time
    }

    /// Exclusive end of the block's time range.
    pub fn max_time(&self) -> i64 {
        self.meta.read().max_time
    }

    pub fn index(&self) -> &IndexReader {
        &self.index
    }

    /// Bytes on disk: index, chunk segments and small files.
    pub fn size_bytes(&self) -> Result<u64, BlockError> {
        super::dir_size(&self.dir)
    }

    /// Whether the block may hold samples in `[mint, maxt]` (both inclusive).
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        let m = self.meta.read();
        m.min_time <= maxt && mint < m.max_time
    }

    pub fn tombstones(&self) -> Tombstones {
        self.tombstones.read().clone()
    }

    /// The series with index id `id`, with the chunks overlapping
    /// `[mint, maxt]` that are not entirely deleted; `None` when no chunk
    /// remains.
    fn load_series(
        &self,
        id: u64,
        mint: i64,
        maxt: i64,
        deleted: &[(i64, i64)],
    ) -> Result<Option<Series>, BlockError> {
        let entry = self.index.series(id)?;
        let wanted: Vec<&ChunkEntry> = entry
            .chunks
            .iter()
            .filter(|c| c.max_time >= mint && c.min_time <= maxt)
            .filter(|c| {
                !deleted
                    .iter()
                    .any(|&(a, b)| a <= c.min_time && c.max_time <= b)
            })
            .collect();
        let refs: Vec<u64> = wanted.iter().map(|c| c.chunk_ref).collect();
        let data = self
            .chunks
            .read_many(&refs)
            .map_err(|e| BlockError::SeriesChunk {
                block: self.id(),
                series: entry.labels.to_string(),
                source: Box::new(e),
            })?;
        let chunks: Vec<ChunkMeta> = wanted
            .iter()
            .zip(data)
            .map(|(c, chunk)| ChunkMeta {
                min_time: c.min_time,
                max_time: c.max_time,
                chunk,
            })
            .collect();
        if chunks.is_empty() {
            return Ok(None);
        }
        Ok(Some(Series {
            labels: entry.labels,
            chunks,
            deleted: deleted.to_vec(),
            // Blocks keep no start timestamps (docs/block.md).
            start_timestamps: None,
        }))
    }

    /// Series matching `matchers` with data in `[mint, maxt]`, sorted by
    /// labels, each carrying its tombstones in `deleted`.
    pub fn select_series(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<Series>, BlockError> {
        if !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        let ids = self.index.postings_for_matchers(matchers)?;
        let tomb = self.tombstones.read();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = self.load_series(id, mint, maxt, tomb.get(id))? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Every series with all its chunks (and tombstones), in label order.
    pub fn all_series(&self) -> Result<Vec<Series>, BlockError> {
        self.series_iter()?.collect()
    }

    /// Every series with all its chunks (and tombstones), in label order,
    /// loaded one at a time (for compaction of blocks larger than memory).
    /// Series whose data is entirely deleted are skipped.
    pub fn series_iter(
        &self,
    ) -> Result<impl Iterator<Item = Result<Series, BlockError>> + '_, BlockError> {
        let ids = self.index.all_postings()?;
        let tomb = self.tombstones();
        Ok(ids.into_iter().filter_map(move |id| {
            self.load_series(id, i64::MIN, i64::MAX, tomb.get(id))
                .transpose()
        }))
    }

    /// Marks the samples in `[mint, maxt]` of every series matching
    /// `matchers` as deleted, persisting the tombstones (and their count in
    /// meta.json) before returning. Returns the number of series affected.
    pub fn delete(&self, mint: i64, maxt: i64, matchers: &[Matcher]) -> Result<u64, BlockError> {
        let _guard = self.delete_lock.lock();
        let ids = self.index.postings_for_matchers(matchers)?;
        let mut next = self.tombstones.read().clone();
        let mut affected = 0;
        for id in ids {
            let entry = self.index.series(id)?;
            let touches = entry
                .chunks
                .iter()
                .any(|c| c.min_time <= maxt && mint <= c.max_time);
            if !touches {
                continue;
            }
            // Clamp to the series' data so open-ended deletes stay readable.
            let lo = entry.chunks.first().map_or(mint, |c| c.min_time.max(mint));
            let hi = entry.chunks.last().map_or(maxt, |c| c.max_time.min(maxt));
            let before = next.get(id).to_vec();
            next.add(id, lo, hi);
            if next.get(id) != before.as_slice() {
                affected += 1;
            }
        }
        if affected == 0 {
            return Ok(0);
        }
        next.write(&self.dir)?;
        let mut meta = self.meta.read().clone();
        meta.stats.num_tombstones = next.num_intervals();
        meta.write(&self.dir)?;
        *self.meta.write() = meta;
        *self.tombstones.write() = next;
        Ok(affected)
    }

    fn names_for(&self, matchers: &[Matcher]) -> Result<Vec<String>, BlockError> {
        if matchers.is_empty() {
            return Ok(self
                .index
                .label_names()
                .into_iter()
                .map(str::to_string)
                .collect());
        }
        let mut names = BTreeSet::new();
        for id in self.index.postings_for_matchers(matchers)? {
            for (n, _) in self.index.series(id)?.labels.iter() {
                if !names.contains(n) {
                    names.insert(n.to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn values_for(&self, name: &str, matchers: &[Matcher]) -> Result<Vec<String>, BlockError> {
        if matchers.is_empty() {
            return Ok(self
                .index
                .label_values(name)
                .into_iter()
                .map(str::to_string)
                .collect());
        }
        let mut values = BTreeSet::new();
        for id in self.index.postings_for_matchers(matchers)? {
            if let Some(v) = self.index.series(id)?.labels.get(name) {
                if !values.contains(v) {
                    values.insert(v.to_string());
                }
            }
        }
        Ok(values.into_iter().collect())
    }

    /// Deleted intervals of series `id`, coalesced.
    pub fn deleted_intervals(&self, id: u64) -> Vec<(i64, i64)> {
        coalesce(self.tombstones.read().get(id).to_vec())
    }

    /// Reads every series entry and chunk and checks what queries rely on:
    /// checksums, series in strictly ascending label order, chunks sorted
    /// and non-overlapping, every sample decodable and inside its chunk's
    /// time range and the block's, and the totals in meta.json. For blocks
    /// from elsewhere (imports, object storage) before they are served.
    pub fn verify(&self) -> Result<BlockStats, BlockError> {
        let meta = self.meta();
        let fail = |what: String| BlockError::Verify {
            block: meta.ulid,
            what,
        };
        let mut stats = BlockStats::default();
        let mut prev: Option<Labels> = None;
        for id in self.index.all_postings()? {
            let entry = self.index.series(id)?;
            if let Some(p) = &prev {
                if entry.labels <= *p {
                    return Err(fail(format!("series {} is not after {p}", entry.labels)));
                }
            }
            for (i, c) in entry.chunks.iter().enumerate() {
                if i > 0 && c.min_time <= entry.chunks[i - 1].max_time {
                    return Err(fail(format!(
                        "series {}: chunks overlap at {}",
                        entry.labels, c.min_time
                    )));
                }
                if c.min_time < meta.min_time || c.max_time >= meta.max_time {
                    return Err(fail(format!(
                        "series {}: chunk [{}, {}] outside the block range [{}, {})",
                        entry.labels, c.min_time, c.max_time, meta.min_time, meta.max_time
                    )));
                }
                let chunk = self
                    .chunks
                    .read(c.chunk_ref)
                    .map_err(|e| BlockError::SeriesChunk {
                        block: meta.ulid,
                        series: entry.labels.to_string(),
                        source: Box::new(e),
                    })?;
                let mut it = chunk.iter();
                let mut n = 0u64;
                let mut last = i64::MIN;
                while it.next() == ValueType::Float {
                    let t = it.at_t();
                    if t < c.min_time || t > c.max_time || (n > 0 && t <= last) {
                        return Err(fail(format!(
                            "series {}: sample at {t} out of order or outside its chunk [{}, {}]",
                            entry.labels, c.min_time, c.max_time
                        )));
                    }
                    last = t;
                    n += 1;
                }
                if let Some(e) = it.err() {
                    return Err(BlockError::Chunk {
                        block: meta.ulid,
                        series: entry.labels.to_string(),
                        source: e.clone(),
                    });
                }
                stats.num_samples += n;
            }
            stats.num_chunks += entry.chunks.len() as u64;
            stats.num_series += 1;
            prev = Some(entry.labels);
        }
        let m = &meta.stats;
        if (m.num_samples, m.num_series, m.num_chunks)
            != (stats.num_samples, stats.num_series, stats.num_chunks)
        {
            return Err(fail(format!(
                "meta.json counts {}/{}/{} samples/series/chunks, the data has {}/{}/{}",
                m.num_samples,
                m.num_series,
                m.num_chunks,
                stats.num_samples,
                stats.num_series,
                stats.num_chunks
            )));
        }
        stats.num_tombstones = self.tombstones.read().num_intervals();
        Ok(stats)
    }
}

impl Querier for Block {
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        _hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, StorageError> {
        Ok(self.select_series(mint, maxt, matchers)?)
    }

    /// Like Prometheus, names come from the whole block when it overlaps the
    /// range (the index has no per-series time bounds cheaper than chunks).
    fn label_names(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        if !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        Ok(self.names_for(matchers)?)
    }

    fn label_values(
        &self,
        name: &str,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        if !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        Ok(self.values_for(name, matchers)?)
    }
}
