//! Output stage: one ZIP archive per exported transaction (`archives/{reference}.zip`).
//!
//! The writer takes the responses the fetch stage already holds in memory and lays them out
//! under names this module builds itself from an allowlist: nothing from API data (a
//! classifier, an href) ever becomes part of a path. Entries come in a fixed order with fixed
//! timestamps and permissions, so the same responses give the same bytes apart from
//! `provenance.json`. `manifest-sha256.txt` closes every archive and can be checked with
//! `sha256sum -c`. An archive appears under its final name only when complete (temporary
//! file, fsync, rename, directory fsync).
//!
//! The reader ([`read_archive`]) backs resume and `verify`: it re-hashes every entry and
//! checks it against the manifest and provenance, reporting mismatches as problems.
//!
//! This module is blocking code: call it from `spawn_blocking`, never on the async
//! runtime's threads. It does no network I/O and logs nothing (archives hold personal data).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, System, ZipArchive, ZipWriter};

/// Name of the directory, inside the output directory, that holds the archives.
pub const ARCHIVES_DIR: &str = "archives";
/// Entry holding the provenance record of every API entry.
pub const PROVENANCE_ENTRY: &str = "provenance.json";
/// Last entry: `<sha256>  <entry>` for every other entry.
pub const MANIFEST_ENTRY: &str = "manifest-sha256.txt";
/// The `tool` value recorded in `provenance.json`.
pub const TOOL_NAME: &str = "jumio-export";

/// Content-Type recorded for `provenance.json` in the files list.
const PROVENANCE_CONTENT_TYPE: &str = "application/json";
/// Content-Type recorded for `manifest-sha256.txt` in the files list.
const MANIFEST_CONTENT_TYPE: &str = "text/plain";
/// Upper bound for a JSON entry `read_archive` keeps in memory; archives are our own output,
/// but a damaged or foreign file must not make the reader allocate without limit.
const MAX_JSON_ENTRY_BYTES: u64 = 256 * 1024 * 1024;
/// Permissions of every entry: the archive holds personal data.
const ENTRY_MODE: u32 = 0o600;

/// The classifiers that name an image file directly (`images/{classifier}.{ext}`), in the
/// order they appear in an archive. Any other classifier becomes `images/other-{n}.{ext}`.
const KNOWN_CLASSIFIERS: [&str; 3] = ["front", "back", "face"];

/// What an entry is, so its name is built by the program (never copied raw from API data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// The status response: `status.json`.
    Status,
    /// The `/data` response: `data.json`.
    Data,
    /// The `/images` response: `images.json`.
    Images,
    /// The Document Verification `/pages` response: `pages.json`.
    Pages,
    /// The Authentication details response: `authentication.json`.
    Authentication,
    /// A scan image. `classifier` is as the API gave it; only `front`, `back` and `face`
    /// become part of the entry name, anything else is numbered (`images/other-{n}`).
    Image {
        /// The classifier exactly as the API gave it (kept in provenance and the files list).
        classifier: String,
    },
    /// A liveness image: `images/liveness-{number}.{ext}`.
    Liveness {
        /// The liveness number from the href.
        number: u32,
    },
    /// A Document Verification page: `pages/{number}.{ext}`.
    Page {
        /// The page number.
        number: u32,
    },
    /// The original document of a Document Verification transaction: `original.pdf`.
    OriginalPdf,
}

/// One API response to archive.
#[derive(Debug, Clone)]
pub struct ArchiveEntry {
    /// What the response is; decides the entry name.
    pub kind: EntryKind,
    /// The body exactly as received.
    pub body: Bytes,
    /// The response's Content-Type header (empty when absent).
    pub content_type: String,
    /// Path and query of the request, no scheme, host or credentials.
    pub api_path: String,
    /// HTTP status of the response.
    pub http_status: u16,
    /// When the response was received.
    pub retrieved_at: DateTime<Utc>,
}

/// The passphrase that encrypts archive entries (WinZip AES-256, AE-2). Never printed.
#[derive(Clone)]
pub struct ArchiveKey(std::sync::Arc<[u8]>);

impl ArchiveKey {
    /// The fewest bytes a key may have.
    pub const MIN_LEN: usize = 16;

    /// A key from its bytes; `None` when shorter than [`ArchiveKey::MIN_LEN`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= Self::MIN_LEN).then(|| ArchiveKey(bytes.into()))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ArchiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArchiveKey(<redacted>)")
    }
}

/// Tool-level facts recorded in every `provenance.json`.
#[derive(Debug, Clone)]
pub struct ProvenanceMeta {
    /// The tool's version (`crate::VERSION`).
    pub tool_version: String,
    /// sha256 (hex) of the job file the run used.
    pub job_sha256: String,
}

/// An archive that was written and renamed into place.
#[derive(Debug, Clone)]
pub struct WrittenArchive {
    /// Final path of the archive.
    pub path: PathBuf,
    /// Path relative to the output directory, `/`-separated: `archives/{reference}.zip`.
    pub relative: String,
    /// sha256 (hex) of the whole archive file.
    pub sha256: String,
    /// Size of the archive file.
    pub bytes: u64,
    /// Every entry of the archive, in archive order (`provenance.json` and
    /// `manifest-sha256.txt` included).
    pub files: Vec<ArchivedFile>,
}

/// One file inside an archive: a row of the `files` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    /// Entry name inside the archive (`images/front.jpg`).
    pub entry: String,
    /// The raw classifier of an image entry, as the API gave it.
    pub classifier: Option<String>,
    /// The Content-Type the API sent (for our own entries: the type we wrote).
    pub content_type: String,
    /// Uncompressed size.
    pub bytes: u64,
    /// sha256 (hex) of the uncompressed content.
    pub sha256: String,
}

/// What [`read_archive`] found in an archive.
#[derive(Debug, Clone)]
pub struct ArchiveContents {
    /// Content of `data.json` (Netverify, Document Verification) or `authentication.json`
    /// (Authentication), when present and readable.
    pub data_json: Option<Vec<u8>>,
    /// The `reference` recorded in `provenance.json`, when readable.
    pub reference: Option<String>,
    /// Every entry in archive order, with the hash of what is actually stored. Classifier and
    /// Content-Type come from `provenance.json`.
    pub files: Vec<ArchivedFile>,
    /// sha256 (hex) of the whole archive file.
    pub sha256: String,
    /// Size of the archive file.
    pub bytes: u64,
    /// True when every entry is readable and matches the manifest and provenance, and the
    /// manifest lists every other entry: the archive can be taken for complete.
    pub manifest_ok: bool,
    /// Every finding, one sentence each, naming the entry.
    pub problems: Vec<String>,
}

/// Errors of the archive boundary. Messages name the archive path or reference and the
/// entry, never content.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The reference cannot be used as a file name (the input stage should have refused it).
    #[error(
        "reference {reference:?} is not 1 to 36 characters of [A-Za-z0-9-]; no archive written"
    )]
    InvalidReference {
        /// The refused reference.
        reference: String,
    },
    /// Two entries of one archive got the same name (e.g. two `data.json`, two liveness #3).
    #[error("archive for reference {reference}: entry {entry} given twice")]
    DuplicateEntry {
        /// The transaction reference.
        reference: String,
        /// The entry name given twice.
        entry: String,
    },
    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("creating", "renaming", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The zip writer failed.
    #[error("writing archive {path}: {source}")]
    Write {
        /// The temporary archive being written.
        path: PathBuf,
        /// The underlying error.
        source: ZipError,
    },
    /// A file is not a readable zip (truncated, corrupt central directory, not a zip).
    #[error("archive {path} is not a readable zip: {source}")]
    Corrupt {
        /// The archive.
        path: PathBuf,
        /// The underlying error.
        source: ZipError,
    },
}

/// File extension for a body: from its magic bytes (what the file *is*), otherwise from the
/// Content-Type (`image/jpeg` → `jpg`, `image/png` → `png`, `application/pdf` → `pdf`),
/// otherwise `bin`. Bytes win so a PNG served as `image/jpeg` still opens as what it is.
pub fn file_extension(content_type: &str, body: &[u8]) -> &'static str {
    if body.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return "jpg";
    } else if body.starts_with(b"\x89PNG\r\n\x1a\n") {
        return "png";
    } else if body.starts_with(b"%PDF-") {
        return "pdf";
    }
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "application/pdf" => "pdf",
        _ => "bin",
    }
}

/// Entry names for `entries`, index for index.
///
/// Names come only from the allowlist: `status.json`, `data.json`, `images.json`,
/// `pages.json`, `authentication.json`, `images/{front|back|face}.{ext}`,
/// `images/other-{n}.{ext}` (any other classifier, numbered from 1 in order of appearance),
/// `images/liveness-{n}.{ext}`, `pages/{n}.{ext}`, `original.pdf`. Fails when two entries
/// would share a name.
pub fn entry_names(reference: &str, entries: &[ArchiveEntry]) -> Result<Vec<String>, ArchiveError> {
    let mut other = 0u32;
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(entries.len());
    for entry in entries {
        let ext = || file_extension(&entry.content_type, &entry.body);
        let name = match &entry.kind {
            EntryKind::Status => "status.json".to_owned(),
            EntryKind::Data => "data.json".to_owned(),
            EntryKind::Images => "images.json".to_owned(),
            EntryKind::Pages => "pages.json".to_owned(),
            EntryKind::Authentication => "authentication.json".to_owned(),
            EntryKind::Image { classifier } => {
                match KNOWN_CLASSIFIERS.iter().find(|c| **c == classifier) {
                    Some(known) => format!("images/{known}.{}", ext()),
                    None => {
                        other += 1;
                        format!("images/other-{other}.{}", ext())
                    }
                }
            }
            EntryKind::Liveness { number } => format!("images/liveness-{number}.{}", ext()),
            EntryKind::Page { number } => format!("pages/{number}.{}", ext()),
            EntryKind::OriginalPdf => "original.pdf".to_owned(),
        };
        // Same kind with another extension would still be the same file to a user.
        let identity = match &entry.kind {
            EntryKind::Image { .. } | EntryKind::Liveness { .. } | EntryKind::Page { .. } => name
                .rsplit_once('.')
                .map_or(name.clone(), |(stem, _)| stem.to_owned()),
            _ => name.clone(),
        };
        if !seen.insert(identity) {
            return Err(ArchiveError::DuplicateEntry {
                reference: reference.to_owned(),
                entry: name,
            });
        }
        names.push(name);
    }
    Ok(names)
}

/// Position of an entry in the archive's fixed order.
fn order_key(kind: &EntryKind, name: &str) -> (u8, u64) {
    match kind {
        EntryKind::Status => (0, 0),
        EntryKind::Data => (1, 0),
        EntryKind::Authentication => (2, 0),
        EntryKind::Images => (3, 0),
        EntryKind::Pages => (4, 0),
        EntryKind::Image { classifier } => {
            match KNOWN_CLASSIFIERS.iter().position(|c| *c == classifier) {
                Some(pos) => (5, pos as u64),
                None => {
                    // `images/other-{n}.{ext}`: sort by n as a number so other-10 follows other-9.
                    let n = name
                        .strip_prefix("images/other-")
                        .and_then(|rest| rest.split('.').next())
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(u64::MAX);
                    (6, n)
                }
            }
        }
        EntryKind::Liveness { number } => (7, u64::from(*number)),
        EntryKind::Page { number } => (8, u64::from(*number)),
        EntryKind::OriginalPdf => (9, 0),
    }
}

/// True when `reference` is safe as a file name: 1 to 36 characters of `[A-Za-z0-9-]`.
fn valid_reference(reference: &str) -> bool {
    (1..=36).contains(&reference.len())
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// One entry of `provenance.json`.
#[derive(Debug, Serialize, Deserialize)]
struct ProvenanceEntry {
    entry: String,
    api_path: String,
    http_status: u16,
    content_type: String,
    retrieved_at: String,
    bytes: u64,
    sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classifier: Option<String>,
}

/// The whole `provenance.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Provenance {
    tool: String,
    tool_version: String,
    job_sha256: String,
    reference: String,
    entries: Vec<ProvenanceEntry>,
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

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `archives/{reference}.zip` under `out_dir` from `entries`.
///
/// The archive is written to `archives/.{reference}.zip.tmp`, fsync'd, renamed into place
/// and the directory fsync'd; on any error the temporary file is removed and no archive
/// appears. An existing archive of the same reference is replaced. Blocking.
pub fn write_archive(
    out_dir: &Path,
    reference: &str,
    entries: &[ArchiveEntry],
    meta: &ProvenanceMeta,
) -> Result<WrittenArchive, ArchiveError> {
    write_archive_with_key(out_dir, reference, entries, meta, None)
}

/// [`write_archive`], with every entry encrypted (AES-256) under `key` when one is given. Entry
/// names stay readable (they come from the allowlist and carry no personal data); encrypted
/// archives are not byte-identical between writes, since every entry gets a random salt.
pub fn write_archive_with_key(
    out_dir: &Path,
    reference: &str,
    entries: &[ArchiveEntry],
    meta: &ProvenanceMeta,
    key: Option<&ArchiveKey>,
) -> Result<WrittenArchive, ArchiveError> {
    if !valid_reference(reference) {
        return Err(ArchiveError::InvalidReference {
            reference: reference.to_owned(),
        });
    }
    let names = entry_names(reference, entries)?;
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| order_key(&entries[i].kind, &names[i]));

    let dir = out_dir.join(ARCHIVES_DIR);
    super::fsmode::create_dir_all(&dir).map_err(io_err("creating directory", &dir))?;
    let tmp_path = dir.join(format!(".{reference}.zip.tmp"));
    let final_path = dir.join(format!("{reference}.zip"));

    let mut guard = TempGuard {
        path: tmp_path.clone(),
        armed: true,
    };
    let zip_err = |source: ZipError| ArchiveError::Write {
        path: tmp_path.clone(),
        source,
    };
    let base = SimpleFileOptions::default()
        .last_modified_time(zip::DateTime::DEFAULT)
        .unix_permissions(ENTRY_MODE)
        .system(System::Unix);
    let base = match key {
        Some(k) => base.with_aes_encryption_bytes(zip::AesMode::Aes256, k.bytes()),
        None => base,
    };
    // Every entry is stored: images and PDFs are compressed already, and JSON responses are a
    // few KB, where a fresh deflate state per entry cost more CPU than it saved bytes.
    let stored = base.compression_method(CompressionMethod::Stored);

    // The archive is assembled in memory (the bodies are in memory already), hashed once, then
    // written and fsynced in one go: no re-read of the file to hash it.
    let capacity = entries.iter().map(|e| e.body.len() + 256).sum::<usize>() + 16 * 1024;
    let mut zip = ZipWriter::new(io::Cursor::new(Vec::with_capacity(capacity)));
    let mut files = Vec::with_capacity(entries.len() + 2);
    let mut provenance_entries = Vec::with_capacity(entries.len());
    let put = |zip: &mut ZipWriter<io::Cursor<Vec<u8>>>,
               name: &str,
               body: &[u8]|
     -> Result<String, ArchiveError> {
        zip.start_file(name, stored).map_err(&zip_err)?;
        zip.write_all(body).map_err(io_err("writing", &tmp_path))?;
        Ok(sha256_hex(body))
    };

    for &i in &order {
        let entry = &entries[i];
        let name = &names[i];
        let sha256 = put(&mut zip, name, &entry.body)?;
        let classifier = match &entry.kind {
            EntryKind::Image { classifier } => Some(classifier.clone()),
            _ => None,
        };
        let bytes = entry.body.len() as u64;
        provenance_entries.push(ProvenanceEntry {
            entry: name.clone(),
            api_path: entry.api_path.clone(),
            http_status: entry.http_status,
            content_type: entry.content_type.clone(),
            retrieved_at: entry
                .retrieved_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            bytes,
            sha256: sha256.clone(),
            classifier: classifier.clone(),
        });
        files.push(ArchivedFile {
            entry: name.clone(),
            classifier,
            content_type: entry.content_type.clone(),
            bytes,
            sha256,
        });
    }

    let provenance = Provenance {
        tool: TOOL_NAME.to_owned(),
        tool_version: meta.tool_version.clone(),
        job_sha256: meta.job_sha256.clone(),
        reference: reference.to_owned(),
        entries: provenance_entries,
    };
    let mut provenance_json =
        serde_json::to_vec_pretty(&provenance).expect("provenance is plain strings and numbers");
    provenance_json.push(b'\n');
    let sha256 = put(&mut zip, PROVENANCE_ENTRY, &provenance_json)?;
    files.push(ArchivedFile {
        entry: PROVENANCE_ENTRY.to_owned(),
        classifier: None,
        content_type: PROVENANCE_CONTENT_TYPE.to_owned(),
        bytes: provenance_json.len() as u64,
        sha256,
    });

    let manifest: String = files
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256, f.entry))
        .collect();
    let sha256 = put(&mut zip, MANIFEST_ENTRY, manifest.as_bytes())?;
    files.push(ArchivedFile {
        entry: MANIFEST_ENTRY.to_owned(),
        classifier: None,
        content_type: MANIFEST_CONTENT_TYPE.to_owned(),
        bytes: manifest.len() as u64,
        sha256,
    });

    let archive_bytes = zip.finish().map_err(&zip_err)?.into_inner();
    let sha256 = sha256_hex(&archive_bytes);
    let bytes = archive_bytes.len() as u64;
    let mut file = super::fsmode::create_file(&tmp_path).map_err(io_err("creating", &tmp_path))?;
    file.write_all(&archive_bytes)
        .map_err(io_err("writing", &tmp_path))?;
    drop(archive_bytes);
    // A failed fsync is never retried: the temporary file is removed (by the guard) and the
    // reference is fetched again by a later run.
    file.sync_all().map_err(io_err("syncing", &tmp_path))?;
    drop(file);

    fs::rename(&tmp_path, &final_path).map_err(io_err("renaming into place", &final_path))?;
    guard.armed = false;
    super::fsmode::sync_dir(&dir).map_err(io_err("syncing directory", &dir))?;

    Ok(WrittenArchive {
        path: final_path,
        relative: format!("{ARCHIVES_DIR}/{reference}.zip"),
        sha256,
        bytes,
        files,
    })
}

/// sha256 (hex) and length of everything `reader` yields.
fn hash_reader(reader: &mut impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// True when `name` is one this module could have written.
fn allowed_entry_name(name: &str) -> bool {
    const FIXED: [&str; 8] = [
        "status.json",
        "data.json",
        "images.json",
        "pages.json",
        "authentication.json",
        "original.pdf",
        PROVENANCE_ENTRY,
        MANIFEST_ENTRY,
    ];
    if FIXED.contains(&name) {
        return true;
    }
    let numbered = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    if !["jpg", "png", "pdf", "bin"].contains(&ext) {
        return false;
    }
    if let Some(page) = stem.strip_prefix("pages/") {
        return numbered(page);
    }
    let Some(image) = stem.strip_prefix("images/") else {
        return false;
    };
    KNOWN_CLASSIFIERS.contains(&image)
        || image.strip_prefix("other-").is_some_and(numbered)
        || image.strip_prefix("liveness-").is_some_and(numbered)
}

/// One entry as stored, re-hashed.
struct StoredEntry {
    name: String,
    bytes: u64,
    sha256: String,
    /// The content, for the JSON entries the reader needs (data, provenance, manifest).
    kept: Option<Vec<u8>>,
}

/// Opens an archive and checks it without trusting it: every entry is re-hashed and compared
/// with `manifest-sha256.txt` and `provenance.json`.
///
/// A file that is not a readable zip (truncated, corrupt directory) is an error; anything
/// wrong inside a readable zip (hash mismatch, CRC error, missing or extra entry, unsafe
/// name) is a `problem`, and `manifest_ok` is false. Blocking.
pub fn read_archive(path: &Path) -> Result<ArchiveContents, ArchiveError> {
    read_archive_with_key(path, None)
}

/// [`read_archive`] for archives whose entries may be encrypted under `key`. An encrypted entry
/// without a key, or with the wrong one, is a problem naming the entry, not an error.
pub fn read_archive_with_key(
    path: &Path,
    key: Option<&ArchiveKey>,
) -> Result<ArchiveContents, ArchiveError> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let (sha256, bytes) = hash_reader(&mut file).map_err(io_err("reading", path))?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("reading", path))?;
    let mut zip =
        ZipArchive::new(io::BufReader::new(file)).map_err(|source| ArchiveError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;

    let mut problems = Vec::new();
    let mut stored: Vec<StoredEntry> = Vec::with_capacity(zip.len());
    for index in 0..zip.len() {
        let opened = match key {
            Some(k) => zip.by_index_decrypt(index, k.bytes()),
            None => zip.by_index(index),
        };
        let mut entry = match opened {
            Ok(entry) => entry,
            Err(e) => {
                problems.push(format!("entry #{index}: unreadable ({e})"));
                continue;
            }
        };
        let name = match entry.name() {
            Ok(name) => name.into_owned(),
            Err(e) => {
                problems.push(format!("entry #{index}: name is not valid ({e})"));
                continue;
            }
        };
        if entry.enclosed_name().is_none() || !allowed_entry_name(&name) {
            problems.push(format!(
                "entry {}: not a name this tool writes",
                serde_json::to_string(&name).unwrap_or_default()
            ));
            continue;
        }
        let keep = matches!(
            name.as_str(),
            "data.json" | "authentication.json" | PROVENANCE_ENTRY | MANIFEST_ENTRY
        );
        let result = if keep {
            let mut content = Vec::new();
            (&mut entry)
                .take(MAX_JSON_ENTRY_BYTES + 1)
                .read_to_end(&mut content)
                .and_then(|_| {
                    if content.len() as u64 > MAX_JSON_ENTRY_BYTES {
                        Err(io::Error::other("larger than the reader's limit"))
                    } else {
                        Ok(())
                    }
                })
                .map(|()| {
                    let len = content.len() as u64;
                    (sha256_hex(&content), len, Some(content))
                })
        } else {
            hash_reader(&mut entry).map(|(hash, len)| (hash, len, None))
        };
        match result {
            Ok((hash, len, kept)) => stored.push(StoredEntry {
                name,
                bytes: len,
                sha256: hash,
                kept,
            }),
            // The zip crate checks each entry's CRC-32 at its end: a flipped byte lands here.
            Err(e) => problems.push(format!("entry {name}: unreadable ({e})")),
        }
    }

    let by_name: HashMap<&str, &StoredEntry> =
        stored.iter().map(|e| (e.name.as_str(), e)).collect();

    // Manifest: every other entry, in order, with a matching hash.
    let mut listed = HashSet::new();
    match by_name.get(MANIFEST_ENTRY).and_then(|e| e.kept.as_deref()) {
        None => problems.push(format!("{MANIFEST_ENTRY} is missing or unreadable")),
        Some(manifest) => match std::str::from_utf8(manifest) {
            Err(_) => problems.push(format!("{MANIFEST_ENTRY} is not UTF-8")),
            Ok(text) => {
                for (line_no, line) in text.lines().enumerate() {
                    let Some((hash, name)) = line.split_once("  ") else {
                        problems.push(format!("{MANIFEST_ENTRY} line {}: malformed", line_no + 1));
                        continue;
                    };
                    listed.insert(name.to_owned());
                    match by_name.get(name) {
                        None => problems.push(format!(
                            "{MANIFEST_ENTRY} lists {}, which is missing or unreadable",
                            serde_json::to_string(name).unwrap_or_default()
                        )),
                        Some(e) if e.sha256 != hash => problems.push(format!(
                            "entry {name}: sha256 {} does not match the manifest's {}",
                            e.sha256,
                            serde_json::to_string(hash).unwrap_or_default()
                        )),
                        Some(_) => {}
                    }
                }
            }
        },
    }
    for e in &stored {
        if e.name != MANIFEST_ENTRY && !listed.contains(&e.name) {
            problems.push(format!("entry {}: not listed in {MANIFEST_ENTRY}", e.name));
        }
    }

    // Provenance: where classifier and Content-Type come from; its hashes must agree too.
    let mut recorded: BTreeMap<String, ProvenanceEntry> = BTreeMap::new();
    let mut reference = None;
    match by_name
        .get(PROVENANCE_ENTRY)
        .and_then(|e| e.kept.as_deref())
    {
        None => problems.push(format!("{PROVENANCE_ENTRY} is missing or unreadable")),
        Some(json) => match serde_json::from_slice::<Provenance>(json) {
            Err(e) => problems.push(format!("{PROVENANCE_ENTRY} does not parse ({e})")),
            Ok(provenance) => {
                reference = Some(provenance.reference);
                for p in provenance.entries {
                    recorded.insert(p.entry.clone(), p);
                }
            }
        },
    }
    let mut files = Vec::with_capacity(stored.len());
    for e in &stored {
        let (classifier, content_type) = match e.name.as_str() {
            PROVENANCE_ENTRY => (None, PROVENANCE_CONTENT_TYPE.to_owned()),
            MANIFEST_ENTRY => (None, MANIFEST_CONTENT_TYPE.to_owned()),
            name => match recorded.get(name) {
                Some(p) => {
                    if p.sha256 != e.sha256 || p.bytes != e.bytes {
                        problems.push(format!(
                            "entry {name}: content does not match {PROVENANCE_ENTRY}"
                        ));
                    }
                    (p.classifier.clone(), p.content_type.clone())
                }
                None => {
                    if !recorded.is_empty() || reference.is_some() {
                        problems.push(format!("entry {name}: not recorded in {PROVENANCE_ENTRY}"));
                    }
                    (None, String::new())
                }
            },
        };
        files.push(ArchivedFile {
            entry: e.name.clone(),
            classifier,
            content_type,
            bytes: e.bytes,
            sha256: e.sha256.clone(),
        });
    }
    for name in recorded.keys() {
        if !by_name.contains_key(name.as_str()) {
            problems.push(format!(
                "{PROVENANCE_ENTRY} records {}, which is missing or unreadable",
                serde_json::to_string(name).unwrap_or_default()
            ));
        }
    }

    let data_json = ["data.json", "authentication.json"]
        .iter()
        .find_map(|name| by_name.get(name).and_then(|e| e.kept.clone()));

    Ok(ArchiveContents {
        data_json,
        reference,
        manifest_ok: problems.is_empty(),
        files,
        sha256,
        bytes,
        problems,
    })
}

/// Number of image, liveness, page and original-document files among `files` (the tables'
/// `image_count` column).
pub fn image_count(files: &[ArchivedFile]) -> i64 {
    files
        .iter()
        .filter(|f| {
            f.entry.starts_with("images/")
                || f.entry.starts_with("pages/")
                || f.entry == "original.pdf"
        })
        .count() as i64
}

/// Removes leftover `archives/.*.zip.tmp` files of an interrupted run; returns how many.
/// A missing `archives/` directory is not an error.
pub fn remove_stale_temps(out_dir: &Path) -> io::Result<usize> {
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
        if name.starts_with('.') && name.ends_with(".zip.tmp") && item.file_type()?.is_file() {
            fs::remove_file(item.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: EntryKind, content_type: &str, body: &[u8]) -> ArchiveEntry {
        ArchiveEntry {
            kind,
            body: Bytes::copy_from_slice(body),
            content_type: content_type.to_owned(),
            api_path: "/api/netverify/v2/scans/R1".to_owned(),
            http_status: 200,
            retrieved_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn image(classifier: &str) -> ArchiveEntry {
        entry(
            EntryKind::Image {
                classifier: classifier.to_owned(),
            },
            "image/jpeg",
            b"\xFF\xD8\xFFjpeg",
        )
    }

    #[test]
    fn extension_prefers_magic_then_content_type_then_bin() {
        assert_eq!(file_extension("image/jpeg", b""), "jpg");
        assert_eq!(file_extension("Image/PNG; charset=binary", b""), "png");
        assert_eq!(file_extension("image/png", b"\xFF\xD8\xFF"), "jpg");
        assert_eq!(
            file_extension("application/octet-stream", b"\xFF\xD8\xFFx"),
            "jpg"
        );
        assert_eq!(file_extension("", b"\x89PNG\r\n\x1a\nrest"), "png");
        assert_eq!(file_extension("", b"%PDF-1.7"), "pdf");
        assert_eq!(file_extension("text/html", b"<html>"), "bin");
    }

    #[test]
    fn known_classifiers_keep_their_name_others_are_numbered_in_order() {
        let entries = [
            image("face"),
            image("../../x"),
            image("front"),
            image("FRONT"),
            entry(EntryKind::Liveness { number: 3 }, "image/png", b""),
            entry(EntryKind::Page { number: 2 }, "", b"junk"),
        ];
        let names = entry_names("R1", &entries).unwrap();
        assert_eq!(
            names,
            [
                "images/face.jpg",
                "images/other-1.jpg",
                "images/front.jpg",
                "images/other-2.jpg",
                "images/liveness-3.png",
                "pages/2.bin",
            ]
        );
        assert!(names.iter().all(|n| allowed_entry_name(n)));
    }

    #[test]
    fn duplicate_entries_are_refused() {
        let err = entry_names("R1", &[image("front"), image("front")]).unwrap_err();
        assert!(
            matches!(err, ArchiveError::DuplicateEntry { ref entry, .. } if entry == "images/front.jpg")
        );
        // Same liveness number with different types is still the same file.
        let err = entry_names(
            "R1",
            &[
                entry(EntryKind::Liveness { number: 1 }, "image/png", b""),
                entry(EntryKind::Liveness { number: 1 }, "image/jpeg", b""),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("images/liveness-1"), "{err}");
        let data = || entry(EntryKind::Data, "application/json", b"{}");
        assert!(entry_names("R1", &[data(), data()]).is_err());
    }

    #[test]
    fn fixed_order_puts_known_images_first_and_numbers_ascending() {
        let entries = [
            entry(EntryKind::Liveness { number: 10 }, "image/jpeg", b""),
            entry(EntryKind::Page { number: 2 }, "image/jpeg", b""),
            image("x1"),
            entry(EntryKind::OriginalPdf, "application/pdf", b""),
            image("face"),
            entry(EntryKind::Liveness { number: 2 }, "image/jpeg", b""),
            entry(EntryKind::Images, "application/json", b"{}"),
            image("back"),
            entry(EntryKind::Data, "application/json", b"{}"),
            entry(EntryKind::Page { number: 1 }, "image/jpeg", b""),
            image("front"),
            entry(EntryKind::Status, "application/json", b"{}"),
        ];
        let mut extra: Vec<ArchiveEntry> = (2..=10).map(|i| image(&format!("x{i}"))).collect();
        let mut all = entries.to_vec();
        all.append(&mut extra);
        let names = entry_names("R1", &all).unwrap();
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by_key(|&i| order_key(&all[i].kind, &names[i]));
        let sorted: Vec<&str> = order.iter().map(|&i| names[i].as_str()).collect();
        let mut expected = vec![
            "status.json",
            "data.json",
            "images.json",
            "images/front.jpg",
            "images/back.jpg",
            "images/face.jpg",
        ];
        let others: Vec<String> = (1..=10).map(|n| format!("images/other-{n}.jpg")).collect();
        expected.extend(others.iter().map(String::as_str));
        expected.extend([
            "images/liveness-2.jpg",
            "images/liveness-10.jpg",
            "pages/1.jpg",
            "pages/2.jpg",
            "original.pdf",
        ]);
        assert_eq!(sorted, expected);
    }

    #[test]
    fn allowlist_refuses_what_the_writer_never_writes() {
        for bad in [
            "../x",
            "images/../../x.jpg",
            "images/other-.jpg",
            "images/other-1a.jpg",
            "images/front.exe",
            "pages/-1.jpg",
            "/status.json",
            "images/FRONT.jpg",
        ] {
            assert!(!allowed_entry_name(bad), "{bad}");
        }
        for good in [
            "images/other-12.png",
            "pages/3.pdf",
            "images/liveness-1.bin",
        ] {
            assert!(allowed_entry_name(good), "{good}");
        }
    }

    #[test]
    fn references_unfit_for_a_file_name_are_refused() {
        assert!(valid_reference("abc-123"));
        assert!(!valid_reference(""));
        assert!(!valid_reference("../etc"));
        assert!(!valid_reference(".hidden"));
        assert!(!valid_reference(&"a".repeat(37)));
    }

    #[test]
    fn image_count_counts_images_liveness_pages_and_pdf() {
        let file = |entry: &str| ArchivedFile {
            entry: entry.to_owned(),
            classifier: None,
            content_type: String::new(),
            bytes: 0,
            sha256: String::new(),
        };
        let files = [
            "status.json",
            "data.json",
            "images.json",
            "images/front.jpg",
            "images/liveness-1.jpg",
            "pages/1.png",
            "original.pdf",
            "provenance.json",
            "manifest-sha256.txt",
        ]
        .map(file);
        assert_eq!(image_count(&files), 4);
    }
}
