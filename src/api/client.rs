//! The one HTTP client of a job: every request goes through [`ApiClient::get`], which awaits the
//! shared rate limiter, sends `Accept`, `Authorization` and `User-Agent`, retries what is worth
//! retrying (429, 5xx, timeouts, resets, unparseable bodies) and caps every body at
//! `max_file_bytes`. It never logs URLs with credentials (credentials are a header, never in a URL)
//! and never sends them to any origin but the configured one: redirects are followed only within
//! the origin of the request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{StatusCode, Url};

use super::limiter::RateLimiter;
use super::origin::{self, OriginError};
use super::retry::{RetryPolicy, parse_retry_after};
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
    /// The body as received.
    pub body: Bytes,
    /// When the body was complete.
    pub retrieved_at: DateTime<Utc>,
    /// Attempts this response took (1 = no retry).
    pub attempts: u32,
}

/// Why a request did not produce a usable response. Each maps to a `failures.csv` error code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: the transaction (or file) is not available; for historic records usually retention.
    #[error("{path}: 404 Not Found")]
    NotFound { path: String, attempts: u32 },
    /// 401 or 403: the credentials were refused (fatal on a status call).
    #[error("{path}: HTTP {status}: credentials refused")]
    Denied {
        path: String,
        status: u16,
        attempts: u32,
    },
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
    /// Any other status, after retries where retrying made sense.
    #[error("{path}: HTTP {status} after {attempts} attempt(s)")]
    Http {
        path: String,
        status: u16,
        attempts: u32,
    },
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
            ApiError::Denied { .. } | ApiError::Http { .. } => ErrorCode::HttpError,
            ApiError::ForeignUrl { .. } => ErrorCode::ForeignUrl,
            ApiError::TooLarge { .. } => ErrorCode::TooLarge,
            ApiError::Network { .. } => ErrorCode::Network,
            ApiError::BadResponse { .. } => ErrorCode::BadResponse,
        }
    }

    /// The last HTTP status seen, where there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ApiError::NotFound { .. } => Some(404),
            ApiError::Denied { status, .. } | ApiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Attempts made before giving up.
    pub fn attempts(&self) -> u32 {
        match self {
            ApiError::NotFound { attempts, .. }
            | ApiError::Denied { attempts, .. }
            | ApiError::ForeignUrl { attempts, .. }
            | ApiError::TooLarge { attempts, .. }
            | ApiError::Http { attempts, .. }
            | ApiError::Network { attempts, .. }
            | ApiError::BadResponse { attempts, .. } => *attempts,
        }
    }

    /// Whether a later run may succeed where this one failed (everything but a foreign href).
    pub fn is_retryable_later(&self) -> bool {
        !matches!(self, ApiError::ForeignUrl { .. })
    }
}

/// Request counts for `report.json`: per endpoint label and HTTP status (0 = no response).
#[derive(Debug, Default)]
pub struct RequestStats {
    by_endpoint: Mutex<BTreeMap<(&'static str, u16), u64>>,
    requests: AtomicU64,
    retries: AtomicU64,
    too_many: AtomicU64,
    bytes: AtomicU64,
}

impl RequestStats {
    fn record(&self, endpoint: &'static str, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .by_endpoint
            .lock()
            .expect("stats lock")
            .entry((endpoint, status))
            .or_default() += 1;
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
    stats: Arc<RequestStats>,
    opts: Arc<ClientOptions>,
    authorization: HeaderValue,
    user_agent: HeaderValue,
}

/// How a body is checked before it counts as received; a failure is retried like a reset.
pub type Validate = fn(&[u8]) -> Result<(), String>;

/// Accepts any body.
pub fn any_body(_: &[u8]) -> Result<(), String> {
    Ok(())
}

/// Accepts a body that parses as a JSON object.
pub fn json_object(body: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err("JSON is not an object".into()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

enum Attempt {
    Done(ApiResponse),
    Final(ApiError),
    Retry {
        error: ApiError,
        after: Option<Duration>,
    },
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

    /// GET with retries. `endpoint` labels the request in the statistics; `href` must be on the
    /// family's origin (checked before anything is sent); `validate` decides whether a 200 body is
    /// usable (a failure is retried, then reported as `BAD_RESPONSE`).
    pub async fn get(
        &self,
        family: Family,
        endpoint: &'static str,
        url: &Url,
        accept: &'static str,
        validate: Validate,
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
        let max_attempts = self.opts.retry.max_retries + 1;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if attempt > 1 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.limiter.acquire().await;
            let outcome = self
                .attempt(endpoint, url, &api_path, accept, validate, attempt)
                .await;
            match outcome {
                Attempt::Done(r) => return Ok(r),
                Attempt::Final(e) => return Err(e),
                Attempt::Retry { error, after } => {
                    if attempt >= max_attempts {
                        return Err(error);
                    }
                    let backoff = self.opts.retry.backoff(attempt - 1);
                    let wait = after.map_or(backoff, |ra| ra.max(backoff));
                    tracing::debug!(
                        endpoint,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "retrying: {error}"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        endpoint: &'static str,
        url: &Url,
        api_path: &str,
        accept: &'static str,
        validate: Validate,
        attempts: u32,
    ) -> Attempt {
        let network = |message: String| Attempt::Retry {
            error: ApiError::Network {
                path: api_path.to_string(),
                message,
                attempts,
            },
            after: None,
        };
        let sent = self
            .http
            .get(url.clone())
            .header(ACCEPT, accept)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(USER_AGENT, self.user_agent.clone())
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.stats.record(endpoint, 0);
                return network(describe(&e));
            }
        };
        let status = resp.status();
        self.stats.record(endpoint, status.as_u16());
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Retry-After holds the whole job, so it is honoured only where it asks to wait before a
        // retry (429 and 5xx): on a 200, 404 or redirect it would let one hostile header stall
        // every request of the job for up to the parser's cap.
        let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        if let Some(delay) = retry_after.filter(|_| retryable) {
            self.limiter.hold_for(delay);
        }
        let path = api_path.to_string();
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.stats.too_many.fetch_add(1, Ordering::Relaxed);
            self.limiter.on_429();
            return Attempt::Retry {
                error: ApiError::Http {
                    path,
                    status: 429,
                    attempts,
                },
                after: retry_after,
            };
        }
        if status.is_server_error() {
            return Attempt::Retry {
                error: ApiError::Http {
                    path,
                    status: status.as_u16(),
                    attempts,
                },
                after: retry_after,
            };
        }
        match status.as_u16() {
            200 => {}
            404 => return Attempt::Final(ApiError::NotFound { path, attempts }),
            401 | 403 => {
                return Attempt::Final(ApiError::Denied {
                    path,
                    status: status.as_u16(),
                    attempts,
                });
            }
            300..=399 => {
                // A redirect the policy refused to follow: it leaves the origin, or it stays
                // within the origin but loops (or chains too long), which is an HTTP error.
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url.join(l).ok());
                return Attempt::Final(match location {
                    Some(to) if origin::check_url(url, &to).is_err() => ApiError::ForeignUrl {
                        path,
                        source: OriginError::Foreign {
                            expected: origin::origin_of(url),
                            found: origin::origin_of(&to),
                        },
                        attempts,
                    },
                    _ => ApiError::Http {
                        path,
                        status: status.as_u16(),
                        attempts,
                    },
                });
            }
            other => {
                return Attempt::Final(ApiError::Http {
                    path,
                    status: other,
                    attempts,
                });
            }
        }
        let limit = self.opts.max_file_bytes;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Attempt::Final(ApiError::TooLarge {
                path,
                limit,
                attempts,
            });
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body =
            BytesMut::with_capacity(resp.content_length().unwrap_or(8192).min(limit) as usize);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > limit {
                        return Attempt::Final(ApiError::TooLarge {
                            path,
                            limit,
                            attempts,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return network(describe(&e)),
            }
        }
        if let Err(message) = validate(&body) {
            return Attempt::Retry {
                error: ApiError::BadResponse {
                    path,
                    message,
                    attempts,
                },
                after: None,
            };
        }
        self.stats
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Attempt::Done(ApiResponse {
            api_path: path,
            status: 200,
            content_type,
            body: body.freeze(),
            retrieved_at: Utc::now(),
            attempts,
        })
    }
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
