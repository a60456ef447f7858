//! Credentials never reach logs, errors, reports, tables or archives: a run with canary
//! credentials and `RUST_LOG=trace`, then every byte it produced is searched.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use base64::Engine;
use jumio_export::simulator::SimOptions;

use crate::support::{BlockingSim, job_files};

const TOKEN: &str = "canary-token-7f3a9c1e";
const SECRET: &str = "canary-secret-b52d80e4";
/// The secret of the run the API refuses: sent too, so a canary as well.
const WRONG_SECRET: &str = "canary-wrong-secret-91c4e7aa";
/// The archive key, in the environment of every command.
const KEY: &str = "canary-archive-key-3e8d1f07c6a2";
/// The HMAC key of `pii = "pseudonymised"` (the encrypted runs), in every command's environment.
const PII_KEY: &str = "canary-pii-key-0c7b2e95d4";
/// The commit-signing key (`[output] signing_key_env`), in the environment of every command: a
/// throw-away key made for this test.
const SIGNING_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAfhhlNFPFRPvVX+GtqZqRqjWjSC28ynkjWvEi1+pQ1sAAAAJjaEGRA2hBk
QAAAAAtzc2gtZWQyNTUxOQAAACAfhhlNFPFRPvVX+GtqZqRqjWjSC28ynkjWvEi1+pQ1sA
AAAEByzmvkhn5xwmVJpwjNnDrMzj3ys1nnUzaZGmcGt4mRTh+GGU0U8VE+9Vf4a2pmpGqN
aNILbzKeSNa8SLX6lDWwAAAAEWNhbmFyeS1jb21taXQta2V5AQIDBA==
-----END OPENSSH PRIVATE KEY-----";
/// An age identity (`verify --age-identity-env`), in the environment of every command, and the
/// recipient the age run encrypts to: a throw-away key made by `age-keygen` for this test.
const AGE_IDENTITY: &str =
    "AGE-SECRET-KEY-1CXXQR2SNVC9FRA0EF0ZVJ65HWXTK32DWWAJW7NVG4HMYZYRXX2MQRDM4P0";
const AGE_RECIPIENT: &str = "age1z5r7rratpyxwh5pcc35magvp3q35zas99c3snxh20c67glwzpgnsgvj2ax";
/// The bucket's credentials (`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) of the bucket runs.
const AWS_SECRET: &str = "canary-aws-secret-6d0e2b71f9";
const AWS_TOKEN: &str = "canary-aws-session-token-0c7a5e";

/// Every string that must not appear: each credential, the Basic encoding of every pair actually
/// sent (the simulator's, the refused one, the pair the demo's own simulator uses), and the key.
fn needles() -> Vec<(String, Vec<u8>)> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let demo = SimOptions::default();
    let mut v: Vec<(String, String)> = vec![
        ("token".into(), TOKEN.into()),
        ("secret".into(), SECRET.into()),
        ("refused secret".into(), WRONG_SECRET.into()),
        ("archive key".into(), KEY.into()),
        ("AWS secret access key".into(), AWS_SECRET.into()),
        ("AWS session token".into(), AWS_TOKEN.into()),
        ("secret in base64".into(), b64(SECRET)),
        ("archive key in base64".into(), b64(KEY)),
        ("pseudonymisation key".into(), PII_KEY.into()),
        ("pseudonymisation key in base64".into(), b64(PII_KEY)),
        ("age identity".into(), AGE_IDENTITY.into()),
        (
            "age identity, lowercase".into(),
            AGE_IDENTITY.to_lowercase(),
        ),
        (
            "age identity's key part".into(),
            AGE_IDENTITY["AGE-SECRET-KEY-1".len()..].into(),
        ),
    ];
    // Every line of the signing key's body (its private half spans the middle ones).
    for (i, line) in SIGNING_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .enumerate()
    {
        v.push((format!("signing key line {}", i + 1), line.into()));
    }
    for (user, password) in [
        (TOKEN, SECRET),
        (TOKEN, WRONG_SECRET),
        (demo.token.as_str(), demo.secret.as_str()),
    ] {
        v.push((
            format!("Basic encoding of {user}:{password}"),
            b64(&format!("{user}:{password}")),
        ));
    }
    v.into_iter().map(|(n, s)| (n, s.into_bytes())).collect()
}

fn assert_clean(what: &str, bytes: &[u8]) {
    for (name, needle) in needles() {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
            "the {name} appears in {what}"
        );
    }
}

/// What was searched, so a scan that silently reads nothing fails.
#[derive(Default, Debug)]
struct Searched {
    files: usize,
    archives: usize,
    encrypted_entries: usize,
    /// Age archives opened with the identity and searched.
    age_archives: usize,
    plain_entries: usize,
    parquet_files: usize,
    parquet_text_cells: usize,
    csv_files: usize,
    csv_cells: usize,
    log_lines: usize,
}

/// Every text cell of an Arrow array (lists and structs opened); types that cannot hold text are
/// passed over, any other type fails the test so nothing goes unsearched.
fn text_cells(what: &str, a: &dyn Array, n: &mut usize) {
    let mut check = |bytes: &[u8]| {
        assert_clean(what, bytes);
        *n += 1;
    };
    match a.data_type() {
        DataType::Utf8 => a
            .as_string::<i32>()
            .iter()
            .flatten()
            .for_each(|v| check(v.as_bytes())),
        DataType::LargeUtf8 => a
            .as_string::<i64>()
            .iter()
            .flatten()
            .for_each(|v| check(v.as_bytes())),
        DataType::Utf8View => a
            .as_string_view()
            .iter()
            .flatten()
            .for_each(|v| check(v.as_bytes())),
        DataType::Binary => a.as_binary::<i32>().iter().flatten().for_each(check),
        DataType::LargeBinary => a.as_binary::<i64>().iter().flatten().for_each(check),
        DataType::List(_) => text_cells(what, a.as_list::<i32>().values().as_ref(), n),
        DataType::LargeList(_) => text_cells(what, a.as_list::<i64>().values().as_ref(), n),
        DataType::Struct(_) => {
            for c in a.as_struct().columns() {
                text_cells(what, c.as_ref(), n);
            }
        }
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..) => {}
        other => panic!("{what}: column type {other} is not searched"),
    }
}

/// A Parquet file decoded with the arrow reader, every text cell searched (the raw file is
/// compressed and dictionary-encoded: a byte search of it proves nothing).
fn scan_parquet(path: &Path, searched: &mut Searched) {
    let f = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .build()
        .unwrap();
    for batch in reader {
        let batch = batch.unwrap();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let what = format!("{} column {}", path.display(), field.name());
            assert_clean(&what, field.name().as_bytes());
            text_cells(&what, column.as_ref(), &mut searched.parquet_text_cells);
        }
    }
    searched.parquet_files += 1;
}

/// A CSV table read cell by cell (besides the byte search every file gets).
fn scan_csv(path: &Path, searched: &mut Searched) {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .unwrap();
    for (i, rec) in r.byte_records().enumerate() {
        for cell in rec.unwrap().iter() {
            assert_clean(&format!("{} record {i}", path.display()), cell);
            searched.csv_cells += 1;
        }
    }
    searched.csv_files += 1;
}

/// Every entry of an archive, decrypted with the key where encrypted, and its entry names and
/// comment.
fn scan_zip(path: &Path, searched: &mut Searched) {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    assert_clean(&format!("{} comment", path.display()), z.comment());
    for i in 0..z.len() {
        let (name, encrypted) = {
            let raw = z.by_index_raw(i).unwrap();
            (raw.name().unwrap().to_string(), raw.encrypted())
        };
        let what = format!("{}:{name}", path.display());
        assert_clean(&what, name.as_bytes());
        let mut buf = Vec::new();
        if encrypted {
            z.by_index_decrypt(i, KEY.as_bytes())
                .unwrap_or_else(|e| panic!("{what} does not open with the key: {e}"))
                .read_to_end(&mut buf)
                .unwrap();
            searched.encrypted_entries += 1;
        } else {
            z.by_index(i).unwrap().read_to_end(&mut buf).unwrap();
            searched.plain_entries += 1;
        }
        assert_clean(&what, &buf);
    }
    searched.archives += 1;
}

/// Every file under `dir`: its bytes, and decoded where the bytes are not the content.
fn scan_dir(dir: &Path, searched: &mut Searched) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        assert_clean("a file name", path.as_os_str().as_encoded_bytes());
        if path.is_dir() {
            scan_dir(&path, searched);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_clean(&path.display().to_string(), &bytes);
        searched.files += 1;
        match path.extension().and_then(|e| e.to_str()) {
            Some("zip") => scan_zip(&path, searched),
            Some("age") => {
                // Opened with the identity, then searched like any archive.
                let ids =
                    jumio_export::output::archive::AgeIdentities::parse(AGE_IDENTITY).unwrap();
                let plain = tempfile::tempdir().unwrap();
                let zip = plain.path().join("opened.zip");
                ids.decrypt_file(&path, &zip, Default::default())
                    .unwrap_or_else(|e| {
                        panic!("{} does not open with the identity: {e}", path.display())
                    });
                scan_zip(&zip, searched);
                searched.age_archives += 1;
            }
            Some("parquet") => scan_parquet(&path, searched),
            Some("csv") => scan_csv(&path, searched),
            _ => {}
        }
    }
}

/// stdout and stderr of a command, line by line.
fn scan_output(what: &str, o: &Output, searched: &mut Searched) {
    for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            assert_clean(&format!("{what} {stream} line {}", i + 1), line);
            searched.log_lines += 1;
        }
    }
}

/// Runs and checks, with RUST_LOG=trace: `run` (plain and encrypted archives), `run` with a
/// refused secret, `verify` with and without the key, `plan` and `demo`; then every byte
/// they left on disk, the simulator's request log included.
#[test]
fn canary_credentials_appear_nowhere_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let request_log = dir.path().join("simulator-requests.jsonl");
    let opts = SimOptions {
        token: TOKEN.into(),
        secret: SECRET.into(),
        request_log: Some(request_log.clone()),
        ..SimOptions::default()
    };
    let sim = BlockingSim::start(opts);
    let api = sim.api();
    let job_text = "[api]\nregion = \"us\"\nuser_agent = \"secrets-test/1\"\n[limits]\nrequests_per_second = 300.0\nmax_retries = 1\ntimeout_seconds = 5\n[polling]\nschedule_seconds = [0.05]\n";
    let (job, refs) = job_files(
        dir.path(),
        job_text,
        "refs.csv",
        "reference,kind\nok-n1,netverify\nok-d1,document\nok-a1,authentication\nnf-n1,netverify\npf-n1,netverify\nfh-n1,netverify\nfail-n1,netverify\nbad/ref,netverify\n",
    );
    let age_job = dir.path().join("age.toml");
    std::fs::write(
        &age_job,
        format!("{job_text}[output]\nage_recipients = [\"{AGE_RECIPIENT}\"]\n"),
    )
    .unwrap();
    let encrypted_job = dir.path().join("encrypted.toml");
    std::fs::write(
        &encrypted_job,
        format!(
            "{job_text}[output]\nencrypt_archives = true\narchive_key_env = \"TEST_ARCHIVE_KEY\"\n\
             signing_key_env = \"TEST_COMMIT_KEY\"\npii = \"pseudonymised\"\n\
             pii_key_env = \"TEST_PII_KEY\"\n"
        ),
    )
    .unwrap();
    // Every credential and key in every command's environment, at the most verbose level.
    let command = |secret: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jumio-export"));
        c.env("JUMIO_API_TOKEN", TOKEN)
            .env("JUMIO_API_SECRET", secret)
            .env("TEST_ARCHIVE_KEY", KEY)
            .env("JUMIO_EXPORT_ARCHIVE_KEY", KEY)
            .env("TEST_COMMIT_KEY", SIGNING_KEY)
            .env("TEST_PII_KEY", PII_KEY)
            .env("TEST_AGE_IDENTITY", AGE_IDENTITY)
            .env("RUST_LOG", "trace");
        c
    };
    let run = |job: &Path, out: &Path, secret: &str| {
        command(secret)
            .arg("run")
            .arg(job)
            .arg("--input")
            .arg(&refs)
            .arg("--out")
            .arg(out)
            .args(["--base-url", &api.base_url()])
            .output()
            .unwrap()
    };
    let mut searched = Searched::default();
    let plain = dir.path().join("out-plain");
    let encrypted = dir.path().join("out-encrypted");
    let refused = dir.path().join("out-refused");
    let sealed = dir.path().join("out-age");
    let demo = dir.path().join("out-demo");
    // (what, output, expected exit code)
    let mut commands: Vec<(String, Output, i32)> = vec![
        ("run".into(), run(&job, &plain, SECRET), 1),
        (
            "run with encrypted archives".into(),
            run(&encrypted_job, &encrypted, SECRET),
            1,
        ),
        (
            "run with age archives".into(),
            run(&age_job, &sealed, SECRET),
            1,
        ),
    ];
    let before_refusal = api.requests().len();
    commands.push((
        "run with a refused secret".into(),
        run(&encrypted_job, &refused, WRONG_SECRET),
        3,
    ));
    // The refused pair was really sent.
    assert!(
        api.requests()[before_refusal..]
            .iter()
            .any(|r| r.status == 401 || r.status == 403),
        "the refused secret never reached the simulator"
    );
    for out in [&plain, &encrypted] {
        let o = command(SECRET).arg("verify").arg(out).output().unwrap();
        commands.push((format!("verify {}", out.display()), o, 0));
    }
    let o = command(SECRET)
        .arg("verify")
        .arg(&encrypted)
        .env_remove("JUMIO_EXPORT_ARCHIVE_KEY")
        .output()
        .unwrap();
    commands.push(("verify without the key".into(), o, 1));
    let o = command(SECRET)
        .arg("verify")
        .arg(&sealed)
        .args(["--age-identity-env", "TEST_AGE_IDENTITY"])
        .output()
        .unwrap();
    commands.push(("verify with the age identity".into(), o, 0));
    let o = command(SECRET)
        .arg("verify")
        .arg(&sealed)
        .args(["--age-identity-env", "TEST_PII_KEY"])
        .output()
        .unwrap();
    commands.push((
        "verify with a variable that is no age identity".into(),
        o,
        2,
    ));
    let o = command(SECRET)
        .arg("plan")
        .arg(&encrypted_job)
        .arg("--input")
        .arg(&refs)
        .args(["--base-url", &api.base_url()])
        .output()
        .unwrap();
    commands.push(("plan".into(), o, 0));
    let o = command(SECRET)
        .args(["demo", "--count", "5", "--out"])
        .arg(&demo)
        .output()
        .unwrap();
    commands.push(("demo".into(), o, 0));

    for (what, o, expected) in &commands {
        assert_eq!(
            o.status.code(),
            Some(*expected),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        scan_output(what, o, &mut searched);
    }
    for (what, o, _) in &commands {
        if what.starts_with("run") || what == "demo" {
            assert!(
                o.stderr.len() > 1000,
                "{what}: trace logging produced little output: is RUST_LOG honoured?"
            );
        }
    }
    // The simulator's own request log is a log too.
    scan_dir(dir.path(), &mut searched);
    let logged = std::fs::read_to_string(&request_log).unwrap();
    assert!(
        logged.lines().count() > 10,
        "the request log holds requests"
    );
    searched.log_lines += logged.lines().count();

    // Everything was searched: a scan that read nothing would pass vacuously.
    let s = &searched;
    eprintln!("searched: {s:?}");
    assert!(s.files > 40, "{s:?}");
    assert!(s.archives >= 10, "{s:?}");
    assert!(s.encrypted_entries > 10 && s.plain_entries > 10, "{s:?}");
    assert!(s.age_archives >= 3, "{s:?}");
    // Four datasets (plain, encrypted, refused, demo), each of one commit with a part of every
    // table in both formats, and a failures.csv.
    assert!(
        s.parquet_files >= 4 * 5 && s.parquet_text_cells > 100,
        "{s:?}"
    );
    assert!(s.csv_files >= 4 * (5 + 1) && s.csv_cells > 100, "{s:?}");
    assert!(s.log_lines > 500, "{s:?}");
    for out in [&plain, &encrypted, &refused, &demo, &sealed] {
        assert!(out.join("report.json").exists(), "{}", out.display());
        assert_eq!(
            crate::support::commit_runs(out).len(),
            1,
            "{}: one commit, scanned with the rest",
            out.display()
        );
    }
    // The signing key was used: the encrypted runs' commits are signed; and the HMAC key: their
    // tables are pseudonymised.
    for out in [&encrypted, &refused] {
        let run = &crate::support::commit_runs(out)[0];
        assert!(
            out.join(format!("commits/{run}.json.sig")).exists(),
            "{}",
            out.display()
        );
        assert_eq!(
            crate::support::commits(out)[0]["output"]["pii"],
            "pseudonymised",
            "{}",
            out.display()
        );
    }
    // The simulator did see the credentials: the test would notice a leak.
    assert!(api.requests().iter().any(|r| r.status == 200));
}

#[cfg(unix)]
fn modes(dir: &Path, files: &mut Vec<(String, u32)>, dirs: &mut Vec<(String, u32)>) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            dirs.push((path.display().to_string(), mode));
            modes(&path, files, dirs);
        } else {
            files.push((path.display().to_string(), mode));
        }
    }
}

/// Personal data at rest: with a wide-open umask, every file is still 0600 and every directory
/// 0700; a job file can choose other modes, which are then applied exactly.
#[cfg(unix)]
#[test]
fn output_is_private_whatever_the_umask_and_modes_are_configurable() {
    use std::os::unix::fs::PermissionsExt;
    let sim = BlockingSim::start(SimOptions::default());
    let api = sim.api();
    let dir = tempfile::tempdir().unwrap();
    let refs = dir.path().join("refs.csv");
    std::fs::write(
        &refs,
        "reference,kind\nok-n1,netverify\nok-d1,document\nok-a1,authentication\nnf-n1,netverify\n",
    )
    .unwrap();
    for (extra, file_mode, dir_mode) in [
        ("", 0o600, 0o700),
        (
            "[output]\nfile_mode = \"0640\"\ndir_mode = \"0750\"\n",
            0o640,
            0o750,
        ),
    ] {
        let job = dir.path().join("job.toml");
        std::fs::write(
            &job,
            format!("[api]\nregion = \"us\"\nuser_agent = \"modes-test/1\"\n[polling]\nschedule_seconds = [0.05]\n{extra}"),
        )
        .unwrap();
        let out = dir.path().join(format!("out-{file_mode:o}"));
        let cmd = format!(
            "umask 000; exec '{}' run '{}' --input '{}' --out '{}' --base-url {} --quiet",
            env!("CARGO_BIN_EXE_jumio-export"),
            job.display(),
            refs.display(),
            out.display(),
            api.base_url()
        );
        let o = Command::new("sh")
            .args(["-c", &cmd])
            .env("JUMIO_API_TOKEN", "demo-token")
            .env("JUMIO_API_SECRET", "demo-secret")
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        modes(&out, &mut files, &mut dirs);
        assert!(files.len() > 10);
        for (path, mode) in files {
            assert_eq!(mode, file_mode, "{path} has mode {mode:o}");
        }
        for (path, mode) in dirs {
            assert_eq!(mode, dir_mode, "{path} has mode {mode:o}");
        }
        let top = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(top, dir_mode, "the output directory itself");
    }
}

/// `encrypt_archives = true`: every entry is AES-256 encrypted under the key from the
/// environment; 7-Zip opens them with the key and not without; verify works with the key and
/// resume adds a commit without fetching again; the key appears in no log or output file.
#[test]
fn encrypted_archives_open_only_with_the_key() {
    const KEY: &str = "archive-key-canary-0123456789";
    let sim = BlockingSim::start(SimOptions::default());
    let api = sim.api();
    let dir = tempfile::tempdir().unwrap();
    let (job, refs) = job_files(
        dir.path(),
        "[api]\nregion = \"us\"\nuser_agent = \"enc-test/1\"\n[polling]\nschedule_seconds = [0.05]\n[output]\nencrypt_archives = true\narchive_key_env = \"TEST_ARCHIVE_KEY\"\n",
        "refs.csv",
        "reference,kind\nok-n1,netverify\nok-d1,document\nok-a1,authentication\n",
    );
    let out = dir.path().join("out");
    let run = |key: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jumio-export"));
        c.arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&refs)
            .arg("--out")
            .arg(&out)
            .args(["--base-url", &api.base_url()])
            .env("JUMIO_API_TOKEN", "demo-token")
            .env("JUMIO_API_SECRET", "demo-secret")
            .env("RUST_LOG", "debug")
            .env_remove("TEST_ARCHIVE_KEY");
        if let Some(k) = key {
            c.env("TEST_ARCHIVE_KEY", k);
        }
        c.output().unwrap()
    };
    let missing = run(None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("TEST_ARCHIVE_KEY"));
    let o = run(Some(KEY));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let key_needle = KEY.as_bytes();
    for stream in [&o.stdout, &o.stderr] {
        assert!(
            !stream.windows(key_needle.len()).any(|w| w == key_needle),
            "the archive key was logged"
        );
    }
    let archive = out.join("archives/ok-n1.zip");
    let bytes = std::fs::read(&archive).unwrap();
    assert!(!bytes.windows(key_needle.len()).any(|w| w == key_needle));
    let mut z = zip::ZipArchive::new(std::fs::File::open(&archive).unwrap()).unwrap();
    for i in 0..z.len() {
        let name = z.by_index_raw(i).unwrap().name().unwrap().to_string();
        assert!(
            z.by_index_raw(i).unwrap().encrypted(),
            "{name} is not encrypted"
        );
        assert!(z.by_index(i).is_err(), "{name} opened without the key");
        let mut f = z.by_index_decrypt(i, KEY.as_bytes()).unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        assert!(!buf.is_empty(), "{name}");
    }
    if let Some(seven_zip) = crate::peers::require("7z") {
        let ok = Command::new(&seven_zip)
            .args(["t", &format!("-p{KEY}")])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "7z t with the key: {}",
            String::from_utf8_lossy(&ok.stdout)
        );
        let bad = Command::new(&seven_zip)
            .args(["t", "-pwrong-key-wrong-key"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(
            !bad.status.success(),
            "7z opened an encrypted archive with the wrong key"
        );
    }
    // verify needs the key; resume with the key fetches nothing again.
    let verify = |key: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jumio-export"));
        c.arg("verify")
            .arg(&out)
            .env_remove("JUMIO_EXPORT_ARCHIVE_KEY");
        if let Some(k) = key {
            c.env("JUMIO_EXPORT_ARCHIVE_KEY", k);
        }
        c.output().unwrap()
    };
    let v = verify(Some(KEY));
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    assert_eq!(
        verify(None).status.code(),
        Some(1),
        "verify without the key cannot vouch for the archives"
    );
    let n = api.requests().len();
    let again = run(Some(KEY));
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        api.requests().len(),
        n,
        "resume with the key fetches nothing its commit exported"
    );
    assert_eq!(
        crate::support::commit_runs(&out).len(),
        2,
        "the resume adds a commit"
    );
    assert_eq!(
        crate::support::report_json(&out)["outcomes"]["already_exported"],
        3
    );
}

/// `unmasked_card_images = true` brings the export into PCI DSS scope: the run says so at start.
#[test]
fn unmasked_card_images_log_a_pci_dss_warning() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[api]\nregion = \"us\"\nuser_agent = \"pci-test/1\"\nnetverify_url = \"http://127.0.0.1:9\"\nretrieval_url = \"http://127.0.0.1:9\"\n[limits]\nmax_retries = 0\ntimeout_seconds = 2\n[fetch]\nunmasked_card_images = true\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("refs.txt"), "").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_jumio-export"))
        .arg("run")
        .arg(&job)
        .arg("--input")
        .arg(dir.path().join("refs.txt"))
        .arg("--out")
        .arg(dir.path().join("out"))
        .env("JUMIO_API_TOKEN", "t")
        .env("JUMIO_API_SECRET", "s")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("PCI DSS"), "no PCI DSS warning: {err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
}

/// `load` at trace level never shows the PostgreSQL password: not the real one (in the URL, in
/// `PGPASSWORD`, in a password file), not a refused one, not one sent to a port where nothing
/// listens; the connection is still named by host and port.
#[test]
fn the_postgres_password_appears_nowhere_in_load_output() {
    use crate::peers::PgServer;
    let Some(server) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    let demo = Command::new(env!("CARGO_BIN_EXE_jumio-export"))
        .args(["demo", "--count", "8", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(matches!(demo.status.code(), Some(0 | 1)));
    let refused = "canary-refused-pg-password-83b1";
    let password = PgServer::PASSWORD;
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("*:*:*:*:{password}\n")).unwrap();
    std::fs::set_permissions(
        &pgpass,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{}", server.port);
    let with = |user_info: &str, db: &str| format!("postgresql://{user_info}@{host}/{db}");
    /// What the case is, the URL, extra environment, the expected exit code.
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, i32);
    let cases: Vec<Case> = vec![
        (
            "password in the URL",
            with(&format!("jumio:{password}"), &server.create_database("url")),
            vec![],
            0,
        ),
        (
            "PGPASSWORD",
            with("jumio", &server.create_database("env")),
            vec![("PGPASSWORD", password)],
            0,
        ),
        (
            "password file",
            with("jumio", &server.create_database("file")),
            vec![("PGPASSFILE", pgpass.to_str().unwrap())],
            0,
        ),
        (
            "refused password",
            with(&format!("jumio:{refused}"), "postgres"),
            vec![],
            3,
        ),
        (
            "refused PGPASSWORD",
            with("jumio", "postgres"),
            vec![("PGPASSWORD", refused)],
            3,
        ),
        (
            "unreachable",
            format!("postgresql://jumio:{refused}@127.0.0.1:{free}/postgres"),
            vec![],
            3,
        ),
    ];
    for (what, url, env, code) in cases {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jumio-export"));
        c.arg("load")
            .arg(&out)
            .arg("--postgres")
            .arg(&url)
            .env("RUST_LOG", "trace")
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", dir.path().join("none"));
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.status.code(), Some(code), "{what}: {all}");
        for secret in [password, refused] {
            assert!(!all.contains(secret), "{what}: the password in {all}");
        }
        assert!(
            all.contains("127.0.0.1:"),
            "{what}: the host is not named: {all}"
        );
    }
}

/// A bucket run with canary AWS credentials at trace level: refused by the store (moto checking
/// signatures), then accepted (moto without checks) with `verify s3://…` after it; every line
/// they printed and every object of the bucket is searched for the secret and the session token.
#[test]
fn canary_bucket_credentials_appear_nowhere_even_at_trace_level() {
    use crate::peers::{S3Kind, S3Server};
    let sim = BlockingSim::start(SimOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let job_text = "[api]\nregion = \"us\"\nuser_agent = \"secrets-test/1\"\n[limits]\nrequests_per_second = 300.0\nmax_retries = 1\ntimeout_seconds = 5\n[polling]\nschedule_seconds = [0.05]\n[output]\nallow_http = true\n";
    let refs: String = crate::support::exportable(3)
        .iter()
        .map(|(r, k)| format!("{r},{k}\n"))
        .collect();
    let (job, refs) = job_files(
        dir.path(),
        job_text,
        "refs.csv",
        &format!("reference,kind\n{refs}"),
    );
    let mut searched = Searched::default();
    let with_canary = |c: &mut Command, server: &S3Server| {
        c.envs(server.env())
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
            .env("AWS_SESSION_TOKEN", AWS_TOKEN)
            .env("RUST_LOG", "trace")
            .env("JUMIO_EXPORT_STORE_RETRIES", "1");
    };
    let run = |server: &S3Server, url: &str| {
        let mut c = crate::support::bin();
        c.arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&refs)
            .arg("--out")
            .arg(url)
            .args(["--base-url", &sim.api().base_url()]);
        with_canary(&mut c, server);
        c.output().unwrap()
    };
    // Refused: moto checks signatures after the bucket's creation.
    let Some(refusing) = S3Server::start_with(
        S3Kind::Moto,
        "canary",
        &[("INITIAL_NO_AUTH_ACTION_COUNT", "1")],
    ) else {
        return;
    };
    let o = run(&refusing, "s3://canary/refused");
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    scan_output(
        "run into a bucket that refuses the credentials",
        &o,
        &mut searched,
    );
    drop(refusing);
    // Accepted.
    let Some(server) = S3Server::start(S3Kind::Moto, "canary") else {
        return;
    };
    let o = run(&server, "s3://canary/ok");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    scan_output("run into a bucket", &o, &mut searched);
    let mut c = crate::support::bin();
    c.args(["verify", "s3://canary/ok"]);
    with_canary(&mut c, &server);
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    scan_output("verify of a bucket", &o, &mut searched);
    // Every object of the bucket, downloaded into a directory.
    let copy = tempfile::tempdir().unwrap();
    let s3 = object_store_for(&server, "canary");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let listed: Vec<_> = s3.list(None).try_collect().await.unwrap();
        for meta in listed {
            let bytes = s3.get(&meta.location).await.unwrap().bytes().await.unwrap();
            let local = copy.path().join(meta.location.as_ref());
            std::fs::create_dir_all(local.parent().unwrap()).unwrap();
            std::fs::write(local, bytes).unwrap();
        }
    });
    scan_dir(copy.path(), &mut searched);
    assert!(
        searched.files >= 10 && searched.log_lines >= 100,
        "too little searched: {searched:?}"
    );
}

/// A client of the test's own for `server`'s `bucket`.
fn object_store_for(server: &crate::peers::S3Server, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id(crate::peers::S3Server::ACCESS_KEY)
        .with_secret_access_key(crate::peers::S3Server::SECRET_KEY)
        .build()
        .unwrap()
}
