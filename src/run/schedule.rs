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
use crate::input::Items;

/// At most this many references are in flight per concurrency slot (waiting for a poll holds no
/// slot, so more references than slots are live), and never fewer than [`MIN_LIVE`].
pub const LIVE_PER_SLOT: usize = 8;
/// The floor of references in flight.
pub const MIN_LIVE: usize = 256;

/// The bound on references in flight for `concurrency` slots.
pub fn max_live(concurrency: usize) -> usize {
    (concurrency * LIVE_PER_SLOT).max(MIN_LIVE)
}

/// Drives every item of `items` to a [`Done`] sent on `tx`. Returns how many items could not be
/// read back from the input's temporary file (the run is then stopped as fatal): they are
/// counted as not started, never dropped.
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
    loop {
        while !exhausted && tasks.len() < max_live {
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
                    let _ = tx.send(Done::Carried(row)).await;
                    continue;
                }
                Step::PollOnce => true,
                Step::Fetch => false,
            };
            let (ctx, tx, progress) = (ctx.clone(), tx.clone(), progress.clone());
            tasks.spawn(async move {
                let done = one_reference(&ctx, item, poll_once).await;
                progress.record(&done);
                let _ = tx.send(done).await;
            });
        }
        if tasks.join_next().await.is_none() {
            break;
        }
    }
    iter.unread()
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
