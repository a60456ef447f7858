//! `report.html`: the page a person reads — the latest run and the dataset as a whole, with
//! requests per second against the limit, 429s and retries over time drawn as inline SVG.
//!
//! One self-contained file: no script, no external font, stylesheet or image, so it opens
//! offline and prints to PDF as it shows (print CSS). Every value from a report, commit or
//! failure row is escaped. It names references only in the open follow-ups (the first
//! [`FIRST_REFERENCES`] per error; the full list is `failures.csv`), never personal data.
//!
//! Pure: it renders from the run's report (the JSON object of `report.json`), a summary of
//! each commit and the open follow-ups; the caller reads them and writes the file.
//! Numbers a test checks carry `id` attributes (`run-exported`, `dataset-commits`, …).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::dataset::commit::Commit;
use crate::output::failures::FailureRow;

/// References listed per error among the open follow-ups; the rest are in `failures.csv`.
pub const FIRST_REFERENCES: usize = 20;

/// What the page says of the open follow-ups (the rows of `failures.csv`): how many there are
/// per error and the first references of each, gathered as the rows are written.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FollowUps {
    by_error: BTreeMap<String, (u64, Vec<String>)>,
}

impl FollowUps {
    /// Counts one open follow-up.
    pub fn add(&mut self, row: &FailureRow) {
        let error = row.error.as_str();
        if !self.by_error.contains_key(error) {
            self.by_error.insert(error.to_string(), (0, Vec::new()));
        }
        if let Some((count, first)) = self.by_error.get_mut(error) {
            *count += 1;
            if first.len() < FIRST_REFERENCES {
                first.push(row.reference.clone());
            }
        }
    }

    /// How many were counted.
    pub fn total(&self) -> u64 {
        self.by_error.values().map(|(count, _)| count).sum()
    }
}

/// Commit rows shown, the latest ones; the totals cover all.
pub const MAX_COMMIT_ROWS: usize = 500;

/// What the page says about one commit: a few numbers of its report, not the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitSummary {
    /// The run id (`commits/{run}.json`).
    pub run: String,
    /// Start and end of the run (RFC 3339).
    pub started_at: String,
    /// End of the run.
    pub finished_at: String,
    /// `K/N` when sharded.
    pub shard: Option<String>,
    /// Exported by the run.
    pub exported: u64,
    /// Not exported by the run.
    pub failed: u64,
    /// Requests sent.
    pub requests: u64,
    /// 429 answers.
    pub too_many_requests: u64,
    /// Body bytes received.
    pub bytes_received: u64,
    /// Archives the commit lists.
    pub archives: u64,
    /// Root hash over those archives.
    pub root_hash: String,
    /// Stopped early.
    pub interrupted: bool,
}

impl CommitSummary {
    /// The summary of a commit record.
    pub fn of(c: &Commit) -> Self {
        let r = &c.report;
        CommitSummary {
            run: c.run.clone(),
            started_at: str_at(r, &["started_at"]).to_string(),
            finished_at: str_at(r, &["finished_at"]).to_string(),
            shard: r.get("shard").and_then(Value::as_str).map(str::to_string),
            exported: num(r, &["outcomes", "exported"]),
            failed: num(r, &["outcomes", "failed"]),
            requests: num(r, &["requests", "total"]),
            too_many_requests: num(r, &["requests", "too_many_requests"]),
            bytes_received: num(r, &["requests", "bytes_received"]),
            archives: c.archives.count,
            root_hash: c.archives.root_hash.clone(),
            interrupted: r.get("interrupted").and_then(Value::as_bool) == Some(true),
        }
    }
}

/// The value at `path` in `v`, if any.
fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// The unsigned number at `path`, 0 when absent (a report of an older version).
fn num(v: &Value, path: &[&str]) -> u64 {
    at(v, path).and_then(Value::as_u64).unwrap_or(0)
}

/// The text at `path`, empty when absent.
fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

/// `s` with `& < > " '` escaped, for text and attribute values alike.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes for a person (binary units), the exact count beside it in the page.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds for a person: `42 s`, `12 min 5 s`, `3 h 20 min`, `5 d 2 h`.
fn human_seconds(s: u64) -> String {
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The run's duration in seconds, from its report's timestamps.
fn duration_seconds(report: &Value) -> Option<f64> {
    let t = |k: &str| chrono::DateTime::parse_from_rfc3339(str_at(report, &[k])).ok();
    let (a, b) = (t("started_at")?, t("finished_at")?);
    Some(((b - a).num_milliseconds() as f64 / 1000.0).max(0.0))
}

const STYLE: &str = "
:root{color-scheme:light}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1f24;margin:2em auto;max-width:60em;padding:0 1em;background:#fff}
h1{font-size:1.6em;margin:0 0 .2em}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
h3{font-size:1.05em;margin:1.2em 0 .4em}
.sub{color:#57606a;margin:0 0 1em}
.status{display:inline-block;padding:.15em .6em;border-radius:.3em;font-weight:600}
.ok{background:#dafbe1;color:#116329}.warn{background:#fff8c5;color:#7d4e00}.bad{background:#ffebe9;color:#a40e26}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(9.5em,1fr));gap:.6em;margin:1em 0}
.card{border:1px solid #d0d7de;border-radius:.4em;padding:.5em .7em}
.card .v{font-size:1.35em;font-weight:600;font-variant-numeric:tabular-nums}.card .k{color:#57606a;font-size:.85em}
table{border-collapse:collapse;margin:.4em 0 1em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right}
code,.hash{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em;word-break:break-all}
svg{display:block;max-width:100%;height:auto;margin:.3em 0 .2em}
.legend{color:#57606a;font-size:.85em;margin:0 0 1em}
.sw{display:inline-block;width:1.4em;height:.25em;vertical-align:middle;margin:0 .3em 0 .8em}
.note{color:#57606a;font-size:.9em}
@media print{body{margin:0;max-width:none;font-size:11px}h2{break-after:avoid}
table,svg,.cards,section.chart{break-inside:avoid}a{color:inherit;text-decoration:none}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
@page{size:A4;margin:14mm}
";

/// The whole page. `report` is the run's report (the object of `report.json`); `commits` are
/// every commit of the dataset in run order; `follow_ups` what the rows of `failures.csv` (the
/// dataset's open follow-ups) come to.
pub fn render(report: &Value, commits: &[CommitSummary], follow_ups: &FollowUps) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let run = str_at(report, &["run"]);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    let _ = writeln!(
        h,
        "<title>jumio-export report: {}</title><style>{STYLE}</style></head><body>",
        escape(run)
    );
    run_section(&mut h, report);
    dataset_section(&mut h, commits, follow_ups);
    let _ = write!(
        h,
        "<p class=\"note\">Written by {} {} at the end of run <code>{}</code>. \
         Machine-readable: <code>report.json</code> (this run), <code>commits/*.json</code> \
         (every run), <code>failures.csv</code> (open follow-ups).</p>\n</body></html>\n",
        escape(str_at(report, &["tool"])),
        escape(str_at(report, &["tool_version"])),
        escape(run)
    );
    h
}

/// A card: a big number with its label; `id` lets a test find it.
fn card(h: &mut String, id: &str, value: &str, label: &str) {
    let _ = write!(
        h,
        "<div class=\"card\"><div class=\"v\" id=\"{id}\">{}</div><div class=\"k\">{}</div></div>",
        escape(value),
        escape(label)
    );
}

fn run_section(h: &mut String, r: &Value) {
    run_header(h, r);
    let secs = duration_seconds(r);
    run_cards(h, r, secs);
    outcome_tables(h, r);
    charts(h, r, secs);
    latency_table(h, r);
    endpoint_table(h, r);
    identity_table(h, r);
}

/// The title, the run id and its time span, and the status badge.
fn run_header(h: &mut String, r: &Value) {
    let o = |k: &str| num(r, &["outcomes", k]);
    let interrupted = r.get("interrupted").and_then(Value::as_bool) == Some(true);
    let (class, status) = if interrupted {
        (
            "bad",
            "interrupted: run the same command again to resume".to_string(),
        )
    } else if o("failed") + o("not_started") > 0 {
        (
            "warn",
            format!(
                "finished: {} not exported (in failures.csv)",
                grouped(o("failed") + o("not_started"))
            ),
        )
    } else {
        ("ok", "finished: every reference exported".to_string())
    };
    let _ = writeln!(
        h,
        "<header><h1>Export report</h1><p class=\"sub\">Run <code id=\"run-id\">{}</code>{} · \
         {} → {}</p><p><span class=\"status {class}\" id=\"run-status\">{}</span></p></header>",
        escape(str_at(r, &["run"])),
        r.get("shard")
            .and_then(Value::as_str)
            .map(|s| format!(" · shard {}", escape(s)))
            .unwrap_or_default(),
        escape(str_at(r, &["started_at"])),
        escape(str_at(r, &["finished_at"])),
        escape(&status)
    );
}

/// The number cards of the run.
fn run_cards(h: &mut String, r: &Value, secs: Option<f64>) {
    let o = |k: &str| num(r, &["outcomes", k]);
    let q = |k: &str| num(r, &["requests", k]);
    h.push_str("<h2>This run</h2><div class=\"cards\">");
    card(h, "run-exported", &grouped(o("exported")), "exported");
    card(
        h,
        "run-already-exported",
        &grouped(o("already_exported")),
        "already exported",
    );
    card(h, "run-failed", &grouped(o("failed")), "not exported");
    card(h, "run-requests", &grouped(q("total")), "requests");
    card(
        h,
        "run-429",
        &grouped(q("too_many_requests")),
        "answered 429",
    );
    card(h, "run-retries", &grouped(q("retries")), "retries");
    card(
        h,
        "run-bytes-received",
        &human_bytes(q("bytes_received")),
        "received",
    );
    card(
        h,
        "run-duration",
        &secs.map_or("–".into(), |s| human_seconds(s.round() as u64)),
        "duration",
    );
    h.push_str("</div>\n");
}

/// Outcomes, and failures by reason.
fn outcome_tables(h: &mut String, r: &Value) {
    let o = |k: &str| num(r, &["outcomes", k]);
    h.push_str("<h3>Outcomes</h3><table><tr><th>outcome</th><th>references</th></tr>");
    for (k, label) in [
        ("references", "in the input (after duplicates and sharding)"),
        ("exported", "exported by this run"),
        ("already_exported", "already exported by an earlier run"),
        ("failed", "not exported (rows of failures.csv)"),
        ("not_started", "not started (interrupted)"),
        ("other_run", "left to another run that owns the archive"),
        ("duplicates", "duplicate input lines dropped"),
    ] {
        let _ = write!(
            h,
            "<tr><td>{label}</td><td class=\"n\" id=\"outcome-{k}\">{}</td></tr>",
            grouped(o(k))
        );
    }
    h.push_str("</table>\n");
    if let Some(by) = at(r, &["outcomes", "failures_by_error"]).and_then(Value::as_object)
        && !by.is_empty()
    {
        h.push_str("<h3>Failures of this run by reason</h3><table><tr><th>error</th><th>references</th></tr>");
        for (code, n) in by {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td class=\"n\" id=\"failures-{}\">{}</td></tr>",
                escape(code),
                escape(code),
                grouped(n.as_u64().unwrap_or(0))
            );
        }
        h.push_str("</table><p class=\"note\">The references are listed below under “Open follow-ups”, and all of them in <code>failures.csv</code>.</p>\n");
    }
}

/// The identity of the run: tool, commit, hashes, bytes.
fn identity_table(h: &mut String, r: &Value) {
    h.push_str("<h3>Run identity</h3><table>");
    let rows: [(&str, &str, String); 9] = [
        (
            "tool",
            "tool",
            format!("{} {}", str_at(r, &["tool"]), str_at(r, &["tool_version"])),
        ),
        (
            "run",
            "run id (commit)",
            format!("commits/{}.json", str_at(r, &["run"])),
        ),
        (
            "job-sha256",
            "job file sha256",
            str_at(r, &["job_sha256"]).into(),
        ),
        (
            "input-sha256",
            "input list sha256",
            str_at(r, &["input_sha256"]).into(),
        ),
        (
            "archives",
            "archives listed by its commit",
            grouped(num(r, &["archives"])),
        ),
        ("root-hash", "root hash", str_at(r, &["root_hash"]).into()),
        (
            "root-hash-method",
            "root hash method",
            str_at(r, &["root_hash_method"]).into(),
        ),
        (
            "bytes-written",
            "bytes written (archives and parts)",
            format!(
                "{} ({} bytes)",
                human_bytes(num(r, &["bytes_written"])),
                grouped(num(r, &["bytes_written"]))
            ),
        ),
        (
            "throttled",
            "seconds requests waited after 429s (summed)",
            format!(
                "{:.1}",
                at(r, &["requests", "throttled_seconds"])
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0)
            ),
        ),
    ];
    for (id, label, value) in rows {
        let _ = write!(
            h,
            "<tr><th>{label}</th><td class=\"hash\" id=\"run-{id}\">{}</td></tr>",
            escape(&value)
        );
    }
    h.push_str("</table>\n");
}

/// Requests per second against the limit; 429s, retries and failed requests per bucket.
fn charts(h: &mut String, r: &Value, secs: Option<f64>) {
    let series = |k: &str| -> Vec<u64> {
        at(r, &["requests", "timeline", k])
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
            .unwrap_or_default()
    };
    let width = num(r, &["requests", "timeline", "bucket_seconds"]).max(1);
    let requests = series("requests");
    let limit = at(r, &["requests", "limit_per_second"]).and_then(Value::as_f64);
    h.push_str("<h2>Requests over time</h2>\n");
    if requests.is_empty() {
        h.push_str("<p class=\"note\">No request was sent.</p>\n");
        return;
    }
    let per_s: Vec<f64> = requests.iter().map(|&n| n as f64 / width as f64).collect();
    let peak = per_s.iter().cloned().fold(0.0, f64::max);
    let mean = secs
        .filter(|s| *s > 0.0)
        .map(|s| num(r, &["requests", "total"]) as f64 / s);
    let _ = write!(
        h,
        "<p>Requests per second, each point the average over {} s{}; peak <span id=\"rate-peak\">{:.1}</span>/s{}.</p>",
        width,
        limit
            .map(|l| format!(
                ", against the configured limit of <span id=\"rate-limit\">{l:.1}</span>/s (dashed)"
            ))
            .unwrap_or_default(),
        peak,
        mean.map(|m| format!(", mean over the run {m:.1}/s"))
            .unwrap_or_default()
    );
    let limit_line = limit.map(|l| (l, "#cf222e"));
    h.push_str("<section class=\"chart\">");
    h.push_str(&line_chart(
        "Requests per second over time",
        width,
        &[(&per_s, "#0969da")],
        limit_line,
    ));
    h.push_str("<p class=\"legend\"><span class=\"sw\" style=\"background:#0969da\"></span>requests/s<span class=\"sw\" style=\"background:#cf222e\"></span>configured limit</p></section>\n");

    let as_f = |v: Vec<u64>| -> Vec<f64> { v.into_iter().map(|n| n as f64).collect() };
    let too_many = as_f(series("too_many_requests"));
    let retries = as_f(series("retries"));
    let errors: Vec<f64> = series("network_errors")
        .iter()
        .zip(series("server_errors").iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| (a + b) as f64)
        .collect();
    let _ = write!(
        h,
        "<p>429 answers, retries and requests without an answer or answered 5xx, per {} s: \
         <span id=\"chart-429-total\">{}</span> 429s, <span id=\"chart-retries-total\">{}</span> retries, \
         <span id=\"chart-errors-total\">{}</span> network or server errors.</p>",
        width,
        grouped(too_many.iter().sum::<f64>() as u64),
        grouped(retries.iter().sum::<f64>() as u64),
        grouped(errors.iter().sum::<f64>() as u64)
    );
    h.push_str("<section class=\"chart\">");
    h.push_str(&line_chart(
        "429s, retries and errors over time",
        width,
        &[
            (&too_many, "#bf8700"),
            (&retries, "#8250df"),
            (&errors, "#cf222e"),
        ],
        None,
    ));
    h.push_str("<p class=\"legend\"><span class=\"sw\" style=\"background:#bf8700\"></span>429s<span class=\"sw\" style=\"background:#8250df\"></span>retries<span class=\"sw\" style=\"background:#cf222e\"></span>network errors and 5xx</p></section>\n");
}

/// An SVG line chart of `series` (one value per bucket of `bucket_s` seconds) with an optional
/// horizontal reference line. Coordinates only; no text from the data but numbers.
fn line_chart(
    title: &str,
    bucket_s: u64,
    series: &[(&Vec<f64>, &str)],
    reference: Option<(f64, &str)>,
) -> String {
    let (w, h, l, r) = (Plot::W, Plot::H, Plot::L, Plot::R);
    let n = series
        .iter()
        .map(|(s, _)| s.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let top = series
        .iter()
        .flat_map(|(s, _)| s.iter().cloned())
        .chain(reference.map(|(v, _)| v))
        .fold(0.0, f64::max);
    // At least 4, so small counts get whole-number ticks.
    let plot = Plot {
        n,
        y_max: nice_ceiling(top.max(4.0)),
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
        t = escape(title)
    );
    plot.axes(&mut s, bucket_s);
    if let Some((v, colour)) = reference {
        let yy = plot.y(v);
        let _ = write!(
            s,
            "<line x1=\"{l}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"{colour}\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>",
            w - r
        );
    }
    for (values, colour) in series {
        let mut points = String::new();
        for (i, v) in values.iter().enumerate() {
            let _ = write!(points, "{:.1},{:.1} ", plot.x(i as f64), plot.y(*v));
        }
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" stroke-linejoin=\"round\" points=\"{}\"/>",
            points.trim_end()
        );
    }
    s.push_str("</svg>");
    s
}

/// The frame of a [`line_chart`]: `n` buckets across, 0 to `y_max` up.
struct Plot {
    n: usize,
    y_max: f64,
}

impl Plot {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    /// Left margin, for the y labels.
    const L: f64 = 48.0;
    /// Bottom margin, for the x labels.
    const B: f64 = 28.0;
    const T: f64 = 10.0;
    const R: f64 = 12.0;

    fn x(&self, i: f64) -> f64 {
        let along = if self.n > 1 {
            i / (self.n - 1) as f64
        } else {
            0.5
        };
        Self::L + (Self::W - Self::L - Self::R) * along
    }

    fn y(&self, v: f64) -> f64 {
        Self::T + (Self::H - Self::T - Self::B) * (1.0 - v / self.y_max)
    }

    /// The grid with its y labels (0, ¼ … the top), and the x labels (start, middle, end, as
    /// time since the start of buckets of `bucket_s` seconds).
    fn axes(&self, s: &mut String, bucket_s: u64) {
        let (w, h, l, r) = (Self::W, Self::H, Self::L, Self::R);
        for k in 0..=4 {
            let v = self.y_max * k as f64 / 4.0;
            let yy = self.y(v);
            let _ = write!(
                s,
                "<line x1=\"{l}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#d0d7de\" stroke-width=\"1\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#57606a\">{}</text>",
                w - r,
                l - 6.0,
                yy + 4.0,
                short_number(v)
            );
        }
        let span = self.n as u64 * bucket_s;
        for k in 0..=2 {
            let i = (self.n - 1) as f64 * k as f64 / 2.0;
            let anchor = ["start", "middle", "end"][k];
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"{anchor}\" fill=\"#57606a\">{}</text>",
                self.x(i),
                h - 8.0,
                if k == 0 {
                    "start".to_string()
                } else {
                    format!("+{}", human_seconds(span * k as u64 / 2))
                }
            );
        }
    }
}

/// The smallest 1, 2, 4 or 8 × 10^k at or above `v` (a quarter of it, the grid step, stays short).
fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 4.0, 8.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v - 1e-9)
        .unwrap_or(10.0 * mag)
}

fn short_number(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn latency_table(h: &mut String, r: &Value) {
    let Some(lat) = at(r, &["requests", "latency_ms"]).and_then(Value::as_object) else {
        return;
    };
    if lat.is_empty() {
        return;
    }
    h.push_str("<h2>Latency per endpoint</h2><p>From sending a request to its response headers (or its failure), in milliseconds; percentiles from a fixed histogram, within 12.5 %.</p>");
    h.push_str("<table><tr><th>endpoint</th><th>requests</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>");
    for (endpoint, s) in lat {
        let e = escape(endpoint);
        let f = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let _ = write!(
            h,
            "<tr><td><code>{e}</code></td><td class=\"n\" id=\"latency-{e}-count\">{}</td>\
             <td class=\"n\" id=\"latency-{e}-p50\">{:.1}</td><td class=\"n\" id=\"latency-{e}-p90\">{:.1}</td>\
             <td class=\"n\" id=\"latency-{e}-p99\">{:.1}</td><td class=\"n\" id=\"latency-{e}-max\">{:.1}</td></tr>",
            grouped(s.get("count").and_then(Value::as_u64).unwrap_or(0)),
            f("p50_ms"),
            f("p90_ms"),
            f("p99_ms"),
            f("max_ms")
        );
    }
    h.push_str("</table>\n");
}

fn endpoint_table(h: &mut String, r: &Value) {
    let Some(by) = at(r, &["requests", "by_endpoint"]).and_then(Value::as_object) else {
        return;
    };
    if by.is_empty() {
        return;
    }
    h.push_str("<h3>Requests per endpoint and HTTP status</h3><p class=\"note\">Status 0: no response (connection refused or reset, timeout).</p><table><tr><th>endpoint</th><th>status: requests</th></tr>");
    for (endpoint, statuses) in by {
        let cells: Vec<String> = statuses
            .as_object()
            .into_iter()
            .flatten()
            .map(|(status, n)| format!("{}: {}", escape(status), grouped(n.as_u64().unwrap_or(0))))
            .collect();
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td></tr>",
            escape(endpoint),
            cells.join(" · ")
        );
    }
    h.push_str("</table>\n");
}

fn dataset_section(h: &mut String, commits: &[CommitSummary], follow_ups: &FollowUps) {
    let sum = |f: fn(&CommitSummary) -> u64| commits.iter().map(f).sum::<u64>();
    h.push_str("<h2>The dataset</h2><p>Every commit of this output location (<code>commits/*.json</code>); what no commit lists is not part of the dataset.</p><div class=\"cards\">");
    for (id, value, label) in [
        ("dataset-commits", grouped(commits.len() as u64), "commits"),
        (
            "dataset-archives",
            grouped(sum(|c| c.archives)),
            "archives listed",
        ),
        (
            "dataset-exported",
            grouped(sum(|c| c.exported)),
            "exported by runs",
        ),
        (
            "dataset-open",
            grouped(follow_ups.total()),
            "open follow-ups",
        ),
        ("dataset-requests", grouped(sum(|c| c.requests)), "requests"),
        (
            "dataset-429",
            grouped(sum(|c| c.too_many_requests)),
            "answered 429",
        ),
        (
            "dataset-bytes-received",
            human_bytes(sum(|c| c.bytes_received)),
            "received",
        ),
    ] {
        card(h, id, &value, label);
    }
    h.push_str("</div>\n");
    commits_table(h, commits);
    follow_ups_table(h, follow_ups);
}

/// The latest [`MAX_COMMIT_ROWS`] commits, one row each.
fn commits_table(h: &mut String, commits: &[CommitSummary]) {
    let shown = &commits[commits.len().saturating_sub(MAX_COMMIT_ROWS)..];
    if shown.len() < commits.len() {
        let _ = write!(
            h,
            "<p class=\"note\">The latest {} of {} commits; the totals above cover all.</p>",
            shown.len(),
            commits.len()
        );
    }
    h.push_str("<h3>Commits</h3><table id=\"commits\"><tr><th>run (commit id)</th><th>started → finished</th><th>exported</th><th>not exported</th><th>requests</th><th>archives</th><th>root hash</th></tr>");
    for c in shown {
        let run = escape(&c.run);
        let _ = write!(
            h,
            "<tr data-run=\"{run}\"><td><code>{run}</code>{}{}</td><td>{} → {}</td>\
             <td class=\"n\" data-k=\"exported\">{}</td><td class=\"n\" data-k=\"failed\">{}</td>\
             <td class=\"n\" data-k=\"requests\">{}</td><td class=\"n\" data-k=\"archives\">{}</td>\
             <td class=\"hash\" data-k=\"root_hash\">{}</td></tr>",
            c.shard
                .as_deref()
                .map(|s| format!(" (shard {})", escape(s)))
                .unwrap_or_default(),
            if c.interrupted { " (interrupted)" } else { "" },
            escape(&c.started_at),
            escape(&c.finished_at),
            grouped(c.exported),
            grouped(c.failed),
            grouped(c.requests),
            grouped(c.archives),
            escape(&c.root_hash)
        );
    }
    h.push_str("</table>\n");
}

/// The open follow-ups per error, naming the first references of each.
fn follow_ups_table(h: &mut String, follow_ups: &FollowUps) {
    h.push_str("<h3>Open follow-ups</h3>");
    if follow_ups.total() == 0 {
        h.push_str(
            "<p id=\"follow-ups-none\">None: every reference some run tried was exported.</p>\n",
        );
        return;
    }
    let _ = write!(
        h,
        "<p>References whose latest outcome is a failure and that no commit exported, by error; \
         the first {FIRST_REFERENCES} of each are named here, all of them in \
         <a href=\"failures.csv\"><code>failures.csv</code></a> beside this page (valid input for \
         the next run; a <code>PENDING</code> one is polled again after its \
         <code>next_attempt_after</code>).</p>"
    );
    h.push_str("<table><tr><th>error</th><th>references</th><th>first references</th></tr>");
    for (error, (count, first)) in &follow_ups.by_error {
        let e = escape(error);
        let first: Vec<String> = first
            .iter()
            .map(|reference| format!("<code>{}</code>", escape(reference)))
            .collect();
        let more = count.saturating_sub(first.len() as u64);
        let _ = write!(
            h,
            "<tr><td><code>{e}</code></td><td class=\"n\" id=\"open-{e}\">{}</td><td>{}{}</td></tr>",
            grouped(*count),
            first.join(" "),
            if more > 0 {
                format!(" … and {} more in failures.csv", grouped(more))
            } else {
                String::new()
            }
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Kind;
    use crate::outcome::{ErrorCode, Stage};

    fn follow_ups(rows: impl IntoIterator<Item = (String, ErrorCode)>) -> FollowUps {
        let mut follow_ups = FollowUps::default();
        for (reference, error) in rows {
            follow_ups.add(&FailureRow {
                reference,
                kind: Kind::Netverify,
                stage: Stage::Status,
                http_status: None,
                error,
                attempts: 1,
                next_attempt_after: None,
            });
        }
        follow_ups
    }

    #[test]
    fn every_value_is_escaped_and_nothing_is_fetched() {
        let report = serde_json::json!({
            "tool": "jumio-export", "tool_version": "<v>", "run": "r\"1<script>",
            "started_at": "2026-12-06T07:00:00.000Z", "finished_at": "2026-12-06T07:00:42.000Z",
            "outcomes": {"exported": 3, "failures_by_error": {"<b>NOT_FOUND": 1}},
            "requests": {"total": 12, "by_endpoint": {"st<atus": {"200": 12}},
                          "latency_ms": {"a&b": {"count": 1, "p50_ms": 1.0}},
                          "timeline": {"bucket_seconds": 1, "requests": [5, 7]},
                          "limit_per_second": 10.0},
            "root_hash": "<hash>",
        });
        let commits = [CommitSummary {
            run: "c<1>".into(),
            root_hash: "'h'".into(),
            ..Default::default()
        }];
        let open = follow_ups([("ref-1".to_string(), ErrorCode::Pending)]);
        let html = render(&report, &commits, &open);
        for raw in [
            "<script", "<b>", "<v>", "<hash>", "st<atus", "c<1>", "a&b", "'h'",
        ] {
            assert!(!html.contains(raw), "{raw} unescaped");
        }
        assert!(html.contains("r&quot;1&lt;script&gt;"));
        for fetch in [
            "<script", "src=", "@import", "url(", "<link", "http://", "https://",
        ] {
            // The SVG namespace is the one URL, an identifier never fetched.
            let n = html.matches(fetch).count();
            let allowed = usize::from(fetch == "http://") * html.matches("<svg").count();
            assert_eq!(n, allowed, "{fetch} in the page");
        }
        assert!(html.contains("id=\"run-exported\">3<"));
        assert!(html.contains("id=\"rate-limit\">10.0<"));
        assert!(html.contains("id=\"open-PENDING\">1<"));
    }

    #[test]
    fn follow_ups_name_the_first_references_and_point_at_failures_csv() {
        let rows = (0..FIRST_REFERENCES + 5).map(|i| (format!("ref-{i:03}"), ErrorCode::NotFound));
        let html = render(&serde_json::json!({}), &[], &follow_ups(rows));
        assert!(html.contains(&format!("ref-{:03}", FIRST_REFERENCES - 1)));
        assert!(!html.contains(&format!("ref-{:03}", FIRST_REFERENCES)));
        assert!(html.contains("and 5 more in failures.csv"));
        assert!(html.contains(&format!("id=\"open-NOT_FOUND\">{}<", FIRST_REFERENCES + 5)));
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(999), "999");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(human_seconds(3725), "1 h 2 min");
        assert_eq!(human_seconds(5 * 86_400 + 7200), "5 d 2 h");
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(15.0), 20.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(0.3), 0.4);
        assert_eq!(nice_ceiling(4.0), 4.0);
    }
}
