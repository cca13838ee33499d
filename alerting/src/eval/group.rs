//! One rule group's runtime state and its evaluation at a timestamp.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pharos_query::engine::{Engine, Sample, Value};
use pharos_query::parser::parse_with;
use pharos_query::queryable::Queryable;
use pharos_storage::chunk::{SampleIterator, ValueType};
use pharos_storage::labels::{Labels, Matcher};

use super::alerting::{AlertingRule, TemplateEnv};
use super::SampleSink;
use crate::rules::{rule_parse_options, RuleDef, RuleGroup, RuleKind};
use crate::template::{QSample, TemplateQuery};

/// Everything an evaluation reads from and writes to.
pub struct EvalContext<'a> {
    pub engine: &'a Engine,
    pub queryable: &'a dyn Queryable,
    pub sink: &'a dyn SampleSink,
    pub external_labels: &'a Labels,
    /// Base URL of the node (for `generatorURL` and `$externalURL`).
    pub external_url: &'a str,
}

/// A rule's health, as the rules API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// Kind-specific state.
#[derive(Debug, Clone)]
// A group holds a handful of rules; boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
pub enum RuleState {
    Recording,
    Alerting(AlertingRule),
}

/// A rule with its evaluation status.
#[derive(Debug, Clone)]
pub struct RuleStatus {
    pub def: RuleDef,
    pub state: RuleState,
    pub health: Health,
    pub last_error: Option<String>,
    /// ms since the epoch; 0 before the first evaluation.
    pub last_evaluation_ms: i64,
    pub evaluation_duration: Duration,
    /// Series written by the last evaluation (to mark vanished ones stale).
    prev_series: HashSet<Labels>,
}

/// A group of rules evaluated together, in order.
#[derive(Debug, Clone)]
pub struct Group {
    pub file: PathBuf,
    pub name: String,
    pub interval_ms: i64,
    pub query_offset_ms: i64,
    pub limit: usize,
    pub rules: Vec<RuleStatus>,
    pub last_evaluation_ms: i64,
    pub evaluation_duration: Duration,
}

struct RuleQuery<'a> {
    engine: &'a Engine,
    queryable: &'a dyn Queryable,
    ts: i64,
}

impl TemplateQuery for RuleQuery<'_> {
    fn query(&self, q: &str) -> Result<Vec<QSample>, String> {
        let expr = parse_with(q, &rule_parse_options()).map_err(|e| e.to_string())?;
        let res = self
            .engine
            .instant_query(self.queryable, &expr, self.ts)
            .map_err(|e| e.to_string())?;
        Ok(match res.value {
            Value::Vector(v) => v
                .into_iter()
                .map(|s| QSample {
                    labels: s.labels,
                    value: s.v,
                })
                .collect(),
            Value::Scalar { v, .. } => vec![QSample {
                labels: Labels::empty(),
                value: v,
            }],
            other => {
                return Err(format!(
                    "query result is not a vector or scalar: {}",
                    other.type_name()
                ))
            }
        })
    }
}

/// Runs `expr` at `ts` and returns an instant vector (a scalar becomes one
/// sample without labels, as Prometheus's rule query function does).
pub fn query_vector(
    engine: &Engine,
    q: &dyn Queryable,
    expr: &pharos_query::parser::ast::Expr,
    ts: i64,
) -> Result<Vec<Sample>, String> {
    let res = engine
        .instant_query(q, expr, ts)
        .map_err(|e| e.to_string())?;
    match res.value {
        Value::Vector(v) => Ok(v),
        Value::Scalar { t, v } => Ok(vec![Sample {
            labels: Labels::empty(),
            t,
            v,
        }]),
        _ => Err("rule result is not a vector or scalar".into()),
    }
}

impl Group {
    /// Builds the runtime form of a loaded group; `default_interval_ms`
    /// applies when the group has none.
    pub fn new(g: RuleGroup, default_interval_ms: i64) -> Group {
        Group {
            file: g.file,
            name: g.name,
            interval_ms: g
                .interval_ms
                .filter(|i| *i > 0)
                .unwrap_or(default_interval_ms),
            query_offset_ms: g.query_offset_ms.unwrap_or(0),
            limit: g.limit,
            rules: g
                .rules
                .into_iter()
                .map(|def| RuleStatus {
                    state: match def.kind {
                        RuleKind::Recording => RuleState::Recording,
                        RuleKind::Alerting => RuleState::Alerting(AlertingRule::new(def.clone())),
                    },
                    def,
                    health: Health::Unknown,
                    last_error: None,
                    last_evaluation_ms: 0,
                    evaluation_duration: Duration::ZERO,
                    prev_series: HashSet::new(),
                })
                .collect(),
            last_evaluation_ms: 0,
            evaluation_duration: Duration::ZERO,
        }
    }

    /// Identity of a group across reloads.
    pub fn key(&self) -> (PathBuf, String) {
        (self.file.clone(), self.name.clone())
    }

    /// Marks every alerting rule restored (no `ALERTS_FOR_STATE` to read:
    /// unit tests, or a group that is new on reload).
    pub fn set_restored(&mut self) {
        for r in &mut self.rules {
            if let RuleState::Alerting(a) = &mut r.state {
                a.restored = true;
            }
        }
    }

    /// Carries alert state over from the same group before a reload, rule by
    /// rule where name, expression and labels are unchanged.
    pub fn copy_state_from(&mut self, old: &Group) {
        for r in &mut self.rules {
            let Some(o) = old.rules.iter().find(|o| {
                o.def.name == r.def.name
                    && o.def.expr_text == r.def.expr_text
                    && o.def.labels == r.def.labels
                    && o.def.kind == r.def.kind
            }) else {
                continue;
            };
            r.prev_series = o.prev_series.clone();
            r.health = o.health;
            r.last_error = o.last_error.clone();
            r.last_evaluation_ms = o.last_evaluation_ms;
            r.evaluation_duration = o.evaluation_duration;
            if let (RuleState::Alerting(new), RuleState::Alerting(prev)) = (&mut r.state, &o.state)
            {
                new.active = prev.active.clone();
                new.restored = prev.restored;
            }
        }
        self.last_evaluation_ms = old.last_evaluation_ms;
        self.evaluation_duration = old.evaluation_duration;
    }

    /// Evaluates every rule at `ts`, in order, appending each rule's output
    /// before the next rule runs.
    pub fn eval(&mut self, ts: i64, cx: &EvalContext<'_>) {
        let started = Instant::now();
        let qts = ts - self.query_offset_ms;
        for r in &mut self.rules {
            let rstart = Instant::now();
            let result = query_vector(cx.engine, cx.queryable, &r.def.expr, qts);
            let samples: Result<Vec<(Labels, f64)>, String> = match result {
                Err(e) => Err(e),
                Ok(vec) => match &mut r.state {
                    RuleState::Recording => record(&r.def, vec, self.limit),
                    RuleState::Alerting(a) => {
                        let q = RuleQuery {
                            engine: cx.engine,
                            queryable: cx.queryable,
                            ts: qts,
                        };
                        let env = TemplateEnv {
                            external_labels: cx.external_labels,
                            external_url: cx.external_url,
                            query: Some(&q),
                        };
                        a.eval(vec, qts, self.limit, &env)
                    }
                },
            };
            r.last_evaluation_ms = ts;
            match samples {
                Err(e) => {
                    tracing::warn!(group = %self.name, rule = %r.def.name, error = %e, "rule evaluation failed");
                    r.health = Health::Err;
                    r.last_error = Some(e);
                }
                Ok(samples) => {
                    let batch: Vec<(Labels, i64, f64)> =
                        samples.iter().map(|(l, v)| (l.clone(), qts, *v)).collect();
                    let now: HashSet<Labels> = samples.into_iter().map(|(l, _)| l).collect();
                    // Series that vanished get a staleness marker, so queries
                    // stop seeing them at once rather than after 5m.
                    let stale: Vec<(Labels, i64, f64)> = r
                        .prev_series
                        .difference(&now)
                        .map(|l| {
                            (
                                l.clone(),
                                qts,
                                pharos_query::promqltest::script::stale_nan(),
                            )
                        })
                        .collect();
                    match cx.sink.append(&batch) {
                        Ok(()) => {
                            r.health = Health::Ok;
                            r.last_error = None;
                        }
                        Err(e) => {
                            r.health = Health::Err;
                            r.last_error = Some(format!("writing rule results: {e}"));
                        }
                    }
                    if !stale.is_empty() {
                        if let Err(e) = cx.sink.append(&stale) {
                            tracing::debug!(rule = %r.def.name, error = %e, "writing staleness markers");
                        }
                    }
                    r.prev_series = now;
                }
            }
            r.evaluation_duration = rstart.elapsed();
        }
        self.last_evaluation_ms = ts;
        self.evaluation_duration = started.elapsed();
    }

    /// Restores `for` state of every alerting rule from `ALERTS_FOR_STATE`
    /// written in `[ts - outage_tolerance_ms, ts]` (run after the first
    /// evaluation following a start).
    pub fn restore_for_state(
        &mut self,
        ts: i64,
        q: &dyn Queryable,
        outage_tolerance_ms: i64,
        grace_ms: i64,
    ) {
        let mint = ts - outage_tolerance_ms;
        for r in &mut self.rules {
            let RuleState::Alerting(a) = &mut r.state else {
                continue;
            };
            a.restore(ts, grace_ms, |labels| {
                let mut ms = vec![Matcher::equal("__name__", "ALERTS_FOR_STATE")];
                ms.extend(labels.iter().map(|(k, v)| Matcher::equal(k, v)));
                let series = match q.select(mint, ts, &ms, None) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%e, "reading ALERTS_FOR_STATE to restore alert state");
                        return None;
                    }
                };
                let want = {
                    let mut b = labels.builder();
                    b.set("__name__", "ALERTS_FOR_STATE");
                    b.build()
                };
                let s = series.into_iter().find(|s| s.labels == want)?;
                let mut it = s.iter_range(mint, ts);
                let mut last = None;
                while it.next() == ValueType::Float {
                    last = Some(it.at());
                }
                last
            });
        }
    }

    /// Whether any alerting rule still waits for its state to be restored.
    pub fn needs_restore(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(&r.state, RuleState::Alerting(a) if !a.restored))
    }
}

/// The output series of a recording rule.
fn record(def: &RuleDef, vec: Vec<Sample>, limit: usize) -> Result<Vec<(Labels, f64)>, String> {
    let mut out = Vec::with_capacity(vec.len());
    let mut seen = HashSet::new();
    for s in vec {
        let mut b = s.labels.builder();
        b.set("__name__", &def.name);
        for (k, v) in &def.labels {
            b.set(k, v);
        }
        let l = b.build();
        if !seen.insert(l.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        out.push((l, s.v));
    }
    if limit > 0 && out.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use pharos_storage::head::Head;

    use super::*;
    use crate::rules::parse_file;

    fn group(text: &str) -> Group {
        let mut g = Group::new(
            parse_file(Path::new("t.yml"), text).unwrap().remove(0),
            60_000,
        );
        g.set_restored();
        g
    }

    fn at(head: &Head, q: &str, t: i64) -> Vec<Sample> {
        query_vector(
            &Engine::default(),
            head,
            &pharos_query::parser::parse(q).unwrap(),
            t,
        )
        .unwrap()
    }

    fn eval(g: &mut Group, head: &Head, t: i64) {
        let ext = Labels::empty();
        let engine = Engine::default();
        let cx = EvalContext {
            engine: &engine,
            queryable: head,
            sink: head,
            external_labels: &ext,
            external_url: "",
        };
        g.eval(t, &cx);
    }

    #[test]
    fn vanished_series_are_marked_stale() {
        let head = Head::default();
        let src = Labels::from_pairs([("__name__", "src"), ("k", "a")]);
        let mut g = group("groups:\n  - name: g\n    rules:\n      - record: copy\n        expr: src\n        labels:\n          via: rule\n");
        head.append(&src, 1_000, 5.0).unwrap();
        eval(&mut g, &head, 1_000);
        let v = at(&head, "copy", 1_000);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].labels.get("via"), Some("rule"));
        assert_eq!(v[0].labels.get("k"), Some("a"));
        // The source goes stale; the next evaluation marks the copy stale
        // at once instead of leaving it visible for the 5m lookback.
        head.append(&src, 2_000, pharos_query::promqltest::script::stale_nan())
            .unwrap();
        eval(&mut g, &head, 3_000);
        assert!(at(&head, "copy", 3_000).is_empty());
        assert_eq!(g.rules[0].health, Health::Ok);
    }

    #[test]
    fn errors_are_reported_per_rule() {
        let head = Head::default();
        for k in ["a", "b"] {
            head.append(&Labels::from_pairs([("__name__", "x"), ("k", k)]), 0, 1.0)
                .unwrap();
        }
        let mut g = group("groups:\n  - name: g\n    limit: 1\n    rules:\n      - record: too_many\n        expr: x\n      - record: collide\n        expr: label_replace(x, \"k\", \"\", \"k\", \".*\")\n      - record: ok\n        expr: vector(1)\n      - record: notvector\n        expr: '\"str\"'\n");
        g.limit = 0;
        eval(&mut g, &head, 1_000);
        assert_eq!(g.rules[0].health, Health::Ok);
        assert!(g.rules[1]
            .last_error
            .as_deref()
            .unwrap()
            .contains("same labelset"));
        assert_eq!(g.rules[2].health, Health::Ok);
        assert_eq!(
            g.rules[3].last_error.as_deref(),
            Some("rule result is not a vector or scalar")
        );
        g.limit = 1;
        eval(&mut g, &head, 2_000);
        assert_eq!(
            g.rules[0].last_error.as_deref(),
            Some("exceeded limit of 1 with 2 series")
        );
    }

    #[test]
    fn query_offset_shifts_query_and_output() {
        let head = Head::default();
        head.append(&Labels::from_pairs([("__name__", "x")]), 0, 7.0)
            .unwrap();
        let mut g = group("groups:\n  - name: g\n    query_offset: 30s\n    rules:\n      - record: y\n        expr: x\n");
        eval(&mut g, &head, 60_000);
        let v = at(&head, "y", 30_000);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].v, 7.0);
        assert_eq!(g.last_evaluation_ms, 60_000);
    }
}
