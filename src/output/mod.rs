//! Outputs: archives, tables, failures and the run report (`report.json`, `report.html`). Blocking code: callers run it off the async threads.

pub mod archive;
pub mod failures;
pub mod fsmode;
pub mod report;
pub mod report_html;
pub mod signing;
pub mod tables;
