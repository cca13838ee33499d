//! Parser of the `.test` script format (README §4): commands, durations, the
//! series value notation, `@st` lines, histogram literals, and `eval` bodies.
//!
//! Parsing is independent of the PromQL parser and engine: an `eval`'s
//! expression is kept as text. The runner parses every expression before it
//! runs anything, since one unparseable expression rejects the whole file
//! (README §5.1).
//!
//! Invariants of a parsed [`Script`]: every label set is a [`Labels`] (sorted,
//! empty values dropped); within one `load` block label sets are unique (the
//! last line for a label set replaced earlier ones); every `@st` line has been
//! attached to its series.

use std::sync::OnceLock;

use pharos_storage::labels::Labels;
use regex::Regex;

use super::histogram::{HistogramLiteralError, TestHistogram};

/// The staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness-marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is exactly the staleness marker.
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A script-file error, with its 1-based line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ScriptError {
    pub line: usize,
    pub kind: ScriptErrorKind,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScriptErrorKind {
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("invalid {what} header {header:?}")]
    BadHeader { what: &'static str, header: String },
    #[error("invalid duration {0:?}")]
    BadDuration(String),
    #[error("invalid series description {line:?}: {why}")]
    BadSeries { line: String, why: String },
    #[error("histogram literal: {0}")]
    Histogram(#[from] HistogramLiteralError),
    #[error("@st line must be followed by a series line with the same labels and value count")]
    DanglingStartTimestamps,
    #[error("invalid expect line {0:?}")]
    BadExpect(String),
    #[error("invalid regex {re:?}: {why}")]
    BadRegex { re: String, why: String },
    #[error("{0}")]
    Conflict(String),
    #[error("range query end is before its start")]
    RangeBackwards,
    #[error("instant query expects {0} values for one series; only one is allowed")]
    TooManyInstantValues(usize),
    #[error("invalid string literal {0:?}")]
    BadString(String),
}

fn err(line: usize, kind: ScriptErrorKind) -> ScriptError {
    ScriptError { line, kind }
}

/// One value in the series notation.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesValue {
    Float(f64),
    Histogram(TestHistogram),
}

/// One expanded slot: `None` is an omitted value (`_`).
pub type Slot = Option<SeriesValue>;

/// A whole parsed script.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Clear { line: usize },
    Load(LoadCommand),
    Eval(Box<EvalCommand>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadCommand {
    pub line: usize,
    pub interval_ms: i64,
    /// `load_with_nhcb`: also build NHCB series from classic histograms.
    pub with_nhcb: bool,
    /// Unique label sets, in order of first appearance; a later line for the
    /// same label set replaced the earlier one.
    pub series: Vec<LoadSeries>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadSeries {
    pub line: usize,
    pub labels: Labels,
    /// Slot `i` is at `t = i × interval`.
    pub values: Vec<Slot>,
    /// Per-slot start-timestamp offsets from an `@st` line: `ST = T + offset`.
    pub start_offsets: Option<Vec<Option<i64>>>,
}

impl LoadSeries {
    /// Whether any loaded value is a native histogram.
    pub fn has_histograms(&self) -> bool {
        self.values
            .iter()
            .any(|v| matches!(v, Some(SeriesValue::Histogram(_))))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Instant {
        at_ms: i64,
    },
    Range {
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    },
}

/// How an expected message is matched.
#[derive(Debug, Clone)]
pub enum MessageMatch {
    Exact(String),
    /// Unanchored search.
    Regex(Regex),
}

impl PartialEq for MessageMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (MessageMatch::Exact(a), MessageMatch::Exact(b)) => a == b,
            (MessageMatch::Regex(a), MessageMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl MessageMatch {
    pub fn matches(&self, text: &str) -> bool {
        match self {
            MessageMatch::Exact(s) => s == text,
            MessageMatch::Regex(re) => re.is_match(text),
        }
    }
}

impl std::fmt::Display for MessageMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageMatch::Exact(s) => write!(f, "msg:{s}"),
            MessageMatch::Regex(r) => write!(f, "regex:{}", r.as_str()),
        }
    }
}

/// The expectations about one kind of annotation (warnings or infos).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnnotationExpect {
    /// `eval_warn` / `eval_info` header: at least one is required.
    pub header_requires: bool,
    /// `expect warn[ …]` lines; `None` matches any message.
    pub lines: Vec<Option<MessageMatch>>,
    /// `expect no_warn` / `expect no_info`.
    pub forbid: bool,
}

/// One expected series line.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedSeries {
    pub line: usize,
    /// 1-based position among the block's expected-result lines.
    pub pos: usize,
    pub labels: Labels,
    pub values: Vec<Slot>,
}

/// `expect range vector from … to … step …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeGrid {
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvalCommand {
    pub line: usize,
    /// Verbatim expression text; annotation positions refer to it.
    pub expr: String,
    pub kind: QueryKind,
    pub expect_fail: bool,
    /// All must match the error text (empty: any error).
    pub fail_matchers: Vec<MessageMatch>,
    pub warn: AnnotationExpect,
    pub info: AnnotationExpect,
    pub ordered: bool,
    pub series: Vec<ExpectedSeries>,
    pub scalar: Option<f64>,
    pub string: Option<String>,
    pub range_vector: Option<RangeGrid>,
}

impl EvalCommand {
    /// Whether any expected value is a native histogram.
    pub fn expects_histograms(&self) -> bool {
        self.series.iter().any(|s| {
            s.values
                .iter()
                .any(|v| matches!(v, Some(SeriesValue::Histogram(_))))
        })
    }

    /// The time an instant query runs at: `expect range vector … to X`
    /// overrides the header's `at` (README §4.11).
    pub fn instant_time(&self) -> Option<i64> {
        match self.kind {
            QueryKind::Instant { at_ms } => {
                Some(self.range_vector.map(|g| g.end_ms).unwrap_or(at_ms))
            }
            QueryKind::Range { .. } => None,
        }
    }
}

/// Parses a whole script.
pub fn parse_script(text: &str) -> Result<Script, ScriptError> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| {
            let t = l.trim_matches(|c: char| c.is_ascii_whitespace());
            if t.starts_with('#') {
                ""
            } else {
                t
            }
        })
        .collect();
    let mut commands = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].is_empty() {
            i += 1;
            continue;
        }
        let first = lines[i]
            .split([' ', '\t'])
            .next()
            .unwrap_or("")
            .to_lowercase();
        let (cmd, next) = if first == "clear" {
            (Command::Clear { line: i + 1 }, i + 1)
        } else if first.starts_with("load") {
            let (c, n) = parse_load(&lines, i)?;
            (Command::Load(c), n)
        } else if first.starts_with("eval") {
            let (c, n) = parse_eval(&lines, i)?;
            (Command::Eval(Box::new(c)), n)
        } else {
            return Err(err(
                i + 1,
                ScriptErrorKind::UnknownCommand(lines[i].to_string()),
            ));
        };
        commands.push(cmd);
        i = next;
    }
    Ok(Script { commands })
}

fn re(cell: &'static OnceLock<Regex>, pat: &str) -> &'static Regex {
    // The patterns are literals of this file, covered by the unit tests.
    #[allow(clippy::unwrap_used)]
    cell.get_or_init(|| Regex::new(pat).unwrap())
}

fn load_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^load(_with_nhcb)?\s+(.+)$")
}

fn instant_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$",
    )
}

fn range_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$",
    )
}

fn range_vector_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"^expect range vector from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$",
    )
}

fn parse_load(lines: &[&str], start: usize) -> Result<(LoadCommand, usize), ScriptError> {
    let header = lines[start];
    let line_no = start + 1;
    let caps = load_re().captures(header).ok_or_else(|| {
        err(
            line_no,
            ScriptErrorKind::BadHeader {
                what: "load",
                header: header.to_string(),
            },
        )
    })?;
    let with_nhcb = caps.get(1).is_some();
    let interval_ms = parse_duration(caps.get(2).map_or("", |m| m.as_str()).trim())
        .map_err(|k| err(line_no, k))?;
    let mut series: Vec<LoadSeries> = Vec::new();
    let mut i = start + 1;
    while i < lines.len() && !lines[i].is_empty() {
        let line = lines[i];
        let first = line.split([' ', '\t']).next().unwrap_or("");
        let mut entry = if let Some(metric) = first.strip_suffix("@st") {
            let (st_labels, offsets) =
                parse_st_line(metric, &line[first.len()..]).map_err(|k| err(i + 1, k))?;
            i += 1;
            let next = lines.get(i).copied().unwrap_or("");
            if next.is_empty() {
                return Err(err(i, ScriptErrorKind::DanglingStartTimestamps));
            }
            let (labels, values) = parse_series_line(next).map_err(|k| err(i + 1, k))?;
            if labels != st_labels || values.len() != offsets.len() {
                return Err(err(i + 1, ScriptErrorKind::DanglingStartTimestamps));
            }
            LoadSeries {
                line: i + 1,
                labels,
                values,
                start_offsets: Some(offsets),
            }
        } else {
            let (labels, values) = parse_series_line(line).map_err(|k| err(i + 1, k))?;
            LoadSeries {
                line: i + 1,
                labels,
                values,
                start_offsets: None,
            }
        };
        // The last line for a label set replaces earlier ones (README §4.3).
        match series.iter_mut().find(|s| s.labels == entry.labels) {
            Some(existing) => std::mem::swap(existing, &mut entry),
            None => series.push(entry),
        }
        i += 1;
    }
    Ok((
        LoadCommand {
            line: line_no,
            interval_ms,
            with_nhcb,
            series,
        },
        i,
    ))
}

/// Which line kinds end an eval block early.
enum BodyLine {
    Continue,
    EndBlock,
}

fn parse_eval(lines: &[&str], start: usize) -> Result<(EvalCommand, usize), ScriptError> {
    let header = lines[start];
    let line_no = start + 1;
    let bad_header = || {
        err(
            line_no,
            ScriptErrorKind::BadHeader {
                what: "eval",
                header: header.to_string(),
            },
        )
    };
    let dur = |s: &str| parse_duration(s).map_err(|k| err(line_no, k));
    let (modifier, kind, expr) = if let Some(c) = instant_re().captures(header) {
        let at = c.get(2).ok_or_else(bad_header)?;
        (
            c.get(1).map(|m| m.as_str().to_string()),
            QueryKind::Instant {
                at_ms: dur(at.as_str())?,
            },
            c.get(3).map_or("", |m| m.as_str()).to_string(),
        )
    } else if let Some(c) = range_re().captures(header) {
        let g = |n: usize| c.get(n).map_or("", |m| m.as_str());
        let (start_ms, end_ms, step_ms) = (dur(g(2))?, dur(g(3))?, dur(g(4))?);
        if end_ms < start_ms {
            return Err(err(line_no, ScriptErrorKind::RangeBackwards));
        }
        (
            c.get(1).map(|m| m.as_str().to_string()),
            QueryKind::Range {
                start_ms,
                end_ms,
                step_ms,
            },
            g(5).to_string(),
        )
    } else {
        return Err(bad_header());
    };
    let mut ev = EvalCommand {
        line: line_no,
        expr,
        kind,
        expect_fail: false,
        fail_matchers: Vec::new(),
        warn: AnnotationExpect::default(),
        info: AnnotationExpect::default(),
        ordered: false,
        series: Vec::new(),
        scalar: None,
        string: None,
        range_vector: None,
    };
    let legacy_fail = modifier.as_deref() == Some("fail");
    match modifier.as_deref() {
        Some("fail") => ev.expect_fail = true,
        Some("warn") => ev.warn.header_requires = true,
        Some("info") => ev.info.header_requires = true,
        Some("ordered") => ev.ordered = true,
        _ => {}
    }
    let mut fail_lines = 0;
    let mut pos = 0;
    let mut i = start + 1;
    while i < lines.len() && !lines[i].is_empty() {
        let end = parse_eval_body_line(
            &mut ev,
            lines[i],
            i + 1,
            legacy_fail,
            &mut fail_lines,
            &mut pos,
        )
        .map_err(|k| err(i + 1, k))?;
        i += 1;
        if let BodyLine::EndBlock = end {
            break;
        }
    }
    if !ev.warn.lines.is_empty() && ev.warn.forbid {
        return Err(err(
            line_no,
            ScriptErrorKind::Conflict("expect warn together with expect no_warn".into()),
        ));
    }
    if !ev.info.lines.is_empty() && ev.info.forbid {
        return Err(err(
            line_no,
            ScriptErrorKind::Conflict("expect info together with expect no_info".into()),
        ));
    }
    if fail_lines > 1 {
        return Err(err(
            line_no,
            ScriptErrorKind::Conflict("more than one expect fail line".into()),
        ));
    }
    if matches!(ev.kind, QueryKind::Instant { .. }) && ev.range_vector.is_none() {
        if let Some(s) = ev.series.iter().find(|s| s.values.len() > 1) {
            return Err(err(
                s.line,
                ScriptErrorKind::TooManyInstantValues(s.values.len()),
            ));
        }
    }
    Ok((ev, i))
}

fn parse_eval_body_line(
    ev: &mut EvalCommand,
    line: &str,
    line_no: usize,
    legacy_fail: bool,
    fail_lines: &mut usize,
    pos: &mut usize,
) -> Result<BodyLine, ScriptErrorKind> {
    if legacy_fail {
        if let Some(msg) = line.strip_prefix("expected_fail_message ") {
            ev.fail_matchers
                .push(MessageMatch::Exact(msg.trim().to_string()));
            return Ok(BodyLine::EndBlock);
        }
        if let Some(pat) = line.strip_prefix("expected_fail_regexp ") {
            ev.fail_matchers
                .push(MessageMatch::Regex(compile(pat.trim())?));
            return Ok(BodyLine::EndBlock);
        }
    }
    if let Some(c) = range_vector_re().captures(line) {
        let g = |n: usize| c.get(n).map_or("", |m| m.as_str()).trim();
        ev.range_vector = Some(RangeGrid {
            start_ms: parse_duration(g(1))?,
            end_ms: parse_duration(g(2))?,
            step_ms: parse_duration(g(3))?,
        });
        return Ok(BodyLine::Continue);
    }
    if let Some(lit) = line.strip_prefix("expect string ") {
        let lit = lit.trim();
        let (s, used) =
            parse_string_literal(lit).ok_or_else(|| ScriptErrorKind::BadString(lit.to_string()))?;
        if used != lit.len() {
            return Err(ScriptErrorKind::BadString(lit.to_string()));
        }
        ev.string = Some(s);
        return Ok(BodyLine::Continue);
    }
    if line.split(' ').next() == Some("expect") {
        let rest = &line["expect".len()..];
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let (kind, tail) = match rest.find(' ') {
            Some(p) => (&rest[..p], rest[p..].trim()),
            None => (rest, ""),
        };
        let matcher = if tail.is_empty() {
            None
        } else {
            let colon = tail
                .find(':')
                .ok_or_else(|| ScriptErrorKind::BadExpect(line.to_string()))?;
            let text = tail[colon + 1..].trim();
            match tail[..colon].trim() {
                "msg" => Some(MessageMatch::Exact(text.to_string())),
                "regex" => Some(MessageMatch::Regex(compile(text)?)),
                _ => return Err(ScriptErrorKind::BadExpect(line.to_string())),
            }
        };
        match kind {
            "fail" => {
                ev.expect_fail = true;
                *fail_lines += 1;
                ev.fail_matchers.extend(matcher);
            }
            "warn" => ev.warn.lines.push(matcher),
            "info" => ev.info.lines.push(matcher),
            "no_warn" => ev.warn.forbid = true,
            "no_info" => ev.info.forbid = true,
            "ordered" => ev.ordered = true,
            _ => return Err(ScriptErrorKind::BadExpect(line.to_string())),
        }
        return Ok(BodyLine::Continue);
    }
    if let Some(v) = parse_go_number(line) {
        ev.scalar = Some(v);
        return Ok(BodyLine::EndBlock);
    }
    let (labels, values) = parse_series_line(line)?;
    *pos += 1;
    let entry = ExpectedSeries {
        line: line_no,
        pos: *pos,
        labels,
        values,
    };
    // Expected lines are keyed by label set: a repeat replaces the earlier one.
    match ev.series.iter_mut().find(|s| s.labels == entry.labels) {
        Some(existing) => *existing = entry,
        None => ev.series.push(entry),
    }
    Ok(BodyLine::Continue)
}

fn compile(pat: &str) -> Result<Regex, ScriptErrorKind> {
    Regex::new(pat).map_err(|e| ScriptErrorKind::BadRegex {
        re: pat.to_string(),
        why: e.to_string(),
    })
}

/// Parses a Prometheus duration (`1m30s`, `10s53ms`, `0`) into milliseconds.
/// No sign, no fraction; units in the order y w d h m s ms, each at most once.
pub fn parse_duration(s: &str) -> Result<i64, ScriptErrorKind> {
    let bad = || ScriptErrorKind::BadDuration(s.to_string());
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(bad());
    }
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    let mut next_unit = 0;
    while i < b.len() {
        let d0 = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == d0 {
            return Err(bad());
        }
        let n: i64 = s[d0..i].parse().map_err(|_| bad())?;
        let u0 = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[u0..i];
        let k = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        if k < next_unit {
            return Err(bad());
        }
        next_unit = k + 1;
        total = n
            .checked_mul(UNITS[k].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// A single-group signed duration as used on `@st` lines (`-30s`, `+1m`, `0`).
/// Returns the value and the bytes consumed.
fn parse_st_duration(s: &str) -> Option<(i64, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    let neg = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let d0 = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == d0 {
        return None;
    }
    let n: i64 = s[d0..i].parse().ok()?;
    let rest = &s[i..];
    let (mult, ulen) = if rest.starts_with("ms") {
        (1, 2)
    } else {
        match rest.as_bytes().first() {
            Some(b'y') => (365 * 24 * 3_600_000, 1),
            Some(b'w') => (7 * 24 * 3_600_000, 1),
            Some(b'd') => (24 * 3_600_000, 1),
            Some(b'h') => (3_600_000, 1),
            Some(b'm') => (60_000, 1),
            Some(b's') => (1000, 1),
            // A bare zero needs no unit.
            _ if n == 0 && &s[d0..i] == "0" => (0, 0),
            _ => return None,
        }
    };
    let v = n.checked_mul(mult)?;
    Some((if neg { -v } else { v }, i + ulen))
}

/// Parses the items of an `@st` line (README §4.7).
fn parse_st_line(metric: &str, items: &str) -> Result<(Labels, Vec<Option<i64>>), ScriptErrorKind> {
    let bad = |why: &str| ScriptErrorKind::BadSeries {
        line: format!("{metric}@st{items}"),
        why: why.to_string(),
    };
    let (labels, used) = parse_metric(metric).map_err(|w| bad(&w))?;
    if used != metric.len() {
        return Err(bad("trailing text after the label set"));
    }
    let mut out = Vec::new();
    for tok in items.split([' ', '\t']).filter(|t| !t.is_empty()) {
        if let Some(rest) = tok.strip_prefix('_') {
            if rest.is_empty() {
                out.push(None);
                continue;
            }
            let n = rest
                .strip_prefix('x')
                .and_then(parse_count)
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("bad blank repetition"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        let (a, used) = parse_st_duration(tok).ok_or_else(|| bad("bad start-timestamp item"))?;
        let rest = &tok[used..];
        if rest.is_empty() {
            out.push(Some(a));
            continue;
        }
        if let Some(n) = rest.strip_prefix('x') {
            let n = parse_count(n).ok_or_else(|| bad("bad repetition count"))?;
            out.extend(std::iter::repeat_n(Some(a), n + 1));
            continue;
        }
        let (d, used2) = parse_st_duration(rest).ok_or_else(|| bad("bad start-timestamp step"))?;
        if !rest.starts_with(['+', '-']) {
            return Err(bad("start-timestamp step needs a sign"));
        }
        let n = rest[used2..]
            .strip_prefix('x')
            .and_then(parse_count)
            .ok_or_else(|| bad("start-timestamp sequence needs xN"))?;
        let mut v = a;
        for _ in 0..=n {
            out.push(Some(v));
            v += d;
        }
    }
    Ok((labels, out))
}

fn parse_count(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `<metric> <values…>`, the line form shared by `load` bodies and
/// expected results.
pub fn parse_series_line(line: &str) -> Result<(Labels, Vec<Slot>), ScriptErrorKind> {
    let bad = |why: String| ScriptErrorKind::BadSeries {
        line: line.to_string(),
        why,
    };
    let (labels, used) = parse_metric(line).map_err(bad)?;
    let rest = &line[used..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(bad("expected whitespace after the label set".into()));
    }
    let values = parse_values(rest).map_err(|e| match e {
        ValuesError::Histogram(h) => ScriptErrorKind::Histogram(h),
        ValuesError::Other(w) => bad(w),
    })?;
    Ok((labels, values))
}

enum ValuesError {
    Histogram(HistogramLiteralError),
    Other(String),
}

impl From<HistogramLiteralError> for ValuesError {
    fn from(e: HistogramLiteralError) -> Self {
        ValuesError::Histogram(e)
    }
}

/// Expands the value items of a series line (README §4.5).
fn parse_values(s: &str) -> Result<Vec<Slot>, ValuesError> {
    let other = |w: &str| ValuesError::Other(w.to_string());
    let mut out = Vec::new();
    let mut rest = s.trim_start_matches([' ', '\t']);
    while !rest.is_empty() {
        let consumed = if let Some(after) = rest.strip_prefix('_') {
            let (n, used) = match after.strip_prefix('x') {
                Some(d) => {
                    let len = d.bytes().take_while(u8::is_ascii_digit).count();
                    (
                        parse_count(&d[..len]).ok_or_else(|| other("bad _xN"))?,
                        2 + len,
                    )
                }
                None => (1, 1),
            };
            out.extend(std::iter::repeat_n(None, n));
            used
        } else if rest.starts_with("stale")
            && !rest[5..].starts_with(|c: char| !c.is_ascii_whitespace())
        {
            out.push(Some(SeriesValue::Float(stale_nan())));
            5
        } else if rest.starts_with("{{") {
            let (a, used) = TestHistogram::parse_prefix(rest)?;
            let tail = &rest[used..];
            if let Some(n) = tail.strip_prefix('x') {
                let len = n.bytes().take_while(u8::is_ascii_digit).count();
                let n = parse_count(&n[..len]).ok_or_else(|| other("bad histogram xN"))?;
                out.extend(std::iter::repeat_n(Some(SeriesValue::Histogram(a)), n + 1));
                used + 1 + len
            } else if tail.starts_with("+{{") || tail.starts_with("-{{") {
                let negate = tail.starts_with('-');
                let (d, used2) = TestHistogram::parse_prefix(&tail[1..])?;
                let n = tail[1 + used2..]
                    .strip_prefix('x')
                    .ok_or_else(|| other("histogram sequence needs xN"))?;
                let len = n.bytes().take_while(u8::is_ascii_digit).count();
                let n = parse_count(&n[..len]).ok_or_else(|| other("bad histogram xN"))?;
                let mut h = a;
                for k in 0..=n {
                    let next = if k < n {
                        Some(h.combine(&d, negate)?)
                    } else {
                        None
                    };
                    out.push(Some(SeriesValue::Histogram(h)));
                    match next {
                        Some(nh) => h = nh,
                        None => break,
                    }
                }
                used + 1 + used2 + 1 + len
            } else {
                out.push(Some(SeriesValue::Histogram(a)));
                used
            }
        } else {
            let (a, used) = scan_number(rest).ok_or_else(|| other("bad value"))?;
            let tail = &rest[used..];
            if let Some(n) = tail.strip_prefix('x') {
                let len = n.bytes().take_while(u8::is_ascii_digit).count();
                let n = parse_count(&n[..len]).ok_or_else(|| other("bad xN"))?;
                out.extend(std::iter::repeat_n(Some(SeriesValue::Float(a)), n + 1));
                used + 1 + len
            } else if tail.starts_with(['+', '-']) {
                let (d, used2) = scan_number(tail).ok_or_else(|| other("bad sequence step"))?;
                let n = tail[used2..]
                    .strip_prefix('x')
                    .ok_or_else(|| other("sequence needs xN"))?;
                let len = n.bytes().take_while(u8::is_ascii_digit).count();
                let n = parse_count(&n[..len]).ok_or_else(|| other("bad xN"))?;
                // Repeated addition, not a + k·d, so rounding matches upstream.
                let mut v = a;
                for _ in 0..=n {
                    out.push(Some(SeriesValue::Float(v)));
                    v += d;
                }
                used + used2 + 1 + len
            } else {
                out.push(Some(SeriesValue::Float(a)));
                used
            }
        };
        rest = &rest[consumed..];
        if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
            return Err(other("values must be separated by whitespace"));
        }
        rest = rest.trim_start_matches([' ', '\t']);
    }
    Ok(out)
}

/// Scans a signed decimal number, `Inf` or `NaN` at the start of `s` (no hex:
/// `x` is the repeat operator). Returns the value and the bytes consumed.
fn scan_number(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    let lower = s[i..].get(..3).map(|w| w.to_ascii_lowercase());
    if matches!(lower.as_deref(), Some("inf") | Some("nan")) {
        let end = i + 3;
        if s[end..].starts_with(|c: char| c.is_ascii_alphanumeric() && c != 'x') {
            return None;
        }
        let v: f64 = s[..end].parse().ok()?;
        return Some((v, end));
    }
    let m0 = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    let mantissa = &s[m0..i];
    if mantissa.is_empty() || mantissa == "." {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let e0 = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > e0 {
            i = j;
        }
    }
    let v: f64 = s[..i].parse().ok()?;
    Some((v, i))
}

/// A plain float as written in histogram literals: decimal, `Inf`, `NaN`.
pub fn parse_plain_float(s: &str) -> Option<f64> {
    match scan_number(s) {
        Some((v, n)) if n == s.len() => Some(v),
        _ => None,
    }
}

/// Parses a scalar expectation as Go does: `ParseInt(s, 0, 64)` first (so
/// `0x1f`, `0o17`, `017`, `1_000` work), then `ParseFloat(s, 64)`.
pub fn parse_go_number(s: &str) -> Option<f64> {
    if let Some(i) = parse_go_int(s) {
        return Some(i as f64);
    }
    parse_go_float(s)
}

fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_string(), true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_string(), true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_string(), true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string(), true)
    } else {
        (10, lower.clone(), false)
    };
    // Go allows `_` only between digits, or right after a base prefix.
    let chars: Vec<char> = digits.chars().collect();
    for (k, c) in chars.iter().enumerate() {
        if *c == '_' {
            let prev_ok = if k == 0 {
                prefixed
            } else {
                chars[k - 1] != '_'
            };
            if !prev_ok || k + 1 == chars.len() || chars[k + 1] == '_' {
                return None;
            }
        }
    }
    let clean: String = chars.into_iter().filter(|c| *c != '_').collect();
    if clean.is_empty() || !clean.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mag = u64::from_str_radix(&clean, radix).ok()?;
    if neg {
        if mag == 1u64 << 63 {
            Some(i64::MIN)
        } else {
            i64::try_from(mag).ok().map(|v| -v)
        }
    } else {
        i64::try_from(mag).ok()
    }
}

fn parse_go_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let neg = s.starts_with('-');
    let lower = body.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "infinity" => {
            return Some(if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        "nan" if body.len() == s.len() => return Some(f64::NAN),
        _ => {}
    }
    if let Some(hex) = lower.strip_prefix("0x") {
        let v = parse_hex_float(hex)?;
        return Some(if neg { -v } else { v });
    }
    // Decimal floats: digits, optional fraction, optional exponent. Rust's
    // parser accepts the same shapes once words like "inf" are excluded.
    if !body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        || !body.bytes().any(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Go hex float mantissa `h.hhhp±d` (the `p` exponent is mandatory).
fn parse_hex_float(s: &str) -> Option<f64> {
    let s: String = s.chars().filter(|c| *c != '_').collect();
    let (mant, exp) = s.split_once('p')?;
    let exp: i32 = exp.parse().ok()?;
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars() {
        v = v * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        v += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    Some(v * 2f64.powi(exp))
}

/// Parses `name`, `name{…}` or `{…}` at the start of `s`. Returns the label
/// set (empty values dropped) and the bytes consumed.
pub fn parse_metric(s: &str) -> Result<(Labels, usize), String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut pairs: Vec<(String, String)> = Vec::new();
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    if i > 0 {
        if b[0].is_ascii_digit() {
            return Err("metric name starts with a digit".into());
        }
        pairs.push(("__name__".into(), s[..i].to_string()));
    }
    if i < b.len() && b[i] == b'{' {
        i += 1;
        loop {
            i = skip_ws(s, i);
            if i >= b.len() {
                return Err("unterminated label set".into());
            }
            if b[i] == b'}' {
                i += 1;
                break;
            }
            let (name, quoted, used) = if matches!(b[i], b'"' | b'\'' | b'`') {
                let (n, used) = parse_string_literal(&s[i..]).ok_or("bad quoted label name")?;
                (n, true, used)
            } else {
                let n0 = i;
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j == n0 || b[n0].is_ascii_digit() {
                    return Err(format!("bad label name at byte {n0}"));
                }
                (s[n0..j].to_string(), false, j - n0)
            };
            i = skip_ws(s, i + used);
            if quoted && i < b.len() && (b[i] == b',' || b[i] == b'}') {
                // `{"metric.name", …}`: a lone quoted string is the metric name.
                pairs.push(("__name__".into(), name));
            } else {
                if i >= b.len() || b[i] != b'=' {
                    return Err(format!("expected '=' after label {name:?}"));
                }
                i = skip_ws(s, i + 1);
                let (v, used) = parse_string_literal(&s[i..]).ok_or("bad label value")?;
                i += used;
                if pairs.iter().any(|(n, _)| *n == name) {
                    return Err(format!("duplicate label {name:?}"));
                }
                pairs.push((name, v));
            }
            i = skip_ws(s, i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => return Err("expected ',' or '}' in label set".into()),
            }
        }
    } else if i == 0 {
        return Err("expected a metric name or '{'".into());
    }
    let labels = Labels::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    Ok((labels, i))
}

fn skip_ws(s: &str, mut i: usize) -> usize {
    let b = s.as_bytes();
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// Parses a PromQL string literal at the start of `s`: `"…"` or `'…'` with Go
/// escapes, or raw `` `…` ``. Returns the value and the bytes consumed.
pub fn parse_string_literal(s: &str) -> Option<(String, usize)> {
    let quote = *s.as_bytes().first()?;
    if quote == b'`' {
        let end = s[1..].find('`')? + 1;
        return Some((s[1..end].to_string(), end + 1));
    }
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let mut out: Vec<u8> = Vec::new();
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        let c = b[i];
        if c == quote {
            return String::from_utf8(out).ok().map(|v| (v, i + 1));
        }
        if c == b'\n' {
            return None;
        }
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *b.get(i + 1)?;
        i += 2;
        let simple = match e {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            b'\'' | b'"' if e == quote => Some(e),
            _ => None,
        };
        if let Some(v) = simple {
            out.push(v);
            continue;
        }
        let take_hex = |n: usize, i: usize| -> Option<u32> {
            let h = s.get(i..i + n)?;
            u32::from_str_radix(h, 16).ok()
        };
        match e {
            b'x' => {
                out.push(take_hex(2, i)? as u8);
                i += 2;
            }
            b'u' | b'U' => {
                let n = if e == b'u' { 4 } else { 8 };
                let ch = char::from_u32(take_hex(n, i)?)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += n;
            }
            b'0'..=b'7' => {
                let o = s.get(i - 1..i + 2)?;
                out.push(u8::from_str_radix(o, 8).ok()?);
                i += 2;
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(s: &str) -> Vec<Option<f64>> {
        parse_values(s)
            .ok()
            .unwrap()
            .into_iter()
            .map(|v| {
                v.map(|v| match v {
                    SeriesValue::Float(f) => f,
                    SeriesValue::Histogram(_) => panic!("histogram"),
                })
            })
            .collect()
    }

    fn lbl(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("5m").unwrap(), 300_000);
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration("10s53ms").unwrap(), 10_053);
        assert_eq!(parse_duration("1111111s").unwrap(), 1_111_111_000);
        assert_eq!(parse_duration("1y").unwrap(), 365 * 86_400_000);
        assert_eq!(parse_duration("1w").unwrap(), 7 * 86_400_000);
        for bad in ["", "-1m", "1.5m", "1s1m", "1m1m", "5", "1 m", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_is_not_a_value_but_repetition() {
        let v = floats("0x59");
        assert_eq!(v.len(), 60);
        assert!(v.iter().all(|x| *x == Some(0.0)));
    }

    #[test]
    fn value_notation() {
        assert_eq!(
            floats("1-1x3"),
            vec![Some(1.0), Some(0.0), Some(-1.0), Some(-2.0)]
        );
        assert_eq!(floats("_x3"), vec![None, None, None]);
        assert_eq!(floats("1 _ 3"), vec![Some(1.0), None, Some(3.0)]);
        assert_eq!(floats("1x5").len(), 6);
        assert_eq!(floats("0+10x100").len(), 101);
        assert_eq!(floats("0+10x100")[100], Some(1000.0));
        assert_eq!(
            floats(".5 1e3 -2 +Inf -Inf inf"),
            vec![
                Some(0.5),
                Some(1000.0),
                Some(-2.0),
                Some(f64::INFINITY),
                Some(f64::NEG_INFINITY),
                Some(f64::INFINITY)
            ]
        );
        assert!(floats("NaN")[0].unwrap().is_nan());
        assert_eq!(
            floats("1.5E+3 2e-3x1"),
            vec![Some(1500.0), Some(0.002), Some(0.002)]
        );
        assert!(floats("")[..].is_empty());
        assert!(parse_values("1,2").is_err());
        assert!(parse_values("1+2").is_err());
        assert!(parse_values("_x").is_err());
    }

    #[test]
    fn sequences_use_repeated_addition() {
        let v = floats("0+0.1x3");
        let mut acc = 0.0;
        for x in v {
            assert_eq!(x.unwrap().to_bits(), f64::to_bits(acc));
            acc += 0.1;
        }
        // 0.1*3 would be 0.30000000000000004 as well; 0.1+0.1+0.1 differs from 3*0.1
        // at index 3 in some sequences, e.g. 0.7:
        let v = floats("0+0.7x3");
        assert_eq!(v[3].unwrap(), 0.7 + 0.7 + 0.7);
    }

    #[test]
    fn stale_marker() {
        let v = floats("1 stale 2");
        assert!(is_stale_nan(v[1].unwrap()));
        assert!(!is_stale_nan(f64::NAN));
        assert!(parse_values("stalex").is_err());
    }

    #[test]
    fn histogram_values() {
        let v = parse_values("{{sum:1 count:1}}x2 {{schema:0 sum:5}}+{{sum:1 count:2}}x3 _")
            .ok()
            .unwrap();
        assert_eq!(v.len(), 3 + 4 + 1);
        match &v[6] {
            Some(SeriesValue::Histogram(h)) => {
                assert_eq!(h.sum, 8.0);
                assert_eq!(h.count, 6.0);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(v[7], None);
    }

    #[test]
    fn metric_forms() {
        let (l, n) = parse_metric("up{job=\"a\", instance='0',}").unwrap();
        assert_eq!(
            l,
            lbl(&[("__name__", "up"), ("job", "a"), ("instance", "0")])
        );
        assert_eq!(n, 26);
        let (l, _) = parse_metric("{__name__=\"x\", a=`r\\n`}").unwrap();
        assert_eq!(l, lbl(&[("__name__", "x"), ("a", "r\\n")]));
        let (l, _) = parse_metric("m{a=\"\", b=\"\\u00e9\\x41\"}").unwrap();
        assert_eq!(l, lbl(&[("__name__", "m"), ("b", "éA")]));
        let (l, _) = parse_metric("{}").unwrap();
        assert!(l.is_empty());
        assert!(parse_metric("m{a=\"1\", a=\"2\"}").is_err());
        assert!(parse_metric("m{a=1}").is_err());
        let (l, _) = parse_metric("{\"my.metric\", \"a.b\"=\"v\"}").unwrap();
        assert_eq!(l, lbl(&[("__name__", "my.metric"), ("a.b", "v")]));
    }

    #[test]
    fn go_numbers() {
        assert_eq!(parse_go_number("1"), Some(1.0));
        assert_eq!(parse_go_number("-0.0000002"), Some(-0.0000002));
        assert_eq!(parse_go_number("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_number("-inf"), Some(f64::NEG_INFINITY));
        assert!(parse_go_number("NaN").unwrap().is_nan());
        assert_eq!(parse_go_number("0x1f"), Some(31.0));
        assert_eq!(parse_go_number("017"), Some(15.0));
        assert_eq!(parse_go_number("0b101"), Some(5.0));
        assert_eq!(parse_go_number("1_000"), Some(1000.0));
        assert_eq!(parse_go_number("1e3"), Some(1000.0));
        assert_eq!(parse_go_number("0x1p-2"), Some(0.25));
        assert_eq!(parse_go_number("1__0"), None);
        assert_eq!(parse_go_number("{} 1"), None);
        assert_eq!(parse_go_number("up"), None);
        assert_eq!(parse_go_number("x"), None);
        assert_eq!(parse_go_number("infx"), None);
    }

    #[test]
    fn load_last_line_wins_and_comment_ends_block() {
        let s = parse_script(
            "load 5m\n  a{p=\"d\"} Inf\n  b 1\n  a{p=\"d\"} -Inf\n# c\n  \neval instant at 5m a\n  a{p=\"d\"} -Inf\n",
        )
        .unwrap();
        let Command::Load(l) = &s.commands[0] else {
            panic!()
        };
        assert_eq!(l.interval_ms, 300_000);
        assert_eq!(l.series.len(), 2);
        assert_eq!(
            l.series[0].values,
            vec![Some(SeriesValue::Float(f64::NEG_INFINITY))]
        );

        // A comment inside an eval block ends it: the next line would be a
        // command and `x` is not one, so this script must fail to parse.
        assert!(parse_script("eval instant at 0 a\n  # c\n  x 1\n").is_err());
        let s = parse_script(
            "eval instant at 1m rate(x[1m])\n  expect warn\n  # Should produce no results.\n",
        )
        .unwrap();
        let Command::Eval(e) = &s.commands[0] else {
            panic!()
        };
        assert!(e.series.is_empty());
        assert_eq!(e.warn.lines, vec![None]);
    }

    #[test]
    fn eval_headers_and_expect_lines() {
        let s = parse_script("EVAL instant at 0 x\n");
        assert!(s.is_err());
        let s = parse_script(concat!(
            "eval instant at 1m30s sum(x) by (a)\n",
            "  expect fail msg:invalid label name \"a\"\n",
            "  expect warn regex: foo.*bar\n",
            "  expect no_info\n",
            "  expect ordered\n",
            "  {a=\"1\"} 3\n",
            "  {a=\"2\"} 4\n",
            "\n",
            "eval range from 0 to 10m step 5m  rate(x[5m])\n",
            "  {} 1 _ 3\n",
            "\n",
            "eval_fail instant at 0 -{job=\"api\"}\n",
            "  expected_fail_message boom\n",
            "clear\n",
        ))
        .unwrap();
        assert_eq!(s.commands.len(), 4);
        let Command::Eval(e) = &s.commands[0] else {
            panic!()
        };
        assert_eq!(e.kind, QueryKind::Instant { at_ms: 90_000 });
        assert_eq!(e.expr, "sum(x) by (a)");
        assert!(e.expect_fail);
        assert_eq!(
            e.fail_matchers,
            vec![MessageMatch::Exact("invalid label name \"a\"".into())]
        );
        assert!(
            matches!(&e.warn.lines[0], Some(MessageMatch::Regex(r)) if r.as_str() == "foo.*bar")
        );
        assert!(e.info.forbid);
        assert!(e.ordered);
        assert_eq!(e.series[1].pos, 2);
        let Command::Eval(e) = &s.commands[1] else {
            panic!()
        };
        assert_eq!(
            e.kind,
            QueryKind::Range {
                start_ms: 0,
                end_ms: 600_000,
                step_ms: 300_000
            }
        );
        assert_eq!(e.expr, "rate(x[5m])");
        assert_eq!(e.series[0].values.len(), 3);
        let Command::Eval(e) = &s.commands[2] else {
            panic!()
        };
        assert!(e.expect_fail);
        assert_eq!(e.fail_matchers, vec![MessageMatch::Exact("boom".into())]);
        assert!(matches!(s.commands[3], Command::Clear { line: 14 }));
    }

    #[test]
    fn scalar_line_ends_block() {
        let s = parse_script("eval instant at 0 1\n  1\nclear\n").unwrap();
        let Command::Eval(e) = &s.commands[0] else {
            panic!()
        };
        assert_eq!(e.scalar, Some(1.0));
        assert!(matches!(s.commands[1], Command::Clear { line: 3 }));
        // Without the scalar ending the block, `load 1m` would be a bad series.
        let s = parse_script("eval instant at 0 1\n  0x10\nload 1m\n  a 1\n").unwrap();
        assert_eq!(s.commands.len(), 2);
    }

    #[test]
    fn expect_strings_and_range_vectors() {
        let s = parse_script(concat!(
            "eval instant at 0 \" Foo \"\n",
            "  expect string \" Foo \"\n",
            "\n",
            "eval instant at 1m x[1m]\n",
            "  expect range vector from 10s to 1m step 10s\n",
            "  x 1 2 3 4 5 6\n",
        ))
        .unwrap();
        let Command::Eval(e) = &s.commands[0] else {
            panic!()
        };
        assert_eq!(e.string.as_deref(), Some(" Foo "));
        let Command::Eval(e) = &s.commands[1] else {
            panic!()
        };
        assert_eq!(
            e.range_vector,
            Some(RangeGrid {
                start_ms: 10_000,
                end_ms: 60_000,
                step_ms: 10_000
            })
        );
        assert_eq!(e.instant_time(), Some(60_000));
    }

    #[test]
    fn file_level_errors() {
        assert!(parse_script("eval instant at 0 a\n  a 1 2\n").is_err());
        assert!(parse_script("eval instant at 0 a\n  expect warn\n  expect no_warn\n").is_err());
        assert!(parse_script("eval instant at 0 a\n  expect fail\n  expect fail\n").is_err());
        assert!(parse_script("eval instant at 0 a\n  expect bogus\n").is_err());
        assert!(parse_script("eval range from 5m to 1m step 1m a\n").is_err());
        assert!(parse_script("frobnicate\n").is_err());
    }

    #[test]
    fn start_timestamp_lines() {
        let s = parse_script(concat!(
            "load 1m\n",
            "  c{t=\"a\"}@st _ _ -30s-1mx2 0-1mx1 -0msx1\n",
            "  c{t=\"a\"} _ _ 0+60x6\n",
        ))
        .unwrap();
        let Command::Load(l) = &s.commands[0] else {
            panic!()
        };
        let st = l.series[0].start_offsets.as_ref().unwrap();
        assert_eq!(
            st,
            &vec![
                None,
                None,
                Some(-30_000),
                Some(-90_000),
                Some(-150_000),
                Some(0),
                Some(-60_000),
                Some(0),
                Some(0)
            ]
        );
        // Mismatched value count.
        assert!(parse_script("load 1m\n  c@st 0 0\n  c 1\n").is_err());
        // No series line after the @st line.
        assert!(parse_script("load 1m\n  c@st 0\n").is_err());
    }
}
