//! Warehouse loading: the DDL of every table for five SQL dialects ([`ddl`], behind
//! `jumio-export schema`) and the incremental, exactly-once load of a dataset's commits into
//! PostgreSQL ([`postgres`], behind `jumio-export load`).
//!
//! Both follow the one schema in [`crate::flatten`]; neither talks to the Jumio API. The load
//! reads the dataset through [`crate::dataset`] and refuses what [`crate::verify`] rejects.

pub mod ddl;
mod pgpass;
pub mod postgres;
