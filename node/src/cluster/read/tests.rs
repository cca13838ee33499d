//! Tests of [`super`].

use std::future::Future;

use futures_util::StreamExt;
use pharos_meta::MetaClient;
use pharos_storage::chunk::collect_samples;
use pharos_storage::db::Db;
use tempfile::TempDir;

use super::*;
use crate::cluster::shard_of_labels;
use crate::cluster::testkit::TestCluster;

pub(crate) const T0: i64 = 1_700_000_000_000;

/// Fails a test that runs longer than a minute.
pub(crate) async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

/// Three series per scrape target (placed by job+instance) plus a few
/// without a full placement key (placed by their series hash).
pub(crate) fn test_series(targets: usize) -> Vec<Labels> {
    let mut out = Vec::new();
    for i in 0..targets {
        let inst = format!("host{i}:9100");
        let job = format!("job{}", i % 3);
        for m in ["up", "cpu_seconds", "mem_bytes"] {
            out.push(Labels::from_pairs([
                ("__name__", m),
                ("instance", inst.as_str()),
                ("job", job.as_str()),
            ]));
        }
    }
    for k in 0..10 {
        let k = k.to_string();
        out.push(Labels::from_pairs([
            ("__name__", "orphan"),
            ("k", k.as_str()),
        ]));
    }
    out
}

/// `n` samples per series every `step` ms from `from`.
pub(crate) fn samples(
    series: &[Labels],
    from: i64,
    n: usize,
    step: i64,
) -> Vec<(Labels, i64, f64)> {
    let mut out = Vec::new();
    for (si, l) in series.iter().enumerate() {
        for i in 0..n {
            let t = from + i as i64 * step;
            out.push((l.clone(), t, (si * 1000 + i) as f64 + (t % 7) as f64 / 8.0));
        }
    }
    out
}

/// Appends every sample to its shard's replicas, as the write path
/// would, except on the nodes in `skip` (and stopped ones).
pub(crate) async fn write_placed(c: &TestCluster, batch: &[(Labels, i64, f64)], skip: &[NodeId]) {
    let map = c.meta.shard_map().expect("shard map");
    let mut per_node: BTreeMap<NodeId, Vec<(Labels, i64, f64)>> = BTreeMap::new();
    for s in batch {
        let shard = shard_of_labels(&s.0, &map);
        for &n in &map.assignment(shard).expect("assignment").replicas {
            if !skip.contains(&n) && c.node(n).ctx.is_some() {
                per_node.entry(n).or_default().push(s.clone());
            }
        }
    }
    for (n, v) in per_node {
        append_to(&c.node(n).ctx().db, v).await;
    }
}

pub(crate) async fn append_to(db: &Arc<Db>, v: Vec<(Labels, i64, f64)>) {
    let db = Arc::clone(db);
    let stats = tokio::task::spawn_blocking(move || db.append(&v))
        .await
        .expect("append task")
        .expect("append");
    assert!(stats.rejected.is_empty(), "{:?}", stats.rejected);
}

/// A single Db holding every sample: what the cluster must answer.
pub(crate) async fn reference(batch: &[(Labels, i64, f64)]) -> (TempDir, Arc<Db>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(dir.path(), Default::default()).expect("open"));
    append_to(&db, batch.to_vec()).await;
    (dir, db)
}

pub(crate) type Decoded = Vec<(Labels, Vec<(i64, f64)>)>;

pub(crate) fn decode(series: &[Series]) -> Decoded {
    series
        .iter()
        .map(|s| {
            (
                s.labels.clone(),
                collect_samples(&mut s.iter()).expect("decode"),
            )
        })
        .collect()
}

fn all() -> Vec<Matcher> {
    vec![Matcher::new(MatchType::Regex, "__name__", ".+").unwrap()]
}

async fn select(
    q: &Arc<FanoutQueryable>,
    ms: Vec<Matcher>,
) -> Result<(Vec<Series>, Vec<String>), QueryError> {
    let q = Arc::clone(q);
    tokio::task::spawn_blocking(move || q.select_with_warnings(i64::MIN, i64::MAX, &ms, None))
        .await
        .expect("select task")
}

async fn reference_select(db: &Arc<Db>, ms: Vec<Matcher>) -> Decoded {
    let db = Arc::clone(db);
    let s = tokio::task::spawn_blocking(move || {
        Querier::select(db.as_ref(), i64::MIN, i64::MAX, &ms, None)
    })
    .await
    .expect("task")
    .expect("reference select");
    decode(&s)
}

async fn shutdown(mut c: TestCluster) {
    for id in 1..=c.nodes.len() as NodeId {
        if c.node(id).ctx.is_some() {
            c.stop(id).await;
        }
    }
}

fn fanout(c: &TestCluster, id: NodeId) -> Arc<FanoutQueryable> {
    Arc::new(FanoutQueryable::new(Arc::clone(c.node(id).ctx())))
}

async fn union_equals_single_db(rf: u32) {
    let c = TestCluster::start(3, 16, rf).await;
    let batch = samples(&test_series(20), T0, 30, 15_000);
    write_placed(&c, &batch, &[]).await;
    let (_dir, refdb) = reference(&batch).await;
    let selectors = [
        all(),
        vec![Matcher::equal("job", "job1")],
        vec![
            Matcher::equal("__name__", "up"),
            Matcher::new(MatchType::NotRegex, "instance", "host1.*").unwrap(),
        ],
        vec![Matcher::equal("__name__", "orphan")],
    ];
    for id in 1..=3 {
        let q = fanout(&c, id);
        for ms in &selectors {
            let (got, warnings) = select(&q, ms.clone()).await.expect("select");
            assert!(warnings.is_empty());
            let want = reference_select(&refdb, ms.clone()).await;
            assert!(!want.is_empty());
            assert_eq!(decode(&got), want, "node {id}, rf {rf}, {ms:?}");
        }
    }
    shutdown(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_select_rf1_equals_a_single_db() {
    bounded(union_equals_single_db(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_select_rf3_equals_a_single_db() {
    bounded(union_equals_single_db(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_a_node_holds_for_shards_it_does_not_own_is_not_read() {
    bounded(async {
        // A node may still hold series of a shard that moved away: only
        // the shard's replicas answer for it, through any node.
        let c = TestCluster::start(3, 16, 1).await;
        let l = Labels::from_pairs([("__name__", "moved"), ("instance", "a"), ("job", "j")]);
        let map = c.meta.shard_map().unwrap();
        let owner = map.assignment(shard_of_labels(&l, &map)).unwrap().replicas[0];
        let other = owner % 3 + 1;
        let owned: Vec<_> = (0..10)
            .map(|i| (l.clone(), T0 + i * 1000, i as f64))
            .collect();
        let stale: Vec<_> = (5..15).map(|i| (l.clone(), T0 + i * 1000, -1.0)).collect();
        append_to(&c.node(owner).ctx().db, owned.clone()).await;
        append_to(&c.node(other).ctx().db, stale).await;
        let want = vec![(
            l.clone(),
            owned.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(),
        )];
        for id in 1..=3 {
            let q = fanout(&c, id);
            let (got, _) = select(&q, vec![Matcher::equal("__name__", "moved")])
                .await
                .unwrap();
            assert_eq!(decode(&got), want, "through node {id}");
        }
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equality_on_every_placement_label_asks_one_shard() {
    bounded(async {
        let c = TestCluster::start(3, 16, 1).await;
        let batch = samples(&test_series(12), T0, 5, 15_000);
        write_placed(&c, &batch, &[]).await;
        let (_dir, refdb) = reference(&batch).await;
        let q = fanout(&c, 2);
        let ms = vec![
            Matcher::equal("job", "job1"),
            Matcher::equal("instance", "host4:9100"),
        ];
        let before = q.metrics().shards_asked.get();
        let (got, _) = select(&q, ms.clone()).await.unwrap();
        assert_eq!(q.metrics().shards_asked.get() - before, 1);
        let want = reference_select(&refdb, ms).await;
        assert_eq!(want.len(), 3);
        assert_eq!(decode(&got), want);

        // A few values per placement label: the shards of each
        // combination.
        let ms = vec![
            Matcher::new(MatchType::Regex, "job", "job1|job2").unwrap(),
            Matcher::new(MatchType::Regex, "instance", "host4:9100|host5:9100").unwrap(),
        ];
        let map = c.meta.shard_map().unwrap();
        let mut want_shards: Vec<ShardId> = test_series(12)
            .iter()
            .filter(|l| ms.iter().all(|m| m.matches(l.get_or_empty(&m.name))))
            .map(|l| shard_of_labels(l, &map))
            .collect();
        want_shards.sort_unstable();
        want_shards.dedup();
        let needed = needed_shards(&map, &ms);
        assert!(needed.len() <= 4);
        assert!(want_shards.iter().all(|s| needed.contains(s)));
        let before = q.metrics().shards_asked.get();
        let (got, _) = select(&q, ms.clone()).await.unwrap();
        assert_eq!(q.metrics().shards_asked.get() - before, needed.len() as u64);
        let want = reference_select(&refdb, ms).await;
        assert_eq!(want.len(), 6);
        assert_eq!(decode(&got), want);
        // Escaped dots (as Grafana writes `$instance` values) are
        // literals: the shards of exactly those two keys.
        let ms = vec![
            Matcher::equal("job", "job1"),
            Matcher::new(MatchType::Regex, "instance", r"a\.b:9100|c\.d:9100").unwrap(),
        ];
        let mut want_shards: Vec<ShardId> = ["a.b:9100", "c.d:9100"]
            .iter()
            .map(|i| {
                let l = Labels::from_pairs([("__name__", "x"), ("instance", i), ("job", "job1")]);
                shard_of_labels(&l, &map)
            })
            .collect();
        want_shards.sort_unstable();
        want_shards.dedup();
        let mut needed = needed_shards(&map, &ms);
        needed.sort_unstable();
        assert_eq!(needed, want_shards);
        // A set admitting the empty value does not narrow.
        let ms = vec![
            Matcher::equal("job", "job1"),
            Matcher::new(MatchType::Regex, "instance", "host4:9100|").unwrap(),
        ];
        assert_eq!(needed_shards(&map, &ms).len(), 16);

        // One placement label fixed is not enough: all 16 shards.
        let before = q.metrics().shards_asked.get();
        select(&q, vec![Matcher::equal("instance", "host4:9100")])
            .await
            .unwrap();
        assert_eq!(q.metrics().shards_asked.get() - before, 16);
        // Neither is an empty value (series without the label).
        let before = q.metrics().shards_asked.get();
        select(
            &q,
            vec![Matcher::equal("job", ""), Matcher::equal("instance", "")],
        )
        .await
        .unwrap();
        assert_eq!(q.metrics().shards_asked.get() - before, 16);

        // The computed shard is the series' placement shard.
        let map = c.meta.shard_map().unwrap();
        for l in test_series(12).iter().filter(|l| l.has("job")) {
            let ms = vec![
                Matcher::equal("__name__", "up"),
                Matcher::equal("instance", l.get_or_empty("instance")),
                Matcher::equal("job", l.get_or_empty("job")),
            ];
            assert_eq!(needed_shards(&map, &ms), vec![shard_of_labels(l, &map)]);
        }
        drop(q);
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rf3_reads_fail_over_when_a_node_is_stopped() {
    bounded(async {
        let mut c = TestCluster::start(3, 16, 3).await;
        let batch = samples(&test_series(20), T0, 10, 15_000);
        write_placed(&c, &batch, &[]).await;
        let (_dir, refdb) = reference(&batch).await;
        let want = reference_select(&refdb, all()).await;
        c.stop(2).await;
        for id in [1, 3] {
            let q = fanout(&c, id);
            let (got, w) = select(&q, all()).await.expect("select");
            assert!(w.is_empty());
            assert_eq!(decode(&got), want);
        }
        // Node 1 catching up does not read itself: shards whose next
        // replica is the stopped node 2 fail over to node 3.
        let ctx1 = Arc::clone(c.node(1).ctx());
        ctx1.catching_up.store(true, Ordering::Release);
        let q = Arc::new(FanoutQueryable::new(Arc::clone(&ctx1)));
        let (got, w) = select(&q, all()).await.expect("select");
        assert!(w.is_empty());
        assert_eq!(decode(&got), want);
        assert!(q.metrics().failovers.get() > 0);
        let labels = vec![("peer", "2".to_string()), ("rpc", "select".to_string())];
        assert!(q.metrics().failures.get_or_create(&labels).get() > 0);
        ctx1.catching_up.store(false, Ordering::Release);
        drop((q, ctx1));
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_is_given_up_on_and_its_shards_fail_over() {
    bounded(async {
        let c = TestCluster::start(3, 16, 3).await;
        let batch = samples(&test_series(10), T0, 5, 15_000);
        write_placed(&c, &batch, &[]).await;
        let (_dir, refdb) = reference(&batch).await;
        // Node 2 now "lives" at an address that accepts connections and
        // never answers.
        let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hole_addr = hole.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = hole.accept().await {
                held.push(sock);
            }
        });
        c.meta.add_node(2, hole_addr.to_string()).await.unwrap();
        // Node 1 catching up reads its peers only: node 2 first for
        // some shards.
        let ctx1 = Arc::clone(c.node(1).ctx());
        ctx1.catching_up.store(true, Ordering::Release);
        let q =
            Arc::new(FanoutQueryable::new(Arc::clone(&ctx1)).with_timeout(Duration::from_secs(2)));
        let started = Instant::now();
        let (got, w) = select(&q, all()).await.expect("failed over");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(w.is_empty());
        assert_eq!(decode(&got), reference_select(&refdb, all()).await);
        assert!(q.metrics().failovers.get() > 0);
        ctx1.catching_up.store(false, Ordering::Release);
        holder.abort();
        drop((q, ctx1));
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rf1_reads_name_the_missing_shards_or_warn_when_partial() {
    bounded(async {
        let mut c = TestCluster::start(3, 16, 1).await;
        let batch = samples(&test_series(20), T0, 10, 15_000);
        write_placed(&c, &batch, &[]).await;
        let map = c.meta.shard_map().unwrap();
        let lost: Vec<ShardId> = (0..map.shards)
            .filter(|&s| map.assignment(s).unwrap().replicas == vec![3])
            .collect();
        assert!(!lost.is_empty());
        let lost_list = lost
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let kept: Vec<_> = batch
            .iter()
            .filter(|s| !lost.contains(&shard_of_labels(&s.0, &map)))
            .cloned()
            .collect();
        let (_dir, refdb) = reference(&kept).await;
        c.stop(3).await;

        let q = fanout(&c, 1);
        let err = select(&q, all()).await.expect_err("shards are missing");
        let msg = err.to_string();
        assert!(msg.contains(&format!("shards {lost_list} ")), "{msg}");
        let q2 = Arc::clone(&q);
        let err = tokio::task::spawn_blocking(move || q2.label_names(i64::MIN, i64::MAX, &[]))
            .await
            .unwrap()
            .expect_err("label names need every shard too");
        assert!(err.to_string().contains(&lost_list), "{err}");

        let strict = FanoutQueryable::new(Arc::clone(c.node(2).ctx()));
        let q = Arc::new(strict.clone().allow_partial());
        let (got, w) = select(&q, all()).await.expect("partial select");
        assert_eq!(w.len(), 1);
        assert!(w[0].contains(&format!("shards {lost_list} ")), "{}", w[0]);
        assert_eq!(decode(&got), reference_select(&refdb, all()).await);
        assert_eq!(q.metrics().incomplete_reads.get(), 1);
        // The strict original shares the metrics and still refuses.
        let strict = Arc::new(strict);
        assert!(select(&strict, all()).await.is_err());
        assert_eq!(strict.metrics().incomplete_reads.get(), 2);
        drop(strict);
        // `select` has no warning channel: it fails even in partial mode.
        let q2 = Arc::clone(&q);
        let r = tokio::task::spawn_blocking(move || q2.select(i64::MIN, i64::MAX, &all(), None))
            .await
            .unwrap();
        assert!(r.is_err());
        drop(q);
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_names_and_values_are_merged() {
    bounded(async {
        let c = TestCluster::start(3, 16, 1).await;
        let mut series = test_series(9);
        series.push(Labels::from_pairs([("__name__", "extra"), ("zone", "eu")]));
        let batch = samples(&series, T0, 3, 15_000);
        write_placed(&c, &batch, &[]).await;
        let (_dir, refdb) = reference(&batch).await;
        let q = fanout(&c, 3);
        let q2 = Arc::clone(&q);
        let r2 = Arc::clone(&refdb);
        let (got, want) = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            let mut want = Vec::new();
            let ms = vec![Matcher::equal("job", "job2")];
            got.push(q2.label_names(i64::MIN, i64::MAX, &[]).unwrap());
            want.push(Querier::label_names(r2.as_ref(), i64::MIN, i64::MAX, &[]).unwrap());
            got.push(q2.label_names(i64::MIN, i64::MAX, &ms).unwrap());
            want.push(Querier::label_names(r2.as_ref(), i64::MIN, i64::MAX, &ms).unwrap());
            for name in ["instance", "__name__", "zone", "missing"] {
                got.push(q2.label_values(name, i64::MIN, i64::MAX, &[]).unwrap());
                want.push(
                    Querier::label_values(r2.as_ref(), name, i64::MIN, i64::MAX, &[]).unwrap(),
                );
                got.push(q2.label_values(name, i64::MIN, i64::MAX, &ms).unwrap());
                want.push(
                    Querier::label_values(r2.as_ref(), name, i64::MIN, i64::MAX, &ms).unwrap(),
                );
            }
            (got, want)
        })
        .await
        .unwrap();
        assert_eq!(got, want);
        assert!(got[0].contains(&"zone".to_string()));
        assert_eq!(got[2].len(), 9);
        drop(q);
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_select_streams_batches_in_label_order_and_filters_shards() {
    bounded(async {
        let c = TestCluster::start(1, 16, 1).await;
        let ctx = Arc::clone(c.node(1).ctx());
        let series: Vec<Labels> = (0..1300)
            .map(|i| {
                let i = format!("{i:05}");
                Labels::from_pairs([("__name__", "m"), ("i", i.as_str())])
            })
            .collect();
        append_to(&ctx.db, samples(&series, T0, 2, 1000)).await;
        let req = SelectRequest {
            mint: i64::MIN,
            maxt: i64::MAX,
            matchers: matchers_to_proto(&[Matcher::equal("__name__", "m")]),
            filter: None,
            hints: None,
        };
        let replies: Vec<SelectReply> = serve_select(Arc::clone(&ctx), req.clone())
            .await
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(replies.len(), 3);
        assert!(replies.iter().all(|r| r.series.len() <= BATCH_SERIES));
        let got: Vec<Series> = replies
            .into_iter()
            .flat_map(|r| r.series)
            .map(|s| series_from_proto(s).unwrap())
            .collect();
        assert_eq!(got.len(), 1300);
        assert!(got.windows(2).all(|w| w[0].labels < w[1].labels));
        assert!(got
            .iter()
            .all(|s| collect_samples(&mut s.iter()).unwrap().len() == 2));

        // A filter keeps exactly the series of its shards.
        let map = c.meta.shard_map().unwrap();
        let req = SelectRequest {
            filter: ShardSel::to_proto(ShardSel::new(&map, &[3, 5]).as_ref()),
            ..req
        };
        let kept: Vec<Labels> = serve_select(Arc::clone(&ctx), req)
            .await
            .unwrap()
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flat_map(|r| r.series)
            .map(|s| series_from_proto(s).unwrap().labels)
            .collect();
        let want: Vec<Labels> = series
            .iter()
            .filter(|l| [3, 5].contains(&shard_of_labels(l, &map)))
            .cloned()
            .collect();
        assert!(!want.is_empty());
        assert_eq!(kept, want);

        // Bad requests are refused, not guessed at.
        let bad = SelectRequest {
            matchers: vec![pb::LabelMatcher {
                r#type: 2,
                name: "a".into(),
                value: "(".into(),
            }],
            ..SelectRequest::default()
        };
        let e = serve_select(Arc::clone(&ctx), bad).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let bad = SelectRequest {
            filter: Some(pb::ShardFilter {
                shards: vec![16],
                total_shards: 16,
                placement_labels: vec![],
            }),
            ..SelectRequest::default()
        };
        let e = serve_select(Arc::clone(&ctx), bad).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        drop(ctx);
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catching_up_replica_refuses_reads_and_peers_fail_over() {
    bounded(async {
        let c = TestCluster::start(3, 16, 3).await;
        let batch = samples(&test_series(10), T0, 5, 15_000);
        write_placed(&c, &batch, &[]).await;
        let (_dir, refdb) = reference(&batch).await;
        let ctx2 = Arc::clone(c.node(2).ctx());
        ctx2.catching_up.store(true, Ordering::Release);
        let mut client = c.node(1).ctx().peers.replica(2).unwrap();
        let req = SelectRequest {
            mint: i64::MIN,
            maxt: i64::MAX,
            matchers: matchers_to_proto(&all()),
            ..SelectRequest::default()
        };
        let Err(e) = client.select(req.clone()).await else {
            panic!("a catching-up replica answered a select");
        };
        assert_eq!(e.code(), tonic::Code::Unavailable);
        let e = client
            .label_names(LabelsRequest::default())
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::Unavailable);
        // Node 1, catching up too, reads neither itself nor node 2.
        let ctx1 = Arc::clone(c.node(1).ctx());
        ctx1.catching_up.store(true, Ordering::Release);
        let q = Arc::new(FanoutQueryable::new(Arc::clone(&ctx1)));
        let (got, _) = select(&q, all()).await.unwrap();
        assert_eq!(decode(&got), reference_select(&refdb, all()).await);
        ctx2.catching_up.store(false, Ordering::Release);
        ctx1.catching_up.store(false, Ordering::Release);
        assert!(client.select(req).await.is_ok());
        drop((q, ctx1, ctx2, client));
        shutdown(c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_delete_tombstones_matching_samples() {
    bounded(async {
        let c = TestCluster::start(2, 16, 1).await;
        let batch = samples(&test_series(6), T0, 10, 1000);
        write_placed(&c, &batch, &[]).await;
        let ms = vec![Matcher::equal("__name__", "up")];
        let mut deleted = 0;
        for id in 1..=2 {
            let mut client = c.node(1).ctx().peers.replica(id).unwrap();
            let r = client
                .delete(DeleteRequest {
                    matchers: matchers_to_proto(&ms),
                    mint: T0,
                    maxt: T0 + 4000,
                })
                .await
                .unwrap()
                .into_inner();
            deleted += r.series;
        }
        assert_eq!(deleted, 6);
        let q = fanout(&c, 1);
        let (got, _) = select(&q, ms).await.unwrap();
        assert_eq!(got.len(), 6);
        for (_, s) in decode(&got) {
            assert_eq!(s.len(), 5);
            assert_eq!(s[0].0, T0 + 5000);
        }
        let e = serve_delete(c.node(1).ctx(), DeleteRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        drop(q);
        shutdown(c).await;
    })
    .await;
}

#[test]
fn series_wire_form_round_trips_and_rejects_bad_input() {
    use pharos_storage::chunk::XorAppender;
    let mut app = XorAppender::new();
    for i in 0..5 {
        app.append(T0 + i, i as f64);
    }
    let s = Series {
        labels: Labels::from_pairs([("__name__", "x"), ("a", "b")]),
        chunks: vec![ChunkMeta {
            min_time: T0,
            max_time: T0 + 4,
            chunk: app.to_chunk(),
        }],
        deleted: vec![(T0 + 1, T0 + 2)],
        start_timestamps: Some(vec![(T0, T0 - 10), (T0 + 3, T0 - 5)].into()),
    };
    let back = series_from_proto(series_to_proto(&s)).unwrap();
    assert_eq!(back.labels, s.labels);
    assert_eq!(back.chunks, s.chunks);
    assert_eq!(back.deleted, s.deleted);
    assert_eq!(back.start_timestamps, s.start_timestamps);
    assert_eq!(decode(&[back]), decode(std::slice::from_ref(&s)));

    let good = series_to_proto(&s);
    let mut bad = good.clone();
    bad.chunks[0].encoding = 2;
    assert!(series_from_proto(bad).is_err());
    let mut bad = good.clone();
    bad.chunks[0].encoding = 257;
    assert!(series_from_proto(bad).is_err());
    let mut bad = good.clone();
    bad.chunks[0].data = Bytes::from_static(&[0, 5, 1]);
    assert!(series_from_proto(bad).is_err());
    let mut bad = good.clone();
    bad.labels = Bytes::from_static(&[9, 1]);
    assert!(series_from_proto(bad).is_err());
    let mut bad = good.clone();
    bad.labels = Bytes::new();
    assert!(series_from_proto(bad).is_err());
    let mut bad = good.clone();
    bad.deleted.push(1);
    assert!(series_from_proto(bad).is_err());
    let mut bad = good.clone();
    bad.start_timestamps = vec![T0 + 3, 1, T0, 1];
    assert!(series_from_proto(bad).is_err());
    let mut bad = good;
    bad.chunks[0].min_time = T0 + 10;
    assert!(series_from_proto(bad).is_err());
}

#[test]
fn matchers_round_trip() {
    let ms = vec![
        Matcher::equal("a", "1"),
        Matcher::new(MatchType::NotEqual, "b", "2").unwrap(),
        Matcher::new(MatchType::Regex, "c", "x|y").unwrap(),
        Matcher::new(MatchType::NotRegex, "d", ".*z").unwrap(),
    ];
    assert_eq!(matchers_from_proto(&matchers_to_proto(&ms)).unwrap(), ms);
    let bad = pb::LabelMatcher {
        r#type: 4,
        name: "a".into(),
        value: "b".into(),
    };
    assert!(matchers_from_proto(&[bad]).is_err());
    let h = SelectHints {
        start: 1,
        end: 2,
        step: 3,
        range: 4,
        func: Some("rate".into()),
        grouping: vec!["job".into()],
        by: true,
    };
    assert_eq!(hints_from_proto(hints_to_proto(Some(&h))), Some(h));
    let none = SelectHints::default();
    assert_eq!(hints_from_proto(hints_to_proto(Some(&none))), Some(none));
}
