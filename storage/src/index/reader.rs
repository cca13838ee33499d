//! Reader of an index file held in memory.
//!
//! Opening validates the header, the TOC, the symbol table and the postings
//! offset table (with their checksums) and keeps the decoded symbols and the
//! offset table in memory. Series entries and postings lists are decoded, and
//! their checksums verified, on each lookup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::encoding::{crc32c, Cursor, DecodeError};
use super::postings::{intersect, subtract, union_many};
use super::{ChunkEntry, IndexError, FORMAT_V2, MAGIC_INDEX, SERIES_ALIGN, TOC_LEN};
use crate::labels::{Labels, MatchType, Matcher};

/// A series as stored in the index: its labels and chunk metas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesEntry {
    pub labels: Labels,
    pub chunks: Vec<ChunkEntry>,
}

#[derive(Debug, Clone, Copy)]
struct Toc {
    symbols: u64,
    series: u64,
    label_indices: u64,
    postings_table: u64,
}

/// An open index file. Immutable and cheap to share behind an `Arc`.
pub struct IndexReader {
    path: PathBuf,
    data: Vec<u8>,
    toc: Toc,
    symbols: Vec<Box<str>>,
    /// Label name → (value, postings list offset), values sorted. The name
    /// `""` holds the single all-series list.
    postings: BTreeMap<Box<str>, Vec<(Box<str>, u64)>>,
}

impl std::fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader")
            .field("path", &self.path)
            .field("bytes", &self.data.len())
            .field("symbols", &self.symbols.len())
            .finish()
    }
}

impl IndexReader {
    /// Reads and validates the index file at `path`.
    pub fn open(path: &Path) -> Result<IndexReader, IndexError> {
        let data = std::fs::read(path).map_err(|source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        IndexReader::from_bytes(path, data)
    }

    /// Validates an index already in memory; `path` is used in errors.
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Result<IndexReader, IndexError> {
        let path = path.to_path_buf();
        if data.len() < 5 + TOC_LEN {
            return Err(IndexError::TooSmall {
                path,
                size: data.len() as u64,
            });
        }
        let magic = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        if magic != MAGIC_INDEX {
            return Err(IndexError::BadMagic { path, found: magic });
        }
        if data[4] != FORMAT_V2 {
            return Err(IndexError::UnsupportedVersion {
                path,
                version: data[4],
            });
        }
        let toc_at = data.len() - TOC_LEN;
        let toc_bytes = &data[toc_at..data.len() - 4];
        let stored = u32::from_be_bytes([
            data[data.len() - 4],
            data[data.len() - 3],
            data[data.len() - 2],
            data[data.len() - 1],
        ]);
        let computed = crc32c(toc_bytes);
        if stored != computed {
            return Err(IndexError::Checksum {
                path,
                section: "TOC",
                offset: toc_at as u64,
                stored,
                computed,
            });
        }
        let mut c = Cursor::new(toc_bytes, toc_at as u64);
        let mut next = || {
            c.be64().map_err(|e| IndexError::Corrupt {
                path: path.clone(),
                section: "TOC",
                offset: e.offset,
                what: e.what.to_string(),
            })
        };
        let symbols = next()?;
        let series = next()?;
        let label_indices = next()?;
        let _label_table = next()?;
        let _postings = next()?;
        let postings_table = next()?;
        let toc = Toc {
            symbols,
            series,
            label_indices,
            postings_table,
        };
        for (what, off) in [
            ("symbol table", symbols),
            ("series", series),
            ("label indices", label_indices),
            ("postings offset table", postings_table),
        ] {
            if off > toc_at as u64 {
                return Err(IndexError::Corrupt {
                    path,
                    section: "TOC",
                    offset: toc_at as u64,
                    what: format!("{what} offset {off} is past the end of the file"),
                });
            }
        }

        let mut r = IndexReader {
            path,
            data,
            toc,
            symbols: Vec::new(),
            postings: BTreeMap::new(),
        };
        r.symbols = r.read_symbols()?;
        r.postings = r.read_postings_table()?;
        Ok(r)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the index file in bytes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn corrupt(&self, section: &'static str, e: DecodeError) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            section,
            offset: e.offset,
            what: e.what.to_string(),
        }
    }

    /// The body of a `len <4b> | body | crc <4b>` section at `offset`, with
    /// its checksum verified.
    fn section(&self, offset: u64, section: &'static str) -> Result<Cursor<'_>, IndexError> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let mut c = Cursor::new(self.data.get(start..).unwrap_or_default(), offset);
        let len = c.be32().map_err(|e| self.corrupt(section, e))? as usize;
        let body_at = c.offset();
        let body = c.bytes(len).map_err(|e| self.corrupt(section, e))?;
        let stored = c.be32().map_err(|e| self.corrupt(section, e))?;
        let computed = crc32c(body);
        if stored != computed {
            return Err(IndexError::Checksum {
                path: self.path.clone(),
                section,
                offset,
                stored,
                computed,
            });
        }
        Ok(Cursor::new(body, body_at))
    }

    fn read_symbols(&self) -> Result<Vec<Box<str>>, IndexError> {
        const S: &str = "symbol table";
        let mut c = self.section(self.toc.symbols, S)?;
        let n = c.be32().map_err(|e| self.corrupt(S, e))? as usize;
        // Each symbol takes at least one byte: bound the allocation by the data.
        let mut out = Vec::with_capacity(n.min(c.remaining()));
        for _ in 0..n {
            let s = c.uvarint_str().map_err(|e| self.corrupt(S, e))?;
            out.push(Box::from(s));
        }
        Ok(out)
    }

    fn read_postings_table(&self) -> Result<BTreeMap<Box<str>, Vec<(Box<str>, u64)>>, IndexError> {
        const S: &str = "postings offset table";
        let mut c = self.section(self.toc.postings_table, S)?;
        let n = c.be32().map_err(|e| self.corrupt(S, e))?;
        let mut out: BTreeMap<Box<str>, Vec<(Box<str>, u64)>> = BTreeMap::new();
        for _ in 0..n {
            let at = c.offset();
            let keys = c.uvarint().map_err(|e| self.corrupt(S, e))?;
            if keys != 2 {
                return Err(IndexError::Corrupt {
                    path: self.path.clone(),
                    section: S,
                    offset: at,
                    what: format!("entry has {keys} keys, want 2"),
                });
            }
            let name = c.uvarint_str().map_err(|e| self.corrupt(S, e))?;
            let value = c.uvarint_str().map_err(|e| self.corrupt(S, e))?;
            let off = c.uvarint().map_err(|e| self.corrupt(S, e))?;
            out.entry(Box::from(name))
                .or_default()
                .push((Box::from(value), off));
        }
        for values in out.values_mut() {
            values.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(out)
    }

    fn symbol(&self, i: u32, at: u64) -> Result<&str, IndexError> {
        self.symbols
            .get(i as usize)
            .map(|s| &**s)
            .ok_or_else(|| IndexError::Corrupt {
                path: self.path.clone(),
                section: "series",
                offset: at,
                what: format!(
                    "symbol reference {i} out of range ({} symbols)",
                    self.symbols.len()
                ),
            })
    }

    /// Decodes the series with id `id` (as found in postings lists).
    pub fn series(&self, id: u64) -> Result<SeriesEntry, IndexError> {
        const S: &str = "series";
        let offset = id.saturating_mul(SERIES_ALIGN);
        if offset < self.toc.series || offset >= self.toc.label_indices.max(self.toc.series) {
            return Err(IndexError::Corrupt {
                path: self.path.clone(),
                section: S,
                offset,
                what: format!("series id {id} is outside the series section"),
            });
        }
        let start = offset as usize;
        let mut c = Cursor::new(&self.data[start..], offset);
        let len = c.uvarint().map_err(|e| self.corrupt(S, e))?;
        let body_at = c.offset();
        let body = c
            .bytes(usize::try_from(len).unwrap_or(usize::MAX))
            .map_err(|e| self.corrupt(S, e))?;
        let stored = c.be32().map_err(|e| self.corrupt(S, e))?;
        let computed = crc32c(body);
        if stored != computed {
            return Err(IndexError::Checksum {
                path: self.path.clone(),
                section: S,
                offset,
                stored,
                computed,
            });
        }
        let mut c = Cursor::new(body, body_at);
        let nlabels = c.uvarint().map_err(|e| self.corrupt(S, e))?;
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity((nlabels as usize).min(body.len()));
        for _ in 0..nlabels {
            let at = c.offset();
            let n = c.uvarint32().map_err(|e| self.corrupt(S, e))?;
            let v = c.uvarint32().map_err(|e| self.corrupt(S, e))?;
            let name = self.symbol(n, at)?;
            let value = self.symbol(v, at)?;
            if let Some(&(prev, _)) = pairs.last() {
                if prev >= name {
                    return Err(IndexError::Corrupt {
                        path: self.path.clone(),
                        section: S,
                        offset: at,
                        what: format!(
                            "label names not strictly ascending ({prev:?} then {name:?})"
                        ),
                    });
                }
            }
            pairs.push((name, value));
        }
        // Prometheus treats an empty value as an absent label.
        let labels =
            Labels::from_sorted_unchecked(pairs.into_iter().filter(|(_, v)| !v.is_empty()));

        let nchunks = c.uvarint().map_err(|e| self.corrupt(S, e))?;
        let mut chunks = Vec::with_capacity((nchunks as usize).min(body.len()));
        let mut prev: Option<ChunkEntry> = None;
        for _ in 0..nchunks {
            let e = match prev {
                None => {
                    let min_time = c.varint().map_err(|e| self.corrupt(S, e))?;
                    let dur = c.uvarint().map_err(|e| self.corrupt(S, e))?;
                    let chunk_ref = c.uvarint().map_err(|e| self.corrupt(S, e))?;
                    ChunkEntry {
                        min_time,
                        max_time: min_time.wrapping_add(dur as i64),
                        chunk_ref,
                    }
                }
                Some(p) => {
                    let gap = c.uvarint().map_err(|e| self.corrupt(S, e))?;
                    let dur = c.uvarint().map_err(|e| self.corrupt(S, e))?;
                    let dref = c.varint().map_err(|e| self.corrupt(S, e))?;
                    let min_time = p.max_time.wrapping_add(gap as i64);
                    ChunkEntry {
                        min_time,
                        max_time: min_time.wrapping_add(dur as i64),
                        chunk_ref: (p.chunk_ref as i64).wrapping_add(dref) as u64,
                    }
                }
            };
            chunks.push(e);
            prev = Some(e);
        }
        Ok(SeriesEntry { labels, chunks })
    }

    /// Every symbol (label name or value) of the index, sorted.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.symbols.iter().map(|s| &**s)
    }

    /// Label names present in the index, sorted.
    pub fn label_names(&self) -> Vec<&str> {
        self.postings
            .keys()
            .filter(|k| !k.is_empty())
            .map(|k| &**k)
            .collect()
    }

    /// Values of label `name`, sorted.
    pub fn label_values(&self, name: &str) -> Vec<&str> {
        if name.is_empty() {
            return Vec::new();
        }
        self.postings
            .get(name)
            .map(|vs| vs.iter().map(|(v, _)| &**v).collect())
            .unwrap_or_default()
    }

    fn read_postings(&self, offset: u64) -> Result<Vec<u64>, IndexError> {
        const S: &str = "postings list";
        let mut c = self.section(offset, S)?;
        let n = c.be32().map_err(|e| self.corrupt(S, e))? as usize;
        if c.remaining() != n.saturating_mul(4) {
            return Err(IndexError::Corrupt {
                path: self.path.clone(),
                section: S,
                offset,
                what: format!("list of {n} entries has {} bytes", c.remaining()),
            });
        }
        let mut out = Vec::with_capacity(n);
        let mut last: Option<u64> = None;
        for _ in 0..n {
            let at = c.offset();
            let id = u64::from(c.be32().map_err(|e| self.corrupt(S, e))?);
            if last.is_some_and(|l| l >= id) {
                return Err(IndexError::Corrupt {
                    path: self.path.clone(),
                    section: S,
                    offset: at,
                    what: "series ids not strictly ascending".into(),
                });
            }
            last = Some(id);
            out.push(id);
        }
        Ok(out)
    }

    /// Ids of the series with label `name="value"`, ascending (label order).
    pub fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, IndexError> {
        let Some(values) = self.postings.get(name) else {
            return Ok(Vec::new());
        };
        match values.binary_search_by(|(v, _)| (**v).cmp(value)) {
            Ok(i) => self.read_postings(values[i].1),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Ids of every series, ascending.
    pub fn all_postings(&self) -> Result<Vec<u64>, IndexError> {
        self.postings("", "")
    }

    /// Union of the postings of every value of `name` accepted by `keep`.
    fn postings_where(
        &self,
        name: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<u64>, IndexError> {
        let Some(values) = self.postings.get(name) else {
            return Ok(Vec::new());
        };
        let mut lists = Vec::new();
        for (v, off) in values {
            if keep(v) {
                lists.push(self.read_postings(*off)?);
            }
        }
        Ok(union_many(lists))
    }

    /// Ids of the series selected by all `matchers`, ascending, with
    /// Prometheus semantics: an absent label matches as `""`. With no
    /// matchers, every series.
    pub fn postings_for_matchers(&self, matchers: &[Matcher]) -> Result<Vec<u64>, IndexError> {
        // Positive sets to intersect and sets to remove. A matcher that
        // accepts "" also accepts series without the label, so it can only
        // exclude (the series whose value it rejects).
        let mut its: Vec<Vec<u64>> = Vec::new();
        let mut nots: Vec<Vec<u64>> = Vec::new();
        for m in matchers {
            if m.matches_empty() {
                nots.push(self.postings_where(&m.name, |v| !m.matches(v))?);
                continue;
            }
            let list = match (m.kind, m.set_matches()) {
                (MatchType::Equal, _) => self.postings(&m.name, &m.value)?,
                (MatchType::Regex, Some(set)) => {
                    let mut lists = Vec::with_capacity(set.len());
                    for v in &set {
                        lists.push(self.postings(&m.name, v)?);
                    }
                    union_many(lists)
                }
                _ => self.postings_where(&m.name, |v| m.matches(v))?,
            };
            if list.is_empty() {
                return Ok(Vec::new());
            }
            its.push(list);
        }
        its.sort_by_key(Vec::len);
        let mut result = match its.split_first() {
            None => self.all_postings()?,
            Some((first, rest)) => {
                let mut acc = first.clone();
                for l in rest {
                    acc = intersect(&acc, l);
                }
                acc
            }
        };
        for n in &nots {
            if result.is_empty() {
                break;
            }
            result = subtract(&result, n);
        }
        Ok(result)
    }
}
