//! `report.html` in a real browser: two simulator runs (with 429s and 5xx) into one dataset, then
//! headless Chromium renders the page to a DOM dump, a screenshot and a PDF, with nothing in its
//! console, and the numbers on the page are checked against `report.json`, the commits and
//! `failures.csv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jumio_export::Kind;
use jumio_export::simulator::{self, Faults, SimOptions};

use crate::peers;
use crate::support::{self, BlockingSim, bin, text};

const JOB: &str = r#"
[api]
region = "us"
user_agent = "jumio-export tests/1.0"

[limits]
requests_per_second = 200.0
burst = 20
concurrency = 8
max_retries = 3
timeout_seconds = 10

[polling]
schedule_seconds = [0.05, 0.1]
"#;

/// Two runs into one dataset: a first batch with failures of several kinds, then a second.
fn two_runs(dir: &Path) -> PathBuf {
    let sim = BlockingSim::start(SimOptions {
        faults: Faults {
            rate_429: 0.01,
            error_rate: 0.05,
            ..Faults::default()
        },
        ..SimOptions::default()
    });
    let population = simulator::population(SimOptions::default().seed, 30);
    // The second run, whose report.json the page shows, is the larger: its 5xx make retries.
    let mut first: Vec<(String, Kind)> = population[..8].to_vec();
    first.extend([
        ("nf-n1".to_string(), Kind::Netverify),
        ("nf-n2".to_string(), Kind::Netverify),
        ("pf-a1".to_string(), Kind::Authentication),
    ]);
    let second: Vec<(String, Kind)> = population[8..].to_vec();
    let out = dir.join("out");
    for (name, refs) in [("first.csv", &first), ("second.csv", &second)] {
        let (job, _) = support::job_files(dir, JOB, name, "");
        let list = dir.join(name);
        simulator::write_references_csv(&list, refs).unwrap();
        let o = bin()
            .arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&list)
            .arg("--out")
            .arg(&out)
            .args(["--base-url", &sim.api().base_url(), "--quiet"])
            .output()
            .unwrap();
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "the run finishes: {}",
            text(&o)
        );
    }
    out
}

/// Headless Chromium on `page` with `args`; its stderr logged at INFO so console messages show.
fn chromium(browser: &Path, profile: &Path, args: &[String], page: &Path) -> Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            // Nothing on the page may be fetched: any name it resolved would fail.
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs")
}

/// Lines of Chromium's log that are messages of the page's console.
fn console_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// The text of the element with `id` in the dumped DOM (up to the next tag).
fn by_id(dom: &str, id: &str) -> String {
    let key = format!("id=\"{id}\">");
    let at = dom
        .find(&key)
        .unwrap_or_else(|| panic!("no element #{id} on the page"))
        + key.len();
    dom[at..].split('<').next().unwrap().to_string()
}

/// A grouped number on the page (`1,234`) as a number.
fn number(dom: &str, id: &str) -> u64 {
    let t = by_id(dom, id);
    t.replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("#{id} = {t:?}: {e}"))
}

fn sum(v: &serde_json::Value) -> u64 {
    v.as_array()
        .expect("a series")
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[test]
fn report_html_renders_in_chromium_and_its_numbers_match_report_json() {
    let Some(browser) = peers::require_chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = two_runs(dir.path());
    let page = out.join("report.html");
    assert!(page.is_file(), "report.html beside report.json");
    let report = support::report_json(&out);
    let profile = tempfile::tempdir().unwrap();

    // The DOM as Chromium built it, with nothing in its console.
    let o = chromium(&browser, profile.path(), &["--dump-dom".into()], &page);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(console_lines(&o), Vec::<String>::new(), "console messages");
    let dom = String::from_utf8(o.stdout).unwrap();
    assert!(dom.contains("</html>"), "a whole page: {dom}");
    for fetched in [
        "<script",
        "<link",
        "<img",
        "<iframe",
        "url(",
        "src=\"http",
        "href=\"http",
    ] {
        assert!(!dom.contains(fetched), "{fetched} on a self-contained page");
    }

    // This run: every number on the page is report.json's.
    assert_eq!(by_id(&dom, "run-id"), report["run"].as_str().unwrap());
    let outcomes = &report["outcomes"];
    assert_eq!(
        number(&dom, "run-exported"),
        outcomes["exported"].as_u64().unwrap()
    );
    assert_eq!(
        number(&dom, "run-failed"),
        outcomes["failed"].as_u64().unwrap()
    );
    for k in [
        "references",
        "exported",
        "already_exported",
        "failed",
        "not_started",
    ] {
        assert_eq!(
            number(&dom, &format!("outcome-{k}")),
            outcomes[k].as_u64().unwrap(),
            "{k}"
        );
    }
    for (code, n) in outcomes["failures_by_error"].as_object().unwrap() {
        assert_eq!(
            number(&dom, &format!("failures-{code}")),
            n.as_u64().unwrap(),
            "{code}"
        );
    }
    let requests = &report["requests"];
    let total = requests["total"].as_u64().unwrap();
    assert!(total > 0);
    assert_eq!(number(&dom, "run-requests"), total);
    // 5xx on 5 % of ~170 requests: retries, more of them than 429s (each 429 is retried too).
    let too_many = requests["too_many_requests"].as_u64().unwrap();
    assert!(
        requests["retries"].as_u64().unwrap() > too_many,
        "{requests}"
    );
    assert_eq!(number(&dom, "run-429"), too_many);
    assert_eq!(
        number(&dom, "run-retries"),
        requests["retries"].as_u64().unwrap()
    );
    assert_eq!(
        by_id(&dom, "run-root-hash"),
        report["root_hash"].as_str().unwrap()
    );
    assert_eq!(
        by_id(&dom, "run-job-sha256"),
        report["job_sha256"].as_str().unwrap()
    );
    assert_eq!(by_id(&dom, "rate-limit"), "200.0", "the configured limit");
    assert_eq!(requests["limit_per_second"], 200.0);

    // The timeline counts every request, 429 and retry the totals count; the charts say so.
    let timeline = &requests["timeline"];
    assert_eq!(sum(&timeline["requests"]), total);
    assert_eq!(
        sum(&timeline["too_many_requests"]),
        requests["too_many_requests"].as_u64().unwrap()
    );
    assert_eq!(
        sum(&timeline["retries"]),
        requests["retries"].as_u64().unwrap()
    );
    assert_eq!(
        number(&dom, "chart-429-total"),
        sum(&timeline["too_many_requests"])
    );
    assert_eq!(
        number(&dom, "chart-retries-total"),
        sum(&timeline["retries"])
    );
    assert_eq!(
        number(&dom, "chart-errors-total"),
        sum(&timeline["network_errors"]) + sum(&timeline["server_errors"])
    );
    assert!(dom.matches("<svg").count() >= 2, "two charts");

    // Latency: one row per endpoint, counting the requests report.json counts for it.
    let by_endpoint = requests["by_endpoint"].as_object().unwrap();
    let latency = requests["latency_ms"].as_object().unwrap();
    assert_eq!(
        latency.keys().collect::<Vec<_>>(),
        by_endpoint.keys().collect::<Vec<_>>()
    );
    for (endpoint, statuses) in by_endpoint {
        let n: u64 = statuses
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let e = endpoint;
        assert_eq!(number(&dom, &format!("latency-{e}-count")), n, "{endpoint}");
        assert_eq!(latency[endpoint]["count"], n, "{endpoint}");
        let p = |k: &str| latency[endpoint][k].as_f64().unwrap();
        assert!(
            p("p50_ms") <= p("p90_ms") && p("p90_ms") <= p("p99_ms") && p("p99_ms") <= p("max_ms")
        );
        assert_eq!(
            by_id(&dom, &format!("latency-{e}-p99")),
            format!("{:.1}", p("p99_ms"))
        );
    }

    // The dataset: every commit with its root hash, the open follow-ups of failures.csv.
    let commits = support::commits(&out);
    assert_eq!(commits.len(), 2);
    assert_eq!(number(&dom, "dataset-commits"), 2);
    let archives: u64 = commits
        .iter()
        .map(|c| c["archives"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(number(&dom, "dataset-archives"), archives);
    for c in &commits {
        let run = c["run"].as_str().unwrap();
        let row_at = dom
            .find(&format!("data-run=\"{run}\""))
            .unwrap_or_else(|| panic!("no row for commit {run}"));
        let row = &dom[row_at..row_at + dom[row_at..].find("</tr>").unwrap()];
        assert!(
            row.contains(c["archives"]["root_hash"].as_str().unwrap()),
            "{run}: {row}"
        );
        let exported = c["report"]["outcomes"]["exported"].as_u64().unwrap();
        assert!(
            row.contains(&format!("data-k=\"exported\">{exported}<")),
            "{run}: {row}"
        );
    }
    let (_, open) = support::open_follow_ups(&out);
    assert!(!open.is_empty(), "the first batch leaves follow-ups");
    assert_eq!(number(&dom, "dataset-open"), open.len() as u64);
    let mut per_error: BTreeMap<&str, u64> = BTreeMap::new();
    for row in &open {
        *per_error.entry(row["error"].as_str()).or_default() += 1;
        assert!(
            dom.contains(&format!("<code>{}</code>", row["reference"])),
            "{row:?} named"
        );
    }
    for (error, n) in per_error {
        assert_eq!(number(&dom, &format!("open-{error}")), n, "{error}");
    }

    // A screenshot: a PNG of the window's size with something drawn on it.
    let png = dir.path().join("report.png");
    let o = chromium(
        &browser,
        profile.path(),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1200,1600".into(),
        ],
        &page,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(console_lines(&o), Vec::<String>::new());
    let bytes = std::fs::read(&png).expect("the screenshot is written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1200, 1600));
    // A blank page compresses to a few kilobytes; this one has tables, text and charts.
    assert!(
        (30_000..5_000_000).contains(&bytes.len()),
        "{} bytes",
        bytes.len()
    );

    // Printed to PDF: a PDF of a few pages.
    let pdf = dir.path().join("report.pdf");
    let o = chromium(
        &browser,
        profile.path(),
        &[
            format!("--print-to-pdf={}", pdf.display()),
            "--no-pdf-header-footer".into(),
        ],
        &page,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(console_lines(&o), Vec::<String>::new());
    let bytes = std::fs::read(&pdf).expect("the PDF is written");
    assert!(bytes.starts_with(b"%PDF-"), "a PDF");
    let pages = bytes.windows(11).filter(|w| w == b"/Type /Page").count()
        - bytes.windows(12).filter(|w| w == b"/Type /Pages").count();
    assert!((2..=12).contains(&pages), "{pages} pages");
}
