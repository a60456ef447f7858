//! Permissions of everything the export writes. The output holds ID documents, faces and social
//! security numbers, so files are `0600` and directories `0700` by default, set explicitly after
//! creation so a permissive umask cannot widen them. The modes are a value ([`Modes`]) owned by
//! the output location and handed to each writer; nothing here is process-global, so two runs in
//! one process (a library user, the tests) cannot change each other's modes. Also home of
//! [`sync_dir`], the one directory fsync every writer uses after renaming a file into place.

use std::fs::File;
use std::io;
use std::path::Path;

/// The modes new files and directories get (the job's `[output] file_mode` / `dir_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Mode of every file the export creates.
    pub file: u32,
    /// Mode of every directory the export creates.
    pub dir: u32,
}

impl Default for Modes {
    fn default() -> Self {
        Modes {
            file: 0o600,
            dir: 0o700,
        }
    }
}

impl Modes {
    /// Creates (or truncates) a file for writing and reading, with the file mode.
    pub fn create_file(&self, path: &Path) -> io::Result<File> {
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(self.file);
        }
        let f = o.open(path)?;
        self.restrict(&f)?;
        Ok(f)
    }

    /// Sets the file mode on an open file (umask-proof).
    pub fn restrict(&self, f: &File) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(self.file))?;
        }
        #[cfg(not(unix))]
        let _ = f;
        Ok(())
    }

    /// Creates `path` and its missing parents; the directories this call creates get the
    /// directory mode. An existing directory keeps its mode: it may be shared on purpose
    /// (`--out .`, a group directory), and changing it could fail where writing would not.
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if path.is_dir() {
            return Ok(());
        }
        if let Some(parent) = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.exists())
        {
            self.create_dir_all(parent)?;
        }
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(e),
        }
        self.set_dir_mode(path)
    }

    fn set_dir_mode(&self, path: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.dir))?;
        }
        #[cfg(not(unix))]
        let _ = path;
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_files_and_directories_get_the_modes_existing_directories_keep_theirs() {
        let tmp = tempfile::tempdir().unwrap();
        let existing = tmp.path().join("shared");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o750)).unwrap();
        let modes = Modes {
            file: 0o640,
            dir: 0o710,
        };
        let nested = existing.join("a/b");
        modes.create_dir_all(&nested).unwrap();
        modes.create_file(&nested.join("f")).unwrap();
        assert_eq!(mode(&existing), 0o750);
        assert_eq!(mode(&existing.join("a")), 0o710);
        assert_eq!(mode(&nested), 0o710);
        assert_eq!(mode(&nested.join("f")), 0o640);
        // Two values side by side: no process-global state.
        Modes::default().create_file(&nested.join("g")).unwrap();
        assert_eq!(mode(&nested.join("g")), 0o600);
        assert_eq!(mode(&nested.join("f")), 0o640);
    }
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
