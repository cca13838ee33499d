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
    utf8_lazy(b, &|| what.to_string(), series)
}

/// As [`utf8`], with the description built only on error: this runs for
/// every label of every request.
fn utf8_lazy<'a>(
    b: &'a [u8],
    what: &dyn Fn() -> String,
    series: &dyn Fn() -> String,
) -> Result<&'a str, WriteError> {
    std::str::from_utf8(b).map_err(|_| {
        WriteError::BadData(
            LabelError::InvalidUtf8 {
                what: what(),
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
    labels_with(pairs, &mut Vec::with_capacity(pairs.len()))
}

/// [`labels_of`] with a caller-kept scratch vector, so decoding a request
/// allocates nothing per series but the labels themselves.
fn labels_with<'a>(
    pairs: &[(&'a [u8], &'a [u8])],
    strs: &mut Vec<(&'a str, &'a str)>,
) -> Result<Labels, WriteError> {
    let series = || describe(pairs);
    strs.clear();
    for (n, v) in pairs {
        let n = utf8_lazy(n, &|| "name".to_string(), &series)?;
        let v = utf8_lazy(v, &|| format!("value of {n:?}"), &series)?;
        strs.push((n, v));
    }
    if let Some(l) = canonical_fast(strs) {
        return Ok(l);
    }
    Labels::from_wire(strs.iter().copied()).map_err(|e| WriteError::BadData(e.to_string()))
}

/// The usual label set (strictly sorted, valid names, no empty values),
/// encoded once at its final size: `Labels::from_wire` grows a small buffer
/// through reallocations and copies it again, which was a tenth of the
/// receiver's CPU. Anything unusual returns None, and `from_wire` decides
/// (and words the error); for what this accepts both give the same labels.
fn canonical_fast(strs: &[(&str, &str)]) -> Option<Labels> {
    use pharos_storage::labels::{is_valid_label_name, is_valid_metric_name};
    let mut size = 0;
    let mut prev: Option<&str> = None;
    for &(n, v) in strs {
        if v.is_empty()
            || prev.is_some_and(|p| p >= n)
            || !is_valid_label_name(n)
            || (n == "__name__" && !is_valid_metric_name(v))
        {
            return None;
        }
        prev = Some(n);
        size += n.len() + v.len() + 20;
    }
    if strs.is_empty() {
        return None;
    }
    let mut buf = Vec::with_capacity(size);
    for &(n, v) in strs {
        for s in [n, v] {
            let mut len = s.len() as u64;
            while len >= 0x80 {
                buf.push((len as u8) | 0x80);
                len >>= 7;
            }
            buf.push(len as u8);
            buf.extend_from_slice(s.as_bytes());
        }
    }
    Labels::from_canonical_bytes(&buf)
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

/// Protobuf wire format, read in place: remote write 1.0 bodies are decoded
/// by hand rather than through prost, which allocated two vectors and
/// reference-counted every label string of every series (a third of the
/// receiver's CPU at 2,000 series per request). Only what
/// `prometheus.WriteRequest` needs: varints, fixed64, length-delimited
/// fields; unknown fields of those wire types and fixed32 are skipped, as
/// any protobuf decoder does.
mod wire {
    pub(super) enum Value<'a> {
        Varint(u64),
        Fixed64(u64),
        Fixed32,
        Bytes(&'a [u8]),
    }

    pub(super) struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        pub(super) fn new(buf: &'a [u8]) -> Reader<'a> {
            Reader { buf, pos: 0 }
        }

        fn varint(&mut self) -> Result<u64, String> {
            let mut v: u64 = 0;
            for i in 0..10 {
                let Some(&b) = self.buf.get(self.pos) else {
                    return Err(format!("truncated varint at byte {}", self.pos));
                };
                self.pos += 1;
                if i == 9 && b > 1 {
                    return Err(format!("varint overflow at byte {}", self.pos - 1));
                }
                v |= u64::from(b & 0x7f) << (7 * i);
                if b < 0x80 {
                    return Ok(v);
                }
            }
            Err(format!("varint overflow at byte {}", self.pos))
        }

        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            let end = self
                .pos
                .checked_add(n)
                .filter(|&e| e <= self.buf.len())
                .ok_or_else(|| {
                    format!(
                        "field of {n} bytes at byte {} overruns the {}-byte message",
                        self.pos,
                        self.buf.len()
                    )
                })?;
            let s = &self.buf[self.pos..end];
            self.pos = end;
            Ok(s)
        }

        /// The next field, or None at the end of the message.
        pub(super) fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, String> {
            if self.pos >= self.buf.len() {
                return Ok(None);
            }
            let key = self.varint()?;
            let number = key >> 3;
            if number == 0 || number > u64::from(u32::MAX >> 3) {
                return Err(format!("invalid field number {number}"));
            }
            let v = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    Value::Fixed64(u64::from_le_bytes(a))
                }
                2 => {
                    let n = self.varint()?;
                    let n = usize::try_from(n).map_err(|_| format!("length {n} too large"))?;
                    Value::Bytes(self.take(n)?)
                }
                5 => {
                    self.take(4)?;
                    Value::Fixed32
                }
                t => return Err(format!("unsupported wire type {t} for field {number}")),
            };
            Ok(Some((number as u32, v)))
        }
    }

    pub(super) fn wrong_type(msg: &str, field: &str) -> String {
        format!("{msg}.{field}: wrong wire type")
    }
}

/// One `prometheus.Sample`: (timestamp, value); absent fields are zero.
fn wire_sample(b: &[u8]) -> Result<(i64, f64), String> {
    let (mut t, mut v) = (0i64, 0f64);
    let mut r = wire::Reader::new(b);
    while let Some((f, val)) = r.field()? {
        match (f, val) {
            (1, wire::Value::Fixed64(x)) => v = f64::from_bits(x),
            (1, _) => return Err(wire::wrong_type("Sample", "value")),
            (2, wire::Value::Varint(x)) => t = x as i64,
            (2, _) => return Err(wire::wrong_type("Sample", "timestamp")),
            _ => {}
        }
    }
    Ok((t, v))
}

/// One `prometheus.Label`: (name, value); absent fields are empty.
fn wire_label(b: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (mut n, mut v): (&[u8], &[u8]) = (&[], &[]);
    let mut r = wire::Reader::new(b);
    while let Some((f, val)) = r.field()? {
        match (f, val) {
            (1, wire::Value::Bytes(x)) => n = x,
            (1, _) => return Err(wire::wrong_type("Label", "name")),
            (2, wire::Value::Bytes(x)) => v = x,
            (2, _) => return Err(wire::wrong_type("Label", "value")),
            _ => {}
        }
    }
    Ok((n, v))
}

/// What one `prometheus.TimeSeries` holds, into caller-kept buffers.
struct WireSeries<'a> {
    pairs: Vec<(&'a [u8], &'a [u8])>,
    samples: Vec<(i64, f64)>,
    exemplars: usize,
    histograms: usize,
}

impl<'a> WireSeries<'a> {
    fn read(&mut self, b: &'a [u8]) -> Result<(), String> {
        self.pairs.clear();
        self.samples.clear();
        self.exemplars = 0;
        self.histograms = 0;
        let mut r = wire::Reader::new(b);
        while let Some((f, val)) = r.field()? {
            match (f, val) {
                (1, wire::Value::Bytes(x)) => self.pairs.push(wire_label(x)?),
                (2, wire::Value::Bytes(x)) => self.samples.push(wire_sample(x)?),
                (3, wire::Value::Bytes(_)) => self.exemplars += 1,
                (4, wire::Value::Bytes(_)) => self.histograms += 1,
                (1..=4, _) => return Err(wire::wrong_type("TimeSeries", "field")),
                _ => {}
            }
        }
        Ok(())
    }
}

/// One `prometheus.MetricMetadata`: (type, family name, help, unit).
fn wire_metadata(b: &[u8]) -> Result<(i32, &[u8], &[u8], &[u8]), String> {
    let mut m: (i32, &[u8], &[u8], &[u8]) = (0, &[], &[], &[]);
    let mut r = wire::Reader::new(b);
    while let Some((f, val)) = r.field()? {
        match (f, val) {
            (1, wire::Value::Varint(x)) => m.0 = x as i32,
            (2, wire::Value::Bytes(x)) => m.1 = x,
            (4, wire::Value::Bytes(x)) => m.2 = x,
            (5, wire::Value::Bytes(x)) => m.3 = x,
            (1 | 2 | 4 | 5, _) => return Err(wire::wrong_type("MetricMetadata", "field")),
            _ => {}
        }
    }
    Ok(m)
}

/// Decodes and validates a 1.0 body.
///
/// Two passes over the bytes: the first checks the request's own framing
/// and counts series (so the series limit applies before any work), the
/// second decodes and validates each series in order, in place. A body that
/// is malformed inside a later series than an invalid one is reported by
/// the invalid one; both are 400s.
pub fn decode_v1(buf: Bytes, limits: &RemoteWriteReceiverConfig) -> Result<Decoded, WriteError> {
    let bad = |e: String| WriteError::BadData(format!("invalid WriteRequest protobuf: {e}"));
    let mut series = 0;
    let mut metadata: Vec<&[u8]> = Vec::new();
    let mut r = wire::Reader::new(&buf);
    while let Some((f, val)) = r.field().map_err(bad)? {
        match (f, val) {
            (1, wire::Value::Bytes(_)) => series += 1,
            (3, wire::Value::Bytes(m)) => metadata.push(m),
            (1 | 3, _) => return Err(bad(wire::wrong_type("WriteRequest", "field"))),
            _ => {}
        }
    }
    check_series_limit(series, limits)?;
    let mut out = Decoded {
        series,
        // One sample per series is what Prometheus's queue manager sends.
        samples: Vec::with_capacity(series),
        ..Decoded::default()
    };
    let mut ts = WireSeries {
        pairs: Vec::new(),
        samples: Vec::new(),
        exemplars: 0,
        histograms: 0,
    };
    let mut strs = Vec::new();
    let mut r = wire::Reader::new(&buf);
    while let Some((f, val)) = r.field().map_err(bad)? {
        let (1, wire::Value::Bytes(b)) = (f, val) else {
            continue;
        };
        ts.read(b).map_err(bad)?;
        let labels = labels_with(&ts.pairs, &mut strs)?;
        if ts.histograms > 0 {
            return Err(histogram_error(&labels));
        }
        out.exemplars += ts.exemplars;
        if let Some((&(t, v), rest)) = ts.samples.split_last() {
            for &(t, v) in rest {
                out.samples.push((labels.clone(), t, v));
            }
            out.samples.push((labels, t, v));
        }
    }
    for m in metadata {
        let (kind, name, help, unit) = wire_metadata(m).map_err(bad)?;
        let none = || String::from("metadata");
        let name = utf8(name, "metric family name", &none)?;
        let help = utf8(help, &format!("help of {name:?}"), &none)?;
        let unit = utf8(unit, &format!("unit of {name:?}"), &none)?;
        out.metadata.push((
            name.to_string(),
            MetricMeta {
                kind: type_name(kind),
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

    /// The prost-based 1.0 decoder the hand-written one replaced: the
    /// reference the property tests below compare against.
    fn decode_v1_prost(
        buf: Bytes,
        limits: &RemoteWriteReceiverConfig,
    ) -> Result<Decoded, WriteError> {
        let req = ingest::WriteRequest::decode(buf)
            .map_err(|e| WriteError::BadData(format!("invalid WriteRequest protobuf: {e}")))?;
        check_series_limit(req.timeseries.len(), limits)?;
        let mut out = Decoded {
            series: req.timeseries.len(),
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
            let help = utf8(&m.help, "help", &none)?;
            let unit = utf8(&m.unit, "unit", &none)?;
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

    /// Ok answers equal (sample bits included), or both refuse the same way.
    fn same_decoding(
        a: &Result<Decoded, WriteError>,
        b: &Result<Decoded, WriteError>,
    ) -> Result<(), String> {
        match (a, b) {
            (Ok(a), Ok(b)) => {
                let key = |d: &Decoded| {
                    d.samples
                        .iter()
                        .map(|(l, t, v)| (l.to_string(), *t, v.to_bits()))
                        .collect::<Vec<_>>()
                };
                if key(a) != key(b)
                    || a.metadata != b.metadata
                    || a.series != b.series
                    || a.exemplars != b.exemplars
                {
                    return Err(format!("{a:?}\n!=\n{b:?}"));
                }
                Ok(())
            }
            (Err(a), Err(b)) if std::mem::discriminant(a) == std::mem::discriminant(b) => Ok(()),
            (a, b) => Err(format!("{a:?}\n!=\n{b:?}")),
        }
    }

    fn any_request() -> impl proptest::strategy::Strategy<Value = ingest::WriteRequest> {
        use proptest::prelude::*;
        let bytes = || {
            prop_oneof![
                4 => "[a-c_]{0,3}".prop_map(|s| Bytes::from(s.into_bytes())),
                1 => proptest::collection::vec(any::<u8>(), 0..4).prop_map(Bytes::from),
                1 => Just(Bytes::from_static(b"__name__")),
            ]
        };
        let label = (bytes(), bytes()).prop_map(|(name, value)| ingest::Label { name, value });
        let sample = (any::<i64>(), any::<f64>())
            .prop_map(|(timestamp, value)| ingest::Sample { value, timestamp });
        let series = (
            proptest::collection::vec(label, 0..4),
            proptest::collection::vec(sample, 0..3),
            0..2usize,
            prop_oneof![8 => Just(0usize), 1 => Just(1usize)],
        )
            .prop_map(|(mut labels, samples, ex, hist)| {
                // Mostly valid, sorted label sets, so decoding gets past
                // validation and the samples are compared too.
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                ingest::TimeSeries {
                    labels,
                    samples,
                    exemplars: vec![Bytes::from_static(b"e"); ex],
                    histograms: vec![Bytes::new(); hist],
                }
            });
        let meta = (0..9i32, bytes(), bytes()).prop_map(|(t, n, h)| ingest::MetricMetadata {
            r#type: t,
            metric_family_name: n,
            help: h,
            unit: Bytes::new(),
        });
        (
            proptest::collection::vec(series, 0..5),
            proptest::collection::vec(meta, 0..2),
        )
            .prop_map(|(timeseries, metadata)| ingest::WriteRequest {
                timeseries,
                metadata,
            })
    }

    #[test]
    fn hand_decoder_reads_what_prost_writes() {
        // Labels and a sample with every field, a negative timestamp, an
        // unknown field, and metadata: the same as the reference decoder.
        let mut body = pb::WriteRequest {
            timeseries: vec![
                ts(
                    &[("__name__", "up"), ("job", "a")],
                    &[(-5, 1.5), (i64::MAX, f64::NAN)],
                ),
                ts(&[("__name__", "x")], &[(0, 0.0)]),
            ],
            metadata: vec![pb::MetricMetadata {
                r#type: 2,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: "u".into(),
            }],
        }
        .encode_to_vec();
        // Field 15, varint 7: unknown to both decoders.
        body.extend_from_slice(&[15 << 3, 7]);
        let ours = decode_v1(Bytes::from(body.clone()), &limits());
        same_decoding(&ours, &decode_v1_prost(Bytes::from(body), &limits())).unwrap();
        assert_eq!(ours.unwrap().samples[0].1, -5);
        // The usual label set takes the fast path.
        assert_eq!(
            canonical_fast(&[("__name__", "up"), ("job", "a")]),
            Some(Labels::from_pairs([("__name__", "up"), ("job", "a")]))
        );
    }

    #[test]
    fn hand_decoder_refuses_bad_framing() {
        for body in [
            &b"\x0a\x05\x0a\x03"[..], // series longer than the body
            b"\x0a\x02\x12\x00\x0a",  // trailing key without value
            b"\x08\x01",              // timeseries as a varint
            b"\x0a\x02\x10\x01",      // labels as a varint
            b"\x00\x01",              // field number 0
            b"\x0a\x03\x12\x01\x0d",  // Sample.value as fixed32
            b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", // varint overflow
        ] {
            let b = Bytes::copy_from_slice(body);
            assert!(
                matches!(decode_v1(b.clone(), &limits()), Err(WriteError::BadData(_))),
                "{body:?}"
            );
            assert!(decode_v1_prost(b, &limits()).is_err(), "{body:?}");
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

        /// The hand-written decoder agrees with prost's on any request
        /// prost can encode, valid or not.
        #[test]
        fn hand_decoder_matches_prost(req in any_request()) {
            let body = Bytes::from(req.encode_to_vec());
            let ours = decode_v1(body.clone(), &limits());
            let reference = decode_v1_prost(body, &limits());
            if let Err(e) = same_decoding(&ours, &reference) {
                proptest::prop_assert!(false, "{}", e);
            }
        }

        /// On arbitrary bytes, whatever the hand-written decoder accepts
        /// prost decodes the same way, and whatever prost refuses it
        /// refuses. (It also refuses deprecated group fields, which prost
        /// skips.)
        #[test]
        fn hand_decoder_never_accepts_more_than_prost(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let ours = decode_v1(Bytes::from(body.clone()), &limits());
            let reference = decode_v1_prost(Bytes::from(body), &limits());
            if ours.is_ok() || reference.is_err() {
                if let Err(e) = same_decoding(&ours, &reference) {
                    proptest::prop_assert!(false, "{}", e);
                }
            }
        }

        /// The fast label path gives what `Labels::from_wire` gives.
        #[test]
        fn fast_labels_equal_from_wire(
            pairs in proptest::collection::vec(("(__name__|[a-c_][a-c0-9_]{0,2}|0x|)", "[a-c:0-9]{0,3}"), 0..5),
        ) {
            let strs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            if let Some(fast) = canonical_fast(&strs) {
                proptest::prop_assert_eq!(Ok(fast), Labels::from_wire(strs.iter().copied()));
            }
            let raw: Vec<(&[u8], &[u8])> = strs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
            match (labels_of(&raw), Labels::from_wire(strs.iter().copied())) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
                (Err(WriteError::BadData(a)), Err(b)) => proptest::prop_assert_eq!(a, b.to_string()),
                (a, b) => proptest::prop_assert!(false, "{:?} vs {:?}", a, b),
            }
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
