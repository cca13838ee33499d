//! `/api/v1/status/*` (buildinfo, runtimeinfo, flags, config, tsdb) and the
//! admin API (`/api/v1/admin/tsdb/delete_series`, off unless enabled).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use pharos_storage::head::SeriesRef;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{json, json_ok, AppState};
use crate::error::ApiError;

/// The Prometheus API version Pharos answers like; clients such as Grafana
/// pick features by it. Pharos's own version is the semver pre-release part.
pub const PROMETHEUS_COMPAT_VERSION: &str = "2.42.0";

pub fn version_string() -> String {
    format!(
        "{PROMETHEUS_COMPAT_VERSION}-pharos.{}",
        env!("CARGO_PKG_VERSION")
    )
}

fn obj(fields: &[(&str, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_str(&mut out, k);
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

fn s(v: &str) -> String {
    let mut out = String::new();
    json::write_str(&mut out, v);
    out
}

/// `GET /api/v1/status/buildinfo`.
pub async fn buildinfo() -> Response {
    let data = obj(&[
        ("version", s(&version_string())),
        (
            "revision",
            s(option_env!("PHAROS_GIT_REVISION").unwrap_or("unknown")),
        ),
        (
            "branch",
            s(option_env!("PHAROS_GIT_BRANCH").unwrap_or("unknown")),
        ),
        ("buildUser", s("pharos")),
        (
            "buildDate",
            s(option_env!("PHAROS_BUILD_DATE").unwrap_or("unknown")),
        ),
        (
            "goVersion",
            s(&format!("rust (pharos {})", env!("CARGO_PKG_VERSION"))),
        ),
    ]);
    json_ok(json::success(&data, &[], &[]))
}

fn rfc3339(t: std::time::SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// `GET /api/v1/status/runtimeinfo`.
pub async fn runtimeinfo(State(st): State<Arc<AppState>>) -> Response {
    let rt = tokio::runtime::Handle::current().metrics();
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let corruptions = st.db.open_report().corruptions().len();
    let (reload_ok, last_config) = st.services.last_reload();
    let data = obj(&[
        ("startTime", s(&rfc3339(st.info.start_time))),
        ("CWD", s(&cwd)),
        ("reloadConfigSuccess", reload_ok.to_string()),
        ("lastConfigTime", s(&rfc3339(last_config))),
        ("corruptionCount", corruptions.to_string()),
        ("goroutineCount", rt.num_alive_tasks().to_string()),
        ("GOMAXPROCS", rt.num_workers().to_string()),
        ("GOMEMLIMIT", "0".into()),
        ("GOGC", s("")),
        ("GODEBUG", s("")),
        ("storageRetention", s(&st.info.storage_retention)),
    ]);
    json_ok(json::success(&data, &[], &[]))
}

/// `GET /api/v1/status/flags`.
pub async fn flags(State(st): State<Arc<AppState>>) -> Response {
    let fields: Vec<(&str, String)> = st
        .info
        .flags
        .iter()
        .map(|(k, v)| (k.as_str(), s(v)))
        .collect();
    json_ok(json::success(&obj(&fields), &[], &[]))
}

/// `GET /api/v1/status/config`.
pub async fn config(State(st): State<Arc<AppState>>) -> Response {
    json_ok(json::success(
        &obj(&[("yaml", s(&st.services.config_yaml()))]),
        &[],
        &[],
    ))
}

/// Cardinality of the head, as Prometheus's TSDB status page reports it.
#[derive(Debug, Default)]
pub struct TsdbStatus {
    pub num_series: usize,
    pub num_label_pairs: usize,
    pub chunk_count: usize,
    pub min_time: i64,
    pub max_time: i64,
    pub series_by_metric: Vec<(String, u64)>,
    pub values_by_label: Vec<(String, u64)>,
    pub bytes_by_label: Vec<(String, u64)>,
    pub series_by_pair: Vec<(String, u64)>,
}

fn top(m: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Walks every head series' labels (refs are dense from 1, never reused).
pub fn tsdb_status(db: &pharos_storage::db::Db, limit: usize) -> TsdbStatus {
    let head = db.head();
    let mut by_metric: HashMap<String, u64> = HashMap::new();
    let mut by_pair: HashMap<String, u64> = HashMap::new();
    let mut values: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    let mut bytes: HashMap<String, u64> = HashMap::new();
    let mut num_series = 0;
    for r in 1..=head.last_series_ref().0 {
        let Some(labels) = head.labels(SeriesRef(r)) else {
            continue;
        };
        num_series += 1;
        for (n, v) in labels.iter() {
            if n == "__name__" {
                *by_metric.entry(v.to_string()).or_default() += 1;
            }
            *by_pair.entry(format!("{n}={v}")).or_default() += 1;
            if values
                .entry(n.to_string())
                .or_default()
                .insert(v.to_string())
            {
                *bytes.entry(n.to_string()).or_default() += v.len() as u64;
            }
        }
    }
    let stats = head.stats();
    TsdbStatus {
        num_series,
        num_label_pairs: by_pair.len(),
        chunk_count: stats.num_chunks,
        min_time: head.min_time(),
        max_time: head.max_time(),
        series_by_metric: top(by_metric, limit),
        values_by_label: top(
            values
                .into_iter()
                .map(|(k, v)| (k, v.len() as u64))
                .collect(),
            limit,
        ),
        bytes_by_label: top(bytes, limit),
        series_by_pair: top(by_pair, limit),
    }
}

fn name_values(list: &[(String, u64)]) -> String {
    let mut out = String::from("[");
    for (i, (n, v)) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&obj(&[("name", s(n)), ("value", v.to_string())]));
    }
    out.push(']');
    out
}

/// `GET /api/v1/status/tsdb` (`limit`, default 10).
pub async fn tsdb(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        let p = super::params::Params::from_request(req, st.settings.web.max_request_body_bytes)
            .await?;
        let limit = match p.limit("limit")? {
            0 => 10,
            n => n,
        };
        let db = Arc::clone(&st.db);
        let t = tokio::task::spawn_blocking(move || tsdb_status(&db, limit))
            .await
            .map_err(|e| ApiError::Internal(format!("task failed: {e}")))?;
        let empty = t.num_series == 0;
        let head = obj(&[
            ("numSeries", t.num_series.to_string()),
            ("numLabelPairs", t.num_label_pairs.to_string()),
            ("chunkCount", t.chunk_count.to_string()),
            (
                "minTime",
                if empty {
                    "0".into()
                } else {
                    t.min_time.to_string()
                },
            ),
            (
                "maxTime",
                if empty {
                    "0".into()
                } else {
                    t.max_time.to_string()
                },
            ),
        ]);
        let data = obj(&[
            ("headStats", head),
            ("seriesCountByMetricName", name_values(&t.series_by_metric)),
            (
                "labelValueCountByLabelName",
                name_values(&t.values_by_label),
            ),
            ("memoryInBytesByLabelName", name_values(&t.bytes_by_label)),
            (
                "seriesCountByLabelValuePair",
                name_values(&t.series_by_pair),
            ),
        ]);
        Ok::<_, ApiError>(json_ok(json::success(&data, &[], &[])))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST|PUT /api/v1/admin/tsdb/delete_series` (off unless the admin API
/// is enabled): deletes through the write sink, 204 when durable.
pub async fn delete_series(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        if !st.settings.web.enable_admin_api {
            return Err(ApiError::Unavailable("admin APIs disabled".into()));
        }
        let p = super::params::Params::from_request(req, st.settings.web.max_request_body_bytes)
            .await?;
        let sets = p.matchers(&st.settings.parse_options())?;
        if sets.is_empty() {
            return Err(ApiError::bad("no match[] parameter provided"));
        }
        let start = p.time("start", super::params::MIN_TIME)?;
        let end = p.time("end", super::params::MAX_TIME)?;
        let sink = Arc::clone(&st.sink);
        let deleted = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for ms in &sets {
                n += sink.delete(ms, start, end)?;
            }
            Ok::<u64, crate::sink::SinkError>(n)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("task failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        tracing::info!(
            series = deleted,
            start,
            end,
            "series deleted through the admin API"
        );
        Ok::<Response, ApiError>(axum::http::StatusCode::NO_CONTENT.into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
