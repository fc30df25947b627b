//! `staticpin pin` end to end against a real registry: golden fixtures,
//! kubelet's file rules, dry-run, check, idempotency, backups and rollback.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::cli;
use support::*;

/// The shared hermetic sandbox (see `support::cli`) plus a plain-HTTP
/// registry holding the test images, marked insecure in the sandbox config.
struct Sandbox {
    sb: cli::Sandbox,
    reg: Registry,
    digests: BTreeMap<String, String>,
}

impl Sandbox {
    /// A plain-HTTP registry holding `images` (`repo:tag`, multi-arch when the
    /// repo starts with `kube-`).
    fn new(images: &[&str]) -> Sandbox {
        let sb = cli::Sandbox::new();
        let reg = Registry::plain(&sb.path("storage"));
        let mut digests = BTreeMap::new();
        for (i, image) in images.iter().enumerate() {
            let (repo, tag) = image.split_once(':').unwrap();
            let dir = sb.path("layouts").join(i.to_string());
            let layout = if repo.starts_with("kube-") || repo == "app" {
                Layout::index(&dir, tag, &["amd64", "arm64"], image)
            } else {
                Layout::image(&dir, tag, "amd64", image)
            };
            layout.push(&reg, repo, tag, None);
            digests.insert(image.to_string(), oracle_digest(&reg, repo, tag, None));
        }
        sb.write_config(&format!(
            "insecureRegistries: [\"{}\"]\ntimeout: 10\n",
            reg.host
        ));
        Sandbox { sb, reg, digests }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.sb.path(p)
    }

    fn manifests(&self) -> PathBuf {
        self.path("manifests")
    }

    fn staticpin(&self, sub: &str, args: &[&str]) -> Output {
        let mut cmd = self.sb.command();
        cmd.arg(sub).arg("--config").arg(self.sb.config_file());
        run_output(cmd.args(args))
    }

    /// Copies a fixture into the manifest dir with the registry filled in.
    fn install(&self, fixture: &str, as_name: &str) -> PathBuf {
        let text = std::fs::read_to_string(fixtures().join("pin").join(fixture)).unwrap();
        let dest = self.manifests().join(as_name);
        std::fs::write(&dest, text.replace("{{REGISTRY}}", &self.reg.host)).unwrap();
        dest
    }

    /// The expected output for a fixture: registry and oracle digests filled in.
    fn expected(&self, fixture: &str) -> String {
        let mut text = std::fs::read_to_string(fixtures().join("pin-expected").join(fixture))
            .unwrap()
            .replace("{{REGISTRY}}", &self.reg.host);
        for (image, digest) in &self.digests {
            text = text.replace(&format!("{{{{DIGEST {image}}}}}"), digest);
        }
        assert!(
            !text.contains("{{"),
            "unfilled placeholder in expected {fixture}"
        );
        text
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const ALL_IMAGES: &[&str] = &[
    "kube-apiserver:v1.31.0",
    "kube-controller-manager:v1.31.0",
    "kube-scheduler:v1.31.0",
    "etcd:3.5.16-0",
    "app:v1",
    "sidecar:v2",
    "init:v1",
];

const GOLDEN: &[&str] = &[
    "kube-apiserver.yaml",
    "etcd.yaml",
    "kube-controller-manager.yaml",
    "kube-scheduler.yaml",
    "flow-style.yaml",
    "json-pod.json",
    "crlf-no-newline.yaml",
    "multi-container.yaml",
];

#[test]
fn golden_fixtures_pin_byte_exactly_and_kubelet_rules_hold() {
    let sb = Sandbox::new(ALL_IMAGES);
    for f in GOLDEN {
        sb.install(f, f);
    }
    let skipped_kind = sb.install("not-a-pod.yaml", "not-a-pod.yaml");
    let multi_doc = sb.install("multi-doc.yaml", "multi-doc.yaml");
    // kubelet ignores dotfiles and does not recurse; neither may staticpin.
    let dotfile = sb.install("kube-scheduler.yaml", ".hidden.yaml");
    std::fs::create_dir(sb.manifests().join("sub")).unwrap();
    let nested = sb.manifests().join("sub/nested.yaml");
    std::fs::copy(&dotfile, &nested).unwrap();
    // A symlinked manifest: the target changes, the link stays a link.
    let real_dir = sb.path("real");
    std::fs::create_dir(&real_dir).unwrap();
    let target = real_dir.join("linked.yaml");
    std::fs::copy(sb.manifests().join("kube-scheduler.yaml"), &target).unwrap();
    let link = sb.manifests().join("zz-linked.yaml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let untouched: Vec<(PathBuf, Vec<u8>)> = [&skipped_kind, &multi_doc, &dotfile, &nested]
        .iter()
        .map(|p| (p.to_path_buf(), std::fs::read(p).unwrap()))
        .collect();

    let out = sb.staticpin("pin", &[sb.manifests().to_str().unwrap()]);
    let text = stdout(&out);
    // The multi-document file is skipped for an error (kubelet rejects it too).
    assert_eq!(out.status.code(), Some(2), "{text}\n{}", stderr(&out));
    for f in GOLDEN {
        let got = std::fs::read_to_string(sb.manifests().join(f)).unwrap();
        assert_eq!(got, sb.expected(f), "fixture {f}");
    }
    for (p, before) in &untouched {
        assert_eq!(
            &std::fs::read(p).unwrap(),
            before,
            "{} must not change",
            p.display()
        );
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        sb.expected("kube-scheduler.yaml")
    );
    assert!(
        text.contains("not-a-pod.yaml: skipped (kind is ConfigMap, not Pod)"),
        "{text}"
    );
    // kubelet's go-yaml rejects the unquoted `host:port/…` inside `{…}`.
    assert!(
        text.contains("multi-doc.yaml: skipped (`") && text.contains("inside a flow collection"),
        "{text}"
    );
    assert!(text.contains("sub: skipped (directory"), "{text}");
    assert!(!text.contains(".hidden.yaml"), "{text}");
    assert!(
        text.contains("12 files: 9 pinned, 0 unchanged, 3 skipped, 0 failed"),
        "{text}"
    );

    // Nothing but manifests in the directory: no temp files, no backups.
    let mut names: Vec<String> = std::fs::read_dir(sb.manifests())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = GOLDEN.iter().map(|s| s.to_string()).collect();
    want.extend(
        [
            ".hidden.yaml",
            "multi-doc.yaml",
            "not-a-pod.yaml",
            "sub",
            "zz-linked.yaml",
        ]
        .map(String::from),
    );
    want.sort();
    assert_eq!(names, want);

    // Idempotent: a second run changes nothing and asks no registry anything.
    let before = sb.reg.manifest_requests();
    let snapshot: Vec<Vec<u8>> = GOLDEN
        .iter()
        .map(|f| std::fs::read(sb.manifests().join(f)).unwrap())
        .collect();
    let again = sb.staticpin("pin", &[sb.manifests().to_str().unwrap()]);
    assert!(
        stdout(&again).contains("12 files: 0 pinned, 9 unchanged"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        sb.reg.manifest_requests(),
        before,
        "second run must not ask the registry"
    );
    for (f, bytes) in GOLDEN.iter().zip(snapshot) {
        assert_eq!(std::fs::read(sb.manifests().join(f)).unwrap(), bytes);
    }
}

#[test]
fn each_unique_image_is_asked_once_per_run() {
    let sb = Sandbox::new(&["app:v1", "sidecar:v2", "init:v1"]);
    sb.install("multi-container.yaml", "a.yaml");
    sb.install("multi-container.yaml", "b.yaml");
    sb.install("flow-style.yaml", "c.yaml");
    let before = sb.reg.manifest_requests();
    let out = sb.staticpin("pin", &[sb.manifests().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        sb.reg.manifest_requests() - before,
        3,
        "app, sidecar, init: one HEAD each"
    );
}

#[test]
fn dry_run_prints_a_diff_and_writes_nothing() {
    let sb = Sandbox::new(&["kube-apiserver:v1.31.0"]);
    let file = sb.install("kube-apiserver.yaml", "kube-apiserver.yaml");
    let before = std::fs::read(&file).unwrap();
    let out = sb.staticpin("pin", &["--dry-run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let name = file.to_str().unwrap().trim_start_matches('/');
    assert!(
        text.contains(&format!("--- a/{name}\n+++ b/{name}\n")),
        "{text}"
    );
    let digest = &sb.digests["kube-apiserver:v1.31.0"];
    assert!(
        text.contains(&format!(
            "-    image: {0}/kube-apiserver:v1.31.0   # bumped by kubeadm upgrade\n+    image: {0}/kube-apiserver:v1.31.0@{digest}   # bumped by kubeadm upgrade\n",
            sb.reg.host
        )),
        "{text}"
    );
    assert!(text.contains("1 file: 1 would be pinned"), "{text}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert!(
        std::fs::read_dir(sb.path("backups"))
            .unwrap()
            .next()
            .is_none(),
        "dry-run makes no backups"
    );
}

#[test]
fn check_needs_no_network_and_reports_file_and_line() {
    let sb = Sandbox::new(&["app:v1", "sidecar:v2", "init:v1"]);
    let file = sb.install("multi-container.yaml", "multi.yaml");
    let requests_before = sb.reg.total_requests();
    let out = sb.staticpin("pin", &["--check", file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let f = file.display();
    for (line, image) in [(9, "init:v1"), (13, "app:v1"), (15, "sidecar:v2")] {
        let want = format!(
            "{f}:{line}: {}/{image} is not pinned to a digest",
            sb.reg.host
        );
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    assert!(
        !text.contains("app:v0"),
        "the pinned image is not reported: {text}"
    );
    assert_eq!(
        sb.reg.total_requests(),
        requests_before,
        "--check must not touch the network"
    );

    assert_eq!(
        sb.staticpin("pin", &[file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let after = sb.staticpin("pin", &["--check", file.to_str().unwrap()]);
    assert_eq!(after.status.code(), Some(0), "{}", stdout(&after));
}

#[test]
fn digest_only_writes_name_at_digest() {
    let sb = Sandbox::new(&["etcd:3.5.16-0"]);
    let file = sb.install("etcd.yaml", "etcd.yaml");
    let out = sb.staticpin("pin", &["--digest-only", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    let want = format!(
        "    image: {}/etcd@{}\n",
        sb.reg.host, sb.digests["etcd:3.5.16-0"]
    );
    assert!(text.contains(&want), "{text}");
}

#[test]
fn one_failing_image_leaves_only_its_file_untouched() {
    let sb = Sandbox::new(&["etcd:3.5.16-0"]);
    let good = sb.install("etcd.yaml", "etcd.yaml");
    // kube-scheduler:v1.31.0 was never pushed.
    let bad = sb.install("kube-scheduler.yaml", "kube-scheduler.yaml");
    let bad_before = std::fs::read(&bad).unwrap();
    let out = sb.staticpin("pin", &[sb.manifests().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&bad).unwrap(), bad_before);
    assert_eq!(
        std::fs::read_to_string(&good).unwrap(),
        sb.expected("etcd.yaml")
    );
    let err = stderr(&out);
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(
        err.contains("kube-scheduler:v1.31.0") && err.contains("not found"),
        "{err}"
    );
    assert!(err.contains(&format!("registry {}", sb.reg.host)), "{err}");
    assert!(
        stdout(&out).contains("2 files: 1 pinned, 0 unchanged, 1 failed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn backups_live_outside_and_rollback_restores() {
    let sb = Sandbox::new(&["etcd:3.5.16-0", "kube-apiserver:v1.31.0"]);
    let etcd = sb.install("etcd.yaml", "etcd.yaml");
    let api = sb.install("kube-apiserver.yaml", "kube-apiserver.yaml");
    let originals = [std::fs::read(&etcd).unwrap(), std::fs::read(&api).unwrap()];
    let out = sb.staticpin("pin", &["-o", "json", sb.manifests().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for f in files {
        assert_eq!(f["status"], "pinned");
        let backup = PathBuf::from(f["backup"].as_str().unwrap());
        assert!(
            backup.starts_with(sb.path("backups")),
            "{}",
            backup.display()
        );
        assert_eq!(
            f["images"][0]["pinned"]
                .as_str()
                .unwrap()
                .split('@')
                .count(),
            2
        );
    }

    let rb = sb.staticpin("rollback", &[etcd.to_str().unwrap()]);
    assert_eq!(rb.status.code(), Some(0), "{}", stderr(&rb));
    assert_eq!(std::fs::read(&etcd).unwrap(), originals[0]);
    assert_ne!(
        std::fs::read(&api).unwrap(),
        originals[1],
        "only the named file is restored"
    );
    // The rest of the run; the sandbox's manifests are outside the
    // configured manifestDir, so they are named.
    let all = sb.staticpin("rollback", &[sb.manifests().to_str().unwrap()]);
    assert_eq!(all.status.code(), Some(0), "{}", stderr(&all));
    assert_eq!(std::fs::read(&api).unwrap(), originals[1]);
}

#[test]
fn invalid_image_reference_fails_that_file_with_line() {
    let sb = Sandbox::new(&[]);
    let file = sb.manifests().join("bad.yaml");
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - name: a\n    image: example.com/Bad:tag\n";
    std::fs::write(&file, text).unwrap();
    let out = sb.staticpin("pin", &[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("line 7")
            && err.contains("\"example.com/Bad:tag\"")
            && err.contains("lowercase"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn check_config_accepts_the_shipped_example_and_names_bad_keys() {
    let sb = Sandbox::new(&[]);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.yaml");
    let ok = run_output(sb.sb.command().arg("check-config").arg(&example));
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let bad = sb.path("bad.yaml");
    std::fs::write(
        &bad,
        "manifestDir: /etc/kubernetes/manifests\nmanifestDirr: /x\n",
    )
    .unwrap();
    let out = run_output(sb.sb.command().arg("check-config").arg(&bad));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&bad.display().to_string())
            && err.contains("line 2")
            && err.contains("manifestDirr"),
        "{err}"
    );
}

#[test]
fn docker_hub_short_names_resolve_through_a_containerd_mirror() {
    let sb = Sandbox::new(&["library/nginx:1.27", "library/busybox:latest", "app:v1"]);
    // The node's containerd sends docker.io through this mirror; the upstream
    // server keeps only "pull", so resolution never leaves loopback.
    let hub = sb.path("certs/docker.io");
    std::fs::create_dir_all(&hub).unwrap();
    std::fs::write(
        hub.join("hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\ncapabilities = [\"pull\"]\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            sb.reg.host
        ),
    )
    .unwrap();
    let file = sb.install("docker-hub.yaml", "hub.yaml");
    let out = sb.staticpin("pin", &[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        sb.expected("docker-hub.yaml")
    );
    let log = sb.reg.log_contents();
    assert!(
        log.contains("/v2/library/nginx/manifests/1.27?ns=docker.io"),
        "mirror requests carry ?ns=: {log}"
    );
}
