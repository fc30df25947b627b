//! `staticpin doctor`: every check, nothing changed, one table.
//!
//! The point is a 3 a.m. answer to "is this node in the state staticpin
//! wants?": config valid, every static pod pinned, admission files valid and
//! visible to the apiserver, kube-apiserver.yaml wired. Exit 0 all pass,
//! 1 something to act on (warnings), 2 something broken.

use std::path::PathBuf;

use clap::Args;

use super::{EXIT_CHECK, EXIT_FAILED, EXIT_OK};
use crate::admission::local;
use crate::admission::preflight::{self, Level};
use crate::apiserver;
use crate::pass::{self, Outcome};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub config: super::ConfigFlag,

    #[command(flatten)]
    pub policy: super::PolicyArgs,

    /// AdmissionConfiguration to check [default: admission.configFile from the config].
    #[arg(long, value_name = "FILE")]
    pub admission_config: Option<PathBuf>,

    /// Directory mounted for admission files [default: the config file's directory].
    #[arg(long, value_name = "DIR")]
    pub admission_dir: Option<PathBuf>,

    /// Manifest directory [default: the configured manifestDir].
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
}

struct Row {
    level: Level,
    check: String,
    detail: String,
}

pub async fn run(args: DoctorArgs) -> u8 {
    let mut rows = Vec::new();
    let mut flags = crate::config::Fragment::default();
    args.policy.apply(&mut flags);
    let cfg = match args.config.load(flags) {
        Ok(c) => {
            rows.push(Row {
                level: Level::Pass,
                check: "config".into(),
                detail: "valid".into(),
            });
            c
        }
        Err(e) => {
            rows.push(Row {
                level: Level::Fail,
                check: "config".into(),
                detail: e,
            });
            crate::config::Settings::default()
        }
    };
    let dir = args.path.clone().unwrap_or(cfg.manifest_dir.clone());

    // Pinning, without asking any registry.
    let report = pass::check_with(std::slice::from_ref(&dir), &cfg.policy);
    pin_rows(&mut rows, &report);
    trust_rows(&mut rows, &report, &cfg.policy);

    let admission_file = args.admission_config.clone().or_else(|| {
        cfg.admission
            .enabled
            .then(|| cfg.admission.config_file.clone())
            .flatten()
    });
    let kubeconfig = admission_file
        .and_then(|file| admission_rows(&mut rows, &dir, file, args.admission_dir.clone()));
    serve_rows(&mut rows, &cfg, kubeconfig.as_deref());

    print_table(&rows);
    if rows.iter().any(|r| r.level == Level::Fail) {
        EXIT_FAILED
    } else if rows.iter().any(|r| r.level == Level::Warn) {
        EXIT_CHECK
    } else {
        EXIT_OK
    }
}

/// One row per manifest: pinned, not yet pinned, or broken.
fn pin_rows(rows: &mut Vec<Row>, report: &pass::Report) {
    for f in &report.files {
        let (level, detail) = match &f.outcome {
            Outcome::Unchanged => (Level::Pass, "all images pinned".to_string()),
            Outcome::Unpinned(n) => (
                Level::Warn,
                format!(
                    "{n} image(s) not pinned: {}",
                    f.images
                        .iter()
                        .filter(|i| !i.had_digest())
                        .map(|i| i.image.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Outcome::Skipped(s) if !s.is_error => continue,
            Outcome::Skipped(s) => (Level::Fail, s.reason.clone()),
            Outcome::Failed(why) => (Level::Fail, why.to_string()),
            // Check mode plans no change; listed for completeness.
            Outcome::Changed { .. } => (Level::Warn, "would change".to_string()),
        };
        rows.push(Row {
            level,
            check: format!("pinned {}", f.path.display()),
            detail,
        });
    }
}

/// One row for the registry policy, and one per untrusted image: a warning
/// under `policy.untrusted: warn`, a failure under `deny` (pin would refuse).
fn trust_rows(rows: &mut Vec<Row>, report: &pass::Report, policy: &crate::policy::Policy) {
    if !policy.has_registry_policy() {
        rows.push(Row {
            level: Level::Pass,
            check: "registry policy".into(),
            detail: "none (policy.trustedRegistries is empty)".into(),
        });
        return;
    }
    let level = match policy.untrusted {
        crate::policy::Untrusted::Warn => Level::Warn,
        crate::policy::Untrusted::Deny => Level::Fail,
    };
    let mut untrusted = 0;
    for f in &report.files {
        for i in f.images.iter().filter(|i| i.trusted == Some(false)) {
            untrusted += 1;
            rows.push(Row {
                level,
                check: format!("trusted {}:{}", f.path.display(), i.line),
                detail: format!(
                    "container {}: {}",
                    i.container.as_deref().unwrap_or("(unnamed)"),
                    i.policy.clone().unwrap_or_else(|| i.image.clone())
                ),
            });
        }
    }
    if untrusted == 0 {
        rows.push(Row {
            level: Level::Pass,
            check: "registry policy".into(),
            detail: "every image is from a trusted registry".into(),
        });
    }
}

/// Returns the webhook kubeconfig the admission config names, if any.
fn admission_rows(
    rows: &mut Vec<Row>,
    dir: &std::path::Path,
    file: PathBuf,
    mount_dir: Option<PathBuf>,
) -> Option<PathBuf> {
    let mut req = apiserver::Request::new(file.clone());
    if let Some(d) = mount_dir {
        req.mount_dir = d;
    }
    let apiserver_file = apiserver::find_manifest(&[dir.to_path_buf()]);
    let mounted = match &apiserver_file {
        None => {
            rows.push(Row {
                level: Level::Fail,
                check: "kube-apiserver manifest".into(),
                detail: format!("none found in {}", dir.display()),
            });
            vec![req.mount_dir.clone()]
        }
        Some((path, text)) => match apiserver::plan(text, &req) {
            Ok(plan) => {
                rows.push(Row {
                    level: if plan.changes.is_empty() {
                        Level::Pass
                    } else {
                        Level::Warn
                    },
                    check: format!("wired {}", path.display()),
                    detail: if plan.changes.is_empty() {
                        "ImagePolicyWebhook flags, mount and volume present".into()
                    } else {
                        format!(
                            "not wired yet (staticpin pin would: {})",
                            plan.changes.join("; ")
                        )
                    },
                });
                plan.mounted
            }
            Err(why) => {
                rows.push(Row {
                    level: Level::Fail,
                    check: format!("wired {}", path.display()),
                    detail: why,
                });
                vec![req.mount_dir.clone()]
            }
        },
    };
    let (admission, findings) = preflight::preflight(&file, &mounted);
    for f in findings {
        rows.push(Row {
            level: f.level,
            check: format!("admission {}", f.check),
            detail: f.to_string(),
        });
    }
    admission.kubeconfig
}

/// When this node runs `staticpin serve` (serve.tlsCert is set) and the
/// admission config names a kubeconfig: whether the two ends would complete a
/// handshake, and how long their certificates last.
fn serve_rows(
    rows: &mut Vec<Row>,
    cfg: &crate::config::Settings,
    kubeconfig: Option<&std::path::Path>,
) {
    let (Some(cert), Some(ca)) = (&cfg.serve.tls_cert, &cfg.serve.client_ca) else {
        return;
    };
    let mut fail = |detail: String| {
        rows.push(Row {
            level: Level::Fail,
            check: "serve".into(),
            detail,
        })
    };
    let Some(kubeconfig) = kubeconfig else {
        return;
    };
    let client = match preflight::client_end(kubeconfig) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let read = |p: &std::path::Path, key: &str| {
        std::fs::read(p).map_err(|e| format!("serve.{key} {}: cannot read: {e}", p.display()))
    };
    let serve = match (read(cert, "tlsCert"), read(ca, "clientCA")) {
        (Ok(cert_pem), Ok(client_ca_pem)) => local::ServeEnd {
            cert_pem,
            client_ca_pem,
        },
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    for c in local::check_ends(&client, &serve) {
        rows.push(Row {
            level: c.level,
            check: format!("serve {}", c.check),
            detail: c.message,
        });
    }
}

fn print_table(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.check.len())
        .max()
        .unwrap_or(5)
        .min(60);
    for r in rows {
        let status = match r.level {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        println!("{status}  {:<width$}  {}", r.check, r.detail);
    }
    let count = |l: Level| rows.iter().filter(|r| r.level == l).count();
    println!(
        "{} passed, {} warnings, {} failed",
        count(Level::Pass),
        count(Level::Warn),
        count(Level::Fail)
    );
}
