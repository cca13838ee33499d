//! Endpoints answered from the node's services rather than from storage:
//! `/api/v1/targets` and `/api/v1/targets/metadata` (the scrape manager),
//! `/api/v1/rules` and `/api/v1/alerts` (the rule manager), and the
//! lifecycle endpoint `POST /-/reload`.
//!
//! Owns: parameter handling and the envelopes; the answers' shapes belong
//! to `crate::scrape::api` and `pharos_alerting::api`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use pharos_alerting::api::{alerts_data, rules_data, RulesFilter};
use serde::Serialize;

use super::params::{parse_selector, Params};
use super::{json, json_ok, AppState};
use crate::error::ApiError;
use crate::scrape::api::{self as scrape_api, StateFilter};

fn success_of<T: Serialize>(data: &T) -> Result<Response, ApiError> {
    let data = serde_json::to_string(data)
        .map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")))?;
    Ok(json_ok(json::success(&data, &[], &[])))
}

async fn params(st: &AppState, req: Request<Body>) -> Result<Params, ApiError> {
    Params::from_request(req, st.settings.web.max_request_body_bytes).await
}

/// `GET /api/v1/targets?state=active|dropped|any&scrapePool=job`.
pub async fn targets(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        let p = params(&st, req).await?;
        let data = scrape_api::targets(
            &st.services.scrape,
            StateFilter::parse(p.get("state")),
            p.get("scrapePool").filter(|s| !s.is_empty()),
        );
        success_of(&data)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/targets/metadata?match_target=…&metric=…&limit=…`.
pub async fn targets_metadata(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        let p = params(&st, req).await?;
        let matchers = match p.get("match_target").filter(|s| !s.is_empty()) {
            Some(s) => parse_selector(s, &st.settings.parse_options())
                .map_err(|e| ApiError::param("match_target", e))?,
            None => Vec::new(),
        };
        let limit = match p.get("limit").filter(|s| !s.is_empty()) {
            None => None,
            // Prometheus: a negative limit means no limit.
            Some(s) => {
                let n: i64 = s
                    .parse()
                    .map_err(|_| ApiError::param("limit", format!("cannot parse {s:?}")))?;
                usize::try_from(n).ok()
            }
        };
        let data = scrape_api::targets_metadata(
            &st.services.scrape,
            &matchers,
            p.get("metric").filter(|s| !s.is_empty()),
            limit,
        );
        success_of(&data)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/rules?type=alert|record&rule_name[]=…&rule_group[]=…&file[]=…`.
pub async fn rules(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        let p = params(&st, req).await?;
        let pairs: Vec<(&str, &str)> = ["type", "rule_name[]", "rule_group[]", "file[]"]
            .into_iter()
            .flat_map(|k| p.all(k).into_iter().map(move |v| (k, v)))
            .collect();
        let filter = RulesFilter::from_params(pairs).map_err(|e| ApiError::bad(e.0))?;
        let groups = st.services.rule_manager().groups();
        success_of(&rules_data(&groups, &filter))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/alerts`: every pending and firing alert.
pub async fn alerts(State(st): State<Arc<AppState>>) -> Response {
    let groups = st.services.rule_manager().groups();
    success_of(&alerts_data(&groups)).unwrap_or_else(IntoResponse::into_response)
}

/// `POST /-/reload`: re-reads the config file. Only with
/// `--web.enable-lifecycle`, as Prometheus; a rejected config is answered
/// 500 with the reason (file, line, field) and the running one stays.
pub async fn reload(State(st): State<Arc<AppState>>) -> Response {
    if !st.settings.web.enable_lifecycle {
        return (StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n").into_response();
    }
    let svc = Arc::clone(&st.services);
    match tokio::task::spawn_blocking(move || svc.reload()).await {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reloading the configuration failed; the running configuration stays");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to reload config: {e}\n"),
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: reload task failed: {e}\n"),
        )
            .into_response(),
    }
}
