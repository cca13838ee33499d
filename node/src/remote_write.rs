//! The remote-write receiver (`POST /api/v1/write`): Prometheus remote write
//! 1.0 (`prometheus.WriteRequest`) and 2.0 (`io.prometheus.write.v2.Request`),
//! negotiated by `Content-Type`, snappy block-compressed.
//!
//! Owns: content negotiation, size limits (compressed body, declared
//! decompressed length checked before allocating, series per request),
//! decoding, validation of every series before anything is written, and the
//! status codes of the specs: 204 stored; 400 bad data (not retried); 413/415
//! for bodies we will never accept; 5xx when the client should retry.
//! Must not: append anywhere but through [`WriteSink`], or write part of a
//! request that failed validation.
//!
//! Per-sample rejections by storage (out of order, too old, duplicate with
//! another value) happen after validation: the other samples are stored and
//! the answer is a 400 naming the first rejected series, with the
//! `X-Prometheus-Remote-Write-*-Written` headers saying what was stored.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use pharos_proto::ingest;
use pharos_storage::labels::{LabelError, Labels};
use prost::Message;

use crate::config::RemoteWriteReceiverConfig;
use crate::http::AppState;
use crate::sink::{MetricMeta, WriteOutcome};

/// Which protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "1.0",
            Version::V2 => "2.0",
        }
    }
}

/// Why a request was refused before anything was written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    BadData(String),
    /// Storage could not decide; the client retries.
    #[error("{0}")]
    Retry(String),
    #[error("remote write receiver is disabled")]
    Disabled,
    #[error("too many concurrent remote-write requests; retry later")]
    Overloaded,
}

impl WriteError {
    fn status(&self) -> StatusCode {
        match self {
            WriteError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WriteError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WriteError::BadData(_) => StatusCode::BAD_REQUEST,
            WriteError::Retry(_) => StatusCode::SERVICE_UNAVAILABLE,
            WriteError::Disabled => StatusCode::NOT_FOUND,
            WriteError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// Picks the protocol from `Content-Type` and checks `Content-Encoding`.
/// A missing `Content-Type` means 1.0, as the 1.0 spec predates the header.
pub fn negotiate(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<Version, WriteError> {
    if let Some(enc) = content_encoding {
        if !enc.trim().eq_ignore_ascii_case("snappy") {
            return Err(WriteError::UnsupportedMediaType(format!(
                "unsupported Content-Encoding {enc:?}; only snappy is supported"
            )));
        }
    }
    let Some(ct) = content_type else {
        return Ok(Version::V1);
    };
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(WriteError::UnsupportedMediaType(format!(
            "unsupported Content-Type {ct:?}; expected application/x-protobuf"
        )));
    }
    let mut version = Version::V1;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("proto") {
            version = match v.trim().trim_matches('"') {
                "prometheus.WriteRequest" => Version::V1,
                "io.prometheus.write.v2.Request" => Version::V2,
                other => {
                    return Err(WriteError::UnsupportedMediaType(format!(
                        "unsupported remote write protobuf message {other:?}"
                    )))
                }
            };
        }
    }
    Ok(version)
}

/// Snappy (block format) decompression that reads the declared length
/// first and refuses anything over `max` before allocating.
pub fn decompress(body: &[u8], max: usize) -> Result<Vec<u8>, WriteError> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| WriteError::BadData(format!("invalid snappy body: {e}")))?;
    if len > max {
        return Err(WriteError::TooLarge(format!(
            "decompressed body would be {len} bytes, over the limit of {max}"
        )));
    }
    let mut out = vec![0u8; len];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut out)
        .map_err(|e| WriteError::BadData(format!("invalid snappy body: {e}")))?;
    out.truncate(n);
    Ok(out)
}

/// A validated request, ready for the sink.
#[derive(Debug, Default)]
pub struct Decoded {
    pub samples: Vec<(Labels, i64, f64)>,
    pub metadata: Vec<(String, MetricMeta)>,
    pub series: usize,
    /// Exemplars received (not stored yet).
    pub exemplars: usize,
}

fn utf8<'a>(b: &'a [u8], what: &str, series: &dyn Fn() -> String) -> Result<&'a str, WriteError> {
    std::str::from_utf8(b).map_err(|_| {
        WriteError::BadData(
            LabelError::InvalidUtf8 {
                what: what.to_string(),
                series: series(),
            }
            .to_string(),
        )
    })
}

/// `{a="b", …}` of raw pairs, lossy, for messages about series we refused.
fn describe(pairs: &[(&[u8], &[u8])]) -> String {
    let mut s = String::from("{");
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&String::from_utf8_lossy(n));
        s.push('=');
        pharos_storage::labels::write_go_quoted(&mut s, &String::from_utf8_lossy(v)).ok();
    }
    s.push('}');
    s
}

fn labels_of(pairs: &[(&[u8], &[u8])]) -> Result<Labels, WriteError> {
    let series = || describe(pairs);
    let mut strs = Vec::with_capacity(pairs.len());
    for (n, v) in pairs {
        let n = utf8(n, "name", &series)?;
        let v = utf8(v, &format!("value of {n:?}"), &series)?;
        strs.push((n, v));
    }
    Labels::from_wire(strs.iter().copied()).map_err(|e| WriteError::BadData(e.to_string()))
}

fn check_series_limit(n: usize, limits: &RemoteWriteReceiverConfig) -> Result<(), WriteError> {
    if n > limits.max_series_per_request {
        return Err(WriteError::TooLarge(format!(
            "request has {n} series, over the limit of {} per request",
            limits.max_series_per_request
        )));
    }
    Ok(())
}

fn histogram_error(labels: &Labels) -> WriteError {
    WriteError::BadData(format!(
        "native histograms are not supported yet; series {labels} carries histogram samples"
    ))
}

/// Prometheus's metadata type names, indexed by the 1.0 enum value; the 2.0
/// enum has the same order.
fn type_name(t: i32) -> &'static str {
    match t {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

/// Decodes and validates a 1.0 body.
pub fn decode_v1(buf: Bytes, limits: &RemoteWriteReceiverConfig) -> Result<Decoded, WriteError> {
    let req = ingest::WriteRequest::decode(buf)
        .map_err(|e| WriteError::BadData(format!("invalid WriteRequest protobuf: {e}")))?;
    check_series_limit(req.timeseries.len(), limits)?;
    let mut out = Decoded {
        series: req.timeseries.len(),
        samples: Vec::with_capacity(req.timeseries.iter().map(|t| t.samples.len()).sum()),
        ..Decoded::default()
    };
    for ts in &req.timeseries {
        let pairs: Vec<(&[u8], &[u8])> = ts
            .labels
            .iter()
            .map(|l| (&l.name[..], &l.value[..]))
            .collect();
        let labels = labels_of(&pairs)?;
        if !ts.histograms.is_empty() {
            return Err(histogram_error(&labels));
        }
        out.exemplars += ts.exemplars.len();
        for s in &ts.samples {
            out.samples.push((labels.clone(), s.timestamp, s.value));
        }
    }
    for m in &req.metadata {
        let none = || String::from("metadata");
        let name = utf8(&m.metric_family_name, "metric family name", &none)?;
        let help = utf8(&m.help, &format!("help of {name:?}"), &none)?;
        let unit = utf8(&m.unit, &format!("unit of {name:?}"), &none)?;
        out.metadata.push((
            name.to_string(),
            MetricMeta {
                kind: type_name(m.r#type),
                help: help.to_string(),
                unit: unit.to_string(),
            },
        ));
    }
    Ok(out)
}

/// Decodes and validates a 2.0 body (symbol table references included).
pub fn decode_v2(buf: Bytes, limits: &RemoteWriteReceiverConfig) -> Result<Decoded, WriteError> {
    let req = ingest::RequestV2::decode(buf).map_err(|e| {
        WriteError::BadData(format!(
            "invalid io.prometheus.write.v2.Request protobuf: {e}"
        ))
    })?;
    check_series_limit(req.timeseries.len(), limits)?;
    if req.symbols.first().is_some_and(|s| !s.is_empty()) {
        return Err(WriteError::BadData(
            "symbols table must start with the empty string".into(),
        ));
    }
    let sym = |r: u32| -> Result<&[u8], WriteError> {
        req.symbols.get(r as usize).map(|b| &b[..]).ok_or_else(|| {
            WriteError::BadData(format!(
                "symbol reference {r} out of range (table has {} entries)",
                req.symbols.len()
            ))
        })
    };
    let mut out = Decoded {
        series: req.timeseries.len(),
        samples: Vec::with_capacity(req.timeseries.iter().map(|t| t.samples.len()).sum()),
        ..Decoded::default()
    };
    for (i, ts) in req.timeseries.iter().enumerate() {
        if ts.labels_refs.len() % 2 != 0 {
            return Err(WriteError::BadData(format!(
                "timeseries {i}: labels_refs has an odd length {}",
                ts.labels_refs.len()
            )));
        }
        let mut pairs = Vec::with_capacity(ts.labels_refs.len() / 2);
        for p in ts.labels_refs.chunks_exact(2) {
            pairs.push((sym(p[0])?, sym(p[1])?));
        }
        let labels = labels_of(&pairs)?;
        if !ts.histograms.is_empty() {
            return Err(histogram_error(&labels));
        }
        out.exemplars += ts.exemplars.len();
        for s in &ts.samples {
            out.samples.push((labels.clone(), s.timestamp, s.value));
        }
        if let (Some(m), Some(name)) = (&ts.metadata, labels.metric_name()) {
            let series = || labels.to_string();
            let help = utf8(sym(m.help_ref)?, "help", &series)?;
            let unit = utf8(sym(m.unit_ref)?, "unit", &series)?;
            if m.r#type != 0 || !help.is_empty() || !unit.is_empty() {
                out.metadata.push((
                    name.to_string(),
                    MetricMeta {
                        kind: type_name(m.r#type),
                        help: help.to_string(),
                        unit: unit.to_string(),
                    },
                ));
            }
        }
    }
    Ok(out)
}

fn written_headers(resp: &mut Response, samples: usize) {
    let h = resp.headers_mut();
    h.insert(
        "X-Prometheus-Remote-Write-Samples-Written",
        HeaderValue::from(samples),
    );
    h.insert(
        "X-Prometheus-Remote-Write-Histograms-Written",
        HeaderValue::from(0u32),
    );
    h.insert(
        "X-Prometheus-Remote-Write-Exemplars-Written",
        HeaderValue::from(0u32),
    );
}

fn text_response(status: StatusCode, msg: String) -> Response {
    let mut r = (status, msg).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The axum handler.
pub async fn handle(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let hv = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let version = negotiate(hv(header::CONTENT_TYPE), hv(header::CONTENT_ENCODING));
    let label_version = match &version {
        Ok(v) => v.as_str(),
        Err(_) => "unknown",
    };
    let result = receive(&st, version, body).await;
    let (status, resp) = match result {
        Ok(outcome) => respond(&st, outcome),
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(error = %e, "remote write failed");
            } else {
                tracing::debug!(error = %e, "remote write refused");
            }
            (status, text_response(status, format!("{e}\n")))
        }
    };
    st.metrics
        .remote_write_requests
        .get_or_create(&vec![
            ("version", label_version.to_string()),
            ("code", status.as_u16().to_string()),
        ])
        .inc();
    resp
}

async fn receive(
    st: &Arc<AppState>,
    version: Result<Version, WriteError>,
    body: Body,
) -> Result<WriteOutcome, WriteError> {
    let limits = &st.settings.remote_write;
    if !limits.enabled {
        return Err(WriteError::Disabled);
    }
    let version = version?;
    // Overload: tell the client to back off instead of queueing without
    // bound (Prometheus retries 429 when `retry_on_http_429` is set, and
    // 5xx always).
    let _permit = Arc::clone(&st.write_slots)
        .try_acquire_owned()
        .map_err(|_| WriteError::Overloaded)?;
    let body = tokio::time::timeout(
        crate::http::params::BODY_TIMEOUT,
        axum::body::to_bytes(body, limits.max_compressed_bytes),
    )
    .await
    .map_err(|_| WriteError::BadData("timed out reading the request body".into()))?
    .map_err(|e| {
        WriteError::TooLarge(format!(
            "could not read body (limit {} bytes): {e}",
            limits.max_compressed_bytes
        ))
    })?;
    let limits = limits.clone();
    let sink = Arc::clone(&st.sink);
    let metrics = Arc::clone(&st.metrics);
    // Decompression, decoding and the (fsyncing) append are CPU and disk
    // work: keep them off the async workers.
    tokio::task::spawn_blocking(move || {
        let raw = decompress(&body, limits.max_decompressed_bytes)?;
        let decoded = match version {
            Version::V1 => decode_v1(Bytes::from(raw), &limits),
            Version::V2 => decode_v2(Bytes::from(raw), &limits),
        };
        let decoded = decoded?;
        if !decoded.metadata.is_empty() {
            metrics
                .metadata_ingested
                .inc_by(decoded.metadata.len() as u64);
            sink.write_metadata(decoded.metadata.clone());
        }
        let outcome = if decoded.samples.is_empty() {
            WriteOutcome::default()
        } else {
            sink.write(&decoded.samples)
                .map_err(|e| WriteError::Retry(e.to_string()))?
        };
        Ok(outcome)
    })
    .await
    .map_err(|e| WriteError::Retry(format!("write task failed: {e}")))?
}

fn respond(st: &AppState, outcome: WriteOutcome) -> (StatusCode, Response) {
    st.metrics.samples_ingested.inc_by(outcome.appended as u64);
    let mut by_reason: Vec<(&'static str, u64)> = Vec::new();
    for r in &outcome.rejected {
        match by_reason.iter_mut().find(|(k, _)| *k == r.reason.as_str()) {
            Some((_, n)) => *n += 1,
            None => by_reason.push((r.reason.as_str(), 1)),
        }
    }
    for (reason, n) in by_reason {
        st.metrics.reject(reason, n);
    }
    let (status, mut resp) = match outcome.rejected.first() {
        None => (
            StatusCode::NO_CONTENT,
            StatusCode::NO_CONTENT.into_response(),
        ),
        Some(first) => {
            let more = outcome.rejected.len() - 1;
            let mut msg = first.message.clone();
            if more > 0 {
                msg.push_str(&format!(" (and {more} more rejected samples)"));
            }
            tracing::warn!(
                rejected = outcome.rejected.len(),
                appended = outcome.appended,
                first = %first.message,
                "remote write samples rejected"
            );
            (
                StatusCode::BAD_REQUEST,
                text_response(StatusCode::BAD_REQUEST, msg + "\n"),
            )
        }
    };
    written_headers(&mut resp, outcome.appended);
    (status, resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_proto::{prometheus as pb, write_v2};

    fn limits() -> RemoteWriteReceiverConfig {
        RemoteWriteReceiverConfig::default()
    }

    fn ts(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> pb::TimeSeries {
        pb::TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| pb::Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(t, v)| pb::Sample {
                    value: v,
                    timestamp: t,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(None, None).unwrap(), Version::V1);
        assert_eq!(
            negotiate(Some("application/x-protobuf"), Some("snappy")).unwrap(),
            Version::V1
        );
        assert_eq!(
            negotiate(
                Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
                Some("snappy")
            )
            .unwrap(),
            Version::V2
        );
        assert_eq!(
            negotiate(
                Some("application/x-protobuf; proto=prometheus.WriteRequest"),
                None
            )
            .unwrap(),
            Version::V1
        );
        assert!(matches!(
            negotiate(Some("application/json"), None),
            Err(WriteError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            negotiate(Some("application/x-protobuf;proto=foo.Bar"), None),
            Err(WriteError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            negotiate(None, Some("gzip")),
            Err(WriteError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn snappy_bomb_is_refused_before_allocation() {
        // A tiny body declaring a 2 GiB output: only the varint header.
        let body = [0x80, 0x80, 0x80, 0x80, 0x08];
        match decompress(&body, 1 << 20) {
            Err(WriteError::TooLarge(m)) => assert!(m.contains("over the limit"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A real body that expands past the limit.
        let big = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 100_000])
            .unwrap();
        assert!(big.len() < 10_000);
        assert!(matches!(
            decompress(&big, 50_000),
            Err(WriteError::TooLarge(_))
        ));
        assert_eq!(decompress(&big, 100_000).unwrap().len(), 100_000);
        assert!(matches!(
            decompress(b"\x05garbage", 100),
            Err(WriteError::BadData(_))
        ));
    }

    #[test]
    fn v1_decodes_samples_and_metadata() {
        let req = pb::WriteRequest {
            timeseries: vec![
                ts(
                    &[("__name__", "up"), ("job", "a")],
                    &[(1000, 1.0), (2000, 0.0)],
                ),
                ts(&[("__name__", "x")], &[]),
            ],
            metadata: vec![pb::MetricMetadata {
                r#type: 1,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        };
        let d = decode_v1(Bytes::from(req.encode_to_vec()), &limits()).unwrap();
        assert_eq!(d.samples.len(), 2);
        assert_eq!(d.samples[1].1, 2000);
        assert_eq!(d.series, 2);
        assert_eq!(d.metadata[0].1.kind, "counter");
    }

    fn v1_err(series: Vec<pb::TimeSeries>) -> String {
        let req = pb::WriteRequest {
            timeseries: series,
            metadata: vec![],
        };
        match decode_v1(Bytes::from(req.encode_to_vec()), &limits()) {
            Err(WriteError::BadData(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v1_bad_series_named() {
        let good = ts(&[("__name__", "ok")], &[(1, 1.0)]);
        let m = v1_err(vec![
            good.clone(),
            ts(&[("b", "1"), ("a", "2")], &[(1, 1.0)]),
        ]);
        assert!(m.contains("not sorted") && m.contains("b=\"1\""), "{m}");
        let m = v1_err(vec![
            good.clone(),
            ts(&[("a", "1"), ("a", "2")], &[(1, 1.0)]),
        ]);
        assert!(m.contains("duplicate"), "{m}");
        let m = v1_err(vec![ts(&[("__name__", "1bad")], &[(1, 1.0)])]);
        assert!(m.contains("invalid metric name"), "{m}");
        let m = v1_err(vec![ts(&[], &[(1, 1.0)])]);
        assert!(m.contains("no labels"), "{m}");
    }

    #[test]
    fn v1_invalid_utf8_names_the_series() {
        // Hand-encode a label value with invalid UTF-8 through the bytes view.
        let req = ingest::WriteRequest {
            timeseries: vec![ingest::TimeSeries {
                labels: vec![
                    ingest::Label {
                        name: Bytes::from_static(b"__name__"),
                        value: Bytes::from_static(b"m"),
                    },
                    ingest::Label {
                        name: Bytes::from_static(b"k"),
                        value: Bytes::from_static(b"\xff\xfe"),
                    },
                ],
                samples: vec![ingest::Sample {
                    value: 1.0,
                    timestamp: 1,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        match decode_v1(Bytes::from(req.encode_to_vec()), &limits()) {
            Err(WriteError::BadData(m)) => {
                assert!(m.contains("UTF-8") && m.contains("__name__=\"m\""), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_protobuf_and_limits() {
        assert!(matches!(
            decode_v1(Bytes::from_static(b"\x0a\xff\xff\xff\xff\x0f"), &limits()),
            Err(WriteError::BadData(_))
        ));
        let req = pb::WriteRequest {
            timeseries: vec![ts(&[("__name__", "a")], &[(1, 1.0)]); 3],
            metadata: vec![],
        };
        let mut l = limits();
        l.max_series_per_request = 2;
        assert!(matches!(
            decode_v1(Bytes::from(req.encode_to_vec()), &l),
            Err(WriteError::TooLarge(_))
        ));
    }

    #[test]
    fn histograms_are_refused_with_the_series() {
        let mut t = ts(&[("__name__", "h")], &[]);
        t.histograms.push(pb::Histogram::default());
        let m = v1_err(vec![t]);
        assert!(m.contains("native histograms") && m.contains("h"), "{m}");
    }

    fn v2_req(symbols: &[&str], series: Vec<write_v2::TimeSeries>) -> Bytes {
        Bytes::from(
            write_v2::Request {
                symbols: symbols.iter().map(|s| s.to_string()).collect(),
                timeseries: series,
            }
            .encode_to_vec(),
        )
    }

    #[test]
    fn v2_resolves_symbols_and_metadata() {
        let body = v2_req(
            &["", "__name__", "up", "job", "a", "help text"],
            vec![write_v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![write_v2::Sample {
                    value: 1.0,
                    timestamp: 5,
                }],
                metadata: Some(write_v2::Metadata {
                    r#type: 2,
                    help_ref: 5,
                    unit_ref: 0,
                }),
                ..Default::default()
            }],
        );
        let d = decode_v2(body, &limits()).unwrap();
        assert_eq!(d.samples[0].0.get("job"), Some("a"));
        assert_eq!(d.metadata[0].0, "up");
        assert_eq!(d.metadata[0].1.kind, "gauge");
        assert_eq!(d.metadata[0].1.help, "help text");
    }

    #[test]
    fn v2_bad_refs() {
        let series = |refs: Vec<u32>| {
            vec![write_v2::TimeSeries {
                labels_refs: refs,
                ..Default::default()
            }]
        };
        for (syms, refs, want) in [
            (vec!["", "a"], vec![1], "odd length"),
            (vec!["", "a"], vec![1, 9], "out of range"),
            (vec!["x", "a"], vec![1, 1], "empty string"),
        ] {
            match decode_v2(v2_req(&syms, series(refs)), &limits()) {
                Err(WriteError::BadData(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic any stage of the receiver.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let l = limits();
            let _ = decompress(&body, 1 << 16);
            let _ = decode_v1(Bytes::from(body.clone()), &l);
            let _ = decode_v2(Bytes::from(body), &l);
        }

        /// Valid requests decode to exactly the samples they carry.
        #[test]
        fn valid_requests_round_trip(
            names in proptest::collection::btree_set("[a-z][a-z0-9_]{0,8}", 1..5),
            samples in proptest::collection::vec((proptest::num::i64::ANY, proptest::num::f64::ANY), 0..20),
        ) {
            let mut labels: Vec<(String, String)> = names.into_iter().map(|n| (n.clone(), format!("v_{n}"))).collect();
            labels.insert(0, ("__name__".into(), "metric".into()));
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let req = pb::WriteRequest { timeseries: vec![ts(&pairs, &samples)], metadata: vec![] };
            let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
            let raw = decompress(&body, 1 << 20).unwrap();
            let d = decode_v1(Bytes::from(raw), &limits()).unwrap();
            proptest::prop_assert_eq!(d.samples.len(), samples.len());
            for ((l, t, v), (wt, wv)) in d.samples.iter().zip(&samples) {
                proptest::prop_assert_eq!(*t, *wt);
                // proto3 omits a zero double, so -0.0 arrives as 0.0 (the
                // same in Prometheus); every other value keeps its bits.
                proptest::prop_assert!(v.to_bits() == wv.to_bits() || (*wv == 0.0 && *v == 0.0));
                proptest::prop_assert_eq!(l.len(), pairs.len());
            }
        }
    }
}
