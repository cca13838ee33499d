//! End-to-end tests of the manager against an in-process exporter: file_sd
//! changes, staleness on series and target removal, reload rejection, and
//! the targets API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pharos_storage::chunk::is_stale_nan;
use pharos_storage::labels::{Labels, MatchType, Matcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::api::{self, StateFilter};
use super::manager::ScrapeManager;
use super::target::SingleNode;
use crate::sink::{MetricMeta, SinkError, WriteOutcome, WriteSink};

#[derive(Default)]
struct Recorder {
    samples: Mutex<Vec<(Labels, i64, f64)>>,
    meta: Mutex<Vec<(String, MetricMeta)>>,
}

impl WriteSink for Recorder {
    fn write(&self, batch: &[(Labels, i64, f64)]) -> Result<WriteOutcome, SinkError> {
        self.samples.lock().extend_from_slice(batch);
        Ok(WriteOutcome {
            appended: batch.len(),
            rejected: Vec::new(),
        })
    }

    fn write_metadata(&self, entries: Vec<(String, MetricMeta)>) {
        self.meta.lock().extend(entries);
    }

    fn delete(&self, _matchers: &[Matcher], _mint: i64, _maxt: i64) -> Result<u64, SinkError> {
        Ok(0)
    }
}

impl Recorder {
    fn any(&self, f: impl Fn(&Labels, f64) -> bool) -> bool {
        self.samples.lock().iter().any(|(l, _, v)| f(l, *v))
    }
}

/// Serves `body` (with `content_type`) on every request, one response per
/// connection (`Connection: close`) so the client's reconnect path runs too.
async fn exporter(body: Arc<Mutex<String>>, content_type: &'static str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let body = body.lock().clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sd_scrape_staleness_and_reload() {
    let body = Arc::new(Mutex::new(
        "# TYPE a gauge\n# HELP a Help of a.\na{x=\"1\"} 1\nb 2\ndropped_metric 3\n".to_string(),
    ));
    let addr = exporter(Arc::clone(&body), "text/plain; version=0.0.4").await;
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("targets.json");
    std::fs::write(
        &sd,
        format!(
            r#"[{{"targets": ["{addr}"], "labels": {{"env": "test"}}}}, {{"targets": ["skip:1"]}}]"#
        ),
    )
    .unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        r#"
global:
  scrape_interval: 100ms
scrape_configs:
  - job_name: e2e
    file_sd_configs:
      - files: ['*.json']
    relabel_configs:
      - source_labels: [__address__]
        regex: 'skip:.*'
        action: drop
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: dropped_.*
        action: drop
"#,
    )
    .unwrap();
    let rec = Arc::new(Recorder::default());
    let m = ScrapeManager::new(Arc::clone(&rec) as Arc<dyn WriteSink>, Arc::new(SingleNode));
    m.reload_file(&cfg).unwrap();

    let is = |l: &Labels, name: &str| l.metric_name() == Some(name);
    wait_for("up == 1", || rec.any(|l, v| is(l, "up") && v == 1.0)).await;
    assert!(rec.any(|l, v| is(l, "a")
        && v == 1.0
        && l.get("env") == Some("test")
        && l.get("job") == Some("e2e")));
    assert!(!rec.any(|l, _| is(l, "dropped_metric")));
    assert!(rec.any(|l, v| is(l, "scrape_samples_scraped") && v == 3.0));
    assert!(rec.any(|l, v| is(l, "scrape_samples_post_metric_relabeling") && v == 2.0));
    assert!(rec
        .meta
        .lock()
        .iter()
        .any(|(n, m)| n == "a" && m.kind == "gauge"));

    let t = api::targets(&m, StateFilter::Any, None);
    assert_eq!(t.active_targets.len(), 1);
    assert_eq!(t.dropped_targets.len(), 1);
    let at = &t.active_targets[0];
    assert_eq!(at.health, "up");
    assert_eq!(at.scrape_url, format!("http://{addr}/metrics"));
    assert_eq!(at.labels["instance"], addr);
    assert_eq!(at.scrape_interval, "100ms");
    let md = api::targets_metadata(
        &m,
        &[Matcher::new(MatchType::Equal, "job", "e2e").unwrap()],
        Some("a"),
        None,
    );
    assert_eq!(md.len(), 1);
    assert_eq!(md[0].help, "Help of a.");
    assert!(api::targets_metadata(
        &m,
        &[Matcher::new(MatchType::Equal, "job", "nope").unwrap()],
        None,
        None
    )
    .is_empty());

    // A series disappears from the target: it gets a staleness marker.
    *body.lock() = "a{x=\"1\"} 1\n".to_string();
    wait_for("b stale", || rec.any(|l, v| is(l, "b") && is_stale_nan(v))).await;

    // A bad config is refused with file, line and field; the old one stays.
    std::fs::write(
        &cfg,
        "scrape_configs:\n  - job_name: e2e\n    scrape_interval: 1s\n    scrape_timeout: 5s\n",
    )
    .unwrap();
    let err = m.reload_file(&cfg).unwrap_err().to_string();
    assert!(err.contains("prometheus.yml:4"), "{err}");
    assert!(err.contains("scrape_timeout"), "{err}");
    assert_eq!(m.settings().jobs[0].file_sd_configs.len(), 1);

    // The target leaves the file: its series and report series go stale.
    std::fs::write(&sd, "[]").unwrap();
    wait_for("a stale", || rec.any(|l, v| is(l, "a") && is_stale_nan(v))).await;
    wait_for("up stale", || {
        rec.any(|l, v| is(l, "up") && is_stale_nan(v))
    })
    .await;
    wait_for("no active targets", || {
        api::targets(&m, StateFilter::Active, None)
            .active_targets
            .is_empty()
    })
    .await;
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_target_and_openmetrics() {
    let body = Arc::new(Mutex::new(
        "# TYPE c counter\nc_total 5 # {trace_id=\"t\"} 1\n# EOF\n".to_string(),
    ));
    let addr = exporter(
        body,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )
    .await;
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let yaml = format!(
        "scrape_configs:\n  - job_name: om\n    scrape_interval: 100ms\n    static_configs:\n      - targets: ['{addr}', '{dead}']\n"
    );
    let f = super::config::ScrapeFile::parse(&yaml, Path::new("p.yml")).unwrap();
    let rec = Arc::new(Recorder::default());
    let m = ScrapeManager::new(Arc::clone(&rec) as Arc<dyn WriteSink>, Arc::new(SingleNode));
    m.apply(f.settings(Path::new("p.yml")));
    let is = |l: &Labels, name: &str| l.metric_name() == Some(name);
    wait_for("c_total", || rec.any(|l, v| is(l, "c_total") && v == 5.0)).await;
    let snap = m.snapshot();
    let ex: Vec<_> = snap[0]
        .active
        .iter()
        .flat_map(|a| a.status.exemplars.clone())
        .collect();
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!(ex[0].series.metric_name(), Some("c_total"));
    assert_eq!(ex[0].labels.get("trace_id"), Some("t"));
    assert_eq!(ex[0].value, 1.0);
    wait_for("dead up == 0", || {
        rec.any(|l, v| is(l, "up") && v == 0.0 && l.get("instance") == Some(dead.as_str()))
    })
    .await;
    wait_for("health", || {
        let t = api::targets(&m, StateFilter::Active, Some("om"));
        t.active_targets
            .iter()
            .any(|a| a.health == "down" && !a.last_error.is_empty())
            && t.active_targets.iter().any(|a| a.health == "up")
    })
    .await;
    // Removing the job marks everything stale.
    m.apply(Default::default());
    wait_for("c_total stale", || {
        rec.any(|l, v| is(l, "c_total") && is_stale_nan(v))
    })
    .await;
    m.shutdown().await;
}

#[tokio::test]
async fn target_limit_and_keep_dropped_targets() {
    let yaml = "scrape_configs:\n  - job_name: l\n    target_limit: 1\n    keep_dropped_targets: 1\n    static_configs:\n      - targets: ['a:1', 'b:1', 'x:1', 'y:1']\n    relabel_configs:\n      - source_labels: [__address__]\n        regex: '[xy]:1'\n        action: drop\n";
    let f = super::config::ScrapeFile::parse(yaml, Path::new("p.yml")).unwrap();
    let rec = Arc::new(Recorder::default());
    let m = ScrapeManager::new(rec as Arc<dyn WriteSink>, Arc::new(SingleNode));
    m.apply(f.settings(Path::new("p.yml")));
    let snap = m.snapshot();
    assert!(snap[0].active.is_empty());
    assert_eq!(snap[0].dropped.len(), 1);
    assert!(
        snap[0].errors[0].contains("target_limit exceeded"),
        "{:?}",
        snap[0].errors
    );
    m.shutdown().await;
}
