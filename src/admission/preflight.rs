//! Preflight for ImagePolicyWebhook: every check that must hold before
//! kube-apiserver is pointed at an admission config, because kube-apiserver
//! reads these files once at start-up and refuses to start (or exits) if any
//! of them is wrong. On a kubeadm node that means no API server until someone
//! edits the manifest by hand.
//!
//! The checks follow what kube-apiserver itself does, in order:
//!
//! 1. `--admission-control-config-file` is decoded as an `AdmissionConfiguration`
//!    (`apiserver.config.k8s.io/v1`); failing that, a file with a top-level
//!    `imagePolicy:` key is the legacy bare form and is itself the plugin config.
//! 2. The `ImagePolicyWebhook` entry's embedded `configuration:` wins over
//!    `path:`; a relative `path` is resolved against the config file's directory.
//! 3. `imagePolicy` is decoded by Go's `encoding/json`: durations are plain
//!    integers (`"50s"` does not decode), keys match case-insensitively, and
//!    unknown keys are ignored. `allowTTL`/`denyTTL` are seconds in 1..=1800 and
//!    `retryBackoff` milliseconds in 1..=300000; 0 means the default and -1
//!    disables.
//! 4. The webhook kubeconfig goes through client-go's clientcmd: current-context
//!    picks the cluster and user, relative paths are resolved against the
//!    kubeconfig's directory, a file and its `-data` form may not both be set,
//!    and the CA, client certificate and key must load.
//! 5. Every file read lies in a directory mounted into the apiserver container.
//!
//! Every check reports a [`Finding`]: passes too, so `doctor` can print the
//! whole table. A failure names the file and the field to fix.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_norway::{Mapping, Value};

/// Check names, stable for `doctor`'s table and for scripts that grep it.
pub const CHECK_ADMISSION_CONFIG: &str = "admission-config";
pub const CHECK_PLUGIN: &str = "image-policy-plugin";
pub const CHECK_SETTINGS: &str = "image-policy-settings";
pub const CHECK_FAIL_OPEN: &str = "fail-open";
pub const CHECK_KUBECONFIG: &str = "webhook-kubeconfig";
pub const CHECK_SERVER: &str = "webhook-server";
pub const CHECK_CA: &str = "webhook-ca";
pub const CHECK_CLIENT_CERT: &str = "webhook-client-cert";
pub const CHECK_MOUNTS: &str = "mounts";

/// The only `apiVersion` kube-apiserver documents for the admission config.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// The deprecated alpha group, still decoded by kube-apiserver.
pub const API_VERSION_DEPRECATED: &str = "apiserver.k8s.io/v1alpha1";
pub const KIND: &str = "AdmissionConfiguration";
pub const PLUGIN_NAME: &str = "ImagePolicyWebhook";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Pass => "pass",
            Level::Warn => "warn",
            Level::Fail => "fail",
        })
    }
}

/// One result of one check. `file` and `field` say where to look: for a
/// missing or broken referenced file, that is the file and field that
/// reference it, and the message names the referenced path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub file: PathBuf,
    /// A dotted path in the file's own spelling, e.g.
    /// `plugins[0].configuration.imagePolicy.allowTTL` or
    /// `users[0].user.client-key`; `None` for the file as a whole.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// What the preflight learnt, for whoever wires the config into
/// kube-apiserver.yaml. Filled in as far as the files could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Absolute, lexically normalised.
    pub config_file: PathBuf,
    /// The webhook kubeconfig (`imagePolicy.kubeConfigFile`), if set and absolute.
    pub kubeconfig: Option<PathBuf>,
    /// Every file kube-apiserver will read for this plugin, absolute, in the
    /// order it reads them and without duplicates: the admission config, the
    /// plugin config (`path:`), the kubeconfig, the CA, the client
    /// certificate and key (and a `tokenFile`). Listed whether or not they exist.
    pub referenced: Vec<PathBuf>,
    /// `imagePolicy.defaultAllow`: the webhook fails open.
    pub default_allow: bool,
}

/// Runs every check. `mounted`: directories that are (or will be) visible
/// inside the apiserver container at the same path (hostPath == mountPath).
pub fn preflight(config_file: &Path, mounted: &[PathBuf]) -> (Admission, Vec<Finding>) {
    let config_file = normalize(config_file);
    let mut run = Run::default();
    run.reference(&config_file, &config_file, None);
    if let Some(plugin) = run.admission_config(&config_file) {
        if let Some((kubeconfig, from, field)) = run.image_policy(&plugin) {
            run.kubeconfig(&kubeconfig, &from, &field);
        }
    }
    run.mounts(mounted);
    let admission = Admission {
        config_file,
        kubeconfig: run.kubeconfig.clone(),
        referenced: run.refs.iter().map(|r| r.path.clone()).collect(),
        default_allow: run.default_allow,
    };
    (admission, run.findings)
}

pub fn has_failures(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Fail)
}

/// A file kube-apiserver will open, and who told it to.
#[derive(Debug)]
struct Reference {
    path: PathBuf,
    from: PathBuf,
    field: Option<String>,
}

/// The plugin's own config: the mapping that should hold `imagePolicy`.
struct PluginConfig {
    /// The file the mapping was read from.
    file: PathBuf,
    /// Field path of the mapping within `file`, with a trailing dot, or "".
    prefix: String,
    value: Value,
}

#[derive(Default)]
struct Run {
    findings: Vec<Finding>,
    refs: Vec<Reference>,
    kubeconfig: Option<PathBuf>,
    default_allow: bool,
}

impl Run {
    fn push(
        &mut self,
        level: Level,
        check: &'static str,
        file: &Path,
        field: Option<&str>,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding {
            level,
            check,
            file: file.to_path_buf(),
            field: field.map(str::to_string),
            message: message.into(),
        });
    }

    fn pass(&mut self, c: &'static str, file: &Path, field: Option<&str>, m: impl Into<String>) {
        self.push(Level::Pass, c, file, field, m);
    }

    fn warn(&mut self, c: &'static str, file: &Path, field: Option<&str>, m: impl Into<String>) {
        self.push(Level::Warn, c, file, field, m);
    }

    fn fail(&mut self, c: &'static str, file: &Path, field: Option<&str>, m: impl Into<String>) {
        self.push(Level::Fail, c, file, field, m);
    }

    fn reference(&mut self, path: &Path, from: &Path, field: Option<&str>) {
        if !self.refs.iter().any(|r| r.path == path) {
            self.refs.push(Reference {
                path: path.to_path_buf(),
                from: from.to_path_buf(),
                field: field.map(str::to_string),
            });
        }
    }

    /// Reads a referenced file, reporting a failure against the referring field.
    fn read_referenced(
        &mut self,
        check: &'static str,
        path: &Path,
        from: &Path,
        field: &str,
    ) -> Option<Vec<u8>> {
        self.reference(path, from, Some(field));
        match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.fail(
                    check,
                    from,
                    Some(field),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    /// Step 1 and 2: the admission config and the ImagePolicyWebhook entry.
    fn admission_config(&mut self, file: &Path) -> Option<PluginConfig> {
        const C: &str = CHECK_ADMISSION_CONFIG;
        let bytes = match fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                self.fail(C, file, None, format!("cannot read: {e}"));
                return None;
            }
        };
        let doc: Value = match parse_doc(&bytes) {
            Ok(v) => v,
            Err(e) => {
                self.fail(C, file, None, e);
                return None;
            }
        };
        let Some(map) = doc.as_mapping() else {
            self.fail(
                C,
                file,
                None,
                format!(
                    "must be a mapping (an {KIND}, or the legacy form with a top-level imagePolicy key), got {}",
                    describe(&doc)
                ),
            );
            return None;
        };
        let api_version = map.get("apiVersion");
        let kind = map.get("kind");
        let typed = match (
            api_version.and_then(Value::as_str),
            kind.and_then(Value::as_str),
        ) {
            (Some(API_VERSION), Some(KIND)) => {
                self.pass(C, file, None, format!("{KIND} {API_VERSION}"));
                true
            }
            (Some(API_VERSION_DEPRECATED), Some(KIND)) => {
                self.warn(
                    C,
                    file,
                    Some("apiVersion"),
                    format!("{API_VERSION_DEPRECATED} is deprecated; use {API_VERSION}"),
                );
                true
            }
            // kube-apiserver falls back to the legacy form only when the typed
            // decode fails for a missing or unregistered version or kind, and
            // the file has a top-level imagePolicy key.
            _ if map.contains_key("imagePolicy") => {
                self.pass(
                    C,
                    file,
                    None,
                    "legacy unversioned form: the whole file is the ImagePolicyWebhook configuration",
                );
                false
            }
            (None, _) => {
                let got = match api_version {
                    None | Some(Value::Null) => "not set".to_string(),
                    Some(v) => format!("got {}", describe(v)),
                };
                self.fail(
                    C,
                    file,
                    Some("apiVersion"),
                    format!(
                        "{got}: must be {API_VERSION} with kind {KIND} (or the file must be the legacy form with a top-level imagePolicy key)"
                    ),
                );
                return None;
            }
            (Some(v), _) if v != API_VERSION && v != API_VERSION_DEPRECATED => {
                self.fail(
                    C,
                    file,
                    Some("apiVersion"),
                    format!(
                        "must be {API_VERSION}, got {}",
                        describe(api_version.unwrap_or(&Value::Null))
                    ),
                );
                return None;
            }
            _ => {
                let got = kind.map_or_else(|| "nothing".to_string(), describe);
                self.fail(C, file, Some("kind"), format!("must be {KIND}, got {got}"));
                return None;
            }
        };
        if !typed {
            return Some(PluginConfig {
                file: file.to_path_buf(),
                prefix: String::new(),
                value: doc.clone(),
            });
        }
        self.plugin_entry(file, map)
    }

    fn plugin_entry(&mut self, file: &Path, map: &Mapping) -> Option<PluginConfig> {
        const C: &str = CHECK_PLUGIN;
        // Without a configuration the plugin's constructor fails with "no
        // config specified" and kube-apiserver does not start.
        let consequence = "kube-apiserver does not start with ImagePolicyWebhook enabled and no configuration for it";
        let legacy_hint = if map.contains_key("imagePolicy") {
            " (the top-level imagePolicy key is ignored in a typed AdmissionConfiguration; move it under plugins[].configuration)"
        } else {
            ""
        };
        let plugins = match map.get("plugins") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Sequence(s)) => s.as_slice(),
            Some(other) => {
                self.fail(
                    C,
                    file,
                    Some("plugins"),
                    format!("must be a list, got {}", describe(other)),
                );
                return None;
            }
        };
        let mut found: Option<(usize, &Mapping)> = None;
        for (i, entry) in plugins.iter().enumerate() {
            let Some(entry) = entry.as_mapping() else {
                self.fail(
                    C,
                    file,
                    Some(&format!("plugins[{i}]")),
                    format!("must be a mapping, got {}", describe(entry)),
                );
                return None;
            };
            if entry.get("name").and_then(Value::as_str) != Some(PLUGIN_NAME) {
                continue;
            }
            match found {
                None => found = Some((i, entry)),
                Some((first, _)) => self.warn(
                    C,
                    file,
                    Some(&format!("plugins[{i}]")),
                    format!("a second {PLUGIN_NAME} entry; kube-apiserver uses plugins[{first}] and ignores this one"),
                ),
            }
        }
        let Some((i, entry)) = found else {
            self.fail(
                C,
                file,
                Some("plugins"),
                format!("no entry with name: {PLUGIN_NAME}: {consequence}{legacy_hint}"),
            );
            return None;
        };
        let at = format!("plugins[{i}]");
        let path = entry.get("path");
        match entry.get("configuration") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(_)) => {
                if path.and_then(Value::as_str).is_some_and(|p| !p.is_empty()) {
                    self.warn(
                        C,
                        file,
                        Some(&format!("{at}.path")),
                        "ignored: the embedded configuration wins",
                    );
                }
                self.pass(
                    C,
                    file,
                    Some(&at),
                    format!("{PLUGIN_NAME} configured inline"),
                );
                return Some(PluginConfig {
                    file: file.to_path_buf(),
                    prefix: format!("{at}.configuration."),
                    value: entry.get("configuration").cloned().unwrap_or(Value::Null),
                });
            }
            Some(other) => {
                self.fail(
                    C,
                    file,
                    Some(&format!("{at}.configuration")),
                    format!(
                        "must be a mapping holding imagePolicy, got {}",
                        describe(other)
                    ),
                );
                return None;
            }
        }
        let field = format!("{at}.path");
        let rel = match path {
            None | Some(Value::Null) => {
                self.fail(
                    C,
                    file,
                    Some(&at),
                    format!("neither configuration nor path is set: {consequence}"),
                );
                return None;
            }
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(other) => {
                self.fail(
                    C,
                    file,
                    Some(&field),
                    format!("must be a file path, got {}", describe(other)),
                );
                return None;
            }
        };
        // makeAbs(path, dir(configFile)) in apiserver's admission config loader.
        let plugin_file = resolve(parent(file), rel);
        // An unreadable path is a klog.Fatalf: kube-apiserver exits.
        let bytes = self.read_referenced(C, &plugin_file, file, &field)?;
        let value = match parse_doc(&bytes) {
            Ok(v) => v,
            Err(e) => {
                self.fail(C, &plugin_file, None, e);
                return None;
            }
        };
        self.pass(
            C,
            file,
            Some(&field),
            format!("{PLUGIN_NAME} configured in {}", plugin_file.display()),
        );
        Some(PluginConfig {
            file: plugin_file,
            prefix: String::new(),
            value,
        })
    }

    /// Step 3: the `imagePolicy` settings. Returns the kubeconfig to check,
    /// with the file and field that named it.
    fn image_policy(&mut self, plugin: &PluginConfig) -> Option<(PathBuf, PathBuf, String)> {
        const C: &str = CHECK_SETTINGS;
        let file = plugin.file.as_path();
        let Some(map) = plugin.value.as_mapping() else {
            let at = plugin.prefix.trim_end_matches('.');
            let at = (!at.is_empty()).then_some(at);
            self.fail(
                C,
                file,
                at,
                format!(
                    "must be a mapping holding imagePolicy, got {}",
                    describe(&plugin.value)
                ),
            );
            return None;
        };
        let ip_field = format!("{}imagePolicy", plugin.prefix);
        let ip = match map.get("imagePolicy") {
            Some(Value::Mapping(m)) => m,
            None | Some(Value::Null) => {
                self.fail(
                    C,
                    file,
                    Some(&ip_field),
                    "not set: ImagePolicyWebhook has no kubeConfigFile and kube-apiserver does not start",
                );
                return None;
            }
            Some(other) => {
                self.fail(
                    C,
                    file,
                    Some(&ip_field),
                    format!("must be a mapping, got {}", describe(other)),
                );
                return None;
            }
        };

        // encoding/json: keys match case-insensitively, the last one wins,
        // unknown keys are ignored.
        let mut fields: Vec<(&'static str, String, &Value)> = Vec::new();
        for (k, v) in ip {
            let Some(k) = k.as_str() else {
                self.warn(
                    C,
                    file,
                    Some(&ip_field),
                    format!("key {} is not a string and is ignored", describe(k)),
                );
                continue;
            };
            let at = format!("{ip_field}.{k}");
            match IMAGE_POLICY_KEYS
                .iter()
                .copied()
                .find(|known| known.eq_ignore_ascii_case(k))
            {
                Some(known) => {
                    if known != k {
                        self.warn(
                            C,
                            file,
                            Some(&at),
                            format!("spelled differently from {known}; kube-apiserver matches keys case-insensitively, but write {known}"),
                        );
                    }
                    fields.retain(|(name, _, _)| *name != known);
                    fields.push((known, at, v));
                }
                None => self.warn(
                    C,
                    file,
                    Some(&at),
                    format!(
                        "unknown key, ignored by kube-apiserver (known keys: {})",
                        IMAGE_POLICY_KEYS.join(", ")
                    ),
                ),
            }
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _, v)| *n == name && !v.is_null())
                .map(|(_, at, v)| (at.clone(), *v))
        };

        for d in [&ALLOW_TTL, &DENY_TTL, &RETRY_BACKOFF] {
            let Some((at, v)) = get(d.key) else {
                self.pass(
                    C,
                    file,
                    Some(&format!("{ip_field}.{}", d.key)),
                    format!("not set: the default, {}", d.default),
                );
                continue;
            };
            let verdict = match v {
                Value::Number(n) if n.as_i64().is_some() => d.check(n.as_i64().unwrap_or(0)),
                _ => Verdict::Fail(format!(
                    "{}, got {}{}",
                    d.expected(),
                    describe(v),
                    if v.is_string() {
                        ": kube-apiserver decodes this field as a plain number and does not start"
                    } else {
                        ""
                    }
                )),
            };
            match verdict {
                Verdict::Pass(m) => self.pass(C, file, Some(&at), m),
                Verdict::Warn(m) => self.warn(C, file, Some(&at), m),
                Verdict::Fail(m) => self.fail(C, file, Some(&at), m),
            }
        }

        match get("defaultAllow") {
            None => self.pass(
                CHECK_FAIL_OPEN,
                file,
                Some(&format!("{ip_field}.defaultAllow")),
                "not set: false, the webhook fails closed",
            ),
            Some((at, Value::Bool(false))) => self.pass(
                CHECK_FAIL_OPEN,
                file,
                Some(&at),
                "false: the webhook fails closed",
            ),
            Some((at, Value::Bool(true))) => {
                self.default_allow = true;
                self.warn(
                    CHECK_FAIL_OPEN,
                    file,
                    Some(&at),
                    "true: the webhook fails open: if the backend is down, every image is admitted",
                );
            }
            Some((at, v)) => self.fail(
                CHECK_FAIL_OPEN,
                file,
                Some(&at),
                format!("must be true or false, got {}", describe(v)),
            ),
        }

        let kc_field = format!("{ip_field}.kubeConfigFile");
        let (at, path) = match get("kubeConfigFile") {
            Some((at, Value::String(s))) if !s.is_empty() => (at, s.clone()),
            None | Some((_, Value::String(_))) => {
                self.fail(
                    C,
                    file,
                    Some(&kc_field),
                    "not set: ImagePolicyWebhook needs the kubeconfig that says where the webhook backend is",
                );
                return None;
            }
            Some((at, v)) => {
                self.fail(
                    C,
                    file,
                    Some(&at),
                    format!("must be a file path, got {}", describe(v)),
                );
                return None;
            }
        };
        // clientcmd opens an explicit path as given, so a relative one
        // depends on kube-apiserver's working directory inside its container,
        // which nothing documents. Require an absolute path instead of guessing.
        if !Path::new(&path).is_absolute() {
            self.fail(
                C,
                file,
                Some(&at),
                format!("must be an absolute path, got {path:?}: a relative path is resolved against kube-apiserver's working directory inside its container, not against this file"),
            );
            return None;
        }
        let path = normalize(Path::new(&path));
        self.pass(C, file, Some(&at), path.display().to_string());
        self.kubeconfig = Some(path.clone());
        Some((path, file.to_path_buf(), at))
    }

    /// Step 4: the webhook kubeconfig, its CA and client credentials.
    fn kubeconfig(&mut self, path: &Path, from: &Path, from_field: &str) {
        const C: &str = CHECK_KUBECONFIG;
        let Some(bytes) = self.read_referenced(C, path, from, from_field) else {
            return;
        };
        let kc: KubeConfig = match parse_typed::<Option<KubeConfig>>(&bytes) {
            Ok(kc) => kc.unwrap_or_default(),
            Err(e) => {
                self.fail(
                    C,
                    path,
                    None,
                    format!("{e} (expected a kubeconfig, kind: Config)"),
                );
                return;
            }
        };
        if let Some(v) = kc.api_version.as_deref().filter(|v| *v != "v1") {
            self.fail(
                C,
                path,
                Some("apiVersion"),
                format!("must be v1, got {v:?}"),
            );
            return;
        }
        if let Some(k) = kc.kind.as_deref().filter(|k| *k != "Config") {
            self.fail(C, path, Some("kind"), format!("must be Config, got {k:?}"));
            return;
        }
        let clusters = kc.clusters.unwrap_or_default();
        let users = kc.users.unwrap_or_default();
        let contexts = kc.contexts.unwrap_or_default();
        // clientcmd turns these lists into maps and rejects a repeated name.
        let dup = duplicate(clusters.iter().map(|c| c.name.as_deref()), "clusters")
            .or_else(|| duplicate(users.iter().map(|u| u.name.as_deref()), "users"))
            .or_else(|| duplicate(contexts.iter().map(|c| c.name.as_deref()), "contexts"));
        if let Some((field, name)) = dup {
            self.fail(
                C,
                path,
                Some(&field),
                format!("duplicate name {name:?}: the kubeconfig loader rejects the file"),
            );
            return;
        }

        let Some(current) = kc.current_context.filter(|c| !c.is_empty()) else {
            self.fail(
                C,
                path,
                Some("current-context"),
                "not set: kube-apiserver cannot tell which cluster and user to use for the webhook",
            );
            return;
        };
        let Some((ci, ctx)) = contexts
            .iter()
            .enumerate()
            .find(|(_, c)| c.name.as_deref() == Some(current.as_str()))
        else {
            self.fail(
                C,
                path,
                Some("current-context"),
                format!("names context {current:?}, which is not in contexts"),
            );
            return;
        };
        let ctx = ctx.context.clone().unwrap_or_default();
        let cluster_name = ctx.cluster.unwrap_or_default();
        let Some((cli, cluster)) = clusters.iter().enumerate().find(|(_, c)| {
            c.name.as_deref() == Some(cluster_name.as_str()) && !cluster_name.is_empty()
        }) else {
            self.fail(
                C,
                path,
                Some(&format!("contexts[{ci}].context.cluster")),
                format!("names cluster {cluster_name:?}, which is not in clusters"),
            );
            return;
        };
        let user_name = ctx.user.unwrap_or_default();
        let Some((ui, user)) = users
            .iter()
            .enumerate()
            .find(|(_, u)| u.name.as_deref() == Some(user_name.as_str()) && !user_name.is_empty())
        else {
            self.fail(
                C,
                path,
                Some(&format!("contexts[{ci}].context.user")),
                format!("names user {user_name:?}, which is not in users"),
            );
            return;
        };
        self.pass(
            C,
            path,
            Some("current-context"),
            format!("{current:?}: cluster {cluster_name:?}, user {user_name:?}"),
        );

        let base = parent(path).to_path_buf();
        let cluster = cluster.cluster.clone().unwrap_or_default();
        self.server(path, cli, &cluster);
        self.ca(path, &base, cli, &cluster);
        let user = user.user.clone().unwrap_or_default();
        self.client_cert(path, &base, ui, &user);
    }

    fn server(&mut self, path: &Path, ci: usize, cluster: &Cluster) {
        const C: &str = CHECK_SERVER;
        let field = format!("clusters[{ci}].cluster.server");
        match cluster.server.as_deref().filter(|s| !s.is_empty()) {
            None => self.fail(C, path, Some(&field), "not set: the webhook backend's https:// URL"),
            Some(s) => match https_host(s) {
                Some(_) => self.pass(C, path, Some(&field), s.to_string()),
                None => self.fail(
                    C,
                    path,
                    Some(&field),
                    format!("must be an https:// URL with a host (the webhook backend is only called over TLS), got {s:?}"),
                ),
            },
        }
    }

    fn ca(&mut self, path: &Path, base: &Path, ci: usize, cluster: &Cluster) {
        const C: &str = CHECK_CA;
        let at = format!("clusters[{ci}].cluster");
        let insecure = cluster.insecure_skip_tls_verify.unwrap_or(false);
        let loaded = self.load_pem(
            C,
            path,
            base,
            (
                &format!("{at}.certificate-authority"),
                &cluster.certificate_authority,
            ),
            (
                &format!("{at}.certificate-authority-data"),
                &cluster.certificate_authority_data,
            ),
        );
        if insecure {
            let field = format!("{at}.insecure-skip-tls-verify");
            if matches!(loaded, Loaded::Absent) {
                self.warn(
                    C,
                    path,
                    Some(&field),
                    "true: the webhook backend's certificate is not verified, so anyone on the path can answer for it",
                );
            } else {
                // client-go: "specifying a root certificates file with the
                // insecure flag is not allowed", when the webhook is built.
                self.fail(
                    C,
                    path,
                    Some(&field),
                    "true together with a certificate authority: client-go refuses the combination and kube-apiserver does not start; remove one",
                );
            }
            return;
        }
        match loaded {
            Loaded::Absent => self.warn(
                C,
                path,
                Some(&format!("{at}.certificate-authority")),
                "not set: the backend's certificate is checked against the system roots inside the kube-apiserver image",
            ),
            Loaded::Failed => {}
            Loaded::Pem(Pem {
                bytes,
                field,
                source,
            }) => match parse_ca(&bytes) {
                Ok(info) => {
                    let msg = format!("{source}: {} certificate(s)", info.count);
                    match info.all_expired {
                        Some(when) => self.warn(
                            C,
                            path,
                            Some(&field),
                            format!("{msg}, all expired (the last on {when}): the backend's certificate cannot verify"),
                        ),
                        None => self.pass(C, path, Some(&field), msg),
                    }
                }
                Err(e) => self.fail(C, path, Some(&field), format!("{source}: {e}")),
            },
        }
    }

    fn client_cert(&mut self, path: &Path, base: &Path, ui: usize, user: &User) {
        const C: &str = CHECK_CLIENT_CERT;
        let at = format!("users[{ui}].user");
        let cert_field = format!("{at}.client-certificate");
        let key_field = format!("{at}.client-key");
        let cert = self.load_pem(
            C,
            path,
            base,
            (&cert_field, &user.client_certificate),
            (&format!("{cert_field}-data"), &user.client_certificate_data),
        );
        let key = self.load_pem(
            C,
            path,
            base,
            (&key_field, &user.client_key),
            (&format!("{key_field}-data"), &user.client_key_data),
        );
        if let Some(token_file) = user.token_file.as_deref().filter(|t| !t.is_empty()) {
            let token_file = resolve(base, token_file);
            self.read_referenced(C, &token_file, path, &format!("{at}.tokenFile"));
        }
        let (cert, key) = match (cert, key) {
            (Loaded::Failed, _) | (_, Loaded::Failed) => return,
            (Loaded::Absent, Loaded::Absent) => {
                let other = user.other_credentials();
                if other.is_empty() {
                    self.fail(
                        C,
                        path,
                        Some(&cert_field),
                        "not set, and the user has no other credentials: kube-apiserver cannot authenticate to the webhook backend; set client-certificate and client-key",
                    );
                } else {
                    self.warn(
                        C,
                        path,
                        Some(&at),
                        format!("authenticates with {}, which staticpin does not check; the documented setup is client-certificate and client-key", other.join(" and ")),
                    );
                }
                return;
            }
            (Loaded::Pem(_), Loaded::Absent) => {
                self.fail(
                    C,
                    path,
                    Some(&key_field),
                    "not set: a client certificate needs its key (client-key or client-key-data)",
                );
                return;
            }
            (Loaded::Absent, Loaded::Pem(_)) => {
                self.fail(
                    C,
                    path,
                    Some(&cert_field),
                    "not set: a client key needs its certificate (client-certificate or client-certificate-data)",
                );
                return;
            }
            (Loaded::Pem(cert), Loaded::Pem(key)) => (cert, key),
        };
        let chain = match parse_cert_chain(&cert.bytes) {
            Ok(c) => c,
            Err(e) => {
                self.fail(C, path, Some(&cert.field), format!("{}: {e}", cert.source));
                return;
            }
        };
        let parsed_key = match parse_private_key(&key.bytes) {
            Ok(k) => k,
            Err(e) => {
                self.fail(C, path, Some(&key.field), format!("{}: {e}", key.source));
                return;
            }
        };
        match key_matches_cert(&chain[0], parsed_key) {
            Ok(KeyMatch::Yes) => {
                let msg = format!("{}: the key in {} matches it", cert.source, key.source);
                match cert_expiry(&chain[0]) {
                    Some(Expiry::Expired(when)) => self.warn(
                        C,
                        path,
                        Some(&cert.field),
                        format!("{msg}, but it expired on {when}: the backend will refuse the TLS handshake"),
                    ),
                    Some(Expiry::NotYetValid(when)) => self.warn(
                        C,
                        path,
                        Some(&cert.field),
                        format!("{msg}, but it is not valid before {when}"),
                    ),
                    _ => self.pass(C, path, Some(&cert.field), msg),
                }
            }
            Ok(KeyMatch::Unknown) => self.warn(
                C,
                path,
                Some(&key.field),
                format!(
                    "{}: cannot tell whether this key matches the certificate in {}",
                    key.source, cert.source
                ),
            ),
            Ok(KeyMatch::No) => self.fail(
                C,
                path,
                Some(&key.field),
                format!(
                    "{}: the key does not match the certificate in {}: kube-apiserver does not start",
                    key.source, cert.source
                ),
            ),
            Err(e) => self.fail(C, path, Some(&key.field), format!("{}: {e}", key.source)),
        }
    }

    /// A file field and its inline `-data` twin, as client-go reads them.
    fn load_pem(
        &mut self,
        check: &'static str,
        kubeconfig: &Path,
        base: &Path,
        (file_field, file): (&str, &Option<String>),
        (data_field, data): (&str, &Option<String>),
    ) -> Loaded {
        let file = file.as_deref().filter(|s| !s.is_empty());
        let data = data.as_deref().filter(|s| !s.is_empty());
        match (file, data) {
            (Some(_), Some(_)) => {
                let short = file_field.rsplit('.').next().unwrap_or(file_field);
                self.fail(
                    check,
                    kubeconfig,
                    Some(data_field),
                    format!("set together with {short}: client-go refuses a kubeconfig with both and kube-apiserver does not start; keep one"),
                );
                Loaded::Failed
            }
            (Some(f), None) => {
                let p = resolve(base, f);
                match self.read_referenced(check, &p, kubeconfig, file_field) {
                    Some(bytes) => Loaded::Pem(Pem {
                        bytes,
                        field: file_field.to_string(),
                        source: p.display().to_string(),
                    }),
                    None => Loaded::Failed,
                }
            }
            (None, Some(d)) => {
                // Go decodes []byte fields as standard base64; line breaks
                // are skipped.
                let compact: String = d.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                match base64::engine::general_purpose::STANDARD.decode(compact) {
                    Ok(bytes) => Loaded::Pem(Pem {
                        bytes,
                        field: data_field.to_string(),
                        source: "the inline data".to_string(),
                    }),
                    Err(e) => {
                        self.fail(
                            check,
                            kubeconfig,
                            Some(data_field),
                            format!("is not valid base64: {e}"),
                        );
                        Loaded::Failed
                    }
                }
            }
            (None, None) => Loaded::Absent,
        }
    }

    /// Step 5: everything read must be visible inside the container.
    fn mounts(&mut self, mounted: &[PathBuf]) {
        const C: &str = CHECK_MOUNTS;
        let mounts: Vec<PathBuf> = mounted.iter().map(|m| normalize(m)).collect();
        let listed = if mounts.is_empty() {
            "none".to_string()
        } else {
            mounts
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let refs = std::mem::take(&mut self.refs);
        for r in &refs {
            let field = r.field.as_deref();
            let Some(mount) = mounts.iter().find(|m| r.path.starts_with(m)) else {
                self.fail(
                    C,
                    &r.from,
                    field,
                    format!(
                        "{} is not in a directory mounted into the kube-apiserver container (mounted: {listed}); mount {} (hostPath and a readOnly volumeMount at the same path)",
                        r.path.display(),
                        parent(&r.path).display()
                    ),
                );
                continue;
            };
            // A symlink is followed inside the container, where only the
            // mounted directories exist: its target must be mounted too.
            if let Ok(real) = fs::canonicalize(&r.path) {
                let reachable = mounts
                    .iter()
                    .any(|m| real.starts_with(fs::canonicalize(m).unwrap_or_else(|_| m.clone())));
                if !reachable {
                    self.fail(
                        C,
                        &r.from,
                        field,
                        format!(
                            "{} is a symlink to {}, which is not in a directory mounted into the kube-apiserver container (mounted: {listed}); copy the file or mount {}",
                            r.path.display(),
                            real.display(),
                            parent(&real).display()
                        ),
                    );
                    continue;
                }
            }
            self.pass(
                C,
                &r.from,
                field,
                format!(
                    "{} is visible in the container through {}",
                    r.path.display(),
                    mount.display()
                ),
            );
        }
        self.refs = refs;
    }
}

const IMAGE_POLICY_KEYS: [&str; 5] = [
    "kubeConfigFile",
    "allowTTL",
    "denyTTL",
    "retryBackoff",
    "defaultAllow",
];

/// One of the integer durations in `imagePolicy`, with kube-apiserver's range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DurationField {
    pub key: &'static str,
    pub max: i64,
    pub unit: &'static str,
    pub default: &'static str,
    /// TTLs have a 1 s minimum that older kube-apiservers checked with `<=`.
    pub exclusive_min_in_old_versions: bool,
}

pub(crate) const ALLOW_TTL: DurationField = DurationField {
    key: "allowTTL",
    max: 1800,
    unit: "seconds",
    default: "300 seconds",
    exclusive_min_in_old_versions: true,
};
pub(crate) const DENY_TTL: DurationField = DurationField {
    key: "denyTTL",
    max: 1800,
    unit: "seconds",
    default: "30 seconds",
    exclusive_min_in_old_versions: true,
};
pub(crate) const RETRY_BACKOFF: DurationField = DurationField {
    key: "retryBackoff",
    max: 300_000,
    unit: "milliseconds",
    default: "500 milliseconds",
    exclusive_min_in_old_versions: false,
};

pub(crate) enum Verdict {
    Pass(String),
    Warn(String),
    Fail(String),
}

impl DurationField {
    pub(crate) fn expected(&self) -> String {
        format!(
            "must be an integer between 1 and {} ({}), or 0 for the default or -1 to disable",
            self.max, self.unit
        )
    }

    pub(crate) fn check(&self, v: i64) -> Verdict {
        match v {
            -1 => Verdict::Pass("-1: disabled".to_string()),
            0 => Verdict::Pass(format!("0: the default, {}", self.default)),
            1 if self.exclusive_min_in_old_versions => Verdict::Warn(format!(
                "1 {}: older kube-apiserver versions reject the minimum itself and do not start; 2 or more works everywhere",
                self.unit
            )),
            v if (1..=self.max).contains(&v) => Verdict::Pass(format!("{v} {}", self.unit)),
            v => Verdict::Fail(format!("{}, got {v}", self.expected())),
        }
    }
}

/// A certificate or key as read from a kubeconfig.
enum Loaded {
    Absent,
    /// Already reported.
    Failed,
    Pem(Pem),
}

struct Pem {
    bytes: Vec<u8>,
    /// The field it came from.
    field: String,
    /// The file path, or "the inline data", for messages.
    source: String,
}

// The kubeconfig, as far as the webhook uses it. Unknown keys are ignored, as
// clientcmd does.
#[derive(Debug, Default, Deserialize)]
struct KubeConfig {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    clusters: Option<Vec<NamedCluster>>,
    users: Option<Vec<NamedUser>>,
    contexts: Option<Vec<NamedContext>>,
    #[serde(rename = "current-context")]
    current_context: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: Option<String>,
    cluster: Option<Cluster>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Cluster {
    server: Option<String>,
    #[serde(rename = "certificate-authority")]
    certificate_authority: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify")]
    insecure_skip_tls_verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: Option<String>,
    user: Option<User>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct User {
    #[serde(rename = "client-certificate")]
    client_certificate: Option<String>,
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key")]
    client_key: Option<String>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    username: Option<String>,
    exec: Option<Value>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<Value>,
}

impl User {
    fn other_credentials(&self) -> Vec<&'static str> {
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        let mut v = Vec::new();
        if set(&self.token) || set(&self.token_file) {
            v.push("a bearer token");
        }
        if set(&self.username) {
            v.push("basic auth");
        }
        if self.exec.as_ref().is_some_and(|e| !e.is_null()) {
            v.push("an exec plugin");
        }
        if self.auth_provider.as_ref().is_some_and(|e| !e.is_null()) {
            v.push("an auth-provider");
        }
        v
    }
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: Option<String>,
    context: Option<Context>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Context {
    cluster: Option<String>,
    user: Option<String>,
}

fn duplicate<'a>(
    names: impl Iterator<Item = Option<&'a str>>,
    list: &str,
) -> Option<(String, String)> {
    let mut seen = HashSet::new();
    for (i, n) in names.enumerate() {
        let n = n.unwrap_or("");
        if !seen.insert(n) {
            return Some((format!("{list}[{i}].name"), n.to_string()));
        }
    }
    None
}

/// JSON if the first non-space byte is `{`, else YAML: the sniffing
/// kube-apiserver's YAMLOrJSONDecoder does.
fn looks_like_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn parse_doc(bytes: &[u8]) -> Result<Value, String> {
    let v: Value = if looks_like_json(bytes) {
        serde_json::from_slice(bytes).map_err(|e| format!("does not parse as JSON: {e}"))?
    } else {
        serde_norway::from_slice(bytes).map_err(|e| format!("does not parse as YAML: {e}"))?
    };
    if v.is_null() {
        return Err("is empty".to_string());
    }
    Ok(v)
}

fn parse_typed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if looks_like_json(bytes) {
        serde_json::from_slice(bytes).map_err(|e| format!("does not parse as JSON: {e}"))
    } else {
        serde_norway::from_slice(bytes).map_err(|e| format!("does not parse as YAML: {e}"))
    }
}

/// A value's kind and, for scalars, the value, for "got …" messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// The host of an `https://` URL, if it is one.
pub(crate) fn https_host(url: &str) -> Option<&str> {
    let scheme = url.get(..8)?;
    if !scheme.eq_ignore_ascii_case("https://") {
        return None;
    }
    let rest = &url[8..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() || url.chars().any(char::is_whitespace) {
        return None;
    }
    Some(host)
}

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("/"))
}

/// `rel` against `base` unless it is absolute, normalised.
pub(crate) fn resolve(base: &Path, rel: &str) -> PathBuf {
    normalize(&base.join(rel))
}

/// Absolute and lexically normalised (`.` and `..` removed), without
/// touching the filesystem: kube-apiserver's paths are compared as written.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// PEM and X.509, as much as the checks need.

pub(crate) struct CaInfo {
    pub count: usize,
    /// Set when every certificate has expired: the latest notAfter.
    pub all_expired: Option<String>,
}

/// At least one parseable certificate, as Go's `AppendCertsFromPEM` needs
/// (it skips the ones it cannot parse).
pub(crate) fn parse_ca(pem: &[u8]) -> Result<CaInfo, String> {
    let certs = pem_certificates(pem)?;
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err("no certificate in it parses as X.509".to_string());
    }
    let mut latest: Option<(i64, String)> = None;
    let mut any_valid = false;
    for c in &certs {
        match cert_expiry(c) {
            Some(Expiry::Expired(when)) => {
                let t = validity(c).map_or(0, |(_, na)| na.0);
                if latest.as_ref().is_none_or(|(lt, _)| t > *lt) {
                    latest = Some((t, when));
                }
            }
            _ => any_valid = true,
        }
    }
    Ok(CaInfo {
        count: added,
        all_expired: if any_valid {
            None
        } else {
            latest.map(|(_, w)| w)
        },
    })
}

fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(if PrivateKeyDer::from_pem_slice(pem).is_ok() {
            "holds a private key, not a certificate (are the certificate and key swapped?)"
                .to_string()
        } else {
            "has no PEM CERTIFICATE block".to_string()
        });
    }
    Ok(certs)
}

/// A client certificate chain, leaf first, each parseable as X.509.
pub(crate) fn parse_cert_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = pem_certificates(pem)?;
    if let Some(i) = certs.iter().position(|c| spki(c).is_none()) {
        return Err(format!("certificate #{} does not parse as X.509", i + 1));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC), as Go's
/// `tls.X509KeyPair` takes it.
pub(crate) fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        if pem_certificates(pem).is_ok() {
            "holds a certificate, not a private key (are the certificate and key swapped?)"
                .to_string()
        } else {
            format!("has no PEM private key block (unencrypted PKCS#8, RSA or EC): {e}")
        }
    })
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyMatch {
    Yes,
    No,
    /// The key type cannot report its public key.
    Unknown,
}

/// Whether `key` is the private half of `cert`'s public key.
///
/// This is rustls's own `CertifiedKey::keys_match` comparison (the signing
/// key's SubjectPublicKeyInfo against the certificate's), except that the
/// certificate is read with a small DER walk instead of webpki: webpki only
/// takes X.509 v3, and `openssl x509 -req` without extensions makes v1
/// certificates that Go accepts.
pub(crate) fn key_matches_cert(
    cert: &CertificateDer<'_>,
    key: PrivateKeyDer<'static>,
) -> Result<KeyMatch, String> {
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        format!("cannot load the private key: {e} (RSA, ECDSA P-256/P-384 and Ed25519 keys can be checked)")
    })?;
    let Some(key_spki) = signing.public_key() else {
        return Ok(KeyMatch::Unknown);
    };
    let cert_spki = spki(cert).ok_or("the certificate does not parse as X.509")?;
    // Compare the key bits, not the whole SPKI: the AlgorithmIdentifier may
    // legitimately differ in encoding (RSA with or without NULL parameters).
    let bits = |spki: &[u8]| {
        let (_, inner, _) = der::read(spki, der::SEQUENCE)?;
        let (_, _, rest) = der::read(inner, der::SEQUENCE)?;
        der::read(rest, der::BIT_STRING).map(|(_, b, _)| b.to_vec())
    };
    match (bits(key_spki.as_ref()), bits(cert_spki)) {
        (Some(a), Some(b)) if a == b => Ok(KeyMatch::Yes),
        (Some(_), Some(_)) => Ok(KeyMatch::No),
        _ => Ok(KeyMatch::Unknown),
    }
}

/// The certificate's SubjectPublicKeyInfo, whole (tag and length included).
fn spki<'a>(cert: &'a CertificateDer<'_>) -> Option<&'a [u8]> {
    let mut rest = tbs_after_serial(cert.as_ref())?;
    for _ in 0..4 {
        // signature algorithm, issuer, validity, subject
        rest = der::read(rest, der::SEQUENCE)?.2;
    }
    let (whole, _, _) = der::read(rest, der::SEQUENCE)?;
    Some(whole)
}

/// The TBSCertificate's contents after the optional version and the serial.
fn tbs_after_serial(cert: &[u8]) -> Option<&[u8]> {
    let (_, c, _) = der::read(cert, der::SEQUENCE)?;
    let (_, tbs, _) = der::read(c, der::SEQUENCE)?;
    let rest = match der::read(tbs, der::VERSION) {
        Some((_, _, rest)) => rest,
        None => tbs,
    };
    Some(der::read(rest, der::INTEGER)?.2)
}

/// (seconds since the epoch, "YYYY-MM-DD HH:MM:SS UTC").
type Time = (i64, String);

fn validity(cert: &CertificateDer<'_>) -> Option<(Time, Time)> {
    let rest = tbs_after_serial(cert.as_ref())?;
    let rest = der::read(rest, der::SEQUENCE)?.2; // signature algorithm
    let rest = der::read(rest, der::SEQUENCE)?.2; // issuer
    let (_, v, _) = der::read(rest, der::SEQUENCE)?;
    let (tag, nb, rest) = der::read_any(v)?;
    let not_before = der::time(tag, nb)?;
    let (tag, na, _) = der::read_any(rest)?;
    Some((not_before, der::time(tag, na)?))
}

pub(crate) enum Expiry {
    Valid,
    Expired(String),
    NotYetValid(String),
}

pub(crate) fn cert_expiry(cert: &CertificateDer<'_>) -> Option<Expiry> {
    let (nb, na) = validity(cert)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Some(if now > na.0 {
        Expiry::Expired(na.1)
    } else if now < nb.0 {
        Expiry::NotYetValid(nb.1)
    } else {
        Expiry::Valid
    })
}

/// Just enough DER to walk a certificate. Every read is bounds-checked and
/// returns `None` on anything malformed.
mod der {
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const SEQUENCE: u8 = 0x30;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    /// `[0] EXPLICIT Version` in a TBSCertificate.
    pub const VERSION: u8 = 0xA0;

    /// One TLV: (its tag, its contents, what follows).
    pub fn read_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    /// One TLV with the expected tag: (the whole TLV, contents, rest).
    pub fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8], &[u8])> {
        let (t, contents, rest) = read_any(input)?;
        if t != tag {
            return None;
        }
        let whole = &input[..input.len() - rest.len()];
        Some((whole, contents, rest))
    }

    /// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ).
    pub fn time(tag: u8, v: &[u8]) -> Option<super::Time> {
        let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
        let (year, rest) = match tag {
            UTC_TIME if s.len() == 12 => {
                let yy: i64 = s[..2].parse().ok()?;
                // RFC 5280: 50..99 is 19xx, 00..49 is 20xx.
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
            }
            GENERALIZED_TIME if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
            _ => return None,
        };
        if !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
        let (mo, d, h, mi, se) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
        let secs = days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
        Some((
            secs,
            format!("{year:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{se:02} UTC"),
        ))
    }

    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn civil_days() {
            assert_eq!(super::days_from_civil(1970, 1, 1), 0);
            assert_eq!(super::days_from_civil(2000, 3, 1), 11_017);
            assert_eq!(
                super::time(super::UTC_TIME, b"010101000000Z").unwrap(),
                (978_307_200, "2001-01-01 00:00:00 UTC".to_string())
            );
            assert_eq!(
                super::time(super::GENERALIZED_TIME, b"21261103200225Z")
                    .unwrap()
                    .1,
                "2126-11-03 20:02:25 UTC"
            );
            assert!(super::read_any(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_none());
            assert!(super::read_any(&[0x30, 0x03, 0]).is_none());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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
    fn wrong_api_version_or_kind() {
        let s = Setup::with_config(&CONFIG.replace("config.k8s.io/v1", "config.k8s.io/v2"));
        assert_fails(
            &s.run().1,
            &s.config(),
            Some("apiVersion"),
            "must be apiserver.config.k8s.io/v1, got the string \"apiserver.config.k8s.io/v2\"",
        );
        let s = Setup::with_config(&CONFIG.replace("kind: AdmissionConfiguration", "kind: Config"));
        assert_fails(
            &s.run().1,
            &s.config(),
            Some("kind"),
            "must be AdmissionConfiguration",
        );
        let s = Setup::with_config(&CONFIG.replace("apiVersion: apiserver.config.k8s.io/v1\n", ""));
        assert_fails(&s.run().1, &s.config(), Some("apiVersion"), "not set");
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
    fn ttl_given_as_a_duration_string() {
        let s = Setup::with_config(&CONFIG.replace("allowTTL: 50", "allowTTL: 50s"));
        assert_fails(
            &s.run().1,
            &s.config(),
            Some(&format!("{FIELD}.allowTTL")),
            "must be an integer between 1 and 1800 (seconds), or 0 for the default or -1 to disable, got the string \"50s\"",
        );
    }

    #[test]
    fn ttl_out_of_range() {
        let s = Setup::with_config(&CONFIG.replace("denyTTL: 50", "denyTTL: 3600"));
        assert_fails(
            &s.run().1,
            &s.config(),
            Some(&format!("{FIELD}.denyTTL")),
            "got 3600",
        );
        let s = Setup::with_config(&CONFIG.replace("allowTTL: 50", "allowTTL: -2"));
        assert_fails(
            &s.run().1,
            &s.config(),
            Some(&format!("{FIELD}.allowTTL")),
            "got -2",
        );
        let s = Setup::with_config(&CONFIG.replace("allowTTL: 50", "allowTTL: 50.5"));
        assert_fails(
            &s.run().1,
            &s.config(),
            Some(&format!("{FIELD}.allowTTL")),
            "got 50.5",
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
        let s =
            Setup::with_config(&CONFIG.replace("allowTTL: 50", "allowTTL: 50\n      cacheTTL: 5"));
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
    fn current_context_must_resolve() {
        let s = Setup::with_kubeconf(&KUBECONF.replace("current-context: bouncer_validator\n", ""));
        assert_fails(
            &s.run().1,
            &s.kubeconf(),
            Some("current-context"),
            "not set",
        );
        let s = Setup::with_kubeconf(&KUBECONF.replace(
            "current-context: bouncer_validator",
            "current-context: other",
        ));
        assert_fails(
            &s.run().1,
            &s.kubeconf(),
            Some("current-context"),
            "names context \"other\", which is not in contexts",
        );
        let s =
            Setup::with_kubeconf(&KUBECONF.replace("cluster: bouncer_webhook", "cluster: webhook"));
        assert_fails(
            &s.run().1,
            &s.kubeconf(),
            Some("contexts[0].context.cluster"),
            "names cluster \"webhook\", which is not in clusters",
        );
        let s = Setup::with_kubeconf(&KUBECONF.replace("user: api-server", "user: apiserver"));
        assert_fails(
            &s.run().1,
            &s.kubeconf(),
            Some("contexts[0].context.user"),
            "names user \"apiserver\", which is not in users",
        );
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let dup = KUBECONF.replace(
            "users:\n",
            "users:\n- name: api-server\n  user:\n    token: abc\n",
        );
        let s = Setup::with_kubeconf(&dup);
        assert_fails(
            &s.run().1,
            &s.kubeconf(),
            Some("users[1].name"),
            "duplicate name \"api-server\"",
        );
    }

    #[test]
    fn server_must_be_https() {
        let s = Setup::with_kubeconf(
            &KUBECONF.replace("https://image-bouncer", "http://image-bouncer"),
        );
        assert_fails(
            &s.run().1,
            &s.kubeconf(),
            Some("clusters[0].cluster.server"),
            "must be an https:// URL with a host",
        );
        let s = Setup::with_kubeconf(
            &KUBECONF.replace("https://image-bouncer-webhook:30080", "https://:30080"),
        );
        assert_fails(
            &s.run().1,
            &s.kubeconf(),
            Some("clusters[0].cluster.server"),
            "https://",
        );
        let s = Setup::with_kubeconf(&KUBECONF.replace(
            "    server: https://image-bouncer-webhook:30080/image_policy\n",
            "",
        ));
        assert_fails(
            &s.run().1,
            &s.kubeconf(),
            Some("clusters[0].cluster.server"),
            "not set",
        );
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
        let s = Setup::with_kubeconf(
            &KUBECONF.replace("    client-key: @DIR@/apiserver-client.key\n", ""),
        );
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
}
