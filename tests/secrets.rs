//! Credentials never reach logs, errors, reports, tables or archives: a run with canary
//! credentials and `RUST_LOG=trace`, then every byte it produced is searched.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use jumio_export::simulator::SimOptions;

use crate::support::{BlockingSim, job_files};

const TOKEN: &str = "canary-token-7f3a9c1e";
const SECRET: &str = "canary-secret-b52d80e4";

fn needles() -> Vec<(String, Vec<u8>)> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN}:{SECRET}"));
    let secret_b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    vec![
        ("token".into(), TOKEN.as_bytes().to_vec()),
        ("secret".into(), SECRET.as_bytes().to_vec()),
        ("Basic encoding".into(), basic.into_bytes()),
        ("secret in base64".into(), secret_b64.into_bytes()),
    ]
}

fn assert_clean(what: &str, bytes: &[u8]) {
    for (name, needle) in needles() {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
            "the {name} appears in {what}"
        );
    }
}

fn scan_dir(dir: &Path, files: &mut usize) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan_dir(&path, files);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_clean(&path.display().to_string(), &bytes);
        *files += 1;
        if path.extension().is_some_and(|e| e == "zip") {
            let mut z = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
            for i in 0..z.len() {
                let mut f = z.by_index(i).unwrap();
                let name = f.name().unwrap().to_string();
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).unwrap();
                assert_clean(&format!("{}:{name}", path.display()), &buf);
            }
        }
    }
}

#[test]
fn canary_credentials_appear_nowhere_even_at_trace_level() {
    let opts = SimOptions {
        token: TOKEN.into(),
        secret: SECRET.into(),
        ..SimOptions::default()
    };
    let sim = BlockingSim::start(opts);
    let api = sim.api();
    let dir = tempfile::tempdir().unwrap();
    let (job, refs) = job_files(
        dir.path(),
        "[api]\nregion = \"us\"\nuser_agent = \"secrets-test/1\"\n[limits]\nrequests_per_second = 300.0\nmax_retries = 1\ntimeout_seconds = 5\n[polling]\nschedule_seconds = [0.05]\n",
        "refs.csv",
        "reference,kind\nok-n1,netverify\nok-d1,document\nok-a1,authentication\nnf-n1,netverify\npf-n1,netverify\nfh-n1,netverify\nfail-n1,netverify\nbad/ref,netverify\n",
    );
    let mut files = 0;
    // A good run, and one whose secret the API refuses (errors are where secrets usually leak).
    for (secret, expected) in [(SECRET, 1), ("wrong-secret", 3)] {
        let out = dir.path().join(format!("out-{expected}"));
        let o = Command::new(env!("CARGO_BIN_EXE_jumio-export"))
            .arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&refs)
            .arg("--out")
            .arg(&out)
            .args(["--base-url", &api.base_url()])
            .env("JUMIO_API_TOKEN", TOKEN)
            .env("JUMIO_API_SECRET", secret)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(expected),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stderr.len() > 1000,
            "trace logging produced little output: is RUST_LOG honoured?"
        );
        assert_clean("stdout", &o.stdout);
        assert_clean("stderr (trace logs and errors)", &o.stderr);
        scan_dir(&out, &mut files);
    }
    assert!(files > 10, "only {files} output files were searched");
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
/// environment; 7-Zip opens them with the key and not without; verify and resume work with the
/// key; the key appears in no log or output file.
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
        "resume with the key re-reads the archives instead of fetching"
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
