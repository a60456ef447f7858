//! What a run does with each reference, given what the dataset's commits hold.
//!
//! [`from_catalogue`] reads the commits (blocking, off the async threads), or takes what a
//! [`Prefetch`] read of them while the input was being read: references some commit exported
//! leave the input at once — neither fetched nor their archives read — and the open follow-ups
//! (the latest failure of each reference no commit exported) come back.
//! [`ResumePlan`] is pure: no I/O, no clock of its own (the caller passes `now`), so every rule
//! is unit-tested here. Whether an archive no commit lists can be taken over is the location's
//! question, asked by the task when it starts a reference.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use std::sync::Arc;

use super::RunError;
use super::location::OutputLocation;
use crate::Kind;
use crate::dataset::catalogue::{Catalogue, CatalogueError, Recorded};
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
/// exported and returns the input and what the commits held. A [`Prefetch`] of the same
/// directory is used when the commits it read are still all there are.
pub async fn from_catalogue(
    location: &Arc<OutputLocation>,
    mut input: InputList,
    prefetch: Option<Prefetch>,
) -> Result<(InputList, AtStart), RunError> {
    let location = location.clone();
    tokio::task::spawn_blocking(move || {
        let root = location.root();
        // A bucket's location reads from a scratch directory, never the prefetched path.
        let prefetched = prefetch.filter(|p| p.root == root).and_then(Prefetch::join);
        let commits = match prefetched {
            Some(read) if read.runs == current_runs(root)? => read,
            _ => Commits::read(root)?,
        };
        let spool = |e: std::io::Error| RunError::Input(e);
        let already = input.exclude(commits.exported).map_err(spool)?;
        let start = AtStart {
            runs: commits.runs,
            tables_with_parts: commits.tables_with_parts,
            open: commits.open,
            already,
        };
        Ok((input, start))
    })
    .await
    .map_err(|e| RunError::Input(std::io::Error::other(e)))?
}

/// What a run needs of the commits before it starts: the runs read, their tables, the open
/// follow-ups and every exported key, sorted.
struct Commits {
    runs: BTreeSet<String>,
    tables_with_parts: BTreeSet<String>,
    open: Vec<Recorded>,
    exported: spill::Sorted,
}

impl Commits {
    /// Reads every commit under `root` (blocking).
    fn read(root: &Path) -> Result<Self, RunError> {
        let dataset = |e: CatalogueError| RunError::Dataset(e.to_string());
        let catalogue = Catalogue::read(root).map_err(dataset)?;
        let mut exported = ExternalSort::new(root, spill::START_BUDGET);
        let open = catalogue
            .open_failures_seeing(|reference, kind| exported.push(&catalogue_key(reference, kind)))
            .map_err(dataset)?;
        Ok(Commits {
            runs: catalogue.commits().iter().map(|c| c.run.clone()).collect(),
            tables_with_parts: catalogue.tables_with_parts(),
            open,
            exported: exported.finish_on_disk().map_err(RunError::Input)?,
        })
    }
}

/// The runs of the commits under `root` now.
fn current_runs(root: &Path) -> Result<BTreeSet<String>, RunError> {
    let runs = crate::dataset::commit::list(root).map_err(|e| RunError::Dataset(e.to_string()))?;
    Ok(runs.into_iter().collect())
}

/// The commits of a local dataset read on a thread of their own while the run reads its input
/// (the two take about as long, and a rerun of a large input is mostly these two).
///
/// Reading is all it does: nothing is created, and the location's checks (links, modes, the
/// previous layout) come after, when the run opens it. The result is used only when the commits
/// are still the ones read; a commit published in between (another shard's, an upgrade's) means
/// they are read again. Any error means the same: the run's own read reports it.
#[derive(Clone)]
pub struct Prefetch {
    root: PathBuf,
    /// Taken by the first [`Prefetch::join`] (run options are cloned; one run uses it).
    handle: Arc<std::sync::Mutex<Option<Reading>>>,
}

type Reading = std::thread::JoinHandle<Result<Commits, RunError>>;

impl std::fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prefetch({})", self.root.display())
    }
}

impl Prefetch {
    /// Starts reading the commits of the dataset `dir`, when it is a local directory that holds
    /// commits (not through a link: the run refuses those); `None` otherwise.
    pub fn start(dir: &Path) -> Option<Prefetch> {
        if crate::store::BucketUrl::parse(dir).is_some() {
            return None;
        }
        let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        if !is_dir(dir) || !is_dir(&dir.join(crate::dataset::COMMITS_DIR)) {
            return None;
        }
        let root = dir.to_path_buf();
        let reading = root.clone();
        let handle = std::thread::Builder::new()
            .name("read-commits".into())
            .spawn(move || Commits::read(&reading))
            .ok()?;
        Some(Prefetch {
            root,
            handle: Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    /// True once the reading has ended.
    #[cfg(test)]
    fn is_finished(&self) -> bool {
        let handle = self.handle.lock().unwrap();
        handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// What was read; `None` when reading failed.
    fn join(self) -> Option<Commits> {
        let handle = self.handle.lock().ok()?.take()?;
        handle.join().ok()?.ok()
    }
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

    /// The references left of `input` after [`from_catalogue`] of a dataset opened at `root`,
    /// and the runs it read.
    async fn left_after(
        root: &Path,
        input: &[u8],
        prefetch: Option<Prefetch>,
    ) -> (Vec<String>, BTreeSet<String>) {
        let location = OutputLocation::open_with(
            root,
            crate::output::fsmode::Modes::default(),
            Utc::now(),
            None,
            &Default::default(),
        )
        .unwrap();
        let input = crate::input::parse_input(input, "input", Kind::Netverify).unwrap();
        let (input, start) = from_catalogue(&location, input, prefetch).await.unwrap();
        let left = input.items.read_all().unwrap();
        (left.into_iter().map(|i| i.reference).collect(), start.runs)
    }

    /// A commit published between the prefetch and the location's opening (another shard's) is
    /// read too: the prefetch is only used while the commits are those it read.
    #[tokio::test]
    async fn a_prefetch_older_than_the_commits_is_not_used() {
        use crate::dataset::catalogue::tests::commit;
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = ("20261201T000000000Z-aaaa", "20261201T000001000Z-bbbb");
        commit(dir.path(), first, &["a", "b"], &[("c", "NOT_FOUND")], false);
        let prefetch = Prefetch::start(dir.path()).expect("a local dataset with commits");
        while !prefetch.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        commit(dir.path(), second, &["d"], &[], false);
        let (left, runs) = left_after(dir.path(), b"a\nb\nc\nd\ne\n", Some(prefetch)).await;
        assert_eq!(left, ["c", "e"], "d was exported by the later commit");
        assert_eq!(runs, BTreeSet::from([first.into(), second.into()]));
        // Without a prefetch, the same.
        let (left, _) = left_after(dir.path(), b"a\nb\nc\nd\ne\n", None).await;
        assert_eq!(left, ["c", "e"]);
    }

    /// A prefetch of the commits that are still all there are gives what reading them gives.
    #[tokio::test]
    async fn a_current_prefetch_excludes_what_the_commits_exported() {
        use crate::dataset::catalogue::tests::commit;
        let dir = tempfile::tempdir().unwrap();
        commit(
            dir.path(),
            "20261201T000000000Z-aaaa",
            &["a", "b"],
            &[],
            false,
        );
        commit(dir.path(), "20261201T000001000Z-bbbb", &["d"], &[], true);
        let prefetch = Prefetch::start(dir.path()).expect("a local dataset with commits");
        let (left, runs) = left_after(dir.path(), b"e\nd\nb\nf\na\n", Some(prefetch)).await;
        assert_eq!(left, ["e", "f"]);
        assert_eq!(runs.len(), 2);
    }

    #[test]
    fn no_prefetch_without_commits_or_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Prefetch::start(dir.path()).is_none(),
            "no commits directory"
        );
        assert!(Prefetch::start(&dir.path().join("missing")).is_none());
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("commits")).unwrap();
        assert!(
            Prefetch::start(dir.path()).is_none(),
            "a linked commits directory"
        );
        assert!(Prefetch::start(Path::new("s3://bucket/prefix")).is_none());
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
