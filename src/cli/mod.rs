//! The command line: a typed enum of subcommands, each in its own module.
//!
//! Exit codes are part of the interface that scripts rely on:
//! 0 success; 1 a check found something to act on; 2 something failed.

mod resolve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::credentials;
use crate::registry::Settings;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 2;

const EXIT_CODES_HELP: &str = "Exit codes:\n  0  everything succeeded\n  1  a check found unpinned images (check modes)\n  2  at least one image or file failed, or the arguments were invalid";

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// How to reach registries; shared by every subcommand that resolves.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Use this docker config (config.json or .dockercfg) instead of kubelet's search path.
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,

    /// kubelet's --root-dir; its config.json is searched first.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_root_dir: PathBuf,

    /// A certs directory in containerd/docker layout (<dir>/<host[:port]>/*.crt).
    /// Repeatable; when given, replaces the defaults /etc/containerd/certs.d and /etc/docker/certs.d.
    #[arg(long = "certs-dir", value_name = "DIR")]
    pub certs_dirs: Vec<PathBuf>,

    /// Skip TLS verification for HOST[:PORT] and allow plain HTTP there. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// Seconds allowed for one whole request.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,

    /// Seconds allowed to establish a connection.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Retries after the first attempt on 429, 5xx and connection failures.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,

    /// Registry requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
}

impl RegistryArgs {
    /// Builds resolver settings, loading credentials the way kubelet does.
    pub fn settings(&self) -> Result<Settings, String> {
        let keyring = match &self.docker_config {
            Some(path) => credentials::load_file(path).map_err(|e| e.to_string())?,
            None => {
                let cwd = std::env::current_dir().ok();
                let home = std::env::var_os("HOME").map(PathBuf::from);
                let paths = credentials::search_paths(&self.kubelet_root_dir, cwd.as_deref(), home.as_deref());
                let (keyring, from) = credentials::discover(&paths);
                match from {
                    Some(p) => tracing::info!("using registry credentials from {}", p.display()),
                    None => tracing::info!("no docker config found; pulling anonymously"),
                }
                keyring
            }
        };
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!("--{name} must be a positive number of seconds, got {v}"))
            }
        };
        let defaults = Settings::default();
        Ok(Settings {
            keyring,
            certs_dirs: if self.certs_dirs.is_empty() {
                defaults.certs_dirs
            } else {
                self.certs_dirs.clone()
            },
            insecure_registries: self.insecure_registries.clone(),
            connect_timeout: secs("connect-timeout", self.connect_timeout)?,
            request_timeout: secs("timeout", self.timeout)?,
            max_retries: self.retries,
            max_retry_after: defaults.max_retry_after,
            concurrency: self.concurrency.into(),
        })
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
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("staticpin: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = match cli.command {
        Command::Resolve(args) => runtime.block_on(resolve::run(args)),
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
