//! File events, sorted into what the daemon does about them.
//!
//! The daemon reads inotify itself ([`Watch`]) with a mask that leaves out
//! `IN_OPEN` and `IN_ACCESS`: kubelet re-reads every manifest every 20 s and
//! staticpin reads each file several times a pass, and those reads are
//! dropped by the kernel instead of waking the daemon (the `notify` crate
//! always asks for `IN_OPEN`). Each event is then classified here, in order
//! (the daemon's loop debounces the passes they ask for):
//!
//! - dotfiles (staticpin's and kubeadm's temp files) are ignored, or the
//!   daemon would wake itself forever;
//! - a manifest counts as complete only on close-after-write, a rename in,
//!   or a removal. `IN_CREATE` and `IN_MODIFY` mark it as still being
//!   written (`kubeadm init` writes in place), and a pass leaves such a
//!   file out until its writer closes it;
//! - the manifest directory itself appearing, vanishing or being replaced
//!   (seen through its parent, or its own delete-self / move-self) means
//!   re-arming the watch;
//! - a queue overflow means nothing can be trusted: a full pass.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};

/// What happened, as far as the daemon cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A writer closed the file (`IN_CLOSE_WRITE`).
    CloseWrite,
    /// Created in place (`IN_CREATE`); `dir` for a subdirectory.
    Create {
        /// The new entry is a directory (kubelet does not recurse into one).
        dir: bool,
    },
    /// Written to (`IN_MODIFY`): not finished until closed.
    Modify,
    /// Renamed away from here (`IN_MOVED_FROM`).
    MovedFrom,
    /// Renamed into here (`IN_MOVED_TO`): complete by definition.
    MovedTo,
    /// Removed (`IN_DELETE`).
    Delete,
    /// Mode, owner or timestamps changed (`IN_ATTRIB`).
    Attrib,
    /// The watched directory itself was removed or moved, or its watch
    /// ended (`IN_DELETE_SELF`, `IN_MOVE_SELF`, `IN_IGNORED`).
    Gone,
    /// The kernel's queue overflowed (`IN_Q_OVERFLOW`): events were lost.
    Overflow,
}

/// One event on one path (the watched directory itself for [`Kind::Gone`],
/// empty for [`Kind::Overflow`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: Kind,
    /// The path the event names: the file in a watched directory, or the
    /// directory itself.
    pub path: PathBuf,
}

impl Event {
    /// An event of `kind` on `path`.
    pub fn new(kind: Kind, path: impl Into<PathBuf>) -> Event {
        Event {
            kind,
            path: path.into(),
        }
    }
}

/// Everything the daemon watches for, on every watched directory. No
/// `IN_OPEN` / `IN_ACCESS` / `IN_CLOSE_NOWRITE`: reads never matter.
fn mask() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// One inotify instance over a set of directories (non-recursive).
/// Dropping it closes the descriptor, which ends every watch.
pub struct Watch {
    stream: EventStream<Vec<u8>>,
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

impl Watch {
    /// Watches each directory in `dirs` that exists; the others are
    /// reported back, with why, for the caller to log.
    pub fn new(dirs: &[&Path]) -> io::Result<(Watch, Vec<(PathBuf, io::Error)>)> {
        let inotify = Inotify::init()?;
        let mut table = HashMap::new();
        let mut failed = Vec::new();
        for dir in dirs {
            match inotify.watches().add(dir, mask()) {
                Ok(wd) => {
                    table.insert(wd, dir.to_path_buf());
                }
                Err(e) => failed.push((dir.to_path_buf(), e)),
            }
        }
        // Room for a burst of events; inotify never splits one.
        let stream = inotify.into_event_stream(vec![0u8; 16 * 1024])?;
        Ok((
            Watch {
                stream,
                dirs: table,
            },
            failed,
        ))
    }

    /// The next event; `None` once the descriptor is closed.
    pub async fn next(&mut self) -> Option<io::Result<Event>> {
        loop {
            let raw = match self.stream.next().await? {
                Ok(raw) => raw,
                Err(e) => return Some(Err(e)),
            };
            if raw.mask.contains(EventMask::Q_OVERFLOW) {
                return Some(Ok(Event::new(Kind::Overflow, PathBuf::new())));
            }
            let Some(dir) = self.dirs.get(&raw.wd) else {
                continue;
            };
            let path = match &raw.name {
                Some(name) => dir.join(name),
                None => dir.clone(),
            };
            if let Some(kind) = kind_of(raw.mask, raw.name.is_none()) {
                return Some(Ok(Event::new(kind, path)));
            }
        }
    }
}

fn kind_of(mask: EventMask, on_self: bool) -> Option<Kind> {
    let gone = EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED;
    Some(if mask.intersects(gone) {
        Kind::Gone
    } else if mask.contains(EventMask::CLOSE_WRITE) {
        Kind::CloseWrite
    } else if mask.contains(EventMask::CREATE) {
        Kind::Create {
            dir: mask.contains(EventMask::ISDIR),
        }
    } else if mask.contains(EventMask::MODIFY) {
        Kind::Modify
    } else if mask.contains(EventMask::MOVED_FROM) {
        Kind::MovedFrom
    } else if mask.contains(EventMask::MOVED_TO) {
        Kind::MovedTo
    } else if mask.contains(EventMask::DELETE) {
        Kind::Delete
    } else if mask.contains(EventMask::ATTRIB) && !on_self {
        Kind::Attrib
    } else {
        return None;
    })
}

/// What a batch of events asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wake {
    /// Some manifest is complete and changed: run a pass.
    pub pass: bool,
    /// The manifest directory (or the kubeadm tmp dir) appeared or went:
    /// re-arm the watches, then a full pass.
    pub rearm: bool,
    /// The admission files changed: run the preflight again (in a pass).
    pub admission: bool,
    /// The kubeadm tmp dir changed: an upgrade may have started or ended.
    pub upgrade: bool,
}

impl Wake {
    /// Whether the batch asks for anything at all.
    pub fn any(&self) -> bool {
        self.pass || self.rearm || self.admission || self.upgrade
    }

    fn or(&mut self, other: Wake) {
        self.pass |= other.pass;
        self.rearm |= other.rearm;
        self.admission |= other.admission;
        self.upgrade |= other.upgrade;
    }
}

/// The directories whose events mean something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// kubelet's static pod directory: its manifests are what passes pin.
    pub manifest_dir: PathBuf,
    /// Where `kubeadm upgrade` stages manifests; activity there holds passes
    /// off.
    pub kubeadm_tmp_dir: PathBuf,
    /// The admission files' directory, when the daemon wires admission; a
    /// change there reruns the preflight.
    pub admission_dir: Option<PathBuf>,
}

/// Manifests still open for writing, as far as events tell.
#[derive(Debug, Default)]
pub struct Tracker {
    writing: HashMap<PathBuf, Instant>,
}

impl Tracker {
    /// Files to leave out of a pass. A mark older than `stale` is ignored:
    /// a close event lost in an overflow must not hide a file forever.
    pub fn writing(&self, stale: Duration) -> Vec<PathBuf> {
        self.writing
            .iter()
            .filter(|(_, since)| since.elapsed() < stale)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Drops every write mark, e.g. after the watch failed and events may have
    /// been lost.
    pub fn forget_all(&mut self) {
        self.writing.clear();
    }

    /// Classifies one batch, in order, updating the write marks.
    pub fn classify<'a>(
        &mut self,
        roots: &Roots,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Wake {
        let mut wake = Wake::default();
        for e in events {
            wake.or(self.one(roots, e));
        }
        wake
    }

    fn one(&mut self, roots: &Roots, e: &Event) -> Wake {
        let none = Wake::default();
        let path = e.path.as_path();
        if e.kind == Kind::Overflow {
            self.forget_all();
            return Wake {
                pass: true,
                rearm: true,
                admission: true,
                upgrade: true,
            };
        }
        if path == roots.manifest_dir {
            // Created, removed or renamed, seen from its parent, or its own
            // watch gone: watch it again and look at everything.
            return Wake {
                rearm: true,
                pass: true,
                ..none
            };
        }
        if path == roots.kubeadm_tmp_dir {
            return Wake {
                rearm: true,
                upgrade: true,
                ..none
            };
        }
        if roots.admission_dir.as_deref() == Some(path) {
            return Wake {
                rearm: true,
                admission: true,
                ..none
            };
        }
        if e.kind == Kind::Gone {
            // A parent watched for re-arming went away itself.
            return Wake {
                rearm: true,
                ..none
            };
        }
        let Some(parent) = path.parent() else {
            return none;
        };
        if parent == roots.kubeadm_tmp_dir {
            return Wake {
                upgrade: true,
                ..none
            };
        }
        if roots.admission_dir.as_deref() == Some(parent) {
            return match e.kind {
                Kind::Modify => none,
                _ => Wake {
                    admission: true,
                    ..none
                },
            };
        }
        if parent != roots.manifest_dir {
            return none;
        }
        // kubelet ignores dotfiles; so do we (our temp files among them).
        if path
            .file_name()
            .is_none_or(|n| n.as_encoded_bytes().starts_with(b"."))
        {
            return none;
        }
        let done = Wake { pass: true, ..none };
        match e.kind {
            // kubelet does not recurse; a subdirectory is not a manifest.
            Kind::Create { dir: true } => none,
            Kind::Create { dir: false } | Kind::Modify => {
                self.writing.insert(path.to_path_buf(), Instant::now());
                none
            }
            // Closed after writing, moved in (kubeadm upgrade, `mv`), moved
            // out or removed: nobody is writing it any more.
            Kind::CloseWrite | Kind::MovedTo | Kind::MovedFrom | Kind::Delete => {
                self.writing.remove(path);
                done
            }
            Kind::Attrib | Kind::Gone | Kind::Overflow => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> Roots {
        Roots {
            manifest_dir: "/m".into(),
            kubeadm_tmp_dir: "/t".into(),
            admission_dir: Some("/a".into()),
        }
    }

    fn ev(kind: Kind, path: &str) -> Event {
        Event::new(kind, path)
    }

    #[test]
    fn dotfiles_and_other_directories_never_wake() {
        let mut t = Tracker::default();
        let tmp = ev(Kind::CloseWrite, "/m/.a.yaml.tmp");
        assert!(!t.classify(&roots(), [&tmp]).any());
        let other = ev(Kind::Create { dir: false }, "/etc/admin.conf");
        assert!(!t.classify(&roots(), [&other]).any());
        let subdir = ev(Kind::Create { dir: true }, "/m/old");
        assert!(!t.classify(&roots(), [&subdir]).any());
    }

    #[test]
    fn a_file_counts_once_closed_after_writing() {
        let mut t = Tracker::default();
        let r = roots();
        let create = ev(Kind::Create { dir: false }, "/m/a.yaml");
        let data = ev(Kind::Modify, "/m/a.yaml");
        let close = ev(Kind::CloseWrite, "/m/a.yaml");
        assert!(!t.classify(&r, [&create, &data]).pass);
        assert_eq!(
            t.writing(Duration::from_secs(60)),
            vec![PathBuf::from("/m/a.yaml")]
        );
        assert!(
            t.writing(Duration::ZERO).is_empty(),
            "stale marks are ignored"
        );
        assert!(t.classify(&r, [&close]).pass);
        assert!(t.writing(Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn renames_in_and_out_and_the_directory_itself() {
        let mut t = Tracker::default();
        let r = roots();
        let from = ev(Kind::MovedFrom, "/m/.a.yaml.tmp");
        assert!(!t.classify(&r, [&from]).any());
        assert!(t.classify(&r, [&ev(Kind::MovedTo, "/m/a.yaml")]).pass);
        assert!(t.classify(&r, [&ev(Kind::Delete, "/m/b.yaml")]).pass);
        assert!(t.classify(&r, [&ev(Kind::Gone, "/m")]).rearm);
        assert!(t.classify(&r, [&ev(Kind::Delete, "/m")]).rearm);
        assert!(t.classify(&r, [&ev(Kind::Gone, "/")]).rearm);
        let staging = ev(Kind::Create { dir: true }, "/t/kubeadm-upgraded-manifests1");
        assert!(t.classify(&r, [&staging]).upgrade);
        assert!(
            t.classify(&r, [&ev(Kind::MovedTo, "/a/policy.yaml")])
                .admission
        );
        assert!(!t.classify(&r, [&ev(Kind::Modify, "/a/policy.yaml")]).any());
        let w = t.classify(&r, [&ev(Kind::Overflow, "")]);
        assert!(w.pass && w.rearm);
    }

    /// The real kernel, through [`Watch`]: a read is never delivered, a
    /// write and close is, and so is a rename in. The mask itself asks for
    /// no read events, so the kernel drops them before they are queued.
    #[tokio::test]
    async fn reads_never_reach_the_daemon() {
        let reads = WatchMask::OPEN | WatchMask::ACCESS | WatchMask::CLOSE_NOWRITE;
        assert!(!mask().intersects(reads), "{:?}", mask());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, "x").unwrap();
        let (mut w, failed) = Watch::new(&[dir.path()]).unwrap();
        assert!(failed.is_empty());
        let _ = std::fs::read(&file).unwrap();
        std::fs::write(dir.path().join(".b.tmp"), "y").unwrap();
        std::fs::rename(dir.path().join(".b.tmp"), dir.path().join("b.yaml")).unwrap();
        let mut seen = Vec::new();
        while seen.last().map(|e: &Event| e.kind) != Some(Kind::MovedTo) {
            let e = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .expect("events within 5 s")
                .unwrap()
                .unwrap();
            seen.push(e);
        }
        let kinds: Vec<(Kind, String)> = seen
            .iter()
            .map(|e| (e.kind, e.path.file_name().unwrap().to_string_lossy().into()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Create { dir: false }, ".b.tmp".into()),
                (Kind::Modify, ".b.tmp".into()),
                (Kind::CloseWrite, ".b.tmp".into()),
                (Kind::MovedFrom, ".b.tmp".into()),
                (Kind::MovedTo, "b.yaml".into()),
            ]
        );
    }
}
