//! Publication of a complete file under its final name, create-if-absent: the file is written
//! and fsynced under a temporary name first, then moved to its final name only if nothing is
//! there (`renameat2(RENAME_NOREPLACE)`, or a hard link where the file system lacks it). An
//! existing file is never replaced. The same contract is a conditional PUT in a bucket.

use std::io;
use std::path::Path;

/// What a create-if-absent publication did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The file is now under its final name.
    Created,
    /// Something already was; the temporary file was removed and nothing was replaced.
    AlreadyThere,
}

/// Moves `tmp` to `dest` unless `dest` exists, then fsyncs the directory. The temporary file is
/// gone afterwards either way.
pub fn publish_no_replace(tmp: &Path, dest: &Path) -> io::Result<Published> {
    let outcome = rename_into_place(tmp, dest)?;
    if outcome == Published::Created
        && let Some(dir) = dest.parent()
    {
        crate::output::fsmode::sync_dir(dir)?;
    }
    Ok(outcome)
}

/// [`publish_no_replace`] without the directory's fsync: the new name may not survive a power
/// loss until the caller fsyncs the directory, which it must do before anything durable refers
/// to the file (a run's archives: before its commit). `tmp` must be fsynced already, so that
/// whatever name survives holds the whole file.
pub fn rename_into_place(tmp: &Path, dest: &Path) -> io::Result<Published> {
    match rename_no_replace(tmp, dest) {
        Ok(()) => Ok(Published::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(tmp)?;
            Ok(Published::AlreadyThere)
        }
        Err(e) => Err(e),
    }
}

#[cfg(target_os = "linux")]
fn rename_no_replace(tmp: &Path, dest: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let from = CString::new(tmp.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let to = CString::new(dest.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: two valid NUL-terminated paths; renameat2 touches nothing else.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // The file system does not support the flag: a hard link is create-if-absent too.
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            link_then_unlink(tmp, dest)
        }
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_no_replace(tmp: &Path, dest: &Path) -> io::Result<()> {
    link_then_unlink(tmp, dest)
}

fn link_then_unlink(tmp: &Path, dest: &Path) -> io::Result<()> {
    std::fs::hard_link(tmp, dest)?;
    std::fs::remove_file(tmp)
}

/// Creates `path` with `bytes` only if it does not exist (temporary name `tmp` beside it).
pub fn write_no_replace(
    tmp: &Path,
    dest: &Path,
    bytes: &[u8],
    modes: crate::output::fsmode::Modes,
) -> io::Result<Published> {
    use std::io::Write;
    let mut f = modes.create_file(tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    publish_no_replace(tmp, dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_file_wins_and_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("c.json");
        let modes = crate::output::fsmode::Modes::default();
        let tmp = dir.path().join(".c.json.tmp");
        assert_eq!(
            write_no_replace(&tmp, &dest, b"first", modes).unwrap(),
            Published::Created
        );
        assert_eq!(
            write_no_replace(&tmp, &dest, b"second", modes).unwrap(),
            Published::AlreadyThere
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"first");
        assert!(!tmp.exists());
    }
}
