//! Peers: the programs and system capabilities some tests check the export against — `unzip`,
//! 7-Zip, `sha256sum`, DuckDB (a Python module), a tmpfs mount for the disk-full tests.
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
