//! Progress: an indicatif bar for people on a terminal, a log line every interval otherwise, one
//! JSON line per interval on stderr for machines (`--progress json`: log shippers,
//! orchestrators), nothing when quiet. Counts only; never a reference or a value.
//!
//! A JSON line (`"event": "progress"`, one object per line, the last one written when the run's
//! references are all done, before the commit):
//! `elapsed_seconds`, `total`, `done` (exported + failed), `exported`, `failed`, `pending`
//! (waiting for their next status poll), `in_flight` (being fetched: holding a concurrency slot),
//! `queued` (started, waiting for a slot), `requests`, `retries`,
//! `throttled` (429 answers), `rate` (requests per second over the last interval), `bytes`
//! (body bytes received), `eta_seconds` (at the current rate, never before the last pending
//! reference's next poll; `null` until there is a rate), `breaker` (`closed`, `open`,
//! `probing`), `outage_pauses`, `outage_paused_seconds`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::task::Done;
use crate::api::ApiClient;
use crate::fetch::Fetcher;

/// `--progress`: how progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on the terminal (the default on a terminal).
    Bar,
    /// One JSON line per interval on stderr.
    Json,
    /// A log line per interval (the default off a terminal).
    Log,
    /// Nothing.
    None,
}

impl ProgressMode {
    /// The default: a bar on a terminal, log lines otherwise.
    pub fn default_for_stderr() -> Self {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Log
        }
    }
}

/// Progress of a run; cheap to clone.
#[derive(Clone)]
pub struct Progress {
    inner: Option<Arc<ProgressInner>>,
}

/// What progress reads besides its own counts.
pub struct Sources {
    /// The run's client: requests, 429s, bytes, the breaker.
    pub client: ApiClient,
    /// The fetcher: references waiting for their next poll, slots in use.
    pub fetcher: Fetcher,
}

struct ProgressInner {
    mode: ProgressMode,
    bar: Option<indicatif::ProgressBar>,
    exported: AtomicU64,
    failed: AtomicU64,
    /// References handed to a task and not settled yet.
    live: AtomicU64,
    total: u64,
    started: Instant,
    sources: Sources,
    /// Requests and instant of the previous line, for the current rate.
    last: std::sync::Mutex<(u64, Instant)>,
    stop: CancellationToken,
}

/// One progress line, as `--progress json` writes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Line {
    /// Always `progress`.
    pub event: &'static str,
    /// Seconds since the run started.
    pub elapsed_seconds: f64,
    /// References of the run.
    pub total: u64,
    /// Finished: exported + failed.
    pub done: u64,
    /// Exported (or taken over from an earlier run's archive).
    pub exported: u64,
    /// Not exported (each a row of failures.csv).
    pub failed: u64,
    /// Waiting for their next status poll.
    pub pending: u64,
    /// Being fetched now (holding one of the `concurrency` slots).
    pub in_flight: u64,
    /// Started, waiting for a slot (not for a poll).
    pub queued: u64,
    /// Requests sent.
    pub requests: u64,
    /// Retries among them.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Requests per second over the last interval.
    pub rate: f64,
    /// Body bytes received.
    pub bytes: u64,
    /// Seconds left at the current rate; `None` (`null`) while unknown.
    pub eta_seconds: Option<f64>,
    /// The circuit breaker: `closed`, `open` or `probing`.
    pub breaker: &'static str,
    /// Outages paused for.
    pub outage_pauses: u64,
    /// Seconds paused for outages.
    pub outage_paused_seconds: f64,
}

impl Progress {
    /// Progress of `total` references shown as `mode`, a line every `interval`.
    pub fn new(total: u64, mode: ProgressMode, interval: Duration, sources: Sources) -> Self {
        if mode == ProgressMode::None {
            return Progress { inner: None };
        }
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let now = Instant::now();
        let inner = Arc::new(ProgressInner {
            mode,
            bar,
            exported: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            live: AtomicU64::new(0),
            total,
            started: now,
            sources,
            last: std::sync::Mutex::new((0, now)),
            stop: CancellationToken::new(),
        });
        if inner.bar.is_none() {
            let i = inner.clone();
            let interval = interval.max(Duration::from_millis(10));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = i.stop.cancelled() => break,
                    }
                    i.emit();
                }
            });
        }
        Progress { inner: Some(inner) }
    }

    fn bump(&self, exported: bool) {
        if let Some(i) = &self.inner {
            let (e, f) = if exported {
                (
                    i.exported.fetch_add(1, Ordering::Relaxed) + 1,
                    i.failed.load(Ordering::Relaxed),
                )
            } else {
                (
                    i.exported.load(Ordering::Relaxed),
                    i.failed.fetch_add(1, Ordering::Relaxed) + 1,
                )
            };
            if let Some(bar) = &i.bar {
                bar.set_position(e + f);
                let breaker = i.sources.client.breaker().state();
                let paused = if breaker == crate::api::breaker::State::Closed {
                    String::new()
                } else {
                    " (API down: paused)".to_string()
                };
                bar.set_message(format!("exported {e} failed {f}{paused}"));
            }
        }
    }

    fn exported(&self) {
        self.bump(true);
    }

    /// Counts one failed reference.
    pub fn failed(&self) {
        self.bump(false);
    }

    /// A reference was handed to a task.
    pub fn started(&self) {
        if let Some(i) = &self.inner {
            i.live.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A reference's task ended (whatever became of the reference).
    pub fn settled(&self) {
        if let Some(i) = &self.inner {
            let _ = i
                .live
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Counts one finished reference.
    pub fn record(&self, done: &Done) {
        match done {
            Done::Exported { .. } => self.exported(),
            Done::Failed(_) => self.failed(),
            Done::Carried(rows) => rows.iter().for_each(|_| self.failed()),
            Done::NotStarted | Done::OtherRun => {}
        }
    }

    /// Stops the bar and the periodic lines; a JSON progress writes its last line.
    pub fn finish(&self) {
        if let Some(i) = &self.inner {
            i.stop.cancel();
            if let Some(bar) = &i.bar {
                bar.finish_and_clear();
            }
            if i.mode == ProgressMode::Json {
                i.emit();
            }
        }
    }
}

impl ProgressInner {
    fn line(&self) -> Line {
        let now = Instant::now();
        let stats = self.sources.client.stats();
        let breaker = self.sources.client.breaker();
        let requests = stats.requests();
        let (pending, last_due) = self.sources.fetcher.poll_waits().snapshot();
        let in_flight = self.sources.fetcher.busy_slots() as u64;
        let rate = {
            let mut last = self.last.lock().expect("progress lock");
            let (before, at) = *last;
            let secs = now.saturating_duration_since(at).as_secs_f64();
            *last = (requests, now);
            if secs > 0.0 {
                requests.saturating_sub(before) as f64 / secs
            } else {
                0.0
            }
        };
        let exported = self.exported.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let done = exported + failed;
        let live = self.live.load(Ordering::Relaxed);
        let eta_seconds = eta(Eta {
            total: self.total,
            done,
            requests,
            rate,
            until_last_poll: last_due.map(|d| d.saturating_duration_since(now)),
        });
        Line {
            event: "progress",
            elapsed_seconds: round3(now.duration_since(self.started).as_secs_f64()),
            total: self.total,
            done,
            exported,
            failed,
            pending,
            in_flight,
            queued: live.saturating_sub(pending + in_flight),
            requests,
            retries: stats.retries(),
            throttled: stats.too_many_requests(),
            rate: round3(rate),
            bytes: stats.bytes_received(),
            eta_seconds: eta_seconds.map(round3),
            breaker: breaker.state().as_str(),
            outage_pauses: breaker.pauses(),
            outage_paused_seconds: round3(breaker.paused().as_secs_f64()),
        }
    }

    fn emit(&self) {
        let line = self.line();
        match self.mode {
            ProgressMode::Json => {
                let mut text = serde_json::to_string(&line).expect("a progress line serialises");
                text.push('\n');
                // One write per line, so lines from here never interleave with each other.
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
            _ => tracing::info!(
                exported = line.exported,
                failed = line.failed,
                pending = line.pending,
                total = line.total,
                rate = line.rate,
                eta_s = line.eta_seconds,
                breaker = line.breaker,
                "progress"
            ),
        }
    }
}

/// What the ETA is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Eta {
    /// References of the run.
    pub total: u64,
    /// References finished.
    pub done: u64,
    /// Requests sent so far.
    pub requests: u64,
    /// Requests per second now.
    pub rate: f64,
    /// Until the last pending reference's next poll.
    pub until_last_poll: Option<Duration>,
}

/// Seconds left: the requests the unfinished references still need (at the requests per finished
/// reference so far) at the current rate, and never less than the wait for the last pending
/// reference's next poll. `None` before any reference finished or while nothing is sent (an
/// outage), unless nothing is left.
pub fn eta(e: Eta) -> Option<f64> {
    let left = e.total.saturating_sub(e.done);
    if left == 0 {
        return Some(0.0);
    }
    let poll_wait = e.until_last_poll.map_or(0.0, |d| d.as_secs_f64());
    if e.done == 0 || e.rate <= 0.0 {
        return None;
    }
    let per_reference = e.requests as f64 / e.done as f64;
    Some((left as f64 * per_reference / e.rate).max(poll_wait))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_the_work_left_at_the_current_rate_but_not_before_the_last_poll() {
        let e = Eta {
            total: 100,
            done: 50,
            requests: 500,
            rate: 10.0,
            until_last_poll: None,
        };
        // 50 references left × 10 requests each ÷ 10 per second.
        assert_eq!(eta(e), Some(50.0));
        let waiting = Eta {
            until_last_poll: Some(Duration::from_secs(120)),
            ..e
        };
        assert_eq!(eta(waiting), Some(120.0));
        assert_eq!(eta(Eta { rate: 0.0, ..e }), None);
        assert_eq!(eta(Eta { done: 0, ..e }), None);
        assert_eq!(eta(Eta { done: 100, ..e }), Some(0.0));
    }
}
