//! Engine tests over a hand-built in-memory `Queryable`.

use std::time::Duration;

use pharos_storage::chunk::{XorAppender, STALE_NAN};
use pharos_storage::labels::{Labels, Matcher};
use pharos_storage::querier::SelectHints;
use pharos_storage::series::{ChunkMeta, Series};

use super::*;
use crate::parser::{parse_with, ParseOptions};
use crate::queryable::Queryable;

/// One fixture series: label pairs and samples.
type SeriesSpec<'a> = (&'a [(&'a str, &'a str)], Vec<(i64, f64)>);

/// Series built from `(labels, samples)`, encoded as real XOR chunks.
struct Fixture {
    series: Vec<Series>,
}

impl Fixture {
    fn new(data: &[SeriesSpec<'_>]) -> Self {
        let mut series: Vec<Series> = data
            .iter()
            .map(|(l, samples)| {
                let mut app = XorAppender::new();
                for &(t, v) in samples {
                    app.append(t, v);
                }
                let chunk = ChunkMeta {
                    min_time: samples.first().map_or(0, |s| s.0),
                    max_time: samples.last().map_or(0, |s| s.0),
                    chunk: app.to_chunk(),
                };
                Series::new(Labels::from_pairs(l.iter().copied()), vec![chunk])
            })
            .collect();
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Fixture { series }
    }
}

impl Queryable for Fixture {
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        _hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, QueryError> {
        Ok(self
            .series
            .iter()
            .filter(|s| {
                matchers
                    .iter()
                    .all(|m| m.matches(s.labels.get_or_empty(&m.name)))
            })
            .filter(|s| s.chunks.iter().any(|c| c.overlaps(mint, maxt)))
            .cloned()
            .collect())
    }

    fn label_names(&self, _: i64, _: i64, _: &[Matcher]) -> Result<Vec<String>, QueryError> {
        Ok(Vec::new())
    }

    fn label_values(
        &self,
        _: &str,
        _: i64,
        _: i64,
        _: &[Matcher],
    ) -> Result<Vec<String>, QueryError> {
        Ok(Vec::new())
    }
}

fn engine() -> Engine {
    Engine::new(EngineOptions {
        experimental_functions: true,
        ..EngineOptions::default()
    })
}

fn instant(f: &Fixture, q: &str, t: i64) -> Result<QueryResult, QueryError> {
    let e = parse_with(q, &ParseOptions::all()).expect("test query parses");
    engine().instant_query(f, &e, t)
}

fn vector(f: &Fixture, q: &str, t: i64) -> Vec<(String, f64)> {
    match instant(f, q, t).expect("query succeeds").value {
        Value::Vector(v) => {
            let mut out: Vec<(String, f64)> =
                v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
        other => panic!("expected a vector, got {other:?}"),
    }
}

/// `metric{job=…}` every 10s: value = t/10s * step.
fn counters() -> Fixture {
    let a: Vec<(i64, f64)> = (0..=60).map(|i| (i * 10_000, i as f64)).collect();
    let b: Vec<(i64, f64)> = (0..=60).map(|i| (i * 10_000, 2.0 * i as f64)).collect();
    Fixture::new(&[
        (&[("__name__", "metric_total"), ("job", "a")], a),
        (&[("__name__", "metric_total"), ("job", "b")], b),
    ])
}

#[test]
fn instant_selector_lookback_is_left_open_and_honours_staleness() {
    let f = Fixture::new(&[
        (&[("__name__", "x")], vec![(0, 1.0), (60_000, 2.0)]),
        (&[("__name__", "y")], vec![(0, 5.0), (30_000, STALE_NAN)]),
    ]);
    assert_eq!(
        vector(&f, "x", 60_000),
        vec![("{__name__=\"x\"}".into(), 2.0)]
    );
    // The sample at 60s is exactly 5m before 360s: outside the window.
    assert_eq!(
        vector(&f, "x", 359_999),
        vec![("{__name__=\"x\"}".into(), 2.0)]
    );
    assert!(vector(&f, "x", 360_000).is_empty());
    assert_eq!(vector(&f, "y", 10_000).len(), 1);
    assert!(vector(&f, "y", 30_000).is_empty());
}

#[test]
fn rate_extrapolates_and_drops_the_name() {
    let f = counters();
    let got = vector(&f, "rate(metric_total[1m])", 300_000);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "{job=\"a\"}");
    assert!((got[0].1 - 0.1).abs() < 1e-9, "{got:?}");
    assert!((got[1].1 - 0.2).abs() < 1e-9);
}

#[test]
fn sum_uses_compensated_summation() {
    let f = Fixture::new(&[
        (&[("__name__", "v"), ("i", "1")], vec![(0, 1e100)]),
        (&[("__name__", "v"), ("i", "2")], vec![(0, 1.0)]),
        (&[("__name__", "v"), ("i", "3")], vec![(0, -1e100)]),
    ]);
    assert_eq!(vector(&f, "sum(v)", 0), vec![("{}".into(), 1.0)]);
    let avg = vector(&f, "avg(v)", 0);
    assert!((avg[0].1 - 1.0 / 3.0).abs() < 1e-12);
}

#[test]
fn range_query_is_sorted_and_merges_names_dropped_at_the_end() {
    let f = Fixture::new(&[
        (&[("__name__", "a")], vec![(0, 1.0), (600_000, STALE_NAN)]),
        (&[("__name__", "b")], vec![(0, 3.0), (600_000, 4.0)]),
    ]);
    let e = parse_with("-a or -b", &ParseOptions::all()).expect("parses");
    let r = engine()
        .range_query(&f, &e, 0, 600_000, 600_000)
        .expect("runs");
    match r.value {
        Value::Matrix(m) => {
            assert_eq!(m.len(), 1);
            assert!(m[0].labels.is_empty());
            assert_eq!(m[0].points, vec![(0, -1.0), (600_000, -4.0)]);
        }
        other => panic!("expected a matrix, got {other:?}"),
    }
}

#[test]
fn one_to_one_matching_reports_duplicates() {
    let f = Fixture::new(&[
        (&[("__name__", "l"), ("a", "1"), ("b", "x")], vec![(0, 1.0)]),
        (&[("__name__", "l"), ("a", "1"), ("b", "y")], vec![(0, 1.0)]),
        (&[("__name__", "r"), ("a", "1")], vec![(0, 1.0)]),
    ]);
    let err = instant(&f, "l + on(a) r", 0).expect_err("many-to-one without group_left");
    assert_eq!(
        err.to_string(),
        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
    );
    assert_eq!(err.error_type(), "execution");
    let ok = vector(&f, "l + on(a) group_left r", 0);
    assert_eq!(ok.len(), 2);
    let err = instant(&f, "r + on(a) l", 0).expect_err("duplicates on the one side");
    assert!(err.to_string().starts_with(
        "found duplicate series for the match group {a=\"1\"} on the right hand-side"
    ));
}

#[test]
fn subquery_steps_are_aligned_to_absolute_multiples() {
    let f = counters();
    // Steps at 590s, 600s (the first multiple of 10s after 600s-15s is 590s).
    assert_eq!(
        vector(
            &f,
            "count_over_time(metric_total{job=\"a\"}[15s:10s])",
            600_000
        ),
        vec![("{job=\"a\"}".into(), 2.0)]
    );
    assert_eq!(
        vector(
            &f,
            "count_over_time(metric_total{job=\"a\"}[15s:7s])",
            600_000
        ),
        vec![("{job=\"a\"}".into(), 2.0)]
    );
}

#[test]
fn limits_and_stats() {
    let f = counters();
    let e = parse_with("sum(metric_total)", &ParseOptions::all()).expect("parses");
    let small = Engine::new(EngineOptions {
        max_samples: 10,
        ..EngineOptions::default()
    });
    let err = small
        .instant_query(&f, &e, 600_000)
        .expect_err("over the limit");
    assert_eq!(
        err.to_string(),
        "query processing would load too many samples into memory in query execution"
    );
    let zero = Engine::new(EngineOptions {
        timeout: Duration::ZERO,
        ..EngineOptions::default()
    });
    std::thread::sleep(Duration::from_millis(2));
    let err = zero.instant_query(&f, &e, 600_000).expect_err("timed out");
    assert_eq!(err.error_type(), "timeout");
    let canceled = std::sync::atomic::AtomicBool::new(true);
    let err = engine()
        .instant_query_cancellable(&f, &e, 600_000, Some(&canceled))
        .expect_err("canceled");
    assert_eq!(err.error_type(), "canceled");
    let r = engine().instant_query(&f, &e, 600_000).expect("runs");
    assert_eq!(r.stats.series_selected, 2);
    assert!(r.stats.samples_loaded >= 2);
}

/// One gauge sampled every minute for 10 days.
fn ten_days_of_one_gauge() -> Fixture {
    let pts: Vec<(i64, f64)> = (0..14_400).map(|i| (i * 60_000, (i % 97) as f64)).collect();
    Fixture::new(&[(&[("__name__", "g")], pts)])
}

/// 86k inner steps, each summing a 1800-point window, inside one node and
/// without touching storage: every check at a node boundary happens in the
/// first millisecond or so (setup is linear in the steps, the work is not),
/// so only checks inside the loops can stop it.
const HEAVY_SUBQUERY: &str = "max_over_time(sum_over_time(vector(1)[30m:1s])[1d:1s])";

/// Runs `q` at the end of the ten days with the given timeout or cancel
/// flag; returns the error and how long the query took.
fn run_heavy(
    f: &Fixture,
    q: &str,
    timeout: Duration,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> (Result<QueryResult, QueryError>, Duration) {
    let e = parse_with(q, &ParseOptions::all()).expect("parses");
    let eng = Engine::new(EngineOptions {
        timeout,
        ..EngineOptions::default()
    });
    let t0 = std::time::Instant::now();
    let r = eng.instant_query_cancellable(f, &e, 10 * 86_400_000, cancel);
    (r, t0.elapsed())
}

#[test]
fn timeout_stops_a_single_heavy_subquery() {
    let f = ten_days_of_one_gauge();
    let (r, took) = run_heavy(&f, HEAVY_SUBQUERY, Duration::from_millis(10), None);
    let err = r.expect_err("must time out");
    assert_eq!(
        err,
        QueryError::Timeout {
            phase: "expression evaluation"
        }
    );
    assert_eq!(err.to_string(), "query timed out in expression evaluation");
    assert_eq!(err.error_type(), "timeout");
    // Only guards against running to completion; not a performance bound.
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn timeout_stops_heavy_aggregation_and_binary_steps() {
    let f = ten_days_of_one_gauge();
    for q in [
        "max_over_time(sum(vector(1))[10d:1s])",
        "max_over_time(count_values(\"v\", vector(1))[10d:1s])",
        "max_over_time((vector(1) * on() vector(1))[10d:1s])",
        "max_over_time((vector(1) and vector(1))[10d:1s])",
        "max_over_time(rate(g[1h])[10d:1s])",
        "max_over_time(g[10d:1s])",
    ] {
        let (r, took) = run_heavy(&f, q, Duration::from_millis(10), None);
        let err = r.expect_err(q);
        assert_eq!(err.error_type(), "timeout", "{q}");
        assert!(took < Duration::from_secs(2), "{q} took {took:?}");
    }
}

#[test]
fn cancel_stops_a_single_heavy_subquery() {
    let f = ten_days_of_one_gauge();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (r, took) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        run_heavy(&f, HEAVY_SUBQUERY, Duration::from_secs(120), Some(&cancel))
    });
    let err = r.expect_err("must be canceled");
    assert_eq!(
        err.to_string(),
        "query was canceled in expression evaluation"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn duplicate_labelsets_after_name_removal_fail() {
    let f = Fixture::new(&[
        (&[("__name__", "m1"), ("s", "a")], vec![(0, 1.0)]),
        (&[("__name__", "m2"), ("s", "a")], vec![(0, 2.0)]),
    ]);
    let err = instant(&f, "ceil({__name__=~\"m1|m2\"})", 0).expect_err("same labels");
    assert_eq!(
        err.to_string(),
        "vector cannot contain metrics with the same labelset"
    );
    // last_over_time keeps the name, so nothing collides.
    assert_eq!(vector(&f, "last_over_time({s=\"a\"}[1m])", 0).len(), 2);
}

#[test]
fn counter_info_annotation_is_rendered_with_position() {
    let f = Fixture::new(&[(&[("__name__", "gauge")], vec![(0, 1.0), (10_000, 2.0)])]);
    let q = "rate(gauge[1m])";
    let r = instant(&f, q, 10_000).expect("runs");
    let rendered = r.annotations.render_all(q);
    assert_eq!(
        rendered,
        vec!["PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"gauge\" (1:6)"]
    );
}

#[test]
fn experimental_functions_are_gated() {
    let f = counters();
    let e = parse_with("mad_over_time(metric_total[1m])", &ParseOptions::all()).expect("parses");
    let err = Engine::new(EngineOptions::default())
        .instant_query(&f, &e, 0)
        .expect_err("gated");
    assert_eq!(err.error_type(), "bad_data");
}

/// Rough throughput check (`cargo test -p pharos-query --release perf_ -- --ignored --nocapture`):
/// 1,000 series × 6h of 15s samples through `rate` and `sum by`.
#[test]
#[ignore]
fn perf_range_rate_over_many_series() {
    let n_series = 1000;
    let n_samples = 6 * 240;
    type Owned = (Vec<(String, String)>, Vec<(i64, f64)>);
    let owned: Vec<Owned> = (0..n_series)
        .map(|i| {
            let labels = vec![
                ("__name__".to_string(), "http_requests_total".to_string()),
                ("instance".to_string(), format!("i{i}")),
                ("job".to_string(), format!("j{}", i % 10)),
            ];
            let samples = (0..n_samples)
                .map(|k| (k as i64 * 15_000, (k * (i % 7 + 1)) as f64))
                .collect();
            (labels, samples)
        })
        .collect();
    let borrowed: Vec<Vec<(&str, &str)>> = owned
        .iter()
        .map(|(l, _)| l.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect())
        .collect();
    let data: Vec<SeriesSpec<'_>> = borrowed
        .iter()
        .zip(&owned)
        .map(|(l, (_, s))| (l.as_slice(), s.clone()))
        .collect();
    let f = Fixture::new(&data);
    let end = (n_samples as i64 - 1) * 15_000;
    for q in [
        "rate(http_requests_total[5m])",
        "sum by (job) (rate(http_requests_total[5m]))",
        "http_requests_total / on(instance) group_left http_requests_total",
        "sum(http_requests_total)",
        "topk(5, avg_over_time(http_requests_total[5m]))",
    ] {
        let e = parse_with(q, &ParseOptions::all()).expect("parses");
        let t0 = std::time::Instant::now();
        let r = engine().range_query(&f, &e, 0, end, 60_000).expect("runs");
        println!(
            "{q}: {:?}, {} samples loaded, peak {}",
            t0.elapsed(),
            r.stats.samples_loaded,
            r.stats.peak_samples
        );
    }
}

fn gauges() -> Fixture {
    Fixture::new(&[
        (
            &[("__name__", "g"), ("job", "a"), ("le", "1")],
            vec![(0, 1.0), (60_000, 2.0), (120_000, 4.0)],
        ),
        (
            &[("__name__", "g"), ("job", "a"), ("le", "+Inf")],
            vec![(0, 2.0), (60_000, 4.0), (120_000, 8.0)],
        ),
        (
            &[("__name__", "g"), ("job", "b"), ("le", "1")],
            vec![(0, 3.0), (60_000, 3.0), (120_000, f64::NAN)],
        ),
    ])
}

#[test]
fn over_time_functions() {
    let f = gauges();
    let q = |e: &str| vector(&f, e, 120_000);
    assert_eq!(q("sum_over_time(g{job=\"a\",le=\"1\"}[3m])")[0].1, 7.0);
    assert_eq!(q("count_over_time(g{job=\"a\",le=\"1\"}[2m])")[0].1, 2.0);
    assert_eq!(q("max_over_time(g{job=\"b\"}[3m])")[0].1, 3.0);
    assert!(q("avg_over_time(g{job=\"b\"}[3m])")[0].1.is_nan());
    assert_eq!(
        q("quantile_over_time(0.5, g{job=\"a\",le=\"1\"}[3m])")[0].1,
        2.0
    );
    assert_eq!(
        q("ts_of_max_over_time(g{job=\"a\",le=\"1\"}[3m])")[0].1,
        120.0
    );
    // last_over_time keeps the metric name.
    assert!(q("last_over_time(g{job=\"a\",le=\"1\"}[3m])")[0]
        .0
        .contains("__name__"));
    assert_eq!(
        q("absent_over_time(nope{job=\"x\"}[1m])"),
        vec![("{job=\"x\"}".into(), 1.0)]
    );
}

#[test]
fn label_functions_and_count_values() {
    let f = gauges();
    let got = vector(
        &f,
        "label_replace(g{le=\"1\"}, \"dst\", \"x-$1\", \"job\", \"(.*)\")",
        0,
    );
    assert_eq!(
        got[0].0,
        "{__name__=\"g\", dst=\"x-a\", job=\"a\", le=\"1\"}"
    );
    let joined = vector(
        &f,
        "label_join(g{le=\"+Inf\"}, \"j\", \"/\", \"job\", \"le\")",
        0,
    );
    assert!(joined[0].0.contains("j=\"a/+Inf\""));
    let cv = vector(&f, "count_values(\"v\", g)", 60_000);
    assert_eq!(
        cv,
        vec![
            ("{v=\"2\"}".into(), 1.0),
            ("{v=\"3\"}".into(), 1.0),
            ("{v=\"4\"}".into(), 1.0)
        ]
    );
    let err = instant(&f, "label_replace(g, \"le\", \"\", \"\", \"\")", 0).expect_err("dup");
    assert_eq!(
        err.to_string(),
        "vector cannot contain metrics with the same labelset"
    );
}

#[test]
fn topk_is_ordered_and_sort_warns_in_range_queries() {
    let f = gauges();
    match instant(&f, "topk(2, g)", 60_000).expect("runs").value {
        Value::Vector(v) => {
            let vals: Vec<f64> = v.iter().map(|s| s.v).collect();
            assert_eq!(vals, vec![4.0, 3.0]);
        }
        other => panic!("expected a vector, got {other:?}"),
    }
    let e = parse_with("sort(g)", &ParseOptions::all()).expect("parses");
    let r = engine()
        .range_query(&f, &e, 0, 60_000, 60_000)
        .expect("runs");
    assert_eq!(
        r.annotations.render_all("sort(g)"),
        vec!["PromQL warning: sort is ineffective for range queries since results are always ordered by labels (1:1)"]
    );
}

#[test]
fn classic_histogram_quantile_and_le_warning() {
    let f = gauges();
    // job a at 0: 1 of 2 observations at or below 1 → the median is 1.
    let got = vector(&f, "histogram_quantile(0.5, g{job=\"a\"})", 0);
    assert_eq!(got, vec![("{job=\"a\"}".into(), 1.0)]);
    let q = "histogram_quantile(0.5, g{job=\"b\"})";
    let r = instant(&f, q, 0).expect("runs");
    assert!(matches!(r.value, Value::Vector(ref v) if v.len() == 1 && v[0].v.is_nan()));
    let f2 = Fixture::new(&[(&[("__name__", "h"), ("le", "x")], vec![(0, 1.0)])]);
    let q = "histogram_quantile(0.9, h)";
    let r = instant(&f2, q, 0).expect("runs");
    assert_eq!(
        r.annotations.render_all(q),
        vec!["PromQL warning: bucket label \"le\" is missing or has a malformed value of \"x\" for metric name \"h\" (1:25)"]
    );
}

#[test]
fn anchored_and_smoothed_increase() {
    let pts: Vec<(i64, f64)> = (0..=8).map(|i| (i * 15_000, 1.0 + i as f64)).collect();
    let f = Fixture::new(&[(&[("__name__", "c_total")], pts)]);
    assert_eq!(
        vector(&f, "increase(c_total[1m] anchored)", 65_000)[0].1,
        4.0
    );
    let s = vector(&f, "increase(c_total[1m] smoothed)", 65_000)[0].1;
    assert!((s - 4.0).abs() < 1e-9, "{s}");
    let err = instant(&f, "deriv(c_total[1m] smoothed)", 65_000).expect_err("not allowed");
    assert_eq!(
        err.to_string(),
        "smoothed modifier can only be used with: delta, increase, rate - not with deriv"
    );
}

#[test]
fn scalar_and_time_functions() {
    let f = gauges();
    match instant(&f, "scalar(g{job=\"b\"}) + time()", 60_000)
        .expect("runs")
        .value
    {
        Value::Scalar { t, v } => {
            assert_eq!(t, 60_000);
            assert_eq!(v, 63.0);
        }
        other => panic!("expected a scalar, got {other:?}"),
    }
    assert_eq!(
        vector(&f, "year(vector(1136239445))", 0),
        vec![("{}".into(), 2006.0)]
    );
    assert_eq!(
        vector(&f, "timestamp(g{job=\"a\",le=\"1\"})", 90_000),
        vec![("{job=\"a\", le=\"1\"}".into(), 60.0)]
    );
}

mod range_matches_instant {
    //! A range query must agree, step by step, with instant queries at the
    //! same times: this exercises the sliding windows and step cursors
    //! against the single-step path.

    use super::*;
    use proptest::prelude::*;

    const QUERIES: &[&str] = &[
        "m",
        "rate(m[45s])",
        "sum by (k) (m)",
        "avg_over_time(m[1m])",
        "max_over_time(m[30s] offset 20s)",
        "changes(m[2m])",
        "m > on(k) group_left sum by (k) (m)",
        "sum_over_time(m[1m:15s])",
        "topk(1, m)",
        "m unless m{i=\"0\"}",
        "absent_over_time(m{i=\"0\"}[20s])",
        "deriv(m[1m])",
        "predict_linear(m[1m], 30)",
        "quantile_over_time(0.3, m[1m])",
        "m + fill(1) m{i=\"0\"}",
        "count_values(\"v\", m)",
        "m @ 100",
        "rate(m[1m] anchored)",
        "increase(m[1m] smoothed)",
        "m smoothed",
        "label_replace(m, \"x\", \"$1\", \"i\", \"(.*)\")",
        "-m or m{i=\"0\"}",
        "idelta(m[1m]) + resets(m[1m])",
        "timestamp(m)",
        "stddev_over_time(m[1m]) * mad_over_time(m[1m])",
        "double_exponential_smoothing(m[1m], 0.5, 0.5)",
        "sum(m) / ignoring(k) group_right avg without (i) (m)",
        "quantile(0.5, m) > bool 3",
        "bottomk(2, m) and on(i) m{k=\"a\"}",
        "irate(m[1m:7s] offset -10s)",
    ];

    fn samples() -> impl Strategy<Value = Vec<(i64, f64)>> {
        proptest::collection::vec((1i64..40_000, -5i32..20, 0u8..12), 1..40).prop_map(|v| {
            let mut t = 0i64;
            v.into_iter()
                .map(|(dt, x, kind)| {
                    t += dt;
                    let val = if kind == 0 { STALE_NAN } else { f64::from(x) };
                    (t, val)
                })
                .collect()
        })
    }

    fn same(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn agrees(
            s0 in samples(),
            s1 in samples(),
            s2 in samples(),
            qi in 0..QUERIES.len(),
            start in 0i64..200_000,
            step in 1_000i64..60_000,
        ) {
            let f = Fixture::new(&[
                (&[("__name__", "m"), ("i", "0"), ("k", "a")], s0),
                (&[("__name__", "m"), ("i", "1"), ("k", "a")], s1),
                (&[("__name__", "m"), ("i", "2"), ("k", "b")], s2),
            ]);
            let q = QUERIES[qi];
            let e = parse_with(q, &ParseOptions::all()).expect("parses");
            let end = start + 8 * step;
            let Value::Matrix(m) = engine().range_query(&f, &e, start, end, step).expect("range runs").value else {
                panic!("range query returns a matrix");
            };
            for k in 0..=8 {
                let t = start + k * step;
                let inst = match engine().instant_query(&f, &e, t).expect("instant runs").value {
                    Value::Vector(v) => v,
                    other => panic!("expected a vector, got {other:?}"),
                };
                let from_range: Vec<(&Labels, f64)> = m
                    .iter()
                    .filter_map(|s| s.points.iter().find(|p| p.0 == t).map(|p| (&s.labels, p.1)))
                    .collect();
                prop_assert_eq!(from_range.len(), inst.len(), "{} at {}", q, t);
                for s in &inst {
                    let hit = from_range.iter().find(|(l, _)| **l == s.labels);
                    prop_assert!(hit.is_some_and(|h| same(h.1, s.v)), "{} at {}: {:?}", q, t, s);
                }
            }
        }
    }
}

#[test]
fn extreme_inputs_fail_cleanly_or_succeed() {
    let f = counters();
    for q in [
        "metric_total offset 10000y",
        "metric_total @ -9999999999",
        "rate(metric_total[1y] offset -1000y)",
        "count_over_time(metric_total[1y:1ms])",
        "sum_over_time(metric_total[1ms:1ms])",
        "metric_total[1s:1h]",
        "histogram_quantile(NaN, metric_total)",
        "label_replace(metric_total, \"a\", \"$99\", \"job\", \"(.*)\")",
        "topk(1e300, metric_total)",
        "limitk(-1, metric_total)",
        "quantile(2, metric_total)",
        "round(metric_total, 0)",
        "clamp(metric_total, 10, 1)",
        "predict_linear(metric_total[1m], -1e308)",
    ] {
        let e = parse_with(q, &ParseOptions::all()).expect("test query parses");
        for t in [i64::MIN / 4, -1, 0, 600_000, i64::MAX / 4] {
            // Either outcome is fine; what matters is no panic and no hang.
            let _ = engine().instant_query(&f, &e, t);
        }
        let _ = engine().range_query(&f, &e, -60_000, 660_000, 1_000);
    }
}

/// A source that answers partially, as a cluster read missing a shard does.
struct Partial(Fixture);

impl Queryable for Partial {
    fn select(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<Vec<Series>, QueryError> {
        self.0.select(mint, maxt, matchers, hints)
    }

    fn select_with_warnings(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        hints: Option<&SelectHints>,
    ) -> Result<(Vec<Series>, Vec<String>), QueryError> {
        let s = self.0.select(mint, maxt, matchers, hints)?;
        Ok((s, vec!["shard 3 unavailable".to_string()]))
    }

    fn label_names(&self, a: i64, b: i64, m: &[Matcher]) -> Result<Vec<String>, QueryError> {
        self.0.label_names(a, b, m)
    }

    fn label_values(
        &self,
        n: &str,
        a: i64,
        b: i64,
        m: &[Matcher],
    ) -> Result<Vec<String>, QueryError> {
        self.0.label_values(n, a, b, m)
    }
}

#[test]
fn partial_reads_become_warnings() {
    let f = Partial(counters());
    let q = "sum(metric_total)";
    let e = parse_with(q, &ParseOptions::all()).expect("parses");
    let r = engine().instant_query(&f, &e, 0).expect("runs");
    assert_eq!(
        r.annotations.render_all(q),
        vec!["PromQL warning: shard 3 unavailable (1:5)"]
    );
}

#[test]
fn limit_ratio_uses_prometheus_label_hash() {
    use crate::engine::aggregate::prometheus_labels_hash;
    // Expected values computed from the definition (xxHash64, seed 0, of
    // `name 0xff value 0xff …`) with an independent XXH64 implementation.
    let long_name = "x".repeat(40);
    let long_job = "y".repeat(30);
    let cases: [(Vec<(&str, &str)>, u64); 5] = [
        (vec![], 0xef46_db37_51d8_e999),
        (vec![("__name__", "up")], 0x23d4_c2cb_1338_7598),
        (
            vec![
                ("__name__", "http_requests"),
                ("group", "canary"),
                ("instance", "0"),
                ("job", "api-server"),
            ],
            0x7285_9264_fb76_4a72,
        ),
        (vec![("b", "2"), ("a", "1")], 0xcc47_a7b2_3113_4517),
        // Over 32 bytes: exercises xxHash64's striped path.
        (
            vec![("__name__", &long_name), ("job", &long_job)],
            0xccbe_83d2_59bb_dfe7,
        ),
    ];
    for (pairs, want) in &cases {
        let l = Labels::from_pairs(pairs.iter().copied());
        assert_eq!(prometheus_labels_hash(&l), *want, "{l}");
    }
    // Offsets (hash / MaxUint64), from the same computation: `up` 0.140,
    // `up{a="1",b="2"}` 0.306. Ratio r >= 0 keeps offsets below r; r < 0
    // keeps offsets at or above 1 + r.
    let f = Fixture::new(&[
        (&[("__name__", "up")], vec![(0, 1.0)]),
        (
            &[("__name__", "up"), ("a", "1"), ("b", "2")],
            vec![(0, 2.0)],
        ),
    ]);
    let picked = |r: &str| -> Vec<String> {
        vector(&f, &format!("limit_ratio({r}, {{__name__=\"up\"}})"), 0)
            .into_iter()
            .map(|(l, _)| l)
            .collect()
    };
    let up = "{__name__=\"up\"}".to_string();
    let ab = "{__name__=\"up\", a=\"1\", b=\"2\"}".to_string();
    assert_eq!(picked("0.1"), Vec::<String>::new());
    assert_eq!(picked("0.2"), vec![up.clone()]);
    assert_eq!(picked("0.31"), vec![ab.clone(), up]);
    assert_eq!(picked("-0.8"), vec![ab.clone()]);
    assert_eq!(picked("-0.7"), vec![ab]);
    assert_eq!(picked("-0.69"), Vec::<String>::new());
}

#[test]
fn count_values_checks_and_quotes_the_label_as_written() {
    let f = counters();
    let msg = |q: &str| {
        instant(&f, q, 60_000)
            .expect_err("invalid label")
            .to_string()
    };
    // Not UTF-8: the lossy decoded value ("a\u{fffd}z") must not be what is
    // checked or quoted; Go quotes the raw byte as \xc5.
    assert_eq!(
        msg(r#"count_values("a\xc5z", metric_total)"#),
        r#"invalid label name "a\xc5z""#
    );
    assert_eq!(
        msg(r#"count_values((("a\xc5z")), metric_total)"#),
        r#"invalid label name "a\xc5z""#
    );
    assert_eq!(
        msg(r#"count_values("", metric_total)"#),
        r#"invalid label name """#
    );
    let ok = vector(&f, r#"count_values(("v"), metric_total)"#, 60_000);
    assert_eq!(ok.len(), 2, "{ok:?}");
}

#[test]
fn queryable_samples_are_counted_per_step_as_prometheus_does() {
    let f = counters();
    let eng = engine().with_per_step_stats(true);
    let stats = |q: &str, t: i64| {
        let e = parse_with(q, &ParseOptions::all()).expect("parses");
        eng.instant_query(&f, &e, t).expect("runs").stats
    };
    // Two series every 10s. An instant selector: one sample per series.
    let s = stats("metric_total", 600_000);
    assert_eq!(s.total_queryable_samples, 2);
    assert_eq!(s.queryable_samples_per_step, vec![(600_000, 2)]);
    // A range function reads its window: (540s, 600s] holds 6 per series.
    assert_eq!(
        stats("rate(metric_total[1m])", 600_000).total_queryable_samples,
        12
    );
    assert_eq!(
        stats("metric_total[1m]", 600_000).total_queryable_samples,
        12
    );
    // Through a subquery only the window over its result counts (steps at
    // 560s, 580s, 600s), not what its inner selector read.
    assert_eq!(
        stats("max_over_time(metric_total[1m:20s])", 600_000).total_queryable_samples,
        6
    );
    // A whole-query subquery counts what its inner expression read.
    assert_eq!(
        stats("metric_total[1m:20s]", 600_000).total_queryable_samples,
        6
    );
    assert_eq!(
        stats("sum_over_time(metric_total[1m:20s])[1m:20s]", 600_000).total_queryable_samples,
        18
    );

    let e = parse_with(
        "sum(metric_total) + metric_total{job=\"a\"}",
        &ParseOptions::all(),
    )
    .expect("parses");
    let r = eng.range_query(&f, &e, 0, 60_000, 30_000).expect("runs");
    assert_eq!(
        r.stats.queryable_samples_per_step,
        vec![(0, 3), (30_000, 3), (60_000, 3)]
    );
    assert_eq!(r.stats.total_queryable_samples, 9);
    // Off by default; the total is always there.
    let r = engine()
        .range_query(&f, &e, 0, 60_000, 30_000)
        .expect("runs");
    assert!(r.stats.queryable_samples_per_step.is_empty());
    assert_eq!(r.stats.total_queryable_samples, 9);
}
