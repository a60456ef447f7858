//! `failures.csv`, recomputed here from the failures parts of every commit (not with the
//! program's catalogue): the latest failure row of every (reference, kind), in commit order,
//! that no commit exported. A file that is instead exactly the open follow-ups as they were
//! before the latest commit is stale (a run stopped between its commit and the rebuild): a
//! warning, the next run rebuilds it. Anything else that differs is a finding.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Arc;

use super::{Loc, Verifier, VerifyReport, scan};
use crate::Kind;
use crate::dataset::FAILURES_CSV;
use crate::output::failures::HEADER;

/// (reference, kind as written).
type Key = (String, String);

/// The latest failure of a key: the commit, and stage, http_status, error, attempts,
/// next_attempt_after (normalised).
type Latest = (u32, Vec<String>);

/// Column names of the compared fields, in order.
const FIELDS: [&str; 5] = [
    "stage",
    "http_status",
    "error",
    "attempts",
    "next_attempt_after",
];

/// The failure rows of every commit, latest per key.
#[derive(Default)]
pub(super) struct Ledger {
    latest: HashMap<Key, Latest>,
    /// The keys the last commit wrote, and their latest row before it.
    before_last: HashMap<Key, Option<Latest>>,
    /// The index of the last commit.
    last: Option<u32>,
}

impl Ledger {
    /// Names the last commit (before any row is recorded).
    pub(super) fn set_last(&mut self, last: Option<u32>) {
        self.last = last;
    }

    /// One failures row of `commit`: reference, kind, the five fields, run.
    pub(super) fn record(&mut self, commit: u32, fields: &[String]) {
        let key = (fields[0].clone(), fields[1].clone());
        if self.last == Some(commit) && !self.before_last.contains_key(&key) {
            self.before_last
                .insert(key.clone(), self.latest.get(&key).cloned());
        }
        self.latest.insert(key, (commit, fields[2..7].to_vec()));
    }
}

/// `next_attempt_after` as epoch milliseconds when it is a timestamp, else as it is.
pub(super) fn normalise_time(text: &str) -> String {
    match crate::output::tables::parse_timestamp_ms(text) {
        Some(ms) if !text.is_empty() => ms.to_string(),
        _ => text.to_owned(),
    }
}

impl Verifier<'_> {
    /// Names the last commit to the ledger.
    pub(super) fn start_ledger(&mut self) {
        let last = self.commits.len().checked_sub(1).map(|i| i as u32);
        self.ledger.set_last(last);
    }

    fn exported_key(&self, key: &Key) -> Option<u32> {
        let kind = key.1.parse::<Kind>().ok()?;
        self.exported_by(&key.0, kind)
    }

    /// The open follow-up of `key` after every commit (`before_last`: before the last one).
    fn open(&self, key: &Key, before_last: bool) -> Option<&Latest> {
        let latest = if before_last {
            match self.ledger.before_last.get(key) {
                Some(before) => before.as_ref(),
                None => self.ledger.latest.get(key),
            }
        } else {
            self.ledger.latest.get(key)
        };
        let latest = latest?;
        match self.exported_key(key) {
            None => Some(latest),
            Some(c) if before_last && Some(c) == self.ledger.last => Some(latest),
            Some(_) => None,
        }
    }

    /// True when `rows` (failures.csv) are exactly the open follow-ups.
    fn matches(&self, rows: &HashMap<Key, (Loc, Vec<String>)>, before_last: bool) -> bool {
        rows.iter()
            .all(|(key, (_, fields))| self.open(key, before_last).is_some_and(|l| &l.1 == fields))
            && self
                .ledger
                .latest
                .keys()
                .chain(self.ledger.before_last.keys())
                .all(|key| self.open(key, before_last).is_none() || rows.contains_key(key))
    }

    pub(super) fn check_failures_csv(&self, report: &mut VerifyReport) {
        if self.commits.iter().all(|c| c.commit.is_none()) {
            return;
        }
        let path = self.dir.join(FAILURES_CSV);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                report.finding(FAILURES_CSV, "not a regular file");
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                report.warning(
                    FAILURES_CSV,
                    "missing: a run stopped before rebuilding it; the next run rebuilds it",
                );
                return;
            }
            Err(e) => {
                report.finding(FAILURES_CSV, format!("cannot be read: {e}"));
                return;
            }
        }
        let name: Arc<str> = FAILURES_CSV.into();
        let Some(header) = scan::header(&path, &name, report) else {
            return;
        };
        let found: Vec<&str> = header.columns.iter().map(|(n, _)| n.as_str()).collect();
        if found != HEADER {
            report.finding(
                FAILURES_CSV,
                format!(
                    "header is {}, expected {}",
                    found.join(","),
                    HEADER.join(",")
                ),
            );
            return;
        }
        let mut rows: HashMap<Key, (Loc, Vec<String>)> = HashMap::new();
        let mut count = 0;
        scan::scan(&path, &name, &HEADER, report, |report, loc, values| {
            count += 1;
            let fields = super::tables::failure_fields(&values);
            let key = (fields[0].clone(), fields[1].clone());
            if let Some((first, _)) = rows.get(&key) {
                report.finding(
                    loc.to_string(),
                    format!(
                        "reference {} ({}) duplicated: also at {first}",
                        key.0, key.1
                    ),
                );
                return;
            }
            rows.insert(key, (loc.clone(), fields[2..7].to_vec()));
        });
        report.failures = count;
        if self.matches(&rows, false) {
            return;
        }
        if let Some(last) = self.ledger.last
            && self.matches(&rows, true)
        {
            report.warning(
                FAILURES_CSV,
                format!(
                    "stale: the open follow-ups before {} (its run stopped between its commit and rebuilding failures.csv); the next run rebuilds it",
                    self.commits[last as usize].subject
                ),
            );
            return;
        }
        self.explain_failures(&rows, report);
    }

    /// Every row of `failures.csv` that is not an open follow-up as the commits say, and every
    /// open follow-up it leaves out.
    fn explain_failures(&self, rows: &HashMap<Key, (Loc, Vec<String>)>, report: &mut VerifyReport) {
        let mut sorted: Vec<(&Key, &(Loc, Vec<String>))> = rows.iter().collect();
        sorted.sort_by_key(|(_, (loc, _))| loc.n);
        for (key, (loc, fields)) in sorted {
            let (reference, kind) = key;
            if let Some(c) = self.exported_key(key) {
                report.finding(
                    loc.to_string(),
                    format!(
                        "reference {reference} ({kind}) was exported by commit {}: not an open follow-up",
                        self.commits[c as usize].run
                    ),
                );
                continue;
            }
            let Some((c, latest)) = self.ledger.latest.get(key) else {
                report.finding(
                    loc.to_string(),
                    format!("reference {reference} ({kind}): no commit records a failure of it"),
                );
                continue;
            };
            let differ: Vec<&str> = FIELDS
                .iter()
                .zip(fields.iter().zip(latest))
                .filter(|(_, (a, b))| a != b)
                .map(|(name, _)| *name)
                .collect();
            if !differ.is_empty() {
                report.finding(
                    loc.to_string(),
                    format!(
                        "reference {reference} ({kind}): {} differ{} from its latest failure row (commit {})",
                        differ.join(", "),
                        if differ.len() == 1 { "s" } else { "" },
                        self.commits[*c as usize].run
                    ),
                );
            }
        }
        let missing: BTreeSet<&Key> = self
            .ledger
            .latest
            .keys()
            .filter(|key| !rows.contains_key(*key) && self.open(key, false).is_some())
            .collect();
        for key in missing {
            let (c, _) = &self.ledger.latest[key];
            report.finding(
                FAILURES_CSV,
                format!(
                    "reference {} ({}) is missing: its latest failure (commit {}) is an open follow-up",
                    key.0,
                    key.1,
                    self.commits[*c as usize].run
                ),
            );
        }
    }
}
