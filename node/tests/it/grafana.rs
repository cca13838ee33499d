//! Grafana's Prometheus data source, replayed: the requests it makes on
//! "Save & test", in the query editor and for a time-series panel, with the
//! shapes of answers it parses.

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_data_source_requests() {
    let n = node().await;
    // 20 minutes of two scrape-like series, every 15 s, ending "now".
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start = now_s - 1200;
    let mut ts = Vec::new();
    for (inst, base) in [("a:9100", 0.0), ("b:9100", 100.0)] {
        let samples: Vec<(i64, f64)> = (0..=80)
            .map(|k| ((start + k * 15) * 1000, base + k as f64))
            .collect();
        ts.push(series(
            &[
                ("__name__", "node_cpu_seconds_total"),
                ("instance", inst),
                ("job", "node"),
            ],
            &samples,
        ));
    }
    let mut req = write_req(ts);
    req.metadata.push(pharos_proto::prometheus::MetricMetadata {
        r#type: 1,
        metric_family_name: "node_cpu_seconds_total".into(),
        help: "Seconds the CPUs spent in each mode.".into(),
        unit: String::new(),
    });
    assert_eq!(write_v1(n.addr, &req).await.status, 204);
    let ua = ("User-Agent", "Grafana/11.3.0");

    // "Save & test": buildinfo probe, then an instant `1+1` as form POST.
    let r = request(n.addr, "GET", "/api/v1/status/buildinfo", &[ua], b"").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "success");
    let version = v["data"]["version"].as_str().unwrap();
    let core: Vec<u32> = version
        .split('-')
        .next()
        .unwrap()
        .split('.')
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(core >= vec![2, 42, 0], "{version}");
    let now = now_s.to_string();
    let body = qs(&[("query", "1+1"), ("time", &now)]);
    let r = request(
        n.addr,
        "POST",
        "/api/v1/query",
        &[ua, ("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["data"],
        json!({"resultType": "scalar", "result": [now_s, "2"]})
    );

    // Query editor: label names, metric names, series for a selector, metadata.
    let (s, e) = ((now_s - 3600).to_string(), now.clone());
    let r = get(
        n.addr,
        &format!("/api/v1/labels?{}", qs(&[("start", &s), ("end", &e)])),
    )
    .await;
    assert_eq!(r.json()["data"], json!(["__name__", "instance", "job"]));
    let r = get(
        n.addr,
        &format!(
            "/api/v1/label/__name__/values?{}",
            qs(&[("start", &s), ("end", &e)])
        ),
    )
    .await;
    assert_eq!(r.json()["data"], json!(["node_cpu_seconds_total"]));
    let r = get(
        n.addr,
        &format!(
            "/api/v1/label/instance/values?{}",
            qs(&[
                ("match[]", "node_cpu_seconds_total{job=\"node\"}"),
                ("start", &s),
                ("end", &e)
            ])
        ),
    )
    .await;
    assert_eq!(r.json()["data"], json!(["a:9100", "b:9100"]));
    let r = get(
        n.addr,
        &format!(
            "/api/v1/series?{}",
            qs(&[
                ("match[]", "node_cpu_seconds_total"),
                ("start", &s),
                ("end", &e)
            ])
        ),
    )
    .await;
    assert_eq!(
        r.json()["data"],
        json!([
            {"__name__": "node_cpu_seconds_total", "instance": "a:9100", "job": "node"},
            {"__name__": "node_cpu_seconds_total", "instance": "b:9100", "job": "node"}
        ])
    );
    let r = get(n.addr, "/api/v1/metadata").await;
    assert_eq!(
        r.json()["data"]["node_cpu_seconds_total"][0]["type"],
        "counter"
    );

    // A panel: range query as form POST, start/end aligned to the step.
    let step = 60;
    let (qs_, qe) = ((start / step) * step + step, (now_s / step) * step);
    let body = qs(&[
        ("query", "rate(node_cpu_seconds_total[5m])"),
        ("start", &qs_.to_string()),
        ("end", &qe.to_string()),
        ("step", &step.to_string()),
    ]);
    let r = request(
        n.addr,
        "POST",
        "/api/v1/query_range",
        &[ua, ("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"]["resultType"], "matrix");
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    for s in result {
        assert!(s["metric"].get("__name__").is_none());
        let values = s["values"].as_array().unwrap();
        assert!(values.len() >= 15, "{}", values.len());
        for p in values {
            let t = p[0].as_i64().unwrap();
            assert_eq!(t % step, 0);
            if t < start + 330 {
                // The 5m window is not yet full of data: extrapolation
                // gives less, as in Prometheus.
                continue;
            }
            // One increment per 15 s.
            let rate: f64 = p[1].as_str().unwrap().parse().unwrap();
            assert!((rate - 1.0 / 15.0).abs() < 1e-9, "{p}");
        }
    }
    n.stop().await;
}
