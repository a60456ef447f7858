//! `report.json`: its root hash must equal the one recomputed over the archives on disk.

use std::io;

use super::{REPORT_JSON, Verifier, VerifyReport};
use crate::output::report;

impl Verifier<'_> {
    /// Compares `report.json`'s `root_hash` with the one over `pairs` (reference, archive sha256).
    pub(super) fn check_report_json(
        &self,
        mut pairs: Vec<(String, String)>,
        report: &mut VerifyReport,
    ) {
        let path = self.dir.join(REPORT_JSON);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                report.finding(
                    REPORT_JSON,
                    "missing: the root hash over the archives cannot be checked",
                );
                return;
            }
            Err(e) => {
                report.finding(REPORT_JSON, format!("cannot be read: {e}"));
                return;
            }
        };
        let json: serde_json::Value = match serde_json::from_slice(&text) {
            Ok(json) => json,
            Err(e) => {
                report.finding(REPORT_JSON, format!("does not parse: {e}"));
                return;
            }
        };
        let Some(recorded) = json.get("root_hash").and_then(|v| v.as_str()) else {
            report.finding(REPORT_JSON, "has no root_hash");
            return;
        };
        let archives = pairs.len();
        let recomputed = report::root_hash(&mut pairs);
        if recorded != recomputed {
            let counted = json
                .get("archives")
                .and_then(|v| v.as_u64())
                .map_or(String::new(), |n| format!(" over {n} archives"));
            report.finding(
                REPORT_JSON,
                format!(
                    "root_hash {recorded}{counted} does not match {recomputed}, recomputed over the {archives} archives on disk"
                ),
            );
        }
    }
}
