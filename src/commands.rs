//! One function per subcommand: turn parsed arguments into a job, run it, and return the exit code.
//! Errors are printed here, once, naming the file, key or reference; nothing below prints.

use std::path::Path;

use crate::cli::{Command, RunFlags};
use crate::exit::ExitCode;
use crate::input;
use crate::job::{self, Credentials, Job, Overrides};
use crate::output::archive::{AgeIdentities as ArchiveIdentities, ArchiveKey};
use crate::run::{self, RunOptions};

/// Runs a parsed command line and returns the process exit code.
pub async fn execute(command: Command) -> ExitCode {
    match command {
        Command::Run {
            job,
            overrides,
            flags,
        } => run_job(&job, &overrides, &flags).await,
        #[cfg(feature = "simulator")]
        Command::Demo { out, count, quiet } => simulated::demo(&out, count, quiet).await,
        #[cfg(feature = "simulator")]
        Command::Simulate(args) => simulated::simulate(args).await,
        Command::Plan { job, overrides } => plan(&job, &overrides),
        Command::Verify {
            dir,
            since,
            key_env,
            public_key,
            pii_key_env,
            age_identity_env,
        } => match crate::store::BucketUrl::parse(&dir) {
            None => verify(
                &dir,
                since.as_deref(),
                &key_env,
                public_key.as_deref(),
                (pii_key_env.as_deref(), age_identity_env.as_deref()),
            ),
            Some(url) => {
                verify_bucket(
                    url,
                    since.as_deref(),
                    &key_env,
                    public_key,
                    (pii_key_env, age_identity_env),
                )
                .await
            }
        },
        Command::Upgrade { location, key_env } => upgrade(&location, &key_env).await,
        Command::Schema {
            dialect,
            table,
            pii,
        } => schema(dialect, table.as_deref(), pii),
        Command::Load {
            location,
            postgres,
            schema,
            key_env,
        } => load_postgres(&location, postgres, schema, &key_env).await,
    }
}

/// `schema`: the DDL on stdout; 2 for an unknown table.
fn schema(
    dialect: crate::warehouse::ddl::Dialect,
    table: Option<&str>,
    pii: crate::flatten::pii::Pii,
) -> ExitCode {
    use crate::warehouse::ddl;
    let only = match table {
        None => None,
        Some(name) => match ddl::tables_for(pii).into_iter().find(|t| t.name == name) {
            Some(t) => Some(t),
            None => {
                eprintln!(
                    "error: --table {name:?}: no such table; the tables are {}",
                    crate::dataset::TABLES.join(", ")
                );
                return ExitCode::Usage;
            }
        },
    };
    print!("{}", ddl::script_for(dialect, None, only.as_ref(), pii));
    ExitCode::Success
}

/// `load`: 0 loaded (or nothing to load), 1 verify rejects a commit, 2 usage or a table with
/// other columns, 3 the database or the location failed, 130 interrupted. Whatever the code, no
/// commit is half-loaded.
async fn load_postgres(
    location: &Path,
    url: String,
    schema: Option<String>,
    key_env: &str,
) -> ExitCode {
    use crate::warehouse::postgres;
    let key = match optional_key(key_env) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let opts = postgres::LoadOptions { url, schema, key };
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot watch for SIGTERM: {e}");
                return ExitCode::Fatal;
            }
        };
    tokio::select! {
        result = postgres::load(location, &opts) => match result {
            Ok(summary) => {
                print!("{}", summary.table());
                ExitCode::Success
            }
            Err(e) => {
                eprintln!("error: {e}");
                e.exit_code()
            }
        },
        // Dropping the load closes the connection: the server rolls the open commit back.
        _ = tokio::signal::ctrl_c() => interrupted_load(),
        _ = terminate.recv() => interrupted_load(),
    }
}

fn interrupted_load() -> ExitCode {
    eprintln!(
        "interrupted: the commit being loaded was rolled back; run the same command again to load the rest"
    );
    ExitCode::Interrupted
}

fn load(path: &Path, overrides: &Overrides) -> Result<(Job, input::InputList), ExitCode> {
    let job = load_job(path, overrides)?;
    let list = read_job_input(&job)?;
    Ok((job, list))
}

fn load_job(path: &Path, overrides: &Overrides) -> Result<Job, ExitCode> {
    job::load(path, overrides).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::Usage
    })
}

fn read_job_input(job: &Job) -> Result<input::InputList, ExitCode> {
    let Some(source) = job.input.path.as_deref() else {
        eprintln!(
            "error: {}: no input: set [input] path or pass --input FILE (or - for standard input)",
            job.path.display()
        );
        return Err(ExitCode::Usage);
    };
    let list = input::read_input_in(source, job.input.default_kind, &spool_dir(&job.output.dir))
        .map_err(|e| match e {
            // The input is fine; the output directory's file system could not keep it.
            input::InputError::Spool { .. } => {
                eprintln!("error: output directory {}: {e}", job.output.dir.display());
                ExitCode::Fatal
            }
            _ => {
                eprintln!("error: {e}");
                ExitCode::Usage
            }
        })?;
    // `run` and `plan` keep only this shard's references themselves.
    Ok(list)
}

/// Where the reference list is kept while the job runs: the output directory, or its nearest
/// existing parent (nothing is created before the input is known to be good), so it lives on the
/// file system chosen for the export's data.
fn spool_dir(out: &Path) -> std::path::PathBuf {
    if crate::store::BucketUrl::parse(out).is_some() {
        return std::env::temp_dir();
    }
    let mut dir = out;
    loop {
        if dir.is_dir() {
            return dir.to_path_buf();
        }
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
            _ => return std::path::PathBuf::from("."),
        }
    }
}

async fn run_job(path: &Path, overrides: &Overrides, flags: &RunFlags) -> ExitCode {
    let job = match load_job(path, overrides) {
        Ok(job) => job,
        Err(code) => return code,
    };
    // The commits are read while the input is: a rerun of a large input is mostly these two.
    let commits = run::resume::Prefetch::start(&job.output.dir);
    let list = match read_job_input(&job) {
        Ok(list) => list,
        Err(code) => return code,
    };
    let credentials = match Credentials::from_env(&job.api) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::Usage;
        }
    };
    execute_job(&job, list, &credentials, flags, commits).await
}

async fn execute_job(
    job: &Job,
    list: input::InputList,
    credentials: &Credentials,
    flags: &RunFlags,
    commits: Option<run::resume::Prefetch>,
) -> ExitCode {
    let opts = match run_options(job, flags, commits) {
        Ok(opts) => opts,
        Err(code) => return code,
    };
    match run::run(job, list, credentials, opts).await {
        Ok(summary) => {
            print!("{}", summary.table());
            if summary.denied {
                eprintln!(
                    "error: the API refused the credentials (401/403 on a status call); check the values of {} and {}",
                    job.api.token_env, job.api.secret_env
                );
            } else if summary.interrupted {
                eprintln!(
                    "interrupted: run the same command again to resume; completed archives are kept"
                );
            }
            let expected: Vec<_> = flags.exit_zero_on.iter().map(|e| e.code()).collect();
            // Summary speaks in numbers for now; anything undocumented is treated as fatal.
            ExitCode::try_from(summary.exit_code_allowing(&expected)).unwrap_or(ExitCode::Fatal)
        }
        Err(
            e @ (run::RunError::LegacyLayout { .. }
            | run::RunError::PiiProfile { .. }
            | run::RunError::ArchiveMode(_)
            | run::RunError::StoreSettings(_)),
        ) => {
            eprintln!("error: {e}");
            ExitCode::Usage
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::Fatal
        }
    }
}

/// The run's options from the job and the flags: the archive key, the commit signer and the
/// pseudonymiser from their variables (exit 2 naming the key when one is unusable), and the
/// PCI DSS warnings the job's settings call for.
fn run_options(
    job: &Job,
    flags: &RunFlags,
    commits: Option<run::resume::Prefetch>,
) -> Result<RunOptions, ExitCode> {
    let archive_key = archive_key(job)?;
    let commit_signer = match &job.output.signing_key_env {
        None => None,
        Some(var) => match crate::output::signing::CommitSigner::from_env(var) {
            Ok(s) => Some(std::sync::Arc::new(s)),
            Err(e) => {
                eprintln!(
                    "error: {}: [output] signing_key_env: {e}",
                    job.path.display()
                );
                return Err(ExitCode::Usage);
            }
        },
    };
    let pseudonymiser = pseudonymiser(job)?;
    if job.output.pii == crate::flatten::pii::Pii::Full && (job.output.csv || job.output.parquet) {
        tracing::warn!(
            "[output] pii = \"full\": the documents table's pan column (a card number) and every other direct identifier are written in clear; storing card numbers brings this export into PCI DSS scope (pii = \"pseudonymised\" or \"minimal\" avoids it)"
        );
    }
    if job.fetch.unmasked_card_images {
        tracing::warn!(
            "unmasked_card_images = true: unmasked card images are cardholder data; storing them brings this export into PCI DSS scope"
        );
    }
    Ok(RunOptions {
        quiet: flags.quiet,
        progress: flags.progress,
        progress_interval: std::time::Duration::from_secs_f64(flags.progress_interval),
        retry_failed: flags.retry_failed,
        archive_key,
        commit_signer,
        pseudonymiser,
        commits,
        ..RunOptions::default()
    })
}

/// The key of `[output] pii = "pseudonymised"`, from the variable `pii_key_env` names.
fn pseudonymiser(job: &Job) -> Result<Option<crate::flatten::pii::Pseudonymiser>, ExitCode> {
    use crate::flatten::pii::{Pii, Pseudonymiser};
    if job.output.pii != Pii::Pseudonymised {
        return Ok(None);
    }
    let var = job.output.pii_key_env.as_deref().unwrap_or_default();
    match std::env::var_os(var).map(|v| Pseudonymiser::new(v.as_encoded_bytes())) {
        Some(Some(p)) => Ok(Some(p)),
        Some(None) => {
            eprintln!(
                "error: {}: [output] pii_key_env: {var} is shorter than {} bytes",
                job.path.display(),
                Pseudonymiser::MIN_KEY_LEN
            );
            Err(ExitCode::Usage)
        }
        None => {
            eprintln!(
                "error: {}: [output] pii_key_env: {var} is not set (pii = \"pseudonymised\" needs its key)",
                job.path.display()
            );
            Err(ExitCode::Usage)
        }
    }
}

/// The key of `[output] encrypt_archives`, from the variable the job names.
fn archive_key(job: &Job) -> Result<Option<ArchiveKey>, ExitCode> {
    if !job.output.encrypt_archives {
        return Ok(None);
    }
    let var = &job.output.archive_key_env;
    match std::env::var_os(var).map(|v| ArchiveKey::new(v.as_encoded_bytes())) {
        Some(Some(k)) => Ok(Some(k)),
        Some(None) => {
            eprintln!(
                "error: {}: [output] encrypt_archives = true but {var} is shorter than {} bytes",
                job.path.display(),
                ArchiveKey::MIN_LEN
            );
            Err(ExitCode::Usage)
        }
        None => {
            eprintln!(
                "error: {}: [output] encrypt_archives = true but {var} is not set",
                job.path.display()
            );
            Err(ExitCode::Usage)
        }
    }
}

/// `verify s3://…`: the dataset copied into a local scratch directory (commits, parts,
/// archives; store settings from the environment: `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` for a
/// loopback endpoint), then verified there.
async fn verify_bucket(
    url: Result<crate::store::BucketUrl, String>,
    since: Option<&str>,
    key_env: &str,
    public_key: Option<std::path::PathBuf>,
    (pii_key_env, age_identity_env): (Option<String>, Option<String>),
) -> ExitCode {
    let url = match url {
        Ok(u) => u,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::Usage;
        }
    };
    let scratch = match tempfile::Builder::new()
        .prefix("jumio-export-verify-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: creating a scratch directory (under TMPDIR) to verify {url} in: {e}");
            return ExitCode::Fatal;
        }
    };
    let settings = crate::store::StoreSettings::default();
    match crate::store::mirror(&url, &settings, scratch.path()).await {
        Ok(n) => eprintln!(
            "verify: {url}: {n} objects read into {} (removed after)",
            scratch.path().display()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::Fatal;
        }
    }
    let (dir, since, key_env) = (
        scratch.path().to_path_buf(),
        since.map(str::to_string),
        key_env.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        verify(
            &dir,
            since.as_deref(),
            &key_env,
            public_key.as_deref(),
            (pii_key_env.as_deref(), age_identity_env.as_deref()),
        )
    })
    .await
    .unwrap_or(ExitCode::Fatal)
}

fn verify(
    dir: &Path,
    since: Option<&str>,
    key_env: &str,
    public_key: Option<&Path>,
    (pii_key_env, age_identity_env): (Option<&str>, Option<&str>),
) -> ExitCode {
    let age_identities = match age_identity_env {
        None => None,
        Some(var) => match std::env::var(var).map(|text| ArchiveIdentities::parse(&text)) {
            Ok(Ok(ids)) => Some(ids),
            // The reason names what is wrong, never the variable's content.
            Ok(Err(why)) => {
                eprintln!("error: --age-identity-env: {var} holds {why}");
                return ExitCode::Usage;
            }
            Err(_) => {
                eprintln!("error: --age-identity-env: {var} is not set (or not UTF-8)");
                return ExitCode::Usage;
            }
        },
    };
    let pseudonymiser = match pii_key_env {
        None => None,
        Some(var) => match std::env::var_os(var)
            .and_then(|v| crate::flatten::pii::Pseudonymiser::new(v.as_encoded_bytes()))
        {
            Some(p) => Some(p),
            None => {
                eprintln!("error: --pii-key-env: {var} is not set or shorter than 16 bytes");
                return ExitCode::Usage;
            }
        },
    };
    let public_key = match public_key.map(crate::output::signing::CommitPublicKey::read) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            eprintln!("error: --public-key: {e}");
            return ExitCode::Usage;
        }
    };
    // The key is optional here: without it, encrypted entries are reported as unreadable.
    let key = match std::env::var_os(key_env) {
        Some(v) => match ArchiveKey::new(v.as_encoded_bytes()) {
            Some(k) => Some(k),
            None => {
                eprintln!(
                    "error: {key_env} is shorter than {} bytes",
                    ArchiveKey::MIN_LEN
                );
                return ExitCode::Usage;
            }
        },
        None => None,
    };
    let opts = crate::verify::VerifyOptions {
        key: key.as_ref(),
        since,
        public_key: public_key.as_ref(),
        pseudonymiser: pseudonymiser.as_ref(),
        age_identities: age_identities.as_ref(),
    };
    match crate::verify::verify_with(dir, opts) {
        Ok(report) => {
            print!("{report}");
            if report.is_ok() {
                ExitCode::Success
            } else {
                ExitCode::Partial
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::Usage
        }
    }
}

/// `upgrade`: prints what it did; 0 upgraded or already a dataset, 2 nothing to upgrade or no
/// key for encrypted archives, 3 the location cannot be upgraded as it is.
async fn upgrade(location: &Path, key_env: &str) -> ExitCode {
    use crate::run::upgrade::{self, Upgrade, UpgradeError};
    let key = match optional_key(key_env) {
        Ok(k) => k,
        Err(code) => return code,
    };
    match upgrade::upgrade(location, key, chrono::Utc::now()).await {
        Ok(Upgrade::Upgraded(done)) => {
            print!("{}", done.table());
            ExitCode::Success
        }
        Ok(Upgrade::AlreadyDataset { old_tables }) => {
            println!(
                "{} is a dataset already (it has commits); nothing to upgrade",
                location.display()
            );
            if old_tables {
                eprintln!(
                    "warning: it also holds netverify.csv or other tables of the layout before datasets at its top level, which `run` refuses: move them aside"
                );
            }
            ExitCode::Success
        }
        Ok(Upgrade::NothingToUpgrade) => {
            eprintln!(
                "error: {} holds no tables of an earlier jumio-export and no archives/*.zip: nothing to upgrade",
                location.display()
            );
            ExitCode::Usage
        }
        Err(e @ UpgradeError::KeyNeeded { .. }) => {
            eprintln!("error: {e}");
            ExitCode::Usage
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::Fatal
        }
    }
}

/// The archive key from `key_env` when it is set (a key that is too short is a usage error).
fn optional_key(key_env: &str) -> Result<Option<ArchiveKey>, ExitCode> {
    match std::env::var_os(key_env) {
        Some(v) => match ArchiveKey::new(v.as_encoded_bytes()) {
            Some(k) => Ok(Some(k)),
            None => {
                eprintln!(
                    "error: {key_env} is shorter than {} bytes",
                    ArchiveKey::MIN_LEN
                );
                Err(ExitCode::Usage)
            }
        },
        None => Ok(None),
    }
}

fn plan(path: &Path, overrides: &Overrides) -> ExitCode {
    match load(path, overrides) {
        Ok((job, list)) => match crate::plan::budget(&job, &list) {
            Ok(budget) => {
                print!("{budget}");
                ExitCode::Success
            }
            Err(e) => {
                eprintln!("error: reading the input list's temporary file failed: {e}");
                ExitCode::Fatal
            }
        },
        Err(code) => code,
    }
}

/// `demo` and `simulate`: the commands that need the simulator, absent from a build without
/// the `simulator` feature (clap then knows no such subcommand).
#[cfg(feature = "simulator")]
mod simulated {
    use std::path::Path;

    use super::{execute_job, read_job_input};
    use crate::cli::{CeilingWindowArg, SimulateArgs};
    use crate::exit::ExitCode;
    use crate::job::{self, Credentials, Overrides};
    use crate::output::fsmode;
    use crate::simulator::{self, CeilingWindow, Faults, SimOptions};

    /// Readable simulator references the demo adds so every outcome shows: not found (retention),
    /// pending forever, pending then done, failed, foreign hrefs, `images` as a single object.
    const DEMO_EXTRAS: &[(&str, crate::Kind)] = &[
        ("nf-n-demo", crate::Kind::Netverify),
        ("nf-d-demo", crate::Kind::Document),
        ("pf-n-demo", crate::Kind::Netverify),
        ("pf-a-demo", crate::Kind::Authentication),
        ("p3-n-demo", crate::Kind::Netverify),
        ("p2-a-demo", crate::Kind::Authentication),
        ("fail-n-demo", crate::Kind::Netverify),
        ("fh-n-demo", crate::Kind::Netverify),
        ("obj-n-demo", crate::Kind::Netverify),
    ];

    /// The demo's job file, compiled in so `demo` works from any directory.
    const DEMO_JOB: &str = include_str!("../jobs/demo.toml");

    pub(super) async fn demo(out: &Path, count: usize, quiet: bool) -> ExitCode {
        let sim_opts = SimOptions::default();
        let credentials = Credentials::new(sim_opts.token.clone(), sim_opts.secret.clone());
        let seed = sim_opts.seed;
        let sim = match simulator::start(sim_opts, "127.0.0.1:0".parse().expect("loopback address"))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot start the simulator on loopback: {e}");
                return ExitCode::Fatal;
            }
        };
        let refs_path = out.join("demo-references.csv");
        let o = Overrides {
            input: Some(refs_path.display().to_string()),
            out: Some(out.to_path_buf()),
            base_url: Some(sim.base_url()),
            ..Overrides::default()
        };
        let job = match job::parse(DEMO_JOB, Path::new("jobs/demo.toml"), &o) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::Usage;
            }
        };
        // The reference list is the demo's first output: it gets the job's modes like the rest.
        let modes = fsmode::Modes {
            file: job.output.file_mode,
            dir: job.output.dir_mode,
        };
        if let Err(e) = modes.create_root_dir(out) {
            eprintln!("error: output directory {}: {e}", out.display());
            return ExitCode::Fatal;
        }
        if let Err(e) = write_references(&refs_path, seed, count, modes) {
            eprintln!("error: {}: {e}", refs_path.display());
            return ExitCode::Fatal;
        }
        let list = match read_job_input(&job) {
            Ok(l) => l,
            Err(code) => return code,
        };
        println!(
            "demo: simulator at {} serving {} references; exporting into {}",
            sim.base_url(),
            list.items.len() + list.rejected.len() as u64,
            out.display()
        );
        let flags = crate::cli::RunFlags {
            quiet,
            progress_interval: 10.0,
            ..Default::default()
        };
        let code = execute_job(&job, list, &credentials, &flags, None).await;
        sim.shutdown().await;
        println!(
            "demo: outputs in {} (archives/, tables/, commits/, failures.csv, report.json, report.html)",
            out.display()
        );
        // The demo includes failures on purpose; it succeeded if the run itself finished.
        if code == ExitCode::Partial {
            ExitCode::Success
        } else {
            code
        }
    }

    /// The demo's reference list (`reference,kind`): `count` of the simulator's population, the
    /// [`DEMO_EXTRAS`], and a few references that must never reach the API. Created with the
    /// job's file mode, like every other output.
    fn write_references(
        path: &Path,
        seed: u64,
        count: usize,
        modes: fsmode::Modes,
    ) -> std::io::Result<()> {
        let mut refs = simulator::population(seed, count);
        refs.extend(DEMO_EXTRAS.iter().map(|(r, k)| (r.to_string(), *k)));
        let mut w = csv::Writer::from_writer(modes.create_file(path)?);
        w.write_record(["reference", "kind"])?;
        for (r, k) in &refs {
            w.write_record([r.as_str(), k.as_str()])?;
        }
        w.write_record(["not/a-reference", "netverify"])?;
        w.write_record([&"x".repeat(37), "netverify"])?;
        w.flush()
    }

    pub(super) async fn simulate(a: SimulateArgs) -> ExitCode {
        let mut opts = SimOptions {
            seed: a.seed,
            token: a.token,
            secret: a.secret,
            allow_unmasked: a.allow_unmasked,
            request_log: a.request_log,
            faults: Faults {
                latency_ms: a.latency_ms,
                error_rate: a.error_rate,
                rate_429: a.rate_429,
                retry_after_429: a.retry_after,
                ceiling_rps: a.ceiling_rps,
                ceiling_window: match a.ceiling_window {
                    CeilingWindowArg::Bucket => CeilingWindow::Bucket,
                    CeilingWindowArg::Sliding => CeilingWindow::Sliding {
                        count_refused: false,
                    },
                    CeilingWindowArg::SlidingRefused => CeilingWindow::Sliding {
                        count_refused: true,
                    },
                },
                ceiling_changes: {
                    let mut changes = a.ceiling_change;
                    changes.sort_by(|x, y| x.0.total_cmp(&y.0));
                    changes
                },
                truncate_rate: a.truncate_rate,
                reset_rate: a.reset_rate,
                foreign_href_rate: a.foreign_href_rate,
                foreign_origin: a.foreign_origin,
            },
            ..SimOptions::default()
        };
        if let Some(n) = a.image_bytes {
            opts.image_bytes = n;
        }
        if let Some(n) = a.liveness_bytes {
            opts.liveness_bytes = n;
        }
        if let Some(n) = a.page_bytes {
            opts.page_bytes = n;
        }
        if let Some(n) = a.pdf_bytes {
            opts.pdf_bytes = n;
        }
        if let Some(path) = &a.references_out {
            let refs = simulator::population(a.seed, a.count);
            if let Err(e) = simulator::write_references_csv(path, &refs) {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::Fatal;
            }
            eprintln!("wrote {} references to {}", refs.len(), path.display());
        }
        // Nothing reads an in-memory log here; over days it would only grow.
        opts.memory_log = false;
        let handle = match simulator::start(opts, a.listen).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: simulator on {}: {e}", a.listen);
                return ExitCode::Fatal;
            }
        };
        // The bound address, so `--listen 127.0.0.1:0` tells which port it got.
        eprintln!(
            "simulator listening on {} (Ctrl-C stops it)",
            handle.base_url()
        );
        let _ = tokio::signal::ctrl_c().await;
        handle.shutdown().await;
        ExitCode::Success
    }
}
