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
    // One arm per finding, kept together (~70 lines) so every text verify prints is in one
    // place; the texts are those `read_archive` gave as problems before findings were typed.
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
    /// The run recorded in `provenance.json` (the run that created the archive), when any.
    pub run: Option<String>,
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
    let kind = match resolve_kind(&reading.files, expected_kind) {
        Ok(kind) => kind,
        Err(finding) => return rejected(vec![finding], Some(sha256)),
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
        run: reading.run,
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

/// The family of an archive holding `files`: the expected one when the entries fit it, else
/// the only one they fit; `None` when nothing is expected and they fit Netverify and Document
/// alike. An error when they do not fit the expected family, or none at all.
fn resolve_kind(
    files: &[ArchivedFile],
    expected: Option<Kind>,
) -> Result<Option<Kind>, ArchiveFinding> {
    let fits = kinds_of(files.iter().map(|f| f.entry.as_str()));
    match (expected, fits) {
        (Some(expected), _) if fits.contains(&expected) => Ok(Some(expected)),
        (Some(expected), _) => Err(ArchiveFinding::OtherKind {
            expected,
            found: fits,
        }),
        (None, [only]) => Ok(Some(*only)),
        (None, []) => Err(ArchiveFinding::NoData {
            entry: layout::DATA_ENTRY,
        }),
        (None, _) => Ok(None),
    }
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use bytes::Bytes;
    use chrono::DateTime;

    use super::*;
    use crate::output::archive::{ArchiveEntry, EntryKind, ProvenanceMeta, write_archive_with_key};

    const REF: &str = "ref-1";

    fn entry(kind: EntryKind, body: &[u8]) -> ArchiveEntry {
        ArchiveEntry {
            kind,
            body: Bytes::copy_from_slice(body),
            content_type: "application/json".to_owned(),
            api_path: format!("/api/netverify/v2/scans/{REF}"),
            http_status: 200,
            retrieved_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn image(classifier: &str) -> ArchiveEntry {
        let mut body = b"\xFF\xD8\xFF\xE0".to_vec();
        body.extend((0..500u32).map(|i| (i * 7 % 251) as u8));
        ArchiveEntry {
            content_type: "image/jpeg".to_owned(),
            ..entry(
                EntryKind::Image {
                    classifier: classifier.to_owned(),
                },
                &body,
            )
        }
    }

    fn netverify(data: &[u8]) -> Vec<ArchiveEntry> {
        vec![
            entry(EntryKind::Status, br#"{"status":"DONE"}"#),
            entry(EntryKind::Data, data),
            entry(EntryKind::Images, br#"{"images":[]}"#),
            image("front"),
            image("face"),
        ]
    }

    /// A Netverify archive written by the writer into a fresh directory.
    fn written(key: Option<&ArchiveKey>) -> (tempfile::TempDir, PathBuf) {
        written_with(&netverify(br#"{"document":{"firstName":"JANE"}}"#), key)
    }

    fn written_with(
        entries: &[ArchiveEntry],
        key: Option<&ArchiveKey>,
    ) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let meta = ProvenanceMeta {
            tool_version: "0.0.0".into(),
            job_sha256: "ab".repeat(32),
            run: None,
        };
        let w = write_archive_with_key(dir.path(), REF, entries, &meta, key, Default::default())
            .unwrap();
        (dir, w.path)
    }

    /// Rewrites the archive entry by entry: `edit` gets each name and content and returns the
    /// new content, or `None` to leave the entry out; `extra` entries are appended. CRCs are
    /// valid: only the manifest and provenance can tell.
    fn rewrite(
        path: &Path,
        mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>,
        extra: &[(&str, &[u8])],
    ) {
        let original = std::fs::read(path).unwrap();
        let mut source = zip::ZipArchive::new(std::io::Cursor::new(original)).unwrap();
        let mut target = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        for i in 0..source.len() {
            let mut file = source.by_index(i).unwrap();
            let name = file.name().unwrap().into_owned();
            let mut body = Vec::new();
            file.read_to_end(&mut body).unwrap();
            if let Some(body) = edit(&name, body) {
                target.start_file(name, options).unwrap();
                target.write_all(&body).unwrap();
            }
        }
        for (name, body) in extra {
            target.start_file(*name, options).unwrap();
            target.write_all(body).unwrap();
        }
        std::fs::write(path, target.finish().unwrap().into_inner()).unwrap();
    }

    fn replace(path: &Path, victim: &str, content: &[u8]) {
        rewrite(
            path,
            |name, body| {
                Some(if name == victim {
                    content.to_vec()
                } else {
                    body
                })
            },
            &[],
        );
    }

    fn findings(path: &Path, kind: Option<Kind>, key: Option<&ArchiveKey>) -> Vec<ArchiveFinding> {
        check(path, REF, kind, key).unwrap_err().findings
    }

    #[test]
    fn an_intact_archive_is_checked_with_what_resume_needs() {
        let (_dir, path) = written(None);
        let c = check(&path, REF, Some(Kind::Netverify), None).unwrap();
        assert_eq!(c.reference, REF);
        assert_eq!(c.kind, Some(Kind::Netverify));
        assert_eq!(c.data["document"]["firstName"], "JANE");
        assert_eq!(c.archive.relative, "archives/ref-1.zip");
        assert_eq!(c.archive.path, path);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(c.archive.bytes, bytes.len() as u64);
        assert_eq!(c.archive.sha256, super::super::sha256_hex(&bytes));
        assert_eq!(c.image_count(), 2);
        assert_eq!(c.files().last().unwrap().entry, layout::MANIFEST_ENTRY);
        // Without an expected kind, the entries tell.
        assert_eq!(
            check(&path, REF, None, None).unwrap().kind,
            Some(Kind::Netverify)
        );
    }

    #[test]
    fn a_missing_file_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.zip");
        let rejected = check(&missing, REF, None, None).unwrap_err();
        assert_eq!(rejected.sha256, None);
        assert!(
            matches!(
                &rejected.findings[..],
                [ArchiveFinding::DoesNotOpen {
                    action: "opening",
                    ..
                }]
            ),
            "{rejected}"
        );
        assert!(rejected.to_string().contains("nope.zip"), "{rejected}");
    }

    #[test]
    fn a_truncated_file_is_not_a_zip_and_keeps_its_hash() {
        let (_dir, path) = written(None);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let rejected = check(&path, REF, None, None).unwrap_err();
        assert!(
            matches!(&rejected.findings[..], [ArchiveFinding::NotAZip { .. }]),
            "{rejected}"
        );
        let half = super::super::sha256_hex(&bytes[..bytes.len() / 2]);
        assert_eq!(rejected.sha256, Some(half));
        assert!(
            rejected
                .to_string()
                .starts_with("not a readable zip (truncated or damaged): ")
        );
    }

    #[test]
    fn encrypted_entries_need_their_key() {
        let key = ArchiveKey::new(b"0123456789abcdef-key").unwrap();
        let other = ArchiveKey::new(b"another-key-0123456789").unwrap();
        let (_dir, path) = written(Some(&key));
        assert!(check(&path, REF, Some(Kind::Netverify), Some(&key)).is_ok());
        for wrong in [None, Some(&other)] {
            let found = findings(&path, Some(Kind::Netverify), wrong);
            assert!(
                found
                    .iter()
                    .any(|f| matches!(f, ArchiveFinding::WrongKey { index: 0, .. })),
                "{found:?}"
            );
            assert!(found[0].to_string().starts_with("entry #0: unreadable ("));
        }
    }

    #[test]
    fn an_entry_whose_local_header_is_lost_does_not_open() {
        let (_dir, path) = written(None);
        let mut bytes = std::fs::read(&path).unwrap();
        // Central directory record of the first entry (status.json): its local header offset
        // (at 42) now points into the middle of nowhere.
        let at = bytes
            .windows(4)
            .position(|w| w == b"PK\x01\x02")
            .expect("a central directory");
        bytes[at + 42..at + 46].copy_from_slice(&7u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let found = findings(&path, None, None);
        assert!(
            found
                .iter()
                .any(|f| matches!(f, ArchiveFinding::EntryDoesNotOpen { index: 0, .. })),
            "{found:?}"
        );
    }

    #[test]
    fn a_name_the_writer_never_writes_is_foreign() {
        let (_dir, path) = written(None);
        rewrite(&path, |_, body| Some(body), &[("../evil.sh", b"x")]);
        let found = findings(&path, None, None);
        assert!(found.contains(&ArchiveFinding::ForeignEntryName {
            name: "../evil.sh".into()
        }));
        assert_eq!(
            found[0].to_string(),
            r#"entry "../evil.sh": not a name this tool writes"#
        );
    }

    #[test]
    fn a_flipped_byte_in_a_stored_image_is_an_unreadable_entry() {
        let (_dir, path) = written(None);
        let mut bytes = std::fs::read(&path).unwrap();
        // Images are stored: the JPEG marker of the first one is in the file as it is.
        let at = bytes
            .windows(4)
            .position(|w| w == b"\xFF\xD8\xFF\xE0")
            .unwrap();
        bytes[at + 100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let found = findings(&path, None, None);
        assert!(
            found.iter().any(|f| matches!(f,
                ArchiveFinding::EntryUnreadable { entry, .. } if entry == "images/front.jpg")),
            "{found:?}"
        );
    }

    #[test]
    fn manifest_findings() {
        let cases: [(&[u8], ArchiveFinding); 3] = [
            (b"\xFF\xFE", ArchiveFinding::ManifestNotUtf8),
            (
                b"no separator\n",
                ArchiveFinding::ManifestLineMalformed { line: 1 },
            ),
            (
                b"00  pages/9.jpg\n",
                ArchiveFinding::ManifestListsMissing {
                    entry: "pages/9.jpg".into(),
                },
            ),
        ];
        for (manifest, expected) in cases {
            let (_dir, path) = written(None);
            replace(&path, layout::MANIFEST_ENTRY, manifest);
            let found = findings(&path, None, None);
            assert!(found.contains(&expected), "{expected}: {found:?}");
            // Whatever the manifest no longer lists is said too.
            assert!(found.contains(&ArchiveFinding::NotInManifest {
                entry: "data.json".into()
            }));
        }
        let (_dir, path) = written(None);
        rewrite(
            &path,
            |name, body| (name != layout::MANIFEST_ENTRY).then_some(body),
            &[],
        );
        let found = findings(&path, None, None);
        assert_eq!(found[0], ArchiveFinding::ManifestMissing);
        assert_eq!(
            found[0].to_string(),
            "manifest-sha256.txt is missing or unreadable"
        );
    }

    #[test]
    fn edited_content_mismatches_manifest_and_provenance() {
        let (_dir, path) = written(None);
        replace(&path, "data.json", br#"{"document":{"firstName":"EVE"}}"#);
        let found = findings(&path, None, None);
        let mismatch = found
            .iter()
            .find(
                |f| matches!(f, ArchiveFinding::HashMismatch { entry, .. } if entry == "data.json"),
            )
            .unwrap_or_else(|| panic!("{found:?}"));
        assert!(
            mismatch.to_string().starts_with("entry data.json: sha256 "),
            "{mismatch}"
        );
        assert!(
            mismatch
                .to_string()
                .contains("does not match the manifest's \"")
        );
        assert!(found.contains(&ArchiveFinding::ProvenanceMismatch {
            entry: "data.json".into()
        }));
    }

    #[test]
    fn provenance_findings() {
        let (_dir, path) = written(None);
        rewrite(
            &path,
            |name, body| (name != layout::PROVENANCE_ENTRY).then_some(body),
            &[],
        );
        let found = findings(&path, None, None);
        assert!(
            found.contains(&ArchiveFinding::ProvenanceMissing),
            "{found:?}"
        );

        let (_dir, path) = written(None);
        replace(&path, layout::PROVENANCE_ENTRY, b"{");
        let found = findings(&path, None, None);
        assert!(
            found
                .iter()
                .any(|f| matches!(f, ArchiveFinding::ProvenanceUnparsable { .. })),
            "{found:?}"
        );

        // An entry dropped along with its manifest line: only provenance still records it.
        let (_dir, path) = written(None);
        let mut manifest = String::new();
        rewrite(
            &path,
            |name, body| match name {
                "images/face.jpg" => None,
                layout::MANIFEST_ENTRY => {
                    manifest = String::from_utf8(body).unwrap();
                    manifest = manifest
                        .lines()
                        .filter(|l| !l.ends_with("images/face.jpg"))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    Some(manifest.clone().into_bytes())
                }
                _ => Some(body),
            },
            &[],
        );
        let found = findings(&path, None, None);
        assert_eq!(
            found,
            [ArchiveFinding::ProvenanceListsMissing {
                entry: "images/face.jpg".into()
            }]
        );

        // An entry added with a manifest line but no provenance record.
        let (_dir, path) = written(None);
        let page = b"\xFF\xD8\xFFpage";
        rewrite(
            &path,
            |name, body| {
                if name == layout::MANIFEST_ENTRY {
                    let line = format!("{}  pages/1.jpg\n", super::super::sha256_hex(page));
                    Some([body, line.into_bytes()].concat())
                } else {
                    Some(body)
                }
            },
            &[("pages/1.jpg", page)],
        );
        let found = findings(&path, None, None);
        assert_eq!(
            found,
            [ArchiveFinding::NotInProvenance {
                entry: "pages/1.jpg".into()
            }]
        );
    }

    #[test]
    fn another_references_archive_is_refused() {
        let (_dir, path) = written(None);
        let rejected = check(&path, "ref-2", Some(Kind::Netverify), None).unwrap_err();
        assert_eq!(
            rejected.findings,
            [ArchiveFinding::OtherReference {
                recorded: REF.into(),
                expected: "ref-2".into()
            }]
        );
        assert_eq!(
            rejected.to_string(),
            "provenance.json names reference ref-1, not ref-2: another transaction's archive under this name"
        );
        assert!(rejected.sha256.is_some());
    }

    #[test]
    fn an_archive_of_another_kind_is_refused() {
        let (_dir, path) = written(None);
        for expected in [Kind::Document, Kind::Authentication] {
            let found = findings(&path, Some(expected), None);
            assert_eq!(
                found,
                [ArchiveFinding::OtherKind {
                    expected,
                    found: &[Kind::Netverify]
                }]
            );
        }
        assert_eq!(
            findings(&path, Some(Kind::Document), None)[0].to_string(),
            "holds the entries of a netverify transaction, not of a document transaction"
        );
        // status and data only fit a scan and a document alike.
        let (_dir, path) = written_with(&netverify(b"{}")[..2], None);
        assert!(check(&path, REF, Some(Kind::Document), None).is_ok());
        assert_eq!(check(&path, REF, None, None).unwrap().kind, None);
        assert!(check(&path, REF, Some(Kind::Authentication), None).is_err());
    }

    #[test]
    fn data_that_is_not_json_is_no_usable_data() {
        let (_dir, path) = written_with(&netverify(b"not json"), None);
        let found = findings(&path, Some(Kind::Netverify), None);
        assert_eq!(found, [ArchiveFinding::NoData { entry: "data.json" }]);
        // No data entry at all, no kind expected: nothing to read the row from either.
        let (_dir, path) = written_with(&netverify(b"{}")[..1], None);
        let found = findings(&path, None, None);
        assert_eq!(found, [ArchiveFinding::NoData { entry: "data.json" }]);
        // Authentication: the details response is the data.
        let auth = [entry(EntryKind::Authentication, b"[1, 2"), image("face")];
        let (_dir, path) = written_with(&auth, None);
        let found = findings(&path, Some(Kind::Authentication), None);
        assert_eq!(
            found,
            [ArchiveFinding::NoData {
                entry: "authentication.json"
            }]
        );
    }
}
