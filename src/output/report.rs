//! `report.json`: the run summary an auditor keeps. Includes a root hash over every archive's
//! sha256 in reference order, so it can be shown later that no archive was swapped or dropped.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::timeline::{LatencySummary, Timeline};
use crate::spill::{self, ExternalSort};

/// The whole report, serialised as `report.json` (and as the `report` of the run's commit).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always `jumio-export`.
    pub tool: &'static str,
    /// `CARGO_PKG_VERSION`.
    pub tool_version: &'static str,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// When the run ended.
    pub finished_at: String,
    /// What the run did, as its fields (the JSON object is flat).
    #[serde(flatten)]
    pub facts: RunFacts,
    /// How `root_hash` is computed, for the auditor.
    pub root_hash_method: &'static str,
}

/// Outcome counts.
#[derive(Debug, Default, Serialize)]
pub struct Outcomes {
    /// References in the input (after de-duplication and sharding, including invalid ones).
    pub references: u64,
    /// Exported by this run.
    pub exported: u64,
    /// Already complete from an earlier run; not fetched again.
    pub already_exported: u64,
    /// Not exported (each has a row in failures.csv).
    pub failed: u64,
    /// Not reached because the run was interrupted.
    pub not_started: u64,
    /// Left to another run that owns their archive (a live run, or one that committed meanwhile).
    pub other_run: u64,
    /// Duplicate lines dropped from the input.
    pub duplicates: u64,
    /// Failures by error code.
    pub failures_by_error: BTreeMap<String, u64>,
}

/// Requests to a bucket.
#[derive(Debug, Default, Serialize)]
pub struct StoreRequests {
    /// Every attempt sent, retries included.
    pub total: u64,
    /// Attempts that failed transiently (no answer, 5xx, 429): each was retried, or was the
    /// last of its bounded retries.
    pub retries: u64,
}

/// Request statistics.
#[derive(Debug, Default, Serialize)]
pub struct Requests {
    /// Every attempt sent.
    pub total: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// 429 answers.
    pub too_many_requests: u64,
    /// Seconds requests waited after 429s before they were sent again, summed over requests.
    pub throttled_seconds: f64,
    /// Body bytes received.
    pub bytes_received: u64,
    /// Outages of the API the job paused for (every request failing: see `api::breaker`).
    pub outage_pauses: u64,
    /// Seconds the job spent paused for outages, in all.
    pub outage_paused_seconds: f64,
    /// `{endpoint: {status: count}}`; status 0 = no response (network error).
    pub by_endpoint: BTreeMap<String, BTreeMap<String, u64>>,
    /// The rate limiter's configured ceiling for this run (after `--rate` and the shard's
    /// share), in requests per second; `None` when the run sent nothing through a limiter.
    pub limit_per_second: Option<f64>,
    /// Requests, 429s, retries and failures per time bucket since the run started.
    pub timeline: TimelineReport,
    /// Latency from sending a request to its response headers (or its failure), per endpoint.
    pub latency_ms: BTreeMap<String, LatencySummary>,
}

/// [`crate::api::timeline::Timeline`] as the report stores it: one array per series, element
/// `i` covering seconds `[i × bucket_seconds, (i + 1) × bucket_seconds)` after the start.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct TimelineReport {
    /// Seconds each element spans (1, doubled whenever a long run needs more than 600).
    pub bucket_seconds: u64,
    /// Requests sent (each attempt), by the time they were answered or failed.
    pub requests: Vec<u64>,
    /// Of them, answered 429.
    pub too_many_requests: Vec<u64>,
    /// Retries decided.
    pub retries: Vec<u64>,
    /// Requests without a response (refused, reset, timed out).
    pub network_errors: Vec<u64>,
    /// Requests answered 5xx.
    pub server_errors: Vec<u64>,
}

impl TimelineReport {
    /// The series of a timeline.
    pub fn of(t: &Timeline) -> Self {
        let series = |f: fn(&crate::api::timeline::Bucket) -> u64| -> Vec<u64> {
            t.buckets().iter().map(f).collect()
        };
        TimelineReport {
            bucket_seconds: t.bucket_seconds(),
            requests: series(|b| b.requests),
            too_many_requests: series(|b| b.too_many_requests),
            retries: series(|b| b.retries),
            network_errors: series(|b| b.network_errors),
            server_errors: series(|b| b.server_errors),
        }
    }
}

impl Requests {
    /// The client's counters, per endpoint and status.
    pub fn from_stats(stats: &crate::api::RequestStats) -> Self {
        let mut by_endpoint: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((endpoint, status), n) in stats.by_endpoint() {
            by_endpoint
                .entry(endpoint.to_string())
                .or_default()
                .insert(status.to_string(), n);
        }
        Requests {
            total: stats.requests(),
            retries: stats.retries(),
            too_many_requests: stats.too_many_requests(),
            throttled_seconds: stats.throttled_wait().as_secs_f64(),
            bytes_received: stats.bytes_received(),
            outage_pauses: 0,
            outage_paused_seconds: 0.0,
            by_endpoint,
            limit_per_second: None,
            timeline: TimelineReport::of(&stats.timeline()),
            latency_ms: stats
                .latencies()
                .iter()
                .map(|(endpoint, h)| (endpoint.to_string(), LatencySummary::of(h)))
                .collect(),
        }
    }
}

/// What a run knows about itself when it ends: the body of its [`Report`].
#[derive(Debug, Serialize)]
pub struct RunFacts {
    /// sha256 of the job file's bytes.
    pub job_sha256: String,
    /// sha256 of the input list's bytes.
    pub input_sha256: String,
    /// `K/N` when sharded.
    pub shard: Option<String>,
    /// The run id: its commit is `commits/{run}.json`.
    pub run: String,
    /// Stopped before its input was done (Ctrl-C, refused credentials, a fatal error).
    pub interrupted: bool,
    /// Counts per outcome.
    pub outcomes: Outcomes,
    /// Requests sent, per endpoint and status.
    pub requests: Requests,
    /// Requests to the bucket (a bucket location only), apart from the API's: up to the
    /// report (the commit's own uploads follow it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_requests: Option<StoreRequests>,
    /// Bytes of archives fetched and parts written by this run.
    pub bytes_written: u64,
    /// Archives this run's commit lists.
    pub archives: u64,
    /// sha256 over `"<reference>  <archive sha256>\n"` lines of those archives, sorted by
    /// reference.
    pub root_hash: String,
    /// Documented dates, timestamps and booleans whose text did not parse as their type, per
    /// `{table}.{column}`: NULL in the typed Parquet column, kept verbatim in `unmapped_json`
    /// (and in the CSV column).
    pub unparsed_values: BTreeMap<String, u64>,
}

impl Report {
    /// The report of a run that started at `started_at` and ended at `finished_at`.
    pub fn assemble(
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        facts: RunFacts,
    ) -> Self {
        Report {
            tool: TOOL,
            tool_version: crate::VERSION,
            started_at: timestamp(started_at),
            finished_at: timestamp(finished_at),
            facts,
            root_hash_method: ROOT_HASH_METHOD,
        }
    }
}

/// The tool's name in every report.
pub const TOOL: &str = "jumio-export";

/// `sha256("<reference>  <sha256>\n" …)` over pairs sorted by reference.
pub fn root_hash(pairs: &mut [(String, String)]) -> String {
    pairs.sort();
    let mut h = Sha256::new();
    for (reference, sha) in pairs.iter() {
        h.update(root_line(reference, sha));
    }
    hex::encode(h.finalize())
}

/// One archive's line of the root hash (see [`ROOT_HASH_METHOD`]).
fn root_line(reference: &str, sha256_hex: &str) -> String {
    format!("{reference}  {sha256_hex}\n")
}

/// [`root_hash`] for any number of archives in bounded memory: each archive's line goes into an
/// [`ExternalSort`] (spilled to unnamed files in the output directory past
/// [`spill::DEFAULT_BUDGET`]) and is hashed in order at the end. Same result as [`root_hash`].
pub struct RootHash {
    lines: ExternalSort,
}

impl RootHash {
    /// A root hash whose spilled runs go to `dir`.
    pub fn new(dir: &Path) -> Self {
        Self::with_budget(dir, spill::DEFAULT_BUDGET)
    }

    /// The same with a chosen memory budget (tests force spilling with a small one).
    pub fn with_budget(dir: &Path, budget: usize) -> Self {
        RootHash {
            lines: ExternalSort::new(dir, budget),
        }
    }

    /// Adds one archive: its reference and lowercase hex sha256.
    pub fn add(&mut self, reference: &str, sha256_hex: &str) -> std::io::Result<()> {
        // References are `[A-Za-z0-9-]`, all above the space, so sorting whole lines sorts by
        // reference first, exactly as sorting the pairs does.
        self.lines.push(root_line(reference, sha256_hex).as_bytes())
    }

    /// Archives added.
    pub fn archives(&self) -> u64 {
        self.lines.len()
    }

    /// The hex root hash.
    pub fn finish(self) -> std::io::Result<String> {
        let mut h = Sha256::new();
        for line in self.lines.finish()? {
            h.update(line?);
        }
        Ok(hex::encode(h.finalize()))
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The method string recorded in the report.
pub const ROOT_HASH_METHOD: &str =
    "sha256 over one line per archive, \"<reference>  <archive sha256>\\n\", sorted by reference";

/// Writes `value` as `dir/report.json` atomically (see [`write_atomic`]).
pub fn write_json(
    dir: &Path,
    modes: super::fsmode::Modes,
    value: &impl Serialize,
) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    text.push(b'\n');
    write_atomic(dir, modes, "report.json", &text)
}

/// Writes `bytes` as `dir/{name}` atomically: a temporary name of this process
/// (`.{name}.{pid}.tmp`, so shards writing one location at once never share one), fsync,
/// rename, directory fsync.
pub fn write_atomic(
    dir: &Path,
    modes: super::fsmode::Modes,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        use std::io::Write;
        let mut f = modes.create_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    super::fsmode::sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_hash_is_order_independent_and_pinned() {
        let mut a = vec![
            ("b".to_string(), "22".to_string()),
            ("a".to_string(), "11".to_string()),
        ];
        let mut b = vec![
            ("a".to_string(), "11".to_string()),
            ("b".to_string(), "22".to_string()),
        ];
        let expected = hex::encode(Sha256::digest(b"a  11\nb  22\n"));
        assert_eq!(root_hash(&mut a), expected);
        assert_eq!(root_hash(&mut b), expected);
        let mut swapped = vec![
            ("a".to_string(), "22".to_string()),
            ("b".to_string(), "11".to_string()),
        ];
        assert_ne!(root_hash(&mut swapped), expected);
    }

    #[test]
    fn spilled_root_hash_equals_the_in_memory_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut pairs: Vec<(String, String)> = (0..3000u32)
            .map(|i| {
                let sha = hex::encode(Sha256::digest(i.to_le_bytes()));
                // Prefixes of one another ("a1", "a1-", "a10") and repeats of a reference.
                (
                    format!("a{}{}", i % 1500, if i % 7 == 0 { "-" } else { "" }),
                    sha,
                )
            })
            .collect();
        let mut spilled = RootHash::with_budget(dir.path(), 4096);
        for (r, s) in pairs.iter().rev() {
            spilled.add(r, s).unwrap();
        }
        assert_eq!(spilled.archives(), 3000);
        assert_eq!(spilled.finish().unwrap(), root_hash(&mut pairs));
        let empty = RootHash::new(dir.path());
        assert_eq!(empty.finish().unwrap(), root_hash(&mut []));
    }
}
