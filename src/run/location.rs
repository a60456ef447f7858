//! The output location: the one handle through which a run creates, locks, writes and reads back
//! its output, and the one place that knows the paths under it (`archives/{reference}.zip`,
//! `failures.csv`, `report.json`, the tables). It owns the modes new files and directories get.
//! Object storage plugs in here: nothing else in `run/` names a path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::RunError;
use crate::Kind;
use crate::flatten::Column;
use crate::output::archive::{self, ArchiveEntry, ArchiveKey, ProvenanceMeta, WrittenArchive};
use crate::output::failures::{self, FailureRow, FailuresWriter};
use crate::output::fsmode::Modes;
use crate::output::report::{Report, RootHash};
use crate::output::tables::{TableError, TableWriter};

/// Name of the lock file inside the output directory.
pub const LOCK_FILE: &str = ".jumio-export.lock";
const FAILURES_CSV: &str = "failures.csv";

/// A locked, writable output directory. Dropping it releases the lock.
#[derive(Debug)]
pub struct OutputLocation {
    root: PathBuf,
    modes: Modes,
    _lock: DirLock,
}

impl OutputLocation {
    /// Creates `root` (and `archives/`) with `modes` where missing, takes the lock, checks that
    /// the directory is writable and removes temporaries a killed run left. Only the lock holder
    /// touches temporaries: another run's could be in flight.
    pub fn open(root: &Path, modes: Modes) -> Result<Arc<Self>, RunError> {
        let err = |source| RunError::OutputDir {
            path: root.to_path_buf(),
            source,
        };
        modes.create_dir_all(root).map_err(err)?;
        modes
            .create_dir_all(&root.join(archive::ARCHIVES_DIR))
            .map_err(err)?;
        let lock = DirLock::take(root, modes)?;
        let probe = root.join(".write-probe.tmp");
        std::fs::write(&probe, b"").map_err(err)?;
        std::fs::remove_file(&probe).map_err(err)?;
        archive::remove_stale_temps(root).map_err(err)?;
        Ok(Arc::new(OutputLocation {
            root: root.to_path_buf(),
            modes,
            _lock: lock,
        }))
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The modes new files and directories get.
    pub fn modes(&self) -> Modes {
        self.modes
    }

    /// Where the archive of `reference` lives, whether or not it exists.
    pub fn archive_path(&self, reference: &str) -> PathBuf {
        self.root
            .join(archive::ARCHIVES_DIR)
            .join(format!("{reference}.zip"))
    }

    /// The rows of the `failures.csv` an earlier run left (none if there is none).
    pub fn read_failures(&self) -> Result<Vec<FailureRow>, RunError> {
        let path = self.root.join(FAILURES_CSV);
        failures::read(&path).map_err(|source| RunError::OutputDir { path, source })
    }

    /// Writes one archive (blocking): temporary name, fsync, rename.
    pub fn write_archive(
        &self,
        reference: &str,
        entries: &[ArchiveEntry],
        meta: &ProvenanceMeta,
        key: Option<&ArchiveKey>,
    ) -> Result<WrittenArchive, archive::ArchiveError> {
        archive::write_archive_with_key(&self.root, reference, entries, meta, key, self.modes)
    }

    /// Reads back the archive of `reference` (blocking) and checks that it is complete and
    /// this reference's, of `kind`. `None`, with the reason logged, when it must be fetched again.
    pub fn reusable_archive(
        &self,
        reference: &str,
        kind: Kind,
        key: Option<&ArchiveKey>,
    ) -> Option<ReusedArchive> {
        let path = self.archive_path(reference);
        if !path.exists() {
            return None;
        }
        let contents = match archive::read_archive_with_key(&path, key) {
            Ok(c) => c,
            Err(_) => {
                tracing::warn!(reference = %reference, "archive from an earlier run does not open; fetching again");
                return None;
            }
        };
        let has = |name: &str| contents.files.iter().any(|f| f.entry == name);
        let kind_matches = match kind {
            Kind::Authentication => has("authentication.json"),
            Kind::Netverify => {
                has("data.json") && !has("authentication.json") && !has("pages.json")
            }
            Kind::Document => {
                has("data.json") && !has("authentication.json") && !has("images.json")
            }
        };
        if !kind_matches {
            tracing::warn!(reference = %reference, %kind, "archive from an earlier run is of another kind; fetching again");
            return None;
        }
        if !contents.manifest_ok
            || !contents.problems.is_empty()
            || contents.reference.as_deref() != Some(reference)
        {
            tracing::warn!(reference = %reference, "archive from an earlier run does not verify; fetching again");
            return None;
        }
        let Some(data) = contents
            .data_json
            .as_deref()
            .and_then(|d| serde_json::from_slice(d).ok())
        else {
            tracing::warn!(reference = %reference, "archive has no usable data entry; fetching again");
            return None;
        };
        Some(ReusedArchive {
            archive: WrittenArchive {
                path,
                relative: format!("{}/{reference}.zip", archive::ARCHIVES_DIR),
                sha256: contents.sha256,
                bytes: contents.bytes,
                files: contents.files,
            },
            data,
        })
    }

    /// A table writer for `name` (temporary files, renamed into place on finish).
    pub fn table_writer(
        &self,
        name: &str,
        columns: &'static [Column],
        csv: bool,
        parquet: bool,
    ) -> Result<TableWriter, TableError> {
        TableWriter::create(&self.root, name, columns, csv, parquet, self.modes)
    }

    /// The writer of this run's `failures.csv`.
    pub fn failures_writer(&self) -> std::io::Result<FailuresWriter> {
        FailuresWriter::create(&self.root, self.modes)
    }

    /// The root hash, spilling its sorted lines to unnamed files on this location's disk.
    pub fn root_hash(&self) -> RootHash {
        RootHash::new(&self.root)
    }

    /// Bytes of this run's table files (for the report).
    pub fn table_bytes(&self, tables: &[&str]) -> u64 {
        let mut bytes = 0;
        for name in tables {
            for ext in ["csv", "parquet"] {
                if let Ok(m) = std::fs::metadata(self.root.join(format!("{name}.{ext}"))) {
                    bytes += m.len();
                }
            }
        }
        bytes
    }

    /// Writes `report.json` (temporary name, fsync, rename).
    pub fn write_report(&self, report: &Report) -> Result<(), RunError> {
        report
            .write(&self.root, self.modes)
            .map_err(|e| RunError::Output {
                what: "report.json".into(),
                message: e.to_string(),
            })
    }
}

/// An archive an earlier run completed, checked, with its parsed data for the table row.
#[derive(Debug)]
pub struct ReusedArchive {
    /// Where it is and what it holds.
    pub archive: WrittenArchive,
    /// Its `data.json` (Authentication: `authentication.json`).
    pub data: serde_json::Value,
}

/// The output directory's lock, released explicitly on drop: a process that forked meanwhile
/// (a library user spawning children) shares the descriptor, and merely closing ours would
/// leave the lock held until that child calls exec.
#[derive(Debug)]
struct DirLock(std::fs::File);

impl DirLock {
    /// Takes the lock file, so two runs never write the same directory.
    fn take(root: &Path, modes: Modes) -> Result<Self, RunError> {
        let path = root.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| RunError::OutputDir {
                path: root.to_path_buf(),
                source,
            })?;
        let _ = modes.restrict(&file);
        match file.try_lock() {
            Ok(()) => Ok(DirLock(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(RunError::Locked { path }),
            Err(std::fs::TryLockError::Error(source)) => Err(RunError::OutputDir {
                path: root.to_path_buf(),
                source,
            }),
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_handle_on_a_locked_directory_is_refused_and_leaves_temporaries_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let first = OutputLocation::open(tmp.path(), Modes::default()).unwrap();
        let stale = first.root().join("archives/.r1.zip.tmp");
        std::fs::write(&stale, b"in flight").unwrap();
        let second = OutputLocation::open(tmp.path(), Modes::default());
        assert!(matches!(second, Err(RunError::Locked { .. })), "{second:?}");
        assert!(stale.exists(), "only the lock holder removes temporaries");
        drop(first);
        let third = OutputLocation::open(tmp.path(), Modes::default()).unwrap();
        assert!(
            !stale.exists(),
            "the next lock holder removes the stale temporary"
        );
        assert_eq!(
            third.archive_path("r1"),
            tmp.path().join("archives").join("r1.zip")
        );
    }

    #[test]
    fn a_missing_archive_is_not_reusable() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = OutputLocation::open(tmp.path(), Modes::default()).unwrap();
        assert!(loc.reusable_archive("r1", Kind::Netverify, None).is_none());
    }
}
