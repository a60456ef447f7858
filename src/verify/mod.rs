//! `jumio-export verify LOCATION [--since RUN]`: checks a dataset without trusting any part of it.
//!
//! What holds when verify says OK (`docs/dataset.md` is the layout):
//! - every `commits/*.json` parses and names its run; every part it lists is there, a regular
//!   file of the recorded size, sha256 and row count, named `{run}-{n}.{ext}`, with the columns
//!   and types of its table's schema; the CSV and Parquet parts of one `{run}-{n}` hold the
//!   same rows; every row's `run` is the commit that lists its part;
//! - every kind-table row points at `archives/{reference}.zip` (`.zip.age` in a commit of
//!   archive mode `age`: its ciphertext has the row's `archive_sha256`, and with
//!   `--age-identity-env` the decrypted ZIP is checked as below), which passes
//!   [`archive::check`] (manifest, provenance, reference, family, data), has the row's
//!   `archive_sha256` and `image_count`, and whose data re-flattened by `flatten` gives every
//!   documented cell of the row (CSV as the CSV writer writes it, Parquet as typed values);
//! - the `files` rows of a commit are exactly the archive entries of the references its kind
//!   tables list; no (reference, kind) has two rows across all commits;
//! - each commit's root hash and archive count are those of its kind-table rows;
//!   `report.json` is the latest commit's report; `failures.csv` is the latest failure row of
//!   every reference no commit exported, recomputed from the failures parts here.
//!
//! Warnings, not damage: archives and parts no commit lists (a run stopped before its
//! commit), temporaries, a `failures.csv` or `report.json` a stopped run did not rewrite.
//!
//! With `--since RUN` only the commits after RUN are checked as above; earlier commits give
//! only the `reference` column of their kind-table parts (for the duplicate check and to tell
//! listed from unlisted archives) and their failures parts (for `failures.csv`).
//!
//! All findings are collected, none stops the check. Memory: parts are streamed and archives
//! read one at a time; what is kept is one small record per table row (where it is, its
//! archive hash, image count and a sha256 over its other cells) and one checksum per
//! reference of the `files` table, never archive contents or cells. Rows whose digest differs
//! are explained by a second pass over their part that re-reads only their archives. Messages
//! name files, lines, references, columns, entries, sizes and hashes only: never a field
//! value, which may be personal data. This module is blocking and sends nothing.
//!
//! The pieces: `commits` (commit records, part files, root hashes, report.json), `tables` (the
//! rows of every part), `content` (cells against the re-flattened archive data), `archives`
//! (each archive and the rows and files rows it must match; unlisted files), `files` (the
//! files rows), `failures` (`failures.csv` recomputed), `scan` (a part in either format).

mod archives;
mod commits;
mod content;
mod failures;
mod files;
mod scan;
mod tables;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Kind;
use crate::dataset::commit::Commit;
use crate::output::archive;

use content::{RowDigest, TableFile};
use files::FileSetSum;

/// One thing that does not hold, named by where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What the finding is about: a commit (`commits/R.json`), a part
    /// (`tables/netverify/R-0.csv`), a row (`tables/netverify/R-0.csv line 4`), an archive
    /// (`archives/X.zip`), a file (`report.json`) or a reference (`reference X`).
    pub subject: String,
    /// What is wrong, with expected and found values (hashes, sizes, counts, entry names).
    pub problem: String,
}

impl fmt::Display for Finding {
    /// Subject and problem carry values read from the files checked (references, entry names,
    /// file names): control characters are escaped, so a hostile value cannot move the cursor,
    /// retitle the terminal or forge a line of the report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            escape_controls(&self.subject),
            escape_controls(&self.problem)
        )
    }
}

/// `text` with every control character (C0, DEL, C1: newlines and escape sequences included)
/// and every bidirectional override written as `\u{…}`; anything else as it is.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// What `verify` found in a dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Everything that does not hold. Any finding makes the dataset untrustworthy.
    pub findings: Vec<Finding>,
    /// What a stopped or concurrent run leaves behind (unlisted archives and parts,
    /// temporaries, a stale `failures.csv`): not damage; each says what to do.
    pub warnings: Vec<Finding>,
    /// `--since RUN`: only the commits after RUN were checked.
    pub since: Option<String>,
    /// Commit records checked.
    pub commits: u64,
    /// Parts those commits list.
    pub parts: u64,
    /// Archives checked (one per kind-table row of the checked commits).
    pub archives: u64,
    /// Rows of the three kind tables in the checked commits (CSV, or Parquet without CSV).
    pub rows: u64,
    /// Rows of the `files` table in the checked commits.
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

    fn warning(&mut self, subject: impl Into<String>, problem: impl Into<String>) {
        self.warnings.push(Finding {
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
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        write!(f, "verified ")?;
        if let Some(since) = &self.since {
            write!(f, "the commits after {since}: ")?;
        }
        write!(
            f,
            "{} commit{} ({} parts), {} archives, {} table rows, {} files rows, {} failures.csv rows: ",
            self.commits,
            plural(self.commits),
            self.parts,
            self.archives,
            self.rows,
            self.files,
            self.failures
        )?;
        if self.is_ok() {
            write!(f, "OK")?;
        } else {
            let n = self.findings.len() as u64;
            write!(f, "{n} problem{}", plural(n))?;
        }
        if !self.warnings.is_empty() {
            let n = self.warnings.len() as u64;
            write!(f, ", {n} warning{}", plural(n))?;
        }
        writeln!(f)
    }
}

/// Why a location could not be verified at all (exit 2). Anything wrong *inside* the dataset
/// is a [`Finding`], not an error.
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
    /// The directory holds tables of the layout before datasets: the same advice `run` gives.
    #[error("{}", crate::run::RunError::LegacyLayout { path: path.clone() })]
    LegacyLayout {
        /// The directory given.
        path: PathBuf,
    },
    /// `--since RUN` names no commit of the dataset.
    #[error(
        "--since {run}: {path} has no commit {run} (commits/{run}.json); give the run id of one of its commits"
    )]
    UnknownSince {
        /// The run given.
        run: String,
        /// The directory given.
        path: PathBuf,
    },
}

/// What to verify beyond the location.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// The key of encrypted archives.
    pub key: Option<&'a archive::ArchiveKey>,
    /// Check only the commits whose run id sorts after this one.
    pub since: Option<&'a str>,
    /// Check every commit's signature (`commits/{run}.json.sig`) against this key.
    pub public_key: Option<&'a crate::output::signing::CommitPublicKey>,
    /// The key of a `pii = "pseudonymised"` dataset: without it, its tokens are not compared.
    pub pseudonymiser: Option<&'a crate::flatten::pii::Pseudonymiser>,
    /// `--age-identity-env`: opens age archives to check their manifest, rows and files rows;
    /// without it they are checked by their ciphertext's sha256 (rows, root hash).
    pub age_identities: Option<&'a archive::AgeIdentities>,
}

/// Verifies the whole dataset in `dir`; see the module documentation for every check. Blocking.
pub fn verify(dir: &Path) -> Result<VerifyReport, VerifyError> {
    verify_with(dir, VerifyOptions::default())
}

/// [`verify`] for a dataset whose archives are encrypted under `key`.
pub fn verify_with_key(
    dir: &Path,
    key: Option<&archive::ArchiveKey>,
) -> Result<VerifyReport, VerifyError> {
    verify_with(
        dir,
        VerifyOptions {
            key,
            ..VerifyOptions::default()
        },
    )
}

/// [`verify`] with a key and `--since`.
pub fn verify_with(dir: &Path, opts: VerifyOptions<'_>) -> Result<VerifyReport, VerifyError> {
    let top = open_dataset(dir)?;
    let mut report = VerifyReport {
        since: opts.since.map(str::to_owned),
        ..VerifyReport::default()
    };
    let top: Vec<_> = top.filter_map(Result::ok).collect();
    stray_temps(&top, "", &mut report);
    scratch_temps(dir, &mut report);
    let runs = commits::list(dir, &mut report);
    let first_in_scope = first_in_scope(dir, &runs, opts.since)?;
    if let Some(key) = opts.public_key {
        check_signatures(
            dir,
            &runs[first_in_scope.min(runs.len())..],
            key,
            &mut report,
        );
    }
    let mut v = Verifier {
        dir,
        key: opts.key,
        age_identities: opts.age_identities,
        pseudonymiser: opts.pseudonymiser,
        commits: Vec::new(),
        first_in_scope,
        rows: HashMap::new(),
        earlier: HashMap::new(),
        dup_rows: HashSet::new(),
        dup_commits: HashMap::new(),
        pairs: Vec::new(),
        files: HashMap::new(),
        files_parts: BTreeMap::new(),
        differ: BTreeMap::new(),
        ledger: failures::Ledger::default(),
    };
    v.read_commits(runs, &mut report);
    v.start_ledger();
    for i in 0..v.commits.len() {
        if i < first_in_scope {
            v.read_earlier(i, &mut report);
        } else {
            v.check_commit(i, &mut report);
        }
    }
    v.check_archives(&mut report);
    v.explain_rows(&mut report);
    v.unlisted_archives(&mut report);
    v.unlisted_parts(&mut report);
    v.check_report_json(&mut report);
    v.check_failures_csv(&mut report);
    Ok(report)
}

/// With `--public-key`: every commit in scope has `commits/{run}.json.sig`, an SSHSIG signature
/// of the commit's bytes as they are on disk by that key. A commit rewritten with its hashes
/// recomputed checks out everywhere else; only this catches it.
fn check_signatures(
    dir: &Path,
    runs: &[String],
    key: &crate::output::signing::CommitPublicKey,
    report: &mut VerifyReport,
) {
    use crate::output::signing::signature_path;
    for run in runs {
        let subject = format!("{}/{run}.json", crate::dataset::COMMITS_DIR);
        let commit = match std::fs::read(dir.join(&subject)) {
            Ok(bytes) => bytes,
            Err(e) => {
                report.finding(
                    &subject,
                    format!("cannot be read to check its signature: {e}"),
                );
                continue;
            }
        };
        match std::fs::read_to_string(signature_path(dir, run)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                report.finding(
                    &subject,
                    "not signed: commits/{run}.json.sig is missing".replace("{run}", run),
                );
            }
            Err(e) => report.finding(&subject, format!("its signature cannot be read: {e}")),
            Ok(signature) => {
                if let Err(e) = key.verify(&commit, &signature) {
                    report.finding(&subject, format!("signature: {e}"));
                }
            }
        }
    }
}

/// The listing of `dir`, when it is a readable directory that holds no tables of the layout
/// before datasets.
fn open_dataset(dir: &Path) -> Result<std::fs::ReadDir, VerifyError> {
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
    if crate::dataset::has_legacy_tables(dir) {
        return Err(VerifyError::LegacyLayout {
            path: dir.to_path_buf(),
        });
    }
    Ok(top)
}

/// The index in `runs` (the commits' run ids, in order) of the first commit checked in full:
/// the first after `since`, which must name a commit.
fn first_in_scope(dir: &Path, runs: &[String], since: Option<&str>) -> Result<usize, VerifyError> {
    match since {
        None => Ok(0),
        Some(since) if runs.iter().any(|r| r == since) => {
            Ok(runs.partition_point(|r| r.as_str() <= since))
        }
        Some(since) => Err(VerifyError::UnknownSince {
            run: since.to_owned(),
            path: dir.to_path_buf(),
        }),
    }
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
        report.warning(
            format!("{prefix}{name}"),
            "temporary file left by an interrupted run; run the same job again \
             (it removes or finishes it)",
        );
    }
}

/// `*.tmp` files in the runs' scratch directories (`runs/{run}/`): archives a run was writing.
fn scratch_temps(dir: &Path, report: &mut VerifyReport) {
    let runs = dir.join(crate::dataset::RUNS_DIR);
    let Ok(listing) = std::fs::read_dir(&runs) else {
        return;
    };
    let mut scratch: Vec<String> = listing
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    scratch.sort();
    for run in scratch {
        let Ok(listing) = std::fs::read_dir(runs.join(&run)) else {
            continue;
        };
        let listing: Vec<_> = listing.filter_map(Result::ok).collect();
        let prefix = format!("{}/{run}/", crate::dataset::RUNS_DIR);
        stray_temps(&listing, &prefix, report);
    }
}

/// Where a row was read: `tables/netverify/R-0.csv line 4` or `… .parquet row 3`.
#[derive(Debug, Clone)]
struct Loc {
    file: Arc<str>,
    /// CSV: the line number (header is line 1). Parquet: the 1-based data row.
    n: u64,
}

impl Loc {
    fn new(file: &Arc<str>, n: u64) -> Self {
        Loc {
            file: file.clone(),
            n,
        }
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

/// One commit record of the dataset.
struct CommitInfo {
    /// The run id (the file name).
    run: String,
    /// `commits/{run}.json`.
    subject: String,
    /// The record, when it reads.
    commit: Option<Commit>,
}

/// What is kept of one kind-table row: small, so millions of rows fit.
struct RowInfo {
    /// The commit that lists its part.
    commit: u32,
    /// Its part pair (index into `Verifier::pairs`).
    pair: u32,
    loc: Loc,
    /// The row's `archive_sha256`, when it is 64 hex digits.
    sha256: Option<[u8; 32]>,
    /// The row's `image_count`, when it is an integer.
    image_count: Option<i64>,
    /// Digest of the row's cells that come from the archive's data.
    digest: RowDigest,
    /// Digest of the same row in the other format's part of the pair, when there is one.
    twin_digest: Option<RowDigest>,
    /// Rows of the other format's part seen for this reference.
    twin_rows: u32,
    /// The archive mode its commit records: an age row's archive is `archives/{reference}.zip.age`.
    mode: archive::ArchiveMode,
}

/// The parts `{run}-{n}` of one kind table in one commit: the one rows are read from (CSV
/// when listed, else Parquet) and the Parquet twin of a CSV part.
struct KindPair {
    primary: TableFile,
    twin: Option<TableFile>,
}

struct Verifier<'a> {
    dir: &'a Path,
    key: Option<&'a archive::ArchiveKey>,
    /// The identities that open age archives; without them an age archive is checked by its
    /// ciphertext's hash only.
    age_identities: Option<&'a archive::AgeIdentities>,
    /// The key of pseudonymised tables.
    pseudonymiser: Option<&'a crate::flatten::pii::Pseudonymiser>,
    /// Every commit, in run order.
    commits: Vec<CommitInfo>,
    /// Commits before this index are earlier than `--since`.
    first_in_scope: usize,
    /// Kind-table rows of the checked commits: the first row of each (reference, kind).
    rows: HashMap<(String, Kind), RowInfo>,
    /// (reference, kind) of the earlier commits' rows → the commit.
    earlier: HashMap<(String, Kind), u32>,
    /// Rows that repeat a (reference, kind): (pair, reference), so their twin is not blamed.
    dup_rows: HashSet<(u32, String)>,
    /// References whose row is repeated → the commits of the repeats (their files rows are
    /// compared with the archive too).
    dup_commits: HashMap<String, Vec<u32>>,
    /// The kind-table part pairs of the checked commits.
    pairs: Vec<KindPair>,
    /// `files` rows of the checked commits: checksum per (commit, reference).
    files: HashMap<(u32, String), FileSetSum>,
    /// The `files` parts rows were read from, per commit: (name, path).
    files_parts: BTreeMap<u32, Vec<(Arc<str>, PathBuf)>>,
    /// Rows that differ from their archive's data, per (pair, twin?): explained column by
    /// column once every archive is checked.
    differ: BTreeMap<(u32, bool), BTreeSet<String>>,
    /// The failures rows of every commit, for `failures.csv`.
    ledger: failures::Ledger,
}

impl Verifier<'_> {
    /// The commit, if any, that exported (reference, kind): a checked or an earlier one.
    fn exported_by(&self, reference: &str, kind: Kind) -> Option<u32> {
        let key = (reference.to_owned(), kind);
        self.rows
            .get(&key)
            .map(|r| r.commit)
            .or_else(|| self.earlier.get(&key).copied())
    }
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
        a.add(&["data.json", "10", "aa"]);
        a.add(&["images/front.jpg", "20", "bb"]);
        let mut b = FileSetSum::default();
        b.add(&["images/front.jpg", "20", "bb"]);
        b.add(&["data.json", "10", "aa"]);
        assert_eq!(a, b);
        let mut dup = b;
        dup.add(&["data.json", "10", "aa"]);
        assert_ne!(a, dup);
        let mut changed = FileSetSum::default();
        changed.add(&["data.json", "11", "aa"]);
        changed.add(&["images/front.jpg", "20", "bb"]);
        assert_ne!(a, changed);
        // Field boundaries count: ("ab", "1") is not ("a", "b1").
        let mut x = FileSetSum::default();
        x.add(&["ab", "1", "c"]);
        let mut y = FileSetSum::default();
        y.add(&["a", "b1", "c"]);
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
            commits: 1,
            parts: 10,
            archives: 2,
            rows: 2,
            files: 30,
            failures: 1,
            ..VerifyReport::default()
        };
        assert!(report.is_ok());
        assert_eq!(
            report.to_string(),
            "verified 1 commit (10 parts), 2 archives, 2 table rows, 30 files rows, 1 failures.csv rows: OK\n"
        );
        report.warning("archives/.x.zip.tmp", "temporary");
        assert!(report.is_ok(), "a warning is not a failure");
        report.finding("archives/x.zip", "broken");
        assert!(!report.is_ok());
        report.since = Some("20261206T074501Z-7f2a".into());
        assert_eq!(
            report.to_string(),
            "problem  archives/x.zip: broken\n\
             warning  archives/.x.zip.tmp: temporary\n\
             verified the commits after 20261206T074501Z-7f2a: 1 commit (10 parts), 2 archives, \
             2 table rows, 30 files rows, 1 failures.csv rows: 1 problem, 1 warning\n"
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

    #[test]
    fn a_directory_of_the_old_layout_gets_the_upgrade_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("netverify.csv"), b"reference\n").unwrap();
        let err = verify(dir.path()).unwrap_err();
        assert!(matches!(err, VerifyError::LegacyLayout { .. }), "{err}");
        let advice = crate::run::RunError::LegacyLayout {
            path: dir.path().to_path_buf(),
        }
        .to_string();
        assert_eq!(err.to_string(), advice);
        assert!(advice.contains("jumio-export upgrade"), "{advice}");
    }
}
