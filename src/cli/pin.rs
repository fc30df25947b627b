//! `staticpin pin [PATH...]`: pin, dry-run or check static pod manifests.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;

use super::{fail, OutputFormat, RegistryArgs, EXIT_CHECK, EXIT_FAILED, EXIT_OK};
use crate::apiserver;
use crate::backup::BackupStore;
use crate::config;
use crate::pass::metrics::{self, Counters, Metrics};
use crate::pass::{self, LockSettings, Mode, Report};
use crate::registry::cache::{CachingResolver, DigestCache};
use crate::registry::HttpResolver;

/// The run lock, for subcommands that write.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    #[arg(long, value_name = "FILE", value_parser = super::path_flag, help = format!(
        "Lock file held while writing, so one staticpin writes at a time [default: {}]. Config: lockFile",
        config::DEFAULT_LOCK_FILE
    ))]
    pub lock_file: Option<PathBuf>,

    #[arg(long, value_name = "DURATION", value_parser = config::duration::parse_delay, help = format!(
        "Time to wait for another staticpin's lock before giving up [default: {}]",
        super::show(pass::lock::DEFAULT_LOCK_TIMEOUT)
    ))]
    pub lock_timeout: Option<Duration>,
}

impl LockArgs {
    /// The lock file from the flag over the config, and the wait bound.
    pub fn settings(&self, cfg: &config::Settings) -> LockSettings {
        LockSettings {
            path: self.lock_file.clone().unwrap_or(cfg.lock_file.clone()),
            timeout: self
                .lock_timeout
                .unwrap_or(pass::lock::DEFAULT_LOCK_TIMEOUT),
        }
    }
}

/// The admission wiring flags `pin` and `watch` share.
#[derive(Debug, Clone, Args)]
pub struct AdmissionFlags {
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
}

impl AdmissionFlags {
    /// The wiring to apply: `--admission-config` over `admission.configFile`
    /// (when `admission.enabled`), with the other flags on top.
    pub fn request(&self, cfg: &config::Settings) -> Option<apiserver::Request> {
        let file = self.admission_config.clone().or_else(|| {
            cfg.admission
                .enabled
                .then(|| cfg.admission.config_file.clone())
                .flatten()
        })?;
        let mut req = apiserver::Request::new(file);
        if !self.admission_plugins.is_empty() {
            req.plugins = self.admission_plugins.clone();
        }
        if let Some(dir) = &self.admission_dir {
            req.mount_dir = dir.clone();
        }
        req.force = self.force;
        Some(req)
    }
}

/// The health-gate flags `pin` and `watch` share.
#[derive(Debug, Clone, Args)]
pub struct HealthFlags {
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
}

impl HealthFlags {
    /// The gate when `on`, checked now: a typo in --health-url or
    /// --health-ca must fail before any write, not surface as a rollback
    /// after the apiserver restarted.
    pub fn gate(&self, on: bool) -> Result<Option<pass::HealthGate>, String> {
        if !on {
            return Ok(None);
        }
        let gate = pass::HealthGate {
            url: self.health_url.clone(),
            ca: self.health_ca.clone(),
            timeout: self
                .health_timeout
                .unwrap_or(config::DEFAULT_HEALTH_TIMEOUT),
            settle: self.health_settle.unwrap_or(config::DEFAULT_HEALTH_SETTLE),
        };
        let probe = crate::health::HealthCheck {
            ca: gate.ca.clone(),
            ..crate::health::HealthCheck::new(
                gate.url
                    .clone()
                    .unwrap_or_else(|| "https://127.0.0.1/livez".into()),
            )
        };
        probe.validate().map_err(|e| e.to_string())?;
        Ok(Some(gate))
    }
}

#[derive(Debug, Args)]
pub struct PinArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub lock: LockArgs,

    #[command(flatten)]
    pub policy: super::PolicyArgs,

    /// Re-pin images whose tag now names another digest (fetched and
    /// verified like every pin). Without it a pinned image never moves. Config: update.
    #[arg(long, conflicts_with = "check")]
    pub update: bool,

    /// Write Prometheus metrics of this run here (atomically), for
    /// node_exporter's textfile collector. Config: metricsFile.
    #[arg(long, value_name = "FILE", value_parser = super::path_flag, conflicts_with = "check")]
    pub metrics_file: Option<PathBuf>,

    #[command(flatten)]
    pub cache: super::watch::CacheArgs,

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

    #[command(flatten)]
    pub admission: AdmissionFlags,

    /// After changing kube-apiserver.yaml, wait for its /livez and restore the
    /// backup if it never answers healthy.
    #[arg(long, help_heading = "Health gate")]
    pub wait_healthy: bool,

    #[command(flatten)]
    pub health: HealthFlags,

    /// Manifest files or directories [default: the configured manifestDir].
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

pub async fn run(args: PinArgs) -> u8 {
    // Flags that override config keys are validated with them.
    let mut flags = config::Fragment::default();
    flags.backup_dir = args.backup_dir.clone();
    flags.digest_only = args.digest_only.then_some(true);
    flags.update = args.update.then_some(true);
    flags.metrics_file = args.metrics_file.clone();
    args.policy.apply(&mut flags);
    args.cache.fragment(&mut flags);
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
    // --check must work with no network, no credentials and no lock.
    if mode == Mode::Check {
        return finish(&pass::check_with(&paths, &cfg.policy), args.output);
    }
    let options = match options(&args, &cfg, mode) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let settings = match args.registry.settings(&cfg) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let store = BackupStore::new(cfg.backup_dir.clone());
    let options = pass::Options {
        concurrency: settings.concurrency,
        ..options
    };
    let http = HttpResolver::new(settings);
    let cache = DigestCache::load(&cfg.state_dir);
    let resolver = CachingResolver::new(&http, &cache, cfg.offline);
    let started = Instant::now();
    let result = pass::run_once(&paths, &options, &resolver, Some(&store)).await;
    // A dry run leaves every file as it was, the cache included.
    if mode == Mode::Apply {
        if let Err(e) = cache.save() {
            tracing::warn!("{}: {e}", cache.path().display());
        }
    }
    let hits = resolver.take_hits();
    match result {
        Ok(report) => {
            let metrics_ok = match &cfg.metrics_file {
                Some(file) => write_metrics(file, &report, &options, started),
                None => true,
            };
            let code = finish(&report, args.output);
            for hit in hits {
                match args.output {
                    OutputFormat::Text => println!("  {hit}"),
                    OutputFormat::Json => eprintln!("staticpin: {hit}"),
                }
            }
            if metrics_ok {
                code
            } else {
                EXIT_FAILED
            }
        }
        Err(e) => fail(e),
    }
}

/// Flags over config, validated before anything is read or resolved.
fn options(args: &PinArgs, cfg: &config::Settings, mode: Mode) -> Result<pass::Options, String> {
    let admission = args.admission.request(cfg);
    let health = args.health.gate(args.wait_healthy)?;
    Ok(pass::Options {
        mode,
        digest_only: cfg.digest_only,
        concurrency: cfg.concurrency,
        admission,
        health,
        lock: args.lock.settings(cfg),
        keep_backups: cfg.keep_backups as usize,
        policy: cfg.policy.clone(),
        update: cfg.update,
        stop: pass::Stop::default(),
    })
}

/// The metrics file after a pass; the counters are this run's (see
/// [`pass::metrics`]). A failure to write it fails the run, as a stale file
/// would hide the state from monitoring.
fn write_metrics(
    file: &std::path::Path,
    report: &Report,
    options: &pass::Options,
    started: Instant,
) -> bool {
    let mut counters = Counters::default();
    counters.record(report);
    let m = Metrics::from_report(
        report,
        options.admission.is_some(),
        &counters,
        SystemTime::now(),
        started.elapsed(),
    );
    match metrics::write_textfile(file, &m) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("staticpin: cannot write the metrics file: {e}");
            false
        }
    }
}

fn finish(report: &Report, output: OutputFormat) -> u8 {
    match output {
        OutputFormat::Text => report.print_text(),
        OutputFormat::Json => match serde_json::to_string_pretty(report) {
            Ok(json) => println!("{json}"),
            Err(e) => return fail(format!("cannot write the JSON report: {e}")),
        },
    }
    if report.has_errors() {
        EXIT_FAILED
    } else if report.mode == Mode::Check && (report.unpinned() > 0 || report.untrusted() > 0) {
        EXIT_CHECK
    } else {
        EXIT_OK
    }
}
