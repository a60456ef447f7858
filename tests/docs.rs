//! The documentation in the repository stands alone and matches the code: `docs/columns.md` is
//! generated from the one schema in `src/flatten/` (and compared with the committed file),
//! `docs/job-file.md` lists exactly the keys the job parser accepts with their defaults, and no
//! link in `README.md` or `docs/*.md` leaves the repository except to a public web site.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jumio_export::flatten::{ColumnType, ListItem};
use jumio_export::job::{self, JobError, Overrides};
use jumio_export::warehouse::ddl;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---- docs/columns.md ------------------------------------------------------------------

fn type_name(t: &ColumnType) -> String {
    match t {
        ColumnType::Utf8 => "text".into(),
        ColumnType::Boolean => "boolean".into(),
        ColumnType::Date32 => "date".into(),
        ColumnType::TimestampMs => "timestamp (ms, UTC)".into(),
        ColumnType::Int64 => "integer".into(),
        ColumnType::List(ListItem::Utf8) => "list of text".into(),
        ColumnType::List(ListItem::Struct(fields)) => format!(
            "list of ({})",
            fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `docs/columns.md` as the code's schema makes it.
fn columns_md() -> String {
    let mut s = String::from(
        "# Table columns\n\n\
         Generated from the schema in `src/flatten/` by `tests/docs.rs` (`UPDATE_DOCS=1 cargo test \
         --test tests docs::` rewrites it; review and commit the diff). The same schema gives \
         `jumio-export schema --dialect D` its DDL and column comments.\n\n\
         Every table is read whole by a glob (`tables/{table}/*.parquet`); see \
         [dataset.md](dataset.md) for the layout and [api.md](api.md) for the requests. Column \
         names are the API's JSON paths with each key turned from camelCase to snake_case and \
         joined with `_`. Types are the Parquet types; CSV holds the API's text (lists as JSON \
         text). A documented value that does not parse as its type is NULL in Parquet and kept \
         verbatim in CSV. Every documented field is a column in every run, even when all values \
         are null; fields the guide does not document are kept in `unmapped_json`.\n",
    );
    for table in ddl::tables() {
        s.push_str(&format!("\n## `{}`\n\n", table.name));
        match table.kind {
            Some(kind) => s.push_str(&format!(
                "One row per exported {} transaction; the documented columns come from `{}`. \
                 Key: `reference`.\n\n",
                kind.as_str(),
                jumio_export::flatten::source_endpoint(kind)
            )),
            None if table.key.is_empty() => s.push_str(
                "Every failure row each run recorded (the history of attempts); the open \
                 follow-ups are `failures.csv` and the view `failures_open`. No key.\n\n",
            ),
            None => s.push_str(&format!(
                "One row per file in each transaction's archive. Key: {}.\n\n",
                table
                    .key
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        s.push_str("| # | column | type | API field | source |\n|---|---|---|---|---|\n");
        for (i, c) in table.columns.iter().enumerate() {
            let (field, source) = match (&c.doc_path, table.kind) {
                (Some(path), Some(kind)) => (
                    format!("`{path}`"),
                    format!("`{}`", jumio_export::flatten::source_endpoint(kind)),
                ),
                _ => ("—".to_string(), c.about.replace('|', "\\|")),
            };
            s.push_str(&format!(
                "| {} | `{}` | {} | {field} | {source} |\n",
                i + 1,
                c.name,
                type_name(&c.ty)
            ));
        }
    }
    s
}

#[test]
fn columns_md_is_generated_from_the_schema() {
    let path = repo().join("docs/columns.md");
    let actual = columns_md();
    let update = std::env::var_os("UPDATE_DOCS").is_some();
    assert!(
        !(update && crate::peers::under_ci()),
        "UPDATE_DOCS is set under CI: CI compares docs/columns.md with the committed file"
    );
    let committed = std::fs::read_to_string(&path);
    if update && committed.as_ref().ok() != Some(&actual) {
        std::fs::write(&path, &actual).unwrap();
        panic!(
            "UPDATE_DOCS: rewrote {}; review the diff, commit it, run again without UPDATE_DOCS",
            path.display()
        );
    }
    let committed = committed.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Every column of every table is in the committed page, in order.
    for table in ddl::tables() {
        for c in table.columns {
            assert!(
                committed.contains(&format!("| `{}` |", c.name)),
                "{}.{} missing from docs/columns.md",
                table.name,
                c.name
            );
        }
    }
    assert!(
        actual == committed,
        "docs/columns.md differs from the schema in src/flatten/; run with UPDATE_DOCS=1 once"
    );
}

// ---- docs/job-file.md -----------------------------------------------------------------

/// `(section, key, default)` rows of the tables under `## [section]` headings.
fn documented_keys(md: &str) -> Vec<(String, String, String)> {
    let mut section = None;
    let mut rows = Vec::new();
    for line in md.lines() {
        if let Some(h) = line.strip_prefix("## `[")
            && let Some(name) = h.strip_suffix("]`")
        {
            section = Some(name.to_string());
            continue;
        }
        let (Some(section), Some(row)) = (&section, line.strip_prefix("| `")) else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        let key = cells[0].trim_end_matches('`');
        rows.push((section.clone(), key.to_string(), cells[2].to_string()));
    }
    rows
}

/// The names an unknown-key error lists as expected, in order.
fn expected_keys(text: &str) -> Vec<String> {
    let err = job::parse(text, Path::new("jobs/x.toml"), &Overrides::default())
        .expect_err("an unknown key is an error");
    let message = err.to_string();
    let list = message
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of keys in {message:?}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

const REQUIRED: &str = "[api]\nuser_agent = \"Docs Test/1.0\"\n";

#[test]
fn job_file_md_lists_exactly_the_keys_the_parser_accepts_with_their_defaults() {
    let md = std::fs::read_to_string(repo().join("docs/job-file.md")).unwrap();
    let documented = documented_keys(&md);
    let doc_set: BTreeSet<(String, String)> = documented
        .iter()
        .map(|(s, k, _)| (s.clone(), k.clone()))
        .collect();
    assert_eq!(doc_set.len(), documented.len(), "a key documented twice");

    let mut accepted = BTreeSet::new();
    for section in expected_keys(&format!("{REQUIRED}[zz_unknown]\n")) {
        let text = if section == "api" {
            format!("{REQUIRED}zz_unknown = 1\n")
        } else {
            format!("{REQUIRED}[{section}]\nzz_unknown = 1\n")
        };
        for key in expected_keys(&text) {
            accepted.insert((section.clone(), key));
        }
    }
    assert!(accepted.len() > 20, "{accepted:?}");
    assert_eq!(
        doc_set.difference(&accepted).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented in docs/job-file.md but not accepted by the parser"
    );
    assert_eq!(
        accepted.difference(&doc_set).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "accepted by the parser but missing from docs/job-file.md"
    );

    // Every default written as a TOML value parses to the settings of a file that sets none.
    let mut explicit = String::new();
    let mut current = "";
    let mut literal = 0;
    for (section, key, default) in &documented {
        let Some(value) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) else {
            continue; // "from `region`", "none": no literal default
        };
        if current != section {
            explicit.push_str(&format!("[{section}]\n"));
            if section == "api" {
                explicit.push_str("user_agent = \"Docs Test/1.0\"\n");
            }
            current = section;
        }
        explicit.push_str(&format!("{key} = {value}\n"));
        literal += 1;
    }
    assert!(literal >= 25, "{literal} defaults checked:\n{explicit}");
    let parse = |text: &str| -> Result<job::Job, JobError> {
        let mut j = job::parse(text, Path::new("jobs/x.toml"), &Overrides::default())?;
        j.sha256.clear();
        Ok(j)
    };
    let minimal = parse(REQUIRED).unwrap();
    let documented_defaults = parse(&explicit)
        .unwrap_or_else(|e| panic!("the documented defaults do not parse: {e}\n{explicit}"));
    assert_eq!(
        documented_defaults, minimal,
        "a documented default is not the parser's:\n{explicit}"
    );
}

// ---- links ----------------------------------------------------------------------------

/// The targets of the Markdown links `[text](target)` and `<http…>` autolinks in `md`, code
/// spans and fenced blocks left out.
fn link_targets(md: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans hold commands and paths, not links.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            targets.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("<http") {
            let after = &rest[at + 1..];
            let end = after.find('>').unwrap_or(after.len());
            targets.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    targets
}

/// Whether an http(s) URL names a public site: not loopback, not a private or link-local
/// address, not a single-label or `.local`/`.internal` host.
fn public_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(format!("{url}: not http(s)"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url}: no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{url}: an address ({host}), not a public site"));
    }
    if !host.contains('.')
        || [".local", ".internal", ".localhost", ".lan", ".corp"]
            .iter()
            .any(|s| host.ends_with(s))
    {
        return Err(format!("{url}: not a public host"));
    }
    Ok(())
}

/// Checks every link of one Markdown file: relative links resolve to a file or directory
/// inside the repository, absolute ones are http(s) to public sites.
fn check_links(root: &Path, file: &Path) -> Vec<String> {
    let md = std::fs::read_to_string(file).unwrap();
    let mut problems = Vec::new();
    let root = root.canonicalize().unwrap();
    for target in link_targets(&md) {
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        if target.starts_with("http://") || target.starts_with("https://") {
            if let Err(e) = public_url(&target) {
                problems.push(format!("{name}: {e}"));
            }
            continue;
        }
        if target.contains("://") || target.starts_with("mailto:") || target.starts_with('/') {
            problems.push(format!("{name}: {target} leaves the repository"));
            continue;
        }
        let path = target.split('#').next().unwrap();
        if path.is_empty() {
            continue; // an anchor on the same page
        }
        let resolved = file.parent().unwrap().join(path);
        match resolved.canonicalize() {
            Ok(p) if p.starts_with(&root) => {}
            Ok(p) => problems.push(format!(
                "{name}: {target} resolves outside the repository ({})",
                p.display()
            )),
            Err(e) => problems.push(format!("{name}: {target} does not resolve: {e}")),
        }
    }
    // Paths outside the repository, linked or not, make the page depend on a machine.
    for outside in ["../shared", "/work/"] {
        if md.contains(outside) {
            problems.push(format!("{}: mentions {outside}", file.display()));
        }
    }
    problems
}

fn markdown_pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

#[test]
fn readme_and_docs_link_only_inside_the_repository_or_to_public_sites() {
    let root = repo();
    let pages = markdown_pages(&root);
    assert!(pages.len() >= 6, "README and the docs: {pages:?}");
    let problems: Vec<String> = pages.iter().flat_map(|p| check_links(&root, p)).collect();
    assert_eq!(problems, Vec::<String>::new());
    // The README links every page of docs/.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for page in &pages[1..] {
        let name = page.file_name().unwrap().to_str().unwrap();
        assert!(
            link_targets(&readme)
                .iter()
                .any(|t| t == &format!("docs/{name}")),
            "README.md does not link docs/{name}"
        );
    }
}

#[test]
fn the_link_check_catches_what_leaves_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/a.md"), "# A\n").unwrap();
    std::fs::write(dir.path().join("outside.md"), "# outside\n").unwrap();
    let page = root.join("README.md");
    std::fs::write(
        &page,
        "[a](docs/a.md) [anchor](#x) [site](https://example.com/x) `[code](../nowhere)`\n\
         [up](../outside.md) [gone](docs/b.md) [local](http://127.0.0.1:8080/) \
         [host](http://localhost/x) [file](file:///etc/passwd) <http://intranet/>\n",
    )
    .unwrap();
    let problems = check_links(&root, &page);
    assert_eq!(problems.len(), 6, "{problems:#?}");
    for bad in [
        "../outside.md",
        "docs/b.md",
        "127.0.0.1",
        "localhost",
        "file:///etc/passwd",
        "intranet",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(bad)),
            "{bad} not caught: {problems:#?}"
        );
    }
}
