//! The fuzz targets' checks in the normal suite. `fuzz/src/lib.rs` (included below) holds the
//! check each fuzz target runs; here the same functions replay:
//! - the seed corpus of every target, `fuzz/seeds/<target>/` (all five targets; a target without
//!   seeds fails the test);
//! - the crash inputs kept under `tests/fixtures/fuzz-regressions/<target>/`. These were not found
//!   by the fuzzer: they were found by reading the code behind each target and confirmed by
//!   replaying them through its check (it failed before the fix); the recorded fuzzing runs found
//!   no crash (`fuzz/RESULTS.md`). The named tests below pin each fix to the behaviour a user sees.

use std::fs;
use std::path::{Path, PathBuf};

use jumio_export::Kind;
use jumio_export::api::limiter::RateLimiter;
use jumio_export::input::parse_input;
use jumio_export::job::{self, Overrides, Shard};

#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-regressions")
}

/// Every kept input of every target, replayed; a panic names the file.
#[test]
fn every_kept_fuzz_input_passes_its_target_check() {
    let root = regressions_dir();
    let mut replayed = 0;
    for dir in fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let target = dir.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            fuzz_checks::TARGETS.contains(&target.as_str()),
            "{} is not named after a fuzz target",
            dir.display()
        );
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let data = fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| fuzz_checks::check(&target, &data));
            assert!(outcome.is_ok(), "{} fails its check", file.display());
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no fuzz regression inputs under {}",
        root.display()
    );
}

/// The committed seed corpus: one directory per fuzz target, none empty, every file replayed
/// through the check its target runs. Text targets see only UTF-8 (as libFuzzer's `&str`
/// targets do), so their seeds must be UTF-8 or the check would never run on them.
#[test]
fn every_fuzz_seed_passes_its_target_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut dirs: Vec<String> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    let mut targets = fuzz_checks::TARGETS.to_vec();
    targets.sort();
    assert_eq!(dirs, targets, "one seed directory per fuzz target");
    for target in fuzz_checks::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds in {}", dir.display());
        let mut replayed = 0;
        for file in files {
            let data = fs::read(&file).unwrap();
            if matches!(target, "job_parser" | "retry_after" | "origin_check") {
                assert!(
                    std::str::from_utf8(&data).is_ok(),
                    "{} is not UTF-8: the {target} check never sees it",
                    file.display()
                );
            }
            let outcome = std::panic::catch_unwind(|| fuzz_checks::check(target, &data));
            assert!(outcome.is_ok(), "{} fails its check", file.display());
            replayed += 1;
        }
        assert!(replayed > 0, "{target}");
    }
}

fn kept(target: &str, file: &str) -> Vec<u8> {
    fs::read(regressions_dir().join(target).join(file)).unwrap()
}

// ---- reference_parser: input::parse_input ---------------------------------------------

/// The quick header look split on commas and saw `reference`; the CSV reader, honouring
/// quotes and column-1 comments, did not, and `parse_csv` panicked on an `expect`.
#[test]
fn csv_header_the_reader_sees_without_reference_is_an_error_not_a_panic() {
    for file in [
        "unterminated-quote-around-reference-header.csv",
        "reference-inside-a-quoted-header-field.csv",
        "indented-comment-before-the-header.csv",
    ] {
        let err = parse_input(&kept("reference_parser", file), "in.csv", Kind::Netverify)
            .expect_err(file)
            .to_string();
        assert!(
            err.starts_with("in.csv:") && err.contains("no `reference` column"),
            "{file}: {err}"
        );
    }
}

// ---- job_parser: job::parse ------------------------------------------------------------

fn job_error(text: &[u8], overrides: &Overrides) -> String {
    let text = std::str::from_utf8(text).unwrap();
    job::parse(text, Path::new("jobs/x.toml"), overrides)
        .expect_err("accepted")
        .to_string()
}

/// `requests_per_second = 5e-324` passed "finite and > 0", then `RateLimiter::new`
/// panicked computing a period of 1/rate seconds.
#[test]
fn subnormal_rate_is_refused_before_the_rate_limiter_panics() {
    let err = job_error(
        &kept("job_parser", "subnormal-rate.toml"),
        &Overrides::default(),
    );
    assert!(
        err.starts_with("jobs/x.toml:4: [limits] requests_per_second: must be at least 0.001"),
        "{err}"
    );
    // The same through --rate, and a fine rate split over absurdly many shards.
    let minimal = b"[api]\nuser_agent = \"x\"\n";
    let err = job_error(
        minimal,
        &Overrides {
            rate: Some(1e-300),
            ..Overrides::default()
        },
    );
    assert!(err.starts_with("--rate: must be at least 0.001"), "{err}");
    let err = job_error(
        minimal,
        &Overrides {
            shard: Some(
                Shard {
                    index: 0,
                    count: u32::MAX,
                }
                .into(),
            ),
            ..Overrides::default()
        },
    );
    assert!(err.starts_with("--shard: must be at least 0.001"), "{err}");
    // The slowest accepted rate still builds a limiter.
    let job = job::parse(
        "[api]\nuser_agent = \"x\"\n[limits]\nrequests_per_second = 0.001\n",
        Path::new("jobs/x.toml"),
        &Overrides::default(),
    )
    .unwrap();
    let _ = RateLimiter::new(job.limits.requests_per_second, job.limits.burst);
}

/// `timeout_seconds = 1e-10` is greater than 0 but became a zero timeout, failing every
/// request.
#[test]
fn sub_nanosecond_timeout_is_refused_like_zero() {
    let err = job_error(
        &kept("job_parser", "sub-nanosecond-timeout.toml"),
        &Overrides::default(),
    );
    assert_eq!(
        err,
        "jobs/x.toml:4: [limits] timeout_seconds: must be greater than 0 and at most 86400"
    );
}

/// `[1e-10, 2e-10]` is increasing as floats, but both offsets round to zero nanoseconds:
/// the schedule the poller got was not strictly increasing.
#[test]
fn schedule_offsets_equal_once_rounded_to_nanoseconds_are_refused() {
    let err = job_error(
        &kept("job_parser", "schedule-rounding-to-equal-offsets.toml"),
        &Overrides::default(),
    );
    assert!(
        err.starts_with("jobs/x.toml:4: [polling] schedule_seconds: must be strictly increasing"),
        "{err}"
    );
}

/// `burst = 4294967295` at 0.2 requests per second was accepted; governor then multiplied
/// the 5 s period by the burst in u64 nanoseconds and overflowed (a panic in debug builds,
/// a wrapped and meaningless burst window in release builds).
#[test]
fn huge_burst_at_a_low_rate_is_refused_before_governor_overflows() {
    let err = job_error(
        &kept("job_parser", "huge-burst-at-low-rate.toml"),
        &Overrides::default(),
    );
    assert_eq!(
        err,
        "jobs/x.toml:5: [limits] burst: must be at most 1000000"
    );
    // The extremes still accepted build a limiter without overflow.
    let job = job::parse(
        "[api]\nuser_agent = \"x\"\n[limits]\nrequests_per_second = 0.001\nburst = 1000000\n",
        Path::new("jobs/x.toml"),
        &Overrides::default(),
    )
    .unwrap();
    let _ = RateLimiter::new(job.limits.requests_per_second, job.limits.burst);
}
