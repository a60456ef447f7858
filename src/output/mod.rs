//! (work in progress)

pub mod archive;
