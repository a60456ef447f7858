//! The checks behind every fuzz target, shared with the normal test suite:
//! `tests/regressions.rs` includes this file (`#[path]`) and replays every seed under
//! `fuzz/seeds/<target>/` and every crash input kept under
//! `tests/fixtures/fuzz-regressions/<target>/` through the same function the fuzz target
//! runs, so `cargo test` runs the checks without libFuzzer and a fixed crash stays fixed.
//!
//! Each check panics (assert) when an invariant breaks; a panic inside the library under
//! test is a crash too.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use jumio_export::Kind;
use jumio_export::api::limiter::RateLimiter;
use jumio_export::api::origin::check_href;
use jumio_export::api::retry::parse_retry_after;
use jumio_export::flatten::{ArchiveSummary, flatten, table_columns};
use jumio_export::input::{is_valid_reference, parse_input};
use jumio_export::job::{Overrides, parse};
use reqwest::Url;
use reqwest::header::HeaderValue;

/// The fuzz targets, by directory name under `fuzz/seeds/` and `tests/fixtures/fuzz-regressions/`.
pub const TARGETS: [&str; 5] = [
    "reference_parser",
    "job_parser",
    "retry_after",
    "origin_check",
    "flatten",
];

/// Runs the check of `target` on `data`. Panics on an unknown target name.
pub fn check(target: &str, data: &[u8]) {
    // Targets that take text see only UTF-8 inputs, as libFuzzer's `&str` targets do.
    let text = std::str::from_utf8(data);
    match (target, text) {
        ("reference_parser", _) => reference_parser(data),
        ("job_parser", Ok(text)) => job_parser(text),
        ("retry_after", Ok(text)) => retry_after(text),
        ("origin_check", Ok(text)) => origin_check(text),
        ("flatten", _) => flatten_json(data),
        ("job_parser" | "retry_after" | "origin_check", Err(_)) => {}
        (other, _) => panic!("unknown fuzz target {other}"),
    }
}

/// `input::parse_input` (default kind netverify) and `input::is_valid_reference`: accepted
/// references are valid and unique, rejected lines are printable and at most 100 characters.
pub fn reference_parser(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            // The rule restated independently: 1 to 36 of [A-Za-z0-9-].
            let expected = !line.is_empty()
                && line.len() <= 36
                && line.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            assert_eq!(
                is_valid_reference(line),
                expected,
                "is_valid_reference({line:?})"
            );
        }
    }
    match parse_input(data, "fuzz", Kind::Netverify) {
        Ok(list) => {
            let mut seen = HashSet::new();
            for item in list.items.read_all().expect("spool") {
                assert!(is_valid_reference(&item.reference), "{:?}", item.reference);
                assert!(
                    seen.insert((item.reference.clone(), item.kind)),
                    "duplicate item {:?}",
                    item.reference
                );
            }
            for rejected in &list.rejected {
                assert!(rejected.raw.chars().count() <= 100, "raw too long");
                assert!(
                    !rejected.raw.chars().any(char::is_control),
                    "raw keeps a control character: {:?}",
                    rejected.raw
                );
                assert!(rejected.line >= 1);
            }
        }
        Err(e) => drop(e.to_string()),
    }
}

/// `job::parse`: `Ok` or a `JobError`, never a panic; an accepted job holds usable limits
/// (the rate limiter and User-Agent header the run builds from it must not fail).
pub fn job_parser(text: &str) {
    match parse(text, Path::new("fuzz/job.toml"), &Overrides::default()) {
        Ok(job) => {
            let limits = &job.limits;
            assert!(limits.requests_per_second.is_finite() && limits.requests_per_second > 0.0);
            assert!(limits.burst >= 1);
            assert!(limits.concurrency >= 1);
            assert!(!limits.timeout.is_zero(), "zero request timeout accepted");
            assert!(!job.polling.schedule.is_empty());
            assert!(
                job.polling.schedule.windows(2).all(|w| w[0] < w[1]),
                "schedule not strictly increasing: {:?}",
                job.polling.schedule
            );
            let _ = RateLimiter::new(limits.requests_per_second, limits.burst);
            assert!(HeaderValue::from_str(&job.api.user_agent).is_ok());
        }
        // Formatting the error must not panic either.
        Err(e) => drop(e.to_string()),
    }
}

/// `retry::parse_retry_after` against three clocks: never above one hour, never a panic.
pub fn retry_after(text: &str) {
    let nows = [
        SystemTime::UNIX_EPOCH,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799), // 9999-12-31
    ];
    for now in nows {
        if let Some(d) = parse_retry_after(text, now) {
            assert!(d <= Duration::from_secs(3600), "{text:?} gave {d:?}");
        }
    }
}

/// `origin::check_href` with fixed bases: an accepted href has the base's scheme, host and
/// port, no userinfo, and still has them after a serialise/parse round trip.
pub fn origin_check(href: &str) {
    for base in ["https://netverify.com", "http://127.0.0.1:8080"] {
        let base = Url::parse(base).unwrap();
        if let Ok(url) = check_href(&base, href) {
            assert_eq!(url.scheme(), base.scheme(), "{href:?}");
            assert_eq!(url.host_str(), base.host_str(), "{href:?}");
            assert_eq!(
                url.port_or_known_default(),
                base.port_or_known_default(),
                "{href:?}"
            );
            assert!(url.username().is_empty(), "{href:?} has a user name");
            assert!(url.password().is_none(), "{href:?} has a password");
            let again = Url::parse(url.as_str()).expect("a checked URL re-parses");
            assert_eq!(again.host_str(), base.host_str(), "{href:?}");
            assert_eq!(again.port_or_known_default(), base.port_or_known_default());
        }
    }
}

/// `flatten::flatten` for each kind on JSON parsed from `data`: the row always has exactly
/// `table_columns(kind).len()` cells.
pub fn flatten_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let summary = ArchiveSummary {
        image_count: 0,
        archive: "archives/r.zip".into(),
        archive_sha256: String::new(),
        run: "20261206T074501Z-7f2a".into(),
    };
    for kind in Kind::ALL {
        let row = flatten(kind, "r", &value, &summary);
        assert_eq!(row.0.len(), table_columns(kind).len(), "{kind}");
    }
}
