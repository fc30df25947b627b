//! Loading, merging and validating config files.

use super::*;
use std::fs;
use std::time::Duration;

/// A temp dir laid out like /etc/staticpin.
struct Etc {
    dir: tempfile::TempDir,
}

impl Etc {
    fn new() -> Etc {
        Etc {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn paths(&self) -> ConfigPaths {
        ConfigPaths {
            main: self.dir.path().join("config.yaml"),
            dropin_dir: self.dir.path().join("config.d"),
        }
    }
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }
}

fn check_text(text: &str) -> (PathBuf, Result<Settings, ConfigError>, Etc) {
    let etc = Etc::new();
    let path = etc.write("config.yaml", text);
    let result = check(&path);
    (path, result, etc)
}

fn check_err(text: &str) -> String {
    let (path, result, _etc) = check_text(text);
    let msg = result.expect_err("expected an error").to_string();
    assert!(
        msg.starts_with(&format!("{}: ", path.display())),
        "error does not start with the file: {msg}"
    );
    msg
}

#[test]
fn no_files_means_defaults() {
    let etc = Etc::new();
    let (settings, read) = load(&etc.paths()).unwrap();
    assert_eq!(settings, Settings::default());
    assert!(read.is_empty());
    assert_eq!(
        settings.manifest_dir,
        Path::new("/etc/kubernetes/manifests")
    );
    assert_eq!(settings.backup_dir, Path::new("/var/lib/staticpin/backups"));
    assert_eq!(settings.keep_backups, 20);
    assert_eq!(settings.docker_config, None);
    assert_eq!(settings.kubelet_root_dir, Path::new("/var/lib/kubelet"));
    assert_eq!(
        settings.certs_dirs,
        [
            Path::new("/etc/containerd/certs.d"),
            Path::new("/etc/docker/certs.d")
        ]
    );
    assert!(settings.insecure_registries.is_empty());
    assert_eq!(settings.timeout, Duration::from_secs(30));
    assert_eq!(settings.connect_timeout, Duration::from_secs(10));
    assert_eq!(settings.retries, 3);
    assert_eq!(settings.concurrency, 8);
    assert!(!settings.digest_only);
    assert_eq!(settings.admission, AdmissionSettings::default());
}

#[test]
fn default_paths_are_under_etc_staticpin() {
    let p = ConfigPaths::default();
    assert_eq!(p.main, Path::new("/etc/staticpin/config.yaml"));
    assert_eq!(p.dropin_dir, Path::new("/etc/staticpin/config.d"));
}

#[test]
fn dropins_merge_in_lexical_order_and_replace_lists() {
    let etc = Etc::new();
    let main = etc.write(
        "config.yaml",
        "keepBackups: 5\ntimeout: 60\ncertsDirs: [/a, /b]\nadmission:\n  enabled: true\n",
    );
    // Written out of order, so directory order cannot make the test pass.
    let second = etc.write(
        "config.d/20-second.yaml",
        "keepBackups: 7\ncertsDirs: [/c]\nadmission:\n  configFile: /etc/adm.yaml\n",
    );
    let first = etc.write("config.d/10-first.yaml", "keepBackups: 6\nretries: 1\n");
    etc.write("config.d/.30-hidden.yaml", "keepBackups: 99\n");
    etc.write("config.d/40-disabled.yaml.bak", "keepBackups: 98\n");
    etc.write("config.d/50-notes.txt", "not yaml at all: [\n");
    etc.write("config.d/60-dir.yaml/inner.yaml", "keepBackups: 97\n");

    let (settings, read) = load(&etc.paths()).unwrap();
    assert_eq!(read, [main, first, second]);
    assert_eq!(settings.keep_backups, 7);
    assert_eq!(settings.retries, 1);
    assert_eq!(settings.timeout, Duration::from_secs(60));
    assert_eq!(settings.certs_dirs, [Path::new("/c")]);
    assert_eq!(
        settings.admission,
        AdmissionSettings {
            enabled: true,
            config_file: Some(PathBuf::from("/etc/adm.yaml")),
        }
    );
    // Untouched keys keep their defaults.
    assert_eq!(settings.concurrency, 8);
}

#[test]
fn dropins_apply_without_a_main_file() {
    let etc = Etc::new();
    let only = etc.write("config.d/10-only.yaml", "digestOnly: true\n");
    let (settings, read) = load(&etc.paths()).unwrap();
    assert_eq!(read, [only]);
    assert!(settings.digest_only);
}

#[test]
fn empty_list_replaces_a_default_list() {
    let (_, result, _etc) = check_text("certsDirs: []\n");
    assert!(result.unwrap().certs_dirs.is_empty());
}

#[test]
fn validation_blames_the_file_that_set_the_value() {
    let etc = Etc::new();
    etc.write("config.yaml", "concurrency: 0\n");
    let bad = etc.write("config.d/10-bad.yaml", "keepBackups: 0\n");
    etc.write("config.d/20-fix.yaml", "concurrency: 4\n");
    let err = load(&etc.paths()).unwrap_err();
    assert_eq!(err.path(), Some(bad.as_path()));
    assert_eq!(
        err.to_string(),
        format!("{}: keepBackups: must be at least 1, got 0", bad.display())
    );
}

#[test]
fn a_bad_dropin_stops_loading() {
    let etc = Etc::new();
    etc.write("config.yaml", "retries: 2\n");
    let bad = etc.write("config.d/10-bad.yaml", "retries: [\n");
    let err = load(&etc.paths()).unwrap_err();
    assert_eq!(err.path(), Some(bad.as_path()));
}

#[test]
fn unknown_key_names_file_line_and_column() {
    let msg = check_err("# staticpin\nkeepBackups: 3\nmanifestDirr: /etc/kubernetes/manifests\n");
    let (_, rest) = msg.split_once(": ").unwrap();
    assert!(
        rest.starts_with(
            "line 3 column 1: unknown field `manifestDirr`, expected one of `manifestDir`"
        ),
        "{msg}"
    );
    // The location is not repeated at the end.
    assert!(!rest.contains(" at line"), "{msg}");
    // The internal origin bookkeeping is not a key.
    assert!(!rest.contains("origins"), "{msg}");
}

#[test]
fn unknown_nested_key_names_the_path() {
    let msg = check_err("admission:\n  enable: true\n");
    assert!(
        msg.contains("line 2 column 3: admission: unknown field `enable`"),
        "{msg}"
    );
}

#[test]
fn wrong_type_names_file_and_line() {
    let msg = check_err("keepBackups: 3\ndigestOnly: yes\n");
    assert!(
        msg.contains(": line 2 column 13: digestOnly: invalid type"),
        "{msg}"
    );

    let msg = check_err("timeout: soon\n");
    assert!(
        msg.contains(": line 1 column 10: timeout: expected seconds or a number with a unit"),
        "{msg}"
    );

    let msg = check_err("certsDirs: /etc/docker/certs.d\n");
    assert!(
        msg.contains(": line 1 column 12: certsDirs: invalid type"),
        "{msg}"
    );

    let msg = check_err("retries: -1\n");
    assert!(
        msg.contains(": line 1 column 10: retries: invalid type: integer `-1`"),
        "{msg}"
    );

    let msg = check_err("- manifestDir: /x\n");
    assert!(
        msg.contains("expected a mapping of staticpin settings"),
        "{msg}"
    );
}

#[test]
fn syntax_error_names_file_and_line() {
    let msg = check_err("keepBackups: 3\ncertsDirs: [/a, /b\n");
    assert!(msg.contains(": line "), "{msg}");
    let msg = check_err("keepBackups: 1\n\tretries: 2\n");
    assert!(msg.contains(": line 2 column "), "{msg}");
}

#[test]
fn duplicate_key_is_an_error() {
    // serde reports duplicates at the end of the mapping, so the location
    // is the mapping's start; the key name is what makes it findable.
    let msg = check_err("retries: 1\nretries: 2\n");
    assert!(msg.contains("duplicate field `retries`"), "{msg}");
}

#[test]
fn each_validation_failure() {
    let cases: &[(&str, &str)] = &[
        ("keepBackups: 0", "keepBackups: must be at least 1"),
        (
            "concurrency: 0",
            "concurrency: must be between 1 and 256, got 0",
        ),
        (
            "concurrency: 257",
            "concurrency: must be between 1 and 256, got 257",
        ),
        ("timeout: 0", "timeout: must be positive, got 0"),
        ("timeout: -5", "timeout: must be positive, got -5"),
        ("timeout: .nan", "timeout: must be positive, got NaN"),
        (
            "timeout: .inf",
            "timeout: must be at most 1 day (24h), got inf",
        ),
        ("timeout: 1e20", "timeout: must be at most 1 day (24h)"),
        (
            "timeout: 86401",
            "timeout: must be at most 1 day (24h), got 86401",
        ),
        (
            "timeout: 25h",
            "timeout: must be at most 1 day (24h), got 25h",
        ),
        ("timeout: '0s'", "timeout: must be positive, got 0s"),
        (
            "connectTimeout: 0.0",
            "connectTimeout: must be positive, got 0",
        ),
        (
            "connectTimeout: 1d",
            "connectTimeout: expected seconds or a number with a unit",
        ),
        (
            "connectTimeout: [1]",
            "connectTimeout: invalid type: sequence, expected seconds",
        ),
        (
            "admission:\n  enabled: true",
            "admission.configFile: must be set when admission.enabled is true",
        ),
        ("insecureRegistries: ['reg.local:0']", "has an invalid port"),
        ("manifestDir: ''", "manifestDir: must not be empty"),
        (
            "manifestDir: manifests",
            "manifestDir: must be an absolute path",
        ),
        ("backupDir: ''", "backupDir: must not be empty"),
        ("dockerConfig: ''", "dockerConfig: must not be empty"),
        (
            "kubeletRootDir: relative/kubelet",
            "kubeletRootDir: must be an absolute path",
        ),
        ("certsDirs: [/ok, '']", "certsDirs[1]: must not be empty"),
        (
            "insecureRegistries: ['']",
            "insecureRegistries[0]: \"\" is empty",
        ),
        (
            "insecureRegistries: [http://reg:5000]",
            "insecureRegistries[0]: \"http://reg:5000\" has a scheme",
        ),
        ("insecureRegistries: [reg.local/library]", "has a path"),
        (
            "insecureRegistries: [reg.local, 'reg:port']",
            "insecureRegistries[1]: \"reg:port\" has an invalid port",
        ),
        ("insecureRegistries: ['reg:0']", "has an invalid port"),
        ("insecureRegistries: ['reg:65536']", "has an invalid port"),
        ("insecureRegistries: ['reg:']", "has an invalid port"),
        ("insecureRegistries: ['a:1:2']", "has an invalid port"),
        (
            "insecureRegistries: [under_score.local]",
            "is not a valid host name",
        ),
        (
            "insecureRegistries: ['-bad.local']",
            "is not a valid host name",
        ),
        (
            "insecureRegistries: ['reg..local']",
            "is not a valid host name",
        ),
        (
            "insecureRegistries: ['has space']",
            "is not a valid host name",
        ),
        (
            "insecureRegistries: ['[::1']",
            "has an unclosed IPv6 bracket",
        ),
        (
            "insecureRegistries: ['[nope]:5000']",
            "is not a valid IPv6 address",
        ),
        (
            "insecureRegistries: ['[::1]5000']",
            "has text after the IPv6 address",
        ),
        (
            "admission:\n  configFile: ''",
            "admission.configFile: must not be empty",
        ),
        (
            "backupDir: /etc/kubernetes/manifests/",
            "backupDir: must not be manifestDir",
        ),
        (
            "manifestDir: /x\nbackupDir: /x",
            "backupDir: must not be manifestDir (/x)",
        ),
    ];
    for (text, want) in cases {
        let msg = check_err(&format!("{text}\n"));
        assert!(msg.contains(want), "{text:?}: got {msg:?}, want {want:?}");
    }
}

#[test]
fn accepted_registry_hosts() {
    for h in [
        "localhost",
        "localhost:5000",
        "reg.example.com",
        "10.0.0.1:443",
        "[::1]",
        "[fd00::1]:5000",
        "Reg-1.local",
    ] {
        assert_eq!(check_registry_host(h), Ok(()), "{h}");
    }
}

#[test]
fn validation_without_origin_names_the_key() {
    let fragment = Fragment {
        keep_backups: Some(0),
        ..Fragment::default()
    };
    let err = Settings::from_fragment(fragment).unwrap_err();
    assert_eq!(err.path(), None);
    assert_eq!(err.to_string(), "keepBackups: must be at least 1, got 0");
}

#[test]
fn every_key_parses() {
    let (_, result, _etc) = check_text(
        "manifestDir: /m\nbackupDir: /b\nkeepBackups: 1\nlockFile: /l\ndockerConfig: /root/.docker/config.json\n\
         kubeletRootDir: /k\ncertsDirs: [/c]\ninsecureRegistries: ['reg.local:5000', '[::1]:5000']\n\
         timeout: 2.5\nconnectTimeout: 1\ndeadline: 90\nretries: 0\nconcurrency: 256\ndigestOnly: true\n\
         admission:\n  enabled: false\n  configFile: /a.yaml\n\
         policy:\n  trustedRegistries: [registry.k8s.io, 'myreg:5000/team/']\n  untrusted: deny\n\
         metricsFile: /metrics/staticpin.prom\nupdate: true\n\
         stateDir: /s\ndebounce: 100ms\nresync: 1m\nkubeadmTmpDir: /t\nhealthGate: false\noffline: true\n\
         serve:\n  listen: '[::1]:1'\n  metricsListen: 127.0.0.2:2\n  tlsCert: /t.crt\n  tlsKey: /t.key\n  \
         clientCA: /ca.crt\n  mode: audit\n",
    );
    let s = result.unwrap();
    assert_eq!(
        s,
        Settings {
            manifest_dir: "/m".into(),
            backup_dir: "/b".into(),
            keep_backups: 1,
            docker_config: Some("/root/.docker/config.json".into()),
            kubelet_root_dir: "/k".into(),
            certs_dirs: vec!["/c".into()],
            insecure_registries: vec!["reg.local:5000".into(), "[::1]:5000".into()],
            timeout: Duration::from_millis(2500),
            connect_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(90),
            lock_file: "/l".into(),
            retries: 0,
            concurrency: 256,
            digest_only: true,
            admission: AdmissionSettings {
                enabled: false,
                config_file: Some("/a.yaml".into()),
            },
            policy: crate::policy::Policy::from_raw(&crate::policy::RawPolicy {
                trusted_registries: Some(vec!["registry.k8s.io".into(), "myreg:5000/team".into()]),
                untrusted: Some(crate::policy::Untrusted::Deny),
                ..Default::default()
            })
            .unwrap(),
            metrics_file: Some("/metrics/staticpin.prom".into()),
            update: true,
            state_dir: "/s".into(),
            debounce: Duration::from_millis(100),
            resync: Duration::from_secs(60),
            kubeadm_tmp_dir: "/t".into(),
            health_gate: false,
            offline: true,
            serve: ServeSettings {
                listen: "[::1]:1".parse().unwrap(),
                metrics_listen: "127.0.0.2:2".parse().unwrap(),
                tls_cert: Some("/t.crt".into()),
                tls_key: Some("/t.key".into()),
                client_ca: Some("/ca.crt".into()),
                mode: crate::policy::Mode::Audit,
            },
        }
    );
}

#[test]
fn serve_listens_on_loopback_only_and_blames_the_file() {
    for (text, want) in [
        (
            "serve:\n  listen: 0.0.0.0:8443\n",
            "serve.listen: 0.0.0.0:8443 is not a loopback address",
        ),
        (
            "serve:\n  listen: localhost:8443\n",
            "serve.listen: expected a loopback IP:PORT",
        ),
        (
            "serve:\n  metricsListen: '[::]:9843'\n",
            "serve.metricsListen: [::]:9843 is not a loopback",
        ),
        (
            "serve:\n  listen: 127.0.0.1:0\n",
            "serve.listen: \"127.0.0.1:0\" has no port",
        ),
        (
            "serve:\n  listen: 127.0.0.1:9843\n",
            "serve.listen: must differ from serve.metricsListen",
        ),
        (
            "serve:\n  tlsKey: rel/key\n",
            "serve.tlsKey: must be an absolute path",
        ),
        (
            "serve:\n  mode: permissive\n",
            "unknown variant `permissive`",
        ),
        ("serve:\n  clientCa: /x\n", "unknown field `clientCa`"),
        (
            "policy:\n  exemptNamespaces: [Kube_System]\n",
            "policy.exemptNamespaces[0]: ",
        ),
        (
            "policy:\n  trustedRegistries: ['https://x']\n",
            "policy.trustedRegistries[0]: ",
        ),
    ] {
        let msg = check_err(text);
        assert!(msg.contains(want), "{text:?}: {msg}");
    }
}

#[test]
fn serve_and_policy_merge_per_key_across_dropins() {
    let etc = Etc::new();
    etc.write(
        "config.yaml",
        "serve:\n  listen: 127.0.0.1:1\n  mode: audit\npolicy:\n  requireDigest: true\n  denyLatest: true\n",
    );
    etc.write(
        "config.d/50-local-webhook.yaml",
        "serve:\n  listen: 127.0.0.1:2\n  tlsCert: /c\npolicy:\n  denyLatest: false\n",
    );
    let (s, _) = load(&etc.paths()).unwrap();
    assert_eq!(s.serve.listen, "127.0.0.1:2".parse().unwrap());
    assert_eq!(s.serve.mode, crate::policy::Mode::Audit);
    assert_eq!(s.serve.tls_cert, Some("/c".into()));
    assert!(s.policy.require_digest);
    assert!(!s.policy.deny_latest);
    // The drop-in that set a bad value is the one blamed.
    let bad = etc.write(
        "config.d/60-bad.yaml",
        "policy:\n  exemptNamespaces: ['*']\n",
    );
    let msg = load(&etc.paths()).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}: policy.exemptNamespaces[0]", bad.display())),
        "{msg}"
    );
}

#[test]
fn policy_errors_name_the_key_and_the_file_that_set_it() {
    let (_, result, _etc) = check_text(
        "policy:\n  trustedRegistries: [registry.k8s.io, 'registry.k8s.io/pause:3.9']\n",
    );
    let e = result.unwrap_err().to_string();
    assert!(e.contains("policy.trustedRegistries[1]"), "{e}");
    assert!(e.contains("config.yaml"), "{e}");
    let (_, result, _etc) = check_text("policy:\n  untrusted: maybe\n");
    assert!(result.is_err());
    let (_, result, _etc) = check_text("metricsFile: relative.prom\n");
    assert!(result.unwrap_err().to_string().contains("metricsFile"));
}

#[test]
fn policy_merges_per_key_across_files() {
    let a = Fragment {
        policy: Some(crate::policy::RawPolicy {
            trusted_registries: Some(vec!["a.io".into()]),
            untrusted: Some(crate::policy::Untrusted::Deny),
            ..Default::default()
        }),
        ..Fragment::default()
    };
    let b = Fragment {
        policy: Some(crate::policy::RawPolicy {
            trusted_registries: Some(vec!["b.io".into()]),
            ..Default::default()
        }),
        ..Fragment::default()
    };
    let s = Settings::from_fragment(a.merge(b)).unwrap();
    assert_eq!(s.policy.untrusted, crate::policy::Untrusted::Deny);
    assert_eq!(s.policy.trusted_registries.len(), 1);
    assert_eq!(s.policy.trusted_registries[0].domain(), "b.io");
}

#[test]
fn empty_and_comment_only_files_are_empty_fragments() {
    for text in ["", "\n", "# nothing here\n# at all\n", "---\n", "~\n"] {
        let (_, result, _etc) = check_text(text);
        assert_eq!(result.unwrap(), Settings::default(), "{text:?}");
    }
}

#[test]
fn a_null_value_means_not_set() {
    let etc = Etc::new();
    etc.write("config.yaml", "retries: 5\n");
    etc.write("config.d/10-x.yaml", "retries:\n");
    let (settings, _) = load(&etc.paths()).unwrap();
    assert_eq!(settings.retries, 5);
}

#[test]
fn check_of_a_missing_file_names_it() {
    let etc = Etc::new();
    let missing = etc.dir.path().join("nope.yaml");
    let err = check(&missing).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display())),
        "{err}"
    );
}

#[test]
fn unreadable_main_file_is_an_error_for_load() {
    // A directory where the file should be: not "missing", so not defaults.
    let etc = Etc::new();
    fs::create_dir(etc.paths().main).unwrap();
    let err = load(&etc.paths()).unwrap_err();
    assert_eq!(err.path(), Some(etc.paths().main.as_path()));
}

#[test]
fn dropin_dir_that_is_a_file_is_an_error() {
    let etc = Etc::new();
    etc.write("config.d", "oops\n");
    let err = load(&etc.paths()).unwrap_err();
    assert!(matches!(err, ConfigError::ReadDir { .. }), "{err}");
    assert!(err
        .to_string()
        .starts_with(&etc.paths().dropin_dir.display().to_string()));
}

#[test]
fn origins_follow_the_last_writer() {
    let a = Fragment {
        retries: Some(1),
        keep_backups: Some(1),
        origins: [
            ("retries", PathBuf::from("/a")),
            ("keepBackups", PathBuf::from("/a")),
        ]
        .into(),
        ..Fragment::default()
    };
    let b = Fragment {
        retries: Some(2),
        origins: [("retries", PathBuf::from("/b"))].into(),
        ..Fragment::default()
    };
    let m = a.merge(b);
    assert_eq!(m.retries, Some(2));
    assert_eq!(m.keep_backups, Some(1));
    assert_eq!(m.origins["retries"], Path::new("/b"));
    assert_eq!(m.origins["keepBackups"], Path::new("/a"));
}

#[test]
fn shipped_example_passes_check() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml"));
    let settings = check(path).unwrap_or_else(|e| panic!("{e}"));
    // The example documents the defaults, so it must not change them.
    assert_eq!(settings, Settings::default());
}

#[test]
fn shipped_example_names_the_file_admission_init_writes() {
    let text = include_str!("../../examples/config.yaml");
    let written =
        Path::new(crate::admission::init::DEFAULT_DIR).join(crate::admission::init::CONFIG_FILE);
    let line = format!("# configFile: {}\n", written.display());
    assert!(text.contains(&line), "examples/config.yaml lacks {line:?}");
    assert!(!text.contains("not used yet"));
}

#[test]
fn shipped_example_states_the_default_of_each_key() {
    let text = include_str!("../../examples/config.yaml");
    let d = Settings::default();
    for line in [
        format!("manifestDir: {}\n", d.manifest_dir.display()),
        format!("backupDir: {}\n", d.backup_dir.display()),
        format!("keepBackups: {}\n", d.keep_backups),
        format!("kubeletRootDir: {}\n", d.kubelet_root_dir.display()),
        format!("timeout: {}\n", d.timeout.as_secs()),
        format!("connectTimeout: {}\n", d.connect_timeout.as_secs()),
        format!("retries: {}\n", d.retries),
        format!("concurrency: {}\n", d.concurrency),
        format!("  untrusted: {}\n", d.policy.untrusted),
        format!("update: {}\n", d.update),
        "  trustedRegistries: []\n".to_string(),
        "# metricsFile: ".to_string(),
        format!(
            "Registry requests in flight at once, 1 to {}.",
            MAX_CONCURRENCY
        ),
    ] {
        assert!(text.contains(&line), "examples/config.yaml lacks {line:?}");
    }
}
