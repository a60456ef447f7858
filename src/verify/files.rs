//! The `files` rows: one order-independent checksum per (commit, reference) while reading the
//! parts, compared with each archive's entries; a second pass over the commit's `files` parts
//! names the rows of the few references that differ.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::scan::scan;
use super::{Loc, Verifier, VerifyReport};
use crate::Kind;
use crate::output::archive::ArchivedFile;
use crate::output::archive::relative_path;

/// An order-independent checksum of a set of rows (each a list of text fields): lane-wise
/// wrapping sum of each row's sha256, plus the row count. Equal sets give equal checksums
/// whatever the row order; a missing, extra, duplicated or changed row changes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct FileSetSum {
    pub(super) rows: u64,
    sum: [u64; 4],
}

impl FileSetSum {
    pub(super) fn add(&mut self, fields: &[&str]) {
        let mut h = Sha256::new();
        for part in fields {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        let digest = h.finalize();
        for (lane, chunk) in self.sum.iter_mut().zip(digest.chunks_exact(8)) {
            let word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
            *lane = lane.wrapping_add(word);
        }
        self.rows += 1;
    }

    /// The checksum of the `files` rows an archive of `kind` with `files` must have:
    /// (kind, entry, bytes, sha256) each.
    pub(super) fn of_archive(kind: Kind, files: &[ArchivedFile]) -> Self {
        let mut s = FileSetSum::default();
        for f in files {
            s.add(&[kind.as_str(), &f.entry, &f.bytes.to_string(), &f.sha256]);
        }
        s
    }
}

/// A files row: where, kind, entry, bytes, sha256.
type FilesRow = (Loc, String, String, String, String);

impl Verifier<'_> {
    /// Second pass over the `files` parts of each commit whose rows of some reference
    /// disagreed with its archive: names each missing, extra, duplicated or changed entry.
    pub(super) fn explain_files(
        &self,
        detail: BTreeMap<(u32, String), (Kind, Vec<ArchivedFile>)>,
        report: &mut VerifyReport,
    ) {
        let mut by_commit: BTreeMap<u32, BTreeMap<String, (Kind, Vec<ArchivedFile>)>> =
            BTreeMap::new();
        for ((commit, reference), files) in detail {
            by_commit
                .entry(commit)
                .or_default()
                .insert(reference, files);
        }
        for (commit, detail) in by_commit {
            let parts = self.files_parts.get(&commit).cloned().unwrap_or_default();
            let mut listed: HashMap<String, Vec<FilesRow>> = HashMap::new();
            let mut ignore = VerifyReport::default();
            for (name, path) in &parts {
                scan(
                    path,
                    name,
                    &["reference", "kind", "entry", "bytes", "sha256"],
                    &mut ignore,
                    |_, loc, values| {
                        let [reference, kind, entry, bytes, sha] =
                            [0, 1, 2, 3, 4].map(|i| values[i].clone().unwrap_or_default());
                        if detail.contains_key(&reference) {
                            listed.entry(reference).or_default().push((
                                loc.clone(),
                                kind,
                                entry,
                                bytes,
                                sha,
                            ));
                        }
                    },
                );
            }
            let names: Vec<&str> = parts.iter().map(|(n, _)| &**n).collect();
            let names = names.join(", ");
            let run = &self.commits[commit as usize].run;
            for (reference, (kind, files)) in &detail {
                let rows = listed.remove(reference).unwrap_or_default();
                explain_reference(reference, *kind, files, &rows, run, &names, report);
            }
        }
    }

    /// The `files` parts of `commit` rows are read from, for the second pass.
    pub(super) fn add_files_part(&mut self, commit: u32, name: &Arc<str>, root: &std::path::Path) {
        self.files_parts
            .entry(commit)
            .or_default()
            .push((name.clone(), root.join(&**name)));
    }
}

/// Names each entry of `files` that `rows` (the `files` rows of `reference` in commit `run`)
/// leave out, list twice or describe otherwise, and each row the archive does not hold.
fn explain_reference(
    reference: &str,
    kind: Kind,
    files: &[ArchivedFile],
    rows: &[FilesRow],
    run: &str,
    parts: &str,
    report: &mut VerifyReport,
) {
    let subject = relative_path(reference);
    let mut by_entry: BTreeMap<&str, Vec<&FilesRow>> = BTreeMap::new();
    for row in rows {
        by_entry.entry(row.2.as_str()).or_default().push(row);
    }
    for f in files {
        let matches = by_entry.remove(f.entry.as_str()).unwrap_or_default();
        if matches.is_empty() {
            report.finding(
                subject.clone(),
                format!(
                    "entry {} ({} bytes, sha256 {}) has no files row in commit {run} ({parts})",
                    f.entry, f.bytes, f.sha256
                ),
            );
            continue;
        }
        for (loc, row_kind, _, bytes, sha) in matches.iter().copied() {
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
            if row_kind != kind.as_str() {
                report.finding(
                    loc.to_string(),
                    format!(
                        "reference {reference} entry {}: kind {row_kind:?}, the reference's row is in the {} table",
                        f.entry,
                        kind.table_name()
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
    for (entry, extra) in by_entry {
        for (loc, ..) in extra {
            report.finding(
                loc.to_string(),
                format!("reference {reference} entry {entry} is not in {subject}"),
            );
        }
    }
}
