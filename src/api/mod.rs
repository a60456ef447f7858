//! The HTTP side of the export: one client that every request goes through.
//!
//! - [`origin`]: which hrefs may be followed (scheme, host and port of the configured base URL);
//! - [`limiter`]: the one job-wide rate limiter (governor ceiling plus adaptive slow-down on 429);
//! - [`breaker`]: the job-wide pause when the API fails across the board (an outage);
//! - [`retry`]: backoff with full jitter and `Retry-After` parsing;
//! - [`client`]: auth, User-Agent, body caps, status classification, request statistics;
//! - [`timeline`]: requests over time and latency per endpoint, in bounded memory;
//! - [`endpoints`]: the table of each kind's paths, final and pending states, and what follows.
//!
//! This stage knows HTTP and the API's paths; it knows nothing of archives or tables.

pub mod breaker;
pub mod client;
pub mod endpoints;
pub mod limiter;
pub mod origin;
pub mod retry;
pub mod timeline;

pub use client::{ApiClient, ApiError, ApiResponse, ClientOptions, Family, RequestStats};
pub use limiter::RateLimiter;
