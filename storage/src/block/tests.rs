use super::*;
use crate::chunk::{collect_samples, XorAppender, STALE_NAN};
use crate::labels::{Labels, MatchType, Matcher};
use crate::querier::Querier;
use crate::series::{ChunkMeta, Series};

pub(crate) fn series_of(
    labels: &[(&str, &str)],
    samples: &[(i64, f64)],
    per_chunk: usize,
) -> Series {
    let mut chunks = Vec::new();
    for part in samples.chunks(per_chunk.max(1)) {
        let mut a = XorAppender::new();
        for &(t, v) in part {
            a.append(t, v);
        }
        chunks.push(ChunkMeta {
            min_time: part[0].0,
            max_time: part[part.len() - 1].0,
            chunk: a.to_chunk(),
        });
    }
    Series::new(Labels::from_pairs(labels.iter().copied()), chunks)
}

fn samples(s: &Series) -> Vec<(i64, u64)> {
    collect_samples(&mut s.iter())
        .unwrap()
        .into_iter()
        .map(|(t, v)| (t, v.to_bits()))
        .collect()
}

fn grid(from: i64, to: i64, step: i64, f: impl Fn(i64) -> f64) -> Vec<(i64, f64)> {
    (0..)
        .map(|i| from + i * step)
        .take_while(|&t| t < to)
        .map(|t| (t, f(t)))
        .collect()
}

#[test]
fn write_open_select_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = Vec::new();
    for i in 0..50 {
        let inst = format!("i{i}");
        let mut s = grid(0, 7_200_000, 15_000, |t| (t / 1000 + i) as f64 * 1.25);
        if i == 3 {
            s[10].1 = STALE_NAN;
        }
        input.push(series_of(
            &[("__name__", "m"), ("instance", &inst), ("job", "a")],
            &s,
            120,
        ));
    }
    let meta = BlockWriter::new(dir.path(), 0, 7_200_000)
        .write(input.clone())
        .unwrap();
    assert_eq!(meta.stats.num_series, 50);
    assert_eq!(meta.stats.num_samples, 50 * 480);
    assert_eq!(meta.stats.num_chunks, 50 * 4);
    assert_eq!(meta.compaction.sources, vec![meta.ulid]);
    let bdir = dir.path().join(meta.ulid.to_string());
    assert!(bdir.join("chunks/000001").exists() && bdir.join("tombstones").exists());
    assert!(!dir.path().join(format!("{}.tmp", meta.ulid)).exists());

    let b = Block::open(&bdir).unwrap();
    assert_eq!(b.meta(), meta);
    let got = b
        .select(i64::MIN, i64::MAX, &[Matcher::equal("job", "a")], None)
        .unwrap();
    assert_eq!(got.len(), 50);
    let mut sorted = input.clone();
    sorted.sort_by(|a, b| a.labels.cmp(&b.labels));
    for (g, w) in got.iter().zip(&sorted) {
        assert_eq!(g.labels, w.labels);
        assert_eq!(samples(g), samples(w));
    }
    // Time pruning returns only overlapping chunks.
    let part = b
        .select(0, 1_000_000, &[Matcher::equal("instance", "i7")], None)
        .unwrap();
    assert_eq!(part.len(), 1);
    assert_eq!(part[0].chunks.len(), 1);
    assert!(b
        .select(7_200_000, 9_000_000, &[], None)
        .unwrap()
        .is_empty());
    let re = Matcher::new(MatchType::Regex, "instance", "i1.").unwrap();
    assert_eq!(
        b.select(0, 10, std::slice::from_ref(&re), None)
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        b.label_names(0, 10, &[]).unwrap(),
        vec!["__name__", "instance", "job"]
    );
    assert_eq!(b.label_values("instance", 0, 10, &[re]).unwrap().len(), 10);
    assert_eq!(b.label_values("job", 0, 10, &[]).unwrap(), vec!["a"]);
}

#[test]
fn samples_outside_range_are_cut_and_duplicates_merged() {
    let dir = tempfile::tempdir().unwrap();
    let a = series_of(
        &[("__name__", "x")],
        &grid(-50_000, 200_000, 10_000, |t| t as f64),
        7,
    );
    let b = series_of(
        &[("__name__", "x")],
        &grid(95_000, 150_000, 10_000, |t| -(t as f64)),
        120,
    );
    let meta = BlockWriter::new(dir.path(), 0, 100_000)
        .write(vec![a, b])
        .unwrap();
    let blk = Block::open(&dir.path().join(meta.ulid.to_string())).unwrap();
    let got = blk.select(i64::MIN, i64::MAX, &[], None).unwrap();
    assert_eq!(got.len(), 1);
    let mut want: Vec<(i64, f64)> = grid(0, 100_000, 10_000, |t| t as f64);
    want.push((95_000, -95_000.0));
    want.sort_by_key(|s| s.0);
    assert_eq!(collect_samples(&mut got[0].iter()).unwrap(), want);
    assert_eq!(meta.stats.num_samples, 11);
    assert!(got[0]
        .chunks
        .iter()
        .all(|c| c.min_time >= 0 && c.max_time < 100_000));
}

#[test]
fn delete_writes_tombstones_that_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let input: Vec<Series> = (0..4)
        .map(|i| {
            let j = format!("j{i}");
            series_of(
                &[("__name__", "m"), ("job", &j)],
                &grid(0, 1_000_000, 10_000, |t| t as f64),
                30,
            )
        })
        .collect();
    let meta = BlockWriter::new(dir.path(), 0, 1_000_000)
        .write(input)
        .unwrap();
    let bdir = dir.path().join(meta.ulid.to_string());
    let b = Block::open(&bdir).unwrap();
    let m = [Matcher::new(MatchType::Regex, "job", "j0|j1").unwrap()];
    assert_eq!(b.delete(100_000, 399_999, &m).unwrap(), 2);
    // Repeating the same delete changes nothing.
    assert_eq!(b.delete(100_000, 399_999, &m).unwrap(), 0);
    // A whole-series delete removes it from selects.
    assert_eq!(
        b.delete(i64::MIN, i64::MAX, &[Matcher::equal("job", "j3")])
            .unwrap(),
        1
    );
    for blk in [b, Block::open(&bdir).unwrap()] {
        let got = blk.select(i64::MIN, i64::MAX, &[], None).unwrap();
        let jobs: Vec<&str> = got.iter().map(|s| s.labels.get("job").unwrap()).collect();
        assert_eq!(jobs, vec!["j0", "j1", "j2"]);
        let ts: Vec<i64> = collect_samples(&mut got[0].iter())
            .unwrap()
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(ts.len(), 100 - 30);
        assert!(ts.iter().all(|&t| !(100_000..400_000).contains(&t)));
        assert_eq!(collect_samples(&mut got[2].iter()).unwrap().len(), 100);
        assert_eq!(blk.meta().stats.num_tombstones, 3);
    }
}

#[test]
fn corrupt_files_fail_open_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = series_of(
        &[("__name__", "m")],
        &grid(0, 100_000, 1000, |t| t as f64),
        120,
    );
    let meta = BlockWriter::new(dir.path(), 0, 100_000)
        .write(vec![s])
        .unwrap();
    let bdir = dir.path().join(meta.ulid.to_string());
    let idx = bdir.join("index");
    let mut b = std::fs::read(&idx).unwrap();
    let n = b.len();
    b[n - 10] ^= 0xff;
    std::fs::write(&idx, &b).unwrap();
    let e = Block::open(&bdir).unwrap_err().to_string();
    assert!(
        e.contains("index") && e.contains("TOC") && e.contains("checksum"),
        "{e}"
    );
    std::fs::remove_file(bdir.join("meta.json")).unwrap();
    assert!(Block::open(&bdir)
        .unwrap_err()
        .to_string()
        .contains("meta.json"));
}

#[test]
fn empty_range_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        BlockWriter::new(dir.path(), 10, 10).write(vec![]),
        Err(BlockError::EmptyRange { .. })
    ));
}

/// The head-to-block path: the block cut from a head holds exactly the
/// head's samples of the block range, out-of-order ones included.
#[test]
fn block_from_head_matches_head() {
    use crate::head::{Head, HeadOptions};
    let head = Head::new(HeadOptions {
        out_of_order_window_ms: 600_000,
        ..Default::default()
    });
    let t0 = 1_699_999_200_000;
    let v = |i: i64, k: i64| (i * k) as f64 / 7.0;
    let labels: Vec<Labels> = (0..30)
        .map(|i| Labels::from_pairs([("__name__", "h"), ("i", format!("{i}").as_str())]))
        .collect();
    // Scrape order: every series at each step.
    for k in 0..(3 * 240) {
        for (i, l) in labels.iter().enumerate() {
            let i = i as i64;
            // Every 10th sample arrives late, after its successor.
            if k % 10 == 9 {
                continue;
            }
            head.append(l, t0 + k * 15_000, v(i, k)).unwrap();
            if k % 10 == 0 && k > 0 {
                head.append(l, t0 + (k - 1) * 15_000, v(i, k - 1)).unwrap();
            }
        }
    }
    let maxt = t0 + 7_200_000;
    let dir = tempfile::tempdir().unwrap();
    let meta = BlockWriter::new(dir.path(), t0, maxt)
        .write(head.series_for_range(t0, maxt - 1))
        .unwrap();
    assert_eq!(meta.stats.num_series, 30);
    assert_eq!(meta.stats.num_samples, 30 * 480);
    let b = Block::open(&dir.path().join(meta.ulid.to_string())).unwrap();
    let from_block = b.select(i64::MIN, i64::MAX, &[], None).unwrap();
    let from_head = head.select(t0, maxt - 1, &[], None).unwrap();
    assert_eq!(from_block.len(), from_head.len());
    for (bs, hs) in from_block.iter().zip(&from_head) {
        assert_eq!(bs.labels, hs.labels);
        let i: i64 = bs.labels.get("i").unwrap().parse().unwrap();
        let want: Vec<(i64, u64)> = (0..480)
            .map(|k| (t0 + k * 15_000, v(i, k).to_bits()))
            .collect();
        assert_eq!(samples(bs), want);
        let head_part: Vec<(i64, u64)> = samples(hs).into_iter().filter(|s| s.0 < maxt).collect();
        assert_eq!(samples(bs), head_part);
        assert!(!bs.has_overlapping_chunks());
    }
}

mod model {
    //! Random blocks checked against a naive model: every sample written
    //! comes back through `select` with any matcher set, time range and
    //! deletions.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn label_set() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::btree_map("[abc]", "[xyz]{1,2}", 1..4)
            .prop_map(|m| m.into_iter().collect())
    }

    fn matcher() -> impl Strategy<Value = Matcher> {
        ("[abcd]", "[xyz]{0,2}", 0..4usize).prop_map(|(n, v, k)| match k {
            0 => Matcher::equal(&n, &v),
            1 => Matcher::new(MatchType::NotEqual, &n, &v).unwrap(),
            2 => Matcher::new(MatchType::Regex, &n, &format!("{v}.*")).unwrap(),
            _ => Matcher::new(MatchType::NotRegex, &n, &format!("{v}|y")).unwrap(),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn select_matches_model(
            sets in proptest::collection::vec((label_set(), 1usize..300, 1i64..5), 1..12),
            matchers in proptest::collection::vec(matcher(), 0..3),
            range in (0i64..3000, 0i64..3000),
            del in proptest::option::of((0i64..3000, 0i64..1000, matcher())),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut model: BTreeMap<Labels, BTreeMap<i64, f64>> = BTreeMap::new();
            let mut input = Vec::new();
            for (pairs, n, step) in &sets {
                let refs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                let samples: Vec<(i64, f64)> = (0..*n as i64).map(|k| (k * step, (k * step) as f64 / 3.0)).collect();
                let s = series_of(&refs, &samples, 50);
                let e = model.entry(s.labels.clone()).or_default();
                for &(t, v) in &samples {
                    // Series given twice: the first one's sample wins.
                    e.entry(t).or_insert(v);
                }
                input.push(s);
            }
            let meta = BlockWriter::new(dir.path(), 0, 2000).write(input).unwrap();
            let b = Block::open(&dir.path().join(meta.ulid.to_string())).unwrap();
            if let Some((from, len, m)) = &del {
                b.delete(*from, from + len, std::slice::from_ref(m)).unwrap();
                for (l, samples) in model.iter_mut() {
                    if m.matches(l.get_or_empty(&m.name)) {
                        samples.retain(|t, _| !(*from..=from + len).contains(t));
                    }
                }
            }
            let (lo, hi) = (range.0.min(range.1), range.0.max(range.1));
            let got = b.select(lo, hi, &matchers, None).unwrap();
            let mut got_map: BTreeMap<Labels, Vec<(i64, u64)>> = BTreeMap::new();
            for s in &got {
                let v: Vec<(i64, u64)> = collect_samples(&mut s.iter_range(lo, hi))
                    .unwrap()
                    .into_iter()
                    .map(|(t, v)| (t, v.to_bits()))
                    .collect();
                got_map.insert(s.labels.clone(), v);
            }
            for (l, samples) in &model {
                let selected = matchers.iter().all(|m| m.matches(l.get_or_empty(&m.name)));
                let want: Vec<(i64, u64)> = samples
                    .iter()
                    .filter(|(t, _)| (lo..=hi).contains(*t) && **t < 2000)
                    .map(|(t, v)| (*t, v.to_bits()))
                    .collect();
                match got_map.get(l) {
                    Some(g) => {
                        prop_assert!(selected, "{l} not selected by {matchers:?}");
                        prop_assert_eq!(g, &want, "series {}", l);
                    }
                    // A selected series may only be missing if it has no data in range.
                    None => prop_assert!(!selected || want.is_empty(), "{l} missing"),
                }
            }
            prop_assert!(got.windows(2).all(|w| w[0].labels < w[1].labels));
        }
    }
}

#[test]
fn verify_accepts_good_blocks_and_names_problems() {
    let dir = tempfile::tempdir().unwrap();
    let input: Vec<Series> = (0..5)
        .map(|i| {
            let v = format!("{i}");
            series_of(
                &[("__name__", "m"), ("i", &v)],
                &grid(0, 3_600_000, 15_000, |t| t as f64),
                120,
            )
        })
        .collect();
    let meta = BlockWriter::new(dir.path(), 0, 3_600_000)
        .write(input)
        .unwrap();
    let bdir = dir.path().join(meta.ulid.to_string());
    let stats = Block::open(&bdir).unwrap().verify().unwrap();
    assert_eq!(stats, meta.stats);

    // Counts in meta.json that disagree with the data.
    let mut wrong = meta.clone();
    wrong.stats.num_samples += 1;
    wrong.write(&bdir).unwrap();
    let e = Block::open(&bdir)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("meta.json counts") && e.contains(&meta.ulid.to_string()),
        "{e}"
    );
    meta.write(&bdir).unwrap();

    // A flipped bit in chunk data.
    let seg = bdir.join("chunks/000001");
    let mut b = std::fs::read(&seg).unwrap();
    b[500] ^= 0x04;
    std::fs::write(&seg, &b).unwrap();
    let e = Block::open(&bdir)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(e.contains("checksum") && e.contains("i=\""), "{e}");

    // A block range that does not cover its chunks.
    b[500] ^= 0x04;
    std::fs::write(&seg, &b).unwrap();
    let mut short = meta.clone();
    short.max_time = 1_800_000;
    short.write(&bdir).unwrap();
    let e = Block::open(&bdir)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside the block range"), "{e}");
}

mod garbage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A segment of random bytes behind a valid header, and random
        /// tombstone files, never make the readers panic.
        #[test]
        fn random_segments_and_tombstones_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300),
                                                      refs in proptest::collection::vec(0u64..400, 1..10),
                                                      tomb in proptest::collection::vec(any::<u8>(), 0..40)) {
            let dir = tempfile::tempdir().unwrap();
            let cdir = dir.path().join("chunks");
            std::fs::create_dir_all(&cdir).unwrap();
            let mut seg = vec![0x85, 0xBD, 0x40, 0xDD, 1, 0, 0, 0];
            seg.extend_from_slice(&body);
            std::fs::write(cdir.join("000001"), &seg).unwrap();
            let r = ChunkReader::open(&cdir).unwrap();
            for rf in refs {
                if let Ok(c) = r.read(rf) {
                    let _ = collect_samples(&mut c.iter());
                }
            }
            let mut t = vec![0x01, 0x30, 0xBA, 0x30, 1];
            t.extend_from_slice(&tomb);
            let _ = Tombstones::decode(std::path::Path::new("t"), &t);
        }
    }
}
