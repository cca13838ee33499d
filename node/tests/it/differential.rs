//! Differential test against a real Prometheus 2.42 (issue 4 item 6): the
//! same synthetic data remote-written into both, every query in [`QUERIES`]
//! asked of both as instant queries (at three times) and as range queries
//! (two, with different steps), and the answers compared by [`compare`]:
//! identical status, error type and result type, equal label sets, equal
//! timestamps, and values equal within 1e-9 relative (NaN equals NaN).
//! Instant vectors are compared as sets (2.42 gives them no defined order)
//! unless the query is a top-level `sort`/`sort_desc`; matrices in order.
//! Error messages and `warnings`/`infos` are not compared: 2.42 has no
//! `infos`, and Pharos's annotations follow Prometheus 3.
//!
//! [`prometheus_differential_coverage`] needs no Prometheus and always runs:
//! it parses every query with Pharos's parser and fails if any Prometheus
//! 2.42 function, aggregation, binary operator or modifier family is no
//! longer asked, or if there are fewer than 100 queries. The live test also
//! asks Prometheus itself which names it knows, so the fixed function list
//! cannot drift from 2.42's table.
//!
//! Pharos follows Prometheus 3 where 2.42 differs. Two such differences are
//! in the arithmetic of every range function, so the data and evaluation
//! times keep every listed query away from them (see [`Times`] and
//! [`data`]) and [`check_window_boundary`] and [`check_rate_zero_point`]
//! show each exactly, once. The others are handled per query:
//! [`pharos_form`] (renamed functions) and [`EXPECTED_DIFFERENCES`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use pharos_query::parser::ast::{AtModifier, Cardinality, Expr};
use pharos_query::parser::{parse_with, ParseOptions};
use serde_json::Value;

use crate::common::*;
use crate::differential_queries::*;
use crate::prometheus::{prometheus_available, Prom};

/// The query Pharos is asked for Prometheus 2.42's `q`: renamed functions
/// get their 3.x name ([`RENAMED`]).
fn pharos_form(q: &str) -> String {
    let mut out = q.to_string();
    for (old, new) in RENAMED {
        out = out.replace(&format!("{old}("), &format!("{new}("));
    }
    out
}

fn parse_options() -> ParseOptions {
    // Experimental functions only for `RENAMED` targets.
    ParseOptions {
        experimental_functions: true,
        ..ParseOptions::default()
    }
}

/// What the queries use, in the names of the constant lists above.
#[derive(Default)]
struct Coverage {
    functions: BTreeSet<String>,
    aggregations: BTreeSet<String>,
    binary_ops: BTreeSet<String>,
    features: BTreeSet<&'static str>,
}

impl Coverage {
    fn walk(&mut self, e: &Expr, in_subquery: bool) {
        match e {
            Expr::Number(_) => {
                self.features.insert("number literal");
            }
            Expr::String(_) => {
                self.features.insert("string literal");
            }
            Expr::VectorSelector(vs) => self.selector(vs),
            Expr::MatrixSelector(ms) => {
                self.features.insert("matrix selector");
                self.selector(&ms.vs);
            }
            Expr::Subquery(sq) => {
                self.features.insert("subquery");
                if in_subquery {
                    self.features.insert("nested subquery");
                }
                if sq.step.is_none() {
                    self.features.insert("subquery default step");
                }
                self.modifiers(sq.offset.as_ref().and_then(|d| d.as_literal()), sq.at);
                self.walk(&sq.expr, true);
            }
            Expr::Paren(p) => self.walk(&p.expr, in_subquery),
            Expr::Unary(u) => {
                self.features.insert(match u.op {
                    pharos_query::parser::ast::UnaryOp::Neg => "unary minus",
                    pharos_query::parser::ast::UnaryOp::Pos => "unary plus",
                });
                self.walk(&u.expr, in_subquery);
            }
            Expr::Binary(b) => {
                self.binary_ops.insert(b.op.as_str().to_string());
                let scalar =
                    |e: &Expr| e.value_type() == pharos_query::parser::ast::ValueType::Scalar;
                self.features
                    .insert(match (scalar(&b.lhs), scalar(&b.rhs)) {
                        (true, true) => "scalar op scalar",
                        (false, true) => "vector op scalar",
                        (true, false) => "scalar op vector",
                        (false, false) => "vector op vector",
                    });
                if b.op.is_comparison() {
                    self.features.insert(if b.return_bool {
                        "comparison bool"
                    } else {
                        "comparison filter"
                    });
                }
                if let Some(m) = &b.matching {
                    if m.on {
                        self.features.insert("on");
                    } else if !m.labels.is_empty() {
                        self.features.insert("ignoring");
                    }
                    match (m.card, m.include.is_empty()) {
                        (Cardinality::ManyToOne, true) => {
                            self.features.insert("group_left");
                        }
                        (Cardinality::ManyToOne, false) => {
                            self.features.insert("group_left(labels)");
                        }
                        (Cardinality::OneToMany, true) => {
                            self.features.insert("group_right");
                        }
                        (Cardinality::OneToMany, false) => {
                            self.features.insert("group_right(labels)");
                        }
                        _ => {}
                    }
                }
                self.walk(&b.lhs, in_subquery);
                self.walk(&b.rhs, in_subquery);
            }
            Expr::Aggregate(a) => {
                self.aggregations.insert(a.op.as_str().to_string());
                if a.without {
                    self.features.insert("aggregation without");
                } else if !a.grouping.is_empty() {
                    self.features.insert("aggregation by");
                }
                if let Some(p) = &a.param {
                    self.walk(p, in_subquery);
                }
                self.walk(&a.expr, in_subquery);
            }
            Expr::Call(c) => {
                let name = RENAMED
                    .iter()
                    .find(|(_, new)| *new == c.func)
                    .map_or(c.func.as_str(), |(old, _)| old);
                self.functions.insert(name.to_string());
                for a in &c.args {
                    self.walk(a, in_subquery);
                }
            }
        }
    }

    fn selector(&mut self, vs: &pharos_query::parser::ast::VectorSelector) {
        if vs.name.is_none() {
            self.features.insert("name in braces");
        }
        for m in &vs.matchers {
            match m.kind.as_str() {
                "=~" => {
                    self.features.insert("regex matcher");
                }
                "!~" => {
                    self.features.insert("negative regex matcher");
                }
                "!=" => {
                    self.features.insert("not-equal matcher");
                }
                _ => {}
            }
        }
        self.modifiers(vs.offset.as_ref().and_then(|d| d.as_literal()), vs.at);
    }

    fn modifiers(&mut self, offset_ms: Option<i64>, at: Option<AtModifier>) {
        match offset_ms {
            Some(o) if o < 0 => {
                self.features.insert("negative offset");
            }
            Some(_) => {
                self.features.insert("offset");
            }
            None => {}
        }
        match at {
            Some(AtModifier::Timestamp(_)) => {
                self.features.insert("@ timestamp");
            }
            Some(AtModifier::Start) => {
                self.features.insert("@ start()");
            }
            Some(AtModifier::End) => {
                self.features.insert("@ end()");
            }
            None => {}
        }
    }
}

fn missing<'a>(want: &[&'a str], have: &BTreeSet<String>) -> Vec<&'a str> {
    want.iter()
        .copied()
        .filter(|w| !have.contains(*w))
        .collect()
}

/// Fails if the query list stops covering Prometheus 2.42's PromQL.
#[test]
fn prometheus_differential_coverage() {
    assert!(QUERIES.len() >= 100, "only {} queries", QUERIES.len());
    let unique: BTreeSet<_> = QUERIES.iter().collect();
    assert_eq!(unique.len(), QUERIES.len(), "duplicate queries");
    let mut cov = Coverage::default();
    for orig in QUERIES {
        let q = pharos_form(&orig.replace("AT", "1700000000.5"));
        match parse_with(&q, &parse_options()) {
            Ok(e) => cov.walk(&e, false),
            // Parse errors are asked on purpose, and compared.
            Err(_) if ERRORS.contains(orig) => {}
            Err(err) => panic!("Pharos cannot parse {q:?}: {err}"),
        }
    }
    for q in ERRORS
        .iter()
        .chain(ALWAYS_EMPTY)
        .chain(EXPECTED_DIFFERENCES.iter().map(|(q, _, _)| q))
    {
        assert!(QUERIES.contains(q), "{q:?} is listed but not asked");
    }
    let m = missing(PROMETHEUS_242_FUNCTIONS, &cov.functions);
    assert!(m.is_empty(), "functions never asked: {m:?}");
    let extra: Vec<_> = cov
        .functions
        .iter()
        .filter(|f| !PROMETHEUS_242_FUNCTIONS.contains(&f.as_str()))
        .collect();
    assert!(extra.is_empty(), "not Prometheus 2.42 functions: {extra:?}");
    let m = missing(AGGREGATIONS_242, &cov.aggregations);
    assert!(m.is_empty(), "aggregations never asked: {m:?}");
    let m = missing(BINARY_OPS_242, &cov.binary_ops);
    assert!(m.is_empty(), "binary operators never asked: {m:?}");
    let features: BTreeSet<String> = cov.features.iter().map(|f| f.to_string()).collect();
    let m = missing(FEATURES, &features);
    assert!(m.is_empty(), "syntax never asked: {m:?}");
    // Every 2.42 function is one Pharos knows (under its 3.x name if renamed).
    for f in PROMETHEUS_242_FUNCTIONS {
        let name = RENAMED
            .iter()
            .find(|(old, _)| old == f)
            .map_or(*f, |(_, new)| new);
        assert!(
            pharos_query::parser::functions::lookup(name).is_some(),
            "Pharos lacks {name}"
        );
    }
}

/// Evaluation times. At a time where a window's start falls exactly on a
/// sample (or on a subquery point), Prometheus 2.42's closed range and
/// lookback windows `[t-r, t]` and Prometheus 3's left-open `(t-r, t]`
/// (which Pharos follows) see a different first sample; so no window start
/// may ever fall on one. Milliseconds after the whole second tell them
/// apart: samples sit at .250 (the 15 s grid offset by 7.25 s from absolute
/// multiples of 15 s) or, jittered, at .373; subquery points, which
/// Prometheus aligns to absolute multiples of their whole-second step, at
/// .000; every evaluation time, and so every window start (ranges and
/// offsets are whole seconds), at .500; `AT` at .750. Range steps are whole
/// seconds to keep it so. [`check_window_boundary`] shows the difference
/// this avoids.
struct Times {
    /// First sample, milliseconds.
    base: i64,
    /// Instant query times, seconds with decimals.
    instants: [String; 3],
    /// Range queries as (start, end, step): the whole data and more at a
    /// 30 s step, and its later part at 37 s (not a multiple of the sample
    /// interval). Whole seconds: a step of 22.5 s would put every other
    /// evaluation time on a .000, where subquery points are.
    ranges: [(String, String, &'static str); 2],
    /// Replaces `AT` in the queries.
    at: String,
}

const STEP_MS: i64 = 15_000;
/// Samples per series: 75 minutes at 15 s.
const STEPS: i64 = 301;

impl Times {
    fn new() -> Times {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let grid = now_ms / STEP_MS * STEP_MS;
        let base = grid - STEPS * STEP_MS + 7_250;
        let last = base + (STEPS - 1) * STEP_MS;
        // `off`: 5.25 s past a sample, so at .500.
        let secs = |ms: i64| format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
        let off = |ms: i64| secs(ms + 5_250);
        Times {
            base,
            instants: [
                off(last - STEP_MS),
                off(base + 160 * STEP_MS),
                off(base + 12 * STEP_MS),
            ],
            ranges: [
                (off(base - 5 * STEP_MS), off(last - STEP_MS), "30"),
                (off(base + 100 * STEP_MS), off(last - STEP_MS), "37"),
            ],
            at: secs(base + 200 * STEP_MS + 3_500),
        }
    }
}

/// One way every query is asked.
struct Ask {
    path: &'static str,
    params: Vec<(&'static str, String)>,
    instant: bool,
}

impl Times {
    fn asks(&self) -> Vec<Ask> {
        let instants = self.instants.iter().map(|t| Ask {
            path: "/api/v1/query",
            params: vec![("time", t.clone())],
            instant: true,
        });
        let ranges = self.ranges.iter().map(|(start, end, step)| Ask {
            path: "/api/v1/query_range",
            params: vec![
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", step.to_string()),
            ],
            instant: false,
        });
        instants.chain(ranges).collect()
    }
}

/// Counters (http_requests_total with two resets; the histogram family
/// starts at zero), gauges with negative and large values, a classic
/// histogram with `le` buckets plus `_sum`/`_count`, an info-style series
/// for `group_left`, and batch series that stop (with and without a
/// staleness marker) or start late. Several jobs and instances.
///
/// Counters that do not start at zero start far from it, so rate's
/// extrapolation is never capped by the counter's zero point: where it is
/// capped, Prometheus 3 (Pharos) applies the cap after the half-interval
/// rule and 2.42 before it, which gives other values for windows that reach
/// past the first sample.
fn data(base: i64) -> Vec<pharos_proto::prometheus::TimeSeries> {
    let t = |k: i64| base + k * STEP_MS;
    let grid =
        |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> { (0..STEPS).map(|k| (t(k), f(k))).collect() };
    let mut out = Vec::new();

    let targets = [
        ("api", "a:80"),
        ("api", "b:80"),
        ("api", "c:80"),
        ("web", "a:80"),
        ("web", "d:80"),
    ];
    let mut s = 0i64;
    for (job, inst) in targets {
        for code in ["200", "500"] {
            // Distinct fractional parts: no two counters are ever equal, so
            // topk/bottomk never face ties.
            let mut v = 10_000.0 * (s + 1) as f64 + s as f64 / 10.0;
            let mut samples = Vec::new();
            for k in 0..STEPS {
                if k > 0 {
                    v += if code == "200" {
                        (1 + (k * 7 + s * 13) % 11) as f64
                    } else {
                        ((k * 3 + s) % 4) as f64
                    };
                }
                if (inst, code, job, k) == ("b:80", "200", "api", 150) {
                    v = 50.0 + s as f64 / 10.0;
                }
                if (inst, code, job, k) == ("d:80", "500", "web", 220) {
                    v = 20.0 + s as f64 / 10.0;
                }
                samples.push((t(k), v));
            }
            out.push(series(
                &[
                    ("__name__", "http_requests_total"),
                    ("code", code),
                    ("instance", inst),
                    ("job", job),
                ],
                &samples,
            ));
            s += 1;
        }
        let up = grid(&|k| {
            if inst == "d:80" && (100..130).contains(&k) {
                0.0
            } else {
                1.0
            }
        });
        out.push(series(
            &[("__name__", "up"), ("instance", inst), ("job", job)],
            &up,
        ));
    }
    for (i, version) in ["v1", "v2", "v1"].iter().enumerate() {
        out.push(series(
            &[
                ("__name__", "build_info"),
                ("instance", targets[i].1),
                ("job", "api"),
                ("version", version),
            ],
            &grid(&|_| 1.0),
        ));
    }
    for i in 0..4i64 {
        let inst = format!("n{i}");
        let fi = i as f64;
        let labels = |name: &'static str| {
            [
                ("__name__", name),
                ("instance", inst.as_str()),
                ("job", "node"),
            ]
        };
        let kf = |k: i64| k as f64;
        out.push(series(
            &labels("node_temperature_celsius"),
            &grid(&|k| 20.0 * (kf(k) / 17.0 + fi * 1.3).sin() + 4.0 * fi - 6.0 + 0.011 * kf(k)),
        ));
        out.push(series(
            &labels("node_memory_bytes"),
            &grid(&|k| 4e9 + 3e8 * (kf(k) / 29.0 + fi).sin() + fi * 1e8),
        ));
        out.push(series(
            &labels("cpu_ratio"),
            &grid(&|k| 0.9 * (kf(k) / 23.0 + fi * 0.7).cos()),
        ));
        out.push(series(
            &[
                ("__name__", "up"),
                ("instance", inst.as_str()),
                ("job", "node"),
            ],
            &grid(&|_| 1.0),
        ));
    }
    for (i, inst) in ["a:80", "d:80"].iter().enumerate() {
        let i = i as i64;
        out.push(series(
            &[
                ("__name__", "queue_length"),
                ("instance", inst),
                ("job", "web"),
            ],
            &grid(&|k| ((k * 5 + i * 3) % 9) as f64),
        ));
    }
    // A classic histogram: per step, n(j) new observations land in bucket j.
    let bounds = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
    let mids = [0.03, 0.07, 0.2, 0.4, 0.8, 2.0, 4.0];
    for (i, inst) in ["a:80", "b:80", "c:80"].iter().enumerate() {
        let i = i as i64;
        let new = |k: i64, j: i64| ((k * (j + 2) + i * 7 + j) % (j + 3)) as f64;
        let mut cum = vec![vec![0.0f64; STEPS as usize]; bounds.len()];
        let mut sum = vec![0.0f64; STEPS as usize];
        for k in 1..STEPS as usize {
            let mut acc = 0.0;
            sum[k] = sum[k - 1];
            for j in 0..bounds.len() {
                let n = new(k as i64, j as i64);
                acc += n;
                cum[j][k] = cum[j][k - 1] + acc;
                sum[k] += n * mids[j];
            }
        }
        for (j, le) in bounds.iter().enumerate() {
            let samples: Vec<_> = (0..STEPS).map(|k| (t(k), cum[j][k as usize])).collect();
            out.push(series(
                &[
                    ("__name__", "http_request_duration_seconds_bucket"),
                    ("instance", inst),
                    ("job", "api"),
                    ("le", le),
                ],
                &samples,
            ));
        }
        let count: Vec<_> = (0..STEPS)
            .map(|k| (t(k), cum[bounds.len() - 1][k as usize]))
            .collect();
        let sums: Vec<_> = (0..STEPS).map(|k| (t(k), sum[k as usize])).collect();
        for (name, samples) in [
            ("http_request_duration_seconds_count", count),
            ("http_request_duration_seconds_sum", sums),
        ] {
            out.push(series(
                &[("__name__", name), ("instance", inst), ("job", "api")],
                &samples,
            ));
        }
    }
    // Scrape-like jitter: timestamps up to ±2 s off the grid (their
    // millisecond part is always .373, so no window start, at .000, .500 or
    // .750, can fall on one; see `Times`), a missed scrape now and then, and
    // a 10 minute outage shared by both instances.
    for (i, inst) in ["j1", "j2"].iter().enumerate() {
        let i = i as i64;
        let jitter = |k: i64| ((k * 7919 + i * 31) % 5) * 1000 - 2000 + 123;
        let kept = |k: i64| (k + i) % 17 != 0 && !(140..180).contains(&k);
        let mut counter = 5_000.0 + 1_000.0 * i as f64;
        let mut counts = Vec::new();
        let mut gauge = Vec::new();
        for k in 0..STEPS {
            counter += ((k * 13 + i) % 7) as f64 + 0.5;
            if k == 230 + i * 7 {
                counter = 100.0 + i as f64;
            }
            if kept(k) {
                let ts = t(k) + jitter(k);
                counts.push((ts, counter));
                gauge.push((
                    ts,
                    50.0 * (k as f64 / 11.0 + i as f64).sin() + k as f64 / 10.0,
                ));
            }
        }
        for (name, samples) in [("jitter_requests_total", counts), ("jitter_gauge", gauge)] {
            out.push(series(
                &[("__name__", name), ("instance", inst), ("job", "jitter")],
                &samples,
            ));
        }
    }
    // A counter that starts near zero, for `check_rate_zero_point` only (no
    // query in the list selects it).
    out.push(series(
        &[("__name__", "fresh_counter_total"), ("job", "fresh")],
        &grid(&|k| 10.0 * (k + 1) as f64),
    ));
    // Batch jobs: x stops with a staleness marker, y stops without one (it
    // fades after the 5 m lookback), z starts late.
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let ts_value = |k: i64| (t(k) / 1000) as f64;
    for (inst, ks, marker) in [
        ("x", 0..200, true),
        ("y", 0..260, false),
        ("z", 120..STEPS, false),
    ] {
        let mut samples: Vec<_> = ks.clone().map(|k| (t(k), ts_value(k))).collect();
        if marker {
            samples.push((t(ks.end), stale));
        }
        out.push(series(
            &[
                ("__name__", "batch_last_success_timestamp_seconds"),
                ("instance", inst),
                ("job", "batch"),
            ],
            &samples,
        ));
    }
    out
}

/// Writes `all` to `addr` in time order, 20 minutes per request as a
/// remote-write client would (Prometheus rejects samples more than an hour
/// older than its newest one).
async fn write_all(addr: SocketAddr, all: &[pharos_proto::prometheus::TimeSeries], base: i64) {
    let slice = 80 * STEP_MS;
    let mut from = base;
    while from < base + STEPS * STEP_MS + STEP_MS {
        let part: Vec<_> = all
            .iter()
            .filter_map(|ts| {
                let mut ts = ts.clone();
                ts.samples
                    .retain(|s| s.timestamp >= from && s.timestamp < from + slice);
                (!ts.samples.is_empty()).then_some(ts)
            })
            .collect();
        if !part.is_empty() {
            let r = write_v1(addr, &write_req(part)).await;
            assert!(r.status / 100 == 2, "{addr}: {} {}", r.status, r.text());
        }
        from += slice;
    }
}

fn parse_value(v: &Value) -> Option<f64> {
    match v.as_str()? {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

/// The rule: equal within 1e-9 relative; NaN equals NaN.
fn close(a: f64, b: f64) -> bool {
    a == b
        || (a.is_nan() && b.is_nan())
        // Finite only: an infinite bound would let +Inf equal anything.
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-9 * a.abs().max(b.abs()))
}

/// `[t, "v"]` pairs: equal timestamps, close values (strings: equal).
fn same_point(a: &Value, b: &Value, string: bool) -> Result<(), String> {
    if a[0].as_f64() != b[0].as_f64() {
        return Err(format!("timestamp {} vs {}", a[0], b[0]));
    }
    if string {
        return if a[1] == b[1] {
            Ok(())
        } else {
            Err(format!("{} vs {}", a[1], b[1]))
        };
    }
    match (parse_value(&a[1]), parse_value(&b[1])) {
        (Some(x), Some(y)) if close(x, y) => Ok(()),
        _ => Err(format!("value {} vs {}", a[1], b[1])),
    }
}

fn label_key(metric: &Value) -> String {
    let pairs: BTreeMap<&str, &str> = metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    format!("{pairs:?}")
}

/// Compares two API answers (`a` Prometheus's, `b` Pharos's). `ordered`:
/// the vector's order is part of the answer (a top-level `sort`/`sort_desc`;
/// other instant vectors come in no defined order in 2.42).
fn compare(a: &Value, b: &Value, ordered: bool) -> Result<(), String> {
    if a["status"] != b["status"] {
        return Err(format!("status {} vs {}", a["status"], b["status"]));
    }
    if a["status"] == "error" {
        return if a["errorType"] == b["errorType"] {
            Ok(())
        } else {
            Err(format!(
                "errorType {} vs {}",
                a["errorType"], b["errorType"]
            ))
        };
    }
    let (a, b) = (&a["data"], &b["data"]);
    if a["resultType"] != b["resultType"] {
        return Err(format!(
            "resultType {} vs {}",
            a["resultType"], b["resultType"]
        ));
    }
    let rt = a["resultType"].as_str().unwrap_or("");
    match rt {
        "scalar" | "string" => same_point(&a["result"], &b["result"], rt == "string"),
        "vector" | "matrix" => {
            let empty = Vec::new();
            let (ra, rb) = (
                a["result"].as_array().unwrap_or(&empty),
                b["result"].as_array().unwrap_or(&empty),
            );
            let index = |r: &Vec<Value>| -> BTreeMap<String, Value> {
                r.iter()
                    .map(|s| {
                        let v = if rt == "vector" {
                            s["value"].clone()
                        } else {
                            s["values"].clone()
                        };
                        (label_key(&s["metric"]), v)
                    })
                    .collect()
            };
            let (ia, ib) = (index(ra), index(rb));
            if ia.len() != ra.len() || ib.len() != rb.len() {
                return Err("duplicate label sets in a result".into());
            }
            let ka: Vec<_> = ia.keys().collect();
            let kb: Vec<_> = ib.keys().collect();
            if ka != kb {
                return Err(format!(
                    "series differ: only in prometheus {:?}, only in pharos {:?}",
                    ka.iter()
                        .filter(|k| !ib.contains_key(**k))
                        .collect::<Vec<_>>(),
                    kb.iter()
                        .filter(|k| !ia.contains_key(**k))
                        .collect::<Vec<_>>()
                ));
            }
            for (k, va) in &ia {
                let vb = &ib[k];
                if rt == "vector" {
                    same_point(va, vb, false).map_err(|e| format!("{k}: {e}"))?;
                } else {
                    let (pa, pb) = (
                        va.as_array().unwrap_or(&empty),
                        vb.as_array().unwrap_or(&empty),
                    );
                    if pa.len() != pb.len() {
                        return Err(format!("{k}: {} vs {} points", pa.len(), pb.len()));
                    }
                    for (x, y) in pa.iter().zip(pb) {
                        same_point(x, y, false).map_err(|e| format!("{k}: {e}"))?;
                    }
                }
            }
            // Matrices come sorted by labels from both; sorted vectors in
            // the order the function asked for. (Ties in a sorted vector
            // have no defined order: compare values there, not labels.)
            if rt == "matrix" {
                let oa: Vec<_> = ra.iter().map(|s| label_key(&s["metric"])).collect();
                let ob: Vec<_> = rb.iter().map(|s| label_key(&s["metric"])).collect();
                if oa != ob {
                    return Err(format!("series order {oa:?} vs {ob:?}"));
                }
            }
            if ordered {
                for (x, y) in ra.iter().zip(rb) {
                    same_point(&x["value"], &y["value"], false)
                        .map_err(|e| format!("sort order: {e}"))?;
                }
            }
            Ok(())
        }
        other => Err(format!("unknown resultType {other}")),
    }
}

/// Checks a [`Known`] difference: it must show exactly as described, and
/// the rest of the answer must agree.
fn check_known(kind: Known, a: &Value, b: &Value, ordered: bool) -> Result<(), String> {
    match kind {
        Known::NameKeptBy242 => {
            let mut a = a.clone();
            let mut had_name = false;
            if let Some(series) = a["data"]["result"].as_array_mut() {
                for s in series {
                    if let Some(m) = s["metric"].as_object_mut() {
                        had_name |= m.remove("__name__").is_some();
                    }
                }
            }
            if !had_name {
                return Err("known difference gone: 2.42 dropped __name__ too; \
                            remove the EXPECTED_DIFFERENCES entry"
                    .into());
            }
            compare(&a, b, ordered)
        }
        Known::EmptyIn242 | Known::EmptyInPharos => {
            let empty = |v: &Value| v["data"]["result"].as_array().is_some_and(|r| r.is_empty());
            // `e`: the side expected empty; `v`: the one with values.
            let (e, v) = if kind == Known::EmptyInPharos {
                (b, a)
            } else {
                (a, b)
            };
            if e["status"] != "success" || !empty(e) {
                return Err(format!("known difference gone: expected empty, got {e}"));
            }
            if v["status"] != "success"
                || empty(v)
                || e["data"]["resultType"] != v["data"]["resultType"]
            {
                return Err(format!("expected values, got {v}"));
            }
            Ok(())
        }
    }
}

fn is_sorted_query(q: &str) -> bool {
    match parse_with(q, &parse_options()) {
        Ok(e) => {
            matches!(e.unwrap_parens(), Expr::Call(c) if c.func == "sort" || c.func == "sort_desc")
        }
        Err(_) => false,
    }
}

/// Asks Prometheus whether it knows each function name, so
/// [`PROMETHEUS_242_FUNCTIONS`] is exactly its table: listed names must be
/// known, and every other name in Pharos's table must be unknown to it.
async fn check_function_table(prom: SocketAddr) {
    let mut wrong = Vec::new();
    let names = pharos_query::parser::functions::FUNCTIONS
        .iter()
        .map(|f| f.name)
        .chain(RENAMED.iter().map(|(old, _)| *old));
    for name in names {
        let q = qs(&[("query", &format!("{name}()"))]);
        let v = get(prom, &format!("/api/v1/query?{q}")).await.json();
        let unknown = v["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown function"));
        // `start()`/`end()` are @-modifier syntax in 2.42 (and experimental
        // functions of Pharos's), never a function.
        let listed = PROMETHEUS_242_FUNCTIONS.contains(&name);
        let at_syntax = matches!(name, "start" | "end");
        if listed == unknown && (listed || !at_syntax) {
            wrong.push(format!("{name}: listed {listed}, prometheus: {v}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "function list is not 2.42's:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_differential_all_queries() {
    if !prometheus_available() {
        return;
    }
    let started = Instant::now();
    let n = node_with(|c| c.pharos.query.enable_experimental_functions = true).await;
    let dir = tempfile::tempdir().unwrap();
    let mut prom = Prom::start_with(
        dir.path(),
        "differential",
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    );
    prom.wait_ready().await;
    check_function_table(prom.addr).await;

    let times = Times::new();
    let all = data(times.base);
    write_all(prom.addr, &all, times.base).await;
    write_all(n.addr, &all, times.base).await;

    let mut failures = Vec::new();
    let mut asked = 0;
    let mut selected = BTreeSet::new();
    for q in QUERIES {
        let q_prom = q.replace("AT", &times.at);
        let q_pharos = pharos_form(&q_prom);
        let sorted = is_sorted_query(&q_pharos);
        for ask in times.asks() {
            let with = |query: &str| {
                let mut p = vec![("query", query)];
                p.extend(ask.params.iter().map(|(k, v)| (*k, v.as_str())));
                format!("{}?{}", ask.path, qs(&p))
            };
            let a = get(prom.addr, &with(&q_prom)).await;
            let b = get(n.addr, &with(&q_pharos)).await;
            asked += 1;
            let (va, vb) = (a.json(), b.json());
            if ask.instant && (va["status"] == "error") != ERRORS.contains(q) {
                failures.push(format!(
                    "{q}: ERRORS is wrong about it: prometheus says {va}"
                ));
                continue;
            }
            if va["status"] == "success"
                && va["data"]["result"]
                    .as_array()
                    .is_none_or(|r| !r.is_empty())
            {
                selected.insert(*q);
            }
            let known = EXPECTED_DIFFERENCES.iter().find(|(x, _, _)| x == q);
            let result = match known {
                None => compare(&va, &vb, ask.instant && sorted),
                Some((_, kind, why)) => {
                    let r = check_known(*kind, &va, &vb, ask.instant && sorted);
                    if r.is_ok() {
                        eprintln!(
                            "known difference, as expected ({why}): {} {q_prom}",
                            ask.path
                        );
                    }
                    r
                }
            };
            if let Err(e) = result {
                failures.push(format!("{} {q_prom} {:?}: {e}", ask.path, ask.params));
            }
        }
    }
    for q in QUERIES {
        let empty_listed = ALWAYS_EMPTY.contains(q) || ERRORS.contains(q);
        if selected.contains(q) == empty_listed {
            failures.push(format!(
                "{q}: ALWAYS_EMPTY/ERRORS is wrong about it (selected something: {})",
                selected.contains(q)
            ));
        }
    }
    for check in [
        check_window_boundary(prom.addr, n.addr, &times).await,
        check_rate_zero_point(prom.addr, n.addr, &times).await,
    ] {
        if let Err(e) = check {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {asked} answers differ from prometheus 2.42:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} queries, {asked} answers (3 instant + 2 range each) agree with prometheus 2.42 in {:?}",
        QUERIES.len(),
        started.elapsed()
    );
    drop(prom);
    n.stop().await;
}

/// The one difference every other query is kept away from, shown exactly:
/// at an evaluation time on the sample grid, 2.42's closed window
/// `[t-1m, t]` holds one sample more (the one at `t-1m`) than Prometheus 3's
/// left-open `(t-1m, t]`, which Pharos follows.
async fn check_window_boundary(
    prom: SocketAddr,
    pharos: SocketAddr,
    times: &Times,
) -> Result<(), String> {
    let t = times.base + 200 * STEP_MS;
    let path = format!(
        "/api/v1/query?{}",
        qs(&[
            ("query", "count_over_time(http_requests_total[1m])"),
            ("time", &format!("{}.{:03}", t / 1000, t % 1000)),
        ])
    );
    let counts = |v: Value| -> BTreeMap<String, Option<f64>> {
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| (label_key(&s["metric"]), parse_value(&s["value"][1])))
            .collect()
    };
    let a = counts(get(prom, &path).await.json());
    let b = counts(get(pharos, &path).await.json());
    let want: BTreeMap<_, _> = a
        .iter()
        .map(|(k, v)| (k.clone(), v.map(|x| x - 1.0)))
        .collect();
    if a.len() == 10 && a.values().all(|v| *v == Some(5.0)) && b == want {
        Ok(())
    } else {
        Err(format!(
            "window boundary at {t} ms: prometheus {a:?}, pharos {b:?}"
        ))
    }
}

/// The other difference the data is kept away from (counters in the list
/// start far from zero), shown exactly. A counter starting inside the window
/// at 10 and growing 10 per 15 s: 13 samples in `(t-5m, t]`, the first
/// 114.75 s after the window start, the last 5.25 s before its end; the
/// counter would have been zero 15 s before its first sample. 2.42 caps the
/// distance to extrapolate at the start to that 15 s and then, as it is
/// below 1.1 times the 15 s interval, extrapolates all of it: increase =
/// 120 * (180 + 15 + 5.25) / 180. Prometheus 3 (Pharos) first decides the
/// gap is too long and takes half an interval, 7.5 s, then caps it at 15 s:
/// 120 * (180 + 7.5 + 5.25) / 180.
async fn check_rate_zero_point(
    prom: SocketAddr,
    pharos: SocketAddr,
    times: &Times,
) -> Result<(), String> {
    let path = format!(
        "/api/v1/query?{}",
        qs(&[
            ("query", "increase(fresh_counter_total[5m])"),
            ("time", &times.instants[2]),
        ])
    );
    let value = |v: Value| parse_value(&v["data"]["result"][0]["value"][1]);
    let a = value(get(prom, &path).await.json());
    let b = value(get(pharos, &path).await.json());
    let want_242 = 120.0 * (180.0 + 15.0 + 5.25) / 180.0;
    let want_3 = 120.0 * (180.0 + 7.5 + 5.25) / 180.0;
    match (a, b) {
        (Some(a), Some(b)) if close(a, want_242) && close(b, want_3) => Ok(()),
        _ => Err(format!(
            "rate zero point: prometheus {a:?} (want {want_242}), pharos {b:?} (want {want_3})"
        )),
    }
}

/// The comparison rule itself: what must pass and what must fail.
#[test]
fn prometheus_differential_compare_rule() {
    let vector = |series: &[(&str, &str)]| -> Value {
        let result: Vec<Value> = series
            .iter()
            .map(|(inst, v)| serde_json::json!({"metric": {"instance": inst}, "value": [10.5, v]}))
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
    };
    let a = vector(&[("a", "1"), ("b", "NaN")]);
    // Equal within 1e-9 relative, NaN equal to NaN, any order.
    assert!(compare(&a, &vector(&[("b", "NaN"), ("a", "1.0000000005")]), false).is_ok());
    // But not beyond 1e-9, not another label set, not another order when
    // the order is the answer, not another result type.
    assert!(compare(&a, &vector(&[("a", "1.000000002"), ("b", "NaN")]), false).is_err());
    assert!(compare(&a, &vector(&[("a", "1"), ("c", "NaN")]), false).is_err());
    assert!(compare(&a, &vector(&[("a", "1")]), false).is_err());
    assert!(compare(&a, &vector(&[("b", "NaN"), ("a", "1")]), true).is_err());
    assert!(compare(&a, &vector(&[("a", "+Inf"), ("b", "NaN")]), false).is_err());
    let scalar = serde_json::json!({"status": "success", "data": {"resultType": "scalar", "result": [10.5, "1"]}});
    assert!(compare(&scalar, &vector(&[("a", "1")]), false).is_err());
    // Errors agree when their type does.
    let err = |t: &str| serde_json::json!({"status": "error", "errorType": t, "error": "x"});
    assert!(compare(&err("bad_data"), &err("bad_data"), false).is_ok());
    assert!(compare(&err("bad_data"), &err("execution"), false).is_err());
    assert!(compare(&err("bad_data"), &a, false).is_err());
    // Matrices: same points, same series order.
    let matrix = |series: &[(&str, &[(f64, &str)])]| -> Value {
        let result: Vec<Value> = series
            .iter()
            .map(|(inst, pts)| {
                let values: Vec<Value> =
                    pts.iter().map(|(t, v)| serde_json::json!([t, v])).collect();
                serde_json::json!({"metric": {"instance": inst}, "values": values})
            })
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": result}})
    };
    let m = matrix(&[("a", &[(1.0, "1"), (2.0, "2")]), ("b", &[(1.0, "3")])]);
    assert!(compare(&m, &m.clone(), false).is_ok());
    assert!(compare(
        &m,
        &matrix(&[("b", &[(1.0, "3")]), ("a", &[(1.0, "1"), (2.0, "2")])]),
        false
    )
    .is_err());
    assert!(compare(
        &m,
        &matrix(&[("a", &[(1.0, "1"), (3.0, "2")]), ("b", &[(1.0, "3")])]),
        false
    )
    .is_err());
    assert!(compare(
        &m,
        &matrix(&[("a", &[(1.0, "1")]), ("b", &[(1.0, "3")])]),
        false
    )
    .is_err());
}
