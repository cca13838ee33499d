//! Prometheus text exposition format 0.0.4.
//!
//! One entry per line: `# HELP name text`, `# TYPE name type`, other `#`
//! lines are comments, blank lines are skipped, and a sample is
//! `name[{labels}] value [timestamp_ms]` with blanks (spaces or tabs)
//! allowed between tokens and inside the braces. Label values unescape
//! `\\`, `\"` and `\n`; HELP text unescapes `\\` and `\n`.

use std::borrow::Cow;

use super::{parse_value, unescape, Cursor, Entry, Label, MetricType, ParseError, Sample};

pub struct TextParser<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    /// Label vector for the next sample (see [`super::Parser::recycle`]).
    spare: Vec<Label<'a>>,
}

impl<'a> TextParser<'a> {
    pub fn new(src: &'a str) -> Self {
        TextParser {
            src,
            pos: 0,
            line: 0,
            spare: Vec::new(),
        }
    }

    pub(super) fn recycle(&mut self, labels: Vec<Label<'a>>) {
        self.spare = labels;
    }

    pub fn next_entry(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        self.next_entry_known(&mut |_| false)
    }

    /// As [`TextParser::next_entry`], but the label block of a sample whose
    /// series text `known` accepts is only scanned for its end, not parsed:
    /// that sample's `labels` come back empty. See
    /// [`super::Parser::next_entry_known`].
    pub fn next_entry_known(
        &mut self,
        known: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<Entry<'a>>, ParseError> {
        while self.pos < self.src.len() {
            let rest = &self.src[self.pos..];
            let (line, advance) = match rest.find('\n') {
                Some(i) => (&rest[..i], i + 1),
                None => (rest, rest.len()),
            };
            self.pos += advance;
            self.line += 1;
            let at = self.line;
            match parse_line(line, &mut self.spare, known)
                .map_err(|msg| ParseError { line: at, msg })?
            {
                Some(e) => return Ok(Some(e)),
                None => continue,
            }
        }
        Ok(None)
    }
}

fn parse_line<'a>(
    line: &'a str,
    spare: &mut Vec<Label<'a>>,
    known: &mut dyn FnMut(&str) -> bool,
) -> Result<Option<Entry<'a>>, String> {
    let mut c = Cursor::new(line);
    c.skip_blank();
    match c.peek() {
        None => Ok(None),
        Some(b'#') => {
            c.pos += 1;
            parse_comment(c)
        }
        Some(_) => parse_sample(c, spare, known).map(|s| Some(Entry::Sample(s))),
    }
}

fn parse_comment(mut c: Cursor<'_>) -> Result<Option<Entry<'_>>, String> {
    if c.skip_blank() == 0 {
        return Ok(None);
    }
    let keyword = c.token();
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(None);
    }
    if c.skip_blank() == 0 {
        // "# HELP" alone is a comment for Prometheus too.
        return Ok(None);
    }
    let family = c
        .metric_name()
        .ok_or_else(|| format!("invalid metric name in {keyword} line"))?;
    if !c.at_end() && c.skip_blank() == 0 {
        return Err(format!("invalid metric name in {keyword} line"));
    }
    if keyword == "HELP" {
        let raw = c.rest();
        let text = if raw.contains('\\') {
            Cow::Owned(unescape(raw, false))
        } else {
            Cow::Borrowed(raw)
        };
        return Ok(Some(Entry::Help { family, text }));
    }
    let t = c.token();
    c.skip_blank();
    if !c.at_end() {
        return Err(format!("unexpected text after type {t:?}"));
    }
    let kind = match t {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "summary" => MetricType::Summary,
        "untyped" => MetricType::Unknown,
        _ => return Err(format!("invalid metric type {t:?}")),
    };
    Ok(Some(Entry::Type { family, kind }))
}

fn parse_sample<'a>(
    mut c: Cursor<'a>,
    spare: &mut Vec<Label<'a>>,
    known: &mut dyn FnMut(&str) -> bool,
) -> Result<Sample<'a>, String> {
    let start = c.pos;
    let name = c
        .metric_name()
        .ok_or_else(|| format!("invalid metric name at {:?}", c.rest_short()))?;
    c.skip_blank();
    let mut labels = std::mem::take(spare);
    labels.clear();
    if c.peek() == Some(b'{') {
        // A series text accepted before parses the same way again (same
        // bytes), and the scan ends where the parse would for any text the
        // parse accepts; so a known text can skip the parse.
        let end = label_block_end(c.s.as_bytes(), c.pos);
        match end.and_then(|e| Some((e, c.s.get(start..e)?.trim_end()))) {
            Some((e, series)) if known(series) => c.pos = e,
            _ => c.labels(true, &mut labels)?,
        }
    }
    let series = c.s.get(start..c.pos).unwrap_or(name).trim_end();
    c.skip_blank();
    let v = c.token();
    let value = parse_value(v).ok_or_else(|| {
        if v.is_empty() {
            format!("expected value after metric {name:?}")
        } else {
            format!("invalid value {v:?}")
        }
    })?;
    c.skip_blank();
    let mut timestamp_ms = None;
    if !c.at_end() {
        let t = c.token();
        timestamp_ms = Some(
            t.parse::<i64>()
                .map_err(|_| format!("invalid timestamp {t:?}"))?,
        );
        c.skip_blank();
        if !c.at_end() {
            return Err(format!(
                "unexpected text after timestamp: {:?}",
                c.rest_short()
            ));
        }
    }
    Ok(Sample {
        name,
        series,
        labels,
        value,
        timestamp_ms,
        exemplar: None,
    })
}

/// The position just after the `}` closing the label block that starts at
/// `open` (a `{`), skipping quoted values (with `\\` escapes) as
/// [`Cursor::labels`] does; `None` when the line ends first.
fn label_block_end(b: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        match *b.get(i)? {
            b'}' => return Some(i + 1),
            b'"' => {
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_all, Format};
    use super::*;

    fn parse(s: &str) -> Result<Vec<Entry<'_>>, ParseError> {
        parse_all(s.as_bytes(), Format::PromText)
    }

    #[test]
    fn a_typical_exposition() {
        let body = "# HELP go_gc_duration_seconds A summary of the GC invocation durations.\n\
# TYPE go_gc_duration_seconds summary\n\
go_gc_duration_seconds{quantile=\"0\"} 4.9351e-05\n\
go_gc_duration_seconds_sum 0.00223\n\
\n\
# a free comment\n\
http_requests_total{method=\"post\",code=\"200\",} 1027 1395066363000\n\
msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
  spaced { a = \"1\" , b=\"2\" }\t+Inf\n\
nan_metric NaN\n";
        let e = parse(body).unwrap();
        assert_eq!(e.len(), 8);
        assert_eq!(
            e[0],
            Entry::Help {
                family: "go_gc_duration_seconds",
                text: Cow::Borrowed("A summary of the GC invocation durations.")
            }
        );
        assert_eq!(
            e[1],
            Entry::Type {
                family: "go_gc_duration_seconds",
                kind: MetricType::Summary
            }
        );
        let Entry::Sample(s) = &e[4] else { panic!() };
        assert_eq!(s.name, "http_requests_total");
        assert_eq!(s.labels.len(), 2);
        assert_eq!(s.timestamp_ms, Some(1395066363000));
        let Entry::Sample(s) = &e[5] else { panic!() };
        assert_eq!(s.labels[0].1, "C:\\DIR\\FILE.TXT");
        assert_eq!(s.labels[1].1, "Cannot find file:\n\"FILE.TXT\"");
        assert!(matches!(s.labels[1].1, Cow::Owned(_)));
        assert!(matches!(
            s.labels.first().map(|l| &l.1),
            Some(Cow::Owned(_))
        ));
        let Entry::Sample(s) = &e[6] else { panic!() };
        assert_eq!(s.name, "spaced");
        assert_eq!(
            s.labels,
            vec![("a", Cow::Borrowed("1")), ("b", Cow::Borrowed("2"))]
        );
        assert_eq!(s.value, f64::INFINITY);
    }

    #[test]
    fn unescaped_values_borrow() {
        let e = parse("m{a=\"plain\"} 1\n").unwrap();
        let Entry::Sample(s) = &e[0] else { panic!() };
        assert!(matches!(s.labels[0].1, Cow::Borrowed("plain")));
    }

    #[test]
    fn help_escapes_and_untyped() {
        let e = parse("# HELP m a\\\\b\\nc \"q\"\n# TYPE m untyped\nm 1").unwrap();
        assert_eq!(
            e[0],
            Entry::Help {
                family: "m",
                text: Cow::Owned("a\\b\nc \"q\"".into())
            }
        );
        assert_eq!(
            e[1],
            Entry::Type {
                family: "m",
                kind: MetricType::Unknown
            }
        );
    }

    #[test]
    fn known_series_skip_the_label_parse() {
        let body = "m{a=\"x\\\"}\"} 1\n  sp { b = \"2\" }\t3 7\nm{a=\"y\"} 4\nn 5\n";
        let full = parse(body).unwrap();
        let mut p = TextParser::new(body);
        let mut asked = Vec::new();
        let mut known = |s: &str| {
            asked.push(s.to_string());
            s != "m{a=\"y\"}"
        };
        let mut got = Vec::new();
        while let Some(e) = p.next_entry_known(&mut known).unwrap() {
            got.push(e);
        }
        assert_eq!(
            asked,
            vec!["m{a=\"x\\\"}\"}", "sp { b = \"2\" }", "m{a=\"y\"}"]
        );
        assert_eq!(got.len(), full.len());
        for (i, (g, f)) in got.iter().zip(&full).enumerate() {
            let (Entry::Sample(g), Entry::Sample(f)) = (g, f) else {
                panic!()
            };
            assert_eq!(
                (g.series, g.value, g.timestamp_ms),
                (f.series, f.value, f.timestamp_ms)
            );
            if i == 2 || i == 3 {
                assert_eq!(g.labels, f.labels, "{i}");
            } else {
                assert!(g.labels.is_empty(), "{i}");
            }
        }
        // An unterminated block is parsed (and refused) whatever `known` says.
        let mut p = TextParser::new("m{a=\"x\" 1\n");
        assert!(p.next_entry_known(&mut |_| true).is_err());
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("m 1\nm{a=\"1\" 2\n", 2),
            ("m\n", 1),
            ("m abc\n", 1),
            ("m 1 2.5\n", 1),
            ("m 1 2 3\n", 1),
            ("1m 1\n", 1),
            ("m{1a=\"x\"} 1\n", 1),
            ("m{a=\"x} 1\n", 1),
            ("# TYPE m flower\n", 1),
            ("x 1\n# TYPE 1m counter\n", 2),
            ("m{a=x} 1", 1),
        ];
        for (body, line) in cases {
            let err = parse(body).unwrap_err();
            assert_eq!(err.line, line, "{body:?}: {err}");
        }
    }
}
