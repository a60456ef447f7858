//! Fuzz target: `input::parse_input` on arbitrary bytes (default kind netverify) and
//! `input::is_valid_reference` on each line; see `jumio_export_fuzz::reference_parser`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jumio_export_fuzz::reference_parser(data));
