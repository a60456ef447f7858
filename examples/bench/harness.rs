//! The benchmark harness's core: starts the simulator and the export job as two separate
//! processes of the release binary, and turns the simulator's JSONL request log, the job's
//! `report.json` and the job's resource usage into figures.
//!
//! Shared by `examples/bench.rs` (the command line and the scenarios' tables) and
//! `tests/bench_smoke.rs` (which runs it on a tiny population with the debug binary). It measures
//! and never asserts: what is good enough is decided by whoever reads the numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jumio_export::Kind;
use jumio_export::simulator::{Polls, scenario};

/// Basic credentials the simulator accepts by default; the job reads them from the environment.
const TOKEN: &str = "demo-token";
const SECRET: &str = "demo-secret";

/// Where and with what the harness runs.
#[derive(Debug, Clone)]
pub struct Env {
    /// The `jumio-export` binary (release for measurements, debug in the smoke test).
    pub bin: PathBuf,
    /// Every run gets a subdirectory here.
    pub work: PathBuf,
    /// Keep each run's directory (outputs, logs) instead of removing it after analysis.
    pub keep: bool,
    /// Use `/usr/bin/time -v` for CPU time and peak RSS; otherwise poll `/proc/<pid>`.
    pub time_v: bool,
    /// Give up on (interrupt) a job that runs longer than this.
    pub max_run: Duration,
    /// Print the command lines as they run.
    pub echo: bool,
    /// Run the simulator on CPU 1 and the job on CPU 0 (`taskset`), so each has one core of its
    /// own and the job's CPU share shows whether it or its source is the bottleneck.
    pub pin: bool,
}

/// `program args` on one CPU when pinning (`taskset -c CPU` execs the program: same PID).
fn on_cpu(env: &Env, cpu: u32, program: &Path, args: Vec<String>) -> (PathBuf, Vec<String>) {
    if !env.pin {
        return (program.to_path_buf(), args);
    }
    let mut a = vec![
        "-c".to_string(),
        cpu.to_string(),
        program.display().to_string(),
    ];
    a.extend(args);
    (PathBuf::from("taskset"), a)
}

impl Env {
    /// An environment with `/usr/bin/time -v` when it is installed and works.
    pub fn new(bin: PathBuf, work: PathBuf) -> Self {
        let time_v = Command::new("/usr/bin/time")
            .args(["-v", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Env {
            bin,
            work,
            keep: false,
            time_v,
            max_run: Duration::from_secs(3600),
            echo: true,
            pin: false,
        }
    }
}

/// The simulator's population and fault knobs for one run.
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// References written to `refs.csv`.
    pub count: usize,
    /// Seed of the data and of the population.
    pub seed: u64,
    /// Bytes per document image (front/back/face).
    pub image_bytes: usize,
    /// Bytes per liveness image.
    pub liveness_bytes: usize,
    /// Bytes per Document Verification page.
    pub page_bytes: usize,
    /// Bytes per original PDF.
    pub pdf_bytes: usize,
    /// Fraction of requests answered 500/503.
    pub error_rate: f64,
    /// Server-side ceiling of requests per second.
    pub ceiling_rps: Option<f64>,
}

impl SimSpec {
    /// Issue 5's realistic sizes: 3 document images of ~300 KB, 7 liveness of ~40 KB,
    /// 300 KB pages, 500 KB PDFs.
    pub fn realistic(count: usize) -> Self {
        SimSpec {
            count,
            seed: 1,
            image_bytes: 300_000,
            liveness_bytes: 40_000,
            page_bytes: 300_000,
            pdf_bytes: 500_000,
            error_rate: 0.0,
            ceiling_rps: None,
        }
    }

    /// Small files, for the scaling runs where the per-transaction overhead is the subject.
    pub fn small(count: usize) -> Self {
        SimSpec {
            image_bytes: 4_000,
            liveness_bytes: 2_000,
            page_bytes: 4_000,
            pdf_bytes: 8_000,
            ..SimSpec::realistic(count)
        }
    }

    fn args(&self, port: u16, log: &Path, refs: &Path) -> Vec<String> {
        let mut a = vec![
            "simulate".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--seed".into(),
            self.seed.to_string(),
            "--count".into(),
            self.count.to_string(),
            "--references-out".into(),
            refs.display().to_string(),
            "--request-log".into(),
            log.display().to_string(),
            "--image-bytes".into(),
            self.image_bytes.to_string(),
            "--liveness-bytes".into(),
            self.liveness_bytes.to_string(),
            "--page-bytes".into(),
            self.page_bytes.to_string(),
            "--pdf-bytes".into(),
            self.pdf_bytes.to_string(),
        ];
        if self.error_rate > 0.0 {
            a.extend(["--error-rate".into(), self.error_rate.to_string()]);
        }
        if let Some(c) = self.ceiling_rps {
            a.extend(["--ceiling-rps".into(), c.to_string()]);
        }
        a
    }
}

/// The job file's knobs for one run.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// `[limits] requests_per_second`.
    pub rate: f64,
    /// `[limits] burst`.
    pub burst: u32,
    /// `[limits] concurrency`.
    pub concurrency: usize,
    /// `[polling] schedule_seconds`: short, because the simulator's pending scans finish
    /// after a few status calls whatever the time.
    pub schedule: Vec<f64>,
    /// `[limits] max_retries`.
    pub max_retries: u32,
}

impl JobSpec {
    /// A job at `rate` requests per second with `concurrency` slots.
    pub fn new(rate: f64, burst: u32, concurrency: usize) -> Self {
        JobSpec {
            rate,
            burst,
            concurrency,
            schedule: vec![0.2, 0.4, 0.6, 0.8, 1.0],
            max_retries: 6,
        }
    }

    /// The job file, against the simulator on `port`.
    pub fn toml(&self, port: u16) -> String {
        let schedule: Vec<String> = self.schedule.iter().map(|s| s.to_string()).collect();
        format!(
            r#"# Written by examples/bench.rs.
[api]
region = "us"
netverify_url = "http://127.0.0.1:{port}/"
retrieval_url = "http://127.0.0.1:{port}/"
user_agent = "jumio-export bench/0.1"

[limits]
requests_per_second = {rate:?}
burst = {burst}
concurrency = {concurrency}
max_retries = {retries}
timeout_seconds = 30

[polling]
schedule_seconds = [{schedule}]

[fetch]
images = true
liveness_images = true
original_documents = true
unmasked_card_images = false

[output]
csv = true
parquet = true
archives = true
"#,
            rate = self.rate,
            burst = self.burst,
            concurrency = self.concurrency,
            retries = self.max_retries,
            schedule = schedule.join(", "),
        )
    }
}

/// When the job is stopped.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Let it finish.
    Complete,
    /// Send SIGINT this long after it started (rate windows need a job that outlasts them).
    InterruptAfter(Duration),
}

/// What a request is for, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// `scans/{ref}`, `documents/{ref}`, `authentications/{ref}`.
    Status,
    /// `…/data`.
    Data,
    /// `scans/{ref}/images`, `documents/{ref}/pages`.
    List,
    /// A document image (front, back, face).
    Image,
    /// A liveness image.
    Liveness,
    /// A Document Verification page.
    Page,
    /// A Document Verification original PDF.
    Original,
    /// Anything else (should not happen).
    Other,
}

impl Category {
    /// Every category, in table order.
    pub const ALL: [Category; 8] = [
        Category::Status,
        Category::Data,
        Category::List,
        Category::Image,
        Category::Liveness,
        Category::Page,
        Category::Original,
        Category::Other,
    ];

    /// The category of a request path of the Retrieval API.
    pub fn of(path: &str) -> Category {
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let ["", "api", "netverify", "v2", family, _reference, rest @ ..] = segs.as_slice() else {
            return Category::Other;
        };
        match (*family, rest) {
            (_, []) => Category::Status,
            (_, ["data"]) => Category::Data,
            ("scans", ["images"]) | ("documents", ["pages"]) => Category::List,
            ("scans" | "authentications", ["images", "liveness", _]) => Category::Liveness,
            ("scans" | "authentications", ["images", _]) => Category::Image,
            ("documents", ["pages", _]) => Category::Page,
            ("documents", ["original"]) => Category::Original,
            _ => Category::Other,
        }
    }

    /// Lower-case name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Category::Status => "status",
            Category::Data => "data",
            Category::List => "list",
            Category::Image => "image",
            Category::Liveness => "liveness",
            Category::Page => "page",
            Category::Original => "original",
            Category::Other => "other",
        }
    }
}

/// One line of the simulator's request log, reduced to what the figures need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Req {
    /// Arrival, microseconds since the Unix epoch.
    pub t_us: i64,
    /// Status answered (0: connection reset).
    pub status: u16,
    /// What it was for.
    pub category: Category,
}

/// The parts of `report.json` the figures use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportFigures {
    /// `outcomes.references`.
    pub references: u64,
    /// `outcomes.exported`.
    pub exported: u64,
    /// `outcomes.failed`.
    pub failed: u64,
    /// `requests.total`.
    pub requests: u64,
    /// `requests.retries`.
    pub retries: u64,
    /// `requests.too_many_requests`.
    pub too_many_requests: u64,
    /// `requests.bytes_received`.
    pub bytes_received: u64,
    /// `bytes_written`.
    pub bytes_written: u64,
    /// `interrupted`.
    pub interrupted: bool,
}

impl ReportFigures {
    /// Reads the figures out of a `report.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let n = |ptr: &str| -> Result<u64> {
            v.pointer(ptr)
                .and_then(serde_json::Value::as_u64)
                .with_context(|| format!("{}: no number at {ptr}", path.display()))
        };
        Ok(ReportFigures {
            references: n("/outcomes/references")?,
            exported: n("/outcomes/exported")?,
            failed: n("/outcomes/failed")?,
            requests: n("/requests/total")?,
            retries: n("/requests/retries")?,
            too_many_requests: n("/requests/too_many_requests")?,
            bytes_received: n("/requests/bytes_received")?,
            bytes_written: n("/bytes_written")?,
            interrupted: v
                .pointer("/interrupted")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// The job process's resource usage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
    /// Peak resident set size in KiB.
    pub max_rss_kib: u64,
    /// Where the figures came from: `time -v` or `/proc` polling.
    pub source: &'static str,
}

impl Usage {
    /// User + system seconds.
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command lines, as a shell would take them.
    pub commands: Vec<String>,
    /// The job's exit code (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// Wall seconds from spawning the job to its exit.
    pub wall_s: f64,
    /// The job's CPU and memory.
    pub usage: Usage,
    /// CPU seconds the simulator used while the job ran (it shares the cores).
    pub sim_cpu_s: f64,
    /// `report.json` (absent when the job wrote none).
    pub report: Option<ReportFigures>,
    /// Every request the simulator logged, in log order.
    pub requests: Vec<Req>,
    /// The population the simulator listed.
    pub refs: Vec<(String, Kind)>,
    /// Seed of the population (for [`minimum_requests`]).
    pub seed: u64,
    /// Bytes of every file in the output directory.
    pub out_bytes: u64,
}

/// A free loopback port (bound and released; the simulator binds it a moment later).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Quotes a command line so it can be pasted into a shell.
pub fn shell_line(env_vars: &[(&str, &str)], program: &Path, args: &[String]) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut line = String::new();
    for (k, v) in env_vars {
        let _ = write!(line, "{k}={} ", quote(v));
    }
    line.push_str(&quote(&program.display().to_string()));
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    line
}

/// CPU seconds (user + system) of a live process, from `/proc/<pid>/stat`; 0 when unreadable.
fn proc_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14/15 overall are indexes 11/12 after the name; Linux's USER_HZ is 100.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak RSS in KiB of a live process, from `/proc/<pid>/status` VmHWM.
fn proc_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The first child of `pid` (the job under `/usr/bin/time`).
fn child_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Parses the output of GNU `time -v`.
pub fn parse_time_v(text: &str) -> Result<Usage> {
    let field = |name: &str| -> Result<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("time -v output has no {name:?}"))
    };
    Ok(Usage {
        user_s: field("User time (seconds):")?.parse()?,
        sys_s: field("System time (seconds):")?.parse()?,
        max_rss_kib: field("Maximum resident set size (kbytes):")?.parse()?,
        source: "time -v",
    })
}

/// Parses an RFC 3339 UTC timestamp as the request log writes it, to microseconds.
fn micros(t: &str) -> Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("request log time {t:?}"))?
        .timestamp_micros())
}

/// Reads the simulator's JSONL request log line by line (it can hold millions of requests).
pub fn read_log(path: &Path) -> Result<Vec<Req>> {
    #[derive(serde::Deserialize)]
    struct Line {
        time: String,
        path: String,
        status: u16,
    }
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line =
            serde_json::from_str(&line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        out.push(Req {
            t_us: micros(&l.time)?,
            status: l.status,
            category: Category::of(&l.path),
        });
    }
    Ok(out)
}

fn read_refs(path: &Path) -> Result<Vec<(String, Kind)>> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("{}", path.display()))?;
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec?;
        let kind: Kind = rec
            .get(1)
            .context("refs.csv: no kind column")?
            .parse()
            .map_err(|e| anyhow::anyhow!("refs.csv: {e:?}"))?;
        out.push((rec.get(0).context("no reference")?.to_string(), kind));
    }
    Ok(out)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Kills the simulator when the run ends, however it ends.
struct SimProcess(Child);

impl Drop for SimProcess {
    fn drop(&mut self) {
        signal(self.0.id(), "-INT");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one measurement: simulator and job as separate processes, in `env.work/name`.
pub fn run(env: &Env, name: &str, sim: &SimSpec, job: &JobSpec, stop: Stop) -> Result<Run> {
    let dir = env.work.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join("requests.jsonl");
    let refs_path = dir.join("refs.csv");
    let out = dir.join("out");
    let job_path = dir.join("job.toml");
    let port = free_port()?;
    let mut commands = Vec::new();

    // The simulator.
    let (sim_program, sim_args) = on_cpu(env, 1, &env.bin, sim.args(port, &log_path, &refs_path));
    commands.push(format!("{} &", shell_line(&[], &sim_program, &sim_args)));
    if env.echo {
        println!("$ {}", commands.last().expect("just pushed"));
    }
    let sim_err = std::fs::File::create(dir.join("simulator.stderr"))?;
    let sim_child = Command::new(&sim_program)
        .args(&sim_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(sim_err)
        .spawn()
        .with_context(|| format!("starting {}", env.bin.display()))?;
    let mut sim_proc = SimProcess(sim_child);
    let ready_by = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = sim_proc.0.try_wait()? {
            bail!(
                "the simulator exited ({status}) before listening: see {}",
                dir.join("simulator.stderr").display()
            );
        }
        if Instant::now() > ready_by {
            bail!("the simulator did not listen on 127.0.0.1:{port} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let refs = read_refs(&refs_path)?;

    // The job.
    std::fs::write(&job_path, job.toml(port))?;
    let mut job_args = vec![
        "run".to_string(),
        job_path.display().to_string(),
        "--input".into(),
        refs_path.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
    ];
    let time_path = dir.join("time.txt");
    let program = if env.time_v {
        let mut a = vec![
            "-v".to_string(),
            "-o".into(),
            time_path.display().to_string(),
            env.bin.display().to_string(),
        ];
        a.append(&mut job_args);
        job_args = a;
        PathBuf::from("/usr/bin/time")
    } else {
        env.bin.clone()
    };
    let (program, job_args) = on_cpu(env, 0, &program, job_args);
    let vars = [("JUMIO_API_TOKEN", TOKEN), ("JUMIO_API_SECRET", SECRET)];
    commands.push(shell_line(&vars, &program, &job_args));
    if env.echo {
        println!("$ {}", commands.last().expect("just pushed"));
    }
    let sim_cpu_before = proc_cpu_s(sim_proc.0.id());
    let job_err = std::fs::File::create(dir.join("job.stderr"))?;
    let started = Instant::now();
    let mut child = Command::new(&program)
        .args(&job_args)
        .envs(vars)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(job_err)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let interrupt_at = match stop {
        Stop::Complete => env.max_run,
        Stop::InterruptAfter(d) => d.min(env.max_run),
    };
    let mut interrupted_at: Option<Instant> = None;
    let mut polled = Usage {
        source: "/proc polling",
        ..Usage::default()
    };
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        // The job itself: the child of `time`, or the child we spawned.
        let job_pid = if env.time_v {
            child_of(child.id())
        } else {
            Some(child.id())
        };
        if !env.time_v
            && let Some(pid) = job_pid
        {
            // Without `time -v`: VmHWM only grows, so the last sample is the peak to within
            // one polling interval; CPU is likewise the last sample.
            if let Some(hwm) = proc_hwm_kib(pid) {
                polled.max_rss_kib = polled.max_rss_kib.max(hwm);
            }
            let cpu = proc_cpu_s(pid);
            if cpu > 0.0 {
                polled.user_s = cpu;
            }
        }
        let elapsed = started.elapsed();
        match interrupted_at {
            None if elapsed >= interrupt_at => {
                if let Some(pid) = job_pid {
                    signal(pid, "-INT");
                }
                interrupted_at = Some(Instant::now());
            }
            // The job drains in-flight work on SIGINT; a minute is far more than enough.
            Some(at) if at.elapsed() > Duration::from_secs(60) => {
                let _ = child.kill();
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall_s = started.elapsed().as_secs_f64();
    let sim_cpu_s = proc_cpu_s(sim_proc.0.id()) - sim_cpu_before;
    drop(sim_proc);

    let usage = if env.time_v {
        let text = std::fs::read_to_string(&time_path)
            .with_context(|| format!("reading {}", time_path.display()))?;
        parse_time_v(&text)?
    } else {
        polled
    };
    let report_path = out.join("report.json");
    let report = if report_path.exists() {
        Some(ReportFigures::read(&report_path)?)
    } else {
        None
    };
    let requests = read_log(&log_path)?;
    let out_bytes = dir_bytes(&out);
    // `time` exits with the job's own code (128 + n when a signal killed it).
    let exit_code = status.code();
    if !env.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Run {
        commands,
        exit_code,
        wall_s,
        usage,
        sim_cpu_s,
        report,
        requests,
        refs,
        seed: sim.seed,
        out_bytes,
    })
}

/// The fewest requests per category the guide's flow needs for `refs` (population of `seed`),
/// with every `[fetch]` switch on but unmasked pages, and `polls_allowed` = 1 + the number of
/// polling offsets: a 404 reference costs its one status call; a pending one the status calls
/// until it is final (at most `polls_allowed`); a final one its data, its list and each listed
/// file once.
pub fn minimum_requests(
    seed: u64,
    refs: &[(String, Kind)],
    polls_allowed: u32,
) -> BTreeMap<Category, u64> {
    let mut m: BTreeMap<Category, u64> = Category::ALL.iter().map(|c| (*c, 0)).collect();
    let mut add = |c: Category, n: u64| *m.get_mut(&c).expect("every category") += n;
    for (reference, kind) in refs {
        let Some(sc) = scenario(seed, reference) else {
            // Unknown to the simulator: 404 on the status call.
            add(Category::Status, 1);
            continue;
        };
        if sc.retention_404 || sc.kind != *kind {
            add(Category::Status, 1);
            continue;
        }
        let (polls, final_state) = match sc.polls {
            Polls::Ready => (1, true),
            Polls::After(n) if n < polls_allowed => (n + 1, true),
            Polls::After(_) | Polls::Never => (polls_allowed, false),
        };
        add(Category::Status, u64::from(polls));
        if !final_state {
            continue;
        }
        let files = sc.classifiers.len() as u64;
        let liveness = sc.liveness.len() as u64;
        match kind {
            Kind::Netverify => {
                add(Category::Data, 1);
                add(Category::List, 1);
                // A foreign href is refused before any file is fetched.
                if !sc.foreign_hrefs {
                    add(Category::Image, files);
                    add(Category::Liveness, liveness);
                }
            }
            Kind::Document => {
                add(Category::Data, 1);
                add(Category::List, 1);
                if !sc.foreign_hrefs {
                    add(Category::Page, files);
                    add(Category::Original, u64::from(sc.has_original));
                }
            }
            Kind::Authentication => {
                if !sc.foreign_hrefs {
                    add(Category::Image, files);
                    add(Category::Liveness, liveness);
                }
            }
        }
    }
    m
}

/// Requests per category in a log.
pub fn requests_by_category(log: &[Req]) -> BTreeMap<Category, u64> {
    let mut m: BTreeMap<Category, u64> = Category::ALL.iter().map(|c| (*c, 0)).collect();
    for r in log {
        *m.get_mut(&r.category).expect("every category") += 1;
    }
    m
}

/// The most requests whose arrival falls in any half-open window `[t, t + window_us)`.
pub fn max_in_window(log: &[Req], window_us: i64) -> usize {
    let mut t: Vec<i64> = log.iter().map(|r| r.t_us).collect();
    t.sort_unstable();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..t.len() {
        while t[hi] - t[lo] >= window_us {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Requests arriving in `[from_us, to_us)` that satisfy `keep`.
pub fn count_between(log: &[Req], from_us: i64, to_us: i64, keep: impl Fn(&Req) -> bool) -> usize {
    log.iter()
        .filter(|r| r.t_us >= from_us && r.t_us < to_us && keep(r))
        .count()
}

/// Request efficiency of one completed run.
#[derive(Debug, Clone)]
pub struct Efficiency {
    /// Requests the simulator saw.
    pub requests: u64,
    /// The fewest the flow needs.
    pub minimum: u64,
    /// `requests / minimum`.
    pub ratio: f64,
    /// `(category, requests, minimum)`, for telling where any excess went.
    pub by_category: Vec<(Category, u64, u64)>,
}

/// Compares a run's request log with [`minimum_requests`] for its population.
pub fn efficiency(run: &Run, job: &JobSpec) -> Efficiency {
    let min = minimum_requests(run.seed, &run.refs, 1 + job.schedule.len() as u32);
    let got = requests_by_category(&run.requests);
    let requests: u64 = got.values().sum();
    let minimum: u64 = min.values().sum();
    Efficiency {
        requests,
        minimum,
        ratio: requests as f64 / minimum.max(1) as f64,
        by_category: Category::ALL
            .iter()
            .map(|c| (*c, got[c], min[c]))
            .filter(|(_, g, m)| *g > 0 || *m > 0)
            .collect(),
    }
}

/// Rate figures over a window of a run's request log.
#[derive(Debug, Clone)]
pub struct RateWindow {
    /// Window length in seconds (shorter than asked when the log ends earlier).
    pub seconds: f64,
    /// Requests in the window.
    pub requests: usize,
    /// Of which answered 429.
    pub too_many: usize,
    /// Most requests in any one-second window of the whole log.
    pub max_per_second: usize,
}

impl RateWindow {
    /// Requests per second in the window.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// Requests not answered 429, per second.
    pub fn served_rate(&self) -> f64 {
        (self.requests - self.too_many) as f64 / self.seconds.max(1e-9)
    }
}

/// The window `[first request + skip, first request + skip + seconds)`, cut at the last request.
pub fn rate_window(log: &[Req], skip: Duration, seconds: f64) -> Option<RateWindow> {
    let first = log.iter().map(|r| r.t_us).min()?;
    let last = log.iter().map(|r| r.t_us).max()?;
    let from = first + skip.as_micros() as i64;
    let to = (from + (seconds * 1e6) as i64).min(last + 1);
    if to <= from {
        return None;
    }
    Some(RateWindow {
        seconds: (to - from) as f64 / 1e6,
        requests: count_between(log, from, to, |_| true),
        too_many: count_between(log, from, to, |r| r.status == 429),
        max_per_second: max_in_window(log, 1_000_000),
    })
}

/// `dd if=/dev/zero of=FILE bs=1M count=MIB conv=fsync`: the disk's sequential write rate in
/// MB/s (10^6 bytes), and the command line.
pub fn dd_write(dir: &Path, mib: u32) -> Result<(f64, String)> {
    let file = dir.join("dd.bin");
    let args = vec![
        "if=/dev/zero".to_string(),
        format!("of={}", file.display()),
        "bs=1M".into(),
        format!("count={mib}"),
        "conv=fsync".into(),
    ];
    let line = shell_line(&[], Path::new("dd"), &args);
    let started = Instant::now();
    let out = Command::new("dd")
        .args(&args)
        .output()
        .context("running dd")?;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        bail!("dd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((f64::from(mib) * 1_048_576.0 / secs / 1e6, line))
}
