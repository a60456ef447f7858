//! Commit records: each parses and names its run; each part it lists is a regular file of the
//! recorded size and sha256, named `{run}-{n}.{ext}`, and the parts of a table form pairs
//! `0, 1, …` in the same formats; its root hash and archive count are those of its kind-table
//! rows; `report.json` is the latest commit's report. Parts in `tables/` that no commit lists
//! are warnings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;

use super::{CommitInfo, Verifier, VerifyReport, stray_temps};
use crate::Kind;
use crate::dataset::commit::{self, Commit, PartRecord};
use crate::dataset::{
    COMMITS_DIR, FAILURES_TABLE, FILES_TABLE, Format, REPORT_JSON, TABLES, TABLES_DIR,
};
use crate::output::report::{ROOT_HASH_METHOD, RootHash};

/// The parts `{run}-{n}` of one table in one commit that are there to be read.
#[derive(Debug, Default, Clone)]
pub(super) struct Slot {
    pub csv: Option<PartRecord>,
    pub parquet: Option<PartRecord>,
}

impl Slot {
    /// The part rows are read from (CSV when there, else Parquet) and the Parquet twin.
    pub fn primary_and_twin(&self) -> Option<(&PartRecord, Option<&PartRecord>)> {
        match (&self.csv, &self.parquet) {
            (Some(csv), parquet) => Some((csv, parquet.as_ref())),
            (None, Some(parquet)) => Some((parquet, None)),
            (None, None) => None,
        }
    }
}

/// The run ids of `commits/*.json`, sorted; temporaries and other files there are warnings, a
/// missing `commits/` a finding.
pub(super) fn list(root: &Path, report: &mut VerifyReport) -> Vec<String> {
    let dir = root.join(COMMITS_DIR);
    let listing: Vec<std::fs::DirEntry> = match std::fs::read_dir(&dir) {
        Ok(l) => l.filter_map(Result::ok).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report.finding(
                format!("{COMMITS_DIR}/"),
                "missing: not a dataset, or no run ever started here",
            );
            return Vec::new();
        }
        Err(e) => {
            report.finding(format!("{COMMITS_DIR}/"), format!("cannot be listed: {e}"));
            return Vec::new();
        }
    };
    stray_temps(&listing, &format!("{COMMITS_DIR}/"), report);
    let mut runs = Vec::new();
    for item in &listing {
        let name = item.file_name().to_string_lossy().into_owned();
        // Temporaries are named above; signatures are checked with `--public-key`.
        if name.ends_with(".tmp") || (name.ends_with(".json.sig") && !name.starts_with('.')) {
            continue;
        }
        match name.strip_suffix(".json") {
            Some(run) if !name.starts_with('.') => runs.push(run.to_owned()),
            _ => report.warning(
                format!("{COMMITS_DIR}/{name}"),
                "not a commit record this tool writes; ignored",
            ),
        }
    }
    runs.sort();
    if runs.is_empty() {
        report.warning(
            format!("{COMMITS_DIR}/"),
            "no commit yet: nothing is part of the dataset",
        );
    }
    runs
}

/// `n` of a part named `tables/{table}/{run}-{n}.{ext}`.
fn part_number(part: &PartRecord, run: &str) -> Option<u32> {
    let rest = part
        .path
        .strip_prefix(&format!("{TABLES_DIR}/{}/{run}-", part.table))?
        .strip_suffix(&format!(".{}", part.format.ext()))?;
    if rest.len() > 1 && rest.starts_with('0') {
        return None;
    }
    rest.parse().ok()
}

impl Verifier<'_> {
    /// Reads every commit record; a record that does not read is a finding (it cannot be
    /// checked, nor can what it lists be told from unlisted files).
    pub(super) fn read_commits(&mut self, runs: Vec<String>, report: &mut VerifyReport) {
        let mut listed: HashMap<String, String> = HashMap::new();
        for (i, run) in runs.into_iter().enumerate() {
            let subject = crate::dataset::commit_relative(&run);
            let c = match Commit::read(&commit::path(self.dir, &run)) {
                Ok(c) => Some(c),
                Err(e) => {
                    report.finding(&subject, format!("cannot be used: {e}"));
                    None
                }
            };
            if let Some(c) = &c {
                for part in &c.parts {
                    if let Some(first) = listed.insert(part.path.clone(), subject.clone())
                        && i >= self.first_in_scope
                    {
                        report.finding(
                            &subject,
                            format!("lists {} again (also listed by {first})", part.path),
                        );
                    }
                }
            }
            self.commits.push(CommitInfo {
                run,
                subject,
                commit: c,
            });
        }
    }

    /// Checks one commit: its record, every part it lists, every row of those parts, its root
    /// hash and archive count.
    pub(super) fn check_commit(&mut self, i: usize, report: &mut VerifyReport) {
        let Some(c) = self.commits[i].commit.clone() else {
            return;
        };
        let subject = self.commits[i].subject.clone();
        report.commits += 1;
        self.check_record(&c, &subject, report);
        let mut slots: BTreeMap<(usize, u32), Slot> = BTreeMap::new();
        // Formats and part numbers each table lists, for the structure check.
        let mut listed: BTreeMap<usize, BTreeMap<u32, Vec<Format>>> = BTreeMap::new();
        let mut unnamed = 0u32;
        let mut complete = true;
        for part in &c.parts {
            report.parts += 1;
            let table = TABLES
                .iter()
                .position(|t| *t == part.table)
                .expect("Commit::read accepts only the dataset's tables");
            let n = match part_number(part, &c.run) {
                Some(n) => n,
                None => {
                    report.finding(
                        &part.path,
                        format!(
                            "listed by {subject} but not named {}/{}/{}-{{n}}.{}: not a part of this run",
                            TABLES_DIR, part.table, c.run, part.format.ext()
                        ),
                    );
                    unnamed += 1;
                    u32::MAX - unnamed
                }
            };
            let formats = listed.entry(table).or_default().entry(n).or_default();
            if formats.contains(&part.format) {
                report.finding(&subject, format!("lists {} twice", part.path));
                continue;
            }
            formats.push(part.format);
            if !self.check_part_file(part, &subject, report) {
                continue;
            }
            let slot = slots.entry((table, n)).or_default();
            match part.format {
                Format::Csv => slot.csv = Some(part.clone()),
                Format::Parquet => slot.parquet = Some(part.clone()),
            }
        }
        check_structure(&listed, &subject, report);
        // A kind-table `{run}-{n}` with neither format readable: its rows are unknown.
        for (&table, numbers) in &listed {
            if TABLES[table] != FILES_TABLE && TABLES[table] != FAILURES_TABLE {
                complete &= numbers.keys().all(|n| slots.contains_key(&(table, *n)));
            }
        }
        let mut root = RootHash::new(&std::env::temp_dir());
        let mut kind_rows = 0u64;
        for ((table, _), slot) in slots {
            let table = TABLES[table];
            if let Some(kind) = Kind::ALL.into_iter().find(|k| k.table_name() == table) {
                // Both formats unreadable: the rows are not known, nor is the root hash.
                complete &=
                    self.read_kind_pair(i as u32, kind, &slot, &mut root, &mut kind_rows, report);
            } else if table == FILES_TABLE {
                self.read_files_pair(i as u32, &slot, report);
            } else {
                self.read_failures_pair(i as u32, &slot, report);
            }
        }
        self.check_root_hash(&c, &subject, root, kind_rows, complete, report);
    }

    /// The record itself: its report names its run and root hash, its method is known.
    fn check_record(&self, c: &Commit, subject: &str, report: &mut VerifyReport) {
        match c.report.get("run").and_then(|v| v.as_str()) {
            Some(run) if run == c.run => {}
            Some(run) => report.finding(
                subject,
                format!("its report names run {run}, not {}", c.run),
            ),
            None => report.finding(subject, "its report has no run"),
        }
        match c.report.get("root_hash").and_then(|v| v.as_str()) {
            Some(hash) if hash == c.archives.root_hash => {}
            Some(hash) => report.finding(
                subject,
                format!(
                    "its report's root_hash {hash} differs from archives.root_hash {}",
                    c.archives.root_hash
                ),
            ),
            None => report.finding(subject, "its report has no root_hash"),
        }
    }

    /// The part's file: there, a regular file (symlinks are not followed), of the recorded
    /// size and sha256. False when it cannot be read at all.
    fn check_part_file(&self, part: &PartRecord, commit: &str, report: &mut VerifyReport) -> bool {
        let path = self.dir.join(&part.path);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                report.finding(
                    &part.path,
                    format!("listed by {commit} but not a regular file"),
                );
                return false;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                report.finding(&part.path, format!("missing (listed by {commit})"));
                return false;
            }
            Err(e) => {
                report.finding(&part.path, format!("cannot be read: {e}"));
                return false;
            }
        }
        let (sha256, bytes) = match crate::dataset::parts::hash_file(&path) {
            Ok(h) => h,
            Err(e) => {
                report.finding(&part.path, format!("cannot be read: {e}"));
                return false;
            }
        };
        if bytes != part.bytes {
            report.finding(
                &part.path,
                format!("{bytes} bytes, {commit} recorded {}", part.bytes),
            );
        }
        if sha256 != part.sha256 {
            report.finding(
                &part.path,
                format!("sha256 {sha256}, {commit} recorded {}", part.sha256),
            );
        }
        true
    }

    fn check_root_hash(
        &self,
        c: &Commit,
        subject: &str,
        root: RootHash,
        rows: u64,
        complete: bool,
        report: &mut VerifyReport,
    ) {
        if c.archives.root_hash_method != ROOT_HASH_METHOD {
            report.finding(
                subject,
                format!(
                    "archives.root_hash_method is not one this tool computes ({ROOT_HASH_METHOD:?}); the root hash cannot be checked"
                ),
            );
            return;
        }
        if !complete {
            report.finding(
                subject,
                "the root hash and archive count cannot be recomputed: a kind-table part it lists is missing",
            );
            return;
        }
        if rows != c.archives.count {
            report.finding(
                subject,
                format!(
                    "archives.count is {}, its kind-table parts hold {rows} rows",
                    c.archives.count
                ),
            );
        }
        match root.finish() {
            Ok(hash) if hash == c.archives.root_hash => {}
            Ok(hash) => report.finding(
                subject,
                format!(
                    "archives.root_hash {} does not match {hash}, recomputed over the (reference, archive_sha256) of its {rows} kind-table rows",
                    c.archives.root_hash
                ),
            ),
            Err(e) => report.finding(
                subject,
                format!("the root hash cannot be recomputed: {e}"),
            ),
        }
    }

    /// `report.json`: the report of the latest commit (a warning when missing or of another
    /// run: a run stopped before writing it, or shards finishing out of order).
    pub(super) fn check_report_json(&self, report: &mut VerifyReport) {
        let Some(latest) = self.commits.last() else {
            return;
        };
        let Some(json) = self.read_report_json(latest, report) else {
            return;
        };
        let Some(run) = json.get("run").and_then(|v| v.as_str()) else {
            report.finding(REPORT_JSON, "has no run");
            return;
        };
        if run != latest.run {
            report.warning(
                REPORT_JSON,
                format!(
                    "is the report of run {run}, not of the latest commit {} (a run stopped before writing it, or runs finishing out of order); the next run writes it",
                    latest.run
                ),
            );
        }
        let Some(info) = self.commits.iter().find(|c| c.run == run) else {
            report.finding(
                REPORT_JSON,
                format!("is the report of run {run}, which has no commit"),
            );
            return;
        };
        if let Some(c) = &info.commit {
            compare_report(&json, &c.report, &info.subject, report);
        }
    }

    /// `report.json` parsed; `None` after a warning when it is missing (the run of `latest`
    /// stopped before writing it) or a finding when it cannot be read or parsed.
    fn read_report_json(
        &self,
        latest: &CommitInfo,
        report: &mut VerifyReport,
    ) -> Option<serde_json::Value> {
        let bytes = match std::fs::read(self.dir.join(REPORT_JSON)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                report.warning(
                    REPORT_JSON,
                    format!(
                        "missing: the run of {} stopped before writing it; the next run writes it",
                        latest.subject
                    ),
                );
                return None;
            }
            Err(e) => {
                report.finding(REPORT_JSON, format!("cannot be read: {e}"));
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(j) => Some(j),
            Err(e) => {
                report.finding(REPORT_JSON, format!("does not parse: {e}"));
                None
            }
        }
    }

    /// Files in `tables/` that no commit lists (warnings: not part of the dataset yet), and
    /// temporaries.
    pub(super) fn unlisted_parts(&self, report: &mut VerifyReport) {
        let listed: HashSet<&str> = self
            .commits
            .iter()
            .filter_map(|c| c.commit.as_ref())
            .flat_map(|c| c.parts.iter().map(|p| p.path.as_str()))
            .collect();
        let tables_dir = self.dir.join(TABLES_DIR);
        let Ok(listing) = std::fs::read_dir(&tables_dir) else {
            return;
        };
        let mut dirs: Vec<String> = listing
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        for table in dirs {
            if !TABLES.contains(&table.as_str()) {
                report.warning(
                    format!("{TABLES_DIR}/{table}"),
                    "not a table of the dataset; ignored",
                );
                continue;
            }
            let Ok(listing) = std::fs::read_dir(tables_dir.join(&table)) else {
                continue;
            };
            let listing: Vec<std::fs::DirEntry> = listing.filter_map(Result::ok).collect();
            let prefix = format!("{TABLES_DIR}/{table}/");
            stray_temps(&listing, &prefix, report);
            let mut names: Vec<String> = listing
                .iter()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".tmp"))
                .collect();
            names.sort();
            for name in names {
                let path = format!("{prefix}{name}");
                if !listed.contains(path.as_str()) {
                    report.warning(
                        path,
                        "no commit lists this part: not part of the dataset (a run stopped before its commit, or a run in progress)",
                    );
                }
            }
        }
    }
}

/// Every table's parts are numbered 0, 1, … and each number is listed in the same formats.
fn check_structure(
    listed: &BTreeMap<usize, BTreeMap<u32, Vec<Format>>>,
    subject: &str,
    report: &mut VerifyReport,
) {
    for (&table, numbers) in listed {
        let table = TABLES[table];
        let named: Vec<u32> = numbers
            .keys()
            .copied()
            .filter(|n| *n < u32::MAX / 2)
            .collect();
        for (expected, n) in named.iter().enumerate() {
            if *n != expected as u32 {
                report.finding(
                    subject,
                    format!("lists part {n} of table {table} but not part {expected}"),
                );
                break;
            }
        }
        let mut all: Vec<Format> = numbers.values().flatten().copied().collect();
        all.sort_by_key(|f| f.ext());
        all.dedup();
        for (n, formats) in numbers.iter().filter(|(n, _)| **n < u32::MAX / 2) {
            for format in &all {
                if !formats.contains(format) {
                    report.finding(
                        subject,
                        format!(
                            "lists part {n} of table {table} without its {} twin (other parts have one)",
                            format.ext()
                        ),
                    );
                }
            }
        }
    }
}

/// `report.json` (`json`) against the report recorded in its run's commit (`subject`): the
/// root hash first, then every field.
fn compare_report(
    json: &serde_json::Value,
    recorded_report: &serde_json::Value,
    subject: &str,
    report: &mut VerifyReport,
) {
    let recorded = recorded_report.get("root_hash").and_then(|v| v.as_str());
    let found = json.get("root_hash").and_then(|v| v.as_str());
    if found != recorded {
        report.finding(
            REPORT_JSON,
            format!(
                "root_hash {} differs from {} in {}",
                found.unwrap_or("(none)"),
                recorded.unwrap_or("(none)"),
                subject
            ),
        );
    } else if json != recorded_report {
        let mut fields: Vec<&str> = Vec::new();
        if let (Some(a), Some(b)) = (json.as_object(), recorded_report.as_object()) {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            fields = keys
                .into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .map(String::as_str)
                .collect();
        }
        report.finding(
            REPORT_JSON,
            format!(
                "differs from the report in {} (fields: {})",
                subject,
                fields.join(", ")
            ),
        );
    }
}
