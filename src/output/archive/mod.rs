//! Output stage: one ZIP archive per exported transaction (`archives/{reference}.zip`), and
//! the one answer to "is this archive complete, and is it the one I expect?".
//!
//! - [`layout`]: where an archive lives ([`relative_path`], [`archive_path`]), its entry
//!   names (an allowlist: nothing from API data, a classifier or an href, ever becomes part of
//!   a path), their fixed order, and which family a set of entries belongs to ([`kinds_of`]).
//! - [`write`](write_archive) and [`ArchiveWriter`] (the same archive, streamed as the
//!   bodies arrive): entries in the fixed order with fixed timestamps and
//!   permissions, so the same responses give the same bytes apart from `provenance.json`;
//!   `manifest-sha256.txt` closes every archive and can be checked with `sha256sum -c`. An
//!   archive appears under its final name only when complete (temporary file, fsync, rename,
//!   directory fsync).
//! - [`read`](read_archive): re-hashes every entry and checks it against the manifest and
//!   provenance.
//! - [`check`]: the read, plus "is it the archive of this reference, of this kind, with usable
//!   data": what resume and `verify` both ask, answered once, with typed [`ArchiveFinding`]s.
//!
//! This module is blocking code: call it from `spawn_blocking`, never on the async
//! runtime's threads — with one exception: [`ArchiveWriter`]'s `begin`, `write`, `end` and
//! `abandon` take each body as it arrives from the connection, on the task that receives it
//! (a write to the page cache, no fsync, no read); its `finish` is blocking like the rest. It
//! does no network I/O and logs nothing (archives hold personal data).

pub mod age;
mod check;
pub mod layout;
mod read;
mod sha256x2;
mod spool;
mod write;

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zip::result::ZipError;

pub use age::{AgeIdentities, AgeRecipients};
pub use check::{ArchiveFinding, CheckedArchive, Rejected, check};
pub use layout::{
    ARCHIVES_DIR, MANIFEST_ENTRY, PROVENANCE_ENTRY, allowed_entry_name, archive_path, entry_names,
    file_extension, image_count, kinds_of, relative_path,
};
pub use read::{is_encrypted, read_archive, read_archive_with_key};
pub use write::{
    ArchiveWriter, Sealed, remove_dead_temps, remove_stale_temps, write_archive,
    write_archive_with_key,
};

/// The `tool` value recorded in `provenance.json`.
pub const TOOL_NAME: &str = "jumio-export";

/// Content-Type recorded for `provenance.json` in the files list.
const PROVENANCE_CONTENT_TYPE: &str = "application/json";
/// Content-Type recorded for `manifest-sha256.txt` in the files list.
const MANIFEST_CONTENT_TYPE: &str = "text/plain";

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

/// How a dataset's archives are protected: what the commit records (`output.archives`) and
/// what a run must match (a run of another mode stops with exit 2, never replaces an archive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArchiveMode {
    /// Plain ZIP archives (`archives/{reference}.zip`).
    #[default]
    #[serde(rename = "zip")]
    Zip,
    /// ZIP archives whose entries are AES-256 encrypted (`[output] encrypt_archives`).
    #[serde(rename = "zip-aes")]
    ZipAes,
    /// ZIP archives encrypted to public keys with age (`[output] age_recipients`),
    /// `archives/{reference}.zip.age`.
    #[serde(rename = "age")]
    Age,
}

impl ArchiveMode {
    /// The name the commit records.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveMode::Zip => "zip",
            ArchiveMode::ZipAes => "zip-aes",
            ArchiveMode::Age => "age",
        }
    }

    /// The mode in words, for a message.
    pub fn describe(self) -> &'static str {
        match self {
            ArchiveMode::Zip => {
                "plain ZIP archives (neither [output] encrypt_archives nor [output] age_recipients)"
            }
            ArchiveMode::ZipAes => "ZIP archives encrypted with [output] encrypt_archives",
            ArchiveMode::Age => "archives encrypted with age to [output] age_recipients",
        }
    }

    /// The job-file setting that tells `self` from `other`.
    pub fn setting_between(self, other: ArchiveMode) -> &'static str {
        if self == ArchiveMode::Age || other == ArchiveMode::Age {
            "[output] age_recipients"
        } else {
            "[output] encrypt_archives"
        }
    }
}

impl std::fmt::Display for ArchiveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tool-level facts recorded in every `provenance.json`.
#[derive(Debug, Clone)]
pub struct ProvenanceMeta {
    /// The tool's version (`crate::VERSION`).
    pub tool_version: String,
    /// sha256 (hex) of the job file the run used.
    pub job_sha256: String,
    /// The run that creates the archive (its owner until a commit lists it); `None` outside a
    /// dataset run.
    pub run: Option<String>,
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
    /// The `run` recorded in `provenance.json` (the run that created the archive), when any.
    pub run: Option<String>,
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
    /// An archive of this reference is already there: archives are created once and never
    /// replaced (another run, or an earlier one, wrote it).
    #[error("{path} already exists; archives are never replaced")]
    AlreadyExists {
        /// The existing archive.
        path: PathBuf,
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
    /// The run that created the archive; absent in archives written before datasets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<String>,
    entries: Vec<ProvenanceEntry>,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
