//! The endpoint table: for each [`Kind`], the API family, the paths the flow builds, which status
//! words are final and which are polled, and what is fetched once the status is final, under
//! which `[fetch]` switch. Pure data; sends nothing.
//!
//! The flow ([`crate::fetch`]) walks this table and the request budget ([`crate::plan`]) sums it,
//! so the two cannot disagree about what a reference costs. The simulator and the benchmark
//! harness keep their own copies of the paths on purpose: they are independent checks of this
//! table, and must not read it.
//!
//! Source: the Netverify Retrieval API guide and SPEC "What is fetched". Document Verification's
//! status lists only `DONE` and `FAILED` ("Possible states: • DONE • FAILED", where Netverify's
//! lists `PENDING` too), so a Document Verification status is final on the first call: it is
//! never polled, and any other word is a bad response.

use serde_json::Value;

use super::client::Family;
use crate::Kind;
use crate::outcome::Stage;

/// Every path of the Retrieval API starts here.
pub const API_ROOT: &str = "/api/netverify/v2";
/// `Accept` of JSON responses.
pub const ACCEPT_JSON: &str = "application/json";
/// `Accept` of images and pages.
pub const ACCEPT_IMAGE: &str = "image/jpeg, image/png";
/// `Accept` of the original PDF.
pub const ACCEPT_PDF: &str = "application/pdf";

/// The query that asks for an unmasked Document Verification page.
pub const UNMASKED_QUERY: (&str, &str) = ("maskhint", "unmasked");

/// The guide's sample liveness sequence has 7 images; the budget assumes no more.
pub const MAX_LIVENESS_IMAGES: u64 = 7;
/// Netverify document images: front, back, face.
pub const MAX_NETVERIFY_IMAGES: u64 = 3;
/// Document Verification pages: the guide's samples have 1 (credit card) or 2 (bank
/// statement); the budget assumes no more.
pub const MAX_DOCUMENT_PAGES: u64 = 2;

/// One kind of request: how it is labelled, what it asks for, and what fails when it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The label in request statistics and `report.json`, e.g. `scans/{ref}/data`.
    pub label: &'static str,
    /// The `failures.csv` stage when this request fails.
    pub stage: Stage,
    /// The `Accept` header.
    pub accept: &'static str,
}

impl Endpoint {
    /// Whether this is a status call: the only request where 401/403 means the credentials
    /// were refused (fatal for the run) rather than that one file is not available.
    pub fn is_status_call(&self) -> bool {
        self.stage == Stage::Status
    }
}

/// The `[fetch]` switches, as the flow and the budget both read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    /// Document images and Document Verification pages.
    pub images: bool,
    /// Liveness images of Netverify and Authentication.
    pub liveness_images: bool,
    /// The original PDF of Document Verification.
    pub original_documents: bool,
    /// Pages asked for with `maskhint=unmasked`, masked again after a 403.
    pub unmasked_card_images: bool,
}

/// Which switches a step needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Always fetched.
    Always,
    /// `images`.
    Images,
    /// `liveness_images`.
    LivenessImages,
    /// `images` or `liveness_images` (the Netverify image list holds both).
    ImagesOrLiveness,
    /// `images` and `unmasked_card_images`.
    UnmaskedPages,
    /// `original_documents`.
    OriginalDocuments,
}

impl Needs {
    /// Whether the switches turn this step on.
    pub fn on(self, s: &Switches) -> bool {
        match self {
            Needs::Always => true,
            Needs::Images => s.images,
            Needs::LivenessImages => s.liveness_images,
            Needs::ImagesOrLiveness => s.images || s.liveness_images,
            Needs::UnmaskedPages => s.images && s.unmasked_card_images,
            Needs::OriginalDocuments => s.original_documents,
        }
    }
}

/// What a step fetches, so the flow can ask the table for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `/data`, once.
    Data,
    /// The Netverify image list, `/images`, once.
    ImageList,
    /// The Document Verification page list, `/pages`, once.
    PageList,
    /// Every `images` href (of the image list, or of the Authentication details).
    Image,
    /// Every `livenessImages` href.
    Liveness,
    /// Every page href, masked.
    Page,
    /// Every page href with `maskhint=unmasked` first; a 403 costs one more request, the masked
    /// page, so the budget counts only those extra requests here.
    UnmaskedPage,
    /// The `originalDocument` href of `/data`, when present.
    Original,
}

/// One step of a kind's flow after the final status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it fetches.
    pub role: Role,
    /// Its requests.
    pub endpoint: Endpoint,
    /// The path after the status path (`/data`) for requests the flow builds; `None` for hrefs
    /// taken from a response.
    pub suffix: Option<&'static str>,
    /// The switches it needs.
    pub needs: Needs,
    /// Requests per reference: the fewest and the most (the guide's samples).
    pub requests: (u64, u64),
    /// How the budget names it.
    pub what: &'static str,
}

/// The whole flow of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindFlow {
    /// The kind.
    pub kind: Kind,
    /// The base URL its requests go to.
    pub family: Family,
    /// `{API_ROOT}/{collection}/{reference}` is the status path.
    pub collection: &'static str,
    /// The status call.
    pub status: Endpoint,
    /// How the budget names the status calls.
    pub status_what: &'static str,
    /// The field of the status response that holds the state.
    pub state_field: &'static str,
    /// States after which the rest of the flow runs.
    pub final_states: &'static [&'static str],
    /// States that are polled again on the schedule; empty: never polled.
    pub pending_states: &'static [&'static str],
    /// What is fetched after the final status, in flow order.
    pub then: &'static [Step],
}

/// What a status response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Fetch the rest once.
    Final,
    /// Poll again on the schedule.
    Pending,
    /// Not a state the guide lists for this kind (the word, or empty when absent).
    Unknown(String),
}

impl KindFlow {
    /// The status path of `reference`; every built path starts with it.
    pub fn status_path(&self, reference: &str) -> String {
        format!("{API_ROOT}/{}/{reference}", self.collection)
    }

    /// The step that fetches `role`, if this kind has one.
    pub fn step(&self, role: Role) -> Option<&Step> {
        self.then.iter().find(|s| s.role == role)
    }

    /// The step that fetches `role`, if this kind has one and the switches turn it on.
    pub fn wanted(&self, role: Role, switches: &Switches) -> Option<&Step> {
        self.step(role).filter(|s| s.needs.on(switches))
    }

    /// The path of a built step (`/data`, `/images`, `/pages`) for `reference`.
    pub fn path(&self, step: &Step, reference: &str) -> Option<String> {
        step.suffix
            .map(|suffix| format!("{}{suffix}", self.status_path(reference)))
    }

    /// Authentication has no `/data`: its status response is the details.
    pub fn status_is_details(&self) -> bool {
        self.step(Role::Data).is_none()
    }

    /// Whether this kind is ever polled.
    pub fn polls(&self) -> bool {
        !self.pending_states.is_empty()
    }

    /// The most status calls of one round under a schedule of `entries` offsets: one per entry,
    /// the first call included (the guide's "maximum of 10 consecutive retrieval attempts"), for a
    /// kind that can be pending; one for the others.
    pub fn max_status_calls(&self, entries: usize) -> u64 {
        if self.polls() {
            entries.max(1) as u64
        } else {
            1
        }
    }

    /// The state word of a status response body, empty when absent.
    pub fn state_word<'a>(&self, body: &'a Value) -> &'a str {
        body.get(self.state_field)
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The state of a status response body.
    pub fn state(&self, body: &Value) -> State {
        let word = self.state_word(body);
        if self.final_states.contains(&word) {
            State::Final
        } else if self.pending_states.contains(&word) {
            State::Pending
        } else {
            State::Unknown(word.to_string())
        }
    }
}

const fn json(label: &'static str, stage: Stage) -> Endpoint {
    Endpoint {
        label,
        stage,
        accept: ACCEPT_JSON,
    }
}

const fn image(label: &'static str, stage: Stage) -> Endpoint {
    Endpoint {
        label,
        stage,
        accept: ACCEPT_IMAGE,
    }
}

/// Netverify scans, on the Netverify host.
pub static NETVERIFY: KindFlow = KindFlow {
    kind: Kind::Netverify,
    family: Family::Netverify,
    collection: "scans",
    status: json("scans/{ref}", Stage::Status),
    status_what: "status calls",
    state_field: "status",
    final_states: &["DONE", "FAILED"],
    pending_states: &["PENDING"],
    then: &[
        Step {
            role: Role::Data,
            endpoint: json("scans/{ref}/data", Stage::Data),
            suffix: Some("/data"),
            needs: Needs::Always,
            requests: (1, 1),
            what: "data",
        },
        Step {
            role: Role::ImageList,
            endpoint: json("scans/{ref}/images", Stage::Images),
            suffix: Some("/images"),
            needs: Needs::ImagesOrLiveness,
            requests: (1, 1),
            what: "images list",
        },
        Step {
            role: Role::Image,
            endpoint: image("scans/{ref}/images/{classifier}", Stage::Image),
            suffix: None,
            needs: Needs::Images,
            requests: (1, MAX_NETVERIFY_IMAGES),
            what: "images (front, back, face)",
        },
        Step {
            role: Role::Liveness,
            endpoint: image("scans/{ref}/images/liveness/{n}", Stage::Liveness),
            suffix: None,
            needs: Needs::LivenessImages,
            requests: (0, MAX_LIVENESS_IMAGES),
            what: "liveness images",
        },
    ],
};

/// Document Verification, on the retrieval host. Never pending (see the module header).
pub static DOCUMENT: KindFlow = KindFlow {
    kind: Kind::Document,
    family: Family::Retrieval,
    collection: "documents",
    status: json("documents/{ref}", Stage::Status),
    status_what: "status call (never pending)",
    state_field: "status",
    final_states: &["DONE", "FAILED"],
    pending_states: &[],
    then: &[
        Step {
            role: Role::Data,
            endpoint: json("documents/{ref}/data", Stage::Data),
            suffix: Some("/data"),
            needs: Needs::Always,
            requests: (1, 1),
            what: "data",
        },
        Step {
            role: Role::PageList,
            endpoint: json("documents/{ref}/pages", Stage::Pages),
            suffix: Some("/pages"),
            needs: Needs::Images,
            requests: (1, 1),
            what: "pages list",
        },
        Step {
            role: Role::Page,
            endpoint: image("documents/{ref}/pages/{n}", Stage::Page),
            suffix: None,
            needs: Needs::Images,
            requests: (1, MAX_DOCUMENT_PAGES),
            what: "pages",
        },
        Step {
            role: Role::UnmaskedPage,
            endpoint: image("documents/{ref}/pages/{n}?maskhint=unmasked", Stage::Page),
            suffix: None,
            needs: Needs::UnmaskedPages,
            requests: (0, MAX_DOCUMENT_PAGES),
            what: "masked pages after 403 on unmasked",
        },
        Step {
            role: Role::Original,
            endpoint: Endpoint {
                label: "documents/{ref}/original",
                stage: Stage::Original,
                accept: ACCEPT_PDF,
            },
            suffix: None,
            needs: Needs::OriginalDocuments,
            requests: (0, 1),
            what: "original PDF",
        },
    ],
};

/// Authentication, on the Netverify host: the status response is the details, with the images.
pub static AUTHENTICATION: KindFlow = KindFlow {
    kind: Kind::Authentication,
    family: Family::Netverify,
    collection: "authentications",
    status: json("authentications/{ref}", Stage::Status),
    status_what: "status calls",
    state_field: "transactionResult",
    final_states: &["PASSED", "FAILED", "INVALID", "EXPIRED"],
    pending_states: &["CREATED", "STARTED"],
    then: &[
        Step {
            role: Role::Image,
            endpoint: image("authentications/{ref}/images/{classifier}", Stage::Image),
            suffix: None,
            needs: Needs::Images,
            requests: (1, 1),
            what: "face image",
        },
        Step {
            role: Role::Liveness,
            endpoint: image("authentications/{ref}/images/liveness/{n}", Stage::Liveness),
            suffix: None,
            needs: Needs::LivenessImages,
            requests: (0, MAX_LIVENESS_IMAGES),
            what: "liveness images",
        },
    ],
};

/// The flow of `kind`.
pub fn flow(kind: Kind) -> &'static KindFlow {
    match kind {
        Kind::Netverify => &NETVERIFY,
        Kind::Document => &DOCUMENT,
        Kind::Authentication => &AUTHENTICATION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_the_guides() {
        assert_eq!(NETVERIFY.status_path("r1"), "/api/netverify/v2/scans/r1");
        let data = DOCUMENT.step(Role::Data).unwrap();
        assert_eq!(
            DOCUMENT.path(data, "r2").unwrap(),
            "/api/netverify/v2/documents/r2/data"
        );
        let list = NETVERIFY.step(Role::ImageList).unwrap();
        assert_eq!(
            NETVERIFY.path(list, "r3").unwrap(),
            "/api/netverify/v2/scans/r3/images"
        );
        assert_eq!(
            AUTHENTICATION.status_path("r4"),
            "/api/netverify/v2/authentications/r4"
        );
        assert_eq!(DOCUMENT.family, Family::Retrieval);
        assert!(AUTHENTICATION.status_is_details() && !NETVERIFY.status_is_details());
        for kind in Kind::ALL {
            assert_eq!(flow(kind).kind, kind);
            assert!(flow(kind).status.is_status_call());
            assert!(flow(kind).then.iter().all(|s| !s.endpoint.is_status_call()));
        }
    }

    #[test]
    fn document_verification_is_never_pending() {
        assert!(!DOCUMENT.polls());
        assert_eq!(DOCUMENT.max_status_calls(10), 1);
        assert_eq!(NETVERIFY.max_status_calls(10), 10);
        assert_eq!(DOCUMENT.state(&json!({"status": "DONE"})), State::Final);
        assert_eq!(
            DOCUMENT.state(&json!({"status": "PENDING"})),
            State::Unknown("PENDING".into())
        );
        assert_eq!(
            NETVERIFY.state(&json!({"status": "PENDING"})),
            State::Pending
        );
    }

    #[test]
    fn authentication_reads_its_transaction_result() {
        for word in ["CREATED", "STARTED"] {
            assert_eq!(
                AUTHENTICATION.state(&json!({"transactionResult": word})),
                State::Pending
            );
        }
        for word in ["PASSED", "FAILED", "INVALID", "EXPIRED"] {
            assert_eq!(
                AUTHENTICATION.state(&json!({"transactionResult": word})),
                State::Final
            );
        }
        assert_eq!(
            AUTHENTICATION.state(&json!({"status": "DONE"})),
            State::Unknown(String::new())
        );
    }

    #[test]
    fn switches_turn_steps_on() {
        let none = Switches {
            images: false,
            liveness_images: false,
            original_documents: false,
            unmasked_card_images: true,
        };
        assert!(NETVERIFY.wanted(Role::ImageList, &none).is_none());
        assert!(DOCUMENT.wanted(Role::UnmaskedPage, &none).is_none());
        let liveness = Switches {
            liveness_images: true,
            ..none
        };
        assert!(NETVERIFY.wanted(Role::ImageList, &liveness).is_some());
        assert!(NETVERIFY.wanted(Role::Image, &liveness).is_none());
        assert!(DOCUMENT.wanted(Role::Liveness, &liveness).is_none());
    }
}
