//! Element-wise math on instant vectors (`abs`, trig, `clamp*`, `round`, …)
//! and the scalar helpers `scalar`, `vector`, `pi`, `min_of`, `max_of`.
//!
//! Go's `math.Min`/`math.Max` propagate NaN, unlike Rust's `f64::min`/`max`;
//! the `go_*` helpers keep Prometheus's results for NaN inputs.

use crate::engine::eval::{Evaluator, RSeries, Val};
use crate::engine::QueryError;
use crate::parser::ast::Call;
use pharos_storage::labels::Labels;

use super::{scalar_arg, vector_arg};

#[inline]
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

#[inline]
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            b
        } else {
            a
        }
    } else if a > b {
        a
    } else {
        b
    }
}

fn simple(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                // 0 stays 0 and NaN stays NaN.
                v
            }
        },
        _ => return None,
    })
}

/// Maps every point; the result loses its name.
fn map_points(
    ev: &Evaluator<'_>,
    mut v: Vec<RSeries>,
    mut f: impl FnMut(f64, usize) -> Option<f64>,
) -> Vec<RSeries> {
    for s in &mut v {
        if !ev.tick_or_defer(s.points.len()) {
            break;
        }
        s.drop_name = true;
        s.points.retain_mut(|p| match f(p.1, ev.step_of(p.0)) {
            Some(x) => {
                p.1 = x;
                true
            }
            None => false,
        });
    }
    v.retain(|s| !s.points.is_empty());
    v
}

pub(crate) fn eval(ev: &mut Evaluator<'_>, c: &Call) -> Result<Option<Val>, QueryError> {
    let name = c.func.as_str();
    if let Some(f) = simple(name) {
        let arg = c.args.first().ok_or_else(|| {
            QueryError::bad(format!("wrong number of arguments for function \"{name}\""))
        })?;
        let v = vector_arg(ev, arg, name)?;
        return Ok(Some(Val::Vector(map_points(ev, v, |x, _| Some(f(x))))));
    }
    let arg = |i: usize| {
        c.args.get(i).ok_or_else(|| {
            QueryError::bad(format!("wrong number of arguments for function \"{name}\""))
        })
    };
    let res = match name {
        "clamp" => {
            let v = vector_arg(ev, arg(0)?, name)?;
            let lo = scalar_arg(ev, arg(1)?, name)?;
            let hi = scalar_arg(ev, arg(2)?, name)?;
            Val::Vector(map_points(ev, v, |x, i| {
                // An empty range yields no output at that step.
                if hi[i] < lo[i] {
                    None
                } else {
                    Some(go_max(lo[i], go_min(hi[i], x)))
                }
            }))
        }
        "clamp_min" => {
            let v = vector_arg(ev, arg(0)?, name)?;
            let lo = scalar_arg(ev, arg(1)?, name)?;
            Val::Vector(map_points(ev, v, |x, i| Some(go_max(lo[i], x))))
        }
        "clamp_max" => {
            let v = vector_arg(ev, arg(0)?, name)?;
            let hi = scalar_arg(ev, arg(1)?, name)?;
            Val::Vector(map_points(ev, v, |x, i| Some(go_min(hi[i], x))))
        }
        "round" => {
            let v = vector_arg(ev, arg(0)?, name)?;
            let to = match c.args.get(1) {
                Some(e) => scalar_arg(ev, e, name)?,
                None => vec![1.0; ev.nsteps()],
            };
            Val::Vector(map_points(ev, v, |x, i| {
                let inv = 1.0 / to[i];
                Some((x * inv + 0.5).floor() / inv)
            }))
        }
        "scalar" => {
            let v = vector_arg(ev, arg(0)?, name)?;
            let n = ev.nsteps();
            let mut vals = vec![f64::NAN; n];
            let mut counts = vec![0u32; n];
            for s in &v {
                for &(t, x) in &s.points {
                    let i = ev.step_of(t);
                    counts[i] += 1;
                    vals[i] = x;
                }
            }
            for (v, c) in vals.iter_mut().zip(counts) {
                if c != 1 {
                    *v = f64::NAN;
                }
            }
            Val::Scalar(vals)
        }
        "vector" => {
            let s = scalar_arg(ev, arg(0)?, name)?;
            let points = s
                .into_iter()
                .enumerate()
                .map(|(i, v)| (ev.ts(i), v))
                .collect();
            Val::Vector(vec![RSeries {
                labels: Labels::empty(),
                drop_name: false,
                points,
            }])
        }
        "pi" => Val::Scalar(vec![std::f64::consts::PI; ev.nsteps()]),
        "min_of" | "max_of" => {
            let a = scalar_arg(ev, arg(0)?, name)?;
            let b = scalar_arg(ev, arg(1)?, name)?;
            let f = if name == "min_of" { go_min } else { go_max };
            Val::Scalar(a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect())
        }
        _ => return Ok(None),
    };
    Ok(Some(res))
}
