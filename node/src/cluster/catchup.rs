//! Catch-up of a restarted replica: how a node that was down gets the
//! samples written to its shards while it was away.
//!
//! Owns: [`begin`] / [`catch_up_from`] (run once at start in cluster
//! mode; [`catch_up`] does both), the [`ClusterCtx::catching_up`] flag's
//! lifetime, and [`pull_shards`] (filling this node's replicas of some
//! shards from their other replicas, also usable for a replica being
//! added). Must not: change the shard map, or write any replica but this
//! node's own (it only *reads* peers, through the fan-out's `Select`).
//!
//! # Design
//!
//! While a node is down, writes to its shards are acknowledged by the
//! majority of the other replicas (see [`super::write`]); the node misses
//! them. When it comes back:
//!
//! 1. It replays its own WAL on open (`Db::open`): everything it had
//!    acknowledged before the crash is back (per its fsync policy).
//! 2. If its storage came back with data (a restart; a fresh node has
//!    nothing to catch up and skips all this), [`begin`] — called before
//!    the node serves anything — records the newest sample time (the
//!    [`RestartPoint`]) and sets `catching_up`. From then on the node
//!    refuses `Select` and label RPCs with `UNAVAILABLE` (peers fail over
//!    to another replica) and its own fan-out does not read its local
//!    data. It still accepts replicated writes, so nothing written from
//!    now on is missed.
//! 3. For each shard it holds as an up-to-date replica with at least one
//!    other up-to-date replica, it pulls through the fan-out's `Select` (one
//!    request per source node per round of [`SHARDS_PER_ROUND`] shards, with
//!    a shard filter; a failed source is retried on the shard's next
//!    replica) every series with samples in `[newest − margin, +∞)`, where
//!    `newest` is the newest sample time it holds after the replay (head or
//!    blocks) and the margin ([`DEFAULT_MARGIN_MS`], 5 minutes) covers what
//!    an `Interval` fsync policy may have lost in the crash and writes that
//!    reached the other replicas slightly before its last one. There is no
//!    upper bound: client clocks may be ahead of ours, and samples newer
//!    than the catch-up's start are simply found already present.
//! 4. It compares each pulled series with its own copy over the same range
//!    and appends, through its own `Db` (WAL first, as any write), only the
//!    samples whose timestamps it lacks; identical samples are counted as
//!    already present, never re-logged. Samples are appended series by
//!    series in time order.
//! 5. It clears `catching_up` when every shard is done, or when the time
//!    limit ([`CatchUpOptions::max_duration`]) is reached, with a warning
//!    naming the shards left behind (they stay readable from the other
//!    replicas, but this replica keeps the gap).
//!
//! Limits (documented in the issue note):
//! - A pulled sample older than this node's out-of-order window, counted
//!   from its newest sample (cluster mode enables a window so that samples
//!   written while it was down are accepted after the live writes that
//!   arrive during the catch-up), is refused by the head: it is counted in
//!   [`CatchUpReport::too_old`] and logged, and that replica does not get
//!   it. The other replicas keep it, but a read answered by this replica
//!   (this node's own queries prefer local data) misses it. With the
//!   default one-hour window this concerns downtimes of about an hour or
//!   more.
//! - Samples older than `newest − margin` that the node missed (e.g. a
//!   sample for an old timestamp written while it was down) are not looked
//!   for.
//! - Shards with no other up-to-date replica (replication factor 1) have no
//!   source: nothing is pulled for them.
//! - A sample whose timestamp this node holds with another value keeps the
//!   local value (counted as already present).
//! - A node that had no data when it went down is "fresh" on restart and
//!   pulls nothing; one whose restart point was taken after it started
//!   accepting writes ([`catch_up`] called late) starts looking too late
//!   and may keep a gap.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pharos_meta::types::{NodeId, ShardId, ShardMap};
use pharos_storage::chunk::collect_samples;
use pharos_storage::db::Db;
use pharos_storage::labels::{Labels, MatchType, Matcher};
use pharos_storage::querier::Querier;
use pharos_storage::series::Series;
use pharos_storage::StorageError;

use super::read::{fan_out, peer_candidates, shards_held, Answer, ReadMetrics, ReadOp, ShardSel};
use super::{shard_of_labels, ClusterCtx, ClusterError};

/// How far before its newest sample a restarted node looks for samples it
/// missed (ms).
pub const DEFAULT_MARGIN_MS: i64 = 5 * 60 * 1000;

/// Default shards pulled per round: bounds the memory of one round (a
/// quarter of the recent data with the default 256 shards), while each
/// round costs one full index scan on the sources and here.
pub const SHARDS_PER_ROUND: usize = 64;

/// Samples per append batch.
const APPEND_BATCH: usize = 10_000;

/// How long to wait for the first shard map after a start.
const MAP_WAIT: Duration = Duration::from_secs(30);

/// Settings of a catch-up.
#[derive(Debug, Clone)]
pub struct CatchUpOptions {
    /// See [`DEFAULT_MARGIN_MS`].
    pub margin_ms: i64,
    /// After this long the node serves again, with a warning naming the
    /// shards not caught up.
    pub max_duration: Duration,
    /// A source that has not answered a pull within this long is given up
    /// on, and its shards are pulled from their next replica.
    pub request_timeout: Duration,
    /// See [`SHARDS_PER_ROUND`].
    pub shards_per_round: usize,
}

impl Default for CatchUpOptions {
    fn default() -> Self {
        CatchUpOptions {
            margin_ms: DEFAULT_MARGIN_MS,
            max_duration: Duration::from_secs(10 * 60),
            request_timeout: Duration::from_secs(120),
            shards_per_round: SHARDS_PER_ROUND,
        }
    }
}

/// What a catch-up did.
#[derive(Debug, Clone, Default)]
pub struct CatchUpReport {
    /// False for a fresh node (nothing stored): nothing was pulled.
    pub restarted: bool,
    /// Start of the range pulled (ms).
    pub from: i64,
    /// Shards pulled (held here with another up-to-date replica).
    pub shards: usize,
    /// Samples this node lacked and appended.
    pub samples_appended: u64,
    /// Pulled samples this node already held (same timestamp).
    pub already_present: u64,
    /// Pulled samples the head refused as out of order or too old (outside
    /// the out-of-order window): this replica does not get them.
    pub too_old: u64,
    /// Pulled samples refused for another reason (logged).
    pub rejected_other: u64,
    /// Shards not caught up, with the last error.
    pub failed_shards: BTreeMap<ShardId, String>,
    pub elapsed: Duration,
}

/// Clears `catching_up` when the catch-up ends, however it ends.
struct Flag<'a>(&'a ClusterCtx);

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.0.catching_up.store(false, Ordering::Release);
    }
}

/// The newest sample time this node holds (head or blocks), `None` when it
/// holds nothing.
fn newest_local_time(db: &Db) -> Option<i64> {
    let head = db.head().max_time();
    // A block's max time is exclusive.
    let blocks = db.blocks().iter().map(|b| b.max_time() - 1).max();
    let newest = blocks.map_or(head, |b| b.max(head));
    (newest != i64::MIN).then_some(newest)
}

/// Where a restarted node's catch-up starts looking: the newest sample it
/// held when it came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPoint {
    pub newest: i64,
}

/// Whether this node's storage came back with data on open (WAL samples
/// replayed or blocks loaded): a restart, as opposed to a fresh node that
/// may already have received writes.
fn restarted(db: &Db) -> bool {
    let r = db.open_report();
    r.samples_applied > 0 || r.blocks > 0
}

/// On a restarted node, sets `catching_up` and returns the restart point;
/// `None` (and nothing set) on a fresh node. Call it right after opening
/// storage, before the node serves writes or reads: writes arriving
/// earlier would move the restart point past the gap. Then run
/// [`catch_up_from`] with the point.
pub fn begin(ctx: &ClusterCtx) -> Option<RestartPoint> {
    if !restarted(&ctx.db) {
        return None;
    }
    let newest = newest_local_time(&ctx.db)?;
    ctx.catching_up.store(true, Ordering::Release);
    Some(RestartPoint { newest })
}

/// [`begin`] then [`catch_up_from`], both now, with default settings. On
/// a node that already accepts writes, prefer calling [`begin`] before it
/// does (see there).
pub async fn catch_up(ctx: Arc<ClusterCtx>) -> Result<CatchUpReport, ClusterError> {
    catch_up_with(ctx, CatchUpOptions::default()).await
}

/// [`catch_up`] with explicit settings.
pub async fn catch_up_with(
    ctx: Arc<ClusterCtx>,
    opts: CatchUpOptions,
) -> Result<CatchUpReport, ClusterError> {
    match begin(&ctx) {
        Some(point) => catch_up_from(ctx, point, opts).await,
        None => {
            tracing::info!(node = ctx.node_id, "fresh node: nothing to catch up");
            Ok(CatchUpReport::default())
        }
    }
}

/// Pulls what this node missed while it was down, from `point.newest`
/// minus the margin on; see the module docs. `catching_up` is set for the
/// duration and cleared at the end, however it ends.
#[tracing::instrument(skip_all, fields(node = ctx.node_id))]
pub async fn catch_up_from(
    ctx: Arc<ClusterCtx>,
    point: RestartPoint,
    opts: CatchUpOptions,
) -> Result<CatchUpReport, ClusterError> {
    let started = Instant::now();
    let mut report = CatchUpReport::default();
    ctx.catching_up.store(true, Ordering::Release);
    let _flag = Flag(&ctx);
    report.restarted = true;
    report.from = point.newest.saturating_sub(opts.margin_ms.max(0));

    let map = wait_for_map(&ctx).await?;
    let shards: Vec<ShardId> = shards_held(&map, ctx.node_id).into_iter().collect();
    tracing::info!(
        shards = shards.len(),
        from = report.from,
        "catching up: pulling what this replica missed while it was down"
    );
    let pulled = pull_shards(&ctx, &map, &shards, report.from, &opts).await?;
    report.shards = pulled.shards;
    report.samples_appended = pulled.samples_appended;
    report.already_present = pulled.already_present;
    report.too_old = pulled.too_old;
    report.rejected_other = pulled.rejected_other;
    report.failed_shards = pulled.failed_shards;
    report.elapsed = started.elapsed();
    if report.too_old > 0 {
        tracing::warn!(
            samples = report.too_old,
            "catch-up: samples outside the out-of-order window were not recovered into this replica"
        );
    }
    if report.failed_shards.is_empty() {
        tracing::info!(
            shards = report.shards,
            samples_appended = report.samples_appended,
            already_present = report.already_present,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "catch-up done"
        );
    } else {
        let shards: Vec<String> = report.failed_shards.keys().map(|s| s.to_string()).collect();
        tracing::warn!(
            shards = %shards.join(", "),
            last_error = %report.failed_shards.values().last().cloned().unwrap_or_default(),
            "catch-up incomplete: serving again; these shards keep the gap on this replica"
        );
    }
    Ok(report)
}

/// Pulls into this node, for each of `shards` that has an up-to-date
/// replica other than this node, the samples in `[from, +∞)` it lacks (the
/// steps 3 and 4 of the module docs), within `opts.max_duration`. It does
/// not touch `catching_up`: a restarted replica sets it ([`catch_up`]); a
/// pending replica being filled is not read anyway. Shards without another
/// replica are skipped (not counted in [`CatchUpReport::shards`]).
pub async fn pull_shards(
    ctx: &Arc<ClusterCtx>,
    map: &ShardMap,
    shards: &[ShardId],
    from: i64,
    opts: &CatchUpOptions,
) -> Result<CatchUpReport, ClusterError> {
    let started = Instant::now();
    let mut report = CatchUpReport {
        from,
        ..CatchUpReport::default()
    };
    let state = ctx.meta.state();
    let mut plan: Vec<(ShardId, Vec<NodeId>)> = Vec::new();
    for &shard in shards {
        let Some(a) = map.assignment(shard) else {
            continue;
        };
        let sources = peer_candidates(ctx.node_id, &state, a);
        if !sources.is_empty() {
            plan.push((shard, sources));
        }
    }
    report.shards = plan.len();

    let deadline = tokio::time::Instant::now() + opts.max_duration;
    let metrics = ReadMetrics::default();
    let op = Arc::new(ReadOp::Select {
        mint: from,
        maxt: i64::MAX,
        matchers: vec![all_series()],
        hints: None,
    });
    let mut done = 0usize;
    for round in plan.chunks(opts.shards_per_round.max(1)) {
        if tokio::time::Instant::now() >= deadline {
            for (s, _) in round {
                report
                    .failed_shards
                    .insert(*s, "catch-up time limit reached".to_string());
            }
            continue;
        }
        let round_plan: BTreeMap<ShardId, Vec<NodeId>> = round.iter().cloned().collect();
        let round_shards: Vec<ShardId> = round_plan.keys().copied().collect();
        let out = fan_out(
            ctx,
            map,
            round_plan,
            Arc::clone(&op),
            &metrics,
            deadline,
            opts.request_timeout,
        )
        .await;
        let mut failed = out.missing;
        let mut pulled: Vec<Vec<Series>> = Vec::new();
        for a in out.answers {
            if let Answer::Series(s) = a {
                pulled.push(s);
            }
        }
        let got = apply_round(ctx, map, &round_shards, from, pulled, &mut failed).await?;
        report.samples_appended += got.appended;
        report.already_present += got.present;
        report.too_old += got.too_old;
        report.rejected_other += got.other;
        done += round_shards.len() - failed.len();
        report.failed_shards.append(&mut failed);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        tracing::info!(
            shards_done = done,
            shards = report.shards,
            samples_appended = report.samples_appended,
            already_present = report.already_present,
            rate = (report.samples_appended as f64 / secs) as u64,
            "catch-up progress"
        );
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Every series (`__name__=~".*"` selects all of them without an index
/// lookup).
fn all_series() -> Matcher {
    Matcher::new(MatchType::Regex, "__name__", ".*").unwrap_or_else(|_| Matcher::equal("", ""))
}

async fn wait_for_map(ctx: &ClusterCtx) -> Result<ShardMap, ClusterError> {
    let mut rx = ctx.meta.watch();
    let wait = async {
        loop {
            if let Some(m) = ctx.meta.shard_map() {
                return Some(m);
            }
            if rx.changed().await.is_err() {
                return ctx.meta.shard_map();
            }
        }
    };
    tokio::time::timeout(MAP_WAIT, wait)
        .await
        .ok()
        .flatten()
        .ok_or(ClusterError::NoShardMap)
}

#[derive(Default)]
struct Tally {
    appended: u64,
    present: u64,
    too_old: u64,
    other: u64,
}

/// Appends the samples of `pulled` this node lacks over `[from, +∞)`.
/// Series of shards in `failed` are left alone; a series whose chunks do
/// not decode fails its shard.
async fn apply_round(
    ctx: &Arc<ClusterCtx>,
    map: &ShardMap,
    shards: &[ShardId],
    from: i64,
    pulled: Vec<Vec<Series>>,
    failed: &mut BTreeMap<ShardId, String>,
) -> Result<Tally, ClusterError> {
    let db = Arc::clone(&ctx.db);
    let map = map.clone();
    let shards = shards.to_vec();
    let mut failed_in = std::mem::take(failed);
    let (tally, failed_out) = tokio::task::spawn_blocking(move || {
        let res = apply_round_blocking(&db, &map, &shards, from, pulled, &mut failed_in);
        (res, failed_in)
    })
    .await
    .map_err(|e| ClusterError::Unavailable(format!("catch-up task failed: {e}")))?;
    *failed = failed_out;
    tally
}

fn apply_round_blocking(
    db: &Db,
    map: &ShardMap,
    shards: &[ShardId],
    from: i64,
    pulled: Vec<Vec<Series>>,
    failed: &mut BTreeMap<ShardId, String>,
) -> Result<Tally, ClusterError> {
    let sel = ShardSel::new(map, shards);
    let mut local = Querier::select(db, from, i64::MAX, &[all_series()], None)?;
    ShardSel::retain(sel.as_ref(), &mut local);
    let local: BTreeMap<Labels, Series> =
        local.into_iter().map(|s| (s.labels.clone(), s)).collect();

    let mut tally = Tally::default();
    let mut batch: Vec<(Labels, i64, f64)> = Vec::new();
    let mut sts: Vec<i64> = Vec::new();
    for s in pulled.into_iter().flatten() {
        let shard = shard_of_labels(&s.labels, map);
        if failed.contains_key(&shard) {
            continue;
        }
        let theirs = match collect_samples(&mut s.iter_range(from, i64::MAX)) {
            Ok(v) => v,
            Err(e) => {
                failed.insert(shard, format!("series {}: {e}", s.labels));
                continue;
            }
        };
        let ours: Vec<i64> = match local.get(&s.labels) {
            Some(l) => match collect_samples(&mut l.iter_range(from, i64::MAX)) {
                Ok(v) => v.into_iter().map(|(t, _)| t).collect(),
                Err(e) => {
                    failed.insert(shard, format!("local series {}: {e}", s.labels));
                    continue;
                }
            },
            None => Vec::new(),
        };
        // Both sorted by time: a merge walk finds the missing timestamps.
        let mut j = 0;
        for (t, v) in theirs {
            while j < ours.len() && ours[j] < t {
                j += 1;
            }
            if ours.get(j) == Some(&t) {
                tally.present += 1;
                continue;
            }
            batch.push((s.labels.clone(), t, v));
            sts.push(s.start_timestamp_at(t));
        }
        if batch.len() >= APPEND_BATCH {
            append(db, &mut batch, &mut sts, &mut tally)?;
        }
    }
    append(db, &mut batch, &mut sts, &mut tally)?;
    Ok(tally)
}

fn append(
    db: &Db,
    batch: &mut Vec<(Labels, i64, f64)>,
    sts: &mut Vec<i64>,
    tally: &mut Tally,
) -> Result<(), ClusterError> {
    if batch.is_empty() {
        return Ok(());
    }
    let stats = if sts.iter().any(|&s| s != 0) {
        db.append_with_st(batch, sts)?
    } else {
        db.append(batch)?
    };
    tally.appended += stats.appended as u64;
    for r in &stats.rejected {
        match &r.error {
            StorageError::OutOfOrderSample { .. } | StorageError::TooOldSample { .. } => {
                tally.too_old += 1;
                if tally.too_old == 1 {
                    tracing::warn!(error = %r.error, "catch-up: sample outside the out-of-order window");
                }
            }
            // A live write gave this timestamp another value meanwhile.
            StorageError::DuplicateSample { .. } => tally.present += 1,
            e => {
                tally.other += 1;
                tracing::warn!(error = %e, "catch-up: sample refused");
            }
        }
    }
    batch.clear();
    sts.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::read::tests::{
        append_to, bounded, decode, reference, samples, test_series, write_placed, T0,
    };
    use crate::cluster::shard_of_labels;
    use crate::cluster::testkit::TestCluster;
    use pharos_meta::MetaClient;

    async fn everything(db: &Arc<Db>) -> Vec<Series> {
        let db = Arc::clone(db);
        tokio::task::spawn_blocking(move || {
            Querier::select(db.as_ref(), i64::MIN, i64::MAX, &[all_series()], None)
        })
        .await
        .expect("task")
        .expect("select")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_replica_pulls_what_it_missed() {
        bounded(async {
            let mut c = TestCluster::start(3, 16, 3).await;
            let series = test_series(15);
            // T0 … T0+285s on every replica.
            let before = samples(&series, T0, 20, 15_000);
            write_placed(&c, &before, &[]).await;
            c.stop(3).await;
            // While node 3 is down: newer samples of the same series, and
            // series it has never seen.
            let mut more = series.clone();
            for i in 0..5 {
                let inst = format!("late{i}:9100");
                more.push(Labels::from_pairs([
                    ("__name__", "up"),
                    ("instance", inst.as_str()),
                    ("job", "late"),
                ]));
            }
            let during = samples(&more, T0 + 300_000, 20, 15_000);
            write_placed(&c, &during, &[]).await;
            c.restart(3).await;
            // Node 1 goes down too: shards whose first source is node 1
            // are pulled from node 2.
            c.stop(1).await;

            let ctx3 = Arc::clone(c.node(3).ctx());
            // Several rounds of 5 shards.
            let opts = CatchUpOptions {
                shards_per_round: 5,
                ..CatchUpOptions::default()
            };
            let report = catch_up_with(Arc::clone(&ctx3), opts)
                .await
                .expect("catch up");
            assert!(report.restarted);
            assert_eq!(report.from, T0 + 285_000 - DEFAULT_MARGIN_MS);
            assert_eq!(report.shards, 16);
            assert!(
                report.failed_shards.is_empty(),
                "{:?}",
                report.failed_shards
            );
            assert_eq!(report.samples_appended, during.len() as u64);
            assert_eq!(report.already_present, before.len() as u64);
            assert_eq!(report.too_old, 0);
            assert!(!ctx3.catching_up.load(Ordering::Acquire));

            // Node 3 holds every sample, each exactly once.
            let all: Vec<_> = before.iter().chain(&during).cloned().collect();
            let (_dir, refdb) = reference(&all).await;
            let got = everything(&ctx3.db).await;
            assert_eq!(decode(&got), decode(&everything(&refdb).await));
            let stored: usize = got
                .iter()
                .flat_map(|s| &s.chunks)
                .map(|c| c.chunk.num_samples())
                .sum();
            assert_eq!(stored, all.len());

            // A second run finds nothing missing: from the newest sample
            // minus the margin, the last sample of `before` and `during`.
            let again = catch_up(Arc::clone(&ctx3)).await.expect("catch up");
            assert_eq!(again.samples_appended, 0);
            assert_eq!(again.already_present, (during.len() + series.len()) as u64);
            drop(ctx3);
            c.stop(2).await;
            c.stop(3).await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn samples_behind_the_out_of_order_window_are_counted_not_recovered() {
        bounded(async {
            let mut c = TestCluster::start(3, 16, 3).await;
            let x = Labels::from_pairs([("__name__", "x"), ("instance", "i"), ("job", "j")]);
            write_placed(&c, &[(x.clone(), T0, 1.0)], &[]).await;
            // Node 3 alone got T0+100s before it stopped.
            append_to(&c.node(3).ctx().db, vec![(x.clone(), T0 + 100_000, 2.0)]).await;
            c.stop(3).await;
            // T0+50s is behind node 3's last sample of x, and the test Db
            // has no out-of-order window.
            let during = [
                (x.clone(), T0 + 50_000, 3.0),
                (x.clone(), T0 + 200_000, 4.0),
            ];
            write_placed(&c, &during, &[]).await;
            c.restart(3).await;
            let ctx3 = Arc::clone(c.node(3).ctx());
            let report = catch_up(Arc::clone(&ctx3)).await.expect("catch up");
            assert_eq!(report.samples_appended, 1);
            assert_eq!(report.too_old, 1);
            assert_eq!(report.already_present, 1);
            let got = decode(&everything(&ctx3.db).await);
            assert_eq!(
                got,
                vec![(x, vec![(T0, 1.0), (T0 + 100_000, 2.0), (T0 + 200_000, 4.0)])]
            );
            drop(ctx3);
            for id in 1..=3 {
                c.stop(id).await;
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pull_shards_copies_whole_shards_from_their_replicas() {
        bounded(async {
            // What a replica being added needs: every sample of its new
            // shards, from the shards' up-to-date replicas.
            let c = TestCluster::start(3, 16, 1).await;
            let batch = samples(&test_series(20), T0, 10, 15_000);
            write_placed(&c, &batch, &[]).await;
            let map = c.meta.shard_map().unwrap();
            let of_node2: Vec<ShardId> = shards_held(&map, 2).into_iter().collect();
            let ctx1 = Arc::clone(c.node(1).ctx());
            let opts = CatchUpOptions::default();
            let r = pull_shards(&ctx1, &map, &of_node2, i64::MIN, &opts)
                .await
                .expect("pull");
            assert_eq!(r.shards, of_node2.len());
            assert!(r.failed_shards.is_empty());
            let mine: Vec<_> = batch
                .iter()
                .filter(|s| {
                    let shard = shard_of_labels(&s.0, &map);
                    of_node2.contains(&shard) || shards_held(&map, 1).contains(&shard)
                })
                .cloned()
                .collect();
            let from_node2 = mine
                .iter()
                .filter(|s| of_node2.contains(&shard_of_labels(&s.0, &map)))
                .count();
            assert!(from_node2 > 0);
            assert_eq!(r.samples_appended, from_node2 as u64);
            let (_dir, refdb) = reference(&mine).await;
            assert_eq!(
                decode(&everything(&ctx1.db).await),
                decode(&everything(&refdb).await)
            );
            drop(ctx1);
            let mut c = c;
            for id in 1..=3 {
                c.stop(id).await;
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fresh_node_skips_the_catch_up() {
        bounded(async {
            let mut c = TestCluster::start(2, 16, 2).await;
            let ctx = Arc::clone(c.node(1).ctx());
            assert_eq!(begin(&ctx), None);
            let report = catch_up(Arc::clone(&ctx)).await.expect("catch up");
            assert!(!report.restarted);
            assert_eq!(report.shards, 0);
            assert!(!ctx.catching_up.load(Ordering::Acquire));
            // Writes before the catch-up do not make it a restart.
            append_to(&ctx.db, samples(&test_series(1), T0, 1, 1)).await;
            assert_eq!(begin(&ctx), None);
            assert!(!catch_up(Arc::clone(&ctx)).await.unwrap().restarted);
            // After a restart, `begin` marks the node as catching up and
            // keeps the newest sample from before any new write.
            drop(ctx);
            c.stop(1).await;
            c.restart(1).await;
            let ctx = Arc::clone(c.node(1).ctx());
            let point = begin(&ctx).expect("a restart");
            assert_eq!(point.newest, T0);
            assert!(ctx.catching_up.load(Ordering::Acquire));
            append_to(&ctx.db, samples(&test_series(1), T0 + 3_600_000, 1, 1)).await;
            let report = catch_up_from(Arc::clone(&ctx), point, CatchUpOptions::default())
                .await
                .expect("catch up");
            assert!(report.restarted);
            assert_eq!(report.from, T0 - DEFAULT_MARGIN_MS);
            assert!(!ctx.catching_up.load(Ordering::Acquire));
            drop(ctx);
            c.stop(1).await;
            c.stop(2).await;
        })
        .await;
    }
}
