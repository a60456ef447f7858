//! The binary as users call it: `demo`, `plan`, `run --shard`, and the Parquet files read back by
//! an independent engine (DuckDB, where installed).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use jumio_export::Kind;
use jumio_export::simulator::{self, SimOptions};

use crate::support::{bin, exportable, text};

fn csv_references(path: &Path) -> Vec<String> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records().map(|rec| rec.unwrap()[0].to_string()).collect()
}

fn duckdb(sql: &str) -> Option<String> {
    let probe = Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .ok()?;
    if !probe.status.success() {
        eprintln!("skipped the DuckDB check: python3 -m pip install duckdb to run it");
        return None;
    }
    let script = format!(
        "import duckdb\nfor row in duckdb.sql({sql:?}).fetchall(): print('|'.join(str(v) for v in row))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "duckdb failed: {}", text(&out));
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn demo_runs_end_to_end_and_duckdb_reads_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = bin()
        .args(["demo", "--count", "25", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("exported") && stdout.contains("root hash"),
        "{stdout}"
    );
    for f in ["report.json", "failures.csv", "files.csv", "files.parquet"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let failures = std::fs::read_to_string(out.join("failures.csv")).unwrap();
    for code in ["INVALID_REFERENCE", "NOT_FOUND", "PENDING", "FOREIGN_URL"] {
        assert!(failures.contains(code), "the demo shows {code}: {failures}");
    }
    for kind in Kind::ALL {
        let csv_rows = csv_references(&out.join(format!("{}.csv", kind.table_name()))).len();
        let parquet = out.join(format!("{}.parquet", kind.table_name()));
        let Some(count) = duckdb(&format!(
            "select count(*) from read_parquet('{}')",
            parquet.display()
        )) else {
            return;
        };
        assert_eq!(
            count.trim(),
            csv_rows.to_string(),
            "{kind}: DuckDB and the CSV disagree"
        );
    }
    // Types a warehouse relies on: dates are DATE, timestamps TIMESTAMP WITH TIME ZONE, lists are lists.
    let types = duckdb(&format!(
        "select typeof(document_dob), typeof(transaction_date), typeof(verification_reject_reason_reject_reason_details) from read_parquet('{}') limit 1",
        out.join("netverify.parquet").display()
    ))
    .unwrap();
    let types: Vec<&str> = types.trim().split('|').collect();
    assert_eq!(types[0], "DATE");
    assert_eq!(types[1], "TIMESTAMP WITH TIME ZONE");
    assert!(
        types[2].ends_with("[]"),
        "rejectReasonDetails is a list: {}",
        types[2]
    );
}

#[test]
fn plan_sends_nothing_and_prints_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[api]\nregion = \"us\"\nuser_agent = \"Example Corp Export/1.0\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("refs.txt"), "ok-n1\nok-n2\nbad/ref\n").unwrap();
    // No credentials in the environment and no server: plan needs neither.
    let o = bin()
        .arg("plan")
        .arg(&job)
        .arg("--input")
        .arg(dir.path().join("refs.txt"))
        .env_remove("JUMIO_API_TOKEN")
        .env_remove("JUMIO_API_SECRET")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("netverify"), "{out}");
    let bad = bin()
        .arg("plan")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("missing.toml"));
}

#[test]
fn shards_partition_the_references_and_together_export_all() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt
        .block_on(simulator::start(
            SimOptions::default(),
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let refs = exportable(24);
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[api]\nregion = \"us\"\nuser_agent = \"shard-test/1\"\n[limits]\nrequests_per_second = 400.0\n[polling]\nschedule_seconds = [0.05, 0.1]\n",
    )
    .unwrap();
    let mut list = String::from("reference,kind\n");
    for (r, k) in &refs {
        list.push_str(&format!("{r},{k}\n"));
    }
    std::fs::write(dir.path().join("refs.csv"), list).unwrap();
    let mut seen = Vec::new();
    for k in 0..3 {
        let out = dir.path().join(format!("shard-{k}"));
        let o = bin()
            .arg("run")
            .arg(&job)
            .arg("--input")
            .arg(dir.path().join("refs.csv"))
            .arg("--out")
            .arg(&out)
            .args([
                "--base-url",
                &api.base_url(),
                "--shard",
                &format!("{k}/3"),
                "--quiet",
            ])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["shard"], format!("{k}/3"));
        for kind in Kind::ALL {
            seen.extend(csv_references(
                &out.join(format!("{}.csv", kind.table_name())),
            ));
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a reference was exported by two shards"
    );
    let expected: BTreeSet<&String> = refs.iter().map(|(r, _)| r).collect();
    assert_eq!(
        unique, expected,
        "the shards together export every reference"
    );
    rt.block_on(api.shutdown());
}
