//! The Retrieval API simulator, as a client sees it: shapes of every endpoint against the
//! guide's tables, protocol rules, determinism, polling, every fault knob, the request log,
//! and coverage of every enumeration value of the guide across a population.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jumio_export::Kind;
use jumio_export::simulator::{
    self, Faults, Polls, Scenario, SimHandle, SimOptions, data, population, scenario,
};
use serde_json::{Map, Value};

const UA: &str = "Example Corp SimTests/1.0";
const SEED: u64 = 20190528;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn sim(opts: SimOptions) -> SimHandle {
    simulator::start(opts, loopback())
        .await
        .expect("simulator starts")
}

fn opts() -> SimOptions {
    SimOptions {
        seed: SEED,
        ..SimOptions::default()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().user_agent(UA).build().unwrap()
}

async fn get(c: &reqwest::Client, url: &str) -> reqwest::Response {
    c.get(url)
        .basic_auth("demo-token", Some("demo-secret"))
        .send()
        .await
        .unwrap()
}

async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    let r = get(c, url).await;
    assert_eq!(r.status(), 200, "{url}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{url}: {ct}");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

fn api(base: &str, family: &str, reference: &str, tail: &str) -> String {
    let mut u = format!("{base}/api/netverify/v2/{family}/{reference}");
    if !tail.is_empty() {
        u.push('/');
        u.push_str(tail);
    }
    u
}

/// The first population member whose scenario satisfies `pred`.
fn find(pred: impl Fn(&Scenario) -> bool) -> Scenario {
    population(SEED, 20_000)
        .iter()
        .filter_map(|(r, _)| scenario(SEED, r))
        .find(|s| pred(s))
        .expect("population holds such a reference")
}

// ---------------------------------------------------------------------------------------------
// Shapes, from the guide's tables. `s` string, `o` object, `a` array, `b` boolean, `i` integer.
// ---------------------------------------------------------------------------------------------

const NV_DOCUMENT: &[(&str, char)] = &[
    ("status", 's'),
    ("type", 's'),
    ("idSubtype", 's'),
    ("issuingCountry", 's'),
    ("firstName", 's'),
    ("lastName", 's'),
    ("dob", 's'),
    ("expiry", 's'),
    ("issuingDate", 's'),
    ("number", 's'),
    ("usState", 's'),
    ("personalNumber", 's'),
    ("optionalData1", 's'),
    ("optionalData2", 's'),
    ("address", 'o'),
    ("issuingAuthority", 's'),
    ("issuingPlace", 's'),
];
const ADDRESS: &[(&str, char)] = &[
    ("city", 's'),
    ("stateCode", 's'),
    ("streetName", 's'),
    ("streetSuffix", 's'),
    ("streetDirection", 's'),
    ("streetNumber", 's'),
    ("unitDesignator", 's'),
    ("unitNumber", 's'),
    ("zip", 's'),
    ("zipExtension", 's'),
    ("country", 's'),
    ("province", 's'),
    ("unitDetails", 's'),
    ("postalCode", 's'),
    ("line1", 's'),
    ("line2", 's'),
    ("line3", 's'),
    ("line4", 's'),
    ("line5", 's'),
];
const NV_TRANSACTION: &[(&str, char)] = &[
    ("status", 's'),
    ("source", 's'),
    ("date", 's'),
    ("clientIp", 's'),
    ("customerId", 's'),
    ("merchantScanReference", 's'),
    ("merchantReportingCriteria", 's'),
];
const NV_VERIFICATION: &[(&str, char)] = &[
    ("mrzCheck", 's'),
    ("rejectReason", 'o'),
    ("identityVerification", 'o'),
];
const REJECT_REASON: &[(&str, char)] = &[
    ("rejectReasonCode", 's'),
    ("rejectReasonDescription", 's'),
    ("rejectReasonDetails", 'a'),
];
const IDENTITY: &[(&str, char)] = &[
    ("similarity", 's'),
    ("validity", 's'),
    ("reason", 's'),
    ("handwrittenNoteMatches", 's'),
];
const DV_DOCUMENT: &[(&str, char)] = &[
    ("status", 's'),
    ("type", 's'),
    ("country", 's'),
    ("originalDocument", 's'),
    ("customDocumentCode", 's'),
    ("extractedData", 'o'),
];
const DV_EXTRACTED: &[(&str, char)] = &[
    ("signatureAvailable", 'b'),
    ("ssn", 's'),
    ("firstName", 's'),
    ("lastName", 's'),
    ("extractedData", 'x'),
];
const DV_NESTED: &[(&str, char)] = &[
    ("addressFormat", 's'),
    ("line1", 's'),
    ("line2", 's'),
    ("countryCode", 's'),
    ("postalCode", 's'),
    ("city", 's'),
    ("subdivision", 's'),
    ("firstName", 's'),
    ("lastName", 's'),
    ("ssn", 's'),
    ("signaturePresent", 's'),
    ("accountNumber", 's'),
    ("swiftCode", 's'),
    ("issueDate", 's'),
    ("expiryDate", 's'),
    ("pan", 's'),
];
const DV_TRANSACTION: &[(&str, char)] = &[
    ("status", 's'),
    ("source", 's'),
    ("merchantReportingCriteria", 's'),
    ("merchantScanReference", 's'),
    ("customerId", 's'),
];
const AUTH: &[(&str, char)] = &[
    ("transactionReference", 's'),
    ("transactionResult", 's'),
    ("transactionDate", 's'),
    ("scanSource", 's'),
    ("images", 'x'),
    ("livenessImages", 'a'),
];

fn type_ok(v: &Value, t: char) -> bool {
    match t {
        's' => v.is_string(),
        'o' => v.is_object(),
        'a' => v.is_array(),
        'b' => v.is_boolean(),
        'i' => v.is_u64(),
        _ => true,
    }
}

/// Every key is documented with the right JSON type.
fn assert_shape(what: &str, v: &Value, table: &[(&str, char)]) {
    let m = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {v}"));
    for (k, val) in m {
        let t = table
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("{what}: undocumented key {k}"))
            .1;
        assert!(type_ok(val, t), "{what}.{k} has the wrong type: {val}");
    }
}

fn assert_timestamp(v: &Value) {
    let s = v.as_str().unwrap();
    // YYYY-MM-DDThh:mm:ss.SSSZ
    assert_eq!(s.len(), 24, "{s}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z'),
        "{s}"
    );
    assert_eq!(&s[19..20], ".");
}

fn assert_netverify_data(d: &Value) {
    assert_shape(
        "data",
        d,
        &[
            ("timestamp", 's'),
            ("scanReference", 's'),
            ("document", 'o'),
            ("transaction", 'o'),
            ("verification", 'o'),
        ],
    );
    assert_shape("document", &d["document"], NV_DOCUMENT);
    if let Some(a) = d["document"].get("address") {
        assert_shape("address", a, ADDRESS);
    }
    assert_shape("transaction", &d["transaction"], NV_TRANSACTION);
    assert_timestamp(&d["transaction"]["date"]);
    assert_shape("verification", &d["verification"], NV_VERIFICATION);
    if let Some(r) = d["verification"].get("rejectReason") {
        assert_shape("rejectReason", r, REJECT_REASON);
        for det in r
            .get("rejectReasonDetails")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert_shape(
                "details",
                det,
                &[("detailsCode", 's'), ("detailsDescription", 's')],
            );
        }
    }
    if let Some(i) = d["verification"].get("identityVerification") {
        assert_shape("identityVerification", i, IDENTITY);
    }
}

fn nested(e: &Value) -> Value {
    match &e["extractedData"] {
        Value::String(s) => serde_json::from_str(s).expect("nested extractedData parses"),
        other => other.clone(),
    }
}

fn assert_document_data(d: &Value) {
    assert_shape(
        "dv data",
        d,
        &[
            ("timestamp", 's'),
            ("scanReference", 's'),
            ("document", 'o'),
            ("transaction", 'o'),
        ],
    );
    assert_shape("dv document", &d["document"], DV_DOCUMENT);
    if let Some(e) = d["document"].get("extractedData") {
        assert_shape("extractedData", e, DV_EXTRACTED);
        assert_shape("nested extractedData", &nested(e), DV_NESTED);
    }
    assert_shape("dv transaction", &d["transaction"], DV_TRANSACTION);
}

fn images_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![v.clone()],
        _ => Vec::new(),
    }
}

fn assert_image_bytes(ct: &str, b: &[u8]) {
    match ct {
        "image/jpeg" => {
            assert_eq!(&b[..2], &[0xFF, 0xD8], "JPEG SOI");
            assert_eq!(&b[b.len() - 2..], &[0xFF, 0xD9], "JPEG EOI");
        }
        "image/png" => {
            assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
            let mut r = png::Decoder::new(std::io::Cursor::new(b))
                .read_info()
                .unwrap();
            let mut buf = vec![0; r.output_buffer_size().unwrap()];
            r.next_frame(&mut buf).expect("PNG decodes");
        }
        other => panic!("unexpected image content type {other}"),
    }
}

async fn fetch_image(c: &reqwest::Client, url: &str) -> (String, Vec<u8>) {
    let r = get(c, url).await;
    assert_eq!(r.status(), 200, "{url}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    let b = r.bytes().await.unwrap().to_vec();
    assert_image_bytes(&ct, &b);
    (ct, b)
}

// ---------------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sim_netverify_endpoints_answer_the_documented_shapes() {
    let s = sim(opts()).await;
    let base = s.base_url();
    let c = client();
    let sc = find(|s| {
        s.kind == Kind::Netverify
            && s.polls == Polls::Ready
            && !s.retention_404
            && !s.extra_field
            && s.classifiers.len() == 3
            && s.liveness.len() == 7
            && s.document_status == Some("DENIED_FRAUD")
    });
    let r = &sc.reference;
    let st = get_json(&c, &api(&base, "scans", r, "")).await;
    assert_shape(
        "status",
        &st,
        &[("timestamp", 's'), ("scanReference", 's'), ("status", 's')],
    );
    assert_timestamp(&st["timestamp"]);
    assert_eq!(st["scanReference"], r.as_str());
    assert_eq!(st["status"], "DONE");

    let d = get_json(&c, &api(&base, "scans", r, "data")).await;
    assert_netverify_data(&d);
    assert_eq!(d["document"]["status"], "DENIED_FRAUD");
    assert!(d["verification"]["rejectReason"]["rejectReasonCode"].is_string());
    for (tail, key) in [
        ("data/document", "document"),
        ("data/transaction", "transaction"),
        ("data/verification", "verification"),
    ] {
        let part = get_json(&c, &api(&base, "scans", r, tail)).await;
        let mut expected = d[key].as_object().unwrap().clone();
        expected.insert("scanReference".into(), r.as_str().into());
        let mut got = part.as_object().unwrap().clone();
        assert_timestamp(&got.remove("timestamp").unwrap());
        assert_eq!(
            Value::Object(got),
            Value::Object(expected),
            "{tail} equals /data's {key}"
        );
    }

    let im = get_json(&c, &api(&base, "scans", r, "images")).await;
    assert_shape(
        "images",
        &im,
        &[
            ("timestamp", 's'),
            ("scanReference", 's'),
            ("images", 'a'),
            ("livenessImages", 'a'),
        ],
    );
    let mut seen = Vec::new();
    for i in images_list(&im["images"]) {
        assert_shape("image", &i, &[("classifier", 's'), ("href", 's')]);
        let href = i["href"].as_str().unwrap();
        let cl = i["classifier"].as_str().unwrap();
        assert_eq!(href, api(&base, "scans", r, &format!("images/{cl}")));
        seen.push(fetch_image(&c, href).await.1);
    }
    let live: Vec<&str> = im["livenessImages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let numbers: Vec<u32> = live
        .iter()
        .map(|h| h.rsplit('/').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers, sc.liveness, "listed in the scenario's order");
    for h in &live {
        assert!(h.starts_with(&format!(
            "{base}/api/netverify/v2/scans/{r}/images/liveness/"
        )));
        seen.push(fetch_image(&c, h).await.1);
    }
    let distinct: HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), 10, "every image distinct");

    // Images it does not have.
    for tail in [
        "images/nose",
        "images/liveness/8",
        "images/liveness/x",
        "bogus",
    ] {
        assert_eq!(
            get(&c, &api(&base, "scans", r, tail)).await.status(),
            404,
            "{tail}"
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn sim_authentication_and_document_endpoints_answer_the_documented_shapes() {
    let s = sim(opts()).await;
    let base = s.base_url();
    let c = client();

    let a = find(|s| {
        s.kind == Kind::Authentication
            && s.polls == Polls::Ready
            && !s.retention_404
            && !s.extra_field
            && !s.images_as_object
            && !s.liveness.is_empty()
    });
    let d = get_json(&c, &api(&base, "authentications", &a.reference, "")).await;
    assert_shape("authentication", &d, AUTH);
    assert_timestamp(&d["transactionDate"]);
    assert_eq!(d["scanSource"], "SDK");
    assert_eq!(d["transactionResult"], a.final_status);
    let imgs = images_list(&d["images"]);
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0]["classifier"], "face");
    fetch_image(&c, imgs[0]["href"].as_str().unwrap()).await;
    for h in d["livenessImages"].as_array().unwrap() {
        fetch_image(&c, h.as_str().unwrap()).await;
    }

    let dv = find(|s| {
        s.kind == Kind::Document
            && !s.retention_404
            && !s.extra_field
            && s.has_original
            && s.document_status == Some("EXTRACTED")
            && s.classifiers.len() >= 2
    });
    let r = &dv.reference;
    let st = get_json(&c, &api(&base, "documents", r, "")).await;
    assert_eq!(st["status"], "DONE");
    let data = get_json(&c, &api(&base, "documents", r, "data")).await;
    assert_document_data(&data);
    for (tail, key) in [
        ("data/document", "document"),
        ("data/transaction", "transaction"),
    ] {
        let part = get_json(&c, &api(&base, "documents", r, tail)).await;
        assert_eq!(part["scanReference"], r.as_str());
        for (k, v) in data[key].as_object().unwrap() {
            assert_eq!(&part[k], v, "{tail}.{k}");
        }
    }
    let pages = get_json(&c, &api(&base, "documents", r, "pages")).await;
    assert_shape(
        "pages",
        &pages,
        &[("timestamp", 's'), ("scanReference", 's'), ("images", 'a')],
    );
    for p in pages["images"].as_array().unwrap() {
        // Page classifiers are integers, not strings.
        assert_shape("page", p, &[("classifier", 'i'), ("href", 's')]);
        let href = p["href"].as_str().unwrap();
        assert_eq!(
            href,
            api(&base, "documents", r, &format!("pages/{}", p["classifier"]))
        );
        let masked = fetch_image(&c, href).await;
        let unmasked = get(&c, &format!("{href}?maskhint=unmasked")).await;
        assert_eq!(
            unmasked.status(),
            403,
            "unmasked pages are refused by default"
        );
        let again = fetch_image(&c, &format!("{href}?maskhint=masked")).await;
        assert_eq!(masked, again);
    }
    let orig_url = data["document"]["originalDocument"].as_str().unwrap();
    assert_eq!(orig_url, api(&base, "documents", r, "original"));
    let resp = get(&c, orig_url).await;
    assert_eq!(resp.headers()["content-type"], "application/pdf");
    let pdf = resp.bytes().await.unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert!(pdf.ends_with(b"%%EOF"));
    assert!(
        String::from_utf8_lossy(&pdf)
            .contains(&format!("Document type: {}", dv.document_type.unwrap()))
    );
    // A document without an original.
    let no = find(|s| s.kind == Kind::Document && !s.retention_404 && !s.has_original);
    assert_eq!(
        get(&c, &api(&base, "documents", &no.reference, "original"))
            .await
            .status(),
        404
    );
    s.shutdown().await;
}

#[tokio::test]
async fn sim_unmasked_pages_are_served_when_allowed() {
    let s = sim(SimOptions {
        allow_unmasked: true,
        ..opts()
    })
    .await;
    let c = client();
    let url = api(&s.base_url(), "documents", "ok-d1", "pages");
    let pages = get_json(&c, &url).await;
    let href = images_list(&pages["images"])[0]["href"]
        .as_str()
        .unwrap()
        .to_string();
    let masked = fetch_image(&c, &href).await.1;
    let unmasked = fetch_image(&c, &format!("{href}?maskhint=unmasked"))
        .await
        .1;
    assert_ne!(masked, unmasked, "the unmasked image is another file");
    s.shutdown().await;
}

#[tokio::test]
async fn sim_sizes_can_be_set_toward_realistic() {
    let s = sim(SimOptions {
        image_bytes: 300_000,
        pdf_bytes: 500_000,
        ..opts()
    })
    .await;
    let c = client();
    let base = s.base_url();
    let (_, b) = fetch_image(&c, &api(&base, "scans", "ok-n1", "images/front")).await;
    assert!((240_000..=360_000).contains(&b.len()), "{}", b.len());
    let dv = find(|s| s.kind == Kind::Document && !s.retention_404 && s.has_original);
    let pdf = get(&c, &api(&base, "documents", &dv.reference, "original"))
        .await
        .bytes()
        .await
        .unwrap();
    assert!((400_000..=600_000).contains(&pdf.len()), "{}", pdf.len());
    s.shutdown().await;
}

#[tokio::test]
async fn sim_quirks_single_object_images_and_unordered_liveness() {
    let s = sim(opts()).await;
    let c = client();
    let base = s.base_url();
    let im = get_json(&c, &api(&base, "scans", "obj-n1", "images")).await;
    assert!(im["images"].is_object(), "{im}");
    assert_eq!(im["images"]["classifier"], "front");
    let pages = get_json(&c, &api(&base, "documents", "obj-d1", "pages")).await;
    assert!(pages["images"].is_object());
    let a = get_json(&c, &api(&base, "authentications", "obj-a1", "")).await;
    assert!(a["images"].is_object());

    let guide = find(|s| s.kind == Kind::Netverify && s.liveness == [7, 5, 6, 3, 4, 1, 2]);
    let im = get_json(&c, &api(&base, "scans", &guide.reference, "images")).await;
    let n: Vec<String> = im["livenessImages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(n, ["7", "5", "6", "3", "4", "1", "2"]);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Protocol rules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sim_auth_user_agent_and_unknown_references() {
    let s = sim(opts()).await;
    let base = s.base_url();
    let c = client();
    let url = api(&base, "scans", "ok-n1", "");
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        401,
        "no credentials"
    );
    let wrong = c
        .get(&url)
        .basic_auth("demo-token", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "wrong secret");
    let no_ua = reqwest::Client::new();
    let r = no_ua
        .get(&url)
        .basic_auth("demo-token", Some("demo-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "missing User-Agent");
    assert_eq!(get(&c, &url).await.status(), 200);

    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_eq!(
        get(&c, &api(&base, "scans", unknown, "")).await.status(),
        404
    );
    // A reference of another family.
    assert_eq!(
        get(&c, &api(&base, "documents", "ok-n1", ""))
            .await
            .status(),
        404
    );
    // Removed by the retention period: every endpoint.
    for (fam, r) in [
        ("scans", "nf-n1"),
        ("documents", "nf-d1"),
        ("authentications", "nf-a1"),
    ] {
        for tail in ["", "data", "images", "pages", "images/face"] {
            assert_eq!(
                get(&c, &api(&base, fam, r, tail)).await.status(),
                404,
                "{fam} {tail}"
            );
        }
    }
    let statuses: Vec<u16> = s.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        &statuses[..5],
        &[401, 401, 400, 200, 404],
        "refused requests are logged too"
    );
    assert!(s.requests().iter().all(|r| r.method == "GET"));
    s.shutdown().await;
}

#[tokio::test]
async fn sim_same_seed_gives_the_same_bytes() {
    fn strip(v: &mut Value) {
        if let Value::Object(m) = v {
            m.remove("timestamp");
            m.values_mut().for_each(strip);
        }
    }
    async fn collect(seed: u64) -> Vec<Vec<u8>> {
        let s = sim(SimOptions { seed, ..opts() }).await;
        let c = client();
        let base = s.base_url();
        let mut out = Vec::new();
        for (r, k) in population(SEED, 40) {
            let fam = data::family_segment(k);
            let tails: &[&str] = match k {
                Kind::Netverify => &["", "data", "images", "images/front"],
                Kind::Document => &["", "data", "pages", "pages/1", "original"],
                Kind::Authentication => &["", "images/face"],
            };
            for tail in tails {
                let resp = get(&c, &api(&base, fam, &r, tail)).await;
                let status = resp.status().as_u16();
                let body = resp.bytes().await.unwrap().to_vec();
                let body = match serde_json::from_slice::<Value>(&body) {
                    // Hrefs carry the port, which differs between the two servers.
                    Ok(mut v) => {
                        strip(&mut v);
                        v.to_string().replace(&base, "BASE").into_bytes()
                    }
                    Err(_) => body,
                };
                out.push([vec![status as u8], body].concat());
            }
        }
        s.shutdown().await;
        out
    }
    let a = collect(SEED).await;
    let b = collect(SEED).await;
    assert_eq!(a.len(), b.len());
    assert!(a == b, "same seed, same bodies apart from timestamps");
    // Under another seed these references do not exist.
    let c = collect(SEED + 1).await;
    assert_ne!(a, c);
}

#[tokio::test]
async fn sim_pending_becomes_final_after_the_configured_polls() {
    let s = sim(opts()).await;
    let base = s.base_url();
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let st = get_json(&c, &api(&base, "scans", "p3-n1", "")).await;
        seen.push(st["status"].as_str().unwrap().to_string());
        if seen.len() == 2 {
            // Before the final status: no document data, no images.
            let d = get_json(&c, &api(&base, "scans", "p3-n1", "data")).await;
            assert_eq!(d["transaction"]["status"], "PENDING");
            assert!(d.get("document").is_none());
            let im = get_json(&c, &api(&base, "scans", "p3-n1", "images")).await;
            assert_eq!(im["images"], Value::Array(vec![]));
            assert_eq!(
                get(&c, &api(&base, "scans", "p3-n1", "images/front"))
                    .await
                    .status(),
                404
            );
        }
    }
    assert_eq!(seen, ["PENDING", "PENDING", "PENDING", "DONE", "DONE"]);
    let d = get_json(&c, &api(&base, "scans", "p3-n1", "data")).await;
    assert_eq!(d["transaction"]["status"], "DONE");

    let mut results = Vec::new();
    for _ in 0..4 {
        let a = get_json(&c, &api(&base, "authentications", "p2-a1", "")).await;
        results.push(a["transactionResult"].as_str().unwrap().to_string());
    }
    let fin = scenario(SEED, "p2-a1").unwrap().final_status;
    assert_eq!(results, ["CREATED", "STARTED", fin, fin]);

    for _ in 0..12 {
        assert_eq!(
            get_json(&c, &api(&base, "scans", "pf-n1", "")).await["status"],
            "PENDING"
        );
        let a = get_json(&c, &api(&base, "authentications", "pf-a1", "")).await;
        assert!(matches!(
            a["transactionResult"].as_str(),
            Some("CREATED" | "STARTED")
        ));
    }
    assert_eq!(
        get_json(&c, &api(&base, "scans", "fail-n1", "")).await["status"],
        "FAILED"
    );
    assert_eq!(
        get_json(&c, &api(&base, "documents", "fail-d1", "")).await["status"],
        "FAILED"
    );
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

async fn with_faults(f: Faults) -> SimHandle {
    sim(SimOptions {
        faults: f,
        ..opts()
    })
    .await
}

#[tokio::test]
async fn sim_fault_latency() {
    let s = with_faults(Faults {
        latency_ms: 150,
        ..Faults::default()
    })
    .await;
    let c = client();
    let t = Instant::now();
    assert_eq!(
        get(&c, &api(&s.base_url(), "scans", "ok-n1", ""))
            .await
            .status(),
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
    s.shutdown().await;
}

#[tokio::test]
async fn sim_fault_server_errors() {
    let s = with_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let c = client();
    let mut codes = BTreeSet::new();
    for _ in 0..20 {
        codes.insert(
            get(&c, &api(&s.base_url(), "scans", "ok-n1", ""))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes, BTreeSet::from([500, 503]));
    s.shutdown().await;

    let s = with_faults(Faults {
        error_rate: 0.3,
        ..Faults::default()
    })
    .await;
    let mut errors = 0;
    for _ in 0..100 {
        if get(&c, &api(&s.base_url(), "scans", "ok-n1", ""))
            .await
            .status()
            != 200
        {
            errors += 1;
        }
    }
    assert!((15..=45).contains(&errors), "{errors}");
    s.shutdown().await;
}

#[tokio::test]
async fn sim_fault_429_with_and_without_retry_after() {
    let s = with_faults(Faults {
        rate_429: 1.0,
        ..Faults::default()
    })
    .await;
    let c = client();
    let r = get(&c, &api(&s.base_url(), "scans", "ok-n1", "")).await;
    assert_eq!(r.status(), 429);
    assert!(
        r.headers().get("retry-after").is_none(),
        "Jumio sends no Retry-After"
    );
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"title":"Too Many Requests","status":429,"detail":"Request limit exceeded"})
    );
    s.shutdown().await;

    let s = with_faults(Faults {
        rate_429: 1.0,
        retry_after_429: Some(7),
        ..Faults::default()
    })
    .await;
    let r = get(&c, &api(&s.base_url(), "scans", "ok-n1", "")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    s.shutdown().await;
}

#[tokio::test]
async fn sim_fault_ceiling_of_requests_per_second() {
    let s = with_faults(Faults {
        ceiling_rps: Some(5.0),
        ..Faults::default()
    })
    .await;
    let c = client();
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..30 {
        match get(&c, &api(&s.base_url(), "scans", "ok-n1", ""))
            .await
            .status()
            .as_u16()
        {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // 5 in the bucket, refilled at 5/s over the (short) run.
    assert!(ok >= 5 && limited >= 15, "ok {ok}, limited {limited}");
    let logged_429 = s.requests().iter().filter(|r| r.status == 429).count();
    assert_eq!(logged_429, limited);
    s.shutdown().await;
}

#[tokio::test]
async fn sim_fault_truncated_bodies() {
    let s = with_faults(Faults {
        truncate_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let c = client();
    let r = get(&c, &api(&s.base_url(), "scans", "ok-n1", "images/front")).await;
    assert_eq!(r.status(), 200);
    let promised: u64 = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(promised > 1000);
    assert!(
        r.bytes().await.is_err(),
        "the body ends before Content-Length"
    );
    let rec = s.requests().pop().unwrap();
    assert_eq!(rec.bytes, promised / 2, "the log counts what was sent");
    // Refusals are not truncated.
    let no = c
        .get(api(&s.base_url(), "scans", "ok-n1", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(no.status(), 401);
    assert!(no.bytes().await.is_ok());
    s.shutdown().await;
}

#[tokio::test]
async fn sim_fault_connection_resets() {
    let s = with_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let c = client();
    let e = c
        .get(api(&s.base_url(), "scans", "ok-n1", ""))
        .basic_auth("demo-token", Some("demo-secret"))
        .send()
        .await
        .expect_err("the connection is reset");
    assert!(!e.is_timeout() && !e.is_status(), "{e:?}");
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    let mut reset = false;
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            reset |= io.kind() == std::io::ErrorKind::ConnectionReset;
        }
        source = err.source();
    }
    assert!(reset, "a TCP reset, not another error: {e:?}");
    assert_eq!(s.requests().pop().unwrap().status, 0, "logged as no answer");
    s.shutdown().await;

    let s = with_faults(Faults {
        reset_rate: 0.3,
        ..Faults::default()
    })
    .await;
    let mut failed = 0;
    for _ in 0..60 {
        let r = c
            .get(api(&s.base_url(), "scans", "ok-n1", ""))
            .basic_auth("demo-token", Some("demo-secret"))
            .send()
            .await;
        if r.is_err() {
            failed += 1;
        }
    }
    assert!((6..=30).contains(&failed), "{failed}");
    s.shutdown().await;
}

#[tokio::test]
async fn sim_fault_foreign_hrefs() {
    let origin = "http://127.0.0.2:9";
    let s = with_faults(Faults {
        foreign_href_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let c = client();
    let base = s.base_url();
    let im = get_json(&c, &api(&base, "scans", "ok-n1", "images")).await;
    for i in images_list(&im["images"]) {
        assert!(i["href"].as_str().unwrap().starts_with(origin), "{i}");
    }
    let a = get_json(&c, &api(&base, "authentications", "ok-a1", "")).await;
    for i in images_list(&a["images"]) {
        assert!(i["href"].as_str().unwrap().starts_with(origin));
    }
    s.shutdown().await;
    // Without the knob, only `fh-` references point away.
    let s = sim(opts()).await;
    let base = s.base_url();
    let im = get_json(&c, &api(&base, "scans", "fh-n1", "images")).await;
    assert!(
        images_list(&im["images"])
            .iter()
            .all(|i| i["href"].as_str().unwrap().starts_with(origin))
    );
    let im = get_json(&c, &api(&base, "scans", "ok-n1", "images")).await;
    assert!(
        images_list(&im["images"])
            .iter()
            .all(|i| i["href"].as_str().unwrap().starts_with(&base))
    );
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Request log and references list
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sim_request_log_file_matches_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.jsonl");
    let s = sim(SimOptions {
        request_log: Some(path.clone()),
        ..opts()
    })
    .await;
    let c = client();
    let base = s.base_url();
    get(&c, &api(&base, "scans", "ok-n1", "")).await;
    get(
        &c,
        &api(&base, "documents", "ok-d1", "pages/1?maskhint=unmasked"),
    )
    .await;
    c.get(api(&base, "scans", "ok-n1", ""))
        .send()
        .await
        .unwrap();
    let img = get(&c, &api(&base, "scans", "ok-n1", "images/front"))
        .await
        .bytes()
        .await
        .unwrap();
    let mem = s.requests();
    let file = simulator::read_request_log(&path).unwrap();
    assert_eq!(mem, file);
    assert_eq!(mem.len(), 4);
    assert_eq!(mem[0].path, "/api/netverify/v2/scans/ok-n1");
    assert_eq!(mem[0].query, None);
    assert_eq!(mem[1].query.as_deref(), Some("maskhint=unmasked"));
    assert_eq!(mem[1].status, 403);
    assert_eq!(mem[2].status, 401);
    assert_eq!(mem[3].bytes, img.len() as u64);
    for r in &mem {
        let t = chrono::DateTime::parse_from_rfc3339(&r.time).unwrap();
        assert_eq!(
            r.time.split('.').nth(1).unwrap().len(),
            7,
            "microseconds: {}",
            r.time
        );
        assert!(t.timestamp_subsec_micros() < 1_000_000);
    }
    assert!(
        mem.windows(2).all(|w| w[0].time <= w[1].time),
        "sequential requests in order"
    );
    s.shutdown().await;
}

#[test]
fn sim_references_csv_lists_a_mixed_population() {
    let refs = population(SEED, 300);
    assert_eq!(refs, population(SEED, 300), "deterministic");
    let distinct: HashSet<_> = refs.iter().map(|(r, _)| r).collect();
    assert_eq!(distinct.len(), 300);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refs.csv");
    simulator::write_references_csv(&path, &refs).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("reference,kind"));
    let rows: Vec<(String, Kind)> = lines
        .map(|l| {
            let (r, k) = l.split_once(',').unwrap();
            (r.to_string(), k.parse().unwrap())
        })
        .collect();
    assert_eq!(rows, refs);
    for k in Kind::ALL {
        let n = refs.iter().filter(|(_, kk)| *kk == k).count();
        assert!(n >= 20, "{k}: {n}");
    }
    for (r, k) in &refs {
        assert_eq!(scenario(SEED, r).unwrap().kind, *k);
    }
}

// ---------------------------------------------------------------------------------------------
// Coverage of the guide across a population (pure functions, no HTTP)
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Seen(BTreeSet<String>);

impl Seen {
    fn add(&mut self, tag: &str, v: impl std::fmt::Display) {
        self.0.insert(format!("{tag}={v}"));
    }
    fn keys(&mut self, tag: &str, m: &Map<String, Value>) {
        for k in m.keys() {
            self.add(tag, k);
        }
    }
    fn str(&mut self, tag: &str, v: &Value) {
        if let Some(s) = v.as_str() {
            self.add(tag, s);
        }
    }
    fn expect(&self, tag: &str, values: &[&str]) {
        let missing: Vec<_> = values
            .iter()
            .filter(|v| !self.0.contains(&format!("{tag}={v}")))
            .collect();
        assert!(missing.is_empty(), "{tag}: never generated {missing:?}");
    }
}

#[test]
fn sim_population_covers_every_documented_field_and_value() {
    let base = "http://sim";
    let mut seen = Seen::default();
    let mut absent_issuing_date = 0;
    let mut behaviours = BTreeSet::new();
    let refs = population(SEED, 4000);
    for (r, _) in &refs {
        let sc = scenario(SEED, r).unwrap();
        seen.add("kind", sc.kind);
        if sc.retention_404 {
            behaviours.insert("404");
            continue;
        }
        match sc.polls {
            Polls::After(_) => behaviours.insert("pending-then-final"),
            Polls::Never => behaviours.insert("pending-forever"),
            Polls::Ready => behaviours.insert("ready"),
        };
        if sc.images_as_object {
            behaviours.insert("object");
        }
        if sc.extra_field {
            behaviours.insert("extra");
        }
        if sc.liveness.windows(2).any(|w| w[0] > w[1]) {
            behaviours.insert("liveness-unordered");
        }
        match sc.kind {
            Kind::Netverify => {
                seen.add("status", sc.final_status);
                let d =
                    data::netverify_data(SEED, &sc, "2019-01-01T00:00:00.000Z", sc.final_status);
                if !sc.extra_field {
                    assert_netverify_data(&d);
                }
                let doc = d["document"].as_object().unwrap();
                seen.keys("document", doc);
                for k in ["status", "type", "idSubtype", "issuingCountry", "usState"] {
                    seen.str(
                        &format!("document.{k}"),
                        &doc.get(k).cloned().unwrap_or_default(),
                    );
                }
                for name in ["firstName", "lastName"] {
                    if let Some(n) = doc.get(name).and_then(Value::as_str) {
                        for ch in n.chars() {
                            seen.add("char", ch);
                        }
                        seen.add("name", n);
                    }
                }
                if doc.contains_key("number") && !doc.contains_key("issuingDate") {
                    absent_issuing_date += 1;
                }
                if let Some(a) = doc.get("address").and_then(Value::as_object) {
                    seen.keys("address", a);
                    let format = if a.contains_key("stateCode") {
                        "US"
                    } else if a.contains_key("line1") {
                        "RAW"
                    } else {
                        "EU"
                    };
                    seen.add("address-format", format);
                }
                let t = d["transaction"].as_object().unwrap();
                seen.keys("transaction", t);
                seen.str("transaction.source", &t["source"]);
                seen.str("transaction.status", &t["status"]);
                let v = d["verification"].as_object().unwrap();
                seen.keys("verification", v);
                seen.str("mrzCheck", v.get("mrzCheck").unwrap_or(&Value::Null));
                if let Some(rr) = v.get("rejectReason") {
                    let code = rr["rejectReasonCode"].as_str().unwrap();
                    seen.add(
                        "reject",
                        format!("{code} {}", rr["rejectReasonDescription"].as_str().unwrap()),
                    );
                    let details = rr.get("rejectReasonDetails");
                    assert_eq!(
                        details.is_some(),
                        code == "100" || code == "200",
                        "details only for 100/200"
                    );
                    for det in details.and_then(Value::as_array).into_iter().flatten() {
                        seen.add(
                            &format!("details{code}"),
                            format!(
                                "{} {}",
                                det["detailsCode"].as_str().unwrap(),
                                det["detailsDescription"].as_str().unwrap()
                            ),
                        );
                    }
                }
                if let Some(iv) = v.get("identityVerification").and_then(Value::as_object) {
                    seen.keys("identity", iv);
                    for k in ["similarity", "validity", "reason", "handwrittenNoteMatches"] {
                        seen.str(&format!("identity.{k}"), iv.get(k).unwrap_or(&Value::Null));
                    }
                    assert_eq!(
                        iv.contains_key("reason"),
                        iv["validity"]
                            .as_str()
                            .unwrap()
                            .eq_ignore_ascii_case("false"),
                        "reason exactly when validity is false"
                    );
                }
                let im = data::netverify_images(&sc, base, "2019-01-01T00:00:00.000Z");
                for i in images_list(&im["images"]) {
                    seen.str("classifier", &i["classifier"]);
                }
            }
            Kind::Authentication => {
                let d = data::authentication_details(SEED, &sc, base, sc.final_status);
                if !sc.extra_field {
                    assert_shape("authentication", &d, AUTH);
                }
                seen.str("auth.result", &d["transactionResult"]);
                if let Polls::After(n) = sc.polls {
                    for call in 1..=n {
                        seen.add("auth.result", sc.pending_status(call));
                    }
                }
                seen.add(
                    "auth.images",
                    if d["images"].is_object() {
                        "object"
                    } else {
                        "array"
                    },
                );
            }
            Kind::Document => {
                let d = data::document_data(SEED, &sc, base, "2019-01-01T00:00:00.000Z");
                if !sc.extra_field {
                    assert_document_data(&d);
                }
                let doc = d["document"].as_object().unwrap();
                seen.keys("dv.document", doc);
                seen.str("dv.type", &doc["type"]);
                seen.str("dv.status", &doc["status"]);
                seen.str("dv.transaction.status", &d["transaction"]["status"]);
                seen.str("dv.source", &d["transaction"]["source"]);
                seen.keys("dv.transaction", d["transaction"].as_object().unwrap());
                if let Some(e) = doc.get("extractedData") {
                    seen.keys("dv.extracted", e.as_object().unwrap());
                    seen.add("dv.extracted.type", doc["type"].as_str().unwrap());
                    seen.add(
                        "dv.nested-as",
                        if e["extractedData"].is_string() {
                            "string"
                        } else {
                            "object"
                        },
                    );
                    seen.keys("dv.nested", nested(e).as_object().unwrap());
                }
                let p = data::document_pages(&sc, base, "2019-01-01T00:00:00.000Z");
                seen.add(
                    "dv.pages",
                    if p["images"].is_object() {
                        "object"
                    } else {
                        "array"
                    },
                );
            }
        }
    }
    for b in [
        "404",
        "pending-then-final",
        "pending-forever",
        "ready",
        "object",
        "extra",
        "liveness-unordered",
    ] {
        assert!(
            behaviours.contains(b),
            "behaviour {b} missing from the population"
        );
    }
    let count = |pred: &dyn Fn(&Scenario) -> bool| {
        refs.iter()
            .filter(|(r, _)| pred(&scenario(SEED, r).unwrap()))
            .count() as f64
            / refs.len() as f64
    };
    let done =
        count(&|s| !s.retention_404 && s.polls == Polls::Ready && s.final_status != "FAILED");
    assert!(done > 0.7, "most are final at once: {done}");
    for (what, share) in [
        ("404", count(&|s| s.retention_404)),
        (
            "pending-then-final",
            count(&|s| matches!(s.polls, Polls::After(_))),
        ),
        ("pending-forever", count(&|s| s.polls == Polls::Never)),
        ("failed", count(&|s| s.final_status == "FAILED")),
    ] {
        assert!((0.005..0.12).contains(&share), "{what}: {share}");
    }
    seen.expect("kind", &["netverify", "document", "authentication"]);
    seen.expect("status", &["DONE", "FAILED"]);
    seen.expect(
        "document.status",
        &[
            "APPROVED_VERIFIED",
            "DENIED_FRAUD",
            "DENIED_UNSUPPORTED_ID_TYPE",
            "DENIED_UNSUPPORTED_ID_COUNTRY",
            "ERROR_NOT_READABLE_ID",
            "NO_ID_UPLOADED",
        ],
    );
    seen.expect(
        "document.type",
        &[
            "PASSPORT",
            "DRIVING_LICENSE",
            "ID_CARD",
            "VISA",
            "UNSUPPORTED",
        ],
    );
    seen.expect("document.idSubtype", &data::ID_CARD_SUBTYPES);
    seen.expect(
        "document.idSubtype",
        &["LEARNING_DRIVING_LICENSE", "E_PASSPORT"],
    );
    seen.expect("document.issuingCountry", &["XKX", "USA", "AUT"]);
    seen.expect(
        "document",
        &NV_DOCUMENT.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    );
    seen.expect(
        "address",
        &ADDRESS.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    );
    seen.expect("address-format", &["US", "EU", "RAW"]);
    seen.expect(
        "transaction",
        &NV_TRANSACTION.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    );
    seen.expect("transaction.source", &data::NETVERIFY_SOURCES);
    seen.expect("transaction.status", &["DONE", "FAILED"]);
    seen.expect(
        "verification",
        &[
            "mrzCheck",
            "rejectReason",
            "identityVerification",
            "livenessCheck",
        ],
    );
    seen.expect("document", &["placeOfBirth"]);
    seen.expect("mrzCheck", &["OK", "NOT_AVAILABLE"]);
    let reasons: Vec<String> = data::FRAUD_REASONS
        .iter()
        .chain(data::UNREADABLE_REASONS.iter())
        .map(|(c, d)| format!("{c} {d}"))
        .collect();
    seen.expect(
        "reject",
        &reasons.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let d100: Vec<String> = data::DETAILS_100
        .iter()
        .map(|(c, d)| format!("{c} {d}"))
        .collect();
    seen.expect(
        "details100",
        &d100.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let d200: Vec<String> = data::DETAILS_200
        .iter()
        .map(|(c, d)| format!("{c} {d}"))
        .collect();
    seen.expect(
        "details200",
        &d200.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    seen.expect(
        "identity.similarity",
        &["MATCH", "NO_MATCH", "NOT_POSSIBLE"],
    );
    seen.expect("identity.validity", &["TRUE", "FALSE", "true", "false"]);
    seen.expect("identity.reason", &data::IDENTITY_REASONS);
    seen.expect("identity.handwrittenNoteMatches", &["TRUE", "FALSE"]);
    seen.expect("classifier", &["front", "face", "back"]);
    seen.expect(
        "auth.result",
        &[
            "CREATED", "STARTED", "PASSED", "FAILED", "INVALID", "EXPIRED",
        ],
    );
    seen.expect("auth.images", &["object", "array"]);
    seen.expect("dv.type", &data::DV_TYPES);
    seen.expect("dv.extracted.type", &data::DV_TYPES);
    seen.expect("dv.status", &["UPLOADED", "EXTRACTED", "DISCARDED"]);
    seen.expect("dv.transaction.status", &["DONE", "FAILED"]);
    seen.expect("dv.source", &["DOC_API", "DOC_UPLOAD"]);
    seen.expect(
        "dv.document",
        &DV_DOCUMENT.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    );
    seen.expect(
        "dv.extracted",
        &DV_EXTRACTED.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    );
    seen.expect(
        "dv.nested",
        &DV_NESTED.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    );
    seen.expect("dv.nested-as", &["string", "object"]);
    seen.expect(
        "dv.transaction",
        &DV_TRANSACTION.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    );
    seen.expect("dv.pages", &["object", "array"]);
    seen.expect("name", &["Zoë", "Łukasz", "José", "Ñúñez"]);
    seen.expect("char", &["山", "И"]);
    assert!(
        absent_issuing_date > 0,
        "optional fields are sometimes absent"
    );
}
