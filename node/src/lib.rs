//! `pharos-node`: the `pharos` server. Wires storage and query into one
//! process: configuration, the Prometheus-compatible HTTP API, the
//! remote-write receiver, remote read, scraping, rule evaluation and
//! Alertmanager notifications ([`services`]), and the node's own metrics.
//!
//! Owns: everything between the socket and the two seams it talks through —
//! [`pharos_query::queryable::Queryable`] for reads and [`sink::WriteSink`]
//! for writes — and, in cluster mode, what sits behind them: the fan-out
//! read and the replicating write ([`cluster`]), which replace local
//! storage without touching the handlers. Must not: implement storage or
//! PromQL semantics itself.

pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod remote_read;
pub mod remote_write;
pub mod scrape;
pub mod server;
pub mod services;
pub mod sink;
