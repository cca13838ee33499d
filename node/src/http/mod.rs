//! The HTTP surface: Prometheus's API (query, metadata, status), the
//! remote-write and remote-read endpoints, `/metrics`, health and readiness.
//!
//! Owns: the router, the shared [`AppState`], and the middleware every
//! request passes (basic auth, latency metrics by handler, extra headers).
//! Handlers read only through [`Queryable`] and write only through
//! [`WriteSink`], so the cluster can swap both without touching them; the
//! local [`Db`] is used directly only for node-local status (`/tsdb`).
//! Must not: evaluate PromQL on the async workers (queries run in
//! `spawn_blocking`) or block on disk.

pub mod auth;
pub mod federate;
pub mod json;
pub mod meta;
pub mod params;
pub mod query;
pub mod services;
pub mod status;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pharos_query::engine::EngineOptions;
use pharos_query::parser::ParseOptions;
use pharos_query::queryable::Queryable;
use pharos_storage::db::Db;

use crate::config::{QuerySettings, RemoteWriteReceiverConfig, WebSettings};
use crate::metrics::Metrics;
use crate::sink::{MetadataStore, WriteSink};
use auth::BasicAuth;

/// Limits and options the handlers need, derived from the config.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub remote_write: RemoteWriteReceiverConfig,
    pub query: QuerySettings,
    pub web: WebSettings,
}

impl Settings {
    pub fn parse_options(&self) -> ParseOptions {
        ParseOptions {
            experimental_functions: self.query.enable_experimental_functions,
            max_len: self.query.max_query_length,
            ..ParseOptions::default()
        }
    }

    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            lookback_delta_ms: self.query.lookback_delta.as_millis() as i64,
            max_samples: self.query.max_samples,
            timeout: self.query.timeout.as_std(),
            experimental_functions: self.query.enable_experimental_functions,
            ..EngineOptions::default()
        }
    }
}

/// What `/status/*` reports about the process.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub start_time: SystemTime,
    pub flags: BTreeMap<String, String>,
    /// Retention as Prometheus prints it (`15d`, `1GiB`, `15d or 1GiB`).
    pub storage_retention: String,
}

/// Everything handlers share.
pub struct AppState {
    pub queryable: Arc<dyn Queryable>,
    /// The same data for requests that accept a partial answer: in a
    /// cluster, a fan-out that answers without unreachable shards and warns
    /// (`select_with_warnings`); on a single node, `queryable` itself.
    pub partial_queryable: Arc<dyn Queryable>,
    pub sink: Arc<dyn WriteSink>,
    /// Scraping, rules and notifications, and config reloads.
    pub services: Arc<crate::services::Services>,
    pub metadata: Arc<MetadataStore>,
    /// This node's storage, for node-local status only.
    pub db: Arc<Db>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub info: ServerInfo,
    pub ready: AtomicBool,
    pub auth: Option<Arc<BasicAuth>>,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// Bounds concurrent PromQL evaluations.
    pub query_slots: Arc<tokio::sync::Semaphore>,
    /// Bounds concurrent remote-write requests.
    pub write_slots: Arc<tokio::sync::Semaphore>,
    /// This node's cluster membership (`None` on a single node), for
    /// `/api/v1/cluster/*`.
    pub cluster: Option<Arc<crate::cluster::member::ClusterHandle>>,
}

/// The full router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route(
            "/api/v1/format_query",
            get(query::format).post(query::format),
        )
        .route(
            "/api/v1/query_exemplars",
            get(query::exemplars).post(query::exemplars),
        )
        .route("/api/v1/series", get(meta::series).post(meta::series))
        .route("/api/v1/labels", get(meta::labels).post(meta::labels))
        .route("/api/v1/label/{name}/values", get(meta::label_values))
        .route("/api/v1/metadata", get(meta::metadata))
        .route("/api/v1/status/buildinfo", get(status::buildinfo))
        .route("/api/v1/status/runtimeinfo", get(status::runtimeinfo))
        .route("/api/v1/status/flags", get(status::flags))
        .route("/api/v1/status/config", get(status::config))
        .route("/api/v1/status/tsdb", get(status::tsdb))
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(status::delete_series).put(status::delete_series),
        )
        .route(
            "/api/v1/rules",
            get(|s, r| off_worker(services::rules(s, r)))
                .post(|s, r| off_worker(services::rules(s, r))),
        )
        .route("/api/v1/alerts", get(|s| off_worker(services::alerts(s))))
        .route("/api/v1/targets", get(services::targets))
        .route("/api/v1/targets/metadata", get(services::targets_metadata))
        .route("/api/v1/cluster/nodes", get(crate::cluster::api::nodes))
        .route("/api/v1/cluster/shards", get(crate::cluster::api::shards))
        .route("/api/v1/cluster/status", get(crate::cluster::api::status))
        .route(
            "/api/v1/admin/cluster/node_state",
            post(crate::cluster::api::set_node_state).put(crate::cluster::api::set_node_state),
        )
        .route("/-/reload", post(services::reload).put(services::reload))
        .route("/api/v1/write", post(crate::remote_write::handle))
        .route("/api/v1/read", post(crate::remote_read::handle))
        .route("/federate", get(federate::federate))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(healthy).head(healthy))
        .route("/-/ready", get(ready).head(ready))
        .fallback(not_found);
    api.layer(axum::middleware::from_fn_with_state(
        Arc::clone(&state),
        middleware,
    ))
    .with_state(state)
}

/// Runs a handler on a blocking thread instead of a Tokio worker. For the
/// rule views: they lock rule groups that an evaluation holds while it
/// queries and writes — in a cluster, through RPCs it waits for with
/// `block_on`. A worker blocked on such a lock can hold the very task the
/// evaluation waits for (a task woken on a worker may only run there), and
/// the node deadlocks.
async fn off_worker<F>(handler: F) -> Response
where
    F: std::future::Future<Output = Response> + Send + 'static,
{
    let rt = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || rt.block_on(handler)).await {
        Ok(r) => r,
        Err(e) => {
            crate::error::ApiError::Internal(format!("handler task failed: {e}")).into_response()
        }
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

async fn healthy() -> &'static str {
    "Pharos is Healthy.\n"
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    if st.ready.load(Ordering::Acquire) {
        "Pharos is Ready.\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let head = st.db.head();
    st.metrics.head_series.set(head.num_series() as i64);
    let mut extra = prometheus_client::registry::Registry::default();
    st.services.register_metrics(&mut extra);
    match st.metrics.encode_with(&extra) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

/// Auth, latency metrics by matched route, and configured headers.
async fn middleware(State(st): State<Arc<AppState>>, req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".to_string());
    if let Some(auth) = &st.auth {
        let creds = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(BasicAuth::parse_header);
        let ok = match creds {
            None => false,
            Some((user, password)) => {
                let auth = Arc::clone(auth);
                tokio::task::spawn_blocking(move || auth.verify(&user, &password))
                    .await
                    .unwrap_or(false)
            }
        };
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic")],
                "Unauthorized\n",
            )
                .into_response();
        }
    }
    let gzip_ok = accepts_gzip(req.headers());
    let mut resp = next.run(req).await;
    if gzip_ok {
        resp = gzip_json(resp).await;
    }
    for (k, v) in &st.extra_headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    let elapsed = started.elapsed();
    st.metrics.observe_request(&handler, elapsed);
    tracing::debug!(
        handler,
        status = resp.status().as_u16(),
        elapsed_us = elapsed.as_micros() as u64,
        "request"
    );
    if elapsed > st.settings.web.slow_request_log_threshold.as_std() {
        tracing::info!(
            handler,
            elapsed_ms = elapsed.as_millis() as u64,
            status = resp.status().as_u16(),
            "slow request"
        );
    }
    resp
}

/// Whether the client takes gzip (`Accept-Encoding`, quality not zero).
fn accepts_gzip(h: &axum::http::HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| p.replace(' ', "") == "q=0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
}

/// Smaller JSON answers are not worth compressing.
const GZIP_MIN_BYTES: usize = 1024;

/// Gzips a JSON answer (as Prometheus does for its API), leaving every
/// other response — protobuf, streams, text — as it is. JSON bodies are
/// already whole in memory, so buffering them costs nothing more.
async fn gzip_json(resp: Response) -> Response {
    use std::io::Write as _;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json || resp.headers().contains_key(header::CONTENT_ENCODING) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading response failed\n",
        )
            .into_response();
    };
    if bytes.len() < GZIP_MIN_BYTES {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    let compressed = match enc.write_all(&bytes).and_then(|()| enc.finish()) {
        Ok(c) => c,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    Response::from_parts(parts, Body::from(compressed))
}

/// A JSON success response.
pub(crate) fn json_ok(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
