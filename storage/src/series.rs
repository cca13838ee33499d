//! A series as read from storage: its labels, its chunks and the intervals
//! deleted from it, plus the iterator that turns chunks from several sources
//! (in-order head, out-of-order head, overlapping blocks) into one sorted,
//! de-duplicated sample stream.
//!
//! Start timestamps (ST, see `head/st.rs`) travel beside the chunks, not in
//! them: [`Series::start_timestamps`] holds the non-zero ones of the
//! series' samples as sorted `(t, st)` pairs, `None` for the vast majority of
//! series that have none, and [`SeriesIterator`] reports them through
//! [`SampleIterator::at_st`]. Blocks keep no start timestamps, so a series
//! read from a block has `None`.

use std::sync::Arc;

use crate::chunk::{Chunk, ChunkError, SampleIterator, ValueType, XorAppender, XorIterator};
use crate::labels::Labels;

/// One chunk and the time range it covers (inclusive).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkMeta {
    pub min_time: i64,
    pub max_time: i64,
    pub chunk: Chunk,
}

impl ChunkMeta {
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.min_time <= maxt && mint <= self.max_time
    }
}

/// A series with its chunks. `chunks` may overlap in time and be in any
/// order; `deleted` holds closed intervals `[a, b]` (tombstones) whose samples
/// are skipped when iterating.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub labels: Labels,
    pub chunks: Vec<ChunkMeta>,
    pub deleted: Vec<(i64, i64)>,
    /// Non-zero start timestamps of the samples, as `(t, st)` sorted by `t`
    /// with unique `t`; a sample without a pair here has start timestamp 0
    /// (unknown). `None` when no sample has one.
    pub start_timestamps: Option<Arc<[(i64, i64)]>>,
}

impl Series {
    pub fn new(labels: Labels, chunks: Vec<ChunkMeta>) -> Series {
        Series {
            labels,
            chunks,
            deleted: Vec::new(),
            start_timestamps: None,
        }
    }

    /// Start timestamp of the sample at `t` (0 when unknown).
    pub fn start_timestamp_at(&self, t: i64) -> i64 {
        self.start_timestamps.as_deref().map_or(0, |p| {
            p.binary_search_by_key(&t, |x| x.0).map_or(0, |i| p[i].1)
        })
    }

    /// All samples in time order, duplicates by timestamp removed (the chunk
    /// earliest in `chunks` wins), deleted intervals skipped.
    pub fn iter(&self) -> SeriesIterator {
        SeriesIterator::new(&self.chunks, &self.deleted, i64::MIN, i64::MAX)
            .with_start_timestamps(self.start_timestamps.clone())
    }

    /// As [`Series::iter`], restricted to samples in `[mint, maxt]`.
    pub fn iter_range(&self, mint: i64, maxt: i64) -> SeriesIterator {
        SeriesIterator::new(&self.chunks, &self.deleted, mint, maxt)
            .with_start_timestamps(self.start_timestamps.clone())
    }

    /// Smallest `min_time` over the chunks (`i64::MAX` when there are none).
    pub fn min_time(&self) -> i64 {
        self.chunks
            .iter()
            .map(|c| c.min_time)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Largest `max_time` over the chunks (`i64::MIN` when there are none).
    pub fn max_time(&self) -> i64 {
        self.chunks
            .iter()
            .map(|c| c.max_time)
            .max()
            .unwrap_or(i64::MIN)
    }

    /// Whether the chunks, sorted by `min_time`, overlap each other.
    pub fn has_overlapping_chunks(&self) -> bool {
        let mut r: Vec<(i64, i64)> = self
            .chunks
            .iter()
            .map(|c| (c.min_time, c.max_time))
            .collect();
        r.sort_unstable();
        r.windows(2).any(|w| w[1].0 <= w[0].1)
    }

    /// Merges two reads of the same series (same labels) from different
    /// sources. Each side's tombstones apply only to its own chunks, so they
    /// are applied (affected chunks re-encoded) before the chunk lists are
    /// joined; the result has no `deleted` intervals and its chunks sorted by
    /// `min_time`. Overlaps are resolved when iterating.
    pub fn merge(a: Series, b: Series) -> Series {
        debug_assert_eq!(a.labels, b.labels);
        let mut a = a;
        let mut b = b;
        a.apply_deletes();
        b.apply_deletes();
        let mut chunks = a.chunks;
        chunks.append(&mut b.chunks);
        chunks.sort_by_key(|c| (c.min_time, c.max_time));
        let start_timestamps = match (a.start_timestamps, b.start_timestamps) {
            (Some(x), Some(y)) => {
                // `a` wins a tie, as its chunks do when iterating.
                let mut v: Vec<(i64, i64)> = x.iter().chain(y.iter()).copied().collect();
                v.sort_by_key(|p| p.0);
                v.dedup_by_key(|p| p.0);
                Some(v.into())
            }
            (x, y) => x.or(y),
        };
        Series {
            labels: a.labels,
            chunks,
            deleted: Vec::new(),
            start_timestamps,
        }
    }

    /// Rewrites the chunks so that `deleted` is empty: chunks untouched by a
    /// tombstone are kept as they are, the others re-encoded without the
    /// deleted samples (or dropped when nothing is left).
    pub fn apply_deletes(&mut self) {
        if self.deleted.is_empty() {
            return;
        }
        let deleted = normalize_intervals(&self.deleted);
        let mut out = Vec::with_capacity(self.chunks.len());
        for c in self.chunks.drain(..) {
            let touched = deleted
                .iter()
                .any(|&(a, b)| a <= c.max_time && c.min_time <= b);
            if !touched {
                out.push(c);
                continue;
            }
            let fully = deleted
                .iter()
                .any(|&(a, b)| a <= c.min_time && c.max_time <= b);
            if fully {
                continue;
            }
            let mut it =
                SeriesIterator::new(std::slice::from_ref(&c), &deleted, i64::MIN, i64::MAX);
            out.extend(encode_chunks(&mut it, usize::MAX));
        }
        self.chunks = out;
        self.deleted.clear();
    }

    /// The series' samples as non-overlapping chunks of at most
    /// `max_samples` samples each (merging, de-duplicating and applying
    /// tombstones). Chunks are reused as they are when nothing overlaps and
    /// nothing is deleted. Used by compaction and block writing.
    pub fn merged_chunks(&self, max_samples: usize) -> Vec<ChunkMeta> {
        if self.deleted.is_empty() && !self.has_overlapping_chunks() {
            let mut c = self.chunks.clone();
            c.sort_by_key(|c| c.min_time);
            return c;
        }
        encode_chunks(&mut self.iter(), max_samples)
    }

    /// Heap bytes of the encoded chunks (plus labels).
    pub fn byte_size(&self) -> usize {
        self.labels.byte_size()
            + self
                .chunks
                .iter()
                .map(|c| c.chunk.byte_size())
                .sum::<usize>()
    }
}

/// Encodes an iterator's samples into XOR chunks of at most `max_samples`
/// (capped by the chunk header's limit). A decoding error ends the output early.
pub fn encode_chunks(it: &mut dyn SampleIterator, max_samples: usize) -> Vec<ChunkMeta> {
    let max_samples = max_samples.clamp(1, crate::chunk::MAX_SAMPLES_PER_CHUNK);
    let mut out = Vec::new();
    let mut app = XorAppender::new();
    let mut mint = 0;
    let mut maxt = 0;
    while it.next() == ValueType::Float {
        let (t, v) = it.at();
        if app.num_samples() == 0 {
            mint = t;
        }
        app.append(t, v);
        maxt = t;
        if app.num_samples() >= max_samples {
            out.push(ChunkMeta {
                min_time: mint,
                max_time: maxt,
                chunk: app.to_chunk(),
            });
            app = XorAppender::new();
        }
    }
    if app.num_samples() > 0 {
        out.push(ChunkMeta {
            min_time: mint,
            max_time: maxt,
            chunk: app.to_chunk(),
        });
    }
    out
}

/// Sorts and coalesces closed intervals.
fn normalize_intervals(iv: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut v: Vec<(i64, i64)> = iv.iter().copied().filter(|(a, b)| a <= b).collect();
    v.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

struct Cursor {
    it: XorIterator,
    t: i64,
    v: f64,
    /// Position in the caller's chunk list: lower wins on equal timestamps.
    order: usize,
}

/// Iterates a series' chunks as one sorted sample stream. Holds its own
/// references to the chunk bytes.
///
/// Non-overlapping chunks are read one after the other; overlapping ones are
/// merged with a small k-way merge (the active set is usually 1–2 chunks).
pub struct SeriesIterator {
    /// Chunks sorted by `(min_time, order)`, not yet opened.
    pending: Vec<(ChunkMeta, usize)>,
    next_pending: usize,
    active: Vec<Cursor>,
    /// Sorted, coalesced tombstones plus the range bounds.
    deleted: Vec<(i64, i64)>,
    del_idx: usize,
    /// Every sample returned from now on has `t >= min_next`.
    min_next: i64,
    maxt: i64,
    cur: (i64, f64),
    has_cur: bool,
    done: bool,
    err: Option<ChunkError>,
    /// The series' non-zero start timestamps and the index of the first
    /// pair not before the current sample.
    st: Option<Arc<[(i64, i64)]>>,
    st_idx: usize,
    cur_st: i64,
}

impl SeriesIterator {
    /// Reports these start timestamps (sorted `(t, st)` pairs, see
    /// [`Series::start_timestamps`]) through [`SampleIterator::at_st`].
    pub fn with_start_timestamps(mut self, st: Option<Arc<[(i64, i64)]>>) -> SeriesIterator {
        self.st = st;
        self
    }

    /// Moves the start-timestamp cursor to the current sample; samples only
    /// move forward, so the cursor does too.
    fn sync_st(&mut self) {
        let Some(p) = &self.st else {
            return;
        };
        let t = self.cur.0;
        while self.st_idx < p.len() && p[self.st_idx].0 < t {
            self.st_idx += 1;
        }
        self.cur_st = match p.get(self.st_idx) {
            Some(&(pt, st)) if pt == t => st,
            _ => 0,
        };
    }

    /// Iterates `chunks` minus `deleted`, restricted to `[mint, maxt]`.
    pub fn new(
        chunks: &[ChunkMeta],
        deleted: &[(i64, i64)],
        mint: i64,
        maxt: i64,
    ) -> SeriesIterator {
        let mut pending: Vec<(ChunkMeta, usize)> = chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.overlaps(mint, maxt))
            .map(|(i, c)| (c.clone(), i))
            .collect();
        pending.sort_by_key(|(c, i)| (c.min_time, *i));
        SeriesIterator {
            pending,
            next_pending: 0,
            active: Vec::with_capacity(2),
            deleted: normalize_intervals(deleted),
            del_idx: 0,
            min_next: mint,
            maxt,
            cur: (i64::MIN, 0.0),
            has_cur: false,
            done: false,
            err: None,
            st: None,
            st_idx: 0,
            cur_st: 0,
        }
    }

    fn open(&mut self, idx: usize) {
        let (meta, order) = &self.pending[idx];
        let mut it = meta.chunk.iter();
        let order = *order;
        if it.seek(self.min_next) == ValueType::Float {
            let (t, v) = it.at();
            self.active.push(Cursor { it, t, v, order });
        } else if let Some(e) = it.err() {
            self.err = Some(e.clone());
        }
    }

    /// Advances cursor `i` to its first sample `>= min_next`; removes it when
    /// exhausted.
    fn advance(&mut self, i: usize) -> bool {
        let c = &mut self.active[i];
        let vt = if c.t >= self.min_next {
            ValueType::Float
        } else {
            c.it.seek(self.min_next)
        };
        if vt == ValueType::Float {
            let (t, v) = c.it.at();
            c.t = t;
            c.v = v;
            true
        } else {
            if let Some(e) = c.it.err() {
                self.err = Some(e.clone());
            }
            self.active.swap_remove(i);
            false
        }
    }

    fn finish(&mut self) -> ValueType {
        self.done = true;
        self.active.clear();
        ValueType::None
    }
}

impl SampleIterator for SeriesIterator {
    fn next(&mut self) -> ValueType {
        if self.done || self.err.is_some() {
            return ValueType::None;
        }
        loop {
            // Bring every cursor to >= min_next.
            let mut i = 0;
            while i < self.active.len() {
                if self.advance(i) {
                    i += 1;
                }
            }
            if self.err.is_some() {
                return self.finish();
            }
            // Open pending chunks that may hold the next sample.
            while let Some((meta, _)) = self.pending.get(self.next_pending) {
                let min_active = self.active.iter().map(|c| c.t).min();
                if let Some(m) = min_active {
                    if meta.min_time > m {
                        break;
                    }
                }
                let idx = self.next_pending;
                self.next_pending += 1;
                self.open(idx);
                if self.err.is_some() {
                    return self.finish();
                }
            }
            // Pick the smallest timestamp; lowest order wins a tie.
            let Some(best) = self
                .active
                .iter()
                .min_by_key(|c| (c.t, c.order))
                .map(|c| (c.t, c.v))
            else {
                return self.finish();
            };
            let (t, v) = best;
            if t > self.maxt {
                return self.finish();
            }
            // Tombstones: skip to the end of the interval holding t.
            while self.del_idx < self.deleted.len() && self.deleted[self.del_idx].1 < t {
                self.del_idx += 1;
            }
            if let Some(&(a, b)) = self.deleted.get(self.del_idx) {
                if a <= t {
                    match b.checked_add(1) {
                        Some(n) => {
                            self.min_next = n;
                            continue;
                        }
                        None => return self.finish(),
                    }
                }
            }
            self.cur = (t, v);
            self.has_cur = true;
            self.sync_st();
            match t.checked_add(1) {
                Some(n) => self.min_next = n,
                None => {
                    // Last representable timestamp: nothing can follow.
                    self.active.clear();
                    self.next_pending = self.pending.len();
                    self.min_next = i64::MAX;
                }
            }
            return ValueType::Float;
        }
    }

    fn seek(&mut self, t: i64) -> ValueType {
        if self.done || self.err.is_some() {
            return ValueType::None;
        }
        if self.has_cur && self.cur.0 >= t {
            return ValueType::Float;
        }
        if t > self.min_next {
            self.min_next = t;
        }
        self.next()
    }

    fn at(&self) -> (i64, f64) {
        self.cur
    }

    fn at_t(&self) -> i64 {
        self.cur.0
    }

    fn at_st(&self) -> i64 {
        self.cur_st
    }

    fn err(&self) -> Option<&ChunkError> {
        self.err.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{collect_samples, STALE_NAN};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn chunk(samples: &[(i64, f64)]) -> ChunkMeta {
        let mut a = XorAppender::new();
        for &(t, v) in samples {
            a.append(t, v);
        }
        ChunkMeta {
            min_time: samples.first().map_or(0, |s| s.0),
            max_time: samples.last().map_or(0, |s| s.0),
            chunk: a.to_chunk(),
        }
    }

    fn lbls() -> Labels {
        Labels::from_pairs([("__name__", "x")])
    }

    #[test]
    fn sequential_overlapping_dedup_and_deletes() {
        let s = Series {
            labels: lbls(),
            chunks: vec![
                chunk(&[(30, 3.0), (40, 4.0)]),
                chunk(&[(0, 0.0), (10, 1.0), (20, 2.0)]),
                chunk(&[(15, 1.5), (20, 99.0), (35, STALE_NAN)]),
            ],
            deleted: vec![(39, 41)],
            start_timestamps: None,
        };
        let got = collect_samples(&mut s.iter()).unwrap();
        let ts: Vec<i64> = got.iter().map(|s| s.0).collect();
        assert_eq!(ts, vec![0, 10, 15, 20, 30, 35]);
        // Chunk 1 is earlier in the list than chunk 2: its value for t=20 wins.
        assert_eq!(got[3].1, 2.0);
        assert!(crate::chunk::is_stale_nan(got[5].1));

        let mut it = s.iter();
        assert_eq!(it.seek(16), ValueType::Float);
        assert_eq!(it.at(), (20, 2.0));
        assert_eq!(it.seek(5), ValueType::Float);
        assert_eq!(it.at_t(), 20);
        assert_eq!(it.next(), ValueType::Float);
        assert_eq!(it.at_t(), 30);
        assert_eq!(it.seek(36), ValueType::None);

        let r = collect_samples(&mut s.iter_range(10, 30)).unwrap();
        assert_eq!(
            r.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![10, 15, 20, 30]
        );
    }

    #[test]
    fn merge_keeps_tombstones_per_source() {
        let a = Series {
            labels: lbls(),
            chunks: vec![chunk(&[(0, 0.0), (10, 1.0), (20, 2.0)])],
            deleted: vec![(5, 15)],
            start_timestamps: None,
        };
        let b = Series::new(lbls(), vec![chunk(&[(10, 1.0), (30, 3.0)])]);
        let m = Series::merge(a, b);
        assert!(m.deleted.is_empty());
        let got = collect_samples(&mut m.iter()).unwrap();
        assert_eq!(got, vec![(0, 0.0), (10, 1.0), (20, 2.0), (30, 3.0)]);
        let cs = m.merged_chunks(2);
        assert_eq!(cs.len(), 2);
        assert_eq!((cs[0].min_time, cs[0].max_time), (0, 10));
    }

    #[test]
    fn extreme_timestamps() {
        let s = Series::new(
            lbls(),
            vec![chunk(&[(i64::MIN + 1, 1.0), (0, 2.0), (i64::MAX, 3.0)])],
        );
        let got = collect_samples(&mut s.iter()).unwrap();
        assert_eq!(got.len(), 3);
        let s2 = Series {
            deleted: vec![(1, i64::MAX)],
            ..s
        };
        assert_eq!(collect_samples(&mut s2.iter()).unwrap().len(), 2);
    }

    proptest! {
        /// Against a model: chunks of random sorted samples, random tombstones.
        #[test]
        fn matches_model(
            chunks in proptest::collection::vec(
                proptest::collection::btree_map(-50i64..200, 0u8..4, 0..30), 0..6),
            deleted in proptest::collection::vec((-60i64..210, 0i64..30), 0..3),
            seeks in proptest::collection::vec(-60i64..220, 0..4),
        ) {
            let deleted: Vec<(i64, i64)> = deleted.into_iter().map(|(a, l)| (a, a + l)).collect();
            let mut model: BTreeMap<i64, f64> = BTreeMap::new();
            let mut metas = vec![];
            for (ci, c) in chunks.iter().enumerate() {
                let samples: Vec<(i64, f64)> = c.iter().map(|(&t, &v)| (t, f64::from(v) + ci as f64 * 10.0)).collect();
                for &(t, v) in &samples {
                    model.entry(t).or_insert(v);
                }
                if !samples.is_empty() {
                    metas.push(chunk(&samples));
                }
            }
            model.retain(|t, _| !deleted.iter().any(|&(a, b)| a <= *t && *t <= b));
            let s = Series { labels: lbls(), chunks: metas, deleted, start_timestamps: None };
            let got = collect_samples(&mut s.iter()).unwrap();
            let want: Vec<(i64, f64)> = model.iter().map(|(&t, &v)| (t, v)).collect();
            prop_assert_eq!(&got, &want);
            let mut applied = s.clone();
            applied.apply_deletes();
            prop_assert_eq!(collect_samples(&mut applied.iter()).unwrap(), want.clone());
            let rechunked = Series::new(lbls(), s.merged_chunks(7));
            prop_assert!(!rechunked.has_overlapping_chunks());
            prop_assert_eq!(collect_samples(&mut rechunked.iter()).unwrap(), want.clone());
            // Seeks agree with the model.
            let mut it = s.iter();
            let mut pos = i64::MIN;
            for t in seeks {
                let target = t.max(pos);
                let expect = model.range(target..).next().map(|(&t, &v)| (t, v));
                let vt = it.seek(t);
                match expect {
                    Some(e) => { prop_assert_eq!(vt, ValueType::Float); prop_assert_eq!(it.at(), e); pos = e.0; }
                    None => { prop_assert_eq!(vt, ValueType::None); break; }
                }
            }
        }
    }
}
