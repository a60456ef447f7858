//! `verify`: a real dataset made by the binary against the simulator over HTTP (one batch, then
//! a second batch: two commits) verifies clean; each kind of damage done to a fresh copy of it
//! is found, named, and makes `is_ok()` false; what a stopped run leaves is a warning.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow_array::{Array, ArrayRef, Date32Array, RecordBatch, StringArray};
use jumio_export::Kind;
use jumio_export::simulator::{self, SimOptions};
use jumio_export::verify::{self, Finding, VerifyError, VerifyOptions, VerifyReport};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::support::{self, BlockingSim, bin, dataset_csv, sha256_hex, text};

const JOB: &str = r#"
[api]
region = "us"
user_agent = "jumio-export tests/1.0"

[limits]
requests_per_second = 400.0
burst = 20
concurrency = 8
max_retries = 2
timeout_seconds = 10

[polling]
schedule_seconds = [0.05, 0.1]
"#;

/// One dataset, made once per test binary: `one` after the first batch (one commit), `two`
/// after the second (two commits). Every test works on its own copy.
struct Export {
    _dir: tempfile::TempDir,
    one: PathBuf,
    two: PathBuf,
}

fn export() -> &'static Export {
    static EXPORT: OnceLock<Export> = OnceLock::new();
    EXPORT.get_or_init(make_export)
}

fn make_export() -> Export {
    let dir = tempfile::tempdir().unwrap();
    let seed = SimOptions::default().seed;
    let population = simulator::population(seed, 20);
    // Failures of several kinds, and images sent as one object.
    let mut first: Vec<(String, Kind)> = population[..10].to_vec();
    first.extend([
        ("nf-n1".to_string(), Kind::Netverify),
        ("obj-n1".to_string(), Kind::Netverify),
    ]);
    let mut second: Vec<(String, Kind)> = population[10..].to_vec();
    second.push(("pf-a1".to_string(), Kind::Authentication));
    let sim = BlockingSim::start(SimOptions::default());
    let out = dir.path().join("out");
    let run = |name: &str, refs: &[(String, Kind)]| {
        let (job, _) = support::job_files(dir.path(), JOB, name, "");
        let list = dir.path().join(name);
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
        // 1: some references failed (each is in failures.csv), as planned.
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    };
    run("first.csv", &first);
    let one = dir.path().join("one");
    copy_dir(&out, &one);
    // Run ids sort by their start second: the second batch starts in a later one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run("second.csv", &second);
    assert_eq!(commits(&out).len(), 2);
    Export {
        _dir: dir,
        one,
        two: out,
    }
}

/// A fresh copy of the one-commit dataset (`false`) or the two-commit one (`true`).
fn copy(two: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let e = export();
    copy_dir(if two { &e.two } else { &e.one }, &out);
    (dir, out)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), &target).unwrap();
        }
    }
}

/// The commit records, in run order: (run, record).
fn commits(out: &Path) -> Vec<(String, serde_json::Value)> {
    let mut runs: Vec<String> = std::fs::read_dir(out.join("commits"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .map(|n| n.trim_end_matches(".json").to_string())
        .collect();
    runs.sort();
    runs.into_iter()
        .map(|run| {
            let path = out.join(format!("commits/{run}.json"));
            let json = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            (run, json)
        })
        .collect()
}

/// Part 0 of `table` in `format` of commit `run`, relative to the location.
fn part0(run: &str, table: &str, format: &str) -> String {
    format!("tables/{table}/{run}-0.{format}")
}

type CsvRows = Vec<BTreeMap<String, String>>;

fn read_csv(path: &Path) -> (Vec<String>, CsvRows) {
    support::csv_table(path)
}

/// Exported references of a kind table, over every commit.
fn references(out: &Path, table: &str) -> Vec<String> {
    dataset_csv(out, table)
        .1
        .into_iter()
        .map(|r| r["reference"].clone())
        .collect()
}

/// A Netverify reference whose archive holds a stored image, and that image's entry name.
fn netverify_with_image(out: &Path) -> (String, String) {
    for reference in references(out, "netverify") {
        let path = out.join(format!("archives/{reference}.zip"));
        let zip = zip::ZipArchive::new(File::open(&path).unwrap()).unwrap();
        if let Some(name) = zip
            .file_names()
            .filter_map(Result::ok)
            .find(|n| n.starts_with("images/") && n.ends_with(".jpg"))
        {
            return (reference, name.to_string());
        }
    }
    panic!("no Netverify archive with a JPEG image in the export");
}

fn entry_bytes(archive: &Path, entry: &str) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(File::open(archive).unwrap()).unwrap();
    let mut f = zip.by_name(entry).unwrap();
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    buf
}

fn run_verify(out: &Path) -> VerifyReport {
    run_verify_since(out, None)
}

fn run_verify_since(out: &Path, since: Option<&str>) -> VerifyReport {
    let report = verify::verify_with(
        out,
        VerifyOptions {
            since,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_no_personal_data(&report);
    report
}

/// Findings whose subject is `subject` and whose problem contains every one of `words`.
fn found<'a>(report: &'a VerifyReport, subject: &str, words: &[&str]) -> Vec<&'a Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.subject == subject && words.iter().all(|w| f.problem.contains(w)))
        .collect()
}

fn assert_found(report: &VerifyReport, subject: &str, words: &[&str]) {
    assert!(
        !found(report, subject, words).is_empty(),
        "no finding on {subject} mentioning {words:?}; report:\n{report}"
    );
}

/// Every finding is about one of `subjects` (prefixes).
fn assert_only_about(report: &VerifyReport, subjects: &[&str]) {
    assert!(
        report
            .findings
            .iter()
            .all(|f| subjects.iter().any(|s| f.subject.starts_with(s))),
        "a finding about something else than {subjects:?}:\n{report}"
    );
}

/// No finding or warning quotes a name, document number, address or other personal field of
/// the dataset (read from the untouched one: a damaged copy may miss a part).
fn assert_no_personal_data(report: &VerifyReport) {
    let text = report.to_string();
    for table in ["netverify", "documents", "authentications"] {
        let (header, rows) = dataset_csv(&export().two, table);
        for column in header.iter().filter(|c| {
            ["name", "number", "address", "dob", "personal"]
                .iter()
                .any(|w| c.contains(w))
        }) {
            for row in &rows {
                let value = &row[column];
                if value.chars().count() >= 4 {
                    assert!(
                        !text.contains(value.as_str()),
                        "{table}.{column} value appears in the report"
                    );
                }
            }
        }
    }
}

fn dataset_rows(out: &Path) -> u64 {
    ["netverify", "documents", "authentications"]
        .iter()
        .map(|t| references(out, t).len() as u64)
        .sum()
}

#[test]
fn an_untouched_dataset_of_one_commit_verifies() {
    let (_dir, out) = copy(false);
    let report = run_verify(&out);
    assert!(report.is_ok(), "{report}");
    assert!(report.warnings.is_empty(), "{report}");
    let rows = dataset_rows(&out);
    let commit = &commits(&out)[0].1;
    let parts = commit["parts"].as_array().unwrap().len() as u64;
    assert_eq!(report.commits, 1);
    assert_eq!(report.parts, parts);
    assert_eq!(report.rows, rows);
    assert_eq!(report.archives, rows);
    assert_eq!(report.rows, commit["archives"]["count"].as_u64().unwrap());
    assert_eq!(report.files, dataset_csv(&out, "files").1.len() as u64);
    assert_eq!(
        report.failures,
        read_csv(&out.join("failures.csv")).1.len() as u64
    );
    assert!(report.failures >= 1, "nf-n1 fails");
    assert_eq!(
        report.to_string(),
        format!(
            "verified 1 commit ({parts} parts), {rows} archives, {rows} table rows, {} files rows, {} failures.csv rows: OK\n",
            report.files, report.failures
        )
    );
}

#[test]
fn an_untouched_dataset_of_two_commits_verifies() {
    let (_dir, out) = copy(true);
    let report = run_verify(&out);
    assert!(report.is_ok(), "{report}");
    assert!(report.warnings.is_empty(), "{report}");
    assert_eq!(report.commits, 2);
    let rows = dataset_rows(&out);
    assert!(rows > references(&export().one, "netverify").len() as u64);
    assert_eq!(report.rows, rows);
    assert_eq!(report.archives, rows);
    // The Parquet parts hold the same rows as the CSV ones.
    let parquet: usize = ["netverify", "documents", "authentications"]
        .iter()
        .map(|t| support::dataset_parquet_rows(&out, t))
        .sum();
    assert_eq!(parquet as u64, rows);
    let mut in_parquet = support::dataset_parquet_strings(&out, "netverify", "reference");
    let mut in_csv: Vec<Option<String>> = references(&out, "netverify")
        .into_iter()
        .map(Some)
        .collect();
    in_parquet.sort();
    in_csv.sort();
    assert_eq!(in_parquet, in_csv);
    // The binary says the same, with exit 0.
    let o = bin().arg("verify").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), report.to_string());
}

#[test]
fn a_changed_byte_in_a_part_is_found_by_its_sha256() {
    let (_dir, out) = copy(true);
    let run = &commits(&out)[0].0;
    let part = part0(run, "netverify", "parquet");
    let path = out.join(&part);
    let mut bytes = std::fs::read(&path).unwrap();
    // A byte of the footer's `created_by`: the file still reads, with the same rows.
    let at = bytes
        .windows(10)
        .position(|w| w == b"parquet-rs")
        .expect("the writer names itself in the footer");
    bytes[at] = b'P';
    std::fs::write(&path, &bytes).unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    assert_found(
        &report,
        &part,
        &[
            &format!("sha256 {}", sha256_hex(&bytes)),
            &format!("commits/{run}.json recorded"),
        ],
    );
    assert_eq!(report.findings.len(), 1, "{report}");
}

#[test]
fn a_deleted_part_is_found() {
    let (_dir, out) = copy(true);
    let run = &commits(&out)[1].0;
    let part = part0(run, "documents", "csv");
    std::fs::remove_file(out.join(&part)).unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    assert_found(&report, &part, &["missing", &format!("commits/{run}.json")]);
    // The Parquet twin still holds the rows: they are checked from it, nothing else is wrong.
    assert_eq!(report.findings.len(), 1, "{report}");
}

#[test]
fn a_truncated_part_is_found() {
    let (_dir, out) = copy(true);
    let run = &commits(&out)[0].0;
    let part = part0(run, "netverify", "parquet");
    let path = out.join(&part);
    let len = std::fs::metadata(&path).unwrap().len();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    assert_found(
        &report,
        &part,
        &[&format!("{} bytes", len / 2), &format!("recorded {len}")],
    );
    assert_found(&report, &part, &["not a readable Parquet file"]);
    assert_only_about(&report, &[&part]);
}

#[test]
fn a_flipped_byte_in_an_archive_is_found() {
    let (_dir, out) = copy(true);
    let (reference, entry) = netverify_with_image(&out);
    let path = out.join(format!("archives/{reference}.zip"));
    let image = entry_bytes(&path, &entry);
    let mut zip_bytes = std::fs::read(&path).unwrap();
    // Images are stored, not deflated: their bytes appear as they are in the zip file.
    let window = &image[image.len() / 2..image.len() / 2 + 32];
    let at = zip_bytes
        .windows(window.len())
        .position(|w| w == window)
        .expect("the stored image's bytes are in the zip file");
    zip_bytes[at + 16] ^= 0x01;
    std::fs::write(&path, &zip_bytes).unwrap();

    let report = run_verify(&out);
    assert!(!report.is_ok());
    let subject = format!("archives/{reference}.zip");
    assert_found(&report, &subject, &[&entry]);
    // The archive's own hash no longer matches its table row.
    assert_found(
        &report,
        &subject,
        &["does not match archive_sha256", &sha256_hex(&zip_bytes)],
    );
    // Nothing else is blamed: every other archive, part and commit is fine.
    assert_only_about(&report, &[&subject]);
}

#[test]
fn a_deleted_archive_is_found() {
    let (_dir, out) = copy(true);
    let reference = references(&out, "authentications")
        .into_iter()
        .next()
        .or_else(|| references(&out, "netverify").pop())
        .unwrap();
    std::fs::remove_file(out.join(format!("archives/{reference}.zip"))).unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    let missing: Vec<_> = report
        .findings
        .iter()
        .filter(|f| {
            f.problem.contains(&format!(
                "reference {reference}: archive archives/{reference}.zip is missing"
            ))
        })
        .collect();
    assert_eq!(missing.len(), 1, "{report}");
    assert!(missing[0].subject.starts_with("tables/"), "{}", missing[0]);
    assert_eq!(report.findings.len(), 1, "{report}");
}

/// Copies the rows of `from` (a CSV part) that `keep` accepts into `to`, with the `run` column
/// set to `run`; returns the part record a commit would list.
fn copy_csv_rows(
    out: &Path,
    from: &Path,
    table: &str,
    run: &str,
    keep: impl Fn(&BTreeMap<String, String>) -> bool,
) -> serde_json::Value {
    let (header, rows) = read_csv(from);
    let relative = part0(run, table, "csv");
    let to = out.join(&relative);
    let mut w = csv::Writer::from_path(&to).unwrap();
    w.write_record(&header).unwrap();
    let mut n = 0;
    for row in rows.iter().filter(|r| keep(r)) {
        let cells: Vec<&str> = header
            .iter()
            .map(|h| if h == "run" { run } else { row[h].as_str() })
            .collect();
        w.write_record(&cells).unwrap();
        n += 1;
    }
    w.flush().unwrap();
    drop(w);
    let bytes = std::fs::read(&to).unwrap();
    serde_json::json!({
        "table": table, "path": relative, "format": "csv", "rows": n,
        "bytes": bytes.len(), "sha256": sha256_hex(&bytes),
    })
}

#[test]
fn a_row_duplicated_across_two_commits_is_found() {
    let (_dir, out) = copy(true);
    let all = commits(&out);
    let (first_run, first) = &all[0];
    // A third commit, hand-made and correct in itself (sizes, hashes, rows, run column, files
    // rows, root hash), that lists one reference the first commit exported already.
    let run = "29991231T235959Z-beef";
    let from = out.join(part0(first_run, "netverify", "csv"));
    let (_, rows) = read_csv(&from);
    let row = rows[1].clone();
    let reference = row["reference"].clone();
    let netverify = copy_csv_rows(&out, &from, "netverify", run, |r| {
        r["reference"] == reference
    });
    let files = copy_csv_rows(
        &out,
        &out.join(part0(first_run, "files", "csv")),
        "files",
        run,
        |r| r["reference"] == reference,
    );
    let root_hash = sha256_hex(format!("{reference}  {}\n", row["archive_sha256"]).as_bytes());
    let mut report_object = first["report"].clone();
    report_object["run"] = run.into();
    report_object["root_hash"] = root_hash.clone().into();
    let commit = serde_json::json!({
        "format": first["format"], "run": run, "report": report_object,
        "parts": [netverify, files],
        "archives": {"count": 1, "root_hash": root_hash,
                     "root_hash_method": first["archives"]["root_hash_method"]},
    });
    std::fs::write(
        out.join(format!("commits/{run}.json")),
        serde_json::to_vec_pretty(&commit).unwrap(),
    )
    .unwrap();
    let first_line = csv::Reader::from_path(&from)
        .unwrap()
        .records()
        .nth(1)
        .unwrap()
        .unwrap()
        .position()
        .unwrap()
        .line();

    let report = run_verify(&out);
    assert!(!report.is_ok());
    assert_found(
        &report,
        &format!("{} line 2", part0(run, "netverify", "csv")),
        &[
            &format!("reference {reference} (netverify) duplicated"),
            &format!(
                "{} line {first_line} (commit {first_run})",
                part0(first_run, "netverify", "csv")
            ),
        ],
    );
    assert_eq!(
        report.findings.len(),
        1,
        "only the duplicate is wrong:\n{report}"
    );

    // --since the second run checks only the third commit, against the references of every
    // earlier one.
    let report = run_verify_since(&out, Some(&all[1].0));
    assert_eq!(report.commits, 1);
    assert_found(
        &report,
        &format!("{} line 2", part0(run, "netverify", "csv")),
        &[
            &format!("reference {reference} (netverify) duplicated"),
            &format!("commit {first_run}"),
        ],
    );
    assert_eq!(report.findings.len(), 1, "{report}");
}

#[test]
fn a_commit_whose_root_hash_is_wrong_is_found() {
    let (_dir, out) = copy(true);
    let (run, mut commit) = commits(&out).remove(1);
    let recorded = commit["archives"]["root_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = "0".repeat(64);
    commit["archives"]["root_hash"] = wrong.clone().into();
    let path = out.join(format!("commits/{run}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&commit).unwrap()).unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    let subject = format!("commits/{run}.json");
    assert_found(
        &report,
        &subject,
        &[
            &format!("archives.root_hash {wrong} does not match {recorded}"),
            "recomputed",
        ],
    );
    assert_only_about(&report, &[&subject]);
}

#[test]
fn an_unlisted_archive_and_part_are_warnings_and_exit_0() {
    let (_dir, out) = copy(true);
    let reference = references(&out, "netverify").remove(0);
    std::fs::copy(
        out.join(format!("archives/{reference}.zip")),
        out.join("archives/zz-unlisted-1.zip"),
    )
    .unwrap();
    let run = &commits(&out)[0].0;
    let stray = "tables/netverify/29990101T000000Z-0000-0.csv";
    std::fs::copy(out.join(part0(run, "netverify", "csv")), out.join(stray)).unwrap();
    let report = run_verify(&out);
    assert!(report.is_ok(), "{report}");
    let subjects: Vec<&str> = report.warnings.iter().map(|w| w.subject.as_str()).collect();
    assert_eq!(subjects, ["archives/zz-unlisted-1.zip", stray], "{report}");
    assert!(
        report
            .warnings
            .iter()
            .all(|w| w.problem.contains("no commit lists"))
    );
    let o = bin().arg("verify").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("warning  archives/zz-unlisted-1.zip: no commit lists it"),
        "{}",
        text(&o)
    );
}

#[test]
fn since_checks_only_the_later_commits() {
    let (_dir, out) = copy(true);
    let all = commits(&out);
    let (first, second) = (&all[0].0, &all[1].0);
    // Damage in the first commit's part: an edited cell (its sha256 changes too).
    let reference = netverify_with_name_and_dob(&out, first);
    let part = part0(first, "netverify", "csv");
    let line = edit_csv_cell(&out.join(&part), &reference, "document_first_name", |v| {
        format!("{v}X")
    });
    let report = run_verify_since(&out, Some(first));
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.commits, 1);
    assert_eq!(
        report.rows,
        dataset_rows(&out)
            - references(&export().one, "netverify").len() as u64
            - references(&export().one, "documents").len() as u64
            - references(&export().one, "authentications").len() as u64
    );
    assert!(
        report
            .to_string()
            .contains(&format!("the commits after {first}"))
    );
    let o = bin()
        .args(["verify", "--since", first])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Without --since, and --since an empty suffix of the commits, it is found.
    let report = run_verify(&out);
    assert_found(
        &report,
        &format!("{part} line {line}"),
        &["column document_first_name differs"],
    );
    assert_found(&report, &part, &["sha256"]);
    let o = bin().arg("verify").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = run_verify_since(&out, Some(second));
    assert_eq!((report.commits, report.rows), (0, 0));
    assert!(report.is_ok(), "{report}");
}

#[test]
fn an_unknown_since_run_is_a_usage_error() {
    let (_dir, out) = copy(false);
    let run = "20000101T000000Z-0000";
    let err = verify::verify_with(
        &out,
        VerifyOptions {
            since: Some(run),
            ..VerifyOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::UnknownSince { .. }), "{err}");
    let o = bin()
        .args(["verify", "--since", run])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("no commit {run}")),
        "{}",
        text(&o)
    );
}

#[test]
fn a_directory_of_the_old_layout_is_a_usage_error_with_the_upgrade_advice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("netverify.csv"), "reference\n").unwrap();
    let o = bin().arg("verify").arg(dir.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("jumio-export upgrade"), "{}", text(&o));
}

#[test]
fn a_failures_row_of_an_exported_reference_is_found() {
    let (_dir, out) = copy(true);
    let reference = references(&out, "netverify").remove(0);
    let path = out.join("failures.csv");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let run = &commits(&out)[0].0;
    text.push_str(&format!(
        "{reference},netverify,status,404,NOT_FOUND,1,,{run}\n"
    ));
    std::fs::write(&path, text).unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    let first = &commits(&out)[0].0;
    let lines = read_csv(&path).1.len() + 1;
    assert_found(
        &report,
        &format!("failures.csv line {lines}"),
        &[&format!(
            "reference {reference} (netverify) was exported by commit {first}"
        )],
    );
    assert_eq!(report.findings.len(), 1, "{report}");
}

#[test]
fn a_stale_failures_csv_is_a_warning_and_an_edited_one_a_finding() {
    let (_dir, out) = copy(true);
    let all = commits(&out);
    // The first run's failures.csv: as if the second run stopped right after its commit.
    std::fs::copy(export().one.join("failures.csv"), out.join("failures.csv")).unwrap();
    let differs = std::fs::read(export().one.join("failures.csv")).unwrap()
        != std::fs::read(export().two.join("failures.csv")).unwrap();
    assert!(differs, "the second batch changes the open follow-ups");
    let report = run_verify(&out);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.warnings.len(), 1, "{report}");
    assert!(report.warnings[0].problem.contains(&format!(
        "stale: the open follow-ups before commits/{}.json",
        all[1].0
    )));
    // A row left out is damage.
    let (header, rows) = read_csv(&export().two.join("failures.csv"));
    let mut w = csv::Writer::from_path(out.join("failures.csv")).unwrap();
    w.write_record(&header).unwrap();
    for row in &rows[1..] {
        w.write_record(header.iter().map(|h| row[h].as_str()))
            .unwrap();
    }
    w.flush().unwrap();
    let report = run_verify(&out);
    assert_found(
        &report,
        "failures.csv",
        &[&format!(
            "reference {} ({}) is missing",
            rows[0]["reference"], rows[0]["kind"]
        )],
    );
    assert_eq!(report.findings.len(), 1, "{report}");
}

#[test]
fn stray_temporary_files_are_warnings_not_failures() {
    let (_dir, out) = copy(false);
    let run = &commits(&out)[0].0;
    let dead = "20200101T000000Z-dead";
    std::fs::create_dir_all(out.join(format!("runs/{dead}"))).unwrap();
    std::fs::write(out.join(format!("runs/{dead}/abc-1.zip.tmp")), b"partial").unwrap();
    let temp = format!("tables/netverify/{run}-1.parquet.tmp");
    std::fs::write(out.join(&temp), b"partial").unwrap();
    let report = run_verify(&out);
    assert!(report.is_ok(), "{report}");
    let subjects: Vec<&str> = report.warnings.iter().map(|w| w.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [format!("runs/{dead}/abc-1.zip.tmp"), temp],
        "{report}"
    );
    assert!(
        report
            .warnings
            .iter()
            .all(|w| w.problem.contains("run the same job again"))
    );
    assert!(report.to_string().contains("2 warnings"));
}

#[test]
fn a_missing_directory_cannot_be_verified() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-export");
    let err = verify::verify(&missing).unwrap_err();
    assert!(matches!(err, VerifyError::Missing { .. }));
    assert!(err.to_string().contains("no-such-export"), "{err}");
}

/// A Netverify reference of commit `run` whose row has a first name and a date of birth.
fn netverify_with_name_and_dob(out: &Path, run: &str) -> String {
    let (_, rows) = read_csv(&out.join(part0(run, "netverify", "csv")));
    rows.into_iter()
        .find(|r| !r["document_first_name"].is_empty() && r["document_dob"].len() == 10)
        .map(|r| r["reference"].clone())
        .expect("a Netverify row with a first name and a date of birth")
}

/// Rewrites the CSV part at `path` with the `column` cell of `reference`'s row replaced by
/// `edit` of it; returns the row's line.
fn edit_csv_cell(path: &Path, reference: &str, column: &str, edit: impl Fn(&str) -> String) -> u64 {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().clone();
    let at = header.iter().position(|h| h == column).unwrap();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mut writer = csv::Writer::from_path(path).unwrap();
    writer.write_record(&header).unwrap();
    let mut line = None;
    for r in records {
        if &r[0] == reference {
            line = r.position().map(|p| p.line());
            let edited = edit(&r[at]);
            assert_ne!(edited, &r[at]);
            let cells: Vec<&str> = r
                .iter()
                .enumerate()
                .map(|(i, v)| if i == at { edited.as_str() } else { v })
                .collect();
            writer.write_record(&cells).unwrap();
        } else {
            writer.write_record(&r).unwrap();
        }
    }
    writer.flush().unwrap();
    line.expect("the reference has a row")
}

/// Rewrites the Parquet part at `path` (same schema) with the `column` value of `reference`'s
/// row replaced: `edit` gets the column's array and the row and returns the new array. Returns
/// the 1-based row.
fn edit_parquet_cell(
    path: &Path,
    reference: &str,
    column: &str,
    edit: impl Fn(&dyn Array, usize) -> ArrayRef,
) -> u64 {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    let at = schema.index_of(column).unwrap();
    let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    let (mut seen, mut found) = (0u64, None);
    for batch in batches {
        let refs = batch
            .column_by_name("reference")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        let mut columns = batch.columns().to_vec();
        if let Some(i) = (0..refs.len()).find(|&i| refs.value(i) == reference) {
            columns[at] = edit(batch.column(at).as_ref(), i);
            found = Some(seen + i as u64 + 1);
        }
        seen += batch.num_rows() as u64;
        writer
            .write(&RecordBatch::try_new(batch.schema(), columns).unwrap())
            .unwrap();
    }
    writer.close().unwrap();
    found.expect("the reference has a row")
}

/// The edited cell's finding, at `subject`, naming `column` and not its value; the only other
/// findings are the part's own size and sha256 against its commit.
fn assert_only_cell_finding(
    report: &VerifyReport,
    part: &str,
    subject: &str,
    reference: &str,
    column: &str,
) {
    assert!(!report.is_ok());
    assert_found(
        report,
        subject,
        &[&format!("reference {reference}: column {column} differs")],
    );
    assert_found(report, part, &["sha256"]);
    let cell = report
        .findings
        .iter()
        .filter(|f| f.subject == subject)
        .count();
    assert_eq!(cell, 1, "{report}");
    assert_only_about(report, &[part]);
    assert!(report.findings.len() <= 3, "{report}");
}

#[test]
fn an_edited_first_name_in_a_csv_part_is_found_naming_the_column() {
    let (_dir, out) = copy(true);
    let run = commits(&out)[1].0.clone();
    let reference = netverify_with_name_and_dob(&out, &run);
    let part = part0(&run, "netverify", "csv");
    let line = edit_csv_cell(&out.join(&part), &reference, "document_first_name", |v| {
        format!("{v}X")
    });
    let report = run_verify(&out);
    let subject = format!("{part} line {line}");
    assert_only_cell_finding(&report, &part, &subject, &reference, "document_first_name");
}

#[test]
fn an_edited_date_of_birth_in_a_csv_part_is_found_naming_the_column() {
    let (_dir, out) = copy(true);
    let run = commits(&out)[0].0.clone();
    let reference = netverify_with_name_and_dob(&out, &run);
    let part = part0(&run, "netverify", "csv");
    let line = edit_csv_cell(&out.join(&part), &reference, "document_dob", |v| {
        // Another valid date: the year moved by one.
        let year: u32 = v[..4].parse().unwrap();
        format!("{}{}", year + 1, &v[4..])
    });
    let report = run_verify(&out);
    let subject = format!("{part} line {line}");
    assert_only_cell_finding(&report, &part, &subject, &reference, "document_dob");
}

#[test]
fn an_edited_first_name_in_a_parquet_part_is_found_naming_the_column() {
    let (_dir, out) = copy(true);
    let run = commits(&out)[0].0.clone();
    let reference = netverify_with_name_and_dob(&out, &run);
    let part = part0(&run, "netverify", "parquet");
    let row = edit_parquet_cell(
        &out.join(&part),
        &reference,
        "document_first_name",
        |a, i| {
            let a = a.as_any().downcast_ref::<StringArray>().unwrap();
            let edited: StringArray = (0..a.len())
                .map(|j| {
                    (!a.is_null(j)).then(|| {
                        let v = a.value(j);
                        if j == i {
                            format!("{v}X")
                        } else {
                            v.to_owned()
                        }
                    })
                })
                .collect();
            Arc::new(edited)
        },
    );
    let report = run_verify(&out);
    let subject = format!("{part} row {row}");
    assert_only_cell_finding(&report, &part, &subject, &reference, "document_first_name");
}

#[test]
fn an_edited_date_of_birth_in_a_parquet_part_is_found_naming_the_column() {
    let (_dir, out) = copy(true);
    let run = commits(&out)[1].0.clone();
    let reference = netverify_with_name_and_dob(&out, &run);
    let part = part0(&run, "netverify", "parquet");
    let row = edit_parquet_cell(&out.join(&part), &reference, "document_dob", |a, i| {
        let a = a.as_any().downcast_ref::<Date32Array>().unwrap();
        assert!(!a.is_null(i), "the date of birth is typed in Parquet");
        let edited: Date32Array = (0..a.len())
            .map(|j| (!a.is_null(j)).then(|| a.value(j) + i32::from(j == i) * 365))
            .collect();
        Arc::new(edited)
    });
    let report = run_verify(&out);
    let subject = format!("{part} row {row}");
    assert_only_cell_finding(&report, &part, &subject, &reference, "document_dob");
}
