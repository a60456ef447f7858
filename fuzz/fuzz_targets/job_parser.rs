//! Fuzz target: `job::parse` on arbitrary UTF-8; see `jumio_export_fuzz::job_parser`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| jumio_export_fuzz::job_parser(text));
