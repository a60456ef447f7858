//! Smoke test of the benchmark harness (`examples/bench.rs`): its core, compiled in here from
//! `examples/bench/harness.rs`, runs the debug binary's simulator and job on ~20 references and
//! must produce parsed, sane figures. Nothing timed is asserted; the figures themselves are
//! checked only for plausibility, and the pure parts (path categories, the minimum the flow
//! needs, windows, `time -v` parsing) against hand-made inputs.

// The example uses every item; this test (and tests/throttle.rs) only some of them.
#[allow(dead_code)]
#[path = "../examples/bench/harness.rs"]
pub(crate) mod harness;

use std::path::PathBuf;
use std::time::Duration;

use harness::{Category, Env, JobSpec, Req, SimSpec, Stop};
use jumio_export::Kind;
use jumio_export::simulator::{read_request_log, scenario};

fn env(work: &std::path::Path) -> Env {
    let mut env = Env::new(
        PathBuf::from(env!("CARGO_BIN_EXE_jumio-export")),
        work.into(),
    );
    env.echo = false;
    env.max_run = Duration::from_secs(120);
    env
}

#[test]
fn the_harness_measures_a_tiny_export() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(dir.path());
    // Kept, so the simulator's request log can be read here, independently of the harness.
    env.keep = true;
    let job = JobSpec::new(1000.0, 100, 4);
    let sim = SimSpec::small(20);
    assert_eq!(sim.error_rate, 0.0, "a fault-free run: no retries");
    assert_eq!(sim.ceiling_rps, None, "a fault-free run: no 429");
    let run = harness::run(&env, "tiny", &sim, &job, Stop::Complete).unwrap();

    assert!(
        matches!(run.exit_code, Some(0 | 1)),
        "exit {:?}",
        run.exit_code
    );
    assert_eq!(run.refs.len(), 20);
    let report = run.report.clone().expect("report.json");
    assert_eq!(report.references, 20);
    assert!(report.exported > 0, "{report:?}");
    assert_eq!(report.exported + report.failed, 20, "{report:?}");
    assert!(!report.interrupted);
    // Both ends of the wire agree on the number of requests (no faults were injected).
    assert!(!run.requests.is_empty());
    assert_eq!(run.requests.len() as u64, report.requests);
    assert!(run.out_bytes > 0);
    assert!(run.usage.max_rss_kib > 0, "{:?}", run.usage);
    assert!(run.wall_s > 0.0);
    assert_eq!(run.commands.len(), 2, "{:?}", run.commands);
    assert!(run.commands[0].contains(" simulate --listen 127.0.0.1:"));
    assert!(run.commands[1].contains(" run "), "{}", run.commands[1]);
    assert!(run.commands[1].contains("--quiet"));

    // The simulator's request log, read with the library's reader rather than the harness's.
    let logged = read_request_log(&dir.path().join("tiny/requests.jsonl")).unwrap();
    assert!(
        logged.iter().all(|r| r.status == 200 || r.status == 404),
        "fault-free"
    );
    let e = harness::efficiency(&run, &job);
    assert_eq!(
        e.requests,
        logged.len() as u64,
        "requests counted by the simulator"
    );
    assert_eq!(e.requests, report.requests, "requests counted by the job");
    // What the benchmark claims on a fault-free run: exactly the guide's minimum in every
    // category, a ratio of 1.0000.
    assert!(e.minimum > 0);
    for (category, got, minimum) in &e.by_category {
        assert_eq!(got, minimum, "{category:?}: {e:?}");
    }
    assert_eq!(e.requests, e.minimum, "{e:?}");
    assert_eq!(e.ratio, 1.0, "{e:?}");

    let w = harness::rate_window(&run.requests, Duration::ZERO, 3600.0).unwrap();
    assert_eq!(w.requests, logged.len());
    assert_eq!(w.too_many, 0);
    assert!(w.max_per_second >= 1 && w.max_per_second <= w.requests);
    assert!(dir.path().join("tiny").exists(), "kept when asked");

    // The run directory is removed unless asked to keep it.
    env.keep = false;
    harness::run(&env, "one", &SimSpec::small(1), &job, Stop::Complete).unwrap();
    assert!(!dir.path().join("one").exists());
}

#[test]
fn an_interrupted_run_exits_130_and_keeps_its_files_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(dir.path());
    env.keep = true;
    // 2 requests per second cannot finish 20 references in the second before SIGINT.
    let job = JobSpec::new(2.0, 1, 2);
    let stop = Stop::InterruptAfter(Duration::from_secs(1));
    let run = harness::run(&env, "interrupted", &SimSpec::small(20), &job, stop).unwrap();
    assert_eq!(run.exit_code, Some(130), "{:?}", run.commands);
    let e = harness::efficiency(&run, &job);
    assert!(e.requests > 0 && e.requests < e.minimum, "{e:?}");
    assert!(dir.path().join("interrupted/requests.jsonl").exists());
    assert!(dir.path().join("interrupted/job.toml").exists());
}

#[test]
fn request_paths_fall_into_the_flow_categories() {
    let cases = [
        ("/api/netverify/v2/scans/r", Category::Status),
        ("/api/netverify/v2/scans/r/data", Category::Data),
        ("/api/netverify/v2/scans/r/images", Category::List),
        ("/api/netverify/v2/scans/r/images/front", Category::Image),
        (
            "/api/netverify/v2/scans/r/images/liveness/3",
            Category::Liveness,
        ),
        ("/api/netverify/v2/authentications/r", Category::Status),
        (
            "/api/netverify/v2/authentications/r/images/face",
            Category::Image,
        ),
        (
            "/api/netverify/v2/authentications/r/images/liveness/1",
            Category::Liveness,
        ),
        ("/api/netverify/v2/documents/r", Category::Status),
        ("/api/netverify/v2/documents/r/data", Category::Data),
        ("/api/netverify/v2/documents/r/pages", Category::List),
        ("/api/netverify/v2/documents/r/pages/101", Category::Page),
        ("/api/netverify/v2/documents/r/original", Category::Original),
        ("/api/netverify/v2/documents/r/images", Category::Other),
        ("/health", Category::Other),
    ];
    for (path, want) in cases {
        assert_eq!(Category::of(path), want, "{path}");
    }
}

#[test]
fn the_minimum_counts_404s_once_and_pending_references_by_their_polls() {
    let refs = |r: &[(&str, Kind)]| -> Vec<(String, Kind)> {
        r.iter().map(|(s, k)| (s.to_string(), *k)).collect()
    };
    let total = |m: &std::collections::BTreeMap<Category, u64>| m.values().sum::<u64>();

    let gone = harness::minimum_requests(1, &refs(&[("nf-n1", Kind::Netverify)]), 6);
    assert_eq!(total(&gone), 1);
    assert_eq!(gone[&Category::Status], 1);

    // Pending forever: every allowed status call and nothing else.
    let forever = harness::minimum_requests(1, &refs(&[("pf-a1", Kind::Authentication)]), 6);
    assert_eq!((forever[&Category::Status], total(&forever)), (6, 6));

    // Pending for 3 calls: the 4th is final, then data, list and every listed file once.
    let sc = scenario(1, "p3-n1").unwrap();
    let p3 = harness::minimum_requests(1, &refs(&[("p3-n1", Kind::Netverify)]), 6);
    assert_eq!(p3[&Category::Status], 4);
    assert_eq!(p3[&Category::Data], 1);
    assert_eq!(p3[&Category::List], 1);
    assert_eq!(p3[&Category::Image], sc.classifiers.len() as u64);
    assert_eq!(p3[&Category::Liveness], sc.liveness.len() as u64);
    assert!(
        sc.classifiers.len() >= 2,
        "ok/pN Netverify has front and face"
    );
    // With only 3 status calls allowed it never becomes final.
    let cut = harness::minimum_requests(1, &refs(&[("p3-n1", Kind::Netverify)]), 3);
    assert_eq!(total(&cut), 3);

    // Document Verification: status, data, pages list, each page and the PDF.
    let d = scenario(1, "ok-d1").unwrap();
    let doc = harness::minimum_requests(1, &refs(&[("ok-d1", Kind::Document)]), 6);
    assert_eq!(doc[&Category::Page], d.classifiers.len() as u64);
    assert_eq!(doc[&Category::Original], 1);
    assert_eq!(total(&doc), 3 + d.classifiers.len() as u64 + 1, "{doc:?}");

    // Foreign hrefs: refused before any file is fetched.
    let fh = harness::minimum_requests(1, &refs(&[("fh-n1", Kind::Netverify)]), 6);
    assert_eq!(total(&fh), 3);
}

#[test]
fn the_busiest_window_is_half_open() {
    let at = |t_us: i64| Req {
        t_us,
        status: 200,
        category: Category::Status,
    };
    let log: Vec<Req> = [0, 100, 999_999, 1_000_000, 1_000_001, 5_000_000]
        .into_iter()
        .map(at)
        .collect();
    // [0, 1 s) holds 3; [100 µs, 1.0001 s) holds 4.
    assert_eq!(harness::max_in_window(&log, 1_000_000), 4);
    assert_eq!(harness::max_in_window(&log, 1), 1);
    assert_eq!(harness::max_in_window(&[], 1_000_000), 0);
    let w = harness::rate_window(&log, Duration::from_secs(1), 2.0).unwrap();
    assert_eq!(w.requests, 2);
    assert!((w.seconds - 2.0).abs() < 1e-9);
}

#[test]
fn time_v_output_is_parsed() {
    let text = "\tCommand being timed: \"jumio-export run job.toml\"\n\
        \tUser time (seconds): 12.34\n\
        \tSystem time (seconds): 1.50\n\
        \tPercent of CPU this job got: 95%\n\
        \tElapsed (wall clock) time (h:mm:ss or m:ss): 0:14.52\n\
        \tMaximum resident set size (kbytes): 45678\n\
        \tExit status: 0\n";
    let u = harness::parse_time_v(text).unwrap();
    assert_eq!(u.max_rss_kib, 45678);
    assert!((u.cpu_s() - 13.84).abs() < 1e-9);
    assert!(harness::parse_time_v("nothing").is_err());
}
