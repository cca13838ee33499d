//! `*_over_time` functions over a window, `absent_over_time` and
//! `double_exponential_smoothing`.
//!
//! Sums and means use compensated (Kahan–Neumaier) summation, switching to an
//! incremental mean only when the direct sum would overflow, as Prometheus
//! does.

use crate::engine::aggregate::{kahan_inc, quantile};
use crate::engine::eval::{Evaluator, RSeries, Val};
use crate::engine::QueryError;
use crate::parser::ast::Call;

use super::fmt::{format_f6, format_g};
use super::label::absent_labels;
use super::{map_windows, range_arg, scalar_arg};

fn avg(w: &[(i64, f64)]) -> f64 {
    let (mut sum, mut c, mut mean) = (w[0].1, 0.0, 0.0);
    let mut count = 1.0;
    let mut incremental = false;
    for (i, &(_, v)) in w[1..].iter().enumerate() {
        count = (i + 2) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(v, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(v / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

fn sum(w: &[(i64, f64)]) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for &(_, v) in w {
        (s, c) = kahan_inc(v, s, c);
    }
    if s.is_infinite() {
        s
    } else {
        s + c
    }
}

fn variance(w: &[(i64, f64)]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(_, v) in w {
        count += 1.0;
        let delta = v - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (v - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}

/// Timestamp (seconds) of the extreme value: the last one among equals.
fn ts_of_extreme(w: &[(i64, f64)], max: bool) -> f64 {
    let (mut best_t, mut best) = w[0];
    for &(t, v) in &w[1..] {
        let better = if max { v >= best } else { v <= best };
        if better || best.is_nan() {
            best = v;
            best_t = t;
        }
    }
    best_t as f64 / 1000.0
}

pub(crate) fn eval(ev: &mut Evaluator<'_>, c: &Call) -> Result<Option<Val>, QueryError> {
    let name = c.func.as_str();
    let known = matches!(
        name,
        "avg_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "min_over_time"
            | "max_over_time"
            | "last_over_time"
            | "first_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "mad_over_time"
            | "present_over_time"
            | "absent_over_time"
            | "quantile_over_time"
            | "ts_of_min_over_time"
            | "ts_of_max_over_time"
            | "ts_of_first_over_time"
            | "ts_of_last_over_time"
            | "double_exponential_smoothing"
    );
    if !known {
        return Ok(None);
    }
    let wrong = || QueryError::bad(format!("wrong number of arguments for function \"{name}\""));
    // The range argument is the second one for quantile_over_time.
    let (param, range_expr) = if name == "quantile_over_time" {
        let p = scalar_arg(ev, c.args.first().ok_or_else(wrong)?, name)?;
        (Some(p), c.args.get(1).ok_or_else(wrong)?)
    } else {
        (None, c.args.first().ok_or_else(wrong)?)
    };
    let rd = range_arg(ev, range_expr, name)?;
    super::rate::check_extended(name, &rd)?;
    let out = match name {
        "avg_over_time" => map_windows(ev, &rd, false, |w, _, _| Some(avg(w))),
        "sum_over_time" => map_windows(ev, &rd, false, |w, _, _| Some(sum(w))),
        "count_over_time" => map_windows(ev, &rd, false, |w, _, _| Some(w.len() as f64)),
        "present_over_time" => map_windows(ev, &rd, false, |_, _, _| Some(1.0)),
        "min_over_time" | "max_over_time" => {
            let is_max = name == "max_over_time";
            map_windows(ev, &rd, false, |w, _, _| {
                let mut m = w[0].1;
                for &(_, v) in w {
                    if (is_max && v > m) || (!is_max && v < m) || m.is_nan() {
                        m = v;
                    }
                }
                Some(m)
            })
        }
        "last_over_time" => map_windows(ev, &rd, true, |w, _, _| w.last().map(|p| p.1)),
        "first_over_time" => map_windows(ev, &rd, true, |w, _, _| w.first().map(|p| p.1)),
        "ts_of_last_over_time" => map_windows(ev, &rd, false, |w, _, _| {
            w.last().map(|p| p.0 as f64 / 1000.0)
        }),
        "ts_of_first_over_time" => map_windows(ev, &rd, false, |w, _, _| {
            w.first().map(|p| p.0 as f64 / 1000.0)
        }),
        "ts_of_max_over_time" => {
            map_windows(ev, &rd, false, |w, _, _| Some(ts_of_extreme(w, true)))
        }
        "ts_of_min_over_time" => {
            map_windows(ev, &rd, false, |w, _, _| Some(ts_of_extreme(w, false)))
        }
        "stdvar_over_time" => map_windows(ev, &rd, false, |w, _, _| Some(variance(w))),
        "stddev_over_time" => map_windows(ev, &rd, false, |w, _, _| Some(variance(w).sqrt())),
        "mad_over_time" => {
            let mut buf = Vec::new();
            map_windows(ev, &rd, false, |w, _, _| {
                // A NaN makes the deviation undefined rather than being
                // sorted aside by the median.
                if w.iter().any(|p| p.1.is_nan()) {
                    return Some(f64::NAN);
                }
                buf.clear();
                buf.extend(w.iter().map(|p| p.1));
                let median = quantile(0.5, &mut buf);
                for x in buf.iter_mut() {
                    *x = (*x - median).abs();
                }
                Some(quantile(0.5, &mut buf))
            })
        }
        "quantile_over_time" => {
            let q = param.unwrap_or_default();
            let mut buf = Vec::new();
            let mut bad: Option<f64> = None;
            let out = map_windows(ev, &rd, false, |w, step, _| {
                let qv = q.get(step).copied().unwrap_or(f64::NAN);
                if qv.is_nan() || !(0.0..=1.0).contains(&qv) {
                    bad.get_or_insert(qv);
                }
                buf.clear();
                buf.extend(w.iter().map(|p| p.1));
                Some(quantile(qv, &mut buf))
            });
            if let Some(qv) = bad {
                let pos = c.args.first().map_or(c.pos, |a| a.pos());
                ev.annos.warn(
                    format!(
                        "quantile value should be between 0 and 1, got {}",
                        format_g(qv)
                    ),
                    pos,
                );
            }
            out
        }
        "double_exponential_smoothing" => {
            let sf = scalar_arg(ev, c.args.get(1).ok_or_else(wrong)?, name)?;
            let tf = scalar_arg(ev, c.args.get(2).ok_or_else(wrong)?, name)?;
            for (&s, &t) in sf.iter().zip(&tf) {
                if s <= 0.0 || s >= 1.0 {
                    return Err(QueryError::exec(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                        format_f6(s)
                    )));
                }
                if t <= 0.0 || t >= 1.0 {
                    return Err(QueryError::exec(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                        format_f6(t)
                    )));
                }
            }
            map_windows(ev, &rd, false, |w, step, _| smooth(w, sf[step], tf[step]))
        }
        _ => {
            // absent_over_time: one sample with the selector's labels at
            // steps where no series has a sample in its window.
            let n = ev.nsteps();
            let mut present = vec![false; n];
            rd.for_each(ev, |_, _, pts| {
                for (step, _, _) in
                    crate::engine::eval::Windows::checked(ev, pts, &rd.refs, rd.range)
                {
                    present[step] = true;
                }
            });
            let points: Vec<(i64, f64)> = (0..n)
                .filter(|&i| !present[i])
                .map(|i| (ev.ts(i), 1.0))
                .collect();
            let labels = absent_labels(crate::engine::eval::unparen(range_expr));
            if points.is_empty() {
                Vec::new()
            } else {
                vec![RSeries {
                    labels,
                    drop_name: false,
                    points,
                }]
            }
        }
    };
    Ok(Some(Val::Vector(out)))
}

fn smooth(w: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let mut s0 = 0.0;
    let mut s1 = w[0].1;
    let mut b = w[1].1 - w[0].1;
    for (i, &(_, v)) in w.iter().enumerate().skip(1) {
        let x = sf * v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}
