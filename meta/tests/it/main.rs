//! Integration tests of `pharos-meta` (one binary, modules by concern).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod client_suite;
mod cluster;
mod grpc;
mod storage_suite;
