//! Start timestamps (ST, Prometheus's "created timestamps") of head samples.
//!
//! A sample's start timestamp is when the cumulative counter it belongs to
//! started counting, or for a delta sample the start of the interval it
//! covers. 0 means "unknown", and almost every series has none, so the head
//! keeps them in a side store instead of in each series: a series without a
//! start timestamp costs nothing here (no field in `SeriesState`, no
//! allocation, no map entry), and reading it costs one relaxed atomic load.
//!
//! Layout: the store is a small fixed set of mutex stripes, each a map from
//! series ref to that series' [`StColumn`]. A column holds only the samples
//! whose start timestamp is non-zero, as `(t, st)` pairs in blocks of at most
//! [`PAIRS_PER_BLOCK`] pairs, each block a byte stream of zig-zag varints:
//! `Δt` against the previous pair of the block (the first pair against 0),
//! then `Δst` likewise. A cumulative counter keeps one start timestamp for
//! many samples, so its `Δst` is one zero byte; a delta series' start
//! timestamp moves with `t`, so it costs about as much as `Δt`. Out-of-order
//! samples (older than the column's newest pair) go to a small sorted vector
//! instead, like the head's own out-of-order buffer.
//!
//! Durability: `Db::append_with_st` logs these samples in the WAL's
//! StSamples records (`docs/wal.md`) and replay restores them. Blocks do
//! not keep start timestamps: the Prometheus 2.42 block format has no place
//! for them and Pharos blocks stay byte-compatible, so a cut drops them
//! with the head data it persists (decision and consequences in
//! `docs/block.md`).
//!
//! Invariants: pairs are recorded under the owning series' mutex, right
//! after the sample itself was stored, so a reader that snapshots the series
//! under that mutex sees both or neither (lock order: series → stripe).
//! Truncation drops whole blocks older than the truncation point and the
//! columns of removed series.

use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Head, U64Map};

/// Pairs per encoded block: small enough that truncation frees memory in
/// steps, large enough that per-block overhead is negligible.
pub(crate) const PAIRS_PER_BLOCK: usize = 120;

const STRIPES: usize = 16;

#[inline]
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

/// Reads a zig-zag varint at `*pos`; `None` when the bytes end early or the
/// varint is longer than ten bytes.
#[inline]
fn get_varint(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut u: u64 = 0;
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*pos)?;
        *pos += 1;
        if shift > 63 {
            return None;
        }
        u |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(((u >> 1) as i64) ^ -((u & 1) as i64));
        }
        shift += 7;
    }
}

/// One block of `(t, st)` pairs, `t` strictly increasing.
#[derive(Debug, Default)]
struct StBlock {
    min_t: i64,
    max_t: i64,
    last_st: i64,
    n: u16,
    bytes: Vec<u8>,
}

impl StBlock {
    fn push(&mut self, t: i64, st: i64) {
        let (pt, pst) = if self.n == 0 {
            self.min_t = t;
            (0, 0)
        } else {
            (self.max_t, self.last_st)
        };
        put_varint(&mut self.bytes, t.wrapping_sub(pt));
        put_varint(&mut self.bytes, st.wrapping_sub(pst));
        self.max_t = t;
        self.last_st = st;
        self.n += 1;
    }

    /// Appends the pairs with `t` in `[mint, maxt]` to `out`.
    fn decode_into(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, i64)>) {
        let (mut t, mut st, mut pos) = (0i64, 0i64, 0usize);
        for _ in 0..self.n {
            // The bytes were written by `push` in this process; a short read
            // cannot happen, but stopping is the safe answer if it did.
            let (Some(dt), Some(dst)) = (
                get_varint(&self.bytes, &mut pos),
                get_varint(&self.bytes, &mut pos),
            ) else {
                return;
            };
            t = t.wrapping_add(dt);
            st = st.wrapping_add(dst);
            if t > maxt {
                return;
            }
            if t >= mint {
                out.push((t, st));
            }
        }
    }

    fn heap_size(&self) -> usize {
        self.bytes.capacity()
    }
}

/// The non-zero start timestamps of one series.
#[derive(Debug, Default)]
pub(crate) struct StColumn {
    /// Oldest first; only the last one is appended to.
    blocks: Vec<StBlock>,
    /// Pairs older than the newest block pair, sorted by `t`.
    ooo: Vec<(i64, i64)>,
}

impl StColumn {
    fn newest(&self) -> Option<i64> {
        self.blocks.last().map(|b| b.max_t)
    }

    fn record(&mut self, t: i64, st: i64) {
        match self.newest() {
            Some(last) if t <= last => {
                match self.ooo.binary_search_by_key(&t, |p| p.0) {
                    Ok(i) => self.ooo[i].1 = st,
                    Err(i) => self.ooo.insert(i, (t, st)),
                }
                return;
            }
            _ => {}
        }
        let full = self
            .blocks
            .last()
            .is_none_or(|b| usize::from(b.n) >= PAIRS_PER_BLOCK);
        if full {
            if let Some(b) = self.blocks.last_mut() {
                b.bytes.shrink_to_fit();
            }
            self.blocks.push(StBlock {
                bytes: Vec::with_capacity(16),
                ..StBlock::default()
            });
        }
        if let Some(b) = self.blocks.last_mut() {
            b.push(t, st);
        }
    }

    /// Pairs with `t` in `[mint, maxt]`, sorted by `t` (an in-order pair
    /// wins over an out-of-order one with the same `t`, as in the chunks).
    fn snapshot(&self, mint: i64, maxt: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for b in &self.blocks {
            if b.n > 0 && b.min_t <= maxt && mint <= b.max_t {
                b.decode_into(mint, maxt, &mut out);
            }
        }
        let extra: Vec<(i64, i64)> = self
            .ooo
            .iter()
            .copied()
            .filter(|p| mint <= p.0 && p.0 <= maxt)
            .collect();
        if !extra.is_empty() {
            out.extend(extra);
            // Stable: in-order pairs come first and win the dedup.
            out.sort_by_key(|p| p.0);
            out.dedup_by_key(|p| p.0);
        }
        out
    }

    /// Drops what lies entirely before `t`; whether nothing is left.
    fn truncate_before(&mut self, t: i64) -> bool {
        self.blocks.retain(|b| b.max_t >= t);
        self.ooo.retain(|p| p.0 >= t);
        self.blocks.is_empty() && self.ooo.is_empty()
    }

    fn heap_size(&self) -> usize {
        self.blocks.capacity() * mem::size_of::<StBlock>()
            + self.blocks.iter().map(StBlock::heap_size).sum::<usize>()
            + self.ooo.capacity() * mem::size_of::<(i64, i64)>()
    }
}

/// The head's start-timestamp side store (see the module docs).
pub(crate) struct StStore {
    /// Set once any start timestamp was recorded; readers skip the stripes
    /// while it is false.
    any: AtomicBool,
    stripes: Box<[Mutex<U64Map<StColumn>>]>,
}

impl Default for StStore {
    fn default() -> Self {
        StStore {
            any: AtomicBool::new(false),
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(U64Map::default()))
                .collect(),
        }
    }
}

impl StStore {
    #[inline]
    fn stripe(&self, sref: u64) -> &Mutex<U64Map<StColumn>> {
        &self.stripes[sref as usize % STRIPES]
    }

    /// Records the start timestamp of a stored sample. `st == 0` (unknown)
    /// records nothing. Call under the series' mutex.
    pub(crate) fn record(&self, sref: u64, t: i64, st: i64) {
        if st == 0 {
            return;
        }
        self.any.store(true, Ordering::Relaxed);
        self.stripe(sref)
            .lock()
            .entry(sref)
            .or_default()
            .record(t, st);
    }

    /// Non-zero start timestamps of the series' samples in `[mint, maxt]`,
    /// `None` when it has none there. Call under the series' mutex.
    pub(crate) fn snapshot(&self, sref: u64, mint: i64, maxt: i64) -> Option<Arc<[(i64, i64)]>> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let pairs = self.stripe(sref).lock().get(&sref)?.snapshot(mint, maxt);
        (!pairs.is_empty()).then(|| pairs.into())
    }

    /// Refs of the series holding a column.
    fn refs(&self) -> Vec<u64> {
        if !self.any.load(Ordering::Relaxed) {
            return Vec::new();
        }
        self.stripes
            .iter()
            .flat_map(|s| s.lock().keys().copied().collect::<Vec<_>>())
            .collect()
    }

    /// Drops the pairs of `sref` entirely before `keep_from`, or its whole
    /// column when `keep_from` is `None` (the series is gone or empty).
    fn truncate_series(&self, sref: u64, keep_from: Option<i64>) {
        let mut m = self.stripe(sref).lock();
        let drop_all = match (keep_from, m.get_mut(&sref)) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(t), Some(c)) => c.truncate_before(t),
        };
        if drop_all {
            m.remove(&sref);
        }
    }

    /// Heap bytes held (0 while no start timestamp was ever recorded).
    pub(crate) fn heap_size(&self) -> usize {
        if !self.any.load(Ordering::Relaxed) {
            return 0;
        }
        self.stripes
            .iter()
            .map(|s| {
                let m = s.lock();
                m.capacity() * (mem::size_of::<u64>() + mem::size_of::<StColumn>())
                    + m.values().map(StColumn::heap_size).sum::<usize>()
            })
            .sum()
    }
}

impl Head {
    /// Truncation's part for start timestamps: each series keeps the pairs
    /// of the samples it still holds (its chunks may reach back before the
    /// truncation point), removed series lose their column. Lock order is
    /// series → stripe, as on the append path.
    pub(crate) fn truncate_start_timestamps(&self) {
        for sref in self.st.refs() {
            let keep_from = self
                .series_by_ref(sref)
                .and_then(|s| s.state.lock().time_range().map(|(lo, _)| lo));
            self.st.truncate_series(sref, keep_from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cumulative_column_is_compact() {
        let mut c = StColumn::default();
        for i in 0..1000i64 {
            c.record(1_700_000_000_000 + i * 15_000, 1_699_999_000_000);
        }
        // Δt of 15 s takes 3 bytes, a constant start timestamp 1.
        let bytes: usize = c.blocks.iter().map(|b| b.bytes.len()).sum();
        assert!(bytes <= 1000 * 4 + 9 * c.blocks.len(), "{bytes}");
        assert_eq!(c.blocks.len(), 1000usize.div_ceil(PAIRS_PER_BLOCK));
        let all = c.snapshot(i64::MIN, i64::MAX);
        assert_eq!(all.len(), 1000);
        assert!(all.iter().all(|p| p.1 == 1_699_999_000_000));
    }

    #[test]
    fn out_of_order_pairs_merge_and_truncation_drops_blocks() {
        let mut c = StColumn::default();
        c.record(10, 5);
        c.record(30, 25);
        c.record(20, 15);
        c.record(30, 99); // Same t as an in-order pair: the in-order one wins.
        assert_eq!(c.snapshot(0, 100), vec![(10, 5), (20, 15), (30, 25)]);
        assert_eq!(c.snapshot(15, 25), vec![(20, 15)]);
        assert!(!c.truncate_before(25));
        assert_eq!(c.snapshot(0, 100), vec![(10, 5), (30, 25)]);
        assert!(c.truncate_before(31));
    }

    #[test]
    fn store_skips_zero_and_forgets_removed_series() {
        let s = StStore::default();
        s.record(1, 10, 0);
        assert!(!s.any.load(Ordering::Relaxed));
        assert_eq!(s.heap_size(), 0);
        assert_eq!(s.snapshot(1, 0, 100), None);
        s.record(1, 10, 3);
        s.record(2, 10, 4);
        assert_eq!(s.snapshot(1, 0, 100).as_deref(), Some(&[(10, 3)][..]));
        assert_eq!(s.snapshot(1, 11, 100), None);
        let mut refs = s.refs();
        refs.sort_unstable();
        assert_eq!(refs, vec![1, 2]);
        s.truncate_series(2, None);
        assert_eq!(s.snapshot(2, 0, 100), None);
        assert!(s.heap_size() > 0);
        s.truncate_series(1, Some(11));
        assert_eq!(s.snapshot(1, 0, 100), None);
        assert_eq!(s.refs(), Vec::<u64>::new());
    }

    use crate::chunk::{SampleIterator, ValueType};
    use crate::head::{HeadOptions, SeriesRef};
    use crate::labels::Labels;
    use crate::querier::Querier;

    fn lbl(v: &str) -> Labels {
        Labels::from_pairs([("__name__", "c"), ("k", v)])
    }

    /// `(t, v, st)` of every sample the head returns for `l`.
    fn read(h: &Head, l: &Labels) -> Vec<(i64, f64, i64)> {
        let ss = h.select(i64::MIN, i64::MAX, &[], None).unwrap();
        let s = ss.iter().find(|s| s.labels == *l).unwrap();
        let mut it = s.iter();
        let mut out = vec![];
        while it.next() == ValueType::Float {
            let (t, v) = it.at();
            assert_eq!(it.at_st(), s.start_timestamp_at(t));
            out.push((t, v, it.at_st()));
        }
        out
    }

    #[test]
    fn head_keeps_start_timestamps_per_sample() {
        let h = Head::new(HeadOptions {
            samples_per_chunk: 3,
            out_of_order_window_ms: 1_000,
            ..HeadOptions::default()
        });
        let a = lbl("a");
        h.append_with_st(&a, 100, 1.0, 50).unwrap();
        h.append_with_st(&a, 200, 2.0, 0).unwrap();
        let r = h.get_ref(&a).unwrap();
        h.append_ref_with_st(r, 300, 3.0, 250).unwrap();
        h.append_ref_with_st(r, 400, 4.0, 250).unwrap();
        // Out of order, inside the window.
        h.append_ref_with_st(r, 150, 1.5, 120).unwrap();
        // A duplicate (same value) is a no-op and does not touch the ST.
        h.append_ref_with_st(r, 300, 3.0, 299).unwrap();
        assert_eq!(
            read(&h, &a),
            vec![
                (100, 1.0, 50),
                (150, 1.5, 120),
                (200, 2.0, 0),
                (300, 3.0, 250),
                (400, 4.0, 250)
            ]
        );
        // Range reads only carry the pairs of their range.
        let s = h.series(r, 250, 350).unwrap();
        assert_eq!(s.start_timestamps.as_deref(), Some(&[(300, 250)][..]));
        // A refused sample leaves no start timestamp behind.
        assert!(h.append_ref_with_st(r, 400, 9.0, 399).is_err());
        assert_eq!(read(&h, &a).last(), Some(&(400, 4.0, 250)));
    }

    #[test]
    fn series_without_start_timestamps_cost_nothing() {
        let plain = Head::default();
        let via_st = Head::default();
        for i in 0..200 {
            let l = lbl(&i.to_string());
            for t in 0..10 {
                plain.append(&l, t * 15_000, t as f64).unwrap();
                via_st.append_with_st(&l, t * 15_000, t as f64, 0).unwrap();
            }
        }
        assert_eq!(plain.stats(), via_st.stats());
        assert_eq!(via_st.st.heap_size(), 0);
        assert!(via_st.st.refs().is_empty());
        let ss = via_st.select(i64::MIN, i64::MAX, &[], None).unwrap();
        assert!(ss.iter().all(|s| s.start_timestamps.is_none()));
        // One series with start timestamps adds its column, nothing else.
        via_st.append_with_st(&lbl("st"), 0, 1.0, -5_000).unwrap();
        assert!(via_st.st.heap_size() > 0);
    }

    #[test]
    fn truncation_keeps_pairs_of_kept_samples_and_drops_removed_series() {
        let h = Head::new(HeadOptions {
            samples_per_chunk: 2,
            ..HeadOptions::default()
        });
        let (a, b) = (lbl("a"), lbl("b"));
        for t in 1..=5 {
            h.append_with_st(&a, t * 10, t as f64, t * 10 - 1).unwrap();
        }
        h.append_with_st(&b, 10, 1.0, 5).unwrap();
        // Chunks of a: [10,20] [30,40] [50]; b: [10].
        let removed = h.truncate_before(35);
        assert_eq!(removed, vec![h.get_ref(&b).map_or(SeriesRef(2), |r| r)]);
        assert_eq!(
            read(&h, &a),
            vec![(30, 3.0, 29), (40, 4.0, 39), (50, 5.0, 49)]
        );
        assert_eq!(h.st.refs(), vec![h.get_ref(&a).unwrap().0]);
    }

    #[test]
    fn db_replay_restores_start_timestamps() {
        use crate::db::{Db, DbOptions};
        use crate::wal::{FsyncPolicy, WalOptions};
        let dir = tempfile::tempdir().unwrap();
        let opts = || DbOptions {
            wal: WalOptions {
                segment_size: 4096,
                fsync: FsyncPolicy::Always,
            },
            head: HeadOptions::default(),
        };
        let (a, b) = (lbl("a"), lbl("b"));
        let want_a: Vec<(i64, f64, i64)> = (1..=50)
            .map(|i| {
                (
                    i * 1000,
                    i as f64,
                    if i % 7 == 0 { 0 } else { i * 1000 - 1000 },
                )
            })
            .collect();
        {
            let db = Db::open(dir.path(), opts()).unwrap();
            for &(t, v, st) in &want_a {
                let stats = db
                    .append_with_st(&[(a.clone(), t, v), (b.clone(), t, v)], &[st, 0])
                    .unwrap();
                assert_eq!(stats.appended, 2);
            }
            // A refused sample logs nothing, so replay cannot resurrect it.
            let stats = db.append_with_st(&[(a.clone(), 1000, 9.0)], &[5]).unwrap();
            assert_eq!(stats.rejected.len(), 1);
            assert!(db.append_with_st(&[(a.clone(), 99_000, 1.0)], &[]).is_err());
        }
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(read(db.head(), &a), want_a);
        let b_read = read(db.head(), &b);
        assert_eq!(b_read.len(), 50);
        assert!(b_read.iter().all(|s| s.2 == 0));
        assert!(db
            .head()
            .select(i64::MIN, i64::MAX, &[], None)
            .unwrap()
            .iter()
            .any(|s| s.labels == b && s.start_timestamps.is_none()));
    }

    proptest! {
        /// Any in-order pairs round-trip through the block encoding.
        #[test]
        fn blocks_round_trip(
            steps in proptest::collection::vec((1i64..1 << 40, any::<i64>()), 0..400),
            start in any::<i64>(),
        ) {
            let mut c = StColumn::default();
            let mut want = Vec::new();
            let mut t = start.min(i64::MAX - (1 << 50));
            for (dt, st) in steps {
                t += dt;
                let st = if st == 0 { 1 } else { st };
                c.record(t, st);
                want.push((t, st));
            }
            prop_assert_eq!(c.snapshot(i64::MIN, i64::MAX), want);
        }
    }
}
