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
use crate::input::{Item, ItemIter, Items};
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
    let mut feed = Feed {
        iter: items.iter(),
        exhausted: false,
        again: None,
        carried: Vec::new(),
        plan,
    };
    let mut tasks = JoinSet::new();
    // Transient failures of the first round, with their rows; tried again once the input is done.
    let mut held: Vec<Held> = Vec::new();
    loop {
        while tasks.len() < max_live {
            let Some(next) = feed.next(&ctx, tx, progress).await else {
                break;
            };
            start(&mut tasks, &ctx, next, tx, progress);
        }
        match tasks.join_next().await {
            Some(Ok(Some(first_try))) => held.push(first_try),
            Some(Ok(None)) => {}
            Some(Err(_)) => {}
            None if feed.again.is_none() && !held.is_empty() && !ctx.shutdown.is_stopping() => {
                tracing::info!(
                    references = held.len(),
                    "trying again the references that failed for a transient reason (network \
                     failures, 5xx)"
                );
                feed.again = Some(std::mem::take(&mut held).into_iter());
            }
            None => break,
        }
    }
    if !feed.carried.is_empty() {
        let _ = tx
            .send(Done::Carried(std::mem::take(&mut feed.carried)))
            .await;
    }
    // Stopped before their second try: the first try's rows stand.
    let unsent = held
        .into_iter()
        .chain(feed.again.take().into_iter().flatten())
        .map(|(_, _, row)| row);
    for row in unsent {
        let done = Done::Failed(row);
        progress.record(&done);
        let _ = tx.send(done).await;
    }
    feed.iter.unread()
}

/// A transient failure of the first round: the item, whether it was a single poll, its row.
type Held = (Item, bool, FailureRow);

/// A reference to start: the item, whether it is a single poll, and the first try's row when
/// this is the second.
type Next = (Item, bool, Option<FailureRow>);

/// Where the loop's next reference comes from: the input in order (what the plan carries is
/// handed to the sink on the way, in batches), then, once, the transient failures held back.
struct Feed<'a> {
    iter: ItemIter,
    exhausted: bool,
    again: Option<std::vec::IntoIter<Held>>,
    carried: Vec<FailureRow>,
    plan: &'a ResumePlan,
}

impl Feed<'_> {
    /// The next reference to start; `None` when there is none for now (the input is done, the
    /// held ones are not due yet or are done, or the run is stopping before their second try).
    async fn next(
        &mut self,
        ctx: &TaskContext,
        tx: &mpsc::Sender<Done>,
        progress: &Progress,
    ) -> Option<Next> {
        if let Some(again) = self.again.as_mut() {
            if ctx.shutdown.is_stopping() {
                return None;
            }
            return again
                .next()
                .map(|(item, poll_once, row)| (item, poll_once, Some(row)));
        }
        while !self.exhausted {
            let item = match self.iter.next() {
                None => {
                    self.exhausted = true;
                    return None;
                }
                Some(Ok(item)) => item,
                Some(Err(e)) => {
                    // The spool cannot be read back: stop like a full disk, reading no further.
                    ctx.shutdown
                        .abort(StopReason::Fatal(RunError::Input(e).to_string()));
                    self.exhausted = true;
                    return None;
                }
            };
            match self.plan.step(&item) {
                Step::Carry(row) => {
                    progress.failed();
                    self.carried.push(row);
                    if self.carried.len() == CARRIED_BATCH {
                        let batch = std::mem::take(&mut self.carried);
                        let _ = tx.send(Done::Carried(batch)).await;
                    }
                }
                Step::PollOnce => return Some((item, true, None)),
                Step::Fetch => return Some((item, false, None)),
            }
        }
        None
    }
}

/// Starts one reference's task. Each task hands its result to the sink itself, as it finishes
/// (nothing waits in the task set); only a first try's transient failure comes back, to be held.
fn start(
    tasks: &mut JoinSet<Option<Held>>,
    ctx: &Arc<TaskContext>,
    (item, poll_once, first_try): Next,
    tx: &mpsc::Sender<Done>,
    progress: &Progress,
) {
    let (ctx, tx, progress) = (ctx.clone(), tx.clone(), progress.clone());
    progress.started();
    tasks.spawn(async move {
        let done = one_reference(&ctx, item.clone(), poll_once).await;
        progress.settled();
        let done = match (done, first_try) {
            (Done::Failed(row), None) if is_transient(&row) && !ctx.shutdown.is_stopping() => {
                return Some((item, poll_once, row));
            }
            // The run stopped before the second try got anywhere: the first try's row stands.
            (Done::NotStarted, Some(row)) => Done::Failed(row),
            (done, _) => done,
        };
        progress.record(&done);
        let _ = tx.send(done).await;
        None
    });
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
