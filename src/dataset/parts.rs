//! Table parts: one writer per table that rolls over to a new part after [`PART_ROWS`] rows or
//! [`PART_BYTES`] bytes of Parquet, so a run of any size holds at most one open part per table
//! (arrow-rs keeps every row group's metadata until a file closes; a bounded part bounds it).
//! Each finished part is complete under its final name (`tables/{table}/{run}-{n}.{ext}`, the
//! CSV and Parquet of one `n` holding the same rows) and described by a [`PartRecord`] for the
//! commit. A table that gets no row still gets part 0, empty but with its schema, unless the
//! dataset already has a part of it: every table of a dataset can be read by glob from its
//! first commit on, and a run with nothing to add writes no table file.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::commit::PartRecord;
use super::{Format, RunId, part_relative, part_stem, table_dir};
use crate::flatten::{Column, Row};
use crate::output::fsmode::Modes;
use crate::output::tables::{TableError, TableWriter};

/// A part is closed after this many rows…
pub const PART_ROWS: u64 = 50_000;
/// …or once this many bytes of Parquet are flushed.
pub const PART_BYTES: u64 = 128 * 1024 * 1024;

/// What a part writer needs to know about where and how to write.
#[derive(Debug, Clone)]
pub struct PartOptions {
    /// The location's root.
    pub root: std::path::PathBuf,
    /// The run the parts belong to.
    pub run: RunId,
    /// Write CSV parts.
    pub csv: bool,
    /// Write Parquet parts.
    pub parquet: bool,
    /// Neutralise CSV cells a spreadsheet would run as a formula (`[output]
    /// csv_neutralise_formulas`; [`crate::output::tables::csv_cell`]).
    pub csv_neutralise_formulas: bool,
    /// The PII profile of the transaction tables and, for `pseudonymised`, its key.
    pub pii: crate::flatten::pii::Pii,
    /// The keyed HMAC of `pseudonymised`.
    pub pseudonymiser: Option<crate::flatten::pii::Pseudonymiser>,
    /// Modes of new files and directories.
    pub modes: Modes,
    /// Rows per part at most.
    pub max_rows: u64,
    /// Parquet bytes per part at most.
    pub max_bytes: u64,
    /// Tables that already have a part in the dataset: a run that writes no row of one of them
    /// writes no empty part of it (a no-op rerun adds a commit and nothing else).
    pub skip_empty: BTreeSet<String>,
}

/// The parts of one table written by one run.
pub struct PartWriter {
    table: &'static str,
    columns: &'static [Column],
    opts: PartOptions,
    open: Option<TableWriter>,
    next: u32,
    rows_in_part: u64,
    written: Vec<PartRecord>,
}

impl PartWriter {
    /// A writer for `table`; nothing is created until the first row (or [`PartWriter::finish`]).
    pub fn new(table: &'static str, columns: &'static [Column], opts: PartOptions) -> Self {
        PartWriter {
            table,
            columns,
            opts,
            open: None,
            next: 0,
            rows_in_part: 0,
            written: Vec::new(),
        }
    }

    /// Appends one row, opening or rolling over parts as needed.
    pub fn write(&mut self, row: &Row) -> Result<(), TableError> {
        if self.open.is_none() {
            self.open_part()?;
        }
        let w = self.open.as_mut().expect("a part is open");
        w.write(row)?;
        self.rows_in_part += 1;
        if self.rows_in_part >= self.opts.max_rows || w.bytes_flushed() >= self.opts.max_bytes {
            self.close_part()?;
        }
        Ok(())
    }

    fn open_part(&mut self) -> Result<(), TableError> {
        let dir = table_dir(&self.opts.root, self.table);
        self.opts
            .modes
            .create_dir_all(&dir)
            .map_err(|source| TableError::Io {
                path: dir.clone(),
                source,
            })?;
        let stem = part_stem(&self.opts.run, self.next);
        let w = TableWriter::create(
            &dir,
            &stem,
            self.columns,
            self.opts.csv,
            self.opts.parquet,
            self.opts.modes,
        )?
        .neutralising_formulas(self.opts.csv_neutralise_formulas);
        self.open = Some(w);
        self.rows_in_part = 0;
        Ok(())
    }

    fn close_part(&mut self) -> Result<(), TableError> {
        let Some(w) = self.open.take() else {
            return Ok(());
        };
        let stats = w.finish()?;
        let n = self.next;
        self.next += 1;
        for (digest, format) in [(stats.parquet, Format::Parquet), (stats.csv, Format::Csv)] {
            // Hashed as written: the part is not read back.
            let Some(digest) = digest else { continue };
            self.written.push(PartRecord {
                table: self.table.to_string(),
                path: part_relative(self.table, &self.opts.run, n, format),
                format,
                rows: stats.rows,
                bytes: digest.bytes,
                sha256: digest.sha256,
            });
        }
        Ok(())
    }

    /// Closes the open part (or writes an empty part 0 when the run wrote no row and the
    /// dataset has no part of the table yet) and returns every part written, in order.
    pub fn finish(mut self) -> Result<Vec<PartRecord>, TableError> {
        if self.open.is_none() && self.next == 0 && !self.opts.skip_empty.contains(self.table) {
            self.open_part()?;
        }
        self.close_part()?;
        Ok(self.written)
    }
}

/// sha256 (hex) and size of a file, read in 64 KiB blocks.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hex::encode(h.finalize()), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::{self, Cell, FileRecord};

    fn opts(root: &Path, max_rows: u64) -> PartOptions {
        PartOptions {
            root: root.to_path_buf(),
            run: RunId::parse("20261206T074501Z-7f2a").unwrap(),
            csv: true,
            parquet: true,
            csv_neutralise_formulas: true,
            pii: Default::default(),
            pseudonymiser: None,
            modes: Modes::default(),
            max_rows,
            max_bytes: PART_BYTES,
            skip_empty: BTreeSet::new(),
        }
    }

    fn row(i: u32) -> Row {
        flatten::file_row(&FileRecord {
            reference: format!("r{i}"),
            kind: crate::Kind::Netverify,
            entry: "data.json".into(),
            classifier: None,
            content_type: "application/json".into(),
            bytes: 3,
            sha256: "00".repeat(32),
            run: "20261206T074501Z-7f2a".into(),
        })
    }

    #[test]
    fn parts_roll_over_at_the_row_limit_and_are_described_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartWriter::new("files", flatten::files_columns(), opts(dir.path(), 3));
        for i in 0..7 {
            w.write(&row(i)).unwrap();
        }
        let parts = w.finish().unwrap();
        let rows: Vec<(u64, &str)> = parts
            .iter()
            .map(|p| (p.rows, p.path.rsplit('/').next().unwrap()))
            .collect();
        assert_eq!(
            rows,
            [
                (3, "20261206T074501Z-7f2a-0.parquet"),
                (3, "20261206T074501Z-7f2a-0.csv"),
                (3, "20261206T074501Z-7f2a-1.parquet"),
                (3, "20261206T074501Z-7f2a-1.csv"),
                (1, "20261206T074501Z-7f2a-2.parquet"),
                (1, "20261206T074501Z-7f2a-2.csv"),
            ]
        );
        for p in &parts {
            let bytes = std::fs::read(dir.path().join(&p.path)).unwrap();
            assert_eq!(p.bytes, bytes.len() as u64);
            assert_eq!(p.sha256, hex::encode(Sha256::digest(&bytes)));
        }
        let csv = std::fs::read_to_string(dir.path().join(&parts[5].path)).unwrap();
        assert_eq!(csv.lines().count(), 2, "header and r6");
        assert!(csv.contains("r6,"));
        let _ = Cell::Null;
    }

    #[test]
    fn a_table_without_rows_gets_one_empty_part_with_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let parts = PartWriter::new("files", flatten::files_columns(), opts(dir.path(), 3))
            .finish()
            .unwrap();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.rows == 0));
        let csv = std::fs::read_to_string(dir.path().join(&parts[1].path)).unwrap();
        assert!(csv.starts_with("reference,kind,entry"), "{csv}");
    }
}
