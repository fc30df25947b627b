//! `staticpin rollback [PATH]`: put the newest backups back, atomically.

use std::path::PathBuf;

use clap::Args;

use super::{fail, load_config, EXIT_FAILED, EXIT_OK};
use crate::backup::BackupStore;

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub config: super::ConfigFlag,

    /// Where backups were saved [default: /var/lib/staticpin/backups].
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,

    /// Restore only this manifest, or the manifests under this directory [default: all].
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
}

pub fn run(args: RollbackArgs) -> u8 {
    let cfg = match load_config(args.config.file.as_deref()).map(|(c, _)| c) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let store = BackupStore::new(args.backup_dir.unwrap_or(cfg.backup_dir));
    let scope = args.path.map(|p| std::path::absolute(&p).unwrap_or(p));
    let backups = match store.latest_backups(scope.as_deref()) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if backups.is_empty() {
        return fail(match &scope {
            Some(p) => format!("no backup found for {}", p.display()),
            None => "no backups found".to_string(),
        });
    }
    let mut failed = 0;
    for (original, backup) in backups {
        match store.restore(&original, &backup) {
            Ok(_) => println!("{}: restored from {}", original.display(), backup.display()),
            Err(e) => {
                failed += 1;
                eprintln!("staticpin: {}: {e}", original.display());
            }
        }
    }
    if failed > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}
