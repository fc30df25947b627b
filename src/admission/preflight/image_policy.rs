//! Step 3: the `imagePolicy` settings, decoded as Go's `encoding/json`
//! decodes them into the plugin's config struct, with kube-apiserver's
//! ranges for the durations.

use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

use super::*;

/// `imagePolicy`'s known keys as Go decodes them: (canonical key, field
/// path as written, value), the last spelling winning.
struct Fields<'v>(Vec<(&'static str, String, &'v Value)>);

impl<'v> Fields<'v> {
    /// A set (non-null) key: its field path and value.
    fn get(&self, name: &str) -> Option<(String, &'v Value)> {
        self.0
            .iter()
            .find(|(n, _, v)| *n == name && !v.is_null())
            .map(|(_, at, v)| (at.clone(), *v))
    }
}

impl Run {
    /// Step 3: the `imagePolicy` settings. Returns the kubeconfig to check,
    /// with the file and field that named it.
    pub(super) fn image_policy(
        &mut self,
        plugin: &PluginConfig,
    ) -> Option<(PathBuf, PathBuf, String)> {
        const C: &str = CHECK_SETTINGS;
        let file = plugin.file.as_path();
        let Some(map) = plugin.value.as_mapping() else {
            let at = plugin.prefix.trim_end_matches('.');
            let at = (!at.is_empty()).then_some(at);
            self.fail(
                site(C, file).field(at),
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
                self.fail(site(C, file).at(&ip_field), "not set: ImagePolicyWebhook has no kubeConfigFile and kube-apiserver does not start");
                return None;
            }
            Some(other) => {
                self.fail(
                    site(C, file).at(&ip_field),
                    format!("must be a mapping, got {}", describe(other)),
                );
                return None;
            }
        };
        let fields = self.fields(file, &ip_field, ip);
        self.durations(file, &ip_field, &fields);
        self.default_allow(file, &ip_field, &fields);
        self.kube_config_file(file, &ip_field, &fields)
    }

    /// encoding/json: keys match case-insensitively, the last one wins,
    /// unknown keys are ignored.
    fn fields<'v>(&mut self, file: &Path, ip_field: &str, ip: &'v Mapping) -> Fields<'v> {
        const C: &str = CHECK_SETTINGS;
        let mut fields = Vec::new();
        for (k, v) in ip {
            let Some(k) = k.as_str() else {
                self.warn(
                    site(C, file).at(ip_field),
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
                        self.warn(site(C, file).at(&at), format!("spelled differently from {known}; kube-apiserver matches keys case-insensitively, but write {known}"));
                    }
                    fields.retain(|(name, _, _)| *name != known);
                    fields.push((known, at, v));
                }
                None => self.warn(
                    site(C, file).at(&at),
                    format!(
                        "unknown key, ignored by kube-apiserver (known keys: {})",
                        IMAGE_POLICY_KEYS.join(", ")
                    ),
                ),
            }
        }
        Fields(fields)
    }

    fn durations(&mut self, file: &Path, ip_field: &str, fields: &Fields) {
        const C: &str = CHECK_SETTINGS;
        for d in [&ALLOW_TTL, &DENY_TTL, &RETRY_BACKOFF] {
            let Some((at, v)) = fields.get(d.key) else {
                self.pass(
                    site(C, file).at(&format!("{ip_field}.{}", d.key)),
                    format!("not set: the default, {}", d.default),
                );
                continue;
            };
            let verdict = match v.as_i64() {
                Some(n) if v.is_number() => d.check(n),
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
            let at = site(C, file).at(&at);
            match verdict {
                Verdict::Pass(m) => self.pass(at, m),
                Verdict::Warn(m) => self.warn(at, m),
                Verdict::Fail(m) => self.fail(at, m),
            }
        }
    }

    fn default_allow(&mut self, file: &Path, ip_field: &str, fields: &Fields) {
        const C: &str = CHECK_FAIL_OPEN;
        match fields.get("defaultAllow") {
            None => self.pass(
                site(C, file).at(&format!("{ip_field}.defaultAllow")),
                "not set: false, the webhook fails closed",
            ),
            Some((at, Value::Bool(false))) => {
                self.pass(site(C, file).at(&at), "false: the webhook fails closed")
            }
            Some((at, Value::Bool(true))) => {
                self.default_allow = true;
                self.warn(
                    site(C, file).at(&at),
                    "true: the webhook fails open: if the backend is down, every image is admitted",
                );
            }
            Some((at, v)) => self.fail(
                site(C, file).at(&at),
                format!("must be true or false, got {}", describe(v)),
            ),
        }
    }

    /// The webhook kubeconfig's path, with the file and field naming it.
    fn kube_config_file(
        &mut self,
        file: &Path,
        ip_field: &str,
        fields: &Fields,
    ) -> Option<(PathBuf, PathBuf, String)> {
        const C: &str = CHECK_SETTINGS;
        let (at, path) = match fields.get("kubeConfigFile") {
            Some((at, Value::String(s))) if !s.is_empty() => (at, s.clone()),
            None | Some((_, Value::String(_))) => {
                self.fail(site(C, file).at(&format!("{ip_field}.kubeConfigFile")), "not set: ImagePolicyWebhook needs the kubeconfig that says where the webhook backend is");
                return None;
            }
            Some((at, v)) => {
                self.fail(
                    site(C, file).at(&at),
                    format!("must be a file path, got {}", describe(v)),
                );
                return None;
            }
        };
        // clientcmd opens an explicit path as given, so a relative one
        // depends on kube-apiserver's working directory inside its container,
        // which nothing documents. Require an absolute path instead of guessing.
        if !Path::new(&path).is_absolute() {
            self.fail(site(C, file).at(&at), format!("must be an absolute path, got {path:?}: a relative path is resolved against kube-apiserver's working directory inside its container, not against this file"));
            return None;
        }
        let path = normalize(Path::new(&path));
        self.pass(site(C, file).at(&at), path.display().to_string());
        self.kubeconfig = Some(path.clone());
        Some((path, file.to_path_buf(), at))
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
