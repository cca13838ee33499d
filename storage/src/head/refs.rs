//! Series by ref, one stripe of the head's ref registry (`sref & mask`
//! picks the stripe).
//!
//! Every append by ref looks its series up here. A hash map needs two
//! dependent memory reads per lookup (the control bytes, then the bucket),
//! and with a million series both miss the caches: that lookup was the
//! largest single cost of scrape ingestion. Refs are handed out in sequence,
//! so within a stripe `sref >> shift` is dense: a vector indexed by it finds
//! the series with one read. Series die roughly in creation order (head
//! truncation), so the vector's front is trimmed as it empties. Refs far
//! outside the vector's window (a replayed WAL with gaps, refs below the
//! window) go to a map instead, so no ref can make the vector huge.

use std::mem;
use std::sync::Arc;

use super::series::MemSeries;
use super::U64Map;

/// The vector may grow by at most this many slots past its end for one
/// insert; a ref further out goes to the map.
const MAX_GAP: u64 = 1 << 16;

/// Leading empty slots are dropped once there are this many and they are
/// over half the vector.
const TRIM_AT: usize = 1024;

pub(crate) struct RefStripe {
    /// `log2(stripes)`: a ref's index in its stripe is `sref >> shift`.
    shift: u32,
    /// Stripe index of `dense[0]`.
    base: u64,
    dense: Vec<Option<Arc<MemSeries>>>,
    /// Every slot below `lead` is empty.
    lead: usize,
    /// Refs outside the dense window when they were inserted.
    sparse: U64Map<Arc<MemSeries>>,
}

impl RefStripe {
    pub(crate) fn new(shift: u32) -> RefStripe {
        RefStripe {
            shift,
            base: 0,
            dense: Vec::new(),
            lead: 0,
            sparse: U64Map::default(),
        }
    }

    /// Slot of `sref` in `dense`, if inside the window.
    #[inline]
    fn slot(&self, sref: u64) -> Option<usize> {
        let off = (sref >> self.shift).checked_sub(self.base)?;
        let off = usize::try_from(off).ok()?;
        (off < self.dense.len()).then_some(off)
    }

    #[inline]
    pub(crate) fn get(&self, sref: &u64) -> Option<&Arc<MemSeries>> {
        let sref = *sref;
        if let Some(s) = self
            .slot(sref)
            .and_then(|i| self.dense[i].as_ref())
            .filter(|s| s.sref == sref)
        {
            return Some(s);
        }
        if self.sparse.is_empty() {
            None
        } else {
            self.sparse.get(&sref)
        }
    }

    /// Adds (or replaces) the series under `sref`.
    pub(crate) fn insert(&mut self, sref: u64, s: Arc<MemSeries>) {
        if let Some(i) = self.slot(sref) {
            if self.dense[i].as_ref().is_some_and(|old| old.sref != sref) {
                // Only possible if refs of another stripe were put here.
                self.sparse.insert(sref, s);
                return;
            }
            self.dense[i] = Some(s);
            self.lead = self.lead.min(i);
            if !self.sparse.is_empty() {
                self.sparse.remove(&sref);
            }
            return;
        }
        let idx = sref >> self.shift;
        if self.dense.is_empty() {
            self.base = idx;
            self.lead = 0;
        }
        let end = self.base + self.dense.len() as u64;
        if idx >= end && idx - end <= MAX_GAP {
            let off = (idx - self.base) as usize;
            self.dense.resize(off, None);
            self.dense.push(Some(s));
            if !self.sparse.is_empty() {
                self.sparse.remove(&sref);
            }
            return;
        }
        self.sparse.insert(sref, s);
    }

    pub(crate) fn remove(&mut self, sref: &u64) -> Option<Arc<MemSeries>> {
        let sref = *sref;
        if let Some(i) = self.slot(sref) {
            if self.dense[i].as_ref().is_some_and(|s| s.sref == sref) {
                let old = self.dense[i].take();
                self.shrink(i);
                return old;
            }
        }
        self.sparse.remove(&sref)
    }

    /// After slot `i` was emptied: drops empty slots at the end, and at the
    /// front once they are many.
    fn shrink(&mut self, i: usize) {
        while self.dense.last().is_some_and(Option::is_none) {
            self.dense.pop();
        }
        if self.dense.is_empty() {
            self.base = 0;
            self.lead = 0;
            self.dense.shrink_to(TRIM_AT);
            return;
        }
        if i == self.lead {
            while self.dense.get(self.lead).is_some_and(Option::is_none) {
                self.lead += 1;
            }
        }
        if self.lead >= TRIM_AT && self.lead * 2 > self.dense.len() {
            self.dense.drain(..self.lead);
            self.base += self.lead as u64;
            self.lead = 0;
        }
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<MemSeries>> {
        self.dense.iter().flatten().chain(self.sparse.values())
    }

    /// Bytes this stripe holds beyond its struct (vector and map).
    pub(crate) fn heap_bytes(&self) -> usize {
        let entry = mem::size_of::<(u64, Arc<MemSeries>)>() + 1;
        self.dense.capacity() * mem::size_of::<Option<Arc<MemSeries>>>()
            + (self.sparse.capacity() * 8 / 7) * entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn series(sref: u64) -> Arc<MemSeries> {
        Arc::new(MemSeries::new(Labels::from_pairs([("a", "b")]), sref))
    }

    #[test]
    fn dense_sparse_and_trimming() {
        // 4 stripes: this is stripe 1.
        let mut s = RefStripe::new(2);
        let refs: Vec<u64> = (0..5000u64).map(|i| (i << 2) | 1).collect();
        for &r in &refs {
            s.insert(r, series(r));
        }
        assert!(s.sparse.is_empty());
        assert_eq!(s.dense.len(), 5000);
        // A ref far past the window goes to the map, and is found there.
        let far = (1u64 << 40) | 1;
        s.insert(far, series(far));
        assert_eq!(s.get(&far).map(|x| x.sref), Some(far));
        assert_eq!(s.dense.len(), 5000);
        // Removing the oldest series trims the front.
        for &r in &refs[..4000] {
            assert_eq!(s.remove(&r).map(|x| x.sref), Some(r));
        }
        assert!(s.dense.len() <= 2000, "{}", s.dense.len());
        assert!(s.get(&refs[10]).is_none());
        assert_eq!(s.get(&refs[4500]).map(|x| x.sref), Some(refs[4500]));
        // A ref below the window goes to the map.
        s.insert(refs[3], series(refs[3]));
        assert_eq!(s.get(&refs[3]).map(|x| x.sref), Some(refs[3]));
        assert_eq!(s.values().count(), 1000 + 2);
        for &r in &refs[4000..] {
            s.remove(&r);
        }
        assert!(s.dense.is_empty());
        assert_eq!(s.values().count(), 2);
    }

    proptest! {
        /// Any sequence of inserts, removes and lookups answers as a map.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u8..3, 0u64..3000), 0..400)) {
            let shift = 3;
            let mut s = RefStripe::new(shift);
            let mut model: HashMap<u64, u64> = HashMap::new();
            for (op, k) in ops {
                // Spread keys: mostly near each other, some far away.
                let idx = if k % 97 == 0 { k << 20 } else { k };
                let sref = (idx << shift) | 5;
                match op {
                    0 => {
                        s.insert(sref, series(sref));
                        model.insert(sref, sref);
                    }
                    1 => {
                        prop_assert_eq!(s.remove(&sref).map(|x| x.sref), model.remove(&sref));
                    }
                    _ => {
                        prop_assert_eq!(s.get(&sref).map(|x| x.sref), model.get(&sref).copied());
                    }
                }
            }
            let mut got: Vec<u64> = s.values().map(|x| x.sref).collect();
            got.sort();
            let mut want: Vec<u64> = model.into_keys().collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
