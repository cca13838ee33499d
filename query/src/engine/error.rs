//! Query errors. Display is the plain engine message Prometheus prints (no
//! position prefix); [`QueryError::error_type`] maps each to the HTTP API's
//! `errorType`.

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query or its parameters are invalid (type errors, disabled
    /// features, bad step or range). API type `bad_data`.
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (cardinality violations, duplicate label sets,
    /// invalid function arguments found at run time). API type `execution`,
    /// as Prometheus reports every runtime error.
    #[error("{0}")]
    Execution(String),
    /// The query would hold more than `max_samples` samples at once.
    #[error("query processing would load too many samples into memory in {phase}")]
    TooManySamples { phase: &'static str },
    #[error("query timed out in {phase}")]
    Timeout { phase: &'static str },
    #[error("query was canceled in {phase}")]
    Canceled { phase: &'static str },
    /// The queryable failed to read series.
    #[error("storage error: {0}")]
    Storage(String),
    /// A bug: an invariant of the engine was broken.
    #[error("internal error: {0}")]
    Internal(String),
}

impl QueryError {
    /// The Prometheus HTTP API `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::BadData(_) => "bad_data",
            QueryError::Execution(_) | QueryError::TooManySamples { .. } => "execution",
            QueryError::Timeout { .. } => "timeout",
            QueryError::Canceled { .. } => "canceled",
            QueryError::Storage(_) | QueryError::Internal(_) => "internal",
        }
    }

    pub(crate) fn exec(msg: impl Into<String>) -> Self {
        QueryError::Execution(msg.into())
    }

    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        QueryError::BadData(msg.into())
    }
}
