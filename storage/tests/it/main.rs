//! Integration tests of `pharos-storage` (one binary, see STYLE.md).

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;
mod crash;
mod db_blocks;
mod db_crash;
mod db_faults;
mod wal_faults;
mod wal_perf;
