//! `jumio-export load LOCATION --postgres URL [--schema NAME]`: loads every commit of a dataset
//! that the database has not loaded yet, in commit order, exactly once.
//!
//! - Tables are created when missing from the same DDL `schema --dialect postgres` prints; a
//!   table that exists with other columns (a missing, extra or retyped one) stops the load
//!   before anything is written, naming the column.
//! - The ledger `jumio_export_loads` has one row per loaded commit (`run` is its primary key,
//!   `loaded_at`, rows per table, the sha256 of `commits/{run}.json`, the tool version).
//! - Each commit is loaded in one transaction: `pg_advisory_xact_lock` on the schema's key,
//!   the ledger checked for the run (a concurrent `load` may have loaded it meanwhile), every
//!   Parquet part of the commit streamed with binary `COPY … FROM STDIN`, then its ledger row,
//!   then COMMIT. A killed client or server leaves the transaction uncommitted: no half commit.
//! - Before loading, the commits not loaded yet are checked by [`crate::verify`] (with `--since`
//!   the commit before the first of them); any finding refuses the load, nothing written.
//! - `failures` receives the failure rows each commit recorded (history, with `run`); the view
//!   `failures_open` is the dataset's open follow-ups, as `failures.csv`.
//!
//! The password comes from the URL, `PGPASSWORD` or the password file (`~/.pgpass`,
//! `PGPASSFILE`); it is never printed, and every message is scrubbed of it. Connections go
//! without TLS, so only to a loopback address or Unix socket unless the URL says
//! `sslmode=disable`.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray, TimestampMillisecondArray,
};
use bytes::{BufMut, BytesMut};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Config, NoTls};

use super::ddl::{self, Dialect, Table};
use super::pgpass;
use crate::dataset::commit::{self, Commit};
use crate::dataset::{Format, TABLES};
use crate::exit::ExitCode;
use crate::flatten::{self, Column, ColumnType, ListItem};
use crate::output::archive::ArchiveKey;

/// The ledger table: one row per loaded commit.
pub const LEDGER: &str = "jumio_export_loads";

/// What `load` was asked to do.
#[derive(Clone)]
pub struct LoadOptions {
    /// The connection URL (`postgresql://user@host:port/db`) or libpq `key=value` string.
    pub url: String,
    /// The schema to load into; the connection's current schema when `None`.
    pub schema: Option<String>,
    /// The key of encrypted archives, for the verify check.
    pub key: Option<ArchiveKey>,
}

/// One commit this `load` handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedCommit {
    /// The run id.
    pub run: String,
    /// Rows loaded per table, in the order of [`TABLES`]; `None` when a concurrent `load`
    /// loaded the commit first.
    pub rows: Option<[u64; 5]>,
}

/// What `load` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Where: `host:port database D as user U` (never the password).
    pub target: String,
    /// The schema loaded into.
    pub schema: String,
    /// Commits in the dataset.
    pub commits: usize,
    /// Commits the ledger already had before this load.
    pub already_loaded: usize,
    /// The commits handled now, in commit order.
    pub loaded: Vec<LoadedCommit>,
    /// Time spent checking the new commits with `verify`.
    pub verify_time: Duration,
    /// Time spent loading them (reading the parts, COPY, commit).
    pub load_time: Duration,
}

impl LoadSummary {
    /// The lines `load` prints on stdout.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for c in &self.loaded {
            match c.rows {
                Some(rows) => {
                    let per: Vec<String> = TABLES
                        .iter()
                        .zip(rows)
                        .map(|(t, n)| format!("{n} {t}"))
                        .collect();
                    writeln!(out, "loaded   {}: {}", c.run, per.join(", ")).unwrap();
                }
                None => writeln!(out, "skipped  {}: loaded by a concurrent load", c.run).unwrap(),
            }
        }
        let now = self.loaded.iter().filter(|c| c.rows.is_some()).count();
        let rows: u64 = self
            .loaded
            .iter()
            .filter_map(|c| c.rows)
            .flat_map(|r| r.into_iter())
            .sum();
        write!(
            out,
            "{} schema {}: {} commits in the dataset, {} loaded before, {} loaded now ({} rows)",
            self.target, self.schema, self.commits, self.already_loaded, now, rows
        )
        .unwrap();
        if now > 0 {
            let secs = self.load_time.as_secs_f64();
            write!(
                out,
                "; verify {:.1} s, load {secs:.1} s ({:.0} rows/s)",
                self.verify_time.as_secs_f64(),
                rows as f64 / secs.max(1e-9)
            )
            .unwrap();
        }
        out.push('\n');
        out
    }
}

/// Why `load` stopped. Nothing is half-loaded in any case: a commit is committed whole or not.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The `--postgres` value or `--schema` is unusable (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The dataset cannot be read (exit 2, as `verify`).
    #[error("{0}")]
    Dataset(String),
    /// Connecting failed: wrong host or port, refused password, server down (exit 3).
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// `host:port database D as user U`.
        target: String,
        /// The client's reason, scrubbed of the password.
        reason: String,
    },
    /// A table exists with other columns (exit 2); nothing was loaded.
    #[error(
        "PostgreSQL at {target}: table {table} exists with other columns: column {column} {problem}; nothing was loaded (drop or rename the table, or load into another --schema)"
    )]
    Mismatch {
        /// Where.
        target: String,
        /// The table, schema-qualified.
        table: String,
        /// The first column that differs.
        column: String,
        /// How.
        problem: String,
    },
    /// `verify` rejects a commit not loaded yet (exit 1); nothing was loaded.
    #[error(
        "refusing to load: verify finds {count} problem(s) in the commits not loaded yet; nothing was loaded. Run `jumio-export verify {location}` for all of them. First:\n{first}"
    )]
    Refused {
        /// The location.
        location: String,
        /// How many findings.
        count: usize,
        /// The first findings, one per line.
        first: String,
    },
    /// A commit has a table only in CSV (`[output] parquet = false`): load reads Parquet (exit 2).
    #[error(
        "commit {run} has table {table} only as CSV; load reads the typed Parquet parts (set [output] parquet = true for the runs to load); nothing was loaded"
    )]
    NoParquet {
        /// The commit.
        run: String,
        /// The table.
        table: String,
    },
    /// The database failed during the load (exit 3); the commit in progress was not committed.
    #[error("PostgreSQL at {target}: {what}: {reason}")]
    Database {
        /// Where.
        target: String,
        /// What was being done.
        what: String,
        /// The server's or client's reason, scrubbed of the password.
        reason: String,
    },
    /// A part could not be read (exit 3); the commit in progress was not committed.
    #[error("{path}: {reason}; the commit in progress was not loaded")]
    Part {
        /// The part.
        path: String,
        /// Why.
        reason: String,
    },
}

impl LoadError {
    /// The exit code of SPEC "Exit codes".
    pub fn exit_code(&self) -> ExitCode {
        match self {
            LoadError::Usage(_)
            | LoadError::Dataset(_)
            | LoadError::Mismatch { .. }
            | LoadError::NoParquet { .. } => ExitCode::Usage,
            LoadError::Refused { .. } => ExitCode::Partial,
            LoadError::Connect { .. } | LoadError::Database { .. } | LoadError::Part { .. } => {
                ExitCode::Fatal
            }
        }
    }
}

/// A connection's settings with the password found, and what messages may say about it.
struct Target {
    config: Config,
    /// `host:port database D as user U`.
    label: String,
    /// Scrubbed from every message.
    password: Option<String>,
}

impl Target {
    fn scrub(&self, text: impl std::fmt::Display) -> String {
        let text = text.to_string();
        match &self.password {
            Some(p) if p.len() >= 3 => text.replace(p.as_str(), "***"),
            _ => text,
        }
    }

    fn db_error(&self, what: &str, e: tokio_postgres::Error) -> LoadError {
        LoadError::Database {
            target: self.label.clone(),
            what: what.to_string(),
            reason: self.scrub(error_text(&e)),
        }
    }
}

/// The client error with the server's message, when there is one.
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                write!(text, ": {s}").unwrap();
                source = s.source();
            }
            text
        }
    }
}

fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// Parses the URL and fills what it leaves out the way libpq does (`PGHOST`, `PGPORT`,
/// `PGUSER`, `PGDATABASE`, `PGPASSWORD`, the password file).
fn target(url: &str) -> Result<Target, LoadError> {
    let mut config: Config = url.parse().map_err(|_| {
        // The client's message may quote the URL, password included: say what is expected.
        LoadError::Usage(
            "--postgres: not a PostgreSQL connection string (postgresql://USER@HOST:PORT/DATABASE, \
             or host=… port=… user=… dbname=…); give the password in PGPASSWORD or ~/.pgpass"
                .to_string(),
        )
    })?;
    fill_from_env(&mut config)?;
    let user = config.get_user().unwrap_or_default().to_string();
    let database = config.get_dbname().unwrap_or(&user).to_string();
    let host = config.get_hosts()[0].clone();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let name = host_text(&host);
    let label = match &host {
        Host::Tcp(_) => format!("{name}:{port} database {database} as user {user}"),
        Host::Unix(_) => format!("{name} (port {port}) database {database} as user {user}"),
    };
    if config.get_password().is_none() {
        let password = env("PGPASSWORD").or_else(|| {
            pgpass::default_path()
                .and_then(|path| pgpass::lookup(&path, &name, port, &database, &user))
        });
        if let Some(p) = password {
            config.password(p);
        }
    }
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_ssl_mode() != SslMode::Disable
        && let Some(remote) = config.get_hosts().iter().find(|h| !is_loopback(h))
    {
        return Err(LoadError::Usage(format!(
            "--postgres: {} is not a loopback address, and this build connects to PostgreSQL \
             without TLS; connect through a local TLS tunnel, or add sslmode=disable to the URL \
             only on a network you trust",
            host_text(remote)
        )));
    }
    Ok(Target {
        config,
        label,
        password,
    })
}

/// A libpq environment variable, when set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A host as libpq names it: the name or address, or the socket directory.
fn host_text(host: &Host) -> String {
    match host {
        Host::Tcp(h) => h.clone(),
        Host::Unix(p) => p.display().to_string(),
    }
}

/// Host, port, user and database that `config` leaves out, from `PGHOST`, `PGPORT`, `PGUSER`
/// (or `USER`) and `PGDATABASE`, as libpq does; no user at all is an error.
fn fill_from_env(config: &mut Config) -> Result<(), LoadError> {
    if config.get_hosts().is_empty() {
        config.host(env("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if config.get_ports().is_empty()
        && let Some(port) = env("PGPORT").and_then(|p| p.parse().ok())
    {
        config.port(port);
    }
    if config.get_user().is_none() {
        match env("PGUSER").or_else(|| env("USER")) {
            Some(user) => {
                config.user(&user);
            }
            None => {
                return Err(LoadError::Usage(
                    "--postgres: no user: give one in the URL (postgresql://USER@HOST/DB) or PGUSER"
                        .to_string(),
                ));
            }
        }
    }
    if config.get_dbname().is_none()
        && let Some(db) = env("PGDATABASE")
    {
        config.dbname(&db);
    }
    Ok(())
}

/// A schema name: what `--schema` accepts (it is quoted in SQL all the same).
fn check_schema_name(name: &str) -> Result<(), LoadError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(LoadError::Usage(format!(
            "--schema {name:?}: use lowercase letters, digits and _ (not first), at most 63"
        )))
    }
}

/// The expected columns of the ledger: (name, information_schema type, DDL type).
fn ledger_columns() -> Vec<(String, &'static str, &'static str)> {
    let mut cols = vec![
        ("run".to_string(), "text", "text NOT NULL PRIMARY KEY"),
        (
            "loaded_at".to_string(),
            "timestamp with time zone",
            "timestamptz NOT NULL",
        ),
    ];
    for t in TABLES {
        cols.push((format!("{t}_rows"), "bigint", "bigint NOT NULL"));
    }
    cols.push(("commit_sha256".to_string(), "text", "text NOT NULL"));
    cols.push(("tool_version".to_string(), "text", "text NOT NULL"));
    cols
}

/// The advisory lock key of a schema: every `load` into it serialises its commits on the
/// `commit` key, and its CREATE statements on the `ddl` key (so a `load` that finds the tables
/// there goes on to read the ledger while another is loading a commit).
fn lock_key(schema: &str, purpose: &str) -> i64 {
    let digest = Sha256::digest(format!("jumio-export load {purpose} {schema}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Loads every commit of the dataset at `root` the database has not loaded yet. See the module
/// documentation for the guarantees.
pub async fn load(root: &Path, opts: &LoadOptions) -> Result<LoadSummary, LoadError> {
    if let Some(s) = &opts.schema {
        check_schema_name(s)?;
    }
    let target = target(&opts.url)?;
    let runs = dataset_runs(root)?;
    let (client, connection) =
        target
            .config
            .connect(NoTls)
            .await
            .map_err(|e| LoadError::Connect {
                target: target.label.clone(),
                reason: target.scrub(error_text(&e)),
            })?;
    let driver = tokio::spawn(async move {
        // Its error reaches the caller through the next query on `client`.
        let _ = connection.await;
    });
    let result = load_with(root, opts, &target, client, runs).await;
    driver.abort();
    result
}

/// The run ids of the dataset's commits, sorted.
fn dataset_runs(root: &Path) -> Result<Vec<String>, LoadError> {
    if !root.is_dir() {
        return Err(LoadError::Dataset(format!(
            "{} is not a directory holding a dataset",
            root.display()
        )));
    }
    commit::list(root).map_err(|e| LoadError::Dataset(e.to_string()))
}

async fn load_with(
    root: &Path,
    opts: &LoadOptions,
    target: &Target,
    mut client: Client,
    runs: Vec<String>,
) -> Result<LoadSummary, LoadError> {
    let schema = match &opts.schema {
        Some(s) => s.clone(),
        None => client
            .query_one("SELECT current_schema()::text", &[])
            .await
            .map_err(|e| target.db_error("reading the current schema", e))?
            .get::<_, Option<String>>(0)
            .ok_or_else(|| {
                LoadError::Usage(format!(
                    "PostgreSQL at {}: no current schema (empty search_path); give --schema",
                    target.label
                ))
            })?,
    };
    prepare(&mut client, target, &schema).await?;
    let ledger = ddl::qualified(Dialect::Postgres, Some(&schema), LEDGER);
    let loaded: std::collections::HashSet<String> = client
        .query(&format!("SELECT run FROM {ledger}"), &[])
        .await
        .map_err(|e| target.db_error("reading the ledger", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut summary = LoadSummary {
        target: target.label.clone(),
        schema: schema.clone(),
        commits: runs.len(),
        already_loaded: runs.iter().filter(|r| loaded.contains(*r)).count(),
        loaded: Vec::new(),
        ..LoadSummary::default()
    };
    let Some(first) = runs.iter().position(|r| !loaded.contains(r)) else {
        return Ok(summary);
    };
    let started = std::time::Instant::now();
    check_with_verify(root, opts, first.checked_sub(1).map(|i| runs[i].clone())).await?;
    summary.verify_time = started.elapsed();
    let mut pending = Vec::new();
    for run in runs.iter().skip(first).filter(|r| !loaded.contains(*r)) {
        let path = commit::path(root, run);
        let commit = Commit::read(&path).map_err(|e| LoadError::Dataset(e.to_string()))?;
        if commit.output.pii != crate::flatten::pii::Pii::Full {
            return Err(LoadError::Usage(format!(
                "commit {run} has pii = \"{}\": load creates the full profile's tables; create \
                 the tables with `schema --pii {}` and load the Parquet parts with the database's \
                 own tools",
                commit.output.pii, commit.output.pii
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| LoadError::Dataset(e.to_string()))?;
        for table in TABLES {
            let parts: Vec<_> = commit.parts_of(table).collect();
            if !parts.is_empty() && !parts.iter().any(|p| p.format == Format::Parquet) {
                return Err(LoadError::NoParquet {
                    run: run.clone(),
                    table: table.to_string(),
                });
            }
        }
        pending.push((commit, hex::encode(Sha256::digest(&bytes))));
    }
    let key = lock_key(&schema, "commit");
    let started = std::time::Instant::now();
    for (commit, sha256) in pending {
        let rows = load_commit(root, &mut client, target, &schema, key, &commit, &sha256).await?;
        summary.loaded.push(LoadedCommit {
            run: commit.run.clone(),
            rows,
        });
    }
    summary.load_time = started.elapsed();
    Ok(summary)
}

/// Refuses the load when `verify --since SINCE` finds anything.
async fn check_with_verify(
    root: &Path,
    opts: &LoadOptions,
    since: Option<String>,
) -> Result<(), LoadError> {
    let dir: PathBuf = root.to_path_buf();
    let key = opts.key.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::verify::verify_with(
            &dir,
            crate::verify::VerifyOptions {
                key: key.as_ref(),
                since: since.as_deref(),
                ..Default::default()
            },
        )
    })
    .await
    .map_err(|e| LoadError::Dataset(format!("verify stopped: {e}")))?
    .map_err(|e| LoadError::Dataset(e.to_string()))?;
    if report.is_ok() {
        return Ok(());
    }
    let first: Vec<String> = report
        .findings
        .iter()
        .take(10)
        .map(|f| format!("problem  {f}"))
        .collect();
    Err(LoadError::Refused {
        location: root.display().to_string(),
        count: report.findings.len(),
        first: first.join("\n"),
    })
}

/// Creates the schema, the tables, the ledger and the view when missing, after checking that
/// the tables that exist have exactly the expected columns. One transaction under the lock, so
/// two loads starting at once do not race on CREATE.
async fn prepare(client: &mut Client, target: &Target, schema: &str) -> Result<(), LoadError> {
    let err = |what: &'static str| move |e| target.db_error(what, e);
    let tx = client
        .transaction()
        .await
        .map_err(err("starting a transaction"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(schema, "ddl")],
    )
    .await
    .map_err(err("taking the load lock"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        ddl::ident(Dialect::Postgres, schema)
    ))
    .await
    .map_err(err("creating the schema"))?;
    let mut missing = Vec::new();
    for (table, columns) in &expected_tables() {
        let found: Vec<(String, String)> = tx
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&schema, table],
            )
            .await
            .map_err(err("reading the tables' columns"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if found.is_empty() {
            missing.push(table.clone());
        } else {
            compare_columns(target, schema, table, columns, &found)?;
        }
    }
    let mut ddl_text = ddl_for_missing(schema, &missing);
    let view = ddl::qualified(Dialect::Postgres, Some(schema), ddl::OPEN_FAILURES_VIEW);
    let has_view: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&view])
        .await
        .map_err(err("reading the tables' columns"))?
        .get(0);
    if !has_view {
        ddl_text.push_str(&ddl::open_failures_view(Dialect::Postgres, Some(schema)));
    }
    tx.batch_execute(&ddl_text)
        .await
        .map_err(err("creating the tables"))?;
    tx.commit().await.map_err(err("creating the tables"))?;
    Ok(())
}

/// Every table `load` writes (the dataset's tables and the ledger) with its columns and their
/// `information_schema` types.
fn expected_tables() -> Vec<(String, Vec<(String, &'static str)>)> {
    let mut expected: Vec<(String, Vec<(String, &'static str)>)> = ddl::tables()
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.columns
                    .iter()
                    .map(|c| (c.name.clone(), ddl::postgres_information_schema_type(c)))
                    .collect(),
            )
        })
        .collect();
    expected.push((
        LEDGER.to_string(),
        ledger_columns()
            .into_iter()
            .map(|(n, ty, _)| (n, ty))
            .collect(),
    ));
    expected
}

/// An existing table's columns (`found`: name, type) against the expected ones: the first
/// missing, retyped or extra column is the error.
fn compare_columns(
    target: &Target,
    schema: &str,
    table: &str,
    columns: &[(String, &'static str)],
    found: &[(String, String)],
) -> Result<(), LoadError> {
    let mismatch = |column: &str, problem: String| LoadError::Mismatch {
        target: target.label.clone(),
        table: format!("{schema}.{table}"),
        column: column.to_string(),
        problem,
    };
    for (name, ty) in columns {
        match found.iter().find(|(n, _)| n == name) {
            None => return Err(mismatch(name, "is missing".to_string())),
            Some((_, found_ty)) if found_ty != ty => {
                return Err(mismatch(name, format!("is {found_ty}, not {ty}")));
            }
            Some(_) => {}
        }
    }
    if let Some((extra, _)) = found
        .iter()
        .find(|(n, _)| !columns.iter().any(|(c, _)| c == n))
    {
        return Err(mismatch(
            extra,
            "is not a column of this table in jumio-export".to_string(),
        ));
    }
    Ok(())
}

/// CREATE TABLE statements for the `missing` tables (the dataset's and the ledger).
fn ddl_for_missing(schema: &str, missing: &[String]) -> String {
    let mut ddl_text = String::new();
    for table in ddl::tables() {
        if missing.iter().any(|m| m == table.name) {
            ddl_text.push_str(&ddl::create_table(Dialect::Postgres, Some(schema), &table));
        }
    }
    if missing.iter().any(|m| m == LEDGER) {
        let columns: Vec<String> = ledger_columns()
            .into_iter()
            .map(|(n, _, ty)| format!("  {} {ty}", ddl::ident(Dialect::Postgres, &n)))
            .collect();
        writeln!(
            ddl_text,
            "CREATE TABLE {} (\n{}\n);\nCOMMENT ON TABLE {0} IS 'one row per dataset commit loaded by jumio-export load';",
            ddl::qualified(Dialect::Postgres, Some(schema), LEDGER),
            columns.join(",\n")
        )
        .unwrap();
    }
    ddl_text
}

/// Loads one commit in one transaction; `None` when the ledger already has it (a concurrent
/// `load` got there first).
async fn load_commit(
    root: &Path,
    client: &mut Client,
    target: &Target,
    schema: &str,
    key: i64,
    commit: &Commit,
    sha256: &str,
) -> Result<Option<[u64; 5]>, LoadError> {
    let run = &commit.run;
    let err = |what: String| move |e| target.db_error(&what, e);
    let tx = client
        .transaction()
        .await
        .map_err(err(format!("commit {run}: starting a transaction")))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await
        .map_err(err(format!("commit {run}: taking the load lock")))?;
    let ledger = ddl::qualified(Dialect::Postgres, Some(schema), LEDGER);
    let done = tx
        .query_opt(&format!("SELECT 1 FROM {ledger} WHERE run = $1"), &[run])
        .await
        .map_err(err(format!("commit {run}: reading the ledger")))?;
    if done.is_some() {
        tx.rollback()
            .await
            .map_err(err(format!("commit {run}: ending the transaction")))?;
        return Ok(None);
    }
    let mut rows = [0u64; 5];
    for (i, table) in ddl::tables().iter().enumerate() {
        for part in commit
            .parts_of(table.name)
            .filter(|p| p.format == Format::Parquet)
        {
            let n = copy_part(&tx, target, schema, table, root, &part.path).await?;
            if n != part.rows {
                return Err(LoadError::Part {
                    path: part.path.clone(),
                    reason: format!("{n} rows read, commit {run} records {}", part.rows),
                });
            }
            rows[i] += n;
        }
    }
    let counts: Vec<i64> = rows.iter().map(|&n| n as i64).collect();
    let columns: Vec<String> = ledger_columns()
        .iter()
        .map(|(n, _, _)| ddl::ident(Dialect::Postgres, n))
        .collect();
    let insert = format!(
        "INSERT INTO {ledger} ({}) VALUES ($1, clock_timestamp(), $2, $3, $4, $5, $6, $7, $8)",
        columns.join(", ")
    );
    tx.execute(
        &insert,
        &[
            run,
            &counts[0],
            &counts[1],
            &counts[2],
            &counts[3],
            &counts[4],
            &sha256,
            &crate::VERSION,
        ],
    )
    .await
    .map_err(err(format!("commit {run}: writing its ledger row")))?;
    tx.commit()
        .await
        .map_err(err(format!("commit {run}: committing")))?;
    Ok(Some(rows))
}

/// Streams one Parquet part into its table with binary COPY; returns the rows copied. The part
/// is read on a blocking thread and handed over a batch at a time (memory stays flat).
async fn copy_part(
    tx: &tokio_postgres::Transaction<'_>,
    target: &Target,
    schema: &str,
    table: &Table,
    root: &Path,
    part: &str,
) -> Result<u64, LoadError> {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| ddl::ident(Dialect::Postgres, &c.name))
        .collect();
    let statement = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        ddl::qualified(Dialect::Postgres, Some(schema), table.name),
        columns.join(", ")
    );
    let what = || format!("loading {part}");
    let sink = tx
        .copy_in(&statement)
        .await
        .map_err(|e| target.db_error(&what(), e))?;
    let types: Vec<Type> = table.columns.iter().map(pg_type).collect();
    let writer = BinaryCopyInWriter::new(sink, &types);
    tokio::pin!(writer);
    let (send, mut batches) = tokio::sync::mpsc::channel::<io::Result<RecordBatch>>(2);
    let path = root.join(part);
    let table_columns = table.columns;
    let reader = tokio::task::spawn_blocking(move || read_part(&path, table_columns, &send));
    let part_error = |reason: String| LoadError::Part {
        path: part.to_string(),
        reason,
    };
    while let Some(batch) = batches.recv().await {
        let batch = batch.map_err(|e| part_error(e.to_string()))?;
        let readers: Vec<ColumnReader> = batch
            .columns()
            .iter()
            .zip(table.columns)
            .map(|(array, column)| ColumnReader::new(array, column))
            .collect::<Result<_, _>>()
            .map_err(part_error)?;
        let mut values: Vec<PgValue> = Vec::with_capacity(table.columns.len());
        for row in 0..batch.num_rows() {
            values.clear();
            values.extend(readers.iter().map(|r| r.value(row)));
            writer
                .as_mut()
                .write_raw(values.iter())
                .await
                .map_err(|e| target.db_error(&what(), e))?;
        }
    }
    reader
        .await
        .map_err(|e| part_error(format!("reader stopped: {e}")))?
        .map_err(|e| part_error(e.to_string()))?;
    writer
        .finish()
        .await
        .map_err(|e| target.db_error(&what(), e))
}

/// Reads the part at `path` batch by batch into `send`, after checking that its columns are the
/// table's, in order, with the table's types.
fn read_part(
    path: &Path,
    columns: &[Column],
    send: &tokio::sync::mpsc::Sender<io::Result<RecordBatch>>,
) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(io::Error::other)?;
    let expected = crate::output::tables::arrow_schema(columns);
    let found = builder.schema().clone();
    for (i, want) in expected.fields().iter().enumerate() {
        match found.fields().get(i) {
            Some(f) if f.name() == want.name() && f.data_type() == want.data_type() => {}
            Some(f) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "column {} is {} {}, the schema has {} {}",
                        i + 1,
                        f.name(),
                        f.data_type(),
                        want.name(),
                        want.data_type()
                    ),
                ));
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no column {}", want.name()),
                ));
            }
        }
    }
    if found.fields().len() != expected.fields().len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} columns, the schema has {}",
                found.fields().len(),
                expected.fields().len()
            ),
        ));
    }
    let reader = builder
        .with_batch_size(4096)
        .build()
        .map_err(io::Error::other)?;
    for batch in reader {
        let batch = batch.map_err(io::Error::other);
        let stop = batch.is_err();
        if send.blocking_send(batch).is_err() || stop {
            // The loader stopped listening (its COPY failed), or this error is the last word.
            break;
        }
    }
    Ok(())
}

/// The PostgreSQL type of a column in the DDL.
fn pg_type(column: &Column) -> Type {
    if column.name == flatten::UNMAPPED_JSON {
        return Type::JSONB;
    }
    match column.ty {
        ColumnType::Utf8 => Type::TEXT,
        ColumnType::Boolean => Type::BOOL,
        ColumnType::Date32 => Type::DATE,
        ColumnType::TimestampMs => Type::TIMESTAMPTZ,
        ColumnType::Int64 => Type::INT8,
        ColumnType::List(_) => Type::JSONB,
    }
}

/// One column of a batch, typed.
enum ColumnReader<'a> {
    Text(&'a StringArray),
    Json(&'a StringArray),
    Bool(&'a BooleanArray),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMillisecondArray),
    Int(&'a Int64Array),
    List(&'a ListArray, &'a ListItem),
}

impl<'a> ColumnReader<'a> {
    fn new(array: &'a ArrayRef, column: &'a Column) -> Result<Self, String> {
        fn cast<'b, T: 'static>(array: &'b ArrayRef, name: &str) -> Result<&'b T, String> {
            array
                .as_any()
                .downcast_ref::<T>()
                .ok_or_else(|| format!("column {name} is {}", array.data_type()))
        }
        let name = column.name.as_str();
        Ok(match &column.ty {
            ColumnType::Utf8 if name == flatten::UNMAPPED_JSON => {
                ColumnReader::Json(cast(array, name)?)
            }
            ColumnType::Utf8 => ColumnReader::Text(cast(array, name)?),
            ColumnType::Boolean => ColumnReader::Bool(cast(array, name)?),
            ColumnType::Date32 => ColumnReader::Date(cast(array, name)?),
            ColumnType::TimestampMs => ColumnReader::Timestamp(cast(array, name)?),
            ColumnType::Int64 => ColumnReader::Int(cast(array, name)?),
            ColumnType::List(item) => ColumnReader::List(cast(array, name)?, item),
        })
    }

    fn value(&self, row: usize) -> PgValue<'a> {
        match self {
            ColumnReader::Text(a) if a.is_valid(row) => PgValue::Text(a.value(row)),
            ColumnReader::Json(a) if a.is_valid(row) => {
                PgValue::Json(std::borrow::Cow::Borrowed(a.value(row)))
            }
            ColumnReader::Bool(a) if a.is_valid(row) => PgValue::Bool(a.value(row)),
            ColumnReader::Date(a) if a.is_valid(row) => PgValue::Date(a.value(row)),
            ColumnReader::Timestamp(a) if a.is_valid(row) => PgValue::TimestampMs(a.value(row)),
            ColumnReader::Int(a) if a.is_valid(row) => PgValue::Int(a.value(row)),
            ColumnReader::List(a, item) if a.is_valid(row) => {
                PgValue::Json(std::borrow::Cow::Owned(list_json(&a.value(row), item)))
            }
            _ => PgValue::Null,
        }
    }
}

/// A list cell as a JSON array: text elements as strings, struct elements as objects keyed by
/// the Parquet field names (`details_code`), as every Parquet reader shows them.
fn list_json(elements: &ArrayRef, item: &ListItem) -> String {
    use serde_json::Value;
    let text = |a: &StringArray, i: usize| {
        if a.is_valid(i) {
            Value::String(a.value(i).to_string())
        } else {
            Value::Null
        }
    };
    let values: Vec<Value> = match item {
        ListItem::Utf8 => match elements.as_any().downcast_ref::<StringArray>() {
            Some(a) => (0..a.len()).map(|i| text(a, i)).collect(),
            None => Vec::new(),
        },
        ListItem::Struct(fields) => match elements.as_any().downcast_ref::<StructArray>() {
            Some(s) => (0..s.len())
                .map(|i| {
                    if !s.is_valid(i) {
                        return Value::Null;
                    }
                    let mut object = serde_json::Map::new();
                    for f in fields {
                        let cell = s
                            .column_by_name(&f.name)
                            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                            .map_or(Value::Null, |a| text(a, i));
                        object.insert(f.name.clone(), cell);
                    }
                    Value::Object(object)
                })
                .collect(),
            None => Vec::new(),
        },
    };
    Value::Array(values).to_string()
}

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from the Unix epoch to PostgreSQL's.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One value in PostgreSQL's binary COPY format, written straight from the Arrow cell.
#[derive(Debug)]
enum PgValue<'a> {
    Null,
    Text(&'a str),
    /// jsonb: version 1, then the JSON text.
    Json(std::borrow::Cow<'a, str>),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// Milliseconds since 1970-01-01T00:00:00Z.
    TimestampMs(i64),
    Int(i64),
}

impl ToSql for PgValue<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            PgValue::Null => return Ok(IsNull::Yes),
            PgValue::Text(s) => out.put_slice(s.as_bytes()),
            PgValue::Json(s) => {
                out.put_u8(1);
                out.put_slice(s.as_bytes());
            }
            PgValue::Bool(b) => out.put_u8(u8::from(*b)),
            PgValue::Date(days) => out.put_i32(days - PG_EPOCH_DAYS),
            PgValue::TimestampMs(ms) => out.put_i64(
                ms.checked_mul(1000)
                    .and_then(|us| us.checked_sub(PG_EPOCH_MICROS))
                    .ok_or("timestamp out of PostgreSQL's range")?,
            ),
            PgValue::Int(n) => out.put_i64(*n),
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::TEXT,
            Type::JSONB,
            Type::BOOL,
            Type::DATE,
            Type::TIMESTAMPTZ,
            Type::INT8,
        ]
        .contains(ty)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_host_without_sslmode_disable_is_refused_and_loopback_is_not() {
        let err = target("postgresql://u@db.example.com/x").err().unwrap();
        assert!(err.to_string().contains("db.example.com"), "{err}");
        assert_eq!(err.exit_code(), ExitCode::Usage);
        assert!(target("postgresql://u@db.example.com/x?sslmode=disable").is_ok());
        assert!(target("postgresql://u@127.0.0.1:5/x").is_ok());
        assert!(target("postgresql://u@[::1]:5/x").is_ok());
        assert!(target("postgresql://u@localhost/x").is_ok());
    }

    #[test]
    fn the_password_is_scrubbed_and_never_in_the_label() {
        let t = target("postgresql://alice:hunter2secret@127.0.0.1:5433/db").unwrap();
        assert_eq!(t.label, "127.0.0.1:5433 database db as user alice");
        assert_eq!(t.scrub("x hunter2secret y"), "x *** y");
    }

    #[test]
    fn an_unparsable_url_does_not_echo_it() {
        let err = target("postgresql://alice:hunter2secret@127.0.0.1:notaport/db")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("hunter2secret"), "{err}");
        assert_eq!(err.exit_code(), ExitCode::Usage);
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("jumio_2026").is_ok());
        for bad in ["", "1x", "a-b", "A", "x\"; drop"] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
