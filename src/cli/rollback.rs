//! `staticpin rollback`: undo the last run that changed something (or
//! `--run ID`), never a change made after it; `--list` shows the runs.

use std::path::PathBuf;

use clap::Args;

use super::pin::LockArgs;
use super::{fail, load_config, EXIT_FAILED, EXIT_OK};
use crate::backup::undo::{FileUndo, RunInfo, Scope, UndoRequest};
use crate::backup::BackupStore;
use crate::pass::RunLock;

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub config: super::ConfigFlag,

    /// Where runs were recorded [default: /var/lib/staticpin/backups].
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,

    /// List the recorded runs (time, files, images) and change nothing.
    #[arg(long, conflicts_with_all = ["run", "force"])]
    pub list: bool,

    /// Undo this run (a name from --list) instead of the last one.
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,

    /// Restore files even if they changed since the run wrote them.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub lock: LockArgs,

    /// Restore only this manifest, or the manifests under this directory
    /// [default: the run's files inside the configured manifestDir].
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
}

pub fn run(args: RollbackArgs) -> u8 {
    let cfg = match load_config(args.config.file.as_deref()).map(|(c, _)| c) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let store = BackupStore::new(args.backup_dir.clone().unwrap_or(cfg.backup_dir.clone()));
    if args.list {
        return match store.list() {
            Ok(runs) => {
                print_list(&store, &runs);
                EXIT_OK
            }
            Err(e) => fail(e),
        };
    }
    let lock = args.lock.settings(&cfg);
    let _lock = match RunLock::acquire_blocking(&lock) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let scope = match &args.path {
        Some(p) => Scope::Only(std::path::absolute(p).unwrap_or(p.clone())),
        None => Scope::Confined(cfg.manifest_dir.clone()),
    };
    let req = UndoRequest {
        run: args.run.clone(),
        scope,
        force: args.force,
    };
    let undone = match store.undo(&req) {
        Ok(Some(u)) => u,
        Ok(None) => {
            println!(
                "nothing to undo: no run in {} has changes left to undo{}",
                store.root().display(),
                match &args.path {
                    Some(p) => format!(" for {}", p.display()),
                    None => String::new(),
                }
            );
            return EXIT_OK;
        }
        Err(e) => return fail(e),
    };
    let mut failed = 0;
    for (path, outcome) in &undone.files {
        let path = path.display();
        match outcome {
            FileUndo::Restored { backup, forced } => println!(
                "{path}: restored from {}{}",
                backup.display(),
                if *forced { " (forced)" } else { "" }
            ),
            FileUndo::AlreadyAsBefore => {
                println!("{path}: already as before run {}", undone.run)
            }
            FileUndo::Refused(why) => {
                failed += 1;
                println!("{path}: not restored");
                eprintln!("staticpin: {path}: {why}");
            }
        }
    }
    println!(
        "run {}: {} restored, {failed} refused",
        undone.run,
        undone.files.len() - failed
    );
    if failed > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

fn print_list(store: &BackupStore, runs: &[RunInfo]) {
    if runs.is_empty() {
        println!("no runs recorded in {}", store.root().display());
        return;
    }
    for run in runs {
        let state = if run.undone { "  (undone)" } else { "" };
        println!("{}{state}", run.name);
        for f in &run.files {
            let restored = if f.restored && !run.undone {
                "  (restored)"
            } else {
                ""
            };
            println!("  {}{restored}", f.original.display());
            for i in &f.images {
                println!("    {} -> {}", i.from, i.to);
            }
            if f.wired {
                println!("    admission wiring");
            }
        }
    }
}
