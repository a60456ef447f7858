//! The three API families a reference can belong to. Shared vocabulary of every
//! stage; holds no behaviour beyond naming (each kind's paths, states and requests are in
//! [`crate::api::endpoints`]).

use std::fmt;
use std::str::FromStr;

/// Which Retrieval API family a transaction reference belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Netverify scans: `/api/netverify/v2/scans/{ref}`.
    Netverify,
    /// Document Verification: `/api/netverify/v2/documents/{ref}` on the retrieval host.
    Document,
    /// Authentication: `/api/netverify/v2/authentications/{ref}`.
    Authentication,
}

impl Kind {
    /// Every kind, in the order tables and reports list them.
    pub const ALL: [Kind; 3] = [Kind::Netverify, Kind::Document, Kind::Authentication];

    /// The name used in job files, input CSVs, `failures.csv` and `files.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Netverify => "netverify",
            Kind::Document => "document",
            Kind::Authentication => "authentication",
        }
    }

    /// The table file stem (`netverify`, `documents`, `authentications`).
    pub fn table_name(self) -> &'static str {
        match self {
            Kind::Netverify => "netverify",
            Kind::Document => "documents",
            Kind::Authentication => "authentications",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of `netverify`, `document`, `authentication`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind {0:?}: expected netverify, document or authentication")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = s.trim();
        let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(word));
        if is(&["netverify", "scan", "scans"]) {
            Ok(Kind::Netverify)
        } else if is(&["document", "documents", "dv"]) {
            Ok(Kind::Document)
        } else if is(&["authentication", "authentications"]) {
            Ok(Kind::Authentication)
        } else {
            Err(UnknownKind(s.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        }
        assert!("bogus".parse::<Kind>().is_err());
    }
}
