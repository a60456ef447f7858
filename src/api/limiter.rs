//! The one job-wide rate limiter, awaited before every request (status polls, data, images, retries).
//!
//! Two layers:
//! 1. a governor GCRA limiter at the configured rate and burst: the hard ceiling, so the API never
//!    sees more than `rate + burst` requests in any one-second window;
//! 2. an adaptive window that finds and holds the server's own ceiling. Jumio answers 429 without
//!    `Retry-After` and counts requests in a sliding one-second window, in which refused requests
//!    may count too. So after the first 429 the job keeps a *cap*: at most that many requests in
//!    any window of one second and a margin (every request it sent, refused ones included), the
//!    server's own rule mirrored with a margin for the requests' travel. The cap is what the
//!    server let through: on a 429 it is set to the requests sent in the window and margin before
//!    the refused one, less those refused. Waiting for room under the cap is the pause after a 429,
//!    sized to the server's window by construction.
//!
//!    Then it probes: once in a while (every `PROBE_REQUESTS` requests' worth of time) what a
//!    window may hold climbs past the cap, doubling every `RAMP_DOUBLING`, until a probe is
//!    refused and the cap becomes what the server's window held when it was full. An unchanged
//!    ceiling costs one 429 per probe, and each probe it refuses doubles the time to the next
//!    (`BACKOFF`, up to `MAX_GAP`): a ceiling that has not moved for minutes is rarely probed.
//!    A ceiling that rose is found the moment a probe goes through.
//!
//!    A refused request that was *not* a probe means the server's ceiling is below the cap, or
//!    the requests reached the server less evenly than the margin allows for. One alone (a
//!    request that travelled slowly, or a neighbour's probe) doubles the margin, whose excess
//!    halves every `MARGIN_HALF_LIFE` after: on a quiet machine the cap is paced over `WINDOW`
//!    and `MARGIN` (1 %), on a loaded one over as much more as its requests need. Another
//!    within `MILD_SPAN` with the margin past `MARGIN_BEFORE_CUT` lowers the cap to what got
//!    through, by one at least. If the request sent just before the refused one was refused
//!    too, the ceiling fell under the job (another process took a share, or the server lowered
//!    it): the cap is cut to `DEEP_CUT` of what was let through, after which it climbs at once
//!    until refused. A cap that held for `STABLE` before such a fall is remembered for
//!    `MEMORY`, and until the cap is back there it is probed every `RETURN_GAP`: a ceiling that
//!    fell usually comes back, and a climb stops at the remembered cap, which is taken back once
//!    a whole window of requests at it has gone out with none refused (the ceiling's return
//!    costs no 429). Every 429 of a request sent before the last decision belongs to it: one
//!    overshoot moves the cap once. Processes sharing a ceiling (shards of one tenant) each hold
//!    their own cap; their sum converges because each cap is what the server let that process
//!    through.
//!
//!    A `Retry-After` on any response holds *every* request until its deadline; probing starts
//!    again after it.
//!
//! Requests pass the adaptive layer one at a time (a fair queue), so no two are given the same
//! room. Keeps the instants of the last three seconds' requests and nothing else per request;
//! cheap to share behind an `Arc`.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::MonotonicClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};
use tokio::time::Instant;

use crate::job::defaults;

/// The server's window: requests older than this no longer count against the job.
const WINDOW: Duration = Duration::from_secs(1);
/// The cap counts requests over the server's window and this much more: the server sees each
/// request a little after it left, and not quite as evenly.
const MARGIN: Duration = Duration::from_millis(10);
/// The most the margin grows to.
const MARGIN_MAX: Duration = Duration::from_millis(120);
/// The margin's excess over [`MARGIN`] halves this often without a stray refusal.
const MARGIN_HALF_LIFE: Duration = Duration::from_secs(30);
/// A stray refusal within [`MILD_SPAN`] of another widens the margin while it is under this; once
/// it is past, such a refusal lowers the cap.
const MARGIN_BEFORE_CUT: Duration = Duration::from_millis(30);
/// A probe above a confirmed cap every this many requests at the cap (clamped to
/// [`MIN_GAP`]..[`MAX_GAP`]): one 429 per probe, so spacing probes by requests rather than
/// seconds keeps the share of 429s about the same at any ceiling.
const PROBE_REQUESTS: f64 = 120.0;
/// Shortest time between probes.
const MIN_GAP: Duration = Duration::from_secs(2);
/// Longest time between probes: a ceiling that rose is found within this.
const MAX_GAP: Duration = Duration::from_secs(30);
/// Each probe refused at an unchanged cap doubles the time to the next, this many times at most.
const BACKOFF: u32 = 2;
/// While probing, what a window may hold doubles this often: a ceiling that rose is found
/// within a second or so, and an unchanged one refuses the probe within a few hundred
/// milliseconds (one 429).
const RAMP_DOUBLING: Duration = Duration::from_millis(500);
/// While probing, a waiting request asks again this often (what it may send grows meanwhile).
const RAMP_TICK: Duration = Duration::from_millis(5);
/// Time between probes while the cap is below one that held before the ceiling fell.
const RETURN_GAP: Duration = Duration::from_secs(3);
/// How long a cap that held is remembered after the ceiling fell under it.
const MEMORY: Duration = Duration::from_secs(30);
/// A cap unchanged for this long before the ceiling fell is worth returning to.
const STABLE: Duration = Duration::from_secs(3);
/// A refused request that was not a probe, within this of the last such one, lowers the cap by
/// one: the two are no coincidence.
const MILD_SPAN: Duration = Duration::from_secs(3);
/// Two refused non-probes within one window: the ceiling fell under the job, by an unknown
/// amount; the cap drops to this share of what the server let through, then climbs.
const DEEP_CUT: f64 = 0.55;
/// The cap never drops below this share of the configured rate's requests per window.
const FLOOR: f64 = 0.05;

/// See the module documentation.
pub struct RateLimiter {
    /// On the standard monotonic clock: governor's default (quanta) calibrates the TSC when first
    /// used, which cost every run about 50 ms of CPU before its first request.
    ceiling: Gcra<NotKeyed, InMemoryState, MonotonicClock>,
    configured: f64,
    /// The most the cap may climb to: the configured rate's requests in a window, and the burst.
    max_cap: u32,
    /// The least it may drop to.
    min_cap: u32,
    /// One request at a time through the adaptive layer.
    turn: tokio::sync::Mutex<()>,
    state: Mutex<Adaptive>,
}

struct Adaptive {
    /// `None` until the first 429: the configured rate, paced by the ceiling alone.
    cap: Option<u32>,
    /// From when a request beyond the cap may go out (a probe); in the past while climbing.
    probe_from: Instant,
    /// The last request's slot in the pacing, and when it was actually let through.
    last_slot: Option<(Instant, Instant)>,
    /// Requests wait until this instant (from `Retry-After`).
    hold_until: Instant,
    /// Each request of the last three windows, oldest first.
    sent: VecDeque<Sent>,
    /// When each of those answered 429 was let through.
    refused: VecDeque<Instant>,
    /// When a 429 last moved the cap (or confirmed it): 429s of requests sent before this belong
    /// to that decision.
    decided_at: Option<Instant>,
    /// When the last refused non-probe was decided on.
    last_miss: Option<Instant>,
    /// When the cap last changed (either way).
    changed_at: Option<Instant>,
    /// A cap that held before the ceiling fell under it, and when it fell.
    remembered: Option<(u32, Instant)>,
    /// The margin for the requests' travel, as last raised by a stray refusal, and when.
    margin: (Duration, Instant),
    /// Probes refused in a row at an unchanged cap: each one spaces the next probe further.
    confirmed: u32,
    decreases: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    /// Sent beyond the cap.
    probe: bool,
}

impl Adaptive {
    /// The earliest instant from `t` on at which fewer than `k` requests were sent in the
    /// window of one second and the margin before it.
    fn room_at(&self, k: u32, t: Instant) -> Instant {
        let k = k.max(1) as usize;
        match self.sent.len().checked_sub(k) {
            Some(i) => t.max(self.sent[i].at + self.span(t)),
            None => t,
        }
    }

    /// How many requests a window (and the margin) may hold at `t`: the cap, or while probing
    /// the cap doubling every [`RAMP_DOUBLING`] since the probe began.
    fn allowed(&self, cap: u32, t: Instant, max_cap: u32) -> f64 {
        let top = f64::from(self.returning(cap, t).unwrap_or(max_cap));
        let cap = f64::from(cap);
        match t.checked_duration_since(self.probe_from) {
            None => cap,
            Some(d) => {
                let doublings = (d.as_secs_f64() / RAMP_DOUBLING.as_secs_f64()).min(30.0);
                (cap * doublings.exp2()).min(top)
            }
        }
    }

    /// A cap that held before the ceiling fell, above `cap` and recent at `t`: a climb stops
    /// there.
    fn returning(&self, cap: u32, t: Instant) -> Option<u32> {
        self.remembered
            .filter(|(held, at)| cap < *held && t.duration_since(*at) < MEMORY)
            .map(|(held, _)| held)
    }

    /// When a climb from `cap` that began at `probe_from` reached `held` and a whole window and
    /// margin passed at it without a refusal: then the ceiling is back.
    fn returned_at(&self, cap: u32, held: u32) -> Instant {
        let doublings = (f64::from(held) / f64::from(cap.max(1))).log2().max(0.0);
        let reached = self.probe_from + RAMP_DOUBLING.mul_f64(doublings);
        reached + self.span(reached)
    }

    /// When the next request may go out, from `now` on: paced evenly at what a window may
    /// hold, and never more than that in any window and margin.
    fn next_at(&self, now: Instant, max_cap: u32) -> Instant {
        let at = now.max(self.hold_until);
        let Some(cap) = self.cap else {
            return at;
        };
        let k = self.allowed(cap, at, max_cap);
        let next = self.room_at(k.floor() as u32, at.max(self.slot(k)));
        if at >= self.probe_from {
            // Ramping: what a window may hold grows while this waits, so it asks again soon.
            next.min(at + RAMP_TICK)
        } else {
            // A probe due before the room would come sooner.
            next.min(self.probe_from.max(at))
        }
    }

    /// The pacing's next slot at `per_window` requests per window and margin: one interval after
    /// the last request's slot (so that timer and scheduling delays are made up, by one interval
    /// at most).
    fn slot(&self, per_window: f64) -> Instant {
        let Some((slot, sent)) = self.last_slot else {
            return self.hold_until;
        };
        let interval = self.span(sent).div_f64(per_window.max(1.0));
        slot.max(sent.checked_sub(interval).unwrap_or(sent)) + interval
    }

    /// Requests sent since the climb began, within the window and margin before `now`.
    fn climbed(&self, now: Instant) -> usize {
        let since = self
            .probe_from
            .max(now.checked_sub(self.span(now)).unwrap_or(now));
        self.sent.iter().rev().take_while(|x| x.at >= since).count()
    }

    /// The window the cap counts over at `t`: the server's, and the margin for travel.
    fn span(&self, t: Instant) -> Duration {
        WINDOW + self.margin_at(t)
    }

    /// The margin for travel at `t`: as last raised, its excess over [`MARGIN`] halving every
    /// [`MARGIN_HALF_LIFE`] since.
    fn margin_at(&self, t: Instant) -> Duration {
        let (raised, at) = self.margin;
        let halvings =
            t.saturating_duration_since(at).as_secs_f64() / MARGIN_HALF_LIFE.as_secs_f64();
        MARGIN + raised.saturating_sub(MARGIN).div_f64(halvings.exp2())
    }

    /// A refused request the cap did not explain: the requests travel less evenly than the
    /// margin allows for; it doubles.
    fn widen(&mut self, now: Instant) {
        self.margin = ((self.margin_at(now) * 2).min(MARGIN_MAX), now);
    }

    /// What the server let through in the window and margin before the request sent at `sent`:
    /// requests sent then, less those refused (those still unanswered count as let through).
    fn let_through(&self, sent: Instant) -> usize {
        let since = sent.checked_sub(self.span(sent)).unwrap_or(sent);
        let before = |t: &Instant| (since..sent).contains(t);
        (self.sent.iter().filter(|x| before(&x.at)).count())
            .saturating_sub(self.refused.iter().filter(|t| before(t)).count())
    }

    /// A request sent at `sent` under `cap`, not a probe, was refused: the new cap (`min_cap`
    /// at least) and when to probe next, or `None` when nothing is decided yet (the margin
    /// widened).
    fn under_cap(
        &mut self,
        cap: u32,
        let_through: u32,
        sent: Instant,
        now: Instant,
        min_cap: u32,
    ) -> Option<(u32, Option<Duration>)> {
        // The request sent just before this one refused too: not a request that travelled
        // slowly, but a server's window that no longer has room at the cap.
        let previous = self.sent.iter().rev().map(|x| x.at).find(|t| *t < sent);
        let deep =
            previous.is_some_and(|p| sent.duration_since(p) < WINDOW && self.refused.contains(&p));
        let mild = (self.last_miss).is_some_and(|t| now.duration_since(t) < MILD_SPAN);
        self.last_miss = Some(now);
        if deep {
            // The ceiling fell under the job by an unknown amount: well below what got through,
            // then probe upwards as soon as the window has room for that.
            if self
                .changed_at
                .is_none_or(|t| now.duration_since(t) >= STABLE)
                && self.returning(cap, now).is_none()
            {
                // (A higher cap still remembered from an earlier fall is kept.)
                self.remembered = Some((cap, now));
            }
            let cut = ((f64::from(let_through) * DEEP_CUT).floor() as u32).clamp(min_cap, cap);
            let room = self.room_at(cut, now);
            Some((cut, Some(room.duration_since(now))))
        } else if mild && self.margin_at(now) >= MARGIN_BEFORE_CUT {
            Some((let_through.min(cap.saturating_sub(1)).max(min_cap), None))
        } else {
            // Alone: a request that travelled slowly, or a neighbour's probe. The margin
            // widens; the next refused request says whether it was more.
            self.widen(now);
            tracing::debug!(
                margin_ms = self.margin_at(now).as_millis() as u64,
                "429 of a request under the cap: the margin widens"
            );
            None
        }
    }

    /// Time to the next probe at `cap`.
    fn gap(&self, cap: u32, now: Instant) -> Duration {
        if self.returning(cap, now).is_some() {
            return RETURN_GAP;
        }
        let base = PROBE_REQUESTS / f64::from(cap.max(1));
        Duration::from_secs_f64(base * f64::from(self.confirmed.min(BACKOFF)).exp2())
            .clamp(MIN_GAP, MAX_GAP)
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
        let per_window = rate * (WINDOW + MARGIN).as_secs_f64();
        let now = Instant::now();
        RateLimiter {
            ceiling: Gcra::direct_with_clock(quota, MonotonicClock),
            configured: rate,
            max_cap: (per_window.ceil() as u32).saturating_add(burst.get()),
            min_cap: ((per_window * FLOOR).floor() as u32).max(1),
            turn: tokio::sync::Mutex::new(()),
            state: Mutex::new(Adaptive {
                cap: None,
                probe_from: now,
                last_slot: None,
                hold_until: now,
                sent: VecDeque::new(),
                refused: VecDeque::new(),
                decided_at: None,
                last_miss: None,
                changed_at: None,
                remembered: None,
                confirmed: 0,
                margin: (MARGIN, now),
                decreases: 0,
            }),
        }
    }

    /// Waits until one more request may be sent, and returns the instant it was let through:
    /// hand it to [`RateLimiter::on_429`] if the request is refused.
    pub async fn acquire(&self) -> Instant {
        // Until the first 429 the governor alone paces, without the queue (as before the
        // adaptive layer existed): rate fidelity is governor's.
        let capped = self.state.lock().expect("limiter lock").cap.is_some();
        let _turn = match capped {
            true => Some(self.turn.lock().await),
            false => None,
        };
        loop {
            // Adaptive layer first: it only ever slows things down. A 429 or a Retry-After
            // while this request slept moves the instant on; it is asked again after waking.
            loop {
                let now = Instant::now();
                let at = self
                    .state
                    .lock()
                    .expect("limiter lock")
                    .next_at(now, self.max_cap);
                if at <= now {
                    break;
                }
                tokio::time::sleep_until(at).await;
            }
            self.ceiling.until_ready().await;
            let mut s = self.state.lock().expect("limiter lock");
            let now = Instant::now();
            if s.next_at(now, self.max_cap) > now {
                continue;
            }
            if let Some(cap) = s.cap {
                let slot = s.slot(s.allowed(cap, now, self.max_cap)).min(now);
                s.last_slot = Some((slot, now));
                if let Some(held) = s.returning(cap, now)
                    && now >= s.probe_from
                    && now >= s.returned_at(cap, held)
                    && s.climbed(now) + 1 >= held as usize
                {
                    // Climbed back to the cap that held: a window went by there, this request
                    // makes it full, and none of the climb was refused (a refusal would have
                    // ended the climb). The ceiling is back where it was.
                    s.cap = Some(held);
                    s.changed_at = Some(now);
                    s.remembered = None;
                    s.confirmed = 0;
                    s.probe_from = now + s.gap(held, now);
                    tracing::debug!(cap = held, "the cap that held before the fall is back");
                }
            }
            let probe = s.cap.is_some() && now >= s.probe_from;
            s.sent.push_back(Sent { at: now, probe });
            prune(&mut s.sent, |x| x.at, now);
            return now;
        }
    }

    /// The request let through at `sent` (as [`RateLimiter::acquire`] returned) was answered 429:
    /// move the cap, unless that request left before the last decision (then this 429 is part of
    /// the overshoot already answered).
    pub fn on_429(&self, sent: Instant) {
        let mut s = self.state.lock().expect("limiter lock");
        let now = Instant::now();
        s.refused.push_back(sent);
        prune(&mut s.refused, |t| *t, now);
        if s.decided_at.is_some_and(|at| sent < at) {
            return;
        }
        let let_through = u32::try_from(s.let_through(sent))
            .unwrap_or(u32::MAX)
            .clamp(self.min_cap, self.max_cap);
        let probe = s.sent.iter().any(|x| x.at == sent && x.probe);
        let old = s.cap;
        let (cap, probe_in) = match s.cap {
            // The first 429: the server's window was full with what it let through.
            None => {
                s.last_miss = Some(now);
                (let_through, None)
            }
            // Refused while probing: the server's window was full with what it let through,
            // more than the cap if the ceiling rose.
            Some(_) if probe => (let_through, None),
            Some(cap) => match s.under_cap(cap, let_through, sent, now, self.min_cap) {
                Some(decided) => decided,
                None => return,
            },
        };
        if old.is_none_or(|c| cap < c) {
            s.decreases += 1;
        }
        if old != Some(cap) {
            s.changed_at = Some(now);
        }
        s.confirmed = match old {
            Some(old) if probe && cap <= old => s.confirmed.saturating_add(1),
            _ => 0,
        };
        let gap = probe_in.unwrap_or_else(|| s.gap(cap, now));
        s.cap = Some(cap);
        s.probe_from = now + gap;
        s.decided_at = Some(now);
        tracing::debug!(
            cap,
            probe,
            probe_in_ms = gap.as_millis() as u64,
            "429 received: the job-wide cap per window"
        );
    }

    /// A `Retry-After` was answered: no request of the job goes out before `now + delay`.
    pub fn hold_for(&self, delay: Duration) {
        let mut s = self.state.lock().expect("limiter lock");
        let until = Instant::now() + delay;
        if until > s.hold_until {
            s.hold_until = until;
        }
        // Probing starts again after the hold: nothing sent meanwhile showed there was room.
        if let Some(cap) = s.cap
            && s.probe_from < until
        {
            s.probe_from = until + s.gap(cap, until);
        }
    }

    /// The rate the adaptive layer currently allows, in requests per second.
    pub fn current_rate(&self) -> f64 {
        let s = self.state.lock().expect("limiter lock");
        match s.cap {
            None => self.configured,
            Some(cap) => {
                let span = s.span(Instant::now()).as_secs_f64();
                (f64::from(cap) / span).min(self.configured)
            }
        }
    }

    /// The configured ceiling, in requests per second.
    pub fn configured_rate(&self) -> f64 {
        self.configured
    }

    /// How many times a 429 lowered the cap.
    pub fn decreases(&self) -> u64 {
        self.state.lock().expect("limiter lock").decreases
    }

    /// The server ceiling the job holds to (requests per window), once a 429 set one.
    pub fn estimated_ceiling(&self) -> Option<f64> {
        self.state.lock().expect("limiter lock").cap.map(f64::from)
    }
}

/// Drops entries older than three windows (the estimate looks a window and its margin back from
/// a request whose answer may have taken a window or more).
fn prune<T>(q: &mut VecDeque<T>, at: impl Fn(&T) -> Instant, now: Instant) {
    while q
        .front()
        .is_some_and(|t| now.duration_since(at(t)) > 3 * WINDOW)
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

    /// A server with a sliding one-second window in which refused requests count too (Jumio's
    /// rule), at `ceiling(t)` requests per second `t` after `start`. The job sends as fast as `l`
    /// and 30 per second allow, until `until`; every request refused is reported to `l`.
    /// Returns each request's instant and whether it was refused.
    async fn serve(
        l: &RateLimiter,
        start: Instant,
        until: Duration,
        ceiling: impl Fn(f64) -> usize,
    ) -> Vec<(Instant, bool)> {
        let mut log: Vec<(Instant, bool)> = Vec::new();
        let mut next = start;
        while Instant::now() < start + until {
            tokio::time::sleep_until(next).await;
            let t = l.acquire().await;
            next = t + AT_30;
            let since = t.checked_sub(WINDOW).unwrap_or(t);
            let in_window = log.iter().filter(|(s, _)| *s > since).count();
            let refused = in_window >= ceiling((t - start).as_secs_f64());
            if refused {
                l.on_429(t);
            }
            log.push((t, refused));
        }
        log
    }

    /// Served and refused requests of `log` from `from` to `to` seconds after `start`.
    fn judge(log: &[(Instant, bool)], start: Instant, from: f64, to: f64) -> (usize, usize) {
        let inside = log.iter().filter(|(t, _)| {
            let s = (*t - start).as_secs_f64();
            (from..to).contains(&s)
        });
        inside.fold(
            (0, 0),
            |(ok, no), (_, refused)| {
                if *refused { (ok, no + 1) } else { (ok + 1, no) }
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_is_what_the_server_let_through_in_the_last_second() {
        let l = RateLimiter::new(30.0, 10_000);
        let sent = send(&l, 20, AT_30).await;
        // A server allowing 15 per second refuses the 16th and the rest: one decision.
        for t in &sent[15..] {
            l.on_429(*t);
        }
        assert_eq!(l.decreases(), 1);
        assert_eq!(l.estimated_ceiling(), Some(15.0));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_429_nothing_is_sent_until_the_window_has_room() {
        let l = RateLimiter::new(30.0, 10_000);
        let sent = send(&l, 20, AT_30).await;
        l.on_429(sent[15]);
        // 20 sent in the last window, the cap 15: the 6 oldest must age out of the window and
        // the margin first.
        let next = l.acquire().await;
        let room = sent[5] + WINDOW + MARGIN;
        assert!(next >= room, "{:?}", room - next);
        assert!(next <= room + Duration::from_millis(1), "{:?}", next - room);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_holds_in_every_window_evenly_until_a_probe_is_due() {
        let l = RateLimiter::new(30.0, 10_000);
        let sent = send(&l, 16, AT_30).await;
        l.on_429(sent[15]);
        let decided = Instant::now();
        // As fast as the limiter allows, for less than the time to the first probe.
        let mut paced = Vec::new();
        while Instant::now() < decided + MIN_GAP {
            paced.push(l.acquire().await);
        }
        let all: Vec<Instant> = sent.iter().chain(&paced).copied().collect();
        for (i, t) in paced.iter().enumerate() {
            let since = *t - (WINDOW + MARGIN);
            let n = all.iter().filter(|s| **s > since && *s <= t).count();
            assert!(n <= 15, "{n} in the window ending at request {i}");
        }
        // Evenly: no quarter of a second holds much more than a quarter of the cap.
        for t in &paced {
            let n = paced
                .iter()
                .filter(|s| **s >= *t && **s < *t + WINDOW / 4)
                .count();
            assert!(n <= 6, "{n} in a quarter of a second");
        }
        // Nearly the cap's rate: 15 per window and margin.
        let rate = (paced.len() - 1) as f64 / (paced[paced.len() - 1] - paced[0]).as_secs_f64();
        assert!((14.4..=15.5).contains(&rate), "{rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_ceiling_is_probed_less_and_less_often() {
        let l = RateLimiter::new(30.0, 10_000);
        let start = Instant::now();
        let log = serve(&l, start, Duration::from_secs(90), |_| 15).await;
        let refused: Vec<f64> = log
            .iter()
            .filter(|(_, r)| *r)
            .map(|(t, _)| (*t - start).as_secs_f64())
            .collect();
        // The first 429, then one per probe, each probe refused at the same cap doubling the
        // time to the next (PROBE_REQUESTS ÷ 15 = 8 s, 16 s, then MAX_GAP).
        let gaps: Vec<f64> = refused.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps.len(), 4, "refused at {refused:?}");
        for (gap, want) in gaps.iter().zip([8.0, 16.0, 30.0, 30.0]) {
            assert!((want..want + 0.5).contains(gap), "gaps {gaps:?}");
        }
        let (served, _) = judge(&log, start, 10.0, 90.0);
        assert!(served as f64 >= 0.98 * 15.0 * 80.0, "{served} served");
        assert_eq!(l.estimated_ceiling(), Some(15.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_ceiling_that_drops_and_rises_again_is_followed_within_seconds() {
        let l = RateLimiter::new(30.0, 10_000);
        let start = Instant::now();
        let ceiling = |t: f64| if (20.0..32.0).contains(&t) { 8 } else { 15 };
        let log = serve(&l, start, Duration::from_secs(42), ceiling).await;
        // The drop: a deep cut, then the ramp finds 8.
        let (served, refused) = judge(&log, start, 20.0, 32.0);
        assert!(served >= 85, "{served} served at 8 per second");
        assert!(refused <= 7, "{refused} refused at 8 per second");
        // The rise: found by the next probe, which comes sooner below a cap that held; the
        // climb stops at that cap, so the ceiling's return costs no 429.
        let (served, refused) = judge(&log, start, 32.0, 42.0);
        assert!(
            served >= 125,
            "{served} served at 15 per second after the rise"
        );
        assert_eq!(refused, 0, "refused after the rise");
        // Found within the probe gap below a cap that held, and the ramp's second.
        let found = 32.0 + RETURN_GAP.as_secs_f64() + 1.0;
        let (served, _) = judge(&log, start, found, 42.0);
        assert!(
            served as f64 >= 0.95 * 15.0 * (42.0 - found),
            "{served} served from {found} s"
        );
        assert_eq!(l.estimated_ceiling(), Some(15.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_remembered_cap_is_taken_back_only_once_requests_at_it_went_through() {
        // 15, then 8 for good from 20 s: a deep cut remembers 15, the climb finds 8.
        let l = RateLimiter::new(30.0, 10_000);
        let start = Instant::now();
        let ceiling = |t: f64| if t < 20.0 { 15 } else { 8 };
        serve(&l, start, Duration::from_secs(24), ceiling).await;
        assert_eq!(l.estimated_ceiling(), Some(8.0));
        // A Retry-After holds everything for 5 s: nothing sent meanwhile shows room for 15.
        l.hold_for(Duration::from_secs(5));
        l.acquire().await;
        assert_eq!(l.estimated_ceiling(), Some(8.0));
        // Little to send (a request a second) for the rest of the memory: the cap stays.
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(1)).await;
            l.acquire().await;
            assert_eq!(l.estimated_ceiling(), Some(8.0));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_refused_request_alone_changes_nothing_two_in_a_row_cut_deep() {
        let l = RateLimiter::new(30.0, 10_000);
        let sent = send(&l, 16, AT_30).await;
        l.on_429(sent[15]);
        tokio::time::advance(Duration::from_secs(4)).await;
        let sent = send(&l, 5, Duration::ZERO).await;
        // A request that travelled slowly: refused alone, the cap stays.
        l.on_429(sent[4]);
        assert_eq!(l.estimated_ceiling(), Some(15.0));
        let more = send(&l, 3, Duration::ZERO).await;
        assert_eq!(l.estimated_ceiling(), Some(15.0));
        // The next one refused too: the window has no room at the cap any more.
        l.on_429(more[0]);
        // Let through in the second before it: the 5, less the one refused.
        assert_eq!(l.estimated_ceiling(), Some((4.0 * DEEP_CUT).floor()));
        assert_eq!(l.decreases(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stray_refusal_widens_the_margin_for_a_while() {
        let l = RateLimiter::new(30.0, 10_000);
        let sent = send(&l, 16, AT_30).await;
        l.on_429(sent[15]);
        let at = |margin_ms: f64| 15.0 / (1.0 + margin_ms / 1000.0);
        let close = |a: f64, b: f64| (a - b).abs() < 0.01;
        assert!(close(l.current_rate(), at(10.0)), "{}", l.current_rate());
        // A refused request the cap does not explain: the margin doubles, the cap stays.
        tokio::time::advance(Duration::from_secs(1)).await;
        let more = send(&l, 5, AT_30).await;
        l.on_429(more[4]);
        assert_eq!(l.estimated_ceiling(), Some(15.0));
        assert!(close(l.current_rate(), at(20.0)), "{}", l.current_rate());
        // Another within MILD_SPAN: it doubles again, past MARGIN_BEFORE_CUT.
        let more = send(&l, 5, AT_30).await;
        l.on_429(more[4]);
        assert_eq!(l.estimated_ceiling(), Some(15.0));
        assert!(close(l.current_rate(), at(40.0)), "{}", l.current_rate());
        // A third within MILD_SPAN: the cap itself is too high; it drops to what got through
        // in the window before (15 sent, 3 of them refused).
        let more = send(&l, 5, AT_30).await;
        l.on_429(more[4]);
        assert_eq!(l.estimated_ceiling(), Some(12.0));
        assert_eq!(l.decreases(), 2);
        // The margin's excess over MARGIN halves every MARGIN_HALF_LIFE without another.
        tokio::time::advance(2 * MARGIN_HALF_LIFE).await;
        let at = |margin_ms: f64| 12.0 / (1.0 + margin_ms / 1000.0);
        assert!(
            close(l.current_rate(), at(10.0 + 30.0 / 4.0)),
            "{}",
            l.current_rate()
        );
    }

    /// The server of [`shared`]: Jumio's sliding window (refused requests counted or not), or
    /// a token bucket holding one second's worth.
    #[derive(Clone, Copy)]
    enum Server {
        Sliding { count_refused: bool },
        Bucket,
    }

    /// A server's ceiling `t` seconds after the start, in requests per second.
    type Ceiling = dyn Fn(f64) -> f64;

    /// A scenario of [`shared`].
    struct Scenario<'a> {
        server: Server,
        /// Processes, each with its own limiter at `rate`, sending as fast as it and `rate` allow.
        jobs: usize,
        rate: f64,
        /// The server's ceiling `t` seconds after the start, in requests per second.
        ceiling: &'a Ceiling,
        /// Each request arrives at the server between no time and this long after the limiter
        /// let it through (pseudo-random, so arrivals may come out of order), as the real job's
        /// requests do: a connection pool and 32 tasks on two cores.
        jitter: Duration,
        /// Each answer reaches its job this long after the request arrived.
        answer_after: Duration,
    }

    /// A deterministic spread in `0..=1` for the `i`-th request of job `j`.
    fn spread(j: usize, i: u64) -> f64 {
        let mut x = (i ^ ((j as u64) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Runs `sc` for `until` seconds; returns (served, refused) from `from` on and what the
    /// ceiling allowed then, judged by arrival at the server.
    async fn shared(sc: &Scenario<'_>, from: f64, until: f64) -> Judged {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        type Answer = tokio::sync::mpsc::UnboundedSender<(Instant, bool, Instant)>;
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(until);
        let limiters: Vec<RateLimiter> = (0..sc.jobs)
            .map(|_| RateLimiter::new(sc.rate, 10_000))
            .collect();
        // Requests on their way: (arrival, sequence, job, let through at).
        let (to_server, mut arrivals) =
            tokio::sync::mpsc::unbounded_channel::<(Instant, u64, usize, Instant)>();
        let mut answers: Vec<Answer> = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..sc.jobs {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            answers.push(tx);
            inboxes.push(rx);
        }
        let send = |j: usize| {
            let (l, to_server) = (&limiters[j], to_server.clone());
            async move {
                let spacing = Duration::from_secs_f64(1.0 / sc.rate);
                let mut next = start;
                let mut i = 0u64;
                while Instant::now() < end {
                    tokio::time::sleep_until(next).await;
                    let t = l.acquire().await;
                    next = t + spacing;
                    let arrival = t + sc.jitter.mul_f64(spread(j, i));
                    to_server.send((arrival, i, j, t)).unwrap();
                    i += 1;
                }
            }
        };
        let answer = |j: usize, mut inbox: tokio::sync::mpsc::UnboundedReceiver<_>| {
            let l = &limiters[j];
            async move {
                while let Some((t, refused, at)) = inbox.recv().await {
                    tokio::time::sleep_until(at).await;
                    if refused {
                        l.on_429(t);
                    }
                }
            }
        };
        let server = async move {
            let mut log: Vec<(Instant, bool)> = Vec::new();
            let mut bucket = ((sc.ceiling)(0.0), start);
            let mut pending = BinaryHeap::new();
            let mut open = true;
            while open || !pending.is_empty() {
                let due = pending
                    .peek()
                    .map(|Reverse(x): &Reverse<(Instant, u64, usize, Instant)>| x.0);
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(due.unwrap_or(end)), if due.is_some() => {
                        let Reverse((arrival, _, j, t)) = pending.pop().unwrap();
                        let c = (sc.ceiling)((arrival - start).as_secs_f64());
                        let refused = match sc.server {
                            Server::Sliding { count_refused } => {
                                let since = arrival.checked_sub(WINDOW).unwrap_or(arrival);
                                let n = log
                                    .iter()
                                    .filter(|(s, r)| *s > since && (count_refused || !r))
                                    .count();
                                n as f64 + 1.0 > c
                            }
                            Server::Bucket => {
                                bucket.0 =
                                    (bucket.0 + (arrival - bucket.1).as_secs_f64() * c).min(c);
                                bucket.1 = arrival;
                                let ok = bucket.0 >= 1.0;
                                if ok {
                                    bucket.0 -= 1.0;
                                }
                                !ok
                            }
                        };
                        log.push((arrival, refused));
                        let _ = answers[j].send((t, refused, arrival + sc.answer_after));
                    }
                    m = arrivals.recv(), if open => match m {
                        Some((arrival, i, j, t)) => pending.push(Reverse((arrival, i, j, t))),
                        None => open = false,
                    },
                }
            }
            log
        };
        let senders = futures::future::join_all((0..sc.jobs).map(send));
        drop(to_server);
        let answerers = futures::future::join_all(
            inboxes
                .into_iter()
                .enumerate()
                .map(|(j, inbox)| answer(j, inbox)),
        );
        let (_, log, _) = tokio::join!(senders, server, answerers);
        let (served, refused) = judge(&log, start, from, until);
        let ms = ((until - from) * 1000.0) as u64;
        let allowed = (0..ms)
            .map(|m| (sc.ceiling)(from + (m as f64 + 0.5) / 1000.0) / 1000.0)
            .sum();
        let now = Instant::now();
        Judged {
            served,
            refused,
            allowed,
            // Each job's first 429 sets its cap; what came after lowered it.
            lowered: limiters
                .iter()
                .map(|l| l.decreases().saturating_sub(1))
                .sum(),
            widest: (limiters.iter())
                .map(|l| l.state.lock().unwrap().margin_at(now))
                .max()
                .unwrap_or_default(),
        }
    }

    /// What [`shared`] measured.
    struct Judged {
        /// Requests served and refused from `from` on, and what the ceiling allowed then.
        served: usize,
        refused: usize,
        allowed: f64,
        /// Times a cap was lowered after each job's first 429.
        lowered: u64,
        /// The widest margin of any job at the end.
        widest: Duration,
    }

    impl Judged {
        fn share(&self) -> f64 {
            self.refused as f64 / (self.served + self.refused) as f64
        }

        fn served_share(&self) -> f64 {
            self.served as f64 / self.allowed
        }
    }

    /// The issue's scenarios (the job at 30 per second, the server at 15; `examples/bench.rs
    /// adaptive`), judged from 10 s to 35 s.
    async fn scenarios(jitter: Duration, answer_after: Duration) -> Vec<(&'static str, Judged)> {
        let refused = Server::Sliding {
            count_refused: true,
        };
        let steady = |_: f64| 15.0;
        let changing = |t: f64| {
            if (10.0 + 25.0 / 3.0..10.0 + 50.0 / 3.0).contains(&t) {
                8.0
            } else {
                15.0
            }
        };
        let plain = Server::Sliding {
            count_refused: false,
        };
        let all: [(&str, Server, usize, &Ceiling); 5] = [
            ("sliding", plain, 1, &steady),
            ("refused", refused, 1, &steady),
            ("bucket", Server::Bucket, 1, &steady),
            ("change", refused, 1, &changing),
            ("two", refused, 2, &steady),
        ];
        let mut figures = Vec::new();
        for (name, server, jobs, ceiling) in all {
            let sc = Scenario {
                server,
                jobs,
                rate: 30.0 / jobs as f64,
                ceiling,
                jitter,
                answer_after,
            };
            figures.push((name, shared(&sc, 10.0, 35.0).await));
        }
        figures
    }

    #[tokio::test(start_paused = true)]
    async fn the_issue_scenarios_hold_at_the_figures_of_the_benchmark() {
        // Answers within a few milliseconds and requests arriving as they leave: a quiet
        // machine, where this simulation gives the figures `examples/bench.rs adaptive`
        // measures (BENCHMARKS.md, sessions 6 to 8) to within a request or two. The steady
        // ceilings and two processes meet the issue's targets (< 2 % 429s, ≥ 0.92 of the
        // ceiling) with room; 15 → 8 → 15 meets the 429 share but serves 0.91 of the ceiling
        // (see `a_ceiling_that_falls_for_a_while_is_followed_whenever_it_returns`); the token
        // bucket, not one of the issue's, stays under 3 %.
        for (name, j) in scenarios(Duration::ZERO, Duration::from_millis(3)).await {
            let (share, served) = (j.share(), j.served_share());
            eprintln!(
                "{name}: {:.2} % 429s, {served:.3} of the ceiling",
                100.0 * share
            );
            let (most, least) = match name {
                "bucket" => (0.03, 0.98),
                "change" => (0.02, 0.9),
                _ => (0.01, 0.97),
            };
            assert!(share < most && served >= least, "{name}: {share} {served}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_arrive_unevenly_widen_the_margin_instead_of_cutting_the_cap() {
        // Each request arrives up to 20 ms after it was let through, out of order (a loaded
        // machine): the margin widens past that, the steady ceilings are never cut, and they
        // and two processes still meet the issue's targets.
        for (name, j) in scenarios(Duration::from_millis(20), Duration::from_millis(5)).await {
            let (share, served) = (j.share(), j.served_share());
            eprintln!(
                "{name}: {:.2} % 429s, {served:.3} of the ceiling, lowered {}, margin {:?}",
                100.0 * share,
                j.lowered,
                j.widest
            );
            let (most, least) = match name {
                "bucket" => (0.03, 0.98),
                "change" => (0.025, 0.85),
                _ => (0.02, 0.94),
            };
            assert!(share < most && served >= least, "{name}: {share} {served}");
            if name == "sliding" || name == "refused" {
                assert!(
                    j.widest >= Duration::from_millis(20),
                    "{name}: {:?}",
                    j.widest
                );
                assert_eq!(j.lowered, 0, "{name}: a steady ceiling's cap was cut");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_and_two_processes_hold_a_steady_ceiling_for_minutes() {
        // Judged from 35 s to 300 s: no probe, margin or remembered cap of one process makes
        // the other's cap swing (a climb back taken on time alone did, to 1.8 % and 0.947).
        let steady = |_: f64| 15.0;
        for jobs in [1, 2] {
            let sc = Scenario {
                server: Server::Sliding {
                    count_refused: true,
                },
                jobs,
                rate: 30.0 / jobs as f64,
                ceiling: &steady,
                jitter: Duration::ZERO,
                answer_after: Duration::from_millis(5),
            };
            let j = shared(&sc, 35.0, 300.0).await;
            let (share, served) = (j.share(), j.served_share());
            eprintln!(
                "{jobs}: {:.2} % 429s, {served:.3} of the ceiling",
                100.0 * share
            );
            assert!(share < 0.01 && served >= 0.97, "{jobs}: {share} {served}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_ceiling_that_falls_for_a_while_is_followed_whenever_it_returns() {
        // 15 → 8 → 15 with the low stretch from 18.3 s lasting 5.3 s to 10.8 s: the rise is
        // found by the next probe, so what is served depends on where it falls between two
        // (a sawtooth from 0.89 to 0.96); on average the targets hold.
        let (mut shares, mut served) = (Vec::new(), Vec::new());
        for k in 0..12 {
            let (fall, lasts) = (10.0 + 25.0 / 3.0, 25.0 / 3.0 - 3.0 + 0.5 * f64::from(k));
            let ceiling = move |t: f64| match (fall..fall + lasts).contains(&t) {
                true => 8.0,
                false => 15.0,
            };
            let sc = Scenario {
                server: Server::Sliding {
                    count_refused: true,
                },
                jobs: 1,
                rate: 30.0,
                ceiling: &ceiling,
                jitter: Duration::ZERO,
                answer_after: Duration::from_millis(3),
            };
            let j = shared(&sc, 10.0, 35.0).await;
            shares.push(j.share());
            served.push(j.served_share());
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let met = (shares.iter().zip(&served))
            .filter(|(share, served)| **share < 0.02 && **served >= 0.92)
            .count();
        eprintln!("429s {shares:.4?}\nserved {served:.3?}");
        assert!(
            mean(&shares) < 0.02 && mean(&served) >= 0.92,
            "{shares:?} {served:?}"
        );
        assert!(met >= 8, "{met} of 12 meet the targets");
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
