//! `kubeadm upgrade` in progress: kubeadm stages new manifests in a
//! `kubeadm-upgraded-manifests*` directory under its tmp dir, renames them
//! in one component at a time, and waits for each mirror pod's hash to
//! change (rolling back on its own timeout). A second restart of a
//! component in that window confuses it, so the daemon holds its writes
//! while the staging directory exists. `kubeadm-backup-manifests-*`
//! directories stay behind after an upgrade and do not count.

use std::path::Path;
use std::time::Duration;

/// The longest hold; kubeadm's own wait is 5 min per component, so a
/// directory older than this is a crashed upgrade's leftover.
pub const MAX_HOLD: Duration = Duration::from_secs(15 * 60);

const STAGING_PREFIX: &str = "kubeadm-upgraded-manifests";

/// Whether an upgrade is running, judging by `tmp_dir`. A missing or
/// unreadable tmp dir means no.
pub fn in_progress(tmp_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(tmp_dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name()
            .as_encoded_bytes()
            .starts_with(STAGING_PREFIX.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_staging_directory_counts() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!in_progress(&dir.path().join("missing")));
        std::fs::create_dir(
            dir.path()
                .join("kubeadm-backup-manifests-2026-01-01-00-00-00"),
        )
        .unwrap();
        assert!(!in_progress(dir.path()));
        std::fs::create_dir(dir.path().join("kubeadm-upgraded-manifests123")).unwrap();
        assert!(in_progress(dir.path()));
    }
}
