//! The real kubeadm, minikube and kind manifests in the shared corpus
//! (`../shared/fixtures/real`, kept outside the project on purpose; see
//! [`support::shared_corpus`] for when these tests skip), with their registry
//! hosts pointed at a local registry: pinning may touch `image:` lines and
//! nothing else, wiring only flags, a mount and a volume.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use support::cli;
use support::*;

fn real_manifests(test: &str) -> Option<PathBuf> {
    shared_corpus("fixtures/real/manifests", test)
}

/// `registry.k8s.io/etcd:3.5.16-0` → (`registry.k8s.io`, `etcd:3.5.16-0`).
fn split_image(line: &str) -> Option<(String, String)> {
    let value = line.trim().strip_prefix("image:")?.trim();
    let (host, rest) = value.split_once('/')?;
    Some((host.to_string(), rest.to_string()))
}

/// `staticpin pin` in the shared hermetic sandbox (see `support::cli`).
fn isolated_pin(sb: &cli::Sandbox) -> Command {
    let mut cmd = sb.command();
    cmd.arg("pin").arg("--config").arg(sb.config_file());
    cmd
}

#[test]
fn real_manifests_change_only_image_lines() {
    let Some(src) = real_manifests("real_manifests_change_only_image_lines") else {
        return;
    };
    let sb = cli::Sandbox::new();
    let reg = Registry::plain(&sb.path("storage"));
    let manifests = sb.path("manifests");
    let mut wanted = BTreeSet::new();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = String::new();
        for line in text.split_inclusive('\n') {
            match split_image(line) {
                Some((host, rest)) => {
                    wanted.insert(rest.clone());
                    out.push_str(&line.replacen(&format!("{host}/"), &format!("{}/", reg.host), 1));
                }
                None => out.push_str(line),
            }
        }
        let name = path.file_name().unwrap().to_owned();
        std::fs::write(manifests.join(&name), out).unwrap();
        names.push(name);
    }
    assert!(names.len() >= 10, "expected the shared real manifests");
    for (i, image) in wanted.iter().enumerate() {
        let (repo, tag) = image.split_once(':').unwrap();
        Layout::index(&sb.path(&format!("l{i}")), tag, &["amd64", "arm64"], image)
            .push(&reg, repo, tag, None);
    }
    let before: Vec<String> = names
        .iter()
        .map(|n| std::fs::read_to_string(manifests.join(n)).unwrap())
        .collect();

    let out = run_output(
        isolated_pin(&sb)
            .args(["--insecure-registry", &reg.host])
            .arg(&manifests),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!("{n} files: {n} pinned", n = names.len())),
        "{report}"
    );

    for (name, old) in names.iter().zip(before) {
        let new = std::fs::read_to_string(manifests.join(name)).unwrap();
        let (old_lines, new_lines): (Vec<&str>, Vec<&str>) = (
            old.split_inclusive('\n').collect(),
            new.split_inclusive('\n').collect(),
        );
        assert_eq!(old_lines.len(), new_lines.len(), "{name:?}");
        let mut changed = 0;
        for (a, b) in old_lines.iter().zip(&new_lines) {
            if a == b {
                continue;
            }
            changed += 1;
            let (_, rest) =
                split_image(a).unwrap_or_else(|| panic!("{name:?}: non-image line changed: {a:?}"));
            let (repo, tag) = rest.split_once(':').unwrap();
            let digest = oracle_digest(&reg, repo, tag, None);
            assert_eq!(
                *b,
                a.replacen(&rest, &format!("{rest}@{digest}"), 1),
                "{name:?}"
            );
        }
        assert_eq!(changed, 1, "{name:?}: exactly the one image line changes");
    }
}

/// ImagePolicyWebhook wiring on the real kube-apiserver manifests: the diff
/// holds only the flag changes, the mount and the volume; the one manifest
/// that already points at another admission config is refused until --force.
#[test]
fn real_apiservers_get_only_flags_mount_and_volume() {
    let Some(src) = real_manifests("real_apiservers_get_only_flags_mount_and_volume") else {
        return;
    };
    let sb = cli::Sandbox::new();
    let pki = Pki::new(&sb.path("pki"), "webhook");
    let (cert, key) = pki.client_cert("kube-apiserver");
    let admission = sb.path("admission");
    let manifests = sb.path("manifests");
    let init = run_output(
        sb.command()
            .args([
                "admission",
                "init",
                "--webhook-url",
                "https://127.0.0.1:9443/check",
            ])
            .arg("--webhook-ca")
            .arg(&pki.ca_crt)
            .arg("--client-cert")
            .arg(&cert)
            .arg("--client-key")
            .arg(&key)
            .arg("--dir")
            .arg(&admission)
            .arg("--manifest-dir")
            .arg(&manifests),
    );
    assert_eq!(
        init.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let config = admission.join("admission_config.yaml");
    let dir = admission.display().to_string();
    let allowed_new = [
        format!("    - --admission-control-config-file={}", config.display()),
        format!("    - mountPath: {dir}"),
        "      name: admission".to_string(),
        "      readOnly: true".to_string(),
        "  - hostPath:".to_string(),
        format!("      path: {dir}"),
        "      type: DirectoryOrCreate".to_string(),
        "    name: admission".to_string(),
    ];

    let mut seen = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().contains("kube-apiserver") {
            continue;
        }
        seen += 1;
        // Images pre-pinned, so this test asks no registry.
        let text: String = std::fs::read_to_string(&path)
            .unwrap()
            .split_inclusive('\n')
            .map(|l| match split_image(l) {
                Some(_) => {
                    l.replacen('\n', "", 1).trim_end().to_string()
                        + &format!("@sha256:{}\n", "a".repeat(64))
                }
                None => l.to_string(),
            })
            .collect();
        let file = manifests.join("kube-apiserver.yaml");
        std::fs::write(&file, &text).unwrap();
        let pin = |extra: &[&str]| {
            run_output(
                isolated_pin(&sb)
                    .arg("--admission-config")
                    .arg(&config)
                    .args(extra)
                    .arg(&file),
            )
        };
        let mut out = pin(&[]);
        if text.contains("--admission-control-config-file=") {
            assert_eq!(out.status.code(), Some(2), "{path:?}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("only when forced"));
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                text,
                "{path:?} untouched"
            );
            out = pin(&["--force"]);
        }
        assert_eq!(
            out.status.code(),
            Some(0),
            "{path:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let new = std::fs::read_to_string(&file).unwrap();
        let diff = similar::TextDiff::from_lines(&text, &new);
        for change in diff.iter_all_changes() {
            let line = change.value().trim_end_matches('\n');
            match change.tag() {
                similar::ChangeTag::Equal => {}
                similar::ChangeTag::Delete => assert!(
                    line.contains("--enable-admission-plugins=")
                        || line.contains("--admission-control-config-file="),
                    "{path:?}: removed {line:?}"
                ),
                similar::ChangeTag::Insert => assert!(
                    line.contains("--enable-admission-plugins=")
                        && line.ends_with("ImagePolicyWebhook")
                        || allowed_new.iter().any(|a| a == line),
                    "{path:?}: added {line:?}"
                ),
            }
        }
        // And it is still a valid Pod.
        let valid = run_output(
            Command::new(venv_bin("kubernetes-validate"))
                .args(["--strict", "-k", "1.31.0"])
                .arg(&file),
        );
        assert!(
            valid.status.success(),
            "{path:?}: {}",
            String::from_utf8_lossy(&valid.stdout)
        );
    }
    assert!(seen >= 5, "expected the real kube-apiserver manifests");
}

/// The health gate asks what kubelet's livenessProbe asks: every real
/// kube-apiserver manifest yields its `/livez` URL.
#[test]
fn real_apiservers_give_their_probe_urls() {
    let Some(dir) = real_manifests("real_apiservers_give_their_probe_urls") else {
        return;
    };
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if !name.contains("kube-apiserver") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        let url =
            staticpin::health::liveness_url(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(
            url.starts_with("https://") && url.ends_with("/livez"),
            "{name}: {url}"
        );
        if name.starts_with("Harounjlassi__") {
            // minikube: its own port.
            assert_eq!(url, "https://192.168.59.105:8443/livez");
        }
        seen += 1;
    }
    assert!(seen > 0);
}
