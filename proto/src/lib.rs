//! `pharos-proto`: protobuf and gRPC definitions (Prometheus remote-write
//! `prompb`, `io.prometheus.write.v2`, Pharos's internal services) and their
//! generated prost code. Nothing else lives here: validation and conversion
//! to storage types belong to the crates that use the messages.
//!
//! The `.proto` sources are in `proto/proto/`, each noting the upstream
//! version it follows; `build.rs` compiles them with `protox` (no system
//! `protoc`).

/// Prometheus remote write 1.0 and remote read (`package prometheus`).
#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Prometheus remote write 2.0 (`package io.prometheus.write.v2`).
#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod write_v2 {
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
}

/// Pharos's decoding view of both remote-write versions: the same wire
/// format with `bytes` for strings (see `proto/pharos/ingest.proto`).
#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod ingest {
    include!(concat!(env!("OUT_DIR"), "/pharos.ingest.rs"));
}

/// The meta group's Raft RPCs and leader forwarding (`package pharos.meta`),
/// with tonic client and server stubs.
#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod meta {
    include!(concat!(env!("OUT_DIR"), "/pharos.meta.rs"));
}

/// The data path between cluster nodes: replicated writes and fan-out
/// reads (`package pharos.cluster`), with tonic stubs.
#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod cluster {
    include!(concat!(env!("OUT_DIR"), "/pharos.cluster.rs"));
}

pub use prost;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn write_request_round_trips() {
        let req = prometheus::WriteRequest {
            timeseries: vec![prometheus::TimeSeries {
                labels: vec![prometheus::Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![prometheus::Sample {
                    value: 1.5,
                    timestamp: 1000,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let bytes = req.encode_to_vec();
        let back = prometheus::WriteRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, req);
    }

    /// The 2.0 message reserves the 1.0 field numbers, so a 1.0 body read
    /// as 2.0 is an empty request (what the spec intends), not garbage.
    #[test]
    fn v1_body_decodes_as_empty_v2() {
        let req = prometheus::WriteRequest {
            timeseries: vec![prometheus::TimeSeries::default()],
            metadata: vec![],
        };
        let v2 = write_v2::Request::decode(req.encode_to_vec().as_slice()).unwrap();
        assert!(v2.symbols.is_empty() && v2.timeseries.is_empty());
    }

    /// Field numbers of the wire format, checked byte by byte: a hand-built
    /// `Sample{value: 1.0, timestamp: 2}` (tag 0x09 fixed64, tag 0x10 varint).
    /// The ingest view decodes real 1.0 and 2.0 bodies field for field.
    #[test]
    fn ingest_view_is_wire_compatible() {
        let req = prometheus::WriteRequest {
            timeseries: vec![prometheus::TimeSeries {
                labels: vec![prometheus::Label {
                    name: "a".into(),
                    value: "b".into(),
                }],
                samples: vec![prometheus::Sample {
                    value: 2.0,
                    timestamp: 7,
                }],
                ..Default::default()
            }],
            metadata: vec![prometheus::MetricMetadata {
                r#type: 1,
                metric_family_name: "m".into(),
                help: "h".into(),
                unit: "u".into(),
            }],
        };
        let raw = ingest::WriteRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(&raw.timeseries[0].labels[0].value[..], b"b");
        assert_eq!(raw.timeseries[0].samples[0].timestamp, 7);
        assert_eq!(&raw.metadata[0].unit[..], b"u");
        let v2 = write_v2::Request {
            symbols: vec!["".into(), "a".into(), "b".into()],
            timeseries: vec![write_v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: vec![write_v2::Sample {
                    value: 1.0,
                    timestamp: 3,
                }],
                metadata: Some(write_v2::Metadata {
                    r#type: 2,
                    help_ref: 1,
                    unit_ref: 0,
                }),
                ..Default::default()
            }],
        };
        let raw = ingest::RequestV2::decode(v2.encode_to_vec().as_slice()).unwrap();
        assert_eq!(raw.symbols.len(), 3);
        assert_eq!(raw.timeseries[0].labels_refs, vec![1, 2]);
        assert_eq!(raw.timeseries[0].metadata.as_ref().unwrap().r#type, 2);
    }

    #[test]
    fn sample_wire_bytes() {
        let s = prometheus::Sample {
            value: 1.0,
            timestamp: 2,
        };
        let mut want = vec![0x09];
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0x02]);
        assert_eq!(s.encode_to_vec(), want);
    }
}
