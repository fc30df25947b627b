//! Wiring the ImagePolicyWebhook admission plugin into kube-apiserver.yaml.
//!
//! The edits are the ones the CKS runbooks make by hand: merge the plugin into
//! `--enable-admission-plugins`, add `--admission-control-config-file`, and
//! mount the admission directory read-only with a hostPath volume. They are
//! made as text insertions and replacements that copy the indentation and
//! style of neighbouring items, so the rest of the file keeps every byte, and
//! are then verified against an independent parse, as image pins are.
//! Layouts that cannot be edited that way (flow-style lists, flags split into
//! two items) are refused with a reason rather than guessed at.

use std::path::{Path, PathBuf};

use serde_norway::Value;

use crate::manifest::parse::{byte_offsets, locate_scalar, parse_documents, Node, Quoting};
use crate::manifest::splice::encode;

pub const ENABLE_PLUGINS: &str = "--enable-admission-plugins";
pub const CONFIG_FILE: &str = "--admission-control-config-file";

/// What to wire in.
#[derive(Clone, Debug)]
pub struct Request {
    /// `--admission-control-config-file`, as the apiserver will see it.
    pub config_file: PathBuf,
    /// Plugins that must be enabled, e.g. `["ImagePolicyWebhook"]`.
    pub plugins: Vec<String>,
    /// Directory to mount read-only (default: the config file's directory).
    pub mount_dir: PathBuf,
    /// Take over a `--admission-control-config-file` that points elsewhere.
    pub force: bool,
}

impl Request {
    pub fn new(config_file: PathBuf) -> Request {
        let mount_dir = config_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Request {
            config_file,
            plugins: vec![crate::admission::preflight::PLUGIN_NAME.into()],
            mount_dir,
            force: false,
        }
    }
}

/// The outcome of planning: the new text (equal to the old when nothing is
/// needed), what changed, and what the container will be able to see.
#[derive(Clone, Debug)]
pub struct Plan {
    pub new_text: String,
    pub changes: Vec<String>,
    /// Host directories mounted at the same path inside the container,
    /// including the one this plan adds.
    pub mounted: Vec<PathBuf>,
}

/// Whether the manifest runs kube-apiserver (by command, args or label).
pub fn is_apiserver(text: &str) -> bool {
    match parse_documents(text) {
        Ok(docs) if docs.len() == 1 => apiserver_container(&docs[0]).is_some(),
        _ => false,
    }
}

fn runs_apiserver(c: &Node) -> bool {
    ["command", "args"].iter().any(|f| {
        c.get(f)
            .and_then(|l| l.items().first())
            .and_then(Node::as_str)
            .is_some_and(|s| s == "kube-apiserver" || s.ends_with("/kube-apiserver"))
    })
}

fn apiserver_container(root: &Node) -> Option<usize> {
    let containers = root.get("spec")?.get("containers")?.items();
    if let Some(i) = containers.iter().position(runs_apiserver) {
        return Some(i);
    }
    let labelled = root
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get("component"))
        .and_then(Node::as_str)
        == Some("kube-apiserver");
    if !labelled {
        return None;
    }
    containers
        .iter()
        .position(|c| c.get("name").and_then(Node::as_str) == Some("kube-apiserver"))
        .or(if containers.is_empty() { None } else { Some(0) })
}

/// One text change: replace `range` (empty for an insertion) with `text`.
/// `order` breaks ties between insertions at the same position.
struct TextEdit {
    start: usize,
    end: usize,
    order: usize,
    text: String,
}

/// The same change, structurally, for verification.
enum Change {
    Set {
        path: Vec<Seg>,
        value: String,
    },
    Insert {
        path: Vec<Seg>,
        index: usize,
        order: usize,
        value: Value,
    },
}

#[derive(Clone)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

struct Ctx<'a> {
    text: &'a str,
    eol: &'static str,
    edits: Vec<TextEdit>,
    changes: Vec<Change>,
    summary: Vec<String>,
    order: usize,
}

impl<'a> Ctx<'a> {
    fn byte(&self, char_index: usize) -> usize {
        byte_offsets(self.text, [char_index])[0]
    }

    fn next_order(&mut self) -> usize {
        self.order += 1;
        self.order
    }
}

/// Plans the wiring. An error means the manifest must not be touched.
pub fn plan(text: &str, req: &Request) -> Result<Plan, String> {
    for p in [&req.config_file, &req.mount_dir] {
        if !p.is_absolute() {
            return Err(format!("{} must be an absolute path", p.display()));
        }
        plain_safe(&p.display().to_string())?;
    }
    for p in &req.plugins {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("admission plugin name {p:?} is not a plugin name"));
        }
    }
    let docs = parse_documents(text).map_err(|s| s.reason)?;
    let [root] = docs.as_slice() else {
        return Err("not a single YAML document".into());
    };
    let ci = apiserver_container(root)
        .ok_or("no kube-apiserver container (by command, args or component label)")?;
    let container = &root
        .get("spec")
        .and_then(|s| s.get("containers"))
        .expect("found above")
        .items()[ci];
    let mut cx = Ctx {
        text,
        eol: if text.contains("\r\n") { "\r\n" } else { "\n" },
        edits: Vec::new(),
        changes: Vec::new(),
        summary: Vec::new(),
        order: 0,
    };
    let cpath = vec![Seg::Key("spec"), Seg::Key("containers"), Seg::Index(ci)];

    wire_flags(&mut cx, root, container, &cpath, req)?;
    let mounted = wire_mount(&mut cx, root, container, &cpath, req)?;

    let new_text = apply(text, &mut cx.edits);
    if new_text != text {
        verify(text, &new_text, &cx.changes)?;
    }
    Ok(Plan {
        new_text,
        changes: cx.summary,
        mounted,
    })
}

fn flag_value<'n>(item: &'n Node, flag: &str) -> Option<&'n str> {
    item.as_str()?.strip_prefix(flag)?.strip_prefix('=')
}

fn wire_flags(
    cx: &mut Ctx,
    root: &Node,
    container: &Node,
    cpath: &[Seg],
    req: &Request,
) -> Result<(), String> {
    let lists: Vec<(&'static str, &Node)> = ["command", "args"]
        .into_iter()
        .filter_map(|f| container.get(f).map(|l| (f, l)))
        .collect();
    let find = |flag: &str| -> Result<Option<(&'static str, usize)>, String> {
        let mut found = Vec::new();
        for (field, list) in &lists {
            for (i, item) in list.items().iter().enumerate() {
                if item.as_str() == Some(flag) {
                    return Err(format!(
                        "{field}[{i}]: {flag} is given as a separate item from its value; staticpin only edits the {flag}=VALUE form"
                    ));
                }
                if flag_value(item, flag).is_some() {
                    found.push((*field, i));
                }
            }
        }
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(format!(
                "{flag} appears {} times; refusing to guess which one counts",
                found.len()
            )),
        }
    };
    let list_of = |field: &str| {
        lists
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, l)| *l)
            .expect("listed")
    };
    // New flags go where the existing flags live.
    let flag_field = lists
        .iter()
        .find(|(_, l)| {
            l.items()
                .iter()
                .any(|i| i.as_str().is_some_and(|s| s.starts_with("--")))
        })
        .or(lists.first())
        .map(|(f, _)| *f)
        .ok_or("the kube-apiserver container has neither command nor args")?;

    // --enable-admission-plugins: merge, keep order, never duplicate.
    match find(ENABLE_PLUGINS)? {
        Some((field, i)) => {
            let item = &list_of(field).items()[i];
            let current = flag_value(item, ENABLE_PLUGINS).expect("matched");
            let mut plugins: Vec<String> = current
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
            if !missing.is_empty() {
                plugins.extend(missing);
                let value = format!("{ENABLE_PLUGINS}={}", plugins.join(","));
                set_scalar(cx, item, field_path(cpath, field, i), &value)?;
                cx.summary.push(format!(
                    "{ENABLE_PLUGINS}: {current} -> {}",
                    plugins.join(",")
                ));
            }
        }
        None => {
            // kubeadm always sets NodeRestriction; a kubeadm manifest without
            // the flag still expects it, so it is kept rather than dropped.
            let mut plugins = Vec::new();
            if is_kubeadm(root) && !req.plugins.iter().any(|p| p == "NodeRestriction") {
                plugins.push("NodeRestriction".to_string());
            }
            plugins.extend(req.plugins.iter().cloned());
            let value = format!("{ENABLE_PLUGINS}={}", plugins.join(","));
            insert_flag(cx, list_of(flag_field), cpath, flag_field, &value)?;
            cx.summary.push(format!("added {value}"));
        }
    }

    let wanted = req.config_file.display().to_string();
    match find(CONFIG_FILE)? {
        Some((field, i)) => {
            let item = &list_of(field).items()[i];
            let current = flag_value(item, CONFIG_FILE).expect("matched");
            if current != wanted {
                if !req.force {
                    return Err(format!(
                        "{CONFIG_FILE} already points to {current}, not {wanted}; staticpin will not take over another admission setup without --force"
                    ));
                }
                set_scalar(
                    cx,
                    item,
                    field_path(cpath, field, i),
                    &format!("{CONFIG_FILE}={wanted}"),
                )?;
                cx.summary
                    .push(format!("{CONFIG_FILE}: {current} -> {wanted} (--force)"));
            }
        }
        None => {
            let value = format!("{CONFIG_FILE}={wanted}");
            insert_flag(cx, list_of(flag_field), cpath, flag_field, &value)?;
            cx.summary.push(format!("added {value}"));
        }
    }
    Ok(())
}

fn field_path(cpath: &[Seg], field: &'static str, i: usize) -> Vec<Seg> {
    let mut p = cpath.to_vec();
    p.push(Seg::Key(field));
    p.push(Seg::Index(i));
    p
}

fn is_kubeadm(root: &Node) -> bool {
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

fn set_scalar(cx: &mut Ctx, item: &Node, path: Vec<Seg>, value: &str) -> Result<(), String> {
    let Node::Scalar {
        value: old,
        style,
        span,
    } = item
    else {
        return Err("flag item is not a string".into());
    };
    let start = cx.byte(span.start.index());
    let end = cx.byte(span.end.index());
    let (quoting, inner) = locate_scalar(cx.text, start, end, old, *style)?;
    if quoting == Quoting::Plain {
        plain_safe(value)?;
    }
    let order = cx.next_order();
    cx.edits.push(TextEdit {
        start: inner.start,
        end: inner.end,
        order,
        text: encode(value, quoting),
    });
    cx.changes.push(Change::Set {
        path,
        value: value.to_string(),
    });
    Ok(())
}

/// Values staticpin writes as plain scalars must read back as the same string.
fn plain_safe(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:".contains(&b))
        && !v.contains(": ")
        && !v.ends_with(':');
    if ok {
        Ok(())
    } else {
        Err(format!("{v:?} needs quoting; refusing to write it"))
    }
}

/// A block sequence item's layout: where its line starts, the text before
/// its content (`    - `), and the content's column.
struct ItemLayout {
    line_start: usize,
    dash_prefix: String,
    content_col: usize,
}

fn layout(cx: &Ctx, item: &Node) -> Result<ItemLayout, String> {
    let b = cx.byte(item.first_char().ok_or("empty list item")?);
    let line_start = cx.text[..b].rfind('\n').map_or(0, |i| i + 1);
    let prefix = &cx.text[line_start..b];
    let trimmed = prefix.trim_start_matches(' ');
    if !(trimmed.starts_with('-') && trimmed[1..].chars().all(|c| c == ' ') && trimmed.len() > 1) {
        return Err(format!(
            "list item on line {} is not laid out as \"- value\"; refusing to edit it",
            cx.text[..b].matches('\n').count() + 1
        ));
    }
    Ok(ItemLayout {
        line_start,
        dash_prefix: prefix.to_string(),
        content_col: prefix.len(),
    })
}

/// Where to insert a new item so it lands at `index`: before that item's
/// line, or after the last item's line.
fn insertion_point(cx: &Ctx, items: &[Node], index: usize) -> Result<(usize, bool), String> {
    if let Some(next) = items.get(index) {
        return Ok((layout(cx, next)?.line_start, false));
    }
    let last = items.last().ok_or("cannot extend an empty list")?;
    let end = cx.byte(last.last_char().ok_or("empty list item")?);
    match cx.text[end..].find('\n') {
        Some(i) => Ok((end + i + 1, false)),
        None => Ok((cx.text.len(), true)),
    }
}

/// Index at which `key` keeps `keys` sorted, or the end when they are not sorted.
fn sorted_index(keys: &[String], key: &str) -> usize {
    if keys.windows(2).all(|w| w[0] <= w[1]) {
        keys.iter()
            .position(|k| k.as_str() > key)
            .unwrap_or(keys.len())
    } else {
        keys.len()
    }
}

fn block_items<'n>(list: &'n Node, what: &str) -> Result<&'n [Node], String> {
    match list {
        Node::Seq { flow: false, items } if !items.is_empty() => Ok(items),
        Node::Seq { flow: true, .. } => Err(format!(
            "{what} is a flow-style [..] list; staticpin only extends block lists"
        )),
        _ => Err(format!(
            "{what} is empty or not a list; staticpin only extends existing block lists"
        )),
    }
}

fn insert_flag(
    cx: &mut Ctx,
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

fn clean(p: &str) -> PathBuf {
    PathBuf::from(
        p.trim_end_matches('/').to_string()
            + if p.trim_end_matches('/').is_empty() {
                "/"
            } else {
                ""
            },
    )
}

fn wire_mount(
    cx: &mut Ctx,
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
    let mut mounted = Vec::new();
    for m in mounts_node.map(|m| m.items()).unwrap_or(&[]) {
        let (Some(path), Some(name)) = (
            m.get("mountPath").and_then(Node::as_str),
            m.get("name").and_then(Node::as_str),
        ) else {
            continue;
        };
        // Only a hostPath mounted at its own path makes host files visible
        // under the same path, which is what the flags refer to.
        if volumes
            .iter()
            .any(|(n, host)| n == name && host.as_deref().map(clean) == Some(clean(path)))
        {
            mounted.push(clean(path));
        }
    }
    let dir = clean(&req.mount_dir.display().to_string());
    if mounted.iter().any(|m| dir.starts_with(m)) {
        return Ok(mounted);
    }

    let mounts_list =
        mounts_node.ok_or("the kube-apiserver container has no volumeMounts list to extend")?;
    let volumes_list = volumes_node.ok_or("the Pod has no volumes list to extend")?;
    let mount_items = block_items(mounts_list, "volumeMounts")?;
    let volume_items = block_items(volumes_list, "spec.volumes")?;
    let name = unique_volume_name(&dir, &volumes);
    let dir_s = dir.display().to_string();

    // volumeMount: copy the sibling's dash prefix and key column.
    let mount_names: Vec<String> = mount_items
        .iter()
        .map(|m| {
            m.get("name")
                .and_then(Node::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let index = sorted_index(&mount_names, &name);
    let like = layout(cx, &mount_items[index.min(mount_items.len() - 1)])?;
    let pad = " ".repeat(like.content_col);
    let eol = cx.eol;
    let body = format!(
        "{}mountPath: {dir_s}{eol}{pad}name: {name}{eol}{pad}readOnly: true",
        like.dash_prefix
    );
    let mut mpath = cpath.to_vec();
    mpath.push(Seg::Key("volumeMounts"));
    let value = serde_norway::from_str(&format!(
        "mountPath: {dir_s}\nname: {name}\nreadOnly: true\n"
    ))
    .expect("static YAML");
    insert_item(cx, mount_items, index, body, mpath, value)?;

    // volume: hostPath's nested keys indent like the sibling's, else by 2.
    let vol_names: Vec<String> = volumes.iter().map(|(n, _)| n.clone()).collect();
    let index = sorted_index(&vol_names, &name);
    let like = layout(cx, &volume_items[index.min(volume_items.len() - 1)])?;
    let pad = " ".repeat(like.content_col);
    let nested = " ".repeat(like.content_col + nested_indent(cx, volume_items));
    let body = format!(
        "{}hostPath:{eol}{nested}path: {dir_s}{eol}{nested}type: DirectoryOrCreate{eol}{pad}name: {name}",
        like.dash_prefix
    );
    let value = serde_norway::from_str(&format!(
        "hostPath:\n  path: {dir_s}\n  type: DirectoryOrCreate\nname: {name}\n"
    ))
    .expect("static YAML");
    insert_item(
        cx,
        volume_items,
        index,
        body,
        vec![Seg::Key("spec"), Seg::Key("volumes")],
        value,
    )?;

    cx.summary.push(format!(
        "mounted {dir_s} read-only as hostPath volume {name:?}"
    ));
    mounted.push(dir);
    Ok(mounted)
}

fn insert_item(
    cx: &mut Ctx,
    items: &[Node],
    index: usize,
    body: String,
    path: Vec<Seg>,
    value: Value,
) -> Result<(), String> {
    let (pos, needs_eol) = insertion_point(cx, items, index)?;
    let text = if needs_eol {
        format!("{}{body}", cx.eol)
    } else {
        format!("{body}{}", cx.eol)
    };
    let order = cx.next_order();
    cx.edits.push(TextEdit {
        start: pos,
        end: pos,
        order,
        text,
    });
    cx.changes.push(Change::Insert {
        path,
        index,
        order,
        value,
    });
    Ok(())
}

fn nested_indent(cx: &Ctx, volumes: &[Node]) -> usize {
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
fn unique_volume_name(dir: &Path, volumes: &[(String, Option<String>)]) -> String {
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
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken(n))
        .expect("some suffix is free")
}

fn apply(text: &str, edits: &mut [TextEdit]) -> String {
    edits.sort_by_key(|e| (e.start, e.order));
    let mut out = String::with_capacity(text.len() + 512);
    let mut pos = 0;
    for e in edits.iter() {
        out.push_str(&text[pos..e.start]);
        out.push_str(&e.text);
        pos = e.end.max(pos);
    }
    out.push_str(&text[pos..]);
    out
}

/// The new text must parse to the old document with exactly these changes.
fn verify(old: &str, new: &str, changes: &[Change]) -> Result<(), String> {
    let mut expected: Value =
        serde_norway::from_str(old).map_err(|e| format!("original does not parse: {e}"))?;
    let got: Value = serde_norway::from_str(new)
        .map_err(|e| format!("rewritten manifest does not parse: {e}"))?;
    let mut inserts: Vec<&Change> = changes
        .iter()
        .filter(|c| matches!(c, Change::Insert { .. }))
        .collect();
    // Later positions first, so earlier indices stay valid.
    inserts.sort_by_key(|c| match c {
        Change::Insert { index, order, .. } => std::cmp::Reverse((*index, *order)),
        Change::Set { .. } => unreachable!(),
    });
    for c in changes
        .iter()
        .filter(|c| matches!(c, Change::Set { .. }))
        .chain(inserts)
    {
        match c {
            Change::Set { path, value } => {
                *walk(&mut expected, path)? = Value::String(value.clone());
            }
            Change::Insert {
                path, index, value, ..
            } => {
                walk(&mut expected, path)?
                    .as_sequence_mut()
                    .ok_or("insertion target is not a list")?
                    .insert(*index, value.clone());
            }
        }
    }
    if expected != got {
        return Err("refusing to write: the rewritten kube-apiserver manifest differs from the intended change; this is a staticpin bug".into());
    }
    Ok(())
}

fn walk<'v>(v: &'v mut Value, path: &[Seg]) -> Result<&'v mut Value, String> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Seg::Key(k) => cur.get_mut(*k),
            Seg::Index(i) => cur.get_mut(*i),
        }
        .ok_or("path missing in the independent parse")?;
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEADM: &str = "apiVersion: v1
kind: Pod
metadata:
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=192.0.2.10
    - --allow-privileged=true
    - --enable-admission-plugins=NodeRestriction
    - --tls-private-key-file=/etc/kubernetes/pki/apiserver.key
    image: registry.k8s.io/kube-apiserver:v1.31.0
    name: kube-apiserver
    volumeMounts:
    - mountPath: /etc/ssl/certs
      name: ca-certs
      readOnly: true
    - mountPath: /etc/kubernetes/pki
      name: k8s-certs
      readOnly: true
  hostNetwork: true
  volumes:
  - hostPath:
      path: /etc/ssl/certs
      type: DirectoryOrCreate
    name: ca-certs
  - hostPath:
      path: /etc/kubernetes/pki
      type: DirectoryOrCreate
    name: k8s-certs
status: {}
";

    fn req() -> Request {
        Request::new(PathBuf::from(
            "/etc/kubernetes/admission/admission_config.yaml",
        ))
    }

    #[test]
    fn kubeadm_default_gets_flags_mount_and_volume_in_sorted_places() {
        let plan = plan(KUBEADM, &req()).unwrap();
        let want = KUBEADM
            .replace(
                "    - --advertise-address=192.0.2.10\n",
                "    - --admission-control-config-file=/etc/kubernetes/admission/admission_config.yaml\n    - --advertise-address=192.0.2.10\n",
            )
            .replace("NodeRestriction\n", "NodeRestriction,ImagePolicyWebhook\n")
            .replace(
                "    - mountPath: /etc/ssl/certs\n",
                "    - mountPath: /etc/kubernetes/admission\n      name: admission\n      readOnly: true\n    - mountPath: /etc/ssl/certs\n",
            )
            .replace(
                "  - hostPath:\n      path: /etc/ssl/certs\n",
                "  - hostPath:\n      path: /etc/kubernetes/admission\n      type: DirectoryOrCreate\n    name: admission\n  - hostPath:\n      path: /etc/ssl/certs\n",
            );
        assert_eq!(plan.new_text, want);
        assert_eq!(plan.changes.len(), 3, "{:?}", plan.changes);
        // Idempotent.
        let again = super::plan(&plan.new_text, &req()).unwrap();
        assert_eq!(again.new_text, plan.new_text);
        assert!(again.changes.is_empty());
    }

    #[test]
    fn existing_mount_covers_and_names_do_not_collide() {
        let mut r = req();
        r.config_file = PathBuf::from("/etc/kubernetes/pki/admission/config.yaml");
        r.mount_dir = PathBuf::from("/etc/kubernetes/pki/admission");
        let p = plan(KUBEADM, &r).unwrap();
        assert!(!p
            .new_text
            .contains("hostPath:\n      path: /etc/kubernetes/pki/admission"));
        assert_eq!(p.changes.len(), 2);
        let taken = KUBEADM.replace("name: ca-certs", "name: admission");
        let p = plan(&taken, &req()).unwrap();
        assert!(p.new_text.contains("name: admission-2\n"), "{}", p.new_text);
    }

    #[test]
    fn refusals() {
        let elsewhere = KUBEADM.replace(
            "    - --allow-privileged=true\n",
            "    - --admission-control-config-file=/etc/other/admission.yaml\n    - --allow-privileged=true\n",
        );
        let e = plan(&elsewhere, &req()).unwrap_err();
        assert!(
            e.contains("/etc/other/admission.yaml") && e.contains("--force"),
            "{e}"
        );
        let mut forced = req();
        forced.force = true;
        assert!(plan(&elsewhere, &forced)
            .unwrap()
            .new_text
            .contains("=/etc/kubernetes/admission/admission_config.yaml\n"));
        let twice = KUBEADM.replace(
            "    - --allow-privileged=true\n",
            "    - --enable-admission-plugins=X\n    - --allow-privileged=true\n",
        );
        assert!(plan(&twice, &req())
            .unwrap_err()
            .contains("appears 2 times"));
        let flow = "kind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - command: [kube-apiserver, --a=1]\n    volumeMounts: []\n  volumes: []\n";
        assert!(plan(flow, &req()).unwrap_err().contains("flow-style"));
        assert!(plan(
            "kind: Pod\nspec:\n  containers:\n  - command: [etcd]\n",
            &req()
        )
        .unwrap_err()
        .contains("no kube-apiserver"));
    }
}
