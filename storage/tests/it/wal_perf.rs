//! Throughput numbers for the WAL (printed, never asserted: the machine is
//! shared). Run with
//! `cargo test -p pharos-storage --test it wal_perf -- --nocapture`
//! (add `--release` for optimised numbers).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pharos_storage::labels::Labels;
use pharos_storage::wal::{self, FsyncPolicy, Record, RefSample, RefSeries, Wal, WalOptions};

#[test]
fn wal_perf_group_commit_append() {
    for threads in [1usize, 4, 16] {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default(), |_| {}).unwrap();
        let wal = Arc::new(wal);
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let hs: Vec<_> = (0..threads)
            .map(|th| {
                let (wal, stop, samples) =
                    (Arc::clone(&wal), Arc::clone(&stop), Arc::clone(&samples));
                std::thread::spawn(move || {
                    let mut batch: Vec<RefSample> = (0..100)
                        .map(|i| RefSample {
                            series_ref: (th * 100 + i) as u64,
                            t: 0,
                            v: 1.0,
                        })
                        .collect();
                    let mut t = 0;
                    while !stop.load(Ordering::Relaxed) {
                        t += 15_000;
                        for s in &mut batch {
                            s.t = t;
                            s.v += 1.0;
                        }
                        wal.log(&[Record::Samples(&batch)]).unwrap();
                        samples.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let st = wal.stats();
        println!(
            "WAL append, fsync=always, {threads:>2} writers x 100-sample batches: {:>8.0} batches/s, {:>9.0} samples/s, {} fsyncs for {} batches ({:.1} batches per fsync)",
            st.log_calls as f64 / secs,
            samples.load(Ordering::Relaxed) as f64 / secs,
            st.fsyncs,
            st.log_calls,
            st.log_calls as f64 / st.fsyncs.max(1) as f64,
        );
    }
}

#[test]
fn wal_perf_replay_rate() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 32 << 20,
        fsync: FsyncPolicy::Interval(Duration::from_millis(200)),
    };
    let (wal, _) = Wal::open(dir.path(), opts.clone(), |_| {}).unwrap();
    let n_series = 10_000u64;
    let series: Vec<RefSeries> = (0..n_series)
        .map(|i| RefSeries {
            series_ref: i + 1,
            labels: Labels::from_pairs([
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("instance", &format!("host-{}:9090", i % 100)),
                ("path", &format!("/p/{}", i / 100)),
            ]),
        })
        .collect();
    wal.log(&[Record::Series(&series)]).unwrap();
    let per_record = 1000u64;
    let rounds = 300u64; // 3M samples
    let mut batch = Vec::with_capacity(per_record as usize);
    let write_start = Instant::now();
    for round in 0..rounds {
        for chunk in 0..(n_series / per_record) {
            batch.clear();
            batch.extend((0..per_record).map(|i| RefSample {
                series_ref: chunk * per_record + i + 1,
                t: 1_700_000_000_000 + (round as i64) * 15_000,
                v: (round * 7 + i) as f64 * 0.25,
            }));
            wal.log(&[Record::Samples(&batch)]).unwrap();
        }
    }
    wal.close().unwrap();
    let written = rounds * n_series;
    let wsecs = write_start.elapsed().as_secs_f64();
    let bytes: u64 = wal::list_dir(dir.path())
        .unwrap()
        .segments
        .iter()
        .map(|s| std::fs::metadata(&s.1).unwrap().len())
        .sum();

    let mut seen = 0u64;
    let mut checksum = 0f64;
    let stats = wal::replay(dir.path(), |r| {
        if let Record::Samples(s) = r {
            seen += s.len() as u64;
            checksum += s[s.len() - 1].v;
        }
    })
    .unwrap();
    assert_eq!(seen, written);
    assert!(checksum > 0.0);
    println!(
        "WAL write (fsync=interval, 1000-sample records): {written} samples in {wsecs:.2}s = {:.0} samples/s, {:.2} bytes/sample",
        written as f64 / wsecs,
        bytes as f64 / written as f64
    );
    println!(
        "WAL replay (decode only, one core): {} samples, {} records, {} segments in {:.3}s = {:.0} samples/s ({:.0} MB/s)",
        stats.samples,
        stats.records,
        stats.segments,
        stats.duration.as_secs_f64(),
        stats.samples_per_sec(),
        stats.bytes as f64 / stats.duration.as_secs_f64() / 1e6
    );
}

/// `Db::append` throughput with concurrent appenders (group commit), and
/// `Db::open` replay rate into the head.
#[test]
fn db_perf_append_and_replay() {
    use pharos_storage::db::{Db, DbOptions};

    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions::default();
    let db = Arc::new(Db::open(dir.path(), opts.clone()).unwrap());
    let threads = 8u64;
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|th| {
            let (db, stop, total) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&total));
            std::thread::spawn(move || {
                let labels: Vec<Labels> = (0..500)
                    .map(|i| {
                        Labels::from_pairs([
                            ("__name__", "node_cpu_seconds_total"),
                            ("instance", &format!("host-{th}")),
                            ("cpu", &i.to_string()),
                        ])
                    })
                    .collect();
                let mut t = 1_700_000_000_000i64;
                while !stop.load(Ordering::Relaxed) {
                    t += 15_000;
                    let batch: Vec<(Labels, i64, f64)> = labels
                        .iter()
                        .map(|l| (l.clone(), t, t as f64 * 1e-3))
                        .collect();
                    let st = db.append(&batch).unwrap();
                    total.fetch_add(st.appended as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = total.load(Ordering::Relaxed);
    let ws = db.wal().stats();
    println!(
        "Db::append, fsync=always, {threads} appenders x 500-sample batches: {:.0} samples/s, {} batches, {} fsyncs ({:.1} batches per fsync)",
        n as f64 / secs,
        ws.log_calls,
        ws.fsyncs,
        ws.log_calls as f64 / ws.fsyncs.max(1) as f64
    );
    drop(db);

    let t0 = Instant::now();
    let db = Db::open(dir.path(), opts).unwrap();
    let r = db.open_report().clone();
    assert_eq!(r.samples_applied, n);
    let open_secs = t0.elapsed().as_secs_f64();
    drop(db);
    let decode = wal::replay(&dir.path().join("wal"), |_| {}).unwrap();
    println!(
        "Db::open replay into the head: {} series, {} samples in {open_secs:.3}s = {:.0} samples/s (WAL read+decode alone: {:.0} samples/s)",
        r.series,
        r.samples_applied,
        r.samples_applied as f64 / open_secs,
        decode.samples_per_sec()
    );
}
