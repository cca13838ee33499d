//! Helpers shared by the integration tests.

use std::time::{SystemTime, UNIX_EPOCH};

/// splitmix64: a tiny deterministic generator, so a failing run can be
/// reproduced from the seed it prints without another dependency.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from `PHAROS_TEST_SEED` when set, else from the clock; the
    /// seed is printed so a failure can be replayed.
    pub(crate) fn from_env(test: &str) -> Rng {
        let seed = std::env::var("PHAROS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(42)
            });
        eprintln!("{test}: PHAROS_TEST_SEED={seed}");
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// Acknowledged `(writer, timestamp)` pairs reported by a crash child.
pub(crate) type Acked = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<(u64, i64)>>>;

/// Re-runs this test binary as a child executing the ignored test `child`
/// with `envs`, records every `ACK <writer> <t>` line it prints into
/// `acked`, and SIGKILLs it after `kill_after`. Returns whether the child
/// printed a line containing `open_marker` (it got as far as opening the
/// database). Panics if the child exited by itself instead of being killed.
pub(crate) fn run_child_until_killed(
    child: &str,
    envs: &[(&str, String)],
    open_marker: &'static str,
    kill_after: std::time::Duration,
    acked: &Acked,
) -> bool {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        child,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env_remove("RUST_LOG")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut proc = cmd.spawn().unwrap();
    let stdout = proc.stdout.take().unwrap();
    let acked2 = std::sync::Arc::clone(acked);
    let reader = std::thread::spawn(move || {
        let mut opened = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (w, t) = rest.split_once(' ').unwrap();
                acked2
                    .lock()
                    .unwrap()
                    .insert((w.parse().unwrap(), t.parse().unwrap()));
            } else if line.contains(open_marker) {
                // libtest prints "test <name> ... " without a newline first,
                // so the marker need not start the line.
                opened = true;
            }
        }
        opened
    });
    std::thread::sleep(kill_after);
    // `Child::kill` sends SIGKILL on Unix.
    let _ = proc.kill();
    let status = proc.wait().unwrap();
    let opened = reader.join().unwrap();
    if status.success() || status.code().is_some() {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut proc.stderr.take().unwrap(), &mut err).unwrap();
        panic!("child exited by itself ({status}), not by SIGKILL:\n{err}");
    }
    opened
}
