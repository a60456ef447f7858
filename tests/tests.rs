//! Integration tests: one binary, one submodule per area.

// ZIP archives: names, determinism, manifest, tamper detection, the system unzip.
mod archive;
// Job files, reference input, sharding and the request budget.
mod config;
// JSON → rows, the committed table schemas, CSV and Parquet read back.
mod flatten;
// The export job end to end against the simulator over real HTTP.
mod pipeline;
// The simulator: documented shapes, auth rules, determinism, faults, request log.
mod sim;
// Property tests: enclosed entry names, origin check, fixed flatten schema.
mod properties;
// Fuzz-found crashes, replayed; the fuzz targets' checks run in the normal suite.
mod regressions;
