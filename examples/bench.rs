//! Benchmark harness. Issue 5: rate fidelity, request efficiency, adaptive 429 behaviour,
//! throughput and memory scaling of `jumio-export run`, measured from outside. Issue 11: the
//! dataset — the cost of resuming a completed export, batches into one dataset, shards at once.
//! Issue 10: `--vs OLD` runs every scenario with a second binary in turn and compares them.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench -- all
//! cargo run --release --example bench -- rate --seconds 20
//! cargo run --release --example bench -- scale --counts 1000,10000,30000
//! cargo run --release --example bench -- all --tiny          # seconds, for checking the harness
//! cargo run --release --example bench -- dataset --tiny      # resume, batches, shards
//! cargo run --release --example bench -- throughput --vs ../old/target/release/jumio-export --repeat 3
//! ```
//! Every run starts the simulator (`jumio-export simulate …`) and the job (`jumio-export run …`)
//! as separate processes of the release binary, the job under `/usr/bin/time -v` when it is
//! installed; the figures come from the simulator's JSONL request log, the job's `report.json`
//! and the job's CPU time and peak RSS. Each scenario prints the exact command lines it ran
//! and one markdown table row per measurement. Nothing here asserts a target: BENCHMARKS.md
//! says what each figure should be and what limits it.
//!
//! The harness builds `jumio-export` first (`cargo build --release --bin jumio-export`), since
//! `cargo run --example` alone would leave a stale binary; `--bin PATH` skips that.

#[path = "bench/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use harness::{DatasetCheck, Env, JobInvocation, JobRun, JobSpec, Run, SimSpec, Simulator, Stop};

/// Which measurement to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Achieved req/s ÷ configured (50/s) and the busiest one-second window.
    Rate,
    /// Requests made ÷ the fewest the guide's flow needs, with 0 % and 5 % 5xx.
    Efficiency,
    /// Configured 30/s against a simulator ceiling of 15/s: a sliding one-second window (with
    /// and without refused requests counted), a token bucket, 15 → 8 → 15, two processes.
    Adaptive,
    /// No rate limit: transactions/s, MB/s, CPU per 1,000 transactions at several concurrencies.
    Throughput,
    /// Peak RSS and time per transaction from 1,000 to 100,000 references.
    Scale,
    /// All of the above, in this order.
    All,
    /// A completed export run again with the same input: archive reads, I/O and time, against a
    /// rerun with an empty input and a program that only reads the commits.
    Resume,
    /// `--batches` batches of `--batch-size` references into one dataset: rows, verify, peak RSS
    /// of each batch.
    Batches,
    /// `--shards` shards started at once into one dataset: union, duplicates, verify.
    Shards,
    /// Resume, batches and shards, in this order.
    Dataset,
    /// Reads the commits of `--dataset` as a resuming run does (the catalogue: commit records
    /// and the parts' reference column) and prints how many references they exported; the
    /// resume scenario times it as the floor of a rerun's cost. With `--input`, then also reads
    /// that list as a run does.
    ReadCommits,
}

/// File sizes of the simulated population in the scale runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sizes {
    /// 4 KB images and pages, 2 KB liveness, 8 KB PDFs (sessions 1 and 2: ~20 GB of disk at 1M).
    Small,
    /// 400 B images and pages, 200 B liveness, 800 B PDFs: the same requests, rows and archives
    /// in a tenth of the disk (1M references fit in ~5 GB).
    Tiny,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmarks jumio-export against its simulator"
)]
struct Args {
    /// The scenario.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Directory for the runs' files (default: a temporary directory, removed at the end).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep every run's outputs and logs under --work.
    #[arg(long)]
    keep: bool,
    /// The jumio-export binary (default: target/release/jumio-export, built first).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// A second jumio-export binary (e.g. the previous commit's): every scenario runs with
    /// --bin and with this one in turn, A B A B …, and a summary compares them.
    #[arg(long)]
    vs: Option<PathBuf>,
    /// Runs of each scenario per binary (min, median and max in the summary).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Only these ceilings of the adaptive scenario (`sliding`, `refused`, `bucket`, `change`,
    /// `two`; default: every one).
    #[arg(long, value_delimiter = ',')]
    throttles: Vec<String>,
    /// Length of the measured rate window (rate, adaptive), seconds.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// References per run (efficiency, throughput).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Concurrencies of the throughput runs.
    #[arg(long, value_delimiter = ',', default_values_t = [8, 32, 128])]
    concurrency: Vec<usize>,
    /// Populations of the scaling runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000, 100000])]
    counts: Vec<usize>,
    /// File sizes of the scaling runs.
    #[arg(long, value_enum, default_value_t = Sizes::Small)]
    sizes: Sizes,
    /// Concurrency of the scaling and dataset runs.
    #[arg(long, default_value_t = 32)]
    scale_concurrency: usize,
    /// References of the completed export that the resume scenario runs again.
    #[arg(long, default_value_t = 100_000)]
    resume_count: usize,
    /// Reruns of each kind in the resume scenario (min, median, max).
    #[arg(long, default_value_t = 3)]
    reruns: usize,
    /// Batches of the batches scenario.
    #[arg(long, default_value_t = 10)]
    batches: usize,
    /// References per batch.
    #[arg(long, default_value_t = 10_000)]
    batch_size: usize,
    /// Shards started at once in the shards scenario.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// References split among the shards.
    #[arg(long, default_value_t = 10_000)]
    shard_count: usize,
    /// The dataset `read-commits` reads.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// `read-commits` also reads this reference list as a run does (parsed, checked and
    /// de-duplicated, kept beside the dataset): what any resume of that input must read.
    #[arg(long)]
    input: Option<String>,
    /// Seed of the simulated population.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A few seconds per scenario on ~20–200 references: checks the harness, measures nothing.
    #[arg(long)]
    tiny: bool,
    /// Pin the simulator to CPU 1 and the job to CPU 0 (`taskset`): one core each.
    #[arg(long)]
    pin: bool,
    /// Also write the markdown tables to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.tiny {
        args.seconds = args.seconds.min(3.0);
        args.count = args.count.min(20);
        args.concurrency = vec![8];
        args.counts = vec![20, 40];
        args.resume_count = args.resume_count.min(200);
        args.reruns = args.reruns.min(2);
        args.batches = args.batches.min(3);
        args.batch_size = args.batch_size.min(50);
        args.shard_count = args.shard_count.min(200);
    }
    let result = if args.scenario == Scenario::ReadCommits {
        read_commits(&args)
    } else {
        main_inner(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What a scenario measured with one binary: its tables, and named figures for the summary.
#[derive(Debug, Default)]
struct Outcome {
    table: String,
    figures: Vec<(String, f64)>,
}

impl Outcome {
    fn figure(&mut self, name: impl Into<String>, value: f64) {
        self.figures.push((name.into(), value));
    }
}

/// One scenario run with one binary; `tag` names the binary and the repetition in titles and
/// work directories.
type ScenarioFn = fn(&Env, &Args, &str) -> Result<Outcome>;

fn main_inner(args: &Args) -> Result<()> {
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => build_release_binary()?,
    };
    let tmp;
    let work = match &args.work {
        Some(w) => {
            std::fs::create_dir_all(w).with_context(|| format!("creating {}", w.display()))?;
            w.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let mut env = Env::new(bin.clone(), work);
    // Both binaries' jobs face the same simulator: --bin's.
    env.sim_bin = Some(bin.clone());
    env.keep = args.keep;
    env.pin = args.pin;
    let mut md = machine_header(&env, args);
    println!("{md}");
    let mut binaries = vec![("new", bin)];
    if let Some(vs) = &args.vs {
        binaries.push(("old", vs.clone()));
    }
    let scenarios: [(Scenario, ScenarioFn, bool); 8] = [
        (Scenario::Rate, rate, true),
        (Scenario::Efficiency, efficiency, true),
        (Scenario::Adaptive, adaptive, true),
        (Scenario::Throughput, throughput, true),
        (Scenario::Scale, scale, true),
        (Scenario::Resume, resume, false),
        (Scenario::Batches, batches, false),
        (Scenario::Shards, shards, false),
    ];
    for (s, f, in_all) in scenarios {
        let selected = args.scenario == s
            || (args.scenario == Scenario::All && in_all)
            || (args.scenario == Scenario::Dataset && !in_all);
        if !selected {
            continue;
        }
        // figures[binary][name] = one value per repetition
        let mut names: Vec<String> = Vec::new();
        let mut figures: Vec<BTreeMap<String, Vec<f64>>> = vec![BTreeMap::new(); binaries.len()];
        for rep in 0..args.repeat.max(1) {
            for (i, (label, b)) in binaries.iter().enumerate() {
                env.bin = b.clone();
                let tag = if args.repeat > 1 || binaries.len() > 1 {
                    format!("{label}-{}", rep + 1)
                } else {
                    String::new()
                };
                let out = f(&env, args, &tag)?;
                md.push_str(&out.table);
                md.push('\n');
                for (name, v) in out.figures {
                    if !names.contains(&name) {
                        names.push(name.clone());
                    }
                    figures[i].entry(name).or_default().push(v);
                }
            }
        }
        if binaries.len() > 1 || args.repeat > 1 {
            let s = summary(&format!("{s:?}"), &binaries, &names, &figures);
            println!("{s}");
            md.push_str(&s);
        }
    }
    if matches!(args.scenario, Scenario::All | Scenario::Dataset) || args.vs.is_some() {
        println!("\n# All results\n\n{md}");
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// min / median / max of `v` (median of an even count: the mean of the middle two).
fn min_med_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (s[0], med, s[n - 1])
}

/// A figure with as many significant decimals as its size needs.
fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "–".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The summary of one scenario: per figure and binary min / median / max over the repetitions,
/// and with two binaries the ratio new ÷ old pair by pair (repetition i of each).
fn summary(
    scenario: &str,
    binaries: &[(&str, PathBuf)],
    names: &[String],
    figures: &[BTreeMap<String, Vec<f64>>],
) -> String {
    let mut columns = vec!["figure".to_string()];
    for (label, _) in binaries {
        columns.push(format!("{label} min / median / max"));
    }
    if binaries.len() == 2 {
        columns.push("new ÷ old, pairwise min / median / max".into());
    }
    let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut t = table(&format!("Summary: {scenario}"), &cols);
    for name in names {
        let mut cells = vec![name.clone()];
        for f in figures {
            let v = f.get(name).cloned().unwrap_or_default();
            let (lo, med, hi) = min_med_max(&v);
            cells.push(format!("{} / **{}** / {}", num(lo), num(med), num(hi)));
        }
        if figures.len() == 2 {
            let a = figures[0].get(name).cloned().unwrap_or_default();
            let b = figures[1].get(name).cloned().unwrap_or_default();
            let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
            let (lo, med, hi) = min_med_max(&ratios);
            let r = |x: f64| {
                if x.is_finite() {
                    format!("{x:.3}")
                } else {
                    "–".into()
                }
            };
            cells.push(format!("{} / **{}** / {}", r(lo), r(med), r(hi)));
        }
        row(&mut t, &cells);
    }
    for (label, b) in binaries {
        let _ = writeln!(t, "\n{label}: `{}`", b.display());
    }
    t
}

/// `read-commits`: the catalogue as a resuming run reads it, nothing else.
fn read_commits(args: &Args) -> Result<()> {
    let dataset = args
        .dataset
        .as_deref()
        .context("read-commits needs --dataset DIR")?;
    let catalogue = jumio_export::dataset::catalogue::Catalogue::read(dataset)?;
    let mut exported = 0u64;
    catalogue.for_each_exported(|_, _| {
        exported += 1;
        Ok(())
    })?;
    let open = catalogue.latest_failures()?.len();
    println!(
        "{} commits, {exported} exported references, {open} latest failures",
        catalogue.commits().len()
    );
    if let Some(input) = &args.input {
        let list =
            jumio_export::input::read_input_in(input, jumio_export::Kind::Netverify, dataset)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("{} references in {input}", list.items.len());
    }
    Ok(())
}

/// `cargo build --release --bin jumio-export`, then the binary next to this example's directory.
fn build_release_binary() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = env!("CARGO_MANIFEST_DIR");
    println!("$ (cd {manifest} && {cargo} build --release --bin jumio-export)");
    let status = Command::new(&cargo)
        .args(["build", "--release", "--bin", "jumio-export"])
        .current_dir(manifest)
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo build --release --bin jumio-export failed ({status})");
    }
    // target/release/examples/bench → target/release/jumio-export
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(|p| p.parent())
        .context("the example is not in target/<profile>/examples")?;
    let bin = release.join("jumio-export");
    if !bin.exists() {
        bail!("{} not found after the build", bin.display());
    }
    Ok(bin)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn machine_header(env: &Env, args: &Args) -> String {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let commit = sh("git", &["-C", manifest, "rev-parse", "--short", "HEAD"]);
    let dirty = sh(
        "git",
        &["-C", manifest, "status", "--porcelain", "--", "src"],
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = String::new();
    let _ = writeln!(s, "# jumio-export benchmarks\n");
    let _ = writeln!(
        s,
        "- date: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(
        s,
        "- commit: {commit}{}",
        if dirty.is_empty() || dirty == "?" {
            ""
        } else {
            " (src/ modified)"
        }
    );
    let _ = writeln!(
        s,
        "- machine: {nproc} CPUs ({model}), {mem} memory, load average {}",
        load()
    );
    let _ = writeln!(s, "- binary: {}", env.bin.display());
    if let Some(vs) = &args.vs {
        let _ = writeln!(
            s,
            "- against: {} (runs alternate: new, old, new, old …)",
            vs.display()
        );
    }
    let _ = writeln!(
        s,
        "- job CPU/RSS from: {}",
        if env.time_v {
            "/usr/bin/time -v"
        } else {
            "/proc polling"
        }
    );
    s
}

/// The one-minute load average: how busy the shared machine was (other engineers compile here).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

/// `name` or `name-tag`: a run's directory and a table's title name the binary and repetition.
fn tagged(name: &str, tag: &str) -> String {
    if tag.is_empty() {
        name.to_string()
    } else {
        format!("{name}-{tag}")
    }
}

/// `title` or `title (tag)`.
fn titled(title: &str, tag: &str) -> String {
    if tag.is_empty() {
        title.to_string()
    } else {
        format!("{title} ({tag})")
    }
}

/// Starts a scenario's table: its title, the header row and the separator.
fn table(title: &str, columns: &[&str]) -> String {
    let mut s = format!("\n## {title}\n\n| {} |\n|", columns.join(" | "));
    for _ in columns {
        s.push_str("---|");
    }
    s.push('\n');
    println!("{s}");
    s
}

/// Adds a row to `t` and prints it at once.
fn row(t: &mut String, cells: &[String]) {
    let line = format!("| {} |", cells.join(" | "));
    println!("{line}");
    t.push_str(&line);
    t.push('\n');
}

/// The command lines of a run, as a collapsed list under the table.
fn commands(t: &mut String, label: &str, run: &Run) {
    let _ = writeln!(t, "\n<!-- {label} -->");
    for c in &run.commands {
        let _ = writeln!(t, "    $ {c}");
    }
    t.push('\n');
}

fn exit(run: &Run) -> String {
    run.exit_code
        .map_or_else(|| "signal".into(), |c| c.to_string())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Rate fidelity: 50/s, burst 10, over `--seconds` after the first second.
fn rate(env: &Env, args: &Args, tag: &str) -> Result<Outcome> {
    let (rps, burst) = (50.0, 10);
    let job = JobSpec::new(rps, burst, 32);
    // ~10 requests per reference; half again as many as the window needs, so the input
    // never runs dry before the job is interrupted.
    let count = ((args.seconds + 3.0) * rps * 1.5 / 10.0).ceil() as usize;
    let mut sim = SimSpec::realistic(count);
    sim.seed = args.seed;
    let skip = Duration::from_secs(1);
    let stop = Stop::InterruptAfter(Duration::from_secs_f64(args.seconds + 2.0));
    let mut cmds = String::new();
    let mut t = table(
        &titled("Rate fidelity", tag),
        &[
            "configured",
            "window s",
            "requests",
            "achieved req/s",
            "achieved ÷ configured",
            "max in any 1 s",
            "rate + burst",
            "429s",
            "load",
            "exit",
        ],
    );
    let load = load();
    let run = harness::run(env, &tagged("rate", tag), &sim, &job, stop)?;
    let w = harness::rate_window(&run.requests, skip, args.seconds)
        .context("the rate run made no requests")?;
    row(
        &mut t,
        &[
            format!("{rps}/s burst {burst}, concurrency 32"),
            format!("{:.1}", w.seconds),
            w.requests.to_string(),
            format!("{:.2}", w.rate()),
            format!("{:.3}", w.rate() / rps),
            w.max_per_second.to_string(),
            format!("{}", rps as u32 + burst),
            w.too_many.to_string(),
            load,
            exit(&run),
        ],
    );
    commands(&mut cmds, "rate", &run);
    t.push_str(&cmds);
    let mut o = Outcome {
        table: t,
        ..Outcome::default()
    };
    o.figure("achieved ÷ configured", w.rate() / rps);
    o.figure("max requests in any 1 s", w.max_per_second as f64);
    Ok(o)
}

/// Request efficiency without faults and with 5 % 5xx answers.
fn efficiency(env: &Env, args: &Args, tag: &str) -> Result<Outcome> {
    let job = JobSpec::new(100_000.0, 1000, 32);
    let mut cmds = String::new();
    let mut figures = Vec::new();
    let mut t = table(
        &titled("Request efficiency", tag),
        &[
            "injected 5xx",
            "references",
            "requests",
            "minimum",
            "ratio",
            "excess by endpoint",
            "job retries",
            "exported / failed",
            "load",
            "exit",
        ],
    );
    for error_rate in [0.0, 0.05] {
        let mut sim = SimSpec::realistic(args.count);
        sim.seed = args.seed;
        sim.error_rate = error_rate;
        let load = load();
        let label = format!("efficiency-{}", (error_rate * 100.0) as u32);
        let run = harness::run(env, &tagged(&label, tag), &sim, &job, Stop::Complete)?;
        let e = harness::efficiency(&run, &job);
        figures.push((
            format!("requests ÷ minimum, {:.0} % 5xx", error_rate * 100.0),
            e.ratio,
        ));
        let excess: Vec<String> = e
            .by_category
            .iter()
            .filter(|(_, got, min)| got != min)
            .map(|(c, got, min)| format!("{} {got}/{min}", c.name()))
            .collect();
        let report = run.report.clone().unwrap_or_default();
        row(
            &mut t,
            &[
                format!("{:.0} %", error_rate * 100.0),
                run.refs.len().to_string(),
                e.requests.to_string(),
                e.minimum.to_string(),
                format!("{:.4}", e.ratio),
                if excess.is_empty() {
                    "none".into()
                } else {
                    excess.join(", ")
                },
                report.retries.to_string(),
                format!("{} / {}", report.exported, report.failed),
                load,
                exit(&run),
            ],
        );
        commands(&mut cmds, &label, &run);
    }
    t.push_str(&cmds);
    Ok(Outcome { table: t, figures })
}

/// One server-side ceiling of the adaptive scenario.
struct Throttle {
    /// Row label and figure suffix.
    name: &'static str,
    /// What `--throttles` selects it by.
    key: &'static str,
    /// `simulate --ceiling-window`.
    window: &'static str,
    /// `(fraction of the measured window, rps)`: ceiling changes, at `skip + fraction × seconds`.
    changes: &'static [(f64, f64)],
    /// Jobs sharing the ceiling at once (`--shard K/N` each, so each runs at rate / N).
    processes: u32,
}

/// The adaptive scenario's ceilings: Jumio's (a sliding one-second window, no `Retry-After`),
/// with and without refused requests counted in it, a token bucket, the ceiling changing mid-run
/// (15 → 8 → 15) and two processes sharing one ceiling.
const THROTTLES: [Throttle; 5] = [
    Throttle {
        name: "sliding window",
        key: "sliding",
        window: "sliding",
        changes: &[],
        processes: 1,
    },
    Throttle {
        name: "sliding, refused count",
        key: "refused",
        window: "sliding-refused",
        changes: &[],
        processes: 1,
    },
    Throttle {
        name: "token bucket",
        key: "bucket",
        window: "bucket",
        changes: &[],
        processes: 1,
    },
    Throttle {
        name: "15 → 8 → 15, refused count",
        key: "change",
        window: "sliding-refused",
        changes: &[(1.0 / 3.0, 8.0), (2.0 / 3.0, 15.0)],
        processes: 1,
    },
    Throttle {
        name: "two processes, refused count",
        key: "two",
        window: "sliding-refused",
        changes: &[],
        processes: 2,
    },
];

/// Adaptive 429: configured 30/s against a server ceiling of 15/s for each of [`THROTTLES`],
/// judged after the first 10 s: the share of requests answered 429, and the requests served
/// (not 429) per second against what the ceiling allowed in that window.
fn adaptive(env: &Env, args: &Args, tag: &str) -> Result<Outcome> {
    let (rps, burst, ceiling) = (30.0, 10, 15.0);
    let skip_s = if args.tiny { 1.0 } else { 10.0 };
    let job = JobSpec::new(rps, burst, 32);
    let mut cmds = String::new();
    let mut o = Outcome::default();
    let mut t = table(
        &titled("Adaptive 429", tag),
        &[
            "server ceiling",
            "window",
            "requests",
            "429 share",
            "served req/s",
            "served ÷ ceiling",
            "max served in any 1 s",
            "429s in the first window",
            "load",
            "exit",
        ],
    );
    let chosen = THROTTLES
        .iter()
        .filter(|th| args.throttles.is_empty() || args.throttles.iter().any(|k| k == th.key));
    for th in chosen {
        // Three times what the window can take (about ten requests a reference), so no process
        // runs dry before it is interrupted: each shard keeps only its part.
        let count = ((skip_s + args.seconds + 3.0) * ceiling * 3.0 / 10.0).ceil() as usize;
        let mut sim = SimSpec::realistic(count);
        sim.seed = args.seed;
        sim.ceiling_rps = Some(ceiling);
        sim.ceiling_window = th.window;
        sim.ceiling_changes = th
            .changes
            .iter()
            .map(|(f, r)| (skip_s + f * args.seconds, *r))
            .collect();
        let stop = Stop::InterruptAfter(Duration::from_secs_f64(skip_s + args.seconds + 1.0));
        let label = format!(
            "adaptive-{}",
            th.name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
                .collect::<String>()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join("-")
        );
        let load = load();
        let dir = harness::fresh_dir(env, &tagged(&label, tag))?;
        let simulator = Simulator::start(env, &dir, &sim)?;
        let out = dir.join("out");
        let mut started = Vec::new();
        let mut commands = vec![simulator.command.clone()];
        for k in 0..th.processes {
            let mut inv = JobInvocation::new(&format!("job-{k}"), &dir, &simulator.refs_path, &out);
            if th.processes > 1 {
                inv.extra = vec!["--shard".into(), format!("{k}/{}", th.processes)];
            }
            let p = harness::spawn_job(env, &simulator, &job, &inv)?;
            commands.push(format!(
                "{}{}",
                p.command,
                if th.processes > 1 { " &" } else { "" }
            ));
            started.push(p);
        }
        let mut exits = Vec::new();
        for p in started {
            exits.push(exit_of(&p.wait(env, stop)?));
        }
        let log_path = simulator.log_path.clone();
        drop(simulator);
        let requests = harness::read_log(&log_path)?;
        if !env.keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let w = harness::rate_window(&requests, Duration::from_secs_f64(skip_s), args.seconds)
            .context("the adaptive run made no requests")?;
        let early = harness::rate_window(&requests, Duration::ZERO, skip_s)
            .context("the adaptive run made no requests")?;
        let allowed = sim
            .ceiling_requests(skip_s, skip_s + w.seconds)
            .unwrap_or(f64::NAN);
        let served = (w.requests - w.too_many) as f64;
        let share = 100.0 * w.too_many as f64 / w.requests.max(1) as f64;
        let served_max = harness::max_in_window(
            &requests
                .iter()
                .filter(|r| r.status != 429)
                .copied()
                .collect::<Vec<_>>(),
            1_000_000,
        );
        row(
            &mut t,
            &[
                th.name.to_string(),
                format!("{skip_s:.0}–{:.0} s", skip_s + w.seconds),
                w.requests.to_string(),
                format!("{share:.2} %"),
                format!("{:.2}", w.served_rate()),
                format!("{:.3}", served / allowed),
                served_max.to_string(),
                format!("{} of {}", early.too_many, early.requests),
                load,
                exits.join(", "),
            ],
        );
        command_block(&mut cmds, &label, &commands);
        o.figure(
            format!("429 share after {skip_s:.0} s, %: {}", th.name),
            share,
        );
        o.figure(format!("served ÷ ceiling: {}", th.name), served / allowed);
    }
    let _ = writeln!(
        t,
        "\nJob: {rps}/s, burst {burst}, concurrency 32 (two processes: `--shard K/2`, {}/s each); \
         server: {ceiling}/s, 429 without Retry-After; the 15 → 8 → 15 ceiling changes at a third \
         and two thirds of the measured window.",
        rps / 2.0
    );
    t.push_str(&cmds);
    o.table = t;
    Ok(o)
}

/// No rate limit: loopback throughput at each `--concurrency`, next to `dd`'s write rate.
fn throughput(env: &Env, args: &Args, tag: &str) -> Result<Outcome> {
    let mut cmds = String::new();
    let mut o = Outcome::default();
    let (dd_mb_s, dd_line) = harness::dd_write(&env.work, if args.tiny { 16 } else { 512 })?;
    println!("$ {dd_line}");
    let _ = writeln!(cmds, "\n<!-- disk -->\n    $ {dd_line}\n");
    let mut t = table(
        &titled("Throughput, no rate limit (loopback)", tag),
        &[
            "concurrency",
            "references",
            "wall s",
            "transactions/s",
            "MB/s written",
            "disk dd MB/s",
            "MB/s received",
            "job CPU s / 1,000 tx",
            "job CPU ÷ wall",
            "simulator CPU ÷ wall",
            "peak RSS MiB",
            "load",
            "exit",
        ],
    );
    for &c in &args.concurrency {
        let job = JobSpec::new(100_000.0, 1000, c);
        let mut sim = SimSpec::realistic(args.count);
        sim.seed = args.seed;
        let load = load();
        let label = format!("throughput-c{c}");
        let run = harness::run(env, &tagged(&label, tag), &sim, &job, Stop::Complete)?;
        let r = run.report.clone().unwrap_or_default();
        let tx = r.references.max(1) as f64;
        o.figure(format!("c = {c}: transactions/s"), tx / run.wall_s);
        o.figure(
            format!("c = {c}: MB/s written"),
            run.out_bytes as f64 / 1e6 / run.wall_s,
        );
        o.figure(
            format!("c = {c}: job CPU s / 1,000 tx"),
            run.usage.cpu_s() / tx * 1000.0,
        );
        o.figure(
            format!("c = {c}: peak RSS MiB"),
            run.usage.max_rss_kib as f64 / 1024.0,
        );
        row(
            &mut t,
            &[
                c.to_string(),
                r.references.to_string(),
                format!("{:.1}", run.wall_s),
                format!("{:.1}", tx / run.wall_s),
                format!("{:.1}", run.out_bytes as f64 / 1e6 / run.wall_s),
                format!("{dd_mb_s:.0}"),
                format!("{:.1}", r.bytes_received as f64 / 1e6 / run.wall_s),
                format!("{:.2}", run.usage.cpu_s() / tx * 1000.0),
                format!("{:.2}", run.usage.cpu_s() / run.wall_s),
                format!("{:.2}", run.sim_cpu_s / run.wall_s),
                mib(run.usage.max_rss_kib),
                load,
                exit(&run),
            ],
        );
        commands(&mut cmds, &label, &run);
    }
    t.push_str(&cmds);
    o.table = t;
    Ok(o)
}

/// Peak RSS and time per transaction at each `--counts`, small images, no rate limit.
fn scale(env: &Env, args: &Args, tag: &str) -> Result<Outcome> {
    let mut cmds = String::new();
    let mut o = Outcome::default();
    let mut t = table(
        &titled(
            &format!(
                "Memory and scaling ({} files, no rate limit)",
                match args.sizes {
                    Sizes::Small => "small",
                    Sizes::Tiny => "tiny",
                }
            ),
            tag,
        ),
        &[
            "references",
            "requests",
            "wall s",
            "ms / transaction",
            "vs first",
            "steady ms / tx",
            "vs first",
            "peak RSS MiB",
            "vs first",
            "job CPU s / 1,000 tx",
            "load",
            "exit",
        ],
    );
    let mut first: Option<(f64, u64, f64)> = None;
    for &n in &args.counts {
        let job = JobSpec::new(100_000.0, 1000, args.scale_concurrency);
        let mut sim = sim_spec(args.sizes, n);
        sim.seed = args.seed;
        let load = load();
        let label = format!("scale-{n}");
        let run = harness::run(env, &tagged(&label, tag), &sim, &job, Stop::Complete)?;
        let tx = run.refs.len().max(1) as f64;
        let ms = run.wall_s * 1000.0 / tx;
        let rss = run.usage.max_rss_kib;
        // Steady state: the middle 80 % of the requests, without the start-up and the tail (the
        // last polls of never-finishing references, closing the tables), which do not grow
        // with the number of references. Requests per transaction are the same at every size.
        let mut times: Vec<i64> = run.requests.iter().map(|r| r.t_us).collect();
        times.sort_unstable();
        let steady = if times.len() >= 10 {
            let (a, b) = (times[times.len() / 10], times[times.len() * 9 / 10]);
            (b - a) as f64 / 1000.0 / (0.8 * tx)
        } else {
            f64::NAN
        };
        let (ms0, rss0, steady0) = *first.get_or_insert((ms, rss, steady));
        o.figure(format!("{n}: wall s"), run.wall_s);
        o.figure(format!("{n}: steady ms / tx"), steady);
        o.figure(format!("{n}: peak RSS MiB"), rss as f64 / 1024.0);
        o.figure(
            format!("{n}: job CPU s / 1,000 tx"),
            run.usage.cpu_s() / tx * 1000.0,
        );
        row(
            &mut t,
            &[
                n.to_string(),
                run.requests.len().to_string(),
                format!("{:.1}", run.wall_s),
                format!("{ms:.3}"),
                format!("{:.2}", ms / ms0),
                format!("{steady:.3}"),
                format!("{:.2}", steady / steady0),
                mib(rss),
                format!("{:.2}", rss as f64 / rss0.max(1) as f64),
                format!("{:.2}", run.usage.cpu_s() / tx * 1000.0),
                load,
                exit(&run),
            ],
        );
        commands(&mut cmds, &label, &run);
    }
    t.push_str(&cmds);
    o.table = t;
    Ok(o)
}

/// The simulated population at `sizes`.
fn sim_spec(sizes: Sizes, count: usize) -> SimSpec {
    let small = SimSpec::small(count);
    match sizes {
        Sizes::Small => small,
        Sizes::Tiny => SimSpec {
            image_bytes: small.image_bytes / 10,
            liveness_bytes: small.liveness_bytes / 10,
            page_bytes: small.page_bytes / 10,
            pdf_bytes: small.pdf_bytes / 10,
            ..small
        },
    }
}

/// Bytes as MB (10^6).
fn mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / 1e6)
}

/// One row of a dataset scenario's run table.
fn job_row(t: &mut String, name: &str, input: usize, run: &JobRun) {
    let r = run.report.clone().unwrap_or_default();
    let io = run.io.unwrap_or_default();
    row(
        t,
        &[
            name.to_string(),
            input.to_string(),
            r.exported.to_string(),
            r.already_exported.to_string(),
            r.failed.to_string(),
            r.requests.to_string(),
            format!("{:.2}", run.wall_s),
            format!("{:.2}", run.usage.cpu_s()),
            if run.io.is_some() {
                mb(io.rchar)
            } else {
                "–".into()
            },
            if run.io.is_some() {
                mb(io.read_bytes)
            } else {
                "–".into()
            },
            mib(run.usage.max_rss_kib),
            load(),
            exit_of(run),
        ],
    );
}

const JOB_COLUMNS: [&str; 13] = [
    "run",
    "input refs",
    "exported",
    "already exported",
    "failed",
    "requests",
    "wall s",
    "CPU s",
    "rchar MB",
    "read_bytes MB",
    "peak RSS MiB",
    "load",
    "exit",
];

/// Whether `out` is a dataset (has commit records) rather than the previous layout's snapshot.
fn is_dataset(out: &std::path::Path) -> bool {
    out.join("commits").is_dir()
}

/// The rows `out` holds for `refs`: from the commits of a dataset, or from the top-level tables
/// and `failures.csv` of the previous layout's snapshot directory.
fn check_rows(
    out: &std::path::Path,
    refs: &[(String, jumio_export::Kind)],
) -> Result<DatasetCheck> {
    if is_dataset(out) {
        return DatasetCheck::read(out, refs);
    }
    use jumio_export::Kind;
    use std::collections::HashSet;
    let mut check = DatasetCheck::default();
    let mut seen: HashSet<(String, Kind)> = HashSet::new();
    let mut read = |file: &str, kind: Option<Kind>, exported: bool| -> Result<()> {
        let path = out.join(file);
        if !path.exists() {
            return Ok(());
        }
        let mut r = csv::Reader::from_path(&path)?;
        for rec in r.records() {
            let rec = rec?;
            let reference = rec.get(0).unwrap_or("").to_string();
            let kind = match kind {
                Some(k) => k,
                None => match rec.get(1).and_then(|k| k.parse().ok()) {
                    Some(k) => k,
                    None => continue,
                },
            };
            if exported {
                check.rows += 1;
                if !seen.insert((reference, kind)) {
                    check.duplicates += 1;
                }
            } else {
                check.open_failures += 1;
                seen.insert((reference, kind));
            }
        }
        Ok(())
    };
    read("netverify.csv", Some(Kind::Netverify), true)?;
    read("documents.csv", Some(Kind::Document), true)?;
    read("authentications.csv", Some(Kind::Authentication), true)?;
    read("failures.csv", None, false)?;
    check.exported = check.rows - check.duplicates;
    let wanted: HashSet<(String, Kind)> = refs.iter().cloned().collect();
    check.missing = wanted.difference(&seen).count() as u64;
    check.extra = seen.difference(&wanted).count() as u64;
    Ok(check)
}

/// The check of a dataset as a table row: commits, rows, duplicates, union, verify.
fn check_table(
    title: &str,
    out: &std::path::Path,
    refs: &[(String, jumio_export::Kind)],
    exported_by_reports: u64,
    env: &Env,
    o: &mut Outcome,
    cmds: &mut Vec<String>,
) -> Result<String> {
    let c = check_rows(out, refs)?;
    let (code, last, line) = harness::verify(env, out)?;
    cmds.push(line);
    let mut t = table(
        title,
        &[
            "commits",
            "rows (kind tables)",
            "exported (reports' sum)",
            "distinct references",
            "duplicates",
            "open failures",
            "input refs",
            "missing from union",
            "not in input",
            "verify exit",
            "verify says",
        ],
    );
    row(
        &mut t,
        &[
            if is_dataset(out) {
                c.commits.to_string()
            } else {
                "– (snapshot)".into()
            },
            c.rows.to_string(),
            exported_by_reports.to_string(),
            c.exported.to_string(),
            c.duplicates.to_string(),
            c.open_failures.to_string(),
            refs.len().to_string(),
            c.missing.to_string(),
            c.extra.to_string(),
            code.map_or_else(|| "signal".into(), |c| c.to_string()),
            format!("`{}`", last.replace('|', "\\|")),
        ],
    );
    o.figure(
        "rows ÷ exported (reports)",
        c.rows as f64 / exported_by_reports.max(1) as f64,
    );
    o.figure("duplicate rows", c.duplicates as f64);
    o.figure("input refs missing from the union", c.missing as f64);
    o.figure("verify exit", code.map_or(f64::NAN, f64::from));
    Ok(t)
}

fn command_block(t: &mut String, label: &str, cmds: &[String]) {
    let _ = writeln!(t, "\n<!-- {label} -->");
    for c in cmds {
        let _ = writeln!(t, "    $ {c}");
    }
    t.push('\n');
}

/// Resume cost: a completed export of `--resume-count` references run again with the same input
/// (`--reruns` times), next to a rerun with an empty input and to a program that only reads the
/// commits (the floor: what any resume must read); then one more rerun under `strace` to count
/// what it opened and read under `archives/`.
fn resume(env: &Env, args: &Args, tag: &str) -> Result<Outcome> {
    let n = args.resume_count;
    let dir = harness::fresh_dir(env, &tagged("resume", tag))?;
    let mut spec = sim_spec(Sizes::Small, n);
    spec.seed = args.seed;
    let sim = Simulator::start(env, &dir, &spec)?;
    let job = JobSpec::new(100_000.0, 1000, args.scale_concurrency);
    let out = dir.join("out");
    let empty = dir.join("empty.csv");
    harness::write_refs(&empty, &[])?;
    let mut o = Outcome::default();
    let mut cmds = vec![sim.command.clone()];
    let mut t = table(
        &titled(
            &format!("Resume after a completed export of {n} references"),
            tag,
        ),
        &JOB_COLUMNS,
    );
    let measured = |label: &str, input: &std::path::Path| {
        let mut inv = JobInvocation::new(label, &dir, input, &out);
        inv.io = true;
        inv
    };
    let first = harness::run_job(
        env,
        &sim,
        &job,
        &measured("first", &sim.refs_path),
        Stop::Complete,
    )?;
    job_row(&mut t, "first export", n, &first);
    cmds.push(first.command.clone());
    o.figure("first export: wall s", first.wall_s);
    let me = std::env::current_exe()?;
    for r in 1..=args.reruns {
        let rerun = harness::run_job(
            env,
            &sim,
            &job,
            &measured(&format!("rerun-{r}"), &sim.refs_path),
            Stop::Complete,
        )?;
        job_row(&mut t, &format!("rerun {r}, same input"), n, &rerun);
        let io = rerun.io.unwrap_or_default();
        let report = rerun.report.clone().unwrap_or_default();
        o.figure("rerun: wall s", rerun.wall_s);
        o.figure("rerun: CPU s", rerun.usage.cpu_s());
        o.figure("rerun: rchar MB", io.rchar as f64 / 1e6);
        o.figure("rerun: read_bytes MB", io.read_bytes as f64 / 1e6);
        o.figure("rerun: requests", report.requests as f64);
        o.figure(
            "rerun: peak RSS MiB",
            rerun.usage.max_rss_kib as f64 / 1024.0,
        );
        let none = harness::run_job(
            env,
            &sim,
            &job,
            &measured(&format!("empty-{r}"), &empty),
            Stop::Complete,
        )?;
        job_row(&mut t, &format!("rerun {r}, empty input"), 0, &none);
        o.figure("rerun, empty input: wall s", none.wall_s);
        o.figure(
            "rerun, empty input: rchar MB",
            none.io.unwrap_or_default().rchar as f64 / 1e6,
        );
        if r == 1 {
            cmds.push(rerun.command.clone());
            cmds.push(none.command.clone());
        }
        if is_dataset(&out) {
            let read = harness::run_measured(
                env,
                &measured(&format!("read-commits-{r}"), &empty),
                &me,
                vec![
                    "read-commits".into(),
                    "--dataset".into(),
                    out.display().to_string(),
                ],
            )?;
            let mut read_row = read.clone();
            read_row.report = None;
            job_row(&mut t, &format!("read the commits {r}"), 0, &read_row);
            o.figure("read the commits: wall s", read.wall_s);
            o.figure(
                "read the commits: rchar MB",
                read.io.unwrap_or_default().rchar as f64 / 1e6,
            );
            o.figure("rerun ÷ read the commits, wall", rerun.wall_s / read.wall_s);
            // What any rerun of this input must read: the commits and the list itself.
            let both = harness::run_measured(
                env,
                &measured(&format!("read-commits-input-{r}"), &empty),
                &me,
                vec![
                    "read-commits".into(),
                    "--dataset".into(),
                    out.display().to_string(),
                    "--input".into(),
                    sim.refs_path.display().to_string(),
                ],
            )?;
            let mut both_row = both.clone();
            both_row.report = None;
            job_row(
                &mut t,
                &format!("read the commits and the input {r}"),
                n,
                &both_row,
            );
            o.figure("read the commits and the input: wall s", both.wall_s);
            o.figure(
                "rerun ÷ read the commits and the input, wall",
                rerun.wall_s / both.wall_s,
            );
            if r == 1 {
                cmds.push(read.command.clone());
                cmds.push(both.command.clone());
            }
        }
    }
    let mut inv = JobInvocation::new("traced", &dir, &sim.refs_path, &out);
    inv.strace = true;
    let traced = harness::run_job(env, &sim, &job, &inv, Stop::Complete)?;
    cmds.push(traced.command.clone());
    // The control: `verify` reads every archive, so the same trace must count them all.
    let mut inv = JobInvocation::new("verify-traced", &dir, &empty, &out);
    inv.strace = true;
    let control = harness::run_measured(
        env,
        &inv,
        &env.bin,
        vec!["verify".into(), out.display().to_string()],
    )?;
    cmds.push(control.command.clone());
    let archive_files = std::fs::read_dir(out.join("archives"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".zip"))
                .count()
        })
        .unwrap_or(0);
    let archive_bytes = harness::dir_bytes(&out.join("archives"));
    let mut t2 = table(
        &titled(
            &format!(
                "What a rerun touches under archives/ (strace -ff -y; the dataset holds \
                 {archive_files} archives, {} MB)",
                mb(archive_bytes)
            ),
            tag,
        ),
        &[
            "traced",
            "archive files opened",
            "bytes read from archives",
            "archives/ listing bytes (getdents64)",
            "other bytes read under the output location",
            "exit",
        ],
    );
    for (what, run) in [
        ("rerun, same input", &traced),
        ("control: `verify` (reads every archive)", &control),
    ] {
        let a = run.archives.unwrap_or_default();
        row(
            &mut t2,
            &[
                what.to_string(),
                a.opened.to_string(),
                a.bytes_read.to_string(),
                a.listing_bytes.to_string(),
                a.other_out_bytes.to_string(),
                exit_of(run),
            ],
        );
    }
    let a = traced.archives.unwrap_or_default();
    o.figure("traced rerun: archive files opened", a.opened as f64);
    o.figure(
        "traced rerun: bytes read from archives",
        a.bytes_read as f64,
    );
    o.figure(
        "traced rerun: archives/ listing bytes",
        a.listing_bytes as f64,
    );
    o.figure(
        "traced rerun: other bytes read under the output",
        a.other_out_bytes as f64,
    );
    let c = control.archives.unwrap_or_default();
    o.figure(
        "control, verify traced: archive files opened",
        c.opened as f64,
    );
    drop(sim);
    t.push_str(&t2);
    command_block(&mut t, "resume", &cmds);
    if !env.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    o.table = t;
    Ok(o)
}

fn exit_of(run: &JobRun) -> String {
    run.exit_code
        .map_or_else(|| "signal".into(), |c| c.to_string())
}

/// `--batches` batches of `--batch-size` references, one after the other, into one dataset.
fn batches(env: &Env, args: &Args, tag: &str) -> Result<Outcome> {
    let total = args.batches * args.batch_size;
    let dir = harness::fresh_dir(env, &tagged("batches", tag))?;
    let mut spec = sim_spec(Sizes::Small, total);
    spec.seed = args.seed;
    let sim = Simulator::start(env, &dir, &spec)?;
    let job = JobSpec::new(100_000.0, 1000, args.scale_concurrency);
    let out = dir.join("out");
    let mut o = Outcome::default();
    let mut cmds = vec![sim.command.clone()];
    let mut t = table(
        &titled(
            &format!(
                "{} batches of {} references into one dataset",
                args.batches, args.batch_size
            ),
            tag,
        ),
        &JOB_COLUMNS,
    );
    let mut rss = Vec::new();
    let mut exported = 0;
    for (i, chunk) in sim.refs.chunks(args.batch_size.max(1)).enumerate() {
        let input = dir.join(format!("batch-{}.csv", i + 1));
        harness::write_refs(&input, chunk)?;
        let inv = JobInvocation::new(&format!("batch-{}", i + 1), &dir, &input, &out);
        let run = harness::run_job(env, &sim, &job, &inv, Stop::Complete)?;
        job_row(&mut t, &format!("batch {}", i + 1), chunk.len(), &run);
        if i == 0 {
            cmds.push(run.command.clone());
        }
        exported += run.report.as_ref().map_or(0, |r| r.exported);
        rss.push(run.usage.max_rss_kib as f64 / 1024.0);
        o.figure(format!("batch {}: peak RSS MiB", i + 1), rss[i]);
        o.figure(format!("batch {}: wall s", i + 1), run.wall_s);
    }
    drop(sim);
    let (first, last) = (rss[0], rss[rss.len() - 1]);
    o.figure("last batch ÷ first batch, peak RSS", last / first);
    o.figure(
        "highest peak RSS MiB",
        rss.iter().copied().fold(0.0, f64::max),
    );
    let refs = harness::read_refs(&dir.join("refs.csv"))?;
    let check = check_table(
        &titled("The batches' dataset", tag),
        &out,
        &refs,
        exported,
        env,
        &mut o,
        &mut cmds,
    )?;
    t.push_str(&check);
    let _ = writeln!(
        t,
        "\nbatch i's input is lines `(i-1)·{b}+1 ..= i·{b}` of the simulator's refs.csv",
        b = args.batch_size
    );
    command_block(&mut t, "batches", &cmds);
    if !env.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    o.table = t;
    Ok(o)
}

/// `--shards` copies of the job with `--shard K/N`, started at once into one dataset.
fn shards(env: &Env, args: &Args, tag: &str) -> Result<Outcome> {
    let n = args.shards.max(1);
    let dir = harness::fresh_dir(env, &tagged("shards", tag))?;
    let mut spec = sim_spec(Sizes::Small, args.shard_count);
    spec.seed = args.seed;
    let sim = Simulator::start(env, &dir, &spec)?;
    let job = JobSpec::new(100_000.0, 1000, args.scale_concurrency);
    let out = dir.join("out");
    let mut o = Outcome::default();
    let mut cmds = vec![sim.command.clone()];
    let mut started = Vec::new();
    for k in 0..n {
        let mut inv = JobInvocation::new(&format!("shard-{k}"), &dir, &sim.refs_path, &out);
        inv.extra = vec!["--shard".into(), format!("{k}/{n}")];
        let p = harness::spawn_job(env, &sim, &job, &inv)?;
        cmds.push(format!("{} &", p.command));
        started.push(p);
    }
    let mut t = table(
        &titled(
            &format!(
                "{n} shards of {} references started at once into one dataset",
                args.shard_count
            ),
            tag,
        ),
        &JOB_COLUMNS,
    );
    let mut runs = Vec::new();
    for p in started {
        runs.push(p.wait(env, Stop::Complete)?);
    }
    drop(sim);
    // report.json is the last run's: each shard's own report is in its commit, which names
    // the shard (`"shard": "K/N"`).
    let mut reports = BTreeMap::new();
    if is_dataset(&out) {
        for run in jumio_export::dataset::commit::list(&out)? {
            let c = jumio_export::dataset::commit::Commit::read(
                &jumio_export::dataset::commit::path(&out, &run),
            )?;
            let shard = c.report.get("shard").and_then(|s| s.as_str()).unwrap_or("");
            reports.insert(
                shard.to_string(),
                harness::ReportFigures::from_value(&c.report)?,
            );
        }
    }
    let mut exported = 0;
    for (k, run) in runs.iter().enumerate() {
        let mut shown = run.clone();
        shown.report = reports.get(&format!("{k}/{n}")).cloned();
        let input = shown.report.as_ref().map_or(0, |r| r.references as usize);
        job_row(&mut t, &format!("shard {k}/{n}"), input, &shown);
        o.figure(format!("shard {k}: wall s"), run.wall_s);
        o.figure(
            format!("shard {k}: peak RSS MiB"),
            run.usage.max_rss_kib as f64 / 1024.0,
        );
    }
    for r in reports.values() {
        exported += r.exported;
    }
    let _ = writeln!(
        t,
        "\n(each shard is given the whole list and keeps its part; its figures are from its commit)"
    );
    let refs = harness::read_refs(&dir.join("refs.csv"))?;
    let check = check_table(
        &titled("The shards' dataset", tag),
        &out,
        &refs,
        exported,
        env,
        &mut o,
        &mut cmds,
    )?;
    t.push_str(&check);
    command_block(&mut t, "shards", &cmds);
    if !env.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    o.table = t;
    Ok(o)
}
