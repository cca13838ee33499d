//! Label functions: `label_replace`, `label_join`, and `absent` (whose labels
//! come from the selector's equality matchers).

use std::collections::HashMap;

use pharos_storage::labels::{is_valid_label_name, Labels, MatchType, METRIC_NAME};

use crate::engine::binary::OutBuilder;
use crate::engine::eval::{unparen, Evaluator, RSeries, Val};
use crate::engine::QueryError;
use crate::parser::ast::{Call, Expr};

use super::{string_arg, vector_arg};

/// Labels of `absent(…)`/`absent_over_time(…)`: the selector's equality
/// matchers, except names matched more than once (no single value) and
/// `__name__`.
pub(crate) fn absent_labels(e: &Expr) -> Labels {
    let vs = match unparen(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for m in &vs.matchers {
        *uses.entry(m.name.as_str()).or_default() += 1;
    }
    let pairs: Vec<(&str, &str)> = vs
        .matchers
        .iter()
        .filter(|m| {
            m.kind == MatchType::Equal && m.name != METRIC_NAME && uses[m.name.as_str()] == 1
        })
        .map(|m| (m.name.as_str(), m.value.as_str()))
        .collect();
    Labels::from_pairs(pairs)
}

/// Rebuilds series with new labels, merging series that end up with the same
/// label set (an error if they have a point at the same step).
fn relabel(
    v: Vec<RSeries>,
    mut f: impl FnMut(&RSeries) -> (Labels, bool),
) -> Result<Vec<RSeries>, QueryError> {
    let mut out = OutBuilder::new();
    let mut slots = Vec::with_capacity(v.len());
    for s in &v {
        let (labels, drop) = f(s);
        slots.push(out.slot(labels, drop));
    }
    // Push in time order across series so duplicates at one step are found.
    let mut events: Vec<(i64, usize, f64)> = Vec::new();
    for (s, &slot) in v.iter().zip(&slots) {
        events.extend(s.points.iter().map(|&(t, x)| (t, slot, x)));
    }
    events.sort_by_key(|e| (e.1, e.0));
    for (t, slot, x) in events {
        out.push(slot, t, x)?;
    }
    let mut res = out.series;
    res.retain(|s| !s.points.is_empty());
    Ok(res)
}

pub(crate) fn eval(ev: &mut Evaluator<'_>, c: &Call) -> Result<Option<Val>, QueryError> {
    let name = c.func.as_str();
    let wrong = || QueryError::bad(format!("wrong number of arguments for function \"{name}\""));
    let res = match name {
        "label_replace" => {
            let v = vector_arg(ev, c.args.first().ok_or_else(wrong)?, name)?;
            let dst = string_arg(ev, c.args.get(1).ok_or_else(wrong)?, name)?;
            let repl = string_arg(ev, c.args.get(2).ok_or_else(wrong)?, name)?;
            let src = string_arg(ev, c.args.get(3).ok_or_else(wrong)?, name)?;
            let re_s = string_arg(ev, c.args.get(4).ok_or_else(wrong)?, name)?;
            let re = regex::Regex::new(&format!("^(?s:{re_s})$")).map_err(|e| {
                QueryError::exec(format!(
                    "invalid regular expression in label_replace(): {re_s}: {e}"
                ))
            })?;
            if !is_valid_label_name(&dst) {
                return Err(QueryError::exec(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let out = relabel(v, |s| {
                let sv = s.labels.get_or_empty(&src);
                match re.captures(sv) {
                    Some(caps) => {
                        let mut res = String::new();
                        caps.expand(&repl, &mut res);
                        let mut b = s.labels.builder();
                        b.set(&dst, &res);
                        let drop = s.drop_name && dst != METRIC_NAME;
                        (b.build(), drop)
                    }
                    None => (s.labels.clone(), s.drop_name),
                }
            })?;
            Val::Vector(out)
        }
        "label_join" => {
            let v = vector_arg(ev, c.args.first().ok_or_else(wrong)?, name)?;
            let dst = string_arg(ev, c.args.get(1).ok_or_else(wrong)?, name)?;
            let sep = string_arg(ev, c.args.get(2).ok_or_else(wrong)?, name)?;
            let mut srcs = Vec::new();
            for a in c.args.iter().skip(3) {
                let s = string_arg(ev, a, name)?;
                if !is_valid_label_name(&s) {
                    return Err(QueryError::exec(format!(
                        "invalid source label name in label_join(): {s}"
                    )));
                }
                srcs.push(s);
            }
            if !is_valid_label_name(&dst) {
                return Err(QueryError::exec(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let out = relabel(v, |s| {
                let joined = srcs
                    .iter()
                    .map(|n| s.labels.get_or_empty(n))
                    .collect::<Vec<_>>()
                    .join(&sep);
                let mut b = s.labels.builder();
                b.set(&dst, &joined);
                let drop = s.drop_name && dst != METRIC_NAME;
                (b.build(), drop)
            })?;
            Val::Vector(out)
        }
        "absent" => {
            let arg = c.args.first().ok_or_else(wrong)?;
            let v = vector_arg(ev, arg, name)?;
            let n = ev.nsteps();
            let mut present = vec![false; n];
            for s in &v {
                for &(t, _) in &s.points {
                    present[ev.step_of(t)] = true;
                }
            }
            let points: Vec<(i64, f64)> = (0..n)
                .filter(|&i| !present[i])
                .map(|i| (ev.ts(i), 1.0))
                .collect();
            if points.is_empty() {
                Val::Vector(Vec::new())
            } else {
                Val::Vector(vec![RSeries {
                    labels: absent_labels(arg),
                    drop_name: false,
                    points,
                }])
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(res))
}
