//! The one HTTP client of a job: every request goes through [`ApiClient::get`], which awaits the
//! shared rate limiter, sends `Accept`, `Authorization` and `User-Agent`, retries what is worth
//! retrying (429, 5xx, timeouts, resets, unparseable bodies) and caps every body at
//! `max_file_bytes`. It never logs URLs with credentials (credentials are a header, never in a URL)
//! and never sends them to any origin but the configured one: redirects are followed only within
//! the origin of the request.
//!
//! Whether a failed attempt is retried, given up with which `failures.csv` code, or is a refusal
//! of the credentials is decided in one pure function, [`decide`]; the rest of this module does
//! the I/O around it. A 429 is the server pacing the whole job, not a fault of the request: it
//! slows the shared limiter down and does not use up the request's `max_retries`; the time a
//! request waits after 429s is bounded instead (`[limits] max_throttle_seconds`; then `HTTP_ERROR`
//! with status 429).
//!
//! Before every attempt the job-wide circuit breaker ([`super::breaker`]) is asked too: while the
//! API fails across the board every request waits there, one probe at a time goes out, and a
//! failure during the outage does not use up the request's `max_retries`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{StatusCode, Url};

use super::breaker::{Admission, Breaker, BreakerOptions, Outcome};
use super::endpoints::Endpoint;
use super::limiter::RateLimiter;
use super::origin::{self, OriginError};
use super::retry::{RetryPolicy, parse_retry_after};
use super::timeline::{Latencies, Timeline};
use crate::outcome::ErrorCode;

/// The two API families, each with its own configured base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `netverify_url`: scans and authentications.
    Netverify,
    /// `retrieval_url`: Document Verification.
    Retrieval,
}

/// Everything the client needs; built by the pipeline from the job.
#[derive(Clone)]
pub struct ClientOptions {
    /// Base URL of Netverify and Authentication requests.
    pub netverify_url: Url,
    /// Base URL of Document Verification requests.
    pub retrieval_url: Url,
    /// The job's `User-Agent` (the API requires it to name the business).
    pub user_agent: String,
    /// `Basic …`, already encoded. Never printed.
    pub authorization: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Larger bodies are refused, not buffered.
    pub max_file_bytes: u64,
    /// Backoff settings.
    pub retry: RetryPolicy,
    /// The job-wide pause when the API fails across the board.
    pub breaker: BreakerOptions,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("netverify_url", &self.netverify_url.as_str())
            .field("retrieval_url", &self.retrieval_url.as_str())
            .field("user_agent", &self.user_agent)
            .field("authorization", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A successful (200) response, body complete and within the cap.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// Path and query of the request (no host, no credentials), as recorded in provenance.
    pub api_path: String,
    /// Always 200 here; kept for provenance.
    pub status: u16,
    /// The `Content-Type` header, or empty.
    pub content_type: String,
    /// The body as received, for [`Target::Json`]; empty when it was streamed to a sink.
    pub body: Bytes,
    /// The body parsed, for [`Target::Json`] (always an object); `Null` when streamed.
    pub json: serde_json::Value,
    /// Bytes of the body.
    pub bytes: u64,
    /// When the body was complete.
    pub retrieved_at: DateTime<Utc>,
    /// Attempts this response took (1 = no retry).
    pub attempts: u32,
}

/// 401 or 403 on a status call: the API refused the job's credentials, so every later request
/// would be refused too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: HTTP {status}: credentials refused")]
pub struct CredentialsRefused {
    /// The status path (no host, no credentials).
    pub path: String,
    /// 401 or 403.
    pub status: u16,
    /// Attempts made (a refusal is not retried).
    pub attempts: u32,
}

/// Why a request did not produce a usable response. Each maps to a `failures.csv` error code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: the transaction (or file) is not available; for historic records usually retention.
    #[error("{path}: 404 Not Found")]
    NotFound { path: String, attempts: u32 },
    /// 401 or 403 on a status call: the credentials were refused (fatal for the run). On any
    /// other request a 401 or 403 is an [`ApiError::Http`] of that file.
    #[error(transparent)]
    Denied(CredentialsRefused),
    /// The href (or a redirect) pointed away from the configured origin; nothing was sent there.
    #[error("{path}: {source}")]
    ForeignUrl {
        path: String,
        source: OriginError,
        attempts: u32,
    },
    /// The body was larger than `max_file_bytes`.
    #[error("{path}: body larger than the {limit}-byte limit")]
    TooLarge {
        path: String,
        limit: u64,
        attempts: u32,
    },
    /// 429s kept coming for longer than the request may wait after them.
    #[error("{path}: still answered 429 after {waited_s:.0} s of waiting ({attempts} attempt(s))")]
    Throttled {
        path: String,
        waited_s: f64,
        attempts: u32,
    },
    /// Any other status, after retries where retrying made sense.
    #[error("{path}: HTTP {status} after {attempts} attempt(s)")]
    Http {
        path: String,
        status: u16,
        attempts: u32,
    },
    /// The sink a streamed body went to refused it (the disk, or the archive's own checks):
    /// not the API's failure, and not retried. The sink knows the details.
    #[error("{path}: storing the body: {message}")]
    Store { path: String, message: String },
    /// Timeouts, resets, truncated bodies, after retries.
    #[error("{path}: network error after {attempts} attempt(s): {message}")]
    Network {
        path: String,
        message: String,
        attempts: u32,
    },
    /// A body that does not parse or lacks what the flow needs, after retries.
    #[error("{path}: bad response after {attempts} attempt(s): {message}")]
    BadResponse {
        path: String,
        message: String,
        attempts: u32,
    },
}

impl ApiError {
    /// The `failures.csv` error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::NotFound { .. } => ErrorCode::NotFound,
            ApiError::Denied(_) | ApiError::Http { .. } => ErrorCode::HttpError,
            ApiError::Throttled { .. } => ErrorCode::HttpError,
            ApiError::ForeignUrl { .. } => ErrorCode::ForeignUrl,
            ApiError::TooLarge { .. } => ErrorCode::TooLarge,
            ApiError::Network { .. } | ApiError::Store { .. } => ErrorCode::Network,
            ApiError::BadResponse { .. } => ErrorCode::BadResponse,
        }
    }

    /// The last HTTP status seen, where there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ApiError::NotFound { .. } => Some(404),
            ApiError::Throttled { .. } => Some(429),
            ApiError::Denied(CredentialsRefused { status, .. }) | ApiError::Http { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// Attempts made before giving up.
    pub fn attempts(&self) -> u32 {
        match self {
            ApiError::NotFound { attempts, .. }
            | ApiError::Denied(CredentialsRefused { attempts, .. })
            | ApiError::ForeignUrl { attempts, .. }
            | ApiError::TooLarge { attempts, .. }
            | ApiError::Http { attempts, .. }
            | ApiError::Throttled { attempts, .. }
            | ApiError::Network { attempts, .. }
            | ApiError::BadResponse { attempts, .. } => *attempts,
            ApiError::Store { .. } => 1,
        }
    }

    /// Whether a later run may succeed where this one failed (everything but a foreign href).
    pub fn is_retryable_later(&self) -> bool {
        !matches!(self, ApiError::ForeignUrl { .. })
    }
}

/// Request counts for `report.json`: per endpoint label and HTTP status (0 = no response), and
/// over time with latency per endpoint ([`super::timeline`], bounded memory).
#[derive(Debug)]
pub struct RequestStats {
    by_endpoint: Mutex<BTreeMap<(&'static str, u16), u64>>,
    requests: AtomicU64,
    retries: AtomicU64,
    too_many: AtomicU64,
    throttled_us: AtomicU64,
    bytes: AtomicU64,
    /// When the statistics began (the client was built, just before the first request).
    origin: Instant,
    timeline: Mutex<(Timeline, Latencies)>,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            by_endpoint: Mutex::default(),
            requests: AtomicU64::default(),
            retries: AtomicU64::default(),
            too_many: AtomicU64::default(),
            throttled_us: AtomicU64::default(),
            bytes: AtomicU64::default(),
            origin: Instant::now(),
            timeline: Mutex::default(),
        }
    }
}

impl RequestStats {
    /// One attempt answered with `status` (0: no response) `latency` after it was sent.
    fn record(&self, endpoint: &'static str, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .by_endpoint
            .lock()
            .expect("stats lock")
            .entry((endpoint, status))
            .or_default() += 1;
        let mut t = self.timeline.lock().expect("stats lock");
        t.0.request(self.origin.elapsed(), status);
        t.1.entry(endpoint).or_default().record(latency);
    }
    fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        let since = self.origin.elapsed();
        self.timeline.lock().expect("stats lock").0.retry(since);
    }
    /// Requests, 429s and retries over time since the client was built.
    pub fn timeline(&self) -> Timeline {
        self.timeline.lock().expect("stats lock").0.clone()
    }
    /// Latency per endpoint label: from sending a request to its response headers (or failure).
    pub fn latencies(&self) -> Latencies {
        self.timeline.lock().expect("stats lock").1.clone()
    }
    /// Requests sent (each attempt counts).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Attempts after the first of a request.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    /// 429 answers received.
    pub fn too_many_requests(&self) -> u64 {
        self.too_many.load(Ordering::Relaxed)
    }
    /// Time requests spent waiting after a 429 before they were sent again, summed over
    /// requests (two requests waiting one second at once count two).
    pub fn throttled_wait(&self) -> Duration {
        Duration::from_micros(self.throttled_us.load(Ordering::Relaxed))
    }
    /// Body bytes received with a 200.
    pub fn bytes_received(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// `(endpoint, status) → count`, sorted.
    pub fn by_endpoint(&self) -> BTreeMap<(&'static str, u16), u64> {
        self.by_endpoint.lock().expect("stats lock").clone()
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    limiter: Arc<RateLimiter>,
    breaker: Arc<Breaker>,
    stats: Arc<RequestStats>,
    opts: Arc<ClientOptions>,
    authorization: HeaderValue,
    user_agent: HeaderValue,
}

/// Why a [`BodySink`] refused a body; the sink keeps whatever the caller needs to know more.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where a streamed body goes as it arrives: chunk by chunk, straight from the connection's
/// buffers, never gathered in memory.
pub trait BodySink {
    /// A 200 arrived with this `Content-Type`; its body follows.
    fn begin(&mut self, content_type: &str) -> Result<(), SinkError>;
    /// The next bytes of the body.
    fn chunk(&mut self, bytes: &[u8]) -> Result<(), SinkError>;
    /// The transfer begun last failed (and may be tried again): drop what it delivered.
    fn abandon(&mut self) -> Result<(), SinkError>;
}

/// What [`ApiClient::get`] does with a 200's body.
pub enum Target<'a> {
    /// Read whole (the JSON responses: a few KB) and parsed once, as a JSON object; a body
    /// that is not one is retried like a reset, then `BAD_RESPONSE`.
    Json,
    /// Streamed to the sink as it arrives (images, pages, PDFs), within `max_file_bytes`.
    Stream(&'a mut (dyn BodySink + Send)),
}

impl Target<'_> {
    fn reborrow(&mut self) -> Target<'_> {
        match self {
            Target::Json => Target::Json,
            Target::Stream(sink) => Target::Stream(&mut **sink),
        }
    }
}

/// A body that parses as a JSON object, parsed.
pub fn json_object(body: &[u8]) -> Result<serde_json::Value, String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err("JSON is not an object".into()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

/// How one attempt ended when it produced no response.
enum Attempt {
    /// What [`decide`] rules on.
    Failed(Failure),
    /// The sink refused the body: given up at once.
    Store(String),
}

/// What went wrong with one attempt: the input of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A status other than 200 (a redirect here is one that stays within the origin but loops or
    /// chains too long), with its `Retry-After`, parsed.
    Status {
        /// The HTTP status.
        code: u16,
        /// The `Retry-After` delay, if the header was present and parsed.
        retry_after: Option<Duration>,
    },
    /// A redirect the policy refused because it leaves the request's origin.
    ForeignRedirect(OriginError),
    /// No complete answer: timeout, reset, refused connection, interrupted body.
    Network(String),
    /// A body over `max_file_bytes`, by its `Content-Length` or as it arrived.
    TooLarge,
    /// A 200 whose body is not the JSON object the endpoint answers.
    BadBody(String),
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try again, after the backoff, and no sooner than `after` (the server's `Retry-After`).
    Retry {
        /// The server's `Retry-After`, honoured on 429 and 5xx only.
        after: Option<Duration>,
    },
    /// The request failed for good, with this `failures.csv` code.
    GiveUp(ErrorCode),
    /// Still answered 429 after the request's throttle budget: `HTTP_ERROR` with status 429 in
    /// `failures.csv` (SPEC's codes), told apart here for the message.
    Throttled,
    /// The credentials were refused on a status call: the run must stop.
    Denied,
}

/// How much of its budget a request has used when an attempt fails: the input of [`decide`]
/// beside the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tries {
    /// Failed attempts that count against `max_retries`, this one included: every one but 429s.
    pub counted: u32,
    /// `max_retries + 1`.
    pub max_attempts: u32,
    /// How long the request has waited after 429s so far (from each 429 until it was let
    /// through again).
    pub throttled: Duration,
    /// The most it may wait after 429s in all (`[limits] max_throttle_seconds`).
    pub max_throttled: Duration,
}

/// Whether a status asks to be retried (429 and 5xx). Only these honour `Retry-After`: on a
/// 200, 404 or redirect it would let one hostile header stall every request of the job.
pub fn is_retryable_status(code: u16) -> bool {
    code == 429 || (500..=599).contains(&code)
}

/// The retry decision, in one place: 5xx, network errors and unusable bodies are retried until
/// `tries.counted` reaches `tries.max_attempts`; a 429 is retried for as long as the request has
/// waited less than `tries.max_throttled` after 429s (then `HTTP_ERROR`, status 429), and does not count
/// against the attempts; 404, 401/403, other statuses, foreign redirects and oversized bodies are
/// not retried. A 401 or 403 is a refusal of the credentials only on a status call
/// (`status_call`); elsewhere it is that file's HTTP error (a 403 on an unmasked page, for one,
/// means unmasked retrieval is not enabled).
pub fn decide(failure: &Failure, status_call: bool, tries: &Tries) -> Decision {
    let retry = |after: Option<Duration>, code: ErrorCode| {
        if tries.counted < tries.max_attempts {
            Decision::Retry { after }
        } else {
            Decision::GiveUp(code)
        }
    };
    match failure {
        Failure::Status {
            code: 429,
            retry_after,
        } => {
            if tries.throttled < tries.max_throttled {
                Decision::Retry {
                    after: *retry_after,
                }
            } else {
                Decision::Throttled
            }
        }
        Failure::Status { code, retry_after } if is_retryable_status(*code) => {
            retry(*retry_after, ErrorCode::HttpError)
        }
        Failure::Status { code: 404, .. } => Decision::GiveUp(ErrorCode::NotFound),
        Failure::Status {
            code: 401 | 403, ..
        } if status_call => Decision::Denied,
        Failure::Status { .. } => Decision::GiveUp(ErrorCode::HttpError),
        Failure::ForeignRedirect(_) => Decision::GiveUp(ErrorCode::ForeignUrl),
        Failure::Network(_) => retry(None, ErrorCode::Network),
        Failure::TooLarge => Decision::GiveUp(ErrorCode::TooLarge),
        Failure::BadBody(_) => retry(None, ErrorCode::BadResponse),
    }
}

impl Failure {
    /// Whether this failure looks like the API being down rather than answering: no complete
    /// answer (refused, reset, timed out, interrupted) or a 5xx.
    pub fn is_outage_like(&self) -> bool {
        match self {
            Failure::Network(_) => true,
            Failure::Status { code, .. } => (500..=599).contains(code),
            _ => false,
        }
    }

    /// The error reported for this failure after `attempts` attempts; `denied` as [`decide`] said.
    fn into_error(self, denied: bool, path: &str, attempts: u32, limit: u64) -> ApiError {
        let path = path.to_string();
        match self {
            Failure::Status { code: 404, .. } => ApiError::NotFound { path, attempts },
            Failure::Status { code, .. } if denied => ApiError::Denied(CredentialsRefused {
                path,
                status: code,
                attempts,
            }),
            Failure::Status { code, .. } => ApiError::Http {
                path,
                status: code,
                attempts,
            },
            Failure::ForeignRedirect(source) => ApiError::ForeignUrl {
                path,
                source,
                attempts,
            },
            Failure::Network(message) => ApiError::Network {
                path,
                message,
                attempts,
            },
            Failure::TooLarge => ApiError::TooLarge {
                path,
                limit,
                attempts,
            },
            Failure::BadBody(message) => ApiError::BadResponse {
                path,
                message,
                attempts,
            },
        }
    }
}

impl ApiClient {
    /// Builds the client. Fails only if the header values are not valid HTTP header text.
    pub fn new(opts: ClientOptions, limiter: Arc<RateLimiter>) -> Result<Self, String> {
        let mut authorization = HeaderValue::from_str(&opts.authorization).map_err(|_| {
            "the API credentials contain characters not allowed in an HTTP header".to_string()
        })?;
        authorization.set_sensitive(true);
        let user_agent = HeaderValue::from_str(&opts.user_agent).map_err(|_| {
            format!(
                "user_agent {:?} is not valid HTTP header text",
                opts.user_agent
            )
        })?;
        // Redirects: followed only within the origin of the original request, so credentials
        // never travel to another origin or from https to http.
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().cloned();
            match first {
                Some(first)
                    if attempt.previous().len() < 5
                        && origin::check_url(&first, attempt.url()).is_ok() =>
                {
                    attempt.follow()
                }
                _ => attempt.stop(),
            }
        });
        let http = reqwest::Client::builder()
            .redirect(policy)
            .timeout(opts.timeout)
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(ApiClient {
            http,
            limiter,
            breaker: Arc::new(Breaker::new(opts.breaker)),
            stats: Arc::new(RequestStats::default()),
            opts: Arc::new(opts),
            authorization,
            user_agent,
        })
    }

    /// The job-wide request statistics.
    pub fn stats(&self) -> &Arc<RequestStats> {
        &self.stats
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    /// The job-wide circuit breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// The configured base URL of a family.
    pub fn base(&self, family: Family) -> &Url {
        match family {
            Family::Netverify => &self.opts.netverify_url,
            Family::Retrieval => &self.opts.retrieval_url,
        }
    }

    /// The URL of an API path (`/api/netverify/v2/...`) on a family's base URL.
    pub fn url(&self, family: Family, path: &str) -> Url {
        let mut url = self.base(family).clone();
        url.set_path(path);
        url.set_query(None);
        url
    }

    /// GET with retries. `endpoint` labels the request in the statistics, names its `Accept` and
    /// tells whether it is a status call; `url` must be on the family's origin (checked before
    /// anything is sent); `target` says whether a 200 body is parsed as JSON (a body that does
    /// not parse is retried, then reported as `BAD_RESPONSE`) or streamed to a sink.
    pub async fn get(
        &self,
        family: Family,
        endpoint: &Endpoint,
        url: &Url,
        mut target: Target<'_>,
    ) -> Result<ApiResponse, ApiError> {
        let api_path = match url.query() {
            Some(q) => format!("{}?{}", url.path(), q),
            None => url.path().to_string(),
        };
        if let Err(source) = origin::check_url(self.base(family), url) {
            return Err(ApiError::ForeignUrl {
                path: api_path,
                source,
                attempts: 0,
            });
        }
        let mut tries = Tries {
            counted: 0,
            max_attempts: self.opts.retry.max_retries + 1,
            throttled: Duration::ZERO,
            max_throttled: self.opts.retry.max_throttle,
        };
        let mut attempt = 0u32;
        // When the last attempt was answered 429: the wait from then until the next one is let
        // through is throttled time.
        let mut refused_at: Option<tokio::time::Instant> = None;
        loop {
            attempt += 1;
            if attempt > 1 {
                self.stats.retry();
            }
            let (probe, sent) = self.admit(&mut refused_at, &mut tries).await;
            let failure = match self
                .attempt(endpoint, url, &api_path, target.reborrow(), attempt)
                .await
            {
                Ok(response) => {
                    probe.settle(Outcome::Answered);
                    return Ok(response);
                }
                Err(Attempt::Failed(failure)) => failure,
                Err(Attempt::Store(message)) => {
                    probe.settle(Outcome::Answered);
                    return Err(ApiError::Store {
                        path: api_path,
                        message,
                    });
                }
            };
            let (wait, throttled) = self.after_failure(
                failure,
                endpoint,
                (probe, sent),
                &mut tries,
                (&api_path, attempt),
            )?;
            if throttled {
                refused_at = Some(tokio::time::Instant::now());
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Lets one attempt through: the breaker (an outage pauses every request here; a request
    /// dropped while it is the probe hands the probe to another), then the shared limiter. The
    /// wait since a 429 (`refused_at`) counts as throttled time. Returns the probe's guard and
    /// when the attempt was let through.
    async fn admit(
        &self,
        refused_at: &mut Option<tokio::time::Instant>,
        tries: &mut Tries,
    ) -> (ProbeGuard<'_>, tokio::time::Instant) {
        let admission = self.breaker.admit().await;
        let probe = ProbeGuard {
            breaker: &self.breaker,
            armed: admission == Admission::Probe,
        };
        let sent = self.limiter.acquire().await;
        if let Some(at) = refused_at.take() {
            let waited = sent.saturating_duration_since(at);
            tries.throttled += waited;
            self.stats
                .throttled_us
                .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        }
        (probe, sent)
    }

    /// What follows a failed attempt: the error to return, or how long to wait before the next
    /// attempt and whether this one was refused with 429. A failure during an outage is the
    /// job's, not the request's: it does not use up the request's retries; nor does a 429, which
    /// the shared limiter hears of instead.
    fn after_failure(
        &self,
        failure: Failure,
        endpoint: &Endpoint,
        (probe, sent): (ProbeGuard<'_>, tokio::time::Instant),
        tries: &mut Tries,
        (api_path, attempt): (&str, u32),
    ) -> Result<(Duration, bool), ApiError> {
        let limit = self.opts.max_file_bytes;
        let outcome = if failure.is_outage_like() {
            Outcome::Failed {
                path: path_hash(api_path),
            }
        } else {
            Outcome::Answered
        };
        let counts = probe.settle(outcome);
        let throttled = matches!(failure, Failure::Status { code: 429, .. });
        if throttled {
            self.limiter.on_429(sent);
        } else if counts {
            tries.counted += 1;
        }
        let after = match decide(&failure, endpoint.is_status_call(), tries) {
            Decision::Retry { after } => after,
            Decision::Throttled => {
                return Err(ApiError::Throttled {
                    path: api_path.to_string(),
                    waited_s: tries.throttled.as_secs_f64(),
                    attempts: attempt,
                });
            }
            Decision::GiveUp(code) => {
                let error = failure.into_error(false, api_path, attempt, limit);
                debug_assert_eq!(error.code(), code);
                return Err(error);
            }
            Decision::Denied => {
                return Err(failure.into_error(true, api_path, attempt, limit));
            }
        };
        // After a 429 the shared limiter paces the retry with every other request (and holds
        // them all for a Retry-After); other failures back off on their own.
        let wait = if throttled || !counts || tries.counted == 0 {
            Duration::ZERO
        } else {
            let backoff = self.opts.retry.backoff(tries.counted - 1);
            after.map_or(backoff, |ra| ra.max(backoff))
        };
        tracing::debug!(
            endpoint = endpoint.label,
            attempt,
            wait_ms = wait.as_millis() as u64,
            "retrying: {}",
            failure.into_error(false, api_path, attempt, limit)
        );
        Ok((wait, throttled))
    }

    /// One request: sent, its status classified, its body read within the cap and parsed, or
    /// streamed to the sink.
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        url: &Url,
        api_path: &str,
        target: Target<'_>,
        attempts: u32,
    ) -> Result<ApiResponse, Attempt> {
        let sent_at = Instant::now();
        let sent = self
            .http
            .get(url.clone())
            .header(ACCEPT, endpoint.accept)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(USER_AGENT, self.user_agent.clone())
            .send()
            .await;
        let resp = sent.map_err(|e| {
            self.stats.record(endpoint.label, 0, sent_at.elapsed());
            Attempt::Failed(Failure::Network(describe(&e)))
        })?;
        self.stats
            .record(endpoint.label, resp.status().as_u16(), sent_at.elapsed());
        if resp.status() != StatusCode::OK {
            return Err(Attempt::Failed(self.status_failure(&resp, url)));
        }
        let limit = self.opts.max_file_bytes;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(Attempt::Failed(Failure::TooLarge));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (body, json, bytes) = match target {
            Target::Json => {
                let body = self.read_body(resp).await.map_err(Attempt::Failed)?;
                let json = json_object(&body).map_err(|m| Attempt::Failed(Failure::BadBody(m)))?;
                let n = body.len() as u64;
                (body, json, n)
            }
            Target::Stream(sink) => {
                let n = self.stream_body(resp, &content_type, sink).await?;
                (Bytes::new(), serde_json::Value::Null, n)
            }
        };
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(ApiResponse {
            api_path: api_path.to_string(),
            status: 200,
            content_type,
            body,
            json,
            bytes,
            retrieved_at: Utc::now(),
            attempts,
        })
    }

    /// The body of a 200, chunk by chunk into `sink` as it arrives, refused as soon as it passes
    /// `max_file_bytes`; on any failure the sink drops what it received. Returns its size.
    async fn stream_body(
        &self,
        mut resp: reqwest::Response,
        content_type: &str,
        sink: &mut (dyn BodySink + Send),
    ) -> Result<u64, Attempt> {
        let limit = self.opts.max_file_bytes;
        let store = |e: SinkError| Attempt::Store(e.to_string());
        sink.begin(content_type).map_err(store)?;
        let mut received = 0u64;
        let failed = loop {
            let chunk = match resp.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(received),
                Err(e) => break Attempt::Failed(Failure::Network(describe(&e))),
            };
            received += chunk.len() as u64;
            if received > limit {
                break Attempt::Failed(Failure::TooLarge);
            }
            // The chunk is the connection's own buffer: written (and hashed) from there, then
            // dropped, so the buffer is reused for the next read.
            if let Err(e) = sink.chunk(&chunk) {
                break store(e);
            }
        };
        sink.abandon().map_err(store)?;
        Err(failed)
    }

    /// A status other than 200, with the job-wide effects of 429 and `Retry-After`.
    fn status_failure(&self, resp: &reqwest::Response, url: &Url) -> Failure {
        let code = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
            .filter(|_| is_retryable_status(code));
        // Retry-After holds the whole job, even when this request has no retry left.
        if let Some(delay) = retry_after {
            self.limiter.hold_for(delay);
        }
        if code == 429 {
            // The limiter hears of it from the retry loop, which knows when the request left.
            self.stats.too_many.fetch_add(1, Ordering::Relaxed);
        }
        if resp.status().is_redirection() {
            // A redirect the policy refused to follow: it leaves the origin, or it stays within
            // the origin but loops (or chains too long), which is an HTTP error.
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok());
            if let Some(to) = location.filter(|to| origin::check_url(url, to).is_err()) {
                return Failure::ForeignRedirect(OriginError::Foreign {
                    expected: origin::origin_of(url),
                    found: origin::origin_of(&to),
                });
            }
        }
        Failure::Status { code, retry_after }
    }

    /// The whole body of a 200, refused as soon as it passes `max_file_bytes`.
    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Bytes, Failure> {
        let limit = self.opts.max_file_bytes;
        let mut body =
            BytesMut::with_capacity(resp.content_length().unwrap_or(8192).min(limit) as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Failure::Network(describe(&e)))?
        {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(Failure::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

/// Holds the breaker's probe for one attempt: recorded once with [`ProbeGuard::settle`], or, if the
/// attempt is dropped first (the run is stopping), handed back so another request may probe.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl ProbeGuard<'_> {
    /// Records the attempt's outcome; returns whether a failure counts against the retries.
    fn settle(mut self, outcome: Outcome) -> bool {
        let admission = if std::mem::take(&mut self.armed) {
            Admission::Probe
        } else {
            Admission::Normal
        };
        self.breaker.record(admission, outcome)
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.abandon_probe();
        }
    }
}

/// A stable hash of a request path, so the breaker can tell one failing reference from an outage.
fn path_hash(path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// A reqwest error without its URL (URLs never carry credentials here, but paths carry references,
/// which the caller already names once).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body interrupted"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 7;

    /// A request's budget after `attempt` counted attempts (and no 429 waiting).
    fn at(attempt: u32, max_attempts: u32) -> Tries {
        Tries {
            counted: attempt,
            max_attempts,
            throttled: Duration::ZERO,
            max_throttled: Duration::from_secs(600),
        }
    }

    fn status(code: u16) -> Failure {
        Failure::Status {
            code,
            retry_after: None,
        }
    }

    fn retry(after: Option<Duration>) -> Decision {
        Decision::Retry { after }
    }

    #[test]
    fn a_429_does_not_use_up_the_attempts_but_the_throttle_budget() {
        assert_eq!(decide(&status(429), false, &at(1, MAX)), retry(None));
        // However many attempts other failures used: a 429 is the server pacing the job.
        assert_eq!(decide(&status(429), true, &at(MAX, MAX)), retry(None));
        assert_eq!(decide(&status(429), false, &at(MAX + 5, MAX)), retry(None));
        let waited = |secs| Tries {
            throttled: Duration::from_secs(secs),
            ..at(1, MAX)
        };
        assert_eq!(decide(&status(429), false, &waited(599)), retry(None));
        assert_eq!(
            decide(&status(429), false, &waited(600)),
            Decision::Throttled
        );
        // The throttle budget is the 429's alone.
        assert_eq!(decide(&status(503), false, &waited(600)), retry(None));
        let error = ApiError::Throttled {
            path: "/p".into(),
            waited_s: 600.0,
            attempts: 40,
        };
        assert_eq!(
            (error.code(), error.http_status(), error.attempts()),
            (ErrorCode::HttpError, Some(429), 40)
        );
    }

    #[test]
    fn a_429_honours_retry_after_in_seconds_and_as_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        for (header, wait) in [("12", 12), (date.as_str(), 30)] {
            let failure = Failure::Status {
                code: 429,
                retry_after: parse_retry_after(header, now),
            };
            assert_eq!(
                decide(&failure, false, &at(1, MAX)),
                retry(Some(Duration::from_secs(wait))),
                "{header}"
            );
        }
    }

    #[test]
    fn server_errors_are_retried_with_their_retry_after() {
        for code in [500, 502, 503, 504, 599] {
            assert_eq!(
                decide(&status(code), false, &at(1, MAX)),
                retry(None),
                "{code}"
            );
        }
        let failure = Failure::Status {
            code: 503,
            retry_after: Some(Duration::from_secs(5)),
        };
        assert_eq!(
            decide(&failure, true, &at(2, MAX)),
            retry(Some(Duration::from_secs(5)))
        );
    }

    #[test]
    fn timeouts_resets_and_unusable_bodies_are_retried() {
        let reset = Failure::Network("connection failed: reset".into());
        assert_eq!(decide(&reset, false, &at(1, MAX)), retry(None));
        let timeout = Failure::Network("timed out".into());
        assert_eq!(decide(&timeout, true, &at(3, MAX)), retry(None));
        let body = Failure::BadBody("invalid JSON".into());
        assert_eq!(decide(&body, false, &at(1, MAX)), retry(None));
    }

    #[test]
    fn a_404_is_final_not_found() {
        for status_call in [true, false] {
            assert_eq!(
                decide(&status(404), status_call, &at(1, MAX)),
                Decision::GiveUp(ErrorCode::NotFound)
            );
        }
    }

    #[test]
    fn a_401_or_403_refuses_the_credentials_only_on_a_status_call() {
        for code in [401, 403] {
            assert_eq!(decide(&status(code), true, &at(1, MAX)), Decision::Denied);
            assert_eq!(
                decide(&status(code), false, &at(1, MAX)),
                Decision::GiveUp(ErrorCode::HttpError),
                "{code} on an image or an unmasked page is that file's error"
            );
        }
        let refused = status(401).into_error(true, "/api/netverify/v2/scans/x", 1, 0);
        assert!(matches!(
            &refused,
            ApiError::Denied(CredentialsRefused { status: 401, .. })
        ));
        assert_eq!(refused.code(), ErrorCode::HttpError);
        assert_eq!(refused.http_status(), Some(401));
    }

    #[test]
    fn other_4xx_and_redirects_are_final_http_errors() {
        for code in [400, 405, 410, 418, 422, 301, 302, 204] {
            let failure = Failure::Status {
                code,
                retry_after: Some(Duration::from_secs(60)),
            };
            assert_eq!(
                decide(&failure, true, &at(1, MAX)),
                Decision::GiveUp(ErrorCode::HttpError),
                "{code}"
            );
        }
        let foreign = Failure::ForeignRedirect(OriginError::Unparseable);
        assert_eq!(
            decide(&foreign, false, &at(1, MAX)),
            Decision::GiveUp(ErrorCode::ForeignUrl)
        );
    }

    #[test]
    fn the_last_attempt_gives_up_with_the_code_of_what_went_wrong() {
        let cases = [
            (status(503), ErrorCode::HttpError),
            (Failure::Network("timed out".into()), ErrorCode::Network),
            (
                Failure::BadBody("not an object".into()),
                ErrorCode::BadResponse,
            ),
        ];
        for (failure, code) in cases {
            assert_eq!(decide(&failure, false, &at(MAX - 1, MAX)), retry(None));
            assert_eq!(
                decide(&failure, false, &at(MAX, MAX)),
                Decision::GiveUp(code.clone())
            );
            let error = failure.into_error(false, "/p", MAX, 0);
            assert_eq!((error.code(), error.attempts()), (code, MAX));
        }
        // max_retries = 0: one attempt, no retry.
        assert_eq!(
            decide(&status(500), false, &at(1, 1)),
            Decision::GiveUp(ErrorCode::HttpError)
        );
    }

    #[test]
    fn a_body_over_the_limit_is_too_large_at_once() {
        assert_eq!(
            decide(&Failure::TooLarge, false, &at(1, MAX)),
            Decision::GiveUp(ErrorCode::TooLarge)
        );
        let error = Failure::TooLarge.into_error(false, "/p", 1, 52_428_800);
        assert!(matches!(
            error,
            ApiError::TooLarge {
                limit: 52_428_800,
                ..
            }
        ));
        assert_eq!(error.code(), ErrorCode::TooLarge);
    }
}
