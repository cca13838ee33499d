//! A minimal HTTP/1.1 client for the benchmarks that talk to real servers
//! on loopback (`query/benches/promql.rs`, `node/benches/remote_write.rs`,
//! each including this file with `#[path]`): one kept-alive connection,
//! Content-Length and chunked bodies, bounded by socket timeouts; plus the
//! query-string helpers they share. No dependency beyond std.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub(crate) struct Http {
    addr: String,
    conn: Option<BufReader<TcpStream>>,
}

impl Http {
    pub(crate) fn new(addr: &str) -> Http {
        Http {
            addr: addr.to_string(),
            conn: None,
        }
    }

    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        // A kept-alive connection the server has closed fails on first use;
        // one retry on a fresh connection covers that.
        let reused = self.conn.is_some();
        match self.try_request(method, path, headers, body) {
            Ok(r) => Ok(r),
            Err(e) if reused => {
                self.conn = None;
                self.try_request(method, path, headers, body)
                    .map_err(|e2| format!("{e2} (after {e} on a reused connection)").into())
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr)
                .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
            s.set_read_timeout(Some(Duration::from_secs(300)))?;
            s.set_write_timeout(Some(Duration::from_secs(300)))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::with_capacity(1 << 16, s));
        }
        let Some(conn) = self.conn.as_mut() else {
            bail!("no connection");
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let s = conn.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        s.flush()?;

        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            bail!("connection closed before the status line");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut content_length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            if conn.read_line(&mut line)? == 0 {
                bail!("connection closed inside the response headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else {
                bail!("bad header line {l:?}");
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => content_length = Some(v.parse::<usize>()?),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut out = Vec::new();
        if status == 204 || status == 304 || (100..200).contains(&status) {
        } else if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let size_hex = line.trim_end().split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .map_err(|_| format!("bad chunk size line {line:?}"))?;
                if size == 0 {
                    loop {
                        line.clear();
                        if conn.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let at = out.len();
                out.resize(at + size, 0);
                conn.read_exact(&mut out[at..])?;
                let mut crlf = [0u8; 2];
                conn.read_exact(&mut crlf)?;
            }
        } else if let Some(n) = content_length {
            out.resize(n, 0);
            conn.read_exact(&mut out)?;
        } else {
            conn.read_to_end(&mut out)?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok((status, out))
    }

    pub(crate) fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>)> {
        self.request("GET", path, &[], &[])
    }
}

pub(crate) fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Milliseconds as the API's decimal seconds.
pub(crate) fn api_time(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}
