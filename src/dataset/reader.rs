//! The rows of one table part, CSV or Parquet, as text cells of chosen columns: what the
//! catalogue needs (references, failure rows) without knowing the format. Parquet parts are
//! read with a projection, so only the chosen columns' pages are decoded.

use std::fs::File;
use std::io;
use std::path::Path;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::Format;

/// Calls `row` with the cells of `columns` for every row of the part at `path`; returns the
/// number of rows. A column the part lacks is an error naming it.
pub fn for_each_row(
    path: &Path,
    format: Format,
    columns: &[&str],
    mut row: impl FnMut(&[Option<String>]) -> io::Result<()>,
) -> io::Result<u64> {
    match format {
        Format::Csv => csv_rows(path, columns, &mut row),
        Format::Parquet => parquet_rows(path, columns, &mut row),
    }
}

fn missing(path: &Path, column: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: no column {column:?}", path.display()),
    )
}

fn csv_rows(
    path: &Path,
    columns: &[&str],
    row: &mut dyn FnMut(&[Option<String>]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut reader = csv::Reader::from_path(path).map_err(io::Error::other)?;
    let headers = reader.headers().map_err(io::Error::other)?.clone();
    let at: Vec<usize> = columns
        .iter()
        .map(|c| {
            headers
                .iter()
                .position(|h| h == *c)
                .ok_or_else(|| missing(path, c))
        })
        .collect::<io::Result<_>>()?;
    let mut cells = vec![None; columns.len()];
    let mut rows = 0;
    for record in reader.records() {
        let record = record.map_err(io::Error::other)?;
        for (cell, &i) in cells.iter_mut().zip(&at) {
            *cell = record.get(i).filter(|s| !s.is_empty()).map(str::to_string);
        }
        row(&cells)?;
        rows += 1;
    }
    Ok(rows)
}

fn parquet_rows(
    path: &Path,
    columns: &[&str],
    row: &mut dyn FnMut(&[Option<String>]) -> io::Result<()>,
) -> io::Result<u64> {
    let file = File::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(io::Error::other)?;
    let schema = builder.schema().clone();
    let mut roots: Vec<usize> = columns
        .iter()
        .map(|c| schema.index_of(c).map_err(|_| missing(path, c)))
        .collect::<io::Result<_>>()?;
    let wanted = roots.clone();
    roots.sort_unstable();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(4096)
        .build()
        .map_err(io::Error::other)?;
    let mut cells = vec![None; columns.len()];
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(io::Error::other)?;
        // The projected batch holds the chosen columns in file order.
        let arrays: Vec<&ArrayRef> = wanted
            .iter()
            .map(|i| batch.column(roots.binary_search(i).expect("projected")))
            .collect();
        for r in 0..batch.num_rows() {
            for (cell, array) in cells.iter_mut().zip(&arrays) {
                *cell = text_at(array, r);
            }
            row(&cells)?;
            rows += 1;
        }
    }
    Ok(rows)
}

/// One cell of a table column as the text CSV would hold (timestamps as RFC 3339, UTC).
pub fn text_at(array: &ArrayRef, i: usize) -> Option<String> {
    if array.is_null(i) {
        return None;
    }
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Some(a.value(i).to_owned());
    }
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Some(a.value(i).to_string());
    }
    if let Some(a) = any.downcast_ref::<BooleanArray>() {
        return Some(a.value(i).to_string());
    }
    if let Some(a) = any.downcast_ref::<TimestampMillisecondArray>() {
        return chrono::DateTime::from_timestamp_millis(a.value(i))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    if let Some(a) = any.downcast_ref::<Date32Array>() {
        return a.value_as_date(i).map(|d| d.to_string());
    }
    None
}
