//! Plan stage (`jumio-export plan`): the request budget of a job over its input — how
//! many references per kind, the fewest and most requests the guide's flow needs for
//! them, and how long that takes at the job's rate. What Jumio Support asks for before
//! a bulk retrieval.
//!
//! Pure arithmetic over a validated [`Job`] and a parsed [`InputList`]: it sends
//! nothing, reads nothing and writes nothing.
//!
//! Per reference, the endpoint table ([`crate::api::endpoints`]) under the job's `[fetch]`
//! switches, the same table the fetcher walks (`N` = number of `schedule_seconds` offsets):
//! - Netverify: fewest = status + `/data` + `/images` + 1 image; most = (1 + N) status
//!   polls + `/data` + `/images` + 3 images (front, back, face) + 7 liveness images (the
//!   guide's sample lists 7). `/images` is fetched when `images` or `liveness_images`
//!   is on; images only with `images`, liveness only with `liveness_images`.
//! - Document Verification: status (the guide lists only DONE and FAILED: never polled) +
//!   `/data` + `/pages` + 1 to 2 pages (the guide's samples have 1 or 2) when `images` is
//!   on, + up to 1 original PDF when `original_documents` is on, + up to 1 masked re-fetch
//!   per page when `unmasked_card_images` is on (403 on the unmasked page).
//! - Authentication: (1 to 1 + N) status polls (CREATED and STARTED are polled like
//!   PENDING; the status response is the details) + the face image when `images` is on
//!   + up to 7 liveness images when `liveness_images` is on.
//!
//! Retries (429, 5xx, network errors) are not included: each request may be repeated
//! up to `max_retries` times.
//!
//! Beside the time at the job's rate, the time at Jumio's limit per tenant (about 15 requests per
//! second, [`defaults::TENANT_REQUESTS_PER_SECOND`]): with `--shard K/N` at this shard's share of
//! it, since the shards share the tenant's limit and more machines do not finish sooner.

use std::fmt;

use crate::Kind;
use crate::api::endpoints::{self, Switches};
pub use crate::api::endpoints::{MAX_DOCUMENT_PAGES, MAX_LIVENESS_IMAGES, MAX_NETVERIFY_IMAGES};
use crate::input::{InputList, shard_of};
use crate::job::{Job, Shard, defaults};

/// The request budget of a job over its input (this shard's references only).
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// One entry per kind, in [`Kind::ALL`] order, zero-reference kinds included.
    pub per_kind: Vec<KindBudget>,
    /// Fewest requests for all references.
    pub total_min: u64,
    /// Most requests for all references (retries excluded).
    pub total_max: u64,
    /// `total_min` at the job's rate.
    pub seconds_min: f64,
    /// `total_max` at the job's rate.
    pub seconds_max: f64,
    /// Invalid references in the whole input (never sent), not split by shard.
    pub rejected: usize,
    /// Repeated lines in the whole input (exported once), not split by shard.
    pub duplicates: usize,
    /// The job's rate, already divided by the shard count.
    pub requests_per_second: f64,
    /// Jumio's limit per tenant, shared by every shard ([`defaults::TENANT_REQUESTS_PER_SECOND`]).
    pub tenant_requests_per_second: f64,
    /// `total_min` at this shard's share of the tenant's limit (or the job's rate, if lower).
    pub tenant_seconds_min: f64,
    /// `total_max` likewise.
    pub tenant_seconds_max: f64,
    /// The offset of the last status call of a round (the schedule's next-to-last entry: n
    /// entries are the first call and n - 1 polls): a reference still pending is polled for
    /// this long after its first status call before the run gives it up, whatever the rate.
    pub polling_window_seconds: f64,
    /// Retries allowed per request (not included in the numbers).
    pub max_retries: u32,
    /// The shard counted, when the job is sharded.
    pub shard: Option<Shard>,
    /// How each kind's numbers are made up, one line per kind, for the printed table.
    pub assumptions: Vec<String>,
    /// The output location when it is a bucket (`s3://…`): the plan adds what it costs in
    /// store requests.
    pub bucket: Option<String>,
}

/// The budget of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindBudget {
    /// The kind.
    pub kind: Kind,
    /// References of this kind (valid, deduplicated, in this shard).
    pub references: u64,
    /// `references` × the fewest requests per reference.
    pub min_requests: u64,
    /// `references` × the most requests per reference.
    pub max_requests: u64,
}

/// One part of a kind's flow: a request (or group of requests) and how often it happens.
struct Part {
    what: String,
    min: u64,
    max: u64,
}

fn part(what: impl Into<String>, min: u64, max: u64) -> Part {
    Part {
        what: what.into(),
        min,
        max,
    }
}

/// The parts of one reference's flow under the job's switches: the status calls, then every
/// step of the kind's endpoint table that the switches turn on.
fn parts(kind: Kind, job: &Job) -> Vec<Part> {
    let flow = endpoints::flow(kind);
    let f = &job.fetch;
    let switches = Switches {
        images: f.images,
        liveness_images: f.liveness_images,
        original_documents: f.original_documents,
        unmasked_card_images: f.unmasked_card_images,
    };
    let polls = flow.max_status_calls(job.polling.schedule.len());
    let mut p = vec![part(flow.status_what, 1, polls)];
    for step in flow.then.iter().filter(|s| s.needs.on(&switches)) {
        p.push(part(step.what, step.requests.0, step.requests.1));
    }
    p
}

/// The fewest and most requests one reference of `kind` needs under `job`.
pub fn requests_per_reference(kind: Kind, job: &Job) -> (u64, u64) {
    parts(kind, job)
        .iter()
        .fold((0, 0), |(lo, hi), p| (lo + p.min, hi + p.max))
}

/// Computes the budget of `job` over `input`, counting only this shard's references.
pub fn budget(job: &Job, input: &InputList) -> std::io::Result<Budget> {
    let mut counts = [0u64; 3];
    for item in input.items.iter() {
        let item = item?;
        if let Some(shard) = job.shard
            && shard_of(&item.reference, shard.count) != shard.index
        {
            continue;
        }
        let slot = Kind::ALL
            .iter()
            .position(|k| *k == item.kind)
            .expect("every kind is in Kind::ALL");
        counts[slot] += 1;
    }
    let mut per_kind = Vec::new();
    let mut assumptions = Vec::new();
    for (kind, references) in Kind::ALL.into_iter().zip(counts) {
        let (lo, hi) = requests_per_reference(kind, job);
        per_kind.push(KindBudget {
            kind,
            references,
            min_requests: references * lo,
            max_requests: references * hi,
        });
        let describe = |pick: fn(&Part) -> u64| {
            parts(kind, job)
                .iter()
                .filter(|p| pick(p) > 0)
                .map(|p| format!("{} {}", pick(p), p.what))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        assumptions.push(format!(
            "{kind}: fewest {lo} = {}; most {hi} = {}",
            describe(|p| p.min),
            describe(|p| p.max)
        ));
    }
    let total_min = per_kind.iter().map(|k| k.min_requests).sum();
    let total_max = per_kind.iter().map(|k| k.max_requests).sum();
    let rps = job.limits.requests_per_second;
    let shards = job.shard.map_or(1, |s| s.count);
    let tenant = defaults::TENANT_REQUESTS_PER_SECOND;
    // What the API lets this shard do: its share of the tenant's limit, or less if the job asks
    // for less.
    let tenant_share = (tenant / f64::from(shards)).min(rps);
    Ok(Budget {
        per_kind,
        total_min,
        total_max,
        seconds_min: total_min as f64 / rps,
        seconds_max: total_max as f64 / rps,
        rejected: input.rejected.len(),
        duplicates: input.duplicates,
        requests_per_second: rps,
        tenant_requests_per_second: tenant,
        tenant_seconds_min: total_min as f64 / tenant_share,
        tenant_seconds_max: total_max as f64 / tenant_share,
        // n entries are n status calls: the first at once, then one per offset but the last.
        polling_window_seconds: (job.polling.schedule.len().checked_sub(2))
            .and_then(|i| job.polling.schedule.get(i))
            .map_or(0.0, |d| d.as_secs_f64()),
        max_retries: job.limits.max_retries,
        shard: job.shard,
        assumptions,
        bucket: crate::store::BucketUrl::parse(&job.output.dir)
            .and_then(Result::ok)
            .map(|u| u.to_string()),
    })
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_table(f)?;
        self.fmt_notes(f)
    }
}

impl Budget {
    /// The heading and the table of references and requests per kind.
    fn fmt_table(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Request budget (nothing was sent)")?;
        if let Some(shard) = self.shard {
            writeln!(
                f,
                "shard {shard}: only the references of this shard are counted"
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<16} {:>12} {:>16} {:>16}",
            "kind", "references", "fewest requests", "most requests"
        )?;
        for k in &self.per_kind {
            writeln!(
                f,
                "{:<16} {:>12} {:>16} {:>16}",
                k.kind.as_str(),
                grouped(k.references),
                grouped(k.min_requests),
                grouped(k.max_requests)
            )?;
        }
        let refs: u64 = self.per_kind.iter().map(|k| k.references).sum();
        writeln!(
            f,
            "{:<16} {:>12} {:>16} {:>16}",
            "total",
            grouped(refs),
            grouped(self.total_min),
            grouped(self.total_max)
        )
    }

    /// What the table leaves out: rejected and duplicate input, time, polling, assumptions.
    fn fmt_notes(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        writeln!(
            f,
            "invalid references in the input (never sent, listed in failures.csv): {}",
            grouped(self.rejected as u64)
        )?;
        writeln!(
            f,
            "duplicate lines (exported once): {}",
            grouped(self.duplicates as u64)
        )?;
        writeln!(
            f,
            "time at {} requests/s: {} (fewest) to {} (most)",
            trim_float(self.requests_per_second),
            human_seconds(self.seconds_min),
            human_seconds(self.seconds_max)
        )?;
        self.fmt_tenant(f)?;
        writeln!(
            f,
            "polling alone can keep a pending reference for {} after its first status call",
            human_seconds(self.polling_window_seconds)
        )?;
        writeln!(f)?;
        writeln!(f, "per reference:")?;
        for line in &self.assumptions {
            writeln!(f, "  {line}")?;
        }
        writeln!(
            f,
            "  assumed at most {MAX_NETVERIFY_IMAGES} Netverify images, {MAX_LIVENESS_IMAGES} \
             liveness images and {MAX_DOCUMENT_PAGES} document pages (the guide's samples)"
        )?;
        write!(
            f,
            "  retries (429, 5xx, network errors; up to {} per request) are not included",
            self.max_retries
        )?;
        if let Some(bucket) = &self.bucket {
            writeln!(f)?;
            self.fmt_bucket(f, bucket)?;
        }
        Ok(())
    }

    /// What a bucket costs in store requests (README "Object storage").
    fn fmt_bucket(&self, f: &mut fmt::Formatter<'_>, bucket: &str) -> fmt::Result {
        let mib = crate::store::PART_SIZE / (1024 * 1024);
        writeln!(f)?;
        writeln!(f, "store requests into {bucket}:")?;
        writeln!(
            f,
            "  per exported transaction: 1 PUT (its archive, create-if-absent) up to {mib} MiB; \
             a larger archive: 1 multipart upload (2 + one PUT per {mib} MiB part), 1 multipart \
             copy (3 requests) and 1 DELETE; before it, 2 HEADs (is an archive of the reference \
             there, in either archive mode); with [output] age_recipients 1 PUT more (its \
             takeover record)"
        )?;
        writeln!(
            f,
            "  per run: 1 PUT per table part (at least one CSV and one Parquet part per table \
             that gets rows), 1 commit PUT, 2 PUTs (failures.csv, report.json), 1 heartbeat PUT \
             every {} s, and at its start 3 LISTs plus 1 GET per commit and per Parquet part \
             it has not read",
            crate::store::stale_after().as_secs() / 5
        )?;
        write!(
            f,
            "  an archive already in the bucket that no commit lists: 1 HEAD, 1 GET, 1 claim PUT"
        )
    }
}

impl Budget {
    /// The time at the tenant's limit, and that shards share it.
    fn fmt_tenant(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenant = trim_float(self.tenant_requests_per_second);
        let times = format!(
            "{} (fewest) to {} (most)",
            human_seconds(self.tenant_seconds_min),
            human_seconds(self.tenant_seconds_max)
        );
        let shards = self.shard.map_or(1, |s| s.count);
        let share = self.tenant_requests_per_second / f64::from(shards);
        if shards > 1 {
            writeln!(
                f,
                "time at this shard's share of the tenant's limit ({tenant} requests/s ÷ {shards} \
                 shards = {} requests/s): {times}",
                trim_float(share)
            )?;
        } else {
            writeln!(
                f,
                "time at the tenant's limit ({tenant} requests/s, Jumio's default for retrieval): \
                 {times}"
            )?;
        }
        if self.requests_per_second > share + 1e-9 {
            writeln!(
                f,
                "the job's rate ({} requests/s) is above {}: Jumio answers 429 beyond it and the \
                 job slows down to what it allows, so the time at the limit is the one to expect",
                trim_float(self.requests_per_second),
                if shards > 1 {
                    "this shard's share of the tenant's limit"
                } else {
                    "the tenant's limit"
                }
            )?;
        }
        writeln!(
            f,
            "shards share the tenant's limit: Jumio counts requests per tenant, not per machine, \
             so N shards together still get about {tenant} requests/s and do not finish sooner \
             than one; they bring storage, isolation and separate regional tenants"
        )
    }
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `3725.0` → `1h 02m 05s`; under a minute, seconds with one decimal.
fn human_seconds(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let total = secs.round() as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    match (d, h) {
        (0, 0) => format!("{m}m {s:02}s"),
        (0, _) => format!("{h}h {m:02}m {s:02}s"),
        _ => format!("{d}d {h:02}h {m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_and_durations() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(human_seconds(8.84), "8.8 s");
        assert_eq!(human_seconds(3725.0), "1h 02m 05s");
        assert_eq!(human_seconds(125.0), "2m 05s");
        assert_eq!(human_seconds(90_061.0), "1d 01h 01m");
        assert_eq!(trim_float(2.5), "2.5");
        assert_eq!(trim_float(10.0), "10");
    }
}
