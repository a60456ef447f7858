//! Streaming a CSV or Parquet table one row at a time, whichever its format, so `verify` keeps
//! no table in memory. A file that cannot be read, a missing column or an unreadable row is a
//! finding; reading goes on where it can.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Loc, VerifyReport};

/// One row of a table file: the columns a scan asked for, by their position in that request.
pub(super) trait Cells {
    /// Column `i` as text: Utf8 as it is, Int64 in decimal, Timestamp(ms) in RFC 3339; `None`
    /// for null or another type.
    fn text(&self, i: usize) -> Option<String>;
    /// Appends canonical bytes of column `i` to `out`: equal values give equal bytes, and the
    /// encoding is self-delimiting, so consecutive columns cannot run into each other.
    fn encode(&self, i: usize, out: &mut Vec<u8>);
}

/// A table file's columns: names, and for Parquet their types.
pub(super) struct Header {
    pub columns: Vec<(String, Option<DataType>)>,
}

impl Header {
    /// Position of the first column named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _)| n == name)
    }
}

/// Reads the header (CSV) or schema (Parquet) of a table file; `None`, with a finding, when it
/// cannot be read.
pub(super) fn header(path: &Path, name: &str, report: &mut VerifyReport) -> Option<Header> {
    if is_csv(name) {
        let mut reader = match csv::Reader::from_path(path) {
            Ok(reader) => reader,
            Err(e) => {
                report.finding(name, format!("cannot be read: {e}"));
                return None;
            }
        };
        match reader.headers() {
            Ok(header) => Some(Header {
                columns: header.iter().map(|h| (h.to_owned(), None)).collect(),
            }),
            Err(e) => {
                report.finding(name, format!("header cannot be read: {e}"));
                None
            }
        }
    } else {
        match parquet_builder(path) {
            Ok(builder) => Some(Header {
                columns: builder
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), Some(f.data_type().clone())))
                    .collect(),
            }),
            Err(e) => {
                report.finding(name, format!("not a readable Parquet file: {e}"));
                None
            }
        }
    }
}

fn is_csv(name: &str) -> bool {
    name.ends_with(".csv")
}

fn parquet_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, String> {
    File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| e.to_string()))
}

/// Streams the named `columns` of every row to `on_row`, as text (integers in decimal,
/// timestamps in RFC 3339, nulls as `None`). Every column must exist and, in Parquet, be Utf8,
/// Int64 or Timestamp(ms).
pub(super) fn scan(
    path: &Path,
    name: &Arc<str>,
    columns: &[&str],
    report: &mut VerifyReport,
    mut on_row: impl FnMut(&mut VerifyReport, &Loc, Vec<Option<String>>),
) {
    let Some(header) = header(path, name, report) else {
        return;
    };
    let mut positions = Vec::with_capacity(columns.len());
    for column in columns {
        let Some(at) = header.position(column) else {
            report.finding(&**name, format!("has no column {column}"));
            return;
        };
        if let Some(ty) = &header.columns[at].1
            && !matches!(
                ty,
                DataType::Utf8 | DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, _)
            )
        {
            report.finding(
                &**name,
                format!("column {column} has type {ty}, not Utf8, Int64 or Timestamp"),
            );
            return;
        }
        positions.push(at);
    }
    scan_cells(path, name, &positions, report, |report, loc, cells| {
        let values = (0..positions.len()).map(|i| cells.text(i)).collect();
        on_row(report, loc, values)
    });
}

/// Streams the columns at `positions` (of the file's header) of every row to `on_row`; cell
/// `i` of a row is the column at `positions[i]`.
pub(super) fn scan_cells(
    path: &Path,
    name: &Arc<str>,
    positions: &[usize],
    report: &mut VerifyReport,
    on_row: impl FnMut(&mut VerifyReport, &Loc, &dyn Cells),
) {
    if is_csv(name) {
        scan_csv(path, name, positions, report, on_row);
    } else {
        scan_parquet(path, name, positions, report, on_row);
    }
}

struct CsvCells<'a> {
    record: &'a csv::StringRecord,
    positions: &'a [usize],
}

impl Cells for CsvCells<'_> {
    fn text(&self, i: usize) -> Option<String> {
        self.record.get(self.positions[i]).map(str::to_owned)
    }

    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        encode_text(self.record.get(self.positions[i]), out);
    }
}

/// Canonical bytes of an optional text: a presence byte, then length and bytes.
pub(super) fn encode_text(text: Option<&str>, out: &mut Vec<u8>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            out.extend_from_slice(&(text.len() as u64).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
}

fn scan_csv(
    path: &Path,
    name: &Arc<str>,
    positions: &[usize],
    report: &mut VerifyReport,
    mut on_row: impl FnMut(&mut VerifyReport, &Loc, &dyn Cells),
) {
    let mut reader = match csv::Reader::from_path(path) {
        Ok(reader) => reader,
        Err(e) => {
            report.finding(&**name, format!("cannot be read: {e}"));
            return;
        }
    };
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                let cells = CsvCells {
                    record: &record,
                    positions,
                };
                on_row(report, &Loc::new(name, line), &cells);
            }
            Err(e) => {
                // The error names the position and the kind of damage, never the content.
                let line = e.position().map_or(0, |p| p.line());
                report.finding(
                    Loc::new(name, line).to_string(),
                    format!("unreadable row: {}", csv_error_kind(&e)),
                );
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }
                ) {
                    break;
                }
            }
        }
    }
}

/// A CSV error without any field content.
fn csv_error_kind(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, the header has {expected_len}"),
        csv::ErrorKind::Io(io) => format!("I/O error: {io}"),
        _ => "malformed CSV".into(),
    }
}

/// One row of Arrow arrays (a Parquet batch, or the batch the table writer would write).
pub(super) struct ArrowCells<'a> {
    /// The arrays, in the order cells are asked for.
    pub arrays: &'a [ArrayRef],
    /// The row.
    pub row: usize,
}

impl Cells for ArrowCells<'_> {
    fn text(&self, i: usize) -> Option<String> {
        let array = &self.arrays[i];
        if array.is_null(self.row) {
            return None;
        }
        match array.data_type() {
            DataType::Utf8 => Some(array.as_string::<i32>().value(self.row).to_owned()),
            DataType::Int64 => Some(
                array
                    .as_primitive::<Int64Type>()
                    .value(self.row)
                    .to_string(),
            ),
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                let ms = array
                    .as_primitive::<TimestampMillisecondType>()
                    .value(self.row);
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }
            _ => None,
        }
    }

    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        encode_value(&self.arrays[i], self.row, out);
    }
}

/// Canonical bytes of the value at `row` of `array`, for the types the tables use (Utf8,
/// Boolean, Date32, Timestamp(ms), Int64, lists of text or of structs of text). Any other
/// type is encoded by its debug text: a column of another type than the schema's is reported
/// before rows are compared, so this only has to be deterministic.
fn encode_value(array: &ArrayRef, row: usize, out: &mut Vec<u8>) {
    if array.is_null(row) {
        out.push(0);
        return;
    }
    out.push(1);
    match array.data_type() {
        DataType::Utf8 => encode_text(Some(array.as_string::<i32>().value(row)), out),
        DataType::Boolean => out.push(u8::from(array.as_boolean().value(row))),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            out.extend_from_slice(&days.to_le_bytes());
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let ms = array.as_primitive::<TimestampMillisecondType>().value(row);
            out.extend_from_slice(&ms.to_le_bytes());
        }
        DataType::Int64 => {
            let n = array.as_primitive::<Int64Type>().value(row);
            out.extend_from_slice(&n.to_le_bytes());
        }
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(row);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for j in 0..items.len() {
                encode_value(&items, j, out);
            }
        }
        DataType::Struct(_) => {
            for child in array.as_struct().columns() {
                encode_value(child, row, out);
            }
        }
        _ => encode_text(Some(&format!("{:?}", array.slice(row, 1))), out),
    }
}

fn scan_parquet(
    path: &Path,
    name: &Arc<str>,
    positions: &[usize],
    report: &mut VerifyReport,
    mut on_row: impl FnMut(&mut VerifyReport, &Loc, &dyn Cells),
) {
    let builder = match parquet_builder(path) {
        Ok(builder) => builder,
        Err(e) => {
            report.finding(&**name, format!("not a readable Parquet file: {e}"));
            return;
        }
    };
    // A projected batch holds its columns in file order: cell i is at the rank of positions[i].
    let mut sorted = positions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let ranks: Vec<usize> = positions
        .iter()
        .map(|p| sorted.binary_search(p).expect("a requested position"))
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), sorted.iter().copied());
    let reader = match builder.with_projection(mask).build() {
        Ok(reader) => reader,
        Err(e) => {
            report.finding(&**name, format!("not a readable Parquet file: {e}"));
            return;
        }
    };
    let mut row = 0u64;
    for batch in reader {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                report.finding(&**name, format!("unreadable after row {row}: {e}"));
                return;
            }
        };
        let arrays: Vec<ArrayRef> = ranks.iter().map(|&r| batch.column(r).clone()).collect();
        for i in 0..batch.num_rows() {
            row += 1;
            let cells = ArrowCells {
                arrays: &arrays,
                row: i,
            };
            on_row(report, &Loc::new(name, row), &cells);
        }
    }
}
