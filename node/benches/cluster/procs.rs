//! The benchmarked processes: starting a single node or a three-node
//! cluster, waiting for it, stopping it, and reading its CPU and memory
//! from `/proc`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::Http;
use crate::{Args, Result};

/// Nodes of a cluster deployment.
pub(crate) const NODES: usize = 3;

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One `pharos server` child; SIGTERM then SIGKILL when stopped or dropped.
pub(crate) struct Proc {
    pub(crate) label: String,
    pub(crate) http: String,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn signal(&self, sig: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) takes plain integers; the pid is our own
            // unreaped child, so it cannot name another process.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    pub(crate) fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited() {
            self.signal(libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

pub(crate) fn tail(p: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(crate) fn spawn(bin: &Path, label: &str, args: &[String], log: &Path) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log)?;
    let mut cmd = Command::new(bin);
    cmd.args(["--log.level", "warn", "server"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no parent memory; it
    // runs in the child between fork and exec, so a bench that dies (panic,
    // `timeout`, Ctrl-C) takes its servers with it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("starting {label} ({}): {e}", bin.display()).into())
}

/// The processes of one configuration.
pub(crate) struct Deployment {
    pub(crate) name: String,
    pub(crate) procs: Vec<Proc>,
}

pub(crate) fn write_config(
    path: &Path,
    fsync: Option<&str>,
    cluster: Option<(u32, u32)>,
) -> Result<()> {
    let mut pharos = String::new();
    if let Some(f) = fsync {
        pharos.push_str(&format!("  wal:\n    fsync: {f}\n"));
    }
    if let Some((rf, shards)) = cluster {
        pharos.push_str(&format!(
            "  cluster:\n    replication_factor: {rf}\n    shards: {shards}\n"
        ));
    }
    let mut text = String::from("global:\n  scrape_interval: 15s\n");
    if !pharos.is_empty() {
        text.push_str("pharos:\n");
        text.push_str(&pharos);
    }
    std::fs::write(path, text)?;
    Ok(())
}

impl Deployment {
    pub(crate) fn start(name: &str, args: &Args, work: &Path) -> Result<Deployment> {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)?;
        let rf = match name {
            "single" => None,
            "rf1" => Some(1),
            _ => Some(3),
        };
        let mut d = Deployment {
            name: name.to_string(),
            procs: Vec::new(),
        };
        let nodes = if rf.is_some() { NODES } else { 1 };
        let mut first_grpc = String::new();
        for i in 1..=nodes {
            let http = format!("127.0.0.1:{}", free_port()?);
            let cfg = dir.join(format!("node-{i}.yml"));
            write_config(&cfg, args.fsync.as_deref(), rf.map(|r| (r, args.shards)))?;
            let mut cli = vec![
                "--listen".to_string(),
                http.clone(),
                "--data-dir".into(),
                dir.join(format!("node-{i}")).display().to_string(),
                "--config".into(),
                cfg.display().to_string(),
            ];
            if rf.is_some() {
                let grpc = format!("127.0.0.1:{}", free_port()?);
                cli.extend([
                    "--node-id".to_string(),
                    i.to_string(),
                    "--grpc-listen".into(),
                    grpc.clone(),
                    "--expect-nodes".into(),
                    nodes.to_string(),
                ]);
                if i == 1 {
                    first_grpc = grpc;
                } else {
                    cli.extend(["--join".to_string(), first_grpc.clone()]);
                }
            }
            let label = format!("{name}/node-{i}");
            let log = dir.join(format!("node-{i}.log"));
            let child = spawn(&args.pharos, &label, &cli, &log)?;
            d.procs.push(Proc {
                label,
                http,
                child,
                log,
            });
        }
        Ok(d)
    }

    /// Waits until every node answers `/-/ready` (in a cluster: once the
    /// shard map exists).
    pub(crate) async fn wait_ready(&mut self, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        let mut https: Vec<Http> = self.procs.iter().map(|p| Http::new(&p.http)).collect();
        loop {
            let mut ready = 0;
            for (p, h) in self.procs.iter_mut().zip(https.iter_mut()) {
                if p.exited() {
                    bail!(
                        "{} exited before it was ready; log:\n{}",
                        p.label,
                        tail(&p.log, 20)
                    );
                }
                if let Ok((200, _)) = h.get("/-/ready").await {
                    ready += 1;
                }
            }
            if ready == self.procs.len() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                let logs: Vec<String> = self
                    .procs
                    .iter()
                    .map(|p| format!("{}:\n{}", p.label, tail(&p.log, 10)))
                    .collect();
                bail!(
                    "{}: {ready}/{} nodes ready after {within:?}; logs:\n{}",
                    self.name,
                    self.procs.len(),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) fn entry(&self) -> &str {
        &self.procs[0].http
    }

    pub(crate) fn cpu(&self, tck: f64) -> Result<Vec<f64>> {
        self.procs.iter().map(|p| cpu_secs(p.pid(), tck)).collect()
    }

    pub(crate) fn mem_sum(&self, field: &str) -> Result<u64> {
        self.procs
            .iter()
            .map(|p| status_bytes(p.pid(), field))
            .sum()
    }

    pub(crate) fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if p.exited() {
                bail!("{} exited; log:\n{}", p.label, tail(&p.log, 20));
            }
        }
        Ok(())
    }

    /// SIGTERM to every node at once, then SIGKILL to what is left after
    /// 15 s. A cluster node's shutdown may wait on its peers, so they all
    /// go down together.
    pub(crate) fn stop(&mut self) {
        for p in &mut self.procs {
            if !p.exited() {
                p.signal(libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && self.procs.iter_mut().any(|p| !p.exited()) {
            std::thread::sleep(Duration::from_millis(100));
        }
        for p in &mut self.procs {
            if !p.exited() {
                eprintln!(
                    "{} did not stop within 15 s after SIGTERM; killing it",
                    p.label
                );
            }
        }
        // Proc's Drop kills and reaps.
        self.procs.clear();
    }
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_secs(pid: u32, tck: f64) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the parenthesised command name: state is field 3, so utime
    // (field 14) and stime (15) are the 12th and 13th from here.
    let rest = s.rsplit_once(')').ok_or("malformed /proc/pid/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).ok_or("short /proc/pid/stat")?.parse()?;
    let stime: f64 = f.get(12).ok_or("short /proc/pid/stat")?.parse()?;
    Ok((utime + stime) / tck)
}

/// A `/proc/<pid>/status` size field (`VmRSS`, `VmHWM`) in bytes.
pub(crate) fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let v = s
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| format!("{field} not in /proc/{pid}/status"))?;
    Ok(v.trim().trim_end_matches("kB").trim().parse::<u64>()? * 1024)
}

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
