//! `systemd-analyze` checks shared by the two units' tests: `verify` on a
//! copy whose ExecStart points at the binary under test, and the offline
//! security exposure score.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use super::node::BIN;

/// Whether `systemd-analyze` is here. Without it `test` prints SKIPPED,
/// which is allowed only outside CI.
pub fn have_analyze(test: &str) -> bool {
    if super::have_tool("systemd-analyze") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none_or(|v| v.is_empty()),
        "systemd-analyze is required when CI is set"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: systemd-analyze not found"
    );
    false
}

/// `systemd-analyze verify` passes silently. verify also checks that
/// ExecStart's binary exists, so only that path is pointed at the binary
/// under test; every other line is verified as shipped.
pub fn verify(unit: &Path) {
    let text = std::fs::read_to_string(unit).unwrap();
    assert_eq!(text.matches("/usr/bin/staticpin ").count(), 1);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(unit.file_name().unwrap());
    std::fs::write(
        &copy,
        text.replace("/usr/bin/staticpin ", &format!("{BIN} ")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "verify: {stderr}"
    );
}

/// `systemd-analyze security --offline=true`'s overall exposure for the
/// unit, and its whole report for messages.
pub fn exposure(unit: &Path) -> (f64, String) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let marker = format!(
        "Overall exposure level for {}: ",
        unit.file_name().unwrap().to_string_lossy()
    );
    let score = stdout
        .lines()
        .find_map(|l| l.split(marker.as_str()).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{stdout}"));
    (score, stdout)
}
