//! The query, metadata and status API over a node fed by remote write.

use serde_json::json;

use crate::common::*;

/// 10 series `m{i="0".."9"}` with samples every 15s for 10 minutes from
/// t=1_000_000s, value i*1000 + step, plus one `other` series.
async fn fed() -> Node {
    let n = node().await;
    let t0 = 1_000_000_000i64;
    let mut ts = Vec::new();
    for i in 0..10 {
        let samples: Vec<(i64, f64)> = (0..40)
            .map(|k| (t0 + k * 15_000, (i * 1000 + k) as f64))
            .collect();
        ts.push(series(
            &[("__name__", "m"), ("i", &i.to_string()), ("job", "j")],
            &samples,
        ));
    }
    ts.push(series(&[("__name__", "other"), ("job", "k")], &[(t0, 0.5)]));
    let mut req = write_req(ts);
    req.metadata.push(pharos_proto::prometheus::MetricMetadata {
        r#type: 2,
        metric_family_name: "m".into(),
        help: "A test gauge.".into(),
        unit: String::new(),
    });
    let r = write_v1(n.addr, &req).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("X-Prometheus-Remote-Write-Samples-Written"),
        Some("401")
    );
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_and_range_queries_json() {
    let n = fed().await;
    let q = qs(&[("query", "m{i=\"3\"}"), ("time", "1000030")]);
    let r = get(n.addr, &format!("/api/v1/query?{q}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Byte-exact shape: t=1000030 is the 3rd sample (k=2).
    assert_eq!(
        r.text(),
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"m","i":"3","job":"j"},"value":[1000030,"3002"]}]}}"#
    );
    // Range query as form POST with RFC 3339 and a duration step.
    let r = post_form(
        n.addr,
        "/api/v1/query_range",
        &[
            ("query", "sum(m)"),
            ("start", "1970-01-12T13:46:40Z"),
            ("end", "1000000.5"),
            ("step", "0.25"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"]["resultType"], "matrix");
    let values = &v["data"]["result"][0]["values"];
    assert_eq!(values.as_array().unwrap().len(), 3);
    assert_eq!(values[1], json!([1000000.25, "45000"]));
    // Large answers are gzipped for clients that ask (Grafana does).
    let q = qs(&[
        ("query", "m"),
        ("start", "1000000"),
        ("end", "1000600"),
        ("step", "15"),
    ]);
    let plain = get(n.addr, &format!("/api/v1/query_range?{q}")).await;
    let r = request(
        n.addr,
        "GET",
        &format!("/api/v1/query_range?{q}"),
        &[("Accept-Encoding", "gzip, deflate, br")],
        b"",
    )
    .await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&r.body[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped, plain.body);
    assert!(r.body.len() * 3 < plain.body.len());
    // Scalars, stats and special values.
    let q = qs(&[("query", "1/0"), ("time", "1.5"), ("stats", "all")]);
    let v = get(n.addr, &format!("/api/v1/query?{q}")).await.json();
    assert_eq!(v["data"]["result"], json!([1.5, "+Inf"]));
    assert!(v["data"]["stats"]["timings"]["evalTotalTime"].is_number());
    assert!(v["data"]["stats"]["samples"]["totalQueryableSamples"].is_number());
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_the_prometheus_envelope() {
    let n = fed().await;
    let cases: Vec<(String, u16, &str, &str)> = vec![
        (
            format!("/api/v1/query?{}", qs(&[("query", "up"), ("time", "nope")])),
            400,
            "bad_data",
            "invalid parameter \"time\": Invalid time value for 'time': cannot parse \"nope\" to a valid timestamp",
        ),
        (
            format!("/api/v1/query?{}", qs(&[("query", "sum(")])),
            400,
            "bad_data",
            "invalid parameter \"query\": 1:",
        ),
        (
            format!(
                "/api/v1/query_range?{}",
                qs(&[
                    ("query", "m"),
                    ("start", "0"),
                    ("end", "100000"),
                    ("step", "1")
                ])
            ),
            400,
            "bad_data",
            "exceeded maximum resolution of 11,000 points per timeseries",
        ),
        (
            format!(
                "/api/v1/query_range?{}",
                qs(&[("query", "m"), ("start", "10"), ("end", "5"), ("step", "1")])
            ),
            400,
            "bad_data",
            "invalid parameter \"end\": end timestamp must not be before start time",
        ),
        (
            format!(
                "/api/v1/query_range?{}",
                qs(&[("query", "m"), ("start", "1"), ("end", "5"), ("step", "0")])
            ),
            400,
            "bad_data",
            "invalid parameter \"step\": zero or negative query resolution step widths",
        ),
        (
            "/api/v1/series".to_string(),
            400,
            "bad_data",
            "no match[] parameter provided",
        ),
        (
            "/api/v1/label/in-valid/values".to_string(),
            400,
            "bad_data",
            "invalid label name: \"in-valid\"",
        ),
    ];
    for (path, code, ty, msg) in cases {
        let r = get(n.addr, &path).await;
        assert_eq!(r.status, code, "{path}: {}", r.text());
        let v = r.json();
        assert_eq!(v["status"], "error", "{path}");
        assert_eq!(v["errorType"], ty, "{path}");
        let e = v["error"].as_str().unwrap();
        assert!(e.starts_with(msg), "{path}: {e}");
    }
    // Query length limit.
    let long = format!("{}1", "1+".repeat(40_000));
    let r = post_form(n.addr, "/api/v1/query", &[("query", &long)]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("the limit is 65536"),
        "{}",
        r.text()
    );
    // A query over its `timeout` is a 503 timeout.
    let q = qs(&[
        (
            "query",
            "sum(count_over_time(vector(1)[30d:1s])) + sum(count_over_time(vector(1)[30d:1s]))",
        ),
        ("time", "1000030"),
        ("timeout", "1ms"),
    ]);
    let r = get(n.addr, &format!("/api/v1/query?{q}")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["errorType"], "timeout");
    // Execution errors are 422.
    let q = qs(&[("query", "m + on(job) m"), ("time", "1000030")]);
    let r = get(n.addr, &format!("/api/v1/query?{q}")).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["errorType"], "execution");
    // Admin API is off by default.
    let r = post_form(
        n.addr,
        "/api/v1/admin/tsdb/delete_series",
        &[("match[]", "m")],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "admin APIs disabled");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_endpoints() {
    let n = fed().await;
    let v = get(n.addr, "/api/v1/labels").await.json();
    assert_eq!(v["data"], json!(["__name__", "i", "job"]));
    let v = get(
        n.addr,
        &format!("/api/v1/labels?{}", qs(&[("match[]", "other")])),
    )
    .await
    .json();
    assert_eq!(v["data"], json!(["__name__", "job"]));
    let v = get(n.addr, "/api/v1/label/__name__/values").await.json();
    assert_eq!(v["data"], json!(["m", "other"]));
    let v = get(n.addr, "/api/v1/label/nothing/values").await.json();
    assert_eq!(v["data"], json!([]));
    let v = get(
        n.addr,
        &format!("/api/v1/label/i/values?{}", qs(&[("limit", "3")])),
    )
    .await
    .json();
    assert_eq!(v["data"], json!(["0", "1", "2"]));
    assert_eq!(v["warnings"], json!(["results truncated due to limit"]));
    let r = get(
        n.addr,
        &format!(
            "/api/v1/series?{}",
            qs(&[("match[]", "other"), ("match[]", "m{i=\"1\"}")])
        ),
    )
    .await;
    assert_eq!(
        r.text(),
        r#"{"status":"success","data":[{"__name__":"m","i":"1","job":"j"},{"__name__":"other","job":"k"}]}"#
    );
    // Time bounds exclude everything.
    let v = get(
        n.addr,
        &format!(
            "/api/v1/series?{}",
            qs(&[("match[]", "m"), ("start", "1"), ("end", "2")])
        ),
    )
    .await
    .json();
    assert_eq!(v["data"], json!([]));
    let v = get(n.addr, "/api/v1/metadata").await.json();
    assert_eq!(
        v["data"],
        json!({"m": [{"type": "gauge", "help": "A test gauge.", "unit": ""}]})
    );
    let v = get(n.addr, "/api/v1/query_exemplars?query=m").await.json();
    assert_eq!(v, json!({"status": "success", "data": []}));
    let v = get(
        n.addr,
        &format!(
            "/api/v1/format_query?{}",
            qs(&[("query", "sum  by(job)(m)")])
        ),
    )
    .await
    .json();
    assert_eq!(v["data"], "sum by (job) (m)");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_and_metrics() {
    let n = fed().await;
    let v = get(n.addr, "/api/v1/status/buildinfo").await.json();
    assert!(v["data"]["version"]
        .as_str()
        .unwrap()
        .starts_with("2.42.0-pharos."));
    let v = get(n.addr, "/api/v1/status/tsdb").await.json();
    assert_eq!(v["data"]["headStats"]["numSeries"], 11);
    assert_eq!(
        v["data"]["seriesCountByMetricName"][0],
        json!({"name": "m", "value": 10})
    );
    assert_eq!(v["data"]["headStats"]["minTime"], 1_000_000_000i64);
    let v = get(n.addr, "/api/v1/status/runtimeinfo").await.json();
    assert_eq!(v["data"]["corruptionCount"], 0);
    assert!(get(n.addr, "/api/v1/status/config").await.json()["data"]["yaml"].is_string());
    assert!(get(n.addr, "/api/v1/status/flags").await.json()["data"].is_object());
    assert_eq!(
        get(n.addr, "/api/v1/rules").await.json()["data"],
        json!({"groups": []})
    );
    assert_eq!(get(n.addr, "/-/healthy").await.status, 200);
    assert_eq!(get(n.addr, "/-/ready").await.status, 200);
    assert_eq!(get(n.addr, "/nope").await.status, 404);
    let m = get(n.addr, "/metrics").await.text();
    assert!(m.contains("pharos_ingest_samples_total 401"), "{m}");
    assert!(m.contains("pharos_head_series 11"), "{m}");
    assert!(
        m.contains(
            r#"pharos_http_request_duration_seconds_count{handler="/api/v1/status/tsdb"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"pharos_remote_write_requests_total{version="1.0",code="204"} 1"#),
        "{m}"
    );
    n.stop().await;
}

/// Data written before a shutdown is there after a restart on the same
/// directory (the WAL is flushed on shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d2 = data.clone();
    let n = node_with(move |c| {
        c.pharos.data_dir = d2;
        c.pharos.wal.fsync = pharos_node::config::FsyncMode::Interval;
        c.pharos.wal.fsync_interval = pharos_node::config::PromDuration(60_000);
    })
    .await;
    let r = write_v1(
        n.addr,
        &write_req(vec![series(&[("__name__", "kept")], &[(5000, 7.0)])]),
    )
    .await;
    assert_eq!(r.status, 204);
    n.stop().await;
    let n = node_with(move |c| c.pharos.data_dir = data).await;
    let v = get(n.addr, "/api/v1/query?query=kept&time=10").await.json();
    assert_eq!(v["data"]["result"][0]["value"], json!([10, "7"]));
    n.stop().await;
}
