//! TLS and basic auth from a Prometheus web config file; the admin API
//! switch.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_users() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&web, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
    let n = node_with(|c| c.pharos.web.config_file = Some(web)).await;
    assert_eq!(get(n.addr, "/api/v1/labels").await.status, 401);
    let wrong = basic("alice", "nope");
    let r = request(
        n.addr,
        "GET",
        "/api/v1/labels",
        &[("Authorization", &wrong)],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic"));
    let right = basic("alice", "s3cret");
    for _ in 0..2 {
        let r = request(
            n.addr,
            "GET",
            "/api/v1/labels",
            &[("Authorization", &right)],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Remote write is protected too.
    let w = write_v1(
        n.addr,
        &write_req(vec![series(&[("__name__", "x")], &[(1, 1.0)])]),
    )
    .await;
    assert_eq!(w.status, 401);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_deletes_series_when_enabled() {
    let n = node_with(|c| c.pharos.web.enable_admin_api = true).await;
    let req = write_req(vec![
        series(
            &[("__name__", "gone")],
            &[(1000, 1.0), (2000, 2.0), (3000, 3.0)],
        ),
        series(&[("__name__", "kept")], &[(1000, 1.0)]),
    ]);
    assert_eq!(write_v1(n.addr, &req).await.status, 204);
    let r = post_form(n.addr, "/api/v1/admin/tsdb/delete_series", &[]).await;
    assert_eq!(r.status, 400);
    let r = post_form(
        n.addr,
        "/api/v1/admin/tsdb/delete_series",
        &[("match[]", "gone"), ("start", "1.5"), ("end", "2.5")],
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let v = get(
        n.addr,
        "/api/v1/query?query=count_over_time(gone[1m])&time=3",
    )
    .await
    .json();
    assert_eq!(v["data"]["result"][0]["value"][1], "2");
    let r = post_form(
        n.addr,
        "/api/v1/admin/tsdb/delete_series",
        &[("match[]", "gone")],
    )
    .await;
    assert_eq!(r.status, 204);
    let v = get(n.addr, "/api/v1/series?match[]=gone").await.json();
    assert_eq!(v["data"], serde_json::json!([]));
    let v = get(n.addr, "/api/v1/series?match[]=kept").await.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    n.stop().await;
}

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A client certificate signed by the test CA (after [`make_certs`]).
fn make_client_cert(dir: &Path) -> bool {
    std::fs::write(
        dir.join("client.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=grafana",
        ],
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "2",
            "-extfile",
            "client.cnf",
        ],
    )
}

fn client_config(dir: &Path, with_cert: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = if with_cert {
        let pem = std::fs::read(dir.join("client.pem")).unwrap();
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .map(|c| c.unwrap())
            .collect();
        let key = std::fs::read(dir.join("client.key")).unwrap();
        let key = rustls_pemfile::private_key(&mut key.as_slice())
            .unwrap()
            .unwrap();
        b.with_client_auth_cert(certs, key).unwrap()
    } else {
        b.with_no_client_auth()
    };
    Arc::new(cfg)
}

/// GET over TLS; `None` when the handshake or the exchange fails.
async fn tls_get(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> Option<Resp> {
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let mut tls = connector.connect(name, tcp).await.ok()?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    if raw.windows(4).any(|w| w == b"\r\n\r\n") {
        Some(parse_response(&raw))
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_required() {
    let dir = tempfile::tempdir().unwrap();
    if !make_certs(dir.path()) || !make_client_cert(dir.path()) {
        if std::env::var("PHAROS_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("the openssl CLI is needed to make test certificates (PHAROS_REQUIRE_PEERS=1)");
        }
        eprintln!("SKIP: the openssl CLI is not available to make test certificates");
        return;
    }
    std::fs::write(
        dir.path().join("web.yml"),
        "tls_server_config:\n  cert_file: srv.pem\n  key_file: srv.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    )
    .unwrap();
    let web = dir.path().join("web.yml");
    let n = node_with(|c| c.pharos.web.config_file = Some(web)).await;
    let with = tls_get(n.addr, client_config(dir.path(), true), "/-/healthy").await;
    assert_eq!(with.map(|r| r.status), Some(200));
    let without = tls_get(n.addr, client_config(dir.path(), false), "/-/healthy").await;
    assert!(without.is_none(), "served without a client certificate");
    n.stop().await;
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn make_certs(dir: &Path) -> bool {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=pharos-test-ca",
            ],
        ]
        .concat(),
    ) && openssl(
        dir,
        &[
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_config() {
    let dir = tempfile::tempdir().unwrap();
    if !make_certs(dir.path()) {
        if std::env::var("PHAROS_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("the openssl CLI is needed to make test certificates (PHAROS_REQUIRE_PEERS=1)");
        }
        eprintln!(
            "SKIP tls_server_config: the openssl CLI is not available to make test certificates"
        );
        return;
    }
    std::fs::write(
        dir.path().join("web.yml"),
        "tls_server_config:\n  cert_file: srv.pem\n  key_file: srv.key\n",
    )
    .unwrap();
    let web = dir.path().join("web.yml");
    let n = node_with(|c| c.pharos.web.config_file = Some(web)).await;

    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(n.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    // The server may close without close_notify; what was read counts.
    let _ = tls.read_to_end(&mut raw).await;
    let r = parse_response(&raw);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Healthy"));

    n.stop().await;
}
