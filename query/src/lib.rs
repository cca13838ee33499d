//! `pharos-query`: PromQL.
//!
//! Owns: the PromQL parser (positions on every node), the evaluator, the
//! `Queryable` seam the evaluator reads series through, and the runner for
//! Prometheus's PromQL script tests.
//!
//! Must not: write data, know about HTTP or the cluster. Storage is reached
//! only through `Queryable`, so the same engine runs over one node's head and
//! blocks or over the cluster's fan-out.

pub mod engine;
pub mod functions;
pub mod parser;
pub mod promqltest;
pub mod queryable;
