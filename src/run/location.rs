//! The output location: the one handle through which a run creates, writes and reads back its
//! output, and the one place in `run/` that knows the dataset's paths (through
//! [`crate::dataset`]). It owns the run's id and lock (`runs/{run}.lock`, how other runs tell a
//! live run from a dead one) and the modes new files and directories get. Object storage plugs
//! in here.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::RunError;
use super::takeover::{self, TakeoverRecord};
use crate::Kind;
use crate::dataset::catalogue::Catalogue;
use crate::dataset::commit::Commit;
use crate::dataset::parts::{PART_BYTES, PART_ROWS, PartOptions};
use crate::dataset::publish::Published;
use crate::dataset::{self, RunId};
use crate::flatten::pii::Pii;
use crate::job::Shard;
use crate::output::archive::{
    self, ArchiveEntry, ArchiveKey, ArchiveMode, CheckedArchive, ProvenanceMeta, WrittenArchive,
};
use crate::output::failures::FailuresWriter;
use crate::output::fsmode::{self, Modes};
use crate::output::report::RootHash;
use crate::store::{self, BucketUrl, Heartbeat, Remote, StoreSettings};
use std::sync::atomic::{AtomicBool, Ordering};

/// The owner recorded for archives written before datasets (their provenance names no run).
pub const LEGACY_OWNER: &str = "legacy";

/// A writable dataset location, held by one live run. Dropping it releases the run's lock.
#[derive(Debug)]
pub struct OutputLocation {
    /// The dataset's directory; for a bucket, the local scratch directory every file is
    /// written to before it is uploaded.
    root: PathBuf,
    modes: Modes,
    run: RunId,
    lock: RunLock,
    /// The bucket, when the location is one (dropped after the local lock: the heartbeat
    /// object goes, then the scratch directory).
    bucket: Option<Bucket>,
}

/// A dataset in a bucket: the store, this run's heartbeat, the local scratch directory.
#[derive(Debug)]
struct Bucket {
    remote: Remote,
    heartbeat: Heartbeat,
    _scratch: tempfile::TempDir,
}

/// What an archive already under its final name means for this run.
#[derive(Debug)]
pub enum Existing {
    /// No archive of this reference.
    Absent,
    /// It checks out and this run lists it (its creator is dead and never committed it).
    Ours(Box<CheckedArchive>),
    /// A live run, or one that committed meanwhile, owns it: not this run's to list.
    OtherRun(String),
    /// It does not check out; it is never overwritten. The findings, one line.
    Damaged(String),
    /// An age archive this run lists (its creator is dead and never committed it): the archive
    /// as its takeover record describes it, the ciphertext's hash checked, and the table row
    /// the record holds (profiled, without the bookkeeping columns).
    OursSealed(Box<(WrittenArchive, Vec<crate::flatten::Cell>)>),
    /// It is of another archive mode than the run's (or the setting named differs): the run
    /// stops (exit 2), the archive is never fetched again and replaced.
    Mismatch {
        /// The job-file setting that differs (`[output] age_recipients`, …).
        setting: &'static str,
        /// The archive and what it is, in words (`archives/X.zip is ZIP archives encrypted …`).
        found: String,
    },
    /// It could not be read back from the bucket (the store failed, after its retries): nothing
    /// is known of it, and it is left as it is for a later try to check. The error, one line.
    Unreadable(String),
}

impl OutputLocation {
    /// Opens `root` for a new run started at `started`: creates the layout's directories with
    /// `modes` where missing, checks that the location is writable, takes a fresh run id with
    /// its lock, and removes temporaries of runs that are not live. A directory of the layout
    /// before datasets is refused (see [`RunError::LegacyLayout`]).
    pub fn open(
        root: &Path,
        modes: Modes,
        started: DateTime<Utc>,
        shard: Option<&Shard>,
    ) -> Result<Arc<Self>, RunError> {
        Self::open_with(root, modes, started, shard, &StoreSettings::default())
    }

    /// [`OutputLocation::open`], with the store settings a bucket location (`s3://…`,
    /// `gs://…`, `az://…`) is opened with. A bucket is checked (listed, and this run's heartbeat
    /// written) before anything else happens, and its commits and their parts are read into a
    /// local scratch directory. Blocking; must run on a thread of the run's tokio runtime
    /// (`spawn_blocking`).
    pub fn open_with(
        root: &Path,
        modes: Modes,
        started: DateTime<Utc>,
        shard: Option<&Shard>,
        settings: &StoreSettings,
    ) -> Result<Arc<Self>, RunError> {
        match BucketUrl::parse(root) {
            None => Self::open_local(root, modes, started, shard),
            Some(Err(why)) => Err(RunError::StoreSettings(why)),
            Some(Ok(url)) => Self::open_bucket(&url, modes, started, shard, settings),
        }
    }

    fn open_local(
        root: &Path,
        modes: Modes,
        started: DateTime<Utc>,
        shard: Option<&Shard>,
    ) -> Result<Arc<Self>, RunError> {
        let err = |source| RunError::OutputDir {
            path: root.to_path_buf(),
            source,
        };
        modes.create_root_dir(root).map_err(err)?;
        if dataset::has_legacy_tables(root) {
            return Err(RunError::LegacyLayout {
                path: root.to_path_buf(),
            });
        }
        create_dataset_dirs(root, modes).map_err(err)?;
        let probe = root.join(format!(".write-probe-{}.tmp", std::process::id()));
        drop(modes.create_file(&probe).map_err(err)?);
        std::fs::remove_file(&probe).map_err(err)?;
        let (run, lock) = RunLock::take(root, modes, started, shard).map_err(err)?;
        // After the lock: a sweeping run takes the directory of an unlocked run for a dead one.
        modes
            .create_dir_all(&archive::layout::run_scratch_dir(root, run.as_str()))
            .map_err(err)?;
        let location = OutputLocation {
            root: root.to_path_buf(),
            modes,
            run,
            lock,
            bucket: None,
        };
        location.remove_dead_temporaries().map_err(err)?;
        Ok(Arc::new(location))
    }

    /// The modes of the files and directories it creates.
    pub fn modes(&self) -> Modes {
        self.modes
    }

    fn open_bucket(
        url: &BucketUrl,
        modes: Modes,
        started: DateTime<Utc>,
        shard: Option<&Shard>,
        settings: &StoreSettings,
    ) -> Result<Arc<Self>, RunError> {
        let remote = Remote::connect(url, settings).map_err(RunError::StoreSettings)?;
        let err = |source: io::Error| RunError::OutputDir {
            path: PathBuf::from(url.to_string()),
            source,
        };
        let r = remote.share();
        remote
            .block_on(async move { r.check_access().await })
            .map_err(|e| err(e.into()))?;
        let (run, heartbeat) = loop {
            let run = RunId::new(started, shard);
            let (r, key) = (remote.share(), lock_relative(run.as_str()));
            let content = bytes::Bytes::from(run.to_string());
            let started = remote
                .block_on(async move { Heartbeat::start(&r, key, content).await })
                .map_err(|e| err(e.into()))?;
            if let Some(h) = started {
                break (run, h);
            }
        };
        let scratch = tempfile::Builder::new()
            .prefix("jumio-export-scratch-")
            .tempdir()
            .map_err(|e| {
                err(io::Error::other(format!(
                    "creating the local scratch directory (under TMPDIR): {e}"
                )))
            })?;
        let root = scratch.path().to_path_buf();
        create_dataset_dirs(&root, modes).map_err(err)?;
        let lock = RunLock::take_id(&root, modes, &run).map_err(err)?;
        modes
            .create_dir_all(&archive::layout::run_scratch_dir(&root, run.as_str()))
            .map_err(err)?;
        let location = OutputLocation {
            root,
            modes,
            run,
            lock,
            bucket: Some(Bucket {
                remote,
                heartbeat,
                _scratch: scratch,
            }),
        };
        location.sweep_bucket().map_err(err)?;
        location.read_commits().map_err(err)?;
        Ok(Arc::new(location))
    }

    /// The directory (for a bucket: the local scratch directory files are written to first).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The location as the user named it: the directory, or `s3://bucket/prefix`.
    pub fn name(&self) -> PathBuf {
        match &self.bucket {
            Some(b) => PathBuf::from(b.remote.url().to_string()),
            None => self.root.clone(),
        }
    }

    /// The store's request counters, for a bucket: (requests, transient failures retried).
    pub fn store_requests(&self) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering;
        self.bucket.as_ref().map(|b| {
            let s = b.remote.stats();
            (
                s.requests.load(Ordering::Relaxed),
                s.retried.load(Ordering::Relaxed),
            )
        })
    }

    /// This run's id.
    pub fn run(&self) -> &RunId {
        &self.run
    }

    /// Where the archive of `reference` lives, whether or not it exists.
    pub fn archive_path(&self, reference: &str) -> PathBuf {
        archive::archive_path(&self.root, reference)
    }

    /// Whether `run` is live: its lock file exists and is locked (by any process, this one
    /// included).
    pub fn is_live(&self, run: &str) -> bool {
        let Some(b) = &self.bucket else {
            return RunLock::is_held(&self.root, run);
        };
        if run == self.run.as_str() {
            return true;
        }
        let (r, key) = (b.remote.share(), lock_relative(run));
        match b.remote.block_on(async move { r.head(&key).await }) {
            Ok(Some(beat)) => store::heartbeat_live(beat.last_modified),
            Ok(None) => false,
            // Cannot tell: assume live, so nothing of it is taken over or removed.
            Err(_) => true,
        }
    }

    /// Whether `run` has committed.
    pub fn has_commit(&self, run: &str) -> bool {
        if dataset::commit::path(&self.root, run).exists() {
            return true;
        }
        let Some(b) = &self.bucket else {
            return false;
        };
        let (r, key) = (b.remote.share(), dataset::commit_relative(run));
        // Cannot tell: assume committed, so nothing of it is taken over or removed.
        !matches!(
            b.remote.block_on(async move { r.head(&key).await }),
            Ok(None)
        )
    }

    /// Every commit, read and checked against its parts' sizes (blocking).
    pub fn catalogue(&self) -> Result<Catalogue, RunError> {
        Catalogue::read(&self.root).map_err(|e| RunError::Dataset(e.to_string()))
    }

    /// Writes one archive (blocking), recording this run as its creator; create-if-absent.
    pub fn write_archive(
        &self,
        reference: &str,
        entries: &[ArchiveEntry],
        meta: &ProvenanceMeta,
        key: Option<&ArchiveKey>,
    ) -> Result<WrittenArchive, archive::ArchiveError> {
        let meta = ProvenanceMeta {
            run: Some(self.run.to_string()),
            ..meta.clone()
        };
        archive::write_archive_with_key(&self.root, reference, entries, &meta, key, self.modes)
    }

    /// The writer of the archive of `reference`, recording this run as its creator: a
    /// temporary file named by this run until it is finished.
    pub fn open_archive(
        &self,
        reference: &str,
        meta: &ProvenanceMeta,
        key: Option<ArchiveKey>,
    ) -> Result<archive::ArchiveWriter, archive::ArchiveError> {
        let meta = ProvenanceMeta {
            run: Some(self.run.to_string()),
            ..meta.clone()
        };
        archive::ArchiveWriter::create(&self.root, reference, &meta, key, self.modes)
    }

    /// What the archive of `reference` already under its final name means for this run
    /// (blocking). An archive is listed by the run that created it; one whose creator died
    /// without committing is claimed (`archives/.claims/{reference}/{owner}`, create-if-absent)
    /// by exactly one later run, which lists it without fetching.
    pub fn existing_archive(
        &self,
        reference: &str,
        kind: Kind,
        key: Option<&ArchiveKey>,
    ) -> Existing {
        let mode = if key.is_some() {
            ArchiveMode::ZipAes
        } else {
            ArchiveMode::Zip
        };
        self.existing_archive_in(reference, kind, key, mode, Pii::Full)
    }

    /// [`OutputLocation::existing_archive`] for a run whose archives are of `mode` (and whose
    /// tables are of profile `pii`): an archive of the reference in another mode is
    /// [`Existing::Mismatch`]; an age archive is taken over through its takeover record, without
    /// being opened.
    pub fn existing_archive_in(
        &self,
        reference: &str,
        kind: Kind,
        key: Option<&ArchiveKey>,
        mode: ArchiveMode,
        pii: Pii,
    ) -> Existing {
        let zip_relative = archive::layout::relative_path(reference);
        let age_relative = archive::layout::age_relative_path(reference);
        let there = |relative: &str| self.exists(relative);
        let (zip_there, age_there) = match (there(&zip_relative), there(&age_relative)) {
            (Ok(z), Ok(a)) => (z, a),
            (Err(e), _) | (_, Err(e)) => {
                return Existing::Unreadable(format!("reading it back failed: {e}"));
            }
        };
        if mode == ArchiveMode::Age {
            if zip_there {
                return Existing::Mismatch {
                    setting: mode.setting_between(ArchiveMode::Zip),
                    found: format!(
                        "{zip_relative} is a ZIP archive (plain or encrypted with [output] encrypt_archives)"
                    ),
                };
            }
            if !age_there {
                return Existing::Absent;
            }
            return self.existing_age_archive(reference, kind, pii);
        }
        if age_there {
            return Existing::Mismatch {
                setting: mode.setting_between(ArchiveMode::Age),
                found: format!("{age_relative} is {}", ArchiveMode::Age.describe()),
            };
        }
        if !zip_there {
            return Existing::Absent;
        }
        self.existing_zip_archive(reference, kind, key, mode, &zip_relative)
    }

    /// [`OutputLocation::existing_archive_in`] for the ZIP archive of `reference`, which is
    /// there (at `zip_relative`), in a run whose archives are of `mode` (plain or AES ZIP).
    fn existing_zip_archive(
        &self,
        reference: &str,
        kind: Kind,
        key: Option<&ArchiveKey>,
        mode: ArchiveMode,
        zip_relative: &str,
    ) -> Existing {
        let checked = match &self.bucket {
            None => {
                let path = self.archive_path(reference);
                judge_zip(&path, reference, kind, key)
            }
            Some(b) => match self.check_remote_archive(b, reference, kind, key) {
                Ok(None) => return Existing::Absent,
                Ok(Some(checked)) => checked,
                Err(e) => return Existing::Unreadable(e),
            },
        };
        let (checked, encrypted) = match checked {
            Ok(checked) => checked,
            Err(Rejected::Findings(findings)) => return Existing::Damaged(findings),
            Err(Rejected::WrongKey) => return wrong_key(key, zip_relative),
        };
        if mode == ArchiveMode::ZipAes && !encrypted {
            return Existing::Mismatch {
                setting: mode.setting_between(ArchiveMode::Zip),
                found: format!("{zip_relative} is {}", ArchiveMode::Zip.describe()),
            };
        }
        let owner = checked
            .run
            .clone()
            .unwrap_or_else(|| LEGACY_OWNER.to_string());
        match self.take_over(reference, owner) {
            None => Existing::Ours(Box::new(checked)),
            Some(other) => other,
        }
    }

    /// Takes the archive of `reference` over from `owner`, following the claims: `None` when
    /// this run lists it now, else what it is ([`Existing::OtherRun`], or damaged claims).
    fn take_over(&self, reference: &str, mut owner: String) -> Option<Existing> {
        // Each claim names the next owner; a chain longer than this is not one runs made.
        for _ in 0..64 {
            if owner == self.run.as_str() {
                return None;
            }
            if self.has_commit(&owner) || self.is_live(&owner) {
                return Some(Existing::OtherRun(owner));
            }
            match self.claim(reference, &owner) {
                Ok(None) => return None,
                Ok(Some(next)) => owner = next,
                Err(e) => return Some(Existing::Damaged(format!("claiming it failed: {e}"))),
            }
        }
        Some(Existing::Damaged(
            "its claims form no chain a run could have made".into(),
        ))
    }

    /// An age archive no commit lists: its ciphertext is hashed (never opened: this machine has
    /// no identity) and matched with a takeover record of the run that wrote it; then the
    /// claims decide as for any archive. No record, or none whose hash matches: damaged.
    fn existing_age_archive(&self, reference: &str, kind: Kind, pii: Pii) -> Existing {
        let relative = archive::layout::age_relative_path(reference);
        let (sha256, bytes) = match self.hash_archive(&relative, reference) {
            Ok(h) => h,
            Err(e) => return Existing::Unreadable(format!("reading it back failed: {e}")),
        };
        let records = match self.takeover_records(reference) {
            Ok(records) => records,
            Err(e) => {
                return Existing::Unreadable(format!("reading its takeover records failed: {e}"));
            }
        };
        let Some(record) = records
            .into_iter()
            .find(|r| r.reference == reference && r.sha256 == sha256 && r.bytes == bytes)
        else {
            return Existing::Damaged(format!(
                "an age archive (sha256 {sha256}) that no takeover record (runs/*/takeover/{reference}.json) describes: this machine cannot open it to check it"
            ));
        };
        if record.kind() != Some(kind) {
            return Existing::Damaged(format!(
                "its takeover record says it is a {} transaction, not a {kind} transaction",
                record.kind
            ));
        }
        if record.pii != pii {
            return Existing::Mismatch {
                setting: "[output] pii",
                found: format!(
                    "{relative} was written with pii = \"{}\" (its takeover record, run {})",
                    record.pii, record.run
                ),
            };
        }
        let Some(cells) = record.cells(kind, pii) else {
            return Existing::Damaged(
                "its takeover record's row does not fit the table's columns".into(),
            );
        };
        let archive = WrittenArchive {
            path: self.root.join(&relative),
            relative,
            sha256,
            bytes,
            files: record.archived_files(),
        };
        match self.take_over(reference, record.run) {
            None => Existing::OursSealed(Box::new((archive, cells))),
            Some(other) => other,
        }
    }

    /// Whether a file of the dataset exists (a bucket: HEAD).
    fn exists(&self, relative: &str) -> Result<bool, String> {
        let Some(b) = &self.bucket else {
            return Ok(std::fs::symlink_metadata(self.root.join(relative)).is_ok());
        };
        let (r, rel) = (b.remote.share(), relative.to_string());
        b.remote
            .block_on(async move { r.head(&rel).await })
            .map(|o| o.is_some())
            .map_err(|e| e.to_string())
    }

    /// sha256 and size of an archive (a bucket's is downloaded to the scratch directory, hashed
    /// and removed).
    fn hash_archive(&self, relative: &str, reference: &str) -> io::Result<(String, u64)> {
        let Some(b) = &self.bucket else {
            return archive::age::hash_file(&self.root.join(relative));
        };
        let local = archive::layout::run_scratch_dir(&self.root, self.run.as_str())
            .join(format!("{reference}.zip.age.check"));
        let (r, rel, dest) = (b.remote.share(), relative.to_string(), local.clone());
        b.remote
            .block_on(async move { r.download(&rel, &dest).await })
            .map_err(io::Error::from)?;
        let hashed = archive::age::hash_file(&local);
        let _ = std::fs::remove_file(&local);
        hashed
    }

    /// Every run's takeover record of `reference` (`runs/*/takeover/{reference}.json`) that
    /// parses.
    fn takeover_records(&self, reference: &str) -> io::Result<Vec<TakeoverRecord>> {
        let mut found = Vec::new();
        let Some(b) = &self.bucket else {
            self.for_each_run_entry(|run, _| {
                let path = self.root.join(takeover::relative(run, reference));
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_file() => {}
                    _ => return Ok(()),
                }
                if let Some(record) = TakeoverRecord::parse(&std::fs::read(&path)?) {
                    found.push(record);
                }
                Ok(())
            })?;
            return Ok(found);
        };
        let r = b.remote.share();
        let suffix = format!("/{}/{reference}.json", takeover::TAKEOVER_DIR);
        let bodies = b
            .remote
            .block_on(async move {
                let listed = r.list(dataset::RUNS_DIR).await?;
                let mut bodies = Vec::new();
                for o in listed.iter().filter(|o| o.path.ends_with(&suffix)) {
                    bodies.push(r.get_bytes(&o.path).await?);
                }
                Ok::<_, store::StoreError>(bodies)
            })
            .map_err(io::Error::from)?;
        found.extend(bodies.iter().filter_map(|b| TakeoverRecord::parse(b)));
        Ok(found)
    }

    /// Writes this run's takeover record of an age archive about to be published
    /// (`runs/{run}/takeover/{reference}.json`; in a bucket too, before the archive). From now
    /// on the run's staging area keeps its records when the run ends without a commit.
    pub fn write_takeover_record(&self, record: &TakeoverRecord) -> io::Result<()> {
        let relative = takeover::relative(self.run.as_str(), &record.reference);
        let dest = self.root.join(&relative);
        let dir = dest.parent().expect("runs/{run}/takeover");
        self.modes.create_dir_all(dir)?;
        self.lock.keep_records.store(true, Ordering::Relaxed);
        let tmp = dir.join(format!(".{}.json.tmp", record.reference));
        let bytes = record.to_bytes();
        if dataset::publish::write_no_replace(&tmp, &dest, &bytes, self.modes)?
            != Published::Created
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{relative} exists already"),
            ));
        }
        let Some(b) = &self.bucket else {
            return Ok(());
        };
        let r = b.remote.share();
        b.remote
            .block_on(async move { r.put_bytes(&relative, bytes.into(), true).await })
            .map_err(io::Error::from)
    }

    /// Removes this run's takeover record of `reference` (its archive was not published:
    /// another run's was there). Best effort.
    pub fn remove_takeover_record(&self, reference: &str) {
        let relative = takeover::relative(self.run.as_str(), reference);
        let _ = std::fs::remove_file(self.root.join(&relative));
        if let Some(b) = &self.bucket {
            let r = b.remote.share();
            let _ = b.remote.block_on(async move { r.delete(&relative).await });
        }
    }

    /// Whether the takeover record of `reference` left by the dead run `owner` is no longer
    /// needed: `owner` committed (its commit lists the archive), or the run its claims lead to
    /// did.
    fn record_settled(&self, reference: &str, owner: &str) -> bool {
        let mut owner = owner.to_string();
        for _ in 0..64 {
            if self.has_commit(&owner) {
                return true;
            }
            match self.read_claim(reference, &owner) {
                Some(next) => owner = next,
                None => return false,
            }
        }
        false
    }

    /// The run named by `archives/.claims/{reference}/{owner}`, when it exists and names one.
    fn read_claim(&self, reference: &str, owner: &str) -> Option<String> {
        let relative = format!("{}/.claims/{reference}/{owner}", archive::ARCHIVES_DIR);
        let text = match &self.bucket {
            None => std::fs::read_to_string(self.root.join(&relative)).ok()?,
            Some(b) => {
                let r = b.remote.share();
                let bytes = b
                    .remote
                    .block_on(async move {
                        match r.head(&relative).await? {
                            None => Ok(None),
                            Some(_) => r.get_bytes(&relative).await.map(Some),
                        }
                    })
                    .ok()??;
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        let next = text.trim();
        RunId::parse(next).map(|_| next.to_string())
    }

    /// Creates `archives/.claims/{reference}/{owner}` naming this run. `Ok(None)`: claimed;
    /// `Ok(Some(run))`: another run claimed it first.
    fn claim(&self, reference: &str, owner: &str) -> io::Result<Option<String>> {
        if let Some(b) = &self.bucket {
            let relative = format!("{}/.claims/{reference}/{owner}", archive::ARCHIVES_DIR);
            let (r, content) = (b.remote.share(), bytes::Bytes::from(self.run.to_string()));
            let claimed = b.remote.block_on(async move {
                match r.put_bytes(&relative, content, true).await {
                    Ok(()) => Ok(None),
                    Err(e) if e.already_exists() => r.get_bytes(&relative).await.map(Some),
                    Err(e) => Err(e),
                }
            })?;
            let Some(next) = claimed else {
                return Ok(None);
            };
            let next = String::from_utf8_lossy(&next).trim().to_string();
            if RunId::parse(&next).is_none() {
                return Err(io::Error::other(format!(
                    "{}/archives/.claims/{reference}/{owner} names no run",
                    b.remote.url()
                )));
            }
            return Ok(Some(next));
        }
        let claims = self.root.join(archive::ARCHIVES_DIR).join(".claims");
        // One level at a time: `.claims` itself must not be a link (archives/ was checked when
        // the location was opened).
        self.modes.create_dir_all(&claims)?;
        let dir = claims.join(reference);
        self.modes.create_dir_all(&dir)?;
        let dest = dir.join(owner);
        let tmp = dir.join(format!(".{owner}.{}.tmp", self.run));
        match dataset::publish::write_no_replace(
            &tmp,
            &dest,
            self.run.as_str().as_bytes(),
            self.modes,
        )? {
            Published::Created => Ok(None),
            Published::AlreadyThere => {
                let next = std::fs::read_to_string(&dest)?;
                let next = next.trim();
                if RunId::parse(next).is_none() {
                    return Err(io::Error::other(format!("{} names no run", dest.display())));
                }
                Ok(Some(next.to_string()))
            }
        }
    }

    /// How this run's table parts are written.
    pub fn part_options(&self, csv: bool, parquet: bool) -> PartOptions {
        PartOptions {
            root: self.root.clone(),
            run: self.run.clone(),
            csv,
            parquet,
            csv_neutralise_formulas: true,
            pii: Default::default(),
            pseudonymiser: None,
            modes: self.modes,
            max_rows: PART_ROWS,
            max_bytes: PART_BYTES,
            skip_empty: Default::default(),
        }
    }

    /// The root hash, spilling its sorted lines to unnamed files on this location's disk.
    pub fn root_hash(&self) -> RootHash {
        RootHash::new(&self.root)
    }

    /// Publishes the commit record (create-if-absent; a run id is never reused).
    pub fn write_commit(&self, commit: &Commit) -> Result<(), RunError> {
        let output = |message: String| RunError::Output {
            what: dataset::commit_relative(&commit.run),
            message,
        };
        match &self.bucket {
            Some(b) => self.upload_parts(b, commit).map_err(output)?,
            // The run's archives were renamed into `archives/` without a directory fsync each
            // (`Sealed::publish_unsynced`); this one makes every name there durable before the
            // commit that lists them is written. Power loss before it: the commit is absent, and
            // an archive whose name was lost is fetched again by the next run. After it, every
            // archive the commit lists has its data (fsynced before the rename) and its name.
            // It also covers an archive this run took over from a dead run that never synced
            // it: its name is in the directory this fsync writes. A commit that lists no archive
            // (a rerun with nothing to fetch) has none to make durable.
            None if commit.archives.count > 0 => {
                fsmode::sync_dir(&self.root.join(archive::layout::ARCHIVES_DIR))
                    .map_err(|e| output(format!("syncing archives/: {e}")))?
            }
            None => {}
        }
        match commit.write(&self.root, self.modes) {
            Ok(Published::Created) => {
                if self.bucket.is_none() {
                    // Its commit lists every archive its records describe.
                    self.lock.keep_records.store(false, Ordering::Relaxed);
                }
            }
            Ok(Published::AlreadyThere) => return Err(output("already exists".into())),
            Err(e) => return Err(output(e.to_string())),
        }
        let Some(b) = &self.bucket else {
            return Ok(());
        };
        // The publish step. A run whose heartbeat went stale may have been taken for dead and
        // its archives listed by another run meanwhile: it does not commit.
        if !b.heartbeat.is_fresh() {
            return Err(output(format!(
                "this run could not refresh its heartbeat {}/{} for too long: other runs may have taken it for dead, so it does not commit; run again",
                b.remote.url(),
                lock_relative(self.run.as_str())
            )));
        }
        let relative = dataset::commit_relative(&commit.run);
        let bytes = std::fs::read(self.root.join(&relative)).map_err(|e| output(e.to_string()))?;
        let r = b.remote.share();
        b.remote
            .block_on(async move { r.put_own(&relative, bytes.into()).await })
            .map_err(|e| {
                output(if e.already_exists() {
                    "already exists".into()
                } else {
                    e.to_string()
                })
            })?;
        self.lock.keep_records.store(false, Ordering::Relaxed);
        // Commits other runs published meanwhile, for the dataset's failures.csv.
        self.read_commits().map_err(|e| output(e.to_string()))
    }

    /// Uploads every part `commit` lists from the scratch directory (before the commit).
    fn upload_parts(&self, b: &Bucket, commit: &Commit) -> Result<(), String> {
        use futures::StreamExt;
        let uploads: Vec<_> = commit
            .parts
            .iter()
            .map(|p| {
                let (r, local, relative) =
                    (b.remote.share(), self.root.join(&p.path), p.path.clone());
                async move { r.upload_unique(&local, &relative).await }
            })
            .collect();
        let results = b.remote.block_on(async move {
            futures::stream::iter(uploads)
                .buffer_unordered(store::UPLOADS_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
        });
        results
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Puts a finished archive in its place: for a local directory it is there already; for a
    /// bucket it is uploaded create-if-absent ([`archive::ArchiveError::AlreadyExists`] when
    /// another run's is there) and its scratch copy removed.
    pub async fn publish_archive(
        &self,
        written: archive::WrittenArchive,
    ) -> Result<archive::WrittenArchive, archive::ArchiveError> {
        let Some(b) = &self.bucket else {
            return Ok(written);
        };
        let staging = format!(
            "{}/{}/{}.upload",
            dataset::RUNS_DIR,
            self.run,
            written.relative.trim_start_matches("archives/")
        );
        let uploaded = b
            .remote
            .upload_create(&written.path, &written.relative, &staging)
            .await;
        let _ = tokio::fs::remove_file(&written.path).await;
        match uploaded {
            Ok(()) => Ok(written),
            Err(e) if e.already_exists() => Err(archive::ArchiveError::AlreadyExists {
                path: PathBuf::from(e.location),
            }),
            Err(e) => Err(archive::ArchiveError::Io {
                action: "uploading",
                path: PathBuf::from(format!("{}/{}", b.remote.url(), written.relative)),
                source: io::Error::other(e.message),
            }),
        }
    }

    /// The archive of `reference` in the bucket, downloaded to the scratch directory and
    /// checked (then removed): `Ok(None)` when there is none.
    #[allow(clippy::type_complexity)]
    fn check_remote_archive(
        &self,
        b: &Bucket,
        reference: &str,
        kind: Kind,
        key: Option<&ArchiveKey>,
    ) -> Result<Option<Result<(CheckedArchive, bool), Rejected>>, String> {
        let relative = archive::layout::relative_path(reference);
        let local = archive::layout::run_scratch_dir(&self.root, self.run.as_str())
            .join(format!("{reference}.zip.check"));
        let (r, rel, dest) = (b.remote.share(), relative.clone(), local.clone());
        let found = b.remote.block_on(async move {
            match r.head(&rel).await? {
                None => Ok(false),
                Some(_) => r.download(&rel, &dest).await.map(|_| true),
            }
        });
        match found {
            Ok(false) => Ok(None),
            Ok(true) => {
                let checked = judge_zip(&local, reference, kind, key);
                let _ = std::fs::remove_file(&local);
                Ok(Some(checked))
            }
            Err(e) => Err(format!("reading it back failed: {e}")),
        }
    }

    /// Rewrites `failures.csv` (temporary name, rename) with the dataset's open follow-ups, which
    /// `fill` hands to the writer it is given.
    pub fn write_failures(
        &self,
        fill: impl FnOnce(&mut FailuresWriter) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        let output = |e: io::Error| RunError::Output {
            what: dataset::FAILURES_CSV.into(),
            message: e.to_string(),
        };
        let mut w = FailuresWriter::create(&self.root, self.modes).map_err(output)?;
        fill(&mut w)?;
        w.finish().map_err(output)?;
        self.upload_overwrite(dataset::FAILURES_CSV).map_err(output)
    }

    /// For a bucket: uploads the scratch directory's `relative` over the bucket's.
    fn upload_overwrite(&self, relative: &str) -> io::Result<()> {
        let Some(b) = &self.bucket else {
            return Ok(());
        };
        let bytes = std::fs::read(self.root.join(relative))?;
        let (r, relative) = (b.remote.share(), relative.to_string());
        b.remote
            .block_on(async move { r.put_bytes(&relative, bytes.into(), false).await })
            .map_err(io::Error::from)
    }

    /// Writes `report.json` (temporary name, fsync, rename).
    pub fn write_report_value(&self, report: &serde_json::Value) -> Result<(), RunError> {
        crate::output::report::write_json(&self.root, self.modes, report)
            .and_then(|()| self.upload_overwrite(dataset::REPORT_JSON))
            .map_err(|e| RunError::Output {
                what: dataset::REPORT_JSON.into(),
                message: e.to_string(),
            })
    }

    /// Writes `report.html` (temporary name, fsync, rename), like `report.json`.
    pub fn write_report_html(&self, html: &str) -> Result<(), RunError> {
        crate::output::report::write_atomic(
            &self.root,
            self.modes,
            dataset::REPORT_HTML,
            html.as_bytes(),
        )
        .map_err(|e| RunError::Output {
            what: dataset::REPORT_HTML.into(),
            message: e.to_string(),
        })
    }

    /// Removes what dead runs left that no commit lists: temporaries of archives, claims, parts
    /// and commit records, and finished parts of a run that died before its commit (they were
    /// never part of the dataset, and would otherwise show up in every glob of its tables). A
    /// live run's files are in flight and left alone; a committed run's parts are the dataset.
    fn remove_dead_temporaries(&self) -> io::Result<()> {
        self.remove_dead_scratch_dirs()?;
        for table in dataset::TABLES {
            remove_files_in(&dataset::table_dir(&self.root, table), |name| {
                part_run(name).is_some_and(|(run, finished)| {
                    let committed = finished && self.has_commit(run);
                    !committed && !self.is_live(run)
                })
            })?;
        }
        remove_files_in(&self.root.join(dataset::COMMITS_DIR), |name| {
            name.strip_prefix('.')
                .and_then(|n| n.strip_suffix(".json.tmp"))
                .is_some_and(|run| !self.is_live(run))
        })
    }
}

impl OutputLocation {
    /// For a bucket: removes what dead runs left that no commit lists — their heartbeats and
    /// staged uploads (`runs/{run}.lock`, `runs/{run}/…`) and the parts of a run that died
    /// before its commit. Lists `runs/` and `tables/`, never `archives/`.
    fn sweep_bucket(&self) -> io::Result<()> {
        let Some(b) = &self.bucket else {
            return Ok(());
        };
        let r = b.remote.share();
        let (runs, tables, commits) = b.remote.block_on(async move {
            Ok::<_, store::StoreError>((
                r.list(dataset::RUNS_DIR).await?,
                r.list(dataset::TABLES_DIR).await?,
                r.list(dataset::COMMITS_DIR).await?,
            ))
        })?;
        let committed: std::collections::HashSet<&str> = commits
            .iter()
            .filter_map(|c| c.path.strip_prefix("commits/")?.strip_suffix(".json"))
            .collect();
        let mut dead = Vec::new();
        let beats: std::collections::HashMap<&str, &store::Listed> = runs
            .iter()
            .filter_map(|o| {
                let name = o.path.strip_prefix("runs/")?.strip_suffix(".lock")?;
                RunId::parse(name).map(|_| (name, o))
            })
            .collect();
        for o in &runs {
            let Some(rest) = o.path.strip_prefix("runs/") else {
                continue;
            };
            let run = rest
                .strip_suffix(".lock")
                .filter(|r| !r.contains('/'))
                .or_else(|| rest.split_once('/').map(|(r, _)| r));
            let Some(run) = run.filter(|r| RunId::parse(r).is_some()) else {
                continue;
            };
            let live = run == self.run.as_str()
                || beats
                    .get(run)
                    .is_some_and(|beat| store::heartbeat_live(beat.last_modified));
            // A takeover record of a dead run stays until a commit lists its archive.
            let record = rest
                .strip_prefix(run)
                .and_then(|r| r.strip_prefix(&format!("/{}/", takeover::TAKEOVER_DIR)))
                .and_then(|r| r.strip_suffix(".json"));
            if let Some(reference) = record
                && !live
                && !self.record_settled(reference, run)
            {
                continue;
            }
            if !live {
                dead.push(o.path.clone());
            }
        }
        for o in &tables {
            let Some(name) = o.path.rsplit('/').next() else {
                continue;
            };
            // Parts reach a bucket finished (uploaded whole), or not at all.
            if part_run(name).is_some_and(|(run, _)| {
                !committed.contains(run) && !self.has_commit(run) && !self.is_live(run)
            }) {
                dead.push(o.path.clone());
            }
        }
        let r = b.remote.share();
        b.remote.block_on(async move {
            for path in dead {
                r.delete(&path).await?;
            }
            Ok::<_, store::StoreError>(())
        })?;
        Ok(())
    }

    /// For a bucket: reads every commit the scratch directory does not have yet, with the
    /// parts they list, into it, so the catalogue reads them as it reads a local dataset. A
    /// part is checked against the bucket's listing (a missing or short one stays missing, and
    /// the catalogue refuses the commit as it does locally); only the parts the catalogue reads
    /// are downloaded (Parquet, or CSV where a commit has no Parquet of that table), the others
    /// stand in as empty files of the listed size.
    fn read_commits(&self) -> io::Result<()> {
        let Some(b) = &self.bucket else {
            return Ok(());
        };
        let r = b.remote.share();
        let root = self.root.clone();
        b.remote
            .block_on(async move {
                let commits = r.list(dataset::COMMITS_DIR).await?;
                let new: Vec<_> = commits
                    .into_iter()
                    .filter(|c| c.path.ends_with(".json") && !root.join(&c.path).exists())
                    .collect();
                if new.is_empty() {
                    return Ok(());
                }
                let parts: std::collections::HashMap<String, u64> = r
                    .list(dataset::TABLES_DIR)
                    .await?
                    .into_iter()
                    .map(|o| (o.path, o.size))
                    .collect();
                for c in new {
                    let bytes = r.get_bytes(&c.path).await?;
                    let local_err = |e: io::Error| store::StoreError {
                        location: c.path.clone(),
                        message: e.to_string(),
                        kind: store::StoreErrorKind::Other,
                    };
                    if let Ok(commit) = serde_json::from_slice::<Commit>(&bytes) {
                        for p in &commit.parts {
                            let Some(&size) = parts.get(&p.path) else {
                                continue;
                            };
                            let dest = root.join(&p.path);
                            let has_parquet = commit.parts.iter().any(|q| {
                                q.table == p.table && q.format == dataset::Format::Parquet
                            });
                            let read = p.format == dataset::Format::Parquet || !has_parquet;
                            if read && size == p.bytes {
                                r.download(&p.path, &dest).await?;
                            } else {
                                std::fs::create_dir_all(dest.parent().unwrap_or(&root))
                                    .map_err(local_err)?;
                                std::fs::File::create(&dest)
                                    .and_then(|f| f.set_len(size))
                                    .map_err(local_err)?;
                            }
                        }
                    }
                    // The record itself last: it is what says the commit was read.
                    let dest = root.join(&c.path);
                    std::fs::write(&dest, &bytes).map_err(local_err)?;
                }
                Ok::<_, store::StoreError>(())
            })
            .map_err(io::Error::from)
    }

    /// Removes the staging area `dir` of the dead run `run`, but its takeover records of age
    /// archives that no commit lists yet (their run did not commit, and no run that took them
    /// over has).
    fn remove_dead_staging(&self, run: &str, dir: &Path) -> io::Result<()> {
        let records = dir.join(takeover::TAKEOVER_DIR);
        if !std::fs::symlink_metadata(&records).is_ok_and(|m| m.is_dir()) {
            return std::fs::remove_dir_all(dir);
        }
        remove_all_but_records(dir)?;
        let mut kept = 0;
        for entry in std::fs::read_dir(&records)? {
            let entry = entry?;
            let name = entry.file_name();
            let reference = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|r| archive::layout::valid_reference(r));
            match reference {
                Some(reference) if !self.record_settled(reference, run) => kept += 1,
                _ => std::fs::remove_file(entry.path())?,
            }
        }
        if kept == 0 {
            std::fs::remove_dir_all(dir)?;
        }
        Ok(())
    }

    /// Removes the scratch directories (`runs/{run}/`: archive temporaries) of runs that are not
    /// live. Lists `runs/` — the live and dead runs' locks and directories — never `archives/`,
    /// so the sweep costs the same at any number of archives.
    fn remove_dead_scratch_dirs(&self) -> io::Result<()> {
        self.for_each_run_entry(|run, entry| {
            // `file_type` does not follow a link: a link named like a run is left alone.
            if entry.file_type()?.is_dir() && !self.is_live(run) {
                self.remove_dead_staging(run, &entry.path())?;
            }
            Ok(())
        })
    }

    /// Calls `f` with each entry of the local `runs/` named like a run (its directory, or
    /// whatever stands under that name), and the run.
    fn for_each_run_entry(
        &self,
        mut f: impl FnMut(&str, &std::fs::DirEntry) -> io::Result<()>,
    ) -> io::Result<()> {
        for entry in std::fs::read_dir(self.root.join(dataset::RUNS_DIR))? {
            let entry = entry?;
            let name = entry.file_name();
            if let Some(run) = name.to_str().filter(|n| RunId::parse(n).is_some()) {
                f(run, &entry)?;
            }
        }
        Ok(())
    }
}

/// Why a ZIP archive found under its final name is not taken over.
#[derive(Debug)]
enum Rejected {
    /// Every entry is encrypted and the run has no key or another key: a setting differs.
    WrongKey,
    /// It does not check out: the findings, one line.
    Findings(String),
}

/// [`archive::check`] of a ZIP archive, and whether its entries are encrypted. An archive whose
/// every finding is an entry that the key (or no key) does not open is [`Rejected::WrongKey`].
fn judge_zip(
    path: &Path,
    reference: &str,
    kind: Kind,
    key: Option<&ArchiveKey>,
) -> Result<(CheckedArchive, bool), Rejected> {
    match archive::check(path, reference, Some(kind), key) {
        Ok(checked) => {
            let encrypted = archive::is_encrypted(path).unwrap_or(false);
            Ok((checked, encrypted))
        }
        Err(rejected)
            if !rejected.findings.is_empty()
                && rejected.findings.iter().all(|f| {
                    matches!(f, archive::ArchiveFinding::WrongKey { .. })
                        || matches!(
                            f,
                            archive::ArchiveFinding::ManifestMissing
                                | archive::ArchiveFinding::ProvenanceMissing
                        )
                })
                && rejected
                    .findings
                    .iter()
                    .any(|f| matches!(f, archive::ArchiveFinding::WrongKey { .. })) =>
        {
            Err(Rejected::WrongKey)
        }
        Err(rejected) => Err(Rejected::Findings(rejected.to_string())),
    }
}

/// Removes everything in a run's staging area `dir` but its takeover records (`takeover/`).
fn remove_all_but_records(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if entry.file_name() == takeover::TAKEOVER_DIR && kind.is_dir() {
            continue;
        }
        if kind.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The dataset path of a run's heartbeat (bucket) or lock file (directory).
fn lock_relative(run: &str) -> String {
    format!("{}/{run}.lock", dataset::RUNS_DIR)
}

/// The run a part file belongs to, and whether the part is finished: `{run}-{n}.{ext}`
/// (finished) or `.{run}-{n}.{ext}.tmp` (being written). `None` for any other name.
fn part_run(name: &str) -> Option<(&str, bool)> {
    let (stem, finished) = match name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
        Some(inner) => (inner, false),
        None => (name, true),
    };
    let stem = stem
        .strip_suffix(".csv")
        .or_else(|| stem.strip_suffix(".parquet"))?;
    let (run, n) = stem.rsplit_once('-')?;
    n.parse::<u32>().ok()?;
    RunId::parse(run)?;
    Some((run, finished))
}

/// Removes the regular files of `dir` for which `dead(name)` holds.
fn remove_files_in(dir: &Path, dead: impl Fn(&str) -> bool) -> io::Result<()> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if dead(name) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The run's lock file, `runs/{run}.lock`: created exclusively (so a run id is never taken
/// twice), locked for the run's lifetime, removed when the run ends. Released explicitly on
/// drop: a process that forked meanwhile shares the descriptor, and merely closing ours would
/// leave the lock held until that child calls exec.
#[derive(Debug)]
struct RunLock {
    file: std::fs::File,
    path: PathBuf,
    /// The run wrote takeover records and has not committed: its staging area keeps
    /// `takeover/` when it ends (a later run takes its age archives over with them).
    keep_records: AtomicBool,
}

impl RunLock {
    fn path(root: &Path, run: &str) -> PathBuf {
        root.join(dataset::RUNS_DIR).join(format!("{run}.lock"))
    }

    fn take(
        root: &Path,
        modes: Modes,
        started: DateTime<Utc>,
        shard: Option<&Shard>,
    ) -> io::Result<(RunId, RunLock)> {
        loop {
            let run = RunId::new(started, shard);
            let path = Self::path(root, run.as_str());
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(modes.file);
            }
            let file = match o.open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            modes.restrict(&file)?;
            file.lock()?;
            return Ok((
                run,
                RunLock {
                    file,
                    path,
                    keep_records: AtomicBool::new(false),
                },
            ));
        }
    }

    /// [`RunLock::take`] with a run id already taken (a bucket's heartbeat chose it).
    fn take_id(root: &Path, modes: Modes, run: &RunId) -> io::Result<RunLock> {
        let path = Self::path(root, run.as_str());
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(modes.file);
        }
        let file = o.open(&path)?;
        modes.restrict(&file)?;
        file.lock()?;
        Ok(RunLock {
            file,
            path,
            keep_records: AtomicBool::new(false),
        })
    }

    /// True when `runs/{run}.lock` exists and some open file holds its lock.
    fn is_held(root: &Path, run: &str) -> bool {
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .open(Self::path(root, run))
        else {
            return false;
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(std::fs::TryLockError::WouldBlock) => true,
            // Cannot tell: assume live, so nothing of it is taken over or removed.
            Err(std::fs::TryLockError::Error(_)) => true,
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // The run's scratch directory first, while the lock still says the run is live.
        if let Some(dir) = self
            .path
            .to_str()
            .and_then(|p| p.strip_suffix(".lock"))
            .map(PathBuf::from)
        {
            if self.keep_records.load(Ordering::Relaxed) {
                let _ = remove_all_but_records(&dir);
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// The dataset's directories under `root` (archives, tables, commits, runs), created if absent.
fn create_dataset_dirs(root: &Path, modes: Modes) -> io::Result<()> {
    for dir in [
        archive::ARCHIVES_DIR,
        dataset::TABLES_DIR,
        dataset::COMMITS_DIR,
        dataset::RUNS_DIR,
    ] {
        modes.create_dir_all(&root.join(dir))?;
    }
    Ok(())
}

/// An AES archive that `key` (or, without one, the job) cannot open.
fn wrong_key(key: Option<&ArchiveKey>, zip_relative: &str) -> Existing {
    match key {
        Some(_) => Existing::Mismatch {
            setting: "[output] archive_key_env",
            found: format!(
                "{zip_relative} is encrypted under another key than the one in the job's archive_key_env"
            ),
        },
        None => Existing::Mismatch {
            setting: "[output] encrypt_archives",
            found: format!("{zip_relative} is {}", ArchiveMode::ZipAes.describe()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(root: &Path) -> Arc<OutputLocation> {
        OutputLocation::open(root, Modes::default(), Utc::now(), None).unwrap()
    }

    #[test]
    fn two_runs_open_one_location_with_distinct_ids_and_see_each_other_live() {
        let tmp = tempfile::tempdir().unwrap();
        let a = open(tmp.path());
        let b = open(tmp.path());
        assert_ne!(a.run(), b.run());
        assert!(a.is_live(b.run().as_str()));
        assert!(b.is_live(a.run().as_str()));
        let gone = a.run().to_string();
        drop(a);
        assert!(!b.is_live(&gone));
        assert!(
            !tmp.path()
                .join("runs")
                .join(format!("{gone}.lock"))
                .exists()
        );
    }

    #[test]
    fn only_temporaries_of_dead_runs_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let live = open(tmp.path());
        let live_tmp = tmp.path().join(format!("runs/{}/r1.zip.tmp", live.run()));
        let dead_tmp = tmp.path().join("runs/20200101T000000Z-0000/r2.zip.tmp");
        std::fs::create_dir_all(dead_tmp.parent().unwrap()).unwrap();
        // A link named like a dead run is not followed (nor removed with what it points at).
        let elsewhere = tempfile::tempdir().unwrap();
        let kept = elsewhere.path().join("kept");
        std::fs::write(&kept, b"x").unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path(),
            tmp.path().join("runs/20200101T000000Z-1111"),
        )
        .unwrap();
        let dead_part = tmp
            .path()
            .join("tables/netverify/.20200101T000000Z-0000-0.parquet.tmp");
        let live_part = tmp
            .path()
            .join(format!("tables/netverify/.{}-3.csv.tmp", live.run()));
        let live_finished = tmp
            .path()
            .join(format!("tables/netverify/{}-2.csv", live.run()));
        // Finished parts of a dead run: removed unless its commit lists them.
        let orphan = tmp
            .path()
            .join("tables/netverify/20200101T000000Z-0000-0.csv");
        let committed = tmp
            .path()
            .join("tables/netverify/20200101T000000Z-c0c0-0.csv");
        std::fs::write(tmp.path().join("commits/20200101T000000Z-c0c0.json"), b"{}").unwrap();
        let foreign = tmp.path().join("tables/netverify/notes.csv");
        std::fs::create_dir_all(tmp.path().join("tables/netverify")).unwrap();
        let all = [
            &live_tmp,
            &dead_tmp,
            &dead_part,
            &live_part,
            &live_finished,
            &orphan,
            &committed,
            &foreign,
        ];
        for p in all {
            std::fs::write(p, b"x").unwrap();
        }
        let _second = open(tmp.path());
        assert!(
            live_tmp.exists() && live_part.exists() && live_finished.exists(),
            "a live run's files stay"
        );
        assert!(
            !dead_tmp.exists() && !dead_part.exists(),
            "a dead run's temporaries are removed"
        );
        assert!(!orphan.exists(), "a dead run's uncommitted part is removed");
        assert!(kept.exists(), "a link in runs/ is not followed");
        drop(_second);
        drop(live);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("runs"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect::<Vec<_>>(),
            ["20200101T000000Z-1111"],
            "a run that ends removes its lock and scratch directory"
        );
        assert!(
            committed.exists() && foreign.exists(),
            "committed parts and other files stay"
        );
    }

    #[test]
    fn the_commit_is_written_only_once_the_archives_directory_is_synced() {
        use crate::dataset::commit::{ArchivesRecord, COMMIT_FORMAT, OutputRecord};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let run = open(root);
        let meta = ProvenanceMeta {
            tool_version: "test".into(),
            job_sha256: "0".repeat(64),
            run: None,
        };
        // Renamed into place without a directory fsync: the commit's fsync makes it durable.
        let written = run
            .open_archive("r1", &meta, None)
            .unwrap()
            .finish_unsynced()
            .unwrap();
        assert!(root.join(&written.relative).is_file());
        let commit = Commit {
            format: COMMIT_FORMAT.into(),
            run: run.run().to_string(),
            report: serde_json::json!({"outcomes": {"exported": 1}}),
            parts: Vec::new(),
            archives: ArchivesRecord {
                count: 1,
                root_hash: "11".repeat(32),
                root_hash_method: "m".into(),
            },
            output: OutputRecord::default(),
        };
        let commit_path = crate::dataset::commit::path(root, run.run().as_str());
        // `archives/` cannot be synced (it is gone): no commit may list its archives.
        std::fs::rename(root.join("archives"), root.join("archives-aside")).unwrap();
        let e = run.write_commit(&commit).unwrap_err();
        assert!(e.to_string().contains("syncing archives/"), "{e}");
        assert!(
            !commit_path.exists(),
            "a commit written before archives/ was synced"
        );
        std::fs::rename(root.join("archives-aside"), root.join("archives")).unwrap();
        run.write_commit(&commit).unwrap();
        assert!(commit_path.is_file());
    }

    #[test]
    fn a_directory_of_the_old_layout_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("netverify.csv"), b"reference\n").unwrap();
        let e = OutputLocation::open(tmp.path(), Modes::default(), Utc::now(), None).unwrap_err();
        assert!(matches!(e, RunError::LegacyLayout { .. }), "{e}");
    }

    /// A Netverify archive of `reference` written by `owner` (None: before datasets).
    fn archive_by(root: &Path, reference: &str, owner: Option<&str>) {
        use crate::output::archive::EntryKind;
        let entry = |kind, body: &[u8]| ArchiveEntry {
            kind,
            content_type: "application/json".into(),
            body: bytes::Bytes::copy_from_slice(body),
            api_path: format!("/api/netverify/v2/scans/{reference}"),
            http_status: 200,
            retrieved_at: Utc::now(),
        };
        let entries = [
            entry(EntryKind::Status, br#"{"status":"DONE"}"#),
            entry(
                EntryKind::Data,
                br#"{"document":{"status":"APPROVED_VERIFIED"}}"#,
            ),
            entry(EntryKind::Images, br#"{"images":[]}"#),
        ];
        let meta = ProvenanceMeta {
            tool_version: "test".into(),
            job_sha256: "0".repeat(64),
            run: owner.map(str::to_string),
        };
        archive::write_archive_with_key(root, reference, &entries, &meta, None, Modes::default())
            .unwrap();
    }

    #[test]
    fn an_archive_is_taken_over_only_from_a_dead_uncommitted_owner_and_only_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let live = open(root);
        let dead = "20200101T000000Z-dead";
        let committed = "20200101T000000Z-c0c0";
        std::fs::write(root.join(format!("commits/{committed}.json")), b"{}").unwrap();
        archive_by(root, "by-live", Some(live.run().as_str()));
        archive_by(root, "by-committed", Some(committed));
        archive_by(root, "by-dead", Some(dead));
        archive_by(root, "by-legacy", None);
        let taker = open(root);
        let outcome = |r: &str| taker.existing_archive(r, Kind::Netverify, None);
        assert!(matches!(outcome("by-live"), Existing::OtherRun(o) if o == live.run().as_str()));
        assert!(matches!(outcome("by-committed"), Existing::OtherRun(o) if o == committed));
        assert!(matches!(outcome("by-dead"), Existing::Ours(_)));
        assert!(matches!(outcome("by-legacy"), Existing::Ours(_)));
        assert_eq!(
            std::fs::read_to_string(root.join(format!("archives/.claims/by-dead/{dead}"))).unwrap(),
            taker.run().as_str()
        );
        // Asked again by the same run: still its own (the claim names it).
        assert!(matches!(outcome("by-dead"), Existing::Ours(_)));
        // A second run while the taker lives: the claim names a live run.
        let other = open(root);
        assert!(matches!(
            other.existing_archive("by-dead", Kind::Netverify, None),
            Existing::OtherRun(o) if o == taker.run().as_str()
        ));
        // The taker dies without committing: the next run claims it from the taker.
        let gone = taker.run().to_string();
        drop(taker);
        assert!(matches!(
            other.existing_archive("by-dead", Kind::Netverify, None),
            Existing::Ours(_)
        ));
        assert!(
            root.join(format!("archives/.claims/by-dead/{gone}"))
                .exists()
        );
    }

    #[test]
    fn an_archive_that_does_not_check_out_is_damaged_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = open(tmp.path());
        archive_by(tmp.path(), "r1", Some("20200101T000000Z-dead"));
        let path = loc.archive_path("r1");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            loc.existing_archive("r1", Kind::Netverify, None),
            Existing::Damaged(_)
        ));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Of another kind: damaged for this kind, not taken.
        archive_by(tmp.path(), "r2", Some("20200101T000000Z-dead"));
        assert!(matches!(
            loc.existing_archive("r2", Kind::Authentication, None),
            Existing::Damaged(_)
        ));
    }

    #[test]
    fn takeover_records_outlive_a_run_without_a_commit_until_a_commit_lists_the_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let record = |run: &str, reference: &str| TakeoverRecord {
            format: takeover::TAKEOVER_FORMAT.into(),
            run: run.into(),
            reference: reference.into(),
            kind: "netverify".into(),
            pii: Pii::Full,
            archive: archive::layout::age_relative_path(reference),
            sha256: "ab".repeat(32),
            bytes: 1,
            files: vec![],
            row: vec![],
        };
        let writer = open(root);
        let dead = writer.run().to_string();
        for r in ["r1", "r2"] {
            writer.write_takeover_record(&record(&dead, r)).unwrap();
        }
        let scratch = root.join(format!("runs/{dead}"));
        std::fs::write(scratch.join("r3.zip.tmp"), b"plain").unwrap();
        // Ends without a commit: its records stay, its temporaries go.
        drop(writer);
        let records = scratch.join(takeover::TAKEOVER_DIR);
        assert!(records.join("r1.json").exists() && records.join("r2.json").exists());
        assert!(!scratch.join("r3.zip.tmp").exists());
        // A later run: nothing lists the archives yet, so the sweep keeps the records.
        drop(open(root));
        assert!(records.join("r1.json").exists() && records.join("r2.json").exists());
        // r1 was taken over by a run that committed: its record goes, r2's stays.
        let taker = "20200101T000000Z-7a7a";
        std::fs::create_dir_all(root.join("archives/.claims/r1")).unwrap();
        std::fs::write(root.join(format!("archives/.claims/r1/{dead}")), taker).unwrap();
        std::fs::write(root.join(format!("commits/{taker}.json")), b"{}").unwrap();
        drop(open(root));
        assert!(!records.join("r1.json").exists() && records.join("r2.json").exists());
        // A run whose commit lists its archives keeps no record when it ends.
        let committer = open(root);
        let run = committer.run().to_string();
        committer
            .write_takeover_record(&record(&run, "r4"))
            .unwrap();
        let commit = Commit {
            format: dataset::commit::COMMIT_FORMAT.into(),
            run: run.clone(),
            report: serde_json::json!({}),
            parts: vec![],
            archives: dataset::commit::ArchivesRecord {
                count: 1,
                root_hash: String::new(),
                root_hash_method: String::new(),
            },
            output: Default::default(),
        };
        committer.write_commit(&commit).unwrap();
        drop(committer);
        assert!(!root.join(format!("runs/{run}")).exists());
    }

    #[test]
    fn a_missing_archive_is_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = open(tmp.path());
        assert!(matches!(
            loc.existing_archive("r1", Kind::Netverify, None),
            Existing::Absent
        ));
    }
}
