//! Tests of [`super`].

use std::future::Future;

use pharos_meta::types::Command;
use pharos_meta::{MemMetaClient, MetaClient};
use pharos_storage::chunk::collect_samples;
use pharos_storage::db::Db;
use pharos_storage::querier::Querier;
use tempfile::TempDir;

use super::*;
use crate::cluster::testkit::TestCluster;
use crate::sink::MetadataStore;

/// Every test finishes within this, whatever happens to the cluster.
const TEST_LIMIT: Duration = Duration::from_secs(90);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test timed out");
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn shutdown(mut c: TestCluster) {
    let ids: Vec<NodeId> = c
        .nodes
        .iter()
        .filter(|n| n.ctx.is_some())
        .map(|n| n.id)
        .collect();
    for id in ids {
        c.stop(id).await;
    }
}

fn series(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "up"),
        ("instance", format!("host-{i}:9100").as_str()),
        ("job", "node"),
    ])
}

/// 40 series (over many shards) with 3 samples each.
fn batch() -> Vec<(Labels, i64, f64)> {
    let mut out = Vec::new();
    for t in 0..3 {
        for i in 0..40 {
            out.push((series(i), 1_000 + t * 1_000, (i * 10) as f64 + t as f64));
        }
    }
    out
}

fn samples_on(ctx: &ClusterCtx, labels: &Labels) -> Vec<(i64, f64)> {
    let ms: Vec<Matcher> = labels.iter().map(|(n, v)| Matcher::equal(n, v)).collect();
    let found = ctx
        .db
        .select(i64::MIN, i64::MAX, &ms, None)
        .expect("select");
    found
        .into_iter()
        .filter(|s| s.labels == *labels)
        .flat_map(|s| collect_samples(&mut s.iter()).expect("decode chunk"))
        .collect()
}

fn expected(batch: &[(Labels, i64, f64)], labels: &Labels) -> Vec<(i64, f64)> {
    batch
        .iter()
        .filter(|(l, _, _)| l == labels)
        .map(|(_, t, v)| (*t, *v))
        .collect()
}

async fn write(
    sink: &Arc<ReplicatingSink>,
    batch: Vec<(Labels, i64, f64)>,
) -> Result<WriteOutcome, SinkError> {
    let sink = Arc::clone(sink);
    tokio::task::spawn_blocking(move || sink.write(&batch))
        .await
        .expect("write task")
}

async fn check_placement(shards: u32, rf: u32) {
    let c = TestCluster::start(3, shards, rf).await;
    let sink = Arc::new(ReplicatingSink::new(Arc::clone(c.node(1).ctx())));
    let b = batch();
    let out = write(&sink, b.clone()).await.expect("write");
    assert_eq!(out.appended, b.len());
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let map = c.meta.shard_map().expect("map");
    for i in 0..40 {
        let l = series(i);
        let a = map
            .assignment(shard_of_labels(&l, &map))
            .expect("assignment");
        for n in &c.nodes {
            let got = samples_on(n.ctx(), &l);
            if a.holds(n.id) {
                assert_eq!(got, expected(&b, &l), "node {} series {l}", n.id);
            } else {
                assert!(got.is_empty(), "node {} holds no replica of {l}", n.id);
            }
        }
    }
    assert_eq!(sink.handoff().pending_total(), 0);
    shutdown(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lands_on_every_replica_of_its_shards_rf3() {
    bounded(check_placement(16, 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lands_on_the_single_replica_of_its_shards_rf1() {
    bounded(check_placement(16, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_acknowledges_and_two_missing_replicas_refuse() {
    bounded(async {
        let mut c = TestCluster::start(3, 16, 3).await;
        let sink = Arc::new(ReplicatingSink::new(Arc::clone(c.node(1).ctx())));
        c.stop(3).await;
        let b = batch();
        let out = write(&sink, b.clone()).await.expect("a majority is up");
        assert_eq!(out.appended, b.len());
        // Node 3's failure may be counted after the write returned.
        eventually("node 3's hints", || sink.handoff().pending(3) == b.len()).await;
        c.stop(2).await;
        let map = c.meta.shard_map().expect("map");
        let shards: BTreeSet<ShardId> =
            b.iter().map(|(l, _, _)| shard_of_labels(l, &map)).collect();
        let first = shards.iter().next().copied().expect("a shard");
        let later: Vec<_> = b
            .iter()
            .map(|(l, t, v)| (l.clone(), t + 10_000, *v))
            .collect();
        match write(&sink, later).await {
            Err(SinkError::Unavailable(msg)) => {
                let n = shards.len();
                assert!(msg.contains(&format!("{n} of {n} shards")), "{msg}");
                assert!(
                    msg.contains(&format!(
                        "shard {first} (1 of 3 replicas appended, 2 needed"
                    )),
                    "{msg}"
                );
                assert!(msg.contains("node 2:") && msg.contains("node 3:"), "{msg}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // Not acknowledged: nothing to hand off for that batch.
        assert_eq!(sink.handoff().pending(3), b.len());
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hinted_handoff_delivers_to_a_restarted_replica() {
    bounded(async {
        let mut c = TestCluster::start(3, 16, 3).await;
        let sink = Arc::new(ReplicatingSink::new(Arc::clone(c.node(1).ctx())));
        c.stop(3).await;
        let b = batch();
        write(&sink, b.clone()).await.expect("a majority is up");
        eventually("node 3's hints", || sink.handoff().pending(3) == b.len()).await;
        c.restart(3).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while sink.handoff().pending(3) > 0 {
            assert!(Instant::now() < deadline, "hints not delivered in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in 0..40 {
            let l = series(i);
            assert_eq!(samples_on(c.node(3).ctx(), &l), expected(&b, &l), "{l}");
        }
        assert_eq!(sink.metrics().hints_delivered.get(), b.len() as u64);
        assert_eq!(sink.metrics().hints_dropped.get(), 0);
        assert_eq!(sink.metrics().hints_pending.get(), 0);
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_neither_delays_the_ack_nor_holds_unbounded_writes() {
    bounded(async {
        let c = TestCluster::start(3, 16, 3).await;
        // Node 3 now lives at an address that accepts connections and
        // never answers.
        let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hole_addr = hole.local_addr().expect("addr");
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = hole.accept().await {
                held.push(conn);
            }
        });
        c.meta
            .add_node(3, hole_addr.to_string())
            .await
            .expect("re-address node 3");
        let sink = Arc::new(
            ReplicatingSink::new(Arc::clone(c.node(1).ctx())).with_max_in_flight_per_peer(2),
        );
        let b = batch();
        for k in 0..5 {
            let shifted: Vec<_> = b
                .iter()
                .map(|(l, t, v)| (l.clone(), t + k * 10_000, *v))
                .collect();
            let started = Instant::now();
            let out = write(&sink, shifted).await.expect("nodes 1 and 2 answer");
            assert_eq!(out.appended, b.len());
            assert!(
                started.elapsed() < RPC_TIMEOUT / 4,
                "acknowledged without waiting for node 3"
            );
        }
        assert_eq!(sink.in_flight(3), 2, "two writes wait for node 3");
        assert_eq!(
            sink.handoff().pending(3),
            3 * b.len(),
            "the other three went to its hint queue"
        );
        let overloaded = sink
            .metrics()
            .rpc_failures
            .get_or_create(&vec![
                ("peer", "3".to_string()),
                ("reason", "overloaded".to_string()),
            ])
            .get();
        assert_eq!(overloaded, 3);
        accept.abort();
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_for_a_shard_that_moved_away_are_discarded() {
    bounded(async {
        let mut c = TestCluster::start(3, 16, 3).await;
        let map = c.meta.shard_map().expect("map");
        let sink = Arc::new(ReplicatingSink::new(Arc::clone(c.node(1).ctx())));
        let moved = series_in(&map, 3);
        let kept = series_in(&map, 11);
        c.stop(3).await;
        let b = vec![(moved.clone(), 1_000, 1.0), (kept.clone(), 1_000, 2.0)];
        write(&sink, b.clone()).await.expect("a majority is up");
        eventually("node 3's hints", || sink.handoff().pending(3) == 2).await;
        let a = map.assignment(3).expect("shard 3").clone();
        c.meta
            .propose(Command::SetShardReplicas {
                shard: 3,
                replicas: a.replicas.iter().copied().filter(|n| *n != 3).collect(),
                expected_epoch: a.epoch,
            })
            .await
            .expect("move shard 3 off node 3");
        c.restart(3).await;
        eventually("delivery", || sink.handoff().pending(3) == 0).await;
        assert_eq!(sink.metrics().hints_delivered.get(), 1);
        assert_eq!(sink.metrics().hints_dropped.get(), 1);
        assert!(samples_on(c.node(3).ctx(), &moved).is_empty());
        assert_eq!(samples_on(c.node(3).ctx(), &kept), vec![(1_000, 2.0)]);
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handoff_queue_drops_the_oldest_past_its_bound() {
    bounded(async {
        let mut c = TestCluster::start(3, 16, 3).await;
        let ctx = Arc::clone(c.node(1).ctx());
        c.stop(3).await;
        let metrics = Arc::new(WriteMetrics::default());
        let handoff = Handoff::new(Arc::clone(&ctx), Arc::clone(&metrics), 10);
        let hint = |i: usize, n: usize| {
            let l = series(i);
            let map = ctx.shard_map().expect("map");
            Hint::new(
                shard_of_labels(&l, &map),
                vec![SeriesSamples {
                    labels: bytes::Bytes::copy_from_slice(l.as_bytes()),
                    timestamps: (0..n as i64).collect(),
                    values: vec![1.0; n],
                    start_timestamps: Vec::new(),
                }],
            )
        };
        handoff.enqueue(3, hint(0, 6));
        handoff.enqueue(3, hint(1, 6));
        assert_eq!(handoff.pending(3), 6, "the oldest hint made room");
        assert_eq!(metrics.hints_dropped.get(), 6);
        handoff.enqueue(3, hint(2, 11));
        assert_eq!(
            handoff.pending(3),
            6,
            "a hint larger than the bound is dropped"
        );
        assert_eq!(metrics.hints_dropped.get(), 17);
        shutdown(c).await;
    })
    .await;
}

/// Labels of a series in `shard` under `map`.
fn series_in(map: &ShardMap, shard: ShardId) -> Labels {
    (0..10_000)
        .map(series)
        .find(|l| shard_of_labels(l, map) == shard)
        .expect("a series in the shard")
}

fn request(shard: ShardId, epoch: u64, labels: &Labels) -> WriteRequest {
    WriteRequest {
        from_node: 1,
        shards: vec![ShardEpoch { shard, epoch }],
        series: vec![SeriesSamples {
            labels: bytes::Bytes::copy_from_slice(labels.as_bytes()),
            timestamps: vec![1_000, 2_000],
            values: vec![1.0, 2.0],
            start_timestamps: Vec::new(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_is_redirected_and_nothing_applied() {
    bounded(async {
        let c = TestCluster::start(3, 16, 3).await;
        let map = c.meta.shard_map().expect("map");
        let a = map.assignment(0).expect("shard 0").clone();
        let l = series_in(&map, 0);
        let new_epoch = c
            .meta
            .propose(Command::SetShardPrimary {
                shard: 0,
                node: a.replicas[1],
                expected_epoch: a.epoch,
            })
            .await
            .expect("set primary")
            .expect("an epoch");
        assert!(new_epoch > a.epoch);
        let mut client = c.node(1).ctx().peers.replica(2).expect("client");
        let reply = client
            .write(request(0, a.epoch, &l))
            .await
            .expect("write")
            .into_inner();
        assert_eq!(reply.appended, 0);
        assert_eq!(reply.redirects.len(), 1);
        let r = &reply.redirects[0];
        assert_eq!((r.shard, r.epoch), (0, new_epoch));
        assert_eq!(r.replicas[0], a.replicas[1], "the new primary leads");
        assert!(
            samples_on(c.node(2).ctx(), &l).is_empty(),
            "nothing applied"
        );

        // A coordinator ahead of this node: refused after a bounded wait…
        let started = Instant::now();
        let err = client
            .write(request(0, new_epoch + 1, &l))
            .await
            .expect_err("this node never reaches that epoch");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
        assert!(started.elapsed() >= MAP_CATCH_UP);
        // …or applied once the map catches up meanwhile.
        let meta = Arc::clone(&c.meta);
        let primary = a.replicas[0];
        let bump = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            meta.propose(Command::SetShardPrimary {
                shard: 0,
                node: primary,
                expected_epoch: new_epoch,
            })
            .await
            .expect("set primary back")
        });
        let reply = client
            .write(request(0, new_epoch + 1, &l))
            .await
            .expect("applied after the map caught up")
            .into_inner();
        assert_eq!(bump.await.expect("bump task"), Some(new_epoch + 1));
        assert!(reply.redirects.is_empty());
        assert_eq!(reply.appended, 2);
        assert_eq!(
            samples_on(c.node(2).ctx(), &l),
            vec![(1_000, 1.0), (2_000, 2.0)]
        );
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_hold_the_shard_redirects() {
    bounded(async {
        let c = TestCluster::start(3, 16, 1).await;
        let map = c.meta.shard_map().expect("map");
        let a = map.assignment(0).expect("shard 0").clone();
        let other = (1..=3)
            .find(|n| !a.holds(*n))
            .expect("a node without shard 0");
        let l = series_in(&map, 0);
        let reply = serve_write(c.node(other).ctx(), request(0, a.epoch, &l))
            .await
            .expect("write");
        assert_eq!(reply.redirects.len(), 1);
        assert_eq!(reply.redirects[0].replicas, a.replicas);
        assert!(samples_on(c.node(other).ctx(), &l).is_empty());
        shutdown(c).await;
    })
    .await;
}

/// A coordinator (node 99, holding no replica) whose metadata is a copy
/// of the cluster's that it only updates when told to: a node whose
/// applied map lags the replicas'.
fn lagging_coordinator(c: &TestCluster) -> (Arc<MemMetaClient>, Arc<ReplicatingSink>, TempDir) {
    let meta = Arc::new(MemMetaClient::new((*c.meta.state()).clone()));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(dir.path(), Default::default()).expect("open db"));
    let ctx = ClusterCtx::new(
        99,
        db,
        Arc::clone(&meta) as Arc<dyn MetaClient>,
        Arc::new(MetadataStore::new(100)),
    );
    (meta, Arc::new(ReplicatingSink::new(ctx)), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_write_is_routed_again_once_the_map_catches_up() {
    bounded(async {
        let c = TestCluster::start(3, 16, 3).await;
        let map = c.meta.shard_map().expect("map");
        let (lagging, sink, _dir) = lagging_coordinator(&c);
        let a = map.assignment(4).expect("shard 4").clone();
        let l = series_in(&map, 4);
        let dropped = a.replicas[2];
        let change = Command::SetShardReplicas {
            shard: 4,
            replicas: a.replicas[..2].to_vec(),
            expected_epoch: a.epoch,
        };
        c.meta.propose(change.clone()).await.expect("move shard 4");
        // The coordinator applies the change a little later.
        let apply = {
            let lagging = Arc::clone(&lagging);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                lagging.propose(change).await.expect("catch up")
            })
        };
        let b = vec![(l.clone(), 1_000, 1.0), (l.clone(), 2_000, 2.0)];
        let out = write(&sink, b.clone()).await.expect("routed again");
        assert_eq!(out.appended, 2);
        apply.await.expect("apply task");
        assert!(
            sink.metrics().redirects.get() >= 3,
            "every replica redirected"
        );
        for n in &a.replicas[..2] {
            assert_eq!(
                samples_on(c.node(*n).ctx(), &l),
                expected(&b, &l),
                "node {n}"
            );
        }
        assert!(
            samples_on(c.node(dropped).ctx(), &l).is_empty(),
            "node {dropped}"
        );

        // A coordinator that never catches up gives up after its rounds.
        let (_stuck_meta, stuck, _dir2) = lagging_coordinator(&c);
        c.meta
            .propose(Command::SetShardPrimary {
                shard: 4,
                node: a.replicas[1],
                expected_epoch: a.epoch + 1,
            })
            .await
            .expect("new primary");
        let started = Instant::now();
        match write(&stuck, b).await {
            Err(SinkError::Unavailable(msg)) => {
                assert!(msg.contains("shard 4 (0 of 2 replicas appended"), "{msg}");
                assert!(msg.contains("redirected"), "{msg}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() >= MAP_CATCH_UP * (MAX_ROUNDS as u32 - 1));
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_replicas_receive_writes_but_do_not_count() {
    bounded(async {
        let mut c = TestCluster::start(3, 16, 2).await;
        let map = c.meta.shard_map().expect("map");
        let a = map.assignment(6).expect("shard 6").clone();
        let newcomer = (1..=3)
            .find(|n| !a.holds(*n))
            .expect("a node without shard 6");
        c.meta
            .propose(Command::AddShardReplica {
                shard: 6,
                node: newcomer,
                expected_epoch: a.epoch,
            })
            .await
            .expect("add a pending replica");
        let l = series_in(&map, 6);
        let coordinator = a.replicas[0];
        let sink = Arc::new(ReplicatingSink::new(Arc::clone(c.node(coordinator).ctx())));
        let b = vec![(l.clone(), 1_000, 1.0)];
        write(&sink, b.clone())
            .await
            .expect("both up-to-date replicas are up");
        for n in [a.replicas[0], a.replicas[1], newcomer] {
            assert_eq!(
                samples_on(c.node(n).ctx(), &l),
                expected(&b, &l),
                "node {n}"
            );
        }
        // The pending replica and the coordinator make two answers, but
        // only one of the two up-to-date replicas appended.
        c.stop(a.replicas[1]).await;
        let later = vec![(l.clone(), 2_000, 2.0)];
        match write(&sink, later).await {
            Err(SinkError::Unavailable(msg)) => {
                assert!(
                    msg.contains("shard 6 (1 of 2 replicas appended, 2 needed"),
                    "{msg}"
                )
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_arguments_naming_the_series() {
    bounded(async {
        let c = TestCluster::start(3, 16, 3).await;
        let map = c.meta.shard_map().expect("map");
        let epoch = map.assignment(0).expect("shard 0").epoch;
        let good = series_in(&map, 0);
        let mut client = c.node(1).ctx().peers.replica(2).expect("client");
        let two = |second: SeriesSamples| {
            let mut r = request(0, epoch, &good);
            r.series.push(second);
            r
        };
        let cases = [
            (
                "series 1: labels are not canonically encoded",
                two(SeriesSamples {
                    labels: bytes::Bytes::from_static(&[0xff, 0x01]),
                    timestamps: vec![1],
                    values: vec![1.0],
                    start_timestamps: Vec::new(),
                }),
            ),
            (
                "series 1",
                two(SeriesSamples {
                    labels: bytes::Bytes::copy_from_slice(good.as_bytes()),
                    timestamps: vec![1, 2],
                    values: vec![1.0],
                    start_timestamps: Vec::new(),
                }),
            ),
            (
                "start timestamps",
                two(SeriesSamples {
                    labels: bytes::Bytes::copy_from_slice(good.as_bytes()),
                    timestamps: vec![1, 2],
                    values: vec![1.0, 2.0],
                    start_timestamps: vec![1],
                }),
            ),
            (
                "which the request does not route",
                two(SeriesSamples {
                    labels: bytes::Bytes::copy_from_slice(series_in(&map, 5).as_bytes()),
                    timestamps: vec![1],
                    values: vec![1.0],
                    start_timestamps: Vec::new(),
                }),
            ),
        ];
        for (want, req) in cases {
            let err = client.write(req).await.expect_err(want);
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
            assert!(err.message().contains(want), "{want}: {}", err.message());
        }
        assert!(
            samples_on(c.node(2).ctx(), &good).is_empty(),
            "nothing applied"
        );
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_reported_once_at_their_batch_index() {
    bounded(async {
        let c = TestCluster::start(3, 16, 3).await;
        let sink = Arc::new(ReplicatingSink::new(Arc::clone(c.node(1).ctx())));
        let map = c.meta.shard_map().expect("map");
        // `x` sorts into an earlier shard than `y`, so each replica's
        // request holds x's samples before y's: the reverse of the batch.
        let x = series_in(&map, 2);
        let y = series_in(&map, 9);
        write(&sink, vec![(x.clone(), 5_000, 1.0)])
            .await
            .expect("first");
        let out = write(
            &sink,
            vec![
                (y.clone(), 1_000, 1.0),
                (y.clone(), 2_000, 2.0),
                (x.clone(), 1_000, 9.0),
                (x.clone(), 6_000, 2.0),
                (y.clone(), 1_500, 3.0),
            ],
        )
        .await
        .expect("second");
        assert_eq!(out.appended, 3);
        let got: Vec<(usize, RejectReason)> =
            out.rejected.iter().map(|r| (r.index, r.reason)).collect();
        assert_eq!(
            got,
            vec![(2, RejectReason::OutOfOrder), (4, RejectReason::OutOfOrder)]
        );
        assert!(
            out.rejected[0].message.contains("host-"),
            "{}",
            out.rejected[0].message
        );
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_timestamps_are_appended_and_refusals_classified() {
    bounded(async {
        let c = TestCluster::start(3, 16, 3).await;
        let map = c.meta.shard_map().expect("map");
        let epoch = map.assignment(0).expect("shard 0").epoch;
        let l = series_in(&map, 0);
        let mut req = request(0, epoch, &l);
        req.series[0].timestamps = vec![2_000, 1_000];
        req.series[0].start_timestamps = vec![500, 500];
        let reply = serve_write(c.node(2).ctx(), req).await.expect("write");
        assert_eq!(reply.appended, 1);
        assert_eq!(reply.rejected.len(), 1);
        assert_eq!(reply.rejected[0].index, 1);
        assert_eq!(reply.rejected[0].reason, "out_of_order");
        let found = c
            .node(2)
            .ctx()
            .db
            .select(
                i64::MIN,
                i64::MAX,
                &[Matcher::equal("instance", l.get("instance").unwrap_or(""))],
                None,
            )
            .expect("select");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].start_timestamp_at(2_000), 500);
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_reaches_every_member_and_deletes_every_replica() {
    bounded(async {
        let c = TestCluster::start(3, 16, 3).await;
        let sink = Arc::new(ReplicatingSink::new(Arc::clone(c.node(1).ctx())));
        let meta = MetricMeta {
            kind: "counter",
            help: "Requests.".into(),
            unit: String::new(),
        };
        {
            let sink = Arc::clone(&sink);
            let meta = meta.clone();
            tokio::task::spawn_blocking(move || {
                sink.write_metadata(vec![("http_requests_total".into(), meta)])
            })
            .await
            .expect("metadata task");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &c.nodes {
            loop {
                let got = n.ctx().metadata.get(Some("http_requests_total"), 0, 0);
                if let Some(list) = got.get("http_requests_total") {
                    assert_eq!(list[0], meta, "node {}", n.id);
                    break;
                }
                assert!(Instant::now() < deadline, "metadata not on node {}", n.id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        let b = batch();
        write(&sink, b.clone()).await.expect("write");
        let gone = series(7);
        let deleted = {
            let sink = Arc::clone(&sink);
            let ms = vec![Matcher::equal(
                "instance",
                gone.get("instance").unwrap_or(""),
            )];
            tokio::task::spawn_blocking(move || sink.delete(&ms, i64::MIN, i64::MAX))
                .await
                .expect("delete task")
                .expect("delete")
        };
        assert_eq!(deleted, 3, "one series on each of three replicas");
        for n in &c.nodes {
            assert!(samples_on(n.ctx(), &gone).is_empty(), "node {}", n.id);
            assert_eq!(samples_on(n.ctx(), &series(8)), expected(&b, &series(8)));
        }
        shutdown(c).await;
    })
    .await;
}
