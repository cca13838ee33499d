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
