//! Archives: safe entry names, byte-for-byte determinism, manifest and provenance checked by
//! independent tools (the zip crate's reader, `unzip -t`, `sha256sum -c`), tamper detection.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use jumio_export::output::archive::{
    ArchiveEntry, ArchiveError, EntryKind, ProvenanceMeta, image_count, read_archive,
    remove_stale_temps, write_archive,
};
use sha2::Digest;

const REF: &str = "2b1e8c4a-0000-4000-8000-00000000abcd";

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

fn meta() -> ProvenanceMeta {
    ProvenanceMeta {
        tool_version: "0.1.0".to_owned(),
        job_sha256: "ab".repeat(32),
        run: None,
    }
}

fn entry(kind: EntryKind, content_type: &str, body: Vec<u8>, path: &str) -> ArchiveEntry {
    ArchiveEntry {
        kind,
        body: Bytes::from(body),
        content_type: content_type.to_owned(),
        api_path: format!("/api/netverify/v2/scans/{REF}{path}"),
        http_status: 200,
        retrieved_at: at(1_700_000_000),
    }
}

/// A JPEG-looking body with a marker unique to it, so a test can find it in the zip file.
fn jpeg(marker: &str) -> Vec<u8> {
    let mut body = vec![0xFF, 0xD8, 0xFF, 0xE0];
    body.extend_from_slice(format!("MARKER<{marker}>").as_bytes());
    body.extend((0..2000u32).map(|i| (i * 7 % 251) as u8));
    body
}

fn json(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// A complete Netverify transaction, liveness images deliberately out of order.
fn netverify_entries() -> Vec<ArchiveEntry> {
    vec![
        entry(
            EntryKind::Status,
            "application/json",
            json(r#"{"status":"DONE"}"#),
            "",
        ),
        entry(
            EntryKind::Data,
            "application/json;charset=UTF-8",
            json(r#"{"document":{"firstName":"JANE"}}"#),
            "/data",
        ),
        entry(
            EntryKind::Images,
            "application/json",
            json(r#"{"images":[]}"#),
            "/images",
        ),
        entry(
            EntryKind::Liveness { number: 3 },
            "image/jpeg",
            jpeg("live3"),
            "/images/liveness/3",
        ),
        entry(
            EntryKind::Image {
                classifier: "face".to_owned(),
            },
            "image/jpeg",
            jpeg("face"),
            "/images/face",
        ),
        entry(
            EntryKind::Image {
                classifier: "front".to_owned(),
            },
            "image/jpeg",
            jpeg("front"),
            "/images/front",
        ),
        entry(
            EntryKind::Liveness { number: 1 },
            "image/png",
            b"\x89PNG\r\n\x1a\nlive1".to_vec(),
            "/images/liveness/1",
        ),
        entry(
            EntryKind::Image {
                classifier: "back".to_owned(),
            },
            "",
            jpeg("back"),
            "/images/back",
        ),
    ]
}

fn hostile_classifiers() -> Vec<String> {
    vec![
        "../../x".to_owned(),
        "a/b".to_owned(),
        r"C:\x".to_owned(),
        "%2e%2e".to_owned(),
        "nul\0byte".to_owned(),
        "z".repeat(300),
    ]
}

fn with_hostile(mut entries: Vec<ArchiveEntry>) -> Vec<ArchiveEntry> {
    for (i, classifier) in hostile_classifiers().into_iter().enumerate() {
        entries.push(entry(
            EntryKind::Image { classifier },
            "image/jpeg",
            jpeg(&format!("hostile{i}")),
            "/images/x",
        ));
    }
    entries
}

fn entry_list(path: &Path) -> Vec<String> {
    let mut zip = zip::ZipArchive::new(fs::File::open(path).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().name().unwrap().into_owned())
        .collect()
}

fn no_temps(out: &Path) -> bool {
    match fs::read_dir(out.join("archives")) {
        Err(_) => true,
        Ok(listing) => listing
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .all(|name| !name.ends_with(".tmp")),
    }
}

#[test]
fn archive_has_fixed_entry_order_and_stores_what_it_was_given() {
    let out = tempfile::tempdir().unwrap();
    let entries = netverify_entries();
    let written = write_archive(out.path(), REF, &entries, &meta()).unwrap();

    assert_eq!(written.relative, format!("archives/{REF}.zip"));
    assert_eq!(written.path, out.path().join(&written.relative));
    let expected = [
        "status.json",
        "data.json",
        "images.json",
        "images/front.jpg",
        "images/back.jpg",
        "images/face.jpg",
        "images/liveness-1.png",
        "images/liveness-3.jpg",
        "provenance.json",
        "manifest-sha256.txt",
    ];
    assert_eq!(entry_list(&written.path), expected);
    let listed: Vec<&str> = written.files.iter().map(|f| f.entry.as_str()).collect();
    assert_eq!(listed, expected);
    assert_eq!(image_count(&written.files), 5);

    let bytes = fs::read(&written.path).unwrap();
    assert_eq!(written.bytes, bytes.len() as u64);
    assert_eq!(written.sha256, hex::encode(sha2::Sha256::digest(&bytes)));

    let mut zip = zip::ZipArchive::new(fs::File::open(&written.path).unwrap()).unwrap();
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).unwrap();
        assert!(file.enclosed_name().is_some());
        let name = file.name().unwrap().into_owned();
        // Everything is stored, so every body stands in the file as received.
        assert_eq!(file.compression(), zip::CompressionMethod::Stored, "{name}");
        assert_eq!(file.unix_mode().map(|m| m & 0o777), Some(0o600), "{name}");
        let modified = file.last_modified().unwrap();
        assert_eq!(
            (
                modified.year(),
                modified.month(),
                modified.day(),
                modified.hour()
            ),
            (1980, 1, 1, 0),
            "{name}"
        );
        let mut content = Vec::new();
        file.read_to_end(&mut content).unwrap();
        let given = match name.as_str() {
            "status.json" => Some(&entries[0]),
            "images/front.jpg" => Some(&entries[5]),
            "images/liveness-1.png" => Some(&entries[6]),
            _ => None,
        };
        if let Some(given) = given {
            assert_eq!(content, given.body.as_ref(), "{name}");
        }
        let recorded = &written.files[i];
        assert_eq!(recorded.bytes, content.len() as u64);
        assert_eq!(recorded.sha256, hex::encode(sha2::Sha256::digest(&content)));
    }
    assert!(no_temps(out.path()));
}

#[test]
fn hostile_classifiers_get_safe_unique_names_and_are_kept_raw_in_provenance() {
    let out = tempfile::tempdir().unwrap();
    let written =
        write_archive(out.path(), REF, &with_hostile(netverify_entries()), &meta()).unwrap();

    let names = entry_list(&written.path);
    let others: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("images/other-"))
        .collect();
    assert_eq!(
        others,
        (1..=6)
            .map(|n| format!("images/other-{n}.jpg"))
            .collect::<Vec<_>>()
    );
    for name in &names {
        assert!(!name.contains(".."), "{name}");
        assert!(
            !name.contains('\\') && !name.contains('\0') && !name.contains('%'),
            "{name}"
        );
        assert!(name.len() < 40, "{name}");
        assert!(name.split('/').count() <= 2, "{name}");
    }
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len());

    let mut zip = zip::ZipArchive::new(fs::File::open(&written.path).unwrap()).unwrap();
    for i in 0..zip.len() {
        assert!(zip.by_index(i).unwrap().enclosed_name().is_some());
    }
    let mut provenance = String::new();
    zip.by_name("provenance.json")
        .unwrap()
        .read_to_string(&mut provenance)
        .unwrap();
    let provenance: serde_json::Value = serde_json::from_str(&provenance).unwrap();
    assert_eq!(provenance["tool"], "jumio-export");
    assert_eq!(provenance["tool_version"], "0.1.0");
    assert_eq!(provenance["job_sha256"], "ab".repeat(32));
    assert_eq!(provenance["reference"], REF);
    let recorded: Vec<(String, String)> = provenance["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"].as_str().unwrap().starts_with("images/other-"))
        .map(|e| {
            (
                e["entry"].as_str().unwrap().to_owned(),
                e["classifier"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = hostile_classifiers()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("images/other-{}.jpg", i + 1), c))
        .collect();
    assert_eq!(recorded, expected);
    let front = provenance["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entry"] == "images/front.jpg")
        .unwrap();
    assert_eq!(
        front["api_path"],
        format!("/api/netverify/v2/scans/{REF}/images/front")
    );
    assert_eq!(front["http_status"], 200);
    assert_eq!(front["content_type"], "image/jpeg");
    assert_eq!(front["retrieved_at"], "2023-11-14T22:13:20.000Z");
    assert_eq!(front["bytes"], jpeg("front").len());
    assert_eq!(
        front["sha256"],
        hex::encode(sha2::Sha256::digest(jpeg("front")))
    );

    // The files list carries the raw classifier too; the reader recovers it from provenance.
    let files_classifiers: Vec<Option<String>> = written
        .files
        .iter()
        .filter(|f| f.entry.starts_with("images/other-"))
        .map(|f| f.classifier.clone())
        .collect();
    assert_eq!(
        files_classifiers,
        hostile_classifiers()
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>()
    );
    let read = read_archive(&written.path).unwrap();
    assert_eq!(read.problems, Vec::<String>::new());
    assert_eq!(read.files, written.files);
}

#[test]
fn same_entries_give_byte_identical_archives_whatever_their_order() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let entries = with_hostile(netverify_entries());
    let a = write_archive(first.path(), REF, &entries, &meta()).unwrap();
    // Known kinds shuffled; other-n keep their relative order (their numbering follows it).
    let mut shuffled = entries.clone();
    shuffled[..8].reverse();
    let b = write_archive(second.path(), REF, &shuffled, &meta()).unwrap();
    assert_eq!(fs::read(&a.path).unwrap(), fs::read(&b.path).unwrap());
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(a.files, b.files);

    // Another retrieval time changes provenance.json (and so the manifest), nothing else.
    let third = tempfile::tempdir().unwrap();
    let mut later = entries.clone();
    for e in &mut later {
        e.retrieved_at = at(1_800_000_000);
    }
    let c = write_archive(third.path(), REF, &later, &meta()).unwrap();
    assert_ne!(a.sha256, c.sha256);
    for (x, y) in a.files.iter().zip(&c.files) {
        assert_eq!(x.entry, y.entry);
        let volatile = x.entry == "provenance.json" || x.entry == "manifest-sha256.txt";
        assert_eq!(x.sha256 == y.sha256, !volatile, "{}", x.entry);
    }
}

#[test]
fn system_unzip_tests_the_archive_ok() {
    let Some(unzip) = crate::peers::require("unzip") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let written =
        write_archive(out.path(), REF, &with_hostile(netverify_entries()), &meta()).unwrap();
    let result = Command::new(unzip)
        .arg("-t")
        .arg(&written.path)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "unzip -t failed:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(String::from_utf8_lossy(&result.stdout).contains("No errors detected"));
}

#[test]
fn manifest_passes_sha256sum_check_after_extraction() {
    let Some(sha256sum) = crate::peers::require("sha256sum") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let written = write_archive(out.path(), REF, &netverify_entries(), &meta()).unwrap();
    let extract = tempfile::tempdir().unwrap();
    let mut zip = zip::ZipArchive::new(fs::File::open(&written.path).unwrap()).unwrap();
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).unwrap();
        let target = extract.path().join(file.enclosed_name().unwrap());
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        let mut content = Vec::new();
        file.read_to_end(&mut content).unwrap();
        fs::write(target, content).unwrap();
    }
    let manifest = fs::read_to_string(extract.path().join("manifest-sha256.txt")).unwrap();
    assert_eq!(manifest.lines().count(), written.files.len() - 1);
    assert!(
        manifest
            .lines()
            .last()
            .unwrap()
            .ends_with("  provenance.json")
    );
    let check = Command::new(&sha256sum)
        .args(["-c", "--strict", "manifest-sha256.txt"])
        .current_dir(extract.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sha256sum -c failed:\n{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // And the check can fail: alter one extracted file.
    fs::write(extract.path().join("images/front.jpg"), b"altered").unwrap();
    let check = Command::new(&sha256sum)
        .args(["-c", "manifest-sha256.txt"])
        .current_dir(extract.path())
        .output()
        .unwrap();
    assert!(!check.status.success());
}

#[test]
fn read_archive_round_trips_what_was_written() {
    let out = tempfile::tempdir().unwrap();
    let entries = netverify_entries();
    let written = write_archive(out.path(), REF, &entries, &meta()).unwrap();
    let read = read_archive(&written.path).unwrap();
    assert!(read.manifest_ok, "{:?}", read.problems);
    assert!(read.problems.is_empty());
    assert_eq!(read.sha256, written.sha256);
    assert_eq!(read.bytes, written.bytes);
    assert_eq!(read.files, written.files);
    assert_eq!(read.reference.as_deref(), Some(REF));
    assert_eq!(read.data_json.as_deref(), Some(entries[1].body.as_ref()));
    let front = read
        .files
        .iter()
        .find(|f| f.entry == "images/front.jpg")
        .unwrap();
    assert_eq!(front.classifier.as_deref(), Some("front"));
    assert_eq!(front.content_type, "image/jpeg");
}

#[test]
fn authentication_archive_gives_its_details_as_data_json() {
    let out = tempfile::tempdir().unwrap();
    let details = json(r#"{"transactionResult":"PASSED"}"#);
    let entries = vec![
        entry(
            EntryKind::Authentication,
            "application/json",
            details.clone(),
            "",
        ),
        entry(
            EntryKind::Image {
                classifier: "face".to_owned(),
            },
            "image/jpeg",
            jpeg("authface"),
            "/images/face",
        ),
    ];
    let written = write_archive(out.path(), "auth-1", &entries, &meta()).unwrap();
    assert_eq!(
        entry_list(&written.path),
        [
            "authentication.json",
            "images/face.jpg",
            "provenance.json",
            "manifest-sha256.txt"
        ]
    );
    let read = read_archive(&written.path).unwrap();
    assert!(read.manifest_ok, "{:?}", read.problems);
    assert_eq!(read.data_json, Some(details));
}

#[test]
fn read_archive_reports_a_flipped_byte_in_a_stored_image() {
    let out = tempfile::tempdir().unwrap();
    let written = write_archive(out.path(), REF, &netverify_entries(), &meta()).unwrap();
    let mut bytes = fs::read(&written.path).unwrap();
    let marker = b"MARKER<front>";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("stored image body is in the file");
    bytes[at + marker.len() + 10] ^= 0x01;
    fs::write(&written.path, &bytes).unwrap();

    let read = read_archive(&written.path).unwrap();
    assert!(!read.manifest_ok);
    assert!(
        read.problems.iter().any(|p| p.contains("images/front.jpg")),
        "{:?}",
        read.problems
    );
    assert_ne!(read.sha256, written.sha256);
}

/// Rewrites the archive with one entry's content replaced, CRCs valid: only the manifest
/// and provenance can tell.
fn rewrite_with(path: &Path, victim: &str, content: &[u8]) {
    let original = fs::read(path).unwrap();
    let mut source = zip::ZipArchive::new(std::io::Cursor::new(original)).unwrap();
    let mut target = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..source.len() {
        let mut file = source.by_index(i).unwrap();
        let name = file.name().unwrap().into_owned();
        let mut body = Vec::new();
        file.read_to_end(&mut body).unwrap();
        if name == victim {
            body = content.to_vec();
        }
        target
            .start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        target.write_all(&body).unwrap();
    }
    fs::write(path, target.finish().unwrap().into_inner()).unwrap();
}

#[test]
fn read_archive_reports_content_that_does_not_match_the_manifest() {
    let out = tempfile::tempdir().unwrap();
    let written = write_archive(out.path(), REF, &netverify_entries(), &meta()).unwrap();
    rewrite_with(
        &written.path,
        "data.json",
        br#"{"document":{"firstName":"EVE"}}"#,
    );
    let read = read_archive(&written.path).unwrap();
    assert!(!read.manifest_ok);
    assert!(
        read.problems
            .iter()
            .any(|p| p.contains("data.json") && p.contains("manifest")),
        "{:?}",
        read.problems
    );
    assert!(
        read.problems
            .iter()
            .any(|p| p.contains("data.json") && p.contains("provenance")),
        "{:?}",
        read.problems
    );
}

#[test]
fn read_archive_reports_a_missing_manifest_and_unlisted_entries() {
    let out = tempfile::tempdir().unwrap();
    let written = write_archive(out.path(), REF, &netverify_entries(), &meta()).unwrap();
    // Manifest emptied: every other entry is unlisted.
    rewrite_with(&written.path, "manifest-sha256.txt", b"");
    let read = read_archive(&written.path).unwrap();
    assert!(!read.manifest_ok);
    assert!(
        read.problems
            .iter()
            .any(|p| p.contains("images/face.jpg") && p.contains("not listed")),
        "{:?}",
        read.problems
    );
}

#[test]
fn read_archive_errors_on_a_truncated_file_naming_it() {
    let out = tempfile::tempdir().unwrap();
    let written = write_archive(out.path(), REF, &netverify_entries(), &meta()).unwrap();
    let bytes = fs::read(&written.path).unwrap();
    for keep in [bytes.len() - 10, bytes.len() / 2, 0] {
        fs::write(&written.path, &bytes[..keep]).unwrap();
        let err = read_archive(&written.path).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&format!("{REF}.zip")), "{err}");
    }
}

#[test]
fn failed_write_leaves_no_temp_and_no_archive() {
    // A disk that fills up while the temporary archive is written: an I/O error naming it, the
    // temporary removed, no archive.
    #[cfg(target_os = "linux")]
    if let Some(disk) = crate::peers::Tmpfs::mount("64k") {
        let mut entries = netverify_entries();
        // 1 MiB that does not compress: more than the disk holds.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        entries.push(entry(
            EntryKind::Image {
                classifier: "large".to_owned(),
            },
            "image/jpeg",
            [&jpeg("large")[..], &noise].concat(),
            "/images/large",
        ));
        let err = write_archive(&disk.path, REF, &entries, &meta()).unwrap_err();
        assert!(matches!(err, ArchiveError::Io { .. }), "{err}");
        assert!(err.to_string().contains(&format!("{REF}.zip")), "{err}");
        let listing: Vec<_> = fs::read_dir(disk.path.join("archives"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(listing.is_empty(), "left in archives/: {listing:?}");
    }

    // `archives` is a file: not even the temporary archive can be created; an I/O error, and the
    // file is left as it was.
    let out = tempfile::tempdir().unwrap();
    fs::write(out.path().join("archives"), b"not a directory").unwrap();
    let err = write_archive(out.path(), REF, &netverify_entries(), &meta()).unwrap_err();
    assert!(matches!(err, ArchiveError::Io { .. }), "{err}");
    assert!(err.to_string().contains("archives"), "{err}");
    assert_eq!(
        fs::read(out.path().join("archives")).unwrap(),
        b"not a directory"
    );
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 1);

    // Duplicate entries are refused before anything is written.
    let out = tempfile::tempdir().unwrap();
    let mut twice = netverify_entries();
    twice.push(twice[1].clone());
    let err = write_archive(out.path(), "other-ref", &twice, &meta()).unwrap_err();
    assert!(matches!(err, ArchiveError::DuplicateEntry { .. }), "{err}");
    assert!(!out.path().join("archives/other-ref.zip").exists());
    assert!(no_temps(out.path()));
}

/// Archives are created once and never replaced (SPEC; before the dataset layout a directory
/// here made the final rename fail with an I/O error): whatever holds the archive's name, even a
/// directory, is left as it is, the write says the archive exists, and no temporary is left.
#[test]
fn whatever_holds_the_archive_name_is_never_replaced() {
    let out = tempfile::tempdir().unwrap();
    let blocker = out.path().join("archives").join(format!("{REF}.zip"));
    fs::create_dir_all(blocker.join("occupied")).unwrap();
    let err = write_archive(out.path(), REF, &netverify_entries(), &meta()).unwrap_err();
    assert!(matches!(err, ArchiveError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains(&format!("{REF}.zip")), "{err}");
    assert!(blocker.join("occupied").is_dir());
    assert!(no_temps(out.path()));
}
#[test]
fn unsafe_reference_is_refused_before_touching_the_disk() {
    let out = tempfile::tempdir().unwrap();
    for reference in ["../escape", "a/b", "", ".hidden"] {
        let err = write_archive(out.path(), reference, &netverify_entries(), &meta()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::InvalidReference { .. }),
            "{err}"
        );
    }
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
}

/// Archives are created once and never replaced (SPEC; this test used to assert that a second
/// write replaced the first): a second write of the same reference, even with other content,
/// fails with `AlreadyExists` naming the archive, the first archive stays byte for byte, and no
/// temporary is left.
#[test]
fn a_second_write_never_replaces_an_archive_and_leaves_no_temp() {
    let out = tempfile::tempdir().unwrap();
    let first = write_archive(out.path(), REF, &netverify_entries(), &meta()).unwrap();
    let before = fs::read(&first.path).unwrap();
    let mut other = netverify_entries();
    other.truncate(2);
    let err = write_archive(out.path(), REF, &other, &meta()).unwrap_err();
    assert!(matches!(err, ArchiveError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains(&format!("{REF}.zip")), "{err}");
    assert_eq!(
        fs::read(&first.path).unwrap(),
        before,
        "the first archive changed"
    );
    assert!(read_archive(&first.path).unwrap().manifest_ok);
    assert!(no_temps(out.path()));
}

#[test]
fn stale_temps_are_removed_and_nothing_else() {
    let out = tempfile::tempdir().unwrap();
    assert_eq!(
        remove_stale_temps(out.path()).unwrap(),
        0,
        "no archives/ yet"
    );
    let written = write_archive(out.path(), REF, &netverify_entries(), &meta()).unwrap();
    let dir = out.path().join("archives");
    fs::write(dir.join(".abc.zip.tmp"), b"half").unwrap();
    fs::write(dir.join(".def.zip.tmp"), b"half").unwrap();
    fs::write(dir.join("notes.tmp"), b"keep").unwrap();
    assert_eq!(remove_stale_temps(out.path()).unwrap(), 2);
    assert!(!dir.join(".abc.zip.tmp").exists());
    assert!(!dir.join(".def.zip.tmp").exists());
    assert!(dir.join("notes.tmp").exists());
    assert!(written.path.exists());
}

/// A body of `len` bytes that starts like a JPEG and never repeats within an entry, so a byte
/// out of place changes every hash.
fn big_jpeg(len: usize, seed: u32) -> Vec<u8> {
    let mut body = vec![0xFF, 0xD8, 0xFF, 0xE0];
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    body.extend((4..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    body
}

/// The archive's recorded sha256 (the tables' `archive_sha256`) is computed as the archive is
/// written, without trusting a read of the finished file: it must still be the sha256 of the
/// file's bytes when entries that stay in the writer's buffer (JSON, small images) and entries
/// too long for it (written through to the file as they arrive, their headers patched
/// afterwards) alternate, and when a long transfer is abandoned halfway and received again.
#[test]
fn the_recorded_sha256_is_the_files_when_held_and_written_through_entries_mix() {
    use jumio_export::output::archive::ArchiveWriter;
    use jumio_export::output::fsmode::Modes;
    let out = tempfile::tempdir().unwrap();
    // 2 MiB and 700 KiB: longer than the 512 KiB the writer holds; the rest fit it.
    let front = big_jpeg(2 << 20, 1);
    let back = big_jpeg(700 << 10, 2);
    let face = jpeg("face");
    let mut w = ArchiveWriter::create(out.path(), REF, &meta(), None, Modes::default()).unwrap();
    // Bodies arrive in chunks of 48 KiB (copied into the writer's buffer) or of 300 KiB, as a
    // connection's reads of a large body are (written through from the chunk itself).
    let add = |w: &mut ArchiveWriter, kind: EntryKind, ctype: &str, body: &[u8], cut: usize| {
        w.begin(kind, ctype).unwrap();
        let step = if body.len() > 1 << 20 {
            300 << 10
        } else {
            48 << 10
        };
        for chunk in body[..cut].chunks(step + 7) {
            w.write(chunk).unwrap();
        }
    };
    let json_entries = [
        (EntryKind::Status, json(r#"{"status":"DONE"}"#), "status"),
        (
            EntryKind::Data,
            json(r#"{"document":{"type":"PASSPORT"}}"#),
            "data",
        ),
        (EntryKind::Images, json(r#"{"images":[]}"#), "images"),
    ];
    for (kind, body, path) in &json_entries {
        add(&mut w, kind.clone(), "application/json", body, body.len());
        w.end(path, 200, at(1_700_000_000)).unwrap();
    }
    let image = |classifier: &str| EntryKind::Image {
        classifier: classifier.to_owned(),
    };
    // Half of the long front image, then the transfer fails: the entry is dropped.
    add(&mut w, image("front"), "image/jpeg", &front, 1 << 20);
    w.abandon().unwrap();
    for (classifier, body) in [("front", &front), ("back", &back), ("face", &face)] {
        add(&mut w, image(classifier), "image/jpeg", body, body.len());
        w.end(&format!("/images/{classifier}"), 200, at(1_700_000_001))
            .unwrap();
    }
    let written = w.finish().unwrap();

    let bytes = fs::read(&written.path).unwrap();
    assert_eq!(written.bytes, bytes.len() as u64);
    assert!(
        written.sha256 == hex::encode(sha2::Sha256::digest(&bytes)),
        "the recorded sha256 is not the file's"
    );
    // And the file is the archive of what was received whole.
    let read = read_archive(&written.path).unwrap();
    assert!(read.manifest_ok, "{:?}", read.problems);
    let mut zip = zip::ZipArchive::new(fs::File::open(&written.path).unwrap()).unwrap();
    for (name, body) in [
        ("images/front.jpg", &front),
        ("images/back.jpg", &back),
        ("images/face.jpg", &face),
    ] {
        let mut content = Vec::new();
        zip.by_name(name)
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert!(&content == body, "{name} differs from what was received");
    }
    assert_eq!(entry_list(&written.path).len(), 8);
    assert!(no_temps(out.path()));
}

/// An encrypted archive whose transfer of a later file fails partway and is received again: the
/// entry before it keeps its AES authentication code (written when the zip writer finishes that
/// entry, as the next one starts), so the archive checks out under its key and every file is
/// what was received. Regression: the dropped entry was cut from where the previous entry's data
/// ended, before its authentication code, and the next header overwrote those 10 bytes.
#[test]
fn an_abandoned_entry_of_an_encrypted_archive_leaves_the_entry_before_it_whole() {
    use jumio_export::output::archive::{ArchiveKey, ArchiveWriter, check};
    use jumio_export::output::fsmode::Modes;
    let out = tempfile::tempdir().unwrap();
    let secret = [7u8; 32];
    let key = ArchiveKey::new(&secret).unwrap();
    let front = big_jpeg(300 << 10, 3);
    let back = big_jpeg(40 << 10, 4);
    let mut w = ArchiveWriter::create(
        out.path(),
        REF,
        &meta(),
        Some(key.clone()),
        Modes::default(),
    )
    .unwrap();
    let status = json(r#"{"status":"DONE"}"#);
    w.begin(EntryKind::Status, "application/json").unwrap();
    w.write(&status).unwrap();
    w.end("status", 200, at(1_700_000_000)).unwrap();
    let data = json(r#"{"document":{"type":"PASSPORT"}}"#);
    w.begin(EntryKind::Data, "application/json").unwrap();
    w.write(&data).unwrap();
    w.end("data", 200, at(1_700_000_000)).unwrap();
    let images = json(r#"{"images":[]}"#);
    w.begin(EntryKind::Images, "application/json").unwrap();
    w.write(&images).unwrap();
    w.end("images", 200, at(1_700_000_000)).unwrap();
    let image = |classifier: &str| EntryKind::Image {
        classifier: classifier.to_owned(),
    };
    // The front image fails a third of the way in: the entry is dropped, then received whole.
    w.begin(image("front"), "image/jpeg").unwrap();
    for chunk in front[..100 << 10].chunks(16 << 10) {
        w.write(chunk).unwrap();
    }
    w.abandon().unwrap();
    for (classifier, body) in [("front", &front), ("back", &back)] {
        w.begin(image(classifier), "image/jpeg").unwrap();
        for chunk in body.chunks(16 << 10) {
            w.write(chunk).unwrap();
        }
        w.end(&format!("/images/{classifier}"), 200, at(1_700_000_001))
            .unwrap();
    }
    let written = w.finish().unwrap();
    let bytes = fs::read(&written.path).unwrap();
    assert_eq!(written.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    let checked = check(&written.path, REF, None, Some(&key));
    assert!(checked.is_ok(), "{:?}", checked.err().map(|r| r.findings));
    let mut zip = zip::ZipArchive::new(fs::File::open(&written.path).unwrap()).unwrap();
    for (name, body) in [
        ("images.json", &images),
        ("images/front.jpg", &front),
        ("images/back.jpg", &back),
    ] {
        let mut content = Vec::new();
        zip.by_name_decrypt(name, &secret)
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert!(&content == body, "{name} differs from what was received");
    }
}

/// Each entry's sha256 (the manifest, the `files` table) is taken as its body arrives, side by
/// side with the archive's final bytes before it (two SHA-256 streams interleaved): both must
/// stay plain SHA-256 whatever the bodies' sizes and chunks, and whether the archive has final
/// bytes waiting or not (an entry after one written through has none).
#[test]
fn entry_and_archive_sha256_hold_when_bodies_are_hashed_beside_the_archive() {
    use jumio_export::output::archive::ArchiveWriter;
    use jumio_export::output::fsmode::Modes;
    let out = tempfile::tempdir().unwrap();
    // Sizes around block and buffer boundaries; one longer than the 512 KiB the writer holds.
    let sizes = [
        300 << 10,
        17,
        200 << 10,
        450 << 10,
        63,
        64,
        65,
        (600 << 10) + 3,
        100 << 10,
        5,
        (512 << 10) - 1,
        250_001,
    ];
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| big_jpeg(n.max(4), i as u32 + 10))
        .collect();
    let mut w = ArchiveWriter::create(out.path(), REF, &meta(), None, Modes::default()).unwrap();
    for (kind, body, path) in [
        (EntryKind::Status, json(r#"{"status":"DONE"}"#), "status"),
        (EntryKind::Data, json(r#"{"document":{}}"#), "data"),
        (EntryKind::Images, json(r#"{"images":[]}"#), "images"),
    ] {
        w.begin(kind, "application/json").unwrap();
        w.write(&body).unwrap();
        w.end(path, 200, at(1_700_000_000)).unwrap();
    }
    for (i, body) in bodies.iter().enumerate() {
        w.begin(
            EntryKind::Image {
                classifier: format!("extra-{i:02}"),
            },
            "image/jpeg",
        )
        .unwrap();
        // Chunks of odd sizes: a few bytes, a connection's 16 KiB reads, large reads.
        let step = [3, (16 << 10) + 5, (300 << 10) + 1][i % 3];
        for chunk in body.chunks(step) {
            w.write(chunk).unwrap();
        }
        w.end(&format!("/images/{i}"), 200, at(1_700_000_001))
            .unwrap();
    }
    let written = w.finish().unwrap();
    let bytes = fs::read(&written.path).unwrap();
    assert!(
        written.sha256 == hex::encode(sha2::Sha256::digest(&bytes)),
        "the recorded sha256 is not the file's"
    );
    // The images follow the three JSON entries, in the order they were received.
    assert_eq!(written.files.len(), 3 + bodies.len() + 2);
    for (file, body) in written.files[3..].iter().zip(&bodies) {
        assert_eq!(file.bytes, body.len() as u64, "{}", file.entry);
        assert!(
            file.sha256 == hex::encode(sha2::Sha256::digest(body)),
            "{}: the recorded sha256 is not its body's",
            file.entry
        );
    }
    let read = read_archive(&written.path).unwrap();
    assert!(read.manifest_ok, "{:?}", read.problems);
    assert!(no_temps(out.path()));
}
