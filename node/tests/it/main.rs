//! Integration tests of the `pharos` server: real sockets on 127.0.0.1 port
//! 0, in-process nodes, the built binary, and (when installed) a real
//! Prometheus 2.42 as remote-write client and remote-read client.

// Test helpers may unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

mod api;
mod bench;
mod cli;
mod cluster;
mod common;
mod differential;
mod differential_queries;
mod grafana;
mod prometheus;
mod remote_read;
mod remote_write;
mod scrape;
mod scrape_alerting;
mod security;
