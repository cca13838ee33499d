//! `info(v, {selector})`: enriches series with the data labels of matching
//! info metrics (`target_info` by default), joined on the identifying labels
//! `instance` and `job`.
//!
//! The info series are read as of the same reference time as the base
//! series (the first selector's `@`/`offset`, and those of enclosing
//! subqueries), so enrichment is step-invariant exactly when the base is.
//! Among info series of one metric name with the same identifying labels,
//! the one with the latest sample wins.

use std::collections::HashMap;

use pharos_storage::labels::{Labels, MatchType, Matcher, METRIC_NAME};

use crate::engine::binary::OutBuilder;
use crate::engine::eval::{unparen, Evaluator, Val};
use crate::engine::QueryError;
use crate::parser::ast::{Call, Expr, VectorSelector};

use super::vector_arg;

const IDENTIFYING: [&str; 2] = ["instance", "job"];

fn ident_key(l: &Labels) -> (String, String) {
    (
        l.get_or_empty(IDENTIFYING[0]).to_string(),
        l.get_or_empty(IDENTIFYING[1]).to_string(),
    )
}

pub(crate) fn eval(ev: &mut Evaluator<'_>, c: &Call) -> Result<Option<Val>, QueryError> {
    if c.func != "info" {
        return Ok(None);
    }
    let Some(base_expr) = c.args.first() else {
        return Err(QueryError::bad(
            "wrong number of arguments for function \"info\"",
        ));
    };
    let (name_matchers, data_matchers): (Vec<Matcher>, Vec<Matcher>) = match c.args.get(1) {
        Some(e) => match unparen(e) {
            Expr::VectorSelector(vs) => vs
                .matchers
                .iter()
                .cloned()
                .partition(|m| m.name == METRIC_NAME),
            _ => {
                return Err(QueryError::bad(
                    "expected label selectors as the second argument to \"info\" function",
                ))
            }
        },
        None => (Vec::new(), Vec::new()),
    };
    // No name matcher means target_info; only negated ones narrow down the
    // metrics named like info metrics.
    let positive = |m: &Matcher| matches!(m.kind, MatchType::Equal | MatchType::Regex);
    let name_matchers = if name_matchers.is_empty() {
        vec![Matcher::equal(METRIC_NAME, "target_info")]
    } else if !name_matchers.iter().any(positive) {
        let mut v = name_matchers;
        let any_info = Matcher::new(MatchType::Regex, METRIC_NAME, ".+_info")
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        v.push(any_info);
        v
    } else {
        name_matchers
    };
    let base = vector_arg(ev, base_expr, "info")?;
    let refs = ev.ref_times_of(unparen(base_expr))?;
    let mut matchers = name_matchers.clone();
    matchers.extend(data_matchers.iter().cloned());
    let sel = VectorSelector {
        name: None,
        matchers,
        offset: None,
        at: None,
        anchored: false,
        smoothed: false,
        pos: c.pos,
    };
    // Reference times may go backwards only if the base mapping does, which
    // `@`/`offset` never make happen; sort defensively for `select_at`.
    let monotonic = refs.windows(2).all(|w| w[0] <= w[1]);
    let info = if monotonic {
        ev.select_at(&sel, &refs)?
    } else {
        Vec::new()
    };
    // Per identifying key: info series indices.
    let mut by_key: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (i, (l, _)) in info.iter().enumerate() {
        by_key.entry(ident_key(l)).or_default().push(i);
    }
    // Per info series: value at each step (sample time), for quick lookup.
    let n = ev.nsteps();
    let mut at_step: Vec<Vec<Option<i64>>> = Vec::with_capacity(info.len());
    for (_, pts) in &info {
        let mut v = vec![None; n];
        for &(step, st, _) in pts {
            if step < n {
                v[step] = Some(st);
            }
        }
        at_step.push(v);
    }
    let data_names: Vec<&str> = data_matchers.iter().map(|m| m.name.as_str()).collect();
    let empty_ok = data_matchers.iter().all(|m| m.matches_empty());
    let is_info_base = |l: &Labels| {
        let name = l.metric_name().unwrap_or("");
        name_matchers.iter().all(|m| m.matches(name))
    };
    let mut out = OutBuilder::new();
    for s in &base {
        if is_info_base(&s.labels) {
            let slot = out.slot(s.labels.clone(), s.drop_name);
            for &(t, v) in &s.points {
                out.push(slot, t, v)?;
            }
            continue;
        }
        let candidates = by_key.get(&ident_key(&s.labels));
        for &(t, v) in &s.points {
            let step = ev.step_of(t);
            // Latest sample per info metric name.
            let mut chosen: Vec<(&str, i64, usize)> = Vec::new();
            for &ii in candidates.into_iter().flatten() {
                let Some(st) = at_step[ii][step] else {
                    continue;
                };
                let name = info[ii].0.metric_name().unwrap_or("");
                match chosen.iter_mut().find(|c| c.0 == name) {
                    Some(c) if st > c.1 => *c = (name, st, ii),
                    Some(_) => {}
                    None => chosen.push((name, st, ii)),
                }
            }
            if chosen.is_empty() {
                if empty_ok {
                    let slot = out.slot(s.labels.clone(), s.drop_name);
                    out.push(slot, t, v)?;
                }
                continue;
            }
            let mut b = s.labels.builder();
            let mut added: HashMap<String, String> = HashMap::new();
            for &(_, _, ii) in &chosen {
                for (ln, lv) in info[ii].0.iter() {
                    if ln == METRIC_NAME || IDENTIFYING.contains(&ln) || s.labels.has(ln) {
                        continue;
                    }
                    if !data_names.is_empty() && !data_names.contains(&ln) {
                        continue;
                    }
                    if let Some(prev) = added.get(ln) {
                        if prev != lv {
                            return Err(QueryError::exec(format!(
                                "conflicting label: {ln} has values {} and {} in info series",
                                pharos_storage::labels::go_quote(prev),
                                pharos_storage::labels::go_quote(lv)
                            )));
                        }
                        continue;
                    }
                    added.insert(ln.to_string(), lv.to_string());
                    b.set(ln, lv);
                }
            }
            let slot = out.slot(b.build(), s.drop_name);
            out.push(slot, t, v)?;
        }
    }
    let mut res = out.series;
    res.retain(|s| !s.points.is_empty());
    Ok(Some(Val::Vector(res)))
}
