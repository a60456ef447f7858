//! Reading a reference list as a stream, with memory bounded by the longest line (or CSV
//! record), never by the number of lines: [`Checked`] hashes, strips the BOM and refuses bytes
//! that are not UTF-8 as they pass; [`Lines`] hands out one text line at a time; [`CsvRecords`]
//! hands out one CSV record at a time with the line it starts on.

use std::io::{self, BufRead, Read};

use sha2::{Digest, Sha256};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The error a [`Checked`] reader returns from the first byte that is not UTF-8 on.
#[derive(Debug)]
pub(super) struct NotUtf8 {
    /// The 1-based line holding the first invalid byte.
    pub line: usize,
}

impl std::fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: input is not UTF-8 text", self.line)
    }
}

impl std::error::Error for NotUtf8 {}

/// The line of a [`NotUtf8`] error, if `e` is one.
pub(super) fn not_utf8_line(e: &io::Error) -> Option<usize> {
    e.get_ref()?.downcast_ref::<NotUtf8>().map(|n| n.line)
}

/// Hashes every byte read from `inner` (the sha256 of the input exactly as read), drops a
/// leading UTF-8 BOM, and fails with [`NotUtf8`] at the first byte that is not UTF-8, before
/// handing out any byte of the read that holds it.
pub(super) struct Checked<R> {
    inner: R,
    sha: Sha256,
    /// The first bytes, read to look for a BOM, not yet handed out (`None` before the look).
    head: Option<Vec<u8>>,
    /// An incomplete UTF-8 sequence at the end of the last read.
    carry: [u8; 4],
    carry_len: usize,
    /// Newlines handed out so far.
    newlines: usize,
    failed: Option<usize>,
}

impl<R: Read> Checked<R> {
    pub(super) fn new(inner: R) -> Self {
        Checked {
            inner,
            sha: Sha256::new(),
            head: None,
            carry: [0; 4],
            carry_len: 0,
            newlines: 0,
            failed: None,
        }
    }

    /// Hex sha256 of every byte read so far (all of them once a read returned 0).
    pub(super) fn sha256(self) -> String {
        hex::encode(self.sha.finalize())
    }

    fn read_head(&mut self) -> io::Result<Vec<u8>> {
        let mut head = [0u8; 3];
        let mut got = 0;
        while got < head.len() {
            match self.inner.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.sha.update(&head[..got]);
        Ok(if &head[..got] == BOM {
            Vec::new()
        } else {
            head[..got].to_vec()
        })
    }

    fn fail(&mut self) -> io::Result<()> {
        let line = self.newlines + 1;
        self.failed = Some(line);
        Err(io::Error::new(io::ErrorKind::InvalidData, NotUtf8 { line }))
    }

    /// Checks the next bytes of the stream, keeping an incomplete last character for the next.
    fn check(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.carry_len > 0 {
            let need = match self.carry[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (need - self.carry_len).min(bytes.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&bytes[..take]);
            self.carry_len += take;
            bytes = &bytes[take..];
            match std::str::from_utf8(&self.carry[..self.carry_len]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return self.fail(),
            }
        }
        let valid = match std::str::from_utf8(bytes) {
            Ok(_) => bytes.len(),
            Err(e) => e.valid_up_to(),
        };
        self.newlines += bytes[..valid].iter().filter(|&&b| b == b'\n').count();
        let rest = &bytes[valid..];
        match std::str::from_utf8(rest) {
            Err(e) if e.error_len().is_some() => self.fail(),
            _ => {
                // Empty, or the start of a character the next read completes.
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carry_len = rest.len();
                Ok(())
            }
        }
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(line) = self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, NotUtf8 { line }));
        }
        let head = match self.head.take() {
            Some(head) => head,
            None => self.read_head()?,
        };
        let n = if head.is_empty() {
            self.head = Some(head);
            let n = self.inner.read(buf)?;
            self.sha.update(&buf[..n]);
            n
        } else {
            let n = head.len().min(buf.len());
            buf[..n].copy_from_slice(&head[..n]);
            self.head = Some(head[n..].to_vec());
            n
        };
        if n == 0 && self.carry_len > 0 {
            self.fail()?;
        }
        self.check(&buf[..n])?;
        Ok(n)
    }
}

/// Text lines read one at a time into one reused buffer.
pub(super) struct Lines<'a, B> {
    pub(super) src: &'a mut B,
    /// The current line's bytes, with its `\n` if it has one.
    pub(super) raw: Vec<u8>,
    /// The current line's 1-based number (0 before the first).
    pub(super) number: usize,
}

impl<'a, B: BufRead> Lines<'a, B> {
    pub(super) fn new(src: &'a mut B) -> Self {
        Lines {
            src,
            raw: Vec::new(),
            number: 0,
        }
    }

    /// Reads the next line; false at the end of the input.
    pub(super) fn advance(&mut self) -> io::Result<bool> {
        self.raw.clear();
        if self.src.read_until(b'\n', &mut self.raw)? == 0 {
            return Ok(false);
        }
        self.number += 1;
        Ok(true)
    }

    /// The current line without its line end (`\n` or `\r\n`), as `str::lines` gives it.
    pub(super) fn text(&self) -> io::Result<&str> {
        let line = self.raw.strip_suffix(b"\n").unwrap_or(&self.raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        std::str::from_utf8(line)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, NotUtf8 { line: self.number }))
    }
}

/// CSV records read one at a time (`,` delimited, `"` quoted, `#` comment lines, CR, LF or CRLF
/// line ends: the csv crate's reader as `parse_csv` configures it), each with the line its first
/// byte is on. The csv crate's own line count is wrong after CRLF and its byte position points
/// at the end of the previous record (or at blank and comment lines it skipped), so the lines
/// are counted here, in the bytes the parser consumes.
pub(super) struct CsvRecords<B> {
    src: B,
    core: csv_core::Reader,
    fields: Vec<u8>,
    ends: Vec<usize>,
    len: usize,
    lines: RecordLines,
}

impl<B: BufRead> CsvRecords<B> {
    /// Records of `src`, whose first byte is on line `lines_before + 1`.
    pub(super) fn new(src: B, lines_before: usize) -> Self {
        CsvRecords {
            src,
            core: csv_core::ReaderBuilder::new().comment(Some(b'#')).build(),
            fields: vec![0; 1024],
            ends: vec![0; 16],
            len: 0,
            lines: RecordLines {
                newlines: lines_before,
                state: At::Gap,
                line: 0,
            },
        }
    }

    /// Reads the next record and returns its line; `None` at the end of the input.
    pub(super) fn advance(&mut self) -> io::Result<Option<usize>> {
        use csv_core::ReadRecordResult::*;
        let (mut out, mut end) = (0, 0);
        loop {
            let input = self.src.fill_buf()?;
            let (result, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.fields[out..], &mut self.ends[end..]);
            self.lines.feed(&input[..nin]);
            self.src.consume(nin);
            (out, end) = (out + nout, end + nend);
            match result {
                InputEmpty => {}
                OutputFull => self.fields.resize(self.fields.len() * 2, 0),
                OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                Record => {
                    self.len = end;
                    self.lines.state = At::Gap;
                    return Ok(Some(self.lines.line));
                }
                End => return Ok(None),
            }
        }
    }

    /// The current record's fields, trimmed; an error if one is not UTF-8.
    pub(super) fn fields(&self) -> Result<Vec<&str>, std::str::Utf8Error> {
        let mut start = 0;
        self.ends[..self.len]
            .iter()
            .map(|&end| {
                let field = std::str::from_utf8(&self.fields[start..end]).map(str::trim);
                start = end;
                field
            })
            .collect()
    }
}

/// Where the bytes a CSV parser consumes are: in the line ends and `#` lines before a record
/// (`Gap`, `Comment`), or in the record.
enum At {
    Gap,
    Comment,
    Record,
}

/// The line of each CSV record: the line of its first byte that is not a line end and not in a
/// `#` line before it.
struct RecordLines {
    newlines: usize,
    state: At,
    line: usize,
}

impl RecordLines {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match (&self.state, b) {
                (_, b'\n') => {
                    self.newlines += 1;
                    if let At::Comment = self.state {
                        self.state = At::Gap;
                    }
                }
                (At::Gap, b'\r') | (At::Comment | At::Record, _) => {}
                (At::Gap, b'#') => self.state = At::Comment,
                (At::Gap, _) => {
                    self.line = self.newlines + 1;
                    self.state = At::Record;
                }
            }
        }
    }
}
