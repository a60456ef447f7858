//! Property tests (proptest) for the three invariants hostile API data must never break:
//! archive entry names are always enclosed, the origin check never accepts a foreign origin,
//! and the flattener always yields the fixed schema that the CSV and Parquet writers accept.
//!
//! Case counts are kept at or below 256 so the whole suite stays fast on two cores; the
//! cargo-fuzz targets under `fuzz/` explore the same ground for much longer.

use std::collections::BTreeSet;
use std::fs::File;

use bytes::Bytes;
use chrono::DateTime;
use jumio_export::Kind;
use jumio_export::api::origin::check_href;
use jumio_export::flatten::{ArchiveSummary, Row, flatten, table_columns};
use jumio_export::output::archive::{
    ArchiveEntry, ArchiveError, EntryKind, ProvenanceMeta, entry_names, write_archive,
};
use jumio_export::output::tables::TableWriter;
use proptest::prelude::*;
use reqwest::Url;
use serde_json::{Map, Number, Value};

use crate::support::parquet_rows;

/// `cases` cases, and no `*.proptest-regressions` files written into the source tree: a
/// failure prints its minimal input, which then belongs in `tests/regressions.rs`.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const REF: &str = "2b1e8c4a-0000-4000-8000-00000000abcd";

// ---- archive entry names ------------------------------------------------------------

/// Classifiers as a hostile or broken API might send them: path tricks, encodings, NUL,
/// very long, arbitrary Unicode, and the three names the allowlist knows.
fn classifier() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("front".to_owned()),
        Just("back".to_owned()),
        Just("face".to_owned()),
        Just("../../x".to_owned()),
        Just(r"C:\x".to_owned()),
        Just("%2e%2e/%2F".to_owned()),
        Just("/etc/passwd".to_owned()),
        Just("front\0.jpg".to_owned()),
        "[./\\\\:%a-zA-Z0-9\\x00 ]{0,24}",
        any::<String>(),
        "x{250,300}",
    ]
}

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("image/jpeg".to_owned()),
        Just("IMAGE/PNG; charset=x".to_owned()),
        Just("application/pdf".to_owned()),
        Just("application/json".to_owned()),
        Just(String::new()),
        Just("image/../../x".to_owned()),
        any::<String>(),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let magic = prop_oneof![
        Just(Vec::new()),
        Just(vec![0xFF, 0xD8, 0xFF]),
        Just(b"\x89PNG\r\n\x1a\n".to_vec()),
        Just(b"%PDF-".to_vec()),
    ];
    (magic, prop::collection::vec(any::<u8>(), 0..48)).prop_map(|(mut m, rest)| {
        m.extend(rest);
        m
    })
}

fn archive_entry(kind: EntryKind, content_type: String, body: Vec<u8>) -> ArchiveEntry {
    ArchiveEntry {
        kind,
        body: Bytes::from(body),
        content_type,
        api_path: format!("/api/netverify/v2/scans/{REF}"),
        http_status: 200,
        retrieved_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    }
}

/// A set of entries for one archive: each JSON response at most once, any number of
/// images with arbitrary classifiers, distinct liveness and page numbers (any `u32`).
fn entries() -> impl Strategy<Value = Vec<ArchiveEntry>> {
    (
        prop::collection::vec(any::<bool>(), 6),
        prop::collection::vec((classifier(), content_type(), body()), 0..6),
        prop::collection::btree_set(any::<u32>(), 0..4),
        prop::collection::btree_set(any::<u32>(), 0..4),
        content_type(),
        body(),
    )
        .prop_map(|(fixed, images, liveness, pages, ct, b)| {
            let mut out = Vec::new();
            let fixed_kinds = [
                EntryKind::Status,
                EntryKind::Data,
                EntryKind::Images,
                EntryKind::Pages,
                EntryKind::Authentication,
                EntryKind::OriginalPdf,
            ];
            for (present, kind) in fixed.into_iter().zip(fixed_kinds) {
                if present {
                    out.push(archive_entry(kind, ct.clone(), b.clone()));
                }
            }
            for (classifier, ct, b) in images {
                out.push(archive_entry(EntryKind::Image { classifier }, ct, b));
            }
            for number in liveness {
                out.push(archive_entry(
                    EntryKind::Liveness { number },
                    ct.clone(),
                    b.clone(),
                ));
            }
            for number in pages {
                out.push(archive_entry(
                    EntryKind::Page { number },
                    ct.clone(),
                    b.clone(),
                ));
            }
            out
        })
}

/// What the brief demands of every name, plus a stricter alphabet: the allowlist only
/// ever produces `[A-Za-z0-9./-]`.
fn assert_safe_name(name: &str) -> Result<(), TestCaseError> {
    prop_assert!(!name.is_empty(), "empty entry name");
    prop_assert!(!name.starts_with('/'), "{name:?} is absolute");
    prop_assert!(!name.contains(".."), "{name:?} contains ..");
    prop_assert!(!name.contains('\\'), "{name:?} contains a backslash");
    prop_assert!(!name.contains('\0'), "{name:?} contains NUL");
    prop_assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./-".contains(&b)),
        "{name:?} leaves the allowlist alphabet"
    );
    prop_assert!(
        name.split('/').all(|part| !part.is_empty() && part != "."),
        "{name:?} has an empty or `.` component"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn archive_entry_names_are_always_enclosed(entries in entries()) {
        let known_repeated = {
            let mut seen = BTreeSet::new();
            entries.iter().any(|e| match &e.kind {
                EntryKind::Image { classifier }
                    if ["front", "back", "face"].contains(&classifier.as_str()) =>
                {
                    !seen.insert(classifier.clone())
                }
                _ => false,
            })
        };
        let names = match entry_names(REF, &entries) {
            Ok(names) => names,
            Err(ArchiveError::DuplicateEntry { entry, .. }) => {
                // Only a repeated front/back/face can collide in these entry sets.
                prop_assert!(known_repeated, "unexpected duplicate {entry:?}");
                assert_safe_name(&entry)?;
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(format!("entry_names: {other}"))),
        };
        prop_assert!(!known_repeated, "a repeated known classifier was not refused");
        prop_assert_eq!(names.len(), entries.len());
        for name in &names {
            assert_safe_name(name)?;
        }

        let out = tempfile::tempdir().unwrap();
        let meta = ProvenanceMeta { tool_version: "0.1.0".into(), job_sha256: "ab".repeat(32), run: None };
        let written = write_archive(out.path(), REF, &entries, &meta)
            .map_err(|e| TestCaseError::fail(format!("write_archive: {e}")))?;
        let mut zip = zip::ZipArchive::new(File::open(&written.path).unwrap()).unwrap();
        let mut stored = BTreeSet::new();
        for i in 0..zip.len() {
            let file = zip.by_index(i).unwrap();
            let enclosed = file.enclosed_name();
            prop_assert!(enclosed.is_some(), "zip refuses entry {:?}", file.name());
            let enclosed = enclosed.unwrap();
            prop_assert!(enclosed.is_relative());
            let name = file.name().unwrap().into_owned();
            assert_safe_name(&name)?;
            stored.insert(name);
        }
        let mut expected: BTreeSet<String> = names.into_iter().collect();
        expected.insert("provenance.json".into());
        expected.insert("manifest-sha256.txt".into());
        prop_assert_eq!(stored, expected);
    }
}

// ---- origin check -------------------------------------------------------------------

/// The bases an export is configured with: default port, explicit port, IPv4, IPv6.
const BASES: [&str; 4] = [
    "https://netverify.com",
    "https://retrieval.lon.netverify.com",
    "http://127.0.0.1:8080",
    "https://[::1]:8443",
];

/// A host relative to the base: the same one (possibly in upper case), or one that is
/// foreign however it is spelt.
#[derive(Debug, Clone)]
enum HostPick {
    Same,
    SameUpper,
    Foreign(String),
}

fn host_pick() -> impl Strategy<Value = HostPick> {
    prop_oneof![
        3 => Just(HostPick::Same),
        1 => Just(HostPick::SameUpper),
        1 => prop::sample::select(vec![
            "evil.com",
            "netverify.com.evil.com",
            "netverify.com.",
            "retrieval.lon.netverify.com.",
            "evilnetverify.com",
            "lon.netverify.com",
            "169.254.169.254",
            "[fd00:ec2::254]",
            "127.0.0.2",
                "localhost",
            "[::2]",
            "[::ffff:127.0.0.1]",
            "xn--ntverify-b1a.com",
            "n\u{0435}tverify.com",
            "netverify.com%2eevil.com",
            "0.0.0.0",
        ])
        .prop_map(|h| HostPick::Foreign(h.to_owned())),
        // Labels start with a letter, so none of them is a numeric IPv4 spelling.
        2 => "[a-z][a-z0-9-]{0,8}(\\.[a-z][a-z0-9-]{0,8}){0,3}".prop_map(HostPick::Foreign),
    ]
}

/// A generated href and whether it is, by construction, on the base's origin.
#[derive(Debug, Clone)]
struct Href {
    text: String,
    same_origin: bool,
}

fn href_for(base: &'static str) -> impl Strategy<Value = Href> {
    let b = Url::parse(base).unwrap();
    let scheme = b.scheme().to_owned();
    let host = b.host_str().unwrap().to_owned();
    let port = b.port_or_known_default().unwrap();
    // Without a port (or with an empty one) an href means the scheme's default port.
    let default_ok = b.port().is_none();
    let schemes = prop_oneof![
        4 => Just((scheme.clone(), true)),
        1 => Just((scheme.to_ascii_uppercase(), true)),
        2 => prop::sample::select(vec!["http", "https", "ftp", "ws", "wss", "file", "gopher"])
            .prop_map(move |s| (s.to_owned(), s == b.scheme())),
    ];
    let userinfo = prop_oneof![
        6 => Just((String::new(), true)),
        // `https://@host/` parses to an empty user name: nothing is sent, same origin.
        1 => Just(("@".to_owned(), true)),
        3 => prop::sample::select(vec![
            "user@", "user:pw@", ":pw@", "netverify.com@", "127.0.0.1:8080@", "%40@",
        ])
        .prop_map(|u| (u.to_owned(), false)),
    ];
    let ports = prop_oneof![
        3 => Just((String::new(), default_ok)),
        1 => Just((":".to_owned(), default_ok)),
        2 => Just((format!(":{port}"), true)),
        1 => Just((format!(":000{port}"), true)),
        3 => any::<u16>().prop_map(move |p| (format!(":{p}"), p == port)),
        1 => Just((":99999".to_owned(), false)),
    ];
    let path = "(/[a-zA-Z0-9._~%@:-]{0,10}){0,3}(\\?[a-z=&@]{0,8})?(#[a-z@]{0,5})?";
    let pad = prop::sample::select(vec!["", " ", "\t", "\n "]);
    (schemes, userinfo, host_pick(), ports, path, pad).prop_map(
        move |((s, s_ok), (u, u_ok), h, (p, p_ok), path, pad)| {
            let (host_text, h_ok) = match h {
                HostPick::Same => (host.clone(), true),
                HostPick::SameUpper => (host.to_ascii_uppercase(), true),
                HostPick::Foreign(f) => {
                    let same = f.eq_ignore_ascii_case(&host);
                    (f, same)
                }
            };
            Href {
                text: format!("{pad}{s}://{u}{host_text}{p}{path}{pad}"),
                same_origin: s_ok && u_ok && h_ok && p_ok,
            }
        },
    )
}

fn any_base_and_href() -> impl Strategy<Value = (&'static str, Href)> {
    prop::sample::select(BASES.to_vec()).prop_flat_map(|base| (Just(base), href_for(base)))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn origin_check_never_accepts_a_foreign_origin((base, href) in any_base_and_href()) {
        let base_url = Url::parse(base).unwrap();
        let result = check_href(&base_url, &href.text);
        if let Ok(url) = &result {
            prop_assert!(href.same_origin, "{:?} accepted against {base}", href.text);
            prop_assert_eq!(url.scheme(), base_url.scheme());
            prop_assert_eq!(url.host_str(), base_url.host_str());
            prop_assert_eq!(url.port_or_known_default(), base_url.port_or_known_default());
            prop_assert!(url.username().is_empty() && url.password().is_none());
        } else {
            // Same-origin hrefs must still be followed, or images would never be fetched.
            prop_assert!(!href.same_origin, "{:?} refused against {base}", href.text);
        }
    }
}

// ---- flattener ----------------------------------------------------------------------

/// JSON keys the flattener knows (every segment of every documented path), mixed into
/// arbitrary objects so generated values reach documented columns.
fn documented_keys() -> Vec<String> {
    let mut keys = BTreeSet::new();
    for kind in Kind::ALL {
        for column in table_columns(kind) {
            if let Some(path) = &column.doc_path {
                keys.extend(path.split('.').map(str::to_owned));
            }
        }
    }
    keys.extend(["classifier", "href", "rejectReasonCode", "detailsCode"].map(String::from));
    keys.into_iter().collect()
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        "(TRUE|false|True|yes)".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?"
            .prop_map(Value::String),
        // An embedded JSON object as text, as `extractedData` sometimes arrives.
        Just(Value::String(r#"{"firstName":"A","dob":"1990-01-01","x":[1]}"#.into())),
    ]
}

fn json_value(keys: Vec<String>) -> impl Strategy<Value = Value> {
    let key = prop_oneof![3 => prop::sample::select(keys), 1 => any::<String>()];
    json_leaf().prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body for `kind`: an arbitrary value, or an object with some documented paths set to
/// arbitrary values (so every nesting level is exercised), plus stray keys.
fn body_for(kind: Kind) -> impl Strategy<Value = Value> {
    let paths: Vec<String> = table_columns(kind)
        .iter()
        .filter_map(|c| c.doc_path.clone())
        .collect();
    let keys = documented_keys();
    let filled = (
        prop::collection::vec(
            (prop::sample::select(paths), json_value(keys.clone())),
            0..24,
        ),
        json_value(keys.clone()),
    )
        .prop_map(|(assignments, stray)| {
            let mut root = Value::Object(Map::new());
            for (path, value) in assignments {
                set_path(&mut root, &path, value);
            }
            if let (Value::Object(root), Value::Object(stray)) = (&mut root, stray) {
                for (k, v) in stray {
                    root.entry(k).or_insert(v);
                }
            }
            root
        });
    prop_oneof![1 => json_value(keys), 3 => filled]
}

/// Sets `a.b.c` in `root`, turning whatever is in the way into objects.
fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut at = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let map = at.as_object_mut().unwrap();
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        at = map.entry(part.to_owned()).or_insert(Value::Null);
    }
}

fn kind_and_bodies() -> impl Strategy<Value = (Kind, Vec<Value>)> {
    prop::sample::select(Kind::ALL.to_vec())
        .prop_flat_map(|kind| (Just(kind), prop::collection::vec(body_for(kind), 1..4)))
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn flattener_always_yields_the_fixed_schema((kind, bodies) in kind_and_bodies()) {
        let columns = table_columns(kind);
        let summary = ArchiveSummary {
            image_count: 2,
            archive: format!("archives/{REF}.zip"),
            archive_sha256: "cd".repeat(32),
            run: "20261206T074501Z-7f2a".into(),
        };
        let rows: Vec<Row> = bodies.iter().map(|b| flatten(kind, REF, b, &summary)).collect();
        for row in &rows {
            prop_assert_eq!(row.0.len(), columns.len());
        }

        let dir = tempfile::tempdir().unwrap();
        let name = kind.table_name();
        let mut writer = TableWriter::create(dir.path(), name, columns, true, true, Default::default()).unwrap();
        for row in &rows {
            writer.write(row).map_err(|e| TestCaseError::fail(format!("write: {e}")))?;
        }
        let stats = writer.finish().map_err(|e| TestCaseError::fail(format!("finish: {e}")))?;
        prop_assert_eq!(stats.rows, rows.len() as u64);
        prop_assert_eq!(parquet_rows(&dir.path().join(format!("{name}.parquet"))), rows.len());

        let mut csv = csv::Reader::from_path(dir.path().join(format!("{name}.csv"))).unwrap();
        prop_assert_eq!(csv.headers().unwrap().len(), columns.len());
        let records: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
        prop_assert_eq!(records.len(), rows.len());
        for record in &records {
            prop_assert_eq!(record.len(), columns.len());
            prop_assert_eq!(&record[0], REF);
        }
    }
}
