//! The scheduling stream: every reference of the input, in order, through one loop that holds at
//! most `max_live` tasks. The same loop runs before and after a stop; once the run is stopping,
//! a task only does local work (carry the earlier failure, take over a complete archive) and
//! otherwise reports [`Done::NotStarted`], so an interrupted run keeps every row earlier runs
//! established and the tables it writes are complete, never shorter than before.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::RunError;
use super::progress::Progress;
use super::resume::{ResumePlan, Step};
use super::shutdown::StopReason;
use super::task::{Done, TaskContext, one_reference};
use crate::input::{Item, Items};
use crate::outcome::ErrorCode;
use crate::output::failures::FailureRow;

/// At most this many references are in flight per concurrency slot (waiting for a poll holds no
/// slot, so more references than slots are live), and never fewer than [`MIN_LIVE`].
pub const LIVE_PER_SLOT: usize = 8;
/// The floor of references in flight.
pub const MIN_LIVE: usize = 256;
/// Carried rows handed to the sink at once.
const CARRIED_BATCH: usize = 512;

/// The bound on references in flight for `concurrency` slots.
pub fn max_live(concurrency: usize) -> usize {
    (concurrency * LIVE_PER_SLOT).max(MIN_LIVE)
}

/// Drives every item of `items` to a [`Done`] sent on `tx`. Returns how many items could not be
/// read back from the input's temporary file (the run is then stopped as fatal): they are
/// counted as not started, never dropped.
///
/// A reference that failed for a transient reason ([`is_transient`]: a network failure or a 5xx,
/// after its retries) is held back and tried once more after the input is done, before the run
/// ends: an outage that outlasted its retries does not leave it to the next run. Its row is
/// the second try's; if the run stops first, the first try's.
pub async fn drive(
    ctx: Arc<TaskContext>,
    items: &Items,
    plan: &ResumePlan,
    tx: &mpsc::Sender<Done>,
    progress: &Progress,
    max_live: usize,
) -> u64 {
    let mut iter = items.iter();
    let mut exhausted = false;
    let mut tasks = JoinSet::new();
    // Transient failures of the first round, with their rows; tried again once the input is done.
    let mut held: Vec<(Item, bool, FailureRow)> = Vec::new();
    let mut again: Option<std::vec::IntoIter<(Item, bool, FailureRow)>> = None;
    let mut carried = Vec::new();
    loop {
        while tasks.len() < max_live {
            let (item, poll_once, first_try) = if let Some(again) = again.as_mut() {
                if ctx.shutdown.is_stopping() {
                    break;
                }
                match again.next() {
                    Some((item, poll_once, row)) => (item, poll_once, Some(row)),
                    None => break,
                }
            } else if exhausted {
                break;
            } else {
                let item = match iter.next() {
                    None => {
                        exhausted = true;
                        break;
                    }
                    Some(Ok(item)) => item,
                    Some(Err(e)) => {
                        // The spool cannot be read back: stop like a full disk, reading no further.
                        ctx.shutdown
                            .abort(StopReason::Fatal(RunError::Input(e).to_string()));
                        exhausted = true;
                        break;
                    }
                };
                let poll_once = match plan.step(&item) {
                    Step::Carry(row) => {
                        progress.failed();
                        carried.push(row);
                        if carried.len() == CARRIED_BATCH {
                            let _ = tx.send(Done::Carried(std::mem::take(&mut carried))).await;
                        }
                        continue;
                    }
                    Step::PollOnce => true,
                    Step::Fetch => false,
                };
                (item, poll_once, None)
            };
            let (ctx, tx, progress) = (ctx.clone(), tx.clone(), progress.clone());
            progress.started();
            // Each task hands its result to the sink itself, as it finishes (nothing waits in
            // the task set); only a first try's transient failure comes back here, to be held.
            tasks.spawn(async move {
                let done = one_reference(&ctx, item.clone(), poll_once).await;
                progress.settled();
                let done = match (done, first_try) {
                    (Done::Failed(row), None)
                        if is_transient(&row) && !ctx.shutdown.is_stopping() =>
                    {
                        return Some((item, poll_once, row));
                    }
                    // The run stopped before the second try got anywhere: the first try's row
                    // stands.
                    (Done::NotStarted, Some(row)) => Done::Failed(row),
                    (done, _) => done,
                };
                progress.record(&done);
                let _ = tx.send(done).await;
                None
            });
        }
        match tasks.join_next().await {
            Some(Ok(Some(first_try))) => held.push(first_try),
            Some(Ok(None)) => {}
            Some(Err(_)) => {}
            None if again.is_none() && !held.is_empty() && !ctx.shutdown.is_stopping() => {
                tracing::info!(
                    references = held.len(),
                    "trying again the references that failed for a transient reason (network \
                     failures, 5xx)"
                );
                again = Some(std::mem::take(&mut held).into_iter());
            }
            None => break,
        }
    }
    if !carried.is_empty() {
        let _ = tx.send(Done::Carried(carried)).await;
    }
    // Stopped before their second try: the first try's rows stand.
    let unsent = held
        .into_iter()
        .chain(again.into_iter().flatten())
        .map(|(_, _, row)| row);
    for row in unsent {
        let done = Done::Failed(row);
        progress.record(&done);
        let _ = tx.send(done).await;
    }
    iter.unread()
}

/// A failure that says more about the API at that moment than about the reference: a network
/// failure or a 5xx, after the request's retries.
pub fn is_transient(row: &FailureRow) -> bool {
    match row.error {
        ErrorCode::Network => true,
        ErrorCode::HttpError => row.http_status.is_some_and(|s| (500..=599).contains(&s)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_references_are_eight_per_slot_with_a_floor() {
        assert_eq!(max_live(1), 256);
        assert_eq!(max_live(32), 256);
        assert_eq!(max_live(33), 264);
        assert_eq!(max_live(100), 800);
    }
}
