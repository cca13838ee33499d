//! Running one node: open storage, build the HTTP state, bind, serve
//! (plain or TLS), and shut down gracefully.
//!
//! Owns: the accept loop, TLS setup from the web config, and the shutdown
//! order — stop accepting, mark not ready, let in-flight requests finish
//! (bounded), stop scraping and rules, leave the cluster (meta member, then
//! the internal gRPC server), then fsync and close the WAL so that every
//! acknowledged write is on disk whatever the fsync policy.
//!
//! In cluster mode (`pharos.cluster.node_id` set) the node also starts its
//! [`Member`], reads through the fan-out
//! ([`crate::cluster::read::FanoutQueryable`]) and writes through the
//! replicating sink ([`crate::cluster::write::ReplicatingSink`]); it
//! reports ready once the cluster's shard map exists.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderName, HeaderValue};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use pharos_storage::db::{BlockOptions, Db, DbOptions};
use pharos_storage::head::HeadOptions;
use pharos_storage::wal::{FsyncPolicy, WalOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cluster::member::{Member, StartError};
use crate::cluster::{read, write};
use crate::config::web::{TlsServerConfig, WebConfig};
use crate::config::{Config, ConfigError, FsyncMode};
use crate::http::auth::BasicAuth;
use crate::http::{AppState, ServerInfo, Settings};
use crate::metrics::Metrics;
use crate::services::{ReloadError, Roles, Services};
use crate::sink::{LocalSink, MetadataStore, WriteSink};

/// How long in-flight requests may run after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake or request header slower than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most metric families whose metadata is kept.
const MAX_METADATA_FAMILIES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening storage in {dir}: {source}")]
    Storage {
        dir: PathBuf,
        source: pharos_storage::StorageError,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("closing storage: {0}")]
    Close(pharos_storage::StorageError),
    #[error(transparent)]
    Services(ReloadError),
    #[error(transparent)]
    Cluster(#[from] StartError),
    #[error("{0}")]
    Internal(String),
}

/// Everything needed to start a node.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    pub config: Config,
    /// The configuration file's path and raw text, if one was given (for
    /// `/api/v1/status/config`).
    pub config_file: Option<(PathBuf, String)>,
    /// Command-line flags as given, for `/api/v1/status/flags`.
    pub flags: BTreeMap<String, String>,
}

/// A node that is serving.
pub struct RunningNode {
    pub addr: SocketAddr,
    /// The cluster gRPC address, in cluster mode.
    pub grpc_addr: Option<SocketAddr>,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningNode {
    /// Stops accepting, drains, flushes storage, and waits for all of it.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.join().await
    }

    /// Waits until the node stops by itself (it does not, unless the
    /// accept loop fails) — used by `main` together with a signal.
    pub async fn join(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Internal(format!("server task failed: {e}"))),
        }
    }
}

fn db_options(cfg: &Config) -> DbOptions {
    let w = &cfg.pharos.wal;
    let fsync = match w.fsync {
        FsyncMode::Always => FsyncPolicy::Always,
        FsyncMode::Interval => FsyncPolicy::Interval(w.fsync_interval.as_std()),
    };
    let ooo = cfg
        .storage
        .as_ref()
        .and_then(|s| s.tsdb.as_ref())
        .and_then(|t| t.out_of_order_time_window)
        // A cluster replica receives samples late (catch-up after a
        // restart, hinted handoff): accept them unless the user chose.
        .or_else(|| {
            cfg.pharos
                .cluster
                .enabled()
                .then_some(cfg.pharos.cluster.out_of_order_window)
        })
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    DbOptions {
        wal: WalOptions {
            segment_size: w.segment_size,
            fsync,
        },
        head: HeadOptions {
            out_of_order_window_ms: ooo,
            ..HeadOptions::default()
        },
    }
}

/// Prometheus's spelling of the retention in force.
fn retention_string(t: &crate::config::TsdbSettings) -> String {
    let mut parts = Vec::new();
    if t.retention_time.as_millis() > 0 {
        parts.push(t.retention_time.to_string());
    }
    if t.retention_bytes > 0 {
        parts.push(format!("{}B", t.retention_bytes));
    }
    if parts.is_empty() {
        "unlimited".to_string()
    } else {
        parts.join(" or ")
    }
}

fn tls_acceptor(tls: &TlsServerConfig) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |m: String| ServerError::Tls(m);
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| err(format!("reading {}: {e}", p.display())));
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut read(&tls.cert_file)?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("{}: {e}", tls.cert_file.display())))?;
    if certs.is_empty() {
        return Err(err(format!(
            "{}: no certificate found",
            tls.cert_file.display()
        )));
    }
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut read(&tls.key_file)?.as_slice())
            .map_err(|e| err(format!("{}: {e}", tls.key_file.display())))?
            .ok_or_else(|| err(format!("{}: no private key found", tls.key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version.as_deref() {
        Some("TLS13") => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| err(e.to_string()))?;
    let auth = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let ca_path = tls
                .client_ca_file
                .as_ref()
                .ok_or_else(|| err(format!("client_auth_type {auth} needs client_ca_file")))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut read(ca_path)?.as_slice()) {
                let c = c.map_err(|e| err(format!("{}: {e}", ca_path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| err(format!("{}: {e}", ca_path.display())))?;
            }
            let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            );
            if auth == "VerifyClientCertIfGiven" {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(v.build().map_err(|e| err(e.to_string()))?)
        }
        other => {
            return Err(err(format!(
            "client_auth_type {other} (client certificates without verification) is not supported"
        )))
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| err(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Prometheus's default `--web.external-url`: `http://<host>:<port>`,
/// with the machine's host name when listening on all addresses.
fn default_external_url(local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        format!("http://{host}:{}", local.port())
    } else {
        format!("http://{local}")
    }
}

/// Opens storage, binds the listen address and starts serving.
pub async fn start(opts: NodeOptions) -> Result<RunningNode, ServerError> {
    let cfg = &opts.config;
    for (section, why) in cfg.inert_sections() {
        tracing::warn!(
            section,
            reason = why,
            "configuration section accepted but not acted on"
        );
    }
    let web = match &cfg.pharos.web.config_file {
        Some(p) => WebConfig::load(p)?,
        None => WebConfig::default(),
    };
    if web.http_server_config.as_ref().and_then(|h| h.http2) == Some(true) {
        tracing::warn!("web config: http2 is not served; HTTP/1.1 only");
    }
    let tls = web
        .tls_server_config
        .as_ref()
        .map(tls_acceptor)
        .transpose()?;
    let mut extra_headers = Vec::new();
    if let Some(h) = &web.http_server_config {
        for (k, v) in &h.headers {
            let name = HeaderName::try_from(k.as_str())
                .map_err(|e| ServerError::Internal(format!("web config header {k:?}: {e}")))?;
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|e| ServerError::Internal(format!("web config header {k:?}: {e}")))?;
            extra_headers.push((name, value));
        }
    }
    let auth = (!web.basic_auth_users.is_empty())
        .then(|| Arc::new(BasicAuth::new(web.basic_auth_users.clone())));

    let dir = cfg.pharos.data_dir.clone();
    let dbo = db_options(cfg);
    let t = &cfg.pharos.tsdb;
    let bopts = BlockOptions {
        block_range_ms: Some(t.block_range.as_millis() as i64),
        retention_time_ms: (t.retention_time.as_millis() > 0)
            .then_some(t.retention_time.as_millis() as i64),
        retention_bytes: (t.retention_bytes > 0).then_some(t.retention_bytes),
    };
    let db_dir = dir.clone();
    let db = tokio::task::spawn_blocking(move || Db::open_with(&db_dir, dbo, bopts))
        .await
        .map_err(|e| ServerError::Internal(format!("storage open task failed: {e}")))?
        .map_err(|source| ServerError::Storage {
            dir: dir.clone(),
            source,
        })?;
    let db = Arc::new(db);
    let maintenance = db.start_background(t.maintenance_interval.as_std());

    let mut metrics = Metrics::new();
    let now = SystemTime::now();
    metrics.start_time.set(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    );
    let metadata = Arc::new(MetadataStore::new(MAX_METADATA_FAMILIES));
    let addr = cfg.pharos.listen;
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(source) => {
            close_storage(&db, maintenance).await;
            return Err(ServerError::Bind { addr, source });
        }
    };
    let member = if cfg.pharos.cluster.enabled() {
        match Member::start(
            &cfg.pharos.cluster,
            &cfg.pharos.data_dir,
            Arc::clone(&db),
            Arc::clone(&metadata),
        )
        .await
        {
            Ok(m) => Some(m),
            Err(e) => {
                close_storage(&db, maintenance).await;
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;

    let settings = Settings {
        remote_write: cfg.pharos.remote_write_receiver.clone(),
        query: cfg.pharos.query.clone(),
        web: cfg.pharos.web.clone(),
    };
    type Q = Arc<dyn pharos_query::queryable::Queryable>;
    let (queryable, partial_queryable, sink, roles): (Q, Q, Arc<dyn WriteSink>, _) = match &member {
        None => (
            db.clone(),
            db.clone(),
            Arc::new(LocalSink::new(Arc::clone(&db), Arc::clone(&metadata))),
            Roles::single_node(),
        ),
        Some(m) => {
            let h = m.handle();
            let wm = Arc::new(write::WriteMetrics::default());
            let rm = Arc::new(read::ReadMetrics::default());
            let cm = h.metrics.clone();
            let (w, r) = (Arc::clone(&wm), Arc::clone(&rm));
            metrics.register_with(move |reg| {
                cm.register(reg);
                w.register(reg);
                r.register(reg);
            });
            let fanout = read::FanoutQueryable::with_metrics(Arc::clone(&h.ctx), rm);
            (
                Arc::new(fanout.clone()),
                Arc::new(fanout.allow_partial()),
                Arc::new(write::ReplicatingSink::with_metrics(Arc::clone(&h.ctx), wm)),
                Roles::cluster(h),
            )
        }
    };
    let metrics = Arc::new(metrics);
    let external_url = cfg
        .pharos
        .web
        .external_url
        .clone()
        .unwrap_or_else(|| default_external_url(local))
        .trim_end_matches('/')
        .to_string();
    let services = match Services::start(
        cfg,
        opts.config_file
            .as_ref()
            .map(|(p, t)| (p.as_path(), t.as_str())),
        Arc::clone(&queryable),
        Arc::clone(&sink),
        settings.engine_options(),
        external_url,
        roles,
    ) {
        Ok(s) => s,
        Err(e) => {
            if let Some(m) = member {
                m.shutdown().await;
            }
            close_storage(&db, maintenance).await;
            return Err(ServerError::Services(e));
        }
    };

    let state = Arc::new(AppState {
        queryable,
        partial_queryable,
        sink,
        services,
        metadata,
        db: Arc::clone(&db),
        metrics,
        settings,
        info: ServerInfo {
            start_time: now,
            flags: opts.flags.clone(),
            storage_retention: retention_string(t),
        },
        ready: AtomicBool::new(false),
        auth,
        extra_headers,
        query_slots: Arc::new(tokio::sync::Semaphore::new(
            cfg.pharos.query.max_concurrency,
        )),
        write_slots: Arc::new(tokio::sync::Semaphore::new(
            cfg.pharos.remote_write_receiver.max_concurrent_requests,
        )),
        cluster: member.as_ref().map(|m| Arc::clone(m.handle())),
    });
    let mut member = member;
    if let Some(m) = &mut member {
        let h = Arc::clone(m.handle());
        m.own(crate::cluster::assignment::follow_primaries(
            Arc::clone(&h.meta),
            state.services.scrape.clone(),
        ));
        // Ready once the cluster has formed (a restarted replica catches
        // up meanwhile, refusing reads: see the member).
        let st = Arc::clone(&state);
        m.own(tokio::spawn(async move {
            h.wait_for_shard_map().await;
            st.ready.store(true, Ordering::Release);
            tracing::info!(node = h.node_id, "cluster formed: node ready");
        }));
    }

    tracing::info!(
        listen = %local,
        cluster_node = cfg.pharos.cluster.node_id,
        tls = tls.is_some(),
        basic_auth = state.auth.is_some(),
        data_dir = %cfg.pharos.data_dir.display(),
        "pharos server listening"
    );
    let (stop_tx, stop_rx) = oneshot::channel();
    let grpc_addr = member.as_ref().map(Member::grpc_addr);
    let single = member.is_none();
    let task = tokio::spawn(serve(
        listener,
        tls,
        Arc::clone(&state),
        db,
        maintenance,
        member,
        stop_rx,
    ));
    if single {
        state.ready.store(true, Ordering::Release);
    }
    Ok(RunningNode {
        addr: local,
        grpc_addr,
        state,
        stop: Some(stop_tx),
        task,
    })
}

/// Stops maintenance and flushes storage after a failed start.
async fn close_storage(db: &Arc<Db>, maintenance: pharos_storage::db::Background) {
    let db = Arc::clone(db);
    let _ = tokio::task::spawn_blocking(move || {
        drop(maintenance);
        db.sync()
    })
    .await;
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
    db: Arc<Db>,
    maintenance: pharos_storage::db::Background,
    member: Option<Member>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), ServerError> {
    let router = crate::http::router(Arc::clone(&state));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let svc = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            let result = match tls {
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), svc))
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            watcher
                                .watch(builder.serve_connection(TokioIo::new(s), svc))
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining in-flight requests");
    state.ready.store(false, Ordering::Release);
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after {DRAIN_TIMEOUT:?}; closing anyway");
    }
    // Scrapes and rule evaluations write; they stop before storage closes.
    state.services.shutdown().await;
    // Peers' replicated writes stop arriving before storage closes too.
    if let Some(m) = member {
        m.shutdown().await;
    }
    // Everything acknowledged must be on disk before we exit, whatever the
    // fsync policy. Stopping maintenance waits for a round in progress.
    let result = tokio::task::spawn_blocking(move || {
        drop(maintenance);
        db.sync()
    })
    .await
    .map_err(|e| ServerError::Internal(format!("flush task failed: {e}")))?;
    result.map_err(ServerError::Close)?;
    tracing::info!("storage flushed; bye");
    Ok(())
}
