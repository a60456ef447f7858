//! Issue 14, personal data and hostile conditions: one test (or a few) per point, each named
//! after the path it closes. The job-file checks parse text; the rest run the binary against
//! the simulator on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jumio_export::job::{self, Credentials, JobError, Overrides};
use jumio_export::run::{self, RunOptions, Summary};
use jumio_export::{Kind, input};
use serde_json::json as j;

use super::hostile::{Server, json};
use super::{
    BAD, Limits, OK, SECRET, TOKEN, data_body, images_body, job_text, origin, rows_for, scan,
    status_body,
};
use crate::support::committed_parts;

const HEAD: &str = "[api]\nuser_agent = \"Test Corp Export/1.0\"\n";

fn parse(text: &str) -> Result<job::Job, JobError> {
    job::parse(text, Path::new("jobs/x.toml"), &Overrides::default())
}

fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

// ---- point 2: credentials travel only over HTTPS, except to loopback -----------------

#[test]
fn plain_http_to_a_remote_host_is_refused_naming_the_key() {
    for (key, host) in [
        ("netverify_url", "netverify.com"),
        ("retrieval_url", "10.0.0.7:8080"),
        ("netverify_url", "128.0.0.1"),
        ("retrieval_url", "[2001:db8::1]"),
        ("netverify_url", "localhost.example.com"),
    ] {
        let e = parse_err(&format!("{HEAD}{key} = \"http://{host}\"\n"));
        assert!(
            e.contains(&format!("[api] {key}: plain http")),
            "{key} = http://{host}: {e}"
        );
    }
    let e = job::parse(
        HEAD,
        Path::new("jobs/x.toml"),
        &Overrides {
            base_url: Some("http://retrieval.netverify.com".into()),
            ..Default::default()
        },
    )
    .expect_err("--base-url http://remote refused")
    .to_string();
    assert!(e.starts_with("--base-url: plain http"), "{e}");
}

#[test]
fn plain_http_to_loopback_and_https_anywhere_are_accepted() {
    for url in [
        "http://127.0.0.1:8080",
        "http://127.3.4.5",
        "http://[::1]:9000",
        "http://localhost:1234",
        "http://LOCALHOST",
        "https://netverify.com",
        "https://10.0.0.7:8443",
    ] {
        let job = parse(&format!(
            "{HEAD}netverify_url = \"{url}\"\nretrieval_url = \"{url}\"\n"
        ))
        .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            job.api.netverify_url.scheme(),
            &url[..url.find(':').unwrap()]
        );
    }
}

#[test]
fn plain_http_refusal_is_exit_2_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (job_path, refs) = crate::support::job_files(
        dir.path(),
        &format!("{HEAD}netverify_url = \"http://netverify.com\"\n"),
        "refs.txt",
        "abc\n",
    );
    let out = crate::support::bin()
        .args(["run"])
        .arg(&job_path)
        .arg("--input")
        .arg(&refs)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let text = crate::support::text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("[api] netverify_url: plain http"), "{text}");
    assert!(!dir.path().join("out").exists(), "{text}");
}

// ---- running a job with extra settings ------------------------------------------------

/// A finished run of the control and the bad reference with `extra` appended to the
/// adversarial job file (a `[output]` or `[fetch]` table).
struct Ran {
    _dir: tempfile::TempDir,
    out: PathBuf,
    summary: Summary,
}

async fn run_extra(base: &str, extra: &str) -> Ran {
    run_job(base, &format!("{}{extra}", job_text(&Limits::default()))).await
}

/// [`run_extra`] with a whole job file.
async fn run_job(base: &str, job_text: &str) -> Ran {
    run_prepared(base, job_text, |_| {}).await
}

/// [`run_job`], after `prepare` has put what it likes into the output location.
async fn run_prepared(base: &str, job_text: &str, prepare: impl FnOnce(&Path)) -> Ran {
    run_full(base, job_text, prepare, RunOptions::default()).await
}

/// [`run_prepared`] with `opts` (quiet is set here).
async fn run_full(
    base: &str,
    job_text: &str,
    prepare: impl FnOnce(&Path),
    opts: RunOptions,
) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let job_path = dir.path().join("job.toml");
    std::fs::write(&job_path, job_text).unwrap();
    let refs = dir.path().join("refs.txt");
    std::fs::write(&refs, format!("{OK}\n{BAD}\n")).unwrap();
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
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        run::run(
            &job,
            list,
            &Credentials::new(TOKEN, SECRET),
            RunOptions {
                quiet: true,
                ..opts
            },
        ),
    )
    .await
    .expect("the run hung")
    .expect("the run failed as a whole");
    Ran {
        _dir: dir,
        out,
        summary,
    }
}

/// The Parquet text of `column` in the row of `reference` of the netverify table.
fn parquet_text(out: &Path, reference: &str, column: &str) -> Option<String> {
    use arrow_array::Array as _;
    for part in committed_parts(out, "netverify", "parquet") {
        let file = std::fs::File::open(part).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let strings = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .unwrap()
                    .clone()
            };
            let (refs, values) = (strings("reference"), strings(column));
            for i in 0..batch.num_rows() {
                if refs.value(i) == reference {
                    return (!values.is_null(i)).then(|| values.value(i).to_string());
                }
            }
        }
    }
    panic!("{reference} has no Parquet row");
}

fn verify_clean(out: &Path) {
    let report = jumio_export::verify::verify(out).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

// ---- point 3: CSV formula injection -----------------------------------------------------

/// Names and addresses a spreadsheet would run, and values that only look like it.
const FORMULAS: [(&str, &str, &str); 5] = [
    (
        "first_name",
        "=HYPERLINK(\"http://evil.example\",\"ok\")",
        "'=HYPERLINK(\"http://evil.example\",\"ok\")",
    ),
    ("last_name", "+1-2", "'+1-2"),
    (
        "address_line1",
        "-2+3+cmd|' /C calc'!A0",
        "'-2+3+cmd|' /C calc'!A0",
    ),
    ("address_city", "@SUM(A1:A9)", "'@SUM(A1:A9)"),
    ("address_postal_code", "-1234", "-1234"),
];

fn formula_data() -> serde_json::Value {
    let mut data = data_body(BAD);
    data["document"]["firstName"] = j!(FORMULAS[0].1);
    data["document"]["lastName"] = j!(FORMULAS[1].1);
    data["document"]["address"] = j!({
        "line1": FORMULAS[2].1, "city": FORMULAS[3].1, "postalCode": FORMULAS[4].1
    });
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formula_cells_are_neutralised_in_csv_by_default_and_parquet_keeps_the_text() {
    let s: Server = origin().await;
    s.set(&format!("{}/data", scan(BAD)), json(&formula_data()));
    let ran = run_extra(&s.base(), "").await;
    assert_eq!(ran.summary.exit_code(), 0);
    let row = &rows_for(&ran.out, "netverify", BAD)[0];
    for (column, sent, csv) in FORMULAS {
        let column = format!("document_{column}");
        assert_eq!(row[&column], csv, "CSV {column}");
        assert_eq!(
            parquet_text(&ran.out, BAD, &column).as_deref(),
            Some(sent),
            "Parquet {column}"
        );
    }
    let commit = &crate::support::commits(&ran.out)[0];
    assert_eq!(commit["output"]["csv_formulas"], "neutralised");
    verify_clean(&ran.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formula_neutralisation_can_be_switched_off_and_verify_follows_the_commit() {
    let s: Server = origin().await;
    s.set(&format!("{}/data", scan(BAD)), json(&formula_data()));
    let ran = run_extra(&s.base(), "\n[output]\ncsv_neutralise_formulas = false\n").await;
    assert_eq!(ran.summary.exit_code(), 0);
    let row = &rows_for(&ran.out, "netverify", BAD)[0];
    for (column, sent, _) in FORMULAS {
        assert_eq!(row[&format!("document_{column}")], sent, "CSV {column}");
    }
    let commit = &crate::support::commits(&ran.out)[0];
    assert_eq!(commit["output"]["csv_formulas"], "verbatim");
    verify_clean(&ran.out);
}

// ---- point 8: the guide's limits ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_makes_as_many_status_calls_as_the_schedule_has_entries_the_first_included() {
    let s: Server = origin().await;
    let mut pending = status_body(BAD);
    pending["status"] = j!("PENDING");
    s.set(&scan(BAD), json(&pending));
    let job = job_text(&Limits::default()).replace(
        "schedule_seconds = [0.05]",
        "schedule_seconds = [0.02, 0.04, 0.06]",
    );
    let ran = run_job(&s.base(), &job).await;
    assert_eq!(s.hits(&scan(BAD)), 3, "three entries, three status calls");
    let row = &rows_for(&ran.out, "failures", BAD)[0];
    assert_eq!(
        (row["error"].as_str(), row["attempts"].as_str()),
        ("PENDING", "3")
    );
    assert_eq!(s.hits(&scan(OK)), 1);
}

#[test]
fn a_schedule_longer_than_the_guides_ten_attempts_is_refused_naming_the_key() {
    let offsets = |n: usize| {
        (1..=n)
            .map(|i| (i * 10).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ten = parse(&format!(
        "{HEAD}[polling]\nschedule_seconds = [{}]\n",
        offsets(10)
    ))
    .unwrap();
    assert_eq!(ten.polling.schedule.len(), 10);
    let e = parse_err(&format!(
        "{HEAD}[polling]\nschedule_seconds = [{}]\n",
        offsets(11)
    ));
    assert!(
        e.contains("jobs/x.toml:4") && e.contains("[polling] schedule_seconds: lists 11 offsets"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_href_into_another_transaction_on_the_origin_is_foreign() {
    let s: Server = origin().await;
    let mut list = images_body(&s.base(), BAD);
    // The origin, the right shape, another transaction's image: someone else's passport.
    list["images"][0]["href"] = j!(format!("{}{}/images/front", s.base(), scan(OK)));
    s.set(&format!("{}/images", scan(BAD)), json(&list));
    let o = super::run_pair(&s).await;
    let row = super::failed(&o, BAD, "FOREIGN_URL", "image");
    assert_eq!(row["http_status"], "");
    assert_eq!(
        s.hits(&format!("{}/images/front", scan(OK))),
        1,
        "only OK's own fetch"
    );
    // The same with a dot segment that climbs out of the transaction's path.
    let s: Server = origin().await;
    let mut list = images_body(&s.base(), BAD);
    list["images"][0]["href"] = j!(format!("{}{}/../{OK}/images/front", s.base(), scan(BAD)));
    s.set(&format!("{}/images", scan(BAD)), json(&list));
    let o = super::run_pair(&s).await;
    super::failed(&o, BAD, "FOREIGN_URL", "image");
}

/// A Document Verification reference of the simulator's population with pages, exportable,
/// of a credit card (`true`) or of another document type.
fn document(card: bool) -> String {
    use jumio_export::simulator::{self, Polls, SimOptions};
    let seed = SimOptions::default().seed;
    simulator::population(seed, 400)
        .into_iter()
        .find(|(r, k)| {
            let sc = simulator::scenario(seed, r).unwrap();
            *k == Kind::Document
                && !sc.retention_404
                && !sc.foreign_hrefs
                && sc.polls == Polls::Ready
                && !sc.classifiers.is_empty()
                && (sc.document_type == Some("CC")) == card
        })
        .expect("the population has such a document")
        .0
}

#[test]
fn maskhint_unmasked_is_asked_only_when_enabled_and_only_for_credit_cards() {
    use jumio_export::simulator::SimOptions;
    let (card, other) = (document(true), document(false));
    for enabled in [true, false] {
        let sim = crate::support::BlockingSim::start(SimOptions {
            allow_unmasked: true,
            ..SimOptions::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let (job, refs) = crate::support::job_files(
            dir.path(),
            &format!(
                "{HEAD}[polling]\nschedule_seconds = [0.05]\n[fetch]\nunmasked_card_images = {enabled}\n"
            ),
            "refs.csv",
            &format!("reference,kind\n{card},document\n{other},document\n"),
        );
        let out = crate::support::bin()
            .arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&refs)
            .arg("--out")
            .arg(dir.path().join("out"))
            .args(["--base-url", &sim.api().base_url(), "--quiet"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", crate::support::text(&out));
        let pages = |reference: &str| -> Vec<Option<String>> {
            sim.api()
                .requests()
                .into_iter()
                .filter(|r| r.path.contains(&format!("/documents/{reference}/pages/")))
                .map(|r| r.query)
                .collect()
        };
        let (card_pages, other_pages) = (pages(&card), pages(&other));
        assert!(!card_pages.is_empty() && !other_pages.is_empty());
        assert!(
            other_pages.iter().all(Option::is_none),
            "{other}: {other_pages:?}"
        );
        let unmasked = Some("maskhint=unmasked".to_string());
        assert!(
            card_pages
                .iter()
                .all(|q| *q == if enabled { unmasked.clone() } else { None }),
            "{card} (unmasked_card_images = {enabled}): {card_pages:?}"
        );
    }
}

#[test]
fn verify_escapes_control_characters_of_values_it_prints_from_the_files() {
    use jumio_export::simulator::SimOptions;
    let sim = crate::support::BlockingSim::start(SimOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (job, refs) = crate::support::job_files(
        dir.path(),
        &format!("{HEAD}[polling]\nschedule_seconds = [0.05]\n"),
        "refs.txt",
        "ok-n1\n",
    );
    let out = dir.path().join("out");
    let run = crate::support::bin()
        .arg("run")
        .arg(&job)
        .arg("--input")
        .arg(&refs)
        .arg("--out")
        .arg(&out)
        .args(["--base-url", &sim.api().base_url(), "--quiet"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", crate::support::text(&run));
    // A follow-up row no commit records, whose reference would clear the screen, retitle the
    // terminal and forge a report line.
    let hostile = "x\u{1b}[2J\u{1b}]0;pwned\u{7}\nproblem  none\u{202e}";
    let mut w = csv::Writer::from_writer(
        std::fs::OpenOptions::new()
            .append(true)
            .open(out.join("failures.csv"))
            .unwrap(),
    );
    w.write_record([hostile, "netverify", "status", "", "NOT_FOUND", "1", "", ""])
        .unwrap();
    w.flush().unwrap();
    drop(w);
    let v = crate::support::bin()
        .arg("verify")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8(v.stdout.clone()).unwrap();
    assert_eq!(v.status.code(), Some(1), "{}", crate::support::text(&v));
    assert!(
        !stdout
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{stdout:?}"
    );
    assert!(
        stdout.contains(r"x\u{1b}[2J\u{1b}]0;pwned\u{7}\u{a}problem  none\u{202e}"),
        "{stdout}"
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("problem  none")),
        "a forged line: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_value_that_does_not_parse_is_kept_verbatim_in_the_row_and_counted() {
    let s: Server = origin().await;
    let mut data = data_body(BAD);
    data["document"]["dob"] = j!("31/12/1990");
    data["document"]["expiry"] = j!("2030-02-30");
    data["timestamp"] = j!("yesterday");
    s.set(&format!("{}/data", scan(BAD)), json(&data));
    let ran = run_extra(&s.base(), "").await;
    assert_eq!(ran.summary.exit_code(), 0);
    // Parquet: the typed columns are NULL (adversarial case 10 checks that), and the row still
    // holds every text, verbatim, in `unmapped_json` under its path.
    let unmapped = parquet_text(&ran.out, BAD, "unmapped_json").expect("unmapped_json is set");
    let unmapped: serde_json::Value = serde_json::from_str(&unmapped).unwrap();
    assert_eq!(unmapped["document"]["dob"], "31/12/1990", "{unmapped}");
    assert_eq!(unmapped["document"]["expiry"], "2030-02-30", "{unmapped}");
    assert_eq!(unmapped["timestamp"], "yesterday", "{unmapped}");
    assert_eq!(parquet_text(&ran.out, OK, "unmapped_json"), None);
    // CSV: the column keeps the API's text, and `unmapped_json` is the same as in Parquet.
    let row = &rows_for(&ran.out, "netverify", BAD)[0];
    assert_eq!(row["document_dob"], "31/12/1990");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&row["unmapped_json"]).unwrap(),
        unmapped
    );
    // Counted per column in the report (and so in the commit).
    let report = crate::support::report_json(&ran.out);
    assert_eq!(
        report["unparsed_values"],
        j!({"netverify.document_dob": 1, "netverify.document_expiry": 1, "netverify.timestamp": 1})
    );
    verify_clean(&ran.out);
}

// ---- point 1: no symlink followed, no group- or world-writable mode ---------------------------

#[test]
fn modes_that_let_group_or_others_write_are_refused_naming_the_key() {
    for (key, value) in [
        ("file_mode", "0666"),
        ("file_mode", "0620"),
        ("file_mode", "0602"),
        ("dir_mode", "0770"),
        ("dir_mode", "0707"),
    ] {
        let e = parse_err(&format!("{HEAD}[output]\n{key} = \"{value}\"\n"));
        assert!(
            e.contains(&format!(
                "[output] {key}: \"{value}\" lets group or others write"
            )),
            "{key} = {value}: {e}"
        );
    }
    let job = parse(&format!(
        "{HEAD}[output]\nfile_mode = \"0640\"\ndir_mode = \"0750\"\n"
    ))
    .unwrap();
    assert_eq!((job.output.file_mode, job.output.dir_mode), (0o640, 0o750));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_at_the_predictable_temporary_names_are_never_written_through() {
    use std::os::unix::fs::PermissionsExt;
    let s: Server = origin().await;
    let victims = tempfile::tempdir().unwrap();
    // The names this process's run uses: its pid is no secret.
    let pid = std::process::id();
    let names = [
        format!(".write-probe-{pid}.tmp"),
        format!(".failures.csv.{pid}.tmp"),
        format!(".report.json.{pid}.tmp"),
    ];
    let targets: Vec<PathBuf> = names
        .iter()
        .map(|n| {
            let t = victims.path().join(n.trim_start_matches('.'));
            std::fs::write(&t, b"the victim's file").unwrap();
            std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o644)).unwrap();
            t
        })
        .collect();
    let dangling = victims.path().join("created-through-a-link");
    let ran = run_prepared(&s.base(), &job_text(&Limits::default()), |out| {
        std::fs::create_dir_all(out).unwrap();
        for (name, target) in names.iter().zip(&targets) {
            std::os::unix::fs::symlink(target, out.join(name)).unwrap();
        }
        std::os::unix::fs::symlink(&dangling, out.join(".failures.csv.tmp")).unwrap();
    })
    .await;
    assert_eq!(ran.summary.exit_code(), 0);
    for target in &targets {
        assert_eq!(
            std::fs::read(target).unwrap(),
            b"the victim's file",
            "{target:?}"
        );
        let mode = std::fs::metadata(target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{target:?} chmod'ed");
    }
    assert!(!dangling.exists());
    assert_eq!(std::fs::read_dir(victims.path()).unwrap().count(), 3);
    // The run's own files are regular files of its own.
    for name in ["failures.csv", "report.json"] {
        let m = std::fs::symlink_metadata(ran.out.join(name)).unwrap();
        assert!(m.file_type().is_file(), "{name}");
    }
    verify_clean(&ran.out);
}

#[test]
fn a_linked_archives_or_tables_directory_stops_the_run_with_exit_3_and_nothing_written_there() {
    use jumio_export::simulator::SimOptions;
    let sim = crate::support::BlockingSim::start(SimOptions::default());
    for linked in ["archives", "tables"] {
        let dir = tempfile::tempdir().unwrap();
        let (job, refs) = crate::support::job_files(
            dir.path(),
            &format!("{HEAD}[polling]\nschedule_seconds = [0.05]\n"),
            "refs.txt",
            "ok-n1\n",
        );
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&elsewhere, out.join(linked)).unwrap();
        let o = crate::support::bin()
            .arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&refs)
            .arg("--out")
            .arg(&out)
            .args(["--base-url", &sim.api().base_url(), "--quiet"])
            .output()
            .unwrap();
        let text = crate::support::text(&o);
        assert_eq!(o.status.code(), Some(3), "{linked}: {text}");
        assert!(
            text.contains(&format!("{linked} is a symbolic link")),
            "{linked}: {text}"
        );
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "{linked}: written through the link"
        );
        assert!(
            sim.api().requests().is_empty(),
            "no request before the location is usable"
        );
    }
}

// ---- point 7: signed commits -------------------------------------------------------------------

/// Runs `ok-n1` into `out` with `[output] signing_key_env = "TEST_COMMIT_KEY"` and `key` in it.
fn signed_run(sim: &crate::support::BlockingSim, dir: &Path, out: &Path, key: &str, refs: &str) {
    let (job, refs) = crate::support::job_files(
        dir,
        &format!(
            "{HEAD}[polling]\nschedule_seconds = [0.05]\n[output]\nsigning_key_env = \"TEST_COMMIT_KEY\"\n"
        ),
        "refs.txt",
        refs,
    );
    let o = crate::support::bin()
        .env("TEST_COMMIT_KEY", key)
        .arg("run")
        .arg(&job)
        .arg("--input")
        .arg(&refs)
        .arg("--out")
        .arg(out)
        .args(["--base-url", &sim.api().base_url(), "--quiet"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", crate::support::text(&o));
}

#[test]
fn commits_are_signed_so_that_ssh_keygen_verifies_them_and_a_rewrite_is_caught() {
    use jumio_export::simulator::SimOptions;
    let Some(ssh_keygen) = crate::peers::require("ssh-keygen") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("commit-key");
    let made = std::process::Command::new(&ssh_keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "exporter", "-f"])
        .arg(&key_path)
        .status()
        .unwrap();
    assert!(made.success());
    let key = std::fs::read_to_string(&key_path).unwrap();
    let public = std::fs::read_to_string(key_path.with_extension("pub")).unwrap();
    let sim = crate::support::BlockingSim::start(SimOptions::default());
    let out = dir.path().join("out");
    signed_run(&sim, dir.path(), &out, &key, "ok-n1\n");
    signed_run(&sim, dir.path(), &out, &key, "ok-n2\n");
    let runs = crate::support::commit_runs(&out);
    assert_eq!(runs.len(), 2);

    // The standard verifier accepts each signature for its commit, and not for the other.
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(&allowed, format!("exporter {public}")).unwrap();
    let ssh_verify = |commit: &str, sig: &str| {
        std::process::Command::new(&ssh_keygen)
            .args(["-Y", "verify", "-n", "jumio-export", "-I", "exporter", "-f"])
            .arg(&allowed)
            .arg("-s")
            .arg(out.join(format!("commits/{sig}.json.sig")))
            .stdin(std::fs::File::open(out.join(format!("commits/{commit}.json"))).unwrap())
            .output()
            .unwrap()
    };
    for run in &runs {
        let o = ssh_verify(run, run);
        assert!(o.status.success(), "{run}: {}", crate::support::text(&o));
    }
    assert!(!ssh_verify(&runs[0], &runs[1]).status.success());

    // verify --public-key checks every signature (key.pub or the allowed_signers line).
    let verify = |key_file: &Path| {
        crate::support::bin()
            .arg("verify")
            .arg(&out)
            .arg("--public-key")
            .arg(key_file)
            .output()
            .unwrap()
    };
    for key_file in [key_path.with_extension("pub"), allowed.clone()] {
        let o = verify(&key_file);
        assert_eq!(o.status.code(), Some(0), "{}", crate::support::text(&o));
    }

    // An auditor's nightmare: the first commit rewritten (here its report's job hash), every
    // hash in it still consistent. Without the key verify cannot tell; with it, it does.
    let first = out.join(format!("commits/{}.json", runs[0]));
    let mut commit: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    commit["report"]["job_sha256"] = serde_json::json!("0".repeat(64));
    let mut bytes = serde_json::to_vec_pretty(&commit).unwrap();
    bytes.push(b'\n');
    std::fs::write(&first, bytes).unwrap();
    let unsigned_check = crate::support::bin()
        .arg("verify")
        .arg(&out)
        .output()
        .unwrap();
    let text = crate::support::text(&unsigned_check);
    assert!(!text.contains("signature"), "{text}");
    let o = verify(&key_path.with_extension("pub"));
    let text = crate::support::text(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "commits/{}.json: signature: does not match",
            runs[0]
        )),
        "{text}"
    );
    assert!(!ssh_verify(&runs[0], &runs[0]).status.success());
    // A commit whose signature is gone is not signed.
    std::fs::remove_file(out.join(format!("commits/{}.json.sig", runs[1]))).unwrap();
    let text = crate::support::text(&verify(&key_path.with_extension("pub")));
    assert!(
        text.contains(&format!("commits/{}.json: not signed", runs[1])),
        "{text}"
    );
    // Nothing the run wrote or printed holds the private key.
    let secret_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for entry in walk(&out) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&secret_body[..40]), "{entry:?}");
    }
}

#[test]
fn a_signing_key_that_is_missing_or_not_a_key_is_exit_2_naming_the_setting_not_the_value() {
    use jumio_export::simulator::SimOptions;
    let sim = crate::support::BlockingSim::start(SimOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (job, refs) = crate::support::job_files(
        dir.path(),
        &format!("{HEAD}[output]\nsigning_key_env = \"TEST_COMMIT_KEY\"\n"),
        "refs.txt",
        "ok-n1\n",
    );
    for value in [None, Some("not-a-key-canary-8f3e")] {
        let mut c = crate::support::bin();
        c.env_remove("TEST_COMMIT_KEY");
        if let Some(v) = value {
            c.env("TEST_COMMIT_KEY", v);
        }
        let o = c
            .arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&refs)
            .arg("--out")
            .arg(dir.path().join("out"))
            .args(["--base-url", &sim.api().base_url()])
            .output()
            .unwrap();
        let text = crate::support::text(&o);
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(
            text.contains("[output] signing_key_env: TEST_COMMIT_KEY"),
            "{text}"
        );
        assert!(!text.contains("canary"), "{text}");
        assert!(sim.api().requests().is_empty());
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_linked_claims_directory_is_never_written_through_when_an_archive_is_taken_over() {
    use jumio_export::simulator::SimOptions;
    let sim = crate::support::BlockingSim::start(SimOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (job, refs) = crate::support::job_files(
        dir.path(),
        &format!("{HEAD}[polling]\nschedule_seconds = [0.05]\n"),
        "refs.txt",
        "ok-n1\n",
    );
    let out = dir.path().join("out");
    let run = || {
        crate::support::bin()
            .arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&refs)
            .arg("--out")
            .arg(&out)
            .args(["--base-url", &sim.api().base_url(), "--quiet"])
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        crate::support::text(&first)
    );
    // The run "died before its commit": its archive is left for the next run to take over, by a
    // claim under archives/.claims/, which someone turned into a link.
    let runs = crate::support::commit_runs(&out);
    std::fs::remove_file(out.join(format!("commits/{}.json", runs[0]))).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("archives/.claims")).unwrap();
    let second = run();
    let text = crate::support::text(&second);
    assert_ne!(second.status.code(), Some(0), "{text}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written through the link: {text}"
    );
}

// ---- point 6: PII profiles ----------------------------------------------------------------------

const PII_KEY: &[u8] = b"pii-key-canary-5d1e9a7c";

async fn pii_run(s: &Server, profile: &str, key: Option<&[u8]>) -> Ran {
    use jumio_export::flatten::pii::Pseudonymiser;
    let job = format!(
        "{}\n[output]\npii = \"{profile}\"\npii_key_env = \"TEST_PII_KEY\"\n",
        job_text(&Limits::default())
    );
    let opts = RunOptions {
        pseudonymiser: key.map(|k| Pseudonymiser::new(k).unwrap()),
        ..RunOptions::default()
    };
    run_full(&s.base(), &job, |_| {}, opts).await
}

/// Every byte of every committed CSV part of the netverify table.
fn netverify_csv_text(out: &Path) -> String {
    committed_parts(out, "netverify", "csv")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonymised_tables_hold_keyed_tokens_stable_across_runs_and_verify_recomputes_them() {
    use jumio_export::flatten::pii::Pseudonymiser;
    let s: Server = origin().await;
    let ran = pii_run(&s, "pseudonymised", Some(PII_KEY)).await;
    assert_eq!(ran.summary.exit_code(), 0);
    let (ok, bad) = (
        &rows_for(&ran.out, "netverify", OK)[0],
        &rows_for(&ran.out, "netverify", BAD)[0],
    );
    let token = Pseudonymiser::new(PII_KEY).unwrap().token("ADA");
    // Same person (both are ADA), same token; the date of birth is a token in a text column.
    assert_eq!(ok["document_first_name"], token);
    assert_eq!(bad["document_first_name"], token);
    assert!(ok["document_dob"].starts_with("hmac-sha256:"), "{ok:?}");
    assert_eq!(
        parquet_text(&ran.out, OK, "document_first_name").as_deref(),
        Some(token.as_str())
    );
    // Not a direct identifier: kept.
    assert_eq!(ok["document_type"], "PASSPORT");
    let csv = netverify_csv_text(&ran.out);
    assert!(!csv.contains("ADA") && !csv.contains("1990-12-31"), "{csv}");
    assert_eq!(
        crate::support::commits(&ran.out)[0]["output"]["pii"],
        "pseudonymised"
    );
    // verify recomputes the tokens with the key, and leaves them out without it.
    let key = Pseudonymiser::new(PII_KEY).unwrap();
    let with_key = jumio_export::verify::verify_with(
        &ran.out,
        jumio_export::verify::VerifyOptions {
            pseudonymiser: Some(&key),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(with_key.findings.is_empty(), "{:?}", with_key.findings);
    verify_clean(&ran.out);
    let wrong = Pseudonymiser::new(b"another-key-of-16-bytes").unwrap();
    let with_wrong = jumio_export::verify::verify_with(
        &ran.out,
        jumio_export::verify::VerifyOptions {
            pseudonymiser: Some(&wrong),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        !with_wrong.findings.is_empty(),
        "a wrong key must not check out"
    );

    // Another run, another dataset, the same key: the same token.
    let again = pii_run(&s, "pseudonymised", Some(PII_KEY)).await;
    assert_eq!(
        rows_for(&again.out, "netverify", OK)[0]["document_first_name"],
        token
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_tables_have_no_direct_identifier_columns_and_verify_checks_the_rest() {
    let s: Server = origin().await;
    let mut data = data_body(BAD);
    // A date of birth that does not parse would land in unmapped_json: not in this profile.
    data["document"]["dob"] = j!("31/12/1990");
    s.set(&format!("{}/data", scan(BAD)), json(&data));
    let ran = pii_run(&s, "minimal", None).await;
    assert_eq!(ran.summary.exit_code(), 0);
    let csv = netverify_csv_text(&ran.out);
    let header = csv.lines().next().unwrap();
    for column in [
        "document_first_name",
        "document_dob",
        "document_address_city",
    ] {
        assert!(
            !header.split(',').any(|c| c == column),
            "{column} in {header}"
        );
    }
    assert!(header.contains("document_type"));
    assert!(!csv.contains("ADA") && !csv.contains("31/12/1990"), "{csv}");
    assert_eq!(
        crate::support::commits(&ran.out)[0]["output"]["pii"],
        "minimal"
    );
    verify_clean(&ran.out);
}

#[test]
fn a_dataset_holds_one_profile_and_full_warns_of_card_numbers_in_clear() {
    use jumio_export::simulator::SimOptions;
    let sim = crate::support::BlockingSim::start(SimOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = |profile: &str| {
        let (job, refs) = crate::support::job_files(
            dir.path(),
            &format!("{HEAD}[polling]\nschedule_seconds = [0.05]\n[output]\npii = \"{profile}\"\n"),
            "refs.txt",
            "ok-n1\n",
        );
        crate::support::bin()
            .arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&refs)
            .arg("--out")
            .arg(&out)
            .args(["--base-url", &sim.api().base_url(), "--quiet"])
            .output()
            .unwrap()
    };
    let full = run("full");
    let text = crate::support::text(&full);
    assert_eq!(full.status.code(), Some(0), "{text}");
    assert!(
        text.contains("pan column") && text.contains("PCI DSS"),
        "{text}"
    );
    let before = sim.api().requests().len();
    let minimal = run("minimal");
    let text = crate::support::text(&minimal);
    assert_eq!(minimal.status.code(), Some(2), "{text}");
    assert!(
        text.contains(
            "[output] pii = \"minimal\", but the dataset was written with pii = \"full\""
        ),
        "{text}"
    );
    assert!(!text.contains("PCI DSS"), "{text}");
    assert_eq!(sim.api().requests().len(), before, "nothing fetched");
    // The DDL follows the profile.
    let ddl = |profile: &str| {
        let o = crate::support::bin()
            .args(["schema", "--dialect", "postgres", "--pii", profile])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0));
        String::from_utf8(o.stdout).unwrap()
    };
    assert!(ddl("full").contains("document_first_name"));
    assert!(!ddl("minimal").contains("document_first_name"));
    let pseudonymised = ddl("pseudonymised");
    let dob = pseudonymised
        .lines()
        .find(|l| l.contains("document_dob"))
        .unwrap();
    assert!(!dob.contains("DATE"), "{dob}");
}

#[test]
fn pseudonymised_without_a_key_variable_is_refused_naming_the_key() {
    let e = parse_err(&format!("{HEAD}[output]\npii = \"pseudonymised\"\n"));
    assert!(
        e.contains("[output] pii: \"pseudonymised\" needs [output] pii_key_env"),
        "{e}"
    );
    let e = parse_err(&format!("{HEAD}[output]\npii = \"anonymous\"\n"));
    assert!(e.contains("[output] pii: unknown profile"), "{e}");
}
