//! Remote-write ingestion and dashboard-query benchmark of issue 4 item 7:
//! a release `pharos server`, Prometheus 2.42 and VictoriaMetrics 1.79, each
//! a real process on 127.0.0.1, fed the same remote-write 1.0 requests and
//! asked the same PromQL queries, in one run on this machine.
//!
//! `scripts/bench-remote-write` builds the release binary and runs this; the
//! table and how to read it are in `BENCHMARKS.md` ("Remote write and
//! dashboard queries (issue 4)").
//!
//! Workload (deterministic): `--instances` (100) scrape-shaped targets of
//! 1,000 series each (counters, a 12-bucket classic histogram family, CPU
//! counters, gauges), `--points` (240) samples per series on a 15 s grid
//! with a per-instance phase of 0.5–14.5 s, so no sample sits on a query
//! window's edge (where Prometheus 2.x and Pharos's 3.x windows differ).
//! Every request is encoded and snappy-compressed before the clock starts:
//! 2,000 samples per `WriteRequest`, one sample per `TimeSeries`, as
//! Prometheus's own queue manager sends them. Series are split across
//! `--senders` (4) shards by index; each shard sends its requests in time
//! order on one kept-alive connection, the shards concurrently.
//!
//! Measured per system, over its ingestion only (the other servers idle):
//! wall time first request to last answer, server CPU (utime + stime from
//! `/proc/<pid>/stat`), resident memory (`VmRSS`, `VmHWM`). Then the same
//! queries are asked of every system, the first answers compared, and timed
//! runs alternate between systems so they see the same noise.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pharos_proto::prometheus as prompb;
use pharos_proto::prost::Message;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(format!($($t)*).into())
    };
}

const STEP_MS: i64 = 15_000;
const SERIES_PER_INSTANCE: usize = 1_000;
const JOBS: [&str; 5] = ["api", "web", "db", "cache", "batch"];
const METHODS: [&str; 2] = ["GET", "POST"];
const CODES: [&str; 6] = ["200", "201", "400", "404", "500", "503"];
const LE: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
/// Upper bound of each bucket's own (non-cumulative) observations per step.
const LE_WEIGHT: [u64; 12] = [1, 2, 4, 6, 8, 6, 4, 3, 2, 1, 1, 1];
const MODES: [&str; 8] = [
    "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
];

// ---------------------------------------------------------------------------
// Arguments

struct Args {
    instances: usize,
    points: usize,
    per_request: usize,
    senders: usize,
    systems: Vec<String>,
    runs: usize,
    max_secs: f64,
    pharos: PathBuf,
    prometheus: PathBuf,
    victoria_metrics: PathBuf,
    keep: bool,
    ingest_only: bool,
    /// Seconds to wait after ingestion before querying (VictoriaMetrics
    /// makes rows searchable after its in-memory parts are flushed).
    settle_secs: u64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        instances: 100,
        points: 240,
        per_request: 2_000,
        senders: 4,
        systems: vec![
            "pharos".into(),
            "pharos-fsync-interval".into(),
            "victoriametrics".into(),
            "prometheus".into(),
        ],
        runs: 30,
        max_secs: 4.0,
        pharos: PathBuf::from("target/release/pharos"),
        prometheus: PathBuf::from("/usr/bin/prometheus"),
        victoria_metrics: PathBuf::from("/usr/bin/victoria-metrics"),
        keep: false,
        ingest_only: false,
        settle_secs: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        // `cargo bench` passes --bench to harness = false targets.
        if k == "--bench" {
            continue;
        }
        if k == "--keep" {
            a.keep = true;
            continue;
        }
        if k == "--ingest-only" {
            a.ingest_only = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--instances" => a.instances = v.parse()?,
            "--points" => a.points = v.parse()?,
            "--per-request" => a.per_request = v.parse()?,
            "--senders" => a.senders = v.parse()?,
            "--systems" => a.systems = v.split(',').map(str::to_string).collect(),
            "--runs" => a.runs = v.parse()?,
            "--max-secs" => a.max_secs = v.parse()?,
            "--pharos" => a.pharos = v.into(),
            "--prometheus" => a.prometheus = v.into(),
            "--victoria-metrics" => a.victoria_metrics = v.into(),
            "--settle-secs" => a.settle_secs = v.parse()?,
            _ => bail!(
                "unknown argument {k}; known: --instances --points --per-request --senders \
                 --systems pharos,pharos-fsync-interval,victoriametrics,prometheus --runs \
                 --max-secs --pharos --prometheus --victoria-metrics --settle-secs --keep \
                 --ingest-only"
            ),
        }
    }
    if a.points < 40 || a.instances == 0 || a.senders == 0 || a.per_request == 0 {
        bail!("--points must be ≥ 40 (the queries look at the last hour), the others ≥ 1");
    }
    Ok(a)
}

// ---------------------------------------------------------------------------
// Workload

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash3(a: u64, b: u64, c: u64) -> u64 {
    mix(mix(mix(a) ^ b) ^ c)
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// What a series is, by its index within its instance.
#[derive(Clone, Copy)]
enum Kind {
    Requests { code: usize },
    Bucket { path: usize, le: usize },
    HistSum { path: usize },
    HistCount { path: usize },
    Cpu { mode: usize },
    Memory,
}

fn kind_and_labels(instance: usize, j: usize) -> (Kind, Vec<(String, String)>) {
    let inst = format!("host-{instance:03}.dc1.example.net:9100");
    let job = JOBS[instance % JOBS.len()].to_string();
    let mut l = vec![("instance".to_string(), inst), ("job".to_string(), job)];
    let kind = if j < 240 {
        let (path, rem) = (j / 12, j % 12);
        let (method, code) = (rem / 6, rem % 6);
        l.push(("__name__".into(), "http_requests_total".into()));
        l.push(("path".into(), format!("/api/v1/p{path:02}")));
        l.push(("method".into(), METHODS[method].into()));
        l.push(("code".into(), CODES[code].into()));
        Kind::Requests { code }
    } else if j < 720 {
        let b = j - 240;
        let (path, le) = (b / 12, b % 12);
        l.push((
            "__name__".into(),
            "http_request_duration_seconds_bucket".into(),
        ));
        l.push(("path".into(), format!("/api/v1/h{path:02}")));
        l.push(("le".into(), LE[le].into()));
        Kind::Bucket { path, le }
    } else if j < 760 {
        let path = j - 720;
        l.push((
            "__name__".into(),
            "http_request_duration_seconds_sum".into(),
        ));
        l.push(("path".into(), format!("/api/v1/h{path:02}")));
        Kind::HistSum { path }
    } else if j < 800 {
        let path = j - 760;
        l.push((
            "__name__".into(),
            "http_request_duration_seconds_count".into(),
        ));
        l.push(("path".into(), format!("/api/v1/h{path:02}")));
        Kind::HistCount { path }
    } else if j < 864 {
        let c = j - 800;
        let (cpu, mode) = (c / 8, c % 8);
        l.push(("__name__".into(), "node_cpu_seconds_total".into()));
        l.push(("cpu".into(), cpu.to_string()));
        l.push(("mode".into(), MODES[mode].into()));
        Kind::Cpu { mode }
    } else {
        l.push(("__name__".into(), "node_memory_bytes".into()));
        l.push(("area".into(), format!("a{:03}", j - 864)));
        Kind::Memory
    };
    l.sort();
    (kind, l)
}

struct Series {
    /// The `TimeSeries.labels` fields, encoded once.
    labels_pb: Vec<u8>,
    kind: Kind,
    instance: usize,
    value: f64,
}

struct Workload {
    instances: usize,
    points: usize,
    /// Time of the first grid point; samples sit `phase` after grid points.
    start_ms: i64,
}

impl Workload {
    fn series(&self) -> usize {
        self.instances * SERIES_PER_INSTANCE
    }

    fn samples(&self) -> usize {
        self.series() * self.points
    }

    /// The query evaluation time: the grid point after the last sample.
    fn end_ms(&self) -> i64 {
        self.start_ms + self.points as i64 * STEP_MS
    }

    fn phase_ms(instance: usize) -> i64 {
        500 + (instance as i64 * 1_337) % 14_000
    }
}

/// Observations of bucket `le` alone (not cumulative) of one histogram in
/// one step.
fn obs(instance: usize, path: usize, k: usize, le: usize) -> u64 {
    hash3((instance * 64 + path) as u64, k as u64, 1_000 + le as u64) % (LE_WEIGHT[le] + 1)
}

fn cumulative(instance: usize, path: usize, k: usize, le: usize) -> u64 {
    (0..=le).map(|i| obs(instance, path, k, i)).sum()
}

/// The next value of series `s` at step `k`.
fn advance(s: &mut Series, idx: usize, k: usize) {
    let h = hash3(idx as u64, k as u64, 7);
    let inst = s.instance;
    match s.kind {
        Kind::Requests { code } => {
            s.value += match code {
                0 => (h % 50) as f64,
                1 => (h % 5) as f64,
                _ => (h % 10 == 0) as u8 as f64,
            }
        }
        Kind::Bucket { path, le } => s.value += cumulative(inst, path, k, le) as f64,
        Kind::HistCount { path } => s.value += cumulative(inst, path, k, 11) as f64,
        Kind::HistSum { path } => {
            s.value += cumulative(inst, path, k, 11) as f64 * 0.137 + unit(h) * 0.5
        }
        Kind::Cpu { mode } => {
            let share = if mode == 0 { 12.0 } else { 1.5 };
            s.value += (unit(h) * share * 100.0).round() / 100.0
        }
        Kind::Memory => s.value = 1e9 + (h % 100_000) as f64 * 4096.0,
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes_field(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    out.push(tag);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn encode_labels(labels: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in labels {
        let mut l = Vec::with_capacity(n.len() + v.len() + 4);
        put_bytes_field(&mut l, 0x0A, n.as_bytes());
        put_bytes_field(&mut l, 0x12, v.as_bytes());
        put_bytes_field(&mut out, 0x0A, &l);
    }
    out
}

/// One `TimeSeries` with one sample, appended to a `WriteRequest` body.
fn put_timeseries(out: &mut Vec<u8>, labels_pb: &[u8], t: i64, v: f64) {
    let mut sample = [0u8; 32];
    let mut n = 0;
    sample[n] = 0x09; // value, fixed64
    n += 1;
    sample[n..n + 8].copy_from_slice(&v.to_le_bytes());
    n += 8;
    sample[n] = 0x10; // timestamp, varint
    n += 1;
    let mut tv = Vec::with_capacity(10);
    put_varint(&mut tv, t as u64);
    sample[n..n + tv.len()].copy_from_slice(&tv);
    n += tv.len();
    let ts_len = labels_pb.len() + 2 + n;
    out.push(0x0A);
    put_varint(out, ts_len as u64);
    out.extend_from_slice(labels_pb);
    put_bytes_field(out, 0x12, &sample[..n]);
}

/// Every request of every shard, snappy-compressed, in send order, with its
/// sample count.
struct Requests {
    shards: Vec<Vec<(Vec<u8>, usize)>>,
    raw_bytes: usize,
    snappy_bytes: usize,
}

fn build_requests(w: &Workload, per_request: usize, senders: usize) -> Result<Requests> {
    let mut series = Vec::with_capacity(w.series());
    for i in 0..w.instances {
        for j in 0..SERIES_PER_INSTANCE {
            let (kind, labels) = kind_and_labels(i, j);
            let idx = i * SERIES_PER_INSTANCE + j;
            series.push(Series {
                labels_pb: encode_labels(&labels),
                kind,
                instance: i,
                value: match kind {
                    Kind::Requests { .. } | Kind::Cpu { .. } => {
                        (unit(hash3(idx as u64, 0, 3)) * 1e5).round()
                    }
                    _ => 0.0,
                },
            });
        }
    }
    let mut shards: Vec<Vec<(Vec<u8>, usize)>> = vec![Vec::new(); senders];
    let mut open: Vec<(Vec<u8>, usize)> = vec![(Vec::new(), 0); senders];
    let mut enc = snap::raw::Encoder::new();
    let (mut raw_bytes, mut snappy_bytes) = (0, 0);
    let mut finish =
        |body: &mut Vec<u8>, n: usize, shard: &mut Vec<(Vec<u8>, usize)>| -> Result<()> {
            let c = enc.compress_vec(body)?;
            raw_bytes += body.len();
            snappy_bytes += c.len();
            shard.push((c, n));
            body.clear();
            Ok(())
        };
    for k in 0..w.points {
        for (idx, s) in series.iter_mut().enumerate() {
            advance(s, idx, k);
            let t = w.start_ms + k as i64 * STEP_MS + Workload::phase_ms(s.instance);
            let shard = idx % senders;
            let (body, n) = &mut open[shard];
            put_timeseries(body, &s.labels_pb, t, s.value);
            *n += 1;
            if *n == per_request {
                finish(body, *n, &mut shards[shard])?;
                *n = 0;
            }
        }
    }
    for (shard, (body, n)) in open.iter_mut().enumerate() {
        if *n > 0 {
            finish(body, *n, &mut shards[shard])?;
        }
    }
    // The hand-written encoding must be what a protobuf decoder reads.
    let first = snap::raw::Decoder::new().decompress_vec(&shards[0][0].0)?;
    let req = prompb::WriteRequest::decode(&first[..])?;
    let expect = per_request.min(w.samples() / senders);
    if req.timeseries.len() != expect
        || req.timeseries.iter().any(|t| t.samples.len() != 1)
        || req.timeseries[0].labels.len() < 4
    {
        bail!(
            "encoding check failed: {} series in the first request",
            req.timeseries.len()
        );
    }
    Ok(Requests {
        shards,
        raw_bytes,
        snappy_bytes,
    })
}

// ---------------------------------------------------------------------------
// The HTTP client, shared with the PromQL benchmark.

#[path = "../../query/benches/support/http.rs"]
#[allow(dead_code)]
mod http;
use http::{api_time, pct_encode, Http};

#[path = "../../query/benches/support/answers.rs"]
#[allow(dead_code)]
mod answers;
use answers::{ms, quantiles};

// ---------------------------------------------------------------------------
// Servers

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server process; stopped (SIGTERM, then SIGKILL after 15 s) on drop.
struct Server {
    name: String,
    addr: String,
    child: Child,
    log: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.pid().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start(name: &str, args: &Args, work: &Path) -> Result<Server> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("log");
    let (mut cmd, ready_path) = match name {
        "pharos" | "pharos-fsync-interval" => {
            let fsync = if name == "pharos" {
                "always"
            } else {
                "interval"
            };
            let cfg = dir.join("pharos.yml");
            std::fs::write(
                &cfg,
                format!("global:\n  scrape_interval: 15s\npharos:\n  wal:\n    fsync: {fsync}\n"),
            )?;
            let mut c = Command::new(&args.pharos);
            c.arg("server")
                .arg("--listen")
                .arg(&addr)
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--config")
                .arg(&cfg)
                .arg("--log.level")
                .arg("warn");
            (c, "/-/ready")
        }
        "prometheus" => {
            let cfg = dir.join("prometheus.yml");
            std::fs::write(
                &cfg,
                "global:\n  scrape_interval: 15s\nscrape_configs: []\n",
            )?;
            let mut c = Command::new(&args.prometheus);
            c.arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--web.enable-remote-write-receiver")
                .arg("--log.level=warn");
            (c, "/-/ready")
        }
        "victoriametrics" => {
            let mut c = Command::new(&args.victoria_metrics);
            // The rollup result cache would answer every repeat of a query
            // from memory; the benchmark compares evaluation.
            c.arg(format!("-storageDataPath={}", dir.join("data").display()))
                .arg(format!("-httpListenAddr={addr}"))
                .arg("-search.disableCache")
                .arg("-loggerLevel=WARN");
            (c, "/health")
        }
        other => bail!("unknown system {other}"),
    };
    let out = std::fs::File::create(&log)?;
    cmd.stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null());
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {name} ({:?}): {e}", cmd.get_program()))?;
    let mut server = Server {
        name: name.to_string(),
        addr: addr.clone(),
        child,
        log,
    };
    let mut http = Http::new(&addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http.get(ready_path) {
            break;
        }
        if let Ok(Some(st)) = server.child.try_wait() {
            bail!(
                "{name} exited with {st} before it was ready; log:\n{}",
                tail(&server.log)
            );
        }
        if Instant::now() > deadline {
            server.stop();
            bail!("{name} not ready after 60 s; log:\n{}", tail(&server.log));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(server)
}

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32, tck: f64) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')').ok_or("bad /proc/pid/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).ok_or("short stat")?.parse()?;
    let stime: f64 = f.get(12).ok_or("short stat")?.parse()?;
    Ok((utime + stime) / tck)
}

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for l in s.lines() {
        if let Some(v) = l.strip_prefix(field).and_then(|v| v.strip_prefix(':')) {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("{field} not in /proc/{pid}/status")
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Ingestion

struct Ingest {
    samples: usize,
    wall: Duration,
    cpu: f64,
    rss_idle: u64,
    rss_after: u64,
    hwm: u64,
    retries: usize,
    load_before: String,
    load_after: String,
}

fn ingest(server: &Server, reqs: &Requests, tck: f64) -> Result<Ingest> {
    let pid = server.pid();
    let rss_idle = status_bytes(pid, "VmRSS")?;
    let load_before = load_average();
    let cpu0 = cpu_secs(pid, tck)?;
    let started = Instant::now();
    let results: Vec<Result<(usize, usize)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = reqs
            .shards
            .iter()
            .map(|shard| {
                let addr = server.addr.clone();
                scope.spawn(move || -> Result<(usize, usize)> {
                    let mut http = Http::new(&addr);
                    let (mut samples, mut retries) = (0, 0);
                    let headers = [
                        ("Content-Type", "application/x-protobuf"),
                        ("Content-Encoding", "snappy"),
                        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                    ];
                    for (body, n) in shard {
                        let mut backoff = Duration::from_millis(20);
                        loop {
                            let (status, resp) =
                                http.request("POST", "/api/v1/write", &headers, body)?;
                            if (200..300).contains(&status) {
                                break;
                            }
                            if (status == 429 || status >= 500) && retries < 10_000 {
                                retries += 1;
                                std::thread::sleep(backoff);
                                backoff = (backoff * 2).min(Duration::from_secs(1));
                                continue;
                            }
                            bail!(
                                "HTTP {status} from remote write: {}",
                                String::from_utf8_lossy(&resp[..resp.len().min(300)])
                            );
                        }
                        samples += n;
                    }
                    Ok((samples, retries))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("sender panicked".into())))
            .collect()
    });
    let wall = started.elapsed();
    let cpu = cpu_secs(pid, tck)? - cpu0;
    let load_after = load_average();
    let (mut samples, mut retries) = (0, 0);
    for r in results {
        let (s, rt) = r?;
        samples += s;
        retries += rt;
    }
    Ok(Ingest {
        samples,
        wall,
        cpu,
        rss_idle,
        rss_after: status_bytes(pid, "VmRSS")?,
        hwm: status_bytes(pid, "VmHWM")?,
        retries,
        load_before,
        load_after,
    })
}

// ---------------------------------------------------------------------------
// Queries

#[derive(Clone, Copy)]
enum Shape {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

struct Case {
    query: &'static str,
    shape: Shape,
    label: &'static str,
}

impl Case {
    fn path(&self) -> String {
        match self.shape {
            Shape::Instant(t) => format!(
                "/api/v1/query?query={}&time={}",
                pct_encode(self.query),
                api_time(t)
            ),
            Shape::Range { start, end, step } => format!(
                "/api/v1/query_range?query={}&start={}&end={}&step={}",
                pct_encode(self.query),
                api_time(start),
                api_time(end),
                api_time(step)
            ),
        }
    }
}

const QUERIES: [&str; 5] = [
    "sum by (code) (rate(http_requests_total[5m]))",
    "topk(5, sum by (instance) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m])))",
    "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job=\"api\"}[5m])))",
    "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m]))",
    "node_memory_bytes{instance=\"host-001.dc1.example.net:9100\"}",
];

fn cases(w: &Workload) -> Vec<Case> {
    let end = w.end_ms();
    let start = end - 3_600_000;
    let mut out = Vec::new();
    for q in QUERIES {
        out.push(Case {
            query: q,
            shape: Shape::Instant(end),
            label: "instant",
        });
        out.push(Case {
            query: q,
            shape: Shape::Range {
                start,
                end,
                step: 15_000,
            },
            label: "1h @15s",
        });
        out.push(Case {
            query: q,
            shape: Shape::Range {
                start,
                end,
                step: 60_000,
            },
            label: "1h @60s",
        });
    }
    out
}

type Answer = Vec<answers::Series>;

fn parse_answer(body: &[u8]) -> Result<Answer> {
    let j: serde_json::Value = serde_json::from_slice(body)?;
    let result = j
        .pointer("/data/result")
        .and_then(|r| r.as_array())
        .ok_or("response without data.result")?;
    answers::series_of(result)
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

/// How `b` differs from the reference `a`: None when the same series and
/// timestamps with values within 1e-9 relative, else a short description
/// (max relative difference when only values differ).
fn compare(a: &Answer, b: &Answer) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} vs {} series", a.len(), b.len()));
    }
    let mut worst = 0.0f64;
    let mut points_differ = 0;
    for (x, y) in a.iter().zip(b) {
        if x.0 != y.0 {
            return Some(format!("labels {:?} vs {:?}", x.0, y.0));
        }
        if x.1.len() != y.1.len() || x.1.iter().zip(&y.1).any(|(p, q)| p.0 != q.0) {
            points_differ += 1;
            continue;
        }
        for (p, q) in x.1.iter().zip(&y.1) {
            worst = worst.max(rel(p.1, q.1));
        }
    }
    match (points_differ, worst <= 1e-9) {
        (0, true) => None,
        (0, false) => Some(format!("values differ, max rel {worst:.1e}")),
        (n, _) => Some(format!(
            "timestamps differ in {n} series; max rel {worst:.1e} elsewhere"
        )),
    }
}

fn wait_visible(server: &Server, w: &Workload) -> Result<Duration> {
    let started = Instant::now();
    let q = format!(
        "/api/v1/query?query={}&time={}",
        pct_encode("count({__name__=~\"http_.+|node_.+\"})"),
        api_time(w.end_ms())
    );
    let mut http = Http::new(&server.addr);
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(180) {
        if let Ok((200, body)) = http.get(&q) {
            if let Ok(a) = parse_answer(&body) {
                let n = a.first().and_then(|s| s.1.first()).map_or(0.0, |p| p.1);
                if n as usize == w.series() {
                    return Ok(started.elapsed());
                }
                last = format!("{n}");
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!(
        "{}: {} series visible after 180 s, expected {}",
        server.name,
        last,
        w.series()
    )
}

// ---------------------------------------------------------------------------

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-remote-write: {e}");
        std::process::exit(1);
    }
}

fn mib(b: u64) -> String {
    format!("{:.0}", b as f64 / (1 << 20) as f64)
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    // Hours-old data on whole hours: Prometheus's and Pharos's heads accept
    // it, VictoriaMetrics's search latency offset does not hide it, and the
    // data stays inside one 2 h block range.
    let hour = 3_600_000;
    let span = args.points as i64 * STEP_MS;
    let w = Workload {
        instances: args.instances,
        points: args.points,
        start_ms: (now_ms / hour) * hour - hour - ((span + hour - 1) / hour) * hour,
    };
    let tck = clock_ticks();
    println!(
        "workload: {} series ({} instances x {SERIES_PER_INSTANCE}) x {} points at 15 s = {} samples; \
         {} samples per request, {} senders; data {} .. {}",
        w.series(),
        w.instances,
        w.points,
        w.samples(),
        args.per_request,
        args.senders,
        api_time(w.start_ms),
        api_time(w.end_ms())
    );
    let t0 = Instant::now();
    let reqs = build_requests(&w, args.per_request, args.senders)?;
    let n_reqs: usize = reqs.shards.iter().map(Vec::len).sum();
    println!(
        "encoded {n_reqs} requests in {:.1} s: {:.0} MB protobuf, {:.0} MB snappy",
        t0.elapsed().as_secs_f64(),
        reqs.raw_bytes as f64 / 1e6,
        reqs.snappy_bytes as f64 / 1e6
    );

    let work = tempfile::Builder::new()
        .prefix("pharos-bench-remote-write.")
        .tempdir()?;
    let mut servers = Vec::new();
    for name in &args.systems {
        let s = start(name, &args, work.path())?;
        println!("started {name} on {} (pid {})", s.addr, s.pid());
        servers.push(s);
    }
    // Let every server settle into its idle state before the baselines.
    std::thread::sleep(Duration::from_secs(3));

    let mut ingests = Vec::new();
    for s in &servers {
        println!("ingesting into {} (load {})", s.name, load_average());
        let r = ingest(s, &reqs, tck)?;
        println!(
            "  {}: {} samples in {:.2} s = {:.0} samples/s, {:.2} CPU s, retries {}",
            s.name,
            r.samples,
            r.wall.as_secs_f64(),
            r.samples as f64 / r.wall.as_secs_f64(),
            r.cpu,
            r.retries
        );
        ingests.push(r);
        // Background work the ingestion caused (flushes, merges) finishes
        // before the next system's clock starts.
        std::thread::sleep(Duration::from_secs(args.settle_secs));
    }

    println!();
    println!(
        "| system | samples | wall s | samples/s | CPU s | CPU s / M samples | RSS idle MiB | RSS after MiB | peak RSS (VmHWM) MiB | RSS growth / series | peak RSS / series | 429/5xx retries | load before → after |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
    let series = w.series() as f64;
    for (s, r) in servers.iter().zip(&ingests) {
        println!(
            "| {} | {} | {:.1} | {:.0}k | {:.1} | {:.2} | {} | {} | {} | {:.0} B | {:.0} B | {} | {} → {} |",
            s.name,
            r.samples,
            r.wall.as_secs_f64(),
            r.samples as f64 / r.wall.as_secs_f64() / 1e3,
            r.cpu,
            r.cpu / (r.samples as f64 / 1e6),
            mib(r.rss_idle),
            mib(r.rss_after),
            mib(r.hwm),
            (r.rss_after as f64 - r.rss_idle as f64) / series,
            r.hwm as f64 / series,
            r.retries,
            r.load_before,
            r.load_after
        );
        println!(
            "RESULT {} ingest_samples_per_s {:.0} cpu_s_per_m {:.3} hwm_bytes {} rss_growth_per_series {:.0} hwm_per_series {:.0}",
            s.name,
            r.samples as f64 / r.wall.as_secs_f64(),
            r.cpu / (r.samples as f64 / 1e6),
            r.hwm,
            (r.rss_after as f64 - r.rss_idle as f64) / series,
            r.hwm as f64 / series
        );
    }
    if args.ingest_only {
        finish(servers, work, args.keep);
        return Ok(());
    }

    for s in &servers {
        let took = wait_visible(s, &w)?;
        println!(
            "{}: all {} series visible after {:.1} s",
            s.name,
            w.series(),
            took.as_secs_f64()
        );
    }

    println!();
    let mut header = String::from("| query | shape | series out |");
    let mut sep = String::from("|---|---|--:|");
    for s in &servers {
        header.push_str(&format!(" {0} p50 ms | {0} p99 ms | runs |", s.name));
        sep.push_str("--:|--:|--:|");
    }
    header.push_str(" answers (vs first system) |");
    sep.push_str("---|");
    let mut rows = Vec::new();
    let mut https: Vec<Http> = servers.iter().map(|s| Http::new(&s.addr)).collect();
    let budget = Duration::from_secs_f64(args.max_secs);
    for c in cases(&w) {
        let path = c.path();
        let mut answers = Vec::new();
        for (s, h) in servers.iter().zip(https.iter_mut()) {
            let (status, body) = h.get(&path)?;
            if status != 200 {
                bail!(
                    "{} {} ({}): HTTP {status}: {}",
                    s.name,
                    c.query,
                    c.label,
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                );
            }
            answers.push(parse_answer(&body)?);
        }
        let mut verdicts = Vec::new();
        for (s, a) in servers.iter().zip(&answers).skip(1) {
            verdicts.push(format!(
                "{}: {}",
                s.name,
                compare(&answers[0], a).unwrap_or_else(|| "agree".into())
            ));
        }
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
        let mut spent = vec![Duration::ZERO; servers.len()];
        for _ in 0..args.runs {
            let mut any = false;
            for (i, h) in https.iter_mut().enumerate() {
                if times[i].len() >= 3 && spent[i] >= budget {
                    continue;
                }
                any = true;
                let t = Instant::now();
                let (status, _) = h.get(&path)?;
                let d = t.elapsed();
                if status != 200 {
                    bail!("{}: HTTP {status} on a timed run", servers[i].name);
                }
                times[i].push(d);
                spent[i] += d;
            }
            if !any {
                break;
            }
        }
        let mut row = format!("| `{}` | {} | {} |", c.query, c.label, answers[0].len());
        for (i, s) in servers.iter().enumerate() {
            let n = times[i].len();
            let (p50, p99) = quantiles(&mut times[i]);
            row.push_str(&format!(" {} | {} | {} |", ms(p50), ms(p99), n));
            println!(
                "RESULT {} query \"{} {}\" p50_ms {:.3} p99_ms {:.3} runs {n}",
                s.name,
                c.query,
                c.label,
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
        row.push_str(&format!(" {} |", verdicts.join("; ")));
        eprintln!("{row}");
        rows.push(row);
    }
    println!();
    println!("{header}");
    println!("{sep}");
    for r in rows {
        println!("{r}");
    }
    for s in &servers {
        println!(
            "{}: VmHWM after the queries {} MiB, VmRSS {} MiB",
            s.name,
            mib(status_bytes(s.pid(), "VmHWM")?),
            mib(status_bytes(s.pid(), "VmRSS")?)
        );
    }
    println!("load at the end: {}", load_average());
    finish(servers, work, args.keep);
    Ok(())
}

fn finish(mut servers: Vec<Server>, work: tempfile::TempDir, keep: bool) {
    for s in &mut servers {
        s.stop();
    }
    drop(servers);
    if keep {
        let p = work.keep();
        println!("work dir kept: {}", p.display());
    }
}
