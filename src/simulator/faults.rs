//! Fault injection of the simulator: seeded decisions per request, the server-side
//! requests-per-second ceiling, and the listener that can reset a connection.
//!
//! Decisions depend only on the seed and the request's arrival number, so a sequential client
//! sees the same faults on every run. Nothing here builds responses.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::data::{hash, unit};
use super::{CeilingWindow, Faults};

/// What the fault knobs decided for one request, before it reaches the routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Over the server-side ceiling: 429.
    Ceiling,
    /// Random 429.
    TooMany,
    /// Random 500 or 503.
    ServerError(u16),
    /// Reset the connection without answering.
    Reset,
}

/// Shared fault state: the request counter and the ceiling's state.
#[derive(Debug)]
pub(crate) struct FaultState {
    seed: u64,
    faults: Faults,
    counter: AtomicU64,
    ceiling: Mutex<Ceiling>,
}

/// The server-side ceiling: a token bucket, or the arrivals of the last second.
#[derive(Debug)]
struct Ceiling {
    /// Tokens in the bucket and when it was last filled.
    tokens: f64,
    filled: Instant,
    /// Arrivals the sliding window counts, oldest first, none older than one second.
    window: VecDeque<Instant>,
    /// The first request the ceiling judged: [`Faults::ceiling_changes`] count from here.
    first: Option<Instant>,
}

impl FaultState {
    pub(crate) fn new(seed: u64, faults: Faults) -> Self {
        let capacity = faults.ceiling_rps.map(|r| r.max(1.0)).unwrap_or(0.0);
        FaultState {
            seed,
            faults,
            counter: AtomicU64::new(0),
            ceiling: Mutex::new(Ceiling {
                tokens: capacity,
                filled: Instant::now(),
                window: VecDeque::new(),
                first: None,
            }),
        }
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Whether a request arriving now is within the ceiling; refused ones are answered 429.
    fn within_ceiling(&self) -> bool {
        let Some(base) = self.faults.ceiling_rps else {
            return true;
        };
        let mut c = self.ceiling.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let first = *c.first.get_or_insert(now);
        let since = now.duration_since(first).as_secs_f64();
        let rate = self
            .faults
            .ceiling_changes
            .iter()
            .filter(|(at, _)| *at <= since)
            .map(|(_, rps)| *rps)
            .next_back()
            .unwrap_or(base);
        let capacity = rate.max(1.0);
        match self.faults.ceiling_window {
            CeilingWindow::Bucket => {
                c.tokens =
                    (c.tokens + now.duration_since(c.filled).as_secs_f64() * rate).min(capacity);
                c.filled = now;
                if c.tokens >= 1.0 {
                    c.tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
            CeilingWindow::Sliding { count_refused } => {
                while c
                    .window
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                {
                    c.window.pop_front();
                }
                // At most `floor(rate)` counted arrivals in any one second.
                let within = (c.window.len() as f64) + 1.0 <= capacity;
                if within || count_refused {
                    c.window.push_back(now);
                }
                within
            }
        }
    }

    /// Decides the faults of the next authenticated request. Also returns the request's
    /// number, which later decisions (truncation) use.
    pub(crate) fn decide(&self) -> (u64, Option<Injected>) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        if !self.within_ceiling() {
            return (n, Some(Injected::Ceiling));
        }
        let f = &self.faults;
        let injected = if self.roll(n, b"429") < f.rate_429 {
            Some(Injected::TooMany)
        } else if self.roll(n, b"5xx") < f.error_rate {
            let code = if self.roll(n, b"5xx-code") < 0.5 {
                500
            } else {
                503
            };
            Some(Injected::ServerError(code))
        } else if self.roll(n, b"reset") < f.reset_rate {
            Some(Injected::Reset)
        } else {
            None
        };
        (n, injected)
    }

    /// Whether the answer to request `n` is truncated.
    pub(crate) fn truncate(&self, n: u64) -> bool {
        self.roll(n, b"truncate") < self.faults.truncate_rate
    }

    /// Whether the hrefs of `reference` point at the foreign origin (per reference, so every
    /// response of that reference agrees).
    pub(crate) fn foreign(&self, reference: &str) -> bool {
        self.faults.foreign_href_rate > 0.0
            && unit(hash(self.seed, &[b"foreign", reference.as_bytes()]))
                < self.faults.foreign_href_rate
    }

    fn roll(&self, n: u64, what: &[u8]) -> f64 {
        unit(hash(self.seed, &[b"fault", what, &n.to_le_bytes()]))
    }
}

// ---------------------------------------------------------------------------------------------
// Connection resets: a listener whose connections a handler can order to be reset.
// ---------------------------------------------------------------------------------------------

/// Per-connection handle a handler reaches through `ConnectInfo`.
#[derive(Debug, Clone)]
pub(crate) struct ConnCtl {
    /// The peer (or, from `local_addr`, the bound address).
    #[allow(dead_code)]
    pub(crate) peer: SocketAddr,
    reset: Arc<AtomicBool>,
}

impl ConnCtl {
    /// The next write on this connection resets it (TCP RST) instead of answering.
    pub(crate) fn reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, SimListener>> for ConnCtl {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// TCP listener handing out [`SimIo`] connections.
pub(crate) struct SimListener(pub(crate) TcpListener);

impl Listener for SimListener {
    type Io = SimIo;
    type Addr = ConnCtl;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let ctl = ConnCtl {
                        peer,
                        reset: Arc::new(AtomicBool::new(false)),
                    };
                    return (
                        SimIo {
                            inner: stream,
                            ctl: ctl.clone(),
                        },
                        ctl,
                    );
                }
                // Out of file descriptors and the like: wait instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnCtl {
            peer: self.0.local_addr()?,
            reset: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// A TCP stream that, once its [`ConnCtl`] asks for it, sets a zero linger and fails the
/// write, so the server drops it and the kernel sends RST: the client sees a reset.
pub(crate) struct SimIo {
    inner: TcpStream,
    ctl: ConnCtl,
}

impl SimIo {
    fn check(&self) -> io::Result<()> {
        if self.ctl.reset.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "simulated reset",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for SimIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(f: Faults) -> FaultState {
        FaultState::new(9, f)
    }

    #[test]
    fn no_faults_by_default() {
        let s = state(Faults::default());
        for _ in 0..1000 {
            assert_eq!(s.decide().1, None);
        }
        assert!(!s.truncate(3) && !s.foreign("ok-n1"));
    }

    #[test]
    fn rates_are_roughly_honoured_and_seeded() {
        let f = Faults {
            error_rate: 0.2,
            ..Faults::default()
        };
        let a: Vec<_> = (0..2000)
            .map({
                let s = state(f.clone());
                move |_| s.decide().1
            })
            .collect();
        let errors = a
            .iter()
            .filter(|x| matches!(x, Some(Injected::ServerError(_))))
            .count();
        assert!((300..500).contains(&errors), "{errors}");
        let s2 = state(f);
        let b: Vec<_> = (0..2000).map(|_| s2.decide().1).collect();
        assert_eq!(a, b, "same seed, same decisions");
        assert!(a.contains(&Some(Injected::ServerError(500))));
        assert!(a.contains(&Some(Injected::ServerError(503))));
    }

    #[test]
    fn ceiling_refuses_a_burst_beyond_its_capacity() {
        let s = state(Faults {
            ceiling_rps: Some(5.0),
            ..Faults::default()
        });
        // Back to back, far faster than 5 per second: the bucket holds 5 tokens.
        let passed = (0..50).filter(|_| s.decide().1.is_none()).count();
        assert!((5..=7).contains(&passed), "{passed}");
    }

    /// Sends `n` requests evenly over `secs` seconds (real time) and returns how many passed.
    fn paced(s: &FaultState, n: u32, secs: f64) -> usize {
        let gap = Duration::from_secs_f64(secs / f64::from(n));
        (0..n)
            .filter(|_| {
                let ok = s.decide().1.is_none();
                std::thread::sleep(gap);
                ok
            })
            .count()
    }

    #[test]
    fn a_sliding_window_that_counts_refusals_locks_out_a_client_that_keeps_overshooting() {
        let window = |count_refused| {
            state(Faults {
                ceiling_rps: Some(10.0),
                ceiling_window: CeilingWindow::Sliding { count_refused },
                ..Faults::default()
            })
        };
        // 20 per second for 1.5 s: the window lets the first 10 through; from 1 s on it frees a
        // place for each accepted request that ages out (10 more), unless refusals count too,
        // in which case it stays full for as long as the client keeps sending.
        let counted = paced(&window(true), 30, 1.5);
        let not_counted = paced(&window(false), 30, 1.5);
        assert!((10..=12).contains(&counted), "{counted}");
        assert!((17..=21).contains(&not_counted), "{not_counted}");
    }

    #[test]
    fn the_ceiling_changes_at_its_offsets_from_the_first_request() {
        let s = state(Faults {
            ceiling_rps: Some(10.0),
            ceiling_window: CeilingWindow::Sliding {
                count_refused: false,
            },
            ceiling_changes: vec![(0.5, 3.0)],
            ..Faults::default()
        });
        assert!(s.decide().1.is_none());
        std::thread::sleep(Duration::from_millis(1100));
        // Half a second in the ceiling is 3: a burst gets 3 through.
        let passed = (0..20).filter(|_| s.decide().1.is_none()).count();
        assert_eq!(passed, 3);
    }
}
