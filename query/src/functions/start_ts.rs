//! Start-timestamp (ST) semantics of the counter functions and
//! `start_timestamp()`.
//!
//! A sample's start timestamp is when its cumulative counter started
//! counting, or for a delta sample the start of the interval it covers; 0 is
//! unknown. Only raw selector data carries them (storage keeps them in the
//! head; subquery results and expressions have none), and with none the
//! functions behave exactly as without this module.
//!
//! Rules, for consecutive samples `p`, `c` of one window:
//! * **Reset.** `c` restarts the counter when its start timestamp is known
//!   and valid (`0 < st_c < t_c`, strictly: `st == t` is an empty interval)
//!   and either lies after `t_p`, or equals `t_p` while `p`'s own start
//!   timestamp is known and before `t_p` (a delta sample following another
//!   one). `st_c == t_p` after an unknown or invalid `st_p` is a cumulative
//!   counter of unknown start, not a reset. A reset counts like a value drop
//!   (the counter is taken to have restarted from 0) and at most once per
//!   pair.
//! * **Zero at the start.** When the first sample's start timestamp lies
//!   strictly inside the window and strictly before the sample, `rate` and
//!   `increase` assume a zero-valued sample there instead of extrapolating
//!   towards the window start: the increase includes the first value, the
//!   covered span starts at the start timestamp, and only the end is
//!   extrapolated (using the average spacing of the real samples, and not at
//!   all for a single sample).
//! * **Overlap.** A start timestamp earlier than the previous sample's time
//!   that differs from the previous start timestamp contradicts it
//!   (`st_c != 0 && st_c < t_p && st_c != st_p`). Such a window's start
//!   timestamps are ignored and the query warns once per metric.

use pharos_storage::labels::{go_quote, Labels};

use crate::engine::eval::{unparen, Evaluator, RSeries, RangeData, Val, Windows};
use crate::engine::QueryError;
use crate::parser::ast::{Call, Expr};

/// `start_timestamp(v)`: the start timestamp (seconds; 0 when unknown) of
/// each sample an instant selector picks. Any other expression has lost its
/// samples' start timestamps, so the result is empty (the argument is still
/// evaluated, so its errors surface).
pub(crate) fn eval(ev: &mut Evaluator<'_>, c: &Call) -> Result<Option<Val>, QueryError> {
    if c.func != "start_timestamp" {
        return Ok(None);
    }
    let Some(arg) = c.args.first() else {
        return Err(QueryError::bad(
            "wrong number of arguments for function \"start_timestamp\"",
        ));
    };
    let out = match unparen(arg) {
        Expr::VectorSelector(vs) if !vs.smoothed => ev.eval_start_timestamp(vs)?,
        other => {
            super::vector_arg(ev, other, "start_timestamp")?;
            Vec::new()
        }
    };
    Ok(Some(Val::Vector(out)))
}

/// Whether `c` restarts the counter (see the module docs).
#[inline]
pub(crate) fn is_st_reset(t_p: i64, st_p: i64, t_c: i64, st_c: i64) -> bool {
    st_c != 0 && st_c < t_c && (st_c > t_p || (st_c == t_p && st_p != 0 && st_p < t_p))
}

/// Whether a window's start timestamps contradict each other.
fn overlaps(w: &[(i64, f64)], sts: &[i64]) -> bool {
    (1..w.len()).any(|i| sts[i] != 0 && sts[i] < w[i - 1].0 && sts[i] != sts[i - 1])
}

/// Warning text for an overlap in a series named `metric`.
pub(crate) fn overlap_warning(metric: &str) -> String {
    format!(
        "sample has start time that overlaps with previous sample timestamp for metric {}",
        go_quote(metric)
    )
}

/// Counter increase over a window: last minus first, plus the value before
/// every reset (a value drop or, with start timestamps, a start-timestamp
/// reset).
pub(crate) fn counter_increase(w: &[(i64, f64)], sts: Option<&[i64]>) -> f64 {
    let (Some(first), Some(last)) = (w.first(), w.last()) else {
        return 0.0;
    };
    let mut result = last.1 - first.1;
    for i in 1..w.len() {
        if is_reset(w, sts, i) {
            result += w[i - 1].1;
        }
    }
    result
}

/// Whether sample `i` (> 0) of the window follows a counter reset.
#[inline]
pub(crate) fn is_reset(w: &[(i64, f64)], sts: Option<&[i64]>, i: usize) -> bool {
    w[i].1 < w[i - 1].1 || sts.is_some_and(|s| is_st_reset(w[i - 1].0, s[i - 1], w[i].0, s[i]))
}

/// `rate`/`increase` of a window whose first sample's start timestamp lies
/// inside it (the "zero at the start" rule); `None` when the rule does not
/// apply and the caller extrapolates as usual.
pub(crate) fn zero_start_rate(
    w: &[(i64, f64)],
    sts: &[i64],
    range_start: i64,
    range_end: i64,
    range: i64,
    is_rate: bool,
) -> Option<f64> {
    let (first, last, st0) = (*w.first()?, *w.last()?, *sts.first()?);
    if !(st0 != 0 && range_start < st0 && st0 < first.0) {
        return None;
    }
    let result = counter_increase(w, Some(sts)) + first.1;
    let sampled = (last.0 - st0) as f64 / 1000.0;
    let mut to_end = 0.0;
    if w.len() >= 2 {
        to_end = (range_end - last.0) as f64 / 1000.0;
        let avg = (last.0 - first.0) as f64 / 1000.0 / (w.len() - 1) as f64;
        if to_end >= avg * 1.1 {
            to_end = avg / 2.0;
        }
    }
    let mut factor = (sampled + to_end) / sampled;
    if is_rate {
        factor /= range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Like `functions::map_windows` for counter functions that use start
/// timestamps: `f` gets each window with its start timestamps (`None` when
/// unknown, or ignored because they overlap). Overlaps are reported as
/// warnings at the range argument.
pub(crate) fn map_windows_st(
    ev: &mut Evaluator<'_>,
    rd: &RangeData,
    mut f: impl FnMut(&[(i64, f64)], Option<&[i64]>, i64) -> Option<f64>,
) -> Vec<RSeries> {
    let mut out = Vec::new();
    let mut overlapping: Vec<String> = Vec::new();
    rd.for_each_st(ev, |labels: &Labels, _, pts, sts| {
        let mut res = Vec::new();
        for (step, w, lo) in Windows::checked(ev, pts, &rd.refs, rd.range) {
            let mut wst = sts.map(|s| &s[lo..lo + w.len()]);
            if let Some(s) = wst {
                if overlaps(w, s) {
                    let name = labels.metric_name().unwrap_or_default().to_string();
                    if !overlapping.contains(&name) {
                        overlapping.push(name);
                    }
                    wst = None;
                }
            }
            if let Some(v) = f(w, wst, rd.refs[step]) {
                res.push((ev.ts(step), v));
            }
        }
        if !res.is_empty() {
            out.push(RSeries {
                labels: labels.clone(),
                drop_name: true,
                points: res,
            });
        }
    });
    for name in overlapping {
        ev.annos.warn(overlap_warning(&name), rd.pos);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AnnotationKind, Engine, EngineOptions, Value};
    use crate::parser::{parse_with, ParseOptions};
    use pharos_storage::head::Head;

    /// `(labels, t → (v, st))` appended to a fresh head, samples 1m apart.
    fn head(series: &[(&str, &[(f64, i64)])]) -> Head {
        let h = Head::default();
        for (ty, samples) in series {
            let l = Labels::from_pairs([("__name__", "c_total"), ("type", ty)]);
            for (i, &(v, st_off)) in samples.iter().enumerate() {
                let t = (i as i64 + 1) * 60_000;
                let st = if st_off == i64::MIN { 0 } else { t + st_off };
                h.append_with_st(&l, t, v, st).unwrap();
            }
        }
        h
    }

    fn query(h: &Head, q: &str, t: i64) -> (Vec<(String, f64)>, Vec<String>) {
        let engine = Engine::new(EngineOptions {
            experimental_functions: true,
            ..EngineOptions::default()
        });
        let e = parse_with(q, &ParseOptions::all()).unwrap();
        let r = engine.instant_query(h, &e, t).unwrap();
        let Value::Vector(v) = r.value else {
            panic!("not a vector")
        };
        let mut out: Vec<(String, f64)> = v
            .into_iter()
            .map(|s| (s.labels.get_or_empty("type").to_string(), s.v))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let warns = r
            .annotations
            .iter()
            .filter(|a| a.kind == AnnotationKind::Warning)
            .map(|a| a.render(q))
            .collect();
        (out, warns)
    }

    const NONE: i64 = i64::MIN;

    #[test]
    fn engine_uses_start_timestamps_of_stored_samples() {
        // Delta samples (ST = previous T): every sample restarts the
        // counter, so increase sums the deltas, where the raw values alone
        // would say 0. Without start timestamps the same values give 0.
        let h = head(&[
            ("delta", &[(60.0, -60_000); 6]),
            ("plain", &[(60.0, NONE); 6]),
        ]);
        let (v, warns) = query(&h, "increase(c_total[3m])", 6 * 60_000);
        assert_eq!(v, vec![("delta".into(), 180.0), ("plain".into(), 0.0)]);
        assert!(warns.is_empty(), "{warns:?}");
        let (v, _) = query(&h, "irate(c_total[3m])", 6 * 60_000);
        assert_eq!(v, vec![("delta".into(), 1.0), ("plain".into(), 0.0)]);
        let (v, _) = query(&h, "resets(c_total[3m])", 6 * 60_000);
        // Pairs inside the window only: the first sample is not compared.
        assert_eq!(v, vec![("delta".into(), 2.0), ("plain".into(), 0.0)]);
        // A subquery's output has no start timestamps.
        let (v, _) = query(&h, "increase(c_total[3m:1m])", 6 * 60_000);
        assert_eq!(v[0], ("delta".into(), 0.0));
        // start_timestamp() of the selected sample, in seconds.
        let (v, _) = query(&h, "start_timestamp(c_total)", 6 * 60_000);
        assert_eq!(v, vec![("delta".into(), 300.0), ("plain".into(), 0.0)]);
        let (v, _) = query(&h, "start_timestamp(c_total * 1)", 6 * 60_000);
        assert!(v.is_empty());
    }

    #[test]
    fn overlapping_start_timestamps_warn_and_are_ignored() {
        let h = head(&[(
            "overlap",
            &[(60.0, -120_000), (120.0, -120_000), (180.0, -120_000)],
        )]);
        let q = "rate(c_total[3m])";
        let (v, warns) = query(&h, q, 4 * 60_000);
        // As if there were no start timestamps: 1/s.
        assert_eq!(v, vec![("overlap".into(), 1.0)]);
        assert_eq!(
            warns,
            vec![format!(
                "PromQL warning: {} (1:6)",
                overlap_warning("c_total")
            )]
        );
    }

    #[test]
    fn reset_rules() {
        // Cumulative counter with a constant start: never a reset.
        assert!(!is_st_reset(120, 90, 180, 90));
        // Restarted after the previous sample.
        assert!(is_st_reset(120, 90, 180, 150));
        // Delta samples: ST = previous T after a known, valid previous ST.
        assert!(is_st_reset(120, 60, 180, 120));
        // Unknown previous start: a cumulative counter of unknown start.
        assert!(!is_st_reset(120, 0, 180, 120));
        // Previous ST = its T (empty interval) or after it (invalid).
        assert!(!is_st_reset(120, 120, 180, 120));
        assert!(!is_st_reset(120, 180, 180, 120));
        // Unknown, empty or invalid current ST: value rules only.
        assert!(!is_st_reset(120, 60, 180, 0));
        assert!(!is_st_reset(120, 60, 180, 180));
        assert!(!is_st_reset(120, 60, 180, 181));
    }

    #[test]
    fn increase_counts_st_resets_once() {
        let w = [(120, 5.0), (180, 5.0), (240, 2.0)];
        let sts = [60, 179, 0];
        // ST reset at 180 (+5), value drop at 240 (+5).
        assert_eq!(counter_increase(&w, Some(&sts)), 7.0);
        assert_eq!(counter_increase(&w, None), 2.0);
        // A pair that is both a drop and an ST reset counts once.
        assert_eq!(
            counter_increase(&[(0, 5.0), (60, 1.0)], Some(&[0, 30])),
            1.0
        );
    }

    #[test]
    fn zero_start_replaces_left_extrapolation() {
        let w = [(120_000, 5.0), (180_000, 5.0), (240_000, 2.0)];
        let sts = [60_000, 179_000, 0];
        // 7 + 5 from zero at 60s, span 180s, extrapolated 60s to the end.
        let v = zero_start_rate(&w, &sts, 0, 300_000, 300_000, false).unwrap();
        assert!((v - 16.0).abs() < 1e-9, "{v}");
        // Start timestamp at the (open) window start, or at the sample: no.
        assert_eq!(
            zero_start_rate(&w, &sts, 60_000, 300_000, 240_000, false),
            None
        );
        let at_t = [120_000, 179_000, 0];
        assert_eq!(zero_start_rate(&w, &at_t, 0, 300_000, 300_000, false), None);
        // A single sample: no extrapolation at all.
        let one = zero_start_rate(
            &[(240_000, 3.0)],
            &[90_000],
            60_000,
            360_000,
            300_000,
            false,
        );
        assert_eq!(one, Some(3.0));
    }

    #[test]
    fn overlap_detection() {
        let w = [(120, 60.0), (180, 120.0), (240, 180.0)];
        assert!(overlaps(&w, &[0, 60, 120]));
        assert!(!overlaps(&w, &[60, 120, 180]));
        assert!(!overlaps(&w, &[90, 90, 90]));
        assert_eq!(
            overlap_warning("counter_total"),
            "sample has start time that overlaps with previous sample timestamp for metric \"counter_total\""
        );
    }
}
