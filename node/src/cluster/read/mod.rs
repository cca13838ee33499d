//! Fan-out reads: the coordinator side ([`FanoutQueryable`], the
//! [`Queryable`] the PromQL engine and the HTTP API read through in cluster
//! mode) and the replica side ([`serve_select`], [`serve_label_names`],
//! [`serve_label_values`], [`serve_delete`]).
//!
//! Owns: which replica answers for which shard, the wire form of a selected
//! series (`SeriesChunks`: canonical label bytes, chunks as stored, never
//! decoded), failover between replicas, and the fan-out metrics
//! ([`ReadMetrics`]). Must not: write samples (only [`super::catchup`]
//! appends what it pulled, through the node's own `Db`), evaluate PromQL,
//! or change the shard map.
//!
//! # Coordinator
//!
//! A read needs every shard, or only a few when matchers restrict every
//! placement label to a few values (`job="x"`, `instance=~"a|b"`: the
//! placement hashes of such series are then known). For each needed shard
//! the candidates are its up-to-date replicas (pending ones may still miss
//! data and are never read): this node first — unless it is catching up
//! after a restart, when its own data may have gaps and it is not read at
//! all —, then the others in replica order, nodes the meta group marks
//! `Down` last. Shards are grouped by their
//! current candidate so that each node gets one request (with a
//! [`ShardFilter`](pharos_proto::cluster::ShardFilter) listing its shards);
//! the requests run concurrently, and the shards of a node that fails move
//! to their next candidate for another round. Everything shares one
//! deadline ([`super::peers::RPC_TIMEOUT`] by default); a node that has not
//! answered within half of it counts as failed, so that a hung (not just
//! dead) replica still leaves time to fail over.
//!
//! Invariant: a select never silently returns less. A shard that no
//! candidate answered fails the read with a [`QueryError::Storage`] naming
//! the shards and the last error; only a [`FanoutQueryable::allow_partial`]
//! queryable answers from the shards it reached, and then
//! [`Queryable::select_with_warnings`] reports the missing shards as a
//! warning. `select`, which has no way to warn, fails even then; the label
//! queries, which have none either, answer in partial mode from the nodes
//! reached and log the missing shards (label lists are approximate in
//! Prometheus's API anyway).
//!
//! Results from several nodes are merged with
//! [`merge_series_sets`] (series with equal labels merged, samples
//! de-duplicated by timestamp when iterated) and [`merge_strings`].
//!
//! # Replica
//!
//! `Select` runs the node's `Db` querier (head and blocks) on a blocking
//! thread, keeps the series whose placement shard is in the request's
//! filter, and streams them in label order in batches of at most
//! [`BATCH_SERIES`] series or about [`BATCH_BYTES`] bytes. While the node is
//! catching up ([`super::ClusterCtx::catching_up`]) it refuses with
//! `UNAVAILABLE`, so the coordinator fails over to a replica that is
//! complete. Label queries ignore the shard filter: a node's label names and
//! values come from data it holds, so the union over the nodes asked is a
//! superset of the needed shards' labels made only of labels that exist,
//! which is what Prometheus's own API allows (`/api/v1/labels` may be
//! approximate) — filtering would mean reading every matching series.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use pharos_meta::types::{MetaState, NodeId, NodeState, ShardAssignment, ShardId, ShardMap};
use pharos_proto::cluster as pb;
use pharos_proto::cluster::{
    DeleteReply, DeleteRequest, LabelsReply, LabelsRequest, SelectReply, SelectRequest,
};
use pharos_query::engine::QueryError;
use pharos_query::queryable::Queryable;
use pharos_storage::chunk::{Chunk, ChunkBytes, Encoding};
use pharos_storage::db::Db;
use pharos_storage::labels::{Labels, MatchType, Matcher};
use pharos_storage::querier::{merge_series_sets, merge_strings, Querier, SelectHints};
use pharos_storage::series::{ChunkMeta, Series};
use pharos_storage::StorageError;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tonic::Status;

use super::peers::RPC_TIMEOUT;
use super::{placement_hash, ClusterCtx, ClusterError};

/// The stream of a `Select` answer.
pub type SelectStream = Pin<Box<dyn Stream<Item = Result<SelectReply, Status>> + Send + 'static>>;

/// Most series in one `SelectReply`.
pub const BATCH_SERIES: usize = 512;

/// A `SelectReply` is closed once its series reach about this many bytes
/// (one large series may exceed it, up to [`super::peers::MAX_MESSAGE`]).
pub const BATCH_BYTES: usize = 4 << 20;

// ---------------------------------------------------------------------------
// Metrics

type PeerRpc = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 0.5ms … ~16s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Fan-out read metrics (`pharos_cluster_read_*`).
pub struct ReadMetrics {
    /// Latency of each request to one node (this node included, as
    /// `peer=<own id>`), by peer and RPC (`select`, `label_names`,
    /// `label_values`).
    pub request_duration: Family<PeerRpc, Histogram, fn() -> Histogram>,
    /// Requests to a node that failed (error, timeout, bad answer).
    pub failures: Family<PeerRpc, Counter>,
    /// Shards moved to their next replica after a failure.
    pub failovers: Counter,
    /// Shards asked for, summed over reads (one per needed shard and read).
    pub shards_asked: Counter,
    /// Reads that could not reach every needed shard (they failed, or
    /// answered partially where allowed).
    pub incomplete_reads: Counter,
}

impl Default for ReadMetrics {
    fn default() -> Self {
        ReadMetrics {
            request_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            failures: Family::default(),
            failovers: Counter::default(),
            shards_asked: Counter::default(),
            incomplete_reads: Counter::default(),
        }
    }
}

impl ReadMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pharos_cluster_read_rpc_duration_seconds",
            "Latency of fan-out read requests to one node, by peer and RPC",
            self.request_duration.clone(),
        );
        registry.register(
            "pharos_cluster_read_rpc_failures",
            "Fan-out read requests to a node that failed, by peer and RPC",
            self.failures.clone(),
        );
        registry.register(
            "pharos_cluster_read_failovers",
            "Shards re-read from their next replica after a failure",
            self.failovers.clone(),
        );
        registry.register(
            "pharos_cluster_read_shards",
            "Shards asked for by fan-out reads",
            self.shards_asked.clone(),
        );
        registry.register(
            "pharos_cluster_read_incomplete",
            "Fan-out reads that could not reach every needed shard (failed, or answered partially when the caller allowed it)",
            self.incomplete_reads.clone(),
        );
    }

    fn observe(&self, peer: NodeId, rpc: &'static str, took: Duration, ok: bool) {
        let labels = vec![("peer", peer.to_string()), ("rpc", rpc.to_string())];
        self.request_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.failures.get_or_create(&labels).inc();
        }
    }
}

// ---------------------------------------------------------------------------
// Wire conversions

/// Storage matchers from their wire form; a bad type or regex is
/// `INVALID_ARGUMENT`.
pub(crate) fn matchers_from_proto(ms: &[pb::LabelMatcher]) -> Result<Vec<Matcher>, Status> {
    ms.iter()
        .map(|m| {
            let kind = match m.r#type {
                0 => MatchType::Equal,
                1 => MatchType::NotEqual,
                2 => MatchType::Regex,
                3 => MatchType::NotRegex,
                t => {
                    return Err(Status::invalid_argument(format!(
                        "unknown matcher type {t} for label {:?}",
                        m.name
                    )))
                }
            };
            Matcher::new(kind, &m.name, &m.value).map_err(|e| {
                Status::invalid_argument(format!("invalid regex in matcher {:?}: {e}", m.name))
            })
        })
        .collect()
}

pub(crate) fn matchers_to_proto(ms: &[Matcher]) -> Vec<pb::LabelMatcher> {
    ms.iter()
        .map(|m| pb::LabelMatcher {
            r#type: match m.kind {
                MatchType::Equal => 0,
                MatchType::NotEqual => 1,
                MatchType::Regex => 2,
                MatchType::NotRegex => 3,
            },
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect()
}

fn hints_from_proto(h: Option<pb::SelectHints>) -> Option<SelectHints> {
    h.map(|h| SelectHints {
        start: h.start,
        end: h.end,
        step: h.step,
        range: h.range,
        func: (!h.func.is_empty()).then_some(h.func),
        grouping: h.grouping,
        by: h.by,
    })
}

fn hints_to_proto(h: Option<&SelectHints>) -> Option<pb::SelectHints> {
    h.map(|h| pb::SelectHints {
        start: h.start,
        end: h.end,
        step: h.step,
        range: h.range,
        func: h.func.clone().unwrap_or_default(),
        grouping: h.grouping.clone(),
        by: h.by,
    })
}

/// Lends a chunk's bytes (heap or file map) to a `Bytes` without copying.
struct ChunkOwner(ChunkBytes);

impl AsRef<[u8]> for ChunkOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A series in its wire form; chunk bytes are shared, not copied.
pub(crate) fn series_to_proto(s: &Series) -> pb::SeriesChunks {
    pb::SeriesChunks {
        labels: Bytes::copy_from_slice(s.labels.as_bytes()),
        chunks: s
            .chunks
            .iter()
            .map(|c| pb::Chunk {
                min_time: c.min_time,
                max_time: c.max_time,
                encoding: u32::from(c.chunk.encoding().as_u8()),
                data: Bytes::from_owner(ChunkOwner(c.chunk.chunk_bytes().clone())),
            })
            .collect(),
        deleted: s.deleted.iter().flat_map(|&(a, b)| [a, b]).collect(),
        start_timestamps: s
            .start_timestamps
            .as_deref()
            .unwrap_or_default()
            .iter()
            .flat_map(|&(t, st)| [t, st])
            .collect(),
    }
}

/// A series from its wire form, checking everything a peer could get wrong
/// (labels, encodings, chunk headers, interval and pair lists).
pub(crate) fn series_from_proto(s: pb::SeriesChunks) -> Result<Series, String> {
    let labels = Labels::from_canonical_bytes(&s.labels)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| "a series with malformed or empty labels".to_string())?;
    let mut chunks = Vec::with_capacity(s.chunks.len());
    for c in s.chunks {
        let encoding = u8::try_from(c.encoding)
            .ok()
            .and_then(Encoding::from_u8)
            .ok_or_else(|| format!("series {labels}: unknown chunk encoding {}", c.encoding))?;
        if c.min_time > c.max_time {
            return Err(format!(
                "series {labels}: chunk range [{}, {}] is inverted",
                c.min_time, c.max_time
            ));
        }
        let chunk = Chunk::new(encoding, Arc::from(&c.data[..]))
            .map_err(|e| format!("series {labels}: {e}"))?;
        chunks.push(ChunkMeta {
            min_time: c.min_time,
            max_time: c.max_time,
            chunk,
        });
    }
    if s.deleted.len() % 2 != 0 || s.start_timestamps.len() % 2 != 0 {
        return Err(format!(
            "series {labels}: odd-length deleted or start-timestamp list"
        ));
    }
    let deleted = s.deleted.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    let pairs: Vec<(i64, i64)> = s
        .start_timestamps
        .chunks_exact(2)
        .map(|p| (p[0], p[1]))
        .collect();
    if pairs.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(format!(
            "series {labels}: start timestamps not sorted by time"
        ));
    }
    Ok(Series {
        labels,
        chunks,
        deleted,
        start_timestamps: (!pairs.is_empty()).then(|| pairs.into()),
    })
}

// ---------------------------------------------------------------------------
// Shard filters

/// Most shards a filter may describe (the map has 256 by default); bounds
/// what a peer's request can make this node allocate.
const MAX_SHARDS: u32 = 1 << 20;

/// Which series of a node to keep: those whose placement shard is in a set.
#[derive(Debug, Clone)]
pub(crate) struct ShardSel {
    /// `keep[i]`: shard `i` is wanted.
    keep: Vec<bool>,
    placement_labels: Vec<String>,
}

impl ShardSel {
    /// `None` when every series is wanted.
    pub(crate) fn new(map: &ShardMap, shards: &[ShardId]) -> Option<ShardSel> {
        let mut keep = vec![false; map.shards as usize];
        for &s in shards {
            if let Some(k) = keep.get_mut(s as usize) {
                *k = true;
            }
        }
        if keep.iter().all(|&k| k) {
            return None;
        }
        Some(ShardSel {
            keep,
            placement_labels: map.placement_labels.clone(),
        })
    }

    fn from_proto(f: Option<&pb::ShardFilter>) -> Result<Option<ShardSel>, Status> {
        let Some(f) = f.filter(|f| !f.shards.is_empty()) else {
            return Ok(None);
        };
        if f.total_shards == 0 || f.total_shards > MAX_SHARDS {
            return Err(Status::invalid_argument(format!(
                "shard filter over {} shards (1 to {MAX_SHARDS} allowed)",
                f.total_shards
            )));
        }
        let mut keep = vec![false; f.total_shards as usize];
        for &s in &f.shards {
            match keep.get_mut(s as usize) {
                Some(k) => *k = true,
                None => {
                    return Err(Status::invalid_argument(format!(
                        "shard {s} out of {} shards",
                        f.total_shards
                    )))
                }
            }
        }
        Ok(Some(ShardSel {
            keep,
            placement_labels: f.placement_labels.clone(),
        }))
    }

    fn to_proto(sel: Option<&ShardSel>) -> Option<pb::ShardFilter> {
        sel.map(|s| pb::ShardFilter {
            shards: s
                .keep
                .iter()
                .enumerate()
                .filter(|(_, &k)| k)
                .map(|(i, _)| i as u32)
                .collect(),
            total_shards: s.keep.len() as u32,
            placement_labels: s.placement_labels.clone(),
        })
    }

    /// The shard of a placement hash among `total` shards (the same
    /// arithmetic as [`ShardMap::shard_for_hash`]).
    fn shard_of(hash: u64, total: usize) -> usize {
        ((u128::from(hash) * total as u128) >> 64) as usize
    }

    pub(crate) fn keeps(&self, labels: &Labels) -> bool {
        let h = placement_hash(labels, &self.placement_labels);
        self.keep
            .get(Self::shard_of(h, self.keep.len()))
            .copied()
            .unwrap_or(false)
    }

    pub(crate) fn retain(sel: Option<&ShardSel>, series: &mut Vec<Series>) {
        if let Some(sel) = sel {
            series.retain(|s| sel.keeps(&s.labels));
        }
    }
}

// ---------------------------------------------------------------------------
// Replica side

fn storage_status(e: StorageError) -> Status {
    use pharos_storage::error::ApiErrorType;
    match e.api_error_type() {
        ApiErrorType::BadData => Status::invalid_argument(e.to_string()),
        ApiErrorType::Unavailable => Status::unavailable(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn join_status(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("read task failed: {e}"))
}

/// Runs `f` on the node's `Db` on a blocking thread.
async fn on_db<T: Send + 'static>(
    db: &Arc<Db>,
    f: impl FnOnce(&Db) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, Status> {
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(join_status)?
        .map_err(storage_status)
}

/// Batches series into `SelectReply`s lazily, as the stream is polled.
struct Batches {
    series: std::vec::IntoIter<Series>,
}

impl Iterator for Batches {
    type Item = Result<SelectReply, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < BATCH_SERIES && bytes < BATCH_BYTES {
            let Some(s) = self.series.next() else { break };
            bytes += s.labels.as_bytes().len()
                + s.chunks
                    .iter()
                    .map(|c| c.chunk.byte_size() + 32)
                    .sum::<usize>();
            out.push(series_to_proto(&s));
        }
        (!out.is_empty()).then_some(Ok(SelectReply { series: out }))
    }
}

fn refuse_while_catching_up(ctx: &ClusterCtx) -> Result<(), Status> {
    if ctx.catching_up.load(Ordering::Acquire) {
        return Err(Status::unavailable(format!(
            "node {} is catching up after a restart; read another replica",
            ctx.node_id
        )));
    }
    Ok(())
}

/// Streams this node's series matching a peer's selection.
#[tracing::instrument(skip_all, fields(mint = req.mint, maxt = req.maxt))]
pub async fn serve_select(
    ctx: Arc<ClusterCtx>,
    req: SelectRequest,
) -> Result<SelectStream, Status> {
    refuse_while_catching_up(&ctx)?;
    let matchers = matchers_from_proto(&req.matchers)?;
    let sel = ShardSel::from_proto(req.filter.as_ref())?;
    let hints = hints_from_proto(req.hints);
    let (mint, maxt) = (req.mint, req.maxt);
    let series = on_db(&ctx.db, move |db| {
        let mut s = Querier::select(db, mint, maxt, &matchers, hints.as_ref())?;
        ShardSel::retain(sel.as_ref(), &mut s);
        Ok(s)
    })
    .await?;
    Ok(Box::pin(futures_util::stream::iter(Batches {
        series: series.into_iter(),
    })))
}

/// Label names of this node's series matching the request (the shard
/// filter is ignored, see the module docs).
#[tracing::instrument(skip_all, fields(mint = req.mint, maxt = req.maxt))]
pub async fn serve_label_names(
    ctx: &Arc<ClusterCtx>,
    req: LabelsRequest,
) -> Result<LabelsReply, Status> {
    refuse_while_catching_up(ctx)?;
    let matchers = matchers_from_proto(&req.matchers)?;
    let (mint, maxt) = (req.mint, req.maxt);
    let values = on_db(&ctx.db, move |db| {
        Querier::label_names(db, mint, maxt, &matchers)
    })
    .await?;
    Ok(LabelsReply { values })
}

/// Values of label `req.name` on this node's series matching the request
/// (the shard filter is ignored, see the module docs).
#[tracing::instrument(skip_all, fields(name = %req.name, mint = req.mint, maxt = req.maxt))]
pub async fn serve_label_values(
    ctx: &Arc<ClusterCtx>,
    req: LabelsRequest,
) -> Result<LabelsReply, Status> {
    refuse_while_catching_up(ctx)?;
    if req.name.is_empty() {
        return Err(Status::invalid_argument("label values need a label name"));
    }
    let matchers = matchers_from_proto(&req.matchers)?;
    let (mint, maxt, name) = (req.mint, req.maxt, req.name);
    let values = on_db(&ctx.db, move |db| {
        Querier::label_values(db, &name, mint, maxt, &matchers)
    })
    .await?;
    Ok(LabelsReply { values })
}

/// Deletes (tombstones) the matching samples on this node; answers the
/// number of series touched (head series plus block series).
#[tracing::instrument(skip_all, fields(mint = req.mint, maxt = req.maxt))]
pub async fn serve_delete(
    ctx: &Arc<ClusterCtx>,
    req: DeleteRequest,
) -> Result<DeleteReply, Status> {
    let matchers = matchers_from_proto(&req.matchers)?;
    if matchers.is_empty() {
        return Err(Status::invalid_argument(
            "delete needs at least one matcher",
        ));
    }
    let (mint, maxt) = (req.mint, req.maxt);
    let stats = on_db(&ctx.db, move |db| db.delete(&matchers, mint, maxt)).await?;
    Ok(DeleteReply {
        series: stats.head_series + stats.block_series,
    })
}

// ---------------------------------------------------------------------------
// Coordinator side: the fan-out engine (shared with catch-up)

/// What to ask each node.
#[derive(Debug, Clone)]
pub(crate) enum ReadOp {
    Select {
        mint: i64,
        maxt: i64,
        matchers: Vec<Matcher>,
        hints: Option<SelectHints>,
    },
    LabelNames {
        mint: i64,
        maxt: i64,
        matchers: Vec<Matcher>,
    },
    LabelValues {
        name: String,
        mint: i64,
        maxt: i64,
        matchers: Vec<Matcher>,
    },
}

impl ReadOp {
    fn rpc(&self) -> &'static str {
        match self {
            ReadOp::Select { .. } => "select",
            ReadOp::LabelNames { .. } => "label_names",
            ReadOp::LabelValues { .. } => "label_values",
        }
    }
}

/// One node's answer.
pub(crate) enum Answer {
    Series(Vec<Series>),
    Strings(Vec<String>),
}

/// The outcome of a fan-out: the answers of the nodes that were read, and
/// the shards no candidate answered with the last error about each.
pub(crate) struct FanOut {
    pub answers: Vec<Answer>,
    pub missing: BTreeMap<ShardId, String>,
}

impl FanOut {
    /// `shards 3, 7 (last error: …)`.
    pub(crate) fn describe_missing(&self) -> String {
        let shards: Vec<String> = self.missing.keys().map(|s| s.to_string()).collect();
        let last = self.missing.values().last().cloned().unwrap_or_default();
        format!("shards {} (last error: {last})", shards.join(", "))
    }

    fn series_sets(self) -> Vec<Vec<Series>> {
        self.answers
            .into_iter()
            .filter_map(|a| match a {
                Answer::Series(s) => Some(s),
                Answer::Strings(_) => None,
            })
            .collect()
    }

    fn string_lists(self) -> Vec<Vec<String>> {
        self.answers
            .into_iter()
            .filter_map(|a| match a {
                Answer::Strings(s) => Some(s),
                Answer::Series(_) => None,
            })
            .collect()
    }
}

/// Read candidates of a shard for this node's own queries: up-to-date
/// replicas, this node first unless it is catching up (then not at all),
/// nodes marked `Down` last.
fn read_candidates(ctx: &ClusterCtx, state: &MetaState, a: &ShardAssignment) -> Vec<NodeId> {
    let catching_up = ctx.catching_up.load(Ordering::Acquire);
    let mut out = Vec::with_capacity(a.replicas.len());
    if !catching_up && a.replicas.contains(&ctx.node_id) {
        out.push(ctx.node_id);
    }
    out.extend(peer_candidates(ctx.node_id, state, a));
    out
}

/// The shard's up-to-date replicas other than `me`, in replica order with
/// nodes marked `Down` (or unknown) last.
pub(crate) fn peer_candidates(me: NodeId, state: &MetaState, a: &ShardAssignment) -> Vec<NodeId> {
    let live = |n: &NodeId| {
        state
            .nodes
            .get(n)
            .is_some_and(|i| i.state != NodeState::Down)
    };
    let others = a.replicas.iter().copied().filter(|&n| n != me);
    let (up, down): (Vec<NodeId>, Vec<NodeId>) = others.partition(live);
    up.into_iter().chain(down).collect()
}

/// Most placement keys [`needed_shards`] enumerates before it gives up and
/// asks every shard.
const MAX_PLACEMENT_KEYS: usize = 64;

/// The shards a selection can find series in (sorted): when matchers
/// restrict every placement label to a few non-empty values (`=`, or `=~`
/// on a plain alternation such as `a|b`), the shards of those placement
/// keys; else all.
pub(crate) fn needed_shards(map: &ShardMap, matchers: &[Matcher]) -> Vec<ShardId> {
    match placement_hashes(&map.placement_labels, matchers) {
        Some(hashes) => {
            let set: BTreeSet<ShardId> =
                hashes.into_iter().map(|h| map.shard_for_hash(h)).collect();
            set.into_iter().collect()
        }
        None => (0..map.shards).collect(),
    }
}

/// The placement hashes a series matching `matchers` can have, when they
/// are few. Such a series has every placement label, with one of the
/// allowed values, so its placement hash is `hash_for` over exactly these
/// pairs (in label order): the hash of a label set made of just them.
fn placement_hashes(names: &[String], matchers: &[Matcher]) -> Option<Vec<u64>> {
    if names.is_empty() {
        return None;
    }
    // Allowed values per placement label: one matcher restricting it is
    // enough (a series matches every matcher, so each one's set holds its
    // value).
    let mut allowed: Vec<Vec<String>> = Vec::with_capacity(names.len());
    let mut combos = 1usize;
    for n in names {
        let values = matchers.iter().filter(|m| &m.name == n).find_map(|m| {
            let v: Vec<String> = match m.kind {
                MatchType::Equal => vec![m.value.clone()],
                MatchType::Regex => m.set_matches()?,
                _ => return None,
            };
            // An empty value admits series without the label, placed by
            // their series hash.
            (!v.iter().any(|v| v.is_empty())).then_some(v)
        })?;
        combos = combos.saturating_mul(values.len());
        if combos > MAX_PLACEMENT_KEYS {
            return None;
        }
        allowed.push(values);
    }
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut out = Vec::with_capacity(combos);
    let mut idx = vec![0usize; allowed.len()];
    loop {
        let pairs = names_ref
            .iter()
            .zip(&idx)
            .zip(&allowed)
            .map(|((n, &i), vs)| (*n, vs[i].as_str()));
        out.push(Labels::from_pairs(pairs).hash_for(&names_ref));
        // Next combination (odometer order).
        let mut k = 0;
        loop {
            if k == idx.len() {
                return Some(out);
            }
            idx[k] += 1;
            if idx[k] < allowed[k].len() {
                break;
            }
            idx[k] = 0;
            k += 1;
        }
    }
}

/// Asks, for every shard of `plan`, its candidates in order until one
/// answers, one request per node and round, all before `deadline`. A node
/// that does not answer within `per_request` is given up on like one that
/// failed, so that a hung peer leaves time to fail over.
pub(crate) async fn fan_out(
    ctx: &Arc<ClusterCtx>,
    map: &ShardMap,
    plan: BTreeMap<ShardId, Vec<NodeId>>,
    op: Arc<ReadOp>,
    metrics: &ReadMetrics,
    deadline: tokio::time::Instant,
    per_request: Duration,
) -> FanOut {
    let mut answers = Vec::new();
    let mut missing = BTreeMap::new();
    // Shard → (candidates, index of the one to ask next).
    let mut pending: BTreeMap<ShardId, (Vec<NodeId>, usize)> = BTreeMap::new();
    for (shard, cands) in plan {
        if cands.is_empty() {
            missing.insert(shard, "no up-to-date replica is readable".to_string());
        } else {
            pending.insert(shard, (cands, 0));
        }
    }
    while !pending.is_empty() {
        let mut groups: BTreeMap<NodeId, Vec<ShardId>> = BTreeMap::new();
        for (&shard, (cands, i)) in &pending {
            groups.entry(cands[*i]).or_default().push(shard);
        }
        let calls = groups.into_iter().map(|(node, shards)| {
            let op = Arc::clone(&op);
            async move {
                let started = Instant::now();
                let until = deadline.min(tokio::time::Instant::now() + per_request);
                let res =
                    match tokio::time::timeout_at(until, ask_node(ctx, map, node, &shards, &op))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(format!(
                            "node {node}: no answer within {}ms",
                            started.elapsed().as_millis()
                        )),
                    };
                metrics.observe(node, op.rpc(), started.elapsed(), res.is_ok());
                (node, shards, res)
            }
        });
        for (node, shards, res) in futures_util::future::join_all(calls).await {
            match res {
                Ok(a) => {
                    answers.push(a);
                    for s in shards {
                        pending.remove(&s);
                    }
                }
                Err(error) => {
                    // Per read, so not a warning: a node down would flood the
                    // log; pharos_cluster_read_rpc_failures counts them.
                    tracing::debug!(node, %error, shards = shards.len(), "fan-out read failed");
                    for s in shards {
                        let Some((cands, i)) = pending.get_mut(&s) else {
                            continue;
                        };
                        *i += 1;
                        if *i >= cands.len() || tokio::time::Instant::now() >= deadline {
                            pending.remove(&s);
                            missing.insert(s, error.clone());
                        } else {
                            metrics.failovers.inc();
                        }
                    }
                }
            }
        }
    }
    FanOut { answers, missing }
}

/// One request to one node (this node reads its own `Db`) for `shards`.
async fn ask_node(
    ctx: &Arc<ClusterCtx>,
    map: &ShardMap,
    node: NodeId,
    shards: &[ShardId],
    op: &Arc<ReadOp>,
) -> Result<Answer, String> {
    let sel = ShardSel::new(map, shards);
    if node == ctx.node_id {
        let op = Arc::clone(op);
        return on_db(&ctx.db, move |db| ask_local(db, &op, sel.as_ref()))
            .await
            .map_err(|s| format!("node {node} (local): {}", s.message()));
    }
    let peer_err = |e: ClusterError| e.to_string();
    let status_err = |s: Status| {
        let addr = ctx.peers.addr(node).unwrap_or_default();
        ClusterError::Peer {
            node,
            addr,
            message: format!("{:?}: {}", s.code(), s.message()),
        }
        .to_string()
    };
    let mut client = ctx.peers.replica(node).map_err(peer_err)?;
    let filter = ShardSel::to_proto(sel.as_ref());
    match op.as_ref() {
        ReadOp::Select {
            mint,
            maxt,
            matchers,
            hints,
        } => {
            let req = SelectRequest {
                mint: *mint,
                maxt: *maxt,
                matchers: matchers_to_proto(matchers),
                filter,
                hints: hints_to_proto(hints.as_ref()),
            };
            let mut stream = client.select(req).await.map_err(status_err)?.into_inner();
            let mut out: Vec<Series> = Vec::new();
            while let Some(reply) = stream.message().await.map_err(status_err)? {
                for sc in reply.series {
                    let s = series_from_proto(sc).map_err(|e| format!("node {node}: {e}"))?;
                    if out.last().is_some_and(|p| p.labels >= s.labels) {
                        return Err(format!(
                            "node {node}: series {} out of label order",
                            s.labels
                        ));
                    }
                    out.push(s);
                }
            }
            Ok(Answer::Series(out))
        }
        ReadOp::LabelNames {
            mint,
            maxt,
            matchers,
        } => {
            let req = LabelsRequest {
                name: String::new(),
                mint: *mint,
                maxt: *maxt,
                matchers: matchers_to_proto(matchers),
                filter,
            };
            let r = client.label_names(req).await.map_err(status_err)?;
            Ok(Answer::Strings(r.into_inner().values))
        }
        ReadOp::LabelValues {
            name,
            mint,
            maxt,
            matchers,
        } => {
            let req = LabelsRequest {
                name: name.clone(),
                mint: *mint,
                maxt: *maxt,
                matchers: matchers_to_proto(matchers),
                filter,
            };
            let r = client.label_values(req).await.map_err(status_err)?;
            Ok(Answer::Strings(r.into_inner().values))
        }
    }
}

fn ask_local(db: &Db, op: &ReadOp, sel: Option<&ShardSel>) -> Result<Answer, StorageError> {
    Ok(match op {
        ReadOp::Select {
            mint,
            maxt,
            matchers,
            hints,
        } => {
            let mut s = Querier::select(db, *mint, *maxt, matchers, hints.as_ref())?;
            ShardSel::retain(sel, &mut s);
            Answer::Series(s)
        }
        ReadOp::LabelNames {
            mint,
            maxt,
            matchers,
        } => Answer::Strings(Querier::label_names(db, *mint, *maxt, matchers)?),
        ReadOp::LabelValues {
            name,
            mint,
            maxt,
            matchers,
        } => Answer::Strings(Querier::label_values(db, name, *mint, *maxt, matchers)?),
    })
}

// ---------------------------------------------------------------------------
// Coordinator side: the Queryable

/// The cluster's [`Queryable`]: reads one up-to-date replica per needed
/// shard (see the module docs) and merges. Its methods block: call them
/// from a blocking thread, never from a Tokio worker. Cloning is cheap and
/// shares the metrics (e.g. `q.clone().allow_partial()` for a request that
/// accepts partial responses).
#[derive(Clone)]
pub struct FanoutQueryable {
    ctx: Arc<ClusterCtx>,
    metrics: Arc<ReadMetrics>,
    partial: bool,
    timeout: Duration,
}

impl FanoutQueryable {
    /// A fan-out over `ctx` with its own (unregistered) metrics.
    pub fn new(ctx: Arc<ClusterCtx>) -> Self {
        Self::with_metrics(ctx, Arc::new(ReadMetrics::default()))
    }

    /// A fan-out recording into `metrics` (registered by the caller).
    pub fn with_metrics(ctx: Arc<ClusterCtx>, metrics: Arc<ReadMetrics>) -> Self {
        FanoutQueryable {
            ctx,
            metrics,
            partial: false,
            timeout: RPC_TIMEOUT,
        }
    }

    /// Answers from the shards that could be read when some cannot, with a
    /// warning naming the others (see [`Queryable::select_with_warnings`]).
    pub fn allow_partial(mut self) -> Self {
        self.partial = true;
        self
    }

    /// Overrides the deadline of one read (default [`RPC_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn metrics(&self) -> &Arc<ReadMetrics> {
        &self.metrics
    }

    fn run(&self, op: ReadOp, matchers: &[Matcher]) -> Result<FanOut, QueryError> {
        let state = self.ctx.meta.state();
        let map = state
            .shard_map
            .as_ref()
            .ok_or_else(|| QueryError::Storage(ClusterError::NoShardMap.to_string()))?;
        let shards = needed_shards(map, matchers);
        self.metrics.shards_asked.inc_by(shards.len() as u64);
        let plan: BTreeMap<ShardId, Vec<NodeId>> = shards
            .into_iter()
            .map(|s| {
                let cands = map
                    .assignment(s)
                    .map(|a| read_candidates(&self.ctx, &state, a))
                    .unwrap_or_default();
                (s, cands)
            })
            .collect();
        let ctx = &self.ctx;
        let op = Arc::new(op);
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Half the deadline per node: a hung replica leaves time to ask the
        // next one.
        let per_request = self.timeout / 2;
        let out = ctx.runtime.block_on(fan_out(
            ctx,
            map,
            plan,
            op,
            &self.metrics,
            deadline,
            per_request,
        ));
        if !out.missing.is_empty() {
            self.metrics.incomplete_reads.inc();
        }
        Ok(out)
    }

    fn unavailable(&self, out: &FanOut) -> QueryError {
        QueryError::Storage(format!(
            "cannot read {}: no up-to-date replica answered",
            out.describe_missing()
        ))
    }
}

impl Queryable for FanoutQueryable {
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, QueryError> {
        // No warning channel here: missing shards always fail the read.
        let op = ReadOp::Select {
            mint,
            maxt,
            matchers: matchers.to_vec(),
            hints: hints.cloned(),
        };
        let out = self.run(op, matchers)?;
        if !out.missing.is_empty() {
            return Err(self.unavailable(&out));
        }
        Ok(merge_series_sets(out.series_sets()))
    }

    fn select_with_warnings(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<(Vec<Series>, Vec<String>), QueryError> {
        let op = ReadOp::Select {
            mint,
            maxt,
            matchers: matchers.to_vec(),
            hints: hints.cloned(),
        };
        let out = self.run(op, matchers)?;
        let mut warnings = Vec::new();
        if !out.missing.is_empty() {
            if !self.partial {
                return Err(self.unavailable(&out));
            }
            warnings.push(format!(
                "partial response: could not read {}",
                out.describe_missing()
            ));
        }
        Ok((merge_series_sets(out.series_sets()), warnings))
    }

    fn label_names(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, QueryError> {
        let op = ReadOp::LabelNames {
            mint,
            maxt,
            matchers: matchers.to_vec(),
        };
        let out = self.run(op, matchers)?;
        self.strings(out)
    }

    fn label_values(
        &self,
        name: &str,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, QueryError> {
        let op = ReadOp::LabelValues {
            name: name.to_string(),
            mint,
            maxt,
            matchers: matchers.to_vec(),
        };
        let out = self.run(op, matchers)?;
        self.strings(out)
    }
}

impl FanoutQueryable {
    fn strings(&self, out: FanOut) -> Result<Vec<String>, QueryError> {
        if !out.missing.is_empty() {
            if !self.partial {
                return Err(self.unavailable(&out));
            }
            // The label API has no warning channel; the caller asked for
            // what can be read.
            tracing::warn!(missing = %out.describe_missing(), "partial label answer");
        }
        Ok(merge_strings(out.string_lists()))
    }
}

/// Shards (sorted) that `node` holds an up-to-date replica of.
pub(crate) fn shards_held(map: &ShardMap, node: NodeId) -> BTreeSet<ShardId> {
    map.assignments
        .iter()
        .enumerate()
        .filter(|(_, a)| a.replicas.contains(&node))
        .map(|(i, _)| i as ShardId)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
