//! The binary as users call it: `demo`, `plan`, `run --shard`, and the Parquet files read back by
//! an independent engine (DuckDB, where installed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use jumio_export::Kind;
use jumio_export::simulator::SimOptions;

use crate::support::{
    BlockingSim, TABLES, bin, commit_runs, commits, committed_columns, committed_parts,
    dataset_csv, dataset_parquet_rows, exportable, open_follow_ups, report_json, text,
};

/// The `reference` column of a table of the dataset, over its committed CSV parts.
fn csv_references(out: &Path, table: &str) -> Vec<String> {
    dataset_csv(out, table)
        .1
        .into_iter()
        .map(|r| r["reference"].clone())
        .collect()
}

/// Rows of `sql` run by DuckDB (through its Python module) in the directory `cwd`, one line per
/// row, values joined with `|`; `None` (skip) off CI where DuckDB is missing.
fn duckdb_in(cwd: &Path, sql: &str) -> Option<String> {
    let python = crate::peers::require_python_duckdb()?;
    let script = format!(
        "import duckdb\nfor row in duckdb.sql({sql:?}).fetchall(): print('|'.join(str(v) for v in row))"
    );
    let out = Command::new(python)
        .args(["-c", &script])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "duckdb failed: {}", text(&out));
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The Parquet files a table glob matches (`tables/{table}/*.parquet`), as the shell would
/// expand it: hidden names (temporaries) excluded.
fn glob_parquet(out: &Path, table: &str) -> BTreeSet<std::path::PathBuf> {
    std::fs::read_dir(out.join("tables").join(table))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".parquet") && !name.starts_with('.')
        })
        .collect()
}

#[test]
fn demo_runs_end_to_end_and_duckdb_reads_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = bin()
        .args(["demo", "--count", "25", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("exported") && stdout.contains("root hash"),
        "{stdout}"
    );
    // The dataset: one commit, its report as report.json, every table committed in both
    // formats, the open follow-ups in failures.csv.
    let runs = commit_runs(&out);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(report_json(&out), commits(&out)[0]["report"]);
    for table in TABLES {
        for format in ["csv", "parquet"] {
            assert!(
                !committed_parts(&out, table, format).is_empty(),
                "{table}: no committed {format} part"
            );
        }
    }
    let (_, failures) = open_follow_ups(&out);
    for code in ["INVALID_REFERENCE", "NOT_FOUND", "PENDING", "FOREIGN_URL"] {
        assert!(
            failures.iter().any(|r| r["error"] == code),
            "the demo shows {code}: {failures:?}"
        );
    }
    for kind in Kind::ALL {
        let table = kind.table_name();
        let csv_rows = csv_references(&out, table).len();
        assert!(csv_rows > 0, "{kind}: the demo exports some");
        // DuckDB reads the whole table by glob, from the dataset's directory.
        let Some(count) = duckdb_in(
            &out,
            &format!("select count(*) from read_parquet('tables/{table}/*.parquet')"),
        ) else {
            return;
        };
        assert_eq!(
            count.trim(),
            csv_rows.to_string(),
            "{kind}: DuckDB and the CSV disagree"
        );
    }
    // Types a warehouse relies on: dates are DATE, timestamps TIMESTAMP WITH TIME ZONE, lists are lists.
    let types = duckdb_in(
        &out,
        "select typeof(document_dob), typeof(transaction_date), typeof(verification_reject_reason_reject_reason_details) from read_parquet('tables/netverify/*.parquet') limit 1",
    )
    .unwrap();
    let types: Vec<&str> = types.trim().split('|').collect();
    assert_eq!(types[0], "DATE");
    assert_eq!(types[1], "TIMESTAMP WITH TIME ZONE");
    assert!(
        types[2].ends_with("[]"),
        "rejectReasonDetails is a list: {}",
        types[2]
    );
}

/// The one-liner the docs give a person who wants one CSV per table: DuckDB's Python module,
/// run in the directory that holds the dataset `export` (the default `[output] dir`).
/// `{table}` is the table's name.
const CSV_ONE_LINER: &str = "import duckdb; duckdb.sql(\"COPY (SELECT * FROM read_parquet('export/tables/{table}/*.parquet')) TO '{table}.csv' (HEADER)\")";

/// Issue 11: a warehouse engine reads a dataset of two runs whole, one glob per table, and a
/// person gets one CSV per table with one command. For every table: DuckDB reads
/// `tables/{table}/*.parquet` (exactly the committed parts) as one table with the committed
/// schema's columns in order, as many rows as the commits list, and `run` values that are the
/// two commits' run ids; the one-liner writes a CSV with the same columns and, in every text and
/// integer column, the rows of the program's own CSV parts.
#[test]
fn duckdb_reads_every_table_of_a_two_run_dataset_by_glob() {
    let sim = BlockingSim::start(SimOptions::default());
    let api = sim.api();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[api]\nregion = \"us\"\nuser_agent = \"duckdb-test/1\"\n[limits]\nrequests_per_second = 300.0\n[polling]\nschedule_seconds = [0.05]\n",
    )
    .unwrap();
    // Each batch has a reference of every kind and failures of its own, so every table gets rows
    // from both runs.
    let batches = [
        "reference,kind\nok-n1,netverify\nok-d1,document\nok-a1,authentication\nnf-n1,netverify\n",
        "reference,kind\nok-n2,netverify\nok-d2,document\nok-a2,authentication\nnf-d1,document\nbad/ref,netverify\n",
    ];
    let out = dir.path().join("export");
    for (i, batch) in batches.iter().enumerate() {
        let refs = dir.path().join(format!("batch-{i}.csv"));
        std::fs::write(&refs, batch).unwrap();
        let o = bin()
            .arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&refs)
            .arg("--out")
            .arg(&out)
            .args(["--base-url", &api.base_url(), "--quiet"])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(1),
            "some references fail: {}",
            text(&o)
        );
    }
    let commits = commits(&out);
    assert_eq!(commits.len(), 2, "a second run adds a commit");
    let runs = commit_runs(&out);
    for table in TABLES {
        // The glob matches exactly the parts the commits list.
        let committed: BTreeSet<_> = committed_parts(&out, table, "parquet")
            .into_iter()
            .collect();
        assert_eq!(glob_parquet(&out, table), committed, "{table}");
        let committed_rows: u64 = commits
            .iter()
            .flat_map(|c| c["parts"].as_array().unwrap())
            .filter(|p| p["table"] == table && p["format"] == "parquet")
            .map(|p| p["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(
            dataset_parquet_rows(&out, table) as u64,
            committed_rows,
            "{table}"
        );
        // arrow's reader agrees on the run values, before DuckDB is asked.
        let in_parquet: BTreeSet<String> =
            crate::support::dataset_parquet_strings(&out, table, "run")
                .into_iter()
                .map(|r| r.expect("run is never null"))
                .collect();
        assert_eq!(
            in_parquet.into_iter().collect::<Vec<_>>(),
            runs,
            "{table}: run values in the Parquet parts"
        );
        let glob = format!("read_parquet('tables/{table}/*.parquet')");
        let Some(columns) = duckdb_in(
            &out,
            &format!("select column_name from (describe select * from {glob})"),
        ) else {
            return;
        };
        assert_eq!(
            columns.lines().collect::<Vec<_>>(),
            committed_columns(table),
            "{table}: DuckDB's columns against tests/schemas/{table}.txt"
        );
        let count = duckdb_in(&out, &format!("select count(*) from {glob}")).unwrap();
        assert_eq!(count.trim(), committed_rows.to_string(), "{table}");
        let in_runs = duckdb_in(
            &out,
            &format!("select distinct run from {glob} order by run"),
        )
        .unwrap();
        assert_eq!(
            in_runs.lines().collect::<Vec<_>>(),
            runs,
            "{table}: run values against the commits"
        );

        // One CSV for a person, with the command the docs quote.
        let python = crate::peers::require_python_duckdb().unwrap();
        let script = CSV_ONE_LINER.replace("{table}", table);
        let o = Command::new(&python)
            .args(["-c", &script])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", text(&o));
        let (header, rows) = crate::support::csv_table(&dir.path().join(format!("{table}.csv")));
        assert_eq!(header, committed_columns(table), "{table}.csv");
        assert_eq!(rows.len() as u64, committed_rows, "{table}.csv");
        // Text and integer columns hold what the program's CSV parts hold (dates, timestamps,
        // booleans and lists are DuckDB's rendering of the typed values).
        let schema = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/schemas/{table}.txt")),
        )
        .unwrap();
        let plain: Vec<&str> = schema
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, ty)| *ty == "Utf8" || *ty == "Int64")
            .map(|(name, _)| name)
            .collect();
        let project = |rows: &[BTreeMap<String, String>]| {
            let mut v: Vec<Vec<String>> = rows
                .iter()
                .map(|r| plain.iter().map(|c| r[*c].clone()).collect())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            project(&rows),
            project(&dataset_csv(&out, table).1),
            "{table}.csv from DuckDB against the program's CSV parts"
        );
    }
}

/// Personal data at rest, for the demo too: its reference list (written by the demo itself, before
/// the run starts) and every other file is 0600, every directory 0700, even with a umask that
/// would leave them world-readable.
#[cfg(unix)]
#[test]
fn demo_output_including_its_reference_list_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    // The demo needs no credentials: its simulator's are built in.
    let cmd = format!(
        "umask 000; exec '{}' demo --count 5 --quiet --out '{}'",
        env!("CARGO_BIN_EXE_jumio-export"),
        out.display()
    );
    let o = Command::new("sh").args(["-c", &cmd]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        dirs.push(d.clone());
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(
        files.contains(&out.join("demo-references.csv")),
        "{files:?}"
    );
    assert!(files.len() > 5, "the demo wrote its outputs: {files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{} is {:o}", f.display(), mode(f));
    }
    for d in &dirs {
        assert_eq!(mode(d), 0o700, "{} is {:o}", d.display(), mode(d));
    }
}

/// The request budget `plan` must print for this job, worked out here from SPEC "What is fetched"
/// and the guide's samples, not from the program: with images, liveness images and original
/// documents on, and `polls` status calls at most (the first call plus one per schedule offset).
/// Returns (fewest, most) requests for one reference of `kind`.
fn expected_requests_per_reference(kind: Kind, polls: u64) -> (u64, u64) {
    // The guide's samples: Netverify front, back and face; 7 liveness images; a Document
    // Verification has 1 or 2 pages and may have an original PDF.
    let (images, liveness, pages) = (3, 7, 2);
    match kind {
        // status …, /data, /images, then 1 to 3 images and 0 to 7 liveness images.
        Kind::Netverify => (1 + 1 + 1 + 1, polls + 1 + 1 + images + liveness),
        // /documents/{ref} (never pending), /data, /pages, 1 to 2 pages, 0 to 1 original PDF.
        Kind::Document => (1 + 1 + 1 + 1, 1 + 1 + 1 + pages + 1),
        // status (the details) polled like PENDING, the face image, 0 to 7 liveness images.
        Kind::Authentication => (1 + 1, polls + 1 + liveness),
    }
}

#[test]
fn plan_sends_nothing_and_prints_the_budget() {
    use std::io::{Read, Write};
    // A live simulator at the job's base URL, with the credentials in the environment: if `plan`
    // sent anything, it would arrive and be logged.
    let sim = BlockingSim::start(SimOptions::default());
    let api = sim.api();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    let rate = 5.0;
    let schedule = [1.0, 2.0, 4.0];
    std::fs::write(
        &job,
        format!(
            "[api]\nregion = \"us\"\nuser_agent = \"Example Corp Export/1.0\"\n\
             [limits]\nrequests_per_second = {rate:?}\n\
             [polling]\nschedule_seconds = {schedule:?}\n\
             [fetch]\nimages = true\nliveness_images = true\noriginal_documents = true\n\
             unmasked_card_images = false\n"
        ),
    )
    .unwrap();
    // 2 Netverify, 1 Document Verification, 3 Authentication; one duplicate line, one invalid.
    let input: &[(&str, Kind)] = &[
        ("ok-n1", Kind::Netverify),
        ("ok-d1", Kind::Document),
        ("ok-a1", Kind::Authentication),
        ("ok-n2", Kind::Netverify),
        ("ok-a2", Kind::Authentication),
        ("ok-n1", Kind::Netverify),
        ("ok-a3", Kind::Authentication),
        ("bad/ref", Kind::Netverify),
    ];
    let mut list = String::from("reference,kind\n");
    for (r, k) in input {
        list.push_str(&format!("{r},{k}\n"));
    }
    std::fs::write(dir.path().join("refs.csv"), list).unwrap();
    let plan = |with_credentials: bool| {
        let mut c = bin();
        c.arg("plan")
            .arg(&job)
            .arg("--input")
            .arg(dir.path().join("refs.csv"))
            .args(["--base-url", &api.base_url()]);
        if !with_credentials {
            c.env_remove("JUMIO_API_TOKEN")
                .env_remove("JUMIO_API_SECRET");
        }
        c.output().unwrap()
    };
    let o = plan(true);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Nor does it need credentials.
    let without = plan(false);
    assert_eq!(without.status.code(), Some(0), "{}", text(&without));
    assert_eq!(without.stdout, o.stdout);
    assert!(
        api.requests().is_empty(),
        "plan sent requests: {:?}",
        api.requests()
    );

    // The figures, computed independently.
    let polls = schedule.len() as u64;
    let out = String::from_utf8_lossy(&o.stdout);
    let row = |name: &str| -> Vec<u64> {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row: {out}"));
        line.split_whitespace()
            .skip(1)
            .map(|n| n.replace(',', "").parse().unwrap())
            .collect()
    };
    let (mut refs, mut fewest, mut most) = (0, 0, 0);
    for kind in Kind::ALL {
        let mut unique: Vec<&str> = input
            .iter()
            .filter(|(r, k)| *k == kind && !r.contains('/'))
            .map(|(r, _)| *r)
            .collect();
        unique.sort();
        unique.dedup();
        let n = unique.len() as u64;
        let (min, max) = expected_requests_per_reference(kind, polls);
        assert_eq!(row(kind.as_str()), [n, n * min, n * max], "{kind}: {out}");
        refs += n;
        fewest += n * min;
        most += n * max;
    }
    assert_eq!((refs, fewest, most), (6, 18, 69), "the arithmetic above");
    assert_eq!(row("total"), [refs, fewest, most], "{out}");
    for line in [
        "invalid references in the input (never sent, listed in failures.csv): 1".to_string(),
        "duplicate lines (exported once): 1".to_string(),
        format!(
            "time at 5 requests/s: {:.1} s (fewest) to {:.1} s (most)",
            fewest as f64 / rate,
            most as f64 / rate
        ),
        // Three entries, three status calls: the last one at the second offset.
        "polling alone can keep a pending reference for 2.0 s after its first status call"
            .to_string(),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }

    // The log is live: one request sent here by hand is in it.
    let addr = api.base_url().trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(addr.trim_end_matches('/')).unwrap();
    conn.write_all(
        b"GET /api/netverify/v2/scans/ok-n1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let logged = api.requests();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].path, "/api/netverify/v2/scans/ok-n1");

    let bad = bin()
        .arg("plan")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("missing.toml"));
}

/// SPEC "Scale beyond one machine": N shards run at the same time into ONE dataset (the old
/// layout gave each shard a directory of its own, and one run held a directory at a time); the
/// union of their commits is the export, each reference exported by exactly one shard.
#[test]
fn shards_partition_the_references_and_together_export_all() {
    let sim = BlockingSim::start(SimOptions::default());
    let api = sim.api();
    let refs = exportable(24);
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    // 60 requests/s, a third per shard: each shard takes seconds, so the three overlap.
    std::fs::write(
        &job,
        "[api]\nregion = \"us\"\nuser_agent = \"shard-test/1\"\n[limits]\nrequests_per_second = 60.0\n[polling]\nschedule_seconds = [0.05, 0.1]\n",
    )
    .unwrap();
    let mut list = String::from("reference,kind\n");
    for (r, k) in &refs {
        list.push_str(&format!("{r},{k}\n"));
    }
    std::fs::write(dir.path().join("refs.csv"), list).unwrap();
    let out = dir.path().join("dataset");
    let shards: Vec<std::process::Child> = (0..3)
        .map(|k| {
            bin()
                .arg("run")
                .arg(&job)
                .arg("--input")
                .arg(dir.path().join("refs.csv"))
                .arg("--out")
                .arg(&out)
                .args([
                    "--base-url",
                    &api.base_url(),
                    "--shard",
                    &format!("{k}/3"),
                    "--quiet",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in shards {
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    // One commit per shard, and the shards ran at the same time.
    let commits = commits(&out);
    assert_eq!(commits.len(), 3, "one commit per shard");
    let mut shards: Vec<String> = commits
        .iter()
        .map(|c| c["report"]["shard"].as_str().expect("a shard").to_string())
        .collect();
    shards.sort();
    assert_eq!(shards, ["0/3", "1/3", "2/3"]);
    let instant = |c: &serde_json::Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(c["report"][field].as_str().unwrap()).unwrap()
    };
    let last_start = commits.iter().map(|c| instant(c, "started_at")).max();
    let first_end = commits.iter().map(|c| instant(c, "finished_at")).min();
    assert!(
        last_start < first_end,
        "the shards did not overlap: {last_start:?} .. {first_end:?}"
    );
    // report.json is the report of one of them (the last to commit), whole.
    let report = report_json(&out);
    assert!(
        commits.iter().any(|c| c["report"] == report),
        "report.json is no commit's report: {report}"
    );
    // Every row belongs to its shard's commit; no reference is exported twice, none is missed.
    let runs: BTreeSet<String> = commits
        .iter()
        .map(|c| c["run"].as_str().unwrap().to_string())
        .collect();
    let mut seen = Vec::new();
    let mut by_run: BTreeMap<String, usize> = BTreeMap::new();
    for kind in Kind::ALL {
        for row in dataset_csv(&out, kind.table_name()).1 {
            assert!(runs.contains(&row["run"]), "{row:?}");
            *by_run.entry(row["run"].clone()).or_default() += 1;
            seen.push(row["reference"].clone());
        }
    }
    for c in &commits {
        let run = c["run"].as_str().unwrap();
        assert_eq!(
            by_run.get(run).copied().unwrap_or(0) as u64,
            c["report"]["outcomes"]["exported"].as_u64().unwrap(),
            "{run}: rows against its report"
        );
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a reference was exported by two shards"
    );
    let expected: BTreeSet<&String> = refs.iter().map(|(r, _)| r).collect();
    assert_eq!(
        unique, expected,
        "the shards together export every reference"
    );
    assert!(open_follow_ups(&out).1.is_empty());
    // Each run held runs/{run}.lock while live and released it at the end.
    let locks: Vec<_> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(locks.is_empty(), "locks left behind: {locks:?}");
}

#[test]
fn simulate_serves_the_references_it_lists_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let refs = dir.path().join("refs.csv");
    let log = dir.path().join("requests.jsonl");
    // A free port: bind, read it, release it for the simulator.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = bin()
        .args([
            "simulate",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--count",
            "12",
            "--references-out",
        ])
        .arg(&refs)
        .arg("--request-log")
        .arg(&log)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let start = std::time::Instant::now();
    let listed = loop {
        if let Ok(text) = std::fs::read_to_string(&refs)
            && text.lines().count() == 13
        {
            break text;
        }
        assert!(
            start.elapsed().as_secs() < 20,
            "simulate wrote no reference list"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(listed.starts_with("reference,kind\n"));
    let mut served = 0;
    for line in listed.lines().skip(1) {
        let (reference, kind) = line.split_once(',').unwrap();
        let family = match kind {
            "netverify" => "scans",
            "document" => "documents",
            _ => "authentications",
        };
        let url = format!("http://127.0.0.1:{port}/api/netverify/v2/{family}/{reference}");
        let r = loop {
            let sent = rt.block_on(
                client
                    .get(&url)
                    .basic_auth("demo-token", Some("demo-secret"))
                    .header("User-Agent", "test")
                    .send(),
            );
            match sent {
                Ok(r) => break r,
                Err(_) if start.elapsed().as_secs() < 20 => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => panic!("simulate is not serving: {e}"),
            }
        };
        assert!(
            r.status() == 200 || r.status() == 404,
            "{url}: {}",
            r.status()
        );
        served += usize::from(r.status() == 200);
    }
    assert!(
        served >= 8,
        "most listed references are served ({served} of 12)"
    );
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), 12, "one JSONL line per request");
}

#[test]
fn references_can_come_from_standard_input() {
    let sim = BlockingSim::start(SimOptions::default());
    let api = sim.api();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[api]\nregion = \"us\"\nuser_agent = \"stdin-test/1\"\n",
    )
    .unwrap();
    let mut child = bin()
        .arg("run")
        .arg(&job)
        .args([
            "--input",
            "-",
            "--quiet",
            "--base-url",
            &api.base_url(),
            "--out",
        ])
        .arg(dir.path().join("out"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"# from a pipe\nok-n1\nok-n2\nok-n1\n")
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut exported = csv_references(&dir.path().join("out"), "netverify");
    exported.sort();
    assert_eq!(
        exported,
        ["ok-n1", "ok-n2"],
        "each reference once, the comment skipped"
    );
}
