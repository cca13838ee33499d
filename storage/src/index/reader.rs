//! Reader of an index file through positioned reads.
//!
//! Opening validates the header, the TOC, the symbol table and the postings
//! offset table (with their checksums) and keeps the decoded symbols and the
//! offset table in memory. Series entries and postings lists are read, and
//! their checksums verified, on each lookup, so an open index costs memory
//! for its symbols and label pairs only, and the bytes can come from a file,
//! memory, or (later) a cache in front of object storage ([`IndexSource`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::encoding::{crc32c, Cursor, DecodeError};
use super::postings::{intersect, subtract, union_many};
use super::{ChunkEntry, IndexError, FORMAT_V2, MAGIC_INDEX, SERIES_ALIGN, TOC_LEN};
use crate::labels::{Labels, MatchType, Matcher};

/// Random access to the bytes of an index file.
pub trait IndexSource: Send + Sync {
    /// Total size in bytes.
    fn size(&self) -> u64;
    /// Exactly `len` bytes at `offset`; callers stay within `size()`.
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>>;
}

impl IndexSource for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        usize::try_from(offset)
            .ok()
            .and_then(|o| self.get(o..o.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    }
}

/// An index file read with `pread`; the file is immutable once written.
struct FileSource {
    file: File,
    size: u64,
}

impl IndexSource for FileSource {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// Label name → (value, postings list offset), values sorted.
type PostingsTable = BTreeMap<Box<str>, Vec<(Box<str>, u64)>>;

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
    src: Box<dyn IndexSource>,
    size: u64,
    toc: Toc,
    symbols: Vec<Box<str>>,
    /// Label name → (value, postings list offset), values sorted. The name
    /// `""` holds the single all-series list.
    postings: PostingsTable,
}

impl std::fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader")
            .field("path", &self.path)
            .field("bytes", &self.size)
            .field("symbols", &self.symbols.len())
            .finish()
    }
}

impl IndexReader {
    /// Opens and validates the index file at `path`.
    pub fn open(path: &Path) -> Result<IndexReader, IndexError> {
        let io = |source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        IndexReader::from_source(path, Box::new(FileSource { file, size }))
    }

    /// Validates an index already in memory; `path` is used in errors.
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Result<IndexReader, IndexError> {
        IndexReader::from_source(path, Box::new(data))
    }

    /// Validates the index behind `src`; `path` names it in errors.
    pub fn from_source(path: &Path, src: Box<dyn IndexSource>) -> Result<IndexReader, IndexError> {
        let size = src.size();
        let mut r = IndexReader {
            path: path.to_path_buf(),
            src,
            size,
            toc: Toc {
                symbols: 0,
                series: 0,
                label_indices: 0,
                postings_table: 0,
            },
            symbols: Vec::new(),
            postings: BTreeMap::new(),
        };
        if size < (5 + TOC_LEN) as u64 {
            return Err(IndexError::TooSmall { path: r.path, size });
        }
        let header = r.read(0, 5, "header")?;
        let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if magic != MAGIC_INDEX {
            return Err(IndexError::BadMagic {
                path: r.path,
                found: magic,
            });
        }
        if header[4] != FORMAT_V2 {
            return Err(IndexError::UnsupportedVersion {
                path: r.path,
                version: header[4],
            });
        }
        let toc_at = size - TOC_LEN as u64;
        let toc = r.read(toc_at, TOC_LEN, "TOC")?;
        let toc_bytes = &toc[..TOC_LEN - 4];
        let stored = u32::from_be_bytes([
            toc[TOC_LEN - 4],
            toc[TOC_LEN - 3],
            toc[TOC_LEN - 2],
            toc[TOC_LEN - 1],
        ]);
        let computed = crc32c(toc_bytes);
        if stored != computed {
            return Err(IndexError::Checksum {
                path: r.path,
                section: "TOC",
                offset: toc_at,
                stored,
                computed,
            });
        }
        let mut c = Cursor::new(toc_bytes, toc_at);
        let mut offsets = [0u64; 6];
        for o in &mut offsets {
            *o = c.be64().map_err(|e| r.corrupt("TOC", e))?;
        }
        r.toc = Toc {
            symbols: offsets[0],
            series: offsets[1],
            label_indices: offsets[2],
            postings_table: offsets[5],
        };
        for (what, off) in [
            ("symbol table", r.toc.symbols),
            ("series", r.toc.series),
            ("label indices", r.toc.label_indices),
            ("postings offset table", r.toc.postings_table),
        ] {
            if off > toc_at {
                return Err(IndexError::Corrupt {
                    path: r.path,
                    section: "TOC",
                    offset: toc_at,
                    what: format!("{what} offset {off} is past the end of the file"),
                });
            }
        }
        r.symbols = r.read_symbols()?;
        r.postings = r.read_postings_table()?;
        Ok(r)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the index file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// `len` bytes at `offset`, which must lie inside the file.
    fn read(&self, offset: u64, len: usize, section: &'static str) -> Result<Vec<u8>, IndexError> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(IndexError::Corrupt {
                path: self.path.clone(),
                section,
                offset,
                what: format!(
                    "{len} bytes at offset {offset} run past the end of the {}-byte file",
                    self.size
                ),
            });
        }
        self.src
            .read_at(offset, len)
            .map_err(|source| IndexError::Io {
                path: self.path.clone(),
                source,
            })
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
    /// its checksum verified, and the file offset of the body.
    fn section(&self, offset: u64, section: &'static str) -> Result<(Vec<u8>, u64), IndexError> {
        let head = self.read(offset, 4, section)?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let body_at = offset + 4;
        let mut body = self.read(body_at, len + 4, section)?;
        let stored = u32::from_be_bytes([body[len], body[len + 1], body[len + 2], body[len + 3]]);
        body.truncate(len);
        let computed = crc32c(&body);
        if stored != computed {
            return Err(IndexError::Checksum {
                path: self.path.clone(),
                section,
                offset,
                stored,
                computed,
            });
        }
        Ok((body, body_at))
    }

    fn read_symbols(&self) -> Result<Vec<Box<str>>, IndexError> {
        const S: &str = "symbol table";
        let (body, at) = self.section(self.toc.symbols, S)?;
        let mut c = Cursor::new(&body, at);
        let n = c.be32().map_err(|e| self.corrupt(S, e))? as usize;
        // Each symbol takes at least one byte: bound the allocation by the data.
        let mut out = Vec::with_capacity(n.min(c.remaining()));
        for _ in 0..n {
            let s = c.uvarint_str().map_err(|e| self.corrupt(S, e))?;
            out.push(Box::from(s));
        }
        Ok(out)
    }

    fn read_postings_table(&self) -> Result<PostingsTable, IndexError> {
        const S: &str = "postings offset table";
        let (body, at) = self.section(self.toc.postings_table, S)?;
        let mut c = Cursor::new(&body, at);
        let n = c.be32().map_err(|e| self.corrupt(S, e))?;
        let mut out = PostingsTable::new();
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
        // Entries are usually far below 256 bytes: one read, rarely two.
        let window = (self.size - offset).min(256) as usize;
        let mut buf = self.read(offset, window, S)?;
        let mut c = Cursor::new(&buf, offset);
        let len = c.uvarint().map_err(|e| self.corrupt(S, e))?;
        let head = (c.offset() - offset) as usize;
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(head + 4))
            .ok_or_else(|| IndexError::Corrupt {
                path: self.path.clone(),
                section: S,
                offset,
                what: format!("entry length {len} is too large"),
            })?;
        if total > buf.len() {
            let more = self.read(offset + buf.len() as u64, total - buf.len(), S)?;
            buf.extend_from_slice(&more);
        }
        let body_at = offset + head as u64;
        let body = &buf[head..total - 4];
        let stored = u32::from_be_bytes([
            buf[total - 4],
            buf[total - 3],
            buf[total - 2],
            buf[total - 1],
        ]);
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
        let (body, at) = self.section(offset, S)?;
        let mut c = Cursor::new(&body, at);
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
