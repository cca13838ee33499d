//! Clusters of real `pharos` processes on loopback: the `pharos cluster`
//! launcher and `pharos cluster status`, writes through one node read back
//! identically through every node, a node SIGKILLed under a remote-write
//! load, and the single alerting leader across a leader change.
//!
//! Every process is started on free ports in a temporary directory, and
//! killed by its guard if a test fails half way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_pharos");

/// A child process, SIGKILLed on drop if still running.
struct Proc {
    child: Child,
}

impl Proc {
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit, at most `within`.
    fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal("-KILL");
            let _ = self.child.wait();
        }
    }
}

/// A base port P with P..P+n and P+1000..P+1000+n free on 127.0.0.1.
fn free_base_port(n: u16) -> u16 {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        ^ (u64::from(std::process::id()) << 16);
    for attempt in 0..200u64 {
        let p =
            20_000 + ((seed.wrapping_mul(6364136223846793005) + attempt * 7919) % 30_000) as u16;
        let free = (0..n).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p + 1000 + i)).is_ok()
        });
        if free {
            return p;
        }
    }
    panic!("no free port range found");
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `f` every 100ms until it returns `Some`, at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A GET that tolerates a node that is not listening (yet).
async fn try_get(a: SocketAddr, path: &str) -> Option<Resp> {
    let req = async {
        let mut s = tokio::net::TcpStream::connect(a).await.ok()?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let head = format!("GET {path} HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        (!raw.is_empty()).then(|| parse_response(&raw))
    };
    tokio::time::timeout(Duration::from_secs(10), req)
        .await
        .ok()?
}

/// A GET answered within 10s (the test fails otherwise).
async fn bget(a: SocketAddr, path: &str) -> Resp {
    try_get(a, path)
        .await
        .unwrap_or_else(|| panic!("{a}{path}: no answer within 10s"))
}

/// `data` of a successful API answer.
async fn api(a: SocketAddr, path: &str) -> Value {
    let r = bget(a, path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "success", "{path}: {v}");
    v["data"].clone()
}

/// `pharos cluster` running `n` nodes, its output in `out`.
struct Launcher {
    proc: Proc,
    base: u16,
    out: PathBuf,
    dir: tempfile::TempDir,
}

impl Launcher {
    fn start(n: u16) -> Launcher {
        Launcher::start_with(n, |_| None)
    }

    /// With the config `config(base port)` returns, if any, passed to
    /// every node.
    fn start_with(n: u16, config: impl FnOnce(u16) -> Option<String>) -> Launcher {
        let dir = tempfile::tempdir().unwrap();
        let base = free_base_port(n);
        let out = dir.path().join("launcher.out");
        let mut cmd = Command::new(BIN);
        if let Some(text) = config(base) {
            let p = dir.path().join("pharos.yml");
            std::fs::write(&p, text).unwrap();
            cmd.arg("cluster").arg("--config").arg(p);
        } else {
            cmd.arg("cluster");
        }
        let child = cmd
            .args(["--nodes", &n.to_string(), "--base-port", &base.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("launcher.err")).unwrap(),
            ))
            .spawn()
            .unwrap();
        Launcher {
            proc: Proc { child },
            base,
            out,
            dir,
        }
    }

    /// Stops the launcher with SIGTERM (every node flushes) and starts it
    /// again on the same directory and ports.
    async fn restart(mut self, n: u16) -> Launcher {
        self.proc.signal("-TERM");
        let (st, mut l) = tokio::task::spawn_blocking(move || {
            let st = self.proc.wait(Duration::from_secs(40));
            (st, self)
        })
        .await
        .unwrap();
        assert!(st.is_some_and(|s| s.success()), "{}", l.output());
        let child = Command::new(BIN)
            .args([
                "cluster",
                "--nodes",
                &n.to_string(),
                "--base-port",
                &l.base.to_string(),
            ])
            .arg("--data-dir")
            .arg(l.dir.path().join("data"))
            .stdout(std::fs::File::create(&l.out).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(l.dir.path().join("launcher.err")).unwrap(),
            ))
            .spawn()
            .unwrap();
        l.proc = Proc { child };
        l
    }

    async fn wait_ready(&self, n: u16) {
        for i in 1..=n {
            let a = self.http(i);
            let end = Instant::now() + Duration::from_secs(60);
            while try_get(a, "/-/ready").await.is_none_or(|r| r.status != 200) {
                assert!(
                    Instant::now() < end,
                    "node {i} not ready\n{}\n{}",
                    self.output(),
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn http(&self, node: u16) -> SocketAddr {
        addr(self.base + node - 1)
    }

    fn output(&self) -> String {
        let mut s = std::fs::read_to_string(&self.out).unwrap_or_default();
        s.push_str(
            &std::fs::read_to_string(self.dir.path().join("launcher.err")).unwrap_or_default(),
        );
        s
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=3 {
            let p = self.dir.path().join("data").join(format!("node-{i}.log"));
            s.push_str(&format!("--- node {i}\n{}", tail(&p, 30)));
        }
        s
    }
}

/// The last `n` lines of a node's log, without openraft's own (long)
/// lines.
fn tail(p: &Path, n: usize) -> String {
    let t = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = t.lines().filter(|l| !l.contains(" openraft::")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n") + "\n"
}

/// (a) `pharos cluster --nodes 3` forms a cluster whose API shows three
/// active nodes, one leader and every shard on three replicas; `pharos
/// cluster status` prints it; SIGTERM stops every node cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_starts_shows_and_stops_three_nodes() {
    let mut l = Launcher::start(3);
    l.wait_ready(3).await;
    let nodes = api(l.http(2), "/api/v1/cluster/nodes").await;
    let nodes = nodes.as_array().unwrap().clone();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(nodes.iter().all(|n| n["state"] == "active"), "{nodes:?}");
    assert_eq!(
        nodes.iter().filter(|n| n["is_leader"] == true).count(),
        1,
        "{nodes:?}"
    );
    assert_eq!(nodes.iter().filter(|n| n["this_node"] == true).count(), 1);
    assert_eq!(nodes[1]["this_node"], true);
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["id"], i as u64 + 1);
        assert_eq!(n["addr"], format!("127.0.0.1:{}", l.base + 1000 + i as u16));
        assert_eq!(n["role"], "voter");
    }
    let shards = api(l.http(3), "/api/v1/cluster/shards").await;
    assert_eq!(shards["shards"], 256);
    assert_eq!(shards["replication_factor"], 3);
    let a = shards["assignments"].as_array().unwrap();
    assert_eq!(a.len(), 256);
    for s in a {
        let mut r: Vec<u64> = s["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        r.sort();
        assert_eq!(r, vec![1, 2, 3], "{s}");
    }
    let status = api(l.http(1), "/api/v1/cluster/status").await;
    assert!(status["leader"].as_u64().is_some(), "{status}");
    assert!(status["term"].as_u64().unwrap() >= 1);
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    assert!(status["commit_index"].as_u64().unwrap() >= 1, "{status}");
    // The leader exports Raft's numbers, with the lag of both followers.
    let leader = status["leader"].as_u64().unwrap() as u16;
    let m = bget(l.http(leader), "/metrics").await.text();
    for name in [
        "pharos_meta_term ",
        "pharos_meta_is_leader 1",
        "pharos_cluster_raft_commit_index ",
        "pharos_cluster_leader_id ",
        "pharos_cluster_shard_epoch_max 1",
        "pharos_cluster_local_replicas 256",
    ] {
        assert!(m.contains(name), "{name} missing:\n{m}");
    }
    let lag_lines = m
        .lines()
        .filter(|x| x.starts_with("pharos_cluster_raft_replication_lag_entries{"))
        .count();
    assert_eq!(lag_lines, 2, "{m}");
    // A single node answers the error envelope.
    let single = node().await;
    let r = get(single.addr, "/api/v1/cluster/nodes").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "cluster mode is off");
    single.stop().await;

    let url = format!("http://127.0.0.1:{}", l.base);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["cluster", "status", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("leader node "), "{text}");
    for i in 0..3u16 {
        assert!(
            text.contains(&format!("127.0.0.1:{}", l.base + 1000 + i)),
            "{text}"
        );
    }
    assert!(text.contains("Shards: 256 (replication factor 3"), "{text}");
    assert!(
        text.contains("256 with 3 up-to-date replicas, 0 under-replicated"),
        "{text}"
    );

    l.proc.signal("-TERM");
    let st = tokio::task::spawn_blocking(move || {
        let st = l.proc.wait(Duration::from_secs(40));
        (st, l)
    })
    .await
    .unwrap();
    let (st, l) = st;
    let st = st.unwrap_or_else(|| panic!("launcher did not stop\n{}", l.output()));
    let out = l.output();
    assert!(st.success(), "{out}");
    for i in 1..=3 {
        assert!(
            out.contains(&format!("node {i} stopped (exit status: 0)")),
            "{out}"
        );
        assert!(
            try_get(l.http(i as u16), "/-/healthy").await.is_none(),
            "node {i} still up"
        );
    }
    assert!(
        l.logs().matches("storage flushed").count() == 3,
        "{}",
        l.logs()
    );
}

/// (b) Samples written through node 1 read back byte for byte the same
/// through nodes 2 and 3, for every query API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_the_same_bytes() {
    let l = Launcher::start(3);
    l.wait_ready(3).await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - 10 * 60_000;
    // 30 targets (so most shards' primaries differ), 3 metrics each.
    let mut ts = Vec::new();
    for t in 0..30 {
        let inst = format!("host-{t}:9100");
        for m in ["up", "cpu_seconds_total", "mem_bytes"] {
            let samples: Vec<(i64, f64)> = (0..40)
                .map(|k| (t0 + k * 15_000, (t * 100 + k) as f64))
                .collect();
            ts.push(series(
                &[("__name__", m), ("instance", &inst), ("job", "node")],
                &samples,
            ));
        }
    }
    let r = write_v1(l.http(1), &write_req(ts)).await;
    assert_eq!(r.status, 204, "{}\n{}", r.text(), l.logs());
    let end = (t0 + 39 * 15_000) / 1000;
    let start = t0 / 1000;
    let queries = [
        format!(
            "/api/v1/query?{}",
            qs(&[
                ("query", "sum by (instance) (rate(cpu_seconds_total[2m]))"),
                ("time", &end.to_string())
            ])
        ),
        format!(
            "/api/v1/query?{}",
            qs(&[("query", "mem_bytes[5m]"), ("time", &end.to_string())])
        ),
        format!(
            "/api/v1/query_range?{}",
            qs(&[
                ("query", "up"),
                ("start", &start.to_string()),
                ("end", &end.to_string()),
                ("step", "30")
            ])
        ),
        format!(
            "/api/v1/series?{}",
            qs(&[
                ("match[]", "{job=\"node\"}"),
                ("start", &start.to_string()),
                ("end", &end.to_string())
            ])
        ),
        "/api/v1/labels".to_string(),
        "/api/v1/label/instance/values".to_string(),
        format!(
            "/api/v1/query?{}",
            qs(&[("query", "count(up)"), ("time", &end.to_string())])
        ),
    ];
    for q in &queries {
        let first = bget(l.http(1), q).await;
        assert_eq!(first.status, 200, "{q}: {}", first.text());
        let v = first.json();
        let data = &v["data"];
        let empty = data.as_array().is_some_and(|a| a.is_empty())
            || data["result"].as_array().is_some_and(|a| a.is_empty());
        assert!(!empty, "{q}: {}", first.text());
        for i in 2..=3 {
            let other = bget(l.http(i), q).await;
            assert_eq!(other.status, 200, "{q} via node {i}: {}", other.text());
            assert_eq!(
                other.text(),
                first.text(),
                "{q}: node 1 and node {i} differ"
            );
        }
    }
    let v = api(l.http(3), &queries[6]).await;
    assert_eq!(v["result"][0]["value"][1], "30", "{v}");
    let v = api(l.http(2), &queries[1]).await;
    assert_eq!(v["result"].as_array().unwrap().len(), 30);

    // The whole cluster stopped and started again on the same directories
    // comes back with its membership, its shard map and its data.
    let before: Vec<String> = {
        let mut v = Vec::new();
        for q in &queries {
            v.push(bget(l.http(1), q).await.text());
        }
        v
    };
    let map_before = api(l.http(1), "/api/v1/cluster/shards").await;
    let l = l.restart(3).await;
    l.wait_ready(3).await;
    assert_eq!(api(l.http(2), "/api/v1/cluster/shards").await, map_before);
    for (q, want) in queries.iter().zip(&before) {
        let got = eventually(Duration::from_secs(30), q, || async {
            let r = try_get(l.http(3), q).await?;
            (r.status == 200 && r.text() == *want).then_some(())
        })
        .await;
        let () = got;
    }
}

/// Three `pharos server` processes started by hand (so one can be killed
/// and restarted): node i has HTTP on `base+i-1`, gRPC on `base+1000+i-1`,
/// data in `dir/node-i` and its log appended to `dir/node-i.log`.
struct Servers {
    dir: tempfile::TempDir,
    base: u16,
    procs: Vec<Option<Proc>>,
    extra: Vec<String>,
}

impl Servers {
    fn start(extra: &[&str]) -> Servers {
        let mut s = Servers {
            dir: tempfile::tempdir().unwrap(),
            base: free_base_port(4),
            procs: vec![None, None, None],
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 1..=3 {
            s.spawn(i);
        }
        s
    }

    fn spawn(&mut self, i: u16) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["server", "--node-id", &i.to_string(), "--expect-nodes", "3"])
            .arg("--listen")
            .arg(self.http(i).to_string())
            .arg("--grpc-listen")
            .arg(format!("127.0.0.1:{}", self.base + 1000 + i - 1))
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("node-{i}")))
            .args(&self.extra);
        if i > 1 {
            cmd.arg("--join")
                .arg(format!("127.0.0.1:{}", self.base + 1000));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        if self.procs.len() < usize::from(i) {
            self.procs.resize_with(usize::from(i), || None);
        }
        self.procs[usize::from(i - 1)] = Some(Proc { child });
    }

    fn log_path(&self, i: u16) -> PathBuf {
        self.dir.path().join(format!("node-{i}.log"))
    }

    fn log(&self, i: u16) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    fn logs(&self) -> String {
        (1..=self.procs.len() as u16)
            .map(|i| format!("--- node {i}\n{}", tail(&self.log_path(i), 30)))
            .collect()
    }

    fn http(&self, i: u16) -> SocketAddr {
        addr(self.base + i - 1)
    }

    async fn wait_ready(&self, i: u16) {
        let a = self.http(i);
        let end = Instant::now() + Duration::from_secs(60);
        while try_get(a, "/-/ready").await.is_none_or(|r| r.status != 200) {
            assert!(Instant::now() < end, "node {i} not ready\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill(&mut self, i: u16) {
        let mut p = self.procs[usize::from(i - 1)].take().unwrap();
        p.signal("-KILL");
        p.wait(Duration::from_secs(10)).unwrap();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the load wrote: per series (target index), the acknowledged
/// (timestamp, value) samples; and the requests that were not.
#[derive(Default)]
struct Load {
    acked: Vec<Vec<(i64, f64)>>,
    acked_requests: usize,
    failed: Vec<String>,
}

const TARGETS: usize = 20;

/// Writes one sample per target per request through `a` until `stop`,
/// timestamps `base + seq * 10ms`, value `seq`.
async fn run_load(
    a: SocketAddr,
    base: i64,
    first_seq: i64,
    stop: tokio::sync::watch::Receiver<bool>,
    load: std::sync::Arc<parking_lot::Mutex<Load>>,
) -> i64 {
    let mut seq = first_seq;
    loop {
        if *stop.borrow() {
            break;
        }
        let t = base + seq * 10;
        let ts: Vec<_> = (0..TARGETS)
            .map(|k| {
                series(
                    &[
                        ("__name__", "load_test"),
                        ("instance", &format!("t-{k}:80")),
                        ("job", "load"),
                    ],
                    &[(t, seq as f64)],
                )
            })
            .collect();
        let r = tokio::time::timeout(Duration::from_secs(30), write_v1(a, &write_req(ts)))
            .await
            .unwrap_or_else(|_| panic!("seq {seq}: no answer to a write within 30s"));
        {
            let mut l = load.lock();
            if r.status == 204 {
                l.acked_requests += 1;
                for k in 0..TARGETS {
                    l.acked[k].push((t, seq as f64));
                }
            } else {
                l.failed
                    .push(format!("seq {seq}: {} {}", r.status, r.text()));
            }
        }
        seq += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seq
}

/// Checks through node `via` that every acknowledged sample is present,
/// exactly once, with its value. A write is acknowledged once a majority
/// of replicas have it, and a query reads one replica per shard (this
/// node's own first), so a sample just acknowledged may reach the replica
/// read a moment later: missing samples are asked again for up to 30 s
/// (they must arrive: from the write in flight, a hint or the catch-up);
/// a duplicate or a wrong value fails at once.
async fn check_load(s: &Servers, via: u16, load: &Load, at_ms: i64) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let Some(missing) = load_missing(s, via, load, at_ms).await else {
            return;
        };
        assert!(Instant::now() < end, "{missing}\n{}", s.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `via` still lacks of the load, if anything.
async fn load_missing(s: &Servers, via: u16, load: &Load, at_ms: i64) -> Option<String> {
    let q = qs(&[
        ("query", "load_test[15m]"),
        ("time", &format!("{:.3}", at_ms as f64 / 1000.0)),
    ]);
    let v = api(s.http(via), &format!("/api/v1/query?{q}")).await;
    let result = v["result"].as_array().unwrap();
    if result.len() != TARGETS {
        return Some(format!("via node {via}: {} series: {v}", result.len()));
    }
    let mut total = 0;
    for r in result {
        let inst = r["metric"]["instance"].as_str().unwrap();
        let k: usize = inst
            .trim_start_matches("t-")
            .trim_end_matches(":80")
            .parse()
            .unwrap();
        let got: Vec<(i64, f64)> = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                (t, p[1].as_str().unwrap().parse::<f64>().unwrap())
            })
            .collect();
        let mut ts: Vec<i64> = got.iter().map(|p| p.0).collect();
        ts.dedup();
        assert_eq!(
            ts.len(),
            got.len(),
            "via node {via}: duplicate timestamps in {inst}"
        );
        let have: std::collections::HashMap<i64, f64> = got.into_iter().collect();
        for (t, want) in &load.acked[k] {
            if let Some(v) = have.get(t) {
                assert_eq!(v, want, "via node {via}: {inst} at {t}");
            }
        }
        let missing: Vec<&(i64, f64)> = load.acked[k]
            .iter()
            .filter(|(t, _)| !have.contains_key(t))
            .collect();
        if !missing.is_empty() {
            return Some(format!(
                "via node {via}: {inst} lacks {} of {} acknowledged samples, first {:?}",
                missing.len(),
                load.acked[k].len(),
                missing.first(),
            ));
        }
        total += load.acked[k].len();
    }
    assert_eq!(total, load.acked_requests * TARGETS);
    None
}

/// (c) RF 3 on three nodes: SIGKILL one node under a steady remote-write
/// load; writes keep being acknowledged; the node restarts and catches up;
/// then every acknowledged sample is present exactly once through every
/// node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_node_loses_no_acknowledged_sample() {
    kill_under_load(1, 3).await;
}

/// As (c), killing the meta group's leader (node 1, which bootstrapped the
/// cluster) while the load goes through node 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_leader_loses_no_acknowledged_sample() {
    kill_under_load(2, 1).await;
}

/// Writes through `via`, SIGKILLs `victim` meanwhile, restarts it, and
/// checks every acknowledged sample through every node, then through the
/// victim alone.
async fn kill_under_load(via: u16, victim: u16) {
    let mut s = Servers::start(&[]);
    for i in 1..=3 {
        s.wait_ready(i).await;
    }
    let leader = api(s.http(via), "/api/v1/cluster/status").await["leader"].clone();
    if victim == 1 {
        assert_eq!(leader, 1, "node 1 bootstrapped: it leads");
    }
    let load = std::sync::Arc::new(parking_lot::Mutex::new(Load {
        acked: vec![Vec::new(); TARGETS],
        ..Load::default()
    }));
    let base = now_ms();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(run_load(
        s.http(via),
        base,
        0,
        stop_rx,
        std::sync::Arc::clone(&load),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = load.lock().acked_requests;
    assert!(before_kill > 5, "load too slow: {before_kill} requests");
    s.kill(victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = load.lock().acked_requests - before_kill;
    assert!(
        during > 5,
        "writes stalled with node {victim} down: {during}\n{}",
        s.logs()
    );
    s.spawn(victim);
    s.wait_ready(victim).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(true).unwrap();
    writer.await.unwrap();
    let load = std::mem::take(&mut *load.lock());
    assert!(
        load.failed.is_empty(),
        "{} requests not acknowledged: {:?}",
        load.failed.len(),
        &load.failed[..load.failed.len().min(5)]
    );
    // The restarted node reports its catch-up (its first start had
    // nothing to catch up).
    let end = Instant::now() + Duration::from_secs(60);
    while !s.log(victim).contains("catch-up finished") {
        assert!(
            Instant::now() < end,
            "node {victim} did not catch up\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = s.log(victim);
    let report = log
        .lines()
        .find(|l| l.contains("catch-up finished"))
        .unwrap();
    assert!(report.contains("restarted: true"), "{report}");
    assert!(report.contains("failed_shards: {}"), "{report}");
    eprintln!("node {victim}: {report}");
    let at = now_ms() + 1000;
    for node in [1, 2, 3] {
        check_load(&s, node, &load, at).await;
    }
    // The victim's own replica has them too: with the others gone, its
    // reads are local.
    for other in (1..=3).filter(|&i| i != victim) {
        s.kill(other);
    }
    let q = qs(&[
        ("query", "count_over_time(load_test[15m])"),
        ("time", &format!("{:.3}", at as f64 / 1000.0)),
    ]);
    let r = bget(s.http(victim), &format!("/api/v1/query?{q}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), TARGETS, "{v}");
    for x in result {
        assert_eq!(
            x["value"][1].as_str().unwrap(),
            load.acked_requests.to_string(),
            "{x}"
        );
    }
}

/// One POST the fake Alertmanager received.
struct Post {
    at: Instant,
    alerts: Vec<Value>,
}

/// A minimal Alertmanager: records every `POST /api/v2/alerts` body and
/// answers 200 (keep-alive connections included).
struct FakeAm {
    addr: SocketAddr,
    posts: std::sync::Arc<parking_lot::Mutex<Vec<Post>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAm {
    async fn start() -> FakeAm {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let posts = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let p = std::sync::Arc::clone(&posts);
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(Self::serve(s, std::sync::Arc::clone(&p)));
            }
        });
        FakeAm { addr, posts, task }
    }

    async fn serve(
        mut s: tokio::net::TcpStream,
        posts: std::sync::Arc<parking_lot::Mutex<Vec<Post>>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        loop {
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + len {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = buf[head_end..head_end + len].to_vec();
            buf.drain(..head_end + len);
            if head.starts_with("post /api/v2/alerts") {
                let alerts: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
                posts.lock().push(Post {
                    at: Instant::now(),
                    alerts,
                });
            }
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

impl Drop for FakeAm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The node (1..=3) that sent `alert`, from its generatorURL's port.
fn sender(s: &Servers, alert: &Value) -> u16 {
    let url = alert["generatorURL"].as_str().unwrap();
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    port - s.base + 1
}

fn rfc3339(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

/// `activeAt` of the firing alert on node `i` (`None` if it shows none).
async fn active_at(s: &Servers, i: u16) -> Option<String> {
    let v = api(s.http(i), "/api/v1/alerts").await;
    let a = v["alerts"].as_array()?.first()?.clone();
    (a["state"] == "firing").then(|| a["activeAt"].as_str().unwrap().to_string())
}

/// (d) Only the Raft leader evaluates and notifies; after it is killed the
/// new leader restores the alert from `ALERTS_FOR_STATE` (same `activeAt`,
/// no new `for` wait) and goes on notifying, with no second sender at any
/// time and no burst beyond resends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_alerting_leader_across_a_leader_change() {
    let am = FakeAm::start().await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let rules = cfg_dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: AlwaysFiring\n        expr: vector(1)\n        for: 3s\n        labels: {severity: page}\n",
    )
    .unwrap();
    let cfg = cfg_dir.path().join("pharos.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files: [{}]\nalerting:\n  alertmanagers:\n    - static_configs: [{{targets: ['{}']}}]\n",
            rules.display(),
            am.addr
        ),
    )
    .unwrap();
    let resend = Duration::from_secs(2);
    let mut s = Servers::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--rules.alert.for-grace-period",
        "1s",
        "--rules.alert.resend-delay",
        "2s",
    ]);
    for i in 1..=3 {
        s.wait_ready(i).await;
    }
    let posts = std::sync::Arc::clone(&am.posts);
    let leader = eventually(Duration::from_secs(30), "a firing notification", || {
        let p = posts.lock();
        let first = p.iter().flat_map(|p| &p.alerts).next().cloned();
        async move { first }
    })
    .await;
    let old = sender(&s, &leader);
    assert_eq!(leader["labels"]["alertname"], "AlwaysFiring");
    let status = api(s.http(1), "/api/v1/cluster/status").await;
    assert_eq!(status["leader"], u64::from(old), "{status}");
    // A few resends from the leader alone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = active_at(&s, old)
        .await
        .expect("the leader shows the alert firing");
    for other in (1..=3).filter(|&i| i != old) {
        assert_eq!(
            active_at(&s, other).await,
            None,
            "node {other} evaluates too"
        );
    }
    s.kill(old);
    let killed = Instant::now();
    let new = eventually(
        Duration::from_secs(30),
        "a notification from a new leader",
        || {
            let p = posts.lock();
            let n = p
                .iter()
                .flat_map(|p| &p.alerts)
                .map(|a| sender(&s, a))
                .find(|&n| n != old);
            async move { n }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = active_at(&s, new)
        .await
        .expect("the new leader shows the alert firing");
    // ALERTS_FOR_STATE keeps whole seconds, as Prometheus's does.
    assert_eq!(
        rfc3339(&after).unix_timestamp(),
        rfc3339(&before).unix_timestamp(),
        "activeAt moved: {before} -> {after}"
    );

    let p = posts.lock();
    let sends: Vec<(Instant, u16, &Value)> = p
        .iter()
        .flat_map(|x| x.alerts.iter().map(move |a| (x.at, 0, a)))
        .map(|(at, _, a)| (at, sender(&s, a), a))
        .collect();
    // One sender at a time: the old leader's run, then the new one's.
    let switch = sends.iter().position(|x| x.1 != old).unwrap();
    assert!(sends[..switch].iter().all(|x| x.1 == old));
    assert!(
        sends[switch..].iter().all(|x| x.1 == new),
        "senders: {:?}",
        sends.iter().map(|x| x.1).collect::<Vec<_>>()
    );
    // Every notification is of the one firing alert, never a resolution.
    for (_, _, a) in &sends {
        assert_eq!(a["labels"]["alertname"], "AlwaysFiring");
        let ends = rfc3339(a["endsAt"].as_str().unwrap());
        assert!(ends > time::OffsetDateTime::now_utc() - Duration::from_secs(60));
        assert!(ends > rfc3339(a["startsAt"].as_str().unwrap()));
    }
    // No burst: the new leader sends at most once per resend delay (plus
    // its first send).
    let first_new = sends[switch].0;
    let window = Instant::now() - first_new;
    let new_sends = sends.len() - switch;
    let allowed = (window.as_secs_f64() / resend.as_secs_f64()).floor() as usize + 2;
    assert!(new_sends <= allowed, "{new_sends} sends in {window:?}");
    // The hand-over gap: the last resend before the kill, the election,
    // the lease, and two evaluations (pending, then restored and firing).
    let last_old = sends[..switch].last().unwrap().0;
    let gap = first_new - last_old;
    assert!(gap < Duration::from_secs(10), "no notification for {gap:?}");
    eprintln!(
        "leader {old} -> {new}: notifications resumed {:?} after the kill, {gap:?} after the last one",
        first_new - killed
    );
    assert!(first_new > killed);
}

/// Replica counts per node (1..=4) and whether the map is settled: no
/// pending replica and every shard on exactly 3.
async fn replica_counts(s: &Servers) -> ([usize; 4], bool) {
    let m = api(s.http(1), "/api/v1/cluster/shards").await;
    let mut counts = [0usize; 4];
    let mut settled = true;
    for x in m["assignments"].as_array().unwrap() {
        // A replaced replica goes only after its successor caught up.
        settled &= x["pending"].as_array().unwrap().is_empty()
            && x["replicas"].as_array().unwrap().len() == 3;
        for r in x["replicas"].as_array().unwrap() {
            counts[r.as_u64().unwrap() as usize - 1] += 1;
        }
    }
    (counts, settled)
}

/// A fourth node joining a formed three-node cluster gets a fair share of
/// replicas: each is copied (pending) before the planner drops the replica
/// it replaces; afterwards every node answers the same bytes. Draining it
/// (admin API) moves its replicas back the same way, and once it holds
/// none it can be stopped without any query noticing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_and_drains_without_losing_data() {
    let mut s = Servers::start(&["--web.enable-admin-api"]);
    for i in 1..=3 {
        s.wait_ready(i).await;
    }
    let t0 = now_ms() - 5 * 60_000;
    let mut ts = Vec::new();
    for t in 0..40 {
        let inst = format!("host-{t}:9100");
        let samples: Vec<(i64, f64)> = (0..20)
            .map(|k| (t0 + k * 15_000, (t * 100 + k) as f64))
            .collect();
        ts.push(series(
            &[("__name__", "up"), ("instance", &inst), ("job", "node")],
            &samples,
        ));
    }
    let r = write_v1(s.http(1), &write_req(ts)).await;
    assert_eq!(r.status, 204, "{}", r.text());
    s.spawn(4);
    s.wait_ready(4).await;
    // The planner moves replicas in small steps; wait for its fixpoint.
    let settled = eventually(
        Duration::from_secs(120),
        "replicas balanced over 4 nodes",
        || async {
            let (counts, settled) = replica_counts(&s).await;
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            (settled && max - min <= 1).then_some(counts)
        },
    )
    .await;
    assert_eq!(settled.iter().sum::<usize>(), 256 * 3, "{settled:?}");
    let end = (t0 + 19 * 15_000) / 1000;
    let q = format!(
        "/api/v1/query_range?{}",
        qs(&[
            ("query", "up"),
            ("start", &(t0 / 1000).to_string()),
            ("end", &end.to_string()),
            ("step", "15")
        ])
    );
    let first = bget(s.http(1), &q).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["data"]["result"].as_array().unwrap().len(), 40);
    for i in 2..=4 {
        let other = bget(s.http(i), &q).await;
        assert_eq!(other.text(), first.text(), "node {i} differs");
    }

    // Drain node 4 through another node (the change is forwarded to the
    // meta leader).
    let r = request(
        s.http(2),
        "POST",
        "/api/v1/admin/cluster/node_state?node=4&state=draining",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    eventually(Duration::from_secs(120), "node 4 drained", || async {
        let (counts, settled) = replica_counts(&s).await;
        (settled && counts == [256, 256, 256, 0]).then_some(())
    })
    .await;
    let nodes = api(s.http(3), "/api/v1/cluster/nodes").await;
    assert_eq!(nodes[3]["state"], "draining", "{nodes}");
    assert_eq!(nodes[3]["replicas"], 0, "{nodes}");
    s.kill(4);
    for i in 1..=3 {
        let other = bget(s.http(i), &q).await;
        assert_eq!(other.text(), first.text(), "node {i} after node 4 left");
    }
    // Without the admin API the change is refused.
    let single = node().await;
    let r = request(
        single.addr,
        "POST",
        "/api/v1/admin/cluster/node_state?node=1&state=draining",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "admin APIs disabled");
    single.stop().await;
}

/// Each scrape target is scraped by exactly one node, its shard's primary,
/// and its samples are readable through every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_is_scraped_by_its_primary_only() {
    let l = Launcher::start_with(3, |base| {
        let targets: Vec<String> = (0..3)
            .map(|i| format!("'127.0.0.1:{}'", base + i))
            .collect();
        Some(format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pharos\n    static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        ))
    });
    l.wait_ready(3).await;
    let shards = api(l.http(1), "/api/v1/cluster/shards").await;
    // Every target is active on exactly one node: the one that is primary
    // of its shard.
    let owners = eventually(Duration::from_secs(30), "3 scraped targets", || async {
        let mut owners = Vec::new();
        for i in 1..=3u16 {
            let t = api(l.http(i), "/api/v1/targets").await;
            for x in t["activeTargets"].as_array().unwrap() {
                let inst = x["labels"]["instance"].as_str().unwrap().to_string();
                owners.push((inst, i, x["health"].as_str().unwrap_or("").to_string()));
            }
        }
        (owners.len() == 3 && owners.iter().all(|o| o.2 == "up")).then_some(owners)
    })
    .await;
    let mut insts: Vec<&String> = owners.iter().map(|o| &o.0).collect();
    insts.sort();
    insts.dedup();
    assert_eq!(insts.len(), 3, "{owners:?}");
    let placement = shards["placement_labels"].clone();
    assert_eq!(placement, serde_json::json!(["instance", "job"]));
    // The scraped `up` of each target, through every node, from one
    // scraper: at most one sample per scrape interval.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A little in the past: a scrape acknowledged by two replicas may
    // still be on its way to the third, which a node may read alone.
    let at = (now_ms() - 1500) as f64 / 1000.0;
    let q = qs(&[
        ("query", "count_over_time(up[3s])"),
        ("time", &format!("{at:.3}")),
    ]);
    let first = api(l.http(1), &format!("/api/v1/query?{q}")).await;
    let r = first["result"].as_array().unwrap();
    assert_eq!(r.len(), 3, "{first}");
    for x in r {
        let n: f64 = x["value"][1].as_str().unwrap().parse().unwrap();
        assert!((1.0..=4.0).contains(&n), "two scrapers? {x}");
    }
    for i in 2..=3 {
        let (q, first, node) = (&q, &first, l.http(i));
        eventually(Duration::from_secs(10), "the same answer", || async move {
            let other = api(node, &format!("/api/v1/query?{q}")).await;
            (other == *first).then_some(())
        })
        .await;
    }
}

/// A node that dies under `pharos cluster` is reported loudly, with the end
/// of its log, and the launcher stops the others and exits with an error:
/// nothing is restarted behind the user's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_stops_everything_when_a_node_dies() {
    let mut l = Launcher::start(3);
    l.wait_ready(3).await;
    let me = l.proc.child.id();
    let children: Vec<u32> = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(children.len(), 3, "{children:?}");
    // Node 2's process, by its command line.
    let victim = *children
        .iter()
        .find(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmd.windows(12).any(|w| w == b"--node-id\x002\x00")
        })
        .expect("node 2's process");
    let st = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let (st, l) = tokio::task::spawn_blocking(move || {
        let st = l.proc.wait(Duration::from_secs(40));
        (st, l)
    })
    .await
    .unwrap();
    let st = st.unwrap_or_else(|| panic!("launcher kept running\n{}", l.output()));
    let out = l.output();
    assert!(!st.success(), "{out}");
    assert!(out.contains("node 2 exited unexpectedly"), "{out}");
    assert!(out.contains("Nothing is restarted"), "{out}");
    assert!(out.contains("pharos_node"), "no log tail:\n{out}");
    for i in [1u16, 3] {
        assert!(out.contains(&format!("node {i} stopped")), "{out}");
        assert!(
            try_get(l.http(i), "/-/healthy").await.is_none(),
            "node {i} still up"
        );
    }
}

/// RF 1 on three nodes, one node SIGKILLed: a query that needs its shards
/// fails and names them; with `partial_response=true` it answers from the
/// rest and says what is missing in `warnings`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_shard_fails_the_query_unless_a_partial_answer_is_asked_for() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("pharos.yml");
    std::fs::write(
        &cfg,
        "pharos:\n  cluster:\n    shards: 16\n    replication_factor: 1\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let mut s = Servers::start(&["--config", &cfg]);
    for i in 1..=3 {
        s.wait_ready(i).await;
    }
    // Enough targets that every node is the only replica of some of them.
    let t = now_ms();
    let ts: Vec<_> = (0..48)
        .map(|k| {
            series(
                &[
                    ("__name__", "partial_test"),
                    ("instance", &format!("p-{k}:80")),
                    ("job", "partial"),
                ],
                &[(t, k as f64)],
            )
        })
        .collect();
    let r = write_v1(s.http(1), &write_req(ts)).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let query = |partial: Option<&str>| {
        let mut p = vec![
            ("query", "count(partial_test)".to_string()),
            ("time", format!("{:.3}", t as f64 / 1000.0)),
        ];
        if let Some(v) = partial {
            p.push(("partial_response", v.to_string()));
        }
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        format!("/api/v1/query?{}", qs(&p))
    };
    let all = api(s.http(1), &query(None)).await;
    assert_eq!(all["result"][0]["value"][1], "48", "{all}");

    s.kill(3);
    let shards = api(s.http(1), "/api/v1/cluster/shards").await;
    let on_3: Vec<u64> = shards["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["replicas"] == serde_json::json!([3]))
        .map(|a| a["shard"].as_u64().unwrap())
        .collect();
    assert!(!on_3.is_empty(), "node 3 holds no shard: {shards}");

    let strict = bget(s.http(1), &query(None)).await;
    let v = strict.json();
    assert_ne!(strict.status, 200, "{v}");
    assert_eq!(v["status"], "error", "{v}");
    let msg = v["error"].as_str().unwrap();
    let named: Vec<String> = on_3.iter().map(|s| s.to_string()).collect();
    let want = format!("shards {} (", named.join(", "));
    assert!(msg.contains(&want), "{msg} should name exactly {want}");

    let r = bget(s.http(2), &query(Some("true"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let n: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 0.0 && n < 48.0, "partial count {n}: {v}");
    let warnings = v["warnings"].as_array().expect("warnings");
    assert!(!warnings.is_empty(), "{v}");

    let bad = bget(s.http(1), &query(Some("perhaps"))).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["errorType"], "bad_data");
}
