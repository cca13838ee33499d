//! `pharos cluster`: a local cluster of `pharos server` child processes on
//! loopback, and `pharos cluster status`, which prints a cluster's nodes
//! and shards from its HTTP API.
//!
//! Owns: the child processes' command lines, ports and directories, their
//! supervision and their shutdown. Must not: restart a child (a node that
//! exits is reported loudly and the others are stopped: a silent restart
//! would hide crashes), or share anything with the children beyond their
//! flags.
//!
//! Layout for `--nodes N --data-dir DIR --base-port P`: node `i` (1..=N)
//! has id `i`, data in `DIR/node-i`, its log in `DIR/node-i.log`, HTTP on
//! `127.0.0.1:P+i-1` and gRPC on `127.0.0.1:P+1000+i-1` ([`http_port`],
//! [`grpc_port`]). Node 1 bootstraps; the others join through it; all
//! expect N members before the shard map is created. Children run in their
//! own process group (a terminal's Ctrl-C reaches only the launcher, which
//! stops them in order) and, on Linux, get SIGTERM if the launcher dies.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// gRPC ports are the HTTP ports plus this.
pub const GRPC_PORT_OFFSET: u16 = 1000;
/// How long children get to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the launcher waits for every node to report ready before it
/// says so (it keeps supervising either way).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Log lines of a failed child shown on the terminal.
const LOG_TAIL_LINES: usize = 20;

/// What `pharos cluster` starts.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    pub nodes: u32,
    pub data_dir: PathBuf,
    pub base_port: u16,
    /// A config file passed to every node (`--config`).
    pub config: Option<PathBuf>,
    /// `--log.level` for the children.
    pub log_level: String,
}

/// Node `i`'s HTTP port.
pub fn http_port(base: u16, i: u32) -> u16 {
    base + (i as u16 - 1)
}

/// Node `i`'s gRPC port.
pub fn grpc_port(base: u16, i: u32) -> u16 {
    base + GRPC_PORT_OFFSET + (i as u16 - 1)
}

/// Why the launcher stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Usage(String),
    #[error("port {port} on 127.0.0.1 is in use ({what}); pick another --base-port")]
    PortInUse { port: u16, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node {node} exited unexpectedly ({status}); the other nodes were stopped")]
    ChildExited { node: u32, status: String },
}

struct Node {
    id: u32,
    child: Child,
    log: PathBuf,
}

/// Runs the cluster until SIGINT/SIGTERM (then stops every node and
/// returns `Ok`) or until a node exits (then stops the others and returns
/// [`LaunchError::ChildExited`]).
pub fn run(opts: &LaunchOptions) -> Result<(), LaunchError> {
    check_layout(opts)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LaunchError::Io { path, source }
    };
    std::fs::create_dir_all(&opts.data_dir).map_err(io(&opts.data_dir))?;
    let exe = std::env::current_exe().map_err(io(Path::new("<current executable>")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io(Path::new("<runtime>")))?;
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=opts.nodes {
        match spawn_node(&exe, opts, i) {
            Ok(n) => nodes.push(n),
            Err(e) => {
                stop_all(&mut nodes);
                return Err(e);
            }
        }
    }
    println!(
        "pharos cluster: {} nodes (data in {}; node 1 bootstraps, the others join it)",
        opts.nodes,
        opts.data_dir.display()
    );
    for n in &nodes {
        println!(
            "  node {}: http://127.0.0.1:{}  grpc 127.0.0.1:{}  data {}  log {}",
            n.id,
            http_port(opts.base_port, n.id),
            grpc_port(opts.base_port, n.id),
            opts.data_dir.join(format!("node-{}", n.id)).display(),
            n.log.display()
        );
    }
    let _ = std::io::stdout().flush();
    let result = rt.block_on(supervise(&mut nodes, opts));
    stop_all(&mut nodes);
    result
}

fn check_layout(opts: &LaunchOptions) -> Result<(), LaunchError> {
    if opts.nodes == 0 {
        return Err(LaunchError::Usage("--nodes must be at least 1".into()));
    }
    let last = u32::from(opts.base_port) + u32::from(GRPC_PORT_OFFSET) + opts.nodes - 1;
    if opts.base_port == 0 || last > u32::from(u16::MAX) {
        return Err(LaunchError::Usage(format!(
            "--base-port {} with {} nodes needs ports up to {last}",
            opts.base_port, opts.nodes
        )));
    }
    for i in 1..=opts.nodes {
        for (port, what) in [
            (http_port(opts.base_port, i), format!("node {i} HTTP")),
            (grpc_port(opts.base_port, i), format!("node {i} gRPC")),
        ] {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(LaunchError::PortInUse { port, what });
            }
        }
    }
    Ok(())
}

fn spawn_node(exe: &Path, opts: &LaunchOptions, i: u32) -> Result<Node, LaunchError> {
    let data = opts.data_dir.join(format!("node-{i}"));
    let log = opts.data_dir.join(format!("node-{i}.log"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LaunchError::Io { path, source }
    };
    let out = File::options()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(io(&log))?;
    let err = out.try_clone().map_err(io(&log))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--log.level")
        .arg(&opts.log_level)
        .arg("server")
        .arg("--node-id")
        .arg(i.to_string())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", http_port(opts.base_port, i)))
        .arg("--grpc-listen")
        .arg(format!("127.0.0.1:{}", grpc_port(opts.base_port, i)))
        .arg("--data-dir")
        .arg(&data)
        .arg("--expect-nodes")
        .arg(opts.nodes.to_string());
    if i > 1 {
        cmd.arg("--join")
            .arg(format!("127.0.0.1:{}", grpc_port(opts.base_port, 1)));
    }
    if let Some(c) = &opts.config {
        cmd.arg("--config").arg(c);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; it runs in the forked child before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().map_err(io(exe))?;
    Ok(Node { id: i, child, log })
}

async fn supervise(nodes: &mut [Node], opts: &LaunchOptions) -> Result<(), LaunchError> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| LaunchError::Io {
            path: "<signal handler>".into(),
            source: e,
        })?;
    let started = Instant::now();
    let mut ready_reported = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        #[cfg(unix)]
        let signal = async { term.recv().await };
        #[cfg(not(unix))]
        let signal = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                println!("pharos cluster: interrupted; stopping the nodes");
                return Ok(());
            }
            _ = signal => {
                println!("pharos cluster: SIGTERM; stopping the nodes");
                return Ok(());
            }
            _ = tick.tick() => {}
        }
        for n in nodes.iter_mut() {
            if let Ok(Some(status)) = n.child.try_wait() {
                report_exit(n, status);
                return Err(LaunchError::ChildExited {
                    node: n.id,
                    status: status.to_string(),
                });
            }
        }
        if !ready_reported {
            let base = opts.base_port;
            let ready = tokio::task::spawn_blocking({
                let ids: Vec<u32> = nodes.iter().map(|n| n.id).collect();
                move || {
                    ids.iter().all(|&i| {
                        matches!(
                            http_get(
                                &format!("127.0.0.1:{}", http_port(base, i)),
                                "/-/ready",
                                Duration::from_millis(500)
                            ),
                            Ok((200, _))
                        )
                    })
                }
            })
            .await
            .unwrap_or(false);
            if ready {
                println!(
                    "pharos cluster: all {} nodes ready ({:.1}s). `pharos cluster status --url http://127.0.0.1:{}` shows them; Ctrl-C stops them.",
                    nodes.len(),
                    started.elapsed().as_secs_f64(),
                    opts.base_port
                );
                let _ = std::io::stdout().flush();
                ready_reported = true;
            } else if started.elapsed() > READY_TIMEOUT {
                eprintln!(
                    "pharos cluster: not every node is ready after {READY_TIMEOUT:?}; see the node logs"
                );
                ready_reported = true;
            }
        }
    }
}

fn report_exit(n: &Node, status: ExitStatus) {
    eprintln!();
    eprintln!(
        "!!! pharos cluster: node {} exited unexpectedly ({status}).",
        n.id
    );
    eprintln!("!!! Nothing is restarted; stopping the other nodes.");
    eprintln!("!!! Last lines of {}:", n.log.display());
    for line in tail(&n.log, LOG_TAIL_LINES) {
        eprintln!("    {line}");
    }
}

fn tail(path: &Path, lines: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// SIGTERM to every running child, then waits; SIGKILL after
/// [`STOP_TIMEOUT`].
fn stop_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        if matches!(n.child.try_wait(), Ok(None)) {
            signal(&n.child, Signal::Term);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for n in nodes.iter_mut() {
        loop {
            match n.child.try_wait() {
                Ok(Some(s)) => {
                    println!("pharos cluster: node {} stopped ({s})", n.id);
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    eprintln!(
                        "pharos cluster: node {} did not stop within {STOP_TIMEOUT:?}; killing it",
                        n.id
                    );
                    signal(&n.child, Signal::Kill);
                    let _ = n.child.wait();
                    break;
                }
                Err(e) => {
                    eprintln!("pharos cluster: waiting for node {}: {e}", n.id);
                    break;
                }
            }
        }
    }
}

enum Signal {
    Term,
    Kill,
}

fn signal(child: &Child, s: Signal) {
    #[cfg(unix)]
    {
        let sig = match s {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return;
        };
        // SAFETY: kill(2) takes plain integers; the pid is our unreaped
        // child, so it cannot have been recycled for another process.
        unsafe {
            libc::kill(pid, sig);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (child, s);
    }
}

/// A plain HTTP/1.1 GET (`Connection: close`): status and body. `addr` is
/// `host:port`.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("{addr}: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{addr}: malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}: malformed status line"))?;
    let mut body = raw[split + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| format!("{addr}: malformed chunked body"))?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..nl]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// `host:port` of an `http://host:port[/]` URL.
fn host_port(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let hp = rest.trim_end_matches('/');
    if hp.is_empty() || hp.contains('/') {
        return Err(format!("{url}: expected http://host:port"));
    }
    Ok(if hp.contains(':') {
        hp.to_string()
    } else {
        format!("{hp}:80")
    })
}

fn api(addr: &str, path: &str) -> Result<Value, String> {
    let (code, body) = http_get(addr, path, Duration::from_secs(5))?;
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| format!("{path}: HTTP {code}, not JSON ({e}): {body}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "{path}: {} ({})",
            v["error"].as_str().unwrap_or("unknown error"),
            v["errorType"].as_str().unwrap_or("?")
        ));
    }
    Ok(v["data"].clone())
}

/// `pharos cluster status`: the nodes and a shard summary, as text.
pub fn status_text(url: &str) -> Result<String, String> {
    let addr = host_port(url)?;
    let status = api(&addr, "/api/v1/cluster/status")?;
    let nodes = api(&addr, "/api/v1/cluster/nodes")?;
    let mut out = String::new();
    let leader = status["leader"]
        .as_u64()
        .map_or("none".to_string(), |l| format!("node {l}"));
    let _ = writeln!(
        out,
        "Cluster seen from {url} (node {}): leader {leader}, term {}, commit index {}, applied index {}",
        status["node_id"], status["term"], status["commit_index"], status["applied_index"]
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<6}{:<24}{:<10}{:<9}{:<8}{:>10}{:>11}",
        "NODE", "ADDRESS", "STATE", "ROLE", "LEADER", "REPLICAS", "PRIMARIES"
    );
    for n in nodes.as_array().into_iter().flatten() {
        let me = if n["this_node"] == true {
            " (this node)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<6}{:<24}{:<10}{:<9}{:<8}{:>10}{:>11}{me}",
            n["id"].to_string(),
            n["addr"].as_str().unwrap_or("?"),
            n["state"].as_str().unwrap_or("?"),
            n["role"].as_str().unwrap_or("?"),
            if n["is_leader"] == true { "*" } else { "" },
            n["replicas"].to_string(),
            n["primaries"].to_string(),
        );
    }
    let _ = writeln!(out);
    match api(&addr, "/api/v1/cluster/shards") {
        Ok(m) => {
            let active = nodes
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["state"] == "active")
                .count() as u64;
            let want = m["replication_factor"].as_u64().unwrap_or(0).min(active);
            let (mut full, mut under, mut pending) = (0, 0, 0);
            for a in m["assignments"].as_array().into_iter().flatten() {
                let r = a["replicas"].as_array().map_or(0, |r| r.len()) as u64;
                if r >= want {
                    full += 1;
                } else {
                    under += 1;
                }
                pending += a["pending"].as_array().map_or(0, |p| p.len());
            }
            let _ = writeln!(
                out,
                "Shards: {} (replication factor {}, placement by {}), map version {}",
                m["shards"],
                m["replication_factor"],
                m["placement_labels"]
                    .as_array()
                    .map(|l| l
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join("+"))
                    .unwrap_or_default(),
                m["version"]
            );
            let _ = writeln!(
                out,
                "  {full} with {want} up-to-date replicas, {under} under-replicated, {pending} replica copies pending"
            );
        }
        Err(e) => {
            let _ = writeln!(out, "Shards: {e}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_the_documented_layout() {
        assert_eq!(http_port(9090, 1), 9090);
        assert_eq!(http_port(9090, 3), 9092);
        assert_eq!(grpc_port(9090, 1), 10090);
        assert_eq!(grpc_port(9090, 3), 10092);
        let bad = LaunchOptions {
            nodes: 3,
            data_dir: "d".into(),
            base_port: 65000,
            config: None,
            log_level: "info".into(),
        };
        assert!(matches!(check_layout(&bad), Err(LaunchError::Usage(_))));
    }

    #[test]
    fn urls_and_chunked_bodies() {
        assert_eq!(
            host_port("http://127.0.0.1:9090").unwrap(),
            "127.0.0.1:9090"
        );
        assert_eq!(host_port("http://h:1/").unwrap(), "h:1");
        assert_eq!(host_port("http://h").unwrap(), "h:80");
        assert!(host_port("https://h:1").is_err());
        assert!(host_port("http://h:1/api").is_err());
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"9\r\nabc").is_none());
    }
}
