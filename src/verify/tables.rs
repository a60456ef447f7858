//! The rows of every part: kind tables (one [`RowInfo`] per (reference, kind), duplicates across
//! all commits found, the Parquet twin matched with the CSV row by row), `files` (checksums
//! per reference for the archives), `failures` (for `failures.csv`); every row's `run` is the
//! commit that lists its part, and every part holds the rows its commit recorded. Earlier
//! commits (`--since`) give only their references and failure rows.

use std::path::Path;
use std::sync::Arc;

use super::commits::Slot;
use super::content::{TableFile, line_up};
use super::failures::normalise_time;
use super::files::FileSetSum;
use super::scan::{self, Cells};
use super::{KindPair, Loc, RowInfo, Verifier, VerifyReport, parse_sha256};
use crate::Kind;
use crate::dataset::commit::{CsvFormulas, PartRecord};
use crate::dataset::{FAILURES_TABLE, Format};
use crate::flatten::{self, Column};
use crate::output::archive::ArchiveMode;
use crate::output::archive::layout::relative_path_in;
use crate::output::report::RootHash;

/// The bookkeeping cells of a kind-table row, as text (empty when null).
struct KeyCells {
    reference: String,
    archive: String,
    sha256: String,
    image_count: String,
    run: String,
}

impl KeyCells {
    fn read(file: &TableFile, cells: &dyn Cells) -> Self {
        let text = |name: &str| cells.text(file.key_cell(name)).unwrap_or_default();
        KeyCells {
            reference: text("reference"),
            archive: text("archive"),
            sha256: text("archive_sha256"),
            image_count: text("image_count"),
            run: text("run"),
        }
    }

    /// The `archive` column must be `archives/{reference}.zip` (`.zip.age` in an age commit).
    fn check_archive(&self, mode: ArchiveMode, loc: &Loc, report: &mut VerifyReport) {
        let expected = relative_path_in(&self.reference, mode);
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

    /// A primary row's archive column, hash and image count: a finding for each that is wrong;
    /// the hash and the count when they parse.
    fn check(
        &self,
        mode: ArchiveMode,
        loc: &Loc,
        report: &mut VerifyReport,
    ) -> (Option<[u8; 32]>, Option<i64>) {
        let reference = &self.reference;
        self.check_archive(mode, loc, report);
        let sha256 = parse_sha256(&self.sha256);
        if sha256.is_none() {
            report.finding(
                loc.to_string(),
                format!(
                    "reference {reference}: archive_sha256 {:?} is not a sha256",
                    self.sha256
                ),
            );
        }
        let image_count = self.image_count.parse().ok();
        if image_count.is_none() {
            report.finding(
                loc.to_string(),
                format!(
                    "reference {reference}: image_count {:?} is not an integer",
                    self.image_count
                ),
            );
        }
        (sha256, image_count)
    }

    /// A twin row's hash, image count and archive column against its primary row's.
    fn compare(&self, row: &RowInfo, loc: &Loc, report: &mut VerifyReport) {
        let reference = &self.reference;
        if parse_sha256(&self.sha256) != row.sha256 {
            report.finding(
                loc.to_string(),
                format!(
                    "reference {reference}: archive_sha256 {} differs from {}'s",
                    self.sha256, row.loc
                ),
            );
        }
        if self.image_count.parse().ok() != row.image_count {
            report.finding(
                loc.to_string(),
                format!(
                    "reference {reference}: image_count {} differs from {}'s",
                    self.image_count, row.loc
                ),
            );
        }
        self.check_archive(row.mode, loc, report);
    }
}

/// Every row of a kind-table part: its key cells handed to `on_row`, its `run` column and row
/// count checked against the commit that lists it. Returns the number of rows.
fn scan_kind_part(
    file: &TableFile,
    part: &PartRecord,
    run: &str,
    report: &mut VerifyReport,
    mut on_row: impl FnMut(&mut VerifyReport, &Loc, &dyn Cells, KeyCells),
) -> u64 {
    let (mut count, mut run_column) = (0u64, RunColumn::default());
    scan::scan_cells(
        &file.path,
        &file.name,
        &file.request,
        report,
        |report, loc, cells| {
            count += 1;
            let key = KeyCells::read(file, cells);
            run_column.check(&key.run, run, loc);
            on_row(report, loc, cells, key);
        },
    );
    run_column.report(run, report);
    check_rows(part, count, report);
    count
}

/// Rows whose `run` is not the commit's: counted, reported once per part.
#[derive(Default)]
struct RunColumn {
    wrong: u64,
    first: Option<(Loc, String)>,
}

impl RunColumn {
    fn check(&mut self, found: &str, run: &str, loc: &Loc) {
        if found != run {
            self.wrong += 1;
            if self.first.is_none() {
                self.first = Some((loc.clone(), found.to_owned()));
            }
        }
    }

    fn report(self, run: &str, report: &mut VerifyReport) {
        if let Some((loc, found)) = self.first {
            report.finding(
                loc.to_string(),
                format!(
                    "run is {found:?}, not {run}, the commit that lists the part ({} row{} of the part)",
                    self.wrong,
                    if self.wrong == 1 { "" } else { "s" }
                ),
            );
        }
    }
}

/// The part holds the rows its commit recorded.
fn check_rows(part: &PartRecord, rows: u64, report: &mut VerifyReport) {
    if rows != part.rows {
        report.finding(
            &part.path,
            format!("holds {rows} rows, its commit recorded {}", part.rows),
        );
    }
}

/// Reads a part's header and reports every column that differs from `schema`; true when the
/// `needed` columns are there to be read.
fn columns_ok(
    root: &Path,
    name: &Arc<str>,
    schema: &'static [Column],
    needed: &[&str],
    report: &mut VerifyReport,
) -> bool {
    let Some(header) = scan::header(&root.join(&**name), name, report) else {
        return false;
    };
    line_up(schema, &header, name, report);
    needed.iter().all(|c| header.position(c).is_some())
}

const FILES_COLUMNS: [&str; 8] = [
    "reference",
    "kind",
    "entry",
    "classifier",
    "content_type",
    "bytes",
    "sha256",
    "run",
];

/// A listed part and the part opened for reading.
type OpenPart<'s> = (&'s PartRecord, TableFile);

/// `failures.csv`'s header is the failures table's columns.
const FAILURES_COLUMNS: [&str; 8] = crate::output::failures::HEADER;

impl Verifier<'_> {
    /// One `{run}-{n}` of a kind table: the primary part's rows become [`RowInfo`]s (feeding
    /// the commit's root hash), the twin's are matched with them. False when neither part
    /// could be read (the commit's root hash cannot be recomputed).
    pub(super) fn read_kind_pair(
        &mut self,
        commit: u32,
        kind: Kind,
        slot: &Slot,
        root: &mut RootHash,
        kind_rows: &mut u64,
        report: &mut VerifyReport,
    ) -> bool {
        let output = self.commits[commit as usize]
            .commit
            .as_ref()
            .map(|c| c.output.clone())
            .unwrap_or_default();
        let neutralised = output.csv_formulas == CsvFormulas::Neutralised;
        let pii = output.pii;
        let mode = output.archive_mode.unwrap_or_default();
        let Some(((primary_rec, primary), twin)) =
            self.open_kind_pair(kind, slot, (neutralised, pii), report)
        else {
            return false;
        };
        let pair = self.pairs.len() as u32;
        let run = self.commits[commit as usize].run.clone();
        let mut stored = 0u64;
        let mut root_error = None;
        let count = scan_kind_part(
            &primary,
            primary_rec,
            &run,
            report,
            |report, loc, cells, key| {
                if let Err(e) = root.add(&key.reference, &key.sha256) {
                    root_error.get_or_insert(e);
                }
                if !self.first_export(commit, pair, kind, &key.reference, loc, report) {
                    return;
                }
                let (sha256, image_count) = key.check(mode, loc, report);
                stored += 1;
                let row = RowInfo {
                    commit,
                    pair,
                    loc: loc.clone(),
                    sha256,
                    image_count,
                    digest: primary.digest(cells),
                    twin_digest: None,
                    twin_rows: 0,
                    mode,
                };
                self.rows.insert((key.reference, kind), row);
            },
        );
        report.rows += count;
        *kind_rows += count;
        if let Some(e) = root_error {
            report.finding(
                &self.commits[commit as usize].subject,
                format!("the root hash cannot be recomputed: {e}"),
            );
        }
        if let Some((twin_rec, twin)) = &twin {
            self.read_twin(pair, &primary, twin, twin_rec, &run, stored, report);
        }
        let twin = twin.map(|(_, twin)| twin);
        self.pairs.push(KindPair { primary, twin });
        true
    }

    /// The parts of a kind-table `{run}-{n}`, opened: the primary part's record and file, and
    /// the twin's when it is listed and can be read. None when the primary cannot be read.
    fn open_kind_pair<'s>(
        &self,
        kind: Kind,
        slot: &'s Slot,
        (neutralised, pii): (bool, crate::flatten::pii::Pii),
        report: &mut VerifyReport,
    ) -> Option<(OpenPart<'s>, Option<OpenPart<'s>>)> {
        let (primary_rec, twin_rec) = slot.primary_and_twin()?;
        let name: Arc<str> = primary_rec.path.as_str().into();
        let open = |name: &Arc<str>, format, report: &mut VerifyReport| {
            let profile = (pii, self.pseudonymiser);
            TableFile::open(kind, self.dir, name, format, neutralised, profile, report)
        };
        let primary = open(&name, primary_rec.format, report)?;
        let twin = twin_rec.and_then(|t| {
            let name: Arc<str> = t.path.as_str().into();
            Some((t, open(&name, t.format, report)?))
        });
        Some(((primary_rec, primary), twin))
    }

    /// Whether a primary row is the first of its (reference, kind) across all commits: false,
    /// with a finding, for an empty reference, and for one exported before (a duplicate, noted
    /// for the twin and the files rows).
    fn first_export(
        &mut self,
        commit: u32,
        pair: u32,
        kind: Kind,
        reference: &str,
        loc: &Loc,
        report: &mut VerifyReport,
    ) -> bool {
        if reference.is_empty() {
            report.finding(loc.to_string(), "empty reference");
            return false;
        }
        let Some(first) = self.exported_at(reference, kind) else {
            return true;
        };
        report.finding(
            loc.to_string(),
            format!("reference {reference} ({kind}) duplicated: also exported at {first}"),
        );
        self.dup_rows.insert((pair, reference.to_owned()));
        self.dup_commits
            .entry(reference.to_owned())
            .or_default()
            .push(commit);
        false
    }

    /// Where (reference, kind) was exported already, for a message: a checked commit's row, or
    /// an earlier commit.
    fn exported_at(&self, reference: &str, kind: Kind) -> Option<String> {
        let k = (reference.to_owned(), kind);
        match (self.rows.get(&k), self.earlier.get(&k)) {
            (Some(first), _) => Some(format!(
                "{} (commit {})",
                first.loc, self.commits[first.commit as usize].run
            )),
            (None, Some(&c)) => Some(format!("commit {}", self.commits[c as usize].run)),
            (None, None) => None,
        }
    }

    /// The Parquet twin of a CSV part: the same references, each once, with the same archive,
    /// hash, image count and run; its other cells are compared with the archive like the CSV's.
    #[allow(clippy::too_many_arguments)]
    fn read_twin(
        &mut self,
        pair: u32,
        primary: &TableFile,
        twin: &TableFile,
        twin_rec: &PartRecord,
        run: &str,
        stored: u64,
        report: &mut VerifyReport,
    ) {
        let mut matched = 0u64;
        scan_kind_part(twin, twin_rec, run, report, |report, loc, cells, key| {
            let Some(row) = self.twin_match(pair, primary, twin, &key.reference, loc, report)
            else {
                return;
            };
            matched += 1;
            row.twin_digest = Some(twin.digest(cells));
            key.compare(row, loc, report);
        });
        if matched != stored {
            self.report_missing_twin_rows(pair, primary, twin, report);
        }
    }

    /// The primary row a twin row matches, when it is the first twin row of its reference;
    /// otherwise a finding (none for a reference already reported duplicated).
    fn twin_match(
        &mut self,
        pair: u32,
        primary: &TableFile,
        twin: &TableFile,
        reference: &str,
        loc: &Loc,
        report: &mut VerifyReport,
    ) -> Option<&mut RowInfo> {
        let is_dup = self.dup_rows.contains(&(pair, reference.to_owned()));
        let Some(row) = self
            .rows
            .get_mut(&(reference.to_owned(), twin.kind))
            .filter(|r| r.pair == pair)
        else {
            if !is_dup {
                report.finding(
                    loc.to_string(),
                    format!("reference {reference} has no row in {}", primary.name),
                );
            }
            return None;
        };
        row.twin_rows += 1;
        if row.twin_rows > 1 {
            if !is_dup {
                report.finding(
                    loc.to_string(),
                    format!("reference {reference} duplicated in {}", twin.name),
                );
            }
            return None;
        }
        Some(row)
    }

    /// The primary rows of `pair` that no twin row matched, in the primary part's order.
    fn report_missing_twin_rows(
        &self,
        pair: u32,
        primary: &TableFile,
        twin: &TableFile,
        report: &mut VerifyReport,
    ) {
        let mut missing: Vec<(u64, &String)> = self
            .rows
            .iter()
            .filter(|(_, r)| r.pair == pair && r.twin_rows == 0)
            .map(|((reference, _), r)| (r.loc.n, reference))
            .collect();
        missing.sort();
        for (n, reference) in missing {
            report.finding(
                Loc::new(&primary.name, n).to_string(),
                format!("reference {reference} has no row in {}", twin.name),
            );
        }
    }

    /// One `{run}-{n}` of the `files` table: the primary part's rows become checksums per
    /// reference (compared with the archives later); the twin must hold the same rows.
    pub(super) fn read_files_pair(&mut self, commit: u32, slot: &Slot, report: &mut VerifyReport) {
        if let Some((primary, _)) = slot.primary_and_twin() {
            let (dir, name): (&Path, Arc<str>) = (self.dir, primary.path.as_str().into());
            self.add_files_part(commit, &name, dir);
        }
        let columns = (flatten::files_columns(), &FILES_COLUMNS[..]);
        let as_text = |values: &[Option<String>]| -> Vec<String> {
            values
                .iter()
                .map(|v| v.clone().unwrap_or_default())
                .collect()
        };
        self.read_simple_pair(commit, slot, columns, report, as_text, |v, report, t| {
            report.files += 1;
            v.files
                .entry((commit, t[0].clone()))
                .or_default()
                .add(&[&t[1], &t[2], &t[5], &t[6]]);
        });
    }

    /// One `{run}-{n}` of the `failures` table: the primary part's rows go to the ledger of
    /// `failures.csv`; the twin must hold the same rows.
    pub(super) fn read_failures_pair(
        &mut self,
        commit: u32,
        slot: &Slot,
        report: &mut VerifyReport,
    ) {
        let columns = (flatten::failures_columns(), &FAILURES_COLUMNS[..]);
        self.read_simple_pair(
            commit,
            slot,
            columns,
            report,
            failure_fields,
            |v, _, fields| {
                v.ledger.record(commit, fields);
            },
        );
    }

    /// One `{run}-{n}` of a table whose rows are compared whole (`files`, `failures`): each
    /// part's columns against the schema, its rows made comparable by `fields`, its `run` column
    /// and row count against the commit, a checksum per part (the twin must hold the same rows),
    /// and the primary part's rows handed to `primary_row`.
    fn read_simple_pair(
        &mut self,
        commit: u32,
        slot: &Slot,
        (schema, names): (&'static [Column], &[&str]),
        report: &mut VerifyReport,
        fields: impl Fn(&[Option<String>]) -> Vec<String>,
        mut primary_row: impl FnMut(&mut Self, &mut VerifyReport, &[String]),
    ) {
        let Some((primary, twin)) = slot.primary_and_twin() else {
            return;
        };
        let run = self.commits[commit as usize].run.clone();
        let mut sums = Vec::new();
        for (part, is_primary) in [(Some(primary), true), (twin, false)] {
            let Some(part) = part else { continue };
            let name: Arc<str> = part.path.as_str().into();
            if !columns_ok(self.dir, &name, schema, names, report) {
                continue;
            }
            let path = self.dir.join(&part.path);
            let (mut set, mut count, mut run_column) =
                (FileSetSum::default(), 0u64, RunColumn::default());
            scan::scan(&path, &name, names, report, |report, loc, values| {
                count += 1;
                let row = fields(&values);
                let all: Vec<&str> = row.iter().map(String::as_str).collect();
                set.add(&all);
                run_column.check(&row[names.len() - 1], &run, loc);
                if is_primary {
                    primary_row(self, report, &row);
                }
            });
            run_column.report(&run, report);
            check_rows(part, count, report);
            sums.push((name, set));
        }
        twin_differs(&sums, report);
    }

    /// An earlier commit (`--since`): the references of its kind-table parts and its failure
    /// rows, each from one format (Parquet when listed, read with a projection).
    pub(super) fn read_earlier(&mut self, i: usize, report: &mut VerifyReport) {
        let Some(c) = self.commits[i].commit.clone() else {
            return;
        };
        let commit = i as u32;
        for table in crate::dataset::TABLES {
            let kind = Kind::ALL.into_iter().find(|k| k.table_name() == table);
            if kind.is_none() && table != FAILURES_TABLE {
                continue;
            }
            let has_parquet = c.parts_of(table).any(|p| p.format == Format::Parquet);
            let format = if has_parquet {
                Format::Parquet
            } else {
                Format::Csv
            };
            for part in c.parts_of(table).filter(|p| p.format == format) {
                let path = self.dir.join(&part.path);
                let name: Arc<str> = part.path.as_str().into();
                if !matches!(std::fs::symlink_metadata(&path), Ok(m) if m.is_file()) {
                    report.finding(
                        &part.path,
                        format!(
                            "missing or not a regular file (listed by {}); later commits cannot be checked against it",
                            self.commits[i].subject
                        ),
                    );
                    continue;
                }
                match kind {
                    Some(kind) => {
                        let earlier = &mut self.earlier;
                        scan::scan(&path, &name, &["reference"], report, |_, _, values| {
                            if let Some(reference) = &values[0] {
                                earlier.entry((reference.clone(), kind)).or_insert(commit);
                            }
                        });
                    }
                    None => {
                        let ledger = &mut self.ledger;
                        scan::scan(&path, &name, &FAILURES_COLUMNS, report, |_, _, values| {
                            ledger.record(commit, &failure_fields(&values));
                        });
                    }
                }
            }
        }
    }
}

/// A failures row's cells as comparable text: nulls empty, `next_attempt_after` as epoch
/// milliseconds whatever its format (RFC 3339 text in CSV, a timestamp in Parquet).
pub(super) fn failure_fields(values: &[Option<String>]) -> Vec<String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let text = v.clone().unwrap_or_default();
            if i == 6 { normalise_time(&text) } else { text }
        })
        .collect()
}

/// The second of `sums` (the twin) must equal the first (the primary part).
fn twin_differs(sums: &[(Arc<str>, FileSetSum)], report: &mut VerifyReport) {
    if let [(primary, a), (twin, b)] = sums
        && a != b
    {
        report.finding(
            &**twin,
            format!(
                "does not hold the same rows as {primary} ({} rows here, {} there)",
                b.rows, a.rows
            ),
        );
    }
}
