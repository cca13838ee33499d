//! Scraping against real exporters: Debian's `prometheus-node-exporter` is
//! scraped by Pharos's scrape manager and by a real Prometheus 2.42 with the
//! same job config; both must see the same series (names and labels), and
//! when the exporter is killed both must record `up == 0` and staleness
//! markers.
//!
//! Skipped with a note when a binary is absent, unless
//! `PHAROS_REQUIRE_PEERS=1`, in which case the absence fails the test.

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
    let prom_addr = free_addr();
    let prom = Proc(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("prom").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prom.log")).unwrap())
            .spawn()
            .unwrap(),
    );
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
