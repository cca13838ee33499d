//! Against a real Prometheus 2.42 (`/usr/bin/prometheus`, Debian package
//! `prometheus`): one Prometheus scrapes itself and Pharos and remote-writes
//! into Pharos, and the raw samples both hold up to a cut-off time must be
//! identical (compared through both HTTP APIs, as JSON values); a second
//! Prometheus with Pharos as `remote_read` must answer the same again.
//!
//! Skipped with a note when the binary is absent, unless
//! `PHAROS_REQUIRE_PEERS=1`, in which case the absence fails the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";

pub(crate) fn prometheus_available() -> bool {
    if Path::new(PROMETHEUS).exists() {
        return true;
    }
    if std::env::var("PHAROS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{PROMETHEUS} is missing and PHAROS_REQUIRE_PEERS=1");
    }
    eprintln!("SKIP: {PROMETHEUS} not installed (apt-get install prometheus); set PHAROS_REQUIRE_PEERS=1 to fail instead");
    false
}

pub(crate) fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A Prometheus child process, killed on drop.
pub(crate) struct Prom {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: PathBuf,
}

impl Prom {
    fn start(dir: &Path, name: &str, config: &str) -> Prom {
        Prom::start_with(dir, name, config, &[])
    }

    /// Like `start`, with extra command-line flags.
    pub(crate) fn start_with(dir: &Path, name: &str, config: &str, flags: &[&str]) -> Prom {
        let addr = free_addr();
        let cfg = dir.join(format!("{name}.yml"));
        std::fs::write(&cfg, config.replace("SELF", &addr.to_string())).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join(format!("{name}-data")).display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.remote.flush-deadline=5s")
            .arg("--log.level=info")
            .args(flags)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Prom { child, addr, log }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && get(self.addr, "/-/ready").await.status == 200
            {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("prometheus exited with {st}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// All raw samples at or before `t` (seconds) as `{labels → [[t, "v"], …]}`.
async fn raw_samples(addr: SocketAddr, t: i64) -> serde_json::Map<String, Value> {
    let q = qs(&[
        ("query", "{__name__=~\".+\"}[10m]"),
        ("time", &t.to_string()),
    ]);
    let r = get(addr, &format!("/api/v1/query?{q}")).await;
    assert_eq!(r.status, 200, "{addr}: {}", r.text());
    let v = r.json();
    let mut out = serde_json::Map::new();
    for s in v["data"]["result"].as_array().unwrap() {
        out.insert(s["metric"].to_string(), s["values"].clone());
    }
    out
}

fn diff(a: &serde_json::Map<String, Value>, b: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => d.push(format!("missing series {k}")),
            Some(w) if w != v => d.push(format!("samples differ for {k}: {v} vs {w}")),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            d.push(format!("extra series {k}"));
        }
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write_and_remote_read() {
    if !prometheus_available() {
        return;
    }
    let n = node().await;
    let dir = tempfile::tempdir().unwrap();
    let pharos = n.addr;
    let writer_cfg = format!(
        r#"
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["SELF"]
  - job_name: pharos
    static_configs:
      - targets: ["{pharos}"]
remote_write:
  - url: http://{pharos}/api/v1/write
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 100ms
      max_backoff: 1s
    metadata_config:
      send: true
      send_interval: 1s
"#
    );
    let mut writer = Prom::start(dir.path(), "writer", &writer_cfg);
    writer.wait_ready().await;
    // Prometheus starts scraping a few seconds after it is ready (target
    // updates are batched): wait for five scrapes of both targets.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = qs(&[("query", "min(count_over_time(up[1m])) >= 5")]);
        let v = get(writer.addr, &format!("/api/v1/query?{q}")).await.json();
        if v["data"]["result"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape:\n{}",
            writer.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cut = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 2;
    let want = raw_samples(writer.addr, cut).await;
    assert!(
        want.len() > 100,
        "prometheus holds only {} series at {cut}:\n{}",
        want.len(),
        writer.log()
    );
    assert!(
        want.keys().any(|k| k.contains("\"job\":\"pharos\"")),
        "pharos was not scraped"
    );
    // Pharos catches up within a few seconds (remote write batches).
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = raw_samples(pharos, cut).await;
        if diff(&want, &got).is_empty() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let d = diff(&want, &got);
    assert!(
        d.is_empty(),
        "{} differences, first: {:?}\nprometheus log:\n{}",
        d.len(),
        &d[..d.len().min(5)],
        writer.log()
    );
    let samples: usize = want
        .values()
        .map(|v| v.as_array().map_or(0, |a| a.len()))
        .sum();
    eprintln!(
        "pharos holds the same {} series / {samples} samples as prometheus",
        want.len()
    );

    // Metadata arrived too.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = get(pharos, "/api/v1/metadata?metric=prometheus_build_info")
            .await
            .json();
        if v["data"]["prometheus_build_info"][0]["type"] == "gauge" {
            break;
        }
        assert!(Instant::now() < deadline, "no metadata: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The series endpoint agrees as well.
    let q = qs(&[
        ("match[]", "{job=\"prometheus\"}"),
        ("start", &(cut - 60).to_string()),
        ("end", &cut.to_string()),
    ]);
    let a = get(writer.addr, &format!("/api/v1/series?{q}"))
        .await
        .json();
    let b = get(pharos, &format!("/api/v1/series?{q}")).await.json();
    assert_eq!(a["data"], b["data"]);

    // The same PromQL over the same data answers byte for byte alike.
    differential(writer.addr, pharos, cut).await;

    // A second Prometheus reads from Pharos and must see the same samples.
    let reader_cfg = format!(
        r#"
global:
  scrape_interval: 1m
remote_read:
  - url: http://{pharos}/api/v1/read
    read_recent: true
"#
    );
    let mut reader = Prom::start(dir.path(), "reader", &reader_cfg);
    reader.wait_ready().await;
    let via_read = raw_samples(reader.addr, cut).await;
    let d = diff(&want, &via_read);
    assert!(
        d.is_empty(),
        "remote read: {} differences, first: {:?}\n{}",
        d.len(),
        &d[..d.len().min(5)],
        reader.log()
    );
    drop(reader);
    drop(writer);
    n.stop().await;
}

/// Instant and range queries whose Prometheus 2.42 and 3.x semantics agree
/// on scrape-shaped data: both servers must return identical bytes.
///
/// Left out on purpose, because Pharos follows Prometheus 3 where 2.42
/// differs: `rate`/`increase` (3.x caps the extrapolation towards the
/// counter's zero point after, not before, the half-interval rule, so
/// windows with few samples give other values).
const INSTANT: &[&str] = &[
    "up",
    "sum by (job) (up)",
    "count({__name__=~\".+\"})",
    "count by (job) ({__name__=~\".+\"})",
    "go_goroutines > 0",
    "up == bool 1",
    "scrape_samples_scraped / scrape_series_added",
    "max_over_time(scrape_duration_seconds[5s])",
    "count_over_time(up[10s])",
    "label_replace(up, \"x\", \"$1\", \"job\", \"(.*)\")",
    "topk(2, scrape_samples_scraped)",
    "scalar(count(up))",
    "vector(1.5) * 2",
    "time()",
    "-1/0",
    "absent(nonexistent_metric)",
    "sort_desc(scrape_samples_scraped)",
];

const RANGE: &[&str] = &[
    "up",
    "sum by (job) (scrape_samples_scraped)",
    "count({__name__=~\"go_.*\"})",
];

async fn differential(prom: SocketAddr, pharos: SocketAddr, cut: i64) {
    let mut failures = Vec::new();
    let mut compared = 0;
    // Before the cut-off: both hold exactly the same samples up to it.
    for q in INSTANT {
        let path = format!(
            "/api/v1/query?{}",
            qs(&[("query", q), ("time", &format!("{}.25", cut - 1))])
        );
        let a = get(prom, &path).await;
        let b = get(pharos, &path).await;
        compared += 1;
        if a.status != b.status || a.body != b.body {
            failures.push(format!(
                "{q}\n  prometheus {}: {}\n  pharos     {}: {}",
                a.status,
                a.text(),
                b.status,
                b.text()
            ));
        }
    }
    for q in RANGE {
        let path = format!(
            "/api/v1/query_range?{}",
            qs(&[
                ("query", q),
                ("start", &(cut - 5).to_string()),
                ("end", &cut.to_string()),
                ("step", "0.5")
            ])
        );
        let a = get(prom, &path).await;
        let b = get(pharos, &path).await;
        compared += 1;
        if a.status != b.status || a.body != b.body {
            failures.push(format!(
                "{q}\n  prometheus {}: {}\n  pharos     {}: {}",
                a.status,
                a.text(),
                b.status,
                b.text()
            ));
        }
    }
    // Errors answer with the same envelope and text.
    for (path, _) in [
        ("/api/v1/query?query=up&time=yesterday", ()),
        ("/api/v1/query_range?query=up&start=10&end=5&step=1", ()),
        ("/api/v1/query_range?query=up&start=0&end=100000&step=1", ()),
        ("/api/v1/query_range?query=up&start=1&end=5&step=0", ()),
        ("/api/v1/series", ()),
    ] {
        let a = get(prom, path).await;
        let b = get(pharos, path).await;
        compared += 1;
        if a.status != b.status || a.body != b.body {
            failures.push(format!(
                "{path}\n  prometheus {}: {}\n  pharos     {}: {}",
                a.status,
                a.text(),
                b.status,
                b.text()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} answers differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{compared} queries answered byte for byte like prometheus");
}

/// Series for the static differential test: counters with a reset, gauges
/// with awkward values, a classic histogram, and a series that goes stale.
fn static_data(base: i64) -> pharos_proto::prometheus::WriteRequest {
    let mut ts = Vec::new();
    let steps = 41; // 10 minutes at 15 s
    for (i, (code, handler)) in [("200", "/api"), ("500", "/api"), ("200", "/metrics")]
        .iter()
        .enumerate()
    {
        for inst in ["a:80", "b:80"] {
            let samples: Vec<(i64, f64)> = (0..steps)
                .map(|k| {
                    let mut v =
                        (k as f64) * (i as f64 + 1.5) + if inst == "b:80" { 7.0 } else { 0.0 };
                    if inst == "b:80" && k >= 30 {
                        v -= 40.0 + 30.0 * (i as f64 + 1.5); // a counter reset
                    }
                    (base + k * 15_000, v.max(0.0))
                })
                .collect();
            ts.push(series(
                &[
                    ("__name__", "http_requests_total"),
                    ("code", code),
                    ("handler", handler),
                    ("instance", inst),
                    ("job", "api"),
                ],
                &samples,
            ));
        }
    }
    for (room, f) in [
        ("kitchen", 0.1),
        ("hall", -3.25),
        ("attic", 1e10),
        ("cellar", 1.5e-9),
        ("lab", 123456.789),
    ] {
        let samples: Vec<(i64, f64)> = (0..steps)
            .map(|k| (base + k * 15_000, f * (1.0 + (k % 7) as f64 / 3.0)))
            .collect();
        ts.push(series(
            &[("__name__", "temperature_celsius"), ("room", room)],
            &samples,
        ));
    }
    let bounds = ["0.1", "0.5", "1", "5", "+Inf"];
    for (j, le) in bounds.iter().enumerate() {
        let samples: Vec<(i64, f64)> = (0..steps)
            .map(|k| (base + k * 15_000, (k * (j as i64 + 1) * 3) as f64))
            .collect();
        ts.push(series(
            &[
                ("__name__", "req_duration_seconds_bucket"),
                ("job", "api"),
                ("le", le),
            ],
            &samples,
        ));
    }
    let mut gone: Vec<(i64, f64)> = (0..20).map(|k| (base + k * 15_000, 1.0)).collect();
    gone.push((base + 20 * 15_000, f64::from_bits(0x7ff0_0000_0000_0002)));
    ts.push(series(&[("__name__", "gone"), ("job", "api")], &gone));
    write_req(ts)
}

/// Left out: `exp` (Go's `math.Exp` and Rust's differ in the last bit for
/// some inputs) and `avg_over_time` (2.42 averages incrementally, Prometheus
/// 3 sums with Kahan compensation and divides: last-digit differences).
const STATIC_INSTANT: &[&str] = &[
    "http_requests_total",
    "temperature_celsius",
    "sum(http_requests_total)",
    "sum by (code) (http_requests_total)",
    "avg without (instance) (http_requests_total)",
    "max by (handler) (http_requests_total) - min by (handler) (http_requests_total)",
    "count_values(\"value\", round(temperature_celsius))",
    "topk(2, temperature_celsius)",
    "bottomk(1, temperature_celsius)",
    "quantile(0.3, temperature_celsius)",
    "stddev(temperature_celsius)",
    "irate(http_requests_total[1m])",
    "resets(http_requests_total[10m])",
    "changes(temperature_celsius[10m])",
    "deriv(temperature_celsius[2m])",
    "predict_linear(temperature_celsius[5m], 3600)",
    "delta(temperature_celsius[2m])",
    "histogram_quantile(0.9, sum by (le) (req_duration_seconds_bucket))",
    "abs(temperature_celsius) > 1",
    "temperature_celsius > bool 0",
    "clamp(temperature_celsius, 0, 100)",
    "http_requests_total offset 2m",
    "http_requests_total @ 1000",
    "max_over_time(temperature_celsius[5m:30s])",
    "http_requests_total{code=\"200\"} / ignoring(code) group_left http_requests_total{code=\"500\"}",
    "http_requests_total and on(instance) http_requests_total{handler=\"/metrics\"}",
    "http_requests_total unless http_requests_total{instance=\"a:80\"}",
    "label_join(temperature_celsius, \"x\", \"-\", \"room\", \"__name__\")",
    "timestamp(temperature_celsius)",
    "gone",
    "absent(gone)",
    "sort_desc(sum by (instance) (http_requests_total))",
    "ln(temperature_celsius)",
    "sgn(temperature_celsius)",
    "sum_over_time(temperature_celsius[1m]) * 1e3",
];

const STATIC_RANGE: &[&str] = &[
    "temperature_celsius",
    "sum by (instance) (http_requests_total)",
    "gone",
    "histogram_quantile(0.5, req_duration_seconds_bucket)",
    "irate(http_requests_total[1m])",
    "quantile_over_time(0.5, temperature_celsius[2m])",
];

/// The same remote-written data in Prometheus (its remote-write receiver)
/// and Pharos; then PromQL answers, `/federate`, series and label answers
/// must be byte-identical. (The full differential test, every function and
/// operator compared by value, is `differential.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_differential() {
    if !prometheus_available() {
        return;
    }
    let n = node().await;
    let dir = tempfile::tempdir().unwrap();
    let mut prom = Prom::start_with(
        dir.path(),
        "p",
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    );
    prom.wait_ready().await;

    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let base = (now_s - 610) * 1000;
    let req = static_data(base);
    let a = write_v1(prom.addr, &req).await;
    assert!(a.status / 100 == 2, "prometheus: {} {}", a.status, a.text());
    let b = write_v1(n.addr, &req).await;
    assert_eq!(b.status, 204, "{}", b.text());

    let end = base / 1000 + 600;
    let mut paths = Vec::new();
    for q in STATIC_INSTANT {
        // Off the 15 s sample grid: at grid points Prometheus 2.42's closed
        // range windows and Prometheus 3's left-open ones (which Pharos
        // follows) see a different first sample.
        for t in [format!("{}.5", end - 1), format!("{}.333", end - 100)] {
            paths.push(format!(
                "/api/v1/query?{}",
                qs(&[("query", q), ("time", &t)])
            ));
        }
    }
    for q in STATIC_RANGE {
        paths.push(format!(
            "/api/v1/query_range?{}",
            qs(&[
                ("query", q),
                ("start", &(end - 400).to_string()),
                ("end", &end.to_string()),
                ("step", "37.5")
            ])
        ));
    }
    for m in [
        "http_requests_total",
        "{job=\"api\"}",
        "{__name__=~\"temp.*\"}",
    ] {
        paths.push(format!("/federate?{}", qs(&[("match[]", m)])));
        paths.push(format!("/api/v1/series?{}", qs(&[("match[]", m)])));
        paths.push(format!("/api/v1/labels?{}", qs(&[("match[]", m)])));
    }
    paths.push("/api/v1/label/room/values".into());
    let mut failures = Vec::new();
    for p in &paths {
        let a = get(prom.addr, p).await;
        let b = get(n.addr, p).await;
        if a.status != b.status || a.body != b.body {
            failures.push(format!(
                "{p}\n  prometheus {}: {:?}\n  pharos     {}: {:?}",
                a.status,
                a.text(),
                b.status,
                b.text()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} answers differ:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
    eprintln!("{} answers byte-identical to prometheus", paths.len());
    drop(prom);
    n.stop().await;
}
