//! The node's error type and its one mapping to the Prometheus HTTP API:
//! `errorType` and status code (400 bad_data, 422 execution, 503
//! timeout/unavailable, 500 internal), rendered as the error envelope
//! `{"status":"error","errorType":…,"error":…}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pharos_query::engine::QueryError;
use pharos_storage::StorageError;

/// An API request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; not retried by clients.
    #[error("{0}")]
    BadData(String),
    /// The query was valid but evaluation failed.
    #[error("{0}")]
    Execution(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Canceled(String),
    /// A dependency (storage, a peer) is not available; retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// Too large a request body.
    #[error("{0}")]
    TooLarge(String),
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::BadData(msg.into())
    }

    /// `invalid parameter "name": msg`, Prometheus's parameter error text.
    pub fn param(name: &str, msg: impl std::fmt::Display) -> ApiError {
        ApiError::BadData(format!("invalid parameter {name:?}: {msg}"))
    }

    /// Prometheus's `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::BadData(_) | ApiError::TooLarge(_) => "bad_data",
            ApiError::Execution(_) => "execution",
            ApiError::Timeout(_) => "timeout",
            ApiError::Canceled(_) => "canceled",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadData(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Timeout(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // Prometheus answers 499 (client closed request) for canceled.
            ApiError::Canceled(_) => {
                StatusCode::from_u16(499).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON envelope.
    pub fn body(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push_str(r#"{"status":"error","errorType":"#);
        crate::http::json::write_str(&mut out, self.error_type());
        out.push_str(r#","error":"#);
        crate::http::json::write_str(&mut out, &self.to_string());
        out.push('}');
        out
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        let msg = e.to_string();
        match e.error_type() {
            "bad_data" => ApiError::BadData(msg),
            "execution" => ApiError::Execution(msg),
            "timeout" => ApiError::Timeout(msg),
            "canceled" => ApiError::Canceled(msg),
            "unavailable" => ApiError::Unavailable(msg),
            _ => ApiError::Internal(msg),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        use pharos_storage::error::ApiErrorType as T;
        let msg = e.to_string();
        match e.api_error_type() {
            T::BadData => ApiError::BadData(msg),
            T::Execution => ApiError::Execution(msg),
            T::Unavailable => ApiError::Unavailable(msg),
            T::Internal => ApiError::Internal(msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_types_and_codes_in_one_place() {
        let cases = [
            (ApiError::bad("x"), "bad_data", 400),
            (ApiError::Execution("x".into()), "execution", 422),
            (ApiError::Timeout("x".into()), "timeout", 503),
            (ApiError::Unavailable("x".into()), "unavailable", 503),
            (ApiError::Internal("x".into()), "internal", 500),
        ];
        for (e, t, code) in cases {
            assert_eq!(e.error_type(), t);
            assert_eq!(e.status().as_u16(), code);
        }
        let q: ApiError = QueryError::Timeout { phase: "eval" }.into();
        assert_eq!(q.status().as_u16(), 503);
        assert_eq!(
            ApiError::param("time", "cannot parse \"x\"").body(),
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"time\": cannot parse \"x\""}"#
        );
    }
}
