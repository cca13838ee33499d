//! A minimal HTTP/1.1 client on hyper: one kept-alive connection each.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::Result;

/// Bounds one HTTP exchange (a hung node fails the run instead of stalling it).
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) struct Http {
    pub(crate) addr: String,
    pub(crate) sender: Option<SendRequest<Full<Bytes>>>,
}

impl Http {
    pub(crate) fn new(addr: &str) -> Http {
        Http {
            addr: addr.to_string(),
            sender: None,
        }
    }

    pub(crate) async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| "no connection".into())
    }

    pub(crate) async fn once(
        &mut self,
        method: &hyper::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &Bytes,
    ) -> Result<(u16, Bytes)> {
        let addr = self.addr.clone();
        let sender = self.connect().await?;
        sender.ready().await?;
        let mut req = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", &addr);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(body.clone()))?)
            .await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// One request; a kept-alive connection the server closed is retried
    /// once on a new one (a repeated remote write is harmless: the same
    /// samples again are accepted as duplicates).
    pub(crate) async fn call(
        &mut self,
        method: hyper::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(u16, Bytes)> {
        let mut last = String::new();
        for _ in 0..2 {
            match tokio::time::timeout(HTTP_TIMEOUT, self.once(&method, path, headers, &body)).await
            {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer within {HTTP_TIMEOUT:?}"),
            }
            self.sender = None;
        }
        bail!("{method} {} {path}: {last}", self.addr)
    }

    pub(crate) async fn get(&mut self, path: &str) -> Result<(u16, Bytes)> {
        self.call(hyper::Method::GET, path, &[], Bytes::new()).await
    }

    pub(crate) async fn get_ok(&mut self, path: &str) -> Result<Bytes> {
        let (status, body) = self.get(path).await?;
        if status != 200 {
            bail!(
                "GET {} {path}: HTTP {status}: {}",
                self.addr,
                String::from_utf8_lossy(&body[..body.len().min(400)])
            );
        }
        Ok(body)
    }
}

pub(crate) fn pct_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(crate) fn api_time(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}
