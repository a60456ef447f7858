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
use crate::dataset::commit::PartRecord;
use crate::dataset::{FAILURES_TABLE, Format};
use crate::flatten::{self, Column};
use crate::output::archive::relative_path;
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

    /// The `archive` column must be `archives/{reference}.zip`.
    fn check_archive(&self, loc: &Loc, report: &mut VerifyReport) {
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

const FAILURES_COLUMNS: [&str; 8] = [
    "reference",
    "kind",
    "stage",
    "http_status",
    "error",
    "attempts",
    "next_attempt_after",
    "run",
];

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
        let Some((primary_rec, twin_rec)) = slot.primary_and_twin() else {
            return false;
        };
        let name: Arc<str> = primary_rec.path.as_str().into();
        let Some(primary) = TableFile::open(kind, self.dir, &name, primary_rec.format, report)
        else {
            return false;
        };
        let twin = twin_rec.and_then(|t| {
            let name: Arc<str> = t.path.as_str().into();
            TableFile::open(kind, self.dir, &name, t.format, report)
        });
        let pair = self.pairs.len() as u32;
        let run = self.commits[commit as usize].run.clone();
        let Verifier {
            rows,
            earlier,
            dup_rows,
            dup_commits,
            commits,
            ..
        } = self;
        let (mut count, mut stored, mut run_column) = (0u64, 0u64, RunColumn::default());
        let mut root_error = None;
        scan::scan_cells(
            &primary.path,
            &primary.name,
            &primary.request,
            report,
            |report, loc, cells| {
                count += 1;
                let key = KeyCells::read(&primary, cells);
                if let Err(e) = root.add(&key.reference, &key.sha256) {
                    root_error.get_or_insert(e);
                }
                run_column.check(&key.run, &run, loc);
                let reference = &key.reference;
                if reference.is_empty() {
                    report.finding(loc.to_string(), "empty reference");
                    return;
                }
                let k = (reference.clone(), kind);
                let first = match (rows.get(&k), earlier.get(&k)) {
                    (Some(first), _) => Some(format!(
                        "{} (commit {})",
                        first.loc, commits[first.commit as usize].run
                    )),
                    (None, Some(&c)) => Some(format!("commit {}", commits[c as usize].run)),
                    (None, None) => None,
                };
                if let Some(first) = first {
                    report.finding(
                        loc.to_string(),
                        format!(
                            "reference {reference} ({kind}) duplicated: also exported at {first}"
                        ),
                    );
                    dup_rows.insert((pair, reference.clone()));
                    dup_commits
                        .entry(reference.clone())
                        .or_default()
                        .push(commit);
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
                stored += 1;
                rows.insert(
                    k,
                    RowInfo {
                        commit,
                        pair,
                        loc: loc.clone(),
                        sha256,
                        image_count,
                        digest: primary.digest(cells),
                        twin_digest: None,
                        twin_rows: 0,
                    },
                );
            },
        );
        run_column.report(&run, report);
        check_rows(primary_rec, count, report);
        report.rows += count;
        *kind_rows += count;
        if let Some(e) = root_error {
            report.finding(
                &self.commits[commit as usize].subject,
                format!("the root hash cannot be recomputed: {e}"),
            );
        }
        if let (Some(twin), Some(twin_rec)) = (&twin, twin_rec) {
            self.read_twin(pair, kind, &primary, twin, twin_rec, &run, stored, report);
        }
        self.pairs.push(KindPair { primary, twin });
        true
    }

    /// The Parquet twin of a CSV part: the same references, each once, with the same archive,
    /// hash, image count and run; its other cells are compared with the archive like the CSV's.
    #[allow(clippy::too_many_arguments)]
    fn read_twin(
        &mut self,
        pair: u32,
        kind: Kind,
        primary: &TableFile,
        twin: &TableFile,
        twin_rec: &PartRecord,
        run: &str,
        stored: u64,
        report: &mut VerifyReport,
    ) {
        let rows = &mut self.rows;
        let dup_rows = &self.dup_rows;
        let (mut count, mut matched, mut run_column) = (0u64, 0u64, RunColumn::default());
        scan::scan_cells(
            &twin.path,
            &twin.name,
            &twin.request,
            report,
            |report, loc, cells| {
                count += 1;
                let key = KeyCells::read(twin, cells);
                run_column.check(&key.run, run, loc);
                let reference = &key.reference;
                let is_dup = dup_rows.contains(&(pair, reference.clone()));
                let Some(row) = rows
                    .get_mut(&(reference.clone(), kind))
                    .filter(|r| r.pair == pair)
                else {
                    if !is_dup {
                        report.finding(
                            loc.to_string(),
                            format!("reference {reference} has no row in {}", primary.name),
                        );
                    }
                    return;
                };
                row.twin_rows += 1;
                if row.twin_rows > 1 {
                    if !is_dup {
                        report.finding(
                            loc.to_string(),
                            format!("reference {reference} duplicated in {}", twin.name),
                        );
                    }
                    return;
                }
                matched += 1;
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
        run_column.report(run, report);
        check_rows(twin_rec, count, report);
        if matched != stored {
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
    }

    /// One `{run}-{n}` of the `files` table: the primary part's rows become checksums per
    /// reference (compared with the archives later); the twin must hold the same rows.
    pub(super) fn read_files_pair(&mut self, commit: u32, slot: &Slot, report: &mut VerifyReport) {
        let Some((primary, twin)) = slot.primary_and_twin() else {
            return;
        };
        let run = self.commits[commit as usize].run.clone();
        let mut sums = Vec::new();
        for (part, is_primary) in [(Some(primary), true), (twin, false)] {
            let Some(part) = part else { continue };
            let name: Arc<str> = part.path.as_str().into();
            if !columns_ok(
                self.dir,
                &name,
                flatten::files_columns(),
                &FILES_COLUMNS,
                report,
            ) {
                continue;
            }
            if is_primary {
                let dir = self.dir;
                self.add_files_part(commit, &name, dir);
            }
            let files = &mut self.files;
            let (mut set, mut count, mut run_column) =
                (FileSetSum::default(), 0u64, RunColumn::default());
            scan::scan(
                &self.dir.join(&part.path),
                &name,
                &FILES_COLUMNS,
                report,
                |report, loc, values| {
                    count += 1;
                    let t = |i: usize| values[i].as_deref().unwrap_or("");
                    let all: Vec<&str> = (0..FILES_COLUMNS.len()).map(t).collect();
                    set.add(&all);
                    run_column.check(t(7), &run, loc);
                    if is_primary {
                        report.files += 1;
                        files.entry((commit, t(0).to_owned())).or_default().add(&[
                            t(1),
                            t(2),
                            t(5),
                            t(6),
                        ]);
                    }
                },
            );
            run_column.report(&run, report);
            check_rows(part, count, report);
            sums.push((name, set));
        }
        twin_differs(&sums, report);
    }

    /// One `{run}-{n}` of the `failures` table: the primary part's rows go to the ledger of
    /// `failures.csv`; the twin must hold the same rows.
    pub(super) fn read_failures_pair(
        &mut self,
        commit: u32,
        slot: &Slot,
        report: &mut VerifyReport,
    ) {
        let Some((primary, twin)) = slot.primary_and_twin() else {
            return;
        };
        let run = self.commits[commit as usize].run.clone();
        let mut sums = Vec::new();
        for (part, is_primary) in [(Some(primary), true), (twin, false)] {
            let Some(part) = part else { continue };
            let name: Arc<str> = part.path.as_str().into();
            if !columns_ok(
                self.dir,
                &name,
                flatten::failures_columns(),
                &FAILURES_COLUMNS,
                report,
            ) {
                continue;
            }
            let ledger = &mut self.ledger;
            let (mut set, mut count, mut run_column) =
                (FileSetSum::default(), 0u64, RunColumn::default());
            scan::scan(
                &self.dir.join(&part.path),
                &name,
                &FAILURES_COLUMNS,
                report,
                |_, loc, values| {
                    count += 1;
                    let fields = failure_fields(&values);
                    let all: Vec<&str> = fields.iter().map(String::as_str).collect();
                    set.add(&all);
                    run_column.check(&fields[7], &run, loc);
                    if is_primary {
                        ledger.record(commit, &fields);
                    }
                },
            );
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
