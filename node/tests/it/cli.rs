//! The `pharos` binary: help texts, the cluster launcher's flags, config errors,
//! and a start/SIGTERM cycle that flushes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pharos");

#[test]
fn help_explains_every_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for w in ["server", "cluster", "--log.level"] {
        assert!(s.contains(w), "{w} missing from:\n{s}");
    }
    let out = Command::new(BIN)
        .args(["server", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for w in [
        "--listen",
        "--data-dir",
        "--config",
        "--web.config.file",
        "--web.enable-admin-api",
        "--storage.tsdb.retention.time",
        "127.0.0.1:9090",
        "./data",
    ] {
        assert!(s.contains(w), "{w} missing from:\n{s}");
    }
}

#[test]
fn cluster_flags_are_explained_and_checked() {
    let out = Command::new(BIN)
        .args(["cluster", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for w in ["--nodes", "--data-dir", "--base-port", "status"] {
        assert!(s.contains(w), "{w} missing from:\n{s}");
    }
    let out = Command::new(BIN)
        .args(["cluster", "--nodes", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--nodes must be at least 1"), "{e}");
}

#[test]
fn bad_config_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yml");
    std::fs::write(
        &p,
        "global:\n  scrape_interval: 15s\npharos:\n  listen: 127.0.0.1:0\n  data_dri: x\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["server", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains(&format!("{}:5:", p.display())), "{e}");
    assert!(e.contains("data_dri"), "{e}");
}

#[cfg(unix)]
#[test]
fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A Prometheus section Pharos does not act on is accepted with a warning.
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global:\n  scrape_interval: 15s\nremote_read:\n  - url: http://127.0.0.1:1/read\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "server",
            // Prometheus's own flag names work as aliases.
            "--web.listen-address",
            &format!("127.0.0.1:{port}"),
            "--storage.tsdb.retention.time",
            "30d",
            "--storage.tsdb.path",
        ])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id();
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("storage flushed"), "{err}");
    assert!(
        err.contains("not acted on") && err.contains("remote_read"),
        "{err}"
    );
    assert!(dir.path().join("data").join("wal").exists());
}
