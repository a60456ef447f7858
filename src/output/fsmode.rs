//! Permissions of everything the export writes. The output holds ID documents, faces and social
//! security numbers, so files are `0600` and directories `0700` by default, set explicitly after
//! creation so a permissive umask cannot widen them. Configured once per run from the job's
//! `[output] file_mode` / `dir_mode`. Also home of [`sync_dir`], the one directory fsync every
//! writer uses after renaming a file into place.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

static FILE_MODE: AtomicU32 = AtomicU32::new(0o600);
static DIR_MODE: AtomicU32 = AtomicU32::new(0o700);

/// Sets the modes used by every writer from now on.
pub fn configure(file_mode: u32, dir_mode: u32) {
    FILE_MODE.store(file_mode, Ordering::Relaxed);
    DIR_MODE.store(dir_mode, Ordering::Relaxed);
}

/// The mode new files get.
pub fn file_mode() -> u32 {
    FILE_MODE.load(Ordering::Relaxed)
}

/// The mode new directories get.
pub fn dir_mode() -> u32 {
    DIR_MODE.load(Ordering::Relaxed)
}

/// Creates (or truncates) a file for writing and reading, with the configured mode.
pub fn create_file(path: &Path) -> io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(file_mode());
    }
    let f = o.open(path)?;
    restrict(&f)?;
    Ok(f)
}

/// Sets the configured mode on an open file (umask-proof).
pub fn restrict(f: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(file_mode()))?;
    }
    #[cfg(not(unix))]
    let _ = f;
    Ok(())
}

/// Creates `path` and its missing parents; the directories this call creates get the configured
/// directory mode. An existing directory keeps its mode: it may be shared on purpose (`--out .`,
/// a group directory), and changing it could fail where writing would not.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        create_dir_all(parent)?;
    }
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => return Err(e),
    }
    set_dir_mode(path)
}

fn set_dir_mode(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(dir_mode()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Makes the renames done in `dir` durable: on Unix a rename survives power loss only once the
/// directory itself is fsynced.
///
/// The one policy for every writer (archives, tables, `failures.csv`, `report.json`): an error
/// is returned, never ignored, and the caller treats it like a failed write of the file it just
/// renamed (the run stops; nothing is retried on the same file). Where directories cannot be
/// opened for syncing (Windows), this is a no-op and succeeds. An empty path means the current
/// directory (the parent of a bare file name).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
