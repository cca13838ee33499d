//! Postings: sorted lists of series refs, and lazy set operations over them
//! (intersection, union, difference) in the shape of Prometheus's
//! `index.Postings`.
//!
//! All operators are seek-based: intersecting a short list with a long one
//! costs O(short · log long), and nothing allocates per element (a union
//! allocates its heap once).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A forward iterator over strictly increasing series refs.
///
/// Contract: `next` moves to the next ref; `seek(v)` moves to the first ref
/// `>= v`, but never backwards (if positioned at a ref `>= v`, it stays);
/// both return `false` once exhausted, after which the iterator stays
/// exhausted. `at` is only meaningful after a `true` return.
pub trait Postings {
    fn next(&mut self) -> bool;
    fn seek(&mut self, v: u64) -> bool;
    fn at(&self) -> u64;
}

impl<P: Postings + ?Sized> Postings for Box<P> {
    #[inline]
    fn next(&mut self) -> bool {
        (**self).next()
    }
    #[inline]
    fn seek(&mut self, v: u64) -> bool {
        (**self).seek(v)
    }
    #[inline]
    fn at(&self) -> u64 {
        (**self).at()
    }
}

/// Boxed postings borrowing from `'a` (e.g. an index under a read lock).
pub type BoxPostings<'a> = Box<dyn Postings + Send + 'a>;

/// Postings over a sorted, de-duplicated list (`&[u64]`, `Vec<u64>`,
/// `Arc<[u64]>`, ...).
#[derive(Debug, Clone)]
pub struct ListPostings<L> {
    list: L,
    /// Index of the current element; `usize::MAX` before the first move.
    idx: usize,
}

impl<L: AsRef<[u64]>> ListPostings<L> {
    pub fn new(list: L) -> ListPostings<L> {
        debug_assert!(list.as_ref().windows(2).all(|w| w[0] < w[1]));
        ListPostings {
            list,
            idx: usize::MAX,
        }
    }

    /// Refs not yet returned (including the current one).
    pub fn remaining(&self) -> usize {
        let n = self.list.as_ref().len();
        if self.idx == usize::MAX {
            n
        } else {
            n.saturating_sub(self.idx)
        }
    }
}

impl<L: AsRef<[u64]>> Postings for ListPostings<L> {
    #[inline]
    fn next(&mut self) -> bool {
        let n = self.list.as_ref().len();
        self.idx = if self.idx == usize::MAX {
            0
        } else {
            self.idx.saturating_add(1).min(n)
        };
        self.idx < n
    }

    fn seek(&mut self, v: u64) -> bool {
        let list = self.list.as_ref();
        if self.idx == usize::MAX {
            self.idx = 0;
        }
        if self.idx >= list.len() {
            return false;
        }
        if list[self.idx] >= v {
            return true;
        }
        // Gallop: find a window [lo, hi) that holds the first element >= v.
        let mut lo = self.idx + 1;
        let mut step = 1;
        let mut hi = lo;
        while hi < list.len() && list[hi] < v {
            lo = hi + 1;
            hi += step;
            step *= 2;
        }
        let hi = hi.min(list.len());
        self.idx = lo + list[lo.min(hi)..hi].partition_point(|&x| x < v);
        self.idx < list.len()
    }

    #[inline]
    fn at(&self) -> u64 {
        self.list
            .as_ref()
            .get(self.idx)
            .copied()
            .unwrap_or(u64::MAX)
    }
}

/// Postings with no refs.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyPostings;

impl Postings for EmptyPostings {
    fn next(&mut self) -> bool {
        false
    }
    fn seek(&mut self, _v: u64) -> bool {
        false
    }
    fn at(&self) -> u64 {
        u64::MAX
    }
}

/// Refs present in every input.
pub struct Intersect<'a> {
    its: Vec<BoxPostings<'a>>,
    cur: u64,
    done: bool,
}

impl<'a> Intersect<'a> {
    pub fn new(its: Vec<BoxPostings<'a>>) -> Intersect<'a> {
        let done = its.is_empty();
        Intersect { its, cur: 0, done }
    }

    /// Moves every input to `>= self.cur` until they agree.
    fn settle(&mut self) -> bool {
        loop {
            let mut moved = false;
            for it in &mut self.its {
                if !it.seek(self.cur) {
                    self.done = true;
                    return false;
                }
                let a = it.at();
                if a > self.cur {
                    self.cur = a;
                    moved = true;
                }
            }
            if !moved {
                return true;
            }
        }
    }
}

impl Postings for Intersect<'_> {
    fn next(&mut self) -> bool {
        if self.done {
            return false;
        }
        if !self.its[0].next() {
            self.done = true;
            return false;
        }
        self.cur = self.its[0].at();
        self.settle()
    }

    fn seek(&mut self, v: u64) -> bool {
        if self.done {
            return false;
        }
        // Inputs never move backwards, so seeking below the current position
        // settles back on it.
        self.cur = v;
        self.settle()
    }

    fn at(&self) -> u64 {
        self.cur
    }
}

/// Refs present in any input (de-duplicated).
pub struct Merge<'a> {
    its: Vec<BoxPostings<'a>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    cur: u64,
    started: bool,
    positioned: bool,
}

impl<'a> Merge<'a> {
    pub fn new(its: Vec<BoxPostings<'a>>) -> Merge<'a> {
        let heap = BinaryHeap::with_capacity(its.len());
        Merge {
            its,
            heap,
            cur: 0,
            started: false,
            positioned: false,
        }
    }

    fn start(&mut self, seek: Option<u64>) {
        self.started = true;
        for (i, it) in self.its.iter_mut().enumerate() {
            let ok = match seek {
                Some(v) => it.seek(v),
                None => it.next(),
            };
            if ok {
                self.heap.push(Reverse((it.at(), i)));
            }
        }
    }

    fn settle(&mut self) -> bool {
        match self.heap.peek() {
            Some(&Reverse((v, _))) => {
                self.cur = v;
                self.positioned = true;
                true
            }
            None => {
                self.positioned = false;
                false
            }
        }
    }
}

impl Postings for Merge<'_> {
    fn next(&mut self) -> bool {
        if !self.started {
            self.start(None);
            return self.settle();
        }
        while let Some(&Reverse((v, i))) = self.heap.peek() {
            if v > self.cur {
                break;
            }
            self.heap.pop();
            if self.its[i].next() {
                self.heap.push(Reverse((self.its[i].at(), i)));
            }
        }
        self.settle()
    }

    fn seek(&mut self, target: u64) -> bool {
        if !self.started {
            self.start(Some(target));
            return self.settle();
        }
        if self.positioned && self.cur >= target {
            return true;
        }
        while let Some(&Reverse((v, i))) = self.heap.peek() {
            if v >= target {
                break;
            }
            self.heap.pop();
            if self.its[i].seek(target) {
                self.heap.push(Reverse((self.its[i].at(), i)));
            }
        }
        self.settle()
    }

    fn at(&self) -> u64 {
        self.cur
    }
}

/// Refs of `full` that are not in `drop`.
pub struct Without<'a> {
    full: BoxPostings<'a>,
    drop: BoxPostings<'a>,
    drop_live: bool,
}

impl<'a> Without<'a> {
    pub fn new(full: BoxPostings<'a>, drop: BoxPostings<'a>) -> Without<'a> {
        Without {
            full,
            drop,
            drop_live: true,
        }
    }

    fn skip_dropped(&mut self) -> bool {
        loop {
            let v = self.full.at();
            if self.drop_live {
                self.drop_live = self.drop.seek(v);
            }
            if self.drop_live && self.drop.at() == v {
                if !self.full.next() {
                    return false;
                }
                continue;
            }
            return true;
        }
    }
}

impl Postings for Without<'_> {
    fn next(&mut self) -> bool {
        self.full.next() && self.skip_dropped()
    }

    fn seek(&mut self, v: u64) -> bool {
        self.full.seek(v) && self.skip_dropped()
    }

    fn at(&self) -> u64 {
        self.full.at()
    }
}

/// Intersection, simplified for 0 inputs (empty) and 1 (itself).
pub fn intersect<'a>(mut its: Vec<BoxPostings<'a>>) -> BoxPostings<'a> {
    match its.len() {
        0 => Box::new(EmptyPostings),
        1 => its.pop().unwrap_or_else(|| Box::new(EmptyPostings)),
        _ => Box::new(Intersect::new(its)),
    }
}

/// Union, simplified for 0 inputs (empty) and 1 (itself).
pub fn merge<'a>(mut its: Vec<BoxPostings<'a>>) -> BoxPostings<'a> {
    match its.len() {
        0 => Box::new(EmptyPostings),
        1 => its.pop().unwrap_or_else(|| Box::new(EmptyPostings)),
        _ => Box::new(Merge::new(its)),
    }
}

/// Difference `full \ drop`.
pub fn without<'a>(full: BoxPostings<'a>, drop: BoxPostings<'a>) -> BoxPostings<'a> {
    Box::new(Without::new(full, drop))
}

/// Drains postings into a vector.
pub fn expand(p: &mut dyn Postings) -> Vec<u64> {
    let mut out = Vec::new();
    while p.next() {
        out.push(p.at());
    }
    out
}

/// Inserts `v` into a sorted list, keeping it sorted and de-duplicated. Refs
/// mostly arrive in increasing order, so this looks from the end.
pub fn insert_sorted(list: &mut Vec<u64>, v: u64) {
    match list.last() {
        None => list.push(v),
        Some(&last) if last < v => list.push(v),
        _ => {
            if let Err(i) = list.binary_search(&v) {
                list.insert(i, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn lp(v: &[u64]) -> BoxPostings<'_> {
        Box::new(ListPostings::new(v))
    }

    #[test]
    fn basics() {
        let a = [1u64, 2, 3, 5, 8, 13, 21];
        let b = [2u64, 3, 4, 5, 21, 22];
        assert_eq!(
            expand(&mut *intersect(vec![lp(&a), lp(&b)])),
            vec![2, 3, 5, 21]
        );
        assert_eq!(
            expand(&mut *merge(vec![lp(&a), lp(&b)])),
            vec![1, 2, 3, 4, 5, 8, 13, 21, 22]
        );
        assert_eq!(expand(&mut *without(lp(&a), lp(&b))), vec![1, 8, 13]);
        assert!(expand(&mut *intersect(vec![])).is_empty());
        let mut p = ListPostings::new(&a[..]);
        assert!(p.seek(4));
        assert_eq!(p.at(), 5);
        assert!(p.seek(0));
        assert_eq!(p.at(), 5);
        assert!(p.seek(21));
        assert!(!p.seek(22));
        assert!(!p.next());
        let mut l = vec![];
        for v in [5, 3, 9, 3, 1] {
            insert_sorted(&mut l, v);
        }
        assert_eq!(l, vec![1, 3, 5, 9]);
    }

    fn set() -> impl Strategy<Value = BTreeSet<u64>> {
        proptest::collection::btree_set(0u64..300, 0..80)
    }

    /// Checks `p` yields `want` under an interleaving of next/seek.
    fn check(
        mut p: BoxPostings<'_>,
        want: &BTreeSet<u64>,
        ops: &[(bool, u64)],
    ) -> Result<(), TestCaseError> {
        let mut pos: Option<u64> = None;
        for &(is_seek, v) in ops {
            let expect = if is_seek {
                let from = pos.map_or(v, |p| p.max(v));
                want.range(from..).next().copied()
            } else {
                match pos {
                    None => want.iter().next().copied(),
                    Some(p) => want.range(p + 1..).next().copied(),
                }
            };
            let got = if is_seek { p.seek(v) } else { p.next() };
            match expect {
                Some(e) => {
                    prop_assert!(got);
                    prop_assert_eq!(p.at(), e);
                    pos = Some(e);
                }
                None => {
                    prop_assert!(!got);
                    prop_assert!(!p.next());
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn set_ops_match_model(
            sets in proptest::collection::vec(set(), 1..5),
            ops in proptest::collection::vec((any::<bool>(), 0u64..320), 0..40),
        ) {
            let lists: Vec<Vec<u64>> = sets.iter().map(|s| s.iter().copied().collect()).collect();
            let inter: BTreeSet<u64> = sets.iter().skip(1).fold(sets[0].clone(), |acc, s| &acc & s);
            let union: BTreeSet<u64> = sets.iter().fold(BTreeSet::new(), |acc, s| &acc | s);
            let diff: BTreeSet<u64> = sets.iter().skip(1).fold(sets[0].clone(), |acc, s| &acc - s);

            let mk = || lists.iter().map(|l| lp(l)).collect::<Vec<_>>();
            let all_next: Vec<(bool, u64)> = vec![(false, 0); 400];
            for ops in [&ops[..], &all_next[..]] {
                check(intersect(mk()), &inter, ops)?;
                check(merge(mk()), &union, ops)?;
                let rest = merge(lists.iter().skip(1).map(|l| lp(l)).collect());
                check(without(lp(&lists[0]), rest), &diff, ops)?;
                check(lp(&lists[0]), &sets[0], ops)?;
            }
            // Nested: (a ∩ b) ∪ (c \ d)
            if lists.len() >= 4 {
                let want: BTreeSet<u64> = &(&sets[0] & &sets[1]) | &(&sets[2] - &sets[3]);
                let p = merge(vec![
                    intersect(vec![lp(&lists[0]), lp(&lists[1])]),
                    without(lp(&lists[2]), lp(&lists[3])),
                ]);
                check(p, &want, &ops)?;
            }
        }
    }
}
