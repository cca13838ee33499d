//! Counter and gauge rate functions: `rate`, `increase`, `delta` (with
//! Prometheus's extrapolation), `irate`, `idelta`, `deriv`,
//! `predict_linear`, `resets`, `changes`, and the `anchored`/`smoothed`
//! range-selector variants.

use crate::engine::eval::{Evaluator, RSeries, RangeData, Val};
use crate::engine::QueryError;
use crate::parser::ast::Call;

use super::{map_windows, range_arg, scalar_arg};
use crate::engine::aggregate::kahan_inc;

/// Prometheus's `extrapolatedRate` for float samples.
fn extrapolated(
    w: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    range: i64,
    counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let first = w[0];
    let last = w[w.len() - 1];
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = first.1;
        for &(_, v) in &w[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg = sampled / (w.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if counter {
        // Counters cannot go below zero: don't extrapolate past the point
        // where the series would have been zero.
        let mut to_zero = to_start;
        if result > 0.0 && first.1 >= 0.0 {
            to_zero = sampled * (first.1 / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Value of a series at time `t` for anchored/smoothed windows: the last
/// sample at or before `t` (anchored), or linear interpolation between the
/// neighbours (smoothed).
fn boundary_value(
    pts: &[(i64, f64)],
    t: i64,
    smoothed: bool,
    lookback: i64,
    counter: bool,
) -> Option<f64> {
    let idx = pts.partition_point(|p| p.0 <= t);
    let before = if idx > 0 { Some(pts[idx - 1]) } else { None };
    let after = pts.get(idx).copied();
    match (before, after) {
        (Some(b), _) if b.0 == t => Some(b.1),
        (Some(b), Some(a)) if smoothed => {
            if t - b.0 > lookback && a.0 - t > lookback {
                return None;
            }
            let mut av = a.1;
            if counter && a.1 < b.1 {
                // A reset between the two: interpolate from zero.
                av += b.1;
            }
            let frac = (t - b.0) as f64 / (a.0 - b.0) as f64;
            Some(b.1 + (av - b.1) * frac)
        }
        (Some(b), _) => {
            if t - b.0 > lookback {
                None
            } else {
                Some(b.1)
            }
        }
        (None, Some(a)) if smoothed => {
            if a.0 - t > lookback {
                None
            } else {
                Some(a.1)
            }
        }
        _ => None,
    }
}

/// `rate`/`increase`/`delta` over anchored or smoothed windows: the change
/// between the series' values at the window's two ends, with counter resets
/// inside the window added back.
fn extended(ev: &Evaluator<'_>, rd: &RangeData, counter: bool, is_rate: bool) -> Vec<RSeries> {
    let lookback = ev.opts.lookback_delta_ms;
    let mut out = Vec::new();
    for s in &rd.series {
        let pts = &s.points;
        let mut res = Vec::new();
        for (step, &end) in rd.refs.iter().enumerate() {
            let start = end - rd.range;
            let (Some(v0), Some(v1)) = (
                boundary_value(pts, start, rd.smoothed, lookback, counter),
                boundary_value(pts, end, rd.smoothed, lookback, counter),
            ) else {
                continue;
            };
            let lo = pts.partition_point(|p| p.0 <= start);
            let hi = pts.partition_point(|p| p.0 <= end);
            let inner = &pts[lo..hi];
            let mut delta = v1 - v0;
            if counter {
                let mut prev = v0;
                for &(_, v) in inner {
                    if v < prev {
                        delta += prev;
                    }
                    prev = v;
                }
                if rd.smoothed && !inner.is_empty() && v1 < prev {
                    delta += prev;
                }
            }
            if inner.is_empty() && !rd.smoothed {
                // Anchored needs at least one sample in the window itself.
                let before = pts.partition_point(|p| p.0 <= start);
                if before == 0 || pts[before - 1].0 != start {
                    continue;
                }
            }
            if is_rate {
                delta /= rd.range as f64 / 1000.0;
            }
            res.push((ev.ts(step), delta));
        }
        if !res.is_empty() {
            out.push(RSeries {
                labels: s.labels.clone(),
                drop_name: true,
                points: res,
            });
        }
    }
    out
}

/// Least-squares slope and intercept with x in seconds relative to
/// `intercept_t`, with compensated sums.
pub(crate) fn linear_regression(w: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = w[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in w.iter().enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

const COUNTER_SUFFIXES: [&str; 4] = ["_total", "_sum", "_count", "_bucket"];

fn counter_info(ev: &mut Evaluator<'_>, rd: &RangeData) {
    for s in &rd.series {
        if let Some(name) = s.labels.metric_name() {
            if !COUNTER_SUFFIXES.iter().any(|suf| name.ends_with(suf)) {
                ev.annos.info(
                    format!(
                        "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {}",
                        pharos_storage::labels::go_quote(name)
                    ),
                    rd.pos,
                );
            }
        }
    }
}

const ANCHORED_OK: [&str; 5] = ["changes", "delta", "increase", "rate", "resets"];
const SMOOTHED_OK: [&str; 3] = ["delta", "increase", "rate"];

/// Rejects `anchored`/`smoothed` on functions that don't support them.
pub(crate) fn check_extended(name: &str, rd: &RangeData) -> Result<(), QueryError> {
    if rd.anchored && !ANCHORED_OK.contains(&name) {
        return Err(QueryError::bad(format!(
            "anchored modifier can only be used with: changes, delta, increase, rate, resets - not with {name}"
        )));
    }
    if rd.smoothed && !SMOOTHED_OK.contains(&name) {
        return Err(QueryError::bad(format!(
            "smoothed modifier can only be used with: delta, increase, rate - not with {name}"
        )));
    }
    Ok(())
}

pub(crate) fn eval(ev: &mut Evaluator<'_>, c: &Call) -> Result<Option<Val>, QueryError> {
    let name = c.func.as_str();
    if !matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "predict_linear"
            | "resets"
            | "changes"
    ) {
        return Ok(None);
    }
    let Some(arg0) = c.args.first() else {
        return Err(QueryError::bad(format!(
            "wrong number of arguments for function \"{name}\""
        )));
    };
    let rd = range_arg(ev, arg0, name)?;
    check_extended(name, &rd)?;
    let range = rd.range;
    let out = match name {
        "rate" | "increase" | "delta" => {
            let counter = name != "delta";
            let is_rate = name == "rate";
            if counter {
                counter_info(ev, &rd);
            }
            if rd.anchored || rd.smoothed {
                extended(ev, &rd, counter, is_rate)
            } else {
                map_windows(ev, &rd, false, |w, _, end| {
                    extrapolated(w, end - range, end, range, counter, is_rate)
                })
            }
        }
        "irate" | "idelta" => {
            let is_rate = name == "irate";
            map_windows(ev, &rd, false, |w, _, _| {
                if w.len() < 2 {
                    return None;
                }
                let last = w[w.len() - 1];
                let prev = w[w.len() - 2];
                let mut v = if is_rate && last.1 < prev.1 {
                    last.1
                } else {
                    last.1 - prev.1
                };
                let dt = last.0 - prev.0;
                if dt == 0 {
                    return None;
                }
                if is_rate {
                    v /= dt as f64 / 1000.0;
                }
                Some(v)
            })
        }
        "deriv" => map_windows(ev, &rd, false, |w, _, _| {
            if w.len() < 2 {
                return None;
            }
            Some(linear_regression(w, w[0].0).0)
        }),
        "predict_linear" => {
            let Some(arg1) = c.args.get(1) else {
                return Err(QueryError::bad(
                    "wrong number of arguments for function \"predict_linear\"",
                ));
            };
            let dur = scalar_arg(ev, arg1, name)?;
            let steps: Vec<i64> = (0..ev.nsteps()).map(|i| ev.ts(i)).collect();
            map_windows(ev, &rd, false, |w, step, _| {
                if w.len() < 2 {
                    return None;
                }
                let (slope, icept) = linear_regression(w, steps[step]);
                Some(slope * dur[step] + icept)
            })
        }
        "resets" => {
            if rd.anchored {
                anchored_count(ev, &rd, |a, b| b < a)
            } else {
                map_windows(ev, &rd, false, |w, _, _| {
                    Some(w.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64)
                })
            }
        }
        _ => {
            let changed = |a: f64, b: f64| a != b && !(a.is_nan() && b.is_nan());
            if rd.anchored {
                anchored_count(ev, &rd, changed)
            } else {
                map_windows(ev, &rd, false, |w, _, _| {
                    Some(w.windows(2).filter(|p| changed(p[0].1, p[1].1)).count() as f64)
                })
            }
        }
    };
    Ok(Some(Val::Vector(out)))
}

/// `changes`/`resets` over anchored windows: the sample at or before the
/// window start (within the lookback) takes part in the count.
fn anchored_count(
    ev: &Evaluator<'_>,
    rd: &RangeData,
    f: impl Fn(f64, f64) -> bool,
) -> Vec<RSeries> {
    let lookback = ev.opts.lookback_delta_ms;
    let mut out = Vec::new();
    for s in &rd.series {
        let pts = &s.points;
        let mut res = Vec::new();
        for (step, &end) in rd.refs.iter().enumerate() {
            let start = end - rd.range;
            let lo = pts.partition_point(|p| p.0 <= start);
            let hi = pts.partition_point(|p| p.0 <= end);
            let from = if lo > 0 && start - pts[lo - 1].0 <= lookback {
                lo - 1
            } else {
                lo
            };
            if from >= hi {
                continue;
            }
            let w = &pts[from..hi];
            let n = w.windows(2).filter(|p| f(p[0].1, p[1].1)).count();
            res.push((ev.ts(step), n as f64));
        }
        if !res.is_empty() {
            out.push(RSeries {
                labels: s.labels.clone(),
                drop_name: true,
                points: res,
            });
        }
    }
    out
}
