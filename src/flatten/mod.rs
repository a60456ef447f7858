//! Flatten stage: API response JSON → one table row, and the schema of every table.
//!
//! Pure: no I/O, no clock, no logging (rows hold personal data). The column list of each
//! table lives here and only here ([`table_columns`], [`files_columns`]); the writers in
//! `output::tables` only follow it. The schema never depends on the data: every documented
//! field is a column in every run, and whatever the guide does not document (or arrives with
//! a JSON type its column cannot hold) is kept in `unmapped_json` rather than dropped.
//!
//! Lists: documented arrays of objects (`rejectReasonDetails`, Authentication `images`) are
//! lists of structs whose fields are the documented keys in snake_case, all text;
//! `livenessImages` is a list of text. In a [`Cell::List`] an element keeps only its
//! documented content; undocumented keys of an element, and elements of the wrong JSON type,
//! go to `unmapped_json` as an array mirroring the list (`null` for elements with nothing
//! unmapped), so a value is never both in its column and in `unmapped_json` — with one
//! exception: a documented date, timestamp or boolean whose text does not parse as its type is
//! NULL in the typed Parquet column, so it is also kept, verbatim, in `unmapped_json` under its
//! path (the CSV column keeps the API's text as well); [`unparsed_columns`] names such cells.

pub mod pii;
mod schema;

use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::Kind;
use schema::{Leaf, Node};

/// The storage type of a column; CSV always holds text, Parquet holds this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// Text.
    Utf8,
    /// A documented boolean: a JSON bool, or `"true"`/`"false"` in any case.
    Boolean,
    /// A `YYYY-MM-DD` date.
    Date32,
    /// A timestamp in milliseconds, UTC (`YYYY-MM-DDThh:mm:ss.SSSZ` and variants).
    TimestampMs,
    /// An integer.
    Int64,
    /// A JSON array: JSON text in CSV, a list in Parquet.
    List(ListItem),
}

/// The element type of a [`ColumnType::List`] column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListItem {
    /// Each element is text.
    Utf8,
    /// Each element is an object with these documented keys, all text.
    Struct(Vec<StructField>),
}

/// One documented key of the objects in a list column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructField {
    /// The Parquet field name: the key in snake_case (`detailsCode` → `details_code`).
    pub name: String,
    /// The JSON key as the API sends it (`detailsCode`).
    pub key: String,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column name, e.g. `document_first_name`.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// The documented JSON path it comes from (`document.firstName`); `None` for the
    /// columns the program adds (`reference`, `unmapped_json`, `image_count`, …).
    pub doc_path: Option<String>,
    /// What the program puts in a column it adds (warehouse column comments); empty for a
    /// documented column, which [`Column::doc_path`] and [`source_endpoint`] describe.
    pub about: &'static str,
}

/// One value of a row, as received from the API (the writers convert it per column type).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Absent or JSON `null`.
    Null,
    /// The API's text: a string as-is, a number as its JSON text.
    Text(String),
    /// A JSON boolean.
    Bool(bool),
    /// An integer produced by the program (`image_count`, `bytes`).
    Int(i64),
    /// The elements of a documented array, reduced to their documented content.
    List(Vec<Value>),
}

/// One table row, aligned with the columns of its table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Cell>);

/// What the archive stage knows about a transaction's archive, for the last columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Image, liveness, page and PDF files in the archive.
    pub image_count: i64,
    /// Archive path relative to the output directory (`archives/{reference}.zip`).
    pub archive: String,
    /// SHA-256 of the archive file, lowercase hex.
    pub archive_sha256: String,
    /// The run (commit) that adds the row.
    pub run: String,
}

/// One archived file, for the `files` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The transaction reference.
    pub reference: String,
    /// The API family.
    pub kind: Kind,
    /// The entry name inside the archive (`images/front.jpg`).
    pub entry: String,
    /// The image classifier or page number, when the file has one.
    pub classifier: Option<String>,
    /// The Content-Type the API sent.
    pub content_type: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// The run (commit) that adds the row.
    pub run: String,
}

/// One failed reference, for the `failures` table (and `failures.csv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord<'a> {
    /// The reference as given (an invalid one escaped and cut).
    pub reference: &'a str,
    /// The API family.
    pub kind: Kind,
    /// The step that failed.
    pub stage: &'a str,
    /// The last HTTP status, if any.
    pub http_status: Option<u16>,
    /// SPEC's error code.
    pub error: &'a str,
    /// Requests made for the failing step.
    pub attempts: u32,
    /// RFC 3339 instant before which no status call is made (PENDING).
    pub next_attempt_after: Option<String>,
    /// The run (commit) that adds the row.
    pub run: &'a str,
}

/// Name of the last column of every table: the run (commit) that added the row.
pub const RUN: &str = "run";

/// Name of the column holding undocumented fields as JSON text.
pub const UNMAPPED_JSON: &str = "unmapped_json";

fn documented_tree(kind: Kind) -> &'static [Node] {
    match kind {
        Kind::Netverify => schema::NETVERIFY,
        Kind::Document => schema::DOCUMENT,
        Kind::Authentication => schema::AUTHENTICATION,
    }
}

fn program_column(name: &str, ty: ColumnType, about: &'static str) -> Column {
    Column {
        name: name.to_string(),
        ty,
        doc_path: None,
        about,
    }
}

/// The request whose response the documented columns of the table of `kind` come from.
pub fn source_endpoint(kind: Kind) -> &'static str {
    match kind {
        Kind::Netverify => "GET /api/netverify/v2/scans/{reference}/data",
        Kind::Document => "GET /api/netverify/v2/documents/{reference}/data (retrieval host)",
        Kind::Authentication => "GET /api/netverify/v2/authentications/{reference}",
    }
}

/// `about` of the `run` column, the last of every table.
const RUN_ABOUT: &str = "the run (commit, commits/{run}.json) that added the row";

fn push_columns(nodes: &[Node], name_prefix: &str, path_prefix: &str, out: &mut Vec<Column>) {
    for node in nodes {
        let name = format!("{name_prefix}{}", schema::snake_case(node.key()));
        let path = format!("{path_prefix}{}", node.key());
        match node {
            Node::Object { children, .. } => {
                push_columns(children, &format!("{name}_"), &format!("{path}."), out)
            }
            Node::Leaf { ty, .. } => out.push(Column {
                name,
                ty: column_type(*ty),
                doc_path: Some(path),
                about: "",
            }),
        }
    }
}

fn column_type(leaf: Leaf) -> ColumnType {
    match leaf {
        Leaf::Utf8 => ColumnType::Utf8,
        Leaf::Boolean => ColumnType::Boolean,
        Leaf::Date => ColumnType::Date32,
        Leaf::Timestamp => ColumnType::TimestampMs,
        Leaf::ListUtf8 => ColumnType::List(ListItem::Utf8),
        Leaf::ListStruct(keys) => ColumnType::List(ListItem::Struct(
            keys.iter()
                .map(|k| StructField {
                    name: schema::snake_case(k),
                    key: (*k).to_string(),
                })
                .collect(),
        )),
    }
}

fn build_table(kind: Kind) -> Vec<Column> {
    let mut cols = vec![program_column(
        "reference",
        ColumnType::Utf8,
        "the transaction reference the export was asked for",
    )];
    push_columns(documented_tree(kind), "", "", &mut cols);
    cols.push(program_column(
        UNMAPPED_JSON,
        ColumnType::Utf8,
        "fields the API returned that the guide does not document, as a JSON object",
    ));
    cols.push(program_column(
        "image_count",
        ColumnType::Int64,
        "image, liveness, page and PDF files in the archive",
    ));
    cols.push(program_column(
        "archive",
        ColumnType::Utf8,
        "the archive path relative to the export location",
    ));
    cols.push(program_column(
        "archive_sha256",
        ColumnType::Utf8,
        "sha256 of the archive file, lowercase hex",
    ));
    cols.push(program_column(RUN, ColumnType::Utf8, RUN_ABOUT));
    cols
}

static NETVERIFY_COLUMNS: LazyLock<Vec<Column>> = LazyLock::new(|| build_table(Kind::Netverify));
static DOCUMENT_COLUMNS: LazyLock<Vec<Column>> = LazyLock::new(|| build_table(Kind::Document));
static AUTHENTICATION_COLUMNS: LazyLock<Vec<Column>> =
    LazyLock::new(|| build_table(Kind::Authentication));
/// A table of the program's own columns, then `run`.
fn program_table(columns: &[(&str, ColumnType, &'static str)]) -> Vec<Column> {
    columns
        .iter()
        .map(|(name, ty, about)| program_column(name, ty.clone(), about))
        .chain([program_column(RUN, ColumnType::Utf8, RUN_ABOUT)])
        .collect()
}

static FILES_COLUMNS: LazyLock<Vec<Column>> = LazyLock::new(|| {
    use ColumnType::{Int64, Utf8};
    program_table(&[
        ("reference", Utf8, "the transaction reference"),
        (
            "kind",
            Utf8,
            "the API family: netverify, document or authentication",
        ),
        (
            "entry",
            Utf8,
            "the entry name inside the archive (images/front.jpg)",
        ),
        (
            "classifier",
            Utf8,
            "the image classifier or page number, when the file has one",
        ),
        ("content_type", Utf8, "the Content-Type the API sent"),
        ("bytes", Int64, "size of the file in bytes"),
        ("sha256", Utf8, "sha256 of the file, lowercase hex"),
    ])
});
static FAILURES_COLUMNS: LazyLock<Vec<Column>> = LazyLock::new(|| {
    use ColumnType::{Int64, TimestampMs, Utf8};
    // `failures.csv`'s header, typed, then `run`.
    let typed = [
        (
            Utf8,
            "the reference as given (an invalid one escaped and cut)",
        ),
        (
            Utf8,
            "the API family: netverify, document or authentication",
        ),
        (Utf8, "the step that failed"),
        (Int64, "the last HTTP status, if any"),
        (
            Utf8,
            "INVALID_REFERENCE, NOT_FOUND, PENDING, FOREIGN_URL, TOO_LARGE, HTTP_ERROR, NETWORK or BAD_RESPONSE",
        ),
        (Int64, "requests made for the failing step"),
        (
            TimestampMs,
            "no status call before this instant (PENDING); one day after the last poll",
        ),
    ];
    let columns: Vec<(&str, ColumnType, &'static str)> = crate::output::failures::HEADER
        [..typed.len()]
        .iter()
        .copied()
        .zip(typed)
        .map(|(name, (ty, about))| (name, ty, about))
        .collect();
    program_table(&columns)
});

/// Every column of the table of `kind`, in order: `reference`, the documented fields,
/// `unmapped_json`, `image_count`, `archive`, `archive_sha256`, `run`.
pub fn table_columns(kind: Kind) -> &'static [Column] {
    match kind {
        Kind::Netverify => &NETVERIFY_COLUMNS,
        Kind::Document => &DOCUMENT_COLUMNS,
        Kind::Authentication => &AUTHENTICATION_COLUMNS,
    }
}

/// The columns of the `files` table: reference, kind, entry, classifier, content_type,
/// bytes, sha256, run.
pub fn files_columns() -> &'static [Column] {
    &FILES_COLUMNS
}

/// The columns of the `failures` table: reference, kind, stage, http_status, error, attempts,
/// next_attempt_after, run.
pub fn failures_columns() -> &'static [Column] {
    &FAILURES_COLUMNS
}

/// Flattens one `/data` response (Authentication: its details response) into a row of the
/// table of `kind`. Never fails: missing fields are nulls, anything undocumented or of the
/// wrong JSON type lands in `unmapped_json`.
pub fn flatten(kind: Kind, reference: &str, data: &Value, archive: &ArchiveSummary) -> Row {
    let columns = table_columns(kind);
    let mut cells = Vec::with_capacity(columns.len());
    cells.push(Cell::Text(reference.to_string()));
    let tree = documented_tree(kind);
    let unmapped = match data {
        Value::Object(map) => {
            let rest = walk_object(tree, Some(map), &mut cells);
            (!rest.is_empty()).then(|| Value::Object(rest))
        }
        Value::Null => {
            walk_object(tree, None, &mut cells);
            None
        }
        // Not an object at all: nothing maps, keep the whole body.
        other => {
            walk_object(tree, None, &mut cells);
            Some(other.clone())
        }
    };
    cells.push(match unmapped {
        Some(v) => Cell::Text(v.to_string()),
        None => Cell::Null,
    });
    cells.push(Cell::Int(archive.image_count));
    cells.push(Cell::Text(archive.archive.clone()));
    cells.push(Cell::Text(archive.archive_sha256.clone()));
    cells.push(Cell::Text(archive.run.clone()));
    debug_assert_eq!(cells.len(), columns.len());
    Row(cells)
}

/// The `files` table row of one archived file.
pub fn file_row(f: &FileRecord) -> Row {
    Row(vec![
        Cell::Text(f.reference.clone()),
        Cell::Text(f.kind.as_str().to_string()),
        Cell::Text(f.entry.clone()),
        f.classifier
            .as_ref()
            .map_or(Cell::Null, |c| Cell::Text(c.clone())),
        Cell::Text(f.content_type.clone()),
        Cell::Int(i64::try_from(f.bytes).unwrap_or(i64::MAX)),
        Cell::Text(f.sha256.clone()),
        Cell::Text(f.run.clone()),
    ])
}

/// The `failures` table row of one failed reference.
pub fn failure_row(f: &FailureRecord<'_>) -> Row {
    let text = |s: &str| Cell::Text(s.to_string());
    Row(vec![
        text(f.reference),
        text(f.kind.as_str()),
        text(f.stage),
        f.http_status
            .map_or(Cell::Null, |s| Cell::Int(i64::from(s))),
        text(f.error),
        Cell::Int(i64::from(f.attempts)),
        f.next_attempt_after.as_deref().map_or(Cell::Null, text),
        text(f.run),
    ])
}

/// Pushes one cell per leaf under `nodes` and returns what in `obj` was not mapped,
/// mirroring the input's key order.
fn walk_object(
    nodes: &[Node],
    obj: Option<&Map<String, Value>>,
    cells: &mut Vec<Cell>,
) -> Map<String, Value> {
    let mut leftovers: Map<String, Value> = Map::new();
    for node in nodes {
        let value = obj.and_then(|o| o.get(node.key()));
        let rest = match node {
            Node::Leaf { ty, .. } => {
                let (cell, rest) = leaf_cell(*ty, value);
                cells.push(cell);
                rest
            }
            Node::Object {
                children, embedded, ..
            } => walk_child_object(children, *embedded, value, cells),
        };
        if let Some(rest) = rest {
            leftovers.insert(node.key().to_string(), rest);
        }
    }
    let Some(obj) = obj else {
        return Map::new();
    };
    let mut unmapped = Map::new();
    for (key, value) in obj {
        if nodes.iter().any(|n| n.key() == key) {
            if let Some(rest) = leftovers.remove(key) {
                unmapped.insert(key.clone(), rest);
            }
        } else {
            unmapped.insert(key.clone(), value.clone());
        }
    }
    unmapped
}

fn walk_child_object(
    children: &[Node],
    embedded: bool,
    value: Option<&Value>,
    cells: &mut Vec<Cell>,
) -> Option<Value> {
    match value {
        None | Some(Value::Null) => {
            walk_object(children, None, cells);
            None
        }
        Some(Value::Object(map)) => {
            let rest = walk_object(children, Some(map), cells);
            (!rest.is_empty()).then(|| Value::Object(rest))
        }
        Some(Value::String(text)) if embedded => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => {
                let rest = walk_object(children, Some(&map), cells);
                (!rest.is_empty()).then(|| Value::Object(rest))
            }
            // Not a JSON object inside the string: keep the text as received.
            _ => {
                walk_object(children, None, cells);
                Some(Value::String(text.clone()))
            }
        },
        Some(other) => {
            walk_object(children, None, cells);
            Some(other.clone())
        }
    }
}

/// A scalar as the API's text: strings as-is, numbers and booleans as their JSON text.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn leaf_cell(ty: Leaf, value: Option<&Value>) -> (Cell, Option<Value>) {
    let value = match value {
        None | Some(Value::Null) => return (Cell::Null, None),
        Some(v) => v,
    };
    match ty {
        Leaf::Boolean => match value {
            Value::Bool(b) => (Cell::Bool(*b), None),
            other => match scalar_text(other) {
                Some(t) => typed_text(column_type(ty), t, other),
                None => (Cell::Null, Some(other.clone())),
            },
        },
        Leaf::Utf8 | Leaf::Date | Leaf::Timestamp => match scalar_text(value) {
            Some(t) => typed_text(column_type(ty), t, value),
            None => (Cell::Null, Some(value.clone())),
        },
        Leaf::ListUtf8 | Leaf::ListStruct(_) => {
            // `images` may be a single object rather than an array: a one-element list.
            let elements: Vec<Value> = match value {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            let mut kept = Vec::with_capacity(elements.len());
            let mut mirror = Vec::with_capacity(elements.len());
            for element in elements {
                let (keep, rest) = list_element(ty, element);
                kept.push(keep);
                mirror.push(rest.unwrap_or(Value::Null));
            }
            let rest = mirror
                .iter()
                .any(|v| !v.is_null())
                .then_some(Value::Array(mirror));
            (Cell::List(kept), rest)
        }
    }
}

/// The cell of a scalar's text `t` in a column of type `ty`; a text that the typed (Parquet)
/// column cannot hold is also returned as left over, so `unmapped_json` keeps it verbatim.
fn typed_text(ty: ColumnType, t: String, value: &Value) -> (Cell, Option<Value>) {
    let cell = Cell::Text(t);
    let rest = (!parses_as(&ty, &cell)).then(|| value.clone());
    (cell, rest)
}

/// Whether a text cell parses as `ty` the way the Parquet writer parses it (always, for text).
fn parses_as(ty: &ColumnType, cell: &Cell) -> bool {
    use crate::output::tables::{parse_date32, parse_timestamp_ms};
    let Cell::Text(t) = cell else {
        return true;
    };
    match ty {
        ColumnType::Date32 => parse_date32(t).is_some(),
        ColumnType::TimestampMs => parse_timestamp_ms(t).is_some(),
        ColumnType::Boolean => t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("false"),
        _ => true,
    }
}

/// The documented date, timestamp and boolean columns of a `kind` row whose API text does not
/// parse as their type (NULL in Parquet, kept in `unmapped_json`): what the report counts as
/// `unparsed_values`.
pub fn unparsed_columns(kind: Kind, row: &Row) -> impl Iterator<Item = &'static str> + '_ {
    table_columns(kind)
        .iter()
        .zip(&row.0)
        .filter(|(column, cell)| column.doc_path.is_some() && !parses_as(&column.ty, cell))
        .map(|(column, _)| column.name.as_str())
}

/// Splits one list element into its documented content and what is left over.
fn list_element(ty: Leaf, element: Value) -> (Value, Option<Value>) {
    match (ty, element) {
        (_, Value::Null) => (Value::Null, None),
        (Leaf::ListStruct(keys), Value::Object(map)) => {
            let mut keep = Map::new();
            let mut rest = Map::new();
            for (k, v) in map {
                let documented = keys.contains(&k.as_str());
                if documented && (v.is_null() || scalar_text(&v).is_some()) {
                    keep.insert(k, v);
                } else {
                    rest.insert(k, v);
                }
            }
            (
                Value::Object(keep),
                (!rest.is_empty()).then_some(Value::Object(rest)),
            )
        }
        (Leaf::ListUtf8, v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => (v, None),
        (_, other) => (Value::Null, Some(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary() -> ArchiveSummary {
        ArchiveSummary {
            image_count: 3,
            archive: "archives/r.zip".into(),
            archive_sha256: "ab".repeat(32),
            run: "20261206T074501Z-7f2a".into(),
        }
    }

    fn cell<'a>(kind: Kind, row: &'a Row, name: &str) -> &'a Cell {
        let i = table_columns(kind)
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        &row.0[i]
    }

    #[test]
    fn column_names_are_unique_and_framed() {
        for kind in Kind::ALL {
            let cols = table_columns(kind);
            let mut names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names[0], "reference");
            assert_eq!(
                &names[names.len() - 5..],
                [
                    "unmapped_json",
                    "image_count",
                    "archive",
                    "archive_sha256",
                    "run"
                ]
            );
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "duplicate column in {kind}");
        }
    }

    #[test]
    fn spec_examples_name_their_columns() {
        let names: Vec<&str> = table_columns(Kind::Netverify)
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        for expected in [
            "document_first_name",
            "document_address_city",
            "verification_identity_verification_similarity",
            "verification_reject_reason_reject_reason_code",
            "document_optional_data1",
            "document_id_subtype",
            "timestamp",
            "scan_reference",
        ] {
            assert!(names.contains(&expected), "{expected} missing");
        }
    }

    #[test]
    fn wrong_json_types_go_to_unmapped() {
        let data = json!({
            "document": {"firstName": {"given": "A"}, "dob": 19900101, "address": "flat 3"},
            "verification": "weird",
            "extra": [1, 2]
        });
        let row = flatten(Kind::Netverify, "r", &data, &summary());
        assert_eq!(
            cell(Kind::Netverify, &row, "document_first_name"),
            &Cell::Null
        );
        assert_eq!(
            cell(Kind::Netverify, &row, "document_dob"),
            &Cell::Text("19900101".into())
        );
        let Cell::Text(u) = cell(Kind::Netverify, &row, "unmapped_json") else {
            panic!("unmapped_json is null")
        };
        let u: Value = serde_json::from_str(u).unwrap();
        assert_eq!(
            u,
            json!({
                // A date that does not parse: its text in the column and, since Parquet's
                // Date32 column is NULL, the value as received here.
                "document": {"firstName": {"given": "A"}, "dob": 19900101, "address": "flat 3"},
                "verification": "weird",
                "extra": [1, 2]
            })
        );
        assert_eq!(
            unparsed_columns(Kind::Netverify, &row).collect::<Vec<_>>(),
            ["document_dob"]
        );
    }

    #[test]
    fn unparsed_booleans_dates_and_timestamps_are_kept_and_named_parsed_ones_not() {
        let data = json!({
            "timestamp": "2019-01-01T15:42:31.858Z",
            "document": {"extractedData": {"signatureAvailable": "yes"}}
        });
        let row = flatten(Kind::Document, "r", &data, &summary());
        let Cell::Text(u) = cell(Kind::Document, &row, "unmapped_json") else {
            panic!("unmapped_json is null")
        };
        let u: Value = serde_json::from_str(u).unwrap();
        assert_eq!(
            u,
            json!({"document": {"extractedData": {"signatureAvailable": "yes"}}})
        );
        assert_eq!(
            unparsed_columns(Kind::Document, &row).collect::<Vec<_>>(),
            ["document_extracted_data_signature_available"]
        );
        let data = json!({"document": {"extractedData": {"signatureAvailable": "TRUE"}}});
        let row = flatten(Kind::Document, "r", &data, &summary());
        assert_eq!(cell(Kind::Document, &row, "unmapped_json"), &Cell::Null);
        assert_eq!(unparsed_columns(Kind::Document, &row).count(), 0);
    }

    #[test]
    fn list_elements_split_documented_from_unmapped() {
        let data = json!({
            "images": {"classifier": "face", "href": "h", "size": 3},
            "livenessImages": ["a", {"x": 1}]
        });
        let row = flatten(Kind::Authentication, "r", &data, &summary());
        assert_eq!(
            cell(Kind::Authentication, &row, "images"),
            &Cell::List(vec![json!({"classifier": "face", "href": "h"})])
        );
        assert_eq!(
            cell(Kind::Authentication, &row, "liveness_images"),
            &Cell::List(vec![json!("a"), Value::Null])
        );
        let Cell::Text(u) = cell(Kind::Authentication, &row, "unmapped_json") else {
            panic!("unmapped_json is null")
        };
        let u: Value = serde_json::from_str(u).unwrap();
        assert_eq!(
            u,
            json!({"images": [{"size": 3}], "livenessImages": [null, {"x": 1}]})
        );
    }

    #[test]
    fn non_object_body_keeps_everything() {
        let row = flatten(Kind::Document, "r", &json!([1]), &summary());
        assert_eq!(row.0.len(), table_columns(Kind::Document).len());
        assert_eq!(
            cell(Kind::Document, &row, "unmapped_json"),
            &Cell::Text("[1]".into())
        );
    }

    #[test]
    fn embedded_string_that_is_not_an_object_is_kept_as_received() {
        let data = json!({"document": {"extractedData": {"extractedData": "{not json"}}});
        let row = flatten(Kind::Document, "r", &data, &summary());
        let Cell::Text(u) = cell(Kind::Document, &row, "unmapped_json") else {
            panic!("unmapped_json is null")
        };
        let u: Value = serde_json::from_str(u).unwrap();
        assert_eq!(
            u,
            json!({"document": {"extractedData": {"extractedData": "{not json"}}})
        );
    }

    #[test]
    fn file_row_matches_files_columns() {
        let row = file_row(&FileRecord {
            reference: "r".into(),
            kind: Kind::Document,
            entry: "pages/1.jpg".into(),
            classifier: None,
            content_type: "image/jpeg".into(),
            bytes: 10,
            sha256: "00".into(),
            run: "20261206T074501Z-7f2a".into(),
        });
        assert_eq!(row.0.len(), files_columns().len());
        assert_eq!(row.0[1], Cell::Text("document".into()));
        assert_eq!(row.0[3], Cell::Null);
        assert_eq!(row.0[5], Cell::Int(10));
    }
}
