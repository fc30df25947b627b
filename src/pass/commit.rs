//! Committing one planned file: back up the bytes the plan was made from,
//! then a compare-and-swap write that lands only if the file still holds
//! exactly those bytes. A write that does not happen is withdrawn from the
//! run's record, so the backup tree only ever lists changes that were made.

use std::path::PathBuf;

use super::plan::{Loaded, Plan};
use super::report::FileError;
use crate::backup::{BackupRun, Change};
use crate::fsutil::{self, FsError, Step, WriteOutcome};

/// What a successful commit did.
#[derive(Debug)]
pub struct Committed {
    /// The backup of the bytes the plan was made from.
    pub backup: PathBuf,
    /// The file already held the new bytes (nothing was written).
    pub unchanged: bool,
}

/// Writes `plan` over `l.path`. The backup goes first, so a crash after the
/// rename still leaves the old bytes recoverable.
pub fn commit(l: &Loaded, plan: &Plan, run: &mut BackupRun) -> Result<Committed, FileError> {
    let change = Change {
        before: l.text.as_bytes(),
        after: plan.new_text.as_bytes(),
        images: plan.image_changes(),
        wired: plan.wired,
    };
    let backup = run.save(&l.path, &change).map_err(FileError::Backup)?;
    let written = fsutil::atomic_replace_if(&l.path, change.before, change.after);
    let error = match written {
        Ok(outcome) => {
            return Ok(Committed {
                backup,
                unchanged: outcome == WriteOutcome::Unchanged,
            })
        }
        // The rename happened; only its durability is in doubt, so the
        // record of the change must stay.
        Err(e) if e.step() == Some(Step::FsyncDirOf) => return Err(FileError::Write(e)),
        Err(FsError::Changed { .. }) => FileError::Changed,
        Err(e) => FileError::Write(e),
    };
    if let Err(e) = run.withdraw(&backup) {
        tracing::warn!(
            "{}: could not withdraw the backup of a write that did not happen: {e}",
            l.path.display()
        );
    }
    Err(error)
}
