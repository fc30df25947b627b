//! Step 5: every file kube-apiserver reads must be visible inside its
//! container, where only the mounted directories exist.
//!
//! Paths are resolved as the container resolves them: component by
//! component, following each symlink found *inside* a mounted directory (read
//! from the host directory behind the mount) and restarting an absolute
//! target from the container's root. A mount root itself is a directory in
//! the container even when its host path is a symlink (the bind mount
//! follows it), so a link pointing back through the host path behind it
//! leads nowhere in the container.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, PathBuf};

use super::*;

/// Linux's limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Why a path is not visible in the container.
#[derive(Debug, PartialEq, Eq)]
enum Hidden {
    /// Not under any mount; no symlink on the way.
    Unmounted,
    /// A symlink led to `target`, which is not under any mount.
    Link { target: PathBuf },
    /// More than [`MAX_LINKS`] symlinks.
    Loop,
}

/// The mount covering `path` in the container: the longest prefix.
fn covering<'m>(path: &Path, mounts: &'m [PathBuf]) -> Option<&'m PathBuf> {
    mounts
        .iter()
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.components().count())
}

/// Resolves `path` as the container would, with `mounts` visible at their
/// own host paths.
fn resolve_in_container(path: &Path, mounts: &[PathBuf]) -> Result<PathBuf, Hidden> {
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_front(&mut todo, path);
    let mut cur = PathBuf::from("/");
    let mut links = 0;
    let mut via_link = false;
    while let Some(name) = todo.pop_front() {
        if name == "/" {
            cur = PathBuf::from("/");
            continue;
        }
        if name == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&name);
        let Some(mount) = covering(&next, mounts) else {
            // A directory on the way to a mount point exists in the
            // container; anything else does not.
            if mounts.iter().any(|m| m.starts_with(&next)) {
                cur = next;
                continue;
            }
            let mut target = next;
            target.extend(todo.iter());
            return Err(if via_link {
                Hidden::Link { target }
            } else {
                Hidden::Unmounted
            });
        };
        if next == *mount {
            cur = next;
            continue;
        }
        match fs::read_link(host_path(&next, mounts)) {
            Ok(link) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Hidden::Loop);
                }
                via_link = true;
                push_front(&mut todo, &link);
            }
            // Not a link (or missing: reading it reports that elsewhere).
            Err(_) => cur = next,
        }
    }
    Ok(cur)
}

/// The host path behind container path `path`: the covering mount's host
/// directory (followed, as the bind mount follows it) joined with the rest.
fn host_path(path: &Path, mounts: &[PathBuf]) -> PathBuf {
    let Some(mount) = covering(path, mounts) else {
        return path.to_path_buf();
    };
    let root = fs::canonicalize(mount).unwrap_or_else(|_| mount.clone());
    path.strip_prefix(mount)
        .map_or_else(|_| path.to_path_buf(), |rest| root.join(rest))
}

/// Queues `p`'s components ahead of what is left; an absolute `p` restarts
/// from the root.
fn push_front(todo: &mut VecDeque<OsString>, p: &Path) {
    let parts: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::RootDir => Some(OsString::from("/")),
            Component::ParentDir => Some(OsString::from("..")),
            Component::Normal(n) => Some(n.to_os_string()),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    for part in parts.into_iter().rev() {
        todo.push_front(part);
    }
}

impl Run {
    /// Step 5: everything read must be visible inside the container.
    pub(super) fn mounts(&mut self, mounted: &[PathBuf]) {
        let mounts: Vec<PathBuf> = mounted.iter().map(|m| normalize(m)).collect();
        let listed = if mounts.is_empty() {
            "none".to_string()
        } else {
            mounts
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let refs = std::mem::take(&mut self.refs);
        for r in &refs {
            let at = site(CHECK_MOUNTS, &r.from).field(r.field.as_deref());
            match resolve_in_container(&r.path, &mounts) {
                Ok(seen) if !host_path(&seen, &mounts).exists() => self.warn(at, format!(
                    "{} does not exist, so whether the kube-apiserver container would see it cannot be checked",
                    r.path.display()
                )),
                Ok(seen) => {
                    let through = covering(&seen, &mounts).unwrap_or(&seen);
                    self.pass(at, format!(
                        "{} is visible in the container through {}",
                        r.path.display(),
                        through.display()
                    ));
                }
                Err(Hidden::Unmounted) => self.fail(at, format!(
                    "{} is not in a directory mounted into the kube-apiserver container (mounted: {listed}); mount {} (hostPath and a readOnly volumeMount at the same path)",
                    r.path.display(),
                    parent(&r.path).display()
                )),
                Err(Hidden::Link { target }) => self.fail(at, format!(
                    "{} is a symlink to {}, which is not in a directory mounted into the kube-apiserver container (mounted: {listed}); inside the container only mounted paths exist: copy the file or mount {}",
                    r.path.display(),
                    target.display(),
                    parent(&target).display()
                )),
                Err(Hidden::Loop) => self.fail(at, format!(
                    "{}: more than {MAX_LINKS} symlinks on the way, as the container resolves it",
                    r.path.display()
                )),
            }
        }
        self.refs = refs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_resolve_as_in_the_container() {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        let real = root.join("real");
        let mount = root.join("mount");
        let other = root.join("other");
        for d in [&real, &other] {
            fs::create_dir(d).unwrap();
        }
        symlink(&real, &mount).unwrap();
        fs::write(real.join("file"), "x").unwrap();
        fs::write(other.join("file"), "x").unwrap();
        symlink("file", real.join("rel")).unwrap();
        symlink(mount.join("file"), real.join("abs-in")).unwrap();
        symlink(real.join("file"), real.join("abs-host")).unwrap();
        symlink("../other/file", real.join("escape")).unwrap();
        symlink("loop", real.join("loop")).unwrap();
        let mounts = [mount.clone()];
        let ok = |n: &str| resolve_in_container(&mount.join(n), &mounts);
        assert_eq!(ok("file"), Ok(mount.join("file")));
        assert_eq!(ok("rel"), Ok(mount.join("file")));
        assert_eq!(ok("abs-in"), Ok(mount.join("file")));
        assert_eq!(
            ok("abs-host"),
            Err(Hidden::Link {
                target: real.join("file")
            })
        );
        assert_eq!(
            ok("escape"),
            Err(Hidden::Link {
                target: other.join("file")
            })
        );
        assert_eq!(ok("loop"), Err(Hidden::Loop));
        assert_eq!(
            resolve_in_container(&other.join("file"), &mounts),
            Err(Hidden::Unmounted)
        );
        // Mounting the target too makes the host-path link visible.
        assert_eq!(
            resolve_in_container(&mount.join("abs-host"), &[mount.clone(), real.clone()]),
            Ok(real.join("file"))
        );
    }
}
