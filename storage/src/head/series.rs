//! One in-memory series: its closed chunks, the open chunk being appended to,
//! and its out-of-order buffer. Everything here runs under the series' own
//! mutex; nothing allocates per sample.

use std::mem;

use parking_lot::Mutex;

use super::chunks_disk::ChunkDiskMapper;
use crate::chunk::{Chunk, Encoding, XorAppender};
use crate::labels::Labels;
use crate::series::ChunkMeta;

/// A series in the head. `labels` and `sref` never change; all mutable state
/// is behind `state`.
pub(crate) struct MemSeries {
    pub(crate) labels: Labels,
    pub(crate) sref: u64,
    pub(crate) state: Mutex<SeriesState>,
}

impl MemSeries {
    pub(crate) fn new(labels: Labels, sref: u64) -> MemSeries {
        MemSeries {
            labels,
            sref,
            state: Mutex::new(SeriesState::default()),
        }
    }
}

/// The open in-order chunk.
pub(crate) struct OpenChunk {
    app: XorAppender,
    min_time: i64,
    /// Cut the chunk before appending a sample at or after this time (the
    /// end of the chunk-range window the chunk started in).
    next_at: i64,
}

/// Out-of-order samples: a small sorted buffer, cut into XOR chunks when it
/// fills. Chunks may overlap each other and the in-order chunks; readers
/// merge them.
#[derive(Default)]
pub(crate) struct OooState {
    chunks: Vec<ChunkMeta>,
    buf: Vec<(i64, f64)>,
}

#[derive(Default)]
pub(crate) struct SeriesState {
    /// Closed in-order chunks, oldest first, non-overlapping.
    chunks: Vec<ChunkMeta>,
    open: Option<OpenChunk>,
    /// Newest in-order sample (`i64::MIN` before the first).
    last_t: Option<i64>,
    last_v: u64,
    ooo: Option<Box<OooState>>,
    /// Deleted intervals `[a, b]` (head tombstones), each clamped to data the
    /// series held when it was deleted, so later appends are never hidden.
    pub(crate) deleted: Vec<(i64, i64)>,
    /// Set when the head dropped this series; appenders holding a pointer to
    /// it must look the labels up again.
    pub(crate) removed: bool,
}

/// Limits an append is checked against, read from the head once per sample.
#[derive(Clone, Copy)]
pub(crate) struct AppendCtx<'a> {
    pub(crate) samples_per_chunk: usize,
    pub(crate) ooo_samples_per_chunk: usize,
    pub(crate) chunk_range: i64,
    pub(crate) ooo_window: i64,
    /// Head-wide newest timestamp (`i64::MIN` when empty).
    pub(crate) head_max: i64,
    /// Nothing older is accepted (truncation point).
    pub(crate) min_valid: i64,
    /// Where completed in-order chunks go (`None`: they stay on the heap).
    pub(crate) disk: Option<&'a ChunkDiskMapper>,
    /// The series appended to (named in the chunk files' records).
    pub(crate) sref: u64,
}

/// Why a sample was refused (the head adds the series labels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Reject {
    TooOld { min_valid: i64 },
    OutOfOrder { last: i64 },
    Duplicate { existing: f64 },
}

/// Where an accepted sample went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    InOrder,
    OutOfOrder,
    /// Same timestamp and value as an existing sample: nothing stored.
    Duplicate,
}

/// End of the chunk-range window holding `t` (Prometheus's
/// `rangeForTimestamp`, with floor division for negative times).
#[inline]
fn range_end(t: i64, width: i64) -> i64 {
    if width <= 0 {
        return i64::MAX;
    }
    t.div_euclid(width).saturating_add(1).saturating_mul(width)
}

impl SeriesState {
    /// The checks a series' first sample must pass.
    pub(crate) fn check_first(t: i64, cx: &AppendCtx) -> Result<(), Reject> {
        if t < cx.min_valid {
            return Err(Reject::TooOld {
                min_valid: cx.min_valid,
            });
        }
        if cx.ooo_window == 0 {
            let bound = cx.head_max.saturating_sub(cx.chunk_range / 2);
            if t < bound {
                return Err(Reject::TooOld { min_valid: bound });
            }
        }
        Ok(())
    }

    /// Appends one sample. See the head's module docs for the rules.
    #[inline]
    pub(crate) fn append(&mut self, t: i64, v: f64, cx: &AppendCtx) -> Result<Appended, Reject> {
        if t < cx.min_valid {
            return Err(Reject::TooOld {
                min_valid: cx.min_valid,
            });
        }
        match self.last_t {
            Some(last) if t == last => {
                if v.to_bits() == self.last_v {
                    return Ok(Appended::Duplicate);
                }
                Err(Reject::Duplicate {
                    existing: f64::from_bits(self.last_v),
                })
            }
            Some(last) if t < last => {
                if cx.ooo_window > 0 && t >= cx.head_max.saturating_sub(cx.ooo_window) {
                    return self.append_ooo(t, v, cx);
                }
                Err(Reject::OutOfOrder { last })
            }
            _ => {
                // In order for this series. Without an out-of-order window,
                // Prometheus also refuses samples more than half a chunk range
                // behind the head ("out of bounds").
                if cx.ooo_window == 0 {
                    let bound = cx.head_max.saturating_sub(cx.chunk_range / 2);
                    if t < bound {
                        return Err(Reject::TooOld { min_valid: bound });
                    }
                }
                self.append_in_order(t, v, cx);
                Ok(Appended::InOrder)
            }
        }
    }

    #[inline]
    fn append_in_order(&mut self, t: i64, v: f64, cx: &AppendCtx) {
        let cut = match &self.open {
            Some(o) => o.app.num_samples() >= cx.samples_per_chunk || t >= o.next_at,
            None => true,
        };
        if cut {
            self.cut(t, cx);
        }
        if let Some(o) = &mut self.open {
            o.app.append(t, v);
        }
        self.last_t = Some(t);
        self.last_v = v.to_bits();
    }

    /// Closes the open chunk (if any) — into the chunk files when the head
    /// has them, else into an exact-size heap copy — and opens a new one
    /// starting at `t` with a small buffer: keeping the old one would carry
    /// a full chunk's capacity over to every series' next chunk.
    #[cold]
    fn cut(&mut self, t: i64, cx: &AppendCtx<'_>) {
        if let Some(o) = self.open.take().filter(|o| o.app.num_samples() > 0) {
            let max_time = self.last_t.unwrap_or(o.min_time);
            let chunk = match cx.disk {
                Some(d) => d
                    .write(cx.sref, o.min_time, max_time, Encoding::Xor, o.app.bytes())
                    .unwrap_or_else(|error| {
                        if d.note_write_error() {
                            tracing::warn!(%error, errors = d.write_errors(), "keeping a head chunk in memory: writing it to chunks_head failed");
                        }
                        o.app.to_chunk()
                    }),
                None => o.app.to_chunk(),
            };
            if self.chunks.is_empty() {
                self.chunks.reserve_exact(2);
            }
            self.chunks.push(ChunkMeta {
                min_time: o.min_time,
                max_time,
                chunk,
            });
        }
        self.open = Some(OpenChunk {
            app: XorAppender::new(),
            min_time: t,
            next_at: range_end(t, cx.chunk_range),
        });
    }

    #[cold]
    fn append_ooo(&mut self, t: i64, v: f64, cx: &AppendCtx) -> Result<Appended, Reject> {
        let ooo = self.ooo.get_or_insert_with(Default::default);
        match ooo.buf.binary_search_by_key(&t, |s| s.0) {
            Ok(i) => {
                let existing = ooo.buf[i].1;
                if existing.to_bits() == v.to_bits() {
                    return Ok(Appended::Duplicate);
                }
                return Err(Reject::Duplicate { existing });
            }
            Err(i) => {
                if ooo.buf.capacity() == 0 {
                    ooo.buf.reserve_exact(cx.ooo_samples_per_chunk.max(1));
                }
                ooo.buf.insert(i, (t, v));
            }
        }
        if ooo.buf.len() >= cx.ooo_samples_per_chunk.max(1) {
            let c = encode_sorted(&ooo.buf);
            ooo.chunks.extend(c);
            ooo.buf.clear();
        }
        Ok(Appended::OutOfOrder)
    }

    pub(crate) fn last_sample(&self) -> Option<(i64, f64)> {
        self.last_t.map(|t| (t, f64::from_bits(self.last_v)))
    }

    /// Chunks overlapping `[mint, maxt]`: closed chunks shared, the open
    /// chunk and out-of-order buffer copied, so the caller decodes without
    /// this series' lock. In-order chunks come first, so they win ties.
    pub(crate) fn snapshot(&self, mint: i64, maxt: i64, out: &mut Vec<ChunkMeta>) {
        for c in &self.chunks {
            if c.overlaps(mint, maxt) {
                out.push(c.clone());
            }
        }
        if let (Some(o), Some(last)) = (&self.open, self.last_t) {
            if o.app.num_samples() > 0 && o.min_time <= maxt && mint <= last {
                out.push(ChunkMeta {
                    min_time: o.min_time,
                    max_time: last,
                    chunk: Chunk::from_parts(Encoding::Xor, o.app.bytes().into()),
                });
            }
        }
        if let Some(ooo) = &self.ooo {
            for c in &ooo.chunks {
                if c.overlaps(mint, maxt) {
                    out.push(c.clone());
                }
            }
            if let (Some(first), Some(last)) = (ooo.buf.first(), ooo.buf.last()) {
                if first.0 <= maxt && mint <= last.0 {
                    out.extend(encode_sorted(&ooo.buf));
                }
            }
        }
    }

    /// Oldest and newest timestamps held, if any.
    pub(crate) fn time_range(&self) -> Option<(i64, i64)> {
        let mut lo = i64::MAX;
        let mut hi = i64::MIN;
        let mut any = false;
        let mut see = |a: i64, b: i64| {
            lo = lo.min(a);
            hi = hi.max(b);
            any = true;
        };
        for c in &self.chunks {
            see(c.min_time, c.max_time);
        }
        if let (Some(o), Some(last)) = (&self.open, self.last_t) {
            if o.app.num_samples() > 0 {
                see(o.min_time, last);
            }
        }
        if let Some(ooo) = &self.ooo {
            for c in &ooo.chunks {
                see(c.min_time, c.max_time);
            }
            if let (Some(f), Some(l)) = (ooo.buf.first(), ooo.buf.last()) {
                see(f.0, l.0);
            }
        }
        any.then_some((lo, hi))
    }

    /// Drops chunks and out-of-order samples entirely before `t`. Returns
    /// whether the series holds no data afterwards.
    pub(crate) fn truncate_before(&mut self, t: i64) -> bool {
        self.chunks.retain(|c| c.max_time >= t);
        if self.chunks.capacity() > self.chunks.len() * 2 + 2 {
            self.chunks.shrink_to_fit();
        }
        if let (Some(_), Some(last)) = (&self.open, self.last_t) {
            if last < t {
                self.open = None;
            }
        }
        if let Some(ooo) = &mut self.ooo {
            ooo.chunks.retain(|c| c.max_time >= t);
            ooo.buf.retain(|s| s.0 >= t);
            if ooo.chunks.is_empty() && ooo.buf.is_empty() {
                self.ooo = None;
            }
        }
        // Kept chunks may still hold samples before `t`, so an interval is
        // forgotten only once no data it could hide is left.
        let range = self.time_range();
        match range {
            Some((lo, _)) => self.deleted.retain(|&(_, b)| b >= lo),
            None => self.deleted.clear(),
        }
        range.is_none()
    }

    /// Heap bytes held by this series' samples (chunk data, buffers and the
    /// chunk list), for memory accounting. Chunks mapped from the chunk
    /// files count only their entry in the list.
    pub(crate) fn heap_size(&self) -> usize {
        let chunk_overhead = 2 * mem::size_of::<usize>(); // Arc counts
        let mut n = self.chunks.capacity() * mem::size_of::<ChunkMeta>();
        n += self
            .chunks
            .iter()
            .filter(|c| !c.chunk.chunk_bytes().is_mapped())
            .map(|c| c.chunk.heap_size() + chunk_overhead)
            .sum::<usize>();
        if let Some(o) = &self.open {
            n += o.app.heap_size();
        }
        if let Some(ooo) = &self.ooo {
            n += mem::size_of::<OooState>();
            n += ooo.chunks.capacity() * mem::size_of::<ChunkMeta>();
            n += ooo
                .chunks
                .iter()
                .map(|c| c.chunk.byte_size() + chunk_overhead)
                .sum::<usize>();
            n += ooo.buf.capacity() * mem::size_of::<(i64, f64)>();
        }
        n
    }

    /// Bytes of this series' chunks held in the chunk files' maps.
    pub(crate) fn mapped_size(&self) -> usize {
        self.chunks
            .iter()
            .filter(|c| c.chunk.chunk_bytes().is_mapped())
            .map(|c| c.chunk.byte_size())
            .sum()
    }

    pub(crate) fn num_chunks(&self) -> usize {
        self.chunks.len()
            + usize::from(self.open.as_ref().is_some_and(|o| o.app.num_samples() > 0))
            + self
                .ooo
                .as_ref()
                .map_or(0, |o| o.chunks.len() + usize::from(!o.buf.is_empty()))
    }
}

/// One chunk holding sorted, de-duplicated samples (at most a chunk's worth).
fn encode_sorted(samples: &[(i64, f64)]) -> Option<ChunkMeta> {
    let (first, last) = (samples.first()?, samples.last()?);
    let mut app = XorAppender::with_capacity(16 + samples.len() * 2);
    for &(t, v) in samples {
        app.append(t, v);
    }
    Some(ChunkMeta {
        min_time: first.0,
        max_time: last.0,
        chunk: app.to_chunk(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_floor() {
        assert_eq!(range_end(0, 100), 100);
        assert_eq!(range_end(99, 100), 100);
        assert_eq!(range_end(100, 100), 200);
        assert_eq!(range_end(-1, 100), 0);
        assert_eq!(range_end(i64::MAX - 5, 100), i64::MAX);
    }
}
