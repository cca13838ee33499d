//! The seam the PromQL engine reads series through.
//!
//! A single node implements it with storage's querier (head + blocks); the
//! cluster fan-out and test fixtures implement it directly. Contract: the same
//! as [`pharos_storage::querier::Querier`] (series sorted by labels, one per
//! label set, chunks overlapping `[mint, maxt]`, a snapshot). A source that
//! knows samples' start timestamps returns them in
//! `Series::start_timestamps` (the head does; blocks and sources that leave
//! it `None` make `rate`, `increase`, `irate`, `resets` and
//! `start_timestamp()` behave as for samples without one).

use pharos_storage::labels::Matcher;
use pharos_storage::querier::{Querier, SelectHints};
use pharos_storage::series::Series;

use crate::engine::QueryError;

/// Source of series for the engine.
pub trait Queryable: Send + Sync {
    /// Series matching all `matchers` with data in `[mint, maxt]` (ms,
    /// inclusive).
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, QueryError>;

    /// As [`Queryable::select`], plus warnings about data that could not be
    /// read (a partial response, e.g. an unreachable shard when the caller
    /// accepted partial results). The engine reports each as a query
    /// warning. Sources that never answer partially keep the default.
    fn select_with_warnings(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<(Vec<Series>, Vec<String>), QueryError> {
        Ok((self.select(mint, maxt, matchers, hints)?, Vec::new()))
    }

    fn label_names(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, QueryError>;

    fn label_values(
        &self,
        name: &str,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, QueryError>;
}

impl<T: Querier + ?Sized> Queryable for T {
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, QueryError> {
        Querier::select(self, mint, maxt, matchers, hints)
            .map_err(|e| QueryError::Storage(e.to_string()))
    }

    fn label_names(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, QueryError> {
        Querier::label_names(self, mint, maxt, matchers)
            .map_err(|e| QueryError::Storage(e.to_string()))
    }

    fn label_values(
        &self,
        name: &str,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, QueryError> {
        Querier::label_values(self, name, mint, maxt, matchers)
            .map_err(|e| QueryError::Storage(e.to_string()))
    }
}
