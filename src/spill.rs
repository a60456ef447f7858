//! Lists that grow with the export, kept on disk so memory does not: an external merge sort of
//! byte records, and a spooled list read back in order.
//!
//! Both live in unnamed temporary files (`O_TMPFILE` on Linux, created with mode 0600): the
//! kernel removes them when the process ends, however it ends, so nothing is left behind by
//! a crash and nothing of them is ever mistaken for output.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Memory an [`ExternalSort`] holds before it writes a sorted run: 1 MiB, about 10,000
/// root-hash lines or 20,000 input keys.
pub const DEFAULT_BUDGET: usize = 1 << 20;

/// Memory of the input's de-duplication sort: 4 MiB, about 65,000 keys a run, so a list of
/// 100,000 references merges two runs rather than seven. The input is read before anything else
/// of a run (and by `plan`), so this is most of what reading a large list holds.
pub const INPUT_BUDGET: usize = 4 << 20;

/// Memory of each sort a run does before it starts fetching (the input's keys against the
/// commits' exported keys): 8 MiB, so a rerun of 100,000 references sorts in memory, and all of
/// it is free again before the first request (the fetching holds more at its peak).
pub const START_BUDGET: usize = 8 << 20;

/// Sorts byte records lexicographically with about `budget` bytes of memory, whatever their
/// number: records are gathered up to the budget, sorted and written out as a run; the runs
/// are merged when read back. Fewer records than the budget never touch the disk.
pub struct ExternalSort {
    dir: PathBuf,
    budget: usize,
    bytes: Vec<u8>,
    /// Each buffered record: its first 8 bytes as a big-endian number (zero-padded: comparing
    /// these first settles most comparisons without touching `bytes`), start and length.
    spans: Vec<Span>,
    runs: Vec<Run>,
    len: u64,
}

type Span = (u64, u32, u32);

/// The first 8 bytes of `record`, zero-padded, as a big-endian number: ordered as the bytes are
/// wherever two of them differ.
fn prefix(record: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    let n = record.len().min(8);
    first[..n].copy_from_slice(&record[..n]);
    u64::from_be_bytes(first)
}

struct Run {
    file: File,
    records: u64,
    /// 0 for a run written from memory; one more than its inputs for a merged run.
    level: u32,
}

/// Runs merged at once. When this many runs of one level exist they are merged into one run of
/// the next level, so open files and merge buffers stay bounded (about 32 per level; three
/// levels hold 32 GiB of records at the default budget) and every record is rewritten only once
/// per level.
const FAN_IN: usize = 32;

impl ExternalSort {
    /// A sorter whose runs go to unnamed files in `dir`.
    pub fn new(dir: impl Into<PathBuf>, budget: usize) -> Self {
        ExternalSort {
            dir: dir.into(),
            budget: budget.clamp(64, u32::MAX as usize / 2),
            bytes: Vec::new(),
            spans: Vec::new(),
            runs: Vec::new(),
            len: 0,
        }
    }

    /// Records pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds one record. Writes a run when the buffer is full.
    pub fn push(&mut self, record: &[u8]) -> io::Result<()> {
        let start = self.bytes.len();
        if record.len() > self.budget {
            return Err(io::Error::other(format!(
                "a record of {} bytes is larger than the sort budget",
                record.len()
            )));
        }
        self.bytes.extend_from_slice(record);
        self.spans
            .push((prefix(record), start as u32, record.len() as u32));
        self.len += 1;
        if self.bytes.len() + self.spans.len() * std::mem::size_of::<Span>() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn sort_buffer(&mut self) {
        let bytes = &self.bytes;
        let slice = |&(_, s, l): &Span| &bytes[s as usize..(s + l) as usize];
        self.spans
            .sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| slice(a).cmp(slice(b))));
    }

    fn spill(&mut self) -> io::Result<()> {
        self.sort_buffer();
        let mut run = RunWriter::new(&self.dir)?;
        for &(_, s, l) in &self.spans {
            run.put(&self.bytes[s as usize..(s + l) as usize])?;
        }
        self.runs.push(run.finish(0)?);
        self.bytes.clear();
        self.spans.clear();
        self.compact()
    }

    /// Merges every level that has [`FAN_IN`] runs into one run of the next level.
    fn compact(&mut self) -> io::Result<()> {
        while let Some(level) = (0..=self.runs.iter().map(|r| r.level).max().unwrap_or(0))
            .find(|&l| self.runs.iter().filter(|r| r.level == l).count() >= FAN_IN)
        {
            let (merge, keep): (Vec<Run>, Vec<Run>) = std::mem::take(&mut self.runs)
                .into_iter()
                .partition(|r| r.level == level);
            self.runs = keep;
            let mut run = RunWriter::new(&self.dir)?;
            for record in merge_runs(merge)? {
                run.put(&record?)?;
            }
            self.runs.push(run.finish(level + 1)?);
        }
        Ok(())
    }

    /// Every record pushed, in ascending byte order (equal records each appear).
    pub fn finish(mut self) -> io::Result<Sorted> {
        if self.runs.is_empty() {
            self.sort_buffer();
            return Ok(Sorted(Inner::Memory {
                bytes: self.bytes,
                spans: self.spans.into_iter(),
            }));
        }
        if !self.spans.is_empty() {
            self.spill()?;
        }
        drop(std::mem::take(&mut self.bytes));
        drop(std::mem::take(&mut self.spans));
        merge_runs(self.runs)
    }

    /// [`ExternalSort::finish`], the records held in memory written out as a run first: read
    /// in order from memory, records land in random places of its buffer (a cache miss each),
    /// while a run is read in sequence; and the buffer is free before anything is read. For a
    /// caller with a spare thread now and a busy one later.
    pub fn finish_on_disk(mut self) -> io::Result<Sorted> {
        if !self.spans.is_empty() {
            self.spill()?;
        }
        self.finish()
    }

    /// Sorted runs written so far (for tests).
    #[cfg(test)]
    fn run_count(&self) -> usize {
        self.runs.len()
    }
}

/// Writes one run: each record as a little-endian `u32` length and its bytes.
struct RunWriter {
    w: BufWriter<File>,
    records: u64,
}

impl RunWriter {
    fn new(dir: &Path) -> io::Result<Self> {
        Ok(RunWriter {
            w: BufWriter::with_capacity(64 * 1024, unnamed_file(dir)?),
            records: 0,
        })
    }

    fn put(&mut self, record: &[u8]) -> io::Result<()> {
        self.w.write_all(&(record.len() as u32).to_le_bytes())?;
        self.w.write_all(record)?;
        self.records += 1;
        Ok(())
    }

    fn finish(self, level: u32) -> io::Result<Run> {
        Ok(Run {
            file: self
                .w
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?,
            records: self.records,
            level,
        })
    }
}

/// Records written once, in order, and read back in that order as often as needed: a sorted
/// list kept for a later merge (the input's unique keys, merged with the commits' keys).
pub struct RecordFile {
    file: std::sync::Arc<File>,
    records: u64,
}

/// Writes a [`RecordFile`].
pub struct RecordFileWriter(RunWriter);

impl RecordFileWriter {
    /// A new, empty record file in `dir` (unnamed, see the module documentation).
    pub fn new(dir: &Path) -> io::Result<Self> {
        RunWriter::new(dir).map(RecordFileWriter)
    }

    /// Appends one record.
    pub fn put(&mut self, record: &[u8]) -> io::Result<()> {
        self.0.put(record)
    }

    /// The records written, ready to be read.
    pub fn finish(self) -> io::Result<RecordFile> {
        let run = self.0.finish(0)?;
        Ok(RecordFile {
            file: std::sync::Arc::new(run.file),
            records: run.records,
        })
    }
}

impl RecordFile {
    /// Records written.
    pub fn len(&self) -> u64 {
        self.records
    }

    /// True when none were written.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Reads the records in the order written.
    pub fn reader(&self) -> RecordReader {
        RecordReader(RunReader {
            reader: BufReader::with_capacity(
                64 * 1024,
                PositionedReader::shared(self.file.clone()),
            ),
            left: self.records,
        })
    }
}

/// Reads a [`RecordFile`] from its start.
pub struct RecordReader(RunReader);

impl RecordReader {
    /// The next record into `buf`; false at the end. After an error, the end.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        let next = self.0.next_into(buf);
        if next.is_err() {
            self.0.left = 0;
        }
        next
    }
}

impl std::fmt::Debug for RecordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordFile({} records)", self.records)
    }
}

/// A k-way merge of sorted runs.
fn merge_runs(runs: Vec<Run>) -> io::Result<Sorted> {
    let mut sources = Vec::with_capacity(runs.len());
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, run) in runs.into_iter().enumerate() {
        let mut source = RunReader {
            reader: BufReader::with_capacity(16 * 1024, PositionedReader::new(run.file)),
            left: run.records,
        };
        if let Some(first) = source.next_record()? {
            heap.push(Reverse((first, i)));
        }
        sources.push(source);
    }
    Ok(Sorted(Inner::Merge { sources, heap }))
}

/// The records of an [`ExternalSort`], in order.
pub struct Sorted(Inner);

enum Inner {
    Memory {
        bytes: Vec<u8>,
        spans: std::vec::IntoIter<Span>,
    },
    Merge {
        sources: Vec<RunReader>,
        heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    },
}

struct RunReader {
    reader: BufReader<PositionedReader>,
    left: u64,
}

impl RunReader {
    fn next_record(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut record = Vec::new();
        Ok(self.next_into(&mut record)?.then_some(record))
    }

    /// The next record into `buf` (resized to it); false at the end.
    fn next_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        if self.left == 0 {
            return Ok(false);
        }
        self.left -= 1;
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len)?;
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.reader.read_exact(buf)?;
        Ok(true)
    }
}

impl Sorted {
    /// The next record, copied into `buf` (cleared first) rather than into a new allocation;
    /// false at the end.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        if let Inner::Memory { bytes, spans } = &mut self.0 {
            let Some((_, s, l)) = spans.next() else {
                return Ok(false);
            };
            buf.clear();
            buf.extend_from_slice(&bytes[s as usize..(s + l) as usize]);
            return Ok(true);
        }
        let Inner::Merge { sources, heap } = &mut self.0 else {
            unreachable!("the memory case returned above")
        };
        let Some(Reverse((record, i))) = heap.pop() else {
            return Ok(false);
        };
        // The caller's previous record's allocation takes the source's next record.
        let mut spare = std::mem::replace(buf, record);
        match sources[i].next_into(&mut spare) {
            Ok(true) => heap.push(Reverse((spare, i))),
            Ok(false) => {}
            Err(e) => {
                heap.clear();
                return Err(e);
            }
        }
        Ok(true)
    }
}

impl Iterator for Sorted {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            Inner::Memory { bytes, spans } => spans
                .next()
                .map(|(_, s, l)| Ok(bytes[s as usize..(s + l) as usize].to_vec())),
            Inner::Merge { sources, heap } => {
                let Reverse((record, i)) = heap.pop()?;
                match sources[i].next_record() {
                    Ok(Some(next)) => heap.push(Reverse((next, i))),
                    Ok(None) => {}
                    Err(e) => {
                        heap.clear();
                        return Some(Err(e));
                    }
                }
                Some(Ok(record))
            }
        }
    }
}

/// Reads a file from its own position (`pread`), so readers of one file never disturb each
/// other.
pub struct PositionedReader {
    file: std::sync::Arc<File>,
    pos: u64,
}

impl PositionedReader {
    /// Reads `file` from its start.
    pub fn new(file: File) -> Self {
        PositionedReader {
            file: std::sync::Arc::new(file),
            pos: 0,
        }
    }

    /// Reads a shared `file` from its start.
    pub fn shared(file: std::sync::Arc<File>) -> Self {
        PositionedReader { file, pos: 0 }
    }
}

impl Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// An unnamed temporary file in `dir` (see the module documentation).
pub fn unnamed_file(dir: &Path) -> io::Result<File> {
    tempfile::tempfile_in(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(records: &[Vec<u8>], budget: usize) -> (Vec<Vec<u8>>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ExternalSort::new(dir.path(), budget);
        for r in records {
            s.push(r).unwrap();
        }
        assert_eq!(s.len(), records.len() as u64);
        let runs = s.run_count();
        let out = s.finish().unwrap().collect::<io::Result<Vec<_>>>().unwrap();
        // Unnamed files: nothing is ever visible in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        (out, runs)
    }

    fn population(n: u64) -> Vec<Vec<u8>> {
        // A fixed pseudo-random population with duplicates and prefixes of one another.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let text = format!("{:x}", x % 5000);
                text.as_bytes()[..(x % 5) as usize % (text.len() + 1)].to_vec()
            })
            .collect()
    }

    #[test]
    fn many_runs_merge_to_the_same_order_as_an_in_memory_sort() {
        let records = population(20_000);
        let mut expected = records.clone();
        expected.sort();
        let (out, runs) = sorted(&records, 4096);
        assert!(runs > 1, "the budget forces runs: {runs}");
        assert!(runs < FAN_IN, "runs are merged at {FAN_IN}: {runs}");
        assert_eq!(out, expected);
        let (out, runs) = sorted(&records, DEFAULT_BUDGET);
        assert_eq!(runs, 0, "fits in memory");
        assert_eq!(out, expected);
    }

    /// Written out before they are read, the records read back the same, whether some runs
    /// were already on disk or none.
    #[test]
    fn finished_on_disk_the_records_read_back_the_same() {
        let records = population(20_000);
        let mut expected = records.clone();
        expected.sort();
        for budget in [4096, DEFAULT_BUDGET] {
            let dir = tempfile::tempdir().unwrap();
            let mut s = ExternalSort::new(dir.path(), budget);
            for r in &records {
                s.push(r).unwrap();
            }
            let mut sorted = s.finish_on_disk().unwrap();
            assert!(
                matches!(sorted.0, Inner::Merge { .. }),
                "budget {budget}: nothing is held in memory"
            );
            let (mut out, mut buf) = (Vec::new(), Vec::new());
            while sorted.next_into(&mut buf).unwrap() {
                out.push(buf.clone());
            }
            assert_eq!(out, expected, "budget {budget}");
        }
    }

    #[test]
    fn runs_beyond_the_fan_in_are_merged_level_by_level() {
        // A 256-byte budget: ~20 records a run, ~5,000 runs without merging; the merged levels
        // keep fewer than FAN_IN runs of each level open.
        let records = population(100_000);
        let mut expected = records.clone();
        expected.sort();
        let dir = tempfile::tempdir().unwrap();
        let mut s = ExternalSort::new(dir.path(), 256);
        let mut most = 0;
        for r in &records {
            s.push(r).unwrap();
            most = most.max(s.run_count());
        }
        assert!(s.runs.iter().any(|r| r.level >= 2), "two levels of merging");
        assert!(most <= 3 * FAN_IN, "open runs stay bounded: {most}");
        let out = s.finish().unwrap().collect::<io::Result<Vec<_>>>().unwrap();
        assert_eq!(out, expected);
    }

    /// The in-memory sort compares the first 8 bytes as a number first: records that share
    /// them, are shorter than 8 bytes or hold zero bytes (catalogue keys do) still sort as bytes.
    #[test]
    fn shared_prefixes_short_records_and_zero_bytes_sort_as_bytes() {
        let mut records: Vec<Vec<u8>> = population(5_000)
            .into_iter()
            .enumerate()
            .map(|(i, r)| match i % 4 {
                0 => [b"same-8by".as_slice(), &r].concat(),
                1 => [r.as_slice(), b"\0", &[(i % 3) as u8]].concat(),
                2 => [b"ab\0\0\0\0\0\0".as_slice(), &r].concat(),
                _ => r,
            })
            .collect();
        records.extend([b"ab".to_vec(), b"ab\0".to_vec(), b"ab\0\0\0\0\0\0".to_vec()]);
        let mut expected = records.clone();
        expected.sort();
        assert_eq!(sorted(&records, DEFAULT_BUDGET).0, expected, "in memory");
        assert_eq!(sorted(&records, 2048).0, expected, "through runs");
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(sorted(&[], 64).0, Vec::<Vec<u8>>::new());
        assert_eq!(sorted(&[b"x".to_vec()], 64).0, vec![b"x".to_vec()]);
        assert_eq!(
            sorted(&[Vec::new(), Vec::new()], 64).0,
            vec![Vec::<u8>::new(), Vec::new()]
        );
    }

    #[test]
    fn a_record_over_the_budget_is_an_error_not_a_silent_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ExternalSort::new(dir.path(), 64);
        assert!(s.push(&[0u8; 65]).is_err());
    }
}
