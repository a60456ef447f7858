//! One reference, start to finish: take over its archive if an earlier run completed it, else
//! fetch it through the guide's flow and write its archive off the async threads. The result is a
//! [`Done`] for the sink; a failure of the reference is a value, a failure of the disk or refused
//! credentials stops the run through [`Shutdown`].

use std::sync::Arc;

use crate::Kind;
use crate::fetch::{FetchFailure, FetchOutcome, Fetched, Fetcher, OpenArchive};
use crate::flatten::pii::{Pii, Pseudonymiser};
use crate::input::Item;
use crate::outcome::{ErrorCode, Stage};
use crate::output::archive::{
    self, AgeRecipients, ArchiveKey, ArchiveMode, ArchivedFile, ProvenanceMeta, WrittenArchive,
};
use crate::output::failures::FailureRow;

use super::Clock;
use super::location::{Existing, OutputLocation};
use super::shutdown::{Shutdown, StopReason};
use super::takeover::TakeoverRecord;

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
        /// The table row already profiled, without its bookkeeping columns: an age archive taken
        /// over from its takeover record (`data` is then `Null`).
        row: Option<Vec<crate::flatten::Cell>>,
        /// Its archive; `None` when the job writes no archives.
        archive: Option<WrittenArchive>,
        /// The files in the archive.
        files: Vec<ArchivedFile>,
        /// Fetched by this run.
        fresh: bool,
    },
    /// Not exported: its `failures.csv` row.
    Failed(FailureRow),
    /// Not attempted: earlier commits' failures that are not due (each row stays its commit's),
    /// handed over in batches (a rerun carries thousands; one hand-over each would wake the
    /// writer thread as often).
    Carried(Vec<FailureRow>),
    /// Not reached before the run stopped.
    NotStarted,
    /// Its archive belongs to another run (live, or committed meanwhile): not this run's.
    OtherRun,
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
    /// Encrypts every finished archive to these recipients with age when set.
    pub age: Option<AgeRecipients>,
    /// The job's archive mode: an archive of another mode stops the run (exit 2).
    pub archive_mode: ArchiveMode,
    /// The tables' PII profile and its key: an age archive's takeover record holds its row so.
    pub pii: (Pii, Option<Pseudonymiser>),
    /// The job file, for the message of a mode mismatch.
    pub job_path: std::path::PathBuf,
}

/// One reference: take over its archive if a dead run left it, else fetch and archive it.
/// `poll_once`: a due `PENDING` gets one status call, not a new round of the schedule.
pub async fn one_reference(ctx: &Arc<TaskContext>, item: Item, poll_once: bool) -> Done {
    if let Some(done) = existing(ctx, &item).await {
        return done;
    }
    if ctx.shutdown.is_stopping() {
        return Done::NotStarted;
    }
    let Item { reference, kind } = item;
    // The archive is written as the responses arrive, into a temporary file that only
    // `finish` puts under the final name.
    let open = || {
        let key = ctx.archive_key.clone();
        ctx.location
            .open_archive(&reference, &ctx.meta, key)
            .map(|w| w.with_age(ctx.age.clone()))
    };
    let open: Option<OpenArchive<'_>> = ctx.write_archives.then_some(&open);
    let outcome = if poll_once {
        ctx.fetcher
            .fetch_with_polls(&reference, kind, 0, open)
            .await
    } else {
        ctx.fetcher.fetch(&reference, kind, open).await
    };
    match outcome {
        FetchOutcome::Fetched(f) => archive_fetched(ctx, f).await,
        FetchOutcome::Archive(e) => {
            archived(ctx, reference, kind, serde_json::Value::Null, Err(e)).await
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
            if ctx.shutdown.abort(StopReason::CredentialsRefused) {
                tracing::error!("the API refused the credentials ({}); stopping", f.message);
            }
            Done::Failed(failure_row(&reference, kind, &f))
        }
        FetchOutcome::Cancelled => Done::NotStarted,
    }
}

/// What an archive already under the reference's final name means (read off the async
/// threads): `None` when there is none and the reference must be fetched.
async fn existing(ctx: &Arc<TaskContext>, item: &Item) -> Option<Done> {
    let task_ctx = ctx.clone();
    let it = item.clone();
    let found = tokio::task::spawn_blocking(move || {
        let key = task_ctx.archive_key.as_ref();
        task_ctx.location.existing_archive_in(
            &it.reference,
            it.kind,
            key,
            task_ctx.archive_mode,
            task_ctx.pii.0,
        )
    })
    .await
    .ok()?;
    match found {
        Existing::Absent => None,
        Existing::Ours(checked) => {
            let checked = *checked;
            Some(Done::Exported {
                reference: item.reference.clone(),
                kind: item.kind,
                data: checked.data,
                row: None,
                files: checked.archive.files.clone(),
                archive: Some(checked.archive),
                fresh: false,
            })
        }
        Existing::OursSealed(taken) => {
            let (archive, cells) = *taken;
            Some(Done::Exported {
                reference: item.reference.clone(),
                kind: item.kind,
                data: serde_json::Value::Null,
                row: Some(cells),
                files: archive.files.clone(),
                archive: Some(archive),
                fresh: false,
            })
        }
        Existing::Mismatch { setting, found } => {
            // Never fetched again and replaced: the run stops (exit 2) and says which setting
            // differs.
            let message = super::mode_mismatch(&ctx.job_path, ctx.archive_mode, setting, &found);
            if ctx.shutdown.abort(StopReason::Mismatch(message.clone())) {
                tracing::error!("stopping: {message}");
            }
            Some(Done::NotStarted)
        }
        Existing::OtherRun(owner) => {
            tracing::info!(reference = %item.reference, owner = %owner, "its archive belongs to another run; left to it");
            Some(Done::OtherRun)
        }
        Existing::Unreadable(error) => {
            // Not a finding about the archive: a transient failure of the store.
            // The reference fails as NETWORK, retried later in this run and by the next one; the
            // archive is left as it is.
            tracing::warn!(reference = %item.reference, "{} could not be read back to be checked ({error}); it is left as it is and checked again by a later try", archive_name(ctx, item).display());
            Some(archive_failed(item, ErrorCode::Network, error))
        }
        Existing::Damaged(findings) => {
            // Never overwritten or deleted: it may be all there is of the transaction.
            tracing::warn!(reference = %item.reference, "{} exists but does not check out ({findings}); it is never replaced: move it aside and run again", archive_name(ctx, item).display());
            Some(archive_failed(item, ErrorCode::BadResponse, findings))
        }
    }
}

/// Where the archive of `item` is, as the location names it (for messages).
fn archive_name(ctx: &TaskContext, item: &Item) -> std::path::PathBuf {
    ctx.location.name().join(archive::layout::relative_path_in(
        &item.reference,
        ctx.archive_mode,
    ))
}

/// `item` fails at the archive stage with `error`, its archive left as it is.
fn archive_failed(item: &Item, error: ErrorCode, message: String) -> Done {
    let failure = FetchFailure {
        stage: Stage::Archive,
        http_status: None,
        error,
        attempts: 0,
        next_attempt_after: None,
        message,
    };
    Done::Failed(failure_row(&item.reference, item.kind, &failure))
}

/// Finishes the archive of a fetched transaction (its responses are in it already):
/// `provenance.json`, the manifest, fsync, final name (the name made durable by the commit's
/// fsync of `archives/`, [`OutputLocation::write_commit`]). The concurrency slot is held until
/// the archive is on disk, so at most `concurrency` archives are being finished at once.
async fn archive_fetched(ctx: &Arc<TaskContext>, f: Fetched) -> Done {
    let Fetched {
        reference,
        kind,
        archive,
        data,
        slot,
        ..
    } = f;
    let Some(archive) = archive else {
        return Done::Exported {
            reference,
            kind,
            data,
            row: None,
            archive: None,
            files: Vec::new(),
            fresh: true,
        };
    };
    let written = if ctx.age.is_some() {
        // An age archive: its takeover record (the facts a later run needs to list it without
        // opening it) is in the run's staging area before the archive has its final name.
        let (task_ctx, reference, data) = (ctx.clone(), reference.clone(), data.clone());
        tokio::task::spawn_blocking(move || {
            let sealed = archive.seal()?;
            let record = TakeoverRecord::new(
                task_ctx.location.run().as_str(),
                &reference,
                kind,
                &data,
                &sealed.written(),
                (task_ctx.pii.0, task_ctx.pii.1.as_ref()),
            );
            let relative = super::takeover::relative(task_ctx.location.run().as_str(), &reference);
            task_ctx
                .location
                .write_takeover_record(&record)
                .map_err(|source| archive::ArchiveError::Io {
                    action: "writing the takeover record",
                    path: relative.into(),
                    source,
                })?;
            sealed.publish_unsynced()
        })
        .await
    } else {
        tokio::task::spawn_blocking(move || archive.finish_unsynced()).await
    };
    drop(slot);
    match written {
        Ok(Ok(w)) => {
            // In a bucket: uploaded now (bounded uploads in flight), while other references
            // are fetched.
            let published = ctx.location.publish_archive(w).await;
            archived(ctx, reference, kind, data, published).await
        }
        Ok(result) => archived(ctx, reference, kind, data, result).await,
        Err(_) => Done::NotStarted,
    }
}

/// What an archive write means for the reference.
async fn archived(
    ctx: &Arc<TaskContext>,
    reference: String,
    kind: Kind,
    data: serde_json::Value,
    written: Result<archive::WrittenArchive, archive::ArchiveError>,
) -> Done {
    match written {
        Ok(w) => Done::Exported {
            reference,
            kind,
            data,
            row: None,
            files: w.files.clone(),
            archive: Some(w),
            fresh: true,
        },
        Err(archive::ArchiveError::AlreadyExists { .. }) => {
            // Another run published this reference's archive while this one fetched it.
            if ctx.age.is_some() {
                let (task_ctx, r) = (ctx.clone(), reference.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    task_ctx.location.remove_takeover_record(&r)
                })
                .await;
            }
            existing(ctx, &Item { reference, kind })
                .await
                .unwrap_or(Done::NotStarted)
        }
        Err(
            e @ (archive::ArchiveError::DuplicateEntry { .. }
            | archive::ArchiveError::InvalidReference { .. }),
        ) => {
            // The API's data cannot be archived as given (two images claiming one name): a
            // failure of this reference, not of the disk.
            tracing::warn!(reference = %reference, "not exported: {e}");
            let failure = FetchFailure {
                stage: Stage::Archive,
                http_status: None,
                error: ErrorCode::BadResponse,
                attempts: 1,
                next_attempt_after: None,
                message: e.to_string(),
            };
            Done::Failed(failure_row(&reference, kind, &failure))
        }
        Err(e) => {
            // A disk that refuses a write (full, read-only, failed fsync) refuses the next one
            // too: stop cleanly rather than turn every reference into a failure. The temporary
            // file is gone; the reference is fetched again next run.
            if ctx.shutdown.abort(StopReason::Fatal(e.to_string())) {
                tracing::error!("stopping: {e}");
            }
            Done::NotStarted
        }
    }
}

/// The `failures.csv` row of a failed flow.
pub fn failure_row(reference: &str, kind: Kind, f: &FetchFailure) -> FailureRow {
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
