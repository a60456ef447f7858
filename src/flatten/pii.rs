//! PII profiles of the transaction tables (`[output] pii`): which documented columns are direct
//! identifiers (names, ID and card numbers, social-security and account numbers, addresses, dates
//! of birth), and what each profile makes of them. Pure, like the rest of `flatten`: the key is
//! handed in, never read here.
//!
//! - `full`: the API's values, as always.
//! - `pseudonymised`: each direct identifier becomes `hmac-sha256:` and the hex HMAC-SHA-256 of
//!   its text under the job's key (same text, same token, in every run and table that uses the
//!   key), in a text column; `unmapped_json` loses the values at those paths.
//! - `minimal`: the direct-identifier columns are not in the table at all; `unmapped_json`
//!   loses the values at those paths too.
//!
//! The schema of each profile is fixed ([`table_columns_for`]) and committed
//! (`tests/schemas/{profile}/`). Undocumented fields (the rest of `unmapped_json`) are kept in
//! every profile: the guide does not say what they hold.

use std::fmt;
use std::sync::LazyLock;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Cell, Column, ColumnType, Row, UNMAPPED_JSON, table_columns};
use crate::Kind;

/// `[output] pii`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pii {
    /// Every value as the API sent it.
    #[default]
    Full,
    /// Direct identifiers replaced by keyed tokens.
    Pseudonymised,
    /// Direct identifiers dropped.
    Minimal,
}

impl Pii {
    /// Every profile, in the order of the settings' documentation.
    pub const ALL: [Pii; 3] = [Pii::Full, Pii::Pseudonymised, Pii::Minimal];

    /// The setting's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Pii::Full => "full",
            Pii::Pseudonymised => "pseudonymised",
            Pii::Minimal => "minimal",
        }
    }
}

impl fmt::Display for Pii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Pii {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pii::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown profile {s:?}: full, pseudonymised or minimal"))
    }
}

/// The last keys of documented paths that are direct identifiers wherever they appear.
const IDENTIFIER_KEYS: &[&str] = &[
    "firstName",
    "lastName",
    "dob",
    "number",
    "personalNumber",
    "optionalData1",
    "optionalData2",
    "ssn",
    "pan",
    "accountNumber",
    // The address of a Document Verification's embedded extracted data (no `address` object).
    "line1",
    "line2",
    "postalCode",
    "city",
    "subdivision",
];

/// Whether `column` holds a direct identifier: a documented field named in the list above, or
/// any field of an `address` object.
pub fn is_direct_identifier(column: &Column) -> bool {
    let Some(path) = &column.doc_path else {
        return false;
    };
    let last = path.rsplit('.').next().unwrap_or(path);
    IDENTIFIER_KEYS.contains(&last) || path.split('.').any(|k| k == "address")
}

fn profile_table(kind: Kind, pii: Pii) -> Vec<Column> {
    table_columns(kind)
        .iter()
        .filter(|c| pii != Pii::Minimal || !is_direct_identifier(c))
        .map(|c| {
            let mut c = c.clone();
            if pii == Pii::Pseudonymised && is_direct_identifier(&c) {
                c.ty = ColumnType::Utf8;
            }
            c
        })
        .collect()
}

static PROFILE_COLUMNS: LazyLock<Vec<Vec<Column>>> = LazyLock::new(|| {
    Pii::ALL
        .into_iter()
        .flat_map(|pii| {
            Kind::ALL
                .into_iter()
                .map(move |kind| profile_table(kind, pii))
        })
        .collect()
});

/// The columns of the table of `kind` under profile `pii` (for `full`, [`table_columns`]).
pub fn table_columns_for(kind: Kind, pii: Pii) -> &'static [Column] {
    let p = Pii::ALL.iter().position(|x| *x == pii).expect("a profile");
    let k = Kind::ALL.iter().position(|x| *x == kind).expect("a kind");
    &PROFILE_COLUMNS[p * Kind::ALL.len() + k]
}

/// The keyed HMAC-SHA-256 of `pseudonymised`. `Debug` never shows the key.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: Vec<u8>,
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymiser(<key>)")
    }
}

impl Pseudonymiser {
    /// The shortest key accepted.
    pub const MIN_KEY_LEN: usize = 16;

    /// A pseudonymiser under `key`; `None` when it is shorter than [`Self::MIN_KEY_LEN`].
    pub fn new(key: &[u8]) -> Option<Self> {
        (key.len() >= Self::MIN_KEY_LEN).then(|| Pseudonymiser { key: key.to_vec() })
    }

    /// `hmac-sha256:` and the hex HMAC-SHA-256 of `text`.
    pub fn token(&self, text: &str) -> String {
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(text.as_bytes());
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// The row of profile `pii` for a `full` row of `kind` ([`super::flatten`]'s). `pseudonymiser`
/// is required for `pseudonymised`: without it, the direct identifiers are NULL (what `verify`
/// without the key compares them as: not at all).
pub fn apply(kind: Kind, pii: Pii, pseudonymiser: Option<&Pseudonymiser>, row: Row) -> Row {
    if pii == Pii::Full {
        return row;
    }
    let columns = table_columns(kind);
    let mut out = Vec::with_capacity(row.0.len());
    for (column, cell) in columns.iter().zip(row.0) {
        if column.name == UNMAPPED_JSON {
            out.push(strip_identifiers(kind, cell));
        } else if !is_direct_identifier(column) {
            out.push(cell);
        } else if pii == Pii::Pseudonymised {
            out.push(match (&cell, pseudonymiser) {
                (Cell::Null, _) | (_, None) => Cell::Null,
                (other, Some(p)) => Cell::Text(p.token(&crate::output::tables::csv_text(other))),
            });
        }
    }
    Row(out)
}

/// `unmapped_json` without the values at the documented paths of direct identifiers (a value
/// its typed column could not hold lands there).
fn strip_identifiers(kind: Kind, cell: Cell) -> Cell {
    let Cell::Text(text) = cell else {
        return cell;
    };
    let Ok(mut value) = serde_json::from_str::<Value>(&text) else {
        return Cell::Text(text);
    };
    for column in table_columns(kind)
        .iter()
        .filter(|c| is_direct_identifier(c))
    {
        let path = column.doc_path.as_deref().unwrap_or_default();
        remove_path(&mut value, &path.split('.').collect::<Vec<_>>());
    }
    match value {
        Value::Object(ref m) if m.is_empty() => Cell::Null,
        other => Cell::Text(other.to_string()),
    }
}

/// Removes `path` from `value`; objects left empty by it go too.
fn remove_path(value: &mut Value, path: &[&str]) {
    let Value::Object(map) = value else { return };
    match path {
        [] => {}
        [last] => {
            map.shift_remove(*last);
        }
        [first, rest @ ..] => {
            if let Some(child) = map.get_mut(*first) {
                remove_path(child, rest);
                if matches!(child, Value::Object(m) if m.is_empty()) {
                    map.shift_remove(*first);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_identifiers_are_the_issue_list_and_nothing_else() {
        let ids: Vec<&str> = table_columns(Kind::Netverify)
            .iter()
            .filter(|c| is_direct_identifier(c))
            .map(|c| c.name.as_str())
            .collect();
        for name in [
            "document_first_name",
            "document_last_name",
            "document_dob",
            "document_number",
            "document_personal_number",
            "document_address_city",
            "document_address_line1",
        ] {
            assert!(ids.contains(&name), "{name} in {ids:?}");
        }
        for name in [
            "document_type",
            "document_issuing_country",
            "document_expiry",
        ] {
            assert!(!ids.contains(&name), "{name}");
        }
        let doc: Vec<&str> = table_columns(Kind::Document)
            .iter()
            .filter(|c| is_direct_identifier(c))
            .map(|c| c.name.as_str())
            .collect();
        for name in [
            "document_extracted_data_ssn",
            "document_extracted_data_extracted_data_pan",
            "document_extracted_data_extracted_data_account_number",
            "document_extracted_data_extracted_data_line1",
        ] {
            assert!(doc.contains(&name), "{name} in {doc:?}");
        }
        assert!(
            table_columns(Kind::Authentication)
                .iter()
                .all(|c| !is_direct_identifier(c))
        );
    }

    #[test]
    fn tokens_are_keyed_and_stable() {
        let a = Pseudonymiser::new(b"0123456789abcdef").unwrap();
        let b = Pseudonymiser::new(b"0123456789abcdeg").unwrap();
        assert_eq!(a.token("ADA"), a.token("ADA"));
        assert_ne!(a.token("ADA"), b.token("ADA"));
        assert_ne!(a.token("ADA"), a.token("ADB"));
        assert!(a.token("ADA").starts_with("hmac-sha256:"));
        assert_eq!(a.token("ADA").len(), "hmac-sha256:".len() + 64);
        assert!(Pseudonymiser::new(b"short").is_none());
        assert!(!format!("{a:?}").contains("0123"));
    }
}
