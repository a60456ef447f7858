//! `jumio-export schema --dialect D`: the CREATE TABLE statements of every table, derived from
//! the one schema in [`crate::flatten`] (names, types, the API field path of each column), never
//! from a second list of columns. Pure: builds text, runs nothing.
//!
//! Types per dialect (Parquet type → column type):
//!
//! | Parquet | postgres | duckdb | bigquery | snowflake | spark |
//! |---|---|---|---|---|---|
//! | Utf8 | text | VARCHAR | STRING | VARCHAR | STRING |
//! | Boolean | boolean | BOOLEAN | BOOL | BOOLEAN | BOOLEAN |
//! | Date32 | date | DATE | DATE | DATE | DATE |
//! | Timestamp(ms, UTC) | timestamptz | TIMESTAMPTZ | TIMESTAMP | TIMESTAMP_TZ | TIMESTAMP |
//! | Int64 | bigint | BIGINT | INT64 | BIGINT | BIGINT |
//! | List | jsonb | JSON | ARRAY<…> | VARIANT | ARRAY<…> |
//! | `unmapped_json` | jsonb | JSON | JSON | VARIANT | STRING |
//!
//! BigQuery and Spark get the Parquet list type for arrays (`ARRAY<STRUCT<…>>`) because their
//! Parquet loaders fill a list column from a Parquet list and cannot fill a JSON one; Spark has
//! no JSON type at all, so its `unmapped_json` is text.

use std::fmt::Write as _;

use crate::Kind;
use crate::dataset::{FAILURES_TABLE, FILES_TABLE};
use crate::flatten::{self, Column, ColumnType, ListItem};

/// A warehouse SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// PostgreSQL (what `load` creates).
    Postgres,
    /// DuckDB.
    Duckdb,
    /// Google BigQuery (GoogleSQL).
    Bigquery,
    /// Snowflake.
    Snowflake,
    /// Apache Spark SQL.
    Spark,
}

/// One table of the dataset as a warehouse sees it.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// The table name, as under `tables/` (`netverify`, …).
    pub name: &'static str,
    /// Its columns, from [`crate::flatten`].
    pub columns: &'static [Column],
    /// The API family of a kind table.
    pub kind: Option<Kind>,
    /// The columns unique across the dataset (every exported reference has one row per kind
    /// table, one `files` row per archive entry); empty for `failures`, which keeps every
    /// failure row each run recorded.
    pub key: &'static [&'static str],
}

/// The view over `failures` that holds the dataset's open follow-ups (what `failures.csv` holds).
pub const OPEN_FAILURES_VIEW: &str = "failures_open";

/// Every table, in the order of [`crate::dataset::TABLES`].
pub fn tables() -> [Table; 5] {
    tables_for(flatten::pii::Pii::Full)
}

/// Every table under PII profile `pii` (the transaction tables' columns follow it).
pub fn tables_for(pii: flatten::pii::Pii) -> [Table; 5] {
    let kind = |k: Kind| Table {
        name: k.table_name(),
        columns: flatten::pii::table_columns_for(k, pii),
        kind: Some(k),
        key: &["reference"],
    };
    [
        kind(Kind::Netverify),
        kind(Kind::Document),
        kind(Kind::Authentication),
        Table {
            name: FILES_TABLE,
            columns: flatten::files_columns(),
            kind: None,
            key: &["reference", "kind", "entry"],
        },
        Table {
            name: FAILURES_TABLE,
            columns: flatten::failures_columns(),
            kind: None,
            key: &[],
        },
    ]
}

/// The table called `name`.
pub fn table(name: &str) -> Option<Table> {
    tables().into_iter().find(|t| t.name == name)
}

/// An identifier (a table, column or schema name) as written in `dialect`. Every name the
/// program makes is lowercase snake case; quoting keeps words such as `timestamp` plain names.
/// Snowflake is left unquoted: quoted names are case-sensitive there, unquoted ones are not.
pub fn ident(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Postgres | Dialect::Duckdb => format!("\"{}\"", name.replace('"', "\"\"")),
        Dialect::Bigquery | Dialect::Spark => format!("`{}`", name.replace('`', "")),
        Dialect::Snowflake => name.to_string(),
    }
}

/// `schema.name` (or `name`) in `dialect`.
pub fn qualified(dialect: Dialect, schema: Option<&str>, name: &str) -> String {
    match schema {
        Some(s) => format!("{}.{}", ident(dialect, s), ident(dialect, name)),
        None => ident(dialect, name),
    }
}

/// A SQL string literal: quotes doubled in the dialects that follow the standard, backslash
/// escapes where a doubled quote means two adjacent literals (BigQuery, Spark).
fn literal(dialect: Dialect, text: &str) -> String {
    match dialect {
        Dialect::Postgres | Dialect::Duckdb | Dialect::Snowflake => {
            format!("'{}'", text.replace('\'', "''"))
        }
        Dialect::Bigquery | Dialect::Spark => {
            format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
        }
    }
}

/// The type of `column` in `dialect` (see the module table).
pub fn column_type(dialect: Dialect, column: &Column) -> String {
    use Dialect::*;
    if column.name == flatten::UNMAPPED_JSON {
        return match dialect {
            Postgres => "jsonb",
            Duckdb | Bigquery => "JSON",
            Snowflake => "VARIANT",
            Spark => "STRING",
        }
        .to_string();
    }
    let scalar = |pg: &str, duck: &str, bq: &str, sf: &str, spark: &str| {
        match dialect {
            Postgres => pg,
            Duckdb => duck,
            Bigquery => bq,
            Snowflake => sf,
            Spark => spark,
        }
        .to_string()
    };
    match &column.ty {
        ColumnType::Utf8 => scalar("text", "VARCHAR", "STRING", "VARCHAR", "STRING"),
        ColumnType::Boolean => scalar("boolean", "BOOLEAN", "BOOL", "BOOLEAN", "BOOLEAN"),
        ColumnType::Date32 => scalar("date", "DATE", "DATE", "DATE", "DATE"),
        ColumnType::TimestampMs => scalar(
            "timestamptz",
            "TIMESTAMPTZ",
            "TIMESTAMP",
            "TIMESTAMP_TZ",
            "TIMESTAMP",
        ),
        ColumnType::Int64 => scalar("bigint", "BIGINT", "INT64", "BIGINT", "BIGINT"),
        ColumnType::List(item) => match dialect {
            Postgres => "jsonb".to_string(),
            Duckdb => "JSON".to_string(),
            Snowflake => "VARIANT".to_string(),
            Bigquery => match item {
                ListItem::Utf8 => "ARRAY<STRING>".to_string(),
                ListItem::Struct(fields) => format!(
                    "ARRAY<STRUCT<{}>>",
                    fields
                        .iter()
                        .map(|f| format!("{} STRING", f.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            Spark => match item {
                ListItem::Utf8 => "ARRAY<STRING>".to_string(),
                ListItem::Struct(fields) => format!(
                    "ARRAY<STRUCT<{}>>",
                    fields
                        .iter()
                        .map(|f| format!("{}: STRING", f.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        },
    }
}

/// How PostgreSQL's `information_schema.columns.data_type` names the type [`column_type`] gives
/// `column` in PostgreSQL: what `load` compares an existing table against.
pub fn postgres_information_schema_type(column: &Column) -> &'static str {
    match column_type(Dialect::Postgres, column).as_str() {
        "text" => "text",
        "boolean" => "boolean",
        "date" => "date",
        "timestamptz" => "timestamp with time zone",
        "bigint" => "bigint",
        _ => "jsonb",
    }
}

/// The comment of `column` of `table`: the API field path and the request it came from, or
/// what the program puts there.
pub fn comment(table: &Table, column: &Column) -> String {
    match (&column.doc_path, table.kind) {
        (Some(path), Some(kind)) => {
            format!("API field {path} of {}", flatten::source_endpoint(kind))
        }
        _ => column.about.to_string(),
    }
}

fn table_comment(table: &Table) -> String {
    match table.kind {
        Some(kind) => format!(
            "one row per exported {} transaction (jumio-export)",
            kind.as_str()
        ),
        None if table.name == FILES_TABLE => {
            "one row per file in each transaction's archive (jumio-export)".to_string()
        }
        None => "every failure row each run recorded; the open follow-ups are the view failures_open (jumio-export)".to_string(),
    }
}

/// The CREATE TABLE statement of `table` (with its comments, as separate statements in
/// PostgreSQL and DuckDB), each statement ending in `;` and a newline.
pub fn create_table(dialect: Dialect, schema: Option<&str>, table: &Table) -> String {
    let name = qualified(dialect, schema, table.name);
    let mut out = format!("CREATE TABLE IF NOT EXISTS {name} (\n");
    let not_null = |c: &Column| table.key.contains(&c.name.as_str()) || c.name == flatten::RUN;
    let mut lines = Vec::new();
    for column in table.columns {
        let mut line = format!(
            "  {} {}",
            ident(dialect, &column.name),
            column_type(dialect, column)
        );
        if not_null(column) {
            line.push_str(" NOT NULL");
        }
        let note = literal(dialect, &comment(table, column));
        match dialect {
            Dialect::Postgres | Dialect::Duckdb => {}
            Dialect::Bigquery => write!(line, " OPTIONS(description={note})").unwrap(),
            Dialect::Snowflake | Dialect::Spark => write!(line, " COMMENT {note}").unwrap(),
        }
        lines.push(line);
    }
    if !table.key.is_empty() {
        let key = table
            .key
            .iter()
            .map(|c| ident(dialect, c))
            .collect::<Vec<_>>()
            .join(", ");
        match dialect {
            Dialect::Postgres | Dialect::Duckdb | Dialect::Snowflake => {
                lines.push(format!("  PRIMARY KEY ({key})"))
            }
            Dialect::Bigquery => lines.push(format!("  PRIMARY KEY ({key}) NOT ENFORCED")),
            // Spark SQL has no key constraints.
            Dialect::Spark => {}
        }
    }
    out.push_str(&lines.join(",\n"));
    out.push_str("\n)");
    let note = literal(dialect, &table_comment(table));
    match dialect {
        Dialect::Postgres | Dialect::Duckdb => {
            out.push_str(";\n");
            writeln!(out, "COMMENT ON TABLE {name} IS {note};").unwrap();
            for column in table.columns {
                writeln!(
                    out,
                    "COMMENT ON COLUMN {name}.{} IS {};",
                    ident(dialect, &column.name),
                    literal(dialect, &comment(table, column))
                )
                .unwrap();
            }
        }
        Dialect::Bigquery => writeln!(out, "\nOPTIONS(description={note});").unwrap(),
        Dialect::Snowflake => writeln!(out, "\nCOMMENT = {note};").unwrap(),
        Dialect::Spark => writeln!(out, "\nUSING PARQUET\nCOMMENT {note};").unwrap(),
    }
    out
}

/// The view of the dataset's open follow-ups: for every (reference, kind) its latest failure row
/// in commit order (run ids sort by start time), unless a kind table has the reference — the
/// rows `failures.csv` holds.
pub fn open_failures_view(dialect: Dialect, schema: Option<&str>) -> String {
    let columns = flatten::failures_columns()
        .iter()
        .map(|c| format!("f.{}", ident(dialect, &c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let id = |n: &str| ident(dialect, n);
    let mut out = format!(
        "CREATE OR REPLACE VIEW {} AS\nSELECT {columns}\nFROM (\n  SELECT g.*, ROW_NUMBER() OVER (PARTITION BY g.{r}, g.{k} ORDER BY g.{run} DESC) AS latest\n  FROM {} g\n) f\nWHERE f.latest = 1",
        qualified(dialect, schema, OPEN_FAILURES_VIEW),
        qualified(dialect, schema, FAILURES_TABLE),
        r = id("reference"),
        k = id("kind"),
        run = id(flatten::RUN),
    );
    for kind in Kind::ALL {
        write!(
            out,
            "\n  AND NOT EXISTS (SELECT 1 FROM {} t WHERE f.{k} = {} AND t.{r} = f.{r})",
            qualified(dialect, schema, kind.table_name()),
            literal(dialect, kind.as_str()),
            k = id("kind"),
            r = id("reference"),
        )
        .unwrap();
    }
    out.push_str(";\n");
    out
}

/// The whole script `schema` prints: every table (or only `only`), then the view of open
/// follow-ups when the `failures` table is printed.
pub fn script(dialect: Dialect, schema: Option<&str>, only: Option<&Table>) -> String {
    script_for(dialect, schema, only, flatten::pii::Pii::Full)
}

/// [`script`] for the tables of PII profile `pii`.
pub fn script_for(
    dialect: Dialect,
    schema: Option<&str>,
    only: Option<&Table>,
    pii: flatten::pii::Pii,
) -> String {
    let chosen: Vec<Table> = match only {
        Some(t) => vec![*t],
        None => tables_for(pii).to_vec(),
    };
    let mut out = String::new();
    for table in &chosen {
        out.push_str(&create_table(dialect, schema, table));
        out.push('\n');
    }
    if only.is_none() {
        out.push_str(&open_failures_view(dialect, schema));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_gets_a_type_and_a_comment_naming_its_api_path() {
        for dialect in [
            Dialect::Postgres,
            Dialect::Duckdb,
            Dialect::Bigquery,
            Dialect::Snowflake,
            Dialect::Spark,
        ] {
            let ddl = create_table(dialect, None, &table("netverify").unwrap());
            assert!(
                ddl.contains(
                    "API field document.firstName of GET /api/netverify/v2/scans/{reference}/data"
                ),
                "{ddl}"
            );
        }
        let pg = create_table(Dialect::Postgres, None, &table("netverify").unwrap());
        assert!(pg.contains("\"document_dob\" date,"), "{pg}");
        assert!(pg.contains("\"timestamp\" timestamptz,"), "{pg}");
        assert!(
            pg.contains("\"verification_reject_reason_reject_reason_details\" jsonb,"),
            "{pg}"
        );
        assert!(pg.contains("\"unmapped_json\" jsonb,"), "{pg}");
        assert!(pg.contains("\"image_count\" bigint,"), "{pg}");
        assert!(pg.contains("PRIMARY KEY (\"reference\")"), "{pg}");
        let docs = create_table(Dialect::Postgres, None, &table("documents").unwrap());
        assert!(
            docs.contains("\"document_extracted_data_signature_available\" boolean,"),
            "{docs}"
        );
        let spark = create_table(Dialect::Spark, None, &table("netverify").unwrap());
        assert!(
            spark.contains("ARRAY<STRUCT<details_code: STRING, details_description: STRING>>"),
            "{spark}"
        );
    }

    #[test]
    fn a_comment_with_a_quote_stays_one_literal() {
        assert_eq!(literal(Dialect::Postgres, "it's"), "'it''s'");
        assert_eq!(literal(Dialect::Bigquery, "it's \\"), "'it\\'s \\\\'");
    }
}
