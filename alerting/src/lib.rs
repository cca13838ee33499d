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
//!
//! # Wiring (for `pharos-node`)
//!
//! - `pharos check rules FILE...`: [`rules::check_rule_files`] then
//!   [`rules::CheckReport::write`]`(stdout, stderr)`; exit 1 unless
//!   [`rules::CheckReport::success`] (and 1 for the `Err`: a missing file).
//! - `pharos test rules FILE...`: [`unittest::run`]`(files, &mut stdout)`;
//!   exit 1 when it returns `false`.
//! - Server: build a [`notifier::Notifier`] from
//!   [`notifier::AlertingConfig::resolve`] (the config's `alerting:`
//!   section) and spawn [`notifier::Notifier::run`]; build a
//!   [`eval::RuleManager`] with the node's queryable, a [`eval::SampleSink`]
//!   over its write path, the leader check and [`eval::SystemClock`]; call
//!   [`eval::RuleManager::load`] with the config's `rule_files` globs, then
//!   [`eval::RuleManager::start`] inside the tokio runtime (it returns
//!   [`eval::NoRuntime`] outside one). On `/-/reload`
//!   or SIGHUP call [`eval::RuleManager::reload`] (or `load` with new globs):
//!   on `Err` the previous rules keep running and the errors (file, line,
//!   rule) go to the caller. Call [`eval::RuleManager::stop`] on shutdown.
//! - `/api/v1/rules`: [`api::RulesFilter::from_params`] (→ `bad_data` on
//!   error), then [`api::rules_data`]`(&manager.groups(), &filter)`;
//!   `/api/v1/alerts`: [`api::alerts_data`]`(&manager.groups())`. Both are
//!   the `data` member of the usual success envelope.
//! - Metrics: `manager.metrics.register(&mut registry)` and
//!   `notifier.stats.register(&mut registry)` (`pharos_rules_*`,
//!   `pharos_notifier_*`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod eval;
pub mod notifier;
pub mod rules;
pub mod template;
pub mod unittest;
