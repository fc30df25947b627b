//! `staticpin check-config [FILE]`: validate configuration without acting on it.

use std::path::PathBuf;

use clap::Args;

use super::{fail, EXIT_OK};
use crate::config;

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The file to check [default: /etc/staticpin/config.yaml plus config.d/*.yaml].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

pub fn run(args: CheckConfigArgs) -> u8 {
    let result = match &args.file {
        Some(f) => config::check(f).map(|_| vec![f.clone()]),
        None => config::load(&config::ConfigPaths::default()).map(|(_, files)| files),
    };
    match result {
        Ok(files) if files.is_empty() => {
            println!("no config files; built-in defaults apply");
            EXIT_OK
        }
        Ok(files) => {
            for f in files {
                println!("{}: ok", f.display());
            }
            EXIT_OK
        }
        Err(e) => fail(e),
    }
}
