//! The read seam of the storage engine: a [`Querier`] selects series by label
//! matchers over a time range. The head, each block, and [`MergeQuerier`]
//! (head + blocks together) implement it; the query engine reads only through
//! it.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::error::StorageError;
use crate::labels::Matcher;
use crate::series::Series;

/// What the query engine will do with a selection (Prometheus's
/// `storage.SelectHints`); a querier may use it to prune, or ignore it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectHints {
    /// Query start and end (ms), including lookback.
    pub start: i64,
    pub end: i64,
    /// Evaluation step (ms), 0 for instant queries.
    pub step: i64,
    /// Range of a range selector (ms), 0 for instant vectors.
    pub range: i64,
    /// Function the selector is an argument of (e.g. `"rate"`), or `"series"`
    /// for metadata-only selections.
    pub func: Option<String>,
    /// Labels of an enclosing aggregation's `by`/`without`.
    pub grouping: Vec<String>,
    /// `true` for `by`, `false` for `without`.
    pub by: bool,
}

/// Reads series from one source (or several, merged).
///
/// Contract for implementations:
/// - `select` returns series sorted by labels (`Labels: Ord`, Prometheus's
///   `labels.Compare`), at most one per label set, each carrying only the
///   chunks that overlap `[mint, maxt]` (both inclusive) and no series without
///   such a chunk. Chunks may hold samples outside the range; readers that
///   need exact bounds use [`Series::iter_range`].
/// - The returned data is a snapshot: it holds no lock, and appends made after
///   `select` returns are not visible in it.
/// - `label_names` / `label_values` return sorted, de-duplicated strings from
///   series that match all `matchers` (every series when empty) and have data
///   in `[mint, maxt]` (implementations may approximate the range by their
///   own bounds, as Prometheus does).
pub trait Querier: Send + Sync {
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, StorageError>;

    fn label_names(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError>;

    fn label_values(
        &self,
        name: &str,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError>;
}

impl<Q: Querier + ?Sized> Querier for Arc<Q> {
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, StorageError> {
        (**self).select(mint, maxt, matchers, hints)
    }
    fn label_names(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        (**self).label_names(mint, maxt, matchers)
    }
    fn label_values(
        &self,
        name: &str,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        (**self).label_values(name, mint, maxt, matchers)
    }
}

/// Reads several queriers as one: series with equal labels are merged with
/// [`Series::merge`] (samples de-duplicated by timestamp when iterated),
/// names and values are unioned. Any source failing fails the whole read.
#[derive(Clone, Default)]
pub struct MergeQuerier {
    queriers: Vec<Arc<dyn Querier>>,
}

impl MergeQuerier {
    pub fn new(queriers: Vec<Arc<dyn Querier>>) -> MergeQuerier {
        MergeQuerier { queriers }
    }

    pub fn push(&mut self, q: Arc<dyn Querier>) {
        self.queriers.push(q);
    }

    pub fn len(&self) -> usize {
        self.queriers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queriers.is_empty()
    }
}

/// Merges lists each sorted by labels into one, merging equal label sets.
pub fn merge_series_sets(sets: Vec<Vec<Series>>) -> Vec<Series> {
    let mut sets: Vec<Vec<Series>> = sets.into_iter().filter(|s| !s.is_empty()).collect();
    match sets.len() {
        0 => return Vec::new(),
        1 => return sets.pop().unwrap_or_default(),
        _ => {}
    }
    // Pairwise merging keeps it simple; the number of sources is small
    // (head + a handful of blocks) and each step is linear.
    while sets.len() > 1 {
        let mut next = Vec::with_capacity(sets.len().div_ceil(2));
        let mut it = sets.into_iter();
        while let Some(a) = it.next() {
            match it.next() {
                Some(b) => next.push(merge_two(a, b)),
                None => next.push(a),
            }
        }
        sets = next;
    }
    sets.pop().unwrap_or_default()
}

fn merge_two(a: Vec<Series>, b: Vec<Series>) -> Vec<Series> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let ord = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.labels.cmp(&y.labels),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => break,
        };
        match ord {
            Ordering::Less => out.extend(a.next()),
            Ordering::Greater => out.extend(b.next()),
            Ordering::Equal => {
                if let (Some(x), Some(y)) = (a.next(), b.next()) {
                    out.push(Series::merge(x, y));
                }
            }
        }
    }
    out
}

/// Union of sorted string lists, sorted and de-duplicated.
pub fn merge_strings(lists: Vec<Vec<String>>) -> Vec<String> {
    let mut all: Vec<String> = lists.into_iter().flatten().collect();
    all.sort_unstable();
    all.dedup();
    all
}

impl Querier for MergeQuerier {
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, StorageError> {
        let mut sets = Vec::with_capacity(self.queriers.len());
        for q in &self.queriers {
            sets.push(q.select(mint, maxt, matchers, hints)?);
        }
        Ok(merge_series_sets(sets))
    }

    fn label_names(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        let mut lists = Vec::with_capacity(self.queriers.len());
        for q in &self.queriers {
            lists.push(q.label_names(mint, maxt, matchers)?);
        }
        Ok(merge_strings(lists))
    }

    fn label_values(
        &self,
        name: &str,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        let mut lists = Vec::with_capacity(self.queriers.len());
        for q in &self.queriers {
            lists.push(q.label_values(name, mint, maxt, matchers)?);
        }
        Ok(merge_strings(lists))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{collect_samples, XorAppender};
    use crate::labels::Labels;
    use crate::series::ChunkMeta;

    /// A fixed list of series, filtered by matchers and chunk overlap.
    struct Fixed(Vec<Series>);

    impl Querier for Fixed {
        fn select(
            &self,
            mint: i64,
            maxt: i64,
            ms: &[Matcher],
            _: Option<&SelectHints>,
        ) -> Result<Vec<Series>, StorageError> {
            let mut out: Vec<Series> = self
                .0
                .iter()
                .filter(|s| ms.iter().all(|m| m.matches(s.labels.get_or_empty(&m.name))))
                .map(|s| Series {
                    chunks: s
                        .chunks
                        .iter()
                        .filter(|c| c.overlaps(mint, maxt))
                        .cloned()
                        .collect(),
                    ..s.clone()
                })
                .filter(|s| !s.chunks.is_empty())
                .collect();
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            Ok(out)
        }
        fn label_names(&self, _: i64, _: i64, _: &[Matcher]) -> Result<Vec<String>, StorageError> {
            let mut v: Vec<String> = self
                .0
                .iter()
                .flat_map(|s| {
                    s.labels
                        .iter()
                        .map(|(n, _)| n.to_string())
                        .collect::<Vec<_>>()
                })
                .collect();
            v.sort();
            v.dedup();
            Ok(v)
        }
        fn label_values(
            &self,
            name: &str,
            _: i64,
            _: i64,
            _: &[Matcher],
        ) -> Result<Vec<String>, StorageError> {
            let mut v: Vec<String> = self
                .0
                .iter()
                .filter_map(|s| s.labels.get(name).map(str::to_string))
                .collect();
            v.sort();
            v.dedup();
            Ok(v)
        }
    }

    fn series(job: &str, samples: &[(i64, f64)]) -> Series {
        let mut a = XorAppender::new();
        for &(t, v) in samples {
            a.append(t, v);
        }
        Series::new(
            Labels::from_pairs([("__name__", "up"), ("job", job)]),
            vec![ChunkMeta {
                min_time: samples[0].0,
                max_time: samples[samples.len() - 1].0,
                chunk: a.to_chunk(),
            }],
        )
    }

    #[test]
    fn merges_equal_series_and_dedups_samples() {
        let head = Fixed(vec![
            series("b", &[(20, 2.0), (30, 3.0)]),
            series("c", &[(5, 1.0)]),
        ]);
        let block1 = Fixed(vec![
            series("a", &[(0, 0.0)]),
            series("b", &[(0, 0.0), (10, 1.0), (20, 2.0)]),
        ]);
        let block2 = Fixed(vec![series("b", &[(10, 1.0)]), series("d", &[(1000, 1.0)])]);
        let q = MergeQuerier::new(vec![Arc::new(head), Arc::new(block1), Arc::new(block2)]);
        let got = q
            .select(0, 100, &[Matcher::equal("__name__", "up")], None)
            .unwrap();
        let jobs: Vec<&str> = got.iter().map(|s| s.labels.get("job").unwrap()).collect();
        assert_eq!(jobs, vec!["a", "b", "c"]);
        let b = collect_samples(&mut got[1].iter()).unwrap();
        assert_eq!(b, vec![(0, 0.0), (10, 1.0), (20, 2.0), (30, 3.0)]);
        assert_eq!(
            q.label_values("job", 0, 100, &[]).unwrap(),
            vec!["a", "b", "c", "d"]
        );
        assert_eq!(q.label_names(0, 100, &[]).unwrap(), vec!["__name__", "job"]);
        assert!(MergeQuerier::default()
            .select(0, 1, &[], None)
            .unwrap()
            .is_empty());
    }
}
