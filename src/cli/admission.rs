//! `staticpin admission …`: set up the files for the ImagePolicyWebhook
//! admission plugin. Wiring them into kube-apiserver.yaml is `pin`'s job.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{fail, EXIT_FAILED, EXIT_OK};
use crate::admission::init::{self, InitError, InitOptions, InitReport, LocalOptions};
use crate::admission::preflight::Level;

const INIT_EXIT_CODES_HELP: &str = "Exit codes:\n  0  the files are in place and pass preflight\n  2  an input was refused (nothing written), a write failed, or the written\n     files fail preflight (kube-apiserver must not be pointed at them)";

#[derive(Debug, Args)]
pub struct AdmissionArgs {
    #[command(subcommand)]
    pub command: AdmissionCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdmissionCommand {
    /// Write an ImagePolicyWebhook admission config and webhook kubeconfig.
    ///
    /// Renders DIR/admission_config.yaml (an AdmissionConfiguration with the
    /// imagePolicy settings embedded) and DIR/kubeconf, and copies the CA,
    /// client certificate and key into DIR, so that mounting DIR alone gives
    /// kube-apiserver every file it reads. Existing files that differ are only
    /// replaced with --force. The result is checked as `pin` would check it
    /// before touching kube-apiserver.yaml.
    #[command(after_help = INIT_EXIT_CODES_HELP)]
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The webhook backend; kube-apiserver POSTs ImageReviews to exactly this URL.
    #[arg(
        long,
        value_name = "https://HOST[:PORT]/PATH",
        required_unless_present = "local_webhook"
    )]
    pub webhook_url: Option<String>,

    /// PEM CA bundle that verifies the backend's serving certificate.
    #[arg(long, value_name = "FILE", required_unless_present = "local_webhook")]
    pub webhook_ca: Option<PathBuf>,

    /// PEM client certificate kube-apiserver presents to the backend.
    #[arg(long, value_name = "FILE", required_unless_present = "local_webhook")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", required_unless_present = "local_webhook")]
    pub client_key: Option<PathBuf>,

    /// Set up both ends for `staticpin serve` on this node's loopback: generate
    /// a serving CA and certificate (127.0.0.1, localhost), a client CA and
    /// kube-apiserver's client certificate, and write serve's end to
    /// --serve-dir with a `serve:` drop-in. The CA keys are not kept: renew by
    /// running this again with --force.
    #[arg(long, conflicts_with_all = ["webhook_url", "webhook_ca", "client_cert", "client_key"])]
    pub local_webhook: bool,

    /// With --local-webhook: the loopback port staticpin serve listens on.
    #[arg(long, value_name = "PORT", default_value_t = init::DEFAULT_LOCAL_PORT, value_parser = clap::value_parser!(u16).range(1..), requires = "local_webhook")]
    pub port: u16,

    /// With --local-webhook: where serve's certificate, key and client CA go.
    #[arg(long, value_name = "DIR", default_value = init::DEFAULT_SERVE_DIR, requires = "local_webhook")]
    pub serve_dir: PathBuf,

    /// With --local-webhook: the drop-in that points staticpin serve at them.
    #[arg(long, value_name = "FILE", default_value = init::DEFAULT_LOCAL_DROPIN, requires = "local_webhook")]
    pub serve_config: PathBuf,

    /// Seconds to cache an allowed answer: 1-1800, 0 for kube-apiserver's default (300), -1 for none.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = init::DEFAULT_ALLOW_TTL,
        allow_negative_numbers = true
    )]
    pub allow_ttl: i64,

    /// Seconds to cache a denied answer: 1-1800, 0 for kube-apiserver's default (30), -1 for none.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = init::DEFAULT_DENY_TTL,
        allow_negative_numbers = true
    )]
    pub deny_ttl: i64,

    /// Milliseconds before retrying the backend: 1-300000, 0 for the default (500), -1 for none.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = init::DEFAULT_RETRY_BACKOFF_MS,
        allow_negative_numbers = true
    )]
    pub retry_backoff: i64,

    /// Admit every image when the backend cannot be reached (fail open).
    #[arg(long)]
    pub default_allow: bool,

    /// Directory for the files; mount it into kube-apiserver.
    #[arg(long, value_name = "DIR", default_value = init::DEFAULT_DIR)]
    pub dir: PathBuf,

    /// kubelet's static pod directory; --dir must not be in it.
    #[arg(long, value_name = "DIR", default_value = init::DEFAULT_MANIFEST_DIR)]
    pub manifest_dir: PathBuf,

    /// Replace existing files in DIR whose contents differ.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: AdmissionArgs) -> u8 {
    match args.command {
        AdmissionCommand::Init(args) => run_init(args),
    }
}

fn run_init(args: InitArgs) -> u8 {
    let opts = InitOptions {
        webhook_url: args.webhook_url.unwrap_or_default(),
        webhook_ca: args.webhook_ca.unwrap_or_default(),
        client_cert: args.client_cert.unwrap_or_default(),
        client_key: args.client_key.unwrap_or_default(),
        allow_ttl: args.allow_ttl,
        deny_ttl: args.deny_ttl,
        retry_backoff: args.retry_backoff,
        default_allow: args.default_allow,
        dir: args.dir,
        manifest_dir: args.manifest_dir,
        force: args.force,
    };
    let result = if args.local_webhook {
        let local = LocalOptions {
            port: args.port,
            serve_dir: args.serve_dir,
            dropin: args.serve_config,
        };
        init::init_local(&opts, &local)
    } else {
        init::init(&opts)
    };
    match result {
        Ok(report) => {
            print_report(&report);
            if args.local_webhook {
                println!("next: systemctl enable --now staticpin-serve (or systemctl reload staticpin-serve)");
            }
            println!(
                "next: staticpin pin --admission-config {}",
                report.config_file.display()
            );
            EXIT_OK
        }
        Err(InitError::Preflight(report)) => {
            print_report(&report);
            eprintln!(
                "staticpin: the files in {} fail preflight; do not point kube-apiserver at them",
                report.dir.display()
            );
            EXIT_FAILED
        }
        Err(e) => fail(e),
    }
}

fn print_report(report: &InitReport) {
    for (path, outcome) in &report.files {
        println!("{outcome} {}", path.display());
    }
    for f in &report.findings {
        match f.level {
            Level::Pass => {}
            Level::Warn => eprintln!("staticpin: warning: {f}"),
            Level::Fail => eprintln!("staticpin: {f}"),
        }
    }
}
