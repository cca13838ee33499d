//! Answers of `/api/v1/rules` and `/api/v1/alerts`, shaped as Prometheus
//! 2.42 gives them, and the rules endpoint's filters. The node wraps `data`
//! in its usual `{"status":"success","data":…}` envelope.

use std::collections::BTreeMap;

use pharos_storage::labels::Labels;
use serde::Serialize;

use crate::eval::{Alert, AlertState, Group, RuleState};
use crate::template::format::go_e;

/// Go's JSON encoding writes whole floats without a fraction (`60`, not
/// `60.0`); clients compare these answers byte for byte in tests.
fn go_float<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// `data` of `/api/v1/rules`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RulesData {
    pub groups: Vec<ApiRuleGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiRuleGroup {
    pub name: String,
    pub file: String,
    pub rules: Vec<ApiRule>,
    /// Seconds.
    #[serde(serialize_with = "go_float")]
    pub interval: f64,
    pub limit: usize,
    #[serde(rename = "evaluationTime", serialize_with = "go_float")]
    pub evaluation_time: f64,
    #[serde(rename = "lastEvaluation")]
    pub last_evaluation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ApiRule {
    Alerting(ApiAlertingRule),
    Recording(ApiRecordingRule),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiAlertingRule {
    pub state: String,
    pub name: String,
    pub query: String,
    /// `for`, in seconds.
    #[serde(serialize_with = "go_float")]
    pub duration: f64,
    #[serde(rename = "keepFiringFor", serialize_with = "go_float")]
    pub keep_firing_for: f64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub alerts: Vec<ApiActiveAlert>,
    pub health: String,
    #[serde(rename = "lastError", skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(rename = "evaluationTime", serialize_with = "go_float")]
    pub evaluation_time: f64,
    #[serde(rename = "lastEvaluation")]
    pub last_evaluation: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiRecordingRule {
    pub name: String,
    pub query: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub health: String,
    #[serde(rename = "lastError", skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(rename = "evaluationTime", serialize_with = "go_float")]
    pub evaluation_time: f64,
    #[serde(rename = "lastEvaluation")]
    pub last_evaluation: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// An alert in both endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiActiveAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub state: String,
    #[serde(rename = "activeAt", skip_serializing_if = "Option::is_none")]
    pub active_at: Option<String>,
    /// `strconv.FormatFloat(v, 'e', -1, 64)`, e.g. `1e+00`.
    pub value: String,
}

/// `data` of `/api/v1/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertsData {
    pub alerts: Vec<ApiActiveAlert>,
}

/// Which rules `/api/v1/rules` returns (`type`, `rule_name[]`,
/// `rule_group[]`, `file[]`; empty lists match everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulesFilter {
    /// `Some("alert")` or `Some("record")`.
    pub kind: Option<String>,
    pub rule_names: Vec<String>,
    pub rule_groups: Vec<String>,
    pub files: Vec<String>,
}

/// Why a filter is invalid (API error type `bad_data`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

impl RulesFilter {
    /// Builds a filter from query parameters (repeated keys allowed).
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<RulesFilter, FilterError> {
        let mut f = RulesFilter::default();
        for (k, v) in params {
            match k {
                "type" => {
                    let v = v.to_ascii_lowercase();
                    if !v.is_empty() && v != "alert" && v != "record" {
                        return Err(FilterError(format!("invalid query parameter type='{v}'")));
                    }
                    if !v.is_empty() {
                        f.kind = Some(v);
                    }
                }
                "rule_name[]" => f.rule_names.push(v.to_string()),
                "rule_group[]" => f.rule_groups.push(v.to_string()),
                "file[]" => f.files.push(v.to_string()),
                _ => {}
            }
        }
        Ok(f)
    }
}

/// Go's `time.Time` JSON form (RFC 3339, trailing zero fraction trimmed);
/// 0 is Go's zero time.
pub fn go_time(ms: i64) -> String {
    if ms == 0 {
        return "0001-01-01T00:00:00Z".to_string();
    }
    let s = crate::notifier::rfc3339_ms(ms);
    // "…:SS.mmmZ" → trim zeros of the fraction.
    match s.split_once('.') {
        Some((head, frac)) => {
            let f = frac.trim_end_matches('Z').trim_end_matches('0');
            if f.is_empty() {
                format!("{head}Z")
            } else {
                format!("{head}.{f}Z")
            }
        }
        None => s,
    }
}

fn map(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn api_alert(a: &Alert) -> ApiActiveAlert {
    ApiActiveAlert {
        labels: map(&a.labels),
        annotations: a.annotations.clone(),
        state: a.state.as_str().to_string(),
        active_at: Some(go_time(a.active_at)),
        value: go_e_shortest(a.value),
    }
}

/// Go's `FormatFloat(v, 'e', -1, 64)`.
fn go_e_shortest(v: f64) -> String {
    if !v.is_finite() {
        return go_e(v, 0);
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// Builds the `/api/v1/rules` answer from a snapshot of the groups.
pub fn rules_data(groups: &[Group], filter: &RulesFilter) -> RulesData {
    let want_alert = filter.kind.as_deref() != Some("record");
    let want_record = filter.kind.as_deref() != Some("alert");
    let rule_filtered = filter.kind.is_some() || !filter.rule_names.is_empty();
    let mut out = Vec::new();
    for g in groups {
        let file = g.file.to_string_lossy().to_string();
        if !filter.rule_groups.is_empty() && !filter.rule_groups.contains(&g.name) {
            continue;
        }
        if !filter.files.is_empty() && !filter.files.contains(&file) {
            continue;
        }
        let mut rules = Vec::new();
        for r in &g.rules {
            if !filter.rule_names.is_empty() && !filter.rule_names.contains(&r.def.name) {
                continue;
            }
            let labels: BTreeMap<String, String> = r.def.labels.clone();
            match &r.state {
                RuleState::Alerting(a) if want_alert => {
                    rules.push(ApiRule::Alerting(ApiAlertingRule {
                        state: a.state().as_str().to_string(),
                        name: r.def.name.clone(),
                        query: r.def.expr.to_string(),
                        duration: r.def.for_ms as f64 / 1000.0,
                        keep_firing_for: r.def.keep_firing_for_ms as f64 / 1000.0,
                        labels,
                        annotations: r.def.annotations.clone(),
                        alerts: a.active_alerts().into_iter().map(api_alert).collect(),
                        health: r.health.as_str().to_string(),
                        last_error: r.last_error.clone(),
                        evaluation_time: r.evaluation_duration.as_secs_f64(),
                        last_evaluation: go_time(r.last_evaluation_ms),
                        kind: "alerting",
                    }))
                }
                RuleState::Recording if want_record => {
                    rules.push(ApiRule::Recording(ApiRecordingRule {
                        name: r.def.name.clone(),
                        query: r.def.expr.to_string(),
                        labels,
                        health: r.health.as_str().to_string(),
                        last_error: r.last_error.clone(),
                        evaluation_time: r.evaluation_duration.as_secs_f64(),
                        last_evaluation: go_time(r.last_evaluation_ms),
                        kind: "recording",
                    }))
                }
                _ => {}
            }
        }
        if rule_filtered && rules.is_empty() {
            continue;
        }
        out.push(ApiRuleGroup {
            name: g.name.clone(),
            file,
            rules,
            interval: g.interval_ms as f64 / 1000.0,
            limit: g.limit,
            evaluation_time: g.evaluation_duration.as_secs_f64(),
            last_evaluation: go_time(g.last_evaluation_ms),
        });
    }
    RulesData { groups: out }
}

/// Builds the `/api/v1/alerts` answer: every pending and firing alert.
pub fn alerts_data(groups: &[Group]) -> AlertsData {
    let mut alerts = Vec::new();
    for g in groups {
        for r in &g.rules {
            if let RuleState::Alerting(a) = &r.state {
                alerts.extend(
                    a.active_alerts()
                        .into_iter()
                        .filter(|a| a.state != AlertState::Inactive)
                        .map(api_alert),
                );
            }
        }
    }
    AlertsData { alerts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::eval::{EvalContext, Group};
    use crate::rules::parse_file;
    use pharos_query::engine::Engine;
    use pharos_storage::head::Head;

    #[test]
    fn rules_and_alerts_answers() {
        let text = "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: vector(1)\n      - alert: A\n        expr: vector(2)\n        for: 1m\n        labels:\n          sev: x\n        annotations:\n          s: v={{ $value }}\n  - name: h\n    rules:\n      - record: q\n        expr: vector(3)\n";
        let loaded = parse_file(Path::new("/r.yml"), text).unwrap();
        let head = Head::default();
        let engine = Engine::default();
        let ext = Labels::empty();
        let mut groups: Vec<Group> = loaded.into_iter().map(|g| Group::new(g, 60_000)).collect();
        for g in &mut groups {
            g.set_restored();
            let cx = EvalContext {
                engine: &engine,
                queryable: &head,
                sink: &head,
                external_labels: &ext,
                external_url: "http://x",
            };
            g.eval(1_000, &cx);
        }
        let all = rules_data(&groups, &RulesFilter::default());
        let json = serde_json::to_value(&all).unwrap();
        let g0 = &json["groups"][0];
        assert_eq!(g0["name"], "g");
        assert_eq!(g0["file"], "/r.yml");
        assert_eq!(g0["interval"], 60);
        assert_eq!(g0["lastEvaluation"], "1970-01-01T00:00:01Z");
        assert_eq!(g0["rules"][0]["type"], "recording");
        assert_eq!(g0["rules"][0]["health"], "ok");
        assert_eq!(g0["rules"][1]["type"], "alerting");
        assert_eq!(g0["rules"][1]["state"], "pending");
        assert_eq!(g0["rules"][1]["duration"], 60);
        assert_eq!(g0["rules"][1]["alerts"][0]["value"], "2e+00");
        assert_eq!(g0["rules"][1]["alerts"][0]["annotations"]["s"], "v=2");
        assert!(g0["rules"][1].get("lastError").is_none());
        let f = RulesFilter::from_params([("type", "alert")]).unwrap();
        let d = rules_data(&groups, &f);
        assert_eq!(d.groups.len(), 1);
        assert_eq!(d.groups[0].rules.len(), 1);
        let f = RulesFilter::from_params([("rule_group[]", "h"), ("file[]", "/r.yml")]).unwrap();
        assert_eq!(rules_data(&groups, &f).groups[0].name, "h");
        let f = RulesFilter::from_params([("rule_name[]", "q")]).unwrap();
        assert_eq!(rules_data(&groups, &f).groups.len(), 1);
        assert!(RulesFilter::from_params([("type", "bogus")]).is_err());
        let a = alerts_data(&groups);
        assert_eq!(a.alerts.len(), 1);
        assert_eq!(a.alerts[0].labels["alertname"], "A");
        assert_eq!(
            a.alerts[0].active_at.as_deref(),
            Some("1970-01-01T00:00:01Z")
        );
    }
}
