//! Input stage: a reference list (text or CSV, from a file or standard input) → the
//! [`Item`]s to export, in input order, each once.
//!
//! References that could never be valid (`../x`, 37 characters, …) are set aside as
//! [`Rejected`] here so they never reach the API; they end up in `failures.csv` as
//! `INVALID_REFERENCE`. This module only reads: it sends nothing and writes nothing.

use std::collections::HashSet;
use std::io::Read as _;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::Kind;

/// One transaction to export.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Item {
    /// The transaction (scan) reference, already checked by [`is_valid_reference`].
    pub reference: String,
    /// The API family it belongs to.
    pub kind: Kind,
}

/// An input line whose reference can never be valid; it becomes an
/// `INVALID_REFERENCE` row of `failures.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The reference as read (trimmed), with control characters escaped and cut to at
    /// most 100 characters (ending in `…` when cut), so it is safe to print.
    pub raw: String,
    /// The kind the line asked for (or the default).
    pub kind: Kind,
    /// 1-based line in the input.
    pub line: usize,
    /// Why it was rejected.
    pub reason: String,
}

/// A parsed reference list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputList {
    /// Valid references, first occurrence of each (reference, kind), in input order.
    pub items: Vec<Item>,
    /// Invalid references, in input order.
    pub rejected: Vec<Rejected>,
    /// How many repeated (reference, kind) lines were dropped.
    pub duplicates: usize,
    /// Hex sha256 of the input bytes exactly as read, for `report.json`.
    pub sha256: String,
}

impl InputList {
    /// Keeps only the references of `shard` (valid and rejected alike, so that N shards together
    /// report every invalid line exactly once).
    pub fn retain_shard(&mut self, shard: &crate::job::Shard) {
        self.items
            .retain(|i| shard_of(&i.reference, shard.count) == shard.index);
        self.rejected
            .retain(|r| shard_of(&r.raw, shard.count) == shard.index);
    }
}

/// Why a reference list cannot be used at all (as opposed to single bad lines, which
/// become [`Rejected`]).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file (or standard input) could not be read.
    #[error("cannot read input {name}: {source}")]
    Read {
        /// The path, or `<stdin>`.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not UTF-8.
    #[error("{name}:{line}: input is not UTF-8 text")]
    NotUtf8 {
        /// The path, or `<stdin>`.
        name: String,
        /// The line holding the first invalid byte.
        line: usize,
    },
    /// The first line looks like a CSV header but has no `reference` column.
    #[error(
        "{name}:{line}: the first line has commas but no `reference` column: a CSV input needs \
         a header with a `reference` column (and optionally `kind`); a text input holds one \
         reference per line"
    )]
    NoReferenceColumn {
        /// The path, or `<stdin>`.
        name: String,
        /// The header's line.
        line: usize,
    },
    /// A CSV row's `kind` is not a known kind.
    #[error(
        "{name}:{line}: unknown kind {kind:?} in the `kind` column: expected netverify, \
         document or authentication"
    )]
    UnknownKind {
        /// The path, or `<stdin>`.
        name: String,
        /// The row's line.
        line: usize,
        /// The value, escaped and cut like [`Rejected::raw`].
        kind: String,
    },
    /// The CSV is malformed (e.g. an unterminated quote).
    #[error("{name}:{line}: malformed CSV: {message}")]
    Csv {
        /// The path, or `<stdin>`.
        name: String,
        /// Where the reader gave up.
        line: usize,
        /// The CSV reader's description.
        message: String,
    },
}

/// The longest reference the API issues (a UUID is 36 characters).
const MAX_REFERENCE_LEN: usize = 36;
/// How much of a rejected line is kept for `failures.csv` and messages.
const MAX_RAW_CHARS: usize = 100;

/// Reads a reference list from `source`: a path, or `-` for standard input. Blocking.
pub fn read_input(source: &str, default_kind: Kind) -> Result<InputList, InputError> {
    if source == "-" {
        let name = "<stdin>";
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|source| InputError::Read {
                name: name.to_string(),
                source,
            })?;
        parse_input(&bytes, name, default_kind)
    } else {
        let bytes = std::fs::read(Path::new(source)).map_err(|e| InputError::Read {
            name: source.to_string(),
            source: e,
        })?;
        parse_input(&bytes, source, default_kind)
    }
}

/// Parses a reference list; `name` (a path or `<stdin>`) names it in errors.
///
/// Text: one reference per line; blank lines and `#` lines skipped; whitespace and CR
/// trimmed; a UTF-8 BOM stripped. CSV: recognised when the first line that is neither
/// blank nor a comment has a `reference` field (case-insensitive); an optional `kind`
/// column overrides `default_kind` per row (empty = default). A `failures.csv` of an
/// earlier run is such a CSV.
pub fn parse_input(bytes: &[u8], name: &str, default_kind: Kind) -> Result<InputList, InputError> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(body).map_err(|e| InputError::NotUtf8 {
        name: name.to_string(),
        line: body[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1,
    })?;
    let mut list = Collector {
        seen: HashSet::new(),
        list: InputList {
            items: Vec::new(),
            rejected: Vec::new(),
            duplicates: 0,
            sha256,
        },
    };

    let first = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .find(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((first_line, header)) = first else {
        return Ok(list.list);
    };
    let is_csv_header = header.split(',').any(|f| {
        f.trim()
            .trim_matches('"')
            .trim()
            .eq_ignore_ascii_case("reference")
    });
    if is_csv_header {
        parse_csv(text, name, first_line, default_kind, &mut list)?;
    } else if header.contains(',') {
        return Err(InputError::NoReferenceColumn {
            name: name.to_string(),
            line: first_line,
        });
    } else {
        for (i, line) in text.lines().enumerate() {
            let line_text = line.trim();
            if line_text.is_empty() || line_text.starts_with('#') {
                continue;
            }
            list.add(line_text, default_kind, i + 1);
        }
    }
    Ok(list.list)
}

fn parse_csv(
    text: &str,
    name: &str,
    header_line: usize,
    default_kind: Kind,
    list: &mut Collector,
) -> Result<(), InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let csv_error = |e: csv::Error| InputError::Csv {
        name: name.to_string(),
        line: e.position().map_or(0, |p| {
            LineCounter::default().line_at(text, p.byte() as usize)
        }),
        message: match e.kind() {
            csv::ErrorKind::Utf8 { .. } => "not UTF-8".to_string(),
            _ => e.to_string(),
        },
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let column = |wanted: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(wanted))
    };
    // The quick look in `parse_input` splits on commas; the CSV reader honours quotes and
    // only skips `#` lines that start in column 1, so it may see no `reference` after all
    // (`"reference` unterminated, `a,"b,reference"`, ` #c` before the header).
    let reference_col = column("reference").ok_or_else(|| InputError::Csv {
        name: name.to_string(),
        line: header_line,
        message: "the header, read as CSV (quotes, comment lines), has no `reference` column"
            .to_string(),
    })?;
    let kind_col = column("kind");

    let mut record = csv::StringRecord::new();
    let mut lines = LineCounter::default();
    while reader.read_record(&mut record).map_err(csv_error)? {
        let line = record
            .position()
            .map_or(0, |p| lines.line_at(text, p.byte() as usize));
        if record.iter().all(str::is_empty) {
            continue;
        }
        let kind = match kind_col.and_then(|c| record.get(c)) {
            None | Some("") => default_kind,
            Some(k) => k.parse::<Kind>().map_err(|_| InputError::UnknownKind {
                name: name.to_string(),
                line,
                kind: printable(k),
            })?,
        };
        list.add(record.get(reference_col).unwrap_or(""), kind, line);
    }
    Ok(())
}

/// Line numbers of CSV records. The csv crate's own line count is wrong after CRLF line
/// ends, and its byte position points at the end of the previous record (or at blank and
/// comment lines it skipped), so the record's line is found from the byte position,
/// counting newlines incrementally to stay linear on inputs of millions of lines.
#[derive(Default)]
struct LineCounter {
    byte: usize,
    line: usize,
}

impl LineCounter {
    fn line_at(&mut self, text: &str, record_byte: usize) -> usize {
        let bytes = text.as_bytes();
        let mut i = record_byte.min(bytes.len());
        loop {
            while i < bytes.len() && (bytes[i] == b'\r' || bytes[i] == b'\n') {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'#' {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            break;
        }
        if i < self.byte {
            // Positions only move forward while reading; restart if asked otherwise.
            *self = LineCounter::default();
        }
        self.line += bytes[self.byte..i].iter().filter(|&&b| b == b'\n').count();
        self.byte = i;
        self.line + 1
    }
}

struct Collector {
    seen: HashSet<(String, Kind)>,
    list: InputList,
}

impl Collector {
    fn add(&mut self, reference: &str, kind: Kind, line: usize) {
        if let Some(reason) = invalid_reason(reference) {
            self.list.rejected.push(Rejected {
                raw: printable(reference),
                kind,
                line,
                reason,
            });
        } else if self.seen.insert((reference.to_string(), kind)) {
            self.list.items.push(Item {
                reference: reference.to_string(),
                kind,
            });
        } else {
            self.list.duplicates += 1;
        }
    }
}

/// True when `s` is 1 to 36 characters of `[A-Za-z0-9-]`, the only shape of reference
/// that is ever put into an API path.
pub fn is_valid_reference(s: &str) -> bool {
    invalid_reason(s).is_none()
}

fn invalid_reason(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("empty reference".into());
    }
    let chars = s.chars().count();
    if chars > MAX_REFERENCE_LEN {
        return Some(format!(
            "{chars} characters: a reference has at most {MAX_REFERENCE_LEN}"
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Some("characters other than A-Z, a-z, 0-9 and -".into());
    }
    None
}

/// Escapes control characters and cuts to [`MAX_RAW_CHARS`] characters, never in the
/// middle of an escape.
fn printable(s: &str) -> String {
    let pieces: Vec<String> = s
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect();
    let total: usize = pieces.iter().map(|p| p.chars().count()).sum();
    if total <= MAX_RAW_CHARS {
        return pieces.concat();
    }
    let mut out = String::new();
    let mut count = 0;
    for piece in pieces {
        let len = piece.chars().count();
        if count + len > MAX_RAW_CHARS - 1 {
            break;
        }
        out.push_str(&piece);
        count += len;
    }
    out.push('…');
    out
}

/// The shard (in `0..count`) a reference belongs to: the first 8 bytes of the
/// sha256 of its UTF-8 bytes, read big-endian, modulo `count`.
///
/// This must never change between versions or platforms: shards of one export may run
/// on different machines and tool versions. `count` 0 is treated as 1.
pub fn shard_of(reference: &str, count: u32) -> u32 {
    let digest = Sha256::digest(reference.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(list: &InputList) -> Vec<(&str, Kind)> {
        list.items
            .iter()
            .map(|i| (i.reference.as_str(), i.kind))
            .collect()
    }

    #[test]
    fn text_with_bom_crlf_comments_and_spaces() {
        let bytes = b"\xEF\xBB\xBF# header comment\r\nabc-1  \r\n\r\n   \t\n  def2\r\n#x\n";
        let list = parse_input(bytes, "in.txt", Kind::Document).unwrap();
        assert_eq!(
            refs(&list),
            [("abc-1", Kind::Document), ("def2", Kind::Document)]
        );
        assert!(list.rejected.is_empty());
        assert_eq!(list.sha256, hex::encode(Sha256::digest(bytes)));
    }

    #[test]
    fn validity_rules() {
        assert!(is_valid_reference("a"));
        assert!(is_valid_reference(&"a".repeat(36)));
        assert!(!is_valid_reference(&"a".repeat(37)));
        assert!(!is_valid_reference(""));
        assert!(!is_valid_reference("../x"));
        assert!(!is_valid_reference("a b"));
        assert!(!is_valid_reference("ä"));
        assert!(!is_valid_reference("a%2F"));
    }

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(printable("a\u{1b}b\tc"), "a\\u{1b}b\\tc");
        let long = printable(&"x".repeat(500));
        assert_eq!(long.chars().count(), MAX_RAW_CHARS);
        assert!(long.ends_with('…'));
        assert_eq!(printable(&"x".repeat(100)), "x".repeat(100));
    }

    #[test]
    fn csv_line_numbers_survive_crlf_blank_and_comment_lines() {
        let text = "reference,kind\r\n\r\n# note\r\nok-1,document\r\n../x,\r\n\n\nbad,nope\r\n";
        let err = parse_input(text.as_bytes(), "f.csv", Kind::Netverify).unwrap_err();
        assert!(
            err.to_string().starts_with("f.csv:8: unknown kind"),
            "{err}"
        );
        let list = parse_input(
            &text.as_bytes()[..text.find("\n\n\n").unwrap()],
            "f.csv",
            Kind::Netverify,
        )
        .unwrap();
        assert_eq!(list.rejected[0].line, 5);
        assert_eq!(list.items[0].kind, Kind::Document);
    }

    #[test]
    fn shard_of_treats_zero_as_one() {
        assert_eq!(shard_of("abc", 0), 0);
        assert_eq!(shard_of("abc", 1), 0);
    }
}
