//! Job file stage: a TOML job file (plus command-line overrides) → a validated [`Job`].
//!
//! Two phases: the text is deserialized into raw structs that mirror the file
//! (`#[serde(deny_unknown_fields)]`, every value [`toml::Spanned`] so it knows its line),
//! then every value is checked and turned into the typed settings the other stages use.
//! Every error names the file, the line and the key (`jobs/x.toml:7: [limits]
//! concurrency: must be at least 1`), or the flag of a command-line [`Overrides`].
//! One validator per table; every default and limit is in [`defaults`].
//!
//! This module reads the job file and, in [`Credentials::from_env`], two environment
//! variables; it does no other I/O and never sends anything. Credentials are never read
//! from the job file, and no credential value ever reaches an error message or `Debug`
//! output.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Url;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::Kind;

/// Command-line values that replace the job file's (`--input`, `--out`, `--base-url`,
/// `--rate`, `--concurrency`, `--shard`), shared by `run` and `plan`. This struct is also
/// their clap definition (`#[command(flatten)]` in [`crate::cli`]), so the flags and what the
/// job does with them cannot drift apart. `None` keeps the job file's value; an `--input` path
/// is relative to the current directory, and `--rate` is divided by the shard count.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Overrides {
    /// Reference list (text or CSV); `-` reads standard input.
    #[arg(long)]
    pub input: Option<String>,
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sets both netverify_url and retrieval_url.
    #[arg(long)]
    pub base_url: Option<String>,
    /// Requests per second (a ceiling for all requests).
    #[arg(long)]
    pub rate: Option<f64>,
    /// References worked on at once.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Export only shard K of N (K from 0 to N-1), at 1/N of the rate; `auto` reads K and N from
    /// the array job's scheduler (Kubernetes Indexed Job, AWS Batch, Slurm, Cloud Run).
    #[arg(long, value_name = "K/N|auto")]
    pub shard: Option<ShardArg>,
    /// N for `--shard auto` where the scheduler does not say it (a Kubernetes Indexed Job's
    /// `completions`); checked against it where it does.
    #[arg(long, value_name = "N")]
    pub shard_count: Option<u32>,
}

/// `--shard`: `K/N`, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    /// `K/N`.
    Fixed(Shard),
    /// Read from the scheduler's variables ([`crate::scheduler`]).
    Auto,
}

impl From<Shard> for ShardArg {
    fn from(shard: Shard) -> Self {
        ShardArg::Fixed(shard)
    }
}

impl FromStr for ShardArg {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "auto" {
            return Ok(ShardArg::Auto);
        }
        s.parse()
            .map(ShardArg::Fixed)
            .map_err(|e: ShardError| ShardError {
                problem: format!("{} (or `auto`)", e.problem),
                ..e
            })
    }
}

/// The shard the overrides name: `--shard K/N` as given, `--shard auto` from the scheduler's
/// variables in the environment.
pub fn resolve_shard(overrides: &Overrides) -> Result<Option<Shard>, JobError> {
    let count = overrides.shard_count;
    match overrides.shard {
        None if count.is_some() => Err(JobError::Override {
            flag: "--shard-count",
            message: "only with --shard auto".into(),
        }),
        None => Ok(None),
        Some(ShardArg::Fixed(shard)) => match count {
            Some(n) if n != shard.count => Err(JobError::Override {
                flag: "--shard-count",
                message: format!("{n} disagrees with --shard {shard}"),
            }),
            _ => Ok(Some(shard)),
        },
        Some(ShardArg::Auto) => {
            let env = |name: &str| std::env::var(name).ok();
            crate::scheduler::detect(&env, count)
                .map(|d| Some(d.shard))
                .map_err(|e| JobError::Override {
                    flag: "--shard auto",
                    message: e.trim_start_matches("--shard auto: ").to_string(),
                })
        }
    }
}

/// Every default and limit of the job file's settings, in one place: the validation below, the
/// rate limiter ([`crate::api::limiter`]) and the retry policy ([`crate::api::retry`]) read
/// them from here. The defaults are SPEC's sample job file.
pub mod defaults {
    use std::time::Duration;

    use super::{FetchSettings, Region};
    use crate::Kind;

    /// `[api] region`.
    pub const REGION: Region = Region::Us;
    /// `[api] token_env`.
    pub const TOKEN_ENV: &str = "JUMIO_API_TOKEN";
    /// `[api] secret_env`.
    pub const SECRET_ENV: &str = "JUMIO_API_SECRET";
    /// `[input] default_kind`.
    pub const DEFAULT_KIND: Kind = Kind::Netverify;
    /// `[limits] requests_per_second`.
    pub const REQUESTS_PER_SECOND: f64 = 10.0;
    /// `[limits] burst`.
    pub const BURST: u32 = 10;
    /// `[limits] concurrency`.
    pub const CONCURRENCY: usize = 16;
    /// `[limits] max_retries`.
    pub const MAX_RETRIES: u32 = 6;
    /// `[limits] timeout_seconds`.
    pub const TIMEOUT: Duration = Duration::from_secs(60);
    /// `[limits] max_throttle_seconds`: how long one request may wait after 429s in all before
    /// it fails (`HTTP_ERROR`, status 429) (ten minutes: longer than any throttling the adaptive rate
    /// should meet, short enough that a tenant whose limit something else takes up shows).
    pub const MAX_THROTTLE: Duration = Duration::from_secs(600);
    /// Jumio's published default for retrieval: about 15 requests per second per tenant, shared
    /// by every machine using the tenant's credentials (`plan` states the time at it).
    pub const TENANT_REQUESTS_PER_SECOND: f64 = 15.0;
    /// `[limits] max_outage_seconds`: how long the job pauses for one outage of the API (every
    /// request failing) before failing requests use up their retries again.
    pub const MAX_OUTAGE: Duration = Duration::from_secs(3600);
    /// `[limits] max_file_bytes` (50 MiB).
    pub const MAX_FILE_BYTES: u64 = 52_428_800;
    /// `[limits] max_list_items`: longest `images`, `livenessImages` or `pages` list taken.
    /// The guide's samples list 3 images, 7 liveness images, 2 pages.
    pub const MAX_LIST_ITEMS: usize = 100;
    /// `[polling] schedule_seconds`: the guide's request timings.
    pub const SCHEDULE_SECONDS: [u64; 10] = [40, 60, 100, 160, 240, 340, 460, 600, 760, 940];
    /// `[polling] daily_retry`.
    pub const DAILY_RETRY: bool = true;
    /// `[fetch]`: everything the guide's flow offers, except unmasked card images (PCI DSS).
    pub const FETCH: FetchSettings = FetchSettings {
        images: true,
        liveness_images: true,
        original_documents: true,
        unmasked_card_images: false,
    };
    /// `[output] dir`.
    pub const OUTPUT_DIR: &str = "export";
    /// `[output] csv`, `parquet` and `archives`.
    pub const WRITE_TABLES_AND_ARCHIVES: bool = true;
    /// `[output] encrypt_archives`.
    pub const ENCRYPT_ARCHIVES: bool = false;
    /// `[output] csv_neutralise_formulas`: CSV files are opened in spreadsheets.
    pub const CSV_NEUTRALISE_FORMULAS: bool = true;
    /// `[output] archive_key_env`, and `verify --key-env`.
    pub const ARCHIVE_KEY_ENV: &str = "JUMIO_EXPORT_ARCHIVE_KEY";
    /// `[output] file_mode`: personal data, readable by the owner only.
    pub const FILE_MODE: u32 = 0o600;
    /// `[output] dir_mode`.
    pub const DIR_MODE: u32 = 0o700;

    /// The slowest request rate a shard may run at, in requests per second: the limiter turns
    /// the rate into a period (1/rate) that must fit a `Duration` and governor's u64
    /// nanoseconds. One request per 1000 s is slower than any real export.
    pub const MIN_RATE: f64 = 0.001;
    /// The fastest rate the limiter accepts from a library caller (job files have no upper
    /// bound: a rate above what any server answers is merely no limit).
    pub const MAX_RATE: f64 = 1e9;
    /// The largest rate limiter burst; with [`MIN_RATE`] it keeps governor's burst window
    /// (period × burst, in u64 nanoseconds) far from overflowing.
    pub const MAX_BURST: u32 = 1_000_000;
    /// The longest `[limits] timeout_seconds`: a day is far beyond any sensible request
    /// timeout, and keeps `Duration::from_secs_f64` in range.
    pub const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;
    /// The most `[polling] schedule_seconds` entries: the guide's "maximum of 10 consecutive
    /// retrieval attempts", each entry one status call.
    pub const MAX_SCHEDULE_ENTRIES: usize = 10;
    /// The largest `[polling] schedule_seconds` offset: ten years, far beyond the guide's
    /// schedule, and keeps `Duration::from_secs_f64` in range.
    pub const MAX_SCHEDULE_SECONDS: f64 = 315_360_000.0;
    /// The first backoff ceiling of a retried request; doubled per retry.
    pub const RETRY_BASE: Duration = Duration::from_millis(500);
    /// The largest backoff ceiling of a retried request.
    pub const RETRY_CAP: Duration = Duration::from_secs(60);
}

/// One shard of an array job: `--shard K/N` exports only the references whose
/// [`crate::input::shard_of`] is `index`.
///
/// `index` is **0-based** (`0/4` … `3/4`) so it can be taken straight from the index a
/// scheduler hands out (Kubernetes `JOB_COMPLETION_INDEX`, `AWS_BATCH_JOB_ARRAY_INDEX`,
/// a Slurm array declared `--array=0-3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// K: this shard, in `0..count`.
    pub index: u32,
    /// N: how many shards the input is split into, at least 1.
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `--shard` was not of the form `K/N` with `0 <= K < N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--shard {text:?}: {problem}")]
pub struct ShardError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem: &str| ShardError {
            text: s.to_string(),
            problem: problem.to_string(),
        };
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| err("expected K/N, e.g. 0/4 (K is 0-based)"))?;
        let index: u32 = k
            .trim()
            .parse()
            .map_err(|_| err("K is not a non-negative integer"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| err("N is not a non-negative integer"))?;
        if count == 0 {
            return Err(err("N must be at least 1"));
        }
        if index >= count {
            return Err(err(&format!(
                "K must be less than N (K is 0-based: 0/{count} to {}/{count})",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }
}

/// A validated job: everything a run needs apart from the credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job file as given on the command line.
    pub path: PathBuf,
    /// Hex sha256 of the job file's bytes, recorded in reports and provenance.
    pub sha256: String,
    /// `[api]`.
    pub api: ApiSettings,
    /// `[input]`.
    pub input: InputSettings,
    /// `[limits]`, already adjusted for the shard.
    pub limits: Limits,
    /// `[polling]`.
    pub polling: Polling,
    /// `[fetch]`.
    pub fetch: FetchSettings,
    /// `[output]`.
    pub output: OutputSettings,
    /// `--shard K/N`, when given.
    pub shard: Option<Shard>,
}

/// Where the API lives and how requests identify themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// The Jumio data centre.
    pub region: Region,
    /// Base URL of Netverify and Authentication (`https://netverify.com` for `us`).
    pub netverify_url: Url,
    /// Base URL of Document Verification (`https://retrieval.netverify.com` for `us`).
    pub retrieval_url: Url,
    /// The `User-Agent` of every request; Jumio requires it to name the business.
    pub user_agent: String,
    /// Name of the environment variable holding the API token.
    pub token_env: String,
    /// Name of the environment variable holding the API secret.
    pub secret_env: String,
}

/// A Jumio data centre, which decides the default hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    /// `netverify.com`.
    Us,
    /// `lon.netverify.com`.
    Eu,
    /// `core-sgp.jumio.com`.
    Sgp,
}

impl Region {
    /// The name used in job files.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
            Region::Sgp => "sgp",
        }
    }

    /// Default base URL of Netverify and Authentication in this region.
    pub fn netverify_url(self) -> &'static str {
        match self {
            Region::Us => "https://netverify.com",
            Region::Eu => "https://lon.netverify.com",
            Region::Sgp => "https://core-sgp.jumio.com",
        }
    }

    /// Default base URL of Document Verification in this region.
    pub fn retrieval_url(self) -> &'static str {
        match self {
            Region::Us => "https://retrieval.netverify.com",
            Region::Eu => "https://retrieval.lon.netverify.com",
            Region::Sgp => "https://retrieval.core-sgp.jumio.com",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "us" => Ok(Region::Us),
            "eu" => Ok(Region::Eu),
            "sgp" => Ok(Region::Sgp),
            other => Err(format!(
                "unknown region {other:?}: expected \"us\", \"eu\" or \"sgp\""
            )),
        }
    }
}

/// Where the reference list comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSettings {
    /// The reference list: `-` for standard input; a job-file path is resolved relative
    /// to the job file's directory, an `--input` path relative to the current directory.
    /// `None` when neither the job file nor the command line names one.
    pub path: Option<String>,
    /// The kind of references that do not say (text lists, CSV rows without `kind`).
    pub default_kind: Kind,
}

/// Request limits. Every number is already checked to be usable.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Ceiling for all requests (polls and retries included), already divided by the
    /// shard count so N shards together stay under the configured rate.
    pub requests_per_second: f64,
    /// Rate limiter burst, likewise divided by the shard count (rounded up, at least 1).
    pub burst: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries of one request after 5xx or a network error (429s do not count).
    pub max_retries: u32,
    /// The longest one request may wait after 429s in all (then `HTTP_ERROR`, status 429).
    pub max_throttle: Duration,
    /// The longest the job pauses for one outage of the API (see [`crate::api::breaker`]).
    pub max_outage: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Larger response bodies are refused (`TOO_LARGE`), not buffered.
    pub max_file_bytes: u64,
    /// Longer `images`, `livenessImages` or `pages` lists are refused (`BAD_RESPONSE`) before
    /// any file of them is fetched.
    pub max_list_items: usize,
}

/// The status polling schedule of pending transactions.
#[derive(Debug, Clone, PartialEq)]
pub struct Polling {
    /// Offsets from a reference's first status call of the run: poll k+1 happens no
    /// earlier than first call + `schedule[k]`. Non-empty, strictly increasing.
    pub schedule: Vec<Duration>,
    /// After the schedule, a pending reference may be polled again once a day.
    pub daily_retry: bool,
}

/// Which optional files are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSettings {
    /// Document images (Netverify front/back/face, Authentication face, Document
    /// Verification pages).
    pub images: bool,
    /// Liveness images (Netverify and Authentication).
    pub liveness_images: bool,
    /// The original PDF of Document Verification transactions, when present.
    pub original_documents: bool,
    /// `maskhint=unmasked` on Document Verification pages (falls back to masked on 403).
    pub unmasked_card_images: bool,
}

/// What is written where.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSettings {
    /// The output directory. A relative path is relative to the **current directory**
    /// of the run (not the job file's), so the same job file can export into different
    /// places; `--out` replaces it.
    pub dir: PathBuf,
    /// Write `*.csv` tables.
    pub csv: bool,
    /// Write `*.parquet` tables.
    pub parquet: bool,
    /// Write `archives/{reference}.zip`.
    pub archives: bool,
    /// Encrypt every archive entry (AES-256) with the key in `archive_key_env`.
    pub encrypt_archives: bool,
    /// The environment variable holding the archive key (default `JUMIO_EXPORT_ARCHIVE_KEY`).
    pub archive_key_env: String,
    /// Public keys (age X25519 `age1…`, SSH `ssh-ed25519 …`) every archive is encrypted to with
    /// age (`archives/{reference}.zip.age`); empty: no age encryption. Each one parses.
    pub age_recipients: Vec<String>,
    /// Permissions of every file written, whatever the umask (default `0600`).
    pub file_mode: u32,
    /// Permissions of every directory created, whatever the umask (default `0700`).
    pub dir_mode: u32,
    /// Prefix CSV cells a spreadsheet would run as a formula with `'` (default on; Parquet
    /// always keeps the exact text).
    pub csv_neutralise_formulas: bool,
    /// The environment variable holding the OpenSSH Ed25519 private key that signs each
    /// commit record (`commits/{run}.json.sig`); `None`: commits are not signed.
    pub signing_key_env: Option<String>,
    /// The PII profile of the transaction tables (default `full`).
    pub pii: crate::flatten::pii::Pii,
    /// The environment variable holding the key of `pii = "pseudonymised"` (required then).
    pub pii_key_env: Option<String>,
    /// For a bucket (`s3://…`): endpoint, region, plain HTTP to a loopback endpoint, SSE.
    /// Credentials are never job keys: they come from the cloud's environment chain.
    pub store: crate::store::StoreSettings,
}

impl OutputSettings {
    /// How the archives are protected: age when `age_recipients` are given, ZIP AES with
    /// `encrypt_archives`, else plain ZIP.
    pub fn archive_mode(&self) -> crate::output::archive::ArchiveMode {
        use crate::output::archive::ArchiveMode;
        if !self.age_recipients.is_empty() {
            ArchiveMode::Age
        } else if self.encrypt_archives {
            ArchiveMode::ZipAes
        } else {
            ArchiveMode::Zip
        }
    }
}

/// Where in a job file a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The job file.
    pub file: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<u32>,
    /// 1-based column (characters), for syntax errors.
    pub column: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// Everything that can be wrong with a job file, its overrides or the credentials
/// (exit code 2). Messages never contain a credential value.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job file could not be read.
    #[error("cannot read job file {}: {source}", path.display())]
    Read {
        /// The job file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{location}: invalid TOML: {message}")]
    Syntax {
        /// Where.
        location: Location,
        /// The parser's description.
        message: String,
    },
    /// A key the job file format does not have (typo, or an attempt to put credentials
    /// in the file).
    #[error("{location}: unknown key `{key}` in {table} ({hint})")]
    UnknownKey {
        /// Where.
        location: Location,
        /// The unknown key.
        key: String,
        /// `[limits]`, or `the top level`.
        table: String,
        /// The keys that table accepts, or how to pass credentials.
        hint: String,
    },
    /// A key whose value has the wrong type or is out of range.
    #[error("{location}: {key}: {message}")]
    Invalid {
        /// Where.
        location: Location,
        /// `[section] key`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A command-line override is out of range.
    #[error("{flag}: {message}")]
    Override {
        /// `--rate`, `--concurrency`, `--base-url`, …
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A credential environment variable is missing or empty.
    #[error(
        "environment variable {var} (named by [api] {key}) is not set or empty: \
         credentials come only from the environment"
    )]
    MissingCredential {
        /// The variable name (never its value).
        var: String,
        /// `token_env` or `secret_env`.
        key: &'static str,
    },
}

/// The API token and secret, from the environment only. `Debug` and `Display` print
/// `<redacted>`, so they cannot leak through logs or error chains.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    token: String,
    secret: String,
}

impl Credentials {
    /// Reads the variables named by `api.token_env` and `api.secret_env`.
    pub fn from_env(api: &ApiSettings) -> Result<Self, JobError> {
        let read = |var: &str, key: &'static str| match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(JobError::MissingCredential {
                var: var.to_string(),
                key,
            }),
        };
        Ok(Credentials {
            token: read(&api.token_env, "token_env")?,
            secret: read(&api.secret_env, "secret_env")?,
        })
    }

    /// Credentials from values already at hand (the demo, tests).
    pub fn new(token: impl Into<String>, secret: impl Into<String>) -> Self {
        Credentials {
            token: token.into(),
            secret: secret.into(),
        }
    }

    /// The `Authorization` header value: `Basic base64(token:secret)` (RFC 7617).
    pub fn basic_header_value(&self) -> String {
        let raw = format!("{}:{}", self.token, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads and validates the job file at `path`, applying `overrides`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Job, JobError> {
    let bytes = std::fs::read(path).map_err(|source| JobError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        JobError::Syntax {
            location: Location {
                file: path.to_path_buf(),
                line: Some(to_u32(line)),
                column: None,
            },
            message: "the file is not UTF-8".to_string(),
        }
    })?;
    parse(&text, path, overrides)
}

/// Validates job file `text` (read from `path`, which names it in errors and anchors a
/// relative `[input] path`), applying `overrides`. One validator per table, in file order, so
/// the first problem reported is the first one a reader meets.
pub fn parse(text: &str, path: &Path, overrides: &Overrides) -> Result<Job, JobError> {
    let ctx = Ctx { file: path, text };
    let tree = DeTable::parse(text).map_err(|e| JobError::Syntax {
        location: ctx.location(e.span(), true),
        message: e.message().to_string(),
    })?;
    let raw: RawJob = toml::from_str(text).map_err(|e| ctx.serde_error(&e, tree.get_ref()))?;
    Ok(Job {
        path: path.to_path_buf(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        api: api_settings(&ctx, &raw.api, tree.get_ref(), overrides)?,
        input: input_settings(&ctx, &raw.input, overrides)?,
        limits: limits(&ctx, &raw.limits, overrides)?,
        polling: polling(&ctx, &raw.polling)?,
        fetch: fetch_settings(&raw.fetch),
        output: output_settings(&ctx, &raw.output, overrides)?,
        shard: resolve_shard(overrides)?,
    })
}

// ---- one setting: override, else file, else default -----------------------------------

/// Where a setting's value came from, so a problem with it blames the right place.
#[derive(Debug, Clone, PartialEq)]
enum Origin {
    /// A command-line override (`--rate`).
    Flag(&'static str),
    /// The job file's `key` (`[limits] requests_per_second`), at this span.
    File(&'static str, Range<usize>),
    /// Neither gave one: the built-in default of `key`.
    Default(&'static str),
}

/// One setting's value and its [`Origin`].
#[derive(Debug, Clone, PartialEq)]
struct Setting<T> {
    value: T,
    origin: Origin,
}

impl<T> Setting<T> {
    /// Whether the value came from the command line (whose values are the user's as given:
    /// some file-only checks and the job-directory anchoring do not apply to them).
    fn is_flag(&self) -> bool {
        matches!(self.origin, Origin::Flag(_))
    }

    /// Checks and converts the value; an error names the flag, or the file, line and key.
    fn check<U, E: Into<String>>(
        self,
        ctx: &Ctx<'_>,
        f: impl FnOnce(T) -> Result<U, E>,
    ) -> Result<Setting<U>, JobError> {
        match f(self.value) {
            Ok(value) => Ok(Setting {
                value,
                origin: self.origin,
            }),
            Err(message) => Err(ctx.blame(&self.origin, message)),
        }
    }
}

/// `--flag`'s value, for [`Ctx::setting`].
fn flag<T>(name: &'static str, value: Option<T>) -> Option<(&'static str, T)> {
    value.map(|v| (name, v))
}

impl Ctx<'_> {
    /// The command-line override when given, else the job file's value of `key`, else
    /// `None`; remembers which, for [`Setting::check`].
    fn optional<T: Clone>(
        &self,
        key: &'static str,
        file: &Option<Spanned<T>>,
        flag: Option<(&'static str, T)>,
    ) -> Option<Setting<T>> {
        match (flag, file) {
            (Some((flag, value)), _) => Some(Setting {
                value,
                origin: Origin::Flag(flag),
            }),
            (None, Some(v)) => Some(Setting {
                value: v.get_ref().clone(),
                origin: Origin::File(key, v.span()),
            }),
            (None, None) => None,
        }
    }

    /// [`Ctx::optional`], falling back to `default`.
    fn setting<T: Clone>(
        &self,
        key: &'static str,
        file: &Option<Spanned<T>>,
        flag: Option<(&'static str, T)>,
        default: T,
    ) -> Setting<T> {
        self.optional(key, file, flag).unwrap_or(Setting {
            value: default,
            origin: Origin::Default(key),
        })
    }

    /// The error for a value from `origin`: the flag, or the file, line and key.
    fn blame(&self, origin: &Origin, message: impl Into<String>) -> JobError {
        match origin {
            Origin::Flag(flag) => JobError::Override {
                flag,
                message: message.into(),
            },
            Origin::File(key, span) => self.invalid(span.clone(), key, message),
            Origin::Default(key) => JobError::Invalid {
                location: self.location(None, false),
                key: (*key).to_string(),
                message: message.into(),
            },
        }
    }
}

// ---- one validator per table ----------------------------------------------------------

/// `[api]`; `--base-url` replaces both URLs.
fn api_settings(
    ctx: &Ctx<'_>,
    a: &RawApi,
    tree: &DeTable<'_>,
    overrides: &Overrides,
) -> Result<ApiSettings, JobError> {
    let region = ctx
        .setting(
            "[api] region",
            &a.region,
            None,
            defaults::REGION.to_string(),
        )
        .check(ctx, |r| r.parse::<Region>())?
        .value;
    let base_url = || flag("--base-url", overrides.base_url.clone());
    let url = |key: &'static str, file: &Option<Spanned<String>>, default: &str| {
        ctx.setting(key, file, base_url(), default.to_string())
            .check(ctx, |u| check_url(&u))
            .map(|s| s.value)
    };
    let env_name = |key: &'static str, file: &Option<Spanned<String>>, default: &str| {
        ctx.setting(key, file, None, default.to_string())
            .check(ctx, |name| {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    Err("must be an environment variable name (letters, digits, _)")
                } else {
                    Ok(name)
                }
            })
            .map(|s| s.value)
    };
    Ok(ApiSettings {
        region,
        netverify_url: url(
            "[api] netverify_url",
            &a.netverify_url,
            region.netverify_url(),
        )?,
        retrieval_url: url(
            "[api] retrieval_url",
            &a.retrieval_url,
            region.retrieval_url(),
        )?,
        user_agent: user_agent(ctx, a, tree)?,
        token_env: env_name("[api] token_env", &a.token_env, defaults::TOKEN_ENV)?,
        secret_env: env_name("[api] secret_env", &a.secret_env, defaults::SECRET_ENV)?,
    })
}

/// `[api] user_agent`: required, since Jumio requires it to name the business.
fn user_agent(ctx: &Ctx<'_>, a: &RawApi, tree: &DeTable<'_>) -> Result<String, JobError> {
    let Some(ua) = ctx.optional("[api] user_agent", &a.user_agent, None) else {
        return Err(JobError::Invalid {
            location: ctx.location(find_key(tree, &["api"]), false),
            key: "[api] user_agent".into(),
            message: "required: Jumio requires a User-Agent naming your business and \
                      application, e.g. \"Example Corp ComplianceExport/1.0\""
                .into(),
        });
    };
    let ua = ua.check(ctx, |v| {
        let v = v.trim();
        if v.is_empty() {
            Err("must not be empty: Jumio requires it to name your business and application")
        } else if v.chars().any(|c| c.is_control()) {
            Err("must not contain control characters")
        } else {
            Ok(v.to_string())
        }
    })?;
    Ok(ua.value)
}

/// `[input]`; `--input` replaces the path.
fn input_settings(
    ctx: &Ctx<'_>,
    i: &RawInput,
    overrides: &Overrides,
) -> Result<InputSettings, JobError> {
    let path = match ctx.optional(
        "[input] path",
        &i.path,
        flag("--input", overrides.input.clone()),
    ) {
        // An --input path is the user's, relative to the current directory: not re-anchored.
        Some(p) if p.is_flag() => Some(p.value),
        Some(p) => Some(
            p.check(ctx, |v| match v.as_str() {
                "" => Err("must not be empty"),
                "-" => Ok(v),
                _ => {
                    let dir = ctx.file.parent().unwrap_or(Path::new(""));
                    Ok(dir.join(v).to_string_lossy().into_owned())
                }
            })?
            .value,
        ),
        None => None,
    };
    let default_kind = ctx
        .setting(
            "[input] default_kind",
            &i.default_kind,
            None,
            defaults::DEFAULT_KIND.as_str().to_string(),
        )
        .check(ctx, |k| k.parse::<Kind>().map_err(|e| e.to_string()))?
        .value;
    Ok(InputSettings { path, default_kind })
}

/// `[limits]`, divided by the shard count; `--rate` and `--concurrency` replace theirs.
fn limits(ctx: &Ctx<'_>, l: &RawLimits, overrides: &Overrides) -> Result<Limits, JobError> {
    let shard_count = shard_count(overrides)?;
    let requests_per_second = rate(ctx, l, overrides, shard_count)?;
    let burst = ctx
        .setting("[limits] burst", &l.burst, None, defaults::BURST)
        .check(ctx, |b| match b {
            0 => Err("must be at least 1".to_string()),
            // governor multiplies the period (up to 1000 s at MIN_RATE) by the burst in u64
            // nanoseconds: `burst = 4294967295` at 0.2 requests per second overflowed it.
            b if b > defaults::MAX_BURST => Err(format!("must be at most {}", defaults::MAX_BURST)),
            b => Ok(b),
        })?
        .value;
    let concurrency = ctx
        .setting(
            "[limits] concurrency",
            &l.concurrency,
            flag("--concurrency", overrides.concurrency),
            defaults::CONCURRENCY,
        )
        .check(ctx, at_least_one)?
        .value;
    let timeout = timeout(ctx, l)?;
    let max_throttle = seconds(
        ctx,
        "[limits] max_throttle_seconds",
        &l.max_throttle_seconds,
        defaults::MAX_THROTTLE,
    )?;
    let max_outage = seconds(
        ctx,
        "[limits] max_outage_seconds",
        &l.max_outage_seconds,
        defaults::MAX_OUTAGE,
    )?;
    let max_file_bytes = ctx
        .setting(
            "[limits] max_file_bytes",
            &l.max_file_bytes,
            None,
            defaults::MAX_FILE_BYTES,
        )
        .check(ctx, at_least_one)?
        .value;
    let max_list_items = ctx
        .setting(
            "[limits] max_list_items",
            &l.max_list_items,
            None,
            defaults::MAX_LIST_ITEMS,
        )
        .check(ctx, at_least_one)?
        .value;
    let max_retries = ctx.setting(
        "[limits] max_retries",
        &l.max_retries,
        None,
        defaults::MAX_RETRIES,
    );
    Ok(Limits {
        requests_per_second,
        burst: burst.div_ceil(shard_count).max(1),
        concurrency,
        max_retries: max_retries.value,
        max_throttle,
        max_outage,
        timeout,
        max_file_bytes,
        max_list_items,
    })
}

/// `[limits] requests_per_second` or `--rate`, divided by the shard count.
fn rate(
    ctx: &Ctx<'_>,
    l: &RawLimits,
    overrides: &Overrides,
    shard_count: u32,
) -> Result<f64, JobError> {
    let rate = ctx.setting(
        "[limits] requests_per_second",
        &l.requests_per_second,
        flag("--rate", overrides.rate),
        defaults::REQUESTS_PER_SECOND,
    );
    // The flag has no line to point at, so its message quotes the value.
    let got = if rate.is_flag() {
        format!(", got {}", rate.value)
    } else {
        String::new()
    };
    let rate = rate.check(ctx, |r| {
        if r.is_finite() && r > 0.0 {
            Ok(r)
        } else {
            Err(format!("must be a finite number greater than 0{got}"))
        }
    })?;
    per_shard_rate(ctx, rate, shard_count)
}

/// The check of counts that must be at least 1.
fn at_least_one<T: PartialEq + From<u8>>(n: T) -> Result<T, String> {
    if n == T::from(0) {
        Err("must be at least 1".to_string())
    } else {
        Ok(n)
    }
}

/// N of `--shard K/N`, 1 without it. A `Shard` built in code rather than parsed from
/// `--shard` may be out of range.
fn shard_count(overrides: &Overrides) -> Result<u32, JobError> {
    match resolve_shard(overrides)? {
        Some(shard) if shard.count == 0 || shard.index >= shard.count => Err(JobError::Override {
            flag: "--shard",
            message: format!("{shard}: expected K/N with 0 <= K < N (K is 0-based)"),
        }),
        Some(shard) => Ok(shard.count),
        None => Ok(1),
    }
}

/// This shard's share of the rate. The limiter turns it into a period (1/rate) that must fit
/// a Duration and governor's u64 nanoseconds; 5e-324 passed the "finite and > 0" check and
/// then panicked there.
fn per_shard_rate(ctx: &Ctx<'_>, rate: Setting<f64>, shard_count: u32) -> Result<f64, JobError> {
    let per_shard = rate.value / f64::from(shard_count);
    if per_shard >= defaults::MIN_RATE {
        return Ok(per_shard);
    }
    let message = format!(
        "must be at least {} per shard (one request per {} s), got {} over {shard_count} shard(s)",
        defaults::MIN_RATE,
        1.0 / defaults::MIN_RATE,
        rate.value
    );
    Err(match rate.origin {
        // The default rate is fine on its own: the shard count made it too small.
        Origin::Default(_) => JobError::Override {
            flag: "--shard",
            message,
        },
        origin => ctx.blame(&origin, message),
    })
}

/// `[limits] timeout_seconds`.
fn timeout(ctx: &Ctx<'_>, l: &RawLimits) -> Result<Duration, JobError> {
    seconds(
        ctx,
        "[limits] timeout_seconds",
        &l.timeout_seconds,
        defaults::TIMEOUT,
    )
}

/// A duration in seconds, greater than 0 and at most [`defaults::MAX_TIMEOUT_SECONDS`].
fn seconds(
    ctx: &Ctx<'_>,
    key: &'static str,
    value: &Option<Spanned<f64>>,
    default: Duration,
) -> Result<Duration, JobError> {
    let Some(t) = ctx.optional(key, value, None) else {
        return Ok(default);
    };
    let t = t.check(ctx, |v| {
        // Duration::from_secs_f64 panics on huge values. A value under a nanosecond becomes a
        // zero timeout, which fails every request: refused like 0.
        if !(v.is_finite() && v > 0.0 && v <= defaults::MAX_TIMEOUT_SECONDS)
            || Duration::from_secs_f64(v).is_zero()
        {
            Err(format!(
                "must be greater than 0 and at most {}",
                defaults::MAX_TIMEOUT_SECONDS
            ))
        } else {
            Ok(Duration::from_secs_f64(v))
        }
    })?;
    Ok(t.value)
}

/// `[polling]`.
fn polling(ctx: &Ctx<'_>, p: &RawPolling) -> Result<Polling, JobError> {
    let schedule = match &p.schedule_seconds {
        Some(s) => check_schedule(ctx, s)?,
        None => defaults::SCHEDULE_SECONDS
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
    };
    Ok(Polling {
        schedule,
        daily_retry: p.daily_retry.unwrap_or(defaults::DAILY_RETRY),
    })
}

/// `[fetch]`: switches only, nothing to check.
fn fetch_settings(f: &RawFetch) -> FetchSettings {
    let d = defaults::FETCH;
    FetchSettings {
        images: f.images.unwrap_or(d.images),
        liveness_images: f.liveness_images.unwrap_or(d.liveness_images),
        original_documents: f.original_documents.unwrap_or(d.original_documents),
        unmasked_card_images: f.unmasked_card_images.unwrap_or(d.unmasked_card_images),
    }
}

/// `[output]`; `--out` replaces the directory.
fn output_settings(
    ctx: &Ctx<'_>,
    o: &RawOutput,
    overrides: &Overrides,
) -> Result<OutputSettings, JobError> {
    let dir = output_dir(ctx, o, overrides)?;
    let archive_key_env = ctx
        .setting(
            "[output] archive_key_env",
            &o.archive_key_env,
            None,
            defaults::ARCHIVE_KEY_ENV.into(),
        )
        .check(ctx, |v| match v.trim() {
            "" => Err("must name an environment variable"),
            v => Ok(v.to_string()),
        })?
        .value;
    let pii = ctx
        .setting("[output] pii", &o.pii, None, "full".to_string())
        .check(ctx, |p| p.parse::<crate::flatten::pii::Pii>())?;
    let pii_key_env = ctx
        .optional("[output] pii_key_env", &o.pii_key_env, None)
        .map(|v| v.check(ctx, env_var_name))
        .transpose()?
        .map(|s| s.value);
    if pii.value == crate::flatten::pii::Pii::Pseudonymised && pii_key_env.is_none() {
        return Err(ctx.blame(
            &pii.origin,
            "\"pseudonymised\" needs [output] pii_key_env, the environment variable holding its HMAC key",
        ));
    }
    let pii = pii.value;
    let encrypt_archives = o.encrypt_archives.unwrap_or(defaults::ENCRYPT_ARCHIVES);
    let age_recipients = age_recipients(ctx, &o.age_recipients, encrypt_archives)?;
    let write = defaults::WRITE_TABLES_AND_ARCHIVES;
    Ok(OutputSettings {
        dir,
        csv: o.csv.unwrap_or(write),
        parquet: o.parquet.unwrap_or(write),
        archives: o.archives.unwrap_or(write),
        encrypt_archives,
        archive_key_env,
        age_recipients,
        file_mode: mode(
            ctx,
            "[output] file_mode",
            &o.file_mode,
            defaults::FILE_MODE,
            0o600,
        )?,
        dir_mode: mode(
            ctx,
            "[output] dir_mode",
            &o.dir_mode,
            defaults::DIR_MODE,
            0o700,
        )?,
        csv_neutralise_formulas: o
            .csv_neutralise_formulas
            .unwrap_or(defaults::CSV_NEUTRALISE_FORMULAS),
        signing_key_env: ctx
            .optional("[output] signing_key_env", &o.signing_key_env, None)
            .map(|v| v.check(ctx, env_var_name))
            .transpose()?
            .map(|s| s.value),
        pii,
        pii_key_env,
        store: crate::store::StoreSettings {
            endpoint: o.endpoint.clone(),
            region: o.region.clone(),
            allow_http: o.allow_http.unwrap_or(false),
            sse: o.sse.clone(),
            sse_kms_key_id: o.sse_kms_key_id.clone(),
        },
    })
}

/// `[output] age_recipients`: every entry an age or SSH public key (an error names the index,
/// never the text); not together with `encrypt_archives` (one archive mode per dataset).
fn age_recipients(
    ctx: &Ctx<'_>,
    file: &Option<Spanned<Vec<Spanned<String>>>>,
    encrypt_archives: bool,
) -> Result<Vec<String>, JobError> {
    const KEY: &str = "[output] age_recipients";
    let Some(list) = file else {
        return Ok(Vec::new());
    };
    if list.get_ref().is_empty() {
        return Err(ctx.invalid(
            list.span(),
            KEY,
            "is empty: give at least one age (age1…) or SSH (ssh-ed25519 …) public key, or leave the key out",
        ));
    }
    if encrypt_archives {
        return Err(ctx.invalid(
            list.span(),
            KEY,
            "cannot be combined with [output] encrypt_archives = true: a dataset's archives are either encrypted with age or ZIP AES; choose one",
        ));
    }
    for (index, entry) in list.get_ref().iter().enumerate() {
        if let Err(reason) = crate::output::archive::age::parse_recipient(entry.get_ref()) {
            return Err(ctx.invalid(
                entry.span(),
                KEY,
                format!("entry {index} (counting from 0) is {reason}"),
            ));
        }
    }
    Ok(list
        .get_ref()
        .iter()
        .map(|e| e.get_ref().trim().to_string())
        .collect())
}

/// An environment variable's name: letters, digits, `_`.
fn env_var_name(name: String) -> Result<String, &'static str> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Err("must be an environment variable name (letters, digits, _)")
    } else {
        Ok(name)
    }
}

/// `[output] dir` or `--out`.
fn output_dir(ctx: &Ctx<'_>, o: &RawOutput, overrides: &Overrides) -> Result<PathBuf, JobError> {
    let file = (o.dir.as_ref()).map(|d| Spanned::new(d.span(), PathBuf::from(d.get_ref())));
    let dir = ctx.setting(
        "[output] dir",
        &file,
        flag("--out", overrides.out.clone()),
        PathBuf::from(defaults::OUTPUT_DIR),
    );
    // `--out` is taken as given (an empty one fails where the directory is created).
    if dir.is_flag() {
        return Ok(dir.value);
    }
    let dir = dir.check(ctx, |d| {
        if d.to_string_lossy().trim().is_empty() {
            Err("must not be empty")
        } else {
            Ok(d)
        }
    })?;
    Ok(dir.value)
}

/// A permission mode, as octal text (`"0600"`) so it reads as it does in chmod. The owner
/// must keep the `owner` bits (read and write), or the tool could not resume its own output.
fn mode(
    ctx: &Ctx<'_>,
    key: &'static str,
    file: &Option<Spanned<String>>,
    default: u32,
    owner: u32,
) -> Result<u32, JobError> {
    let Some(v) = ctx.optional(key, file, None) else {
        return Ok(default);
    };
    let checked = v.check(ctx, |v| {
        let text = v.trim();
        let parsed = u32::from_str_radix(text.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777);
        match parsed {
            Some(m) if m & 0o022 != 0 => Err(format!(
                "{text:?} lets group or others write: whoever could write the export's files \
                 could replace personal data or plant links (use e.g. \"0640\" or \"0750\")"
            )),
            Some(m) if m & owner == owner => Ok(m),
            Some(_) => Err(
                "must keep the owner's permissions (the tool reads back what it wrote)".to_string(),
            ),
            None => Err(format!("{text:?} is not an octal mode such as \"0600\"")),
        }
    })?;
    Ok(checked.value)
}

/// `[polling] schedule_seconds`: offsets from the first status call, strictly increasing.
fn check_schedule(
    ctx: &Ctx<'_>,
    s: &Spanned<Vec<Spanned<f64>>>,
) -> Result<Vec<Duration>, JobError> {
    const KEY: &str = "[polling] schedule_seconds";
    if s.get_ref().is_empty() {
        return Err(ctx.invalid(
            s.span(),
            KEY,
            format!(
                "must list at least one offset (the guide recommends {:?})",
                defaults::SCHEDULE_SECONDS
            ),
        ));
    }
    if s.get_ref().len() > defaults::MAX_SCHEDULE_ENTRIES {
        return Err(ctx.invalid(
            s.span(),
            KEY,
            format!(
                "lists {} offsets: the guide allows at most {} consecutive retrieval attempts \
                 (one status call per offset, the first included), then one a day",
                s.get_ref().len(),
                defaults::MAX_SCHEDULE_ENTRIES
            ),
        ));
    }
    let mut out = Vec::with_capacity(s.get_ref().len());
    let mut previous: Option<f64> = None;
    for (i, entry) in s.get_ref().iter().enumerate() {
        let v = *entry.get_ref();
        let out_of_range = if !v.is_finite() || v < 0.0 {
            Some("finite and not negative".to_string())
        } else if v > defaults::MAX_SCHEDULE_SECONDS {
            Some(format!(
                "at most {} seconds",
                defaults::MAX_SCHEDULE_SECONDS
            ))
        } else {
            None
        };
        if let Some(rule) = out_of_range {
            let message = format!("entry {} is {v}: offsets must be {rule}", i + 1);
            return Err(ctx.invalid(entry.span(), KEY, message));
        }
        // Compared as the Durations the poller uses: 1e-10 and 2e-10 are increasing as
        // floats but both round to zero nanoseconds.
        let offset = Duration::from_secs_f64(v);
        if let Some(p) = previous
            && (v <= p || out.last().is_some_and(|last| offset <= *last))
        {
            return Err(ctx.invalid(
                entry.span(),
                KEY,
                format!(
                    "must be strictly increasing (offsets from the first status call), \
                     but entry {} ({v}) is not greater than entry {} ({p})",
                    i + 1,
                    i
                ),
            ));
        }
        previous = Some(v);
        out.push(offset);
    }
    Ok(out)
}

/// Parses a base URL and refuses what must never carry credentials or be ambiguous.
fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must have a host".into());
    }
    // Never echo the URL itself: userinfo may hold a password.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not contain a user name or password: credentials come only from the environment"
                .into(),
        );
    }
    if url.query().is_some() {
        return Err("must not contain a query (`?…`)".into());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment (`#…`)".into());
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(
            "plain http sends the API credentials in cleartext: use https \
             (http is accepted only for a loopback address such as the simulator's 127.0.0.1)"
                .into(),
        );
    }
    Ok(url)
}

/// Whether `url`'s host is a loopback address (`127.0.0.0/8`, `::1`) or `localhost`: the only
/// hosts plain HTTP may carry credentials to (the simulator), since the traffic never leaves
/// the machine.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // The parser has normalised IPv4 forms (`127.1`, `0x7f.1`) and brackets IPv6.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

// ---- raw file structure -------------------------------------------------------------

/// The accepted keys of a job-file table, taken from its raw struct.
trait RawTable {
    /// The keys, in declaration order (the order error messages list them in).
    const KEYS: &'static [&'static str];
}

/// Declares the raw serde struct of one job-file table and, from the same field list, its
/// [`RawTable::KEYS`]: serde refuses every other key (`deny_unknown_fields`) and the error
/// lists the accepted ones, so the check and the list cannot drift apart.
macro_rules! raw_table {
    ($(#[$doc:meta])* struct $name:ident { $($field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct $name {
            $($field: $ty,)*
        }

        impl RawTable for $name {
            const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}

raw_table! {
    /// The whole file: one field per table.
    struct RawJob {
        api: RawApi,
        input: RawInput,
        limits: RawLimits,
        polling: RawPolling,
        fetch: RawFetch,
        output: RawOutput,
    }
}

raw_table! {
    /// `[api]`.
    struct RawApi {
        region: Option<Spanned<String>>,
        netverify_url: Option<Spanned<String>>,
        retrieval_url: Option<Spanned<String>>,
        user_agent: Option<Spanned<String>>,
        token_env: Option<Spanned<String>>,
        secret_env: Option<Spanned<String>>,
    }
}

raw_table! {
    /// `[input]`.
    struct RawInput {
        path: Option<Spanned<String>>,
        default_kind: Option<Spanned<String>>,
    }
}

raw_table! {
    /// `[limits]`.
    struct RawLimits {
        requests_per_second: Option<Spanned<f64>>,
        burst: Option<Spanned<u32>>,
        concurrency: Option<Spanned<usize>>,
        max_retries: Option<Spanned<u32>>,
        max_throttle_seconds: Option<Spanned<f64>>,
        max_outage_seconds: Option<Spanned<f64>>,
        timeout_seconds: Option<Spanned<f64>>,
        max_file_bytes: Option<Spanned<u64>>,
        max_list_items: Option<Spanned<usize>>,
    }
}

raw_table! {
    /// `[polling]`.
    struct RawPolling {
        schedule_seconds: Option<Spanned<Vec<Spanned<f64>>>>,
        daily_retry: Option<bool>,
    }
}

raw_table! {
    /// `[fetch]`.
    struct RawFetch {
        images: Option<bool>,
        liveness_images: Option<bool>,
        original_documents: Option<bool>,
        unmasked_card_images: Option<bool>,
    }
}

raw_table! {
    /// `[output]`.
    struct RawOutput {
        dir: Option<Spanned<String>>,
        csv: Option<bool>,
        parquet: Option<bool>,
        archives: Option<bool>,
        encrypt_archives: Option<bool>,
        archive_key_env: Option<Spanned<String>>,
        age_recipients: Option<Spanned<Vec<Spanned<String>>>>,
        file_mode: Option<Spanned<String>>,
        dir_mode: Option<Spanned<String>>,
        csv_neutralise_formulas: Option<bool>,
        signing_key_env: Option<Spanned<String>>,
        pii: Option<Spanned<String>>,
        pii_key_env: Option<Spanned<String>>,
        endpoint: Option<String>,
        region: Option<String>,
        allow_http: Option<bool>,
        sse: Option<String>,
        sse_kms_key_id: Option<String>,
    }
}

/// Every table with its keys: what an unknown-key error lists. Its names are
/// [`RawJob`]'s fields (a unit test holds them equal).
const SECTIONS: &[(&str, &[&str])] = &[
    ("api", RawApi::KEYS),
    ("input", RawInput::KEYS),
    ("limits", RawLimits::KEYS),
    ("polling", RawPolling::KEYS),
    ("fetch", RawFetch::KEYS),
    ("output", RawOutput::KEYS),
];

/// Keys someone might use to put credentials in the file; they get a pointed hint.
const CREDENTIAL_KEYS: &[&str] = &[
    "token",
    "secret",
    "api_token",
    "api_secret",
    "password",
    "username",
    "user",
    "credentials",
];

// ---- locating problems --------------------------------------------------------------

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn location(&self, span: Option<Range<usize>>, with_column: bool) -> Location {
        let (line, column) = match span {
            Some(span) => {
                let at = span.start.min(self.text.len());
                let before = self.text.get(..at).unwrap_or(self.text);
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let column = before[line_start..].chars().count() + 1;
                let (line, column) = (to_u32(line), to_u32(column));
                (Some(line), with_column.then_some(column))
            }
            None => (None, None),
        };
        Location {
            file: self.file.to_path_buf(),
            line,
            column,
        }
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> JobError {
        JobError::Invalid {
            location: self.location(Some(span), false),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Turns a deserialization error into one that names the table and key.
    fn serde_error(&self, e: &toml::de::Error, tree: &DeTable<'_>) -> JobError {
        let message = e.message();
        let path = e
            .span()
            .and_then(|span| key_path_at(tree, span.start))
            .unwrap_or_default();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let key = rest.split('`').next().unwrap_or_default();
            return self.unknown_key(e.span(), key, &path);
        }
        let key = match path.as_slice() {
            [] => "job file".to_string(),
            [top] => format!("`{top}`"),
            [table, rest @ ..] => format!("[{table}] {}", rest.join(".")),
        };
        // serde names our private raw structs ("expected struct RawApi"); the user wrote
        // a TOML value where a table belongs.
        let message = match message.find("expected struct Raw") {
            Some(i) => format!("{}expected a table", &message[..i]),
            None => message.to_string(),
        };
        JobError::Invalid {
            location: self.location(e.span(), false),
            key,
            message,
        }
    }

    /// `key` is not in the table at `path` (which may end with the key itself): name the
    /// table and list the keys it accepts, or say where credentials go instead.
    fn unknown_key(&self, span: Option<Range<usize>>, key: &str, path: &[String]) -> JobError {
        let table_path = match path.split_last() {
            Some((last, table)) if last == key => table,
            _ => path,
        };
        let (table, known) = match table_path.first() {
            None => ("the top level".to_string(), RawJob::KEYS),
            Some(t) => (format!("[{t}]"), section_keys(t)),
        };
        let hint = if CREDENTIAL_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
            format!(
                "credentials are never read from the job file: set the environment variables \
                 named by [api] token_env and secret_env ({} and {} by default)",
                defaults::TOKEN_ENV,
                defaults::SECRET_ENV
            )
        } else {
            let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            format!("expected one of {}", list.join(", "))
        };
        JobError::UnknownKey {
            location: self.location(span, false),
            key: key.to_string(),
            table,
            hint,
        }
    }
}

/// The keys `[table]` accepts (none for a table the file format does not have).
fn section_keys(table: &str) -> &'static [&'static str] {
    SECTIONS
        .iter()
        .find(|(name, _)| *name == table)
        .map_or(&[], |(_, keys)| keys)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The key path (`["limits", "concurrency"]`) whose key or value covers byte `offset`,
/// the deepest one when several do.
fn key_path_at(table: &DeTable<'_>, offset: usize) -> Option<Vec<String>> {
    fn walk(table: &DeTable<'_>, offset: usize, prefix: &mut Vec<String>) -> Option<Vec<String>> {
        for (k, v) in table.iter() {
            prefix.push(k.get_ref().to_string());
            if let Some(found) = walk_value(v.get_ref(), offset, prefix) {
                return Some(found);
            }
            let covers = |r: Range<usize>| r.start <= offset && offset < r.end.max(r.start + 1);
            if covers(k.span()) || covers(v.span()) {
                return Some(prefix.clone());
            }
            prefix.pop();
        }
        None
    }
    fn walk_value(
        value: &DeValue<'_>,
        offset: usize,
        prefix: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match value {
            DeValue::Table(t) => walk(t, offset, prefix),
            DeValue::Array(items) => items
                .iter()
                .find_map(|item| walk_value(item.get_ref(), offset, prefix)),
            _ => None,
        }
    }
    walk(table, offset, &mut Vec::new())
}

/// The span of the key at `path`, for problems about a key that is missing from a table.
fn find_key(table: &DeTable<'_>, path: &[&str]) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    let (k, v) = table.iter().find(|(k, _)| k.get_ref() == first)?;
    if rest.is_empty() {
        return Some(k.span());
    }
    match v.get_ref() {
        DeValue::Table(t) => find_key(t, rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[api]\nuser_agent = \"Test Corp Export/1.0\"\n";

    fn parse_ok(text: &str) -> Job {
        parse(text, Path::new("jobs/x.toml"), &Overrides::default()).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("jobs/x.toml"), &Overrides::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn every_default_matches_the_spec_sample() {
        let job = parse_ok(MINIMAL);
        assert_eq!(job.api.region, Region::Us);
        assert_eq!(job.api.netverify_url.as_str(), "https://netverify.com/");
        assert_eq!(
            job.api.retrieval_url.as_str(),
            "https://retrieval.netverify.com/"
        );
        assert_eq!(job.api.user_agent, "Test Corp Export/1.0");
        assert_eq!(job.api.token_env, "JUMIO_API_TOKEN");
        assert_eq!(job.api.secret_env, "JUMIO_API_SECRET");
        assert_eq!(job.input.path, None);
        assert_eq!(job.input.default_kind, Kind::Netverify);
        assert_eq!(job.limits.requests_per_second, 10.0);
        assert_eq!(job.limits.burst, 10);
        assert_eq!(job.limits.concurrency, 16);
        assert_eq!(job.limits.max_retries, 6);
        assert_eq!(job.limits.max_throttle, Duration::from_secs(600));
        assert_eq!(job.limits.timeout, Duration::from_secs(60));
        assert_eq!(job.limits.max_file_bytes, 52_428_800);
        assert_eq!(job.limits.max_list_items, 100);
        let secs: Vec<u64> = job.polling.schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [40, 60, 100, 160, 240, 340, 460, 600, 760, 940]);
        assert!(job.polling.daily_retry);
        assert_eq!(
            job.fetch,
            FetchSettings {
                images: true,
                liveness_images: true,
                original_documents: true,
                unmasked_card_images: false
            }
        );
        assert_eq!(job.output.dir, PathBuf::from("export"));
        assert!(job.output.csv && job.output.parquet && job.output.archives);
        assert_eq!(job.shard, None);
        assert_eq!(job.sha256, hex::encode(Sha256::digest(MINIMAL.as_bytes())));
    }

    #[test]
    fn region_sets_default_hosts() {
        for (region, nv, rt) in [
            (
                "eu",
                "https://lon.netverify.com/",
                "https://retrieval.lon.netverify.com/",
            ),
            (
                "sgp",
                "https://core-sgp.jumio.com/",
                "https://retrieval.core-sgp.jumio.com/",
            ),
        ] {
            let job = parse_ok(&format!("{MINIMAL}region = \"{region}\"\n"));
            assert_eq!(job.api.netverify_url.as_str(), nv);
            assert_eq!(job.api.retrieval_url.as_str(), rt);
        }
    }

    #[test]
    fn semantic_error_names_file_line_and_key() {
        let text = format!("{MINIMAL}\n[limits]\nburst = 3\nconcurrency = 0\n");
        assert_eq!(
            parse_err(&text),
            "jobs/x.toml:6: [limits] concurrency: must be at least 1"
        );
    }

    #[test]
    fn typo_names_key_table_and_alternatives() {
        let text = format!("{MINIMAL}[limits]\nconcurency = 4\n");
        let msg = parse_err(&text);
        assert!(
            msg.starts_with("jobs/x.toml:4: unknown key `concurency` in [limits] (expected one of `requests_per_second`, `burst`, `concurrency`"),
            "{msg}"
        );
    }

    #[test]
    fn type_error_names_key() {
        let text = format!("{MINIMAL}[limits]\nconcurrency = \"many\"\n");
        let msg = parse_err(&text);
        assert!(
            msg.starts_with("jobs/x.toml:4: [limits] concurrency: invalid type"),
            "{msg}"
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let msg = parse_err("[api]\nuser_agent = \"x\"\nregion = \n");
        assert!(msg.starts_with("jobs/x.toml:3:"), "{msg}");
        assert!(msg.contains("invalid TOML"), "{msg}");
    }

    #[test]
    fn shard_parses_and_rejects() {
        assert_eq!(
            "0/4".parse::<Shard>().unwrap(),
            Shard { index: 0, count: 4 }
        );
        assert_eq!(
            "3/4".parse::<Shard>().unwrap(),
            Shard { index: 3, count: 4 }
        );
        for bad in ["4/4", "1/0", "0/0", "x/2", "2", "-1/3", "1/-3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert!(
            "4/4"
                .parse::<Shard>()
                .unwrap_err()
                .to_string()
                .contains("0-based")
        );
    }

    /// serde's own list of the fields a raw struct has, from its unknown-field error.
    fn serde_fields(section: Option<&str>) -> Vec<String> {
        let text = match section {
            Some(t) => format!("[{t}]\nno_such_key = 1\n"),
            None => "no_such_key = 1\n".to_string(),
        };
        let e = toml::from_str::<RawJob>(&text).err().expect("refused");
        let message = e.message().to_string();
        let (_, expected) = message
            .split_once("expected")
            .expect("serde lists the fields");
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_listed_key_is_accepted_and_any_other_refused() {
        let tables: Vec<&str> = SECTIONS.iter().map(|(t, _)| *t).collect();
        assert_eq!(tables, RawJob::KEYS, "SECTIONS names every table of RawJob");
        assert_eq!(serde_fields(None), RawJob::KEYS);
        for (table, keys) in SECTIONS {
            // The list is the struct's, field for field.
            assert_eq!(serde_fields(Some(table)), *keys, "[{table}]");
            let expected: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            let expected = format!("(expected one of {})", expected.join(", "));
            for key in *keys {
                // A wrong type is fine here: only an unknown-key error would mean refused.
                let text = format!("[{table}]\n{key} = {{ x = 1 }}\n");
                let e = parse(&text, Path::new("j.toml"), &Overrides::default()).unwrap_err();
                assert!(
                    !matches!(e, JobError::UnknownKey { .. }),
                    "[{table}] {key} refused: {e}"
                );
                // Anything else, however close, is refused with the table's keys listed.
                for other in [format!("{key}s"), format!("_{key}"), key.to_uppercase()] {
                    let text = format!("[{table}]\n{other} = 1\n");
                    let msg = parse_err(&text);
                    assert_eq!(
                        msg,
                        format!("jobs/x.toml:2: unknown key `{other}` in [{table}] {expected}"),
                    );
                }
            }
        }
        let msg = parse_err("[apis]\n");
        assert!(
            msg.starts_with("jobs/x.toml:1: unknown key `apis` in the top level (expected one of `api`, `input`, `limits`, `polling`, `fetch`, `output`)"),
            "{msg}"
        );
    }

    #[test]
    fn a_setting_is_the_flag_else_the_file_else_the_default() {
        let text = "[limits]\nconcurrency = 4\n";
        let ctx = Ctx {
            file: Path::new("j.toml"),
            text,
        };
        let raw: RawJob = toml::from_str(text).unwrap();
        let c = &raw.limits.concurrency;
        let flagged = ctx.setting(
            "[limits] concurrency",
            c,
            flag("--concurrency", Some(9)),
            16,
        );
        assert_eq!(
            (flagged.value, flagged.origin),
            (9, Origin::Flag("--concurrency"))
        );
        let filed = ctx.setting("[limits] concurrency", c, flag("--concurrency", None), 16);
        assert_eq!(filed.value, 4);
        assert!(matches!(
            filed.origin,
            Origin::File("[limits] concurrency", _)
        ));
        let e = filed.check(&ctx, |_| Err::<usize, _>("no")).unwrap_err();
        assert_eq!(e.to_string(), "j.toml:2: [limits] concurrency: no");
        let none = ctx.setting("[limits] burst", &raw.limits.burst, None, 10u32);
        assert_eq!(
            (none.value, none.origin),
            (10, Origin::Default("[limits] burst"))
        );
        let e = ctx
            .setting(
                "[limits] concurrency",
                c,
                flag("--concurrency", Some(0)),
                16,
            )
            .check(&ctx, at_least_one)
            .unwrap_err();
        assert_eq!(e.to_string(), "--concurrency: must be at least 1");
    }

    #[test]
    fn the_rate_blames_the_flag_the_line_or_the_shard_count() {
        let flagged = |rate: f64, count: u32| Overrides {
            rate: Some(rate),
            shard: Some(Shard { index: 0, count }.into()),
            ..Overrides::default()
        };
        let err = |text: &str, o: &Overrides| {
            parse(text, Path::new("jobs/x.toml"), o)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(MINIMAL, &flagged(-1.0, 1)),
            "--rate: must be a finite number greater than 0, got -1"
        );
        let text = format!("{MINIMAL}[limits]\nrequests_per_second = -1\n");
        assert_eq!(
            err(&text, &Overrides::default()),
            "jobs/x.toml:4: [limits] requests_per_second: must be a finite number greater than 0"
        );
        assert!(
            err(MINIMAL, &flagged(1.0, 10_000))
                .starts_with("--rate: must be at least 0.001 per shard")
        );
        let by_shard = Overrides {
            shard: Some(
                Shard {
                    index: 0,
                    count: 100_000,
                }
                .into(),
            ),
            ..Overrides::default()
        };
        assert_eq!(
            err(MINIMAL, &by_shard),
            "--shard: must be at least 0.001 per shard (one request per 1000 s), got 10 over 100000 shard(s)"
        );
    }

    #[test]
    fn defaults_are_what_the_limiter_and_retry_policy_use() {
        let job = parse_ok(MINIMAL);
        assert_eq!(job.limits.max_retries, defaults::MAX_RETRIES);
        assert_eq!(
            crate::api::retry::RetryPolicy::default().max_retries,
            defaults::MAX_RETRIES
        );
        assert_eq!(job.limits.max_throttle, defaults::MAX_THROTTLE);
        assert_eq!(
            crate::api::retry::RetryPolicy::default().max_throttle,
            defaults::MAX_THROTTLE
        );
        let slowest = crate::api::RateLimiter::new(defaults::MIN_RATE / 10.0, u32::MAX);
        assert_eq!(slowest.configured_rate(), defaults::MIN_RATE);
    }

    #[test]
    fn basic_header_is_rfc7617() {
        // RFC 7617's own example.
        let c = Credentials::new("Aladdin", "open sesame");
        assert_eq!(c.basic_header_value(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(format!("{c:?}"), "<redacted>");
        assert_eq!(format!("{c}"), "<redacted>");
    }
}
