//! Reading Prometheus API answers and reporting latencies, for the
//! benchmarks that compare Pharos with real servers
//! (`query/benches/promql.rs`, `node/benches/remote_write.rs`, each
//! including this file with `#[path]`).

use std::collections::BTreeMap;
use std::time::Duration;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One series of an answer: its labels and its points (ms, value).
pub(crate) type Series = (BTreeMap<String, String>, Vec<(i64, f64)>);

/// A sample value as the API writes it (a string, with `NaN`, `+Inf`,
/// `-Inf`).
pub(crate) fn prom_float(v: &serde_json::Value) -> Result<f64> {
    let s = v.as_str().ok_or("sample value is not a string")?;
    Ok(match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse()?,
    })
}

/// A `[seconds, "value"]` pair.
pub(crate) fn prom_point(p: &serde_json::Value) -> Result<(i64, f64)> {
    let t = p
        .get(0)
        .and_then(|t| t.as_f64())
        .ok_or("sample without a timestamp")?;
    let v = prom_float(p.get(1).ok_or("sample without a value")?)?;
    Ok(((t * 1000.0).round() as i64, v))
}

/// The series of a vector or matrix `result`, sorted by labels.
pub(crate) fn series_of(result: &[serde_json::Value]) -> Result<Vec<Series>> {
    let mut out: Vec<Series> = Vec::with_capacity(result.len());
    for s in result {
        let metric = s
            .get("metric")
            .and_then(|m| m.as_object())
            .ok_or("series without metric")?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let points = if let Some(v) = s.get("value") {
            vec![prom_point(v)?]
        } else {
            s.get("values")
                .and_then(|v| v.as_array())
                .ok_or("series without values")?
                .iter()
                .map(prom_point)
                .collect::<Result<_>>()?
        };
        out.push((metric, points));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Median and p99, nearest rank over every run (exact; the maximum below
/// 100 runs).
pub(crate) fn quantiles(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    let rank = |q: f64| {
        let r = (q * v.len() as f64).ceil() as usize;
        v[r.clamp(1, v.len()) - 1]
    };
    (rank(0.5), rank(0.99))
}

/// Milliseconds with three significant digits.
pub(crate) fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 10.0 {
        format!("{m:.2}")
    } else if m < 100.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.0}")
    }
}
