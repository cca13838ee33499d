//! Scraping against real exporters: Debian's `prometheus-node-exporter` is
//! scraped by Pharos's scrape manager and by a real Prometheus 2.42 with the
//! same job config; both must see the same series (names and labels), and
//! when the exporter is killed both must record `up == 0` and staleness
//! markers.
//!
//! Skipped with a note when a binary is absent, unless
//! `PHAROS_REQUIRE_PEERS=1`, in which case the absence fails the test.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pharos_node::scrape::api::{self, StateFilter};
use pharos_node::scrape::config::ScrapeFile;
use pharos_node::scrape::manager::ScrapeManager;
use pharos_node::scrape::target::SingleNode;
use pharos_node::sink::{MetricMeta, SinkError, WriteOutcome, WriteSink};
use pharos_storage::chunk::is_stale_nan;
use pharos_storage::labels::{Labels, Matcher};

use crate::common::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

fn peers_available() -> bool {
    let missing: Vec<&str> = [PROMETHEUS, NODE_EXPORTER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("PHAROS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{missing:?} missing and PHAROS_REQUIRE_PEERS=1");
    }
    eprintln!("SKIP: {missing:?} not installed (apt-get install prometheus prometheus-node-exporter); set PHAROS_REQUIRE_PEERS=1 to fail instead");
    false
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prometheus 2.42 on `cfg`, its data under `dir/prom`, on a free port;
/// its stderr goes to `dir/prom.log` when `log`. Killed on drop.
fn start_prometheus(cfg: &std::path::Path, dir: &std::path::Path, log: bool) -> (Proc, SocketAddr) {
    let addr = free_addr();
    let stderr = if log {
        Stdio::from(std::fs::File::create(dir.join("prom.log")).unwrap())
    } else {
        Stdio::null()
    };
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prom").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    (Proc(child), addr)
}

/// Everything the manager writes, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Labels, i64, f64)>>);

impl WriteSink for Recorder {
    fn write(&self, batch: &[(Labels, i64, f64)]) -> Result<WriteOutcome, SinkError> {
        self.0.lock().extend_from_slice(batch);
        Ok(WriteOutcome {
            appended: batch.len(),
            rejected: Vec::new(),
        })
    }
    fn write_metadata(&self, _entries: Vec<(String, MetricMeta)>) {}
    fn delete(&self, _m: &[Matcher], _mint: i64, _maxt: i64) -> Result<u64, SinkError> {
        Ok(0)
    }
}

impl Recorder {
    /// Latest value of every series.
    fn latest(&self) -> BTreeMap<Labels, f64> {
        let mut m = BTreeMap::new();
        for (l, _, v) in self.0.lock().iter() {
            m.insert(l.clone(), *v);
        }
        m
    }
}

fn labels_of(metric: &serde_json::Value) -> Labels {
    let obj = metric.as_object().unwrap();
    Labels::from_pairs(obj.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())))
}

/// Series of `job="node"` Prometheus answers for an instant query now.
async fn prom_series(prom: SocketAddr, query: &str) -> BTreeMap<Labels, String> {
    let r = get(prom, &format!("/api/v1/query?{}", qs(&[("query", query)]))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                labels_of(&s["metric"]),
                s["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn wait_until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_exporter_same_series_as_prometheus_and_staleness_on_kill() {
    if !peers_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exp_addr = free_addr();
    // A fixed, cheap set of collectors keeps the series set stable.
    let mut exporter = Some(Proc(
        Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address={exp_addr}"))
            .args([
                "--collector.disable-defaults",
                "--collector.loadavg",
                "--collector.meminfo",
                "--collector.uname",
                "--collector.time",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let job = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ['{exp_addr}']
        labels:
          env: it
    relabel_configs:
      - source_labels: [__address__]
        regex: '(.*):\d+'
        target_label: host
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'go_.*'
        action: drop
"#
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, &job).unwrap();
    let (prom, prom_addr) = start_prometheus(&cfg, dir.path(), true);
    let rec = Arc::new(Recorder::default());
    let m = ScrapeManager::new(Arc::clone(&rec) as Arc<dyn WriteSink>, Arc::new(SingleNode));
    let f = ScrapeFile::parse(&job, &cfg).unwrap();
    m.apply(f.settings(&cfg));

    // Both up.
    wait_until("prometheus up == 1", 15, || async {
        tokio::net::TcpStream::connect(prom_addr).await.is_ok()
            && prom_series(prom_addr, "up{job=\"node\"}")
                .await
                .values()
                .any(|v| v == "1")
    })
    .await;
    wait_until("pharos up == 1", 5, || {
        let ok = rec
            .latest()
            .iter()
            .any(|(l, v)| l.metric_name() == Some("up") && *v == 1.0);
        async move { ok }
    })
    .await;
    // Let each scrape a couple more times so both hold a full scrape.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let pharos: BTreeSet<Labels> = rec
        .latest()
        .into_iter()
        .filter(|(_, v)| !is_stale_nan(*v))
        .map(|(l, _)| l)
        .collect();
    let prometheus: BTreeSet<Labels> = prom_series(prom_addr, "{job=\"node\"}")
        .await
        .into_keys()
        .collect();
    let only_pharos: Vec<_> = pharos.difference(&prometheus).collect();
    let only_prom: Vec<_> = prometheus.difference(&pharos).collect();
    assert!(
        only_pharos.is_empty() && only_prom.is_empty(),
        "series differ:\nonly in Pharos: {only_pharos:?}\nonly in Prometheus: {only_prom:?}"
    );
    assert!(pharos.len() > 20, "too few series: {}", pharos.len());
    assert!(pharos
        .iter()
        .all(|l| l.get("env") == Some("it") && l.get("host") == Some("127.0.0.1")));
    assert!(!pharos
        .iter()
        .any(|l| l.metric_name().is_some_and(|n| n.starts_with("go_"))));
    let t = api::targets(&m, StateFilter::Active, None);
    assert_eq!(t.active_targets[0].health, "up");

    // Kill the exporter mid-run.
    drop(exporter.take());
    wait_until("prometheus up == 0", 10, || async {
        prom_series(prom_addr, "up{job=\"node\"}")
            .await
            .values()
            .any(|v| v == "0")
    })
    .await;
    wait_until("pharos up == 0", 5, || {
        let ok = rec
            .latest()
            .iter()
            .any(|(l, v)| l.metric_name() == Some("up") && *v == 0.0);
        async move { ok }
    })
    .await;
    // Staleness: within the 5m lookback, an instant query only comes back
    // empty because of the markers.
    wait_until("prometheus marks node_load1 stale", 5, || async {
        prom_series(prom_addr, "node_load1{job=\"node\"}")
            .await
            .is_empty()
    })
    .await;
    let latest = rec.latest();
    let load1: Vec<f64> = latest
        .iter()
        .filter(|(l, _)| l.metric_name() == Some("node_load1"))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(load1.len(), 1);
    assert!(
        is_stale_nan(load1[0]),
        "node_load1 not marked stale: {load1:?}"
    );
    let stale_series = latest.values().filter(|v| is_stale_nan(**v)).count();
    assert!(
        stale_series + 5 >= pharos.len(),
        "only {stale_series} of {} series stale",
        pharos.len()
    );
    let t = api::targets(&m, StateFilter::Active, None);
    assert_eq!(t.active_targets[0].health, "down");
    assert!(!t.active_targets[0].last_error.is_empty());
    m.shutdown().await;
    drop(prom);
}

// ---------------------------------------------------------------------
// Benchmark (ignored; run in release, see BENCHMARKS.md):
//   cargo test --release -p pharos-node --test it scrape::bench_ -- --ignored --nocapture
// ---------------------------------------------------------------------

const BENCH_EXPORTER_ENV: &str = "PHAROS_SCRAPE_BENCH_EXPORTER";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) a process has used, from /proc (USER_HZ is
/// 100 on Linux).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_comm.split(' ').collect();
    // Fields 14 and 15 of stat; after the comm field they are 11 and 12 (0-based).
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// The exporter half of the benchmark, run in a child process (this test
/// binary re-executed with `BENCH_EXPORTER_ENV=<ports file>`), so its CPU
/// is not counted against the scraper. Serves `BENCH_TARGETS` listeners
/// with `BENCH_SERIES` series each over keep-alive HTTP/1.1.
#[test]
#[ignore]
fn bench_exporter_process() {
    let Ok(ports_file) = std::env::var(BENCH_EXPORTER_ENV) else {
        return;
    };
    let targets = env_usize("BENCH_TARGETS", 1000);
    let series = env_usize("BENCH_SERIES", 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let names: Arc<Vec<String>> = Arc::new(
            (0..series)
                .map(|i| format!("bench_metric_{}{{series=\"{i}\",kind=\"k{}\"}} ", i % 50, i % 7))
                .collect(),
        );
        let mut ports = Vec::new();
        for _ in 0..targets {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(l.local_addr().unwrap().port().to_string());
            let names = Arc::clone(&names);
            tokio::spawn(async move {
                let mut counter = 0u64;
                loop {
                    let Ok((mut s, _)) = l.accept().await else { return };
                    let names = Arc::clone(&names);
                    counter += 1;
                    let base = counter;
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 8192];
                        let mut n_req = 0u64;
                        loop {
                            // One request per read is enough for scrapers.
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            n_req += 1;
                            let mut body = String::with_capacity(names.len() * 48);
                            for (i, n) in names.iter().enumerate() {
                                body.push_str(n);
                                body.push_str(&((base * 1000 + n_req) * (i as u64 + 1)).to_string());
                                body.push('\n');
                            }
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            );
                            if s.write_all(head.as_bytes()).await.is_err()
                                || s.write_all(body.as_bytes()).await.is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            });
        }
        std::fs::write(&ports_file, ports.join("\n")).unwrap();
        // Serve until the parent kills us.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
}

/// Counts what the real storage appends.
struct Counting {
    inner: pharos_node::sink::LocalSink,
    appended: std::sync::atomic::AtomicU64,
}

impl WriteSink for Counting {
    fn write(&self, batch: &[(Labels, i64, f64)]) -> Result<WriteOutcome, SinkError> {
        let out = self.inner.write(batch)?;
        self.appended
            .fetch_add(out.appended as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }
    fn write_hinted(
        &self,
        batch: &[(Labels, i64, f64)],
        hints: &[Option<pharos_storage::head::SeriesRef>],
    ) -> Result<(WriteOutcome, Vec<Option<pharos_storage::head::SeriesRef>>), SinkError> {
        let (out, refs) = self.inner.write_hinted(batch, hints)?;
        self.appended
            .fetch_add(out.appended as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((out, refs))
    }
    fn write_metadata(&self, entries: Vec<(String, MetricMeta)>) {
        self.inner.write_metadata(entries)
    }
    fn delete(&self, m: &[Matcher], mint: i64, maxt: i64) -> Result<u64, SinkError> {
        self.inner.delete(m, mint, maxt)
    }
}

async fn prom_counter(addr: SocketAddr, name: &str) -> f64 {
    let r = get(addr, "/metrics").await;
    let text = r.text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// Scrape-and-ingest CPU per million samples, Pharos vs Prometheus 2.42,
/// one after the other on the same exporter.
#[test]
#[ignore]
fn bench_scrape_ingest_vs_prometheus() {
    if std::env::var(BENCH_EXPORTER_ENV).is_ok() || !peers_available() {
        return;
    }
    let targets = env_usize("BENCH_TARGETS", 1000);
    let series = env_usize("BENCH_SERIES", 1000);
    let interval = env_usize("BENCH_INTERVAL_S", 10) as u64;
    let warmup = Duration::from_secs(env_usize("BENCH_WARMUP_S", 25) as u64);
    let window = Duration::from_secs(env_usize("BENCH_WINDOW_S", 30) as u64);
    let dir = tempfile::tempdir().unwrap();
    let ports_file = dir.path().join("ports");
    let _exporter = Proc(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "scrape::bench_exporter_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(BENCH_EXPORTER_ENV, &ports_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let ports = loop {
        if let Ok(t) = std::fs::read_to_string(&ports_file) {
            let p: Vec<String> = t.lines().map(str::to_string).collect();
            if p.len() == targets {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "exporter did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    let target_list = ports
        .iter()
        .map(|p| format!("'127.0.0.1:{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let job = format!(
        "global:\n  scrape_interval: {interval}s\n  scrape_timeout: {interval}s\nscrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: [{target_list}]\n"
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, &job).unwrap();
    let expected_rate = (targets * (series + 5)) as f64 / interval as f64;

    // Pharos: scrape manager into real storage.
    let (pharos_cpu, pharos_samples) = {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let db = Arc::new(
                pharos_storage::db::Db::open(dir.path().join("pharos"), Default::default())
                    .unwrap(),
            );
            let sink = Arc::new(Counting {
                inner: pharos_node::sink::LocalSink::new(
                    db,
                    Arc::new(pharos_node::sink::MetadataStore::new(10_000)),
                ),
                appended: Default::default(),
            });
            let m = ScrapeManager::new(
                Arc::clone(&sink) as Arc<dyn WriteSink>,
                Arc::new(SingleNode),
            );
            m.apply(ScrapeFile::parse(&job, &cfg).unwrap().settings(&cfg));
            tokio::time::sleep(warmup).await;
            let c0 = cpu_seconds("self");
            let s0 = sink.appended.load(std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(window).await;
            let c1 = cpu_seconds("self");
            let s1 = sink.appended.load(std::sync::atomic::Ordering::Relaxed);
            let up = api::targets(&m, StateFilter::Active, None)
                .active_targets
                .iter()
                .filter(|t| t.health == "up")
                .count();
            eprintln!("pharos: {up}/{targets} targets up");
            m.shutdown().await;
            (c1 - c0, (s1 - s0) as f64)
        })
    };

    // Prometheus 2.42 on the same targets.
    let (prom, prom_addr) = start_prometheus(&cfg, dir.path(), false);
    let pid = prom.0.id().to_string();
    let (prom_cpu, prom_samples) = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::sleep(warmup).await;
            let name = "prometheus_tsdb_head_samples_appended_total{type=\"float\"}";
            // Rates over each reading's own window: the counter is read over
            // HTTP from a busy process, so its window can drift from the CPU
            // readings'.
            let c0 = (cpu_seconds(&pid), Instant::now());
            let s0 = (prom_counter(prom_addr, name).await, Instant::now());
            tokio::time::sleep(window).await;
            let c1 = (cpu_seconds(&pid), Instant::now());
            let s1 = (prom_counter(prom_addr, name).await, Instant::now());
            let cpu_rate = (c1.0 - c0.0) / (c1.1 - c0.1).as_secs_f64();
            let sample_rate = (s1.0 - s0.0) / (s1.1 - s0.1).as_secs_f64();
            let secs = window.as_secs_f64();
            (cpu_rate * secs, sample_rate * secs)
        })
    };
    drop(prom);
    let per_m = |cpu: f64, n: f64| if n > 0.0 { cpu / (n / 1e6) } else { f64::NAN };
    println!(
        "scrape bench: {targets} targets x {series} series every {interval}s (expected {expected_rate:.0} samples/s), window {}s",
        window.as_secs()
    );
    println!(
        "pharos:     {pharos_samples:.0} samples, {pharos_cpu:.2} CPU s, {:.3} CPU s per million samples",
        per_m(pharos_cpu, pharos_samples)
    );
    println!(
        "prometheus: {prom_samples:.0} samples, {prom_cpu:.2} CPU s, {:.3} CPU s per million samples",
        per_m(prom_cpu, prom_samples)
    );
    assert!(pharos_samples > 0.0 && prom_samples > 0.0);
}

/// Target relabeling, differential: a real Prometheus 2.42 and Pharos's
/// `populate` get the same jobs (one per rule set) and must agree on every
/// target's final labels, or on dropping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_relabeling_matches_prometheus() {
    if !peers_available() {
        return;
    }
    use pharos_node::scrape::target::{group_labels, populate, Populated};
    let cases: &[(&str, &str)] = &[
        ("{a: foo, b: bar}", "- source_labels: [a, b]\n  regex: 'f(.*);(.*)r'\n  target_label: c\n  replacement: 'x${1}-${2}y'"),
        ("{a: foo}", "- source_labels: [a]\n  regex: o\n  target_label: c\n  replacement: hit"),
        ("{a: foo}", "- source_labels: [missing]\n  target_label: a"),
        ("{a: foo}", "- source_labels: [a]\n  regex: '(?P<first>\\w)(?P<rest>.*)'\n  target_label: b\n  replacement: '$${rest}=${rest}$first'"),
        ("{a: foo}", "- source_labels: [a]\n  target_label: 'lbl_${1}'\n  replacement: x"),
        ("{a: '1bad'}", "- source_labels: [a]\n  target_label: '${1}'\n  replacement: x"),
        ("{a: foo}", "- source_labels: [a]\n  regex: '(f)(o)o'\n  target_label: b\n  replacement: '$10-${1}0'"),
        ("{a: foo}", "- source_labels: [a]\n  regex: 'f.*'\n  action: keep"),
        ("{a: boo}", "- source_labels: [a]\n  regex: 'f.*'\n  action: keep"),
        ("{a: foo}", "- source_labels: [a]\n  regex: 'f.*'\n  action: drop"),
        ("{a: '1', b: '1'}", "- source_labels: [a]\n  target_label: b\n  action: keepequal"),
        ("{a: '1', b: '2'}", "- source_labels: [a]\n  target_label: b\n  action: keepequal"),
        ("{a: '1', b: '1'}", "- source_labels: [a]\n  target_label: b\n  action: dropequal"),
        ("{a: foo, c: baz}", "- source_labels: [c]\n  target_label: d\n  action: hashmod\n  modulus: 1000"),
        ("{a: foo, c: baz}", "- source_labels: [a, c]\n  target_label: d\n  action: hashmod\n  modulus: 7"),
        ("{x_my_a: '1', x_other: '2'}", "- regex: 'x_(my.*)'\n  replacement: 'y_${1}_z'\n  action: labelmap"),
        ("{a: '1', b1: '2', ab: '3'}", "- regex: 'b.*'\n  action: labeldrop"),
        ("{a: '1', b1: '2'}", "- regex: 'b.*|job|instance|__.*'\n  action: labelkeep"),
        ("{a: FoO, b: BaR}", "- source_labels: [a, b]\n  target_label: c\n  action: lowercase"),
        ("{a: foo}", "- source_labels: [a]\n  separator: ''\n  target_label: a\n  action: uppercase"),
        ("{a: 'a\\nb'}", "- source_labels: [a]\n  regex: 'a.b'\n  target_label: m\n  replacement: y"),
        ("{d: \"\\u0663\"}", "- source_labels: [d]\n  regex: '\\d'\n  target_label: m\n  replacement: y"),
        ("{a: x}", "- target_label: instance\n  replacement: inst\n- source_labels: [__address__]\n  regex: '(.*):\\d+'\n  target_label: host"),
        ("{a: x}", "- target_label: __param_q\n  replacement: v\n- target_label: __metrics_path__\n  replacement: /probe"),
    ];
    let mut yaml =
        String::from("global:\n  scrape_interval: 1h\n  scrape_timeout: 10s\nscrape_configs:\n");
    for (i, (labels, rules)) in cases.iter().enumerate() {
        let rules = rules.replace('\n', "\n      ");
        yaml.push_str(&format!(
            "  - job_name: j{i}\n    static_configs:\n      - targets: ['127.0.0.1:1']\n        labels: {labels}\n    relabel_configs:\n      {rules}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let (_prom, prom_addr) = start_prometheus(&cfg, dir.path(), false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let data = loop {
        assert!(
            Instant::now() < deadline,
            "prometheus did not list every job"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tokio::net::TcpStream::connect(prom_addr).await.is_err() {
            continue;
        }
        let r = get(prom_addr, "/api/v1/targets?state=any").await;
        if r.status != 200 {
            continue;
        }
        let d = r.json();
        let n = d["data"]["activeTargets"].as_array().map_or(0, Vec::len)
            + d["data"]["droppedTargets"].as_array().map_or(0, Vec::len);
        if n == cases.len() {
            break d;
        }
    };
    let settings = ScrapeFile::parse(&yaml, &cfg).unwrap().settings(&cfg);
    let mut mismatches = Vec::new();
    for (i, job) in settings.jobs.iter().enumerate() {
        let name = format!("j{i}");
        let prom_active = data["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["scrapePool"] == name.as_str())
            .map(|t| {
                (
                    labels_of(&t["labels"]),
                    t["scrapeUrl"].as_str().unwrap().to_string(),
                )
            });
        let g = group_labels("127.0.0.1:1", &job.static_configs[0].labels, &[]);
        let ours = match populate(job, &g).unwrap() {
            Populated::Active(t) => Some((t.series_labels(), t.url.clone())),
            Populated::Dropped(_) => None,
        };
        if prom_active != ours {
            mismatches.push(format!(
                "case {i} {:?}: prometheus {prom_active:?}, pharos {ours:?}",
                cases[i]
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // Both sides really ran the rules: 4 of the cases drop their target.
    assert_eq!(
        data["data"]["droppedTargets"].as_array().map(Vec::len),
        Some(4)
    );
}

/// Sample labeling, differential: target labels against scraped ones
/// (`honor_labels` off and on, `exported_` prefixes, empty values) and
/// metric relabeling, Prometheus 2.42 scraping a fixed body versus Pharos's
/// `process_body` on the same body.
async fn labeling_differential(
    body: &'static str,
    content_type: &'static str,
    jobs: &str,
    expect_series: usize,
) {
    use pharos_node::scrape::exposition::Format;
    use pharos_node::scrape::scrape_loop::{process_body, SeriesCache};
    use pharos_node::scrape::target::{group_labels, populate, Populated};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exp = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let yaml = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}",
        jobs.replace("{exp}", &exp.to_string())
    );
    let n_jobs = yaml.matches("job_name").count();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let (_prom, prom_addr) = start_prometheus(&cfg, dir.path(), false);
    wait_until("prometheus scraped all three jobs", 20, || async {
        tokio::net::TcpStream::connect(prom_addr).await.is_ok()
            && prom_series(prom_addr, "up == 1").await.len() == n_jobs
    })
    .await;
    let prometheus: BTreeSet<Labels> =
        prom_series(prom_addr, "{__name__=~\".+\",__name__!~\"up|scrape_.+\"}")
            .await
            .into_keys()
            .collect();
    let settings = ScrapeFile::parse(&yaml, &cfg).unwrap().settings(&cfg);
    let mut pharos = BTreeSet::new();
    for job in &settings.jobs {
        let g = group_labels(&exp.to_string(), &job.static_configs[0].labels, &[]);
        let Populated::Active(t) = populate(job, &g).unwrap() else {
            panic!("dropped")
        };
        let format = Format::from_content_type(Some(content_type));
        let b = process_body(
            body.as_bytes(),
            format,
            &t.series_labels(),
            job,
            0,
            &mut SeriesCache::default(),
        )
        .unwrap();
        pharos.extend(b.samples.into_iter().map(|(l, _, _)| l));
    }
    let only_pharos: Vec<_> = pharos.difference(&prometheus).collect();
    let only_prom: Vec<_> = prometheus.difference(&pharos).collect();
    assert!(
        only_pharos.is_empty() && only_prom.is_empty(),
        "series differ:\nonly in Pharos: {only_pharos:?}\nonly in Prometheus: {only_prom:?}"
    );
    assert_eq!(pharos.len(), expect_series, "{pharos:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_labeling_matches_prometheus() {
    if !peers_available() {
        return;
    }
    const BODY: &str = "# TYPE m gauge\nm{job=\"inner\",instance=\"x\",exported_job=\"e\",a=\"1\"} 1\nm{job=\"\",b=\"2\"} 2\nn{env=\"scraped\",exported_env=\"x\"} 3\n";
    let jobs = r#"  - job_name: plain
    static_configs: [{targets: ['{exp}'], labels: {env: test}}]
  - job_name: honor
    honor_labels: true
    static_configs: [{targets: ['{exp}'], labels: {env: test}}]
  - job_name: mrelabel
    static_configs: [{targets: ['{exp}']}]
    metric_relabel_configs:
      - action: labeldrop
        regex: a
      - source_labels: [exported_job, b]
        separator: '|'
        target_label: joined
      - source_labels: [__name__]
        regex: n
        action: drop
"#;
    labeling_differential(BODY, "text/plain; version=0.0.4", jobs, 8).await;
}

/// The same for an OpenMetrics body: counters with `_total` and `_created`,
/// info, stateset, histogram, escapes, exemplars and units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_series_match_prometheus() {
    if !peers_available() {
        return;
    }
    const BODY: &str = "# TYPE req counter\n# HELP req Requests \\\"x\\\".\nreq_total{code=\"200\"} 10 # {trace_id=\"a\"} 1\nreq_created{code=\"200\"} 1.7e9\n# TYPE build info\nbuild_info{version=\"1.0\",path=\"C:\\\\x\\ny\"} 1\n# TYPE state stateset\nstate{state=\"on\"} 1\nstate{state=\"off\"} 0\n# TYPE lat_seconds histogram\n# UNIT lat_seconds seconds\nlat_seconds_bucket{le=\"0.1\"} 1\nlat_seconds_bucket{le=\"+Inf\"} 2\nlat_seconds_count 2\nlat_seconds_sum 0.3\n# EOF\n";
    let jobs = "  - job_name: om\n    static_configs: [{targets: ['{exp}']}]\n";
    labeling_differential(
        BODY,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        jobs,
        9,
    )
    .await;
}
