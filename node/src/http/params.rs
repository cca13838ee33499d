//! Request parameters the way Prometheus's API reads them: URL query and
//! form-encoded POST body merged (body first, as Go's `ParseForm`), repeated
//! keys (`match[]`), times as Unix seconds with decimals or RFC 3339,
//! durations as Prometheus duration strings or float seconds, and series
//! selectors for `match[]`.

use axum::body::Body;
use axum::http::{header, Method, Request};
use pharos_query::parser::ast::Expr;
use pharos_query::parser::{parse_with, ParseOptions};
use pharos_storage::labels::Matcher;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::duration::parse_duration_ms;
use crate::error::ApiError;

/// Longest a client may take to send a request body (slow senders would
/// otherwise hold connections and limits).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Earliest and latest timestamps (ms) used when `start`/`end` are absent.
pub const MIN_TIME: i64 = i64::MIN / 2;
pub const MAX_TIME: i64 = i64::MAX / 2;

/// Merged form and query parameters, in order.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Reads the URL query and, for a form-encoded POST, the body (at most
    /// `max_body` bytes).
    pub async fn from_request(req: Request<Body>, max_body: usize) -> Result<Params, ApiError> {
        let (parts, body) = req.into_parts();
        let mut pairs = Vec::new();
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if parts.method == Method::POST && is_form {
            let bytes = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, max_body))
                .await
                .map_err(|_| ApiError::bad("timed out reading the request body"))?
                .map_err(|_| {
                    ApiError::TooLarge(format!("request body over the limit of {max_body} bytes"))
                })?;
            pairs.extend(form_urlencoded::parse(&bytes).into_owned());
        }
        if let Some(q) = parts.uri.query() {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Ok(Params { pairs })
    }

    pub fn from_pairs(pairs: Vec<(String, String)>) -> Params {
        Params { pairs }
    }

    /// First value, empty counting as absent (Go's `FormValue`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// An optional time parameter in ms, `default` when absent. Errors
    /// read `invalid parameter "x": Invalid time value for 'x': …`, as
    /// Prometheus words them for optional times.
    pub fn time(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(s) => parse_time(s).map_err(|e| {
                ApiError::param(name, format!("Invalid time value for '{name}': {e}"))
            }),
        }
    }

    /// A required time parameter (`start`/`end` of range queries): errors
    /// carry no extra wording, as in Prometheus.
    pub fn required_time(&self, name: &str) -> Result<i64, ApiError> {
        parse_time(self.get(name).unwrap_or("")).map_err(|e| ApiError::param(name, e))
    }

    /// A duration parameter in ms.
    pub fn duration(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|s| parse_duration_param(s).map_err(|e| ApiError::param(name, e)))
            .transpose()
    }

    /// A non-negative integer parameter (`limit`); 0 or absent means none.
    pub fn limit(&self, name: &str) -> Result<usize, ApiError> {
        match self.get(name) {
            None => Ok(0),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|&n| n >= 0)
                .map(|n| n as usize)
                .ok_or_else(|| {
                    ApiError::param(name, format!("cannot parse {s:?} to a valid limit"))
                }),
        }
    }

    /// `match[]` selectors, each a list of matchers.
    pub fn matchers(&self, opts: &ParseOptions) -> Result<Vec<Vec<Matcher>>, ApiError> {
        self.all("match[]")
            .into_iter()
            .map(|s| parse_selector(s, opts).map_err(|e| ApiError::param("match[]", e)))
            .collect()
    }
}

/// Unix seconds (with decimals, rounded to ms) or RFC 3339, to ms.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let err = || format!("cannot parse {s:?} to a valid timestamp");
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(err());
        }
        let ms = (f * 1000.0).round();
        if ms.abs() > 9.2e18 {
            return Err(err());
        }
        return Ok(ms as i64);
    }
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => {
            let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
            i64::try_from(ms).map_err(|_| err())
        }
        Err(_) => Err(err()),
    }
}

/// Float seconds or a Prometheus duration string, to ms (truncated as
/// Prometheus truncates nanoseconds to milliseconds).
pub fn parse_duration_param(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ns = f * 1e9;
        if !ns.is_finite() || ns > i64::MAX as f64 || ns < i64::MIN as f64 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok((ns as i64) / 1_000_000);
    }
    parse_duration_ms(s)
        .ok()
        .and_then(|ms| i64::try_from(ms).ok())
        .ok_or_else(|| format!("cannot parse {s:?} to a valid duration"))
}

/// A series selector (`up{job="a"}`, `{__name__=~"x.*"}`).
pub fn parse_selector(s: &str, opts: &ParseOptions) -> Result<Vec<Matcher>, String> {
    match parse_with(s, opts) {
        Ok(Expr::VectorSelector(vs)) if vs.offset.is_none() && vs.at.is_none() => Ok(vs.matchers),
        Ok(_) => Err("1:1: parse error: only vector selectors are allowed".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("1435781451"), Ok(1_435_781_451_000));
        assert_eq!(parse_time("0.0005"), Ok(1));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51+02:00"),
            Ok(1_435_781_451_000)
        );
        assert!(parse_time("yesterday")
            .unwrap_err()
            .contains("\"yesterday\""));
        assert!(parse_time("NaN").is_err());
        assert!(parse_time("Inf").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_param("15"), Ok(15_000));
        assert_eq!(parse_duration_param("0.5"), Ok(500));
        assert_eq!(parse_duration_param("1m"), Ok(60_000));
        assert_eq!(parse_duration_param("1h30m"), Ok(5_400_000));
        assert!(parse_duration_param("1e300")
            .unwrap_err()
            .contains("overflows"));
        assert!(parse_duration_param("soon").is_err());
    }

    #[test]
    fn merged_params_and_selectors() {
        let p = Params::from_pairs(vec![
            ("match[]".into(), "up".into()),
            ("match[]".into(), "{job=\"a\"}".into()),
            ("limit".into(), "".into()),
        ]);
        let m = p.matchers(&ParseOptions::default()).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(p.limit("limit").unwrap(), 0);
        let bad = Params::from_pairs(vec![("match[]".into(), "rate(x[5m])".into())]);
        let e = bad
            .matchers(&ParseOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid parameter \"match[]\""), "{e}");
    }
}
