//! The documented response shape of each API family, written once as a tree.
//!
//! Part of the pure `flatten` stage: both the table columns and the JSON → row walk are
//! derived from these trees, so a column can never exist without its extraction or the
//! other way round. Nothing here does I/O or looks at data.

/// The storage type of one documented leaf field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    /// Free text (also enumerations and numbers the guide types as string).
    Utf8,
    /// Typed `Boolean` in the guide.
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// `YYYY-MM-DDThh:mm:ss.SSSZ`.
    Timestamp,
    /// A JSON array of strings (URLs).
    ListUtf8,
    /// A JSON array of objects whose documented keys are listed here (all strings).
    ListStruct(&'static [&'static str]),
}

/// One documented key of a JSON object.
#[derive(Debug)]
pub(crate) enum Node {
    /// A value stored in one column.
    Leaf { key: &'static str, ty: Leaf },
    /// A documented object whose documented keys become columns. `embedded` marks the
    /// Document Verification nested `extractedData`, which may arrive as a JSON string
    /// holding the object instead of the object itself.
    Object {
        key: &'static str,
        embedded: bool,
        children: &'static [Node],
    },
}

impl Node {
    pub(crate) fn key(&self) -> &'static str {
        match self {
            Node::Leaf { key, .. } | Node::Object { key, .. } => key,
        }
    }
}

const fn text(key: &'static str) -> Node {
    Node::Leaf {
        key,
        ty: Leaf::Utf8,
    }
}

const fn date(key: &'static str) -> Node {
    Node::Leaf {
        key,
        ty: Leaf::Date,
    }
}

const fn timestamp(key: &'static str) -> Node {
    Node::Leaf {
        key,
        ty: Leaf::Timestamp,
    }
}

const fn object(key: &'static str, children: &'static [Node]) -> Node {
    Node::Object {
        key,
        embedded: false,
        children,
    }
}

/// The guide's US, EU and Raw address formats share one set of columns: the union of
/// their keys, in the order US, then the keys EU adds, then the keys Raw adds.
const ADDRESS: &[Node] = &[
    // US format
    text("city"),
    text("stateCode"),
    text("streetName"),
    text("streetSuffix"),
    text("streetDirection"),
    text("streetNumber"),
    text("unitDesignator"),
    text("unitNumber"),
    text("zip"),
    text("zipExtension"),
    text("country"),
    // EU format adds
    text("province"),
    text("unitDetails"),
    text("postalCode"),
    // Raw format adds
    text("line1"),
    text("line2"),
    text("line3"),
    text("line4"),
    text("line5"),
];

/// Netverify `/api/netverify/v2/scans/{ref}/data`.
pub(crate) const NETVERIFY: &[Node] = &[
    timestamp("timestamp"),
    text("scanReference"),
    object(
        "document",
        &[
            text("status"),
            text("type"),
            text("idSubtype"),
            text("issuingCountry"),
            text("firstName"),
            text("lastName"),
            date("dob"),
            date("expiry"),
            date("issuingDate"),
            text("number"),
            text("usState"),
            text("personalNumber"),
            text("optionalData1"),
            text("optionalData2"),
            object("address", ADDRESS),
            text("issuingAuthority"),
            text("issuingPlace"),
        ],
    ),
    object(
        "transaction",
        &[
            text("status"),
            text("source"),
            timestamp("date"),
            text("clientIp"),
            text("customerId"),
            text("merchantScanReference"),
            text("merchantReportingCriteria"),
        ],
    ),
    object(
        "verification",
        &[
            text("mrzCheck"),
            object(
                "rejectReason",
                &[
                    text("rejectReasonCode"),
                    text("rejectReasonDescription"),
                    Node::Leaf {
                        key: "rejectReasonDetails",
                        ty: Leaf::ListStruct(&["detailsCode", "detailsDescription"]),
                    },
                ],
            ),
            object(
                "identityVerification",
                &[
                    text("similarity"),
                    text("validity"),
                    text("reason"),
                    text("handwrittenNoteMatches"),
                ],
            ),
        ],
    ),
];

/// Document Verification `/api/netverify/v2/documents/{ref}/data` (retrieval host).
pub(crate) const DOCUMENT: &[Node] = &[
    timestamp("timestamp"),
    text("scanReference"),
    object(
        "document",
        &[
            text("status"),
            text("type"),
            text("country"),
            text("originalDocument"),
            text("customDocumentCode"),
            object(
                "extractedData",
                &[
                    Node::Leaf {
                        key: "signatureAvailable",
                        ty: Leaf::Boolean,
                    },
                    text("ssn"),
                    text("firstName"),
                    text("lastName"),
                    Node::Object {
                        key: "extractedData",
                        embedded: true,
                        children: &[
                            text("addressFormat"),
                            text("line1"),
                            text("line2"),
                            text("countryCode"),
                            text("postalCode"),
                            text("city"),
                            text("subdivision"),
                            text("firstName"),
                            text("lastName"),
                            text("ssn"),
                            // The guide types it as string ("true"/"false"), unlike
                            // the outer signatureAvailable: kept as text.
                            text("signaturePresent"),
                            text("accountNumber"),
                            text("swiftCode"),
                            date("issueDate"),
                            // MM/YY, not a calendar date.
                            text("expiryDate"),
                            text("pan"),
                        ],
                    },
                ],
            ),
        ],
    ),
    object(
        "transaction",
        &[
            text("status"),
            text("source"),
            text("merchantReportingCriteria"),
            text("merchantScanReference"),
            text("customerId"),
        ],
    ),
];

/// Authentication `/api/netverify/v2/authentications/{ref}` (the details response).
pub(crate) const AUTHENTICATION: &[Node] = &[
    text("transactionReference"),
    text("transactionResult"),
    timestamp("transactionDate"),
    text("scanSource"),
    Node::Leaf {
        key: "images",
        ty: Leaf::ListStruct(&["classifier", "href"]),
    },
    Node::Leaf {
        key: "livenessImages",
        ty: Leaf::ListUtf8,
    },
];

/// `camelCase` → `snake_case`; digits stay attached (`optionalData1` → `optional_data1`).
pub(crate) fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_follows_the_spec_examples() {
        assert_eq!(snake_case("firstName"), "first_name");
        assert_eq!(snake_case("optionalData1"), "optional_data1");
        assert_eq!(snake_case("idSubtype"), "id_subtype");
        assert_eq!(snake_case("rejectReasonCode"), "reject_reason_code");
        assert_eq!(snake_case("dob"), "dob");
        assert_eq!(snake_case("line1"), "line1");
    }
}
