//! PromQL evaluation benchmark of issue 3: typical dashboard queries over
//! 10k series x 1 day held in memory, evaluated by Pharos's engine on the
//! calling thread, and — when `--prometheus HOST:PORT` is given — answered by
//! a Prometheus 2.42 that received the identical samples by remote write.
//!
//! `cargo bench -p pharos-query --bench promql` measures Pharos alone;
//! `scripts/bench-promql` starts Prometheus and runs both in one process, so
//! the two sides see the same machine noise (runs alternate Pharos /
//! Prometheus). Results and the reading are in `BENCHMARKS.md`.
//!
//! Workload (deterministic, `--series N --hours H`, defaults 10,000 and 24),
//! one sample per series every 15 s:
//! - 50% counters `m{x="x-NNN", instance="host-NN", job=…}`: 100 `x` values
//!   per instance, 5 jobs by instance; increments in [0.5, 10), about one
//!   counter reset per series per day;
//! - 30% classic histogram buckets `b_bucket{instance, handler, le}`, 10 `le`
//!   values (0.005 … 2.5, +Inf) per (instance, handler), integer cumulative
//!   counts;
//! - 20% gauges `g{x, instance, job}`: a sine over the hour plus noise.
//!
//! Samples sit 7 s past each 15 s step boundary. Query times are multiples of
//! 15 s, so no sample lands on a range window's left edge, where Prometheus
//! 2.x windows are closed and Prometheus 3.x windows (which Pharos follows)
//! are open; both engines then select the same samples.
//!
//! Pharos latency is parse + evaluation, in process, no serialisation.
//! Prometheus latency is wall-clock per HTTP request (request written to last
//! byte of the JSON body read) on a kept-alive loopback connection; nothing is
//! subtracted from it. Every case's first answer from each side is compared
//! (labels, timestamps, values within 1e-9 relative).

use std::time::{Duration, Instant};

use pharos_proto::prometheus as prompb;
use pharos_proto::prost::Message;
use pharos_query::engine::{Engine, EngineOptions, QueryStats, Value};
use pharos_query::parser::{parse_with, ParseOptions};
use pharos_storage::head::{Head, HeadOptions, SeriesRef};
use pharos_storage::labels::Labels;

/// Errors end the bench with a message; nothing here recovers from one.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(format!($($t)*).into())
    };
}

/// 2026-01-01T00:00:00Z: a multiple of 24 h, so the day fits one head chunk
/// range.
const T0: i64 = 1_767_225_600_000;
const STEP_MS: i64 = 15_000;
/// Offset of samples from the 15 s grid the queries are evaluated on.
const PHASE_MS: i64 = 7_000;
const HOUR_MS: i64 = 3_600_000;
/// Samples per series per hour; data is produced and written hour by hour.
const WINDOW_STEPS: usize = 240;
const LE: [&str; 10] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
];
/// Per-step observation count bound of each bucket's own (non-cumulative)
/// share.
const BUCKET_WEIGHT: [u64; 10] = [1, 2, 3, 5, 8, 5, 3, 2, 1, 1];
const JOBS: [&str; 5] = ["api", "web", "db", "cache", "batch"];
const MAX_SAMPLES: usize = 500_000_000;

struct Args {
    series: usize,
    hours: usize,
    runs: usize,
    max_secs: f64,
    prometheus: Option<String>,
    batch_series: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        series: 10_000,
        hours: 24,
        runs: 30,
        max_secs: 8.0,
        prometheus: None,
        batch_series: 1_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--series" => a.series = val("--series")?.parse()?,
            "--hours" => a.hours = val("--hours")?.parse()?,
            "--runs" => a.runs = val("--runs")?.parse()?,
            "--max-secs" => a.max_secs = val("--max-secs")?.parse()?,
            "--prometheus" => a.prometheus = Some(val("--prometheus")?),
            "--batch-series" => a.batch_series = val("--batch-series")?.parse()?,
            // `cargo bench` passes `--bench`; a filter argument is not supported.
            "--bench" => {}
            other => bail!(
                "unknown argument {other:?} (known: --series N --hours H --runs N \
                 --max-secs S --prometheus HOST:PORT --batch-series N)"
            ),
        }
    }
    if a.series < 100 {
        bail!("--series must be at least 100");
    }
    if !(2..=24).contains(&a.hours) {
        bail!("--hours must be within 2..=24 (one head chunk range of 24 h)");
    }
    if a.runs == 0 || a.batch_series == 0 {
        bail!("--runs and --batch-series must be positive");
    }
    Ok(a)
}

// ---------------------------------------------------------------------------
// Workload

/// splitmix64's finaliser: a well-mixed deterministic hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash2(a: u64, b: u64) -> u64 {
    mix(mix(a) ^ b)
}

/// Uniform in [0, 1).
fn unit(a: u64, b: u64) -> f64 {
    (hash2(a, b) >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    /// Bucket `idx` of histogram `combo`.
    Bucket {
        combo: u64,
        idx: usize,
    },
    Gauge,
}

struct SeriesDef {
    /// Sorted by name (`__name__` sorts first).
    labels: Vec<(String, String)>,
    kind: Kind,
    seed: u64,
}

struct Workload {
    series: Vec<SeriesDef>,
    steps: usize,
    hours: usize,
}

impl Workload {
    fn new(n: usize, hours: usize) -> Workload {
        let n_counters = n / 2;
        let n_combos = n * 3 / 10 / LE.len();
        let n_gauges = n - n_counters - n_combos * LE.len();
        let mut series = Vec::with_capacity(n);
        let kv = |pairs: &[(&str, String)]| {
            let mut v: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            v.sort();
            v
        };
        for i in 0..n_counters {
            let inst = i / 100;
            series.push(SeriesDef {
                labels: kv(&[
                    ("__name__", "m".into()),
                    ("x", format!("x-{:03}", i % 100)),
                    ("instance", format!("host-{inst:02}")),
                    ("job", JOBS[inst % JOBS.len()].into()),
                ]),
                kind: Kind::Counter,
                seed: i as u64,
            });
        }
        for c in 0..n_combos {
            for (idx, le) in LE.iter().enumerate() {
                series.push(SeriesDef {
                    labels: kv(&[
                        ("__name__", "b_bucket".into()),
                        ("instance", format!("host-{:02}", c % 50)),
                        ("handler", format!("h{}", c / 50)),
                        ("le", le.to_string()),
                    ]),
                    kind: Kind::Bucket {
                        combo: c as u64,
                        idx,
                    },
                    seed: 1 << 40 | (c * LE.len() + idx) as u64,
                });
            }
        }
        for i in 0..n_gauges {
            let inst = i % 50;
            series.push(SeriesDef {
                labels: kv(&[
                    ("__name__", "g".into()),
                    ("x", format!("x-{:03}", i / 50)),
                    ("instance", format!("host-{inst:02}")),
                    ("job", JOBS[inst % JOBS.len()].into()),
                ]),
                kind: Kind::Gauge,
                seed: 2 << 40 | i as u64,
            });
        }
        Workload {
            series,
            steps: hours * WINDOW_STEPS,
            hours,
        }
    }

    fn ts(k: usize) -> i64 {
        T0 + k as i64 * STEP_MS + PHASE_MS
    }

    /// End of the data: every query is evaluated at or before it.
    fn end(&self) -> i64 {
        T0 + self.hours as i64 * HOUR_MS
    }

    fn samples(&self) -> usize {
        self.series.len() * self.steps
    }

    fn describe(&self) -> String {
        let count = |f: fn(&Kind) -> bool| self.series.iter().filter(|s| f(&s.kind)).count();
        format!(
            "{} series ({} counters m, {} histogram buckets b_bucket in {} histograms, {} gauges g) \
             x {} h at 15 s = {} samples",
            self.series.len(),
            count(|k| matches!(k, Kind::Counter)),
            count(|k| matches!(k, Kind::Bucket { .. })),
            count(|k| matches!(k, Kind::Bucket { idx: 0, .. })),
            count(|k| matches!(k, Kind::Gauge)),
            self.hours,
            self.samples()
        )
    }
}

/// Produces the samples hour by hour; the cumulative series carry state.
struct Gen<'a> {
    w: &'a Workload,
    state: Vec<f64>,
}

impl<'a> Gen<'a> {
    fn new(w: &'a Workload) -> Gen<'a> {
        let state = w
            .series
            .iter()
            .map(|s| match s.kind {
                Kind::Counter => (1000.0 * unit(s.seed, u64::MAX)).floor(),
                _ => 0.0,
            })
            .collect();
        Gen { w, state }
    }

    /// Samples of series `s` for hour `win` into `out` (cleared first).
    fn fill(&mut self, s: usize, win: usize, out: &mut Vec<(i64, f64)>) {
        out.clear();
        let def = &self.w.series[s];
        let st = &mut self.state[s];
        let k0 = win * WINDOW_STEPS;
        let k1 = (k0 + WINDOW_STEPS).min(self.w.steps);
        for k in k0..k1 {
            let ku = k as u64;
            let v = match def.kind {
                Kind::Counter => {
                    if hash2(def.seed ^ 0xC0FFEE, ku) % 5000 == 0 {
                        *st = 0.0;
                    }
                    *st += 0.5 + 9.5 * unit(def.seed, ku);
                    *st
                }
                Kind::Bucket { combo, idx } => {
                    let inc: u64 = (0..=idx)
                        .map(|j| hash2(combo << 4 | j as u64, ku) % (BUCKET_WEIGHT[j] + 1))
                        .sum();
                    *st += inc as f64;
                    *st
                }
                Kind::Gauge => {
                    let phase = unit(def.seed, u64::MAX);
                    let x = (k as f64 / WINDOW_STEPS as f64 + phase) * std::f64::consts::TAU;
                    50.0 + 40.0 * x.sin() + 5.0 * unit(def.seed, ku)
                }
            };
            out.push((Workload::ts(k), v));
        }
    }

    /// All series' samples for hour `win`.
    fn window(&mut self, win: usize, bufs: &mut [Vec<(i64, f64)>]) {
        for (s, buf) in bufs.iter_mut().enumerate() {
            self.fill(s, win, buf);
        }
    }
}

// ---------------------------------------------------------------------------
// Loading

fn load_head(w: &Workload) -> Result<(Head, Duration)> {
    let head = Head::new(HeadOptions {
        chunk_range_ms: 24 * HOUR_MS,
        ..HeadOptions::default()
    });
    let mut refs: Vec<SeriesRef> = Vec::with_capacity(w.series.len());
    let started = Instant::now();
    for def in &w.series {
        let labels = Labels::from_pairs(def.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        refs.push(head.get_or_create(&labels)?.0);
    }
    let mut took = started.elapsed();
    let mut gen = Gen::new(w);
    let mut bufs = vec![Vec::with_capacity(WINDOW_STEPS); w.series.len()];
    for win in 0..w.hours {
        gen.window(win, &mut bufs);
        // Time order across the whole load, as the head requires.
        let started = Instant::now();
        for (r, buf) in refs.iter().zip(&bufs) {
            for &(t, v) in buf {
                head.append_ref(*r, t, v)?;
            }
        }
        took += started.elapsed();
    }
    Ok((head, took))
}

fn remote_write(w: &Workload, http: &mut Http, batch_series: usize) -> Result<(Duration, usize)> {
    let mut gen = Gen::new(w);
    let mut bufs = vec![Vec::with_capacity(WINDOW_STEPS); w.series.len()];
    let mut took = Duration::ZERO;
    let mut bytes = 0;
    let labels: Vec<Vec<prompb::Label>> = w
        .series
        .iter()
        .map(|d| {
            d.labels
                .iter()
                .map(|(k, v)| prompb::Label {
                    name: k.clone(),
                    value: v.clone(),
                })
                .collect()
        })
        .collect();
    let mut enc = snap::raw::Encoder::new();
    for win in 0..w.hours {
        gen.window(win, &mut bufs);
        for first in (0..w.series.len()).step_by(batch_series) {
            let last = (first + batch_series).min(w.series.len());
            let req = prompb::WriteRequest {
                timeseries: (first..last)
                    .map(|s| prompb::TimeSeries {
                        labels: labels[s].clone(),
                        samples: bufs[s]
                            .iter()
                            .map(|&(timestamp, value)| prompb::Sample { value, timestamp })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            let body = enc.compress_vec(&req.encode_to_vec())?;
            bytes += body.len();
            let started = Instant::now();
            let (status, resp) = http.request(
                "POST",
                "/api/v1/write",
                &[
                    ("Content-Encoding", "snappy"),
                    ("Content-Type", "application/x-protobuf"),
                    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                ],
                &body,
            )?;
            took += started.elapsed();
            if !(200..300).contains(&status) {
                bail!(
                    "remote write of hour {win}, series {first}..{last}: HTTP {status}: {}",
                    String::from_utf8_lossy(&resp[..resp.len().min(500)])
                );
            }
        }
    }
    Ok((took, bytes))
}

// ---------------------------------------------------------------------------
// The HTTP client, shared with the remote-write benchmark.

#[path = "support/http.rs"]
#[allow(dead_code)]
mod http;
use http::{api_time, pct_encode, Http};

#[path = "support/answers.rs"]
#[allow(dead_code)]
mod answers;
use answers::{ms, quantiles};

// ---------------------------------------------------------------------------
// Cases

#[derive(Clone, Copy)]
enum Shape {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

struct Case {
    query: &'static str,
    shape: Shape,
    label: String,
}

const QUERIES: [&str; 5] = [
    "sum by (x) (rate(m[5m]))",
    "histogram_quantile(0.99, sum by (le) (rate(b_bucket[5m])))",
    "topk(10, rate(m[5m]))",
    "sum by (job) (rate(m{instance=~\"host-0.*\"}[5m]))",
    "avg_over_time(g[1h])",
];

fn cases(w: &Workload) -> Vec<Case> {
    let end = w.end();
    let mut out = Vec::new();
    for q in QUERIES {
        out.push(Case {
            query: q,
            shape: Shape::Instant(end),
            label: "instant".into(),
        });
        for step_s in [15, 60] {
            out.push(Case {
                query: q,
                shape: Shape::Range {
                    start: end - HOUR_MS,
                    end,
                    step: step_s * 1000,
                },
                label: format!("1h @{step_s}s"),
            });
        }
    }
    out.push(Case {
        query: "avg_over_time(g[1h])",
        shape: Shape::Range {
            start: T0,
            end,
            step: 300_000,
        },
        label: format!("{}h @5m", w.hours),
    });
    out
}

impl Case {
    fn api_path(&self, stats: bool) -> String {
        let q = pct_encode(self.query);
        let mut p = match self.shape {
            Shape::Instant(t) => format!("/api/v1/query?query={q}&time={}", api_time(t)),
            Shape::Range { start, end, step } => format!(
                "/api/v1/query_range?query={q}&start={}&end={}&step={}",
                api_time(start),
                api_time(end),
                api_time(step)
            ),
        };
        if stats {
            p.push_str("&stats=all");
        }
        p
    }
}

/// A result normalised for comparison: series sorted by labels.
use answers::Series;

fn run_pharos(engine: &Engine, head: &Head, c: &Case) -> Result<(Duration, QueryStats, Value)> {
    let started = Instant::now();
    let expr = parse_with(c.query, &ParseOptions::default())
        .map_err(|e| format!("parsing {}: {e}", c.query))?;
    let res = match c.shape {
        Shape::Instant(t) => engine.instant_query(head, &expr, t),
        Shape::Range { start, end, step } => engine.range_query(head, &expr, start, end, step),
    }
    .map_err(|e| format!("{} ({}): {e}", c.query, c.label))?;
    Ok((started.elapsed(), res.stats, res.value))
}

fn pharos_series(v: &Value) -> Result<Vec<Series>> {
    let lbl = |l: &Labels| {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut out: Vec<Series> = match v {
        Value::Vector(s) => s
            .iter()
            .map(|s| (lbl(&s.labels), vec![(s.t, s.v)]))
            .collect(),
        Value::Matrix(m) => m
            .iter()
            .map(|s| (lbl(&s.labels), s.points.clone()))
            .collect(),
        other => bail!("unexpected Pharos result type {}", other.type_name()),
    };
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn run_prometheus(http: &mut Http, c: &Case, stats: bool) -> Result<(Duration, Vec<u8>)> {
    let path = c.api_path(stats);
    let started = Instant::now();
    let (status, body) = http.request("GET", &path, &[], &[])?;
    let took = started.elapsed();
    if status != 200 {
        bail!(
            "Prometheus {} ({}): HTTP {status}: {}",
            c.query,
            c.label,
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
    }
    Ok((took, body))
}

/// What Prometheus says a query cost (`stats=all`).
#[derive(Clone, Copy, Default)]
struct PromStats {
    /// `totalQueryableSamples`: samples summed over the windows of every step.
    queryable: Option<u64>,
    /// `timings.evalTotalTime`: its evaluation alone (no HTTP, no JSON), s.
    eval_s: Option<f64>,
}

/// The answer's series plus Prometheus's stats when the request asked for
/// them.
fn prometheus_series(body: &[u8]) -> Result<(Vec<Series>, PromStats)> {
    let j: serde_json::Value = serde_json::from_slice(body)?;
    let data = j.get("data").ok_or("response without data")?;
    let result = data
        .get("result")
        .and_then(|r| r.as_array())
        .ok_or("response without a result array")?;
    let out = answers::series_of(result)?;
    let stats = PromStats {
        queryable: data
            .pointer("/stats/samples/totalQueryableSamples")
            .and_then(|v| v.as_u64()),
        eval_s: data
            .pointer("/stats/timings/evalTotalTime")
            .and_then(|v| v.as_f64()),
    };
    Ok((out, stats))
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// None when the answers agree, else the first difference.
fn compare(p: &[Series], q: &[Series]) -> Option<String> {
    if p.len() != q.len() {
        return Some(format!(
            "{} series from Pharos, {} from Prometheus",
            p.len(),
            q.len()
        ));
    }
    for (a, b) in p.iter().zip(q) {
        if a.0 != b.0 {
            return Some(format!(
                "labels differ: Pharos {:?}, Prometheus {:?}",
                a.0, b.0
            ));
        }
        if a.1.len() != b.1.len() {
            return Some(format!(
                "{:?}: {} points from Pharos, {} from Prometheus",
                a.0,
                a.1.len(),
                b.1.len()
            ));
        }
        for (x, y) in a.1.iter().zip(&b.1) {
            if x.0 != y.0 || !close(x.1, y.1) {
                return Some(format!(
                    "{:?}: Pharos ({}, {}), Prometheus ({}, {})",
                    a.0, x.0, x.1, y.0, y.1
                ));
            }
        }
    }
    None
}

fn si(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

struct Row {
    case: String,
    series_out: usize,
    pharos: (Duration, Duration, usize),
    pharos_samples: usize,
    prom: Option<(Duration, Duration, usize, PromStats)>,
    verdict: String,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-promql: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let w = Workload::new(args.series, args.hours);
    println!("workload: {}", w.describe());

    let (head, load) = load_head(&w)?;
    println!(
        "pharos load: {} samples in {:.2} s = {}/s (one thread; Head, 24 h chunk range)",
        w.samples(),
        load.as_secs_f64(),
        si(w.samples() as f64 / load.as_secs_f64())
    );

    let mut http = args.prometheus.as_deref().map(Http::new);
    if let Some(http) = http.as_mut() {
        let (took, bytes) = remote_write(&w, http, args.batch_series)?;
        println!(
            "prometheus remote write: {} samples, {} MB snappy, in {:.1} s = {}/s (HTTP time only; \
             {} series per request, hour by hour)",
            w.samples(),
            bytes / 1_000_000,
            took.as_secs_f64(),
            si(w.samples() as f64 / took.as_secs_f64()),
            args.batch_series
        );
    }

    let engine = Engine::new(EngineOptions {
        max_samples: MAX_SAMPLES,
        ..EngineOptions::default()
    });
    let mut rows = Vec::new();
    let mut disagreements = Vec::new();
    for c in cases(&w) {
        let name = format!("`{}` {}", c.query, c.label);
        // First run of each side: warm-up and the correctness comparison.
        let (_, stats, value) = run_pharos(&engine, &head, &c)?;
        let p_series = pharos_series(&value)?;
        let mut verdict = String::from("-");
        let mut prom_stats = PromStats::default();
        let mut prom_evals = Vec::new();
        if let Some(http) = http.as_mut() {
            let (_, body) = run_prometheus(http, &c, true)?;
            let (q_series, st) = prometheus_series(&body)?;
            prom_stats = st;
            prom_evals.extend(st.eval_s);
            verdict = match compare(&p_series, &q_series) {
                None => "agree".into(),
                Some(d) => {
                    disagreements.push(format!("{name}: {d}"));
                    "DISAGREE".into()
                }
            };
        }
        // Timed runs alternate between the two sides so both see the same
        // noise; each side stops at --runs or --max-secs.
        let (mut pt, mut qt) = (Vec::new(), Vec::new());
        let (mut p_spent, mut q_spent) = (Duration::ZERO, Duration::ZERO);
        let budget = Duration::from_secs_f64(args.max_secs);
        loop {
            let p_more = pt.len() < args.runs && (p_spent < budget || pt.len() < 3);
            let q_more =
                http.is_some() && qt.len() < args.runs && (q_spent < budget || qt.len() < 3);
            if !p_more && !q_more {
                break;
            }
            if p_more {
                let (d, _, _) = run_pharos(&engine, &head, &c)?;
                p_spent += d;
                pt.push(d);
            }
            if q_more {
                if let Some(http) = http.as_mut() {
                    let (d, _) = run_prometheus(http, &c, false)?;
                    q_spent += d;
                    qt.push(d);
                }
            }
        }
        // Prometheus's own evaluation time, from two more requests with
        // stats (outside the latency figures): the median of three.
        if let Some(http) = http.as_mut() {
            for _ in 0..2 {
                let (_, body) = run_prometheus(http, &c, true)?;
                prom_evals.extend(prometheus_series(&body)?.1.eval_s);
            }
            prom_evals.sort_by(f64::total_cmp);
            prom_stats.eval_s = prom_evals.get(prom_evals.len() / 2).copied();
        }
        let (pm, p99) = quantiles(&mut pt);
        let prom = (!qt.is_empty()).then(|| {
            let (qm, q99) = quantiles(&mut qt);
            (qm, q99, qt.len(), prom_stats)
        });
        let row = Row {
            case: name,
            series_out: p_series.len(),
            pharos: (pm, p99, pt.len()),
            pharos_samples: stats.samples_loaded,
            prom,
            verdict,
        };
        eprintln!("done: {}", row.case);
        rows.push(row);
    }

    // Throughput in two units: samples Pharos decoded (QueryStats), and
    // Prometheus's own `totalQueryableSamples` (samples summed over the
    // windows of every step) divided by each side's median latency.
    println!();
    println!(
        "| query | shape | series out | Pharos median ms | Pharos p99 ms | Prometheus median ms \
         | Prometheus p99 ms | Prometheus / Pharos | runs P/Q | Prometheus evalTotalTime ms \
         | Pharos decoded/s | queryable samples | Pharos queryable/s | Prometheus queryable/s | answers |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
    for r in &rows {
        let (pm, p99, pn) = r.pharos;
        let per_s = |n: f64, d: Duration| si(n / d.as_secs_f64());
        let (qm, q99, ratio, runs, q_eval, qs, p_qrate, q_qrate) = match r.prom {
            Some((qm, q99, qn, st)) => (
                ms(qm),
                ms(q99),
                format!("{:.2}x", qm.as_secs_f64() / pm.as_secs_f64()),
                format!("{pn}/{qn}"),
                st.eval_s
                    .map_or("?".into(), |e| ms(Duration::from_secs_f64(e))),
                st.queryable.map_or("?".into(), |s| si(s as f64)),
                st.queryable.map_or("?".into(), |s| per_s(s as f64, pm)),
                st.queryable.map_or("?".into(), |s| per_s(s as f64, qm)),
            ),
            None => {
                let d = || "-".to_string();
                (d(), d(), d(), format!("{pn}/-"), d(), d(), d(), d())
            }
        };
        let (query, shape) = r.case.rsplit_once("` ").unwrap_or((&r.case, ""));
        println!(
            "| {query}` | {shape} | {} | {} | {} | {qm} | {q99} | {ratio} | {runs} | {q_eval} | {} | {qs} | {p_qrate} | {q_qrate} | {} |",
            r.series_out,
            ms(pm),
            ms(p99),
            per_s(r.pharos_samples as f64, pm),
            r.verdict
        );
    }
    if http.is_some() {
        println!();
        if disagreements.is_empty() {
            println!(
                "answers: every case agrees (labels, timestamps, values within 1e-9 relative)"
            );
        } else {
            println!("ANSWERS DISAGREE in {} case(s):", disagreements.len());
            for d in &disagreements {
                println!("  {d}");
            }
        }
    }
    Ok(())
}
