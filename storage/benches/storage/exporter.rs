//! A loopback exporter serving the workload in the Prometheus text format,
//! so Prometheus and VictoriaMetrics can scrape exactly the series Pharos's
//! head is measured with. Every scrape advances every series by one step.
//!
//! Bounded: binds 127.0.0.1 on a port the OS picks, handles one connection
//! at a time, and exits after `max_secs` whatever happens.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::workload::{target_labels, TargetGen};

/// `name{a="b",...} ` for each series, in generator order.
fn series_prefixes(targets: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(targets * crate::workload::SERIES_PER_TARGET);
    for t in 0..targets {
        for l in target_labels(t) {
            let mut s = String::with_capacity(120);
            s.push_str(l.metric_name().unwrap_or(""));
            s.push('{');
            let mut first = true;
            for (n, v) in l.iter().filter(|(n, _)| *n != "__name__") {
                if !first {
                    s.push(',');
                }
                first = false;
                // Workload values never need escaping.
                let _ = write!(s, "{n}=\"{v}\"");
            }
            s.push_str("} ");
            out.push(s);
        }
    }
    out
}

/// Serves until `max_secs` have passed. Writes the port to `port_file` once
/// listening, and a line per scrape to stdout.
pub(crate) fn serve(
    port_file: &Path,
    targets: usize,
    seed: u64,
    max_secs: u64,
) -> crate::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let tmp = port_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, port_file)?;
    listener.set_nonblocking(true)?;
    let prefixes = series_prefixes(targets);
    let mut gens: Vec<TargetGen> = (0..targets).map(|t| TargetGen::new(seed, t)).collect();
    let mut body = String::with_capacity(prefixes.len() * 140);
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let mut scrapes = 0u64;
    while Instant::now() < deadline {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let start = Instant::now();
        match handle(stream, &prefixes, &mut gens, &mut body) {
            Ok(true) => {
                scrapes += 1;
                println!(
                    "scrape {scrapes} series {} bytes {} ms {}",
                    prefixes.len(),
                    body.len(),
                    start.elapsed().as_millis()
                );
            }
            Ok(false) => {}
            Err(e) => eprintln!("exporter: connection failed: {e}"),
        }
    }
    println!("exporter done after {scrapes} scrapes");
    Ok(())
}

/// Answers one request; `Ok(true)` when it was a scrape of `/metrics`.
fn handle(
    mut stream: TcpStream,
    prefixes: &[String],
    gens: &mut [TargetGen],
    body: &mut String,
) -> crate::Result<bool> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        ensure!(n > 0, "connection closed mid-request");
        req.extend_from_slice(&buf[..n]);
        ensure!(req.len() < 64 * 1024, "request head too large");
    }
    let head = String::from_utf8_lossy(&req);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    if !path.starts_with("/metrics") {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(false);
    }
    body.clear();
    let mut i = 0;
    for g in gens.iter_mut() {
        g.step();
        for v in &g.values {
            body.push_str(&prefixes[i]);
            let _ = writeln!(body, "{v}");
            i += 1;
        }
    }
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    Ok(true)
}
