//! Writing an archive: the entries in their fixed order, `provenance.json`, then
//! `manifest-sha256.txt`, streamed into a temporary file as the bodies arrive and put in place
//! atomically (fsync, rename, directory fsync). Also the removal of temporaries an interrupted
//! run left.
//!
//! [`ArchiveWriter`] takes each body chunk by chunk: it hashes the chunk (sha256 here, the ZIP
//! CRC-32 in the zip writer) and passes it on to the temporary archive in the same pass, so no
//! body is ever held whole in memory beyond [`spool::HOLD_BYTES`](super::spool). The archive's
//! own sha256 is computed by the [`Spool`] as its bytes become final, without reading the file
//! back. [`write_archive`] feeds the writer entries already in memory.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, System, ZipWriter};

use super::super::fsmode::Modes;
use crate::dataset::publish::{Published, publish_no_replace, rename_into_place};

use super::age::AgeRecipients;
use super::layout::{self, ARCHIVES_DIR, MANIFEST_ENTRY, Namer, PROVENANCE_ENTRY};
use super::spool::{Marks, Spool};
use super::{
    ArchiveEntry, ArchiveError, ArchiveKey, ArchivedFile, EntryKind, MANIFEST_CONTENT_TYPE,
    PROVENANCE_CONTENT_TYPE, Provenance, ProvenanceEntry, ProvenanceMeta, TOOL_NAME,
    WrittenArchive, io_err,
};

/// Permissions of every entry: the archive holds personal data.
const ENTRY_MODE: u32 = 0o600;

/// Bytes of a body's start that decide its file extension (the longest magic, PNG's).
const MAGIC_LEN: usize = 8;

/// Writes `archives/{reference}.zip` under `out_dir` from `entries`.
///
/// The archive is written to a temporary file (in the run's scratch directory), fsync'd, moved to its final name
/// only if nothing is there (create-if-absent: an existing archive is never replaced, and
/// [`ArchiveError::AlreadyExists`] says so) and the directory fsync'd; on any error the temporary
/// file is removed and no archive appears. Blocking.
pub fn write_archive(
    out_dir: &Path,
    reference: &str,
    entries: &[ArchiveEntry],
    meta: &ProvenanceMeta,
) -> Result<WrittenArchive, ArchiveError> {
    write_archive_with_key(out_dir, reference, entries, meta, None, Modes::default())
}

/// [`write_archive`] with the output's `modes`, and every entry encrypted (AES-256) under `key`
/// when one is given. Entry
/// names stay readable (they come from the allowlist and carry no personal data); encrypted
/// archives are not byte-identical between writes, since every entry gets a random salt.
pub fn write_archive_with_key(
    out_dir: &Path,
    reference: &str,
    entries: &[ArchiveEntry],
    meta: &ProvenanceMeta,
    key: Option<&ArchiveKey>,
    modes: Modes,
) -> Result<WrittenArchive, ArchiveError> {
    // Names first, in the order given (it numbers other classifiers), then the archive order.
    let names = layout::entry_names(reference, entries)?;
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| layout::order_key(&entries[i].kind, &names[i]));
    let mut writer = ArchiveWriter::create(out_dir, reference, meta, key.cloned(), modes)?;
    for &i in &order {
        let e = &entries[i];
        writer.begin(e.kind.clone(), &e.content_type)?;
        writer.write(&e.body)?;
        writer.end(&e.api_path, e.http_status, e.retrieved_at)?;
    }
    writer.finish()
}

/// An archive written as its bodies arrive, in archive order: [`ArchiveWriter::begin`] an
/// entry, [`ArchiveWriter::write`] its body in chunks, [`ArchiveWriter::end`] it (or
/// [`ArchiveWriter::abandon`] it when the transfer failed and will be tried again), then
/// [`ArchiveWriter::finish`]. Dropped unfinished, it removes its temporary file: no error path
/// and no cancelled transfer leaves one behind, and only `finish` gives the final name.
///
/// `begin`, `write`, `end` and `abandon` write to the page cache and never fsync; `finish`
/// does (blocking).
pub struct ArchiveWriter {
    reference: String,
    final_path: PathBuf,
    /// The temporary archive; removed on drop unless published.
    guard: TempGuard,
    /// Spooled: the zip writer's small writes (headers, the CRC and sizes patched after each
    /// body) land in memory, and the archive's sha256 is taken as the bytes become final.
    zip: ZipWriter<Spool>,
    /// Tells the spool where each entry starts (bytes before it are final).
    marks: Arc<Marks>,
    key: Option<ArchiveKey>,
    /// Encrypts the finished ZIP to these recipients (`archives/{reference}.zip.age`).
    age: Option<AgeRecipients>,
    modes: Modes,
    meta: ProvenanceMeta,
    namer: Namer,
    /// Order key of the last entry, to keep the archive order.
    last: Option<(u8, u64)>,
    /// The entry being received.
    open: Option<OpenEntry>,
    /// Every entry so far, in archive order, with its provenance.
    files: Vec<ArchivedFile>,
    provenance: Vec<ProvenanceEntry>,
    /// Entries whose sha256 the spool takes: (index in `files` and `provenance`, the spool's
    /// index of the body), filled in by `seal`.
    spool_hashed: Vec<(usize, usize)>,
    /// The zip writer has an entry it has not finished (it finishes it when the next starts).
    zip_entry_open: bool,
}

/// The bytes an encrypted entry ends with, written when the zip writer finishes it: the
/// authentication code of WinZip's AES format.
const AES_AUTH_CODE_LEN: u64 = 10;

/// An entry whose body is arriving.
struct OpenEntry {
    kind: EntryKind,
    content_type: String,
    /// The body's first bytes, held until [`MAGIC_LEN`] are known and the name with them.
    head: Vec<u8>,
    /// The entry's name, once it was started in the zip.
    name: Option<String>,
    /// The body's sha256, taken here for an encrypted entry; for a stored one the spool takes
    /// it from the bytes it receives ([`Marks::begin_body`]), beside the archive's own.
    sha256: Option<Sha256>,
    bytes: u64,
    /// The writer's order key before this entry (restored when it is abandoned).
    last: Option<(u8, u64)>,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("path", &self.guard.path)
            .field("entries", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl ArchiveWriter {
    /// Creates the temporary archive of `reference` under `out_dir` (`archives/` with `modes`
    /// where missing). `meta.run` names the temporary, so a live run's is never removed.
    pub fn create(
        out_dir: &Path,
        reference: &str,
        meta: &ProvenanceMeta,
        key: Option<ArchiveKey>,
        modes: Modes,
    ) -> Result<Self, ArchiveError> {
        if !layout::valid_reference(reference) {
            return Err(ArchiveError::InvalidReference {
                reference: reference.to_owned(),
            });
        }
        let dir = out_dir.join(ARCHIVES_DIR);
        modes
            .create_dir_all(&dir)
            .map_err(io_err("creating directory", &dir))?;
        let tmp_path = layout::temp_path(out_dir, reference, meta.run.as_deref());
        if let Some(scratch) = tmp_path.parent().filter(|p| *p != dir) {
            modes
                .create_dir_all(scratch)
                .map_err(io_err("creating directory", scratch))?;
        }
        let file = modes
            .create_file(&tmp_path)
            .map_err(io_err("creating", &tmp_path))?;
        let (spool, marks) = Spool::new(file);
        Ok(ArchiveWriter {
            reference: reference.to_owned(),
            final_path: layout::archive_path(out_dir, reference),
            guard: TempGuard {
                path: tmp_path,
                armed: true,
            },
            zip: ZipWriter::new(spool),
            marks,
            key,
            age: None,
            modes,
            meta: meta.clone(),
            namer: Namer::default(),
            last: None,
            open: None,
            files: Vec::with_capacity(16),
            provenance: Vec::with_capacity(16),
            spool_hashed: Vec::with_capacity(16),
            zip_entry_open: false,
        })
    }

    /// Encrypts the finished archive to `recipients` with age: it is published as
    /// `archives/{reference}.zip.age`, and its sha256 is the ciphertext's.
    pub fn with_age(mut self, recipients: Option<AgeRecipients>) -> Self {
        if recipients.is_some() {
            self.final_path = layout::age_archive_path_of(&self.final_path);
        }
        self.age = recipients;
        self
    }

    /// The temporary file, as errors name it.
    fn tmp(&self) -> &Path {
        &self.guard.path
    }

    fn zip_err(&self, source: ZipError) -> ArchiveError {
        ArchiveError::Write {
            path: self.tmp().to_path_buf(),
            source,
        }
    }

    /// Starts an entry of `kind` whose body has this Content-Type. An entry still open is
    /// abandoned.
    pub fn begin(&mut self, kind: EntryKind, content_type: &str) -> Result<(), ArchiveError> {
        self.abandon()?;
        self.open = Some(OpenEntry {
            kind,
            content_type: content_type.to_owned(),
            head: Vec::new(),
            name: None,
            sha256: self.key.is_some().then(Sha256::new),
            bytes: 0,
            last: self.last,
        });
        Ok(())
    }

    /// The next bytes of the open entry's body, into the archive (the spool takes the body's
    /// sha256 beside the archive's; an encrypted entry's plaintext is hashed here).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ArchiveError> {
        let Some(open) = self.open.as_mut() else {
            return Err(self.no_entry());
        };
        if let Some(sha256) = open.sha256.as_mut() {
            sha256.update(chunk);
        }
        open.bytes += chunk.len() as u64;
        if open.name.is_some() {
            return self.put(chunk);
        }
        if open.head.len() + chunk.len() < MAGIC_LEN {
            open.head.extend_from_slice(chunk);
            return Ok(());
        }
        let take = MAGIC_LEN - open.head.len();
        let mut magic = [0u8; MAGIC_LEN];
        magic[..open.head.len()].copy_from_slice(&open.head);
        magic[open.head.len()..].copy_from_slice(&chunk[..take]);
        let head = std::mem::take(&mut open.head);
        self.start(&magic)?;
        self.put(&head)?;
        self.put(chunk)
    }

    /// Closes the open entry: its body was received whole, from `api_path` with
    /// `http_status` at `retrieved_at`. Its sha256 is recorded by `seal`.
    pub fn end(
        &mut self,
        api_path: &str,
        http_status: u16,
        retrieved_at: DateTime<Utc>,
    ) -> Result<(), ArchiveError> {
        let Some(open) = self.open.as_mut() else {
            return Err(self.no_entry());
        };
        if open.name.is_none() {
            let head = std::mem::take(&mut open.head);
            self.start(&head)?;
            self.put(&head)?;
        }
        let open = self.open.take().expect("checked above");
        let sha256 = match open.sha256 {
            Some(sha256) => hex::encode(sha256.finalize()),
            None => {
                // Taken by the spool, complete once it is flushed (`seal`).
                let index = self.marks.end_body().ok_or_else(|| ArchiveError::Io {
                    action: "hashing an entry never begun in",
                    path: self.guard.path.clone(),
                    source: io::Error::other("no body hash"),
                })?;
                self.spool_hashed.push((self.files.len(), index));
                String::new()
            }
        };
        let file = ArchivedFile {
            entry: open.name.expect("started above"),
            classifier: match open.kind {
                EntryKind::Image { classifier } => Some(classifier),
                _ => None,
            },
            content_type: open.content_type,
            bytes: open.bytes,
            sha256,
        };
        self.provenance.push(ProvenanceEntry {
            entry: file.entry.clone(),
            api_path: api_path.to_owned(),
            http_status,
            content_type: file.content_type.clone(),
            retrieved_at: retrieved_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            bytes: file.bytes,
            sha256: file.sha256.clone(),
            classifier: file.classifier.clone(),
        });
        self.files.push(file);
        Ok(())
    }

    /// Drops the open entry and whatever of its body was written (a transfer that failed and
    /// is tried again); nothing when no entry is open.
    pub fn abandon(&mut self) -> Result<(), ArchiveError> {
        match self.open.take() {
            Some(OpenEntry {
                name: Some(name),
                kind,
                last,
                ..
            }) => {
                self.namer.undo(&kind, &name);
                self.last = last;
                self.zip.abort_file().map_err(|e| self.zip_err(e))?;
                self.zip_entry_open = false;
                self.marks.drop_held_entry();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Names the open entry from its first bytes and starts it in the zip.
    fn start(&mut self, magic: &[u8]) -> Result<(), ArchiveError> {
        let open = self.open.as_mut().expect("an open entry");
        let ext = layout::file_extension(&open.content_type, magic);
        let name = self.namer.name(&open.kind, ext);
        let order = layout::order_key(&open.kind, &name);
        if self.last.is_some_and(|last| order < last) {
            // The flow fetches in archive order; anything else is a bug, never a reordered zip.
            return Err(ArchiveError::Io {
                action: "adding an entry out of archive order to",
                path: self.guard.path.clone(),
                source: io::Error::other(name),
            });
        }
        self.namer.add(&self.reference, &open.kind, &name)?;
        self.last = Some(order);
        open.name = Some(name.clone());
        let spool_hashes = open.sha256.is_none();
        self.start_file(&name)?;
        if spool_hashes {
            // Every byte the spool receives from here to `end` is the body, stored as is.
            self.marks.begin_body();
        }
        Ok(())
    }

    fn start_file(&mut self, name: &str) -> Result<(), ArchiveError> {
        let base = SimpleFileOptions::default()
            .last_modified_time(zip::DateTime::DEFAULT)
            .unix_permissions(ENTRY_MODE)
            .system(System::Unix)
            // Every entry is stored: images and PDFs are compressed already, and JSON
            // responses are a few KB, where a deflate state per entry cost more CPU than it
            // saved.
            .compression_method(CompressionMethod::Stored);
        // The new entry's local header starts where the archive ends now, after what finishing
        // the previous entry appends first: an encrypted entry's authentication code. (Its
        // header is patched inside `start_file` too, so its bytes are final only after it.) An
        // abandoned entry is cut back to this header, never into the entry before it.
        let finishing = if self.key.is_some() && self.zip_entry_open {
            AES_AUTH_CODE_LEN
        } else {
            0
        };
        let header = self.marks.end() + finishing;
        let started = match &self.key {
            Some(k) => self.zip.start_file(
                name,
                base.with_aes_encryption_bytes(zip::AesMode::Aes256, k.bytes()),
            ),
            None => self.zip.start_file(name, base),
        };
        started.map_err(|e| self.zip_err(e))?;
        self.zip_entry_open = true;
        self.marks.hold_from(header);
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        let tmp = self.guard.path.clone();
        self.zip.write_all(bytes).map_err(io_err("writing", &tmp))
    }

    fn no_entry(&self) -> ArchiveError {
        ArchiveError::Io {
            action: "writing a body with no entry begun to",
            path: self.guard.path.clone(),
            source: io::Error::other("no entry begun"),
        }
    }

    /// Fills in the sha256 of the entries the spool hashed (all complete once it is flushed).
    fn spool_digests(&mut self) -> Result<(), ArchiveError> {
        if self.spool_hashed.is_empty() {
            return Ok(());
        }
        let tmp = self.guard.path.clone();
        self.zip.flush().map_err(io_err("hashing", &tmp))?;
        let mut digests = self.marks.take_digests();
        for (file, body) in std::mem::take(&mut self.spool_hashed) {
            let sha256 = digests
                .get_mut(body)
                .and_then(Option::take)
                .ok_or_else(|| ArchiveError::Io {
                    action: "hashing",
                    path: tmp.clone(),
                    source: io::Error::other("an entry's body hash is incomplete"),
                })?;
            self.provenance[file].sha256.clone_from(&sha256);
            self.files[file].sha256 = sha256;
        }
        Ok(())
    }

    /// Stores one of the program's own entries (`provenance.json`, the manifest).
    fn put_own(&mut self, name: &str, content_type: &str, body: &[u8]) -> Result<(), ArchiveError> {
        self.start_file(name)?;
        self.put(body)?;
        self.files.push(ArchivedFile {
            entry: name.to_owned(),
            classifier: None,
            content_type: content_type.to_owned(),
            bytes: body.len() as u64,
            sha256: hex::encode(Sha256::digest(body)),
        });
        Ok(())
    }

    /// Adds `provenance.json` and the manifest, closes the zip, fsyncs it and publishes it at
    /// `archives/{reference}.zip` (with age: `.zip.age`) only if nothing is there. Blocking. An
    /// entry still open is abandoned (it was not received whole).
    pub fn finish(self) -> Result<WrittenArchive, ArchiveError> {
        self.seal()?.publish()
    }

    /// [`ArchiveWriter::finish`] without the directory's fsync ([`Sealed::publish_unsynced`]):
    /// for a run, whose commit fsyncs `archives/` once before it lists any archive.
    pub fn finish_unsynced(self) -> Result<WrittenArchive, ArchiveError> {
        self.seal()?.publish_unsynced()
    }

    /// [`ArchiveWriter::finish`] up to the publication: the archive is complete (and encrypted,
    /// with age) under its temporary name, its hash known; [`Sealed::publish`] gives it its
    /// final name. Blocking.
    pub fn seal(mut self) -> Result<Sealed, ArchiveError> {
        self.abandon()?;
        self.spool_digests()?;
        let provenance = Provenance {
            tool: TOOL_NAME.to_owned(),
            tool_version: self.meta.tool_version.clone(),
            job_sha256: self.meta.job_sha256.clone(),
            reference: self.reference.clone(),
            run: self.meta.run.clone(),
            entries: std::mem::take(&mut self.provenance),
        };
        let mut provenance_json = serde_json::to_vec_pretty(&provenance)
            .expect("provenance is plain strings and numbers");
        provenance_json.push(b'\n');
        self.put_own(PROVENANCE_ENTRY, PROVENANCE_CONTENT_TYPE, &provenance_json)?;
        let manifest: String = self
            .files
            .iter()
            .map(|f| format!("{}  {}\n", f.sha256, f.entry))
            .collect();
        self.put_own(MANIFEST_ENTRY, MANIFEST_CONTENT_TYPE, manifest.as_bytes())?;

        let ArchiveWriter {
            reference,
            final_path,
            guard,
            zip,
            files,
            age,
            modes,
            ..
        } = self;
        let tmp_path = guard.path.clone();
        let spool = zip.finish().map_err(|source| ArchiveError::Write {
            path: tmp_path.clone(),
            source,
        })?;
        let (file, bytes, sha256) = spool.finish().map_err(io_err("writing", &tmp_path))?;
        // A failed fsync is never retried: the temporary file is removed (by the guard) and the
        // reference is fetched again by a later run.
        file.sync_all().map_err(io_err("syncing", &tmp_path))?;
        drop(file);
        let Some(recipients) = age else {
            return Ok(Sealed {
                guard,
                final_path,
                written: WrittenArchive {
                    path: PathBuf::new(),
                    relative: layout::relative_path(&reference),
                    sha256,
                    bytes,
                    files,
                },
            });
        };
        // The plaintext temporary goes when `guard` drops, whatever happens here.
        let plain = guard;
        let sealed_path = layout::age_temp_path_of(&plain.path);
        let sealed = TempGuard {
            path: sealed_path.clone(),
            armed: true,
        };
        let (sha256, bytes) = recipients
            .encrypt_file(&plain.path, &sealed_path, modes)
            .map_err(io_err("encrypting with age", &sealed_path))?;
        drop(plain);
        Ok(Sealed {
            guard: sealed,
            final_path,
            written: WrittenArchive {
                path: PathBuf::new(),
                relative: layout::age_relative_path(&reference),
                sha256,
                bytes,
                files,
            },
        })
    }
}

/// A complete archive under its temporary name ([`ArchiveWriter::seal`]); dropped unpublished,
/// it removes the temporary.
#[derive(Debug)]
pub struct Sealed {
    guard: TempGuard,
    final_path: PathBuf,
    written: WrittenArchive,
}

impl Sealed {
    /// What the archive will be once published (`path` is the final path).
    pub fn written(&self) -> WrittenArchive {
        WrittenArchive {
            path: self.final_path.clone(),
            ..self.written.clone()
        }
    }

    /// Moves the archive to its final name only if nothing is there (create-if-absent: an
    /// existing archive is never replaced, [`ArchiveError::AlreadyExists`]), and fsyncs the
    /// directory. Blocking.
    pub fn publish(self) -> Result<WrittenArchive, ArchiveError> {
        self.publish_with(publish_no_replace)
    }

    /// [`Sealed::publish`] without the directory's fsync: the archive's data and inode are
    /// durable (fsynced under the temporary name), its final name may not survive a power loss
    /// until `archives/` is fsynced. The caller does that before anything durable lists the
    /// archive: a run, before its commit ([`crate::run::location::OutputLocation::write_commit`]),
    /// one fsync for all its archives instead of one each. A name lost to a power loss costs a
    /// fetch again (the temporary, if its name survived, is a dead run's and removed); it never
    /// leaves a listed archive missing, nor a final name on a partial file. Blocking.
    pub fn publish_unsynced(self) -> Result<WrittenArchive, ArchiveError> {
        self.publish_with(rename_into_place)
    }

    fn publish_with(
        self,
        rename: fn(&Path, &Path) -> io::Result<Published>,
    ) -> Result<WrittenArchive, ArchiveError> {
        let Sealed {
            mut guard,
            final_path,
            written,
        } = self;
        let tmp_path = guard.path.clone();
        guard.armed = false;
        match rename(&tmp_path, &final_path) {
            Ok(Published::Created) => {}
            Ok(Published::AlreadyThere) => {
                return Err(ArchiveError::AlreadyExists { path: final_path });
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(io_err("publishing", &final_path)(e));
            }
        }
        Ok(WrittenArchive {
            path: final_path,
            ..written
        })
    }
}

/// Removes the temporary archive unless disarmed, so no error path leaves a `.tmp` behind.
#[derive(Debug)]
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the original error is what the caller needs to see.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes leftover `archives/.*.zip.tmp` files of interrupted runs; returns how many.
/// A missing `archives/` directory is not an error. Every temporary is removed: for use by a
/// holder of the whole location only ([`remove_dead_temps`] in a shared dataset).
pub fn remove_stale_temps(out_dir: &Path) -> io::Result<usize> {
    remove_dead_temps(out_dir, |_| false)
}

/// Removes the temporary archives of runs for which `live(run)` is false (and those that name
/// no run); a live run's temporaries are in flight and left alone.
pub fn remove_dead_temps(out_dir: &Path, live: impl Fn(&str) -> bool) -> io::Result<usize> {
    let dir = out_dir.join(ARCHIVES_DIR);
    let listing = match fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for item in listing {
        let item = item?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if layout::is_temp_name(name)
            && !layout::temp_run(name).is_some_and(&live)
            && item.file_type()?.is_file()
        {
            fs::remove_file(item.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
