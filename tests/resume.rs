//! Resuming into a dataset (SPEC "Resuming, batches and exactly once"): kill -9 at many moments
//! across runs and batches (inside archive writes, part writes and the publish step), Ctrl-C and
//! SIGTERM, archives that are never replaced (another kind, another key, truncated) and
//! archives a killed run left that the next commit takes over without a request, temporaries
//! of dead and live runs, a full disk, and follow-ups (PENDING once a day, NOT_FOUND) carried by
//! the commits' failure parts rather than by `failures.csv`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jumio_export::Kind;
use jumio_export::input;
use jumio_export::job::{self, Credentials, Overrides};
use jumio_export::output::archive;
use jumio_export::run::{self, RunOptions, Summary};
use jumio_export::simulator::{self, RequestRecord, SimHandle, SimOptions};

use crate::support::{
    LiveRunLock, assert_committed_parts_complete, bin, commits, dataset_exported,
    dataset_references, dataset_snapshot, exportable, latest_report,
};

fn job_text(rate: f64, concurrency: usize) -> String {
    format!(
        r#"
[api]
region = "us"
user_agent = "jumio-export resume-tests/1.0"

[limits]
requests_per_second = {rate}
burst = 5
concurrency = {concurrency}
max_retries = 3
timeout_seconds = 10

[polling]
schedule_seconds = [0.05, 0.1, 0.15, 0.2]
"#
    )
}

/// Status calls a round makes with [`job_text`]'s schedule: one per entry, the first call and
/// three polls.
const STATUS_CALLS: u32 = 4;

struct Dir {
    _tmp: tempfile::TempDir,
    job: PathBuf,
    refs: PathBuf,
    out: PathBuf,
}

fn refs_text(refs: &[(String, Kind)]) -> String {
    let mut text = String::from("reference,kind\n");
    for (r, k) in refs {
        text.push_str(&format!("{r},{k}\n"));
    }
    text
}

fn dir_with(job: &str, refs: &[(String, Kind)]) -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let jobp = tmp.path().join("job.toml");
    std::fs::write(&jobp, job).unwrap();
    let refsp = tmp.path().join("refs.csv");
    std::fs::write(&refsp, refs_text(refs)).unwrap();
    Dir {
        out: tmp.path().join("out"),
        job: jobp,
        refs: refsp,
        _tmp: tmp,
    }
}

async fn sim() -> SimHandle {
    simulator::start(SimOptions::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// `jumio-export run` of a test directory against `base`.
fn job_command(d: &Dir, base: &str) -> Command {
    let mut c = bin();
    c.arg("run")
        .arg(&d.job)
        .arg("--input")
        .arg(&d.refs)
        .arg("--out")
        .arg(&d.out)
        .arg("--base-url")
        .arg(base);
    c
}

fn spawn_job(d: &Dir, base: &str) -> Child {
    job_command(d, base)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < limit,
            "the job did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn archives_present(out: &Path) -> BTreeSet<String> {
    let Ok(rd) = std::fs::read_dir(out.join("archives")) else {
        return BTreeSet::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".zip")
                .map(String::from)
        })
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn reference_of(r: &RequestRecord) -> String {
    r.path.split('/').nth(5).unwrap_or("").to_string()
}

/// Requests `log` holds for `reference`.
fn requests_for(log: &[RequestRecord], reference: &str) -> Vec<String> {
    log.iter()
        .filter(|r| reference_of(r) == reference)
        .map(|r| r.path.clone())
        .collect()
}

const TABLES: [&str; 5] = [
    "netverify",
    "documents",
    "authentications",
    "files",
    "failures",
];

/// Temporaries in the dataset: archives being written, parts being written, commits being
/// written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Temps {
    archives: usize,
    parts: usize,
    commits: usize,
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn temporaries(out: &Path) -> Temps {
    let tmp = |n: &String| n.ends_with(".tmp");
    Temps {
        // Archive temporaries: in `archives/` (the layout before run scratch directories) and
        // in the runs' scratch directories `runs/{run}/`.
        archives: names_in(&out.join("archives"))
            .iter()
            .filter(|n| tmp(n))
            .count()
            + names_in(&out.join("runs"))
                .iter()
                .map(|run| {
                    names_in(&out.join("runs").join(run))
                        .iter()
                        .filter(|n| tmp(n))
                        .count()
                })
                .sum::<usize>(),
        parts: TABLES
            .iter()
            .map(|t| {
                names_in(&out.join("tables").join(t))
                    .iter()
                    .filter(|n| tmp(n))
                    .count()
            })
            .sum(),
        commits: names_in(&out.join("commits"))
            .iter()
            .filter(|n| tmp(n))
            .count(),
    }
}

/// Run ids with a lock file in `runs/` (live, or dead after a kill).
fn run_locks(out: &Path) -> BTreeSet<String> {
    names_in(&out.join("runs"))
        .into_iter()
        .filter_map(|n| n.strip_suffix(".lock").map(String::from))
        .collect()
}

/// Parts of `run` under their final names.
fn final_parts_of(out: &Path, run: &str) -> usize {
    TABLES
        .iter()
        .map(|t| {
            names_in(&out.join("tables").join(t))
                .iter()
                .filter(|n| n.starts_with(&format!("{run}-")) && !n.ends_with(".tmp"))
                .count()
        })
        .sum()
}

fn has_commit(out: &Path, run: &str) -> bool {
    out.join(format!("commits/{run}.json")).exists()
}

/// The end state every resume test wants: each of `refs` exactly once across the commits
/// (Parquet and CSV), every committed part complete, every archive verifying, no temporary
/// left, and no part of a committed run that its commit does not list.
fn assert_complete(out: &Path, refs: &[(String, Kind)]) {
    let mut expected: Vec<(String, Kind)> = refs.to_vec();
    expected.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.table_name().cmp(b.1.table_name())));
    assert_eq!(
        dataset_exported(out),
        expected,
        "every reference exactly once across the commits"
    );
    for kind in Kind::ALL {
        assert_eq!(
            crate::support::dataset_parquet_rows(out, kind.table_name()),
            refs.iter().filter(|(_, k)| *k == kind).count(),
            "{}: rows of the committed Parquet parts",
            kind.table_name()
        );
    }
    assert_committed_parts_complete(out);
    for (r, _) in refs {
        let c = archive::read_archive(&out.join(format!("archives/{r}.zip"))).unwrap();
        assert!(
            c.manifest_ok && c.problems.is_empty(),
            "{r}: {:?}",
            c.problems
        );
    }
    assert_eq!(
        temporaries(out),
        Temps::default(),
        "temporaries left after a clean finish"
    );
    // Parts no commit lists are those of killed runs that never committed (SPEC: not part of
    // the dataset); a committed run's parts are all listed.
    for part in crate::support::uncommitted_parts(out) {
        let name = part.rsplit('/').next().unwrap();
        let run = name.rsplit_once('-').unwrap().0;
        assert!(
            !has_commit(out, run),
            "{part} of a committed run is not listed by its commit"
        );
    }
}

/// What a kill leaves, checked after every kill: every archive under its final name verifies,
/// every committed part is complete and no reference is exported twice across the commits.
fn assert_nothing_half_written(out: &Path, after: &str) {
    for name in archives_present(out) {
        let c = archive::read_archive(&out.join(format!("archives/{name}.zip")))
            .unwrap_or_else(|e| panic!("after {after}, archives/{name}.zip is broken: {e}"));
        assert!(c.manifest_ok, "after {after}, {name} does not verify");
    }
    assert_committed_parts_complete(out);
    let exported = dataset_exported(out);
    let mut seen = BTreeSet::new();
    for (r, k) in &exported {
        assert!(
            seen.insert((r.clone(), *k)),
            "after {after}, {r} is exported by two commits"
        );
        assert!(
            out.join(format!("archives/{r}.zip")).exists(),
            "after {after}, {r} is committed without its archive"
        );
    }
}

/// `snapshot` holds every row of `before` (as a multiset).
fn contains_all(
    after: &BTreeMap<String, Vec<Vec<String>>>,
    before: &BTreeMap<String, Vec<Vec<String>>>,
) -> bool {
    before.iter().all(|(t, rows)| {
        let mut left: Vec<Vec<String>> = after[t].clone();
        rows.iter()
            .all(|row| match left.iter().position(|r| r == row) {
                Some(i) => {
                    left.swap_remove(i);
                    true
                }
                None => false,
            })
    })
}

/// The failure each reference ends with under the simulator's own scenario (not the program's
/// output) with [`job_text`]'s schedule: gone (404), still pending after a round, hrefs on a
/// foreign origin; `None`: exported (FAILED transactions included).
fn expected_failure(reference: &str) -> Option<&'static str> {
    let sc = simulator::scenario(SimOptions::default().seed, reference)
        .expect("a reference the simulator knows");
    if sc.retention_404 {
        Some("NOT_FOUND")
    } else if sc.pending_at(STATUS_CALLS) {
        Some("PENDING")
    } else if sc.foreign_hrefs {
        Some("FOREIGN_URL")
    } else {
        None
    }
}

/// `failures.csv` as reference → error, one row per reference.
fn failures_csv(out: &Path) -> BTreeMap<String, String> {
    let (_, rows) = crate::support::csv_table(&out.join("failures.csv"));
    let map: BTreeMap<String, String> = rows
        .iter()
        .map(|r| (r["reference"].clone(), r["error"].clone()))
        .collect();
    assert_eq!(map.len(), rows.len(), "one failures.csv row per reference");
    map
}

async fn run_in_process(d: &Dir, base: &str, opts: RunOptions) -> Summary {
    run_result(d, base, opts).await.unwrap()
}

async fn run_result(d: &Dir, base: &str, opts: RunOptions) -> Result<Summary, run::RunError> {
    let o = Overrides {
        input: Some(d.refs.display().to_string()),
        out: Some(d.out.clone()),
        base_url: Some(base.to_string()),
        ..Overrides::default()
    };
    let job = job::load(&d.job, &o).unwrap();
    let list =
        input::read_input(job.input.path.as_deref().unwrap(), job.input.default_kind).unwrap();
    run::run(
        &job,
        list,
        &Credentials::new("demo-token", "demo-secret"),
        opts,
    )
    .await
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..RunOptions::default()
    }
}

/// Waits until `done()` holds, the child exits or `limit` passes, spinning (a kill aimed at a
/// short window must land inside it).
fn spin_until(child: &mut Child, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < limit && child.try_wait().unwrap().is_none() {
        std::hint::spin_loop();
    }
}

/// Where an attempt is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPoint {
    /// A random delay after the attempt's first request.
    Random(u64),
    /// After a random delay, the moment an archive is being written (its temporary exists).
    ArchiveWrite(u64),
    /// The moment the run's first part is published: its parts are complete under their final
    /// names and its commit is not written yet.
    Publish,
    /// The moment the run's commit appears, before `failures.csv` and `report.json`.
    Committed,
}

/// One attempt of the kill test, as observed.
#[derive(Debug)]
struct Attempt {
    batch: &'static str,
    point: KillPoint,
    /// Requests the simulator answered during the attempt.
    requests: usize,
    /// Archives under their final name gained during the attempt.
    gained: usize,
    /// Still running when killed (not exited by itself).
    killed_running: bool,
    /// What the kill left behind.
    temps: Temps,
    /// Parts of the killed run under their final names.
    final_parts: usize,
    /// The killed run's commit exists.
    committed: bool,
}

/// "kill -9 at 20 or more points across runs and batches loses 0 references and duplicates 0
/// rows". Two batches (disjoint, each with references that fail: gone, pending forever, foreign
/// hrefs) go into one dataset; each batch's runs are killed at randomised moments (seed printed;
/// `JUMIO_KILL_SEED` replays a schedule), some aimed inside an archive write, at the publish
/// step (parts complete, commit not yet written) and right after the commit, then one run
/// finishes the batch. After every kill: every archive and every committed part is complete,
/// no reference is in two commits, a killed run without a commit changed no row of the dataset,
/// and nothing that had an archive before the attempt was fetched during it. A final run of the
/// union fetches only the due failures; then every reference of the union is exported exactly
/// once across all commits (every kind table, `files`), each commit's root hash is over the
/// archives it lists, `failures.csv` holds exactly the scenario's failures, and every archive
/// is what the simulator served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_20_or_more_points_across_runs_and_batches_loses_and_duplicates_nothing() {
    const RANDOM_KILLS: usize = 9;
    let api = sim().await;
    let population = simulator::population(SimOptions::default().seed, 80);
    let readable = |names: &[&str]| -> Vec<(String, Kind)> {
        names
            .iter()
            .map(|r| {
                let sc = simulator::scenario(SimOptions::default().seed, r).unwrap();
                (r.to_string(), sc.kind)
            })
            .collect()
    };
    let mut batch_a = population[..40].to_vec();
    batch_a.extend(readable(&["nf-n1", "pf-n1", "fh-n1"]));
    let mut batch_b = population[40..].to_vec();
    batch_b.extend(readable(&["nf-d1", "pf-a1", "fh-d1"]));
    let union: Vec<(String, Kind)> = batch_a.iter().chain(&batch_b).cloned().collect();
    let expected_failures: BTreeMap<String, String> = union
        .iter()
        .filter_map(|(r, _)| expected_failure(r).map(|e| (r.clone(), e.to_string())))
        .collect();
    let expected_exported: Vec<(String, Kind)> = union
        .iter()
        .filter(|(r, _)| !expected_failures.contains_key(r))
        .cloned()
        .collect();
    assert!(
        expected_failures
            .keys()
            .any(|r| r.len() == 36 && population.iter().any(|(p, _)| p == r)),
        "the generated population has no failing reference: widen it"
    );

    // What one uninterrupted run of the union costs, for the extra requests resuming costs.
    let clean = dir_with(&job_text(1000.0, 8), &union);
    let mut child = spawn_job(&clean, &api.base_url());
    assert_eq!(wait_with_timeout(&mut child, Duration::from_secs(60)), 1);
    let baseline = api.requests().len();

    let d = dir_with(&job_text(40.0, 4), &batch_a);
    let base = api.base_url();
    let mut rng = crate::support::TestRng::from_env("JUMIO_KILL_SEED");
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut refetched = Vec::new();
    for (batch, refs) in [("A", &batch_a), ("B", &batch_b)] {
        std::fs::write(&d.refs, refs_text(refs)).unwrap();
        let mut points: Vec<KillPoint> = (0..RANDOM_KILLS)
            .map(|_| {
                if rng.range(0, 3) == 0 {
                    KillPoint::ArchiveWrite(rng.range(100, 500))
                } else {
                    KillPoint::Random(rng.range(150, 900))
                }
            })
            .collect();
        // The last kills of a batch wait for the run to finish its work: the first two at the
        // publish step (the second run takes over every archive of the first, then dies the
        // same way), the third once its commit is written.
        points.extend([KillPoint::Publish, KillPoint::Publish, KillPoint::Committed]);
        for point in points {
            let before = archives_present(&d.out);
            let snapshot = dataset_snapshot(&d.out);
            let locks = run_locks(&d.out);
            let log_start = api.requests().len();
            let mut child = spawn_job(&d, &base);
            // The attempt's run id: the lock file it creates.
            let mut run = None;
            spin_until(&mut child, Duration::from_secs(10), || {
                run = run_locks(&d.out).difference(&locks).next().cloned();
                run.is_some()
            });
            let run = run.expect("the run took its lock");
            match point {
                KillPoint::Random(ms) | KillPoint::ArchiveWrite(ms) => {
                    // Its first request: from here on it is doing real work.
                    spin_until(&mut child, Duration::from_secs(10), || {
                        api.requests().len() > log_start
                    });
                    std::thread::sleep(Duration::from_millis(ms));
                    if matches!(point, KillPoint::ArchiveWrite(_)) {
                        spin_until(&mut child, Duration::from_secs(3), || {
                            temporaries(&d.out).archives > 0
                        });
                    }
                }
                KillPoint::Publish => {
                    let first = d.out.join(format!("tables/netverify/{run}-0.parquet"));
                    spin_until(&mut child, Duration::from_secs(60), || first.exists());
                }
                KillPoint::Committed => {
                    let commit = d.out.join(format!("commits/{run}.json"));
                    spin_until(&mut child, Duration::from_secs(60), || commit.exists());
                }
            }
            let killed_running = child.try_wait().unwrap().is_none();
            let _ = child.kill(); // SIGKILL
            let status = child.wait().unwrap();
            let attempt = Attempt {
                batch,
                point,
                requests: api.requests().len() - log_start,
                gained: archives_present(&d.out).len() - before.len(),
                killed_running,
                temps: temporaries(&d.out),
                final_parts: final_parts_of(&d.out, &run),
                committed: has_commit(&d.out, &run),
            };
            let n = attempts.len() + 1;
            eprintln!(
                "kill {n}: {attempt:?}; {} archives",
                archives_present(&d.out).len()
            );
            if !killed_running {
                // Ended by itself: it finished its batch (1: the batch has failures), never a
                // usage or output error.
                assert_eq!(status.code(), Some(1), "attempt {n}: {attempt:?}");
            }
            assert_nothing_half_written(&d.out, &format!("kill {n} ({point:?})"));
            let now = dataset_snapshot(&d.out);
            if attempt.committed {
                assert!(
                    contains_all(&now, &snapshot),
                    "kill {n}: rows of earlier commits are gone"
                );
            } else {
                assert!(
                    now == snapshot,
                    "kill {n}: a run killed without a commit changed the dataset"
                );
            }
            // Nothing that had an archive before this attempt was fetched during it.
            for r in &api.requests()[log_start..] {
                if before.contains(&reference_of(r)) {
                    refetched.push(r.path.clone());
                }
            }
            attempts.push(attempt);
        }
        // One run finishes the batch.
        let before = archives_present(&d.out);
        let log_start = api.requests().len();
        let mut child = spawn_job(&d, &base);
        assert_eq!(
            wait_with_timeout(&mut child, Duration::from_secs(120)),
            1,
            "batch {batch} finishes, its failures in failures.csv"
        );
        for r in &api.requests()[log_start..] {
            if before.contains(&reference_of(r)) {
                refetched.push(r.path.clone());
            }
        }
    }

    // The union: everything is catalogued; only the due failures (foreign hrefs) are asked for.
    std::fs::write(&d.refs, refs_text(&union)).unwrap();
    let log_start = api.requests().len();
    let mut child = spawn_job(&d, &base);
    assert_eq!(wait_with_timeout(&mut child, Duration::from_secs(120)), 1);
    let asked: BTreeSet<String> = api.requests()[log_start..]
        .iter()
        .map(reference_of)
        .collect();
    let due: BTreeSet<String> = expected_failures
        .iter()
        .filter(|(_, e)| *e == "FOREIGN_URL")
        .map(|(r, _)| r.clone())
        .collect();
    assert_eq!(
        asked, due,
        "the union run asks for the due failures and nothing else"
    );
    let report = latest_report(&d.out);
    assert_eq!(report["outcomes"]["exported"], 0, "{report}");
    assert_eq!(
        report["outcomes"]["already_exported"],
        expected_exported.len() as u64
    );
    assert!(
        refetched.is_empty(),
        "transactions with an archive fetched again: {refetched:?}"
    );

    // The kills interrupted real work in every phase.
    let kills = attempts.iter().filter(|a| a.killed_running).count();
    let working = attempts
        .iter()
        .filter(|a| a.killed_running && a.requests > 0)
        .count();
    let progressed = attempts.iter().filter(|a| a.gained > 0).count();
    let in_archive_write = attempts.iter().filter(|a| a.temps.archives > 0).count();
    let in_part_write = attempts
        .iter()
        .filter(|a| a.killed_running && a.temps.parts > 0)
        .count();
    let at_publish = attempts
        .iter()
        .filter(|a| a.killed_running && a.final_parts > 0 && !a.committed)
        .count();
    let after_commit = attempts
        .iter()
        .filter(|a| a.killed_running && a.committed)
        .count();
    let aimed = attempts
        .iter()
        .filter(|a| !matches!(a.point, KillPoint::Random(_)))
        .count();
    let batches: BTreeSet<&str> = attempts
        .iter()
        .filter(|a| a.killed_running)
        .map(|a| a.batch)
        .collect();
    eprintln!(
        "{kills} kills of running jobs ({aimed} aimed) in batches {batches:?}: {working} while requesting, \
         {progressed} after new archives, {in_archive_write} inside an archive write, \
         {in_part_write} with parts open, {at_publish} at the publish step, {after_commit} after \
         the commit"
    );
    assert!(kills >= 20, "only {kills} kills landed in a running job");
    assert_eq!(batches.len(), 2, "kills in both batches");
    assert!(
        working * 2 >= kills,
        "only {working} of {kills} kills interrupted a requesting job"
    );
    assert!(
        progressed * 3 >= kills,
        "archives between only {progressed} kills"
    );
    assert!(in_archive_write >= 1, "no kill inside an archive write");
    assert!(in_part_write * 2 >= kills, "kills before parts were opened");
    assert!(at_publish >= 1, "no kill at the publish step");
    let total = api.requests().len() - baseline;
    eprintln!(
        "kill test: {total} requests for {} references; an uninterrupted run takes {baseline}",
        union.len()
    );

    // The final state: every reference of the union once, the failures the scenario has, every
    // archive exactly what the simulator served for its own reference and kind.
    assert_complete(&d.out, &expected_exported);
    crate::support::assert_dataset_matches_archives(&d.out, &expected_exported);
    let got: BTreeMap<String, String> = failures_csv(&d.out);
    assert_eq!(got, expected_failures, "failures.csv against the scenario");
    let mut present = archives_present(&d.out);
    for (r, kind) in &expected_exported {
        assert!(present.remove(r), "{r}: no archive");
        crate::support::assert_archive_as_served(
            &api,
            &d.out.join(format!("archives/{r}.zip")),
            r,
            *kind,
        )
        .await;
    }
    assert!(
        present.is_empty(),
        "archives of failed references: {present:?}"
    );
    api.shutdown().await;
}

/// "kill -9 at any instant, including while a part or the commit is written, leaves a dataset
/// whose committed parts are complete and whose uncommitted parts are not part of it". Runs that
/// each add five references to a dataset are killed at the instant their first part is
/// published (parts complete under their final names, no commit yet) or at a random moment of
/// the run: afterwards the dataset is exactly the previous one (no commit of the killed run) or
/// the previous one plus the killed run's complete commit, never a mix; the next run completes.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_the_publish_step_leaves_the_previous_dataset_or_the_whole_commit() {
    let api = sim().await;
    const ATTEMPTS: usize = 8;
    // 60 references, then for each attempt five more with every kind among them, so every
    // table an attempt writes has rows.
    let pool = exportable(200);
    let mut all: Vec<(String, Kind)> = pool[..60].to_vec();
    let mut rest: Vec<(String, Kind)> = pool[60..].to_vec();
    for _ in 0..ATTEMPTS {
        for kind in [Kind::Netverify, Kind::Document, Kind::Authentication] {
            let i = rest.iter().position(|(_, k)| *k == kind).unwrap();
            all.push(rest.remove(i));
        }
        all.extend(rest.drain(..2));
    }
    let d = dir_with(&job_text(200.0, 4), &all[..60]);
    let mut child = spawn_job(&d, &api.base_url());
    assert_eq!(wait_with_timeout(&mut child, Duration::from_secs(60)), 0);
    let mut rng = crate::support::TestRng::from_env("JUMIO_TABLE_KILL_SEED");
    let (mut unchanged, mut committed, mut inside) = (0, 0, 0);
    for attempt in 0..ATTEMPTS {
        let input = &all[..60 + 5 * (attempt + 1)];
        std::fs::write(&d.refs, refs_text(input)).unwrap();
        let before = dataset_snapshot(&d.out);
        let exported_before: BTreeSet<String> = dataset_exported(&d.out)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let locks = run_locks(&d.out);
        let at_publish = attempt % 2 == 0;
        let mut child = spawn_job(&d, &api.base_url());
        let mut run = None;
        spin_until(&mut child, Duration::from_secs(10), || {
            run = run_locks(&d.out).difference(&locks).next().cloned();
            run.is_some()
        });
        let run = run.expect("the run took its lock");
        if at_publish {
            let first = d.out.join(format!("tables/netverify/{run}-0.parquet"));
            spin_until(&mut child, Duration::from_secs(30), || first.exists());
        } else {
            std::thread::sleep(Duration::from_millis(rng.range(50, 800)));
        }
        let killed_running = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let _ = child.wait();
        assert_nothing_half_written(&d.out, &format!("attempt {attempt}"));
        let after = dataset_snapshot(&d.out);
        let parts = final_parts_of(&d.out, &run);
        let state = if has_commit(&d.out, &run) {
            committed += 1;
            // The whole commit: the earlier rows and exactly the five new references.
            assert!(
                contains_all(&after, &before),
                "attempt {attempt}: rows lost"
            );
            let new: BTreeSet<String> = commits(&d.out)
                .iter()
                .filter(|c| c["run"] == run.as_str())
                .flat_map(|c| {
                    Kind::ALL.into_iter().flat_map(|k| {
                        crate::support::parts_of(&d.out, c, k.table_name(), "parquet")
                            .into_iter()
                            .flat_map(|p| crate::support::parquet_references(&p))
                    })
                })
                .collect();
            // Every reference of the input no earlier commit exported (those of runs killed
            // before it included), and nothing else.
            let expected: BTreeSet<String> = input
                .iter()
                .map(|(r, _)| r.clone())
                .filter(|r| !exported_before.contains(r))
                .collect();
            assert_eq!(new, expected, "attempt {attempt}: the commit's rows");
            "committed"
        } else {
            unchanged += 1;
            assert!(
                after == before,
                "attempt {attempt}: the killed run's uncommitted parts ({parts} under their final names) changed the dataset"
            );
            if killed_running && parts > 0 {
                inside += 1;
            }
            "previous dataset"
        };
        eprintln!(
            "attempt {attempt} ({}, killed running: {killed_running}): {state}, {parts} parts of the run under final names",
            if at_publish { "at publish" } else { "random" }
        );
    }
    eprintln!("{unchanged} kills left the previous dataset, {committed} the whole commit");
    assert!(
        inside >= 2,
        "only {inside} kills landed between the first published part and the commit"
    );
    let mut child = spawn_job(&d, &api.base_url());
    assert_eq!(wait_with_timeout(&mut child, Duration::from_secs(60)), 0);
    let input = &all[..60 + 5 * ATTEMPTS];
    assert_complete(&d.out, input);
    crate::support::assert_tables_match_archives(&d.out, input);
    api.shutdown().await;
}

/// Ctrl-C: exit 130 with a complete commit of what the run did (report interrupted, every part
/// readable), and the next run completes.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_exits_130_with_a_complete_commit_and_resumes() {
    let api = sim().await;
    let refs = exportable(30);
    let d = dir_with(&job_text(40.0, 4), &refs);
    let base = api.base_url();
    let mut interrupted = 0;
    for delay in [0u64, 400, 800] {
        let before = api.requests().len();
        let mut child = spawn_job(&d, &base);
        // The signal handlers are installed before the first request: a signal sent after it
        // is the program's to handle, however loaded the machine (a fixed delay from spawn
        // could land first and kill the process outright).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while api.requests().len() == before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(delay));
        crate::support::signal(child.id(), libc::SIGINT);
        let code = wait_with_timeout(&mut child, Duration::from_secs(30));
        if code == 0 {
            break; // finished before the signal landed
        }
        assert_eq!(code, 130, "Ctrl-C exits 130");
        interrupted += 1;
        assert_eq!(commits(&d.out).len(), interrupted, "one commit per run");
        assert_committed_parts_complete(&d.out);
        let report = latest_report(&d.out);
        assert_eq!(report["interrupted"], true);
    }
    assert!(interrupted >= 1, "no run was interrupted");
    let mut child = spawn_job(&d, &base);
    assert_eq!(wait_with_timeout(&mut child, Duration::from_secs(60)), 0);
    assert_complete(&d.out, &refs);
    crate::support::assert_tables_match_archives(&d.out, &refs);
    api.shutdown().await;
}

/// "An archive that exists but that no commit lists (a run killed after writing it) is checked
/// and taken over by the next commit, not fetched again." A run is killed once it has written
/// archives and before its commit; the next run lists each of them without a single request
/// for its reference, records its claim, and leaves the file byte for byte.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_a_killed_run_left_are_taken_over_without_a_request() {
    let api = sim().await;
    let refs = exportable(12);
    let d = dir_with(&job_text(20.0, 2), &refs);
    let mut child = spawn_job(&d, &api.base_url());
    spin_until(&mut child, Duration::from_secs(30), || {
        archives_present(&d.out).len() >= 3
    });
    assert!(child.try_wait().unwrap().is_none(), "the run ended first");
    let _ = child.kill();
    let _ = child.wait();
    assert!(commits(&d.out).is_empty(), "the killed run committed");
    let dead = run_locks(&d.out).into_iter().next().expect("its lock file");
    let left: BTreeMap<String, Vec<u8>> = archives_present(&d.out)
        .into_iter()
        .map(|r| {
            let bytes = std::fs::read(d.out.join(format!("archives/{r}.zip"))).unwrap();
            (r, bytes)
        })
        .collect();
    let log_start = api.requests().len();
    let next = run_in_process(&d, &api.base_url(), quiet()).await;
    assert_eq!(next.already_exported, left.len() as u64, "{next:?}");
    assert_eq!(next.exported as usize, refs.len() - left.len());
    let log = &api.requests()[log_start..];
    let c = commits(&d.out).pop().unwrap();
    let run = c["run"].as_str().unwrap();
    for (r, bytes) in &left {
        assert_eq!(
            requests_for(log, r),
            Vec::<String>::new(),
            "{r}: fetched although a killed run left its archive"
        );
        let path = d.out.join(format!("archives/{r}.zip"));
        assert!(
            std::fs::read(&path).unwrap() == *bytes,
            "{r}: archive changed"
        );
        let claim = d.out.join(format!("archives/.claims/{r}/{dead}"));
        assert_eq!(
            std::fs::read_to_string(&claim).unwrap().trim(),
            run,
            "{r}: the claim names the run that took it over"
        );
    }
    assert_complete(&d.out, &refs);
    crate::support::assert_tables_match_archives(&d.out, &refs);
    api.shutdown().await;
}

/// An archive that no commit lists and that does not check out is never replaced: the reference
/// fails (`stage = archive`, `BAD_RESPONSE`), the file stays byte for byte, and nothing is
/// fetched for it — in every run, until someone moves it aside.
async fn assert_kept_and_failed(
    api: &SimHandle,
    d: &Dir,
    reference: &str,
    kind: Kind,
    opts: RunOptions,
) {
    let path = d.out.join(format!("archives/{reference}.zip"));
    let old = std::fs::read(&path).unwrap();
    let log_start = api.requests().len();
    let s = run_in_process(d, &api.base_url(), opts).await;
    assert_eq!((s.exported, s.failed), (0, 1), "{s:?}");
    assert_eq!(s.failures_by_error.get("BAD_RESPONSE"), Some(&1), "{s:?}");
    assert_eq!(
        requests_for(&api.requests()[log_start..], reference),
        Vec::<String>::new(),
        "something was fetched for an archive that cannot be replaced"
    );
    assert!(
        std::fs::read(&path).ok().as_ref() == Some(&old),
        "the archive was changed or deleted"
    );
    let text = std::fs::read_to_string(d.out.join("failures.csv")).unwrap();
    assert!(
        text.contains(&format!("{reference},{kind},archive,,BAD_RESPONSE,")),
        "{text}"
    );
    assert!(dataset_references(&d.out, kind).is_empty());
}

/// Another kind: a complete, verifying archive of `ok-n1` holding an Authentication response,
/// left by a dead run. Twice kept and failed; moved aside, the reference is exported as served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_of_another_kind_is_never_replaced_and_fails_the_reference() {
    let api = sim().await;
    let refs = vec![("ok-n1".to_string(), Kind::Netverify)];
    let d = dir_with(&job_text(200.0, 2), &refs);
    let path = d.out.join("archives/ok-n1.zip");
    let body = br#"{"scanReference":"ok-n1","transactionResult":"PASSED"}"#;
    archive::write_archive(
        &d.out,
        "ok-n1",
        &[archive::ArchiveEntry {
            kind: archive::EntryKind::Authentication,
            body: bytes::Bytes::from_static(body),
            content_type: "application/json".into(),
            api_path: "/api/netverify/v2/authentications/ok-n1".into(),
            http_status: 200,
            retrieved_at: chrono::Utc::now(),
        }],
        &archive::ProvenanceMeta {
            tool_version: "test".into(),
            job_sha256: "0".repeat(64),
            run: Some("20200101T000000Z-dead".into()),
        },
    )
    .unwrap();
    let c = archive::read_archive(&path).unwrap();
    assert!(
        c.manifest_ok && c.reference.as_deref() == Some("ok-n1"),
        "the planted archive verifies and names its reference: only its kind is wrong"
    );
    for _ in 0..2 {
        assert_kept_and_failed(&api, &d, "ok-n1", Kind::Netverify, quiet()).await;
    }
    std::fs::rename(&path, d.out.join("ok-n1.zip.aside")).unwrap();
    let fixed = run_in_process(&d, &api.base_url(), quiet()).await;
    assert_eq!((fixed.exported, fixed.failed), (1, 0), "{fixed:?}");
    crate::support::assert_archive_as_served(&api, &path, "ok-n1", Kind::Netverify).await;
    assert_eq!(
        dataset_references(&d.out, Kind::Netverify),
        ["ok-n1"],
        "exported once"
    );
    assert!(
        !failures_csv(&d.out).contains_key("ok-n1"),
        "the failure is closed by the export"
    );
    api.shutdown().await;
}

/// Another key (`[output] encrypt_archives`, the key changed between runs): an archive encrypted
/// under the first key that no commit lists is kept, and the run under the second key stops
/// with exit 2 naming `[output] archive_key_env` (issue 14 point 5: a key mismatch is a setting
/// that differs, never a refetch); under the first key the next run takes it over without a
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_under_another_key_is_never_replaced_and_stops_the_run() {
    let api = sim().await;
    let refs = vec![("ok-d1".to_string(), Kind::Document)];
    let key1 = archive::ArchiveKey::new(b"first key, sixteen bytes or more").unwrap();
    let key2 = archive::ArchiveKey::new(b"second key, also long enough").unwrap();
    let with_key = |key: &archive::ArchiveKey| RunOptions {
        archive_key: Some(key.clone()),
        ..quiet()
    };
    // A genuine archive under key1 from a run of another dataset: in this one, its run never
    // committed and is not live, as after a kill.
    let elsewhere = dir_with(&job_text(200.0, 2), &refs);
    let first = run_in_process(&elsewhere, &api.base_url(), with_key(&key1)).await;
    assert_eq!(first.exported, 1);
    let d = dir_with(&job_text(200.0, 2), &refs);
    std::fs::create_dir_all(d.out.join("archives")).unwrap();
    let path = d.out.join("archives/ok-d1.zip");
    std::fs::copy(elsewhere.out.join("archives/ok-d1.zip"), &path).unwrap();
    let opens_with = |key: &archive::ArchiveKey| {
        let c = archive::read_archive_with_key(&path, Some(key)).unwrap();
        c.manifest_ok && c.reference.as_deref() == Some("ok-d1")
    };
    assert!(opens_with(&key1) && !opens_with(&key2));
    let old = std::fs::read(&path).unwrap();
    let log_start = api.requests().len();
    let e = run_result(&d, &api.base_url(), with_key(&key2))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, run::RunError::ArchiveMode(m) if m.contains("[output] archive_key_env differs")),
        "{e}"
    );
    assert_eq!(api.requests().len(), log_start, "nothing fetched");
    assert!(std::fs::read(&path).unwrap() == old, "the archive changed");
    assert!(opens_with(&key1));

    let log_start = api.requests().len();
    let taken = run_in_process(&d, &api.base_url(), with_key(&key1)).await;
    assert_eq!(
        (taken.exported, taken.already_exported, taken.failed),
        (0, 1, 0),
        "{taken:?}"
    );
    assert_eq!(api.requests().len(), log_start, "nothing fetched");
    assert_eq!(dataset_exported(&d.out), refs, "listed by the commit");
    assert!(opens_with(&key1), "still the archive under the first key");
    assert_committed_parts_complete(&d.out);
    api.shutdown().await;
}

/// A truncated archive: one a commit lists is catalogued, so a later run neither re-reads nor
/// fetches it (`verify` finds it); one no commit lists is kept byte for byte and fails its
/// reference without a request; moved aside, it is fetched and exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_archive_is_never_replaced_and_a_committed_one_is_not_re_read() {
    let api = sim().await;
    let refs = exportable(7);
    let d = dir_with(&job_text(200.0, 4), &refs[..6]);
    let first = run_in_process(&d, &api.base_url(), quiet()).await;
    assert_eq!(first.exported, 6);
    // A committed archive truncated afterwards.
    let committed = d.out.join(format!("archives/{}.zip", refs[0].0));
    let bytes = std::fs::read(&committed).unwrap();
    std::fs::write(&committed, &bytes[..bytes.len() / 2]).unwrap();
    // An uncommitted archive of refs[6], truncated (a genuine one from another dataset).
    let elsewhere = dir_with(&job_text(200.0, 4), &refs[6..]);
    run_in_process(&elsewhere, &api.base_url(), quiet()).await;
    let (victim, kind) = refs[6].clone();
    let path = d.out.join(format!("archives/{victim}.zip"));
    let whole = std::fs::read(elsewhere.out.join(format!("archives/{victim}.zip"))).unwrap();
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    std::fs::write(&d.refs, refs_text(&refs)).unwrap();

    let log_start = api.requests().len();
    let path_bytes = std::fs::read(&path).unwrap();
    let second = run_in_process(&d, &api.base_url(), quiet()).await;
    assert_eq!(second.already_exported, 6, "{second:?}");
    assert_eq!((second.exported, second.failed), (0, 1), "{second:?}");
    assert_eq!(api.requests().len(), log_start, "nothing was fetched");
    assert!(
        std::fs::read(&path).unwrap() == path_bytes,
        "kept byte for byte"
    );
    assert_eq!(
        std::fs::read(&committed).unwrap().len(),
        bytes.len() / 2,
        "the committed archive was not touched"
    );
    let text = std::fs::read_to_string(d.out.join("failures.csv")).unwrap();
    assert!(
        text.contains(&format!("{victim},{kind},archive,,BAD_RESPONSE,")),
        "{text}"
    );

    std::fs::rename(&path, d.out.join("victim.zip.aside")).unwrap();
    std::fs::write(&committed, &bytes).unwrap();
    let third = run_in_process(&d, &api.base_url(), quiet()).await;
    assert_eq!((third.exported, third.failed), (1, 0), "{third:?}");
    let touched: BTreeSet<String> = api.requests()[log_start..]
        .iter()
        .map(reference_of)
        .collect();
    assert_eq!(touched, BTreeSet::from([victim.clone()]));
    assert_complete(&d.out, &refs);
    api.shutdown().await;
}

/// No run owns a directory any more: a run removes the temporaries of dead runs (archives, parts,
/// commits, claims; a dead run's lock file is unlocked) and leaves those of a live run (one that
/// holds `runs/{run}.lock` with an OS lock) byte for byte. An existing directory keeps its mode;
/// the ones the run creates get 0700.
#[cfg(unix)]
#[test]
fn temporaries_of_dead_runs_are_removed_those_of_live_runs_kept_and_modes_kept() {
    use std::os::unix::fs::PermissionsExt;
    let api = crate::support::BlockingSim::start(SimOptions::default());
    let refs = exportable(2);
    let d = dir_with(&job_text(200.0, 2), &refs);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for dir in [d.out.clone(), d.out.join("archives")] {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    }
    for t in ["netverify", "files"] {
        std::fs::create_dir_all(d.out.join("tables").join(t)).unwrap();
    }
    std::fs::create_dir_all(d.out.join("commits")).unwrap();
    let (dead, live) = ("20200101T000000Z-dead", "20200101T000001Z-beef");
    let temporaries_of = |run: &str| {
        vec![
            d.out.join(format!("runs/{run}/ok-n9.zip.tmp")),
            d.out.join(format!("tables/netverify/.{run}-0.csv.tmp")),
            d.out.join(format!("tables/files/.{run}-2.parquet.tmp")),
            d.out.join(format!("commits/.{run}.json.tmp")),
        ]
    };
    for run in [dead, live] {
        std::fs::create_dir_all(d.out.join(format!("runs/{run}"))).unwrap();
        for p in temporaries_of(run) {
            std::fs::write(&p, format!("left by {run}")).unwrap();
        }
    }
    // The dead run's lock file is there but unlocked (killed); the live one is held.
    std::fs::create_dir_all(d.out.join("runs")).unwrap();
    std::fs::write(d.out.join(format!("runs/{dead}.lock")), b"").unwrap();
    let _held = LiveRunLock::hold(&d.out, live);
    let o = job_command(&d, &api.api().base_url()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", crate::support::text(&o));
    for p in temporaries_of(dead) {
        assert!(!p.exists(), "{} of a dead run left", p.display());
    }
    for p in temporaries_of(live) {
        assert_eq!(
            std::fs::read_to_string(&p).ok().as_deref(),
            Some(format!("left by {live}").as_str()),
            "{} of a live run removed or changed",
            p.display()
        );
    }
    assert_eq!(mode(&d.out), 0o750, "the existing output directory's mode");
    assert_eq!(mode(&d.out.join("archives")), 0o750);
    for new in [
        "tables/documents",
        "tables/authentications",
        "tables/failures",
    ] {
        assert_eq!(mode(&d.out.join(new)), 0o700, "{new}");
    }
    drop(_held);
    // Once the live run is gone, the next run removes its temporaries too.
    let o = job_command(&d, &api.api().base_url()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", crate::support::text(&o));
    for p in temporaries_of(live) {
        assert!(!p.exists(), "{} of a dead run left", p.display());
    }
    assert_complete(&d.out, &refs);
}

/// The lock of one run per directory is gone: a second run on the same input while the first is
/// live is not refused; it leaves the first run's archives to it, and with a final run every
/// reference is exported exactly once across the commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_on_one_dataset_export_each_reference_once() {
    let api = sim().await;
    let refs = exportable(30);
    let d = dir_with(&job_text(20.0, 2), &refs);
    let mut first = spawn_job(&d, &api.base_url());
    let start = Instant::now();
    while archives_present(&d.out).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "no archive");
        std::thread::sleep(Duration::from_millis(20));
    }
    let fast = dir_with(&job_text(500.0, 4), &refs);
    let second = {
        let mut c = bin();
        c.arg("run")
            .arg(&fast.job)
            .arg("--input")
            .arg(&d.refs)
            .arg("--out")
            .arg(&d.out)
            .args(["--base-url", &api.base_url()])
            .output()
            .unwrap()
    };
    let first_code = wait_with_timeout(&mut first, Duration::from_secs(60));
    // 1: references whose archive the other run owned are left to it (not_started).
    assert!(
        matches!(second.status.code(), Some(0 | 1)),
        "{}",
        crate::support::text(&second)
    );
    assert!(matches!(first_code, 0 | 1), "first run: {first_code}");
    assert_eq!(commits(&d.out).len(), 2);
    let mut child = spawn_job(&d, &api.base_url());
    assert_eq!(wait_with_timeout(&mut child, Duration::from_secs(60)), 0);
    assert_complete(&d.out, &refs);
    crate::support::assert_dataset_matches_archives(&d.out, &refs);
    api.shutdown().await;
}

/// README: "Ctrl-C or SIGTERM: no new reference is started, ... transfers in flight get five
/// seconds ... the process exits 130" and "an interruption loses at most `concurrency`
/// transactions in progress". Against a simulator that answers every request after 1.5 s (a
/// transaction takes longer than the grace), SIGTERM once transactions are under way: exit 130
/// after the grace and not much later, the run's commit complete with its report interrupted,
/// no reference started after the signal, and at most `concurrency` references whose final
/// status call was answered are left without an archive.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_like_ctrl_c_after_the_grace_losing_at_most_concurrency() {
    const CONCURRENCY: usize = 2;
    let mut opts = SimOptions::default();
    opts.faults.latency_ms = 1500;
    let api = simulator::start(opts, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let refs: Vec<(String, Kind)> = (1..=8)
        .map(|i| (format!("ok-n{i}"), Kind::Netverify))
        .collect();
    let d = dir_with(&job_text(100.0, CONCURRENCY), &refs);
    let mut child = spawn_job(&d, &api.base_url());
    let is_status = |r: &RequestRecord| r.path.matches('/').count() == 5;
    // Wait until `concurrency` final status calls are answered, then a little more: transactions
    // are under way, and a run that let more start would have by now.
    let start = Instant::now();
    while api.requests().iter().filter(|r| is_status(r)).count() < CONCURRENCY {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no status call answered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let started_before: BTreeSet<String> = api
        .requests()
        .iter()
        .filter(|r| is_status(r))
        .map(reference_of)
        .collect();
    let signalled_at = chrono::Utc::now();
    let signalled = Instant::now();
    crate::support::signal(child.id(), libc::SIGTERM);
    let code = wait_with_timeout(&mut child, Duration::from_secs(30));
    let took = signalled.elapsed();
    assert_eq!(code, 130, "SIGTERM exits 130 like Ctrl-C");
    assert!(
        took >= Duration::from_millis(4500),
        "exited {took:?} after SIGTERM: transfers in flight did not get their 5 s"
    );
    // The margin covers the publish (commit, failures.csv, reports, each fsync'd) on a loaded
    // machine: 8 s was once exceeded by 0.2 s at load 20.
    assert!(
        took <= Duration::from_secs(10),
        "exited {took:?} after SIGTERM: more than the 5 s grace and a margin"
    );
    assert_eq!(commits(&d.out).len(), 1, "the interrupted run committed");
    assert_committed_parts_complete(&d.out);
    assert_eq!(latest_report(&d.out)["interrupted"], true);
    // No reference started after the signal (50 ms for a request already on its way).
    let log = api.requests();
    let late: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| {
            chrono::DateTime::parse_from_rfc3339(&r.time).unwrap()
                > signalled_at + chrono::Duration::milliseconds(50)
                && !started_before.contains(&reference_of(r))
        })
        .collect();
    assert!(
        late.is_empty(),
        "references started after SIGTERM: {late:?}"
    );
    // Lost: a final status call answered (these references are final at once), no archive.
    let present = archives_present(&d.out);
    let answered: BTreeSet<String> = log
        .iter()
        .filter(|r| is_status(r) && r.status == 200)
        .map(reference_of)
        .collect();
    let lost: Vec<&String> = answered.iter().filter(|r| !present.contains(*r)).collect();
    eprintln!(
        "SIGTERM after {} status calls: exit after {took:?}, lost {lost:?}, archived {present:?}",
        started_before.len()
    );
    assert!(
        lost.len() <= CONCURRENCY,
        "{} transactions in progress lost, concurrency is {CONCURRENCY}: {lost:?}",
        lost.len()
    );
    // What was archived is what the commit lists.
    let committed: BTreeSet<String> = dataset_references(&d.out, Kind::Netverify)
        .into_iter()
        .collect();
    assert_eq!(committed, present, "the commit lists the archives written");
    api.shutdown().await;
}

/// PENDING once a day, from the commits' failure parts: deleting `failures.csv` loses nothing
/// (the next run rebuilds it from the commits and still does not poll a reference not yet due).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_reference_is_polled_again_only_after_a_day() {
    let api = sim().await;
    let refs = vec![
        ("pf-n1".to_string(), Kind::Netverify),
        ("ok-n1".to_string(), Kind::Netverify),
    ];
    let d = dir_with(&job_text(200.0, 2), &refs);
    let now = chrono::Utc::now();
    let at = |t: chrono::DateTime<chrono::Utc>| RunOptions {
        quiet: true,
        clock: Arc::new(move || t),
        ..RunOptions::default()
    };
    let first = run_in_process(&d, &api.base_url(), at(now)).await;
    assert_eq!(first.failures_by_error.get("PENDING"), Some(&1));
    let status_calls = |log: &[RequestRecord]| {
        log.iter()
            .filter(|r| r.path == "/api/netverify/v2/scans/pf-n1")
            .count()
    };
    assert_eq!(
        status_calls(&api.requests()),
        STATUS_CALLS as usize,
        "first call + 3 scheduled polls"
    );
    let expected_next =
        (now + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let row = format!("pf-n1,netverify,status,200,PENDING,4,{expected_next}");

    // An hour later, failures.csv deleted: not due, no request for it, its row rebuilt as it was.
    for _ in 0..2 {
        std::fs::remove_file(d.out.join("failures.csv")).unwrap();
        let n = api.requests().len();
        let early = run_in_process(&d, &api.base_url(), at(now + chrono::Duration::hours(1))).await;
        assert_eq!(api.requests().len(), n, "nothing is asked for");
        assert_eq!(early.failures_by_error.get("PENDING"), Some(&1));
        assert_eq!(early.already_exported, 1);
        let text = std::fs::read_to_string(d.out.join("failures.csv")).unwrap();
        assert!(text.contains(&row), "{text}");
    }

    // A day and an hour later: due, and given the guide's one retrieval a day — a single
    // status call, not a new round of the schedule (still pending: pushed a day further).
    std::fs::remove_file(d.out.join("failures.csv")).unwrap();
    let n = api.requests().len();
    let later = now + chrono::Duration::hours(25);
    run_in_process(&d, &api.base_url(), at(later)).await;
    assert_eq!(status_calls(&api.requests()[n..]), 1);
    assert_eq!(api.requests().len(), n + 1);
    let text = std::fs::read_to_string(d.out.join("failures.csv")).unwrap();
    let next =
        (later + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(text.contains(&next), "{text}");
    assert_eq!(failures_csv(&d.out).len(), 1, "{text}");
    api.shutdown().await;
}

/// NOT_FOUND is carried by the commits (deleting `failures.csv` loses nothing) and asked for
/// again only with `--retry-failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_retried_only_with_retry_failed() {
    let api = sim().await;
    let refs = vec![("nf-n1".to_string(), Kind::Netverify)];
    let d = dir_with(&job_text(200.0, 2), &refs);
    run_in_process(&d, &api.base_url(), quiet()).await;
    let n = api.requests().len();
    std::fs::remove_file(d.out.join("failures.csv")).unwrap();
    let again = run_in_process(&d, &api.base_url(), quiet()).await;
    assert_eq!(
        api.requests().len(),
        n,
        "NOT_FOUND is not retried by default"
    );
    assert_eq!(again.failures_by_error.get("NOT_FOUND"), Some(&1));
    let text = std::fs::read_to_string(d.out.join("failures.csv")).unwrap();
    assert!(
        text.contains("nf-n1,netverify,status,404,NOT_FOUND,"),
        "{text}"
    );
    let forced = RunOptions {
        quiet: true,
        retry_failed: true,
        ..RunOptions::default()
    };
    run_in_process(&d, &api.base_url(), forced).await;
    assert_eq!(api.requests().len(), n + 1, "--retry-failed asks again");
    api.shutdown().await;
}

/// An output directory that cannot be created or written is fatal (exit 3), named, and costs no
/// request. Root ignores permission bits, so "unwritable" is a path under a regular file and,
/// where a tmpfs can be mounted, a read-only filesystem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_output_directory_exits_3_before_any_request() {
    let api = sim().await;
    let refs = exportable(3);
    let mut d = dir_with(&job_text(200.0, 2), &refs);
    let blocker = d.job.parent().unwrap().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let mut outs = vec![blocker.join("out")];
    #[cfg(target_os = "linux")]
    let ro = crate::peers::Tmpfs::mount("1m");
    #[cfg(target_os = "linux")]
    if let Some(disk) = &ro {
        let st = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&disk.path)
            .status()
            .unwrap();
        assert!(st.success());
        outs.push(disk.path.join("out"));
    }
    for out in outs {
        d.out = out.clone();
        let o = bin()
            .arg("run")
            .arg(&d.job)
            .arg("--input")
            .arg(&d.refs)
            .arg("--out")
            .arg(&d.out)
            .args(["--base-url", &api.base_url()])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("output directory") && err.contains(&out.display().to_string()),
            "{err}"
        );
    }
    assert!(
        api.requests().is_empty(),
        "requests were sent although nothing could be written"
    );
    api.shutdown().await;
}

/// A full disk is fatal (exit 3): whatever stands under a final name is complete, and no commit
/// is written half (none of that run, or a complete one). The next run completes without
/// fetching any archive the stopped run finished.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_cleanly_and_the_next_run_completes() {
    let Some(disk) = crate::peers::Tmpfs::mount("400k") else {
        return;
    };
    let opts = SimOptions {
        image_bytes: 60_000,
        ..SimOptions::default()
    };
    let api = simulator::start(opts, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let refs = exportable(20);
    let mut d = dir_with(&job_text(500.0, 4), &refs);
    d.out = disk.path.join("out");
    let mut child = spawn_job(&d, &api.base_url());
    let code = wait_with_timeout(&mut child, Duration::from_secs(60));
    assert_eq!(
        code, 3,
        "a full disk is fatal: stop rather than fail every reference"
    );
    let present = archives_present(&d.out);
    assert!(
        present.len() < refs.len(),
        "the disk was not full after all"
    );
    // Every commit there is complete (commits() parses each), and so is every part it lists.
    let written = commits(&d.out);
    eprintln!("after the full disk: {} commit(s)", written.len());
    assert_nothing_half_written(&d.out, "the full disk");
    disk.resize("64m");
    let n = api.requests().len();
    let mut child = spawn_job(&d, &api.base_url());
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(60)),
        0,
        "the next run completes"
    );
    for r in &api.requests()[n..] {
        assert!(
            !present.contains(&reference_of(r)),
            "{} fetched again",
            r.path
        );
    }
    assert_complete(&d.out, &refs);
    crate::support::assert_dataset_matches_archives(&d.out, &refs);
    api.shutdown().await;
}

/// A run stopped early (here: the API refuses the credentials at once) keeps every earlier
/// commit's rows and every archive: the dataset still lists every exported reference exactly
/// once and `failures.csv` still carries the earlier NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_early_keeps_every_earlier_row_and_archive() {
    let api = sim().await;
    let mut refs = exportable(300);
    refs.push(("nf-n1".to_string(), Kind::Netverify));
    let d = dir_with(&job_text(5000.0, 16), &refs);
    let first = run_in_process(&d, &api.base_url(), quiet()).await;
    assert_eq!(first.exported, 300);
    let before = archives_present(&d.out);
    let snapshot = dataset_snapshot(&d.out);
    // Same dataset, refused credentials: exit 3 after the first status call.
    let o = Overrides {
        input: Some(d.refs.display().to_string()),
        out: Some(d.out.clone()),
        base_url: Some(api.base_url()),
        ..Overrides::default()
    };
    let job = job::load(&d.job, &o).unwrap();
    // A reference with no archive yet comes first, so the refusal happens before the others.
    let first_new = d.out.parent().unwrap().join("refs-first-new.txt");
    let original = std::fs::read_to_string(&d.refs).unwrap();
    std::fs::write(
        &first_new,
        format!(
            "reference,kind\nok-n77,netverify\n{}",
            original.split_once('\n').unwrap().1
        ),
    )
    .unwrap();
    let list = input::read_input(first_new.to_str().unwrap(), job.input.default_kind).unwrap();
    assert_eq!(list.items.read_all().unwrap()[0].reference, "ok-n77");
    let denied = run::run(
        &job,
        list,
        &Credentials::new("demo-token", "wrong"),
        quiet(),
    )
    .await
    .unwrap();
    assert_eq!(denied.exit_code(), 3);
    assert_eq!(archives_present(&d.out), before, "no archive was deleted");
    assert!(
        contains_all(&dataset_snapshot(&d.out), &snapshot),
        "rows of the earlier commit are gone"
    );
    let expected: Vec<(String, Kind)> =
        refs.iter().filter(|(r, _)| r != "nf-n1").cloned().collect();
    assert_committed_parts_complete(&d.out);
    let mut sorted = expected.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.table_name().cmp(b.1.table_name())));
    assert_eq!(
        dataset_exported(&d.out),
        sorted,
        "the dataset still lists every exported reference once"
    );
    let failures = std::fs::read_to_string(d.out.join("failures.csv")).unwrap();
    assert!(
        failures.contains("nf-n1,netverify,status,404,NOT_FOUND"),
        "{failures}"
    );
    api.shutdown().await;
}
