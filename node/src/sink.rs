//! The write seam: HTTP handlers hand validated batches to a [`WriteSink`].
//! Today [`LocalSink`] appends to the node's own [`Db`]; the cluster will
//! put a replicating sink (group by shard, write to a majority of replicas)
//! behind the same trait.
//!
//! Contract for implementations: `write` is called with a batch whose
//! labels are already validated (sorted, unique, valid names). It returns
//! only when every sample it counts as appended is durable per the node's
//! fsync policy. Per-sample rejections (out of order, too old, duplicate)
//! do not fail the call; they are returned, each naming its series. An
//! `Err` means the sink could not decide (storage or replicas failed): the
//! client should retry the whole request, which is safe because re-appending
//! an identical sample is a no-op.
//!
//! Metric metadata goes through the same seam and lands in a
//! [`MetadataStore`], which `/api/v1/metadata` reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;
use pharos_storage::db::{AppendStats, Db};
use pharos_storage::head::SeriesRef;
use pharos_storage::labels::{Labels, Matcher};
use pharos_storage::StorageError;

/// Why a sample was refused (a metric label value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    OutOfOrder,
    TooOld,
    Duplicate,
    InvalidLabels,
    Other,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::TooOld => "too_old",
            RejectReason::Duplicate => "duplicate",
            RejectReason::InvalidLabels => "invalid_labels",
            RejectReason::Other => "other",
        }
    }

    /// The refusal reason of a storage error.
    pub fn of(e: &StorageError) -> RejectReason {
        match e {
            StorageError::OutOfOrderSample { .. } => RejectReason::OutOfOrder,
            StorageError::TooOldSample { .. } => RejectReason::TooOld,
            StorageError::DuplicateSample { .. } => RejectReason::Duplicate,
            StorageError::Label(_) => RejectReason::InvalidLabels,
            _ => RejectReason::Other,
        }
    }
}

/// One refused sample.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Index in the batch.
    pub index: usize,
    pub reason: RejectReason,
    /// Names the series.
    pub message: String,
}

/// What a write did.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    pub appended: usize,
    pub rejected: Vec<Rejected>,
}

/// Why a write could not be decided; the client should retry.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    #[error("not enough replicas available: {0}")]
    Unavailable(String),
}

/// Metadata of one metric family, as remote write carries it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetricMeta {
    /// Prometheus's lowercase type name (`counter`, `gauge`, …, `unknown`).
    pub kind: &'static str,
    pub help: String,
    pub unit: String,
}

/// Where validated writes go.
pub trait WriteSink: Send + Sync {
    /// Appends `(labels, t ms, value)` samples; see the module contract.
    fn write(&self, batch: &[(Labels, i64, f64)]) -> Result<WriteOutcome, SinkError>;

    /// As [`WriteSink::write`], with a series ref hint per sample
    /// (`hints[i]` for `batch[i]`; `hints` may be shorter, missing ones are
    /// `None`): refs an earlier call returned for the same labels. Returns
    /// the outcome and, per sample, the ref of its series when it was
    /// appended (`None` otherwise), for the caller to pass next time. A
    /// stale hint falls back to the labels. The default ignores hints and
    /// returns none, for sinks without local series refs.
    ///
    /// This is the scrape path, and no client waits on a scrape: a sink
    /// may return once the samples are written, before the fsync that
    /// [`WriteSink::write`] waits for (the local sink does; they are
    /// fsynced with the next acknowledged write, the interval timer or at
    /// shutdown, and survive a process crash either way).
    fn write_hinted(
        &self,
        batch: &[(Labels, i64, f64)],
        hints: &[Option<SeriesRef>],
    ) -> Result<(WriteOutcome, Vec<Option<SeriesRef>>), SinkError> {
        let _ = hints;
        Ok((self.write(batch)?, Vec::new()))
    }

    /// Records metadata for metric families.
    fn write_metadata(&self, entries: Vec<(String, MetricMeta)>);

    /// Deletes the samples in `[mint, maxt]` of every series matching all
    /// `matchers` (at least one). Returns once the deletion is durable; the
    /// number is of series affected. Retrying is safe.
    fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<u64, SinkError>;
}

/// Latest metadata per metric family; bounded so that a client cannot grow
/// it without limit (new families past the bound are dropped).
pub struct MetadataStore {
    max_families: usize,
    inner: RwLock<HashMap<String, Vec<MetricMeta>>>,
}

/// At most this many distinct metadata entries per family are kept
/// (different targets may disagree on help text).
const MAX_PER_FAMILY: usize = 8;

impl MetadataStore {
    pub fn new(max_families: usize) -> MetadataStore {
        MetadataStore {
            max_families,
            inner: RwLock::new(HashMap::new()),
        }
    }

    pub fn add(&self, entries: Vec<(String, MetricMeta)>) {
        let mut m = self.inner.write();
        for (name, meta) in entries {
            let full = m.len() >= self.max_families;
            let list = match m.get_mut(&name) {
                Some(l) => l,
                None if full => continue,
                None => m.entry(name).or_default(),
            };
            if let Some(pos) = list.iter().position(|x| *x == meta) {
                // Most recent first.
                let x = list.remove(pos);
                list.insert(0, x);
            } else {
                list.insert(0, meta);
                list.truncate(MAX_PER_FAMILY);
            }
        }
    }

    /// Families sorted by name, optionally one family only, with at most
    /// `limit` families and `limit_per_metric` entries each (0 = no limit).
    pub fn get(
        &self,
        metric: Option<&str>,
        limit: usize,
        limit_per_metric: usize,
    ) -> BTreeMap<String, Vec<MetricMeta>> {
        let m = self.inner.read();
        let mut out = BTreeMap::new();
        for (name, list) in m.iter() {
            if metric.is_some_and(|want| want != name) {
                continue;
            }
            let mut list = list.clone();
            if limit_per_metric > 0 {
                list.truncate(limit_per_metric);
            }
            out.insert(name.clone(), list);
        }
        if limit > 0 {
            while out.len() > limit {
                out.pop_last();
            }
        }
        out
    }
}

/// Writes to this node's storage.
pub struct LocalSink {
    db: Arc<Db>,
    metadata: Arc<MetadataStore>,
}

impl LocalSink {
    pub fn new(db: Arc<Db>, metadata: Arc<MetadataStore>) -> LocalSink {
        LocalSink { db, metadata }
    }
}

fn outcome(stats: AppendStats) -> WriteOutcome {
    WriteOutcome {
        appended: stats.appended,
        rejected: stats
            .rejected
            .into_iter()
            .map(|r| Rejected {
                index: r.index,
                reason: RejectReason::of(&r.error),
                message: r.error.to_string(),
            })
            .collect(),
    }
}

impl WriteSink for LocalSink {
    fn write_hinted(
        &self,
        batch: &[(Labels, i64, f64)],
        hints: &[Option<SeriesRef>],
    ) -> Result<(WriteOutcome, Vec<Option<SeriesRef>>), SinkError> {
        let (stats, refs) = self.db.append_hinted_unsynced(batch, hints)?;
        Ok((outcome(stats), refs))
    }

    fn write(&self, batch: &[(Labels, i64, f64)]) -> Result<WriteOutcome, SinkError> {
        Ok(outcome(self.db.append(batch)?))
    }

    fn write_metadata(&self, entries: Vec<(String, MetricMeta)>) {
        self.metadata.add(entries);
    }

    fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<u64, SinkError> {
        let st = self.db.delete(matchers, mint, maxt)?;
        Ok(st.head_series + st.block_series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(help: &str) -> MetricMeta {
        MetricMeta {
            kind: "counter",
            help: help.into(),
            unit: String::new(),
        }
    }

    #[test]
    fn metadata_is_bounded_and_latest_first() {
        let s = MetadataStore::new(2);
        s.add(vec![("a".into(), meta("1")), ("b".into(), meta("x"))]);
        s.add(vec![("a".into(), meta("2")), ("c".into(), meta("dropped"))]);
        let all = s.get(None, 0, 0);
        assert_eq!(all.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(all["a"][0].help, "2");
        assert_eq!(s.get(Some("a"), 0, 1)["a"].len(), 1);
        assert_eq!(s.get(None, 1, 0).len(), 1);
    }

    #[test]
    fn local_sink_reports_rejections_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), Default::default()).unwrap());
        let sink = LocalSink::new(db, Arc::new(MetadataStore::new(10)));
        let l = Labels::from_pairs([("__name__", "m")]);
        let out = sink
            .write(&[(l.clone(), 2000, 1.0), (l.clone(), 1000, 1.0)])
            .unwrap();
        assert_eq!(out.appended, 1);
        assert_eq!(out.rejected[0].reason, RejectReason::OutOfOrder);
        assert!(out.rejected[0].message.contains("__name__=\"m\""));
    }
}
