//! Rule files in Prometheus's format: parsing, validation, glob loading and
//! the `promtool check rules` equivalent.
//!
//! Owns: the YAML model ([`RuleFileYaml`]), the validated form the evaluator
//! runs ([`RuleGroup`], [`RuleDef`]) and [`RuleError`], which names the file,
//! the line and column where known, the group and the rule.
//!
//! Invariants of a loaded [`RuleGroup`]: every expression parsed, every label
//! and annotation template parsed, label names valid, recording rule names
//! valid metric names, group names unique within their file.
//!
//! Line numbers: `serde_yaml` reports positions only for syntax and type
//! errors, so semantic errors are located by scanning the file for the
//! rule's `record:`/`alert:` and `expr:` keys in document order (`locate.rs`).
//! Block-style YAML (what everyone writes) is located exactly; flow-style
//! rules are reported without a position.

mod check;
mod glob;
mod locate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use pharos_query::parser::ast::Expr;
use pharos_query::parser::{parse_with, ParseOptions};
use pharos_storage::labels::{is_valid_label_name, is_valid_metric_name};
use serde::Deserialize;

pub use check::{check_rule_files, CheckReport, FileCheck};
pub use glob::expand_globs;

use crate::template::parse_alert_template;

/// A rule file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFileYaml {
    #[serde(default)]
    pub groups: Vec<RuleGroupYaml>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroupYaml {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub query_offset: Option<String>,
    #[serde(default)]
    pub limit: usize,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub rules: Vec<RuleYaml>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleYaml {
    #[serde(default)]
    pub record: Option<String>,
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub expr: Option<ExprYaml>,
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `expr` may be written as a string or a bare number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ExprYaml {
    Str(String),
    Int(i64),
    Float(f64),
}

impl ExprYaml {
    fn text(&self) -> String {
        match self {
            ExprYaml::Str(s) => s.clone(),
            ExprYaml::Int(i) => i.to_string(),
            ExprYaml::Float(f) => f.to_string(),
        }
    }
}

/// Recording or alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Recording,
    Alerting,
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct RuleDef {
    pub kind: RuleKind,
    /// The `record` or `alert` name.
    pub name: String,
    pub expr: Expr,
    /// The expression as written (trimmed).
    pub expr_text: String,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    /// Rule labels merged over the group's labels, sorted by name.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// 1-based line of the rule's `record:`/`alert:` key, when located.
    pub line: Option<usize>,
}

/// One validated group.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    pub file: PathBuf,
    pub name: String,
    /// `None`: the global evaluation interval.
    pub interval_ms: Option<i64>,
    pub query_offset_ms: Option<i64>,
    /// Most series a rule may produce per evaluation; 0 is unlimited.
    pub limit: usize,
    pub rules: Vec<RuleDef>,
}

/// What is wrong with a rule file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct RuleError {
    pub path: PathBuf,
    /// 1-based line and column, when known.
    pub pos: Option<(usize, usize)>,
    /// `group "g", rule 2, "name"`, when the error is about a rule.
    pub context: Option<String>,
    pub msg: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        if let Some((l, c)) = self.pos {
            write!(f, "{l}:{c}: ")?;
        }
        if let Some(c) = &self.context {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.msg)
    }
}

/// A rule with the same name and labels as another in the same file.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateRule {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// promtool's duplicate-rule lint: within each file, rules sorted by
/// (name, labels); every rule equal to its predecessor is reported. Not an
/// error: Prometheus evaluates both.
pub fn duplicate_rules(groups: &[RuleGroup]) -> Vec<DuplicateRule> {
    let mut by_file: BTreeMap<&Path, Vec<DuplicateRule>> = BTreeMap::new();
    for g in groups {
        for r in &g.rules {
            by_file.entry(&g.file).or_default().push(DuplicateRule {
                file: g.file.clone(),
                line: r.line,
                name: r.name.clone(),
                labels: r.labels.clone(),
            });
        }
    }
    let mut out = Vec::new();
    for (_, mut rules) in by_file {
        rules.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        for w in rules.windows(2) {
            if w[0].name == w[1].name && w[0].labels == w[1].labels {
                out.push(w[1].clone());
            }
        }
    }
    out
}

/// All errors, one per line (for logs and HTTP answers).
pub fn join_errors(errs: &[RuleError]) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses a Prometheus duration (`30s`, `1m`, `1h30m`, `0`).
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    pharos_query::parser::parse_duration(s.trim())
        .map_err(|e| format!("not a valid duration string: {s:?} ({e})"))
}

/// The PromQL options rule expressions are parsed with.
pub fn rule_parse_options() -> ParseOptions {
    ParseOptions::default()
}

/// Reads and validates one rule file. All problems found are returned, not
/// just the first, as `promtool check rules` prints them.
pub fn load_file(path: &Path) -> Result<Vec<RuleGroup>, Vec<RuleError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![RuleError {
            path: path.to_path_buf(),
            pos: None,
            context: None,
            msg: e.to_string(),
        }]
    })?;
    parse_file(path, &text)
}

/// Parses and validates rule-file text.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<RuleGroup>, Vec<RuleError>> {
    let err = |pos, context, msg: String| RuleError {
        path: path.to_path_buf(),
        pos,
        context,
        msg,
    };
    // An empty file is a valid file without groups.
    let yaml: RuleFileYaml = if text.trim().is_empty() {
        RuleFileYaml { groups: Vec::new() }
    } else {
        serde_yaml::from_str(text).map_err(|e| {
            let pos = e.location().map(|l| (l.line(), l.column()));
            vec![err(pos, None, format!("yaml: {e}"))]
        })?
    };
    let loc = locate::locate(text);
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut seen_groups: BTreeMap<&str, ()> = BTreeMap::new();
    let mut rule_cursor = 0usize;
    for (gi, g) in yaml.groups.iter().enumerate() {
        let gpos = loc.groups.get(gi).copied();
        if g.name.is_empty() {
            errors.push(err(gpos, None, "Groupname must not be empty".into()));
        }
        if seen_groups.insert(&g.name, ()).is_some() {
            errors.push(err(
                gpos,
                None,
                format!("groupname: {:?} is repeated in the same file", g.name),
            ));
        }
        let interval_ms = match &g.interval {
            None => None,
            Some(s) => match parse_duration_ms(s) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(err(gpos, Some(format!("group {:?}", g.name)), e));
                    None
                }
            },
        };
        let query_offset_ms = match &g.query_offset {
            None => None,
            Some(s) => match parse_duration_ms(s) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(err(gpos, Some(format!("group {:?}", g.name)), e));
                    None
                }
            },
        };
        for k in g.labels.keys() {
            if !is_valid_label_name(k) || k == "__name__" {
                errors.push(err(
                    gpos,
                    Some(format!("group {:?}", g.name)),
                    format!("invalid label name: {k}"),
                ));
            }
        }
        let mut rules = Vec::new();
        for (ri, r) in g.rules.iter().enumerate() {
            let rloc = loc.rules.get(rule_cursor).copied();
            rule_cursor += 1;
            let name = r
                .record
                .clone()
                .or_else(|| r.alert.clone())
                .unwrap_or_default();
            let ctx = Some(format!("group {:?}, rule {}, {:?}", g.name, ri + 1, name));
            let name_pos = rloc.map(|l| l.name);
            let expr_pos = rloc.and_then(|l| l.expr);
            let mut bad = |pos: Option<(usize, usize)>, msg: String| {
                errors.push(err(pos, ctx.clone(), msg));
            };
            let kind = match (&r.record, &r.alert) {
                (Some(_), Some(_)) => {
                    bad(
                        name_pos,
                        "only one of 'record' and 'alert' must be set".into(),
                    );
                    continue;
                }
                (None, None) => {
                    bad(name_pos, "one of 'record' or 'alert' must be set".into());
                    continue;
                }
                (Some(_), None) => RuleKind::Recording,
                (None, Some(_)) => RuleKind::Alerting,
            };
            let expr_text = r.expr.as_ref().map(|e| e.text()).unwrap_or_default();
            let expr = if expr_text.trim().is_empty() {
                bad(name_pos, "field 'expr' must be set in rule".into());
                None
            } else {
                match parse_with(&expr_text, &rule_parse_options()) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        bad(expr_pos, format!("could not parse expression: {e}"));
                        None
                    }
                }
            };
            if kind == RuleKind::Recording {
                if !r.annotations.is_empty() {
                    bad(
                        name_pos,
                        "invalid field 'annotations' in recording rule".into(),
                    );
                }
                if r.for_.is_some() {
                    bad(name_pos, "invalid field 'for' in recording rule".into());
                }
                if r.keep_firing_for.is_some() {
                    bad(
                        name_pos,
                        "invalid field 'keep_firing_for' in recording rule".into(),
                    );
                }
                if !is_valid_metric_name(&name) {
                    bad(name_pos, format!("invalid recording rule name: {name}"));
                }
            } else if name.is_empty() {
                bad(name_pos, "one of 'record' or 'alert' must be set".into());
            }
            let mut dur = |v: &Option<String>| -> i64 {
                match v {
                    None => 0,
                    Some(s) => match parse_duration_ms(s) {
                        Ok(v) => v,
                        Err(e) => {
                            errors.push(err(name_pos, ctx.clone(), e));
                            0
                        }
                    },
                }
            };
            let for_ms = dur(&r.for_);
            let keep_firing_for_ms = dur(&r.keep_firing_for);
            let mut bad = |pos: Option<(usize, usize)>, msg: String| {
                errors.push(err(pos, ctx.clone(), msg));
            };
            for k in r.labels.keys() {
                if !is_valid_label_name(k) || k == "__name__" {
                    bad(name_pos, format!("invalid label name: {k}"));
                }
            }
            for k in r.annotations.keys() {
                if !is_valid_label_name(k) {
                    bad(name_pos, format!("invalid annotation name: {k}"));
                }
            }
            if kind == RuleKind::Alerting {
                let tname = format!("__alert_{name}");
                for (k, v) in &r.labels {
                    if let Err(e) = parse_alert_template(&tname, v) {
                        bad(name_pos, format!("label {k:?}: {e}"));
                    }
                }
                for (k, v) in &r.annotations {
                    if let Err(e) = parse_alert_template(&tname, v) {
                        bad(name_pos, format!("annotation {k:?}: {e}"));
                    }
                }
            }
            let Some(expr) = expr else { continue };
            let mut labels = g.labels.clone();
            labels.extend(r.labels.clone());
            rules.push(RuleDef {
                kind,
                name,
                expr,
                expr_text: expr_text.trim().to_string(),
                for_ms,
                keep_firing_for_ms,
                labels,
                annotations: r.annotations.clone(),
                line: name_pos.map(|p| p.0),
            });
        }
        out.push(RuleGroup {
            file: path.to_path_buf(),
            name: g.name.clone(),
            interval_ms,
            query_offset_ms,
            limit: g.limit,
            rules,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Loads every file matching `globs` (in sorted order, each once). All
/// errors of all files are returned together.
pub fn load_globs(globs: &[String]) -> Result<Vec<RuleGroup>, Vec<RuleError>> {
    let files = expand_globs(globs).map_err(|e| vec![e])?;
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match load_file(&f) {
            Ok(g) => groups.extend(g),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
