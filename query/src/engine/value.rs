//! Query results as returned to callers: scalars, strings, instant vectors and
//! matrices, plus the per-query statistics.
//!
//! Invariants: a `Matrix` returned by a range query is sorted by labels and
//! has no two series with the same label set; points inside a series are in
//! strictly increasing time order. Only float samples exist today; a histogram
//! variant will be added as a separate point type next to `points`, so callers
//! should match on `Value` rather than assume its shape.

use std::time::Duration;

use pharos_storage::labels::Labels;

use super::annotations::Annotations;

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
}

/// One series of a matrix: float points `(t_ms, value)` in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesResult {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

/// The value of an evaluated query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, v: String },
    Vector(Vec<Sample>),
    Matrix(Vec<SeriesResult>),
}

impl Value {
    /// Prometheus's result type name (`resultType` in the HTTP API).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// What one query cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryStats {
    /// Series returned by `Queryable::select`, summed over selectors.
    pub series_selected: usize,
    /// Samples decoded from storage, summed over selectors.
    pub samples_loaded: usize,
    /// Largest number of samples held at once (what `max_samples` bounds).
    pub peak_samples: usize,
    /// Resolving durations and `@` modifiers.
    pub prepare_time: Duration,
    /// Reading from the queryable (included in `eval_time`).
    pub select_time: Duration,
    /// Whole evaluation.
    pub eval_time: Duration,
    /// Prometheus's `totalQueryableSamples`: at every step, each sample an
    /// instant selector picks plus each sample in the window a range
    /// function reads (or, for an instant query of a matrix selector, the
    /// samples returned). Samples read inside a subquery are counted only
    /// through the windows over its result; an instant query of a subquery
    /// counts those its inner expression read.
    pub total_queryable_samples: u64,
    /// The same per step as `(step timestamp ms, samples)`
    /// (`totalQueryableSamplesPerStep` of the API's `stats=all`). Empty
    /// unless enabled with [`crate::engine::Engine::with_per_step_stats`].
    pub queryable_samples_per_step: Vec<(i64, u64)>,
}

/// A finished query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub value: Value,
    pub annotations: Annotations,
    pub stats: QueryStats,
}
