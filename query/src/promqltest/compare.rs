//! Comparison of query results with a case's expectations (README §5.7):
//! floats by relative 1e-6 with exact zero, NaN equal to NaN but the stale
//! marker equal only to itself, histograms after compaction, exact label
//! sets, positions for ordered cases, and label-sorted matrices.
//!
//! Results arrive in the runner's neutral [`Actual`] form, so this module
//! depends on neither the engine nor storage. Every check returns the first
//! difference as a one-line message.

use pharos_storage::labels::Labels;

use super::histogram::TestHistogram;
use super::script::{is_stale_nan, EvalCommand, SeriesValue};

/// A query result, converted from the engine's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Actual {
    Scalar(f64),
    String(String),
    Vector(Vec<(Labels, SeriesValue)>),
    Matrix(Vec<MatrixSeries>),
}

/// One series of a matrix result; points in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixSeries {
    pub labels: Labels,
    pub floats: Vec<(i64, f64)>,
    pub histograms: Vec<(i64, TestHistogram)>,
}

/// The time grid expected matrix values sit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
}

/// Float equality of README §5.7.1.
pub fn float_eq(a: f64, b: f64) -> bool {
    if is_stale_nan(a) || is_stale_nan(b) {
        return is_stale_nan(a) && is_stale_nan(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == 0.0 || b == 0.0 || sum < MIN_NORMAL {
        return diff < 1e-6 * MIN_NORMAL;
    }
    diff / sum.min(f64::MAX) < 1e-6
}

/// Histogram equality of README §5.7.3; `Err` names the first difference.
pub fn histogram_eq(expected: &TestHistogram, actual: &TestHistogram) -> Result<(), String> {
    let diff = |what: &str| {
        Err(format!(
            "histogram {what} differs: expected {expected}, got {actual}"
        ))
    };
    if expected.schema != actual.schema {
        return diff("schema");
    }
    if !float_eq(expected.count, actual.count) {
        return diff("count");
    }
    if !float_eq(expected.sum, actual.sum) {
        return diff("sum");
    }
    if expected.is_custom() {
        let same = expected.custom_values.len() == actual.custom_values.len()
            && expected
                .custom_values
                .iter()
                .zip(&actual.custom_values)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            return diff("custom_values");
        }
    }
    if expected.zero_threshold != actual.zero_threshold {
        return diff("zero threshold");
    }
    if !float_eq(expected.zero_count, actual.zero_count) {
        return diff("zero count");
    }
    let buckets_eq = |a: &[(i32, f64)], b: &[(i32, f64)]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && float_eq(x.1, y.1))
    };
    if !buckets_eq(&expected.compact_positive(), &actual.compact_positive()) {
        return diff("positive buckets");
    }
    if !buckets_eq(&expected.compact_negative(), &actual.compact_negative()) {
        return diff("negative buckets");
    }
    if expected.hint_written && expected.counter_reset_hint != actual.counter_reset_hint {
        return diff("counter_reset_hint");
    }
    Ok(())
}

/// Renders a float as Go's `%g`-like text, keeping the stale marker visible.
pub fn fmt_float(v: f64) -> String {
    if is_stale_nan(v) {
        "stale".to_string()
    } else {
        format!("{v}")
    }
}

fn fmt_value(v: &SeriesValue) -> String {
    match v {
        SeriesValue::Float(f) => fmt_float(*f),
        SeriesValue::Histogram(h) => h.to_string(),
    }
}

fn value_eq(expected: &SeriesValue, actual: &SeriesValue) -> Result<(), String> {
    match (expected, actual) {
        (SeriesValue::Float(e), SeriesValue::Float(a)) => {
            if float_eq(*e, *a) {
                Ok(())
            } else {
                Err(format!("expected {}, got {}", fmt_float(*e), fmt_float(*a)))
            }
        }
        (SeriesValue::Histogram(e), SeriesValue::Histogram(a)) => histogram_eq(e, a),
        (e, a) => Err(format!(
            "expected {}, got {} (float/histogram mismatch)",
            fmt_value(e),
            fmt_value(a)
        )),
    }
}

/// Checks a matrix is sorted by label set (README §5.7.5); equal neighbours
/// are allowed.
pub fn check_sorted(series: &[MatrixSeries]) -> Result<(), String> {
    for w in series.windows(2) {
        if w[0].labels > w[1].labels {
            return Err(format!(
                "range result not sorted by labels: {} before {}",
                w[0].labels, w[1].labels
            ));
        }
    }
    Ok(())
}

/// Compares a result with the case's expectations. `grid` is the matrix time
/// grid (the range header, or `expect range vector`); it is needed only for
/// matrix results.
pub fn compare(ev: &EvalCommand, actual: &Actual, grid: Option<Grid>) -> Result<(), String> {
    match actual {
        Actual::Scalar(v) => {
            let Some(e) = ev.scalar else {
                return Err(format!(
                    "got scalar {}, but no scalar was expected",
                    fmt_float(*v)
                ));
            };
            if !ev.series.is_empty() {
                return Err("got a scalar, but series lines were expected".into());
            }
            if float_eq(e, *v) {
                Ok(())
            } else {
                Err(format!(
                    "expected scalar {}, got {}",
                    fmt_float(e),
                    fmt_float(*v)
                ))
            }
        }
        Actual::String(s) => {
            let expected = ev.string.as_deref().unwrap_or("");
            if s == expected {
                Ok(())
            } else {
                Err(format!("expected string {expected:?}, got {s:?}"))
            }
        }
        Actual::Vector(samples) => compare_vector(ev, samples),
        Actual::Matrix(series) => {
            let grid =
                grid.ok_or("got a matrix from an instant query without `expect range vector`")?;
            compare_matrix(ev, series, grid)
        }
    }
}

fn compare_vector(ev: &EvalCommand, samples: &[(Labels, SeriesValue)]) -> Result<(), String> {
    if let Some(s) = ev.scalar {
        return Err(format!(
            "expected scalar {}, got a vector of {} samples",
            fmt_float(s),
            samples.len()
        ));
    }
    let mut seen = vec![false; ev.series.len()];
    for (p, (labels, value)) in samples.iter().enumerate() {
        let Some(k) = ev.series.iter().position(|e| e.labels == *labels) else {
            return Err(format!("unexpected series {labels} {}", fmt_value(value)));
        };
        let exp = &ev.series[k];
        if seen[k] {
            return Err(format!("series {labels} returned twice"));
        }
        seen[k] = true;
        if ev.ordered && exp.pos != p + 1 {
            return Err(format!(
                "series {labels} at position {}, expected position {}",
                p + 1,
                exp.pos
            ));
        }
        let Some(Some(want)) = exp.values.first() else {
            return Err(format!(
                "series {labels} has no expected value (line {})",
                exp.line
            ));
        };
        value_eq(want, value).map_err(|e| format!("series {labels}: {e}"))?;
    }
    if let Some(k) = seen.iter().position(|s| !s) {
        let exp = &ev.series[k];
        return Err(format!(
            "expected series {} (line {}) not in result ({} samples returned)",
            exp.labels,
            exp.line,
            samples.len()
        ));
    }
    Ok(())
}

fn compare_matrix(ev: &EvalCommand, series: &[MatrixSeries], grid: Grid) -> Result<(), String> {
    if ev.ordered {
        return Err("an ordered case cannot have a matrix result".into());
    }
    if let Some(s) = ev.scalar {
        return Err(format!("expected scalar {}, got a matrix", fmt_float(s)));
    }
    check_sorted(series)?;
    let mut seen = vec![false; ev.series.len()];
    for s in series {
        let Some(k) = ev.series.iter().position(|e| e.labels == s.labels) else {
            return Err(format!(
                "unexpected series {} with {} float and {} histogram points",
                s.labels,
                s.floats.len(),
                s.histograms.len()
            ));
        };
        if seen[k] {
            return Err(format!("series {} returned twice", s.labels));
        }
        seen[k] = true;
        let exp = &ev.series[k];
        let mut want_f: Vec<(i64, f64)> = Vec::new();
        let mut want_h: Vec<(i64, &TestHistogram)> = Vec::new();
        for (i, v) in exp.values.iter().enumerate() {
            let t = grid.start_ms + i as i64 * grid.step_ms;
            if t > grid.end_ms {
                return Err(format!(
                    "expected series {} (line {}) has more values than the range has steps",
                    exp.labels, exp.line
                ));
            }
            match v {
                Some(SeriesValue::Float(f)) => want_f.push((t, *f)),
                Some(SeriesValue::Histogram(h)) => want_h.push((t, h)),
                None => {}
            }
        }
        if want_f.len() != s.floats.len() {
            return Err(format!(
                "series {}: expected {} float points {}, got {} {}",
                s.labels,
                want_f.len(),
                fmt_points(&want_f),
                s.floats.len(),
                fmt_points(&s.floats)
            ));
        }
        if want_h.len() != s.histograms.len() {
            return Err(format!(
                "series {}: expected {} histogram points, got {}",
                s.labels,
                want_h.len(),
                s.histograms.len()
            ));
        }
        for ((wt, wv), (gt, gv)) in want_f.iter().zip(&s.floats) {
            if wt != gt {
                return Err(format!(
                    "series {}: expected a point at {wt}, got one at {gt}",
                    s.labels
                ));
            }
            if !float_eq(*wv, *gv) {
                return Err(format!(
                    "series {} at {wt}: expected {}, got {}",
                    s.labels,
                    fmt_float(*wv),
                    fmt_float(*gv)
                ));
            }
        }
        for ((wt, wh), (gt, gh)) in want_h.iter().zip(&s.histograms) {
            if wt != gt {
                return Err(format!(
                    "series {}: expected a histogram at {wt}, got one at {gt}",
                    s.labels
                ));
            }
            histogram_eq(wh, gh).map_err(|e| format!("series {} at {wt}: {e}", s.labels))?;
        }
    }
    if let Some(k) = seen.iter().position(|s| !s) {
        let exp = &ev.series[k];
        return Err(format!(
            "expected series {} (line {}) not in result ({} series returned)",
            exp.labels,
            exp.line,
            series.len()
        ));
    }
    Ok(())
}

fn fmt_points(p: &[(i64, f64)]) -> String {
    const SHOWN: usize = 6;
    let mut s: Vec<String> = p
        .iter()
        .take(SHOWN)
        .map(|(t, v)| format!("{}@{t}", fmt_float(*v)))
        .collect();
    if p.len() > SHOWN {
        s.push("…".into());
    }
    format!("[{}]", s.join(" "))
}

/// The range-mode check's view of a matrix (README §5.3 step 3): the points
/// at exactly `t`, as an instant result. A scalar expectation compares the
/// first point found.
pub fn points_at(ev: &EvalCommand, series: &[MatrixSeries], t: i64) -> Actual {
    let mut out = Vec::new();
    for s in series {
        if let Some((_, v)) = s.floats.iter().find(|(pt, _)| *pt == t) {
            out.push((s.labels.clone(), SeriesValue::Float(*v)));
        } else if let Some((_, h)) = s.histograms.iter().find(|(pt, _)| *pt == t) {
            out.push((s.labels.clone(), SeriesValue::Histogram(h.clone())));
        }
    }
    if ev.scalar.is_some() {
        match out.first() {
            Some((_, SeriesValue::Float(v))) => return Actual::Scalar(*v),
            _ => return Actual::Vector(out),
        }
    }
    Actual::Vector(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promqltest::script::{parse_script, stale_nan, Command};

    fn eval(src: &str) -> EvalCommand {
        let s = parse_script(src).unwrap();
        match s.commands.into_iter().next().unwrap() {
            Command::Eval(e) => *e,
            other => panic!("{other:?}"),
        }
    }

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn f(v: f64) -> SeriesValue {
        SeriesValue::Float(v)
    }

    #[test]
    fn float_equality_rules() {
        assert!(float_eq(1.0, 1.0 + 1e-9));
        assert!(!float_eq(1.0, 1.0 + 1e-5));
        assert!(!float_eq(0.0, 1e-17));
        assert!(float_eq(0.0, -0.0));
        assert!(float_eq(f64::NAN, -f64::NAN));
        assert!(!float_eq(stale_nan(), f64::NAN));
        assert!(!float_eq(f64::NAN, stale_nan()));
        assert!(float_eq(stale_nan(), stale_nan()));
        assert!(float_eq(f64::INFINITY, f64::INFINITY));
        assert!(!float_eq(f64::INFINITY, f64::NEG_INFINITY));
        assert!(!float_eq(f64::INFINITY, f64::MAX));
        assert!(float_eq(1e300, 1e300 * (1.0 + 1e-9)));
    }

    #[test]
    fn vector_matching_is_order_insensitive_unless_ordered() {
        let ev = eval("eval instant at 0 x\n  x{a=\"1\"} 1\n  x{a=\"2\"} 2\n");
        let r = vec![
            (l(&[("__name__", "x"), ("a", "2")]), f(2.0)),
            (l(&[("__name__", "x"), ("a", "1")]), f(1.0)),
        ];
        assert_eq!(compare(&ev, &Actual::Vector(r.clone()), None), Ok(()));
        let ev_ord =
            eval("eval instant at 0 x\n  expect ordered\n  x{a=\"1\"} 1\n  x{a=\"2\"} 2\n");
        assert!(compare(&ev_ord, &Actual::Vector(r.clone()), None).is_err());
        // Missing and extra series.
        assert!(compare(&ev, &Actual::Vector(r[..1].to_vec()), None).is_err());
        let mut extra = r.clone();
        extra.push((l(&[("a", "3")]), f(3.0)));
        assert!(compare(&ev, &Actual::Vector(extra), None).is_err());
        // Label sets are exact: no subset matching.
        let sub = vec![
            (l(&[("a", "1")]), f(1.0)),
            (l(&[("__name__", "x"), ("a", "2")]), f(2.0)),
        ];
        assert!(compare(&ev, &Actual::Vector(sub), None).is_err());
        // Wrong value.
        let wrong = vec![(l(&[("__name__", "x"), ("a", "1")]), f(1.1)), r[0].clone()];
        assert!(compare(&ev, &Actual::Vector(wrong), None).is_err());
    }

    #[test]
    fn empty_and_scalar_expectations() {
        let ev = eval("eval instant at 0 x\n");
        assert_eq!(compare(&ev, &Actual::Vector(vec![]), None), Ok(()));
        assert!(compare(&ev, &Actual::Vector(vec![(l(&[]), f(1.0))]), None).is_err());
        let ev = eval("eval instant at 0 1\n  1\n");
        assert_eq!(compare(&ev, &Actual::Scalar(1.0), None), Ok(()));
        assert!(compare(&ev, &Actual::Scalar(2.0), None).is_err());
        assert!(compare(&ev, &Actual::Vector(vec![(l(&[]), f(1.0))]), None).is_err());
        let ev = eval("eval instant at 0 \"a\"\n  expect string \"a\"\n");
        assert_eq!(compare(&ev, &Actual::String("a".into()), None), Ok(()));
        assert!(compare(&ev, &Actual::String("b".into()), None).is_err());
    }

    fn ms(labels: Labels, floats: &[(i64, f64)]) -> MatrixSeries {
        MatrixSeries {
            labels,
            floats: floats.to_vec(),
            histograms: vec![],
        }
    }

    #[test]
    fn matrix_points_and_sorting() {
        let ev = eval("eval range from 0 to 2m step 1m x\n  x{a=\"1\"} 1 _ 3\n  x{a=\"2\"} 1 2\n");
        let grid = Some(Grid {
            start_ms: 0,
            end_ms: 120_000,
            step_ms: 60_000,
        });
        let a1 = l(&[("__name__", "x"), ("a", "1")]);
        let a2 = l(&[("__name__", "x"), ("a", "2")]);
        let good = vec![
            ms(a1.clone(), &[(0, 1.0), (120_000, 3.0)]),
            ms(a2.clone(), &[(0, 1.0), (60_000, 2.0)]),
        ];
        assert_eq!(compare(&ev, &Actual::Matrix(good.clone()), grid), Ok(()));
        let unsorted = vec![good[1].clone(), good[0].clone()];
        assert!(compare(&ev, &Actual::Matrix(unsorted), grid)
            .unwrap_err()
            .contains("sorted"));
        let shifted = vec![ms(a1, &[(0, 1.0), (60_000, 3.0)]), good[1].clone()];
        assert!(compare(&ev, &Actual::Matrix(shifted), grid).is_err());
        let fewer = vec![good[0].clone(), ms(a2, &[(0, 1.0)])];
        assert!(compare(&ev, &Actual::Matrix(fewer), grid).is_err());
        // Too many expected values for the grid.
        let ev = eval("eval range from 0 to 1m step 1m x\n  x 1 2 3\n");
        let one = vec![ms(l(&[("__name__", "x")]), &[(0, 1.0), (60_000, 2.0)])];
        assert!(compare(
            &ev,
            &Actual::Matrix(one),
            Some(Grid {
                start_ms: 0,
                end_ms: 60_000,
                step_ms: 60_000
            })
        )
        .is_err());
    }

    #[test]
    fn histograms_compare_after_compaction_and_hint_only_if_written() {
        let (e, _) =
            TestHistogram::parse_prefix("{{count:3 sum:2 buckets:[0 1 2] offset:-1}}").unwrap();
        let (a, _) = TestHistogram::parse_prefix(
            "{{count:3 sum:2 buckets:[1 2 0 0] counter_reset_hint:gauge}}",
        )
        .unwrap();
        assert_eq!(histogram_eq(&e, &a), Ok(()));
        let (e2, _) = TestHistogram::parse_prefix(
            "{{count:3 sum:2 buckets:[1 2] counter_reset_hint:unknown}}",
        )
        .unwrap();
        assert!(histogram_eq(&e2, &a).is_err());
        let (shifted, _) =
            TestHistogram::parse_prefix("{{count:3 sum:2 buckets:[1 2] offset:1}}").unwrap();
        assert!(histogram_eq(&e, &shifted).is_err());
        let (cv1, _) =
            TestHistogram::parse_prefix("{{schema:-53 count:1 custom_values:[5 10] buckets:[1]}}")
                .unwrap();
        let (cv2, _) =
            TestHistogram::parse_prefix("{{schema:-53 count:1 custom_values:[5] buckets:[1]}}")
                .unwrap();
        assert!(histogram_eq(&cv1, &cv2).is_err());
        let ev = eval("eval instant at 0 h\n  h {{count:3 sum:2 buckets:[1 2]}}\n");
        assert!(compare(
            &ev,
            &Actual::Vector(vec![(l(&[("__name__", "h")]), f(3.0))]),
            None
        )
        .is_err());
        assert_eq!(
            compare(
                &ev,
                &Actual::Vector(vec![(l(&[("__name__", "h")]), SeriesValue::Histogram(a))]),
                None
            ),
            Ok(())
        );
    }

    #[test]
    fn range_mode_view() {
        let ev = eval("eval instant at 1m x\n  x 5\n");
        let m = vec![ms(
            l(&[("__name__", "x")]),
            &[(0, 4.0), (60_000, 5.0), (120_000, 6.0)],
        )];
        assert_eq!(compare(&ev, &points_at(&ev, &m, 60_000), None), Ok(()));
        assert!(compare(&ev, &points_at(&ev, &m, 0), None).is_err());
        let ev = eval("eval instant at 1m 2\n  2\n");
        let m = vec![ms(l(&[]), &[(0, 2.0), (60_000, 2.0)])];
        assert_eq!(compare(&ev, &points_at(&ev, &m, 60_000), None), Ok(()));
    }
}
