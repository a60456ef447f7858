//! Run ids: `YYYYMMDDTHHMMSSmmmZ[-sKKofNN]-xxxx`. They sort by start time (to the millisecond,
//! so "the latest commit" is the run that started last), are unique across
//! concurrent shards (a random suffix, and the run's lock file is created exclusively, so two
//! runs never hold one id), and are safe in any file name or object key.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::job::Shard;

/// The id of one run: names its parts, its commit and its lock.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(String);

impl RunId {
    /// A new id for a run that starts at `start`, optionally of `shard`.
    pub fn new(start: DateTime<Utc>, shard: Option<&Shard>) -> Self {
        let suffix: u16 = rand::random();
        Self::with_suffix(start, shard, suffix)
    }

    /// [`RunId::new`] with a chosen suffix (tests).
    pub fn with_suffix(start: DateTime<Utc>, shard: Option<&Shard>, suffix: u16) -> Self {
        let mut id = start.format("%Y%m%dT%H%M%S%3fZ").to_string();
        if let Some(s) = shard {
            id.push_str(&format!("-s{:02}of{:02}", s.index, s.count));
        }
        id.push_str(&format!("-{suffix:04x}"));
        RunId(id)
    }

    /// Accepts a run id read back from a file name or a commit.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() >= 21
            && text.len() <= 64
            && text.as_bytes()[..8].iter().all(u8::is_ascii_digit)
            && text.as_bytes()[8] == b'T'
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then(|| RunId(text.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_start_and_name_their_shard() {
        let t = Utc.with_ymd_and_hms(2026, 12, 2, 7, 45, 9).unwrap()
            + chrono::Duration::milliseconds(7);
        let shard = Shard {
            index: 3,
            count: 16,
        };
        let a = RunId::with_suffix(t, Some(&shard), 0x7f2a);
        assert_eq!(a.as_str(), "20261202T074509007Z-s03of16-7f2a");
        let b = RunId::with_suffix(t + chrono::Duration::milliseconds(1), None, 0);
        assert_eq!(b.as_str(), "20261202T074509008Z-0000");
        assert!(a < b);
        assert_eq!(RunId::parse(a.as_str()), Some(a));
        assert_eq!(RunId::parse("../etc/passwd"), None);
        assert_eq!(RunId::parse("20261202T074510Z-0000.json"), None);
    }
}
