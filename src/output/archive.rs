//! PLACEHOLDER replaced on merge by the archive branch (types only, so fetch compiles).
#![allow(missing_docs, dead_code)]
use bytes::Bytes;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Status,
    Data,
    Images,
    Pages,
    Authentication,
    Image { classifier: String },
    Liveness { number: u32 },
    Page { number: u32 },
    OriginalPdf,
}

#[derive(Debug, Clone)]
pub struct ArchiveEntry {
    pub kind: EntryKind,
    pub body: Bytes,
    pub content_type: String,
    pub api_path: String,
    pub http_status: u16,
    pub retrieved_at: DateTime<Utc>,
}
