//! Politeness that converges (issue 15): the job configured at 30 requests per second against a
//! simulator that enforces 15 the way Jumio does — 429 without `Retry-After`, a sliding
//! one-second window, refused requests counted in it or not — and against a ceiling that changes
//! mid-run and one that two processes share. Every figure comes from the simulator's request log
//! (arrival timestamps and statuses), judged after the first 10 s: the share of requests answered
//! 429, and the requests served (not 429) against what the ceiling allowed in that window. The
//! job runs as a separate process of the binary, as users run it.
//!
//! Long tests: each throttled scenario runs 26–36 s (a rate needs a window of seconds to be
//! measured at all), one at a time ([`serial`]: two at once would measure each other's load), in
//! the normal suite; about two and a half minutes in all. The thresholds are the targets
//! (under 2 % 429s, at least 0.92 of the ceiling), a little wider for a debug build on a loaded
//! 2-core machine; the benchmark (`examples/bench.rs adaptive`, BENCHMARKS.md, release build)
//! measures the targets themselves. The limiter of session 4 fails the changing and the shared
//! ceiling here (about 0.80 and 0.86 of the ceiling), and a job that does not slow down on 429s
//! fails all four.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

// The benchmark's figures (windows, busiest second, the guide's minimum), the same code here.
use crate::bench_smoke::harness::{self, Category, Req};
use jumio_export::Kind;
use jumio_export::simulator::{self, CeilingWindow, Faults, RequestRecord, SimOptions};

use crate::support::{self, BlockingSim};

/// The job's rate and burst in every scenario.
const RATE: f64 = 30.0;
const BURST: u32 = 10;
/// The server's ceiling.
const CEILING: f64 = 15.0;
/// Requests a loaded machine may bunch into the server's busiest second beyond rate + burst.
const JITTER: usize = 5;
/// Figures are judged after this much of the run.
const SKIP: f64 = 10.0;

/// Most 429s, as a share of the requests after [`SKIP`] (the target is 2 %).
const MAX_429_SHARE: f64 = 0.03;
/// The same when the ceiling changes twice within the window (each change costs a few 429s).
const MAX_429_SHARE_CHANGING: f64 = 0.035;
/// Fewest served requests, as a share of what the ceiling allowed after [`SKIP`] (target 0.92).
const MIN_SERVED: f64 = 0.90;
/// The same when the ceiling changes twice within the window (each change costs a second or so).
const MIN_SERVED_CHANGING: f64 = 0.86;
/// Length of the judged window of the steady scenarios.
const SECONDS: f64 = 16.0;

/// One throttled scenario at a time: each measures rates, which a second one running beside it
/// (three more processes on two cores) would disturb.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn job_text(base_url: &str, extra: &str) -> String {
    format!(
        "[api]\nnetverify_url = \"{base_url}\"\nretrieval_url = \"{base_url}\"\n\
         user_agent = \"Test Corp Export/1.0\"\n\
         [limits]\nrequests_per_second = {RATE:?}\nburst = {BURST}\nconcurrency = 32\n\
         timeout_seconds = 10\n{extra}\n\
         [polling]\nschedule_seconds = [0.2, 0.4, 0.6]\n"
    )
}

/// A simulator with `faults` and small files (the rate, not the bytes, is the subject).
fn throttled_sim(faults: Faults) -> BlockingSim {
    BlockingSim::start(SimOptions {
        faults,
        ..SimOptions::default()
    })
}

/// Jumio's ceiling: `CEILING` per sliding second, refused requests counted or not.
fn window(count_refused: bool) -> Faults {
    Faults {
        ceiling_rps: Some(CEILING),
        ceiling_window: CeilingWindow::Sliding { count_refused },
        ..Faults::default()
    }
}

/// One `jumio-export run` process against `sim`, with `args` after the job's.
struct Job {
    child: Child,
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
}

fn spawn(sim: &BlockingSim, refs: &[(String, Kind)], extra_job: &str, args: &[&str]) -> Job {
    let dir = tempfile::tempdir().unwrap();
    let mut list = String::from("reference,kind\n");
    for (r, k) in refs {
        list.push_str(&format!("{r},{k}\n"));
    }
    let (job, input) = support::job_files(
        dir.path(),
        &job_text(&sim.api().base_url(), extra_job),
        "refs.csv",
        &list,
    );
    let out = dir.path().join("out");
    let child = support::bin()
        .arg("run")
        .arg(&job)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--quiet")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Job {
        child,
        _dir: dir,
        out,
    }
}

impl Job {
    /// Interrupts the job (SIGINT, as Ctrl-C) at `at` and waits for it; returns its exit code.
    fn stop_at(&mut self, at: Instant) -> Option<i32> {
        while Instant::now() < at {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        support::signal(self.child.id(), libc::SIGINT);
        self.wait()
    }

    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the job did not stop within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// More references than the job can reach in `seconds` at the ceiling (about ten requests
/// each), so it never runs dry.
fn population(seconds: f64) -> Vec<(String, Kind)> {
    simulator::population(SimOptions::default().seed, (seconds * RATE / 5.0) as usize)
}

fn reqs(log: &[RequestRecord]) -> Vec<Req> {
    log.iter()
        .map(|r| Req {
            t_us: chrono::DateTime::parse_from_rfc3339(&r.time)
                .unwrap()
                .timestamp_micros(),
            status: r.status,
            category: Category::of(&r.path),
        })
        .collect()
}

/// What the log says after [`SKIP`]: requests, 429s, served ÷ allowed, busiest served second.
#[derive(Debug)]
struct Figures {
    requests: usize,
    too_many: usize,
    served_share: f64,
    max_served_per_second: usize,
}

impl Figures {
    fn share_429(&self) -> f64 {
        self.too_many as f64 / self.requests.max(1) as f64
    }
}

/// Judges the window `[SKIP, SKIP + seconds)` after the first request, with the ceiling at
/// `ceiling(t)` requests per second `t` seconds after the first request.
fn figures(log: &[RequestRecord], seconds: f64, ceiling: impl Fn(f64) -> f64) -> Figures {
    let reqs = reqs(log);
    let first = reqs
        .iter()
        .map(|r| r.t_us)
        .min()
        .expect("requests were made");
    let from = first + (SKIP * 1e6) as i64;
    let to = from + (seconds * 1e6) as i64;
    let inside: Vec<Req> = reqs
        .iter()
        .filter(|r| r.t_us >= from && r.t_us < to)
        .copied()
        .collect();
    let too_many = inside.iter().filter(|r| r.status == 429).count();
    let served: Vec<Req> = inside.iter().filter(|r| r.status != 429).copied().collect();
    let allowed: f64 = (0..(seconds * 1000.0) as u64)
        .map(|ms| ceiling(SKIP + (ms as f64 + 0.5) / 1000.0) / 1000.0)
        .sum();
    Figures {
        requests: inside.len(),
        too_many,
        served_share: served.len() as f64 / allowed,
        max_served_per_second: harness::max_in_window(&served, 1_000_000),
    }
}

/// Runs one job against `faults` for `SKIP + seconds` (plus one to drain) and judges it.
fn throttled_run(faults: Faults, seconds: f64, ceiling: impl Fn(f64) -> f64) -> Figures {
    let sim = throttled_sim(faults);
    let refs = population(SKIP + seconds);
    let start = Instant::now();
    let mut job = spawn(&sim, &refs, "", &[]);
    let code = job.stop_at(start + Duration::from_secs_f64(SKIP + seconds + 1.0));
    assert_eq!(code, Some(130), "interrupted while it still had work");
    let f = figures(&sim.api().requests(), seconds, ceiling);
    eprintln!("{f:?}");
    f
}

/// Runs a scenario and holds it to the limits; a run that misses them is run once more, and the
/// second must meet them. These are timing tests of separate processes on a shared machine: CI
/// runs other tests beside them on its two cores, and a burst of that load (a build, a DuckDB
/// read) delays the job's timers and answers past the window's margin for a few seconds (CI saw
/// 6 % 429s for two processes once, where the same build gives 1.7 % alone). A limiter that
/// misses the limits by itself misses them twice.
fn assert_converges(
    what: &str,
    (max_429_share, min_served): (f64, f64),
    run: impl Fn() -> Figures,
) -> Figures {
    let met = |f: &Figures| f.share_429() < max_429_share && f.served_share >= min_served;
    let first = run();
    if met(&first) {
        return first;
    }
    eprintln!("{what}: missed the limits once, run again: {first:?}");
    let second = run();
    assert_converged(&second, what, max_429_share, min_served);
    second
}

fn assert_converged(f: &Figures, what: &str, max_429_share: f64, min_served: f64) {
    assert!(
        f.share_429() < max_429_share,
        "{what}: {:.2} % of requests after {SKIP} s answered 429: {f:?}",
        100.0 * f.share_429()
    );
    assert!(
        f.served_share >= min_served,
        "{what}: served {:.3} of the ceiling after {SKIP} s: {f:?}",
        f.served_share
    );
}

#[test]
fn a_sliding_window_ceiling_is_found_and_held() {
    let _one = serial();
    let f = assert_converges("sliding window", (MAX_429_SHARE, MIN_SERVED), || {
        throttled_run(window(false), SECONDS, |_| CEILING)
    });
    // The server's own rule holds in the log. One over: the log stamps a request when its
    // handler starts and the window admits it a moment later, and on a loaded machine (CI ran
    // it at 16) that gap puts one more served request into some one-second span of the log.
    assert!(f.max_served_per_second <= CEILING as usize + 1, "{f:?}");
}

#[test]
fn a_window_that_counts_refused_requests_is_found_and_held() {
    let _one = serial();
    assert_converges(
        "sliding window, refused requests counted",
        (MAX_429_SHARE, MIN_SERVED),
        || throttled_run(window(true), SECONDS, |_| CEILING),
    );
}

/// 15 → 8 → 15: 9 s at each after the first 10 s.
#[test]
fn a_ceiling_that_drops_and_rises_again_is_followed() {
    let _one = serial();
    let (drop_at, rise_at) = (SKIP + 9.0, SKIP + 18.0);
    let ceiling = move |t: f64| {
        if (drop_at..rise_at).contains(&t) {
            8.0
        } else {
            CEILING
        }
    };
    let faults = Faults {
        ceiling_changes: vec![(drop_at, 8.0), (rise_at, CEILING)],
        ..window(true)
    };
    assert_converges(
        "15 → 8 → 15",
        (MAX_429_SHARE_CHANGING, MIN_SERVED_CHANGING),
        || throttled_run(faults.clone(), 27.0, ceiling),
    );
}

/// Two shards of one job, two processes, one tenant ceiling: each backs off on its own 429s,
/// and their sum converges on the ceiling.
#[test]
fn two_processes_sharing_one_ceiling_converge_on_it_together() {
    let _one = serial();
    let seconds = SECONDS;
    assert_converges("two processes", (MAX_429_SHARE, MIN_SERVED), || {
        let sim = throttled_sim(window(true));
        let refs = population(SKIP + seconds);
        let start = Instant::now();
        // `--shard K/2` halves the rate: 15 per second each, 30 together.
        let mut jobs: Vec<Job> = (0..2)
            .map(|k| spawn(&sim, &refs, "", &["--shard", &format!("{k}/2")]))
            .collect();
        let stop = start + Duration::from_secs_f64(SKIP + seconds + 1.0);
        for job in &mut jobs {
            assert_eq!(job.stop_at(stop), Some(130));
        }
        let f = figures(&sim.api().requests(), seconds, |_| CEILING);
        eprintln!("{f:?}");
        f
    });
}

/// Without a server ceiling the adaptive layer stays out of the way: the configured rate is
/// achieved (at least 0.97 of it), no second sees more than rate + burst, and a complete export
/// makes exactly the requests the guide's flow needs.
#[test]
fn without_throttling_the_configured_rate_holds_and_requests_are_the_minimum() {
    let _one = serial();
    let sim = throttled_sim(Faults::default());
    let refs = support::exportable(40);
    let mut job = spawn(&sim, &refs, "", &[]);
    assert_eq!(job.wait(), Some(0));
    let log = reqs(&sim.api().requests());
    assert!(log.iter().all(|r| r.status == 200), "no faults, no 429");
    let minimum: u64 = harness::minimum_requests(SimOptions::default().seed, &refs, 4)
        .values()
        .sum();
    assert_eq!(log.len() as u64, minimum, "requests = the guide's minimum");
    // At the server: arrivals on a loaded machine bunch a little against the departures the
    // limiter spaced (a few requests per second at most).
    let max = harness::max_in_window(&log, 1_000_000);
    assert!(
        max <= (RATE as usize) + BURST as usize + JITTER,
        "{max} in one second"
    );
    // The rate over the run, its first and last second left out (the burst, the tail).
    let from = log.iter().map(|r| r.t_us).min().unwrap() + 1_000_000;
    let to = log.iter().map(|r| r.t_us).max().unwrap() - 1_000_000;
    let seconds = (to - from) as f64 / 1e6;
    let steady = harness::count_between(&log, from, to, |_| true) as f64;
    assert!(seconds > 5.0, "{seconds} s");
    let fidelity = steady / seconds / RATE;
    assert!(
        fidelity >= 0.97,
        "achieved {fidelity:.3} of the configured rate"
    );
}

/// 429s are the server pacing the job, not a fault of the request: with `max_retries = 1` and a
/// server that refuses half of all requests at random, every reference is still exported,
/// although some of its requests were refused more often than two attempts would allow.
#[test]
fn a_429_does_not_use_up_the_retries_of_a_reference() {
    let sim = throttled_sim(Faults {
        rate_429: 0.5,
        ..Faults::default()
    });
    let refs = support::exportable(2);
    let mut job = spawn(&sim, &refs, "max_retries = 1", &[]);
    assert_eq!(job.wait(), Some(0), "every reference exported");
    let log = sim.api().requests();
    let most = log
        .iter()
        .map(|r| {
            log.iter()
                .filter(|o| o.path == r.path && o.status == 429)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        most >= 2,
        "some request was refused at least twice, more than max_retries = 1 allows: {most}"
    );
}

/// A server that answers nothing but 429: each reference fails (`HTTP_ERROR`, HTTP status 429,
/// SPEC's codes) once its request has waited `max_throttle_seconds` after 429s, instead of
/// waiting forever or giving up after `max_retries + 1` attempts.
#[test]
fn waiting_after_429s_is_bounded_by_max_throttle_seconds() {
    let sim = throttled_sim(Faults {
        rate_429: 1.0,
        ..Faults::default()
    });
    let refs = support::exportable(3);
    let start = Instant::now();
    let mut job = spawn(
        &sim,
        &refs,
        "max_retries = 0\nmax_throttle_seconds = 4",
        &[],
    );
    assert_eq!(job.wait(), Some(1), "the run finished with failures");
    let took = start.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(40)).contains(&took),
        "{took:?}"
    );
    let failures = std::fs::read_to_string(job.out.join("failures.csv")).unwrap();
    let mut r = csv::Reader::from_reader(failures.as_bytes());
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3, "{failures}");
    let header = r.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for row in &rows {
        assert_eq!(&row[col("error")], "HTTP_ERROR", "{failures}");
        assert_eq!(&row[col("http_status")], "429", "{failures}");
        // More attempts than max_retries = 0 allows: the bound was the waiting time.
        let attempts: u32 = row[col("attempts")].parse().unwrap();
        assert!(attempts >= 2, "{failures}");
    }
}
