//! One pinning pass over a set of manifests: the core of `staticpin pin`.
//!
//! The pass is planned per file and committed per file. A file is written
//! only when every one of its images resolved and the rewrite verified; a
//! failure in one file never stops the others, and the report says exactly
//! what happened to each so the exit code can be trusted by scripts.

use std::path::{Path, PathBuf};

use crate::admission::preflight;
use crate::apiserver;
use crate::backup::BackupStore;
use crate::fsutil::{self, WriteOutcome};
use crate::health;
use crate::manifest::parse::{inspect, ImageSite};
use crate::manifest::scan::{scan, Entry};
use crate::manifest::splice::{apply, verify, Edit};
use crate::manifest::{Skip, MAX_MANIFEST_BYTES};
use crate::reference::ImageRef;
use crate::registry::{resolve_all, ResolveError, Resolver};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Resolve and write.
    Apply,
    /// Resolve and show the diff; write nothing.
    DryRun,
    /// No network: only report images that are not digest-pinned.
    Check,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    /// Write `name@digest` instead of `name:tag@digest`.
    pub digest_only: bool,
    pub concurrency: usize,
    /// Wire this admission setup into kube-apiserver.yaml in the same pass.
    pub admission: Option<apiserver::Request>,
    /// After changing kube-apiserver.yaml, wait for it to be healthy or roll back.
    pub health: Option<HealthGate>,
}

/// How to decide that a changed kube-apiserver came back.
#[derive(Clone, Debug)]
pub struct HealthGate {
    /// Default: the manifest's livenessProbe URL.
    pub url: Option<String>,
    pub ca: Option<PathBuf>,
    pub timeout: std::time::Duration,
    /// Time to let kubelet notice the change (its relist period is 20 s)
    /// before a healthy answer counts: until then the old apiserver answers.
    pub settle: std::time::Duration,
}

/// One image as found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageReport {
    pub line: usize,
    pub image: String,
    /// The new value, when this pass pins it.
    pub pinned: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Images were pinned (or, in dry-run, would be).
    Pinned(usize),
    /// Nothing to change: every image already carries a digest.
    Unchanged,
    /// `--check`: these many images are not pinned.
    Unpinned(usize),
    Skipped(Skip),
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct FileReport {
    pub path: PathBuf,
    pub outcome: Outcome,
    pub images: Vec<ImageReport>,
    /// Unified diff of the change (dry-run only).
    pub diff: Option<String>,
    pub backup: Option<PathBuf>,
    /// Admission wiring done (or planned) in this file, and preflight warnings.
    pub admission: Vec<String>,
    /// kube-apiserver.yaml was rewritten, so the apiserver restarts.
    pub apiserver_changed: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub files: Vec<FileReport>,
}

impl Report {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.files.iter().filter(|r| f(&r.outcome)).count()
    }

    pub fn has_errors(&self) -> bool {
        self.files.iter().any(|r| match &r.outcome {
            Outcome::Failed(_) => true,
            Outcome::Skipped(s) => s.is_error,
            _ => false,
        })
    }

    pub fn unpinned(&self) -> usize {
        self.files
            .iter()
            .map(|r| match r.outcome {
                Outcome::Unpinned(n) => n,
                _ => 0,
            })
            .sum()
    }

    /// `4 files: 3 pinned, 1 unchanged, 0 failed` (plus skipped when any).
    pub fn summary(&self, mode: Mode) -> String {
        let n = self.files.len();
        let failed = self.count(|o| matches!(o, Outcome::Failed(_)));
        let skipped = self.count(|o| matches!(o, Outcome::Skipped(_)));
        let unchanged = self.count(|o| matches!(o, Outcome::Unchanged));
        let plural = if n == 1 { "file" } else { "files" };
        let mut s = match mode {
            Mode::Check => format!(
                "{n} {plural}: {} with unpinned images ({} images), {unchanged} pinned",
                self.count(|o| matches!(o, Outcome::Unpinned(_))),
                self.unpinned()
            ),
            Mode::Apply | Mode::DryRun => format!(
                "{n} {plural}: {} {}, {unchanged} unchanged",
                self.count(|o| matches!(o, Outcome::Pinned(k) if *k > 0)),
                if mode == Mode::DryRun {
                    "would be pinned"
                } else {
                    "pinned"
                }
            ),
        };
        // Files whose only change is the admission wiring.
        let wired = self.count(|o| matches!(o, Outcome::Pinned(0)));
        if wired > 0 {
            let verb = if mode == Mode::DryRun {
                "would be wired"
            } else {
                "wired"
            };
            s.push_str(&format!(", {wired} {verb} for admission"));
        }
        if skipped > 0 {
            s.push_str(&format!(", {skipped} skipped"));
        }
        s.push_str(&format!(", {failed} failed"));
        s
    }
}

/// A manifest read and understood, before any resolution.
struct Loaded {
    path: PathBuf,
    text: String,
    sites: Vec<(ImageSite, ImageRef)>,
}

/// Runs one pass over `paths`. `backups` is required in [`Mode::Apply`].
pub async fn run<R: Resolver>(
    paths: &[PathBuf],
    options: &Options,
    resolver: &R,
    backups: Option<&BackupStore>,
) -> Report {
    let mut report = Report::default();
    let mut loaded = Vec::new();
    let mut temp_dirs = std::collections::BTreeSet::new();
    for path in paths {
        let entries = match scan(path) {
            Ok(e) => e,
            Err(e) => {
                report.files.push(file_report(path, Outcome::Failed(e)));
                continue;
            }
        };
        for entry in entries {
            if let (Mode::Apply, Entry::File(p)) = (options.mode, &entry) {
                // Temps live beside the file that is replaced: the symlink
                // target's directory when the manifest is a link.
                let target = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                temp_dirs.extend(target.parent().map(Path::to_path_buf));
            }
            match entry {
                Entry::Skipped(p, skip) => {
                    report.files.push(file_report(&p, Outcome::Skipped(skip)))
                }
                Entry::File(p) => match load(&p) {
                    Ok(l) => {
                        report.files.push(file_report(&p, Outcome::Unchanged));
                        loaded.push((report.files.len() - 1, l));
                    }
                    Err(outcome) => report.files.push(file_report(&p, outcome)),
                },
            }
        }
    }

    // A process killed mid-write leaves its dot-prefixed temp file behind;
    // kubelet ignores it, but the next run tidies up.
    for dir in &temp_dirs {
        for stale in fsutil::remove_stale_temps(dir) {
            tracing::warn!(
                "removed a temp file left by an interrupted run: {}",
                stale.display()
            );
        }
    }

    // One resolution round for the whole pass, so each image is asked once.
    let wanted: Vec<ImageRef> = if options.mode == Mode::Check {
        Vec::new()
    } else {
        loaded
            .iter()
            .flat_map(|(_, l)| l.sites.iter().map(|(_, r)| r.clone()))
            .collect()
    };
    let mut answers = resolve_all(resolver, &wanted, options.concurrency)
        .await
        .into_iter();

    let mut run = backups.map(BackupStore::begin_run);
    for (slot, l) in loaded {
        let file_answers: Vec<_> = if options.mode == Mode::Check {
            Vec::new()
        } else {
            answers.by_ref().take(l.sites.len()).collect()
        };
        report.files[slot] = finish(l, file_answers, options, run.as_mut());
    }
    if let (Mode::Apply, Some(gate)) = (options.mode, &options.health) {
        health_gate(&mut report, gate).await;
    }
    report
}

fn file_report(path: &Path, outcome: Outcome) -> FileReport {
    FileReport {
        path: path.to_path_buf(),
        outcome,
        images: Vec::new(),
        diff: None,
        backup: None,
        admission: Vec::new(),
        apiserver_changed: false,
    }
}

fn load(path: &Path) -> Result<Loaded, Outcome> {
    let meta = std::fs::metadata(path).map_err(|e| Outcome::Failed(format!("cannot stat: {e}")))?;
    if meta.len() >= MAX_MANIFEST_BYTES {
        return Err(Outcome::Skipped(Skip::error(format!(
            "{} bytes is at or over kubelet's 10 MiB manifest limit",
            meta.len()
        ))));
    }
    let bytes = std::fs::read(path).map_err(|e| Outcome::Failed(format!("cannot read: {e}")))?;
    let text =
        String::from_utf8(bytes).map_err(|_| Outcome::Skipped(Skip::error("not UTF-8 text")))?;
    let pod = inspect(&text).map_err(Outcome::Skipped)?;
    for note in &pod.notes {
        tracing::warn!("{}: {note}", path.display());
    }
    let mut sites = Vec::new();
    for site in pod.images {
        let r = ImageRef::parse(&site.value)
            .map_err(|e| Outcome::Failed(format!("line {}: {e}", site.line)))?;
        sites.push((site, r));
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        text,
        sites,
    })
}

fn finish(
    l: Loaded,
    answers: Vec<Result<crate::registry::Resolution, ResolveError>>,
    options: &Options,
    backups: Option<&mut crate::backup::BackupRun>,
) -> FileReport {
    let mut report = file_report(&l.path, Outcome::Unchanged);
    if options.mode == Mode::Check {
        report.images = l
            .sites
            .iter()
            .filter(|(_, r)| r.digest().is_none())
            .map(|(s, r)| ImageReport {
                line: s.line,
                image: r.original().to_string(),
                pinned: None,
                error: None,
            })
            .collect();
        if !report.images.is_empty() {
            report.outcome = Outcome::Unpinned(report.images.len());
        }
        return report;
    }

    let mut edits = Vec::new();
    let mut errors = Vec::new();
    for ((site, image), answer) in l.sites.iter().zip(answers) {
        let mut item = ImageReport {
            line: site.line,
            image: image.original().to_string(),
            pinned: None,
            error: None,
        };
        match answer {
            Ok(_) if image.digest().is_some() => {}
            Ok(res) => {
                let new_value = if options.digest_only {
                    image.pinned_digest_only(&res.digest)
                } else {
                    image.pinned(&res.digest)
                };
                item.pinned = Some(new_value.clone());
                edits.push(Edit {
                    site: site.clone(),
                    new_value,
                });
            }
            Err(e) => {
                item.error = Some(e.to_string());
                errors.push(e.to_string());
            }
        }
        report.images.push(item);
    }
    if !errors.is_empty() {
        report.outcome = Outcome::Failed(errors.join("; "));
        return report;
    }
    let mut new_text = l.text.clone();
    if !edits.is_empty() {
        new_text = apply(&l.text, &edits);
        if let Err(why) = crate::manifest::check_size(new_text.len()) {
            report.outcome =
                Outcome::Failed(format!("refusing to write: the result would be {why}"));
            return report;
        }
        if let Err(why) = verify(&l.text, &new_text, &edits) {
            report.outcome = Outcome::Failed(format!(
                "refusing to write: the rewrite did not verify ({why}); this is a staticpin bug, please report it"
            ));
            return report;
        }
    }
    // Pinning never changes which container runs kube-apiserver, so one look decides.
    let is_apiserver = apiserver::is_apiserver(&l.text);
    if let Some(req) = &options.admission {
        if is_apiserver {
            match wire_admission(&new_text, req) {
                Ok((text, notes)) => {
                    new_text = text;
                    report.admission = notes;
                }
                Err(why) => {
                    report.outcome = Outcome::Failed(why);
                    return report;
                }
            }
        }
    }
    if new_text == l.text {
        return report;
    }
    if let Err(why) = crate::manifest::check_size(new_text.len()) {
        report.outcome = Outcome::Failed(format!("refusing to write: the result would be {why}"));
        return report;
    }
    report.apiserver_changed = is_apiserver;
    match options.mode {
        Mode::DryRun => {
            report.diff = Some(unified_diff(&l.path, &l.text, &new_text));
            report.outcome = Outcome::Pinned(edits.len());
        }
        Mode::Apply => {
            if let Some(run) = backups {
                match run.save(&l.path, l.text.as_bytes()) {
                    Ok(b) => report.backup = Some(b),
                    Err(e) => {
                        report.outcome =
                            Outcome::Failed(format!("not written, backup failed: {e}"));
                        return report;
                    }
                }
            }
            report.outcome = match fsutil::atomic_replace(&l.path, new_text.as_bytes()) {
                Ok(WriteOutcome::Written) => Outcome::Pinned(edits.len()),
                Ok(WriteOutcome::Unchanged) => Outcome::Unchanged,
                Err(e) => Outcome::Failed(e.to_string()),
            };
        }
        Mode::Check => unreachable!("handled above"),
    }
    report
}

/// Plans the admission wiring and proves the admission files valid before
/// any byte of the manifest changes: a wired-in config the apiserver cannot
/// load would leave it crash-looping.
fn wire_admission(text: &str, req: &apiserver::Request) -> Result<(String, Vec<String>), String> {
    let plan =
        apiserver::plan(text, req).map_err(|why| format!("admission wiring refused: {why}"))?;
    let (_, findings) = preflight::preflight(&req.config_file, &plan.mounted);
    if preflight::has_failures(&findings) {
        let failures: Vec<String> = findings
            .iter()
            .filter(|f| f.level == preflight::Level::Fail)
            .map(|f| f.to_string())
            .collect();
        return Err(format!(
            "admission preflight failed, kube-apiserver manifest left untouched: {}",
            failures.join("; ")
        ));
    }
    let mut notes = plan.changes;
    for w in findings
        .iter()
        .filter(|f| f.level == preflight::Level::Warn)
    {
        tracing::warn!("{w}");
        notes.push(format!("warning: {w}"));
    }
    Ok((plan.new_text, notes))
}

/// Waits for each rewritten kube-apiserver to answer healthy; restores the
/// backup when it never does, so a bad change cannot keep the control plane down.
async fn health_gate(report: &mut Report, gate: &HealthGate) {
    for f in report.files.iter_mut().filter(|f| f.apiserver_changed) {
        if !matches!(f.outcome, Outcome::Pinned(_)) {
            continue;
        }
        let url = match &gate.url {
            Some(u) => u.clone(),
            None => match std::fs::read_to_string(&f.path)
                .map_err(|e| e.to_string())
                .and_then(|t| health::liveness_url(&t))
            {
                Ok(u) => u,
                Err(e) => {
                    f.outcome = Outcome::Failed(format!(
                        "cannot tell where to check apiserver health ({e}); pass --health-url"
                    ));
                    continue;
                }
            },
        };
        tokio::time::sleep(gate.settle).await;
        let check = health::HealthCheck {
            ca: gate.ca.clone(),
            timeout: gate.timeout,
            ..health::HealthCheck::new(url)
        };
        match health::wait_healthy(&check).await {
            Ok(took) => f.admission.push(format!(
                "kube-apiserver healthy at {} after {:.1} s",
                check.url,
                took.as_secs_f64()
            )),
            Err(e) => {
                let restored = match &f.backup {
                    Some(b) => std::fs::read(b)
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| {
                            fsutil::atomic_replace(&f.path, &bytes).map_err(|e| e.to_string())
                        })
                        .map(|_| format!("restored the previous manifest from {}", b.display())),
                    None => Err("no backup to restore".into()),
                };
                f.outcome = Outcome::Failed(match restored {
                    Ok(what) => format!("{e}; {what}"),
                    Err(why) => format!("{e}; ROLLBACK FAILED: {why}"),
                });
            }
        }
    }
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
