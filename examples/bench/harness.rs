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
    /// The binary whose `simulate` serves the runs (default: `bin`). With `--vs OLD` both
    /// binaries' jobs face the same simulator, including knobs the old one lacks.
    pub sim_bin: Option<PathBuf>,
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
            sim_bin: None,
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
    /// `simulate --ceiling-window`: `bucket`, `sliding` or `sliding-refused`.
    pub ceiling_window: &'static str,
    /// `simulate --ceiling-change SECS=RPS`, in order.
    pub ceiling_changes: Vec<(f64, f64)>,
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
            ceiling_window: "bucket",
            ceiling_changes: Vec::new(),
        }
    }

    /// The ceiling at `secs` after the first request: the last change passed, else the ceiling.
    pub fn ceiling_at(&self, secs: f64) -> Option<f64> {
        let base = self.ceiling_rps?;
        Some(
            self.ceiling_changes
                .iter()
                .filter(|(at, _)| *at <= secs)
                .map(|(_, rps)| *rps)
                .next_back()
                .unwrap_or(base),
        )
    }

    /// Requests the ceiling allows in `[from, to)` seconds after the first request (integrated
    /// over its changes, in 1 ms steps).
    pub fn ceiling_requests(&self, from: f64, to: f64) -> Option<f64> {
        self.ceiling_rps?;
        let steps = ((to - from) * 1000.0).round().max(0.0) as u64;
        Some(
            (0..steps)
                .map(|i| {
                    self.ceiling_at(from + (i as f64 + 0.5) / 1000.0)
                        .unwrap_or(0.0)
                        / 1000.0
                })
                .sum(),
        )
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
            if self.ceiling_window != "bucket" {
                a.extend(["--ceiling-window".into(), self.ceiling_window.to_string()]);
            }
            for (at, rps) in &self.ceiling_changes {
                a.extend(["--ceiling-change".into(), format!("{at}={rps}")]);
            }
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
    /// `outcomes.already_exported`: exported by an earlier run, neither fetched nor read.
    pub already_exported: u64,
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
        Self::from_value(&v).with_context(|| format!("{}", path.display()))
    }

    /// The figures of a report object (`report.json`, or a commit record's `report`).
    pub fn from_value(v: &serde_json::Value) -> Result<Self> {
        let n = |ptr: &str| -> Result<u64> {
            v.pointer(ptr)
                .and_then(serde_json::Value::as_u64)
                .with_context(|| format!("no number at {ptr}"))
        };
        Ok(ReportFigures {
            references: n("/outcomes/references")?,
            exported: n("/outcomes/exported")?,
            failed: n("/outcomes/failed")?,
            already_exported: n("/outcomes/already_exported").unwrap_or(0),
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

/// The first child of `pid`.
fn child_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The last of the chain of first children from `pid` (the job under `sh`, `strace`, `time`).
fn descendant(pid: u32) -> u32 {
    let mut pid = pid;
    while let Some(child) = child_of(pid) {
        pid = child;
    }
    pid
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

/// Reads a `reference,kind` CSV (the simulator's `--references-out`).
pub fn read_refs(path: &Path) -> Result<Vec<(String, Kind)>> {
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

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
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

/// A simulator serving one population on a free loopback port until dropped. Several jobs can
/// run against it, one after the other or at once (resume, batches, shards).
pub struct Simulator {
    proc: SimProcess,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The population it lists, as written to `refs.csv`.
    pub refs: Vec<(String, Kind)>,
    /// `refs.csv`: `reference,kind`.
    pub refs_path: PathBuf,
    /// Its JSONL request log.
    pub log_path: PathBuf,
    /// Its command line.
    pub command: String,
}

impl Simulator {
    /// Starts `jumio-export simulate` with `spec`, its files in `dir`, and waits until it listens.
    pub fn start(env: &Env, dir: &Path, spec: &SimSpec) -> Result<Simulator> {
        let log_path = dir.join("requests.jsonl");
        let refs_path = dir.join("refs.csv");
        let port = free_port()?;
        let bin = env.sim_bin.as_ref().unwrap_or(&env.bin);
        let (program, args) = on_cpu(env, 1, bin, spec.args(port, &log_path, &refs_path));
        let command = format!("{} &", shell_line(&[], &program, &args));
        if env.echo {
            println!("$ {command}");
        }
        let err_path = dir.join("simulator.stderr");
        let child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut proc = SimProcess(child);
        let ready_by = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = proc.0.try_wait()? {
                bail!(
                    "the simulator exited ({status}) before listening: see {}",
                    err_path.display()
                );
            }
            if Instant::now() > ready_by {
                bail!("the simulator did not listen on 127.0.0.1:{port} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let refs = read_refs(&refs_path)?;
        Ok(Simulator {
            proc,
            port,
            refs,
            refs_path,
            log_path,
            command,
        })
    }

    /// CPU seconds the simulator has used so far.
    pub fn cpu_s(&self) -> f64 {
        proc_cpu_s(self.proc.0.id())
    }
}

/// What one job run reads and writes, from `/proc/<pid>/io` of a shell that ran it and reaped
/// it (a reaped child's counts are added to its parent's): `rchar` counts every byte passed to
/// `read`/`pread` (page cache included), `read_bytes` what had to come from the device.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IoCounts {
    /// Bytes read by `read`-like calls.
    pub rchar: u64,
    /// Bytes written by `write`-like calls.
    pub wchar: u64,
    /// `read`-like calls.
    pub syscr: u64,
    /// Bytes fetched from the storage device.
    pub read_bytes: u64,
}

impl IoCounts {
    /// Parses `/proc/<pid>/io`.
    pub fn parse(text: &str) -> Result<Self> {
        let field = |name: &str| -> Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .with_context(|| format!("/proc/PID/io has no {name}"))?
                .trim()
                .parse()
                .with_context(|| format!("/proc/PID/io: {name}"))
        };
        Ok(IoCounts {
            rchar: field("rchar")?,
            wchar: field("wchar")?,
            syscr: field("syscr")?,
            read_bytes: field("read_bytes")?,
        })
    }
}

/// What a job did under `archives/`, from `strace -ff -y` of every thread.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArchiveAccess {
    /// Files under `archives/` opened (successfully).
    pub opened: u64,
    /// Bytes read from files under `archives/`.
    pub bytes_read: u64,
    /// Bytes of directory entries read from `archives/` itself (listing it).
    pub listing_bytes: u64,
    /// Bytes read from anything else that is a file of the output location (commits, parts).
    pub other_out_bytes: u64,
}

impl ArchiveAccess {
    /// Sums the trace files `prefix.*` of `strace -ff -y -e trace=openat,read,pread64,getdents64
    /// -o prefix`, for the output location `out`.
    pub fn from_trace(prefix: &Path, out: &Path) -> Result<Self> {
        let dir = prefix.parent().context("trace prefix has no directory")?;
        let stem = prefix
            .file_name()
            .and_then(|s| s.to_str())
            .context("trace prefix")?
            .to_string();
        let archives = format!("{}/archives", out.display());
        let out_s = format!("{}/", out.display());
        let mut a = ArchiveAccess::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if !name
                .to_str()
                .is_some_and(|n| n.starts_with(&format!("{stem}.")))
            {
                continue;
            }
            let text = std::fs::read_to_string(entry.path())?;
            for line in text.lines() {
                a.add_line(line, &archives, &out_s);
            }
        }
        Ok(a)
    }

    fn add_line(&mut self, line: &str, archives: &str, out: &str) {
        let Some((call, ret)) = line.rsplit_once(") = ") else {
            return;
        };
        let n: i64 = ret
            .split(|c: char| !(c.is_ascii_digit() || c == '-'))
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        if n < 0 {
            return;
        }
        // The path of the first fd argument (`read(7</x/archives/r.zip>, …`), or of the returned
        // fd for `openat` (`= 7</x/archives/r.zip>`).
        let fd_path = |s: &str| -> Option<String> {
            let start = s.find('<')? + 1;
            let end = start + s[start..].find('>')?;
            Some(s[start..end].to_string())
        };
        let under = |p: &str, dir: &str| p.starts_with(&format!("{dir}/"));
        if call.starts_with("openat(") {
            if let Some(p) = fd_path(ret)
                && under(&p, archives)
            {
                self.opened += 1;
            }
        } else if call.starts_with("read(") || call.starts_with("pread64(") {
            let Some(p) = fd_path(call) else { return };
            if under(&p, archives) {
                self.bytes_read += n as u64;
            } else if p.starts_with(out) {
                self.other_out_bytes += n as u64;
            }
        } else if call.starts_with("getdents64(")
            && let Some(p) = fd_path(call)
            && (p == archives || under(&p, archives))
        {
            self.listing_bytes += n as u64;
        }
    }
}

/// How one job is run: its input, output location and any extra arguments.
#[derive(Debug, Clone)]
pub struct JobInvocation {
    /// Label of the run: its files are `dir/{label}.*` (see [`JobInvocation::file`]).
    pub label: String,
    /// Where its job file, `time -v` output and logs go.
    pub dir: PathBuf,
    /// `--input`.
    pub input: PathBuf,
    /// `--out`.
    pub out: PathBuf,
    /// More arguments of `run` (e.g. `--shard 0/4`).
    pub extra: Vec<String>,
    /// Record `/proc/<pid>/io` of the job ([`IoCounts`]).
    pub io: bool,
    /// Trace the job's file access with `strace` ([`ArchiveAccess`]); slows it down, so its
    /// times are not figures.
    pub strace: bool,
}

impl JobInvocation {
    /// A run of `input` into `out`, its files in `dir`.
    pub fn new(label: &str, dir: &Path, input: &Path, out: &Path) -> Self {
        JobInvocation {
            label: label.to_string(),
            dir: dir.to_path_buf(),
            input: input.to_path_buf(),
            out: out.to_path_buf(),
            extra: Vec::new(),
            io: false,
            strace: false,
        }
    }

    /// `dir/{label}.{suffix}`; with an empty label (one job per directory) `job.toml`,
    /// `time.txt`, `job.stderr` … as the issue 5 runs always named them.
    fn file(&self, suffix: &str) -> PathBuf {
        match (self.label.as_str(), suffix) {
            ("", "stderr") => self.dir.join("job.stderr"),
            ("", _) => self.dir.join(suffix),
            (label, _) => self.dir.join(format!("{label}.{suffix}")),
        }
    }
}

/// A started job process.
pub struct JobProcess {
    child: Child,
    started: Instant,
    inv: JobInvocation,
    /// The command line, as a shell would take it.
    pub command: String,
}

/// What one job run produced.
#[derive(Debug, Clone)]
pub struct JobRun {
    /// The command line.
    pub command: String,
    /// The job's exit code (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// Wall seconds from spawning the job to its exit.
    pub wall_s: f64,
    /// The job's CPU and memory.
    pub usage: Usage,
    /// `report.json` after the run (absent when the job wrote none; for runs at the same time,
    /// read the commits instead).
    pub report: Option<ReportFigures>,
    /// Its I/O counts, when asked for.
    pub io: Option<IoCounts>,
    /// What it did under `archives/`, when traced.
    pub archives: Option<ArchiveAccess>,
}

/// Starts `jumio-export run` against `sim` as `inv` says, with the job file of `job`.
pub fn spawn_job(
    env: &Env,
    sim: &Simulator,
    job: &JobSpec,
    inv: &JobInvocation,
) -> Result<JobProcess> {
    let job_path = inv.file("job.toml");
    std::fs::write(&job_path, job.toml(sim.port))?;
    let mut args = vec![
        "run".to_string(),
        job_path.display().to_string(),
        "--input".into(),
        inv.input.display().to_string(),
        "--out".into(),
        inv.out.display().to_string(),
        "--quiet".into(),
    ];
    args.extend(inv.extra.iter().cloned());
    spawn_measured(env, inv, &env.bin, args)
}

/// Runs any `program args` measured like a job (`time -v`, `/proc/PID/io`, `strace` as `inv`
/// asks), to its end; `inv.out` is where a `report.json` would be.
pub fn run_measured(
    env: &Env,
    inv: &JobInvocation,
    program: &Path,
    args: Vec<String>,
) -> Result<JobRun> {
    spawn_measured(env, inv, program, args)?.wait(env, Stop::Complete)
}

/// Starts `program args` under the wrappers `inv` asks for.
fn spawn_measured(
    env: &Env,
    inv: &JobInvocation,
    program: &Path,
    mut args: Vec<String>,
) -> Result<JobProcess> {
    let mut program = program.to_path_buf();
    if env.time_v {
        let mut a = vec![
            "-v".to_string(),
            "-o".into(),
            inv.file("time.txt").display().to_string(),
            program.display().to_string(),
        ];
        a.append(&mut args);
        args = a;
        program = PathBuf::from("/usr/bin/time");
    }
    if inv.strace {
        let mut a = vec![
            "-ff".to_string(),
            "-y".into(),
            "-qq".into(),
            "-s".into(),
            "0".into(),
            "-e".into(),
            "trace=openat,read,pread64,getdents64".into(),
            "-o".into(),
            inv.file("strace").display().to_string(),
            program.display().to_string(),
        ];
        a.append(&mut args);
        args = a;
        program = PathBuf::from("strace");
    }
    let (mut program, mut args) = on_cpu(env, 0, &program, args);
    if inv.io {
        // The shell reaps the job and then prints its own /proc/PID/io, which now includes the
        // job's (the kernel adds a reaped child's counts to its parent's).
        let mut a = vec![
            "-c".to_string(),
            r#""$0" "$@"; rc=$?; cat /proc/$$/io > "$IO_OUT"; exit $rc"#.into(),
            program.display().to_string(),
        ];
        a.append(&mut args);
        args = a;
        program = PathBuf::from("sh");
    }
    let io_out = inv.file("io.txt").display().to_string();
    let mut vars = vec![("JUMIO_API_TOKEN", TOKEN), ("JUMIO_API_SECRET", SECRET)];
    if inv.io {
        vars.push(("IO_OUT", &io_out));
    }
    let command = shell_line(&vars, &program, &args);
    if env.echo {
        println!("$ {command}");
    }
    let child = Command::new(&program)
        .args(&args)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(inv.file("stderr"))?)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(JobProcess {
        child,
        started: Instant::now(),
        inv: inv.clone(),
        command,
    })
}

impl JobProcess {
    /// Waits for the job (interrupting it when `stop` says so) and collects its figures.
    pub fn wait(mut self, env: &Env, stop: Stop) -> Result<JobRun> {
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
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            // The job itself: the last of the chain sh → strace → time → job.
            let job_pid = descendant(self.child.id());
            if !env.time_v {
                // Without `time -v`: VmHWM only grows, so the last sample is the peak to within
                // one polling interval; CPU is likewise the last sample.
                if let Some(hwm) = proc_hwm_kib(job_pid) {
                    polled.max_rss_kib = polled.max_rss_kib.max(hwm);
                }
                let cpu = proc_cpu_s(job_pid);
                if cpu > 0.0 {
                    polled.user_s = cpu;
                }
            }
            match interrupted_at {
                None if self.started.elapsed() >= interrupt_at => {
                    signal(job_pid, "-INT");
                    interrupted_at = Some(Instant::now());
                }
                // The job drains in-flight work on SIGINT; a minute is far more than enough.
                Some(at) if at.elapsed() > Duration::from_secs(60) => {
                    let _ = self.child.kill();
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let wall_s = self.started.elapsed().as_secs_f64();
        let inv = &self.inv;
        let usage = if env.time_v {
            let path = inv.file("time.txt");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_time_v(&text)?
        } else {
            polled
        };
        let report_path = inv.out.join("report.json");
        let report = if report_path.exists() {
            Some(ReportFigures::read(&report_path)?)
        } else {
            None
        };
        let io = if inv.io {
            let path = inv.file("io.txt");
            Some(IoCounts::parse(
                &std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )?)
        } else {
            None
        };
        let archives = if inv.strace {
            Some(ArchiveAccess::from_trace(&inv.file("strace"), &inv.out)?)
        } else {
            None
        };
        Ok(JobRun {
            command: self.command,
            // `time` and the shell exit with the job's own code (128 + n after a signal).
            exit_code: status.code(),
            wall_s,
            usage,
            report,
            io,
            archives,
        })
    }
}

/// Runs one job to its end (or `stop`): [`spawn_job`] then [`JobProcess::wait`].
pub fn run_job(
    env: &Env,
    sim: &Simulator,
    job: &JobSpec,
    inv: &JobInvocation,
    stop: Stop,
) -> Result<JobRun> {
    spawn_job(env, sim, job, inv)?.wait(env, stop)
}

/// Runs one measurement: simulator and job as separate processes, in `env.work/name`.
pub fn run(env: &Env, name: &str, sim: &SimSpec, job: &JobSpec, stop: Stop) -> Result<Run> {
    let dir = fresh_dir(env, name)?;
    let simulator = Simulator::start(env, &dir, sim)?;
    let out = dir.join("out");
    let inv = JobInvocation::new("", &dir, &simulator.refs_path, &out);
    let sim_cpu_before = simulator.cpu_s();
    let job_run = run_job(env, &simulator, job, &inv, stop)?;
    let sim_cpu_s = simulator.cpu_s() - sim_cpu_before;
    let commands = vec![simulator.command.clone(), job_run.command.clone()];
    let log_path = simulator.log_path.clone();
    let refs = simulator.refs.clone();
    drop(simulator);
    let requests = read_log(&log_path)?;
    let out_bytes = dir_bytes(&out);
    if !env.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Run {
        commands,
        exit_code: job_run.exit_code,
        wall_s: job_run.wall_s,
        usage: job_run.usage,
        sim_cpu_s,
        report: job_run.report,
        requests,
        refs,
        seed: sim.seed,
        out_bytes,
    })
}

/// `env.work/name`, emptied and created.
pub fn fresh_dir(env: &Env, name: &str) -> Result<PathBuf> {
    let dir = env.work.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Writes `refs` as a `reference,kind` CSV input file.
pub fn write_refs(path: &Path, refs: &[(String, Kind)]) -> Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| format!("{}", path.display()))?;
    w.write_record(["reference", "kind"])?;
    for (reference, kind) in refs {
        w.write_record([reference.as_str(), kind.to_string().as_str()])?;
    }
    w.flush()?;
    Ok(())
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
    let min = minimum_requests(run.seed, &run.refs, job.schedule.len() as u32);
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

/// What the commits of a dataset say, against the references that went in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetCheck {
    /// Commit records.
    pub commits: usize,
    /// Rows of the kind tables (netverify, documents, authentications) over all commits.
    pub rows: u64,
    /// Distinct (reference, kind) among them.
    pub exported: u64,
    /// Rows beyond the first of a (reference, kind): 0 when every export is exactly once.
    pub duplicates: u64,
    /// Open follow-ups: latest failures of what no commit exported.
    pub open_failures: u64,
    /// Input references neither exported nor an open follow-up.
    pub missing: u64,
    /// Exported or followed-up references that were not in the input.
    pub extra: u64,
}

impl DatasetCheck {
    /// Reads the commits of `out` (the library's catalogue reader: the commits and the
    /// `reference` column of the parts they list) and compares them with `input`.
    pub fn read(out: &Path, input: &[(String, Kind)]) -> Result<Self> {
        use std::collections::HashSet;
        let catalogue = jumio_export::dataset::catalogue::Catalogue::read(out)?;
        let mut seen: HashSet<(String, Kind)> = HashSet::new();
        let mut check = DatasetCheck {
            commits: catalogue.commits().len(),
            ..DatasetCheck::default()
        };
        catalogue.for_each_exported(|reference, kind| {
            check.rows += 1;
            if !seen.insert((reference.to_string(), kind)) {
                check.duplicates += 1;
            }
            Ok(())
        })?;
        check.exported = seen.len() as u64;
        for row in catalogue.open_failures()? {
            check.open_failures += 1;
            seen.insert((row.row.reference, row.row.kind));
        }
        let wanted: HashSet<(String, Kind)> = input.iter().cloned().collect();
        check.missing = wanted.difference(&seen).count() as u64;
        check.extra = seen.difference(&wanted).count() as u64;
        Ok(check)
    }
}

/// Runs `jumio-export verify OUT` and returns its exit code and the last line it printed.
pub fn verify(env: &Env, out: &Path) -> Result<(Option<i32>, String, String)> {
    let args = vec!["verify".to_string(), out.display().to_string()];
    let line = shell_line(&[], &env.bin, &args);
    if env.echo {
        println!("$ {line}");
    }
    let o = Command::new(&env.bin)
        .args(&args)
        .output()
        .with_context(|| format!("running {line}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Ok((o.status.code(), last.to_string(), line))
}
