//! Completed head chunks moved out of the heap: appended to files in
//! `<data dir>/chunks_head/` and read back through read-only memory maps
//! (Prometheus's `ChunkDiskMapper`, simplified). Format and crash semantics:
//! `storage/docs/head_chunks.md`.
//!
//! Owns: the files in its directory, the sequence numbers naming them, and
//! which chunk times each file holds (to delete files once truncation has
//! dropped all their chunks). Must not: be needed for durability. The WAL
//! is the source of truth; on open the directory is emptied, and replay
//! rebuilds the head (and rewrites these files).
//!
//! Invariants:
//! - A file is created at its full size (`set_len(max_file_size)`, sparse)
//!   and mapped at that size once; it is never truncated or rewritten while
//!   the process runs, only appended to (with `write(2)`, through a
//!   `BufWriter` flushed after each chunk, so the bytes are in the page cache
//!   before a [`Chunk`] refers to them) and finally unlinked.
//! - A [`Chunk`] made here holds an `Arc` of its file's map, so readers keep
//!   the mapping alive after the file is deleted.
//! - Chunks are written under this store's mutex, which is held only for the
//!   buffered write and its flush of one chunk (~a few hundred bytes), and
//!   for creating a new file once per `max_file_size` bytes. Deleting files
//!   happens after the mutex is released.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};
use parking_lot::Mutex;

use crate::chunk::{Chunk, ChunkBytes, Encoding};

/// File header magic, "PHC1" (Pharos head chunks).
pub(crate) const MAGIC: u32 = 0x5048_4331;
/// File format version.
pub(crate) const VERSION: u8 = 1;
/// Magic (4), version (1), padding (3).
pub(crate) const FILE_HEADER_SIZE: u64 = 8;
/// Series ref (8), mint (8), maxt (8), encoding (1).
const RECORD_FIXED: usize = 25;
/// Files are cut once the next chunk would not fit this size (Prometheus's
/// `MaxHeadChunkFileSize`).
pub const DEFAULT_HEAD_CHUNK_FILE_SIZE: u64 = 128 << 20;

/// An I/O failure in the head chunk files, with the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum HeadChunksError {
    #[error("head chunks {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("head chunk of {len} bytes does not fit a head chunk file of {max} bytes")]
    TooLarge { len: usize, max: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HeadChunksError + '_ {
    move |source| HeadChunksError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file chunks are appended to.
struct ActiveFile {
    seq: u32,
    path: PathBuf,
    w: BufWriter<File>,
    /// Bytes written (header included): the offset of the next record.
    size: u64,
    map: Arc<Mmap>,
}

struct Inner {
    active: Option<ActiveFile>,
    /// Every file not yet deleted (the active one included): sequence number
    /// to the newest `maxt` of the chunks in it.
    files: BTreeMap<u32, i64>,
    next_seq: u32,
}

/// Writes completed head chunks to `chunks_head/` files and hands back
/// [`Chunk`]s that read them through a map.
pub(crate) struct ChunkDiskMapper {
    dir: PathBuf,
    max_file_size: u64,
    inner: Mutex<Inner>,
    /// Write failures so far (the chunk then stays on the heap).
    write_errors: AtomicU64,
}

impl ChunkDiskMapper {
    /// Opens the store in `dir`, deleting whatever a previous run left there
    /// (the WAL replay that follows rebuilds it).
    pub(crate) fn open(dir: &Path, max_file_size: u64) -> Result<ChunkDiskMapper, HeadChunksError> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(dir)(e)),
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(ChunkDiskMapper {
            dir: dir.to_path_buf(),
            max_file_size: max_file_size.clamp(FILE_HEADER_SIZE + 64, u64::from(u32::MAX)),
            inner: Mutex::new(Inner {
                active: None,
                files: BTreeMap::new(),
                next_seq: 1,
            }),
            write_errors: AtomicU64::new(0),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files on disk now.
    pub(crate) fn num_files(&self) -> usize {
        self.inner.lock().files.len()
    }

    /// Failed chunk writes so far.
    pub(crate) fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// Appends one chunk of series `sref` covering `[mint, maxt]` and
    /// returns it backed by the file's map. On error nothing refers to the
    /// partly written bytes, and the file is not appended to again.
    pub(crate) fn write(
        &self,
        sref: u64,
        mint: i64,
        maxt: i64,
        encoding: Encoding,
        data: &[u8],
    ) -> Result<Chunk, HeadChunksError> {
        let mut len_buf = [0u8; 10];
        let len_n = put_uvarint(&mut len_buf, data.len() as u64);
        let record_len = (RECORD_FIXED + len_n + data.len() + 4) as u64;
        if FILE_HEADER_SIZE + record_len > self.max_file_size {
            return Err(HeadChunksError::TooLarge {
                len: data.len(),
                max: self.max_file_size,
            });
        }
        let mut fixed = [0u8; RECORD_FIXED];
        fixed[0..8].copy_from_slice(&sref.to_be_bytes());
        fixed[8..16].copy_from_slice(&mint.to_be_bytes());
        fixed[16..24].copy_from_slice(&maxt.to_be_bytes());
        fixed[24] = encoding.as_u8();
        let mut crc = crc32c::crc32c(&fixed);
        crc = crc32c::crc32c_append(crc, &len_buf[..len_n]);
        crc = crc32c::crc32c_append(crc, data);

        let mut inner = self.inner.lock();
        let full = inner
            .active
            .as_ref()
            .is_none_or(|a| a.size + record_len > self.max_file_size);
        if full {
            self.cut_file(&mut inner)?;
        }
        let Inner { active, files, .. } = &mut *inner;
        let Some(a) = active.as_mut() else {
            return Err(HeadChunksError::Io {
                path: self.dir.clone(),
                source: io::Error::other("no active head chunk file"),
            });
        };
        let data_off = a.size as usize + RECORD_FIXED + len_n;
        let res = (|| {
            a.w.write_all(&fixed)?;
            a.w.write_all(&len_buf[..len_n])?;
            a.w.write_all(data)?;
            a.w.write_all(&crc.to_be_bytes())?;
            a.w.flush()
        })();
        if let Err(e) = res {
            let path = a.path.clone();
            *active = None;
            return Err(HeadChunksError::Io { path, source: e });
        }
        a.size += record_len;
        let newest = files.entry(a.seq).or_insert(i64::MIN);
        *newest = (*newest).max(maxt);
        let bytes = ChunkBytes::mapped(a.map.clone(), data_off, data.len()).ok_or_else(|| {
            HeadChunksError::Io {
                path: a.path.clone(),
                source: io::Error::other("chunk lies outside the file's map"),
            }
        })?;
        Ok(Chunk::from_chunk_bytes(encoding, bytes))
    }

    /// Starts a new file (the old one, already flushed, stays mapped by its
    /// chunks).
    #[cold]
    fn cut_file(&self, inner: &mut Inner) -> Result<(), HeadChunksError> {
        inner.active = None;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let path = self.dir.join(format!("{seq:06}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        inner.files.insert(seq, i64::MIN);
        // Full size up front: the map below never extends past the end of
        // the file, so no read through it can fault (SIGBUS).
        file.set_len(self.max_file_size).map_err(io_err(&path))?;
        let mut header = [0u8; FILE_HEADER_SIZE as usize];
        header[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        header[4] = VERSION;
        let mut w = BufWriter::with_capacity(8 << 10, file);
        w.write_all(&header).map_err(io_err(&path))?;
        w.flush().map_err(io_err(&path))?;
        let len = usize::try_from(self.max_file_size).map_err(|_| HeadChunksError::TooLarge {
            len: 0,
            max: self.max_file_size,
        })?;
        // SAFETY: the file was just created (`create_new`) in this head's
        // own directory and sized above; nothing in Pharos ever truncates or
        // shrinks it: this code only appends within that size and finally
        // unlinks it, and the only other removal is `open` emptying the
        // directory (by a second `Db` on the same directory, before its WAL
        // lock refuses it), which also only unlinks. Unlinking leaves a
        // mapping valid, so every mapped byte stays backed by the file for
        // the life of the map. (Truncation by another program would be
        // outside the data directory's contract, as for the WAL and blocks.)
        let map = unsafe { MmapOptions::new().len(len).map(w.get_ref()) }.map_err(io_err(&path))?;
        inner.active = Some(ActiveFile {
            seq,
            path,
            w,
            size: FILE_HEADER_SIZE,
            map: Arc::new(map),
        });
        Ok(())
    }

    /// Deletes every file whose chunks all end before `t` (the head has
    /// dropped them). Returns how many files were deleted.
    pub(crate) fn truncate_before(&self, t: i64) -> Result<usize, HeadChunksError> {
        let doomed: Vec<u32> = {
            let mut inner = self.inner.lock();
            let doomed: Vec<u32> = inner
                .files
                .iter()
                .filter(|&(_, &maxt)| maxt < t)
                .map(|(&seq, _)| seq)
                .collect();
            for seq in &doomed {
                inner.files.remove(seq);
            }
            if inner
                .active
                .as_ref()
                .is_some_and(|a| doomed.contains(&a.seq))
            {
                inner.active = None;
            }
            doomed
        };
        let mut first_err = None;
        for seq in &doomed {
            let path = self.dir.join(format!("{seq:06}"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(HeadChunksError::Io { path, source: e });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(doomed.len()),
        }
    }

    /// Counts a failed write; true when it should be logged (the 1st, 2nd,
    /// 4th, 8th, … so a full disk does not flood the log).
    pub(crate) fn note_write_error(&self) -> bool {
        let n = self.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
        n.is_power_of_two()
    }
}

fn put_uvarint(buf: &mut [u8; 10], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

/// One chunk record read back from a file (tests and tools).
#[cfg(test)]
#[derive(Debug, PartialEq)]
pub(crate) struct Record {
    pub(crate) sref: u64,
    pub(crate) mint: i64,
    pub(crate) maxt: i64,
    pub(crate) encoding: u8,
    pub(crate) data: Vec<u8>,
}

/// Reads the records of one file up to the first that does not check out
/// (the zero-filled tail, or a torn write), following the documented format.
#[cfg(test)]
pub(crate) fn read_records(path: &Path) -> io::Result<Vec<Record>> {
    let b = std::fs::read(path)?;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    if b.len() < FILE_HEADER_SIZE as usize || b[0..4] != MAGIC.to_be_bytes() || b[4] != VERSION {
        return Err(bad("bad header"));
    }
    let mut out = Vec::new();
    let mut p = FILE_HEADER_SIZE as usize;
    while let Some(fixed) = b.get(p..p + RECORD_FIXED) {
        let mut len = 0u64;
        let mut q = p + RECORD_FIXED;
        let mut shift = 0;
        loop {
            let Some(&c) = b.get(q) else { return Ok(out) };
            q += 1;
            len |= u64::from(c & 0x7f) << shift;
            shift += 7;
            if c < 0x80 || shift > 63 {
                break;
            }
        }
        let end = q + len as usize;
        let Some(crc) = b.get(end..end + 4) else {
            break;
        };
        if crc32c::crc32c(&b[p..end]).to_be_bytes() != crc || fixed[24] == 0 {
            break;
        }
        let be = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&fixed[i..i + 8]);
            a
        };
        out.push(Record {
            sref: u64::from_be_bytes(be(0)),
            mint: i64::from_be_bytes(be(8)),
            maxt: i64::from_be_bytes(be(16)),
            encoding: fixed[24],
            data: b[q..end].to_vec(),
        });
        p = end + 4;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{collect_samples, XorAppender};

    fn chunk(n: usize, base: i64) -> XorAppender {
        let mut a = XorAppender::new();
        for i in 0..n as i64 {
            a.append(base + i * 15_000, (i * 7 % 13) as f64 + 0.5);
        }
        a
    }

    #[test]
    fn written_chunks_read_back_through_the_map_and_the_format() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("chunks_head");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("000001"), b"left over").unwrap();
        let m = ChunkDiskMapper::open(&d, 1024).unwrap();
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            0,
            "opening empties the dir"
        );
        let mut written = Vec::new();
        for i in 0..20u64 {
            let a = chunk(60, i as i64 * 1_000_000);
            let c = m
                .write(
                    i + 1,
                    i as i64 * 10,
                    i as i64 * 10 + 9,
                    Encoding::Xor,
                    a.bytes(),
                )
                .unwrap();
            assert!(c.chunk_bytes().is_mapped());
            assert_eq!(c.heap_size(), 0);
            assert_eq!(c.bytes(), a.bytes());
            assert_eq!(
                collect_samples(&mut c.iter()).unwrap(),
                collect_samples(&mut a.to_chunk().iter()).unwrap()
            );
            written.push((i + 1, a.bytes().to_vec(), c));
        }
        assert!(m.num_files() > 1, "a 1 KiB limit cuts several files");
        let mut recs = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in &names {
            assert_eq!(std::fs::metadata(p).unwrap().len(), 1024);
            recs.extend(read_records(p).unwrap());
        }
        assert_eq!(recs.len(), 20);
        for (r, (sref, bytes, _)) in recs.iter().zip(&written) {
            assert_eq!((r.sref, r.encoding), (*sref, 1));
            assert_eq!(r.maxt, r.mint + 9);
            assert_eq!(&r.data, bytes);
        }
    }

    #[test]
    fn truncation_deletes_whole_files_only_and_maps_outlive_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("chunks_head");
        let m = ChunkDiskMapper::open(&d, 512).unwrap();
        let mut chunks = Vec::new();
        for i in 0..30i64 {
            let a = chunk(40, i * 1000);
            chunks.push((
                a.bytes().to_vec(),
                m.write(1, i * 100, i * 100 + 99, Encoding::Xor, a.bytes())
                    .unwrap(),
            ));
        }
        let files = m.num_files();
        assert!(files >= 3);
        // Nothing ends before 0.
        assert_eq!(m.truncate_before(0).unwrap(), 0);
        // Every chunk ends before 1500 in the first file(s) only.
        let deleted = m.truncate_before(1500).unwrap();
        assert!(deleted >= 1 && deleted < files, "{deleted} of {files}");
        assert_eq!(m.num_files(), files - deleted);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), files - deleted);
        // Chunks of deleted files still read: their maps are alive.
        for (bytes, c) in &chunks {
            assert_eq!(c.bytes(), &bytes[..]);
        }
        // Everything gone, the active file too; writing starts a new one.
        assert_eq!(m.truncate_before(i64::MAX).unwrap(), files - deleted);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        let a = chunk(10, 0);
        let c = m.write(2, 5000, 6000, Encoding::Xor, a.bytes()).unwrap();
        assert_eq!(c.bytes(), a.bytes());
        assert_eq!(m.num_files(), 1);
    }

    #[test]
    fn a_chunk_too_large_for_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = ChunkDiskMapper::open(dir.path(), 256).unwrap();
        let a = chunk(120, 0);
        assert!(a.bytes().len() > 256);
        assert!(matches!(
            m.write(1, 0, 1, Encoding::Xor, a.bytes()),
            Err(HeadChunksError::TooLarge { .. })
        ));
        assert_eq!(m.num_files(), 0);
    }

    #[test]
    fn uvarint() {
        let mut b = [0u8; 10];
        assert_eq!(put_uvarint(&mut b, 0), 1);
        assert_eq!(put_uvarint(&mut b, 300), 2);
        assert_eq!(&b[..2], &[0xac, 0x02]);
        assert_eq!(put_uvarint(&mut b, u64::MAX), 10);
    }
}
