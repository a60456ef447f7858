//! The dataset's open follow-ups after a run, rebuilt without holding them: the rows of the run's
//! start and of the commits published since go through one external sort, the references those
//! commits exported through another, and one merge of the two hands each open follow-up on. Memory
//! stays within the sorts' budgets whatever the number of rows (a million-reference run with a
//! few percent of failures would otherwise hold tens of thousands of rows at its end).

use std::io;
use std::path::Path;

use super::{Catalogue, CatalogueError, Recorded, failure_row, preferred_parts};
use crate::Kind;
use crate::dataset::FAILURES_TABLE;
use crate::output::failures::{FailureRow, HEADER};
use crate::spill::{self, ExternalSort};

impl Catalogue {
    /// Hands `each` the dataset's open follow-ups after these commits, given `open`, the open
    /// follow-ups of the commits read before them (the run's start): per (reference, kind) the
    /// row of the latest run (of one run, the last row), unless one of these commits exported
    /// that (reference, kind). The same rows as reading every commit again, at the cost of
    /// reading only these; in (reference, kind) order. Returns how many were handed on.
    pub fn for_each_open_failure_after(
        &self,
        open: Vec<Recorded>,
        dir: &Path,
        each: impl FnMut(&FailureRow, &str) -> io::Result<()>,
    ) -> Result<u64, CatalogueError> {
        self.open_failures_after_within(open, dir, spill::DEFAULT_BUDGET, each)
    }

    /// [`Catalogue::for_each_open_failure_after`] with the sorts' memory budget chosen (tests
    /// force spilling).
    pub(in crate::dataset) fn open_failures_after_within(
        &self,
        open: Vec<Recorded>,
        dir: &Path,
        budget: usize,
        mut each: impl FnMut(&FailureRow, &str) -> io::Result<()>,
    ) -> Result<u64, CatalogueError> {
        let mut rows = ExternalSort::new(dir, budget);
        let (mut record, mut seq) = (Vec::new(), 0u64);
        // Each row is dropped once it is in the sort.
        for r in open {
            encode_row(&mut record, &r.row, &r.run, seq);
            seq += 1;
            rows.push(&record).map_err(CatalogueError::Spool)?;
        }
        for c in &self.commits {
            for part in preferred_parts(c, FAILURES_TABLE) {
                self.rows(part, &HEADER[..7], |cells| {
                    let Some(row) = failure_row(cells) else {
                        return Ok(());
                    };
                    encode_row(&mut record, &row, &c.run, seq);
                    seq += 1;
                    rows.push(&record)
                })?;
            }
        }
        if rows.is_empty() {
            return Ok(0);
        }
        let mut exported = ExternalSort::new(dir, budget);
        let mut key = Vec::new();
        self.for_each_exported(|reference, kind| {
            encode_key(&mut key, reference, kind);
            exported.push(&key)
        })?;
        let mut exported = exported.finish().map_err(CatalogueError::Spool)?;
        let mut rows = rows.finish().map_err(CatalogueError::Spool)?;
        let mut closed = Closed {
            next: Vec::new(),
            more: false,
        };
        closed.more = exported
            .next_into(&mut closed.next)
            .map_err(CatalogueError::Spool)?;
        let (mut latest, mut handed) = (Vec::new(), 0u64);
        let mut hand_on = |latest: &[u8], exported: &mut spill::Sorted| -> io::Result<()> {
            if closed.contains(key_of(latest), exported)? {
                return Ok(());
            }
            let (row, run) = decode_row(latest)?;
            handed += 1;
            each(&row, &run)
        };
        // Records of one (reference, kind) are neighbours, the latest (run, then order) last.
        while rows.next_into(&mut record).map_err(CatalogueError::Spool)? {
            if !latest.is_empty() && key_of(&latest) != key_of(&record) {
                hand_on(&latest, &mut exported).map_err(CatalogueError::Spool)?;
            }
            std::mem::swap(&mut latest, &mut record);
        }
        hand_on(&latest, &mut exported).map_err(CatalogueError::Spool)?;
        Ok(handed)
    }
}

/// The exported keys, read in step with the rows' keys (both ascending).
struct Closed {
    next: Vec<u8>,
    more: bool,
}

impl Closed {
    fn contains(&mut self, key: &[u8], exported: &mut spill::Sorted) -> io::Result<bool> {
        while self.more && self.next.as_slice() < key {
            self.more = exported.next_into(&mut self.next)?;
        }
        Ok(self.more && self.next.as_slice() == key)
    }
}

/// `reference` (each 0 byte written 0 1) 0 0, then the kind's ordinal: keys sort by reference,
/// then kind, and a key never is a prefix of another.
fn encode_key(out: &mut Vec<u8>, reference: &str, kind: Kind) {
    out.clear();
    for &b in reference.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(1);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out.push(Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u8);
}

/// The key part of a row record.
fn key_of(record: &[u8]) -> &[u8] {
    let mut i = 0;
    while i + 1 < record.len() {
        match (record[i], record[i + 1]) {
            (0, 0) => return &record[..(i + 3).min(record.len())],
            (0, _) => i += 2,
            _ => i += 1,
        }
    }
    record
}

/// A row record: its key, the run, 0, the order it was read in (8 bytes, big-endian), then the
/// cells of the row (each a 4-byte length and its bytes; `u32::MAX` for none).
fn encode_row(out: &mut Vec<u8>, row: &FailureRow, run: &str, seq: u64) {
    encode_key(out, &row.reference, row.kind);
    out.extend_from_slice(run.as_bytes());
    out.push(0);
    out.extend_from_slice(&seq.to_be_bytes());
    let status = row.http_status.map(|s| s.to_string());
    let attempts = row.attempts.to_string();
    let next = row
        .next_attempt_after
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let cells = [
        Some(row.reference.as_str()),
        Some(row.kind.as_str()),
        Some(row.stage.as_str()),
        status.as_deref(),
        Some(row.error.as_str()),
        Some(attempts.as_str()),
        next.as_deref(),
    ];
    for cell in cells {
        match cell {
            Some(text) => {
                out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }
}

fn decode_row(record: &[u8]) -> io::Result<(FailureRow, String)> {
    let bad = || io::Error::other("a follow-up record of the sort does not decode");
    let rest = &record[key_of(record).len()..];
    let end = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
    let run = std::str::from_utf8(&rest[..end]).map_err(|_| bad())?;
    let mut rest = rest.get(end + 1 + 8..).ok_or_else(bad)?;
    let mut cells = Vec::with_capacity(7);
    for _ in 0..7 {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_le_bytes(*len);
        if len == u32::MAX {
            cells.push(None);
            rest = tail;
            continue;
        }
        let (text, tail) = tail.split_at_checked(len as usize).ok_or_else(bad)?;
        cells.push(Some(
            std::str::from_utf8(text).map_err(|_| bad())?.to_string(),
        ));
        rest = tail;
    }
    let row = failure_row(&cells).ok_or_else(bad)?;
    Ok((row, run.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{ErrorCode, Stage};
    use chrono::TimeZone;

    #[test]
    fn a_row_survives_its_record_and_keys_sort_by_reference_then_kind() {
        let row = FailureRow {
            reference: "a\0b".into(),
            kind: Kind::Document,
            stage: Stage::Data,
            http_status: Some(503),
            error: ErrorCode::HttpError,
            attempts: 7,
            next_attempt_after: Some(chrono::Utc.with_ymd_and_hms(2026, 12, 7, 1, 2, 3).unwrap()),
        };
        let mut record = Vec::new();
        encode_row(&mut record, &row, "20261206T000000Z-0001", 9);
        assert_eq!(
            decode_row(&record).unwrap(),
            (row.clone(), "20261206T000000Z-0001".to_string())
        );
        let mut key = Vec::new();
        encode_key(&mut key, "a\0b", Kind::Document);
        assert_eq!(key_of(&record), key.as_slice());
        let keys: Vec<Vec<u8>> = [
            ("a", Kind::Document),
            ("a", Kind::Netverify),
            ("a\0", Kind::Netverify),
            ("ab", Kind::Netverify),
        ]
        .iter()
        .map(|(r, k)| {
            let mut key = Vec::new();
            encode_key(&mut key, r, *k);
            key
        })
        .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        // Kind::ALL puts Netverify before Document.
        let expected = [&keys[1], &keys[0], &keys[2], &keys[3]].map(Clone::clone);
        assert_eq!(sorted, expected);
    }
}
