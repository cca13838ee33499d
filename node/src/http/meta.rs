//! `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/<name>/values` and
//! `/api/v1/metadata`: series metadata read through the
//! [`Queryable`](pharos_query::queryable::Queryable) (on the blocking pool:
//! a broad selector can touch every series), plus metric metadata from the
//! [`MetadataStore`](crate::sink::MetadataStore).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use pharos_storage::labels::{is_valid_label_name, Labels, Matcher};
use pharos_storage::querier::SelectHints;

use super::params::{Params, MAX_TIME, MIN_TIME};
use super::{json, json_ok, AppState};
use crate::error::ApiError;

const TRUNCATED: &str = "results truncated due to limit";

struct Range {
    start: i64,
    end: i64,
    limit: usize,
    matchers: Vec<Vec<Matcher>>,
}

async fn range_params(st: &AppState, req: Request<Body>) -> Result<Range, ApiError> {
    let p = Params::from_request(req, st.settings.web.max_request_body_bytes).await?;
    let start = p.time("start", MIN_TIME)?;
    let end = p.time("end", MAX_TIME)?;
    if end < start {
        return Err(ApiError::param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    Ok(Range {
        start,
        end,
        limit: p.limit("limit")?,
        matchers: p.matchers(&st.settings.parse_options())?,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("task failed: {e}")))?
}

fn truncate<T>(v: &mut Vec<T>, limit: usize) -> Vec<String> {
    if limit > 0 && v.len() > limit {
        v.truncate(limit);
        vec![TRUNCATED.to_string()]
    } else {
        Vec::new()
    }
}

/// `GET|POST /api/v1/series`.
pub async fn series(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        let r = range_params(&st, req).await?;
        if r.matchers.is_empty() {
            return Err(ApiError::bad("no match[] parameter provided"));
        }
        let q = Arc::clone(&st.queryable);
        let mut all: Vec<Labels> = blocking(move || {
            let hints = SelectHints {
                start: r.start,
                end: r.end,
                func: Some("series".into()),
                ..SelectHints::default()
            };
            let mut out = Vec::new();
            for ms in &r.matchers {
                for s in q.select(r.start, r.end, ms, Some(&hints))? {
                    out.push(s.labels);
                }
            }
            Ok(out)
        })
        .await?;
        all.sort();
        all.dedup();
        let warnings = truncate(&mut all, r.limit);
        let mut data = String::from("[");
        for (i, l) in all.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            json::write_labels(&mut data, l);
        }
        data.push(']');
        Ok::<_, ApiError>(json_ok(json::success(&data, &warnings, &[])))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

fn strings_answer(mut v: Vec<String>, limit: usize) -> Response {
    v.sort();
    v.dedup();
    let warnings = truncate(&mut v, limit);
    let mut data = String::new();
    json::write_str_list(&mut data, v.iter().map(String::as_str));
    json_ok(json::success(&data, &warnings, &[]))
}

/// `GET|POST /api/v1/labels`.
pub async fn labels(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        let r = range_params(&st, req).await?;
        let q = Arc::clone(&st.queryable);
        let limit = r.limit;
        let names = blocking(move || {
            if r.matchers.is_empty() {
                return Ok(q.label_names(r.start, r.end, &[])?);
            }
            let mut out = Vec::new();
            for ms in &r.matchers {
                out.extend(q.label_names(r.start, r.end, ms)?);
            }
            Ok(out)
        })
        .await?;
        Ok::<_, ApiError>(strings_answer(names, limit))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/label/<name>/values`.
pub async fn label_values(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    req: Request<Body>,
) -> Response {
    let run = async {
        if !is_valid_label_name(&name) {
            return Err(ApiError::bad(format!("invalid label name: {name:?}")));
        }
        let r = range_params(&st, req).await?;
        let q = Arc::clone(&st.queryable);
        let limit = r.limit;
        let values = blocking(move || {
            if r.matchers.is_empty() {
                return Ok(q.label_values(&name, r.start, r.end, &[])?);
            }
            let mut out = Vec::new();
            for ms in &r.matchers {
                out.extend(q.label_values(&name, r.start, r.end, ms)?);
            }
            Ok(out)
        })
        .await?;
        Ok::<_, ApiError>(strings_answer(values, limit))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/metadata`.
pub async fn metadata(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        let p = Params::from_request(req, st.settings.web.max_request_body_bytes).await?;
        let limit = p.limit("limit")?;
        let per_metric = p.limit("limit_per_metric")?;
        let all = st.metadata.get(p.get("metric"), limit, per_metric);
        let mut data = String::from("{");
        for (i, (name, list)) in all.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            json::write_str(&mut data, name);
            data.push_str(":[");
            for (j, m) in list.iter().enumerate() {
                if j > 0 {
                    data.push(',');
                }
                data.push_str(r#"{"type":"#);
                json::write_str(&mut data, m.kind);
                data.push_str(r#","help":"#);
                json::write_str(&mut data, &m.help);
                data.push_str(r#","unit":"#);
                json::write_str(&mut data, &m.unit);
                data.push('}');
            }
            data.push(']');
        }
        data.push('}');
        Ok::<_, ApiError>(json_ok(json::success(&data, &[], &[])))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
