//! The admission directory's hostPath volume and read-only mount, unless a
//! mount already shows it, and the refusal of a mount at that path that
//! does not.

use crate::manifest::edit::{block_items, insert_item, layout, sorted_index, Editor, Seg};
use serde_norway::Value;

use super::*;

pub(super) fn clean(p: &str) -> PathBuf {
    PathBuf::from(
        p.trim_end_matches('/').to_string()
            + if p.trim_end_matches('/').is_empty() {
                "/"
            } else {
                ""
            },
    )
}

pub(super) fn wire_mount(
    cx: &mut Editor,
    root: &Node,
    container: &Node,
    cpath: &[Seg],
    req: &Request,
) -> Result<Vec<PathBuf>, String> {
    let volumes_node = root.get("spec").and_then(|s| s.get("volumes"));
    let volumes: Vec<(String, Option<String>)> = volumes_node
        .map(|v| v.items())
        .unwrap_or(&[])
        .iter()
        .map(|v| {
            (
                v.get("name")
                    .and_then(Node::as_str)
                    .unwrap_or("")
                    .to_string(),
                v.get("hostPath")
                    .and_then(|h| h.get("path"))
                    .and_then(Node::as_str)
                    .map(str::to_string),
            )
        })
        .collect();
    let mounts_node = container.get("volumeMounts");
    let dir = clean(&req.mount_dir.display().to_string());
    let mut mounted = same_path_mounts(mounts_node, &volumes, &dir)?;
    if mounted.iter().any(|m| dir.starts_with(m)) {
        return Ok(mounted);
    }

    let mounts_list =
        mounts_node.ok_or("the kube-apiserver container has no volumeMounts list to extend")?;
    let volumes_list = volumes_node.ok_or("the Pod has no volumes list to extend")?;
    let name = unique_volume_name(&dir, &volumes);
    let dir_s = dir.display().to_string();
    add_mount(
        cx,
        block_items(mounts_list, "volumeMounts")?,
        cpath,
        &dir_s,
        &name,
    )?;
    let vol_names: Vec<String> = volumes.iter().map(|(n, _)| n.clone()).collect();
    add_volume(
        cx,
        block_items(volumes_list, "spec.volumes")?,
        &vol_names,
        &dir_s,
        &name,
    )?;
    cx.summary.push(format!(
        "mounted {dir_s} read-only as hostPath volume {name:?}"
    ));
    mounted.push(dir);
    Ok(mounted)
}

/// The structural twin of an inserted item, for verification.
fn yaml(text: &str) -> Result<Value, String> {
    serde_norway::from_str(text).map_err(|e| format!("staticpin bug: {e} in {text:?}"))
}

/// The read-only volumeMount, copying the sibling's dash prefix and key column.
fn add_mount(
    cx: &mut Editor,
    items: &[Node],
    cpath: &[Seg],
    dir: &str,
    name: &str,
) -> Result<(), String> {
    let names: Vec<String> = items
        .iter()
        .map(|m| {
            m.get("name")
                .and_then(Node::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let index = sorted_index(&names, name);
    let like = layout(cx, &items[index.min(items.len() - 1)])?;
    let pad = " ".repeat(like.content_col);
    let eol = cx.eol;
    let body = format!(
        "{}mountPath: {dir}{eol}{pad}name: {name}{eol}{pad}readOnly: true",
        like.dash_prefix
    );
    let mut path = cpath.to_vec();
    path.push(Seg::Key("volumeMounts"));
    let value = yaml(&format!("mountPath: {dir}\nname: {name}\nreadOnly: true\n"))?;
    insert_item(cx, items, index, body, path, value)
}

/// The hostPath volume; its nested keys indent like the sibling's, else by 2.
fn add_volume(
    cx: &mut Editor,
    items: &[Node],
    names: &[String],
    dir: &str,
    name: &str,
) -> Result<(), String> {
    let index = sorted_index(names, name);
    let like = layout(cx, &items[index.min(items.len() - 1)])?;
    let pad = " ".repeat(like.content_col);
    let nested = " ".repeat(like.content_col + nested_indent(cx, items));
    let eol = cx.eol;
    let body = format!(
        "{}hostPath:{eol}{nested}path: {dir}{eol}{nested}type: DirectoryOrCreate{eol}{pad}name: {name}",
        like.dash_prefix
    );
    let value = yaml(&format!(
        "hostPath:\n  path: {dir}\n  type: DirectoryOrCreate\nname: {name}\n"
    ))?;
    let path = vec![Seg::Key("spec"), Seg::Key("volumes")];
    insert_item(cx, items, index, body, path, value)
}

/// Directories the container sees at their host path (a hostPath volume
/// mounted at its own path, whole). Refuses a mount already at `dir` that
/// is not that: a second mount there would repeat the mountPath, which
/// kubelet rejects, and a `subPath` mount shows only part of its volume.
pub(super) fn same_path_mounts(
    mounts: Option<&Node>,
    volumes: &[(String, Option<String>)],
    dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    let mut mounted = Vec::new();
    for m in mounts.map_or(&[][..], Node::items) {
        let (Some(path), Some(name)) = (
            m.get("mountPath").and_then(Node::as_str),
            m.get("name").and_then(Node::as_str),
        ) else {
            continue;
        };
        let sub = ["subPath", "subPathExpr"]
            .iter()
            .find_map(|k| m.get(k).and_then(Node::as_str).map(|v| (*k, v)))
            .filter(|(_, v)| !v.is_empty());
        let host = volumes
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, h)| h.as_deref());
        let identity = host.map(clean) == Some(clean(path));
        if clean(path) == dir {
            if let Some((key, v)) = sub {
                return Err(format!(
                    "volumeMount {name:?} at {path} has {key}: {v}, so it shows only that part of its volume there, not the admission directory; and a second mount at {path} would repeat the mountPath, which kubelet rejects. Remove the {key} or choose another admission directory"
                ));
            }
            if !identity {
                let source = host.map_or_else(
                    || format!("volume {name:?}, not a hostPath"),
                    |h| format!("hostPath {h}"),
                );
                return Err(format!(
                    "volumeMount {name:?} already sits at mountPath {path} with another source ({source}): a second mount there would repeat the mountPath, which kubelet rejects, and this one does not show the host's {path}; choose another admission directory"
                ));
            }
        }
        if identity && sub.is_none() {
            mounted.push(clean(path));
        }
    }
    Ok(mounted)
}

pub(super) fn nested_indent(cx: &Editor, volumes: &[Node]) -> usize {
    for v in volumes {
        if let (Some(Node::Map(entries)), Some(key)) = (v.get("hostPath"), v.first_char()) {
            if let (Some((k, _)), Ok(l)) = (entries.first(), layout(cx, v)) {
                let outer = cx.byte(key) - l.line_start;
                let kb = cx.byte(k.first_char().unwrap_or(key));
                let line_start = cx.text[..kb].rfind('\n').map_or(0, |i| i + 1);
                if kb - line_start > outer {
                    return kb - line_start - outer;
                }
            }
        }
    }
    2
}

/// A DNS-label volume name from the directory, unused in the Pod.
pub(super) fn unique_volume_name(dir: &Path, volumes: &[(String, Option<String>)]) -> String {
    let base: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(50)
        .collect();
    let base = if base.is_empty() {
        "admission".to_string()
    } else {
        base
    };
    let taken = |n: &str| volumes.iter().any(|(v, _)| v == n);
    // One more candidate than there are volumes: one of them is free.
    std::iter::once(base.clone())
        .chain((2..=volumes.len() + 2).map(|i| format!("{base}-{i}")))
        .find(|n| !taken(n))
        .unwrap_or(base)
}
