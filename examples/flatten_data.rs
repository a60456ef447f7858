//! Library use of the flatten stage: prints one saved API response as a CSV table row.
//!
//! ```text
//! cargo run --example flatten_data -- tests/fixtures/netverify_max.json netverify
//! ```
//! The first argument is a saved `/data` response (Authentication: the details response),
//! the second its kind (`netverify`, `document`, `authentication`). Reads one file and
//! writes stdout; sends no request.

use std::process::ExitCode;

use jumio_export::Kind;
use jumio_export::flatten::{ArchiveSummary, Cell, flatten, table_columns};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, kind] = args.as_slice() else {
        eprintln!("usage: flatten_data DATA.json netverify|document|authentication");
        return ExitCode::from(2);
    };
    match run(path, kind) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flatten_data: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str, kind: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let kind: Kind = kind.parse()?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let data: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?;
    // The reference is the one the response names; the archive columns stay empty here
    // because no archive was written.
    let reference = ["scanReference", "transactionReference"]
        .iter()
        .find_map(|k| data.get(k).and_then(|v| v.as_str()))
        .unwrap_or_default()
        .to_string();
    let archive = ArchiveSummary {
        image_count: 0,
        archive: String::new(),
        archive_sha256: String::new(),
        run: "20261206T074501Z-7f2a".into(),
    };
    let row = flatten(kind, &reference, &data, &archive);

    let mut out = csv::Writer::from_writer(std::io::stdout().lock());
    out.write_record(table_columns(kind).iter().map(|c| c.name.as_str()))?;
    out.write_record(row.0.iter().map(|cell| match cell {
        Cell::Null => String::new(),
        Cell::Text(s) => s.clone(),
        Cell::Bool(b) => b.to_string(),
        Cell::Int(i) => i.to_string(),
        Cell::List(values) => serde_json::Value::Array(values.clone()).to_string(),
    }))?;
    out.flush()?;
    Ok(())
}
