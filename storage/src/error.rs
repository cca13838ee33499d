//! The storage crate's error type. Other modules add variants (keep each one
//! carrying the context a reader needs: series labels, timestamps, paths).

use crate::chunk::ChunkError;
use crate::labels::{LabelError, Labels};

/// Prometheus HTTP API error classes (`errorType`), for mapping in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorType {
    BadData,
    Execution,
    Unavailable,
    Internal,
}

impl ApiErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiErrorType::BadData => "bad_data",
            ApiErrorType::Execution => "execution",
            ApiErrorType::Unavailable => "unavailable",
            ApiErrorType::Internal => "internal",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Older than the series' newest sample and outside the out-of-order
    /// window (Prometheus: `storage.ErrOutOfOrderSample`).
    #[error("out of order sample for series {series}: timestamp {timestamp} is before the series' last sample at {last} (out-of-order window {window_ms}ms)")]
    OutOfOrderSample {
        series: Labels,
        timestamp: i64,
        last: i64,
        window_ms: i64,
    },
    /// Older than anything the head still accepts (Prometheus:
    /// `storage.ErrOutOfBounds` / `ErrTooOldSample`).
    #[error("sample too old for series {series}: timestamp {timestamp} is before the oldest accepted time {min_valid}")]
    TooOldSample {
        series: Labels,
        timestamp: i64,
        min_valid: i64,
    },
    /// Same timestamp as an existing sample with a different value
    /// (Prometheus: `storage.ErrDuplicateSampleForTimestamp`).
    #[error("duplicate sample for timestamp {timestamp} in series {series}: existing value {existing}, new value {new}")]
    DuplicateSample {
        series: Labels,
        timestamp: i64,
        existing: f64,
        new: f64,
    },
    #[error("unknown series ref {0}")]
    UnknownSeriesRef(u64),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Block(#[from] crate::block::BlockError),
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    #[error("invalid matcher: {0}")]
    InvalidMatcher(String),
    #[error("{0}")]
    Internal(String),
}

impl StorageError {
    /// The Prometheus API error class this error maps to.
    pub fn api_error_type(&self) -> ApiErrorType {
        match self {
            StorageError::OutOfOrderSample { .. }
            | StorageError::TooOldSample { .. }
            | StorageError::DuplicateSample { .. }
            | StorageError::Label(_)
            | StorageError::InvalidMatcher(_) => ApiErrorType::BadData,
            StorageError::UnknownSeriesRef(_) => ApiErrorType::BadData,
            StorageError::Chunk(_) | StorageError::Block(_) | StorageError::Internal(_) => {
                ApiErrorType::Internal
            }
            StorageError::Wal(_) => ApiErrorType::Internal,
        }
    }

    /// Whether the error is about the input sample itself (the client should
    /// not retry it), as opposed to the storage failing.
    pub fn is_sample_rejection(&self) -> bool {
        matches!(
            self,
            StorageError::OutOfOrderSample { .. }
                | StorageError::TooOldSample { .. }
                | StorageError::DuplicateSample { .. }
        )
    }
}
