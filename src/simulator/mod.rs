//! The Retrieval API simulator: every endpoint of the Netverify Retrieval API guide on one
//! loopback address, with deterministic synthetic data, seeded faults and a request log. Used
//! by `demo`, `simulate`, the integration tests and the benchmarks.
//!
//! It must never be mistaken for the real API: it holds no real personal data and it is the
//! only part of the project that listens on a socket.
//!
//! # References
//! The simulator keeps no list of transactions. A reference is known when it decodes:
//! - population members ([`population`]): UUID-shaped, 36 characters; the third group starts
//!   with `4`, the fourth group's first digit encodes the kind (`8` Netverify, `9` Document
//!   Verification, `a` Authentication) and the last six hex digits are a checksum of the seed
//!   and the rest, so another seed (or a typo) gives 404. Behaviour is drawn from
//!   `hash(seed, reference)`: about 3 % 404 (retention), 4 % pending then final after 1–5
//!   status calls, 2 % pending forever (not for Document Verification), 5 % `FAILED`, the rest
//!   final at once.
//! - readable test references `<behaviour>-<kind letter><anything>` (at most 36 characters of
//!   `[A-Za-z0-9-]`), kind letter `n` Netverify, `d` Document Verification, `a` Authentication:
//!   `ok-` final at once, `nf-` 404 on every endpoint (retention period), `pf-` pending
//!   forever, `p3-` pending for 3 status calls (`p0`–`p99`), `fail-` `FAILED`, `fh-` every
//!   href on the foreign origin, `obj-` one image sent as an object instead of an array.
//!   Examples: `p3-n1`, `fail-d-42`, `obj-a7`. Apart from `fail-`, readable references are
//!   clean: Netverify `APPROVED_VERIFIED` with front and face images, Document Verification
//!   `EXTRACTED` with an original PDF, Authentication `PASSED` with a face image. `pf-`/`pN-` with `d` are unknown (the guide
//!   has no pending Document Verification).
//!
//! [`scenario`] tells what any reference does.
//!
//! # Protocol rules
//! Only `GET`; a missing User-Agent gets 400, then wrong or missing Basic credentials 401, and
//! only then the fault knobs apply (ceiling 429, random 429, 500/503, resets; truncation of
//! 200 answers). While a scan is pending, `/data` carries only `transaction` (status
//! `PENDING`), `/images` an empty list and image endpoints answer 404. Pending Authentication
//! answers `CREATED` on its first status call and `STARTED` after, without images.
//! `maskhint=unmasked` on a Document Verification page answers 403 unless
//! [`SimOptions::allow_unmasked`].

pub mod data;
mod faults;
mod log;
pub mod media;
mod routes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use data::{Polls, Scenario, population, scenario};
pub use log::{RequestRecord, read_request_log};

use faults::SimListener;
use routes::SimState;

/// Fault knobs; every one is off by default, and every random decision is seeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Added to every request before it is answered.
    pub latency_ms: u64,
    /// Fraction of requests answered 500 or 503.
    pub error_rate: f64,
    /// Fraction of requests answered 429.
    pub rate_429: f64,
    /// `Retry-After` seconds on 429 answers; `None` sends none, as Jumio really does.
    pub retry_after_429: Option<u64>,
    /// Server-side ceiling of requests per second; requests beyond it are answered 429 (with
    /// `retry_after_429`, none by default), counted as [`Faults::ceiling_window`] says.
    pub ceiling_rps: Option<f64>,
    /// How the ceiling counts requests.
    pub ceiling_window: CeilingWindow,
    /// `(seconds, rps)`: from that many seconds after the first request the ceiling judged, the
    /// ceiling is `rps` (sorted by time; the last one passed applies), e.g. 15 → 8 → 15.
    pub ceiling_changes: Vec<(f64, f64)>,
    /// Fraction of 200 answers whose body stops halfway (Content-Length promises the whole
    /// body), after which the connection closes.
    pub truncate_rate: f64,
    /// Fraction of requests whose connection is reset (TCP RST) without an answer.
    pub reset_rate: f64,
    /// Fraction of references whose hrefs point at `foreign_origin`.
    pub foreign_href_rate: f64,
    /// The origin foreign hrefs point at, e.g. `http://127.0.0.2:9`.
    pub foreign_origin: String,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            error_rate: 0.0,
            rate_429: 0.0,
            retry_after_429: None,
            ceiling_rps: None,
            ceiling_window: CeilingWindow::Bucket,
            ceiling_changes: Vec::new(),
            truncate_rate: 0.0,
            reset_rate: 0.0,
            foreign_href_rate: 0.0,
            foreign_origin: "http://127.0.0.2:9".to_string(),
        }
    }
}

/// How the server-side ceiling ([`Faults::ceiling_rps`]) counts requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CeilingWindow {
    /// A token bucket holding one second's worth, refilled continuously: a burst of a second's
    /// worth passes, then one request per `1/rps`.
    #[default]
    Bucket,
    /// At most `floor(rps)` requests in any sliding one-second window, as Jumio enforces its
    /// tenant limit (429 without `Retry-After`). With `count_refused`, refused requests take a
    /// place in the window too, so a client that keeps sending above the ceiling is refused
    /// until it pauses or slows below it.
    Sliding {
        /// Refused requests count in the window.
        count_refused: bool,
    },
}

/// Everything the simulator can be told.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// Seed of the data, the population and the fault decisions.
    pub seed: u64,
    /// The API token accepted as Basic user-id.
    pub token: String,
    /// The API secret accepted as Basic password.
    pub secret: String,
    /// Answer `maskhint=unmasked` page requests instead of 403.
    pub allow_unmasked: bool,
    /// Approximate size of `front`/`back`/`face` images (each file varies ±20 %).
    pub image_bytes: usize,
    /// Approximate size of liveness images.
    pub liveness_bytes: usize,
    /// Approximate size of Document Verification pages.
    pub page_bytes: usize,
    /// Approximate size of original PDFs.
    pub pdf_bytes: usize,
    /// Fault knobs.
    pub faults: Faults,
    /// Append every request as one JSON line to this file (created or truncated at start).
    pub request_log: Option<PathBuf>,
    /// Keep every request in memory for [`SimHandle::requests`]; turn off for very long runs.
    pub memory_log: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 1,
            token: "demo-token".to_string(),
            secret: "demo-secret".to_string(),
            allow_unmasked: false,
            image_bytes: 6 * 1024,
            liveness_bytes: 3 * 1024,
            page_bytes: 6 * 1024,
            pdf_bytes: 8 * 1024,
            faults: Faults::default(),
            request_log: None,
            memory_log: true,
        }
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    base_url: String,
    state: Arc<SimState>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the origin every href of a response uses.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Every request answered so far, in the order they were answered.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.log.snapshot()
    }

    /// Stops accepting, lets requests in flight finish (at most 5 s), then returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Binds `listen` and serves in a background task until [`SimHandle::shutdown`].
pub async fn start(opts: SimOptions, listen: SocketAddr) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let log = log::RequestLog::new(opts.request_log.as_deref(), opts.memory_log)?;
    let state = Arc::new(SimState::new(opts, base_url.clone(), log));
    let app =
        routes::router(state.clone()).into_make_service_with_connect_info::<faults::ConnCtl>();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(SimListener(listener), app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(SimHandle {
        addr,
        base_url,
        state,
        stop,
        task,
    })
}

/// Writes `reference,kind` CSV (with header) of the given references.
pub fn write_references_csv(path: &Path, refs: &[(String, crate::Kind)]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path).map_err(std::io::Error::other)?;
    w.write_record(["reference", "kind"])
        .map_err(std::io::Error::other)?;
    for (r, k) in refs {
        w.write_record([r.as_str(), k.as_str()])
            .map_err(std::io::Error::other)?;
    }
    w.flush()
}
