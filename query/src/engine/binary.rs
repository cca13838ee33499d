//! Binary operators: scalar/scalar, vector/scalar and vector/vector with
//! `on`/`ignoring`, `group_left`/`group_right`, `fill*`, `bool`, and the set
//! operators, with Prometheus's matching errors.
//!
//! Invariant: matching signatures depend only on a series' labels, so they are
//! computed once per input series; only presence is decided per step.

use std::collections::HashMap;

use pharos_storage::labels::{Labels, METRIC_NAME};

use super::error::QueryError;
use super::eval::{Evaluator, RSeries, Val};
use crate::parser::ast::{BinaryExpr, BinaryOp, Cardinality, VectorMatching};

/// Applies a float operator. Returns the value and, for comparisons, whether
/// the comparison held.
#[inline]
pub(crate) fn float_op(op: BinaryOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinaryOp::Add => (l + r, true),
        BinaryOp::Sub => (l - r, true),
        BinaryOp::Mul => (l * r, true),
        BinaryOp::Div => (l / r, true),
        BinaryOp::Mod => (l % r, true),
        BinaryOp::Pow => (l.powf(r), true),
        BinaryOp::Atan2 => (l.atan2(r), true),
        BinaryOp::Eql => (l, l == r),
        BinaryOp::Neq => (l, l != r),
        BinaryOp::Gtr => (l, l > r),
        BinaryOp::Lss => (l, l < r),
        BinaryOp::Gte => (l, l >= r),
        BinaryOp::Lte => (l, l <= r),
        // Set operators never reach here; trims only change native
        // histograms, so a float passes through.
        BinaryOp::And | BinaryOp::Or | BinaryOp::Unless => (l, true),
        BinaryOp::TrimUpper | BinaryOp::TrimLower => (l, true),
    }
}

/// Whether the result of `op` no longer describes the input metric.
fn drops_name(op: BinaryOp, return_bool: bool) -> bool {
    !op.is_comparison() || return_bool
}

pub(crate) fn eval_binary(ev: &mut Evaluator<'_>, b: &BinaryExpr) -> Result<Val, QueryError> {
    let lhs = ev.eval(&b.lhs)?;
    let rhs = ev.eval(&b.rhs)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let out = l
                .iter()
                .zip(r.iter())
                .map(|(&a, &c)| {
                    let (v, keep) = float_op(b.op, a, c);
                    if b.op.is_comparison() {
                        if keep {
                            1.0
                        } else {
                            0.0
                        }
                    } else {
                        v
                    }
                })
                .collect();
            Ok(Val::Scalar(out))
        }
        (Val::Vector(l), Val::Scalar(r)) => Ok(Val::Vector(vector_scalar(ev, b, l, &r, false))),
        (Val::Scalar(l), Val::Vector(r)) => Ok(Val::Vector(vector_scalar(ev, b, r, &l, true))),
        (Val::Vector(l), Val::Vector(r)) => {
            let default_matching = VectorMatching {
                card: if b.op.is_set() {
                    Cardinality::ManyToMany
                } else {
                    Cardinality::OneToOne
                },
                on: false,
                labels: Vec::new(),
                include: Vec::new(),
                fill_left: None,
                fill_right: None,
            };
            let m = b.matching.as_ref().unwrap_or(&default_matching);
            match b.op {
                BinaryOp::And | BinaryOp::Unless | BinaryOp::Or => {
                    Ok(Val::Vector(set_op(ev, b.op, m, l, r)?))
                }
                _ => Ok(Val::Vector(vector_vector(ev, b, m, l, r)?)),
            }
        }
        _ => Err(QueryError::bad(format!(
            "binary expression must contain only scalar and instant vector types (operator {})",
            b.op.as_str()
        ))),
    }
}

fn vector_scalar(
    ev: &Evaluator<'_>,
    b: &BinaryExpr,
    mut vec: Vec<RSeries>,
    scalar: &[f64],
    scalar_is_lhs: bool,
) -> Vec<RSeries> {
    let drop = drops_name(b.op, b.return_bool);
    for s in &mut vec {
        if !ev.tick_or_defer(s.points.len()) {
            break;
        }
        s.points.retain_mut(|p| {
            let sv = scalar[ev.step_of(p.0)];
            let (l, r) = if scalar_is_lhs { (sv, p.1) } else { (p.1, sv) };
            let (v, keep) = float_op(b.op, l, r);
            if b.op.is_comparison() {
                if b.return_bool {
                    p.1 = if keep { 1.0 } else { 0.0 };
                    true
                } else {
                    // A filter keeps the vector's own value.
                    keep
                }
            } else {
                p.1 = v;
                true
            }
        });
        if drop {
            s.drop_name = true;
        }
    }
    vec.retain(|s| !s.points.is_empty());
    finalize_names(ev, &mut vec);
    vec
}

/// Without delayed name removal, names are dropped right away.
fn finalize_names(ev: &Evaluator<'_>, v: &mut [RSeries]) {
    if !ev.opts.delayed_name_removal {
        for s in v.iter_mut().filter(|s| s.drop_name) {
            s.labels = s.labels.drop_names(&super::eval::NAME_LIKE);
            s.drop_name = false;
        }
    }
}

/// The labels two series are matched on.
pub(crate) fn match_labels(l: &Labels, m: &VectorMatching) -> Labels {
    if m.on {
        let names: Vec<&str> = m.labels.iter().map(String::as_str).collect();
        l.keep(&names)
    } else {
        let mut names: Vec<&str> = m.labels.iter().map(String::as_str).collect();
        names.push(METRIC_NAME);
        l.drop_names(&names)
    }
}

/// Dense ids of the matching signatures of both sides, computed once per
/// series so that steps only compare small integers.
fn signature_ids(
    lhs: &[RSeries],
    rhs: &[RSeries],
    m: &VectorMatching,
) -> (Vec<usize>, Vec<usize>, usize) {
    let mut ids: HashMap<Labels, usize> = HashMap::new();
    let mut id_of = |s: &RSeries| {
        let next = ids.len();
        *ids.entry(match_labels(&s.labels, m)).or_insert(next)
    };
    let l: Vec<usize> = lhs.iter().map(&mut id_of).collect();
    let r: Vec<usize> = rhs.iter().map(&mut id_of).collect();
    let n = ids.len();
    (l, r, n)
}

/// Cursors over step-aligned series: the values present at one step.
pub(crate) struct StepCursors {
    pos: Vec<usize>,
}

impl StepCursors {
    pub(crate) fn new(n: usize) -> Self {
        StepCursors { pos: vec![0; n] }
    }

    /// Fills `out` with `(series index, value)` for series with a point at `t`.
    pub(crate) fn at(&mut self, series: &[RSeries], t: i64, out: &mut Vec<(usize, f64)>) {
        out.clear();
        for (i, s) in series.iter().enumerate() {
            let p = &mut self.pos[i];
            while *p < s.points.len() && s.points[*p].0 < t {
                *p += 1;
            }
            if let Some(&(pt, v)) = s.points.get(*p) {
                if pt == t {
                    out.push((i, v));
                    *p += 1;
                }
            }
        }
    }
}

/// Collects output points keyed by label set; one point per series per step.
pub(crate) struct OutBuilder {
    index: HashMap<Labels, usize>,
    pub series: Vec<RSeries>,
}

impl OutBuilder {
    pub(crate) fn new() -> Self {
        OutBuilder {
            index: HashMap::new(),
            series: Vec::new(),
        }
    }

    pub(crate) fn slot(&mut self, labels: Labels, drop_name: bool) -> usize {
        if let Some(&i) = self.index.get(&labels) {
            if drop_name {
                self.series[i].drop_name = true;
            }
            return i;
        }
        let i = self.series.len();
        self.index.insert(labels.clone(), i);
        self.series.push(RSeries {
            labels,
            drop_name,
            points: Vec::new(),
        });
        i
    }

    /// Appends a point; a second point at the same step is a duplicate.
    pub(crate) fn push(&mut self, i: usize, t: i64, v: f64) -> Result<(), QueryError> {
        let s = &mut self.series[i];
        if s.points.last().is_some_and(|p| p.0 == t) {
            return Err(QueryError::exec(
                "vector cannot contain metrics with the same labelset",
            ));
        }
        s.points.push((t, v));
        Ok(())
    }
}

fn set_op(
    ev: &mut Evaluator<'_>,
    op: BinaryOp,
    m: &VectorMatching,
    lhs: Vec<RSeries>,
    rhs: Vec<RSeries>,
) -> Result<Vec<RSeries>, QueryError> {
    let (lsig, rsig, nsig) = signature_ids(&lhs, &rhs, m);
    let n = ev.nsteps();
    let mut lc = StepCursors::new(lhs.len());
    let mut rc = StepCursors::new(rhs.len());
    let (mut lv, mut rv) = (Vec::new(), Vec::new());
    // `seen[sig] == step + 1`: the signature is present at this step.
    let mut seen = vec![0usize; nsig];
    // Output keeps input series identity: lhs series first, then rhs.
    let mut lout: Vec<Vec<(i64, f64)>> = vec![Vec::new(); lhs.len()];
    let mut rout: Vec<Vec<(i64, f64)>> = vec![Vec::new(); rhs.len()];
    for step in 0..n {
        ev.tick(1 + lhs.len() + rhs.len())?;
        let t = ev.ts(step);
        let stamp = step + 1;
        lc.at(&lhs, t, &mut lv);
        rc.at(&rhs, t, &mut rv);
        match op {
            BinaryOp::And | BinaryOp::Unless => {
                for &(i, _) in &rv {
                    seen[rsig[i]] = stamp;
                }
                let want = op == BinaryOp::And;
                for &(i, v) in &lv {
                    if (seen[lsig[i]] == stamp) == want {
                        lout[i].push((t, v));
                    }
                }
            }
            _ => {
                for &(i, v) in &lv {
                    seen[lsig[i]] = stamp;
                    lout[i].push((t, v));
                }
                for &(i, v) in &rv {
                    if seen[rsig[i]] != stamp {
                        rout[i].push((t, v));
                    }
                }
            }
        }
    }
    let mut out = Vec::with_capacity(lhs.len() + rhs.len());
    for (s, pts) in lhs.into_iter().zip(lout) {
        if !pts.is_empty() {
            out.push(RSeries {
                labels: s.labels,
                drop_name: s.drop_name,
                points: pts,
            });
        }
    }
    for (s, pts) in rhs.into_iter().zip(rout) {
        if !pts.is_empty() {
            out.push(RSeries {
                labels: s.labels,
                drop_name: s.drop_name,
                points: pts,
            });
        }
    }
    Ok(merge_same_labels(out))
}

/// Series with identical labels (possible after `or`) become one.
fn merge_same_labels(v: Vec<RSeries>) -> Vec<RSeries> {
    let mut idx: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<RSeries> = Vec::with_capacity(v.len());
    for s in v {
        match idx.get(&s.labels) {
            Some(&i) => {
                let o = &mut out[i];
                o.drop_name |= s.drop_name;
                o.points.extend(s.points);
                o.points.sort_by_key(|p| p.0);
                o.points.dedup_by_key(|p| p.0);
            }
            None => {
                idx.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    out
}

/// Result labels of a matched (or rhs-filled) pair, Prometheus's
/// `resultMetric`. `rs` is `None` when the "one" side was filled.
fn result_labels(ls: &Labels, rs: Option<&Labels>, m: &VectorMatching, drop_now: bool) -> Labels {
    let mut b = ls.builder();
    if drop_now {
        for n in super::eval::NAME_LIKE {
            b.del(n);
        }
    }
    if m.card == Cardinality::OneToOne {
        if m.on {
            b.retain(|n| m.labels.iter().any(|l| l == n));
        } else {
            for l in &m.labels {
                b.del(l);
            }
        }
    }
    for ln in &m.include {
        match rs.and_then(|r| r.get(ln)) {
            Some(v) if !v.is_empty() => {
                b.set(ln, v);
            }
            _ => {
                b.del(ln);
            }
        }
    }
    b.build()
}

fn vector_vector(
    ev: &mut Evaluator<'_>,
    b: &BinaryExpr,
    m: &VectorMatching,
    lhs: Vec<RSeries>,
    rhs: Vec<RSeries>,
) -> Result<Vec<RSeries>, QueryError> {
    let op = b.op;
    let swap = m.card == Cardinality::OneToMany;
    // After the swap, `lhs` is the "many" side and `rhs` the "one" side.
    let (lhs, rhs) = if swap { (rhs, lhs) } else { (lhs, rhs) };
    let fill_l = m.fill_left;
    let fill_r = m.fill_right;
    let drop = drops_name(op, b.return_bool);
    let drop_now = drop && !ev.opts.delayed_name_removal;
    let (lsig, rsig, nsig) = signature_ids(&lhs, &rhs, m);
    let n = ev.nsteps();
    let mut lc = StepCursors::new(lhs.len());
    let mut rc = StepCursors::new(rhs.len());
    let (mut lv, mut rv) = (Vec::new(), Vec::new());
    // Per signature, stamped with `step + 1` when valid for the current step:
    // the "one"-side sample, whether an lhs sample was matched (one-to-one),
    // and whether any lhs sample has it (for fill_left).
    let mut right_stamp = vec![0usize; nsig];
    let mut right_at: Vec<(usize, f64)> = vec![(0, 0.0); nsig];
    let mut matched_stamp = vec![0usize; nsig];
    let mut left_stamp = vec![0usize; nsig];
    let mut group_slots: std::collections::HashSet<(usize, usize)> =
        std::collections::HashSet::new();
    let mut pair_slot: HashMap<(usize, usize), usize> = HashMap::new();
    let mut lfill_slot: HashMap<usize, usize> = HashMap::new();
    let mut rfill_slot: HashMap<usize, usize> = HashMap::new();
    let mut out = OutBuilder::new();
    for step in 0..n {
        ev.tick(1 + lhs.len() + rhs.len())?;
        let t = ev.ts(step);
        let stamp = step + 1;
        lc.at(&lhs, t, &mut lv);
        rc.at(&rhs, t, &mut rv);
        group_slots.clear();
        for &(ri, v) in &rv {
            let sid = rsig[ri];
            if right_stamp[sid] == stamp {
                let dup = right_at[sid].0;
                let one_side = if swap { "left" } else { "right" };
                let ml = match_labels(&rhs[ri].labels, m);
                let (a, b) = if rhs[ri].labels <= rhs[dup].labels {
                    (&rhs[ri].labels, &rhs[dup].labels)
                } else {
                    (&rhs[dup].labels, &rhs[ri].labels)
                };
                return Err(QueryError::exec(format!(
                    "found duplicate series for the match group {ml} on the {one_side} hand-side of the operation: [{a}, {b}];many-to-many matching not allowed: matching labels must be unique on one side"
                )));
            }
            right_stamp[sid] = stamp;
            right_at[sid] = (ri, v);
        }
        if fill_l.is_some() {
            for &(li, _) in &lv {
                left_stamp[lsig[li]] = stamp;
            }
        }
        for &(li, lval) in &lv {
            let sig = lsig[li];
            let (ri, rval, rlabels) = if right_stamp[sig] == stamp {
                let (ri, rval) = right_at[sig];
                (Some(ri), rval, Some(&rhs[ri].labels))
            } else {
                match fill_r {
                    Some(f) => (None, f, None),
                    None => continue,
                }
            };
            // Cardinality is checked before comparison filters drop anything.
            if ri.is_some() && m.card == Cardinality::OneToOne {
                if matched_stamp[sig] == stamp {
                    return Err(QueryError::exec(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    ));
                }
                matched_stamp[sig] = stamp;
            }
            let (fl, fr) = if swap { (rval, lval) } else { (lval, rval) };
            let (mut v, keep) = float_op(op, fl, fr);
            if b.return_bool {
                v = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            if op.is_comparison() && !b.return_bool && swap {
                // A filter keeps the value of the operator's left operand.
                v = fl;
            }
            // Result labels depend only on the pair, so their output slot is
            // computed once per pair rather than per step.
            let dn = (drop && !drop_now) || lhs[li].drop_name;
            let slot = match ri {
                Some(ri) => *pair_slot.entry((li, ri)).or_insert_with(|| {
                    out.slot(result_labels(&lhs[li].labels, rlabels, m, drop_now), dn)
                }),
                None => *lfill_slot.entry(li).or_insert_with(|| {
                    out.slot(result_labels(&lhs[li].labels, None, m, drop_now), dn)
                }),
            };
            if dn {
                out.series[slot].drop_name = true;
            }
            if ri.is_some() && m.card != Cardinality::OneToOne && !group_slots.insert((sig, slot)) {
                return Err(QueryError::exec(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                ));
            }
            out.push(slot, t, v)?;
        }
        if let Some(f) = fill_l {
            for &(ri, rval) in &rv {
                if left_stamp[rsig[ri]] == stamp {
                    continue;
                }
                let (fl, fr) = if swap { (rval, f) } else { (f, rval) };
                let (mut v, keep) = float_op(op, fl, fr);
                if b.return_bool {
                    v = if keep { 1.0 } else { 0.0 };
                } else if !keep {
                    continue;
                }
                if op.is_comparison() && !b.return_bool {
                    v = fl;
                }
                let dn = drop && !drop_now;
                let slot = *rfill_slot
                    .entry(ri)
                    .or_insert_with(|| out.slot(match_labels(&rhs[ri].labels, m), dn));
                out.push(slot, t, v)?;
            }
        }
    }
    let mut res = out.series;
    res.retain(|s| !s.points.is_empty());
    finalize_names(ev, &mut res);
    Ok(res)
}
