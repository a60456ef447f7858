//! Issue 14, personal data and hostile conditions: one test (or a few) per point, each named
//! after the path it closes. The job-file checks parse text; the rest run the binary against
//! the simulator on 127.0.0.1.

use std::path::Path;

use jumio_export::job::{self, JobError, Overrides};

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
    .err()
    .expect("--base-url http://remote refused")
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
        assert_eq!(job.api.netverify_url.scheme(), &url[..url.find(':').unwrap()]);
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
