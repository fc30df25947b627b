//! `staticpin admission …`: set up the files for the ImagePolicyWebhook
//! admission plugin. Wiring them into kube-apiserver.yaml is `pin`'s job.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{fail, EXIT_FAILED, EXIT_OK};
use crate::admission::init::{self, InitError, InitOptions, InitReport};
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
    #[arg(long, value_name = "https://HOST[:PORT]/PATH")]
    pub webhook_url: String,

    /// PEM CA bundle that verifies the backend's serving certificate.
    #[arg(long, value_name = "FILE")]
    pub webhook_ca: PathBuf,

    /// PEM client certificate kube-apiserver presents to the backend.
    #[arg(long, value_name = "FILE")]
    pub client_cert: PathBuf,

    /// PEM private key of --client-cert.
    #[arg(long, value_name = "FILE")]
    pub client_key: PathBuf,

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
        webhook_url: args.webhook_url,
        webhook_ca: args.webhook_ca,
        client_cert: args.client_cert,
        client_key: args.client_key,
        allow_ttl: args.allow_ttl,
        deny_ttl: args.deny_ttl,
        retry_backoff: args.retry_backoff,
        default_allow: args.default_allow,
        dir: args.dir,
        manifest_dir: args.manifest_dir,
        force: args.force,
    };
    match init::init(&opts) {
        Ok(report) => {
            print_report(&report);
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
