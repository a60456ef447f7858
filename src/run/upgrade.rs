//! `jumio-export upgrade LOCATION`: turns a directory of the layout before datasets (top-level
//! `netverify.csv` and the other tables, `failures.csv`, `report.json`, `archives/*.zip`,
//! `.jumio-export.lock`) into a dataset in place, fetching nothing:
//!
//! 1. the old top-level files move into `legacy/` (renames: nothing is deleted or rewritten);
//! 2. one commit, written by the run machinery ([`Sink`], [`OutputLocation`],
//!    [`commit::publish`]), lists every archive that checks out ([`archive::check`]) with its
//!    rows re-flattened from the archive and its files rows, and carries the old `failures.csv`
//!    rows as its failures part, so `PENDING` follow-ups keep their `next_attempt_after`;
//! 3. archives that do not check out are named in the result and left where they are.
//!
//! While it works, the owner `legacy` (archives without a run in their provenance) is held live
//! through `runs/legacy.lock`, so a `run` started meanwhile leaves those archives to the upgrade
//! instead of claiming them. This module never talks to the API and never deletes a file of the
//! old layout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::RunError;
use super::commit;
use super::location::{LEGACY_OWNER, OutputLocation};
use super::resume::AtStart;
use super::sink::{Sink, Written};
use super::task::Done;
use crate::Kind;
use crate::dataset::{self, Format, reader};
use crate::output::archive::{self, ArchiveFinding, ArchiveKey, CheckedArchive, layout};
use crate::output::failures;
use crate::output::fsmode::{self, Modes};
use crate::output::report::{Outcomes, Report, Requests, RunFacts};

/// Where the old layout's top-level files go.
pub const LEGACY_DIR: &str = "legacy";

/// The old directory lock (a run of the layout before datasets holds it while live).
const OLD_LOCK: &str = ".jumio-export.lock";

/// The old layout's top-level tables (their presence is what [`dataset::has_legacy_tables`]
/// looks for).
const OLD_TABLES: [&str; 4] = ["netverify", "documents", "authentications", "files"];

/// What `upgrade` found and did.
#[derive(Debug)]
pub enum Upgrade {
    /// The location has commits: it is a dataset already and nothing was changed.
    AlreadyDataset {
        /// Old top-level tables are there all the same (put back by hand, or written by an
        /// older version since): `run` refuses the location until they are moved aside.
        old_tables: bool,
    },
    /// Neither old tables nor archives: nothing to upgrade.
    NothingToUpgrade,
    /// The location is a dataset now.
    Upgraded(Upgraded),
}

/// What an upgrade did, for the person who ran it.
#[derive(Debug, Clone, Default)]
pub struct Upgraded {
    /// The location.
    pub root: PathBuf,
    /// The run id of the upgrade's commit (`commits/{run}.json`).
    pub run: String,
    /// The old files moved into `legacy/`, by name.
    pub moved: Vec<String>,
    /// Archives the commit lists, per table.
    pub listed: BTreeMap<&'static str, u64>,
    /// Old `failures.csv` rows carried as the commit's failures part, per error code.
    pub carried: BTreeMap<String, u64>,
    /// Archives that do not check out, left in place and not listed: path and why.
    pub not_listed: Vec<(String, String)>,
    /// The commit's root hash over the archives it lists.
    pub root_hash: String,
}

impl Upgraded {
    /// The human summary printed on stdout.
    pub fn table(&self) -> String {
        let counts = |m: &mut dyn Iterator<Item = (String, u64)>| {
            m.map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let listed: u64 = self.listed.values().sum();
        let carried: u64 = self.carried.values().sum();
        let mut s = String::new();
        s.push_str(&format!("upgraded          {}\n", self.root.display()));
        s.push_str(&format!(
            "commit            {}\n",
            dataset::commit_relative(&self.run)
        ));
        s.push_str(&format!(
            "archives listed   {listed} ({})\n",
            counts(&mut self.listed.iter().map(|(k, n)| (k.to_string(), *n)))
        ));
        s.push_str(&format!("failures carried  {carried}"));
        if carried > 0 {
            s.push_str(&format!(
                " ({})",
                counts(&mut self.carried.iter().map(|(k, n)| (k.clone(), *n)))
            ));
        }
        s.push('\n');
        let moved = if self.moved.is_empty() {
            "nothing".to_string()
        } else {
            self.moved.join(", ")
        };
        s.push_str(&format!(
            "{:<18}{moved}\n",
            format!("moved to {LEGACY_DIR}/")
        ));
        s.push_str(&format!("not listed        {}\n", self.not_listed.len()));
        for (path, why) in &self.not_listed {
            s.push_str(&format!("  {path}: {why}\n"));
        }
        if !self.not_listed.is_empty() {
            s.push_str(
                "  (left in place and not part of the dataset; `verify` names them, and a run \
                 never overwrites them: move them aside to have their references fetched again)\n",
            );
        }
        s.push_str(&format!("root hash         {}\n", self.root_hash));
        s
    }
}

/// Why an upgrade could not be done (exit 3, except [`UpgradeError::KeyNeeded`]: 2).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// A run of the old layout holds `.jumio-export.lock`.
    #[error(
        "{path} is locked by a running jumio-export of the layout before datasets; let it finish, then upgrade"
    )]
    OldRunLive {
        /// The lock file.
        path: PathBuf,
    },
    /// Another `upgrade` holds `runs/legacy.lock`.
    #[error("another `jumio-export upgrade` is working on {path}")]
    InProgress {
        /// The location.
        path: PathBuf,
    },
    /// A file of the old layout and its destination under `legacy/` both exist.
    #[error(
        "cannot move {from} into {LEGACY_DIR}/: {to} already exists; move one of them aside and upgrade again"
    )]
    LegacyTaken {
        /// The old file.
        from: PathBuf,
        /// Its destination.
        to: PathBuf,
    },
    /// The archives are encrypted and no key was given.
    #[error(
        "{path} is encrypted and no key was given: pass --key-env NAME with the variable that holds the archive key"
    )]
    KeyNeeded {
        /// The first encrypted archive met.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The run machinery failed (writing parts, the commit, failures.csv, report.json).
    #[error(transparent)]
    Run(#[from] RunError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UpgradeError + '_ {
    move |source| UpgradeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Upgrades the directory at `root` in place, started at `started`; `key` opens encrypted
/// archives. Blocking work runs off the async threads.
pub async fn upgrade(
    root: &Path,
    key: Option<ArchiveKey>,
    started: DateTime<Utc>,
) -> Result<Upgrade, UpgradeError> {
    let dir = root.to_path_buf();
    // An upgrade given a key lists ZIP AES archives (the common case for it); without one,
    // plain ones (an encrypted archive stops it).
    let mode = if key.is_some() {
        archive::ArchiveMode::ZipAes
    } else {
        archive::ArchiveMode::Zip
    };
    let prepared = tokio::task::spawn_blocking(move || prepare(&dir, key, started))
        .await
        .map_err(|e| UpgradeError::Io {
            path: root.to_path_buf(),
            source: io::Error::other(e),
        })??;
    let (location, listing, _locks) = match prepared {
        Prepared::Done(outcome) => return Ok(outcome),
        Prepared::Listed {
            location,
            listing,
            locks,
        } => (location, listing, locks),
    };
    let Listing {
        mut written,
        mut upgraded,
    } = listing;
    written.archive_mode = mode;
    let facts = RunFacts {
        job_sha256: String::new(),
        input_sha256: String::new(),
        shard: None,
        run: location.run().to_string(),
        interrupted: false,
        outcomes: Outcomes {
            references: written.already + written.failed,
            exported: 0,
            already_exported: written.already,
            failed: written.failed,
            not_started: 0,
            other_run: 0,
            duplicates: 0,
            failures_by_error: written.by_error.clone(),
        },
        requests: Requests::default(),
        store_requests: None,
        bytes_written: written.bytes_written,
        archives: written.archives,
        root_hash: written.root_hash.clone(),
        unparsed_values: written.unparsed_values.clone(),
    };
    let report = Report::assemble(started, Utc::now(), facts);
    commit::publish(&location, &report, &written, AtStart::default(), None).await?;
    upgraded.run = location.run().to_string();
    upgraded.root_hash = written.root_hash;
    Ok(Upgrade::Upgraded(upgraded))
}

enum Prepared {
    Done(Upgrade),
    Listed {
        location: Arc<OutputLocation>,
        listing: Listing,
        locks: Locks,
    },
}

struct Listing {
    written: Written,
    upgraded: Upgraded,
}

/// Everything up to the commit (blocking): the checks, the moves, the parts.
fn prepare(
    root: &Path,
    key: Option<ArchiveKey>,
    started: DateTime<Utc>,
) -> Result<Prepared, UpgradeError> {
    if !root.is_dir() {
        return Ok(Prepared::Done(Upgrade::NothingToUpgrade));
    }
    let commits = dataset::commit::list(root).map_err(|e| UpgradeError::Io {
        path: root.join(dataset::COMMITS_DIR),
        source: io::Error::other(e.to_string()),
    })?;
    if !commits.is_empty() {
        return Ok(Prepared::Done(Upgrade::AlreadyDataset {
            old_tables: dataset::has_legacy_tables(root),
        }));
    }
    // `legacy/` alone: an upgrade that stopped after moving the old files; it is finished now.
    let old_tables = dataset::has_legacy_tables(root) || root.join(LEGACY_DIR).is_dir();
    let first_archive = first_archive(root)?;
    if !old_tables && first_archive.is_none() {
        return Ok(Prepared::Done(Upgrade::NothingToUpgrade));
    }
    // The common mistake (encrypted archives, no key) is caught before anything changes.
    if let (Some(path), None) = (&first_archive, &key) {
        needs_key(path)?;
    }
    let modes = Modes::default();
    let locks = Locks::take(root, modes)?;
    let moved = move_old_files(root, modes)?;
    let (csv, parquet) = formats(&root.join(LEGACY_DIR));
    let location = OutputLocation::open(root, modes, started, None)?;
    let listing = list(&location, csv, parquet, key.as_ref(), moved)?;
    Ok(Prepared::Listed {
        location,
        listing,
        locks,
    })
}

/// The path of some `archives/*.zip`, if any.
fn first_archive(root: &Path) -> Result<Option<PathBuf>, UpgradeError> {
    let dir = root.join(archive::ARCHIVES_DIR);
    let listing = match std::fs::read_dir(&dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&dir)(e)),
    };
    for entry in listing {
        let entry = entry.map_err(io_at(&dir))?;
        let name = entry.file_name();
        if name.to_str().and_then(layout::reference_of).is_some() {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// An error when the archive at `path` has an entry no key-less read can open.
fn needs_key(path: &Path) -> Result<(), UpgradeError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let reference = layout::reference_of(name).unwrap_or("");
    match archive::check(path, reference, None, None) {
        Err(rejected) if encrypted(&rejected.findings) => Err(UpgradeError::KeyNeeded {
            path: path.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

fn encrypted(findings: &[ArchiveFinding]) -> bool {
    findings
        .iter()
        .any(|f| matches!(f, ArchiveFinding::WrongKey { .. }))
}

/// The old directory lock (held so no run of the old layout starts meanwhile) and
/// `runs/legacy.lock` (holds the owner `legacy` live, so a dataset run started meanwhile leaves
/// the old archives to this upgrade). Released, and the latter removed, on drop.
struct Locks {
    _old: Option<std::fs::File>,
    legacy: std::fs::File,
    legacy_path: PathBuf,
}

impl Locks {
    fn take(root: &Path, modes: Modes) -> Result<Self, UpgradeError> {
        let old_path = root.join(OLD_LOCK);
        let old = match std::fs::OpenOptions::new().read(true).open(&old_path) {
            Ok(file) => match file.try_lock() {
                Ok(()) => Some(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(UpgradeError::OldRunLive { path: old_path });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_at(&old_path)(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at(&old_path)(e)),
        };
        let runs = root.join(dataset::RUNS_DIR);
        modes.create_dir_all(&runs).map_err(io_at(&runs))?;
        let legacy_path = runs.join(format!("{LEGACY_OWNER}.lock"));
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(modes.file).custom_flags(libc::O_NOFOLLOW);
        }
        let legacy = o.open(&legacy_path).map_err(io_at(&legacy_path))?;
        match legacy.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(UpgradeError::InProgress {
                    path: root.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_at(&legacy_path)(e)),
        }
        Ok(Locks {
            _old: old,
            legacy,
            legacy_path,
        })
    }
}

impl Drop for Locks {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.legacy_path);
        let _ = self.legacy.unlock();
    }
}

/// Renames the old top-level files into `legacy/`, never over an existing file. Returns their
/// names.
fn move_old_files(root: &Path, modes: Modes) -> Result<Vec<String>, UpgradeError> {
    let legacy = root.join(LEGACY_DIR);
    modes.create_dir_all(&legacy).map_err(io_at(&legacy))?;
    let names = OLD_TABLES
        .iter()
        .flat_map(|t| [Format::Csv, Format::Parquet].map(|f| format!("{t}.{}", f.ext())))
        .chain([
            dataset::FAILURES_CSV.to_string(),
            dataset::REPORT_JSON.to_string(),
            OLD_LOCK.to_string(),
        ]);
    let mut moved = Vec::new();
    for name in names {
        let from = root.join(&name);
        if std::fs::symlink_metadata(&from).is_err() {
            continue;
        }
        let to = legacy.join(&name);
        if std::fs::symlink_metadata(&to).is_ok() {
            return Err(UpgradeError::LegacyTaken { from, to });
        }
        std::fs::rename(&from, &to).map_err(io_at(&from))?;
        moved.push(name);
    }
    fsmode::sync_dir(&legacy).map_err(io_at(&legacy))?;
    fsmode::sync_dir(root).map_err(io_at(root))?;
    Ok(moved)
}

/// The formats the old tables were written in (both when none is left to tell).
fn formats(legacy: &Path) -> (bool, bool) {
    let has = |format: Format| {
        OLD_TABLES
            .iter()
            .any(|t| legacy.join(format!("{t}.{}", format.ext())).exists())
    };
    match (has(Format::Csv), has(Format::Parquet)) {
        (false, false) => (true, true),
        found => found,
    }
}

/// Lists every archive that checks out, then the old failure rows, through one [`Sink`].
fn list(
    location: &Arc<OutputLocation>,
    csv: bool,
    parquet: bool,
    key: Option<&ArchiveKey>,
    moved: Vec<String>,
) -> Result<Listing, UpgradeError> {
    let root = location.root();
    let legacy = root.join(LEGACY_DIR);
    let old_failures = failures::read(&legacy.join(dataset::FAILURES_CSV))
        .map_err(io_at(&legacy.join(dataset::FAILURES_CSV)))?;
    let mut failed: HashSet<(String, Kind)> = old_failures
        .iter()
        .map(|r| (r.reference.clone(), r.kind))
        .collect();
    let mut upgraded = Upgraded {
        root: root.to_path_buf(),
        moved,
        ..Upgraded::default()
    };
    let mut old_kinds = OldKinds::new(&legacy);
    let mut sink = Sink::open(location, location.part_options(csv, parquet));
    let dir = root.join(archive::ARCHIVES_DIR);
    let listing = match std::fs::read_dir(&dir) {
        Ok(l) => Some(l),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_at(&dir)(e)),
    };
    for entry in listing.into_iter().flatten() {
        let entry = entry.map_err(io_at(&dir))?;
        let name = entry.file_name();
        let Some(reference) = name.to_str().and_then(layout::reference_of) else {
            continue;
        };
        let (kind, checked) = match old_archive(&entry.path(), reference, key, &mut old_kinds)? {
            Ok(found) => found,
            Err(why) => {
                let relative = archive::relative_path(reference);
                upgraded.not_listed.push((relative, why));
                continue;
            }
        };
        failed.remove(&(reference.to_string(), kind));
        sink.accept(exported(reference, kind, checked))?;
        *upgraded.listed.entry(kind.table_name()).or_default() += 1;
    }
    for row in old_failures {
        if !failed.contains(&(row.reference.clone(), row.kind)) {
            continue;
        }
        *upgraded.carried.entry(row.error.to_string()).or_default() += 1;
        sink.accept(Done::Failed(row))?;
    }
    upgraded.not_listed.sort();
    let written = sink.finish()?;
    Ok(Listing { written, upgraded })
}

/// The archive of the old layout at `path`, named for `reference`: its family and the checked
/// archive when the upgrade lists it, or why not (`Err` inside `Ok`). An encrypted archive
/// without a key stops the upgrade.
fn old_archive(
    path: &Path,
    reference: &str,
    key: Option<&ArchiveKey>,
    old_kinds: &mut OldKinds,
) -> Result<Result<(Kind, CheckedArchive), String>, UpgradeError> {
    if !layout::valid_reference(reference) {
        return Ok(Err("its name is not a reference".into()));
    }
    let checked = match archive::check(path, reference, None, key) {
        Ok(checked) => checked,
        Err(rejected) if key.is_none() && encrypted(&rejected.findings) => {
            return Err(UpgradeError::KeyNeeded {
                path: path.to_path_buf(),
            });
        }
        Err(rejected) => return Ok(Err(rejected.to_string())),
    };
    if checked.run.is_some() {
        // Written by a dataset run: its own run, or the one that claims it, lists it.
        return Ok(Err(
            "it records a dataset run as its creator; that run's commit (or the run that takes it over) lists it"
                .into(),
        ));
    }
    let kind = match checked.kind {
        Some(kind) => Some(kind),
        None => old_kinds.of(reference)?,
    };
    Ok(match kind {
        Some(kind) => Ok((kind, checked)),
        None => Err(
            "its entries fit Netverify and Document Verification alike and no old table names it"
                .into(),
        ),
    })
}

/// An archive that checks out, as a run that takes it over hands it to the sink.
fn exported(reference: &str, kind: Kind, checked: CheckedArchive) -> Done {
    Done::Exported {
        reference: reference.to_string(),
        kind,
        data: checked.data,
        row: None,
        files: checked.archive.files.clone(),
        archive: Some(checked.archive),
        fresh: false,
    }
}

/// The family of an archive whose entries fit Netverify and Document Verification alike: the
/// old table that has its row. Read only when such an archive is met.
struct OldKinds {
    legacy: PathBuf,
    tables: Option<HashMap<String, Kind>>,
}

impl OldKinds {
    fn new(legacy: &Path) -> Self {
        OldKinds {
            legacy: legacy.to_path_buf(),
            tables: None,
        }
    }

    fn of(&mut self, reference: &str) -> Result<Option<Kind>, UpgradeError> {
        if self.tables.is_none() {
            let mut by_reference = HashMap::new();
            for kind in [Kind::Netverify, Kind::Document] {
                self.read(kind, &mut by_reference)?;
            }
            self.tables = Some(by_reference);
        }
        Ok(self.tables.as_ref().and_then(|t| t.get(reference).copied()))
    }

    fn read(&self, kind: Kind, into: &mut HashMap<String, Kind>) -> Result<(), UpgradeError> {
        for format in [Format::Parquet, Format::Csv] {
            let path = self
                .legacy
                .join(format!("{}.{}", kind.table_name(), format.ext()));
            if !path.exists() {
                continue;
            }
            reader::for_each_row(&path, format, &["reference"], |cells| {
                if let Some(reference) = &cells[0] {
                    into.insert(reference.clone(), kind);
                }
                Ok(())
            })
            .map_err(io_at(&path))?;
            return Ok(());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::archive::{ArchiveEntry, EntryKind, ProvenanceMeta};
    use crate::run::location::Existing;

    fn old_archive(root: &Path, reference: &str, key: Option<&ArchiveKey>) {
        let entry = |kind, body: &str| ArchiveEntry {
            kind,
            body: bytes::Bytes::from(body.to_string()),
            content_type: "application/json".into(),
            api_path: format!("/api/netverify/v2/scans/{reference}"),
            http_status: 200,
            retrieved_at: Utc::now(),
        };
        let entries = [
            entry(EntryKind::Status, r#"{"status":"DONE"}"#),
            entry(EntryKind::Data, r#"{"document":{"type":"PASSPORT"}}"#),
            entry(EntryKind::Images, r#"{"images":[]}"#),
        ];
        let meta = ProvenanceMeta {
            tool_version: "0.0.9".into(),
            job_sha256: String::new(),
            run: None,
        };
        archive::write_archive_with_key(root, reference, &entries, &meta, key, Modes::default())
            .unwrap();
    }

    /// A run that meets an old archive while an upgrade is listing it leaves it to the upgrade
    /// (its owner `legacy` is live); once the upgrade is gone, a run may claim it.
    #[test]
    fn while_an_upgrade_holds_its_locks_runs_leave_old_archives_to_it() {
        let tmp = tempfile::tempdir().unwrap();
        old_archive(tmp.path(), "r1", None);
        let locks = Locks::take(tmp.path(), Modes::default()).unwrap();
        let run = OutputLocation::open(tmp.path(), Modes::default(), Utc::now(), None).unwrap();
        assert!(matches!(
            run.existing_archive("r1", Kind::Netverify, None),
            Existing::OtherRun(owner) if owner == LEGACY_OWNER
        ));
        assert!(matches!(
            Locks::take(tmp.path(), Modes::default()),
            Err(UpgradeError::InProgress { .. })
        ));
        drop(locks);
        assert!(!tmp.path().join("runs/legacy.lock").exists());
        assert!(matches!(
            run.existing_archive("r1", Kind::Netverify, None),
            Existing::Ours(_)
        ));
    }

    /// Encrypted archives and no key: refused before anything moves.
    #[tokio::test]
    async fn encrypted_archives_without_a_key_are_refused_before_anything_moves() {
        let tmp = tempfile::tempdir().unwrap();
        let key = ArchiveKey::new(b"0123456789abcdef0123").unwrap();
        old_archive(tmp.path(), "r1", Some(&key));
        std::fs::write(tmp.path().join("netverify.csv"), b"reference\nr1\n").unwrap();
        let refused = upgrade(tmp.path(), None, Utc::now()).await;
        assert!(matches!(refused, Err(UpgradeError::KeyNeeded { .. })));
        assert!(tmp.path().join("netverify.csv").exists());
        assert!(!tmp.path().join(LEGACY_DIR).exists());
        let Ok(Upgrade::Upgraded(done)) = upgrade(tmp.path(), Some(key), Utc::now()).await else {
            panic!("upgraded with the key");
        };
        assert_eq!(done.listed.get("netverify"), Some(&1));
        assert!(done.not_listed.is_empty(), "{:?}", done.not_listed);
    }
}
