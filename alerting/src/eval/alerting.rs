//! Alerting-rule state: pending → firing after `for`, `keep_firing_for`,
//! resolved, the `ALERTS`/`ALERTS_FOR_STATE` samples, and restoring `for`
//! timers from `ALERTS_FOR_STATE` after a restart.
//!
//! The state machine follows Prometheus's: an alert is identified by its
//! label set after templating; a resolved alert is kept for 15 minutes so
//! it is sent as resolved; alert samples are produced only once the rule is
//! *restored* (so a restarting node does not write `ALERTS` with a fresh
//! `for` timer before it has read the old one). The series are described in
//! `alerting/docs/alert-state.md`.

use std::collections::{BTreeMap, HashMap};

use pharos_query::engine::Sample;
use pharos_storage::labels::{Labels, LabelsBuilder};

use crate::rules::RuleDef;
use crate::template::{expand_alert_template, TemplateData, TemplateQuery};

/// How long a resolved alert is kept (and re-sent as resolved).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule. Times are ms since the epoch; 0 is "never".
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    /// Expanded annotations; unlike labels, empty values are kept.
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub value: f64,
    pub active_at: i64,
    pub fired_at: i64,
    pub resolved_at: i64,
    pub last_sent_at: i64,
    pub valid_until: i64,
    pub keep_firing_since: i64,
}

impl Alert {
    /// Whether the notifier should get this alert now (Prometheus's
    /// `needsSending`).
    pub fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        if self.resolved_at > self.last_sent_at {
            return true;
        }
        self.last_sent_at.saturating_add(resend_delay_ms) < ts
    }
}

/// Runtime state of one alerting rule.
#[derive(Debug, Clone)]
pub struct AlertingRule {
    pub def: RuleDef,
    /// Active alerts by label hash (collisions resolved by the label set).
    pub active: HashMap<Labels, Alert>,
    /// Whether `for` state has been restored (or needs no restoring).
    pub restored: bool,
}

/// What the templates need from the evaluation context.
pub struct TemplateEnv<'a> {
    pub external_labels: &'a Labels,
    pub external_url: &'a str,
    pub query: Option<&'a dyn TemplateQuery>,
}

impl AlertingRule {
    pub fn new(def: RuleDef) -> Self {
        AlertingRule {
            def,
            active: HashMap::new(),
            restored: false,
        }
    }

    fn expand(&self, text: &str, data: &TemplateData<'_>, env: &TemplateEnv<'_>) -> String {
        let name = format!("__alert_{}", self.def.name);
        match expand_alert_template(&name, text, data, env.query) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(alert = %self.def.name, error = %e, "expanding alert template failed");
                format!("<error expanding template: {e}>")
            }
        }
    }

    /// Applies one evaluation result at `ts`. Returns the `ALERTS` and
    /// `ALERTS_FOR_STATE` samples to write (empty until restored).
    pub fn eval(
        &mut self,
        result: Vec<Sample>,
        ts: i64,
        limit: usize,
        env: &TemplateEnv<'_>,
    ) -> Result<Vec<(Labels, f64)>, String> {
        let mut current: BTreeMap<Labels, Alert> = BTreeMap::new();
        for s in result {
            // Templates see the sample's labels as they are, metric name
            // included (Prometheus's `$labels`); only the alert's own label
            // set drops it.
            let data = TemplateData {
                labels: &s.labels,
                external_labels: env.external_labels,
                external_url: env.external_url,
                value: s.v,
            };
            let mut lb = LabelsBuilder::new();
            for (k, v) in s.labels.iter() {
                if k != "__name__" {
                    lb.set(k, v);
                }
            }
            for (k, v) in &self.def.labels {
                let ev = self.expand(v, &data, env);
                lb.set(k, &ev);
            }
            lb.set("alertname", &self.def.name);
            let labels = lb.build();
            let annotations: BTreeMap<String, String> = self
                .def
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), self.expand(v, &data, env)))
                .collect();
            if current.contains_key(&labels) {
                return Err(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                );
            }
            current.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations,
                    state: AlertState::Pending,
                    value: s.v,
                    active_at: ts,
                    fired_at: 0,
                    resolved_at: 0,
                    last_sent_at: 0,
                    valid_until: 0,
                    keep_firing_since: 0,
                },
            );
        }
        for (labels, a) in &current {
            match self.active.get_mut(labels) {
                Some(old) if old.state != AlertState::Inactive => {
                    old.value = a.value;
                    old.annotations = a.annotations.clone();
                }
                _ => {
                    self.active.insert(labels.clone(), a.clone());
                }
            }
        }
        let mut out = Vec::new();
        let mut active_pending = 0usize;
        let hold = self.def.for_ms;
        let keep = self.def.keep_firing_for_ms;
        let mut remove = Vec::new();
        for (key, a) in self.active.iter_mut() {
            if !current.contains_key(key) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep > 0 {
                    if a.keep_firing_since == 0 {
                        a.keep_firing_since = ts;
                    }
                    keep_firing = ts - a.keep_firing_since < keep;
                }
                if a.state == AlertState::Pending
                    || (a.resolved_at != 0 && ts - a.resolved_at > RESOLVED_RETENTION_MS)
                {
                    remove.push(key.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at = ts;
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = 0;
            }
            active_pending += 1;
            if a.state == AlertState::Pending && ts - a.active_at >= hold {
                a.state = AlertState::Firing;
                a.fired_at = ts;
            }
            if self.restored {
                let mut lb = a.labels.builder();
                lb.set("__name__", "ALERTS");
                lb.set("alertstate", a.state.as_str());
                out.push((lb.build(), 1.0));
                let mut lb = a.labels.builder();
                lb.set("__name__", "ALERTS_FOR_STATE");
                out.push((lb.build(), (a.active_at / 1000) as f64));
            }
        }
        for k in remove {
            self.active.remove(&k);
        }
        if limit > 0 && active_pending > limit {
            self.active.clear();
            return Err(format!(
                "exceeded limit of {limit} with {active_pending} alerts"
            ));
        }
        Ok(out)
    }

    /// Restores `for` timers from the last `ALERTS_FOR_STATE` sample of each
    /// active alert (`last`: that sample's `(t_ms, value)`, looked up by the
    /// caller), as Prometheus does after a restart:
    /// - the alert was firing when we went down: keep the old `ActiveAt`,
    ///   so it fires again at once without a new `for` wait;
    /// - less than `grace_ms` of `for` remained: give it `grace_ms` more;
    /// - otherwise: shift `ActiveAt` by the downtime, so the time already
    ///   spent pending counts.
    ///
    /// Rules whose `for` is shorter than the grace period are not restored.
    pub fn restore(
        &mut self,
        ts: i64,
        grace_ms: i64,
        mut last: impl FnMut(&Labels) -> Option<(i64, f64)>,
    ) {
        let hold = self.def.for_ms;
        if hold < grace_ms || hold == 0 {
            self.restored = true;
            return;
        }
        for a in self.active.values_mut() {
            let Some((t, v)) = last(&a.labels) else {
                continue;
            };
            if pharos_query::promqltest::script::is_stale_nan(v) || !v.is_finite() {
                continue;
            }
            // Prometheus works in whole seconds here.
            let down_at = (t / 1000) * 1000;
            let restored_active = (v as i64) * 1000;
            let spent = down_at - restored_active;
            let remaining = hold - spent;
            let new_active = if remaining <= 0 {
                restored_active
            } else if remaining < grace_ms {
                ts + grace_ms - hold
            } else {
                restored_active + (ts - down_at)
            };
            a.active_at = new_active;
        }
        self.restored = true;
    }

    /// Alerts that are pending or firing, sorted by labels.
    pub fn active_alerts(&self) -> Vec<&Alert> {
        let mut v: Vec<&Alert> = self
            .active
            .values()
            .filter(|a| a.state != AlertState::Inactive)
            .collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    /// The rule's overall state: firing if any alert fires, else pending if
    /// any is pending.
    pub fn state(&self) -> AlertState {
        let mut s = AlertState::Inactive;
        for a in self.active.values() {
            match a.state {
                AlertState::Firing => return AlertState::Firing,
                AlertState::Pending => s = AlertState::Pending,
                AlertState::Inactive => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleKind;

    fn rule(for_ms: i64, keep_ms: i64) -> AlertingRule {
        let mut labels = BTreeMap::new();
        labels.insert("severity".to_string(), "page".to_string());
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".to_string(),
            "{{ $labels.instance }} at {{ $value }}".to_string(),
        );
        let mut r = AlertingRule::new(RuleDef {
            kind: RuleKind::Alerting,
            name: "Down".into(),
            expr: pharos_query::parser::parse("up == 0").unwrap(),
            expr_text: "up == 0".into(),
            for_ms,
            keep_firing_for_ms: keep_ms,
            labels,
            annotations,
            line: None,
        });
        r.restored = true;
        r
    }

    fn sample(v: f64) -> Vec<Sample> {
        vec![Sample {
            labels: Labels::from_pairs([("__name__", "up"), ("instance", "a")]),
            t: 0,
            v,
        }]
    }

    fn env() -> (Labels,) {
        (Labels::empty(),)
    }

    #[test]
    fn pending_then_firing_then_resolved() {
        let (ext,) = env();
        let env = TemplateEnv {
            external_labels: &ext,
            external_url: "",
            query: None,
        };
        let mut r = rule(60_000, 0);
        let out = r.eval(sample(0.0), 0, 0, &env).unwrap();
        assert_eq!(r.state(), AlertState::Pending);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0.get("alertstate"), Some("pending"));
        assert_eq!(out[1].1, 0.0);
        r.eval(sample(0.0), 30_000, 0, &env).unwrap();
        assert_eq!(r.state(), AlertState::Pending);
        let out = r.eval(sample(0.0), 60_000, 0, &env).unwrap();
        assert_eq!(r.state(), AlertState::Firing);
        assert_eq!(out[0].0.get("alertstate"), Some("firing"));
        let a = r.active_alerts()[0].clone();
        assert_eq!(a.fired_at, 60_000);
        assert_eq!(
            a.annotations.get("summary").map(String::as_str),
            Some("a at 0")
        );
        assert_eq!(a.labels.get("severity"), Some("page"));
        let out = r.eval(Vec::new(), 90_000, 0, &env).unwrap();
        assert!(out.is_empty());
        assert_eq!(r.state(), AlertState::Inactive);
        let resolved = r.active.values().next().unwrap();
        assert_eq!(resolved.resolved_at, 90_000);
        // Kept for the notifier, then dropped after the retention.
        r.eval(Vec::new(), 90_000 + RESOLVED_RETENTION_MS + 1, 0, &env)
            .unwrap();
        assert!(r.active.is_empty());
    }

    #[test]
    fn keep_firing_for_holds_the_alert() {
        let (ext,) = env();
        let env = TemplateEnv {
            external_labels: &ext,
            external_url: "",
            query: None,
        };
        let mut r = rule(0, 60_000);
        r.eval(sample(0.0), 0, 0, &env).unwrap();
        assert_eq!(r.state(), AlertState::Firing);
        r.eval(Vec::new(), 30_000, 0, &env).unwrap();
        assert_eq!(r.state(), AlertState::Firing);
        // Counted from the first evaluation without a result (30s).
        r.eval(Vec::new(), 60_000, 0, &env).unwrap();
        assert_eq!(r.state(), AlertState::Firing);
        r.eval(Vec::new(), 90_000, 0, &env).unwrap();
        assert_eq!(r.state(), AlertState::Inactive);
    }

    #[test]
    fn restore_keeps_the_original_schedule() {
        let (ext,) = env();
        let env = TemplateEnv {
            external_labels: &ext,
            external_url: "",
            query: None,
        };
        let mut r = rule(600_000, 0);
        r.restored = false;
        // First evaluation after the restart at 1000s: not yet restored, so
        // no ALERTS samples.
        assert!(r.eval(sample(0.0), 1_000_000, 0, &env).unwrap().is_empty());
        // Before the restart: active since 700s, last written at 990s.
        r.restore(1_000_000, 0, |_| Some((990_000, 700.0)));
        let a = r.active_alerts()[0];
        // 290s spent pending; the 10s of downtime do not count.
        assert_eq!(a.active_at, 710_000);
        r.eval(sample(0.0), 1_310_000, 0, &env).unwrap();
        assert_eq!(r.state(), AlertState::Firing);
        // With a grace period longer than what remains, the alert gets it.
        let mut r = rule(600_000, 0);
        r.eval(sample(0.0), 1_000_000, 0, &env).unwrap();
        r.restore(1_000_000, 300_000, |_| Some((990_000, 500.0)));
        assert_eq!(
            r.active_alerts()[0].active_at,
            1_000_000 + 300_000 - 600_000
        );
        // A limit violation clears the state and reports it.
        let mut r = rule(0, 0);
        let mut two = sample(0.0);
        two.push(Sample {
            labels: Labels::from_pairs([("__name__", "up"), ("instance", "b")]),
            t: 0,
            v: 0.0,
        });
        assert!(r
            .eval(two, 0, 1, &env)
            .unwrap_err()
            .contains("exceeded limit of 1 with 2 alerts"));
    }
}
