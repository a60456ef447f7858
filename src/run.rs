//! The main job: drives every reference through [`crate::fetch`], writes archives off the async
//! threads, and hands results to one writer thread that owns the tables, `failures.csv` and the
//! report. Memory stays bounded: at most `max_live` references are in flight, tables are written
//! in batches, and nothing per reference is kept but `(reference, archive sha256)` for the root hash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Kind;
use crate::api::client::ClientOptions;
use crate::api::retry::RetryPolicy;
use crate::api::{ApiClient, RateLimiter};
use crate::fetch::{FetchFailure, FetchOptions, FetchOutcome, Fetcher};
use crate::flatten::{self, ArchiveSummary, FileRecord};
use crate::input::{InputList, Item};
use crate::job::{Credentials, Job};
use crate::outcome::{ErrorCode, Stage};
use crate::output::archive::{self, ArchivedFile, ProvenanceMeta};
use crate::output::failures::{self, FailureRow, FailuresWriter};
use crate::output::report::{self, Outcomes, Report, Requests, RootHash};
use crate::output::tables::TableWriter;

/// The run's notion of "now", injectable so tests can move a day forward.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How the run behaves beyond what the job file says.
#[derive(Clone)]
pub struct RunOptions {
    /// No progress output at all.
    pub quiet: bool,
    /// Also retry references that failed with `NOT_FOUND` in an earlier run.
    pub retry_failed: bool,
    /// Grace period for transfers in flight after Ctrl-C or SIGTERM.
    pub grace: Duration,
    /// Wall clock for `next_attempt_after`.
    pub clock: Clock,
    /// Encrypts archive entries (and opens them on resume) when set.
    pub archive_key: Option<archive::ArchiveKey>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            quiet: false,
            retry_failed: false,
            grace: Duration::from_secs(5),
            clock: Arc::new(Utc::now),
            archive_key: None,
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
#[derive(Debug, Clone)]
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
    pub failures_by_error: std::collections::BTreeMap<String, u64>,
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

    /// The human summary printed on stdout.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let secs = self.elapsed.as_secs_f64();
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
        s.push_str(&format!(
            "requests          {} ({} retries, {} answered 429)\n",
            self.requests, self.retries, self.too_many_requests
        ));
        s.push_str(&format!(
            "time              {secs:.1} s ({:.1} requests/s)\n",
            if secs > 0.0 {
                self.requests as f64 / secs
            } else {
                0.0
            }
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
    /// Another run holds the output directory.
    #[error(
        "{path} is held by another jumio-export run on this directory; wait for it to finish (two runs must not write one directory)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

/// What the fetch side hands to the writer thread.
enum Done {
    Exported {
        reference: String,
        kind: Kind,
        data: serde_json::Value,
        archive: Option<archive::WrittenArchive>,
        files: Vec<ArchivedFile>,
        fresh: bool,
    },
    Failed(FailureRow),
    NotStarted,
}

/// Runs the job over `input` with `credentials`. The caller has validated the job and read the input.
pub async fn run(
    job: &Job,
    mut input: InputList,
    credentials: &Credentials,
    opts: RunOptions,
) -> Result<Summary, RunError> {
    if let Some(shard) = job.shard {
        // Rewrites the spooled list: file I/O, off the async threads.
        input = tokio::task::spawn_blocking(move || input.retain_shard(&shard).map(|()| input))
            .await
            .map_err(|e| RunError::Input(std::io::Error::other(e)))?
            .map_err(RunError::Input)?;
    }
    let started = std::time::Instant::now();
    let started_at = (opts.clock)();
    let out = job.output.dir.clone();
    crate::output::fsmode::configure(job.output.file_mode, job.output.dir_mode);
    create_output_dir(&out)?;
    let _lock = lock_output_dir(&out)?;
    // Only the lock holder may touch temporaries: another run's could be in flight.
    prepare_output_dir(&out)?;

    let limiter = Arc::new(RateLimiter::new(
        job.limits.requests_per_second,
        job.limits.burst,
    ));
    let client = ApiClient::new(
        ClientOptions {
            netverify_url: job.api.netverify_url.clone(),
            retrieval_url: job.api.retrieval_url.clone(),
            user_agent: job.api.user_agent.clone(),
            authorization: credentials.basic_header_value(),
            timeout: job.limits.timeout,
            connect_timeout: job.limits.timeout.min(Duration::from_secs(10)),
            max_file_bytes: job.limits.max_file_bytes,
            retry: RetryPolicy {
                max_retries: job.limits.max_retries,
                ..RetryPolicy::default()
            },
        },
        limiter,
    )
    .map_err(RunError::Client)?;
    // `stop`: start nothing new; `cancel`: abandon transfers in flight.
    let stop = CancellationToken::new();
    let cancel = CancellationToken::new();
    let fetcher = Fetcher::new(
        client.clone(),
        FetchOptions {
            schedule: job.polling.schedule.clone(),
            images: job.fetch.images,
            liveness_images: job.fetch.liveness_images,
            original_documents: job.fetch.original_documents,
            unmasked_card_images: job.fetch.unmasked_card_images,
        },
        job.limits.concurrency,
        stop.clone(),
        cancel.clone(),
    );
    let interrupted = Arc::new(AtomicBool::new(false));
    let signals = spawn_signal_handler(
        stop.clone(),
        cancel.clone(),
        interrupted.clone(),
        opts.grace,
    );
    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();

    // Earlier failures that are not due yet are carried over without calling the API.
    let now = (opts.clock)();
    let earlier =
        failures::read(&out.join("failures.csv")).map_err(|source| RunError::OutputDir {
            path: out.join("failures.csv"),
            source,
        })?;
    // PENDING past its next_attempt_after: the guide allows one status call a day, not a new
    // round of the schedule.
    let daily: std::collections::HashSet<(String, Kind)> = earlier
        .iter()
        .filter(|r| r.error == ErrorCode::Pending && r.next_attempt_after.is_some_and(|t| t <= now))
        .map(|r| (r.reference.clone(), r.kind))
        .collect();
    let carried: HashMap<(String, Kind), FailureRow> = earlier
        .into_iter()
        .filter(|r| match r.error {
            ErrorCode::Pending => r.next_attempt_after.is_none_or(|t| t > now),
            ErrorCode::NotFound => !opts.retry_failed,
            _ => false,
        })
        .map(|r| ((r.reference.clone(), r.kind), r))
        .collect();

    let (tx, rx) = mpsc::channel::<Done>(256);
    let writer = {
        let job_out = out.clone();
        let csv = job.output.csv;
        let parquet = job.output.parquet;
        let stop = stop.clone();
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            let result = write_results(&job_out, csv, parquet, rx);
            if result.is_err() {
                // The tables cannot be written: nothing fetched from now on could be recorded.
                stop.cancel();
                cancel.cancel();
            }
            result
        })
    };

    let meta = Arc::new(ProvenanceMeta {
        tool_version: crate::VERSION.to_string(),
        job_sha256: job.sha256.clone(),
    });
    let progress = Progress::new(input.items.len() + input.rejected.len() as u64, opts.quiet);
    let denied = Arc::new(AtomicBool::new(false));

    // Invalid references never reach the API.
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
        let _ = tx.send(Done::Failed(row)).await;
        progress.failed();
    }

    let ctx = Arc::new(TaskContext {
        fetcher,
        out: out.clone(),
        meta,
        write_archives: job.output.archives,
        daily_retry: job.polling.daily_retry,
        denied: denied.clone(),
        fatal: fatal.clone(),
        stop: stop.clone(),
        cancel: cancel.clone(),
        clock: opts.clock.clone(),
        archive_key: opts.archive_key.clone(),
    });
    let max_live = (job.limits.concurrency * 8).max(256);
    let mut tasks = JoinSet::new();
    let mut items = input.items.iter();
    // The input's own temporary file failing to read back stops the run like a full disk.
    let unreadable = |e: std::io::Error| {
        let mut fatal = fatal.lock().expect("fatal lock");
        fatal.get_or_insert(RunError::Input(e).to_string());
        stop.cancel();
    };
    loop {
        while tasks.len() < max_live && !stop.is_cancelled() {
            let item = match items.next() {
                None => break,
                Some(Ok(item)) => item,
                Some(Err(e)) => {
                    unreadable(e);
                    break;
                }
            };
            if let Some(row) = carried.get(&(item.reference.clone(), item.kind)) {
                let _ = tx.send(Done::Failed(row.clone())).await;
                progress.failed();
                continue;
            }
            let ctx = ctx.clone();
            let tx = tx.clone();
            let progress = progress.clone();
            let once = daily.contains(&(item.reference.clone(), item.kind));
            tasks.spawn(async move {
                let done = one_reference(&ctx, item, once).await;
                match &done {
                    Done::Exported { fresh: true, .. } => progress.exported(),
                    Done::Exported { fresh: false, .. } => progress.already(),
                    Done::Failed(_) => progress.failed(),
                    Done::NotStarted => {}
                }
                let _ = tx.send(done).await;
            });
        }
        if tasks.join_next().await.is_none() {
            break;
        }
    }
    // Stopped early (Ctrl-C, refused credentials, a full disk): the references not reached still
    // keep what earlier runs established, so the tables written below are complete, not partial.
    // Only local work here: carried failure rows and archives already on disk.
    {
        use futures::StreamExt;
        let carried = &carried;
        let out = &out;
        let key = &opts.archive_key;
        let unreadable = &unreadable;
        // An item that cannot be read is counted by `items.unread()` below, not here.
        let mut rest = futures::stream::iter(items.by_ref())
            .filter_map(|item| {
                futures::future::ready(match item {
                    Ok(item) => Some(item),
                    Err(e) => {
                        unreadable(e);
                        None
                    }
                })
            })
            .map(|item| async move {
                if let Some(row) = carried.get(&(item.reference.clone(), item.kind)) {
                    return Done::Failed(row.clone());
                }
                let path = out.join("archives").join(format!("{}.zip", item.reference));
                if path.exists()
                    && let Some(done) =
                        reuse_archive(&path, &item.reference, item.kind, key.clone()).await
                {
                    return done;
                }
                Done::NotStarted
            })
            .buffer_unordered(4);
        while let Some(done) = rest.next().await {
            let _ = tx.send(done).await;
        }
    }
    drop(tx);
    drop(ctx);
    signals.abort();
    progress.finish();
    let mut written = writer.join().map_err(|_| RunError::Output {
        what: "tables".into(),
        message: "the writer thread panicked".into(),
    })??;
    // References the input's temporary file could not give back (the run is stopped as fatal):
    // counted as not started, never dropped.
    written.not_started += items.unread();

    let stats = client.stats();
    let mut by_endpoint: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, u64>,
    > = Default::default();
    for ((endpoint, status), n) in stats.by_endpoint() {
        by_endpoint
            .entry(endpoint.to_string())
            .or_default()
            .insert(status.to_string(), n);
    }
    let root_hash = written.root_hash.clone();
    let denied = denied.load(Ordering::SeqCst);
    let interrupted = interrupted.load(Ordering::SeqCst);
    let fatal = fatal.lock().expect("fatal lock").clone();
    let outcomes = Outcomes {
        references: written.exported + written.already + written.failed + written.not_started,
        exported: written.exported,
        already_exported: written.already,
        failed: written.failed,
        not_started: written.not_started,
        duplicates: input.duplicates as u64,
        failures_by_error: written.by_error.clone(),
    };
    let report = Report {
        tool: "jumio-export",
        tool_version: crate::VERSION,
        started_at: report::timestamp(started_at),
        finished_at: report::timestamp((opts.clock)()),
        job_sha256: job.sha256.clone(),
        input_sha256: input.sha256.clone(),
        shard: job
            .shard
            .as_ref()
            .map(|s| format!("{}/{}", s.index, s.count)),
        interrupted: interrupted || denied || fatal.is_some(),
        outcomes,
        requests: Requests {
            total: stats.requests(),
            retries: stats.retries(),
            too_many_requests: stats.too_many_requests(),
            bytes_received: stats.bytes_received(),
            by_endpoint,
        },
        bytes_written: written.bytes_written,
        archives: written.archives,
        root_hash: root_hash.clone(),
        root_hash_method: report::ROOT_HASH_METHOD,
    };
    report.write(&out).map_err(|e| RunError::Output {
        what: "report.json".into(),
        message: e.to_string(),
    })?;
    if let Some(message) = fatal {
        return Err(RunError::Output {
            what: "archives".into(),
            message: format!("{message}; completed archives are kept, run again to resume"),
        });
    }
    Ok(Summary {
        out_dir: out,
        exported: written.exported,
        already_exported: written.already,
        failed: written.failed,
        not_started: written.not_started,
        requests: stats.requests(),
        retries: stats.retries(),
        too_many_requests: stats.too_many_requests(),
        denied,
        interrupted,
        failures_by_error: written.by_error,
        elapsed: started.elapsed(),
        root_hash,
    })
}

/// Ctrl-C or SIGTERM: stop starting work at once, abandon transfers after `grace`.
fn spawn_signal_handler(
    stop: CancellationToken,
    cancel: CancellationToken,
    interrupted: Arc<AtomicBool>,
    grace: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            r = tokio::signal::ctrl_c() => if r.is_err() { return },
            () = terminate => {}
        }
        interrupted.store(true, Ordering::SeqCst);
        eprintln!(
            "interrupted: no new work is started; transfers in flight get {} s to finish",
            grace.as_secs()
        );
        stop.cancel();
        tokio::time::sleep(grace).await;
        cancel.cancel();
    })
}

/// The output directory's lock, released explicitly on drop: a process that forked meanwhile
/// (a library user spawning children) shares the descriptor, and merely closing ours would
/// leave the lock held until that child calls exec.
struct DirLock(std::fs::File);

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Takes the output directory's lock file, so two runs never write the same directory.
fn lock_output_dir(out: &Path) -> Result<DirLock, RunError> {
    let path = out.join(".jumio-export.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| RunError::OutputDir {
            path: out.to_path_buf(),
            source,
        })?;
    let _ = crate::output::fsmode::restrict(&file);
    match file.try_lock() {
        Ok(()) => Ok(DirLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(RunError::Locked { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(RunError::OutputDir {
            path: out.to_path_buf(),
            source,
        }),
    }
}

fn create_output_dir(out: &Path) -> Result<(), RunError> {
    let err = |source| RunError::OutputDir {
        path: out.to_path_buf(),
        source,
    };
    crate::output::fsmode::create_dir_all(out).map_err(err)?;
    crate::output::fsmode::create_dir_all(&out.join("archives")).map_err(err)
}

fn prepare_output_dir(out: &Path) -> Result<(), RunError> {
    let err = |source| RunError::OutputDir {
        path: out.to_path_buf(),
        source,
    };
    let probe = out.join(".write-probe.tmp");
    std::fs::write(&probe, b"").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)?;
    archive::remove_stale_temps(out).map_err(err)?;
    Ok(())
}

/// What every reference's task shares.
struct TaskContext {
    fetcher: Fetcher,
    out: PathBuf,
    meta: Arc<ProvenanceMeta>,
    write_archives: bool,
    daily_retry: bool,
    denied: Arc<AtomicBool>,
    fatal: Arc<std::sync::Mutex<Option<String>>>,
    stop: CancellationToken,
    cancel: CancellationToken,
    clock: Clock,
    archive_key: Option<archive::ArchiveKey>,
}

/// One reference: reuse its archive if an earlier run completed it, else fetch and archive it.
async fn one_reference(ctx: &TaskContext, item: Item, once: bool) -> Done {
    let Item { reference, kind } = item;
    let path = ctx.out.join("archives").join(format!("{reference}.zip"));
    // An archive that does not verify is not deleted: a new one replaces it atomically only once
    // every file is fetched again. If the API no longer has the transaction, the old file is all
    // there is.
    if path.exists()
        && let Some(done) = reuse_archive(&path, &reference, kind, ctx.archive_key.clone()).await
    {
        return done;
    }
    if ctx.stop.is_cancelled() {
        return Done::NotStarted;
    }
    let outcome = if once {
        ctx.fetcher.fetch_with_polls(&reference, kind, 0).await
    } else {
        ctx.fetcher.fetch(&reference, kind).await
    };
    match outcome {
        FetchOutcome::Fetched(f) => {
            if !ctx.write_archives {
                return Done::Exported {
                    reference,
                    kind,
                    data: f.data,
                    archive: None,
                    files: Vec::new(),
                    fresh: true,
                };
            }
            let slot = f.slot;
            let out = ctx.out.clone();
            let meta = ctx.meta.clone();
            let reference2 = reference.clone();
            let entries = f.entries;
            let key = ctx.archive_key.clone();
            let written = tokio::task::spawn_blocking(move || {
                archive::write_archive_with_key(&out, &reference2, &entries, &meta, key.as_ref())
            })
            .await;
            drop(slot);
            match written {
                Ok(Ok(w)) => Done::Exported {
                    reference,
                    kind,
                    data: f.data,
                    files: w.files.clone(),
                    archive: Some(w),
                    fresh: true,
                },
                Ok(Err(
                    e @ (archive::ArchiveError::DuplicateEntry { .. }
                    | archive::ArchiveError::InvalidReference { .. }),
                )) => {
                    // The API's data cannot be archived as given (two images claiming one
                    // name): a failure of this reference, not of the disk.
                    tracing::warn!(reference = %reference, "not exported: {e}");
                    Done::Failed(failure_row(
                        &reference,
                        kind,
                        &FetchFailure {
                            stage: Stage::Archive,
                            http_status: None,
                            error: ErrorCode::BadResponse,
                            attempts: 1,
                            next_attempt_after: None,
                            message: e.to_string(),
                        },
                    ))
                }
                Ok(Err(e)) => {
                    // A disk that refuses a write (full, read-only, failed fsync) refuses the next
                    // one too: stop cleanly rather than turn every reference into a failure. The
                    // temporary file is gone; the reference is fetched again next run.
                    let mut fatal = ctx.fatal.lock().expect("fatal lock");
                    if fatal.is_none() {
                        tracing::error!("stopping: {e}");
                        *fatal = Some(e.to_string());
                    }
                    ctx.stop.cancel();
                    ctx.cancel.cancel();
                    Done::NotStarted
                }
                Err(_) => Done::NotStarted,
            }
        }
        FetchOutcome::Failed(f) => {
            tracing::info!(reference = %reference, stage = %f.stage, error = %f.error, "not exported: {}", f.message);
            let mut row = failure_row(&reference, kind, &f);
            if row.error == ErrorCode::Pending {
                // The guide allows one more retrieval a day once the schedule is used up.
                row.next_attempt_after = ctx
                    .daily_retry
                    .then(|| (ctx.clock)() + chrono::Duration::days(1));
            }
            Done::Failed(row)
        }
        FetchOutcome::Denied(refused) => {
            let f = FetchFailure::from(&refused);
            if !ctx.denied.swap(true, Ordering::SeqCst) {
                tracing::error!("the API refused the credentials ({}); stopping", f.message);
            }
            ctx.stop.cancel();
            ctx.cancel.cancel();
            Done::Failed(failure_row(&reference, kind, &f))
        }
        FetchOutcome::Cancelled => Done::NotStarted,
    }
}

/// An archive left by an earlier run counts only if it verifies completely (every entry against its
/// manifest) and names its own reference; its table row is rebuilt from its `data.json`.
async fn reuse_archive(
    path: &Path,
    reference: &str,
    kind: Kind,
    key: Option<archive::ArchiveKey>,
) -> Option<Done> {
    let p = path.to_path_buf();
    let contents = match tokio::task::spawn_blocking(move || {
        archive::read_archive_with_key(&p, key.as_ref())
    })
    .await
    {
        Ok(Ok(c)) => c,
        _ => {
            tracing::warn!(reference = %reference, "archive from an earlier run does not open; fetching again");
            return None;
        }
    };
    let has = |name: &str| contents.files.iter().any(|f| f.entry == name);
    let kind_matches = match kind {
        Kind::Authentication => has("authentication.json"),
        Kind::Netverify => has("data.json") && !has("authentication.json") && !has("pages.json"),
        Kind::Document => has("data.json") && !has("authentication.json") && !has("images.json"),
    };
    if !kind_matches {
        tracing::warn!(reference = %reference, %kind, "archive from an earlier run is of another kind; fetching again");
        return None;
    }
    if !contents.manifest_ok
        || !contents.problems.is_empty()
        || contents.reference.as_deref() != Some(reference)
    {
        tracing::warn!(reference = %reference, "archive from an earlier run does not verify; fetching again");
        return None;
    }
    let Some(data) = contents
        .data_json
        .as_deref()
        .and_then(|d| serde_json::from_slice(d).ok())
    else {
        tracing::warn!(reference = %reference, "archive has no usable data entry; fetching again");
        return None;
    };
    Some(Done::Exported {
        archive: Some(archive::WrittenArchive {
            path: path.to_path_buf(),
            relative: format!("archives/{reference}.zip"),
            sha256: contents.sha256.clone(),
            bytes: contents.bytes,
            files: contents.files.clone(),
        }),
        reference: reference.to_string(),
        kind,
        data,
        files: contents.files,
        fresh: false,
    })
}

fn failure_row(reference: &str, kind: Kind, f: &FetchFailure) -> FailureRow {
    FailureRow {
        reference: reference.to_string(),
        kind,
        stage: f.stage.clone(),
        http_status: f.http_status,
        error: f.error.clone(),
        attempts: f.attempts,
        next_attempt_after: f.next_attempt_after,
    }
}

struct Written {
    exported: u64,
    already: u64,
    failed: u64,
    not_started: u64,
    by_error: std::collections::BTreeMap<String, u64>,
    /// Archives in the tables, and the root hash over them (computed when the tables close).
    archives: u64,
    root_hash: String,
    bytes_written: u64,
}

/// The writer thread: the only owner of the tables and failures.csv.
fn write_results(
    out: &Path,
    csv: bool,
    parquet: bool,
    mut rx: mpsc::Receiver<Done>,
) -> Result<Written, RunError> {
    let output_err = |what: &str, e: &dyn std::fmt::Display| RunError::Output {
        what: what.to_string(),
        message: e.to_string(),
    };
    let mut tables = HashMap::new();
    for kind in Kind::ALL {
        let w = TableWriter::create(
            out,
            kind.table_name(),
            flatten::table_columns(kind),
            csv,
            parquet,
        )
        .map_err(|e| output_err(kind.table_name(), &e))?;
        tables.insert(kind, w);
    }
    let mut files = TableWriter::create(out, "files", flatten::files_columns(), csv, parquet)
        .map_err(|e| output_err("files", &e))?;
    let mut failures = FailuresWriter::create(out).map_err(|e| output_err("failures.csv", &e))?;
    let mut w = Written {
        exported: 0,
        already: 0,
        failed: 0,
        not_started: 0,
        by_error: Default::default(),
        archives: 0,
        root_hash: String::new(),
        bytes_written: 0,
    };
    let mut root = RootHash::new(out);
    while let Some(done) = rx.blocking_recv() {
        match done {
            Done::Exported {
                reference,
                kind,
                data,
                archive,
                files: archived,
                fresh,
            } => {
                let summary = ArchiveSummary {
                    image_count: archive::image_count(&archived),
                    archive: archive
                        .as_ref()
                        .map(|a| a.relative.clone())
                        .unwrap_or_default(),
                    archive_sha256: archive
                        .as_ref()
                        .map(|a| a.sha256.clone())
                        .unwrap_or_default(),
                };
                let row = flatten::flatten(kind, &reference, &data, &summary);
                tables
                    .get_mut(&kind)
                    .expect("a writer per kind")
                    .write(&row)
                    .map_err(|e| output_err(kind.table_name(), &e))?;
                for f in &archived {
                    let record = FileRecord {
                        reference: reference.clone(),
                        kind,
                        entry: f.entry.clone(),
                        classifier: f.classifier.clone(),
                        content_type: f.content_type.clone(),
                        bytes: f.bytes,
                        sha256: f.sha256.clone(),
                    };
                    files
                        .write(&flatten::file_row(&record))
                        .map_err(|e| output_err("files", &e))?;
                }
                if let Some(a) = archive {
                    if fresh {
                        w.bytes_written += a.bytes;
                    }
                    root.add(&reference, &a.sha256)
                        .map_err(|e| output_err("report.json root hash", &e))?;
                }
                if fresh {
                    w.exported += 1;
                } else {
                    w.already += 1;
                }
            }
            Done::Failed(row) => {
                failures
                    .write(&row)
                    .map_err(|e| output_err("failures.csv", &e))?;
                *w.by_error.entry(row.error.to_string()).or_default() += 1;
                w.failed += 1;
            }
            Done::NotStarted => w.not_started += 1,
        }
    }
    for (kind, t) in tables {
        t.finish().map_err(|e| output_err(kind.table_name(), &e))?;
    }
    files.finish().map_err(|e| output_err("files", &e))?;
    failures
        .finish()
        .map_err(|e| output_err("failures.csv", &e))?;
    w.archives = root.archives();
    w.root_hash = root
        .finish()
        .map_err(|e| output_err("report.json root hash", &e))?;
    for name in ["netverify", "documents", "authentications", "files"] {
        for ext in ["csv", "parquet"] {
            if let Ok(m) = std::fs::metadata(out.join(format!("{name}.{ext}"))) {
                w.bytes_written += m.len();
            }
        }
    }
    Ok(w)
}

/// Progress: an indicatif bar on a terminal, a log line every 10 s otherwise, nothing when quiet.
#[derive(Clone)]
struct Progress {
    inner: Option<Arc<ProgressInner>>,
}

struct ProgressInner {
    bar: Option<indicatif::ProgressBar>,
    exported: AtomicU64,
    failed: AtomicU64,
    total: u64,
    stop: CancellationToken,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Self {
        if quiet {
            return Progress { inner: None };
        }
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let inner = Arc::new(ProgressInner {
            bar,
            exported: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            total,
            stop: CancellationToken::new(),
        });
        if inner.bar.is_none() {
            let i = inner.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = i.stop.cancelled() => break,
                    }
                    tracing::info!(
                        exported = i.exported.load(Ordering::Relaxed),
                        failed = i.failed.load(Ordering::Relaxed),
                        total = i.total,
                        "progress"
                    );
                }
            });
        }
        Progress { inner: Some(inner) }
    }

    fn bump(&self, exported: bool) {
        if let Some(i) = &self.inner {
            let (e, f) = if exported {
                (
                    i.exported.fetch_add(1, Ordering::Relaxed) + 1,
                    i.failed.load(Ordering::Relaxed),
                )
            } else {
                (
                    i.exported.load(Ordering::Relaxed),
                    i.failed.fetch_add(1, Ordering::Relaxed) + 1,
                )
            };
            if let Some(bar) = &i.bar {
                bar.set_position(e + f);
                bar.set_message(format!("exported {e} failed {f}"));
            }
        }
    }

    fn exported(&self) {
        self.bump(true);
    }

    fn failed(&self) {
        self.bump(false);
    }

    fn already(&self) {
        self.bump(true);
    }

    fn finish(&self) {
        if let Some(i) = &self.inner {
            i.stop.cancel();
            if let Some(bar) = &i.bar {
                bar.finish_and_clear();
            }
        }
    }
}
