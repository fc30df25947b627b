//! ImagePolicyWebhook wiring end to end: `staticpin admission init` renders
//! the admission files, `staticpin pin --admission-config` wires them into
//! kubeadm-style kube-apiserver manifests (golden fixtures), preflight
//! failures leave the manifest byte-identical, the health gate rolls back,
//! and `staticpin doctor` reports the result.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::apiserver::{write_livez, Apiserver, ETCD_DOWN, OK};
use support::*;

struct Node {
    tmp: tempfile::TempDir,
    webhook: Pki,
}

impl Node {
    /// A fake node: a manifest dir, and admission files rendered by
    /// `staticpin admission init` into `<tmp>/admission`.
    fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["manifests", "home", "empty", "pki"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        std::fs::write(tmp.path().join("config.yaml"), "{}\n").unwrap();
        let webhook = Pki::new(tmp.path(), "webhook");
        let node = Node { tmp, webhook };
        node.init("admission");
        node
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn admission_config(&self, dir: &str) -> PathBuf {
        self.path(dir).join("admission_config.yaml")
    }

    fn init(&self, dir: &str) {
        let (cert, key) = self.webhook.client_cert("kube-apiserver");
        let out = self.run(
            Command::new(env!("CARGO_BIN_EXE_staticpin"))
                .args([
                    "admission",
                    "init",
                    "--webhook-url",
                    "https://127.0.0.1:9443/check-image",
                ])
                .arg("--webhook-ca")
                .arg(&self.webhook.ca_crt)
                .arg("--client-cert")
                .arg(&cert)
                .arg("--client-key")
                .arg(&key)
                .arg("--dir")
                .arg(self.path(dir))
                .arg("--manifest-dir")
                .arg(self.path("manifests")),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "admission init: {}",
            text(&out.stderr)
        );
    }

    fn run(&self, cmd: &mut Command) -> Output {
        run_output(
            cmd.current_dir(self.path("empty"))
                .env("HOME", self.path("home")),
        )
    }

    fn staticpin(&self, sub: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_staticpin"));
        cmd.arg(sub).arg("--config").arg(self.path("config.yaml"));
        if sub == "pin" {
            cmd.arg("--backup-dir")
                .arg(self.path("backups"))
                .arg("--kubelet-root-dir")
                .arg(self.path("empty"))
                .arg("--certs-dir")
                .arg(self.path("empty"));
        }
        self.run(cmd.args(args))
    }

    fn pin_wired(&self, file: &Path, extra: &[&str]) -> Output {
        let cfg = self.admission_config("admission");
        let mut args = vec!["--admission-config", cfg.to_str().unwrap()];
        args.extend(extra);
        args.push(file.to_str().unwrap());
        self.staticpin("pin", &args)
    }

    fn fill(&self, text: &str) -> String {
        text.replace("{{ADMISSION}}", self.path("admission").to_str().unwrap())
            .replace("{{PKI}}", self.path("pki").to_str().unwrap())
    }

    fn install(&self, fixture: &str) -> PathBuf {
        let text = std::fs::read_to_string(fixtures().join("wiring").join(fixture)).unwrap();
        let dest = self.path("manifests").join("kube-apiserver.yaml");
        std::fs::write(&dest, self.fill(&text)).unwrap();
        dest
    }

    fn expected(&self, fixture: &str) -> String {
        self.fill(
            &std::fs::read_to_string(fixtures().join("wiring-expected").join(fixture)).unwrap(),
        )
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The result must still be a valid Pod to the Kubernetes schemas.
fn assert_valid_pod(file: &Path) {
    let out = run_output(
        Command::new(venv_bin("kubernetes-validate"))
            .args(["--strict", "-k", "1.31.0"])
            .arg(file),
    );
    assert!(
        out.status.success(),
        "kubernetes-validate rejects {}:\n{}{}",
        file.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

const GOLDEN: &[&str] = &[
    "kubeadm-default.yaml",
    "minikube-plugins.yaml",
    "flag-absent.yaml",
    "already-enabled.yaml",
    "flags-in-args.yaml",
    "volume-name-collision.yaml",
];

#[test]
fn golden_wiring_is_exact_valid_and_idempotent() {
    let node = Node::new();
    for fixture in GOLDEN {
        let file = node.install(fixture);
        let out = node.pin_wired(&file, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{fixture}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let got = std::fs::read_to_string(&file).unwrap();
        assert_eq!(got, node.expected(fixture), "{fixture}");
        assert_valid_pod(&file);
        let again = node.pin_wired(&file, &[]);
        assert_eq!(again.status.code(), Some(0));
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            got,
            "{fixture}: second run is a no-op"
        );
        assert!(
            text(&again.stdout).contains("0 pinned, 1 unchanged"),
            "{}",
            text(&again.stdout)
        );
    }
}

#[test]
fn a_mount_that_already_covers_the_directory_adds_nothing() {
    let node = Node::new();
    node.init("pki/admission");
    let file = node.install("mount-covers.yaml");
    let cfg = node.admission_config("pki/admission");
    let out = node.staticpin(
        "pin",
        &[
            "--admission-config",
            cfg.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        node.expected("mount-covers.yaml")
    );
}

#[test]
fn a_config_file_flag_pointing_elsewhere_needs_force() {
    let node = Node::new();
    let file = node.install("config-elsewhere.yaml");
    let before = std::fs::read(&file).unwrap();
    let out = node.pin_wired(&file, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("/etc/kubernetes/other/admission.yaml") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let forced = node.pin_wired(&file, &["--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        node.expected("config-elsewhere.yaml")
    );
}

#[test]
fn dry_run_shows_the_wiring_diff() {
    let node = Node::new();
    let file = node.install("kubeadm-default.yaml");
    let before = std::fs::read(&file).unwrap();
    let out = node.pin_wired(&file, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let diff = text(&out.stdout);
    let admission = node.path("admission");
    for line in [
        "-    - --enable-admission-plugins=NodeRestriction\n".to_string(),
        "+    - --enable-admission-plugins=NodeRestriction,ImagePolicyWebhook\n".to_string(),
        format!(
            "+    - --admission-control-config-file={}/admission_config.yaml\n",
            admission.display()
        ),
        format!("+    - mountPath: {}\n", admission.display()),
        "+      type: DirectoryOrCreate\n".to_string(),
    ] {
        assert!(diff.contains(&line), "missing {line:?} in\n{diff}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

/// Each way the admission files can be wrong blocks the wiring and leaves
/// kube-apiserver.yaml exactly as it was.
#[test]
fn preflight_failures_leave_the_manifest_byte_identical() {
    let node = Node::new();
    let dir = node.path("admission");
    let config = dir.join("admission_config.yaml");
    let kubeconf = dir.join("kubeconf");
    let good_config = std::fs::read_to_string(&config).unwrap();
    let good_kubeconf = std::fs::read_to_string(&kubeconf).unwrap();
    let cases: Vec<Case> = vec![
        (
            "allowTTL as a string",
            Box::new(|| {
                std::fs::write(
                    &config,
                    regex_replace(&good_config, "allowTTL:", "allowTTL: \"50s\" #"),
                )
                .unwrap()
            }),
            "allowTTL",
        ),
        (
            "denyTTL out of range",
            Box::new(|| {
                std::fs::write(
                    &config,
                    regex_replace(&good_config, "denyTTL:", "denyTTL: 5000 #"),
                )
                .unwrap()
            }),
            "denyTTL",
        ),
        (
            "no ImagePolicyWebhook plugin",
            Box::new(|| {
                std::fs::write(
                    &config,
                    good_config.replace("name: ImagePolicyWebhook", "name: EventRateLimit"),
                )
                .unwrap()
            }),
            "ImagePolicyWebhook",
        ),
        (
            "kubeconfig missing",
            Box::new(|| std::fs::remove_file(&kubeconf).unwrap()),
            "kubeconf",
        ),
        (
            "plain http server",
            Box::new(|| {
                std::fs::write(&kubeconf, good_kubeconf.replace("https://", "http://")).unwrap()
            }),
            "https",
        ),
        (
            "current-context unresolvable",
            Box::new(|| {
                std::fs::write(
                    &kubeconf,
                    regex_replace(
                        &good_kubeconf,
                        "current-context:",
                        "current-context: nowhere #",
                    ),
                )
                .unwrap()
            }),
            "current-context",
        ),
        (
            "key does not match certificate",
            Box::new(|| {
                let other = Pki::new(&node.path("other"), "other");
                let (_, key) = other.client_cert("x");
                std::fs::copy(key, find_key(&dir)).unwrap();
            }),
            "key",
        ),
        (
            "unparsable config",
            Box::new(|| std::fs::write(&config, "plugins: [\n").unwrap()),
            "admission_config.yaml",
        ),
    ];
    for (name, break_it, needle) in cases {
        // Fresh admission files for each case.
        std::fs::remove_dir_all(&dir).unwrap();
        node.init("admission");
        break_it();
        let file = node.install("kubeadm-default.yaml");
        let before = std::fs::read(&file).unwrap();
        let out = node.pin_wired(&file, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains("preflight") || err.contains("admission"),
            "{name}: {err}"
        );
        assert!(err.contains(needle), "{name}: expected {needle:?} in {err}");
        assert!(
            err.contains(&dir.display().to_string()),
            "{name}: names the file: {err}"
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "{name}: manifest must be byte-identical"
        );
    }
}

/// A name, how to break the admission files, and what the error must mention.
type Case<'a> = (&'static str, Box<dyn Fn() + 'a>, &'static str);

/// Replaces the rest of the line after `key` with `with`.
fn regex_replace(text: &str, key: &str, with: &str) -> String {
    text.lines()
        .map(|l| match l.find(key) {
            Some(i) => format!("{}{with}", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn find_key(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .expect("admission init copies the client key")
}

fn health_args(node: &Node, server: &Apiserver, www: &Path, timeout: &str) -> Vec<String> {
    let _ = www;
    vec![
        "--wait-healthy".into(),
        "--health-url".into(),
        server.url(),
        "--health-ca".into(),
        node.webhook.ca_crt.display().to_string(),
        "--health-timeout".into(),
        timeout.into(),
        "--health-settle".into(),
        "0".into(),
    ]
}

#[test]
fn health_gate_keeps_a_healthy_change_and_rolls_back_a_dead_one() {
    let node = Node::new();
    let www = node.path("www");
    let server = Apiserver::start(
        &www,
        &node.webhook.server_crt,
        &node.webhook.server_key,
        &[],
    );

    // Healthy: the change stays.
    write_livez(&www, OK);
    let file = node.install("kubeadm-default.yaml");
    let args = health_args(&node, &server, &www, "10");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = node.pin_wired(&file, &refs);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        node.expected("kubeadm-default.yaml")
    );
    assert!(
        text(&out.stdout).contains("healthy"),
        "{}",
        text(&out.stdout)
    );

    // Healthy after a delay: still kept.
    let file = node.install("kubeadm-default.yaml");
    write_livez(&www, ETCD_DOWN);
    let www2 = www.clone();
    let flip = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(2500));
        write_livez(&www2, OK);
    });
    let started = Instant::now();
    let out = node.pin_wired(&file, &refs);
    flip.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(started.elapsed() >= Duration::from_millis(2500));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        node.expected("kubeadm-default.yaml")
    );

    // Never healthy: rolled back byte for byte, exit 2.
    let file = node.install("kubeadm-default.yaml");
    let before = std::fs::read(&file).unwrap();
    write_livez(&www, ETCD_DOWN);
    let args = health_args(&node, &server, &www, "3");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = node.pin_wired(&file, &refs);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    assert!(err.contains("restored the previous manifest"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before, "rolled back");
}

#[test]
fn admission_init_then_doctor_passes_end_to_end() {
    let node = Node::new();
    let file = node.install("kubeadm-default.yaml");
    let cfg = node.admission_config("admission");
    let manifests = node.path("manifests");
    let doctor = |extra: &[&str]| {
        let mut args = vec!["--admission-config", cfg.to_str().unwrap()];
        args.extend(extra);
        args.push(manifests.to_str().unwrap());
        node.staticpin("doctor", &args)
    };
    // Before wiring: the files are fine, the apiserver is not wired yet.
    let out = doctor(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("WARN") && text(&out.stdout).contains("not wired yet"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(node.pin_wired(&file, &[]).status.code(), Some(0));
    let out = doctor(&[]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        !report.contains("FAIL") && !report.contains("WARN"),
        "{report}"
    );
    assert!(report.contains("PASS"), "{report}");
    // doctor is read-only.
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        node.expected("kubeadm-default.yaml")
    );
}

#[test]
fn admission_can_be_enabled_from_the_config_file() {
    let node = Node::new();
    let file = node.install("kubeadm-default.yaml");
    std::fs::write(
        node.path("config.yaml"),
        format!(
            "admission:\n  enabled: true\n  configFile: {}\n",
            node.admission_config("admission").display()
        ),
    )
    .unwrap();
    let out = node.staticpin("pin", &[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        node.expected("kubeadm-default.yaml")
    );
}
