//! `verify`: a real export made by the library against the simulator verifies clean; each kind of
//! damage done to a fresh copy of it is found, named, and makes `is_ok()` false.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow_array::{Array, ArrayRef, Date32Array, RecordBatch, StringArray};
use jumio_export::Kind;
use jumio_export::input;
use jumio_export::job::{self, Credentials, Overrides};
use jumio_export::run::{self, RunOptions};
use jumio_export::simulator::{self, SimOptions};
use jumio_export::verify::{self, Finding, VerifyError, VerifyReport};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::support::sha256_hex;

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

/// One export, made once per test binary; every test works on its own copy.
struct Export {
    _dir: tempfile::TempDir,
    out: PathBuf,
}

fn pristine() -> &'static Path {
    static EXPORT: OnceLock<Export> = OnceLock::new();
    &EXPORT.get_or_init(make_export).out
}

fn make_export() -> Export {
    let dir = tempfile::tempdir().unwrap();
    let seed = SimOptions::default().seed;
    let mut refs = simulator::population(seed, 12);
    // Failures of several kinds, and images sent as one object.
    refs.extend([
        ("nf-n1".to_string(), Kind::Netverify),
        ("pf-a1".to_string(), Kind::Authentication),
        ("obj-n1".to_string(), Kind::Netverify),
    ]);
    let job_path = dir.path().join("job.toml");
    std::fs::write(&job_path, JOB).unwrap();
    let refs_path = dir.path().join("refs.csv");
    simulator::write_references_csv(&refs_path, &refs).unwrap();
    let out = dir.path().join("out");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let api = simulator::start(SimOptions::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let overrides = Overrides {
            input: Some(refs_path.display().to_string()),
            out: Some(out.clone()),
            base_url: Some(api.base_url()),
            ..Overrides::default()
        };
        let job = job::load(&job_path, &overrides).unwrap();
        let list =
            input::read_input(job.input.path.as_deref().unwrap(), job.input.default_kind).unwrap();
        let summary = run::run(
            &job,
            list,
            &Credentials::new("demo-token", "demo-secret"),
            RunOptions {
                quiet: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
        assert!(summary.exported >= 8, "{summary:?}");
        assert!(summary.failed >= 2, "nf-n1 and pf-a1 fail: {summary:?}");
        api.shutdown().await;
    });
    Export { _dir: dir, out }
}

/// A fresh copy of the pristine export to damage.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    copy_dir(pristine(), &out);
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

type CsvRows = Vec<BTreeMap<String, String>>;

fn read_csv(path: &Path) -> (Vec<String>, CsvRows) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

/// Exported references of a table, in row order.
fn references(out: &Path, table: &str) -> Vec<String> {
    read_csv(&out.join(format!("{table}.csv")))
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
    let report = verify::verify(out).unwrap();
    assert_no_personal_data(&report, out);
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

/// No finding quotes a name, document number, address or other personal field of the tables.
fn assert_no_personal_data(report: &VerifyReport, out: &Path) {
    let text = report.to_string();
    for table in ["netverify", "documents", "authentications"] {
        let (header, rows) = read_csv(&out.join(format!("{table}.csv")));
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

#[test]
fn an_untouched_export_verifies() {
    let (_dir, out) = copy();
    let report = run_verify(&out);
    assert!(report.is_ok(), "{report}");
    assert!(report.warnings.is_empty(), "{report}");
    let archives = std::fs::read_dir(out.join("archives")).unwrap().count() as u64;
    let rows: usize = ["netverify", "documents", "authentications"]
        .iter()
        .map(|t| references(&out, t).len())
        .sum();
    assert_eq!(report.archives, archives);
    assert_eq!(report.rows, rows as u64);
    assert_eq!(report.rows, report.archives);
    assert_eq!(
        report.files,
        read_csv(&out.join("files.csv")).1.len() as u64
    );
    assert_eq!(
        report.failures,
        read_csv(&out.join("failures.csv")).1.len() as u64
    );
    assert!(report.failures >= 2);
    assert_eq!(
        report.to_string(),
        format!(
            "verified {archives} archives, {rows} table rows, {} files rows, {} failures.csv rows: OK\n",
            report.files, report.failures
        )
    );
}

#[test]
fn a_flipped_byte_in_an_image_is_found() {
    let (_dir, out) = copy();
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
    assert_found(&report, "report.json", &["root_hash"]);
    // Nothing else is blamed: every other archive is fine.
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.subject == subject || f.subject == "report.json"),
        "{report}"
    );
}

#[test]
fn a_truncated_archive_is_found() {
    let (_dir, out) = copy();
    let reference = references(&out, "netverify").remove(0);
    let path = out.join(format!("archives/{reference}.zip"));
    let len = std::fs::metadata(&path).unwrap().len();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    let subject = format!("archives/{reference}.zip");
    assert_found(&report, &subject, &["not a readable zip"]);
    assert_found(&report, &subject, &["does not match archive_sha256"]);
    assert_found(&report, "report.json", &["root_hash"]);
}

/// Rewrites `table.csv` without the row of `reference`.
fn delete_csv_row(out: &Path, table: &str, reference: &str) {
    let path = out.join(format!("{table}.csv"));
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let header = reader.headers().unwrap().clone();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mut writer = csv::Writer::from_path(&path).unwrap();
    writer.write_record(&header).unwrap();
    let mut removed = 0;
    for r in records {
        if &r[0] == reference {
            removed += 1;
        } else {
            writer.write_record(&r).unwrap();
        }
    }
    writer.flush().unwrap();
    assert_eq!(removed, 1);
}

/// Rewrites `table.parquet` without the rows of `reference` (same schema, two slices per batch).
fn delete_parquet_row(out: &Path, table: &str, reference: &str) {
    let path = out.join(format!("{table}.parquet"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    let mut writer = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
    let mut removed = 0;
    for batch in batches {
        let refs = batch
            .column_by_name("reference")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        let mut start = 0;
        for i in 0..refs.len() {
            if refs.value(i) == reference {
                writer.write(&batch.slice(start, i - start)).unwrap();
                start = i + 1;
                removed += 1;
            }
        }
        writer
            .write(&batch.slice(start, batch.num_rows() - start))
            .unwrap();
    }
    writer.close().unwrap();
    assert_eq!(removed, 1);
}

#[test]
fn a_row_deleted_from_csv_and_parquet_is_found() {
    let (_dir, out) = copy();
    let reference = references(&out, "netverify").remove(1);
    delete_csv_row(&out, "netverify", &reference);
    delete_parquet_row(&out, "netverify", &reference);
    let report = run_verify(&out);
    assert!(!report.is_ok());
    assert_found(
        &report,
        &format!("archives/{reference}.zip"),
        &["has no row in any transaction table"],
    );
    // Both tables were rewritten alike, so they do not disagree with each other.
    assert!(
        report
            .findings
            .iter()
            .all(|f| !f.subject.contains("parquet")),
        "{report}"
    );
    assert_eq!(report.findings.len(), 1, "{report}");
}

#[test]
fn a_row_deleted_from_the_csv_only_is_found_twice() {
    let (_dir, out) = copy();
    let reference = references(&out, "documents").remove(0);
    delete_csv_row(&out, "documents", &reference);
    let report = run_verify(&out);
    assert!(!report.is_ok());
    assert_found(
        &report,
        &format!("archives/{reference}.zip"),
        &["has no row in any transaction table"],
    );
    let parquet: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.subject.starts_with("documents.parquet row "))
        .collect();
    assert_eq!(parquet.len(), 1, "{report}");
    assert!(parquet[0].problem.contains(&format!(
        "reference {reference} has no row in documents.csv"
    )));
}

#[test]
fn a_duplicated_row_is_found() {
    let (_dir, out) = copy();
    let path = out.join("netverify.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let rows = references(&out, "netverify");
    // Append the second data row again (CSV cells may hold newlines: use the csv crate).
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let second = reader.records().nth(1).unwrap().unwrap();
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&second).unwrap();
    let appended = String::from_utf8(writer.into_inner().unwrap()).unwrap();
    std::fs::write(&path, format!("{text}{appended}")).unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    let dup: Vec<_> = report
        .findings
        .iter()
        .filter(|f| {
            f.problem
                .contains(&format!("reference {} duplicated", rows[1]))
        })
        .collect();
    assert_eq!(dup.len(), 1, "{report}");
    assert!(
        dup[0].subject.starts_with("netverify.csv line "),
        "{}",
        dup[0]
    );
    let first_line = second.position().unwrap().line();
    assert!(
        dup[0]
            .problem
            .contains(&format!("also at netverify.csv line {first_line}")),
        "{}",
        dup[0]
    );
}

#[test]
fn a_deleted_archive_is_found() {
    let (_dir, out) = copy();
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
    assert_found(&report, "files.csv", &[&reference, "has no archive"]);
    assert_found(&report, "report.json", &["root_hash"]);
}

#[test]
fn a_files_row_removed_is_found_naming_the_entry() {
    let (_dir, out) = copy();
    let (reference, entry) = netverify_with_image(&out);
    let path = out.join("files.csv");
    let (header, rows) = read_csv(&path);
    let mut writer = csv::Writer::from_path(&path).unwrap();
    writer.write_record(&header).unwrap();
    let mut removed = None;
    for row in &rows {
        if row["reference"] == reference && row["entry"] == entry {
            removed = Some(row.clone());
            continue;
        }
        writer
            .write_record(header.iter().map(|h| row[h].as_str()))
            .unwrap();
    }
    writer.flush().unwrap();
    let removed = removed.unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    assert_found(
        &report,
        &format!("archives/{reference}.zip"),
        &[
            &format!("entry {entry} ("),
            &removed["sha256"],
            "has no row in files.csv",
        ],
    );
    // files.parquet still has the row, so the two files tables disagree.
    assert_found(&report, "files.parquet", &[&reference]);
}

#[test]
fn a_swapped_archive_is_found() {
    let (_dir, out) = copy();
    let refs = references(&out, "netverify");
    let (a, b) = (&refs[0], &refs[1]);
    std::fs::copy(
        out.join(format!("archives/{a}.zip")),
        out.join(format!("archives/{b}.zip")),
    )
    .unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    let subject = format!("archives/{b}.zip");
    assert_found(
        &report,
        &subject,
        &[&format!("names reference {a}, not {b}")],
    );
    assert_found(&report, &subject, &["does not match archive_sha256"]);
    assert_found(&report, "report.json", &["root_hash"]);
    // The copied archive is intact in itself: the damage is in where it sits, and that is said
    // once, not repeated as a difference for every one of its files.
    assert!(
        found(&report, &subject, &["manifest"]).is_empty(),
        "{report}"
    );
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.subject == subject || f.subject == "report.json"),
        "{report}"
    );
}

#[test]
fn a_reference_both_exported_and_failed_is_found() {
    let (_dir, out) = copy();
    let reference = references(&out, "netverify").remove(0);
    let path = out.join("failures.csv");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("{reference},netverify,status,404,NOT_FOUND,1,\n"));
    std::fs::write(&path, text).unwrap();
    let report = run_verify(&out);
    assert!(!report.is_ok());
    assert_found(
        &report,
        &format!("reference {reference}"),
        &[
            "both exported (netverify.csv line",
            "and failed (failures.csv line",
        ],
    );
    assert_eq!(report.findings.len(), 1, "{report}");
}

#[test]
fn stray_temporary_files_are_warnings_not_failures() {
    let (_dir, out) = copy();
    std::fs::write(out.join("archives/.abc-1.zip.tmp"), b"partial").unwrap();
    std::fs::write(out.join("netverify.parquet.tmp"), b"partial").unwrap();
    let report = run_verify(&out);
    assert!(report.is_ok(), "{report}");
    let subjects: Vec<&str> = report.warnings.iter().map(|w| w.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["netverify.parquet.tmp", "archives/.abc-1.zip.tmp"]
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

/// A Netverify reference whose row has a first name and a date of birth.
fn netverify_with_name_and_dob(out: &Path) -> String {
    let (_, rows) = read_csv(&out.join("netverify.csv"));
    rows.into_iter()
        .find(|r| !r["document_first_name"].is_empty() && r["document_dob"].len() == 10)
        .map(|r| r["reference"].clone())
        .expect("a Netverify row with a first name and a date of birth")
}

/// Rewrites `table.csv` with the `column` cell of `reference`'s row replaced by `edit` of it;
/// returns the row's line.
fn edit_csv_cell(
    out: &Path,
    table: &str,
    reference: &str,
    column: &str,
    edit: impl Fn(&str) -> String,
) -> u64 {
    let path = out.join(format!("{table}.csv"));
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let header = reader.headers().unwrap().clone();
    let at = header.iter().position(|h| h == column).unwrap();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mut writer = csv::Writer::from_path(&path).unwrap();
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

/// Rewrites `table.parquet` (same schema) with the `column` value of `reference`'s row replaced:
/// `edit` gets the column's array and the row and returns the new array. Returns the 1-based row.
fn edit_parquet_cell(
    out: &Path,
    table: &str,
    reference: &str,
    column: &str,
    edit: impl Fn(&dyn Array, usize) -> ArrayRef,
) -> u64 {
    let path = out.join(format!("{table}.parquet"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    let at = schema.index_of(column).unwrap();
    let mut writer = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
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

/// The only finding is the edited cell's, at `subject`, naming `column` and not its value.
fn assert_only_cell_finding(report: &VerifyReport, subject: &str, reference: &str, column: &str) {
    assert!(!report.is_ok());
    assert_found(
        report,
        subject,
        &[&format!("reference {reference}: column {column} differs")],
    );
    assert_eq!(report.findings.len(), 1, "{report}");
}

#[test]
fn an_edited_first_name_in_the_csv_is_found_naming_the_column() {
    let (_dir, out) = copy();
    let reference = netverify_with_name_and_dob(&out);
    let line = edit_csv_cell(&out, "netverify", &reference, "document_first_name", |v| {
        format!("{v}X")
    });
    let report = run_verify(&out);
    let subject = format!("netverify.csv line {line}");
    assert_only_cell_finding(&report, &subject, &reference, "document_first_name");
}

#[test]
fn an_edited_date_of_birth_in_the_csv_is_found_naming_the_column() {
    let (_dir, out) = copy();
    let reference = netverify_with_name_and_dob(&out);
    let line = edit_csv_cell(&out, "netverify", &reference, "document_dob", |v| {
        // Another valid date: the year moved by one.
        let year: u32 = v[..4].parse().unwrap();
        format!("{}{}", year + 1, &v[4..])
    });
    let report = run_verify(&out);
    let subject = format!("netverify.csv line {line}");
    assert_only_cell_finding(&report, &subject, &reference, "document_dob");
}

#[test]
fn an_edited_first_name_in_parquet_is_found_naming_the_column() {
    let (_dir, out) = copy();
    let reference = netverify_with_name_and_dob(&out);
    let row = edit_parquet_cell(
        &out,
        "netverify",
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
    let subject = format!("netverify.parquet row {row}");
    assert_only_cell_finding(&report, &subject, &reference, "document_first_name");
}

#[test]
fn an_edited_date_of_birth_in_parquet_is_found_naming_the_column() {
    let (_dir, out) = copy();
    let reference = netverify_with_name_and_dob(&out);
    let row = edit_parquet_cell(&out, "netverify", &reference, "document_dob", |a, i| {
        let a = a.as_any().downcast_ref::<Date32Array>().unwrap();
        assert!(!a.is_null(i), "the date of birth is typed in Parquet");
        let edited: Date32Array = (0..a.len())
            .map(|j| (!a.is_null(j)).then(|| a.value(j) + i32::from(j == i) * 365))
            .collect();
        Arc::new(edited)
    });
    let report = run_verify(&out);
    let subject = format!("netverify.parquet row {row}");
    assert_only_cell_finding(&report, &subject, &reference, "document_dob");
}
