//! PromQL function implementations, split by family, and the dispatch the
//! engine calls. Signatures (argument and return types, experimental flags)
//! come from the parser's table (`crate::parser::functions`).
//!
//! Invariant: every function in that table is implemented here (start
//! timestamps: `start_ts.rs`); results of functions
//! that change a sample's meaning are flagged for `__name__` removal
//! (delayed until the end of evaluation).

pub mod fmt;
mod histogram;
mod info;
mod label;
mod math;
mod over_time;
mod rate;
mod sort;
mod start_ts;
mod time;

use crate::engine::QueryError;
use crate::engine::{eval::Evaluator, eval::RSeries, eval::RangeData, eval::Val};
use crate::parser::ast::{Call, Expr, ValueType};

/// Result type of a call (vector for unknown names; those fail later).
/// Signatures live in the parser's table, the single source of truth.
pub(crate) fn return_type(name: &str) -> ValueType {
    crate::parser::functions::lookup(name).map_or(ValueType::Vector, |f| f.return_type)
}

/// Feature gates and names the parser may have let through.
pub(crate) fn check_expr(e: &Expr, experimental: bool) -> Result<(), QueryError> {
    use crate::parser::ast::AggregateOp;
    match e {
        Expr::Call(c) => {
            let Some(f) = crate::parser::functions::lookup(&c.func) else {
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
        for (step, w, _) in crate::engine::eval::Windows::checked(ev, pts, &rd.refs, rd.range) {
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
    if let Some(v) = start_ts::eval(ev, c)? {
        return Ok(v);
    }
    if crate::parser::functions::lookup(name).is_some() {
        // Every function in the parser's table has an implementation above;
        // reaching this is a bug in this crate, not in the query.
        return Err(QueryError::Internal(format!(
            "function \"{name}\" is in the function table but has no implementation"
        )));
    }
    Err(QueryError::bad(format!(
        "unknown function with name \"{name}\""
    )))
}
