//! The PromQL evaluator.
//!
//! Owns: turning a parsed [`Expr`] plus a [`Queryable`] into a [`QueryResult`]
//! with Prometheus 3.x semantics (5m lookback over left-open windows,
//! staleness markers, `offset`/`@`, subqueries aligned to absolute multiples of
//! their step, delayed `__name__` removal, Prometheus's error and annotation
//! texts).
//!
//! Evaluation is range-at-once: every node is evaluated for all steps of the
//! query in one call, so each selector decodes its series once and range
//! functions slide a window over the decoded samples. Instant queries are
//! range queries with one step.
//!
//! Invariants: intermediate vectors keep `__name__` with a "drop" flag until
//! the end of evaluation; only the final result loses it. Range-query output
//! is sorted by labels.

pub(crate) mod aggregate;
mod annotations;
pub(crate) mod binary;
mod error;
pub(crate) mod eval;
mod value;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub use annotations::{Annotation, AnnotationKind, Annotations};
pub use error::QueryError;
pub use value::{QueryResult, QueryStats, Sample, SeriesResult, Value};

use crate::parser::ast::Expr;
use crate::queryable::Queryable;

/// Engine settings. Defaults match Prometheus's.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for the latest sample.
    pub lookback_delta_ms: i64,
    /// Step of subqueries written without one (`x[5m:]`).
    pub default_subquery_step_ms: i64,
    /// Most samples a query may hold in memory at once.
    pub max_samples: usize,
    pub timeout: Duration,
    /// Allow functions and aggregators Prometheus marks experimental.
    pub experimental_functions: bool,
    /// Keep `__name__` (flagged) until the end of evaluation, as Prometheus 3
    /// does with its delayed name removal feature.
    pub delayed_name_removal: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 300_000,
            default_subquery_step_ms: 60_000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            experimental_functions: false,
            delayed_name_removal: true,
        }
    }
}

/// A PromQL engine. Cheap to share; holds only its options.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
    /// Fill [`QueryStats::queryable_samples_per_step`].
    per_step_stats: bool,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine {
            opts,
            per_step_stats: false,
        }
    }

    /// This engine, also counting queryable samples per step (what the
    /// HTTP API's `stats=all` shows); costs one counter per step.
    pub fn with_per_step_stats(mut self, on: bool) -> Self {
        self.per_step_stats = on;
        self
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `expr` at `ts_ms`.
    pub fn instant_query(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        ts_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        self.instant_query_cancellable(q, expr, ts_ms, None)
    }

    /// As [`Engine::instant_query`]; setting `cancel` makes the query stop
    /// with [`QueryError::Canceled`] at its next check.
    pub fn instant_query_cancellable(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        ts_ms: i64,
        cancel: Option<&AtomicBool>,
    ) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let mut ev = eval::Evaluator::new(q, &self.opts, ts_ms, ts_ms, 0, started);
        ev.cancel = cancel;
        if self.per_step_stats {
            ev.enable_per_step_stats();
        }
        ev.check_expr(expr)?;
        let prepared = Instant::now();
        let val = ev.eval_top(expr)?;
        let value = ev.finish_instant(val, ts_ms)?;
        Ok(ev.into_result(value, started, prepared))
    }

    /// Evaluates `expr` at `start_ms, start_ms + step_ms, …` up to `end_ms`
    /// inclusive. The result is always a matrix sorted by labels.
    pub fn range_query(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        self.range_query_cancellable(q, expr, start_ms, end_ms, step_ms, None)
    }

    /// As [`Engine::range_query`], with a cancellation flag.
    pub fn range_query_cancellable(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        cancel: Option<&AtomicBool>,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::bad(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::bad(
                "end timestamp must not be before start time",
            ));
        }
        if end_ms.saturating_sub(start_ms) / step_ms >= self.opts.max_samples as i64 {
            return Err(QueryError::TooManySamples {
                phase: "query execution",
            });
        }
        let started = Instant::now();
        let mut ev = eval::Evaluator::new(q, &self.opts, start_ms, end_ms, step_ms, started);
        ev.cancel = cancel;
        if self.per_step_stats {
            ev.enable_per_step_stats();
        }
        ev.check_expr(expr)?;
        let ty = eval::expr_type(expr);
        if !matches!(
            ty,
            crate::parser::ast::ValueType::Scalar | crate::parser::ast::ValueType::Vector
        ) {
            return Err(QueryError::bad(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                ty.as_str()
            )));
        }
        let prepared = Instant::now();
        let val = ev.eval_top(expr)?;
        let value = ev.finish_range(val)?;
        Ok(ev.into_result(value, started, prepared))
    }
}

#[cfg(test)]
mod tests;
