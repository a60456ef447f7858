//! The adversarial catalogue (issue 6, part 1): hostile API responses, hrefs and redirects, image
//! names, reference lists and job files. Each case runs the real job in-process against a hostile
//! raw-HTTP server ([`hostile`]) — or the real binary, for job files — and asserts a clear error, no
//! panic, no hang (every run is wrapped in a timeout), nothing half-written (no archive, no table
//! row, no temporary file for a failed reference; the healthy control reference `ok-n1` of the same
//! run is still exported) and no credentials anywhere but the configured origin.
//!
//! Catalogue (case → expected → result). "bad-n1" is the hostile reference of each run.
//!
//! | # | case | expected | result |
//! |---|------|----------|--------|
//! | responses |||
//! | 1 | truncated JSON on `/data` (honest length) | BAD_RESPONSE after retries, 2 attempts | pass |
//! | 2 | `/data` is a JSON array | BAD_RESPONSE | pass |
//! | 3 | status is a JSON string | BAD_RESPONSE, stage status | pass |
//! | 4 | `images` is a number | BAD_RESPONSE, stage images | pass |
//! | 5 | wrong types in `/data` (number name, bool date, object status) | exported; scalars as text, the object in `unmapped_json` | pass |
//! | 6 | 100 000 `[` as `/data` | BAD_RESPONSE, no stack overflow | pass |
//! | 7 | 120-deep nesting in an undocumented field | exported, kept in `unmapped_json` | pass |
//! | 8 | 900 KB string value within `max_file_bytes` | exported, CSV holds it whole | pass |
//! | 9 | status `ARCHIVED` (not in the guide) | BAD_RESPONSE, stage status | pass |
//! | 10 | dates that do not parse | exported; CSV keeps the text; Parquet null | pass |
//! | 11 | image larger than the limit, honest Content-Length | TOO_LARGE, 1 attempt | pass |
//! | 12 | image larger than the limit, lying small Content-Length | only the declared bytes stored | pass |
//! | 13 | Content-Length longer than the body, then close | NETWORK after retries | pass |
//! | 14 | chunked body over the limit, no length | TOO_LARGE | pass |
//! | 15 | close-delimited body over the limit, no length | TOO_LARGE | pass |
//! | 16 | gzip bomb (1 GiB of zeros) as an image | stored as received: entry == wire bytes | pass |
//! | 17 | gzip bomb as `/data` | BAD_RESPONSE (never inflated) | pass |
//! | 18 | connection reset mid-body | NETWORK after retries, 2 attempts | pass |
//! | 19 | server accepts and never answers | NETWORK within timeout × attempts | pass |
//! | 20 | wrong Content-Type (`text/html`) on a PNG image | stored, `images/front.png` | pass |
//! | 21 | `image/jpeg` Content-Type on PNG bytes | extension from the bytes (brief) | passes (fixed in archive.rs: bytes win) |
//! | 22 | HTTP 418 on an image | HTTP_ERROR, not retried | pass |
//! | 23 | HTTP 500 forever on `/images` | HTTP_ERROR after retries | pass |
//! | 24 | `Retry-After: 20` on a 200 status and on a 404 image | no job-wide hold, run < 10 s | FIXED (client.rs held the whole job) |
//! | 25 | a chunked body trickling one byte per 100 ms forever | NETWORK within timeout × attempts | pass |
//! | 26 | Content-Length overflowing u64, duplicated and differing, negative | NETWORK | pass |
//! | hrefs and redirects (a foreign listener records everything) |||
//! | 27 | image href on another host (`127.0.0.2`, same port) | FOREIGN_URL, foreign got nothing | pass |
//! | 28 | image href on another port | FOREIGN_URL, foreign got nothing | pass |
//! | 29 | image href `https` on the origin's host and port | FOREIGN_URL, no connection | pass |
//! | 30 | userinfo in the href | FOREIGN_URL, nothing sent | pass |
//! | 31 | `169.254.169.254` | FOREIGN_URL | pass |
//! | 32 | trailing-dot IPv4 host `127.0.0.1.` | normalised to the origin by the URL parser: exported | pass |
//! | 33 | trailing-dot name host (`localhost.`, base `localhost`) | FOREIGN_URL, no request | pass |
//! | 34 | IDN host | FOREIGN_URL | pass |
//! | 35 | liveness href on another port | FOREIGN_URL, stage liveness | pass |
//! | 36 | 302 from an image to another origin | FOREIGN_URL, foreign got no request | pass |
//! | 37 | 301/302/303/307/308 to the same host, another port | FOREIGN_URL, foreign got no connection | pass |
//! | 38 | 302 to the same host and port over https | FOREIGN_URL, no TLS connection | pass |
//! | 39 | 302 to the origin with userinfo | FOREIGN_URL | pass |
//! | 40 | 302 on the status call to another origin | FOREIGN_URL, stage status | pass |
//! | 41 | 302 within the origin (control) | followed with credentials, exported | pass |
//! | 42 | a 302 loop within the origin | HTTP_ERROR 302, loop cut | FIXED (was FOREIGN_URL naming the origin itself) |
//! | names |||
//! | 43 | classifiers `../../x`, `a/b`, `C:\x`, `%2e%2e`, NUL, 300 chars | allowlisted entry names, `enclosed_name` Some, `unzip -t` ok, raw classifier in files.csv | pass |
//! | input |||
//! | 44 | CRLF line ends | trimmed | pass |
//! | 45 | UTF-8 BOM | stripped | pass |
//! | 46 | trailing spaces and tabs | trimmed, duplicates folded | pass |
//! | 47 | duplicates differing only in case | distinct (case-sensitive, documented) | pass |
//! | 48 | 37 characters | INVALID_REFERENCE, never sent | pass |
//! | 49 | path characters (`../x`, `a/b`, `a%2fb`, `a?b`) | INVALID_REFERENCE, never sent | pass |
//! | 50 | empty file (also BOM-only, comments-only) | zero work, empty tables, exit 0 | pass |
//! | 51 | binary file | exit 2, error names the file | pass |
//! | 52 | CSV without a `reference` column | exit 2, error names the file | pass |
//! | 53 | the above through a real run | exactly the expected status calls | pass |
//! | job file (the binary: exit 2, `file:line` and key on stderr) |||
//! | 54 | unknown key | exit 2 | pass |
//! | 55 | wrong type | exit 2 | pass |
//! | 56 | negative, zero, NaN and infinite rate | exit 2 | pass |
//! | 57 | zero and negative concurrency | exit 2 | pass |
//! | 58 | empty and decreasing schedule | exit 2 | pass |
//! | 59 | missing and blank User-Agent | exit 2 | pass |
//! | 60 | a credential key in the job file | exit 2 (unknown key) | pass |
//! | on disk |||
//! | 62 | `images` or `livenessImages` longer than `[limits] max_list_items` | BAD_RESPONSE at stage `images` / `liveness`, no file of the list requested | pass |
//! | 63 | an image reset after 1 MiB of its body, whole on the retry (issue 15: bodies stream into the archive) | exported, the image stored once and whole, the partial entry gone | pass |
//! | 64 | `kill -9` while an 8 MiB image is half received (the binary) | the body was on disk as it arrived, under a hidden temporary name only; no archive under a final name; the next run removes the temporary, exports, `verify` exit 0 | pass |
//! | 65 | a Document Verification `pages` list longer than `[limits] max_list_items` | BAD_RESPONSE at stage `pages`, no page requested; a list at the cap exports | pass |
//! | 61 | `archives/bad-n1.zip` that no commit lists and that does not check out: not a zip, another reference's archive, a flipped byte | never replaced: BAD_RESPONSE at stage `archive`, nothing fetched for it, the file kept byte for byte | pass |
//!
//! Every binary run also asserts that neither canary credential appears on stdout or stderr.

mod hostile;
// Issue 14: no cleartext credentials, no formula in CSV, the guide's limits, no symlink followed.
mod hardening;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hostile::{Reply, Server, json, json_bytes, ok, redirect, response, status_only};
use jumio_export::Kind;
use jumio_export::input;
use jumio_export::job::{self, Credentials, Overrides};
use jumio_export::run::{self, RunOptions, Summary};
use serde_json::json as j;

use crate::support::{
    commit_runs, committed_parts, dataset_csv, open_follow_ups, parquet_rows, zip_entries,
};

const TOKEN: &str = "adv-canary-token";
const SECRET: &str = "adv-canary-secret";
/// The control reference of every run: a clean flow, must always be exported.
const OK: &str = "ok-n1";
/// The hostile reference of every run.
const BAD: &str = "bad-n1";
/// `max_file_bytes` of the runs (1 MiB) unless a case says otherwise.
const LIMIT: u64 = 1 << 20;

fn authorization() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN}:{SECRET}"))
    )
}

// ---------------------------------------------------------------------------------------------
// The flow a healthy server answers: status → data → images list → image and liveness hrefs.

const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xFF\xD9";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01";

fn scan(reference: &str) -> String {
    format!("/api/netverify/v2/scans/{reference}")
}

fn status_body(reference: &str) -> serde_json::Value {
    j!({"timestamp": "2024-01-02T03:04:05.678Z", "scanReference": reference, "status": "DONE"})
}

fn data_body(reference: &str) -> serde_json::Value {
    j!({
        "timestamp": "2024-01-02T03:04:05.678Z",
        "scanReference": reference,
        "document": {"status": "APPROVED_VERIFIED", "type": "PASSPORT", "firstName": "ADA",
                     "dob": "1990-12-31", "expiry": "2030-01-01"},
        "transaction": {"status": "DONE", "source": "WEB"},
        "verification": {"mrzCheck": "OK"}
    })
}

fn images_body(base: &str, reference: &str) -> serde_json::Value {
    j!({
        "timestamp": "2024-01-02T03:04:05.678Z",
        "scanReference": reference,
        "images": [{"classifier": "front", "href": format!("{base}{}/images/front", scan(reference))}],
        "livenessImages": [format!("{base}{}/images/liveness/1", scan(reference))]
    })
}

/// Serves a complete, valid flow for `reference`.
fn flow(s: &Server, reference: &str) {
    let base = s.base();
    let p = scan(reference);
    s.set(&p, json(&status_body(reference)));
    s.set(&format!("{p}/data"), json(&data_body(reference)));
    s.set(&format!("{p}/images"), json(&images_body(&base, reference)));
    s.set(
        &format!("{p}/images/front"),
        Reply::Raw(ok("image/jpeg", JPEG)),
    );
    s.set(
        &format!("{p}/images/liveness/1"),
        Reply::Raw(ok("image/png", PNG)),
    );
}

/// An origin with the control flow and the bad reference's flow, ready to be made hostile.
async fn origin() -> Server {
    let s = Server::bind("127.0.0.1:0").await;
    flow(&s, OK);
    flow(&s, BAD);
    s
}

// ---------------------------------------------------------------------------------------------
// Running the job in-process.

struct Limits {
    timeout_seconds: f64,
    max_retries: u32,
    max_file_bytes: u64,
    max_list_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_seconds: 2.0,
            max_retries: 1,
            max_file_bytes: LIMIT,
            max_list_items: 100,
        }
    }
}

fn job_text(l: &Limits) -> String {
    format!(
        r#"[api]
region = "us"
user_agent = "jumio-export adversarial tests/1.0"

[limits]
requests_per_second = 500.0
burst = 50
concurrency = 4
max_retries = {}
timeout_seconds = {}
max_file_bytes = {}
max_list_items = {}

[polling]
schedule_seconds = [0.05]
"#,
        l.max_retries, l.timeout_seconds, l.max_file_bytes, l.max_list_items
    )
}

struct Outcome {
    _dir: tempfile::TempDir,
    out: PathBuf,
    summary: Summary,
    elapsed: Duration,
}

/// Runs the job over `input` (the reference list's bytes) against `base`; panics on a hang.
async fn run_with(base: &str, input: &[u8], limits: &Limits) -> Outcome {
    run_prepared(base, input, limits, |_| {}).await
}

/// [`run_with`], after `prepare` has put what it likes into the output location.
async fn run_prepared(
    base: &str,
    input: &[u8],
    limits: &Limits,
    prepare: impl FnOnce(&Path),
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let job_path = dir.path().join("job.toml");
    std::fs::write(&job_path, job_text(limits)).unwrap();
    let refs = dir.path().join("refs.txt");
    std::fs::write(&refs, input).unwrap();
    let out = dir.path().join("out");
    prepare(&out);
    let o = Overrides {
        input: Some(refs.display().to_string()),
        out: Some(out.clone()),
        base_url: Some(base.to_string()),
        ..Overrides::default()
    };
    let job = job::load(&job_path, &o).unwrap();
    let list = input::read_input(&refs.display().to_string(), Kind::Netverify).unwrap();
    let start = Instant::now();
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        run::run(
            &job,
            list,
            &Credentials::new(TOKEN, SECRET),
            RunOptions {
                quiet: true,
                ..RunOptions::default()
            },
        ),
    )
    .await
    .expect("the run hung")
    .expect("the run failed as a whole");
    Outcome {
        _dir: dir,
        out,
        summary,
        elapsed: start.elapsed(),
    }
}

/// The control and the bad reference, default limits.
async fn run_pair(s: &Server) -> Outcome {
    run_with(
        &s.base(),
        format!("{OK}\n{BAD}\n").as_bytes(),
        &Limits::default(),
    )
    .await
}

/// The rows of `reference` in `table` of the dataset (every committed CSV part).
fn rows_for(out: &Path, table: &str, reference: &str) -> Vec<BTreeMap<String, String>> {
    dataset_csv(out, table)
        .1
        .into_iter()
        .filter(|r| r["reference"] == reference)
        .collect()
}

/// The rows of `reference` in the dataset's open follow-ups (`failures.csv` at the top).
fn follow_ups_for(out: &Path, reference: &str) -> Vec<BTreeMap<String, String>> {
    open_follow_ups(out)
        .1
        .into_iter()
        .filter(|r| r["reference"] == reference)
        .collect()
}

/// The run id of the one commit a run of this file makes into its fresh dataset.
fn the_run(o: &Outcome) -> String {
    let runs = commit_runs(&o.out);
    assert_eq!(runs.len(), 1, "one run, one commit: {runs:?}");
    runs.into_iter().next().unwrap()
}

/// `reference` is exported: one table row (of this run), one archive, no failure row and no
/// open follow-up; returns the archive's entries.
fn exported(o: &Outcome, reference: &str) -> BTreeMap<String, Vec<u8>> {
    let rows = rows_for(&o.out, "netverify", reference);
    assert_eq!(rows.len(), 1, "{reference}: {} table rows", rows.len());
    assert_eq!(rows[0]["run"], the_run(o), "{reference}: the row's run");
    assert!(
        rows_for(&o.out, "failures", reference).is_empty(),
        "{reference} is also in the failures table"
    );
    assert!(
        follow_ups_for(&o.out, reference).is_empty(),
        "{reference} is also in failures.csv"
    );
    zip_entries(&o.out.join(format!("archives/{reference}.zip")))
}

/// `reference` failed with `error` at `stage`, and nothing of it was written anywhere else. The
/// control reference is exported and the run's exit code is 1. Returns the failures table row,
/// which `failures.csv` (the open follow-ups) repeats without its `run`.
fn failed(o: &Outcome, reference: &str, error: &str, stage: &str) -> BTreeMap<String, String> {
    let rows = rows_for(&o.out, "failures", reference);
    assert_eq!(rows.len(), 1, "{reference}: failures rows {rows:?}");
    let row = rows.into_iter().next().unwrap();
    assert_eq!(row["error"], error, "{reference}: {row:?}");
    assert_eq!(row["stage"], stage, "{reference}: {row:?}");
    assert_eq!(row["run"], the_run(o), "{reference}: {row:?}");
    let open = follow_ups_for(&o.out, reference);
    assert_eq!(open.len(), 1, "{reference}: failures.csv rows {open:?}");
    for (column, value) in &open[0] {
        assert_eq!(
            row.get(column),
            Some(value),
            "{reference}: failures.csv and the failures table differ in {column}"
        );
    }
    assert!(!o.out.join(format!("archives/{reference}.zip")).exists());
    assert!(rows_for(&o.out, "netverify", reference).is_empty());
    assert!(rows_for(&o.out, "files", reference).is_empty());
    if let Ok(dir) = std::fs::read_dir(o.out.join("archives")) {
        for e in dir {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name.ends_with(".zip") && !name.starts_with('.'),
                "left behind in archives/: {name}"
            );
        }
    }
    exported(o, OK);
    assert_eq!(o.summary.exit_code(), 1, "{:?}", o.summary);
    row
}

/// Every request at the origin carried the job's credentials and User-Agent; the foreign servers
/// saw no connection at all.
fn only_origin_saw_credentials(origin: &Server, foreign: &[&Server]) {
    let auth = authorization();
    for r in origin.requests() {
        assert_eq!(r.header("authorization"), Some(auth.as_str()), "{r:?}");
        assert!(r.header("user-agent").is_some());
        // The client has no decompression: it must not invite compressed bodies.
        assert_eq!(r.header("accept-encoding"), None, "{r:?}");
    }
    for f in foreign {
        assert_eq!(
            f.connections(),
            0,
            "a foreign origin was contacted: {:?}",
            f.requests()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Responses.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_json_is_bad_response_after_retries() {
    let s = origin().await;
    let data = format!("{}/data", scan(BAD));
    s.set(&data, json_bytes(br#"{"document":{"firstName":"AD"#));
    let o = run_pair(&s).await;
    let row = failed(&o, BAD, "BAD_RESPONSE", "data");
    assert_eq!(row["attempts"], "2");
    assert_eq!(s.hits(&data), 2, "max_retries = 1: two attempts");
    only_origin_saw_credentials(&s, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_that_is_an_array_is_bad_response() {
    let s = origin().await;
    s.set(&format!("{}/data", scan(BAD)), json_bytes(b"[1,2,3]"));
    let o = run_pair(&s).await;
    failed(&o, BAD, "BAD_RESPONSE", "data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_that_is_a_string_is_bad_response() {
    let s = origin().await;
    s.set(&scan(BAD), json_bytes(br#""DONE""#));
    let o = run_pair(&s).await;
    failed(&o, BAD, "BAD_RESPONSE", "status");
    assert_eq!(s.hits(&format!("{}/data", scan(BAD))), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_as_a_number_is_bad_response() {
    let s = origin().await;
    s.set(
        &format!("{}/images", scan(BAD)),
        json(&j!({"scanReference": BAD, "images": 5})),
    );
    let o = run_pair(&s).await;
    failed(&o, BAD, "BAD_RESPONSE", "images");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_in_data_keep_the_json_text_in_csv() {
    let s = origin().await;
    let mut data = data_body(BAD);
    data["document"]["firstName"] = j!(12345);
    data["document"]["dob"] = j!(true);
    data["document"]["status"] = j!({"nested": "object"});
    s.set(&format!("{}/data", scan(BAD)), json(&data));
    let o = run_pair(&s).await;
    exported(&o, BAD);
    let row = &rows_for(&o.out, "netverify", BAD)[0];
    assert_eq!(row["document_first_name"], "12345");
    assert_eq!(row["document_dob"], "true");
    // A value its column cannot hold is not dropped: it moves to `unmapped_json`.
    assert_eq!(row["document_status"], "");
    let unmapped: serde_json::Value = serde_json::from_str(&row["unmapped_json"]).unwrap();
    assert_eq!(unmapped["document"]["status"], j!({"nested": "object"}));
    assert_eq!(o.summary.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_brackets_are_bad_response_without_overflow() {
    let s = origin().await;
    s.set(
        &format!("{}/data", scan(BAD)),
        json_bytes(&vec![b'['; 100_000]),
    );
    let o = run_pair(&s).await;
    failed(&o, BAD, "BAD_RESPONSE", "data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_within_the_parser_limit_is_kept_in_unmapped_json() {
    let s = origin().await;
    let mut data = data_body(BAD);
    let mut deep = j!("bottom");
    for _ in 0..120 {
        deep = j!([deep]);
    }
    data["undocumentedDeep"] = deep.clone();
    s.set(&format!("{}/data", scan(BAD)), json(&data));
    let o = run_pair(&s).await;
    exported(&o, BAD);
    let row = &rows_for(&o.out, "netverify", BAD)[0];
    let unmapped: serde_json::Value = serde_json::from_str(&row["unmapped_json"]).unwrap();
    assert_eq!(unmapped["undocumentedDeep"], deep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_string_within_the_limit_is_exported_whole() {
    let s = origin().await;
    let huge = "A".repeat(900_000);
    let mut data = data_body(BAD);
    data["document"]["firstName"] = j!(huge);
    s.set(&format!("{}/data", scan(BAD)), json(&data));
    let o = run_pair(&s).await;
    let entries = exported(&o, BAD);
    assert!(entries["data.json"].len() > 900_000);
    let row = &rows_for(&o.out, "netverify", BAD)[0];
    assert_eq!(row["document_first_name"].len(), 900_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_the_guide_does_not_list_is_bad_response() {
    let s = origin().await;
    let mut st = status_body(BAD);
    st["status"] = j!("ARCHIVED");
    s.set(&scan(BAD), json(&st));
    let o = run_pair(&s).await;
    failed(&o, BAD, "BAD_RESPONSE", "status");
    assert_eq!(s.hits(&format!("{}/data", scan(BAD))), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_dates_keep_their_text_in_csv_and_are_null_in_parquet() {
    use arrow_array::Array as _;
    let s = origin().await;
    let mut data = data_body(BAD);
    data["document"]["dob"] = j!("31/12/1990");
    data["document"]["expiry"] = j!("2030-02-30");
    data["timestamp"] = j!("yesterday");
    s.set(&format!("{}/data", scan(BAD)), json(&data));
    let o = run_pair(&s).await;
    exported(&o, BAD);
    let row = &rows_for(&o.out, "netverify", BAD)[0];
    assert_eq!(row["document_dob"], "31/12/1990");
    assert_eq!(row["document_expiry"], "2030-02-30");
    assert_eq!(row["timestamp"], "yesterday");

    let parts = committed_parts(&o.out, "netverify", "parquet");
    assert!(!parts.is_empty(), "no committed Parquet part of netverify");
    let mut seen = 0;
    for batch in parts.iter().flat_map(|part| {
        let file = std::fs::File::open(part).unwrap();
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
    }) {
        let batch = batch.unwrap();
        let refs = batch
            .column_by_name("reference")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap()
            .clone();
        for i in 0..batch.num_rows() {
            let is_bad = refs.value(i) == BAD;
            for col in ["document_dob", "document_expiry", "timestamp"] {
                let c = batch.column_by_name(col).unwrap();
                assert_eq!(c.is_null(i), is_bad, "{col} of {}", refs.value(i));
            }
            seen += usize::from(is_bad);
        }
    }
    assert_eq!(seen, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_content_length_over_the_limit_is_too_large_without_reading() {
    let s = origin().await;
    let front = format!("{}/images/front", scan(BAD));
    s.set(
        &front,
        Reply::Stream {
            head: format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n",
                LIMIT + 1
            ),
            prefix: JPEG[..4].to_vec(),
            len: LIMIT as usize + 1,
            chunked: false,
        },
    );
    let o = run_pair(&s).await;
    let row = failed(&o, BAD, "TOO_LARGE", "image");
    assert_eq!(row["attempts"], "1", "TOO_LARGE is final");
    assert_eq!(s.hits(&front), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_small_content_length_stores_only_the_declared_bytes() {
    let s = origin().await;
    let front = format!("{}/images/front", scan(BAD));
    s.set(
        &front,
        Reply::Stream {
            head: "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100\r\nConnection: close\r\n".into(),
            prefix: JPEG.to_vec(),
            len: 2 * LIMIT as usize,
            chunked: false,
        },
    );
    let o = run_pair(&s).await;
    let entries = exported(&o, BAD);
    let stored = &entries["images/front.jpg"];
    assert_eq!(
        stored.len(),
        100,
        "the client read past the declared length"
    );
    assert_eq!(&stored[..JPEG.len()], JPEG);
    assert!(stored[JPEG.len()..].iter().all(|&b| b == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_longer_than_the_body_is_network_after_retries() {
    let s = origin().await;
    let front = format!("{}/images/front", scan(BAD));
    let mut bytes = response(
        "200 OK",
        &[("Content-Type", "image/jpeg"), ("Content-Length", "5000")],
        b"",
    );
    bytes.extend_from_slice(JPEG);
    s.set(&front, Reply::Raw(bytes));
    let o = run_pair(&s).await;
    let row = failed(&o, BAD, "NETWORK", "image");
    assert_eq!(row["attempts"], "2");
    assert_eq!(
        s.hits(&front),
        4,
        "max_retries = 1: two attempts, and two more in the second round a transient failure gets before the run ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_too_large() {
    let s = origin().await;
    s.set(
        &format!("{}/images/front", scan(BAD)),
        Reply::Stream {
            head: "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n".into(),
            prefix: JPEG.to_vec(),
            len: 3 * LIMIT as usize,
            chunked: true,
        },
    );
    let o = run_pair(&s).await;
    failed(&o, BAD, "TOO_LARGE", "image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delimited_body_over_the_limit_is_too_large() {
    let s = origin().await;
    s.set(
        &format!("{}/images/front", scan(BAD)),
        Reply::Stream {
            head: "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n".into(),
            prefix: JPEG.to_vec(),
            len: 3 * LIMIT as usize,
            chunked: false,
        },
    );
    let o = run_pair(&s).await;
    failed(&o, BAD, "TOO_LARGE", "image");
}

/// 1 GiB of zeros, gzip-compressed: 1024 gzip members of 1 MiB each (concatenated members are one
/// valid gzip stream), about 1 MB on the wire.
fn gzip_bomb() -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; 1 << 20]).unwrap();
    let member = enc.finish().unwrap();
    // Proof that it is a bomb: one member inflates to 1 MiB.
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&member[..])
        .read_to_end(&mut inflated)
        .unwrap();
    assert_eq!(inflated.len(), 1 << 20);
    member.repeat(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_image_is_stored_as_received_never_inflated() {
    let bomb = gzip_bomb();
    assert!(bomb.len() < 2 << 20, "{} wire bytes", bomb.len());
    let s = origin().await;
    s.set(
        &format!("{}/images/front", scan(BAD)),
        Reply::Raw(response(
            "200 OK",
            &[
                ("Content-Type", "image/jpeg"),
                ("Content-Encoding", "gzip"),
                ("Content-Length", &bomb.len().to_string()),
            ],
            &bomb,
        )),
    );
    let limits = Limits {
        max_file_bytes: 4 << 20,
        ..Limits::default()
    };
    let o = run_with(&s.base(), format!("{OK}\n{BAD}\n").as_bytes(), &limits).await;
    let entries = exported(&o, BAD);
    assert_eq!(
        entries["images/front.jpg"], bomb,
        "stored size must equal the wire size"
    );
    let files = rows_for(&o.out, "files", BAD);
    let front = files
        .iter()
        .find(|r| r["entry"] == "images/front.jpg")
        .unwrap();
    assert_eq!(front["bytes"], bomb.len().to_string());
    only_origin_saw_credentials(&s, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_as_data_is_bad_response() {
    let bomb = gzip_bomb();
    let s = origin().await;
    s.set(
        &format!("{}/data", scan(BAD)),
        Reply::Raw(response(
            "200 OK",
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
                ("Content-Length", &bomb.len().to_string()),
            ],
            &bomb,
        )),
    );
    let limits = Limits {
        max_file_bytes: 4 << 20,
        ..Limits::default()
    };
    let o = run_with(&s.base(), format!("{OK}\n{BAD}\n").as_bytes(), &limits).await;
    failed(&o, BAD, "BAD_RESPONSE", "data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_body_is_network_after_retries() {
    let s = origin().await;
    let front = format!("{}/images/front", scan(BAD));
    let mut bytes = response(
        "200 OK",
        &[("Content-Type", "image/jpeg"), ("Content-Length", "100000")],
        b"",
    );
    bytes.extend_from_slice(&[0xFF; 1000]);
    s.set(&front, Reply::Reset(bytes));
    let o = run_pair(&s).await;
    let row = failed(&o, BAD, "NETWORK", "image");
    assert_eq!(row["attempts"], "2");
    assert_eq!(
        s.hits(&front),
        4,
        "max_retries = 1: two attempts, and two more in the second round a transient failure gets before the run ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_network_in_bounded_time() {
    let s = origin().await;
    s.set(&scan(BAD), Reply::Silent);
    let limits = Limits {
        timeout_seconds: 1.0,
        ..Limits::default()
    };
    let o = run_with(&s.base(), format!("{OK}\n{BAD}\n").as_bytes(), &limits).await;
    let row = failed(&o, BAD, "NETWORK", "status");
    assert_eq!(row["attempts"], "2");
    assert_eq!(
        s.hits(&scan(BAD)),
        4,
        "max_retries = 1: two attempts, and two more in the second round a transient failure gets before the run ends"
    );
    // Two rounds of two 1 s timeouts and one backoff of at most 0.5 s, plus slack for a loaded
    // machine.
    assert!(o.elapsed < Duration::from_secs(10), "took {:?}", o.elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_png_served_as_text_html_is_stored_with_a_png_name() {
    let s = origin().await;
    s.set(
        &format!("{}/images/front", scan(BAD)),
        Reply::Raw(ok("text/html; charset=utf-8", PNG)),
    );
    let o = run_pair(&s).await;
    let entries = exported(&o, BAD);
    assert_eq!(entries["images/front.png"], PNG);
    let files = rows_for(&o.out, "files", BAD);
    let front = files
        .iter()
        .find(|r| r["entry"] == "images/front.png")
        .unwrap();
    assert_eq!(front["content_type"], "text/html; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn png_bytes_served_as_image_jpeg_get_a_png_name() {
    let s = origin().await;
    s.set(
        &format!("{}/images/front", scan(BAD)),
        Reply::Raw(ok("image/jpeg", PNG)),
    );
    let o = run_pair(&s).await;
    let entries = exported(&o, BAD);
    assert!(
        entries.contains_key("images/front.png"),
        "{:?}",
        entries.keys()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexpected_status_is_http_error_without_retries() {
    let s = origin().await;
    let front = format!("{}/images/front", scan(BAD));
    s.set(&front, Reply::Raw(status_only(418, "I'm a teapot")));
    let o = run_pair(&s).await;
    let row = failed(&o, BAD, "HTTP_ERROR", "image");
    assert_eq!(row["http_status"], "418");
    assert_eq!(s.hits(&front), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_forever_is_http_error_after_retries() {
    let s = origin().await;
    let images = format!("{}/images", scan(BAD));
    s.set(
        &images,
        Reply::Raw(status_only(500, "Internal Server Error")),
    );
    let o = run_pair(&s).await;
    let row = failed(&o, BAD, "HTTP_ERROR", "images");
    assert_eq!(row["http_status"], "500");
    assert_eq!(
        s.hits(&images),
        4,
        "max_retries = 1: two attempts, and two more in the second round a transient failure gets before the run ends"
    );
}

// ---------------------------------------------------------------------------------------------
// Hrefs and redirects. A foreign href points at a path no listener serves, so any request that
// escaped would show up in a log.

const FOREIGN_PATH: &str = "/api/netverify/v2/scans/bad-n1/images/foreign";

/// The bad reference's image list names `href` as its front image.
fn front_href(s: &Server, href: &str) {
    let mut list = images_body(&s.base(), BAD);
    list["images"][0]["href"] = j!(href);
    s.set(&format!("{}/images", scan(BAD)), json(&list));
}

/// Runs the pair and checks the bad reference failed with FOREIGN_URL at `stage`, nothing reached
/// the foreign listeners and the origin never saw the foreign path.
async fn foreign_case(s: &Server, foreign: &[&Server], stage: &str) -> Outcome {
    let o = run_pair(s).await;
    let row = failed(&o, BAD, "FOREIGN_URL", stage);
    assert_eq!(
        row["http_status"], "",
        "nothing was sent for the foreign href"
    );
    assert_eq!(s.hits(FOREIGN_PATH), 0);
    assert!(
        s.requests().iter().all(|r| r.target != "<unparseable>"),
        "something other than HTTP (a TLS hello?) reached the origin"
    );
    assert_eq!(s.connections(), s.requests().len());
    only_origin_saw_credentials(s, foreign);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_href_on_another_host_same_port_is_foreign() {
    let s = origin().await;
    let other = Server::bind(&format!("127.0.0.2:{}", s.addr.port())).await;
    front_href(&s, &format!("{}{FOREIGN_PATH}", other.base()));
    foreign_case(&s, &[&other], "image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_href_on_another_port_is_foreign() {
    let s = origin().await;
    let other = Server::bind("127.0.0.1:0").await;
    front_href(&s, &format!("{}{FOREIGN_PATH}", other.base()));
    foreign_case(&s, &[&other], "image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_href_on_the_origin_host_and_port_is_foreign() {
    let s = origin().await;
    front_href(&s, &format!("https://{}{FOREIGN_PATH}", s.addr));
    foreign_case(&s, &[], "image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_href_with_userinfo_is_foreign_even_on_the_origin() {
    let s = origin().await;
    front_href(&s, &format!("http://user:pw@{}{FOREIGN_PATH}", s.addr));
    foreign_case(&s, &[], "image").await;
    let s = origin().await;
    front_href(&s, &format!("http://user@{}{FOREIGN_PATH}", s.addr));
    foreign_case(&s, &[], "image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_metadata_address_is_foreign() {
    let s = origin().await;
    front_href(
        &s,
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    );
    foreign_case(&s, &[], "image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_dot_ipv4_host_is_the_origin_itself() {
    // The URL standard parses `127.0.0.1.` as the IPv4 address 127.0.0.1: it *is* the origin, so
    // the image is fetched, from the origin, with credentials only there.
    let s = origin().await;
    let path = format!("{}/images/front", scan(BAD));
    front_href(&s, &format!("http://127.0.0.1.:{}{path}", s.addr.port()));
    let o = run_pair(&s).await;
    exported(&o, BAD);
    assert_eq!(s.hits(&path), 1);
    only_origin_saw_credentials(&s, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_dot_name_host_is_foreign() {
    // Base `localhost`, href `localhost.`: a different host name (it may resolve elsewhere under a
    // search domain), refused without a request.
    let s = origin().await;
    let port = s.addr.port();
    let base = format!("http://localhost:{port}");
    let mut list = images_body(&base, BAD);
    list["images"][0]["href"] = j!(format!("http://localhost.:{port}{FOREIGN_PATH}"));
    s.set(&format!("{}/images", scan(BAD)), json(&list));
    let mut ok_list = images_body(&base, OK);
    ok_list["livenessImages"] = j!([]);
    s.set(&format!("{}/images", scan(OK)), json(&ok_list));
    let o = run_with(
        &base,
        format!("{OK}\n{BAD}\n").as_bytes(),
        &Limits::default(),
    )
    .await;
    failed(&o, BAD, "FOREIGN_URL", "image");
    assert_eq!(s.hits(FOREIGN_PATH), 0);
    only_origin_saw_credentials(&s, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idn_host_is_foreign() {
    let s = origin().await;
    front_href(
        &s,
        &format!("http://ex\u{e4}mple.test:{}{FOREIGN_PATH}", s.addr.port()),
    );
    foreign_case(&s, &[], "image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liveness_href_on_another_port_is_foreign() {
    let s = origin().await;
    let other = Server::bind("127.0.0.1:0").await;
    let mut list = images_body(&s.base(), BAD);
    list["livenessImages"] = j!([format!(
        "{}/api/netverify/v2/scans/bad-n1/images/liveness/1",
        other.base()
    )]);
    s.set(&format!("{}/images", scan(BAD)), json(&list));
    foreign_case(&s, &[&other], "liveness").await;
    // Every href is checked before any is fetched: the valid front image cost no request.
    assert_eq!(s.hits(&format!("{}/images/front", scan(BAD))), 0);
}

/// The bad reference's front image answers with a 302 to `location`.
fn redirect_front(s: &Server, location: &str) -> String {
    let front = format!("{}/images/front", scan(BAD));
    s.set(&front, redirect(location));
    front
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_is_not_followed() {
    let s = origin().await;
    let other = Server::bind(&format!("127.0.0.2:{}", s.addr.port())).await;
    let front = redirect_front(&s, &format!("{}{FOREIGN_PATH}", other.base()));
    let o = run_pair(&s).await;
    let row = failed(&o, BAD, "FOREIGN_URL", "image");
    assert_eq!(row["attempts"], "1", "a foreign redirect is final");
    assert_eq!(s.hits(&front), 1);
    only_origin_saw_credentials(&s, &[&other]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_port_is_not_followed_whatever_its_status() {
    for status in [
        "301 Moved Permanently",
        "302 Found",
        "303 See Other",
        "307 Temporary Redirect",
        "308 Permanent Redirect",
    ] {
        let s = origin().await;
        let other = Server::bind("127.0.0.1:0").await;
        let location = format!("{}{FOREIGN_PATH}", other.base());
        s.set(
            &format!("{}/images/front", scan(BAD)),
            Reply::Raw(response(
                status,
                &[("Location", &location), ("Content-Length", "0")],
                b"",
            )),
        );
        let o = run_pair(&s).await;
        failed(&o, BAD, "FOREIGN_URL", "image");
        only_origin_saw_credentials(&s, &[&other]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_https_on_the_same_host_and_port_is_not_followed() {
    let s = origin().await;
    redirect_front(&s, &format!("https://{}{FOREIGN_PATH}", s.addr));
    let o = run_pair(&s).await;
    failed(&o, BAD, "FOREIGN_URL", "image");
    assert!(s.requests().iter().all(|r| r.target != "<unparseable>"));
    assert_eq!(
        s.connections(),
        s.requests().len(),
        "a TLS connection was opened"
    );
    only_origin_saw_credentials(&s, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_with_userinfo_to_the_origin_is_not_followed() {
    let s = origin().await;
    s.set(FOREIGN_PATH, Reply::Raw(ok("image/jpeg", JPEG)));
    redirect_front(&s, &format!("http://user:pw@{}{FOREIGN_PATH}", s.addr));
    let o = run_pair(&s).await;
    failed(&o, BAD, "FOREIGN_URL", "image");
    assert_eq!(s.hits(FOREIGN_PATH), 0);
    only_origin_saw_credentials(&s, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_of_the_status_call_to_another_origin_is_foreign() {
    let s = origin().await;
    let other = Server::bind("127.0.0.1:0").await;
    s.set(
        &scan(BAD),
        redirect(&format!("{}{}", other.base(), scan(BAD))),
    );
    let o = run_pair(&s).await;
    failed(&o, BAD, "FOREIGN_URL", "status");
    assert_ne!(
        o.summary.exit_code(),
        3,
        "a redirect is not a credentials refusal"
    );
    only_origin_saw_credentials(&s, &[&other]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_within_the_origin_is_followed_with_credentials() {
    let s = origin().await;
    let moved = "/moved/front.jpg";
    s.set(moved, Reply::Raw(ok("image/jpeg", JPEG)));
    redirect_front(&s, moved);
    let o = run_pair(&s).await;
    let entries = exported(&o, BAD);
    assert_eq!(entries["images/front.jpg"], JPEG);
    assert_eq!(s.hits(moved), 1);
    only_origin_saw_credentials(&s, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_within_the_origin_is_http_error_not_foreign_url() {
    let s = origin().await;
    let front = format!("{}/images/front", scan(BAD));
    let again = format!("{front}?again");
    s.set(&front, redirect(&again));
    s.set(&again, redirect(&front));
    let o = run_pair(&s).await;
    let row = failed(&o, BAD, "HTTP_ERROR", "image");
    assert_eq!(row["http_status"], "302");
    assert!(
        s.hits(&front) <= 3 && s.hits(&again) <= 3,
        "the loop is cut"
    );
    only_origin_saw_credentials(&s, &[]);
}

// ---------------------------------------------------------------------------------------------
// Names.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_classifiers_never_become_entry_names() {
    let s = origin().await;
    let long = "x".repeat(300);
    let classifiers = [
        "front",
        "../../x",
        "a/b",
        "C:\\x",
        "%2e%2e",
        "a\u{0}b",
        long.as_str(),
        "/etc/passwd",
        "..",
    ];
    let base = s.base();
    let images: Vec<serde_json::Value> = classifiers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let path = format!("{}/images/c{i}", scan(BAD));
            s.set(&path, Reply::Raw(ok("image/jpeg", JPEG)));
            j!({"classifier": c, "href": format!("{base}{path}")})
        })
        .collect();
    s.set(
        &format!("{}/images", scan(BAD)),
        json(&j!({"scanReference": BAD, "images": images})),
    );
    let o = run_pair(&s).await;
    let entries = exported(&o, BAD);
    let mut expected: Vec<String> = vec!["images/front.jpg".into()];
    expected.extend((1..classifiers.len()).map(|n| format!("images/other-{n}.jpg")));
    for name in &expected {
        assert!(
            entries.contains_key(name),
            "{name} missing: {:?}",
            entries.keys()
        );
    }
    for name in entries.keys() {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
                && !name.contains(".."),
            "entry name {name:?} is not from the allowlist"
        );
    }
    // The raw classifier is kept, as data, in the files table.
    let files = rows_for(&o.out, "files", BAD);
    for (i, c) in classifiers.iter().enumerate() {
        let row = files
            .iter()
            .find(|r| r["entry"] == expected[i])
            .unwrap_or_else(|| panic!("no files table row for {}", expected[i]));
        assert_eq!(row["classifier"], *c);
    }
    let archive = o.out.join(format!("archives/{BAD}.zip"));
    if let Some(unzip) = crate::peers::require("unzip") {
        let st = Command::new(unzip)
            .arg("-tq")
            .arg(&archive)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "unzip -t: {}",
            String::from_utf8_lossy(&st.stdout)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Input.

fn parse(bytes: &[u8]) -> input::InputList {
    input::parse_input(bytes, "refs.txt", Kind::Netverify).unwrap()
}

fn refs(list: &input::InputList) -> Vec<String> {
    let items = list.items.read_all().unwrap();
    items.into_iter().map(|i| i.reference).collect()
}

#[test]
fn crlf_bom_and_trailing_whitespace_are_trimmed_and_folded() {
    let list = parse(b"\xEF\xBB\xBFok-n1\r\nok-n2  \r\nok-n1\t\r\n  ok-n3\r\n\r\n# note\r\n");
    assert_eq!(refs(&list), ["ok-n1", "ok-n2", "ok-n3"]);
    assert_eq!(list.duplicates, 1);
    assert!(list.rejected.is_empty(), "{:?}", list.rejected);
    // The same as CSV.
    let list = input::parse_input(
        b"\xEF\xBB\xBFreference,kind\r\nok-d1 ,document\r\nok-n1,\r\n",
        "refs.csv",
        Kind::Netverify,
    )
    .unwrap();
    assert_eq!(refs(&list), ["ok-d1", "ok-n1"]);
    assert_eq!(list.items.read_all().unwrap()[0].kind, Kind::Document);
}

#[test]
fn references_differing_only_in_case_are_distinct() {
    // Jumio's references are UUIDs the API compares as given; folding case could merge two
    // transactions, so the tool keeps them apart and exports each.
    let list = parse(b"ok-n1\nOK-N1\nOk-N1\nok-n1\n");
    assert_eq!(refs(&list), ["ok-n1", "OK-N1", "Ok-N1"]);
    assert_eq!(list.duplicates, 1);
}

#[test]
fn long_and_path_like_references_are_rejected_before_the_api() {
    let long = "a".repeat(37);
    let max = "b".repeat(36);
    let text = format!("{long}\n{max}\n../x\na/b\na%2fb\na?b\nC:\\x\na b\n..\n");
    let list = parse(text.as_bytes());
    assert_eq!(refs(&list), [max.as_str()]);
    let rejected: Vec<&str> = list.rejected.iter().map(|r| r.raw.as_str()).collect();
    assert_eq!(
        rejected,
        [
            long.as_str(),
            "../x",
            "a/b",
            "a%2fb",
            "a?b",
            "C:\\x",
            "a b",
            ".."
        ]
    );
    assert_eq!(list.rejected[0].line, 1);
}

#[test]
fn an_empty_input_is_zero_work() {
    for bytes in [&b""[..], b"\xEF\xBB\xBF", b"\n\r\n# only comments\n"] {
        let list = parse(bytes);
        assert!(
            list.items.is_empty() && list.rejected.is_empty(),
            "{bytes:?}"
        );
    }
}

#[test]
fn a_binary_input_is_an_error_naming_the_file() {
    let err =
        input::parse_input(b"ok-n1\n\x00\xff\xfe\x01", "refs.bin", Kind::Netverify).unwrap_err();
    assert_eq!(err.to_string(), "refs.bin:2: input is not UTF-8 text");
    // NULs and control characters that are valid UTF-8 are single bad lines, printed escaped.
    let list = parse(b"ok-n1\nab\x00cd\n\x1b[31mred\n");
    assert_eq!(refs(&list), ["ok-n1"]);
    assert_eq!(list.rejected.len(), 2);
    for r in &list.rejected {
        assert!(!r.raw.chars().any(char::is_control), "{:?}", r.raw);
    }
}

#[test]
fn a_csv_without_a_reference_column_is_an_error_naming_the_file() {
    let err =
        input::parse_input(b"id,kind\nok-n1,netverify\n", "refs.csv", Kind::Netverify).unwrap_err();
    assert!(err.to_string().starts_with("refs.csv:1: "), "{err}");
}

/// Runs the binary; returns (exit code, stderr).
fn binary(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jumio-export"))
        .args(args)
        .current_dir(dir)
        .env("JUMIO_API_TOKEN", TOKEN)
        .env("JUMIO_API_SECRET", SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for text in [stderr.as_str(), &stdout] {
        assert!(
            !text.contains(TOKEN) && !text.contains(SECRET),
            "credentials printed: {text}"
        );
    }
    (out.status.code(), stderr)
}

const JOB: &str = "[api]\nregion = \"us\"\nuser_agent = \"Adv Tests/1.0\"\n\n[limits]\nrequests_per_second = 10.0\nburst = 5\nconcurrency = 2\n\n[polling]\nschedule_seconds = [1, 2]\n";

#[test]
fn bad_input_files_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("job.toml"), JOB).unwrap();
    std::fs::write(d.join("empty.txt"), "").unwrap();
    std::fs::write(d.join("refs.bin"), b"\x00\xff\xfe\x01binary").unwrap();
    std::fs::write(d.join("refs.csv"), "id,kind\nok-n1,netverify\n").unwrap();
    // Nothing listens on the discard port: any request would fail, and none may be needed.
    let base = ["--base-url", "http://127.0.0.1:9"];

    // An empty list: zero work, exit 0, one commit whose every table is one empty part (header
    // and schema, no row) in both formats.
    let (code, err) = binary(
        d,
        &[
            &["run", "job.toml", "--input", "empty.txt", "--out", "out"][..],
            &base,
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("out/report.json")).unwrap()).unwrap();
    assert_eq!(report["requests"]["total"], 0);
    let out = d.join("out");
    let runs = commit_runs(&out);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(report["run"], runs[0]);
    for table in crate::support::TABLES {
        let csv = committed_parts(&out, table, "csv");
        let parquet = committed_parts(&out, table, "parquet");
        assert_eq!(
            (csv.len(), parquet.len()),
            (1, 1),
            "{table}: {csv:?} {parquet:?}"
        );
        let (header, rows) = dataset_csv(&out, table);
        assert!(rows.is_empty(), "{table}: {rows:?}");
        assert_eq!(header, crate::support::committed_columns(table), "{table}");
        assert_eq!(parquet_rows(&parquet[0]), 0, "{table}");
    }
    assert!(open_follow_ups(&out).1.is_empty());

    for (file, needle) in [
        ("refs.bin", "refs.bin:1: input is not UTF-8"),
        ("refs.csv", "refs.csv:1:"),
    ] {
        // A fresh output directory per case, so what the assertions look at is what `--out` named.
        let out = format!("out-{file}");
        let (code, err) = binary(
            d,
            &[
                &["run", "job.toml", "--input", file, "--out", &out][..],
                &base,
            ]
            .concat(),
        );
        assert_eq!(code, Some(2), "{file}: {err}");
        assert!(err.contains(needle), "{file}: {err}");
        assert!(err.contains("reference") || file == "refs.bin", "{err}");
        // Bad input stops the run before anything is written: no report, not even the directory.
        assert!(
            !d.join(&out).join("report.json").exists(),
            "{file}: a report was written for a run that never started"
        );
        assert!(
            !d.join(&out).exists(),
            "{file}: the output directory was created before the input was known to be good"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messy_reference_list_sends_exactly_the_expected_status_calls() {
    let s = origin().await;
    flow(&s, "OK-N1");
    let long = "c".repeat(37);
    let text = format!(
        "\u{feff}{OK}\r\n{OK}   \r\nOK-N1\r\n../{BAD}\r\n{long}\r\n\r\n# comment\r\n{BAD}\t\r\n"
    );
    let o = run_with(&s.base(), text.as_bytes(), &Limits::default()).await;
    exported(&o, OK);
    exported(&o, "OK-N1");
    exported(&o, BAD);
    for r in [OK, "OK-N1", BAD] {
        assert_eq!(s.hits(&scan(r)), 1, "{r}");
    }
    let statuses = s
        .requests()
        .iter()
        .filter(|r| r.target.matches('/').count() == 5)
        .count();
    assert_eq!(statuses, 3, "{:?}", s.requests());
    // In the run's failures table and in the dataset's open follow-ups alike.
    for (what, failures) in [
        ("the failures table", dataset_csv(&o.out, "failures").1),
        ("failures.csv", open_follow_ups(&o.out).1),
    ] {
        let invalid: Vec<&str> = failures.iter().map(|r| r["reference"].as_str()).collect();
        assert_eq!(
            invalid,
            [format!("../{BAD}").as_str(), long.as_str()],
            "{what}"
        );
        assert!(
            failures.iter().all(|r| r["error"] == "INVALID_REFERENCE"),
            "{what}"
        );
    }
    assert_eq!(o.summary.exit_code(), 1);
}

// ---------------------------------------------------------------------------------------------
// Job files: exit 2 naming the file, the line and the key.

#[test]
fn bad_job_files_exit_2_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("refs.txt"), "ok-n1\n").unwrap();
    let cases: &[(&str, &str, &str, &str)] = &[
        // (case, from, to, expected `file:line` and key)
        (
            "unknown key",
            "burst = 5\n",
            "burst = 5\ncolour = \"blue\"\n",
            "job.toml:8|colour",
        ),
        (
            "wrong type",
            "concurrency = 2",
            "concurrency = \"two\"",
            "job.toml:8|concurrency",
        ),
        (
            "negative rate",
            "requests_per_second = 10.0",
            "requests_per_second = -1.0",
            "job.toml:6|requests_per_second",
        ),
        (
            "zero rate",
            "requests_per_second = 10.0",
            "requests_per_second = 0",
            "job.toml:6|requests_per_second",
        ),
        (
            "NaN rate",
            "requests_per_second = 10.0",
            "requests_per_second = nan",
            "job.toml:6|requests_per_second",
        ),
        (
            "infinite rate",
            "requests_per_second = 10.0",
            "requests_per_second = inf",
            "job.toml:6|requests_per_second",
        ),
        (
            "zero concurrency",
            "concurrency = 2",
            "concurrency = 0",
            "job.toml:8|concurrency",
        ),
        (
            "negative concurrency",
            "concurrency = 2",
            "concurrency = -3",
            "job.toml:8|concurrency",
        ),
        (
            "empty schedule",
            "schedule_seconds = [1, 2]",
            "schedule_seconds = []",
            "job.toml:11|schedule_seconds",
        ),
        (
            "decreasing schedule",
            "schedule_seconds = [1, 2]",
            "schedule_seconds = [2, 1]",
            "job.toml:11|schedule_seconds",
        ),
        (
            "missing User-Agent",
            "user_agent = \"Adv Tests/1.0\"\n",
            "",
            "job.toml:1|user_agent",
        ),
        (
            "empty User-Agent",
            "user_agent = \"Adv Tests/1.0\"",
            "user_agent = \"  \"",
            "job.toml:3|user_agent",
        ),
        (
            "credentials in the job file",
            "region = \"us\"",
            "region = \"us\"\ntoken = \"abc\"",
            "job.toml:3|token",
        ),
    ];
    for (case, from, to, expected) in cases {
        assert!(JOB.contains(from), "{case}");
        std::fs::write(d.join("job.toml"), JOB.replacen(from, to, 1)).unwrap();
        let (code, err) = binary(
            d,
            &[
                "run",
                "job.toml",
                "--input",
                "refs.txt",
                "--base-url",
                "http://127.0.0.1:9",
            ],
        );
        assert_eq!(code, Some(2), "{case}: {err}");
        let (location, key) = expected.split_once('|').unwrap();
        assert!(
            err.contains(&format!("{location}:")) || err.contains(&format!("{location} ")),
            "{case}: no {location} in {err}"
        );
        assert!(err.contains(key), "{case}: no {key} in {err}");
        assert!(!d.join("export").exists(), "{case}: output written");
    }
}

// ---------------------------------------------------------------------------------------------
// Stalls: a hostile header or a trickling body must not hold the job.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_on_a_200_or_404_does_not_stall_the_job() {
    // Retry-After means "wait before retrying" only on 429 and 503; on a final answer it must not
    // hold every request of the job (the limiter is job-wide).
    let s = origin().await;
    let mut st = ok("application/json", status_body(BAD).to_string().as_bytes());
    let at = st.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    st.splice(at + 2..at + 2, b"Retry-After: 20\r\n".iter().copied());
    s.set(&scan(BAD), Reply::Raw(st));
    let front = format!("{}/images/front", scan(BAD));
    s.set(
        &front,
        Reply::Raw(response(
            "404 Not Found",
            &[("Retry-After", "20"), ("Content-Length", "0")],
            b"",
        )),
    );
    let o = run_pair(&s).await;
    failed(&o, BAD, "NOT_FOUND", "image");
    assert!(
        o.elapsed < Duration::from_secs(10),
        "the job stalled for {:?}",
        o.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickling_forever_is_network_within_the_timeout() {
    // One byte every 100 ms never trips an idle timeout; the whole-request timeout must.
    let s = origin().await;
    let front = format!("{}/images/front", scan(BAD));
    s.set(
        &front,
        Reply::Trickle {
            head: "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n".into(),
            every: Duration::from_millis(100),
        },
    );
    let limits = Limits {
        timeout_seconds: 1.0,
        ..Limits::default()
    };
    let o = run_with(&s.base(), format!("{OK}\n{BAD}\n").as_bytes(), &limits).await;
    failed(&o, BAD, "NETWORK", "image");
    assert!(o.elapsed < Duration::from_secs(8), "took {:?}", o.elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_framing_headers_are_network_errors() {
    for head in [
        "Content-Length: 99999999999999999999999",
        "Content-Length: 10\r\nContent-Length: 20",
        "Content-Length: -5",
    ] {
        let s = origin().await;
        let front = format!("{}/images/front", scan(BAD));
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n{head}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(JPEG);
        s.set(&front, Reply::Raw(bytes));
        let o = run_pair(&s).await;
        failed(&o, BAD, "NETWORK", "image");
    }
}

// ---------------------------------------------------------------------------------------------
// On disk: an archive that no commit lists and that does not check out.

/// Case 61. SPEC: an archive is created once and never replaced; one that exists, is listed by
/// no commit and does not check out (manifest, reference, kind) is never overwritten: its
/// reference fails with `BAD_RESPONSE` at stage `archive`, nothing is fetched for it, and the
/// file stays byte for byte (before the dataset layout such a file was fetched again and
/// replaced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_archive_that_does_not_check_out_is_never_replaced() {
    let s = origin().await;
    // Real archives to damage, from a dataset of their own.
    let first = run_pair(&s).await;
    let of_other = std::fs::read(first.out.join(format!("archives/{OK}.zip"))).unwrap();
    let mut flipped = std::fs::read(first.out.join(format!("archives/{BAD}.zip"))).unwrap();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    for (case, bytes) in [
        ("not a zip", b"PK\x03\x04 this is no archive".to_vec()),
        ("another reference's archive", of_other),
        ("a flipped byte", flipped),
    ] {
        let bad_requests = || {
            s.requests()
                .iter()
                .filter(|r| r.target.starts_with(&scan(BAD)))
                .count()
        };
        let before = bad_requests();
        let placed = bytes.clone();
        let o = run_prepared(
            &s.base(),
            format!("{OK}\n{BAD}\n").as_bytes(),
            &Limits::default(),
            move |out| {
                std::fs::create_dir_all(out.join("archives")).unwrap();
                std::fs::write(out.join(format!("archives/{BAD}.zip")), &placed).unwrap();
            },
        )
        .await;
        let rows = rows_for(&o.out, "failures", BAD);
        assert_eq!(rows.len(), 1, "{case}: {rows:?}");
        assert_eq!(rows[0]["stage"], "archive", "{case}: {:?}", rows[0]);
        assert_eq!(rows[0]["error"], "BAD_RESPONSE", "{case}: {:?}", rows[0]);
        assert_eq!(rows[0]["run"], the_run(&o), "{case}");
        let open = follow_ups_for(&o.out, BAD);
        assert_eq!(open.len(), 1, "{case}: failures.csv {open:?}");
        assert_eq!(open[0]["error"], "BAD_RESPONSE", "{case}");
        assert_eq!(
            std::fs::read(o.out.join(format!("archives/{BAD}.zip"))).unwrap(),
            bytes,
            "{case}: the archive was changed"
        );
        assert_eq!(bad_requests(), before, "{case}: {BAD} was fetched");
        assert!(rows_for(&o.out, "netverify", BAD).is_empty(), "{case}");
        assert!(rows_for(&o.out, "files", BAD).is_empty(), "{case}");
        let left: Vec<String> = std::fs::read_dir(o.out.join("archives"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{case}: temporaries left {left:?}");
        exported(&o, OK);
        assert_eq!(o.summary.exit_code(), 1, "{case}: {:?}", o.summary);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_longer_than_max_list_items_is_bad_response_before_any_file_is_fetched() {
    for (key, stage) in [("images", "images"), ("livenessImages", "liveness")] {
        let s = origin().await;
        let base = s.base();
        let mut list = images_body(&base, BAD);
        let four: Vec<serde_json::Value> = (1..=4)
            .map(|n| match key {
                "images" => j!({"classifier": format!("extra-{n}"),
                                "href": format!("{base}{}/images/x{n}", scan(BAD))}),
                _ => j!(format!("{base}{}/images/liveness/{n}", scan(BAD))),
            })
            .collect();
        list[key] = serde_json::Value::Array(four);
        s.set(&format!("{}/images", scan(BAD)), json(&list));
        let limits = Limits {
            max_list_items: 3,
            ..Limits::default()
        };
        let o = run_with(&base, format!("{OK}\n{BAD}\n").as_bytes(), &limits).await;
        let row = failed(&o, BAD, "BAD_RESPONSE", stage);
        assert_eq!(row["http_status"], "200", "{key}: {row:?}");
        let files = s
            .requests()
            .iter()
            .filter(|r| r.target.starts_with(&format!("{}/images/", scan(BAD))))
            .count();
        assert_eq!(files, 0, "{key}: a file of the refused list was requested");
    }
}

/// Serves a Document Verification flow for `reference` whose `/pages` lists `pages` pages.
fn document_flow(s: &Server, reference: &str, pages: u32) {
    let base = s.base();
    let p = format!("/api/netverify/v2/documents/{reference}");
    let ts = "2024-01-02T03:04:05.678Z";
    s.set(
        &p,
        json(&j!({"timestamp": ts, "scanReference": reference, "status": "DONE"})),
    );
    s.set(
        &format!("{p}/data"),
        json(&j!({
            "timestamp": ts,
            "scanReference": reference,
            "document": {"status": "UPLOADED", "type": "CC", "country": "USA"},
            "transaction": {"status": "DONE", "source": "DOC_API"}
        })),
    );
    let images: Vec<serde_json::Value> = (1..=pages)
        .map(|n| j!({"classifier": n, "href": format!("{base}{p}/pages/{n}")}))
        .collect();
    s.set(
        &format!("{p}/pages"),
        json(&j!({"timestamp": ts, "scanReference": reference, "images": images})),
    );
    for n in 1..=pages {
        s.set(
            &format!("{p}/pages/{n}"),
            Reply::Raw(ok("image/jpeg", JPEG)),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pages_list_longer_than_max_list_items_is_bad_response_before_any_page_is_fetched() {
    // Document Verification's `pages` list is capped like `images` and `livenessImages`: at the
    // cap a document exports, one page over it is BAD_RESPONSE at stage `pages`.
    const AT_CAP: &str = "doc-at-cap";
    const OVER: &str = "doc-over-cap";
    let s = origin().await;
    document_flow(&s, AT_CAP, 3);
    document_flow(&s, OVER, 4);
    let limits = Limits {
        max_list_items: 3,
        ..Limits::default()
    };
    let input = format!("reference,kind\n{OK},netverify\n{AT_CAP},document\n{OVER},document\n");
    let o = run_with(&s.base(), input.as_bytes(), &limits).await;
    let row = failed(&o, OVER, "BAD_RESPONSE", "pages");
    assert_eq!(row["http_status"], "200", "{row:?}");
    let over_pages = format!("/api/netverify/v2/documents/{OVER}/pages/");
    let fetched = s
        .requests()
        .iter()
        .filter(|r| r.target.starts_with(&over_pages))
        .count();
    assert_eq!(fetched, 0, "a page of the refused list was requested");
    let rows = rows_for(&o.out, "documents", AT_CAP);
    assert_eq!(rows.len(), 1, "{AT_CAP}: {rows:?}");
    let entries = zip_entries(&o.out.join(format!("archives/{AT_CAP}.zip")));
    for n in 1..=3 {
        assert!(
            entries.contains_key(&format!("pages/{n}.jpg")),
            "{AT_CAP}: page {n} missing from {:?}",
            entries.keys().collect::<Vec<_>>()
        );
    }
}

/// 3 MiB of image: a JPEG start, then zeros (what `Reply::Stream` and `Reply::Stall` send).
fn big_jpeg(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[..JPEG.len()].copy_from_slice(JPEG);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_reset_mid_body_and_whole_on_the_retry_is_stored_once_and_whole() {
    let s = origin().await;
    let front = format!("{}/images/front", scan(BAD));
    let len = 3 << 20;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nConnection: close\r\n"
    );
    let mut partial = format!("{head}\r\n").into_bytes();
    partial.extend_from_slice(&big_jpeg(len)[..1 << 20]);
    s.set(
        &front,
        Reply::Sequence(
            Default::default(),
            vec![
                Reply::Reset(partial),
                Reply::Stream {
                    head,
                    prefix: JPEG.to_vec(),
                    len,
                    chunked: false,
                },
            ],
        ),
    );
    let limits = Limits {
        max_file_bytes: 4 << 20,
        ..Limits::default()
    };
    let o = run_with(&s.base(), format!("{OK}\n{BAD}\n").as_bytes(), &limits).await;
    assert_eq!(s.hits(&front), 2);
    let entries = exported(&o, BAD);
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "data.json",
            "images.json",
            "images/front.jpg",
            "images/liveness-1.png",
            "manifest-sha256.txt",
            "provenance.json",
            "status.json"
        ]
    );
    assert!(
        entries["images/front.jpg"] == big_jpeg(len),
        "the front image is not what was served"
    );
    let manifest = String::from_utf8(entries["manifest-sha256.txt"].clone()).unwrap();
    let line = format!(
        "{}  images/front.jpg",
        crate::support::sha256_hex(&big_jpeg(len))
    );
    assert!(manifest.contains(&line), "{manifest}");
    let status = crate::support::bin()
        .args(["verify", o.out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", crate::support::text(&status));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_body_streams_leaves_only_a_hidden_temporary_and_the_next_run_exports_it() {
    let s = origin().await;
    let front = format!("{}/images/front", scan(BAD));
    let len = 8 << 20;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nConnection: close\r\n"
    );
    // Half the body, then nothing: the transfer is in flight when the kill comes.
    s.set(
        &front,
        Reply::Stall {
            head: head.clone(),
            prefix: JPEG.to_vec(),
            sent: len / 2,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        timeout_seconds: 60.0,
        max_file_bytes: 16 << 20,
        ..Limits::default()
    };
    let (job, refs) = crate::support::job_files(
        dir.path(),
        &job_text(&limits),
        "refs.txt",
        &format!("{OK}\n{BAD}\n"),
    );
    let out = dir.path().join("out");
    let run = || {
        let mut c = crate::support::bin();
        c.args([
            "run",
            job.to_str().unwrap(),
            "--input",
            refs.to_str().unwrap(),
        ])
        .args([
            "--out",
            out.to_str().unwrap(),
            "--base-url",
            &s.base(),
            "--quiet",
        ]);
        c
    };
    let archives = out.join("archives");
    let listing = || -> Vec<(String, u64)> {
        std::fs::read_dir(&archives)
            .map(|d| {
                d.map(|e| {
                    let e = e.unwrap();
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
            })
            .unwrap_or_default()
    };
    // Archive temporaries: in the runs' scratch directories, `runs/{run}/{reference}.zip.tmp`.
    let scratch = || -> Vec<(String, u64)> {
        let runs = out.join("runs");
        std::fs::read_dir(&runs)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten())
                    .filter_map(|e| e.ok())
                    .map(|e| {
                        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                        (e.file_name().to_string_lossy().into_owned(), len)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut child = run().spawn().unwrap();
    let start = Instant::now();
    // The half body reaches the disk while the transfer is still open: it streams.
    let need = len_half(len) as u64;
    let streamed = loop {
        let temp = scratch()
            .into_iter()
            .find(|(n, size)| *n == format!("{BAD}.zip.tmp") && *size >= need);
        if temp.is_some() || start.elapsed() > Duration::from_secs(30) {
            break temp;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (temp, _) = streamed.expect("no temporary archive held the half-received body");
    assert!(temp.ends_with(".zip.tmp"), "{temp}");
    let finals: Vec<String> = listing()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(
        !finals.contains(&format!("{BAD}.zip")),
        "an archive of the half-received transaction under its final name: {finals:?}"
    );
    // The next run: the body is served whole; the dead run's temporary is removed.
    s.set(
        &front,
        Reply::Stream {
            head,
            prefix: JPEG.to_vec(),
            len,
            chunked: false,
        },
    );
    let second = run().output().unwrap();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        crate::support::text(&second)
    );
    let left: Vec<String> = listing()
        .into_iter()
        .chain(scratch())
        .map(|(n, _)| n)
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporaries left: {left:?}");
    let entries = zip_entries(&archives.join(format!("{BAD}.zip")));
    assert!(entries["images/front.jpg"] == big_jpeg(len));
    let verify = crate::support::bin()
        .args(["verify", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", crate::support::text(&verify));
}

/// The bytes of the half body that must be on disk before the kill: most of it (the zip's
/// local header comes first, and the last socket reads may still be in flight).
fn len_half(len: usize) -> usize {
    len / 2 - (256 << 10)
}
