//! `/api/v1/query`, `/api/v1/query_range`, `/api/v1/format_query` and
//! `/api/v1/query_exemplars`: parameter checks with Prometheus's error
//! texts, PromQL evaluation on the blocking pool through the state's
//! [`Queryable`](pharos_query::queryable::Queryable), and the JSON answer.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use pharos_query::engine::{AnnotationKind, Engine, QueryResult};
use pharos_query::parser::ast::Expr;
use pharos_query::parser::parse_with;
use pharos_query::queryable::Queryable;

use super::params::Params;
use super::{json, json_ok, AppState};
use crate::error::ApiError;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn params(st: &AppState, req: Request<Body>) -> Result<Params, ApiError> {
    Params::from_request(req, st.settings.web.max_request_body_bytes).await
}

fn parse_query(st: &AppState, p: &Params) -> Result<(String, Expr), ApiError> {
    let q = p.get("query").unwrap_or("").to_string();
    let expr =
        parse_with(&q, &st.settings.parse_options()).map_err(|e| ApiError::param("query", e))?;
    Ok((q, expr))
}

/// The per-request engine: the configured timeout, lowered by `timeout=`.
fn engine(st: &AppState, p: &Params) -> Result<Engine, ApiError> {
    let mut opts = st.settings.engine_options();
    if let Some(ms) = p.duration("timeout")? {
        if ms > 0 {
            opts.timeout = opts.timeout.min(Duration::from_millis(ms as u64));
        }
    }
    Ok(Engine::new(opts))
}

/// Where a query reads: the strict view, or with `partial_response=true`
/// (Thanos's parameter) the view that answers without unreachable shards
/// and says so in `warnings`. On a single node both are the same storage.
fn queryable_for(st: &AppState, p: &Params) -> Result<Arc<dyn Queryable>, ApiError> {
    match p.get("partial_response") {
        None | Some("") | Some("false") | Some("0") => Ok(Arc::clone(&st.queryable)),
        Some("true") | Some("1") => Ok(Arc::clone(&st.partial_queryable)),
        Some(other) => Err(ApiError::bad(format!(
            "invalid parameter \"partial_response\": cannot parse {other:?} as a boolean"
        ))),
    }
}

enum Kind {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

async fn evaluate(
    st: &Arc<AppState>,
    queryable: Arc<dyn Queryable>,
    engine: Engine,
    expr: Expr,
    kind: Kind,
) -> Result<(QueryResult, Duration), ApiError> {
    let queued = Instant::now();
    // Waiting for a slot counts against the query's timeout.
    let timeout = engine.options().timeout;
    let permit =
        match tokio::time::timeout(timeout, Arc::clone(&st.query_slots).acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return Err(ApiError::Unavailable(
                    "query engine is shutting down".into(),
                ))
            }
            Err(_) => return Err(ApiError::Timeout("query timed out in query queue".into())),
        };
    let mut opts = engine.options().clone();
    opts.timeout = timeout.saturating_sub(queued.elapsed());
    let engine = Engine::new(opts);
    let label = match kind {
        Kind::Instant(_) => "instant",
        Kind::Range { .. } => "range",
    };
    let res = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let wait = queued.elapsed();
        let r = match kind {
            Kind::Instant(t) => engine.instant_query(queryable.as_ref(), &expr, t),
            Kind::Range { start, end, step } => {
                engine.range_query(queryable.as_ref(), &expr, start, end, step)
            }
        };
        r.map(|r| (r, wait))
    })
    .await;
    st.metrics.observe_query(label, queued.elapsed());
    match res {
        Ok(r) => r.map_err(ApiError::from),
        // A panic inside the engine is a bug; the client gets a 500, the
        // server keeps running.
        Err(e) => {
            tracing::error!(error = %e, "query evaluation task failed");
            Err(ApiError::Internal(format!("query evaluation failed: {e}")))
        }
    }
}

fn answer(
    query: &str,
    r: &QueryResult,
    queue: Duration,
    total: Duration,
    with_stats: bool,
) -> Response {
    let mut data = String::with_capacity(256);
    json::write_query_data(&mut data, &r.value);
    if with_stats {
        // Inside `data`, after `result`, as Prometheus places it.
        data.pop();
        data.push_str(r#","stats":"#);
        json::write_stats(&mut data, r, queue.as_secs_f64(), total.as_secs_f64());
        data.push('}');
    }
    let mut warnings = Vec::new();
    let mut infos = Vec::new();
    for a in r.annotations.iter() {
        match a.kind {
            AnnotationKind::Warning => warnings.push(a.render(query)),
            AnnotationKind::Info => infos.push(a.render(query)),
        }
    }
    json_ok(json::success(&data, &warnings, &infos))
}

/// `GET|POST /api/v1/query`.
pub async fn instant(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let started = Instant::now();
    let run = async {
        let p = params(&st, req).await?;
        let t = p.time("time", now_ms())?;
        let engine = engine(&st, &p)?;
        let (q, expr) = parse_query(&st, &p)?;
        let (r, queue) =
            evaluate(&st, queryable_for(&st, &p)?, engine, expr, Kind::Instant(t)).await?;
        Ok::<_, ApiError>(answer(
            &q,
            &r,
            queue,
            started.elapsed(),
            p.get("stats").is_some(),
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/query_range`.
pub async fn range(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let started = Instant::now();
    let run = async {
        let p = params(&st, req).await?;
        let start = p.required_time("start")?;
        let end = p.required_time("end")?;
        if end < start {
            return Err(ApiError::param(
                "end",
                "end timestamp must not be before start time",
            ));
        }
        let step = match p.duration("step")? {
            Some(s) => s,
            None => {
                return Err(ApiError::param(
                    "step",
                    "cannot parse \"\" to a valid duration",
                ))
            }
        };
        if step <= 0 {
            return Err(ApiError::param(
                "step",
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        let max_points = st.settings.query.max_points_per_series;
        if (end as i128 - start as i128) / step as i128 > max_points as i128 {
            return Err(ApiError::bad(format!(
                "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
                thousands(max_points)
            )));
        }
        let engine = engine(&st, &p)?;
        let (q, expr) = parse_query(&st, &p)?;
        let (r, queue) = evaluate(
            &st,
            queryable_for(&st, &p)?,
            engine,
            expr,
            Kind::Range { start, end, step },
        )
        .await?;
        Ok::<_, ApiError>(answer(
            &q,
            &r,
            queue,
            started.elapsed(),
            p.get("stats").is_some(),
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `11000` → `11,000`, as Prometheus's message spells its limit.
fn thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c.is_ascii_digit() {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `GET|POST /api/v1/format_query`.
pub async fn format(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        let p = params(&st, req).await?;
        let (_, expr) = parse_query(&st, &p)?;
        let mut data = String::new();
        json::write_str(&mut data, &expr.to_string());
        Ok::<_, ApiError>(json_ok(json::success(&data, &[], &[])))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/query_exemplars`: Pharos stores no exemplars yet, so
/// a valid request gets an empty list.
pub async fn exemplars(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        let p = params(&st, req).await?;
        let start = p.time("start", super::params::MIN_TIME)?;
        let end = p.time("end", super::params::MAX_TIME)?;
        if end < start {
            return Err(ApiError::param(
                "end",
                "end timestamp must not be before start time",
            ));
        }
        parse_query(&st, &p)?;
        Ok::<_, ApiError>(json_ok(json::success("[]", &[], &[])))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separator() {
        assert_eq!(thousands(11000), "11,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
