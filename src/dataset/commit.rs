//! The commit record, `commits/{run}.json`: written last and once (create-if-absent), it lists
//! every part a run wrote and is the publish step. The set of commits is the catalogue of the
//! dataset; a part or archive no commit lists is not part of it yet.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::publish::{Published, write_no_replace};
use super::{COMMITS_DIR, Format, RunId};
use crate::output::fsmode::Modes;

/// The `format` of commit records this version writes and reads.
pub const COMMIT_FORMAT: &str = "jumio-export.commit/1";

/// One commit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Commit {
    /// Always [`COMMIT_FORMAT`].
    pub format: String,
    /// The run id (also the file name).
    pub run: String,
    /// The run's report (the same object as `report.json` after that run).
    pub report: serde_json::Value,
    /// Every part the run wrote, complete under its final name.
    pub parts: Vec<PartRecord>,
    /// The archives the run lists (exported or taken over).
    pub archives: ArchivesRecord,
    /// How the run's output protects personal data (absent from commits of earlier versions,
    /// which wrote CSV verbatim).
    #[serde(default)]
    pub output: OutputRecord,
}

/// The personal-data settings a commit's files were written with: what `verify` needs to
/// recompute them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputRecord {
    /// Whether CSV cells a spreadsheet would run as a formula were neutralised.
    #[serde(default)]
    pub csv_formulas: CsvFormulas,
    /// The PII profile of the transaction tables (`full` in commits of earlier versions). A
    /// dataset holds one profile: a run with another is refused.
    #[serde(default)]
    pub pii: crate::flatten::pii::Pii,
    /// How the run's archives are protected (`zip`, `zip-aes`, `age`); absent from commits
    /// of earlier versions (ZIP archives, plain or AES: their archives tell). A dataset holds
    /// one mode: a run with another is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_mode: Option<crate::output::archive::ArchiveMode>,
}

/// `[output] csv_neutralise_formulas` as the commit records it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CsvFormulas {
    /// The API's text as received (versions before the setting, or the setting off).
    #[default]
    Verbatim,
    /// Formula cells prefixed with `'` ([`crate::output::tables::neutralise_formula`]).
    Neutralised,
}

/// One part of a table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartRecord {
    /// The table (`netverify`, `documents`, `authentications`, `files`, `failures`).
    pub table: String,
    /// Path relative to the location (`tables/{table}/{run}-{n}.{ext}`).
    pub path: String,
    /// File format.
    pub format: Format,
    /// Rows in the part.
    pub rows: u64,
    /// Size of the file.
    pub bytes: u64,
    /// sha256 (hex) of the file.
    pub sha256: String,
}

/// The archives a commit lists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchivesRecord {
    /// How many.
    pub count: u64,
    /// sha256 over `"<reference>  <archive sha256>\n"` lines sorted by reference.
    pub root_hash: String,
    /// How `root_hash` is computed.
    pub root_hash_method: String,
}

/// Why the commits cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Listing or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A commit record does not parse or is of another format.
    #[error("{path}: not a commit record of this tool: {message}")]
    Malformed {
        /// The commit.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Commit {
    /// The bytes of `commits/{run}.json` (what a signature covers).
    pub fn bytes(&self) -> io::Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Writes `commits/{run}.json` under `root` only if it does not exist.
    pub fn write(&self, root: &Path, modes: Modes) -> io::Result<Published> {
        let dir = root.join(COMMITS_DIR);
        modes.create_dir_all(&dir)?;
        let bytes = self.bytes()?;
        let tmp = dir.join(format!(".{}.json.tmp", self.run));
        let dest = dir.join(format!("{}.json", self.run));
        write_no_replace(&tmp, &dest, &bytes, modes)
    }

    /// Reads and checks one commit record.
    pub fn read(path: &Path) -> Result<Commit, CommitError> {
        let bytes = std::fs::read(path).map_err(|source| CommitError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let malformed = |message: String| CommitError::Malformed {
            path: path.to_path_buf(),
            message,
        };
        let commit: Commit =
            serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        if commit.format != COMMIT_FORMAT {
            return Err(malformed(format!("format {:?}", commit.format)));
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if commit.run != stem || RunId::parse(&commit.run).is_none() {
            return Err(malformed(format!(
                "run {:?} does not match the file name",
                commit.run
            )));
        }
        for p in &commit.parts {
            if !part_path_is_safe(&p.path, &p.table) {
                return Err(malformed(format!("part path {:?}", p.path)));
            }
        }
        Ok(commit)
    }

    /// The parts of `table`, in the order written.
    pub fn parts_of<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a PartRecord> {
        self.parts.iter().filter(move |p| p.table == table)
    }
}

/// A part path must be `tables/{table}/{name}` with a plain file name: a commit never points
/// outside the location.
fn part_path_is_safe(path: &str, table: &str) -> bool {
    let Some(name) = path
        .strip_prefix(super::TABLES_DIR)
        .and_then(|p| p.strip_prefix('/'))
        .and_then(|p| p.strip_prefix(table))
        .and_then(|p| p.strip_prefix('/'))
    else {
        return false;
    };
    super::TABLES.contains(&table)
        && !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The run ids of every commit under `root`, sorted (= by start time). Hidden and temporary
/// files are not commits.
pub fn list(root: &Path) -> Result<Vec<String>, CommitError> {
    let dir = root.join(COMMITS_DIR);
    let listing = match std::fs::read_dir(&dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CommitError::Io { path: dir, source }),
    };
    let mut runs = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|source| CommitError::Io {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(run) = name.strip_suffix(".json")
            && !name.starts_with('.')
        {
            runs.push(run.to_string());
        }
    }
    runs.sort();
    Ok(runs)
}

/// `commits/{run}.json` under `root`.
pub fn path(root: &Path, run: &str) -> PathBuf {
    root.join(COMMITS_DIR).join(format!("{run}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(run: &str) -> Commit {
        Commit {
            format: COMMIT_FORMAT.into(),
            run: run.into(),
            report: serde_json::json!({"outcomes": {"exported": 1}}),
            parts: vec![PartRecord {
                table: "netverify".into(),
                path: format!("tables/netverify/{run}-0.parquet"),
                format: Format::Parquet,
                rows: 1,
                bytes: 10,
                sha256: "00".repeat(32),
            }],
            archives: ArchivesRecord {
                count: 1,
                root_hash: "11".repeat(32),
                root_hash_method: "m".into(),
            },
            output: OutputRecord::default(),
        }
    }

    #[test]
    fn a_commit_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let run = "20261206T074501Z-7f2a";
        let c = commit(run);
        assert_eq!(
            c.write(dir.path(), Modes::default()).unwrap(),
            Published::Created
        );
        let mut other = c.clone();
        other.parts.clear();
        assert_eq!(
            other.write(dir.path(), Modes::default()).unwrap(),
            Published::AlreadyThere
        );
        assert_eq!(Commit::read(&path(dir.path(), run)).unwrap(), c);
        assert_eq!(list(dir.path()).unwrap(), vec![run.to_string()]);
    }

    #[test]
    fn a_commit_pointing_outside_its_table_or_misnamed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = "20261206T074501Z-7f2a";
        let mut c = commit(run);
        c.parts[0].path = "tables/netverify/../../../etc/passwd".into();
        c.write(dir.path(), Modes::default()).unwrap();
        let err = Commit::read(&path(dir.path(), run)).unwrap_err();
        assert!(err.to_string().contains("part path"), "{err}");
        let other = "20261206T074501Z-0000";
        std::fs::write(
            path(dir.path(), other),
            serde_json::to_vec(&commit(run)).unwrap(),
        )
        .unwrap();
        let err = Commit::read(&path(dir.path(), other)).unwrap_err();
        assert!(err.to_string().contains("file name"), "{err}");
    }
}
