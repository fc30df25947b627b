//! `staticpin check-config [FILE]`: validate configuration without acting on it.

use std::path::PathBuf;

use clap::Args;

use super::{fail, load_config, EXIT_OK};

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The file to check [default: /etc/staticpin/config.yaml plus config.d/*.yaml].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

pub fn run(args: CheckConfigArgs) -> u8 {
    match load_config(args.file.as_deref()) {
        Ok((settings, files)) => {
            if files.is_empty() {
                println!("no config files; built-in defaults apply");
            }
            for f in files {
                println!("{}: ok", f.display());
            }
            if !settings.policy.has_registry_policy() {
                println!("no registry policy: policy.trustedRegistries is empty");
            }
            for line in settings.policy.summary() {
                println!("{line}");
            }
            EXIT_OK
        }
        Err(e) => fail(e),
    }
}
