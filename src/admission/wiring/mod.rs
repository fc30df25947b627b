//! Wiring the ImagePolicyWebhook admission plugin into kube-apiserver.yaml.
//!
//! The edits are the ones the CKS runbooks make by hand: merge the plugin into
//! `--enable-admission-plugins` (or into the legacy `--admission-control`
//! when that is the flag in use), add `--admission-control-config-file`, and
//! mount the admission directory read-only with a hostPath volume. They are
//! made with the byte-preserving engine of [`crate::manifest::edit`] (text
//! insertions and replacements that copy the layout of neighbouring items,
//! verified against an independent parse), as image pins are; this module
//! holds only the wiring policy. Like pinning, it reads the first document
//! of the file, as kubelet does.
//!
//! What is refused, rather than guessed at: layouts that cannot be edited
//! that way (flow-style lists, flags split into two items); a container that
//! does not run kube-apiserver directly ([`target`]); a mount directory that
//! is not dedicated to the admission files; an existing mount at that path
//! from another source or with a `subPath`; and any result that kube-apiserver
//! or kubelet would refuse at start-up ([`validate`]).

mod flags;
mod mount;
mod target;
mod validate;

use std::path::{Path, PathBuf};

use crate::admission::preflight::normalize;
use crate::manifest::edit::{plain_safe, verify, Editor, Seg};
use crate::manifest::parse::{first_document, Node};
use crate::manifest::scan::{scan, Entry};

use flags::{flag_value, wire_flags};
use mount::wire_mount;

pub use target::{find as find_target, ContainerView, Target};

/// Plugins enabled on top of kube-apiserver's defaults; the plugin is
/// merged in here.
pub const ENABLE_PLUGINS: &str = "--enable-admission-plugins";
/// Plugins turned off; read only to refuse an overlap with the enabled ones.
pub const DISABLE_PLUGINS: &str = "--disable-admission-plugins";
/// Deprecated, still honoured: exactly these plugins, nothing by default.
pub const ADMISSION_CONTROL: &str = "--admission-control";
/// The admission config kube-apiserver reads at start-up.
pub const CONFIG_FILE: &str = "--admission-control-config-file";

/// Directories that are never mounted as the admission directory: mounting
/// them would show kube-apiserver far more than its admission files (or
/// hide what the image ships there).
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/lib",
    "/var/lib/kubelet",
    "/var/log",
    "/var/run",
    "/var/tmp",
    "/etc/kubernetes",
    "/etc/kubernetes/manifests",
];

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
    /// Wire in `ImagePolicyWebhook` with this config file, mounting the
    /// file's directory; never take over another config file.
    pub fn new(config_file: PathBuf) -> Request {
        let mount_dir = config_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Request {
            config_file,
            plugins: vec!["ImagePolicyWebhook".into()],
            mount_dir,
            force: false,
        }
    }
}

/// The outcome of planning: the new text (equal to the old when nothing is
/// needed), what changed, and what the container will be able to see.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The whole manifest after wiring.
    pub new_text: String,
    /// One line per edit, for the report (e.g. `added ...`); empty when the
    /// manifest is already wired.
    pub changes: Vec<String>,
    /// Host directories mounted whole (no `subPath`) at the same path inside
    /// the container, including the one this plan adds: what preflight may
    /// count as visible.
    pub mounted: Vec<PathBuf>,
}

/// Whether the manifest is kube-apiserver's: some container runs it,
/// directly or wrapped (see [`target`]).
pub fn is_apiserver(text: &str) -> bool {
    single_root(text).is_some_and(|root| target_of(&root).is_some())
}

/// The first kube-apiserver manifest among `paths` (files or manifest
/// directories, read by kubelet's rules), with its text.
pub fn find_manifest(paths: &[PathBuf]) -> Option<(PathBuf, String)> {
    paths
        .iter()
        .filter_map(|p| scan(p).ok())
        .flatten()
        .find_map(|e| match e {
            Entry::File(p) => std::fs::read_to_string(&p)
                .ok()
                .filter(|t| is_apiserver(t))
                .map(|t| (p, t)),
            Entry::Skipped(..) => None,
        })
}

/// Index in `spec.containers` of the kube-apiserver container: the one
/// wiring edits and whose liveness probe the health gate polls. `None` when
/// there is none, or several run it directly.
pub fn container_index(text: &str) -> Option<usize> {
    single_root(text)
        .and_then(|root| target_of(&root))
        .and_then(|t| t.index())
}

/// The document kubelet reads, as [`crate::manifest::parse::inspect`]
/// accepts it: documents after the first are ignored, here as there.
fn single_root(text: &str) -> Option<Node> {
    first_document(text).ok()
}

fn target_of(root: &Node) -> Option<Target> {
    let containers = root.get("spec")?.get("containers")?.items();
    fn strs(n: &Node) -> Vec<Option<&str>> {
        n.items().iter().map(Node::as_str).collect()
    }
    let views: Vec<ContainerView> = containers
        .iter()
        .map(|c| ContainerView {
            name: c.get("name").and_then(Node::as_str),
            command: c.get("command").map(strs),
            args: c.get("args").map(strs).unwrap_or_default(),
            image: c.get("image").and_then(Node::as_str),
        })
        .collect();
    let labelled = root
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get("component"))
        .and_then(Node::as_str)
        == Some("kube-apiserver");
    find_target(&views, labelled)
}

/// The container flags can be wired into, or why there is none.
fn wireable(root: &Node) -> Result<usize, String> {
    match target_of(root) {
        Some(Target::Direct { index }) => Ok(index),
        Some(Target::Wrapped { why, .. }) => Err(why),
        Some(Target::Ambiguous { indices }) => Err(format!(
            "containers {indices:?} all run kube-apiserver; refusing to guess which one to wire"
        )),
        None => Err(
            "no kube-apiserver container (command[0] kube-apiserver, or a kube-apiserver image without command)"
                .into(),
        ),
    }
}

/// Whether `dir` may be the admission directory: not `/` or a system
/// directory, whose mount would show kube-apiserver far more than the
/// admission files (or hide what its image ships there).
pub fn dedicated_dir(dir: &Path) -> Result<(), String> {
    let dir = normalize(dir);
    if SYSTEM_DIRS.iter().any(|s| Path::new(s) == dir) {
        Err(format!(
            "{} is not a dedicated directory: mounting / or a system directory into kube-apiserver would show it far more than the admission files; put them in a directory of their own, e.g. /etc/kubernetes/admission",
            dir.display()
        ))
    } else {
        Ok(())
    }
}

/// The mount directory must hold only what kube-apiserver needs to read,
/// also when it is only implied by where the config file sits.
fn dedicated(req: &Request) -> Result<(), String> {
    dedicated_dir(&req.mount_dir).map_err(|why| {
        if req.config_file.parent().map(normalize) == Some(normalize(&req.mount_dir)) {
            format!(
                "{why} (it is where {} sits, and the admission directory defaults to the config file's)",
                req.config_file.display()
            )
        } else {
            why
        }
    })
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
    dedicated(req)?;
    let root = &first_document(text).map_err(|s| s.reason)?;
    let ci = wireable(root)?;
    let Some(container) = root
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(|c| c.items().get(ci))
    else {
        return Err("the kube-apiserver container vanished from the parse".into());
    };
    let mut cx = Editor::new(text);
    let cpath = vec![Seg::Key("spec"), Seg::Key("containers"), Seg::Index(ci)];

    wire_flags(&mut cx, root, container, &cpath, req)?;
    let mounted = wire_mount(&mut cx, root, container, &cpath, req)?;

    let new_text = cx.apply();
    if new_text != text {
        verify(text, &new_text, &cx.changes).map_err(|e| {
            format!("refusing to write kube-apiserver's manifest: {e}; this is a staticpin bug")
        })?;
    }
    check_result(&new_text, ci)?;
    Ok(Plan {
        new_text,
        changes: cx.summary,
        mounted,
    })
}

/// Runs the start-up checks on the text that would be written.
fn check_result(text: &str, ci: usize) -> Result<(), String> {
    let root = single_root(text).ok_or("the wired manifest no longer parses")?;
    let problems = validate::problems(&root, ci);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "kube-apiserver or kubelet would reject the result: {}",
            problems.join("; ")
        ))
    }
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
    fn later_documents_are_ignored_as_pinning_ignores_them() {
        for tail in ["---\n", "---\nkind: ConfigMap\n"] {
            let text = format!("{KUBEADM}{tail}");
            let p = plan(&text, &req()).unwrap();
            assert!(p.new_text.ends_with(tail));
            assert_eq!(
                p.new_text.strip_suffix(tail),
                Some(plan(KUBEADM, &req()).unwrap().new_text.as_str())
            );
        }
        assert!(is_apiserver(&format!("{KUBEADM}---\n")));
    }

    #[test]
    fn refusals() {
        let elsewhere = KUBEADM.replace(
            "    - --allow-privileged=true\n",
            "    - --admission-control-config-file=/etc/other/admission.yaml\n    - --allow-privileged=true\n",
        );
        let e = plan(&elsewhere, &req()).unwrap_err();
        assert!(
            e.contains("/etc/other/admission.yaml") && e.contains("only when forced"),
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
