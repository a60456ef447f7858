//! Table cells against the archive: every cell of a transaction-table row that comes from the
//! archive's data entry (the documented fields and `unmapped_json`; the bookkeeping columns
//! `reference`, `image_count`, `archive`, `archive_sha256` are checked on their own) must equal
//! what [`flatten`] makes of that entry — in CSV as the CSV writer writes it
//! ([`tables::csv_cell`], formula cells neutralised when the part's commit says so), in Parquet as the typed value the Parquet writer writes
//! ([`tables::record_batch`]). The writers' own functions give the expected cells, so verify
//! cannot drift from them.
//!
//! Memory stays flat: while a part is read, each row leaves a [`RowDigest`] (sha256 over its
//! cells); while archives are checked one at a time, each is re-flattened and its expected
//! digest compared; only references whose digests differ are kept, and a second pass over
//! their part re-reads their archives to name each column that differs — never its value.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::DataType;
use sha2::{Digest, Sha256};

use super::scan::{self, ArrowCells, Cells, Header, encode_text};
use super::{Loc, Verifier, VerifyReport};
use crate::Kind;
use crate::dataset::Format;
use crate::flatten::pii::{self, Pii, Pseudonymiser};
use crate::flatten::{self, ArchiveSummary, Column, Row};
use crate::output::archive::{self, CheckedArchive, layout, relative_path};
use crate::output::tables;

/// sha256 over a row's compared cells.
pub(super) type RowDigest = [u8; 32];

/// The bookkeeping columns every kind-table part must have; checked on their own, with their
/// own messages, and left out of the digest.
pub(super) const KEY_COLUMNS: [&str; 5] = [
    "reference",
    "archive",
    "archive_sha256",
    "image_count",
    "run",
];

/// One kind-table part and how its columns line up with its kind's schema.
pub(super) struct TableFile {
    pub kind: Kind,
    /// The part's path relative to the location.
    pub name: Arc<str>,
    pub path: PathBuf,
    format: Format,
    /// The file positions a scan asks for: every schema column the file has, in schema order.
    pub request: Vec<usize>,
    /// For each schema column, its cell index in a scanned row (into `request`).
    cell_of: Vec<Option<usize>>,
    /// Schema indices of the columns whose cells are compared with the archive.
    compared: Vec<usize>,
    /// A CSV part whose commit records formula cells as neutralised.
    neutralised: bool,
    /// The PII profile its commit records, its key (pseudonymised), and the profile's columns.
    pii: Pii,
    pseudonymiser: Option<Pseudonymiser>,
    columns: &'static [Column],
}

impl TableFile {
    /// Reads the part's header and lines it up with the schema of `kind`. Missing columns,
    /// columns the schema does not have, columns of another type and columns out of order are
    /// findings; the columns that are there are compared all the same. `None`, with a finding,
    /// when the header cannot be read or a key column is missing or not text or integer.
    pub fn open(
        kind: Kind,
        root: &Path,
        name: &Arc<str>,
        format: Format,
        neutralised: bool,
        pii: (Pii, Option<&Pseudonymiser>),
        report: &mut VerifyReport,
    ) -> Option<TableFile> {
        let path = root.join(&**name);
        let header = scan::header(&path, name, report)?;
        let schema = pii::table_columns_for(kind, pii.0);
        let (request, cell_of, mut compared) = line_up(schema, &header, name, report);
        if pii.0 == Pii::Pseudonymised && pii.1.is_none() {
            // Without the key the tokens cannot be recomputed: those columns are not compared.
            compared.retain(|&c| !pii::is_direct_identifier(&schema[c]));
        }
        for key in KEY_COLUMNS {
            let at = header.position(key)?;
            if let Some(ty) = &header.columns[at].1
                && !matches!(ty, DataType::Utf8 | DataType::Int64)
            {
                return None;
            }
        }
        Some(TableFile {
            kind,
            name: name.clone(),
            path,
            format,
            request,
            cell_of,
            compared,
            neutralised,
            pii: pii.0,
            pseudonymiser: pii.1.cloned(),
            columns: schema,
        })
    }

    /// Cell index of the key column `name` in a scanned row.
    pub fn key_cell(&self, name: &str) -> usize {
        let at = self
            .columns
            .iter()
            .position(|c| c.name == name)
            .expect("a key column of the schema");
        self.cell_of[at].expect("key columns are checked when the file is opened")
    }

    /// Digest of a scanned row's compared cells.
    pub fn digest(&self, cells: &dyn Cells) -> RowDigest {
        digest(&self.compared, |c, out| {
            cells.encode(self.cell_of[c].expect("a compared column is present"), out)
        })
    }

    /// A `full` row as the run writes it under this part's PII profile.
    fn profiled(&self, row: &Row) -> Row {
        pii::apply(
            self.kind,
            self.pii,
            self.pseudonymiser.as_ref(),
            row.clone(),
        )
    }

    /// Cell `c` of `row` as the CSV writer wrote it under this part's commit.
    fn csv_cell(&self, row: &Row, c: usize) -> String {
        let column = &self.columns[c];
        tables::csv_cell(&row.0[c], column, self.neutralised)
    }

    /// Digest of the row the writer of this file's format writes for `row`.
    fn expected_digest(&self, row: &Row) -> RowDigest {
        let row = &self.profiled(row);
        match self.format {
            Format::Csv => digest(&self.compared, |c, out| {
                encode_text(Some(&self.csv_cell(row, c)), out)
            }),
            Format::Parquet => {
                let arrays = expected_arrays(self.columns, row);
                let cells = ArrowCells {
                    arrays: &arrays,
                    row: 0,
                };
                digest(&self.compared, |c, out| cells.encode(c, out))
            }
        }
    }

    /// The compared columns whose cell in `cells` differs from the writer's for `row`.
    fn differing_columns(&self, cells: &dyn Cells, row: &Row) -> Vec<&'static str> {
        let row = &self.profiled(row);
        let schema = self.columns;
        let arrays = (self.format == Format::Parquet).then(|| expected_arrays(self.columns, row));
        let (mut found, mut expected) = (Vec::new(), Vec::new());
        let mut differ = Vec::new();
        for &c in &self.compared {
            found.clear();
            expected.clear();
            cells.encode(
                self.cell_of[c].expect("a compared column is present"),
                &mut found,
            );
            match &arrays {
                None => encode_text(Some(&self.csv_cell(row, c)), &mut expected),
                Some(arrays) => ArrowCells { arrays, row: 0 }.encode(c, &mut expected),
            }
            if found != expected {
                differ.push(schema[c].name.as_str());
            }
        }
        differ
    }
}

/// Which schema columns the part has (the scan request and each column's cell index), and
/// which of them come from the archive's data; reports every column missing, extra, of
/// another type (Parquet) or out of order: a part's columns and types are its table's schema.
pub(super) fn line_up(
    schema: &'static [Column],
    header: &Header,
    name: &str,
    report: &mut VerifyReport,
) -> (Vec<usize>, Vec<Option<usize>>, Vec<usize>) {
    let types = tables::arrow_schema(schema);
    let (mut request, mut cell_of, mut compared) = (Vec::new(), Vec::new(), Vec::new());
    for (c, column) in schema.iter().enumerate() {
        let Some(at) = header.position(&column.name) else {
            report.finding(name, format!("has no column {}", column.name));
            cell_of.push(None);
            continue;
        };
        cell_of.push(Some(request.len()));
        request.push(at);
        let expected = types.field(c).data_type();
        match &header.columns[at].1 {
            Some(ty) if !same_type(ty, expected) => report.finding(
                name,
                format!(
                    "column {} has type {ty}, the schema's is {expected}",
                    column.name
                ),
            ),
            _ if from_data(column) => compared.push(c),
            _ => {}
        }
    }
    if !request.is_sorted() {
        report.finding(name, "columns are not in the schema's order");
    }
    for (column, _) in &header.columns {
        if !schema.iter().any(|c| c.name == *column) {
            report.finding(
                name,
                format!("has column {column}, which the table's schema has not"),
            );
        }
    }
    (request, cell_of, compared)
}

/// Equal types, ignoring the names and nullability of list items and struct fields' metadata
/// that writers may spell differently.
fn same_type(found: &DataType, expected: &DataType) -> bool {
    match (found, expected) {
        (DataType::List(a), DataType::List(b)) => same_type(a.data_type(), b.data_type()),
        (DataType::Struct(a), DataType::Struct(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b.iter())
                    .all(|(x, y)| x.name() == y.name() && same_type(x.data_type(), y.data_type()))
        }
        _ => found == expected,
    }
}

/// True for the columns whose cells come from the archive's data entry: the documented fields
/// and `unmapped_json`. The program's other columns (`reference`, `image_count`, `archive`,
/// `archive_sha256`, and any the run adds) are checked on their own, or not from the archive.
fn from_data(column: &Column) -> bool {
    column.doc_path.is_some() || column.name == flatten::UNMAPPED_JSON
}

/// sha256 over the canonical bytes of the cells `columns`, each framed by its index.
fn digest(columns: &[usize], mut encode: impl FnMut(usize, &mut Vec<u8>)) -> RowDigest {
    let mut hasher = Sha256::new();
    let mut buf = Vec::new();
    for &c in columns {
        buf.clear();
        buf.extend_from_slice(&(c as u32).to_le_bytes());
        encode(c, &mut buf);
        hasher.update(&buf);
    }
    hasher.finalize().into()
}

/// The arrays of the one-row batch the Parquet writer writes for `row`.
fn expected_arrays(columns: &[Column], row: &Row) -> Vec<arrow_array::ArrayRef> {
    let schema = tables::arrow_schema(columns);
    match tables::record_batch(&schema, columns, std::slice::from_ref(row)) {
        Ok(batch) => batch.columns().to_vec(),
        // The writer could not have written this row either; nothing matches it.
        Err(_) => Vec::new(),
    }
}

/// The row `flatten` makes of a checked archive, as the run writes it.
fn expected_row(kind: Kind, checked: &CheckedArchive) -> Row {
    let summary = ArchiveSummary {
        image_count: checked.image_count(),
        archive: checked.archive.relative.clone(),
        archive_sha256: checked.archive.sha256.clone(),
        // Never compared: only the cells that come from the archive's data are.
        run: String::new(),
    };
    flatten::flatten(kind, &checked.reference, &checked.data, &summary)
}

impl Verifier<'_> {
    /// Compares a row's digests (its part's and the Parquet twin's) with its checked
    /// archive's re-flattened data; a row that differs is kept for [`Verifier::explain_rows`].
    pub(super) fn compare_content(
        &mut self,
        kind: Kind,
        pair_id: u32,
        digest: RowDigest,
        twin_digest: Option<RowDigest>,
        checked: &CheckedArchive,
    ) {
        let pair = &self.pairs[pair_id as usize];
        let expected = expected_row(kind, checked);
        if pair.primary.expected_digest(&expected) != digest {
            self.differ
                .entry((pair_id, false))
                .or_default()
                .insert(checked.reference.clone());
        }
        if let (Some(twin), Some(found)) = (&pair.twin, twin_digest)
            && twin.expected_digest(&expected) != found
        {
            self.differ
                .entry((pair_id, true))
                .or_default()
                .insert(checked.reference.clone());
        }
    }

    /// Second pass over each part with rows that differ from their archive: names every
    /// column that differs, row by row. Only those rows' archives are read again.
    pub(super) fn explain_rows(&mut self, report: &mut VerifyReport) {
        let differ = std::mem::take(&mut self.differ);
        for ((pair, twin), references) in differ {
            let pair = &self.pairs[pair as usize];
            let file = if twin {
                pair.twin.as_ref()
            } else {
                Some(&pair.primary)
            };
            if let Some(file) = file {
                self.explain_file(file, &references, report);
            }
        }
    }

    fn explain_file(
        &self,
        file: &TableFile,
        references: &BTreeSet<String>,
        report: &mut VerifyReport,
    ) {
        let reference_cell = file.key_cell("reference");
        let mut pending = references.clone();
        let mut ignore = VerifyReport::default();
        scan::scan_cells(
            &file.path,
            &file.name,
            &file.request,
            &mut ignore,
            |_, loc, cells| {
                let Some(reference) = cells.text(reference_cell) else {
                    return;
                };
                // The first row of each reference is the one compared; later ones are duplicates.
                if pending.remove(&reference) {
                    self.explain_row(file, &reference, loc, cells, report);
                }
            },
        );
    }

    fn explain_row(
        &self,
        file: &TableFile,
        reference: &str,
        loc: &Loc,
        cells: &dyn Cells,
        report: &mut VerifyReport,
    ) {
        let subject = relative_path(reference);
        let path = layout::archive_path(self.dir, reference);
        let columns = match archive::check(&path, reference, Some(file.kind), self.key) {
            Ok(checked) => file.differing_columns(cells, &expected_row(file.kind, &checked)),
            Err(_) => Vec::new(),
        };
        if columns.is_empty() {
            report.finding(
                loc.to_string(),
                format!("reference {reference}: row differs from {subject}, which changed while verify read it"),
            );
        }
        let entry = layout::data_entry(file.kind);
        for column in columns {
            report.finding(
                loc.to_string(),
                format!("reference {reference}: column {column} differs from {subject} ({entry} flattened)"),
            );
        }
    }
}
