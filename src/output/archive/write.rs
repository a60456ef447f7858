//! Writing an archive: the entries in their fixed order, `provenance.json`, then
//! `manifest-sha256.txt`, assembled in memory and put in place atomically (temporary file,
//! fsync, rename, directory fsync). Also the removal of temporaries an interrupted run left.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::SecondsFormat;
use zip::result::ZipError;
use zip::write::{FileOptions, SimpleFileOptions};
use zip::{CompressionMethod, System, ZipWriter};

use super::super::fsmode::Modes;
use crate::dataset::publish::{Published, publish_no_replace};

use super::layout::{self, ARCHIVES_DIR, MANIFEST_ENTRY, PROVENANCE_ENTRY};
use super::{
    ArchiveEntry, ArchiveError, ArchiveKey, ArchivedFile, EntryKind, MANIFEST_CONTENT_TYPE,
    PROVENANCE_CONTENT_TYPE, Provenance, ProvenanceEntry, ProvenanceMeta, TOOL_NAME,
    WrittenArchive, io_err, sha256_hex,
};

/// Permissions of every entry: the archive holds personal data.
const ENTRY_MODE: u32 = 0o600;

/// Writes `archives/{reference}.zip` under `out_dir` from `entries`.
///
/// The archive is written to a temporary file in `archives/`, fsync'd, moved to its final name
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
    if !layout::valid_reference(reference) {
        return Err(ArchiveError::InvalidReference {
            reference: reference.to_owned(),
        });
    }
    let names = layout::entry_names(reference, entries)?;
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
    let final_path = layout::archive_path(out_dir, reference);

    let mut zip = Assembler::new(entries, &tmp_path, key);
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| layout::order_key(&entries[i].kind, &names[i]));
    let mut provenance_entries = Vec::with_capacity(entries.len());
    for &i in &order {
        let file = zip.put_response(&names[i], &entries[i])?;
        provenance_entries.push(provenance_entry(&entries[i], &file));
    }
    let provenance = Provenance {
        tool: TOOL_NAME.to_owned(),
        tool_version: meta.tool_version.clone(),
        job_sha256: meta.job_sha256.clone(),
        reference: reference.to_owned(),
        run: meta.run.clone(),
        entries: provenance_entries,
    };
    let mut provenance_json =
        serde_json::to_vec_pretty(&provenance).expect("provenance is plain strings and numbers");
    provenance_json.push(b'\n');
    zip.put_own(PROVENANCE_ENTRY, PROVENANCE_CONTENT_TYPE, &provenance_json)?;
    let manifest: String = zip
        .files
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256, f.entry))
        .collect();
    zip.put_own(MANIFEST_ENTRY, MANIFEST_CONTENT_TYPE, manifest.as_bytes())?;

    let (archive_bytes, files) = zip.finish()?;
    let sha256 = sha256_hex(&archive_bytes);
    let bytes = archive_bytes.len() as u64;
    install(archive_bytes, &tmp_path, &final_path, modes)?;
    Ok(WrittenArchive {
        path: final_path,
        relative: layout::relative_path(reference),
        sha256,
        bytes,
        files,
    })
}

/// The `provenance.json` record of one API entry, stored as `file`.
fn provenance_entry(entry: &ArchiveEntry, file: &ArchivedFile) -> ProvenanceEntry {
    ProvenanceEntry {
        entry: file.entry.clone(),
        api_path: entry.api_path.clone(),
        http_status: entry.http_status,
        content_type: entry.content_type.clone(),
        retrieved_at: entry
            .retrieved_at
            .to_rfc3339_opts(SecondsFormat::Millis, true),
        bytes: file.bytes,
        sha256: file.sha256.clone(),
        classifier: file.classifier.clone(),
    }
}

/// The archive being assembled in memory (the bodies are in memory already), so it is hashed
/// once and written and fsynced in one go: no re-read of the file to hash it.
struct Assembler<'a> {
    zip: ZipWriter<io::Cursor<Vec<u8>>>,
    /// Entry options; they borrow the key's bytes when encrypting.
    options: FileOptions<'a, 'static, ()>,
    /// The temporary file, named in errors.
    tmp_path: &'a Path,
    /// Every entry written so far, in archive order.
    files: Vec<ArchivedFile>,
}

impl<'a> Assembler<'a> {
    fn new(entries: &[ArchiveEntry], tmp_path: &'a Path, key: Option<&'a ArchiveKey>) -> Self {
        let base = SimpleFileOptions::default()
            .last_modified_time(zip::DateTime::DEFAULT)
            .unix_permissions(ENTRY_MODE)
            .system(System::Unix);
        let base = match key {
            Some(k) => base.with_aes_encryption_bytes(zip::AesMode::Aes256, k.bytes()),
            None => base,
        };
        let capacity = entries.iter().map(|e| e.body.len() + 256).sum::<usize>() + 16 * 1024;
        Assembler {
            zip: ZipWriter::new(io::Cursor::new(Vec::with_capacity(capacity))),
            // Every entry is stored: images and PDFs are compressed already, and JSON responses
            // are a few KB, where a fresh deflate state per entry cost more CPU than it saved.
            options: base.compression_method(CompressionMethod::Stored),
            tmp_path,
            files: Vec::with_capacity(entries.len() + 2),
        }
    }

    fn zip_err(&self, source: ZipError) -> ArchiveError {
        ArchiveError::Write {
            path: self.tmp_path.to_path_buf(),
            source,
        }
    }

    /// Stores `body` as `name`; returns its sha256.
    fn put(&mut self, name: &str, body: &[u8]) -> Result<String, ArchiveError> {
        if let Err(e) = self.zip.start_file(name, self.options) {
            return Err(self.zip_err(e));
        }
        self.zip
            .write_all(body)
            .map_err(io_err("writing", self.tmp_path))?;
        Ok(sha256_hex(body))
    }

    /// Stores one API response under `name`.
    fn put_response(
        &mut self,
        name: &str,
        entry: &ArchiveEntry,
    ) -> Result<ArchivedFile, ArchiveError> {
        let sha256 = self.put(name, &entry.body)?;
        let classifier = match &entry.kind {
            EntryKind::Image { classifier } => Some(classifier.clone()),
            _ => None,
        };
        let file = ArchivedFile {
            entry: name.to_owned(),
            classifier,
            content_type: entry.content_type.clone(),
            bytes: entry.body.len() as u64,
            sha256,
        };
        self.files.push(file.clone());
        Ok(file)
    }

    /// Stores one of the program's own entries (`provenance.json`, the manifest).
    fn put_own(&mut self, name: &str, content_type: &str, body: &[u8]) -> Result<(), ArchiveError> {
        let sha256 = self.put(name, body)?;
        self.files.push(ArchivedFile {
            entry: name.to_owned(),
            classifier: None,
            content_type: content_type.to_owned(),
            bytes: body.len() as u64,
            sha256,
        });
        Ok(())
    }

    /// The zip file's bytes and its entries.
    fn finish(self) -> Result<(Vec<u8>, Vec<ArchivedFile>), ArchiveError> {
        let path = self.tmp_path.to_path_buf();
        let cursor = self
            .zip
            .finish()
            .map_err(|source| ArchiveError::Write { path, source })?;
        Ok((cursor.into_inner(), self.files))
    }
}

/// Writes `archive_bytes` to `tmp_path` (created with `modes`), fsyncs, and publishes it at
/// `final_path` only if nothing is there. On any error the temporary file is removed.
fn install(
    archive_bytes: Vec<u8>,
    tmp_path: &Path,
    final_path: &Path,
    modes: Modes,
) -> Result<(), ArchiveError> {
    let mut guard = TempGuard {
        path: tmp_path.to_path_buf(),
        armed: true,
    };
    let mut file = modes
        .create_file(tmp_path)
        .map_err(io_err("creating", tmp_path))?;
    file.write_all(&archive_bytes)
        .map_err(io_err("writing", tmp_path))?;
    drop(archive_bytes);
    // A failed fsync is never retried: the temporary file is removed (by the guard) and the
    // reference is fetched again by a later run.
    file.sync_all().map_err(io_err("syncing", tmp_path))?;
    drop(file);
    guard.armed = false;
    match publish_no_replace(tmp_path, final_path) {
        Ok(Published::Created) => Ok(()),
        Ok(Published::AlreadyThere) => Err(ArchiveError::AlreadyExists {
            path: final_path.to_path_buf(),
        }),
        Err(e) => {
            let _ = fs::remove_file(tmp_path);
            Err(io_err("publishing", final_path)(e))
        }
    }
}

/// Removes the temporary archive unless disarmed, so no error path leaves a `.tmp` behind.
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
