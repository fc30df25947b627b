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
use support::cli::Sandbox;
use support::*;

/// A fake node inside the shared isolated-CLI sandbox (private HOME, cwd,
/// kubelet root and certs dir, cleared environment, explicit config).
struct Node {
    sb: Sandbox,
    webhook: Pki,
}

impl Node {
    /// A fake node: a manifest dir, and admission files rendered by
    /// `staticpin admission init` into `<tmp>/admission`.
    fn new() -> Node {
        let sb = Sandbox::new();
        std::fs::create_dir_all(sb.path("pki")).unwrap();
        let webhook = Pki::new(&sb.path(""), "webhook");
        let node = Node { sb, webhook };
        node.init("admission");
        node
    }

    fn path(&self, p: &str) -> PathBuf {
        self.sb.path(p)
    }

    fn admission_config(&self, dir: &str) -> PathBuf {
        self.path(dir).join("admission_config.yaml")
    }

    fn init(&self, dir: &str) {
        let out = self.run(
            self.sb.command().args(
                self.webhook
                    .admission_init_args(&self.path(dir), &self.path("manifests")),
            ),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "admission init: {}",
            text(&out.stderr)
        );
    }

    fn run(&self, cmd: &mut Command) -> Output {
        run_output(cmd)
    }

    fn staticpin(&self, sub: &str, args: &[&str]) -> Output {
        let mut cmd = self.sb.command();
        cmd.arg(sub).arg("--config").arg(self.sb.config_file());
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
        err.contains("/etc/kubernetes/other/admission.yaml") && err.contains("only when forced"),
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
    node.sb.write_config(&format!(
        "admission:\n  enabled: true\n  configFile: {}\n",
        node.admission_config("admission").display()
    ));
    let out = node.staticpin("pin", &[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        node.expected("kubeadm-default.yaml")
    );
}

// ---------------------------------------------------------------------------
// Never wire an apiserver that cannot start (issue 7 §6). Each case goes
// through the wiring API, `pin --admission-config` and `doctor`.

/// kubeadm-default.yaml, changed by `edit`, with the admission dir filled in.
fn variant(node: &Node, edit: &dyn Fn(&str) -> String) -> String {
    let base = std::fs::read_to_string(fixtures().join("wiring/kubeadm-default.yaml")).unwrap();
    node.fill(&edit(&base))
}

fn add_flag(text: &str, flag: &str) -> String {
    text.replace(
        "    - --allow-privileged=true\n",
        &format!("    - {flag}\n    - --allow-privileged=true\n"),
    )
}

fn add_mount(text: &str, mount: &str, volume: &str) -> String {
    text.replace(
        "    volumeMounts:\n",
        &format!("    volumeMounts:\n{mount}"),
    )
    .replace("  volumes:\n", &format!("  volumes:\n{volume}"))
}

/// A manifest kube-apiserver or kubelet would reject once wired, and what
/// the refusal must name.
struct Refusal {
    name: &'static str,
    edit: Box<dyn Fn(&str) -> String>,
    needles: &'static [&'static str],
}

fn refusals() -> Vec<Refusal> {
    vec![
        Refusal {
            name: "legacy --admission-control next to --enable-admission-plugins",
            edit: Box::new(|t| {
                add_flag(t, "--admission-control=NamespaceLifecycle,ServiceAccount")
            }),
            needles: &["--admission-control", "--enable-admission-plugins"],
        },
        Refusal {
            name: "--disable-admission-plugins lists ImagePolicyWebhook",
            edit: Box::new(|t| add_flag(t, "--disable-admission-plugins=ImagePolicyWebhook")),
            needles: &[
                "--disable-admission-plugins",
                "--enable-admission-plugins",
                "ImagePolicyWebhook",
            ],
        },
        Refusal {
            name: "enable and disable overlap already",
            edit: Box::new(|t| add_flag(t, "--disable-admission-plugins=NodeRestriction")),
            needles: &["--disable-admission-plugins", "NodeRestriction"],
        },
        Refusal {
            name: "a mount at the admission dir with another source",
            edit: Box::new(|t| {
                add_mount(
                    t,
                    "    - mountPath: {{ADMISSION}}\n      name: other\n      readOnly: true\n",
                    "  - hostPath:\n      path: /srv/other\n      type: DirectoryOrCreate\n    name: other\n",
                )
            }),
            needles: &["mountPath", "/srv/other"],
        },
        Refusal {
            name: "a subPath mount at the admission dir",
            edit: Box::new(|t| {
                add_mount(
                    t,
                    "    - mountPath: {{ADMISSION}}\n      name: adm\n      readOnly: true\n      subPath: admission_config.yaml\n",
                    "  - hostPath:\n      path: {{ADMISSION}}\n      type: DirectoryOrCreate\n    name: adm\n",
                )
            }),
            needles: &["subPath"],
        },
        Refusal {
            name: "shell-wrapped kube-apiserver",
            edit: Box::new(|t| {
                let start = t.find("  - command:\n").unwrap();
                let end = t.find("    image: ").unwrap();
                format!(
                    "{}  - command:\n    - sh\n    - -c\n    - exec kube-apiserver --advertise-address=192.0.2.10 --enable-admission-plugins=NodeRestriction\n{}",
                    &t[..start],
                    &t[end..]
                )
            }),
            needles: &["sh", "kube-apiserver"],
        },
        Refusal {
            name: "hyperkube wrapper",
            edit: Box::new(|t| {
                t.replace(
                    "  - command:\n    - kube-apiserver\n",
                    "  - command:\n    - /hyperkube\n    - kube-apiserver\n",
                )
            }),
            needles: &["/hyperkube"],
        },
        Refusal {
            name: "a repeated mountPath elsewhere in the container",
            edit: Box::new(|t| {
                add_mount(
                    t,
                    "    - mountPath: /etc/ssl/certs\n      name: more-certs\n      readOnly: true\n",
                    "  - hostPath:\n      path: /usr/share/ca-certificates\n      type: DirectoryOrCreate\n    name: more-certs\n",
                )
            }),
            needles: &["/etc/ssl/certs", "unique"],
        },
        Refusal {
            name: "a repeated volume name",
            edit: Box::new(|t| {
                add_mount(
                    t,
                    "",
                    "  - hostPath:\n      path: /usr/share/ca-certificates\n      type: DirectoryOrCreate\n    name: ca-certs\n",
                )
            }),
            needles: &["ca-certs", "unique"],
        },
        Refusal {
            name: "a relative hostPath",
            edit: Box::new(|t| {
                t.replace(
                    "      path: /etc/ssl/certs\n",
                    "      path: etc/ssl/certs\n",
                )
            }),
            needles: &["etc/ssl/certs", "absolute"],
        },
        Refusal {
            name: "a repeated admission flag",
            edit: Box::new(|t| add_flag(t, "--enable-admission-plugins=NodeRestriction")),
            needles: &["--enable-admission-plugins", "2 times"],
        },
    ]
}

#[test]
fn wiring_refuses_what_kube_apiserver_or_kubelet_would_reject() {
    let node = Node::new();
    let cfg = node.admission_config("admission");
    let manifests = node.path("manifests");
    // The wiring API, every case first, so a failure lists them all.
    let req = staticpin::apiserver::Request::new(cfg.clone());
    let wrong: Vec<String> = refusals()
        .iter()
        .filter_map(
            |case| match staticpin::apiserver::plan(&variant(&node, &*case.edit), &req) {
                Ok(p) => Some(format!("{}: planned {:?}", case.name, p.changes)),
                Err(why) => case
                    .needles
                    .iter()
                    .find(|n| !why.contains(**n))
                    .map(|n| format!("{}: {n:?} not in {why}", case.name)),
            },
        )
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    for case in refusals() {
        let text = variant(&node, &*case.edit);
        // pin: exit 2, the manifest untouched.
        let file = manifests.join("kube-apiserver.yaml");
        std::fs::write(&file, &text).unwrap();
        let out = node.pin_wired(&file, &[]);
        let err = text_of(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", case.name);
        assert!(err.contains(case.needles[0]), "{}: {err}", case.name);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "{}",
            case.name
        );
        // doctor: FAIL naming the problem.
        let out = node.staticpin(
            "doctor",
            &[
                "--admission-config",
                cfg.to_str().unwrap(),
                manifests.to_str().unwrap(),
            ],
        );
        let report = text_of(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{}: {report}", case.name);
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("FAIL") && l.contains(case.needles[0])),
            "{}: {report}",
            case.name
        );
    }
}

fn text_of(b: &[u8]) -> String {
    text(b)
}

/// A manifest already wired by hand in a way kube-apiserver refuses: nothing
/// is left to add, and `doctor` still FAILs it.
#[test]
fn doctor_fails_a_hand_wired_manifest_that_cannot_start() {
    let node = Node::new();
    let cfg = node.admission_config("admission");
    let manifests = node.path("manifests");
    let wired = node.expected("kubeadm-default.yaml");
    let broken = add_flag(&wired, "--disable-admission-plugins=ImagePolicyWebhook");
    std::fs::write(manifests.join("kube-apiserver.yaml"), &broken).unwrap();
    let out = node.staticpin(
        "doctor",
        &[
            "--admission-config",
            cfg.to_str().unwrap(),
            manifests.to_str().unwrap(),
        ],
    );
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("--disable-admission-plugins")),
        "{report}"
    );
}

/// `--admission-control` alone names every plugin that runs: the plugin is
/// merged into it, and no second admission flag is added.
#[test]
fn legacy_admission_control_alone_is_merged_into() {
    let node = Node::new();
    let text = variant(&node, &|t| {
        t.replace(
            "--enable-admission-plugins=NodeRestriction",
            "--admission-control=NamespaceLifecycle,NodeRestriction",
        )
    });
    let req = staticpin::apiserver::Request::new(node.admission_config("admission"));
    let plan = staticpin::apiserver::plan(&text, &req).unwrap();
    assert!(
        plan.new_text.contains(
            "    - --admission-control=NamespaceLifecycle,NodeRestriction,ImagePolicyWebhook\n"
        ),
        "{}",
        plan.new_text
    );
    assert!(
        !plan.new_text.contains("--enable-admission-plugins"),
        "{}",
        plan.new_text
    );
    let again = staticpin::apiserver::plan(&plan.new_text, &req).unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
}

/// The mount directory is a dedicated one, never `/` or a system directory,
/// also when it is only implied by where the config file sits.
#[test]
fn system_directories_are_never_mounted() {
    let node = Node::new();
    let text = variant(&node, &|t| t.to_string());
    for (config, dir) in [
        ("/etc/admission_config.yaml", None),
        ("/admission_config.yaml", None),
        ("/usr/admission.yaml", None),
        ("/var/admission.yaml", None),
        ("/tmp/admission.yaml", None),
        ("/etc/kubernetes/admission/config.yaml", Some("/etc")),
        ("/etc/kubernetes/admission/config.yaml", Some("/")),
        ("/etc/kubernetes/admission/config.yaml", Some("/proc")),
        ("/etc/kubernetes/admission/config.yaml", Some("/var/")),
    ] {
        let mut req = staticpin::apiserver::Request::new(PathBuf::from(config));
        if let Some(d) = dir {
            req.mount_dir = PathBuf::from(d);
        }
        let why = staticpin::apiserver::plan(&text, &req)
            .map(|p| p.changes)
            .expect_err(config);
        assert!(why.contains("dedicated"), "{config} {dir:?}: {why}");
    }
    // End to end: the config file in /etc.
    let file = node.path("manifests").join("kube-apiserver.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = node.staticpin(
        "pin",
        &[
            "--admission-config",
            "/etc/admission_config.yaml",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text_of(&out.stderr));
    assert!(
        text_of(&out.stderr).contains("dedicated"),
        "{}",
        text_of(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

/// Symlinks resolve as the container sees them: only mounted paths exist
/// there, so an absolute link into the host path behind a symlinked mount
/// directory is as missing as any other unmounted path.
#[test]
fn a_symlink_to_an_unmounted_host_path_fails_preflight() {
    let node = Node::new();
    let adm = node.path("admission");
    let real = node.path("admission-real");
    std::fs::rename(&adm, &real).unwrap();
    std::os::unix::fs::symlink(&real, &adm).unwrap();
    // kubeconf -> <real>/kubeconf.real: fine on the host, absent in the container.
    std::fs::rename(real.join("kubeconf"), real.join("kubeconf.real")).unwrap();
    std::os::unix::fs::symlink(real.join("kubeconf.real"), real.join("kubeconf")).unwrap();
    let file = node.install("kubeadm-default.yaml");
    let before = std::fs::read(&file).unwrap();
    let out = node.pin_wired(&file, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let cfg = node.admission_config("admission");
    let manifests = node.path("manifests");
    let out = node.staticpin(
        "doctor",
        &[
            "--admission-config",
            cfg.to_str().unwrap(),
            manifests.to_str().unwrap(),
        ],
    );
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("is a symlink to")),
        "{report}"
    );
}

mod no_panic {
    //! Wiring and the probe lookup over damaged kube-apiserver manifests:
    //! an answer or a refusal, never a panic.

    use proptest::prelude::*;

    fn base() -> String {
        std::fs::read_to_string(super::fixtures().join("wiring/kubeadm-default.yaml")).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn damaged_manifests(
            at in 0usize..4096,
            cut in 0usize..64,
            insert in "[ -~\n\t\u{e9}\u{85}\u{2028}]{0,12}",
        ) {
            let base = base();
            let mut at = at % base.len();
            while !base.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(base.len());
            while !base.is_char_boundary(end) {
                end -= 1;
            }
            let text = format!("{}{insert}{}", &base[..at], &base[end..]);
            let req = staticpin::apiserver::Request::new(
                "/etc/kubernetes/admission/admission_config.yaml".into(),
            );
            let _ = staticpin::apiserver::plan(&text, &req);
            let _ = staticpin::apiserver::is_apiserver(&text);
            let _ = staticpin::health::liveness_url(&text);
        }
    }
}

/// `pin --admission-config` with no kube-apiserver manifest among its paths
/// has nothing to wire: exit 2, saying so, and leave every file alone.
#[test]
fn admission_without_a_kube_apiserver_manifest_fails() {
    let node = Node::new();
    let other = node.path("manifests").join("kube-scheduler.yaml");
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-scheduler\nspec:\n  containers:\n  - name: kube-scheduler\n    command:\n    - kube-scheduler\n    image: registry.k8s.io/kube-scheduler:v1.31.0@sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
    std::fs::write(&other, text).unwrap();
    let out = node.pin_wired(&node.path("manifests"), &[]);
    let err = text_of(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no kube-apiserver manifest"), "{err}");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), text);
}
