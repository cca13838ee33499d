//! Parsers for the two text exposition formats a scrape target may answer
//! with: Prometheus text 0.0.4 ([`text`]) and OpenMetrics 1.0 text
//! ([`openmetrics`]), plus content negotiation ([`ACCEPT_HEADER`],
//! [`Format::from_content_type`]).
//!
//! Owns: turning a response body into [`Entry`]s — samples (name, labels,
//! value, optional timestamp, optional exemplar) and metadata (`TYPE`,
//! `HELP`, `UNIT`). Parsing is zero-copy: names and unescaped values borrow
//! from the body; only strings containing escapes are allocated.
//! Must not: depend on the server, the scrape loop or storage, or panic on
//! any input (the fuzz targets in `node/fuzz` hold it to that). Semantic
//! checks that need the target (label limits, duplicate series, relabeling)
//! belong to the scrape loop.

pub mod openmetrics;
pub mod text;

use std::borrow::Cow;

/// What Pharos asks targets for, in Prometheus's order of preference.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (also the fallback for unknown types).
    PromText,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// Picks the parser for a response's `Content-Type`, as Prometheus does:
    /// `application/openmetrics-text` is OpenMetrics, anything else
    /// (including a missing header) is the Prometheus text format.
    pub fn from_content_type(ct: Option<&str>) -> Format {
        let Some(ct) = ct else {
            return Format::PromText;
        };
        let media = ct.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::PromText
        }
    }
}

/// A metric family's type, with Prometheus's lowercase names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    Stateset,
    Unknown,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::Stateset => "stateset",
            MetricType::Unknown => "unknown",
        }
    }
}

/// A label as parsed: the name borrows from the body, the value too unless
/// it contained escapes.
pub type Label<'a> = (&'a str, Cow<'a, str>);

/// An OpenMetrics exemplar attached to a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar<'a> {
    pub labels: Vec<Label<'a>>,
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// The line's series text (name and label block, as written): a cache
    /// key that lets the scrape loop skip relabeling series it has seen.
    pub series: &'a str,
    /// In body order (not sorted, duplicates not yet checked).
    pub labels: Vec<Label<'a>>,
    pub value: f64,
    /// Milliseconds since the epoch, when the line carries one.
    pub timestamp_ms: Option<i64>,
    pub exemplar: Option<Exemplar<'a>>,
}

/// One parsed line that means something.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    Sample(Sample<'a>),
    Type { family: &'a str, kind: MetricType },
    Help { family: &'a str, text: Cow<'a, str> },
    Unit { family: &'a str, unit: &'a str },
}

/// Why a body could not be parsed; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

/// A pull parser over a whole body in either format.
pub struct Parser<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    Text(text::TextParser<'a>),
    OpenMetrics(openmetrics::OpenMetricsParser<'a>),
}

impl<'a> Parser<'a> {
    /// Fails only when the body is not UTF-8 (both formats require it).
    pub fn new(body: &'a [u8], format: Format) -> Result<Parser<'a>, ParseError> {
        let src = std::str::from_utf8(body).map_err(|e| {
            let line = 1 + body[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            ParseError {
                line,
                msg: "invalid UTF-8".into(),
            }
        })?;
        Ok(Parser {
            inner: match format {
                Format::PromText => Inner::Text(text::TextParser::new(src)),
                Format::OpenMetrics => Inner::OpenMetrics(openmetrics::OpenMetricsParser::new(src)),
            },
        })
    }

    /// The next entry, `Ok(None)` at the end of a well-formed body.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        match &mut self.inner {
            Inner::Text(p) => p.next_entry(),
            Inner::OpenMetrics(p) => p.next_entry(),
        }
    }

    /// As [`Parser::next_entry`], for callers that already know how to
    /// label many series texts (the scrape loop's series cache): a Prometheus
    /// text sample whose series text `known` accepts is not label-parsed
    /// and comes back with empty `labels`. `known` is asked at most once
    /// per sample and only then may `labels` be empty. OpenMetrics bodies
    /// are always parsed in full (`known` is not asked).
    pub fn next_entry_known(
        &mut self,
        known: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<Entry<'a>>, ParseError> {
        match &mut self.inner {
            Inner::Text(p) => p.next_entry_known(known),
            Inner::OpenMetrics(p) => p.next_entry(),
        }
    }

    /// Hands a sample's label vector back once the caller is done with it,
    /// so the next sample reuses its allocation instead of making one per
    /// line.
    pub fn recycle(&mut self, labels: Vec<Label<'a>>) {
        match &mut self.inner {
            Inner::Text(p) => p.recycle(labels),
            Inner::OpenMetrics(p) => p.recycle(labels),
        }
    }
}

/// Parses a whole body into entries (tests and tools; the scrape loop pulls).
pub fn parse_all(body: &[u8], format: Format) -> Result<Vec<Entry<'_>>, ParseError> {
    let mut p = Parser::new(body, format)?;
    let mut out = Vec::new();
    while let Some(e) = p.next_entry()? {
        out.push(e);
    }
    Ok(out)
}

/// Byte cursor over one line, shared by both formats.
pub(crate) struct Cursor<'a> {
    pub(crate) s: &'a str,
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    pub(crate) fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skips spaces and tabs; returns how many were skipped.
    pub(crate) fn skip_blank(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A metric name `[a-zA-Z_:][a-zA-Z0-9_:]*`, if one starts here.
    pub(crate) fn metric_name(&mut self) -> Option<&'a str> {
        self.ident(true)
    }

    /// A label name `[a-zA-Z_][a-zA-Z0-9_]*`, if one starts here.
    pub(crate) fn label_name(&mut self) -> Option<&'a str> {
        self.ident(false)
    }

    fn ident(&mut self, colon: bool) -> Option<&'a str> {
        let b = self.s.as_bytes();
        let start = self.pos;
        let ok_first = |c: u8| c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':');
        let ok_rest = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || (colon && c == b':');
        if !b.get(start).is_some_and(|&c| ok_first(c)) {
            return None;
        }
        let mut end = start + 1;
        while b.get(end).is_some_and(|&c| ok_rest(c)) {
            end += 1;
        }
        self.pos = end;
        self.s.get(start..end)
    }

    /// A token up to the next space, tab or end of line.
    pub(crate) fn token(&mut self) -> &'a str {
        let b = self.s.as_bytes();
        let start = self.pos;
        while b.get(self.pos).is_some_and(|&c| c != b' ' && c != b'\t') {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    /// A double-quoted label value (the cursor is on the opening quote),
    /// unescaping `\\`, `\"` and `\n`; other escapes are kept verbatim, as
    /// Prometheus does.
    pub(crate) fn quoted(&mut self) -> Result<Cow<'a, str>, String> {
        if !self.eat(b'"') {
            return Err("expected '\"' to start a label value".into());
        }
        let b = self.s.as_bytes();
        let start = self.pos;
        let mut escaped = false;
        let mut i = start;
        loop {
            match b.get(i) {
                None => return Err("unterminated label value".into()),
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                }
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        let raw = self
            .s
            .get(start..i)
            .ok_or("label value splits a character")?;
        self.pos = i + 1;
        Ok(if escaped {
            Cow::Owned(unescape(raw, true))
        } else {
            Cow::Borrowed(raw)
        })
    }

    /// `{name="value",...}` with optional blanks (text format) and an
    /// optional trailing comma. The cursor is on `{`.
    pub(crate) fn labels(&mut self, blanks: bool, out: &mut Vec<Label<'a>>) -> Result<(), String> {
        if !self.eat(b'{') {
            return Err("expected '{'".into());
        }
        loop {
            if blanks {
                self.skip_blank();
            }
            if self.eat(b'}') {
                return Ok(());
            }
            let name = self
                .label_name()
                .ok_or_else(|| format!("invalid label name at {:?}", self.rest_short()))?;
            if blanks {
                self.skip_blank();
            }
            if !self.eat(b'=') {
                return Err(format!("expected '=' after label name {name:?}"));
            }
            if blanks {
                self.skip_blank();
            }
            let value = self.quoted()?;
            out.push((name, value));
            if blanks {
                self.skip_blank();
            }
            if self.eat(b',') {
                continue;
            }
            if self.eat(b'}') {
                return Ok(());
            }
            return Err(format!(
                "expected ',' or '}}' after label {name:?}, got {:?}",
                self.rest_short()
            ));
        }
    }

    pub(crate) fn rest_short(&self) -> &'a str {
        let r = self.rest();
        let mut end = r.len().min(32);
        while !r.is_char_boundary(end) {
            end -= 1;
        }
        &r[..end]
    }
}

/// Undoes the exposition escapes: `\\` and `\n` always, `\"` when `quote`.
pub(crate) fn unescape(raw: &str, quote: bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quote => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A sample value as Go's `strconv.ParseFloat` reads the common forms
/// (decimal, exponent, `NaN`, `±Inf`, case-insensitive).
pub(crate) fn parse_value(s: &str) -> Option<f64> {
    if s.is_empty() || s.contains('_') {
        return None;
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_negotiation() {
        assert_eq!(Format::from_content_type(None), Format::PromText);
        assert_eq!(
            Format::from_content_type(Some("text/plain; version=0.0.4; charset=utf-8")),
            Format::PromText
        );
        assert_eq!(
            Format::from_content_type(Some(
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type(Some("application/json")),
            Format::PromText
        );
    }

    #[test]
    fn unescaping() {
        assert_eq!(unescape(r#"a\\b\"c\nd\x"#, true), "a\\b\"c\nd\\x");
        assert_eq!(unescape(r#"\"q"#, false), "\\\"q");
    }

    #[test]
    fn values() {
        assert_eq!(parse_value("1.5e3"), Some(1500.0));
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("-inf"), Some(f64::NEG_INFINITY));
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_value("1_000"), None);
        assert_eq!(parse_value(""), None);
        assert_eq!(parse_value("abc"), None);
    }

    #[test]
    fn not_utf8_is_an_error() {
        let err = Parser::new(b"a 1\n\xff 2\n", Format::PromText)
            .err()
            .unwrap();
        assert_eq!(err.line, 2);
    }
}
