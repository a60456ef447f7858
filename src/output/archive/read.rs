//! Reading an archive without trusting it: the whole file is hashed, every entry is re-hashed
//! and compared with `manifest-sha256.txt` and `provenance.json`. What does not hold is an
//! [`ArchiveFinding`]; [`read_archive`] gives them as sentences, [`super::check`] as they are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};
use zip::ZipArchive;
use zip::read::ZipFile;
use zip::result::ZipError;

use super::layout::{
    AUTHENTICATION_ENTRY, DATA_ENTRY, MANIFEST_ENTRY, PROVENANCE_ENTRY, allowed_entry_name,
};
use super::{
    ArchiveContents, ArchiveError, ArchiveFinding, ArchiveKey, ArchivedFile, MANIFEST_CONTENT_TYPE,
    PROVENANCE_CONTENT_TYPE, Provenance, ProvenanceEntry, io_err, sha256_hex,
};

/// Upper bound for a JSON entry the reader keeps in memory; archives are our own output,
/// but a damaged or foreign file must not make the reader allocate without limit.
const MAX_JSON_ENTRY_BYTES: u64 = 256 * 1024 * 1024;

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
    let opened = open(path)?;
    let (sha256, bytes) = (opened.sha256.clone(), opened.bytes);
    let reading = read_zip(opened, path, key)?;
    let problems: Vec<String> = reading.findings.iter().map(ToString::to_string).collect();
    let data_json = reading.data.or(reading.authentication);
    Ok(ArchiveContents {
        data_json,
        reference: reading.reference,
        run: reading.run,
        manifest_ok: problems.is_empty(),
        files: reading.files,
        sha256,
        bytes,
        problems,
    })
}

/// Whether the ZIP archive at `path` has encrypted entries (its first entry is; the writer
/// encrypts all or none). Blocking.
pub fn is_encrypted(path: &Path) -> Result<bool, ArchiveError> {
    let file = File::open(path).map_err(io_err("opening", path))?;
    let mut zip =
        ZipArchive::new(io::BufReader::new(file)).map_err(|source| ArchiveError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
    if zip.is_empty() {
        return Ok(false);
    }
    let entry = zip
        .by_index_raw(0)
        .map_err(|source| ArchiveError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(entry.encrypted())
}

/// An archive file opened and hashed whole.
pub(super) struct Opened {
    file: File,
    /// sha256 (hex) of the whole file.
    pub sha256: String,
    /// Size of the file.
    pub bytes: u64,
}

/// Opens `path` and hashes it whole. Errors are I/O errors naming the path.
pub(super) fn open(path: &Path) -> Result<Opened, ArchiveError> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let (sha256, bytes) = hash_reader(&mut file).map_err(io_err("reading", path))?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("reading", path))?;
    Ok(Opened {
        file,
        sha256,
        bytes,
    })
}

/// What a readable zip holds, and what does not hold inside it.
pub(super) struct Reading {
    /// Every readable entry in archive order, with the hash of what is actually stored.
    /// Classifier and Content-Type come from `provenance.json`.
    pub files: Vec<ArchivedFile>,
    /// The `reference` recorded in `provenance.json`, when readable.
    pub reference: Option<String>,
    /// The `run` recorded in `provenance.json`, when any.
    pub run: Option<String>,
    /// Content of `data.json`, when present and readable.
    pub data: Option<Vec<u8>>,
    /// Content of `authentication.json`, when present and readable.
    pub authentication: Option<Vec<u8>>,
    /// Everything found wrong, in the order found.
    pub findings: Vec<ArchiveFinding>,
}

/// One entry as stored, re-hashed.
struct StoredEntry {
    name: String,
    bytes: u64,
    sha256: String,
    /// The content, for the JSON entries the reader needs (data, provenance, manifest).
    kept: Option<Vec<u8>>,
}

/// Reads every entry of an opened archive and checks it against the manifest and provenance.
/// The only error is a file that is not a readable zip ([`ArchiveError::Corrupt`]).
pub(super) fn read_zip(
    opened: Opened,
    path: &Path,
    key: Option<&ArchiveKey>,
) -> Result<Reading, ArchiveError> {
    let mut zip = ZipArchive::new(io::BufReader::new(opened.file)).map_err(|source| {
        ArchiveError::Corrupt {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let mut findings = Vec::new();
    let mut stored = read_entries(&mut zip, key, &mut findings);
    let by_name: HashMap<&str, &StoredEntry> =
        stored.iter().map(|e| (e.name.as_str(), e)).collect();
    check_manifest(&by_name, &stored, &mut findings);
    let (files, reference, run) = check_provenance(&by_name, &stored, &mut findings);
    drop(by_name);
    let mut take = |name: &str| {
        stored
            .iter_mut()
            .find(|e| e.name == name)
            .and_then(|e| e.kept.take())
    };
    Ok(Reading {
        data: take(DATA_ENTRY),
        authentication: take(AUTHENTICATION_ENTRY),
        files,
        reference,
        run,
        findings,
    })
}

/// Every entry that opens and has a name this tool writes, re-hashed; the JSON entries the
/// reader needs are kept. Entries that do not are findings.
fn read_entries<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    key: Option<&ArchiveKey>,
    findings: &mut Vec<ArchiveFinding>,
) -> Vec<StoredEntry> {
    let mut stored: Vec<StoredEntry> = Vec::with_capacity(zip.len());
    for index in 0..zip.len() {
        let opened = match key {
            Some(k) => zip.by_index_decrypt(index, k.bytes()),
            None => zip.by_index(index),
        };
        let mut entry = match opened {
            Ok(entry) => entry,
            Err(e) => {
                findings.push(entry_does_not_open(index, &e));
                continue;
            }
        };
        let name = match entry.name() {
            Ok(name) => name.into_owned(),
            Err(e) => {
                findings.push(ArchiveFinding::BadEntryName {
                    index,
                    error: e.to_string(),
                });
                continue;
            }
        };
        if entry.enclosed_name().is_none() || !allowed_entry_name(&name) {
            findings.push(ArchiveFinding::ForeignEntryName { name });
            continue;
        }
        let keep = matches!(
            name.as_str(),
            DATA_ENTRY | AUTHENTICATION_ENTRY | PROVENANCE_ENTRY | MANIFEST_ENTRY
        );
        match hash_entry(&mut entry, keep) {
            Ok((sha256, bytes, kept)) => stored.push(StoredEntry {
                name,
                bytes,
                sha256,
                kept,
            }),
            // The zip crate checks each entry's CRC-32 at its end: a flipped byte lands here.
            Err(e) => findings.push(ArchiveFinding::EntryUnreadable {
                entry: name,
                error: e.to_string(),
            }),
        }
    }
    stored
}

/// An entry the zip reader refused to open: under another key, or encrypted without one, or
/// damaged.
fn entry_does_not_open(index: usize, e: &ZipError) -> ArchiveFinding {
    let error = e.to_string();
    match e {
        ZipError::InvalidPassword => ArchiveFinding::WrongKey { index, error },
        ZipError::UnsupportedArchive(what) if *what == ZipError::PASSWORD_REQUIRED => {
            ArchiveFinding::WrongKey { index, error }
        }
        _ => ArchiveFinding::EntryDoesNotOpen { index, error },
    }
}

/// sha256 and length of an entry's content, and the content itself when `keep` (bounded by
/// [`MAX_JSON_ENTRY_BYTES`]).
fn hash_entry(
    entry: &mut ZipFile<'_, impl Read>,
    keep: bool,
) -> io::Result<(String, u64, Option<Vec<u8>>)> {
    if !keep {
        return hash_reader(entry).map(|(hash, len)| (hash, len, None));
    }
    let mut content = Vec::new();
    entry
        .take(MAX_JSON_ENTRY_BYTES + 1)
        .read_to_end(&mut content)?;
    if content.len() as u64 > MAX_JSON_ENTRY_BYTES {
        return Err(io::Error::other("larger than the reader's limit"));
    }
    let len = content.len() as u64;
    Ok((sha256_hex(&content), len, Some(content)))
}

/// Manifest: every other entry, in order, with a matching hash.
fn check_manifest(
    by_name: &HashMap<&str, &StoredEntry>,
    stored: &[StoredEntry],
    findings: &mut Vec<ArchiveFinding>,
) {
    let mut listed = HashSet::new();
    match by_name.get(MANIFEST_ENTRY).and_then(|e| e.kept.as_deref()) {
        None => findings.push(ArchiveFinding::ManifestMissing),
        Some(manifest) => match std::str::from_utf8(manifest) {
            Err(_) => findings.push(ArchiveFinding::ManifestNotUtf8),
            Ok(text) => {
                for (line_no, line) in text.lines().enumerate() {
                    let Some((hash, name)) = line.split_once("  ") else {
                        findings.push(ArchiveFinding::ManifestLineMalformed { line: line_no + 1 });
                        continue;
                    };
                    listed.insert(name.to_owned());
                    match by_name.get(name) {
                        None => findings.push(ArchiveFinding::ManifestListsMissing {
                            entry: name.to_owned(),
                        }),
                        Some(e) if e.sha256 != hash => {
                            findings.push(ArchiveFinding::HashMismatch {
                                entry: name.to_owned(),
                                found: e.sha256.clone(),
                                manifest: hash.to_owned(),
                            })
                        }
                        Some(_) => {}
                    }
                }
            }
        },
    }
    for e in stored {
        if e.name != MANIFEST_ENTRY && !listed.contains(&e.name) {
            findings.push(ArchiveFinding::NotInManifest {
                entry: e.name.clone(),
            });
        }
    }
}

/// Provenance: where classifier and Content-Type come from; its hashes must agree too.
/// Returns every stored entry as a files-table record, and the recorded reference and run.
fn check_provenance(
    by_name: &HashMap<&str, &StoredEntry>,
    stored: &[StoredEntry],
    findings: &mut Vec<ArchiveFinding>,
) -> (Vec<ArchivedFile>, Option<String>, Option<String>) {
    let (recorded, reference, run) = parse_provenance(by_name, findings);
    let mut files = Vec::with_capacity(stored.len());
    for e in stored {
        let (classifier, content_type) = match e.name.as_str() {
            PROVENANCE_ENTRY => (None, PROVENANCE_CONTENT_TYPE.to_owned()),
            MANIFEST_ENTRY => (None, MANIFEST_CONTENT_TYPE.to_owned()),
            name => match recorded.get(name) {
                Some(p) => {
                    if p.sha256 != e.sha256 || p.bytes != e.bytes {
                        findings.push(ArchiveFinding::ProvenanceMismatch {
                            entry: name.to_owned(),
                        });
                    }
                    (p.classifier.clone(), p.content_type.clone())
                }
                None => {
                    if !recorded.is_empty() || reference.is_some() {
                        findings.push(ArchiveFinding::NotInProvenance {
                            entry: name.to_owned(),
                        });
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
            findings.push(ArchiveFinding::ProvenanceListsMissing {
                entry: name.to_owned(),
            });
        }
    }
    (files, reference, run)
}

/// The entries `provenance.json` records, by name, and the reference and run it names.
fn parse_provenance(
    by_name: &HashMap<&str, &StoredEntry>,
    findings: &mut Vec<ArchiveFinding>,
) -> (
    BTreeMap<String, ProvenanceEntry>,
    Option<String>,
    Option<String>,
) {
    let mut recorded = BTreeMap::new();
    let json = by_name
        .get(PROVENANCE_ENTRY)
        .and_then(|e| e.kept.as_deref());
    let Some(json) = json else {
        findings.push(ArchiveFinding::ProvenanceMissing);
        return (recorded, None, None);
    };
    match serde_json::from_slice::<Provenance>(json) {
        Err(e) => {
            findings.push(ArchiveFinding::ProvenanceUnparsable {
                error: e.to_string(),
            });
            (recorded, None, None)
        }
        Ok(provenance) => {
            for p in provenance.entries {
                recorded.insert(p.entry.clone(), p);
            }
            (recorded, Some(provenance.reference), provenance.run)
        }
    }
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
