//! The metrics file: a pass's outcome as Prometheus text exposition, written
//! where node_exporter's textfile collector reads it.
//!
//! [`Metrics`] is built from a pass [`Report`] (and, for `status` or a
//! daemon's resync, the drift rows), plus the [`Counters`] kept by the
//! process. [`write_textfile`] renders it and replaces the file atomically: a
//! dot-prefixed temp in the same directory, renamed over the target, so the
//! collector (which reads only `*.prom`) never sees half a file.
//!
//! Counters are per process: they start at zero when staticpin starts and
//! reset on restart, which Prometheus' `rate()` and `increase()` handle. For
//! a one-shot `pin --metrics-file` they are that run's counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::drift::{Drift, Status};
use super::report::{FileError, Mode, Outcome, Report};
use crate::fsutil::{self, FsError};

/// Image counts by state. The states overlap: an image can be pinned and
/// untrusted, or pinned and drifted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCounts {
    /// Carrying a digest after the pass.
    pub pinned: u64,
    /// Without a digest after the pass (including images of failed files).
    pub unpinned: u64,
    /// Outside `policy.trustedRegistries` (0 when there is no registry policy).
    pub untrusted: u64,
    /// Pinned, and the tag now names another digest (as far as checked).
    pub drifted: u64,
}

/// Manifest files by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestCounts {
    /// Pinned, already pinned, or (dry-run) would be pinned.
    pub ok: u64,
    /// Failed, refused by policy, or skipped for an error kubelet also hits.
    pub failed: u64,
    /// Not a Pod, or otherwise skipped harmlessly.
    pub skipped: u64,
}

/// Monotonic counts since the process started (see the module header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// `(registry, kind)` → failed resolutions.
    pub resolve_errors: BTreeMap<(String, String), u64>,
    /// Manifest files written (changed on disk).
    pub manifest_writes: u64,
}

impl Counters {
    /// Adds one pass's registry failures and writes.
    pub fn record(&mut self, report: &Report) {
        for e in report
            .files
            .iter()
            .flat_map(|f| &f.images)
            .filter_map(|i| i.error.as_ref())
        {
            *self
                .resolve_errors
                .entry((e.registry.clone(), kind_label(e.kind.as_str())))
                .or_default() += 1;
        }
        if report.mode == Mode::Apply {
            self.manifest_writes += report.count(|o| matches!(o, Outcome::Changed { .. })) as u64;
        }
    }

    /// Adds the registry failures of one drift check (HEADs that failed).
    pub fn record_status(&mut self, status: &Status) {
        for r in &status.rows {
            if let Drift::Failed(e) = &r.drift {
                *self
                    .resolve_errors
                    .entry((e.registry.clone(), kind_label(e.kind.as_str())))
                    .or_default() += 1;
            }
        }
    }
}

/// `not found` → `not_found`: label values scripts and alerts match on.
fn kind_label(kind: &str) -> String {
    kind.to_ascii_lowercase().replace([' ', '-'], "_")
}

/// Everything one metrics file says.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Images by state, after the pass.
    pub images: ImageCounts,
    /// Manifest files by outcome.
    pub manifests: ManifestCounts,
    /// `Some` when admission wiring is enabled: whether kube-apiserver.yaml
    /// is wired after the pass.
    pub apiserver_wired: Option<bool>,
    /// When the pass ended.
    pub last_pass: SystemTime,
    /// No file failed and no pass-wide error (for a drift check, no registry
    /// question failed either).
    pub last_pass_success: bool,
    /// How long the pass took.
    pub last_pass_duration: Duration,
    /// The process's counters at the end of the pass.
    pub counters: Counters,
}

impl Metrics {
    /// The metrics of a finished pass. `admission` says whether the pass was
    /// asked to wire admission; `ended` and `duration` time it.
    pub fn from_report(
        report: &Report,
        admission: bool,
        counters: &Counters,
        ended: SystemTime,
        duration: Duration,
    ) -> Metrics {
        let mut images = ImageCounts::default();
        let mut manifests = ManifestCounts::default();
        for f in &report.files {
            match &f.outcome {
                Outcome::Skipped(s) if !s.is_error => manifests.skipped += 1,
                _ if f.is_error() => manifests.failed += 1,
                _ => manifests.ok += 1,
            }
            let written = match &f.outcome {
                Outcome::Changed { .. } => report.mode == Mode::Apply,
                _ => false,
            };
            for i in &f.images {
                if i.had_digest() || (written && i.pinned.is_some()) {
                    images.pinned += 1;
                } else {
                    images.unpinned += 1;
                }
                images.untrusted += u64::from(i.trusted == Some(false));
                images.drifted += u64::from(i.drifted && !written);
            }
        }
        let wiring_failed = !report.errors.is_empty()
            || report.files.iter().any(|f| {
                matches!(
                    f.outcome,
                    Outcome::Failed(
                        FileError::Admission(_)
                            | FileError::Unhealthy { .. }
                            | FileError::Interrupted { .. }
                    )
                )
            });
        Metrics {
            images,
            manifests,
            apiserver_wired: admission.then_some(!wiring_failed && report.mode == Mode::Apply),
            last_pass: ended,
            last_pass_success: !report.has_errors(),
            last_pass_duration: duration,
            counters: counters.clone(),
        }
    }

    /// The metrics of a `status` run (or a daemon's drift check): image
    /// counts from the rows, file errors as failed manifests, success 0 when
    /// a file or a registry failed. Record the status in `counters` first.
    pub fn from_status(
        status: &Status,
        counters: &Counters,
        ended: SystemTime,
        duration: Duration,
    ) -> Metrics {
        let mut m = Metrics::from_report(&status.report, false, counters, ended, duration);
        m.last_pass_success = !status.has_errors();
        m.images = ImageCounts::default();
        for r in &status.rows {
            if r.digest.is_some() {
                m.images.pinned += 1;
            } else {
                m.images.unpinned += 1;
            }
            m.images.untrusted += u64::from(r.trusted == Some(false));
            m.images.drifted += u64::from(matches!(r.drift, Drift::Drifted { .. }));
        }
        m
    }

    /// The Prometheus text exposition format (version 0.0.4), with HELP and
    /// TYPE for every metric family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_state(&mut out);
        self.render_last_pass(&mut out);
        self.render_counters(&mut out);
        out
    }

    /// The gauges describing the manifests as the last pass left them.
    fn render_state(&self, out: &mut String) {
        let i = &self.images;
        family(
            out,
            "staticpin_images",
            "gauge",
            "Images in the static pod manifests by state; an image can be in several states.",
            &[
                (label1("state", "pinned"), i.pinned.to_string()),
                (label1("state", "unpinned"), i.unpinned.to_string()),
                (label1("state", "untrusted"), i.untrusted.to_string()),
                (label1("state", "drifted"), i.drifted.to_string()),
            ],
        );
        let m = &self.manifests;
        family(
            out,
            "staticpin_manifests",
            "gauge",
            "Static pod manifest files by outcome of the last pass.",
            &[
                (label1("state", "ok"), m.ok.to_string()),
                (label1("state", "failed"), m.failed.to_string()),
                (label1("state", "skipped"), m.skipped.to_string()),
            ],
        );
        // Absent rather than 0 when the pass never looked at kube-apiserver.yaml.
        if let Some(wired) = self.apiserver_wired {
            family(
                out,
                "staticpin_apiserver_wired",
                "gauge",
                "Whether kube-apiserver.yaml is wired for ImagePolicyWebhook (1) or not (0).",
                &[(String::new(), u8::from(wired).to_string())],
            );
        }
    }

    /// When the last pass ended, whether it succeeded and how long it took.
    fn render_last_pass(&self, out: &mut String) {
        let ended = self
            .last_pass
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        family(
            out,
            "staticpin_last_pass_timestamp_seconds",
            "gauge",
            "When the last pass ended, in seconds since the Unix epoch.",
            &[(String::new(), format!("{ended:.3}"))],
        );
        family(
            out,
            "staticpin_last_pass_success",
            "gauge",
            "Whether the last pass succeeded for every file (1) or not (0).",
            &[(String::new(), u8::from(self.last_pass_success).to_string())],
        );
        family(
            out,
            "staticpin_last_pass_duration_seconds",
            "gauge",
            "How long the last pass took, in seconds.",
            &[(
                String::new(),
                format!("{:.3}", self.last_pass_duration.as_secs_f64()),
            )],
        );
    }

    /// The per-process counters.
    fn render_counters(&self, out: &mut String) {
        let errors: Vec<(String, String)> = self
            .counters
            .resolve_errors
            .iter()
            .map(|((registry, kind), n)| {
                (
                    format!(
                        "{{registry=\"{}\",kind=\"{}\"}}",
                        escape(registry),
                        escape(kind)
                    ),
                    n.to_string(),
                )
            })
            .collect();
        family(
            out,
            "staticpin_resolve_errors_total",
            "counter",
            "Failed image resolutions by registry and error kind since staticpin started.",
            &errors,
        );
        family(
            out,
            "staticpin_manifest_writes_total",
            "counter",
            "Manifest files written since staticpin started.",
            &[(String::new(), self.counters.manifest_writes.to_string())],
        );
    }
}

/// One metric family: HELP and TYPE, then its samples as `(labels, value)`.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn label1(name: &str, value: &str) -> String {
    format!("{{{name}=\"{}\"}}", escape(value))
}

/// Label values escape `\`, `"` and newlines, per the exposition format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders `metrics` and replaces `path` atomically (dot-temp in the same
/// directory, fsync, rename, fsync of the directory). Mode 0644: the
/// collector usually runs as another user.
pub fn write_textfile(path: &Path, metrics: &Metrics) -> Result<(), FsError> {
    fsutil::write_file_atomically(path, metrics.render().as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::report::{FileReport, ImageReport};
    use crate::registry::{ErrorKind, ResolveError};

    #[test]
    fn renders_every_family_with_help_and_type_and_escapes_labels() {
        let mut r = Report::new(Mode::Apply);
        let mut ok = FileReport::new(
            Path::new("/m/a.yaml"),
            Outcome::Changed {
                pinned: 1,
                wired: false,
            },
        );
        ok.images.push(ImageReport {
            image: "r.io/a:v1".into(),
            pinned: Some("r.io/a:v1@sha256:x".into()),
            trusted: Some(false),
            ..ImageReport::default()
        });
        let err = ResolveError {
            image: "r.io/b:v1".into(),
            registry: "r\"e\\g".into(),
            kind: ErrorKind::NotFound,
            detail: String::new(),
        };
        let mut bad = FileReport::new(
            Path::new("/m/b.yaml"),
            Outcome::Failed(FileError::Resolve(vec![err.clone()])),
        );
        bad.images.push(ImageReport {
            image: "r.io/b:v1".into(),
            error: Some(err),
            ..ImageReport::default()
        });
        r.files = vec![ok, bad];
        let mut c = Counters::default();
        c.record(&r);
        c.record(&r);
        let m = Metrics::from_report(
            &r,
            true,
            &c,
            UNIX_EPOCH + Duration::from_secs(5),
            Duration::from_millis(1500),
        );
        let text = m.render();
        for want in [
            "staticpin_images{state=\"pinned\"} 1\n",
            "staticpin_images{state=\"unpinned\"} 1\n",
            "staticpin_images{state=\"untrusted\"} 1\n",
            "staticpin_manifests{state=\"failed\"} 1\n",
            "staticpin_apiserver_wired 1\n",
            "staticpin_last_pass_timestamp_seconds 5.000\n",
            "staticpin_last_pass_success 0\n",
            "staticpin_last_pass_duration_seconds 1.500\n",
            "staticpin_resolve_errors_total{registry=\"r\\\"e\\\\g\",kind=\"not_found\"} 2\n",
            "staticpin_manifest_writes_total 2\n",
        ] {
            assert!(text.contains(want), "lacks {want:?}:\n{text}");
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(
            families,
            text.lines().filter(|l| l.starts_with("# HELP")).count()
        );
        assert_eq!(families, 8);
    }
}
