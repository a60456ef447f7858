//! The run's last stage: the commit record (the publish step: parts the commit does not list are
//! not part of the dataset), then the dataset's `failures.csv` (the open follow-ups of the
//! run's start, updated by the commits published since), and
//! `report.json` and `report.html` for the latest run (the page also sums up every commit).

use std::sync::Arc;

use super::RunError;
use super::location::OutputLocation;
use super::resume::AtStart;
use super::sink::Written;
use crate::dataset::catalogue::Catalogue;
use crate::dataset::commit::{
    self as commit_record, ArchivesRecord, COMMIT_FORMAT, Commit, CsvFormulas, OutputRecord,
};
use crate::output::report::{ROOT_HASH_METHOD, Report};
use crate::output::report_html::{self, CommitSummary, FollowUps};
use crate::output::signing::{self, CommitSigner};

/// Publishes the run: commit, then `failures.csv` and `report.json`, then `report.html`
/// (blocking work off the async threads).
pub async fn publish(
    location: &Arc<OutputLocation>,
    report: &Report,
    written: &Written,
    start: AtStart,
    signer: Option<Arc<CommitSigner>>,
) -> Result<(), RunError> {
    let commit = Commit {
        format: COMMIT_FORMAT.to_string(),
        run: location.run().to_string(),
        report: serde_json::to_value(report).map_err(|e| RunError::Output {
            what: "the commit record".into(),
            message: e.to_string(),
        })?,
        parts: written.parts.clone(),
        archives: ArchivesRecord {
            count: written.archives,
            root_hash: written.root_hash.clone(),
            root_hash_method: ROOT_HASH_METHOD.to_string(),
        },
        output: OutputRecord {
            csv_formulas: if written.csv_neutralise_formulas {
                CsvFormulas::Neutralised
            } else {
                CsvFormulas::Verbatim
            },
            pii: written.pii,
            archive_mode: Some(written.archive_mode),
        },
    };
    let location = location.clone();
    let report_json = report_value(report)?;
    tokio::task::spawn_blocking(move || {
        if let Some(signer) = signer {
            let output = |e: std::io::Error| RunError::Output {
                what: format!("commits/{}.json.sig", commit.run),
                message: e.to_string(),
            };
            let signature = signer.sign(&commit.bytes().map_err(output)?);
            signing::write_signature(location.root(), &commit.run, &signature, location.modes())
                .map_err(output)?;
        }
        location.write_commit(&commit)?;
        // What follows is derived from the commits, each file replaced whole: report.json is
        // written beside the rebuild of failures.csv (their fsyncs overlap).
        std::thread::scope(|scope| {
            let report = scope.spawn(|| location.write_report_value(&report_json));
            let follow_ups = write_failures(&location, start);
            let report = report
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let (follow_ups, ()) = (follow_ups?, report?);
            let commits = commit_summaries(location.root())?;
            location.write_report_html(&report_html::render(&report_json, &commits, &follow_ups))
        })
    })
    .await
    .map_err(|e| RunError::Output {
        what: "the commit".into(),
        message: e.to_string(),
    })?
}

/// Rebuilds `failures.csv`: the open follow-ups at the start, updated by the commits published
/// since (this one and any a concurrent shard published meanwhile; the dataset is not read
/// again). Returns the page's summary of them.
fn write_failures(location: &OutputLocation, start: AtStart) -> Result<FollowUps, RunError> {
    let since = Catalogue::read_except(location.root(), &start.runs)
        .map_err(|e| RunError::Dataset(e.to_string()))?;
    let mut follow_ups = FollowUps::default();
    location.write_failures(|w| {
        since
            .for_each_open_failure_after(start.open, location.root(), |row, run| {
                follow_ups.add(row);
                w.write(row, run)
            })
            .map(drop)
            .map_err(|e| RunError::Dataset(e.to_string()))
    })?;
    Ok(follow_ups)
}

fn report_value(report: &Report) -> Result<serde_json::Value, RunError> {
    serde_json::to_value(report).map_err(|e| RunError::Output {
        what: "report.json".into(),
        message: e.to_string(),
    })
}

/// A few numbers of every commit of the dataset, in run order, for `report.html` (each commit is
/// read and dropped: memory holds the summaries only).
fn commit_summaries(root: &std::path::Path) -> Result<Vec<CommitSummary>, RunError> {
    let dataset = |e: crate::dataset::commit::CommitError| RunError::Dataset(e.to_string());
    commit_record::list(root)
        .map_err(dataset)?
        .iter()
        .map(|run| {
            Commit::read(&commit_record::path(root, run))
                .map(|c| CommitSummary::of(&c))
                .map_err(dataset)
        })
        .collect()
}
