//! The pass against a hostile environment, end to end: a registry slow
//! enough for kubeadm to rename a new manifest in mid-run, two staticpins
//! at once, and a health gate whose rollback would undo a later change.

mod support;

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use support::apiserver::{write_livez, Apiserver, ETCD_DOWN};
use support::node::{pod, Node, Out};
use support::proxy::DelayProxy;
use support::{wait_until, Pki};

const CHANGED: &str = "changed while staticpin ran; nothing written";

fn finish(mut child: Child) -> Out {
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    Out {
        code: status.code(),
        stdout,
        stderr,
    }
}

#[test]
fn kubeadm_renames_a_manifest_in_while_the_registry_is_slow() {
    let node = Node::new("");
    let digest = node.push("kube-scheduler", "v1.31.0");
    let proxy = DelayProxy::start(&node.reg.host, Duration::from_secs(3));
    let image = format!("{}/kube-scheduler:v1.31.0", proxy.host);
    let file = node.manifests().join("kube-scheduler.yaml");
    std::fs::write(&file, pod("kube-scheduler", &image, "before upgrade")).unwrap();

    let child = node.spawn("pin", &[], &[&proxy.host]);
    // Resolving has begun: the file has been read and planned from.
    wait_until(Duration::from_secs(20), || {
        (proxy.connections() > 0).then_some(())
    })
    .expect("staticpin never asked the registry");
    let upgraded = pod("kube-scheduler", &image, "after kubeadm upgrade");
    node.kubeadm_write(&file, &upgraded);
    let out = finish(child);

    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), upgraded, "{out}");
    assert!(
        out.stderr
            .contains(&format!("{}: {CHANGED}", file.display())),
        "{out}"
    );
    assert!(out.stdout.contains("1 failed"), "{out}");
    assert!(
        node.runs().is_empty(),
        "a run that wrote nothing leaves no run: {:?}",
        node.runs()
    );

    // A rerun starts from the new text.
    proxy.set_delay(Duration::ZERO);
    let again = finish(node.spawn("pin", &[], &[&proxy.host]));
    assert_eq!(again.code, Some(0), "{again}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        upgraded.replace(&image, &format!("{image}@{digest}"))
    );
}

#[test]
fn a_second_writer_waits_for_the_lock_and_gives_up_naming_the_holder() {
    let node = Node::new("");
    node.push("etcd", "3.5.16-0");
    let proxy = DelayProxy::start(&node.reg.host, Duration::from_secs(4));
    let image = format!("{}/etcd:3.5.16-0", proxy.host);
    let file = node.manifests().join("etcd.yaml");
    std::fs::write(&file, pod("etcd", &image, "x")).unwrap();

    let holder = node.spawn("pin", &[], &[&proxy.host]);
    let holder_pid = holder.id();
    wait_until(Duration::from_secs(20), || {
        (proxy.connections() > 0).then_some(())
    })
    .expect("the first staticpin never asked the registry");

    // Read-only modes take no lock: they finish while the writer holds it.
    let started = Instant::now();
    let check = node.run("pin", &["--check"]);
    assert_eq!(check.code, Some(1), "{check}");
    let doctor = node.run("doctor", &[]);
    assert!(doctor.code.is_some(), "{doctor}");
    // A dry run over a file that needs no registry shows the lock is not
    // what it waits for.
    let pinned_dir = node.path("pinned");
    std::fs::create_dir(&pinned_dir).unwrap();
    let digest = format!("sha256:{}", "a".repeat(64));
    std::fs::write(
        pinned_dir.join("etcd.yaml"),
        pod("etcd", &format!("{image}@{digest}"), "x"),
    )
    .unwrap();
    let dry = node.run("pin", &["--dry-run", pinned_dir.to_str().unwrap()]);
    assert_eq!(dry.code, Some(0), "{dry}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "read-only runs waited for the lock: {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let second = finish(node.spawn("pin", &["--lock-timeout", "1"], &[&proxy.host]));
    let waited = started.elapsed();
    assert_eq!(second.code, Some(2), "{second}");
    assert!(waited >= Duration::from_secs(1), "did not wait: {waited:?}");
    assert!(
        second.stderr.contains(&format!("pid {holder_pid}"))
            && second
                .stderr
                .contains(&node.lock_file().display().to_string()),
        "{second}"
    );
    let rollback = node.run("rollback", &["--lock-timeout", "1"]);
    assert_eq!(rollback.code, Some(2), "{rollback}");
    assert!(
        rollback.stderr.contains(&format!("pid {holder_pid}")),
        "{rollback}"
    );

    // With time enough, the second writer runs after the first, and finds
    // the file already pinned.
    let patient = node.spawn("pin", &["--lock-timeout", "30"], &[&proxy.host]);
    let first = finish(holder);
    assert_eq!(first.code, Some(0), "{first}");
    let patient = finish(patient);
    assert_eq!(patient.code, Some(0), "{patient}");
    assert!(patient.stdout.contains("already pinned"), "{patient}");
}

#[test]
fn health_gate_does_not_roll_back_over_a_later_change() {
    let node = Node::new("");
    node.push("kube-apiserver", "v1.31.0");
    let pki = Pki::new(node.tmp.path(), "cluster");
    let www = node.path("www");
    std::fs::create_dir_all(&www).unwrap();
    write_livez(&www, ETCD_DOWN);
    let srv = Apiserver::start(&www, &pki.server_crt, &pki.server_key, &[]);

    let image = format!("{}/kube-apiserver:v1.31.0", node.reg.host);
    let file = node.manifests().join("kube-apiserver.yaml");
    let original = pod("kube-apiserver", &image, "original");
    std::fs::write(&file, &original).unwrap();
    let gate = [
        "--wait-healthy",
        "--health-url",
        &srv.url(),
        "--health-ca",
        pki.ca_crt.to_str().unwrap(),
        "--health-settle",
        "1",
        "--health-timeout",
        "2",
    ];

    // Unchanged meanwhile: the gate restores what was there.
    let out = node.run("pin", &gate);
    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original, "{out}");
    assert!(
        out.stderr.contains("restored the previous manifest"),
        "{out}"
    );
    let nothing = node.run("rollback", &[]);
    assert_eq!(nothing.code, Some(0), "{nothing}");
    assert!(nothing.stdout.contains("nothing to undo"), "{nothing}");

    // Changed meanwhile (an operator fixed it by hand): keep that.
    let child = node.spawn("pin", &gate, &[]);
    wait_until(Duration::from_secs(20), || {
        (std::fs::read_to_string(&file).unwrap() != original).then_some(())
    })
    .expect("staticpin never wrote the manifest");
    let fixed = pod("kube-apiserver", &image, "fixed by hand");
    node.kubeadm_write(&file, &fixed);
    let out = finish(child);
    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), fixed, "{out}");
    assert!(
        out.stderr.contains("could not roll back")
            && out.stderr.contains("changed since staticpin wrote it"),
        "{out}"
    );
}

#[test]
fn admission_config_without_an_apiserver_manifest_fails() {
    let node = Node::new("");
    node.push("etcd", "3.5.16-0");
    let file = node.manifests().join("etcd.yaml");
    let text = pod("etcd", &format!("{}/etcd:3.5.16-0", node.reg.host), "x");
    std::fs::write(&file, &text).unwrap();
    let admission = node.path("admission/admission_config.yaml");
    let out = node.run(
        "pin",
        &[
            "--dry-run",
            "--admission-config",
            admission.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr.contains("no kube-apiserver manifest")
            && out.stderr.contains(&node.manifests().display().to_string()),
        "{out}"
    );
}

#[test]
fn empty_or_mistyped_manifest_directory_says_so() {
    let node = Node::new("");
    let empty = node.run("pin", &["--check"]);
    assert!(
        empty
            .stdout
            .contains(&format!("no manifests in {}", node.manifests().display())),
        "{empty}"
    );
    let missing = node.path("manifestz");
    let out = node.run("pin", &[missing.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{out}");
    let shown = out.stderr.matches(&missing.display().to_string()).count();
    assert_eq!(shown, 1, "the path once, not twice: {out}");
}
