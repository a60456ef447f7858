//! `jumio-export verify DIR`: checks an export without trusting any part of it.
//!
//! Every `archives/*.zip` is re-read and re-hashed ([`archive::read_archive`]); every row of
//! the transaction tables must point at its archive with the archive's sha256 and image count;
//! the `files` table must list exactly the archives' entries; every reference must be in
//! exactly one place (one table row, or one `failures.csv` row); `report.json`'s root hash
//! must equal the one recomputed over the archives on disk. All findings are collected, none
//! stops the check.
//!
//! Memory: archives are read one at a time and streamed through the hasher; what is kept is
//! one small record per table row and one checksum per reference of the `files` table, never
//! archive contents. Messages name files, lines, references, entries, sizes and hashes only:
//! never a field value, which may be personal data. This module is blocking and sends nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use arrow_array::{Array, ArrayRef, Int64Array, StringArray};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

use crate::Kind;
use crate::output::archive::{self, ARCHIVES_DIR, ArchiveError, ArchivedFile};
use crate::output::report;

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
    /// Set when `archives/{reference}.zip` was found.
    archive_seen: bool,
    /// Rows of the Parquet twin seen for this reference (only counted when both exist).
    parquet_rows: u32,
}

/// An order-independent checksum of one reference's `files` rows (entry, bytes, sha256):
/// lane-wise wrapping sum of each row's sha256, plus the row count. Equal sets give equal
/// checksums whatever the row order; a missing, extra, duplicated or changed row changes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FileSetSum {
    rows: u64,
    sum: [u64; 4],
}

impl FileSetSum {
    fn add(&mut self, entry: &str, bytes: &str, sha256: &str) {
        let mut h = Sha256::new();
        for part in [entry, bytes, sha256] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        let digest = h.finalize();
        for (lane, chunk) in self.sum.iter_mut().zip(digest.chunks_exact(8)) {
            let word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
            *lane = lane.wrapping_add(word);
        }
        self.rows += 1;
    }

    fn of_archive(files: &[ArchivedFile]) -> Self {
        let mut s = FileSetSum::default();
        for f in files {
            s.add(&f.entry, &f.bytes.to_string(), &f.sha256);
        }
        s
    }
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
}

impl Verifier<'_> {
    fn read_failures(&mut self, report: &mut VerifyReport) {
        let path = self.dir.join(FAILURES_CSV);
        if !path.exists() {
            report.finding(
                FAILURES_CSV,
                "missing (every finished run writes it, with a header even when empty)",
            );
            return;
        }
        let failures = &mut self.failures;
        let mut count = 0;
        scan(
            &path,
            FAILURES_CSV,
            &["reference"],
            report,
            |report, loc, values| {
                count += 1;
                let reference = values[0].clone().unwrap_or_default();
                if reference.is_empty() {
                    report.finding(loc.to_string(), "empty reference");
                } else if let Some(first) = failures.get(&reference) {
                    report.finding(
                        loc.to_string(),
                        format!("reference {reference} duplicated: also at {first}"),
                    );
                } else {
                    failures.insert(reference, loc);
                }
            },
        );
        report.failures = count;
    }

    /// Reads one transaction table: CSV when present (the Parquet twin is then compared
    /// with it), else Parquet.
    fn read_table(&mut self, kind: Kind, report: &mut VerifyReport) {
        let (csv_name, parquet_name) = table_files(kind);
        let csv_path = self.dir.join(csv_name);
        let parquet_path = self.dir.join(parquet_name);
        let (primary, primary_name) = if csv_path.exists() {
            (csv_path, csv_name)
        } else if parquet_path.exists() {
            (parquet_path.clone(), parquet_name)
        } else {
            report.finding(
                csv_name,
                format!("missing, and so is {parquet_name}: table {kind} cannot be checked"),
            );
            return;
        };
        const COLUMNS: [&str; 4] = ["reference", "archive", "archive_sha256", "image_count"];
        let rows = &mut self.rows;
        let mut count = 0;
        scan(
            &primary,
            primary_name,
            &COLUMNS,
            report,
            |report, loc, values| {
                count += 1;
                let [reference, archive, sha, images] =
                    [0, 1, 2, 3].map(|i| values[i].clone().unwrap_or_default());
                if reference.is_empty() {
                    report.finding(loc.to_string(), "empty reference");
                    return;
                }
                if let Some(first) = rows.get(&reference) {
                    report.finding(
                        loc.to_string(),
                        format!("reference {reference} duplicated: also at {}", first.loc),
                    );
                    return;
                }
                let expected_archive = archive_path(&reference);
                if archive != expected_archive {
                    report.finding(
                        loc.to_string(),
                        format!(
                            "reference {reference}: archive column is {archive:?}, expected {expected_archive}"
                        ),
                    );
                }
                let sha256 = parse_sha256(&sha);
                if sha256.is_none() {
                    report.finding(
                        loc.to_string(),
                        format!("reference {reference}: archive_sha256 {sha:?} is not a sha256"),
                    );
                }
                let image_count = images.parse().ok();
                if image_count.is_none() {
                    report.finding(
                        loc.to_string(),
                        format!("reference {reference}: image_count {images:?} is not an integer"),
                    );
                }
                rows.insert(
                    reference,
                    RowInfo {
                        kind,
                        loc,
                        sha256,
                        image_count,
                        archive_seen: false,
                        parquet_rows: 0,
                    },
                );
            },
        );
        report.rows += count;

        if primary_name == csv_name && parquet_path.exists() {
            scan(
                &parquet_path,
                parquet_name,
                &["reference", "archive_sha256"],
                report,
                |report, loc, values| {
                    let reference = values[0].clone().unwrap_or_default();
                    let sha = values[1].clone().unwrap_or_default();
                    match rows.get_mut(&reference) {
                        Some(row) if row.kind == kind => {
                            row.parquet_rows += 1;
                            if row.parquet_rows > 1 {
                                report.finding(
                                    loc.to_string(),
                                    format!("reference {reference} duplicated in {parquet_name}"),
                                );
                            } else if parse_sha256(&sha) != row.sha256 {
                                report.finding(
                                    loc.to_string(),
                                    format!(
                                        "reference {reference}: archive_sha256 {sha} differs from {}'s",
                                        row.loc
                                    ),
                                );
                            }
                        }
                        _ => report.finding(
                            loc.to_string(),
                            format!("reference {reference} has no row in {csv_name}"),
                        ),
                    }
                },
            );
            let mut missing: Vec<(u64, &String)> = rows
                .iter()
                .filter(|(_, r)| r.kind == kind && r.parquet_rows == 0)
                .map(|(reference, r)| (r.loc.n, reference))
                .collect();
            missing.sort();
            for (line, reference) in missing {
                report.finding(
                    Loc {
                        file: csv_name,
                        n: line,
                    }
                    .to_string(),
                    format!("reference {reference} has no row in {parquet_name}"),
                );
            }
        }
    }

    /// A reference both exported (a table row) and failed (a failures.csv row).
    fn cross_check_failures(&self, report: &mut VerifyReport) {
        let mut both: Vec<(&String, &Loc)> = self
            .failures
            .iter()
            .filter(|(reference, _)| self.rows.contains_key(*reference))
            .collect();
        both.sort_by_key(|(reference, _)| *reference);
        for (reference, loc) in both {
            report.finding(
                format!("reference {reference}"),
                format!(
                    "both exported ({}) and failed ({loc})",
                    self.rows[reference].loc
                ),
            );
        }
    }

    /// Reads the files table into per-reference checksums; compares the Parquet twin.
    fn read_files_table(&mut self, report: &mut VerifyReport) {
        let csv_path = self.dir.join(FILES_CSV);
        let parquet_path = self.dir.join(FILES_PARQUET);
        let (primary, name) = if csv_path.exists() {
            (csv_path, FILES_CSV)
        } else if parquet_path.exists() {
            (parquet_path.clone(), FILES_PARQUET)
        } else {
            report.finding(
                FILES_CSV,
                format!("missing, and so is {FILES_PARQUET}: archived files cannot be checked"),
            );
            return;
        };
        let (sums, rows) = file_sums(&primary, name, report);
        report.files = rows;
        if name == FILES_CSV && parquet_path.exists() {
            let (twin, _) = file_sums(&parquet_path, FILES_PARQUET, report);
            let mut differ: Vec<&String> = sums
                .iter()
                .filter(|(r, s)| twin.get(*r) != Some(s))
                .map(|(r, _)| r)
                .chain(twin.keys().filter(|r| !sums.contains_key(*r)))
                .collect();
            differ.sort();
            for reference in differ {
                let count =
                    |m: &HashMap<String, FileSetSum>| m.get(reference).map_or(0, |s| s.rows);
                report.finding(
                    FILES_PARQUET,
                    format!(
                        "rows of reference {reference} differ from {FILES_CSV} ({} rows here, {} there)",
                        count(&twin),
                        count(&sums)
                    ),
                );
            }
        }
        self.files = sums;
    }

    /// Every archive, one at a time; returns (reference, archive sha256) of each for the root hash.
    fn check_archives(&mut self, report: &mut VerifyReport) -> Vec<(String, String)> {
        let archives_dir = self.dir.join(ARCHIVES_DIR);
        let listing: Vec<std::fs::DirEntry> = match std::fs::read_dir(&archives_dir) {
            Ok(listing) => listing.filter_map(Result::ok).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.rows.is_empty() {
                    report.finding(format!("{ARCHIVES_DIR}/"), "directory is missing");
                }
                Vec::new()
            }
            Err(e) => {
                report.finding(format!("{ARCHIVES_DIR}/"), format!("cannot be listed: {e}"));
                Vec::new()
            }
        };
        stray_temps(&listing, &format!("{ARCHIVES_DIR}/"), report);
        let mut references: Vec<String> = Vec::new();
        for item in &listing {
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                report.warnings.push(Finding {
                    subject: format!("{ARCHIVES_DIR}/{}", item.file_name().to_string_lossy()),
                    problem: "a file name that is not UTF-8, not written by this tool".into(),
                });
                continue;
            };
            if name.ends_with(".tmp") {
                continue;
            }
            match name.strip_suffix(".zip") {
                Some(reference) if !name.starts_with('.') => references.push(reference.into()),
                _ => report.warnings.push(Finding {
                    subject: format!("{ARCHIVES_DIR}/{name}"),
                    problem: "not an archive this tool writes; ignored".into(),
                }),
            }
        }
        references.sort();

        let mut pairs = Vec::with_capacity(references.len());
        // Archives whose files disagree with the table: their entries, for the detailed pass.
        let mut detail: BTreeMap<String, Vec<ArchivedFile>> = BTreeMap::new();
        for reference in references {
            report.archives += 1;
            let subject = archive_path(&reference);
            let path = self.dir.join(&subject);
            let (sha256, files) = match archive::read_archive_with_key(&path, self.key) {
                Ok(contents) => {
                    for problem in &contents.problems {
                        report.finding(subject.clone(), problem.clone());
                    }
                    let foreign = contents
                        .reference
                        .as_deref()
                        .is_some_and(|recorded| recorded != reference);
                    match contents.reference.as_deref() {
                        Some(recorded) if recorded != reference => report.finding(
                            subject.clone(),
                            format!(
                                "provenance.json names reference {recorded}, not {reference}: \
                                 another transaction's archive under this name"
                            ),
                        ),
                        // Missing or unreadable provenance is already among the problems.
                        _ => {}
                    }
                    // A damaged archive's entry list leaves out what could not be read, and
                    // another transaction's archive differs from this one's rows everywhere:
                    // comparing either with the files table would only repeat the finding.
                    let files =
                        (contents.problems.is_empty() && !foreign).then_some(contents.files);
                    (contents.sha256, files)
                }
                Err(e) => {
                    let problem = match &e {
                        ArchiveError::Corrupt { source, .. } => {
                            format!("not a readable zip (truncated or damaged): {source}")
                        }
                        other => other.to_string(),
                    };
                    report.finding(subject.clone(), problem);
                    match hash_file(&path) {
                        Ok(sha) => (sha, None),
                        Err(e) => {
                            report.finding(subject.clone(), format!("cannot be read: {e}"));
                            (String::new(), None)
                        }
                    }
                }
            };

            match self.rows.get_mut(&reference) {
                None => {
                    let where_else = match self.failures.get(&reference) {
                        Some(loc) => format!(" (reference {reference} is listed at {loc})"),
                        None => String::new(),
                    };
                    report.finding(
                        subject.clone(),
                        format!("has no row in any transaction table{where_else}"),
                    );
                }
                Some(row) => {
                    row.archive_seen = true;
                    let recorded = row.sha256.map(hex::encode);
                    if let Some(recorded) = &recorded
                        && *recorded != sha256
                    {
                        report.finding(
                            subject.clone(),
                            format!(
                                "sha256 {sha256} does not match archive_sha256 {recorded} at {}",
                                row.loc
                            ),
                        );
                    }
                    if let (Some(files), Some(expected)) = (&files, row.image_count) {
                        let found = archive::image_count(files);
                        if found != expected {
                            report.finding(
                                subject.clone(),
                                format!(
                                    "holds {found} image, page and PDF files; image_count at {} is {expected}",
                                    row.loc
                                ),
                            );
                        }
                    }
                }
            }

            // Taken out even for a damaged archive, so its rows are not reported as orphans.
            let listed = self.files.remove(&reference);
            if let Some(files) = files {
                match listed {
                    None => report.finding(
                        subject.clone(),
                        format!("the files table has no rows for reference {reference}"),
                    ),
                    Some(sum) if sum != FileSetSum::of_archive(&files) => {
                        detail.insert(reference.clone(), files);
                    }
                    Some(_) => {}
                }
            }
            pairs.push((reference, sha256));
        }

        // Rows whose archive is not there.
        let mut orphans: Vec<(&'static str, u64, &String)> = self
            .rows
            .iter()
            .filter(|(_, r)| !r.archive_seen)
            .map(|(reference, r)| (r.loc.file, r.loc.n, reference))
            .collect();
        orphans.sort();
        for (file, n, reference) in orphans {
            report.finding(
                Loc { file, n }.to_string(),
                format!(
                    "reference {reference}: archive {} is missing",
                    archive_path(reference)
                ),
            );
        }
        // files rows of references with no archive at all.
        let mut leftover: Vec<(&String, u64)> =
            self.files.iter().map(|(r, s)| (r, s.rows)).collect();
        leftover.sort();
        for (reference, rows) in leftover {
            report.finding(
                self.files_table_name(),
                format!(
                    "{rows} rows for reference {reference}, which has no archive {}",
                    archive_path(reference)
                ),
            );
        }
        if !detail.is_empty() {
            self.explain_files(detail, report);
        }
        pairs
    }

    fn files_table_name(&self) -> &'static str {
        if self.dir.join(FILES_CSV).exists() {
            FILES_CSV
        } else {
            FILES_PARQUET
        }
    }

    /// Second pass over the files table for the few references whose checksum disagreed:
    /// names each missing, extra, duplicated or changed entry.
    fn explain_files(
        &self,
        detail: BTreeMap<String, Vec<ArchivedFile>>,
        report: &mut VerifyReport,
    ) {
        let name = self.files_table_name();
        let mut listed: HashMap<String, Vec<(Loc, String, String, String)>> = HashMap::new();
        let mut ignore = VerifyReport::default();
        scan(
            &self.dir.join(name),
            name,
            &["reference", "entry", "bytes", "sha256"],
            &mut ignore,
            |_, loc, values| {
                let [reference, entry, bytes, sha] =
                    [0, 1, 2, 3].map(|i| values[i].clone().unwrap_or_default());
                if detail.contains_key(&reference) {
                    listed
                        .entry(reference)
                        .or_default()
                        .push((loc, entry, bytes, sha));
                }
            },
        );
        for (reference, files) in &detail {
            let subject = archive_path(reference);
            let rows = listed.remove(reference).unwrap_or_default();
            let mut by_entry: BTreeMap<&str, Vec<&(Loc, String, String, String)>> = BTreeMap::new();
            for row in &rows {
                by_entry.entry(row.1.as_str()).or_default().push(row);
            }
            for f in files {
                match by_entry.remove(f.entry.as_str()).as_deref() {
                    None | Some([]) => report.finding(
                        subject.clone(),
                        format!(
                            "entry {} ({} bytes, sha256 {}) has no row in {name}",
                            f.entry, f.bytes, f.sha256
                        ),
                    ),
                    Some(matches) => {
                        for (loc, _, bytes, sha) in matches.iter().copied() {
                            if *bytes != f.bytes.to_string() || *sha != f.sha256 {
                                report.finding(
                                    loc.to_string(),
                                    format!(
                                        "reference {reference} entry {}: the table says {bytes} bytes, sha256 {sha}; \
                                         the archive holds {} bytes, sha256 {}",
                                        f.entry, f.bytes, f.sha256
                                    ),
                                );
                            }
                        }
                        if matches.len() > 1 {
                            report.finding(
                                matches[1].0.to_string(),
                                format!(
                                    "reference {reference} entry {} listed {} times",
                                    f.entry,
                                    matches.len()
                                ),
                            );
                        }
                    }
                }
            }
            for (entry, extra) in by_entry {
                for (loc, ..) in extra {
                    report.finding(
                        loc.to_string(),
                        format!("reference {reference} entry {entry} is not in {subject}"),
                    );
                }
            }
        }
    }

    fn check_report_json(&self, mut pairs: Vec<(String, String)>, report: &mut VerifyReport) {
        let path = self.dir.join(REPORT_JSON);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                report.finding(
                    REPORT_JSON,
                    "missing: the root hash over the archives cannot be checked",
                );
                return;
            }
            Err(e) => {
                report.finding(REPORT_JSON, format!("cannot be read: {e}"));
                return;
            }
        };
        let json: serde_json::Value = match serde_json::from_slice(&text) {
            Ok(json) => json,
            Err(e) => {
                report.finding(REPORT_JSON, format!("does not parse: {e}"));
                return;
            }
        };
        let Some(recorded) = json.get("root_hash").and_then(|v| v.as_str()) else {
            report.finding(REPORT_JSON, "has no root_hash");
            return;
        };
        let archives = pairs.len();
        let recomputed = report::root_hash(&mut pairs);
        if recorded != recomputed {
            let counted = json
                .get("archives")
                .and_then(|v| v.as_u64())
                .map_or(String::new(), |n| format!(" over {n} archives"));
            report.finding(
                REPORT_JSON,
                format!(
                    "root_hash {recorded}{counted} does not match {recomputed}, recomputed over the {archives} archives on disk"
                ),
            );
        }
    }
}

/// `archives/{reference}.zip`, as the tables record it.
fn archive_path(reference: &str) -> String {
    format!("{ARCHIVES_DIR}/{reference}.zip")
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    // Tables hold lowercase hex; uppercase would not compare equal to a recomputed hash.
    text.bytes().all(|b| !b.is_ascii_uppercase()).then_some(out)
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The files table of `path` as per-reference checksums, and its number of rows.
fn file_sums(
    path: &Path,
    name: &'static str,
    report: &mut VerifyReport,
) -> (HashMap<String, FileSetSum>, u64) {
    let mut sums: HashMap<String, FileSetSum> = HashMap::new();
    let mut rows = 0;
    scan(
        path,
        name,
        &["reference", "entry", "bytes", "sha256"],
        report,
        |_, _, values| {
            rows += 1;
            let [reference, entry, bytes, sha] =
                [0, 1, 2, 3].map(|i| values[i].clone().unwrap_or_default());
            sums.entry(reference).or_default().add(&entry, &bytes, &sha);
        },
    );
    (sums, rows)
}

/// Streams the named `columns` of every row of a CSV or Parquet table to `on_row`, as text
/// (integers formatted in decimal, nulls as `None`). A file that cannot be read, a missing
/// column or an unreadable row is a finding; reading goes on where it can.
fn scan(
    path: &Path,
    name: &'static str,
    columns: &[&str],
    report: &mut VerifyReport,
    on_row: impl FnMut(&mut VerifyReport, Loc, Vec<Option<String>>),
) {
    if name.ends_with(".csv") {
        scan_csv(path, name, columns, report, on_row);
    } else {
        scan_parquet(path, name, columns, report, on_row);
    }
}

fn scan_csv(
    path: &Path,
    name: &'static str,
    columns: &[&str],
    report: &mut VerifyReport,
    mut on_row: impl FnMut(&mut VerifyReport, Loc, Vec<Option<String>>),
) {
    let mut reader = match csv::Reader::from_path(path) {
        Ok(reader) => reader,
        Err(e) => {
            report.finding(name, format!("cannot be read: {e}"));
            return;
        }
    };
    let header = match reader.headers() {
        Ok(header) => header.clone(),
        Err(e) => {
            report.finding(name, format!("header cannot be read: {e}"));
            return;
        }
    };
    let Some(indices) = column_indices(
        columns,
        |c| header.iter().position(|h| h == c),
        name,
        report,
    ) else {
        return;
    };
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                let values = indices
                    .iter()
                    .map(|&i| record.get(i).map(str::to_owned))
                    .collect();
                on_row(
                    report,
                    Loc {
                        file: name,
                        n: line,
                    },
                    values,
                );
            }
            Err(e) => {
                // The error names the position and the kind of damage, never the content.
                let line = e.position().map_or(0, |p| p.line());
                report.finding(
                    Loc {
                        file: name,
                        n: line,
                    }
                    .to_string(),
                    format!("unreadable row: {}", csv_error_kind(&e)),
                );
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }
                ) {
                    break;
                }
            }
        }
    }
}

/// A CSV error without any field content.
fn csv_error_kind(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, the header has {expected_len}"),
        csv::ErrorKind::Io(io) => format!("I/O error: {io}"),
        _ => "malformed CSV".into(),
    }
}

fn column_indices(
    columns: &[&str],
    find: impl Fn(&str) -> Option<usize>,
    name: &str,
    report: &mut VerifyReport,
) -> Option<Vec<usize>> {
    let mut indices = Vec::with_capacity(columns.len());
    for column in columns {
        match find(column) {
            Some(i) => indices.push(i),
            None => {
                report.finding(name, format!("has no column {column}"));
                return None;
            }
        }
    }
    Some(indices)
}

fn scan_parquet(
    path: &Path,
    name: &'static str,
    columns: &[&str],
    report: &mut VerifyReport,
    mut on_row: impl FnMut(&mut VerifyReport, Loc, Vec<Option<String>>),
) {
    let builder = match File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| e.to_string()))
    {
        Ok(builder) => builder,
        Err(e) => {
            report.finding(name, format!("not a readable Parquet file: {e}"));
            return;
        }
    };
    let schema = builder.schema().clone();
    let Some(indices) = column_indices(columns, |c| schema.index_of(c).ok(), name, report) else {
        return;
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
    let reader = match builder.with_projection(mask).build() {
        Ok(reader) => reader,
        Err(e) => {
            report.finding(name, format!("not a readable Parquet file: {e}"));
            return;
        }
    };
    let mut row = 0u64;
    for batch in reader {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                report.finding(name, format!("unreadable after row {row}: {e}"));
                return;
            }
        };
        let mut arrays: Vec<&ArrayRef> = Vec::with_capacity(columns.len());
        for column in columns {
            match batch.column_by_name(column) {
                Some(a) if matches!(a.data_type(), DataType::Utf8 | DataType::Int64) => {
                    arrays.push(a)
                }
                Some(a) => {
                    report.finding(
                        name,
                        format!(
                            "column {column} has type {}, not Utf8 or Int64",
                            a.data_type()
                        ),
                    );
                    return;
                }
                None => {
                    report.finding(name, format!("has no column {column}"));
                    return;
                }
            }
        }
        for i in 0..batch.num_rows() {
            row += 1;
            let values = arrays.iter().map(|a| text_at(a, i)).collect();
            on_row(report, Loc { file: name, n: row }, values);
        }
    }
}

/// The value at `i` of a Utf8 or Int64 array, as text.
fn text_at(array: &ArrayRef, i: usize) -> Option<String> {
    if array.is_null(i) {
        return None;
    }
    if let Some(a) = array.as_any().downcast_ref::<StringArray>() {
        return Some(a.value(i).to_owned());
    }
    array
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.value(i).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_set_sum_ignores_order_and_sees_duplicates_and_changes() {
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
