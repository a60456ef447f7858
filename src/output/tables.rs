//! Output stage: the CSV and Parquet table writers.
//!
//! Rows arrive one at a time (from `flatten`); at most [`BATCH_ROWS`] are buffered before
//! they become an Arrow record batch, and Parquet row groups are closed at [`ROW_GROUP_ROWS`]
//! rows or [`ROW_GROUP_BYTES`] of writer memory, so memory stays bounded however many
//! references a job exports.
//! Files are written under `.<name>.csv.tmp` / `.<name>.parquet.tmp` (hidden: no reader that
//! lists the directory takes them for a table) and renamed into place
//! only by [`TableWriter::finish`], after the Parquet footer is written and both files are
//! fsynced: a table under its final name is always complete.
//!
//! This module decides nothing about columns (their list lives in `flatten`) and never
//! logs cell values, which hold personal data. A value that does not parse as its column's
//! type is null in Parquet while CSV keeps the API's text; nothing here panics on data.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray, TimestampMillisecondArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::fsmode::Modes;
use crate::flatten::{Cell, Column, ColumnType, ListItem, Row, StructField};

/// Rows buffered before they are turned into one record batch (a netverify row has ~60 cells).
pub const BATCH_ROWS: usize = 256;

/// Rows per Parquet row group at most: bounds the encoded data the Parquet writer holds.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

/// A row group is closed early once the writer holds this much memory for it, so wide tables of
/// long strings do not hold 64 K rows in memory. With [`PAGE_BYTES`] this gives row groups of
/// about 2,300 netverify rows or 16,000 files rows; the four tables together hold at most ~8 MiB.
pub const ROW_GROUP_BYTES: usize = 2 * 1024 * 1024;

/// Data and dictionary page limit. Parquet's default (1 MiB each, per column) kept up to a
/// megabyte of uncompressed values per column of the ~60 netverify columns before compressing,
/// and built dictionaries of up to a megabyte for columns whose values never repeat (references,
/// sha256): small pages are compressed as they fill, and such columns fall back to plain
/// encoding early.
pub const PAGE_BYTES: usize = 64 * 1024;

/// Why a table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Creating, writing, syncing or renaming a table file failed.
    #[error("table file {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CSV encoder failed.
    #[error("CSV table {path}: {source}")]
    Csv {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: csv::Error,
    },
    /// The Parquet encoder failed.
    #[error("Parquet table {path}: {source}")]
    Parquet {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// Building a record batch failed.
    #[error("Parquet table {path}: building a record batch: {source}")]
    Arrow {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: arrow_schema::ArrowError,
    },
    /// A row does not have one cell per column: a programming error in the caller.
    #[error("table {table}: row has {got} cells, the table has {expected} columns")]
    RowWidth {
        /// The table name.
        table: String,
        /// Number of columns.
        expected: usize,
        /// Number of cells in the row.
        got: usize,
    },
}

/// What [`TableWriter::finish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    /// Data rows written (the CSV header is not counted).
    pub rows: u64,
    /// The CSV file's sha256 and size, when CSV was written.
    pub csv: Option<FileDigest>,
    /// The Parquet file's sha256 and size, when Parquet was written.
    pub parquet: Option<FileDigest>,
}

/// A file's sha256 (hex) and size, taken from the bytes as they were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Lower-case hex.
    pub sha256: String,
    /// Bytes.
    pub bytes: u64,
}

/// A file that hashes what is written to it: a part's digest for its commit without reading
/// the part back.
struct HashedFile {
    file: File,
    hash: Sha256,
    bytes: u64,
}

impl HashedFile {
    fn new(file: File) -> Self {
        HashedFile {
            file,
            hash: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (File, FileDigest) {
        let digest = FileDigest {
            sha256: hex::encode(self.hash.finalize()),
            bytes: self.bytes,
        };
        (self.file, digest)
    }
}

impl Write for HashedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

struct CsvPart {
    tmp: PathBuf,
    path: PathBuf,
    writer: csv::Writer<BufWriter<HashedFile>>,
}

struct ParquetPart {
    tmp: PathBuf,
    path: PathBuf,
    writer: ArrowWriter<HashedFile>,
}

/// Writes one table to CSV and/or Parquet, incrementally.
///
/// Dropping it without [`finish`](Self::finish) leaves only the `.tmp` files behind, never
/// a table under its final name.
pub struct TableWriter {
    name: String,
    dir: PathBuf,
    columns: &'static [Column],
    schema: SchemaRef,
    csv: Option<CsvPart>,
    parquet: Option<ParquetPart>,
    pending: Vec<Row>,
    rows: u64,
    /// Whether CSV cells a spreadsheet would run as a formula are neutralised
    /// ([`csv_cell`]); Parquet is always exact.
    neutralise_formulas: bool,
}

impl TableWriter {
    /// Creates `<dir>/.<name>.csv.tmp` and/or `<dir>/.<name>.parquet.tmp` (truncating any
    /// left from an earlier run) and writes the CSV header.
    pub fn create(
        dir: &Path,
        name: &str,
        columns: &'static [Column],
        csv: bool,
        parquet: bool,
        modes: Modes,
    ) -> Result<Self, TableError> {
        let schema = arrow_schema(columns);
        let csv = if csv {
            let path = dir.join(format!("{name}.csv"));
            let tmp = dir.join(format!(".{name}.csv.tmp"));
            let file = modes.create_file(&tmp).map_err(|source| TableError::Io {
                path: tmp.clone(),
                source,
            })?;
            let mut writer = csv::Writer::from_writer(BufWriter::new(HashedFile::new(file)));
            writer
                .write_record(columns.iter().map(|c| c.name.as_str()))
                .map_err(|source| TableError::Csv {
                    path: tmp.clone(),
                    source,
                })?;
            Some(CsvPart { tmp, path, writer })
        } else {
            None
        };
        let parquet = if parquet {
            let path = dir.join(format!("{name}.parquet"));
            let tmp = dir.join(format!(".{name}.parquet.tmp"));
            let file = modes.create_file(&tmp).map_err(|source| TableError::Io {
                path: tmp.clone(),
                source,
            })?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                .set_data_page_size_limit(PAGE_BYTES)
                .set_dictionary_page_size_limit(PAGE_BYTES)
                // Statistics per column chunk (min, max, nulls: what readers prune row groups
                // with), no page index: the writer keeps every page's index entries in memory
                // until the footer, which grew with the number of rows (3.7 MiB at 300,000
                // references); row groups of 2 MiB gain little from page-level pruning.
                .set_statistics_enabled(EnabledStatistics::Chunk)
                .set_offset_index_disabled(true)
                .build();
            let writer = ArrowWriter::try_new(HashedFile::new(file), schema.clone(), Some(props))
                .map_err(|source| TableError::Parquet {
                path: tmp.clone(),
                source,
            })?;
            Some(ParquetPart { tmp, path, writer })
        } else {
            None
        };
        Ok(Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            columns,
            schema,
            csv,
            parquet,
            pending: Vec::new(),
            rows: 0,
            neutralise_formulas: false,
        })
    }

    /// Neutralises (or not) CSV cells a spreadsheet would run as a formula; see [`csv_cell`].
    pub fn neutralising_formulas(mut self, on: bool) -> Self {
        self.neutralise_formulas = on;
        self
    }

    /// Bytes of Parquet already flushed to the file (row groups closed so far): how a part
    /// writer judges a part's size without asking the file system.
    pub fn bytes_flushed(&self) -> u64 {
        self.parquet
            .as_ref()
            .map_or(0, |p| p.writer.bytes_written() as u64)
    }

    /// Appends one row (one cell per column, in column order).
    pub fn write(&mut self, row: &Row) -> Result<(), TableError> {
        if row.0.len() != self.columns.len() {
            return Err(TableError::RowWidth {
                table: self.name.clone(),
                expected: self.columns.len(),
                got: row.0.len(),
            });
        }
        if let Some(part) = &mut self.csv {
            let on = self.neutralise_formulas;
            part.writer
                .write_record(
                    (self.columns.iter().zip(&row.0))
                        .map(|(column, cell)| csv_cell(cell, column, on)),
                )
                .map_err(|source| TableError::Csv {
                    path: part.tmp.clone(),
                    source,
                })?;
        }
        if self.parquet.is_some() {
            self.pending.push(row.clone());
            if self.pending.len() >= BATCH_ROWS {
                self.flush_batch()?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), TableError> {
        let Some(part) = &mut self.parquet else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = record_batch(&self.schema, self.columns, &self.pending).map_err(|source| {
            TableError::Arrow {
                path: part.tmp.clone(),
                source,
            }
        })?;
        part.writer
            .write(&batch)
            .map_err(|source| TableError::Parquet {
                path: part.tmp.clone(),
                source,
            })?;
        // `memory_size` counts what the writer holds (pages not yet compressed, dictionaries,
        // compressed pages); `in_progress_size` only the encoded estimate, which let a wide
        // table hold several times its budget.
        if part.writer.memory_size() >= ROW_GROUP_BYTES {
            part.writer.flush().map_err(|source| TableError::Parquet {
                path: part.tmp.clone(),
                source,
            })?;
        }
        self.pending.clear();
        Ok(())
    }

    /// Flushes, closes the Parquet footer, fsyncs, renames the `.tmp` files into place and
    /// fsyncs the directory.
    pub fn finish(mut self) -> Result<TableStats, TableError> {
        self.flush_batch()?;
        let mut stats = TableStats {
            rows: self.rows,
            csv: None,
            parquet: None,
        };
        if let Some(part) = self.csv.take() {
            let CsvPart { tmp, path, writer } = part;
            let buffered = writer.into_inner().map_err(|e| TableError::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            let file = buffered.into_inner().map_err(|e| TableError::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            let (file, digest) = file.finish();
            sync_and_rename(file, &tmp, &path)?;
            stats.csv = Some(digest);
        }
        if let Some(part) = self.parquet.take() {
            let ParquetPart { tmp, path, writer } = part;
            // into_inner writes the footer: without it the file is unreadable.
            let file = writer.into_inner().map_err(|source| TableError::Parquet {
                path: tmp.clone(),
                source,
            })?;
            let (file, digest) = file.finish();
            sync_and_rename(file, &tmp, &path)?;
            stats.parquet = Some(digest);
        }
        super::fsmode::sync_dir(&self.dir).map_err(|source| TableError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(stats)
    }
}

fn sync_and_rename(mut file: File, tmp: &Path, path: &Path) -> Result<(), TableError> {
    let io = |source| TableError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    file.flush().map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(tmp, path).map_err(|source| TableError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The Arrow schema of a table: every column nullable, typed per [`ColumnType`].
pub fn arrow_schema(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, data_type(&c.ty), true))
            .collect::<Vec<_>>(),
    ))
}

fn struct_fields(fields: &[StructField]) -> Fields {
    fields
        .iter()
        .map(|f| Field::new(&f.name, DataType::Utf8, true))
        .collect()
}

fn list_item_field(item: &ListItem) -> Arc<Field> {
    let ty = match item {
        ListItem::Utf8 => DataType::Utf8,
        ListItem::Struct(fields) => DataType::Struct(struct_fields(fields)),
    };
    Arc::new(Field::new_list_field(ty, true))
}

fn data_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::Utf8 => DataType::Utf8,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Date32 => DataType::Date32,
        ColumnType::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        ColumnType::Int64 => DataType::Int64,
        ColumnType::List(item) => DataType::List(list_item_field(item)),
    }
}

/// The CSV text of a cell: the API's text, lists as JSON text, null as empty. Public so that
/// `verify` compares a table's cells with what this writer writes, not with a copy of its rules.
pub fn csv_text(cell: &Cell) -> String {
    match cell {
        Cell::Null => String::new(),
        Cell::Text(s) => s.clone(),
        Cell::Bool(b) => b.to_string(),
        Cell::Int(i) => i.to_string(),
        Cell::List(values) => serde_json::to_string(values).unwrap_or_default(),
    }
}

/// The CSV text of a cell of `column` as the writer writes it: [`csv_text`], and with
/// `neutralise` on, a text cell that a spreadsheet would run as a formula is prefixed with `'`
/// ([`neutralise_formula`]). The `reference` column is exempt: references are `[A-Za-z0-9-]`
/// (no function call can be written with those) and are the key other runs read back.
pub fn csv_cell(cell: &Cell, column: &Column, neutralise: bool) -> String {
    match cell {
        Cell::Text(s) if neutralise && column.name != "reference" => {
            neutralise_formula(s).into_owned()
        }
        other => csv_text(other),
    }
}

/// A text that a spreadsheet would evaluate, made inert: one that starts with `=`, `+`, `-`,
/// `@`, a tab or a carriage return and is not a plain number (`-12`, `+4.5e3`) gets a leading
/// `'` (the OWASP rule for CSV injection); every other text is returned as it is.
pub fn neutralise_formula(text: &str) -> std::borrow::Cow<'_, str> {
    let risky = matches!(
        text.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    );
    if risky && !is_plain_number(text) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// `[+-]?(digits[.digits]|.digits)([eE][+-]?digits)?`: a number a spreadsheet reads as a number.
fn is_plain_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

fn cell_text(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Null => None,
        other => Some(csv_text(other)),
    }
}

fn cell_bool(cell: &Cell) -> Option<bool> {
    match cell {
        Cell::Bool(b) => Some(*b),
        Cell::Text(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Cell::Text(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn parse_date32(text: &str) -> Option<i32> {
    let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from(date.signed_duration_since(epoch).num_days()).ok()
}

/// Milliseconds since the epoch (UTC) of `YYYY-MM-DDThh:mm:ss[.SSS][Z]`: the guide's
/// format, with or without the `Z` (the Authentication sample omits it) and the
/// fraction; an explicit RFC 3339 offset is honoured too.
pub fn parse_timestamp_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let naive = text.strip_suffix('Z').unwrap_or(text);
    if let Ok(t) = NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc().timestamp_millis());
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn cell_date(cell: &Cell) -> Option<i32> {
    match cell {
        Cell::Text(s) => parse_date32(s),
        _ => None,
    }
}

fn cell_timestamp(cell: &Cell) -> Option<i64> {
    match cell {
        Cell::Text(s) => parse_timestamp_ms(s),
        _ => None,
    }
}

fn cell_int(cell: &Cell) -> Option<i64> {
    match cell {
        Cell::Int(i) => Some(*i),
        Cell::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A list element's scalar as text; objects and arrays have no text form here.
fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn list_array(item: &ListItem, cells: &[&Cell]) -> ArrayRef {
    let mut lengths = Vec::with_capacity(cells.len());
    let mut valid = Vec::with_capacity(cells.len());
    let mut elements: Vec<&Value> = Vec::new();
    for cell in cells {
        match cell {
            Cell::List(values) => {
                lengths.push(values.len());
                valid.push(true);
                elements.extend(values.iter());
            }
            _ => {
                lengths.push(0);
                valid.push(false);
            }
        }
    }
    let values: ArrayRef = match item {
        ListItem::Utf8 => Arc::new(StringArray::from(
            elements.iter().map(|v| value_text(v)).collect::<Vec<_>>(),
        )),
        ListItem::Struct(fields) => {
            let children: Vec<ArrayRef> = fields
                .iter()
                .map(|f| {
                    Arc::new(StringArray::from(
                        elements
                            .iter()
                            .map(|v| v.get(&f.key).and_then(value_text))
                            .collect::<Vec<_>>(),
                    )) as ArrayRef
                })
                .collect();
            let present: Vec<bool> = elements.iter().map(|v| v.is_object()).collect();
            Arc::new(StructArray::new(
                struct_fields(fields),
                children,
                Some(NullBuffer::from(present)),
            ))
        }
    };
    Arc::new(ListArray::new(
        list_item_field(item),
        OffsetBuffer::from_lengths(lengths),
        values,
        Some(NullBuffer::from(valid)),
    ))
}

fn column_array(ty: &ColumnType, cells: &[&Cell]) -> ArrayRef {
    match ty {
        ColumnType::Utf8 => Arc::new(StringArray::from(
            cells.iter().map(|c| cell_text(c)).collect::<Vec<_>>(),
        )),
        ColumnType::Boolean => Arc::new(BooleanArray::from(
            cells.iter().map(|c| cell_bool(c)).collect::<Vec<_>>(),
        )),
        ColumnType::Date32 => Arc::new(Date32Array::from(
            cells.iter().map(|c| cell_date(c)).collect::<Vec<_>>(),
        )),
        ColumnType::TimestampMs => Arc::new(
            TimestampMillisecondArray::from(
                cells.iter().map(|c| cell_timestamp(c)).collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        ColumnType::Int64 => Arc::new(Int64Array::from(
            cells.iter().map(|c| cell_int(c)).collect::<Vec<_>>(),
        )),
        ColumnType::List(item) => list_array(item, cells),
    }
}

/// The record batch of `rows`, typed per column as the Parquet files hold them. Public so that
/// `verify` compares a table's values with what this writer writes.
pub fn record_batch(
    schema: &SchemaRef,
    columns: &[Column],
    rows: &[Row],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let arrays = columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let cells: Vec<&Cell> = rows.iter().map(|r| &r.0[i]).collect();
            column_array(&column.ty, &cells)
        })
        .collect();
    RecordBatch::try_new(schema.clone(), arrays)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_numbers_and_plain_text_are_not() {
        for (text, expected) in [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "'=HYPERLINK(\"http://x\",\"y\")",
            ),
            ("+1-2", "'+1-2"),
            ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("+49 30 123", "'+49 30 123"),
            ("-", "'-"),
            ("1e", "1e"),
            ("-12", "-12"),
            ("+4.5e3", "+4.5e3"),
            ("-.5", "-.5"),
            ("-1.", "-1."),
            ("MUSTERMANN", "MUSTERMANN"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(neutralise_formula(text), expected, "{text:?}");
        }
        let text = crate::flatten::Cell::Text("=1+1".into());
        let reference = &crate::flatten::files_columns()[0];
        assert_eq!(reference.name, "reference");
        let entry = &crate::flatten::files_columns()[2];
        assert_eq!(csv_cell(&text, entry, true), "'=1+1");
        assert_eq!(csv_cell(&text, entry, false), "=1+1");
        assert_eq!(csv_cell(&text, reference, true), "=1+1");
    }

    #[test]
    fn row_groups_close_at_the_memory_budget_and_every_row_reads_back() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let dir = tempfile::tempdir().unwrap();
        let mut t = TableWriter::create(
            dir.path(),
            "files",
            crate::flatten::files_columns(),
            false,
            true,
            Modes::default(),
        )
        .unwrap();
        let rows = 60_000u64;
        for i in 0..rows {
            let record = crate::flatten::FileRecord {
                reference: format!("ref-{i:08}"),
                kind: crate::Kind::Netverify,
                entry: format!("images/{i}.jpg"),
                classifier: Some("FRONT".into()),
                content_type: "image/jpeg".into(),
                bytes: i,
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(i.to_le_bytes())),
                run: "20261206T074501Z-7f2a".into(),
            };
            t.write(&crate::flatten::file_row(&record)).unwrap();
        }
        t.finish().unwrap();
        let file = File::open(dir.path().join("files.parquet")).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let meta = reader.metadata();
        let groups: Vec<i64> = (0..meta.num_row_groups())
            .map(|g| meta.row_group(g).num_rows())
            .collect();
        assert_eq!(groups.iter().sum::<i64>(), rows as i64);
        // 60,000 rows of unique 64-character hashes are far over 2 MiB: several row groups, none
        // at the 64 K row cap.
        assert!(groups.len() >= 3, "row groups: {groups:?}");
        assert!(
            groups.iter().all(|&n| n < ROW_GROUP_ROWS as i64),
            "{groups:?}"
        );
        let mut seen = 0u64;
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap().to_string();
            assert!(row.contains(&format!("ref-{seen:08}")), "{row}");
            seen += 1;
        }
        assert_eq!(seen, rows);
    }

    #[test]
    fn dates_parse_to_days_since_epoch() {
        assert_eq!(parse_date32("1970-01-01"), Some(0));
        assert_eq!(parse_date32("1990-01-01"), Some(7305));
        assert_eq!(parse_date32("1969-12-31"), Some(-1));
        assert_eq!(parse_date32("01/22"), None);
        assert_eq!(parse_date32("2019-02-30"), None);
        assert_eq!(parse_date32(""), None);
    }

    #[test]
    fn timestamps_accept_the_guide_variants() {
        let ms = 1_558_621_947_534; // 2019-05-23T14:32:27.534Z
        assert_eq!(parse_timestamp_ms("2019-05-23T14:32:27.534Z"), Some(ms));
        assert_eq!(parse_timestamp_ms("2019-05-23T14:32:27.534"), Some(ms));
        assert_eq!(parse_timestamp_ms("2019-05-23T14:32:27Z"), Some(ms - 534));
        assert_eq!(parse_timestamp_ms("2019-05-23T14:32:27"), Some(ms - 534));
        assert_eq!(
            parse_timestamp_ms("2019-05-23T16:32:27.534+02:00"),
            Some(ms)
        );
        assert_eq!(parse_timestamp_ms("yesterday"), None);
        assert_eq!(parse_timestamp_ms("2019-05-23"), None);
    }

    #[test]
    fn booleans_accept_json_and_text_in_any_case() {
        assert_eq!(cell_bool(&Cell::Bool(false)), Some(false));
        assert_eq!(cell_bool(&Cell::Text("TRUE".into())), Some(true));
        assert_eq!(cell_bool(&Cell::Text("False".into())), Some(false));
        assert_eq!(cell_bool(&Cell::Text("yes".into())), None);
        assert_eq!(cell_bool(&Cell::Null), None);
    }
}
