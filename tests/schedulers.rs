//! Array jobs on real schedulers (issue 16, point 4): `--shard auto` reads each scheduler's
//! variables, `--exit-zero-on` tells a scheduler that expected failures are a success, and the
//! examples under `examples/` hold the settings docs/schedulers.md names (the sbatch script runs
//! against the simulator with the Slurm variables set by hand).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jumio_export::Kind;
use jumio_export::simulator::SimOptions;

use crate::peers;
use crate::support::{BlockingSim, SECRET, TOKEN, bin, exportable, job_files, text};

const JOB: &str = r#"
[api]
region = "us"
user_agent = "jumio-export scheduler tests/1.0"

[limits]
requests_per_second = 200.0
burst = 20
concurrency = 4

[polling]
schedule_seconds = [0.05, 0.1]
"#;

/// Every variable `--shard auto` looks at: removed from the child's environment before a test
/// sets its own, so the machine running the tests cannot leak one in.
const SCHEDULER_VARS: &[&str] = &[
    "JOB_COMPLETION_INDEX",
    "AWS_BATCH_JOB_ARRAY_INDEX",
    "AWS_BATCH_JOB_ARRAY_SIZE",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_STEP",
    "CLOUD_RUN_TASK_INDEX",
    "CLOUD_RUN_TASK_COUNT",
];

/// Variables a case sets: name, value.
type Vars<'a> = &'a [(&'a str, &'a str)];

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn refs_csv(refs: &[(String, Kind)]) -> String {
    let mut s = String::from("reference,kind\n");
    for (r, k) in refs {
        s.push_str(&format!("{r},{k}\n"));
    }
    s
}

/// `plan --shard auto` under `vars` (and `extra` arguments).
fn plan_auto(dir: &Path, vars: &[(&str, &str)], extra: &[&str]) -> Output {
    let (job, refs) = job_files(dir, JOB, "refs.txt", "ok-n1\nok-n2\nok-n3\n");
    let mut c = bin();
    c.arg("plan")
        .arg(&job)
        .arg("--input")
        .arg(&refs)
        .args(["--shard", "auto"])
        .args(extra);
    for v in SCHEDULER_VARS {
        c.env_remove(v);
    }
    c.envs(vars.iter().copied());
    c.output().expect("the binary runs")
}

#[test]
fn shard_auto_takes_the_shard_from_each_schedulers_variables() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vars, &[&str], &str); 5] = [
        (
            "kubernetes",
            &[("JOB_COMPLETION_INDEX", "2")],
            &["--shard-count", "4"],
            "shard 2/4",
        ),
        (
            "aws batch",
            &[
                ("AWS_BATCH_JOB_ARRAY_INDEX", "3"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "5"),
            ],
            &[],
            "shard 3/5",
        ),
        (
            "slurm --array=1-3",
            &[
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_MAX", "3"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
            &[],
            "shard 1/3",
        ),
        (
            "cloud run",
            &[("CLOUD_RUN_TASK_INDEX", "0"), ("CLOUD_RUN_TASK_COUNT", "2")],
            &[],
            "shard 0/2",
        ),
        (
            "aws batch with the count on the command line",
            &[("AWS_BATCH_JOB_ARRAY_INDEX", "1")],
            &["--shard-count", "2"],
            "shard 1/2",
        ),
    ];
    for (name, vars, extra, want) in cases {
        let o = plan_auto(dir.path(), vars, extra);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains(want), "{name}: {stdout}");
    }
}

#[test]
fn shard_auto_exits_2_naming_the_variables_when_absent_inconsistent_or_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(Vars, &[&str], &str); 5] = [
        (
            &[],
            &[],
            "none of JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX",
        ),
        (&[("JOB_COMPLETION_INDEX", "0")], &[], "give --shard-count"),
        (
            &[("CLOUD_RUN_TASK_INDEX", "2"), ("CLOUD_RUN_TASK_COUNT", "2")],
            &[],
            "from CLOUD_RUN_TASK_INDEX) is not below the count 2",
        ),
        (
            &[
                ("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "4"),
            ],
            &["--shard-count", "3"],
            "AWS_BATCH_JOB_ARRAY_SIZE=4 disagrees with --shard-count 3",
        ),
        (
            &[
                ("JOB_COMPLETION_INDEX", "0"),
                ("SLURM_ARRAY_TASK_ID", "0"),
                ("SLURM_ARRAY_TASK_MIN", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ],
            &["--shard-count", "2"],
            "ambiguous: JOB_COMPLETION_INDEX and SLURM_ARRAY_TASK_ID",
        ),
    ];
    for (vars, extra, want) in cases {
        let o = plan_auto(dir.path(), vars, extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{vars:?}: {}", text(&o));
        assert!(err.contains("--shard auto: "), "{err}");
        assert!(err.contains(want), "{vars:?}: {err}");
    }
}

#[test]
fn exit_zero_on_makes_expected_failures_a_success_for_the_scheduler() {
    let sim = BlockingSim::start(SimOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mut refs = exportable(3);
    // Readable references the simulator answers 404 for, and keeps pending forever.
    refs.push(("nf-n-sched".into(), Kind::Netverify));
    refs.push(("pf-n-sched".into(), Kind::Netverify));
    let (job, input) = job_files(dir.path(), JOB, "refs.csv", &refs_csv(&refs));
    let run = |out: &str, extra: &[&str]| {
        bin()
            .arg("run")
            .arg(&job)
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(dir.path().join(out))
            .args(["--base-url", &sim.api().base_url(), "--quiet"])
            .args(extra)
            .output()
            .expect("the binary runs")
    };
    let o = run("plain", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = run("pending-only", &["--exit-zero-on", "pending"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a NOT_FOUND remains: {}",
        text(&o)
    );
    let o = run("both", &["--exit-zero-on", "pending,not_found"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // They are still follow-ups of the dataset.
    let failures = std::fs::read_to_string(dir.path().join("both/failures.csv")).unwrap();
    assert!(failures.contains("nf-n-sched") && failures.contains("NOT_FOUND"));
    assert!(failures.contains("pf-n-sched") && failures.contains("PENDING"));
    let o = run("typo", &["--exit-zero-on", "pending,network"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// A YAML file as JSON, parsed by PyYAML; `None` when no Python with PyYAML (off CI).
fn yaml_documents(path: &Path) -> Option<Vec<serde_json::Value>> {
    let python = peers::require_python_yaml()?;
    let o = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .expect("python runs");
    assert!(o.status.success(), "{}: {}", path.display(), text(&o));
    Some(serde_json::from_slice(&o.stdout).expect("PyYAML's JSON"))
}

/// The value after `flag` in an argument list.
fn arg_after<'a>(args: &'a [serde_json::Value], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.as_str()
}

fn strings(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array().cloned().unwrap_or_default()
}

#[test]
fn the_kubernetes_indexed_job_holds_the_settings_the_docs_name() {
    let Some(docs) = yaml_documents(&examples().join("k8s/indexed-job.yaml")) else {
        return;
    };
    let job = docs
        .iter()
        .find(|d| d["kind"] == "Job")
        .expect("a Job document");
    let spec = &job["spec"];
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(spec["completionMode"], "Indexed");
    assert!(spec["backoffLimitPerIndex"].as_u64().is_some(), "{spec}");
    assert_eq!(spec["podReplacementPolicy"], "Failed");
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
    let rules = strings(&spec["podFailurePolicy"]["rules"]);
    let fail_job = rules
        .iter()
        .find(|r| r["action"] == "FailJob")
        .expect("a FailJob rule");
    let codes: BTreeSet<u64> = strings(&fail_job["onExitCodes"]["values"])
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert_eq!(
        codes,
        BTreeSet::from([2, 3]),
        "usage and fatal stop the Job"
    );
    assert!(rules.iter().any(|r| {
        r["action"] == "Ignore"
            && strings(&r["onPodConditions"])
                .iter()
                .any(|c| c["type"] == "DisruptionTarget")
    }));
    let container = &spec["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(arg_after(&args, "--shard"), Some("auto"));
    assert_eq!(
        arg_after(&args, "--shard-count").and_then(|n| n.parse::<u64>().ok()),
        spec["completions"].as_u64(),
        "--shard-count must equal completions"
    );
    assert_eq!(
        arg_after(&args, "--exit-zero-on"),
        Some("pending,not_found")
    );
    let fail_codes = container["name"].clone();
    assert_eq!(fail_job["onExitCodes"]["containerName"], fail_codes);
    let env: BTreeSet<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains("JUMIO_API_TOKEN") && env.contains("JUMIO_API_SECRET"));
    // The job file in the ConfigMap is one the program accepts.
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    let toml = config["data"]["job.toml"].as_str().unwrap();
    jumio_export::job::parse(
        toml,
        Path::new("job.toml"),
        &jumio_export::job::Overrides::default(),
    )
    .expect("the example's job file parses");
}

#[test]
fn the_cloud_run_job_holds_the_settings_the_docs_name() {
    let Some(docs) = yaml_documents(&examples().join("cloud-run/job.yaml")) else {
        return;
    };
    let job = &docs[0];
    assert_eq!(job["kind"], "Job");
    let exec = &job["spec"]["template"]["spec"];
    assert!(exec["taskCount"].as_u64().unwrap() > 1);
    let task = &exec["template"]["spec"];
    assert!(task["maxRetries"].as_u64().is_some());
    let args = strings(&task["containers"][0]["args"]);
    assert_eq!(arg_after(&args, "--shard"), Some("auto"));
    assert_eq!(
        arg_after(&args, "--exit-zero-on"),
        Some("pending,not_found")
    );
}

#[test]
fn the_aws_batch_job_definition_holds_the_settings_the_docs_name() {
    let path = examples().join("aws-batch/job-definition.json");
    let def: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("valid JSON");
    let container = &def["containerProperties"];
    let command = strings(&container["command"]);
    assert_eq!(arg_after(&command, "--shard"), Some("auto"));
    assert_eq!(
        arg_after(&command, "--exit-zero-on"),
        Some("pending,not_found")
    );
    // Batch sets only the index: the size comes from the definition's environment.
    let size = strings(&container["environment"])
        .into_iter()
        .find(|e| e["name"] == "AWS_BATCH_JOB_ARRAY_SIZE")
        .expect("AWS_BATCH_JOB_ARRAY_SIZE in the environment");
    assert!(size["value"].as_str().unwrap().parse::<u32>().unwrap() > 0);
    // evaluateOnExit: the first matching rule wins; 2 and 3 exit before any catch-all.
    let rules = strings(&def["retryStrategy"]["evaluateOnExit"]);
    let action = |code: &str| {
        rules
            .iter()
            .find(|r| {
                r["onExitCode"].as_str().is_some_and(|p| {
                    p == code || (p.ends_with('*') && code.starts_with(p.trim_end_matches('*')))
                }) || r["onReason"] == "*"
            })
            .map(|r| r["action"].as_str().unwrap().to_ascii_uppercase())
    };
    assert_eq!(action("2").as_deref(), Some("EXIT"));
    assert_eq!(action("3").as_deref(), Some("EXIT"));
    assert_eq!(action("1").as_deref(), Some("RETRY"));
    assert!(def["retryStrategy"]["attempts"].as_u64().unwrap() > 1);
    let secrets: BTreeSet<&str> = container["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(secrets.contains("JUMIO_API_TOKEN") && secrets.contains("JUMIO_API_SECRET"));
}

#[test]
fn the_sbatch_script_runs_each_array_task_as_its_shard_against_the_simulator() {
    let bash = match peers::require("bash") {
        Some(b) => b,
        None => return,
    };
    let sim = BlockingSim::start(SimOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let refs = exportable(12);
    let (job, input) = job_files(dir.path(), JOB, "refs.csv", &refs_csv(&refs));
    let out = dir.path().join("out");
    let script = examples().join("slurm/export.sbatch");
    let mut exported = BTreeSet::new();
    // --array=1-2: tasks 1 and 2, shards 0/2 and 1/2, one after the other into one dataset.
    for (task, shard) in [("1", "0/2"), ("2", "1/2")] {
        let mut c = Command::new(&bash);
        c.arg(&script)
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(["--base-url", &sim.api().base_url()])
            .env("JUMIO_EXPORT", env!("CARGO_BIN_EXE_jumio-export"))
            .env("JOB_FILE", &job)
            .env("PROGRESS_INTERVAL", "0.5")
            .env("JUMIO_API_TOKEN", TOKEN)
            .env("JUMIO_API_SECRET", SECRET);
        for v in SCHEDULER_VARS {
            c.env_remove(v);
        }
        c.envs([
            ("SLURM_ARRAY_TASK_ID", task),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ]);
        let o = c.output().expect("bash runs the script");
        assert_eq!(o.status.code(), Some(0), "task {task}: {}", text(&o));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["shard"], shard, "task {task}");
        // The script asks for JSON progress: its last line is on stderr.
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("{\"event\":\"progress\"")),
            "{stderr}"
        );
        let n = report["outcomes"]["exported"].as_u64().unwrap();
        let archives: BTreeSet<String> = std::fs::read_dir(out.join("archives"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(archives.len() as u64, exported.len() as u64 + n);
        exported = archives;
    }
    let want: BTreeSet<String> = refs.iter().map(|(r, _)| format!("{r}.zip")).collect();
    assert_eq!(
        exported, want,
        "the two tasks together export every reference once"
    );
}

/// `plan` with `rate` and `shard` over `n` Netverify references: the budget and its text.
fn plan_text(rate: f64, shard: Option<&str>, n: usize) -> (jumio_export::plan::Budget, String) {
    let text = format!(
        "[api]\nregion = \"us\"\nuser_agent = \"Plan Tests/1.0\"\n\n[limits]\nrequests_per_second = {rate}\n"
    );
    let overrides = jumio_export::job::Overrides {
        shard: shard.map(|s| s.parse().unwrap()),
        ..Default::default()
    };
    let job = jumio_export::job::parse(&text, Path::new("jobs/plan.toml"), &overrides).unwrap();
    let refs: String = (0..n).map(|i| format!("n-{i}\n")).collect();
    let input =
        jumio_export::input::parse_input(refs.as_bytes(), "refs.txt", Kind::Netverify).unwrap();
    let b = jumio_export::plan::budget(&job, &input).unwrap();
    let shown = b.to_string();
    (b, shown)
}

#[test]
fn plan_states_the_time_at_the_tenants_limit_and_that_shards_share_it() {
    let (fewest, most) = jumio_export::plan::requests_per_reference(
        Kind::Netverify,
        &jumio_export::job::parse(
            "[api]\nregion = \"us\"\nuser_agent = \"Plan Tests/1.0\"\n",
            Path::new("x.toml"),
            &Default::default(),
        )
        .unwrap(),
    );
    // One machine, the job below the limit: at 10/s and at the tenant's 15/s.
    let (b, shown) = plan_text(10.0, None, 6);
    assert_eq!((b.total_min, b.total_max), (6 * fewest, 6 * most));
    let line = format!(
        "time at the tenant's limit (15 requests/s, Jumio's default for retrieval): {:.1} s (fewest) to {:.1} s (most)",
        (6 * fewest) as f64 / 10.0,
        (6 * most) as f64 / 10.0
    );
    // Below the limit the job's own rate is what bounds it.
    assert!(
        shown.lines().any(|l| l == line),
        "missing {line:?} in\n{shown}"
    );
    assert!(!shown.contains("is above"), "{shown}");
    assert!(shown.contains("shards share the tenant's limit"), "{shown}");
    assert!(shown.contains("do not finish sooner than one"), "{shown}");

    // Above the limit: the time at 15/s, and a warning.
    let (b, shown) = plan_text(30.0, None, 6);
    let line = format!(
        "time at the tenant's limit (15 requests/s, Jumio's default for retrieval): {:.1} s (fewest) to {:.1} s (most)",
        b.total_min as f64 / 15.0,
        b.total_max as f64 / 15.0
    );
    assert!(
        shown.lines().any(|l| l == line),
        "missing {line:?} in\n{shown}"
    );
    assert!(
        shown.contains("the job's rate (30 requests/s) is above the tenant's limit"),
        "{shown}"
    );

    // Four shards of a 30/s job: each runs at 7.5/s, and so does its share of the tenant's 15/s
    // — 3.75/s: four machines take as long as one at the limit.
    let mut shard_times = Vec::new();
    for k in 0..4 {
        let (b, shown) = plan_text(30.0, Some(&format!("{k}/4")), 40);
        let line = format!(
            "time at this shard's share of the tenant's limit (15 requests/s ÷ 4 shards = 3.75 requests/s): {} (fewest) to {} (most)",
            human(b.total_min as f64 / 3.75),
            human(b.total_max as f64 / 3.75)
        );
        assert!(
            shown.lines().any(|l| l == line),
            "missing {line:?} in\n{shown}"
        );
        assert!(
            shown.contains("the job's rate (7.5 requests/s) is above this shard's share"),
            "{shown}"
        );
        assert!((b.tenant_seconds_max - b.total_max as f64 / 3.75).abs() < 1e-9);
        shard_times.push(b.tenant_seconds_max);
    }
    // Four shards at their shares of the limit take, on average, exactly as long as one machine
    // at the whole limit: more machines do not finish sooner against Jumio.
    let (one, _) = plan_text(30.0, None, 40);
    let mean = shard_times.iter().sum::<f64>() / 4.0;
    assert!(
        (mean - one.tenant_seconds_max).abs() < 1e-9,
        "shards {shard_times:?}, one machine {}",
        one.tenant_seconds_max
    );
}

/// `plan`'s duration format: seconds with one decimal under a minute, else `Xm YYs`.
fn human(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let t = secs.round() as u64;
    assert!(t < 3600, "the test keeps under an hour");
    format!("{}m {:02}s", t / 60, t % 60)
}
