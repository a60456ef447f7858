//! The one job-wide rate limiter, awaited before every request (status polls, data, images, retries).
//!
//! Two layers:
//! 1. a governor GCRA limiter at the configured rate and burst: the hard ceiling, so the API never
//!    sees more than `rate + burst` requests in any one-second window;
//! 2. an adaptive pacer that finds and holds the server's own ceiling. Jumio answers 429 without
//!    `Retry-After` and counts requests in a sliding one-second window, in which refused requests
//!    may count too: overshooting is punished twice, since every refused request keeps the window
//!    full. So on a 429 the pacer
//!    - estimates the server's ceiling for this job as the requests it sent in the second before
//!      the refused one, less those refused (the server let exactly that many through);
//!    - lowers the rate to [`CUT`] of that estimate (by at least 5 %, to no less than a quarter);
//!      a 429 soon after another means the last cut was not enough (the ceiling fell, or another
//!      process shares it), and the rate comes down by a fraction ([`REPEAT_CUT`]) instead;
//!    - pauses every request until enough of the last second's requests have aged out of the
//!      server's window for the next one to fit (at most one second);
//!    - counts every later 429 of a request sent before that decision as part of the same
//!      episode: one overshoot lowers the rate once, however many requests were in flight.
//!
//!    Then the rate climbs back to the estimate along a concave curve (fast at first, flat near the
//!    estimate), reaching it after [`PROBE_REQUESTS`] requests' worth of time; past that it probes
//!    upwards, slowly at first and doubling its step every [`PROBE_DOUBLING`], so an unchanged
//!    ceiling costs about one 429 per probe and a ceiling that rose is found within seconds. Each
//!    process sharing a ceiling (shards of one tenant) backs off on its own 429s; their sum
//!    converges because each one's estimate is the share the server let through.
//!
//!    A `Retry-After` on any response holds *every* request until its deadline.
//!
//! Holds no per-request state; cheap to share behind an `Arc`.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::MonotonicClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};
use tokio::time::Instant;

use crate::job::defaults;

/// After a 429 the rate drops to this share of the estimated server ceiling.
const CUT: f64 = 0.93;
/// A 429 that follows another within the server's window means the last cut was not enough
/// (the ceiling fell, or another process shares it): the rate comes down to this share of itself.
const REPEAT_CUT: f64 = 0.75;
/// A 429 lowers the rate by at least this share of it…
const LEAST_CUT: f64 = 0.05;
/// …and never below this share of it: one 429 seen after a quiet spell (few recent requests to
/// estimate from) must not all but stop the job; repeated 429s lower it further.
const MOST_CUT: f64 = 0.25;
/// The climb back to the estimate takes as long as this many requests at the estimated rate
/// (clamped to [`MIN_CLIMB`]..[`MAX_CLIMB`]): probing costs about one 429 per probe, so spacing
/// probes by requests rather than seconds keeps the share of 429s the same at any ceiling.
const PROBE_REQUESTS: f64 = 75.0;
/// Shortest climb back to the estimate.
const MIN_CLIMB: Duration = Duration::from_secs(2);
/// Longest climb back to the estimate.
const MAX_CLIMB: Duration = Duration::from_secs(6);
/// First step of the probe above the estimate, as a share of it.
const PROBE_STEP: f64 = 0.02;
/// The probe's step doubles this often.
const PROBE_DOUBLING: Duration = Duration::from_millis(500);
/// The longest pause after a 429: the server's window is one second.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The server's window: requests older than this no longer count against the job.
const WINDOW: Duration = Duration::from_secs(1);
/// The rate never drops below this share of the configured rate.
const FLOOR: f64 = 0.05;

/// See the module documentation.
pub struct RateLimiter {
    /// On the standard monotonic clock: governor's default (quanta) calibrates the TSC when first
    /// used, which cost every run about 50 ms of CPU before its first request.
    ceiling: Gcra<NotKeyed, InMemoryState, MonotonicClock>,
    configured: f64,
    state: Mutex<Adaptive>,
}

struct Adaptive {
    /// `None` until the first 429: the configured rate, paced by the ceiling alone.
    episode: Option<Episode>,
    /// When the pacer next lets a request through (only used while below the configured rate).
    next_slot: Instant,
    /// Requests wait until this instant (from `Retry-After`, or the pause after a 429).
    hold_until: Instant,
    /// Bumped whenever the schedule changes (a 429, a `Retry-After`): requests that were given a
    /// slot under the old schedule ask again.
    generation: u64,
    /// When each request of the last two windows was let through, oldest first.
    sent: VecDeque<Instant>,
    /// When each of those answered 429 was let through.
    refused: VecDeque<Instant>,
    decreases: u64,
}

/// What the last 429 that lowered the rate decided.
#[derive(Debug, Clone, Copy)]
struct Episode {
    /// When the rate was lowered: 429s of requests let through before this belong to it.
    at: Instant,
    /// The rate right after the cut.
    from: f64,
    /// The estimated server ceiling the rate climbs back to.
    estimate: f64,
    /// How long the climb back to `estimate` takes.
    climb: Duration,
}

impl Episode {
    /// The rate `elapsed` after the cut: a cubic from `from` flattening at `estimate` after
    /// `climb`, then a probe whose step doubles every [`PROBE_DOUBLING`].
    fn rate(&self, elapsed: Duration) -> f64 {
        let climb = self.climb.as_secs_f64();
        let t = elapsed.as_secs_f64();
        if t < climb {
            let left = 1.0 - t / climb;
            self.estimate - (self.estimate - self.from) * left * left * left
        } else {
            let doublings = ((t - climb) / PROBE_DOUBLING.as_secs_f64()).min(60.0);
            self.estimate * (1.0 + PROBE_STEP * (doublings.exp2() - 1.0))
        }
    }
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
            ceiling: Gcra::direct_with_clock(quota, MonotonicClock),
            configured: rate,
            state: Mutex::new(Adaptive {
                episode: None,
                next_slot: now,
                hold_until: now,
                generation: 0,
                sent: VecDeque::new(),
                refused: VecDeque::new(),
                decreases: 0,
            }),
        }
    }

    /// Waits until one more request may be sent, and returns the instant it was let through:
    /// hand it to [`RateLimiter::on_429`] if the request is refused.
    pub async fn acquire(&self) -> Instant {
        loop {
            // Adaptive layer first: it only ever slows things down.
            let (wait_until, generation) = {
                let mut s = self.state.lock().expect("limiter lock");
                let now = Instant::now();
                let rate = self.rate_at(&s, now);
                let mut at = now.max(s.hold_until);
                let interval = Duration::from_secs_f64(1.0 / rate);
                if rate < self.configured {
                    at = at.max(s.next_slot);
                    s.next_slot = at + interval;
                } else {
                    s.next_slot = at;
                }
                (at, s.generation)
            };
            if wait_until > Instant::now() {
                tokio::time::sleep_until(wait_until).await;
                // A 429 or a Retry-After while this request slept: it asks again.
                if self.state.lock().expect("limiter lock").generation != generation {
                    continue;
                }
            }
            self.ceiling.until_ready().await;
            let mut s = self.state.lock().expect("limiter lock");
            let now = Instant::now();
            // A Retry-After or a 429 may have arrived while this request waited for the ceiling.
            if s.hold_until > now {
                continue;
            }
            s.sent.push_back(now);
            prune(&mut s.sent, now);
            return now;
        }
    }

    /// The request let through at `sent` (as [`RateLimiter::acquire`] returned) was answered 429:
    /// slow the whole job down, unless that request left before the last slow-down (then this
    /// 429 is part of the overshoot already answered).
    pub fn on_429(&self, sent: Instant) {
        let mut s = self.state.lock().expect("limiter lock");
        let now = Instant::now();
        s.refused.push_back(sent);
        prune(&mut s.refused, now);
        if s.episode.is_some_and(|e| sent < e.at) {
            return;
        }
        let rate = self.rate_at(&s, now).min(self.configured);
        // The second up to and including the refused request: both counts include it.
        let since = sent.checked_sub(WINDOW).unwrap_or(sent);
        let in_window =
            |q: &VecDeque<Instant>| q.iter().filter(|t| (since..=sent).contains(*t)).count();
        let let_through = in_window(&s.sent).saturating_sub(in_window(&s.refused)) as f64;
        // The server's window held exactly `let_through` when it refused the first request after
        // a calm second. A refusal before this one in that second means the last cut was not
        // enough (the ceiling fell, or another process takes part of it), and `let_through` is
        // only a lower bound, refused requests having taken places in the window: then the rate
        // comes down by a fraction (and climbs back to just under where it was), and the pause
        // below lasts a whole window, so that the server has forgotten every earlier request
        // and the next 429, if any, measures its ceiling.
        let repeated = in_window(&s.refused) > 1;
        let (from, estimate) = if repeated {
            let from = (REPEAT_CUT * rate).max(self.configured * FLOOR);
            (from, (CUT * rate).max(from))
        } else {
            let estimate = let_through.max(1.0);
            let from = (CUT * estimate)
                .min(rate * (1.0 - LEAST_CUT))
                .max(rate * MOST_CUT)
                .max(self.configured * FLOOR);
            (from, estimate.max(from))
        };
        let climb = Duration::from_secs_f64(PROBE_REQUESTS / estimate).clamp(MIN_CLIMB, MAX_CLIMB);
        s.episode = Some(Episode {
            at: now,
            from,
            estimate,
            climb,
        });
        // The pause: the server's window holds what was sent in the last second (refused requests
        // included, where it counts them); the next request fits once all but `estimate - 1` of
        // them have aged out. Afterwards the rate is below what filled the window, so it keeps
        // emptying faster than it fills.
        let window_start = now.checked_sub(WINDOW).unwrap_or(now);
        let recent: Vec<Instant> = s
            .sent
            .iter()
            .copied()
            .filter(|t| *t > window_start)
            .collect();
        // One interval more than that: the server sees the requests a little later, and not
        // quite as evenly, as they left.
        let room = (estimate.floor() as usize).saturating_sub(1);
        let margin = Duration::from_secs_f64(1.0 / estimate);
        let resume = match recent.len().checked_sub(room) {
            _ if repeated => now + WINDOW,
            Some(excess) if excess > 0 => {
                (recent[excess - 1] + WINDOW + margin).min(now + MAX_PAUSE)
            }
            _ => now,
        };
        s.hold_until = s.hold_until.max(resume);
        s.next_slot = resume;
        s.generation += 1;
        s.decreases += 1;
        tracing::debug!(
            rate = from,
            estimate,
            pause_ms = resume.duration_since(now).as_millis() as u64,
            "429 received: lowering the job-wide rate"
        );
    }

    /// A `Retry-After` was answered: no request of the job goes out before `now + delay`.
    pub fn hold_for(&self, delay: Duration) {
        let mut s = self.state.lock().expect("limiter lock");
        let until = Instant::now() + delay;
        if until > s.hold_until {
            s.hold_until = until;
            s.generation += 1;
        }
    }

    /// The rate the pacer currently allows, in requests per second.
    pub fn current_rate(&self) -> f64 {
        let s = self.state.lock().expect("limiter lock");
        self.rate_at(&s, Instant::now())
    }

    /// The configured ceiling, in requests per second.
    pub fn configured_rate(&self) -> f64 {
        self.configured
    }

    /// How many times a 429 lowered the rate.
    pub fn decreases(&self) -> u64 {
        self.state.lock().expect("limiter lock").decreases
    }

    /// The server ceiling the last slow-down estimated, if a 429 ever lowered the rate.
    pub fn estimated_ceiling(&self) -> Option<f64> {
        self.state
            .lock()
            .expect("limiter lock")
            .episode
            .map(|e| e.estimate)
    }

    fn rate_at(&self, s: &Adaptive, now: Instant) -> f64 {
        match s.episode {
            None => self.configured,
            Some(e) => e
                .rate(now.saturating_duration_since(e.at))
                .min(self.configured),
        }
    }
}

/// Drops instants older than two windows (the estimate looks one window back from a request
/// that may have been sent up to a window ago).
fn prune(q: &mut VecDeque<Instant>, now: Instant) {
    while q
        .front()
        .is_some_and(|t| now.duration_since(*t) > 2 * WINDOW)
    {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` requests through `l`, one every `gap` of the (paused) clock at the most, and
    /// returns when each was let through. The limiters here have a burst the test never reaches:
    /// governor keeps its own clock, which the paused test clock does not move.
    async fn send(l: &RateLimiter, n: usize, gap: Duration) -> Vec<Instant> {
        let mut sent = Vec::new();
        for _ in 0..n {
            sent.push(l.acquire().await);
            tokio::time::advance(gap).await;
        }
        sent
    }

    const AT_30: Duration = Duration::from_nanos(1_000_000_000 / 30);

    #[tokio::test(start_paused = true)]
    async fn the_estimate_is_what_the_server_let_through_in_the_last_second() {
        let l = RateLimiter::new(30.0, 10_000);
        let sent = send(&l, 20, AT_30).await;
        // A server allowing 15 per second refuses the 16th and the rest: one slow-down.
        for t in &sent[15..] {
            l.on_429(*t);
        }
        assert_eq!(l.decreases(), 1);
        assert_eq!(l.estimated_ceiling(), Some(15.0));
        assert!(
            (l.current_rate() - CUT * 15.0).abs() < 1e-9,
            "{}",
            l.current_rate()
        );
        // A request let through after that decision and refused again is a new overshoot.
        let later = l.acquire().await;
        tokio::time::advance(AT_30).await;
        l.on_429(later);
        assert_eq!(l.decreases(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_429_nothing_is_sent_until_the_servers_window_has_room() {
        let l = RateLimiter::new(30.0, 10_000);
        let sent = send(&l, 20, AT_30).await;
        l.on_429(sent[15]);
        // 20 sent in the last second, room for 14 besides the next one: the 6 oldest must age
        // out of the server's window first, and one interval at the estimated 15/s more.
        let next = l.acquire().await;
        let margin = Duration::from_secs_f64(1.0 / 15.0);
        assert!(next >= sent[5] + WINDOW + margin, "{:?}", next - sent[5]);
        assert!(
            next <= sent[5] + WINDOW + margin + Duration::from_millis(5),
            "{:?}",
            next - sent[5]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_climbs_back_to_the_estimate_then_probes_above_it() {
        let l = RateLimiter::new(30.0, 10_000);
        let sent = send(&l, 16, AT_30).await;
        l.on_429(sent[15]);
        let climb = Duration::from_secs_f64(PROBE_REQUESTS / 15.0);
        let start = Instant::now();
        let at = |d: Duration| {
            let l = &l;
            async move {
                tokio::time::sleep_until(start + d).await;
                l.current_rate()
            }
        };
        // Concave: most of the way back in the first half, flat near the estimate.
        let half = at(climb / 2).await;
        assert!((14.7..15.0).contains(&half), "{half}");
        let top = at(climb).await;
        assert!((top - 15.0).abs() < 0.01, "{top}");
        let probe = at(climb + PROBE_DOUBLING).await;
        assert!((probe - 15.0 * (1.0 + PROBE_STEP)).abs() < 0.01, "{probe}");
        // The probe's step doubles: a ceiling that rose is found within seconds; never above
        // the configured rate.
        let later = at(climb + 3 * Duration::from_secs(1)).await;
        assert_eq!(later, 30.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slowed_rate_paces_requests_evenly() {
        let l = RateLimiter::new(100.0, 10_000);
        let sent = send(&l, 100, Duration::from_millis(10)).await;
        l.on_429(sent[99]);
        let rate = l.current_rate();
        assert!(rate <= 95.0, "{rate}");
        let paced = send(&l, 11, Duration::ZERO).await;
        // Ten intervals at no more than the lowered rate (it climbs a little meanwhile).
        let took = (paced[10] - paced[0]).as_secs_f64();
        assert!(
            took >= 10.0 / 100.0 && took >= 10.0 / (rate * 1.05),
            "{took}"
        );
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
}
