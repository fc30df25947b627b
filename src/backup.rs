//! Backups of manifests taken before staticpin changes them, and restores.
//!
//! kubelet runs every non-dot file in its manifest directory, so a `*.bak`
//! beside a manifest would start a second copy of the pod. Backups live under
//! their own root instead (default [`DEFAULT_ROOT`]), and a backup refuses
//! to be written if that root sits inside the manifest's directory.
//!
//! Each run gets one directory named by its UTC start time
//! (`20261127T193000.123456Z`), fixed width so that name order is time order
//! and pruning needs no date library. File names alone are ambiguous (two
//! manifest directories can both hold `etcd.yaml`), so each run directory
//! has an `index.json` recording the original path of every backup in it.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, FsError, Step, WriteOutcome};

pub const DEFAULT_ROOT: &str = crate::config::DEFAULT_BACKUP_DIR;
/// How many run directories [`BackupStore::prune`] callers keep by default.
pub const DEFAULT_KEEP: usize = crate::config::DEFAULT_KEEP_BACKUPS as usize;

const INDEX_FILE: &str = "index.json";
const INDEX_VERSION: u32 = 1;
// Manifests may carry credentials in their args; keep backups root-only.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Contents of a run's `index.json`. Entries are in save order, which is
/// what [`BackupStore::latest_backups`] relies on within a run.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    backups: Vec<IndexEntry>,
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
}

pub struct BackupStore {
    root: PathBuf,
}

impl Default for BackupStore {
    fn default() -> Self {
        BackupStore::new(DEFAULT_ROOT)
    }
}

impl BackupStore {
    pub fn new(root: impl Into<PathBuf>) -> BackupStore {
        BackupStore { root: root.into() }
    }

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
                backups: Vec::new(),
            },
        }
    }

    /// Keeps the newest `keep` run directories and removes the rest,
    /// returning what was removed. Anything in the root whose name is not
    /// one of our timestamps is never touched.
    pub fn prune(&self, keep: usize) -> Result<Vec<PathBuf>, FsError> {
        let runs = self.runs()?;
        let excess = runs.len().saturating_sub(keep);
        let mut removed = Vec::with_capacity(excess);
        for dir in runs.into_iter().take(excess) {
            fs::remove_dir_all(&dir).map_err(|e| FsError::io(Step::Remove, &dir, e))?;
            removed.push(dir);
        }
        if !removed.is_empty() {
            fsutil::fsync_dir(&self.root)?;
        }
        Ok(removed)
    }

    /// For each original path, the newest backup of it: from the newest run
    /// that saved it, and within that run the first save, which holds the
    /// file as it was before the run changed it.
    ///
    /// With `scope`, only originals equal to it or under it (as a
    /// directory) are returned; a scope matches either the path as given at
    /// backup time or its resolved target. Sorted by original path.
    pub fn latest_backups(&self, scope: Option<&Path>) -> Result<Vec<(PathBuf, PathBuf)>, FsError> {
        let scopes = match scope {
            Some(s) => scope_forms(s)?,
            None => Vec::new(),
        };
        let in_scope = |e: &IndexEntry| {
            scope.is_none()
                || scopes
                    .iter()
                    .any(|s| e.original.starts_with(s) || e.resolved.starts_with(s))
        };

        let mut latest: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
        for run in self.runs()?.iter().rev() {
            let Some(index) = read_index(run)? else {
                continue;
            };
            for entry in index.backups.iter().filter(|e| in_scope(e)) {
                latest
                    .entry(entry.original.clone())
                    .or_insert_with(|| run.join(&entry.backup));
            }
        }
        Ok(latest.into_iter().collect())
    }

    /// Writes the bytes of `backup` back to `original` through
    /// [`fsutil::atomic_replace`], so the file keeps its current mode and
    /// owner, a symlink stays a symlink, and identical bytes are not
    /// rewritten.
    pub fn restore(&self, original: &Path, backup: &Path) -> Result<WriteOutcome, FsError> {
        let bytes = fs::read(backup).map_err(|e| FsError::io(Step::Read, backup, e))?;
        fsutil::atomic_replace(original, &bytes)
    }

    /// Run directories, oldest first.
    fn runs(&self) -> Result<Vec<PathBuf>, FsError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FsError::io(Step::ListDir, &self.root, e)),
        };
        let mut runs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FsError::io(Step::ListDir, &self.root, e))?;
            let is_run = entry
                .file_name()
                .to_str()
                .is_some_and(|n| parse_run_name(n).is_some());
            // file_type() does not follow symlinks: a link is never a run.
            if is_run && entry.file_type().is_ok_and(|t| t.is_dir()) {
                runs.push(entry.path());
            }
        }
        runs.sort();
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

    /// Stores `bytes` as the backup of `original` and records it in the
    /// run's index; returns the backup's path. `bytes` are what the caller
    /// read, so the backup matches what it is about to change.
    pub fn save(&mut self, original: &Path, bytes: &[u8]) -> Result<PathBuf, FsError> {
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
        fsutil::write_new_file_atomically(&backup, bytes, FILE_MODE)?;

        self.index.backups.push(IndexEntry {
            backup: name,
            original,
            resolved,
        });
        if let Err(e) = self.write_index(&dir) {
            // The backup file stays, unindexed; the next save picks another
            // name because it checks the disk too.
            self.index.backups.pop();
            return Err(e);
        }
        Ok(backup)
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
        (2u64..)
            .map(|i| format!("{base}-{i}"))
            .find(|name| !taken(name))
            .expect("some suffix is free")
    }

    fn write_index(&self, dir: &Path) -> Result<(), FsError> {
        let path = dir.join(INDEX_FILE);
        let mut json = serde_json::to_vec_pretty(&self.index).map_err(|e| FsError::Index {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        json.push(b'\n');
        fsutil::write_file_atomically(&path, &json, FILE_MODE)
    }
}

/// `Ok(None)` for a run without an index: a run whose first save failed
/// part way has nothing to restore.
fn read_index(run: &Path) -> Result<Option<Index>, FsError> {
    let path = run.join(INDEX_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::io(Step::Read, &path, e)),
    };
    let invalid = |reason: String| FsError::Index {
        path: path.clone(),
        reason,
    };
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if index.version != INDEX_VERSION {
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

fn micros_since_epoch(t: SystemTime) -> u64 {
    // A clock before 1970 is broken; clamping keeps names valid and sorted.
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `YYYYMMDDTHHMMSS.ffffffZ` in UTC.
pub fn format_timestamp(t: SystemTime) -> String {
    format_micros(micros_since_epoch(t))
}

fn format_micros(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{frac:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Microseconds since the epoch for a run directory name, or `None` if the
/// name is not exactly what [`format_micros`] would produce.
fn parse_run_name(name: &str) -> Option<u64> {
    let b = name.as_bytes();
    if b.len() != 23 || b[8] != b'T' || b[15] != b'.' || b[22] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u64> {
        let digits = &b[from..to];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let (y, mo, d) = (num(0, 4)?, num(4, 6)?, num(6, 8)?);
    let (h, mi, s, us) = (num(9, 11)?, num(11, 13)?, num(13, 15)?, num(16, 22)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = u64::try_from(days_from_civil(y as i64, mo as u32, d as u32)).ok()?;
    let micros = ((days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + us;
    // Round-tripping rejects dates like Feb 30 that the ranges let through.
    (format_micros(micros) == name).then_some(micros)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar. Howard Hinnant's `civil_from_days`: eras of 400 years, with
/// years starting in March so the leap day falls at the end.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};
    use std::time::Duration;

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
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
    fn timestamps_for_known_instants() {
        let cases = [
            (0, 0, "19700101T000000.000000Z"),
            (951_782_400, 0, "20000229T000000.000000Z"),
            (951_868_800, 0, "20000301T000000.000000Z"),
            (1_709_251_199, 999_999, "20240229T235959.999999Z"),
            (1_795_807_800, 123_456, "20261127T193000.123456Z"),
            (4_107_542_400, 0, "21000301T000000.000000Z"),
            (253_402_300_799, 1, "99991231T235959.000001Z"),
        ];
        for (secs, micros, expected) in cases {
            assert_eq!(format_timestamp(at(secs, micros)), expected);
            assert_eq!(parse_run_name(expected), Some(secs * 1_000_000 + micros));
        }
        assert_eq!(
            format_timestamp(UNIX_EPOCH - Duration::from_secs(1)),
            "19700101T000000.000000Z"
        );
    }

    #[test]
    fn civil_conversion_round_trips_day_by_day() {
        let mut prev = civil_from_days(-1);
        assert_eq!(prev, (1969, 12, 31));
        for days in 0..=2_932_896 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let next_day = (y, m, d) > prev && (d == prev.2 + 1 || d == 1);
            assert!(next_day, "{prev:?} -> {:?}", (y, m, d));
            prev = (y, m, d);
        }
        assert_eq!(prev, (9999, 12, 31));
    }

    #[test]
    fn only_our_timestamps_parse_as_run_names() {
        for bad in [
            "latest",
            "20261127T193000.123456Z-2",
            "20261127T193000.123456",
            "20261327T193000.123456Z",
            "20260230T000000.000000Z",
            "20261127T246000.000000Z",
            "2026112 T193000.123456Z",
            "+0261127T193000.123456Z",
        ] {
            assert_eq!(parse_run_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn save_index_latest_and_restore_round_trip() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("kube-apiserver.yaml");
        fs::write(&manifest, b"image: k8s/kube-apiserver:v1.31.0\n").unwrap();
        fs::set_permissions(&manifest, Permissions::from_mode(0o640)).unwrap();

        let mut run = store.begin_run_at(at(1_795_807_800, 123_456));
        assert!(run.dir().is_none());
        assert!(!store.root().exists(), "created lazily");

        let bytes = fs::read(&manifest).unwrap();
        let backup = run.save(&manifest, &bytes).unwrap();
        let run_dir = store.root().join("20261127T193000.123456Z");
        assert_eq!(run.dir(), Some(run_dir.as_path()));
        assert_eq!(backup, run_dir.join("kube-apiserver.yaml"));
        assert_eq!(fs::read(&backup).unwrap(), bytes);
        assert_eq!(mode(&backup), 0o600);
        assert_eq!(mode(&run_dir), 0o700);

        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(run_dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["version"], 1);
        assert_eq!(index["backups"][0]["backup"], "kube-apiserver.yaml");
        assert_eq!(index["backups"][0]["original"], manifest.to_str().unwrap());
        assert_eq!(mode(&run_dir.join("index.json")), 0o600);

        assert_eq!(
            store.latest_backups(None).unwrap(),
            [(manifest.clone(), backup.clone())]
        );

        fs::write(&manifest, b"image: k8s/kube-apiserver@sha256:abc\n").unwrap();
        assert_eq!(
            store.restore(&manifest, &backup).unwrap(),
            WriteOutcome::Written
        );
        assert_eq!(fs::read(&manifest).unwrap(), bytes);
        assert_eq!(mode(&manifest), 0o640);
        assert_eq!(
            store.restore(&manifest, &backup).unwrap(),
            WriteOutcome::Unchanged
        );
        let names: Vec<_> = fs::read_dir(&manifests)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["kube-apiserver.yaml"]);
    }

    #[test]
    fn same_file_name_from_two_directories() {
        let (tmp, manifests, store) = layout();
        let other = tmp.path().join("other-manifests");
        fs::create_dir(&other).unwrap();
        let a = manifests.join("etcd.yaml");
        let b = other.join("etcd.yaml");
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();

        let mut run = store.begin_run();
        let backup_a = run.save(&a, b"a").unwrap();
        let backup_b = run.save(&b, b"b").unwrap();
        assert_eq!(backup_a.file_name().unwrap(), "etcd.yaml");
        assert_eq!(backup_b.file_name().unwrap(), "etcd.yaml-2");
        assert_eq!(fs::read(&backup_a).unwrap(), b"a");
        assert_eq!(fs::read(&backup_b).unwrap(), b"b");

        let mut all = vec![(a.clone(), backup_a.clone()), (b.clone(), backup_b.clone())];
        all.sort();
        assert_eq!(store.latest_backups(None).unwrap(), all);
        assert_eq!(
            store.latest_backups(Some(&manifests)).unwrap(),
            [(a, backup_a)]
        );
        assert_eq!(store.latest_backups(Some(&b)).unwrap(), [(b, backup_b)]);
    }

    #[test]
    fn a_manifest_named_index_json_does_not_clobber_the_index() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("index.json");
        fs::write(&manifest, b"{\"kind\":\"Pod\"}").unwrap();
        let mut run = store.begin_run();
        let backup = run.save(&manifest, b"{\"kind\":\"Pod\"}").unwrap();
        assert_eq!(backup.file_name().unwrap(), "index.json-2");
        assert_eq!(store.latest_backups(None).unwrap(), [(manifest, backup)]);
    }

    #[test]
    fn newest_run_wins_and_first_save_within_a_run() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("etcd.yaml");
        fs::write(&manifest, b"v3").unwrap();

        store
            .begin_run_at(at(1000, 0))
            .save(&manifest, b"v1")
            .unwrap();
        let mut run = store.begin_run_at(at(2000, 0));
        let first = run.save(&manifest, b"v2").unwrap();
        run.save(&manifest, b"v2.5").unwrap();

        let latest = store.latest_backups(None).unwrap();
        assert_eq!(latest, [(manifest.clone(), first.clone())]);
        assert_eq!(fs::read(&first).unwrap(), b"v2");
    }

    #[test]
    fn runs_in_the_same_microsecond_get_distinct_directories() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("etcd.yaml");
        fs::write(&manifest, b"x").unwrap();
        let one = store
            .begin_run_at(at(1000, 0))
            .save(&manifest, b"1")
            .unwrap();
        let two = store
            .begin_run_at(at(1000, 0))
            .save(&manifest, b"2")
            .unwrap();
        assert_eq!(
            one.parent().unwrap().file_name().unwrap(),
            "19700101T001640.000000Z"
        );
        assert_eq!(
            two.parent().unwrap().file_name().unwrap(),
            "19700101T001640.000001Z"
        );
        assert_eq!(store.latest_backups(None).unwrap(), [(manifest, two)]);
    }

    #[test]
    fn prune_keeps_the_newest_runs_and_nothing_else() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("etcd.yaml");
        fs::write(&manifest, b"x").unwrap();
        let mut dirs = Vec::new();
        for i in 0..5 {
            let mut run = store.begin_run_at(at(1_700_000_000 + i * 60, 0));
            run.save(&manifest, format!("v{i}").as_bytes()).unwrap();
            dirs.push(run.dir().unwrap().to_path_buf());
        }
        let foreign_dir = store.root().join("keep-me");
        let foreign_file = store.root().join("20000101T000000.000000Z");
        fs::create_dir(&foreign_dir).unwrap();
        fs::write(&foreign_file, b"not a run").unwrap();

        assert_eq!(store.prune(2).unwrap(), dirs[..3]);
        for d in &dirs[..3] {
            assert!(!d.exists());
        }
        for d in &dirs[3..] {
            assert!(d.exists());
        }
        assert!(foreign_dir.exists() && foreign_file.exists());
        assert_eq!(store.prune(2).unwrap(), Vec::<PathBuf>::new());
        let latest = store.latest_backups(None).unwrap();
        assert_eq!(fs::read(&latest[0].1).unwrap(), b"v4");

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
            let err = store.begin_run().save(&manifest, b"x").unwrap_err();
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
        let err = store.begin_run().save(&link, b"x").unwrap_err();
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
        let backup = run.save(&link, b"before").unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(run.dir().unwrap().join("index.json")).unwrap())
                .unwrap();
        assert_eq!(index["backups"][0]["original"], link.to_str().unwrap());
        assert_eq!(
            index["backups"][0]["resolved"],
            fs::canonicalize(&real).unwrap().to_str().unwrap()
        );
        assert_eq!(
            store.latest_backups(Some(&real_dir)).unwrap(),
            [(link.clone(), backup.clone())]
        );

        fs::write(&real, b"after").unwrap();
        assert_eq!(
            store.restore(&link, &backup).unwrap(),
            WriteOutcome::Written
        );
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"before");
    }

    #[test]
    fn a_corrupt_index_is_an_error_naming_it() {
        let (_tmp, manifests, store) = layout();
        let manifest = manifests.join("etcd.yaml");
        fs::write(&manifest, b"x").unwrap();
        let mut run = store.begin_run();
        run.save(&manifest, b"x").unwrap();
        let index = run.dir().unwrap().join("index.json");
        fs::write(&index, br#"{"version":1,"backups":[{"backup":"../../etc/passwd","original":"/x","resolved":"/x"}]}"#).unwrap();
        let err = store.latest_backups(None).unwrap_err();
        assert!(
            err.to_string().contains(&index.display().to_string()),
            "{err}"
        );
    }
}
