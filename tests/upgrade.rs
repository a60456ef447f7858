//! `jumio-export upgrade`: a directory of the layout before datasets, built by hand (archives
//! without a run in their provenance, top-level tables, an old `failures.csv` with a `PENDING`
//! row due tomorrow, `report.json`, the old lock), upgraded in place; then a run against a live
//! simulator builds on it without asking the API for anything the upgrade listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};

use jumio_export::Kind;
use jumio_export::flatten::{self, ArchiveSummary};
use jumio_export::output::archive::{self, ArchiveEntry, EntryKind, ProvenanceMeta};
use jumio_export::output::fsmode::Modes;
use jumio_export::output::tables::TableWriter;
use jumio_export::simulator::{self, SimOptions, data, media};

use crate::support::{
    BlockingSim, bin, dataset_csv, dataset_parquet_rows, dataset_parquet_strings, exportable, text,
};

const JOB: &str = r#"
[api]
region = "us"
user_agent = "jumio-export upgrade-tests/1.0"

[limits]
requests_per_second = 200
burst = 5
concurrency = 4
max_retries = 3
timeout_seconds = 10

[polling]
schedule_seconds = [0.05, 0.1, 0.15]
"#;

/// The old layout's top-level files the upgrade moves into `legacy/`.
const OLD_FILES: [&str; 11] = [
    "netverify.csv",
    "netverify.parquet",
    "documents.csv",
    "documents.parquet",
    "authentications.csv",
    "authentications.parquet",
    "files.csv",
    "files.parquet",
    "failures.csv",
    "report.json",
    ".jumio-export.lock",
];

/// The reference whose old failure row is PENDING, due tomorrow.
const PENDING: &str = "pf-n-upgrade1";
/// The reference whose old failure row is NOT_FOUND.
const NOT_FOUND: &str = "nf-n-upgrade2";
/// A Netverify scan archived with images off: `status.json` and `data.json` only, which fit
/// Document Verification as well; the old `netverify` table tells.
const DATA_ONLY: &str = "ok-n-upgrade3";
/// An archive cut short: it does not check out.
const DAMAGED: &str = "ok-n-upgrade4";

fn entry(kind: EntryKind, body: Vec<u8>, content_type: &str, path: String) -> ArchiveEntry {
    ArchiveEntry {
        kind,
        body: Bytes::from(body),
        content_type: content_type.into(),
        api_path: path,
        http_status: 200,
        retrieved_at: Utc::now(),
    }
}

fn json(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// The responses the old version archived for `reference`, from the simulator's own data.
fn responses(reference: &str, kind: Kind, images: bool) -> Vec<ArchiveEntry> {
    let seed = SimOptions::default().seed;
    let sc = simulator::scenario(seed, reference).expect("a reference the simulator knows");
    let (origin, ts) = ("https://netverify.example", "2025-03-04T05:06:07.000Z");
    let jpeg = media::jpeg(seed, &[reference.as_bytes()], 2_000);
    let base = format!("/api/netverify/v2/scans/{reference}");
    match kind {
        Kind::Netverify => {
            let mut e = vec![
                entry(
                    EntryKind::Status,
                    json(&data::status_json(&sc, ts, sc.final_status)),
                    "application/json",
                    base.clone(),
                ),
                entry(
                    EntryKind::Data,
                    json(&data::netverify_data(seed, &sc, ts, sc.final_status)),
                    "application/json",
                    format!("{base}/data"),
                ),
            ];
            if images {
                e.push(entry(
                    EntryKind::Images,
                    json(&data::netverify_images(&sc, origin, ts)),
                    "application/json",
                    format!("{base}/images"),
                ));
                e.push(entry(
                    EntryKind::Image {
                        classifier: "front".into(),
                    },
                    jpeg,
                    "image/jpeg",
                    format!("{base}/images/front"),
                ));
            }
            e
        }
        Kind::Document => {
            let base = format!("/api/netverify/v2/documents/{reference}");
            vec![
                entry(
                    EntryKind::Status,
                    json(&data::status_json(&sc, ts, sc.final_status)),
                    "application/json",
                    base.clone(),
                ),
                entry(
                    EntryKind::Data,
                    json(&data::document_data(seed, &sc, origin, ts)),
                    "application/json",
                    format!("{base}/data"),
                ),
                entry(
                    EntryKind::Pages,
                    json(&data::document_pages(&sc, origin, ts)),
                    "application/json",
                    format!("{base}/pages"),
                ),
                entry(
                    EntryKind::Page { number: 1 },
                    jpeg,
                    "image/jpeg",
                    format!("{base}/pages/1"),
                ),
            ]
        }
        Kind::Authentication => vec![
            entry(
                EntryKind::Authentication,
                json(&data::authentication_details(
                    seed,
                    &sc,
                    origin,
                    sc.final_status,
                )),
                "application/json",
                format!("/api/v1/accounts/x/transactions/{reference}"),
            ),
            entry(
                EntryKind::Image {
                    classifier: "face".into(),
                },
                jpeg,
                "image/jpeg",
                format!("/api/v1/accounts/x/transactions/{reference}/images/face"),
            ),
        ],
    }
}

/// An old-layout directory at `out`: one archive per reference of `archived` (plus the
/// data-only and the damaged one), the four tables at the top level in CSV and Parquet,
/// `failures.csv` with a PENDING row due at `due` and a NOT_FOUND row, `report.json` and the
/// old lock. Returns the archived references and the number of `files` rows their archives give.
fn old_layout(out: &Path, archived: &[(String, Kind)], due: &str) -> (Vec<(String, Kind)>, usize) {
    let meta = ProvenanceMeta {
        tool_version: "0.0.9".into(),
        job_sha256: "0".repeat(64),
        run: None,
    };
    let mut all: Vec<(String, Kind)> = archived.to_vec();
    all.push((DATA_ONLY.to_string(), Kind::Netverify));
    let mut writers: BTreeMap<&str, TableWriter> = BTreeMap::new();
    for kind in Kind::ALL {
        let w = TableWriter::create(
            out,
            kind.table_name(),
            flatten::table_columns(kind),
            true,
            true,
            Modes::default(),
        )
        .unwrap();
        writers.insert(kind.table_name(), w);
    }
    let mut files = TableWriter::create(
        out,
        "files",
        flatten::files_columns(),
        true,
        true,
        Modes::default(),
    )
    .unwrap();
    let mut file_rows = 0;
    for (reference, kind) in &all {
        let images = reference != DATA_ONLY;
        let written =
            archive::write_archive(out, reference, &responses(reference, *kind, images), &meta)
                .unwrap();
        let data: serde_json::Value = serde_json::from_slice(
            &responses(reference, *kind, false)
                .iter()
                .find(|e| matches!(e.kind, EntryKind::Data | EntryKind::Authentication))
                .unwrap()
                .body,
        )
        .unwrap();
        let summary = ArchiveSummary {
            image_count: archive::image_count(&written.files),
            archive: written.relative.clone(),
            archive_sha256: written.sha256.clone(),
            run: String::new(),
        };
        writers
            .get_mut(kind.table_name())
            .unwrap()
            .write(&flatten::flatten(*kind, reference, &data, &summary))
            .unwrap();
        for f in &written.files {
            let record = flatten::FileRecord {
                reference: reference.clone(),
                kind: *kind,
                entry: f.entry.clone(),
                classifier: f.classifier.clone(),
                content_type: f.content_type.clone(),
                bytes: f.bytes,
                sha256: f.sha256.clone(),
                run: String::new(),
            };
            files.write(&flatten::file_row(&record)).unwrap();
            file_rows += 1;
        }
    }
    for (_, w) in writers {
        w.finish().unwrap();
    }
    files.finish().unwrap();
    // The damaged archive: written whole, then cut short (as a full disk or a copy might).
    let damaged = archive::write_archive(
        out,
        DAMAGED,
        &responses(DAMAGED, Kind::Netverify, true),
        &meta,
    )
    .unwrap();
    let bytes = std::fs::read(&damaged.path).unwrap();
    std::fs::write(&damaged.path, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(
        out.join("failures.csv"),
        format!(
            "reference,kind,stage,http_status,error,attempts,next_attempt_after\n\
             {PENDING},netverify,status,200,PENDING,4,{due}\n\
             {NOT_FOUND},netverify,status,404,NOT_FOUND,1,\n"
        ),
    )
    .unwrap();
    std::fs::write(
        out.join("report.json"),
        br#"{"tool":"jumio-export","tool_version":"0.0.9","archives":5}"#,
    )
    .unwrap();
    std::fs::write(out.join(".jumio-export.lock"), b"").unwrap();
    (all, file_rows)
}

struct Setup {
    _tmp: tempfile::TempDir,
    out: PathBuf,
    job: PathBuf,
    refs: PathBuf,
}

fn setup(input: &[(String, Kind)]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let job = tmp.path().join("job.toml");
    std::fs::write(&job, JOB).unwrap();
    let refs = tmp.path().join("refs.csv");
    let mut list = String::from("reference,kind\n");
    for (r, k) in input {
        list.push_str(&format!("{r},{k}\n"));
    }
    std::fs::write(&refs, list).unwrap();
    Setup {
        _tmp: tmp,
        out,
        job,
        refs,
    }
}

fn run(s: &Setup, base: &str) -> std::process::Output {
    bin()
        .arg("run")
        .arg(&s.job)
        .arg("--input")
        .arg(&s.refs)
        .arg("--out")
        .arg(&s.out)
        .arg("--base-url")
        .arg(base)
        .arg("--quiet")
        .output()
        .unwrap()
}

fn upgrade(out: &Path) -> std::process::Output {
    bin().arg("upgrade").arg(out).output().unwrap()
}

fn commits(out: &Path) -> Vec<serde_json::Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(out.join("commits"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".json") && !name.starts_with('.')
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn column(rows: &[BTreeMap<String, String>], name: &str) -> BTreeSet<String> {
    rows.iter().map(|r| r[name].clone()).collect()
}

#[test]
fn an_old_directory_is_upgraded_in_place_and_the_next_run_fetches_none_of_it() {
    let sim = BlockingSim::start(SimOptions::default());
    let base = sim.api().base_url();
    // Two of each kind archived by the old version, one more the next run exports fresh.
    let mut population = Vec::new();
    for kind in Kind::ALL {
        population.extend(
            exportable(12)
                .into_iter()
                .filter(|(_, k)| *k == kind)
                .take(2),
        );
    }
    assert_eq!(population.len(), 6, "two references of each kind");
    let fresh = exportable(13)
        .into_iter()
        .find(|r| !population.contains(r))
        .unwrap();
    let tomorrow =
        (Utc::now() + chrono::Duration::days(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut input = population.clone();
    input.extend([
        (DATA_ONLY.to_string(), Kind::Netverify),
        (PENDING.to_string(), Kind::Netverify),
        (NOT_FOUND.to_string(), Kind::Netverify),
        fresh.clone(),
    ]);
    let s = setup(&input);
    let (archived, file_rows) = old_layout(&s.out, &population, &tomorrow);
    let before: BTreeMap<&str, Vec<u8>> = OLD_FILES
        .iter()
        .map(|n| (*n, std::fs::read(s.out.join(n)).unwrap()))
        .collect();
    let damaged_bytes = std::fs::read(s.out.join(format!("archives/{DAMAGED}.zip"))).unwrap();

    // `run` refuses the old layout (a usage matter) and names the command that upgrades it.
    let refused = run(&s, &base);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!("jumio-export upgrade {}", s.out.display())),
        "{}",
        text(&refused)
    );
    assert!(
        sim.api().requests().is_empty(),
        "refused before any request"
    );

    let done = upgrade(&s.out);
    let said = text(&done);
    assert_eq!(done.status.code(), Some(0), "{said}");
    assert!(said.contains("archives listed   7 "), "{said}");
    assert!(said.contains("failures carried  2 "), "{said}");
    assert!(
        said.contains(&format!("archives/{DAMAGED}.zip: ")),
        "the damaged archive is named: {said}"
    );
    assert!(said.contains("not listed        1\n"), "{said}");

    // (1) The old files moved into legacy/, byte for byte; none left at the top level.
    for (name, bytes) in &before {
        assert_eq!(
            &std::fs::read(s.out.join("legacy").join(name)).unwrap(),
            bytes,
            "legacy/{name}"
        );
        if !["failures.csv", "report.json"].contains(name) {
            assert!(!s.out.join(name).exists(), "{name} left at the top level");
        }
    }
    // The damaged archive is left as it was.
    assert_eq!(
        std::fs::read(s.out.join(format!("archives/{DAMAGED}.zip"))).unwrap(),
        damaged_bytes
    );

    // (2) One commit; its rows are the archives, its files rows their entries.
    let all = commits(&s.out);
    assert_eq!(all.len(), 1, "one commit");
    let commit = &all[0];
    assert_eq!(commit["archives"]["count"], 7);
    assert_eq!(commit["report"]["outcomes"]["already_exported"], 7);
    assert_eq!(commit["report"]["requests"]["total"], 0, "nothing fetched");
    let run_id = commit["run"].as_str().unwrap().to_string();
    for kind in Kind::ALL {
        let (_, rows) = dataset_csv(&s.out, kind.table_name());
        let expected: BTreeSet<String> = archived
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(r, _)| r.clone())
            .collect();
        assert_eq!(
            column(&rows, "reference"),
            expected,
            "{}",
            kind.table_name()
        );
        assert_eq!(column(&rows, "run"), BTreeSet::from([run_id.clone()]));
        // The Parquet parts hold the same rows.
        let parquet: BTreeSet<String> =
            dataset_parquet_strings(&s.out, kind.table_name(), "reference")
                .into_iter()
                .flatten()
                .collect();
        assert_eq!(parquet, expected, "{} in Parquet", kind.table_name());
        for row in &rows {
            let path = s.out.join(&row["archive"]);
            assert_eq!(
                row["archive_sha256"],
                crate::support::sha256_hex(&std::fs::read(&path).unwrap()),
                "{}",
                row["reference"]
            );
        }
    }
    let (_, files) = dataset_csv(&s.out, "files");
    assert_eq!(files.len(), file_rows, "a files row per archived entry");
    assert_eq!(dataset_parquet_rows(&s.out, "files"), file_rows);

    // The old failure rows are the commit's failures part; PENDING keeps its time.
    let (_, failures) = dataset_csv(&s.out, "failures");
    let pending = failures
        .iter()
        .find(|r| r["reference"] == PENDING)
        .expect("the PENDING row is carried");
    assert_eq!(pending["error"], "PENDING");
    assert_eq!(pending["attempts"], "4");
    assert_eq!(pending["next_attempt_after"], tomorrow);
    assert!(
        failures
            .iter()
            .any(|r| r["reference"] == NOT_FOUND && r["error"] == "NOT_FOUND")
    );
    let rebuilt = std::fs::read_to_string(s.out.join("failures.csv")).unwrap();
    assert!(
        rebuilt.contains(&format!(
            "{PENDING},netverify,status,200,PENDING,4,{tomorrow}"
        )),
        "{rebuilt}"
    );

    // Upgrading again changes nothing.
    let again = upgrade(&s.out);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        text(&again).contains("a dataset already"),
        "{}",
        text(&again)
    );
    assert_eq!(commits(&s.out).len(), 1);

    // (3) The next run: nothing upgraded is requested, the PENDING one is not due, the fresh
    // one is exported.
    let next = run(&s, &base);
    let said = text(&next);
    assert_eq!(
        next.status.code(),
        Some(1),
        "carried failures remain: {said}"
    );
    assert!(said.contains("already exported  7\n"), "{said}");
    assert!(said.contains("exported          1\n"), "{said}");
    let log = sim.api().requests();
    let asked = |reference: &str| log.iter().filter(|r| r.path.contains(reference)).count();
    for (reference, _) in &archived {
        assert_eq!(asked(reference), 0, "{reference} was requested again");
    }
    assert_eq!(asked(PENDING), 0, "PENDING polled before it was due");
    assert_eq!(
        asked(NOT_FOUND),
        0,
        "NOT_FOUND retried without --retry-failed"
    );
    assert!(asked(&fresh.0) > 0, "the fresh reference was fetched");
    assert_eq!(commits(&s.out).len(), 2);
}

#[test]
fn a_directory_with_nothing_of_the_old_layout_is_not_upgraded() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = upgrade(tmp.path());
    assert_eq!(empty.status.code(), Some(2), "{}", text(&empty));
    assert!(
        text(&empty).contains("nothing to upgrade"),
        "{}",
        text(&empty)
    );
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "nothing created"
    );
    let missing = upgrade(&tmp.path().join("absent"));
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
}
