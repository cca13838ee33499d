//! Rules → notifier → a real Alertmanager 0.25 (Debian's
//! `prometheus-alertmanager`) on a free loopback port: the alert appears
//! once with its labels and annotations, survives a RuleManager restart
//! without re-pending, and disappears when resolved. Also the restart
//! semantics of `for` with a fake clock.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pharos_alerting::eval::{
    AlertState, AlwaysLeader, Clock, LeaderCheck, ManagerOptions, RuleManager, RuleState,
    SystemClock,
};
use pharos_alerting::notifier::{AlertingConfig, AlertmanagerConfig, Notifier, NotifierOptions};
use pharos_storage::head::Head;
use pharos_storage::labels::Labels;

use crate::peers::find;

struct Alertmanager {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Alertmanager {
    fn start(bin: &Path) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("am.yml");
        std::fs::write(
            &cfg,
            "route:\n  receiver: default\n  group_wait: 1s\nreceivers:\n  - name: default\n",
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            // Served under a prefix, so `path_prefix` is exercised.
            .arg("--web.route-prefix=/am")
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let am = Alertmanager {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(http_get(port, "/am/-/ready"), Some((200, _))) {
                return am;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("alertmanager did not become ready on port {port}");
    }

    fn alerts(&self) -> Vec<serde_json::Value> {
        let (status, body) = http_get(self.port, "/am/api/v2/alerts").expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// A minimal HTTP/1.0 GET (the test needs no client library).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The notifier's targets, from the config section as a user writes it.
fn alerting_config(port: u16) -> Vec<AlertmanagerConfig> {
    let yaml = format!(
        "alertmanagers:\n  - path_prefix: /am/\n    timeout: 5s\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    );
    let cfg: AlertingConfig = serde_yaml::from_str(&yaml).unwrap();
    cfg.resolve().unwrap()
}

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn manager(
    head: &Arc<Head>,
    notifier: Option<Arc<Notifier>>,
    clock: Arc<dyn Clock>,
    grace_ms: i64,
) -> Arc<RuleManager> {
    let leader: Arc<dyn LeaderCheck> = Arc::new(AlwaysLeader);
    RuleManager::new(
        ManagerOptions {
            default_interval_ms: 1000,
            external_labels: Labels::from_pairs([("cluster", "test")]),
            external_url: "http://pharos.test:9090".into(),
            for_grace_period_ms: grace_ms,
            ..ManagerOptions::default()
        },
        head.clone(),
        head.clone(),
        leader,
        clock,
        notifier,
    )
}

fn firing_active_at(m: &RuleManager) -> Option<i64> {
    m.groups()
        .iter()
        .flat_map(|g| g.rules.clone())
        .find_map(|r| match r.state {
            RuleState::Alerting(a) => a
                .active_alerts()
                .first()
                .filter(|x| x.state == AlertState::Firing)
                .map(|x| x.active_at),
            RuleState::Recording => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_reaches_alertmanager_once_survives_restart_and_resolves() {
    let Some(bin) = find(
        "prometheus-alertmanager",
        &["/usr/bin/prometheus-alertmanager"],
    ) else {
        return;
    };
    let am = tokio::task::spawn_blocking(move || Alertmanager::start(&bin))
        .await
        .unwrap();
    let head = Arc::new(Head::default());

    // The watched metric, written every 100ms with wall-clock timestamps.
    let value = Arc::new(AtomicU64::new(1f64.to_bits()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (head, value, stop) = (head.clone(), value.clone(), stop.clone());
        std::thread::spawn(move || {
            let l = Labels::from_pairs([("__name__", "test_metric"), ("instance", "i1")]);
            while !stop.load(Ordering::Relaxed) {
                let v = f64::from_bits(value.load(Ordering::Relaxed));
                let _ = head.append(&l, SystemClock.now_ms(), v);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: it\n    interval: 1s\n    rules:\n      - alert: TestAlert\n        expr: test_metric > 0\n        for: 2s\n        labels:\n          severity: page\n        annotations:\n          summary: \"{{ $labels.instance }} has value {{ $value }}\"\n",
    )
    .unwrap();
    let glob = format!("{}/*.yml", dir.path().display());

    let leader: Arc<dyn LeaderCheck> = Arc::new(AlwaysLeader);
    let notifier = Notifier::new(
        NotifierOptions {
            external_labels: Labels::from_pairs([("cluster", "test")]),
            ..NotifierOptions::default()
        },
        alerting_config(am.port),
        leader,
    );
    let send_task = tokio::spawn(notifier.clone().run());

    let started = Instant::now();
    let m1 = manager(&head, Some(notifier.clone()), Arc::new(SystemClock), 0);
    m1.load(std::slice::from_ref(&glob)).unwrap();
    m1.start().unwrap();

    let am = Arc::new(am);
    let am2 = am.clone();
    let alerts = tokio::task::spawn_blocking(move || {
        wait_until("the alert in Alertmanager", 15, || {
            let a = am2.alerts();
            (!a.is_empty()).then_some(a)
        })
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "fired before `for` elapsed"
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a["labels"]["alertname"], "TestAlert");
    assert_eq!(a["labels"]["instance"], "i1");
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["labels"]["cluster"], "test");
    assert_eq!(a["annotations"]["summary"], "i1 has value 1");
    assert_eq!(a["status"]["state"], "active");
    assert!(a["generatorURL"]
        .as_str()
        .unwrap()
        .starts_with("http://pharos.test:9090/graph?g0.expr=test_metric+%3E+0"));
    let original_active = firing_active_at(&m1).expect("m1 has a firing alert");

    // Restart the rule manager while the alert fires: the new one restores
    // the alert from ALERTS_FOR_STATE, so it fires at once with the old
    // ActiveAt instead of going pending again.
    m1.stop();
    drop(m1);
    let m2 = manager(&head, Some(notifier.clone()), Arc::new(SystemClock), 0);
    m2.load(std::slice::from_ref(&glob)).unwrap();
    m2.start().unwrap();
    let m2c = m2.clone();
    let restored = tokio::task::spawn_blocking(move || {
        // Restored after its first evaluation, firing at the second.
        wait_until("m2 to fire", 5, || firing_active_at(&m2c))
    })
    .await
    .unwrap();
    assert_eq!(
        restored,
        original_active / 1000 * 1000,
        "the restarted manager must fire at once with the restored ActiveAt"
    );
    let am2 = am.clone();
    let after = tokio::task::spawn_blocking(move || am2.alerts())
        .await
        .unwrap();
    assert_eq!(after.len(), 1, "still exactly one alert: {after:#?}");
    assert_eq!(after[0]["fingerprint"], alerts[0]["fingerprint"]);

    // Resolve: the notifier sends endsAt and Alertmanager drops the alert
    // from its active list.
    value.store(0f64.to_bits(), Ordering::Relaxed);
    let am2 = am.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the alert to resolve in Alertmanager", 15, || {
            am2.alerts().is_empty().then_some(())
        })
    })
    .await
    .unwrap();
    m2.stop();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    send_task.abort();
    assert_eq!(notifier.stats.errors.get(), 0);
    assert_eq!(notifier.stats.dropped.get(), 0);
    assert!(notifier.stats.sent.get() >= 2);
}

/// A clock the test moves by hand.
struct FakeClock(AtomicU64);

impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed) as i64
    }
}

#[test]
fn restart_mid_for_keeps_the_original_schedule() {
    let head = Arc::new(Head::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yml"),
        "groups:\n  - name: g\n    interval: 1m\n    rules:\n      - alert: Slow\n        expr: m > 0\n        for: 10m\n",
    )
    .unwrap();
    let glob = vec![format!("{}/r.yml", dir.path().display())];
    let l = Labels::from_pairs([("__name__", "m")]);
    let base = 1_700_000_000_000i64;
    let clock = Arc::new(FakeClock(AtomicU64::new(base as u64)));
    let min = 60_000;
    let step = |m: &RuleManager, i: i64| {
        head.append(&l, base + i * min, 1.0).unwrap();
        m.eval_all_at(base + i * min);
    };
    let m1 = manager(&head, None, clock.clone(), 0);
    m1.load(&glob).unwrap();
    for i in 0..=4 {
        step(&m1, i);
    }
    // The first evaluation is the one that restores; it is at 0 here.
    drop(m1);
    // Restarted one evaluation later: the 4 minutes spent pending count,
    // only the one evaluation of downtime is added (Prometheus's rule).
    let m2 = manager(&head, None, clock.clone(), 0);
    m2.load(&glob).unwrap();
    for i in 5..=10 {
        step(&m2, i);
        assert_eq!(firing_active_at(&m2), None, "fired early at {i}m");
    }
    step(&m2, 11);
    assert_eq!(
        firing_active_at(&m2),
        Some(base + min),
        "fires at 11m, not 15m as a restarted timer would"
    );

    // A `for` shorter than the grace period is not restored (Prometheus
    // would rather restart it than make it wait for `for` + grace).
    let m3 = manager(&head, None, clock, 900_000);
    m3.load(&glob).unwrap();
    step(&m3, 12);
    let g = m3.groups();
    let RuleState::Alerting(a) = &g[0].rules[0].state else {
        panic!("alerting rule expected")
    };
    assert_eq!(a.active_alerts()[0].state, AlertState::Pending);
}
