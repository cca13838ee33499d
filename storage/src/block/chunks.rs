//! Chunk segment files (`chunks/000001`, `000002`, …), in Prometheus's
//! format (`tsdb/docs/format/chunks.md`): an 8-byte header (magic
//! `0x85BD40DD`, version 1, 3 zero bytes), then per chunk `uvarint(len(data))
//! | encoding <1b> | data | CRC32C(encoding | data) <4b>`.
//!
//! A chunk reference is `segment_index << 32 | offset`, where
//! `segment_index` is the 0-based position of the file among the segment
//! files sorted by number (file `000001` is index 0) and `offset` is where
//! the chunk's length field starts. A segment holds at most
//! `max_segment_size` bytes unless a single chunk is larger.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::BlockError;
use crate::chunk::{Chunk, Encoding};
use crate::index::encoding::{crc32c, put_uvarint, Cursor};

pub const MAGIC_CHUNKS: u32 = 0x85BD_40DD;
pub const CHUNKS_FORMAT_V1: u8 = 1;
pub const SEGMENT_HEADER_SIZE: u64 = 8;
/// Prometheus's default and maximum segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 512 << 20;

/// Path of segment file number `n` (1-based) under `chunks_dir`.
pub fn segment_path(chunks_dir: &Path, n: u64) -> PathBuf {
    chunks_dir.join(format!("{n:06}"))
}

/// Appends chunks to segment files, cutting a new file when the current one
/// would exceed the size limit.
pub struct ChunkWriter {
    dir: PathBuf,
    max_segment_size: u64,
    /// Current segment: its 0-based index, writer and size so far.
    cur: Option<(u64, BufWriter<File>, u64)>,
    finished: Vec<File>,
    buf: Vec<u8>,
    /// Total bytes written over all segments.
    bytes: u64,
}

impl ChunkWriter {
    /// Creates `dir` (the block's `chunks/`) if needed.
    pub fn new(dir: &Path, max_segment_size: u64) -> Result<ChunkWriter, BlockError> {
        std::fs::create_dir_all(dir).map_err(|source| BlockError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(ChunkWriter {
            dir: dir.to_path_buf(),
            max_segment_size: max_segment_size.clamp(SEGMENT_HEADER_SIZE + 1, u64::from(u32::MAX)),
            cur: None,
            finished: Vec::new(),
            buf: Vec::with_capacity(256),
            bytes: 0,
        })
    }

    fn cut(&mut self) -> Result<(), BlockError> {
        let index = match self.cur.take() {
            Some((i, w, _)) => {
                let f = w.into_inner().map_err(|e| BlockError::Io {
                    path: segment_path(&self.dir, i + 1),
                    source: e.into_error(),
                })?;
                self.finished.push(f);
                i + 1
            }
            None => 0,
        };
        let path = segment_path(&self.dir, index + 1);
        let f = File::create(&path).map_err(|source| BlockError::Io {
            path: path.clone(),
            source,
        })?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut header = [0u8; SEGMENT_HEADER_SIZE as usize];
        header[..4].copy_from_slice(&MAGIC_CHUNKS.to_be_bytes());
        header[4] = CHUNKS_FORMAT_V1;
        w.write_all(&header)
            .map_err(|source| BlockError::Io { path, source })?;
        self.bytes += SEGMENT_HEADER_SIZE;
        self.cur = Some((index, w, SEGMENT_HEADER_SIZE));
        Ok(())
    }

    /// Writes one chunk and returns its reference.
    pub fn write(&mut self, chunk: &Chunk) -> Result<u64, BlockError> {
        let data = chunk.bytes();
        self.buf.clear();
        put_uvarint(&mut self.buf, data.len() as u64);
        let len_field = self.buf.len();
        self.buf.push(chunk.encoding().as_u8());
        self.buf.extend_from_slice(data);
        let crc = crc32c(&self.buf[len_field..]);
        self.buf.extend_from_slice(&crc.to_be_bytes());
        let size = self.buf.len() as u64;

        let need_cut = match &self.cur {
            None => true,
            Some((_, _, n)) => *n > SEGMENT_HEADER_SIZE && n + size > self.max_segment_size,
        };
        if need_cut {
            self.cut()?;
        }
        let Some((index, w, n)) = self.cur.as_mut() else {
            return Err(BlockError::Internal(
                "chunk segment missing after cut".into(),
            ));
        };
        let offset = *n;
        if offset > u64::from(u32::MAX) {
            return Err(BlockError::Internal(format!(
                "chunk offset {offset} in segment {} does not fit in 32 bits",
                *index + 1
            )));
        }
        w.write_all(&self.buf).map_err(|source| BlockError::Io {
            path: segment_path(&self.dir, *index + 1),
            source,
        })?;
        *n += size;
        self.bytes += size;
        Ok((*index << 32) | offset)
    }

    /// Flushes and fsyncs every segment; returns the total bytes written.
    pub fn finish(mut self) -> Result<u64, BlockError> {
        if let Some((i, w, _)) = self.cur.take() {
            let f = w.into_inner().map_err(|e| BlockError::Io {
                path: segment_path(&self.dir, i + 1),
                source: e.into_error(),
            })?;
            self.finished.push(f);
        }
        for (i, f) in self.finished.iter().enumerate() {
            f.sync_all().map_err(|source| BlockError::Io {
                path: segment_path(&self.dir, i as u64 + 1),
                source,
            })?;
        }
        Ok(self.bytes)
    }
}

/// Reads chunks by reference with positioned reads (no mmap, no caching).
pub struct ChunkReader {
    segments: Vec<(PathBuf, File, u64)>,
}

impl std::fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.segments.iter().map(|(p, _, n)| (p, n)))
            .finish()
    }
}

impl ChunkReader {
    /// Opens every numbered file in `dir`, in numeric order, and checks
    /// their headers.
    pub fn open(dir: &Path) -> Result<ChunkReader, BlockError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlockError::Io { path, source }
        };
        let mut numbered: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            if let Some(n) = name.to_str().and_then(|s| s.parse::<u64>().ok()) {
                numbered.push((n, entry.path()));
            }
        }
        numbered.sort();
        let mut segments = Vec::with_capacity(numbered.len());
        for (_, path) in numbered {
            let f = File::open(&path).map_err(io(&path))?;
            let size = f.metadata().map_err(io(&path))?.len();
            let mut header = [0u8; SEGMENT_HEADER_SIZE as usize];
            if size < SEGMENT_HEADER_SIZE {
                return Err(BlockError::BadSegment {
                    path,
                    what: format!("{size} bytes is shorter than the segment header"),
                });
            }
            f.read_exact_at(&mut header, 0).map_err(io(&path))?;
            let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            if magic != MAGIC_CHUNKS {
                return Err(BlockError::BadSegment {
                    path,
                    what: format!("bad magic number {magic:#010x}"),
                });
            }
            if header[4] != CHUNKS_FORMAT_V1 {
                return Err(BlockError::BadSegment {
                    path,
                    what: format!("unsupported chunk format version {}", header[4]),
                });
            }
            segments.push((path, f, size));
        }
        Ok(ChunkReader { segments })
    }

    /// Total size of the segment files.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.2).sum()
    }

    fn segment(&self, chunk_ref: u64) -> Result<&(PathBuf, File, u64), BlockError> {
        let seg = (chunk_ref >> 32) as usize;
        let offset = chunk_ref & OFFSET_MASK;
        let s = self
            .segments
            .get(seg)
            .ok_or_else(|| BlockError::BadChunkRef {
                chunk_ref,
                what: format!(
                    "segment index {seg} out of range ({} segments)",
                    self.segments.len()
                ),
            })?;
        if offset < SEGMENT_HEADER_SIZE || offset >= s.2 {
            return Err(BlockError::CorruptChunk {
                path: s.0.clone(),
                offset,
                what: format!("chunk offset outside the {}-byte segment", s.2),
            });
        }
        Ok(s)
    }

    fn pread(path: &Path, f: &File, offset: u64, len: usize) -> Result<Vec<u8>, BlockError> {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset)
            .map_err(|source| BlockError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(buf)
    }

    /// Reads and verifies the chunk at `chunk_ref`.
    pub fn read(&self, chunk_ref: u64) -> Result<Chunk, BlockError> {
        let (path, f, size) = self.segment(chunk_ref)?;
        let offset = chunk_ref & OFFSET_MASK;
        // One read usually covers the whole chunk (XOR chunks of 120 samples
        // are a few hundred bytes); longer ones take a second read.
        let window = (*size - offset).min(512) as usize;
        let buf = Self::pread(path, f, offset, window)?;
        match decode_at(path, &buf, offset, offset, *size)? {
            Ok(c) => Ok(c),
            Err(total) => {
                let buf = Self::pread(path, f, offset, total)?;
                decode_at(path, &buf, offset, offset, *size)?.map_err(|_| {
                    BlockError::CorruptChunk {
                        path: path.clone(),
                        offset,
                        what: "chunk length changed between reads".into(),
                    }
                })
            }
        }
    }

    /// Reads and verifies several chunks. A series' chunks are written back
    /// to back, so refs that ascend within one segment are fetched with a
    /// single read (bounded to 1 MiB per read).
    pub fn read_many(&self, refs: &[u64]) -> Result<Vec<Chunk>, BlockError> {
        let mut out = Vec::with_capacity(refs.len());
        let mut i = 0;
        while i < refs.len() {
            let (path, f, size) = self.segment(refs[i])?;
            let start = refs[i] & OFFSET_MASK;
            let mut j = i + 1;
            while j < refs.len()
                && refs[j] >> 32 == refs[i] >> 32
                && refs[j] > refs[j - 1]
                && (refs[j] & OFFSET_MASK) - start < (1 << 20)
                && (refs[j] & OFFSET_MASK) < *size
            {
                j += 1;
            }
            if j == i + 1 {
                out.push(self.read(refs[i])?);
                i += 1;
                continue;
            }
            let last = refs[j - 1] & OFFSET_MASK;
            let end = (last + 512).min(*size);
            let buf = Self::pread(path, f, start, (end - start) as usize)?;
            for &r in &refs[i..j] {
                match decode_at(path, &buf, start, r & OFFSET_MASK, *size)? {
                    Ok(c) => out.push(c),
                    // Ran past the shared buffer: fetch this one alone.
                    Err(_) => out.push(self.read(r)?),
                }
            }
            i = j;
        }
        Ok(out)
    }
}

const OFFSET_MASK: u64 = 0xffff_ffff;

/// Decodes the chunk at file offset `offset` from `buf`, which holds the
/// segment's bytes from file offset `origin`. `Ok(Err(n))` means `buf` ends
/// before the chunk does and `n` bytes from `offset` are needed.
fn decode_at(
    path: &Path,
    buf: &[u8],
    origin: u64,
    offset: u64,
    segment_size: u64,
) -> Result<Result<Chunk, usize>, BlockError> {
    let corrupt = |offset: u64, what: String| BlockError::CorruptChunk {
        path: path.to_path_buf(),
        offset,
        what,
    };
    let rel = (offset - origin) as usize;
    let mut c = Cursor::new(buf.get(rel..).unwrap_or_default(), offset);
    let len = match c.uvarint() {
        Ok(l) => l,
        // A length cut off by the end of the buffer, not of the segment.
        Err(_)
            if (buf.len() as u64 + origin) < segment_size && buf.len().saturating_sub(rel) < 10 =>
        {
            return Ok(Err(10));
        }
        Err(e) => return Err(corrupt(e.offset, e.what.to_string())),
    };
    let head = c.offset() - offset;
    let total = head
        .checked_add(len)
        .and_then(|n| n.checked_add(1 + 4))
        .filter(|&n| offset + n <= segment_size)
        .ok_or_else(|| {
            corrupt(
                offset,
                format!("chunk of {len} bytes runs past the end of the segment"),
            )
        })? as usize;
    let Some(chunk) = buf.get(rel..rel + total) else {
        return Ok(Err(total));
    };
    let head = head as usize;
    let body = &chunk[head..total - 4];
    let stored = u32::from_be_bytes([
        chunk[total - 4],
        chunk[total - 3],
        chunk[total - 2],
        chunk[total - 1],
    ]);
    let computed = crc32c(body);
    if stored != computed {
        return Err(corrupt(
            offset,
            format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    let enc = Encoding::try_from(body[0]).map_err(|e| corrupt(offset, e.to_string()))?;
    Chunk::new(enc, Arc::from(&body[1..]))
        .map(Ok)
        .map_err(|e| corrupt(offset, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{collect_samples, XorAppender};

    fn chunk(n: usize, seed: i64) -> Chunk {
        let mut a = XorAppender::new();
        for i in 0..n as i64 {
            a.append(seed + i * 15_000, (seed + i) as f64 * 0.5);
        }
        a.to_chunk()
    }

    #[test]
    fn round_trip_and_segment_cutting() {
        let dir = tempfile::tempdir().unwrap();
        let cdir = dir.path().join("chunks");
        let mut w = ChunkWriter::new(&cdir, 300).unwrap();
        let chunks: Vec<Chunk> = (0..10).map(|i| chunk(1 + i * 13, i as i64)).collect();
        let refs: Vec<u64> = chunks.iter().map(|c| w.write(c).unwrap()).collect();
        w.finish().unwrap();
        assert!(refs.windows(2).all(|p| p[0] < p[1]));
        assert_eq!(refs[0], 8);
        assert!(
            refs.iter().any(|r| r >> 32 > 0),
            "small limit must cut segments"
        );
        assert!(cdir.join("000001").exists() && cdir.join("000002").exists());
        let r = ChunkReader::open(&cdir).unwrap();
        for (c, rf) in chunks.iter().zip(&refs) {
            let got = r.read(*rf).unwrap();
            assert_eq!(got.bytes(), c.bytes());
            assert_eq!(
                collect_samples(&mut got.iter()).unwrap(),
                collect_samples(&mut c.iter()).unwrap()
            );
        }
        let b = std::fs::read(cdir.join("000001")).unwrap();
        assert_eq!(&b[..8], &[0x85, 0xBD, 0x40, 0xDD, 1, 0, 0, 0]);
    }

    /// Batched reads agree with single reads for every subset shape:
    /// across segments, with chunks larger than the read-ahead, and with
    /// gaps.
    #[test]
    fn read_many_matches_single_reads() {
        let dir = tempfile::tempdir().unwrap();
        let cdir = dir.path().join("chunks");
        let mut w = ChunkWriter::new(&cdir, 1500).unwrap();
        let sizes = [1usize, 120, 3, 400, 2, 2, 1000, 50, 7, 120, 120, 5];
        let chunks: Vec<Chunk> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| chunk(n, i as i64))
            .collect();
        let refs: Vec<u64> = chunks.iter().map(|c| w.write(c).unwrap()).collect();
        w.finish().unwrap();
        assert!(refs.iter().any(|r| r >> 32 > 0));
        assert!(
            chunks.iter().any(|c| c.bytes().len() > 600),
            "a chunk larger than the read-ahead"
        );
        let r = ChunkReader::open(&cdir).unwrap();
        let subsets: Vec<Vec<usize>> = vec![
            (0..sizes.len()).collect(),
            vec![0, 2, 4, 6, 8],
            vec![3],
            vec![5, 6, 7],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            vec![11, 0],
            vec![5, 6],
            vec![4, 6],
        ];
        for sub in subsets {
            let rs: Vec<u64> = sub.iter().map(|&i| refs[i]).collect();
            let got = r.read_many(&rs).unwrap();
            assert_eq!(got.len(), sub.len());
            for (g, &i) in got.iter().zip(&sub) {
                assert_eq!(g.bytes(), chunks[i].bytes(), "chunk {i} in {sub:?}");
            }
        }
        assert!(r.read_many(&[]).unwrap().is_empty());
        assert!(r.read_many(&[refs[0], 9 << 32]).is_err());
    }

    #[test]
    fn corruption_is_reported_with_path_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let cdir = dir.path().join("chunks");
        let mut w = ChunkWriter::new(&cdir, DEFAULT_SEGMENT_SIZE).unwrap();
        let r1 = w.write(&chunk(50, 1)).unwrap();
        let r2 = w.write(&chunk(50, 2)).unwrap();
        w.finish().unwrap();
        let p = cdir.join("000001");
        let mut b = std::fs::read(&p).unwrap();
        b[r2 as usize + 20] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let r = ChunkReader::open(&cdir).unwrap();
        assert!(r.read(r1).is_ok());
        let e = r.read_many(&[r1, r2]).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains(&r2.to_string()), "{e}");
        let e = r.read(r2).unwrap_err().to_string();
        assert!(
            e.contains("000001") && e.contains("checksum") && e.contains(&r2.to_string()),
            "{e}"
        );
        assert!(r.read(5 << 32).is_err());
        assert!(r.read(3).is_err());
        assert!(r.read(b.len() as u64 - 2).is_err());
        b[0] = 0;
        std::fs::write(&p, &b).unwrap();
        assert!(matches!(
            ChunkReader::open(&cdir),
            Err(BlockError::BadSegment { .. })
        ));
    }
}
