//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, …) with
//! `by`/`without`.
//!
//! Group membership depends only on a series' labels, so it is computed once
//! per input series (grouping by the hash of the grouping labels); each step
//! then only folds values into per-group accumulators, which are reused.

use std::collections::HashMap;

use pharos_storage::labels::{is_valid_label_name, Labels, METRIC_NAME};

use super::binary::{OutBuilder, StepCursors};
use super::error::QueryError;
use super::eval::{unparen, Evaluator, RSeries, Val, NAME_LIKE};
use crate::functions::fmt::{format_float_f, format_g};
use crate::parser::ast::{AggregateExpr, AggregateOp, Expr};
use crate::parser::printer::go_quote_bytes;

/// Neumaier-compensated addition: returns the new sum and compensation.
#[inline]
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    if t.is_infinite() {
        (t, 0.0)
    } else if sum.abs() >= inc.abs() {
        (t, c + ((sum - t) + inc))
    } else {
        (t, c + ((inc - t) + sum))
    }
}

/// Running state of one group at one step.
#[derive(Clone, Default)]
struct Acc {
    seen: bool,
    count: f64,
    value: f64,
    comp: f64,
    mean: f64,
    incremental: bool,
}

/// The labels of the group a series belongs to.
pub(crate) fn group_labels(l: &Labels, grouping: &[String], without: bool) -> Labels {
    if without {
        let mut names: Vec<&str> = grouping.iter().map(String::as_str).collect();
        names.extend(NAME_LIKE);
        l.drop_names(&names)
    } else {
        let names: Vec<&str> = grouping.iter().map(String::as_str).collect();
        l.keep(&names)
    }
}

/// `quantile` over `values` (sorted in place, NaN first), Prometheus's rule.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

pub(crate) fn eval_aggregate(ev: &mut Evaluator<'_>, a: &AggregateExpr) -> Result<Val, QueryError> {
    let param = match &a.param {
        Some(p) => Some(ev.eval(p)?),
        None => None,
    };
    if a.op == AggregateOp::CountValues {
        // Before the input, as Prometheus checks it.
        check_count_values_label(a, &param)?;
    }
    let input = match ev.eval(&a.expr)? {
        Val::Vector(v) => v,
        _ => {
            return Err(QueryError::bad(format!(
                "expected type instant vector in aggregation expression, got {}",
                "scalar"
            )))
        }
    };
    let n = ev.nsteps();
    let param_scalar = |p: &Option<Val>| -> Vec<f64> {
        match p {
            Some(Val::Scalar(s)) => s.clone(),
            _ => vec![f64::NAN; n],
        }
    };
    match a.op {
        AggregateOp::Topk
        | AggregateOp::Bottomk
        | AggregateOp::Limitk
        | AggregateOp::LimitRatio => {
            let ps = param_scalar(&param);
            select_k(ev, a, input, &ps)
        }
        AggregateOp::CountValues => {
            let label = match &param {
                Some(Val::String(s)) => s.clone(),
                _ => return Err(QueryError::bad("count_values requires a string parameter")),
            };
            count_values(ev, a, input, &label)
        }
        _ => {
            let ps = param_scalar(&param);
            fold(ev, a, input, &ps)
        }
    }
}

/// Assigns every input series to a group; returns group labels and the
/// group index of each series.
fn assign_groups(input: &[RSeries], a: &AggregateExpr) -> (Vec<Labels>, Vec<usize>) {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups = Vec::new();
    let mut of = Vec::with_capacity(input.len());
    for s in input {
        let gl = group_labels(&s.labels, &a.grouping, a.without);
        let next = groups.len();
        let g = *index.entry(gl.clone()).or_insert_with(|| {
            groups.push(gl);
            next
        });
        of.push(g);
    }
    (groups, of)
}

fn fold(
    ev: &mut Evaluator<'_>,
    a: &AggregateExpr,
    input: Vec<RSeries>,
    param: &[f64],
) -> Result<Val, QueryError> {
    let (groups, of) = assign_groups(&input, a);
    let n = ev.nsteps();
    let keeps_name = !a.without && a.grouping.iter().any(|g| g == METRIC_NAME);
    let mut out: Vec<RSeries> = groups
        .iter()
        .map(|g| RSeries {
            labels: g.clone(),
            drop_name: false,
            points: Vec::new(),
        })
        .collect();
    let mut accs = vec![Acc::default(); groups.len()];
    let mut qvals: Vec<Vec<f64>> = if a.op == AggregateOp::Quantile {
        vec![Vec::new(); groups.len()]
    } else {
        Vec::new()
    };
    let mut cursors = StepCursors::new(input.len());
    let mut vals = Vec::new();
    let mut warned = false;
    for (step, &q) in param.iter().enumerate().take(n) {
        ev.tick(1 + input.len())?;
        let t = ev.ts(step);
        cursors.at(&input, t, &mut vals);
        if vals.is_empty() {
            continue;
        }
        accs.iter_mut().for_each(|x| x.seen = false);
        qvals.iter_mut().for_each(Vec::clear);
        for &(si, v) in &vals {
            let g = of[si];
            let acc = &mut accs[g];
            if keeps_name && input[si].drop_name {
                out[g].drop_name = true;
            }
            if !acc.seen {
                *acc = Acc {
                    seen: true,
                    count: 1.0,
                    value: v,
                    comp: 0.0,
                    mean: v,
                    incremental: false,
                };
                match a.op {
                    AggregateOp::Stddev | AggregateOp::Stdvar => {
                        // Fold the first sample through Welford's update
                        // too, so that a lone Inf or NaN yields NaN.
                        acc.mean = v;
                        acc.value = if v.is_finite() { 0.0 } else { f64::NAN };
                    }
                    AggregateOp::Quantile => qvals[g].push(v),
                    _ => {}
                }
                continue;
            }
            acc.count += 1.0;
            match a.op {
                AggregateOp::Sum => {
                    (acc.value, acc.comp) = kahan_inc(v, acc.value, acc.comp);
                }
                AggregateOp::Avg => {
                    if !acc.incremental {
                        let (nv, nc) = kahan_inc(v, acc.value, acc.comp);
                        if !nv.is_infinite() {
                            acc.value = nv;
                            acc.comp = nc;
                            continue;
                        }
                        // The direct sum would overflow: continue with an
                        // incremental mean from here on.
                        acc.incremental = true;
                        acc.mean = acc.value / (acc.count - 1.0);
                        acc.comp /= acc.count - 1.0;
                    }
                    let q = (acc.count - 1.0) / acc.count;
                    (acc.mean, acc.comp) = kahan_inc(v / acc.count, q * acc.mean, q * acc.comp);
                }
                AggregateOp::Max if acc.value < v || acc.value.is_nan() => acc.value = v,
                AggregateOp::Min if acc.value > v || acc.value.is_nan() => acc.value = v,
                AggregateOp::Stddev | AggregateOp::Stdvar => {
                    let delta = v - acc.mean;
                    acc.mean += delta / acc.count;
                    acc.value += delta * (v - acc.mean);
                }
                AggregateOp::Quantile => qvals[g].push(v),
                _ => {}
            }
        }
        if a.op == AggregateOp::Quantile && !warned && (q.is_nan() || !(0.0..=1.0).contains(&q)) {
            warned = true;
            let pos = a.param.as_ref().map_or(a.pos, |p| p.pos());
            ev.annos.warn(
                format!(
                    "quantile value should be between 0 and 1, got {}",
                    format_g(q)
                ),
                pos,
            );
        }
        for (g, acc) in accs.iter().enumerate() {
            if !acc.seen {
                continue;
            }
            let v = match a.op {
                AggregateOp::Sum => acc.value + acc.comp,
                AggregateOp::Avg => {
                    if acc.incremental {
                        acc.mean + acc.comp
                    } else {
                        (acc.value + acc.comp) / acc.count
                    }
                }
                AggregateOp::Max | AggregateOp::Min => acc.value,
                AggregateOp::Count => acc.count,
                AggregateOp::Group => 1.0,
                AggregateOp::Stdvar => acc.value / acc.count,
                AggregateOp::Stddev => (acc.value / acc.count).sqrt(),
                AggregateOp::Quantile => quantile(q, &mut qvals[g]),
                _ => continue,
            };
            out[g].points.push((t, v));
        }
    }
    out.retain(|s| !s.points.is_empty());
    Ok(Val::Vector(out))
}

/// `count_values`'s label must be a valid label name. The check and the
/// quoting in the error use the literal's bytes as written: a string
/// literal may hold bytes that are not UTF-8 (`"a\xc5z"`), which the
/// decoded (lossy) value would hide, and Prometheus quotes them as `\xc5`.
fn check_count_values_label(a: &AggregateExpr, param: &Option<Val>) -> Result<(), QueryError> {
    let literal = a.param.as_deref().map(unparen).and_then(|p| match p {
        Expr::String(s) => Some(s.bytes()),
        _ => None,
    });
    let bytes = match (literal, param) {
        (Some(b), _) => b,
        (None, Some(Val::String(s))) => s.as_bytes(),
        _ => return Err(QueryError::bad("count_values requires a string parameter")),
    };
    if std::str::from_utf8(bytes).is_ok_and(is_valid_label_name) {
        Ok(())
    } else {
        Err(QueryError::exec(format!(
            "invalid label name {}",
            go_quote_bytes(bytes)
        )))
    }
}

fn count_values(
    ev: &mut Evaluator<'_>,
    a: &AggregateExpr,
    input: Vec<RSeries>,
    label: &str,
) -> Result<Val, QueryError> {
    let groups: Vec<Labels> = input
        .iter()
        .map(|s| group_labels(&s.labels, &a.grouping, a.without))
        .collect();
    let n = ev.nsteps();
    let mut cursors = StepCursors::new(input.len());
    let mut vals = Vec::new();
    let mut out = OutBuilder::new();
    let mut counts: HashMap<usize, f64> = HashMap::new();
    let mut order: Vec<usize> = Vec::new();
    for step in 0..n {
        ev.tick(1 + input.len())?;
        let t = ev.ts(step);
        cursors.at(&input, t, &mut vals);
        counts.clear();
        order.clear();
        for &(si, v) in &vals {
            let mut b = groups[si].builder();
            b.set(label, &format_float_f(v));
            let slot = out.slot(b.build(), false);
            let c = counts.entry(slot).or_insert_with(|| {
                order.push(slot);
                0.0
            });
            *c += 1.0;
        }
        for &slot in &order {
            out.push(slot, t, counts[&slot])?;
        }
    }
    let mut res = out.series;
    res.retain(|s| !s.points.is_empty());
    Ok(Val::Vector(res))
}

/// `topk`, `bottomk`, `limitk`, `limit_ratio`: pick input samples per group.
fn select_k(
    ev: &mut Evaluator<'_>,
    a: &AggregateExpr,
    input: Vec<RSeries>,
    param: &[f64],
) -> Result<Val, QueryError> {
    let (groups, of) = assign_groups(&input, a);
    let n = ev.nsteps();
    let mut picked: Vec<Vec<(i64, f64)>> = vec![Vec::new(); input.len()];
    let mut cursors = StepCursors::new(input.len());
    let mut vals = Vec::new();
    let mut members: Vec<Vec<(usize, f64)>> = vec![Vec::new(); groups.len()];
    // For instant queries the output order is meaningful: groups in order of
    // appearance, each sorted by the operator.
    let mut instant_order: Vec<usize> = Vec::new();
    let mut warned = false;
    for step in 0..n {
        ev.tick(1 + input.len())?;
        let t = ev.ts(step);
        cursors.at(&input, t, &mut vals);
        let p = param.get(step).copied().unwrap_or(f64::NAN);
        if a.op == AggregateOp::LimitRatio {
            if p.is_nan() {
                return Err(QueryError::exec("Ratio value is NaN"));
            }
        } else if p.is_nan() {
            return Err(QueryError::exec("Parameter value is NaN"));
        }
        if vals.is_empty() {
            continue;
        }
        members.iter_mut().for_each(Vec::clear);
        for &(si, v) in &vals {
            members[of[si]].push((si, v));
        }
        match a.op {
            AggregateOp::LimitRatio => {
                let mut r = p;
                if !(-1.0..=1.0).contains(&r) {
                    let capped = r.clamp(-1.0, 1.0);
                    if !warned {
                        warned = true;
                        let pos = a.param.as_ref().map_or(a.pos, |p| p.pos());
                        ev.annos.warn(
                            format!(
                                "ratio value should be between -1 and 1, got {}, capping to {}",
                                format_g(r),
                                format_g(capped)
                            ),
                            pos,
                        );
                    }
                    r = capped;
                }
                for m in &members {
                    for &(si, v) in m {
                        let off = ratio_offset(&input[si].labels);
                        let keep = if r >= 0.0 { off < r } else { off >= 1.0 + r };
                        if keep {
                            picked[si].push((t, v));
                            instant_order.push(si);
                        }
                    }
                }
            }
            _ => {
                let k = if p >= i64::MAX as f64 {
                    usize::MAX
                } else if p < 1.0 {
                    0
                } else {
                    p as i64 as usize
                };
                if k == 0 {
                    continue;
                }
                for m in members.iter_mut() {
                    match a.op {
                        AggregateOp::Topk => m.sort_by(|x, y| cmp_desc_nan_last(x.1, y.1)),
                        AggregateOp::Bottomk => m.sort_by(|x, y| cmp_asc_nan_last(x.1, y.1)),
                        _ => {}
                    }
                    for &(si, v) in m.iter().take(k) {
                        picked[si].push((t, v));
                        instant_order.push(si);
                    }
                }
            }
        }
    }
    let mut input = input;
    let mut out = Vec::new();
    if n == 1 {
        for si in instant_order {
            let s = &mut input[si];
            out.push(RSeries {
                labels: s.labels.clone(),
                drop_name: s.drop_name,
                points: std::mem::take(&mut picked[si]),
            });
        }
    } else {
        for (s, pts) in input.into_iter().zip(picked) {
            if !pts.is_empty() {
                out.push(RSeries {
                    labels: s.labels,
                    drop_name: s.drop_name,
                    points: pts,
                });
            }
        }
    }
    out.retain(|s| !s.points.is_empty());
    Ok(Val::Vector(out))
}

fn cmp_desc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ => b.partial_cmp(&a).unwrap_or(Equal),
    }
}

fn cmp_asc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ => a.partial_cmp(&b).unwrap_or(Equal),
    }
}

/// Position of a series in `[0, 1]` for `limit_ratio`: Prometheus's label
/// hash over `u64::MAX`, so the same series are picked as by Prometheus
/// (ratio `r >= 0` keeps offsets below `r`, `r < 0` those at or above
/// `1 + r`, which makes `r` and `r - 1` complements).
fn ratio_offset(l: &Labels) -> f64 {
    prometheus_labels_hash(l) as f64 / u64::MAX as f64
}

/// Prometheus's `labels.Hash()`: xxHash64 (seed 0) of each label's name,
/// a 0xff byte, its value and another 0xff byte, in label order. Unlike
/// [`Labels::hash`] (storage's xxh3 series hash) this is part of query
/// semantics, so it must not change.
pub(crate) fn prometheus_labels_hash(l: &Labels) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for (name, value) in l.iter() {
        h.update(name.as_bytes());
        h.update(&[0xff]);
        h.update(value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}
