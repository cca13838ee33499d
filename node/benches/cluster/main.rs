//! Cluster benchmark of issue 7 item 8: remote-write ingestion through a
//! three-node cluster on this machine (replication factor 3 and 1), and the
//! latency of the same dashboard queries asked through a cluster node (which
//! fans out) and of one single `pharos server` holding the same data.
//!
//! `scripts/bench-cluster` builds the release binary and runs this. Every
//! deployment is made of real release `pharos server` processes on free
//! 127.0.0.1 ports, each with its data in one temporary directory that is
//! removed at the end; children die with the bench (`PR_SET_PDEATHSIG`), and
//! the run is bounded by `--deadline-secs`.
//!
//! Deployments (`--configs`, in this order):
//! - `single`: one `pharos server`; it stays up, idle, while the clusters
//!   run, so that each query case can alternate between it and a cluster;
//! - `rf3`, `rf1`: three nodes (node 1 bootstraps, 2 and 3 join it,
//!   `--expect-nodes 3`), `pharos.cluster.replication_factor` 3 or 1 and
//!   `shards` from `--shards`, every write sent to node 1;
//! - `rf3-spread`: as `rf3`, each sender's requests rotated over the three
//!   nodes; its answers are compared, not timed.
//!
//! Workload (deterministic, built and snappy-compressed before any clock
//! starts): `--instances` scrape-shaped targets of 1,000 series each under
//! five jobs (request counters by path/method/code, a 12-bucket classic
//! histogram family with `_sum` and `_count`, CPU counters by cpu/mode, a
//! memory gauge family), `--points` samples per series on a 15 s grid, each
//! instance shifted by its own phase so no sample sits on a query window's
//! edge. Requests hold `--per-request` single-sample series, split over
//! `--senders` concurrent senders by series index, each in time order on
//! kept-alive connections.
//!
//! Ingestion, per deployment (the other deployment idle): wall time from
//! the first request to the last acknowledgement, CPU (utime + stime from
//! `/proc/<pid>/stat`) summed over the deployment's processes, peak RSS
//! (`VmHWM`) summed over them. Queries: each case is asked once of both and
//! the answers compared byte for byte (then, if they differ, series by
//! series, to say how); then timed runs alternate between the single node
//! and the cluster's node 1 so both see the same background load; p50/p99
//! are exact nearest-rank quantiles over every run. Node 1's
//! `pharos_cluster_read_*` metrics are read around the timed runs to count
//! the fan-out RPCs each query made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{api_time, pct_encode, Http};
use procs::{clock_ticks, load_average, Deployment, Proc};
use workload::{build_requests, Requests, Workload, HOUR_MS, JOBS, SERIES_PER_INSTANCE, STEP_MS};

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(format!($($t)*).into())
    };
}

mod http;
mod procs;
mod workload;

// ---------------------------------------------------------------------------
// Arguments

pub(crate) struct Args {
    pub(crate) instances: usize,
    pub(crate) points: usize,
    pub(crate) per_request: usize,
    pub(crate) senders: usize,
    pub(crate) runs: usize,
    pub(crate) max_secs: f64,
    pub(crate) configs: Vec<String>,
    pub(crate) shards: u32,
    pub(crate) fsync: Option<String>,
    pub(crate) pharos: PathBuf,
    pub(crate) deadline_secs: u64,
    pub(crate) keep: bool,
}

pub(crate) const USAGE: &str =
    "known arguments: --instances N --points N --per-request N --senders N \
     --runs N --max-secs S --configs single,rf3,rf1,rf3-spread --shards N \
     --fsync always|interval --pharos PATH --deadline-secs S --keep";

pub(crate) fn parse_args() -> Result<Args> {
    let mut a = Args {
        instances: 30,
        points: 240,
        per_request: 2_000,
        senders: 4,
        runs: 20,
        max_secs: 3.0,
        configs: ["single", "rf3", "rf1", "rf3-spread"]
            .map(String::from)
            .to_vec(),
        shards: 256,
        fsync: None,
        pharos: PathBuf::from("target/release/pharos"),
        deadline_secs: 840,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            // `cargo bench` passes --bench to harness = false targets.
            "--bench" => continue,
            "--keep" => {
                a.keep = true;
                continue;
            }
            _ => {}
        }
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--instances" => a.instances = v.parse()?,
            "--points" => a.points = v.parse()?,
            "--per-request" => a.per_request = v.parse()?,
            "--senders" => a.senders = v.parse()?,
            "--runs" => a.runs = v.parse()?,
            "--max-secs" => a.max_secs = v.parse()?,
            "--configs" => a.configs = v.split(',').map(str::to_string).collect(),
            "--shards" => a.shards = v.parse()?,
            "--fsync" => a.fsync = Some(v),
            "--pharos" => a.pharos = v.into(),
            "--deadline-secs" => a.deadline_secs = v.parse()?,
            _ => bail!("unknown argument {k}; {USAGE}"),
        }
    }
    if a.points < 40 || a.instances == 0 || a.senders == 0 || a.per_request == 0 || a.runs == 0 {
        bail!("--points must be ≥ 40 (the queries look at the last hour), the others ≥ 1");
    }
    for c in &a.configs {
        if !["single", "rf3", "rf1", "rf3-spread"].contains(&c.as_str()) {
            bail!("unknown config {c}; {USAGE}");
        }
    }
    if a.configs.first().map(String::as_str) != Some("single") {
        bail!("--configs must start with single: the clusters are compared with it");
    }
    Ok(a)
}

/// Fails once the run's time is up; every phase checks it.
pub(crate) struct Deadline(Instant);

impl Deadline {
    fn check(&self, what: &str) -> Result<()> {
        if Instant::now() > self.0 {
            bail!("deadline passed before {what}; stopping (raise --deadline-secs or shrink the workload)");
        }
        Ok(())
    }

    fn left(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

fn mib(b: u64) -> String {
    format!("{:.0}", b as f64 / (1u64 << 20) as f64)
}

// ---------------------------------------------------------------------------
// Ingestion

struct Ingest {
    samples: usize,
    wall: Duration,
    /// CPU seconds per process during the ingestion.
    cpu: Vec<f64>,
    hwm_sum: u64,
    rss_sum: u64,
    retries: usize,
    load_before: String,
    load_after: String,
}

/// Sends every request; `spread` rotates each sender's requests over all
/// the deployment's nodes, otherwise everything goes to node 1.
async fn send_all(targets: Vec<String>, reqs: &Requests) -> Result<(usize, usize)> {
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(usize, usize)>>> = Vec::new();
    for batch in &reqs.senders {
        let batch = batch.clone();
        let targets = targets.clone();
        tasks.push(tokio::spawn(async move {
            let mut conns: Vec<Http> = targets.iter().map(|t| Http::new(t)).collect();
            let headers = [
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "snappy"),
                ("x-prometheus-remote-write-version", "0.1.0"),
            ];
            let (mut samples, mut retries) = (0usize, 0usize);
            for (j, (body, n)) in batch.into_iter().enumerate() {
                let conn = &mut conns[j % targets.len()];
                let mut backoff = Duration::from_millis(20);
                loop {
                    let (status, resp) = conn
                        .call(hyper::Method::POST, "/api/v1/write", &headers, body.clone())
                        .await?;
                    if (200..300).contains(&status) {
                        break;
                    }
                    // Prometheus retries 429 and 5xx; so does this sender,
                    // and counts it.
                    if (status == 429 || status >= 500) && retries < 1_000 {
                        retries += 1;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    bail!(
                        "remote write to {}: HTTP {status}: {}",
                        conn.addr,
                        String::from_utf8_lossy(&resp[..resp.len().min(400)])
                    );
                }
                samples += n;
            }
            Ok((samples, retries))
        }));
    }
    let (mut samples, mut retries) = (0, 0);
    for t in tasks {
        let (s, r) = t.await.map_err(|e| format!("sender task: {e}"))??;
        samples += s;
        retries += r;
    }
    Ok((samples, retries))
}

async fn ingest(d: &Deployment, reqs: &Requests, spread: bool, tck: f64) -> Result<Ingest> {
    let targets: Vec<String> = if spread {
        d.procs.iter().map(|p| p.http.clone()).collect()
    } else {
        vec![d.entry().to_string()]
    };
    let load_before = load_average();
    let cpu0 = d.cpu(tck)?;
    let started = Instant::now();
    let (samples, retries) = send_all(targets, reqs).await?;
    let wall = started.elapsed();
    let cpu1 = d.cpu(tck)?;
    Ok(Ingest {
        samples,
        wall,
        cpu: cpu1.iter().zip(&cpu0).map(|(b, a)| b - a).collect(),
        hwm_sum: d.mem_sum("VmHWM")?,
        rss_sum: d.mem_sum("VmRSS")?,
        retries,
        load_before,
        load_after: load_average(),
    })
}

// ---------------------------------------------------------------------------
// Queries

const QUERIES: [&str; 6] = [
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum by (code) (rate(http_requests_total{code=~\"5..\"}[5m]))",
    "topk(5, sum by (instance) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m])))",
    "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job=\"api\"}[5m])))",
    // Both placement labels fixed: one shard.
    "node_memory_bytes{job=\"web\", instance=\"node-001.bench.internal:9100\"}",
    // A dashboard variable with two values, regex-escaped as Grafana
    // sends them: two placement keys.
    r#"sum by (instance) (rate(http_requests_total{job="db", instance=~"node-002\\.bench\\.internal:9100|node-007\\.bench\\.internal:9100"}[5m]))"#,
];

struct Case {
    query: &'static str,
    shape: &'static str,
    path: String,
}

fn cases(w: &Workload) -> Vec<Case> {
    let end = w.end_ms();
    let start = end - HOUR_MS;
    let mut out = Vec::new();
    for q in QUERIES {
        let enc = pct_encode(q);
        out.push(Case {
            query: q,
            shape: "instant",
            path: format!("/api/v1/query?query={enc}&time={}", api_time(end)),
        });
        for (shape, step) in [("1h @15s", 15_000), ("1h @60s", 60_000)] {
            out.push(Case {
                query: q,
                shape,
                path: format!(
                    "/api/v1/query_range?query={enc}&start={}&end={}&step={}",
                    api_time(start),
                    api_time(end),
                    api_time(step)
                ),
            });
        }
    }
    out
}

/// The series of an answer keyed by their labels, each with its points
/// as the API printed them.
fn series_of(body: &[u8]) -> Result<BTreeMap<String, Vec<serde_json::Value>>> {
    let j: serde_json::Value = serde_json::from_slice(body)?;
    let result = j
        .pointer("/data/result")
        .and_then(|r| r.as_array())
        .ok_or("answer without data.result")?;
    let mut out = BTreeMap::new();
    for s in result {
        let key = s.get("metric").map(|m| m.to_string()).unwrap_or_default();
        let points = match (s.get("value"), s.get("values")) {
            (Some(v), _) => vec![v.clone()],
            (None, Some(serde_json::Value::Array(vs))) => vs.clone(),
            _ => bail!("series without value(s): {key}"),
        };
        out.insert(key, points);
    }
    Ok(out)
}

fn result_len(body: &[u8]) -> usize {
    series_of(body).map_or(0, |s| s.len())
}

/// `None` when the bodies are equal byte for byte; otherwise how they
/// differ, series by series.
fn compare(single: &[u8], cluster: &[u8]) -> Option<String> {
    if single == cluster {
        return None;
    }
    let (a, b) = match (series_of(single), series_of(cluster)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            return Some(format!(
                "bodies differ: single {:?} vs cluster {:?}",
                String::from_utf8_lossy(&single[..single.len().min(200)]),
                String::from_utf8_lossy(&cluster[..cluster.len().min(200)])
            ))
        }
    };
    if a == b {
        return Some("bytes differ, same series and points (order or envelope)".into());
    }
    let only_a = a.keys().filter(|k| !b.contains_key(*k)).count();
    let only_b = b.keys().filter(|k| !a.contains_key(*k)).count();
    let mut differ = 0;
    let mut example = String::new();
    for (k, pa) in &a {
        if let Some(pb) = b.get(k) {
            if pa != pb {
                differ += 1;
                if example.is_empty() {
                    let at = pa.iter().zip(pb).position(|(x, y)| x != y);
                    example = match at {
                        Some(i) => format!("{k} point {i}: single {} vs cluster {}", pa[i], pb[i]),
                        None => format!("{k}: {} vs {} points", pa.len(), pb.len()),
                    };
                }
            }
        }
    }
    Some(format!(
        "DIFFER: {} vs {} series, {only_a} only in single, {only_b} only in cluster, \
         {differ} with different points{}",
        a.len(),
        b.len(),
        if example.is_empty() {
            String::new()
        } else {
            format!(" (first: {example})")
        }
    ))
}

/// Exact nearest-rank p50 and p99 over every run.
fn quantiles(v: &mut [Duration]) -> (Duration, Duration) {
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    v.sort();
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.5), rank(0.99))
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1e3;
    match m {
        m if m < 10.0 => format!("{m:.2}"),
        m if m < 100.0 => format!("{m:.1}"),
        m => format!("{m:.0}"),
    }
}

/// Node 1's fan-out counters: read RPCs to itself and to its peers (their
/// time too), and shards asked.
#[derive(Default, Clone, Copy)]
struct Fanout {
    local_rpcs: f64,
    remote_rpcs: f64,
    remote_rpc_secs: f64,
    shards: f64,
}

fn parse_fanout(text: &str, own_id: &str) -> Fanout {
    let mut f = Fanout::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let own = series.contains(&format!("peer=\"{own_id}\""));
        if series.starts_with("pharos_cluster_read_rpc_duration_seconds_count{") {
            if own {
                f.local_rpcs += v;
            } else {
                f.remote_rpcs += v;
            }
        } else if series.starts_with("pharos_cluster_read_rpc_duration_seconds_sum{") && !own {
            f.remote_rpc_secs += v;
        } else if series.starts_with("pharos_cluster_read_shards") {
            f.shards += v;
        }
    }
    f
}

async fn fanout(h: &mut Http) -> Result<Fanout> {
    let body = h.get_ok("/metrics").await?;
    Ok(parse_fanout(&String::from_utf8_lossy(&body), "1"))
}

/// Waits until every series is visible through `h`.
async fn wait_visible(h: &mut Http, w: &Workload, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    let path = format!(
        "/api/v1/query?query={}&time={}",
        pct_encode("count({__name__=~\"http_.+|node_.+\"})"),
        api_time(w.end_ms())
    );
    let mut seen = String::from("nothing");
    while started.elapsed() < within {
        if let Ok((200, body)) = h.get(&path).await {
            let n = series_of(&body)
                .ok()
                .and_then(|s| s.into_values().next())
                .and_then(|p| p.first()?.get(1)?.as_str().map(str::to_string));
            if n.as_deref() == Some(w.series().to_string().as_str()) {
                return Ok(started.elapsed());
            }
            seen = n.unwrap_or_else(|| "no answer".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!(
        "{} series visible after {within:?} ({seen}); expected {}",
        h.addr,
        w.series()
    )
}

struct Row {
    case: usize,
    series: usize,
    bytes: usize,
    single: (Duration, Duration, usize),
    cluster: (Duration, Duration, usize),
    /// CPU seconds per query: the single node; the cluster's node 1 and
    /// the other nodes.
    cpu_single: f64,
    cpu_entry: f64,
    cpu_peers: f64,
    fan: Fanout,
    verdict: Option<String>,
}

fn ratio(r: &Row) -> f64 {
    r.cluster.0.as_secs_f64() / r.single.0.as_secs_f64().max(1e-9)
}

/// Asks every case of both, compares, and (unless `timed` is off) times
/// alternating runs.
async fn query_phase(
    single: &Deployment,
    cluster: &Deployment,
    cs: &[Case],
    args: &Args,
    timed: bool,
    deadline: &Deadline,
    tck: f64,
) -> Result<Vec<Row>> {
    let mut hs = Http::new(single.entry());
    let mut hc = Http::new(cluster.entry());
    let mut hm = Http::new(cluster.entry());
    let budget = Duration::from_secs_f64(args.max_secs);
    let mut rows = Vec::new();
    for (ci, c) in cs.iter().enumerate() {
        deadline.check(&format!("query {} ({})", c.query, c.shape))?;
        let a = hs.get_ok(&c.path).await?;
        let b = hc.get_ok(&c.path).await?;
        let verdict = compare(&a, &b);
        let mut row = Row {
            case: ci,
            series: result_len(&a),
            bytes: a.len(),
            single: Default::default(),
            cluster: Default::default(),
            cpu_single: 0.0,
            cpu_entry: 0.0,
            cpu_peers: 0.0,
            fan: Fanout::default(),
            verdict,
        };
        if timed {
            let f0 = fanout(&mut hm).await?;
            let (s0, c0) = (single.cpu(tck)?, cluster.cpu(tck)?);
            let (mut ts, mut tc) = (Vec::new(), Vec::new());
            let (mut spent_s, mut spent_c) = (Duration::ZERO, Duration::ZERO);
            // Both get the same number of runs: stop when either's budget
            // is spent (after at least 5) or the run's time is nearly up.
            while ts.len() < args.runs
                && (ts.len() < 5 || (spent_s < budget && spent_c < budget))
                && deadline.left() > Duration::from_secs(30)
            {
                let t = Instant::now();
                hs.get_ok(&c.path).await?;
                let d = t.elapsed();
                ts.push(d);
                spent_s += d;
                let t = Instant::now();
                hc.get_ok(&c.path).await?;
                let d = t.elapsed();
                tc.push(d);
                spent_c += d;
            }
            let (s1, c1) = (single.cpu(tck)?, cluster.cpu(tck)?);
            let f1 = fanout(&mut hm).await?;
            let n = ts.len().max(1) as f64;
            row.cpu_single = (s1[0] - s0[0]) / n;
            row.cpu_entry = (c1[0] - c0[0]) / n;
            row.cpu_peers = c1.iter().zip(&c0).skip(1).map(|(b, a)| b - a).sum::<f64>() / n;
            row.fan = Fanout {
                local_rpcs: (f1.local_rpcs - f0.local_rpcs) / n,
                remote_rpcs: (f1.remote_rpcs - f0.remote_rpcs) / n,
                remote_rpc_secs: (f1.remote_rpc_secs - f0.remote_rpc_secs) / n,
                shards: (f1.shards - f0.shards) / n,
            };
            let (p50, p99) = quantiles(&mut ts);
            row.single = (p50, p99, ts.len());
            let (p50, p99) = quantiles(&mut tc);
            row.cluster = (p50, p99, tc.len());
        }
        eprintln!(
            "  {:<2} {} [{}]: {} series; single p50 {} ms, {} p50 {} ms; {}",
            ci,
            c.query,
            c.shape,
            row.series,
            ms(row.single.0),
            cluster.name,
            ms(row.cluster.0),
            row.verdict.as_deref().unwrap_or("same bytes")
        );
        rows.push(row);
    }
    Ok(rows)
}

fn print_query_table(name: &str, cs: &[Case], rows: &[Row]) {
    println!();
    if rows.iter().all(|r| r.single.2 == 0) {
        println!("Answers: single node vs {name} through node 1 (not timed)");
        println!();
        println!("| query | shape | series | answers |");
        println!("|---|---|--:|---|");
        for r in rows {
            let c = &cs[r.case];
            println!(
                "| `{}` | {} | {} | {} |",
                c.query.replace('|', "\\|"),
                c.shape,
                r.series,
                r.verdict
                    .as_deref()
                    .unwrap_or("same bytes")
                    .replace('|', "\\|"),
            );
        }
        let differ = rows.iter().filter(|r| r.verdict.is_some()).count();
        println!();
        println!("SUMMARY {name}: {differ} answers differ from the single node");
        return;
    }
    println!("Queries: single node vs {name} through node 1 (p50/p99 ms; ratio = cluster p50 / single p50)");
    println!();
    println!(
        "| query | shape | series | answer bytes | single p50 | single p99 | {name} p50 | {name} p99 | ratio p50 | runs | CPU ms/query single | CPU ms/query node 1 + peers | read RPCs/query local + remote | remote RPC ms/query | shards/query | answers |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
    for r in rows {
        let c = &cs[r.case];
        println!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.1} | {:.1} + {:.1} | {:.1} + {:.1} | {:.2} | {:.1} | {} |",
            c.query.replace('|', "\\|"),
            c.shape,
            r.series,
            r.bytes,
            ms(r.single.0),
            ms(r.single.1),
            ms(r.cluster.0),
            ms(r.cluster.1),
            ratio(r),
            r.single.2,
            r.cpu_single * 1e3,
            r.cpu_entry * 1e3,
            r.cpu_peers * 1e3,
            r.fan.local_rpcs,
            r.fan.remote_rpcs,
            r.fan.remote_rpc_secs * 1e3,
            r.fan.shards,
            r.verdict.as_deref().unwrap_or("same bytes").replace('|', "\\|"),
        );
    }
    let ratios: Vec<f64> = rows.iter().map(ratio).collect();
    if !ratios.is_empty() {
        let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        let max = ratios.iter().cloned().fold(0.0, f64::max);
        let over = ratios.iter().filter(|r| **r > 1.5).count();
        let differ = rows.iter().filter(|r| r.verdict.is_some()).count();
        println!();
        println!(
            "SUMMARY {name}: p50 ratio geometric mean {geo:.2}, max {max:.2}, {over}/{} cases over 1.5x; {differ} answers differ from the single node",
            ratios.len()
        );
    }
}

// ---------------------------------------------------------------------------

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-cluster: runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(run()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench-cluster: {e}");
            1
        }
    };
    // Every Deployment was dropped (children killed) when run() returned.
    std::process::exit(code);
}

async fn run() -> Result<()> {
    let args = parse_args()?;
    let deadline = Deadline(Instant::now() + Duration::from_secs(args.deadline_secs));
    let tck = clock_ticks();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    // Whole hours, ending an hour ago: inside one 2 h block range, and old
    // enough that the heads take it in order.
    let span_h = (args.points as i64 * STEP_MS + HOUR_MS - 1) / HOUR_MS;
    let w = Workload {
        instances: args.instances,
        points: args.points,
        start_ms: (now_ms / HOUR_MS - 1 - span_h) * HOUR_MS,
    };
    println!(
        "workload: {} series ({} instances x {SERIES_PER_INSTANCE}, jobs {:?}) x {} points at 15 s = {} samples; \
         {} samples/request, {} senders; data {} .. {}; shards {}; fsync {}",
        w.series(),
        w.instances,
        JOBS,
        w.points,
        w.samples(),
        args.per_request,
        args.senders,
        api_time(w.start_ms),
        api_time(w.end_ms()),
        args.shards,
        args.fsync.as_deref().unwrap_or("server default (always)")
    );
    let t = Instant::now();
    let reqs = build_requests(&w, args.per_request, args.senders)?;
    println!(
        "encoded {} requests in {:.1} s: {:.0} MB protobuf, {:.0} MB snappy",
        reqs.senders.iter().map(Vec::len).sum::<usize>(),
        t.elapsed().as_secs_f64(),
        reqs.raw_bytes as f64 / 1e6,
        reqs.wire_bytes as f64 / 1e6
    );
    let work = tempfile::Builder::new()
        .prefix("pharos-bench-cluster.")
        .tempdir()?;
    let cs = cases(&w);

    let mut ingests: Vec<(String, usize, Ingest)> = Vec::new();
    let mut tables: Vec<(String, Vec<Row>)> = Vec::new();
    let mut single: Option<Deployment> = None;
    let mut failure = None;
    for name in &args.configs {
        let r = run_config(
            name,
            &args,
            work.path(),
            &w,
            &reqs,
            &cs,
            &mut single,
            &deadline,
            tck,
        )
        .await;
        match r {
            Ok((ing, rows, nodes)) => {
                ingests.push((name.clone(), nodes, ing));
                if let Some(rows) = rows {
                    tables.push((name.clone(), rows));
                }
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                failure = Some(format!("{name}: {e}"));
                break;
            }
        }
    }
    if let Some(s) = single.as_mut() {
        s.stop();
    }

    println!();
    println!("Ingestion (remote write; CPU and RSS summed over the deployment's processes)");
    println!();
    println!(
        "| config | writes to | samples | wall s | samples/s | CPU s | CPU s / M samples | CPU s per node | peak RSS (VmHWM) sum MiB | RSS after sum MiB | 429/5xx retries | load before → after |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|---|--:|--:|--:|---|");
    for (name, nodes, r) in &ingests {
        let cpu: f64 = r.cpu.iter().sum();
        let per_node: Vec<String> = r.cpu.iter().map(|c| format!("{c:.1}")).collect();
        println!(
            "| {name} | {} | {} | {:.1} | {:.0}k | {:.1} | {:.2} | {} | {} | {} | {} | {} → {} |",
            if name.ends_with("spread") {
                format!("all {nodes} nodes")
            } else {
                "node 1".into()
            },
            r.samples,
            r.wall.as_secs_f64(),
            r.samples as f64 / r.wall.as_secs_f64() / 1e3,
            cpu,
            cpu / (r.samples as f64 / 1e6),
            per_node.join(" / "),
            mib(r.hwm_sum),
            mib(r.rss_sum),
            r.retries,
            r.load_before,
            r.load_after
        );
        println!(
            "RESULT {name} ingest_samples_per_s {:.0} cpu_s_per_m {:.3} hwm_sum_bytes {}",
            r.samples as f64 / r.wall.as_secs_f64(),
            cpu / (r.samples as f64 / 1e6),
            r.hwm_sum
        );
    }
    for (name, rows) in &tables {
        print_query_table(name, &cs, rows);
    }
    println!();
    println!("load at the end: {}", load_average());
    if args.keep {
        let p = work.keep();
        println!("work dir kept: {}", p.display());
    }
    match failure {
        Some(f) => bail!("stopped early: {f}"),
        None => Ok(()),
    }
}

type ConfigResult = (Ingest, Option<Vec<Row>>, usize);

#[allow(clippy::too_many_arguments)]
async fn run_config(
    name: &str,
    args: &Args,
    work: &Path,
    w: &Workload,
    reqs: &Requests,
    cs: &[Case],
    single: &mut Option<Deployment>,
    deadline: &Deadline,
    tck: f64,
) -> Result<ConfigResult> {
    deadline.check(&format!("starting {name}"))?;
    let mut d = Deployment::start(name, args, work)?;
    let took = d.wait_ready(Duration::from_secs(90)).await?;
    println!(
        "{name}: {} node(s) ready in {:.1} s (pids {:?}, node 1 http {})",
        d.procs.len(),
        took.as_secs_f64(),
        d.procs.iter().map(Proc::pid).collect::<Vec<_>>(),
        d.entry()
    );
    let mut h = Http::new(d.entry());
    if name != "single" {
        let body = h.get_ok("/api/v1/cluster/shards").await?;
        let j: serde_json::Value = serde_json::from_slice(&body)?;
        let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
        let assignments = j
            .pointer("/data/assignments")
            .and_then(|a| a.as_array())
            .ok_or("no data.assignments in /api/v1/cluster/shards")?;
        for a in assignments {
            for r in a
                .get("replicas")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
            {
                *per_node.entry(r.as_u64().unwrap_or(0)).or_default() += 1;
            }
        }
        println!(
            "{name}: shard map: {} shards, replication factor {}, replicas per node {:?}",
            assignments.len(),
            j.pointer("/data/replication_factor")
                .cloned()
                .unwrap_or_default(),
            per_node
        );
    }
    // Let startup work (Raft, first flushes) settle before the baselines.
    tokio::time::sleep(Duration::from_secs(2)).await;
    deadline.check(&format!("ingesting into {name}"))?;
    let spread = name.ends_with("spread");
    println!("{name}: ingesting (load {})", load_average());
    let ing = ingest(&d, reqs, spread, tck).await?;
    d.check_alive()?;
    println!(
        "{name}: {} samples in {:.1} s = {:.0} samples/s, CPU {:.1} s ({:?}), {} retries",
        ing.samples,
        ing.wall.as_secs_f64(),
        ing.samples as f64 / ing.wall.as_secs_f64(),
        ing.cpu.iter().sum::<f64>(),
        ing.cpu
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>(),
        ing.retries
    );
    let vis = wait_visible(&mut h, w, Duration::from_secs(60)).await?;
    println!(
        "{name}: all {} series visible through node 1 after {:.1} s",
        w.series(),
        vis.as_secs_f64()
    );
    let nodes = d.procs.len();
    if name == "single" {
        *single = Some(d);
        return Ok((ing, None, nodes));
    }
    let Some(s) = single.as_ref() else {
        bail!("no single node to compare with");
    };
    println!(
        "{name}: {} queries (load {})",
        if spread {
            "comparing answers of"
        } else {
            "comparing and timing"
        },
        load_average()
    );
    let rows = query_phase(s, &d, cs, args, !spread, deadline, tck).await;
    d.check_alive()?;
    let rows = rows?;
    println!("{name}: stopping (load {})", load_average());
    d.stop();
    Ok((ing, Some(rows), nodes))
}
