//! Input stage: a reference list (text or CSV, from a file or standard input) → the
//! [`Item`]s to export, in input order, each once.
//!
//! References that could never be valid (`../x`, 37 characters, …) are set aside as
//! [`Rejected`] here so they never reach the API; they end up in `failures.csv` as
//! `INVALID_REFERENCE`. This module only reads: it sends nothing and writes nothing but
//! unnamed temporary files.
//!
//! The references are kept on disk, not in memory: a list of millions costs a few megabytes of
//! temporary file ([`Items`]), and duplicates are found by an external sort of the references
//! ([`crate::spill::ExternalSort`]) rather than a set holding every one of them.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;

use crate::spill::{self, ExternalSort, PositionedReader, RecordFile, RecordFileWriter, Sorted};

use sha2::{Digest, Sha256};

use crate::Kind;

mod stream;

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
#[derive(Debug)]
pub struct InputList {
    /// Valid references, first occurrence of each (reference, kind), in input order.
    pub items: Items,
    /// Invalid references, in input order.
    pub rejected: Vec<Rejected>,
    /// How many repeated (reference, kind) lines were dropped.
    pub duplicates: usize,
    /// Hex sha256 of the input bytes exactly as read, for `report.json`.
    pub sha256: String,
    /// The unique keys of the items ([`catalogue_key`] and the item's record number in the
    /// spool), sorted: the de-duplication's sort, kept so that [`InputList::exclude`] merges
    /// instead of sorting again.
    keys: RecordFile,
}

impl InputList {
    /// Keeps only the references of `shard` (valid and rejected alike, so that N shards together
    /// report every invalid line exactly once).
    pub fn retain_shard(&mut self, shard: &crate::job::Shard) -> std::io::Result<()> {
        let mut skip = self.items.skip.as_ref().clone();
        let mut skipped = 0;
        for numbered in self.items.numbered() {
            let (record, item) = numbered?;
            if shard_of(&item.reference, shard.count) != shard.index {
                skipped += u64::from(set_bit(&mut skip, record));
            }
        }
        self.items.skip = Arc::new(skip);
        self.items.len -= skipped;
        self.rejected
            .retain(|r| shard_of(&r.raw, shard.count) == shard.index);
        Ok(())
    }
}

/// The key of a (reference, kind) in the sorted lists [`InputList::exclude`] merges:
/// `reference \0 kind`.
pub fn catalogue_key(reference: &str, kind: Kind) -> Vec<u8> {
    let mut key = Vec::with_capacity(reference.len() + 2);
    key.extend_from_slice(reference.as_bytes());
    key.push(0);
    key.push(kind_index(kind));
    key
}

impl InputList {
    /// Removes every item whose [`catalogue_key`] is in `exported` (sorted ascending, as an
    /// [`ExternalSort`] gives them) and returns how many were removed. Flat memory and no sort of
    /// its own: the input's keys, sorted when it was read, are merged with `exported`, and one
    /// bit per item marks the removed.
    pub fn exclude(&mut self, mut exported: Sorted) -> std::io::Result<u64> {
        let mut skip = self.items.skip.as_ref().clone();
        let mut removed = 0u64;
        let (mut key, mut next) = (Vec::new(), Vec::new());
        let mut more = exported.next_into(&mut next)?;
        let mut keys = self.keys.reader();
        while more && keys.next_into(&mut key)? {
            let (prefix, record) = key.split_at(key.len() - 8);
            while more && next.as_slice() < prefix {
                more = exported.next_into(&mut next)?;
            }
            if more && next.as_slice() == prefix {
                let record = u64::from_be_bytes(record.try_into().expect("8 bytes"));
                removed += u64::from(set_bit(&mut skip, record));
            }
        }
        self.items.skip = Arc::new(skip);
        self.items.len -= removed;
        Ok(removed)
    }
}

/// Sets bit `n`; true when it was clear.
fn set_bit(bits: &mut [u64], n: u64) -> bool {
    let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
    let was_clear = bits[word] & bit == 0;
    bits[word] |= bit;
    was_clear
}

fn bit_is_set(bits: &[u64], n: u64) -> bool {
    bits.get((n / 64) as usize)
        .is_some_and(|w| w & (1u64 << (n % 64)) != 0)
}

/// The valid references of an [`InputList`], in input order, in an unnamed temporary file.
pub struct Items {
    file: Arc<File>,
    /// Records in the file, skipped ones included.
    records: u64,
    /// Items handed out: the records not skipped.
    len: u64,
    /// One bit per record, set for a record that is not an item (a repeat of an earlier line,
    /// another shard's, exported by a commit): marked, not rewritten.
    skip: Arc<Vec<u64>>,
}

impl std::fmt::Debug for Items {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Items({} references)", self.len)
    }
}

impl Items {
    /// How many references.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The references in input order, read from the file; any number of readers at once.
    pub fn iter(&self) -> ItemIter {
        ItemIter {
            reader: BufReader::with_capacity(
                16 * 1024,
                PositionedReader::shared(self.file.clone()),
            ),
            skip: self.skip.clone(),
            record: 0,
            records: self.records,
            left: self.len,
            total: self.len,
            read: 0,
        }
    }

    /// [`Items::iter`] with each item's record number.
    fn numbered(&self) -> impl Iterator<Item = std::io::Result<(u64, Item)>> + use<> {
        let mut iter = self.iter();
        std::iter::from_fn(move || {
            let item = iter.next()?;
            Some(item.map(|item| (iter.record - 1, item)))
        })
    }

    /// Every reference in memory: for small lists and tests.
    pub fn read_all(&self) -> std::io::Result<Vec<Item>> {
        self.iter().collect()
    }
}

/// Reads [`Items`] back, one [`Item`] at a time.
pub struct ItemIter {
    reader: BufReader<PositionedReader>,
    skip: Arc<Vec<u64>>,
    /// The next record's number.
    record: u64,
    records: u64,
    left: u64,
    total: u64,
    read: u64,
}

impl ItemIter {
    /// References not handed out: those after a read error (the iterator ends at one), so a
    /// caller can count them instead of losing them.
    pub fn unread(&self) -> u64 {
        self.total - self.read
    }
}

impl Iterator for ItemIter {
    type Item = std::io::Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut head = [0u8; 2];
        let mut read = || -> std::io::Result<Item> {
            loop {
                if self.record == self.records {
                    return Err(std::io::Error::other(
                        "input spool: fewer records than items",
                    ));
                }
                self.reader.read_exact(&mut head)?;
                self.record += 1;
                if bit_is_set(&self.skip, self.record - 1) {
                    // Skipped without an allocation: a rerun skips most of its input.
                    let mut skipped = [0u8; 255];
                    self.reader
                        .read_exact(&mut skipped[..usize::from(head[1])])?;
                    continue;
                }
                let mut reference = vec![0u8; usize::from(head[1])];
                self.reader.read_exact(&mut reference)?;
                let kind = *Kind::ALL
                    .get(usize::from(head[0]))
                    .ok_or_else(|| std::io::Error::other("input spool: bad kind"))?;
                let reference = String::from_utf8(reference).map_err(std::io::Error::other)?;
                return Ok(Item { reference, kind });
            }
        };
        let item = read();
        match item {
            Ok(_) => self.read += 1,
            Err(_) => self.left = 0,
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.left).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// Writes [`Items`]: a kind byte, a length byte and the reference's bytes per item.
struct SpoolWriter {
    w: BufWriter<File>,
    len: u64,
}

impl SpoolWriter {
    fn new(dir: &Path) -> std::io::Result<Self> {
        Ok(SpoolWriter {
            w: BufWriter::with_capacity(64 * 1024, spill::unnamed_file(dir)?),
            len: 0,
        })
    }

    fn push(&mut self, reference: &str, kind: Kind) -> std::io::Result<()> {
        // Valid references are at most 36 ASCII bytes.
        let len = u8::try_from(reference.len()).map_err(std::io::Error::other)?;
        self.w.write_all(&[kind_index(kind), len])?;
        self.w.write_all(reference.as_bytes())?;
        self.len += 1;
        Ok(())
    }

    fn finish(self) -> std::io::Result<Items> {
        let file = self
            .w
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        Ok(Items {
            file: Arc::new(file),
            records: self.len,
            len: self.len,
            skip: Arc::new(vec![0; self.len.div_ceil(64) as usize]),
        })
    }
}

fn kind_index(kind: Kind) -> u8 {
    Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is in Kind::ALL") as u8
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
    /// The temporary file the references are kept in could not be written or read.
    #[error("{name}: cannot keep the references in a temporary file in {dir}: {source}")]
    Spool {
        /// The path, or `<stdin>`.
        name: String,
        /// The temporary directory.
        dir: String,
        /// The I/O error.
        source: std::io::Error,
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

impl InputError {
    fn spool(name: &str, dir: &Path, source: std::io::Error) -> Self {
        InputError::Spool {
            name: name.to_string(),
            dir: dir.display().to_string(),
            source,
        }
    }
}

/// The longest reference the API issues (a UUID is 36 characters).
const MAX_REFERENCE_LEN: usize = 36;
/// How much of a rejected line is kept for `failures.csv` and messages.
const MAX_RAW_CHARS: usize = 100;

/// Reads a reference list from `source`: a path, or `-` for standard input. Blocking. The
/// references are kept in `$TMPDIR`; [`read_input_in`] chooses the directory.
pub fn read_input(source: &str, default_kind: Kind) -> Result<InputList, InputError> {
    read_input_in(source, default_kind, &std::env::temp_dir())
}

/// [`read_input`] keeping the references in unnamed files in `spool_dir` (`run` uses the output
/// directory's file system: `$TMPDIR` is often memory, and another volume than the one chosen
/// for the export's data).
///
/// The input is read as a stream, never whole: memory holds one line (one CSV record) of it at
/// a time, whatever its number of lines.
pub fn read_input_in(
    source: &str,
    default_kind: Kind,
    spool_dir: &Path,
) -> Result<InputList, InputError> {
    let budget = spill::INPUT_BUDGET;
    if source == "-" {
        let stdin = std::io::stdin().lock();
        parse_stream(stdin, "<stdin>", default_kind, spool_dir, budget)
    } else {
        let file = File::open(Path::new(source)).map_err(|e| read_error(source, e))?;
        parse_stream(file, source, default_kind, spool_dir, budget)
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
    parse_with_budget(
        bytes,
        name,
        default_kind,
        &std::env::temp_dir(),
        spill::INPUT_BUDGET,
    )
}

/// [`parse_input`] with the spool directory and the de-duplication sort's memory budget chosen
/// (tests force spilling).
fn parse_with_budget(
    bytes: &[u8],
    name: &str,
    default_kind: Kind,
    spool_dir: &Path,
    budget: usize,
) -> Result<InputList, InputError> {
    parse_stream(bytes, name, default_kind, spool_dir, budget)
}

/// The bytes of the input read from the source at once.
const READ_BUFFER: usize = 64 * 1024;

/// [`parse_with_budget`] over a stream. A read error or a byte that is not UTF-8 anywhere in the
/// input wins over a bad line before it, as if the input had been read whole first: after a
/// parse error the rest is read (not kept) to look for one.
fn parse_stream(
    source: impl std::io::Read,
    name: &str,
    default_kind: Kind,
    spool_dir: &Path,
    budget: usize,
) -> Result<InputList, InputError> {
    let mut src = BufReader::with_capacity(READ_BUFFER, stream::Checked::new(source));
    let parsed = parse_lines(&mut src, name, default_kind, spool_dir, budget);
    if let Err(e @ (InputError::Read { .. } | InputError::NotUtf8 { .. })) = parsed {
        return Err(e);
    }
    std::io::copy(&mut src, &mut std::io::sink()).map_err(|e| read_error(name, e))?;
    let sha256 = src.into_inner().sha256();
    parsed?
        .finish(sha256)
        .map_err(|e| InputError::spool(name, spool_dir, e))
}

/// An error reading the input: [`InputError::NotUtf8`] for the [`stream::Checked`] reader's.
fn read_error(name: &str, source: std::io::Error) -> InputError {
    match stream::not_utf8_line(&source) {
        Some(line) => InputError::NotUtf8 {
            name: name.to_string(),
            line,
        },
        None => InputError::Read {
            name: name.to_string(),
            source,
        },
    }
}

/// Reads every line of `src` into a [`Collector`], in text or CSV mode as the first line that is
/// neither blank nor a comment says.
fn parse_lines<B: std::io::BufRead>(
    src: &mut B,
    name: &str,
    default_kind: Kind,
    spool_dir: &Path,
    budget: usize,
) -> Result<Collector, InputError> {
    let spool_error = |source| InputError::spool(name, spool_dir, source);
    let read = |e| read_error(name, e);
    let mut list = Collector::new(spool_dir, budget).map_err(spool_error)?;
    let mut lines = stream::Lines::new(src);
    let Some(held) = first_line(&mut lines).map_err(read)? else {
        return Ok(list);
    };
    let header = lines.text().map_err(read)?.trim();
    let is_csv_header = header.split(',').any(|f| {
        f.trim()
            .trim_matches('"')
            .trim()
            .eq_ignore_ascii_case("reference")
    });
    if is_csv_header {
        let (first, lines_before) = (lines.number, held.lines_before);
        let mut start = held.bytes;
        start.extend_from_slice(&lines.raw);
        let records =
            stream::CsvRecords::new(std::io::Cursor::new(start).chain(lines.src), lines_before);
        parse_csv(records, name, first, default_kind, &mut list)?;
    } else if header.contains(',') {
        return Err(InputError::NoReferenceColumn {
            name: name.to_string(),
            line: lines.number,
        });
    } else {
        parse_text(&mut lines, default_kind, &mut list).map_err(|e| match e {
            Fault::Read(e) => read(e),
            Fault::Spool(e) => spool_error(e),
        })?;
    }
    Ok(list)
}

/// What a CSV reader must still see of the lines before the first line that is neither blank nor
/// a comment: the lines it skips (empty, or `#` in column 1) before any it would not (` #x`,
/// spaces) are only counted; from the first it would not, they are kept as read.
struct Held {
    lines_before: usize,
    bytes: Vec<u8>,
}

/// Reads up to the first line that is neither blank nor a comment; `None` when there is none.
fn first_line<B: std::io::BufRead>(
    lines: &mut stream::Lines<'_, B>,
) -> std::io::Result<Option<Held>> {
    let mut held = Held {
        lines_before: 0,
        bytes: Vec::new(),
    };
    while lines.advance()? {
        let text = lines.text()?.trim();
        if !text.is_empty() && !text.starts_with('#') {
            return Ok(Some(held));
        }
        let csv_skips = {
            let rest: &[u8] = &lines.raw;
            let rest = &rest[rest.iter().take_while(|&&b| b == b'\r').count()..];
            rest.is_empty() || rest == b"\n" || rest.starts_with(b"#")
        };
        if held.bytes.is_empty() && csv_skips {
            held.lines_before += 1;
        } else {
            held.bytes.extend_from_slice(&lines.raw);
        }
    }
    Ok(None)
}

/// Why a line could not be taken: the input or the spool failed.
enum Fault {
    Read(std::io::Error),
    Spool(std::io::Error),
}

/// Text mode: the current line of `lines` and every one after it, blank and `#` lines skipped.
fn parse_text<B: std::io::BufRead>(
    lines: &mut stream::Lines<'_, B>,
    default_kind: Kind,
    list: &mut Collector,
) -> Result<(), Fault> {
    loop {
        let text = lines.text().map_err(Fault::Read)?.trim();
        if !text.is_empty() && !text.starts_with('#') {
            list.add(text, default_kind, lines.number)
                .map_err(Fault::Spool)?;
        }
        if !lines.advance().map_err(Fault::Read)? {
            return Ok(());
        }
    }
}

fn parse_csv<B: std::io::BufRead>(
    mut records: stream::CsvRecords<B>,
    name: &str,
    header_line: usize,
    default_kind: Kind,
    list: &mut Collector,
) -> Result<(), InputError> {
    let not_utf8 = |line| InputError::Csv {
        name: name.to_string(),
        line,
        message: "not UTF-8".to_string(),
    };
    let headers: Vec<String> = match records.advance().map_err(|e| read_error(name, e))? {
        Some(line) => records.fields().map_err(|_| not_utf8(line))?,
        None => Vec::new(),
    }
    .into_iter()
    .map(str::to_string)
    .collect();
    let column = |wanted: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(wanted));
    // The quick look in `parse_lines` splits on commas; the CSV reader honours quotes and
    // only skips `#` lines that start in column 1, so it may see no `reference` after all
    // (`"reference` unterminated, `a,"b,reference"`, ` #c` before the header).
    let reference_col = column("reference").ok_or_else(|| InputError::Csv {
        name: name.to_string(),
        line: header_line,
        message: "the header, read as CSV (quotes, comment lines), has no `reference` column"
            .to_string(),
    })?;
    let kind_col = column("kind");
    while let Some(line) = records.advance().map_err(|e| read_error(name, e))? {
        let record = records.fields().map_err(|_| not_utf8(line))?;
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        let kind = match kind_col.and_then(|c| record.get(c).copied()) {
            None | Some("") => default_kind,
            Some(k) => k.parse::<Kind>().map_err(|_| InputError::UnknownKind {
                name: name.to_string(),
                line,
                kind: printable(k),
            })?,
        };
        list.add(record.get(reference_col).copied().unwrap_or(""), kind, line)
            .map_err(|source| InputError::spool(name, &list.dir, source))?;
    }
    Ok(())
}

/// Gathers the lines: every valid one goes to a spool file in input order and, as a key
/// `reference \0 kind ordinal`, into an external sort; [`Collector::finish`] reads the keys in
/// order, where repeats are neighbours, and drops every occurrence but the first.
struct Collector {
    dir: std::path::PathBuf,
    candidates: SpoolWriter,
    keys: ExternalSort,
    rejected: Vec<Rejected>,
}

impl Collector {
    fn new(dir: &Path, budget: usize) -> std::io::Result<Self> {
        Ok(Collector {
            dir: dir.to_path_buf(),
            candidates: SpoolWriter::new(dir)?,
            keys: ExternalSort::new(dir, budget),
            rejected: Vec::new(),
        })
    }

    fn add(&mut self, reference: &str, kind: Kind, line: usize) -> std::io::Result<()> {
        if let Some(reason) = invalid_reason(reference) {
            self.rejected.push(Rejected {
                raw: printable(reference),
                kind,
                line,
                reason,
            });
            return Ok(());
        }
        let mut key = Vec::with_capacity(reference.len() + 10);
        key.extend_from_slice(reference.as_bytes());
        key.push(0);
        key.push(kind_index(kind));
        key.extend_from_slice(&self.candidates.len.to_be_bytes());
        self.keys.push(&key)?;
        self.candidates.push(reference, kind)
    }

    fn finish(self, sha256: String) -> std::io::Result<InputList> {
        let mut items = self.candidates.finish()?;
        let mut skip = vec![0u64; items.records.div_ceil(64) as usize];
        let mut keys = RecordFileWriter::new(&self.dir)?;
        let mut duplicates = 0usize;
        let mut previous: Option<Vec<u8>> = None;
        let (mut sorted, mut key) = (self.keys.finish()?, Vec::new());
        while sorted.next_into(&mut key)? {
            let (prefix, record) = key.split_at(key.len() - 8);
            // Keys of one (reference, kind) sort by record number: the first is the one kept.
            if previous.as_deref() == Some(prefix) {
                let record = u64::from_be_bytes(record.try_into().expect("8 bytes"));
                set_bit(&mut skip, record);
                duplicates += 1;
            } else {
                keys.put(&key)?;
                let previous = previous.get_or_insert_with(Vec::new);
                previous.clear();
                previous.extend_from_slice(prefix);
            }
        }
        items.len -= duplicates as u64;
        items.skip = Arc::new(skip);
        Ok(InputList {
            items,
            rejected: self.rejected,
            duplicates,
            sha256,
            keys: keys.finish()?,
        })
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
    // The common case in one pass over the bytes; the reasons below only for a bad one.
    if s.len() <= MAX_REFERENCE_LEN && s.bytes().all(reference_byte) {
        return None;
    }
    let chars = s.chars().count();
    if chars > MAX_REFERENCE_LEN {
        return Some(format!(
            "{chars} characters: a reference has at most {MAX_REFERENCE_LEN}"
        ));
    }
    if !s.bytes().all(reference_byte) {
        return Some("characters other than A-Z, a-z, 0-9 and -".into());
    }
    None
}

/// The bytes a reference may hold, `[A-Za-z0-9-]`, looked up rather than compared: the
/// comparisons mispredict on the random mix of digits and letters of a UUID.
const REFERENCE_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric() || b == b'-' as usize;
        b += 1;
    }
    table
};

fn reference_byte(b: u8) -> bool {
    REFERENCE_BYTES[usize::from(b)]
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

    /// `keys` as a sort gives them back (a tiny budget: through runs on disk).
    fn sorted(keys: Vec<Vec<u8>>) -> Sorted {
        let dir = tempfile::tempdir().unwrap();
        let mut sort = ExternalSort::new(dir.path(), 64);
        for k in &keys {
            sort.push(k).unwrap();
        }
        sort.finish().unwrap()
    }

    fn refs(list: &InputList) -> Vec<(String, Kind)> {
        list.items
            .iter()
            .map(|i| i.map(|i| (i.reference, i.kind)))
            .collect::<std::io::Result<_>>()
            .unwrap()
    }

    #[test]
    fn text_with_bom_crlf_comments_and_spaces() {
        let bytes = b"\xEF\xBB\xBF# header comment\r\nabc-1  \r\n\r\n   \t\n  def2\r\n#x\n";
        let list = parse_input(bytes, "in.txt", Kind::Document).unwrap();
        assert_eq!(
            refs(&list),
            [
                ("abc-1".into(), Kind::Document),
                ("def2".into(), Kind::Document)
            ]
        );
        assert!(list.rejected.is_empty());
        assert_eq!(list.sha256, hex::encode(Sha256::digest(bytes)));
    }

    /// Repeats, another shard's references and exported ones are each removed once: a
    /// reference that is both a repeat and exported counts once, under what removed it first.
    #[test]
    fn exclude_after_duplicates_and_shards_counts_each_item_once() {
        let refs_in: Vec<String> = (0..400).map(|i| format!("ref-{}", i % 300)).collect();
        let text = refs_in.join("\n");
        let dir = tempfile::tempdir().unwrap();
        let mut list =
            parse_with_budget(text.as_bytes(), "in.txt", Kind::Netverify, dir.path(), 256).unwrap();
        assert_eq!((list.items.len(), list.duplicates), (300, 100));
        let shard = crate::job::Shard { index: 1, count: 3 };
        list.retain_shard(&shard).unwrap();
        let in_shard: Vec<String> = (0..300)
            .map(|i| format!("ref-{i}"))
            .filter(|r| shard_of(r, 3) == 1)
            .collect();
        assert_eq!(list.items.len(), in_shard.len() as u64);
        // Every even reference was exported, in this shard or not.
        let mut exported: Vec<Vec<u8>> = (0..300)
            .filter(|i| i % 2 == 0)
            .map(|i| catalogue_key(&format!("ref-{i}"), Kind::Netverify))
            .collect();
        exported.sort();
        let removed = list.exclude(sorted(exported)).unwrap();
        let left: Vec<String> = in_shard
            .iter()
            .filter(|r| r.trim_start_matches("ref-").parse::<u32>().unwrap() % 2 == 1)
            .cloned()
            .collect();
        assert_eq!(removed, (in_shard.len() - left.len()) as u64);
        assert_eq!(list.items.len(), left.len() as u64);
        let got: Vec<String> = refs(&list).into_iter().map(|(r, _)| r).collect();
        assert_eq!(got, left, "input order kept");
        // Excluding again removes nothing more.
        let again = vec![catalogue_key("ref-0", Kind::Netverify)];
        assert_eq!(list.exclude(sorted(again)).unwrap(), 0);
    }

    #[test]
    fn exclude_removes_exported_keys_of_the_same_kind_only_and_keeps_order() {
        let csv =
            b"reference,kind\nb,netverify\na,netverify\nc,document\na,document\nd,netverify\n";
        let dir = tempfile::tempdir().unwrap();
        // A tiny budget sends the input's keys through on-disk runs.
        let mut list = parse_with_budget(csv, "in.csv", Kind::Netverify, dir.path(), 64).unwrap();
        let mut exported = vec![
            catalogue_key("a", Kind::Netverify),
            catalogue_key("c", Kind::Document),
            catalogue_key("zz", Kind::Netverify),
            catalogue_key("0", Kind::Document),
        ];
        exported.sort();
        let removed = list.exclude(sorted(exported)).unwrap();
        assert_eq!(removed, 2);
        assert_eq!(
            refs(&list),
            [
                ("b".into(), Kind::Netverify),
                ("a".into(), Kind::Document),
                ("d".into(), Kind::Netverify)
            ]
        );
        assert_eq!(list.items.len(), 3);
        let none = list.exclude(sorted(Vec::new())).unwrap();
        assert_eq!(none, 0);
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
        assert_eq!(refs(&list)[0].1, Kind::Document);
    }

    #[test]
    fn duplicates_dropped_in_input_order_when_the_sort_spills() {
        // 3,000 lines over 1,000 distinct (reference, kind) pairs, each first seen at a known
        // line; a 512-byte budget makes the key sort write dozens of runs.
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        let mut expected = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..3000u32 {
            let n = (i * 7919) % 1000;
            // Every reference under two kinds (two items); "r1" and "r1-" are prefixes.
            let kind = if (n / 2) % 2 == 0 {
                "document"
            } else {
                "netverify"
            };
            let reference = format!("r{}{}", n / 4, if n % 2 == 0 { "" } else { "-" });
            text.push_str(&format!("{reference},{kind}\n"));
            let k: Kind = kind.parse().unwrap();
            if seen.insert((reference.clone(), k)) {
                expected.push((reference, k));
            }
        }
        let text = format!("reference,kind\n{text}");
        for budget in [512, spill::DEFAULT_BUDGET] {
            let list = parse_with_budget(
                text.as_bytes(),
                "in.csv",
                Kind::Netverify,
                dir.path(),
                budget,
            )
            .unwrap();
            assert_eq!(refs(&list), expected, "budget {budget}");
            assert_eq!(list.items.len(), expected.len() as u64);
            assert_eq!(list.duplicates, 3000 - expected.len());
        }
        assert_eq!(expected.len(), 1000);
        assert!(
            expected
                .iter()
                .any(|(r, k)| *k == Kind::Document
                    && expected.contains(&(r.clone(), Kind::Netverify))),
            "a reference under both kinds"
        );
        // The spool and the sort's runs are unnamed: nothing to see or clean up.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_unreadable_spool_ends_the_iteration_and_counts_what_was_not_read() {
        let text: String = (0..100).map(|i| format!("ref-{i}\n")).collect();
        let list = parse_input(text.as_bytes(), "in.txt", Kind::Netverify).unwrap();
        // Cut the spool inside the 41st record.
        let record = |i: usize| 2 + format!("ref-{i}").len() as u64;
        let cut: u64 = (0..40).map(record).sum::<u64>() + 3;
        list.items.file.set_len(cut).unwrap();
        let mut iter = list.items.iter();
        let read: Vec<_> = iter.by_ref().take_while(|i| i.is_ok()).collect();
        assert_eq!(read.len(), 40);
        assert!(iter.next().is_none(), "the iteration ends at the error");
        assert_eq!(iter.unread(), 60);
    }

    /// Standard input arrives in pieces of any size: a character split between two reads is
    /// checked whole, and the list and errors are those of the input read at once.
    #[test]
    fn reads_of_one_byte_give_the_list_and_errors_of_one_read() {
        struct OneByte<'a>(&'a [u8]);
        impl std::io::Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let Some((&first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = first;
                self.0 = rest;
                Ok(1)
            }
        }
        let show = |list: Result<InputList, InputError>| match list {
            Ok(l) => format!("{:?} {:?} {}", refs(&l), l.rejected, l.sha256),
            Err(e) => e.to_string(),
        };
        let dir = tempfile::tempdir().unwrap();
        for bytes in [
            &b"\xEF\xBB\xBF# \xC3\xA4 \xE2\x82\xAC\r\nr\xC3\xA9f\nok-1\r\n\xF0\x9F\x98\x80\n"[..],
            b"reference,kind\n\xE2\x82\xAC,document\n\"a\nb\",\n",
            b"ok-1\n\xC3\xA4\n\xC3(\n",
            b"ok-1\n\xE2\x82",
            b"\xEF\xBB",
        ] {
            let whole = parse_input(bytes, "in", Kind::Netverify);
            let pieces = parse_stream(OneByte(bytes), "in", Kind::Netverify, dir.path(), 64);
            assert_eq!(show(pieces), show(whole), "{bytes:?}");
        }
        let err = parse_stream(
            OneByte(b"ok-1\n\xE2\x82"),
            "in",
            Kind::Netverify,
            dir.path(),
            64,
        );
        assert_eq!(show(err), "in:2: input is not UTF-8 text");
        let err = parse_stream(
            OneByte(b"a\n\nb\xC3("),
            "in",
            Kind::Netverify,
            dir.path(),
            64,
        );
        assert_eq!(show(err), "in:3: input is not UTF-8 text");
    }

    #[test]
    fn shard_of_treats_zero_as_one() {
        assert_eq!(shard_of("abc", 0), 0);
        assert_eq!(shard_of("abc", 1), 0);
    }
}
