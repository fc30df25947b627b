//! `staticpin rollback` undoes a run, never a later change: runs recorded
//! in the backup tree, `--list`, `--run`, refusal over files changed since,
//! confinement to the manifest directory, and trust in the backup tree.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::node::{pod, Node};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// A node with etcd and kube-scheduler manifests whose images are pushed.
fn node_with(extra_config: &str, names: &[&str]) -> (Node, Vec<PathBuf>, Vec<String>) {
    let node = Node::new(extra_config);
    let mut files = Vec::new();
    let mut texts = Vec::new();
    for name in names {
        node.push(name, "v1");
        let file = node.manifests().join(format!("{name}.yaml"));
        let text = pod(name, &format!("{}/{name}:v1", node.reg.host), "original");
        std::fs::write(&file, &text).unwrap();
        files.push(file);
        texts.push(text);
    }
    (node, files, texts)
}

#[test]
fn rollback_after_an_upgrade_is_refused_unless_forced() {
    let (node, files, originals) = node_with("", &["etcd", "kube-scheduler"]);
    let pin = node.run("pin", &[]);
    assert_eq!(pin.code, Some(0), "{pin}");
    let pinned_scheduler = read(&files[1]);

    // kubeadm upgrade rewrites etcd.yaml after the run.
    let upgraded = pod("etcd", &format!("{}/etcd:v2", node.reg.host), "upgraded");
    node.kubeadm_write(&files[0], &upgraded);

    let out = node.run("rollback", &[]);
    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(read(&files[0]), upgraded, "the upgrade is kept: {out}");
    assert_eq!(read(&files[1]), originals[1], "{out}");
    assert_ne!(pinned_scheduler, originals[1]);
    assert!(
        out.stderr.contains(&files[0].display().to_string())
            && out.stderr.contains("changed since run")
            && out.stderr.contains("--force"),
        "{out}"
    );

    let forced = node.run("rollback", &["--force"]);
    assert_eq!(forced.code, Some(0), "{forced}");
    assert_eq!(read(&files[0]), originals[0]);

    let again = node.run("rollback", &[]);
    assert_eq!(again.code, Some(0), "{again}");
    assert!(again.stdout.contains("nothing to undo"), "{again}");
    assert_eq!(read(&files[0]), originals[0]);
}

#[test]
fn list_run_and_a_second_rollback() {
    let (node, files, originals) = node_with("", &["etcd"]);
    assert_eq!(node.run("pin", &[]).code, Some(0));
    let first_pinned = read(&files[0]);
    // A second run that changes another file.
    node.push("kube-scheduler", "v1");
    let sched = node.manifests().join("kube-scheduler.yaml");
    let sched_text = pod(
        "kube-scheduler",
        &format!("{}/kube-scheduler:v1", node.reg.host),
        "original",
    );
    std::fs::write(&sched, &sched_text).unwrap();
    assert_eq!(node.run("pin", &[]).code, Some(0));
    // A run that changes nothing records nothing.
    assert_eq!(node.run("pin", &[]).code, Some(0));
    let runs = node.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");

    let list = node.run("rollback", &["--list"]);
    assert_eq!(list.code, Some(0), "{list}");
    for run in &runs {
        assert!(list.stdout.contains(run.as_str()), "{list}");
    }
    assert!(
        list.stdout.contains(&files[0].display().to_string()),
        "{list}"
    );
    assert!(list.stdout.contains(&sched.display().to_string()), "{list}");
    let etcd_image = format!("{}/etcd:v1", node.reg.host);
    assert!(
        list.stdout
            .contains(&format!("{etcd_image} -> {etcd_image}@sha256:")),
        "{list}"
    );

    // --run undoes the older run only.
    let out = node.run("rollback", &["--run", &runs[0]]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(read(&files[0]), originals[0]);
    assert_ne!(read(&sched), sched_text);
    let _ = first_pinned;

    // The last run still to undo is the newer one.
    let out = node.run("rollback", &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(read(&sched), sched_text);

    let out = node.run("rollback", &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("nothing to undo"), "{out}");
    let list = node.run("rollback", &["--list"]);
    assert!(list.stdout.contains("undone"), "{list}");
}

#[test]
fn restores_stay_inside_the_manifest_directory_or_path() {
    let (node, _, _) = node_with("", &[]);
    node.push("app", "v1");
    let elsewhere = node.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let file = elsewhere.join("app.yaml");
    let text = pod("app", &format!("{}/app:v1", node.reg.host), "x");
    std::fs::write(&file, &text).unwrap();
    assert_eq!(
        node.run("pin", &[elsewhere.to_str().unwrap()]).code,
        Some(0)
    );
    let pinned = read(&file);

    let out = node.run("rollback", &[]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("outside"), "{out}");
    assert_eq!(read(&file), pinned);

    let out = node.run("rollback", &[elsewhere.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(read(&file), text);
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn an_untrusted_backup_tree_is_refused() {
    let (node, files, originals) = node_with("", &["etcd"]);
    assert_eq!(node.run("pin", &[]).code, Some(0));
    let pinned = read(&files[0]);
    let run = node.backups().join(&node.runs()[0]);
    let backup = run.join("etcd.yaml");

    // A group-writable run directory.
    chmod(&run, 0o770);
    let out = node.run("rollback", &[]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr.contains(&run.display().to_string()) && out.stderr.contains("writable"),
        "{out}"
    );
    assert_eq!(read(&files[0]), pinned);
    chmod(&run, 0o700);

    // A group-writable root.
    chmod(&node.backups(), 0o777);
    let out = node.run("rollback", &[]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("writable"), "{out}");
    assert_eq!(read(&files[0]), pinned);
    chmod(&node.backups(), 0o700);

    // A backup file swapped for a symlink to something else.
    let decoy = node.path("decoy.yaml");
    std::fs::write(&decoy, "apiVersion: v1\nkind: Pod\n# not what was there\n").unwrap();
    chmod(&decoy, 0o600);
    let saved = run.join("saved");
    std::fs::rename(&backup, &saved).unwrap();
    std::os::unix::fs::symlink(&decoy, &backup).unwrap();
    let out = node.run("rollback", &[]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains(&backup.display().to_string()), "{out}");
    assert_eq!(read(&files[0]), pinned);
    std::fs::remove_file(&backup).unwrap();
    std::fs::rename(&saved, &backup).unwrap();

    let out = node.run("rollback", &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(read(&files[0]), originals[0]);
}

/// Copies a run directory under a new name, keeping modes.
fn copy_run(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    chmod(to, 0o700);
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        std::fs::copy(e.path(), &dest).unwrap();
        chmod(&dest, 0o600);
    }
}

#[test]
fn future_dated_runs_are_ignored() {
    let (node, files, originals) = node_with("keepBackups: 1\n", &["etcd"]);
    assert_eq!(node.run("pin", &[]).code, Some(0));
    let real = node.runs()[0].clone();
    let future = node.backups().join("29991231T235959.000000Z");
    copy_run(&node.backups().join(&real), &future);

    // Another real run: keepBackups counts real runs only.
    node.push("kube-scheduler", "v1");
    let sched = node.manifests().join("kube-scheduler.yaml");
    let sched_text = pod(
        "kube-scheduler",
        &format!("{}/kube-scheduler:v1", node.reg.host),
        "original",
    );
    std::fs::write(&sched, &sched_text).unwrap();
    assert_eq!(node.run("pin", &[]).code, Some(0));
    let runs = node.runs();
    assert_eq!(
        runs.len(),
        2,
        "the newest real run and the future one: {runs:?}"
    );
    assert!(future.exists());
    assert!(
        !runs.contains(&real),
        "the older real run is pruned: {runs:?}"
    );

    let list = node.run("rollback", &["--list"]);
    assert!(!list.stdout.contains("29991231T235959"), "{list}");
    let out = node.run("rollback", &["--run", "29991231T235959.000000Z"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("future"), "{out}");

    let out = node.run("rollback", &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(read(&sched), sched_text);
    assert_ne!(
        read(&files[0]),
        originals[0],
        "the future run is not restored"
    );
}
