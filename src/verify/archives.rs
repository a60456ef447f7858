//! Every archive a checked commit lists, one at a time, in reference order: checked by
//! [`archive::check`] (the same check resume uses), then matched with its row (hash, image
//! count, cells) and the `files` rows of the commit(s) that list it. Archives no commit lists
//! are warnings: a run stopped after writing them, and the next run takes them over.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::files::FileSetSum;
use super::{Loc, Verifier, VerifyReport, stray_temps};
use crate::Kind;
use crate::output::archive::{
    self, ARCHIVES_DIR, ArchiveKey, ArchivedFile, CheckedArchive, layout, relative_path,
};

impl Verifier<'_> {
    /// Checks the archive of every kind-table row of the checked commits.
    pub(super) fn check_archives(&mut self, report: &mut VerifyReport) {
        let mut keys: Vec<(String, Kind)> = self.rows.keys().cloned().collect();
        keys.sort();
        // Archives whose files rows disagree with the table: their entries, for the second pass.
        let mut detail = FilesDetail::new();
        for key in keys {
            self.check_archive(&key, &mut detail, report);
        }
        self.report_leftover_files(report);
        if !detail.is_empty() {
            self.explain_files(detail, report);
        }
    }

    /// The archive of one kind-table row: a regular file that passes [`archive::check`], with
    /// the row's hash, image count and cells, and the files rows of every commit that lists it.
    fn check_archive(
        &mut self,
        key: &(String, Kind),
        detail: &mut FilesDetail,
        report: &mut VerifyReport,
    ) {
        let (reference, kind) = (&key.0, key.1);
        let row = &self.rows[key];
        let (commit, recorded_sha, loc) = (row.commit, row.sha256, row.loc.clone());
        let mut commits = vec![commit];
        commits.extend(self.dup_commits.get(reference).into_iter().flatten());
        if row.mode == archive::ArchiveMode::Age {
            let Some(checked) = self.check_age_archive(reference, kind, recorded_sha, &loc, report)
            else {
                self.forget_files(&commits, reference);
                return;
            };
            return self.check_opened(key, &commits, checked, detail, report);
        }
        let subject = relative_path(reference);
        let path = layout::archive_path(self.dir, reference);
        let checked = if is_regular_file(&path, &subject, &loc, reference, report) {
            report.archives += 1;
            let (sha256, checked) =
                checked_archive(&path, (reference, &subject), kind, self.key, report);
            if let Some(recorded) = recorded_sha.map(hex::encode)
                && recorded != sha256
            {
                report.finding(
                    &subject,
                    format!("sha256 {sha256} does not match archive_sha256 {recorded} at {loc}"),
                );
            }
            checked
        } else {
            None
        };
        let Some(checked) = checked else {
            self.forget_files(&commits, reference);
            return;
        };
        self.check_opened(key, &commits, checked, detail, report);
    }

    /// An archive that checked out (an age archive: decrypted) against its row's image count
    /// and cells and the files rows of `commits`.
    fn check_opened(
        &mut self,
        key: &(String, Kind),
        commits: &[u32],
        checked: CheckedArchive,
        detail: &mut FilesDetail,
        report: &mut VerifyReport,
    ) {
        let (reference, kind) = (&key.0, key.1);
        let row = &self.rows[key];
        let (pair, digest, twin_digest) = (row.pair, row.digest, row.twin_digest);
        let (recorded_images, loc) = (row.image_count, row.loc.clone());
        let subject = checked.archive.relative.clone();
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
        for c in self.take_files_rows(commits, reference, &expected, report) {
            detail.insert((c, reference.clone()), (kind, checked.files().to_vec()));
        }
    }

    /// The age archive of a row: a regular file whose ciphertext has the row's hash. With
    /// identities it is decrypted into a private temporary directory and checked like a ZIP
    /// (`None` without them, or when it does not check out: findings say why).
    fn check_age_archive(
        &self,
        reference: &str,
        kind: Kind,
        recorded_sha: Option<[u8; 32]>,
        loc: &Loc,
        report: &mut VerifyReport,
    ) -> Option<CheckedArchive> {
        let subject = layout::age_relative_path(reference);
        let path = layout::age_archive_path(self.dir, reference);
        if !is_regular_file(&path, &subject, loc, reference, report) {
            return None;
        }
        report.archives += 1;
        match archive::age::hash_file(&path) {
            Ok((sha256, _)) => {
                if let Some(recorded) = recorded_sha.map(hex::encode)
                    && recorded != sha256
                {
                    report.finding(
                        &subject,
                        format!(
                            "sha256 {sha256} does not match archive_sha256 {recorded} at {loc}"
                        ),
                    );
                }
            }
            Err(e) => {
                report.finding(&subject, format!("cannot be read: {e}"));
                return None;
            }
        }
        let identities = self.age_identities?;
        let scratch = match tempfile::Builder::new()
            .prefix("jumio-export-verify-")
            .tempdir()
        {
            Ok(dir) => dir,
            Err(e) => {
                report.finding(
                    &subject,
                    format!("no temporary directory to open it in: {e}"),
                );
                return None;
            }
        };
        let plain = scratch.path().join(format!("{reference}.zip"));
        let modes = crate::output::fsmode::Modes::default();
        if let Err(e) = identities.decrypt_file(&path, &plain, modes) {
            report.finding(
                &subject,
                format!("does not decrypt with the identity given: {e}"),
            );
            return None;
        }
        let (_, checked) = checked_archive(&plain, (reference, &subject), kind, self.key, report);
        checked.map(|mut c| {
            c.archive.relative = subject;
            c.archive.path = path;
            c
        })
    }

    /// Takes the files rows of `reference` of each of `commits` (a finding for a commit that
    /// has none); returns the commits whose rows differ from the archive's entries `expected`.
    fn take_files_rows(
        &mut self,
        commits: &[u32],
        reference: &str,
        expected: &FileSetSum,
        report: &mut VerifyReport,
    ) -> Vec<u32> {
        let mut differ = Vec::new();
        for &c in commits {
            match self.files.remove(&(c, reference.to_owned())) {
                None => report.finding(
                    relative_path(reference),
                    format!(
                        "commit {} has no files rows for reference {reference}",
                        self.commits[c as usize].run
                    ),
                ),
                Some(sum) if sum != *expected => differ.push(c),
                Some(_) => {}
            }
        }
        differ
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
            match layout::reference_of(&name).or_else(|| layout::age_reference_of(&name)) {
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

/// Archives whose files rows disagree with their table row's archive: per (commit, reference),
/// the family and the archive's entries.
type FilesDetail = BTreeMap<(u32, String), (Kind, Vec<ArchivedFile>)>;

/// Whether the archive of the row at `loc` is a regular file; a finding when it is missing,
/// not a regular file or cannot be read.
fn is_regular_file(
    path: &Path,
    subject: &str,
    loc: &Loc,
    reference: &str,
    report: &mut VerifyReport,
) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => true,
        Ok(_) => {
            report.finding(subject, "not a regular file");
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report.finding(
                loc.to_string(),
                format!("reference {reference}: archive {subject} is missing"),
            );
            false
        }
        Err(e) => {
            report.finding(subject, format!("cannot be read: {e}"));
            false
        }
    }
}

/// An archive through [`archive::check`]: its sha256 (empty when it cannot be computed) and the
/// checked archive, or a finding for each reason it is rejected.
fn checked_archive(
    path: &Path,
    (reference, subject): (&str, &str),
    kind: Kind,
    key: Option<&ArchiveKey>,
    report: &mut VerifyReport,
) -> (String, Option<CheckedArchive>) {
    match archive::check(path, reference, Some(kind), key) {
        Ok(checked) => (checked.archive.sha256.clone(), Some(checked)),
        Err(rejected) => {
            // Named as the dataset holds it (`.zip.age` for an age archive opened elsewhere).
            for finding in &rejected.findings {
                report.finding(subject, finding.to_string());
            }
            (rejected.sha256.unwrap_or_default(), None)
        }
    }
}
