//! Reading the head: the `Querier` implementation and the block writer's
//! view of a time range.

use std::sync::Arc;

use super::series::MemSeries;
use super::{Head, SeriesRef};
use crate::error::StorageError;
use crate::labels::Matcher;
use crate::querier::{Querier, SelectHints};
use crate::series::{encode_chunks, ChunkMeta, Series};

impl Head {
    /// Whether the head may hold samples in `[mint, maxt]`.
    fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.min_time() <= maxt && mint <= self.max_time()
    }

    fn matching_series(&self, matchers: &[Matcher]) -> Vec<Arc<MemSeries>> {
        let refs = self.index.read().postings_for_matchers(matchers);
        refs.into_iter()
            .filter_map(|r| self.series_by_ref(r))
            .collect()
    }

    /// Matching series holding any sample in `[mint, maxt]` (by chunk bounds).
    fn matching_series_in_range(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<Arc<MemSeries>> {
        let mut v = self.matching_series(matchers);
        v.retain(|s| {
            s.state
                .lock()
                .time_range()
                .is_some_and(|(lo, hi)| lo <= maxt && mint <= hi)
        });
        v
    }

    fn snapshot(&self, series: &[Arc<MemSeries>], mint: i64, maxt: i64) -> Vec<Series> {
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            let mut chunks = Vec::new();
            let (deleted, sts) = {
                let st = s.state.lock();
                st.snapshot(mint, maxt, &mut chunks);
                (st.deleted.clone(), self.st.snapshot(s.sref, mint, maxt))
            };
            if let Some(mut s) = with_deletes(s, chunks, deleted) {
                s.start_timestamps = sts;
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// One series' chunks overlapping `[mint, maxt]` (a snapshot).
    pub fn series(&self, sref: SeriesRef, mint: i64, maxt: i64) -> Option<Series> {
        let s = self.series_by_ref(sref.0)?;
        let mut chunks = Vec::new();
        let (deleted, start_timestamps) = {
            let st = s.state.lock();
            st.snapshot(mint, maxt, &mut chunks);
            (st.deleted.clone(), self.st.snapshot(s.sref, mint, maxt))
        };
        Some(Series {
            labels: s.labels.clone(),
            chunks,
            deleted,
            start_timestamps,
        })
    }

    /// Every series with samples in `[mint, maxt]` (both inclusive), sorted
    /// by labels, for writing a block: each series' chunks are in time order,
    /// do not overlap, and hold only samples inside the range (chunks that
    /// cross a bound, overlap, or come from the out-of-order buffer are
    /// re-encoded, merged and de-duplicated; others are shared as they are).
    /// Prometheus blocks are half-open `[mint, maxt)`: pass `block_maxt - 1`.
    pub fn series_for_range(&self, mint: i64, maxt: i64) -> Vec<Series> {
        if !self.overlaps(mint, maxt) {
            return Vec::new();
        }
        let mut out = self.snapshot(&self.all_series(), mint, maxt);
        let per_chunk = self.opts.samples_per_chunk;
        for s in &mut out {
            let clean = !s.has_overlapping_chunks()
                && s.chunks
                    .iter()
                    .all(|c| mint <= c.min_time && c.max_time <= maxt);
            if clean {
                s.chunks.sort_by_key(|c| c.min_time);
            } else {
                let chunks: Vec<ChunkMeta> =
                    encode_chunks(&mut s.iter_range(mint, maxt), per_chunk);
                s.chunks = chunks;
            }
        }
        out.retain(|s| !s.chunks.is_empty());
        out
    }
}

/// A series read from the head with its tombstones: chunks entirely inside
/// a deleted interval are left out (as a block read does), the rest carry the
/// intervals for iterators to skip. `None` when no chunk is left.
fn with_deletes(
    s: &MemSeries,
    mut chunks: Vec<ChunkMeta>,
    deleted: Vec<(i64, i64)>,
) -> Option<Series> {
    if !deleted.is_empty() {
        chunks.retain(|c| {
            !deleted
                .iter()
                .any(|&(a, b)| a <= c.min_time && c.max_time <= b)
        });
    }
    if chunks.is_empty() {
        return None;
    }
    Some(Series {
        labels: s.labels.clone(),
        chunks,
        deleted,
        start_timestamps: None,
    })
}

impl Querier for Head {
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        _hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, StorageError> {
        if !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        let series = self.matching_series(matchers);
        Ok(self.snapshot(&series, mint, maxt))
    }

    fn label_names(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        if !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        if matchers.is_empty() {
            return Ok(self.index.read().label_names());
        }
        let series = self.select(mint, maxt, matchers, None)?;
        let names: std::collections::BTreeSet<&str> = series
            .iter()
            .flat_map(|s| s.labels.iter().map(|(n, _)| n))
            .collect();
        Ok(names.into_iter().map(str::to_string).collect())
    }

    fn label_values(
        &self,
        name: &str,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        if !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        if matchers.is_empty() {
            return Ok(self.index.read().label_values(name));
        }
        let mut values: Vec<String> = self
            .matching_series_in_range(matchers, mint, maxt)
            .iter()
            .filter_map(|s| s.labels.get(name).map(str::to_string))
            .collect();
        values.sort_unstable();
        values.dedup();
        Ok(values)
    }
}
