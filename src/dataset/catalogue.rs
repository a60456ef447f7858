//! What the commits say: which (reference, kind) the dataset has exported, and which references
//! are open follow-ups (the latest failure of a reference no commit exported). Read from the
//! commit records and the `reference` column of the parts they list — never from the archives,
//! so the cost of resuming grows with the commits' tables, not with the archived bytes.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::commit::{self, Commit, CommitError, PartRecord};
use super::{FAILURES_TABLE, Format, reader};
use crate::Kind;
use crate::outcome::{ErrorCode, Stage};
use crate::output::failures::FailureRow;

mod follow_ups;

/// Why the dataset cannot be built on.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// A commit record cannot be listed, read or parsed.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A commit lists a part that is missing or not the size it recorded: the dataset is
    /// damaged and no run builds on it until `verify` has been read and the damage repaired.
    #[error(
        "commit {run} lists {part} ({problem}); the dataset is damaged: run `jumio-export verify` on it, no run builds on a damaged commit"
    )]
    DamagedPart {
        /// The commit.
        run: String,
        /// The part's path.
        part: String,
        /// Missing, or the sizes.
        problem: String,
    },
    /// The sorts that rebuild the open follow-ups failed (their unnamed files in the
    /// dataset's file system), or so did what the rows were handed to.
    #[error("rebuilding the open follow-ups: {0}")]
    Spool(io::Error),
    /// Reading a part failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The part.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A failure row and the run (commit) that recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The row.
    pub row: FailureRow,
    /// The run that recorded it.
    pub run: String,
}

/// Every commit of a dataset, in run order (= by start time, to the millisecond).
#[derive(Debug, Default)]
pub struct Catalogue {
    root: PathBuf,
    commits: Vec<Commit>,
}

impl Catalogue {
    /// Reads every commit under `root` and checks that each part it lists is there with the
    /// size it recorded (hashes are `verify`'s job: reading them is proportional to the data).
    pub fn read(root: &Path) -> Result<Self, CatalogueError> {
        Self::read_except(root, &BTreeSet::new())
    }

    /// [`Catalogue::read`] of only the commits whose run is not in `known`: what was published
    /// since a catalogue of `known` was read (this run's commit, and concurrent runs').
    pub fn read_except(root: &Path, known: &BTreeSet<String>) -> Result<Self, CatalogueError> {
        let mut commits = Vec::new();
        for run in commit::list(root)?
            .into_iter()
            .filter(|r| !known.contains(r))
        {
            let c = Commit::read(&commit::path(root, &run))?;
            for part in &c.parts {
                check_part(root, &c.run, part)?;
            }
            commits.push(c);
        }
        Ok(Catalogue {
            root: root.to_path_buf(),
            commits,
        })
    }

    /// The commits, in run order.
    pub fn commits(&self) -> &[Commit] {
        &self.commits
    }

    /// Calls `f` with the reference and kind of every row of the kind tables of every commit.
    pub fn for_each_exported(
        &self,
        mut f: impl FnMut(&str, Kind) -> io::Result<()>,
    ) -> Result<(), CatalogueError> {
        for c in &self.commits {
            for kind in Kind::ALL {
                for part in preferred_parts(c, kind.table_name()) {
                    self.rows(part, &["reference"], |cells| match &cells[0] {
                        Some(reference) => f(reference, kind),
                        None => Ok(()),
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The latest failure row of every (reference, kind), in the order first seen, over all
    /// commits. The caller removes what some commit exported ([`Catalogue::open_failures`]).
    pub fn latest_failures(&self) -> Result<Vec<Recorded>, CatalogueError> {
        let mut at: HashMap<(String, Kind), usize> = HashMap::new();
        let mut rows: Vec<Recorded> = Vec::new();
        let columns = &crate::output::failures::HEADER[..7];
        for c in &self.commits {
            for part in preferred_parts(c, FAILURES_TABLE) {
                self.rows(part, columns, |cells| {
                    let Some(row) = failure_row(cells) else {
                        return Ok(());
                    };
                    let key = (row.reference.clone(), row.kind);
                    let row = Recorded {
                        row,
                        run: c.run.clone(),
                    };
                    match at.get(&key) {
                        Some(&i) => rows[i] = row,
                        None => {
                            at.insert(key, rows.len());
                            rows.push(row);
                        }
                    }
                    Ok(())
                })?;
            }
        }
        Ok(rows)
    }

    /// The dataset's open follow-ups: the latest failure of every (reference, kind) that no
    /// commit exported, in the order first seen.
    pub fn open_failures(&self) -> Result<Vec<Recorded>, CatalogueError> {
        self.open_failures_seeing(|_, _| Ok(()))
    }

    /// [`Catalogue::open_failures`], handing every exported (reference, kind) to `seen` on the
    /// way: one pass over the commits' reference columns serves both.
    pub fn open_failures_seeing(
        &self,
        mut seen: impl FnMut(&str, Kind) -> io::Result<()>,
    ) -> Result<Vec<Recorded>, CatalogueError> {
        let bit = |kind: Kind| 1u8 << Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        let rows = self.latest_failures()?;
        // Per failed reference, the kinds some commit exported (looked up without allocating).
        let mut exported: HashMap<String, u8> =
            rows.iter().map(|r| (r.row.reference.clone(), 0)).collect();
        self.for_each_exported(|reference, kind| {
            if let Some(kinds) = exported.get_mut(reference) {
                *kinds |= bit(kind);
            }
            seen(reference, kind)
        })?;
        Ok(rows
            .into_iter()
            .filter(|r| exported[&r.row.reference] & bit(r.row.kind) == 0)
            .collect())
    }

    /// The tables of which these commits list at least one part.
    pub fn tables_with_parts(&self) -> BTreeSet<String> {
        self.commits
            .iter()
            .flat_map(|c| c.parts.iter().map(|p| p.table.clone()))
            .collect()
    }

    fn rows(
        &self,
        part: &PartRecord,
        columns: &[&str],
        f: impl FnMut(&[Option<String>]) -> io::Result<()>,
    ) -> Result<u64, CatalogueError> {
        let path = self.root.join(&part.path);
        reader::for_each_row(&path, part.format, columns, f)
            .map_err(|source| CatalogueError::Read { path, source })
    }
}

/// The parts of `table` in one commit, in one format: Parquet when the commit has it (read
/// with a projection), CSV otherwise.
fn preferred_parts<'a>(c: &'a Commit, table: &'a str) -> Vec<&'a PartRecord> {
    let of = |format| {
        c.parts_of(table)
            .filter(|p| p.format == format)
            .collect::<Vec<_>>()
    };
    let parquet = of(Format::Parquet);
    if parquet.is_empty() {
        of(Format::Csv)
    } else {
        parquet
    }
}

fn check_part(root: &Path, run: &str, part: &PartRecord) -> Result<(), CatalogueError> {
    let damaged = |problem: String| CatalogueError::DamagedPart {
        run: run.to_string(),
        part: part.path.clone(),
        problem,
    };
    match std::fs::symlink_metadata(root.join(&part.path)) {
        Ok(m) if !m.is_file() => Err(damaged("not a regular file".into())),
        Ok(m) if m.len() != part.bytes => Err(damaged(format!(
            "{} bytes, the commit recorded {}",
            m.len(),
            part.bytes
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(damaged("missing".into())),
        Err(e) => Err(damaged(e.to_string())),
    }
}

/// A failures-table row as text cells → a [`FailureRow`]; `None` for a row of an unknown kind.
fn failure_row(cells: &[Option<String>]) -> Option<FailureRow> {
    let text = |i: usize| cells[i].clone().unwrap_or_default();
    let kind = text(1).parse::<Kind>().ok()?;
    Some(FailureRow {
        reference: text(0),
        kind,
        stage: text(2).parse::<Stage>().unwrap_or_else(|e| match e {}),
        http_status: cells[3].as_deref().and_then(|s| s.parse().ok()),
        error: text(4).parse::<ErrorCode>().unwrap_or_else(|e| match e {}),
        attempts: cells[5]
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        next_attempt_after: cells[6]
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dataset::commit::{ArchivesRecord, COMMIT_FORMAT};
    use crate::dataset::parts::{PART_BYTES, PartOptions, PartWriter};
    use crate::dataset::{FAILURES_TABLE, RunId};
    use crate::flatten::{self, ArchiveSummary, FailureRecord};
    use crate::output::fsmode::Modes;
    use crate::spill;

    /// Commits one run with `exported` netverify rows and `failed` (reference, error) rows.
    pub(crate) fn commit(
        root: &Path,
        run: &str,
        exported: &[&str],
        failed: &[(&str, &str)],
        csv_only: bool,
    ) {
        let opts = PartOptions {
            root: root.to_path_buf(),
            run: RunId::parse(run).unwrap(),
            csv: true,
            parquet: !csv_only,
            csv_neutralise_formulas: true,
            pii: Default::default(),
            pseudonymiser: None,
            modes: Modes::default(),
            max_rows: 2,
            max_bytes: PART_BYTES,
            skip_empty: BTreeSet::new(),
        };
        let mut table = PartWriter::new(
            "netverify",
            flatten::table_columns(Kind::Netverify),
            opts.clone(),
        );
        for r in exported {
            let summary = ArchiveSummary {
                image_count: 0,
                archive: format!("archives/{r}.zip"),
                archive_sha256: "00".repeat(32),
                run: run.into(),
            };
            table
                .write(&flatten::flatten(
                    Kind::Netverify,
                    r,
                    &serde_json::json!({}),
                    &summary,
                ))
                .unwrap();
        }
        let mut failures = PartWriter::new(FAILURES_TABLE, flatten::failures_columns(), opts);
        for (r, e) in failed {
            let record = FailureRecord {
                reference: r,
                kind: Kind::Netverify,
                stage: "status",
                http_status: None,
                error: e,
                attempts: 10,
                next_attempt_after: Some("2026-12-07T07:45:00Z".into()),
                run,
            };
            failures.write(&flatten::failure_row(&record)).unwrap();
        }
        let mut parts = table.finish().unwrap();
        parts.extend(failures.finish().unwrap());
        Commit {
            format: COMMIT_FORMAT.into(),
            run: run.into(),
            report: serde_json::json!({}),
            parts,
            archives: ArchivesRecord {
                count: 0,
                root_hash: String::new(),
                root_hash_method: String::new(),
            },
            output: Default::default(),
        }
        .write(root, Modes::default())
        .unwrap();
    }

    fn exported(c: &Catalogue) -> Vec<String> {
        let mut out = Vec::new();
        c.for_each_exported(|r, k| {
            out.push(format!("{r}/{k}"));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn exported_references_and_open_follow_ups_come_from_every_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let first = "20261201T000000Z-0001";
        let second = "20261202T000000Z-0002";
        commit(
            root,
            first,
            &["a", "b", "c"],
            &[("p", "PENDING"), ("n", "NETWORK"), ("x", "NOT_FOUND")],
            false,
        );
        // The second run exports `n`, fails `p` again (later row wins), and is CSV only.
        commit(root, second, &["n"], &[("p", "NOT_FOUND")], true);
        let c = Catalogue::read(root).unwrap();
        assert_eq!(c.commits().len(), 2);
        assert_eq!(
            exported(&c),
            ["a/netverify", "b/netverify", "c/netverify", "n/netverify"]
        );
        let latest: Vec<(String, String)> = c
            .latest_failures()
            .unwrap()
            .into_iter()
            .map(|r| (r.row.reference, r.row.error.to_string()))
            .collect();
        assert_eq!(
            latest,
            [
                ("p".into(), "NOT_FOUND".into()),
                ("n".into(), "NETWORK".into()),
                ("x".into(), "NOT_FOUND".into())
            ]
        );
        let open: Vec<(String, String)> = c
            .open_failures()
            .unwrap()
            .into_iter()
            .map(|r| (r.row.reference, r.run))
            .collect();
        assert_eq!(
            open,
            [("p".into(), second.into()), ("x".into(), first.into())],
            "n was exported by a later commit; each row names the run that recorded it"
        );
        let first_open = &c.open_failures().unwrap()[1].row;
        assert_eq!(
            first_open.next_attempt_after.map(|t| t.to_rfc3339()),
            Some("2026-12-07T07:45:00+00:00".into())
        );
    }

    /// (reference, kind, error, run) of each row, sorted: the open follow-ups as a set.
    fn rows_of(rows: Vec<Recorded>) -> Vec<(String, Kind, String, String)> {
        let mut v: Vec<_> = rows
            .into_iter()
            .map(|r| (r.row.reference, r.row.kind, r.row.error.to_string(), r.run))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn open_follow_ups_updated_by_later_commits_equal_reading_every_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (first, middle, last) = (
            "20261201T000000Z-0001",
            "20261201T120000Z-0002",
            "20261202T000000Z-0003",
        );
        commit(
            root,
            first,
            &["a"],
            &[("p", "PENDING"), ("n", "NETWORK"), ("x", "NOT_FOUND")],
            false,
        );
        commit(root, last, &[], &[("p", "NOT_FOUND")], false);
        let start = Catalogue::read(root).unwrap();
        let runs: BTreeSet<String> = start.commits().iter().map(|c| c.run.clone()).collect();
        let open = start.open_failures().unwrap();
        // Published after the start by a run that started between the two: exports `n`, fails
        // `p` (older than `last`'s row, which stays) and a new `z`.
        commit(
            root,
            middle,
            &["n"],
            &[("p", "NETWORK"), ("z", "PENDING")],
            true,
        );
        let since = Catalogue::read_except(root, &runs).unwrap();
        assert_eq!(since.commits().len(), 1);
        let mut incremental = Vec::new();
        let handed = since
            .for_each_open_failure_after(open, root, |row, run| {
                incremental.push(Recorded {
                    row: row.clone(),
                    run: run.to_string(),
                });
                Ok(())
            })
            .unwrap();
        assert_eq!(handed, 3);
        let incremental = rows_of(incremental);
        let full = rows_of(Catalogue::read(root).unwrap().open_failures().unwrap());
        assert_eq!(incremental, full);
        assert_eq!(
            incremental,
            [
                ("p".into(), Kind::Netverify, "NOT_FOUND".into(), last.into()),
                (
                    "x".into(),
                    Kind::Netverify,
                    "NOT_FOUND".into(),
                    first.into()
                ),
                ("z".into(), Kind::Netverify, "PENDING".into(), middle.into()),
            ]
        );
    }

    #[test]
    fn open_follow_ups_rebuilt_through_spilled_sorts_equal_reading_every_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let runs = [
            "20261201T000000Z-0001",
            "20261202T000000Z-0002",
            "20261203T000000Z-0003",
        ];
        let errors = ["PENDING", "NOT_FOUND", "NETWORK"];
        let names: Vec<String> = (0..240)
            .map(|i| format!("ref-{:03}", (i * 7) % 240))
            .collect();
        // Run k exports the references i ≡ k + 1 (mod 5) and fails those i ≡ k (mod 2) that no
        // run up to it exported (a run never fails what the commits it started from exported):
        // rows that later runs replace, close, or leave open, in no sorted order.
        for (k, run) in runs.iter().enumerate() {
            let exported: Vec<&str> = (0..240)
                .filter(|i| i % 5 == k + 1)
                .map(|i| names[i].as_str())
                .collect();
            let failed: Vec<(&str, &str)> = (0..240)
                .filter(|i| (1..=k + 1).all(|j| i % 5 != j) && i % 2 == k % 2)
                .map(|i| (names[i].as_str(), errors[(i + k) % 3]))
                .collect();
            commit(root, run, &exported, &failed, k == 1);
        }
        let all = Catalogue::read(root).unwrap();
        let start_runs: BTreeSet<String> = [runs[0].to_string()].into();
        let later: BTreeSet<String> = runs[1..].iter().map(|r| r.to_string()).collect();
        let start = Catalogue::read_except(root, &later).unwrap();
        assert_eq!(start.commits().len(), 1);
        let open = start.open_failures().unwrap();
        let since = Catalogue::read_except(root, &start_runs).unwrap();
        for budget in [256, spill::DEFAULT_BUDGET] {
            let mut rebuilt = Vec::new();
            since
                .open_failures_after_within(open.clone(), root, budget, |row, run| {
                    rebuilt.push(Recorded {
                        row: row.clone(),
                        run: run.to_string(),
                    });
                    Ok(())
                })
                .unwrap();
            let references: Vec<&str> = rebuilt.iter().map(|r| r.row.reference.as_str()).collect();
            assert!(references.is_sorted(), "in reference order");
            let full = rows_of(all.open_failures().unwrap());
            assert!(full.len() > 50, "{} open", full.len());
            assert_eq!(rows_of(rebuilt), full, "budget {budget}");
        }
    }

    #[test]
    fn a_commit_whose_part_is_missing_or_resized_is_not_built_on() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let run = "20261201T000000Z-0001";
        commit(root, run, &["a"], &[], false);
        let part = root.join(format!("tables/netverify/{run}-0.parquet"));
        let bytes = std::fs::read(&part).unwrap();
        std::fs::write(&part, &bytes[..bytes.len() - 1]).unwrap();
        let e = Catalogue::read(root).unwrap_err();
        assert!(
            e.to_string().contains(run) && e.to_string().contains("bytes"),
            "{e}"
        );
        std::fs::remove_file(&part).unwrap();
        let e = Catalogue::read(root).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(e.to_string().contains("verify"), "{e}");
    }
}
