//! The sink: one thread, the only owner of the tables, `files`, `failures.csv` and the root hash.
//! It turns each [`Done`] into rows in arrival order and, when the senders are gone, closes every
//! writer (so each Parquet file has its footer) before the root hash is finished. A write that
//! fails stops the run: nothing fetched afterwards could be recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::RunError;
use super::location::OutputLocation;
use super::shutdown::{Shutdown, StopReason};
use super::task::Done;
use crate::Kind;
use crate::flatten::{self, ArchiveSummary, FileRecord};
use crate::output::archive::{self, ArchivedFile, WrittenArchive};
use crate::output::failures::{FailureRow, FailuresWriter};
use crate::output::report::RootHash;
use crate::output::tables::TableWriter;

/// What the sink wrote, for the report and the summary.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Written {
    /// Exported by this run.
    pub exported: u64,
    /// Taken over from an earlier run's archive.
    pub already: u64,
    /// Rows in failures.csv.
    pub failed: u64,
    /// Not reached.
    pub not_started: u64,
    /// Failures by error code.
    pub by_error: BTreeMap<String, u64>,
    /// Archives in the tables.
    pub archives: u64,
    /// The root hash over them.
    pub root_hash: String,
    /// Bytes of archives fetched now and of the tables.
    pub bytes_written: u64,
}

/// The tables this run writes, besides one per [`Kind`].
const FILES: &str = "files";

/// The open writers.
pub struct Sink {
    location: Arc<OutputLocation>,
    tables: HashMap<Kind, TableWriter>,
    files: TableWriter,
    failures: FailuresWriter,
    root: RootHash,
    written: Written,
}

fn output_err(what: &str, e: &dyn std::fmt::Display) -> RunError {
    RunError::Output {
        what: what.to_string(),
        message: e.to_string(),
    }
}

impl Sink {
    /// Opens every writer of the run (temporary files until [`Sink::finish`]).
    pub fn open(location: Arc<OutputLocation>, csv: bool, parquet: bool) -> Result<Self, RunError> {
        let mut tables = HashMap::new();
        for kind in Kind::ALL {
            let name = kind.table_name();
            let w = location
                .table_writer(name, flatten::table_columns(kind), csv, parquet)
                .map_err(|e| output_err(name, &e))?;
            tables.insert(kind, w);
        }
        let files = location
            .table_writer(FILES, flatten::files_columns(), csv, parquet)
            .map_err(|e| output_err(FILES, &e))?;
        let failures = location
            .failures_writer()
            .map_err(|e| output_err("failures.csv", &e))?;
        let root = location.root_hash();
        Ok(Sink {
            location,
            tables,
            files,
            failures,
            root,
            written: Written::default(),
        })
    }

    /// Runs the sink on its own thread. If a write fails the run is stopped as fatal.
    pub fn spawn(
        location: Arc<OutputLocation>,
        csv: bool,
        parquet: bool,
        shutdown: Shutdown,
    ) -> (
        std::thread::JoinHandle<Result<Written, RunError>>,
        mpsc::Sender<Done>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Done>(256);
        let handle = std::thread::spawn(move || {
            let result = Sink::open(location, csv, parquet).and_then(|mut sink| {
                while let Some(done) = rx.blocking_recv() {
                    sink.accept(done)?;
                }
                sink.finish()
            });
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
                archive,
                files,
                fresh,
            } => self.exported(&reference, kind, &data, archive, &files, fresh),
            Done::Failed(row) => self.failed(&row),
            Done::NotStarted => {
                self.written.not_started += 1;
                Ok(())
            }
        }
    }

    fn exported(
        &mut self,
        reference: &str,
        kind: Kind,
        data: &serde_json::Value,
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
        };
        let row = flatten::flatten(kind, reference, data, &summary);
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
            };
            self.files
                .write(&flatten::file_row(&record))
                .map_err(|e| output_err(FILES, &e))?;
        }
        if let Some(a) = archive {
            if fresh {
                self.written.bytes_written += a.bytes;
            }
            self.root
                .add(reference, &a.sha256)
                .map_err(|e| output_err("report.json root hash", &e))?;
        }
        if fresh {
            self.written.exported += 1;
        } else {
            self.written.already += 1;
        }
        Ok(())
    }

    fn failed(&mut self, row: &FailureRow) -> Result<(), RunError> {
        self.failures
            .write(row)
            .map_err(|e| output_err("failures.csv", &e))?;
        *self.written.by_error.entry(row.error.clone()).or_default() += 1;
        self.written.failed += 1;
        Ok(())
    }

    /// Closes every writer (each file renamed into place complete), then the root hash.
    pub fn finish(self) -> Result<Written, RunError> {
        let Sink {
            location,
            tables,
            files,
            failures,
            root,
            mut written,
        } = self;
        for (kind, t) in tables {
            t.finish().map_err(|e| output_err(kind.table_name(), &e))?;
        }
        files.finish().map_err(|e| output_err(FILES, &e))?;
        failures
            .finish()
            .map_err(|e| output_err("failures.csv", &e))?;
        written.archives = root.archives();
        written.root_hash = root
            .finish()
            .map_err(|e| output_err("report.json root hash", &e))?;
        let names: Vec<&str> = Kind::ALL
            .iter()
            .map(|k| k.table_name())
            .chain([FILES])
            .collect();
        written.bytes_written += location.table_bytes(&names);
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fsmode::Modes;
    use crate::output::report;

    fn exported(reference: &str, sha: &str, fresh: bool) -> Done {
        Done::Exported {
            reference: reference.into(),
            kind: Kind::Netverify,
            data: serde_json::json!({"document": {"firstName": "ANA"}}),
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
            stage: "status".into(),
            http_status: Some(404),
            error: error.into(),
            attempts: 1,
            next_attempt_after: None,
        })
    }

    fn sink_over(dones: Vec<Done>) -> (tempfile::TempDir, Written) {
        let tmp = tempfile::tempdir().unwrap();
        let location = OutputLocation::open(tmp.path(), Modes::default()).unwrap();
        let mut sink = Sink::open(location, true, false).unwrap();
        for d in dones {
            sink.accept(d).unwrap();
        }
        let w = sink.finish().unwrap();
        (tmp, w)
    }

    #[test]
    fn outcomes_are_counted_and_failures_kept_in_arrival_order() {
        let (tmp, w) = sink_over(vec![
            failed("z-last", "NOT_FOUND"),
            exported("b", "22", true),
            Done::NotStarted,
            exported("a", "11", false),
            failed("a-first", "PENDING"),
        ]);
        assert_eq!(
            (w.exported, w.already, w.failed, w.not_started),
            (1, 1, 2, 1)
        );
        assert_eq!(w.archives, 2);
        assert_eq!(
            w.by_error,
            BTreeMap::from([("NOT_FOUND".into(), 1), ("PENDING".into(), 1)])
        );
        let failures = std::fs::read_to_string(tmp.path().join("failures.csv")).unwrap();
        let refs: Vec<&str> = failures
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert_eq!(refs, ["z-last", "a-first"]);
        let table = std::fs::read_to_string(tmp.path().join("netverify.csv")).unwrap();
        let rows: Vec<&str> = table
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert_eq!(rows, ["b", "a"], "rows in arrival order");
        // Only the archive fetched now counts as bytes written, besides the tables.
        let tables: u64 = ["netverify", "documents", "authentications", "files"]
            .iter()
            .map(|t| {
                std::fs::metadata(tmp.path().join(format!("{t}.csv")))
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(w.bytes_written, 10 + tables);
    }

    #[test]
    fn the_root_hash_does_not_depend_on_arrival_order() {
        let (_a, first) = sink_over(vec![exported("b", "22", true), exported("a", "11", true)]);
        let (_b, second) = sink_over(vec![exported("a", "11", false), exported("b", "22", true)]);
        assert_eq!(first.root_hash, second.root_hash);
        let mut pairs = vec![("a".into(), "11".into()), ("b".into(), "22".into())];
        assert_eq!(first.root_hash, report::root_hash(&mut pairs));
    }

    #[test]
    fn a_sink_whose_writes_fail_stops_the_run_as_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let location = OutputLocation::open(tmp.path(), Modes::default()).unwrap();
        // A directory where the failures file must go: creating it fails.
        std::fs::create_dir(tmp.path().join("failures.csv.tmp")).unwrap();
        let shutdown = Shutdown::new();
        let (handle, tx) = Sink::spawn(location, true, false, shutdown.clone());
        drop(tx);
        assert!(handle.join().unwrap().is_err());
        assert!(matches!(shutdown.reason(), Some(StopReason::Fatal(_))));
        assert!(shutdown.cancel_token().is_cancelled());
    }
}
