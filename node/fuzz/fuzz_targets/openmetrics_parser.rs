#![no_main]
//! OpenMetrics 1.0 text parser: never panics, always terminates.

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::run(data, common::exposition::Format::OpenMetrics);
});
