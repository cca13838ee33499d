//! Integration tests of `pharos-meta` (one binary, modules by concern).

mod client_suite;
mod cluster;
mod storage_suite;
