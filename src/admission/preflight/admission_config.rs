//! Steps 1 and 2: the `--admission-control-config-file` itself, and its
//! `ImagePolicyWebhook` entry (embedded `configuration:` or a `path:`).

use std::path::Path;

use serde_norway::{Mapping, Value};

use super::*;

/// Without a configuration the plugin's constructor fails with "no config
/// specified" and kube-apiserver does not start.
const NO_CONFIG: &str =
    "kube-apiserver does not start with ImagePolicyWebhook enabled and no configuration for it";

impl Run {
    /// Step 1 and 2: the admission config and the ImagePolicyWebhook entry.
    pub(super) fn admission_config(&mut self, file: &Path) -> Option<PluginConfig> {
        const C: &str = CHECK_ADMISSION_CONFIG;
        let bytes = match fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                self.fail(site(C, file), format!("cannot read: {e}"));
                return None;
            }
        };
        let doc = self.parsed(C, file, &bytes)?;
        let Some(map) = doc.as_mapping() else {
            self.fail(site(C, file), format!(
                "must be a mapping (an {KIND}, or the legacy form with a top-level imagePolicy key), got {}",
                describe(&doc)
            ));
            return None;
        };
        if self.typed(file, map)? {
            return self.plugin_entry(file, map);
        }
        Some(PluginConfig {
            file: file.to_path_buf(),
            prefix: String::new(),
            value: doc.clone(),
        })
    }

    /// `bytes` as a document, or a failure against `file`.
    fn parsed(&mut self, check: &'static str, file: &Path, bytes: &[u8]) -> Option<Value> {
        match parse_doc(bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(site(check, file), e);
                None
            }
        }
    }

    /// Whether the file is a typed `AdmissionConfiguration` (`Some(true)`)
    /// or the legacy bare plugin config (`Some(false)`); `None` when
    /// kube-apiserver would decode neither.
    fn typed(&mut self, file: &Path, map: &Mapping) -> Option<bool> {
        const C: &str = CHECK_ADMISSION_CONFIG;
        let api_version = map.get("apiVersion");
        let kind = map.get("kind");
        match (
            api_version.and_then(Value::as_str),
            kind.and_then(Value::as_str),
        ) {
            (Some(API_VERSION), Some(KIND)) => {
                self.pass(site(C, file), format!("{KIND} {API_VERSION}"));
                Some(true)
            }
            (Some(API_VERSION_DEPRECATED), Some(KIND)) => {
                self.warn(
                    site(C, file).at("apiVersion"),
                    format!("{API_VERSION_DEPRECATED} is deprecated; use {API_VERSION}"),
                );
                Some(true)
            }
            // kube-apiserver falls back to the legacy form only when the typed
            // decode fails for a missing or unregistered version or kind, and
            // the file has a top-level imagePolicy key.
            _ if map.contains_key("imagePolicy") => {
                self.pass(site(C, file), "legacy unversioned form: the whole file is the ImagePolicyWebhook configuration");
                Some(false)
            }
            (None, _) => {
                let got = match api_version {
                    None | Some(Value::Null) => "not set".to_string(),
                    Some(v) => format!("got {}", describe(v)),
                };
                self.fail(site(C, file).at("apiVersion"), format!(
                    "{got}: must be {API_VERSION} with kind {KIND} (or the file must be the legacy form with a top-level imagePolicy key)"
                ));
                None
            }
            (Some(v), _) if v != API_VERSION && v != API_VERSION_DEPRECATED => {
                self.fail(
                    site(C, file).at("apiVersion"),
                    format!("must be {API_VERSION}, got the string {v:?}"),
                );
                None
            }
            _ => {
                let got = kind.map_or_else(|| "nothing".to_string(), describe);
                self.fail(
                    site(C, file).at("kind"),
                    format!("must be {KIND}, got {got}"),
                );
                None
            }
        }
    }

    /// The first `ImagePolicyWebhook` entry of `plugins`, as kube-apiserver
    /// picks it, with its index.
    fn find_entry<'m>(&mut self, file: &Path, map: &'m Mapping) -> Option<(usize, &'m Mapping)> {
        const C: &str = CHECK_PLUGIN;
        let plugins = match map.get("plugins") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Sequence(s)) => s.as_slice(),
            Some(other) => {
                self.fail(
                    site(C, file).at("plugins"),
                    format!("must be a list, got {}", describe(other)),
                );
                return None;
            }
        };
        let mut found: Option<(usize, &Mapping)> = None;
        for (i, entry) in plugins.iter().enumerate() {
            let at = site(C, file).at(&format!("plugins[{i}]"));
            let Some(entry) = entry.as_mapping() else {
                self.fail(at, format!("must be a mapping, got {}", describe(entry)));
                return None;
            };
            if entry.get("name").and_then(Value::as_str) != Some(PLUGIN_NAME) {
                continue;
            }
            match found {
                None => found = Some((i, entry)),
                Some((first, _)) => self.warn(at, format!(
                    "a second {PLUGIN_NAME} entry; kube-apiserver uses plugins[{first}] and ignores this one"
                )),
            }
        }
        if found.is_none() {
            let legacy_hint = if map.contains_key("imagePolicy") {
                " (the top-level imagePolicy key is ignored in a typed AdmissionConfiguration; move it under plugins[].configuration)"
            } else {
                ""
            };
            self.fail(
                site(C, file).at("plugins"),
                format!("no entry with name: {PLUGIN_NAME}: {NO_CONFIG}{legacy_hint}"),
            );
        }
        found
    }

    /// The plugin's configuration: embedded (which wins) or in `path`.
    fn plugin_entry(&mut self, file: &Path, map: &Mapping) -> Option<PluginConfig> {
        const C: &str = CHECK_PLUGIN;
        let (i, entry) = self.find_entry(file, map)?;
        let at = format!("plugins[{i}]");
        let path = entry.get("path");
        match entry.get("configuration") {
            None | Some(Value::Null) => {}
            Some(config @ Value::Mapping(_)) => {
                if path.and_then(Value::as_str).is_some_and(|p| !p.is_empty()) {
                    self.warn(
                        site(C, file).at(&format!("{at}.path")),
                        "ignored: the embedded configuration wins",
                    );
                }
                self.pass(
                    site(C, file).at(&at),
                    format!("{PLUGIN_NAME} configured inline"),
                );
                return Some(PluginConfig {
                    file: file.to_path_buf(),
                    prefix: format!("{at}.configuration."),
                    value: config.clone(),
                });
            }
            Some(other) => {
                self.fail(
                    site(C, file).at(&format!("{at}.configuration")),
                    format!(
                        "must be a mapping holding imagePolicy, got {}",
                        describe(other)
                    ),
                );
                return None;
            }
        }
        let field = format!("{at}.path");
        match path {
            None | Some(Value::Null) => {
                self.fail(
                    site(C, file).at(&at),
                    format!("neither configuration nor path is set: {NO_CONFIG}"),
                );
                None
            }
            Some(Value::String(s)) if !s.is_empty() => self.plugin_file(file, &field, s),
            Some(other) => {
                self.fail(
                    site(C, file).at(&field),
                    format!("must be a file path, got {}", describe(other)),
                );
                None
            }
        }
    }

    /// The plugin configuration in the file `rel` names.
    fn plugin_file(&mut self, file: &Path, field: &str, rel: &str) -> Option<PluginConfig> {
        const C: &str = CHECK_PLUGIN;
        // makeAbs(path, dir(configFile)) in apiserver's admission config loader.
        let plugin_file = resolve(parent(file), rel);
        // An unreadable path is a klog.Fatalf: kube-apiserver exits.
        let bytes = self.read_referenced(C, &plugin_file, file, field)?;
        let value = self.parsed(C, &plugin_file, &bytes)?;
        self.pass(
            site(C, file).at(field),
            format!("{PLUGIN_NAME} configured in {}", plugin_file.display()),
        );
        Some(PluginConfig {
            file: plugin_file,
            prefix: String::new(),
            value,
        })
    }
}
