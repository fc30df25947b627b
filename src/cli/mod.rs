//! The command line: a typed enum of subcommands, each in its own module.
//!
//! Exit codes are part of the interface that scripts rely on:
//! 0 success; 1 a check found something to act on; 2 something failed.

mod admission;
mod check_config;
mod doctor;
mod pin;
mod policy;
mod resolve;
mod rollback;
mod serve;
mod status;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::registry::Settings;
use crate::{config, credentials};

/// Exit code: everything succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code: a check found something to act on (e.g. unpinned, untrusted or
/// drifted images).
pub const EXIT_CHECK: u8 = 1;
/// Exit code: something failed, or the arguments were invalid.
pub const EXIT_FAILED: u8 = 2;

const EXIT_CODES_HELP: &str = "Exit codes:\n  0  everything succeeded\n  1  a check found unpinned images (check modes)\n  2  at least one image or file failed, or the arguments were invalid";

const PIN_EXIT_CODES_HELP: &str = "Exit codes:\n  0  every file pinned, already pinned, or skipped as not a Pod (images outside\n     policy.trustedRegistries are reported, and pinned, under policy.untrusted: warn)\n  1  --check found images that are not digest-pinned or not from a trusted registry\n  2  a file failed (an image did not resolve, a write failed, the file changed\n     while staticpin ran, policy.untrusted: deny refused an image) or was skipped\n     for an error kubelet would also hit (unparsable, an empty first document,\n     over 10 MiB), another staticpin held the lock past --lock-timeout, the metrics\n     file could not be written, or the arguments were invalid\nA failed file is left byte-for-byte as it was; the other files still proceed.";

const ROLLBACK_EXIT_CODES_HELP: &str = "Exit codes:\n  0  the run was undone, or there was nothing to undo\n  2  a file was refused or failed, the backup tree is not trusted, or the\n     arguments were invalid";

/// The parsed command line: global flags and one subcommand.
#[derive(Debug, Parser)]
#[command(name = "staticpin", version, about = "Pin Kubernetes static pod images to registry digests, on the node", after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); STATICPIN_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, one module each.
// Parsed once and moved into its subcommand; boxing would only add noise.
#[allow(clippy::large_enum_variant)]
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

    /// Serve the image policy to the node's kube-apiserver (ImagePolicyWebhook
    /// or validating webhook), on loopback, over mutual TLS.
    ///
    /// POST /imagepolicy takes an ImageReview, POST /validate an
    /// AdmissionReview; /healthz and /metrics are on a separate plain-HTTP
    /// loopback port. SIGHUP reloads the configuration (kept as it was if the
    /// new one is invalid); SIGTERM answers the requests in progress and exits.
    Serve(serve::ServeArgs),

    /// Check images against the configured policy, offline.
    Policy(policy::PolicyArgs),

    /// Every image: pinned digest, trusted or not, and whether its tag drifted.
    ///
    /// Read-only: one HEAD per unique pinned tag, nothing written. Exit 0 when
    /// every image is pinned, current and trusted, 1 when something drifted,
    /// is untrusted or unpinned, 2 when a file or a registry failed.
    Status(status::StatusArgs),
    /// Keep the node pinned and wired: the daemon systemd runs.
    ///
    /// One full pass at start, then one after every settled change in the
    /// manifest directory, plus a periodic resync. Holds off while kubeadm
    /// upgrade runs, retries unreachable registries with backoff, pins
    /// from the digest cache when a registry is down, and never re-applies
    /// a kube-apiserver change the health gate rolled back until its inputs
    /// change. SIGHUP reloads the config; SIGTERM exits 0.
    Watch(watch::WatchArgs),
}

/// Prints a one-line error for a setup problem and returns the failure code.
pub(crate) fn fail(msg: impl std::fmt::Display) -> u8 {
    eprintln!("staticpin: {msg}");
    EXIT_FAILED
}

/// How a subcommand prints its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    // `help = None`: a value's doc comment would otherwise become `--help`
    // text, turning "[possible values: text, json]" into a list.
    /// Lines for a person: one per file or image, errors on stderr.
    #[value(help = None)]
    Text,
    /// One JSON document on stdout, for scripts.
    #[value(help = None)]
    Json,
}

/// `--config FILE`: the one definition, flattened into every subcommand
/// that reads configuration.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigFlag {
    /// Read only this config file [default: /etc/staticpin/config.yaml plus
    /// /etc/staticpin/config.d/*.yaml].
    #[arg(id = "config", long = "config", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

impl ConfigFlag {
    /// The validated config, with `flags` applied over it.
    pub fn load(&self, flags: config::Fragment) -> Result<config::Settings, String> {
        let (settings, files) = load_settings(self.file.as_deref(), flags)?;
        for f in files {
            tracing::info!("read config {}", f.display());
        }
        Ok(settings)
    }
}

/// How to reach registries; shared by every subcommand that resolves.
/// Every flag overrides the same camelCase key of the config file and takes
/// exactly the values that key takes.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// `--config`, shared with every subcommand that reads configuration.
    #[command(flatten)]
    pub config: ConfigFlag,

    /// Use this docker config (config.json or .dockercfg) instead of kubelet's search path.
    #[arg(long, value_name = "FILE", value_parser = path_flag)]
    pub docker_config: Option<PathBuf>,

    /// `--kubelet-root-dir`: overrides `kubeletRootDir`.
    #[arg(long, value_name = "DIR", value_parser = path_flag, help = format!(
        "kubelet's --root-dir, whose config.json is searched first [default: {}]",
        config::DEFAULT_KUBELET_ROOT_DIR
    ))]
    pub kubelet_root_dir: Option<PathBuf>,

    /// `--certs-dir`, repeated: replaces `certsDirs` when given at all.
    #[arg(long = "certs-dir", value_name = "DIR", value_parser = path_flag, help = format!(
        "A certs directory in containerd/docker layout (<dir>/<host[:port]>/*.crt). Repeatable; \
         replaces the defaults {}",
        config::DEFAULT_CERTS_DIRS.join(" and ")
    ))]
    pub certs_dirs: Vec<PathBuf>,

    /// Skip TLS verification for HOST[:PORT] and allow plain HTTP there. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]", value_parser = registry_host_flag)]
    pub insecure_registries: Vec<String>,

    /// `--timeout`: overrides `timeout`, for one whole registry request.
    #[arg(long, value_name = "DURATION", value_parser = config::duration::parse, help = format!(
        "Time allowed for one whole request: {} [default: {}]",
        config::duration::SYNTAX,
        show(config::DEFAULT_TIMEOUT)
    ))]
    pub timeout: Option<Duration>,

    /// `--deadline`: overrides `deadline`, the whole run's registry budget.
    #[arg(long, value_name = "DURATION", value_parser = config::duration::parse, help = format!(
        "Time the whole run may spend on registries; later answers count as timeouts [default: {}]",
        show(config::DEFAULT_DEADLINE)
    ))]
    pub deadline: Option<Duration>,

    /// `--connect-timeout`: overrides `connectTimeout`.
    #[arg(long, value_name = "DURATION", value_parser = config::duration::parse, help = format!(
        "Time allowed to establish a connection [default: {}]",
        show(config::DEFAULT_CONNECT_TIMEOUT)
    ))]
    pub connect_timeout: Option<Duration>,

    /// `--retries`: overrides `retries`.
    #[arg(long, value_name = "N", help = format!(
        "Retries after the first attempt on 429, 5xx and connection failures [default: {}]",
        config::DEFAULT_RETRIES
    ))]
    pub retries: Option<u32>,

    /// `--concurrency`: overrides `concurrency`.
    #[arg(long, value_name = "N", value_parser = concurrency_flag, help = format!(
        "Registry requests in flight at once, 1 to {} [default: {}]",
        config::MAX_CONCURRENCY,
        config::DEFAULT_CONCURRENCY
    ))]
    pub concurrency: Option<usize>,
}

impl RegistryArgs {
    /// These flags as a config fragment, to merge over the files.
    pub fn fragment(&self) -> config::Fragment {
        let mut f = config::Fragment::default();
        f.docker_config = self.docker_config.clone();
        f.kubelet_root_dir = self.kubelet_root_dir.clone();
        f.certs_dirs = given(&self.certs_dirs);
        f.insecure_registries = given(&self.insecure_registries);
        f.timeout = self.timeout;
        f.deadline = self.deadline;
        f.connect_timeout = self.connect_timeout;
        f.retries = self.retries;
        // Lossless: the flag's parser kept it within MAX_CONCURRENCY.
        f.concurrency = self.concurrency.map(|n| n as u64);
        f
    }

    /// Config files, then these flags over them, validated together.
    pub fn load_config(&self) -> Result<config::Settings, String> {
        self.load_config_with(config::Fragment::default())
    }

    /// [`load_config`](Self::load_config) with a subcommand's own flags
    /// (e.g. `--backup-dir`) merged last, so they are validated too.
    pub fn load_config_with(&self, more: config::Fragment) -> Result<config::Settings, String> {
        self.config.load(self.fragment().merge(more))
    }

    /// Resolver settings from loaded settings (flags already applied), with
    /// credentials loaded the way kubelet does.
    pub fn settings(&self, cfg: &config::Settings) -> Result<Settings, String> {
        let keyring = match &cfg.docker_config {
            Some(path) => credentials::load_file(path).map_err(|e| e.to_string())?,
            None => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                let paths = credentials::search_paths(&cfg.kubelet_root_dir, home.as_deref());
                let (keyring, from) = credentials::discover(&paths);
                match from {
                    Some(p) => tracing::info!("using registry credentials from {}", p.display()),
                    None => tracing::info!("no docker config found; pulling anonymously"),
                }
                keyring
            }
        };
        Ok(Settings {
            keyring,
            certs_dirs: cfg.certs_dirs.clone(),
            insecure_registries: cfg.insecure_registries.clone(),
            connect_timeout: cfg.connect_timeout,
            request_timeout: cfg.timeout,
            max_retries: cfg.retries,
            max_retry_after: Settings::default().max_retry_after,
            concurrency: cfg.concurrency,
            deadline: cfg.deadline,
        })
    }
}

/// `--trusted-registry`, for every subcommand that judges images.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// Trust images under this registry prefix, host[:port][/path], matched at
    /// a path boundary on the normalised name. Repeatable; replaces
    /// policy.trustedRegistries.
    #[arg(long = "trusted-registry", value_name = "PREFIX", value_parser = trusted_prefix_flag)]
    pub trusted_registries: Vec<String>,
}

impl PolicyArgs {
    /// Sets `policy.trustedRegistries` in `f` when the flag was given.
    pub fn apply(&self, f: &mut config::Fragment) {
        if let Some(list) = given(&self.trusted_registries) {
            let raw = crate::policy::RawPolicy {
                trusted_registries: Some(list),
                ..Default::default()
            };
            f.policy = Some(f.policy.take().unwrap_or_default().merge(raw));
        }
    }
}

fn trusted_prefix_flag(s: &str) -> Result<String, String> {
    crate::policy::TrustedPrefix::parse(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// A repeatable flag replaces the config's list when given at all.
fn given<T: Clone>(flags: &[T]) -> Option<Vec<T>> {
    (!flags.is_empty()).then(|| flags.to_vec())
}

/// A duration as help text shows defaults: `30s`, `5m`.
pub(crate) fn show(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// A path flag: what a config key takes, except that a relative path means
/// relative to the shell's working directory, as on any command line.
pub(crate) fn path_flag(s: &str) -> Result<PathBuf, String> {
    let p = Path::new(s);
    if p.as_os_str().is_empty() {
        return config::check_path(p).map(|()| PathBuf::new());
    }
    std::path::absolute(p).map_err(|e| format!("cannot make {s:?} absolute: {e}"))
}

fn registry_host_flag(s: &str) -> Result<String, String> {
    config::check_registry_host(s).map(|()| s.to_string())
}

fn concurrency_flag(s: &str) -> Result<usize, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("expected a whole number, got {s:?}"))?;
    config::check_concurrency(n)
}

/// The config every subcommand uses: FILE alone when `--config FILE` is
/// given, else /etc/staticpin/config.yaml plus config.d; with the files read.
pub(crate) fn load_config(file: Option<&Path>) -> Result<(config::Settings, Vec<PathBuf>), String> {
    load_settings(file, config::Fragment::default())
}

/// Files (FILE alone, or the default main file plus drop-ins), then `flags`,
/// validated in one step.
fn load_settings(
    file: Option<&Path>,
    flags: config::Fragment,
) -> Result<(config::Settings, Vec<PathBuf>), String> {
    let read = match file {
        Some(f) => config::load_file(f).map(|frag| (frag, vec![f.to_path_buf()])),
        None => config::read(&config::ConfigPaths::default()),
    };
    let (fragment, files) = read.map_err(|e| e.to_string())?;
    let settings =
        config::Settings::from_fragment(fragment.merge(flags)).map_err(|e| e.to_string())?;
    Ok((settings, files))
}

/// Sets up logging for `cli`'s subcommand. One-shot commands log to stderr
/// (warn by default), without timestamps under systemd (journald adds
/// them). `watch` logs at info by default and picks its sink with
/// `--log-target`: journald natively when systemd connected stderr to the
/// journal, syslog (facility daemon, ident staticpin), or stderr. The level
/// comes from `--log-level`, else `STATICPIN_LOG`, else `-v`.
pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;

    let (target, level, default) = match &cli.command {
        Command::Watch(a) => (a.log_target, a.log_level.clone(), "info"),
        _ => (watch::LogTarget::Stderr, None, "warn"),
    };
    let by_verbose = match cli.verbose {
        0 => default,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let directive = |l: &str| {
        if l.contains('=') {
            l.to_string()
        } else {
            format!("staticpin={l}")
        }
    };
    let filter = match level {
        Some(l) => EnvFilter::try_new(directive(&l)).ok(),
        None => EnvFilter::try_from_env("STATICPIN_LOG").ok(),
    }
    .unwrap_or_else(|| EnvFilter::new(directive(by_verbose)));
    let journal = std::env::var_os("JOURNAL_STREAM");
    let sink = match target {
        watch::LogTarget::Auto if journal_is_stderr(journal.as_deref()) => {
            watch::LogTarget::Journald
        }
        watch::LogTarget::Auto => watch::LogTarget::Stderr,
        t => t,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let fallback = match sink {
        watch::LogTarget::Journald => match tracing_journald::layer() {
            Ok(layer) => {
                registry
                    .with(layer.with_syslog_identifier("staticpin".into()))
                    .init();
                return;
            }
            Err(e) => format!("cannot log to journald ({e}); logging to stderr"),
        },
        watch::LogTarget::Syslog => match syslog_layer() {
            Ok(layer) => {
                registry.with(layer).init();
                return;
            }
            Err(e) => format!("cannot log to syslog ({e}); logging to stderr"),
        },
        _ => String::new(),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    if journal.is_some() {
        registry.with(fmt.without_time().with_ansi(false)).init();
    } else {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry
            .with(fmt.with_ansi(colour(terminal, std::env::var_os("NO_COLOR"))))
            .init();
    }
    if !fallback.is_empty() {
        tracing::warn!("{fallback}");
    }
}

/// `JOURNAL_STREAM=<dev>:<ino>` names the journal stream systemd gave us;
/// a child whose stderr was redirected inherits the variable but not the
/// stream, so it counts only if stderr is that very socket.
fn journal_is_stderr(var: Option<&std::ffi::OsStr>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = var.and_then(|v| v.to_str()).and_then(|v| v.split_once(':')) else {
        return false;
    };
    match (
        dev.parse::<u64>(),
        ino.parse::<u64>(),
        std::fs::metadata("/proc/self/fd/2"),
    ) {
        (Ok(dev), Ok(ino), Ok(m)) => m.dev() == dev && m.ino() == ino,
        _ => false,
    }
}

/// Syslog through the local socket: facility daemon, ident `staticpin`.
fn syslog_layer() -> Result<SyslogLayer, String> {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "staticpin".into(),
        pid: std::process::id(),
    };
    syslog::unix(formatter)
        .map(|l| SyslogLayer(std::sync::Mutex::new(l)))
        .map_err(|e| e.to_string())
}

struct SyslogLayer(std::sync::Mutex<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>);

/// The event's message and fields as one line.
#[derive(Default)]
struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let sep = if self.0.is_empty() { "" } else { " " };
        let _ = if field.name() == "message" {
            write!(self.0, "{sep}{value:?}")
        } else {
            write!(self.0, "{sep}{}={value:?}", field.name())
        };
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SyslogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut line = Line::default();
        event.record(&mut line);
        let Ok(mut logger) = self.0.lock() else {
            return;
        };
        let sent = match *event.metadata().level() {
            tracing::Level::ERROR => logger.err(line.0),
            tracing::Level::WARN => logger.warning(line.0),
            tracing::Level::INFO => logger.info(line.0),
            _ => logger.debug(line.0),
        };
        // Nowhere left to report a failed log line.
        drop(sent);
    }
}

/// Colour only for a person at a terminal, and never when `NO_COLOR` is set
/// to anything non-empty (no-color.org); pipes and files get plain text.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Runs the subcommand on a single-threaded runtime (`serve` builds its own)
/// and returns its exit code.
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
        // Its own multi-threaded runtime; this one stays idle.
        Command::Serve(args) => serve::run(args),
        Command::Policy(args) => policy::run(args),
        Command::Status(args) => runtime.block_on(status::run(args)),
        Command::Watch(args) => runtime.block_on(watch::run(args)),
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

    /// Help text written as prose must still state the defaults that apply.
    #[test]
    fn help_states_the_defaults() {
        let mut cli = Cli::command();
        let mut help = |sub: &str| {
            cli.find_subcommand_mut(sub)
                .unwrap_or_else(|| panic!("no subcommand {sub}"))
                .render_long_help()
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let pin = help("pin");
        for want in [
            config::DEFAULT_MANIFEST_DIR,
            config::DEFAULT_BACKUP_DIR,
            config::DEFAULT_CONFIG_FILE,
            config::DEFAULT_KUBELET_ROOT_DIR,
            config::DEFAULT_CERTS_DIRS[0],
            config::DEFAULT_CERTS_DIRS[1],
            "[default: 30s]",
            "[default: 10s]",
            "[default: 5m]",
            "[default: 25s]",
            "1 to 256 [default: 8]",
        ] {
            assert!(pin.contains(want), "pin --help lacks {want:?}:\n{pin}");
        }
        assert!(help("check-config").contains(config::DEFAULT_CONFIG_FILE));
        let rollback = help("rollback");
        assert!(rollback.contains(config::DEFAULT_BACKUP_DIR), "{rollback}");
        assert_eq!(show(config::DEFAULT_TIMEOUT), "30s");
        assert_eq!(show(config::DEFAULT_HEALTH_TIMEOUT), "5m");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
        assert!(!colour(false, Some("".into())));
    }
}
