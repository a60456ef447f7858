//! Warehouse loads (SPEC "Loading a warehouse"): the DDL of `schema` run in a real PostgreSQL and
//! DuckDB and parsed by sqlglot in the BigQuery, Snowflake and Spark dialects; `load` into a
//! throw-away PostgreSQL cluster (tests/peers.rs `PgServer`): three runs loaded in two calls,
//! every cell compared with the Parquet parts as DuckDB reads them, a killed load, a crashed
//! server and two loads at once each ending with every commit loaded exactly once, and the
//! refusals (unreachable, wrong password, a table with other columns, a commit verify rejects).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jumio_export::Kind;
use jumio_export::flatten::{Column, ColumnType, ListItem};
use jumio_export::simulator::{self, SimOptions};
use jumio_export::warehouse::ddl;
use serde_json::Value;

use crate::peers::{PgServer, require_python_duckdb};
use crate::support::{BlockingSim, bin, dataset_exported, signal, text};

const DIALECTS: [&str; 5] = ["postgres", "duckdb", "bigquery", "snowflake", "spark"];

fn job_toml(concurrency: usize) -> String {
    format!(
        r#"
[api]
region = "us"
user_agent = "jumio-export warehouse tests/1.0"

[limits]
requests_per_second = 400.0
burst = 40
concurrency = {concurrency}
max_retries = 2
timeout_seconds = 10

[polling]
schedule_seconds = [0.05, 0.1]
"#
    )
}

/// `reference,kind` CSV of `refs` written as `dir/name`.
fn write_refs(dir: &Path, name: &str, refs: &[(String, Kind)]) -> PathBuf {
    let mut s = String::from("reference,kind\n");
    for (r, k) in refs {
        s.push_str(&format!("{r},{k}\n"));
    }
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p
}

fn run_command(dir: &Path, refs: &Path, out: &Path, base_url: &str, concurrency: usize) -> Command {
    let job = dir.join(format!("job-{concurrency}.toml"));
    std::fs::write(&job, job_toml(concurrency)).unwrap();
    let mut c = bin();
    c.arg("run")
        .arg(&job)
        .arg("--input")
        .arg(refs)
        .arg("--out")
        .arg(out)
        .args(["--base-url", base_url, "--quiet"]);
    c
}

/// `n` references of the simulator's population (404s, PENDING, foreign hrefs included, so the
/// failures table gets rows of every kind), from position `skip`.
fn population(skip: usize, n: usize) -> Vec<(String, Kind)> {
    simulator::population(SimOptions::default().seed, skip + n)
        .into_iter()
        .skip(skip)
        .collect()
}

/// A dataset with one commit per batch of `batches`, exported from a fresh simulator.
fn export_batches(dir: &Path, batches: &[Vec<(String, Kind)>]) -> PathBuf {
    let sim = BlockingSim::start(SimOptions::default());
    let out = dir.join("export");
    for (i, refs) in batches.iter().enumerate() {
        let list = write_refs(dir, &format!("batch-{i}.csv"), refs);
        let o = run_command(dir, &list, &out, &sim.api().base_url(), 8)
            .output()
            .unwrap();
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "batch {i}: {}",
            text(&o)
        );
    }
    out
}

fn load(out: &Path, server: &PgServer, database: &str, extra: &[&str]) -> Command {
    let mut c = bin();
    c.arg("load")
        .arg(out)
        .arg("--postgres")
        .arg(server.url(database))
        .args(extra)
        .env("PGPASSWORD", PgServer::PASSWORD)
        .env_remove("PGPASSFILE");
    c
}

fn load_ok(out: &Path, server: &PgServer, database: &str) -> String {
    let o = load(out, server, database, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "load: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn count(server: &PgServer, database: &str, table: &str) -> u64 {
    server
        .sql(database, &format!("SELECT count(*) FROM {table}"))
        .parse()
        .unwrap()
}

/// The run ids of the dataset's commits.
fn commit_runs(out: &Path) -> Vec<String> {
    jumio_export::dataset::commit::list(out).unwrap()
}

/// The Parquet parts the commits list for `table`.
fn committed_parquet(out: &Path, table: &str) -> Vec<PathBuf> {
    commit_runs(out)
        .iter()
        .flat_map(|run| {
            let c = jumio_export::dataset::commit::Commit::read(
                &jumio_export::dataset::commit::path(out, run),
            )
            .unwrap();
            c.parts
                .iter()
                .filter(|p| p.table == table && p.format == jumio_export::dataset::Format::Parquet)
                .map(|p| out.join(&p.path))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Rows the commits record for `table`.
fn committed_rows(out: &Path, table: &str) -> u64 {
    commit_runs(out)
        .iter()
        .map(|run| {
            jumio_export::dataset::commit::Commit::read(&jumio_export::dataset::commit::path(
                out, run,
            ))
            .unwrap()
            .parts
            .iter()
            .filter(|p| p.table == table && p.format == jumio_export::dataset::Format::Parquet)
            .map(|p| p.rows)
            .sum::<u64>()
        })
        .sum()
}

/// Every row of `table` in PostgreSQL as JSON values: text as strings, booleans, dates as
/// `YYYY-MM-DD`, timestamps as epoch milliseconds, integers, JSON as JSON; sorted.
fn postgres_rows(server: &PgServer, database: &str, table: &ddl::Table) -> Vec<Vec<Value>> {
    let exprs: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let id = ddl::ident(ddl::Dialect::Postgres, &c.name);
            match c.ty {
                ColumnType::Date32 => format!("{id}::text"),
                ColumnType::TimestampMs => {
                    format!("(extract(epoch FROM {id}) * 1000)::bigint")
                }
                _ => id,
            }
        })
        .collect();
    let json = server.sql(
        database,
        &format!(
            "SELECT coalesce(json_agg(json_build_array({})), '[]') FROM {}",
            exprs.join(", "),
            table.name
        ),
    );
    let mut rows: Vec<Vec<Value>> = serde_json::from_str(&json).unwrap();
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap());
    rows
}

/// The same rows read from the committed Parquet parts by DuckDB.
fn duckdb_rows(python: &Path, parts: &[PathBuf], columns: &[Column]) -> Vec<Vec<Value>> {
    if parts.is_empty() {
        return Vec::new();
    }
    let spec: Vec<Value> = columns
        .iter()
        .map(|c| {
            let how = match &c.ty {
                ColumnType::Date32 => "date",
                ColumnType::TimestampMs => "timestamp",
                ColumnType::List(_) => "list",
                ColumnType::Utf8 if c.name == jumio_export::flatten::UNMAPPED_JSON => "json",
                _ => "plain",
            };
            serde_json::json!([c.name, how])
        })
        .collect();
    let input = serde_json::json!({
        "parts": parts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "columns": spec,
    });
    let script = r#"
import sys, json, duckdb
spec = json.load(sys.stdin)
exprs = []
for name, how in spec["columns"]:
    q = '"' + name + '"'
    if how == "date":
        exprs.append("strftime(" + q + ", '%Y-%m-%d')")
    elif how == "timestamp":
        exprs.append("epoch_ms(" + q + ")")
    else:
        exprs.append(q)
rows = duckdb.sql("SELECT " + ", ".join(exprs) + " FROM read_parquet(" + json.dumps(spec["parts"]).replace('"', "'") + ")").fetchall()
out = []
for row in rows:
    cells = []
    for (name, how), v in zip(spec["columns"], row):
        if how == "json" and v is not None:
            v = json.loads(v)
        cells.append(v)
    out.append(cells)
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "duckdb: {}", text(&o));
    let mut rows: Vec<Vec<Value>> = serde_json::from_slice(&o.stdout).unwrap();
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap());
    rows
}

/// Which kinds of value the compared cells covered.
#[derive(Default, Debug)]
struct Coverage {
    seen: BTreeSet<&'static str>,
}

impl Coverage {
    fn add(&mut self, column: &Column, v: &Value) {
        let what = match (&column.ty, v) {
            (_, Value::Null) => "null",
            (ColumnType::Boolean, Value::Bool(true)) => "boolean true",
            (ColumnType::Boolean, Value::Bool(false)) => "boolean false",
            (ColumnType::Date32, _) => "date",
            (ColumnType::TimestampMs, _) => "timestamp",
            (ColumnType::Int64, _) => "integer",
            (ColumnType::List(ListItem::Utf8), Value::Array(a)) if !a.is_empty() => "list of text",
            (ColumnType::List(ListItem::Struct(_)), Value::Array(a)) if !a.is_empty() => {
                "list of objects"
            }
            (ColumnType::Utf8, Value::Object(_)) => "unmapped json",
            (ColumnType::Utf8, Value::String(s)) if !s.is_ascii() => "non-ASCII text",
            (ColumnType::Utf8, _) => "text",
            _ => return,
        };
        self.seen.insert(what);
    }
}

/// Every table in PostgreSQL equals its committed Parquet parts read by DuckDB, cell by cell;
/// returns what the cells covered.
fn assert_postgres_equals_parquet(server: &PgServer, database: &str, out: &Path) -> Coverage {
    let Some(python) = require_python_duckdb() else {
        panic!("DuckDB is needed to read the Parquet parts back");
    };
    let mut coverage = Coverage::default();
    for table in ddl::tables() {
        let pg = postgres_rows(server, database, &table);
        let parquet = duckdb_rows(&python, &committed_parquet(out, table.name), table.columns);
        assert_eq!(pg.len(), parquet.len(), "rows of {}", table.name);
        for (a, b) in pg.iter().zip(&parquet) {
            for ((column, x), y) in table.columns.iter().zip(a).zip(b) {
                assert_eq!(
                    x, y,
                    "{}.{}: PostgreSQL has {x}, the Parquet part {y}",
                    table.name, column.name
                );
                coverage.add(column, x);
            }
        }
    }
    coverage
}

fn python_sqlglot() -> Option<PathBuf> {
    let python = require_python_duckdb()?;
    let o = Command::new(&python)
        .args(["-c", "import sqlglot"])
        .output()
        .unwrap();
    if o.status.success() {
        Some(python)
    } else {
        crate::peers::unavailable(
            "sqlglot",
            &format!("{} cannot import sqlglot", python.display()),
        )
    }
}

fn schema_ddl(dialect: &str) -> String {
    let o = bin()
        .args(["schema", "--dialect", dialect])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn schema_ddl_runs_in_postgres_and_duckdb_and_parses_in_bigquery_snowflake_spark() {
    let expected: BTreeMap<&str, usize> = ddl::tables()
        .iter()
        .map(|t| (t.name, t.columns.len()))
        .collect();
    // sqlglot in each dialect: every statement a CREATE (nothing left unparsed as a command),
    // with the table's columns.
    let Some(python) = python_sqlglot() else {
        return;
    };
    for dialect in ["bigquery", "snowflake", "spark"] {
        let script = r#"
import sys, json, sqlglot
from sqlglot import exp
dialect = sys.argv[1]
out = []
for st in sqlglot.parse(sys.stdin.read(), read=dialect, error_level=sqlglot.ErrorLevel.RAISE):
    assert isinstance(st, exp.Create), type(st).__name__
    schema = st.this
    cols = [c.name for c in schema.expressions if isinstance(c, exp.ColumnDef)] if isinstance(schema, exp.Schema) else []
    out.append([st.args["kind"], st.this.find(exp.Table).name, cols])
print(json.dumps(out))
"#;
        let mut child = Command::new(&python)
            .args(["-c", script, dialect])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(schema_ddl(dialect).as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "sqlglot {dialect}: {}", text(&o));
        let parsed: Vec<(String, String, Vec<String>)> = serde_json::from_slice(&o.stdout).unwrap();
        let tables: BTreeMap<&str, usize> = parsed
            .iter()
            .filter(|(kind, _, _)| kind == "TABLE")
            .map(|(_, name, cols)| (name.as_str(), cols.len()))
            .collect();
        assert_eq!(tables, expected, "{dialect}");
        assert!(
            parsed
                .iter()
                .any(|(kind, name, _)| kind == "VIEW" && name == ddl::OPEN_FAILURES_VIEW),
            "{dialect}: {parsed:?}"
        );
    }
    // DuckDB runs its DDL; its catalogue then has every column with the documented types.
    let script = r#"
import sys, json, duckdb
c = duckdb.connect()
c.execute(sys.stdin.read())
print(json.dumps(c.execute("SELECT table_name, column_name, data_type FROM information_schema.columns ORDER BY table_name, ordinal_position").fetchall()))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(schema_ddl("duckdb").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "duckdb: {}", text(&o));
    let columns: Vec<(String, String, String)> = serde_json::from_slice(&o.stdout).unwrap();
    let duck_type = |t: &str, c: &str| {
        columns
            .iter()
            .find(|(tt, cc, _)| tt == t && cc == c)
            .map(|x| x.2.clone())
    };
    assert_eq!(
        duck_type("netverify", "document_dob").as_deref(),
        Some("DATE")
    );
    assert_eq!(
        duck_type("netverify", "timestamp").as_deref(),
        Some("TIMESTAMP WITH TIME ZONE")
    );
    assert_eq!(
        duck_type("documents", "document_extracted_data_signature_available").as_deref(),
        Some("BOOLEAN")
    );
    assert_eq!(
        duck_type("authentications", "images").as_deref(),
        Some("JSON")
    );
    for (table, n) in &expected {
        assert_eq!(
            columns.iter().filter(|(t, _, _)| t == table).count(),
            *n,
            "duckdb {table}"
        );
    }
    // PostgreSQL runs its DDL; its catalogue has the columns, types and comments.
    let Some(server) = PgServer::start() else {
        return;
    };
    let o = {
        let mut child = server
            .psql("postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(schema_ddl("postgres").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(o.status.success(), "psql: {}", text(&o));
    for (table, n) in &expected {
        let found = server.sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{table}'"
            ),
        );
        assert_eq!(found, n.to_string(), "postgres {table}");
    }
    assert_eq!(
        server.sql(
            "postgres",
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'netverify' AND column_name = 'verification_reject_reason_reject_reason_details'"
        ),
        "jsonb"
    );
    assert_eq!(
        server.sql(
            "postgres",
            "SELECT col_description('netverify'::regclass, 10)"
        ),
        "API field document.dob of GET /api/netverify/v2/scans/{reference}/data"
    );
    assert_eq!(
        server.sql(
            "postgres",
            "SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'netverify'::regclass AND i.indisprimary"
        ),
        "reference"
    );
    // One table alone, and an unknown one refused.
    let one = bin()
        .args(["schema", "--dialect", "spark", "--table", "files"])
        .output()
        .unwrap();
    assert_eq!(one.status.code(), Some(0));
    let one = String::from_utf8(one.stdout).unwrap();
    assert_eq!(one.matches("CREATE TABLE").count(), 1, "{one}");
    let bad = bin()
        .args(["schema", "--dialect", "postgres", "--table", "nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    for dialect in DIALECTS {
        assert!(schema_ddl(dialect).contains("failures_open"), "{dialect}");
    }
}

/// Waits until `done()` holds; panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn archives(out: &Path) -> usize {
    std::fs::read_dir(out.join("archives"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".zip"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn three_runs_loaded_in_two_loads_equal_the_exported_references_and_the_parquet_cell_by_cell() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    let mut opts = SimOptions::default();
    opts.faults.latency_ms = 40;
    let sim = BlockingSim::start(opts);
    let base = sim.api().base_url().to_string();
    // Run 1: batch A.
    let a = write_refs(dir.path(), "a.csv", &population(0, 30));
    let o = run_command(dir.path(), &a, &out, &base, 8)
        .output()
        .unwrap();
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
    // Run 2: batch B, interrupted (SIGTERM) half-way; run 3 resumes it.
    let b = write_refs(dir.path(), "b.csv", &population(30, 40));
    let before = archives(&out);
    let mut child = run_command(dir.path(), &b, &out, &base, 2)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("run 2 to export a few", Duration::from_secs(60), || {
        archives(&out) >= before + 4
    });
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "run 2 was interrupted");
    assert_eq!(commit_runs(&out).len(), 2);
    let first = load_ok(&out, &server, "postgres");
    assert_eq!(
        first.matches("\nloaded ").count() + usize::from(first.starts_with("loaded ")),
        2,
        "{first}"
    );
    let o = run_command(dir.path(), &b, &out, &base, 8)
        .output()
        .unwrap();
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
    let runs = commit_runs(&out);
    assert_eq!(runs.len(), 3);
    let second = load_ok(&out, &server, "postgres");
    assert!(
        second.contains(&format!("loaded   {}:", runs[2]))
            && second.matches("loaded   ").count() == 1,
        "{second}"
    );
    // Rows: the exported references, once each; the ledger has every run once.
    let exported = dataset_exported(&out);
    for kind in Kind::ALL {
        let want: BTreeSet<String> = exported
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(r, _)| r.clone())
            .collect();
        let got: BTreeSet<String> = server
            .sql(
                "postgres",
                &format!("SELECT reference FROM {}", kind.table_name()),
            )
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(got, want, "{}", kind.table_name());
        assert_eq!(
            count(&server, "postgres", kind.table_name()),
            want.len() as u64
        );
    }
    assert!(exported.len() > 40, "{} exported", exported.len());
    for table in jumio_export::dataset::TABLES {
        assert_eq!(
            count(&server, "postgres", table),
            committed_rows(&out, table),
            "{table}"
        );
        let ledger: u64 = server
            .sql(
                "postgres",
                &format!("SELECT sum({table}_rows) FROM jumio_export_loads"),
            )
            .parse()
            .unwrap();
        assert_eq!(ledger, committed_rows(&out, table), "ledger {table}");
    }
    assert_eq!(
        server.sql(
            "postgres",
            "SELECT string_agg(run, ',' ORDER BY run) FROM jumio_export_loads"
        ),
        runs.join(",")
    );
    let sha = server.sql(
        "postgres",
        &format!(
            "SELECT commit_sha256 FROM jumio_export_loads WHERE run = '{}'",
            runs[0]
        ),
    );
    assert_eq!(
        sha,
        crate::support::sha256_hex(
            &std::fs::read(jumio_export::dataset::commit::path(&out, &runs[0])).unwrap()
        )
    );
    // Values: every cell equals the Parquet cell.
    let coverage = assert_postgres_equals_parquet(&server, "postgres", &out);
    for kind in [
        "null",
        "text",
        "non-ASCII text",
        "boolean true",
        "boolean false",
        "date",
        "timestamp",
        "integer",
        "list of text",
        "list of objects",
        "unmapped json",
    ] {
        assert!(
            coverage.seen.contains(kind),
            "no {kind} cell compared: {coverage:?}"
        );
    }
    // The open follow-ups are failures.csv's rows.
    let mut csv = csv::Reader::from_path(out.join("failures.csv")).unwrap();
    let headers = csv.headers().unwrap().clone();
    let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let mut want: Vec<String> = csv
        .records()
        .map(|r| {
            let r = r.unwrap();
            format!(
                "{}|{}|{}|{}",
                &r[at("reference")],
                &r[at("kind")],
                &r[at("error")],
                &r[at("run")]
            )
        })
        .collect();
    want.sort();
    let mut got: Vec<String> = server
        .sql(
            "postgres",
            "SELECT reference || '|' || kind || '|' || error || '|' || run FROM failures_open",
        )
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want, "failures_open against failures.csv");
    // A third load loads nothing.
    let third = load_ok(&out, &server, "postgres");
    assert!(
        third.contains("3 loaded before, 0 loaded now (0 rows)"),
        "{third}"
    );
    assert_eq!(count(&server, "postgres", "jumio_export_loads"), 3);
    // README's DuckDB load: the duckdb DDL, then each table from its Parquet glob.
    let Some(python) = require_python_duckdb() else {
        return;
    };
    let script = r#"
import sys, json, duckdb
ddl, root = sys.argv[1], sys.argv[2]
c = duckdb.connect()
c.execute(open(ddl).read())
counts = {}
for t in ["netverify", "documents", "authentications", "files", "failures"]:
    c.execute(f"INSERT INTO {t} SELECT * FROM read_parquet('{root}/tables/{t}/*.parquet')")
    counts[t] = c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
counts["failures_open"] = c.execute("SELECT count(*) FROM failures_open").fetchone()[0]
counts["details"] = c.execute("SELECT count(*) FROM netverify WHERE json_array_length(verification_reject_reason_reject_reason_details) > 0").fetchone()[0]
print(json.dumps(counts))
"#;
    let ddl_path = dir.path().join("duckdb.sql");
    std::fs::write(&ddl_path, schema_ddl("duckdb")).unwrap();
    let o = Command::new(&python)
        .args(["-c", script])
        .arg(&ddl_path)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "duckdb load: {}", text(&o));
    let counts: BTreeMap<String, u64> = serde_json::from_slice(&o.stdout).unwrap();
    for table in jumio_export::dataset::TABLES {
        assert_eq!(
            counts[table],
            count(&server, "postgres", table),
            "duckdb {table}"
        );
    }
    assert_eq!(counts["failures_open"], want.len() as u64);
    assert!(counts["details"] > 0);
}

/// A psql session holding `LOCK TABLE files` in an open transaction until released: a load that
/// reaches its COPY into `files` waits there, in the middle of a commit.
struct TableLock(Child);

impl TableLock {
    fn hold(server: &PgServer, database: &str, table: &str) -> TableLock {
        let mut child = server
            .psql(database)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT 'locked';"
        )
        .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        TableLock(child)
    }

    fn release(mut self) {
        if let Some(mut stdin) = self.0.stdin.take() {
            let _ = writeln!(stdin, "COMMIT;");
        }
        let _ = self.0.wait();
    }
}

/// Backends whose query starts with `prefix` and that wait on a lock of `event` (`relation`,
/// `advisory`).
fn waiting(server: &PgServer, database: &str, prefix: &str, event: &str) -> u64 {
    server
        .sql(
            database,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = '{event}' AND query LIKE '{prefix}%'"
            ),
        )
        .parse()
        .unwrap()
}

/// Backends still running a COPY (a load's, after its client died).
fn copies(server: &PgServer, database: &str) -> u64 {
    server
        .sql(
            database,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%' AND pid <> pg_backend_pid()",
        )
        .parse()
        .unwrap()
}

/// Every table's rows equal the commits' rows, and the ledger names each run once.
fn assert_loaded_exactly_once(server: &PgServer, database: &str, out: &Path) {
    for table in jumio_export::dataset::TABLES {
        assert_eq!(
            count(server, database, table),
            committed_rows(out, table),
            "{table}"
        );
    }
    assert_eq!(
        server.sql(
            database,
            "SELECT string_agg(run, ',' ORDER BY run) FROM jumio_export_loads"
        ),
        commit_runs(out).join(",")
    );
}

fn three_commit_dataset(dir: &Path) -> PathBuf {
    export_batches(
        dir,
        &[population(0, 12), population(12, 12), population(24, 12)],
    )
}

fn nothing_loaded(server: &PgServer, database: &str) {
    for table in jumio_export::dataset::TABLES {
        assert_eq!(count(server, database, table), 0, "{table}");
    }
    assert_eq!(count(server, database, "jumio_export_loads"), 0);
}

#[test]
fn a_killed_or_interrupted_load_a_crashed_server_and_two_loads_at_once_each_load_every_commit_once()
{
    let Some(server) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = three_commit_dataset(dir.path());
    let first_run = commit_runs(&out)[0].clone();
    let tables = |db: &str| {
        let mut child = server
            .psql(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(schema_ddl("postgres").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    };

    // kill -9 of the load in the middle of its first commit (its kind-table rows copied, the
    // files COPY waiting): nothing of that commit is visible, and the next load loads it all.
    let db = server.create_database("killed");
    tables(&db);
    let lock = TableLock::hold(&server, &db, "files");
    let mut child = load(&out, &server, &db, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the load to wait inside its first commit",
        Duration::from_secs(60),
        || waiting(&server, &db, "COPY", "relation") == 1,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    lock.release();
    wait_for(
        "the killed load's backend to end",
        Duration::from_secs(30),
        || copies(&server, &db) == 0,
    );
    nothing_loaded(&server, &db);
    load_ok(&out, &server, &db);
    assert_loaded_exactly_once(&server, &db, &out);
    assert_postgres_equals_parquet(&server, &db, &out);

    // SIGTERM in the middle of a commit: exit 130 saying so, the commit rolled back.
    let db = server.create_database("terminated");
    tables(&db);
    let lock = TableLock::hold(&server, &db, "files");
    let child = load(&out, &server, &db, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the load to wait inside its first commit",
        Duration::from_secs(60),
        || waiting(&server, &db, "COPY", "relation") == 1,
    );
    signal(child.id(), libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(text(&o).contains("rolled back"), "{}", text(&o));
    lock.release();
    wait_for(
        "the interrupted load's backend to end",
        Duration::from_secs(30),
        || copies(&server, &db) == 0,
    );
    nothing_loaded(&server, &db);
    load_ok(&out, &server, &db);
    assert_loaded_exactly_once(&server, &db, &out);

    // The server crashes in the middle of a commit: exit 3 naming the host; after a restart the
    // next load completes.
    let db = server.create_database("crashed");
    tables(&db);
    let lock = TableLock::hold(&server, &db, "files");
    let child = load(&out, &server, &db, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the load to wait inside its first commit",
        Duration::from_secs(60),
        || waiting(&server, &db, "COPY", "relation") == 1,
    );
    server.crash();
    let o = child.wait_with_output().unwrap();
    let _ = lock.0.wait_with_output();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("127.0.0.1:{}", server.port)), "{err}");
    assert!(!err.contains(PgServer::PASSWORD), "{err}");
    server.restart();
    nothing_loaded(&server, &db);
    load_ok(&out, &server, &db);
    assert_loaded_exactly_once(&server, &db, &out);

    // Two loads at once: the first waits inside commit 1, the second on the advisory lock;
    // released, the second finds commit 1 in the ledger and skips it. Each commit once.
    let db = server.create_database("concurrent");
    tables(&db);
    let lock = TableLock::hold(&server, &db, "files");
    let spawn = || {
        load(&out, &server, &db, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let one = spawn();
    wait_for("load 1 inside commit 1", Duration::from_secs(60), || {
        waiting(&server, &db, "COPY", "relation") == 1
    });
    let two = spawn();
    wait_for(
        "load 2 on the advisory lock",
        Duration::from_secs(60),
        || waiting(&server, &db, "SELECT pg_advisory_xact_lock", "advisory") == 1,
    );
    lock.release();
    let outputs: Vec<Output> = [one, two]
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut loaded = Vec::new();
    for o in &outputs {
        assert_eq!(o.status.code(), Some(0), "{}", text(o));
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some(rest) = line.strip_prefix("loaded   ") {
                loaded.push(rest.split(':').next().unwrap().to_string());
            }
        }
    }
    loaded.sort();
    assert_eq!(
        loaded,
        commit_runs(&out),
        "each commit loaded by exactly one load"
    );
    let second = String::from_utf8_lossy(&outputs[1].stdout);
    assert!(
        second.contains(&format!(
            "skipped  {first_run}: loaded by a concurrent load"
        )),
        "{second}"
    );
    assert_loaded_exactly_once(&server, &db, &out);
}

#[test]
fn refusals_name_the_host_or_column_and_load_nothing() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = export_batches(dir.path(), &[population(0, 10)]);
    let canary = "canary-pg-password-5d21";
    let host = format!("127.0.0.1:{}", server.port);
    let run = |url: String, env_password: Option<&str>| -> Output {
        let mut c = bin();
        c.arg("load")
            .arg(&out)
            .arg("--postgres")
            .arg(url)
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", dir.path().join("no-pgpass"));
        if let Some(p) = env_password {
            c.env("PGPASSWORD", p);
        }
        c.output().unwrap()
    };
    let assert_exit = |o: &Output, code: i32, names: &str| {
        let all = text(o);
        assert_eq!(o.status.code(), Some(code), "{all}");
        assert!(all.contains(names), "{names} not in {all}");
        assert!(!all.contains(canary), "the password in {all}");
        assert!(!all.contains(PgServer::PASSWORD), "the password in {all}");
    };
    // Unreachable: nothing listens on that port.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = run(
        format!("postgresql://jumio:{canary}@127.0.0.1:{free}/postgres"),
        None,
    );
    assert_exit(&o, 3, &format!("127.0.0.1:{free}"));
    // Refused password, in the URL and in PGPASSWORD.
    let o = run(format!("postgresql://jumio:{canary}@{host}/postgres"), None);
    assert_exit(&o, 3, &host);
    let o = run(server.url("postgres"), Some(canary));
    assert_exit(&o, 3, &host);
    // A database that does not exist.
    let o = run(server.url("nosuchdb"), Some(PgServer::PASSWORD));
    assert_exit(&o, 3, &host);
    // Not a URL at all: usage, and the text is not echoed.
    let o = run(
        format!("postgresql://jumio:{canary}@{host}:x/postgres"),
        None,
    );
    assert_exit(&o, 2, "--postgres");
    assert_eq!(
        count(
            &server,
            "postgres",
            "pg_tables WHERE tablename = 'netverify'"
        ),
        0
    );

    // The password from a .pgpass file (PGPASSFILE), mode 0600.
    let pgpass = dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{}:*:jumio:{}\n", server.port, PgServer::PASSWORD),
    )
    .unwrap();
    std::fs::set_permissions(
        &pgpass,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let db = server.create_database("pgpass");
    let o = bin()
        .arg("load")
        .arg(&out)
        .arg("--postgres")
        .arg(server.url(&db))
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", &pgpass)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_loaded_exactly_once(&server, &db, &out);

    // A table with other columns: exit 2 naming the column; nothing created or loaded.
    for (alter, column) in [
        ("DROP COLUMN document_dob", "document_dob"),
        ("ALTER COLUMN image_count TYPE text", "image_count"),
        ("ADD COLUMN extra_column text", "extra_column"),
    ] {
        let db = server.create_database(&format!("mismatch_{column}"));
        server.sql(
            &db,
            &format!(
                "CREATE SCHEMA wh; SET search_path = wh; {}",
                schema_ddl("postgres")
            ),
        );
        server.sql(&db, &format!("ALTER TABLE wh.netverify {alter}"));
        let o = load(&out, &server, &db, &["--schema", "wh"])
            .output()
            .unwrap();
        assert_exit(&o, 2, &format!("column {column}"));
        assert_eq!(server.sql(&db, "SELECT count(*) FROM wh.netverify"), "0");
        assert_eq!(
            server.sql(&db, "SELECT to_regclass('wh.jumio_export_loads') IS NULL"),
            "t"
        );
    }

    // A commit verify rejects (a part changed after its commit): exit 1 naming the part;
    // nothing loaded.
    let part = committed_parquet(&out, "netverify")[0].clone();
    let mut bytes = std::fs::read(&part).unwrap();
    bytes.push(0);
    std::fs::write(&part, bytes).unwrap();
    let db = server.create_database("damaged");
    let o = load(&out, &server, &db, &[]).output().unwrap();
    let name = part.file_name().unwrap().to_string_lossy().into_owned();
    assert_exit(&o, 1, &name);
    assert!(text(&o).contains("jumio-export verify"), "{}", text(&o));
    nothing_loaded(&server, &db);
}
