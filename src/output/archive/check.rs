//! "Is this archive complete, and is it the one I expect?", answered once for resume and
//! `verify`: [`check`] reads the archive without trusting it ([`super::read`]), then requires
//! that its provenance names the expected reference, that its entries are those of the
//! expected family ([`kinds_of`]), and that its data entry parses as JSON.
//!
//! Every finding is an [`ArchiveFinding`] whose text names entries, hashes and references only,
//! never content: archives hold personal data.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::layout::{self, kinds_of};
use super::{ArchiveError, ArchiveKey, ArchivedFile, WrittenArchive, read};
use crate::Kind;

/// One thing that does not hold about an archive. The text (`Display`) is what `verify`
/// prints after the archive's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveFinding {
    /// The file cannot be opened or read at all.
    DoesNotOpen {
        /// What was being done (`opening`, `reading`).
        action: &'static str,
        /// The archive.
        path: PathBuf,
        /// The I/O error.
        error: String,
    },
    /// The file is not a readable zip: truncated, or its central directory is damaged.
    NotAZip {
        /// The zip reader's error.
        error: String,
    },
    /// An entry is encrypted and no key was given, or it is encrypted under another key.
    WrongKey {
        /// Position of the entry in the zip.
        index: usize,
        /// The zip reader's error.
        error: String,
    },
    /// An entry the zip reader refuses to open for another reason.
    EntryDoesNotOpen {
        /// Position of the entry in the zip.
        index: usize,
        /// The zip reader's error.
        error: String,
    },
    /// An entry name that is not valid text.
    BadEntryName {
        /// Position of the entry in the zip.
        index: usize,
        /// The zip reader's error.
        error: String,
    },
    /// An entry whose name this tool never writes (an unsafe path, an unknown file).
    ForeignEntryName {
        /// The name as stored.
        name: String,
    },
    /// An entry whose content cannot be read to its end: truncated or damaged (CRC-32).
    EntryUnreadable {
        /// The entry.
        entry: String,
        /// The reader's error.
        error: String,
    },
    /// `manifest-sha256.txt` is missing or unreadable.
    ManifestMissing,
    /// `manifest-sha256.txt` is not UTF-8.
    ManifestNotUtf8,
    /// A manifest line is not `<sha256>  <entry>`.
    ManifestLineMalformed {
        /// 1-based line number.
        line: usize,
    },
    /// The manifest lists an entry that is missing or unreadable.
    ManifestListsMissing {
        /// The listed entry.
        entry: String,
    },
    /// An entry's content does not hash to what the manifest says.
    HashMismatch {
        /// The entry.
        entry: String,
        /// sha256 of what is stored.
        found: String,
        /// sha256 the manifest gives.
        manifest: String,
    },
    /// An entry the manifest does not list.
    NotInManifest {
        /// The entry.
        entry: String,
    },
    /// `provenance.json` is missing or unreadable.
    ProvenanceMissing,
    /// `provenance.json` does not parse.
    ProvenanceUnparsable {
        /// The parser's error (a position and a category, no content).
        error: String,
    },
    /// An entry's size or hash differs from its provenance record.
    ProvenanceMismatch {
        /// The entry.
        entry: String,
    },
    /// An entry without a provenance record.
    NotInProvenance {
        /// The entry.
        entry: String,
    },
    /// Provenance records an entry that is missing or unreadable.
    ProvenanceListsMissing {
        /// The recorded entry.
        entry: String,
    },
    /// Provenance names another reference: another transaction's archive under this name.
    OtherReference {
        /// The reference `provenance.json` records.
        recorded: String,
        /// The reference the archive's name (or the caller) expects.
        expected: String,
    },
    /// The archive's entries are not those of the expected family ([`kinds_of`]).
    OtherKind {
        /// The family the caller expects.
        expected: Kind,
        /// The families the entries fit (none, one, or Netverify and Document).
        found: &'static [Kind],
    },
    /// The data entry (`data.json`, or `authentication.json`) is missing or is not JSON.
    NoData {
        /// The entry that should hold the data.
        entry: &'static str,
    },
}

impl fmt::Display for ArchiveFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ArchiveFinding::*;
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let (manifest, provenance) = (layout::MANIFEST_ENTRY, layout::PROVENANCE_ENTRY);
        match self {
            DoesNotOpen {
                action,
                path,
                error,
            } => write!(f, "{action} {}: {error}", path.display()),
            NotAZip { error } => write!(f, "not a readable zip (truncated or damaged): {error}"),
            WrongKey { index, error } | EntryDoesNotOpen { index, error } => {
                write!(f, "entry #{index}: unreadable ({error})")
            }
            BadEntryName { index, error } => {
                write!(f, "entry #{index}: name is not valid ({error})")
            }
            ForeignEntryName { name } => {
                write!(f, "entry {}: not a name this tool writes", quoted(name))
            }
            EntryUnreadable { entry, error } => write!(f, "entry {entry}: unreadable ({error})"),
            ManifestMissing => write!(f, "{manifest} is missing or unreadable"),
            ManifestNotUtf8 => write!(f, "{manifest} is not UTF-8"),
            ManifestLineMalformed { line } => write!(f, "{manifest} line {line}: malformed"),
            ManifestListsMissing { entry } => write!(
                f,
                "{manifest} lists {}, which is missing or unreadable",
                quoted(entry)
            ),
            HashMismatch {
                entry,
                found,
                manifest,
            } => write!(
                f,
                "entry {entry}: sha256 {found} does not match the manifest's {}",
                quoted(manifest)
            ),
            NotInManifest { entry } => write!(f, "entry {entry}: not listed in {manifest}"),
            ProvenanceMissing => write!(f, "{provenance} is missing or unreadable"),
            ProvenanceUnparsable { error } => write!(f, "{provenance} does not parse ({error})"),
            ProvenanceMismatch { entry } => {
                write!(f, "entry {entry}: content does not match {provenance}")
            }
            NotInProvenance { entry } => write!(f, "entry {entry}: not recorded in {provenance}"),
            ProvenanceListsMissing { entry } => write!(
                f,
                "{provenance} records {}, which is missing or unreadable",
                quoted(entry)
            ),
            OtherReference { recorded, expected } => write!(
                f,
                "{provenance} names reference {recorded}, not {expected}: \
                 another transaction's archive under this name"
            ),
            OtherKind { expected, found } => {
                let found: Vec<&str> = found.iter().map(|k| k.as_str()).collect();
                let found = match found.as_slice() {
                    [] => "no transaction".to_owned(),
                    kinds => format!("a {} transaction", kinds.join(" or ")),
                };
                write!(
                    f,
                    "holds the entries of {found}, not of a {expected} transaction"
                )
            }
            NoData { entry } => write!(f, "{entry} is missing or is not JSON: no usable data"),
        }
    }
}

/// An archive that [`check`] found complete and of the expected reference and family: what
/// resume needs to take it over, and `verify` to compare it with its table rows.
#[derive(Debug, Clone)]
pub struct CheckedArchive {
    /// The reference recorded in `provenance.json` (the expected one).
    pub reference: String,
    /// The family: the expected one, or the only one its entries fit. `None` only when no
    /// family was expected and the entries fit both Netverify and Document Verification
    /// (`status.json` and `data.json` only; see [`kinds_of`]).
    pub kind: Option<Kind>,
    /// The archive as the writer would have described it: path, relative path, sha256 and
    /// size of the file, every entry in archive order (a `files` table row each).
    pub archive: WrittenArchive,
    /// The parsed data entry (`data.json`; Authentication: `authentication.json`), what
    /// `flatten` turns into the table row.
    pub data: Value,
}

/// Why [`check`] refused an archive: every finding, and the file's hash when it could be read
/// (verify compares it with the tables and the root hash even for a damaged archive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Everything that does not hold, in the order found; never empty.
    pub findings: Vec<ArchiveFinding>,
    /// sha256 (hex) of the whole file; `None` when it could not be read.
    pub sha256: Option<String>,
}

impl fmt::Display for Rejected {
    /// The findings, separated by `; `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, finding) in self.findings.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{finding}")?;
        }
        Ok(())
    }
}

/// Checks the archive at `path` without trusting it: it must open; every entry must match
/// the manifest and provenance; provenance must name `expected_reference`; its entries must
/// be those of `expected_kind` (when given); and its data entry must parse as JSON. Blocking.
///
/// `key` decrypts encrypted entries; an encrypted entry without it, or under another key, is
/// [`ArchiveFinding::WrongKey`]. A key given for an archive that is not encrypted is not a
/// finding (the zip reader ignores it).
pub fn check(
    path: &Path,
    expected_reference: &str,
    expected_kind: Option<Kind>,
    key: Option<&ArchiveKey>,
) -> Result<CheckedArchive, Rejected> {
    let rejected = |findings, sha256| Err(Rejected { findings, sha256 });
    let opened = match read::open(path) {
        Ok(opened) => opened,
        Err(e) => return rejected(vec![open_finding(e)], None),
    };
    let (sha256, bytes) = (opened.sha256.clone(), opened.bytes);
    let reading = match read::read_zip(opened, path, key) {
        Ok(reading) => reading,
        Err(e) => return rejected(vec![open_finding(e)], Some(sha256)),
    };
    let mut findings = reading.findings;
    if let Some(recorded) = &reading.reference
        && recorded != expected_reference
    {
        findings.push(ArchiveFinding::OtherReference {
            recorded: recorded.clone(),
            expected: expected_reference.to_owned(),
        });
    }
    // Missing or unreadable provenance is a finding already; kind and data are judged only on
    // an archive that is intact and this reference's, so one damage gives one finding.
    if !findings.is_empty() {
        return rejected(findings, Some(sha256));
    }
    let fits = kinds_of(reading.files.iter().map(|f| f.entry.as_str()));
    let kind = match expected_kind {
        Some(expected) if !fits.contains(&expected) => {
            let finding = ArchiveFinding::OtherKind {
                expected,
                found: fits,
            };
            return rejected(vec![finding], Some(sha256));
        }
        Some(expected) => Some(expected),
        None => match fits {
            [only] => Some(*only),
            [] => {
                let finding = ArchiveFinding::NoData {
                    entry: layout::DATA_ENTRY,
                };
                return rejected(vec![finding], Some(sha256));
            }
            _ => None,
        },
    };
    let (entry, content) = match kind {
        Some(Kind::Authentication) => (layout::AUTHENTICATION_ENTRY, reading.authentication),
        _ => (layout::DATA_ENTRY, reading.data),
    };
    let Some(data) = content.and_then(|c| serde_json::from_slice::<Value>(&c).ok()) else {
        return rejected(vec![ArchiveFinding::NoData { entry }], Some(sha256));
    };
    Ok(CheckedArchive {
        reference: expected_reference.to_owned(),
        kind,
        archive: WrittenArchive {
            path: path.to_path_buf(),
            relative: layout::relative_path(expected_reference),
            sha256,
            bytes,
            files: reading.files,
        },
        data,
    })
}

/// The finding for an archive that does not open as a zip at all.
fn open_finding(e: ArchiveError) -> ArchiveFinding {
    match e {
        ArchiveError::Corrupt { source, .. } => ArchiveFinding::NotAZip {
            error: source.to_string(),
        },
        ArchiveError::Io {
            action,
            path,
            source,
        } => ArchiveFinding::DoesNotOpen {
            action,
            path,
            error: source.to_string(),
        },
        // `read` gives no other error; keep its text if that ever changes.
        other => ArchiveFinding::DoesNotOpen {
            action: "reading",
            path: PathBuf::new(),
            error: other.to_string(),
        },
    }
}

impl CheckedArchive {
    /// The tables' `image_count` of this archive.
    pub fn image_count(&self) -> i64 {
        layout::image_count(&self.archive.files)
    }

    /// Every entry, in archive order.
    pub fn files(&self) -> &[ArchivedFile] {
        &self.archive.files
    }
}
