//! Helpers shared by the integration tests: the binary with the simulator's credentials, and
//! references the simulator exports cleanly.

use std::process::{Command, Output};

use jumio_export::Kind;
use jumio_export::simulator::{self, SimOptions};

/// The simulator's default Basic-auth user.
pub const TOKEN: &str = "demo-token";
/// The simulator's default Basic-auth password.
pub const SECRET: &str = "demo-secret";

/// The `jumio-export` binary, with the simulator's credentials in its environment.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jumio-export"));
    c.env("JUMIO_API_TOKEN", TOKEN)
        .env("JUMIO_API_SECRET", SECRET);
    c
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `n` references of the default simulator population that export cleanly: no 404, no foreign
/// hrefs, final within two status calls (every test job's schedule has at least two entries, one
/// status call each), so faults are the only obstacle a test puts in the way.
pub fn exportable(n: usize) -> Vec<(String, Kind)> {
    let seed = SimOptions::default().seed;
    let refs: Vec<_> = simulator::population(seed, n * 3 + 20)
        .into_iter()
        .filter(|(r, _)| {
            let sc = simulator::scenario(seed, r).expect("population references are known");
            let polls_ok = match sc.polls {
                simulator::Polls::Ready => true,
                simulator::Polls::After(n) => n <= 1,
                simulator::Polls::Never => false,
            };
            !sc.retention_404 && polls_ok && !sc.foreign_hrefs
        })
        .take(n)
        .collect();
    assert_eq!(
        refs.len(),
        n,
        "the population has too few exportable references"
    );
    refs
}

/// A simulator on a loopback port with a runtime of its own, for tests that drive the binary
/// synchronously; shut down when dropped.
pub struct BlockingSim {
    rt: tokio::runtime::Runtime,
    api: Option<simulator::SimHandle>,
    /// What it was started with, and where: [`BlockingSim::restart`] serves the same again.
    opts: SimOptions,
    addr: std::net::SocketAddr,
}

impl BlockingSim {
    /// Starts one with `opts`.
    pub fn start(opts: SimOptions) -> Self {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let api = rt
            .block_on(simulator::start(
                opts.clone(),
                "127.0.0.1:0".parse().expect("loopback"),
            ))
            .expect("the simulator starts on loopback");
        let addr = api.addr();
        BlockingSim {
            rt,
            api: Some(api),
            opts,
            addr,
        }
    }

    /// Stops it, as an outage would: the port refuses connections until [`BlockingSim::restart`].
    pub fn stop(&mut self) {
        if let Some(api) = self.api.take() {
            self.rt.block_on(api.shutdown());
        }
    }

    /// Starts it again on the same port with the same options (the request log starts empty).
    pub fn restart(&mut self) {
        assert!(self.api.is_none(), "stop it first");
        let api = self
            .rt
            .block_on(simulator::start(self.opts.clone(), self.addr))
            .expect("the simulator restarts on its port");
        self.api = Some(api);
    }

    /// Its handle (base URL, request log).
    pub fn api(&self) -> &simulator::SimHandle {
        self.api.as_ref().expect("running until dropped")
    }
}

impl Drop for BlockingSim {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            self.rt.block_on(api.shutdown());
        }
    }
}

/// Writes `job.toml` and a reference list named `refs_name` into `dir`; returns both paths.
pub fn job_files(
    dir: &std::path::Path,
    job: &str,
    refs_name: &str,
    refs: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let job_path = dir.join("job.toml");
    std::fs::write(&job_path, job).expect("job file written");
    let refs_path = dir.join(refs_name);
    std::fs::write(&refs_path, refs).expect("reference list written");
    (job_path, refs_path)
}

/// Every entry of an archive by name, each name checked with `enclosed_name`.
pub fn zip_entries(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut z =
        zip::ZipArchive::new(std::fs::File::open(path).expect("archive opens")).expect("a zip");
    let mut out = std::collections::BTreeMap::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).expect("entry readable");
        let name = f.name().expect("entry name").to_string();
        assert!(f.enclosed_name().is_some(), "unsafe entry name {name:?}");
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).expect("entry body");
        out.insert(name, buf);
    }
    out
}

/// Rows of a Parquet file, read with arrow's reader.
pub fn parquet_rows(path: &std::path::Path) -> usize {
    let f = std::fs::File::open(path).expect("parquet file opens");
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("a parquet file")
        .build()
        .expect("a reader")
        .map(|b| b.expect("a record batch").num_rows())
        .sum()
}

/// A CSV table: its header and its rows as column → value.
pub fn csv_table(
    path: &std::path::Path,
) -> (Vec<String>, Vec<std::collections::BTreeMap<String, String>>) {
    let mut r = csv::Reader::from_path(path).expect("csv opens");
    let header: Vec<String> = r
        .headers()
        .expect("a header")
        .iter()
        .map(String::from)
        .collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.expect("a record");
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

/// The parts of `table` in `format` (`"csv"` or `"parquet"`) that the dataset's commits list,
/// in commit order, read from `commits/*.json` by the test itself (not the program's reader).
/// Parts no commit lists are not part of the dataset and are not returned.
pub fn committed_parts(
    out: &std::path::Path,
    table: &str,
    format: &str,
) -> Vec<std::path::PathBuf> {
    let mut commits: Vec<std::path::PathBuf> = match std::fs::read_dir(out.join("commits")) {
        Ok(l) => l
            .map(|e| e.expect("commits/ entry").path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                name.ends_with(".json") && !name.starts_with('.')
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    commits.sort();
    let mut parts = Vec::new();
    for c in commits {
        let commit: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&c).expect("commit readable")).expect("json");
        for p in commit["parts"].as_array().expect("parts") {
            if p["table"] == table && p["format"] == format {
                parts.push(out.join(p["path"].as_str().expect("path")));
            }
        }
    }
    parts
}

/// A table of the dataset as CSV: the header of its committed parts (all equal) and every row of
/// every committed part, in commit order.
pub fn dataset_csv(
    out: &std::path::Path,
    table: &str,
) -> (Vec<String>, Vec<std::collections::BTreeMap<String, String>>) {
    let mut header = Vec::new();
    let mut rows = Vec::new();
    for part in committed_parts(out, table, "csv") {
        let (h, r) = csv_table(&part);
        if !header.is_empty() {
            assert_eq!(
                h,
                header,
                "{}: every part has the same header",
                part.display()
            );
        }
        header = h;
        rows.extend(r);
    }
    (header, rows)
}

/// One column of a table of the dataset, from every committed Parquet part, in commit order.
pub fn dataset_parquet_strings(
    out: &std::path::Path,
    table: &str,
    column: &str,
) -> Vec<Option<String>> {
    committed_parts(out, table, "parquet")
        .iter()
        .flat_map(|p| parquet_strings(p, column))
        .collect()
}

/// Rows of a table of the dataset, over its committed Parquet parts.
pub fn dataset_parquet_rows(out: &std::path::Path, table: &str) -> usize {
    committed_parts(out, table, "parquet")
        .iter()
        .map(|p| parquet_rows(p))
        .sum()
}

/// The `files` table (CSV and Parquet) holds one row per entry of the archives of `exported`,
/// with the entry's sha256, each once.
pub fn assert_files_table_matches_archives(out: &std::path::Path, exported: &[(String, Kind)]) {
    let mut from_archives = std::collections::BTreeSet::new();
    for (r, _) in exported {
        for (name, body) in zip_entries(&out.join(format!("archives/{r}.zip"))) {
            from_archives.insert((r.clone(), name, sha256_hex(&body)));
        }
    }
    let (_, rows) = dataset_csv(out, "files");
    let csv: std::collections::BTreeSet<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["reference"].clone(),
                r["entry"].clone(),
                r["sha256"].clone(),
            )
        })
        .collect();
    assert_eq!(rows.len(), csv.len(), "files: a duplicate row");
    assert!(
        csv == from_archives,
        "files disagrees with the archives: missing {:?}, extra {:?}",
        from_archives.difference(&csv).take(5).collect::<Vec<_>>(),
        csv.difference(&from_archives).take(5).collect::<Vec<_>>()
    );
    let parquet: Vec<(String, String, String)> = dataset_parquet_strings(out, "files", "reference")
        .into_iter()
        .zip(dataset_parquet_strings(out, "files", "entry"))
        .zip(dataset_parquet_strings(out, "files", "sha256"))
        .map(|((r, e), s)| (r.unwrap(), e.unwrap(), s.unwrap()))
        .collect();
    assert_eq!(parquet.len(), from_archives.len(), "files.parquet: rows");
    assert!(
        parquet
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            == from_archives,
        "files.parquet disagrees with the archives"
    );
}

/// Hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

// --- tests-a helpers ---
// Randomised schedules with a printed seed, Parquet columns, and archives compared with what the
// simulator serves (every entry, JSON included) and with the simulator's own scenario.

/// A seeded SplitMix64 for randomised test schedules (kill points); printed seeds replay them.
pub struct TestRng(u64);

impl TestRng {
    /// The seed from the environment variable `var` when set, else from the clock; printed
    /// either way so a failing schedule can be replayed.
    pub fn from_env(var: &str) -> Self {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("a clock after 1970")
                    .as_nanos() as u64
            });
        eprintln!("randomised schedule: seed {seed} (replay with {var}={seed})");
        TestRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// Sends `signal` to process `pid`.
#[cfg(unix)]
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory effects in this process.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// The string column `column` of a Parquet file, in row order (read with arrow's reader, so
/// the file must be complete, footer included).
pub fn parquet_strings(path: &std::path::Path, column: &str) -> Vec<Option<String>> {
    use arrow_array::Array as _;
    let f = std::fs::File::open(path).expect("parquet file opens");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap_or_else(|e| panic!("{} is not a complete parquet file: {e}", path.display()))
        .build()
        .expect("a reader");
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.expect("a record batch");
        let col = batch
            .column_by_name(column)
            .unwrap_or_else(|| panic!("{}: no column {column}", path.display()));
        let strings = col
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap_or_else(|| panic!("{}: {column} is not a string column", path.display()));
        for i in 0..strings.len() {
            out.push((!strings.is_null(i)).then(|| strings.value(i).to_string()));
        }
    }
    out
}

/// The `reference` column of a Parquet table as a sorted list (duplicates kept).
pub fn parquet_references(path: &std::path::Path) -> Vec<String> {
    let mut refs: Vec<String> = parquet_strings(path, "reference")
        .into_iter()
        .map(|r| r.expect("reference is never null"))
        .collect();
    refs.sort();
    refs
}

/// True when an archived JSON body equals the one served now, byte for byte, apart from the
/// value of the top-level `timestamp` (the simulator stamps each answer with the current time;
/// everything else it serves is deterministic).
pub fn same_json_but_timestamp(archived: &[u8], served: &[u8]) -> bool {
    let a: serde_json::Value = match serde_json::from_slice(archived) {
        Ok(v) => v,
        Err(_) => return false,
    };
    let s: serde_json::Value = serde_json::from_slice(served).expect("the simulator serves JSON");
    match (a.get("timestamp"), s.get("timestamp")) {
        (Some(serde_json::Value::String(ta)), Some(serde_json::Value::String(ts))) => {
            let served = String::from_utf8(served.to_vec()).expect("JSON is UTF-8");
            let restamped = served.replacen(
                &format!("\"timestamp\":\"{ts}\""),
                &format!("\"timestamp\":\"{ta}\""),
                1,
            );
            restamped.as_bytes() == archived
        }
        (None, None) => served == archived,
        _ => false,
    }
}

/// Checks one archive against the simulator that served it and the simulator's scenario:
/// provenance names `reference` and every API path is of `kind`'s family and this reference;
/// every entry is byte-identical to what the simulator serves for its path now (JSON apart from
/// its `timestamp`); images, liveness images and pages are archived under their classifier or
/// number, and exactly the ones the scenario has. Requests go to `api` (they appear in its log).
pub async fn assert_archive_as_served(
    api: &simulator::SimHandle,
    archive: &std::path::Path,
    reference: &str,
    kind: Kind,
) {
    let entries = zip_entries(archive);
    let provenance: serde_json::Value =
        serde_json::from_slice(&entries["provenance.json"]).expect("provenance.json parses");
    assert_eq!(
        provenance["reference"],
        reference,
        "{}: provenance names another reference",
        archive.display()
    );
    let prefix = format!(
        "/api/netverify/v2/{}/{reference}",
        simulator::data::family_segment(kind)
    );
    let recorded = provenance["entries"]
        .as_array()
        .expect("provenance entries");
    let mut names: std::collections::BTreeSet<&str> = recorded
        .iter()
        .map(|e| e["entry"].as_str().expect("entry name"))
        .collect();
    names.insert("provenance.json");
    names.insert("manifest-sha256.txt");
    assert_eq!(
        names,
        entries.keys().map(String::as_str).collect(),
        "{reference}: archive entries and provenance disagree"
    );
    let client = reqwest::Client::new();
    let (mut classifiers, mut liveness, mut pages) = (Vec::new(), Vec::new(), Vec::new());
    let mut original = false;
    for e in recorded {
        let name = e["entry"].as_str().expect("entry name");
        let api_path = e["api_path"].as_str().expect("api_path");
        let (path, _query) = api_path.split_once('?').unwrap_or((api_path, ""));
        assert!(
            path == prefix || path.starts_with(&format!("{prefix}/")),
            "{reference} ({kind}): {name} was fetched from {api_path}"
        );
        let tail = path[prefix.len()..].trim_start_matches('/');
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        // The entry name follows from the path: fixed names for JSON, the classifier or number
        // for files.
        let expected_stem = match tail.split('/').collect::<Vec<_>>().as_slice() {
            [""] => match kind {
                Kind::Authentication => "authentication".to_string(),
                _ => "status".to_string(),
            },
            ["data"] => "data".to_string(),
            ["images"] => "images".to_string(),
            ["pages"] => "pages".to_string(),
            ["original"] => {
                original = true;
                "original".to_string()
            }
            ["images", "liveness", n] => {
                liveness.push(n.parse::<u32>().expect("liveness number"));
                format!("images/liveness-{n}")
            }
            ["images", c] => {
                classifiers.push(c.to_string());
                format!("images/{c}")
            }
            ["pages", n] => {
                pages.push(n.to_string());
                format!("pages/{n}")
            }
            other => panic!("{reference}: unexpected API path {api_path} ({other:?})"),
        };
        assert_eq!(
            stem, expected_stem,
            "{reference}: {api_path} archived as {name}"
        );
        let served = client
            .get(format!("{}{api_path}", api.base_url()))
            .basic_auth(TOKEN, Some(SECRET))
            .header("User-Agent", "jumio-export tests")
            .send()
            .await
            .expect("the simulator answers");
        assert_eq!(served.status().as_u16(), 200, "{reference}: {api_path}");
        assert_eq!(e["http_status"], 200, "{reference}: {name}");
        let served = served.bytes().await.expect("a body");
        let archived = &entries[name];
        if name.ends_with(".json") {
            assert!(
                same_json_but_timestamp(archived, &served),
                "{reference}: {name} differs from what the simulator serves at {api_path}:\narchived {}\nserved   {}",
                String::from_utf8_lossy(archived),
                String::from_utf8_lossy(&served)
            );
        } else {
            assert!(
                archived.as_slice() == served.as_ref(),
                "{reference}: {name} differs from what the simulator serves at {api_path}"
            );
        }
    }
    // Exactly the files the simulator has for this transaction.
    let sc = simulator::scenario(SimOptions::default().seed, reference)
        .expect("a reference the simulator knows");
    let mut sc_liveness = sc.liveness.clone();
    sc_liveness.sort_unstable();
    liveness.sort_unstable();
    let mut sc_classifiers = sc.classifiers.clone();
    sc_classifiers.sort();
    let mut files: Vec<String> = match kind {
        Kind::Document => pages,
        _ => classifiers,
    };
    files.sort();
    assert_eq!(
        files, sc_classifiers,
        "{reference}: images or pages archived"
    );
    if kind != Kind::Document {
        assert_eq!(
            liveness, sc_liveness,
            "{reference}: liveness images archived"
        );
    }
    assert_eq!(
        original, sc.has_original,
        "{reference}: original.pdf archived"
    );
}

/// Checks every output beside the archives against the archives of `refs` under `out`, over
/// the dataset (the union of the parts its commits list): each kind table's Parquet and CSV
/// reference sets (every reference exactly once across all commits), the `files` table (Parquet
/// and CSV) entry by entry with its sha256, every commit's root hash over the archives it lists,
/// and `report.json`: the latest run's report (that commit's `report`), which ran over `refs`
/// and exported or found exported every one of them.
pub fn assert_tables_match_archives(out: &std::path::Path, refs: &[(String, Kind)]) {
    assert_dataset_matches_archives(out, refs);
    // report.json: the latest run's report, every reference of its input accounted for, and
    // the archive count and root hash of that run's commit.
    let report = latest_report(out);
    let latest = commits(out).pop().expect("a commit");
    assert_eq!(report["archives"], latest["archives"]["count"]);
    assert_eq!(report["root_hash"], latest["archives"]["root_hash"]);
    let o = &report["outcomes"];
    assert_eq!(
        o["exported"].as_u64().unwrap() + o["already_exported"].as_u64().unwrap(),
        refs.len() as u64,
        "report.json: {o}"
    );
    assert_eq!(o["failed"], 0, "report.json: {o}");
    assert_eq!(o["not_started"], 0, "report.json: {o}");
    assert_eq!(report["interrupted"], false);
}

// --- resume-ds helpers ---
// The dataset read by the test itself from `commits/*.json`: each commit with its parts checked
// against their records, the union of the rows the commits list, the archives each commit lists
// with its root hash, and the parts and archives that no commit lists.

/// Every commit record of the dataset, in the order the runs started, each checked to name the
/// run of its file name.
pub fn commits(out: &std::path::Path) -> Vec<serde_json::Value> {
    let paths: Vec<std::path::PathBuf> = match std::fs::read_dir(out.join("commits")) {
        Ok(l) => l
            .map(|e| e.expect("commits/ entry").path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                name.ends_with(".json") && !name.starts_with('.')
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut all: Vec<serde_json::Value> = paths
        .iter()
        .map(|p| {
            let c: serde_json::Value = serde_json::from_slice(&std::fs::read(p).expect("commit"))
                .unwrap_or_else(|e| panic!("{} is not a complete commit: {e}", p.display()));
            let run = p.file_stem().unwrap().to_str().unwrap();
            assert_eq!(c["run"], run, "{}: names another run", p.display());
            assert_eq!(c["format"], "jumio-export.commit/1", "{}", p.display());
            c
        })
        .collect();
    // Run ids sort by start time (to the millisecond, then a random suffix); the report's start
    // time orders them the same way, and is what a reader of the commits would use.
    all.sort_by_key(|c| {
        (
            c["report"]["started_at"].as_str().unwrap_or("").to_string(),
            c["run"].as_str().unwrap_or("").to_string(),
        )
    });
    all
}

/// The parts of `table` in `format` that one commit lists.
pub fn parts_of(
    out: &std::path::Path,
    commit: &serde_json::Value,
    table: &str,
    format: &str,
) -> Vec<std::path::PathBuf> {
    commit["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .filter(|p| p["table"] == table && p["format"] == format)
        .map(|p| out.join(p["path"].as_str().expect("path")))
        .collect()
}

/// Every part every commit lists is complete: its size and sha256 are the ones the commit
/// recorded, it reads to the end (Parquet with its footer, CSV to its last line) with the
/// recorded number of rows, and every row's `run` is the commit's run.
pub fn assert_committed_parts_complete(out: &std::path::Path) {
    for c in commits(out) {
        let run = c["run"].as_str().unwrap().to_string();
        for p in c["parts"].as_array().expect("parts") {
            let path = out.join(p["path"].as_str().unwrap());
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{run} lists {}, which is gone: {e}", path.display()));
            assert_eq!(p["bytes"], bytes.len() as u64, "{}: size", path.display());
            assert_eq!(
                p["sha256"],
                sha256_hex(&bytes),
                "{}: sha256",
                path.display()
            );
            let runs: Vec<String> = if p["format"] == "parquet" {
                parquet_strings(&path, "run")
                    .into_iter()
                    .map(|r| r.expect("run is never null"))
                    .collect()
            } else {
                assert!(
                    bytes.is_empty() || bytes.ends_with(b"\n"),
                    "{} does not end with a complete line",
                    path.display()
                );
                csv_table(&path)
                    .1
                    .iter()
                    .map(|r| r["run"].clone())
                    .collect()
            };
            assert_eq!(p["rows"], runs.len() as u64, "{}: rows", path.display());
            assert!(
                runs.iter().all(|r| *r == run),
                "{}: a row of another run",
                path.display()
            );
        }
    }
}

/// The references of a kind table over the dataset's commits, sorted, duplicates kept; the
/// Parquet and the CSV parts must list the same.
pub fn dataset_references(out: &std::path::Path, kind: Kind) -> Vec<String> {
    let table = kind.table_name();
    let mut parquet: Vec<String> = dataset_parquet_strings(out, table, "reference")
        .into_iter()
        .map(|r| r.expect("reference is never null"))
        .collect();
    parquet.sort();
    let mut csv: Vec<String> = dataset_csv(out, table)
        .1
        .iter()
        .map(|r| r["reference"].clone())
        .collect();
    csv.sort();
    assert_eq!(parquet, csv, "{table}: the Parquet and CSV parts disagree");
    parquet
}

/// (reference, kind) of every row of the kind tables over the dataset's commits, sorted,
/// duplicates kept.
pub fn dataset_exported(out: &std::path::Path) -> Vec<(String, Kind)> {
    let mut v: Vec<(String, Kind)> = Kind::ALL
        .into_iter()
        .flat_map(|k| dataset_references(out, k).into_iter().map(move |r| (r, k)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.table_name().cmp(b.1.table_name())));
    v
}

/// The `report` of the dataset's latest commit, which `report.json` must equal.
pub fn latest_report(out: &std::path::Path) -> serde_json::Value {
    let all = commits(out);
    let latest = all.last().expect("at least one commit");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("report.json")).expect("report.json written"),
    )
    .expect("report.json parses");
    assert_eq!(
        report, latest["report"],
        "report.json is not the latest run's report ({})",
        latest["run"]
    );
    report
}

/// The dataset against the archives of `exported` under `out`: every committed part complete;
/// each kind table lists exactly `exported` of its kind, each once across all commits (Parquet
/// and CSV), with the archive's path and sha256; the `files` table (Parquet and CSV) holds one
/// row per archived entry with the entry's sha256; each commit's archive count and root hash are
/// those of the archives its rows name.
pub fn assert_dataset_matches_archives(out: &std::path::Path, exported: &[(String, Kind)]) {
    use std::collections::BTreeMap;
    assert_committed_parts_complete(out);
    for kind in Kind::ALL {
        let mut expected: Vec<String> = exported
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(r, _)| r.clone())
            .collect();
        expected.sort();
        assert_eq!(
            dataset_references(out, kind),
            expected,
            "{}: every exported reference exactly once across the commits",
            kind.table_name()
        );
    }
    let mut sha_of = BTreeMap::new();
    for (r, _) in exported {
        let path = out.join(format!("archives/{r}.zip"));
        sha_of.insert(
            r.clone(),
            sha256_hex(&std::fs::read(&path).expect("archive readable")),
        );
    }
    // files: one row per archived entry, with the entry's own hash, once across the commits.
    assert_files_table_matches_archives(out, exported);
    // Each commit: the archives its rows name, with their sha256, and its root hash over them.
    for c in commits(out) {
        let mut lines = Vec::new();
        for kind in Kind::ALL {
            for part in parts_of(out, &c, kind.table_name(), "csv") {
                for row in csv_table(&part).1 {
                    let r = &row["reference"];
                    assert_eq!(row["archive"], format!("archives/{r}.zip"));
                    assert_eq!(
                        Some(&row["archive_sha256"]),
                        sha_of.get(r),
                        "{r}: archive_sha256 in {}",
                        c["run"]
                    );
                    lines.push(format!("{r}  {}\n", row["archive_sha256"]));
                }
            }
        }
        lines.sort();
        assert_eq!(
            c["archives"]["count"],
            lines.len() as u64,
            "{}: archives listed",
            c["run"]
        );
        assert_eq!(
            c["archives"]["root_hash"],
            sha256_hex(lines.concat().as_bytes()),
            "{}: root hash over the archives it lists",
            c["run"]
        );
    }
}

/// Files under `tables/` that no commit lists (temporaries included): not part of the dataset.
pub fn uncommitted_parts(out: &std::path::Path) -> Vec<String> {
    let listed: std::collections::BTreeSet<String> = commits(out)
        .iter()
        .flat_map(|c| {
            c["parts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["path"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut v = Vec::new();
    for table in [
        "netverify",
        "documents",
        "authentications",
        "files",
        "failures",
    ] {
        let Ok(rd) = std::fs::read_dir(out.join("tables").join(table)) else {
            continue;
        };
        for e in rd {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let rel = format!("tables/{table}/{name}");
            if !listed.contains(&rel) {
                v.push(rel);
            }
        }
    }
    v.sort();
    v
}

/// Every row of every table of the dataset (CSV parts of every commit), per table, sorted: two
/// equal snapshots are the same dataset.
pub fn dataset_snapshot(
    out: &std::path::Path,
) -> std::collections::BTreeMap<String, Vec<Vec<String>>> {
    [
        "netverify",
        "documents",
        "authentications",
        "files",
        "failures",
    ]
    .iter()
    .map(|t| {
        let (header, rows) = dataset_csv(out, t);
        let mut rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| header.iter().map(|h| r[h].clone()).collect())
            .collect();
        rows.sort();
        (t.to_string(), rows)
    })
    .collect()
}

/// Holds `runs/{run}.lock` with an OS lock, as a live run does, until dropped (the file is then
/// unlocked and removed).
pub struct LiveRunLock {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl LiveRunLock {
    /// Takes the lock of `run` in the dataset `out` (creating `runs/`).
    pub fn hold(out: &std::path::Path, run: &str) -> Self {
        std::fs::create_dir_all(out.join("runs")).expect("runs/ created");
        let path = out.join("runs").join(format!("{run}.lock"));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .expect("a fresh lock file");
        file.try_lock().expect("the lock is free");
        LiveRunLock { file, path }
    }
}

impl Drop for LiveRunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

// --- migrate helpers ---
// The dataset's commits in commit order, its report and its open follow-ups (`failures.csv`),
// read by the tests themselves.

/// The run ids of the dataset's commits, in commit order.
pub fn commit_runs(out: &std::path::Path) -> Vec<String> {
    commits(out)
        .iter()
        .map(|c| c["run"].as_str().expect("run").to_string())
        .collect()
}

/// `report.json` of the dataset (the latest run's report), parsed; panics when absent.
pub fn report_json(out: &std::path::Path) -> serde_json::Value {
    let path = out.join("report.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("report.json parses")
}

/// `failures.csv` at the top of the dataset (its open follow-ups): header and rows; panics
/// when absent (every finished run writes it, empty or not).
pub fn open_follow_ups(
    out: &std::path::Path,
) -> (Vec<String>, Vec<std::collections::BTreeMap<String, String>>) {
    let path = out.join("failures.csv");
    assert!(path.is_file(), "{} missing", path.display());
    csv_table(&path)
}

/// The column names of `table` in the committed golden schema `tests/schemas/{table}.txt`, in
/// order (the reference the Parquet schema is checked against in tests/flatten.rs).
pub fn committed_columns(table: &str) -> Vec<String> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/schemas/{table}.txt"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split('\t').next().expect("a column name").to_string())
        .collect()
}

/// The dataset's five tables.
pub const TABLES: [&str; 5] = [
    "netverify",
    "documents",
    "authentications",
    "files",
    "failures",
];
