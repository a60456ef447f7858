//! Job file, input list and request budget: what a user sees from `plan` and from a
//! mistyped job file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jumio_export::Kind;
use jumio_export::input::{InputError, InputList, parse_input, read_input, shard_of};
use jumio_export::job::{self, Credentials, JobError, Overrides, Region, Shard};
use jumio_export::plan::{budget, requests_per_reference};

const HEAD: &str = "[api]\nuser_agent = \"Test Corp Export/1.0\"\n";

fn jobs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs")
}

fn parse(text: &str) -> Result<job::Job, JobError> {
    job::parse(text, Path::new("jobs/x.toml"), &Overrides::default())
}

fn parse_with(text: &str, o: &Overrides) -> job::Job {
    job::parse(text, Path::new("jobs/x.toml"), o).unwrap()
}

// ---- job files ----------------------------------------------------------------------

#[test]
fn every_job_file_in_jobs_parses() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(jobs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let job = job::load(&path, &Overrides::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!job.api.user_agent.is_empty());
            seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, ["demo.toml", "eu-export.toml", "us-export.toml"]);
}

#[test]
fn shipped_job_files_have_the_documented_settings() {
    let demo = job::load(&jobs_dir().join("demo.toml"), &Overrides::default()).unwrap();
    assert_eq!(demo.api.region, Region::Us);
    assert!(demo.api.user_agent.starts_with("jumio-export demo/"));
    assert_eq!(demo.limits.requests_per_second, 200.0);
    assert_eq!(demo.limits.burst, 50);
    assert_eq!(demo.limits.concurrency, 16);
    assert_eq!(
        demo.polling.schedule,
        [200, 400, 600, 800, 1000].map(Duration::from_millis)
    );
    assert_eq!(demo.output.dir, PathBuf::from("export-demo"));

    for (file, region, host) in [
        ("us-export.toml", Region::Us, "netverify.com"),
        ("eu-export.toml", Region::Eu, "lon.netverify.com"),
    ] {
        let job = job::load(&jobs_dir().join(file), &Overrides::default()).unwrap();
        assert_eq!(job.api.region, region, "{file}");
        assert_eq!(job.api.netverify_url.host_str(), Some(host), "{file}");
        assert_eq!(job.limits.requests_per_second, 10.0, "{file}");
        let secs: Vec<u64> = job.polling.schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(
            secs,
            [40, 60, 100, 160, 240, 340, 460, 600, 760, 940],
            "{file}"
        );
        // The input path is resolved against the job file's directory.
        let input = PathBuf::from(job.input.path.unwrap());
        assert_eq!(input.parent(), Some(jobs_dir().as_path()), "{file}");
    }
}

#[test]
fn job_sha256_is_of_the_file_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.toml");
    let text = format!("{HEAD}[input]\npath = \"refs.txt\"\n");
    std::fs::write(&path, &text).unwrap();
    let job = job::load(&path, &Overrides::default()).unwrap();
    // sha256 of these exact bytes, computed independently.
    use sha2::Digest;
    assert_eq!(
        job.sha256,
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    );
    assert_eq!(
        job.input.path.as_deref(),
        Some(dir.path().join("refs.txt").to_str().unwrap())
    );
    assert_eq!(job.path, path);
}

#[test]
fn missing_job_file_is_named() {
    let err = job::load(Path::new("/nonexistent/job.toml"), &Overrides::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read job file /nonexistent/job.toml"),
        "{err}"
    );
}

/// Each case: the lines after `HEAD` (which is lines 1-2), the line the error must name
/// and the text that must follow `jobs/x.toml:LINE: `.
#[test]
fn each_validation_error_names_file_line_and_key() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "[limits]\nrequests_per_second = 0\n",
            4,
            "[limits] requests_per_second: must be",
        ),
        (
            "[limits]\nrequests_per_second = -2.5\n",
            4,
            "[limits] requests_per_second: must be",
        ),
        (
            "[limits]\nrequests_per_second = nan\n",
            4,
            "[limits] requests_per_second: must be",
        ),
        (
            "[limits]\nrequests_per_second = inf\n",
            4,
            "[limits] requests_per_second: must be",
        ),
        (
            "[limits]\nrequests_per_second = \"fast\"\n",
            4,
            "[limits] requests_per_second: invalid type",
        ),
        (
            "[limits]\nburst = 0\n",
            4,
            "[limits] burst: must be at least 1",
        ),
        ("[limits]\nburst = -3\n", 4, "[limits] burst: invalid value"),
        (
            "[limits]\n\nconcurrency = 0\n",
            5,
            "[limits] concurrency: must be at least 1",
        ),
        (
            "[limits]\ntimeout_seconds = 0\n",
            4,
            "[limits] timeout_seconds: must be greater than 0",
        ),
        (
            "[limits]\nmax_throttle_seconds = 0\n",
            4,
            "[limits] max_throttle_seconds: must be greater than 0",
        ),
        (
            "[limits]\nmax_throttle_seconds = -60\n",
            4,
            "[limits] max_throttle_seconds: must be greater than 0",
        ),
        (
            "[limits]\nmax_file_bytes = 0\n",
            4,
            "[limits] max_file_bytes: must be at least 1",
        ),
        (
            "[limits]\nmax_list_items = 0\n",
            4,
            "[limits] max_list_items: must be at least 1",
        ),
        (
            "[limits]\nmax_retries = true\n",
            4,
            "[limits] max_retries: invalid type",
        ),
        (
            "[polling]\nschedule_seconds = []\n",
            4,
            "[polling] schedule_seconds: must list at least one",
        ),
        (
            "[polling]\nschedule_seconds = [\n  1,\n  -2,\n]\n",
            6,
            "[polling] schedule_seconds: entry 2 is -2",
        ),
        (
            "[polling]\nschedule_seconds = [10, 20,\n  20]\n",
            5,
            "[polling] schedule_seconds: must be strictly increasing",
        ),
        (
            "[polling]\ndaily_retry = \"yes\"\n",
            4,
            "[polling] daily_retry: invalid type",
        ),
        (
            "region = \"de\"\n",
            3,
            "[api] region: unknown region \"de\"",
        ),
        (
            "netverify_url = \"not a url\"\n",
            3,
            "[api] netverify_url: not a URL",
        ),
        (
            "netverify_url = \"ftp://x.example\"\n",
            3,
            "[api] netverify_url: scheme must be http or https",
        ),
        (
            "retrieval_url = \"https://user:pw@x.example\"\n",
            3,
            "[api] retrieval_url: must not contain a user name or password",
        ),
        (
            "retrieval_url = \"https://x.example/?a=1\"\n",
            3,
            "[api] retrieval_url: must not contain a query",
        ),
        (
            "token_env = \"\"\n",
            3,
            "[api] token_env: must be an environment variable name",
        ),
        (
            "[input]\ndefault_kind = \"passport\"\n",
            4,
            "[input] default_kind: unknown kind \"passport\"",
        ),
        (
            "[output]\ndir = \"\"\n",
            4,
            "[output] dir: must not be empty",
        ),
        ("[output]\ncsv = 1\n", 4, "[output] csv: invalid type"),
        (
            "[fetch]\nimages = \"no\"\n",
            4,
            "[fetch] images: invalid type",
        ),
        (
            "[limits]\nconcurency = 4\n",
            4,
            "unknown key `concurency` in [limits] (expected one of",
        ),
        (
            "[ouput]\ndir = \"x\"\n",
            3,
            "unknown key `ouput` in the top level (expected one of `api`",
        ),
        (
            "token = \"abc\"\n",
            3,
            "unknown key `token` in [api] (credentials are never read from the job file",
        ),
        (
            "secret = \"abc\"\n",
            3,
            "unknown key `secret` in [api] (credentials are never read from the job file",
        ),
    ];
    for (tail, line, expected) in cases {
        let text = format!("{HEAD}{tail}");
        let err = parse(&text).expect_err(tail).to_string();
        let want = format!("jobs/x.toml:{line}: {expected}");
        assert!(
            err.starts_with(&want),
            "for {tail:?}\n got: {err}\nwant: {want}…"
        );
    }
}

#[test]
fn user_agent_is_required_and_not_empty() {
    let err = parse("[api]\nregion = \"eu\"\n").unwrap_err().to_string();
    assert!(
        err.starts_with("jobs/x.toml:1: [api] user_agent: required"),
        "{err}"
    );
    let err = parse("[api]\nuser_agent = \"  \"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("jobs/x.toml:2: [api] user_agent: must not be empty"),
        "{err}"
    );
    let err = parse("").unwrap_err().to_string();
    assert!(
        err.starts_with("jobs/x.toml: [api] user_agent: required"),
        "{err}"
    );
}

#[test]
fn syntax_error_names_line_and_column() {
    let err = parse(&format!("{HEAD}[limits]\nburst = = 3\n"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("jobs/x.toml:4:9: invalid TOML"), "{err}");
}

#[test]
fn credential_values_never_appear_in_errors() {
    let text = format!("{HEAD}token = \"tok-zz9-value\"\n");
    let err = parse(&text).unwrap_err();
    assert!(!err.to_string().contains("zz9"), "{err}");
    assert!(!format!("{err:?}").contains("zz9"), "{err:?}");
    let text = "[api]\nuser_agent = \"x\"\nnetverify_url = \"https://me:pw-zz9@h.example\"\n";
    let err = parse(text).unwrap_err();
    assert!(!err.to_string().contains("zz9"), "{err}");
}

#[test]
fn overrides_replace_job_values() {
    let text = format!(
        "{HEAD}[input]\npath = \"refs.txt\"\n[limits]\nrequests_per_second = 12\nburst = 9\n\
         concurrency = 3\n[output]\ndir = \"out\"\n"
    );
    let plain = parse_with(&text, &Overrides::default());
    assert_eq!(plain.input.path.as_deref(), Some("jobs/refs.txt"));
    assert_eq!(plain.limits.requests_per_second, 12.0);
    assert_eq!(plain.limits.burst, 9);
    assert_eq!(plain.output.dir, PathBuf::from("out"));

    let o = Overrides {
        input: Some("-".into()),
        out: Some(PathBuf::from("/tmp/elsewhere")),
        base_url: Some("http://127.0.0.1:8080".into()),
        rate: Some(40.0),
        concurrency: Some(5),
        shard: Some("1/4".parse().unwrap()),
        shard_count: None,
    };
    let job = parse_with(&text, &o);
    assert_eq!(job.input.path.as_deref(), Some("-"));
    assert_eq!(job.output.dir, PathBuf::from("/tmp/elsewhere"));
    assert_eq!(job.api.netverify_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(job.api.retrieval_url.as_str(), "http://127.0.0.1:8080/");
    // 40/s split over 4 shards; the burst likewise, rounded up.
    assert_eq!(job.limits.requests_per_second, 10.0);
    assert_eq!(job.limits.burst, 3);
    assert_eq!(job.limits.concurrency, 5);
    assert_eq!(job.shard, Some(Shard { index: 1, count: 4 }));

    // An --input path is the user's, relative to the current directory: not re-anchored.
    let o = Overrides {
        input: Some("mine.txt".into()),
        ..Overrides::default()
    };
    assert_eq!(
        parse_with(&text, &o).input.path.as_deref(),
        Some("mine.txt")
    );
}

#[test]
fn bad_overrides_name_the_flag() {
    let bad = |o: Overrides| {
        job::parse(HEAD, Path::new("j.toml"), &o)
            .unwrap_err()
            .to_string()
    };
    let e = bad(Overrides {
        rate: Some(0.0),
        ..Default::default()
    });
    assert!(e.starts_with("--rate: "), "{e}");
    let e = bad(Overrides {
        concurrency: Some(0),
        ..Default::default()
    });
    assert!(e.starts_with("--concurrency: must be at least 1"), "{e}");
    let e = bad(Overrides {
        base_url: Some("http://a:b@h.example".into()),
        ..Default::default()
    });
    assert!(
        e.starts_with("--base-url: must not contain a user name"),
        "{e}"
    );
    assert!(!e.contains("a:b"), "{e}");
}

#[test]
fn shard_text_is_zero_based_k_of_n() {
    assert_eq!(
        "0/1".parse::<Shard>().unwrap(),
        Shard { index: 0, count: 1 }
    );
    for bad in ["1/1", "2/1", "0/0", "1", "a/b", ""] {
        let e = bad.parse::<Shard>().unwrap_err().to_string();
        assert!(e.starts_with(&format!("--shard {bad:?}: ")), "{e}");
    }
}

#[test]
fn credentials_come_from_the_named_variables_and_never_print() {
    // PATH is set in every test environment; reading it avoids mutating the process
    // environment from a multi-threaded test.
    let text = "[api]\nuser_agent = \"x\"\ntoken_env = \"PATH\"\nsecret_env = \"PATH\"\n";
    let job = parse(text).unwrap();
    let creds = Credentials::from_env(&job.api).unwrap();
    let path = std::env::var("PATH").unwrap();
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{path}:{path}"));
    assert_eq!(creds.basic_header_value(), format!("Basic {expected}"));
    assert_eq!(format!("{creds:?}"), "<redacted>");
    assert_eq!(format!("{creds}"), "<redacted>");
    assert_eq!(format!("{:?}", Some(&creds)), "Some(<redacted>)");

    let text = "[api]\nuser_agent = \"x\"\ntoken_env = \"JUMIO_EXPORT_TEST_UNSET_VAR_7\"\n";
    let err = Credentials::from_env(&parse(text).unwrap().api).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "environment variable JUMIO_EXPORT_TEST_UNSET_VAR_7 (named by [api] token_env) is not set"
        ),
        "{err}"
    );
}

// ---- input --------------------------------------------------------------------------

fn refs(list: &InputList) -> Vec<(String, Kind)> {
    let items = list.items.read_all().unwrap();
    items.into_iter().map(|i| (i.reference, i.kind)).collect()
}

fn r(s: &str, k: Kind) -> (String, Kind) {
    (s.to_string(), k)
}

#[test]
fn text_list_crlf_bom_spaces_comments_and_duplicates() {
    let bytes = b"\xEF\xBB\xBF# exported 2024-01-01\r\n  aaa-111  \r\nbbb-222\t\r\n\r\n# again\r\naaa-111\r\nccc\r\n";
    let list = parse_input(bytes, "refs.txt", Kind::Netverify).unwrap();
    assert_eq!(
        refs(&list),
        [
            r("aaa-111", Kind::Netverify),
            r("bbb-222", Kind::Netverify),
            r("ccc", Kind::Netverify)
        ]
    );
    assert_eq!(list.duplicates, 1);
    assert!(list.rejected.is_empty());
}

#[test]
fn invalid_references_are_rejected_with_line_and_reason() {
    let long = "a".repeat(37);
    let ok36 = "b".repeat(36);
    let text = format!("good-1\n{long}\n../x\n{ok36}\nhas space\nesc\u{1b}[31m\n");
    let list = parse_input(text.as_bytes(), "refs.txt", Kind::Document).unwrap();
    assert_eq!(
        refs(&list),
        [r("good-1", Kind::Document), r(&ok36, Kind::Document)]
    );
    let got: Vec<(&str, usize)> = list
        .rejected
        .iter()
        .map(|x| (x.raw.as_str(), x.line))
        .collect();
    assert_eq!(
        got,
        [
            (long.as_str(), 2),
            ("../x", 3),
            ("has space", 5),
            ("esc\\u{1b}[31m", 6)
        ]
    );
    assert!(list.rejected[0].reason.contains("37 characters"));
    assert!(list.rejected.iter().all(|x| x.kind == Kind::Document));
}

#[test]
fn csv_with_kind_column() {
    let text = "Reference , Kind\r\nn-1,netverify\r\nd-1,document\r\na-1,authentication\r\n\
                x-1,\r\nn-1,document\r\nn-1,netverify\r\n,document\r\n\"q-1\",\"document\"\r\n";
    let list = parse_input(text.as_bytes(), "refs.csv", Kind::Netverify).unwrap();
    assert_eq!(
        refs(&list),
        [
            r("n-1", Kind::Netverify),
            r("d-1", Kind::Document),
            r("a-1", Kind::Authentication),
            r("x-1", Kind::Netverify),
            r("n-1", Kind::Document),
            r("q-1", Kind::Document),
        ]
    );
    assert_eq!(list.duplicates, 1);
    assert_eq!(list.rejected.len(), 1);
    assert_eq!(list.rejected[0].raw, "");
    assert_eq!(list.rejected[0].line, 8);
    assert_eq!(list.rejected[0].kind, Kind::Document);
    assert_eq!(list.rejected[0].reason, "empty reference");
}

#[test]
fn csv_without_kind_column_uses_default_kind() {
    let text = "# from the warehouse\n\nid,reference,created\n1,r-1,2024\n2,r-2,2024\n";
    let list = parse_input(text.as_bytes(), "refs.csv", Kind::Authentication).unwrap();
    assert_eq!(
        refs(&list),
        [
            r("r-1", Kind::Authentication),
            r("r-2", Kind::Authentication)
        ]
    );
}

#[test]
fn csv_without_reference_column_is_an_error_naming_the_file() {
    let text = "\nscan,kind\nabc,netverify\n";
    let err = parse_input(text.as_bytes(), "refs.csv", Kind::Netverify).unwrap_err();
    assert!(matches!(err, InputError::NoReferenceColumn { line: 2, .. }));
    assert!(err.to_string().starts_with("refs.csv:2: "), "{err}");
}

#[test]
fn unknown_kind_in_csv_names_file_and_line() {
    let text = "reference,kind\nabc,netverify\ndef,passport\n";
    let err = parse_input(text.as_bytes(), "refs.csv", Kind::Netverify).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("refs.csv:3: unknown kind \"passport\""),
        "{err}"
    );
}

/// `failures.csv` is usable as the input of a later run as it is (SPEC), with or without the
/// `run` column SPEC lists last; so is a CSV part of the `failures` table, which has it.
#[test]
fn failures_csv_of_an_earlier_run_is_valid_input() {
    let run = "20261206T074501Z-7f2a";
    let rows = [
        "p-1,netverify,status,200,PENDING,11,2024-05-02T10:00:00Z",
        "d-9,document,data,404,NOT_FOUND,1,",
        "\"a,1\",authentication,input,,INVALID_REFERENCE,0,",
        "n-7,netverify,images,503,HTTP_ERROR,7,",
    ];
    let header = "reference,kind,stage,http_status,error,attempts,next_attempt_after";
    for (name, with_run) in [
        ("export/failures.csv", false),
        ("export/failures.csv", true),
        ("export/tables/failures/20261206T074501Z-7f2a-0.csv", true),
    ] {
        let mut text = String::from(header);
        text.push_str(if with_run { ",run\n" } else { "\n" });
        for row in rows {
            text.push_str(row);
            text.push_str(if with_run { "," } else { "" });
            text.push_str(if with_run { run } else { "" });
            text.push('\n');
        }
        let list = parse_input(text.as_bytes(), name, Kind::Netverify).unwrap();
        assert_eq!(
            refs(&list),
            [
                r("p-1", Kind::Netverify),
                r("d-9", Kind::Document),
                r("n-7", Kind::Netverify)
            ],
            "{name}, run column: {with_run}"
        );
        assert_eq!(list.rejected.len(), 1);
        assert_eq!(list.rejected[0].raw, "a,1");
        assert_eq!(list.rejected[0].kind, Kind::Authentication);
        assert_eq!(list.rejected[0].line, 4);
    }
}

#[test]
fn non_utf8_input_is_an_error_naming_the_file() {
    let err = parse_input(b"abc\ndef\xff\n", "refs.txt", Kind::Netverify).unwrap_err();
    assert_eq!(err.to_string(), "refs.txt:2: input is not UTF-8 text");
}

#[test]
fn stdin_is_named_in_errors() {
    // The binary reads `--input -` from standard input; a bad line there is named as standard
    // input (`<stdin>`) with its line number. No file called `-` exists in the directory, so
    // reading one by mistake would say "cannot read input -" instead.
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), HEAD).unwrap();
    let plan = |stdin: &[u8]| {
        let mut child = crate::support::bin()
            .args(["plan", "job.toml", "--input", "-", "--out", "out"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    for (input, needle) in [
        (
            &b"reference,kind\nok-n1,netverify\nok-n2,selfie\n"[..],
            "<stdin>:3: unknown kind \"selfie\"",
        ),
        (&b"ok-n1\nok-n2\xff\n"[..], "<stdin>:2: input is not UTF-8"),
        (
            &b"# refs\na,b\n"[..],
            "<stdin>:2: the first line has commas",
        ),
    ] {
        let o = plan(input);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{needle}: {err}");
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
    // And a good list on standard input is read: three references, one of them twice.
    let o = plan(b"ok-n1\nok-n2\nok-n1\nok-n3\n");
    assert_eq!(o.status.code(), Some(0), "{}", crate::support::text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let netverify = out
        .lines()
        .find(|l| l.starts_with("netverify "))
        .unwrap_or_else(|| panic!("no netverify line: {out}"));
    assert_eq!(
        netverify.split_whitespace().nth(1),
        Some("3"),
        "three references read from standard input: {out}"
    );
    assert!(out.contains("duplicate lines (exported once): 1"), "{out}");
}

#[test]
fn read_input_reads_files_and_names_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refs.txt");
    std::fs::write(&path, "x-1\nx-2\n").unwrap();
    let list = read_input(path.to_str().unwrap(), Kind::Document).unwrap();
    assert_eq!(
        refs(&list),
        [r("x-1", Kind::Document), r("x-2", Kind::Document)]
    );
    use sha2::Digest;
    assert_eq!(
        list.sha256,
        hex::encode(sha2::Sha256::digest(b"x-1\nx-2\n"))
    );

    let missing = dir.path().join("nope.txt");
    let err = read_input(missing.to_str().unwrap(), Kind::Document).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read input {}", missing.display())),
        "{err}"
    );
}

#[test]
fn empty_input_is_an_empty_list() {
    let list = parse_input(b"\n# nothing\n\n", "refs.txt", Kind::Netverify).unwrap();
    assert!(list.items.is_empty() && list.rejected.is_empty());
}

// ---- sharding -----------------------------------------------------------------------

#[test]
fn shard_of_is_pinned() {
    // first 8 bytes of sha256, big-endian, mod N; computed independently (Python hashlib).
    // If this fails, shards of one export written by different versions disagree.
    assert_eq!(shard_of("ref-1", 4), 0);
    assert_eq!(shard_of("ref-2", 4), 3);
    assert_eq!(shard_of("ref-3", 4), 2);
    assert_eq!(shard_of("ref-2", 2), 1);
    assert_eq!(shard_of("ref-3", 7), 6);
    assert_eq!(shard_of("ABC-123", 1000), 616);
    assert_eq!(shard_of("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", 1000), 918);
}

#[test]
fn shards_partition_the_input() {
    let refs: Vec<String> = (0..300).map(|i| format!("ref-{i}")).collect();
    let n = 4;
    let mut per_shard = vec![Vec::new(); n as usize];
    for r in &refs {
        per_shard[shard_of(r, n) as usize].push(r.clone());
    }
    let mut union: Vec<String> = per_shard.concat();
    union.sort();
    let mut all = refs.clone();
    all.sort();
    assert_eq!(union, all);
    for shard in &per_shard {
        // 75 expected per shard; a hash that clumps would fail this.
        assert!(shard.len() > 40, "{}", shard.len());
    }
}

// ---- plan ---------------------------------------------------------------------------

fn small_input() -> InputList {
    let text = "reference,kind\nn-1,netverify\nn-2,netverify\nn-3,netverify\nn-1,netverify\n\
                d-1,document\nd-2,document\na-1,authentication\n../x,netverify\n";
    parse_input(text.as_bytes(), "refs.csv", Kind::Netverify).unwrap()
}

#[test]
fn budget_for_a_small_known_input() {
    let job = parse(HEAD).unwrap(); // defaults: 10/s, 10-offset schedule, every switch but unmasked
    assert_eq!(requests_per_reference(Kind::Netverify, &job), (4, 22));
    assert_eq!(requests_per_reference(Kind::Document, &job), (4, 6));
    assert_eq!(requests_per_reference(Kind::Authentication, &job), (2, 18));

    let b = budget(&job, &small_input()).unwrap();
    let rows: Vec<(Kind, u64, u64, u64)> = b
        .per_kind
        .iter()
        .map(|k| (k.kind, k.references, k.min_requests, k.max_requests))
        .collect();
    assert_eq!(
        rows,
        [
            (Kind::Netverify, 3, 12, 66),
            (Kind::Document, 2, 8, 12),
            (Kind::Authentication, 1, 2, 18)
        ]
    );
    assert_eq!((b.total_min, b.total_max), (22, 96));
    assert!((b.seconds_min - 2.2).abs() < 1e-9);
    assert!((b.seconds_max - 9.6).abs() < 1e-9);
    assert_eq!((b.rejected, b.duplicates), (1, 1));
    // Ten entries, ten status calls: the last one waits the ninth offset.
    assert_eq!(b.polling_window_seconds, 760.0);

    let shown = b.to_string();
    for needle in [
        "nothing was sent",
        "netverify                   3               12               66",
        "total                       6               22               96",
        "invalid references in the input (never sent, listed in failures.csv): 1",
        "duplicate lines (exported once): 1",
        "time at 10 requests/s: 2.2 s (fewest) to 9.6 s (most)",
        "12m 40s after its first status call",
        "netverify: fewest 4 = 1 status calls + 1 data + 1 images list + 1 images (front, back, face); \
         most 22 = 10 status calls + 1 data + 1 images list + 3 images (front, back, face) + 7 liveness images",
        "retries (429, 5xx, network errors; up to 6 per request) are not included",
    ] {
        assert!(shown.contains(needle), "missing {needle:?} in\n{shown}");
    }
}

#[test]
fn budget_follows_the_fetch_switches() {
    let text = format!(
        "{HEAD}[fetch]\nimages = false\nliveness_images = false\noriginal_documents = false\n\
         [polling]\nschedule_seconds = [5, 10]\n"
    );
    let job = parse(&text).unwrap();
    assert_eq!(requests_per_reference(Kind::Netverify, &job), (2, 3));
    assert_eq!(requests_per_reference(Kind::Document, &job), (2, 2));
    assert_eq!(requests_per_reference(Kind::Authentication, &job), (1, 2));

    // Unmasked pages may each be refused (403) and fetched again masked.
    let job = parse(&format!("{HEAD}[fetch]\nunmasked_card_images = true\n")).unwrap();
    assert_eq!(requests_per_reference(Kind::Document, &job), (4, 8));
}

#[test]
fn budget_counts_only_this_shards_references_at_its_share_of_the_rate() {
    let input = small_input();
    let mut refs_total = 0;
    let mut min_total = 0;
    for k in 0..3 {
        let o = Overrides {
            shard: Some(Shard { index: k, count: 3 }.into()),
            ..Overrides::default()
        };
        let job = parse_with(HEAD, &o);
        let b = budget(&job, &input).unwrap();
        let expected: u64 = input
            .items
            .read_all()
            .unwrap()
            .iter()
            .filter(|i| shard_of(&i.reference, 3) == k)
            .count() as u64;
        let counted: u64 = b.per_kind.iter().map(|k| k.references).sum();
        assert_eq!(counted, expected);
        assert!((b.requests_per_second - 10.0 / 3.0).abs() < 1e-9);
        assert!((b.seconds_min - b.total_min as f64 * 3.0 / 10.0).abs() < 1e-9);
        assert!(b.to_string().contains(&format!("shard {k}/3")));
        refs_total += counted;
        min_total += b.total_min;
    }
    assert_eq!(refs_total, 6);
    assert_eq!(min_total, 22);
}

/// `plan` on a list of 500,000 references (18.5 MB) under an address-space cap for data
/// (RLIMIT_DATA: heap and anonymous mappings) of 16 MiB: the input is read as a stream, so the
/// list's size never has to fit in memory. The cap holds about twice what the command needs
/// (two runtime threads, the 1 MiB de-duplication sort); reading the whole file first needs the
/// file's size on top and fails. A one-line list under the same cap shows the cap itself is
/// not what fails.
#[test]
fn plan_reads_a_list_larger_than_its_memory_cap() {
    use std::io::Write as _;
    use std::os::unix::process::CommandExt as _;
    const CAP: u64 = 16 << 20;
    const REFERENCES: u32 = 500_000;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), HEAD).unwrap();
    let mut big =
        std::io::BufWriter::new(std::fs::File::create(dir.path().join("big.txt")).unwrap());
    for i in 0..REFERENCES {
        writeln!(big, "{:08x}-0000-4000-8000-{:012x}", i, u64::from(i) * 7919).unwrap();
    }
    big.into_inner().unwrap().sync_all().unwrap();
    assert!(std::fs::metadata(dir.path().join("big.txt")).unwrap().len() > CAP);
    std::fs::write(
        dir.path().join("small.txt"),
        "00000000-0000-4000-8000-000000000000\n",
    )
    .unwrap();
    let plan = |input: &str| {
        let mut c = crate::support::bin();
        c.args(["plan", "job.toml", "--input", input, "--out", "out"])
            .current_dir(dir.path())
            // One runtime thread per core would make the cap depend on the machine.
            .env("TOKIO_WORKER_THREADS", "2");
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            c.pre_exec(|| {
                let cap = libc::rlimit {
                    rlim_cur: CAP,
                    rlim_max: CAP,
                };
                if libc::setrlimit(libc::RLIMIT_DATA, &cap) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // An allocation failure can wedge a thread; never let that hang the suite.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    };
    let small = plan("small.txt");
    assert_eq!(
        small.status.code(),
        Some(0),
        "{}",
        crate::support::text(&small)
    );
    let o = plan("big.txt");
    let out = crate::support::text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("netverify             500,000"), "{out}");
}
