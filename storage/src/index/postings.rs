//! Set operations on sorted, duplicate-free lists of series ids, used to
//! combine postings lists when resolving matchers against an index.

/// Ids present in both lists.
pub fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Ids of `a` that are not in `b`.
pub fn subtract(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut j = 0;
    let mut out = Vec::with_capacity(a.len());
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

/// Ids present in any of the lists, sorted and deduplicated.
pub fn union_many(lists: Vec<Vec<u64>>) -> Vec<u64> {
    match lists.len() {
        0 => Vec::new(),
        1 => lists.into_iter().next().unwrap_or_default(),
        _ => {
            // A k-way merge would save the sort, but the lists are postings of
            // one label name and the total is bounded by the series count.
            let mut all: Vec<u64> = lists.into_iter().flatten().collect();
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn set_ops_match_btreeset(a in proptest::collection::btree_set(0u64..200, 0..60),
                                  b in proptest::collection::btree_set(0u64..200, 0..60),
                                  c in proptest::collection::btree_set(0u64..200, 0..60)) {
            let va: Vec<u64> = a.iter().copied().collect();
            let vb: Vec<u64> = b.iter().copied().collect();
            let vc: Vec<u64> = c.iter().copied().collect();
            prop_assert_eq!(intersect(&va, &vb), a.intersection(&b).copied().collect::<Vec<_>>());
            prop_assert_eq!(subtract(&va, &vb), a.difference(&b).copied().collect::<Vec<_>>());
            let u: BTreeSet<u64> = a.union(&b).copied().collect::<BTreeSet<_>>().union(&c).copied().collect();
            prop_assert_eq!(union_many(vec![va, vb, vc]), u.into_iter().collect::<Vec<_>>());
        }
    }
}
