//! Throughput measurements, ignored by default (debug builds: the numbers
//! are a floor, not a claim). Run with
//! `cargo test -p pharos-node --test it bench -- --ignored --nocapture`.

use std::time::Instant;

use prost::Message;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_remote_write_and_query() {
    let n = node().await;
    const SERIES: usize = 10_000;
    const ROUNDS: usize = 30;
    const PER_REQUEST: usize = 2_000;
    const SENDERS: usize = 4;
    // Pre-encode every request (the client's cost is not ours).
    let mut bodies = Vec::new();
    for round in 0..ROUNDS {
        let t = 1_000_000 + round as i64 * 15_000;
        for chunk in (0..SERIES).collect::<Vec<_>>().chunks(PER_REQUEST) {
            let ts = chunk
                .iter()
                .map(|&i| {
                    series(
                        &[
                            ("__name__", "bench_metric"),
                            ("instance", &format!("host-{}", i % 100)),
                            ("job", "bench"),
                            ("series", &i.to_string()),
                        ],
                        &[(t, (i * round) as f64)],
                    )
                })
                .collect();
            bodies.push(snappy(&write_req(ts).encode_to_vec()));
        }
    }
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let started = Instant::now();
    // Rounds in order (a series' samples must arrive in time order); the
    // requests of one round go out concurrently.
    let per_round = SERIES / PER_REQUEST;
    for round in bodies.chunks(per_round) {
        let mut tasks = Vec::new();
        for group in round.chunks(per_round.div_ceil(SENDERS)) {
            let group: Vec<Vec<u8>> = group.to_vec();
            let addr = n.addr;
            tasks.push(tokio::spawn(async move {
                for b in group {
                    let r = request(
                        addr,
                        "POST",
                        "/api/v1/write",
                        &[
                            ("Content-Type", "application/x-protobuf"),
                            ("Content-Encoding", "snappy"),
                        ],
                        &b,
                    )
                    .await;
                    assert_eq!(r.status, 204);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let samples = SERIES * ROUNDS;
    eprintln!(
        "remote write: {samples} samples in {} requests ({:.1} MB snappy) in {secs:.2}s = {:.0} samples/s (fsync always)",
        bodies.len(),
        bytes as f64 / 1e6,
        samples as f64 / secs
    );
    for (name, q) in [
        (
            "sum by instance over 10k series",
            "sum by (instance) (rate(bench_metric[1m]))",
        ),
        ("one series", "bench_metric{series=\"42\"}"),
    ] {
        let path = format!(
            "/api/v1/query_range?{}",
            qs(&[
                ("query", q),
                ("start", "1000"),
                ("end", "1435"),
                ("step", "15")
            ])
        );
        let t0 = Instant::now();
        let r = get(n.addr, &path).await;
        assert_eq!(r.status, 200, "{}", r.text());
        eprintln!(
            "query_range {name}: {:.1} ms, {} bytes",
            t0.elapsed().as_secs_f64() * 1e3,
            r.body.len()
        );
    }
    n.stop().await;
}
