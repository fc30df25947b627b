//! File events, sorted into what the daemon does about them.
//!
//! The watcher hands over raw inotify events one by one, in order (the
//! daemon's loop debounces the passes they ask for); here each is
//! classified:
//!
//! - reads (`Access(Open)`, raised by kubelet's 20 s relist and by the
//!   daemon's own reads) and dotfiles (staticpin's and kubeadm's temp files)
//!   are ignored, or the daemon would wake itself forever;
//! - a manifest counts as complete only on close-after-write, a rename in,
//!   or a removal. `Create` and `Modify(Data)` mark it as still being
//!   written (`kubeadm init` writes in place), and a pass leaves such a
//!   file out until its writer closes it;
//! - the manifest directory itself appearing, vanishing or being replaced
//!   (seen through its parent) means re-arming the watch;
//! - a queue overflow means nothing can be trusted: a full pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind};

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
    pub manifest_dir: PathBuf,
    pub kubeadm_tmp_dir: PathBuf,
    pub admission_dir: Option<PathBuf>,
}

/// Whether an event can matter at all; the rest (reads) are dropped on the
/// watcher's thread, so kubelet's relist never wakes the daemon.
pub fn relevant(e: &Event) -> bool {
    e.need_rescan()
        || !matches!(e.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write))
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
        if e.need_rescan() {
            self.forget_all();
            return Wake {
                pass: true,
                rearm: true,
                admission: true,
                upgrade: true,
            };
        }
        let mut wake = Wake::default();
        let moved = matches!(
            e.kind,
            EventKind::Modify(ModifyKind::Name(RenameMode::Both))
        );
        for (i, path) in e.paths.iter().enumerate() {
            // A pair's first path is where it moved from: gone from there.
            let from = moved && i == 0;
            wake.or(self.at(roots, &e.kind, path, from));
        }
        wake
    }

    fn at(&mut self, roots: &Roots, kind: &EventKind, path: &Path, from: bool) -> Wake {
        let none = Wake::default();
        if path == roots.manifest_dir {
            // Created, removed or renamed, seen from its parent (or its own
            // DELETE_SELF / MOVE_SELF); reads of the directory are nothing.
            return match kind {
                EventKind::Access(_) => none,
                _ => Wake {
                    rearm: true,
                    pass: true,
                    ..none
                },
            };
        }
        if path == roots.kubeadm_tmp_dir {
            return Wake {
                rearm: true,
                upgrade: true,
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
            return match kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => Wake {
                    admission: true,
                    ..none
                },
                EventKind::Access(_) | EventKind::Modify(ModifyKind::Data(_)) => none,
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
        match kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                self.writing.remove(path);
                done
            }
            EventKind::Access(_) => none,
            // kubelet does not recurse; a subdirectory is not a manifest.
            EventKind::Create(CreateKind::Folder) => none,
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) => {
                self.writing.insert(path.to_path_buf(), Instant::now());
                none
            }
            EventKind::Modify(ModifyKind::Name(_)) if from => {
                self.writing.remove(path);
                done
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                self.writing.remove(path);
                done
            }
            // Moved in: complete by definition (kubeadm upgrade, `mv`).
            EventKind::Modify(ModifyKind::Name(_)) => {
                self.writing.remove(path);
                done
            }
            _ => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, RemoveKind};

    fn roots() -> Roots {
        Roots {
            manifest_dir: "/m".into(),
            kubeadm_tmp_dir: "/t".into(),
            admission_dir: Some("/a".into()),
        }
    }

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn reads_and_dotfiles_never_wake() {
        let mut t = Tracker::default();
        let open = ev(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            &["/m/a.yaml"],
        );
        assert!(!relevant(&open));
        assert!(!t.classify(&roots(), [&open]).any());
        let tmp = ev(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &["/m/.a.yaml.tmp"],
        );
        assert!(!t.classify(&roots(), [&tmp]).any());
        let other = ev(EventKind::Create(CreateKind::File), &["/etc/admin.conf"]);
        assert!(!t.classify(&roots(), [&other]).any());
    }

    #[test]
    fn a_file_counts_once_closed_after_writing() {
        let mut t = Tracker::default();
        let r = roots();
        let create = ev(EventKind::Create(CreateKind::File), &["/m/a.yaml"]);
        let data = ev(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &["/m/a.yaml"],
        );
        let close = ev(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &["/m/a.yaml"],
        );
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
        let both = ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &["/m/.a.yaml.tmp", "/m/a.yaml"],
        );
        assert!(t.classify(&r, [&both]).pass);
        let moved_in = ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            &["/m/b.yaml"],
        );
        assert!(t.classify(&r, [&moved_in]).pass);
        let gone = ev(EventKind::Remove(RemoveKind::File), &["/m/b.yaml"]);
        assert!(t.classify(&r, [&gone]).pass);
        let dir = ev(EventKind::Remove(RemoveKind::Folder), &["/m"]);
        assert!(t.classify(&r, [&dir]).rearm);
        let staging = ev(
            EventKind::Create(CreateKind::Folder),
            &["/t/kubeadm-upgraded-manifests1"],
        );
        assert!(t.classify(&r, [&staging]).upgrade);
        let adm = ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            &["/a/policy.yaml"],
        );
        assert!(t.classify(&r, [&adm]).admission);
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(relevant(&overflow));
        let w = t.classify(&r, [&overflow]);
        assert!(w.pass && w.rearm);
    }
}
