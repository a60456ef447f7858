//! Command-line definitions (clap). Parsing only; the commands live in [`crate::commands`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::job::Overrides;

/// Exports identity-verification records out of the Jumio Netverify Retrieval API.
#[derive(Debug, Parser)]
#[command(name = "jumio-export", version, about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand of SPEC's command table.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the export job described by JOB.toml.
    Run {
        /// The job file.
        job: PathBuf,
        /// Overrides of the job file.
        #[command(flatten)]
        overrides: Overrides,
        /// How the run behaves beyond the job file.
        #[command(flatten)]
        flags: RunFlags,
    },
    #[cfg(feature = "simulator")]
    /// Start the built-in simulator on a free loopback port and run jobs/demo.toml against it.
    Demo {
        /// Output directory.
        #[arg(long, default_value = "export-demo")]
        out: PathBuf,
        /// How many simulated references to export (a few special ones are added).
        #[arg(long, default_value_t = 300)]
        count: usize,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    #[cfg(feature = "simulator")]
    /// Serve the Retrieval API simulator until stopped.
    Simulate(SimulateArgs),
    /// Check the dataset without trusting any part of it: every commit against its parts,
    /// every row against its archive, every archive against its manifest, the root hashes.
    Verify {
        /// The dataset (the `[output] dir` of its runs).
        #[arg(value_name = "LOCATION")]
        dir: PathBuf,
        /// Check only the commits after this run (its id, as in `commits/{RUN}.json`).
        #[arg(long, value_name = "RUN")]
        since: Option<String>,
        /// Environment variable holding the key of encrypted archives.
        #[arg(long, default_value = crate::job::defaults::ARCHIVE_KEY_ENV)]
        key_env: String,
        /// Check every commit's signature (`commits/{run}.json.sig`) against this OpenSSH
        /// public key (`key.pub`, or an allowed_signers line); a commit without one fails.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Environment variable holding the HMAC key of a `pii = "pseudonymised"` dataset;
        /// without it the pseudonymised columns are not compared with the archives.
        #[arg(long, value_name = "VAR")]
        pii_key_env: Option<String>,
        /// Environment variable holding an age identity (`AGE-SECRET-KEY-1…` lines, or an
        /// unencrypted OpenSSH private key) that opens the dataset's age archives, to check
        /// their manifests, rows and files rows too; without it they are checked by their
        /// ciphertext's sha256.
        #[arg(long, value_name = "VAR")]
        age_identity_env: Option<String>,
    },
    /// Upgrade a directory written before datasets (top-level netverify.csv …) in place:
    /// old files into legacy/, its archives listed in a first commit; fetches nothing.
    Upgrade {
        /// The directory.
        location: PathBuf,
        /// Environment variable holding the key of encrypted archives.
        #[arg(long, default_value = crate::job::defaults::ARCHIVE_KEY_ENV)]
        key_env: String,
    },
    /// Print the CREATE TABLE statements of every table for a warehouse, from the one schema.
    Schema {
        /// The SQL dialect.
        #[arg(long, value_enum)]
        dialect: crate::warehouse::ddl::Dialect,
        /// Only this table (netverify, documents, authentications, files, failures).
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
        /// The PII profile of the tables (`[output] pii`): full, pseudonymised or minimal.
        #[arg(long, value_name = "PROFILE", default_value = "full")]
        pii: crate::flatten::pii::Pii,
    },
    /// Load every commit of the dataset not loaded yet into PostgreSQL, one transaction each.
    Load {
        /// The dataset (the `[output] dir` of its runs).
        location: PathBuf,
        /// postgresql://USER@HOST:PORT/DATABASE; the password from PGPASSWORD or ~/.pgpass.
        #[arg(long, value_name = "URL")]
        postgres: String,
        /// The PostgreSQL schema to load into (created when missing); default the current one.
        #[arg(long, value_name = "NAME")]
        schema: Option<String>,
        /// Environment variable holding the key of encrypted archives (for the verify check).
        #[arg(long, default_value = crate::job::defaults::ARCHIVE_KEY_ENV)]
        key_env: String,
    },
    /// Validate the job and input and print the request budget; sends nothing.
    Plan {
        /// The job file.
        job: PathBuf,
        /// Overrides of the job file.
        #[command(flatten)]
        overrides: Overrides,
    },
}

/// `run` options that are not job settings: progress, follow-ups, the exit code for a scheduler.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunFlags {
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also retry references an earlier run found missing (NOT_FOUND).
    #[arg(long)]
    pub retry_failed: bool,
    /// Progress: a bar (the default on a terminal), one JSON line per interval on stderr (for
    /// log shippers and orchestrators), log lines (the default otherwise), or none.
    #[arg(long, value_enum, value_name = "MODE")]
    pub progress: Option<crate::run::progress::ProgressMode>,
    /// Seconds between two progress lines (log and JSON progress).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = parse_interval)]
    pub progress_interval: f64,
    /// Exit 0 even when these failures remain (comma-separated: pending, not_found): references
    /// Jumio has not finished or does not have are a success for a scheduler that would otherwise
    /// retry the whole shard on exit 1. They stay in failures.csv for a later run.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ERRORS")]
    pub exit_zero_on: Vec<ExpectedFailure>,
}

/// `--exit-zero-on`: failures a scheduler should not retry a shard for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExpectedFailure {
    /// `PENDING`: Jumio has not finished the transaction; a later run polls it again.
    Pending,
    /// `NOT_FOUND`: Jumio does not have it (for historic records, usually retention).
    #[value(name = "not_found", alias = "not-found")]
    NotFound,
}

impl ExpectedFailure {
    /// The `failures.csv` error code.
    pub fn code(self) -> crate::outcome::ErrorCode {
        match self {
            ExpectedFailure::Pending => crate::outcome::ErrorCode::Pending,
            ExpectedFailure::NotFound => crate::outcome::ErrorCode::NotFound,
        }
    }
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.01..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected seconds between 0.01 and 86400")),
    }
}

/// `jumio-export simulate` options.
#[cfg(feature = "simulator")]
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many references to list with --references-out.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Write the served references as CSV (`reference,kind`).
    #[arg(long)]
    pub references_out: Option<PathBuf>,
    /// Basic-auth user the simulator accepts.
    #[arg(long, default_value = "demo-token")]
    pub token: String,
    /// Basic-auth password the simulator accepts.
    #[arg(long, default_value = "demo-secret")]
    pub secret: String,
    /// Serve unmasked card pages (`maskhint=unmasked`) instead of answering 403.
    #[arg(long)]
    pub allow_unmasked: bool,
    /// Size of each document image in bytes.
    #[arg(long)]
    pub image_bytes: Option<usize>,
    /// Size of each liveness image in bytes.
    #[arg(long)]
    pub liveness_bytes: Option<usize>,
    /// Size of each Document Verification page in bytes.
    #[arg(long)]
    pub page_bytes: Option<usize>,
    /// Size of each original PDF in bytes.
    #[arg(long)]
    pub pdf_bytes: Option<usize>,
    /// Added latency per response, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction of requests answered 500 or 503.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction of requests answered 429.
    #[arg(long, default_value_t = 0.0)]
    pub rate_429: f64,
    /// Retry-After seconds on injected 429s (omit for Jumio's usual 429 without it).
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Server-side ceiling of requests per second, answered with 429 above it.
    #[arg(long)]
    pub ceiling_rps: Option<f64>,
    /// How the ceiling counts requests: a token bucket holding a second's worth, at most
    /// `--ceiling-rps` in any sliding second, or that with refused requests counted too (Jumio's).
    #[arg(long, value_enum, default_value_t = CeilingWindowArg::Bucket)]
    pub ceiling_window: CeilingWindowArg,
    /// `SECS=RPS`: from SECS seconds after the first request the ceiling is RPS; repeatable,
    /// e.g. `--ceiling-change 20=8 --ceiling-change 40=15`.
    #[arg(long, value_name = "SECS=RPS", value_parser = parse_ceiling_change)]
    pub ceiling_change: Vec<(f64, f64)>,
    /// Fraction of responses whose body is cut short.
    #[arg(long, default_value_t = 0.0)]
    pub truncate_rate: f64,
    /// Fraction of requests whose connection is reset.
    #[arg(long, default_value_t = 0.0)]
    pub reset_rate: f64,
    /// Fraction of hrefs that point at another origin.
    #[arg(long, default_value_t = 0.0)]
    pub foreign_href_rate: f64,
    /// The other origin used by --foreign-href-rate.
    #[arg(long, default_value = "http://127.0.0.2:9")]
    pub foreign_origin: String,
    /// Append one JSON line per request to this file.
    #[arg(long)]
    pub request_log: Option<PathBuf>,
}

/// `simulate --ceiling-window`.
#[cfg(feature = "simulator")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CeilingWindowArg {
    /// A token bucket holding one second's worth.
    Bucket,
    /// At most the ceiling in any sliding one-second window; refused requests do not count.
    Sliding,
    /// At most the ceiling in any sliding one-second window, refused requests included.
    SlidingRefused,
}

#[cfg(feature = "simulator")]
fn parse_ceiling_change(s: &str) -> Result<(f64, f64), String> {
    let (secs, rps) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected SECS=RPS, e.g. 20=8"))?;
    let number = |t: &str| {
        t.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("{s:?}: {t:?} is not a non-negative number"))
    };
    Ok((number(secs)?, number(rps)?))
}
