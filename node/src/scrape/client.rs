//! The scrape HTTP client: one kept-alive HTTP/1.1 connection per target,
//! plain or TLS (`tls_config`), with `basic_auth` / `authorization`,
//! Prometheus's `Accept` header, a timeout and a body size limit.
//!
//! Owns: fetching a body. Must not: parse it or know about samples.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::config::{Authorization, BasicAuth, JobSettings, TlsConfig};
use super::exposition::ACCEPT_HEADER;

/// Why a scrape could not fetch a body; the text is what
/// `/api/v1/targets` shows as `lastError`.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid scrape URL {url:?}: {msg}")]
    Url { url: String, msg: String },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS to {addr}: {msg}")]
    Tls { addr: String, msg: String },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("server returned HTTP status {0}")]
    Status(String),
    #[error("context deadline exceeded")]
    Timeout,
    #[error("body size limit exceeded ({limit} bytes)")]
    BodyTooLarge { limit: u64 },
    #[error("reading {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
}

/// A fetched body.
#[derive(Debug)]
pub struct Fetched {
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Per-target client state: the open connection, if any.
pub struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: Option<String>,
    conn: Option<(String, SendRequest<Empty<Bytes>>)>,
}

impl Client {
    /// Builds the client for a job; fails on unreadable TLS files.
    pub fn new(job: &JobSettings) -> Result<Client, String> {
        let tls = match (&job.tls_config, job.scheme.as_str()) {
            (Some(t), _) => Some(Arc::new(tls_client_config(t)?)),
            (None, "https") => Some(Arc::new(tls_client_config(&TlsConfig::default())?)),
            _ => None,
        };
        Ok(Client {
            tls,
            server_name: job.tls_config.as_ref().and_then(|t| t.server_name.clone()),
            conn: None,
        })
    }

    /// GETs `url` within `timeout`, reading at most `body_limit` bytes
    /// (0 = unlimited).
    pub async fn fetch(
        &mut self,
        url: &str,
        job: &JobSettings,
        timeout: Duration,
        body_limit: u64,
    ) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(timeout, self.fetch_inner(url, job, timeout, body_limit)).await {
            Ok(r) => {
                if r.is_err() {
                    self.conn = None;
                }
                r
            }
            Err(_) => {
                self.conn = None;
                Err(FetchError::Timeout)
            }
        }
    }

    async fn fetch_inner(
        &mut self,
        url: &str,
        job: &JobSettings,
        timeout: Duration,
        body_limit: u64,
    ) -> Result<Fetched, FetchError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| FetchError::Url {
                url: url.into(),
                msg: e.to_string(),
            })?;
        let bad = |msg: &str| FetchError::Url {
            url: url.into(),
            msg: msg.into(),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
        let https = uri.scheme_str() == Some("https");
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = format!("{}:{port}", authority.host());
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();

        let mut req = hyper::Request::get(path)
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::ACCEPT, ACCEPT_HEADER)
            .header(hyper::header::ACCEPT_ENCODING, "identity")
            .header(
                hyper::header::USER_AGENT,
                concat!("Pharos/", env!("CARGO_PKG_VERSION")),
            )
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", timeout.as_secs_f64()),
            );
        if let Some(h) = auth_header(job.basic_auth.as_ref(), job.authorization.as_ref())? {
            req = req.header(hyper::header::AUTHORIZATION, h);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| bad(&e.to_string()))?;

        let reuse = match &mut self.conn {
            Some((a, s)) if *a == addr && !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !reuse {
            self.conn = None;
            let sender = self.connect(&addr, &host, port, https).await?;
            self.conn = Some((addr.clone(), sender));
        }
        let Some((_, sender)) = self.conn.as_mut() else {
            return Err(FetchError::Status("no connection".into()));
        };
        let resp = sender.send_request(req).await?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(FetchError::Status(resp.status().to_string()));
        }
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(len) = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if body_limit > 0 && len > body_limit {
                return Err(FetchError::BodyTooLarge { limit: body_limit });
            }
        }
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                buf.extend_from_slice(&data);
                if body_limit > 0 && buf.len() as u64 > body_limit {
                    return Err(FetchError::BodyTooLarge { limit: body_limit });
                }
            }
        }
        Ok(Fetched {
            content_type,
            body: Bytes::from(buf),
        })
    }

    async fn connect(
        &self,
        addr: &str,
        host: &str,
        port: u16,
        https: bool,
    ) -> Result<SendRequest<Empty<Bytes>>, FetchError> {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|source| FetchError::Connect {
                addr: addr.into(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        if https {
            let cfg = self.tls.clone().ok_or_else(|| FetchError::Tls {
                addr: addr.into(),
                msg: "no TLS configuration".into(),
            })?;
            let name = self.server_name.clone().unwrap_or_else(|| host.to_string());
            let name = ServerName::try_from(name).map_err(|e| FetchError::Tls {
                addr: addr.into(),
                msg: e.to_string(),
            })?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, stream)
                .await
                .map_err(|e| FetchError::Tls {
                    addr: addr.into(),
                    msg: e.to_string(),
                })?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(sender)
        } else {
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(sender)
        }
    }
}

fn read_secret(p: &Path) -> Result<String, FetchError> {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(|source| FetchError::Credentials {
            path: p.display().to_string(),
            source,
        })
}

/// The `Authorization` header value; credential files are re-read on every
/// scrape, as Prometheus does, so rotated secrets apply without a reload.
pub fn auth_header(
    basic: Option<&BasicAuth>,
    authz: Option<&Authorization>,
) -> Result<Option<String>, FetchError> {
    if let Some(b) = basic {
        let user = match &b.username_file {
            Some(p) => read_secret(p)?,
            None => b.username.clone(),
        };
        let pass = match (&b.password, &b.password_file) {
            (_, Some(p)) => read_secret(p)?,
            (Some(p), None) => p.clone(),
            (None, None) => String::new(),
        };
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        return Ok(Some(format!("Basic {enc}")));
    }
    if let Some(a) = authz {
        let cred = match (&a.credentials, &a.credentials_file) {
            (_, Some(p)) => read_secret(p)?,
            (Some(c), None) => c.clone(),
            (None, None) => return Ok(None),
        };
        let kind = a.kind.as_deref().unwrap_or("Bearer");
        return Ok(Some(format!("{kind} {cred}")));
    }
    Ok(None)
}

fn pem_certs(bytes: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    rustls_pemfile::certs(&mut &bytes[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {e}"))
}

fn read_file(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))
}

/// The system CA bundle, for `https` targets without `ca`/`ca_file`.
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn tls_client_config(t: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
        Some("TLS13") => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = if t.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let ca = match (&t.ca, &t.ca_file) {
            (Some(inline), _) => Some(inline.as_bytes().to_vec()),
            (None, Some(p)) => Some(read_file(p)?),
            (None, None) => SYSTEM_CA_BUNDLES.iter().find_map(|p| std::fs::read(p).ok()),
        };
        if let Some(ca) = ca {
            for c in pem_certs(&ca, "CA certificates")? {
                roots.add(c).map_err(|e| format!("CA certificate: {e}"))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let cert = match (&t.cert, &t.cert_file) {
        (Some(c), _) => Some(c.as_bytes().to_vec()),
        (None, Some(p)) => Some(read_file(p)?),
        _ => None,
    };
    let key = match (&t.key, &t.key_file) {
        (Some(k), _) => Some(k.as_bytes().to_vec()),
        (None, Some(p)) => Some(read_file(p)?),
        _ => None,
    };
    let mut cfg = match (cert, key) {
        (Some(c), Some(k)) => {
            let certs = pem_certs(&c, "client certificate")?;
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &k[..])
                .map_err(|e| format!("client key: {e}"))?
                .ok_or("client key: no private key found")?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("tls_config: client certificate and key must be given together".into()),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// `insecure_skip_verify: true`: accept any server certificate (signatures
/// of the handshake are still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_headers() {
        let b = BasicAuth {
            username: "u".into(),
            password: Some("p".into()),
            ..Default::default()
        };
        assert_eq!(auth_header(Some(&b), None).unwrap().unwrap(), "Basic dTpw");
        let a = Authorization {
            credentials: Some("tok".into()),
            ..Default::default()
        };
        assert_eq!(auth_header(None, Some(&a)).unwrap().unwrap(), "Bearer tok");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "fromfile\n").unwrap();
        let a = Authorization {
            kind: Some("Token".into()),
            credentials_file: Some(f),
            ..Default::default()
        };
        assert_eq!(
            auth_header(None, Some(&a)).unwrap().unwrap(),
            "Token fromfile"
        );
        assert_eq!(auth_header(None, None).unwrap(), None);
    }

    #[test]
    fn default_https_config_builds() {
        assert!(tls_client_config(&TlsConfig::default()).is_ok());
        let insecure = TlsConfig {
            insecure_skip_verify: true,
            ..Default::default()
        };
        assert!(tls_client_config(&insecure).is_ok());
        let half = TlsConfig {
            cert: Some("x".into()),
            ..Default::default()
        };
        assert!(tls_client_config(&half).is_err());
    }
}
