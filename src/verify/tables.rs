//! Reading the tables that say where each reference is: `failures.csv`, and the three
//! transaction tables (CSV when present, its Parquet twin compared with it), then the cross
//! check that no reference is both exported and failed.

use super::content::TableFile;
use super::scan::{self, Cells};
use super::{
    FAILURES_CSV, Loc, RowInfo, Tables, Verifier, VerifyReport, parse_sha256, table_files,
};
use crate::Kind;
use crate::output::archive::relative_path;

/// The bookkeeping cells of a transaction-table row, as text (empty when null).
struct KeyCells {
    reference: String,
    archive: String,
    sha256: String,
    image_count: String,
}

impl KeyCells {
    fn read(file: &TableFile, cells: &dyn Cells) -> Self {
        let text = |name: &str| cells.text(file.key_cell(name)).unwrap_or_default();
        KeyCells {
            reference: text("reference"),
            archive: text("archive"),
            sha256: text("archive_sha256"),
            image_count: text("image_count"),
        }
    }

    /// The `archive` column must be `archives/{reference}.zip`.
    fn check_archive(&self, loc: Loc, report: &mut VerifyReport) {
        let expected = relative_path(&self.reference);
        if self.archive != expected {
            report.finding(
                loc.to_string(),
                format!(
                    "reference {}: archive column is {:?}, expected {expected}",
                    self.reference, self.archive
                ),
            );
        }
    }
}

impl Verifier<'_> {
    /// Reads `failures.csv`: one row per reference, none empty.
    pub(super) fn read_failures(&mut self, report: &mut VerifyReport) {
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
        scan::scan(
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
    pub(super) fn read_table(&mut self, kind: Kind, report: &mut VerifyReport) {
        let (csv_name, parquet_name) = table_files(kind);
        let twin_exists = self.dir.join(parquet_name).exists();
        let primary_name = if self.dir.join(csv_name).exists() {
            csv_name
        } else if twin_exists {
            parquet_name
        } else {
            report.finding(
                csv_name,
                format!("missing, and so is {parquet_name}: table {kind} cannot be checked"),
            );
            return;
        };
        let primary = TableFile::open(kind, self.dir, primary_name, report);
        if let Some(primary) = &primary {
            self.read_rows(primary, report);
        }
        let twin = (primary_name == csv_name && twin_exists)
            .then(|| TableFile::open(kind, self.dir, parquet_name, report))
            .flatten();
        if let Some(twin) = &twin {
            self.read_twin(twin, csv_name, report);
        }
        if twin_exists && primary_name == csv_name {
            self.missing_from_twin(kind, csv_name, parquet_name, report);
        }
        if let Some(primary) = primary {
            self.tables.insert(kind, Tables { primary, twin });
        }
    }

    /// The rows of a table: one per reference, pointing at its archive, with a hash and an
    /// image count; each leaves a [`RowInfo`].
    fn read_rows(&mut self, file: &TableFile, report: &mut VerifyReport) {
        let rows = &mut self.rows;
        let mut count = 0;
        scan::scan_cells(
            &file.path,
            file.name,
            &file.request,
            report,
            |report, loc, cells| {
                count += 1;
                let key = KeyCells::read(file, cells);
                let reference = &key.reference;
                if reference.is_empty() {
                    report.finding(loc.to_string(), "empty reference");
                    return;
                }
                if let Some(first) = rows.get(reference) {
                    report.finding(
                        loc.to_string(),
                        format!("reference {reference} duplicated: also at {}", first.loc),
                    );
                    return;
                }
                key.check_archive(loc, report);
                let sha256 = parse_sha256(&key.sha256);
                if sha256.is_none() {
                    report.finding(
                        loc.to_string(),
                        format!(
                            "reference {reference}: archive_sha256 {:?} is not a sha256",
                            key.sha256
                        ),
                    );
                }
                let image_count = key.image_count.parse().ok();
                if image_count.is_none() {
                    report.finding(
                        loc.to_string(),
                        format!(
                            "reference {reference}: image_count {:?} is not an integer",
                            key.image_count
                        ),
                    );
                }
                let info = RowInfo {
                    kind: file.kind,
                    loc,
                    sha256,
                    image_count,
                    digest: file.digest(cells),
                    twin_digest: None,
                    archive_seen: false,
                    parquet_rows: 0,
                };
                rows.insert(key.reference, info);
            },
        );
        report.rows += count;
    }

    /// The Parquet twin of a CSV table: the same references, each once, with the same archive,
    /// hash and image count; its other cells are compared with the archive like the CSV's.
    fn read_twin(&mut self, twin: &TableFile, csv_name: &'static str, report: &mut VerifyReport) {
        let rows = &mut self.rows;
        let kind = twin.kind;
        scan::scan_cells(
            &twin.path,
            twin.name,
            &twin.request,
            report,
            |report, loc, cells| {
                let key = KeyCells::read(twin, cells);
                let reference = &key.reference;
                let Some(row) = rows.get_mut(reference).filter(|r| r.kind == kind) else {
                    report.finding(
                        loc.to_string(),
                        format!("reference {reference} has no row in {csv_name}"),
                    );
                    return;
                };
                row.parquet_rows += 1;
                if row.parquet_rows > 1 {
                    report.finding(
                        loc.to_string(),
                        format!("reference {reference} duplicated in {}", twin.name),
                    );
                    return;
                }
                row.twin_digest = Some(twin.digest(cells));
                if parse_sha256(&key.sha256) != row.sha256 {
                    report.finding(
                        loc.to_string(),
                        format!(
                            "reference {reference}: archive_sha256 {} differs from {}'s",
                            key.sha256, row.loc
                        ),
                    );
                }
                if key.image_count.parse().ok() != row.image_count {
                    report.finding(
                        loc.to_string(),
                        format!(
                            "reference {reference}: image_count {} differs from {}'s",
                            key.image_count, row.loc
                        ),
                    );
                }
                key.check_archive(loc, report);
            },
        );
    }

    /// Rows of the CSV table whose reference the Parquet twin does not have.
    fn missing_from_twin(
        &self,
        kind: Kind,
        csv_name: &'static str,
        parquet_name: &'static str,
        report: &mut VerifyReport,
    ) {
        let mut missing: Vec<(u64, &String)> = self
            .rows
            .iter()
            .filter(|(_, r)| r.kind == kind && r.parquet_rows == 0)
            .map(|(reference, r)| (r.loc.n, reference))
            .collect();
        missing.sort();
        for (line, reference) in missing {
            report.finding(
                Loc::new(csv_name, line).to_string(),
                format!("reference {reference} has no row in {parquet_name}"),
            );
        }
    }

    /// A reference both exported (a table row) and failed (a failures.csv row).
    pub(super) fn cross_check_failures(&self, report: &mut VerifyReport) {
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
}
