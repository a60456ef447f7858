//! The sink: one thread, the only owner of the tables, `files`, `failures.csv` and the root hash.
//! It turns each [`Done`] into rows in arrival order and, when the senders are gone, closes every
//! writer (so each Parquet file has its footer) before the root hash is finished. A write that
//! fails stops the run: nothing fetched afterwards could be recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::RunError;
use super::location::OutputLocation;
use super::shutdown::{Shutdown, StopReason};
use super::task::Done;
use crate::Kind;
use crate::dataset::commit::PartRecord;
use crate::dataset::parts::{PartOptions, PartWriter};
use crate::dataset::{FAILURES_TABLE, FILES_TABLE};
use crate::flatten::{self, ArchiveSummary, FailureRecord, FileRecord};
use crate::output::archive::{self, ArchivedFile, WrittenArchive};
use crate::output::failures::FailureRow;
use crate::output::report::RootHash;

/// What the sink wrote, for the commit, the report and the summary.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Written {
    /// Exported by this run.
    pub exported: u64,
    /// Taken over from an earlier run's archive (listed by this commit, not fetched).
    pub already: u64,
    /// Failure rows.
    pub failed: u64,
    /// Not reached.
    pub not_started: u64,
    /// Left to another run that owns their archive.
    pub other_run: u64,
    /// Failures by error code.
    pub by_error: BTreeMap<String, u64>,
    /// Archives this commit lists.
    pub archives: u64,
    /// The root hash over them.
    pub root_hash: String,
    /// Bytes of archives fetched now and of the parts.
    pub bytes_written: u64,
    /// Every part written, in order.
    pub parts: Vec<PartRecord>,
    /// Whether the CSV parts neutralise formula cells (recorded in the commit for `verify`).
    pub csv_neutralise_formulas: bool,
    /// Documented dates, timestamps and booleans that did not parse as their type, per
    /// `{table}.{column}` (NULL in Parquet, kept in `unmapped_json`).
    pub unparsed_values: BTreeMap<String, u64>,
    /// The PII profile of the transaction tables (recorded in the commit).
    pub pii: flatten::pii::Pii,
    /// How the archives are protected (recorded in the commit).
    pub archive_mode: archive::ArchiveMode,
}

/// The open writers: one part writer per table.
pub struct Sink {
    run: String,
    tables: BTreeMap<Kind, PartWriter>,
    files: PartWriter,
    failures: PartWriter,
    root: RootHash,
    written: Written,
    pii: flatten::pii::Pii,
    pseudonymiser: Option<flatten::pii::Pseudonymiser>,
}

fn output_err(what: &str, e: &dyn std::fmt::Display) -> RunError {
    RunError::Output {
        what: what.to_string(),
        message: e.to_string(),
    }
}

impl Sink {
    /// The run's part writers (nothing is created before the first row or the finish).
    pub fn open(location: &OutputLocation, opts: PartOptions) -> Self {
        let tables = Kind::ALL
            .into_iter()
            .map(|kind| {
                let w = PartWriter::new(
                    kind.table_name(),
                    flatten::pii::table_columns_for(kind, opts.pii),
                    opts.clone(),
                );
                (kind, w)
            })
            .collect();
        Sink {
            run: location.run().to_string(),
            tables,
            files: PartWriter::new(FILES_TABLE, flatten::files_columns(), opts.clone()),
            failures: PartWriter::new(FAILURES_TABLE, flatten::failures_columns(), opts.clone()),
            root: location.root_hash(),
            written: Written {
                csv_neutralise_formulas: opts.csv_neutralise_formulas,
                pii: opts.pii,
                ..Written::default()
            },
            pii: opts.pii,
            pseudonymiser: opts.pseudonymiser.clone(),
        }
    }

    /// Runs the sink on its own thread. If a write fails the run is stopped as fatal.
    pub fn spawn(
        location: Arc<OutputLocation>,
        csv: bool,
        parquet: bool,
        csv_neutralise_formulas: bool,
        pii: (flatten::pii::Pii, Option<flatten::pii::Pseudonymiser>),
        has_parts: BTreeSet<String>,
        shutdown: Shutdown,
    ) -> (
        std::thread::JoinHandle<Result<Written, RunError>>,
        mpsc::Sender<Done>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Done>(256);
        let handle = std::thread::spawn(move || {
            let opts = PartOptions {
                skip_empty: has_parts,
                csv_neutralise_formulas,
                pii: pii.0,
                pseudonymiser: pii.1,
                ..location.part_options(csv, parquet)
            };
            let mut sink = Sink::open(&location, opts);
            let mut result = Ok(());
            while let Some(done) = rx.blocking_recv() {
                result = sink.accept(done);
                if result.is_err() {
                    break;
                }
            }
            let result = result.and_then(|()| sink.finish());
            if let Err(e) = &result {
                shutdown.abort(StopReason::Fatal(e.to_string()));
            }
            result
        });
        (handle, tx)
    }

    /// Records one reference's outcome.
    pub fn accept(&mut self, done: Done) -> Result<(), RunError> {
        match done {
            Done::Exported {
                reference,
                kind,
                data,
                row,
                archive,
                files,
                fresh,
            } => self.exported(&reference, kind, (&data, row), archive, &files, fresh),
            Done::Failed(row) => self.failed(&row),
            Done::Carried(rows) => {
                // Counted as not exported by this run; each row stays the commit's that recorded
                // it, so failures.csv keeps naming the run that last tried.
                for row in rows {
                    *self
                        .written
                        .by_error
                        .entry(row.error.to_string())
                        .or_default() += 1;
                    self.written.failed += 1;
                }
                Ok(())
            }
            Done::NotStarted => {
                self.written.not_started += 1;
                Ok(())
            }
            Done::OtherRun => {
                self.written.other_run += 1;
                Ok(())
            }
        }
    }

    fn exported(
        &mut self,
        reference: &str,
        kind: Kind,
        (data, profiled): (&serde_json::Value, Option<Vec<flatten::Cell>>),
        archive: Option<WrittenArchive>,
        archived: &[ArchivedFile],
        fresh: bool,
    ) -> Result<(), RunError> {
        let summary = ArchiveSummary {
            image_count: archive::image_count(archived),
            archive: archive
                .as_ref()
                .map(|a| a.relative.clone())
                .unwrap_or_default(),
            archive_sha256: archive
                .as_ref()
                .map(|a| a.sha256.clone())
                .unwrap_or_default(),
            run: self.run.clone(),
        };
        let row = match profiled {
            // An age archive taken over: its row as the run that wrote it profiled it (the
            // takeover record), completed with this run's bookkeeping columns.
            Some(mut cells) => {
                cells.extend([
                    flatten::Cell::Int(summary.image_count),
                    flatten::Cell::Text(summary.archive.clone()),
                    flatten::Cell::Text(summary.archive_sha256.clone()),
                    flatten::Cell::Text(summary.run.clone()),
                ]);
                flatten::Row(cells)
            }
            None => {
                let row = flatten::flatten(kind, reference, data, &summary);
                for column in flatten::unparsed_columns(kind, &row) {
                    *self
                        .written
                        .unparsed_values
                        .entry(format!("{}.{column}", kind.table_name()))
                        .or_default() += 1;
                }
                flatten::pii::apply(kind, self.pii, self.pseudonymiser.as_ref(), row)
            }
        };
        self.tables
            .get_mut(&kind)
            .expect("a writer per kind")
            .write(&row)
            .map_err(|e| output_err(kind.table_name(), &e))?;
        for f in archived {
            let record = FileRecord {
                reference: reference.to_string(),
                kind,
                entry: f.entry.clone(),
                classifier: f.classifier.clone(),
                content_type: f.content_type.clone(),
                bytes: f.bytes,
                sha256: f.sha256.clone(),
                run: self.run.clone(),
            };
            self.files
                .write(&flatten::file_row(&record))
                .map_err(|e| output_err(FILES_TABLE, &e))?;
        }
        if let Some(a) = archive {
            if fresh {
                self.written.bytes_written += a.bytes;
            }
            self.root
                .add(reference, &a.sha256)
                .map_err(|e| output_err("the commit's root hash", &e))?;
        }
        if fresh {
            self.written.exported += 1;
        } else {
            self.written.already += 1;
        }
        Ok(())
    }

    fn failed(&mut self, row: &FailureRow) -> Result<(), RunError> {
        let next = row
            .next_attempt_after
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let stage = row.stage.to_string();
        let error = row.error.to_string();
        let record = FailureRecord {
            reference: &row.reference,
            kind: row.kind,
            stage: &stage,
            http_status: row.http_status,
            error: &error,
            attempts: row.attempts,
            next_attempt_after: next,
            run: &self.run,
        };
        self.failures
            .write(&flatten::failure_row(&record))
            .map_err(|e| output_err(FAILURES_TABLE, &e))?;
        *self.written.by_error.entry(error).or_default() += 1;
        self.written.failed += 1;
        Ok(())
    }

    /// Closes every part (each complete under its final name), then the root hash.
    pub fn finish(self) -> Result<Written, RunError> {
        let Sink {
            tables,
            files,
            failures,
            root,
            mut written,
            ..
        } = self;
        let writers = tables
            .into_iter()
            .map(|(k, w)| (k.table_name(), w))
            .chain([(FILES_TABLE, files), (FAILURES_TABLE, failures)]);
        for (name, w) in writers {
            let parts = w.finish().map_err(|e| output_err(name, &e))?;
            written.bytes_written += parts.iter().map(|p| p.bytes).sum::<u64>();
            written.parts.extend(parts);
        }
        written.archives = root.archives();
        written.root_hash = root
            .finish()
            .map_err(|e| output_err("the commit's root hash", &e))?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Format;
    use crate::output::fsmode::Modes;
    use crate::output::report;

    fn exported(reference: &str, sha: &str, fresh: bool) -> Done {
        Done::Exported {
            reference: reference.into(),
            kind: Kind::Netverify,
            data: serde_json::json!({"document": {"firstName": "ANA"}}),
            row: None,
            archive: Some(WrittenArchive {
                path: format!("/x/{reference}.zip").into(),
                relative: format!("archives/{reference}.zip"),
                sha256: sha.into(),
                bytes: 10,
                files: Vec::new(),
            }),
            files: Vec::new(),
            fresh,
        }
    }

    fn failed(reference: &str, error: &str) -> Done {
        Done::Failed(FailureRow {
            reference: reference.into(),
            kind: Kind::Netverify,
            stage: crate::outcome::Stage::Status,
            http_status: Some(404),
            error: error.parse().unwrap(),
            attempts: 1,
            next_attempt_after: None,
        })
    }

    fn sink_over(dones: Vec<Done>) -> (tempfile::TempDir, Arc<OutputLocation>, Written) {
        let tmp = tempfile::tempdir().unwrap();
        let location =
            OutputLocation::open(tmp.path(), Modes::default(), chrono::Utc::now(), None).unwrap();
        let mut sink = Sink::open(&location, location.part_options(true, false));
        for d in dones {
            sink.accept(d).unwrap();
        }
        let w = sink.finish().unwrap();
        (tmp, location, w)
    }

    fn first_column(location: &OutputLocation, w: &Written, table: &str) -> Vec<String> {
        let part = w
            .parts
            .iter()
            .find(|p| p.table == table && p.format == Format::Csv)
            .unwrap();
        let text = std::fs::read_to_string(location.root().join(&part.path)).unwrap();
        text.lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn outcomes_are_counted_and_rows_kept_in_arrival_order() {
        let (_tmp, location, w) = sink_over(vec![
            failed("z-last", "NOT_FOUND"),
            exported("b", "22", true),
            Done::NotStarted,
            Done::OtherRun,
            exported("a", "11", false),
            failed("a-first", "PENDING"),
        ]);
        assert_eq!(
            (w.exported, w.already, w.failed, w.not_started, w.other_run),
            (1, 1, 2, 1, 1)
        );
        assert_eq!(w.archives, 2);
        assert_eq!(
            w.by_error,
            BTreeMap::from([("NOT_FOUND".into(), 1), ("PENDING".into(), 1)])
        );
        assert_eq!(
            first_column(&location, &w, "failures"),
            ["z-last", "a-first"]
        );
        assert_eq!(first_column(&location, &w, "netverify"), ["b", "a"]);
        // One part per table, each named by the run; only the archive fetched now counts as
        // bytes written, besides the parts.
        assert_eq!(w.parts.len(), 5);
        let run = location.run().to_string();
        assert!(
            w.parts
                .iter()
                .all(|p| p.path.ends_with(&format!("{run}-0.csv")))
        );
        let parts: u64 = w.parts.iter().map(|p| p.bytes).sum();
        assert_eq!(w.bytes_written, 10 + parts);
        let table = std::fs::read_to_string(location.root().join(&w.parts[0].path)).unwrap();
        assert!(
            table.lines().nth(1).unwrap().ends_with(&format!(",{run}")),
            "run column"
        );
    }

    #[test]
    fn the_root_hash_does_not_depend_on_arrival_order() {
        let (_a, _la, first) =
            sink_over(vec![exported("b", "22", true), exported("a", "11", true)]);
        let (_b, _lb, second) =
            sink_over(vec![exported("a", "11", false), exported("b", "22", true)]);
        assert_eq!(first.root_hash, second.root_hash);
        let mut pairs = vec![("a".into(), "11".into()), ("b".into(), "22".into())];
        assert_eq!(first.root_hash, report::root_hash(&mut pairs));
    }

    #[test]
    fn a_sink_whose_writes_fail_stops_the_run_as_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let location =
            OutputLocation::open(tmp.path(), Modes::default(), chrono::Utc::now(), None).unwrap();
        // A file where the failures table's directory must go: creating its part fails.
        std::fs::write(tmp.path().join("tables/failures"), b"").unwrap();
        let shutdown = Shutdown::new();
        let (handle, tx) = Sink::spawn(
            location,
            true,
            false,
            true,
            Default::default(),
            BTreeSet::new(),
            shutdown.clone(),
        );
        drop(tx);
        assert!(handle.join().unwrap().is_err());
        assert!(matches!(shutdown.reason(), Some(StopReason::Fatal(_))));
        assert!(shutdown.cancel_token().is_cancelled());
    }
}
