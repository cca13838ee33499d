//! Streaming writer of an index file.
//!
//! Usage order is fixed by the format: all symbols up front (series refer to
//! them by position), then series in label order, then [`IndexWriter::finish`]
//! writes label indices, postings, offset tables and the TOC. Postings are
//! accumulated in memory (4 bytes per series per label plus the map), which
//! is small next to the chunk data of the same block.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::encoding::{crc32c, put_be32, put_be64, put_uvarint, put_uvarint_str, put_varint};
use super::{ChunkEntry, IndexError, FORMAT_V2, MAGIC_INDEX, SERIES_ALIGN};
use crate::labels::Labels;

/// What an index file holds, reported by [`IndexWriter::finish`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub series: u64,
    pub chunks: u64,
    pub symbols: u64,
    /// Size of the index file in bytes.
    pub bytes: u64,
}

/// Writes one index file. See the module docs for the call order.
pub struct IndexWriter {
    path: PathBuf,
    out: BufWriter<File>,
    pos: u64,
    symbols: HashMap<String, u32>,
    last: Option<Labels>,
    /// (name symbol, value symbol) → series ids. Symbol positions sort like
    /// the strings, so iteration order is the on-disk order.
    postings: BTreeMap<(u32, u32), Vec<u32>>,
    all: Vec<u32>,
    stats: IndexStats,
    buf: Vec<u8>,
    /// Where the series section starts (end of the symbol table).
    series_start_pos: u64,
}

impl IndexWriter {
    /// Creates (truncating) the index file at `path` and writes the header
    /// and the symbol table. `symbols` must contain every label name and
    /// value of the series that will be added; order and duplicates do not
    /// matter.
    pub fn create<'a>(
        path: &Path,
        symbols: impl IntoIterator<Item = &'a str>,
    ) -> Result<IndexWriter, IndexError> {
        let io = |source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(io)?;
        let mut w = IndexWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            pos: 0,
            symbols: HashMap::new(),
            last: None,
            postings: BTreeMap::new(),
            all: Vec::new(),
            stats: IndexStats::default(),
            buf: Vec::with_capacity(4096),
            series_start_pos: 0,
        };
        let mut header = Vec::with_capacity(5);
        put_be32(&mut header, MAGIC_INDEX);
        header.push(FORMAT_V2);
        w.write(&header)?;

        // Prometheus always has "" among its symbols (the all-series postings
        // key is ("", "")); keeping it makes our files byte-identical to its.
        let sorted: BTreeSet<&str> = symbols.into_iter().chain([""]).collect();
        let mut body = Vec::new();
        put_be32(&mut body, len_u32(sorted.len(), path, "symbol count")?);
        for (i, s) in sorted.iter().enumerate() {
            put_uvarint_str(&mut body, s);
            w.symbols.insert((*s).to_string(), i as u32);
        }
        w.write_section(&body, "symbol table")?;
        w.series_start_pos = w.pos;
        w.stats.symbols = sorted.len() as u64;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> Result<(), IndexError> {
        self.out.write_all(b).map_err(|source| IndexError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, align: u64) -> Result<(), IndexError> {
        let rem = self.pos % align;
        if rem != 0 {
            let zeros = [0u8; 16];
            self.write(&zeros[..(align - rem) as usize])?;
        }
        Ok(())
    }

    /// Writes `len <4b> | body | CRC32(body) <4b>`.
    fn write_section(&mut self, body: &[u8], what: &str) -> Result<(), IndexError> {
        let mut len = Vec::with_capacity(4);
        put_be32(&mut len, len_u32(body.len(), &self.path, what)?);
        self.write(&len)?;
        self.write(body)?;
        self.write(&crc32c(body).to_be_bytes())
    }

    /// Adds the next series, which must sort after the previous one. Returns
    /// its series id (the value postings lists hold).
    pub fn add_series(
        &mut self,
        labels: &Labels,
        chunks: &[ChunkEntry],
    ) -> Result<u64, IndexError> {
        if labels.is_empty() {
            return Err(self.bad_series(labels, "series has no labels".into()));
        }
        if let Some(last) = &self.last {
            if labels <= last {
                return Err(IndexError::SeriesOutOfOrder {
                    path: self.path.clone(),
                    series: labels.to_string(),
                    previous: last.to_string(),
                });
            }
        }
        for (i, c) in chunks.iter().enumerate() {
            if c.max_time < c.min_time {
                return Err(self.bad_series(
                    labels,
                    format!(
                        "chunk max time {} is before min time {}",
                        c.max_time, c.min_time
                    ),
                ));
            }
            if i > 0 {
                let p = &chunks[i - 1];
                if c.min_time <= p.max_time {
                    return Err(self.bad_series(
                        labels,
                        format!(
                            "chunk min time {} is not after the previous chunk's max time {}",
                            c.min_time, p.max_time
                        ),
                    ));
                }
                if c.chunk_ref < p.chunk_ref {
                    return Err(self.bad_series(
                        labels,
                        format!(
                            "chunk ref {:#x} is below the previous {:#x}",
                            c.chunk_ref, p.chunk_ref
                        ),
                    ));
                }
            }
        }

        self.pad(SERIES_ALIGN)?;
        let id = self.pos / SERIES_ALIGN;
        let id32 = u32::try_from(id).map_err(|_| IndexError::TooLarge {
            path: self.path.clone(),
            what: "series section exceeds 64 GiB".into(),
        })?;

        let mut body = std::mem::take(&mut self.buf);
        body.clear();
        put_uvarint(&mut body, labels.len() as u64);
        for (name, value) in labels.iter() {
            let n = self.symbol(labels, name)?;
            let v = self.symbol(labels, value)?;
            put_uvarint(&mut body, u64::from(n));
            put_uvarint(&mut body, u64::from(v));
            self.postings.entry((n, v)).or_default().push(id32);
        }
        put_uvarint(&mut body, chunks.len() as u64);
        let mut prev: Option<&ChunkEntry> = None;
        for c in chunks {
            match prev {
                None => {
                    put_varint(&mut body, c.min_time);
                    put_uvarint(&mut body, c.max_time.wrapping_sub(c.min_time) as u64);
                    put_uvarint(&mut body, c.chunk_ref);
                }
                Some(p) => {
                    put_uvarint(&mut body, c.min_time.wrapping_sub(p.max_time) as u64);
                    put_uvarint(&mut body, c.max_time.wrapping_sub(c.min_time) as u64);
                    put_varint(
                        &mut body,
                        (c.chunk_ref as i64).wrapping_sub(p.chunk_ref as i64),
                    );
                }
            }
            prev = Some(c);
        }
        let mut len = Vec::with_capacity(10);
        put_uvarint(&mut len, body.len() as u64);
        self.write(&len)?;
        self.write(&body)?;
        self.write(&crc32c(&body).to_be_bytes())?;
        self.buf = body;

        self.all.push(id32);
        self.last = Some(labels.clone());
        self.stats.series += 1;
        self.stats.chunks += chunks.len() as u64;
        Ok(id)
    }

    fn symbol(&self, labels: &Labels, s: &str) -> Result<u32, IndexError> {
        self.symbols
            .get(s)
            .copied()
            .ok_or_else(|| IndexError::UnknownSymbol {
                path: self.path.clone(),
                series: labels.to_string(),
                what: s.to_string(),
            })
    }

    fn bad_series(&self, labels: &Labels, what: String) -> IndexError {
        IndexError::BadSeries {
            path: self.path.clone(),
            series: labels.to_string(),
            what,
        }
    }

    /// Writes label indices, postings, offset tables and TOC, then flushes
    /// and fsyncs the file.
    pub fn finish(mut self) -> Result<IndexStats, IndexError> {
        // Symbol position → string, for the offset tables.
        let mut by_pos: Vec<&str> = vec![""; self.symbols.len()];
        for (s, &i) in &self.symbols {
            by_pos[i as usize] = s.as_str();
        }
        let by_pos: Vec<String> = by_pos.into_iter().map(str::to_string).collect();
        let postings = std::mem::take(&mut self.postings);
        let all = std::mem::take(&mut self.all);

        // Label indices: one per label name, listing its values. Prometheus
        // 2.x readers ignore them for version 2 but older tools expect them.
        let toc_label_indices = self.pos;
        let mut label_index_offsets: Vec<(u32, u64)> = Vec::new();
        let mut i = 0;
        let keys: Vec<(u32, u32)> = postings.keys().copied().collect();
        while i < keys.len() {
            let name = keys[i].0;
            let mut j = i;
            while j < keys.len() && keys[j].0 == name {
                j += 1;
            }
            self.pad(4)?;
            label_index_offsets.push((name, self.pos));
            let mut body = Vec::with_capacity(8 + 4 * (j - i));
            put_be32(&mut body, 1);
            put_be32(&mut body, len_u32(j - i, &self.path, "label index")?);
            for k in &keys[i..j] {
                put_be32(&mut body, k.1);
            }
            self.write_section(&body, "label index")?;
            i = j;
        }

        // Postings lists: all series first, then every label pair in order.
        let toc_postings = self.pos;
        let mut postings_offsets: Vec<(&str, &str, u64)> = Vec::with_capacity(postings.len() + 1);
        self.pad(4)?;
        postings_offsets.push(("", "", self.pos));
        self.write_postings(&all)?;
        for (&(n, v), ids) in &postings {
            self.pad(4)?;
            postings_offsets.push((&by_pos[n as usize], &by_pos[v as usize], self.pos));
            self.write_postings(ids)?;
        }

        let toc_label_table = self.pos;
        let mut body = Vec::new();
        put_be32(
            &mut body,
            len_u32(label_index_offsets.len(), &self.path, "label offset table")?,
        );
        for &(name, off) in &label_index_offsets {
            body.push(1);
            put_uvarint_str(&mut body, &by_pos[name as usize]);
            put_uvarint(&mut body, off);
        }
        self.write_section(&body, "label offset table")?;

        let toc_postings_table = self.pos;
        let mut body = Vec::new();
        put_be32(
            &mut body,
            len_u32(postings_offsets.len(), &self.path, "postings offset table")?,
        );
        for &(name, value, off) in &postings_offsets {
            body.push(2);
            put_uvarint_str(&mut body, name);
            put_uvarint_str(&mut body, value);
            put_uvarint(&mut body, off);
        }
        self.write_section(&body, "postings offset table")?;

        let mut toc = Vec::with_capacity(super::TOC_LEN);
        for v in [
            SYMBOL_TABLE_OFFSET,
            self.series_start(),
            toc_label_indices,
            toc_label_table,
            toc_postings,
            toc_postings_table,
        ] {
            put_be64(&mut toc, v);
        }
        let crc = crc32c(&toc);
        toc.extend_from_slice(&crc.to_be_bytes());
        self.write(&toc)?;

        let path = self.path.clone();
        let io = |source| IndexError::Io {
            path: path.clone(),
            source,
        };
        let file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        self.stats.bytes = self.pos;
        Ok(self.stats)
    }

    fn write_postings(&mut self, ids: &[u32]) -> Result<(), IndexError> {
        let mut body = Vec::with_capacity(4 + 4 * ids.len());
        put_be32(&mut body, len_u32(ids.len(), &self.path, "postings list")?);
        for &id in ids {
            put_be32(&mut body, id);
        }
        self.write_section(&body, "postings list")
    }

    /// The series section starts right after the symbol table (its first
    /// entry may be preceded by alignment padding, which readers skip).
    fn series_start(&self) -> u64 {
        self.series_start_pos
    }
}

const SYMBOL_TABLE_OFFSET: u64 = 5;

fn len_u32(n: usize, path: &Path, what: &str) -> Result<u32, IndexError> {
    u32::try_from(n).map_err(|_| IndexError::TooLarge {
        path: path.to_path_buf(),
        what: format!("{what} length {n} exceeds 4 bytes"),
    })
}
