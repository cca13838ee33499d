//! Counter and gauge rate functions: `rate`, `increase`, `delta` (with
//! Prometheus's extrapolation), `irate`, `idelta`, `deriv`,
//! `predict_linear`, `resets`, `changes`, and the `anchored`/`smoothed`
//! range-selector variants.

use crate::engine::eval::{Evaluator, RSeries, RangeData, Val};
use crate::engine::QueryError;
use crate::parser::ast::Call;

use super::{map_windows, range_arg, scalar_arg, start_ts};
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
    let result = if counter {
        start_ts::counter_increase(w, None)
    } else {
        w[w.len() - 1].1 - w[0].1
    };
    Some(extrapolate(
        w,
        result,
        range_start,
        range_end,
        range,
        counter,
        is_rate,
    ))
}

/// Scales a window's `result` (its increase or delta) to the whole range,
/// Prometheus's extrapolation. `w` has at least two samples.
fn extrapolate(
    w: &[(i64, f64)],
    result: f64,
    range_start: i64,
    range_end: i64,
    range: i64,
    counter: bool,
    is_rate: bool,
) -> f64 {
    let first = w[0];
    let last = w[w.len() - 1];
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
    result * factor
}

/// `rate`/`increase` of one window with start timestamps (see
/// `start_ts`): the zero-at-the-start rule when it applies, otherwise the
/// usual extrapolation over an increase that counts start-timestamp resets.
fn counter_rate_st(
    w: &[(i64, f64)],
    sts: &[i64],
    range_start: i64,
    range_end: i64,
    range: i64,
    is_rate: bool,
) -> Option<f64> {
    if let Some(v) = start_ts::zero_start_rate(w, sts, range_start, range_end, range, is_rate) {
        return Some(v);
    }
    if w.len() < 2 {
        return None;
    }
    let result = start_ts::counter_increase(w, Some(sts));
    Some(extrapolate(
        w,
        result,
        range_start,
        range_end,
        range,
        true,
        is_rate,
    ))
}

/// The samples an anchored window works on: those in `(start, end]` plus
/// the last one at or before `start` still within the lookback. `None` when
/// the window itself is empty.
fn anchored_samples(
    pts: &[(i64, f64)],
    start: i64,
    end: i64,
    lookback: i64,
) -> Option<&[(i64, f64)]> {
    let lo = pts.partition_point(|p| p.0 <= start);
    let hi = pts.partition_point(|p| p.0 <= end);
    if hi == lo {
        return None;
    }
    let from = if lo > 0 && start - pts[lo - 1].0 < lookback {
        lo - 1
    } else {
        lo
    };
    Some(&pts[from..hi])
}

/// Value of the series at `x`, linearly interpolated between the
/// neighbouring samples, or the nearest sample when `x` is outside them.
/// `vals` are the values to interpolate (counter-adjusted or raw).
pub(crate) fn interpolate(pts: &[(i64, f64)], vals: &[f64], x: i64) -> Option<f64> {
    let idx = pts.partition_point(|p| p.0 <= x);
    match (idx.checked_sub(1), pts.get(idx)) {
        (Some(b), _) if pts[b].0 == x => Some(vals[b]),
        (Some(b), Some(a)) => {
            let frac = (x - pts[b].0) as f64 / (a.0 - pts[b].0) as f64;
            Some(vals[b] + (vals[idx] - vals[b]) * frac)
        }
        (Some(b), None) => Some(vals[b]),
        (None, Some(_)) => Some(vals[idx]),
        (None, None) => None,
    }
}

/// Counter values with every reset compensated, so the sequence never
/// decreases because of a reset.
fn counter_adjusted(pts: &[(i64, f64)]) -> Vec<f64> {
    let mut out = Vec::with_capacity(pts.len());
    let mut offset = 0.0;
    let mut prev = f64::NAN;
    for &(_, v) in pts {
        if v < prev {
            offset += prev;
        }
        prev = v;
        out.push(v + offset);
    }
    out
}

/// `rate`/`increase`/`delta` over `anchored` windows (no extrapolation:
/// the change from the sample anchoring the window start to the last one)
/// or `smoothed` windows (the change between values interpolated at both
/// window ends).
fn extended(ev: &Evaluator<'_>, rd: &RangeData, counter: bool, is_rate: bool) -> Vec<RSeries> {
    let lookback = ev.opts.lookback_delta_ms;
    let secs = rd.range as f64 / 1000.0;
    let mut out = Vec::new();
    rd.for_each(ev, |labels, _, pts| {
        let vals: Vec<f64> = if counter {
            counter_adjusted(pts)
        } else {
            pts.iter().map(|p| p.1).collect()
        };
        let mut res = Vec::new();
        for (step, &end) in rd.refs.iter().enumerate() {
            if !ev.tick_or_defer(1) {
                break;
            }
            let start = end - rd.range;
            let delta = if rd.smoothed {
                // Data only before or only after the window gives nothing.
                let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
                    continue;
                };
                if last.0 < start || first.0 > end {
                    continue;
                }
                match (interpolate(pts, &vals, start), interpolate(pts, &vals, end)) {
                    (Some(a), Some(b)) => b - a,
                    _ => continue,
                }
            } else {
                let Some(w) = anchored_samples(pts, start, end, lookback) else {
                    continue;
                };
                let mut d = w[w.len() - 1].1 - w[0].1;
                if counter {
                    let mut prev = w[0].1;
                    for &(_, v) in &w[1..] {
                        if v < prev {
                            d += prev;
                        }
                        prev = v;
                    }
                }
                d
            };
            res.push((ev.ts(step), if is_rate { delta / secs } else { delta }));
        }
        if !res.is_empty() {
            out.push(RSeries {
                labels: labels.clone(),
                drop_name: true,
                points: res,
            });
        }
    });
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
    for l in rd.labels() {
        if let Some(name) = l.metric_name() {
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
            } else if counter {
                start_ts::map_windows_st(ev, &rd, |w, sts, end| match sts {
                    Some(sts) => counter_rate_st(w, sts, end - range, end, range, is_rate),
                    None => extrapolated(w, end - range, end, range, true, is_rate),
                })
            } else {
                map_windows(ev, &rd, false, |w, _, end| {
                    extrapolated(w, end - range, end, range, false, is_rate)
                })
            }
        }
        "irate" => start_ts::map_windows_st(ev, &rd, |w, sts, _| {
            let n = w.len();
            if n < 2 {
                return None;
            }
            let (prev, last) = (w[n - 2], w[n - 1]);
            let dt = last.0 - prev.0;
            if dt == 0 {
                return None;
            }
            // Only the last pair matters: a reset there means the counter
            // grew from 0 to the last value.
            let v = if start_ts::is_reset(&w[n - 2..], sts.map(|s| &s[n - 2..]), 1) {
                last.1
            } else {
                last.1 - prev.1
            };
            Some(v / (dt as f64 / 1000.0))
        }),
        "idelta" => map_windows(ev, &rd, false, |w, _, _| {
            if w.len() < 2 {
                return None;
            }
            let last = w[w.len() - 1];
            let prev = w[w.len() - 2];
            if last.0 == prev.0 {
                return None;
            }
            Some(last.1 - prev.1)
        }),
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
                start_ts::map_windows_st(ev, &rd, |w, sts, _| {
                    Some(
                        (1..w.len())
                            .filter(|&i| start_ts::is_reset(w, sts, i))
                            .count() as f64,
                    )
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

/// `changes`/`resets` over anchored windows: the sample anchoring the
/// window start takes part in the count.
fn anchored_count(
    ev: &Evaluator<'_>,
    rd: &RangeData,
    f: impl Fn(f64, f64) -> bool,
) -> Vec<RSeries> {
    let lookback = ev.opts.lookback_delta_ms;
    let mut out = Vec::new();
    rd.for_each(ev, |labels, _, pts| {
        let mut res = Vec::new();
        for (step, &end) in rd.refs.iter().enumerate() {
            if !ev.tick_or_defer(1) {
                break;
            }
            let Some(w) = anchored_samples(pts, end - rd.range, end, lookback) else {
                continue;
            };
            let n = w.windows(2).filter(|p| f(p[0].1, p[1].1)).count();
            res.push((ev.ts(step), n as f64));
        }
        if !res.is_empty() {
            out.push(RSeries {
                labels: labels.clone(),
                drop_name: true,
                points: res,
            });
        }
    });
    out
}
