//! One writing staticpin at a time on a node.
//!
//! Two writers (a timer and an operator, or a daemon and a manual
//! `rollback`) would each plan from what the other is about to replace.
//! Every run that writes takes an exclusive `flock` on one file first
//! (default [`DEFAULT_LOCK_FILE`], under systemd's `RuntimeDirectory`),
//! waits a bounded time for it, and writes its PID into it so that the
//! one left waiting can say who holds it. The kernel drops the lock when
//! the holder exits, however it exits. Read-only modes never lock.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::config::DEFAULT_LOCK_FILE;
/// How long a writing run waits for another to finish before giving up.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// Where the lock lives and how long to wait for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockSettings {
    /// The lock file; its directory is created if missing.
    pub path: PathBuf,
    /// How long to wait for the lock before failing with [`LockError::Busy`].
    pub timeout: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings {
            path: PathBuf::from(DEFAULT_LOCK_FILE),
            timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

/// Why the run lock could not be taken; the run writes nothing.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be created, opened or locked.
    #[error("cannot open lock file {path}: {source}")]
    Open {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another staticpin held the lock for the whole timeout.
    #[error("another staticpin ({holder}) holds the lock {path}; gave up after {waited:.0?}")]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// `pid N` from the file, or `pid unknown`.
        holder: String,
        /// How long this run waited.
        waited: Duration,
    },
}

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Waits up to `settings.timeout`, sleeping with `sleep` between tries.
    async fn acquire_with<F, Fut>(settings: &LockSettings, sleep: F) -> Result<RunLock, LockError>
    where
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut file = open(&settings.path)?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if start.elapsed() < settings.timeout => {
                    sleep(POLL.min(settings.timeout.saturating_sub(start.elapsed()))).await
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Busy {
                        path: settings.path.clone(),
                        holder: holder(&mut file),
                        waited: start.elapsed(),
                    })
                }
                Err(TryLockError::Error(source)) => {
                    return Err(LockError::Open {
                        path: settings.path.clone(),
                        source,
                    })
                }
            }
        }
        // Only the holder writes the file, so readers see one PID at most.
        let pid = format!("{}\n", std::process::id());
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()));
        if let Err(e) = written {
            tracing::warn!("cannot record our PID in {}: {e}", settings.path.display());
        }
        Ok(RunLock { _file: file })
    }

    /// For async callers (the pass, a daemon): waiting does not block the runtime.
    pub async fn acquire(settings: &LockSettings) -> Result<RunLock, LockError> {
        Self::acquire_with(settings, tokio::time::sleep).await
    }

    /// For synchronous callers (`rollback`).
    pub fn acquire_blocking(settings: &LockSettings) -> Result<RunLock, LockError> {
        let fut = Self::acquire_with(settings, |d| {
            std::thread::sleep(d);
            std::future::ready(())
        });
        futures_util::FutureExt::now_or_never(fut).unwrap_or_else(|| {
            Err(LockError::Open {
                path: settings.path.clone(),
                source: io::Error::other("lock wait did not complete"),
            })
        })
    }
}

fn open(path: &Path) -> Result<File, LockError> {
    let err = |source| LockError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(err)?;
    }
    // O_NOFOLLOW: in a shared directory a planted symlink must not make
    // root truncate some other file when it records its PID.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(err)
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let read = file
        .rewind()
        .and_then(|()| file.take(32).read_to_string(&mut text));
    match read.map(|_| text.trim().parse::<u32>()) {
        Ok(Ok(pid)) => format!("pid {pid}"),
        _ => "pid unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_lock_waits_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LockSettings {
            path: dir.path().join("run/staticpin/lock"),
            timeout: Duration::from_millis(300),
        };
        let held = RunLock::acquire(&settings).await.unwrap();
        let text = std::fs::read_to_string(&settings.path).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));

        let start = Instant::now();
        let err = RunLock::acquire_blocking(&settings).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(300));
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains(&settings.path.display().to_string()), "{msg}");

        drop(held);
        RunLock::acquire_blocking(&settings).unwrap();
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let settings = LockSettings {
            path: link,
            timeout: Duration::ZERO,
        };
        assert!(RunLock::acquire_blocking(&settings).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}
