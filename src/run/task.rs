//! One reference, start to finish: take over its archive if an earlier run completed it, else
//! fetch it through the guide's flow and write its archive off the async threads. The result is a
//! [`Done`] for the sink; a failure of the reference is a value, a failure of the disk or refused
//! credentials stops the run through [`Shutdown`].

use std::sync::Arc;

use crate::Kind;
use crate::fetch::{FetchFailure, FetchOutcome, Fetched, Fetcher};
use crate::input::Item;
use crate::output::archive::{self, ArchiveKey, ArchivedFile, ProvenanceMeta, WrittenArchive};
use crate::output::failures::FailureRow;

use super::Clock;
use super::location::OutputLocation;
use super::shutdown::{Shutdown, StopReason};

/// What the fetch side hands to the sink.
#[derive(Debug)]
pub enum Done {
    /// Exported now (`fresh`) or by an earlier run whose archive was taken over.
    Exported {
        /// The reference.
        reference: String,
        /// Its family.
        kind: Kind,
        /// Its `/data` (Authentication: details) response, for the table row.
        data: serde_json::Value,
        /// Its archive; `None` when the job writes no archives.
        archive: Option<WrittenArchive>,
        /// The files in the archive.
        files: Vec<ArchivedFile>,
        /// Fetched by this run.
        fresh: bool,
    },
    /// Not exported: its `failures.csv` row.
    Failed(FailureRow),
    /// Not reached before the run stopped.
    NotStarted,
}

/// What every reference's task shares.
pub struct TaskContext {
    /// The guide's flow.
    pub fetcher: Fetcher,
    /// Where archives go.
    pub location: Arc<OutputLocation>,
    /// Tool version and job sha256 for each archive's provenance.
    pub meta: ProvenanceMeta,
    /// `[output] archives`.
    pub write_archives: bool,
    /// `[polling] daily_retry`.
    pub daily_retry: bool,
    /// The run's shutdown state.
    pub shutdown: Shutdown,
    /// The run's clock (for `next_attempt_after`).
    pub clock: Clock,
    /// Encrypts archive entries (and opens them on resume) when set.
    pub archive_key: Option<ArchiveKey>,
}

/// One reference: reuse its archive if an earlier run completed it, else fetch and archive it.
/// `poll_once`: a due `PENDING` gets one status call, not a new round of the schedule.
pub async fn one_reference(ctx: &Arc<TaskContext>, item: Item, poll_once: bool) -> Done {
    // An archive that does not verify is not deleted: a new one replaces it atomically only once
    // every file is fetched again. If the API no longer has the transaction, the old file is all
    // there is.
    if let Some(done) = reuse(ctx, &item).await {
        return done;
    }
    if ctx.shutdown.is_stopping() {
        return Done::NotStarted;
    }
    let Item { reference, kind } = item;
    let outcome = if poll_once {
        ctx.fetcher.fetch_with_polls(&reference, kind, 0).await
    } else {
        ctx.fetcher.fetch(&reference, kind).await
    };
    match outcome {
        FetchOutcome::Fetched(f) => archive_fetched(ctx, f).await,
        FetchOutcome::Failed(f) => {
            tracing::info!(reference = %reference, stage = f.stage, error = f.error, "not exported: {}", f.message);
            let mut row = failure_row(&reference, kind, &f);
            if row.error == "PENDING" {
                // The guide allows one more retrieval a day once the schedule is used up.
                row.next_attempt_after = ctx
                    .daily_retry
                    .then(|| (ctx.clock)() + chrono::Duration::days(1));
            }
            Done::Failed(row)
        }
        FetchOutcome::Denied(f) => {
            if ctx.shutdown.abort(StopReason::CredentialsRefused) {
                tracing::error!("the API refused the credentials ({}); stopping", f.message);
            }
            Done::Failed(failure_row(&reference, kind, &f))
        }
        FetchOutcome::Cancelled => Done::NotStarted,
    }
}

/// The archive an earlier run left, when it checks out (read off the async threads).
async fn reuse(ctx: &Arc<TaskContext>, item: &Item) -> Option<Done> {
    let task_ctx = ctx.clone();
    let it = item.clone();
    let reused = tokio::task::spawn_blocking(move || {
        task_ctx
            .location
            .reusable_archive(&it.reference, it.kind, task_ctx.archive_key.as_ref())
    })
    .await
    .ok()??;
    Some(Done::Exported {
        reference: item.reference.clone(),
        kind: item.kind,
        data: reused.data,
        files: reused.archive.files.clone(),
        archive: Some(reused.archive),
        fresh: false,
    })
}

/// Writes the archive of a fetched transaction; its concurrency slot is held until the archive
/// is on disk, so at most `concurrency` transactions' bodies are in memory.
async fn archive_fetched(ctx: &Arc<TaskContext>, f: Fetched) -> Done {
    let Fetched {
        reference,
        kind,
        entries,
        data,
        slot,
    } = f;
    if !ctx.write_archives {
        return Done::Exported {
            reference,
            kind,
            data,
            archive: None,
            files: Vec::new(),
            fresh: true,
        };
    }
    let task_ctx = ctx.clone();
    let r = reference.clone();
    let written = tokio::task::spawn_blocking(move || {
        let key = task_ctx.archive_key.as_ref();
        task_ctx
            .location
            .write_archive(&r, &entries, &task_ctx.meta, key)
    })
    .await;
    drop(slot);
    match written {
        Ok(Ok(w)) => Done::Exported {
            reference,
            kind,
            data,
            files: w.files.clone(),
            archive: Some(w),
            fresh: true,
        },
        Ok(Err(
            e @ (archive::ArchiveError::DuplicateEntry { .. }
            | archive::ArchiveError::InvalidReference { .. }),
        )) => {
            // The API's data cannot be archived as given (two images claiming one name): a
            // failure of this reference, not of the disk.
            tracing::warn!(reference = %reference, "not exported: {e}");
            let failure = FetchFailure {
                stage: "archive",
                http_status: None,
                error: "BAD_RESPONSE",
                attempts: 1,
                next_attempt_after: None,
                message: e.to_string(),
            };
            Done::Failed(failure_row(&reference, kind, &failure))
        }
        Ok(Err(e)) => {
            // A disk that refuses a write (full, read-only, failed fsync) refuses the next one
            // too: stop cleanly rather than turn every reference into a failure. The temporary
            // file is gone; the reference is fetched again next run.
            if ctx.shutdown.abort(StopReason::Fatal(e.to_string())) {
                tracing::error!("stopping: {e}");
            }
            Done::NotStarted
        }
        Err(_) => Done::NotStarted,
    }
}

/// The `failures.csv` row of a failed flow.
pub fn failure_row(reference: &str, kind: Kind, f: &FetchFailure) -> FailureRow {
    FailureRow {
        reference: reference.to_string(),
        kind,
        stage: f.stage.to_string(),
        http_status: f.http_status,
        error: f.error.to_string(),
        attempts: f.attempts,
        next_attempt_after: f.next_attempt_after,
    }
}
