//! The remote-write receiver end to end: status codes, limits, 2.0, and
//! that a refused request leaves nothing behind.

use pharos_proto::write_v2;
use prost::Message;
use serde_json::json;

use crate::common::*;

async fn count(n: &Node, selector: &str) -> usize {
    let v = get(
        n.addr,
        &format!("/api/v1/series?{}", qs(&[("match[]", selector)])),
    )
    .await
    .json();
    v["data"].as_array().map(|a| a.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_and_nothing_is_half_applied() {
    let n = node().await;
    // A good series followed by one with unsorted labels: all refused.
    let req = write_req(vec![
        series(&[("__name__", "good")], &[(1000, 1.0)]),
        series(
            &[("__name__", "bad"), ("b", "1"), ("a", "2")],
            &[(1000, 1.0)],
        ),
    ]);
    let r = write_v1(n.addr, &req).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("not sorted") && r.text().contains("bad"),
        "{}",
        r.text()
    );
    assert_eq!(count(&n, "{__name__=~\".+\"}").await, 0);

    // Duplicate label names.
    let r = write_v1(
        n.addr,
        &write_req(vec![series(
            &[("__name__", "d"), ("a", "1"), ("a", "2")],
            &[(1, 1.0)],
        )]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("duplicate label name"), "{}", r.text());

    // Not snappy, not protobuf.
    let hdr = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
    ];
    let r = request(n.addr, "POST", "/api/v1/write", &hdr, b"\x05hello").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(
        n.addr,
        "POST",
        "/api/v1/write",
        &hdr,
        &snappy(b"\xff\xff\xff"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Snappy bomb: a header declaring 1 GiB, over the 128 MiB default.
    let r = request(
        n.addr,
        "POST",
        "/api/v1/write",
        &hdr,
        &[0x80, 0x80, 0x80, 0x80, 0x04],
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());

    // Wrong media type.
    let r = request(
        n.addr,
        "POST",
        "/api/v1/write",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(count(&n, "{__name__=~\".+\"}").await, 0);

    // The metrics saw all of it.
    let m = get(n.addr, "/metrics").await.text();
    assert!(
        m.contains(r#"pharos_remote_write_requests_total{version="1.0",code="400"} 4"#),
        "{m}"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_samples_are_reported_by_series() {
    let n = node().await;
    let r = write_v1(
        n.addr,
        &write_req(vec![series(&[("__name__", "o")], &[(2000, 1.0)])]),
    )
    .await;
    assert_eq!(r.status, 204);
    // Re-sending the same sample (a client retry) is fine.
    let r = write_v1(
        n.addr,
        &write_req(vec![series(&[("__name__", "o")], &[(2000, 1.0)])]),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = write_v1(
        n.addr,
        &write_req(vec![
            series(&[("__name__", "o")], &[(1000, 5.0), (3000, 3.0)]),
            series(&[("__name__", "p")], &[(1000, 1.0)]),
        ]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("out of order") && r.text().contains("__name__=\"o\""),
        "{}",
        r.text()
    );
    assert_eq!(
        r.header("X-Prometheus-Remote-Write-Samples-Written"),
        Some("2")
    );
    let m = get(n.addr, "/metrics").await.text();
    assert!(
        m.contains(r#"pharos_ingest_samples_rejected_total{reason="out_of_order"} 1"#),
        "{m}"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_body_and_series() {
    let n = node_with(|c| {
        c.pharos.remote_write_receiver.max_series_per_request = 2;
        c.pharos.remote_write_receiver.max_compressed_bytes = 4096;
    })
    .await;
    let three: Vec<_> = (0..3)
        .map(|i| series(&[("__name__", "s"), ("i", &i.to_string())], &[(1, 1.0)]))
        .collect();
    let r = write_v1(n.addr, &write_req(three)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    // Incompressible labels make a body over 4 KiB compressed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: String = (0..8000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let r = write_v1(
        n.addr,
        &write_req(vec![series(&[("__name__", "s"), ("x", &big)], &[(1, 1.0)])]),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(count(&n, "s").await, 0);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_2_0() {
    let n = node().await;
    let req = write_v2::Request {
        symbols: [
            "",
            "__name__",
            "v2_metric",
            "job",
            "x",
            "Some help",
            "seconds",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        timeseries: vec![write_v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![
                write_v2::Sample {
                    value: 1.5,
                    timestamp: 1000,
                },
                write_v2::Sample {
                    value: 2.5,
                    timestamp: 2000,
                },
            ],
            metadata: Some(write_v2::Metadata {
                r#type: write_v2::metadata::MetricType::Counter as i32,
                help_ref: 5,
                unit_ref: 6,
            }),
            ..Default::default()
        }],
    };
    let r = request(
        n.addr,
        "POST",
        "/api/v1/write",
        &[
            (
                "Content-Type",
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            ),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "2.0.0"),
        ],
        &snappy(&req.encode_to_vec()),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("X-Prometheus-Remote-Write-Samples-Written"),
        Some("2")
    );
    assert_eq!(
        r.header("X-Prometheus-Remote-Write-Histograms-Written"),
        Some("0")
    );
    assert_eq!(
        r.header("X-Prometheus-Remote-Write-Exemplars-Written"),
        Some("0")
    );
    let v = get(n.addr, "/api/v1/query?query=v2_metric&time=2")
        .await
        .json();
    assert_eq!(
        v["data"]["result"],
        json!([{"metric": {"__name__": "v2_metric", "job": "x"}, "value": [2, "2.5"]}])
    );
    let v = get(n.addr, "/api/v1/metadata?metric=v2_metric")
        .await
        .json();
    assert_eq!(
        v["data"],
        json!({"v2_metric": [{"type": "counter", "help": "Some help", "unit": "seconds"}]})
    );
    // A bad symbol reference is a 400.
    let bad = write_v2::Request {
        symbols: vec!["".into(), "a".into()],
        timeseries: vec![write_v2::TimeSeries {
            labels_refs: vec![1, 7],
            ..Default::default()
        }],
    };
    let r = request(
        n.addr,
        "POST",
        "/api/v1/write",
        &[
            (
                "Content-Type",
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            ),
            ("Content-Encoding", "snappy"),
        ],
        &snappy(&bad.encode_to_vec()),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("out of range"), "{}", r.text());
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_can_be_disabled() {
    let n = node_with(|c| c.pharos.remote_write_receiver.enabled = false).await;
    let r = write_v1(
        n.addr,
        &write_req(vec![series(&[("__name__", "x")], &[(1, 1.0)])]),
    )
    .await;
    assert_eq!(r.status, 404);
    n.stop().await;
}

/// Past `max_concurrent_requests` the receiver answers 429 at once rather
/// than queueing: a request whose body is still arriving holds the only
/// slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_429() {
    use tokio::io::AsyncWriteExt;
    let n = node_with(|c| c.pharos.remote_write_receiver.max_concurrent_requests = 1).await;
    let open_slow = || async {
        let mut slow = tokio::net::TcpStream::connect(n.addr).await.unwrap();
        slow.write_all(
            b"POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: 100\r\n\r\nabc",
        )
        .await
        .unwrap();
        slow
    };
    let mut slow = open_slow().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = write_v1(
            n.addr,
            &write_req(vec![series(&[("__name__", "x")], &[(1, 1.0)])]),
        )
        .await;
        if r.status == 429 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never got 429: {}",
            r.status
        );
        // If the slow request arrived while a write held the slot, it was
        // itself answered 429 and holds nothing: start it again.
        let mut buf = [0u8; 64];
        if matches!(slow.try_read(&mut buf), Ok(n) if n > 0) {
            slow = open_slow().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(slow);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = write_v1(
            n.addr,
            &write_req(vec![series(&[("__name__", "x")], &[(1, 1.0)])]),
        )
        .await;
        if r.status == 204 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot never freed: {}",
            r.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    n.stop().await;
}
