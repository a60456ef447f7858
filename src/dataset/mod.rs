//! The output location as a dataset that runs add to (`docs/dataset.md` is the contract).
//!
//! - [`run_id`]: the id that names a run's parts and commit;
//! - [`publish`]: create-if-absent publication of a complete file under its final name;
//! - [`parts`]: table writers that roll over to a new part after a row or byte limit;
//! - [`commit`]: the commit record, written last and once, the catalogue of the dataset;
//! - [`catalogue`]: what the commits say: exported references, open follow-ups;
//! - [`reader`]: the rows of a part, CSV or Parquet, as text.
//!
//! This module knows the layout; it never talks to the API.

pub mod catalogue;
pub mod commit;
pub mod parts;
pub mod publish;
pub mod reader;
pub mod run_id;

use std::path::{Path, PathBuf};

pub use run_id::RunId;

/// Directory of the table parts.
pub const TABLES_DIR: &str = "tables";
/// Directory of the commit records.
pub const COMMITS_DIR: &str = "commits";
/// Directory of the live runs' lock files.
pub const RUNS_DIR: &str = "runs";
/// The dataset's open follow-ups, rebuilt after each run.
pub const FAILURES_CSV: &str = "failures.csv";
/// The latest run's report.
pub const REPORT_JSON: &str = "report.json";
/// The latest run's report and the dataset's, for a person.
pub const REPORT_HTML: &str = "report.html";
/// The failures table.
pub const FAILURES_TABLE: &str = "failures";
/// The files table.
pub const FILES_TABLE: &str = "files";

/// Every table, in the order reports list them.
pub const TABLES: [&str; 5] = [
    "netverify",
    "documents",
    "authentications",
    FILES_TABLE,
    FAILURES_TABLE,
];

/// A part's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// RFC 4180 CSV with a header row.
    Csv,
}

impl Format {
    /// The file extension.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

/// `tables/{table}` under `root`.
pub fn table_dir(root: &Path, table: &str) -> PathBuf {
    root.join(TABLES_DIR).join(table)
}

/// The stem of part `n` of `run` (`{run}-{n}`); the file adds `.parquet` or `.csv`.
pub fn part_stem(run: &RunId, n: u32) -> String {
    format!("{run}-{n}")
}

/// `tables/{table}/{run}-{n}.{ext}`, relative to the location (with `/` on every platform).
pub fn part_relative(table: &str, run: &RunId, n: u32, format: Format) -> String {
    format!(
        "{TABLES_DIR}/{table}/{}.{}",
        part_stem(run, n),
        format.ext()
    )
}

/// `commits/{run}.json`, relative to the location.
pub fn commit_relative(run: &str) -> String {
    format!("{COMMITS_DIR}/{run}.json")
}

/// True when `root` holds tables of the layout before datasets (top-level `netverify.csv` …).
pub fn has_legacy_tables(root: &Path) -> bool {
    ["netverify", "documents", "authentications", "files"]
        .iter()
        .flat_map(|t| ["csv", "parquet"].map(|e| root.join(format!("{t}.{e}"))))
        .any(|p| p.exists())
}
