//! Every archive, one at a time: checked by [`archive::check`] (the same check resume uses),
//! then matched with its table row (hash, image count, cells) and its `files` rows. Rows and
//! `files` rows whose archive is not there are found at the end.

use std::collections::BTreeMap;
use std::io;

use super::files::FileSetSum;
use super::{Finding, Loc, Verifier, VerifyReport, stray_temps};
use crate::output::archive::{
    self, ARCHIVES_DIR, ArchivedFile, CheckedArchive, layout, relative_path,
};

impl Verifier<'_> {
    /// Every archive, one at a time; returns (reference, archive sha256) of each for the root
    /// hash.
    pub(super) fn check_archives(&mut self, report: &mut VerifyReport) -> Vec<(String, String)> {
        let references = self.list_archives(report);
        let mut pairs = Vec::with_capacity(references.len());
        // Archives whose files disagree with the table: their entries, for the detailed pass.
        let mut detail: BTreeMap<String, Vec<ArchivedFile>> = BTreeMap::new();
        for reference in references {
            report.archives += 1;
            let (sha256, checked) = self.check_archive(&reference, report);
            self.match_row(&reference, &sha256, checked.as_ref(), report);
            // Taken out even for a damaged archive, so its rows are not reported as orphans.
            let listed = self.files.remove(&reference);
            if let Some(checked) = checked {
                self.compare_content(&checked);
                let files = checked.archive.files;
                match listed {
                    None => report.finding(
                        relative_path(&reference),
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
        self.report_orphans(report);
        if !detail.is_empty() {
            self.explain_files(detail, report);
        }
        pairs
    }

    /// The references of `archives/*.zip`, sorted; anything else there is a warning.
    fn list_archives(&self, report: &mut VerifyReport) -> Vec<String> {
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
            match layout::reference_of(&name) {
                Some(reference) => references.push(reference.into()),
                None => report.warnings.push(Finding {
                    subject: format!("{ARCHIVES_DIR}/{name}"),
                    problem: "not an archive this tool writes; ignored".into(),
                }),
            }
        }
        references.sort();
        references
    }

    /// Checks one archive against its name and its row's kind; every finding is reported.
    /// Returns the file's sha256 (empty when unreadable) and the archive when it holds.
    fn check_archive(
        &self,
        reference: &str,
        report: &mut VerifyReport,
    ) -> (String, Option<CheckedArchive>) {
        let subject = relative_path(reference);
        let path = layout::archive_path(self.dir, reference);
        let kind = self.rows.get(reference).map(|r| r.kind);
        match archive::check(&path, reference, kind, self.key) {
            Ok(checked) => (checked.archive.sha256.clone(), Some(checked)),
            Err(rejected) => {
                for finding in &rejected.findings {
                    report.finding(subject.clone(), finding.to_string());
                }
                (rejected.sha256.unwrap_or_default(), None)
            }
        }
    }

    /// The archive's table row: present, with the archive's hash and image count.
    fn match_row(
        &mut self,
        reference: &str,
        sha256: &str,
        checked: Option<&CheckedArchive>,
        report: &mut VerifyReport,
    ) {
        let subject = relative_path(reference);
        let Some(row) = self.rows.get_mut(reference) else {
            let where_else = match self.failures.get(reference) {
                Some(loc) => format!(" (reference {reference} is listed at {loc})"),
                None => String::new(),
            };
            report.finding(
                subject,
                format!("has no row in any transaction table{where_else}"),
            );
            return;
        };
        row.archive_seen = true;
        if let Some(recorded) = row.sha256.map(hex::encode)
            && recorded != sha256
        {
            report.finding(
                subject.clone(),
                format!(
                    "sha256 {sha256} does not match archive_sha256 {recorded} at {}",
                    row.loc
                ),
            );
        }
        if let (Some(checked), Some(expected)) = (checked, row.image_count) {
            let found = checked.image_count();
            if found != expected {
                report.finding(
                    subject,
                    format!(
                        "holds {found} image, page and PDF files; image_count at {} is {expected}",
                        row.loc
                    ),
                );
            }
        }
    }

    /// Rows whose archive is not there, and `files` rows of references with no archive.
    fn report_orphans(&self, report: &mut VerifyReport) {
        let mut orphans: Vec<(&'static str, u64, &String)> = self
            .rows
            .iter()
            .filter(|(_, r)| !r.archive_seen)
            .map(|(reference, r)| (r.loc.file, r.loc.n, reference))
            .collect();
        orphans.sort();
        for (file, n, reference) in orphans {
            report.finding(
                Loc::new(file, n).to_string(),
                format!(
                    "reference {reference}: archive {} is missing",
                    relative_path(reference)
                ),
            );
        }
        let mut leftover: Vec<(&String, u64)> =
            self.files.iter().map(|(r, s)| (r, s.rows)).collect();
        leftover.sort();
        for (reference, rows) in leftover {
            report.finding(
                self.files_table_name(),
                format!(
                    "{rows} rows for reference {reference}, which has no archive {}",
                    relative_path(reference)
                ),
            );
        }
    }
}
