//! Outputs: archives, tables, failures and the run report. Blocking code: callers run it off the async threads.

pub mod archive;
pub mod failures;
pub mod fsmode;
pub mod report;
pub mod signing;
pub mod tables;
