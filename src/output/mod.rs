//! (work in progress)
pub mod tables;
