//! The main job, as a list of stages (each a module of its own):
//! - [`location`]: the dataset location — layout, run id and lock, modes, temporaries of dead
//!   runs, archive ownership;
//! - [`resume`]: what the commits already hold (removed from the input), and the pure plan of
//!   what to carry, poll once or fetch among the open follow-ups;
//! - [`shutdown`]: the one record of why the run stopped early, and the stop/cancel phases;
//! - [`schedule`]: one stream over the input, bounded, used before and after a stop;
//! - [`task`]: one reference — take over its archive or fetch and archive it;
//! - [`sink`]: the writer thread that owns the run's table parts and the root hash;
//! - [`commit`]: the commit record (the publish step), then `failures.csv` and `report.json`;
//! - [`progress`]: the bar or log lines for people;
//! - [`upgrade`]: `jumio-export upgrade`, a directory of the layout before datasets listed in a
//!   first commit by the same sink and commit.
//!
//! The report is assembled by [`crate::output::report`]. Memory stays bounded: at most
//! [`schedule::max_live`] references are in flight and nothing per reference is kept.

pub mod commit;
pub mod location;
pub mod progress;
pub mod resume;
pub mod schedule;
pub mod shutdown;
pub mod sink;
pub mod takeover;
pub mod task;
pub mod upgrade;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::api::breaker::BreakerOptions;
use crate::api::client::ClientOptions;
use crate::api::retry::RetryPolicy;
use crate::api::{ApiClient, RateLimiter};
use crate::fetch::{FetchOptions, Fetcher};
use crate::input::InputList;
use crate::job::{Credentials, Job};
use crate::outcome::{ErrorCode, Stage};
use crate::output::archive::{ArchiveKey, ProvenanceMeta};
use crate::output::failures::FailureRow;
use crate::output::fsmode::Modes;
use crate::output::report::{Outcomes, Report, Requests, RunFacts};

use location::OutputLocation;
use progress::Progress;
use resume::ResumePlan;
use shutdown::{Shutdown, StopReason};
use sink::{Sink, Written};
use task::{Done, TaskContext};

/// The run's notion of "now", injectable so tests can move a day forward.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How the run behaves beyond what the job file says.
#[derive(Clone)]
pub struct RunOptions {
    /// No progress output at all (overrides `progress`).
    pub quiet: bool,
    /// How progress is shown; `None`: a bar on a terminal, log lines otherwise.
    pub progress: Option<progress::ProgressMode>,
    /// How often a progress line is written (log and JSON progress).
    pub progress_interval: Duration,
    /// Also retry references that failed with `NOT_FOUND` in an earlier run.
    pub retry_failed: bool,
    /// Grace period for transfers in flight after Ctrl-C or SIGTERM.
    pub grace: Duration,
    /// Wall clock for `next_attempt_after`.
    pub clock: Clock,
    /// Encrypts archive entries (and opens them on resume) when set.
    pub archive_key: Option<ArchiveKey>,
    /// Signs the commit record (`[output] signing_key_env`) when set.
    pub commit_signer: Option<Arc<crate::output::signing::CommitSigner>>,
    /// The keyed HMAC of `[output] pii = "pseudonymised"` (required for that profile).
    pub pseudonymiser: Option<crate::flatten::pii::Pseudonymiser>,
    /// The dataset's commits, being read since before the input was
    /// ([`resume::Prefetch::start`]); `None`: the run reads them when it has opened the location.
    pub commits: Option<resume::Prefetch>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            quiet: false,
            progress: None,
            progress_interval: Duration::from_secs(10),
            retry_failed: false,
            grace: Duration::from_secs(5),
            clock: Arc::new(Utc::now),
            archive_key: None,
            commit_signer: None,
            pseudonymiser: None,
            commits: None,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("quiet", &self.quiet)
            .field("retry_failed", &self.retry_failed)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// What a finished run says about itself; decides the exit code.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The output directory.
    pub out_dir: PathBuf,
    /// Exported now.
    pub exported: u64,
    /// Complete from an earlier run.
    pub already_exported: u64,
    /// Rows in failures.csv.
    pub failed: u64,
    /// Not reached (interrupted).
    pub not_started: u64,
    /// Left to another run that owns their archive (a concurrent run exports them; they are not
    /// failures of this run and do not change its exit code).
    pub other_run: u64,
    /// Requests sent.
    pub requests: u64,
    /// Retries among them.
    pub retries: u64,
    /// 429 answers.
    pub too_many_requests: u64,
    /// The API refused the credentials: fatal.
    pub denied: bool,
    /// Ctrl-C or SIGTERM stopped the run.
    pub interrupted: bool,
    /// Failures by error code.
    pub failures_by_error: BTreeMap<String, u64>,
    /// Wall time.
    pub elapsed: Duration,
    /// The report's root hash.
    pub root_hash: String,
}

impl Summary {
    /// SPEC's exit codes: 0 all exported, 1 some not, 3 fatal, 130 interrupted.
    pub fn exit_code(&self) -> i32 {
        if self.denied {
            3
        } else if self.interrupted {
            130
        } else if self.failed > 0 || self.not_started > 0 {
            1
        } else {
            0
        }
    }

    /// The exit code when failures with the `expected` codes (`--exit-zero-on`) count as a
    /// success: 0 when every failure of the run is one of them and nothing was left unstarted.
    pub fn exit_code_allowing(&self, expected: &[ErrorCode]) -> i32 {
        let code = self.exit_code();
        if code != 1 || self.not_started > 0 {
            return code;
        }
        let codes: std::collections::BTreeSet<&str> = expected.iter().map(|e| e.as_str()).collect();
        let allowed: u64 = codes
            .iter()
            .filter_map(|c| self.failures_by_error.get(*c))
            .sum();
        if allowed >= self.failed { 0 } else { 1 }
    }

    /// The human summary printed on stdout.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        };
        s.push_str(&format!("output            {}\n", self.out_dir.display()));
        s.push_str(&format!("exported          {}\n", self.exported));
        s.push_str(&format!("already exported  {}\n", self.already_exported));
        s.push_str(&format!("failed            {}\n", self.failed));
        for (code, n) in &self.failures_by_error {
            s.push_str(&format!("  {code:<18}{n}\n"));
        }
        if self.not_started > 0 {
            s.push_str(&format!("not started       {}\n", self.not_started));
        }
        if self.other_run > 0 {
            s.push_str(&format!("left to other run {}\n", self.other_run));
        }
        s.push_str(&format!(
            "requests          {} ({} retries, {} answered 429)\n",
            self.requests, self.retries, self.too_many_requests
        ));
        s.push_str(&format!(
            "time              {secs:.1} s ({rate:.1} requests/s)\n"
        ));
        s.push_str(&format!("root hash         {}\n", self.root_hash));
        s
    }
}

/// A run that could not start or could not write its output (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The output directory cannot be created or written.
    #[error("output directory {path}: {source}")]
    OutputDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing an output file failed (disk full, permissions): the run stopped.
    #[error("writing {what} failed: {message}")]
    Output {
        /// Which output.
        what: String,
        /// Why.
        message: String,
    },
    /// The input list's temporary file could not be read back.
    #[error("reading the input list's temporary file failed: {0}")]
    Input(std::io::Error),
    /// The HTTP client could not be built from the job's settings.
    #[error("{0}")]
    Client(String),
    /// The dataset's commits cannot be read or one is damaged: no run builds on it.
    #[error("{0}")]
    Dataset(String),
    /// The job's PII profile is not the dataset's (exit 2).
    #[error(
        "{}: [output] pii = \"{wanted}\", but the dataset was written with pii = \"{found}\" (commit {run}): a dataset holds one profile; export into another location, or use \"{found}\"",
        job.display()
    )]
    PiiProfile {
        /// The job file.
        job: PathBuf,
        /// The job's profile.
        wanted: crate::flatten::pii::Pii,
        /// A commit of another profile.
        run: String,
        /// Its profile.
        found: crate::flatten::pii::Pii,
    },
    /// The job's archive mode (plain ZIP, `encrypt_archives`, `age_recipients`) is not the
    /// dataset's, or not that of an archive the run found (exit 2): nothing of it is replaced.
    #[error("{0}")]
    ArchiveMode(String),
    /// A bucket location or its store settings cannot make a client (exit 2: a usage matter).
    #[error("{0}")]
    StoreSettings(String),
    /// The directory holds tables of the layout before datasets (exit 2: a usage matter).
    #[error(
        "{path} holds tables written by an earlier jumio-export (netverify.csv and others at its top level), not a dataset (tables/, commits/). Upgrade it in place with `jumio-export upgrade {path}` (lists its archives in a first commit, nothing is fetched), or export into a new directory"
    )]
    LegacyLayout {
        /// The directory.
        path: PathBuf,
    },
}

/// Runs the job over `input` with `credentials` into the dataset at `[output] dir`. The caller
/// has validated the job and read the input.
pub async fn run(
    job: &Job,
    input: InputList,
    credentials: &Credentials,
    mut opts: RunOptions,
) -> Result<Summary, RunError> {
    let input = shard(job, input).await?;
    let (started, started_at) = (Instant::now(), (opts.clock)());
    let modes = Modes {
        file: job.output.file_mode,
        dir: job.output.dir_mode,
    };
    let location = open_location(job, modes, started_at).await?;
    same_pii_profile(job, &location)?;
    let (input, start) = resume::from_catalogue(&location, input, opts.commits.take()).await?;
    let shutdown = Shutdown::new();
    let signals = shutdown.on_signals(opts.grace);
    let client = api_client(job, credentials)?;
    let plan = ResumePlan::new(
        start.open.iter().map(|r| r.row.clone()),
        (opts.clock)(),
        opts.retry_failed,
    );
    let (sink, tx) = Sink::spawn(
        location.clone(),
        job.output.csv,
        job.output.parquet,
        job.output.csv_neutralise_formulas,
        (job.output.pii, opts.pseudonymiser.clone()),
        start.tables_with_parts.clone(),
        shutdown.clone(),
    );
    let ctx = Arc::new(task_context(job, &client, &location, &shutdown, &opts));
    let progress = progress_of(&opts, &input, &client, &ctx);
    reject_invalid(&input, &tx, &progress).await;
    let max_live = schedule::max_live(job.limits.concurrency);
    let unread = schedule::drive(ctx, &input.items, &plan, &tx, &progress, max_live).await;
    drop(tx);
    signals.abort();
    progress.finish();
    let mut written = sink.join().map_err(|_| RunError::Output {
        what: "tables".into(),
        message: "the writer thread panicked".into(),
    })??;
    written.not_started += unread;
    written.archive_mode = job.output.archive_mode();
    let already = start.already;
    let facts = run_facts(
        job, &input, &location, &shutdown, &client, &written, already,
    );
    let report = Report::assemble(started_at, (opts.clock)(), facts);
    commit::publish(
        &location,
        &report,
        &written,
        start,
        opts.commit_signer.clone(),
    )
    .await?;
    summary(
        &location,
        written,
        already,
        &report,
        &shutdown,
        started.elapsed(),
    )
}

/// The run's progress display over `input`: none when quiet, else as asked or as standard
/// error suits.
fn progress_of(
    opts: &RunOptions,
    input: &InputList,
    client: &ApiClient,
    ctx: &TaskContext,
) -> Progress {
    let mode = match (opts.quiet, opts.progress) {
        (true, _) => progress::ProgressMode::None,
        (false, Some(mode)) => mode,
        (false, None) => progress::ProgressMode::default_for_stderr(),
    };
    Progress::new(
        input.items.len() + input.rejected.len() as u64,
        mode,
        opts.progress_interval,
        progress::Sources {
            client: client.clone(),
            fetcher: ctx.fetcher.clone(),
        },
    )
}

/// A dataset holds one PII profile: a run whose `[output] pii` differs from a commit's is
/// refused before anything is fetched (exit 2).
fn same_pii_profile(job: &Job, location: &OutputLocation) -> Result<(), RunError> {
    use crate::dataset::commit::{self, Commit};
    let root = location.root();
    let runs = commit::list(root).map_err(|e| RunError::Dataset(e.to_string()))?;
    for run in runs {
        let c = Commit::read(&commit::path(root, &run))
            .map_err(|e| RunError::Dataset(e.to_string()))?;
        if c.output.pii != job.output.pii {
            return Err(RunError::PiiProfile {
                job: job.path.clone(),
                wanted: job.output.pii,
                run,
                found: c.output.pii,
            });
        }
        same_archive_mode(job, &run, &c)?;
    }
    Ok(())
}

/// A dataset holds one archive mode: a run whose mode differs from one a commit that lists
/// archives records is refused before anything is fetched (exit 2). Commits of earlier versions
/// record none: their archives are ZIP (plain or AES), which an age run does not match; between
/// plain and AES the archives themselves tell ([`location::Existing::Mismatch`]).
fn same_archive_mode(
    job: &Job,
    run: &str,
    c: &crate::dataset::commit::Commit,
) -> Result<(), RunError> {
    use crate::output::archive::ArchiveMode;
    let wanted = job.output.archive_mode();
    if c.archives.count == 0 {
        return Ok(());
    }
    let found = match c.output.archive_mode {
        Some(found) => found,
        None if wanted == ArchiveMode::Age => ArchiveMode::Zip,
        None => return Ok(()),
    };
    if found == wanted {
        return Ok(());
    }
    Err(RunError::ArchiveMode(mode_mismatch(
        &job.path,
        wanted,
        wanted.setting_between(found),
        &format!("commit {run} lists {}", found.describe()),
    )))
}

/// The exit-2 message of a run of mode `wanted` meeting archives that `setting` tells apart
/// (`found`: "commit R lists …", "archives/X.zip is …").
pub fn mode_mismatch(
    job: &std::path::Path,
    wanted: crate::output::archive::ArchiveMode,
    setting: &str,
    found: &str,
) -> String {
    format!(
        "{}: {setting} differs from the dataset: this run writes {}, but {found}. A dataset holds one archive mode and no archive is ever replaced: set {setting} as the dataset was written, or export into another location",
        job.display(),
        wanted.describe(),
    )
}

/// What the run did, for its report and commit.
fn run_facts(
    job: &Job,
    input: &InputList,
    location: &OutputLocation,
    shutdown: &Shutdown,
    client: &ApiClient,
    written: &Written,
    already: u64,
) -> RunFacts {
    RunFacts {
        job_sha256: job.sha256.clone(),
        input_sha256: input.sha256.clone(),
        shard: job
            .shard
            .as_ref()
            .map(|s| format!("{}/{}", s.index, s.count)),
        run: location.run().to_string(),
        interrupted: shutdown.reason().is_some(),
        outcomes: outcomes(written, already, input.duplicates as u64),
        requests: Requests {
            limit_per_second: Some(client.limiter().configured_rate()),
            outage_pauses: client.breaker().pauses(),
            outage_paused_seconds: client.breaker().paused().as_secs_f64(),
            ..Requests::from_stats(client.stats())
        },
        store_requests: location
            .store_requests()
            .map(|(total, retries)| crate::output::report::StoreRequests { total, retries }),
        bytes_written: written.bytes_written,
        archives: written.archives,
        root_hash: written.root_hash.clone(),
        unparsed_values: written.unparsed_values.clone(),
    }
}

/// Opens the output location off the async threads: it creates directories, takes the run's
/// lock and sweeps dead runs' temporaries, all blocking file-system work.
async fn open_location(
    job: &Job,
    modes: Modes,
    started_at: DateTime<Utc>,
) -> Result<Arc<OutputLocation>, RunError> {
    let (dir, shard, store) = (job.output.dir.clone(), job.shard, job.output.store.clone());
    tokio::task::spawn_blocking(move || {
        OutputLocation::open_with(&dir, modes, started_at, shard.as_ref(), &store)
    })
    .await
    .map_err(|e| RunError::OutputDir {
        path: job.output.dir.clone(),
        source: std::io::Error::other(e),
    })?
}

/// Keeps only this shard's references (rewrites the spooled list: file I/O, off the async threads).
async fn shard(job: &Job, mut input: InputList) -> Result<InputList, RunError> {
    let Some(shard) = job.shard else {
        return Ok(input);
    };
    tokio::task::spawn_blocking(move || input.retain_shard(&shard).map(|()| input))
        .await
        .map_err(|e| RunError::Input(std::io::Error::other(e)))?
        .map_err(RunError::Input)
}

/// The HTTP client with the job's limits: one rate limiter for every request.
fn api_client(job: &Job, credentials: &Credentials) -> Result<ApiClient, RunError> {
    let limiter = Arc::new(RateLimiter::new(
        job.limits.requests_per_second,
        job.limits.burst,
    ));
    let options = ClientOptions {
        netverify_url: job.api.netverify_url.clone(),
        retrieval_url: job.api.retrieval_url.clone(),
        user_agent: job.api.user_agent.clone(),
        authorization: credentials.basic_header_value(),
        timeout: job.limits.timeout,
        connect_timeout: job.limits.timeout.min(Duration::from_secs(10)),
        max_file_bytes: job.limits.max_file_bytes,
        retry: RetryPolicy {
            max_retries: job.limits.max_retries,
            max_throttle: job.limits.max_throttle,
            ..RetryPolicy::default()
        },
        breaker: BreakerOptions {
            max_outage: job.limits.max_outage,
            ..BreakerOptions::default()
        },
    };
    ApiClient::new(options, limiter).map_err(RunError::Client)
}

/// What every reference's task shares.
fn task_context(
    job: &Job,
    client: &ApiClient,
    location: &Arc<OutputLocation>,
    shutdown: &Shutdown,
    opts: &RunOptions,
) -> TaskContext {
    let fetch = FetchOptions {
        schedule: job.polling.schedule.clone(),
        images: job.fetch.images,
        liveness_images: job.fetch.liveness_images,
        original_documents: job.fetch.original_documents,
        unmasked_card_images: job.fetch.unmasked_card_images,
        max_list_items: job.limits.max_list_items,
    };
    TaskContext {
        fetcher: Fetcher::new(
            client.clone(),
            fetch,
            job.limits.concurrency,
            shutdown.stop_token(),
            shutdown.cancel_token(),
        ),
        location: location.clone(),
        meta: ProvenanceMeta {
            tool_version: crate::VERSION.to_string(),
            job_sha256: job.sha256.clone(),
            run: Some(location.run().to_string()),
        },
        write_archives: job.output.archives,
        age: (!job.output.age_recipients.is_empty())
            .then(|| crate::output::archive::AgeRecipients::parse(&job.output.age_recipients).ok())
            .flatten(),
        archive_mode: job.output.archive_mode(),
        pii: (job.output.pii, opts.pseudonymiser.clone()),
        job_path: job.path.clone(),
        daily_retry: job.polling.daily_retry,
        shutdown: shutdown.clone(),
        clock: opts.clock.clone(),
        archive_key: opts.archive_key.clone(),
    }
}

/// Invalid references never reach the API: each is a failure row at once.
async fn reject_invalid(
    input: &InputList,
    tx: &tokio::sync::mpsc::Sender<Done>,
    progress: &Progress,
) {
    for rejected in &input.rejected {
        let row = FailureRow {
            reference: rejected.raw.clone(),
            kind: rejected.kind,
            stage: Stage::Input,
            http_status: None,
            error: ErrorCode::InvalidReference,
            attempts: 0,
            next_attempt_after: None,
        };
        progress.failed();
        let _ = tx.send(Done::Failed(row)).await;
    }
}

/// `already`: references some earlier commit exported, removed from the input before the run.
fn outcomes(w: &Written, already: u64, duplicates: u64) -> Outcomes {
    Outcomes {
        references: w.exported + w.already + already + w.failed + w.not_started + w.other_run,
        exported: w.exported,
        already_exported: w.already + already,
        failed: w.failed,
        not_started: w.not_started,
        other_run: w.other_run,
        duplicates,
        failures_by_error: w.by_error.clone(),
    }
}

/// The summary, or the fatal error that stopped the run (after the report was written).
fn summary(
    location: &OutputLocation,
    written: Written,
    already: u64,
    report: &Report,
    shutdown: &Shutdown,
    elapsed: Duration,
) -> Result<Summary, RunError> {
    if let Some(StopReason::Mismatch(message)) = shutdown.reason() {
        return Err(RunError::ArchiveMode(message.clone()));
    }
    if let Some(StopReason::Fatal(message)) = shutdown.reason() {
        return Err(RunError::Output {
            what: "archives".into(),
            message: format!("{message}; completed archives are kept, run again to resume"),
        });
    }
    Ok(Summary {
        out_dir: location.name(),
        exported: written.exported,
        already_exported: written.already + already,
        failed: written.failed,
        not_started: written.not_started,
        other_run: written.other_run,
        requests: report.facts.requests.total,
        retries: report.facts.requests.retries,
        too_many_requests: report.facts.requests.too_many_requests,
        denied: shutdown.reason() == Some(&StopReason::CredentialsRefused),
        interrupted: shutdown.reason() == Some(&StopReason::Interrupted),
        failures_by_error: written.by_error,
        elapsed,
        root_hash: written.root_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_spec() {
        let clean = Summary::default();
        assert_eq!(clean.exit_code(), 0);
        let some_failed = Summary {
            failed: 1,
            ..Summary::default()
        };
        assert_eq!(some_failed.exit_code(), 1);
        let not_reached = Summary {
            not_started: 2,
            ..Summary::default()
        };
        assert_eq!(not_reached.exit_code(), 1);
        let interrupted = Summary {
            interrupted: true,
            failed: 3,
            ..Summary::default()
        };
        assert_eq!(interrupted.exit_code(), 130);
        let denied = Summary {
            denied: true,
            interrupted: true,
            ..Summary::default()
        };
        assert_eq!(denied.exit_code(), 3);
    }
}
