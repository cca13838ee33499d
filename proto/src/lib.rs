//! `pharos-proto`: protobuf and gRPC definitions (Prometheus remote-write
//! `prompb`, `io.prometheus.write.v2`, Pharos's internal services) and their
//! generated prost/tonic code. Nothing else lives here.
//!
//! Generated code is added with the remote-write receiver (issue 4) and the
//! internal services (issue 7); until then this crate is empty on purpose.
