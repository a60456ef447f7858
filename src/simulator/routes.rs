//! HTTP layer of the simulator: checks (method, User-Agent, Basic credentials), fault
//! injection, routing of every endpoint of the guide, and the request log entry.
//!
//! One fallback handler parses the path itself, so every request — including unknown paths
//! and refused ones — goes through the same logging. Response bodies come from
//! [`super::data`] and [`super::media`]; no data is invented here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use super::SimOptions;
use super::data::{self, Scenario, hash, unit};
use super::faults::{ConnCtl, FaultState, Injected};
use super::log::{RequestLog, RequestRecord, now_micros};
use super::media::{self, ImageFormat};
use crate::Kind;

/// Everything the handler shares.
pub(crate) struct SimState {
    pub(crate) opts: SimOptions,
    pub(crate) base_url: String,
    pub(crate) expected_auth: String,
    pub(crate) polls: Mutex<HashMap<String, u32>>,
    pub(crate) log: RequestLog,
    pub(crate) faults: FaultState,
}

impl SimState {
    pub(crate) fn new(opts: SimOptions, base_url: String, log: RequestLog) -> Self {
        let expected_auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", opts.token, opts.secret))
        );
        let faults = FaultState::new(opts.seed, opts.faults.clone());
        SimState {
            opts,
            base_url,
            expected_auth,
            polls: Mutex::new(HashMap::new()),
            log,
            faults,
        }
    }
}

/// The router: one handler for everything.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// How the answer leaves the server.
enum Delivery {
    Normal,
    /// Content-Length of the whole body, half of it sent, then the connection closes.
    Truncate,
    /// No answer: the connection is reset.
    Reset,
}

struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    retry_after: Option<u64>,
    delivery: Delivery,
}

impl Reply {
    fn json(status: StatusCode, v: &Value) -> Self {
        Reply {
            status,
            content_type: "application/json;charset=UTF-8",
            body: Bytes::from(v.to_string()),
            retry_after: None,
            delivery: Delivery::Normal,
        }
    }

    fn ok(v: &Value) -> Self {
        Self::json(StatusCode::OK, v)
    }

    /// An error in the shape Jumio uses (`title`, `status`, `detail`).
    fn error(status: StatusCode, detail: &str) -> Self {
        let v = json!({
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        Self::json(status, &v)
    }

    fn not_found() -> Self {
        Self::error(
            StatusCode::NOT_FOUND,
            "The transaction is not available or has been deleted",
        )
    }

    fn binary(content_type: &'static str, body: Vec<u8>) -> Self {
        Reply {
            status: StatusCode::OK,
            content_type,
            body: Bytes::from(body),
            retry_after: None,
            delivery: Delivery::Normal,
        }
    }
}

async fn handle(
    State(state): State<Arc<SimState>>,
    ConnectInfo(ctl): ConnectInfo<ConnCtl>,
    req: Request,
) -> Response {
    let time = now_micros();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let reply = answer(&state, &method, &path, query.as_deref(), req.headers()).await;
    let (status, sent, response) = into_response(reply, &ctl);
    state.log.record(RequestRecord {
        time,
        method: method.to_string(),
        path,
        query,
        status,
        bytes: sent,
    });
    response
}

/// Builds the HTTP response; returns the logged status and body bytes actually sent.
fn into_response(reply: Reply, ctl: &ConnCtl) -> (u16, u64, Response) {
    let mut builder = Response::builder()
        .status(reply.status)
        .header(header::CONTENT_TYPE, reply.content_type);
    if let Some(secs) = reply.retry_after {
        builder = builder.header(header::RETRY_AFTER, secs.to_string());
    }
    let full = reply.body.len() as u64;
    let (status, sent, body) = match reply.delivery {
        Delivery::Normal => (reply.status.as_u16(), full, Body::from(reply.body)),
        Delivery::Reset => {
            ctl.reset();
            (0, 0, Body::empty())
        }
        Delivery::Truncate => {
            let half = reply.body.slice(..reply.body.len() / 2);
            let sent = half.len() as u64;
            builder = builder.header(header::CONTENT_LENGTH, full.to_string());
            // The pause lets the server flush the first half before the body fails, which
            // makes it close the connection mid-body.
            let stream = futures::stream::unfold(0u8, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Some((Err(std::io::Error::other("simulated truncation")), 2))
                        }
                        _ => None,
                    }
                }
            });
            (reply.status.as_u16(), sent, Body::from_stream(stream))
        }
    };
    let response = builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    });
    (status, sent, response)
}

async fn answer(
    state: &SimState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Reply {
    let faults = state.faults.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if method != Method::GET {
        return Reply::error(StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported");
    }
    let ua_ok = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    if !ua_ok {
        return Reply::error(StatusCode::BAD_REQUEST, "The User-Agent header is required");
    }
    let auth_ok = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == state.expected_auth.as_bytes());
    if !auth_ok {
        return Reply::error(StatusCode::UNAUTHORIZED, "Full authentication is required");
    }
    let (n, injected) = state.faults.decide();
    match injected {
        Some(Injected::Ceiling | Injected::TooMany) => {
            let mut r = Reply::json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"title": "Too Many Requests", "status": 429, "detail": "Request limit exceeded"}),
            );
            r.retry_after = faults.retry_after_429;
            return r;
        }
        Some(Injected::ServerError(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Reply::error(status, "Simulated server error");
        }
        Some(Injected::Reset) => {
            let mut r = Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "reset");
            r.delivery = Delivery::Reset;
            return r;
        }
        None => {}
    }
    let mut reply = route(state, path, query);
    if reply.status == StatusCode::OK && reply.body.len() > 1 && state.faults.truncate(n) {
        reply.delivery = Delivery::Truncate;
    }
    reply
}

fn timestamp() -> String {
    data::format_timestamp_ms(chrono::Utc::now().timestamp_millis())
}

/// Status calls so far for a pending reference, counting this one.
fn count_status_call(state: &SimState, sc: &Scenario) -> u32 {
    if sc.polls == data::Polls::Ready {
        return 1;
    }
    let mut polls = state.polls.lock().unwrap_or_else(|e| e.into_inner());
    let n = polls.entry(sc.reference.clone()).or_insert(0);
    *n = n.saturating_add(1);
    *n
}

/// Status calls so far, without counting (for the other endpoints).
fn status_calls(state: &SimState, sc: &Scenario) -> u32 {
    if sc.polls == data::Polls::Ready {
        return 1;
    }
    let polls = state.polls.lock().unwrap_or_else(|e| e.into_inner());
    polls.get(&sc.reference).copied().unwrap_or(0)
}

fn route(state: &SimState, path: &str, query: Option<&str>) -> Reply {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let ["", "api", "netverify", "v2", family, reference, rest @ ..] = segs.as_slice() else {
        return Reply::not_found();
    };
    let kind = match *family {
        "scans" => Kind::Netverify,
        "documents" => Kind::Document,
        "authentications" => Kind::Authentication,
        _ => return Reply::not_found(),
    };
    let seed = state.opts.seed;
    let Some(sc) = data::scenario(seed, reference) else {
        return Reply::not_found();
    };
    if sc.kind != kind || sc.retention_404 {
        return Reply::not_found();
    }
    let origin = if sc.foreign_hrefs || state.faults.foreign(reference) {
        state.opts.faults.foreign_origin.as_str()
    } else {
        state.base_url.as_str()
    };
    match kind {
        Kind::Netverify => netverify(state, &sc, origin, rest),
        Kind::Authentication => authentication(state, &sc, origin, rest),
        Kind::Document => document(state, &sc, origin, rest, query),
    }
}

fn netverify(state: &SimState, sc: &Scenario, origin: &str, rest: &[&str]) -> Reply {
    let seed = state.opts.seed;
    let ts = timestamp();
    if rest.is_empty() {
        let calls = count_status_call(state, sc);
        let status = if sc.pending_at(calls) {
            sc.pending_status(calls)
        } else {
            sc.final_status
        };
        return Reply::ok(&data::status_json(sc, &ts, status));
    }
    let calls = status_calls(state, sc);
    let pending = sc.pending_at(calls.max(1));
    let status = if pending { "PENDING" } else { sc.final_status };
    match rest {
        ["data"] => Reply::ok(&data::netverify_data(seed, sc, &ts, status)),
        ["data", "document"] if !pending => Reply::ok(&data::with_reference(
            data::netverify_document(seed, sc),
            sc,
            &ts,
        )),
        ["data", "transaction"] => Reply::ok(&data::with_reference(
            data::netverify_transaction(seed, sc, status),
            sc,
            &ts,
        )),
        ["data", "verification"] if !pending => Reply::ok(&data::with_reference(
            data::netverify_verification(seed, sc),
            sc,
            &ts,
        )),
        ["images"] if !pending => Reply::ok(&data::netverify_images(sc, origin, &ts)),
        ["images"] => {
            let empty = Scenario {
                classifiers: Vec::new(),
                liveness: Vec::new(),
                ..sc.clone()
            };
            Reply::ok(&data::netverify_images(&empty, origin, &ts))
        }
        ["images", "liveness", n] if !pending => liveness_image(state, sc, n),
        ["images", classifier] if !pending => classified_image(state, sc, classifier),
        _ => Reply::not_found(),
    }
}

fn authentication(state: &SimState, sc: &Scenario, origin: &str, rest: &[&str]) -> Reply {
    let seed = state.opts.seed;
    if rest.is_empty() {
        let calls = count_status_call(state, sc);
        let result = if sc.pending_at(calls) {
            sc.pending_status(calls)
        } else {
            sc.final_status
        };
        return Reply::ok(&data::authentication_details(seed, sc, origin, result));
    }
    if sc.pending_at(status_calls(state, sc).max(1)) {
        return Reply::not_found();
    }
    match rest {
        ["images", "liveness", n] => liveness_image(state, sc, n),
        ["images", classifier] => classified_image(state, sc, classifier),
        _ => Reply::not_found(),
    }
}

fn document(
    state: &SimState,
    sc: &Scenario,
    origin: &str,
    rest: &[&str],
    query: Option<&str>,
) -> Reply {
    let seed = state.opts.seed;
    let ts = timestamp();
    match rest {
        [] => Reply::ok(&data::status_json(sc, &ts, sc.final_status)),
        ["data"] => Reply::ok(&data::document_data(seed, sc, origin, &ts)),
        ["data", "document"] => Reply::ok(&data::with_reference(
            data::document_document(seed, sc, origin),
            sc,
            &ts,
        )),
        ["data", "transaction"] => Reply::ok(&data::with_reference(
            data::document_transaction(seed, sc),
            sc,
            &ts,
        )),
        ["pages"] => Reply::ok(&data::document_pages(sc, origin, &ts)),
        ["pages", page] => {
            if !sc.classifiers.iter().any(|c| c == page) {
                return Reply::not_found();
            }
            let unmasked = query
                .unwrap_or("")
                .split('&')
                .any(|kv| kv.eq_ignore_ascii_case("maskhint=unmasked"));
            if unmasked && !state.opts.allow_unmasked {
                return Reply::error(
                    StatusCode::FORBIDDEN,
                    "Retrieval of unmasked images is not enabled for this account",
                );
            }
            let variant: &[u8] = if unmasked { b"unmasked" } else { b"masked" };
            let key: [&[u8]; 4] = [b"page", sc.reference.as_bytes(), page.as_bytes(), variant];
            media_reply(state, &key, state.opts.page_bytes)
        }
        ["original"] if sc.has_original => {
            let key: [&[u8]; 2] = [b"original", sc.reference.as_bytes()];
            let title = format!("Document type: {}", sc.document_type.unwrap_or("OTHER"));
            let target = vary(state.opts.seed, &key, state.opts.pdf_bytes);
            Reply::binary(
                "application/pdf",
                media::pdf(state.opts.seed, &key, &title, target),
            )
        }
        _ => Reply::not_found(),
    }
}

/// Sizes spread ±20 % around the configured one, per file.
fn vary(seed: u64, key: &[&[u8]], size: usize) -> usize {
    let mut parts: Vec<&[u8]> = vec![b"size"];
    parts.extend_from_slice(key);
    let u = unit(hash(seed, &parts));
    (size as f64 * (0.8 + 0.4 * u)) as usize
}

/// JPEG for most images, PNG for about a third, decided per file.
fn media_reply(state: &SimState, key: &[&[u8]], size: usize) -> Reply {
    let seed = state.opts.seed;
    let mut parts: Vec<&[u8]> = vec![b"format"];
    parts.extend_from_slice(key);
    let format = if unit(hash(seed, &parts)) < 0.7 {
        ImageFormat::Jpeg
    } else {
        ImageFormat::Png
    };
    let target = vary(seed, key, size);
    Reply::binary(
        format.content_type(),
        media::image(format, seed, key, target),
    )
}

fn classified_image(state: &SimState, sc: &Scenario, classifier: &str) -> Reply {
    if !sc.classifiers.iter().any(|c| c == classifier) {
        return Reply::not_found();
    }
    let key: [&[u8]; 3] = [b"image", sc.reference.as_bytes(), classifier.as_bytes()];
    media_reply(state, &key, state.opts.image_bytes)
}

fn liveness_image(state: &SimState, sc: &Scenario, n: &str) -> Reply {
    let Ok(number) = n.parse::<u32>() else {
        return Reply::not_found();
    };
    if !sc.liveness.contains(&number) {
        return Reply::not_found();
    }
    let key: [&[u8]; 3] = [b"liveness", sc.reference.as_bytes(), n.as_bytes()];
    media_reply(state, &key, state.opts.liveness_bytes)
}
