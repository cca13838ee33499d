//! `/api/v1/rules` and `/api/v1/alerts` answers next to a real Prometheus
//! 2.42 evaluating the same rule file: equal after blanking timings.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pharos_alerting::api::{alerts_data, rules_data, RulesFilter};
use pharos_alerting::eval::{EvalContext, Group};
use pharos_alerting::rules::load_file;
use pharos_query::engine::Engine;
use pharos_storage::head::Head;
use pharos_storage::labels::Labels;
use serde_json::Value;

use crate::peers::find;

const RULES: &str = "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - record: r\n        expr: vector(1)\n      - record: r2\n        expr: r * 2\n        labels:\n          k: v\n      - alert: A\n        expr: vector(2)\n        for: 1m\n        keep_firing_for: 30s\n        labels:\n          sev: x\n        annotations:\n          s: \"v={{ $value }} {{ humanize 1234567 }}\"\n      - alert: B\n        expr: vector(3)\n";

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let body = buf.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// Blanks what depends on timing.
fn blank(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match k.as_str() {
                    "evaluationTime" | "lastEvaluation" | "activeAt" => *x = Value::Null,
                    _ => blank(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(blank),
        _ => {}
    }
}

#[test]
fn rules_and_alerts_answers_match_prometheus() {
    let Some(bin) = find("prometheus", &["/usr/bin/prometheus"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    std::fs::write(
        dir.path().join("prom.yml"),
        "global:\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n",
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _prom = Prometheus(
        Command::new(bin)
            .current_dir(dir.path())
            .arg("--config.file=prom.yml")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait until every rule has been evaluated at least twice, so the
    // recording rule chain has data.
    let deadline = Instant::now() + Duration::from_secs(15);
    let theirs = loop {
        assert!(
            Instant::now() < deadline,
            "prometheus did not evaluate the rules"
        );
        std::thread::sleep(Duration::from_millis(300));
        let Some(v) = get(port, "/api/v1/rules") else {
            continue;
        };
        let ok = v["data"]["groups"][0]["rules"]
            .as_array()
            .is_some_and(|r| r.len() == 4 && r.iter().all(|x| x["health"] == "ok"));
        if ok {
            break v;
        }
    };
    let their_alerts = get(port, "/api/v1/alerts").unwrap();

    let loaded = {
        let p = dir.path().join("rules.yml");
        let mut g = load_file(&p).unwrap();
        // Prometheus reports the path as configured.
        for x in &mut g {
            x.file = "rules.yml".into();
        }
        g
    };
    let head = Head::default();
    let engine = Engine::default();
    let ext = Labels::empty();
    let mut groups: Vec<Group> = loaded.into_iter().map(|g| Group::new(g, 1000)).collect();
    for t in [1_000, 2_000] {
        for g in &mut groups {
            g.set_restored();
            let cx = EvalContext {
                engine: &engine,
                queryable: &head,
                sink: &head,
                external_labels: &ext,
                external_url: "",
            };
            g.eval(t, &cx);
        }
    }
    let mut ours = serde_json::json!({
        "status": "success",
        "data": rules_data(&groups, &RulesFilter::default()),
    });
    let mut our_alerts = serde_json::json!({
        "status": "success",
        "data": alerts_data(&groups),
    });
    let mut theirs = theirs;
    let mut their_alerts = their_alerts;
    for v in [&mut ours, &mut theirs, &mut our_alerts, &mut their_alerts] {
        blank(v);
    }
    assert_eq!(ours, theirs);
    assert_eq!(our_alerts, their_alerts);
}
