//! Peers: the programs and system capabilities some tests check the export against — `unzip`,
//! 7-Zip, `sha256sum`, `age` and `age-keygen` (Debian's `age`: archives encrypted to public
//! keys), `ssh-keygen`, DuckDB, sqlglot and PyYAML (Python modules), headless Chromium for
//! `report.html`, a tmpfs mount for the disk-full tests,
//! and throw-away PostgreSQL clusters for the warehouse tests ([`PgServer`]).
//!
//! On a developer machine a missing peer skips that check, with a line on stderr saying so.
//! With `CI` set, a missing peer fails the test: CI never reports a check as passed that did not
//! run. `.ci/run` installs every peer and points [`PYTHON_VAR`] at a Python that has DuckDB.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable naming a Python interpreter that can `import duckdb` (`.ci/run` sets it to its
/// virtual environment's interpreter).
pub const PYTHON_VAR: &str = "JUMIO_TEST_PYTHON";

/// Whether the tests run under CI: `CI` set to anything but empty, `0` or `false` (CI services
/// set `CI=true`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Reports that a peer is unavailable: panics under CI, otherwise prints that the check is
/// skipped. Always `None`, so a caller writes `let Some(x) = … else { return; }` and the early
/// return is only ever reached off CI.
pub fn unavailable<T>(what: &str, why: &str) -> Option<T> {
    assert!(
        !under_ci(),
        "{what} is required when CI is set, but {why}; .ci/run installs it"
    );
    eprintln!("SKIPPED: {what}: {why} (CI runs this check; .ci/run installs it)");
    None
}

/// An executable called `name` in one of `PATH`'s directories.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// The program `name` looked up on `PATH`; `None` (skip) when absent, a panic under CI.
pub fn require(name: &str) -> Option<PathBuf> {
    match on_path(name) {
        Some(p) => Some(p),
        None => unavailable(&format!("`{name}`"), "it is not on PATH"),
    }
}

/// The variable naming a Chromium (or Chrome) binary for the report tests; else `chromium`,
/// `chromium-browser` or `google-chrome` on `PATH` (`.ci/run` installs Debian's `chromium`).
pub const CHROMIUM_VAR: &str = "JUMIO_TEST_CHROMIUM";

/// A headless-capable Chromium: [`CHROMIUM_VAR`] when set (and then it must exist), else the
/// first of `chromium`, `chromium-browser`, `google-chrome` on `PATH`. `None` (skip) when none
/// is, a panic under CI.
pub fn require_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CHROMIUM_VAR) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "{CHROMIUM_VAR}={} is not an executable",
            p.display()
        );
        return Some(p);
    }
    match ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| on_path(name))
    {
        Some(p) => Some(p),
        None => unavailable(
            "Chromium",
            &format!("{CHROMIUM_VAR} is not set and no chromium is on PATH"),
        ),
    }
}

/// A Python interpreter that can `import duckdb`: [`PYTHON_VAR`] when set (and then it must
/// work), else `.ci/venv/bin/python3` when `.ci/run` made it, else `python3` on `PATH`.
/// `None` (skip) when none can, a panic under CI.
pub fn require_python_duckdb() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python3");
    let python = match std::env::var_os(PYTHON_VAR) {
        Some(p) => PathBuf::from(p),
        None if venv.exists() => venv,
        None => match on_path("python3") {
            Some(p) => p,
            None => {
                return unavailable(
                    "Python with DuckDB",
                    &format!("{PYTHON_VAR} is not set and no python3 is on PATH"),
                );
            }
        },
    };
    match Command::new(&python).args(["-c", "import duckdb"]).output() {
        Ok(o) if o.status.success() => Some(python),
        Ok(o) => unavailable(
            "Python with DuckDB",
            &format!(
                "{} cannot import duckdb ({}); set {PYTHON_VAR} to a Python that has it",
                python.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ),
        Err(e) => unavailable(
            "Python with DuckDB",
            &format!("{} does not run: {e}", python.display()),
        ),
    }
}

/// A Python interpreter that can `import yaml` (PyYAML), for the example manifests: chosen like
/// [`require_python_duckdb`] (`.ci/run` installs PyYAML into the same virtual environment).
/// `None` (skip) when none can, a panic under CI.
pub fn require_python_yaml() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python3");
    let python = match std::env::var_os(PYTHON_VAR) {
        Some(p) => PathBuf::from(p),
        None if venv.exists() => venv,
        None => match on_path("python3") {
            Some(p) => p,
            None => {
                return unavailable(
                    "Python with PyYAML",
                    &format!("{PYTHON_VAR} is not set and no python3 is on PATH"),
                );
            }
        },
    };
    match Command::new(&python).args(["-c", "import yaml"]).output() {
        Ok(o) if o.status.success() => Some(python),
        Ok(o) => unavailable(
            "Python with PyYAML",
            &format!(
                "{} cannot import yaml ({}); set {PYTHON_VAR} to a Python that has it",
                python.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ),
        Err(e) => unavailable(
            "Python with PyYAML",
            &format!("{} does not run: {e}", python.display()),
        ),
    }
}

#[test]
fn a_missing_peer_skips_off_ci_and_fails_under_ci() {
    // Decided by the variable the test runs under; both branches are exercised by running the
    // suite with and without CI (.ci/run sets it).
    let absent = "jumio-export-no-such-peer";
    assert!(on_path(absent).is_none());
    let outcome = std::panic::catch_unwind(|| require(absent));
    match outcome {
        Ok(found) => {
            assert!(!under_ci(), "a missing peer passed under CI");
            assert!(found.is_none());
        }
        Err(_) => assert!(under_ci(), "a missing peer failed off CI"),
    }
    // A peer every test machine has is found on PATH, not at a fixed location.
    let sh = on_path("sh").expect("sh on PATH");
    assert!(sh.is_absolute() && sh.ends_with("sh"));
}

/// A tmpfs of `size` mounted on a fresh directory (`path`), unmounted when dropped: the disk that
/// fills up in the disk-full tests. `None` off CI where this machine cannot mount one (the reason
/// printed); under CI that is a failure.
#[cfg(target_os = "linux")]
pub struct Tmpfs {
    /// The mount point.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: `64k`, `1m`).
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        match Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
        {
            Ok(o) if o.status.success() => Some(Tmpfs { path, _dir: dir }),
            Ok(o) => unavailable(
                "a tmpfs mount",
                &format!(
                    "mount -t tmpfs failed ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            ),
            Err(e) => unavailable("a tmpfs mount", &format!("mount does not run: {e}")),
        }
    }

    /// Changes the size of the mounted tmpfs (a full disk made roomy again, or the other way).
    pub fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

#[cfg(target_os = "linux")]
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// The variable naming the directory of PostgreSQL's server programs (`initdb`, `pg_ctl`);
/// without it the newest `/usr/lib/postgresql/*/bin` (Debian's layout) or `pg_config --bindir`.
pub const PG_BIN_VAR: &str = "JUMIO_TEST_PG_BIN";

/// A throw-away PostgreSQL cluster: `initdb` in a temporary directory, `pg_ctl start` on a free
/// loopback port (TCP on 127.0.0.1 only, password authentication with SCRAM), stopped and
/// removed when dropped. Under root the server programs run as the `postgres` user, since
/// `initdb` refuses root.
pub struct PgServer {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// The superuser, whose password is [`PgServer::PASSWORD`].
    pub user: &'static str,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl PgServer {
    /// The superuser's password (a test cluster on loopback only).
    pub const PASSWORD: &'static str = "pg-test-password-4e1f";

    fn bin_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os(PG_BIN_VAR) {
            return Some(PathBuf::from(dir));
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((v, bin))
            })
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Some(bin);
        }
        let o = Command::new("pg_config").arg("--bindir").output().ok()?;
        let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        dir.join("initdb").exists().then_some(dir)
    }

    fn program(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Starts a fresh cluster. `None` (skip) when PostgreSQL is not installed or does not
    /// start, a panic under CI.
    pub fn start() -> Option<PgServer> {
        let Some(bin) = Self::bin_dir() else {
            return unavailable(
                "PostgreSQL",
                &format!("no initdb under /usr/lib/postgresql/*/bin, {PG_BIN_VAR} or pg_config"),
            );
        };
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("jumio-pg")
            .tempdir()
            .unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, Self::PASSWORD).unwrap();
        if as_postgres {
            let owner = |p: &Path| {
                let st = Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(p)
                    .status()
                    .unwrap();
                assert!(st.success(), "chown postgres {}", p.display());
            };
            owner(dir.path());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PgServer {
            port,
            user: "jumio",
            bin,
            data: dir.path().join("data"),
            as_postgres,
            _dir: dir,
        };
        let o = server
            .program("initdb")
            .arg("-D")
            .arg(&server.data)
            .args(["-U", server.user, "-E", "UTF8", "--locale=C.UTF-8"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        if !o.status.success() {
            let why = format!("initdb failed: {}", String::from_utf8_lossy(&o.stderr));
            return unavailable("PostgreSQL", why.trim());
        }
        if !server.pg_ctl_start() {
            return unavailable("PostgreSQL", "pg_ctl start failed (see the log above)");
        }
        Some(server)
    }

    /// `pg_ctl start` on the cluster; true when it is up.
    fn pg_ctl_start(&self) -> bool {
        let socket_dir = self.data.parent().unwrap();
        let o = self
            .program("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
                self.port,
                socket_dir.display()
            ))
            .arg("-l")
            .arg(socket_dir.join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        if !o.status.success() {
            let log = std::fs::read_to_string(socket_dir.join("server.log")).unwrap_or_default();
            eprintln!(
                "pg_ctl start: {}{}\n{log}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        o.status.success()
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`: no checkpoint,
    /// open transactions lost).
    pub fn crash(&self) {
        let st = self
            .program("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .unwrap();
        assert!(st.status.success(), "pg_ctl stop: {st:?}");
    }

    /// Starts the server again after [`PgServer::crash`] (it recovers from its WAL).
    pub fn restart(&self) {
        assert!(self.pg_ctl_start(), "the server restarts");
    }

    /// `postgresql://USER@127.0.0.1:PORT/DATABASE`, without the password.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{}@127.0.0.1:{}/{database}",
            self.user, self.port
        )
    }

    /// `psql` against `database` with the password in its environment.
    pub fn psql(&self, database: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        if !self.bin.join("psql").exists() {
            c = Command::new("psql");
        }
        c.env("PGPASSWORD", Self::PASSWORD)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", self.user, "-d", database]);
        c
    }

    /// Runs `sql` (one or more statements) in `database`; the unaligned output, trimmed. Panics
    /// with psql's message when it fails.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let o = self.psql(database).arg("-c").arg(sql).output().unwrap();
        assert!(
            o.status.success(),
            "psql: {}\n{sql}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    }

    /// Creates a database and returns its name.
    pub fn create_database(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        name.to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .program("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The variables naming the S3 servers' programs (`.ci/run` sets them to its virtual
/// environment's `moto_server` and `weed`); else they are looked up there, then on `PATH`.
pub const MOTO_VAR: &str = "JUMIO_TEST_MOTO_SERVER";
/// See [`MOTO_VAR`].
pub const WEED_VAR: &str = "JUMIO_TEST_WEED";

/// Which S3 implementation an [`S3Server`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    /// moto in server mode (in memory: a restart starts empty).
    Moto,
    /// SeaweedFS (`weed server -s3`, data in a temporary directory that outlives a restart).
    Seaweed,
}

/// A throw-away S3 server on 127.0.0.1 free ports: moto (`moto_server -H 127.0.0.1 -p PORT`) or
/// SeaweedFS (`weed server -s3 -ip=127.0.0.1` with every port given), started by the test,
/// killed and removed when dropped. No authentication: any access key signs.
pub struct S3Server {
    kind: S3Kind,
    program: PathBuf,
    ports: Vec<u16>,
    child: Option<std::process::Child>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// The access key and secret the tests sign with (the servers accept any).
    pub const ACCESS_KEY: &'static str = "AKIAJUMIOEXPORTTEST1";
    /// See [`S3Server::ACCESS_KEY`]; the secrets canary of `tests/secrets.rs` uses its own.
    pub const SECRET_KEY: &'static str = "s3-test-secret-5b2c9d";

    fn program(kind: S3Kind) -> Option<PathBuf> {
        let (var, name) = match kind {
            S3Kind::Moto => (MOTO_VAR, "moto_server"),
            S3Kind::Seaweed => (WEED_VAR, "weed"),
        };
        if let Some(p) = std::env::var_os(var) {
            return Some(PathBuf::from(p));
        }
        let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".ci/venv/bin")
            .join(name);
        if venv.exists() {
            return Some(venv);
        }
        match on_path(name) {
            Some(p) => Some(p),
            None => unavailable(
                &format!("`{name}` (S3 server)"),
                &format!("{var} is not set, and it is neither in .ci/venv/bin nor on PATH"),
            ),
        }
    }

    /// Starts a server of `kind` with an empty bucket `bucket`. `None` (skip) when the program
    /// is missing or does not come up, a panic under CI.
    pub fn start(kind: S3Kind, bucket: &str) -> Option<S3Server> {
        Self::start_with(kind, bucket, &[])
    }

    /// [`S3Server::start`] with `env` in the server's environment (moto's
    /// `INITIAL_NO_AUTH_ACTION_COUNT`, to have it check signatures).
    pub fn start_with(kind: S3Kind, bucket: &str, env: &[(&str, &str)]) -> Option<S3Server> {
        let program = Self::program(kind)?;
        let n = match kind {
            S3Kind::Moto => 1,
            S3Kind::Seaweed => 8,
        };
        // Held together so the ports are distinct, then released for the server.
        let listeners: Vec<_> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let dir = tempfile::Builder::new()
            .prefix("jumio-s3")
            .tempdir()
            .unwrap();
        let mut server = S3Server {
            kind,
            program,
            ports,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir,
        };
        if let Err(why) = server.spawn() {
            return unavailable(&format!("{kind:?} S3 server"), &why);
        }
        if let Err(why) = server.create_bucket(bucket) {
            return unavailable(&format!("{kind:?} S3 server"), &why);
        }
        Some(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut c = Command::new(&self.program);
        match self.kind {
            S3Kind::Moto => {
                c.args(["-H", "127.0.0.1", "-p", &self.ports[0].to_string()]);
            }
            S3Kind::Seaweed => {
                let p = &self.ports;
                let data = self.dir.path().join("data");
                std::fs::create_dir_all(&data).unwrap();
                c.arg("server")
                    .arg(format!("-dir={}", data.display()))
                    .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
                    .arg(format!("-s3.port={}", p[0]))
                    .arg(format!("-s3.port.grpc={}", p[1]))
                    .arg(format!("-master.port={}", p[2]))
                    .arg(format!("-master.port.grpc={}", p[3]))
                    .arg(format!("-volume.port={}", p[4]))
                    .arg(format!("-volume.port.grpc={}", p[5]))
                    .arg(format!("-filer.port={}", p[6]))
                    .arg(format!("-filer.port.grpc={}", p[7]))
                    .arg(format!(
                        "-filer.localSocket={}",
                        self.dir.path().join("filer.sock").display()
                    ))
                    // Its other listeners (Iceberg, Lance, IAM) have fixed default ports
                    // that two servers at once would share: off.
                    .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false"])
                    .args(["-master.volumeSizeLimitMB=64", "-volume.max=8"]);
            }
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.stdout(log.try_clone().unwrap()).stderr(log);
        let child = c
            .spawn()
            .map_err(|e| format!("{} does not start: {e}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Creates `bucket` (an unsigned PUT: the servers run without authentication), retrying
    /// while the server comes up (up to 60 s).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            match self.raw("PUT", &format!("/{bucket}")) {
                Ok(status) if status == 200 || status == 409 => return Ok(()),
                Ok(status) => last = format!("PUT /{bucket} answered {status}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Err(format!(
            "not ready after 60 s ({last}); log:\n{}",
            self.log()
        ))
    }

    /// One HTTP/1.1 request without a body; the status code.
    fn raw(&self, method: &str, path: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.ports[0]))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.ports[0]
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports (SeaweedFS: on the same data) and waits until
    /// `bucket` answers.
    pub fn restart(&mut self, bucket: &str) {
        self.kill();
        self.spawn().unwrap();
        self.create_bucket(bucket).unwrap();
    }

    /// The environment a client of this server needs (endpoint, loopback HTTP, test keys).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
