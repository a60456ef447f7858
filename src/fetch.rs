//! The per-reference flow of the API guide's best practice, and nothing more.
//!
//! For one reference: the status call, polled on the job's schedule while the transaction is not
//! final (PENDING; CREATED/STARTED for Authentication), then the data, the image list and every
//! image once. The result is plain data ([`Fetched`] or [`FetchFailure`]); this stage writes no
//! file. Waiting for the next poll does not hold a concurrency slot: the slot is a semaphore permit
//! taken for each burst of requests and dropped while sleeping.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::Kind;
use crate::api::ApiClient;
use crate::api::client::{ApiError, ApiResponse, Family, any_body, json_object};
use crate::api::origin;
use crate::outcome::{ErrorCode, Stage};
use crate::output::archive::{ArchiveEntry, EntryKind};

const ACCEPT_JSON: &str = "application/json";
const ACCEPT_IMAGE: &str = "image/jpeg, image/png";
const ACCEPT_PDF: &str = "application/pdf";

/// What the flow fetches, from the job's `[fetch]` and `[polling]` sections.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Poll k+1 no earlier than the first status call + `schedule[k]`.
    pub schedule: Vec<Duration>,
    /// Document images and Document Verification pages.
    pub images: bool,
    /// Liveness images of Netverify and Authentication.
    pub liveness_images: bool,
    /// The original PDF of Document Verification.
    pub original_documents: bool,
    /// Ask for unmasked card pages (`maskhint=unmasked`), falling back to masked on 403.
    pub unmasked_card_images: bool,
}

/// A transaction whose every file was fetched.
#[derive(Debug)]
pub struct Fetched {
    /// The reference as given.
    pub reference: String,
    /// Its family.
    pub kind: Kind,
    /// Every response, in flow order.
    pub entries: Vec<ArchiveEntry>,
    /// The parsed `/data` (Authentication: the details response), for the table row.
    pub data: Value,
    /// The concurrency slot, held until the caller has written the archive: fetched bodies are
    /// in memory, so at most `concurrency` transactions' files are.
    pub slot: OwnedSemaphorePermit,
}

/// Why a reference was not exported, in `failures.csv` terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    /// Which step failed.
    pub stage: Stage,
    /// The last HTTP status, if any.
    pub http_status: Option<u16>,
    /// Why.
    pub error: ErrorCode,
    /// Requests made for the failing step (status polls for `PENDING`).
    pub attempts: u32,
    /// For `PENDING`: no status call before this instant.
    pub next_attempt_after: Option<DateTime<Utc>>,
    /// A description for logs (no credentials, no personal data).
    pub message: String,
}

/// The result of one reference's flow.
#[derive(Debug)]
pub enum FetchOutcome {
    /// Every file fetched.
    Fetched(Fetched),
    /// Not exported; a later run tries again.
    Failed(FetchFailure),
    /// The API refused the credentials on a status call: the run must stop.
    Denied(FetchFailure),
    /// The run was cancelled before this reference finished; it is neither exported nor failed.
    Cancelled,
}

impl FetchFailure {
    fn from_api(stage: Stage, e: &ApiError) -> Self {
        FetchFailure {
            stage,
            http_status: e.http_status(),
            error: e.code(),
            attempts: e.attempts(),
            next_attempt_after: None,
            message: e.to_string(),
        }
    }

    fn bad(stage: Stage, path: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        FetchFailure {
            stage,
            http_status: Some(200),
            error: ErrorCode::BadResponse,
            attempts: 1,
            next_attempt_after: None,
            message: format!("{path}: {message}"),
        }
    }
}

/// Shared by every reference's flow.
#[derive(Clone)]
pub struct Fetcher {
    client: ApiClient,
    opts: Arc<FetchOptions>,
    slots: Arc<Semaphore>,
    /// Stop starting requests: no new status call, no wait for the next poll.
    stop: CancellationToken,
    /// Abandon requests in flight (fired a grace period after `stop`).
    cancel: CancellationToken,
}

type Step<T> = Result<T, FetchFailure>;

impl Fetcher {
    /// A fetcher with `concurrency` slots. `stop` ends polling and keeps new status calls from
    /// starting; `cancel` abandons transfers in flight.
    pub fn new(
        client: ApiClient,
        opts: FetchOptions,
        concurrency: usize,
        stop: CancellationToken,
        cancel: CancellationToken,
    ) -> Self {
        Fetcher {
            client,
            opts: Arc::new(opts),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            stop,
            cancel,
        }
    }

    /// The client (for statistics).
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Runs the whole flow for one reference.
    pub async fn fetch(&self, reference: &str, kind: Kind) -> FetchOutcome {
        self.fetch_with_polls(reference, kind, self.opts.schedule.len())
            .await
    }

    /// The flow with at most `polls` scheduled status calls after the first: 0 is the guide's
    /// "one additional retrieval call per day" for a reference whose schedule was used up.
    pub async fn fetch_with_polls(
        &self,
        reference: &str,
        kind: Kind,
        polls: usize,
    ) -> FetchOutcome {
        let (family, base_path) = match kind {
            Kind::Netverify => (
                Family::Netverify,
                format!("/api/netverify/v2/scans/{reference}"),
            ),
            Kind::Authentication => (
                Family::Netverify,
                format!("/api/netverify/v2/authentications/{reference}"),
            ),
            Kind::Document => (
                Family::Retrieval,
                format!("/api/netverify/v2/documents/{reference}"),
            ),
        };
        // The slot of the final status call is kept for the rest of the flow, so a transaction
        // under way finishes before new ones start: a crash or Ctrl-C then loses little work.
        let schedule = &self.opts.schedule[..polls.min(self.opts.schedule.len())];
        let (status, slot) = match self.poll(kind, family, &base_path, schedule).await {
            Ok(Some(s)) => s,
            Ok(None) => return FetchOutcome::Cancelled,
            Err(f) if f.http_status == Some(401) || f.http_status == Some(403) => {
                return FetchOutcome::Denied(f);
            }
            Err(f) => return FetchOutcome::Failed(f),
        };
        let result = tokio::select! {
            r = self.rest_of_flow(kind, family, &base_path, status) => r,
            () = self.cancel.cancelled() => return FetchOutcome::Cancelled,
        };
        match result {
            Ok((entries, data)) => FetchOutcome::Fetched(Fetched {
                reference: reference.to_string(),
                kind,
                entries,
                data,
                slot,
            }),
            Err(f) => FetchOutcome::Failed(f),
        }
    }

    /// Status calls until the transaction is final. `Ok(None)`: cancelled.
    async fn poll(
        &self,
        kind: Kind,
        family: Family,
        base_path: &str,
        schedule: &[Duration],
    ) -> Step<Option<(ApiResponse, OwnedSemaphorePermit)>> {
        let url = self.client.url(family, base_path);
        let endpoint = match kind {
            Kind::Netverify => "scans/{ref}",
            Kind::Document => "documents/{ref}",
            Kind::Authentication => "authentications/{ref}",
        };
        // Set when the first status call has been answered: the schedule counts from that call,
        // not from when this reference started waiting for a slot or the rate limiter.
        let mut first = None;
        let mut polls = 0u32;
        loop {
            if self.stop.is_cancelled() {
                return Ok(None);
            }
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                return Ok(None);
            };
            let response = tokio::select! {
                r = self.client.get(family, endpoint, &url, ACCEPT_JSON, json_object) => r,
                () = self.cancel.cancelled() => return Ok(None),
            };
            polls += 1;
            let first = *first.get_or_insert_with(tokio::time::Instant::now);
            let response = response.map_err(|e| FetchFailure::from_api(Stage::Status, &e))?;
            let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            let field = if kind == Kind::Authentication {
                "transactionResult"
            } else {
                "status"
            };
            let state = body.get(field).and_then(Value::as_str).unwrap_or("");
            let final_state = match (kind, state) {
                (Kind::Authentication, "PASSED" | "FAILED" | "INVALID" | "EXPIRED") => true,
                (Kind::Authentication, "CREATED" | "STARTED") => false,
                (Kind::Netverify | Kind::Document, "DONE" | "FAILED") => true,
                (Kind::Netverify | Kind::Document, "PENDING") => false,
                _ => {
                    return Err(FetchFailure::bad(
                        Stage::Status,
                        &response.api_path,
                        format!(
                            "`{field}` is {:?}, not a status the guide lists",
                            truncate(state)
                        ),
                    ));
                }
            };
            if final_state {
                return Ok(Some((response, slot)));
            }
            drop(slot);
            let Some(offset) = schedule.get(polls as usize - 1) else {
                return Err(FetchFailure {
                    stage: Stage::Status,
                    http_status: Some(200),
                    error: ErrorCode::Pending,
                    attempts: polls,
                    next_attempt_after: Some(Utc::now() + chrono::Duration::days(1)),
                    message: format!(
                        "{}: still {state} after {polls} status calls",
                        response.api_path
                    ),
                });
            };
            tokio::select! {
                () = tokio::time::sleep_until(first + *offset) => {}
                () = self.stop.cancelled() => return Ok(None),
            }
        }
    }

    async fn rest_of_flow(
        &self,
        kind: Kind,
        family: Family,
        base_path: &str,
        status: ApiResponse,
    ) -> Step<(Vec<ArchiveEntry>, Value)> {
        let mut entries = Vec::new();
        match kind {
            Kind::Authentication => {
                let details: Value = parse_object(&status, Stage::Status)?;
                entries.push(entry(EntryKind::Authentication, &status));
                self.images_and_liveness(kind, family, &details, &status.api_path, &mut entries)
                    .await?;
                Ok((entries, details))
            }
            Kind::Netverify => {
                entries.push(entry(EntryKind::Status, &status));
                let data = self
                    .get_json(
                        family,
                        "scans/{ref}/data",
                        &format!("{base_path}/data"),
                        Stage::Data,
                    )
                    .await?;
                let data_value = parse_object(&data, Stage::Data)?;
                entries.push(entry(EntryKind::Data, &data));
                if self.opts.images || self.opts.liveness_images {
                    let list = self
                        .get_json(
                            family,
                            "scans/{ref}/images",
                            &format!("{base_path}/images"),
                            Stage::Images,
                        )
                        .await?;
                    let list_value = parse_object(&list, Stage::Images)?;
                    entries.push(entry(EntryKind::Images, &list));
                    self.images_and_liveness(
                        kind,
                        family,
                        &list_value,
                        &list.api_path,
                        &mut entries,
                    )
                    .await?;
                }
                Ok((entries, data_value))
            }
            Kind::Document => {
                entries.push(entry(EntryKind::Status, &status));
                let data = self
                    .get_json(
                        family,
                        "documents/{ref}/data",
                        &format!("{base_path}/data"),
                        Stage::Data,
                    )
                    .await?;
                let data_value = parse_object(&data, Stage::Data)?;
                entries.push(entry(EntryKind::Data, &data));
                if self.opts.images {
                    let list = self
                        .get_json(
                            family,
                            "documents/{ref}/pages",
                            &format!("{base_path}/pages"),
                            Stage::Pages,
                        )
                        .await?;
                    let list_value = parse_object(&list, Stage::Pages)?;
                    entries.push(entry(EntryKind::Pages, &list));
                    self.pages(family, &list_value, &list.api_path, &mut entries)
                        .await?;
                }
                if self.opts.original_documents {
                    let href = data_value
                        .get("document")
                        .and_then(|d| d.get("originalDocument"))
                        .and_then(Value::as_str);
                    if let Some(href) = href {
                        let url = self.href(family, href, Stage::Original, &data.api_path)?;
                        let pdf = self
                            .client
                            .get(
                                family,
                                "documents/{ref}/original",
                                &url,
                                ACCEPT_PDF,
                                any_body,
                            )
                            .await
                            .map_err(|e| FetchFailure::from_api(Stage::Original, &e))?;
                        entries.push(entry(EntryKind::OriginalPdf, &pdf));
                    }
                }
                Ok((entries, data_value))
            }
        }
    }

    async fn get_json(
        &self,
        family: Family,
        endpoint: &'static str,
        path: &str,
        stage: Stage,
    ) -> Step<ApiResponse> {
        let url = self.client.url(family, path);
        self.client
            .get(family, endpoint, &url, ACCEPT_JSON, json_object)
            .await
            .map_err(|e| FetchFailure::from_api(stage, &e))
    }

    fn href(&self, family: Family, href: &str, stage: Stage, listed_in: &str) -> Step<Url> {
        origin::check_href(self.client.base(family), href).map_err(|e| FetchFailure {
            stage,
            http_status: None,
            error: ErrorCode::ForeignUrl,
            attempts: 0,
            next_attempt_after: None,
            message: format!("{listed_in}: {e}"),
        })
    }

    /// `images` (array or single object) and `livenessImages` of a Netverify image list or an
    /// Authentication details response. Every href is checked before any is fetched, so a foreign
    /// href costs no request at all.
    async fn images_and_liveness(
        &self,
        kind: Kind,
        family: Family,
        list: &Value,
        listed_in: &str,
        entries: &mut Vec<ArchiveEntry>,
    ) -> Step<()> {
        let mut images = Vec::new();
        if self.opts.images {
            let mut seen = BTreeSet::new();
            for image in as_list(list.get("images")) {
                let classifier = match image.get("classifier") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => {
                        return Err(FetchFailure::bad(
                            Stage::Images,
                            listed_in,
                            "an image has no classifier",
                        ));
                    }
                };
                let Some(href) = image.get("href").and_then(Value::as_str) else {
                    return Err(FetchFailure::bad(
                        Stage::Images,
                        listed_in,
                        "an image has no href",
                    ));
                };
                let url = self.href(family, href, Stage::Image, listed_in)?;
                if seen.insert(url.clone()) {
                    images.push((classifier, url));
                }
            }
        }
        let mut liveness = Vec::new();
        if self.opts.liveness_images {
            let mut numbers = BTreeSet::new();
            for href in as_list(list.get("livenessImages")) {
                let Some(href) = href.as_str() else {
                    return Err(FetchFailure::bad(
                        Stage::Liveness,
                        listed_in,
                        "a liveness image href is not a string",
                    ));
                };
                let url = self.href(family, href, Stage::Liveness, listed_in)?;
                let number = url
                    .path_segments()
                    .and_then(|mut s| s.next_back())
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(|| {
                        FetchFailure::bad(
                            Stage::Liveness,
                            listed_in,
                            "a liveness href does not end in its number",
                        )
                    })?;
                if numbers.insert(number) {
                    liveness.push((number, url));
                }
            }
            liveness.sort_by_key(|(n, _)| *n);
        }
        let (image_endpoint, liveness_endpoint) = if kind == Kind::Authentication {
            (
                "authentications/{ref}/images/{classifier}",
                "authentications/{ref}/images/liveness/{n}",
            )
        } else {
            (
                "scans/{ref}/images/{classifier}",
                "scans/{ref}/images/liveness/{n}",
            )
        };
        for (classifier, url) in images {
            let r = self
                .client
                .get(family, image_endpoint, &url, ACCEPT_IMAGE, any_body)
                .await
                .map_err(|e| FetchFailure::from_api(Stage::Image, &e))?;
            entries.push(entry(EntryKind::Image { classifier }, &r));
        }
        for (number, url) in liveness {
            let r = self
                .client
                .get(family, liveness_endpoint, &url, ACCEPT_IMAGE, any_body)
                .await
                .map_err(|e| FetchFailure::from_api(Stage::Liveness, &e))?;
            entries.push(entry(EntryKind::Liveness { number }, &r));
        }
        Ok(())
    }

    /// Document Verification pages: classifier is the page number (integer, or a numeric string).
    async fn pages(
        &self,
        family: Family,
        list: &Value,
        listed_in: &str,
        entries: &mut Vec<ArchiveEntry>,
    ) -> Step<()> {
        let mut pages = Vec::new();
        let mut numbers = BTreeSet::new();
        for page in as_list(list.get("images")) {
            let number = match page.get("classifier") {
                Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                Some(Value::String(s)) => s.trim().parse::<u32>().ok(),
                _ => None,
            }
            .ok_or_else(|| {
                FetchFailure::bad(Stage::Pages, listed_in, "a page classifier is not a page number")
            })?;
            let Some(href) = page.get("href").and_then(Value::as_str) else {
                return Err(FetchFailure::bad(Stage::Pages, listed_in, "a page has no href"));
            };
            let url = self.href(family, href, Stage::Page, listed_in)?;
            if numbers.insert(number) {
                pages.push((number, url));
            }
        }
        pages.sort_by_key(|(n, _)| *n);
        for (number, url) in pages {
            let response = if self.opts.unmasked_card_images {
                let mut unmasked = url.clone();
                unmasked
                    .query_pairs_mut()
                    .append_pair("maskhint", "unmasked");
                match self
                    .client
                    .get(
                        family,
                        "documents/{ref}/pages/{n}?maskhint=unmasked",
                        &unmasked,
                        ACCEPT_IMAGE,
                        any_body,
                    )
                    .await
                {
                    Err(ApiError::Denied { status: 403, .. }) => None,
                    other => Some(other),
                }
            } else {
                None
            };
            let response = match response {
                Some(r) => r,
                None => {
                    self.client
                        .get(
                            family,
                            "documents/{ref}/pages/{n}",
                            &url,
                            ACCEPT_IMAGE,
                            any_body,
                        )
                        .await
                }
            }
            .map_err(|e| FetchFailure::from_api(Stage::Page, &e))?;
            entries.push(entry(EntryKind::Page { number }, &response));
        }
        Ok(())
    }
}

fn entry(kind: EntryKind, r: &ApiResponse) -> ArchiveEntry {
    ArchiveEntry {
        kind,
        body: r.body.clone(),
        content_type: r.content_type.clone(),
        api_path: r.api_path.clone(),
        http_status: r.status,
        retrieved_at: r.retrieved_at,
    }
}

fn parse_object(r: &ApiResponse, stage: Stage) -> Step<Value> {
    match serde_json::from_slice::<Value>(&r.body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(FetchFailure::bad(stage, &r.api_path, "not a JSON object")),
    }
}

/// `images` may be an array or a single object; absent or null is empty.
fn as_list(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}
