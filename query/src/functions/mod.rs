//! PromQL functions: the signature table the engine checks calls against,
//! and the implementations, split by family.
//!
//! Invariant: every function listed in [`FUNCTIONS`] has an implementation
//! in [`eval_call`]; results of functions that change a sample's meaning are
//! flagged for `__name__` removal (delayed until the end of evaluation).

pub mod fmt;
mod histogram;
mod info;
mod label;
mod math;
mod over_time;
mod rate;
mod sort;
mod time;

use crate::engine::QueryError;
use crate::engine::{eval::Evaluator, eval::RSeries, eval::RangeData, eval::Val};
use crate::parser::ast::{Call, Expr, ValueType};

/// Argument kinds of a function signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    Scalar,
    Vector,
    Matrix,
    String,
}

/// One function's signature.
#[derive(Debug, Clone, Copy)]
pub struct FunctionSig {
    pub name: &'static str,
    pub args: &'static [ArgType],
    /// Trailing arguments that may be left out (`round(v)`, `year()`), or,
    /// for variadic functions, that may repeat (-1: any number).
    pub optional: i32,
    pub ret: ValueType,
    pub experimental: bool,
}

use ArgType::{Matrix as M, Scalar as S, String as T, Vector as V};

const fn sig(
    name: &'static str,
    args: &'static [ArgType],
    optional: i32,
    ret: ValueType,
    experimental: bool,
) -> FunctionSig {
    FunctionSig {
        name,
        args,
        optional,
        ret,
        experimental,
    }
}

const VEC: ValueType = ValueType::Vector;
const SCA: ValueType = ValueType::Scalar;

/// Every function the engine implements.
pub const FUNCTIONS: &[FunctionSig] = &[
    sig("abs", &[V], 0, VEC, false),
    sig("absent", &[V], 0, VEC, false),
    sig("absent_over_time", &[M], 0, VEC, false),
    sig("acos", &[V], 0, VEC, false),
    sig("acosh", &[V], 0, VEC, false),
    sig("asin", &[V], 0, VEC, false),
    sig("asinh", &[V], 0, VEC, false),
    sig("atan", &[V], 0, VEC, false),
    sig("atanh", &[V], 0, VEC, false),
    sig("avg_over_time", &[M], 0, VEC, false),
    sig("ceil", &[V], 0, VEC, false),
    sig("changes", &[M], 0, VEC, false),
    sig("clamp", &[V, S, S], 0, VEC, false),
    sig("clamp_max", &[V, S], 0, VEC, false),
    sig("clamp_min", &[V, S], 0, VEC, false),
    sig("cos", &[V], 0, VEC, false),
    sig("cosh", &[V], 0, VEC, false),
    sig("count_over_time", &[M], 0, VEC, false),
    sig("days_in_month", &[V], 1, VEC, false),
    sig("day_of_month", &[V], 1, VEC, false),
    sig("day_of_week", &[V], 1, VEC, false),
    sig("day_of_year", &[V], 1, VEC, false),
    sig("deg", &[V], 0, VEC, false),
    sig("delta", &[M], 0, VEC, false),
    sig("deriv", &[M], 0, VEC, false),
    sig("double_exponential_smoothing", &[M, S, S], 0, VEC, true),
    sig("end", &[], 0, SCA, true),
    sig("exp", &[V], 0, VEC, false),
    sig("first_over_time", &[M], 0, VEC, false),
    sig("floor", &[V], 0, VEC, false),
    sig("histogram_avg", &[V], 0, VEC, false),
    sig("histogram_count", &[V], 0, VEC, false),
    sig("histogram_fraction", &[S, S, V], 0, VEC, false),
    sig("histogram_quantile", &[S, V], 0, VEC, false),
    sig("histogram_quantiles", &[V, T, S], -1, VEC, true),
    sig("histogram_stddev", &[V], 0, VEC, false),
    sig("histogram_stdvar", &[V], 0, VEC, false),
    sig("histogram_sum", &[V], 0, VEC, false),
    sig("hour", &[V], 1, VEC, false),
    sig("idelta", &[M], 0, VEC, false),
    sig("increase", &[M], 0, VEC, false),
    sig("info", &[V, V], 1, VEC, true),
    sig("irate", &[M], 0, VEC, false),
    sig("label_join", &[V, T, T, T], -1, VEC, false),
    sig("label_replace", &[V, T, T, T, T], 0, VEC, false),
    sig("last_over_time", &[M], 0, VEC, false),
    sig("ln", &[V], 0, VEC, false),
    sig("log10", &[V], 0, VEC, false),
    sig("log2", &[V], 0, VEC, false),
    sig("mad_over_time", &[M], 0, VEC, true),
    sig("max_of", &[S, S], 0, SCA, true),
    sig("max_over_time", &[M], 0, VEC, false),
    sig("min_of", &[S, S], 0, SCA, true),
    sig("min_over_time", &[M], 0, VEC, false),
    sig("minute", &[V], 1, VEC, false),
    sig("month", &[V], 1, VEC, false),
    sig("pi", &[], 0, SCA, false),
    sig("predict_linear", &[M, S], 0, VEC, false),
    sig("present_over_time", &[M], 0, VEC, false),
    sig("quantile_over_time", &[S, M], 0, VEC, false),
    sig("rad", &[V], 0, VEC, false),
    sig("range", &[], 0, SCA, true),
    sig("rate", &[M], 0, VEC, false),
    sig("resets", &[M], 0, VEC, false),
    sig("round", &[V, S], 1, VEC, false),
    sig("scalar", &[V], 0, SCA, false),
    sig("sgn", &[V], 0, VEC, false),
    sig("sin", &[V], 0, VEC, false),
    sig("sinh", &[V], 0, VEC, false),
    sig("sort", &[V], 0, VEC, false),
    sig("sort_by_label", &[V, T], -1, VEC, true),
    sig("sort_by_label_desc", &[V, T], -1, VEC, true),
    sig("sort_desc", &[V], 0, VEC, false),
    sig("sqrt", &[V], 0, VEC, false),
    sig("start", &[], 0, SCA, true),
    sig("stddev_over_time", &[M], 0, VEC, false),
    sig("stdvar_over_time", &[M], 0, VEC, false),
    sig("step", &[], 0, SCA, true),
    sig("sum_over_time", &[M], 0, VEC, false),
    sig("tan", &[V], 0, VEC, false),
    sig("tanh", &[V], 0, VEC, false),
    sig("time", &[], 0, SCA, false),
    sig("timestamp", &[V], 0, VEC, false),
    sig("ts_of_first_over_time", &[M], 0, VEC, true),
    sig("ts_of_last_over_time", &[M], 0, VEC, true),
    sig("ts_of_max_over_time", &[M], 0, VEC, true),
    sig("ts_of_min_over_time", &[M], 0, VEC, true),
    sig("vector", &[S], 0, VEC, false),
    sig("year", &[V], 1, VEC, false),
];

pub fn lookup(name: &str) -> Option<&'static FunctionSig> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// Result type of a call (vector for unknown names; those fail later).
pub(crate) fn return_type(name: &str) -> ValueType {
    lookup(name).map_or(ValueType::Vector, |f| f.ret)
}

/// Feature gates and names the parser may have let through.
pub(crate) fn check_expr(e: &Expr, experimental: bool) -> Result<(), QueryError> {
    use crate::parser::ast::AggregateOp;
    match e {
        Expr::Call(c) => {
            let Some(f) = lookup(&c.func) else {
                return Err(QueryError::bad(format!(
                    "unknown function with name \"{}\"",
                    c.func
                )));
            };
            if f.experimental && !experimental {
                return Err(QueryError::bad(format!(
                    "function \"{}\" is not enabled",
                    c.func
                )));
            }
            c.args.iter().try_for_each(|a| check_expr(a, experimental))
        }
        Expr::Aggregate(a) => {
            if !experimental && matches!(a.op, AggregateOp::Limitk | AggregateOp::LimitRatio) {
                return Err(QueryError::bad(format!(
                    "{}() is experimental and must be enabled with --enable-feature=promql-experimental-functions",
                    a.op.as_str()
                )));
            }
            if let Some(p) = &a.param {
                check_expr(p, experimental)?;
            }
            check_expr(&a.expr, experimental)
        }
        Expr::Paren(p) => check_expr(&p.expr, experimental),
        Expr::Unary(u) => check_expr(&u.expr, experimental),
        Expr::Binary(b) => {
            check_expr(&b.lhs, experimental)?;
            check_expr(&b.rhs, experimental)
        }
        Expr::Subquery(s) => check_expr(&s.expr, experimental),
        _ => Ok(()),
    }
}

/// Evaluates a range-vector argument (matrix selector or subquery).
pub(crate) fn range_arg(
    ev: &mut Evaluator<'_>,
    e: &Expr,
    func: &str,
) -> Result<RangeData, QueryError> {
    match crate::engine::eval::unparen(e) {
        Expr::MatrixSelector(ms) => ev.eval_matrix_selector(ms, Some(func)),
        Expr::Subquery(sq) => ev.eval_subquery(sq),
        _ => Err(QueryError::bad(format!(
            "expected type range vector in call to function \"{func}\""
        ))),
    }
}

pub(crate) fn vector_arg(
    ev: &mut Evaluator<'_>,
    e: &Expr,
    func: &str,
) -> Result<Vec<RSeries>, QueryError> {
    match ev.eval(e)? {
        Val::Vector(v) => Ok(v),
        _ => Err(QueryError::bad(format!(
            "expected type instant vector in call to function \"{func}\""
        ))),
    }
}

pub(crate) fn scalar_arg(
    ev: &mut Evaluator<'_>,
    e: &Expr,
    func: &str,
) -> Result<Vec<f64>, QueryError> {
    match ev.eval(e)? {
        Val::Scalar(v) => Ok(v),
        _ => Err(QueryError::bad(format!(
            "expected type scalar in call to function \"{func}\""
        ))),
    }
}

pub(crate) fn string_arg(
    ev: &mut Evaluator<'_>,
    e: &Expr,
    func: &str,
) -> Result<String, QueryError> {
    match ev.eval(e)? {
        Val::String(s) => Ok(s),
        _ => Err(QueryError::bad(format!(
            "expected type string in call to function \"{func}\""
        ))),
    }
}

/// Applies `f` to each window of each series of a range argument; the
/// output is step-aligned. `keep_name` leaves `__name__` in place.
pub(crate) fn map_windows(
    ev: &Evaluator<'_>,
    rd: &RangeData,
    keep_name: bool,
    mut f: impl FnMut(&[(i64, f64)], usize, i64) -> Option<f64>,
) -> Vec<RSeries> {
    let mut out = Vec::new();
    rd.for_each(ev, |labels, drop_name, pts| {
        let mut res = Vec::new();
        for (step, w, _) in crate::engine::eval::Windows::new(pts, &rd.refs, rd.range) {
            if let Some(v) = f(w, step, rd.refs[step]) {
                res.push((ev.ts(step), v));
            }
        }
        if !res.is_empty() {
            out.push(RSeries {
                labels: labels.clone(),
                drop_name: drop_name || !keep_name,
                points: res,
            });
        }
    });
    out
}

/// Dispatches a function call.
pub(crate) fn eval_call(ev: &mut Evaluator<'_>, c: &Call) -> Result<Val, QueryError> {
    let name = c.func.as_str();
    if let Some(v) = math::eval(ev, c)? {
        return Ok(v);
    }
    if let Some(v) = time::eval(ev, c)? {
        return Ok(v);
    }
    if let Some(v) = rate::eval(ev, c)? {
        return Ok(v);
    }
    if let Some(v) = over_time::eval(ev, c)? {
        return Ok(v);
    }
    if let Some(v) = label::eval(ev, c)? {
        return Ok(v);
    }
    if let Some(v) = sort::eval(ev, c)? {
        return Ok(v);
    }
    if let Some(v) = histogram::eval(ev, c)? {
        return Ok(v);
    }
    if let Some(v) = info::eval(ev, c)? {
        return Ok(v);
    }
    Err(QueryError::bad(format!(
        "unknown function with name \"{name}\""
    )))
}
