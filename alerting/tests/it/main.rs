//! Integration tests of `pharos-alerting`: the rule-test runner against
//! `promtool` (Prometheus 2.42), rule checks against `promtool check rules`,
//! and the whole pipeline against a real Alertmanager.

#![allow(clippy::unwrap_used)]

mod alertmanager;
mod peers;
mod prometheus_api;
mod promtool;
