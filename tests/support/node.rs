//! A control-plane node in a temp dir for whole-pass tests: a manifest
//! directory, a backup root, a lock file and a config naming all three, a
//! real registry, and the staticpin binary run with a cleared environment
//! and only explicit paths, so nothing of the machine leaks in.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::{oracle_digest, run_output, Layout, Registry};

pub const BIN: &str = env!("CARGO_BIN_EXE_staticpin");

pub struct Node {
    pub tmp: tempfile::TempDir,
    pub reg: Registry,
}

impl Node {
    /// Extra config lines (YAML) are appended to the generated config.
    pub fn new(extra_config: &str) -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("staticpin-node-")
            .tempdir()
            .unwrap();
        for d in ["home", "cwd", "kubelet", "certs", "manifests", "layouts"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        let p = |n: &str| tmp.path().join(n).display().to_string();
        std::fs::write(
            tmp.path().join("config.yaml"),
            format!(
                "manifestDir: {}\nbackupDir: {}\nstateDir: {}\nlockFile: {}\nkubeletRootDir: {}\ncertsDirs: [{}]\n{extra_config}",
                p("manifests"),
                p("backups"),
                p("state"),
                p("run/lock"),
                p("kubelet"),
                p("certs"),
            ),
        )
        .unwrap();
        let reg = Registry::plain(&tmp.path().join("storage"));
        Node { tmp, reg }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub fn manifests(&self) -> PathBuf {
        self.path("manifests")
    }

    pub fn backups(&self) -> PathBuf {
        self.path("backups")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.path("run/lock")
    }

    /// Pushes `repo:tag` (single-arch) and returns its digest.
    pub fn push(&self, repo: &str, tag: &str) -> String {
        let dir = self.path(&format!("layouts/{repo}-{tag}"));
        Layout::image(&dir, tag, "amd64", &format!("{repo}:{tag}"))
            .push(&self.reg, repo, tag, None);
        oracle_digest(&self.reg, repo, tag, None)
    }

    /// `staticpin SUB --config … ARGS…`, sealed off from the machine;
    /// `insecure` hosts get `--insecure-registry` (pin only).
    pub fn command(&self, sub: &str, args: &[&str], insecure: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .current_dir(self.path("cwd"))
            .stdin(Stdio::null())
            .arg(sub)
            .arg("--config")
            .arg(self.path("config.yaml"));
        if sub == "pin" {
            let mut flags: Vec<OsString> = vec!["--timeout".into(), "20".into()];
            for h in insecure.iter().copied().chain([self.reg.host.as_str()]) {
                flags.push("--insecure-registry".into());
                flags.push(h.into());
            }
            c.args(flags);
        }
        c.args(args);
        c
    }

    /// `staticpin watch` over this node, as the watch tests and benchmark
    /// start it: notifications to `notify_socket`, logs to stderr, the
    /// node's registry insecure, its own kubeadm tmp dir.
    pub fn watch_command(&self, notify_socket: &Path) -> Command {
        let kubeadm_tmp = self.path("kubeadm-tmp");
        std::fs::create_dir_all(&kubeadm_tmp).unwrap();
        let mut c = self.command("watch", &[], &[]);
        c.env("NOTIFY_SOCKET", notify_socket)
            .stdout(Stdio::null())
            .args(["--log-target", "stderr", "--insecure-registry"])
            .arg(&self.reg.host)
            .arg("--kubeadm-tmp-dir")
            .arg(kubeadm_tmp);
        c
    }

    pub fn run(&self, sub: &str, args: &[&str]) -> Out {
        Out::from(run_output(&mut self.command(sub, args, &[])))
    }

    pub fn spawn(&self, sub: &str, args: &[&str], insecure: &[&str]) -> Child {
        self.command(sub, args, insecure)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Writes a manifest the way kubeadm does: a new file renamed over the
    /// old one, so the inode changes under any open reader.
    pub fn kubeadm_write(&self, path: &Path, text: &str) {
        let tmp = path.with_file_name(format!(
            ".kubeadm-{}",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Run directories in the backup root (names only), sorted.
    pub fn runs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.backups())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A static pod running `image`, kubeadm style; `marker` varies the text.
pub fn pod(name: &str, image: &str, marker: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: kube-system\n  labels:\n    component: {name}\n    tier: control-plane\nspec:\n  hostNetwork: true\n  containers:\n  - name: {name}\n    image: {image}\n    command:\n    - {name}\n    - --v=2   # {marker}\n"
    )
}

pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}
