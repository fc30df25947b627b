//! The `staticpin` binary: parse arguments, set up logging, run, exit.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = staticpin::cli::Cli::parse();
    staticpin::cli::init_logging(&cli);
    staticpin::cli::run(cli)
}
