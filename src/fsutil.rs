//! Crash-safe file writes that kubelet never sees half done.
//!
//! kubelet starts a pod for every file in its manifest directory whose name
//! does not begin with '.', and it parses a file as soon as it is written.
//! An in-place `truncate + write` can therefore run a half-written manifest,
//! and a stray `x.tmp` or `x.bak` starts a second copy of the pod. So every
//! write here goes to a dot-prefixed temp file in the destination's own
//! directory (so the rename cannot cross filesystems), which gets its final
//! mode and owner and is fsync'd before a single `rename` puts it in place.
//! The directory is fsync'd afterwards so the rename survives a power cut.
//!
//! Every replacement is a compare-and-swap ([`atomic_replace_if`]): the
//! caller says which bytes it planned from, and right before the rename the
//! file is read again. kubeadm, an operator or another tool may have
//! replaced it meanwhile; their change then stands and nothing is written.
//! Between that last read and the rename there remains a window of a few
//! system calls, which no rename-based write on Linux can close.
//!
//! Temp files left behind by a process killed mid-write carry a fixed name
//! pattern, and [`remove_stale_temps`] removes exactly those.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether [`atomic_replace_if`] had to touch the file at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The file already held these bytes; nothing was written, so kubelet
    /// sees no event and the pod is not restarted.
    Unchanged,
    /// The new bytes were renamed into place and the directory fsync'd.
    Written,
}

/// The operation that failed, named in the error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Resolving symlinks or making the path absolute.
    Resolve,
    /// Reading the file's metadata.
    Stat,
    /// Reading the file's bytes.
    Read,
    /// Creating a file that must not exist yet.
    Create,
    /// Creating the dot-prefixed temp file beside the destination.
    CreateTemp,
    /// Writing the new bytes into the temp file.
    WriteTemp,
    /// Giving the temp file the destination's owner.
    Chown,
    /// Giving the temp file its final mode.
    Chmod,
    /// fsync of the temp file before the rename.
    FsyncTemp,
    /// The compare of compare-and-swap: reading the file once more right
    /// before the rename.
    Recheck,
    /// Renaming the temp file over the destination.
    Rename,
    /// fsync of the directory after the rename: the new contents are already
    /// in place, but may not survive a crash.
    FsyncDirOf,
    /// fsync of a directory to make new or removed entries durable.
    FsyncDir,
    /// Creating a directory (the backup root, a run directory).
    CreateDir,
    /// Listing a directory.
    ListDir,
    /// Removing a file or directory.
    Remove,
}

impl fmt::Display for Step {
    // Phrased to read as "cannot <step> <path>".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Resolve => "resolve",
            Step::Stat => "stat",
            Step::Read => "read",
            Step::Create => "create",
            Step::CreateTemp => "create temp file for",
            Step::WriteTemp => "write temp file for",
            Step::Chown => "chown temp file for",
            Step::Chmod => "chmod temp file for",
            Step::FsyncTemp => "fsync temp file for",
            Step::Recheck => "re-read",
            Step::Rename => "rename temp file over",
            Step::FsyncDirOf => "fsync the directory after replacing",
            Step::FsyncDir => "fsync directory",
            Step::CreateDir => "create directory",
            Step::ListDir => "list directory",
            Step::Remove => "remove",
        })
    }
}

/// Why a file operation did not happen; the message always names the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// `target` is the symlink-resolved file actually written, when it
    /// differs from the `path` the caller gave.
    #[error("cannot {step} {path}{}: {source}", resolved_note(.target))]
    Io {
        /// The operation that failed.
        step: Step,
        /// The path the caller gave.
        path: PathBuf,
        /// The symlink-resolved file, when it differs from `path`.
        target: Option<PathBuf>,
        /// The underlying error.
        source: io::Error,
    },
    /// The destination is a directory, device or other non-file; only
    /// regular files are replaced.
    #[error("refusing to replace {path}{}: not a regular file", resolved_note(.target))]
    NotRegularFile {
        /// The path the caller gave.
        path: PathBuf,
        /// The symlink-resolved file, when it differs from `path`.
        target: Option<PathBuf>,
    },
    #[error(
        "refusing to back up {path}: backup root {root} is inside {dir}, the directory the file lives in"
    )]
    /// A backup would be written inside the manifest's own directory, where
    /// kubelet would run it as a second pod.
    BackupRootInsideDir {
        /// The file being backed up.
        path: PathBuf,
        /// The backup root.
        root: PathBuf,
        /// The directory `path` lives in.
        dir: PathBuf,
    },
    /// A run's `index.json` cannot be read, written or believed, or a
    /// backup is not listed in it.
    #[error("invalid backup index {path}: {reason}")]
    Index {
        /// The index, or the backup file it does not list.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Part of the backup tree that a restore must not believe.
    #[error("refusing to trust {path}: {reason}")]
    Untrusted {
        /// The file or directory refused.
        path: PathBuf,
        /// Why, e.g. its owner or mode.
        reason: String,
    },
    /// The file no longer holds the bytes the caller planned from.
    #[error("{path}{} changed since it was read; nothing written", resolved_note(.target))]
    Changed {
        /// The path the caller gave.
        path: PathBuf,
        /// The symlink-resolved file, when it differs from `path`.
        target: Option<PathBuf>,
    },
}

impl FsError {
    /// The failed operation, for an [`FsError::Io`].
    pub fn step(&self) -> Option<Step> {
        match self {
            FsError::Io { step, .. } => Some(*step),
            _ => None,
        }
    }

    /// The OS error's kind, for an [`FsError::Io`] (e.g. to tell
    /// `NotFound` apart).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            FsError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    pub(crate) fn io(step: Step, path: &Path, source: io::Error) -> FsError {
        FsError::Io {
            step,
            path: path.to_path_buf(),
            target: None,
            source,
        }
    }
}

fn resolved_note(target: &Option<PathBuf>) -> String {
    match target {
        Some(t) => format!(" (resolved to {})", t.display()),
        None => String::new(),
    }
}

/// The names an error should carry: what the caller asked for, and what
/// that resolved to.
struct Ctx<'a> {
    path: &'a Path,
    target: Option<PathBuf>,
}

impl Ctx<'_> {
    fn error(&self, step: Step, source: io::Error) -> FsError {
        FsError::Io {
            step,
            path: self.path.to_path_buf(),
            target: self.target.clone(),
            source,
        }
    }

    fn changed(&self) -> FsError {
        FsError::Changed {
            path: self.path.to_path_buf(),
            target: self.target.clone(),
        }
    }

    fn at<T>(&self, step: Step, op: impl FnOnce() -> io::Result<T>) -> Result<T, FsError> {
        checkpoint(step)
            .and_then(|()| op())
            .map_err(|source| self.error(step, source))
    }
}

/// Replaces the contents of `path` with `contents`, but only if it still
/// holds exactly `expected`, so readers see either the old or the new bytes,
/// never a mix, and never a second non-dot file.
///
/// `expected` is checked when the file is first read and again right before
/// the rename; a mismatch (or a file gone) is [`FsError::Changed`] and
/// nothing is written.
///
/// Symlinks are followed: the final target is replaced in its own directory
/// and a link stays a link. The target keeps its permission bits and owner.
/// On error the target is untouched and no temp file is left, except for
/// [`Step::FsyncDirOf`], where the new bytes are already in place.
pub fn atomic_replace_if(
    path: &Path,
    expected: &[u8],
    contents: &[u8],
) -> Result<WriteOutcome, FsError> {
    let resolved = fs::canonicalize(path).map_err(|e| FsError::io(Step::Resolve, path, e))?;
    let target = match std::path::absolute(path) {
        Ok(abs) if abs == resolved => None,
        _ => Some(resolved.clone()),
    };
    let ctx = Ctx { path, target };

    let meta = ctx.at(Step::Stat, || fs::metadata(&resolved))?;
    if !meta.is_file() {
        return Err(FsError::NotRegularFile {
            path: path.to_path_buf(),
            target: ctx.target,
        });
    }
    let current = ctx.at(Step::Read, || fs::read(&resolved))?;
    if current != expected {
        return Err(ctx.changed());
    }
    // Rewriting identical bytes would still fire inotify, and a kubelet
    // that sees a write re-reads the manifest; skip it entirely.
    if current == contents {
        return Ok(WriteOutcome::Unchanged);
    }
    if meta.nlink() > 1 {
        tracing::warn!(
            path = %resolved.display(),
            links = meta.nlink(),
            "file has other hard links; they will keep the old contents"
        );
    }

    write_via_temp(
        &ctx,
        &resolved,
        contents,
        meta.mode() & 0o7777,
        Some((meta.uid(), meta.gid())),
        Clobber::IfStill(expected),
    )?;
    Ok(WriteOutcome::Written)
}

/// Creates `path` with `contents` and exactly `mode` (not masked by the
/// umask), appearing all at once. Refuses to overwrite an existing file.
///
/// The existence check and the rename are not one atomic step; callers use
/// this in directories only they write to (backup run directories).
pub fn write_new_file_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    write_file(path, contents, mode, Clobber::Refuse)
}

/// Like [`write_new_file_atomically`], but replaces `path` if it exists,
/// without following symlinks or keeping its mode and owner. For files
/// staticpin owns, such as backup indexes.
pub(crate) fn write_file_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), FsError> {
    write_file(path, contents, mode, Clobber::Replace)
}

fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    clobber: Clobber<'_>,
) -> Result<(), FsError> {
    let ctx = Ctx { path, target: None };
    write_via_temp(&ctx, path, contents, mode, None, clobber)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Clobber<'a> {
    Replace,
    Refuse,
    /// Replace only if the file still holds these bytes.
    IfStill(&'a [u8]),
}

/// Writes `dest` through a temp file beside it. `dest` is never a symlink
/// to follow: callers pass the resolved target or a path they own.
fn write_via_temp(
    ctx: &Ctx<'_>,
    dest: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    clobber: Clobber<'_>,
) -> Result<(), FsError> {
    let name = dest.file_name().ok_or_else(|| {
        ctx.error(
            Step::Create,
            io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
        )
    })?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (mut file, temp) = ctx.at(Step::CreateTemp, || create_temp(dir, name))?;
    let mut guard = TempGuard(Some(temp));

    ctx.at(Step::WriteTemp, || file.write_all(contents))?;
    // chown before chmod: changing the owner clears setuid/setgid bits.
    ctx.at(Step::Chown, || match owner {
        Some((uid, gid)) => {
            let have = file.metadata()?;
            // Skipping a no-op chown lets an unprivileged user replace
            // their own files.
            if (have.uid(), have.gid()) == (uid, gid) {
                Ok(())
            } else {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            }
        }
        None => Ok(()),
    })?;
    // fchmod is not subject to the umask, unlike the mode given to open().
    ctx.at(Step::Chmod, || {
        file.set_permissions(Permissions::from_mode(mode))
    })?;
    ctx.at(Step::FsyncTemp, || file.sync_all())?;
    drop(file);

    if let Clobber::IfStill(expected) = clobber {
        // The last moment to notice someone else's write: a slow registry
        // can keep a run between read and write for minutes.
        match ctx.at(Step::Recheck, || fs::read(dest)) {
            Ok(now) if now == expected => {}
            Ok(_) => return Err(ctx.changed()),
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => return Err(ctx.changed()),
            Err(e) => return Err(e),
        }
    }
    if clobber == Clobber::Refuse {
        match fs::symlink_metadata(dest) {
            Ok(_) => {
                return Err(ctx.error(
                    Step::Create,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "file exists, refusing to overwrite",
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx.error(Step::Stat, e)),
        }
    }
    let Some(temp) = guard.0.as_deref() else {
        return Err(ctx.error(Step::Rename, io::Error::other("temp file already released")));
    };
    ctx.at(Step::Rename, || fs::rename(temp, dest))?;
    guard.0 = None;

    ctx.at(Step::FsyncDirOf, || sync_dir(dir))
}

/// Removes the temp file unless disarmed, so every early return cleans up.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove temp file");
            }
        }
    }
}

const TEMP_MARK: &[u8] = b".staticpin-";
const TEMP_SUFFIX: &[u8] = b".tmp";
/// Keeps the temp name under NAME_MAX (255) whatever the target's name.
const TEMP_NAME_BYTES: usize = 200;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_name(name: &OsStr, pid: u32, n: u64) -> OsString {
    let name = name.as_bytes();
    let name = &name[..name.len().min(TEMP_NAME_BYTES)];
    let mut out = Vec::with_capacity(name.len() + 48);
    out.push(b'.');
    out.extend_from_slice(name);
    out.extend_from_slice(TEMP_MARK);
    out.extend_from_slice(format!("{pid}-{n}").as_bytes());
    out.extend_from_slice(TEMP_SUFFIX);
    OsString::from_vec(out)
}

/// The pid in a name of the form `.<name>.staticpin-<pid>-<n>.tmp`, or
/// `None` if the name is not exactly that shape.
fn temp_owner_pid(file_name: &OsStr) -> Option<u32> {
    let inner = file_name
        .as_bytes()
        .strip_prefix(b".")?
        .strip_suffix(TEMP_SUFFIX)?;
    let at = inner
        .windows(TEMP_MARK.len())
        .rposition(|w| w == TEMP_MARK)?;
    if at == 0 {
        return None;
    }
    let tail = &inner[at + TEMP_MARK.len()..];
    let dash = tail.iter().position(|&c| c == b'-')?;
    let (pid, n) = (&tail[..dash], &tail[dash + 1..]);
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !digits(pid) || !digits(n) {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}

fn create_temp(dir: &Path, name: &OsStr) -> io::Result<(File, PathBuf)> {
    let pid = std::process::id();
    // A name can be taken by a leftover from an earlier process with the
    // same pid; O_EXCL detects that and we move on to the next counter.
    for _ in 0..100 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(temp_name(name, pid, n));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temp file name after 100 attempts",
    ))
}

/// Removes temp files that a killed staticpin left in `dir`, and returns
/// their paths. Only regular files named `.<name>.staticpin-<pid>-<n>.tmp`
/// are touched.
///
/// A temp file whose pid is another live process is left alone: it may be a
/// concurrent staticpin mid-write. Temps carrying this process's own pid are
/// removed, so call this before starting writes, not during them.
pub fn remove_stale_temps(dir: &Path) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list directory for stale temp files");
            return Vec::new();
        }
    };
    let me = std::process::id();
    let mut removed = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list directory for stale temp files");
                continue;
            }
        };
        let Some(pid) = temp_owner_pid(&entry.file_name()) else {
            continue;
        };
        // file_type() does not follow symlinks.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if pid != me && process_alive(pid) {
            tracing::debug!(path = %path.display(), pid, "temp file belongs to a live process; keeping it");
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove stale temp file")
            }
        }
    }
    removed.sort();
    removed
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Makes renames and removals in `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    sync_dir(dir).map_err(|e| FsError::io(Step::FsyncDir, dir, e))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(test))]
#[inline(always)]
fn checkpoint(_step: Step) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
fn checkpoint(step: Step) -> io::Result<()> {
    tests::run_hook(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, SystemTime};

    type Hook = Box<dyn FnMut(Step) -> io::Result<()>>;

    thread_local! {
        // Per thread, so parallel tests cannot see each other's hooks.
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    pub(super) fn run_hook(step: Step) -> io::Result<()> {
        HOOK.with(|h| match h.borrow_mut().as_mut() {
            Some(hook) => hook(step),
            None => Ok(()),
        })
    }

    /// Runs `body` with `hook` called before each step of a write.
    fn with_hook<T>(
        hook: impl FnMut(Step) -> io::Result<()> + 'static,
        body: impl FnOnce() -> T,
    ) -> T {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
        let out = body();
        HOOK.with(|h| *h.borrow_mut() = None);
        out
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn running_as_root() -> bool {
        let probe = tempfile::NamedTempFile::new().unwrap();
        probe.as_file().metadata().unwrap().uid() == 0
    }

    /// Every checkpoint of a replacement that writes, in order.
    const STEPS: [Step; 10] = [
        Step::Stat,
        Step::Read,
        Step::CreateTemp,
        Step::WriteTemp,
        Step::Chown,
        Step::Chmod,
        Step::FsyncTemp,
        Step::Recheck,
        Step::Rename,
        Step::FsyncDirOf,
    ];

    #[test]
    fn preserves_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kube-apiserver.yaml");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let owner = if running_as_root() {
            std::os::unix::fs::chown(&path, Some(1234), Some(5678)).unwrap();
            (1234, 5678)
        } else {
            let m = fs::metadata(&path).unwrap();
            (m.uid(), m.gid())
        };
        let old_ino = fs::metadata(&path).unwrap().ino();

        assert_eq!(
            atomic_replace_if(&path, b"old", b"new").unwrap(),
            WriteOutcome::Written
        );

        let m = fs::metadata(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!((m.uid(), m.gid()), owner);
        assert_ne!(
            m.ino(),
            old_ino,
            "replaced by rename, not rewritten in place"
        );
        assert_eq!(names(dir.path()), ["kube-apiserver.yaml"]);
    }

    #[test]
    fn replaces_through_symlink_in_the_targets_directory() {
        let root = tempfile::tempdir().unwrap();
        let manifests = root.path().join("manifests");
        let real_dir = root.path().join("real");
        fs::create_dir(&manifests).unwrap();
        fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("etcd.yaml");
        fs::write(&real, b"old").unwrap();
        fs::set_permissions(&real, Permissions::from_mode(0o600)).unwrap();
        let link = manifests.join("etcd.yaml");
        symlink("../real/etcd.yaml", &link).unwrap();

        let seen_temp_in = std::rc::Rc::new(RefCell::new(Vec::new()));
        let seen = seen_temp_in.clone();
        let (real_dir2, manifests2) = (real_dir.clone(), manifests.clone());
        let outcome = with_hook(
            move |step| {
                if step == Step::Rename {
                    seen.borrow_mut()
                        .push((names(&real_dir2), names(&manifests2)));
                }
                Ok(())
            },
            || atomic_replace_if(&link, b"old", b"new").unwrap(),
        );
        assert_eq!(outcome, WriteOutcome::Written);

        let (real_names, manifest_names) = &seen_temp_in.borrow()[0];
        assert_eq!(
            real_names.len(),
            2,
            "temp beside the target: {real_names:?}"
        );
        assert!(real_names
            .iter()
            .any(|n| n.starts_with(".etcd.yaml.staticpin-")));
        assert_eq!(manifest_names, &["etcd.yaml"]);

        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("../real/etcd.yaml")
        );
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(mode(&real), 0o600);
        assert_eq!(names(&real_dir), ["etcd.yaml"]);
        assert_eq!(names(&manifests), ["etcd.yaml"]);
    }

    #[test]
    fn unchanged_bytes_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.yaml");
        fs::write(&path, b"same").unwrap();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let before = fs::metadata(&path).unwrap();

        let steps = std::rc::Rc::new(RefCell::new(Vec::new()));
        let s = steps.clone();
        let outcome = with_hook(
            move |step| {
                s.borrow_mut().push(step);
                Ok(())
            },
            || atomic_replace_if(&path, b"same", b"same").unwrap(),
        );

        assert_eq!(outcome, WriteOutcome::Unchanged);
        let after = fs::metadata(&path).unwrap();
        assert_eq!(after.ino(), before.ino());
        assert_eq!(after.modified().unwrap(), old);
        assert!(!steps.borrow().contains(&Step::CreateTemp));
        assert_eq!(names(dir.path()), ["etcd.yaml"]);
    }

    #[test]
    fn no_non_dot_file_ever_appears_beside_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kube-scheduler.yaml");
        fs::write(&path, b"old").unwrap();

        let d = dir.path().to_path_buf();
        let steps = std::rc::Rc::new(RefCell::new(Vec::new()));
        let s = steps.clone();
        with_hook(
            move |step| {
                for n in names(&d) {
                    assert!(
                        n == "kube-scheduler.yaml" || n.starts_with('.'),
                        "{n} visible to kubelet before {step}"
                    );
                }
                s.borrow_mut().push(step);
                Ok(())
            },
            || atomic_replace_if(&path, b"old", b"new").unwrap(),
        );
        assert_eq!(*steps.borrow(), STEPS);
        assert_eq!(names(dir.path()), ["kube-scheduler.yaml"]);
    }

    #[test]
    fn failure_at_each_step_leaves_the_target_and_no_temp() {
        const ENOSPC: i32 = 28;
        for failing in STEPS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("kube-controller-manager.yaml");
            fs::write(&path, b"original").unwrap();

            let err = with_hook(
                move |step| {
                    if step == failing {
                        Err(io::Error::from_raw_os_error(ENOSPC))
                    } else {
                        Ok(())
                    }
                },
                || atomic_replace_if(&path, b"original", b"replacement").unwrap_err(),
            );

            let msg = err.to_string();
            assert_eq!(err.step(), Some(failing));
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&failing.to_string()), "{msg}");
            assert!(msg.contains("No space left on device"), "{msg}");
            let expected: &[u8] = if failing == Step::FsyncDirOf {
                b"replacement"
            } else {
                b"original"
            };
            assert_eq!(fs::read(&path).unwrap(), expected, "failing at {failing:?}");
            assert_eq!(
                names(dir.path()),
                ["kube-controller-manager.yaml"],
                "failing at {failing:?}"
            );
        }
    }

    /// A real kernel error mid-write: the child re-runs this test binary
    /// under a 512-byte RLIMIT_FSIZE, with SIGXFSZ ignored so write() returns
    /// EFBIG instead of killing it.
    #[test]
    fn kernel_write_error_leaves_the_target_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kube-apiserver.yaml");
        fs::write(&path, b"original").unwrap();

        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"trap '' XFSZ; ulimit -f 1 && exec "$0" "$@""#)
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "fsutil::tests::fsize_child",
                "--ignored",
                "--nocapture",
            ])
            .env("STATICPIN_FSIZE_CHILD_TARGET", &path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = format!(
            "CHILD-ERROR: cannot write temp file for {}: File too large",
            path.display()
        );
        assert!(stdout.contains(&expected), "{stdout}");

        assert_eq!(fs::read(&path).unwrap(), b"original");
        assert_eq!(names(dir.path()), ["kube-apiserver.yaml"]);
    }

    #[test]
    #[ignore = "run by kernel_write_error_leaves_the_target_and_no_temp"]
    fn fsize_child() {
        let Some(path) = std::env::var_os("STATICPIN_FSIZE_CHILD_TARGET") else {
            return;
        };
        let err =
            atomic_replace_if(Path::new(&path), b"original", &vec![b'x'; 1 << 20]).unwrap_err();
        println!("CHILD-ERROR: {err}");
    }

    #[test]
    fn changed_before_the_first_read_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.yaml");
        fs::write(&path, b"upgraded").unwrap();
        let err = atomic_replace_if(&path, b"planned from", b"pinned").unwrap_err();
        assert!(matches!(err, FsError::Changed { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("etcd.yaml changed since it was read"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"upgraded");
        assert_eq!(names(dir.path()), ["etcd.yaml"]);
    }

    /// kubeadm renames its new manifest in after the first read: the last
    /// read before the rename catches it, and its file stands.
    #[test]
    fn changed_right_before_the_rename_writes_nothing() {
        for replace in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("kube-apiserver.yaml");
            fs::write(&path, b"planned from").unwrap();
            let p = path.clone();
            let err = with_hook(
                move |step| {
                    if step == Step::Recheck {
                        if replace {
                            let tmp = p.with_file_name(".kubeadm-new");
                            fs::write(&tmp, b"upgraded").unwrap();
                            fs::rename(&tmp, &p).unwrap();
                        } else {
                            fs::remove_file(&p).unwrap();
                        }
                    }
                    Ok(())
                },
                || atomic_replace_if(&path, b"planned from", b"pinned").unwrap_err(),
            );
            assert!(matches!(err, FsError::Changed { .. }), "{err}");
            if replace {
                assert_eq!(fs::read(&path).unwrap(), b"upgraded");
                assert_eq!(names(dir.path()), ["kube-apiserver.yaml"]);
            } else {
                assert!(names(dir.path()).is_empty(), "no temp left");
            }
        }
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("etcd.yaml");
        let err = atomic_replace_if(&path, b"", b"x").unwrap_err();
        assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound));
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("cannot resolve {}: ", path.display())),
            "{msg}"
        );
        assert!(!dir.path().join("no-such-dir").exists());
    }

    #[test]
    fn refuses_to_replace_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = atomic_replace_if(dir.path(), b"", b"x").unwrap_err();
        assert!(matches!(err, FsError::NotRegularFile { .. }), "{err}");
    }

    #[test]
    fn new_file_gets_exact_mode_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.yaml");
        write_new_file_atomically(&path, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);

        let err = write_new_file_atomically(&path, b"two", 0o600).unwrap_err();
        assert_eq!(err.io_kind(), Some(io::ErrorKind::AlreadyExists));
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(names(dir.path()), ["backup.yaml"]);

        write_file_atomically(&path, b"three", 0o640).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert_eq!(mode(&path), 0o640);
        assert_eq!(names(dir.path()), ["backup.yaml"]);
    }

    #[test]
    fn temp_names_round_trip_and_fit_name_max() {
        let name = temp_name(OsStr::new("kube-apiserver.yaml"), 4321, 7);
        assert_eq!(name, ".kube-apiserver.yaml.staticpin-4321-7.tmp");
        assert_eq!(temp_owner_pid(&name), Some(4321));

        let long = "a".repeat(255);
        let name = temp_name(OsStr::new(&long), u32::MAX, u64::MAX);
        assert!(name.len() <= 255, "{}", name.len());
        assert_eq!(temp_owner_pid(&name), Some(u32::MAX));
    }

    #[test]
    fn remove_stale_temps_only_removes_our_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        // Above the kernel's largest possible pid_max (2^22), so never live.
        let dead = 4_194_305;
        let stale = [
            format!(".etcd.yaml.staticpin-{me}-3.tmp"),
            format!(".kube-apiserver.yaml.staticpin-{dead}-0.tmp"),
            format!(".a.staticpin-b.staticpin-{dead}-1.tmp"),
        ];
        let kept = [
            "etcd.yaml".to_string(),
            "etcd.yaml.tmp".to_string(),
            ".etcd.yaml.tmp".to_string(),
            format!(".staticpin-{dead}-1.tmp"),
            format!("etcd.yaml.staticpin-{dead}-1.tmp"),
            format!(".etcd.yaml.staticpin-{dead}-1.tmp.bak"),
            format!(".etcd.yaml.staticpin-{dead}.tmp"),
            format!(".etcd.yaml.staticpin-{dead}-x.tmp"),
            ".etcd.yaml.staticpin--1.tmp".to_string(),
            format!(".etcd.yaml.staticpin-{dead}-1-2.tmp"),
            ".etcd.yaml.staticpin-99999999999-1.tmp".to_string(),
        ];
        for n in stale.iter().chain(&kept) {
            fs::write(dir.path().join(n), b"x").unwrap();
        }
        // Right name, but not a regular file.
        fs::create_dir(dir.path().join(format!(".d.staticpin-{dead}-1.tmp"))).unwrap();
        symlink(
            "etcd.yaml",
            dir.path().join(format!(".l.staticpin-{dead}-1.tmp")),
        )
        .unwrap();
        // Right name, but a live process other than us may be writing it.
        let live = (me != 1 && process_alive(1)).then(|| {
            let n = ".etcd.yaml.staticpin-1-1.tmp".to_string();
            fs::write(dir.path().join(&n), b"x").unwrap();
            n
        });

        let removed = remove_stale_temps(dir.path());

        let mut expected: Vec<PathBuf> = stale.iter().map(|n| dir.path().join(n)).collect();
        expected.sort();
        assert_eq!(removed, expected);
        let left = names(dir.path());
        for n in kept.iter().chain(live.as_ref()) {
            assert!(left.contains(n), "{n} was removed");
        }
        assert_eq!(left.len(), kept.len() + 2 + usize::from(live.is_some()));
    }

    #[test]
    fn fsync_dir_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        fsync_dir(dir.path()).unwrap();
        let missing = dir.path().join("gone");
        let msg = fsync_dir(&missing).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("cannot fsync directory {}: ", missing.display())),
            "{msg}"
        );
    }
}
