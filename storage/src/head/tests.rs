use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::chunk::{collect_samples, is_stale_nan, STALE_NAN};
use crate::error::StorageError;
use crate::labels::{MatchType, Matcher};
use crate::querier::{MergeQuerier, Querier};
use crate::series::Series;

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn samples(s: &Series) -> Vec<(i64, f64)> {
    collect_samples(&mut s.iter()).unwrap()
}

fn small_head(window: i64) -> Head {
    Head::new(HeadOptions {
        out_of_order_window_ms: window,
        stripe_size: 16,
        ..HeadOptions::default()
    })
}

#[test]
fn append_select_and_chunk_cuts() {
    let h = small_head(0);
    let a = l(&[("__name__", "up"), ("job", "a")]);
    let (r, created) = h.get_or_create(&a).unwrap();
    assert!(created);
    assert_eq!(r, SeriesRef(1));
    assert_eq!(h.get_or_create(&a).unwrap(), (r, false));
    // 300 samples every 15s: cuts at 120 and 240 samples.
    for i in 0..300 {
        h.append_ref(r, i * 15_000, i as f64).unwrap();
    }
    h.append(&a, 300 * 15_000, STALE_NAN).unwrap();
    assert_eq!(h.num_series(), 1);
    assert_eq!((h.min_time(), h.max_time()), (0, 300 * 15_000));
    let got = h
        .select(0, i64::MAX, &[Matcher::equal("job", "a")], None)
        .unwrap();
    assert_eq!(got.len(), 1);
    let sizes: Vec<usize> = got[0]
        .chunks
        .iter()
        .map(|c| c.chunk.num_samples())
        .collect();
    assert_eq!(sizes, vec![120, 120, 61]);
    let s = samples(&got[0]);
    assert_eq!(s.len(), 301);
    assert!(is_stale_nan(s[300].1));
    assert_eq!(s[299], (299 * 15_000, 299.0));

    // Only chunks overlapping the range come back (bounds inclusive).
    let got = h.select(119 * 15_000, 119 * 15_000, &[], None).unwrap();
    assert_eq!(got[0].chunks.len(), 1);
    let got = h.select(119 * 15_000, 120 * 15_000, &[], None).unwrap();
    assert_eq!(got[0].chunks.len(), 2);
    assert!(h.select(-10, -1, &[], None).unwrap().is_empty());

    // Chunk-range boundary: a 1h range cuts at each full hour.
    let h = Head::new(HeadOptions {
        chunk_range_ms: 3_600_000,
        stripe_size: 4,
        ..HeadOptions::default()
    });
    let r = h.append(&a, 3_500_000, 1.0).unwrap();
    h.append_ref(r, 3_599_999, 2.0).unwrap();
    h.append_ref(r, 3_600_000, 3.0).unwrap();
    let got = h.select(0, i64::MAX, &[], None).unwrap();
    let ranges: Vec<(i64, i64)> = got[0]
        .chunks
        .iter()
        .map(|c| (c.min_time, c.max_time))
        .collect();
    assert_eq!(ranges, vec![(3_500_000, 3_599_999), (3_600_000, 3_600_000)]);
}

#[test]
fn duplicates_and_errors_name_the_series() {
    let h = small_head(0);
    let a = l(&[("__name__", "up"), ("job", "a")]);
    let r = h.append(&a, 1000, 1.0).unwrap();
    // Same timestamp, same value: accepted, nothing stored.
    h.append_ref(r, 1000, 1.0).unwrap();
    let e = h.append_ref(r, 1000, 2.0).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::DuplicateSample {
                timestamp: 1000,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("duplicate sample for timestamp"), "{msg}");
    assert!(msg.contains(r#"{__name__="up", job="a"}"#), "{msg}");
    // NaNs compare by bits: the same NaN again is a no-op.
    h.append_ref(r, 2000, STALE_NAN).unwrap();
    h.append_ref(r, 2000, STALE_NAN).unwrap();
    assert!(h.append_ref(r, 2000, f64::NAN).is_err());

    let e = h.append_ref(r, 500, 1.0).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::OutOfOrderSample {
                timestamp: 500,
                last: 2000,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("job=\"a\""));
    assert!(matches!(
        h.append_ref(SeriesRef(99), 1, 1.0),
        Err(StorageError::UnknownSeriesRef(99))
    ));
    assert!(h.append(&Labels::empty(), 1, 1.0).is_err());
    let got = h.select(0, 10_000, &[], None).unwrap();
    assert_eq!(samples(&got[0]).len(), 2);
}

#[test]
fn out_of_bounds_without_window() {
    let h = small_head(0);
    let a = l(&[("a", "1")]);
    let b = l(&[("a", "2")]);
    let half = DEFAULT_CHUNK_RANGE_MS / 2;
    h.append(&a, 10 * half, 1.0).unwrap();
    // A new series may start up to half a chunk range behind the head.
    h.append(&b, 9 * half, 1.0).unwrap();
    let e = h.append(&b, 9 * half - 1, 1.0).unwrap_err();
    assert!(matches!(e, StorageError::OutOfOrderSample { .. }), "{e}");
    let c = l(&[("a", "3")]);
    let e = h.append(&c, 9 * half - 1, 1.0).unwrap_err();
    assert!(
        matches!(e, StorageError::TooOldSample { min_valid, .. } if min_valid == 9 * half),
        "{e}"
    );
}

#[test]
fn ooo_window_boundary() {
    const W: i64 = 10_000;
    let h = small_head(W);
    let a = l(&[("__name__", "m"), ("s", "a")]);
    let b = l(&[("__name__", "m"), ("s", "b")]);
    let ra = h.append(&a, 100_000, 1.0).unwrap();
    let rb = h.append(&b, 95_000, 1.0).unwrap();
    assert_eq!(h.max_time(), 100_000);
    // The window is measured from the head's newest sample (100_000), not
    // the series' own.
    h.append_ref(rb, 90_000, 2.0).unwrap(); // exactly head max - W: accepted
    let e = h.append_ref(rb, 89_999, 3.0).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::OutOfOrderSample {
                timestamp: 89_999,
                last: 95_000,
                window_ms: W,
                ..
            }
        ),
        "{e}"
    );
    h.append_ref(ra, 99_999, 4.0).unwrap();
    h.append_ref(ra, 95_000, 5.0).unwrap();
    // OOO duplicates: same value no-op, different value refused.
    h.append_ref(ra, 95_000, 5.0).unwrap();
    assert!(matches!(
        h.append_ref(ra, 95_000, 6.0),
        Err(StorageError::DuplicateSample { .. })
    ));
    // In-order appends keep working after OOO ones.
    h.append_ref(ra, 100_500, 7.0).unwrap();

    let got = h
        .select(0, i64::MAX, &[Matcher::equal("__name__", "m")], None)
        .unwrap();
    assert_eq!(
        samples(&got[0]),
        vec![(95_000, 5.0), (99_999, 4.0), (100_000, 1.0), (100_500, 7.0)]
    );
    assert_eq!(samples(&got[1]), vec![(90_000, 2.0), (95_000, 1.0)]);

    // Many OOO samples spill into chunks of 32; reads stay sorted and deduped.
    for i in 0..100 {
        h.append_ref(rb, 91_000 + (i * 37) % 3000, i as f64).ok();
    }
    let got = h
        .select(0, i64::MAX, &[Matcher::equal("s", "b")], None)
        .unwrap();
    let s = samples(&got[0]);
    assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(got[0].chunks.len() >= 3, "{:?}", got[0].chunks);

    // After truncation, anything older than the truncation point is too old.
    h.truncate_before(95_000);
    let e = h.append_ref(ra, 94_999, 1.0).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::TooOldSample {
                min_valid: 95_000,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn matcher_selection_through_head() {
    let h = small_head(0);
    let sets = [
        l(&[("__name__", "up"), ("job", "a"), ("env", "prod")]),
        l(&[("__name__", "up"), ("job", "b")]),
        l(&[("__name__", "up"), ("job", "c"), ("env", "dev")]),
        l(&[("__name__", "down"), ("job", "a")]),
    ];
    for (i, s) in sets.iter().enumerate() {
        h.append(s, 1000, i as f64).unwrap();
    }
    let m = |k, n: &str, v: &str| Matcher::new(k, n, v).unwrap();
    let jobs = |ms: &[Matcher]| -> Vec<String> {
        h.select(0, 2000, ms, None)
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s.labels.get_or_empty("__name__"),
                    s.labels.get_or_empty("job")
                )
            })
            .collect()
    };
    use MatchType::*;
    assert_eq!(jobs(&[m(Equal, "env", "")]), vec!["down/a", "up/b"]);
    assert_eq!(jobs(&[m(Regex, "env", ".*")]).len(), 4);
    assert_eq!(jobs(&[m(Regex, "env", ".+")]), vec!["up/c", "up/a"]); // dev < prod
    assert_eq!(
        jobs(&[m(Equal, "__name__", "up"), m(NotRegex, "env", "prod|dev")]),
        vec!["up/b"]
    );
    // Prometheus's label order: {__name__="up", env="dev", job="c"} sorts
    // before {__name__="up", job="b"} because "env" < "job".
    assert_eq!(
        jobs(&[m(NotEqual, "env", "prod")]),
        vec!["down/a", "up/c", "up/b"]
    );
    // Sorted by labels: __name__ first, so "down" precedes "up".
    assert_eq!(jobs(&[m(Equal, "job", "a")]), vec!["down/a", "up/a"]);
    assert_eq!(
        h.label_names(0, 2000, &[]).unwrap(),
        vec!["__name__", "env", "job"]
    );
    assert_eq!(
        h.label_names(0, 2000, &[m(Equal, "job", "b")]).unwrap(),
        vec!["__name__", "job"]
    );
    assert_eq!(
        h.label_values("job", 0, 2000, &[]).unwrap(),
        vec!["a", "b", "c"]
    );
    assert_eq!(
        h.label_values(
            "job",
            0,
            2000,
            &[m(Equal, "__name__", "up"), m(Equal, "env", "")]
        )
        .unwrap(),
        vec!["b"]
    );
    assert!(h.label_values("job", 5000, 6000, &[]).unwrap().is_empty());
}

#[test]
fn hash_collisions_are_resolved_by_labels() {
    let mut hs = HashStripe::default();
    let a = Arc::new(MemSeries::new(l(&[("a", "1")]), 1));
    let b = Arc::new(MemSeries::new(l(&[("a", "2")]), 2));
    let c = Arc::new(MemSeries::new(l(&[("a", "3")]), 3));
    // Pretend all three hash to 42.
    hs.insert(42, a.clone());
    hs.insert(42, b.clone());
    hs.insert(42, c.clone());
    assert_eq!(hs.get(42, &b.labels).map(|s| s.sref), Some(2));
    assert_eq!(hs.get(42, &a.labels).map(|s| s.sref), Some(1));
    assert!(hs.get(42, &l(&[("a", "4")])).is_none());
    hs.remove(42, 1);
    assert!(hs.get(42, &a.labels).is_none());
    assert_eq!(hs.get(42, &c.labels).map(|s| s.sref), Some(3));
    assert_eq!(hs.get(42, &b.labels).map(|s| s.sref), Some(2));
    hs.remove(42, 2);
    hs.remove(42, 3);
    assert!(hs.unique.is_empty() && hs.conflicts.is_empty());
}

#[test]
fn wal_replay_refs() {
    let h = small_head(0);
    let a = l(&[("a", "1")]);
    assert_eq!(
        h.get_or_create_with_ref(SeriesRef(7), &a).unwrap(),
        (SeriesRef(7), true)
    );
    // Same labels logged again under another ref: map to the existing one.
    assert_eq!(
        h.get_or_create_with_ref(SeriesRef(9), &a).unwrap(),
        (SeriesRef(7), false)
    );
    // A ref already used by other labels is corruption.
    assert!(h
        .get_or_create_with_ref(SeriesRef(7), &l(&[("a", "2")]))
        .is_err());
    assert!(h
        .get_or_create_with_ref(SeriesRef(0), &l(&[("a", "2")]))
        .is_err());
    // New refs continue above the highest replayed one.
    assert_eq!(
        h.get_or_create(&l(&[("a", "3")])).unwrap(),
        (SeriesRef(10), true)
    );
    assert_eq!(h.last_series_ref(), SeriesRef(10));
    assert_eq!(h.labels(SeriesRef(7)), Some(a.clone()));
    assert_eq!(h.get_ref(&a), Some(SeriesRef(7)));
}

#[test]
fn truncate_drops_chunks_and_empty_series() {
    let h = Head::new(HeadOptions {
        samples_per_chunk: 10,
        stripe_size: 8,
        ..HeadOptions::default()
    });
    let old = l(&[("__name__", "m"), ("s", "old")]);
    let live = l(&[("__name__", "m"), ("s", "live")]);
    let ro = h.append(&old, 0, 0.0).unwrap();
    h.append_ref(ro, 1000, 1.0).unwrap();
    let rl = h.append(&live, 0, 0.0).unwrap();
    for i in 1..40 {
        h.append_ref(rl, i * 1000, i as f64).unwrap();
    }
    let dropped = h.truncate_before(25_000);
    assert_eq!(dropped, vec![ro]);
    assert_eq!(h.num_series(), 1);
    assert_eq!(h.min_time(), 20_000); // the chunk [20s, 29s] survives whole
    assert!(h.labels(ro).is_none());
    assert!(matches!(
        h.append_ref(ro, 50_000, 1.0),
        Err(StorageError::UnknownSeriesRef(_))
    ));
    assert_eq!(
        h.label_values("s", i64::MIN, i64::MAX, &[]).unwrap(),
        vec!["live"]
    );
    let got = h.select(i64::MIN, i64::MAX, &[], None).unwrap();
    assert_eq!(samples(&got[0]).first(), Some(&(20_000, 20.0)));
    // The old labels come back as a new series with a new ref.
    let (r2, created) = h.get_or_create(&old).unwrap();
    assert!(created && r2 != ro);
}

#[test]
fn series_for_range_gives_clean_trimmed_chunks() {
    let h = Head::new(HeadOptions {
        samples_per_chunk: 10,
        out_of_order_window_ms: 1_000_000,
        stripe_size: 8,
        ..HeadOptions::default()
    });
    let a = l(&[("s", "a")]);
    let b = l(&[("s", "b")]);
    let ra = h.append(&a, 0, 0.0).unwrap();
    for i in 1..30 {
        h.append_ref(ra, i * 1000, i as f64).unwrap();
    }
    let rb = h.append(&b, 10_000, 0.0).unwrap();
    h.append_ref(rb, 20_000, 2.0).unwrap();
    h.append_ref(rb, 15_000, 1.5).unwrap(); // out of order
    let got = h.series_for_range(0, 19_999);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].labels, a);
    let ca: Vec<(i64, i64)> = got[0]
        .chunks
        .iter()
        .map(|c| (c.min_time, c.max_time))
        .collect();
    assert_eq!(ca, vec![(0, 9_000), (10_000, 19_000)]);
    assert!(!got[1].has_overlapping_chunks());
    assert_eq!(samples(&got[1]), vec![(10_000, 0.0), (15_000, 1.5)]);
    assert!(h.series_for_range(100_000, 200_000).is_empty());
}

#[test]
fn merge_querier_over_heads_dedups() {
    let h1 = Arc::new(small_head(0));
    let h2 = Arc::new(small_head(0));
    let a = l(&[("__name__", "up"), ("job", "a")]);
    let b = l(&[("__name__", "up"), ("job", "b")]);
    for t in [0, 10, 20] {
        h1.append(&a, t, t as f64).unwrap();
    }
    for t in [10, 20, 30] {
        h2.append(&a, t, t as f64).unwrap();
    }
    h2.append(&b, 5, 5.0).unwrap();
    let q = MergeQuerier::new(vec![h1, h2]);
    let got = q
        .select(0, 100, &[Matcher::equal("__name__", "up")], None)
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        samples(&got[0]),
        vec![(0, 0.0), (10, 10.0), (20, 20.0), (30, 30.0)]
    );
    assert_eq!(samples(&got[1]), vec![(5, 5.0)]);
    assert_eq!(q.label_values("job", 0, 100, &[]).unwrap(), vec!["a", "b"]);
}

#[test]
fn concurrent_appends_with_concurrent_reader() {
    const THREADS: usize = 4;
    const SERIES: usize = 50;
    const SAMPLES: i64 = 600;
    let h = Arc::new(Head::new(HeadOptions {
        stripe_size: 64,
        ..HeadOptions::default()
    }));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let h = h.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) || reads == 0 {
                for s in h
                    .select(i64::MIN, i64::MAX, &[Matcher::equal("__name__", "c")], None)
                    .unwrap()
                {
                    // Every snapshot is a gap-free prefix: 0, 1000, 2000, ...
                    let got = collect_samples(&mut s.iter()).unwrap();
                    for (i, &(t, v)) in got.iter().enumerate() {
                        assert_eq!(t, i as i64 * 1000, "{}", s.labels);
                        assert_eq!(v, i as f64);
                    }
                }
                reads += 1;
            }
            reads
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|w| {
            let h = h.clone();
            std::thread::spawn(move || {
                let refs: Vec<SeriesRef> = (0..SERIES)
                    .map(|i| {
                        let lbls = l(&[
                            ("__name__", "c"),
                            ("w", &w.to_string()),
                            ("i", &i.to_string()),
                        ]);
                        h.append(&lbls, 0, 0.0).unwrap()
                    })
                    .collect();
                for t in 1..SAMPLES {
                    for r in &refs {
                        h.append_ref(*r, t * 1000, t as f64).unwrap();
                    }
                }
                // All threads also race to create one shared series.
                h.get_or_create(&l(&[("__name__", "shared")])).unwrap().0
            })
        })
        .collect();
    let shared: Vec<SeriesRef> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    done.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(shared.windows(2).all(|w| w[0] == w[1]), "{shared:?}");
    assert_eq!(h.num_series(), THREADS * SERIES + 1);
    let all = h
        .select(i64::MIN, i64::MAX, &[Matcher::equal("__name__", "c")], None)
        .unwrap();
    assert_eq!(all.len(), THREADS * SERIES);
    for s in &all {
        assert_eq!(
            collect_samples(&mut s.iter()).unwrap().len(),
            SAMPLES as usize
        );
    }
    assert!(all.windows(2).all(|w| w[0].labels < w[1].labels));
    eprintln!("concurrent test: reader completed {reads} full selects");
}

mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Append { s: usize, t: i64, v: u8 },
        Truncate { t: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            20 => (0usize..3, 0i64..3000, 0u8..3).prop_map(|(s, t, v)| Op::Append { s, t, v }),
            // Mostly increasing time, as real ingestion.
            20 => (0usize..3, 0i64..40, 0u8..3).prop_map(|(s, t, v)| Op::Append { s, t: -t, v }),
            1 => (0i64..3000).prop_map(|t| Op::Truncate { t }),
        ]
    }

    #[derive(Default, Clone)]
    struct ModelSeries {
        last: Option<(i64, f64)>,
        samples: BTreeMap<i64, f64>,
    }

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Ok,
        TooOld,
        OutOfOrder,
        Duplicate,
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// The head against a direct transcription of its append rules.
        #[test]
        fn head_matches_model(window in prop_oneof![Just(0i64), 1i64..800], ops in proptest::collection::vec(op(), 1..150)) {
            const RANGE: i64 = 1000;
            let h = Head::new(HeadOptions {
                chunk_range_ms: RANGE,
                samples_per_chunk: 5,
                ooo_samples_per_chunk: 3,
                out_of_order_window_ms: window,
                stripe_size: 2,
            });
            let names = ["a", "b", "c"];
            let lbls: Vec<Labels> = names.iter().map(|n| l(&[("s", n)])).collect();
            let mut m: Vec<ModelSeries> = vec![ModelSeries::default(); 3];
            let mut head_max = i64::MIN;
            let mut min_valid = i64::MIN;
            let mut now = 0i64;
            for op in ops {
                match op {
                    Op::Append { s, t, v } => {
                        // Negative t in the strategy means "a little after the
                        // newest sample so far".
                        let t = if t <= 0 { now - t } else { t };
                        now = now.max(t);
                        let v = f64::from(v);
                        let ms = &mut m[s];
                        let is_last = ms.last.is_some_and(|(lt, _)| lt == t);
                        if ms.samples.contains_key(&t) && !is_last {
                            continue; // out-of-order duplicates: covered elsewhere
                        }
                        let want = if t < min_valid {
                            Outcome::TooOld
                        } else {
                            match ms.last {
                                Some((lt, lv)) if t == lt => {
                                    if lv.to_bits() == v.to_bits() { Outcome::Ok } else { Outcome::Duplicate }
                                }
                                Some((lt, _)) if t < lt => {
                                    if window > 0 && t >= head_max.saturating_sub(window) {
                                        ms.samples.insert(t, v);
                                        head_max = head_max.max(t);
                                        Outcome::Ok
                                    } else {
                                        Outcome::OutOfOrder
                                    }
                                }
                                _ => {
                                    if window == 0 && t < head_max.saturating_sub(RANGE / 2) {
                                        Outcome::TooOld
                                    } else {
                                        ms.samples.insert(t, v);
                                        ms.last = Some((t, v));
                                        head_max = head_max.max(t);
                                        Outcome::Ok
                                    }
                                }
                            }
                        };
                        let got = match h.append(&lbls[s], t, v) {
                            Ok(_) => Outcome::Ok,
                            Err(StorageError::TooOldSample { .. }) => Outcome::TooOld,
                            Err(StorageError::OutOfOrderSample { .. }) => Outcome::OutOfOrder,
                            Err(StorageError::DuplicateSample { .. }) => Outcome::Duplicate,
                            Err(e) => panic!("unexpected {e}"),
                        };
                        prop_assert_eq!(got, want, "append {}@{} (window {})", names[s], t, window);
                    }
                    Op::Truncate { t } => {
                        let dropped = h.truncate_before(t);
                        min_valid = min_valid.max(t);
                        let mut want_dropped = vec![];
                        for (i, ms) in m.iter_mut().enumerate() {
                            let exists = !ms.samples.is_empty();
                            if exists && ms.samples.range(t..).next().is_none() {
                                want_dropped.push(lbls[i].clone());
                                *ms = ModelSeries::default();
                            }
                        }
                        for r in &dropped {
                            prop_assert!(h.labels(*r).is_none());
                        }
                        prop_assert_eq!(dropped.len(), want_dropped.len());
                    }
                }
            }
            // Compare what a query returns, from the truncation point on.
            let got = h.select(i64::MIN, i64::MAX, &[], None).unwrap();
            for (i, ms) in m.iter().enumerate() {
                let want: Vec<(i64, f64)> = ms.samples.range(min_valid..).map(|(&t, &v)| (t, v)).collect();
                let series = got.iter().find(|s| s.labels == lbls[i]);
                let have = match series {
                    Some(s) => collect_samples(&mut s.iter_range(min_valid, i64::MAX)).unwrap(),
                    None => vec![],
                };
                prop_assert_eq!(have, want, "series {}", names[i]);
                if let Some(s) = series {
                    // And the block writer's view is clean and identical.
                    let b = h.series_for_range(min_valid, i64::MAX);
                    let bs = b.iter().find(|x| x.labels == s.labels);
                    if let Some(bs) = bs {
                        prop_assert!(!bs.has_overlapping_chunks());
                        prop_assert!(bs.chunks.iter().all(|c| c.chunk.num_samples() <= 5));
                    }
                }
            }
            prop_assert_eq!(h.num_series(), m.iter().filter(|s| !s.samples.is_empty()).count());
        }
    }
}

#[test]
fn deletes_hide_samples_but_never_later_appends() {
    let h = small_head(0);
    let a = l(&[("__name__", "m"), ("i", "a")]);
    let b = l(&[("__name__", "m"), ("i", "b")]);
    for t in 0..300 {
        h.append(&a, t * 10, t as f64).unwrap();
        h.append(&b, t * 10, t as f64).unwrap();
    }
    let ma = Matcher::new(MatchType::Equal, "i", "a").unwrap();
    // Clamped to the data held: [1000, 2990], not [1000, 10000].
    let d = h.delete(std::slice::from_ref(&ma), 1000, 10_000);
    assert_eq!(d, vec![(h.get_ref(&a).unwrap(), 1000, 2990)]);
    // Nothing matching in range: nothing recorded.
    assert!(h
        .delete(std::slice::from_ref(&ma), 50_000, 60_000)
        .is_empty());
    assert_eq!(h.delete_ref(SeriesRef(999), 0, 10), None);
    for t in 300..310 {
        h.append(&a, t * 10, t as f64).unwrap();
    }
    let m = Matcher::new(MatchType::Equal, "__name__", "m").unwrap();
    let got = h.select(i64::MIN, i64::MAX, &[m], None).unwrap();
    let sa = samples(&got[0]);
    assert_eq!(sa.len(), 100 + 10);
    assert_eq!(sa[99].0, 990);
    assert_eq!(sa[100].0, 3000);
    assert_eq!(samples(&got[1]).len(), 300);
    // Block reads apply the deletion too.
    let cut = h.series_for_range(0, 2999);
    let ca = cut.iter().find(|s| s.labels == a).unwrap();
    assert_eq!(samples(ca).len(), 100);
    // A range wholly deleted yields no sample (chunks entirely inside it
    // are not even returned, as from a block).
    for s in h
        .select(1500, 2500, std::slice::from_ref(&ma), None)
        .unwrap()
    {
        assert!(collect_samples(&mut s.iter_range(1500, 2500))
            .unwrap()
            .is_empty());
        assert!(s
            .chunks
            .iter()
            .all(|c| c.max_time > 2990 || c.min_time < 1000));
    }
    // Truncation forgets intervals it passed.
    h.truncate_before(2995);
    let got = h.select(i64::MIN, i64::MAX, &[ma], None).unwrap();
    assert_eq!(samples(&got[0]).first().map(|s| s.0), Some(3000));
}

/// Keys of one stripe share their low bits; their hashes must not, or
/// hashbrown starts every lookup of the stripe at the same bucket.
#[test]
fn u64_hasher_spreads_the_keys_of_one_stripe() {
    use std::collections::HashSet;
    use std::hash::BuildHasher;
    let b = BuildHasherDefault::<U64Hasher>::default();
    let low: HashSet<u64> = (0..256u64)
        .map(|k| b.hash_one(k * 4096 + 7) & 0xff)
        .collect();
    assert!(low.len() > 128, "{} distinct low bytes", low.len());
    let tags: HashSet<u64> = (0..256u64)
        .map(|k| b.hash_one(k * 4096 + 7) >> 57)
        .collect();
    assert!(tags.len() > 64, "{} distinct tags", tags.len());
}
