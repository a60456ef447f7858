//! Integration tests: one binary, one submodule per area.

// Hostile responses, hrefs, redirects, names, input and job files: a numbered catalogue.
mod adversarial;
// Archives encrypted to public keys with age: opened by the Debian age tool, verified without
// an identity, taken over after kill -9 without a request, and a mode mismatch stopping a run.
mod age;
// The benchmark harness's core on a tiny population (nothing timed is asserted).
mod bench_smoke;
// ZIP archives: names, determinism, manifest, tamper detection, the system unzip.
mod archive;
// The binary as users call it: demo, plan, run --shard; Parquet read back by DuckDB.
mod cli;
// docs/: columns generated from the schema, the job file reference checked against the parser,
// links that stay in the repository or go to public sites.
mod docs;
// Job files, reference input, sharding and the request budget.
mod config;
// JSON → rows, the committed table schemas, CSV and Parquet read back.
mod flatten;
// Outages pause instead of failing: the simulator stopped for 30 s mid-run and restarted.
mod outage;
// --progress json: lines parse, counters grow, the last line agrees with report.json.
mod progress;
// Array jobs on real schedulers: --shard auto per scheduler, --exit-zero-on, the examples.
mod schedulers;
// The export job end to end against the simulator over real HTTP.
mod pipeline;
// The location as a dataset: batches, reruns that fetch and read nothing, shards and overlapping runs.
mod dataset;
// report.html rendered by headless Chromium (DOM, screenshot, PDF) and checked against report.json.
mod report_html;
// Resuming after kill -9 and Ctrl-C, stale temporaries, the once-a-day rule, the directory lock.
mod resume;
// The simulator: documented shapes, auth rules, determinism, faults, request log.
// Shared helpers: the binary with credentials, exportable simulator references.
mod support;
// Peers (unzip, 7-Zip, sha256sum, age, DuckDB, sqlglot, PostgreSQL, a tmpfs mount): found on PATH; a missing one skips with
// a message on a developer machine and fails the test when CI is set.
mod peers;
// Canary credentials searched for in every log line, error, table, report and archive.
mod secrets;
mod sim;
// Object storage: exports into moto and SeaweedFS on loopback, read back from the bucket, and
// the store's faults (missing bucket, refused credentials, a killed store, a killed exporter).
mod store;
// Politeness that converges: the adaptive rate against Jumio-like ceilings (sliding window, refused
// requests counted, a ceiling that changes, two processes sharing one), 429s and the retry budget.
// Long: 26–37 s per scenario, one at a time (about 2.5 minutes), judged from the simulator's request log.
mod throttle;
// upgrade: an old-layout directory built by hand, upgraded in place, then run against.
mod upgrade;
// Warehouse loads: schema DDL in PostgreSQL, DuckDB and sqlglot; load into a throw-away PostgreSQL.
mod warehouse;
// verify: a real export checked clean, then each kind of damage found and named.
mod verify;
// Property tests: enclosed entry names, origin check, fixed flatten schema.
mod properties;
// The fuzz targets' checks in the normal suite: every seed of all five targets, and the crash
// inputs found by reading the code (not by the fuzzer), replayed.
mod regressions;
