//! What a pass did to each file, typed, and how it reads as text and JSON.
//!
//! Failures keep their type: a registry failure stays a [`ResolveError`]
//! with its [`ErrorKind`](crate::registry::ErrorKind), so a caller (the
//! watch daemon) can tell a transient failure worth retrying from a
//! permanent one. The JSON shape is an interface scripts rely on.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::fsutil::FsError;
use crate::manifest::Skip;
use crate::reference::ReferenceError;
use crate::registry::ResolveError;

/// What a pass may do: write, only show the change, or only look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Resolve and write.
    Apply,
    /// Resolve and show the diff; write nothing.
    DryRun,
    /// No network: only report images that are not digest-pinned.
    Check,
}

/// One image as found in a file.
#[derive(Clone, Debug, Default)]
pub struct ImageReport {
    /// 1-based line of the image value in the file.
    pub line: usize,
    /// The value as written in the file, before this pass.
    pub image: String,
    /// The container's name, when the manifest gives one.
    pub container: Option<String>,
    /// The new value, when this pass pins it.
    pub pinned: Option<String>,
    /// Why resolving it failed; its kind says whether retrying may help.
    pub error: Option<ResolveError>,
    /// `policy.trustedRegistries` on the image's *name*; `None`: no registry policy.
    pub trusted: Option<bool>,
    /// What the policy says of it (a warning, or why the file was refused).
    pub policy: Option<String>,
    /// The hosts.toml mirror the tag was resolved through, if not the registry.
    pub via: Option<String>,
    /// `--update` found the tag naming another digest than the pinned one.
    pub drifted: bool,
}

impl ImageReport {
    /// Whether the image as found in the file carries a digest.
    pub fn had_digest(&self) -> bool {
        self.image.contains('@')
    }
}

/// What a pass did (or, in dry-run, would do) to one file.
#[derive(Debug)]
pub enum Outcome {
    /// The file was changed (in dry-run: would be). `pinned` images got a
    /// digest; `wired` says the admission wiring was part of the change.
    Changed {
        /// Images that got a digest.
        pinned: usize,
        /// The admission wiring changed the file too.
        wired: bool,
    },
    /// Nothing to change: every image already carries a digest.
    Unchanged,
    /// `--check`: these many images are not pinned.
    Unpinned(usize),
    /// Left alone: not a Pod, not a regular file, or something kubelet would
    /// read differently or reject (the skip says whether it is an error).
    Skipped(Skip),
    /// It failed; the error says why, and whether the file was left as it was.
    Failed(FileError),
}

/// Why a file was not (or not durably) changed. The file itself is left
/// as it was unless the variant says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path given could not be read or its directory listed.
    #[error("{0}")]
    Scan(String),
    /// Reading the manifest failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// The step that failed: `stat` or `read`.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An image value that is not a valid image reference.
    #[error("line {line}: {source}")]
    InvalidReference {
        /// 1-based line of the value.
        line: usize,
        /// What is wrong with it.
        source: ReferenceError,
    },
    /// One or more images did not resolve (one error each); nothing is written.
    #[error("{}", join(.0))]
    Resolve(Vec<ResolveError>),
    /// The result would be a file kubelet rejects for its size.
    #[error("refusing to write: the result would be {0}")]
    TooLarge(String),
    /// The rewrite did not prove to change only the image values; nothing is
    /// written.
    #[error("refusing to write: the rewrite did not verify ({0}); this is a staticpin bug, please report it")]
    Verify(String),
    /// Wiring refused or preflight failed; the text says which.
    #[error("{0}")]
    Admission(String),
    /// `policy.untrusted: deny` refused an image; the file is left as it is.
    /// Each entry names the container and the image.
    #[error("policy violation, file left as it is: {}", .0.join("; "))]
    Policy(Vec<String>),
    /// Saving the original failed, so nothing was written.
    #[error("not written, backup failed: {0}")]
    Backup(FsError),
    /// The compare-and-swap found someone else's write.
    #[error("changed while staticpin ran; nothing written")]
    Changed,
    /// The write failed and nothing changed, unless only the directory fsync
    /// after the rename failed: then the new bytes are in place but may not
    /// survive a crash.
    #[error("{0}")]
    Write(FsError),
    /// Written, then kube-apiserver never became healthy.
    #[error("{reason}; {rollback}")]
    Unhealthy {
        /// Why the gate gave up: the health URL or CA was unusable, or no healthy
        /// answer came in time (with the last probe's result).
        reason: String,
        /// What the rollback did.
        rollback: GateRollback,
    },
    /// Written, then staticpin was told to stop before the health gate had
    /// an answer: an unverified change is not left behind. Not a verdict on
    /// the change, so it is not remembered and is tried again next time.
    #[error("staticpin stopped before kube-apiserver answered healthy; {rollback}")]
    Interrupted {
        /// What the rollback did.
        rollback: GateRollback,
    },
}

fn join(errors: &[ResolveError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl FileError {
    /// Whether running again later may succeed without anyone acting:
    /// registry timeouts, 5xx and rate limits, or a file that changed under
    /// the run (the next run starts from its new text).
    pub fn is_transient(&self) -> bool {
        match self {
            FileError::Resolve(errors) => {
                !errors.is_empty() && errors.iter().all(|e| e.kind.is_transient())
            }
            FileError::Changed => true,
            _ => false,
        }
    }
}

/// What the health gate's rollback did.
#[derive(Debug)]
pub enum GateRollback {
    /// The previous manifest was put back from this backup.
    Restored(PathBuf),
    /// The file no longer holds what staticpin wrote: someone changed it
    /// after the write, and that change stands.
    ChangedMeanwhile,
    /// The rollback itself failed (the text says why); the unhealthy change may
    /// still be in place.
    Failed(String),
}

impl fmt::Display for GateRollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateRollback::Restored(b) => {
                write!(f, "restored the previous manifest from {}", b.display())
            }
            GateRollback::ChangedMeanwhile => f.write_str(
                "could not roll back: the file changed since staticpin wrote it, and that change is kept",
            ),
            GateRollback::Failed(why) => write!(f, "ROLLBACK FAILED: {why}"),
        }
    }
}

/// One manifest's entry in the report: what happened to it and to each of its
/// images.
#[derive(Debug)]
pub struct FileReport {
    /// The manifest, as given or as found in a given directory.
    pub path: PathBuf,
    /// What happened to it.
    pub outcome: Outcome,
    /// Its images; under `--check`, only those unpinned or untrusted.
    pub images: Vec<ImageReport>,
    /// Unified diff of the change (dry-run only).
    pub diff: Option<String>,
    /// Where the original was saved before the write ([`Mode::Apply`] only).
    pub backup: Option<PathBuf>,
    /// Admission wiring done (or planned) in this file, and preflight warnings.
    pub admission: Vec<String>,
    /// The file is the kube-apiserver manifest (the one admission is wired
    /// into), whatever happened to it.
    pub is_apiserver: bool,
    /// kube-apiserver.yaml was rewritten, so the apiserver restarts.
    pub apiserver_changed: bool,
    /// The bytes written, for the health gate's compare-and-swap.
    pub(crate) written: Option<Vec<u8>>,
    /// That write wired admission in (kept when the gate rolls it back).
    pub(crate) wired: bool,
}

impl FileReport {
    pub(crate) fn new(path: &Path, outcome: Outcome) -> FileReport {
        FileReport {
            path: path.to_path_buf(),
            outcome,
            images: Vec::new(),
            diff: None,
            backup: None,
            admission: Vec::new(),
            is_apiserver: false,
            apiserver_changed: false,
            written: None,
            wired: false,
        }
    }

    /// Whether this file fails the run: it failed, or was skipped for an error
    /// kubelet would also hit.
    pub fn is_error(&self) -> bool {
        match &self.outcome {
            Outcome::Failed(_) => true,
            Outcome::Skipped(s) => s.is_error,
            _ => false,
        }
    }
}

/// The result of one pass over a set of paths: what `pin` prints and what its
/// exit code is decided from.
#[derive(Debug)]
pub struct Report {
    /// What the pass was allowed to do.
    pub mode: Mode,
    /// One entry per manifest, in the order scanned.
    pub files: Vec<FileReport>,
    /// Failures of the pass as a whole (not of one file).
    pub errors: Vec<String>,
    /// Directories given that hold no manifest at all.
    pub empty_dirs: Vec<PathBuf>,
}

impl Report {
    /// An empty report for a pass in `mode`.
    pub fn new(mode: Mode) -> Report {
        Report {
            mode,
            files: Vec::new(),
            errors: Vec::new(),
            empty_dirs: Vec::new(),
        }
    }

    /// How many files have an outcome matching `f`.
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.files.iter().filter(|r| f(&r.outcome)).count()
    }

    /// Whether anything failed (a pass-wide error, or a file for which
    /// [`FileReport::is_error`]): exit code 2.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty() || self.files.iter().any(FileReport::is_error)
    }

    /// Images outside every trusted registry prefix.
    pub fn untrusted(&self) -> usize {
        self.files
            .iter()
            .flat_map(|f| &f.images)
            .filter(|i| i.trusted == Some(false))
            .count()
    }

    /// Whether a file was refused by `policy.untrusted: deny`.
    pub fn has_policy_violation(&self) -> bool {
        self.count(|o| matches!(o, Outcome::Failed(FileError::Policy(_)))) > 0
    }

    /// Images without a digest, summed over the files `--check` found unpinned.
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
    pub fn summary(&self) -> String {
        let mode = self.mode;
        let n = self.files.len();
        let failed = self.count(|o| matches!(o, Outcome::Failed(_)));
        let skipped = self.count(|o| matches!(o, Outcome::Skipped(_)));
        let unchanged = self.count(|o| matches!(o, Outcome::Unchanged));
        let mut s = match mode {
            Mode::Check => {
                let images = self.unpinned();
                format!(
                    "{}: {} with unpinned images ({}), {unchanged} already pinned",
                    plural(n, "file", "files"),
                    self.count(|o| matches!(o, Outcome::Unpinned(_))),
                    plural(images, "image", "images"),
                )
            }
            Mode::Apply | Mode::DryRun => format!(
                "{}: {} {}, {unchanged} unchanged",
                plural(n, "file", "files"),
                self.count(|o| matches!(o, Outcome::Changed { pinned, .. } if *pinned > 0)),
                if mode == Mode::DryRun {
                    "would be pinned"
                } else {
                    "pinned"
                }
            ),
        };
        // Files whose only change is the admission wiring.
        let wired = self.count(|o| {
            matches!(
                o,
                Outcome::Changed {
                    pinned: 0,
                    wired: true
                }
            )
        });
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
        let untrusted = self.untrusted();
        if untrusted > 0 {
            s.push_str(&format!(
                ", {} untrusted",
                plural(untrusted, "image", "images")
            ));
        }
        s.push_str(&format!(", {failed} failed"));
        s
    }

    /// The human report: one line per file on stdout (with `file:line` for
    /// each image changed or failing), errors on stderr, then the summary.
    pub fn print_text(&self) {
        let mode = self.mode;
        for dir in &self.empty_dirs {
            println!("no manifests in {}", dir.display());
        }
        for f in &self.files {
            let path = f.path.display();
            if let Some(diff) = &f.diff {
                print!("{diff}");
            }
            let would = mode == Mode::DryRun;
            match &f.outcome {
                Outcome::Unpinned(_) => {
                    for i in f.images.iter().filter(|i| !i.had_digest()) {
                        println!("{path}:{}: {} is not pinned to a digest", i.line, i.image);
                    }
                }
                Outcome::Changed { pinned: 0, .. } if would => {
                    println!("{path}: would wire admission")
                }
                Outcome::Changed { pinned: 0, .. } => println!("{path}: admission wired"),
                Outcome::Changed { pinned, wired } => {
                    let verb = if would { "would pin" } else { "pinned" };
                    let and = match (wired, would) {
                        (true, true) => ", would wire admission",
                        (true, false) => ", admission wired",
                        _ => "",
                    };
                    println!("{path}: {verb} {pinned}{and}");
                }
                Outcome::Unchanged if f.images.is_empty() && mode != Mode::Check => {
                    println!("{path}: unchanged (no images)")
                }
                Outcome::Unchanged => println!("{path}: already pinned"),
                Outcome::Skipped(s) => println!("{path}: skipped ({})", s.reason),
                Outcome::Failed(why) => {
                    println!("{path}: failed");
                    eprintln!("staticpin: {path}: {why}");
                }
            }
            if !matches!(f.outcome, Outcome::Unpinned(_)) {
                for i in &f.images {
                    let via = i
                        .via
                        .as_ref()
                        .map(|m| format!(" (via mirror {m})"))
                        .unwrap_or_default();
                    let moved = if i.drifted { " (tag moved)" } else { "" };
                    match (&i.pinned, &i.error) {
                        (Some(new), _) => {
                            println!("  {path}:{}: {} -> {new}{moved}{via}", i.line, i.image)
                        }
                        (_, Some(e)) => println!("  {path}:{}: {}: {}", i.line, i.image, e.kind),
                        _ => {}
                    }
                }
            }
            for i in f.images.iter().filter(|i| i.trusted == Some(false)) {
                let container = i.container.as_deref().unwrap_or("?");
                println!(
                    "  {path}:{}: container {container}: {} is untrusted",
                    i.line, i.image
                );
            }
            for note in &f.admission {
                println!("  {note}");
            }
        }
        for e in &self.errors {
            eprintln!("staticpin: {e}");
        }
        println!("{}", self.summary());
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Serialize for ImageReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("line", &self.line)?;
        m.serialize_entry("image", &self.image)?;
        m.serialize_entry("container", &self.container)?;
        m.serialize_entry("pinned", &self.pinned)?;
        m.serialize_entry("trusted", &self.trusted)?;
        m.serialize_entry("policy", &self.policy)?;
        m.serialize_entry("via", &self.via)?;
        m.serialize_entry("drifted", &self.drifted)?;
        m.serialize_entry("error", &self.error.as_ref().map(ToString::to_string))?;
        if let Some(e) = &self.error {
            m.serialize_entry("errorKind", e.kind.as_str())?;
            m.serialize_entry("transient", &e.kind.is_transient())?;
        }
        m.end()
    }
}

/// A file in the report, with the mode that decides "pinned" vs "would-pin".
struct FileJson<'a>(&'a FileReport, Mode);

impl Serialize for FileJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let FileJson(f, mode) = self;
        let (status, reason) = match &f.outcome {
            Outcome::Changed { .. } if *mode == Mode::DryRun => ("would-pin", None),
            Outcome::Changed { .. } => ("pinned", None),
            Outcome::Unchanged => ("unchanged", None),
            Outcome::Unpinned(_) => ("unpinned", None),
            Outcome::Skipped(s) => ("skipped", Some(s.reason.clone())),
            Outcome::Failed(w) => ("failed", Some(w.to_string())),
        };
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("path", &f.path)?;
        m.serialize_entry("status", status)?;
        m.serialize_entry("reason", &reason)?;
        m.serialize_entry("images", &f.images)?;
        m.serialize_entry("backup", &f.backup)?;
        m.serialize_entry("diff", &f.diff)?;
        m.serialize_entry("admission", &f.admission)?;
        m.serialize_entry(
            "wired",
            &matches!(f.outcome, Outcome::Changed { wired: true, .. }),
        )?;
        if let Outcome::Failed(e) = &f.outcome {
            m.serialize_entry("transient", &e.is_transient())?;
        }
        m.end()
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let files: Vec<FileJson<'_>> = self.files.iter().map(|f| FileJson(f, self.mode)).collect();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("files", &files)?;
        m.serialize_entry("summary", &self.summary())?;
        m.serialize_entry("failed", &self.has_errors())?;
        m.serialize_entry("errors", &self.errors)?;
        m.serialize_entry("noManifestsIn", &self.empty_dirs)?;
        m.serialize_entry("untrusted", &self.untrusted())?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ErrorKind;

    fn file(outcome: Outcome) -> FileReport {
        FileReport::new(Path::new("/m/a.yaml"), outcome)
    }

    #[test]
    fn summaries_say_one_thing_per_word() {
        let mut r = Report::new(Mode::Check);
        r.files = vec![file(Outcome::Unpinned(1)), file(Outcome::Unchanged)];
        assert_eq!(
            r.summary(),
            "2 files: 1 with unpinned images (1 image), 1 already pinned, 0 failed"
        );
        let mut r = Report::new(Mode::DryRun);
        r.files = vec![
            file(Outcome::Changed {
                pinned: 2,
                wired: true,
            }),
            file(Outcome::Changed {
                pinned: 0,
                wired: true,
            }),
        ];
        assert_eq!(
            r.summary(),
            "2 files: 1 would be pinned, 0 unchanged, 1 would be wired for admission, 0 failed"
        );
    }

    #[test]
    fn json_keeps_the_error_kind() {
        let err = ResolveError {
            image: "r.io/a:v1".into(),
            registry: "r.io".into(),
            kind: ErrorKind::Timeout,
            detail: "slow".into(),
        };
        let mut f = file(Outcome::Failed(FileError::Resolve(vec![err.clone()])));
        f.images.push(ImageReport {
            line: 7,
            image: "r.io/a:v1".into(),
            error: Some(err),
            ..ImageReport::default()
        });
        let mut r = Report::new(Mode::Apply);
        r.files.push(f);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["failed"], true);
        let f = &v["files"][0];
        assert_eq!(f["status"], "failed");
        assert_eq!(f["transient"], true);
        assert_eq!(f["images"][0]["line"], 7);
        assert_eq!(f["images"][0]["errorKind"], "timeout");
        assert!(f["reason"]
            .as_str()
            .unwrap()
            .contains("(registry r.io): timeout: slow"));
    }
}
