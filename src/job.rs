//! Job file stage: a TOML job file (plus command-line overrides) → a validated [`Job`].
//!
//! Two phases: the text is deserialized into raw structs that mirror the file
//! (`#[serde(deny_unknown_fields)]`, every value [`toml::Spanned`] so it knows its line),
//! then every value is checked and turned into the typed settings the other stages use.
//! Every error names the file, the line and the key (`jobs/x.toml:7: [limits]
//! concurrency: must be at least 1`).
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
/// `--rate`, `--concurrency`, `--shard`). `None` keeps the job file's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--input`: a path (relative to the current directory) or `-` for standard input.
    pub input: Option<String>,
    /// `--out`: the output directory.
    pub out: Option<PathBuf>,
    /// `--base-url`: sets both `netverify_url` and `retrieval_url`.
    pub base_url: Option<String>,
    /// `--rate`: requests per second for the whole job (before division by the shard count).
    pub rate: Option<f64>,
    /// `--concurrency`: requests in flight at once.
    pub concurrency: Option<usize>,
    /// `--shard K/N`.
    pub shard: Option<Shard>,
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
    /// Retries of one request after 429, 5xx or a network error.
    pub max_retries: u32,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Larger response bodies are refused (`TOO_LARGE`), not buffered.
    pub max_file_bytes: u64,
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
    /// Permissions of every file written, whatever the umask (default `0600`).
    pub file_mode: u32,
    /// Permissions of every directory created, whatever the umask (default `0700`).
    pub dir_mode: u32,
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
/// relative `[input] path`), applying `overrides`.
pub fn parse(text: &str, path: &Path, overrides: &Overrides) -> Result<Job, JobError> {
    let ctx = Ctx { file: path, text };
    let tree = DeTable::parse(text).map_err(|e| JobError::Syntax {
        location: ctx.location(e.span(), true),
        message: e.message().to_string(),
    })?;
    let raw: RawJob = toml::from_str(text).map_err(|e| ctx.serde_error(&e, tree.get_ref()))?;
    let key_span = |path: &[&str]| find_key(tree.get_ref(), path);

    let sha256 = hex::encode(Sha256::digest(text.as_bytes()));

    // [api]
    let a = &raw.api;
    let region = match &a.region {
        Some(r) => r
            .get_ref()
            .parse::<Region>()
            .map_err(|m| ctx.invalid(r.span(), "[api] region", m))?,
        None => Region::Us,
    };
    let (netverify_url, retrieval_url) = match &overrides.base_url {
        Some(base) => {
            let url = check_url(base).map_err(|message| JobError::Override {
                flag: "--base-url",
                message,
            })?;
            (url.clone(), url)
        }
        None => {
            let url = |v: &Option<Spanned<String>>, key: &str, default: &str| match v {
                Some(s) => check_url(s.get_ref()).map_err(|m| ctx.invalid(s.span(), key, m)),
                None => Ok(Url::parse(default).expect("built-in URL parses")),
            };
            (
                url(
                    &a.netverify_url,
                    "[api] netverify_url",
                    region.netverify_url(),
                )?,
                url(
                    &a.retrieval_url,
                    "[api] retrieval_url",
                    region.retrieval_url(),
                )?,
            )
        }
    };
    let user_agent = match &a.user_agent {
        Some(ua) => {
            let v = ua.get_ref().trim();
            if v.is_empty() {
                return Err(ctx.invalid(
                    ua.span(),
                    "[api] user_agent",
                    "must not be empty: Jumio requires it to name your business and application",
                ));
            }
            if v.chars().any(|c| c.is_control()) {
                return Err(ctx.invalid(
                    ua.span(),
                    "[api] user_agent",
                    "must not contain control characters",
                ));
            }
            v.to_string()
        }
        None => {
            return Err(JobError::Invalid {
                location: ctx.location(key_span(&["api"]), false),
                key: "[api] user_agent".into(),
                message: "required: Jumio requires a User-Agent naming your business and \
                          application, e.g. \"Example Corp ComplianceExport/1.0\""
                    .into(),
            });
        }
    };
    let env_name = |v: &Option<Spanned<String>>, key: &str, default: &str| match v {
        Some(s) => {
            let name = s.get_ref();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                Err(ctx.invalid(
                    s.span(),
                    key,
                    "must be an environment variable name (letters, digits, _)",
                ))
            } else {
                Ok(name.clone())
            }
        }
        None => Ok(default.to_string()),
    };
    let api = ApiSettings {
        region,
        netverify_url,
        retrieval_url,
        user_agent,
        token_env: env_name(&a.token_env, "[api] token_env", "JUMIO_API_TOKEN")?,
        secret_env: env_name(&a.secret_env, "[api] secret_env", "JUMIO_API_SECRET")?,
    };

    // [input]
    let input_path = match (&overrides.input, &raw.input.path) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(p)) => {
            let v = p.get_ref();
            if v.is_empty() {
                return Err(ctx.invalid(p.span(), "[input] path", "must not be empty"));
            }
            if v == "-" {
                Some(v.clone())
            } else {
                let dir = path.parent().unwrap_or(Path::new(""));
                Some(dir.join(v).to_string_lossy().into_owned())
            }
        }
        (None, None) => None,
    };
    let default_kind = match &raw.input.default_kind {
        Some(k) => k
            .get_ref()
            .parse::<Kind>()
            .map_err(|e| ctx.invalid(k.span(), "[input] default_kind", e.to_string()))?,
        None => Kind::Netverify,
    };
    let input = InputSettings {
        path: input_path,
        default_kind,
    };

    // [limits]
    let l = &raw.limits;
    // A Shard built in code rather than parsed from `--shard` may be out of range.
    if let Some(shard) = overrides.shard
        && (shard.count == 0 || shard.index >= shard.count)
    {
        return Err(JobError::Override {
            flag: "--shard",
            message: format!("{shard}: expected K/N with 0 <= K < N (K is 0-based)"),
        });
    }
    let shard_count = overrides.shard.map_or(1, |s| s.count);
    let rate = match (overrides.rate, &l.requests_per_second) {
        (Some(r), _) => {
            if !(r.is_finite() && r > 0.0) {
                return Err(JobError::Override {
                    flag: "--rate",
                    message: format!("must be a finite number greater than 0, got {r}"),
                });
            }
            r
        }
        (None, Some(r)) => {
            let v = *r.get_ref();
            if !(v.is_finite() && v > 0.0) {
                return Err(ctx.invalid(
                    r.span(),
                    "[limits] requests_per_second",
                    "must be a finite number greater than 0",
                ));
            }
            v
        }
        (None, None) => 10.0,
    };
    // The limiter turns the per-shard rate into a period (1/rate) that must fit a
    // Duration and governor's u64 nanoseconds; 5e-324 passed the check above and then
    // panicked there. One request per 1000 s per shard is slower than any real export.
    if rate / f64::from(shard_count) < MIN_RATE {
        let message = format!(
            "must be at least {MIN_RATE} per shard (one request per {} s), got {rate} over \
             {shard_count} shard(s)",
            1.0 / MIN_RATE
        );
        return Err(match (overrides.rate, &l.requests_per_second) {
            (Some(_), _) => JobError::Override {
                flag: "--rate",
                message,
            },
            (None, Some(r)) => ctx.invalid(r.span(), "[limits] requests_per_second", message),
            (None, None) => JobError::Override {
                flag: "--shard",
                message,
            },
        });
    }
    let burst = match &l.burst {
        Some(b) if *b.get_ref() == 0 => {
            return Err(ctx.invalid(b.span(), "[limits] burst", "must be at least 1"));
        }
        // governor multiplies the period (up to 1000 s at MIN_RATE) by the burst in u64
        // nanoseconds: `burst = 4294967295` at 0.2 requests per second overflowed it.
        Some(b) if *b.get_ref() > MAX_BURST => {
            return Err(ctx.invalid(
                b.span(),
                "[limits] burst",
                format!("must be at most {MAX_BURST}"),
            ));
        }
        Some(b) => *b.get_ref(),
        None => 10,
    };
    let concurrency = match (overrides.concurrency, &l.concurrency) {
        (Some(0), _) => {
            return Err(JobError::Override {
                flag: "--concurrency",
                message: "must be at least 1".into(),
            });
        }
        (Some(c), _) => c,
        (None, Some(c)) if *c.get_ref() == 0 => {
            return Err(ctx.invalid(c.span(), "[limits] concurrency", "must be at least 1"));
        }
        (None, Some(c)) => *c.get_ref(),
        (None, None) => 16,
    };
    let timeout = match &l.timeout_seconds {
        Some(t) => {
            let v = *t.get_ref();
            // Duration::from_secs_f64 panics on huge values; a day is far beyond any
            // sensible request timeout. A value under a nanosecond becomes a zero timeout,
            // which fails every request: refused like 0.
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) || Duration::from_secs_f64(v).is_zero()
            {
                return Err(ctx.invalid(
                    t.span(),
                    "[limits] timeout_seconds",
                    "must be greater than 0 and at most 86400",
                ));
            }
            Duration::from_secs_f64(v)
        }
        None => Duration::from_secs(60),
    };
    let max_file_bytes = match &l.max_file_bytes {
        Some(m) if *m.get_ref() == 0 => {
            return Err(ctx.invalid(m.span(), "[limits] max_file_bytes", "must be at least 1"));
        }
        Some(m) => *m.get_ref(),
        None => 52_428_800,
    };
    let limits = Limits {
        requests_per_second: rate / f64::from(shard_count),
        burst: burst.div_ceil(shard_count).max(1),
        concurrency,
        max_retries: l.max_retries.as_ref().map_or(6, |m| *m.get_ref()),
        timeout,
        max_file_bytes,
    };

    // [polling]
    let schedule = match &raw.polling.schedule_seconds {
        Some(s) => check_schedule(&ctx, s)?,
        None => [40u64, 60, 100, 160, 240, 340, 460, 600, 760, 940]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
    };
    let polling = Polling {
        schedule,
        daily_retry: raw.polling.daily_retry.unwrap_or(true),
    };

    let f = &raw.fetch;
    let fetch = FetchSettings {
        images: f.images.unwrap_or(true),
        liveness_images: f.liveness_images.unwrap_or(true),
        original_documents: f.original_documents.unwrap_or(true),
        unmasked_card_images: f.unmasked_card_images.unwrap_or(false),
    };

    // [output]
    let o = &raw.output;
    let dir = match (&overrides.out, &o.dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) if d.get_ref().trim().is_empty() => {
            return Err(ctx.invalid(d.span(), "[output] dir", "must not be empty"));
        }
        (None, Some(d)) => PathBuf::from(d.get_ref()),
        (None, None) => PathBuf::from("export"),
    };
    // Modes are octal text ("0600") so they read as they do in chmod; the owner must keep
    // read and write, or the tool could not resume its own output.
    let mode = |v: &Option<Spanned<String>>,
                key: &str,
                default: u32,
                owner: u32|
     -> Result<u32, JobError> {
        let Some(v) = v else { return Ok(default) };
        let text = v.get_ref().trim();
        let parsed = u32::from_str_radix(text.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777);
        match parsed {
            Some(m) if m & owner == owner => Ok(m),
            Some(_) => Err(ctx.invalid(
                v.span(),
                key,
                "must keep the owner's permissions (the tool reads back what it wrote)",
            )),
            None => Err(ctx.invalid(
                v.span(),
                key,
                format!("{text:?} is not an octal mode such as \"0600\""),
            )),
        }
    };
    let output = OutputSettings {
        dir,
        csv: o.csv.unwrap_or(true),
        parquet: o.parquet.unwrap_or(true),
        archives: o.archives.unwrap_or(true),
        encrypt_archives: o.encrypt_archives.unwrap_or(false),
        archive_key_env: match &o.archive_key_env {
            Some(v) if v.get_ref().trim().is_empty() => {
                return Err(ctx.invalid(
                    v.span(),
                    "[output] archive_key_env",
                    "must name an environment variable",
                ));
            }
            Some(v) => v.get_ref().trim().to_string(),
            None => "JUMIO_EXPORT_ARCHIVE_KEY".to_string(),
        },
        file_mode: mode(&o.file_mode, "[output] file_mode", 0o600, 0o600)?,
        dir_mode: mode(&o.dir_mode, "[output] dir_mode", 0o700, 0o700)?,
    };

    Ok(Job {
        path: path.to_path_buf(),
        sha256,
        api,
        input,
        limits,
        polling,
        fetch,
        output,
        shard: overrides.shard,
    })
}

fn check_schedule(
    ctx: &Ctx<'_>,
    s: &Spanned<Vec<Spanned<f64>>>,
) -> Result<Vec<Duration>, JobError> {
    const KEY: &str = "[polling] schedule_seconds";
    if s.get_ref().is_empty() {
        return Err(ctx.invalid(
            s.span(),
            KEY,
            "must list at least one offset (the guide recommends [40, 60, 100, 160, 240, 340, 460, 600, 760, 940])",
        ));
    }
    let mut out = Vec::with_capacity(s.get_ref().len());
    let mut previous: Option<f64> = None;
    for (i, entry) in s.get_ref().iter().enumerate() {
        let v = *entry.get_ref();
        if !v.is_finite() || v < 0.0 {
            return Err(ctx.invalid(
                entry.span(),
                KEY,
                format!(
                    "entry {} is {v}: offsets must be finite and not negative",
                    i + 1
                ),
            ));
        }
        // Ten years: far beyond the guide's schedule, and keeps from_secs_f64 in range.
        if v > 315_360_000.0 {
            return Err(ctx.invalid(
                entry.span(),
                KEY,
                format!(
                    "entry {} is {v}: offsets must be at most 315360000 seconds",
                    i + 1
                ),
            ));
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
    Ok(url)
}

// ---- raw file structure -------------------------------------------------------------

/// The slowest request rate a shard may run at, in requests per second.
const MIN_RATE: f64 = 0.001;
/// The largest rate limiter burst; with [`MIN_RATE`] it keeps governor's burst window
/// (period × burst, in u64 nanoseconds) far from overflowing.
const MAX_BURST: u32 = 1_000_000;

const TOP_KEYS: &[&str] = &["api", "input", "limits", "polling", "fetch", "output"];
const API_KEYS: &[&str] = &[
    "region",
    "netverify_url",
    "retrieval_url",
    "user_agent",
    "token_env",
    "secret_env",
];
const INPUT_KEYS: &[&str] = &["path", "default_kind"];
const LIMITS_KEYS: &[&str] = &[
    "requests_per_second",
    "burst",
    "concurrency",
    "max_retries",
    "timeout_seconds",
    "max_file_bytes",
];
const POLLING_KEYS: &[&str] = &["schedule_seconds", "daily_retry"];
const FETCH_KEYS: &[&str] = &[
    "images",
    "liveness_images",
    "original_documents",
    "unmasked_card_images",
];
const OUTPUT_KEYS: &[&str] = &[
    "dir",
    "csv",
    "parquet",
    "archives",
    "encrypt_archives",
    "archive_key_env",
    "file_mode",
    "dir_mode",
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJob {
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    input: RawInput,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    polling: RawPolling,
    #[serde(default)]
    fetch: RawFetch,
    #[serde(default)]
    output: RawOutput,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    region: Option<Spanned<String>>,
    netverify_url: Option<Spanned<String>>,
    retrieval_url: Option<Spanned<String>>,
    user_agent: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInput {
    path: Option<Spanned<String>>,
    default_kind: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    requests_per_second: Option<Spanned<f64>>,
    burst: Option<Spanned<u32>>,
    concurrency: Option<Spanned<usize>>,
    max_retries: Option<Spanned<u32>>,
    timeout_seconds: Option<Spanned<f64>>,
    max_file_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolling {
    schedule_seconds: Option<Spanned<Vec<Spanned<f64>>>>,
    daily_retry: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFetch {
    images: Option<bool>,
    liveness_images: Option<bool>,
    original_documents: Option<bool>,
    unmasked_card_images: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    dir: Option<Spanned<String>>,
    csv: Option<bool>,
    parquet: Option<bool>,
    archives: Option<bool>,
    file_mode: Option<Spanned<String>>,
    dir_mode: Option<Spanned<String>>,
    encrypt_archives: Option<bool>,
    archive_key_env: Option<Spanned<String>>,
}

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
            let key = rest.split('`').next().unwrap_or_default().to_string();
            let table_path: Vec<String> = if path.last() == Some(&key) {
                path[..path.len() - 1].to_vec()
            } else {
                path.clone()
            };
            let (table, known) = match table_path.first().map(String::as_str) {
                None => ("the top level".to_string(), TOP_KEYS),
                Some(t) => (
                    format!("[{t}]"),
                    match t {
                        "api" => API_KEYS,
                        "input" => INPUT_KEYS,
                        "limits" => LIMITS_KEYS,
                        "polling" => POLLING_KEYS,
                        "fetch" => FETCH_KEYS,
                        "output" => OUTPUT_KEYS,
                        _ => &[],
                    },
                ),
            };
            let hint = if CREDENTIAL_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
                "credentials are never read from the job file: set the environment variables \
                 named by [api] token_env and secret_env (JUMIO_API_TOKEN and JUMIO_API_SECRET \
                 by default)"
                    .to_string()
            } else {
                let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
                format!("expected one of {}", list.join(", "))
            };
            return JobError::UnknownKey {
                location: self.location(e.span(), false),
                key,
                table,
                hint,
            };
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
        assert_eq!(job.limits.timeout, Duration::from_secs(60));
        assert_eq!(job.limits.max_file_bytes, 52_428_800);
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

    #[test]
    fn basic_header_is_rfc7617() {
        // RFC 7617's own example.
        let c = Credentials::new("Aladdin", "open sesame");
        assert_eq!(c.basic_header_value(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(format!("{c:?}"), "<redacted>");
        assert_eq!(format!("{c}"), "<redacted>");
    }
}
