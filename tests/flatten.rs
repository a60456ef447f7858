//! Flatten and table writers: guide samples and maximal/minimal fixtures → rows → CSV and
//! Parquet files, read back with the csv crate and arrow's Parquet reader.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use jumio_export::Kind;
use jumio_export::flatten::{
    ArchiveSummary, Cell, ColumnType, FailureRecord, FileRecord, Row, failure_row,
    failures_columns, file_row, files_columns, flatten, table_columns,
};
use jumio_export::output::tables::{TableError, TableWriter};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn summary(n: i64) -> ArchiveSummary {
    ArchiveSummary {
        image_count: n,
        archive: format!("archives/ref-{n}.zip"),
        archive_sha256: format!("{n:064x}"),
        run: "20261206T074501Z-7f2a".into(),
    }
}

fn index(kind: Kind, name: &str) -> usize {
    table_columns(kind)
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("{kind} has no column {name}"))
}

fn get<'a>(kind: Kind, row: &'a Row, name: &str) -> &'a Cell {
    &row.0[index(kind, name)]
}

fn text(s: &str) -> Cell {
    Cell::Text(s.to_string())
}

fn unmapped(kind: Kind, row: &Row) -> Option<Value> {
    match get(kind, row, "unmapped_json") {
        Cell::Null => None,
        Cell::Text(t) => Some(serde_json::from_str(t).expect("unmapped_json is JSON")),
        other => panic!("unmapped_json holds {other:?}"),
    }
}

/// Follows a documented path; a string met before the last key is the embedded JSON
/// form of the nested `extractedData`.
fn resolve(data: &Value, path: &str) -> Option<Value> {
    let mut current = data.clone();
    for key in path.split('.') {
        if let Value::String(s) = &current {
            current = serde_json::from_str(s).ok()?;
        }
        current = current.get(key)?.clone();
    }
    Some(current)
}

const MAXIMAL: [(Kind, &str); 3] = [
    (Kind::Netverify, "netverify_max.json"),
    (Kind::Document, "document_max.json"),
    (Kind::Authentication, "authentication_max.json"),
];

const MINIMAL: [(Kind, &str); 3] = [
    (Kind::Netverify, "netverify_min.json"),
    (Kind::Document, "document_min.json"),
    (Kind::Authentication, "authentication_min.json"),
];

const SAMPLES: [(Kind, &str); 7] = [
    (Kind::Netverify, "netverify_data_sample.json"),
    (Kind::Netverify, "netverify_not_readable_sample.json"),
    (Kind::Document, "document_cc_sample.json"),
    (Kind::Document, "document_ssc_sample.json"),
    (Kind::Document, "document_bs_sample.json"),
    (Kind::Document, "document_bs_object.json"),
    (Kind::Authentication, "authentication_sample.json"),
];

#[test]
fn maximal_fixtures_fill_every_documented_column_with_its_value() {
    for (kind, name) in MAXIMAL {
        let data = fixture(name);
        let row = flatten(kind, "ref-max", &data, &summary(4));
        assert_eq!(row.0.len(), table_columns(kind).len(), "{name}");
        for (column, cell) in table_columns(kind).iter().zip(&row.0) {
            let Some(path) = &column.doc_path else {
                continue;
            };
            let value = resolve(&data, path)
                .unwrap_or_else(|| panic!("{name} lacks documented field {path}"));
            let expected = match (&column.ty, value) {
                (ColumnType::Boolean, Value::Bool(b)) => Cell::Bool(b),
                (ColumnType::List(_), Value::Array(a)) => Cell::List(a),
                (ColumnType::List(_), single) => Cell::List(vec![single]),
                (_, Value::String(s)) => Cell::Text(s),
                (ty, v) => panic!("{name}: {path} is {v} for {ty:?}"),
            };
            assert_eq!(cell, &expected, "{name}: column {}", column.name);
        }
        assert_eq!(get(kind, &row, "reference"), &text("ref-max"));
        assert_eq!(unmapped(kind, &row), None, "{name}: nothing undocumented");
        assert_eq!(get(kind, &row, "image_count"), &Cell::Int(4));
        assert_eq!(get(kind, &row, "archive"), &text("archives/ref-4.zip"));
        assert_eq!(
            get(kind, &row, "archive_sha256"),
            &text(&format!("{:064x}", 4))
        );
    }
}

#[test]
fn maximal_fixtures_hold_the_expected_literals() {
    let nv = flatten(
        Kind::Netverify,
        "r",
        &fixture("netverify_max.json"),
        &summary(0),
    );
    let k = Kind::Netverify;
    assert_eq!(get(k, &nv, "document_first_name"), &text("Zoë Ångström"));
    assert_eq!(
        get(k, &nv, "document_last_name"),
        &text("Müller-Łukasiewicz 山田")
    );
    assert_eq!(get(k, &nv, "document_id_subtype"), &text("NATIONAL_ID"));
    assert_eq!(get(k, &nv, "document_optional_data1"), &text("OPT1<<"));
    assert_eq!(get(k, &nv, "document_address_zip_extension"), &text("0001"));
    assert_eq!(
        get(k, &nv, "document_address_province"),
        &text("Niederösterreich")
    );
    assert_eq!(get(k, &nv, "document_address_line5"), &text("Österreich"));
    assert_eq!(
        get(k, &nv, "scan_reference"),
        &text("2d6c8d58-6c1f-4b8e-9b0a-0c3f5e1a7b21")
    );
    assert_eq!(get(k, &nv, "timestamp"), &text("2019-03-20T16:25:38.663Z"));
    assert_eq!(
        get(
            k,
            &nv,
            "verification_identity_verification_handwritten_note_matches"
        ),
        &text("FALSE")
    );
    assert_eq!(
        get(k, &nv, "verification_reject_reason_reject_reason_details"),
        &Cell::List(vec![
            json!({"detailsCode": "1001", "detailsDescription": "PHOTO"}),
            json!({"detailsCode": "1005", "detailsDescription": "NAME"}),
        ])
    );

    let dv = flatten(
        Kind::Document,
        "r",
        &fixture("document_max.json"),
        &summary(0),
    );
    let k = Kind::Document;
    assert_eq!(
        get(k, &dv, "document_extracted_data_signature_available"),
        &Cell::Bool(true)
    );
    assert_eq!(
        get(k, &dv, "document_custom_document_code"),
        &text("KUNDENKARTE-Ä")
    );
    assert_eq!(
        get(k, &dv, "document_extracted_data_extracted_data_city"),
        &text("Düsseldorf")
    );
    assert_eq!(
        get(k, &dv, "document_extracted_data_extracted_data_expiry_date"),
        &text("01/22")
    );
    assert_eq!(
        get(
            k,
            &dv,
            "document_extracted_data_extracted_data_signature_present"
        ),
        &text("true")
    );
    assert_eq!(
        get(k, &dv, "document_extracted_data_extracted_data_swift_code"),
        &text("COBADEFFXXX")
    );

    let au = flatten(
        Kind::Authentication,
        "r",
        &fixture("authentication_max.json"),
        &summary(0),
    );
    let k = Kind::Authentication;
    // A single `images` object is a one-element list.
    let Cell::List(images) = get(k, &au, "images") else {
        panic!("images not a list")
    };
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["classifier"], "face");
    let Cell::List(liveness) = get(k, &au, "liveness_images") else {
        panic!("not a list")
    };
    assert!(
        liveness[0].as_str().unwrap().ends_with("/liveness/2"),
        "order as received"
    );
}

#[test]
fn every_guide_sample_flattens_without_leftovers() {
    for (kind, name) in SAMPLES {
        let row = flatten(kind, "ref", &fixture(name), &summary(1));
        assert_eq!(row.0.len(), table_columns(kind).len(), "{name}");
        assert_eq!(unmapped(kind, &row), None, "{name}");
    }
    let k = Kind::Document;
    let cc = flatten(k, "r", &fixture("document_cc_sample.json"), &summary(1));
    assert_eq!(
        get(k, &cc, "document_extracted_data_extracted_data_pan"),
        &text("XXXXXXXXXXXX1234")
    );
    assert_eq!(
        get(k, &cc, "document_extracted_data_extracted_data_expiry_date"),
        &text("01/22")
    );
    assert_eq!(
        get(k, &cc, "document_extracted_data_signature_available"),
        &Cell::Bool(false)
    );
    let ssc = flatten(k, "r", &fixture("document_ssc_sample.json"), &summary(1));
    assert_eq!(
        get(k, &ssc, "document_extracted_data_extracted_data_ssn"),
        &text("123-45-6789")
    );
    assert_eq!(
        get(
            k,
            &ssc,
            "document_extracted_data_extracted_data_signature_present"
        ),
        &text("true")
    );
    assert_eq!(
        get(k, &ssc, "document_extracted_data_last_name"),
        &text("LAST NAME")
    );
    let bs = flatten(k, "r", &fixture("document_bs_sample.json"), &summary(1));
    assert_eq!(
        get(k, &bs, "document_extracted_data_extracted_data_issue_date"),
        &text("2019-01-01")
    );
    assert_eq!(
        get(k, &bs, "document_extracted_data_extracted_data_line1"),
        &text("12345 EASY STREET")
    );
    assert_eq!(
        get(k, &bs, "document_extracted_data_extracted_data_pan"),
        &Cell::Null
    );

    let k = Kind::Netverify;
    let nr = flatten(
        k,
        "r",
        &fixture("netverify_not_readable_sample.json"),
        &summary(1),
    );
    assert_eq!(
        get(k, &nr, "verification_reject_reason_reject_reason_code"),
        &text("201")
    );
    assert_eq!(
        get(k, &nr, "verification_reject_reason_reject_reason_details"),
        &Cell::Null
    );
    let nv = flatten(k, "r", &fixture("netverify_data_sample.json"), &summary(1));
    assert_eq!(
        get(k, &nv, "verification_identity_verification_validity"),
        &text("true")
    );
    assert_eq!(get(k, &nv, "transaction_source"), &text("WEB_UPLOAD"));

    let k = Kind::Authentication;
    let au = flatten(k, "r", &fixture("authentication_sample.json"), &summary(1));
    assert_eq!(
        get(k, &au, "transaction_date"),
        &text("2019-05-23T14:32:27.534")
    );
    let Cell::List(liveness) = get(k, &au, "liveness_images") else {
        panic!("not a list")
    };
    assert_eq!(liveness.len(), 7);
}

#[test]
fn nested_extracted_data_as_string_or_object_gives_the_same_row() {
    let from_string = flatten(
        Kind::Document,
        "r",
        &fixture("document_bs_sample.json"),
        &summary(2),
    );
    let from_object = flatten(
        Kind::Document,
        "r",
        &fixture("document_bs_object.json"),
        &summary(2),
    );
    assert_eq!(from_string, from_object);
    assert_eq!(
        get(
            Kind::Document,
            &from_object,
            "document_extracted_data_extracted_data_account_number"
        ),
        &text("123456789")
    );
}

#[test]
fn undocumented_fields_land_in_unmapped_json_mirroring_their_paths() {
    let mut data = fixture("document_bs_sample.json");
    data["newTopLevel"] = json!({"a": 1});
    data["document"]["pageCount"] = json!(3);
    data["transaction"]["date"] = json!("2019-01-01T15:32:22.606Z");
    data["document"]["extractedData"]["extractedData"] =
        json!("{\"city\":\"CITY\",\"iban2\":\"X\"}");
    let row = flatten(Kind::Document, "r", &data, &summary(2));
    assert_eq!(
        unmapped(Kind::Document, &row),
        Some(json!({
            "document": {"extractedData": {"extractedData": {"iban2": "X"}}, "pageCount": 3},
            "transaction": {"date": "2019-01-01T15:32:22.606Z"},
            "newTopLevel": {"a": 1}
        }))
    );
    assert_eq!(
        get(
            Kind::Document,
            &row,
            "document_extracted_data_extracted_data_city"
        ),
        &text("CITY")
    );

    let mut nv = fixture("netverify_max.json");
    nv["verification"]["rejectReason"]["rejectReasonDetails"][1]["extra"] = json!("x");
    nv["document"]["scanReference"] = json!("moved");
    let row = flatten(Kind::Netverify, "r", &nv, &summary(2));
    assert_eq!(
        unmapped(Kind::Netverify, &row),
        Some(json!({
            "document": {"scanReference": "moved"},
            "verification": {"rejectReason": {"rejectReasonDetails": [null, {"extra": "x"}]}}
        }))
    );
}

#[test]
fn minimal_fixtures_give_full_width_rows_of_nulls() {
    for (kind, name) in MINIMAL {
        let data = fixture(name);
        let row = flatten(kind, "ref-min", &data, &summary(0));
        assert_eq!(row.0.len(), table_columns(kind).len(), "{name}");
        let filled: Vec<&str> = table_columns(kind)
            .iter()
            .zip(&row.0)
            .filter(|(c, cell)| c.doc_path.is_some() && **cell != Cell::Null)
            .map(|(c, _)| c.name.as_str())
            .collect();
        let expected: &[&str] = match kind {
            Kind::Netverify => &["timestamp", "scan_reference"],
            Kind::Document => &[
                "timestamp",
                "scan_reference",
                "document_status",
                "transaction_status",
            ],
            Kind::Authentication => &["transaction_reference", "transaction_result"],
        };
        assert_eq!(filled, expected, "{name}");
        assert_eq!(unmapped(kind, &row), None);
    }
}

struct Written {
    _dir: tempfile::TempDir,
    csv: PathBuf,
    parquet: PathBuf,
}

fn write_table(
    name: &str,
    columns: &'static [jumio_export::flatten::Column],
    rows: &[Row],
) -> Written {
    let dir = tempfile::tempdir().unwrap();
    let mut writer =
        TableWriter::create(dir.path(), name, columns, true, true, Default::default()).unwrap();
    for row in rows {
        writer.write(row).unwrap();
    }
    let stats = writer.finish().unwrap();
    assert_eq!(stats.rows, rows.len() as u64);
    Written {
        csv: dir.path().join(format!("{name}.csv")),
        parquet: dir.path().join(format!("{name}.parquet")),
        _dir: dir,
    }
}

fn read_parquet(path: &Path) -> (arrow_schema::SchemaRef, RecordBatch) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    let batch = single_batch(&schema, &batches);
    (schema, batch)
}

fn single_batch(schema: &arrow_schema::SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
    // The small tables here fit one batch; the large one is read batch by batch.
    match batches {
        [] => RecordBatch::new_empty(schema.clone()),
        [one] => one.clone(),
        _ => panic!("expected one batch, got {}", batches.len()),
    }
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn schema_lines(schema: &arrow_schema::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}\t{}\n", f.name(), f.data_type()))
        .collect()
}

/// Compares with the committed `tests/schemas/{table}.txt`. With `UPDATE_SCHEMAS=1` a schema that
/// differs is written over the file and the test still fails (review the diff, commit, run again
/// without the variable): the comparison is always against what was committed, never against a
/// file this run just wrote. CI refuses the variable.
fn check_committed_schema(table: &str, schema: &arrow_schema::Schema) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/schemas/{table}.txt"));
    let actual = schema_lines(schema);
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    assert!(
        !(update && crate::peers::under_ci()),
        "UPDATE_SCHEMAS is set under CI: CI compares the schemas with the committed files and \
         never rewrites them"
    );
    let committed = std::fs::read_to_string(&path);
    if update && committed.as_ref().ok() != Some(&actual) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        panic!(
            "UPDATE_SCHEMAS: rewrote {} for {table}; review the diff, commit it, and run the tests \
             again without UPDATE_SCHEMAS",
            path.display()
        );
    }
    let expected = committed
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_SCHEMAS=1 once)", path.display()));
    assert_eq!(
        actual,
        expected,
        "schema of {table} differs from {}",
        path.display()
    );
}

/// Each PII profile's transaction tables, written by the table writer from profiled rows, have
/// the committed schema of `tests/schemas/{profile}/{table}.txt`: the schema of a profile never
/// depends on the data either.
#[test]
fn pii_profile_schemas_equal_the_committed_ones() {
    use jumio_export::flatten::pii::{self, Pii, Pseudonymiser};
    let key = Pseudonymiser::new(b"schema-test-key-0123").unwrap();
    for profile in [Pii::Pseudonymised, Pii::Minimal] {
        for ((kind, max), (_, min)) in MAXIMAL.into_iter().zip(MINIMAL) {
            let rows: Vec<_> = [
                flatten(kind, "a", &fixture(max), &summary(1)),
                flatten(kind, "b", &fixture(min), &summary(0)),
            ]
            .into_iter()
            .map(|row| pii::apply(kind, profile, Some(&key), row))
            .collect();
            let columns = pii::table_columns_for(kind, profile);
            let written = write_table(kind.table_name(), columns, &rows);
            let (schema, batch) = read_parquet(&written.parquet);
            assert_eq!(batch.num_rows(), 2);
            check_committed_schema(&format!("{profile}/{}", kind.table_name()), &schema);
        }
    }
}

#[test]
fn parquet_schemas_equal_the_committed_ones() {
    for ((kind, max), (_, min)) in MAXIMAL.into_iter().zip(MINIMAL) {
        let rows = [
            flatten(kind, "a", &fixture(max), &summary(1)),
            flatten(kind, "b", &fixture(min), &summary(0)),
        ];
        let written = write_table(kind.table_name(), table_columns(kind), &rows);
        let (schema, batch) = read_parquet(&written.parquet);
        assert_eq!(batch.num_rows(), 2);
        check_committed_schema(kind.table_name(), &schema);
        assert_eq!(schema.fields().last().unwrap().name(), "run", "{kind}");
    }
    let rows = [file_row(&FileRecord {
        reference: "a".into(),
        kind: Kind::Netverify,
        entry: "images/front.jpg".into(),
        classifier: Some("front".into()),
        content_type: "image/jpeg".into(),
        bytes: 1234,
        sha256: "ff".repeat(32),
        run: "20261206T074501Z-7f2a".into(),
    })];
    let written = write_table("files", files_columns(), &rows);
    let (schema, batch) = read_parquet(&written.parquet);
    check_committed_schema("files", &schema);
    assert_eq!(schema.fields().last().unwrap().name(), "run");
    assert_eq!(batch.column(5).as_primitive::<Int64Type>().value(0), 1234);
    assert_eq!(batch.column(3).as_string::<i32>().value(0), "front");
    assert_eq!(
        batch.column(7).as_string::<i32>().value(0),
        "20261206T074501Z-7f2a"
    );

    // The failures table: SPEC's failures.csv columns then `run`; a status and the attempts
    // are integers, next_attempt_after a timestamp.
    let rows = [
        failure_row(&FailureRecord {
            reference: "pf-n1",
            kind: Kind::Netverify,
            stage: "status",
            http_status: Some(200),
            error: "PENDING",
            attempts: 5,
            next_attempt_after: Some("2026-12-07T07:45:01Z".into()),
            run: "20261206T074501Z-7f2a",
        }),
        failure_row(&FailureRecord {
            reference: "bad/ref",
            kind: Kind::Netverify,
            stage: "input",
            http_status: None,
            error: "INVALID_REFERENCE",
            attempts: 0,
            next_attempt_after: None,
            run: "20261206T074501Z-7f2a",
        }),
    ];
    let written = write_table("failures", failures_columns(), &rows);
    let (schema, batch) = read_parquet(&written.parquet);
    check_committed_schema("failures", &schema);
    assert_eq!(schema.fields().last().unwrap().name(), "run");
    assert_eq!(batch.num_rows(), 2);
    let status = batch.column(3).as_primitive::<Int64Type>();
    assert_eq!(status.value(0), 200);
    assert!(status.is_null(1));
    assert_eq!(batch.column(5).as_primitive::<Int64Type>().value(0), 5);
    let next = batch.column(6).as_primitive::<TimestampMillisecondType>();
    assert_eq!(
        next.value(0),
        chrono::DateTime::parse_from_rfc3339("2026-12-07T07:45:01Z")
            .unwrap()
            .timestamp_millis()
    );
    assert!(next.is_null(1));
    assert_eq!(
        batch.column(7).as_string::<i32>().value(1),
        "20261206T074501Z-7f2a"
    );
}

fn column<'a>(kind: Kind, batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
    batch.column(index(kind, name)).as_ref()
}

#[test]
fn parquet_round_trip_keeps_values_and_types() {
    let k = Kind::Netverify;
    let rows = [
        flatten(k, "a", &fixture("netverify_max.json"), &summary(5)),
        flatten(k, "b", &fixture("netverify_min.json"), &summary(0)),
    ];
    let written = write_table("netverify", table_columns(k), &rows);
    let (_, b) = read_parquet(&written.parquet);
    let s = |name: &str| column(k, &b, name).as_string::<i32>();
    assert_eq!(s("reference").value(0), "a");
    assert_eq!(s("document_first_name").value(0), "Zoë Ångström");
    assert_eq!(s("document_last_name").value(0), "Müller-Łukasiewicz 山田");
    assert!(s("document_first_name").is_null(1));
    assert!(s("unmapped_json").is_null(0));
    let d = |name: &str| column(k, &b, name).as_primitive::<Date32Type>();
    assert_eq!(d("document_dob").value(0), 7305); // 1990-01-01
    assert_eq!(d("document_expiry").value(0), 22460); // 2031-06-30
    assert_eq!(d("document_issuing_date").value(0), 18809); // 2021-07-01
    assert!(d("document_dob").is_null(1));
    let t = |name: &str| column(k, &b, name).as_primitive::<TimestampMillisecondType>();
    assert_eq!(t("timestamp").value(0), 1_553_099_138_663);
    assert_eq!(t("timestamp").value(1), 1_553_099_138_663);
    assert_eq!(t("transaction_date").value(0), 1_546_340_470_227);
    assert_eq!(
        column(k, &b, "image_count")
            .as_primitive::<Int64Type>()
            .value(0),
        5
    );
    let details =
        column(k, &b, "verification_reject_reason_reject_reason_details").as_list::<i32>();
    assert!(details.is_null(1));
    let first = details.value(0);
    let first = first.as_struct();
    assert_eq!(first.len(), 2);
    assert_eq!(
        first
            .column_by_name("details_code")
            .unwrap()
            .as_string::<i32>()
            .value(1),
        "1005"
    );
    assert_eq!(
        first
            .column_by_name("details_description")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "PHOTO"
    );

    let k = Kind::Document;
    let rows = [flatten(k, "a", &fixture("document_max.json"), &summary(3))];
    let written = write_table("documents", table_columns(k), &rows);
    let (_, b) = read_parquet(&written.parquet);
    assert!(
        column(k, &b, "document_extracted_data_signature_available")
            .as_boolean()
            .value(0)
    );
    assert_eq!(
        column(k, &b, "document_extracted_data_extracted_data_issue_date")
            .as_primitive::<Date32Type>()
            .value(0),
        17897
    );
    assert_eq!(
        column(k, &b, "document_extracted_data_extracted_data_expiry_date")
            .as_string::<i32>()
            .value(0),
        "01/22"
    );

    let k = Kind::Authentication;
    let rows = [flatten(
        k,
        "a",
        &fixture("authentication_sample.json"),
        &summary(8),
    )];
    let written = write_table("authentications", table_columns(k), &rows);
    let (_, b) = read_parquet(&written.parquet);
    // The sample has no `Z`: read as UTC.
    assert_eq!(
        column(k, &b, "transaction_date")
            .as_primitive::<TimestampMillisecondType>()
            .value(0),
        1_558_621_947_534
    );
    let images = column(k, &b, "images").as_list::<i32>().value(0);
    assert_eq!(
        images
            .as_struct()
            .column_by_name("classifier")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "face"
    );
    let liveness = column(k, &b, "liveness_images").as_list::<i32>().value(0);
    let liveness = liveness.as_string::<i32>();
    assert_eq!(liveness.len(), 7);
    assert!(liveness.value(6).ends_with("/images/liveness/7"));
}

#[test]
fn csv_round_trip_keeps_the_api_text() {
    let k = Kind::Netverify;
    let rows = [
        flatten(k, "a", &fixture("netverify_max.json"), &summary(5)),
        flatten(k, "b", &fixture("netverify_min.json"), &summary(0)),
    ];
    let written = write_table("netverify", table_columns(k), &rows);
    let (header, records) = read_csv(&written.csv);
    let names: Vec<String> = table_columns(k).iter().map(|c| c.name.clone()).collect();
    assert_eq!(header, names);
    assert_eq!(records.len(), 2);
    let v = |r: usize, name: &str| records[r][index(k, name)].clone();
    assert_eq!(v(0, "document_first_name"), "Zoë Ångström");
    assert_eq!(v(0, "document_dob"), "1990-01-01");
    assert_eq!(v(0, "timestamp"), "2019-03-20T16:25:38.663Z");
    assert_eq!(v(0, "image_count"), "5");
    assert_eq!(v(1, "document_first_name"), "");
    assert_eq!(v(1, "unmapped_json"), "");
    assert_eq!(
        v(0, "verification_reject_reason_reject_reason_details"),
        r#"[{"detailsCode":"1001","detailsDescription":"PHOTO"},{"detailsCode":"1005","detailsDescription":"NAME"}]"#
    );

    let k = Kind::Document;
    let rows = [flatten(
        k,
        "a",
        &fixture("document_cc_sample.json"),
        &summary(1),
    )];
    let written = write_table("documents", table_columns(k), &rows);
    let (_, records) = read_csv(&written.csv);
    assert_eq!(
        records[0][index(k, "document_extracted_data_signature_available")],
        "false"
    );
    assert_eq!(
        records[0][index(k, "document_extracted_data_extracted_data_pan")],
        "XXXXXXXXXXXX1234"
    );

    let k = Kind::Authentication;
    let rows = [flatten(
        k,
        "a",
        &fixture("authentication_sample.json"),
        &summary(8),
    )];
    let written = write_table("authentications", table_columns(k), &rows);
    let (_, records) = read_csv(&written.csv);
    assert_eq!(
        records[0][index(k, "transaction_date")],
        "2019-05-23T14:32:27.534"
    );
    let liveness: Vec<String> =
        serde_json::from_str(&records[0][index(k, "liveness_images")]).unwrap();
    assert_eq!(liveness.len(), 7);
}

#[test]
fn wrong_typed_and_unparseable_values_are_null_in_parquet_and_text_in_csv() {
    let k = Kind::Netverify;
    let weird = json!({
        "timestamp": "yesterday",
        "scanReference": 12345,
        "document": {"dob": "31.12.1990", "expiry": 20221231, "firstName": ["A"], "address": []},
        "transaction": {"date": true},
        "verification": {"rejectReason": {"rejectReasonDetails": "not a list"}}
    });
    let dv = json!({
        "document": {"extractedData": {"signatureAvailable": "TRUE",
            "extractedData": "{\"issueDate\":\"2019-13-45\",\"city\":{\"x\":1}}"}},
        "transaction": []
    });
    let dv2 =
        json!({"document": {"extractedData": {"signatureAvailable": "maybe", "extractedData": 7}}});
    let au = json!({"images": "face", "livenessImages": {"1": "x"}, "transactionDate": "2019-05-23 14:32"});

    let nv_rows = [flatten(k, "w", &weird, &summary(0))];
    let written = write_table("netverify", table_columns(k), &nv_rows);
    let (_, b) = read_parquet(&written.parquet);
    let (_, csv_rows) = read_csv(&written.csv);
    assert!(column(k, &b, "timestamp").is_null(0));
    assert_eq!(csv_rows[0][index(k, "timestamp")], "yesterday");
    assert_eq!(
        column(k, &b, "scan_reference").as_string::<i32>().value(0),
        "12345"
    );
    assert!(column(k, &b, "document_dob").is_null(0));
    assert_eq!(csv_rows[0][index(k, "document_dob")], "31.12.1990");
    assert!(column(k, &b, "document_expiry").is_null(0));
    assert_eq!(csv_rows[0][index(k, "document_expiry")], "20221231");
    assert!(column(k, &b, "transaction_date").is_null(0));
    assert!(column(k, &b, "document_first_name").is_null(0));
    let details =
        column(k, &b, "verification_reject_reason_reject_reason_details").as_list::<i32>();
    assert_eq!(
        details.value(0).len(),
        1,
        "a lone value is a one-element list"
    );
    assert!(
        details.value(0).is_null(0),
        "a string is not a details object"
    );
    assert_eq!(
        unmapped(k, &nv_rows[0]),
        Some(json!({
            // Texts a typed column cannot hold are NULL in Parquet: kept here, as received.
            "timestamp": "yesterday",
            "document": {"dob": "31.12.1990", "expiry": 20221231, "firstName": ["A"], "address": []},
            "transaction": {"date": true},
            "verification": {"rejectReason": {"rejectReasonDetails": ["not a list"]}}
        }))
    );

    let k = Kind::Document;
    let rows = [
        flatten(k, "w", &dv, &summary(0)),
        flatten(k, "v", &dv2, &summary(0)),
    ];
    let written = write_table("documents", table_columns(k), &rows);
    let (_, b) = read_parquet(&written.parquet);
    let sig = column(k, &b, "document_extracted_data_signature_available").as_boolean();
    assert!(sig.value(0), "\"TRUE\" is true");
    assert!(sig.is_null(1), "\"maybe\" is no boolean");
    assert!(column(k, &b, "document_extracted_data_extracted_data_issue_date").is_null(0));
    assert_eq!(
        unmapped(k, &rows[0]),
        Some(
            json!({"document": {"extractedData": {"extractedData": {"issueDate": "2019-13-45", "city": {"x": 1}}}}, "transaction": []})
        )
    );
    assert_eq!(
        unmapped(k, &rows[1]),
        Some(
            json!({"document": {"extractedData": {"signatureAvailable": "maybe", "extractedData": 7}}})
        )
    );

    let k = Kind::Authentication;
    let rows = [flatten(k, "w", &au, &summary(0))];
    let written = write_table("authentications", table_columns(k), &rows);
    let (_, b) = read_parquet(&written.parquet);
    assert!(column(k, &b, "transaction_date").is_null(0));
    let liveness = column(k, &b, "liveness_images").as_list::<i32>();
    assert!(liveness.value(0).is_null(0));
    assert_eq!(
        unmapped(k, &rows[0]),
        Some(
            json!({"images": ["face"], "livenessImages": [{"1": "x"}], "transactionDate": "2019-05-23 14:32"})
        )
    );
}

#[test]
fn tables_appear_under_their_names_only_after_finish() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kind::Authentication;
    let mut writer = TableWriter::create(
        dir.path(),
        "authentications",
        table_columns(k),
        true,
        true,
        Default::default(),
    )
    .unwrap();
    writer
        .write(&flatten(
            k,
            "a",
            &fixture("authentication_sample.json"),
            &summary(1),
        ))
        .unwrap();
    assert!(dir.path().join(".authentications.csv.tmp").exists());
    assert!(dir.path().join(".authentications.parquet.tmp").exists());
    assert!(!dir.path().join("authentications.csv").exists());
    assert!(!dir.path().join("authentications.parquet").exists());

    let err = writer.write(&Row(vec![Cell::Null])).unwrap_err();
    assert!(matches!(err, TableError::RowWidth { got: 1, .. }), "{err}");
    assert!(err.to_string().contains("authentications"));

    writer.finish().unwrap();
    assert!(!dir.path().join("authentications.csv.tmp").exists());
    assert!(!dir.path().join("authentications.parquet.tmp").exists());
    let (_, b) = read_parquet(&dir.path().join("authentications.parquet"));
    assert_eq!(b.num_rows(), 1, "the rejected row was not written");
    let (_, records) = read_csv(&dir.path().join("authentications.csv"));
    assert_eq!(records.len(), 1);
}

#[test]
fn only_the_requested_formats_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let writer = TableWriter::create(
        dir.path(),
        "files",
        files_columns(),
        false,
        true,
        Default::default(),
    )
    .unwrap();
    assert_eq!(writer.finish().unwrap().rows, 0);
    assert!(!dir.path().join("files.csv").exists());
    let (schema, b) = read_parquet(&dir.path().join("files.parquet"));
    assert_eq!(b.num_rows(), 0);
    assert_eq!(schema.fields().len(), files_columns().len());
}

#[test]
fn many_rows_span_several_batches_in_order() {
    let k = Kind::Authentication;
    let data = fixture("authentication_sample.json");
    let dir = tempfile::tempdir().unwrap();
    let mut writer = TableWriter::create(
        dir.path(),
        "authentications",
        table_columns(k),
        true,
        true,
        Default::default(),
    )
    .unwrap();
    let n = 2_500;
    for i in 0..n {
        writer
            .write(&flatten(k, &format!("ref-{i}"), &data, &summary(i)))
            .unwrap();
    }
    assert_eq!(writer.finish().unwrap().rows, n as u64);
    let reader = ParquetRecordBatchReaderBuilder::try_new(
        File::open(dir.path().join("authentications.parquet")).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let mut seen = 0i64;
    for batch in reader {
        let batch = batch.unwrap();
        let refs = column(k, &batch, "reference").as_string::<i32>();
        let counts = column(k, &batch, "image_count").as_primitive::<Int64Type>();
        for r in 0..batch.num_rows() {
            assert_eq!(refs.value(r), format!("ref-{seen}"));
            assert_eq!(counts.value(r), seen);
            seen += 1;
        }
    }
    assert_eq!(seen, n);
    let (_, records) = read_csv(&dir.path().join("authentications.csv"));
    assert_eq!(records.len(), n as usize);
    assert_eq!(records[2_499][0], "ref-2499");
}

#[test]
fn table_writer_can_move_to_a_writer_thread() {
    // The lead runs writers off the async runtime (spawn_blocking or a writer task).
    fn assert_send<T: Send>() {}
    assert_send::<TableWriter>();
    assert_send::<Row>();
}
