//! Replicated writes: the coordinator side ([`ReplicatingSink`], the
//! cluster's [`WriteSink`]: it groups a batch by shard and writes each group
//! to every replica of its shard) and the replica side ([`serve_write`]:
//! checks a peer's request against this node's shard map and appends it).
//!
//! Owns: routing a batch to replicas, the acknowledgement rule, redirects,
//! metadata sharing ([`serve_metadata`]) and cluster-wide deletes (the
//! sending side; [`super::read::serve_delete`] applies them), and the
//! write-path metrics ([`WriteMetrics`]). Hints for replicas that missed an
//! acknowledged write live in [`super::handoff`]. Must not: read data for
//! queries, change the shard map, or hold a lock across an RPC.
//!
//! Contract (see also [`crate::sink`]):
//! - A batch is acknowledged only when, for every shard it touches, a
//!   majority (`replicas.len() / 2 + 1`) of the shard's up-to-date replicas
//!   appended it (durable per their fsync policy). Pending replicas receive
//!   the samples but do not count. Otherwise the whole call fails with
//!   [`SinkError::Unavailable`] naming shards and why; samples that some
//!   replicas did append stay there, and the client's retry re-appends
//!   them as no-ops.
//! - A replica whose epoch for a shard differs from the request's answers
//!   with a redirect and applies nothing of the request. The coordinator
//!   then waits (at most [`MAP_CATCH_UP`]) for its own map to reach the
//!   redirect's epoch and routes the affected shards again, for at most
//!   [`MAX_ROUNDS`] rounds in all.
//! - A call returns as soon as every shard is acknowledged; replicas still
//!   being written to finish in the background, and those that fail (or
//!   failed) get the samples through hinted handoff.
//! - At most [`DEFAULT_MAX_IN_FLIGHT_PER_PEER`] writes wait for one node's
//!   answer at once; a write past that skips the node (it counts as failed)
//!   and hints its samples, so a hung node costs bounded memory.
//! - Per-sample refusals (out of order, too old, duplicate) are reported
//!   once per batch index, as the first acknowledging up-to-date replica in
//!   the shard's replica order (the primary when it answered) saw them.
//!
//! [`WriteSink`] is synchronous: its methods run the RPCs on
//! [`ClusterCtx::runtime`] with `block_on`, so they must be called from a
//! blocking thread (`spawn_blocking`), never from a runtime worker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pharos_meta::types::{EpochCheck, MetaState, NodeId, NodeState, ShardId, ShardMap};
use pharos_proto::cluster::{
    DeleteRequest, LabelMatcher, MetadataPush, MetadataReply, MetricMetadata, Redirect,
    SampleRejection, SeriesSamples, ShardEpoch, WriteReply, WriteRequest,
};
use pharos_storage::head::SeriesRef;
use pharos_storage::labels::{Labels, MatchType, Matcher};
use pharos_storage::StorageError;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, Semaphore};
use tonic::Status;

use super::handoff::{Handoff, Hint, DEFAULT_MAX_SAMPLES_PER_PEER};
use super::peers::RPC_TIMEOUT;
use super::{shard_of_labels, ClusterCtx, ClusterError};
use crate::sink::{
    LocalSink, MetricMeta, RejectReason, Rejected, SinkError, WriteOutcome, WriteSink,
};

/// How long a node waits for its own applied shard map to reach an epoch a
/// peer has already seen.
pub const MAP_CATCH_UP: Duration = Duration::from_secs(2);

/// Routing rounds of one write: the first plus re-routes after redirects.
pub const MAX_ROUNDS: usize = 3;

/// Deadline of one metadata push to a peer.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// Metadata pushes in flight at once; further ones are skipped (metadata
/// is resent by its sources, so a skipped push is repaired by a later one).
const MAX_METADATA_PUSHES: usize = 16;

/// Writes to one node that may wait for its answer at once (a healthy
/// node answers in milliseconds; a hung one would otherwise hold every
/// write's request in memory until [`RPC_TIMEOUT`]).
pub const DEFAULT_MAX_IN_FLIGHT_PER_PEER: usize = 256;

/// Shards named one by one in an [`SinkError::Unavailable`] message.
const SHARDS_IN_ERROR: usize = 3;

type LabelSet = Vec<(&'static str, String)>;

fn rpc_histogram() -> Histogram {
    // 0.5ms … ~16s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Metrics of the replicated write path. Handles are cheap clones of the
/// registered ones.
pub struct WriteMetrics {
    /// Latency of one write to one replica (the local one included), by
    /// peer node id.
    pub rpc_duration: Family<LabelSet, Histogram>,
    /// Failed writes to a replica, by peer and reason (`unavailable`,
    /// `timeout`, `unknown_node`, `invalid_argument`, `internal`, …).
    pub rpc_failures: Family<LabelSet, Counter>,
    /// Replies that redirected a write (a shard epoch differed).
    pub redirects: Counter,
    /// Batches by result (`ok`, `unavailable`).
    pub writes: Family<LabelSet, Counter>,
    /// Samples queued for hinted handoff.
    pub hints_queued: Counter,
    /// Hinted samples dropped (queue full, shard moved away, node removed).
    pub hints_dropped: Counter,
    /// Hinted samples a replica accepted.
    pub hints_delivered: Counter,
    /// Hinted samples not yet delivered.
    pub hints_pending: Gauge,
}

impl Default for WriteMetrics {
    fn default() -> Self {
        WriteMetrics {
            rpc_duration: Family::new_with_constructor(rpc_histogram as fn() -> Histogram),
            rpc_failures: Family::default(),
            redirects: Counter::default(),
            writes: Family::default(),
            hints_queued: Counter::default(),
            hints_dropped: Counter::default(),
            hints_delivered: Counter::default(),
            hints_pending: Gauge::default(),
        }
    }
}

impl WriteMetrics {
    /// Registers every handle in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pharos_cluster_write_rpc_duration_seconds",
            "Latency of one replicated write to one replica, by peer node id",
            self.rpc_duration.clone(),
        );
        registry.register(
            "pharos_cluster_write_rpc_failures",
            "Replicated writes to a replica that failed, by peer node id and reason",
            self.rpc_failures.clone(),
        );
        registry.register(
            "pharos_cluster_write_redirects",
            "Replica write replies that redirected because a shard epoch differed",
            self.redirects.clone(),
        );
        registry.register(
            "pharos_cluster_writes",
            "Batches written through the cluster, by result (ok, unavailable)",
            self.writes.clone(),
        );
        registry.register(
            "pharos_cluster_hints_queued_samples",
            "Samples queued for hinted handoff to a replica that missed an acknowledged write",
            self.hints_queued.clone(),
        );
        registry.register(
            "pharos_cluster_hints_dropped_samples",
            "Hinted-handoff samples dropped (queue full, shard moved away, node removed)",
            self.hints_dropped.clone(),
        );
        registry.register(
            "pharos_cluster_hints_delivered_samples",
            "Hinted-handoff samples delivered to their replica",
            self.hints_delivered.clone(),
        );
        registry.register(
            "pharos_cluster_hints_pending_samples",
            "Hinted-handoff samples waiting for delivery",
            self.hints_pending.clone(),
        );
    }

    fn observe(&self, node: NodeId, took: Duration, res: &Result<WriteReply, SendError>) {
        self.rpc_duration
            .get_or_create(&vec![("peer", node.to_string())])
            .observe(took.as_secs_f64());
        self.count_failure(node, res);
    }

    /// Counts a redirect or a failure of a write to `node`.
    fn count_failure(&self, node: NodeId, res: &Result<WriteReply, SendError>) {
        match res {
            Ok(reply) if !reply.redirects.is_empty() => {
                self.redirects.inc();
            }
            Ok(_) => {}
            Err(e) => {
                self.rpc_failures
                    .get_or_create(&vec![
                        ("peer", node.to_string()),
                        ("reason", e.reason().to_string()),
                    ])
                    .inc();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Replica side.

/// One series of a replica write, decoded and checked.
struct SeriesIn {
    labels: Labels,
    timestamps: Vec<i64>,
    values: Vec<f64>,
    start_timestamps: Vec<i64>,
}

/// Applies a peer's write to this node's replicas. See [`apply_request`].
#[tracing::instrument(skip_all, fields(from = req.from_node, shards = req.shards.len(), series = req.series.len()))]
pub async fn serve_write(ctx: &Arc<ClusterCtx>, req: WriteRequest) -> Result<WriteReply, Status> {
    apply_request(ctx, &req).await
}

/// The replica's half of a write, for a peer's request and for the
/// coordinator's own replica alike:
/// 1. every series' labels must decode and be valid, and its timestamps,
///    values and start timestamps agree in length (else `invalid_argument`
///    naming the series index);
/// 2. every `(shard, epoch)` must match this node's map and this node must
///    hold the shard (up to date or pending); otherwise the reply carries a
///    [`Redirect`] per such shard and nothing is applied. A request from a
///    coordinator with a newer map waits up to [`MAP_CATCH_UP`] for this
///    node's map, then fails with `unavailable`;
/// 3. every series must belong to one of the request's shards;
/// 4. everything is appended; the reply lists refused samples by their
///    index across the request and comes only once the appended samples
///    are durable per this node's fsync policy.
async fn apply_request(ctx: &Arc<ClusterCtx>, req: &WriteRequest) -> Result<WriteReply, Status> {
    let series = decode(req)?;
    let map = match admit(ctx, &req.shards).await? {
        Admission::Admit(map) => map,
        Admission::Redirect(redirects) => {
            return Ok(WriteReply {
                appended: 0,
                rejected: Vec::new(),
                redirects,
            })
        }
    };
    let routed: BTreeSet<ShardId> = req.shards.iter().map(|s| s.shard).collect();
    for (i, s) in series.iter().enumerate() {
        let shard = shard_of_labels(&s.labels, &map);
        if !routed.contains(&shard) {
            return Err(Status::invalid_argument(format!(
                "series {i} ({}) belongs to shard {shard}, which the request does not route",
                s.labels
            )));
        }
    }
    let db = Arc::clone(&ctx.db);
    let metadata = Arc::clone(&ctx.metadata);
    let outcome = tokio::task::spawn_blocking(move || append(db, metadata, series))
        .await
        .map_err(|e| Status::internal(format!("append task failed: {e}")))?
        .map_err(|e| Status::internal(format!("node storage failed: {e}")))?;
    Ok(WriteReply {
        appended: outcome.appended as u64,
        rejected: outcome
            .rejected
            .into_iter()
            .map(|r| SampleRejection {
                index: r.index as u32,
                reason: r.reason.as_str().to_string(),
                message: r.message,
            })
            .collect(),
        redirects: Vec::new(),
    })
}

fn decode(req: &WriteRequest) -> Result<Vec<SeriesIn>, Status> {
    let mut out = Vec::with_capacity(req.series.len());
    let mut total: usize = 0;
    for (i, s) in req.series.iter().enumerate() {
        let labels = Labels::from_canonical_bytes(&s.labels).ok_or_else(|| {
            Status::invalid_argument(format!("series {i}: labels are not canonically encoded"))
        })?;
        if labels.is_empty() {
            return Err(Status::invalid_argument(format!("series {i}: no labels")));
        }
        labels
            .validate()
            .map_err(|e| Status::invalid_argument(format!("series {i} ({labels}): {e}")))?;
        if s.values.len() != s.timestamps.len() {
            return Err(Status::invalid_argument(format!(
                "series {i} ({labels}): {} timestamps but {} values",
                s.timestamps.len(),
                s.values.len()
            )));
        }
        if !s.start_timestamps.is_empty() && s.start_timestamps.len() != s.timestamps.len() {
            return Err(Status::invalid_argument(format!(
                "series {i} ({labels}): {} timestamps but {} start timestamps",
                s.timestamps.len(),
                s.start_timestamps.len()
            )));
        }
        total += s.timestamps.len();
        out.push(SeriesIn {
            labels,
            timestamps: s.timestamps.clone(),
            values: s.values.clone(),
            start_timestamps: s.start_timestamps.clone(),
        });
    }
    if u32::try_from(total).is_err() {
        return Err(Status::invalid_argument(format!(
            "{total} samples in one request; sample indexes are 32-bit"
        )));
    }
    Ok(out)
}

enum Admission {
    Admit(ShardMap),
    Redirect(Vec<Redirect>),
}

fn redirect_of(map: &ShardMap, shard: ShardId) -> Redirect {
    let a = map.assignment(shard).cloned().unwrap_or_default();
    Redirect {
        shard,
        epoch: a.epoch,
        replicas: a.replicas,
        pending: a.pending,
    }
}

/// Checks the request's shard epochs against this node's map (step 2 of
/// [`apply_request`]).
async fn admit(ctx: &ClusterCtx, shards: &[ShardEpoch]) -> Result<Admission, Status> {
    if shards.is_empty() {
        return Err(Status::invalid_argument("a write must name its shards"));
    }
    let mut waited = false;
    loop {
        let map = ctx
            .shard_map()
            .map_err(|e| Status::unavailable(format!("node {}: {e}", ctx.node_id)))?;
        let mut redirects = Vec::new();
        let mut ahead = Vec::new();
        for se in shards {
            match map.check_epoch(se.shard, se.epoch) {
                EpochCheck::UnknownShard => {
                    return Err(Status::invalid_argument(format!(
                        "shard {} does not exist (the map has {} shards)",
                        se.shard, map.shards
                    )))
                }
                EpochCheck::Current => {
                    let holds = map
                        .assignment(se.shard)
                        .is_some_and(|a| a.holds(ctx.node_id));
                    if !holds {
                        redirects.push(redirect_of(&map, se.shard));
                    }
                }
                EpochCheck::Stale { .. } => redirects.push(redirect_of(&map, se.shard)),
                EpochCheck::Ahead { .. } => ahead.push((se.shard, se.epoch)),
            }
        }
        if ahead.is_empty() {
            return Ok(if redirects.is_empty() {
                Admission::Admit(map)
            } else {
                Admission::Redirect(redirects)
            });
        }
        if waited {
            let (shard, epoch) = ahead[0];
            return Err(Status::unavailable(format!(
                "node {}: its shard map has not reached epoch {epoch} of shard {shard} within {MAP_CATCH_UP:?}",
                ctx.node_id
            )));
        }
        wait_for_epochs(ctx, &ahead, MAP_CATCH_UP).await;
        waited = true;
    }
}

/// Waits until this node's applied map has every `(shard, epoch)` at least
/// at that epoch, for at most `limit`. Returns whether it got there.
pub(crate) async fn wait_for_epochs(
    ctx: &ClusterCtx,
    want: &[(ShardId, u64)],
    limit: Duration,
) -> bool {
    let reached = |st: &MetaState| {
        st.shard_map.as_ref().is_some_and(|m| {
            want.iter()
                .all(|(s, e)| m.assignment(*s).is_some_and(|a| a.epoch >= *e))
        })
    };
    let mut rx = ctx.meta.watch();
    let wait = async {
        loop {
            let done = reached(&rx.borrow_and_update());
            if done {
                return true;
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(false)
}

/// Appends decoded series to `db` (blocking). Without start timestamps
/// this is exactly [`LocalSink::write`]; with them, [`pharos_storage::db::Db::append_with_st`].
fn append(
    db: Arc<pharos_storage::db::Db>,
    metadata: Arc<crate::sink::MetadataStore>,
    series: Vec<SeriesIn>,
) -> Result<WriteOutcome, SinkError> {
    let n: usize = series.iter().map(|s| s.timestamps.len()).sum();
    let with_st = series.iter().any(|s| !s.start_timestamps.is_empty());
    let mut batch = Vec::with_capacity(n);
    let mut sts = Vec::with_capacity(if with_st { n } else { 0 });
    for s in series {
        for (i, (t, v)) in s.timestamps.iter().zip(&s.values).enumerate() {
            batch.push((s.labels.clone(), *t, *v));
            if with_st {
                sts.push(s.start_timestamps.get(i).copied().unwrap_or(0));
            }
        }
    }
    if !with_st {
        return LocalSink::new(db, metadata).write(&batch);
    }
    let stats = db.append_with_st(&batch, &sts)?;
    Ok(WriteOutcome {
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
    })
}

/// Records metric metadata a peer received.
pub async fn serve_metadata(
    ctx: &Arc<ClusterCtx>,
    req: MetadataPush,
) -> Result<MetadataReply, Status> {
    ctx.metadata.add(
        req.entries
            .into_iter()
            .map(|m| {
                (
                    m.family,
                    MetricMeta {
                        kind: metric_kind(&m.kind),
                        help: m.help,
                        unit: m.unit,
                    },
                )
            })
            .collect(),
    );
    Ok(MetadataReply {})
}

/// Prometheus's metric type names, as [`MetricMeta::kind`] holds them.
const METRIC_KINDS: [&str; 8] = [
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "summary",
    "info",
    "stateset",
    "unknown",
];

fn metric_kind(s: &str) -> &'static str {
    METRIC_KINDS
        .iter()
        .find(|k| **k == s)
        .copied()
        .unwrap_or("unknown")
}

// ---------------------------------------------------------------------------
// Sending.

/// Why a write to one replica failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{}: {}", .0.code(), .0.message())]
    Status(Status),
    #[error("no answer within {RPC_TIMEOUT:?}")]
    Timeout,
    #[error("{0} writes to this node are still waiting for its answer")]
    Overloaded(usize),
}

impl SendError {
    fn reason(&self) -> &'static str {
        match self {
            SendError::Cluster(ClusterError::UnknownNode(_)) => "unknown_node",
            SendError::Cluster(_) => "unavailable",
            SendError::Timeout => "timeout",
            SendError::Overloaded(_) => "overloaded",
            SendError::Status(s) => match s.code() {
                tonic::Code::Unavailable => "unavailable",
                tonic::Code::DeadlineExceeded => "timeout",
                tonic::Code::InvalidArgument => "invalid_argument",
                tonic::Code::Cancelled => "cancelled",
                _ => "internal",
            },
        }
    }
}

/// Writes `req` to `node`'s replicas: this node's through
/// [`apply_request`], a peer's through its `Replica` service (with
/// [`RPC_TIMEOUT`]).
pub(crate) async fn send_to(
    ctx: &Arc<ClusterCtx>,
    metrics: &WriteMetrics,
    node: NodeId,
    req: WriteRequest,
) -> Result<WriteReply, SendError> {
    let start = Instant::now();
    let res = if node == ctx.node_id {
        apply_request(ctx, &req).await.map_err(SendError::Status)
    } else {
        match ctx.peers.replica(node) {
            Err(e) => Err(SendError::Cluster(e)),
            Ok(mut client) => match tokio::time::timeout(RPC_TIMEOUT, client.write(req)).await {
                Err(_) => Err(SendError::Timeout),
                Ok(Err(s)) => Err(SendError::Status(s)),
                Ok(Ok(r)) => Ok(r.into_inner()),
            },
        }
    };
    metrics.observe(node, start.elapsed(), &res);
    res
}

// ---------------------------------------------------------------------------
// Coordinator side.

/// The samples of one shard of a batch, ready to send.
struct ShardGroup {
    shard: ShardId,
    series: Vec<SeriesSamples>,
    /// Batch index of each sample, in the order of `series`' samples.
    batch_idx: Vec<usize>,
}

/// Groups `batch` by shard (ascending) and, within a shard, by series in
/// first-seen order, keeping each series' samples in batch order. The
/// grouping does not depend on epochs (the shard count and placement labels
/// are fixed when the map is created), so a re-routed group is not
/// regrouped.
fn group(batch: &[(Labels, i64, f64)], map: &ShardMap) -> Vec<ShardGroup> {
    struct Building {
        series: Vec<(SeriesSamples, Vec<usize>)>,
    }
    let mut shards: BTreeMap<ShardId, Building> = BTreeMap::new();
    let mut seen: HashMap<&Labels, (ShardId, usize)> = HashMap::new();
    for (i, (labels, t, v)) in batch.iter().enumerate() {
        let (shard, pos) = match seen.get(labels) {
            Some(x) => *x,
            None => {
                let shard = shard_of_labels(labels, map);
                let b = shards
                    .entry(shard)
                    .or_insert_with(|| Building { series: Vec::new() });
                b.series.push((
                    SeriesSamples {
                        labels: bytes::Bytes::copy_from_slice(labels.as_bytes()),
                        ..Default::default()
                    },
                    Vec::new(),
                ));
                let x = (shard, b.series.len() - 1);
                seen.insert(labels, x);
                x
            }
        };
        if let Some(b) = shards.get_mut(&shard) {
            let (s, idx) = &mut b.series[pos];
            s.timestamps.push(*t);
            s.values.push(*v);
            idx.push(i);
        }
    }
    shards
        .into_iter()
        .map(|(shard, b)| {
            let mut series = Vec::with_capacity(b.series.len());
            let mut batch_idx = Vec::new();
            for (s, idx) in b.series {
                series.push(s);
                batch_idx.extend(idx);
            }
            ShardGroup {
                shard,
                series,
                batch_idx,
            }
        })
        .collect()
}

/// What one node was sent in a round, and its answer.
struct NodeResult {
    node: NodeId,
    /// The groups sent (index in the write's groups, and shard), in
    /// request order.
    spans: Vec<(usize, ShardId)>,
    /// Batch index of each sample of `req`, in request order.
    index_map: Vec<usize>,
    outcome: Result<WriteReply, SendError>,
}

impl NodeResult {
    /// Hints for the shards of this request (for a node that failed or
    /// redirected while the shards were acknowledged).
    fn hints(&self, groups: &[ShardGroup]) -> Vec<Hint> {
        self.spans
            .iter()
            .map(|(g, _)| Hint::new(groups[*g].shard, groups[*g].series.clone()))
            .collect()
    }
}

/// One shard's state within a round.
struct Tally {
    replicas: Vec<NodeId>,
    /// Up-to-date replicas that appended.
    ok: Vec<NodeId>,
    failed: Vec<(NodeId, String)>,
    /// The highest epoch a redirect named, and the placement it gave.
    redirect: Option<Redirect>,
    /// Some node redirected the request holding this group: route it again.
    resend: bool,
}

impl Tally {
    fn need(&self) -> usize {
        self.replicas.len() / 2 + 1
    }

    fn acked(&self) -> bool {
        !self.replicas.is_empty() && self.ok.len() >= self.need()
    }
}

/// The cluster's [`WriteSink`]: see the module docs for its contract.
pub struct ReplicatingSink {
    ctx: Arc<ClusterCtx>,
    metrics: Arc<WriteMetrics>,
    handoff: Arc<Handoff>,
    metadata_pushes: Arc<Semaphore>,
    /// Writes sent to each node and not answered yet.
    in_flight: Arc<Mutex<HashMap<NodeId, usize>>>,
    max_in_flight_per_peer: usize,
}

/// Counts one write in flight to a node while it lives.
struct InFlight {
    counts: Arc<Mutex<HashMap<NodeId, usize>>>,
    node: NodeId,
}

impl InFlight {
    /// `None` when `node` already has `max` writes in flight.
    fn acquire(
        counts: &Arc<Mutex<HashMap<NodeId, usize>>>,
        node: NodeId,
        max: usize,
    ) -> Option<InFlight> {
        let mut c = counts.lock();
        let n = c.entry(node).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(InFlight {
            counts: Arc::clone(counts),
            node,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.counts.lock().get_mut(&self.node) {
            *n = n.saturating_sub(1);
        }
    }
}

impl ReplicatingSink {
    /// A sink with its own (unregistered) [`WriteMetrics`].
    pub fn new(ctx: Arc<ClusterCtx>) -> Self {
        ReplicatingSink::with_metrics(ctx, Arc::new(WriteMetrics::default()))
    }

    /// A sink updating `metrics` (register them with
    /// [`WriteMetrics::register`]).
    pub fn with_metrics(ctx: Arc<ClusterCtx>, metrics: Arc<WriteMetrics>) -> Self {
        let handoff = Handoff::new(
            Arc::clone(&ctx),
            Arc::clone(&metrics),
            DEFAULT_MAX_SAMPLES_PER_PEER,
        );
        ReplicatingSink {
            ctx,
            metrics,
            handoff,
            metadata_pushes: Arc::new(Semaphore::new(MAX_METADATA_PUSHES)),
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            max_in_flight_per_peer: DEFAULT_MAX_IN_FLIGHT_PER_PEER,
        }
    }

    /// Sets how many writes to one node may wait for its answer at once;
    /// writes past that skip the node and hint its samples (default
    /// [`DEFAULT_MAX_IN_FLIGHT_PER_PEER`]).
    pub fn with_max_in_flight_per_peer(mut self, max: usize) -> Self {
        self.max_in_flight_per_peer = max;
        self
    }

    /// Writes to `node` waiting for its answer now.
    pub fn in_flight(&self, node: NodeId) -> usize {
        self.in_flight.lock().get(&node).copied().unwrap_or(0)
    }

    pub fn metrics(&self) -> &Arc<WriteMetrics> {
        &self.metrics
    }

    /// The hinted-handoff queues.
    pub fn handoff(&self) -> &Arc<Handoff> {
        &self.handoff
    }

    fn unavailable(&self, msg: String) -> SinkError {
        self.metrics
            .writes
            .get_or_create(&vec![("result", "unavailable".to_string())])
            .inc();
        SinkError::Unavailable(msg)
    }

    /// Writes `batch` to every replica of its shards; see the module docs.
    async fn replicate(&self, batch: &[(Labels, i64, f64)]) -> Result<WriteOutcome, SinkError> {
        if batch.is_empty() {
            return Ok(WriteOutcome::default());
        }
        let mut map = self
            .ctx
            .shard_map()
            .map_err(|_| self.unavailable("the cluster has no shard map yet".to_string()))?;
        let groups = Arc::new(group(batch, &map));
        // Per group: the refusals of its acknowledging replica, once acked.
        let mut acked: Vec<Option<Vec<Rejected>>> = (0..groups.len()).map(|_| None).collect();
        let mut todo: Vec<usize> = (0..groups.len()).collect();
        let mut failures: Vec<(usize, Tally)> = Vec::new();
        for round in 0..MAX_ROUNDS {
            let (mut tallies, results) = self.round(&groups, &todo, &map).await;
            let mut next = Vec::new();
            let mut want_epochs = Vec::new();
            for (pos, &g) in todo.iter().enumerate() {
                let tally = &mut tallies[pos];
                if tally.acked() {
                    acked[g] = Some(rejections_of(&groups[g], tally, &results));
                } else if tally.resend && round + 1 < MAX_ROUNDS {
                    if let Some(r) = &tally.redirect {
                        want_epochs.push((r.shard, r.epoch));
                    }
                    next.push(g);
                } else {
                    failures.push((g, std::mem::replace(tally, empty_tally())));
                }
            }
            self.hint_missed(&groups, &todo, &tallies, &acked, results);
            if !failures.is_empty() || next.is_empty() {
                break;
            }
            // Some replica has a newer map: let ours catch up, then route
            // the redirected shards again.
            tracing::debug!(
                round,
                shards = next.len(),
                "write redirected; routing again once the shard map catches up"
            );
            wait_for_epochs(&self.ctx, &want_epochs, MAP_CATCH_UP).await;
            map = self
                .ctx
                .shard_map()
                .map_err(|_| self.unavailable("the cluster has no shard map yet".to_string()))?;
            todo = next;
        }
        if !failures.is_empty() || acked.iter().any(Option::is_none) {
            return Err(self.unavailable(describe_failures(&groups, &failures, &acked)));
        }
        let mut out = WriteOutcome::default();
        for (g, rej) in groups.iter().zip(acked) {
            let rej = rej.unwrap_or_default();
            out.appended += g.batch_idx.len() - rej.len();
            out.rejected.extend(rej);
        }
        out.rejected.sort_by_key(|r| r.index);
        self.metrics
            .writes
            .get_or_create(&vec![("result", "ok".to_string())])
            .inc();
        Ok(out)
    }

    /// Sends the groups `todo` to every replica (up to date and pending) of
    /// their shards at `map`'s epochs, concurrently, and collects answers
    /// until every group is acknowledged or every node answered. Nodes
    /// still working when it returns finish in the background and hint
    /// their samples if they fail.
    async fn round(
        &self,
        groups: &Arc<Vec<ShardGroup>>,
        todo: &[usize],
        map: &ShardMap,
    ) -> (Vec<Tally>, Vec<NodeResult>) {
        let mut tallies: Vec<Tally> = Vec::with_capacity(todo.len());
        let mut per_node: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        let mut slot_of: HashMap<usize, usize> = HashMap::new();
        for (pos, &g) in todo.iter().enumerate() {
            let a = map.assignment(groups[g].shard).cloned().unwrap_or_default();
            for n in a.replicas.iter().chain(&a.pending) {
                per_node.entry(*n).or_default().push(g);
            }
            slot_of.insert(g, pos);
            tallies.push(Tally {
                replicas: a.replicas,
                ok: Vec::new(),
                failed: Vec::new(),
                redirect: None,
                resend: false,
            });
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<NodeResult>();
        let mut outstanding = 0usize;
        for (node, gs) in per_node {
            let spans: Vec<(usize, ShardId)> = gs.iter().map(|&g| (g, groups[g].shard)).collect();
            let index_map: Vec<usize> = gs
                .iter()
                .flat_map(|&g| groups[g].batch_idx.iter().copied())
                .collect();
            outstanding += 1;
            let Some(guard) = InFlight::acquire(&self.in_flight, node, self.max_in_flight_per_peer)
            else {
                // A peer this far behind is not written to directly: its
                // samples go to the (bounded) hint queue instead of piling
                // up in requests waiting for it.
                let outcome = Err(SendError::Overloaded(self.max_in_flight_per_peer));
                self.metrics.count_failure(node, &outcome);
                let _ = tx.send(NodeResult {
                    node,
                    spans,
                    index_map,
                    outcome,
                });
                continue;
            };
            let req = WriteRequest {
                from_node: self.ctx.node_id,
                shards: spans
                    .iter()
                    .map(|(_, shard)| ShardEpoch {
                        shard: *shard,
                        epoch: map.assignment(*shard).map_or(0, |a| a.epoch),
                    })
                    .collect(),
                series: gs
                    .iter()
                    .flat_map(|&g| groups[g].series.iter().cloned())
                    .collect(),
            };
            let ctx = Arc::clone(&self.ctx);
            let metrics = Arc::clone(&self.metrics);
            let handoff = Arc::clone(&self.handoff);
            let groups = Arc::clone(groups);
            let tx = tx.clone();
            self.ctx.runtime.spawn(async move {
                let outcome = send_to(&ctx, &metrics, node, req).await;
                drop(guard);
                let res = NodeResult {
                    node,
                    spans,
                    index_map,
                    outcome,
                };
                if let Err(mpsc::error::SendError(late)) = tx.send(res) {
                    // The write was acknowledged without this node: it
                    // must still get the samples.
                    let missed = match &late.outcome {
                        Ok(r) => !r.redirects.is_empty(),
                        Err(_) => true,
                    };
                    if missed {
                        for h in late.hints(&groups) {
                            handoff.enqueue(node, h);
                        }
                    }
                }
            });
        }
        drop(tx);
        let mut results = Vec::with_capacity(outstanding);
        while outstanding > 0 && !tallies.iter().all(Tally::acked) {
            let Some(res) = rx.recv().await else {
                break;
            };
            outstanding -= 1;
            count(&mut tallies, &slot_of, &res);
            results.push(res);
        }
        // Answers that arrived meanwhile are counted; later ones are
        // handled by their tasks.
        rx.close();
        while let Ok(res) = rx.try_recv() {
            count(&mut tallies, &slot_of, &res);
            results.push(res);
        }
        (tallies, results)
    }

    /// Queues hints for replicas that missed groups acknowledged in this
    /// round: nodes that failed or redirected, and replicas a redirect
    /// named that were not written to.
    fn hint_missed(
        &self,
        groups: &[ShardGroup],
        todo: &[usize],
        tallies: &[Tally],
        acked: &[Option<Vec<Rejected>>],
        results: Vec<NodeResult>,
    ) {
        let sent: BTreeSet<(NodeId, usize)> = results
            .iter()
            .flat_map(|r| r.spans.iter().map(move |(g, _)| (r.node, *g)))
            .collect();
        for res in &results {
            let missed = match &res.outcome {
                Ok(r) => !r.redirects.is_empty(),
                Err(_) => true,
            };
            if !missed {
                continue;
            }
            for (g, _) in &res.spans {
                if acked[*g].is_some() {
                    self.handoff.enqueue(
                        res.node,
                        Hint::new(groups[*g].shard, groups[*g].series.clone()),
                    );
                }
            }
        }
        for (pos, &g) in todo.iter().enumerate() {
            let (Some(r), true) = (&tallies[pos].redirect, acked[g].is_some()) else {
                continue;
            };
            for n in r.replicas.iter().chain(&r.pending) {
                if !sent.contains(&(*n, g)) {
                    self.handoff
                        .enqueue(*n, Hint::new(groups[g].shard, groups[g].series.clone()));
                }
            }
        }
    }

    async fn delete_all(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<u64, SinkError> {
        if matchers.is_empty() {
            return Err(SinkError::Storage(StorageError::InvalidMatcher(
                "delete needs at least one matcher".to_string(),
            )));
        }
        let state = self.ctx.meta.state();
        let req = DeleteRequest {
            matchers: matchers.iter().map(to_proto_matcher).collect(),
            mint,
            maxt,
        };
        let mut tasks = Vec::new();
        for (id, info) in &state.nodes {
            let id = *id;
            let ctx = Arc::clone(&self.ctx);
            let req = req.clone();
            let matchers = matchers.to_vec();
            let active = info.state == NodeState::Active;
            tasks.push((
                id,
                active,
                self.ctx.runtime.spawn(async move {
                    if id == ctx.node_id {
                        let db = Arc::clone(&ctx.db);
                        tokio::task::spawn_blocking(move || db.delete(&matchers, mint, maxt))
                            .await
                            .map_err(|e| format!("delete task failed: {e}"))?
                            .map(|st| st.head_series + st.block_series)
                            .map_err(|e| e.to_string())
                    } else {
                        let mut client = ctx.peers.replica(id).map_err(|e| e.to_string())?;
                        match tokio::time::timeout(RPC_TIMEOUT, client.delete(req)).await {
                            Err(_) => Err(format!("no answer within {RPC_TIMEOUT:?}")),
                            Ok(Err(s)) => Err(format!("{}: {}", s.code(), s.message())),
                            Ok(Ok(r)) => Ok(r.into_inner().series),
                        }
                    }
                }),
            ));
        }
        let mut total = 0;
        let mut errors = Vec::new();
        for (id, active, task) in tasks {
            let res = task
                .await
                .unwrap_or_else(|e| Err(format!("delete task failed: {e}")));
            match res {
                Ok(n) => total += n,
                Err(e) if active => errors.push(format!("node {id}: {e}")),
                Err(e) => {
                    tracing::warn!(node = id, error = %e, "delete on an inactive node failed")
                }
            }
        }
        if !errors.is_empty() {
            return Err(SinkError::Unavailable(format!(
                "delete not confirmed by every active node: {}",
                errors.join("; ")
            )));
        }
        Ok(total)
    }
}

fn empty_tally() -> Tally {
    Tally {
        replicas: Vec::new(),
        ok: Vec::new(),
        failed: Vec::new(),
        redirect: None,
        resend: false,
    }
}

/// Counts one node's answer into the tallies of the groups it was sent.
fn count(tallies: &mut [Tally], slot_of: &HashMap<usize, usize>, res: &NodeResult) {
    for (g, shard) in &res.spans {
        let shard = *shard;
        let Some(&pos) = slot_of.get(g) else {
            continue;
        };
        let t = &mut tallies[pos];
        match &res.outcome {
            Err(e) => t.failed.push((res.node, e.to_string())),
            Ok(reply) if !reply.redirects.is_empty() => {
                // Nothing of the request was applied, for any of its
                // shards: every one of them is sent again.
                t.resend = true;
                match reply.redirects.iter().find(|r| r.shard == shard) {
                    Some(r) => {
                        t.failed.push((
                            res.node,
                            format!("redirected: its map has the shard at epoch {}", r.epoch),
                        ));
                        if t.redirect.as_ref().is_none_or(|old| old.epoch < r.epoch) {
                            t.redirect = Some(r.clone());
                        }
                    }
                    None => t.failed.push((
                        res.node,
                        "redirected for another shard of the request".to_string(),
                    )),
                }
            }
            Ok(_) => {
                if t.replicas.contains(&res.node) {
                    t.ok.push(res.node);
                }
            }
        }
    }
}

/// The refusals of group `g` as its first acknowledging up-to-date replica
/// (in replica order) reported them, with batch indexes.
fn rejections_of(group: &ShardGroup, tally: &Tally, results: &[NodeResult]) -> Vec<Rejected> {
    let Some(node) = tally.replicas.iter().find(|n| tally.ok.contains(n)) else {
        return Vec::new();
    };
    let Some(res) = results.iter().find(|r| r.node == *node) else {
        return Vec::new();
    };
    let Ok(reply) = &res.outcome else {
        return Vec::new();
    };
    if reply.rejected.is_empty() {
        return Vec::new();
    }
    let mine: BTreeSet<usize> = group.batch_idx.iter().copied().collect();
    let mut out = Vec::new();
    for r in &reply.rejected {
        let Some(&index) = res.index_map.get(r.index as usize) else {
            continue;
        };
        if !mine.contains(&index) {
            continue;
        }
        out.push(Rejected {
            index,
            reason: reject_reason(&r.reason),
            message: r.message.clone(),
        });
    }
    out
}

fn reject_reason(s: &str) -> RejectReason {
    [
        RejectReason::OutOfOrder,
        RejectReason::TooOld,
        RejectReason::Duplicate,
        RejectReason::InvalidLabels,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
    .unwrap_or(RejectReason::Other)
}

/// The message of a write that missed a majority for some shards.
fn describe_failures(
    groups: &[ShardGroup],
    failures: &[(usize, Tally)],
    acked: &[Option<Vec<Rejected>>],
) -> String {
    let mut missing: Vec<ShardId> = failures.iter().map(|(g, _)| groups[*g].shard).collect();
    for (g, a) in acked.iter().enumerate() {
        if a.is_none() && !failures.iter().any(|(f, _)| *f == g) {
            missing.push(groups[g].shard);
        }
    }
    missing.sort_unstable();
    let mut msg = format!(
        "{} of {} shards lack a majority of up-to-date replicas: ",
        missing.len(),
        groups.len()
    );
    let mut parts = Vec::new();
    for (g, t) in failures.iter().take(SHARDS_IN_ERROR) {
        let why: Vec<String> = t
            .failed
            .iter()
            .map(|(n, e)| format!("node {n}: {e}"))
            .collect();
        parts.push(format!(
            "shard {} ({} of {} replicas appended, {} needed; {})",
            groups[*g].shard,
            t.ok.len(),
            t.replicas.len(),
            t.need(),
            if why.is_empty() {
                "no replicas".to_string()
            } else {
                why.join(", ")
            }
        ));
    }
    let named: Vec<ShardId> = failures
        .iter()
        .take(SHARDS_IN_ERROR)
        .map(|(g, _)| groups[*g].shard)
        .collect();
    let rest: Vec<String> = missing
        .iter()
        .filter(|s| !named.contains(s))
        .map(|s| s.to_string())
        .collect();
    if !rest.is_empty() {
        parts.push(format!("also shards {}", rest.join(", ")));
    }
    msg.push_str(&parts.join("; "));
    msg
}

fn to_proto_matcher(m: &Matcher) -> LabelMatcher {
    LabelMatcher {
        r#type: match m.kind {
            MatchType::Equal => 0,
            MatchType::NotEqual => 1,
            MatchType::Regex => 2,
            MatchType::NotRegex => 3,
        },
        name: m.name.clone(),
        value: m.value.clone(),
    }
}

impl WriteSink for ReplicatingSink {
    fn write(&self, batch: &[(Labels, i64, f64)]) -> Result<WriteOutcome, SinkError> {
        self.ctx.runtime.block_on(self.replicate(batch))
    }

    /// Series refs are per node; a replicated write has none to return.
    fn write_hinted(
        &self,
        batch: &[(Labels, i64, f64)],
        hints: &[Option<SeriesRef>],
    ) -> Result<(WriteOutcome, Vec<Option<SeriesRef>>), SinkError> {
        let _ = hints;
        Ok((self.write(batch)?, Vec::new()))
    }

    /// Stores the entries here and pushes them to every other member in the
    /// background (best effort, [`METADATA_TIMEOUT`] per peer; a push is
    /// skipped when [`MAX_METADATA_PUSHES`] are already in flight).
    fn write_metadata(&self, entries: Vec<(String, MetricMeta)>) {
        if entries.is_empty() {
            return;
        }
        let push = MetadataPush {
            entries: entries
                .iter()
                .map(|(family, m)| MetricMetadata {
                    family: family.clone(),
                    kind: m.kind.to_string(),
                    help: m.help.clone(),
                    unit: m.unit.clone(),
                })
                .collect(),
        };
        self.ctx.metadata.add(entries);
        let peers: Vec<NodeId> = self
            .ctx
            .meta
            .state()
            .nodes
            .keys()
            .copied()
            .filter(|n| *n != self.ctx.node_id)
            .collect();
        for node in peers {
            let Ok(permit) = Arc::clone(&self.metadata_pushes).try_acquire_owned() else {
                tracing::debug!(peer = node, "metadata push skipped: too many in flight");
                continue;
            };
            let Ok(mut client) = self.ctx.peers.replica(node) else {
                continue;
            };
            let push = push.clone();
            self.ctx.runtime.spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(METADATA_TIMEOUT, client.push_metadata(push)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(s)) => tracing::debug!(peer = node, error = %s, "metadata push failed"),
                    Err(_) => tracing::debug!(peer = node, "metadata push timed out"),
                }
            });
        }
    }

    /// Deletes on every member (this node included); succeeds only when
    /// every `Active` member confirmed. The count adds up the series each
    /// node touched, so a series held by several replicas counts once per
    /// replica.
    fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<u64, SinkError> {
        self.ctx
            .runtime
            .block_on(self.delete_all(matchers, mint, maxt))
    }
}

#[cfg(test)]
mod tests;
