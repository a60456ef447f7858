//! What a run does with each reference, given what the dataset's commits hold.
//!
//! [`from_catalogue`] reads the commits (blocking, off the async threads): references some
//! commit exported leave the input at once — neither fetched nor their archives read — and the
//! open follow-ups (the latest failure of each reference no commit exported) come back.
//! [`ResumePlan`] is pure: no I/O, no clock of its own (the caller passes `now`), so every rule
//! is unit-tested here. Whether an archive no commit lists can be taken over is the location's
//! question, asked by the task when it starts a reference.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use std::sync::Arc;

use super::RunError;
use super::location::OutputLocation;
use crate::Kind;
use crate::dataset::catalogue::Recorded;
use crate::input::{InputList, Item, catalogue_key};
use crate::outcome::ErrorCode;
use crate::output::failures::FailureRow;
use crate::spill::{self, ExternalSort};

/// What the dataset's commits held when the run started.
#[derive(Debug, Default)]
pub struct AtStart {
    /// The runs of the commits read.
    pub runs: BTreeSet<String>,
    /// The tables of which those commits list a part (a run that writes no row of them writes
    /// no empty part: the tables can already be read by glob).
    pub tables_with_parts: BTreeSet<String>,
    /// Their open follow-ups, each with the run that recorded it: with the commits published
    /// after the start, all that `failures.csv` is rebuilt from at the end of the run.
    pub open: Vec<Recorded>,
    /// References of the input some commit exported (removed from the input).
    pub already: u64,
}

/// Reads the dataset's commits: removes from `input` every (reference, kind) some commit
/// exported and returns the input and what the commits held.
pub async fn from_catalogue(
    location: &Arc<OutputLocation>,
    mut input: InputList,
) -> Result<(InputList, AtStart), RunError> {
    let location = location.clone();
    tokio::task::spawn_blocking(move || {
        let catalogue = location.catalogue()?;
        let mut exported = ExternalSort::new(location.root(), spill::START_BUDGET);
        let open = catalogue
            .open_failures_seeing(|reference, kind| exported.push(&catalogue_key(reference, kind)))
            .map_err(|e| RunError::Dataset(e.to_string()))?;
        let spool = |e: std::io::Error| RunError::Input(e);
        let already = input
            .exclude(exported.finish().map_err(spool)?)
            .map_err(spool)?;
        let start = AtStart {
            runs: catalogue.commits().iter().map(|c| c.run.clone()).collect(),
            tables_with_parts: catalogue.tables_with_parts(),
            open,
            already,
        };
        Ok((input, start))
    })
    .await
    .map_err(|e| RunError::Input(std::io::Error::other(e)))?
}

/// What to do with one reference of the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// An earlier failure that is not due: keep its row, send nothing to the API.
    Carry(FailureRow),
    /// `PENDING` past its `next_attempt_after`: one status call (the guide allows one retrieval
    /// a day once the schedule is used up), not a new round of the schedule.
    PollOnce,
    /// Everything else: the full flow (unless its archive is already complete).
    Fetch,
}

/// The resume rules applied to one run's input.
#[derive(Debug, Default)]
pub struct ResumePlan {
    carried: HashMap<(String, Kind), FailureRow>,
    poll_once: HashSet<(String, Kind)>,
}

impl ResumePlan {
    /// The plan from the rows of the existing `failures.csv`, at `now`. `retry_failed` also asks
    /// again for references an earlier run found missing (`NOT_FOUND`).
    pub fn new(
        earlier: impl IntoIterator<Item = FailureRow>,
        now: DateTime<Utc>,
        retry_failed: bool,
    ) -> Self {
        let mut plan = ResumePlan::default();
        for row in earlier {
            let key = (row.reference.clone(), row.kind);
            match row.error {
                ErrorCode::Pending if row.next_attempt_after.is_some_and(|t| t <= now) => {
                    plan.poll_once.insert(key);
                }
                // No `next_attempt_after` (daily_retry = false): carried until asked for again.
                ErrorCode::Pending => {
                    plan.carried.insert(key, row);
                }
                ErrorCode::NotFound if !retry_failed => {
                    plan.carried.insert(key, row);
                }
                _ => {}
            }
        }
        plan
    }

    /// The step for `item`.
    pub fn step(&self, item: &Item) -> Step {
        let key = (item.reference.clone(), item.kind);
        if let Some(row) = self.carried.get(&key) {
            Step::Carry(row.clone())
        } else if self.poll_once.contains(&key) {
            Step::PollOnce
        } else {
            Step::Fetch
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 7, 45, 0).unwrap()
    }

    fn row(reference: &str, kind: Kind, error: &str, next: Option<i64>) -> FailureRow {
        FailureRow {
            reference: reference.into(),
            kind,
            stage: crate::outcome::Stage::Status,
            http_status: None,
            error: error.parse().unwrap(),
            attempts: 10,
            next_attempt_after: next.map(|h| now() + chrono::Duration::hours(h)),
        }
    }

    fn item(reference: &str, kind: Kind) -> Item {
        Item {
            reference: reference.into(),
            kind,
        }
    }

    #[test]
    fn pending_is_carried_until_due_then_polled_once() {
        let earlier = vec![
            row("later", Kind::Netverify, "PENDING", Some(3)),
            row("due", Kind::Netverify, "PENDING", Some(-1)),
            row("exactly", Kind::Netverify, "PENDING", Some(0)),
            row("never", Kind::Netverify, "PENDING", None),
        ];
        let plan = ResumePlan::new(earlier.clone(), now(), false);
        assert_eq!(
            plan.step(&item("later", Kind::Netverify)),
            Step::Carry(earlier[0].clone())
        );
        assert_eq!(plan.step(&item("due", Kind::Netverify)), Step::PollOnce);
        assert_eq!(plan.step(&item("exactly", Kind::Netverify)), Step::PollOnce);
        assert_eq!(
            plan.step(&item("never", Kind::Netverify)),
            Step::Carry(earlier[3].clone())
        );
    }

    #[test]
    fn not_found_is_carried_unless_asked_again() {
        let earlier = vec![row("gone", Kind::Document, "NOT_FOUND", None)];
        let plan = ResumePlan::new(earlier.clone(), now(), false);
        assert_eq!(
            plan.step(&item("gone", Kind::Document)),
            Step::Carry(earlier[0].clone())
        );
        let retry = ResumePlan::new(earlier, now(), true);
        assert_eq!(retry.step(&item("gone", Kind::Document)), Step::Fetch);
    }

    #[test]
    fn other_failures_and_new_references_are_fetched() {
        let earlier = vec![
            row("net", Kind::Netverify, "NETWORK", None),
            row("http", Kind::Netverify, "HTTP_ERROR", None),
            row("bad", Kind::Netverify, "BAD_RESPONSE", None),
            row("foreign", Kind::Netverify, "FOREIGN_URL", None),
        ];
        let plan = ResumePlan::new(earlier, now(), false);
        for r in ["net", "http", "bad", "foreign", "new"] {
            assert_eq!(plan.step(&item(r, Kind::Netverify)), Step::Fetch, "{r}");
        }
    }

    #[test]
    fn a_reference_is_matched_with_its_kind() {
        let plan = ResumePlan::new(
            vec![row("same", Kind::Netverify, "NOT_FOUND", None)],
            now(),
            false,
        );
        assert_eq!(plan.step(&item("same", Kind::Authentication)), Step::Fetch);
        assert!(matches!(
            plan.step(&item("same", Kind::Netverify)),
            Step::Carry(_)
        ));
    }
}
