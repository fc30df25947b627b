//! Build-time generator for the Debian package's man pages and shell
//! completions, written from the CLI definition so that every subcommand,
//! flag and default in them is the one the binary has. Not shipped: it is a
//! cargo example (`cargo run --example staticpin-gen -- DIR`), so
//! `clap_mangen` and `clap_complete` stay dev-dependencies.
//!
//! Writes DIR/man/staticpin.8, DIR/man/staticpin-<sub>[-<sub>].8 for every
//! visible subcommand, and DIR/completions/{staticpin,_staticpin,staticpin.fish}.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};
use clap_complete::Shell;

// staticpin edits /etc/kubernetes as root on control-plane nodes: a system
// administration command, so section 8 (lintian accepts it for /usr/bin).
const SECTION: &str = "8";

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: staticpin-gen DIR");
        return ExitCode::from(2);
    };
    match generate(&dir) {
        Ok(n) => {
            println!("staticpin-gen: wrote {n} files under {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("staticpin-gen: {e}");
            ExitCode::from(2)
        }
    }
}

fn generate(dir: &Path) -> Result<usize, String> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    // Stale pages of a removed subcommand must not be packaged.
    for d in [&man, &completions] {
        if d.exists() {
            fs::remove_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }

    let mut cmd = staticpin::cli::Cli::command();
    // Computes every subcommand's display name (staticpin-pin) and bin name
    // (staticpin pin), which the pages use as title and synopsis.
    cmd.build();
    let mut written = 0;
    write_pages(&cmd, &man, &mut written)?;

    for (shell, name) in [
        (Shell::Bash, "staticpin"),
        (Shell::Zsh, "_staticpin"),
        (Shell::Fish, "staticpin.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "staticpin", &mut out);
        write(&completions.join(name), &out)?;
        written += 1;
    }
    Ok(written)
}

fn write_pages(cmd: &Command, dir: &Path, written: &mut usize) -> Result<(), String> {
    let title = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(title.clone())
        .section(SECTION)
        // Subcommands carry no version of their own; every page names the release.
        .source(concat!("staticpin ", env!("CARGO_PKG_VERSION")))
        .render(&mut page)
        .map_err(|e| format!("rendering {title}: {e}"))?;
    write(&dir.join(format!("{title}.{SECTION}")), &page)?;
    *written += 1;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
