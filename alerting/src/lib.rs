//! `pharos-alerting`: Prometheus rule files, recording and alerting rule
//! evaluation, `for`/`keep_firing_for` state, templates and the Alertmanager v2
//! notifier. Evaluates through `pharos-query`; writes through a sink supplied by
//! the node. Runs only while the supplied leader check says yes.
//!
//! Built in issue 6; empty until then.
