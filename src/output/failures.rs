//! `failures.csv`: one row per reference not exported, usable as the input of a later run as it is.
//! Written to a temporary name and renamed when the run ends, so a crash never leaves a partial list
//! looking complete.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::Kind;
use crate::outcome::{ErrorCode, Stage};

/// The header, in SPEC order: the row, then the run (commit) that recorded it.
pub const HEADER: [&str; 8] = [
    "reference",
    "kind",
    "stage",
    "http_status",
    "error",
    "attempts",
    "next_attempt_after",
    "run",
];

/// One row of `failures.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRow {
    /// The reference as given (already sanitised for invalid ones).
    pub reference: String,
    /// Its family.
    pub kind: Kind,
    /// The step that failed.
    pub stage: Stage,
    /// The last HTTP status, if any.
    pub http_status: Option<u16>,
    /// SPEC error code.
    pub error: ErrorCode,
    /// Requests made for the failing step.
    pub attempts: u32,
    /// No new attempt before this instant (PENDING).
    pub next_attempt_after: Option<DateTime<Utc>>,
}

/// Streams rows into `failures.csv.tmp`; [`FailuresWriter::finish`] renames it into place.
pub struct FailuresWriter {
    csv: csv::Writer<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    rows: u64,
}

impl FailuresWriter {
    /// Creates `<dir>/failures.csv.tmp` with the header.
    pub fn create(dir: &Path, modes: super::fsmode::Modes) -> std::io::Result<Self> {
        let path = dir.join("failures.csv");
        // A temporary name of this process: shards rebuilding one dataset's file at once never
        // share one.
        let tmp = dir.join(format!(".failures.csv.{}.tmp", std::process::id()));
        let mut csv = csv::Writer::from_writer(BufWriter::new(modes.create_file(&tmp)?));
        csv.write_record(HEADER)?;
        Ok(FailuresWriter {
            csv,
            tmp,
            path,
            rows: 0,
        })
    }

    /// Appends one row, recorded by `run`.
    pub fn write(&mut self, row: &FailureRow, run: &str) -> std::io::Result<()> {
        let status = row.http_status.map(|s| s.to_string()).unwrap_or_default();
        let attempts = row.attempts.to_string();
        let next = row
            .next_attempt_after
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_default();
        self.csv.write_record([
            row.reference.as_str(),
            row.kind.as_str(),
            row.stage.as_str(),
            status.as_str(),
            row.error.as_str(),
            attempts.as_str(),
            next.as_str(),
            run,
        ])?;
        self.rows += 1;
        Ok(())
    }

    /// Flushes, fsyncs and renames into place. Returns the number of rows.
    pub fn finish(self) -> std::io::Result<u64> {
        let file = self
            .csv
            .into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .into_inner()
            .map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        super::fsmode::sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        Ok(self.rows)
    }
}

/// Reads a `failures.csv` written by an earlier run (rows that do not parse are skipped: the file is
/// only advice about when to call again, never a record of what was exported). A stage or error
/// word this version does not know is kept as `Other`, so the row is written back unchanged.
pub fn read(path: &Path) -> std::io::Result<Vec<FailureRow>> {
    let mut rows = Vec::new();
    let mut reader = match csv::Reader::from_path(path) {
        Ok(r) => r,
        Err(e) => match e.kind() {
            csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => return Ok(rows),
            _ => return Err(std::io::Error::other(e.to_string())),
        },
    };
    for record in reader.records().flatten() {
        let field = |i: usize| record.get(i).unwrap_or("").to_string();
        let Ok(kind) = field(1).parse::<Kind>() else {
            continue;
        };
        rows.push(FailureRow {
            reference: field(0),
            kind,
            stage: Stage::from_word(&field(2)),
            http_status: field(3).parse().ok(),
            error: ErrorCode::from_word(&field(4)),
            attempts: field(5).parse().unwrap_or(0),
            next_attempt_after: DateTime::parse_from_rfc3339(&field(6))
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_the_file_appears_only_on_finish() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = FailuresWriter::create(dir.path(), Default::default()).unwrap();
        let row = FailureRow {
            reference: "abc-1".into(),
            kind: Kind::Netverify,
            stage: Stage::Status,
            http_status: Some(200),
            error: ErrorCode::Pending,
            attempts: 11,
            next_attempt_after: Some(
                DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
        };
        w.write(&row, "20261206T074501Z-7f2a").unwrap();
        assert!(!dir.path().join("failures.csv").exists());
        assert_eq!(w.finish().unwrap(), 1);
        let text = std::fs::read_to_string(dir.path().join("failures.csv")).unwrap();
        assert_eq!(
            text,
            "reference,kind,stage,http_status,error,attempts,next_attempt_after,run\nabc-1,netverify,status,200,PENDING,11,2026-01-02T03:04:05Z,20261206T074501Z-7f2a\n"
        );
        assert_eq!(read(&dir.path().join("failures.csv")).unwrap(), vec![row]);
    }

    /// A row from a newer version (or edited by hand) with words this version does not know:
    /// read without error and written back byte for byte, so no follow-up is lost.
    #[test]
    fn unknown_stage_and_error_words_survive_a_read_and_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let text = "reference,kind,stage,http_status,error,attempts,next_attempt_after,run\n\
                    abc-1,netverify,thumbnail,401,DENIED,1,,r1\n\
                    abc-2,document,page,404,NOT_FOUND,1,,r1\n";
        std::fs::write(dir.path().join("failures.csv"), text).unwrap();
        let rows = read(&dir.path().join("failures.csv")).unwrap();
        assert_eq!(rows[0].stage, Stage::Other("thumbnail".into()));
        assert_eq!(rows[0].error, ErrorCode::Other("DENIED".into()));
        assert_eq!(
            (rows[1].stage.clone(), rows[1].error.clone()),
            (Stage::Page, ErrorCode::NotFound)
        );
        let out = tempfile::tempdir().unwrap();
        let mut w = FailuresWriter::create(out.path(), Default::default()).unwrap();
        for row in &rows {
            w.write(row, "r1").unwrap();
        }
        w.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("failures.csv")).unwrap(),
            text
        );
    }
}
