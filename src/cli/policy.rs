//! `staticpin policy check IMAGE…`: the webhook's verdict on each image,
//! offline, from the configured `policy:` — for operators and CI pipelines.

use clap::{Args, Subcommand};

use super::{ConfigFlag, EXIT_CHECK, EXIT_FAILED, EXIT_OK};
use crate::policy::{evaluate_str, Rule};

const CHECK_EXIT_CODES_HELP: &str = "Exit codes:\n  0  every image is allowed\n  1  at least one image is denied by the policy\n  2  an argument is not an image reference, or the configuration is invalid";

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the policy's verdict on each image, with the reason; asks no registry.
    ///
    /// One line per image, in order: `allow` or `deny`, the image, and why
    /// (the rule code in brackets for a denial). Namespace exemptions and
    /// break-glass are properties of a pod, not of an image, so they do not
    /// apply here.
    #[command(after_help = CHECK_EXIT_CODES_HELP)]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigFlag,

    /// Image references, as written in a pod spec.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

pub fn run(args: PolicyArgs) -> u8 {
    match args.command {
        PolicyCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> u8 {
    let settings = match args.config.load(crate::config::Fragment::default()) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    let mut code = EXIT_OK;
    for image in &args.images {
        let verdict = evaluate_str(image, &settings.policy);
        let message = verdict.message();
        match verdict.reason() {
            None => println!("allow  {}  {message}", crate::policy::bounded(image, 600)),
            Some(rule) => {
                println!(
                    "deny   {}  [{}] {message}",
                    crate::policy::bounded(image, 600),
                    rule.code()
                );
                code = code.max(if rule == Rule::InvalidReference {
                    EXIT_FAILED
                } else {
                    EXIT_CHECK
                });
            }
        }
    }
    code
}
