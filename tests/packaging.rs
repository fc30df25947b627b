//! The Debian package's shipped files that a source change could silently
//! make stale: the conffile /etc/staticpin/config.yaml (packaging/config.yaml)
//! must list every setting of examples/config.yaml, commented out, and set
//! none. The package itself is tested by packaging/test-deb.sh.

use std::path::Path;
use std::process::Command;

const EXAMPLE: &str = include_str!("../examples/config.yaml");
const CONFFILE: &str = include_str!("../packaging/config.yaml");

fn is_setting(line: &str) -> bool {
    !line.trim().is_empty() && !line.trim_start().starts_with('#')
}

#[test]
fn conffile_lists_every_example_setting_commented_in_order() {
    let mut rest = CONFFILE;
    for line in EXAMPLE.lines().filter(|l| is_setting(l)) {
        let want = format!("\n# {line}\n");
        match rest.find(&want) {
            // Order matters: a key's comment block precedes it in the example.
            Some(at) => rest = &rest[at + want.len() - 1..],
            None => panic!(
                "packaging/config.yaml lacks {:?} (in the order of examples/config.yaml); \
                 every setting must appear there commented out with its default",
                want.trim()
            ),
        }
    }
}

#[test]
fn conffile_sets_nothing() {
    let active: Vec<&str> = CONFFILE.lines().filter(|l| is_setting(l)).collect();
    assert!(active.is_empty(), "packaging/config.yaml sets {active:?}");
}

#[test]
fn conffile_passes_check_config() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/config.yaml"
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_staticpin"))
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
