//! Hinted handoff: samples an acknowledged write could not deliver to one of
//! its replicas (a slow, restarting or dead node), kept in memory and
//! re-sent in the background until that replica has them.
//!
//! Owns: one bounded queue per peer and the task that drains it. Must not:
//! decide whether a write is acknowledged (the coordinator in
//! [`super::write`] does, before anything is queued here), or persist
//! anything.
//!
//! Guarantees and limits:
//! - A queue holds at most `max_samples_per_peer` samples; past that the
//!   oldest hints are dropped, counted in
//!   `pharos_cluster_write_hints_dropped_total` and logged once per
//!   overflow episode.
//! - Hints live only in the coordinator's memory: if the coordinator itself
//!   dies, they are lost. The replica then relies on catching up from its
//!   peers after its restart (the "read" side's catch-up, which pulls recent
//!   samples from another up-to-date replica of each of its shards).
//! - A hint is re-routed at delivery with the shard's current epoch; a hint
//!   for a shard the peer no longer holds is discarded (counted as dropped),
//!   since the shard's current replicas got the samples from the write.
//! - Delivery retries with exponential backoff (`INITIAL_BACKOFF` doubling
//!   to `MAX_BACKOFF`) until the peer accepts the samples or leaves the
//!   membership. Samples the peer refuses one by one (for instance older
//!   than its out-of-order window) count as delivered: re-sending cannot
//!   change that answer.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pharos_meta::types::{NodeId, ShardId};
use pharos_proto::cluster::{SeriesSamples, ShardEpoch, WriteRequest};

use super::write::{send_to, wait_for_epochs, SendError, WriteMetrics};
use super::{ClusterCtx, ClusterError};

/// Default bound of one peer's queue, in samples (~16 bytes of sample plus
/// the series' labels each).
pub const DEFAULT_MAX_SAMPLES_PER_PEER: usize = 1_000_000;

/// Samples sent per delivery request.
const DELIVERY_BATCH: usize = 50_000;

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The samples of one shard a peer missed.
#[derive(Debug, Clone)]
pub struct Hint {
    pub shard: ShardId,
    pub series: Vec<SeriesSamples>,
    /// Number of samples in `series`.
    pub samples: usize,
}

impl Hint {
    pub fn new(shard: ShardId, series: Vec<SeriesSamples>) -> Hint {
        let samples = series.iter().map(|s| s.timestamps.len()).sum();
        Hint {
            shard,
            series,
            samples,
        }
    }
}

#[derive(Default)]
struct PeerQueue {
    hints: VecDeque<Hint>,
    /// Samples in `hints`.
    queued: usize,
    /// Samples taken by the delivery task and not yet settled.
    in_flight: usize,
    /// Whether a delivery task runs for this peer.
    running: bool,
    /// Set on the first drop of an overflow episode (for one warning).
    dropping: bool,
}

/// The hint queues of one coordinator, one per peer.
pub struct Handoff {
    ctx: Arc<ClusterCtx>,
    metrics: Arc<WriteMetrics>,
    max_samples_per_peer: usize,
    queues: Mutex<HashMap<NodeId, PeerQueue>>,
}

impl Handoff {
    pub fn new(
        ctx: Arc<ClusterCtx>,
        metrics: Arc<WriteMetrics>,
        max_samples_per_peer: usize,
    ) -> Arc<Handoff> {
        Arc::new(Handoff {
            ctx,
            metrics,
            max_samples_per_peer,
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Samples waiting for (or being delivered to) `node`.
    pub fn pending(&self, node: NodeId) -> usize {
        self.queues
            .lock()
            .get(&node)
            .map_or(0, |q| q.queued + q.in_flight)
    }

    /// Samples waiting for every peer.
    pub fn pending_total(&self) -> usize {
        self.queues
            .lock()
            .values()
            .map(|q| q.queued + q.in_flight)
            .sum()
    }

    /// Queues `hint` for `node`, dropping the oldest hints past the bound,
    /// and starts the peer's delivery task if it is not running.
    pub fn enqueue(self: &Arc<Self>, node: NodeId, hint: Hint) {
        if hint.samples == 0 {
            return;
        }
        let mut queues = self.queues.lock();
        let q = queues.entry(node).or_default();
        let mut dropped = 0usize;
        if hint.samples > self.max_samples_per_peer {
            dropped += hint.samples;
        } else {
            while q.queued + q.in_flight + hint.samples > self.max_samples_per_peer {
                let Some(old) = q.hints.pop_front() else {
                    break;
                };
                q.queued -= old.samples;
                dropped += old.samples;
            }
            if q.queued + q.in_flight + hint.samples <= self.max_samples_per_peer {
                q.queued += hint.samples;
                self.metrics.hints_queued.inc_by(hint.samples as u64);
                self.metrics.hints_pending.inc_by(hint.samples as i64);
                q.hints.push_back(hint);
            } else {
                dropped += hint.samples;
            }
        }
        if dropped > 0 {
            self.count_dropped(node, q, dropped, "queue full");
        }
        if !q.running && !q.hints.is_empty() {
            q.running = true;
            let this = Arc::clone(self);
            self.ctx
                .runtime
                .spawn(async move { this.deliver(node).await });
        }
    }

    fn count_dropped(&self, node: NodeId, q: &mut PeerQueue, samples: usize, why: &str) {
        self.metrics.hints_dropped.inc_by(samples as u64);
        if !q.dropping {
            q.dropping = true;
            tracing::warn!(
                peer = node,
                samples,
                reason = why,
                bound = self.max_samples_per_peer,
                "dropping hinted-handoff samples; the replica will miss them unless it catches up from its peers"
            );
        }
    }

    /// Takes up to [`DELIVERY_BATCH`] samples from the front of `node`'s
    /// queue; `None` (and the task marked stopped) when it is empty.
    fn take(&self, node: NodeId) -> Option<Vec<Hint>> {
        let mut queues = self.queues.lock();
        let q = queues.get_mut(&node)?;
        if q.hints.is_empty() {
            q.running = false;
            return None;
        }
        let mut out = Vec::new();
        let mut n = 0;
        while let Some(h) = q.hints.front() {
            if n > 0 && n + h.samples > DELIVERY_BATCH {
                break;
            }
            n += h.samples;
            if let Some(h) = q.hints.pop_front() {
                out.push(h);
            }
        }
        q.queued -= n;
        q.in_flight += n;
        Some(out)
    }

    /// Settles a taken batch: `delivered` samples leave the queue for good,
    /// `back` goes back to the front (oldest first) to be retried.
    fn settle(
        &self,
        node: NodeId,
        taken: usize,
        delivered: usize,
        discarded: usize,
        back: Vec<Hint>,
    ) {
        let mut queues = self.queues.lock();
        let Some(q) = queues.get_mut(&node) else {
            return;
        };
        q.in_flight -= taken;
        let back_samples: usize = back.iter().map(|h| h.samples).sum();
        for h in back.into_iter().rev() {
            q.hints.push_front(h);
        }
        q.queued += back_samples;
        let gone = delivered + discarded;
        self.metrics.hints_pending.dec_by(gone as i64);
        if delivered > 0 {
            self.metrics.hints_delivered.inc_by(delivered as u64);
            q.dropping = false;
        }
        if discarded > 0 {
            self.metrics.hints_dropped.inc_by(discarded as u64);
        }
    }

    /// Forgets every hint of `node` (it left the membership).
    fn forget(&self, node: NodeId) {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.remove(&node) {
            let n = q.queued + q.in_flight;
            self.metrics.hints_pending.dec_by(n as i64);
            self.metrics.hints_dropped.inc_by(n as u64);
            tracing::warn!(
                peer = node,
                samples = n,
                "dropping hinted-handoff samples of a node that left the cluster"
            );
        }
    }

    /// The delivery loop of one peer; ends when its queue is empty.
    async fn deliver(self: Arc<Self>, node: NodeId) {
        let mut backoff = INITIAL_BACKOFF;
        while let Some(batch) = self.take(node) {
            let taken: usize = batch.iter().map(|h| h.samples).sum();
            match self.deliver_batch(node, batch).await {
                Delivery::Done {
                    delivered,
                    discarded,
                } => {
                    self.settle(node, taken, delivered, discarded, Vec::new());
                    backoff = INITIAL_BACKOFF;
                }
                Delivery::Retry {
                    discarded,
                    back,
                    error,
                } => {
                    tracing::debug!(peer = node, %error, ?backoff, "hinted handoff: delivery failed");
                    self.settle(node, taken, 0, discarded, back);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Delivery::Gone => {
                    {
                        let mut queues = self.queues.lock();
                        if let Some(q) = queues.get_mut(&node) {
                            q.in_flight -= taken;
                        }
                    }
                    self.metrics.hints_pending.dec_by(taken as i64);
                    self.metrics.hints_dropped.inc_by(taken as u64);
                    self.forget(node);
                    return;
                }
            }
        }
    }

    /// Sends one batch of hints with the shards' current epochs.
    async fn deliver_batch(&self, node: NodeId, batch: Vec<Hint>) -> Delivery {
        let map = match self.ctx.shard_map() {
            Ok(m) => m,
            Err(e) => {
                return Delivery::Retry {
                    discarded: 0,
                    back: batch,
                    error: e.to_string(),
                }
            }
        };
        // Shards the peer no longer holds: their current replicas have the
        // samples from the acknowledged write.
        let (keep, obsolete): (Vec<Hint>, Vec<Hint>) = batch
            .into_iter()
            .partition(|h| map.assignment(h.shard).is_some_and(|a| a.holds(node)));
        let discarded: usize = obsolete.iter().map(|h| h.samples).sum();
        if keep.is_empty() {
            return Delivery::Done {
                delivered: 0,
                discarded,
            };
        }
        let shards: BTreeSet<ShardId> = keep.iter().map(|h| h.shard).collect();
        let req = WriteRequest {
            from_node: self.ctx.node_id,
            shards: shards
                .iter()
                .filter_map(|s| {
                    map.assignment(*s).map(|a| ShardEpoch {
                        shard: *s,
                        epoch: a.epoch,
                    })
                })
                .collect(),
            series: keep.iter().flat_map(|h| h.series.iter().cloned()).collect(),
        };
        let samples: usize = keep.iter().map(|h| h.samples).sum();
        match send_to(&self.ctx, &self.metrics, node, req).await {
            Ok(reply) if reply.redirects.is_empty() => {
                if !reply.rejected.is_empty() {
                    tracing::debug!(
                        peer = node,
                        rejected = reply.rejected.len(),
                        "hinted handoff: the replica refused some samples"
                    );
                }
                Delivery::Done {
                    delivered: samples,
                    discarded,
                }
            }
            Ok(reply) => {
                // Our map is behind the peer's: wait for it, then retry
                // with the new epochs (or discard what moved away).
                let want: Vec<(ShardId, u64)> =
                    reply.redirects.iter().map(|r| (r.shard, r.epoch)).collect();
                wait_for_epochs(&self.ctx, &want, super::write::MAP_CATCH_UP).await;
                Delivery::Retry {
                    discarded,
                    back: keep,
                    error: format!("redirected for {} shards", reply.redirects.len()),
                }
            }
            Err(SendError::Cluster(ClusterError::UnknownNode(_))) => Delivery::Gone,
            Err(e) => Delivery::Retry {
                discarded,
                back: keep,
                error: e.to_string(),
            },
        }
    }
}

enum Delivery {
    Done {
        delivered: usize,
        discarded: usize,
    },
    Retry {
        discarded: usize,
        back: Vec<Hint>,
        error: String,
    },
    /// The peer left the membership.
    Gone,
}
