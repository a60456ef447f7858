//! The `files` table: one order-independent checksum per reference while reading it, compared
//! with each archive's entries; a second pass names the rows of the few references that differ.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::scan::scan;
use super::{FILES_CSV, FILES_PARQUET, Loc, Verifier, VerifyReport};
use crate::output::archive::ArchivedFile;
use crate::output::archive::relative_path;

/// An order-independent checksum of one reference's `files` rows (entry, bytes, sha256):
/// lane-wise wrapping sum of each row's sha256, plus the row count. Equal sets give equal
/// checksums whatever the row order; a missing, extra, duplicated or changed row changes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct FileSetSum {
    pub(super) rows: u64,
    sum: [u64; 4],
}

impl FileSetSum {
    pub(super) fn add(&mut self, entry: &str, bytes: &str, sha256: &str) {
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

    pub(super) fn of_archive(files: &[ArchivedFile]) -> Self {
        let mut s = FileSetSum::default();
        for f in files {
            s.add(&f.entry, &f.bytes.to_string(), &f.sha256);
        }
        s
    }
}

impl Verifier<'_> {
    /// Reads the files table into per-reference checksums; compares the Parquet twin.
    pub(super) fn read_files_table(&mut self, report: &mut VerifyReport) {
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

    pub(super) fn files_table_name(&self) -> &'static str {
        if self.dir.join(FILES_CSV).exists() {
            FILES_CSV
        } else {
            FILES_PARQUET
        }
    }

    /// Second pass over the files table for the few references whose checksum disagreed:
    /// names each missing, extra, duplicated or changed entry.
    pub(super) fn explain_files(
        &self,
        detail: BTreeMap<String, Vec<ArchivedFile>>,
        report: &mut VerifyReport,
    ) {
        let name = self.files_table_name();
        let mut listed: HashMap<String, Vec<FilesRow>> = HashMap::new();
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
            let rows = listed.remove(reference).unwrap_or_default();
            explain_reference(reference, files, &rows, name, report);
        }
    }
}

/// A files-table row: where, entry, bytes, sha256.
type FilesRow = (Loc, String, String, String);

/// Names each entry of `files` that `rows` (the files table's rows of `reference`) leave out,
/// list twice or describe otherwise, and each row the archive does not hold.
fn explain_reference(
    reference: &str,
    files: &[ArchivedFile],
    rows: &[FilesRow],
    name: &str,
    report: &mut VerifyReport,
) {
    let subject = relative_path(reference);
    let mut by_entry: BTreeMap<&str, Vec<&FilesRow>> = BTreeMap::new();
    for row in rows {
        by_entry.entry(row.1.as_str()).or_default().push(row);
    }
    for f in files {
        let matches = by_entry.remove(f.entry.as_str()).unwrap_or_default();
        if matches.is_empty() {
            report.finding(
                subject.clone(),
                format!(
                    "entry {} ({} bytes, sha256 {}) has no row in {name}",
                    f.entry, f.bytes, f.sha256
                ),
            );
            continue;
        }
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
    for (entry, extra) in by_entry {
        for (loc, ..) in extra {
            report.finding(
                loc.to_string(),
                format!("reference {reference} entry {entry} is not in {subject}"),
            );
        }
    }
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
