//! Outages pause instead of failing (issue 16, point 5): the simulator goes away in the middle of a
//! run and comes back on the same port; the run waits it out with the job-wide circuit breaker
//! and ends with every reference exported and no `NETWORK` failure.
//!
//! The outage lasts 30 s (the issue's scenario); `JUMIO_TEST_OUTAGE_SECONDS` shortens it on a
//! developer machine.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use jumio_export::simulator::SimOptions;

use crate::support::{BlockingSim, bin, exportable, job_files};

const JOB: &str = r#"
[api]
region = "us"
user_agent = "jumio-export outage tests/1.0"

[limits]
requests_per_second = 100.0
burst = 10
concurrency = 4
max_retries = 3
timeout_seconds = 10

[polling]
schedule_seconds = [0.05, 0.1]
"#;

fn outage() -> Duration {
    let secs = std::env::var("JUMIO_TEST_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_api_gone_for_30_seconds_mid_run_pauses_the_job_and_every_reference_is_exported() {
    let refs = exportable(60);
    let mut list = String::from("reference,kind\n");
    for (r, k) in &refs {
        list.push_str(&format!("{r},{k}\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let (job, input) = job_files(dir.path(), JOB, "refs.csv", &list);
    let out = dir.path().join("out");
    let mut sim = BlockingSim::start(SimOptions::default());
    let base = sim.api().base_url();
    let child = bin()
        .args(["run"])
        .arg(&job)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args(["--base-url", &base])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");

    // Mid-run: a fifth of the roughly 600 requests answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.api().requests().len() < 120 {
        assert!(Instant::now() < deadline, "the run never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = sim.api().requests().len();
    sim.stop();
    std::thread::sleep(outage());
    sim.restart();

    let o = child.wait_with_output().expect("the run ends");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{stderr}",
        String::from_utf8_lossy(&o.stdout)
    );
    let after = sim.api().requests().len();
    assert!(
        before < 500 && after > 0,
        "the outage was mid-run: {before} requests before it, {after} after"
    );
    let report = read_json(&out.join("report.json"));
    assert_eq!(
        report["outcomes"]["exported"],
        refs.len() as u64,
        "{report}"
    );
    assert_eq!(report["outcomes"]["failed"], 0, "{report}");
    let failures = std::fs::read_to_string(out.join("failures.csv")).unwrap_or_default();
    assert!(
        !failures.contains("NETWORK") && failures.lines().count() <= 1,
        "{failures}"
    );
    // The pause is in the report and in the log, without a path or a reference.
    let requests = &report["requests"];
    assert!(
        requests["outage_pauses"].as_u64().unwrap() >= 1,
        "{requests}"
    );
    let paused = requests["outage_paused_seconds"].as_f64().unwrap();
    let down = outage().as_secs_f64();
    assert!(
        paused >= down - 2.0 && paused <= down + 35.0,
        "paused {paused} s for a {down} s outage"
    );
    let pause_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("pausing every request"))
        .collect();
    assert!(!pause_lines.is_empty(), "{stderr}");
    assert!(stderr.contains("the API answers again"), "{stderr}");
    for (r, _) in &refs {
        assert!(
            !pause_lines.iter().any(|l| l.contains(r.as_str())),
            "a reference in the pause log"
        );
    }
}
