//! The simulator's request log: one [`RequestRecord`] per request, kept in memory and
//! optionally appended to a JSONL file that tests and benchmarks read.
//!
//! It records no header values, so credentials never reach it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One request as the simulator saw and answered it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// Arrival time, RFC 3339 in UTC with microseconds (`2024-01-01T00:00:00.123456Z`).
    pub time: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Query string without `?`, if any.
    pub query: Option<String>,
    /// Status sent; `0` when the connection was reset without an answer.
    pub status: u16,
    /// Body bytes actually sent (fewer than promised for a truncated body).
    pub bytes: u64,
}

/// In-memory log plus the optional JSONL file.
#[derive(Debug)]
pub(crate) struct RequestLog {
    memory: Option<Mutex<Vec<RequestRecord>>>,
    file: Option<Mutex<BufWriter<File>>>,
}

impl RequestLog {
    /// Creates (truncates) the JSONL file when a path is given.
    pub(crate) fn new(path: Option<&Path>, keep_in_memory: bool) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(Mutex::new(BufWriter::new(File::create(p)?))),
            None => None,
        };
        Ok(RequestLog {
            memory: keep_in_memory.then(|| Mutex::new(Vec::new())),
            file,
        })
    }

    /// Records one request. A line is small and flushed at once, so the file is complete
    /// whenever a reader looks, and the lock is held only for one short write.
    pub(crate) fn record(&self, rec: RequestRecord) {
        if let Some(file) = &self.file
            && let Ok(line) = serde_json::to_string(&rec)
        {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            // A failing log must not fail the simulated API; the record stays in memory.
            let _ = writeln!(f, "{line}").and_then(|_| f.flush());
        }
        if let Some(mem) = &self.memory {
            mem.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
        }
    }

    /// Everything recorded so far (empty when memory logging is off).
    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        match &self.memory {
            Some(mem) => mem.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            None => Vec::new(),
        }
    }
}

/// Reads a JSONL request log written by the simulator.
pub fn read_request_log(path: &Path) -> std::io::Result<Vec<RequestRecord>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

/// The current time as the log writes it.
pub(crate) fn now_micros() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_memory_hold_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let log = RequestLog::new(Some(&path), true).unwrap();
        let rec = RequestRecord {
            time: now_micros(),
            method: "GET".into(),
            path: "/api/netverify/v2/scans/x".into(),
            query: Some("maskhint=unmasked".into()),
            status: 429,
            bytes: 12,
        };
        log.record(rec.clone());
        log.record(RequestRecord {
            status: 200,
            ..rec.clone()
        });
        let from_file = read_request_log(&path).unwrap();
        assert_eq!(from_file, log.snapshot());
        assert_eq!(from_file[0], rec);
        // Microseconds: 6 fraction digits, then Z.
        let frac = rec.time.rsplit('.').next().unwrap();
        assert_eq!(frac.len(), 7, "{}", rec.time);
        assert!(frac.ends_with('Z'));
    }
}
