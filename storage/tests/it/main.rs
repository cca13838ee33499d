//! Integration tests of `pharos-storage` (one binary, see STYLE.md).

mod common;
mod crash;
mod db_faults;
mod wal_faults;
mod wal_perf;
