//! Preflight cases, each a small edit of one passing CKS-style setup.

use super::*;
use std::os::unix::fs::symlink;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

const PKI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission/pki");

fn pki(name: &str) -> Vec<u8> {
    fs::read(Path::new(PKI).join(name)).unwrap()
}

/// A CKS-style setup: everything in one directory, referenced absolutely.
const CONFIG: &str = "\
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ImagePolicyWebhook
  configuration:
    imagePolicy:
      kubeConfigFile: @DIR@/kubeconf
      allowTTL: 50
      denyTTL: 50
      retryBackoff: 500
      defaultAllow: false
";

const KUBECONF: &str = "\
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority: @DIR@/webhook-ca.crt
    server: https://image-bouncer-webhook:30080/image_policy
  name: bouncer_webhook
contexts:
- context:
    cluster: bouncer_webhook
    user: api-server
  name: bouncer_validator
current-context: bouncer_validator
preferences: {}
users:
- name: api-server
  user:
    client-certificate: @DIR@/apiserver-client.crt
    client-key: @DIR@/apiserver-client.key
";

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup::with(CONFIG, KUBECONF)
    }

    fn with(config: &str, kubeconf: &str) -> Setup {
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        s.write("webhook-ca.crt", &pki("ca.crt"));
        s.write("apiserver-client.crt", &pki("client.crt"));
        s.write("apiserver-client.key", &pki("client.key"));
        s.write_text("admission_config.yaml", config);
        s.write_text("kubeconf", kubeconf);
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        fs::write(self.path(name), bytes).unwrap();
    }

    /// Writes text with `@DIR@` replaced by this setup's directory.
    fn write_text(&self, name: &str, text: &str) {
        let text = text.replace("@DIR@", &self.dir.path().display().to_string());
        self.write(name, text.as_bytes());
    }

    fn config(&self) -> PathBuf {
        self.path("admission_config.yaml")
    }

    fn kubeconf(&self) -> PathBuf {
        self.path("kubeconf")
    }

    fn run(&self) -> (Admission, Vec<Finding>) {
        preflight(&self.config(), &[self.dir.path().to_path_buf()])
    }

    fn with_config(config: &str) -> Setup {
        Setup::with(config, KUBECONF)
    }

    fn with_kubeconf(kubeconf: &str) -> Setup {
        Setup::with(CONFIG, kubeconf)
    }
}

fn at_level(findings: &[Finding], level: Level) -> Vec<&Finding> {
    findings.iter().filter(|f| f.level == level).collect()
}

/// Asserts exactly one failure, in `file` at `field`, whose message
/// contains `needle`, and that Display names both.
#[track_caller]
fn assert_fails(findings: &[Finding], file: &Path, field: Option<&str>, needle: &str) {
    let fails = at_level(findings, Level::Fail);
    assert_eq!(fails.len(), 1, "expected one failure: {fails:#?}");
    let f = fails[0];
    assert_eq!(f.file, file, "{f}");
    assert_eq!(f.field.as_deref(), field, "{f}");
    assert!(
        f.message.contains(needle),
        "{f}\n  does not contain {needle:?}"
    );
    let shown = f.to_string();
    assert!(
        shown.starts_with(&format!("{}: ", file.display())),
        "{shown}"
    );
    if let Some(field) = field {
        assert!(shown.contains(&format!(": {field}: ")), "{shown}");
    }
    assert!(has_failures(findings));
}

#[track_caller]
fn assert_warns(findings: &[Finding], check: &str, field_suffix: &str, needle: &str) {
    assert!(
        !has_failures(findings),
        "{:#?}",
        at_level(findings, Level::Fail)
    );
    assert!(
        findings.iter().any(|f| f.level == Level::Warn
            && f.check == check
            && f.field.as_deref().unwrap_or("").ends_with(field_suffix)
            && f.message.contains(needle)),
        "no warning {check} {field_suffix} {needle:?} in {findings:#?}"
    );
}

const FIELD: &str = "plugins[0].configuration.imagePolicy";

/// Which file of the setup a case edits.
#[derive(Clone, Copy, Debug)]
enum In {
    Config,
    Kubeconf,
}

/// One broken setting: the file, the text replaced in it, the field the
/// failure must name (`@F@` stands for the imagePolicy field path) and a
/// part of its message.
struct Broken {
    file: In,
    from: &'static str,
    to: &'static str,
    field: &'static str,
    needle: &'static str,
}

const fn broken(
    file: In,
    from: &'static str,
    to: &'static str,
    field: &'static str,
    needle: &'static str,
) -> Broken {
    Broken {
        file,
        from,
        to,
        field,
        needle,
    }
}

const BROKEN: &[Broken] = &[
    broken(In::Config, "config.k8s.io/v1", "config.k8s.io/v2", "apiVersion",
        "must be apiserver.config.k8s.io/v1, got the string \"apiserver.config.k8s.io/v2\""),
    broken(In::Config, "kind: AdmissionConfiguration", "kind: Config", "kind",
        "must be AdmissionConfiguration"),
    broken(In::Config, "apiVersion: apiserver.config.k8s.io/v1\n", "", "apiVersion", "not set"),
    broken(In::Config, "allowTTL: 50", "allowTTL: 50s", "@F@.allowTTL",
        "must be an integer between 1 and 1800 (seconds), or 0 for the default or -1 to disable, got the string \"50s\""),
    broken(In::Config, "denyTTL: 50", "denyTTL: 3600", "@F@.denyTTL", "got 3600"),
    broken(In::Config, "allowTTL: 50", "allowTTL: -2", "@F@.allowTTL", "got -2"),
    broken(In::Config, "allowTTL: 50", "allowTTL: 50.5", "@F@.allowTTL", "got 50.5"),
    broken(In::Config, "retryBackoff: 500", "retryBackoff: 300001", "@F@.retryBackoff",
        "between 1 and 300000 (milliseconds), or 0 for the default or -1 to disable, got 300001"),
    broken(In::Config, "allowTTL: 50", "allowttl: 5000", "@F@.allowttl", "got 5000"),
    broken(In::Config, "defaultAllow: false", "defaultAllow: \"no\"", "@F@.defaultAllow",
        "must be true or false"),
    broken(In::Kubeconf, "apiVersion: v1", "apiVersion: v2", "apiVersion", "must be v1"),
    broken(In::Kubeconf, "current-context: bouncer_validator\n", "", "current-context", "not set"),
    broken(In::Kubeconf, "current-context: bouncer_validator", "current-context: other",
        "current-context", "names context \"other\", which is not in contexts"),
    broken(In::Kubeconf, "cluster: bouncer_webhook", "cluster: webhook",
        "contexts[0].context.cluster", "names cluster \"webhook\", which is not in clusters"),
    broken(In::Kubeconf, "user: api-server", "user: apiserver", "contexts[0].context.user",
        "names user \"apiserver\", which is not in users"),
    broken(In::Kubeconf, "users:\n", "users:\n- name: api-server\n  user:\n    token: abc\n",
        "users[1].name", "duplicate name \"api-server\""),
    broken(In::Kubeconf, "https://image-bouncer", "http://image-bouncer",
        "clusters[0].cluster.server", "must be an https:// URL with a host"),
    broken(In::Kubeconf, "https://image-bouncer-webhook:30080", "https://:30080",
        "clusters[0].cluster.server", "https://"),
    broken(In::Kubeconf, "    server: https://image-bouncer-webhook:30080/image_policy\n", "",
        "clusters[0].cluster.server", "not set"),
];

#[test]
fn each_broken_setting_fails_at_its_field() {
    for b in BROKEN {
        let (config, kubeconf) = match b.file {
            In::Config => (CONFIG.replace(b.from, b.to), KUBECONF.to_string()),
            In::Kubeconf => (CONFIG.to_string(), KUBECONF.replace(b.from, b.to)),
        };
        assert!(
            config != CONFIG || kubeconf != KUBECONF,
            "{:?} {:?} is not in the base setup",
            b.file,
            b.from
        );
        let s = Setup::with(&config, &kubeconf);
        let file = match b.file {
            In::Config => s.config(),
            In::Kubeconf => s.kubeconf(),
        };
        let field = b.field.replace("@F@", FIELD);
        assert_fails(&s.run().1, &file, Some(&field), b.needle);
    }
}

#[test]
fn cks_setup_passes_every_check() {
    let s = Setup::new();
    let (adm, findings) = s.run();
    assert!(at_level(&findings, Level::Fail).is_empty(), "{findings:#?}");
    assert!(at_level(&findings, Level::Warn).is_empty(), "{findings:#?}");
    for check in [
        CHECK_ADMISSION_CONFIG,
        CHECK_PLUGIN,
        CHECK_SETTINGS,
        CHECK_FAIL_OPEN,
        CHECK_KUBECONFIG,
        CHECK_SERVER,
        CHECK_CA,
        CHECK_CLIENT_CERT,
        CHECK_MOUNTS,
    ] {
        assert!(
            findings.iter().any(|f| f.check == check),
            "no {check} finding"
        );
    }
    assert_eq!(adm.config_file, s.config());
    assert_eq!(adm.kubeconfig, Some(s.kubeconf()));
    assert_eq!(
        adm.referenced,
        [
            s.config(),
            s.kubeconf(),
            s.path("webhook-ca.crt"),
            s.path("apiserver-client.crt"),
            s.path("apiserver-client.key")
        ]
    );
    assert!(!adm.default_allow);
    let mounts = findings.iter().filter(|f| f.check == CHECK_MOUNTS).count();
    assert_eq!(mounts, 5);
}

#[test]
fn unreadable_config_names_the_file() {
    let s = Setup::new();
    let missing = s.path("nope.yaml");
    let (_, findings) = preflight(&missing, &[s.dir.path().to_path_buf()]);
    assert_fails(&findings, &missing, None, "cannot read");
}

#[test]
fn config_that_does_not_parse() {
    let s = Setup::with_config("plugins:\n  - name: [ImagePolicyWebhook\n");
    assert_fails(&s.run().1, &s.config(), None, "does not parse as YAML");
    let s = Setup::with_config("{\"apiVersion\": \"apiserver.config.k8s.io/v1\",");
    assert_fails(&s.run().1, &s.config(), None, "does not parse as JSON");
    let s = Setup::with_config("");
    assert_fails(&s.run().1, &s.config(), None, "is empty");
    let s = Setup::with_config("- ImagePolicyWebhook\n");
    assert_fails(&s.run().1, &s.config(), None, "must be a mapping");
}

#[test]
fn deprecated_api_version_warns() {
    let s = Setup::with_config(&CONFIG.replace(API_VERSION, API_VERSION_DEPRECATED));
    assert_warns(
        &s.run().1,
        CHECK_ADMISSION_CONFIG,
        "apiVersion",
        "deprecated",
    );
}

#[test]
fn legacy_bare_form_and_json_pass() {
    let s = Setup::with_config(
            "imagePolicy:\n  kubeConfigFile: @DIR@/kubeconf\n  allowTTL: 50\n  denyTTL: 50\n  retryBackoff: 500\n",
        );
    let (adm, findings) = s.run();
    assert!(!has_failures(&findings), "{findings:#?}");
    assert!(findings
        .iter()
        .any(|f| f.field.as_deref() == Some("imagePolicy.allowTTL")));
    assert_eq!(adm.kubeconfig, Some(s.kubeconf()));

    let s = Setup::with_config(
        r#"{"apiVersion":"apiserver.config.k8s.io/v1","kind":"AdmissionConfiguration",
"plugins":[{"name":"ImagePolicyWebhook","configuration":{"imagePolicy":{
"kubeConfigFile":"@DIR@/kubeconf","allowTTL":100,"denyTTL":50,"retryBackoff":500,"defaultAllow":false}}}]}"#,
    );
    let findings = s.run().1;
    assert!(!has_failures(&findings), "{findings:#?}");
}

#[test]
fn no_image_policy_plugin() {
    let s = Setup::with_config(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: EventRateLimit\n  path: eventconfig.yaml\n",
        );
    let (adm, findings) = s.run();
    assert_fails(
        &findings,
        &s.config(),
        Some("plugins"),
        "no entry with name: ImagePolicyWebhook",
    );
    assert_eq!(adm.referenced, [s.config()]);

    // A typed file with the legacy key next to it: the key is ignored.
    let s = Setup::with_config(
        &format!("{CONFIG}imagePolicy:\n  kubeConfigFile: x\n")
            .replace("- name: ImagePolicyWebhook", "- name: PodNodeSelector"),
    );
    assert_fails(
        &s.run().1,
        &s.config(),
        Some("plugins"),
        "move it under plugins[].configuration",
    );
}

#[test]
fn plugin_without_configuration_or_path() {
    let s = Setup::with_config(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: EventRateLimit\n- name: ImagePolicyWebhook\n",
        );
    assert_fails(
        &s.run().1,
        &s.config(),
        Some("plugins[1]"),
        "neither configuration nor path",
    );
}

#[test]
fn plugin_path_is_relative_to_the_config_and_must_exist() {
    let by_path = "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: ImagePolicyWebhook\n  path: imagepolicy.yaml\n";
    let s = Setup::with_config(by_path);
    assert_fails(
        &s.run().1,
        &s.config(),
        Some("plugins[0].path"),
        &format!("cannot read {}", s.path("imagepolicy.yaml").display()),
    );

    s.write_text(
            "imagepolicy.yaml",
            "imagePolicy:\n  kubeConfigFile: @DIR@/kubeconf\n  allowTTL: 0\n  denyTTL: -1\n  retryBackoff: 0\n",
        );
    let (adm, findings) = s.run();
    assert!(!has_failures(&findings), "{findings:#?}");
    assert_eq!(adm.referenced[1], s.path("imagepolicy.yaml"));
    let ttl = findings
        .iter()
        .find(|f| f.field.as_deref() == Some("imagePolicy.denyTTL"))
        .unwrap();
    assert_eq!(ttl.file, s.path("imagepolicy.yaml"));
    assert_eq!(ttl.message, "-1: disabled");

    // A bad value in the path file names that file.
    s.write_text(
        "imagepolicy.yaml",
        "imagePolicy:\n  kubeConfigFile: @DIR@/kubeconf\n  allowTTL: 50s\n",
    );
    assert_fails(
        &s.run().1,
        &s.path("imagepolicy.yaml"),
        Some("imagePolicy.allowTTL"),
        "got the string \"50s\"",
    );
}

#[test]
fn embedded_configuration_wins_over_path() {
    let s = Setup::with_config(&CONFIG.replace(
        "  configuration:",
        "  path: does-not-exist.yaml\n  configuration:",
    ));
    assert_warns(
        &s.run().1,
        CHECK_PLUGIN,
        "plugins[0].path",
        "embedded configuration wins",
    );
}

#[test]
fn retry_backoff_out_of_range() {
    let s = Setup::with_config(&CONFIG.replace("retryBackoff: 500", "retryBackoff: 300001"));
    assert_fails(
        &s.run().1,
        &s.config(),
        Some(&format!("{FIELD}.retryBackoff")),
        "between 1 and 300000 (milliseconds), or 0 for the default or -1 to disable, got 300001",
    );
    let s = Setup::with_config(&CONFIG.replace("retryBackoff: 500", "retryBackoff: 300000"));
    assert!(!has_failures(&s.run().1));
}

#[test]
fn duration_sentinels_and_the_old_exclusive_minimum() {
    let s = Setup::with_config(
        &CONFIG
            .replace("allowTTL: 50", "allowTTL: 0")
            .replace("denyTTL: 50", "denyTTL: -1")
            .replace("retryBackoff: 500", "retryBackoff: 1"),
    );
    let findings = s.run().1;
    assert!(at_level(&findings, Level::Warn).is_empty(), "{findings:#?}");
    let s = Setup::with_config(&CONFIG.replace("allowTTL: 50", "allowTTL: 1"));
    assert_warns(
        &s.run().1,
        CHECK_SETTINGS,
        "allowTTL",
        "older kube-apiserver versions",
    );
    let s = Setup::with_config(&CONFIG.replace("      allowTTL: 50\n", ""));
    let findings = s.run().1;
    let f = findings
        .iter()
        .find(|f| f.field.as_deref() == Some(&format!("{FIELD}.allowTTL")))
        .unwrap();
    assert_eq!(
        (f.level, f.message.as_str()),
        (Level::Pass, "not set: the default, 300 seconds")
    );
}

#[test]
fn keys_match_case_insensitively_like_go() {
    let s = Setup::with_config(&CONFIG.replace("allowTTL: 50", "allowttl: 5000"));
    assert_fails(
        &s.run().1,
        &s.config(),
        Some(&format!("{FIELD}.allowttl")),
        "got 5000",
    );
    let s = Setup::with_config(&CONFIG.replace("allowTTL: 50", "allowttl: 50"));
    assert_warns(&s.run().1, CHECK_SETTINGS, "allowttl", "write allowTTL");
    let s = Setup::with_config(&CONFIG.replace("allowTTL: 50", "allowTTL: 50\n      cacheTTL: 5"));
    assert_warns(&s.run().1, CHECK_SETTINGS, "cacheTTL", "unknown key");
}

#[test]
fn kube_config_file_missing_relative_or_absent() {
    let s = Setup::with_config(&CONFIG.replace("      kubeConfigFile: @DIR@/kubeconf\n", ""));
    assert_fails(
        &s.run().1,
        &s.config(),
        Some(&format!("{FIELD}.kubeConfigFile")),
        "not set",
    );
    let s = Setup::with_config(&CONFIG.replace("@DIR@/kubeconf", "kubeconf"));
    assert_fails(
        &s.run().1,
        &s.config(),
        Some(&format!("{FIELD}.kubeConfigFile")),
        "must be an absolute path, got \"kubeconf\"",
    );
    let s = Setup::with_config(&CONFIG.replace("@DIR@/kubeconf", "@DIR@/kubeconfig"));
    assert_fails(
        &s.run().1,
        &s.config(),
        Some(&format!("{FIELD}.kubeConfigFile")),
        &format!("cannot read {}", s.path("kubeconfig").display()),
    );
    let s = Setup::with_config(&CONFIG.replace("imagePolicy:", "imagepolicy:"));
    assert_fails(&s.run().1, &s.config(), Some(FIELD), "not set");
}

#[test]
fn default_allow_warns_that_the_webhook_fails_open() {
    let s = Setup::with_config(&CONFIG.replace("defaultAllow: false", "defaultAllow: true"));
    let (adm, findings) = s.run();
    assert_warns(
        &findings,
        CHECK_FAIL_OPEN,
        "defaultAllow",
        "the webhook fails open: if the backend is down, every image is admitted",
    );
    assert!(adm.default_allow);
    let s = Setup::with_config(&CONFIG.replace("defaultAllow: false", "defaultAllow: \"no\""));
    assert_fails(
        &s.run().1,
        &s.config(),
        Some(&format!("{FIELD}.defaultAllow")),
        "must be true or false",
    );
}

#[test]
fn kubeconfig_that_does_not_parse() {
    let s = Setup::with_kubeconf("clusters: {name: x\n");
    assert_fails(&s.run().1, &s.kubeconf(), None, "does not parse as YAML");
    let s = Setup::with_kubeconf("clusters:\n  name: x\n");
    assert_fails(&s.run().1, &s.kubeconf(), None, "does not parse as YAML");
    let s = Setup::with_kubeconf(&KUBECONF.replace("apiVersion: v1", "apiVersion: v2"));
    assert_fails(&s.run().1, &s.kubeconf(), Some("apiVersion"), "must be v1");
}

#[test]
fn ca_must_exist_and_hold_a_certificate() {
    let s = Setup::new();
    fs::remove_file(s.path("webhook-ca.crt")).unwrap();
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("clusters[0].cluster.certificate-authority"),
        &format!("cannot read {}", s.path("webhook-ca.crt").display()),
    );
    let s = Setup::new();
    s.write("webhook-ca.crt", b"not a certificate\n");
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("clusters[0].cluster.certificate-authority"),
        "has no PEM CERTIFICATE block",
    );
    let s = Setup::new();
    s.write("webhook-ca.crt", &pki("client.key"));
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("clusters[0].cluster.certificate-authority"),
        "holds a private key",
    );
}

#[test]
fn ca_file_and_data_together_are_refused() {
    let data = base64::engine::general_purpose::STANDARD.encode(pki("ca.crt"));
    let s = Setup::with_kubeconf(&KUBECONF.replace(
        "    server:",
        &format!("    certificate-authority-data: {data}\n    server:"),
    ));
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("clusters[0].cluster.certificate-authority-data"),
        "set together with certificate-authority",
    );
}

#[test]
fn insecure_skip_verify() {
    let s = Setup::with_kubeconf(&KUBECONF.replace(
        "    server:",
        "    insecure-skip-tls-verify: true\n    server:",
    ));
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("clusters[0].cluster.insecure-skip-tls-verify"),
        "client-go refuses the combination",
    );
    let s = Setup::with_kubeconf(&KUBECONF.replace(
        "    certificate-authority: @DIR@/webhook-ca.crt\n",
        "    insecure-skip-tls-verify: true\n",
    ));
    assert_warns(
        &s.run().1,
        CHECK_CA,
        "insecure-skip-tls-verify",
        "not verified",
    );
}

#[test]
fn inline_data_forms_pass() {
    let b64 = |name: &str| base64::engine::general_purpose::STANDARD.encode(pki(name));
    let kubeconf = KUBECONF
        .replace(
            "certificate-authority: @DIR@/webhook-ca.crt",
            &format!("certificate-authority-data: {}", b64("ca.crt")),
        )
        .replace(
            "client-certificate: @DIR@/apiserver-client.crt",
            &format!("client-certificate-data: {}", b64("client.crt")),
        )
        .replace(
            "client-key: @DIR@/apiserver-client.key",
            &format!("client-key-data: {}", b64("client.key")),
        );
    let s = Setup::with_kubeconf(&kubeconf);
    let (adm, findings) = s.run();
    assert!(!has_failures(&findings), "{findings:#?}");
    assert_eq!(adm.referenced, [s.config(), s.kubeconf()]);

    let s = Setup::with_kubeconf(&kubeconf.replace("client-key-data: ", "client-key-data: $$"));
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("users[0].user.client-key-data"),
        "not valid base64",
    );
}

#[test]
fn key_formats_and_v1_certificates_are_accepted() {
    for (cert, key) in [
        ("client.crt", "client-sec1.key"),
        ("client-rsa.crt", "client-rsa.key"),
        ("client-v1.crt", "client.key"),
    ] {
        let s = Setup::new();
        s.write("apiserver-client.crt", &pki(cert));
        s.write("apiserver-client.key", &pki(key));
        let findings = s.run().1;
        assert!(!has_failures(&findings), "{cert} {key}: {findings:#?}");
        assert!(at_level(&findings, Level::Warn).is_empty(), "{findings:#?}");
    }
}

#[test]
fn key_must_match_the_certificate() {
    let s = Setup::new();
    s.write("apiserver-client.key", &pki("other.key"));
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("users[0].user.client-key"),
        &format!(
            "{}: the key does not match the certificate in {}",
            s.path("apiserver-client.key").display(),
            s.path("apiserver-client.crt").display()
        ),
    );
    let s = Setup::new();
    s.write("apiserver-client.key", &pki("client-rsa.key"));
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("users[0].user.client-key"),
        "does not match",
    );
}

#[test]
fn swapped_certificate_and_key() {
    let s = Setup::with_kubeconf(
        &KUBECONF
            .replace("apiserver-client.crt", "TMP")
            .replace("apiserver-client.key", "apiserver-client.crt")
            .replace("TMP", "apiserver-client.key"),
    );
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("users[0].user.client-certificate"),
        "swapped",
    );
}

#[test]
fn client_certificate_needs_its_key() {
    let s =
        Setup::with_kubeconf(&KUBECONF.replace("    client-key: @DIR@/apiserver-client.key\n", ""));
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("users[0].user.client-key"),
        "not set",
    );
    let s = Setup::with_kubeconf(
        &KUBECONF.replace("    client-certificate: @DIR@/apiserver-client.crt\n", ""),
    );
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("users[0].user.client-certificate"),
        "not set",
    );
    let s = Setup::new();
    fs::remove_file(s.path("apiserver-client.key")).unwrap();
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("users[0].user.client-key"),
        &format!("cannot read {}", s.path("apiserver-client.key").display()),
    );
    let s = Setup::new();
    s.write(
        "apiserver-client.key",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("users[0].user.client-key"),
        "no PEM private key block",
    );
}

#[test]
fn user_without_credentials() {
    let no_creds = KUBECONF
        .replace("    client-certificate: @DIR@/apiserver-client.crt\n", "")
        .replace(
            "    client-key: @DIR@/apiserver-client.key\n",
            "    username: x\n",
        );
    let s = Setup::with_kubeconf(&no_creds);
    assert_warns(&s.run().1, CHECK_CLIENT_CERT, "users[0].user", "basic auth");
    let s = Setup::with_kubeconf(
        &no_creds
            .replace("    username: x\n", "    {}\n")
            .replace("  user:\n    {}", "  user: {}"),
    );
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("users[0].user.client-certificate"),
        "no other credentials",
    );
}

#[test]
fn expired_client_certificate_warns() {
    let s = Setup::new();
    s.write("apiserver-client.crt", &pki("client-expired.crt"));
    assert_warns(
        &s.run().1,
        CHECK_CLIENT_CERT,
        "client-certificate",
        "expired on 2001-01-01 00:00:00 UTC",
    );
}

#[test]
fn relative_paths_in_the_kubeconfig_resolve_against_its_directory() {
    let s = Setup::with_kubeconf(&KUBECONF.replace("@DIR@/", ""));
    let (adm, findings) = s.run();
    assert!(!has_failures(&findings), "{findings:#?}");
    assert!(adm.referenced.contains(&s.path("apiserver-client.key")));
}

#[test]
fn files_outside_the_mounts_fail() {
    let s = Setup::new();
    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join("ca.crt"), pki("ca.crt")).unwrap();
    s.write_text(
        "kubeconf",
        &KUBECONF.replace(
            "@DIR@/webhook-ca.crt",
            &other.path().join("ca.crt").display().to_string(),
        ),
    );
    assert_fails(
            &s.run().1,
            &s.kubeconf(),
            Some("clusters[0].cluster.certificate-authority"),
            &format!(
                "{} is not in a directory mounted into the kube-apiserver container (mounted: {}); mount {}",
                other.path().join("ca.crt").display(),
                s.dir.path().display(),
                other.path().display()
            ),
        );

    // Nothing mounted at all: the config itself is the first failure.
    let s = Setup::new();
    let findings = preflight(&s.config(), &[]).1;
    let f = findings.iter().find(|f| f.level == Level::Fail).unwrap();
    assert_eq!(
        (f.file.as_path(), f.field.as_deref()),
        (s.config().as_path(), None)
    );
    assert_eq!(at_level(&findings, Level::Fail).len(), 5);
}

#[test]
fn symlink_out_of_the_mount_fails() {
    let s = Setup::new();
    let other = tempfile::tempdir().unwrap();
    let real = other.path().join("client.key");
    fs::rename(s.path("apiserver-client.key"), &real).unwrap();
    symlink(&real, s.path("apiserver-client.key")).unwrap();
    assert_fails(
        &s.run().1,
        &s.kubeconf(),
        Some("users[0].user.client-key"),
        &format!("is a symlink to {}", real.display()),
    );
    // Mount the target too and it is fine.
    let findings = preflight(
        &s.config(),
        &[s.dir.path().to_path_buf(), other.path().to_path_buf()],
    )
    .1;
    assert!(!has_failures(&findings), "{findings:#?}");
}

/// `pem` with the first UTCTime's 13 bytes replaced by `with`.
fn with_utc_time(pem: &[u8], with: &[u8; 13]) -> Vec<u8> {
    let mut der = CertificateDer::from_pem_slice(pem).unwrap().to_vec();
    let at = der.windows(2).position(|w| w == [0x17, 0x0d]).unwrap() + 2;
    der[at..at + 13].copy_from_slice(with);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n").into_bytes()
}

#[test]
fn crafted_certificate_times_do_not_panic() {
    // A valid UTF-8 time with a two-byte character at byte 1: slicing
    // the year out of it by bytes lands inside the character.
    let crafted = "0\u{e9}101000000Z".as_bytes().try_into().unwrap();
    let s = Setup::new();
    s.write("webhook-ca.crt", &with_utc_time(&pki("ca.crt"), crafted));
    let findings = s.run().1;
    assert!(
        findings.iter().any(|f| f.check == CHECK_CA),
        "{findings:#?}"
    );
    let s = Setup::new();
    s.write(
        "apiserver-client.crt",
        &with_utc_time(&pki("client.crt"), crafted),
    );
    let findings = s.run().1;
    assert!(
        findings.iter().any(|f| f.check == CHECK_CLIENT_CERT),
        "{findings:#?}"
    );
}

#[test]
fn https_host_parsing() {
    assert_eq!(https_host("https://a:1/p"), Some("a"));
    assert_eq!(https_host("HTTPS://a"), Some("a"));
    assert_eq!(https_host("https://[::1]:8443/x"), Some("::1"));
    assert_eq!(https_host("https://u@h/x"), Some("h"));
    assert_eq!(https_host("http://a"), None);
    assert_eq!(https_host("https:///x"), None);
    assert_eq!(https_host("https://a b"), None);
    assert_eq!(https_host("https"), None);
}

#[test]
fn normalize_is_lexical() {
    assert_eq!(normalize(Path::new("/a/./b/../c")), Path::new("/a/c"));
    assert_eq!(
        resolve(Path::new("/etc/k"), "x.yaml"),
        Path::new("/etc/k/x.yaml")
    );
    assert_eq!(resolve(Path::new("/etc/k"), "/abs"), Path::new("/abs"));
}

#[test]
fn a_missing_file_is_never_reported_visible() {
    let s = Setup::new();
    fs::remove_file(s.kubeconf()).unwrap();
    let findings = s.run().1;
    let mount = findings
        .iter()
        .find(|f| f.check == CHECK_MOUNTS && f.message.contains("kubeconf"))
        .unwrap();
    assert_eq!(mount.level, Level::Warn, "{mount}");
    assert!(mount.message.contains("does not exist"), "{mount}");
}
