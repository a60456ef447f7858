//! The vocabulary of a failed reference: which step failed ([`Stage`]) and why ([`ErrorCode`]),
//! spelled exactly as `failures.csv` and the report write them. Shared by every stage; holds no
//! behaviour beyond naming.
//!
//! Both types keep a word they do not know as `Other`: `failures.csv` is read back and rewritten
//! by every later run, and a row written by a newer version (or by hand) must survive that
//! byte for byte rather than stop the run or silently vanish from the follow-ups. This version
//! never produces `Other` itself.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// Why a reference was not exported: one of SPEC's `failures.csv` error codes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// `INVALID_REFERENCE`: not 1 to 36 characters of `[A-Za-z0-9-]`; never sent.
    InvalidReference,
    /// `NOT_FOUND`: 404, usually the retention period.
    NotFound,
    /// `PENDING`: still not final after the schedule's status calls.
    Pending,
    /// `FOREIGN_URL`: an href (or redirect) off the configured origin; nothing was sent there.
    ForeignUrl,
    /// `TOO_LARGE`: a body over `max_file_bytes`.
    TooLarge,
    /// `HTTP_ERROR`: any other status, after retries.
    HttpError,
    /// `NETWORK`: timeouts, resets, truncated bodies, after retries.
    Network,
    /// `BAD_RESPONSE`: a body that does not parse or lacks what the flow needs.
    BadResponse,
    /// A word this version does not know, read from an existing `failures.csv`.
    Other(String),
}

impl ErrorCode {
    /// Every code this version writes, in SPEC order.
    pub const KNOWN: [ErrorCode; 8] = [
        ErrorCode::InvalidReference,
        ErrorCode::NotFound,
        ErrorCode::Pending,
        ErrorCode::ForeignUrl,
        ErrorCode::TooLarge,
        ErrorCode::HttpError,
        ErrorCode::Network,
        ErrorCode::BadResponse,
    ];

    /// The word in `failures.csv`.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidReference => "INVALID_REFERENCE",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Pending => "PENDING",
            ErrorCode::ForeignUrl => "FOREIGN_URL",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::HttpError => "HTTP_ERROR",
            ErrorCode::Network => "NETWORK",
            ErrorCode::BadResponse => "BAD_RESPONSE",
            ErrorCode::Other(word) => word,
        }
    }
}

/// The step of a reference's flow that failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// `input`: the reference was refused before any request.
    Input,
    /// `status`: a status call (Authentication: its details).
    Status,
    /// `data`: the `/data` call.
    Data,
    /// `images`: the Netverify image list, or an entry of any image list.
    Images,
    /// `image`: one document image (`front`, `back`, `face`, …).
    Image,
    /// `liveness`: one liveness image.
    Liveness,
    /// `pages`: the Document Verification page list.
    Pages,
    /// `page`: one Document Verification page.
    Page,
    /// `original`: the original PDF of Document Verification.
    Original,
    /// `archive`: the fetched files could not be archived as given.
    Archive,
    /// A word this version does not know, read from an existing `failures.csv`.
    Other(String),
}

impl Stage {
    /// Every stage this version writes.
    pub const KNOWN: [Stage; 10] = [
        Stage::Input,
        Stage::Status,
        Stage::Data,
        Stage::Images,
        Stage::Image,
        Stage::Liveness,
        Stage::Pages,
        Stage::Page,
        Stage::Original,
        Stage::Archive,
    ];

    /// The word in `failures.csv`.
    pub fn as_str(&self) -> &str {
        match self {
            Stage::Input => "input",
            Stage::Status => "status",
            Stage::Data => "data",
            Stage::Images => "images",
            Stage::Image => "image",
            Stage::Liveness => "liveness",
            Stage::Pages => "pages",
            Stage::Page => "page",
            Stage::Original => "original",
            Stage::Archive => "archive",
            Stage::Other(word) => word,
        }
    }
}

/// Both enums: `Display` and `FromStr` are the `failures.csv` word, exactly (case included);
/// serde goes through the same word.
macro_rules! word_enum {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $t {
            /// The value a `failures.csv` word stands for; a word this version does not know is
            /// kept, verbatim, as `Other`.
            pub fn from_word(word: &str) -> Self {
                $t::KNOWN
                    .into_iter()
                    .find(|k| k.as_str() == word)
                    .unwrap_or_else(|| $t::Other(word.to_string()))
            }

            /// Whether this version writes this word itself (not `Other`).
            pub fn is_known(&self) -> bool {
                !matches!(self, $t::Other(_))
            }
        }

        impl FromStr for $t {
            type Err = Infallible;
            /// Never fails: see [`Self::from_word`].
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok($t::from_word(s))
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = std::borrow::Cow::<str>::deserialize(d)?;
                Ok($t::from_word(&word))
            }
        }
    };
}

word_enum!(ErrorCode);
word_enum!(Stage);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_specs_words_and_round_trip() {
        let words: Vec<String> = ErrorCode::KNOWN.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            words,
            [
                "INVALID_REFERENCE",
                "NOT_FOUND",
                "PENDING",
                "FOREIGN_URL",
                "TOO_LARGE",
                "HTTP_ERROR",
                "NETWORK",
                "BAD_RESPONSE"
            ]
        );
        for code in ErrorCode::KNOWN {
            assert_eq!(code.to_string().parse::<ErrorCode>().unwrap(), code);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn stages_are_the_words_failures_csv_has_always_had() {
        let words: Vec<&str> = Stage::KNOWN.iter().map(Stage::as_str).collect();
        assert_eq!(
            words,
            [
                "input", "status", "data", "images", "image", "liveness", "pages", "page",
                "original", "archive"
            ]
        );
        for stage in Stage::KNOWN {
            assert_eq!(stage.to_string().parse::<Stage>().unwrap(), stage);
            let json = serde_json::to_string(&stage).unwrap();
            assert_eq!(serde_json::from_str::<Stage>(&json).unwrap(), stage);
        }
    }

    #[test]
    fn unknown_words_are_kept_verbatim_not_guessed() {
        for word in ["DENIED", "pending", "", " PENDING"] {
            let code: ErrorCode = word.parse().unwrap();
            assert_eq!(code, ErrorCode::Other(word.to_string()));
            assert!(!code.is_known());
            assert_eq!(code.to_string(), word);
        }
        let stage: Stage = "Status".parse().unwrap();
        assert_eq!(stage, Stage::Other("Status".into()));
        assert_eq!(
            serde_json::from_str::<Stage>("\"thumbnail\"").unwrap(),
            Stage::Other("thumbnail".into())
        );
    }
}
