//! Integration tests of `pharos-meta` (one binary, modules by concern).

mod storage_suite;
