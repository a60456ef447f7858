//! The per-reference flow of the API guide's best practice, and nothing more.
//!
//! For one reference: the status call, polled on the job's schedule while the transaction is not
//! final (PENDING; CREATED/STARTED for Authentication), then the data, the image list and every
//! image once. Every response goes, as it arrives, into the transaction's archive writer (when
//! the job writes archives): JSON responses once parsed, files streamed chunk by chunk, so no
//! image is ever held whole in memory. The result is the written-so-far archive ([`Fetched`]) or
//! a [`FetchFailure`]. Waiting for the next poll does not hold a concurrency slot: the slot is a semaphore permit
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
use crate::api::client::{
    ApiError, ApiResponse, BodySink, CredentialsRefused, Family, SinkError, Target,
};
use crate::api::endpoints::{self, Endpoint, KindFlow, Role, State, Switches};
use crate::api::origin;
use crate::outcome::{ErrorCode, Stage};
use crate::output::archive::{self, ArchiveError, ArchiveWriter, EntryKind};

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
    /// Longest `images`, `livenessImages` or `pages` list taken; a longer one is a bad response.
    pub max_list_items: usize,
}

impl FetchOptions {
    /// The `[fetch]` switches, as the endpoint table reads them.
    pub fn switches(&self) -> Switches {
        Switches {
            images: self.images,
            liveness_images: self.liveness_images,
            original_documents: self.original_documents,
            unmasked_card_images: self.unmasked_card_images,
        }
    }
}

/// A transaction whose every file was fetched.
#[derive(Debug)]
pub struct Fetched {
    /// The reference as given.
    pub reference: String,
    /// Its family.
    pub kind: Kind,
    /// Responses received (and archived, when there is an archive).
    pub responses: usize,
    /// Every response written, in archive order, not yet finished (`provenance.json`, the
    /// manifest, fsync, final name); `None` when the job writes no archives.
    pub archive: Option<Box<ArchiveWriter>>,
    /// The parsed `/data` (Authentication: the details response), for the table row.
    pub data: Value,
    /// The concurrency slot, held until the caller has finished the archive, so at most
    /// `concurrency` archives are being written at once.
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
    /// The API refused the credentials (401 or 403) on a status call: the run must stop.
    Denied(CredentialsRefused),
    /// The run was cancelled before this reference finished; it is neither exported nor failed.
    Cancelled,
    /// The archive writer refused a response: the disk (which stops the run), or an entry the
    /// archive cannot hold as given (two images claiming one name).
    Archive(ArchiveError),
}

/// Opens the archive writer of a reference once its status is final.
pub type OpenArchive<'a> = &'a (dyn Fn() -> Result<ArchiveWriter, ArchiveError> + Send + Sync);

/// Why the flow after the final status stopped.
#[derive(Debug)]
enum FlowError {
    /// This reference failed.
    Failed(FetchFailure),
    /// The archive writer refused a response.
    Archive(ArchiveError),
}

impl From<FetchFailure> for FlowError {
    fn from(f: FetchFailure) -> Self {
        FlowError::Failed(f)
    }
}

impl From<ArchiveError> for FlowError {
    fn from(e: ArchiveError) -> Self {
        FlowError::Archive(e)
    }
}

/// Where the flow's responses go: the transaction's archive, or nowhere when the job writes
/// none (streamed bodies are then only counted).
struct Collect {
    /// Boxed: the writer is several KB, and the flow's futures move it.
    archive: Option<Box<ArchiveWriter>>,
    /// The kind of the body being streamed.
    next: EntryKind,
    /// What the archive writer refused, for the flow to act on.
    error: Option<ArchiveError>,
    responses: usize,
}

impl Collect {
    /// Archives a whole (JSON) response.
    fn whole(&mut self, kind: EntryKind, r: &ApiResponse) -> Result<(), ArchiveError> {
        self.responses += 1;
        let Some(w) = self.archive.as_mut() else {
            return Ok(());
        };
        w.begin(kind, &r.content_type)?;
        w.write(&r.body)?;
        w.end(&r.api_path, r.status, r.retrieved_at).map(drop)
    }

    /// Closes the entry of a streamed response.
    fn streamed(&mut self, r: &ApiResponse) -> Result<(), ArchiveError> {
        self.responses += 1;
        match self.archive.as_mut() {
            Some(w) => w.end(&r.api_path, r.status, r.retrieved_at).map(drop),
            None => Ok(()),
        }
    }

    fn keep<T>(&mut self, r: Result<T, ArchiveError>) -> Result<T, SinkError> {
        r.map_err(|e| {
            let message: SinkError = e.to_string().into();
            self.error = Some(e);
            message
        })
    }
}

impl BodySink for Collect {
    fn begin(&mut self, content_type: &str) -> Result<(), SinkError> {
        let r = match self.archive.as_mut() {
            Some(w) => w.begin(self.next.clone(), content_type),
            None => Ok(()),
        };
        self.keep(r)
    }

    fn chunk(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        let r = match self.archive.as_mut() {
            Some(w) => w.write(bytes),
            None => Ok(()),
        };
        self.keep(r)
    }

    fn abandon(&mut self) -> Result<(), SinkError> {
        let r = match self.archive.as_mut() {
            Some(w) => w.abandon(),
            None => Ok(()),
        };
        self.keep(r)
    }
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

/// The reference's `failures.csv` row when its status call was refused: stage `status`,
/// `HTTP_ERROR`, the refusing status.
impl From<&CredentialsRefused> for FetchFailure {
    fn from(refused: &CredentialsRefused) -> Self {
        FetchFailure::from_api(Stage::Status, &ApiError::Denied(refused.clone()))
    }
}

/// The transaction an href must stay in: its API family's origin and its status path.
struct Scope {
    family: Family,
    /// The status path with a trailing `/` (`/api/netverify/v2/scans/{reference}/`).
    prefix: String,
}

/// Whether Document Verification data is of a credit card (`document.type` `CC`), the only
/// document type the guide defines `maskhint=unmasked` for.
fn is_credit_card(data: &Value) -> bool {
    let ty = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_owned);
    data.get("document")
        .and_then(ty)
        .or_else(|| ty(data))
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("CC"))
}

/// Why polling stopped without a final status.
enum StatusError {
    /// 401/403 on the status call: stop the run.
    Refused(CredentialsRefused),
    /// This reference failed.
    Failed(FetchFailure),
}

impl From<FetchFailure> for StatusError {
    fn from(f: FetchFailure) -> Self {
        StatusError::Failed(f)
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
    /// References waiting for their next poll, for progress.
    polls: Arc<PollWaits>,
    /// The number of slots.
    concurrency: usize,
}

/// The references waiting for their next status call and when each is due: progress shows how
/// many there are, and its ETA is never earlier than the last of them.
#[derive(Debug, Default)]
pub struct PollWaits {
    /// Due instant → references due then.
    due: std::sync::Mutex<std::collections::BTreeMap<tokio::time::Instant, u32>>,
}

impl PollWaits {
    /// Counts a reference waiting until `due`, until the returned guard is dropped.
    fn wait(&self, due: tokio::time::Instant) -> PollWait<'_> {
        *self
            .due
            .lock()
            .expect("poll waits lock")
            .entry(due)
            .or_default() += 1;
        PollWait { waits: self, due }
    }

    /// How many references are waiting for a poll, and when the last of them is due.
    pub fn snapshot(&self) -> (u64, Option<tokio::time::Instant>) {
        let due = self.due.lock().expect("poll waits lock");
        let n = due.values().map(|n| u64::from(*n)).sum();
        (n, due.keys().next_back().copied())
    }
}

/// One reference waiting for its next poll; counted until dropped.
struct PollWait<'a> {
    waits: &'a PollWaits,
    due: tokio::time::Instant,
}

impl Drop for PollWait<'_> {
    fn drop(&mut self) {
        let mut due = self.waits.due.lock().expect("poll waits lock");
        if let Some(n) = due.get_mut(&self.due) {
            *n -= 1;
            if *n == 0 {
                due.remove(&self.due);
            }
        }
    }
}

type Step<T> = Result<T, FetchFailure>;
type Flow<T> = Result<T, FlowError>;

/// A final status response and the concurrency slot its call held.
type FinalStatus = (ApiResponse, OwnedSemaphorePermit);

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
            polls: Arc::default(),
            concurrency: concurrency.max(1),
        }
    }

    /// The references waiting for their next poll.
    pub fn poll_waits(&self) -> &Arc<PollWaits> {
        &self.polls
    }

    /// References holding a concurrency slot now: being fetched or archived.
    pub fn busy_slots(&self) -> usize {
        self.concurrency - self.slots.available_permits()
    }

    /// The client (for statistics).
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Runs the whole flow for one reference; `open` gives its archive writer (none: the
    /// responses are only checked and counted).
    pub async fn fetch(
        &self,
        reference: &str,
        kind: Kind,
        open: Option<OpenArchive<'_>>,
    ) -> FetchOutcome {
        // The guide's "maximum of 10 consecutive retrieval attempts" counts the first call: a
        // schedule of n offsets allows n status calls, the first and n - 1 polls.
        let polls = self.opts.schedule.len().saturating_sub(1);
        self.fetch_with_polls(reference, kind, polls, open).await
    }

    /// The flow with at most `polls` scheduled status calls after the first: 0 is the guide's
    /// "one additional retrieval call per day" for a reference whose schedule was used up.
    pub async fn fetch_with_polls(
        &self,
        reference: &str,
        kind: Kind,
        polls: usize,
        open: Option<OpenArchive<'_>>,
    ) -> FetchOutcome {
        let flow = endpoints::flow(kind);
        // The slot of the final status call is kept for the rest of the flow, so a transaction
        // under way finishes before new ones start: a crash or Ctrl-C then loses little work.
        let schedule = &self.opts.schedule[..polls.min(self.opts.schedule.len())];
        let (status, slot) = match self.poll(flow, reference, schedule).await {
            Ok(Some(s)) => s,
            Ok(None) => return FetchOutcome::Cancelled,
            Err(StatusError::Refused(refused)) => return FetchOutcome::Denied(refused),
            Err(StatusError::Failed(f)) => return FetchOutcome::Failed(f),
        };
        let archive = match open.map(|open| open()).transpose() {
            Ok(archive) => archive.map(Box::new),
            Err(e) => return FetchOutcome::Archive(e),
        };
        let mut out = Collect {
            archive,
            next: EntryKind::Status,
            error: None,
            responses: 0,
        };
        // Cancelled or failed, `out` is dropped with its archive writer, which removes its
        // temporary file.
        let result = tokio::select! {
            r = self.rest_of_flow(flow, reference, status, &mut out) => r,
            () = self.cancel.cancelled() => return FetchOutcome::Cancelled,
        };
        match result {
            Ok(data) => FetchOutcome::Fetched(Fetched {
                reference: reference.to_string(),
                kind,
                responses: out.responses,
                archive: out.archive,
                data,
                slot,
            }),
            Err(FlowError::Failed(f)) => FetchOutcome::Failed(f),
            Err(FlowError::Archive(e)) => FetchOutcome::Archive(e),
        }
    }

    /// Status calls until the transaction is final: the first at once, then one per `schedule`
    /// offset while the kind's table says pending. `Ok(None)`: cancelled.
    async fn poll(
        &self,
        flow: &KindFlow,
        reference: &str,
        schedule: &[Duration],
    ) -> Result<Option<FinalStatus>, StatusError> {
        let url = self.client.url(flow.family, &flow.status_path(reference));
        // Set when the first status call has been answered: the schedule counts from that call,
        // not from when this reference started waiting for a slot or the rate limiter.
        let mut first = None;
        let mut calls = 0u32;
        loop {
            let Some((response, slot)) = self.status_call(flow, &url).await? else {
                return Ok(None);
            };
            calls += 1;
            let first = *first.get_or_insert_with(tokio::time::Instant::now);
            if is_final(flow, &response)? {
                return Ok(Some((response, slot)));
            }
            drop(slot);
            let Some(offset) = schedule.get(calls as usize - 1) else {
                return Err(pending(flow, &response, calls).into());
            };
            let _waiting = self.polls.wait(first + *offset);
            tokio::select! {
                () = tokio::time::sleep_until(first + *offset) => {}
                () = self.stop.cancelled() => return Ok(None),
            }
        }
    }

    /// One status call under a concurrency slot. `Ok(None)`: stopped or cancelled.
    async fn status_call(
        &self,
        flow: &KindFlow,
        url: &Url,
    ) -> Result<Option<FinalStatus>, StatusError> {
        if self.stop.is_cancelled() {
            return Ok(None);
        }
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return Ok(None);
        };
        let response = tokio::select! {
            r = self.client.get(flow.family, &flow.status, url, Target::Json) => r,
            () = self.cancel.cancelled() => return Ok(None),
        };
        match response {
            Ok(r) => Ok(Some((r, slot))),
            Err(ApiError::Denied(refused)) => Err(StatusError::Refused(refused)),
            Err(e) => Err(FetchFailure::from_api(Stage::Status, &e).into()),
        }
    }

    /// Everything after the final status, as the kind's table lists it, into `out` as it
    /// arrives. Returns the data for the table row.
    async fn rest_of_flow(
        &self,
        flow: &KindFlow,
        reference: &str,
        status: ApiResponse,
        out: &mut Collect,
    ) -> Flow<Value> {
        let scope = Scope {
            family: flow.family,
            prefix: format!(
                "{}/",
                self.client
                    .url(flow.family, &flow.status_path(reference))
                    .path()
            ),
        };
        let Some(data_step) = flow.step(Role::Data) else {
            // Authentication: the status response is the details, images listed in it.
            let details = object(status.json.clone(), &status, Stage::Status)?;
            out.whole(EntryKind::Authentication, &status)?;
            self.images_and_liveness(flow, &scope, &details, &status.api_path, out)
                .await?;
            return Ok(details);
        };
        out.whole(EntryKind::Status, &status)?;
        drop(status);
        let data = self.get_json(flow, data_step, reference).await?;
        out.whole(EntryKind::Data, &data)?;
        let switches = self.opts.switches();
        if let Some(step) = flow.wanted(Role::ImageList, &switches) {
            let list = self.get_json(flow, step, reference).await?;
            out.whole(EntryKind::Images, &list)?;
            self.images_and_liveness(flow, &scope, &list.json, &list.api_path, out)
                .await?;
        }
        if let Some(step) = flow.wanted(Role::PageList, &switches) {
            let list = self.get_json(flow, step, reference).await?;
            out.whole(EntryKind::Pages, &list)?;
            let card = is_credit_card(&data.json);
            self.pages(flow, &scope, card, &list.json, &list.api_path, out)
                .await?;
        }
        if let Some(step) = flow.wanted(Role::Original, &switches) {
            let href = data
                .json
                .get("document")
                .and_then(|d| d.get("originalDocument"))
                .and_then(Value::as_str);
            if let Some(href) = href {
                let url = self.href(&scope, href, Stage::Original, &data.api_path)?;
                self.file(
                    flow.family,
                    &step.endpoint,
                    &url,
                    EntryKind::OriginalPdf,
                    out,
                )
                .await?;
            }
        }
        Ok(data.json)
    }

    /// A JSON step the flow builds the path of (`/data`, `/images`, `/pages`), parsed once (by
    /// the client, which refuses anything but an object).
    async fn get_json(
        &self,
        flow: &KindFlow,
        step: &endpoints::Step,
        reference: &str,
    ) -> Step<ApiResponse> {
        let stage = step.endpoint.stage.clone();
        let path = flow.path(step, reference).unwrap_or_default();
        let url = self.client.url(flow.family, &path);
        self.client
            .get(flow.family, &step.endpoint, &url, Target::Json)
            .await
            .map_err(|e| FetchFailure::from_api(stage, &e))
    }

    /// One file at an href already checked against the family's origin, streamed into `out`
    /// as the entry `kind`.
    async fn file(
        &self,
        family: Family,
        endpoint: &Endpoint,
        url: &Url,
        kind: EntryKind,
        out: &mut Collect,
    ) -> Flow<()> {
        out.next = kind;
        let response = self
            .client
            .get(family, endpoint, url, Target::Stream(out))
            .await;
        self.streamed(endpoint, response, out)
    }

    /// What a streamed response means for the flow.
    fn streamed(
        &self,
        endpoint: &Endpoint,
        response: Result<ApiResponse, ApiError>,
        out: &mut Collect,
    ) -> Flow<()> {
        match response {
            Ok(r) => Ok(out.streamed(&r)?),
            Err(ApiError::Store { path, message }) => {
                Err(FlowError::Archive(out.error.take().unwrap_or_else(|| {
                    ArchiveError::Io {
                        action: "storing",
                        path: path.into(),
                        source: std::io::Error::other(message),
                    }
                })))
            }
            Err(e) => Err(FetchFailure::from_api(endpoint.stage.clone(), &e).into()),
        }
    }

    fn href(&self, scope: &Scope, href: &str, stage: Stage, listed_in: &str) -> Step<Url> {
        let foreign = |message: String| FetchFailure {
            stage,
            http_status: None,
            error: ErrorCode::ForeignUrl,
            attempts: 0,
            next_attempt_after: None,
            message: format!("{listed_in}: {message}"),
        };
        match origin::check_href(self.client.base(scope.family), href) {
            Err(e) => Err(foreign(e.to_string())),
            // The origin is ours, but the path must be this transaction's: an href into another
            // transaction would archive someone else's document under this reference.
            Ok(url) if !url.path().starts_with(&scope.prefix) => Err(foreign(
                "the href points outside this transaction's path".to_string(),
            )),
            Ok(url) => Ok(url),
        }
    }

    /// `images` (array or single object) and `livenessImages` of a Netverify image list or an
    /// Authentication details response. Every href is checked before any is fetched, so a foreign
    /// href costs no request at all.
    async fn images_and_liveness(
        &self,
        flow: &KindFlow,
        scope: &Scope,
        list: &Value,
        listed_in: &str,
        out: &mut Collect,
    ) -> Flow<()> {
        let switches = self.opts.switches();
        let image_step = flow.wanted(Role::Image, &switches);
        let liveness_step = flow.wanted(Role::Liveness, &switches);
        let images = match image_step {
            Some(_) => self.listed_images(scope, list, listed_in)?,
            None => Vec::new(),
        };
        let liveness = match liveness_step {
            Some(_) => self.listed_liveness(scope, list, listed_in)?,
            None => Vec::new(),
        };
        if let Some(step) = image_step {
            for (classifier, url) in images {
                let kind = EntryKind::Image { classifier };
                self.file(flow.family, &step.endpoint, &url, kind, out)
                    .await?;
            }
        }
        if let Some(step) = liveness_step {
            for (number, url) in liveness {
                let kind = EntryKind::Liveness { number };
                self.file(flow.family, &step.endpoint, &url, kind, out)
                    .await?;
            }
        }
        Ok(())
    }

    /// The list `key` of `list` (an array, or a single object), refused when longer than
    /// `[limits] max_list_items`.
    fn capped<'v>(
        &self,
        list: &'v Value,
        key: &str,
        stage: Stage,
        listed_in: &str,
    ) -> Step<Vec<&'v Value>> {
        let items = as_list(list.get(key));
        if items.len() > self.opts.max_list_items {
            let why = format!(
                "`{key}` lists {} items, more than the {} of [limits] max_list_items",
                items.len(),
                self.opts.max_list_items
            );
            return Err(FetchFailure::bad(stage, listed_in, why));
        }
        Ok(items)
    }

    /// The `images` of a list: classifier and checked URL, each URL once, in the order they are
    /// archived (`front`, `back`, `face`, then the others as listed) so that each body can be
    /// streamed into the archive as it arrives.
    fn listed_images(
        &self,
        scope: &Scope,
        list: &Value,
        listed_in: &str,
    ) -> Step<Vec<(String, Url)>> {
        let mut seen = BTreeSet::new();
        let mut images = Vec::new();
        for image in self.capped(list, "images", Stage::Images, listed_in)? {
            let classifier = match image.get("classifier") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    let why = "an image has no classifier";
                    return Err(FetchFailure::bad(Stage::Images, listed_in, why));
                }
            };
            let Some(href) = image.get("href").and_then(Value::as_str) else {
                let why = "an image has no href";
                return Err(FetchFailure::bad(Stage::Images, listed_in, why));
            };
            let url = self.href(scope, href, Stage::Image, listed_in)?;
            if seen.insert(url.clone()) {
                images.push((classifier, url));
            }
        }
        images.sort_by_key(|(classifier, _)| archive::layout::image_fetch_rank(classifier));
        Ok(images)
    }

    /// The `livenessImages` of a list: number and checked URL, each number once, in number
    /// order (the API may list them in any order).
    fn listed_liveness(
        &self,
        scope: &Scope,
        list: &Value,
        listed_in: &str,
    ) -> Step<Vec<(u32, Url)>> {
        let mut numbers = BTreeSet::new();
        let mut liveness = Vec::new();
        for href in self.capped(list, "livenessImages", Stage::Liveness, listed_in)? {
            let Some(href) = href.as_str() else {
                let why = "a liveness image href is not a string";
                return Err(FetchFailure::bad(Stage::Liveness, listed_in, why));
            };
            let url = self.href(scope, href, Stage::Liveness, listed_in)?;
            let number = url
                .path_segments()
                .and_then(|mut s| s.next_back())
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| {
                    let why = "a liveness href does not end in its number";
                    FetchFailure::bad(Stage::Liveness, listed_in, why)
                })?;
            if numbers.insert(number) {
                liveness.push((number, url));
            }
        }
        liveness.sort_by_key(|(n, _)| *n);
        Ok(liveness)
    }

    /// Document Verification pages: classifier is the page number (integer, or a numeric string).
    async fn pages(
        &self,
        flow: &KindFlow,
        scope: &Scope,
        card: bool,
        list: &Value,
        listed_in: &str,
        out: &mut Collect,
    ) -> Flow<()> {
        let switches = self.opts.switches();
        let (Some(masked), unmasked) = (
            flow.wanted(Role::Page, &switches),
            flow.wanted(Role::UnmaskedPage, &switches),
        ) else {
            return Ok(());
        };
        for (number, url) in self.listed_pages(scope, list, listed_in)? {
            let kind = EntryKind::Page { number };
            // The guide defines `maskhint` for credit cards only: other documents never ask.
            let done = match unmasked.filter(|_| card) {
                Some(unmasked) => {
                    self.unmasked_page(scope.family, unmasked, &url, kind.clone(), out)
                        .await
                }
                None => None,
            };
            match done {
                Some(r) => r?,
                None => {
                    self.file(scope.family, &masked.endpoint, &url, kind, out)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The page with `maskhint=unmasked`; `None` when refused with 403 (unmasked retrieval is
    /// not enabled for the account), so the caller fetches the masked page.
    async fn unmasked_page(
        &self,
        family: Family,
        step: &endpoints::Step,
        url: &Url,
        kind: EntryKind,
        out: &mut Collect,
    ) -> Option<Flow<()>> {
        let mut unmasked = url.clone();
        let (key, value) = endpoints::UNMASKED_QUERY;
        unmasked.query_pairs_mut().append_pair(key, value);
        out.next = kind;
        match self
            .client
            .get(family, &step.endpoint, &unmasked, Target::Stream(out))
            .await
        {
            Err(ApiError::Http { status: 403, .. }) => None,
            other => Some(self.streamed(&step.endpoint, other, out)),
        }
    }

    /// The pages of a list: number and checked URL, each number once, in number order.
    fn listed_pages(&self, scope: &Scope, list: &Value, listed_in: &str) -> Step<Vec<(u32, Url)>> {
        let mut pages = Vec::new();
        let mut numbers = BTreeSet::new();
        for page in self.capped(list, "images", Stage::Pages, listed_in)? {
            let number = match page.get("classifier") {
                Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                Some(Value::String(s)) => s.trim().parse::<u32>().ok(),
                _ => None,
            }
            .ok_or_else(|| {
                let why = "a page classifier is not a page number";
                FetchFailure::bad(Stage::Pages, listed_in, why)
            })?;
            let Some(href) = page.get("href").and_then(Value::as_str) else {
                return Err(FetchFailure::bad(
                    Stage::Pages,
                    listed_in,
                    "a page has no href",
                ));
            };
            let url = self.href(scope, href, Stage::Page, listed_in)?;
            if numbers.insert(number) {
                pages.push((number, url));
            }
        }
        pages.sort_by_key(|(n, _)| *n);
        Ok(pages)
    }
}

/// Whether a status response is final; a state the guide does not list for the kind (a
/// Document Verification `PENDING` among them) is a bad response.
fn is_final(flow: &KindFlow, response: &ApiResponse) -> Step<bool> {
    match flow.state(&response.json) {
        State::Final => Ok(true),
        State::Pending => Ok(false),
        State::Unknown(word) => Err(FetchFailure::bad(
            Stage::Status,
            &response.api_path,
            format!(
                "`{}` is {:?}, not a status the guide lists",
                flow.state_field,
                truncate(&word)
            ),
        )),
    }
}

/// `PENDING` after the round's last status call: no status call again for a day.
fn pending(flow: &KindFlow, response: &ApiResponse, calls: u32) -> FetchFailure {
    let state = flow.state_word(&response.json);
    FetchFailure {
        stage: Stage::Status,
        http_status: Some(200),
        error: ErrorCode::Pending,
        attempts: calls,
        next_attempt_after: Some(Utc::now() + chrono::Duration::days(1)),
        message: format!(
            "{}: still {state} after {calls} status calls",
            response.api_path
        ),
    }
}

/// `value` when it is a JSON object (the client parsed it so), else a bad response.
fn object(value: Value, r: &ApiResponse, stage: Stage) -> Step<Value> {
    match value {
        v @ Value::Object(_) => Ok(v),
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

#[cfg(all(test, feature = "simulator"))]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::api::RateLimiter;
    use crate::api::client::ClientOptions;
    use crate::api::endpoints::{DOCUMENT, flow};
    use crate::api::retry::RetryPolicy;
    use crate::job::{Credentials, Overrides};
    use crate::simulator::{self, Polls, Scenario, SimOptions};

    /// Entries of the schedule (status calls of a round, the first included), in the job and in
    /// the fetcher.
    const SCHEDULE: usize = 4;

    fn job(s: &Switches) -> crate::job::Job {
        let text = format!(
            "[api]\nuser_agent = \"Test Corp Export/1.0\"\n[fetch]\nimages = {}\n\
             liveness_images = {}\noriginal_documents = {}\nunmasked_card_images = {}\n\
             [polling]\nschedule_seconds = [1, 2, 3, 4]\n",
            s.images, s.liveness_images, s.original_documents, s.unmasked_card_images
        );
        crate::job::parse(&text, Path::new("jobs/x.toml"), &Overrides::default()).unwrap()
    }

    fn fetcher(base: &str, s: &Switches) -> Fetcher {
        let url = Url::parse(base).unwrap();
        let client = ApiClient::new(
            ClientOptions {
                netverify_url: url.clone(),
                retrieval_url: url,
                user_agent: "Test Corp Export/1.0".into(),
                authorization: Credentials::new("demo-token", "demo-secret").basic_header_value(),
                timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(5),
                max_file_bytes: 1 << 20,
                retry: RetryPolicy::default(),
                breaker: Default::default(),
            },
            Arc::new(RateLimiter::new(10_000.0, 10_000)),
        )
        .unwrap();
        let opts = FetchOptions {
            // The plan counts offsets, not seconds: milliseconds keep the test fast.
            schedule: vec![Duration::from_millis(1); SCHEDULE],
            images: s.images,
            liveness_images: s.liveness_images,
            original_documents: s.original_documents,
            unmasked_card_images: s.unmasked_card_images,
            max_list_items: 100,
        };
        let token = CancellationToken::new();
        Fetcher::new(client, opts, 4, token.clone(), token)
    }

    /// The requests the endpoint table says `sc` costs, given what the simulator lists for it:
    /// `(status calls, all requests, requests beyond the plan's assumed most files)`.
    fn modelled(sc: &Scenario, s: &Switches) -> (u64, u64, u64) {
        let flow = flow(sc.kind);
        let status_calls = match sc.polls {
            Polls::Ready => 1,
            Polls::After(n) => 1 + u64::from(n),
            Polls::Never => flow.max_status_calls(SCHEDULE),
        };
        if sc.polls == Polls::Never {
            return (status_calls, status_calls, 0);
        }
        let listed = |role: Role| match role {
            Role::Data | Role::ImageList | Role::PageList => 1,
            Role::Image | Role::Page => sc.classifiers.len() as u64,
            // Asked for credit cards only; the simulator refuses every unmasked page: one
            // masked request more per page.
            Role::UnmaskedPage if sc.document_type == Some("CC") => sc.classifiers.len() as u64,
            Role::UnmaskedPage => 0,
            Role::Liveness => sc.liveness.len() as u64,
            Role::Original => u64::from(sc.has_original),
        };
        let wanted = || flow.then.iter().filter(|step| step.needs.on(s));
        let rest: u64 = wanted().map(|step| listed(step.role)).sum();
        let beyond = wanted()
            .map(|step| listed(step.role).saturating_sub(step.requests.1))
            .sum();
        (status_calls, status_calls + rest, beyond)
    }

    /// For each kind, final on the first poll and pending for some polls, under several
    /// switch sets: the fetcher's requests against the simulator are exactly what the endpoint
    /// table models, and within the plan's fewest and most.
    #[tokio::test]
    async fn plan_and_fetcher_agree_on_every_kinds_requests() {
        let sim = simulator::start(SimOptions::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let all = Switches {
            images: true,
            liveness_images: true,
            original_documents: true,
            unmasked_card_images: false,
        };
        let none = Switches {
            images: false,
            liveness_images: false,
            original_documents: false,
            unmasked_card_images: false,
        };
        let switch_sets = [
            all,
            Switches {
                unmasked_card_images: true,
                ..all
            },
            none,
            Switches {
                liveness_images: true,
                ..none
            },
        ];
        let references = [
            "ok-n1", "obj-n2", "p3-n3", "pf-n4", "ok-d1", "obj-d2", "ok-a1", "p2-a2", "pf-a3",
        ];
        for (i, s) in switch_sets.into_iter().enumerate() {
            let job = job(&s);
            // The simulator counts status calls per reference: a fresh reference per switch set.
            for reference in references.map(|r| format!("{r}s{i}")) {
                let reference = reference.as_str();
                let sc = simulator::scenario(SimOptions::default().seed, reference).unwrap();
                let fetcher = fetcher(&sim.base_url(), &s);
                let outcome = fetcher.fetch(reference, sc.kind, None).await;
                let stats = fetcher.client().stats();
                let status_label = flow(sc.kind).status.label;
                let status_calls: u64 = stats
                    .by_endpoint()
                    .iter()
                    .filter(|((label, _), _)| *label == status_label)
                    .map(|(_, n)| n)
                    .sum();
                let made = (status_calls, stats.requests());
                let (calls, requests, beyond) = modelled(&sc, &s);
                let what = match &outcome {
                    FetchOutcome::Fetched(f) => format!("fetched {} files", f.responses),
                    FetchOutcome::Failed(f) => format!("failed: {}", f.message),
                    other => format!("{other:?}"),
                };
                assert_eq!(made, (calls, requests), "{reference} {s:?}: {what}");
                let (fewest, most) = crate::plan::requests_per_reference(sc.kind, &job);
                if sc.polls == Polls::Never {
                    assert!(
                        matches!(&outcome, FetchOutcome::Failed(f) if f.error == ErrorCode::Pending)
                    );
                    assert_eq!(status_calls, flow(sc.kind).max_status_calls(SCHEDULE));
                    assert!(made.1 <= most, "{reference} {s:?}");
                } else {
                    assert!(matches!(outcome, FetchOutcome::Fetched(_)), "{what}");
                    // The plan's most assumes the guide's sample sizes (2 pages, 7 liveness
                    // images); the simulator lists up to 4 pages, each one request more.
                    assert!(
                        fewest <= made.1 && made.1 <= most + beyond,
                        "{reference} {s:?}: {} requests, plan says {fewest} to {most}",
                        made.1
                    );
                }
            }
        }
        sim.shutdown().await;
    }

    /// The guide lists only DONE and FAILED for a Document Verification status: the plan
    /// counts one status call, and the fetcher takes a `PENDING` there for a bad response
    /// instead of polling it.
    #[test]
    fn a_pending_document_verification_status_is_a_bad_response_not_polled() {
        let response = |body: &str| ApiResponse {
            api_path: "/api/netverify/v2/documents/x".into(),
            status: 200,
            content_type: "application/json".into(),
            body: bytes::Bytes::from(body.to_string()),
            json: serde_json::from_str(body).unwrap(),
            bytes: body.len() as u64,
            retrieved_at: Utc::now(),
            attempts: 1,
        };
        let failure = is_final(&DOCUMENT, &response(r#"{"status":"PENDING"}"#)).unwrap_err();
        assert_eq!(
            (failure.stage, failure.error),
            (Stage::Status, ErrorCode::BadResponse)
        );
        assert!(is_final(&DOCUMENT, &response(r#"{"status":"FAILED"}"#)).unwrap());
        let job = job(&Switches {
            images: false,
            liveness_images: false,
            original_documents: false,
            unmasked_card_images: false,
        });
        assert_eq!(
            crate::plan::requests_per_reference(Kind::Document, &job),
            (2, 2)
        );
    }
}
