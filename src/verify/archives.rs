//! Every archive a checked commit lists, one at a time, in reference order: checked by
//! [`archive::check`] (the same check resume uses), then matched with its row (hash, image
//! count, cells) and the `files` rows of the commit(s) that list it. Archives no commit lists
//! are warnings: a run stopped after writing them, and the next run takes them over.

use std::collections::BTreeMap;
use std::io;

use super::files::FileSetSum;
use super::{Verifier, VerifyReport, stray_temps};
use crate::Kind;
use crate::output::archive::{self, ARCHIVES_DIR, ArchivedFile, layout, relative_path};

impl Verifier<'_> {
    /// Checks the archive of every kind-table row of the checked commits.
    pub(super) fn check_archives(&mut self, report: &mut VerifyReport) {
        let mut keys: Vec<(String, Kind)> = self.rows.keys().cloned().collect();
        keys.sort();
        // Archives whose files rows disagree with the table: their entries, for the second pass.
        let mut detail: BTreeMap<(u32, String), (Kind, Vec<ArchivedFile>)> = BTreeMap::new();
        for key in keys {
            let (reference, kind) = (&key.0, key.1);
            let row = &self.rows[&key];
            let (commit, pair, digest, twin_digest) =
                (row.commit, row.pair, row.digest, row.twin_digest);
            let (recorded_sha, recorded_images, loc) =
                (row.sha256, row.image_count, row.loc.clone());
            let mut commits = vec![commit];
            commits.extend(self.dup_commits.get(reference).into_iter().flatten());
            let subject = relative_path(reference);
            let path = layout::archive_path(self.dir, reference);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    report.finding(&subject, "not a regular file");
                    self.forget_files(&commits, reference);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    report.finding(
                        loc.to_string(),
                        format!("reference {reference}: archive {subject} is missing"),
                    );
                    self.forget_files(&commits, reference);
                    continue;
                }
                Err(e) => {
                    report.finding(&subject, format!("cannot be read: {e}"));
                    self.forget_files(&commits, reference);
                    continue;
                }
            }
            report.archives += 1;
            let (sha256, checked) = match archive::check(&path, reference, Some(kind), self.key) {
                Ok(checked) => (checked.archive.sha256.clone(), Some(checked)),
                Err(rejected) => {
                    for finding in &rejected.findings {
                        report.finding(&subject, finding.to_string());
                    }
                    (rejected.sha256.unwrap_or_default(), None)
                }
            };
            if let Some(recorded) = recorded_sha.map(hex::encode)
                && recorded != sha256
            {
                report.finding(
                    &subject,
                    format!("sha256 {sha256} does not match archive_sha256 {recorded} at {loc}"),
                );
            }
            let Some(checked) = checked else {
                self.forget_files(&commits, reference);
                continue;
            };
            if let Some(expected) = recorded_images {
                let found = checked.image_count();
                if found != expected {
                    report.finding(
                        &subject,
                        format!(
                            "holds {found} image, page and PDF files; image_count at {loc} is {expected}"
                        ),
                    );
                }
            }
            self.compare_content(kind, pair, digest, twin_digest, &checked);
            let expected = FileSetSum::of_archive(kind, checked.files());
            for c in commits {
                match self.files.remove(&(c, reference.clone())) {
                    None => report.finding(
                        &subject,
                        format!(
                            "commit {} has no files rows for reference {reference}",
                            self.commits[c as usize].run
                        ),
                    ),
                    Some(sum) if sum != expected => {
                        detail.insert((c, reference.clone()), (kind, checked.files().to_vec()));
                    }
                    Some(_) => {}
                }
            }
        }
        self.report_leftover_files(report);
        if !detail.is_empty() {
            self.explain_files(detail, report);
        }
    }

    /// The files rows of a reference whose archive cannot be compared (missing or damaged,
    /// which is reported already).
    fn forget_files(&mut self, commits: &[u32], reference: &str) {
        for c in commits {
            self.files.remove(&(*c, reference.to_owned()));
        }
    }

    /// `files` rows of references that no kind-table row of their commit lists.
    fn report_leftover_files(&self, report: &mut VerifyReport) {
        let mut leftover: Vec<(u32, &String, u64)> = self
            .files
            .iter()
            // The files rows of a row that repeats an earlier commit's (reported already).
            .filter(|((c, r), _)| !self.dup_commits.get(r).is_some_and(|d| d.contains(c)))
            .map(|((c, r), s)| (*c, r, s.rows))
            .collect();
        leftover.sort();
        for (c, reference, rows) in leftover {
            let subject = self
                .files_parts
                .get(&c)
                .and_then(|p| p.first())
                .map_or_else(
                    || self.commits[c as usize].subject.clone(),
                    |p| p.0.to_string(),
                );
            report.finding(
                subject,
                format!(
                    "{rows} files rows for reference {reference}, which no kind-table row of commit {} lists",
                    self.commits[c as usize].run
                ),
            );
        }
    }

    /// Archives no commit lists: warnings (a run stopped after writing them; the next run
    /// checks and takes them over). Temporaries and foreign files are warnings too.
    pub(super) fn unlisted_archives(&self, report: &mut VerifyReport) {
        let dir = self.dir.join(ARCHIVES_DIR);
        let listing: Vec<std::fs::DirEntry> = match std::fs::read_dir(&dir) {
            Ok(listing) => listing.filter_map(Result::ok).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                report.finding(format!("{ARCHIVES_DIR}/"), format!("cannot be listed: {e}"));
                return;
            }
        };
        stray_temps(&listing, &format!("{ARCHIVES_DIR}/"), report);
        let mut names: Vec<String> = listing
            .iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".tmp") && n != ".claims")
            .collect();
        names.sort();
        for name in names {
            let subject = format!("{ARCHIVES_DIR}/{name}");
            match layout::reference_of(&name) {
                Some(reference) => {
                    if Kind::ALL
                        .iter()
                        .all(|k| self.exported_by(reference, *k).is_none())
                    {
                        report.warning(
                            subject,
                            "no commit lists it: not part of the dataset yet (a run stopped after writing it, or a run in progress); the next run checks it and takes it over",
                        );
                    }
                }
                None => report.warning(subject, "not an archive this tool writes; ignored"),
            }
        }
    }
}
