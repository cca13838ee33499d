//! The Alertmanager client: a bounded queue of alerts, sent in batches with
//! `POST <prefix>/api/v2/alerts` to every configured Alertmanager.
//!
//! Owns: the `alerting.alertmanagers` config section ([`AlertingConfig`]),
//! the wire form of an alert ([`ApiAlert`]), the queue (drops the oldest
//! alerts when full and counts them) and the send loop.
//!
//! Invariants: external labels are added to every alert that lacks them;
//! the leader check is asked before every POST, so a deposed leader sends
//! nothing more; one failing Alertmanager does not keep the others from
//! getting the batch.

mod config;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::{Mutex, RwLock};
use pharos_storage::labels::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

pub use config::{AlertingConfig, AlertmanagerConfig, Authorization, BasicAuth, StaticConfig};

use crate::eval::LeaderCheck;

/// An alert as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiAlert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt", skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
}

/// Formats ms since the epoch as RFC 3339 with millisecond precision.
pub fn rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `generatorURL` of an alert: the node's graph page for the rule's
/// expression, as Prometheus links it.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    format!(
        "{}/graph?g0.expr={}&g0.tab=1",
        external_url.trim_end_matches('/'),
        query_escape(expr)
    )
}

/// Notifier settings.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// Alerts held while Alertmanagers are slow; the oldest are dropped
    /// beyond this. Default 10000, as Prometheus.
    pub queue_capacity: usize,
    /// Most alerts per POST. Default 64.
    pub max_batch: usize,
    pub external_labels: Labels,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            queue_capacity: 10_000,
            max_batch: 64,
            external_labels: Labels::empty(),
        }
    }
}

/// The notifier's metrics (`pharos_notifier_*`).
#[derive(Debug, Default, Clone)]
pub struct NotifierStats {
    /// Alerts delivered, counted once per Alertmanager.
    pub sent: Counter,
    /// Alerts whose POST failed, counted once per Alertmanager.
    pub errors: Counter,
    /// Alerts dropped because the queue was full.
    pub dropped: Counter,
    pub queue_length: Gauge,
}

impl NotifierStats {
    /// Registers the metrics with the node's registry.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "pharos_notifier_alerts_sent",
            "Alerts sent to Alertmanagers (once per Alertmanager)",
            self.sent.clone(),
        );
        r.register(
            "pharos_notifier_errors",
            "Alerts whose sending to an Alertmanager failed",
            self.errors.clone(),
        );
        r.register(
            "pharos_notifier_alerts_dropped",
            "Alerts dropped because the notification queue was full",
            self.dropped.clone(),
        );
        r.register(
            "pharos_notifier_queue_length",
            "Alerts waiting to be sent",
            self.queue_length.clone(),
        );
    }
}

/// Why a POST failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("alertmanager {url}: {msg}")]
    Request { url: String, msg: String },
    #[error("alertmanager {url}: bad response status {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("alertmanager {url}: timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// The Alertmanager client. Share it as `Arc<Notifier>`; run
/// [`Notifier::run`] on a tokio runtime.
pub struct Notifier {
    opts: NotifierOptions,
    queue: Mutex<VecDeque<ApiAlert>>,
    wake: tokio::sync::Notify,
    alertmanagers: RwLock<Vec<AlertmanagerConfig>>,
    leader: Arc<dyn LeaderCheck>,
    client: Client<HttpConnector, Full<Bytes>>,
    pub stats: NotifierStats,
}

impl Notifier {
    pub fn new(
        opts: NotifierOptions,
        alertmanagers: Vec<AlertmanagerConfig>,
        leader: Arc<dyn LeaderCheck>,
    ) -> Arc<Notifier> {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Arc::new(Notifier {
            opts,
            queue: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            alertmanagers: RwLock::new(alertmanagers),
            leader,
            client,
            stats: NotifierStats::default(),
        })
    }

    /// Replaces the Alertmanager list (config reload).
    pub fn set_alertmanagers(&self, ams: Vec<AlertmanagerConfig>) {
        *self.alertmanagers.write() = ams;
    }

    pub fn queue_len(&self) -> usize {
        self.queue.lock().len()
    }

    /// Queues alerts, adding external labels they lack. When the queue is
    /// full the oldest alerts are dropped and counted.
    pub fn send(&self, alerts: Vec<ApiAlert>) {
        if alerts.is_empty() {
            return;
        }
        let mut q = self.queue.lock();
        for mut a in alerts {
            for (k, v) in self.opts.external_labels.iter() {
                a.labels
                    .entry(k.to_string())
                    .or_insert_with(|| v.to_string());
            }
            q.push_back(a);
        }
        let cap = self.opts.queue_capacity.max(1);
        if q.len() > cap {
            let n = q.len() - cap;
            q.drain(..n);
            self.stats.dropped.inc_by(n as u64);
            tracing::warn!(
                dropped = n,
                "alert notification queue full, dropping oldest alerts"
            );
        }
        self.stats.queue_length.set(q.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    fn next_batch(&self) -> Vec<ApiAlert> {
        let mut q = self.queue.lock();
        let n = q.len().min(self.opts.max_batch.max(1));
        let batch = q.drain(..n).collect();
        self.stats.queue_length.set(q.len() as i64);
        batch
    }

    /// Sends queued alerts until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                self.wake.notified().await;
                continue;
            }
            self.send_batch(&batch).await;
        }
    }

    /// Sends everything queued now, once (used by tests and on shutdown).
    pub async fn flush(&self) {
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                return;
            }
            self.send_batch(&batch).await;
        }
    }

    async fn send_batch(&self, batch: &[ApiAlert]) {
        let body = match serde_json::to_vec(batch) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(%e, "encoding alerts");
                return;
            }
        };
        let ams = self.alertmanagers.read().clone();
        for am in ams {
            // Asked right before each send: a deposed leader stops here.
            if !self.leader.is_leader() {
                tracing::info!("not the leader any more; not sending alerts");
                return;
            }
            match self.post(&am, body.clone()).await {
                Ok(()) => {
                    self.stats.sent.inc_by(batch.len() as u64);
                }
                Err(e) => {
                    self.stats.errors.inc_by(batch.len() as u64);
                    tracing::warn!(error = %e, "sending alerts failed");
                }
            }
        }
    }

    async fn post(&self, am: &AlertmanagerConfig, body: Bytes) -> Result<(), SendError> {
        let url = am.alerts_url();
        let req_err = |msg: String| SendError::Request {
            url: url.clone(),
            msg,
        };
        let mut req = hyper::Request::post(&url)
            .header("content-type", "application/json")
            .header("user-agent", "pharos");
        if let Some(h) = am.authorization_header().map_err(&req_err)? {
            req = req.header("authorization", h);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| req_err(e.to_string()))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| req_err(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if !(200..300).contains(&status) {
                return Err(SendError::Status {
                    url: url.clone(),
                    status,
                    body: String::from_utf8_lossy(&body).chars().take(512).collect(),
                });
            }
            Ok(())
        };
        match tokio::time::timeout(am.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout {
                url: url.clone(),
                timeout: am.timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::AlwaysLeader;

    #[test]
    fn formats() {
        assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(
            query_escape("up == 0 {a=\"b\"}"),
            "up+%3D%3D+0+%7Ba%3D%22b%22%7D"
        );
        assert_eq!(
            generator_url("http://n:9090/", "up"),
            "http://n:9090/graph?g0.expr=up&g0.tab=1"
        );
    }

    #[test]
    fn queue_drops_oldest_and_counts() {
        let n = Notifier::new(
            NotifierOptions {
                queue_capacity: 2,
                max_batch: 64,
                external_labels: Labels::from_pairs([("cluster", "eu"), ("alertname", "x")]),
            },
            Vec::new(),
            Arc::new(AlwaysLeader),
        );
        let mk = |i: usize| ApiAlert {
            labels: BTreeMap::from([("alertname".to_string(), format!("A{i}"))]),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            generator_url: String::new(),
        };
        n.send((0..5).map(mk).collect());
        assert_eq!(n.queue_len(), 2);
        assert_eq!(n.stats.dropped.get(), 3);
        assert_eq!(n.stats.queue_length.get(), 2);
        let b = n.next_batch();
        assert_eq!(b[0].labels["alertname"], "A3");
        // External labels never override the alert's own.
        assert_eq!(b[0].labels["cluster"], "eu");
    }

    /// Accepts one HTTP request, answers `status`, returns the request text.
    async fn one_request(status: u16) -> (u16, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let h = tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = c.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let resp =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            c.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf).to_string()
        });
        (port, h)
    }

    fn alert() -> ApiAlert {
        ApiAlert {
            labels: BTreeMap::from([("alertname".to_string(), "A".to_string())]),
            annotations: BTreeMap::from([("s".to_string(), String::new())]),
            starts_at: Some(rfc3339_ms(1_000)),
            ends_at: Some(rfc3339_ms(241_000)),
            generator_url: "http://n/graph?g0.expr=up&g0.tab=1".into(),
        }
    }

    #[tokio::test]
    async fn posts_v2_alerts_with_prefix_and_credentials() {
        let (port, req) = one_request(200).await;
        let cfg: AlertingConfig = serde_yaml::from_str(&format!(
            "alertmanagers:\n  - path_prefix: /p\n    basic_auth:\n      username: u\n      password: pw\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ))
        .unwrap();
        let n = Notifier::new(
            NotifierOptions {
                external_labels: Labels::from_pairs([("cluster", "eu")]),
                ..NotifierOptions::default()
            },
            cfg.resolve().unwrap(),
            Arc::new(AlwaysLeader),
        );
        n.send(vec![alert()]);
        n.flush().await;
        let text = req.await.unwrap();
        assert!(
            text.starts_with("POST /p/api/v2/alerts HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(
            text.to_ascii_lowercase()
                .contains("authorization: basic dtpwdw=="),
            "{text}"
        );
        let body: serde_json::Value =
            serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(
            body,
            serde_json::json!([{
                "labels": {"alertname": "A", "cluster": "eu"},
                "annotations": {"s": ""},
                "startsAt": "1970-01-01T00:00:01.000Z",
                "endsAt": "1970-01-01T00:04:01.000Z",
                "generatorURL": "http://n/graph?g0.expr=up&g0.tab=1"
            }])
        );
        assert_eq!(n.stats.sent.get(), 1);

        // A refusing Alertmanager counts errors; a bearer token is sent.
        let (port, req) = one_request(500).await;
        let mut am = AlertmanagerConfig::new(format!("http://127.0.0.1:{port}"));
        am.authorization = Some(Authorization {
            kind: None,
            credentials: Some("tok".into()),
            credentials_file: None,
        });
        n.set_alertmanagers(vec![am]);
        n.send(vec![alert()]);
        n.flush().await;
        let text = req.await.unwrap();
        assert!(
            text.to_ascii_lowercase()
                .contains("authorization: bearer tok"),
            "{text}"
        );
        assert_eq!(n.stats.errors.get(), 1);
    }
}
