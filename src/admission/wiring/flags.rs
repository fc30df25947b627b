//! The admission flags: merge the plugins into the plugin-list flag in use
//! (`--enable-admission-plugins`, or the legacy `--admission-control`), and
//! point `--admission-control-config-file` at the config.

use super::*;
use crate::manifest::edit::{
    block_items, field_path, insert_item, layout, plain_safe, set_scalar, sorted_index, Editor, Seg,
};
use serde_norway::Value;

/// `--flag=value` → `value`, for exactly `flag`.
pub(super) fn flag_value<'s>(item: &'s str, flag: &str) -> Option<&'s str> {
    item.strip_prefix(flag)?.strip_prefix('=')
}

/// A flag item of the kube-apiserver container: which list, which index,
/// the node, and its value after `=`.
pub(super) struct FlagAt<'n> {
    field: &'static str,
    index: usize,
    item: &'n Node,
    value: &'n str,
}

/// The container's `command` and `args`, as present.
pub(super) type Lists<'n> = Vec<(&'static str, &'n Node)>;

/// The one `--flag=value` item for `flag`, if any. Refuses the separate
/// `--flag value` form and repeats, which staticpin does not edit.
pub(super) fn find_flag<'n>(lists: &Lists<'n>, flag: &str) -> Result<Option<FlagAt<'n>>, String> {
    let mut found = Vec::new();
    for (field, list) in lists {
        for (index, item) in list.items().iter().enumerate() {
            let Some(s) = item.as_str() else { continue };
            if s == flag {
                return Err(format!(
                    "{field}[{index}]: {flag} is given as a separate item from its value; staticpin only edits the {flag}=VALUE form"
                ));
            }
            if let Some(value) = flag_value(s, flag) {
                found.push(FlagAt {
                    field,
                    index,
                    item,
                    value,
                });
            }
        }
    }
    if found.len() > 1 {
        return Err(format!(
            "{flag} appears {} times; refusing to guess which one counts",
            found.len()
        ));
    }
    Ok(found.pop())
}

pub(super) fn wire_flags(
    cx: &mut Editor,
    root: &Node,
    container: &Node,
    cpath: &[Seg],
    req: &Request,
) -> Result<(), String> {
    let lists: Lists = ["command", "args"]
        .into_iter()
        .filter_map(|f| container.get(f).map(|l| (f, l)))
        .collect();
    // New flags go where the existing flags live.
    let (flag_field, flag_list) = lists
        .iter()
        .find(|(_, l)| {
            l.items()
                .iter()
                .any(|i| i.as_str().is_some_and(|s| s.starts_with("--")))
        })
        .or(lists.first())
        .copied()
        .ok_or("the kube-apiserver container has neither command nor args")?;

    // The legacy flag names every plugin that runs and excludes the new
    // ones: merge into it when it is the flag in use.
    let legacy = find_flag(&lists, ADMISSION_CONTROL)?;
    let enable = find_flag(&lists, ENABLE_PLUGINS)?;
    if legacy.is_some() {
        for (flag, other) in [
            (ENABLE_PLUGINS, &enable),
            (DISABLE_PLUGINS, &find_flag(&lists, DISABLE_PLUGINS)?),
        ] {
            if other.is_some() {
                return Err(format!(
                    "{ADMISSION_CONTROL} and {flag} are both set: kube-apiserver refuses them together (mutually exclusive) and does not start; keep one"
                ));
            }
        }
    }
    match legacy
        .map(|f| (ADMISSION_CONTROL, f))
        .or(enable.map(|f| (ENABLE_PLUGINS, f)))
    {
        Some((flag, at)) => merge_plugins(cx, cpath, flag, &at, req)?,
        None => {
            // kubeadm always sets NodeRestriction; a kubeadm manifest without
            // the flag still expects it, so it is kept rather than dropped.
            let mut plugins = Vec::new();
            if is_kubeadm(root) && !req.plugins.iter().any(|p| p == "NodeRestriction") {
                plugins.push("NodeRestriction".to_string());
            }
            plugins.extend(req.plugins.iter().cloned());
            let value = format!("{ENABLE_PLUGINS}={}", plugins.join(","));
            insert_flag(cx, flag_list, cpath, flag_field, &value)?;
            cx.summary.push(format!("added {value}"));
        }
    }

    wire_config_file(cx, &lists, cpath, (flag_field, flag_list), req)
}

/// Points `--admission-control-config-file` at the config: added where the
/// flags live, or taken over from another setup only when forced.
fn wire_config_file(
    cx: &mut Editor,
    lists: &Lists,
    cpath: &[Seg],
    (flag_field, flag_list): (&'static str, &Node),
    req: &Request,
) -> Result<(), String> {
    let wanted = req.config_file.display().to_string();
    match find_flag(lists, CONFIG_FILE)? {
        Some(at) if at.value == wanted => {}
        Some(at) => {
            if !req.force {
                return Err(format!(
                    "{CONFIG_FILE} already points to {}, not {wanted}; staticpin takes over another admission setup only when forced to",
                    at.value
                ));
            }
            let value = format!("{CONFIG_FILE}={wanted}");
            set_scalar(cx, at.item, field_path(cpath, at.field, at.index), &value)?;
            cx.summary
                .push(format!("{CONFIG_FILE}: {} -> {wanted} (forced)", at.value));
        }
        None => {
            let value = format!("{CONFIG_FILE}={wanted}");
            insert_flag(cx, flag_list, cpath, flag_field, &value)?;
            cx.summary.push(format!("added {value}"));
        }
    }
    Ok(())
}

/// Adds the requested plugins to an existing plugin list flag, keeping its
/// order and never duplicating a name.
pub(super) fn merge_plugins(
    cx: &mut Editor,
    cpath: &[Seg],
    flag: &str,
    at: &FlagAt,
    req: &Request,
) -> Result<(), String> {
    let mut plugins: Vec<String> = at
        .value
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let missing: Vec<String> = req
        .plugins
        .iter()
        .filter(|p| !plugins.contains(p))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    plugins.extend(missing);
    let value = format!("{flag}={}", plugins.join(","));
    set_scalar(cx, at.item, field_path(cpath, at.field, at.index), &value)?;
    cx.summary
        .push(format!("{flag}: {} -> {}", at.value, plugins.join(",")));
    Ok(())
}

pub(super) fn is_kubeadm(root: &Node) -> bool {
    let meta = root.get("metadata");
    let annotated = matches!(meta.and_then(|m| m.get("annotations")), Some(Node::Map(entries))
        if entries.iter().any(|(k, _)| k.as_str().is_some_and(|k| k.starts_with("kubeadm.kubernetes.io/"))));
    let tier = meta
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get("tier"))
        .and_then(Node::as_str)
        == Some("control-plane");
    annotated || tier
}

pub(super) fn insert_flag(
    cx: &mut Editor,
    list: &Node,
    cpath: &[Seg],
    field: &'static str,
    value: &str,
) -> Result<(), String> {
    plain_safe(value)?;
    let items = block_items(list, field)?;
    let name = value.split('=').next().unwrap_or(value);
    let flags: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            n.as_str()
                .filter(|s| s.starts_with("--"))
                .map(|s| (i, s.split('=').next().unwrap_or(s).to_string()))
        })
        .collect();
    let names: Vec<String> = flags.iter().map(|(_, n)| n.clone()).collect();
    let at = sorted_index(&names, name);
    let index = flags.get(at).map_or(items.len(), |(i, _)| *i);
    let like = layout(cx, &items[index.min(items.len() - 1)])?;
    let mut path = cpath.to_vec();
    path.push(Seg::Key(field));
    let body = format!("{}{value}", like.dash_prefix);
    insert_item(
        cx,
        items,
        index,
        body,
        path,
        Value::String(value.to_string()),
    )
}
