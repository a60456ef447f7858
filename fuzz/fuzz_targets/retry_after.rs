//! Fuzz target: `retry::parse_retry_after` on arbitrary UTF-8; see
//! `jumio_export_fuzz::retry_after`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| jumio_export_fuzz::retry_after(text));
