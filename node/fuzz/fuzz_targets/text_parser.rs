#![no_main]
//! Prometheus text format 0.0.4 parser: never panics, always terminates.

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::run(data, common::exposition::Format::PromText);
});
