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
    /// Creates a new file for writing and reading, with the file mode, exclusively
    /// (`O_CREAT | O_EXCL | O_NOFOLLOW`): nothing is ever written through a symbolic link or
    /// into a file someone else opened first. Whatever is already at `path` (a temporary a
    /// crashed run left under the same name, or a link planted there) is unlinked, never
    /// followed, and the file is created anew; a second collision is an error.
    pub fn create_file(&self, path: &Path) -> io::Result<File> {
        match self.create_new(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // `remove_file` unlinks a symbolic link itself, never its target.
                std::fs::remove_file(path)?;
                self.create_new(path)
            }
            other => other,
        }
    }

    fn create_new(&self, path: &Path) -> io::Result<File> {
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(self.file).custom_flags(libc::O_NOFOLLOW);
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

    /// Creates `path`, a directory inside the output location, and its missing parents; the
    /// directories this call creates get the directory mode. An existing directory keeps its
    /// mode: it may be shared on purpose (`--out .`, a group directory), and changing it could
    /// fail where writing would not. `path` being a symbolic link is an error (never followed:
    /// `archives/` linked elsewhere would send personal data there); the location's own root
    /// may be a link ([`Modes::create_root_dir`]).
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(path)),
            Ok(m) if m.is_dir() => return Ok(()),
            _ => {}
        }
        if let Some(parent) = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_err())
        {
            self.create_dir_all(parent)?;
        }
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return match std::fs::symlink_metadata(path) {
                    Ok(m) if m.file_type().is_symlink() => Err(symlink_refused(path)),
                    Ok(m) if m.is_dir() => Ok(()),
                    _ => Err(e),
                };
            }
            Err(e) => return Err(e),
        }
        self.set_dir_mode(path)
    }

    /// [`Modes::create_dir_all`] for the root of the output location, which may itself be a
    /// symbolic link to a directory (`--out /data/export` with `export` a link): chosen by the
    /// user, not planted inside the location.
    pub fn create_root_dir(&self, path: &Path) -> io::Result<()> {
        if path.is_dir() {
            return Ok(());
        }
        self.create_dir_all(path)
    }

    /// Sets the directory mode through a descriptor opened without following a link.
    fn set_dir_mode(&self, path: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let dir = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
                .open(path)?;
            dir.set_permissions(std::fs::Permissions::from_mode(self.dir))?;
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

    #[test]
    fn a_planted_link_is_replaced_never_followed_and_a_linked_directory_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("victim");
        std::fs::write(&target, b"keep me").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let at = tmp.path().join(".report.json.1234.tmp");
        std::os::unix::fs::symlink(&target, &at).unwrap();
        let mut f = Modes::default().create_file(&at).unwrap();
        std::io::Write::write_all(&mut f, b"personal data").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        assert_eq!(mode(&target), 0o644, "the target was not chmod'ed");
        assert!(
            !std::fs::symlink_metadata(&at)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&at).unwrap(), b"personal data");
        // A dangling link: nothing is created at its target either.
        let nowhere = tmp.path().join("created-through-the-link");
        let dangling = tmp.path().join(".failures.csv.1234.tmp");
        std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
        Modes::default().create_file(&dangling).unwrap();
        assert!(!nowhere.exists());

        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let root = tmp.path().join("out");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("archives")).unwrap();
        let e = Modes::default()
            .create_dir_all(&root.join("archives"))
            .unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        // The root itself may be a link the user chose.
        let linked_root = tmp.path().join("linked-root");
        std::os::unix::fs::symlink(&elsewhere, &linked_root).unwrap();
        Modes::default().create_root_dir(&linked_root).unwrap();
    }
}

/// The error for a symbolic link where the export expects its own directory.
fn symlink_refused(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is a symbolic link: jumio-export never follows a link inside the output location \
         (move the link aside, or point the output at the real directory)",
        path.display()
    ))
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
