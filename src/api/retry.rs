//! When to try a request again, and how long to wait first. Pure; sleeps nothing itself.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::job::defaults;

/// Backoff settings for one job.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// The first backoff ceiling; doubled per attempt.
    pub base: Duration,
    /// The largest backoff ceiling.
    pub cap: Duration,
    /// The longest a request may wait after 429s in all before it fails (`HTTP_ERROR`, status 429)
    /// (429s do not count against `max_retries`).
    pub max_throttle: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: defaults::MAX_RETRIES,
            base: defaults::RETRY_BASE,
            cap: defaults::RETRY_CAP,
            max_throttle: defaults::MAX_THROTTLE,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with full jitter: uniform in `[0, min(cap, base · 2^attempt)]`, where
    /// `attempt` counts retries already made (0 for the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.cap);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Parses a `Retry-After` header value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past gives zero; anything else unparseable gives `None`. Absurd values are capped
/// at one hour so a broken header cannot stall a job for days.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    const MAX: Duration = Duration::from_secs(3600);
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = value.parse().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO).min(MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(3600))
        );
        for bad in ["", "-1", "1.5", "soon", "Wed, 99 Foo 2020"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let p = RetryPolicy {
            max_retries: 6,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_throttle: Duration::from_secs(1),
        };
        for attempt in 0..40 {
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(20))
                .min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(p.backoff(attempt) <= ceiling);
            }
        }
    }
}
