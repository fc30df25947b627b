//! The command line: a typed enum of subcommands, each in its own module.
//!
//! Exit codes are part of the interface that scripts rely on:
//! 0 success; 1 a check found something to act on; 2 something failed.

mod admission;
mod check_config;
mod doctor;
mod pin;
mod resolve;
mod rollback;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::registry::Settings;
use crate::{config, credentials};

pub const EXIT_OK: u8 = 0;
pub const EXIT_CHECK: u8 = 1;
pub const EXIT_FAILED: u8 = 2;

const EXIT_CODES_HELP: &str = "Exit codes:\n  0  everything succeeded\n  1  a check found unpinned images (check modes)\n  2  at least one image or file failed, or the arguments were invalid";

const PIN_EXIT_CODES_HELP: &str = "Exit codes:\n  0  every file pinned, already pinned, or skipped as not a Pod\n  1  --check found images that are not digest-pinned\n  2  a file failed (an image did not resolve, a write failed, the file changed\n     while staticpin ran) or was skipped for an error kubelet would also hit\n     (unparsable, several documents, over 10 MiB), another staticpin held the\n     lock past --lock-timeout, or the arguments were invalid\nA failed file is left byte-for-byte as it was; the other files still proceed.";

const ROLLBACK_EXIT_CODES_HELP: &str = "Exit codes:\n  0  the run was undone, or there was nothing to undo\n  2  a file was refused or failed, the backup tree is not trusted, or the\n     arguments were invalid";

#[derive(Debug, Parser)]
#[command(name = "staticpin", version, about = "Pin Kubernetes static pod images to registry digests, on the node", after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); STATICPIN_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve image references to digests, as the node's runtime would pull them.
    ///
    /// Prints one line per argument, in order: the reference as given with
    /// `@sha256:…` appended. A reference that already has a digest is printed
    /// unchanged without asking any registry.
    #[command(after_help = EXIT_CODES_HELP)]
    Resolve(resolve::ResolveArgs),

    /// Pin every image in static pod manifests to its digest, in place.
    ///
    /// PATH is a manifest file or directory [default: the configured manifestDir,
    /// /etc/kubernetes/manifests]. Only the image values change, byte for byte;
    /// each changed file is backed up outside the manifest directory first and
    /// replaced atomically.
    #[command(after_help = PIN_EXIT_CODES_HELP)]
    Pin(pin::PinArgs),

    /// Undo the last run that changed something, never a later change.
    ///
    /// A file is restored only if it still holds exactly what that run wrote;
    /// otherwise it is refused with the reason (unless --force). --list shows
    /// the recorded runs, --run ID undoes an earlier one.
    #[command(after_help = ROLLBACK_EXIT_CODES_HELP)]
    Rollback(rollback::RollbackArgs),

    /// Validate a config file (default: /etc/staticpin/config.yaml plus config.d).
    CheckConfig(check_config::CheckConfigArgs),

    /// Read-only health report: config, pinning, admission files and wiring.
    ///
    /// Prints a PASS/WARN/FAIL table. Exit 0 when everything passes, 1 when
    /// something needs attention (e.g. unpinned images), 2 when something is broken.
    Doctor(doctor::DoctorArgs),

    /// Set up the ImagePolicyWebhook admission plugin's files.
    Admission(admission::AdmissionArgs),
}

/// Prints a one-line error for a setup problem and returns the failure code.
pub(crate) fn fail(msg: impl std::fmt::Display) -> u8 {
    eprintln!("staticpin: {msg}");
    EXIT_FAILED
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// How to reach registries; shared by every subcommand that resolves.
/// Every flag overrides the same camelCase key of the config file.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Config file [default: /etc/staticpin/config.yaml plus /etc/staticpin/config.d/*.yaml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Use this docker config (config.json or .dockercfg) instead of kubelet's search path.
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,

    /// kubelet's --root-dir, whose config.json is searched first [default: /var/lib/kubelet].
    #[arg(long, value_name = "DIR")]
    pub kubelet_root_dir: Option<PathBuf>,

    /// A certs directory in containerd/docker layout (<dir>/<host[:port]>/*.crt). Repeatable;
    /// replaces the defaults /etc/containerd/certs.d and /etc/docker/certs.d.
    #[arg(long = "certs-dir", value_name = "DIR")]
    pub certs_dirs: Vec<PathBuf>,

    /// Skip TLS verification for HOST[:PORT] and allow plain HTTP there. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// Seconds allowed for one whole request [default: 30].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,

    /// Seconds the whole run may spend on registries; later answers count as timeouts [default: 300].
    #[arg(long, value_name = "SECS")]
    pub deadline: Option<f64>,

    /// Seconds allowed to establish a connection [default: 10].
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<f64>,

    /// Retries after the first attempt on 429, 5xx and connection failures [default: 3].
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Registry requests in flight at once [default: 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
}

impl RegistryArgs {
    /// The config file(s), with flags not yet applied.
    pub fn load_config(&self) -> Result<config::Settings, String> {
        let (settings, files) = load_config(self.config.as_deref())?;
        for f in files {
            tracing::info!("read config {}", f.display());
        }
        Ok(settings)
    }

    /// Resolver settings: flags over config over defaults, with credentials
    /// loaded the way kubelet does.
    pub fn settings(&self, cfg: &config::Settings) -> Result<Settings, String> {
        let docker_config = self.docker_config.as_ref().or(cfg.docker_config.as_ref());
        let keyring = match docker_config {
            Some(path) => credentials::load_file(path).map_err(|e| e.to_string())?,
            None => {
                let root = self
                    .kubelet_root_dir
                    .as_ref()
                    .unwrap_or(&cfg.kubelet_root_dir);
                let home = std::env::var_os("HOME").map(PathBuf::from);
                let paths = credentials::search_paths(root, home.as_deref());
                let (keyring, from) = credentials::discover(&paths);
                match from {
                    Some(p) => tracing::info!("using registry credentials from {}", p.display()),
                    None => tracing::info!("no docker config found; pulling anonymously"),
                }
                keyring
            }
        };
        let secs = |name: &str, flag: Option<f64>, cfg: Duration| match flag {
            None => Ok(cfg),
            Some(v) => match Duration::try_from_secs_f64(v) {
                Ok(d) if !d.is_zero() => Ok(d),
                _ => Err(format!(
                    "--{name} must be a positive number of seconds, got {v}"
                )),
            },
        };
        Ok(Settings {
            keyring,
            certs_dirs: pick(&self.certs_dirs, &cfg.certs_dirs),
            insecure_registries: pick(&self.insecure_registries, &cfg.insecure_registries),
            connect_timeout: secs("connect-timeout", self.connect_timeout, cfg.connect_timeout)?,
            request_timeout: secs("timeout", self.timeout, cfg.timeout)?,
            max_retries: self.retries.unwrap_or(cfg.retries),
            max_retry_after: Settings::default().max_retry_after,
            concurrency: self.concurrency.map_or(cfg.concurrency, usize::from),
            deadline: secs("deadline", self.deadline, cfg.deadline)?,
        })
    }
}

/// The config every subcommand uses: FILE alone when `--config FILE` is
/// given, else /etc/staticpin/config.yaml plus config.d; with the files read.
pub(crate) fn load_config(file: Option<&Path>) -> Result<(config::Settings, Vec<PathBuf>), String> {
    let loaded = match file {
        Some(f) => config::check(f).map(|s| (s, vec![f.to_path_buf()])),
        None => config::load(&config::ConfigPaths::default()),
    };
    loaded.map_err(|e| e.to_string())
}

/// Repeatable flags replace the config's list when given at all.
fn pick<T: Clone>(flags: &[T], cfg: &[T]) -> Vec<T> {
    if flags.is_empty() {
        cfg.to_vec()
    } else {
        flags.to_vec()
    }
}

/// Logs go to stderr without timestamps under systemd (journald adds them).
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STATICPIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("staticpin={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}

pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("staticpin: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = match cli.command {
        Command::Resolve(args) => runtime.block_on(resolve::run(args)),
        Command::Pin(args) => runtime.block_on(pin::run(args)),
        Command::Rollback(args) => rollback::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Doctor(args) => runtime.block_on(doctor::run(args)),
        Command::Admission(args) => admission::run(args),
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
