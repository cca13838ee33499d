//! `GET /federate`: the latest sample of every series matching `match[]`
//! within the lookback window, in the Prometheus text exposition format
//! (0.0.4), as Prometheus's federation endpoint serves it for another
//! Prometheus to scrape.
//!
//! Reads through the [`Queryable`](pharos_query::queryable::Queryable) on
//! the blocking pool. Stale series (newest sample a staleness marker) are
//! left out.

use std::fmt::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request};
use axum::response::{IntoResponse, Response};
use pharos_storage::chunk::{is_stale_nan, SampleIterator, ValueType};
use pharos_storage::labels::Labels;
use pharos_storage::querier::SelectHints;

use super::params::Params;
use super::query::now_ms;
use super::AppState;
use crate::error::ApiError;

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`, the text format's value
/// spelling: shortest round-trip digits, in exponent form (`1.5e+06`,
/// `1e-05`) when the decimal exponent is below -4 or at least 6 (Go's `%g`
/// rule with precision 6 for shortest output), with `+Inf`/`-Inf`/`NaN`.
pub fn format_g(v: f64) -> String {
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
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Rust's `{:e}` gives the same shortest digits and the exponent.
    let e = format!("{v:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    }
}

fn write_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One exposition line: `name{a="b"} value timestamp`.
fn write_sample(out: &mut String, labels: &Labels, t: i64, v: f64) {
    let name = labels.metric_name().unwrap_or("");
    out.push_str(name);
    let mut first = true;
    for (n, val) in labels.iter() {
        if n == "__name__" {
            continue;
        }
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(n);
        out.push_str("=\"");
        write_label_value(out, val);
        out.push('"');
    }
    // Prometheus marks series without an `instance` label with an empty
    // one, so that the federating server does not attach its own.
    if !labels.has("instance") {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str("instance=\"\"");
    }
    if !first {
        out.push('}');
    }
    let _ = writeln!(out, " {} {t}", format_g(v));
}

/// `GET /federate`.
pub async fn federate(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        let p = Params::from_request(req, st.settings.web.max_request_body_bytes).await?;
        let sets = p.matchers(&st.settings.parse_options())?;
        let now = now_ms();
        let mint = now - st.settings.query.lookback_delta.as_millis() as i64;
        let q = Arc::clone(&st.queryable);
        let mut latest: Vec<(Labels, i64, f64)> = tokio::task::spawn_blocking(move || {
            let hints = SelectHints {
                start: mint,
                end: now,
                func: Some("series".into()),
                ..SelectHints::default()
            };
            let mut out = Vec::new();
            for ms in &sets {
                for s in q.select(mint, now, ms, Some(&hints))? {
                    let mut it = s.iter_range(mint, now);
                    let mut last = None;
                    while it.next() == ValueType::Float {
                        last = Some(it.at());
                    }
                    if let Some((t, v)) = last.filter(|&(_, v)| !is_stale_nan(v)) {
                        out.push((s.labels, t, v));
                    }
                }
            }
            Ok::<_, ApiError>(out)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("task failed: {e}")))??;
        latest.sort_by(|a, b| a.0.cmp(&b.0));
        latest.dedup_by(|a, b| a.0 == b.0);
        // Families by metric name, each under one TYPE line.
        latest.sort_by(|a, b| a.0.metric_name().cmp(&b.0.metric_name()));
        let mut out = String::new();
        let mut prev: Option<&str> = None;
        for (l, t, v) in &latest {
            let name = l.metric_name().unwrap_or("");
            if prev != Some(name) {
                let _ = writeln!(out, "# TYPE {name} untyped");
                prev = Some(name);
            }
            write_sample(&mut out, l, *t, *v);
        }
        Ok::<_, ApiError>(
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                out,
            )
                .into_response(),
        )
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_like_go_g() {
        for (v, want) in [
            (1.0, "1"),
            (0.5, "0.5"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(format_g(v), want, "{v}");
        }
    }

    #[test]
    fn sample_lines() {
        let mut s = String::new();
        write_sample(
            &mut s,
            &Labels::from_pairs([("__name__", "up"), ("instance", "i"), ("job", "a\"b")]),
            1500,
            1.0,
        );
        write_sample(&mut s, &Labels::from_pairs([("__name__", "x")]), 2, 0.25);
        assert_eq!(
            s,
            "up{instance=\"i\",job=\"a\\\"b\"} 1 1500\nx{instance=\"\"} 0.25 2\n"
        );
    }
}
