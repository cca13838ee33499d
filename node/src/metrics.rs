//! Pharos's own metrics, served at `/metrics` through `prometheus-client`
//! (OpenMetrics text), named `pharos_<component>_<what>_<unit>`.
//!
//! Owns: the registry and every metric handle of the node. Components get
//! an `Arc<Metrics>` and update handles directly; nothing here is on a
//! per-sample path (counters are added per request).

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type LabelSet = Vec<(&'static str, String)>;

/// Every metric of one node.
pub struct Metrics {
    registry: Registry,
    pub samples_ingested: Counter,
    pub samples_rejected: Family<LabelSet, Counter>,
    pub remote_write_requests: Family<LabelSet, Counter>,
    pub metadata_ingested: Counter,
    pub http_request_duration: Family<LabelSet, Histogram>,
    pub query_duration: Family<LabelSet, Histogram>,
    pub head_series: Gauge,
    pub start_time: Gauge,
}

fn latency_histogram() -> Histogram {
    // 1ms … ~33s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let samples_ingested = Counter::default();
        registry.register(
            "pharos_ingest_samples",
            "Samples appended to storage through remote write",
            samples_ingested.clone(),
        );
        let samples_rejected = Family::<LabelSet, Counter>::default();
        registry.register(
            "pharos_ingest_samples_rejected",
            "Samples refused by storage, by reason (out_of_order, too_old, duplicate, invalid_labels, other); whole requests refused before storage are counted in pharos_remote_write_requests_total by status code",
            samples_rejected.clone(),
        );
        let remote_write_requests = Family::<LabelSet, Counter>::default();
        registry.register(
            "pharos_remote_write_requests",
            "Remote-write requests by protocol version and HTTP status code",
            remote_write_requests.clone(),
        );
        let metadata_ingested = Counter::default();
        registry.register(
            "pharos_ingest_metadata",
            "Metric metadata entries received through remote write",
            metadata_ingested.clone(),
        );
        let http_request_duration = Family::<LabelSet, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "pharos_http_request_duration_seconds",
            "HTTP request latency by handler",
            http_request_duration.clone(),
        );
        let query_duration = Family::<LabelSet, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "pharos_query_duration_seconds",
            "PromQL evaluation time by query kind (instant, range)",
            query_duration.clone(),
        );
        let head_series = Gauge::default();
        registry.register(
            "pharos_head_series",
            "Series held in the in-memory head",
            head_series.clone(),
        );
        let start_time = Gauge::default();
        registry.register(
            "pharos_process_start_time_seconds",
            "When the server started, seconds since the Unix epoch",
            start_time.clone(),
        );
        Metrics {
            registry,
            samples_ingested,
            samples_rejected,
            remote_write_requests,
            metadata_ingested,
            http_request_duration,
            query_duration,
            head_series,
            start_time,
        }
    }

    /// Lets a component register its own long-lived metrics (the
    /// cluster's, for instance) in the node's registry, before the
    /// registry is shared.
    pub fn register_with(&mut self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry);
    }

    pub fn observe_request(&self, handler: &str, elapsed: Duration) {
        self.http_request_duration
            .get_or_create(&vec![("handler", handler.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_query(&self, kind: &'static str, elapsed: Duration) {
        self.query_duration
            .get_or_create(&vec![("kind", kind.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    pub fn reject(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.samples_rejected
                .get_or_create(&vec![("reason", reason.to_string())])
                .inc_by(n);
        }
    }

    /// The exposition (OpenMetrics text).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The exposition with the metrics of `extra` appended: components
    /// that are rebuilt on a config reload (the rule manager, the
    /// notifier) register into a fresh registry per scrape instead of the
    /// node's long-lived one.
    pub fn encode_with(&self, extra: &Registry) -> Result<String, std::fmt::Error> {
        let mut out = self.encode()?;
        let mut more = String::new();
        encode(&mut more, extra)?;
        // One exposition has one `# EOF`, at the end.
        if let Some(stripped) = out.strip_suffix("# EOF\n") {
            out.truncate(stripped.len());
        }
        out.push_str(&more);
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_our_names() {
        let m = Metrics::new();
        m.samples_ingested.inc_by(3);
        m.reject("out_of_order", 2);
        m.observe_request("query", Duration::from_millis(3));
        m.head_series.set(7);
        let text = m.encode().unwrap();
        assert!(text.contains("pharos_ingest_samples_total 3"), "{text}");
        assert!(text.contains(r#"pharos_ingest_samples_rejected_total{reason="out_of_order"} 2"#));
        assert!(text.contains(r#"pharos_http_request_duration_seconds_count{handler="query"} 1"#));
        assert!(text.contains("pharos_head_series 7"));
        assert!(text.ends_with("# EOF\n"));
        let mut extra = Registry::default();
        let c = Counter::<u64>::default();
        c.inc();
        extra.register("pharos_rules_evaluations", "x", c);
        let text = m.encode_with(&extra).unwrap();
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.contains("pharos_rules_evaluations_total 1"), "{text}");
        assert!(text.contains("pharos_head_series 7"));
        assert!(text.ends_with("# EOF\n"));
    }
}
