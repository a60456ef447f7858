//! Fuzz target: `origin::check_href` with fixed bases; see `jumio_export_fuzz::origin_check`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|href: &str| jumio_export_fuzz::origin_check(href));
