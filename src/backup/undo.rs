//! Undoing one recorded run, and nothing that happened after it.
//!
//! A file is put back only if it still holds exactly the bytes the run
//! wrote (by sha256); anything else means someone changed it since (a
//! `kubeadm upgrade`, an operator), and restoring would silently revert
//! that. Such a file is refused with the reason unless forced. Restores are
//! compare-and-swap writes, so a change racing the restore also stands.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use super::{
    format_timestamp, parse_run_name, read_index, scope_forms, sha256_hex, trust, write_index,
    BackupStore, ImageChange, Index, IndexEntry,
};
use crate::fsutil::{self, FsError, WriteOutcome};

/// A recorded run, for `rollback --list`.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// The run's name: its UTC start time.
    pub name: String,
    /// Every file the run changed, in the order it saved them.
    pub files: Vec<RunFile>,
    /// Every file of the run has been put back.
    pub undone: bool,
}

/// One file of a recorded run.
#[derive(Clone, Debug)]
pub struct RunFile {
    /// The manifest the run changed, as it was named (symlinks kept).
    pub original: PathBuf,
    /// The saved copy of its bytes from before the run.
    pub backup: PathBuf,
    /// The image values the run changed in it.
    pub images: Vec<ImageChange>,
    /// The run also wired admission into it.
    pub wired: bool,
    /// It has been put back since (by `rollback` or the health gate).
    pub restored: bool,
}

/// Which files a rollback may write.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Everything the run changed, but only inside this directory (the
    /// configured manifest directory); files elsewhere are refused.
    Confined(PathBuf),
    /// Only files at or under this path; the run's other files are left
    /// for a later rollback.
    Only(PathBuf),
}

/// What [`BackupStore::undo`] should undo, and where it may write.
#[derive(Clone, Debug)]
pub struct UndoRequest {
    /// A run name; `None` for the newest run with something left to undo.
    pub run: Option<String>,
    /// Which of the run's files may be written.
    pub scope: Scope,
    /// Restore over files changed since the run.
    pub force: bool,
}

/// What became of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileUndo {
    /// Put back from the backup.
    Restored {
        /// The backup it was restored from.
        backup: PathBuf,
        /// It no longer held what the run wrote, and `force` overrode that.
        forced: bool,
    },
    /// Already held the bytes from before the run.
    AlreadyAsBefore,
    /// Left as it is; the reason says why and how to override it.
    Refused(String),
}

/// What an undo did.
#[derive(Clone, Debug)]
pub struct Undone {
    /// The run undone.
    pub run: String,
    /// Each file it tried, by its original path, in the run's order.
    pub files: Vec<(PathBuf, FileUndo)>,
}

/// Why no file of the run was tried.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// The tree is not trusted, or cannot be read or its index written.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The named run is not in the tree.
    #[error("no run {run} in {root}")]
    NoSuchRun {
        /// The name asked for.
        run: String,
        /// The backup root searched.
        root: PathBuf,
    },
    /// The named run's time is after now; such runs are ignored.
    #[error("run {run} is dated in the future; runs from the future are ignored")]
    Future {
        /// The name asked for.
        run: String,
    },
}

impl BackupStore {
    /// Every recorded run, oldest first, after checking the tree is trusted.
    pub fn list(&self) -> Result<Vec<RunInfo>, FsError> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        trust::check_root(&self.root)?;
        let mut out = Vec::new();
        for run in self.runs()? {
            let Some(index) = read_index(&run.path)? else {
                continue;
            };
            out.push(RunInfo {
                name: run.name,
                undone: index.backups.iter().all(|e| e.restored.is_some()),
                files: index
                    .backups
                    .iter()
                    .map(|e| RunFile {
                        original: e.original.clone(),
                        backup: run.path.join(&e.backup),
                        images: e.images.clone(),
                        wired: e.wired,
                        restored: e.restored.is_some(),
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    /// Undoes one run (see the module docs). `Ok(None)`: nothing to undo.
    pub fn undo(&self, req: &UndoRequest) -> Result<Option<Undone>, UndoError> {
        if !self.root.exists() {
            return match &req.run {
                Some(run) => Err(self.no_such_run(run)),
                None => Ok(None),
            };
        }
        trust::check_root(&self.root)?;
        let scope_path = match &req.scope {
            Scope::Confined(p) | Scope::Only(p) => p,
        };
        let forms = scope_forms(scope_path)?;
        // `..` would let a path start with the scope and still leave it.
        let in_scope = |e: &IndexEntry| {
            let plain = |p: &Path| !p.components().any(|c| c == Component::ParentDir);
            plain(&e.original)
                && plain(&e.resolved)
                && forms
                    .iter()
                    .any(|s| e.original.starts_with(s) || e.resolved.starts_with(s))
        };
        let wanted = |e: &IndexEntry| {
            e.restored.is_none() && (matches!(req.scope, Scope::Confined(_)) || in_scope(e))
        };

        let Some((run, mut index)) = self.select(req.run.as_deref(), &wanted)? else {
            return Ok(None);
        };
        if !index.backups.iter().any(wanted) {
            return Ok(None);
        }

        let mut files = Vec::new();
        let now = format_timestamp(SystemTime::now());
        for entry in index.backups.iter_mut().filter(|e| wanted(e)) {
            let outcome = if in_scope(entry) {
                undo_file(&run.path, &run.name, entry, req.force)
            } else {
                FileUndo::Refused(format!(
                    "outside the manifest directory {}; name it as PATH to restore it",
                    scope_path.display()
                ))
            };
            if matches!(
                outcome,
                FileUndo::Restored { .. } | FileUndo::AlreadyAsBefore
            ) {
                entry.restored = Some(now.clone());
            }
            files.push((entry.original.clone(), outcome));
        }
        if index.backups.iter().all(|e| e.restored.is_some()) {
            index.undone = Some(now);
        }
        write_index(&run.path, &index)?;
        Ok(Some(Undone {
            run: run.name,
            files,
        }))
    }

    /// The named run, or the newest with an entry `wanted`.
    fn select(
        &self,
        name: Option<&str>,
        wanted: &dyn Fn(&IndexEntry) -> bool,
    ) -> Result<Option<(super::RunDir, Index)>, UndoError> {
        let runs = self.runs()?;
        let Some(name) = name else {
            for run in runs.into_iter().rev() {
                if let Some(index) = read_index(&run.path)? {
                    if index.backups.iter().any(wanted) {
                        return Ok(Some((run, index)));
                    }
                }
            }
            return Ok(None);
        };
        let Some(run) = runs.into_iter().find(|r| r.name == name) else {
            if parse_run_name(name).is_some() && self.root.join(name).is_dir() {
                return Err(UndoError::Future {
                    run: name.to_string(),
                });
            }
            return Err(self.no_such_run(name));
        };
        let index = read_index(&run.path)?.unwrap_or_default();
        Ok(Some((run, index)))
    }

    fn no_such_run(&self, run: &str) -> UndoError {
        UndoError::NoSuchRun {
            run: run.to_string(),
            root: self.root.clone(),
        }
    }
}

fn undo_file(dir: &Path, run: &str, entry: &IndexEntry, force: bool) -> FileUndo {
    let backup_path = dir.join(&entry.backup);
    let backup = match trust::read_file(&backup_path) {
        Ok(b) => b,
        Err(e) => return FileUndo::Refused(e.to_string()),
    };
    if let Some(want) = &entry.before_sha256 {
        if &sha256_hex(&backup) != want {
            return FileUndo::Refused(format!(
                "backup {} does not hold what run {run} recorded",
                backup_path.display()
            ));
        }
    }
    let current = match std::fs::read(&entry.original) {
        Ok(c) => c,
        Err(e) => return FileUndo::Refused(format!("cannot read it: {e}")),
    };
    let now = sha256_hex(&current);
    let as_written = entry.after_sha256.as_ref() == Some(&now);
    if !as_written && entry.before_sha256.as_ref() == Some(&now) {
        return FileUndo::AlreadyAsBefore;
    }
    if !as_written && !force {
        return FileUndo::Refused(match &entry.after_sha256 {
            Some(_) => format!(
                "changed since run {run} wrote it; not restored, so that later change stands (--force restores anyway)"
            ),
            None => format!(
                "run {run} was recorded by an older staticpin that did not note what it wrote; not restored (--force restores anyway)"
            ),
        });
    }
    match fsutil::atomic_replace_if(&entry.original, &current, &backup) {
        Ok(WriteOutcome::Written | WriteOutcome::Unchanged) => FileUndo::Restored {
            backup: backup_path,
            forced: !as_written,
        },
        Err(FsError::Changed { .. }) => {
            FileUndo::Refused("changed while staticpin ran; nothing written".to_string())
        }
        Err(e) => FileUndo::Refused(e.to_string()),
    }
}
