//! `--progress json` (issue 16, point 2): one JSON line per interval on stderr, for machines.
//! Every line parses, the counters only grow, and the last line agrees with report.json.

use std::path::Path;

use jumio_export::simulator::{self, SimOptions};

use crate::support::{BlockingSim, bin, job_files};

const JOB: &str = r#"
[api]
region = "us"
user_agent = "jumio-export progress tests/1.0"

[limits]
requests_per_second = 200.0
burst = 10
concurrency = 4
max_retries = 3
timeout_seconds = 10

[polling]
schedule_seconds = [0.5, 1.0]
"#;

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn progress_json_lines_parse_grow_and_end_agreeing_with_the_report() {
    // The simulator's population as it comes: exported, pending, not found, failed, with some
    // 429s on top, so every counter moves.
    let opts = SimOptions {
        faults: simulator::Faults {
            rate_429: 0.02,
            ..simulator::Faults::default()
        },
        ..SimOptions::default()
    };
    let mut refs = simulator::population(opts.seed, 30);
    // Readable references the simulator keeps pending: forever, and for two polls.
    refs.push(("pf-n-progress".into(), jumio_export::Kind::Netverify));
    refs.push(("p2-a-progress".into(), jumio_export::Kind::Authentication));
    let mut list = String::from("reference,kind\n");
    for (r, k) in &refs {
        list.push_str(&format!("{r},{k}\n"));
    }
    let sim = BlockingSim::start(opts);
    let dir = tempfile::tempdir().unwrap();
    let (job, input) = job_files(dir.path(), JOB, "refs.csv", &list);
    let out = dir.path().join("out");
    let o = bin()
        .args(["run"])
        .arg(&job)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args(["--base-url", &sim.api().base_url()])
        .args(["--progress", "json", "--progress-interval", "0.1"])
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{stderr}");

    // Every line that looks like JSON is a progress line that parses; log lines are not JSON.
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(lines.len() >= 3, "too few progress lines: {stderr}");
    let fields = [
        "elapsed_seconds",
        "total",
        "done",
        "exported",
        "failed",
        "pending",
        "in_flight",
        "queued",
        "requests",
        "retries",
        "throttled",
        "rate",
        "bytes",
        "eta_seconds",
        "breaker",
        "outage_pauses",
        "outage_paused_seconds",
    ];
    for line in &lines {
        assert_eq!(line["event"], "progress", "{line}");
        for f in fields {
            assert!(line.get(f).is_some(), "{f} missing from {line}");
        }
        assert_eq!(line["total"], refs.len() as u64, "{line}");
        let n = |f: &str| line[f].as_u64().unwrap();
        assert_eq!(n("done"), n("exported") + n("failed"), "{line}");
        assert!(
            n("done") + n("pending") + n("in_flight") + n("queued") <= n("total"),
            "{line}"
        );
        assert!(line["rate"].as_f64().unwrap() >= 0.0, "{line}");
        assert!(["closed", "open", "probing"].contains(&line["breaker"].as_str().unwrap()));
    }
    // The counters only grow.
    let monotone = [
        "elapsed_seconds",
        "done",
        "exported",
        "failed",
        "requests",
        "retries",
        "throttled",
        "bytes",
        "outage_pauses",
    ];
    for pair in lines.windows(2) {
        for f in monotone {
            assert!(
                pair[1][f].as_f64().unwrap() >= pair[0][f].as_f64().unwrap(),
                "{f} went down: {} then {}",
                pair[0],
                pair[1]
            );
        }
    }
    // Some line saw references waiting for their next poll (the population has pending ones).
    assert!(
        lines.iter().any(|l| l["pending"].as_u64().unwrap() > 0),
        "no line showed a pending reference"
    );
    assert!(lines.iter().any(|l| l["eta_seconds"].as_f64().is_some()));

    // The last line is the run's end, and agrees with report.json.
    let last = lines.last().unwrap();
    let report = read_json(&out.join("report.json"));
    let outcomes = &report["outcomes"];
    let requests = &report["requests"];
    assert_eq!(last["done"], last["total"], "{last}");
    assert_eq!(last["pending"], 0, "{last}");
    assert_eq!(last["in_flight"], 0, "{last}");
    assert_eq!(last["queued"], 0, "{last}");
    assert_eq!(last["eta_seconds"], 0.0, "{last}");
    assert_eq!(last["exported"], outcomes["exported"], "{last} vs {report}");
    assert_eq!(last["failed"], outcomes["failed"], "{last} vs {report}");
    assert_eq!(last["requests"], requests["total"], "{last} vs {report}");
    assert_eq!(last["retries"], requests["retries"], "{last} vs {report}");
    assert_eq!(
        last["throttled"], requests["too_many_requests"],
        "{last} vs {report}"
    );
    assert_eq!(
        last["bytes"], requests["bytes_received"],
        "{last} vs {report}"
    );
    assert_eq!(last["outage_pauses"], requests["outage_pauses"]);
    assert!(
        requests["too_many_requests"].as_u64().unwrap() > 0,
        "no 429 seen"
    );
    assert!(outcomes["failed"].as_u64().unwrap() > 0 && outcomes["exported"].as_u64().unwrap() > 0);
}
