//! The `pharos` binary with a Prometheus config that scrapes, evaluates
//! rules and notifies a real Alertmanager 0.25 (Debian's
//! `prometheus-alertmanager`), all on 127.0.0.1: scraped series and `up`
//! are queryable, the recording rule writes, the alert fires in
//! `/api/v1/rules` and `/api/v1/alerts` and reaches Alertmanager once with
//! the external labels; then `/-/reload` rejects a bad config (the running
//! one stays) and applies a changed one (new target scraped, the removed
//! one's series stale). Also the `check`/`test` subcommands.
//!
//! Skipped with a note when Alertmanager is absent, unless
//! `PHAROS_REQUIRE_PEERS=1`, in which case the absence fails the test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_pharos");
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn alertmanager_available() -> bool {
    if Path::new(ALERTMANAGER).exists() {
        return true;
    }
    if std::env::var("PHAROS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{ALERTMANAGER} missing and PHAROS_REQUIRE_PEERS=1");
    }
    eprintln!("SKIP: {ALERTMANAGER} not installed (apt-get install prometheus-alertmanager); set PHAROS_REQUIRE_PEERS=1 to fail instead");
    false
}

async fn wait_for<T, F, Fut>(what: &str, deadline: Instant, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The result vector of an instant query.
async fn query(addr: SocketAddr, q: &str) -> Vec<Value> {
    let r = get(addr, &format!("/api/v1/query?query={}", enc(q))).await;
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    r.json()["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn config(port: u16, am_port: u16, data: &Path, job: &str) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
  external_labels:
    site: it
rule_files:
  - rules/*.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{am_port}']
scrape_configs:
  - job_name: {job}
    static_configs:
      - targets: ['127.0.0.1:{port}']
pharos:
  listen: 127.0.0.1:{port}
  data_dir: {data}
"#,
        data = data.display()
    )
}

const RULES: &str = r#"groups:
  - name: it
    interval: 1s
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: SelfUp
        expr: up{job="self"} == 1
        for: 2s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} is up"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_rules_alertmanager_and_reload() {
    if !alertmanager_available() {
        return;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(38);
    let dir = tempfile::tempdir().unwrap();

    // Alertmanager, grouping quickly.
    let am_addr = free_addr();
    let am_cfg = dir.path().join("am.yml");
    std::fs::write(
        &am_cfg,
        "route:\n  receiver: default\n  group_wait: 1s\nreceivers:\n  - name: default\n",
    )
    .unwrap();
    let _am = Proc(
        Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", am_cfg.display()))
            .arg(format!("--web.listen-address={am_addr}"))
            .arg("--cluster.listen-address=")
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am-data").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Pharos scraping itself; rule files relative to the config's dir.
    let addr = free_addr();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/it.yml"), RULES).unwrap();
    let cfg = dir.path().join("prometheus.yml");
    let data = dir.path().join("data");
    std::fs::write(&cfg, config(addr.port(), am_addr.port(), &data, "self")).unwrap();
    let mut pharos = Proc(
        Command::new(BIN)
            .args(["server", "--web.enable-lifecycle", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("pharos ready", deadline, || async {
        let ok = tokio::net::TcpStream::connect(addr).await.is_ok();
        ok.then_some(())
    })
    .await;
    wait_for("alertmanager ready", deadline, || async {
        if tokio::net::TcpStream::connect(am_addr).await.is_err() {
            return None;
        }
        (get(am_addr, "/-/ready").await.status == 200).then_some(())
    })
    .await;

    // Scraped: `up` and the target's own series, with target labels.
    wait_for("up == 1", deadline, || async {
        let r = query(addr, r#"up{job="self"}"#).await;
        (r.len() == 1 && r[0]["value"][1] == "1").then_some(())
    })
    .await;
    let own = query(addr, r#"count({job="self", __name__=~"pharos_.+"})"#).await;
    assert_eq!(own.len(), 1, "no scraped pharos_* series");
    // The recording rule's output.
    wait_for("job:up:sum", deadline, || async {
        let r = query(addr, r#"job:up:sum{job="self"}"#).await;
        (r.len() == 1 && r[0]["value"][1] == "1").then_some(())
    })
    .await;

    // Targets API with its state filter.
    let t = get(addr, "/api/v1/targets?state=active").await.json();
    let active = t["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{t}");
    assert_eq!(active[0]["labels"]["job"], "self");
    assert_eq!(active[0]["health"], "up");
    assert_eq!(active[0]["scrapeInterval"], "1s");
    let t = get(addr, "/api/v1/targets?state=dropped").await.json();
    assert_eq!(t["data"]["activeTargets"].as_array().unwrap().len(), 0);
    let t = get(addr, "/api/v1/targets?scrapePool=nope").await.json();
    assert_eq!(t["data"]["activeTargets"].as_array().unwrap().len(), 0);
    let t = get(addr, "/api/v1/targets?scrapePool=self").await.json();
    assert_eq!(t["data"]["activeTargets"].as_array().unwrap().len(), 1);
    // Scraped metadata, per target and merged into /api/v1/metadata.
    let m = get(
        addr,
        &format!(
            "/api/v1/targets/metadata?match_target={}&metric=up",
            enc(r#"{job="self"}"#)
        ),
    )
    .await
    .json();
    let md = m["data"].as_array().unwrap();
    assert!(md.is_empty(), "`up` is not exposed by the target: {m}");
    let m = get(
        addr,
        &format!(
            "/api/v1/targets/metadata?match_target={}&metric=pharos_head_series",
            enc(r#"{job="self"}"#)
        ),
    )
    .await
    .json();
    let md = m["data"].as_array().unwrap();
    assert_eq!(md.len(), 1, "{m}");
    assert_eq!(md[0]["type"], "gauge");
    assert_eq!(md[0]["target"]["job"], "self");
    let m = get(addr, "/api/v1/metadata").await.json();
    assert!(
        m["data"]
            .as_object()
            .is_some_and(|o| o.keys().any(|k| k.starts_with("pharos_"))),
        "{m}"
    );

    // The alert goes pending, then fires after `for: 2s`.
    wait_for("SelfUp firing in /api/v1/rules", deadline, || async {
        let r = get(addr, "/api/v1/rules?type=alert").await.json();
        let rules = r["data"]["groups"][0]["rules"].as_array()?.clone();
        assert!(rules.iter().all(|x| x["type"] == "alerting"), "{r}");
        (rules.len() == 1 && rules[0]["state"] == "firing").then_some(())
    })
    .await;
    let rec = get(addr, "/api/v1/rules?type=record").await.json();
    assert_eq!(rec["data"]["groups"][0]["rules"][0]["name"], "job:up:sum");
    let bad = get(addr, "/api/v1/rules?type=bogus").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let a = get(addr, "/api/v1/alerts").await.json();
    let alerts = a["data"]["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{a}");
    assert_eq!(alerts[0]["state"], "firing");
    assert_eq!(alerts[0]["labels"]["alertname"], "SelfUp");

    // Rule and notifier metrics are exposed, and were scraped.
    let m = get(addr, "/metrics").await.text();
    assert!(m.contains("pharos_rules_evaluations_total"), "{m}");
    assert!(m.contains("pharos_notifier_alerts_sent_total"), "{m}");
    assert_eq!(m.matches("# EOF").count(), 1);

    // Alertmanager has it once, with external labels and the generator URL.
    let received = wait_for("the alert in Alertmanager", deadline, || async {
        let r = get(am_addr, "/api/v2/alerts").await;
        let v: Vec<Value> = serde_json::from_slice(&r.body).ok()?;
        (!v.is_empty()).then_some(v)
    })
    .await;
    assert_eq!(received.len(), 1, "{received:?}");
    let al = &received[0];
    assert_eq!(al["labels"]["alertname"], "SelfUp");
    assert_eq!(al["labels"]["site"], "it");
    assert_eq!(al["labels"]["severity"], "page");
    assert_eq!(
        al["annotations"]["summary"],
        format!("127.0.0.1:{} is up", addr.port())
    );
    // Sent once (the next resend is a minute away).
    let m = get(addr, "/metrics").await.text();
    assert!(m.contains("pharos_notifier_alerts_sent_total 1\n"), "{m}");
    let gen = al["generatorURL"].as_str().unwrap();
    assert!(
        gen.starts_with(&format!("http://{addr}/graph?g0.expr=")),
        "{gen}"
    );

    // A bad config is rejected with file, line and field; nothing changes.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace(
            "    static_configs:\n      - targets: ['127.0.0.1",
            "    scrape_intervall: 1s\n    static_configs:\n      - targets: ['127.0.0.1",
        ),
    )
    .unwrap();
    let r = request(addr, "POST", "/-/reload", &[], b"").await;
    assert_eq!(r.status, 500, "{}", r.text());
    let info = get(addr, "/api/v1/status/runtimeinfo").await.json();
    assert_eq!(info["data"]["reloadConfigSuccess"], false, "{info}");
    let m = get(addr, "/metrics").await.text();
    assert!(
        m.contains("pharos_config_last_reload_successful 0\n"),
        "{m}"
    );
    let msg = r.text();
    assert!(msg.contains(&cfg.display().to_string()), "{msg}");
    assert!(msg.contains("scrape_intervall"), "{msg}");
    assert!(msg.contains(":14:"), "line missing: {msg}");
    let shown = get(addr, "/api/v1/status/config").await.json();
    assert!(
        shown["data"]["yaml"]
            .as_str()
            .unwrap()
            .contains("job_name: self"),
        "{shown}"
    );
    // A bad rule file is rejected too.
    std::fs::write(&cfg, &good).unwrap();
    std::fs::write(
        dir.path().join("rules/bad.yml"),
        "groups:\n  - name: b\n    rules:\n      - record: x\n        expr: sum(\n",
    )
    .unwrap();
    let r = request(addr, "POST", "/-/reload", &[], b"").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("bad.yml"), "{}", r.text());
    std::fs::remove_file(dir.path().join("rules/bad.yml")).unwrap();
    let r = query(addr, r#"up{job="self"}"#).await;
    assert_eq!(r.len(), 1, "old target stopped after a rejected reload");

    // Reloading the unchanged file succeeds and keeps the target.
    let r = request(addr, "POST", "/-/reload", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());

    let info = get(addr, "/api/v1/status/runtimeinfo").await.json();
    assert_eq!(info["data"]["reloadConfigSuccess"], true, "{info}");

    // A changed config, applied on SIGHUP: job `self` is replaced by `other`.
    std::fs::write(&cfg, config(addr.port(), am_addr.port(), &data, "other")).unwrap();
    let pid = pharos.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for("the new target scraped", deadline, || async {
        let r = query(addr, r#"up{job="other"}"#).await;
        (r.len() == 1 && r[0]["value"][1] == "1").then_some(())
    })
    .await;
    // The removed target's series are marked stale: gone from instant
    // queries at once, not after the 5m lookback.
    assert!(query(addr, r#"up{job="self"}"#).await.is_empty());
    assert!(query(addr, r#"{job="self", __name__=~"pharos_.+"}"#)
        .await
        .is_empty());
    let t = get(addr, "/api/v1/targets").await.json();
    let active = t["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{t}");
    assert_eq!(active[0]["labels"]["job"], "other");
    let shown = get(addr, "/api/v1/status/config").await.json();
    assert!(shown["data"]["yaml"]
        .as_str()
        .unwrap()
        .contains("job_name: other"));

    // SIGTERM: a clean exit.
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_for("pharos to exit", deadline, || {
        let s = pharos.0.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_needs_the_lifecycle_flag() {
    let n = node().await;
    let r = request(n.addr, "POST", "/-/reload", &[], b"").await;
    assert_eq!(r.status, 403, "{}", r.text());
    // No rules configured: empty answers in Prometheus's shape.
    let r = get(n.addr, "/api/v1/rules").await.json();
    assert_eq!(r["data"]["groups"], serde_json::json!([]));
    let r = get(n.addr, "/api/v1/alerts").await.json();
    assert_eq!(r["data"]["alerts"], serde_json::json!([]));
    let r = get(n.addr, "/api/v1/targets").await.json();
    assert_eq!(r["data"]["activeTargets"], serde_json::json!([]));
    n.stop().await;
}

#[test]
fn check_and_test_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("rules")).unwrap();
    std::fs::write(d.join("rules/good.yml"), RULES).unwrap();
    std::fs::write(
        d.join("bad.yml"),
        "groups:\n  - name: b\n    rules:\n      - record: x\n        expr: sum(\n",
    )
    .unwrap();

    let out = Command::new(BIN)
        .args(["check", "rules"])
        .arg(d.join("rules/good.yml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("SUCCESS: 2 rules found"), "{s}");

    let out = Command::new(BIN)
        .args(["check", "rules"])
        .arg(d.join("bad.yml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("FAILED"), "{e}");
    assert!(e.contains("bad.yml"), "{e}");

    // check config follows rule_files relative to the config's directory.
    let cfg = d.join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global:\n  evaluation_interval: 1s\nrule_files: ['rules/*.yml']\nscrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: ['127.0.0.1:1']\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{s}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.contains("SUCCESS: 1 rule files found"), "{s}");
    assert!(s.contains("is valid prometheus config file syntax"), "{s}");
    assert!(s.contains("SUCCESS: 2 rules found"), "{s}");
    // A bad rule file named by the config fails the config check.
    std::fs::copy(d.join("bad.yml"), d.join("rules/bad.yml")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A bad config names file, line and field.
    std::fs::write(
        &cfg,
        "scrape_configs:\n  - job_name: a\n    scrape_intervall: 1s\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains(&format!("{}:3:", cfg.display())), "{e}");
    assert!(e.contains("scrape_intervall"), "{e}");

    // test rules: one passing and one failing unit test.
    let t = |name: &str, want: &str| {
        let p = d.join(name);
        std::fs::write(
            &p,
            format!(
                "rule_files: ['rules/good.yml']\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n      - series: 'up{{job=\"self\", instance=\"a\"}}'\n        values: '1 1 1'\n    promql_expr_test:\n      - expr: job:up:sum\n        eval_time: 1m\n        exp_samples:\n          - labels: 'job:up:sum{{job=\"self\"}}'\n            value: {want}\n"
            ),
        )
        .unwrap();
        p
    };
    let pass = t("pass.yml", "1");
    let fail = t("fail.yml", "2");
    let out = Command::new(BIN)
        .args(["test", "rules"])
        .arg(&pass)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("SUCCESS"), "{s}");
    let out = Command::new(BIN)
        .args(["test", "rules"])
        .arg(&fail)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));

    // The server refuses to start on a bad rule file, naming it.
    let srv = d.join("srv.yml");
    std::fs::write(
        &srv,
        format!(
            "rule_files: ['bad.yml']\npharos:\n  listen: 127.0.0.1:0\n  data_dir: {}\n",
            d.join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["server", "--config"])
        .arg(&srv)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("bad.yml"), "{e}");

    // Help texts name the subcommands.
    let out = Command::new(BIN)
        .args(["check", "--help"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("rules") && s.contains("config"), "{s}");
    let out = Command::new(BIN)
        .args(["server", "--help"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("--web.enable-lifecycle"), "{s}");
    assert!(s.contains("--web.external-url"), "{s}");
}

/// A reload that changes `external_labels` rebuilds the rule manager and
/// notifier (their options are fixed at construction): alerts carry the
/// new labels in templates, and the rules keep running. Without a running
/// Alertmanager, sends fail and are counted, nothing else breaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_new_external_labels_rebuilds_rules() {
    use pharos_node::config::Config;
    use pharos_node::server::{start, NodeOptions};

    let dir = tempfile::tempdir().unwrap();
    let rules = "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Always\n        expr: vector(1)\n        annotations:\n          site: \"{{ $externalLabels.site }}\"\n";
    std::fs::write(dir.path().join("r.yml"), rules).unwrap();
    let cfg_path = dir.path().join("prometheus.yml");
    let text = |site: &str| {
        format!(
            "global:\n  evaluation_interval: 1s\n  external_labels: {{site: {site}}}\nrule_files: [r.yml]\nalerting:\n  alertmanagers:\n    - static_configs: [{{targets: ['127.0.0.1:1']}}]\npharos:\n  listen: 127.0.0.1:0\n  data_dir: {}\n  web:\n    enable_lifecycle: true\n",
            dir.path().join("data").display()
        )
    };
    std::fs::write(&cfg_path, text("a")).unwrap();
    let t = text("a");
    let node = start(NodeOptions {
        config: Config::parse(&t, &cfg_path).unwrap(),
        config_file: Some((cfg_path.clone(), t)),
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    let addr = node.addr;
    let deadline = Instant::now() + Duration::from_secs(20);
    let site_of_alert = || async {
        let a = get(addr, "/api/v1/alerts").await.json();
        a["data"]["alerts"][0]["annotations"]["site"]
            .as_str()
            .map(str::to_string)
    };
    let first = wait_for("the alert", deadline, site_of_alert).await;
    assert_eq!(first, "a");

    std::fs::write(&cfg_path, text("b")).unwrap();
    let r = request(addr, "POST", "/-/reload", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for("the alert with the new label", deadline, || async {
        (site_of_alert().await.as_deref() == Some("b")).then_some(())
    })
    .await;
    let rules = get(addr, "/api/v1/rules").await.json();
    assert_eq!(rules["data"]["groups"][0]["rules"][0]["name"], "Always");
    // The unreachable Alertmanager shows up as send errors.
    wait_for("notifier errors counted", deadline, || async {
        let m = get(addr, "/metrics").await.text();
        m.lines()
            .any(|l| l.starts_with("pharos_notifier_errors_total ") && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    node.shutdown().await.unwrap();
}
