//! Classic-histogram functions over `le` bucket series:
//! `histogram_quantile`, `histogram_quantiles`, `histogram_fraction`.
//! Native-histogram functions (`histogram_count`, …) yield nothing for float
//! samples, since native histograms are not stored yet.
//!
//! Buckets are grouped by the series' labels without `le`; a group's result
//! loses `__name__`. Bucket counts are made monotonic before use, with an
//! info annotation, as Prometheus does.

use std::collections::HashMap;

use pharos_storage::labels::{go_quote, Labels};

use crate::engine::binary::StepCursors;
use crate::engine::eval::{Evaluator, RSeries, Val};
use crate::engine::QueryError;
use crate::parser::ast::{Call, PosRange};

use super::fmt::format_g;
use super::{scalar_arg, string_arg, vector_arg};

#[derive(Clone, Copy)]
struct Bucket {
    upper: f64,
    count: f64,
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|_| !s.trim().is_empty()),
    }
}

fn sort_coalesce(b: &mut Vec<Bucket>) {
    b.sort_by(|x, y| {
        x.upper
            .partial_cmp(&y.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut out: Vec<Bucket> = Vec::with_capacity(b.len());
    for &x in b.iter() {
        match out.last_mut() {
            Some(l) if l.upper == x.upper => l.count += x.count,
            _ => out.push(x),
        }
    }
    *b = out;
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    let sum = a.abs() + b.abs();
    let min_normal = f64::MIN_POSITIVE;
    if a == 0.0 || b == 0.0 || sum < min_normal {
        return diff < eps * min_normal;
    }
    diff / sum.min(f64::MAX) < eps
}

/// Makes counts non-decreasing; returns whether a real decrease was fixed.
fn ensure_monotonic(b: &mut [Bucket]) -> bool {
    let mut forced = false;
    let Some(first) = b.first() else { return false };
    let mut prev = first.count;
    for x in b.iter_mut().skip(1) {
        let cur = x.count;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) {
            x.count = prev;
            continue;
        }
        if cur < prev {
            x.count = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    forced
}

/// Returns the quantile and whether monotonicity had to be forced.
fn bucket_quantile(q: f64, b: &mut Vec<Bucket>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    sort_coalesce(b);
    if b.last().is_none_or(|l| l.upper != f64::INFINITY) {
        return (f64::NAN, false);
    }
    let forced = ensure_monotonic(b);
    if b.len() < 2 {
        return (f64::NAN, forced);
    }
    let obs = b[b.len() - 1].count;
    if obs == 0.0 || obs.is_nan() {
        return (f64::NAN, forced);
    }
    let mut rank = q * obs;
    let idx = b[..b.len() - 1].partition_point(|x| x.count < rank);
    if idx == b.len() - 1 {
        return (b[b.len() - 2].upper, forced);
    }
    if idx == 0 && b[0].upper <= 0.0 {
        return (b[0].upper, forced);
    }
    let mut start = 0.0;
    let end = b[idx].upper;
    let mut count = b[idx].count;
    if idx > 0 {
        start = b[idx - 1].upper;
        count -= b[idx - 1].count;
        rank -= b[idx - 1].count;
    }
    (start + (end - start) * (rank / count), forced)
}

fn bucket_fraction(lower: f64, upper: f64, b: &mut Vec<Bucket>) -> f64 {
    sort_coalesce(b);
    if b.last().is_none_or(|l| l.upper != f64::INFINITY) {
        return f64::NAN;
    }
    ensure_monotonic(b);
    let count = b[b.len() - 1].count;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lrank, mut urank) = (0.0, 0.0, 0.0);
    let (mut lset, mut uset) = (false, false);
    for (i, x) in b.iter().enumerate() {
        let lb = if i > 0 {
            b[i - 1].upper
        } else if x.upper > 0.0 {
            // Classic buckets are assumed to start at zero when positive.
            0.0
        } else {
            f64::NEG_INFINITY
        };
        let ub = x.upper;
        let interp = |v: f64, is_lower: bool| -> f64 {
            if lb.is_infinite() {
                // No interpolation inside an infinitely wide bucket.
                return if is_lower { x.count } else { rank };
            }
            if ub.is_infinite() {
                return rank;
            }
            rank + (x.count - rank) * (v - lb) / (ub - lb)
        };
        if !lset && lb >= lower {
            lrank = rank;
            lset = true;
        }
        if !uset && lb >= upper {
            urank = rank;
            uset = true;
        }
        if lset && uset {
            break;
        }
        if !lset && lb < lower && ub > lower {
            lrank = interp(lower, true);
            lset = true;
        }
        if !uset && lb < upper && ub > upper {
            urank = interp(upper, false);
            uset = true;
        }
        if lset && uset {
            break;
        }
        rank = x.count;
    }
    if !lset || lrank > count {
        lrank = count;
    }
    if !uset || urank > count {
        urank = count;
    }
    (urank - lrank) / count
}

/// Groups bucket series by their labels without `le`, warning about series
/// whose `le` is missing or malformed.
struct Groups {
    labels: Vec<Labels>,
    names: Vec<String>,
    of: Vec<Option<(usize, f64)>>,
}

fn group_buckets(ev: &mut Evaluator<'_>, v: &[RSeries], pos: PosRange) -> Groups {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut g = Groups {
        labels: Vec::new(),
        names: Vec::new(),
        of: Vec::with_capacity(v.len()),
    };
    for s in v {
        let le = s.labels.get_or_empty("le");
        match parse_le(le) {
            Some(upper) => {
                let key = s.labels.drop_names(&["le"]);
                let next = g.labels.len();
                let gi = *index.entry(key.clone()).or_insert_with(|| {
                    g.labels.push(key);
                    g.names
                        .push(s.labels.metric_name().unwrap_or("").to_string());
                    next
                });
                g.of.push(Some((gi, upper)));
            }
            None => {
                ev.annos.warn(
                    format!(
                        "bucket label \"le\" is missing or has a malformed value of {} for metric name {}",
                        go_quote(le),
                        go_quote(s.labels.metric_name().unwrap_or(""))
                    ),
                    pos,
                );
                g.of.push(None);
            }
        }
    }
    g
}

/// Runs `f` over each group's buckets at each step.
fn per_group(
    ev: &mut Evaluator<'_>,
    v: &[RSeries],
    g: &Groups,
    mut f: impl FnMut(usize, usize, &mut Vec<Bucket>) -> Option<f64>,
) -> Vec<Vec<(i64, f64)>> {
    let n = ev.nsteps();
    let mut out: Vec<Vec<(i64, f64)>> = vec![Vec::new(); g.labels.len()];
    let mut cursors = StepCursors::new(v.len());
    let mut vals = Vec::new();
    let mut buckets: Vec<Vec<Bucket>> = vec![Vec::new(); g.labels.len()];
    for step in 0..n {
        if !ev.tick_or_defer(1 + v.len()) {
            break;
        }
        let t = ev.ts(step);
        cursors.at(v, t, &mut vals);
        buckets.iter_mut().for_each(Vec::clear);
        for &(si, val) in &vals {
            if let Some((gi, upper)) = g.of[si] {
                buckets[gi].push(Bucket { upper, count: val });
            }
        }
        for (gi, b) in buckets.iter_mut().enumerate() {
            if b.is_empty() {
                continue;
            }
            if let Some(x) = f(gi, step, b) {
                out[gi].push((t, x));
            }
        }
    }
    out
}

fn quantile_warn(ev: &mut Evaluator<'_>, q: f64, pos: PosRange) {
    if q.is_nan() || !(0.0..=1.0).contains(&q) {
        ev.annos.warn(
            format!(
                "quantile value should be between 0 and 1, got {}",
                format_g(q)
            ),
            pos,
        );
    }
}

fn monotonic_info(ev: &mut Evaluator<'_>, name: &str, pos: PosRange) {
    ev.annos.info(
        format!(
            "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {}",
            go_quote(name)
        ),
        pos,
    );
}

fn finish(
    labels: &[Labels],
    pts: Vec<Vec<(i64, f64)>>,
    extra: Option<(&str, &str)>,
) -> Vec<RSeries> {
    labels
        .iter()
        .zip(pts)
        .filter(|(_, p)| !p.is_empty())
        .map(|(l, points)| {
            let labels = match extra {
                Some((k, v)) => {
                    let mut b = l.builder();
                    b.set(k, v);
                    b.build()
                }
                None => l.clone(),
            };
            RSeries {
                labels,
                drop_name: true,
                points,
            }
        })
        .collect()
}

pub(crate) fn eval(ev: &mut Evaluator<'_>, c: &Call) -> Result<Option<Val>, QueryError> {
    let name = c.func.as_str();
    let wrong = || QueryError::bad(format!("wrong number of arguments for function \"{name}\""));
    let res = match name {
        "histogram_quantile" => {
            let q = scalar_arg(ev, c.args.first().ok_or_else(wrong)?, name)?;
            let varg = c.args.get(1).ok_or_else(wrong)?;
            let v = vector_arg(ev, varg, name)?;
            let g = group_buckets(ev, &v, varg.pos());
            let mut forced_names = Vec::new();
            let mut bad_q = None;
            let pts = per_group(ev, &v, &g, |gi, step, b| {
                let qv = q[step];
                if qv.is_nan() || !(0.0..=1.0).contains(&qv) {
                    bad_q.get_or_insert(qv);
                }
                let (x, forced) = bucket_quantile(qv, b);
                if forced {
                    forced_names.push(gi);
                }
                Some(x)
            });
            if let Some(qv) = bad_q {
                quantile_warn(ev, qv, c.args.first().map_or(c.pos, |a| a.pos()));
            }
            for gi in forced_names {
                let n = g.names[gi].clone();
                monotonic_info(ev, &n, varg.pos());
            }
            Val::Vector(finish(&g.labels, pts, None))
        }
        "histogram_quantiles" => {
            let varg = c.args.first().ok_or_else(wrong)?;
            let v = vector_arg(ev, varg, name)?;
            let label = string_arg(ev, c.args.get(1).ok_or_else(wrong)?, name)?;
            let g = group_buckets(ev, &v, varg.pos());
            let mut out = Vec::new();
            for qe in c.args.iter().skip(2) {
                let q = scalar_arg(ev, qe, name)?;
                let mut forced_names = Vec::new();
                let pts = per_group(ev, &v, &g, |gi, step, b| {
                    let (x, forced) = bucket_quantile(q[step], b);
                    if forced {
                        forced_names.push(gi);
                    }
                    Some(x)
                });
                let q0 = q.first().copied().unwrap_or(f64::NAN);
                quantile_warn(ev, q0, qe.pos());
                for gi in forced_names {
                    let n = g.names[gi].clone();
                    monotonic_info(ev, &n, varg.pos());
                }
                let mut qs = super::fmt::format_float_f(q0);
                if q0.is_finite() && !qs.contains('.') {
                    // Whole quantiles are labelled "1.0", not "1".
                    qs.push_str(".0");
                }
                out.extend(finish(&g.labels, pts, Some((&label, &qs))));
            }
            Val::Vector(out)
        }
        "histogram_fraction" => {
            let lo = scalar_arg(ev, c.args.first().ok_or_else(wrong)?, name)?;
            let hi = scalar_arg(ev, c.args.get(1).ok_or_else(wrong)?, name)?;
            let varg = c.args.get(2).ok_or_else(wrong)?;
            let v = vector_arg(ev, varg, name)?;
            let g = group_buckets(ev, &v, varg.pos());
            let pts = per_group(ev, &v, &g, |_, step, b| {
                Some(bucket_fraction(lo[step], hi[step], b))
            });
            Val::Vector(finish(&g.labels, pts, None))
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            // Only native histograms have these; float samples are ignored.
            let _ = vector_arg(ev, c.args.first().ok_or_else(wrong)?, name)?;
            Val::Vector(Vec::new())
        }
        _ => return Ok(None),
    };
    Ok(Some(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: &[(f64, f64)]) -> Vec<Bucket> {
        v.iter()
            .map(|&(upper, count)| Bucket { upper, count })
            .collect()
    }

    #[test]
    fn quantile_interpolates_within_bucket() {
        let mut bs = b(&[
            (0.0, 0.0),
            (2.0, 1.0),
            (4.0, 2.0),
            (6.0, 3.0),
            (f64::INFINITY, 3.0),
        ]);
        let (q, forced) = bucket_quantile(0.5, &mut bs);
        assert!((q - 3.0).abs() < 1e-9);
        assert!(!forced);
    }

    #[test]
    fn fraction_first_bucket_starts_at_zero() {
        let mut bs = b(&[(1.0, 1.0), (2.0, 3.0), (3.0, 6.0), (f64::INFINITY, 100.0)]);
        assert!((bucket_fraction(0.0, 1.5, &mut bs) - 0.02).abs() < 1e-12);
        let mut ns = b(&[
            (-3.0, 10.0),
            (-2.0, 12.0),
            (-1.0, 15.0),
            (f64::INFINITY, 100.0),
        ]);
        assert!((bucket_fraction(-4.0, -2.0, &mut ns) - 0.02).abs() < 1e-12);
        let mut ns = b(&[
            (-3.0, 10.0),
            (-2.0, 12.0),
            (-1.0, 15.0),
            (f64::INFINITY, 100.0),
        ]);
        assert!((bucket_fraction(f64::NEG_INFINITY, -1.5, &mut ns) - 0.135).abs() < 1e-12);
    }
}
