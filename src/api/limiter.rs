//! The one job-wide rate limiter, awaited before every request (status polls, data, images, retries).
//!
//! Two layers:
//! 1. a governor GCRA limiter at the configured rate and burst: the hard ceiling, so the API never
//!    sees more than `rate + burst` requests in any one-second window;
//! 2. an adaptive pacer. Jumio's 429 usually carries no `Retry-After`, so each 429 lowers the
//!    job-wide rate multiplicatively (at most once per cooling period, so one burst of 429s counts
//!    once), and the rate recovers additively, per second without a 429, back to the configured rate.
//!    A `Retry-After` on any response holds *every* request until its deadline.
//!
//! Holds no per-request state; cheap to share behind an `Arc`.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};
use tokio::time::Instant;

use crate::job::defaults;

/// Multiplier applied to the current rate on a 429.
const DECREASE: f64 = 0.75;
/// Recovery per second without a 429, as a share of the configured rate, while well below the
/// rate that last drew a 429.
const RECOVERY_PER_SECOND: f64 = 0.025;
/// Recovery per second near (within 5% of) or above the rate that last drew a 429: probe gently,
/// since the server's ceiling is probably right there.
const PROBE_PER_SECOND: f64 = 0.0025;
/// The rate never drops below this share of the configured rate.
const FLOOR: f64 = 0.05;

/// See the module documentation.
pub struct RateLimiter {
    ceiling: Gcra<NotKeyed, InMemoryState, DefaultClock>,
    configured: f64,
    state: Mutex<Adaptive>,
}

struct Adaptive {
    current: f64,
    /// When the pacer next lets a request through (only used while `current < configured`).
    next_slot: Instant,
    /// Requests wait until this instant (from `Retry-After`).
    hold_until: Instant,
    last_decrease: Option<Instant>,
    last_recovery: Instant,
    decreases: u64,
    /// The rate at which the last 429 arrived: the best guess of the server's ceiling.
    last_429_rate: Option<f64>,
}

impl RateLimiter {
    /// A limiter at `rate` requests per second with `burst` requests of headroom.
    pub fn new(rate: f64, burst: u32) -> Self {
        // Clamped so every duration below stays representable and governor's arithmetic cannot
        // overflow (period × burst): job files are validated to this range already; this guards
        // library callers.
        let rate = if rate.is_finite() && rate > 0.0 {
            rate.clamp(defaults::MIN_RATE, defaults::MAX_RATE)
        } else {
            1.0
        };
        let burst = burst.min(defaults::MAX_BURST);
        let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(burst.max(1)).expect("max(1) is non-zero");
        let quota = Quota::with_period(period)
            .expect("period is non-zero")
            .allow_burst(burst);
        let now = Instant::now();
        RateLimiter {
            ceiling: Gcra::direct(quota),
            configured: rate,
            state: Mutex::new(Adaptive {
                current: rate,
                next_slot: now,
                hold_until: now,
                last_decrease: None,
                last_recovery: now,
                decreases: 0,
                last_429_rate: None,
            }),
        }
    }

    /// Waits until one more request may be sent.
    pub async fn acquire(&self) {
        loop {
            // Adaptive layer first: it only ever slows things down.
            let wait_until = {
                let mut s = self.state.lock().expect("limiter lock");
                let now = Instant::now();
                self.recover(&mut s, now);
                let mut at = now.max(s.hold_until);
                if s.current < self.configured {
                    at = at.max(s.next_slot);
                    s.next_slot = at + Duration::from_secs_f64(1.0 / s.current);
                } else {
                    s.next_slot = at;
                }
                at
            };
            if wait_until > Instant::now() {
                tokio::time::sleep_until(wait_until).await;
            }
            self.ceiling.until_ready().await;
            // A Retry-After may have arrived while this request waited for the ceiling.
            let held = self.state.lock().expect("limiter lock").hold_until > Instant::now();
            if !held {
                return;
            }
        }
    }

    /// A 429 was answered: slow the whole job down.
    pub fn on_429(&self) {
        let mut s = self.state.lock().expect("limiter lock");
        let now = Instant::now();
        let cooling = Duration::from_secs_f64((2.0 / s.current).max(1.0));
        if s.last_decrease
            .is_some_and(|t| now.duration_since(t) < cooling)
        {
            return;
        }
        s.last_429_rate = Some(s.current);
        s.current = (s.current * DECREASE).max(self.configured * FLOOR);
        s.last_decrease = Some(now);
        s.last_recovery = now;
        s.decreases += 1;
        tracing::debug!(rate = s.current, "429 received: lowering the job-wide rate");
    }

    /// A `Retry-After` was answered: no request of the job goes out before `now + delay`.
    pub fn hold_for(&self, delay: Duration) {
        let mut s = self.state.lock().expect("limiter lock");
        let until = Instant::now() + delay;
        if until > s.hold_until {
            s.hold_until = until;
        }
    }

    /// The rate the pacer currently allows, in requests per second.
    pub fn current_rate(&self) -> f64 {
        let mut s = self.state.lock().expect("limiter lock");
        self.recover(&mut s, Instant::now());
        s.current
    }

    /// The configured ceiling, in requests per second.
    pub fn configured_rate(&self) -> f64 {
        self.configured
    }

    /// How many times a 429 lowered the rate.
    pub fn decreases(&self) -> u64 {
        self.state.lock().expect("limiter lock").decreases
    }

    fn recover(&self, s: &mut Adaptive, now: Instant) {
        if s.current >= self.configured {
            s.last_recovery = now;
            return;
        }
        let secs = now.duration_since(s.last_recovery).as_secs_f64();
        if secs > 0.0 {
            let near_ceiling = s.last_429_rate.is_some_and(|r| s.current >= 0.95 * r);
            let step = if near_ceiling {
                PROBE_PER_SECOND
            } else {
                RECOVERY_PER_SECOND
            };
            s.current = (s.current + secs * step * self.configured).min(self.configured);
            s.last_recovery = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_429_halves_nothing_twice_in_one_burst_and_recovers() {
        let l = RateLimiter::new(20.0, 5);
        assert_eq!(l.current_rate(), 20.0);
        l.on_429();
        l.on_429();
        l.on_429();
        assert_eq!(l.decreases(), 1);
        assert!((l.current_rate() - 15.0).abs() < 1e-9);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!((l.current_rate() - 20.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_slows_down_near_the_rate_that_drew_a_429() {
        let l = RateLimiter::new(100.0, 5);
        l.on_429(); // 429 at 100/s → 75/s
        tokio::time::advance(Duration::from_secs(8)).await;
        // Fast recovery (2.5/s per second) up to 95/s, then a gentle probe (0.25/s per second).
        let r = l.current_rate();
        assert!((95.0..96.0).contains(&r), "{r}");
        tokio::time::advance(Duration::from_secs(10)).await;
        let r2 = l.current_rate();
        assert!(r2 > r && r2 - r <= 2.6, "{r} → {r2}");
    }

    #[test]
    fn absurd_rates_and_bursts_are_clamped_not_panics() {
        for (rate, burst) in [
            (5e-324, 1),
            (0.2, u32::MAX),
            (f64::INFINITY, 0),
            (-1.0, 5),
            (1e300, u32::MAX),
        ] {
            let l = RateLimiter::new(rate, burst);
            assert!(l.configured_rate() > 0.0 && l.configured_rate().is_finite());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_every_request() {
        let l = RateLimiter::new(1000.0, 10);
        let start = Instant::now();
        l.hold_for(Duration::from_secs(3));
        l.acquire().await;
        assert!(Instant::now().duration_since(start) >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn slowed_rate_paces_requests() {
        let l = RateLimiter::new(100.0, 100);
        l.on_429(); // 75/s
        let start = Instant::now();
        for _ in 0..10 {
            l.acquire().await;
        }
        // 10 requests at ~75/s are at least 9 intervals apart (recovery during the wait is small).
        assert!(Instant::now().duration_since(start) >= Duration::from_millis(100));
    }
}
