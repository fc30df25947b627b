//! The start-up checks kube-apiserver and kubelet run on a kube-apiserver
//! manifest, as far as wiring can break them: run on every wiring result
//! before it is written, and by `doctor` on what is on disk.
//!
//! kube-apiserver (`pkg/kubeapiserver/options/admission.go`): the legacy
//! `--admission-control` excludes `--enable-`/`--disable-admission-plugins`,
//! unknown plugin names and an enable/disable overlap are start-up errors.
//! kubelet (`ValidatePodCreate`): volume names unique, mountPaths unique per
//! container, every mount names a volume, hostPaths without `..`, subPaths
//! relative. staticpin is stricter in two places that cost nothing on a real
//! node: an admission flag may appear once, and hostPaths must be absolute.

use std::collections::HashSet;

use super::{flag_value, ADMISSION_CONTROL, CONFIG_FILE, DISABLE_PLUGINS, ENABLE_PLUGINS};
use crate::admission::preflight::PLUGIN_NAME;
use crate::manifest::parse::Node;

/// Every reason the Pod or kube-apiserver would not start; empty when none.
/// `ci` is the kube-apiserver container's index in `spec.containers`.
pub(crate) fn problems(root: &Node, ci: usize) -> Vec<String> {
    let mut out = Vec::new();
    let spec = root.get("spec");
    if let Some(c) = spec.and_then(|s| s.get("containers")).map(Node::items) {
        if let Some(c) = c.get(ci) {
            flags(c, &mut out);
        }
    }
    volumes(spec, &mut out);
    out
}

fn flag_items(c: &Node) -> Vec<&str> {
    ["command", "args"]
        .iter()
        .filter_map(|f| c.get(f))
        .flat_map(Node::items)
        .filter_map(Node::as_str)
        .collect()
}

/// pflag's string-slice value: csv fields, not trimmed; empty is no names.
fn plugin_list(value: &str) -> Vec<&str> {
    if value.is_empty() {
        Vec::new()
    } else {
        value.split(',').collect()
    }
}

fn flags(c: &Node, out: &mut Vec<String>) {
    let items = flag_items(c);
    let mut value = |flag: &str| -> Option<&str> {
        let found: Vec<&str> = items.iter().filter_map(|i| flag_value(i, flag)).collect();
        if found.len() > 1 {
            out.push(format!(
                "{flag} appears {} times; refusing to guess which one counts",
                found.len()
            ));
        }
        found.last().copied()
    };
    let legacy = value(ADMISSION_CONTROL);
    let enable = value(ENABLE_PLUGINS);
    let disable = value(DISABLE_PLUGINS);
    let config = value(CONFIG_FILE);
    if legacy.is_some() {
        for (flag, v) in [(ENABLE_PLUGINS, enable), (DISABLE_PLUGINS, disable)] {
            if v.is_some() {
                out.push(format!(
                    "{ADMISSION_CONTROL} and {flag} are both set: kube-apiserver refuses them together (mutually exclusive) and does not start"
                ));
            }
        }
    }
    for (flag, v) in [
        (ADMISSION_CONTROL, legacy),
        (ENABLE_PLUGINS, enable),
        (DISABLE_PLUGINS, disable),
    ] {
        for name in plugin_list(v.unwrap_or("")) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                out.push(format!(
                    "{flag}: {name:?} is not a plugin name: kube-apiserver refuses unknown plugins and does not start (no spaces, quotes or empty entries in the list)"
                ));
            }
        }
    }
    let disabled = plugin_list(disable.unwrap_or(""));
    for name in plugin_list(enable.unwrap_or("")) {
        if disabled.contains(&name) {
            out.push(format!(
                "{name} is in both {ENABLE_PLUGINS} and {DISABLE_PLUGINS}: kube-apiserver refuses the overlap and does not start"
            ));
        }
    }
    let enabled = plugin_list(legacy.or(enable).unwrap_or(""));
    if enabled.contains(&PLUGIN_NAME) && config.is_none_or(str::is_empty) {
        out.push(format!(
            "{PLUGIN_NAME} is enabled but {CONFIG_FILE} is not set: the plugin has no configuration and kube-apiserver does not start"
        ));
    }
}

fn has_backsteps(p: &str) -> bool {
    p.split('/').any(|c| c == "..")
}

fn volumes(spec: Option<&Node>, out: &mut Vec<String>) {
    let mut names = HashSet::new();
    for v in spec
        .and_then(|s| s.get("volumes"))
        .map_or(&[][..], Node::items)
    {
        let name = v.get("name").and_then(Node::as_str).unwrap_or("");
        if !names.insert(name) {
            out.push(format!(
                "volume name {name:?} appears more than once in spec.volumes: names must be unique, or kubelet rejects the Pod"
            ));
        }
        if let Some(h) = v.get("hostPath") {
            match h.get("path").and_then(Node::as_str) {
                Some(p) if p.starts_with('/') && !has_backsteps(p) => {}
                p => out.push(format!(
                    "volume {name:?}: hostPath.path {:?} must be an absolute path without '..'",
                    p.unwrap_or("")
                )),
            }
        }
    }
    for field in ["initContainers", "containers"] {
        for c in spec.and_then(|s| s.get(field)).map_or(&[][..], Node::items) {
            mounts(c, &names, out);
        }
    }
}

fn mounts(c: &Node, volumes: &HashSet<&str>, out: &mut Vec<String>) {
    let cname = c.get("name").and_then(Node::as_str).unwrap_or("");
    let mut paths = HashSet::new();
    for m in c.get("volumeMounts").map_or(&[][..], Node::items) {
        let name = m.get("name").and_then(Node::as_str).unwrap_or("");
        let path = m.get("mountPath").and_then(Node::as_str).unwrap_or("");
        if !paths.insert(path) {
            out.push(format!(
                "container {cname:?}: mountPath {path} appears more than once in volumeMounts: mountPaths must be unique, or kubelet rejects the Pod"
            ));
        }
        if !volumes.contains(name) {
            out.push(format!(
                "container {cname:?}: volumeMount {name:?} names no volume in spec.volumes, so kubelet rejects the Pod"
            ));
        }
        if let Some(sp) = m.get("subPath").and_then(Node::as_str) {
            if sp.starts_with('/') || has_backsteps(sp) {
                out.push(format!(
                    "container {cname:?}: subPath {sp:?} of mountPath {path} must be relative without '..'"
                ));
            }
        }
    }
}
