//! `jumio-export verify DIR`: checks an export without trusting any part of it.
//!
//! Every `archives/*.zip` is checked without trust ([`archive::check`]: every entry against its
//! manifest and provenance, its reference, its family, its data); every row of the transaction
//! tables must point at its archive with the archive's sha256 and image count, and every other
//! cell must equal what `flatten` makes of the archive's data, in CSV as the CSV writer writes
//! it and in Parquet as typed values; the `files` table must list exactly the archives'
//! entries; every reference must be in exactly one place (one table row, or one `failures.csv`
//! row); `report.json`'s root hash must equal the one recomputed over the archives on disk. All
//! findings are collected, none stops the check.
//!
//! The pieces, in the order they run: `tables` (failures.csv, the transaction tables and their
//! Parquet twins, exported-and-failed), `files` (the files table), `archives` (each archive,
//! and the rows and files rows it must match), `content` (cells against the re-flattened
//! archive data), `root` (report.json's root hash). `scan` streams a table in either format.
//!
//! Memory: tables are streamed, archives read one at a time. What is kept is one small record
//! per table row (its location, archive hash, image count and a sha256 over its other cells)
//! and one checksum per reference of the `files` table, never archive contents or cells. Rows
//! whose digest differs are explained by a second pass over their table that re-reads only
//! their archives. Messages name files, lines, references, columns, entries, sizes and hashes
//! only: never a field value, which may be personal data. This module is blocking and sends
//! nothing.

mod archives;
mod content;
mod files;
mod root;
mod scan;
mod tables;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::Kind;
use crate::output::archive;

use content::{RowDigest, TableFile};
use files::FileSetSum;

/// One thing that does not hold, named by where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What the finding is about: an archive path (`archives/X.zip`), a table row
    /// (`netverify.csv line 4`), a file (`report.json`) or a reference (`reference X`).
    pub subject: String,
    /// What is wrong, with expected and found values (hashes, sizes, counts, entry names).
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.problem)
    }
}

/// What `verify` found in an output directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Everything that does not hold. Any finding makes the export untrustworthy.
    pub findings: Vec<Finding>,
    /// What a crashed or interrupted run leaves behind (`*.tmp` files): not a failure of the
    /// export, but a sign that the job should be run again.
    pub warnings: Vec<Finding>,
    /// `archives/*.zip` files examined.
    pub archives: u64,
    /// Rows of the three transaction tables (CSV, or Parquet when there is no CSV).
    pub rows: u64,
    /// Rows of the `files` table.
    pub files: u64,
    /// Rows of `failures.csv`.
    pub failures: u64,
}

impl VerifyReport {
    /// True when nothing was found; warnings do not count.
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty()
    }

    fn finding(&mut self, subject: impl Into<String>, problem: impl Into<String>) {
        self.findings.push(Finding {
            subject: subject.into(),
            problem: problem.into(),
        });
    }
}

impl fmt::Display for VerifyReport {
    /// Every finding on its own line, then every warning, then one summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "problem  {finding}")?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning  {warning}")?;
        }
        write!(
            f,
            "verified {} archives, {} table rows, {} files rows, {} failures.csv rows: ",
            self.archives, self.rows, self.files, self.failures
        )?;
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        if self.is_ok() {
            write!(f, "OK")?;
        } else {
            let n = self.findings.len();
            write!(f, "{n} problem{}", plural(n))?;
        }
        if !self.warnings.is_empty() {
            let n = self.warnings.len();
            write!(
                f,
                ", {n} warning{} (left by an interrupted run: run the same job again)",
                plural(n)
            )?;
        }
        writeln!(f)
    }
}

/// Why an output directory could not be verified at all. Anything wrong *inside* the
/// directory is a [`Finding`], not an error.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The directory does not exist.
    #[error("output directory {path} does not exist")]
    Missing {
        /// The directory given.
        path: PathBuf,
    },
    /// The path exists but is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The directory cannot be listed (permissions).
    #[error("output directory {path} cannot be read: {source}")]
    Unreadable {
        /// The directory given.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Verifies the export in `dir`; see the module documentation for every check. Blocking.
pub fn verify(dir: &Path) -> Result<VerifyReport, VerifyError> {
    verify_with_key(dir, None)
}

/// [`verify`] for an export whose archives are encrypted under `key`.
pub fn verify_with_key(
    dir: &Path,
    key: Option<&archive::ArchiveKey>,
) -> Result<VerifyReport, VerifyError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::Missing {
                path: dir.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(VerifyError::Unreadable {
                path: dir.to_path_buf(),
                source,
            });
        }
        Ok(m) if !m.is_dir() => {
            return Err(VerifyError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    let top = std::fs::read_dir(dir).map_err(|source| VerifyError::Unreadable {
        path: dir.to_path_buf(),
        source,
    })?;

    let mut report = VerifyReport::default();
    let mut v = Verifier {
        dir,
        key,
        rows: HashMap::new(),
        failures: HashMap::new(),
        files: HashMap::new(),
        tables: BTreeMap::new(),
        differ: BTreeMap::new(),
    };
    let top: Vec<_> = top.filter_map(Result::ok).collect();
    stray_temps(&top, "", &mut report);
    v.read_failures(&mut report);
    for kind in Kind::ALL {
        v.read_table(kind, &mut report);
    }
    v.cross_check_failures(&mut report);
    v.read_files_table(&mut report);
    let pairs = v.check_archives(&mut report);
    v.explain_rows(&mut report);
    v.check_report_json(pairs, &mut report);
    Ok(report)
}

/// `*.tmp` files directly in `listing`; `prefix` is the listing's path relative to DIR.
fn stray_temps(listing: &[std::fs::DirEntry], prefix: &str, report: &mut VerifyReport) {
    let mut names: Vec<String> = listing
        .iter()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    names.sort();
    for name in names {
        report.warnings.push(Finding {
            subject: format!("{prefix}{name}"),
            problem: "temporary file left by an interrupted run; run the same job again \
                      (it removes or finishes it)"
                .into(),
        });
    }
}

/// Where a row was read: `netverify.csv line 4` or `netverify.parquet row 3`.
#[derive(Debug, Clone, Copy)]
struct Loc {
    file: &'static str,
    /// CSV: the line number (header is line 1). Parquet: the 1-based data row.
    n: u64,
}

impl Loc {
    fn new(file: &'static str, n: u64) -> Self {
        Loc { file, n }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.ends_with(".csv") {
            write!(f, "{} line {}", self.file, self.n)
        } else {
            write!(f, "{} row {}", self.file, self.n)
        }
    }
}

/// File names of each table: CSV, Parquet.
fn table_files(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Netverify => ("netverify.csv", "netverify.parquet"),
        Kind::Document => ("documents.csv", "documents.parquet"),
        Kind::Authentication => ("authentications.csv", "authentications.parquet"),
    }
}

const FILES_CSV: &str = "files.csv";
const FILES_PARQUET: &str = "files.parquet";
const FAILURES_CSV: &str = "failures.csv";
const REPORT_JSON: &str = "report.json";

/// What is kept of one transaction-table row: small, so millions of rows fit.
struct RowInfo {
    kind: Kind,
    loc: Loc,
    /// The row's `archive_sha256`, when it is 64 hex digits.
    sha256: Option<[u8; 32]>,
    /// The row's `image_count`, when it is an integer.
    image_count: Option<i64>,
    /// Digest of the row's other cells, compared with the archive's re-flattened data.
    digest: RowDigest,
    /// Digest of the same reference's row in the Parquet twin, when there is one.
    twin_digest: Option<RowDigest>,
    /// Set when `archives/{reference}.zip` was found.
    archive_seen: bool,
    /// Rows of the Parquet twin seen for this reference (only counted when both exist).
    parquet_rows: u32,
}

/// The table files of one kind: the one rows are read from (CSV when present, else Parquet),
/// and the Parquet twin of a CSV table.
struct Tables {
    primary: TableFile,
    twin: Option<TableFile>,
}

struct Verifier<'a> {
    dir: &'a Path,
    key: Option<&'a archive::ArchiveKey>,
    /// Transaction-table rows by reference (the first row; duplicates are findings).
    rows: HashMap<String, RowInfo>,
    /// `failures.csv` rows by reference (the first row).
    failures: HashMap<String, Loc>,
    /// `files` table checksums by reference.
    files: HashMap<String, FileSetSum>,
    /// The transaction table files whose rows were read, by kind.
    tables: BTreeMap<Kind, Tables>,
    /// References whose row in a table file (by file name) differs from its archive's data:
    /// explained column by column once every archive is checked.
    differ: BTreeMap<&'static str, std::collections::BTreeSet<String>>,
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    // Tables hold lowercase hex; uppercase would not compare equal to a recomputed hash.
    text.bytes().all(|b| !b.is_ascii_uppercase()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_set_sum_ignores_order_and_sees_duplicates_and_changes() {
        use super::files::FileSetSum;
        let mut a = FileSetSum::default();
        a.add("data.json", "10", "aa");
        a.add("images/front.jpg", "20", "bb");
        let mut b = FileSetSum::default();
        b.add("images/front.jpg", "20", "bb");
        b.add("data.json", "10", "aa");
        assert_eq!(a, b);
        let mut dup = b;
        dup.add("data.json", "10", "aa");
        assert_ne!(a, dup);
        let mut changed = FileSetSum::default();
        changed.add("data.json", "11", "aa");
        changed.add("images/front.jpg", "20", "bb");
        assert_ne!(a, changed);
        // Field boundaries count: ("ab", "1") is not ("a", "b1").
        let mut x = FileSetSum::default();
        x.add("ab", "1", "c");
        let mut y = FileSetSum::default();
        y.add("a", "b1", "c");
        assert_ne!(x, y);
    }

    #[test]
    fn sha256_must_be_64_lowercase_hex_digits() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_sha256(&hex), Some([0xab; 32]));
        assert_eq!(parse_sha256(&hex.to_uppercase()), None);
        assert_eq!(parse_sha256("abc"), None);
        assert_eq!(parse_sha256(""), None);
    }

    #[test]
    fn display_lists_findings_then_warnings_then_one_summary_line() {
        let mut report = VerifyReport {
            archives: 2,
            rows: 2,
            files: 30,
            failures: 1,
            ..VerifyReport::default()
        };
        assert!(report.is_ok());
        assert_eq!(
            report.to_string(),
            "verified 2 archives, 2 table rows, 30 files rows, 1 failures.csv rows: OK\n"
        );
        report.warnings.push(Finding {
            subject: "archives/.x.zip.tmp".into(),
            problem: "temporary".into(),
        });
        assert!(report.is_ok(), "a warning is not a failure");
        report.finding("archives/x.zip", "broken");
        assert!(!report.is_ok());
        assert_eq!(
            report.to_string(),
            "problem  archives/x.zip: broken\n\
             warning  archives/.x.zip.tmp: temporary\n\
             verified 2 archives, 2 table rows, 30 files rows, 1 failures.csv rows: 1 problem, \
             1 warning (left by an interrupted run: run the same job again)\n"
        );
    }

    #[test]
    fn a_missing_or_non_directory_path_cannot_be_verified() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            verify(&missing),
            Err(VerifyError::Missing { path }) if path == missing
        ));
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            verify(&file),
            Err(VerifyError::NotADirectory { .. })
        ));
    }
}
