//! The job-wide circuit breaker: when requests fail across the board (connections refused or
//! reset, timeouts, 5xx on most of the recent requests, from more than one request path), the
//! API is taken to be down and the whole job pauses instead of burning every reference's retries.
//!
//! States:
//! - **closed**: requests go; the outcome of each attempt is recorded in a short window;
//! - **open**: nothing is sent until the pause is over; the pause grows (doubling from
//!   [`BreakerOptions::first_pause`] up to [`BreakerOptions::max_pause`]) with each failed probe;
//! - **probing**: one request (the first to ask) is let through; every other waits for its answer.
//!   Any HTTP answer but a 5xx closes the breaker; a 5xx or a network failure opens it again.
//!
//! While the breaker is open (and for the probe), a failed attempt does not use up the request's
//! `max_retries`: the outage is the job's, not the reference's. An outage lasting longer than
//! [`BreakerOptions::max_outage`] stops the pausing: failures count again, as without the breaker,
//! until the API answers once more.
//!
//! Like the rate limiter, this holds no per-request state and is shared behind an `Arc`. It logs
//! only counts and durations, never a path or a reference.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Outcomes remembered to decide whether failures are "across the board".
pub const WINDOW: usize = 10;
/// Transient failures among the last [`WINDOW`] outcomes that open the breaker.
pub const OPEN_AT: usize = 8;

/// How the breaker pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOptions {
    /// The first pause after the breaker opens.
    pub first_pause: Duration,
    /// The longest pause between two probes.
    pub max_pause: Duration,
    /// The longest one outage is waited out; then failures count again until the API answers.
    pub max_outage: Duration,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        BreakerOptions {
            first_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(30),
            max_outage: crate::job::defaults::MAX_OUTAGE,
        }
    }
}

/// What one attempt's outcome says about the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer other than a 5xx (a 404 or a 429 is the API answering).
    Answered,
    /// A 5xx, a timeout, a refused or reset connection, an interrupted body. `path` tells
    /// requests apart (a hash of the request path): failures of one path alone are that
    /// reference's, not an outage.
    Failed {
        /// Any stable hash of the request's path.
        path: u64,
    },
}

/// The state, as progress lines and the log name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests go.
    Closed,
    /// Paused until the next probe.
    Open,
    /// One probe is out.
    Probing,
}

impl State {
    /// `closed`, `open` or `probing`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::Probing => "probing",
        }
    }
}

/// What [`Breaker::admit`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: an ordinary request.
    Normal,
    /// This request is the probe: its outcome closes or reopens the breaker. It must be
    /// recorded with [`Breaker::record`], or released with [`Breaker::abandon_probe`] if the
    /// request is dropped before it ends.
    Probe,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Outcomes while closed, newest last: `None` answered, `Some(path)` failed.
    window: VecDeque<Option<u64>>,
    /// Open: no request before this instant.
    until: Instant,
    /// The current pause between probes.
    pause: Duration,
    /// When the current outage began (the breaker first opened).
    outage_since: Option<Instant>,
    /// The outage lasted longer than `max_outage`: no pausing until the API answers again.
    gave_up: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Breaker {
    opts: BreakerOptions,
    inner: Mutex<Inner>,
    /// Bumped on every change of state: waiters look again.
    changed: watch::Sender<u64>,
    pauses: AtomicU64,
    paused_us: AtomicU64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(opts: BreakerOptions) -> Self {
        Breaker {
            opts,
            inner: Mutex::new(Inner {
                state: State::Closed,
                window: VecDeque::with_capacity(WINDOW),
                until: Instant::now(),
                pause: opts.first_pause,
                outage_since: None,
                gave_up: false,
            }),
            changed: watch::channel(0).0,
            pauses: AtomicU64::new(0),
            paused_us: AtomicU64::new(0),
        }
    }

    /// Waits until a request may be sent: at once while closed; while open, until the pause is
    /// over, when the first request to ask becomes the probe and the others wait for its answer.
    pub async fn admit(&self) -> Admission {
        loop {
            let mut seen = self.changed.subscribe();
            let wait_until = {
                let mut s = self.inner.lock().expect("breaker lock");
                match s.state {
                    State::Closed => return Admission::Normal,
                    State::Open if Instant::now() >= s.until => {
                        s.state = State::Probing;
                        self.bump();
                        return Admission::Probe;
                    }
                    State::Open => Some(s.until),
                    State::Probing => None,
                }
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        _ = seen.changed() => {}
                    }
                }
                None => {
                    let _ = seen.changed().await;
                }
            }
        }
    }

    /// Records how an attempt ended. Returns whether a failed attempt counts against the
    /// request's `max_retries`: not while the breaker is open or probing, nor when this failure
    /// opened it.
    pub fn record(&self, admission: Admission, outcome: Outcome) -> bool {
        let mut s = self.inner.lock().expect("breaker lock");
        let now = Instant::now();
        match outcome {
            Outcome::Answered => {
                if s.state != State::Closed || s.gave_up {
                    self.close(&mut s, now);
                }
                push(&mut s.window, None);
                true
            }
            Outcome::Failed { path } => {
                if admission == Admission::Probe {
                    self.reopen(&mut s, now);
                    return false;
                }
                if s.state != State::Closed {
                    return false;
                }
                push(&mut s.window, Some(path));
                if s.gave_up || !across_the_board(&s.window) {
                    return true;
                }
                s.outage_since = Some(now);
                s.pause = self.opts.first_pause;
                s.state = State::Open;
                s.until = now + s.pause;
                self.pauses.fetch_add(1, Ordering::Relaxed);
                self.bump();
                tracing::warn!(
                    pause_s = s.pause.as_secs_f64(),
                    "the API is failing across the board (refused or reset connections, \
                     timeouts or 5xx): pausing every request, then probing with one"
                );
                false
            }
        }
    }

    /// The probe's request was dropped before it ended (the run is stopping): another request
    /// may probe.
    pub fn abandon_probe(&self) {
        let mut s = self.inner.lock().expect("breaker lock");
        if s.state == State::Probing {
            s.state = State::Open;
            self.bump();
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner.lock().expect("breaker lock").state
    }

    /// Outages the job paused for.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    /// Time the job spent paused, over every finished outage and the current one.
    pub fn paused(&self) -> Duration {
        let s = self.inner.lock().expect("breaker lock");
        let current = match (s.state, s.outage_since) {
            (State::Open | State::Probing, Some(since)) => since.elapsed(),
            _ => Duration::ZERO,
        };
        Duration::from_micros(self.paused_us.load(Ordering::Relaxed)) + current
    }

    fn close(&self, s: &mut Inner, now: Instant) {
        if let Some(since) = s.outage_since.take() {
            let lasted = now.saturating_duration_since(since);
            if !s.gave_up {
                self.paused_us
                    .fetch_add(lasted.as_micros() as u64, Ordering::Relaxed);
            }
            tracing::warn!(
                outage_s = lasted.as_secs_f64(),
                "the API answers again: resuming"
            );
        }
        s.state = State::Closed;
        s.gave_up = false;
        s.window.clear();
        s.pause = self.opts.first_pause;
        self.bump();
    }

    /// A failed probe: pause again, longer, unless the outage has lasted too long.
    fn reopen(&self, s: &mut Inner, now: Instant) {
        let since = *s.outage_since.get_or_insert(now);
        let lasted = now.saturating_duration_since(since);
        if lasted >= self.opts.max_outage {
            self.paused_us
                .fetch_add(lasted.as_micros() as u64, Ordering::Relaxed);
            s.state = State::Closed;
            s.gave_up = true;
            s.window.clear();
            self.bump();
            tracing::error!(
                outage_s = lasted.as_secs_f64(),
                max_s = self.opts.max_outage.as_secs_f64(),
                "the API has been failing longer than [limits] max_outage_seconds: no longer \
                 pausing; failing requests now use up their retries"
            );
            return;
        }
        s.pause = (s.pause * 2).min(self.opts.max_pause);
        s.state = State::Open;
        s.until = now + s.pause;
        self.bump();
        tracing::warn!(
            outage_s = lasted.as_secs_f64(),
            next_probe_s = s.pause.as_secs_f64(),
            "the API still fails: pausing longer"
        );
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g += 1);
    }
}

fn push(window: &mut VecDeque<Option<u64>>, outcome: Option<u64>) {
    if window.len() == WINDOW {
        window.pop_front();
    }
    window.push_back(outcome);
}

/// At least [`OPEN_AT`] of the last [`WINDOW`] outcomes failed, and not all on one path.
fn across_the_board(window: &VecDeque<Option<u64>>) -> bool {
    let mut failed = window.iter().flatten();
    let Some(first) = failed.next() else {
        return false;
    };
    let count = 1 + failed.clone().count();
    count >= OPEN_AT && failed.any(|p| p != first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BreakerOptions {
        BreakerOptions {
            first_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(8),
            max_outage: Duration::from_secs(60),
        }
    }

    fn fail(path: u64) -> Outcome {
        Outcome::Failed { path }
    }

    /// Fails `n` normal requests on alternating paths; returns how many counted.
    fn fail_many(b: &Breaker, n: usize) -> usize {
        (0..n)
            .filter(|i| b.record(Admission::Normal, fail(*i as u64 % 3)))
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn failures_across_the_board_open_it_and_stop_counting() {
        let b = Breaker::new(opts());
        assert_eq!(b.admit().await, Admission::Normal);
        // Seven failures out of seven recorded: still closed, each counted.
        assert_eq!(fail_many(&b, OPEN_AT - 1), OPEN_AT - 1);
        assert_eq!(b.state(), State::Closed);
        // The eighth opens it and does not count; nor do those of requests in flight.
        assert!(!b.record(Admission::Normal, fail(9)));
        assert_eq!(b.state(), State::Open);
        assert!(!b.record(Admission::Normal, fail(10)));
        assert_eq!(b.pauses(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_path_failing_alone_never_opens_it() {
        let b = Breaker::new(opts());
        for _ in 0..50 {
            assert!(b.record(Admission::Normal, fail(7)));
        }
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn scattered_failures_among_answers_never_open_it() {
        let b = Breaker::new(opts());
        for i in 0..200u64 {
            let outcome = if i % 4 == 0 {
                fail(i)
            } else {
                Outcome::Answered
            };
            assert!(b.record(Admission::Normal, outcome));
        }
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn it_pauses_probes_with_one_request_and_grows_the_pause() {
        let b = std::sync::Arc::new(Breaker::new(opts()));
        fail_many(&b, OPEN_AT);
        let start = Instant::now();
        // Nothing is admitted before the first pause is over; then exactly one probe.
        let probe = b.admit().await;
        assert_eq!(probe, Admission::Probe);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(b.state(), State::Probing);
        let other = {
            let b = b.clone();
            tokio::spawn(async move { (b.admit().await, Instant::now()) })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !other.is_finished(),
            "a second request went out while probing"
        );
        // The probe fails: open again for twice as long; its failure does not count.
        assert!(!b.record(Admission::Probe, fail(1)));
        assert_eq!(b.state(), State::Open);
        let (second, at) = other.await.unwrap();
        assert_eq!(second, Admission::Probe);
        assert_eq!(at - start, Duration::from_secs(1 + 5 + 2));
        // Pauses double up to the bound: 4, 8, 8.
        for expected in [4, 8, 8] {
            b.record(Admission::Probe, fail(1));
            let t = Instant::now();
            assert_eq!(b.admit().await, Admission::Probe);
            assert_eq!(t.elapsed(), Duration::from_secs(expected));
        }
        // The API answers the probe: closed, every request goes, the pause is accounted.
        assert!(b.record(Admission::Probe, Outcome::Answered));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit().await, Admission::Normal);
        assert_eq!(b.paused(), start.elapsed());
        assert_eq!(b.pauses(), 1);
        // A later outage starts again from the first pause.
        fail_many(&b, OPEN_AT);
        let t = Instant::now();
        assert_eq!(b.admit().await, Admission::Probe);
        assert_eq!(t.elapsed(), Duration::from_secs(1));
        assert_eq!(b.pauses(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_another_request_probe() {
        let b = Breaker::new(opts());
        fail_many(&b, OPEN_AT);
        assert_eq!(b.admit().await, Admission::Probe);
        b.abandon_probe();
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit().await, Admission::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_max_outage_stops_the_pausing_until_the_api_answers() {
        let b = Breaker::new(BreakerOptions {
            max_outage: Duration::from_secs(10),
            ..opts()
        });
        fail_many(&b, OPEN_AT);
        loop {
            assert_eq!(b.admit().await, Admission::Probe);
            b.record(Admission::Probe, fail(1));
            if b.state() == State::Closed {
                break;
            }
        }
        // 1 + 2 + 4 + 8 s of pauses: the probe after 15 s gives up.
        assert_eq!(b.paused(), Duration::from_secs(15));
        // Failures count again and do not reopen it.
        assert_eq!(fail_many(&b, 3 * OPEN_AT), 3 * OPEN_AT);
        assert_eq!(b.state(), State::Closed);
        // Once the API answers, a new outage pauses again.
        b.record(Admission::Normal, Outcome::Answered);
        fail_many(&b, OPEN_AT);
        assert_eq!(b.state(), State::Open);
    }
}
