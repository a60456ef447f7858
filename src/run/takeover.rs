//! The takeover record of an age archive: what a later run needs to list an archive it cannot
//! open. An age archive's `provenance.json` and `data.json` are encrypted, and the exporting
//! machine holds no identity; so before it publishes `archives/{reference}.zip.age`, the run
//! writes `runs/{run}/takeover/{reference}.json` in its own staging area with
//! - the run that creates the archive (its owner until a commit lists it),
//! - the ciphertext's sha256 and size (a later run checks the archive against them),
//! - the transaction's rows as the tables will hold them: the kind-table row under the run's PII
//!   profile (without the four bookkeeping columns) and the `files` rows.
//!
//! It holds nothing the tables do not hold once committed, and is removed with the run's
//! staging area once a commit lists the archive (by the run itself after its commit, or by the
//! sweep of a later run once the run that took the archive over has committed).
//!
//! Pure apart from [`TakeoverRecord::to_bytes`]/[`TakeoverRecord::parse`]: the location reads and
//! writes the files.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Kind;
use crate::flatten::pii::{self, Pii, Pseudonymiser};
use crate::flatten::{self, ArchiveSummary, Cell};
use crate::output::archive::{ArchivedFile, WrittenArchive};

/// The `format` of takeover records.
pub const TAKEOVER_FORMAT: &str = "jumio-export.age-takeover/1";

/// The directory of a run's takeover records, inside its staging area `runs/{run}/`.
pub const TAKEOVER_DIR: &str = "takeover";

/// The bookkeeping columns every kind-table row ends with (`image_count`, `archive`,
/// `archive_sha256`, `run`): filled in by the run that lists the archive.
const BOOKKEEPING: usize = 4;

/// `runs/{run}/takeover/{reference}.json`, relative to the location.
pub fn relative(run: &str, reference: &str) -> String {
    format!(
        "{}/{run}/{TAKEOVER_DIR}/{reference}.json",
        crate::dataset::RUNS_DIR
    )
}

/// One `files` row of the record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordedFile {
    /// Entry name inside the archive.
    pub entry: String,
    /// The raw classifier of an image entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<String>,
    /// Content-Type.
    pub content_type: String,
    /// Uncompressed size.
    pub bytes: u64,
    /// sha256 (hex) of the content.
    pub sha256: String,
}

/// The record (see the module documentation).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TakeoverRecord {
    /// Always [`TAKEOVER_FORMAT`].
    pub format: String,
    /// The run that creates the archive.
    pub run: String,
    /// The transaction reference.
    pub reference: String,
    /// Its family (`netverify`, `document`, `authentication`).
    pub kind: String,
    /// The PII profile the row was written under.
    pub pii: Pii,
    /// `archives/{reference}.zip.age`.
    pub archive: String,
    /// sha256 (hex) of the ciphertext.
    pub sha256: String,
    /// Size of the ciphertext.
    pub bytes: u64,
    /// The archive's entries, as `files` rows.
    pub files: Vec<RecordedFile>,
    /// The kind-table row under `pii`, without its four bookkeeping columns.
    pub row: Vec<Value>,
}

impl TakeoverRecord {
    /// The record of `written` (not yet published) for the transaction whose `/data` is `data`.
    pub fn new(
        run: &str,
        reference: &str,
        kind: Kind,
        data: &Value,
        written: &WrittenArchive,
        profile: (Pii, Option<&Pseudonymiser>),
    ) -> Self {
        let summary = ArchiveSummary {
            image_count: 0,
            archive: String::new(),
            archive_sha256: String::new(),
            run: String::new(),
        };
        let row = flatten::flatten(kind, reference, data, &summary);
        let mut cells = pii::apply(kind, profile.0, profile.1, row).0;
        cells.truncate(cells.len().saturating_sub(BOOKKEEPING));
        TakeoverRecord {
            format: TAKEOVER_FORMAT.to_string(),
            run: run.to_string(),
            reference: reference.to_string(),
            kind: kind.as_str().to_string(),
            pii: profile.0,
            archive: written.relative.clone(),
            sha256: written.sha256.clone(),
            bytes: written.bytes,
            files: written
                .files
                .iter()
                .map(|f| RecordedFile {
                    entry: f.entry.clone(),
                    classifier: f.classifier.clone(),
                    content_type: f.content_type.clone(),
                    bytes: f.bytes,
                    sha256: f.sha256.clone(),
                })
                .collect(),
            row: cells.into_iter().map(cell_value).collect(),
        }
    }

    /// The record's bytes (pretty JSON and a newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("plain strings and numbers");
        bytes.push(b'\n');
        bytes
    }

    /// Parses a record; `None` when it is not one of this format.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(bytes)
            .ok()
            .filter(|r| r.format == TAKEOVER_FORMAT)
    }

    /// Its family, when it names one.
    pub fn kind(&self) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == self.kind)
    }

    /// The archive's entries as the writer described them.
    pub fn archived_files(&self) -> Vec<ArchivedFile> {
        self.files
            .iter()
            .map(|f| ArchivedFile {
                entry: f.entry.clone(),
                classifier: f.classifier.clone(),
                content_type: f.content_type.clone(),
                bytes: f.bytes,
                sha256: f.sha256.clone(),
            })
            .collect()
    }

    /// The row's cells (without the bookkeeping columns), when they fit the table of `kind`
    /// under `pii`.
    pub fn cells(&self, kind: Kind, pii: Pii) -> Option<Vec<Cell>> {
        let columns = pii::table_columns_for(kind, pii);
        if self.row.len() + BOOKKEEPING != columns.len() {
            return None;
        }
        self.row.iter().map(value_cell).collect()
    }
}

/// A cell as JSON: text as a string, program integers as numbers, lists as arrays.
fn cell_value(cell: Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Text(t) => Value::String(t),
        Cell::Bool(b) => Value::Bool(b),
        Cell::Int(i) => Value::from(i),
        Cell::List(items) => Value::Array(items),
    }
}

/// The inverse of [`cell_value`]; `None` for a value no cell gives (an object, a fraction).
fn value_cell(value: &Value) -> Option<Cell> {
    Some(match value {
        Value::Null => Cell::Null,
        Value::String(t) => Cell::Text(t.clone()),
        Value::Bool(b) => Cell::Bool(*b),
        Value::Number(n) => Cell::Int(n.as_i64()?),
        Value::Array(items) => Cell::List(items.clone()),
        Value::Object(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_gives_back_the_row_the_sink_would_write() {
        let data: Value = serde_json::from_str(
            r#"{"document":{"firstName":"ANNA","dob":"1990-01-02","status":"APPROVED_VERIFIED"},
                "verification":{"rejectReason":{"rejectReasonDetails":[{"detailsCode":"1"}]}},"odd":1}"#,
        )
        .unwrap();
        let written = WrittenArchive {
            path: "x".into(),
            relative: "archives/r1.zip.age".into(),
            sha256: "ab".repeat(32),
            bytes: 10,
            files: vec![],
        };
        for pii in [Pii::Full, Pii::Minimal] {
            let record =
                TakeoverRecord::new("run", "r1", Kind::Netverify, &data, &written, (pii, None));
            let back = TakeoverRecord::parse(&record.to_bytes()).unwrap();
            let cells = back.cells(Kind::Netverify, pii).unwrap();
            let summary = ArchiveSummary {
                image_count: 0,
                archive: String::new(),
                archive_sha256: String::new(),
                run: String::new(),
            };
            let mut expected = pii::apply(
                Kind::Netverify,
                pii,
                None,
                flatten::flatten(Kind::Netverify, "r1", &data, &summary),
            )
            .0;
            expected.truncate(expected.len() - BOOKKEEPING);
            assert_eq!(cells, expected, "{pii}");
            assert!(
                back.cells(
                    Kind::Netverify,
                    if pii == Pii::Full {
                        Pii::Minimal
                    } else {
                        Pii::Full
                    }
                )
                .is_none()
            );
        }
    }
}
