//! Generates the prost code for the protos in `proto/` with `protox` (a pure
//! Rust protobuf compiler), so building needs no system `protoc`.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/prometheus/types.proto",
        "proto/prometheus/remote.proto",
        "proto/io/prometheus/write/v2/types.proto",
        "proto/pharos/ingest.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, [Path::new("proto")])?;
    prost_build::Config::new()
        // Decoding from `Bytes` into `Bytes` fields borrows instead of copying.
        .bytes([".prometheus.Chunk.data", ".pharos.ingest"])
        .compile_fds(descriptors)?;

    // Services with tonic stubs (messages and client/server code).
    let services = ["proto/pharos/meta.proto", "proto/pharos/cluster.proto"];
    for f in &services {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(services, [Path::new("proto")])?;
    tonic_prost_build::configure()
        // Chunk and label bytes are passed on without copying.
        .bytes(".pharos.cluster")
        .compile_fds(descriptors)?;
    Ok(())
}
