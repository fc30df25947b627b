//! The health gate's memory (`<stateDir>/gate-memory.json`): a change to
//! kube-apiserver.yaml that never became healthy and was rolled back is
//! remembered as (file, hash before, hash after, inputs), and the daemon
//! leaves that file alone while the file still holds the "before" bytes and
//! the inputs (config and admission files) are the same. Without it, every
//! resync would restart the apiserver into the same failure: a flapping
//! control plane.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fsutil;

/// The memory file inside the state directory.
pub const MEMORY_FILE: &str = "gate-memory.json";

/// One refused change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// The manifest the change was made to.
    pub file: PathBuf,
    /// sha256 of the text restored by the rollback.
    pub before: String,
    /// sha256 of the text that failed the gate.
    pub after: String,
    /// Fingerprint of the config and the admission files at the time.
    pub inputs: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// Why the gate failed it, for the log and the operator.
    pub reason: String,
}

/// The remembered refusals, loaded from and saved to
/// `<stateDir>/gate-memory.json`.
#[derive(Debug)]
pub struct GateMemory {
    path: PathBuf,
    entries: Vec<Refused>,
}

/// Lowercase hex SHA-256 of `bytes`: how files and inputs are fingerprinted
/// here.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl GateMemory {
    /// Reads the memory; a missing or damaged file remembers nothing.
    pub fn load(state_dir: &Path) -> GateMemory {
        let path = state_dir.join(MEMORY_FILE);
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        GateMemory { path, entries }
    }

    /// Every change remembered, as last loaded or updated.
    pub fn entries(&self) -> &[Refused] {
        &self.entries
    }

    /// Records a refused change, replacing any earlier one for the same file,
    /// and saves at once.
    pub fn remember(&mut self, r: Refused) {
        self.entries.retain(|e| e.file != r.file);
        self.entries.push(r);
        self.save();
    }

    /// Files to leave out of the next pass. An entry whose file or inputs
    /// changed is forgotten: that change may well be the fix.
    pub fn blocked(&mut self, inputs: &str) -> Vec<Refused> {
        let before = self.entries.len();
        self.entries.retain(|e| {
            let current = std::fs::read(&e.file).map(|b| sha256_hex(&b));
            let same = current.is_ok_and(|h| h == e.before) && e.inputs == inputs;
            if !same {
                tracing::info!(
                    "{}: the manifest, config or admission files changed since the health gate \
                     rolled back a change; trying again",
                    e.file.display()
                );
            }
            same
        });
        if self.entries.len() != before {
            self.save();
        }
        self.entries.clone()
    }

    fn save(&self) {
        let write = || -> Result<(), String> {
            if let Some(dir) = self.path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| e.to_string())?;
            }
            let json = serde_json::to_vec_pretty(&self.entries).map_err(|e| e.to_string())?;
            fsutil::write_file_atomically(&self.path, &json, 0o600).map_err(|e| e.to_string())
        };
        if let Err(e) = write() {
            tracing::warn!(
                "{}: cannot save the health-gate memory: {e}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_when_the_file_or_inputs_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kube-apiserver.yaml");
        std::fs::write(&file, "before").unwrap();
        let refused = || Refused {
            file: file.clone(),
            before: sha256_hex(b"before"),
            after: sha256_hex(b"after"),
            inputs: "i1".into(),
            at: "t".into(),
            reason: "unhealthy".into(),
        };
        let mut m = GateMemory::load(dir.path());
        m.remember(refused());
        let mut m = GateMemory::load(dir.path());
        assert_eq!(m.blocked("i1").len(), 1, "survives a restart");
        assert!(m.blocked("i2").is_empty(), "inputs changed");
        m.remember(refused());
        std::fs::write(&file, "edited").unwrap();
        assert!(m.blocked("i1").is_empty(), "manifest changed");
    }
}
