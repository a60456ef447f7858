//! Progress for people: an indicatif bar on a terminal, a log line every 10 s otherwise, nothing
//! when quiet. Counts only; never a reference or a value.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::task::Done;

/// Progress: an indicatif bar on a terminal, a log line every 10 s otherwise, nothing when quiet.
#[derive(Clone)]
pub struct Progress {
    inner: Option<Arc<ProgressInner>>,
}

struct ProgressInner {
    bar: Option<indicatif::ProgressBar>,
    exported: AtomicU64,
    failed: AtomicU64,
    total: u64,
    stop: CancellationToken,
}

impl Progress {
    /// A bar on a terminal, log lines otherwise, nothing when `quiet`.
    pub fn new(total: u64, quiet: bool) -> Self {
        if quiet {
            return Progress { inner: None };
        }
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
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
        let inner = Arc::new(ProgressInner {
            bar,
            exported: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            total,
            stop: CancellationToken::new(),
        });
        if inner.bar.is_none() {
            let i = inner.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = i.stop.cancelled() => break,
                    }
                    tracing::info!(
                        exported = i.exported.load(Ordering::Relaxed),
                        failed = i.failed.load(Ordering::Relaxed),
                        total = i.total,
                        "progress"
                    );
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
                bar.set_message(format!("exported {e} failed {f}"));
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

    /// Counts one finished reference.
    pub fn record(&self, done: &Done) {
        match done {
            Done::Exported { .. } => self.exported(),
            Done::Failed(_) | Done::Carried(_) => self.failed(),
            Done::NotStarted | Done::OtherRun => {}
        }
    }

    /// Stops the bar and the log lines.
    pub fn finish(&self) {
        if let Some(i) = &self.inner {
            i.stop.cancel();
            if let Some(bar) = &i.bar {
                bar.finish_and_clear();
            }
        }
    }
}
