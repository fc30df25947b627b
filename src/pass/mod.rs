//! The pass: one pinning run over a set of manifests, as `staticpin pin`
//! (and later a watch daemon) runs it.
//!
//! - [`plan`]: pure planning per file: bytes read + resolver answers +
//!   options → new text and what changed, or a typed error.
//! - [`commit`]: backup, then a compare-and-swap write.
//! - [`gate`]: the health gate, rolling back through the backup store.
//! - [`report`]: typed per-file outcomes, text and JSON.
//! - [`lock`]: one writing staticpin at a time.
//! - [`drift`]: whether pinned tags moved (`status`, a daemon's resync).
//! - [`metrics`]: the Prometheus text file written after a pass.
//!
//! [`run_once`] ties them together and owns the run's side effects: the
//! lock, stale temp files, the backup run and pruning. A failure in one file
//! never stops the others, and the report says exactly what happened to
//! each so the exit code can be trusted by scripts.

pub mod commit;
pub mod drift;
pub mod gate;
pub mod lock;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod stop;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use gate::HealthGate;
pub use lock::{LockError, LockSettings, RunLock};
pub use report::{FileError, FileReport, GateRollback, ImageReport, Mode, Outcome, Report};
pub use stop::Stop;

use crate::apiserver;
use crate::backup::{BackupStore, DEFAULT_KEEP};
use crate::fsutil;
use crate::manifest::scan::{scan, Entry};
use crate::policy::Policy;
use crate::reference::ImageRef;
use crate::registry::{resolve_all, Resolver};
use plan::{LoadError, Loaded};

/// How a pass runs: what it may do, how it pins, and the safety nets around
/// writing.
#[derive(Clone, Debug)]
pub struct Options {
    /// Write, show the diff, or only check.
    pub mode: Mode,
    /// Write `name@digest` instead of `name:tag@digest`.
    pub digest_only: bool,
    /// Registry requests in flight at once.
    pub concurrency: usize,
    /// Wire this admission setup into kube-apiserver.yaml in the same pass.
    pub admission: Option<apiserver::Request>,
    /// After changing kube-apiserver.yaml, wait for it to be healthy or roll back.
    pub health: Option<HealthGate>,
    /// Taken for the whole of an [`Mode::Apply`] run.
    pub lock: LockSettings,
    /// Backup runs kept after an [`Mode::Apply`] run.
    pub keep_backups: usize,
    /// Trusted registries: images outside them are reported (`warn`) or
    /// their whole file is refused (`deny`). Judged in [`plan`].
    pub policy: Policy,
    /// Re-pin `name:tag@digest` images whose tag now names another digest
    /// (asked with a verified GET, like every pin). Off: pins never move.
    pub update: bool,
    /// The caller wants the pass over (the daemon's SIGTERM): nothing is
    /// written after it is set, and a change still waiting for the health
    /// gate is rolled back.
    pub stop: Stop,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Apply,
            digest_only: false,
            concurrency: 8,
            admission: None,
            health: None,
            lock: LockSettings::default(),
            keep_backups: DEFAULT_KEEP,
            policy: Policy::default(),
            update: false,
            stop: Stop::default(),
        }
    }
}

/// The manifests under `paths`, read and planned from.
struct Scanned {
    report: Report,
    /// Index into `report.files`, and the file as read.
    loaded: Vec<(usize, Loaded)>,
}

fn scan_all(paths: &[PathBuf], mode: Mode) -> Scanned {
    let mut report = Report::new(mode);
    let mut loaded = Vec::new();
    for path in paths {
        let entries = match scan(path) {
            Ok(e) => e,
            Err(e) => {
                report
                    .files
                    .push(FileReport::new(path, Outcome::Failed(FileError::Scan(e))));
                continue;
            }
        };
        if entries.is_empty() {
            report.empty_dirs.push(path.clone());
        }
        for entry in entries {
            match entry {
                Entry::Skipped(p, skip) => report
                    .files
                    .push(FileReport::new(&p, Outcome::Skipped(skip))),
                Entry::File(p) => match plan::load(&p) {
                    Ok(l) => {
                        report.files.push(FileReport::new(&p, Outcome::Unchanged));
                        loaded.push((report.files.len() - 1, l));
                    }
                    Err(LoadError::Skipped(s)) => {
                        report.files.push(FileReport::new(&p, Outcome::Skipped(s)))
                    }
                    Err(LoadError::Failed(e)) => {
                        report.files.push(FileReport::new(&p, Outcome::Failed(e)))
                    }
                },
            }
        }
    }
    Scanned { report, loaded }
}

/// `--check` (and `doctor`): which images lack a digest. Reads only; no
/// resolver, no network, no lock.
pub fn check(paths: &[PathBuf]) -> Report {
    check_with(paths, &Policy::default())
}

/// [`check`], also flagging images outside `policy`'s trusted registries,
/// pinned or not, whatever `policy.untrusted` says.
pub fn check_with(paths: &[PathBuf], policy: &Policy) -> Report {
    let Scanned { mut report, loaded } = scan_all(paths, Mode::Check);
    for (slot, l) in loaded {
        let images = plan::flagged(&l, policy);
        let f = &mut report.files[slot];
        let unpinned = images.iter().filter(|i| !i.had_digest()).count();
        if unpinned > 0 {
            f.outcome = Outcome::Unpinned(unpinned);
        }
        f.images = images;
    }
    report
}

/// One pass over `paths`: the entry point for the CLI and a watch loop.
/// `backups` is required in [`Mode::Apply`]; it is the only mode that
/// locks, writes, and prunes old backup runs.
pub async fn run_once<R: Resolver>(
    paths: &[PathBuf],
    options: &Options,
    resolver: &R,
    backups: Option<&BackupStore>,
) -> Result<Report, LockError> {
    if options.mode == Mode::Check {
        return Ok(check(paths));
    }
    // Held until the report is done: from the first read to the last write.
    let _lock = match options.mode {
        Mode::Apply => Some(RunLock::acquire(&options.lock).await?),
        _ => None,
    };
    let Scanned { mut report, loaded } = scan_all(paths, options.mode);
    if options.mode == Mode::Apply {
        remove_stale_temps(&loaded);
    }
    if options.admission.is_some() && !loaded.iter().any(|(_, l)| l.is_apiserver) {
        let looked: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        report.errors.push(format!(
            "no kube-apiserver manifest found in {}; admission wiring needs one",
            looked.join(", ")
        ));
    }

    // A file the policy refuses is left as it is, so none of its images is
    // asked for: no request goes to a registry the node does not trust.
    let refused: Vec<bool> = loaded
        .iter()
        .map(|(_, l)| !plan::refusals(l, &options.policy).is_empty())
        .collect();
    // One resolution round for the whole pass, so each image is asked once.
    let wanted: Vec<ImageRef> = loaded
        .iter()
        .zip(&refused)
        .filter(|(_, refused)| !**refused)
        .flat_map(|((_, l), _)| l.sites.iter().map(|(_, r)| plan::to_ask(r, options.update)))
        .collect();
    let answers = tokio::select! {
        a = resolve_all(resolver, &wanted, options.concurrency) => a,
        () = options.stop.wait() => {
            report.errors.push("stopped before writing anything".into());
            return Ok(report);
        }
    };
    let mut answers = answers.into_iter();

    let mut run = match (options.mode, backups) {
        (Mode::Apply, Some(store)) => Some(store.begin_run()),
        _ => None,
    };
    for ((slot, l), refused) in loaded.into_iter().zip(refused) {
        let file_answers: Vec<_> = if refused {
            Vec::new()
        } else {
            answers.by_ref().take(l.sites.len()).collect()
        };
        report.files[slot] = finish(&l, file_answers, options, run.as_mut());
    }
    if let (Mode::Apply, Some(gate)) = (options.mode, &options.health) {
        gate::run(&mut report.files, gate, &options.stop, run.as_mut()).await;
    }
    if let (Mode::Apply, Some(store)) = (options.mode, backups) {
        if let Err(e) = store.prune(options.keep_backups) {
            tracing::warn!("could not prune old backups: {e}");
        }
    }
    Ok(report)
}

/// A process killed mid-write leaves its dot-prefixed temp file behind;
/// kubelet ignores it, but the next run tidies up. Temps live beside the
/// file that is replaced: the symlink target's directory for a link.
fn remove_stale_temps(loaded: &[(usize, Loaded)]) {
    let dirs: BTreeSet<PathBuf> = loaded
        .iter()
        .filter_map(|(_, l)| {
            let target = std::fs::canonicalize(&l.path).unwrap_or_else(|_| l.path.clone());
            target.parent().map(Path::to_path_buf)
        })
        .collect();
    for dir in &dirs {
        for stale in fsutil::remove_stale_temps(dir) {
            tracing::warn!(
                "removed a temp file left by an interrupted run: {}",
                stale.display()
            );
        }
    }
}

fn finish(
    l: &Loaded,
    answers: Vec<Result<crate::registry::Resolution, crate::registry::ResolveError>>,
    options: &Options,
    run: Option<&mut crate::backup::BackupRun>,
) -> FileReport {
    let mut report = FileReport::new(&l.path, Outcome::Unchanged);
    report.is_apiserver = l.is_apiserver;
    let plan = match plan::plan(l, answers, options) {
        Ok(p) => p,
        Err((e, images)) => {
            report.images = images;
            report.outcome = Outcome::Failed(e);
            return report;
        }
    };
    report.images = plan.images.clone();
    report.admission = plan.admission.clone();
    if !plan.changes(&l.text) {
        return report;
    }
    report.apiserver_changed = l.is_apiserver;
    let changed = Outcome::Changed {
        pinned: plan.pinned,
        wired: plan.wired,
    };
    match (options.mode, run) {
        (Mode::Apply, Some(run)) => match commit::commit(l, &plan, run) {
            Ok(c) => {
                report.backup = Some(c.backup);
                report.outcome = if c.unchanged {
                    Outcome::Unchanged
                } else {
                    report.written = Some(plan.new_text.into_bytes());
                    report.wired = plan.wired;
                    changed
                };
            }
            Err(e) => report.outcome = Outcome::Failed(e),
        },
        (Mode::Apply, None) => {
            report.outcome = Outcome::Failed(FileError::Admission(
                "no backup store given; refusing to write without a backup".into(),
            ))
        }
        _ => {
            report.diff = Some(unified_diff(&l.path, &l.text, &plan.new_text));
            report.outcome = changed;
        }
    }
    report
}

/// `--- a/<file>` / `+++ b/<file>` unified diff with three lines of context.
pub fn unified_diff(path: &Path, old: &str, new: &str) -> String {
    let name = path.display().to_string();
    let name = name.trim_start_matches('/');
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}
