//! `staticpin pin [PATH...]`: pin, dry-run or check static pod manifests.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::{fail, OutputFormat, RegistryArgs, EXIT_CHECK, EXIT_FAILED, EXIT_OK};
use crate::backup::BackupStore;
use crate::pin::{self, Mode, Outcome, Report};
use crate::registry::HttpResolver;
use crate::{apiserver, config};

#[derive(Debug, Args)]
pub struct PinArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Print a unified diff of what would change and write nothing.
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,

    /// Ask no registry; exit 1 if any image is not digest-pinned (for CI and monitoring).
    #[arg(long)]
    pub check: bool,

    /// Write `name@sha256:…` instead of `name:tag@sha256:…`.
    #[arg(long)]
    pub digest_only: bool,

    /// Where originals are saved before the first change in a run
    /// [default: /var/lib/staticpin/backups]. Never inside the manifest directory.
    #[arg(long, value_name = "DIR", value_parser = super::path_flag)]
    pub backup_dir: Option<PathBuf>,

    /// Report format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: OutputFormat,

    /// Also wire ImagePolicyWebhook into kube-apiserver.yaml with this
    /// AdmissionConfiguration file (proven valid first). Config: admission.configFile.
    #[arg(long, value_name = "FILE", help_heading = "Admission")]
    pub admission_config: Option<PathBuf>,

    /// Admission plugins to enable, comma-separated [default: ImagePolicyWebhook].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Admission"
    )]
    pub admission_plugins: Vec<String>,

    /// Host directory to mount read-only into kube-apiserver [default: the config file's directory].
    #[arg(long, value_name = "DIR", help_heading = "Admission")]
    pub admission_dir: Option<PathBuf>,

    /// Replace an --admission-control-config-file that points somewhere else.
    #[arg(long, help_heading = "Admission")]
    pub force: bool,

    /// After changing kube-apiserver.yaml, wait for its /livez and restore the
    /// backup if it never answers healthy.
    #[arg(long, help_heading = "Health gate")]
    pub wait_healthy: bool,

    /// URL to poll [default: the manifest's livenessProbe].
    #[arg(long, value_name = "URL", help_heading = "Health gate")]
    pub health_url: Option<String>,

    /// CA for the apiserver's certificate [default: system roots and /etc/kubernetes/pki/ca.crt].
    #[arg(long, value_name = "FILE", help_heading = "Health gate")]
    pub health_ca: Option<PathBuf>,

    #[arg(
        long,
        value_name = "DURATION",
        value_parser = config::duration::parse,
        help_heading = "Health gate",
        help = format!(
            "Time to wait for healthy before rolling back [default: {}]",
            super::show(config::DEFAULT_HEALTH_TIMEOUT)
        )
    )]
    pub health_timeout: Option<Duration>,

    #[arg(
        long,
        value_name = "DURATION",
        value_parser = config::duration::parse_delay,
        help_heading = "Health gate",
        help = format!(
            "Time for kubelet to notice the change before probing (it relists every 20s) [default: {}]",
            super::show(config::DEFAULT_HEALTH_SETTLE)
        )
    )]
    pub health_settle: Option<Duration>,

    /// Manifest files or directories [default: the configured manifestDir].
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

pub async fn run(args: PinArgs) -> u8 {
    // Flags that override config keys are validated with them.
    let mut flags = config::Fragment::default();
    flags.backup_dir = args.backup_dir.clone();
    flags.digest_only = args.digest_only.then_some(true);
    let cfg = match args.registry.load_config_with(flags) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mode = if args.check {
        Mode::Check
    } else if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Apply
    };
    let paths = if args.paths.is_empty() {
        vec![cfg.manifest_dir.clone()]
    } else {
        args.paths.clone()
    };
    // --check must work with no network and no credentials at all.
    let settings = if mode == Mode::Check {
        Ok(crate::registry::Settings::default())
    } else {
        args.registry.settings(&cfg)
    };
    let settings = match settings {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let admission_file = args.admission_config.clone().or_else(|| {
        cfg.admission
            .enabled
            .then(|| cfg.admission.config_file.clone())
            .flatten()
    });
    let admission = admission_file.map(|file| {
        let mut req = apiserver::Request::new(file);
        if !args.admission_plugins.is_empty() {
            req.plugins = args.admission_plugins.clone();
        }
        if let Some(dir) = &args.admission_dir {
            req.mount_dir = dir.clone();
        }
        req.force = args.force;
        req
    });
    let health = args.wait_healthy.then(|| pin::HealthGate {
        url: args.health_url.clone(),
        ca: args.health_ca.clone(),
        timeout: args
            .health_timeout
            .unwrap_or(config::DEFAULT_HEALTH_TIMEOUT),
        settle: args.health_settle.unwrap_or(config::DEFAULT_HEALTH_SETTLE),
    });
    // A typo in --health-url or --health-ca must fail before any write, not
    // surface as a rollback after the apiserver restarted.
    if let Some(gate) = &health {
        let probe = crate::health::HealthCheck {
            ca: gate.ca.clone(),
            ..crate::health::HealthCheck::new(
                gate.url
                    .clone()
                    .unwrap_or_else(|| "https://127.0.0.1/livez".into()),
            )
        };
        if let Err(e) = probe.validate() {
            return fail(e);
        }
    }
    let options = pin::Options {
        mode,
        digest_only: cfg.digest_only,
        concurrency: settings.concurrency,
        admission,
        health,
    };
    let store = BackupStore::new(cfg.backup_dir.clone());
    let resolver = HttpResolver::new(settings);
    let backups = (mode == Mode::Apply).then_some(&store);
    let report = pin::run(&paths, &options, &resolver, backups).await;
    // Prune on every run: a run whose write failed still saved a backup.
    if mode == Mode::Apply {
        if let Err(e) = store.prune(cfg.keep_backups as usize) {
            tracing::warn!("could not prune old backups: {e}");
        }
    }

    match args.output {
        OutputFormat::Text => print_text(&report, mode),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&report, mode)).expect("plain JSON")
        ),
    }
    if report.has_errors() {
        EXIT_FAILED
    } else if mode == Mode::Check && report.unpinned() > 0 {
        EXIT_CHECK
    } else {
        EXIT_OK
    }
}

fn print_text(report: &Report, mode: Mode) {
    for f in &report.files {
        let path = f.path.display();
        if let Some(diff) = &f.diff {
            print!("{diff}");
        }
        match &f.outcome {
            Outcome::Unpinned(_) => {
                for i in &f.images {
                    println!("{path}:{}: {} is not pinned to a digest", i.line, i.image);
                }
            }
            Outcome::Pinned(0) if mode == Mode::DryRun => println!("{path}: would wire admission"),
            Outcome::Pinned(0) => println!("{path}: admission wired"),
            Outcome::Pinned(n) if mode == Mode::DryRun => println!("{path}: would pin {n}"),
            Outcome::Pinned(n) => println!("{path}: pinned {n}"),
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
        for note in &f.admission {
            println!("  {note}");
        }
    }
    println!("{}", report.summary(mode));
}

fn to_json(report: &Report, mode: Mode) -> serde_json::Value {
    let files: Vec<_> = report
        .files
        .iter()
        .map(|f| {
            let (status, reason) = match &f.outcome {
                Outcome::Pinned(_) if mode == Mode::DryRun => ("would-pin", None),
                Outcome::Pinned(_) => ("pinned", None),
                Outcome::Unchanged => ("unchanged", None),
                Outcome::Unpinned(_) => ("unpinned", None),
                Outcome::Skipped(s) => ("skipped", Some(s.reason.clone())),
                Outcome::Failed(w) => ("failed", Some(w.clone())),
            };
            let images: Vec<_> = f
                .images
                .iter()
                .map(|i| json!({"line": i.line, "image": i.image, "pinned": i.pinned, "error": i.error}))
                .collect();
            json!({
                "path": f.path,
                "status": status,
                "reason": reason,
                "images": images,
                "backup": f.backup,
                "diff": f.diff,
                "admission": f.admission,
            })
        })
        .collect();
    json!({"files": files, "summary": report.summary(mode), "failed": report.has_errors()})
}
