//! # jumio-export
//!
//! Exports identity-verification records out of the Jumio Netverify Retrieval API.
//!
//! The pipeline, stage by stage (each a module):
//! - [`job`]: the TOML job file, parsed and validated;
//! - [`input`]: reference lists → [`input::Item`]s;
//! - [`api`]: the HTTP client (auth, User-Agent, origin check), retry, rate limiter;
//! - [`fetch`]: the scheduler that drives every reference through the guide's flow;
//! - [`flatten`]: pure JSON → table rows, and the schema of every table;
//! - [`output`]: archives, CSV and Parquet tables, failures, report;
//! - [`run`]: the main job, tying the stages together under one concurrency bound;
//! - [`simulator`]: the Retrieval API simulator used by `demo` and the tests (cargo feature
//!   `simulator`, on by default; off for a production build);
//! - [`spill`]: lists that grow with the export (input, root hash) kept on disk, not in memory;
//! - [`verify`]: `jumio-export verify DIR`, the integrity check of an export;
//! - [`warehouse`]: `schema` (DDL for five SQL dialects) and `load` (exactly-once into PostgreSQL);
//! - [`exit`]: the process exit codes of every command.

pub mod api;
pub mod cli;
pub mod commands;
pub mod dataset;
pub mod exit;
pub mod fetch;
pub mod flatten;
pub mod input;
pub mod job;
pub mod kind;
pub mod outcome;
pub mod output;
pub mod plan;
pub mod run;
pub mod scheduler;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod spill;
pub mod store;
pub mod verify;
pub mod warehouse;

pub use kind::Kind;

/// The tool's version, recorded in reports and provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Threads of the async runtime's blocking pool at least (archive writes, file-system work):
/// twice the cores when that is more. Tokio's default, 512, let a run at concurrency 32 keep
/// one thread per archive in flight, each with its own allocator arena holding freed memory:
/// peak RSS grew with the run's length (54 MiB at 100,000 references, 77 MiB at 1,000,000,
/// over 100 MiB on a loaded machine) while the heap in use stayed under 20 MiB. Eight
/// threads write archives as fast on 2 cores.
pub const BLOCKING_THREADS: usize = 8;
