//! Object storage (issue 12): the binary exports the simulator's references into real S3 servers
//! on 127.0.0.1 — moto and SeaweedFS, started by the tests ([`S3Server`]) — and the result is
//! judged from the bucket: its objects downloaded, the tables read back by DuckDB and compared
//! with a local export of the same references, `verify s3://…`, and the faults of the issue
//! (a missing bucket, refused credentials, a store killed mid-run, the exporter killed during
//! multipart uploads, two shards at once, and through a fault-injecting proxy
//! ([`FaultProxy`]): sporadic 500s, lost answers, slow answers, a store failing for good).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jumio_export::Kind;
use jumio_export::simulator::{self, SimOptions};
use jumio_export::store::BucketUrl;

use crate::peers::{S3Kind, S3Server};
use crate::support::{BlockingSim, bin, exportable, job_files, text, zip_entries};

const BUCKET: &str = "jumio-test";

fn job_toml() -> String {
    r#"
[api]
region = "us"
user_agent = "jumio-export store tests/1.0"

[limits]
requests_per_second = 400.0
burst = 40
concurrency = 4
max_retries = 2
timeout_seconds = 10

[polling]
schedule_seconds = [0.05, 0.1]

[output]
allow_http = true
"#
    .to_string()
}

fn refs_csv(refs: &[(String, Kind)]) -> String {
    let mut s = String::from("reference,kind\n");
    for (r, k) in refs {
        s.push_str(&format!("{r},{k}\n"));
    }
    s
}

/// `jumio-export run` into `out` (a directory or `s3://…`), with the server's environment.
fn run_command(
    job: &Path,
    refs: &Path,
    out: &str,
    sim: &BlockingSim,
    server: Option<&S3Server>,
    args: &[&str],
) -> Command {
    let mut c = bin();
    c.arg("run")
        .arg(job)
        .arg("--input")
        .arg(refs)
        .arg("--out")
        .arg(out)
        .args(["--base-url", &sim.api().base_url(), "--quiet"])
        .args(args)
        .env("JUMIO_EXPORT_STORE_RETRIES", "2");
    if let Some(s) = server {
        c.envs(s.env());
    }
    c
}

fn verify_bucket(server: &S3Server, url: &str) -> Output {
    bin()
        .arg("verify")
        .arg(url)
        .envs(server.env())
        .output()
        .unwrap()
}

/// Every object of `url` downloaded into a fresh directory (the runs' heartbeats and staged
/// uploads under `runs/` included), by a client of the test's own.
fn download(server: &S3Server, url: &str) -> tempfile::TempDir {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let dest = tempfile::tempdir().unwrap();
    let url = BucketUrl::parse(Path::new(url)).unwrap().unwrap();
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(&url.bucket)
        .with_access_key_id(S3Server::ACCESS_KEY)
        .with_secret_access_key(S3Server::SECRET_KEY)
        .build()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let prefix = object_store::path::Path::from(url.prefix.as_str());
        let listed: Vec<_> = s3.list(Some(&prefix)).try_collect().await.unwrap();
        for meta in listed {
            let rel = url.relative(meta.location.as_ref()).unwrap().to_string();
            // A server just restarted (SeaweedFS) may list an object before it can serve it.
            let mut tries = 0;
            let bytes = loop {
                match s3.get(&meta.location).await {
                    Ok(got) => break got.bytes().await.unwrap(),
                    Err(e) if tries < 40 => {
                        tries += 1;
                        eprintln!("download {}: {e}; again", meta.location);
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                    Err(e) => panic!("download {}: {e}", meta.location),
                }
            };
            let local = dest.path().join(rel);
            std::fs::create_dir_all(local.parent().unwrap()).unwrap();
            std::fs::write(local, bytes).unwrap();
        }
    });
    dest
}

/// The keys under `url`, relative to it (a listing only).
fn keys(server: &S3Server, url: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let url = BucketUrl::parse(Path::new(url)).unwrap().unwrap();
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(&url.bucket)
        .with_access_key_id(S3Server::ACCESS_KEY)
        .with_secret_access_key(S3Server::SECRET_KEY)
        .build()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let prefix = object_store::path::Path::from(url.prefix.as_str());
        let listed: Vec<_> = s3.list(Some(&prefix)).try_collect().await.unwrap();
        listed
            .iter()
            .filter_map(|m| url.relative(m.location.as_ref()).map(str::to_string))
            .collect()
    })
}

/// Rows of `table` in `dir` (every Parquet part) as sorted CSV lines read by DuckDB: every
/// column but those two exports of the same transactions cannot share — `run`, the status
/// call's `timestamp` (the API's time of the answer), `archive_sha256` (the archive's
/// `provenance.json` names the run and the retrieval times), and in `files` the `sha256` of
/// JSON and text entries (they carry those times); images and PDFs keep theirs.
fn duckdb_rows(python: &Path, dir: &Path, table: &str) -> Vec<String> {
    let glob = dir.join("tables").join(table).join("*.parquet");
    let script = format!(
        "import duckdb, csv, sys\n\
         rel = duckdb.sql(\"SELECT * FROM read_parquet('{}')\")\n\
         cols = [c for c in rel.columns if c not in ('run', 'timestamp', 'archive_sha256')]\n\
         assert len(cols) >= 3, rel.columns\n\
         rows = [dict(zip(rel.columns, r)) for r in rel.fetchall()]\n\
         volatile = lambda r: any(str(v).endswith(('.json', '.txt')) for v in r.values())\n\
         w = csv.writer(sys.stdout)\n\
         [w.writerow([('' if c == 'sha256' and volatile(r) else r[c]) for c in cols]) for r in rows]\n",
        glob.display()
    );
    let o = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "duckdb: {}", text(&o));
    let mut lines: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// The archive's entries but `provenance.json` (it names the run and the retrieval times), and
/// JSON bodies with their volatile timestamp ignored.
fn archive_content(path: &Path) -> BTreeMap<String, Vec<u8>> {
    zip_entries(path)
        .into_iter()
        .filter(|(name, _)| name != "provenance.json" && name != "manifest-sha256.txt")
        .collect()
}

fn same_archives(a: &Path, b: &Path) {
    let (ea, eb) = (archive_content(a), archive_content(b));
    assert_eq!(
        ea.keys().collect::<Vec<_>>(),
        eb.keys().collect::<Vec<_>>(),
        "{} and {} hold the same entries",
        a.display(),
        b.display()
    );
    for (name, body) in &ea {
        let other = &eb[name];
        assert!(
            body == other || crate::support::same_json_but_timestamp(body, other),
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

fn zips(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("archives"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".zip"))
                .collect()
        })
        .unwrap_or_default()
}

fn commits(dir: &Path) -> Vec<serde_json::Value> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("commits"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_else(|_| Vec::new());
    v.sort();
    v.into_iter()
        .filter(|p: &PathBuf| p.extension().is_some_and(|e| e == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

/// Every (reference, table) of the kind tables' Parquet parts the commits list, with its count.
fn exported_counts(python: &Path, dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for kind in Kind::ALL {
        let listed: Vec<String> = commits(dir)
            .iter()
            .flat_map(|c| c["parts"].as_array().unwrap().clone())
            .filter(|p| p["table"] == kind.table_name() && p["format"] == "parquet")
            .map(|p| dir.join(p["path"].as_str().unwrap()).display().to_string())
            .collect();
        if listed.is_empty() {
            continue;
        }
        let script = format!(
            "import duckdb\nfor (r,) in duckdb.read_parquet({listed:?}).select('reference').fetchall(): print(r)\n"
        );
        let o = Command::new(python).args(["-c", &script]).output().unwrap();
        assert!(o.status.success(), "duckdb: {}", text(&o));
        for r in String::from_utf8(o.stdout).unwrap().lines() {
            *counts.entry(r.to_string()).or_default() += 1;
        }
    }
    counts
}

fn assert_exactly_once(python: &Path, dir: &Path, refs: &[(String, Kind)]) {
    let counts = exported_counts(python, dir);
    let want: BTreeMap<String, usize> = refs.iter().map(|(r, _)| (r.clone(), 1)).collect();
    assert_eq!(counts, want, "every reference exported exactly once");
    let archives: BTreeSet<String> = refs.iter().map(|(r, _)| format!("{r}.zip")).collect();
    assert_eq!(zips(dir), archives, "one archive per reference, no other");
}

/// The scenario of "done when", on one server: a local export and a bucket export of the same
/// references hold the same rows (apart from `run`) and the same archive contents; `verify`
/// passes on the bucket; a second run into the bucket exports nothing again.
fn export_matches_local(kind: S3Kind) {
    let Some(python) = crate::peers::require_python_duckdb() else {
        return;
    };
    let Some(server) = S3Server::start(kind, BUCKET) else {
        return;
    };
    let sim = BlockingSim::start(SimOptions::default());
    let refs = exportable(8);
    let dir = tempfile::tempdir().unwrap();
    let (job, list) = job_files(dir.path(), &job_toml(), "refs.csv", &refs_csv(&refs));
    let local = dir.path().join("local");
    let o = run_command(&job, &list, local.to_str().unwrap(), &sim, None, &[])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "local export: {}", text(&o));
    let url = format!("s3://{BUCKET}/exports/one");
    let o = run_command(&job, &list, &url, &sim, Some(&server), &[])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "bucket export: {}", text(&o));
    assert!(
        text(&o).contains(&url),
        "the summary names the bucket: {}",
        text(&o)
    );
    let got = download(&server, &url);
    for table in [
        "netverify",
        "documents",
        "authentications",
        "files",
        "failures",
    ] {
        assert_eq!(
            duckdb_rows(&python, got.path(), table),
            duckdb_rows(&python, &local, table),
            "table {table}: the bucket's rows are the local export's"
        );
    }
    assert_eq!(zips(got.path()), zips(&local));
    for name in zips(&local) {
        same_archives(
            &local.join("archives").join(&name),
            &got.path().join("archives").join(&name),
        );
    }
    assert_exactly_once(&python, got.path(), &refs);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(got.path().join("report.json")).unwrap()).unwrap();
    let store_requests = report["facts"]["store_requests"]["total"]
        .as_u64()
        .or_else(|| report["store_requests"]["total"].as_u64())
        .unwrap_or_else(|| panic!("the report counts the store's requests: {report}"));
    assert!(store_requests >= refs.len() as u64, "{report}");
    let v = verify_bucket(&server, &url);
    assert_eq!(
        v.status.code(),
        Some(0),
        "verify on the bucket: {}",
        text(&v)
    );
    // Again: everything is in the catalogue; nothing is fetched or written but a commit.
    let before = sim.api().requests().len();
    let o = run_command(&job, &list, &url, &sim, Some(&server), &[])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "second run: {}", text(&o));
    assert_eq!(
        sim.api().requests().len(),
        before,
        "the second run asks Jumio nothing"
    );
    let again = download(&server, &url);
    assert_exactly_once(&python, again.path(), &refs);
    assert_eq!(commits(again.path()).len(), 2);
}

#[test]
fn an_export_into_moto_matches_a_local_export_and_verifies() {
    export_matches_local(S3Kind::Moto);
}

#[test]
fn an_export_into_seaweedfs_matches_a_local_export_and_verifies() {
    export_matches_local(S3Kind::Seaweed);
}

/// A bucket that does not exist, and credentials the server refuses: exit 3 before any request
/// to Jumio, a message naming the location and never the secret.
#[test]
fn a_missing_bucket_or_refused_credentials_stop_before_any_api_request() {
    let Some(open) = S3Server::start(S3Kind::Moto, BUCKET) else {
        return;
    };
    // moto checks signatures once its first (here: the bucket's) request is done.
    let Some(refusing) = S3Server::start_with(
        S3Kind::Moto,
        BUCKET,
        &[("INITIAL_NO_AUTH_ACTION_COUNT", "1")],
    ) else {
        return;
    };
    let sim = BlockingSim::start(SimOptions::default());
    let refs = exportable(2);
    let dir = tempfile::tempdir().unwrap();
    let (job, list) = job_files(dir.path(), &job_toml(), "refs.csv", &refs_csv(&refs));
    for (url, server, why, code) in [
        (
            "s3://no-such-bucket-1234/p",
            &open,
            "missing bucket",
            "NoSuchBucket",
        ),
        (
            &*format!("s3://{BUCKET}/p"),
            &refusing,
            "refused credentials",
            "InvalidAccessKeyId",
        ),
    ] {
        let o = run_command(&job, &list, url, &sim, Some(server), &[])
            .output()
            .unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(3), "{why}: {t}");
        assert!(
            t.contains(code),
            "{why}: the store's answer {code} is shown: {t}"
        );
        assert!(t.contains(url), "{why}: the message names {url}: {t}");
        assert!(
            !t.contains(S3Server::SECRET_KEY),
            "{why}: the secret appears: {t}"
        );
        assert!(
            sim.api().requests().is_empty(),
            "{why}: no request reached Jumio"
        );
    }
}

/// Waits until `f` holds (polled every 50 ms), at most `secs`.
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(c: &mut Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SeaweedFS killed mid-run: bounded retries, exit 3, no commit; restarted on its data, the next
/// run completes and the bucket verifies, every reference exactly once.
#[test]
fn a_store_killed_mid_run_commits_nothing_and_the_next_run_completes() {
    let Some(python) = crate::peers::require_python_duckdb() else {
        return;
    };
    let Some(mut server) = S3Server::start(S3Kind::Seaweed, BUCKET) else {
        return;
    };
    let sim = BlockingSim::start(SimOptions {
        faults: simulator::Faults {
            latency_ms: 40,
            ..simulator::Faults::default()
        },
        ..SimOptions::default()
    });
    let refs = exportable(24);
    let dir = tempfile::tempdir().unwrap();
    let (job, list) = job_files(dir.path(), &job_toml(), "refs.csv", &refs_csv(&refs));
    let url = format!("s3://{BUCKET}/killed-store");
    let started = Instant::now();
    let child = spawn(
        run_command(&job, &list, &url, &sim, Some(&server), &[])
            .env("JUMIO_EXPORT_STORE_STALE_SECS", "2"),
    );
    // Some archives in the bucket, most not.
    wait_until(60, "a first archive uploaded", || {
        keys(&server, &url)
            .iter()
            .any(|k| k.starts_with("archives/"))
    });
    server.kill();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "retries are bounded"
    );
    assert!(text(&o).contains(&url), "{}", text(&o));
    server.restart(BUCKET);
    let got = download(&server, &url);
    assert!(commits(got.path()).is_empty(), "nothing committed");
    // What the next run must take over: archives no commit lists, by a run whose heartbeat
    // stayed (the store was gone when it ended).
    assert!(!zips(got.path()).is_empty());
    assert!(
        keys(&server, &url)
            .iter()
            .any(|k| k.starts_with("runs/") && k.ends_with(".lock")),
        "the dead run's heartbeat is there"
    );
    std::thread::sleep(Duration::from_secs(3));
    let o = run_command(&job, &list, &url, &sim, Some(&server), &[])
        .env("JUMIO_EXPORT_STORE_STALE_SECS", "2")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "the next run: {}", text(&o));
    let got = download(&server, &url);
    assert_exactly_once(&python, got.path(), &refs);
    let v = verify_bucket(&server, &url);
    assert_eq!(v.status.code(), Some(0), "verify: {}", text(&v));
}

/// Every archive uploaded in parts (a tiny single-PUT limit), the exporter killed with SIGKILL
/// while uploading: every object under `archives/` is a whole archive, none half; after the
/// dead run's heartbeat goes stale the next run completes and verifies.
#[test]
fn kill_9_during_multipart_uploads_leaves_no_partial_archive_and_the_next_run_completes() {
    let Some(python) = crate::peers::require_python_duckdb() else {
        return;
    };
    let Some(server) = S3Server::start(S3Kind::Moto, BUCKET) else {
        return;
    };
    let sim = BlockingSim::start(SimOptions {
        faults: simulator::Faults {
            latency_ms: 20,
            ..simulator::Faults::default()
        },
        ..SimOptions::default()
    });
    let refs = exportable(24);
    let dir = tempfile::tempdir().unwrap();
    let (job, list) = job_files(dir.path(), &job_toml(), "refs.csv", &refs_csv(&refs));
    let url = format!("s3://{BUCKET}/killed-exporter");
    let knobs = [
        ("JUMIO_EXPORT_STORE_SINGLE_PUT_BYTES", "1"),
        ("JUMIO_EXPORT_STORE_STALE_SECS", "2"),
    ];
    let mut child = spawn(run_command(&job, &list, &url, &sim, Some(&server), &[]).envs(knobs));
    // Killed once its uploads are under way: the first multipart upload has started (a fixed
    // number of API requests was not enough under load: the uploads can lag the fetching).
    wait_until(60, "uploads under way", || {
        server.log().contains(".zip.upload?uploads")
    });
    crate::support::signal(child.id(), libc::SIGKILL);
    let _ = child.wait();
    assert!(
        server.log().contains(".zip.upload?uploads"),
        "archives went up in multipart uploads"
    );
    let got = download(&server, &url);
    assert!(commits(got.path()).is_empty(), "nothing committed");
    for name in zips(got.path()) {
        // A partial object would not open, or would fail a CRC.
        let entries = zip_entries(&got.path().join("archives").join(&name));
        assert!(entries.contains_key("manifest-sha256.txt"), "{name}");
    }
    std::thread::sleep(Duration::from_secs(3));
    let o = run_command(&job, &list, &url, &sim, Some(&server), &[])
        .envs(knobs)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "the next run: {}", text(&o));
    let got = download(&server, &url);
    assert_exactly_once(&python, got.path(), &refs);
    assert!(
        !got.path().join("runs").exists(),
        "no staged upload or heartbeat is read back"
    );
    let v = verify_bucket(&server, &url);
    assert_eq!(v.status.code(), Some(0), "verify: {}", text(&v));
}

/// Two shards of one job into one prefix at the same time: two commits, every reference once.
#[test]
fn two_shards_into_one_prefix_at_once_export_each_reference_exactly_once() {
    let Some(python) = crate::peers::require_python_duckdb() else {
        return;
    };
    let Some(server) = S3Server::start(S3Kind::Moto, BUCKET) else {
        return;
    };
    let sim = BlockingSim::start(SimOptions {
        faults: simulator::Faults {
            latency_ms: 5,
            ..simulator::Faults::default()
        },
        ..SimOptions::default()
    });
    let refs = exportable(16);
    let dir = tempfile::tempdir().unwrap();
    let (job, list) = job_files(dir.path(), &job_toml(), "refs.csv", &refs_csv(&refs));
    let url = format!("s3://{BUCKET}/shards");
    let children: Vec<Child> = (0..2)
        .map(|k| {
            spawn(&mut run_command(
                &job,
                &list,
                &url,
                &sim,
                Some(&server),
                &["--shard", &format!("{k}/2")],
            ))
        })
        .collect();
    for (k, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "shard {k}/2: {}", text(&o));
    }
    let got = download(&server, &url);
    assert_eq!(commits(got.path()).len(), 2, "one commit per shard");
    assert_exactly_once(&python, got.path(), &refs);
    let v = verify_bucket(&server, &url);
    assert_eq!(v.status.code(), Some(0), "verify: {}", text(&v));
}

/// `plan` for a bucket prints what the bucket costs in requests (README "Object storage"),
/// without any request; for a directory it prints nothing of the kind.
#[test]
fn plan_prints_the_store_requests_per_transaction_of_a_bucket() {
    let refs = exportable(4);
    let dir = tempfile::tempdir().unwrap();
    let (job, list) = job_files(dir.path(), &job_toml(), "refs.csv", &refs_csv(&refs));
    let plan = |out: &str| {
        let o = bin()
            .arg("plan")
            .arg(&job)
            .arg("--input")
            .arg(&list)
            .args(["--out", out])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let bucket = plan("s3://plan-bucket/p");
    assert!(
        bucket.contains("store requests into s3://plan-bucket/p")
            && bucket.contains("per exported transaction: 1 PUT"),
        "{bucket}"
    );
    let local = plan(dir.path().join("out").to_str().unwrap());
    assert!(!local.contains("store requests"), "{local}");
}

/// A fault-injecting proxy in front of an S3 server (`tests/fixtures/s3_fault_proxy.py`, on a
/// free 127.0.0.1 port): forwards every request verbatim, or answers 500 / waits as its control
/// file says; killed when dropped.
struct FaultProxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl FaultProxy {
    fn start(python: &Path, upstream: &S3Server) -> FaultProxy {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/s3_fault_proxy.py");
        let upstream_port = upstream.endpoint().rsplit(':').next().unwrap().to_string();
        let mut child = Command::new(python)
            .arg(script)
            .arg(upstream_port)
            .arg(dir.path().join("control"))
            .arg(dir.path().join("proxy.log"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the proxy prints its port, not {line:?}"));
        FaultProxy { child, port, dir }
    }

    /// Its faults from now on: `key=value` lines (`every`, `delay_ms`, `fail_all`).
    fn set(&self, control: &str) {
        let tmp = self.dir.path().join("control.tmp");
        std::fs::write(&tmp, control).unwrap();
        std::fs::rename(tmp, self.dir.path().join("control")).unwrap();
    }

    /// Requests it answered with a 500 of its own.
    fn injected(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("proxy.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.ends_with(" injected"))
            .count()
    }

    /// Requests it answered with the upstream's answer.
    fn forwarded(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("proxy.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.ends_with(" injected"))
            .count()
    }

    /// `server`'s client environment with the proxy as the endpoint.
    fn env(&self, server: &S3Server) -> Vec<(&'static str, String)> {
        let mut env = server.env();
        for (k, v) in &mut env {
            if *k == "AWS_ENDPOINT_URL" {
                *v = format!("http://127.0.0.1:{}", self.port);
            }
        }
        env
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every part a commit lists is in the bucket, and at least as many archives as it counts (a
/// commit never lists what is not there; `verify` checks the archives themselves).
fn nothing_committed_half(server: &S3Server, url: &str) {
    let present: BTreeSet<String> = keys(server, url).into_iter().collect();
    let got = download(server, url);
    for c in commits(got.path()) {
        for p in c["parts"].as_array().unwrap() {
            let path = p["path"].as_str().unwrap();
            assert!(present.contains(path), "a commit lists {path}, absent: {c}");
        }
        let archives = present
            .iter()
            .filter(|k| k.starts_with("archives/"))
            .count() as u64;
        let listed = c["archives"]["count"].as_u64().unwrap();
        assert!(
            listed <= archives,
            "a commit lists {listed} archives, {archives} are there"
        );
    }
}

fn store_retries(dir: &Path) -> u64 {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    report["facts"]["store_requests"]["retries"]
        .as_u64()
        .or_else(|| report["store_requests"]["retries"].as_u64())
        .unwrap_or_else(|| panic!("the report counts the store's retries: {report}"))
}

/// An export of 6 references into `s3://jumio-test/{name}` through a [`FaultProxy`] set to
/// `control`: it completes (exit 0), every reference once, no commit listing what is not there,
/// and `verify` through the proxy (faults still on) passes. Returns the proxy (for its log) and
/// the store retries the report counts.
fn export_through_faults(name: &str, control: &str) -> Option<(FaultProxy, u64)> {
    let python = crate::peers::require_python_duckdb()?;
    let server = S3Server::start(S3Kind::Moto, BUCKET)?;
    let proxy = FaultProxy::start(&python, &server);
    let sim = BlockingSim::start(SimOptions::default());
    let refs = exportable(6);
    let dir = tempfile::tempdir().unwrap();
    let (job, list) = job_files(dir.path(), &job_toml(), "refs.csv", &refs_csv(&refs));
    proxy.set(control);
    let url = format!("s3://{BUCKET}/{name}");
    let o = run_command(&job, &list, &url, &sim, None, &[])
        .envs(proxy.env(&server))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
    let got = download(&server, &url);
    assert_exactly_once(&python, got.path(), &refs);
    nothing_committed_half(&server, &url);
    let v = bin()
        .arg("verify")
        .arg(&url)
        .envs(proxy.env(&server))
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(0), "{name}: verify: {}", text(&v));
    let retries = store_retries(got.path());
    Some((proxy, retries))
}

/// Every 5th store request answered 500 (its retry gets through): bounded retries absorb them, the export completes
/// and verifies, and the report counts the retries.
#[test]
fn sporadic_500s_from_the_store_are_retried_and_the_export_completes() {
    let Some((proxy, retries)) = export_through_faults("flaky", "every=5\n") else {
        return;
    };
    assert!(proxy.injected() > 0, "the proxy answered 500s");
    assert!(retries > 0, "the report counts the store's retries");
}

/// Every 4th store request carried out but its answer lost (a 500 instead; its retry answered
/// as usual): a retried create-if-absent write meets its own object (412), which is this run's
/// write, not another's; the export completes and verifies.
#[test]
fn lost_answers_from_the_store_are_retried_and_the_export_completes() {
    let Some((proxy, retries)) = export_through_faults("lost", "lose_every=4\n") else {
        return;
    };
    assert!(proxy.injected() > 0, "the proxy lost answers");
    assert!(retries > 0, "the report counts the store's retries");
}

/// Every store answer 300 ms late: waited for, never given up on nor retried; the export
/// completes and verifies.
#[test]
fn slow_answers_from_the_store_are_waited_for_and_the_export_completes() {
    let Some((proxy, retries)) = export_through_faults("slow", "delay_ms=300\n") else {
        return;
    };
    assert_eq!(proxy.injected(), 0);
    assert!(proxy.forwarded() > 6, "the export went through the proxy");
    assert_eq!(retries, 0, "a slow answer is not retried");
}

/// The store answering 500 to everything once some archives are up: bounded retries, exit 3 in
/// bounded time, no commit that lists what is not there; with the store healthy again the next
/// run completes and verifies, every reference once.
#[test]
fn a_store_failing_for_good_mid_run_exits_3_and_the_next_run_completes() {
    let Some(python) = crate::peers::require_python_duckdb() else {
        return;
    };
    let Some(server) = S3Server::start(S3Kind::Moto, BUCKET) else {
        return;
    };
    let proxy = FaultProxy::start(&python, &server);
    let sim = BlockingSim::start(SimOptions {
        faults: simulator::Faults {
            latency_ms: 40,
            ..simulator::Faults::default()
        },
        ..SimOptions::default()
    });
    let refs = exportable(16);
    let dir = tempfile::tempdir().unwrap();
    let (job, list) = job_files(dir.path(), &job_toml(), "refs.csv", &refs_csv(&refs));
    let url = format!("s3://{BUCKET}/failing");
    let knobs = [("JUMIO_EXPORT_STORE_STALE_SECS", "2")];
    let started = Instant::now();
    let child = spawn(
        run_command(&job, &list, &url, &sim, None, &[])
            .envs(proxy.env(&server))
            .envs(knobs),
    );
    wait_until(60, "a first archive uploaded", || {
        keys(&server, &url)
            .iter()
            .any(|k| k.starts_with("archives/"))
    });
    proxy.set("fail_all=1\n");
    let failing = Instant::now();
    // Bounded: killed (and the test failed) if it still runs 30 s after the store went bad.
    let mut child = child;
    while child.try_wait().unwrap().is_none() && failing.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let bounded = child.try_wait().unwrap().is_some();
    if !bounded {
        let _ = child.kill();
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        bounded,
        "retries are bounded: still running 30 s after the store failed: {}",
        text(&o)
    );
    eprintln!(
        "exit {:?} {:?} after the store failed, {:?} after the start",
        o.status.code(),
        failing.elapsed(),
        started.elapsed()
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains(&url), "{}", text(&o));
    assert!(
        !text(&o).contains(S3Server::SECRET_KEY),
        "the secret appears: {}",
        text(&o)
    );
    assert!(proxy.injected() > 0);
    nothing_committed_half(&server, &url);
    let got = download(&server, &url);
    assert!(
        zips(got.path()).len() < refs.len(),
        "the store failed before the export was done"
    );
    // Then a store that lists and writes but cannot serve the archives back: the archives the
    // failed run left are not damaged, only unreadable now. Their references fail as NETWORK (a
    // later try checks them again), each archive stays as it is, and nothing advises moving
    // them aside.
    let left = zips(got.path());
    assert!(!left.is_empty(), "the failed run left archives");
    proxy.set("fail_archive_reads=1\n");
    std::thread::sleep(Duration::from_secs(3));
    let o = run_command(&job, &list, &url, &sim, None, &[])
        .envs(proxy.env(&server))
        .envs(knobs)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!text(&o).contains("move it aside"), "{}", text(&o));
    let after = download(&server, &url);
    let failures = std::fs::read_to_string(after.path().join("failures.csv")).unwrap();
    for name in &left {
        let reference = name.trim_end_matches(".zip");
        let row = failures
            .lines()
            .find(|l| l.starts_with(&format!("{reference},")))
            .unwrap_or_else(|| panic!("no follow-up for {reference}: {failures}"));
        assert!(
            row.contains(",archive,") && row.contains(",NETWORK,"),
            "{row}"
        );
        assert_eq!(
            std::fs::read(after.path().join("archives").join(name)).unwrap(),
            std::fs::read(got.path().join("archives").join(name)).unwrap(),
            "{name} is left as it was"
        );
    }
    proxy.set("");
    std::thread::sleep(Duration::from_secs(3));
    let forwarded = proxy.forwarded();
    let o = run_command(&job, &list, &url, &sim, None, &[])
        .envs(proxy.env(&server))
        .envs(knobs)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "the next run: {}", text(&o));
    assert!(
        proxy.forwarded() > forwarded,
        "the next run went through the proxy"
    );
    nothing_committed_half(&server, &url);
    let got = download(&server, &url);
    assert_exactly_once(&python, got.path(), &refs);
    let v = verify_bucket(&server, &url);
    assert_eq!(v.status.code(), Some(0), "verify: {}", text(&v));
}

/// Age archives in a bucket (`[output] age_recipients`): a run killed (-9) after uploading some
/// `archives/*.zip.age` and their takeover records (`runs/{run}/takeover/…`) and before its
/// commit; once its heartbeat is stale the next run lists each of them from its record without a
/// request for its reference, and the bucket verifies without any identity.
#[test]
fn age_archives_in_a_bucket_are_taken_over_after_kill_9_without_a_request() {
    let Some(age_keygen) = crate::peers::require("age-keygen") else {
        return;
    };
    let Some(server) = S3Server::start(S3Kind::Moto, BUCKET) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("age-key.txt");
    let o = Command::new(age_keygen)
        .arg("-o")
        .arg(&identity)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let recipient = std::fs::read_to_string(&identity)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .unwrap();
    let sim = BlockingSim::start(SimOptions {
        faults: simulator::Faults {
            latency_ms: 40,
            ..simulator::Faults::default()
        },
        ..SimOptions::default()
    });
    let refs = exportable(16);
    let job_text = format!(
        "{}age_recipients = [\"{recipient}\"]\n",
        job_toml().replace("concurrency = 4", "concurrency = 2")
    );
    let (job, list) = job_files(dir.path(), &job_text, "refs.csv", &refs_csv(&refs));
    let url = format!("s3://{BUCKET}/age");
    let mut child = spawn(
        run_command(&job, &list, &url, &sim, Some(&server), &[])
            .env("JUMIO_EXPORT_STORE_STALE_SECS", "2"),
    );
    let sealed = |keys: &[String]| -> Vec<String> {
        keys.iter()
            .filter_map(|k| k.strip_prefix("archives/")?.strip_suffix(".zip.age"))
            .map(str::to_string)
            .collect()
    };
    wait_until(60, "three age archives uploaded", || {
        sealed(&keys(&server, &url)).len() >= 3
    });
    let _ = child.kill();
    let _ = child.wait();
    let listed = keys(&server, &url);
    assert!(
        !listed.iter().any(|k| k.starts_with("commits/")),
        "committed"
    );
    let left = sealed(&listed);
    for r in &left {
        assert!(
            listed
                .iter()
                .any(|k| k.starts_with("runs/") && k.ends_with(&format!("/takeover/{r}.json"))),
            "{r}: no takeover record in the bucket: {listed:?}"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let log_start = sim.api().requests().len();
    let o = run_command(&job, &list, &url, &sim, Some(&server), &[])
        .env("JUMIO_EXPORT_STORE_STALE_SECS", "2")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "the next run: {}", text(&o));
    let log = sim.api().requests()[log_start..].to_vec();
    for r in &left {
        assert!(
            !log.iter().any(|q| q.path.contains(&format!("/{r}"))),
            "{r}: fetched although its age archive was in the bucket"
        );
    }
    let got = download(&server, &url);
    let c = commits(got.path());
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0]["report"]["outcomes"]["already_exported"],
        left.len() as u64,
        "{}",
        c[0]
    );
    assert!(
        zips(got.path()).is_empty(),
        "a plaintext archive in the bucket"
    );
    let v = verify_bucket(&server, &url);
    assert_eq!(v.status.code(), Some(0), "verify: {}", text(&v));
}
