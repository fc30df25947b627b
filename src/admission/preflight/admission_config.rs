//! Steps 1 and 2: the `--admission-control-config-file` itself, and its
//! `ImagePolicyWebhook` entry (embedded `configuration:` or a `path:`).

use std::path::Path;

use serde_norway::{Mapping, Value};

use super::*;

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
        let doc: Value = match parse_doc(&bytes) {
            Ok(v) => v,
            Err(e) => {
                self.fail(site(C, file), e);
                return None;
            }
        };
        let Some(map) = doc.as_mapping() else {
            self.fail(site(C, file), format!(
                    "must be a mapping (an {KIND}, or the legacy form with a top-level imagePolicy key), got {}",
                    describe(&doc)
                ));
            return None;
        };
        let api_version = map.get("apiVersion");
        let kind = map.get("kind");
        let typed = match (
            api_version.and_then(Value::as_str),
            kind.and_then(Value::as_str),
        ) {
            (Some(API_VERSION), Some(KIND)) => {
                self.pass(site(C, file), format!("{KIND} {API_VERSION}"));
                true
            }
            (Some(API_VERSION_DEPRECATED), Some(KIND)) => {
                self.warn(
                    site(C, file).at("apiVersion"),
                    format!("{API_VERSION_DEPRECATED} is deprecated; use {API_VERSION}"),
                );
                true
            }
            // kube-apiserver falls back to the legacy form only when the typed
            // decode fails for a missing or unregistered version or kind, and
            // the file has a top-level imagePolicy key.
            _ if map.contains_key("imagePolicy") => {
                self.pass(site(C, file), "legacy unversioned form: the whole file is the ImagePolicyWebhook configuration");
                false
            }
            (None, _) => {
                let got = match api_version {
                    None | Some(Value::Null) => "not set".to_string(),
                    Some(v) => format!("got {}", describe(v)),
                };
                self.fail(site(C, file).at("apiVersion"), format!(
                        "{got}: must be {API_VERSION} with kind {KIND} (or the file must be the legacy form with a top-level imagePolicy key)"
                    ));
                return None;
            }
            (Some(v), _) if v != API_VERSION && v != API_VERSION_DEPRECATED => {
                self.fail(
                    site(C, file).at("apiVersion"),
                    format!(
                        "must be {API_VERSION}, got {}",
                        describe(api_version.unwrap())
                    ),
                );
                return None;
            }
            _ => {
                let got = kind.map_or_else(|| "nothing".to_string(), describe);
                self.fail(
                    site(C, file).at("kind"),
                    format!("must be {KIND}, got {got}"),
                );
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
                    site(C, file).at("plugins"),
                    format!("must be a list, got {}", describe(other)),
                );
                return None;
            }
        };
        let mut found: Option<(usize, &Mapping)> = None;
        for (i, entry) in plugins.iter().enumerate() {
            let Some(entry) = entry.as_mapping() else {
                self.fail(
                    site(C, file).at(&format!("plugins[{i}]")),
                    format!("must be a mapping, got {}", describe(entry)),
                );
                return None;
            };
            if entry.get("name").and_then(Value::as_str) != Some(PLUGIN_NAME) {
                continue;
            }
            match found {
                None => found = Some((i, entry)),
                Some((first, _)) => self.warn(site(C, file).at(&format!("plugins[{i}]")), format!("a second {PLUGIN_NAME} entry; kube-apiserver uses plugins[{first}] and ignores this one")),
            }
        }
        let Some((i, entry)) = found else {
            self.fail(
                site(C, file).at("plugins"),
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
                    value: entry.get("configuration").cloned().unwrap_or(Value::Null),
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
        let rel = match path {
            None | Some(Value::Null) => {
                self.fail(
                    site(C, file).at(&at),
                    format!("neither configuration nor path is set: {consequence}"),
                );
                return None;
            }
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(other) => {
                self.fail(
                    site(C, file).at(&field),
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
                self.fail(site(C, &plugin_file), e);
                return None;
            }
        };
        self.pass(
            site(C, file).at(&field),
            format!("{PLUGIN_NAME} configured in {}", plugin_file.display()),
        );
        Some(PluginConfig {
            file: plugin_file,
            prefix: String::new(),
            value,
        })
    }
}
