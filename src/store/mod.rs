//! Object storage: a dataset in a bucket (`s3://`, `gs://`, `az://`) through the `object_store`
//! crate. The run writes every file to a local scratch directory exactly as it does for a local
//! dataset, then [`Remote`] uploads it:
//!
//! - archives and commit records are created only if absent (`PutMode::Create`, an
//!   `If-None-Match: *` PUT); a 412 means "already there" and is reported as such, never
//!   overwritten. An archive larger than [`single_put_max`] is uploaded in parts under the run's
//!   own key (`runs/{run}/…`), then copied to its final key create-if-absent (a multipart copy
//!   completed with `If-None-Match: *`), so nothing appears under a final key before it is
//!   complete and nothing there is ever replaced;
//! - table parts have names unique to their run: a large one goes up in parts straight to its
//!   final key (a multipart upload is invisible until completed);
//! - `failures.csv`, `report.json` and the run's heartbeat are plain overwrites.
//!
//! Credentials come only from each cloud's environment and metadata chain; every error message
//! passes [`scrub`] before anyone sees it.

pub mod url;

use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Future, StreamExt, TryStreamExt};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService,
};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, PutMode, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

pub use url::{BucketUrl, Scheme};

/// Store settings of the job file (`[output]`); credentials are never among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSettings {
    /// An S3-compatible endpoint (`[output] endpoint`; else `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// The region (`[output] region`; else `AWS_REGION`/`AWS_DEFAULT_REGION`).
    pub region: Option<String>,
    /// Plain HTTP to the endpoint: honoured only for a loopback endpoint.
    pub allow_http: bool,
    /// Server-side encryption: `aws:kms` or `AES256` (`[output] sse`).
    pub sse: Option<String>,
    /// The KMS key of `sse = "aws:kms"` (`[output] sse_kms_key_id`; else the bucket's default).
    pub sse_kms_key_id: Option<String>,
}

/// Uploads in flight at once (each streams from its scratch file; at most
/// [`PARTS_IN_FLIGHT`] parts of [`PART_SIZE`] each in memory).
pub const UPLOADS_IN_FLIGHT: usize = 4;
/// Parts of one multipart upload in flight.
pub const PARTS_IN_FLIGHT: usize = 2;
/// The size of a multipart upload's parts (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Objects up to this size are uploaded with one PUT (read into memory); larger ones in parts.
/// `JUMIO_EXPORT_STORE_SINGLE_PUT_BYTES` lowers it (tests make every archive a multipart one).
pub fn single_put_max() -> u64 {
    knob("JUMIO_EXPORT_STORE_SINGLE_PUT_BYTES").unwrap_or(PART_SIZE as u64)
}

/// After this long without a heartbeat a run in a bucket is dead (default 300 s;
/// `JUMIO_EXPORT_STORE_STALE_SECS`). The heartbeat is refreshed every fifth of it.
pub fn stale_after() -> Duration {
    Duration::from_secs(knob("JUMIO_EXPORT_STORE_STALE_SECS").unwrap_or(300).max(1))
}

/// How often a failed store request is retried (default 5; `JUMIO_EXPORT_STORE_RETRIES`), and
/// for how long at most (60 s).
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: knob("JUMIO_EXPORT_STORE_RETRIES").unwrap_or(5) as usize,
        retry_timeout: Duration::from_secs(60),
    }
}

fn knob(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The environment variables whose values never appear in a message.
const SECRET_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_CLIENT_SECRET",
];

/// `message` with the value of every credential variable replaced by `***`.
pub fn scrub(message: String) -> String {
    let mut out = message;
    for var in SECRET_VARS {
        if let Ok(value) = std::env::var(var)
            && value.len() >= 4
            && out.contains(&value)
        {
            out = out.replace(&value, "***");
        }
    }
    out
}

/// What went wrong with a store request, already scrubbed.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct StoreError {
    /// The object or prefix (`s3://bucket/key`).
    pub location: String,
    /// Why (no credential in it).
    pub message: String,
    /// Which kind.
    pub kind: StoreErrorKind,
}

/// The kinds of [`StoreError`] callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// A create-if-absent write found the key taken.
    AlreadyExists,
    /// No such object.
    NotFound,
    /// Anything else (after the bounded retries).
    Other,
}

impl StoreError {
    /// Whether a create-if-absent write found the key taken.
    pub fn already_exists(&self) -> bool {
        self.kind == StoreErrorKind::AlreadyExists
    }
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

/// Counters of the store's HTTP traffic, for the report (apart from the API's).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Requests sent, retries included.
    pub requests: AtomicU64,
    /// Attempts that failed transiently (connection, 5xx, 429): each was retried, or was the
    /// last of its bounded retries.
    pub retried: AtomicU64,
}

/// One listed object: its dataset path, size and time of last write.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The dataset path (`tables/netverify/{run}-0.parquet`).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// When the store last wrote it.
    pub last_modified: DateTime<Utc>,
}

/// A dataset's bucket: uploads, downloads, listings, on the run's tokio runtime.
#[derive(Debug)]
pub struct Remote {
    url: BucketUrl,
    store: Arc<dyn ObjectStore>,
    handle: Handle,
    stats: Arc<StoreStats>,
    uploads: Arc<Semaphore>,
}

impl Remote {
    /// Connects to `url` with `settings` and the cloud's environment chain. Must be called
    /// within a tokio runtime (its handle runs every request). `Err`: the settings cannot make
    /// a client (a usage matter: exit 2).
    pub fn connect(url: &BucketUrl, settings: &StoreSettings) -> Result<Remote, String> {
        let handle = Handle::try_current().map_err(|e| e.to_string())?;
        let stats = Arc::new(StoreStats::default());
        let store =
            build(url, settings, stats.clone()).map_err(|e| scrub(format!("{url}: {e}")))?;
        Ok(Remote {
            url: url.clone(),
            store,
            handle,
            stats,
            uploads: Arc::new(Semaphore::new(UPLOADS_IN_FLIGHT)),
        })
    }

    /// The location, `s3://bucket/prefix`.
    pub fn url(&self) -> &BucketUrl {
        &self.url
    }

    /// The store's request counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Runs `fut` to completion from blocking code (a `spawn_blocking` thread or a plain one).
    pub fn block_on<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let task = self.handle.spawn(fut);
        match futures::executor::block_on(task) {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("the runtime shut down under a store request"),
        }
    }

    fn path(&self, relative: &str) -> ObjectPath {
        ObjectPath::from(self.url.key(relative))
    }

    fn err(&self, relative: &str, e: object_store::Error) -> StoreError {
        let kind = match e {
            object_store::Error::AlreadyExists { .. } => StoreErrorKind::AlreadyExists,
            object_store::Error::NotFound { .. } => StoreErrorKind::NotFound,
            _ => StoreErrorKind::Other,
        };
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        StoreError {
            location: format!("{}/{relative}", self.url),
            message: scrub(message),
            kind,
        }
    }

    /// A clone sharing the client, for a spawned task.
    pub fn share(&self) -> Remote {
        Remote {
            url: self.url.clone(),
            store: self.store.clone(),
            handle: self.handle.clone(),
            stats: self.stats.clone(),
            uploads: self.uploads.clone(),
        }
    }

    /// Lists one level under `dir` (a dataset path such as `commits`): proves the bucket
    /// exists and the credentials may read it.
    pub async fn check_access(&self) -> Result<(), StoreError> {
        let prefix = self.path(crate::dataset::COMMITS_DIR);
        self.store
            .list_with_delimiter(Some(&prefix))
            .await
            .map(|_| ())
            .map_err(|e| self.err(crate::dataset::COMMITS_DIR, e))
    }

    /// Every object under `dir` (recursively), with dataset paths.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>, StoreError> {
        let prefix = match (dir, self.url.prefix.as_str()) {
            ("", "") => None,
            ("", p) => Some(ObjectPath::from(p)),
            (d, _) => Some(self.path(d)),
        };
        let mut out = Vec::new();
        let mut stream = self.store.list(prefix.as_ref());
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.err(dir, e))?;
            let Some(path) = self.url.relative(meta.location.as_ref()) else {
                continue;
            };
            out.push(Listed {
                path: path.to_string(),
                size: meta.size,
                last_modified: meta.last_modified,
            });
        }
        Ok(out)
    }

    /// The object's size and time of last write; `None` when there is none.
    pub async fn head(&self, relative: &str) -> Result<Option<Listed>, StoreError> {
        match self.store.head(&self.path(relative)).await {
            Ok(meta) => Ok(Some(Listed {
                path: relative.to_string(),
                size: meta.size,
                last_modified: meta.last_modified,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(relative, e)),
        }
    }

    /// The whole object, in memory (commit records, claims: small objects).
    pub async fn get_bytes(&self, relative: &str) -> Result<Bytes, StoreError> {
        let got = self
            .store
            .get(&self.path(relative))
            .await
            .map_err(|e| self.err(relative, e))?;
        got.bytes().await.map_err(|e| self.err(relative, e))
    }

    /// Streams the object into `dest` (created or truncated), chunk by chunk.
    pub async fn download(&self, relative: &str, dest: &Path) -> Result<u64, StoreError> {
        let got = self
            .store
            .get(&self.path(relative))
            .await
            .map_err(|e| self.err(relative, e))?;
        let local = |e: std::io::Error| StoreError {
            location: dest.display().to_string(),
            message: e.to_string(),
            kind: StoreErrorKind::Other,
        };
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(local)?;
        }
        let mut file = std::io::BufWriter::new(std::fs::File::create(dest).map_err(local)?);
        let mut stream = got.into_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.err(relative, e))? {
            n += chunk.len() as u64;
            file.write_all(&chunk).map_err(local)?;
        }
        file.flush().map_err(local)?;
        Ok(n)
    }

    /// Writes `bytes` under `relative`: create-if-absent when `create` (a taken key is
    /// [`StoreErrorKind::AlreadyExists`]), else overwriting.
    pub async fn put_bytes(
        &self,
        relative: &str,
        bytes: Bytes,
        create: bool,
    ) -> Result<(), StoreError> {
        let mode = if create {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        self.store
            .put_opts(&self.path(relative), PutPayload::from(bytes), mode.into())
            .await
            .map(|_| ())
            .map_err(|e| self.err(relative, e))
    }

    /// Writes `bytes` create-if-absent under `relative`, a key only this run writes (table
    /// parts, its commit record): a taken key holding exactly `bytes` is this run's own write
    /// whose answer was lost and retried (the retry met a 412), and succeeds; any other content
    /// is [`StoreErrorKind::AlreadyExists`].
    pub async fn put_own(&self, relative: &str, bytes: Bytes) -> Result<(), StoreError> {
        match self.put_bytes(relative, bytes.clone(), true).await {
            Err(e) if e.already_exists() => match self.get_bytes(relative).await {
                Ok(there) if there == bytes => Ok(()),
                _ => Err(e),
            },
            other => other,
        }
    }

    /// Uploads the file `local` to `relative`, create-if-absent (archives): one conditional PUT
    /// when it is small, else parts under `staging` (a key of the run's own) and a
    /// create-if-absent copy to `relative`. At most [`UPLOADS_IN_FLIGHT`] at once.
    pub async fn upload_create(
        &self,
        local: &Path,
        relative: &str,
        staging: &str,
    ) -> Result<(), StoreError> {
        let _permit = self.uploads.acquire().await.expect("never closed");
        let size = file_size(local)?;
        if size <= single_put_max() {
            let bytes = read_file(local).await?;
            return self.put_bytes(relative, bytes, true).await;
        }
        self.multipart(local, staging).await?;
        let copied = self
            .store
            .copy_if_not_exists(&self.path(staging), &self.path(relative))
            .await
            .map_err(|e| self.err(relative, e));
        // The staged copy is the run's own either way.
        let _ = self.store.delete(&self.path(staging)).await;
        copied
    }

    /// Uploads the file `local` to `relative`, a key no other run writes (table parts): one PUT
    /// when small, else straight to the key in parts (invisible until complete).
    pub async fn upload_unique(&self, local: &Path, relative: &str) -> Result<(), StoreError> {
        let _permit = self.uploads.acquire().await.expect("never closed");
        if file_size(local)? <= single_put_max() {
            let bytes = read_file(local).await?;
            return self.put_own(relative, bytes).await;
        }
        self.multipart(local, relative).await
    }

    /// A multipart upload of `local` to `relative`, [`PARTS_IN_FLIGHT`] parts at once; aborted
    /// on any failure (a crash leaves an incomplete upload, which no listing shows and a
    /// bucket lifecycle rule removes).
    async fn multipart(&self, local: &Path, relative: &str) -> Result<(), StoreError> {
        use tokio::io::AsyncReadExt;
        let upload = self
            .store
            .put_multipart(&self.path(relative))
            .await
            .map_err(|e| self.err(relative, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let result: Result<(), StoreError> = async {
            let mut file = tokio::fs::File::open(local)
                .await
                .map_err(|e| local_err(local, e))?;
            let mut buf = vec![0u8; 1024 * 1024];
            loop {
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.err(relative, e))?;
                let n = file.read(&mut buf).await.map_err(|e| local_err(local, e))?;
                if n == 0 {
                    return Ok(());
                }
                writer.write(&buf[..n]);
            }
        }
        .await;
        match result {
            Ok(()) => writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| self.err(relative, e)),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Deletes `relative` (absent is fine).
    pub async fn delete(&self, relative: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.path(relative)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(relative, e)),
        }
    }
}

/// Copies the dataset at `url` into `dest` (every object but the runs' heartbeats and staged
/// uploads under `runs/`), for `verify`: it reads archives whole anyway. Returns the objects
/// copied. Must be awaited on a multi-thread runtime.
pub async fn mirror(
    url: &BucketUrl,
    settings: &StoreSettings,
    dest: &Path,
) -> Result<usize, String> {
    let remote = Remote::connect(url, settings)?;
    let objects = remote.list("").await.map_err(|e| e.to_string())?;
    let wanted: Vec<Listed> = objects
        .into_iter()
        .filter(|o| !o.path.starts_with("runs/"))
        .collect();
    let n = wanted.len();
    futures::stream::iter(wanted)
        .map(|o| {
            let r = remote.share();
            let local = dest.join(&o.path);
            async move { r.download(&o.path, &local).await }
        })
        .buffer_unordered(UPLOADS_IN_FLIGHT)
        .try_for_each(|_| async { Ok(()) })
        .await
        .map_err(|e| e.to_string())?;
    Ok(n)
}

/// The run's heartbeat in a bucket, `runs/{run}.lock`: created create-if-absent (a run id is
/// never taken twice), rewritten every fifth of [`stale_after`]; a run whose heartbeat is older
/// than that is dead. Dropped, it stops and deletes the object.
#[derive(Debug)]
pub struct Heartbeat {
    remote: Remote,
    relative: String,
    last_ok: Arc<std::sync::Mutex<std::time::Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Creates `relative` (create-if-absent) and starts refreshing it. `Ok(None)`: the key is
    /// taken (draw another run id).
    pub async fn start(
        remote: &Remote,
        relative: String,
        content: Bytes,
    ) -> Result<Option<Heartbeat>, StoreError> {
        match remote.put_bytes(&relative, content.clone(), true).await {
            Ok(()) => {}
            Err(e) if e.already_exists() => return Ok(None),
            Err(e) => return Err(e),
        }
        let last_ok = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
        let (r, key, seen) = (remote.share(), relative.clone(), last_ok.clone());
        let every = stale_after() / 5;
        let task = remote.handle.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if r.put_bytes(&key, content.clone(), false).await.is_ok() {
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
                }
            }
        });
        Ok(Some(Heartbeat {
            remote: remote.share(),
            relative,
            last_ok,
            task,
        }))
    }

    /// Whether other runs still see this run live: its last refresh is well within the stale
    /// window. A run that is not may have had its archives taken over, and must not commit.
    pub fn is_fresh(&self) -> bool {
        let age = self
            .last_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        age < stale_after() * 4 / 5
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
        let r = self.remote.share();
        let key = self.relative.clone();
        // A thread of its own: the drop may happen on an async worker. Best effort: a heartbeat
        // left behind goes stale and the next run removes it.
        let _ = std::thread::spawn(move || {
            let handle = r.handle.clone();
            let task = handle.spawn(async move { r.delete(&key).await });
            let _ = futures::executor::block_on(task);
        })
        .join();
    }
}

/// Whether a heartbeat written at `last_modified` is still live now.
pub fn heartbeat_live(last_modified: DateTime<Utc>) -> bool {
    let age = Utc::now().signed_duration_since(last_modified);
    age.to_std().map(|a| a < stale_after()).unwrap_or(true)
}

fn local_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError {
        location: path.display().to_string(),
        message: e.to_string(),
        kind: StoreErrorKind::Other,
    }
}

fn file_size(path: &Path) -> Result<u64, StoreError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| local_err(path, e))
}

async fn read_file(path: &Path) -> Result<Bytes, StoreError> {
    tokio::fs::read(path)
        .await
        .map(Bytes::from)
        .map_err(|e| local_err(path, e))
}

/// The `object_store` client of `url`.
fn build(
    url: &BucketUrl,
    settings: &StoreSettings,
    stats: Arc<StoreStats>,
) -> Result<Arc<dyn ObjectStore>, String> {
    let endpoint = settings
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.trim().is_empty());
    let allow_http = plain_http(endpoint.as_deref(), settings)?;
    let connector = Counting { stats, allow_http };
    let options = ClientOptions::new().with_allow_http(allow_http);
    let built: object_store::Result<Arc<dyn ObjectStore>> = match url.scheme {
        Scheme::S3 => {
            use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&url.bucket)
                .with_client_options(options)
                .with_retry(retry_config())
                .with_http_connector(connector)
                .with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
            if let Some(e) = endpoint {
                b = b.with_endpoint(e).with_allow_http(allow_http);
            }
            if let Some(r) = &settings.region {
                b = b.with_region(r);
            }
            s3_encryption(b, settings)?
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        Scheme::Gcs => {
            if settings.sse.is_some() || settings.endpoint.is_some() {
                return Err("[output] endpoint and sse apply to s3:// locations only".into());
            }
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&url.bucket)
                .with_client_options(options)
                .with_retry(retry_config())
                .with_http_connector(connector)
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        Scheme::Azure => {
            if settings.sse.is_some() || settings.endpoint.is_some() {
                return Err("[output] endpoint and sse apply to s3:// locations only".into());
            }
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(&url.bucket)
                .with_client_options(options)
                .with_retry(retry_config())
                .with_http_connector(connector)
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
    };
    built.map_err(|e| e.to_string())
}

/// Whether the client may speak plain http: only to a loopback `endpoint`, and only when
/// `[output] allow_http` or `AWS_ALLOW_HTTP=true` says so.
fn plain_http(endpoint: Option<&str>, settings: &StoreSettings) -> Result<bool, String> {
    let Some(e) = endpoint.filter(|e| e.starts_with("http://")) else {
        return Ok(false);
    };
    if !is_loopback(e) {
        return Err(format!(
            "the endpoint {e} is plain http and not on this machine: only a loopback endpoint (127.0.0.1, ::1, localhost) may be plain http"
        ));
    }
    let env_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if !(settings.allow_http || env_http) {
        return Err(format!(
            "the endpoint {e} is plain http: set [output] allow_http = true (honoured for a loopback endpoint only)"
        ));
    }
    Ok(true)
}

/// `[output] sse` and `sse_kms_key_id` on the S3 builder `b`.
fn s3_encryption(
    b: object_store::aws::AmazonS3Builder,
    settings: &StoreSettings,
) -> Result<object_store::aws::AmazonS3Builder, String> {
    Ok(match (settings.sse.as_deref(), &settings.sse_kms_key_id) {
        (None, None) | (Some("AES256"), None) => b,
        (Some("aws:kms"), Some(key)) => b.with_sse_kms_encryption(key),
        (Some("aws:kms"), None) => {
            let key = "aws_server_side_encryption"
                .parse()
                .map_err(|e: object_store::Error| e.to_string())?;
            b.with_config(key, "aws:kms")
        }
        (sse, key) => {
            return Err(format!(
                "[output] sse = {sse:?} with sse_kms_key_id {}: sse is \"aws:kms\" (optionally with sse_kms_key_id) or \"AES256\"",
                if key.is_some() { "set" } else { "unset" }
            ));
        }
    })
}

fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The store's HTTP client: reqwest (the one the API client uses), counting requests and
/// transient failures for the report.
#[derive(Debug)]
struct Counting {
    stats: Arc<StoreStats>,
    allow_http: bool,
}

impl HttpConnector for Counting {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = reqwest::Client::builder()
            .https_only(!self.allow_http)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "store client",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(CountingService {
            client,
            stats: self.stats.clone(),
        }))
    }
}

#[derive(Debug)]
struct CountingService {
    client: reqwest::Client,
    stats: Arc<StoreStats>,
}

type ServiceFuture<'a> = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'a>>;

impl HttpService for CountingService {
    fn call<'a, 'b>(&'a self, req: HttpRequest) -> ServiceFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let result = HttpService::call(&self.client, req).await;
            let transient = match &result {
                Ok(r) => r.status().is_server_error() || r.status().as_u16() == 429,
                Err(_) => true,
            };
            if transient {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_endpoints_only() {
        assert!(is_loopback("http://127.0.0.1:9000"));
        assert!(is_loopback("http://localhost:9000/"));
        assert!(is_loopback("http://[::1]:9000"));
        assert!(!is_loopback("http://10.0.0.5:9000"));
        assert!(!is_loopback("http://s3.example.com"));
        let url = BucketUrl::parse(Path::new("s3://b/p")).unwrap().unwrap();
        let remote = |endpoint: &str, allow_http| {
            let s = StoreSettings {
                endpoint: Some(endpoint.into()),
                allow_http,
                ..Default::default()
            };
            build(&url, &s, Arc::default()).map(|_| ())
        };
        assert!(remote("http://10.0.0.5:9000", true).is_err());
        assert!(remote("http://127.0.0.1:9000", true).is_ok());
        assert!(remote("https://s3.example.com", false).is_ok());
    }
}
