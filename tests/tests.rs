//! Integration tests: one binary, one submodule per area.

// ZIP archives: names, determinism, manifest, tamper detection, the system unzip.
mod archive;
// JSON → rows, the committed table schemas, CSV and Parquet read back.
mod flatten;
