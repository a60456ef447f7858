//! Fuzz target: `flatten::flatten` for each kind on arbitrary JSON parsed from the bytes;
//! see `jumio_export_fuzz::flatten_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jumio_export_fuzz::flatten_json(data));
