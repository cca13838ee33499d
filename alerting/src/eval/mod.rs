//! Rule evaluation: groups, recording and alerting rules, their state, and
//! the [`RuleManager`] that loads rule files and runs groups on their
//! intervals.
//!
//! Seams supplied by the node: [`SampleSink`] (where results go: the local
//! write path on one node, the replicated one in a cluster), a
//! `Queryable` (what expressions read), [`LeaderCheck`] (whether this node
//! may evaluate and notify right now) and [`Clock`] (so tests need not sleep
//! through `for` durations).
//!
//! Ordering contract: rules of a group run in file order and each rule's
//! output is appended before the next rule runs, so a recording rule's
//! output is visible to the rules after it when the sink writes to what
//! the queryable reads.

mod alerting;
mod group;
mod manager;

use std::sync::Arc;

pub use alerting::{Alert, AlertState, AlertingRule, TemplateEnv, RESOLVED_RETENTION_MS};
pub use group::{query_vector, EvalContext, Group, Health, RuleState, RuleStatus};
pub use manager::{ManagerOptions, NoRuntime, RuleManager, RuleMetrics};

use pharos_storage::labels::Labels;

/// Why the sink refused samples.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where rule results are written. Contract: `append` returns only after the
/// samples are visible to subsequent queries through the queryable the rules
/// read (the next rule of the group depends on it).
pub trait SampleSink: Send + Sync {
    fn append(&self, samples: &[(Labels, i64, f64)]) -> Result<(), SinkError>;
}

/// "Am I the leader, confirmed now?" Called before every group evaluation
/// and before every notification send; a `false` skips the work.
pub trait LeaderCheck: Send + Sync {
    fn is_leader(&self) -> bool;
}

/// Always the leader: a single node.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysLeader;

impl LeaderCheck for AlwaysLeader {
    fn is_leader(&self) -> bool {
        true
    }
}

impl<F: Fn() -> bool + Send + Sync> LeaderCheck for F {
    fn is_leader(&self) -> bool {
        self()
    }
}

/// Wall-clock time in ms since the epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A head-backed sink for tests and the rule-test runner.
impl SampleSink for pharos_storage::head::Head {
    fn append(&self, samples: &[(Labels, i64, f64)]) -> Result<(), SinkError> {
        for (l, t, v) in samples {
            pharos_storage::head::Head::append(self, l, *t, *v)
                .map_err(|e| SinkError(e.to_string()))?;
        }
        Ok(())
    }
}

impl<T: SampleSink + ?Sized> SampleSink for Arc<T> {
    fn append(&self, samples: &[(Labels, i64, f64)]) -> Result<(), SinkError> {
        (**self).append(samples)
    }
}
