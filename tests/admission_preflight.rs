//! ImagePolicyWebhook preflight and `staticpin admission init`, end to end:
//! the binary renders files from a real (openssl-made) PKI and they pass the
//! library's preflight; refusals write nothing; and each preflight failure,
//! produced from a fixture in tests/fixtures/admission/, names its file and field.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use staticpin::admission::preflight::{
    has_failures, preflight, Admission, Finding, Level, CHECK_ADMISSION_CONFIG, CHECK_CA,
    CHECK_FAIL_OPEN, CHECK_KUBECONFIG, CHECK_MOUNTS, CHECK_SETTINGS,
};
use support::cli::Sandbox;
use support::Pki;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission");

/// A node-like layout in a temp dir: `admission/` (the directory to mount),
/// `manifests/` (kubelet's), `input/` (where the operator's PEM files are).
struct Node {
    sb: Sandbox,
    pki: Pki,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Node {
    fn new() -> Node {
        let sb = Sandbox::new();
        for d in ["admission", "manifests", "input"] {
            fs::create_dir_all(sb.path(d)).unwrap();
        }
        let pki = Pki::new(&sb.path("input"), "webhook");
        let (client_cert, client_key) = pki.client_cert("kube-apiserver-imagepolicy");
        Node {
            sb,
            pki,
            client_cert,
            client_key,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.sb.path(rel)
    }

    fn admission_dir(&self) -> PathBuf {
        self.path("admission")
    }

    fn staticpin(&self, args: &[&str]) -> Output {
        support::run_output(self.sb.command().args(args))
    }

    /// `admission init` with this node's PKI and dirs; `extra` flags replace
    /// the defaults of the same name (clap refuses a repeated flag).
    fn init(&self, extra: &[&str]) -> Output {
        let mut args: Vec<(String, Option<String>)> = [
            (
                "--webhook-url",
                "https://image-policy.example.internal:8443/image-review".to_string(),
            ),
            ("--webhook-ca", self.pki.ca_crt.display().to_string()),
            ("--client-cert", self.client_cert.display().to_string()),
            ("--client-key", self.client_key.display().to_string()),
            ("--dir", self.admission_dir().display().to_string()),
            (
                "--manifest-dir",
                self.path("manifests").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(f, v)| (f.to_string(), Some(v)))
        .collect();
        let mut i = 0;
        while i < extra.len() {
            let flag = extra[i].to_string();
            let value = extra
                .get(i + 1)
                .filter(|v| !v.starts_with("--"))
                .map(|v| v.to_string());
            i += 1 + usize::from(value.is_some());
            match args.iter_mut().find(|(f, _)| *f == flag) {
                Some(slot) => slot.1 = value,
                None => args.push((flag, value)),
            }
        }
        let mut argv = vec!["admission".to_string(), "init".to_string()];
        for (flag, value) in args {
            argv.push(flag);
            argv.extend(value);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.staticpin(&argv)
    }

    /// Copies `base/`, then `cases/<case>/` over it, into the admission
    /// directory with the placeholders filled in, next to this node's PKI.
    fn fixture(&self, case: Option<&str>) -> PathBuf {
        let dir = self.admission_dir();
        fs::copy(&self.pki.ca_crt, dir.join("webhook-ca.crt")).unwrap();
        fs::copy(&self.client_cert, dir.join("apiserver-client.crt")).unwrap();
        fs::copy(&self.client_key, dir.join("apiserver-client.key")).unwrap();
        let b64 = |p: &Path| base64::engine::general_purpose::STANDARD.encode(fs::read(p).unwrap());
        let fill = |text: String| {
            text.replace("@DIR@", dir.to_str().unwrap())
                .replace("@CA_DATA@", &b64(&self.pki.ca_crt))
                .replace("@CERT_DATA@", &b64(&self.client_cert))
                .replace("@KEY_DATA@", &b64(&self.client_key))
        };
        let mut sources = vec![Path::new(FIXTURES).join("base")];
        sources.extend(case.map(|c| Path::new(FIXTURES).join("cases").join(c)));
        for src in sources {
            assert!(src.is_dir(), "no fixture directory {}", src.display());
            for entry in fs::read_dir(&src).unwrap() {
                let entry = entry.unwrap();
                let bytes = fs::read(entry.path()).unwrap();
                let out = match String::from_utf8(bytes) {
                    Ok(text) => fill(text).into_bytes(),
                    Err(e) => e.into_bytes(),
                };
                fs::write(dir.join(entry.file_name()), out).unwrap();
            }
        }
        dir.join("admission_config.yaml")
    }

    fn preflight(&self, config: &Path) -> (Admission, Vec<Finding>) {
        preflight(config, &[self.admission_dir()])
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn failures(findings: &[Finding]) -> Vec<&Finding> {
    findings.iter().filter(|f| f.level == Level::Fail).collect()
}

/// Exactly one failure, at `file` / `field`, whose message contains
/// `needle`; its Display line names the file and the field.
#[track_caller]
fn assert_one_failure(findings: &[Finding], file: &Path, field: Option<&str>, needle: &str) {
    let fails = failures(findings);
    assert_eq!(fails.len(), 1, "{fails:#?}");
    let f = fails[0];
    let line = f.to_string();
    assert_eq!(
        (f.file.as_path(), f.field.as_deref()),
        (file, field),
        "{line}"
    );
    assert!(f.message.contains(needle), "{line}\n  lacks {needle:?}");
    let mut expected = format!("{}: ", file.display());
    if let Some(field) = field {
        expected.push_str(&format!("{field}: "));
    }
    assert!(
        line.starts_with(&expected),
        "{line}\n  does not start with {expected:?}"
    );
}

// --- admission init -------------------------------------------------------

#[test]
fn init_writes_files_that_pass_preflight() {
    let node = Node::new();
    let out = node.init(&[]);
    assert_exit(&out, 0);
    let dir = node.admission_dir();
    let stdout = text(&out.stdout);
    let config = dir.join("admission_config.yaml");
    for name in [
        "webhook-ca.crt",
        "webhook-client.crt",
        "webhook-client.key",
        "kubeconf",
        "admission_config.yaml",
    ] {
        assert!(
            stdout.contains(&format!("created {}", dir.join(name).display())),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!(
            "next: staticpin pin --admission-config {}",
            config.display()
        )),
        "{stdout}"
    );
    assert_eq!(text(&out.stderr), "", "no warnings for a fail-closed setup");

    let mode = |n: &str| fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("webhook-client.key"), 0o600);
    assert_eq!(mode("admission_config.yaml"), 0o644);
    assert_eq!(
        fs::read(dir.join("webhook-client.key")).unwrap(),
        fs::read(&node.client_key).unwrap()
    );

    // The files parse as what they claim to be, with the values asked for.
    let cfg = fs::read_to_string(&config).unwrap();
    assert!(
        cfg.starts_with("# Generated by `staticpin admission init`"),
        "{cfg}"
    );
    assert!(
        cfg.contains("#   staticpin admission init --force"),
        "{cfg}"
    );
    let v: serde_norway::Value = serde_norway::from_str(&cfg).unwrap();
    assert_eq!(v["apiVersion"].as_str(), Some("apiserver.config.k8s.io/v1"));
    assert_eq!(v["kind"].as_str(), Some("AdmissionConfiguration"));
    let ip = &v["plugins"][0]["configuration"]["imagePolicy"];
    assert_eq!(v["plugins"][0]["name"].as_str(), Some("ImagePolicyWebhook"));
    assert_eq!(ip["kubeConfigFile"].as_str(), dir.join("kubeconf").to_str());
    assert_eq!(
        (
            ip["allowTTL"].as_i64(),
            ip["denyTTL"].as_i64(),
            ip["retryBackoff"].as_i64()
        ),
        (Some(50), Some(50), Some(500))
    );
    assert_eq!(ip["defaultAllow"].as_bool(), Some(false));
    let kc: serde_norway::Value =
        serde_norway::from_str(&fs::read_to_string(dir.join("kubeconf")).unwrap()).unwrap();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"].as_str(),
        Some("https://image-policy.example.internal:8443/image-review")
    );
    assert_eq!(
        kc["users"][0]["user"]["client-key"].as_str(),
        dir.join("webhook-client.key").to_str()
    );

    // And they pass preflight with the one directory mounted.
    let (adm, findings) = node.preflight(&config);
    assert!(!has_failures(&findings), "{findings:#?}");
    assert!(
        findings.iter().all(|f| f.level == Level::Pass),
        "{findings:#?}"
    );
    assert_eq!(adm.referenced.len(), 5);
    assert!(
        adm.referenced.iter().all(|p| p.starts_with(&dir)),
        "{adm:?}"
    );
    assert_eq!(adm.kubeconfig, Some(dir.join("kubeconf")));

    // A second identical run changes nothing and needs no --force.
    let again = node.init(&[]);
    assert_exit(&again, 0);
    assert_eq!(
        text(&again.stdout).matches("unchanged ").count(),
        5,
        "{}",
        text(&again.stdout)
    );

    // The command in the header regenerates exactly these files.
    let command: String = cfg
        .lines()
        .skip_while(|l| !l.starts_with("#   staticpin "))
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim_start())
        .collect::<Vec<_>>()
        .join("\n");
    let command = command.replacen("staticpin", env!("CARGO_BIN_EXE_staticpin"), 1);
    let out = Command::new("sh").arg("-c").arg(&command).output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout).matches("unchanged ").count(),
        5,
        "{command}"
    );
}

#[test]
fn init_creates_the_directory_and_warns_when_failing_open() {
    let node = Node::new();
    let dir = node.path("etc/kubernetes/admission");
    let out = node.init(&[
        "--dir",
        dir.to_str().unwrap(),
        "--default-allow",
        "--allow-ttl",
        "-1",
    ]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("the webhook fails open"),
        "{}",
        text(&out.stderr)
    );
    let (adm, findings) = preflight(
        &dir.join("admission_config.yaml"),
        std::slice::from_ref(&dir),
    );
    assert!(adm.default_allow);
    assert!(findings
        .iter()
        .any(|f| f.check == CHECK_FAIL_OPEN && f.level == Level::Warn));
    assert!(!has_failures(&findings));
}

#[test]
fn init_refuses_a_plain_http_url() {
    let node = Node::new();
    let out = node.init(&[
        "--webhook-url",
        "http://image-policy.example.internal/review",
    ]);
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).contains("--webhook-url must be an https:// URL"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fs::read_dir(node.admission_dir()).unwrap().count(), 0);
}

/// `admission init` writes only where wiring will mount: never into `/`
/// or a system directory (checked before anything is written).
#[test]
fn init_refuses_a_system_directory() {
    let node = Node::new();
    for dir in ["/etc", "/", "/usr/", "/var/lib/../lib"] {
        let out = node.init(&["--dir", dir]);
        assert_exit(&out, 2);
        assert!(
            text(&out.stderr).contains("is not a dedicated directory"),
            "{dir}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn init_refuses_a_directory_inside_the_manifest_dir() {
    let node = Node::new();
    let manifests = node.path("manifests");
    for dir in [manifests.join("admission"), manifests.clone()] {
        let out = node.init(&["--dir", dir.to_str().unwrap()]);
        assert_exit(&out, 2);
        let err = text(&out.stderr);
        assert!(err.contains(&format!("--dir {}", dir.display())), "{err}");
        assert!(
            err.contains("kubelet would try to run every file in it as a static pod"),
            "{err}"
        );
        assert_eq!(
            fs::read_dir(&manifests).unwrap().count(),
            0,
            "nothing written"
        );
    }
    // Reached through a symlink: still refused.
    std::os::unix::fs::symlink(&manifests, node.path("link")).unwrap();
    let via = node.path("link/admission");
    let out = node.init(&["--dir", via.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert_eq!(fs::read_dir(&manifests).unwrap().count(), 0);
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let node = Node::new();
    assert_exit(&node.init(&[]), 0);
    let config = node.admission_dir().join("admission_config.yaml");
    let before = fs::read(&config).unwrap();

    let out = node.init(&["--allow-ttl", "100"]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(
        !err.contains("webhook-client.key"),
        "unchanged files are not conflicts: {err}"
    );
    assert_eq!(fs::read(&config).unwrap(), before);

    let out = node.init(&["--allow-ttl", "100", "--force"]);
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains(&format!("replaced {}", config.display())));
    assert!(fs::read_to_string(&config)
        .unwrap()
        .contains("allowTTL: 100"));
}

#[test]
fn init_refuses_a_key_that_does_not_match_the_certificate() {
    let node = Node::new();
    let other = Pki::new(&node.path("input"), "other");
    let (_, other_key) = other.client_cert("someone-else");
    let out = node.init(&["--client-key", other_key.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: the key does not match the certificate {}",
            other_key.display(),
            node.client_cert.display()
        )),
        "{err}"
    );
    assert_eq!(fs::read_dir(node.admission_dir()).unwrap().count(), 0);
}

#[test]
fn init_refuses_inputs_that_do_not_parse() {
    let node = Node::new();
    let junk = node.path("input/junk.pem");
    fs::write(&junk, "not a certificate\n").unwrap();
    let out = node.init(&["--webhook-ca", junk.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}: has no PEM CERTIFICATE block", junk.display())),
        "{err}"
    );

    // Certificate and key swapped.
    let (cert, key) = (
        node.client_cert.to_str().unwrap(),
        node.client_key.to_str().unwrap(),
    );
    let out = node.init(&["--client-cert", key, "--client-key", cert]);
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).contains("swapped"),
        "{}",
        text(&out.stderr)
    );

    let missing = node.path("input/nope.key");
    let out = node.init(&["--client-key", missing.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(text(&out.stderr).contains(&format!("{}: cannot read", missing.display())));
    assert_eq!(fs::read_dir(node.admission_dir()).unwrap().count(), 0);
}

#[test]
fn init_rejects_out_of_range_durations() {
    let node = Node::new();
    for args in [["--allow-ttl", "3600"], ["--retry-backoff", "-2"]] {
        let out = node.init(&args);
        assert_exit(&out, 2);
        assert!(text(&out.stderr).contains(args[0]), "{}", text(&out.stderr));
    }
    assert_eq!(fs::read_dir(node.admission_dir()).unwrap().count(), 0);
}

// --- preflight on fixtures -------------------------------------------------

#[test]
fn base_fixture_passes() {
    let node = Node::new();
    let config = node.fixture(None);
    let (adm, findings) = node.preflight(&config);
    assert!(
        findings.iter().all(|f| f.level == Level::Pass),
        "{findings:#?}"
    );
    assert_eq!(adm.kubeconfig, Some(node.admission_dir().join("kubeconf")));
    assert!(!adm.default_allow);
}

#[test]
fn accepted_shapes_pass() {
    for (case, config) in [
        ("plugin-path", "admission_config.yaml"),
        ("legacy-bare", "admission_config.yaml"),
        ("json", "admission_config.json"),
        ("inline-data", "admission_config.yaml"),
    ] {
        let node = Node::new();
        node.fixture(Some(case));
        let (adm, findings) = node.preflight(&node.admission_dir().join(config));
        assert!(!has_failures(&findings), "{case}: {findings:#?}");
        // An empty list has no failures either: every check must have run
        // and passed.
        for check in [
            CHECK_ADMISSION_CONFIG,
            CHECK_SETTINGS,
            CHECK_FAIL_OPEN,
            CHECK_KUBECONFIG,
        ] {
            assert!(
                findings
                    .iter()
                    .any(|f| f.check == check && f.level == Level::Pass),
                "{case}: no pass for {check}: {findings:#?}"
            );
        }
        if case == "plugin-path" {
            assert!(adm
                .referenced
                .contains(&node.admission_dir().join("imagepolicyconfig.yaml")));
        }
    }
}

/// Runs preflight on a case and checks its single failure.
#[track_caller]
fn case_fails(case: &str, file: &str, field: Option<&str>, needle: &str) {
    let node = Node::new();
    let config = node.fixture(Some(case));
    let needle = needle.replace("@DIR@", node.admission_dir().to_str().unwrap());
    let (_, findings) = node.preflight(&config);
    assert_one_failure(&findings, &node.admission_dir().join(file), field, &needle);
}

const IP: &str = "plugins[0].configuration.imagePolicy";

#[test]
fn config_that_is_not_yaml() {
    case_fails(
        "not-yaml",
        "admission_config.yaml",
        None,
        "does not parse as YAML",
    );
}

#[test]
fn config_with_the_wrong_api_version() {
    case_fails(
        "wrong-api-version",
        "admission_config.yaml",
        Some("apiVersion"),
        "must be apiserver.config.k8s.io/v1",
    );
}

#[test]
fn config_without_an_image_policy_plugin() {
    case_fails(
        "no-image-policy-plugin",
        "admission_config.yaml",
        Some("plugins"),
        "no entry with name: ImagePolicyWebhook",
    );
}

#[test]
fn plugin_path_that_does_not_exist() {
    case_fails(
        "missing-plugin-path",
        "admission_config.yaml",
        Some("plugins[0].path"),
        "cannot read @DIR@/imagepolicyconfig.yaml",
    );
}

#[test]
fn ttl_written_as_a_duration_string() {
    case_fails(
        "ttl-as-string",
        "admission_config.yaml",
        Some(&format!("{IP}.allowTTL")),
        "must be an integer between 1 and 1800 (seconds), or 0 for the default or -1 to disable, got the string \"50s\"",
    );
}

#[test]
fn deny_ttl_above_thirty_minutes() {
    case_fails(
        "deny-ttl-too-long",
        "admission_config.yaml",
        Some(&format!("{IP}.denyTTL")),
        "between 1 and 1800 (seconds), or 0 for the default or -1 to disable, got 3600",
    );
}

#[test]
fn retry_backoff_above_five_minutes() {
    case_fails(
        "retry-backoff-too-long",
        "admission_config.yaml",
        Some(&format!("{IP}.retryBackoff")),
        "between 1 and 300000 (milliseconds), or 0 for the default or -1 to disable, got 600000",
    );
}

#[test]
fn kube_config_file_not_set() {
    case_fails(
        "no-kubeconfig-file",
        "admission_config.yaml",
        Some(&format!("{IP}.kubeConfigFile")),
        "not set",
    );
}

#[test]
fn kube_config_file_relative() {
    case_fails(
        "relative-kubeconfig-file",
        "admission_config.yaml",
        Some(&format!("{IP}.kubeConfigFile")),
        "must be an absolute path, got \"kubeconf\"",
    );
}

#[test]
fn kube_config_file_missing() {
    case_fails(
        "kubeconfig-file-missing",
        "admission_config.yaml",
        Some(&format!("{IP}.kubeConfigFile")),
        "cannot read @DIR@/kubeconfig.yaml",
    );
}

#[test]
fn kubeconfig_without_current_context() {
    case_fails(
        "no-current-context",
        "kubeconf",
        Some("current-context"),
        "not set",
    );
}

#[test]
fn context_naming_an_unknown_cluster() {
    case_fails(
        "context-unknown-cluster",
        "kubeconf",
        Some("contexts[0].context.cluster"),
        "names cluster \"image-policy\", which is not in clusters",
    );
}

#[test]
fn context_naming_an_unknown_user() {
    case_fails(
        "context-unknown-user",
        "kubeconf",
        Some("contexts[0].context.user"),
        "names user \"api-server\", which is not in users",
    );
}

#[test]
fn server_over_plain_http() {
    case_fails(
        "http-server",
        "kubeconf",
        Some("clusters[0].cluster.server"),
        "must be an https:// URL",
    );
}

#[test]
fn ca_file_missing() {
    case_fails(
        "ca-file-missing",
        "kubeconf",
        Some("clusters[0].cluster.certificate-authority"),
        "cannot read @DIR@/external-cert.pem",
    );
}

#[test]
fn ca_file_not_pem() {
    case_fails(
        "ca-not-pem",
        "kubeconf",
        Some("clusters[0].cluster.certificate-authority"),
        "@DIR@/webhook-ca.crt: has no PEM CERTIFICATE block",
    );
}

#[test]
fn ca_file_and_inline_data_together() {
    case_fails(
        "ca-file-and-data",
        "kubeconf",
        Some("clusters[0].cluster.certificate-authority-data"),
        "set together with certificate-authority",
    );
}

#[test]
fn client_key_not_set() {
    case_fails(
        "client-key-missing",
        "kubeconf",
        Some("users[0].user.client-key"),
        "not set",
    );
}

#[test]
fn client_key_from_another_pki() {
    let node = Node::new();
    let config = node.fixture(None);
    let other = Pki::new(&node.path("input"), "other");
    fs::copy(
        &other.server_key,
        node.admission_dir().join("apiserver-client.key"),
    )
    .unwrap();
    let dir = node.admission_dir();
    assert_one_failure(
        &node.preflight(&config).1,
        &dir.join("kubeconf"),
        Some("users[0].user.client-key"),
        &format!(
            "{}: the key does not match the certificate in {}",
            dir.join("apiserver-client.key").display(),
            dir.join("apiserver-client.crt").display()
        ),
    );
}

#[test]
fn file_outside_the_mounted_directories() {
    let node = Node::new();
    let config = node.fixture(Some("outside-mount"));
    fs::create_dir(node.path("pki")).unwrap();
    fs::copy(&node.pki.ca_crt, node.path("pki/webhook-ca.crt")).unwrap();
    let (adm, findings) = node.preflight(&config);
    assert_one_failure(
        &findings,
        &node.admission_dir().join("kubeconf"),
        Some("clusters[0].cluster.certificate-authority"),
        &format!(
            "{} is not in a directory mounted into the kube-apiserver container (mounted: {}); mount {}",
            node.path("pki/webhook-ca.crt").display(),
            node.admission_dir().display(),
            node.path("pki").display()
        ),
    );
    assert_eq!(failures(&findings)[0].check, CHECK_MOUNTS);
    assert!(adm.referenced.contains(&node.path("pki/webhook-ca.crt")));

    // Mounting that directory as well (as kubeadm does for /etc/kubernetes/pki) fixes it.
    let findings = preflight(&config, &[node.admission_dir(), node.path("pki")]).1;
    assert!(!has_failures(&findings), "{findings:#?}");
}

#[test]
fn default_allow_is_a_warning() {
    let node = Node::new();
    let config = node.fixture(Some("default-allow"));
    let (adm, findings) = node.preflight(&config);
    assert!(!has_failures(&findings));
    let warn: Vec<_> = findings.iter().filter(|f| f.level == Level::Warn).collect();
    assert_eq!(warn.len(), 1, "{warn:#?}");
    assert_eq!(
        warn[0].to_string(),
        format!(
            "{}: {IP}.defaultAllow: true: the webhook fails open: if the backend is down, every image is admitted",
            config.display()
        )
    );
    assert!(adm.default_allow);
}

#[test]
fn every_check_reports_a_pass_for_doctor() {
    let node = Node::new();
    let config = node.fixture(None);
    let (_, findings) = node.preflight(&config);
    let first = &findings[0];
    assert_eq!(
        (first.check, first.level),
        (CHECK_ADMISSION_CONFIG, Level::Pass)
    );
    assert!(findings
        .iter()
        .any(|f| f.check == CHECK_CA && f.level == Level::Pass));
    assert_eq!(
        findings.iter().filter(|f| f.check == CHECK_MOUNTS).count(),
        5,
        "one per file read"
    );
}

mod no_panic {
    //! Arbitrary bytes in place of each file preflight reads: the admission
    //! config, the webhook kubeconfig, the CA bundle and the client
    //! certificate and key. Whatever they hold, preflight reports; it never
    //! panics.

    use super::*;
    use proptest::prelude::*;
    use rustls::pki_types::pem::PemObject;

    const BASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission/pki");

    /// A passing setup in a temp dir, with `name` replaced by `bytes`.
    fn run_with(name: &str, bytes: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: ImagePolicyWebhook\n  configuration:\n    imagePolicy:\n      kubeConfigFile: {0}/kubeconf\n      allowTTL: 50\n      denyTTL: 50\n",
            d.display()
        );
        let kubeconf = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: {0}/ca.crt\n    server: https://webhook:8443/check\n  name: c\ncontexts:\n- context:\n    cluster: c\n    user: u\n  name: x\ncurrent-context: x\nusers:\n- name: u\n  user:\n    client-certificate: {0}/client.crt\n    client-key: {0}/client.key\n",
            d.display()
        );
        fs::write(d.join("config.yaml"), config).unwrap();
        fs::write(d.join("kubeconf"), kubeconf).unwrap();
        for f in ["ca.crt", "client.crt", "client.key"] {
            fs::copy(Path::new(BASE).join(f), d.join(f)).unwrap();
        }
        fs::write(d.join(name), bytes).unwrap();
        let (_, findings) = preflight(&d.join("config.yaml"), &[d.to_path_buf()]);
        assert!(!findings.is_empty());
    }

    /// Bytes that look like the thing they replace often enough to get past
    /// the first parser: PEM armour around random DER, YAML-ish text, or raw.
    fn shaped() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            proptest::collection::vec(any::<u8>(), 0..400).prop_map(|der| {
                let b64 = base64::engine::general_purpose::STANDARD.encode(der);
                format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n")
                    .into_bytes()
            }),
            "[ -~\n\u{e9}\u{2028}]{0,300}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn admission_config(bytes in shaped()) { run_with("config.yaml", &bytes); }

        #[test]
        fn kubeconfig(bytes in shaped()) { run_with("kubeconf", &bytes); }

        #[test]
        fn ca_bundle(bytes in shaped()) { run_with("ca.crt", &bytes); }

        #[test]
        fn client_certificate(bytes in shaped()) { run_with("client.crt", &bytes); }

        #[test]
        fn client_key(bytes in shaped()) { run_with("client.key", &bytes); }
    }

    /// Real certificates with single bytes flipped: DER that is almost right
    /// is where a hand-written walker goes wrong.
    #[test]
    fn mutated_certificates() {
        let der = rustls::pki_types::CertificateDer::from_pem_slice(
            &fs::read(Path::new(BASE).join("client.crt")).unwrap(),
        )
        .unwrap()
        .to_vec();
        for i in 0..der.len() - 1 {
            // Single bytes, and a two-byte UTF-8 character ("é") landing
            // inside text fields such as the validity times.
            for v in [&[0x00u8][..], &[0x80], &[0xff], &[0xc3, 0xa9]] {
                let mut m = der.clone();
                m[i..i + v.len()].copy_from_slice(v);
                let b64 = base64::engine::general_purpose::STANDARD.encode(&m);
                let pem =
                    format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
                if i % 7 == 0 {
                    run_with("ca.crt", pem.as_bytes());
                }
                run_with("client.crt", pem.as_bytes());
            }
        }
    }
}
