//! JSON encoding byte-compatible with Prometheus's HTTP API: strings escaped
//! like Go's `encoding/json` (HTML-safe, U+2028/9 escaped), sample values as
//! strings formatted like Prometheus's `MarshalFloat` (shortest digits,
//! 'f' form, 'e' form below 1e-6 and from 1e21) with `+Inf`/`-Inf`/`NaN`, timestamps as numbers of seconds with up to three
//! decimals (Prometheus's `MarshalTimestamp`), and the success envelope
//! with optional `warnings`/`infos`.
//!
//! Written by hand (not serde) because the shapes are fixed and hot: a
//! range query can return millions of points.

use std::fmt::Write;

use pharos_query::engine::{QueryResult, Value};
use pharos_storage::labels::Labels;

/// Appends `s` as a JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        let needs_u = matches!(
            c,
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}'
        );
        if esc.is_none() && !needs_u {
            continue;
        }
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends a sample value the way Prometheus renders it (as a JSON string).
pub fn write_value(out: &mut String, v: f64) {
    out.push('"');
    push_float(out, v);
    out.push('"');
}

/// A sample value as Prometheus writes it (its `jsonutil.MarshalFloat`):
/// Go's `strconv.FormatFloat` with the shortest round-trip digits, in 'f'
/// form, or 'e' form (`4e-09`, `1e+21`) when the magnitude is below 1e-6
/// or at least 1e21 — the rule of Go's `encoding/json` — plus `+Inf`,
/// `-Inf` and `NaN`.
pub fn push_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        push_go_json_float(out, v);
    }
}

/// Go's `encoding/json` spelling of a finite float64 (see [`push_float`]).
/// Rust's `Display` and `{:e}` produce the same shortest digits as Go.
fn push_go_json_float(out: &mut String, f: f64) {
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format!("{f:e}");
        if let Some((m, e)) = s.split_once('e') {
            // Go writes at least two exponent digits and always a sign.
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            let _ = write!(out, "{m}e{sign}{digits:0>2}");
            return;
        }
    }
    let _ = write!(out, "{f}");
}

/// Appends a millisecond timestamp as seconds: `12`, `12.5` is `12.500`.
pub fn write_ts(out: &mut String, t: i64) {
    let mut t = t as i128;
    if t < 0 {
        out.push('-');
        t = -t;
    }
    let _ = write!(out, "{}", t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// Appends `t / 1000` as Go's `encoding/json` writes a float64.
pub fn write_float_secs(out: &mut String, t: i64) {
    push_go_json_float(out, t as f64 / 1000.0);
}

/// Appends `{"name":"value",…}` in label order.
pub fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, n);
        out.push(':');
        write_str(out, v);
    }
    out.push('}');
}

/// Appends `[ts,"value"]`.
pub fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_ts(out, t);
    out.push(',');
    write_value(out, v);
    out.push(']');
}

/// Appends a list of JSON strings.
pub fn write_str_list<'a>(out: &mut String, items: impl IntoIterator<Item = &'a str>) {
    out.push('[');
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, s);
    }
    out.push(']');
}

/// `{"resultType":…,"result":…}` for a query value.
pub fn write_query_data(out: &mut String, value: &Value) {
    out.push_str(r#"{"resultType":"#);
    write_str(out, value.type_name());
    out.push_str(r#","result":"#);
    match value {
        // Prometheus encodes scalar and string results with Go's float64
        // JSON encoding of the seconds (`1.25`, not `1.250`), unlike the
        // points of vectors and matrices.
        Value::Scalar { t, v } => {
            out.push('[');
            write_float_secs(out, *t);
            out.push(',');
            write_value(out, *v);
            out.push(']');
        }
        Value::String { t, v } => {
            out.push('[');
            write_float_secs(out, *t);
            out.push(',');
            write_str(out, v);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(out, &s.labels);
                out.push_str(r#","value":"#);
                write_point(out, s.t, s.v);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(out, &s.labels);
                out.push_str(r#","values":["#);
                for (j, (t, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(out, *t, *v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
}

/// `{"status":"success","data":<data>[,"warnings":[…]][,"infos":[…]]}`.
/// `data` is raw JSON.
pub fn success(data: &str, warnings: &[String], infos: &[String]) -> String {
    let mut out = String::with_capacity(data.len() + 40);
    out.push_str(r#"{"status":"success","data":"#);
    out.push_str(data);
    if !warnings.is_empty() {
        out.push_str(r#","warnings":"#);
        write_str_list(&mut out, warnings.iter().map(String::as_str));
    }
    if !infos.is_empty() {
        out.push_str(r#","infos":"#);
        write_str_list(&mut out, infos.iter().map(String::as_str));
    }
    out.push('}');
    out
}

/// Query statistics in Prometheus's `stats` shape. Per-step samples are
/// omitted, as Prometheus omits them unless its `promql-per-step-stats`
/// feature flag is on.
pub fn write_stats(out: &mut String, r: &QueryResult, queue_secs: f64, total_secs: f64) {
    let s = &r.stats;
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let inner = secs(s.eval_time.saturating_sub(s.prepare_time));
    let _ = write!(
        out,
        r#"{{"timings":{{"evalTotalTime":{},"resultSortTime":0,"queryPreparationTime":{},"innerEvalTime":{},"execQueueTime":{},"execTotalTime":{}}},"samples":{{"totalQueryableSamples":{},"peakSamples":{}}}}}"#,
        secs(s.eval_time),
        secs(s.prepare_time),
        inner,
        queue_secs,
        total_secs,
        s.total_queryable_samples,
        s.peak_samples
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_query::engine::{Sample, SeriesResult};

    fn v(x: f64) -> String {
        let mut s = String::new();
        write_value(&mut s, x);
        s
    }

    #[test]
    fn floats_like_go_format_float_f_minus_one() {
        assert_eq!(v(1.0), r#""1""#);
        assert_eq!(v(0.1), r#""0.1""#);
        assert_eq!(v(-2.5), r#""-2.5""#);
        // Exponent form outside [1e-6, 1e21), as Prometheus 2.42 answers.
        assert_eq!(v(1e21), r#""1e+21""#);
        assert_eq!(v(999999999999999900000.0), r#""999999999999999900000""#);
        assert_eq!(v(1e-7), r#""1e-07""#);
        assert_eq!(v(4e-9), r#""4e-09""#);
        assert_eq!(v(0.000001), r#""0.000001""#);
        assert_eq!(v(-1.6666666666666664e-12), r#""-1.6666666666666664e-12""#);
        assert_eq!(v(123456789.123), r#""123456789.123""#);
        assert_eq!(v(-0.0), r#""-0""#);
        assert_eq!(v(f64::INFINITY), r#""+Inf""#);
        assert_eq!(v(f64::NEG_INFINITY), r#""-Inf""#);
        assert_eq!(v(f64::NAN), r#""NaN""#);
        assert_eq!(v(f64::from_bits(0x7ff0000000000002)), r#""NaN""#);
        assert_eq!(v(1.7976931348623157e308), r#""1.7976931348623157e+308""#);
    }

    #[test]
    fn timestamps_like_marshal_timestamp() {
        let ts = |t| {
            let mut s = String::new();
            write_ts(&mut s, t);
            s
        };
        assert_eq!(ts(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts(1_435_781_451_000), "1435781451");
        assert_eq!(ts(1500), "1.500");
        assert_eq!(ts(5), "0.005");
        assert_eq!(ts(-1500), "-1.500");
        assert_eq!(ts(0), "0");
        assert_eq!(ts(i64::MIN), "-9223372036854775.808");
    }

    #[test]
    fn strings_escaped_like_go() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\n<>&\u{1}\u{2028}é");
        assert_eq!(s, r#""a\"b\\c\n\u003c\u003e\u0026\u0001\u2028é""#);
    }

    #[test]
    fn query_shapes() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let mut s = String::new();
        write_query_data(
            &mut s,
            &Value::Vector(vec![Sample {
                labels: l.clone(),
                t: 1000,
                v: 1.0,
            }]),
        );
        assert_eq!(
            s,
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1,"1"]}]}"#
        );
        let mut s = String::new();
        write_query_data(
            &mut s,
            &Value::Matrix(vec![SeriesResult {
                labels: l,
                points: vec![(1000, 1.0), (2500, f64::NAN)],
            }]),
        );
        assert_eq!(
            s,
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a"},"values":[[1,"1"],[2.500,"NaN"]]}]}"#
        );
        let mut s = String::new();
        write_query_data(&mut s, &Value::Scalar { t: 1, v: 2.0 });
        assert_eq!(s, r#"{"resultType":"scalar","result":[0.001,"2"]}"#);
        let mut s = String::new();
        write_query_data(
            &mut s,
            &Value::Scalar {
                t: 1_795_622_742_250,
                v: -1.0,
            },
        );
        assert_eq!(
            s,
            r#"{"resultType":"scalar","result":[1795622742.25,"-1"]}"#
        );
        let mut s = String::new();
        write_float_secs(&mut s, 1);
        write_float_secs(&mut s, -1_000);
        assert_eq!(s, "0.001-1");
        let mut s = String::new();
        write_query_data(
            &mut s,
            &Value::String {
                t: 0,
                v: "x".into(),
            },
        );
        assert_eq!(s, r#"{"resultType":"string","result":[0,"x"]}"#);
        assert_eq!(
            success("[]", &["w".into()], &[]),
            r#"{"status":"success","data":[],"warnings":["w"]}"#
        );
    }
}
