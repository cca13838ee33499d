//! `pharos-alerting`: Prometheus rule files, recording and alerting rule
//! evaluation, `for`/`keep_firing_for` state, templates and the Alertmanager v2
//! notifier.
//!
//! Owns: the rule-file format and its validation ([`rules`]), the Go-template
//! subset used by labels and annotations ([`template`]), evaluation of groups
//! and alert state including restore from `ALERTS_FOR_STATE` ([`eval`]), the
//! Alertmanager client ([`notifier`]), the `promtool test rules` runner
//! ([`unittest`]) and the API answer types ([`api`]).
//!
//! Must not: know about HTTP serving, Raft or where samples go. Reads go
//! through `pharos_query::queryable::Queryable`; writes go through
//! [`eval::SampleSink`], supplied by the node. Evaluation and every send
//! happen only while the supplied [`eval::LeaderCheck`] says yes, so a deposed
//! leader stops before it writes or notifies anything.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod eval;
pub mod notifier;
pub mod rules;
pub mod template;
pub mod unittest;
