//! The output location as a dataset that runs add to (issue 11's "done when"), end to end: the
//! binary against the simulator over real HTTP, judged by the commits and the parts they list,
//! the simulator's request log and its own scenario of each reference, and (for "reads no
//! archive") the kernel's inotify events on `archives/`.
//!
//! Every test also checks the parts every commit lists ([`assert_parts_well_formed`]): at least
//! one CSV and one Parquet part per table per run, named `tables/{table}/{run}-{n}.{ext}` with
//! `n` = 0, 1, …, with the rows, bytes and sha256 the commit records. Rollover to a second part
//! (after `PART_ROWS` = 50,000 rows) is tested at the unit level in `src/dataset/parts.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jumio_export::Kind;
use jumio_export::simulator::{self, SimOptions};

use crate::support::{
    BlockingSim, bin, committed_parts, csv_table, dataset_csv, dataset_parquet_strings, exportable,
    job_files, sha256_hex, text, zip_entries,
};

/// The simulator's default seed: the scenario of every population reference follows from it.
fn seed() -> u64 {
    SimOptions::default().seed
}

/// Status calls per reference and round: one per schedule entry, the first included.
const STATUS_CALLS: u32 = 3;

/// A job file with a short polling schedule (`STATUS_CALLS` status calls), so a PENDING
/// reference costs a fraction of a second, and `extra` appended (e.g. an `[output]` table).
fn job_toml(concurrency: usize, extra: &str) -> String {
    format!(
        r#"
[api]
region = "us"
user_agent = "jumio-export dataset tests/1.0"

[limits]
requests_per_second = 400.0
burst = 40
concurrency = {concurrency}
max_retries = 2
timeout_seconds = 10

[polling]
schedule_seconds = [0.05, 0.1, 0.15]
{extra}
"#
    )
}

/// `reference,kind` CSV text of `refs`.
fn refs_csv(refs: &[(String, Kind)]) -> String {
    let mut s = String::from("reference,kind\n");
    for (r, k) in refs {
        s.push_str(&format!("{r},{k}\n"));
    }
    s
}

/// Writes `refs` as `name` in `dir`.
fn write_refs(dir: &Path, name: &str, refs: &[(String, Kind)]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, refs_csv(refs)).expect("reference list written");
    p
}

/// `jumio-export run JOB --input REFS --out OUT --base-url URL --quiet ARGS…`, not started.
fn run_command(job: &Path, refs: &Path, out: &Path, base_url: &str, args: &[&str]) -> Command {
    let mut c = bin();
    c.arg("run")
        .arg(job)
        .arg("--input")
        .arg(refs)
        .arg("--out")
        .arg(out)
        .args(["--base-url", base_url, "--quiet"])
        .args(args);
    c
}

/// Runs the job to its end; returns its output and the `report.json` it wrote.
fn run_job(
    job: &Path,
    refs: &Path,
    out: &Path,
    base_url: &str,
    args: &[&str],
) -> (Output, serde_json::Value) {
    let o = run_command(job, refs, out, base_url, args)
        .output()
        .expect("the binary runs");
    let report = read_json(&out.join("report.json"));
    (o, report)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The error the simulator's scenario gives `reference` with this file's job
/// (`STATUS_CALLS` status calls, no fault knob), or `None` when it exports.
fn expected_error(reference: &str) -> Option<&'static str> {
    let sc = simulator::scenario(seed(), reference).expect("a reference the simulator knows");
    if sc.retention_404 {
        Some("NOT_FOUND")
    } else if sc.pending_at(STATUS_CALLS) {
        Some("PENDING")
    } else if sc.foreign_hrefs {
        Some("FOREIGN_URL")
    } else {
        None
    }
}

/// One commit record as the test reads it (not with the program's reader).
#[derive(Debug, Clone)]
struct CommitFile {
    run: String,
    report: serde_json::Value,
    parts: Vec<serde_json::Value>,
}

/// Every commit of `out`, in the order of their names (run ids sort by start second, so two
/// runs started within one second are in either order: tests find a run's commit by its id).
fn commits(out: &Path) -> Vec<CommitFile> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(out.join("commits"))
        .expect("commits/ exists")
        .map(|e| e.expect("commits/ entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".json") && !name.starts_with('.')
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let v = read_json(p);
            let run = v["run"].as_str().expect("run").to_string();
            assert_eq!(
                p.file_name().unwrap().to_str().unwrap(),
                format!("{run}.json"),
                "a commit is named by its run"
            );
            CommitFile {
                run,
                report: v["report"].clone(),
                parts: v["parts"].as_array().expect("parts").clone(),
            }
        })
        .collect()
}

/// The commit of `run`.
fn commit_of(out: &Path, run: &serde_json::Value) -> CommitFile {
    let run = run.as_str().expect("a run id");
    commits(out)
        .into_iter()
        .find(|c| c.run == run)
        .unwrap_or_else(|| panic!("no commit of run {run}"))
}

/// The CSV rows of `table` that commit `c` lists.
fn commit_rows(out: &Path, c: &CommitFile, table: &str) -> Vec<BTreeMap<String, String>> {
    c.parts
        .iter()
        .filter(|p| p["table"] == table && p["format"] == "csv")
        .flat_map(|p| csv_table(&out.join(p["path"].as_str().unwrap())).1)
        .collect()
}

/// Every table of the dataset and the parts each commit lists for it: at least one part per
/// table and format per run (none when an earlier commit has one), each named
/// `tables/{table}/{run}-{n}.{csv|parquet}` with `n` counting from 0 without gaps, CSV and Parquet parts of one `n` holding the same rows, every
/// file present with the bytes and sha256 the commit records, and every CSV row's `run` the
/// commit's. No file of the tables' directories matches a table glob without a commit listing it.
fn assert_parts_well_formed(out: &Path) {
    let tables = [
        "netverify",
        "documents",
        "authentications",
        "files",
        "failures",
    ];
    let mut listed = BTreeSet::new();
    let mut has_part = BTreeSet::new();
    for c in commits(out) {
        for table in tables {
            let mut ns: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
            for p in c.parts.iter().filter(|p| p["table"] == table) {
                let path = p["path"].as_str().expect("part path");
                let format = p["format"].as_str().expect("part format");
                let prefix = format!("tables/{table}/{}-", c.run);
                let n = path
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix(&format!(".{format}")))
                    .unwrap_or_else(|| {
                        panic!("{path}: not tables/{table}/{}-{{n}}.{format}", c.run)
                    });
                assert!(
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
                    "{path}: part number {n:?}"
                );
                assert!(
                    matches!(format, "csv" | "parquet"),
                    "{path}: format {format}"
                );
                let bytes = std::fs::read(out.join(path))
                    .unwrap_or_else(|e| panic!("{path} is listed by {} but: {e}", c.run));
                assert_eq!(p["bytes"], bytes.len() as u64, "{path}: bytes");
                assert_eq!(p["sha256"], sha256_hex(&bytes), "{path}: sha256");
                let rows = if format == "csv" {
                    let (header, rows) = csv_table(&out.join(path));
                    assert_eq!(header.last().map(String::as_str), Some("run"), "{path}");
                    for r in &rows {
                        assert_eq!(r["run"], c.run, "{path}: a row of another run");
                    }
                    rows.len()
                } else {
                    crate::support::parquet_rows(&out.join(path))
                };
                assert_eq!(p["rows"], rows as u64, "{path}: rows");
                ns.entry(format)
                    .or_default()
                    .push((n.parse().unwrap(), rows as u64));
                listed.insert(path.to_string());
            }
            for format in ["csv", "parquet"] {
                let mut got = ns.get(format).cloned().unwrap_or_default();
                got.sort();
                // A run with no row of a table writes no part of it, unless no earlier commit
                // has one: from the first commit on, every table can be read by glob.
                assert!(
                    !got.is_empty() || has_part.contains(&(table, format)),
                    "run {}: no {format} part of {table}, and no earlier commit has one",
                    c.run
                );
                if !got.is_empty() {
                    has_part.insert((table, format));
                }
                let numbers: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
                assert_eq!(
                    numbers,
                    (0..got.len() as u64).collect::<Vec<_>>(),
                    "run {}: {table} {format} parts numbered from 0 without gaps",
                    c.run
                );
            }
            assert_eq!(
                ns.get("csv"),
                ns.get("parquet"),
                "run {}: {table}: CSV and Parquet parts of one n hold as many rows",
                c.run
            );
        }
    }
    for table in tables {
        assert_eq!(
            crate::support::dataset_parquet_rows(out, table),
            dataset_csv(out, table).1.len(),
            "{table}: the dataset's Parquet and CSV rows"
        );
        for e in std::fs::read_dir(out.join("tables").join(table)).expect("table directory") {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".csv") || name.ends_with(".parquet") {
                assert!(
                    name.starts_with('.') || listed.contains(&format!("tables/{table}/{name}")),
                    "tables/{table}/{name} matches the table glob but no commit lists it"
                );
            }
        }
    }
}

/// The references of one kind table over every committed part, sorted, duplicates kept: the
/// CSV parts and the Parquet parts must agree.
fn table_references(out: &Path, table: &str) -> Vec<String> {
    let (_, rows) = dataset_csv(out, table);
    let mut csv: Vec<String> = rows.iter().map(|r| r["reference"].clone()).collect();
    csv.sort();
    let mut parquet: Vec<String> = dataset_parquet_strings(out, table, "reference")
        .into_iter()
        .map(|r| r.expect("reference is never null"))
        .collect();
    parquet.sort();
    assert_eq!(
        csv, parquet,
        "{table}: CSV and Parquet parts hold other references"
    );
    csv
}

/// Every kind table holds exactly `exported` (each reference once, in its kind's table).
fn assert_kind_tables_hold_exactly(out: &Path, exported: &[(String, Kind)]) {
    for kind in Kind::ALL {
        let mut expected: Vec<String> = exported
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(r, _)| r.clone())
            .collect();
        expected.sort();
        assert_eq!(
            table_references(out, kind.table_name()),
            expected,
            "{}: every exported reference exactly once across all commits",
            kind.table_name()
        );
    }
}

/// `failures.csv` as reference → row.
fn failures_csv(out: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let (_, rows) = csv_table(&out.join("failures.csv"));
    let n = rows.len();
    let map: BTreeMap<String, BTreeMap<String, String>> = rows
        .into_iter()
        .map(|r| (r["reference"].clone(), r))
        .collect();
    assert_eq!(map.len(), n, "failures.csv: one row per reference");
    map
}

/// The `*.zip` names under `archives/`.
fn archive_names(out: &Path) -> BTreeSet<String> {
    std::fs::read_dir(out.join("archives"))
        .expect("archives/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".zip") && !n.starts_with('.'))
        .collect()
}

/// `jumio-export verify OUT` exits 0: the dataset holds, by a check that trusts none of it.
fn assert_verify_ok(out: &Path) {
    let o = bin().arg("verify").arg(out).output().expect("verify runs");
    assert_eq!(
        o.status.code(),
        Some(0),
        "verify {} exited {:?}:\n{}",
        out.display(),
        o.status.code(),
        text(&o)
    );
}

/// Reference named by a request path (`/api/netverify/v2/{family}/{reference}/…`).
fn request_reference(path: &str) -> &str {
    path.split('/').nth(5).unwrap_or("")
}

/// A list of references with their kinds.
type Refs = Vec<(String, Kind)>;

/// Population references split in two disjoint batches, with a few readable references that
/// fail for sure added to each (a 404 in A, foreign hrefs in B: a follow-up that is due at once).
fn two_batches() -> (Refs, Refs) {
    let population = simulator::population(seed(), 100);
    let mut a = population[..50].to_vec();
    let mut b = population[50..].to_vec();
    a.push(("nf-d-batch-a".into(), Kind::Document));
    b.push(("fh-n-batch-b".into(), Kind::Netverify));
    for (name, batch) in [("A", &a), ("B", &b)] {
        let failing: Vec<_> = batch
            .iter()
            .filter(|(r, _)| r.len() == 36 && expected_error(r).is_some())
            .collect();
        assert!(
            !failing.is_empty(),
            "batch {name} has no generated reference that fails: widen the population"
        );
    }
    (a, b)
}

/// Exported and failed references of `refs` by the scenario.
fn split_by_scenario(
    refs: &[(String, Kind)],
) -> (Vec<(String, Kind)>, BTreeMap<String, &'static str>) {
    let mut exported = Vec::new();
    let mut failed = BTreeMap::new();
    for (r, k) in refs {
        match expected_error(r) {
            Some(e) => {
                failed.insert(r.clone(), e);
            }
            None => exported.push((r.clone(), *k)),
        }
    }
    (exported, failed)
}

/// A location after two runs of disjoint batches A and B.
struct TwoBatches {
    dir: tempfile::TempDir,
    sim: BlockingSim,
    job: PathBuf,
    out: PathBuf,
    a: Vec<(String, Kind)>,
    b: Vec<(String, Kind)>,
    /// The run ids of the runs of A and B.
    runs: Vec<serde_json::Value>,
}

fn export_two_batches() -> TwoBatches {
    let sim = BlockingSim::start(SimOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_batches();
    let (job, refs_a) = job_files(dir.path(), &job_toml(8, ""), "a.csv", &refs_csv(&a));
    let refs_b = write_refs(dir.path(), "b.csv", &b);
    let out = dir.path().join("out");
    let mut runs = Vec::new();
    for (name, refs, batch) in [("A", &refs_a, &a), ("B", &refs_b, &b)] {
        let (o, report) = run_job(&job, refs, &out, &sim.api().base_url(), &[]);
        let (exported, failed) = split_by_scenario(batch);
        assert_eq!(
            o.status.code(),
            Some(if failed.is_empty() { 0 } else { 1 }),
            "batch {name}: {}",
            text(&o)
        );
        let outcomes = &report["outcomes"];
        assert_eq!(
            outcomes["exported"],
            exported.len() as u64,
            "{name}: {outcomes}"
        );
        assert_eq!(
            outcomes["failed"],
            failed.len() as u64,
            "{name}: {outcomes}"
        );
        assert_eq!(outcomes["already_exported"], 0, "{name}: {outcomes}");
        runs.push(report["run"].clone());
    }
    TwoBatches {
        dir,
        sim,
        job,
        out,
        a,
        b,
        runs,
    }
}

/// Two disjoint batches into one location: every kind table, `files`, the `failures` table and
/// `failures.csv` cover both batches, as the simulator's scenario says, each batch's rows in its
/// own run's commit; verify exits 0.
#[test]
fn two_batches_into_one_location_cover_both() {
    let t = export_two_batches();
    let out = &t.out;
    let cs = commits(out);
    assert_eq!(cs.len(), 2, "one commit per run");
    assert_ne!(cs[0].run, cs[1].run);
    let all: Vec<(String, Kind)> = t.a.iter().chain(&t.b).cloned().collect();
    let (exported, failed) = split_by_scenario(&all);
    assert_kind_tables_hold_exactly(out, &exported);
    // Each batch's rows were added by its own run.
    for (run, batch) in t.runs.iter().zip([&t.a, &t.b]) {
        let c = &commit_of(out, run);
        let (batch_exported, batch_failed) = split_by_scenario(batch);
        let mut got: Vec<String> = Kind::ALL
            .iter()
            .flat_map(|k| commit_rows(out, c, k.table_name()))
            .map(|r| r["reference"].clone())
            .collect();
        got.sort();
        let mut want: Vec<String> = batch_exported.iter().map(|(r, _)| r.clone()).collect();
        want.sort();
        assert_eq!(got, want, "run {}: the rows of its batch", c.run);
        let failures: BTreeMap<String, String> = commit_rows(out, c, "failures")
            .into_iter()
            .map(|r| (r["reference"].clone(), r["error"].clone()))
            .collect();
        let want: BTreeMap<String, String> = batch_failed
            .iter()
            .map(|(r, e)| (r.clone(), e.to_string()))
            .collect();
        assert_eq!(failures, want, "run {}: its failures part", c.run);
    }
    crate::support::assert_files_table_matches_archives(out, &exported);
    let want_archives: BTreeSet<String> =
        exported.iter().map(|(r, _)| format!("{r}.zip")).collect();
    assert_eq!(
        archive_names(out),
        want_archives,
        "an archive per exported reference"
    );
    // failures.csv: the dataset's open follow-ups, both batches.
    let got: BTreeMap<String, String> = failures_csv(out)
        .into_iter()
        .map(|(r, row)| (r, row["error"].clone()))
        .collect();
    let want: BTreeMap<String, String> = failed
        .iter()
        .map(|(r, e)| (r.clone(), e.to_string()))
        .collect();
    assert_eq!(got, want, "failures.csv against the simulator's scenario");
    assert!(
        got.values().any(|e| e == "PENDING") && got.values().any(|e| e == "NOT_FOUND"),
        "the batches exercise PENDING and NOT_FOUND: {got:?}"
    );
    assert_parts_well_formed(out);
    assert_verify_ok(out);
    drop(t.dir);
}

/// An inotify watch on one directory: IN_OPEN and IN_ACCESS events of the files in it, read
/// without blocking. Sees every process on the machine, so the program's opens too.
struct OpenWatch {
    fd: i32,
}

impl OpenWatch {
    fn new(dir: &Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: plain system calls; the path is a NUL-terminated copy that outlives the call.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        let wd =
            unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) };
        assert!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        OpenWatch { fd }
    }

    /// The (name, event) pairs queued since the last call, for named files in the directory.
    fn drain(&self) -> Vec<(String, &'static str)> {
        let mut events = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reads at most buf.len() bytes into buf.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "inotify read: {e}"
                );
                return events;
            }
            let n = n as usize;
            let mut i = 0;
            while i + 16 <= n {
                let word = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
                let (mask, len) = (word(i + 4), word(i + 12) as usize);
                assert_eq!(
                    mask & libc::IN_Q_OVERFLOW,
                    0,
                    "the inotify queue overflowed: events were lost"
                );
                let name = &buf[i + 16..i + 16 + len];
                let name = String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_string();
                if !name.is_empty() {
                    let what = if mask & libc::IN_OPEN != 0 {
                        "open"
                    } else {
                        "access"
                    };
                    events.push((name, what));
                }
                i += 16 + len;
            }
        }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this value owns.
        unsafe { libc::close(self.fd) };
    }
}

/// A third run with the union of both batches: not one request for an exported reference, not
/// one open or read of an archive (inotify on `archives/`), every exported reference counted as
/// already exported, the exit code its outcomes give, and `failures.csv` unchanged but for the
/// follow-ups that were due (here the foreign-href reference, retried and failing again).
#[test]
fn a_rerun_with_the_union_fetches_and_reads_nothing_exported() {
    let t = export_two_batches();
    let out = &t.out;
    let all: Vec<(String, Kind)> = t.a.iter().chain(&t.b).cloned().collect();
    let (exported, failed) = split_by_scenario(&all);
    let union = write_refs(t.dir.path(), "union.csv", &all);
    let failures_before = failures_csv(out);
    let parts_before: BTreeMap<PathBuf, Vec<u8>> = [
        "netverify",
        "documents",
        "authentications",
        "files",
        "failures",
    ]
    .iter()
    .flat_map(|table| {
        committed_parts(out, table, "csv")
            .into_iter()
            .chain(committed_parts(out, table, "parquet"))
    })
    .map(|p| {
        let b = std::fs::read(&p).unwrap();
        (p, b)
    })
    .collect();

    let watch = OpenWatch::new(&out.join("archives"));
    // The watch sees a process opening and reading an archive (here this one).
    let probe = format!("{}.zip", exported[0].0);
    std::fs::read(out.join("archives").join(&probe)).unwrap();
    let seen = watch.drain();
    assert!(
        seen.iter().any(|(n, w)| *n == probe && *w == "open")
            && seen.iter().any(|(n, w)| *n == probe && *w == "access"),
        "the inotify watch does not see an archive opened and read: {seen:?}"
    );

    let before = t.sim.api().requests().len();
    let (o, report) = run_job(&t.job, &union, out, &t.sim.api().base_url(), &[]);
    let zip_events: Vec<_> = watch
        .drain()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".zip"))
        .collect();
    assert!(
        zip_events.is_empty(),
        "the third run opened or read archives: {} events, the first {:?}",
        zip_events.len(),
        &zip_events[..zip_events.len().min(6)]
    );

    let third = t.sim.api().requests()[before..].to_vec();
    let exported_set: BTreeSet<&str> = exported.iter().map(|(r, _)| r.as_str()).collect();
    for r in &third {
        assert!(
            !exported.iter().any(|(e, _)| r.path.contains(e.as_str())),
            "the third run requested {} of an exported reference",
            r.path
        );
    }
    // Due follow-ups only: not NOT_FOUND (carried without --retry-failed), not PENDING (due in a
    // day).
    let due: BTreeSet<&str> = failed
        .iter()
        .filter(|(_, e)| !matches!(**e, "NOT_FOUND" | "PENDING"))
        .map(|(r, _)| r.as_str())
        .collect();
    let requested: BTreeSet<&str> = third.iter().map(|r| request_reference(&r.path)).collect();
    assert_eq!(
        requested, due,
        "the third run sends requests for the due follow-ups and nothing else"
    );
    assert!(due.contains("fh-n-batch-b"));

    let outcomes = &report["outcomes"];
    assert_eq!(
        outcomes["already_exported"],
        exported_set.len() as u64,
        "{outcomes}"
    );
    assert_eq!(outcomes["exported"], 0, "{outcomes}");
    assert_eq!(outcomes["failed"], failed.len() as u64, "{outcomes}");
    assert_eq!(outcomes["not_started"], 0, "{outcomes}");
    let want_code = if outcomes["failed"] == 0 { 0 } else { 1 };
    assert_eq!(o.status.code(), Some(want_code), "{}", text(&o));

    // failures.csv: every row the same but the due ones', which keep reference, kind, stage and
    // error (the simulator answers the same).
    let failures_after = failures_csv(out);
    assert_eq!(
        failures_after.keys().collect::<Vec<_>>(),
        failures_before.keys().collect::<Vec<_>>(),
        "failures.csv: the same references"
    );
    for (r, row) in &failures_before {
        let after = &failures_after[r];
        if due.contains(r.as_str()) {
            for col in ["kind", "stage", "error"] {
                assert_eq!(after[col], row[col], "{r}: {col} of a due follow-up");
            }
        } else {
            assert_eq!(after, row, "{r}: a follow-up that was not due changed");
        }
    }
    // The earlier commits' parts are as they were; the third commit adds no row to a kind table.
    for (p, bytes) in &parts_before {
        assert!(
            std::fs::read(p).unwrap() == *bytes,
            "{} changed",
            p.display()
        );
    }
    assert_eq!(commits(out).len(), 3);
    let third_commit = commit_of(out, &report["run"]);
    for kind in Kind::ALL {
        assert!(commit_rows(out, &third_commit, kind.table_name()).is_empty());
    }
    // …and writes no file of a table it has no row for (the earlier commits have parts of
    // each): only its failures parts, for the due follow-ups that failed again.
    let tables: BTreeSet<&str> = third_commit
        .parts
        .iter()
        .map(|p| p["table"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        BTreeSet::from(["failures"]),
        "{:?}",
        third_commit.parts
    );
    assert_kind_tables_hold_exactly(out, &exported);
    assert_parts_well_formed(out);
    assert_verify_ok(out);
}

/// A failure that a later run exports leaves `failures.csv`: an HTTP_ERROR (every answer a 5xx)
/// is due at once and exported by the next run against a healthy API; a NOT_FOUND (the API
/// answered 404: a simulator of another seed does not know the references) is carried by a plain
/// rerun and exported by `--retry-failed` once the API has the transaction.
#[test]
fn a_failure_a_later_run_exports_leaves_failures_csv() {
    let refs = exportable(6);
    let (http_refs, nf_refs) = refs.split_at(3);
    let dir = tempfile::tempdir().unwrap();
    // An API answering nothing but 5xx is an outage: the job would pause for it (up to
    // max_outage_seconds) before the failures count; here it stops pausing after a second.
    let job_text =
        job_toml(4, "").replace("max_retries = 2", "max_retries = 2\nmax_outage_seconds = 1");
    let (job, all) = job_files(dir.path(), &job_text, "all.csv", &refs_csv(&refs));
    let out = dir.path().join("out");

    // Run 1: the 5xx references against an API that answers only 500 and 503.
    let broken = BlockingSim::start(SimOptions {
        faults: simulator::Faults {
            error_rate: 1.0,
            ..simulator::Faults::default()
        },
        ..SimOptions::default()
    });
    let http_list = write_refs(dir.path(), "http.csv", http_refs);
    let (o, _) = run_job(&job, &http_list, &out, &broken.api().base_url(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // Run 2: the other references against an API of another seed, which answers 404.
    let other_seed = BlockingSim::start(SimOptions {
        seed: seed() + 1,
        ..SimOptions::default()
    });
    let nf_list = write_refs(dir.path(), "nf.csv", nf_refs);
    let (o, _) = run_job(&job, &nf_list, &out, &other_seed.api().base_url(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let f = failures_csv(&out);
    for (r, _) in http_refs {
        assert_eq!(f[r]["error"], "HTTP_ERROR", "{r}");
    }
    for (r, _) in nf_refs {
        assert_eq!(f[r]["error"], "NOT_FOUND", "{r}");
    }
    assert_eq!(f.len(), refs.len());

    // Run 3: everything against the healthy API, no flag: the HTTP_ERRORs are due and exported;
    // the NOT_FOUNDs are carried, no request sent for them.
    let healthy = BlockingSim::start(SimOptions::default());
    let (o, report) = run_job(&job, &all, &out, &healthy.api().base_url(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(report["outcomes"]["exported"], http_refs.len() as u64);
    let requested: BTreeSet<String> = healthy
        .api()
        .requests()
        .iter()
        .map(|r| request_reference(&r.path).to_string())
        .collect();
    let want: BTreeSet<String> = http_refs.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(
        requested, want,
        "NOT_FOUND is carried without --retry-failed"
    );
    let f = failures_csv(&out);
    assert_eq!(
        f.keys().cloned().collect::<BTreeSet<_>>(),
        nf_refs.iter().map(|(r, _)| r.clone()).collect(),
        "failures.csv after the HTTP_ERRORs were exported"
    );
    assert_kind_tables_hold_exactly(&out, http_refs);

    // Run 4: --retry-failed asks again for the NOT_FOUNDs, which the API has now.
    let (o, report) = run_job(
        &job,
        &all,
        &out,
        &healthy.api().base_url(),
        &["--retry-failed"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report["outcomes"]["exported"], nf_refs.len() as u64);
    assert_eq!(
        report["outcomes"]["already_exported"],
        http_refs.len() as u64
    );
    assert!(
        failures_csv(&out).is_empty(),
        "failures.csv keeps references exported since: {:?}",
        failures_csv(&out).keys().collect::<Vec<_>>()
    );
    assert_kind_tables_hold_exactly(&out, &refs);
    crate::support::assert_files_table_matches_archives(&out, &refs);
    assert_parts_well_formed(&out);
    assert_verify_ok(&out);
}

/// Waits for every child; returns their outputs in order.
fn wait_all(children: Vec<Child>) -> Vec<Output> {
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("the child is waited for"))
        .collect()
}

/// Four shards started at once as four processes into one location: four commits with distinct
/// run ids naming their shard, each holding exactly its shard's references, and together every
/// reference exactly once in each table.
#[test]
fn four_shards_at_once_into_one_location_export_each_reference_once() {
    let sim = BlockingSim::start(SimOptions {
        faults: simulator::Faults {
            latency_ms: 5,
            ..simulator::Faults::default()
        },
        ..SimOptions::default()
    });
    let refs = exportable(48);
    let dir = tempfile::tempdir().unwrap();
    let (job, list) = job_files(dir.path(), &job_toml(4, ""), "refs.csv", &refs_csv(&refs));
    let out = dir.path().join("out");
    let children: Vec<Child> = (0..4)
        .map(|k| {
            run_command(
                &job,
                &list,
                &out,
                &sim.api().base_url(),
                &["--shard", &format!("{k}/4")],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("a shard starts")
        })
        .collect();
    for (k, o) in wait_all(children).iter().enumerate() {
        assert_eq!(o.status.code(), Some(0), "shard {k}/4: {}", text(o));
    }
    let cs = commits(&out);
    assert_eq!(cs.len(), 4, "one commit per shard");
    let runs: BTreeSet<&str> = cs.iter().map(|c| c.run.as_str()).collect();
    assert_eq!(runs.len(), 4, "distinct run ids");
    for k in 0..4u32 {
        let tag = format!("-s{k:02}of04-");
        let c = cs
            .iter()
            .find(|c| c.run.contains(&tag))
            .unwrap_or_else(|| panic!("no commit of shard {k}/4 ({tag}): {runs:?}"));
        assert_eq!(c.report["shard"], format!("{k}/4"));
        let mut got: Vec<String> = Kind::ALL
            .iter()
            .flat_map(|kind| commit_rows(&out, c, kind.table_name()))
            .map(|r| r["reference"].clone())
            .collect();
        got.sort();
        let mut want: Vec<String> = refs
            .iter()
            .filter(|(r, _)| jumio_export::input::shard_of(r, 4) == k)
            .map(|(r, _)| r.clone())
            .collect();
        want.sort();
        assert_eq!(got, want, "shard {k}/4 holds exactly its references");
    }
    assert_kind_tables_hold_exactly(&out, &refs);
    crate::support::assert_files_table_matches_archives(&out, &refs);
    assert!(failures_csv(&out).is_empty());
    assert_parts_well_formed(&out);
    assert_verify_ok(&out);
}

/// Two runs of the same input started at once into one location, no sharding: every reference
/// exported exactly once across both commits — each run leaves the references whose archive the
/// other created to it (`outcomes.other_run`), each archive listed by the run its provenance
/// names — and a third run exports nothing new.
#[test]
fn two_overlapping_runs_export_each_reference_once() {
    // Latency keeps both runs in flight together.
    let sim = BlockingSim::start(SimOptions {
        faults: simulator::Faults {
            latency_ms: 20,
            ..simulator::Faults::default()
        },
        ..SimOptions::default()
    });
    let refs = exportable(40);
    let dir = tempfile::tempdir().unwrap();
    let (job, list) = job_files(dir.path(), &job_toml(4, ""), "refs.csv", &refs_csv(&refs));
    let out = dir.path().join("out");
    let children: Vec<Child> = (0..2)
        .map(|_| {
            run_command(&job, &list, &out, &sim.api().base_url(), &[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a run starts")
        })
        .collect();
    let outputs = wait_all(children);
    let cs = commits(&out);
    assert_eq!(cs.len(), 2, "one commit per run");
    let n = refs.len() as u64;
    let o: Vec<&serde_json::Value> = cs.iter().map(|c| &c.report["outcomes"]).collect();
    for (c, out) in cs.iter().zip(&o) {
        assert_eq!(out["failed"], 0, "{}: {out}", c.run);
        assert_eq!(out["not_started"], 0, "{}: {out}", c.run);
        assert_eq!(
            out["already_exported"], 0,
            "{}: nothing was committed when both started, and an archive a live run created is not taken over: {out}",
            c.run
        );
        assert_eq!(
            out["exported"].as_u64().unwrap() + out["other_run"].as_u64().unwrap(),
            n,
            "{}: every reference exported or left to the other run: {out}",
            c.run
        );
    }
    assert_eq!(
        o[0]["exported"].as_u64().unwrap() + o[1]["exported"].as_u64().unwrap(),
        n,
        "each reference exported by exactly one of the runs"
    );
    assert_eq!(
        o[0]["other_run"], o[1]["exported"],
        "left to the other run: what it exported"
    );
    assert!(
        o[0]["other_run"].as_u64().unwrap() + o[1]["other_run"].as_u64().unwrap() > 0,
        "the runs did not overlap: {} / {}",
        o[0],
        o[1]
    );
    for (k, out) in outputs.iter().enumerate() {
        // A run that left references to another run has not exported them itself: exit 1
        // (src/run/mod.rs counts other_run as not started); one that left none exits 0.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "run {k}: {}",
            text(out)
        );
    }
    assert_kind_tables_hold_exactly(&out, &refs);
    crate::support::assert_files_table_matches_archives(&out, &refs);
    // Each archive is listed by the run that created it.
    for c in &cs {
        for kind in Kind::ALL {
            for row in commit_rows(&out, c, kind.table_name()) {
                let entries = zip_entries(&out.join(&row["archive"]));
                let provenance: serde_json::Value =
                    serde_json::from_slice(&entries["provenance.json"]).unwrap();
                assert_eq!(
                    provenance["run"], c.run,
                    "{}: listed by {} but created by {}",
                    row["reference"], c.run, provenance["run"]
                );
            }
        }
    }
    assert_parts_well_formed(&out);
    assert_verify_ok(&out);

    // A third run: nothing new.
    let before = sim.api().requests().len();
    let (o3, report) = run_job(&job, &list, &out, &sim.api().base_url(), &[]);
    assert_eq!(o3.status.code(), Some(0), "{}", text(&o3));
    assert_eq!(report["outcomes"]["exported"], 0);
    assert_eq!(report["outcomes"]["already_exported"], n);
    assert_eq!(
        sim.api().requests().len(),
        before,
        "the third run sent requests"
    );
    assert_kind_tables_hold_exactly(&out, &refs);
}

/// Every committed part's bytes, by path, and every archive's bytes.
fn snapshot(out: &Path) -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    for c in commits(out) {
        m.insert(
            out.join(format!("commits/{}.json", c.run)),
            sha256_hex(&std::fs::read(out.join(format!("commits/{}.json", c.run))).unwrap()),
        );
        for p in &c.parts {
            let path = out.join(p["path"].as_str().unwrap());
            m.insert(path.clone(), sha256_hex(&std::fs::read(&path).unwrap()));
        }
    }
    for name in archive_names(out) {
        let path = out.join("archives").join(name);
        m.insert(path.clone(), sha256_hex(&std::fs::read(&path).unwrap()));
    }
    m
}

/// The rows of every table over all commits, as (table, reference, run) — `files` with its entry.
fn row_set(out: &Path) -> BTreeSet<(String, String, String, String)> {
    let mut s = BTreeSet::new();
    for table in [
        "netverify",
        "documents",
        "authentications",
        "files",
        "failures",
    ] {
        for row in dataset_csv(out, table).1 {
            s.insert((
                table.to_string(),
                row["reference"].clone(),
                row.get("entry").cloned().unwrap_or_default(),
                row["run"].clone(),
            ));
        }
    }
    s
}

/// `archives = false` runs never shrink what earlier runs committed: after a run with archives,
/// a run with `archives = false` and another batch, and an `archives = false` run stopped with
/// Ctrl-C, every earlier commit's files and every archive are byte for byte as they were, no
/// archive is added, and the rows of the dataset only grow.
#[test]
fn runs_without_archives_never_shrink_earlier_commits() {
    let refs = exportable(100);
    let (a, rest) = refs.split_at(15);
    let (b, c) = rest.split_at(15);
    let sim = BlockingSim::start(SimOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (job, list_a) = job_files(dir.path(), &job_toml(4, ""), "a.csv", &refs_csv(a));
    let no_archives = dir.path().join("no-archives.toml");
    std::fs::write(&no_archives, job_toml(2, "[output]\narchives = false\n")).unwrap();
    let out = dir.path().join("out");

    let (o, report) = run_job(&job, &list_a, &out, &sim.api().base_url(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let run_a = report["run"].clone();
    let after_a = snapshot(&out);
    let rows_a = row_set(&out);
    assert_eq!(archive_names(&out).len(), a.len());

    let list_b = write_refs(dir.path(), "b.csv", b);
    let (o, report) = run_job(&no_archives, &list_b, &out, &sim.api().base_url(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report["outcomes"]["exported"], b.len() as u64);
    let after_b = snapshot(&out);
    for (p, h) in &after_a {
        assert_eq!(
            after_b.get(p),
            Some(h),
            "{} changed or vanished",
            p.display()
        );
    }
    assert_eq!(
        archive_names(&out).len(),
        a.len(),
        "archives = false wrote an archive"
    );
    let rows_b = row_set(&out);
    assert!(
        rows_a.is_subset(&rows_b),
        "rows were dropped: {:?}",
        rows_a.difference(&rows_b).take(5).collect::<Vec<_>>()
    );
    assert!(rows_b.len() > rows_a.len());
    let ab: Vec<(String, Kind)> = a.iter().chain(b).cloned().collect();
    assert_kind_tables_hold_exactly(&out, &ab);

    // Run 3: all three batches, no archives, against a slow API, stopped with Ctrl-C once it
    // has sent a few requests.
    let slow = BlockingSim::start(SimOptions {
        faults: simulator::Faults {
            latency_ms: 60,
            ..simulator::Faults::default()
        },
        ..SimOptions::default()
    });
    let list_all = write_refs(dir.path(), "all.csv", &refs);
    let child = run_command(&no_archives, &list_all, &out, &slow.api().base_url(), &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow.api().requests().len() < 10 {
        assert!(Instant::now() < deadline, "the third run sent no requests");
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::support::signal(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["interrupted"], true);
    assert_eq!(report["outcomes"]["already_exported"], ab.len() as u64);
    let exported_now = report["outcomes"]["exported"].as_u64().unwrap();
    assert!(
        exported_now < c.len() as u64,
        "the Ctrl-C came too late to interrupt anything: {}",
        report["outcomes"]
    );
    // No request for a reference the dataset already had.
    for r in slow.api().requests() {
        assert!(
            !ab.iter().any(|(e, _)| r.path.contains(e.as_str())),
            "the interrupted run requested {}",
            r.path
        );
    }
    let after_c = snapshot(&out);
    for (p, h) in &after_b {
        assert_eq!(
            after_c.get(p),
            Some(h),
            "{} changed or vanished",
            p.display()
        );
    }
    assert_eq!(
        archive_names(&out).len(),
        a.len(),
        "archives = false wrote an archive"
    );
    let rows_c = row_set(&out);
    assert!(
        rows_b.is_subset(&rows_c),
        "rows were dropped: {:?}",
        rows_b.difference(&rows_c).take(5).collect::<Vec<_>>()
    );
    let cs = commits(&out);
    assert_eq!(cs.len(), 3, "the interrupted run commits what it finished");
    // Rows written without archives name none.
    for c in cs.iter().filter(|c| c.run != run_a) {
        for kind in Kind::ALL {
            for row in commit_rows(&out, c, kind.table_name()) {
                assert_eq!(row["archive"], "", "{}", row["reference"]);
            }
        }
        assert!(commit_rows(&out, c, "files").is_empty());
    }
    assert_parts_well_formed(&out);
}
