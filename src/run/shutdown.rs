//! Why and how a run stops early. One [`Shutdown`] value replaces the tokens, flags and mutex the
//! stages used to share: it records the FIRST reason the run stopped (Ctrl-C or SIGTERM, refused
//! credentials, a fatal output error) and drives the two phases every stage observes:
//! `stop` (start nothing new, stop waiting for polls) and `cancel` (abandon transfers in flight).
//! It does no I/O besides the signal listener and one message on stderr.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first reason a run stopped before its input was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Ctrl-C or SIGTERM: exit 130, run the same command again to resume.
    Interrupted,
    /// The API answered 401/403 on a status call: exit 3 at once rather than hammer the API.
    CredentialsRefused,
    /// The output cannot be written (disk full, failed fsync, unreadable input spool): exit 3.
    Fatal(String),
    /// An archive the run found is of another archive mode than the job's (exit 2): it is
    /// never fetched again and replaced. The message names the setting that differs.
    Mismatch(String),
}

/// The run's shutdown state, cloned into every stage.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    cancel: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl Shutdown {
    /// A run that has not stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fired when no new work may start (and polls stop waiting).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Fired when transfers in flight must be abandoned.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Whether the run has stopped starting work.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The first reason recorded, if any.
    pub fn reason(&self) -> Option<&StopReason> {
        self.reason.get()
    }

    /// Stops at once, abandoning transfers in flight (refused credentials, a fatal error).
    /// Returns whether `reason` is the first one recorded, so the caller logs it only once.
    pub fn abort(&self, reason: StopReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.stop.cancel();
        self.cancel.cancel();
        first
    }

    /// Ctrl-C or SIGTERM: no new work at once, transfers in flight get `grace` to finish.
    pub async fn interrupt(&self, grace: Duration) {
        if self.reason.set(StopReason::Interrupted).is_ok() {
            eprintln!(
                "interrupted: no new work is started; transfers in flight get {} s to finish",
                grace.as_secs()
            );
        }
        self.stop.cancel();
        tokio::time::sleep(grace).await;
        self.cancel.cancel();
    }

    /// Listens for Ctrl-C and SIGTERM (the same to this program) until aborted. On Unix the
    /// handlers are installed before this returns, so a signal that arrives after it (say, right
    /// after the first request) is always the program's to handle.
    pub fn on_signals(&self, grace: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        #[cfg(unix)]
        let (interrupt, terminate) = {
            use tokio::signal::unix::{SignalKind, signal};
            (
                signal(SignalKind::interrupt()).ok(),
                signal(SignalKind::terminate()).ok(),
            )
        };
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                    match s {
                        Some(mut s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = wait(interrupt) => {}
                    () = wait(terminate) => {}
                }
            }
            #[cfg(not(unix))]
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            this.interrupt(grace).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_fires_both_phases_and_keeps_the_first_reason() {
        let s = Shutdown::new();
        assert!(!s.is_stopping());
        assert_eq!(s.reason(), None);
        assert!(s.abort(StopReason::CredentialsRefused));
        assert!(s.stop_token().is_cancelled());
        assert!(s.cancel_token().is_cancelled());
        assert!(!s.abort(StopReason::Fatal("disk full".into())));
        assert_eq!(s.reason(), Some(&StopReason::CredentialsRefused));
    }

    #[tokio::test(start_paused = true)]
    async fn interrupt_stops_at_once_and_cancels_after_the_grace() {
        let s = Shutdown::new();
        let clone = s.clone();
        let task = tokio::spawn(async move { clone.interrupt(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(s.is_stopping());
        assert!(!s.cancel_token().is_cancelled());
        tokio::time::sleep(Duration::from_millis(4_980)).await;
        assert!(!s.cancel_token().is_cancelled());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(s.cancel_token().is_cancelled());
        task.await.unwrap();
        assert_eq!(s.reason(), Some(&StopReason::Interrupted));
    }

    #[tokio::test(start_paused = true)]
    async fn an_interrupt_after_refused_credentials_keeps_the_refusal() {
        let s = Shutdown::new();
        s.abort(StopReason::CredentialsRefused);
        s.interrupt(Duration::from_secs(1)).await;
        assert_eq!(s.reason(), Some(&StopReason::CredentialsRefused));
    }
}
