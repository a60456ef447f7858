//! Where an archive lives and what is inside it: the one place that builds
//! `archives/{reference}.zip`, the entry names (an allowlist), their fixed order, file
//! extensions, and which transaction family a set of entries belongs to.
//!
//! Pure: no I/O. Nothing here copies API data into a path; names are built from the allowlist.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{ArchiveEntry, ArchiveError, ArchivedFile, EntryKind};
use crate::Kind;

/// Name of the directory, inside the output directory, that holds the archives.
pub const ARCHIVES_DIR: &str = "archives";
/// The status response.
pub const STATUS_ENTRY: &str = "status.json";
/// The `/data` response of a Netverify or Document Verification transaction.
pub const DATA_ENTRY: &str = "data.json";
/// The Netverify `/images` response.
pub const IMAGES_ENTRY: &str = "images.json";
/// The Document Verification `/pages` response.
pub const PAGES_ENTRY: &str = "pages.json";
/// The Authentication details response (its data: there is no `data.json`).
pub const AUTHENTICATION_ENTRY: &str = "authentication.json";
/// The original document of a Document Verification transaction.
pub const ORIGINAL_PDF_ENTRY: &str = "original.pdf";
/// Entry holding the provenance record of every API entry.
pub const PROVENANCE_ENTRY: &str = "provenance.json";
/// Last entry: `<sha256>  <entry>` for every other entry.
pub const MANIFEST_ENTRY: &str = "manifest-sha256.txt";

/// The classifiers that name an image file directly (`images/{classifier}.{ext}`), in the
/// order they appear in an archive. Any other classifier becomes `images/other-{n}.{ext}`.
const KNOWN_CLASSIFIERS: [&str; 3] = ["front", "back", "face"];

/// Extensions of binary entries.
const EXTENSIONS: [&str; 4] = ["jpg", "png", "pdf", "bin"];

/// `archives/{reference}.zip`, `/`-separated and relative to the output directory: what the
/// tables' `archive` column and `verify`'s messages say. The only place this name is built.
pub fn relative_path(reference: &str) -> String {
    format!("{ARCHIVES_DIR}/{reference}.zip")
}

/// The archive of `reference` under the output directory `out_dir` ([`relative_path`] joined
/// to it).
pub fn archive_path(out_dir: &Path, reference: &str) -> PathBuf {
    out_dir.join(relative_path(reference))
}

/// `archives/{reference}.zip.age`: the archive of an age dataset ([`relative_path`] and
/// [`super::age::AGE_SUFFIX`]), what its tables' `archive` column says.
pub fn age_relative_path(reference: &str) -> String {
    format!("{}{}", relative_path(reference), super::age::AGE_SUFFIX)
}

/// The archive of `reference` in `mode` ([`relative_path`], or [`age_relative_path`]).
pub fn relative_path_in(reference: &str, mode: super::ArchiveMode) -> String {
    match mode {
        super::ArchiveMode::Age => age_relative_path(reference),
        _ => relative_path(reference),
    }
}

/// `archives/{reference}.zip.age` under `out_dir`.
pub fn age_archive_path(out_dir: &Path, reference: &str) -> PathBuf {
    out_dir.join(age_relative_path(reference))
}

/// The age archive beside a ZIP's final path: `{path}.age`.
pub fn age_archive_path_of(zip_path: &Path) -> PathBuf {
    let mut p = zip_path.as_os_str().to_owned();
    p.push(super::age::AGE_SUFFIX);
    PathBuf::from(p)
}

/// The temporary of an age archive beside the ZIP's temporary: `{reference}.zip.age.tmp`.
pub fn age_temp_path_of(zip_temp: &Path) -> PathBuf {
    let name = zip_temp
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tmp"))
        .unwrap_or("archive.zip");
    zip_temp.with_file_name(format!("{name}{}.tmp", super::age::AGE_SUFFIX))
}

/// The reference of an age archive's file name (`X.zip.age` → `X`); `None` for anything else.
pub fn age_reference_of(name: &str) -> Option<&str> {
    name.strip_suffix(super::age::AGE_SUFFIX)
        .and_then(reference_of)
}

/// Where the writer assembles an archive before publishing it at [`archive_path`]: in a
/// dataset run, `runs/{run}/{reference}.zip.tmp` (the run's own scratch directory: a run
/// sweeps dead runs' temporaries by listing `runs/`, never the archives); outside one,
/// `archives/.{reference}.zip.tmp` (hidden, so no listing takes it for an archive).
pub fn temp_path(out_dir: &Path, reference: &str, run: Option<&str>) -> PathBuf {
    match run {
        Some(run) => run_scratch_dir(out_dir, run).join(format!("{reference}.zip.tmp")),
        None => out_dir
            .join(ARCHIVES_DIR)
            .join(format!(".{reference}.zip.tmp")),
    }
}

/// `runs/{run}/` under `out_dir`: the scratch directory of a run, for files it writes before
/// publishing them under a final name elsewhere in the location (same file system, so the
/// publish is a rename). Removed when the run ends; a dead run's by the next run.
pub fn run_scratch_dir(out_dir: &Path, run: &str) -> PathBuf {
    out_dir.join(crate::dataset::RUNS_DIR).join(run)
}

/// The run named in a temporary archive's file name (`None` for one written outside a run).
pub fn temp_run(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".zip.tmp")?;
    inner.split_once('.').map(|(_, run)| run)
}

/// True for a file name of `archives/` that [`temp_path`] gives.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".zip.tmp")
}

/// The reference of a file name of `archives/` that [`archive_path`] gives (`X.zip` → `X`);
/// `None` for temporary files and anything else.
pub fn reference_of(name: &str) -> Option<&str> {
    name.strip_suffix(".zip").filter(|_| !name.starts_with('.'))
}

/// True when `reference` is safe as a file name: 1 to 36 characters of `[A-Za-z0-9-]`.
pub fn valid_reference(reference: &str) -> bool {
    (1..=36).contains(&reference.len())
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
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
    let mut namer = Namer::default();
    let mut names = Vec::with_capacity(entries.len());
    for entry in entries {
        let name = namer.name(
            &entry.kind,
            file_extension(&entry.content_type, &entry.body),
        );
        namer.add(reference, &entry.kind, &name)?;
        names.push(name);
    }
    Ok(names)
}

/// [`entry_names`] one entry at a time, for a writer that names each body as it arrives: the
/// same allowlist, the same numbering of other classifiers, the same duplicate check.
#[derive(Debug, Default)]
pub struct Namer {
    /// Other classifiers named so far.
    other: u32,
    /// Identities (names without the extension of files) named so far.
    seen: HashSet<String>,
}

impl Namer {
    /// The name the next entry gets, of `kind` with extension `ext` (only files use it).
    pub fn name(&self, kind: &EntryKind, ext: &str) -> String {
        match kind {
            EntryKind::Status => STATUS_ENTRY.to_owned(),
            EntryKind::Data => DATA_ENTRY.to_owned(),
            EntryKind::Images => IMAGES_ENTRY.to_owned(),
            EntryKind::Pages => PAGES_ENTRY.to_owned(),
            EntryKind::Authentication => AUTHENTICATION_ENTRY.to_owned(),
            EntryKind::Image { classifier } => match known_position(classifier) {
                Some(known) => format!("images/{}.{ext}", KNOWN_CLASSIFIERS[known]),
                None => format!("images/other-{}.{ext}", self.other + 1),
            },
            EntryKind::Liveness { number } => format!("images/liveness-{number}.{ext}"),
            EntryKind::Page { number } => format!("pages/{number}.{ext}"),
            EntryKind::OriginalPdf => ORIGINAL_PDF_ENTRY.to_owned(),
        }
    }

    /// Records the entry `name` of `kind` (as [`Namer::name`] gave it); fails when an earlier
    /// entry has the same identity.
    pub fn add(
        &mut self,
        reference: &str,
        kind: &EntryKind,
        name: &str,
    ) -> Result<(), ArchiveError> {
        if !self.seen.insert(identity(kind, name).to_owned()) {
            return Err(ArchiveError::DuplicateEntry {
                reference: reference.to_owned(),
                entry: name.to_owned(),
            });
        }
        if let EntryKind::Image { classifier } = kind
            && known_position(classifier).is_none()
        {
            self.other += 1;
        }
        Ok(())
    }

    /// Takes back the last [`Namer::add`] (an entry whose transfer failed and is tried again).
    pub fn undo(&mut self, kind: &EntryKind, name: &str) {
        let identity = identity(kind, name);
        self.seen.remove(identity);
        if let EntryKind::Image { classifier } = kind
            && known_position(classifier).is_none()
        {
            self.other -= 1;
        }
    }
}

/// What makes two entries the same file to a user: the name, without the extension of a file
/// (same kind with another extension would still be the same file).
fn identity<'a>(kind: &EntryKind, name: &'a str) -> &'a str {
    match kind {
        EntryKind::Image { .. } | EntryKind::Liveness { .. } | EntryKind::Page { .. } => {
            name.rsplit_once('.').map_or(name, |(stem, _)| stem)
        }
        _ => name,
    }
}

/// Where a classifier stands among the ones that name an image file directly.
fn known_position(classifier: &str) -> Option<usize> {
    KNOWN_CLASSIFIERS.iter().position(|c| *c == classifier)
}

/// The order in which the images of a list are fetched, so that they arrive in archive order:
/// `front`, `back`, `face`, then every other classifier as listed (a stable sort key).
pub fn image_fetch_rank(classifier: &str) -> usize {
    known_position(classifier).unwrap_or(KNOWN_CLASSIFIERS.len())
}

/// Position of an entry in the archive's fixed order; `provenance.json` and
/// `manifest-sha256.txt` follow every API entry, in that order.
pub fn order_key(kind: &EntryKind, name: &str) -> (u8, u64) {
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

/// True when `name` is one this module could have written.
pub fn allowed_entry_name(name: &str) -> bool {
    const FIXED: [&str; 8] = [
        STATUS_ENTRY,
        DATA_ENTRY,
        IMAGES_ENTRY,
        PAGES_ENTRY,
        AUTHENTICATION_ENTRY,
        ORIGINAL_PDF_ENTRY,
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
    if !EXTENSIONS.contains(&ext) {
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

/// The entry holding the transaction's data, the one `flatten` reads: `authentication.json`
/// for Authentication, `data.json` for the two others.
pub fn data_entry(kind: Kind) -> &'static str {
    match kind {
        Kind::Authentication => AUTHENTICATION_ENTRY,
        Kind::Netverify | Kind::Document => DATA_ENTRY,
    }
}

/// The families an archive holding the entries `names` can belong to.
///
/// `provenance.json` does not record the family, so it is read from the JSON responses the
/// flows archive, and only here:
/// - `authentication.json` ⇒ Authentication (its flow has no `data.json`);
/// - otherwise `data.json` is required, and then `images.json` ⇒ Netverify, `pages.json` ⇒
///   Document Verification (both ⇒ neither);
/// - `data.json` alone fits both Netverify and Document Verification: a scan exported with
///   `[fetch] images` and `liveness_images` off, or a document with `images` off, holds
///   nothing else that tells them apart.
///
/// No `data.json` and no `authentication.json` ⇒ no family.
pub fn kinds_of<'a>(names: impl IntoIterator<Item = &'a str>) -> &'static [Kind] {
    let (mut data, mut auth, mut images, mut pages) = (false, false, false, false);
    for name in names {
        match name {
            DATA_ENTRY => data = true,
            AUTHENTICATION_ENTRY => auth = true,
            IMAGES_ENTRY => images = true,
            PAGES_ENTRY => pages = true,
            _ => {}
        }
    }
    match (auth, data, images, pages) {
        (true, ..) => &[Kind::Authentication],
        (false, true, true, false) => &[Kind::Netverify],
        (false, true, false, true) => &[Kind::Document],
        (false, true, false, false) => &[Kind::Netverify, Kind::Document],
        _ => &[],
    }
}

/// Number of image, liveness, page and original-document files among `files` (the tables'
/// `image_count` column).
pub fn image_count(files: &[ArchivedFile]) -> i64 {
    files
        .iter()
        .filter(|f| {
            f.entry.starts_with("images/")
                || f.entry.starts_with("pages/")
                || f.entry == ORIGINAL_PDF_ENTRY
        })
        .count() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::DateTime;

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
    fn archive_paths_are_built_in_one_place() {
        let out = Path::new("/x/out");
        assert_eq!(relative_path("abc-1"), "archives/abc-1.zip");
        assert_eq!(
            archive_path(out, "abc-1"),
            Path::new("/x/out/archives/abc-1.zip")
        );
        assert_eq!(
            temp_path(out, "abc-1", Some("20261206T074501Z-7f2a")),
            Path::new("/x/out/runs/20261206T074501Z-7f2a/abc-1.zip.tmp")
        );
        let tmp = temp_path(out, "abc-1", None);
        assert_eq!(tmp, Path::new("/x/out/archives/.abc-1.zip.tmp"));
        let tmp_name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(is_temp_name(tmp_name));
        assert_eq!(reference_of(tmp_name), None);
        assert_eq!(reference_of("abc-1.zip"), Some("abc-1"));
        assert_eq!(reference_of("abc-1.zip.bak"), None);
        assert!(!is_temp_name("abc-1.zip"));
    }

    #[test]
    fn kinds_come_from_the_json_entries() {
        let kinds = |names: &[&str]| kinds_of(names.iter().copied());
        assert_eq!(
            kinds(&["status.json", "authentication.json"]),
            [Kind::Authentication]
        );
        assert_eq!(
            kinds(&["status.json", "data.json", "images.json"]),
            [Kind::Netverify]
        );
        assert_eq!(
            kinds(&["status.json", "data.json", "pages.json"]),
            [Kind::Document]
        );
        assert_eq!(
            kinds(&["status.json", "data.json"]),
            [Kind::Netverify, Kind::Document]
        );
        assert!(kinds(&["data.json", "images.json", "pages.json"]).is_empty());
        assert!(kinds(&["status.json", "images.json"]).is_empty());
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
