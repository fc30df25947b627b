//! `staticpin watch [DIR]`: the daemon's flags, mirroring `pin`'s, and the
//! digest-cache flags `pin` shares.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::pin::{AdmissionFlags, HealthFlags, LockArgs};
use super::RegistryArgs;
use crate::config;
use crate::pass::{self, Mode};
use crate::watch::{self, Setup};

/// The digest cache, for `pin` and `watch`.
#[derive(Debug, Clone, Default, Args)]
pub struct CacheArgs {
    #[arg(long, value_name = "DIR", value_parser = super::path_flag, help = format!(
        "State directory holding the digest cache (digests.json) [default: {}]. Config: stateDir",
        config::DEFAULT_STATE_DIR
    ))]
    pub state_dir: Option<PathBuf>,

    /// Ask no registry: pin only tags the digest cache has seen. Config: offline.
    #[arg(long)]
    pub offline: bool,
}

impl CacheArgs {
    pub fn fragment(&self, f: &mut config::Fragment) {
        f.state_dir = self.state_dir.clone();
        f.offline = self.offline.then_some(true);
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogTarget {
    /// journald when systemd connected stderr to the journal, else stderr.
    #[default]
    Auto,
    Journald,
    /// The local syslog socket, facility daemon, ident staticpin.
    Syslog,
    Stderr,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub lock: LockArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    /// Write `name@sha256:…` instead of `name:tag@sha256:…`.
    #[arg(long)]
    pub digest_only: bool,

    /// Where originals are saved before each change [default: /var/lib/staticpin/backups].
    #[arg(long, value_name = "DIR", value_parser = super::path_flag)]
    pub backup_dir: Option<PathBuf>,

    #[arg(long, value_name = "DURATION", value_parser = config::duration::parse, help = format!(
        "Quiet time after file events before a pass [default: {}ms]. Config: debounce",
        config::DEFAULT_DEBOUNCE.as_millis()
    ))]
    pub debounce: Option<Duration>,

    #[arg(long, value_name = "DURATION", value_parser = config::duration::parse, help = format!(
        "Full pass this often, catching anything missed [default: {}]. Config: resync",
        super::show(config::DEFAULT_RESYNC)
    ))]
    pub resync: Option<Duration>,

    #[arg(long, value_name = "DIR", value_parser = super::path_flag, help = format!(
        "kubeadm's tmp dir; a kubeadm-upgraded-manifests* directory there holds all writes \
         [default: {}]. Config: kubeadmTmpDir",
        config::DEFAULT_KUBEADM_TMP_DIR
    ))]
    pub kubeadm_tmp_dir: Option<PathBuf>,

    #[command(flatten)]
    pub admission: AdmissionFlags,

    /// Do not gate kube-apiserver.yaml changes on its health (config
    /// `healthGate: false`); for test benches without an apiserver.
    #[arg(long, help_heading = "Health gate")]
    pub no_health_gate: bool,

    #[command(flatten)]
    pub health: HealthFlags,

    /// Where logs go.
    #[arg(long, value_enum, default_value = "auto", help_heading = "Logging")]
    pub log_target: LogTarget,

    /// Log level or filter (error, warn, info, debug, trace) [default: info;
    /// STATICPIN_LOG when this is not given].
    #[arg(long, value_name = "LEVEL", help_heading = "Logging")]
    pub log_level: Option<String>,

    /// The manifest directory [default: the configured manifestDir].
    #[arg(value_name = "DIR", value_parser = super::path_flag)]
    pub dir: Option<PathBuf>,
}

impl WatchArgs {
    /// Config files with these flags over them, into everything a pass needs.
    fn setup(&self) -> Result<Setup, String> {
        let mut flags = config::Fragment::default();
        flags.backup_dir = self.backup_dir.clone();
        flags.manifest_dir = self.dir.clone();
        flags.digest_only = self.digest_only.then_some(true);
        flags.debounce = self.debounce;
        flags.resync = self.resync;
        flags.kubeadm_tmp_dir = self.kubeadm_tmp_dir.clone();
        flags.health_gate = self.no_health_gate.then_some(false);
        self.cache.fragment(&mut flags);
        let settings = self.registry.load_config_with(flags)?;
        let registry = self.registry.settings(&settings)?;
        let admission = self.admission.request(&settings);
        let health = self.health.gate(settings.health_gate)?;
        let options = pass::Options {
            mode: Mode::Apply,
            digest_only: settings.digest_only,
            concurrency: registry.concurrency,
            admission,
            health,
            lock: self.lock.settings(&settings),
            keep_backups: settings.keep_backups as usize,
            policy: settings.policy.clone(),
            update: settings.update,
            // The daemon sets its own on each pass.
            stop: pass::Stop::default(),
        };
        Ok(Setup {
            settings,
            registry,
            options,
        })
    }
}

/// A bad config at start exits 2; on SIGHUP the old one is kept instead.
pub async fn run(args: WatchArgs) -> u8 {
    watch::run(Box::new(move || args.setup())).await
}
