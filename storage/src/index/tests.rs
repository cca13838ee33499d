use super::*;
use crate::labels::{Labels, MatchType, Matcher};

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// Builds an index of `series` (sorted here) with three chunks each.
fn build(dir: &std::path::Path, mut series: Vec<Labels>) -> (std::path::PathBuf, Vec<SeriesEntry>) {
    series.sort();
    let path = dir.join("index");
    let mut syms = Vec::new();
    for s in &series {
        for (n, v) in s.iter() {
            syms.push(n.to_string());
            syms.push(v.to_string());
        }
    }
    let mut w = IndexWriter::create(&path, syms.iter().map(String::as_str)).unwrap();
    let mut expected = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let base = i as i64 * 1000 - 500_000;
        let chunks = vec![
            ChunkEntry {
                min_time: base,
                max_time: base + 119,
                chunk_ref: (i as u64) * 300 + 8,
            },
            ChunkEntry {
                min_time: base + 120,
                max_time: base + 500,
                chunk_ref: (i as u64) * 300 + 100,
            },
            ChunkEntry {
                min_time: base + 9000,
                max_time: base + 9000,
                chunk_ref: (1 << 32) | ((i as u64) * 300),
            },
        ];
        w.add_series(s, &chunks).unwrap();
        expected.push(SeriesEntry {
            labels: s.clone(),
            chunks,
        });
    }
    let stats = w.finish().unwrap();
    assert_eq!(stats.series, series.len() as u64);
    assert_eq!(stats.bytes, std::fs::metadata(&path).unwrap().len());
    (path, expected)
}

fn sample_series() -> Vec<Labels> {
    let mut v = Vec::new();
    for job in ["api", "db", "web"] {
        for i in 0..20 {
            let inst = format!("host-{i:02}");
            let mut pairs = vec![
                ("__name__", "up"),
                ("job", job),
                ("instance", inst.as_str()),
            ];
            if i % 3 == 0 {
                pairs.push(("zone", "eu"));
            }
            v.push(ls(&pairs));
            v.push(ls(&[
                ("__name__", "http_requests_total"),
                ("job", job),
                ("instance", inst.as_str()),
            ]));
        }
    }
    v
}

#[test]
fn round_trip_series_labels_and_postings() {
    let dir = tempfile::tempdir().unwrap();
    let (path, expected) = build(dir.path(), sample_series());
    let r = IndexReader::open(&path).unwrap();
    let all = r.all_postings().unwrap();
    assert_eq!(all.len(), expected.len());
    for (id, e) in all.iter().zip(&expected) {
        assert_eq!(&r.series(*id).unwrap(), e);
    }
    assert_eq!(r.label_names(), vec!["__name__", "instance", "job", "zone"]);
    assert_eq!(r.label_values("job"), vec!["api", "db", "web"]);
    assert_eq!(r.label_values("zone"), vec!["eu"]);
    assert!(r.label_values("nope").is_empty());
    let web = r.postings("job", "web").unwrap();
    assert_eq!(web.len(), 40);
    for id in web {
        assert_eq!(r.series(id).unwrap().labels.get("job"), Some("web"));
    }
}

/// Every matcher kind, checked against a brute-force filter of all series.
#[test]
fn postings_for_matchers_agree_with_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let (path, expected) = build(dir.path(), sample_series());
    let r = IndexReader::open(&path).unwrap();
    let all = r.all_postings().unwrap();
    let cases: Vec<Vec<Matcher>> = vec![
        vec![Matcher::equal("job", "db")],
        vec![
            Matcher::equal("job", "db"),
            Matcher::equal("__name__", "up"),
        ],
        vec![Matcher::new(MatchType::NotEqual, "job", "db").unwrap()],
        vec![Matcher::new(MatchType::Regex, "instance", "host-0.").unwrap()],
        vec![
            Matcher::new(MatchType::Regex, "job", "api|web").unwrap(),
            Matcher::equal("zone", "eu"),
        ],
        vec![
            Matcher::new(MatchType::NotRegex, "zone", "e.*").unwrap(),
            Matcher::equal("__name__", "up"),
        ],
        vec![Matcher::equal("zone", ""), Matcher::equal("__name__", "up")],
        vec![Matcher::new(MatchType::NotEqual, "zone", "").unwrap()],
        vec![
            Matcher::new(MatchType::Regex, "zone", "eu|").unwrap(),
            Matcher::equal("job", "api"),
        ],
        vec![Matcher::equal("job", "missing")],
        vec![Matcher::equal("nolabel", "")],
        vec![],
    ];
    for ms in cases {
        let got = r.postings_for_matchers(&ms).unwrap();
        let want: Vec<u64> = all
            .iter()
            .zip(&expected)
            .filter(|(_, e)| ms.iter().all(|m| m.matches(e.labels.get_or_empty(&m.name))))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(got, want, "matchers {ms:?}");
    }
}

#[test]
fn writer_rejects_out_of_order_and_bad_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let mut w = IndexWriter::create(&path, ["a", "b", "c"]).unwrap();
    w.add_series(&ls(&[("a", "b")]), &[]).unwrap();
    let e = w.add_series(&ls(&[("a", "a")]), &[]).unwrap_err();
    assert!(matches!(e, IndexError::SeriesOutOfOrder { .. }), "{e}");
    let e = w.add_series(&ls(&[("a", "d")]), &[]).unwrap_err();
    assert!(matches!(e, IndexError::UnknownSymbol { .. }), "{e}");
    let overlapping = [
        ChunkEntry {
            min_time: 0,
            max_time: 10,
            chunk_ref: 8,
        },
        ChunkEntry {
            min_time: 10,
            max_time: 20,
            chunk_ref: 9,
        },
    ];
    let e = w.add_series(&ls(&[("a", "c")]), &overlapping).unwrap_err();
    assert!(matches!(e, IndexError::BadSeries { .. }), "{e}");
}

#[test]
fn empty_index_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = build(dir.path(), vec![]);
    let r = IndexReader::open(&path).unwrap();
    assert!(r.all_postings().unwrap().is_empty());
    assert!(r.label_names().is_empty());
    assert!(r
        .postings_for_matchers(&[Matcher::equal("a", "b")])
        .unwrap()
        .is_empty());
}

/// Flipping any byte must never panic, and flipping a byte inside a checked
/// section must surface as an error naming the file.
#[test]
fn corruption_is_detected_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = build(dir.path(), sample_series());
    let good = std::fs::read(&path).unwrap();
    let mut detected = 0;
    for pos in (0..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[pos] ^= 0x5a;
        let res = IndexReader::from_bytes(&path, bad).and_then(|r| {
            for id in r.all_postings()? {
                r.series(id)?;
            }
            for n in r.label_names() {
                for v in r.label_values(n) {
                    r.postings(n, v)?;
                }
            }
            Ok(())
        });
        if let Err(e) = res {
            detected += 1;
            assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
        }
    }
    // Only zero padding and the label-index sections are not read back.
    assert!(detected * 10 > (good.len() / 7) * 8, "detected {detected}");
    let e = IndexReader::from_bytes(&path, good[..20].to_vec()).unwrap_err();
    assert!(matches!(e, IndexError::TooSmall { .. }));
    // Truncated files (a torn copy) fail cleanly too; the TOC is gone.
    for cut in (0..good.len()).step_by(13) {
        assert!(IndexReader::from_bytes(&path, good[..cut].to_vec()).is_err());
    }
}

/// Byte layout details Prometheus readers depend on.
#[test]
fn layout_matches_prometheus_v2() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = build(
        dir.path(),
        vec![ls(&[("a", "1")]), ls(&[("a", "2"), ("b", "x")])],
    );
    let b = std::fs::read(&path).unwrap();
    assert_eq!(&b[..5], &[0xBA, 0xAA, 0xD7, 0x00, 2]);
    // Symbol table: len, count 6 ("", "1","2","a","b","x"), entries, CRC
    // over count+entries.
    let len = u32::from_be_bytes(b[5..9].try_into().unwrap()) as usize;
    assert_eq!(u32::from_be_bytes(b[9..13].try_into().unwrap()), 6);
    assert_eq!(&b[13..16], &[0, 1, b'1']);
    let crc = u32::from_be_bytes(b[9 + len..13 + len].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&b[9..9 + len]));
    let r = IndexReader::open(&path).unwrap();
    let ids = r.all_postings().unwrap();
    // First series starts at the first 16-byte boundary after the symbols.
    assert_eq!(ids[0], (13 + len as u64).div_ceil(16));
    let toc = &b[b.len() - TOC_LEN..];
    assert_eq!(u64::from_be_bytes(toc[..8].try_into().unwrap()), 5);
}

mod garbage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes (with a valid header and TOC checksum, so parsing
        /// goes past the first checks) never make the reader panic.
        #[test]
        fn arbitrary_bytes_never_panic(mut body in proptest::collection::vec(any::<u8>(), 0..400),
                                       offs in proptest::collection::vec(0u64..500, 6),
                                       ids in proptest::collection::vec(0u64..40, 0..8)) {
            let mut b = vec![0xBA, 0xAA, 0xD7, 0x00, 2];
            b.append(&mut body);
            let mut toc = Vec::new();
            for o in &offs {
                toc.extend_from_slice(&o.to_be_bytes());
            }
            let crc = crc32c::crc32c(&toc);
            toc.extend_from_slice(&crc.to_be_bytes());
            b.extend_from_slice(&toc);
            if let Ok(r) = IndexReader::from_bytes(std::path::Path::new("fuzz"), b) {
                for id in ids {
                    let _ = r.series(id);
                }
                let _ = r.all_postings();
                let _ = r.postings_for_matchers(&[Matcher::new(MatchType::Regex, "a", ".+").unwrap()]);
            }
        }
    }
}
