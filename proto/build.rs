//! Generates the prost code for the protos in `proto/` with `protox` (a pure
//! Rust protobuf compiler), so building needs no system `protoc`.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/prometheus/types.proto",
        "proto/prometheus/remote.proto",
        "proto/io/prometheus/write/v2/types.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, [Path::new("proto")])?;
    prost_build::Config::new()
        // Label values, symbols and chunk data are handed to storage as is.
        .bytes([".prometheus.Chunk.data"])
        .compile_fds(descriptors)?;
    Ok(())
}
