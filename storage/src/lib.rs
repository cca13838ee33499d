//! `pharos-storage`: the single-node time-series engine.
//!
//! Owns: label sets and the series hash, the write-ahead log, the in-memory
//! head (series registry, postings, open XOR chunks), persistent blocks in the
//! Prometheus TSDB format, local compaction and retention, and the querier
//! that reads head and blocks together.
//!
//! Must not: know about PromQL, HTTP, the cluster or Raft. It depends on no
//! other Pharos crate except `pharos-proto`. Everything above it reads through
//! its querier and writes through its appender.
//!
//! Durability contract: a sample is acknowledged only after its WAL record has
//! been written (and fsynced, under the `always` policy); replay restores every
//! acknowledged sample exactly once.

pub mod block;
pub mod chunk;
pub mod compact;
pub mod db;
pub mod error;
pub mod head;
pub mod index;
pub mod labels;
pub mod postings;
pub mod querier;
pub mod series;
pub mod wal;

pub use error::StorageError;
