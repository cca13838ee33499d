//! Rule unit tests in the format of `promtool test rules` (Prometheus
//! 2.42): `rule_files`, `evaluation_interval`, `group_eval_order`, `tests`
//! with `input_series`, `alert_rule_test`, `promql_expr_test`,
//! `external_labels`, `external_url`.
//!
//! Owns: the test-file model, the simulation (input samples appended up to
//! each evaluation time, every group evaluated at every
//! `evaluation_interval` step from 0 to the largest `eval_time`, alerts
//! compared at the step whose interval holds their `eval_time`, PromQL
//! checks run after the simulation) and promtool's report text.
//!
//! Input series use the PromQL test notation (`0+10x10`, `_x3`, `stale`),
//! parsed by `pharos_query::promqltest::script`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use pharos_query::engine::Engine;
use pharos_query::parser::parse_with;
use pharos_query::promqltest::script::{parse_metric, parse_series_line, SeriesValue};
use pharos_storage::head::Head;
use pharos_storage::labels::{go_quote, Labels};
use serde::Deserialize;

use crate::eval::{query_vector, EvalContext, Group, RuleState};
use crate::rules::{expand_globs, load_file, parse_duration_ms, rule_parse_options};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<PromqlTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default, rename = "name")]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromqlTest {
    expr: String,
    eval_time: String,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    value: f64,
}

/// Prometheus's `model.Duration` text (`1h30m`, `0s`).
pub fn fmt_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    if rest < 0 {
        out.push('-');
        rest = -rest;
    }
    for (unit, size) in [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// Go's `FormatFloat(v, 'E', -1, 64)`.
fn fmt_upper_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}E{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// Labels and annotations of one alert, in promtool's text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LabAnn {
    labels: Labels,
    /// A map, not `Labels`: promtool keeps empty annotation values.
    annotations: BTreeMap<String, String>,
}

/// `{a="1", b=""}`, as Prometheus prints a label set.
fn fmt_map(m: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn indent_lines(s: &str, indent: &str) -> String {
    let parts: Vec<&str> = s.split('\n').collect();
    let mut out = String::new();
    for (i, l) in parts.iter().enumerate() {
        if i > 0 {
            out.push_str(indent);
        }
        out.push_str(l);
        if i != parts.len() - 1 {
            out.push('\n');
        }
    }
    out
}

fn fmt_alerts(v: &[LabAnn]) -> String {
    if v.is_empty() {
        return "[]".into();
    }
    let one = |a: &LabAnn| {
        format!(
            "\nLabels:{}\nAnnotations:{}",
            a.labels,
            fmt_map(&a.annotations)
        )
    };
    let mut s = format!("[\n0:{}", indent_lines(&one(&v[0]), "  "));
    for (i, a) in v[1..].iter().enumerate() {
        s.push_str(&format!(",\n{}:{}", i + 1, indent_lines(&one(a), "  ")));
    }
    s.push_str("\n]");
    s
}

fn fmt_samples(v: &[(Labels, f64)]) -> String {
    if v.is_empty() {
        return "nil".into();
    }
    v.iter()
        .map(|(l, x)| format!("{l} {}", fmt_upper_e(*x)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn map_labels(m: &BTreeMap<String, String>) -> Labels {
    Labels::from_pairs(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Runs every test file and writes promtool's report. Returns whether all
/// passed (promtool's exit code 0).
pub fn run(files: &[PathBuf], out: &mut impl Write) -> bool {
    let mut ok = true;
    for f in files {
        let _ = writeln!(out, "Unit Testing:  {}", f.display());
        let errs = run_file(f);
        if errs.is_empty() {
            let _ = writeln!(out, "  SUCCESS");
        } else {
            ok = false;
            let _ = writeln!(out, "  FAILED:");
            for e in errs {
                let _ = writeln!(out, "{e}");
                let _ = writeln!(out);
            }
        }
        let _ = writeln!(out);
    }
    ok
}

/// Runs one test file; the errors are promtool's messages.
pub fn run_file(path: &Path) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("open {}: {e}", path.display())],
    };
    let tf: TestFile = match serde_yaml::from_str(&text) {
        Ok(t) => t,
        Err(e) => return vec![format!("yaml: {e}")],
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let globs: Vec<String> = tf
        .rule_files
        .iter()
        .map(|r| {
            if Path::new(r).is_absolute() {
                r.clone()
            } else {
                dir.join(r).to_string_lossy().to_string()
            }
        })
        .collect();
    let rule_files = match expand_globs(&globs) {
        Ok(f) => f,
        Err(e) => return vec![e.to_string()],
    };
    let eval_interval = match tf.evaluation_interval.as_deref().map(parse_duration_ms) {
        None => 60_000,
        Some(Ok(0)) => 60_000,
        Some(Ok(v)) => v,
        Some(Err(e)) => return vec![e],
    };
    let mut order: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, g) in tf.group_eval_order.iter().enumerate() {
        if order.insert(g, i).is_some() {
            return vec![format!("group name repeated in evaluation order: {g}")];
        }
    }
    let mut errs = Vec::new();
    for t in &tf.tests {
        errs.extend(run_group(t, eval_interval, &order, &rule_files));
    }
    errs
}

fn run_group(
    tg: &TestGroup,
    eval_interval: i64,
    order: &BTreeMap<&str, usize>,
    rule_files: &[PathBuf],
) -> Vec<String> {
    let interval = match tg.interval.as_deref().map(parse_duration_ms) {
        None | Some(Ok(0)) => 60_000,
        Some(Ok(v)) => v,
        Some(Err(e)) => return vec![e],
    };
    // Input series, as (labels, samples in time order).
    let mut inputs: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
    for s in &tg.input_series {
        let line = format!("{} {}", s.series.trim(), s.values.trim());
        let (labels, slots) = match parse_series_line(&line) {
            Ok(v) => v,
            Err(e) => return vec![format!("error parsing input series {:?}: {e}", s.series)],
        };
        let mut samples = Vec::new();
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                None => {}
                Some(SeriesValue::Float(v)) => samples.push((i as i64 * interval, v)),
                Some(SeriesValue::Histogram(_)) => {
                    return vec![format!(
                        "input series {:?}: native histograms are not supported",
                        s.series
                    )]
                }
            }
        }
        inputs.push((labels, samples));
    }
    // Rule groups, in `group_eval_order` (then file) order.
    let mut groups = Vec::new();
    for f in rule_files {
        match load_file(f) {
            Ok(gs) => groups.extend(gs.into_iter().map(|g| Group::new(g, interval))),
            Err(es) => return es.into_iter().map(|e| e.to_string()).collect(),
        }
    }
    groups.sort_by_key(|g| order.get(g.name.as_str()).copied().unwrap_or(0));
    for g in &mut groups {
        // No earlier run to restore from: alerts are written from the start.
        g.set_restored();
    }

    let head = Head::default();
    let engine = Engine::new(pharos_query::engine::EngineOptions {
        default_subquery_step_ms: eval_interval,
        ..Default::default()
    });
    let ext = map_labels(&tg.external_labels);
    let test_name = if tg.name.is_empty() {
        String::new()
    } else {
        format!("    name: {},\n", tg.name)
    };

    let mut alert_times: Vec<i64> = Vec::new();
    let mut alert_tests: BTreeMap<i64, Vec<&AlertTest>> = BTreeMap::new();
    let mut errs = Vec::new();
    for a in &tg.alert_rule_test {
        let t = match parse_duration_ms(&a.eval_time) {
            Ok(t) => t,
            Err(e) => return vec![e],
        };
        alert_times.push(t);
        alert_tests.entry(t).or_default().push(a);
    }
    alert_times.sort();
    alert_times.dedup();
    let mut promql = Vec::new();
    for p in &tg.promql_expr_test {
        match parse_duration_ms(&p.eval_time) {
            Ok(t) => promql.push((t, p)),
            Err(e) => return vec![e],
        }
    }
    let maxt = alert_times
        .iter()
        .copied()
        .chain(promql.iter().map(|(t, _)| *t))
        .max()
        .unwrap_or(0);

    let mut loaded = vec![0usize; inputs.len()];
    let mut curr = 0;
    let mut ts = 0i64;
    while ts <= maxt {
        // Append input samples up to and including `ts`.
        for (i, (labels, samples)) in inputs.iter().enumerate() {
            while loaded[i] < samples.len() && samples[loaded[i]].0 <= ts {
                let (t, v) = samples[loaded[i]];
                if let Err(e) = head.append(labels, t, v) {
                    errs.push(format!("appending input series {labels}: {e}"));
                    return errs;
                }
                loaded[i] += 1;
            }
        }
        let cx = EvalContext {
            engine: &engine,
            queryable: &head,
            sink: &head,
            external_labels: &ext,
            external_url: &tg.external_url,
        };
        let mut eval_errs = Vec::new();
        for g in &mut groups {
            g.eval(ts, &cx);
            for r in &g.rules {
                if let Some(e) = &r.last_error {
                    eval_errs.push(format!(
                        "    rule: {}, time: {}, err: {e}",
                        r.def.name,
                        fmt_duration(ts)
                    ));
                }
            }
        }
        if !eval_errs.is_empty() {
            errs.extend(eval_errs);
            return errs;
        }
        while curr < alert_times.len()
            && ts <= alert_times[curr]
            && alert_times[curr] < ts + eval_interval
        {
            let t = alert_times[curr];
            for at in alert_tests.get(&t).into_iter().flatten() {
                let mut got: Vec<LabAnn> = Vec::new();
                for g in &groups {
                    for r in &g.rules {
                        if let RuleState::Alerting(a) = &r.state {
                            if a.def.name != at.alertname {
                                continue;
                            }
                            for al in a.active_alerts() {
                                if al.state == crate::eval::AlertState::Firing {
                                    got.push(LabAnn {
                                        labels: al.labels.clone(),
                                        annotations: al.annotations.clone(),
                                    });
                                }
                            }
                        }
                    }
                }
                let mut exp: Vec<LabAnn> = at
                    .exp_alerts
                    .iter()
                    .map(|e| {
                        let mut l = e.exp_labels.clone();
                        l.insert("alertname".into(), at.alertname.clone());
                        LabAnn {
                            labels: map_labels(&l),
                            annotations: e.exp_annotations.clone(),
                        }
                    })
                    .collect();
                got.sort();
                exp.sort();
                if got != exp {
                    errs.push(format!(
                        "{test_name}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                        at.alertname,
                        fmt_duration(t),
                        indent_lines(&fmt_alerts(&exp), "            "),
                        indent_lines(&fmt_alerts(&got), "            ")
                    ));
                }
            }
            curr += 1;
        }
        ts += eval_interval;
    }

    'outer: for (t, p) in promql {
        let quoted = go_quote(&p.expr);
        let got = parse_with(&p.expr, &rule_parse_options())
            .map_err(|e| e.to_string())
            .and_then(|e| query_vector(&engine, &head, &e, t));
        let got = match got {
            Ok(v) => v,
            Err(e) => {
                errs.push(format!(
                    "    expr: {quoted}, time: {}, err: {e}",
                    fmt_duration(t)
                ));
                continue;
            }
        };
        let mut got: Vec<(Labels, f64)> = got.into_iter().map(|s| (s.labels, s.v)).collect();
        let mut exp = Vec::new();
        for s in &p.exp_samples {
            let labels = if s.labels.trim().is_empty() {
                Labels::empty()
            } else {
                match parse_metric(s.labels.trim()) {
                    Ok((l, used)) if used == s.labels.trim().len() => l,
                    Ok(_) | Err(_) => {
                        errs.push(format!(
                            "    expr: {quoted}, time: {}, err: labels {}: invalid label set",
                            fmt_duration(t),
                            go_quote(&s.labels)
                        ));
                        continue 'outer;
                    }
                }
            };
            exp.push((labels, s.value));
        }
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        // Exact comparison, as promtool 2.42 does (NaN never equals NaN).
        let equal =
            exp.len() == got.len() && exp.iter().zip(&got).all(|(a, b)| a.0 == b.0 && a.1 == b.1);
        if !equal {
            errs.push(format!(
                "    expr: {quoted}, time: {},\n        exp: {}\n        got: {}",
                fmt_duration(t),
                fmt_samples(&exp),
                fmt_samples(&got)
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_promtool() {
        assert_eq!(fmt_duration(0), "0s");
        assert_eq!(fmt_duration(90_000), "1m30s");
        assert_eq!(fmt_duration(3_600_000), "1h");
        assert_eq!(fmt_upper_e(2.0), "2E+00");
        assert_eq!(fmt_upper_e(0.125), "1.25E-01");
        let a = LabAnn {
            labels: Labels::from_pairs([("alertname", "A")]),
            annotations: BTreeMap::new(),
        };
        assert_eq!(
            indent_lines(&fmt_alerts(&[a]), "    "),
            "[\n    0:\n      Labels:{alertname=\"A\"}\n      Annotations:{}\n    ]"
        );
    }
}
