//! Checkpoints: compact the WAL prefix up to a segment into a directory that
//! holds only what the head still needs, then delete that prefix.
//!
//! Owns: `checkpoint.NNNNNNNN/` directories. A checkpoint `N` replaces every
//! segment `<= N` (and any older checkpoint): it holds, in their original
//! order, the Series records of refs the caller still keeps, and the samples
//! and tombstones of those refs with time `>= mint`. Its single segment file
//! `00000000` uses the ordinary segment format.
//!
//! Crash safety: the checkpoint is written to `checkpoint.N.tmp`, fsynced
//! (file and directory), renamed into place and the WAL directory fsynced
//! *before* any segment is deleted. A crash at any point leaves either the old
//! state (tmp dir removed on next open) or the new checkpoint plus leftovers
//! that replay ignores and the next open deletes.
//!
//! Must not: run concurrently with a writer on the segments it covers (the
//! writer rotates past `N` first, see `Wal::checkpoint`).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::reader::{read_segment, ReadState, ReplayStats};
use super::record::{Record, RefSample, RefSeries, RefStSample, Tombstone};
use super::segment::{
    checkpoint_name, encode_frame, list_dir, remove_file_if_exists, segment_header, segment_name,
    sync_dir, TMP_SUFFIX,
};
use super::{Corruption, WalError};

/// What a checkpoint kept and dropped.
#[derive(Debug, Clone, Default)]
pub struct CheckpointStats {
    /// Last segment index the checkpoint covers.
    pub index: u64,
    pub path: PathBuf,
    /// Source files read (previous checkpoint's segments included).
    pub segments_read: u64,
    pub series_kept: u64,
    pub series_dropped: u64,
    pub samples_kept: u64,
    pub samples_dropped: u64,
    pub tombstones_kept: u64,
    pub tombstones_dropped: u64,
    /// Segments deleted after the checkpoint was published.
    pub segments_deleted: u64,
    /// Corrupt records met in the sources; their data is not in the
    /// checkpoint (it could not be read).
    pub corruptions: Vec<Corruption>,
}

/// Writes checkpoint `upto` of the WAL in `dir` and deletes the segments and
/// checkpoints it replaces. See the module docs for what is kept.
pub fn checkpoint(
    dir: &Path,
    upto: u64,
    keep: impl Fn(u64) -> bool,
    mint: i64,
) -> Result<CheckpointStats, WalError> {
    let listing = list_dir(dir)?;
    let fail = |reason: String| WalError::Checkpoint {
        dir: dir.to_path_buf(),
        upto,
        reason,
    };
    let prev = listing.latest_checkpoint().cloned();
    if let Some((cp, _)) = &prev {
        if *cp >= upto {
            return Err(fail(format!("checkpoint {cp} already covers it")));
        }
    }
    let mut sources: Vec<PathBuf> = Vec::new();
    if let Some((_, cp_path)) = &prev {
        sources.extend(list_dir(cp_path)?.segments.into_iter().map(|s| s.1));
    }
    let after = prev.as_ref().map(|p| p.0);
    sources.extend(
        listing
            .segments
            .iter()
            .filter(|(i, _)| *i <= upto && after.is_none_or(|cp| *i > cp))
            .map(|s| s.1.clone()),
    );

    let final_path = dir.join(checkpoint_name(upto));
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", checkpoint_name(upto)));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| WalError::io("remove stale checkpoint", &tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| WalError::io("create checkpoint", &tmp, e))?;
    let seg_path = tmp.join(segment_name(0));
    let file = File::create(&seg_path)
        .map_err(|e| WalError::io("create checkpoint segment", &seg_path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&segment_header())
        .map_err(|e| WalError::io("write checkpoint", &seg_path, e))?;

    let mut stats = CheckpointStats {
        index: upto,
        path: final_path.clone(),
        ..CheckpointStats::default()
    };
    let mut rs = ReadState::new();
    let mut read_stats = ReplayStats::default();
    let mut filtered = Filtered::default();
    let mut write_err: Option<std::io::Error> = None;
    for src in &sources {
        read_segment(src, false, &mut rs, &mut read_stats, &mut |rec| {
            if write_err.is_some() {
                return;
            }
            if let Some(payload) = filtered.filter(rec, &keep, mint, &mut stats) {
                if let Err(e) = write_record(&mut out, payload) {
                    write_err = Some(e);
                }
            }
        })?;
    }
    if let Some(e) = write_err {
        return Err(WalError::io("write checkpoint", &seg_path, e));
    }
    stats.segments_read = read_stats.segments;
    stats.corruptions = read_stats.corruptions;
    let file = out
        .into_inner()
        .map_err(|e| WalError::io("write checkpoint", &seg_path, e.into_error()))?;
    file.sync_all()
        .map_err(|e| WalError::io("fsync checkpoint", &seg_path, e))?;
    sync_dir(&tmp)?;
    fs::rename(&tmp, &final_path)
        .map_err(|e| WalError::io("publish checkpoint", &final_path, e))?;
    sync_dir(dir)?;

    // Published: everything below is cleanup that a later open redoes if we
    // crash here.
    for (i, path) in &listing.segments {
        if *i <= upto {
            remove_file_if_exists(path)?;
            stats.segments_deleted += 1;
        }
    }
    for (_, path) in &listing.checkpoints {
        fs::remove_dir_all(path).map_err(|e| WalError::io("remove old checkpoint", path, e))?;
    }
    sync_dir(dir)?;
    for c in &stats.corruptions {
        tracing::warn!(%c, "data lost to WAL corruption is not in the checkpoint");
    }
    tracing::info!(
        checkpoint = upto,
        series_kept = stats.series_kept,
        series_dropped = stats.series_dropped,
        samples_kept = stats.samples_kept,
        samples_dropped = stats.samples_dropped,
        segments_deleted = stats.segments_deleted,
        "WAL checkpoint written"
    );
    Ok(stats)
}

/// Scratch buffers for the kept subset of a record.
#[derive(Default)]
struct Filtered {
    series: Vec<RefSeries>,
    samples: Vec<RefSample>,
    st_samples: Vec<RefStSample>,
    tombstones: Vec<Tombstone>,
    payload: Vec<u8>,
}

impl Filtered {
    /// Encodes the kept part of `rec`; `None` when nothing is kept.
    fn filter(
        &mut self,
        rec: Record<'_>,
        keep: &impl Fn(u64) -> bool,
        mint: i64,
        st: &mut CheckpointStats,
    ) -> Option<&[u8]> {
        self.payload.clear();
        match rec {
            Record::Series(s) => {
                self.series.clear();
                self.series
                    .extend(s.iter().filter(|x| keep(x.series_ref)).cloned());
                st.series_kept += self.series.len() as u64;
                st.series_dropped += (s.len() - self.series.len()) as u64;
                if self.series.is_empty() {
                    return None;
                }
                Record::Series(&self.series).encode(&mut self.payload);
            }
            Record::Samples(s) => {
                self.samples.clear();
                self.samples
                    .extend(s.iter().filter(|x| x.t >= mint && keep(x.series_ref)));
                st.samples_kept += self.samples.len() as u64;
                st.samples_dropped += (s.len() - self.samples.len()) as u64;
                if self.samples.is_empty() {
                    return None;
                }
                Record::Samples(&self.samples).encode(&mut self.payload);
            }
            Record::StSamples(s) => {
                self.st_samples.clear();
                self.st_samples
                    .extend(s.iter().filter(|x| x.t >= mint && keep(x.series_ref)));
                st.samples_kept += self.st_samples.len() as u64;
                st.samples_dropped += (s.len() - self.st_samples.len()) as u64;
                if self.st_samples.is_empty() {
                    return None;
                }
                Record::StSamples(&self.st_samples).encode(&mut self.payload);
            }
            Record::Tombstones(s) => {
                self.tombstones.clear();
                self.tombstones
                    .extend(s.iter().filter(|x| x.maxt >= mint && keep(x.series_ref)));
                st.tombstones_kept += self.tombstones.len() as u64;
                st.tombstones_dropped += (s.len() - self.tombstones.len()) as u64;
                if self.tombstones.is_empty() {
                    return None;
                }
                Record::Tombstones(&self.tombstones).encode(&mut self.payload);
            }
        }
        Some(&self.payload)
    }
}

fn write_record(out: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 12);
    encode_frame(&mut frame, payload).map_err(|e| std::io::Error::other(e.to_string()))?;
    out.write_all(&frame)
}
