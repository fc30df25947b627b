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

mod admission_config;
mod image_policy;
mod kubeconfig;
mod mounts;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_norway::Value;

pub(crate) use crate::trust::certs::{
    cert_expiry, key_matches_cert, parse_ca, parse_cert_chain, parse_private_key, Expiry, KeyMatch,
};
pub(crate) use image_policy::{DurationField, Verdict, ALLOW_TTL, DENY_TTL, RETRY_BACKOFF};
pub use kubeconfig::{client_end, ClientEnd};

/// Check names, stable for `doctor`'s table and for scripts that grep it.
pub const CHECK_ADMISSION_CONFIG: &str = "admission-config";
/// The `ImagePolicyWebhook` entry and its `configuration:` or `path:`.
pub const CHECK_PLUGIN: &str = "image-policy-plugin";
/// The `imagePolicy` settings: TTLs, backoff, `kubeConfigFile`.
pub const CHECK_SETTINGS: &str = "image-policy-settings";
/// `defaultAllow`: warns when the webhook fails open.
pub const CHECK_FAIL_OPEN: &str = "fail-open";
/// The webhook kubeconfig: readable, and its current-context resolves.
pub const CHECK_KUBECONFIG: &str = "webhook-kubeconfig";
/// The kubeconfig's `server`: an https URL with a host.
pub const CHECK_SERVER: &str = "webhook-server";
/// The CA that verifies the webhook backend.
pub const CHECK_CA: &str = "webhook-ca";
/// kube-apiserver's client certificate and key: they load, match and are
/// within their validity.
pub const CHECK_CLIENT_CERT: &str = "webhook-client-cert";
/// Every referenced file lies in a directory mounted into the apiserver
/// container.
pub const CHECK_MOUNTS: &str = "mounts";

/// The only `apiVersion` kube-apiserver documents for the admission config.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// The deprecated alpha group, still decoded by kube-apiserver.
pub const API_VERSION_DEPRECATED: &str = "apiserver.k8s.io/v1alpha1";
/// The admission config's `kind`.
pub const KIND: &str = "AdmissionConfiguration";
/// The plugin's name in `plugins:` and in `--enable-admission-plugins`.
pub const PLUGIN_NAME: &str = "ImagePolicyWebhook";

/// How a check came out, ordered best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The check holds.
    Pass,
    /// kube-apiserver starts, but something is weak or may break later
    /// (fail open, an unverified backend, an expired certificate).
    Warn,
    /// kube-apiserver would not start, or the webhook would not work.
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
    /// How the check came out.
    pub level: Level,
    /// Which check, one of the `CHECK_*` names.
    pub check: &'static str,
    /// The file to look at.
    pub file: PathBuf,
    /// A dotted path in the file's own spelling, e.g.
    /// `plugins[0].configuration.imagePolicy.allowTTL` or
    /// `users[0].user.client-key`; `None` for the file as a whole.
    pub field: Option<String>,
    /// What was found, or what to fix.
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

/// Whether any finding is a [`Level::Fail`]: the files must not be wired in.
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

/// Where a finding points: its check, the file, and the field in it. Every
/// finding is made as `self.fail(site(CHECK, file).at(field), message)`.
#[derive(Clone)]
struct Site {
    check: &'static str,
    file: PathBuf,
    field: Option<String>,
}

/// A finding about `file` as a whole; narrow it with [`Site::at`].
fn site(check: &'static str, file: &Path) -> Site {
    Site {
        check,
        file: file.to_path_buf(),
        field: None,
    }
}

impl Site {
    /// The same file, at `field` (a dotted path in the file's spelling).
    fn at(self, field: &str) -> Site {
        Site {
            field: Some(field.to_string()),
            ..self
        }
    }

    /// At `field` when there is one, else the whole file.
    fn field(self, field: Option<&str>) -> Site {
        match field {
            Some(f) => self.at(f),
            None => self,
        }
    }
}

impl Run {
    fn report(&mut self, level: Level, at: Site, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            check: at.check,
            file: at.file,
            field: at.field,
            message: message.into(),
        });
    }

    fn pass(&mut self, at: Site, m: impl Into<String>) {
        self.report(Level::Pass, at, m);
    }

    fn warn(&mut self, at: Site, m: impl Into<String>) {
        self.report(Level::Warn, at, m);
    }

    fn fail(&mut self, at: Site, m: impl Into<String>) {
        self.report(Level::Fail, at, m);
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
                    site(check, from).at(field),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }
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
