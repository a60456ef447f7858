//! The temporary archive's bytes on their way to the file, hashed as they go.
//!
//! The zip writer writes each entry's local header before its body and patches the header's
//! CRC-32 and sizes once the body is complete, so a byte of the archive is final only when the
//! next entry starts. [`Spool`] holds the bytes of the entry being written in a buffer (the
//! patch then lands in memory, with no seek and no write of its own) and hands the bytes before
//! that entry, which are final, to the archive's sha256 and to the file in one pass: the
//! archive's own hash needs no read-back of the finished file, and a small archive reaches the
//! file in one write.
//!
//! An entry longer than the buffer (a large image) is written through as it arrives instead of
//! being held whole, and the archive's bytes from that entry on are read back once, for the
//! archive's hash, when the archive is finished (on the blocking pool; the async tasks that
//! receive the bodies never read): the read starts at the first such entry, and an archive of
//! entries that all fit the buffer is never read. (Hashing such an entry as it goes out would
//! need its CRC-32 and sizes in a data descriptor after the body; streaming readers such as
//! Java's `ZipInputStream` and commons-compress refuse a STORED entry with one, so the format
//! keeps them in the local header and pays this read instead: BENCHMARKS.md, session 6.)
//! A chunk of such an entry goes to the file from the caller's slice, and the buffer never
//! grows past its capacity.
//!
//! Each stored entry's own sha256 (the manifest, the `files` table) is taken here too
//! ([`Marks::begin_body`]): its body waits in the buffer until the next entry's start makes the
//! entry final, and then the body's hash and the archive's hash over those same bytes run side
//! by side, interleaved on the CPU's SHA unit ([`super::sha256x2`]). A body whose bytes must
//! leave the buffer before that (written through, or drained to make room) is hashed on its own
//! first; so is the last entry's (`seal` needs every digest before `provenance.json`).
//!
//! Buffers come from a small pool and go back to it when the archive is finished, so their pages
//! are faulted in once per process rather than once per archive (an archive dropped on an error
//! path frees its buffer instead).

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::sha256x2::{Lane, update_pair};

/// The most bytes of one entry held in memory; a longer entry is written through.
pub(super) const HOLD_BYTES: usize = 512 * 1024;

/// Once an entry is being written through, its bytes go to the file whenever this many wait:
/// what a kill leaves on disk trails what was received by no more than this. (The connection's
/// chunks are mostly larger than this already: a 200 MiB image reaches the file in about 550
/// writes of ~370 KiB, one per chunk, so a larger step would not save calls.)
const WRITE_THROUGH: usize = 64 * 1024;

/// The read-back of written-through entries (for the archive's hash) reads this much at a
/// time, into a pooled buffer: a 200 MiB image is read back in 400 calls rather than the
/// 3,200 of a 64 KiB buffer on the stack.
const READ_BACK: usize = HOLD_BYTES;

/// Room above [`HOLD_BYTES`] for the chunk that crosses it; a larger chunk makes room first
/// (see [`Spool::append`]), so the buffer never reallocates.
const SLACK: usize = 64 * 1024;

/// Buffers kept for reuse (more archives than this in flight allocate their own).
const POOL_SIZE: usize = 64;

/// Idle buffers, each of capacity `HOLD_BYTES + SLACK`.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn take_buffer() -> Vec<u8> {
    POOL.lock()
        .ok()
        .and_then(|mut p| p.pop())
        .unwrap_or_else(|| Vec::with_capacity(HOLD_BYTES + SLACK))
}

fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() < HOLD_BYTES + SLACK {
        return;
    }
    buf.clear();
    if let Ok(mut p) = POOL.lock()
        && p.len() < POOL_SIZE
    {
        p.push(buf);
    }
}

/// Where the archive writer and the spool meet: the start of the entry the zip writer is
/// writing (every byte before it is final) and the spool's end.
#[derive(Debug, Default)]
pub(super) struct Marks {
    /// Bytes before this offset will never be patched.
    hold: AtomicU64,
    /// The spool's length.
    end: AtomicU64,
    /// The zip writer dropped the entry being written (the one starting at `hold`): the archive
    /// ends at `hold` again (applied to the spool before its next operation).
    truncate: AtomicBool,
    /// The sha256s of the bodies the spool takes ([`Marks::begin_body`]).
    bodies: Mutex<Bodies>,
}

/// Entry bodies hashed by the spool. A body's bytes stay in the buffer after it is received
/// whole; its sha256 is taken once its entry's bytes are final too (when the next entry
/// starts), side by side with the archive's sha256 over those same bytes ([`super::sha256x2`]),
/// or on its own when its bytes must leave the buffer first (written through, or drained).
#[derive(Debug, Default)]
struct Bodies {
    /// The body being received.
    open: Option<Body>,
    /// Bodies received whole whose hash is not complete, in archive order.
    done: std::collections::VecDeque<Body>,
    /// Every body's sha256 (hex) once complete, by its index.
    digests: Vec<Option<String>>,
}

#[derive(Debug)]
struct Body {
    index: usize,
    lane: Lane,
    /// The archive offset of the next byte to hash.
    next: u64,
    /// Where the body ends (`u64::MAX` while it is being received).
    end: u64,
}

impl Marks {
    /// The spool's length: where the next entry's local header will start.
    pub(super) fn end(&self) -> u64 {
        self.end.load(Ordering::Relaxed)
    }

    /// Every byte before `offset` is final (the zip writer starts an entry there).
    pub(super) fn hold_from(&self, offset: u64) {
        self.hold.store(offset, Ordering::Relaxed);
    }

    fn bodies(&self) -> std::sync::MutexGuard<'_, Bodies> {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spool hashes every byte appended from now on (an entry's body, stored as received:
    /// not for an encrypted entry) until [`Marks::end_body`].
    pub(super) fn begin_body(&self) {
        let next = self.end();
        let mut bodies = self.bodies();
        let index = bodies.digests.len();
        bodies.digests.push(None);
        bodies.open = Some(Body {
            index,
            lane: Lane::default(),
            next,
            end: u64::MAX,
        });
    }

    /// The body begun last is received whole: its index for [`Marks::take_digests`] (`None`
    /// without one). Its sha256 is complete once the spool is flushed.
    pub(super) fn end_body(&self) -> Option<usize> {
        let end = self.end();
        let mut bodies = self.bodies();
        let mut body = bodies.open.take()?;
        body.end = end;
        let index = body.index;
        if body.next >= body.end {
            bodies.digests[index] = Some(body.lane.finalize_hex());
        } else {
            bodies.done.push_back(body);
        }
        Some(index)
    }

    /// Every body's sha256 (hex) by index; `None` for one not complete (the spool was not
    /// flushed since it ended) or dropped.
    pub(super) fn take_digests(&self) -> Vec<Option<String>> {
        std::mem::take(&mut self.bodies().digests)
    }

    /// The zip writer dropped the entry being written (`abort_file`): the archive ends where
    /// that entry started, at the last [`Marks::hold_from`].
    pub(super) fn drop_held_entry(&self) {
        self.bodies().open = None;
        self.end
            .store(self.hold.load(Ordering::Relaxed), Ordering::Relaxed);
        self.truncate.store(true, Ordering::Relaxed);
    }
}

/// See the module documentation. `Write + Seek` for the zip writer; seeks move a cursor and
/// never reach the file.
pub(super) struct Spool {
    file: File,
    marks: Arc<Marks>,
    /// sha256 of the archive's bytes `[0, hashed)`. `hashed` may run ahead of `written` (final
    /// bytes hashed beside a body as it arrives) unless an entry was written through; then it
    /// trails, and [`Spool::finish`] reads the gap back.
    hasher: Lane,
    hashed: u64,
    /// Bytes `[0, written)` were handed to the file.
    written: u64,
    /// Bytes `[written, written + buf.len())`: the archive's tail, not yet in the file.
    buf: Vec<u8>,
    /// The zip writer's cursor.
    pos: u64,
    /// The file's length, which an abandoned entry may leave above the archive's.
    file_len: u64,
}

impl Spool {
    pub(super) fn new(file: File) -> (Self, Arc<Marks>) {
        let marks = Arc::new(Marks::default());
        let spool = Spool {
            file,
            marks: Arc::clone(&marks),
            hasher: Lane::default(),
            hashed: 0,
            written: 0,
            buf: take_buffer(),
            pos: 0,
            file_len: 0,
        };
        (spool, marks)
    }

    fn end(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    fn hold(&self) -> u64 {
        self.marks.hold.load(Ordering::Relaxed)
    }

    /// The most bytes the buffer keeps: the held entry whole, unless it is being written through.
    fn limit(&self) -> usize {
        if self.written > self.hold() {
            WRITE_THROUGH
        } else {
            HOLD_BYTES
        }
    }

    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)?;
        self.file_len = self.file_len.max(offset + bytes.len() as u64);
        Ok(())
    }

    /// Reads back and hashes the bytes `[hashed, upto)` already in the file: from the first
    /// written-through entry on, once every header is final (in [`Spool::finish`], on the
    /// blocking pool).
    fn catch_up(&mut self, upto: u64) -> io::Result<()> {
        if self.hashed >= upto {
            return Ok(());
        }
        let mut scratch = take_buffer();
        scratch.resize(READ_BACK, 0);
        let mut result = Ok(());
        while self.hashed < upto {
            let n = ((upto - self.hashed) as usize).min(READ_BACK);
            if let Err(e) = self.file.read_exact_at(&mut scratch[..n], self.hashed) {
                result = Err(e);
                break;
            }
            self.hasher.update(&scratch[..n]);
            self.hashed += n as u64;
        }
        give_back(scratch);
        result
    }

    /// Makes room in the buffer: the final bytes before the held entry go to the file, and to
    /// the hash unless an entry before them was written through (then [`Spool::finish`] reads
    /// them back); if the held entry alone is longer than the buffer, it is written through.
    /// Never reads: this runs on the task that receives the body.
    fn drain(&mut self) -> io::Result<()> {
        self.drain_final()?;
        if self.buf.len() > self.limit() {
            self.flush_all()?;
        }
        Ok(())
    }

    /// The final bytes before the held entry: to the hash (unless an entry before them was
    /// written through) and to the file; the buffer keeps the held entry.
    fn drain_final(&mut self) -> io::Result<()> {
        let hold = self.hold();
        if hold > self.written {
            self.pair_bodies();
            self.hash_bodies_before(hold);
            let n = ((hold - self.written) as usize).min(self.buf.len());
            if self.hashed >= self.written && self.hashed < self.written + n as u64 {
                let from = (self.hashed - self.written) as usize;
                self.hasher.update(&self.buf[from..n]);
                self.hashed = self.written + n as u64;
            }
            let buf = std::mem::take(&mut self.buf);
            let result = self.write_at(&buf[..n], self.written);
            self.buf = buf;
            result?;
            self.buf.drain(..n);
            self.written += n as u64;
        }
        Ok(())
    }

    /// The whole buffer to the file (the held entry is then written through).
    fn flush_all(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.pair_bodies();
        self.hash_bodies_before(self.end());
        let buf = std::mem::take(&mut self.buf);
        let result = self.write_at(&buf, self.written);
        self.buf = buf;
        result?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Adds `bytes` at the archive's end without ever growing the buffer past its capacity:
    /// the final bytes leave first when room is short, a held entry that would outgrow the
    /// buffer is written through from here on, and a chunk of an entry being written through
    /// goes to the file straight from the caller's slice (no copy into the buffer).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.written <= self.hold() && self.buf.len() + bytes.len() > HOLD_BYTES + SLACK {
            self.drain_final()?;
            if self.buf.len() + bytes.len() > HOLD_BYTES {
                self.flush_all()?;
            }
        }
        if self.written > self.hold() && bytes.len() >= WRITE_THROUGH {
            self.flush_all()?;
            // Never in the buffer: the body's hash takes it now, on its own.
            if let Some(body) = self.marks.bodies().open.as_mut()
                && body.next == self.written
            {
                body.lane.update(bytes);
                body.next += bytes.len() as u64;
            }
            self.write_at(bytes, self.written)?;
            self.written += bytes.len() as u64;
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.limit() {
            self.drain()?;
        }
        Ok(())
    }

    /// Hashes what can be hashed side by side: the archive's final bytes not hashed yet with
    /// the bodies' bytes not hashed yet, both in the buffer, in archive order. Mostly a body
    /// meets its own bytes in the archive, once the next entry's start made them final.
    fn pair_bodies(&mut self) {
        let marks = Arc::clone(&self.marks);
        let mut bodies = marks.bodies();
        let end = self.end();
        loop {
            let hold = self.hold().min(end);
            if self.hashed < self.written || self.hashed >= hold {
                return;
            }
            let body = match bodies.done.front_mut() {
                Some(body) => body,
                None => match bodies.open.as_mut() {
                    Some(body) if body.next < end => body,
                    _ => return,
                },
            };
            let body_to = body.end.min(end);
            let n = (hold - self.hashed).min(body_to - body.next) as usize;
            let archive_from = (self.hashed - self.written) as usize;
            let body_from = (body.next - self.written) as usize;
            update_pair(
                &mut self.hasher,
                &self.buf[archive_from..archive_from + n],
                &mut body.lane,
                &self.buf[body_from..body_from + n],
            );
            self.hashed += n as u64;
            body.next += n as u64;
            if body.next == body.end {
                let body = bodies.done.pop_front().expect("a done body is complete");
                bodies.digests[body.index] = Some(body.lane.finalize_hex());
            }
        }
    }

    /// Hashes the bodies' bytes before `upto` not hashed yet, on their own: they are about to
    /// leave the buffer. A body complete then gets its digest.
    fn hash_bodies_before(&mut self, upto: u64) {
        let marks = Arc::clone(&self.marks);
        let mut bodies = marks.bodies();
        let upto = upto.min(self.end());
        while let Some(body) = bodies.done.front_mut() {
            if body.next >= upto {
                break;
            }
            let to = body.end.min(upto);
            debug_assert!(body.next >= self.written, "a body's bytes left unhashed");
            body.lane.update(
                &self.buf[(body.next - self.written) as usize..(to - self.written) as usize],
            );
            body.next = to;
            if body.next < body.end {
                break;
            }
            let body = bodies.done.pop_front().expect("checked above");
            bodies.digests[body.index] = Some(body.lane.finalize_hex());
        }
        if let Some(body) = bodies.open.as_mut()
            && body.next < upto
            && body.next >= self.written
        {
            body.lane.update(
                &self.buf[(body.next - self.written) as usize..(upto - self.written) as usize],
            );
            body.next = upto;
        }
    }

    /// Applies a [`Marks::drop_held_entry`]: the archive ends where the dropped entry started
    /// (where the zip writer moved its cursor back to), and so does the cursor.
    fn settle(&mut self) -> io::Result<()> {
        if !self.marks.truncate.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let pos = self.hold();
        if pos > self.end() {
            return Err(io::Error::other(
                "the archive writer dropped an entry past the archive's end",
            ));
        }
        self.pos = pos;
        if pos < self.hashed {
            return Err(io::Error::other(
                "the archive writer dropped bytes already hashed",
            ));
        }
        if pos >= self.written {
            self.buf.truncate((pos - self.written) as usize);
        } else {
            self.written = pos;
            self.buf.clear();
        }
        self.marks.end.store(self.end(), Ordering::Relaxed);
        Ok(())
    }

    /// Writes the rest to the file and trims it to the archive's length. Returns the file, its
    /// length and its sha256 (hex); the buffer goes back to the pool.
    pub(super) fn finish(mut self) -> io::Result<(File, u64, String)> {
        self.settle()?;
        let end = self.end();
        self.pair_bodies();
        self.hash_bodies_before(end);
        self.catch_up(self.written)?;
        let buf = std::mem::take(&mut self.buf);
        let from = (self.hashed - self.written) as usize;
        self.hasher.update(&buf[from..]);
        let result = self.write_at(&buf, self.written);
        give_back(buf);
        result?;
        if self.file_len > end {
            self.file.set_len(end)?;
        }
        let sha256 = std::mem::take(&mut self.hasher).finalize_hex();
        Ok((self.file, end, sha256))
    }
}

impl Write for Spool {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.settle()?;
        let mut bytes = bytes;
        let n = bytes.len();
        if self.pos < self.written {
            // A patch of a written-through entry's header: straight to the file.
            if self.pos < self.hashed {
                return Err(io::Error::other(
                    "the archive writer patched a byte already hashed",
                ));
            }
            let here = ((self.written - self.pos) as usize).min(bytes.len());
            self.write_at(&bytes[..here], self.pos)?;
            self.pos += here as u64;
            bytes = &bytes[here..];
        }
        if !bytes.is_empty() {
            let at = (self.pos - self.written) as usize;
            let overlap = (self.buf.len() - at).min(bytes.len());
            self.buf[at..at + overlap].copy_from_slice(&bytes[..overlap]);
            if overlap < bytes.len() {
                self.append(&bytes[overlap..])?;
            }
            self.pos += bytes.len() as u64;
        }
        self.marks.end.store(self.end(), Ordering::Relaxed);
        self.pair_bodies();
        Ok(n)
    }

    /// Completes the sha256 of every body received whole ([`Marks::take_digests`]); the bytes
    /// reach the file when they are final, and all of them in [`Spool::finish`].
    fn flush(&mut self) -> io::Result<()> {
        self.settle()?;
        self.pair_bodies();
        let end = self.end();
        self.hash_bodies_before(end);
        Ok(())
    }
}

impl Seek for Spool {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.settle()?;
        let end = self.end();
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => end.checked_add_signed(d),
        };
        match target {
            Some(n) if n <= end => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the archive",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn spool() -> (Spool, Arc<Marks>, tempfile::NamedTempFile) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let file = tmp.reopen().unwrap();
        let (s, marks) = Spool::new(file);
        (s, marks, tmp)
    }

    /// Writes a "header" of 8 bytes, a body of `len` bytes, then patches the header as the zip
    /// writer does; returns the bytes the archive must end up holding.
    fn entry(s: &mut Spool, marks: &Marks, len: usize, fill: u8, expect: &mut Vec<u8>) {
        entry_in(s, marks, len, fill, 16 * 1024 + 3, expect);
    }

    /// [`entry`] with the body arriving in chunks of `chunk` bytes.
    fn entry_in(
        s: &mut Spool,
        marks: &Marks,
        len: usize,
        fill: u8,
        chunk: usize,
        expect: &mut Vec<u8>,
    ) {
        let start = marks.end();
        s.write_all(&[0u8; 8]).unwrap();
        marks.hold_from(start);
        let body: Vec<u8> = (0..len).map(|i| fill ^ (i % 251) as u8).collect();
        for chunk in body.chunks(chunk) {
            s.write_all(chunk).unwrap();
        }
        let end = s.stream_position().unwrap();
        s.seek(SeekFrom::Start(start + 2)).unwrap();
        s.write_all(&(len as u32).to_le_bytes()).unwrap();
        s.seek(SeekFrom::Start(end)).unwrap();
        let mut header = [0u8; 8];
        header[2..6].copy_from_slice(&(len as u32).to_le_bytes());
        expect.extend_from_slice(&header);
        expect.extend_from_slice(&body);
    }

    #[test]
    fn the_hash_and_the_file_hold_the_patched_bytes_whatever_the_entry_sizes() {
        // Chunks smaller than the slack, and chunks larger than it (a connection's reads of a
        // large body are a few hundred KiB), which make room before they are added.
        for chunk in [16 * 1024 + 3, 300 * 1024 + 5, 3 * HOLD_BYTES] {
            for sizes in [
                vec![10, 20, 30],
                vec![HOLD_BYTES + 1, 5, 3 * HOLD_BYTES],
                vec![100, 2 * HOLD_BYTES + 17, HOLD_BYTES - 8, HOLD_BYTES, 1],
                vec![300 * 1024, 300 * 1024, 200 * 1024, 400 * 1024, 10],
            ] {
                let (mut s, marks, tmp) = spool();
                let capacity = s.buf.capacity();
                let mut expect = Vec::new();
                for (i, len) in sizes.iter().enumerate() {
                    entry_in(&mut s, &marks, *len, i as u8 + 1, chunk, &mut expect);
                    assert_eq!(
                        s.buf.capacity(),
                        capacity,
                        "{sizes:?} in chunks of {chunk}: the buffer grew"
                    );
                }
                let (_, len, sha256) = s.finish().unwrap();
                let on_disk = std::fs::read(tmp.path()).unwrap();
                assert_eq!(len, expect.len() as u64, "{sizes:?} in chunks of {chunk}");
                assert!(
                    on_disk == expect,
                    "{sizes:?} in chunks of {chunk}: the file differs"
                );
                assert_eq!(
                    sha256,
                    hex::encode(Sha256::digest(&expect)),
                    "{sizes:?} in chunks of {chunk}"
                );
            }
        }
    }

    #[test]
    fn an_entry_longer_than_the_buffer_reaches_the_file_as_it_arrives() {
        let (mut s, marks, tmp) = spool();
        s.write_all(&[0u8; 8]).unwrap();
        marks.hold_from(0);
        let chunk = vec![7u8; 16 * 1024];
        let mut sent = 8;
        while sent < 4 * HOLD_BYTES {
            s.write_all(&chunk).unwrap();
            sent += chunk.len();
            let on_disk = std::fs::metadata(tmp.path()).unwrap().len() as usize;
            if sent > HOLD_BYTES + chunk.len() {
                assert!(
                    on_disk + WRITE_THROUGH + chunk.len() >= sent,
                    "{on_disk} of {sent} bytes on disk"
                );
            }
        }
    }

    #[test]
    fn an_entry_dropped_midway_leaves_no_byte_in_the_file_or_the_hash() {
        for dropped in [100, 3 * HOLD_BYTES] {
            let (mut s, marks, tmp) = spool();
            let mut expect = Vec::new();
            entry(&mut s, &marks, 50, 1, &mut expect);
            let start = marks.end();
            s.write_all(&[0u8; 8]).unwrap();
            marks.hold_from(start);
            s.write_all(&vec![9u8; dropped]).unwrap();
            s.seek(SeekFrom::Start(start)).unwrap();
            marks.drop_held_entry();
            entry(&mut s, &marks, 70, 2, &mut expect);
            let (_, len, sha256) = s.finish().unwrap();
            let on_disk = std::fs::read(tmp.path()).unwrap();
            assert_eq!(len, expect.len() as u64, "{dropped}");
            assert!(on_disk == expect, "{dropped}: the file differs");
            assert_eq!(sha256, hex::encode(Sha256::digest(&expect)), "{dropped}");
        }
    }
}
