//! Public-key encryption of archives (`[output] age_recipients`, issue 14 point 5), checked with
//! Debian's `age`, `age-keygen`, `ssh-keygen` and `unzip`: archives encrypted to an age key and an
//! SSH key open with either identity and hold what the tables say; `verify` checks the
//! ciphertexts without any identity; a killed run's age archives are taken over through their
//! takeover records without a request; and a run of another archive mode stops with exit 2,
//! naming the setting, without a request or a changed byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jumio_export::Kind;
use jumio_export::flatten::{self, ArchiveSummary};
use jumio_export::simulator::{RequestRecord, SimOptions};

use crate::support::{BlockingSim, bin, commits, dataset_csv, exportable, sha256_hex, text};

/// An age key pair made by `age-keygen` and an SSH Ed25519 key pair made by `ssh-keygen`.
struct Keys {
    dir: tempfile::TempDir,
    age_identity: PathBuf,
    age_public: String,
    ssh_identity: PathBuf,
    ssh_public: String,
}

fn keys() -> Option<Keys> {
    let age_keygen = crate::peers::require("age-keygen")?;
    let ssh_keygen = crate::peers::require("ssh-keygen")?;
    let dir = tempfile::tempdir().unwrap();
    let age_identity = dir.path().join("age-key.txt");
    let o = Command::new(age_keygen)
        .arg("-o")
        .arg(&age_identity)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let age_public = std::fs::read_to_string(&age_identity)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .expect("age-keygen writes the public key as a comment");
    let ssh_identity = dir.path().join("id_ed25519");
    let o = Command::new(ssh_keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "auditor", "-f"])
        .arg(&ssh_identity)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let ssh_public = std::fs::read_to_string(ssh_identity.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    Some(Keys {
        dir,
        age_identity,
        age_public,
        ssh_identity,
        ssh_public,
    })
}

/// A job with a short schedule and `output` as its `[output]` table.
fn job(output: &str) -> String {
    format!(
        "[api]\nuser_agent = \"Test Corp Export/1.0\"\n[limits]\nrequests_per_second = 40.0\nconcurrency = 2\nmax_retries = 2\ntimeout_seconds = 10\n[polling]\nschedule_seconds = [0.05, 0.1]\n[output]\n{output}\n"
    )
}

fn age_output(recipients: &[&str]) -> String {
    let list: Vec<String> = recipients.iter().map(|r| format!("{r:?}")).collect();
    format!("age_recipients = [{}]", list.join(", "))
}

/// A test directory: the job, the reference list (`reference,kind`), the dataset.
struct Dir {
    _tmp: tempfile::TempDir,
    job: PathBuf,
    refs: PathBuf,
    out: PathBuf,
}

fn dir_with(job_text: &str, refs: &[(String, Kind)]) -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let job = tmp.path().join("job.toml");
    std::fs::write(&job, job_text).unwrap();
    let refs_path = tmp.path().join("refs.csv");
    let mut list = String::from("reference,kind\n");
    for (r, k) in refs {
        list.push_str(&format!("{r},{k}\n"));
    }
    std::fs::write(&refs_path, list).unwrap();
    Dir {
        out: tmp.path().join("out"),
        job,
        refs: refs_path,
        _tmp: tmp,
    }
}

impl Dir {
    fn set_job(&self, job_text: &str) {
        std::fs::write(&self.job, job_text).unwrap();
    }

    fn command(&self, sim: &BlockingSim) -> Command {
        let mut c = bin();
        c.arg("run")
            .arg(&self.job)
            .arg("--input")
            .arg(&self.refs)
            .arg("--out")
            .arg(&self.out)
            .args(["--base-url", &sim.api().base_url(), "--quiet"]);
        c
    }

    fn run(&self, sim: &BlockingSim) -> Output {
        self.command(sim).output().unwrap()
    }
}

fn verify(out: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = bin();
    c.arg("verify").arg(out).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn reference_of(r: &RequestRecord) -> String {
    r.path.split('/').nth(5).unwrap_or("").to_string()
}

/// Requests in `log` for `reference`.
fn requests_for(log: &[RequestRecord], reference: &str) -> usize {
    log.iter().filter(|r| reference_of(r) == reference).count()
}

/// Every file under `dir` (relative paths), recursively.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(listing) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in listing.filter_map(Result::ok) {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                found.push(
                    e.path()
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    found.sort();
    found
}

/// The bytes of every file under `archives/`.
fn archive_bytes(out: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(&out.join("archives"))
        .into_iter()
        .filter(|n| !n.starts_with(".claims"))
        .map(|n| {
            let bytes = std::fs::read(out.join("archives").join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

/// `age -d -i identity archive` into `dest`.
fn age_decrypt(age: &Path, identity: &Path, archive: &Path, dest: &Path) {
    let o = Command::new(age)
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg("-o")
        .arg(dest)
        .arg(archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "age -d: {}", text(&o));
}

/// The kind table's CSV row of each reference.
fn csv_rows(out: &Path, kind: Kind) -> BTreeMap<String, BTreeMap<String, String>> {
    dataset_csv(out, kind.table_name())
        .1
        .into_iter()
        .map(|row| (row["reference"].clone(), row))
        .collect()
}

#[test]
fn archives_encrypted_to_an_age_and_an_ssh_key_open_with_the_age_tool_and_verify_without_identity()
{
    let Some(keys) = keys() else { return };
    let Some(age) = crate::peers::require("age") else {
        return;
    };
    let Some(unzip) = crate::peers::require("unzip") else {
        return;
    };
    let sim = BlockingSim::start(SimOptions::default());
    let refs = exportable(3);
    let d = dir_with(
        &job(&age_output(&[&keys.age_public, &keys.ssh_public])),
        &refs,
    );
    let o = d.run(&sim);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The commit records the mode; no plaintext ZIP is left anywhere in the dataset.
    let c = commits(&d.out).pop().unwrap();
    assert_eq!(c["output"]["archive_mode"], "age", "{c}");
    let everything = files_under(&d.out);
    assert!(
        !everything
            .iter()
            .any(|f| f.ends_with(".zip") || f.ends_with(".zip.tmp")),
        "a plaintext archive is left: {everything:?}"
    );
    for (reference, kind) in &refs {
        let path = d.out.join(format!("archives/{reference}.zip.age"));
        let sealed = std::fs::read(&path).unwrap();
        assert!(
            sealed.starts_with(b"age-encryption.org/v1\n"),
            "{reference}"
        );
        let rows = csv_rows(&d.out, *kind);
        let row = &rows[reference];
        assert_eq!(row["archive"], format!("archives/{reference}.zip.age"));
        assert_eq!(
            row["archive_sha256"],
            sha256_hex(&sealed),
            "{reference}: the tables hold the ciphertext's sha256"
        );
        // Either identity opens it; the ZIP inside passes unzip -t and holds the row's data.
        for identity in [&keys.age_identity, &keys.ssh_identity] {
            let plain = keys.dir.path().join(format!("{reference}.zip"));
            let _ = std::fs::remove_file(&plain);
            age_decrypt(&age, identity, &path, &plain);
            let o = Command::new(&unzip)
                .arg("-tq")
                .arg(&plain)
                .output()
                .unwrap();
            assert!(o.status.success(), "unzip -t: {}", text(&o));
            let entries = crate::support::zip_entries(&plain);
            let data_entry = match kind {
                Kind::Authentication => "authentication.json",
                _ => "data.json",
            };
            let data: serde_json::Value = serde_json::from_slice(&entries[data_entry]).unwrap();
            let summary = ArchiveSummary {
                image_count: row["image_count"].parse().unwrap(),
                archive: row["archive"].clone(),
                archive_sha256: row["archive_sha256"].clone(),
                run: row["run"].clone(),
            };
            let expected = flatten::flatten(*kind, reference, &data, &summary);
            for (column, cell) in flatten::table_columns(*kind).iter().zip(&expected.0) {
                assert_eq!(
                    row[&column.name],
                    jumio_export::output::tables::csv_cell(cell, column, true),
                    "{reference}: column {} differs from the decrypted {data_entry}",
                    column.name
                );
            }
        }
    }
    // verify needs no identity: commits, parts, rows and the ciphertexts' hashes.
    let o = verify(&d.out, &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // With an identity it opens each archive and checks it whole.
    let identity = std::fs::read_to_string(&keys.age_identity).unwrap();
    let o = verify(
        &d.out,
        &[("AUDITOR_AGE_IDENTITY", identity.as_str())],
        &["--age-identity-env", "AUDITOR_AGE_IDENTITY"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // An identity that is not a recipient: verify tried to open every archive, and says so.
    let stranger = keys.dir.path().join("stranger.txt");
    let o = Command::new(crate::peers::require("age-keygen").unwrap())
        .arg("-o")
        .arg(&stranger)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let stranger = std::fs::read_to_string(&stranger).unwrap();
    let o = verify(
        &d.out,
        &[("AUDITOR_AGE_IDENTITY", stranger.as_str())],
        &["--age-identity-env", "AUDITOR_AGE_IDENTITY"],
    );
    let report = text(&o);
    assert_eq!(o.status.code(), Some(1), "{report}");
    assert_eq!(
        report
            .matches("does not decrypt with the identity given")
            .count(),
        refs.len(),
        "{report}"
    );
    // A changed ciphertext is caught without an identity.
    let (first, _) = &refs[0];
    let path = d.out.join(format!("archives/{first}.zip.age"));
    let mut sealed = std::fs::read(&path).unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    std::fs::write(&path, &sealed).unwrap();
    let o = verify(&d.out, &[], &[]);
    let report = text(&o);
    assert_eq!(o.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("archives/{first}.zip.age: sha256"))
            && report.contains("does not match archive_sha256"),
        "{report}"
    );
    // A ZIP damaged before it was sealed: what the identity finds inside is named by the
    // dataset's file, `.zip.age`, never by the plaintext's name.
    let (second, _) = &refs[1];
    let path = d.out.join(format!("archives/{second}.zip.age"));
    let plain = keys.dir.path().join(format!("{second}.zip"));
    let _ = std::fs::remove_file(&plain);
    age_decrypt(&age, &keys.age_identity, &path, &plain);
    let mut zip = std::fs::read(&plain).unwrap();
    let middle = zip.len() / 2;
    zip[middle] ^= 0xff;
    std::fs::write(&plain, &zip).unwrap();
    std::fs::remove_file(&path).unwrap();
    let o = Command::new(&age)
        .args(["-r", &keys.age_public, "-o"])
        .arg(&path)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = verify(
        &d.out,
        &[("AUDITOR_AGE_IDENTITY", identity.as_str())],
        &["--age-identity-env", "AUDITOR_AGE_IDENTITY"],
    );
    let report = text(&o);
    assert_eq!(o.status.code(), Some(1), "{report}");
    let inside = report
        .lines()
        .filter(|l| l.contains(&format!("archives/{second}.zip.age: ")))
        .filter(|l| !l.contains("archive_sha256"))
        .count();
    assert!(inside > 0, "a finding inside the archive: {report}");
    assert!(
        !report.contains(&format!("archives/{second}.zip: ")),
        "named by the plaintext: {report}"
    );
}

/// Waits until `done()` holds or the child exits, at most `limit`.
fn spin_until(child: &mut std::process::Child, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < limit && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn age_archives(out: &Path) -> Vec<String> {
    let Ok(listing) = std::fs::read_dir(out.join("archives")) else {
        return Vec::new();
    };
    let mut v: Vec<String> = listing
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".zip.age")
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

/// SPEC "Resuming": an archive no commit lists is checked and taken over, not fetched again —
/// for age archives too, which this machine cannot open. A run is killed (-9) after publishing
/// age archives and before its commit; the next run lists each through its takeover record
/// without a request, leaves the bytes, and verify passes. An age archive whose record is gone is
/// never replaced: its reference fails without a request.
#[test]
fn age_archives_a_killed_run_left_are_taken_over_without_the_identity_or_a_request() {
    let Some(keys) = keys() else { return };
    let sim = BlockingSim::start(SimOptions::default());
    let refs = exportable(12);
    let mut text_job = job(&age_output(&[&keys.age_public]));
    text_job = text_job.replace("requests_per_second = 40.0", "requests_per_second = 15.0");
    let d = dir_with(&text_job, &refs);
    let mut child = d
        .command(&sim)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    spin_until(&mut child, Duration::from_secs(60), || {
        age_archives(&d.out).len() >= 4
    });
    assert!(child.try_wait().unwrap().is_none(), "the run ended first");
    let _ = child.kill();
    let _ = child.wait();
    assert!(commits(&d.out).is_empty(), "the killed run committed");
    let left = age_archives(&d.out);
    let before = archive_bytes(&d.out);
    // Each left archive has its record in the dead run's staging area.
    let dead: Vec<String> = std::fs::read_dir(d.out.join("runs"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let records = d.out.join("runs").join(&dead[0]).join("takeover");
    for r in &left {
        assert!(
            records.join(format!("{r}.json")).exists(),
            "{r}: no takeover record"
        );
    }
    // One record goes missing: that archive can no longer be checked, so it is never replaced.
    let orphan = left[0].clone();
    std::fs::remove_file(records.join(format!("{orphan}.json"))).unwrap();

    let log_start = sim.api().requests().len();
    let o = d.run(&sim);
    let said = text(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(said.contains("failed            1"), "{said}");
    let log = sim.api().requests()[log_start..].to_vec();
    for r in &left {
        assert_eq!(
            requests_for(&log, r),
            0,
            "{r}: fetched although a killed run left its archive"
        );
    }
    let after = archive_bytes(&d.out);
    for (name, bytes) in &before {
        assert!(after.get(name) == Some(bytes), "{name} changed");
    }
    let report = crate::support::latest_report(&d.out);
    assert_eq!(
        report["outcomes"]["already_exported"],
        (left.len() - 1) as u64,
        "{report}"
    );
    let failures = std::fs::read_to_string(d.out.join("failures.csv")).unwrap();
    assert!(
        failures.contains(&format!("{orphan},")) && failures.contains("BAD_RESPONSE"),
        "{failures}"
    );
    // Every other reference is exported exactly once.
    let mut expected: Vec<(String, Kind)> =
        refs.iter().filter(|(r, _)| *r != orphan).cloned().collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.table_name().cmp(b.1.table_name())));
    assert_eq!(crate::support::dataset_exported(&d.out), expected);
    let o = verify(&d.out, &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The records served their purpose: the next run's sweep removes those the taking run's
    // commit lists, and keeps the orphan's archive untouched.
    let o = d.run(&sim);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        !d.out.join("runs").join(&dead[0]).exists(),
        "the dead run's records outlived the commit that took its archives over"
    );
    assert!(
        archive_bytes(&d.out).get(&format!("{orphan}.zip.age"))
            == before.get(&format!("{orphan}.zip.age"))
    );
}

/// The archives of a dataset that no commit lists any more (as after a run killed before its
/// commit): commits, parts and report removed, the archives kept.
fn uncommit(out: &Path) {
    for dir in ["commits", "tables"] {
        std::fs::remove_dir_all(out.join(dir)).unwrap();
    }
    let _ = std::fs::remove_file(out.join("failures.csv"));
}

/// Issue 14 point 5: "An archive that fails to open because of a key or mode mismatch must
/// never be fetched again and silently replaced: stop with exit 2 and say which setting
/// differs." Both directions, against the commits' record and against archives no commit lists.
#[test]
fn a_run_of_another_archive_mode_stops_with_exit_2_naming_the_setting_and_changes_nothing() {
    let Some(keys) = keys() else { return };
    let sim = BlockingSim::start(SimOptions::default());
    let refs = exportable(2);
    const KEY_VAR: &str = "JUMIO_EXPORT_ARCHIVE_KEY";
    const KEY: &str = "a zip-aes key of sixteen bytes or more";
    let age_job = job(&age_output(&[&keys.age_public]));
    let plain_job = job("");
    let aes_job = job("encrypt_archives = true");
    let refused = |d: &Dir, job_text: &str, setting: &str, what: &str| {
        d.set_job(job_text);
        let before = archive_bytes(&d.out);
        assert!(!before.is_empty());
        let log_start = sim.api().requests().len();
        let o = d.command(&sim).env(KEY_VAR, KEY).output().unwrap();
        let said = text(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {said}");
        assert!(
            said.contains(&format!("{setting} differs from the dataset")),
            "{what}: {said}"
        );
        assert_eq!(
            sim.api().requests().len(),
            log_start,
            "{what}: a request was sent"
        );
        assert!(
            archive_bytes(&d.out) == before,
            "{what}: an archive changed"
        );
    };
    // An age dataset, and a plain run into it.
    let d = dir_with(&age_job, &refs);
    let o = d.run(&sim);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    refused(
        &d,
        &plain_job,
        "[output] age_recipients",
        "plain into age (commits)",
    );
    uncommit(&d.out);
    refused(
        &d,
        &plain_job,
        "[output] age_recipients",
        "plain into age (archives)",
    );
    // A ZIP AES dataset, and an age run into it.
    let d = dir_with(&aes_job, &refs);
    let o = d.command(&sim).env(KEY_VAR, KEY).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    refused(
        &d,
        &age_job,
        "[output] age_recipients",
        "age into zip-aes (commits)",
    );
    uncommit(&d.out);
    refused(
        &d,
        &age_job,
        "[output] age_recipients",
        "age into zip-aes (archives)",
    );
    // Between plain and ZIP AES the archives tell.
    refused(
        &d,
        &plain_job,
        "[output] encrypt_archives",
        "plain into zip-aes (archives)",
    );
    let d = dir_with(&plain_job, &refs);
    let o = d.run(&sim);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    uncommit(&d.out);
    refused(
        &d,
        &aes_job,
        "[output] encrypt_archives",
        "zip-aes into plain (archives)",
    );
}

/// `[output] age_recipients`: a key that does not parse is exit 2 naming the key and its index,
/// never echoing it; age together with `encrypt_archives` is exit 2.
#[test]
fn recipients_that_do_not_parse_or_age_with_encrypt_archives_are_exit_2() {
    let good = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    let bad = "age1thisisnotakeyQQQ";
    let check = |output: &str, expect: &[&str], never: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let job_path = dir.path().join("job.toml");
        std::fs::write(&job_path, job(output)).unwrap();
        std::fs::write(dir.path().join("refs.txt"), "r1\n").unwrap();
        let o = bin()
            .arg("plan")
            .arg(&job_path)
            .arg("--input")
            .arg(dir.path().join("refs.txt"))
            .output()
            .unwrap();
        let said = text(&o);
        assert_eq!(o.status.code(), Some(2), "{said}");
        for e in expect {
            assert!(said.contains(e), "{e:?} missing: {said}");
        }
        for n in never {
            assert!(!said.contains(n), "{n:?} echoed: {said}");
        }
    };
    check(
        &age_output(&[good, bad]),
        &["[output] age_recipients", "entry 1"],
        &["thisisnotakey"],
    );
    check(
        &age_output(&["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBROKENBROKEN"]),
        &["[output] age_recipients", "entry 0", "SSH"],
        &["BROKENBROKEN"],
    );
    check(
        "age_recipients = []",
        &["[output] age_recipients", "empty"],
        &[],
    );
    check(
        &format!("encrypt_archives = true\n{}", age_output(&[good])),
        &["[output] age_recipients", "encrypt_archives"],
        &[],
    );
}
