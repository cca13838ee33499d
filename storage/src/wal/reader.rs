//! Replay: reads the latest checkpoint and then every later segment in index
//! order, handing each decoded record to a callback.
//!
//! Owns: the distinction between a torn tail and corruption. A torn tail is an
//! incomplete frame at the end of the *last* segment (header or payload cut
//! short by a crash, or a zero-filled region a filesystem exposed after a
//! power loss): it was never acknowledged under `FsyncPolicy::Always`, so it
//! is truncated and replay succeeds. Anything else that fails a check is a
//! [`Corruption`] naming file and offset; the rest of that segment is skipped
//! (its framing can no longer be trusted) and later segments are replayed. A
//! payload that passes its checksum but does not decode skips only that
//! record, since the framing around it is intact.
//!
//! Must not: allocate per record or per sample in steady state (the payload
//! buffer and the [`Decoder`] are reused), or write anything other than the
//! torn-tail truncation.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::record::{Decoder, Record};
use super::segment::{
    check_header, list_dir, parse_frame_header, segment_path, sync_dir, FRAME_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use super::{Corruption, WalError};

/// What a replay read.
#[derive(Debug, Default, Clone)]
pub struct ReplayStats {
    /// Index of the checkpoint replayed first, if any.
    pub checkpoint: Option<u64>,
    /// Segment files read (checkpoint segments included).
    pub segments: u64,
    pub records: u64,
    pub series: u64,
    pub samples: u64,
    pub tombstones: u64,
    /// Frame and header bytes read.
    pub bytes: u64,
    pub duration: Duration,
    /// Corrupt records (or missing segments) skipped, in replay order.
    pub corruptions: Vec<Corruption>,
    /// A torn tail that was truncated: file, offset it was cut to, bytes
    /// removed.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Index of the last segment in the directory, if any.
    pub last_segment: Option<u64>,
}

impl ReplayStats {
    /// Samples per second over the whole replay.
    pub fn samples_per_sec(&self) -> f64 {
        let s = self.duration.as_secs_f64();
        if s > 0.0 {
            self.samples as f64 / s
        } else {
            0.0
        }
    }
}

/// Replays the WAL in `dir`: the latest checkpoint, then every segment after
/// it. A torn tail of the last segment is truncated on disk (so the caller
/// may then open a writer); corruption is collected in
/// [`ReplayStats::corruptions`]. Only I/O errors that prevent reading (or
/// repairing) fail the replay.
pub fn replay(dir: &Path, mut handler: impl FnMut(Record<'_>)) -> Result<ReplayStats, WalError> {
    let start = Instant::now();
    let listing = list_dir(dir)?;
    let mut stats = ReplayStats {
        last_segment: listing.segments.last().map(|s| s.0),
        ..ReplayStats::default()
    };
    let mut rs = ReadState::new();

    let mut after = None;
    if let Some((cp, cp_path)) = listing.latest_checkpoint() {
        stats.checkpoint = Some(*cp);
        after = Some(*cp);
        let cp_listing = list_dir(cp_path)?;
        if cp_listing.segments.is_empty() {
            // Published checkpoints always hold a segment: its loss is loss
            // of data, not an empty history.
            let c = Corruption {
                path: cp_path.clone(),
                offset: 0,
                reason: "checkpoint directory holds no segment".to_string(),
                skipped_bytes: 0,
            };
            tracing::warn!(%c, "WAL checkpoint is empty");
            stats.corruptions.push(c);
        }
        for (_, path) in &cp_listing.segments {
            // Checkpoints are fsynced before they are renamed into place, so
            // an incomplete frame in one is corruption, never a torn tail.
            read_segment(path, false, &mut rs, &mut stats, &mut handler)?;
        }
        tracing::info!(
            checkpoint = cp,
            records = stats.records,
            samples = stats.samples,
            "replayed WAL checkpoint"
        );
    }

    let segs: Vec<&(u64, PathBuf)> = listing
        .segments
        .iter()
        .filter(|(i, _)| after.is_none_or(|cp| *i > cp))
        .collect();
    let total = segs.len();
    let mut expected = after.map(|cp| cp + 1).or(segs.first().map(|s| s.0));
    for (n, (index, path)) in segs.iter().enumerate() {
        if let Some(exp) = expected {
            for missing in exp..*index {
                let c = Corruption {
                    path: segment_path(dir, missing),
                    offset: 0,
                    reason: "segment missing from the sequence".to_string(),
                    skipped_bytes: 0,
                };
                tracing::warn!(%c, "WAL segment missing");
                stats.corruptions.push(c);
            }
        }
        expected = Some(index + 1);
        let seg_start = Instant::now();
        let before = (stats.records, stats.samples);
        read_segment(path, n + 1 == total, &mut rs, &mut stats, &mut handler)?;
        tracing::info!(
            segment = index,
            progress = format_args!("{}/{}", n + 1, total),
            records = stats.records - before.0,
            samples = stats.samples - before.1,
            elapsed_ms = seg_start.elapsed().as_millis() as u64,
            "replayed WAL segment"
        );
    }
    stats.duration = start.elapsed();
    tracing::info!(
        dir = %dir.display(),
        segments = stats.segments,
        records = stats.records,
        series = stats.series,
        samples = stats.samples,
        corruptions = stats.corruptions.len(),
        samples_per_sec = stats.samples_per_sec() as u64,
        elapsed_ms = stats.duration.as_millis() as u64,
        "WAL replay complete"
    );
    Ok(stats)
}

/// Buffers reused across segments.
pub(super) struct ReadState {
    payload: Vec<u8>,
    decoder: Decoder,
}

impl ReadState {
    pub(super) fn new() -> ReadState {
        ReadState {
            payload: Vec::new(),
            decoder: Decoder::new(),
        }
    }
}

/// How reading one segment ended when it did not reach a clean end.
enum Stop {
    Torn { offset: u64 },
    Corrupt { offset: u64, reason: String },
}

/// Reads one segment file, calling `handler` for each good record. When
/// `is_last`, an incomplete tail is truncated; otherwise it is corruption.
pub(super) fn read_segment(
    path: &Path,
    is_last: bool,
    rs: &mut ReadState,
    stats: &mut ReplayStats,
    handler: &mut impl FnMut(Record<'_>),
) -> Result<(), WalError> {
    let file = File::open(path).map_err(|e| WalError::io("open segment", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| WalError::io("stat segment", path, e))?
        .len();
    stats.segments += 1;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let read_err = |e| WalError::io("read segment", path, e);

    let stop = 'seg: {
        if file_len < SEGMENT_HEADER_LEN {
            break 'seg Some(if is_last {
                Stop::Torn { offset: 0 }
            } else {
                Stop::Corrupt {
                    offset: 0,
                    reason: format!("segment header truncated to {file_len} bytes"),
                }
            });
        }
        let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
        r.read_exact(&mut h).map_err(read_err)?;
        if let Err(reason) = check_header(&h) {
            break 'seg Some(if is_last && h.iter().all(|&b| b == 0) {
                Stop::Torn { offset: 0 }
            } else {
                Stop::Corrupt { offset: 0, reason }
            });
        }
        let mut off = SEGMENT_HEADER_LEN;
        while off < file_len {
            let remaining = file_len - off;
            if remaining < FRAME_HEADER_LEN as u64 {
                break 'seg Some(torn_or_corrupt(is_last, off, "frame header cut short"));
            }
            let mut fh = [0u8; FRAME_HEADER_LEN];
            r.read_exact(&mut fh).map_err(read_err)?;
            let Some(frame) = parse_frame_header(&fh) else {
                // A zero-filled tail is what a filesystem shows for blocks
                // allocated but never written before a power loss.
                if is_last
                    && fh.iter().all(|&b| b == 0)
                    && rest_is_zero(&mut r).map_err(read_err)?
                {
                    break 'seg Some(Stop::Torn { offset: off });
                }
                break 'seg Some(Stop::Corrupt {
                    offset: off,
                    reason: "frame header checksum mismatch".to_string(),
                });
            };
            let len = u64::from(frame.len);
            if len > remaining - FRAME_HEADER_LEN as u64 {
                break 'seg Some(torn_or_corrupt(
                    is_last,
                    off,
                    "record runs past the end of the segment",
                ));
            }
            rs.payload.resize(frame.len as usize, 0);
            r.read_exact(&mut rs.payload).map_err(read_err)?;
            if crc32c::crc32c(&rs.payload) != frame.crc {
                break 'seg Some(Stop::Corrupt {
                    offset: off,
                    reason: "record checksum mismatch".to_string(),
                });
            }
            stats.bytes += FRAME_HEADER_LEN as u64 + len;
            match rs.decoder.decode(&rs.payload) {
                Ok(rec) => {
                    stats.records += 1;
                    match rec {
                        Record::Series(s) => stats.series += s.len() as u64,
                        Record::Samples(s) => stats.samples += s.len() as u64,
                        Record::StSamples(s) => stats.samples += s.len() as u64,
                        Record::Tombstones(s) => stats.tombstones += s.len() as u64,
                    }
                    handler(rec);
                }
                Err(e) => {
                    let c = Corruption {
                        path: path.to_path_buf(),
                        offset: off,
                        reason: format!("undecodable record: {e}"),
                        skipped_bytes: FRAME_HEADER_LEN as u64 + len,
                    };
                    tracing::warn!(%c, "skipping undecodable WAL record");
                    stats.corruptions.push(c);
                }
            }
            off += FRAME_HEADER_LEN as u64 + len;
        }
        None
    };

    match stop {
        None => {}
        Some(Stop::Corrupt { offset, reason }) => {
            let c = Corruption {
                path: path.to_path_buf(),
                offset,
                reason,
                skipped_bytes: file_len - offset,
            };
            tracing::warn!(%c, "skipping rest of corrupt WAL segment");
            stats.corruptions.push(c);
        }
        Some(Stop::Torn { offset }) => {
            truncate_torn(path, offset)?;
            tracing::warn!(
                path = %path.display(),
                offset,
                removed_bytes = file_len - offset,
                "truncated torn WAL tail"
            );
            stats.torn_tail = Some((path.to_path_buf(), offset, file_len - offset));
        }
    }
    Ok(())
}

fn torn_or_corrupt(is_last: bool, offset: u64, reason: &str) -> Stop {
    if is_last {
        Stop::Torn { offset }
    } else {
        Stop::Corrupt {
            offset,
            reason: reason.to_string(),
        }
    }
}

fn rest_is_zero(r: &mut impl Read) -> std::io::Result<bool> {
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

/// Cuts a torn segment back to its last complete record. A segment whose
/// header itself is torn holds nothing, so it is removed rather than left as
/// an empty file that a later replay would see as a corrupt middle segment.
fn truncate_torn(path: &Path, offset: u64) -> Result<(), WalError> {
    if offset < SEGMENT_HEADER_LEN {
        fs::remove_file(path).map_err(|e| WalError::io("remove torn segment", path, e))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        return Ok(());
    }
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("open torn segment", path, e))?;
    f.set_len(offset)
        .map_err(|e| WalError::io("truncate torn segment", path, e))?;
    f.sync_all()
        .map_err(|e| WalError::io("fsync truncated segment", path, e))
}
