//! OpenMetrics 1.0 text format.
//!
//! Stricter than the Prometheus text format: tokens are separated by one
//! space, there are no blank lines or free comments, metadata lines are
//! `# TYPE`, `# HELP` and `# UNIT`, timestamps are seconds (fractions
//! allowed), a sample may carry an exemplar (` # {labels} value [ts]`), and
//! the body must end with `# EOF` with nothing after it.

use std::borrow::Cow;

use super::{
    parse_value, unescape, Cursor, Entry, Exemplar, Label, MetricType, ParseError, Sample,
};

pub struct OpenMetricsParser<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    eof: bool,
    /// Label vector for the next sample (see [`super::Parser::recycle`]).
    spare: Vec<Label<'a>>,
}

impl<'a> OpenMetricsParser<'a> {
    pub fn new(src: &'a str) -> Self {
        OpenMetricsParser {
            src,
            pos: 0,
            line: 0,
            eof: false,
            spare: Vec::new(),
        }
    }

    pub(super) fn recycle(&mut self, labels: Vec<Label<'a>>) {
        self.spare = labels;
    }

    pub fn next_entry(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        if self.eof {
            return Ok(None);
        }
        if self.pos >= self.src.len() {
            return Err(ParseError {
                line: self.line,
                msg: "data does not end with # EOF".into(),
            });
        }
        let rest = &self.src[self.pos..];
        let (line, advance) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        self.line += 1;
        let at = self.line;
        let err = |msg: String| ParseError { line: at, msg };
        if line == "# EOF" {
            self.eof = true;
            if self.pos < self.src.len() {
                return Err(err("unexpected data after # EOF".into()));
            }
            return Ok(None);
        }
        parse_line(line, &mut self.spare).map(Some).map_err(err)
    }
}

fn parse_line<'a>(line: &'a str, spare: &mut Vec<Label<'a>>) -> Result<Entry<'a>, String> {
    let c = Cursor::new(line);
    match c.peek() {
        None => Err("unexpected empty line".into()),
        Some(b'#') => parse_meta(c),
        Some(_) => parse_sample(c, spare).map(Entry::Sample),
    }
}

fn parse_meta(mut c: Cursor<'_>) -> Result<Entry<'_>, String> {
    c.pos += 1;
    if !c.eat(b' ') {
        return Err("expected a space after '#'".into());
    }
    let keyword = c.token();
    if !c.eat(b' ') {
        return Err(format!("invalid metadata line {:?}", c.s));
    }
    let family = c
        .metric_name()
        .ok_or_else(|| format!("invalid metric name in {keyword} line"))?;
    match keyword {
        "HELP" => {
            if c.at_end() {
                return Ok(Entry::Help {
                    family,
                    text: Cow::Borrowed(""),
                });
            }
            if !c.eat(b' ') {
                return Err("expected a space after the metric name".into());
            }
            let raw = c.rest();
            let text = if raw.contains('\\') {
                Cow::Owned(unescape(raw, true))
            } else {
                Cow::Borrowed(raw)
            };
            Ok(Entry::Help { family, text })
        }
        "TYPE" => {
            if !c.eat(b' ') {
                return Err("expected a space after the metric name".into());
            }
            let t = c.rest();
            let kind = match t {
                "counter" => MetricType::Counter,
                "gauge" => MetricType::Gauge,
                "histogram" => MetricType::Histogram,
                "gaugehistogram" => MetricType::GaugeHistogram,
                "summary" => MetricType::Summary,
                "info" => MetricType::Info,
                "stateset" => MetricType::Stateset,
                "unknown" => MetricType::Unknown,
                _ => return Err(format!("invalid metric type {t:?}")),
            };
            Ok(Entry::Type { family, kind })
        }
        "UNIT" => {
            let unit = if c.at_end() {
                ""
            } else if c.eat(b' ') {
                c.rest()
            } else {
                return Err("expected a space after the metric name".into());
            };
            if unit.contains(' ') {
                return Err(format!("invalid unit {unit:?}"));
            }
            Ok(Entry::Unit { family, unit })
        }
        _ => Err(format!("invalid metadata keyword {keyword:?}")),
    }
}

/// OpenMetrics timestamps are seconds; Pharos keeps milliseconds.
fn parse_timestamp(t: &str) -> Result<i64, String> {
    let secs = parse_value(t)
        .filter(|s| s.is_finite())
        .ok_or_else(|| format!("invalid timestamp {t:?}"))?;
    let ms = secs * 1000.0;
    if !(-9.2e18..9.2e18).contains(&ms) {
        return Err(format!("timestamp {t:?} out of range"));
    }
    Ok(ms as i64)
}

fn parse_sample<'a>(mut c: Cursor<'a>, spare: &mut Vec<Label<'a>>) -> Result<Sample<'a>, String> {
    let start = c.pos;
    let name = c
        .metric_name()
        .ok_or_else(|| format!("invalid metric name at {:?}", c.rest_short()))?;
    let mut labels = std::mem::take(spare);
    labels.clear();
    if c.peek() == Some(b'{') {
        c.labels(false, &mut labels)?;
    }
    let series = c.s.get(start..c.pos).unwrap_or(name);
    if !c.eat(b' ') {
        return Err(format!("expected a space before the value of {name:?}"));
    }
    let v = c.token();
    let value = parse_value(v).ok_or_else(|| format!("invalid value {v:?}"))?;
    let mut timestamp_ms = None;
    let mut exemplar = None;
    if c.eat(b' ') {
        if c.peek() != Some(b'#') {
            timestamp_ms = Some(parse_timestamp(c.token())?);
            if !c.at_end() && !c.eat(b' ') {
                return Err("expected a space after the timestamp".into());
            }
        }
        if c.peek() == Some(b'#') {
            exemplar = Some(parse_exemplar(&mut c)?);
        }
    }
    if !c.at_end() {
        return Err(format!("unexpected text {:?}", c.rest_short()));
    }
    Ok(Sample {
        name,
        series,
        labels,
        value,
        timestamp_ms,
        exemplar,
    })
}

fn parse_exemplar<'a>(c: &mut Cursor<'a>) -> Result<Exemplar<'a>, String> {
    if !(c.eat(b'#') && c.eat(b' ')) {
        return Err("expected '# ' before an exemplar".into());
    }
    let mut labels = Vec::new();
    c.labels(false, &mut labels)?;
    // OpenMetrics caps exemplar label sets at 128 UTF-8 characters.
    let chars: usize = labels
        .iter()
        .map(|(n, v)| n.chars().count() + v.chars().count())
        .sum();
    if chars > 128 {
        return Err(format!(
            "exemplar labels have {chars} characters, more than 128"
        ));
    }
    if !c.eat(b' ') {
        return Err("expected a space before the exemplar value".into());
    }
    let v = c.token();
    let value = parse_value(v).ok_or_else(|| format!("invalid exemplar value {v:?}"))?;
    let mut timestamp_ms = None;
    if c.eat(b' ') {
        timestamp_ms = Some(parse_timestamp(c.token())?);
    }
    Ok(Exemplar {
        labels,
        value,
        timestamp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_all, Format};
    use super::*;

    fn parse(s: &str) -> Result<Vec<Entry<'_>>, ParseError> {
        parse_all(s.as_bytes(), Format::OpenMetrics)
    }

    #[test]
    fn a_typical_exposition() {
        let body = "# TYPE foo_seconds counter\n\
# UNIT foo_seconds seconds\n\
# HELP foo_seconds Time \\\"spent\\\".\n\
foo_seconds_total{a=\"b\"} 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67 1520879602.0\n\
foo_seconds_created{a=\"b\"} 1520430000.123\n\
# TYPE bar stateset\n\
bar{bar=\"x\"} 1\n\
plain 2 # {id=\"1\"} 3\n\
# EOF\n";
        let e = parse(body).unwrap();
        assert_eq!(e.len(), 8);
        assert_eq!(
            e[1],
            Entry::Unit {
                family: "foo_seconds",
                unit: "seconds"
            }
        );
        assert_eq!(
            e[2],
            Entry::Help {
                family: "foo_seconds",
                text: Cow::Owned("Time \"spent\".".into())
            }
        );
        let Entry::Sample(s) = &e[3] else { panic!() };
        assert_eq!(s.value, 17.0);
        assert_eq!(s.timestamp_ms, Some(1520879607789));
        let ex = s.exemplar.as_ref().unwrap();
        assert_eq!(ex.labels, vec![("trace_id", Cow::Borrowed("KOO5S4vxi0o"))]);
        assert_eq!(ex.value, 0.67);
        assert_eq!(ex.timestamp_ms, Some(1520879602000));
        let Entry::Sample(s) = &e[7] else { panic!() };
        assert_eq!(s.timestamp_ms, None);
        assert_eq!(s.exemplar.as_ref().unwrap().value, 3.0);
    }

    #[test]
    fn eof_is_required_and_final() {
        assert!(parse("# EOF").unwrap().is_empty());
        assert_eq!(
            parse("a 1\n").unwrap_err().msg,
            "data does not end with # EOF"
        );
        assert_eq!(parse("a 1\n# EOF\nb 2\n").unwrap_err().line, 2);
        assert!(parse("").is_err());
    }

    #[test]
    fn strictness() {
        for body in [
            "a  1\n# EOF\n",
            "\n# EOF\n",
            "# free comment\n# EOF\n",
            "a{b=\"c\"} 1 2 3\n# EOF\n",
            "a 1 # {b=\"c\"}\n# EOF\n",
            "a 1 #{b=\"c\"} 1\n# EOF\n",
            "# TYPE a untyped\n# EOF\n",
            "a 1 inf\n# EOF\n",
            "a { b=\"c\"} 1\n# EOF\n",
        ] {
            assert!(parse(body).is_err(), "{body:?}");
        }
        let long = format!("a 1 # {{id=\"{}\"}} 1\n# EOF\n", "x".repeat(200));
        assert!(parse(&long).is_err());
    }
}
