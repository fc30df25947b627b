//! The health gate: after kube-apiserver.yaml changed, wait for the new
//! apiserver to answer healthy, and roll the change back through the
//! backup store if it never does, so a bad change cannot keep the control
//! plane down. The rollback is itself a compare-and-swap: if the file no
//! longer holds what staticpin wrote, someone acted meanwhile, and their
//! change stands.

use std::path::PathBuf;
use std::time::Duration;

use super::report::{FileError, FileReport, GateRollback, Outcome};
use super::stop::Stop;
use crate::backup::BackupRun;
use crate::fsutil::FsError;
use crate::health;

/// How to decide that a changed kube-apiserver came back.
#[derive(Clone, Debug)]
pub struct HealthGate {
    /// Default: the manifest's livenessProbe URL.
    pub url: Option<String>,
    /// An extra CA for the apiserver's certificate; `None`: system roots and
    /// the cluster CA (`/etc/kubernetes/pki/ca.crt`) if present.
    pub ca: Option<PathBuf>,
    /// How long to wait for a healthy answer, after `settle`, before rolling
    /// back.
    pub timeout: Duration,
    /// Time to let kubelet notice the change (its relist period is 20 s)
    /// before a healthy answer counts: until then the old apiserver answers.
    pub settle: Duration,
}

/// Gates every rewritten kube-apiserver manifest in `files`.
/// A `stop` while waiting rolls the change back: it was never shown to
/// work, and a stopped staticpin could not roll it back later.
pub async fn run(
    files: &mut [FileReport],
    gate: &HealthGate,
    stop: &Stop,
    mut backups: Option<&mut BackupRun>,
) {
    for f in files.iter_mut().filter(|f| f.apiserver_changed) {
        if !matches!(f.outcome, Outcome::Changed { .. }) {
            continue;
        }
        let url = match &gate.url {
            Some(u) => u.clone(),
            None => match f
                .written
                .as_deref()
                .ok_or_else(|| "nothing recorded as written".to_string())
                .and_then(|b| std::str::from_utf8(b).map_err(|e| e.to_string()))
                .and_then(health::liveness_url)
            {
                Ok(u) => u,
                Err(e) => {
                    f.outcome = Outcome::Failed(FileError::Admission(format!(
                        "cannot tell where to check apiserver health ({e}); give the health-check URL explicitly"
                    )));
                    continue;
                }
            },
        };
        let check = health::HealthCheck {
            ca: gate.ca.clone(),
            timeout: gate.timeout,
            ..health::HealthCheck::new(url)
        };
        let verdict = tokio::select! {
            v = async {
                tokio::time::sleep(gate.settle).await;
                health::wait_healthy(&check).await
            } => v,
            () = stop.wait() => {
                let rollback = roll_back(f, backups.as_deref_mut());
                f.outcome = Outcome::Failed(FileError::Interrupted { rollback });
                continue;
            }
        };
        match verdict {
            Ok(took) => f.admission.push(format!(
                "kube-apiserver healthy at {} after {:.1} s",
                check.url,
                took.as_secs_f64()
            )),
            Err(e) => {
                let rollback = roll_back(f, backups.as_deref_mut());
                f.outcome = Outcome::Failed(FileError::Unhealthy {
                    reason: e.to_string(),
                    rollback,
                });
            }
        }
    }
}

fn roll_back(f: &FileReport, backups: Option<&mut BackupRun>) -> GateRollback {
    let (Some(run), Some(backup), Some(written)) = (backups, &f.backup, &f.written) else {
        return GateRollback::Failed("no backup to restore".into());
    };
    match run.restore(backup, written) {
        Ok(_) => GateRollback::Restored(backup.clone()),
        Err(FsError::Changed { .. }) => GateRollback::ChangedMeanwhile,
        Err(e) => GateRollback::Failed(e.to_string()),
    }
}
