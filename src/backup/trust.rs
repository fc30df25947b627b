//! Whether a backup may be believed before it is written over a manifest.
//!
//! A restore puts a backup's bytes where kubelet runs them as root, so
//! anyone who can edit the backup tree can run a pod of their choosing.
//! As sshd's StrictModes does for `authorized_keys`, the backup root, each
//! run directory, its `index.json` and each backup file must be owned by
//! the effective user and writable by no one else. Files are opened with
//! `O_NOFOLLOW` and checked on the open descriptor, so a symlink swapped in
//! cannot point a restore at some other file.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::fsutil::{FsError, Step};

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn untrusted(path: &Path, reason: String) -> FsError {
    FsError::Untrusted {
        path: path.to_path_buf(),
        reason,
    }
}

fn check_owner_and_mode(path: &Path, meta: &Metadata) -> Result<(), FsError> {
    let me = euid();
    if meta.uid() != me {
        return Err(untrusted(
            path,
            format!(
                "owned by uid {}, not by uid {me} running staticpin",
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(untrusted(
            path,
            format!("writable by group or others (mode {mode:04o})"),
        ));
    }
    Ok(())
}

/// The backup root: it may be reached through a symlink the administrator
/// configured, but what it resolves to must be a trusted directory.
pub(crate) fn check_root(root: &Path) -> Result<(), FsError> {
    let meta = fs::metadata(root).map_err(|e| FsError::io(Step::Stat, root, e))?;
    if !meta.is_dir() {
        return Err(untrusted(root, "not a directory".into()));
    }
    check_owner_and_mode(root, &meta)
}

/// A run directory: a real directory, not a link to one.
pub(crate) fn check_dir(dir: &Path) -> Result<(), FsError> {
    let meta = fs::symlink_metadata(dir).map_err(|e| FsError::io(Step::Stat, dir, e))?;
    if !meta.is_dir() {
        return Err(untrusted(dir, "not a directory".into()));
    }
    check_owner_and_mode(dir, &meta)
}

/// Reads a file of the backup tree, refusing symlinks and files anyone but
/// the effective user could have written.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, FsError> {
    let mut file = open_no_follow(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            untrusted(path, "a symlink; backups are never followed".into())
        } else {
            FsError::io(Step::Read, path, e)
        }
    })?;
    let meta = file
        .metadata()
        .map_err(|e| FsError::io(Step::Stat, path, e))?;
    if !meta.is_file() {
        return Err(untrusted(path, "not a regular file".into()));
    }
    check_owner_and_mode(path, &meta)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| FsError::io(Step::Read, path, e))?;
    Ok(bytes)
}

fn open_no_follow(path: &Path) -> io::Result<File> {
    // O_NONBLOCK: a FIFO planted in place of a backup must not hang the open.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn strict_modes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("run");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        check_dir(&dir).unwrap();
        chmod(&dir, 0o720);
        let err = check_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("writable by group or others (mode 0720)"),
            "{err}"
        );
        chmod(&dir, 0o700);

        let file = dir.join("etcd.yaml");
        fs::write(&file, b"x").unwrap();
        chmod(&file, 0o600);
        assert_eq!(read_file(&file).unwrap(), b"x");
        chmod(&file, 0o602);
        assert!(read_file(&file).is_err());
        chmod(&file, 0o600);

        let link = dir.join("link.yaml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = read_file(&link).unwrap_err().to_string();
        assert!(err.contains("a symlink"), "{err}");
        let err = check_dir(&d.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
