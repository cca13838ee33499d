//! A subset of Go's `text/template`, as Prometheus uses it for alert labels
//! and annotations.
//!
//! Owns: parsing (`{{ }}` actions with `{{-`/`-}}` trimming, comments,
//! pipelines with `|`, variables, `if`/`else if`/`else`/`end`, `range`,
//! `with`) and execution against [`TemplateData`], with Prometheus's
//! functions (`humanize*`, `printf`, `query`, `first`, `value`, `label`,
//! `strvalue`, `sortByLabel`, `toUpper`, `toLower`, `title`, `match`,
//! `reReplaceAll`, `args`, `safeHtml`, `stripPort`, `stripDomain`) and Go's
//! builtins (`and`, `or`, `not`, `len`, `index`, `eq`…`ge`, `print`,
//! `println`).
//!
//! Invariants: no input makes it panic; every error carries the template
//! name and line (`template: NAME:LINE: …`, as Go reports). `define`,
//! `template` and `block` are rejected at parse time.

mod exec;
pub mod format;
mod parse;

use std::fmt;

pub use exec::{QSample, TemplateData, TemplateQuery};
pub use parse::Template;

/// A parse or execution error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct TemplateError {
    pub name: String,
    pub line: usize,
    pub msg: String,
    /// Whether it happened while executing (rather than parsing).
    pub exec: bool,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template: {}:{}: {}", self.name, self.line, self.msg)
    }
}

/// The variable definitions Prometheus prepends to every alert template.
const PRELUDE: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// Parses `text` as an alert template (with Prometheus's `$labels`,
/// `$externalLabels`, `$externalURL` and `$value` variables defined).
pub fn parse_alert_template(name: &str, text: &str) -> Result<Template, TemplateError> {
    // Only parse what is needed: text without actions is returned as is.
    if !text.contains("{{") {
        return Template::parse(name, text);
    }
    let full = format!("{PRELUDE}{text}");
    Template::parse(name, &full)
}

/// Expands an alert template. The caller decides what to do with an error
/// (Prometheus puts `<error expanding template: …>` in the value).
pub fn expand_alert_template(
    name: &str,
    text: &str,
    data: &TemplateData<'_>,
    query: Option<&dyn TemplateQuery>,
) -> Result<String, TemplateError> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    parse_alert_template(name, text)?.execute(data, query)
}

#[cfg(test)]
mod tests;
