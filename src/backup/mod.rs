//! Runs recorded in the backup tree: what each staticpin run changed, the
//! bytes it replaced, and enough to undo exactly that run later.
//!
//! kubelet runs every non-dot file in its manifest directory, so a `*.bak`
//! beside a manifest would start a second copy of the pod. Backups live under
//! their own root instead (default [`DEFAULT_ROOT`]), and a backup refuses
//! to be written if that root sits inside the manifest's directory.
//!
//! Each run that changes something gets one directory named by its UTC
//! start time (module `stamp`). Its `index.json` records, per file, the original
//! path, the sha256 of the bytes before and of the bytes the run wrote, and
//! the images it changed. A file whose write did not happen is withdrawn
//! from the index again, and a run left with nothing is removed, so every
//! run on disk changed something. [`undo`] restores a run only over files
//! that still hold what it wrote; module `trust` decides whether the tree may be
//! believed at all.

mod stamp;
mod trust;
pub mod undo;

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsutil::{self, FsError, Step, WriteOutcome};
pub use stamp::format_timestamp;
use stamp::{format_micros, micros_since_epoch, parse_run_name};

/// Where run directories go unless configured otherwise: outside kubelet's
/// manifest directory.
pub const DEFAULT_ROOT: &str = crate::config::DEFAULT_BACKUP_DIR;
/// How many run directories [`BackupStore::prune`] callers keep by default.
pub const DEFAULT_KEEP: usize = crate::config::DEFAULT_KEEP_BACKUPS as usize;

const INDEX_FILE: &str = "index.json";
/// Version 1 indexes (no hashes, no images) are still read; their runs can
/// only be undone with `--force`, as nothing says what they wrote.
const INDEX_VERSION: u32 = 2;
// Manifests may carry credentials in their args; keep backups root-only.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Contents of a run's `index.json`, entries in save order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    backups: Vec<IndexEntry>,
    /// When the last of its files was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    undone: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct IndexEntry {
    /// File name inside the run directory.
    backup: String,
    /// The path as the caller gave it (made absolute, symlinks kept), which
    /// is what a restore writes through.
    original: PathBuf,
    /// Where `original` pointed at backup time.
    resolved: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before_sha256: Option<String>,
    /// What the run wrote; a restore needs the file to still hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    images: Vec<ImageChange>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    wired: bool,
    /// When this file was put back (by `rollback` or the health gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restored: Option<String>,
}

/// One image value a run changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageChange {
    /// The `image:` value before the run, e.g. `name:tag`.
    pub from: String,
    /// The value the run wrote, e.g. `name:tag@sha256:…`.
    pub to: String,
}

/// What a run did to one file, for [`BackupRun::save`].
#[derive(Clone, Debug, Default)]
pub struct Change<'a> {
    /// The bytes the change was planned from; saved as the backup.
    pub before: &'a [u8],
    /// The bytes about to be written.
    pub after: &'a [u8],
    /// The image values this change pins or moves; recorded in the index.
    pub images: Vec<ImageChange>,
    /// Admission wiring was part of the change.
    pub wired: bool,
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The backup tree: one directory per run under `root`, each with its
/// `index.json`. Records runs, lists, prunes and undoes them.
pub struct BackupStore {
    root: PathBuf,
}

impl Default for BackupStore {
    fn default() -> Self {
        BackupStore::new(DEFAULT_ROOT)
    }
}

/// A run directory found in the root.
struct RunDir {
    name: String,
    path: PathBuf,
}

impl BackupStore {
    /// A store rooted at `root`; nothing is touched on disk until a run
    /// saves a file.
    pub fn new(root: impl Into<PathBuf>) -> BackupStore {
        BackupStore { root: root.into() }
    }

    /// The directory that holds the run directories.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts a run stamped with the current time. Nothing is created on
    /// disk until the first [`BackupRun::save`], so a run that changes
    /// nothing leaves no empty directory behind.
    pub fn begin_run(&self) -> BackupRun {
        self.begin_run_at(SystemTime::now())
    }

    /// Like [`begin_run`](Self::begin_run), with the caller's clock.
    pub fn begin_run_at(&self, start: SystemTime) -> BackupRun {
        BackupRun {
            root: self.root.clone(),
            micros: micros_since_epoch(start),
            dir: None,
            index: Index {
                version: INDEX_VERSION,
                ..Index::default()
            },
        }
    }

    /// Keeps the newest `keep` run directories and removes the rest,
    /// returning what was removed. Anything in the root whose name is not
    /// one of our timestamps, and any run dated in the future, is never
    /// touched or counted.
    pub fn prune(&self, keep: usize) -> Result<Vec<PathBuf>, FsError> {
        let runs = self.runs()?;
        let excess = runs.len().saturating_sub(keep);
        let mut removed = Vec::with_capacity(excess);
        for run in runs.into_iter().take(excess) {
            fs::remove_dir_all(&run.path).map_err(|e| FsError::io(Step::Remove, &run.path, e))?;
            removed.push(run.path);
        }
        if !removed.is_empty() {
            fsutil::fsync_dir(&self.root)?;
        }
        Ok(removed)
    }

    /// Run directories, oldest first. A run named after a time still to
    /// come cannot be one staticpin recorded (or the clock went back): it
    /// is ignored, so it can neither be restored nor push real runs out of
    /// `keepBackups`.
    fn runs(&self) -> Result<Vec<RunDir>, FsError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FsError::io(Step::ListDir, &self.root, e)),
        };
        let now = micros_since_epoch(SystemTime::now());
        let mut runs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FsError::io(Step::ListDir, &self.root, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(micros) = parse_run_name(&name) else {
                continue;
            };
            // file_type() does not follow symlinks: a link is never a run.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if micros > now {
                tracing::warn!(
                    "ignoring backup run {} dated in the future",
                    entry.path().display()
                );
                continue;
            }
            runs.push(RunDir {
                name,
                path: entry.path(),
            });
        }
        runs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(runs)
    }
}

/// One run's backups. Created by [`BackupStore::begin_run`].
pub struct BackupRun {
    root: PathBuf,
    micros: u64,
    dir: Option<PathBuf>,
    index: Index,
}

impl BackupRun {
    /// The run directory, once the first save has created it.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Stores `change.before` as the backup of `original` and records the
    /// change in the run's index; returns the backup's path. Call it right
    /// before writing, and [`withdraw`](Self::withdraw) if the write then
    /// does not happen.
    pub fn save(&mut self, original: &Path, change: &Change<'_>) -> Result<PathBuf, FsError> {
        let original =
            std::path::absolute(original).map_err(|e| FsError::io(Step::Resolve, original, e))?;
        let resolved = match fs::canonicalize(&original) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => original.clone(),
            Err(e) => return Err(FsError::io(Step::Resolve, &original, e)),
        };
        self.refuse_root_inside_dir_of(&original, &resolved)?;
        let base = original
            .file_name()
            .ok_or_else(|| {
                FsError::io(
                    Step::Create,
                    &original,
                    io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
                )
            })?
            .to_string_lossy()
            .into_owned();

        let dir = self.ensure_dir()?;
        let name = self.unused_name(&dir, &base);
        let backup = dir.join(&name);
        fsutil::write_new_file_atomically(&backup, change.before, FILE_MODE)?;

        self.index.backups.push(IndexEntry {
            backup: name,
            original,
            resolved,
            before_sha256: Some(sha256_hex(change.before)),
            after_sha256: Some(sha256_hex(change.after)),
            images: change.images.clone(),
            wired: change.wired,
            restored: None,
        });
        if let Err(e) = self.write_index(&dir) {
            // The backup file stays, unindexed; the next save picks another
            // name because it checks the disk too.
            self.index.backups.pop();
            return Err(e);
        }
        Ok(backup)
    }

    /// Takes back a [`save`](Self::save) whose write did not happen: the
    /// entry and its backup go, and a run left with nothing goes too, so
    /// that `rollback` never finds a run that changed nothing.
    pub fn withdraw(&mut self, backup: &Path) -> Result<(), FsError> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let Some(pos) = self
            .index
            .backups
            .iter()
            .position(|e| dir.join(&e.backup) == backup)
        else {
            return Ok(());
        };
        self.index.backups.remove(pos);
        if self.index.backups.is_empty() {
            fs::remove_dir_all(&dir).map_err(|e| FsError::io(Step::Remove, &dir, e))?;
            self.dir = None;
            return fsutil::fsync_dir(&self.root);
        }
        self.write_index(&dir)?;
        fs::remove_file(backup).map_err(|e| FsError::io(Step::Remove, backup, e))
    }

    /// Puts the file saved as `backup` back, but only if it still holds
    /// `written`, what this run wrote (the health gate's rollback). The
    /// bytes come from the backup store, not from memory, so what is
    /// restored is what `rollback` would restore.
    pub fn restore(&mut self, backup: &Path, written: &[u8]) -> Result<WriteOutcome, FsError> {
        let Some(original) = self.dir.as_ref().and_then(|dir| {
            self.index
                .backups
                .iter()
                .find(|e| dir.join(&e.backup) == backup)
                .map(|e| e.original.clone())
        }) else {
            return Err(FsError::Index {
                path: backup.to_path_buf(),
                reason: "not a backup of this run".into(),
            });
        };
        let bytes = trust::read_file(backup)?;
        let outcome = fsutil::atomic_replace_if(&original, written, &bytes)?;
        self.mark_restored(backup)?;
        Ok(outcome)
    }

    /// Records that the file saved as `backup` holds its old bytes again,
    /// so `rollback` leaves it alone.
    fn mark_restored(&mut self, backup: &Path) -> Result<(), FsError> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let now = format_timestamp(SystemTime::now());
        if let Some(e) = self
            .index
            .backups
            .iter_mut()
            .find(|e| dir.join(&e.backup) == backup)
        {
            e.restored = Some(now.clone());
        }
        if self.index.backups.iter().all(|e| e.restored.is_some()) {
            self.index.undone = Some(now);
        }
        self.write_index(&dir)
    }

    /// Defence in depth: a backup root inside the manifest directory would
    /// make kubelet start every backup as a pod (or would, if kubelet ever
    /// recursed), so refuse rather than trust the configuration.
    fn refuse_root_inside_dir_of(&self, original: &Path, resolved: &Path) -> Result<(), FsError> {
        let root = canonicalize_existing_prefix(&self.root)
            .map_err(|e| FsError::io(Step::Resolve, &self.root, e))?;
        for file in [original, resolved] {
            let Some(parent) = file.parent() else {
                continue;
            };
            let dir =
                fs::canonicalize(parent).map_err(|e| FsError::io(Step::Resolve, parent, e))?;
            if root.starts_with(&dir) {
                return Err(FsError::BackupRootInsideDir {
                    path: original.to_path_buf(),
                    root: self.root.clone(),
                    dir,
                });
            }
        }
        Ok(())
    }

    fn ensure_dir(&mut self) -> Result<PathBuf, FsError> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.root)
            .map_err(|e| FsError::io(Step::CreateDir, &self.root, e))?;
        // Two runs in the same microsecond (or a clock step backwards onto
        // an old run) must not share a directory; the next microsecond keeps
        // the name a valid, sortable timestamp.
        let mut attempts = 0;
        let dir = loop {
            let dir = self.root.join(format_micros(self.micros));
            match DirBuilder::new().mode(DIR_MODE).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 1000 => {
                    attempts += 1;
                    self.micros += 1;
                }
                Err(e) => return Err(FsError::io(Step::CreateDir, &dir, e)),
            }
        };
        // The mode given to mkdir is masked by the umask; set it exactly.
        fs::set_permissions(&dir, Permissions::from_mode(DIR_MODE))
            .map_err(|e| FsError::io(Step::CreateDir, &dir, e))?;
        fsutil::fsync_dir(&self.root)?;
        self.dir = Some(dir.clone());
        Ok(dir)
    }

    fn unused_name(&self, dir: &Path, base: &str) -> String {
        let taken = |name: &str| {
            name == INDEX_FILE
                || self.index.backups.iter().any(|e| e.backup == name)
                || fs::symlink_metadata(dir.join(name)).is_ok()
        };
        if !taken(base) {
            return base.to_string();
        }
        // Finite: at most as many names are taken as entries exist.
        let mut i = 2u64;
        loop {
            let name = format!("{base}-{i}");
            if !taken(&name) {
                return name;
            }
            i += 1;
        }
    }

    fn write_index(&self, dir: &Path) -> Result<(), FsError> {
        write_index(dir, &self.index)
    }
}

fn write_index(dir: &Path, index: &Index) -> Result<(), FsError> {
    let path = dir.join(INDEX_FILE);
    let mut json = serde_json::to_vec_pretty(index).map_err(|e| FsError::Index {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    json.push(b'\n');
    fsutil::write_file_atomically(&path, &json, FILE_MODE)
}

/// A run's index, read only if the run directory and the index pass the
/// [`trust`] checks. `Ok(None)` for a run without an index: a run whose
/// first save failed part way has nothing to restore.
fn read_index(run: &Path) -> Result<Option<Index>, FsError> {
    trust::check_dir(run)?;
    let path = run.join(INDEX_FILE);
    let bytes = match trust::read_file(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid = |reason: String| FsError::Index {
        path: path.clone(),
        reason,
    };
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if !(1..=INDEX_VERSION).contains(&index.version) {
        return Err(invalid(format!("unsupported version {}", index.version)));
    }
    for entry in &index.backups {
        // The name is joined onto the run directory; it must not escape it.
        let mut parts = Path::new(&entry.backup).components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(_)), None)
        ) {
            return Err(invalid(format!(
                "backup name {:?} is not a plain file name",
                entry.backup
            )));
        }
    }
    Ok(Some(index))
}

/// The scope as given (absolute) and canonicalized, so that it matches
/// originals recorded either way.
fn scope_forms(scope: &Path) -> Result<Vec<PathBuf>, FsError> {
    let abs = std::path::absolute(scope).map_err(|e| FsError::io(Step::Resolve, scope, e))?;
    let mut forms = vec![abs.clone()];
    if let Ok(canonical) = fs::canonicalize(&abs) {
        if canonical != abs {
            forms.push(canonical);
        }
    }
    Ok(forms)
}

/// canonicalize() for a path that may not exist yet: resolve the longest
/// existing ancestor and append the rest, so a root that will be created
/// under a symlinked directory is still seen where it really lands.
fn canonicalize_existing_prefix(path: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    let mut existing = abs.as_path();
    let mut missing = Vec::new();
    loop {
        match fs::canonicalize(existing) {
            Ok(mut resolved) => {
                resolved.extend(missing.iter().rev());
                return Ok(resolved);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(name), Some(parent)) = (existing.file_name(), existing.parent()) else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "path has '..' in its missing part",
                    ));
                };
                missing.push(name);
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::undo::{FileUndo, Scope, UndoRequest};
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn change<'a>(before: &'a [u8], after: &'a [u8]) -> Change<'a> {
        Change {
            before,
            after,
            ..Change::default()
        }
    }

    fn undo_in(store: &BackupStore, dir: &Path) -> Option<undo::Undone> {
        store
            .undo(&UndoRequest {
                run: None,
                scope: Scope::Confined(dir.to_path_buf()),
                force: false,
            })
            .unwrap()
    }

    /// A manifest directory and a backup root beside it, as on a node.
    fn layout() -> (tempfile::TempDir, PathBuf, BackupStore) {
        let tmp = tempfile::tempdir().unwrap();
        let manifests = tmp.path().join("manifests");
        fs::create_dir(&manifests).unwrap();
        let store = BackupStore::new(tmp.path().join("var/lib/staticpin/backups"));
        (tmp, manifests, store)
    }

    #[test]
    fn save_index_and_undo_round_trip() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("kube-apiserver.yaml");
        let before = b"image: k8s/kube-apiserver:v1.31.0\n";
        let after = b"image: k8s/kube-apiserver:v1.31.0@sha256:abc\n";
        fs::write(&manifest, before).unwrap();
        fs::set_permissions(&manifest, Permissions::from_mode(0o640)).unwrap();

        let mut run = store.begin_run_at(at(1_795_807_800, 123_456));
        assert!(run.dir().is_none());
        assert!(!store.root().exists(), "created lazily");

        let c = Change {
            images: vec![ImageChange {
                from: "k8s/kube-apiserver:v1.31.0".into(),
                to: "k8s/kube-apiserver:v1.31.0@sha256:abc".into(),
            }],
            ..change(before, after)
        };
        let backup = run.save(&manifest, &c).unwrap();
        let run_dir = store.root().join("20261127T193000.123456Z");
        assert_eq!(run.dir(), Some(run_dir.as_path()));
        assert_eq!(backup, run_dir.join("kube-apiserver.yaml"));
        assert_eq!(fs::read(&backup).unwrap(), before);
        assert_eq!(mode(&backup), 0o600);
        assert_eq!(mode(&run_dir), 0o700);

        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(run_dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["version"], 2);
        let e = &index["backups"][0];
        assert_eq!(e["backup"], "kube-apiserver.yaml");
        assert_eq!(e["original"], manifest.to_str().unwrap());
        assert_eq!(e["before_sha256"], sha256_hex(before));
        assert_eq!(e["after_sha256"], sha256_hex(after));
        assert_eq!(
            e["images"][0]["to"],
            "k8s/kube-apiserver:v1.31.0@sha256:abc"
        );
        assert_eq!(mode(&run_dir.join("index.json")), 0o600);

        let runs = store.list().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].files[0].original, manifest);
        assert!(!runs[0].undone);

        fs::write(&manifest, after).unwrap();
        let undone = undo_in(&store, &manifests).unwrap();
        assert_eq!(undone.run, "20261127T193000.123456Z");
        assert!(matches!(
            undone.files[0].1,
            FileUndo::Restored { forced: false, .. }
        ));
        assert_eq!(fs::read(&manifest).unwrap(), before);
        assert_eq!(mode(&manifest), 0o640);
        assert!(
            undo_in(&store, &manifests).is_none(),
            "nothing left to undo"
        );
        assert!(store.list().unwrap()[0].undone);
        let names: Vec<_> = fs::read_dir(&manifests)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["kube-apiserver.yaml"]);
    }

    #[test]
    fn a_later_change_is_refused_unless_forced() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("etcd.yaml");
        store
            .begin_run_at(at(1000, 0))
            .save(&manifest, &change(b"v1", b"v1-pinned"))
            .unwrap();
        fs::write(&manifest, b"v2-upgraded").unwrap();
        let undone = undo_in(&store, &manifests).unwrap();
        match &undone.files[0].1 {
            FileUndo::Refused(why) => assert!(why.contains("changed since run"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(&manifest).unwrap(), b"v2-upgraded");
        let forced = store
            .undo(&UndoRequest {
                run: None,
                scope: Scope::Confined(manifests.clone()),
                force: true,
            })
            .unwrap()
            .unwrap();
        assert!(matches!(
            forced.files[0].1,
            FileUndo::Restored { forced: true, .. }
        ));
        assert_eq!(fs::read(&manifest).unwrap(), b"v1");
    }

    #[test]
    fn same_file_name_from_two_directories() {
        let (tmp, manifests, store) = layout();
        let other = tmp.path().join("other-manifests");
        fs::create_dir(&other).unwrap();
        let a = manifests.join("etcd.yaml");
        let b = other.join("etcd.yaml");
        fs::write(&a, b"a2").unwrap();
        fs::write(&b, b"b2").unwrap();

        let mut run = store.begin_run();
        let backup_a = run.save(&a, &change(b"a", b"a2")).unwrap();
        let backup_b = run.save(&b, &change(b"b", b"b2")).unwrap();
        assert_eq!(backup_a.file_name().unwrap(), "etcd.yaml");
        assert_eq!(backup_b.file_name().unwrap(), "etcd.yaml-2");
        assert_eq!(fs::read(&backup_a).unwrap(), b"a");
        assert_eq!(fs::read(&backup_b).unwrap(), b"b");

        let only_b = store
            .undo(&UndoRequest {
                run: None,
                scope: Scope::Only(b.clone()),
                force: false,
            })
            .unwrap()
            .unwrap();
        assert_eq!(only_b.files.len(), 1);
        assert_eq!(fs::read(&b).unwrap(), b"b");
        assert_eq!(fs::read(&a).unwrap(), b"a2");
        // Confined to the manifest dir: the other directory's file is done,
        // this one is restored.
        let rest = undo_in(&store, &manifests).unwrap();
        assert_eq!(rest.files.len(), 1);
        assert_eq!(fs::read(&a).unwrap(), b"a");
    }

    #[test]
    fn a_manifest_named_index_json_does_not_clobber_the_index() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("index.json");
        let mut run = store.begin_run();
        let backup = run.save(&manifest, &change(b"{}", b"{ }")).unwrap();
        assert_eq!(backup.file_name().unwrap(), "index.json-2");
        assert_eq!(store.list().unwrap()[0].files[0].backup, backup);
    }

    #[test]
    fn a_dot_dot_path_is_not_inside_the_manifest_directory() {
        let (tmp, manifests, store) = layout();
        fs::create_dir(tmp.path().join("elsewhere")).unwrap();
        let outside = tmp.path().join("elsewhere/outside.yaml");
        fs::write(&outside, b"after").unwrap();
        let sneaky = manifests.join("../elsewhere/outside.yaml");
        store
            .begin_run()
            .save(&sneaky, &change(b"before", b"after"))
            .unwrap();
        let undone = undo_in(&store, &manifests).unwrap();
        match &undone.files[0].1 {
            FileUndo::Refused(why) => {
                assert!(why.contains("outside the manifest directory"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(&outside).unwrap(), b"after");
    }

    #[test]
    fn withdrawn_saves_leave_no_trace() {
        let (_tmp, manifests, store) = layout();
        let mut run = store.begin_run();
        let one = run
            .save(&manifests.join("a.yaml"), &change(b"a", b"A"))
            .unwrap();
        let two = run
            .save(&manifests.join("b.yaml"), &change(b"b", b"B"))
            .unwrap();
        run.withdraw(&one).unwrap();
        assert!(!one.exists());
        assert_eq!(store.list().unwrap()[0].files.len(), 1);
        run.withdraw(&two).unwrap();
        assert!(
            store.list().unwrap().is_empty(),
            "a run that wrote nothing is gone"
        );
        assert_eq!(fs::read_dir(store.root()).unwrap().count(), 0);
    }

    #[test]
    fn the_gate_restores_only_what_it_wrote() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("kube-apiserver.yaml");
        let mut run = store.begin_run();
        let backup = run.save(&manifest, &change(b"old", b"new")).unwrap();
        fs::write(&manifest, b"fixed by hand").unwrap();
        let err = run.restore(&backup, b"new").unwrap_err();
        assert!(matches!(err, FsError::Changed { .. }), "{err}");
        assert_eq!(fs::read(&manifest).unwrap(), b"fixed by hand");

        fs::write(&manifest, b"new").unwrap();
        run.restore(&backup, b"new").unwrap();
        assert_eq!(fs::read(&manifest).unwrap(), b"old");
        assert!(undo_in(&store, &manifests).is_none(), "already undone");
    }

    #[test]
    fn runs_in_the_same_microsecond_get_distinct_directories() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("etcd.yaml");
        let one = store
            .begin_run_at(at(1000, 0))
            .save(&manifest, &change(b"1", b"x"))
            .unwrap();
        let two = store
            .begin_run_at(at(1000, 0))
            .save(&manifest, &change(b"2", b"x"))
            .unwrap();
        assert_eq!(
            one.parent().unwrap().file_name().unwrap(),
            "19700101T001640.000000Z"
        );
        assert_eq!(
            two.parent().unwrap().file_name().unwrap(),
            "19700101T001640.000001Z"
        );
    }

    #[test]
    fn prune_keeps_the_newest_runs_and_nothing_else() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("etcd.yaml");
        let mut dirs = Vec::new();
        for i in 0..5 {
            let mut run = store.begin_run_at(at(1_700_000_000 + i * 60, 0));
            run.save(&manifest, &change(format!("v{i}").as_bytes(), b"x"))
                .unwrap();
            dirs.push(run.dir().unwrap().to_path_buf());
        }
        let foreign_dir = store.root().join("keep-me");
        let foreign_file = store.root().join("20000101T000000.000000Z");
        let future = store.root().join("29991231T000000.000000Z");
        fs::create_dir(&foreign_dir).unwrap();
        fs::create_dir(&future).unwrap();
        fs::write(&foreign_file, b"not a run").unwrap();

        assert_eq!(store.prune(2).unwrap(), dirs[..3]);
        for d in &dirs[..3] {
            assert!(!d.exists());
        }
        for d in &dirs[3..] {
            assert!(d.exists());
        }
        assert!(foreign_dir.exists() && foreign_file.exists() && future.exists());
        assert_eq!(store.prune(2).unwrap(), Vec::<PathBuf>::new());
        assert_eq!(
            BackupStore::new(store.root().join("absent"))
                .prune(DEFAULT_KEEP)
                .unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn refuses_a_backup_root_inside_the_manifest_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let manifests = tmp.path().join("manifests");
        fs::create_dir(&manifests).unwrap();
        let manifest = manifests.join("etcd.yaml");
        fs::write(&manifest, b"x").unwrap();
        // Reached through a symlink, so only canonical paths reveal it.
        let alias = tmp.path().join("alias");
        symlink(&manifests, &alias).unwrap();

        for root in [
            manifests.clone(),
            manifests.join("backups"),
            alias.join("nested/backups"),
        ] {
            let store = BackupStore::new(&root);
            let err = store
                .begin_run()
                .save(&manifest, &change(b"x", b"y"))
                .unwrap_err();
            assert!(matches!(err, FsError::BackupRootInsideDir { .. }), "{err}");
            assert!(
                err.to_string().contains(&manifest.display().to_string()),
                "{err}"
            );
        }
        let names: Vec<_> = fs::read_dir(&manifests)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["etcd.yaml"],
            "nothing created in the manifest directory"
        );
    }

    #[test]
    fn refuses_when_the_symlink_target_directory_holds_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let manifests = tmp.path().join("manifests");
        let real = tmp.path().join("real");
        fs::create_dir(&manifests).unwrap();
        fs::create_dir(&real).unwrap();
        fs::write(real.join("etcd.yaml"), b"x").unwrap();
        let link = manifests.join("etcd.yaml");
        symlink(real.join("etcd.yaml"), &link).unwrap();

        let store = BackupStore::new(real.join("backups"));
        let err = store
            .begin_run()
            .save(&link, &change(b"x", b"y"))
            .unwrap_err();
        assert!(matches!(err, FsError::BackupRootInsideDir { .. }), "{err}");
    }

    #[test]
    fn symlinked_manifest_is_indexed_as_given_and_restored_through_the_link() {
        let (tmp, manifests, store) = layout();
        let real_dir = tmp.path().join("real");
        fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("etcd.yaml");
        fs::write(&real, b"before").unwrap();
        let link = manifests.join("etcd.yaml");
        symlink(&real, &link).unwrap();

        let mut run = store.begin_run();
        run.save(&link, &change(b"before", b"after")).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(run.dir().unwrap().join("index.json")).unwrap())
                .unwrap();
        assert_eq!(index["backups"][0]["original"], link.to_str().unwrap());
        assert_eq!(
            index["backups"][0]["resolved"],
            fs::canonicalize(&real).unwrap().to_str().unwrap()
        );

        fs::write(&real, b"after").unwrap();
        let undone = store
            .undo(&UndoRequest {
                run: None,
                scope: Scope::Only(real_dir.clone()),
                force: false,
            })
            .unwrap()
            .unwrap();
        assert!(matches!(undone.files[0].1, FileUndo::Restored { .. }));
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"before");
    }

    /// Runs recorded before indexes noted what was written can only be
    /// undone by force: nothing shows the file still holds the run's bytes.
    #[test]
    fn a_version_1_run_needs_force() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("etcd.yaml");
        fs::write(&manifest, b"pinned").unwrap();
        let run = store.root().join("20200101T000000.000000Z");
        fs::create_dir_all(&run).unwrap();
        fs::set_permissions(store.root(), Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&run, Permissions::from_mode(0o700)).unwrap();
        let index = format!(
            r#"{{"version":1,"backups":[{{"backup":"etcd.yaml","original":{0:?},"resolved":{0:?}}}]}}"#,
            manifest.display().to_string()
        );
        for (name, bytes) in [("index.json", index.as_bytes()), ("etcd.yaml", b"original")] {
            fs::write(run.join(name), bytes).unwrap();
            fs::set_permissions(run.join(name), Permissions::from_mode(0o600)).unwrap();
        }
        let refused = undo_in(&store, &manifests).unwrap();
        match &refused.files[0].1 {
            FileUndo::Refused(why) => assert!(why.contains("older staticpin"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(&manifest).unwrap(), b"pinned");
        let forced = store
            .undo(&UndoRequest {
                run: Some("20200101T000000.000000Z".into()),
                scope: Scope::Confined(manifests.clone()),
                force: true,
            })
            .unwrap()
            .unwrap();
        assert!(matches!(
            forced.files[0].1,
            FileUndo::Restored { forced: true, .. }
        ));
        assert_eq!(fs::read(&manifest).unwrap(), b"original");
    }

    #[test]
    fn a_corrupt_index_is_an_error_naming_it() {
        let (_tmp, manifests, store) = layout();
        let mut run = store.begin_run();
        run.save(&manifests.join("etcd.yaml"), &change(b"x", b"y"))
            .unwrap();
        let index = run.dir().unwrap().join("index.json");
        fs::write(&index, br#"{"version":1,"backups":[{"backup":"../../etc/passwd","original":"/x","resolved":"/x"}]}"#).unwrap();
        let err = store.list().unwrap_err();
        assert!(
            err.to_string().contains(&index.display().to_string()),
            "{err}"
        );
    }
}
