//! Requests over time and latency per endpoint, in bounded memory for a run of any length: what
//! `report.html` draws (requests per second against the limit, 429s and retries over time,
//! latency percentiles).
//!
//! - [`Timeline`]: counts per time bucket since the run started. Buckets start one second wide;
//!   when a run outlives [`MAX_BUCKETS`] buckets, neighbouring pairs are merged and the width
//!   doubles, so a five-day run keeps at most 600 buckets (of 1024 s) — a few kilobytes.
//! - [`Histogram`]: a fixed log-linear histogram of latencies (8 buckets per power of two, so a
//!   percentile is known within 12.5 %), plus the exact count, sum and maximum. No request is
//!   stored.
//!
//! This module only counts; the client calls it where it counts requests
//! ([`super::RequestStats`]) and the report serialises what it holds. It does no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The most buckets a [`Timeline`] keeps before it merges pairs and doubles their width.
pub const MAX_BUCKETS: usize = 600;

/// What happened in one time bucket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Requests sent (each attempt counts), by the time they were answered or failed.
    pub requests: u64,
    /// Of them, answered 429.
    pub too_many_requests: u64,
    /// Attempts after the first of a request, by the time they were decided.
    pub retries: u64,
    /// Requests that got no response (connection refused or reset, timeout).
    pub network_errors: u64,
    /// Requests answered 5xx.
    pub server_errors: u64,
}

impl Bucket {
    fn add(&mut self, other: &Bucket) {
        self.requests += other.requests;
        self.too_many_requests += other.too_many_requests;
        self.retries += other.retries;
        self.network_errors += other.network_errors;
        self.server_errors += other.server_errors;
    }
}

/// Counts per time bucket since the start of the run; see the module documentation.
#[derive(Debug, Clone)]
pub struct Timeline {
    width_s: u64,
    buckets: Vec<Bucket>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            width_s: 1,
            buckets: Vec::new(),
        }
    }
}

impl Timeline {
    /// The bucket that holds `since_start`, widening every bucket (merging pairs) until it fits.
    fn bucket(&mut self, since_start: Duration) -> &mut Bucket {
        let secs = since_start.as_secs();
        while (secs / self.width_s) as usize >= MAX_BUCKETS {
            self.merge_pairs();
        }
        let i = (secs / self.width_s) as usize;
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, Bucket::default());
        }
        &mut self.buckets[i]
    }

    fn merge_pairs(&mut self) {
        let merged = self
            .buckets
            .chunks(2)
            .map(|pair| {
                let mut b = Bucket::default();
                pair.iter().for_each(|p| b.add(p));
                b
            })
            .collect();
        self.buckets = merged;
        self.width_s *= 2;
    }

    /// A request answered (or failed, `status` 0) at `since_start`.
    pub fn request(&mut self, since_start: Duration, status: u16) {
        let b = self.bucket(since_start);
        b.requests += 1;
        match status {
            0 => b.network_errors += 1,
            429 => b.too_many_requests += 1,
            500..=599 => b.server_errors += 1,
            _ => {}
        }
    }

    /// A retry decided at `since_start`.
    pub fn retry(&mut self, since_start: Duration) {
        self.bucket(since_start).retries += 1;
    }

    /// Seconds each bucket spans.
    pub fn bucket_seconds(&self) -> u64 {
        self.width_s
    }

    /// The buckets from the start of the run to the last one with anything in it.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }
}

/// Sub-buckets per power of two: a percentile is known within 1/8 of its value.
const SUB: u32 = 8;
const SUB_BITS: u32 = 3;

/// A fixed log-linear histogram of latencies in microseconds; see the module documentation.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

/// The index of the bucket holding `us`: values below [`SUB`] have a bucket each; above, each
/// power of two is split into [`SUB`] equal buckets.
fn index_of(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros(); // >= SUB_BITS
    let sub = (us >> (octave - SUB_BITS)) & (SUB as u64 - 1);
    (SUB + (octave - SUB_BITS) * SUB) as usize + sub as usize
}

/// The largest value bucket `i` holds (inclusive).
fn upper_of(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB as u64 {
        return i;
    }
    let octave = (i - SUB as u64) / SUB as u64 + SUB_BITS as u64;
    let sub = (i - SUB as u64) % SUB as u64;
    let step = 1u128 << (octave - SUB_BITS as u64);
    let upper = (1u128 << octave) + u128::from(sub + 1) * step - 1;
    u64::try_from(upper).unwrap_or(u64::MAX)
}

impl Histogram {
    /// One latency.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let i = index_of(us);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The latency at or below which a fraction `q` (0 to 1) of the recorded ones lie, as the
    /// upper bound of its bucket (never above the maximum); zero when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(upper_of(i).min(self.max_us));
            }
        }
        Duration::from_micros(self.max_us)
    }

    /// The largest latency recorded.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// The mean latency.
    pub fn mean(&self) -> Duration {
        Duration::from_micros(self.sum_us.checked_div(self.count).unwrap_or(0))
    }
}

/// One endpoint's latency as the report states it, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Requests measured (every attempt, answered or not).
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
    /// The mean.
    pub mean_ms: f64,
}

impl LatencySummary {
    /// The summary of a histogram.
    pub fn of(h: &Histogram) -> Self {
        let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        LatencySummary {
            count: h.count(),
            p50_ms: ms(h.quantile(0.50)),
            p90_ms: ms(h.quantile(0.90)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: ms(h.mean()),
        }
    }
}

/// Latency histograms per endpoint label.
pub type Latencies = BTreeMap<&'static str, Histogram>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_merge_in_pairs_and_keep_every_count() {
        let mut t = Timeline::default();
        for s in 0..600u64 {
            t.request(Duration::from_secs(s), if s % 10 == 0 { 429 } else { 200 });
        }
        assert_eq!((t.bucket_seconds(), t.buckets().len()), (1, 600));
        // Second 600 does not fit in 600 one-second buckets: pairs merge.
        t.request(Duration::from_secs(600), 0);
        t.retry(Duration::from_millis(600_500));
        assert_eq!(t.bucket_seconds(), 2);
        assert_eq!(t.buckets().len(), 301);
        assert_eq!(t.buckets()[0].requests, 2);
        assert_eq!(t.buckets()[0].too_many_requests, 1);
        assert_eq!(t.buckets()[300].network_errors, 1);
        assert_eq!(t.buckets()[300].retries, 1);
        let total: u64 = t.buckets().iter().map(|b| b.requests).sum();
        assert_eq!(total, 601);
        // Five days: still at most MAX_BUCKETS buckets.
        t.request(Duration::from_secs(5 * 86_400), 503);
        assert!(t.buckets().len() <= MAX_BUCKETS, "{}", t.buckets().len());
        assert_eq!(t.bucket_seconds(), 1024);
        let total: u64 = t.buckets().iter().map(|b| b.requests).sum();
        assert_eq!(total, 602);
        assert_eq!(t.buckets().last().unwrap().server_errors, 1);
    }

    #[test]
    fn bucket_bounds_cover_every_value_once() {
        for us in (0..5000u64).chain([1 << 20, (1 << 20) + 1, u64::MAX / 2, u64::MAX]) {
            let i = index_of(us);
            assert!(us <= upper_of(i), "{us} above its bucket {i}");
            if i > 0 {
                assert!(us > upper_of(i - 1), "{us} also fits bucket {}", i - 1);
            }
        }
    }

    #[test]
    fn percentiles_are_within_an_eighth() {
        let mut h = Histogram::default();
        // 1 ms .. 1000 ms, one each.
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        for (q, exact) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = h.quantile(q).as_secs_f64() * 1000.0;
            assert!(
                got >= exact && got <= exact * 1.125,
                "p{q}: {got} ms for {exact} ms"
            );
        }
        assert_eq!(h.max(), Duration::from_millis(1000));
        assert_eq!(h.quantile(1.0), Duration::from_millis(1000));
        assert_eq!(h.count(), 1000);
        let s = LatencySummary::of(&h);
        assert_eq!(s.max_ms, 1000.0);
        assert_eq!(s.mean_ms, 500.5);
        assert!(s.p50_ms <= s.p90_ms && s.p90_ms <= s.p99_ms && s.p99_ms <= s.max_ms);
        assert_eq!(Histogram::default().quantile(0.5), Duration::ZERO);
        // Bounded: a latency of an hour adds buckets up to its octave only.
        h.record(Duration::from_secs(3600));
        assert!(h.counts.len() < 300, "{}", h.counts.len());
    }
}
