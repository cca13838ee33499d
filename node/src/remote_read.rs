//! The remote-read endpoint (`POST /api/v1/read`): Prometheus's
//! `prometheus.ReadRequest`, snappy-compressed, answered either with a
//! sampled `ReadResponse` (snappy-compressed) or, when the client lists
//! `STREAMED_XOR_CHUNKS` first among its accepted types, with a stream of
//! `ChunkedReadResponse` frames (uvarint length, big-endian CRC32-Castagnoli
//! of the message, message) carrying the stored XOR chunks as is, sent as they are produced.
//!
//! Reads go through the state's [`Queryable`] only; limits bound the
//! request size and the samples of a sampled answer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use pharos_proto::prometheus as pb;
use pharos_query::queryable::Queryable;
use pharos_storage::chunk::{SampleIterator, ValueType};
use pharos_storage::labels::{MatchType, Matcher};
use pharos_storage::querier::SelectHints;
use pharos_storage::series::Series;
use prost::Message;
use tokio::sync::mpsc;

use crate::http::AppState;

/// Largest decompressed ReadRequest.
const MAX_REQUEST_BYTES: usize = 32 << 20;
/// Most samples in one sampled answer (Prometheus's
/// `--storage.remote.read-sample-limit` default).
const MAX_SAMPLES: usize = 50_000_000;
/// Target size of one streamed frame (Prometheus uses 1 MiB).
const FRAME_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    BadData(String),
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for ReadError {
    fn into_response(self) -> Response {
        let status = match self {
            ReadError::BadData(_) => StatusCode::BAD_REQUEST,
            ReadError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, format!("{self}\n")).into_response()
    }
}

fn matchers(q: &pb::Query) -> Result<Vec<Matcher>, ReadError> {
    q.matchers
        .iter()
        .map(|m| {
            let kind = match pb::label_matcher::Type::try_from(m.r#type) {
                Ok(pb::label_matcher::Type::Eq) => MatchType::Equal,
                Ok(pb::label_matcher::Type::Neq) => MatchType::NotEqual,
                Ok(pb::label_matcher::Type::Re) => MatchType::Regex,
                Ok(pb::label_matcher::Type::Nre) => MatchType::NotRegex,
                Err(_) => {
                    return Err(ReadError::BadData(format!(
                        "unknown matcher type {}",
                        m.r#type
                    )))
                }
            };
            Matcher::new(kind, &m.name, &m.value)
                .map_err(|e| ReadError::BadData(format!("invalid matcher {}: {e}", m.name)))
        })
        .collect()
}

fn select(q: &dyn Queryable, query: &pb::Query) -> Result<Vec<Series>, ReadError> {
    let ms = matchers(query)?;
    let hints = query.hints.as_ref().map(|h| SelectHints {
        start: h.start_ms,
        end: h.end_ms,
        step: h.step_ms,
        range: h.range_ms,
        func: (!h.func.is_empty()).then(|| h.func.clone()),
        grouping: h.grouping.clone(),
        by: h.by,
    });
    q.select(
        query.start_timestamp_ms,
        query.end_timestamp_ms,
        &ms,
        hints.as_ref(),
    )
    .map_err(|e| ReadError::Internal(e.to_string()))
}

fn pb_labels(s: &Series) -> Vec<pb::Label> {
    s.labels
        .iter()
        .map(|(n, v)| pb::Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// The sampled answer for all queries.
fn sampled(q: &dyn Queryable, req: &pb::ReadRequest) -> Result<pb::ReadResponse, ReadError> {
    let mut total = 0usize;
    let mut results = Vec::with_capacity(req.queries.len());
    for query in &req.queries {
        let mut timeseries = Vec::new();
        for s in select(q, query)? {
            let mut it = s.iter_range(query.start_timestamp_ms, query.end_timestamp_ms);
            let mut samples = Vec::new();
            while it.next() == ValueType::Float {
                let (t, v) = it.at();
                samples.push(pb::Sample {
                    value: v,
                    timestamp: t,
                });
            }
            if let Some(e) = it.err() {
                return Err(ReadError::Internal(format!(
                    "reading series {}: {e}",
                    s.labels
                )));
            }
            if samples.is_empty() {
                continue;
            }
            total += samples.len();
            if total > MAX_SAMPLES {
                return Err(ReadError::BadData(format!(
                    "exceeded sample limit ({MAX_SAMPLES})"
                )));
            }
            timeseries.push(pb::TimeSeries {
                labels: pb_labels(&s),
                samples,
                ..Default::default()
            });
        }
        results.push(pb::QueryResult { timeseries });
    }
    Ok(pb::ReadResponse { results })
}

/// Appends one frame: uvarint length, CRC32C (big endian), message.
fn push_frame(out: &mut Vec<u8>, msg: &pb::ChunkedReadResponse) {
    let body = msg.encode_to_vec();
    prost::encoding::encode_varint(body.len() as u64, out);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Sends the streamed answer frame by frame (each about [`FRAME_BYTES`])
/// into `tx`; stops early when the client has gone away. An error after the
/// first frame can only cut the stream short, which the client detects
/// (Prometheus does the same).
fn stream_frames(
    q: &dyn Queryable,
    req: &pb::ReadRequest,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), ReadError> {
    let mut buf = Vec::new();
    let send = |buf: &mut Vec<u8>, frame: &pb::ChunkedReadResponse| -> bool {
        push_frame(buf, frame);
        tx.blocking_send(Ok(Bytes::from(std::mem::take(buf))))
            .is_ok()
    };
    for (i, query) in req.queries.iter().enumerate() {
        let mut frame = pb::ChunkedReadResponse {
            chunked_series: Vec::new(),
            query_index: i as i64,
        };
        let mut frame_bytes = 0;
        for s in select(q, query)? {
            let chunks: Vec<pb::Chunk> = s
                .chunks
                .iter()
                .filter(|c| c.overlaps(query.start_timestamp_ms, query.end_timestamp_ms))
                .map(|c| pb::Chunk {
                    min_time_ms: c.min_time,
                    max_time_ms: c.max_time,
                    r#type: pb::chunk::Encoding::Xor as i32,
                    data: Bytes::copy_from_slice(c.chunk.bytes()),
                })
                .collect();
            if chunks.is_empty() {
                continue;
            }
            frame_bytes += chunks.iter().map(|c| c.data.len() + 24).sum::<usize>();
            frame.chunked_series.push(pb::ChunkedSeries {
                labels: pb_labels(&s),
                chunks,
            });
            if frame_bytes >= FRAME_BYTES {
                if !send(&mut buf, &frame) {
                    return Ok(());
                }
                frame.chunked_series.clear();
                frame_bytes = 0;
            }
        }
        if !frame.chunked_series.is_empty() && !send(&mut buf, &frame) {
            return Ok(());
        }
    }
    Ok(())
}

/// A response body fed by a channel, so frames leave as they are made.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

fn streamed_response(q: Arc<dyn Queryable>, req: pb::ReadRequest) -> Response {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = stream_frames(q.as_ref(), &req, &tx) {
            tracing::warn!(error = %e, "remote read stream cut short");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse",
        )],
        Body::new(ChannelBody { rx }),
    )
        .into_response()
}

/// The axum handler.
pub async fn handle(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let run = async {
        let body = tokio::time::timeout(
            crate::http::params::BODY_TIMEOUT,
            axum::body::to_bytes(body, st.settings.remote_write.max_compressed_bytes),
        )
        .await
        .map_err(|_| ReadError::BadData("timed out reading the request body".into()))?
        .map_err(|e| ReadError::BadData(format!("could not read body: {e}")))?;
        let q = Arc::clone(&st.queryable);
        tokio::task::spawn_blocking(move || {
            let raw = crate::remote_write::decompress(&body, MAX_REQUEST_BYTES)
                .map_err(|e| ReadError::BadData(e.to_string()))?;
            let req = pb::ReadRequest::decode(raw.as_slice())
                .map_err(|e| ReadError::BadData(format!("invalid ReadRequest protobuf: {e}")))?;
            let wants_stream = req.accepted_response_types.first()
                == Some(&(pb::read_request::ResponseType::StreamedXorChunks as i32));
            if wants_stream {
                Ok::<_, ReadError>(streamed_response(q, req))
            } else {
                let resp = sampled(q.as_ref(), &req)?;
                let compressed = snap::raw::Encoder::new()
                    .compress_vec(&resp.encode_to_vec())
                    .map_err(|e| ReadError::Internal(format!("snappy: {e}")))?;
                Ok((
                    [
                        (header::CONTENT_TYPE, "application/x-protobuf"),
                        (header::CONTENT_ENCODING, "snappy"),
                    ],
                    compressed,
                )
                    .into_response())
            }
        })
        .await
        .map_err(|e| ReadError::Internal(format!("read task failed: {e}")))?
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
