//! Segment files: naming, the segment header, record frames, and listing a
//! WAL directory.
//!
//! Owns: the on-disk framing (`docs/wal.md`): an 8-byte segment header, then
//! frames of `len u32 | crc32c(payload) u32 | crc32c(len, crc) u32 | payload`.
//! The header checksum lets the reader trust a frame's length before it trusts
//! the payload, which is what separates a torn tail (length runs past the end
//! of the file) from a corrupt record (checksum mismatch on complete bytes).
//! Must not: interpret payloads (see `record.rs`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::WalError;

/// First four bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 4] = *b"PHWL";
/// Current segment format version.
pub(crate) const SEGMENT_VERSION: u8 = 1;
/// Bytes of the segment header: magic, version, 3 reserved zero bytes.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 8;
/// Bytes of a frame header.
pub(crate) const FRAME_HEADER_LEN: usize = 12;
/// Prefix of checkpoint directory names (`checkpoint.00000012`).
pub(crate) const CHECKPOINT_PREFIX: &str = "checkpoint.";
/// Suffix of a checkpoint directory still being written.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// The segment header bytes.
pub(crate) fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4] = SEGMENT_VERSION;
    h
}

/// Checks a segment header; `Err` holds the reason for the corruption report.
pub(crate) fn check_header(h: &[u8]) -> Result<(), String> {
    if h.len() < SEGMENT_HEADER_LEN as usize || h[..4] != SEGMENT_MAGIC {
        return Err("bad segment magic".to_string());
    }
    if h[4] != SEGMENT_VERSION {
        return Err(format!("unsupported segment version {}", h[4]));
    }
    Ok(())
}

/// File name of segment `index`: eight decimal digits, so names sort in
/// index order (wider indexes still parse).
pub fn segment_name(index: u64) -> String {
    format!("{index:08}")
}

/// Path of segment `index` in `dir`.
pub(crate) fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(segment_name(index))
}

/// Name of the checkpoint covering segments up to and including `index`.
pub fn checkpoint_name(index: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{index:08}")
}

/// Appends one frame holding `payload` to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), WalError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| WalError::RecordTooLarge { len: payload.len() })?;
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let hcrc = crc32c::crc32c(&h[..8]);
    h[8..].copy_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    Ok(())
}

/// A frame header that passed its own checksum.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHeader {
    pub len: u32,
    pub crc: u32,
}

/// Parses a frame header; `None` when its checksum does not match.
pub(crate) fn parse_frame_header(h: &[u8; FRAME_HEADER_LEN]) -> Option<FrameHeader> {
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if crc32c::crc32c(&h[..8]) != word(8) {
        return None;
    }
    Some(FrameHeader {
        len: word(0),
        crc: word(4),
    })
}

/// What a WAL directory holds, as parsed from file names.
#[derive(Debug, Default, Clone)]
pub struct DirListing {
    /// Segments in ascending index order.
    pub segments: Vec<(u64, PathBuf)>,
    /// Completed checkpoints in ascending index order.
    pub checkpoints: Vec<(u64, PathBuf)>,
    /// Leftover `checkpoint.N.tmp` directories from an interrupted checkpoint.
    pub tmp_checkpoints: Vec<PathBuf>,
}

impl DirListing {
    /// The newest completed checkpoint.
    pub fn latest_checkpoint(&self) -> Option<&(u64, PathBuf)> {
        self.checkpoints.last()
    }
}

fn parse_index(s: &str) -> Option<u64> {
    if s.len() < 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Lists segments and checkpoints in `dir`; unrelated files are ignored.
pub fn list_dir(dir: &Path) -> Result<DirListing, WalError> {
    let mut out = DirListing::default();
    let rd = fs::read_dir(dir).map_err(|e| WalError::io("list directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| WalError::io("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if let Some(rest) = name.strip_prefix(CHECKPOINT_PREFIX) {
            if rest.ends_with(TMP_SUFFIX) {
                out.tmp_checkpoints.push(path);
            } else if let Some(i) = parse_index(rest) {
                out.checkpoints.push((i, path));
            }
        } else if let Some(i) = parse_index(name) {
            out.segments.push((i, path));
        }
    }
    out.segments.sort();
    out.checkpoints.sort();
    Ok(out)
}

/// fsyncs a directory so that entries created, renamed or removed in it
/// survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let f = fs::File::open(dir).map_err(|e| WalError::io("open directory", dir, e))?;
    f.sync_all()
        .map_err(|e| WalError::io("fsync directory", dir, e))
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_file_if_exists(path: &Path) -> Result<(), WalError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(WalError::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_round_trip_and_bit_flips_detected() {
        let mut out = Vec::new();
        encode_frame(&mut out, b"\x02hello").unwrap();
        let mut h = [0u8; FRAME_HEADER_LEN];
        h.copy_from_slice(&out[..FRAME_HEADER_LEN]);
        let fh = parse_frame_header(&h).unwrap();
        assert_eq!(fh.len, 6);
        assert_eq!(fh.crc, crc32c::crc32c(b"\x02hello"));
        for i in 0..FRAME_HEADER_LEN * 8 {
            let mut bad = h;
            bad[i / 8] ^= 1 << (i % 8);
            assert!(parse_frame_header(&bad).is_none(), "bit {i}");
        }
        // A zero-filled region is never a valid header.
        assert!(parse_frame_header(&[0u8; FRAME_HEADER_LEN]).is_none());
    }

    #[test]
    fn listing_parses_names() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "00000003",
            "00000001",
            "checkpoint.00000000",
            "checkpoint.00000002.tmp",
            "junk",
            "0001",
        ] {
            fs::write(dir.path().join(n), b"").unwrap();
        }
        let l = list_dir(dir.path()).unwrap();
        let idx: Vec<u64> = l.segments.iter().map(|s| s.0).collect();
        assert_eq!(idx, vec![1, 3]);
        assert_eq!(l.latest_checkpoint().unwrap().0, 0);
        assert_eq!(l.tmp_checkpoints.len(), 1);
    }
}
