//! Benchmark harness (issue 5): rate fidelity, request efficiency, adaptive 429 behaviour,
//! throughput and memory scaling of `jumio-export run`, measured from outside.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench -- all
//! cargo run --release --example bench -- rate --seconds 20
//! cargo run --release --example bench -- scale --counts 1000,10000,30000
//! cargo run --release --example bench -- all --tiny          # seconds, for checking the harness
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

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use harness::{Env, JobSpec, Run, SimSpec, Stop};

/// Which measurement to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Achieved req/s ÷ configured (50/s) and the busiest one-second window.
    Rate,
    /// Requests made ÷ the fewest the guide's flow needs, with 0 % and 5 % 5xx.
    Efficiency,
    /// Configured 30/s against a simulator ceiling of 15/s.
    Adaptive,
    /// No rate limit: transactions/s, MB/s, CPU per 1,000 transactions at several concurrencies.
    Throughput,
    /// Peak RSS and time per transaction from 1,000 to 100,000 references.
    Scale,
    /// All of the above, in this order.
    All,
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
    /// Concurrency of the scaling runs.
    #[arg(long, default_value_t = 32)]
    scale_concurrency: usize,
    /// Seed of the simulated population.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A few seconds per scenario on ~20 references: checks the harness, measures nothing.
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
    }
    match main_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

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
    let mut env = Env::new(bin, work);
    env.keep = args.keep;
    env.pin = args.pin;
    let mut md = machine_header(&env);
    println!("{md}");
    let all = args.scenario == Scenario::All;
    let scenarios = [
        (Scenario::Rate, rate as fn(&Env, &Args) -> Result<String>),
        (Scenario::Efficiency, efficiency),
        (Scenario::Adaptive, adaptive),
        (Scenario::Throughput, throughput),
        (Scenario::Scale, scale),
    ];
    for (s, f) in scenarios {
        if all || args.scenario == s {
            let table = f(&env, args)?;
            md.push_str(&table);
            md.push('\n');
        }
    }
    if all {
        println!("\n# All results\n\n{md}");
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
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

fn machine_header(env: &Env) -> String {
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
fn rate(env: &Env, args: &Args) -> Result<String> {
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
        "Rate fidelity",
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
    let run = harness::run(env, "rate", &sim, &job, stop)?;
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
    Ok(t)
}

/// Request efficiency without faults and with 5 % 5xx answers.
fn efficiency(env: &Env, args: &Args) -> Result<String> {
    let job = JobSpec::new(100_000.0, 1000, 32);
    let mut cmds = String::new();
    let mut t = table(
        "Request efficiency",
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
        let run = harness::run(env, &label, &sim, &job, Stop::Complete)?;
        let e = harness::efficiency(&run, &job);
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
    Ok(t)
}

/// Adaptive 429: configured 30/s against a ceiling of 15/s, judged after the first 10 s.
fn adaptive(env: &Env, args: &Args) -> Result<String> {
    let (rps, burst, ceiling) = (30.0, 10, 15.0);
    let skip_s = if args.tiny { 1.0 } else { 10.0 };
    let job = JobSpec::new(rps, burst, 32);
    let count = ((skip_s + args.seconds + 3.0) * ceiling * 1.5 / 10.0).ceil() as usize;
    let mut sim = SimSpec::realistic(count);
    sim.seed = args.seed;
    sim.ceiling_rps = Some(ceiling);
    let stop = Stop::InterruptAfter(Duration::from_secs_f64(skip_s + args.seconds + 1.0));
    let mut cmds = String::new();
    let mut t = table(
        "Adaptive 429",
        &[
            "configured / ceiling",
            "window",
            "requests",
            "429 share",
            "served req/s",
            "served ÷ ceiling",
            "429s in first window",
            "load",
            "exit",
        ],
    );
    let load = load();
    let run = harness::run(env, "adaptive", &sim, &job, stop)?;
    let w = harness::rate_window(&run.requests, Duration::from_secs_f64(skip_s), args.seconds)
        .context("the adaptive run made no requests")?;
    let early = harness::rate_window(&run.requests, Duration::ZERO, skip_s)
        .context("the adaptive run made no requests")?;
    row(
        &mut t,
        &[
            format!("{rps}/s burst {burst} / {ceiling}/s"),
            format!("{skip_s:.0}–{:.0} s", skip_s + w.seconds),
            w.requests.to_string(),
            format!(
                "{:.2} %",
                100.0 * w.too_many as f64 / w.requests.max(1) as f64
            ),
            format!("{:.2}", w.served_rate()),
            format!("{:.3}", w.served_rate() / ceiling),
            format!("{} of {}", early.too_many, early.requests),
            load,
            exit(&run),
        ],
    );
    commands(&mut cmds, "adaptive", &run);
    t.push_str(&cmds);
    Ok(t)
}

/// No rate limit: loopback throughput at each `--concurrency`, next to `dd`'s write rate.
fn throughput(env: &Env, args: &Args) -> Result<String> {
    let mut cmds = String::new();
    let (dd_mb_s, dd_line) = harness::dd_write(&env.work, if args.tiny { 16 } else { 512 })?;
    println!("$ {dd_line}");
    let _ = writeln!(cmds, "\n<!-- disk -->\n    $ {dd_line}\n");
    let mut t = table(
        "Throughput, no rate limit (loopback)",
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
        let run = harness::run(env, &label, &sim, &job, Stop::Complete)?;
        let r = run.report.clone().unwrap_or_default();
        let tx = r.references.max(1) as f64;
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
    Ok(t)
}

/// Peak RSS and time per transaction at each `--counts`, small images, no rate limit.
fn scale(env: &Env, args: &Args) -> Result<String> {
    let mut cmds = String::new();
    let mut t = table(
        "Memory and scaling (small images, no rate limit)",
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
        let mut sim = SimSpec::small(n);
        sim.seed = args.seed;
        let load = load();
        let label = format!("scale-{n}");
        let run = harness::run(env, &label, &sim, &job, Stop::Complete)?;
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
    Ok(t)
}
