//! Running the `staticpin` binary in isolation, with its output captured.
//!
//! Every run gets a cleared environment (only a private `HOME`), a private
//! cwd, and an explicit `--config` whose file names the sandbox's own
//! kubelet root, certs directory, backup directory, manifest directory and
//! lock file.
//! So nothing of the machine running the tests is read: not
//! `/etc/staticpin`, not a docker config, not a CA, not `NO_COLOR`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{docker_config, docker_config_raw, run_output, Pki};

pub struct Sandbox {
    dir: tempfile::TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Out {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    pub fn json(&self) -> Vec<Value> {
        match serde_json::from_str::<Value>(&self.stdout) {
            Ok(Value::Array(items)) => items,
            other => panic!("stdout is not a JSON array ({other:?})\n{self}"),
        }
    }

    /// The `staticpin: IMAGE (registry HOST): KIND: …` line for `image`.
    pub fn failure(&self, image: &str) -> &str {
        self.stderr
            .lines()
            .find(|l| l.starts_with(&format!("staticpin: {image} (registry ")))
            .unwrap_or_else(|| panic!("no failure line for {image}\n{self}"))
    }

    pub fn assert_no_leak(&self, secrets: &[&str]) {
        for s in secrets {
            assert!(
                !self.stdout.contains(s) && !self.stderr.contains(s),
                "secret {s:?} appears in the output\n{self}"
            );
        }
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("staticpin-test-")
            .tempdir()
            .unwrap();
        for d in ["home", "cwd", "kubelet", "certs", "backups", "manifests"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let sb = Sandbox { dir };
        sb.write_config("");
        sb
    }

    /// The file every run passes as `--config`.
    pub fn config_file(&self) -> PathBuf {
        self.path("config.yaml")
    }

    /// Replaces the config file with the sandbox's paths plus `extra` (more
    /// top-level keys; they must not repeat the six path keys).
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "manifestDir: {}\nbackupDir: {}\nlockFile: {}\nstateDir: {}\nkubeletRootDir: {}\ncertsDirs: [{}]\n{extra}",
            self.path("manifests").display(),
            self.path("backups").display(),
            self.path("lock").display(),
            self.path("state").display(),
            self.path("kubelet").display(),
            self.certs().display(),
        );
        std::fs::write(self.config_file(), text).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn certs(&self) -> PathBuf {
        self.path("certs")
    }

    /// Trust `pki`'s CA for `host` (`<certs>/<host>/ca.crt`).
    pub fn trust(&self, host: &str, pki: &Pki) {
        let d = self.certs().join(host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&pki.ca_crt, d.join("ca.crt")).unwrap();
    }

    /// Writes a docker config with these `(key, user, pass)` entries; returns its path.
    pub fn config(&self, name: &str, entries: &[(&str, &str, &str)]) -> String {
        let p = self.path(name);
        docker_config(&p, entries);
        p.to_str().unwrap().to_string()
    }

    pub fn config_raw(&self, name: &str, value: &Value) -> String {
        let p = self.path(name);
        docker_config_raw(&p, value);
        p.to_str().unwrap().to_string()
    }

    /// The binary with a cleared environment, the private HOME and cwd, and
    /// no arguments yet.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_staticpin"));
        cmd.current_dir(self.path("cwd"))
            .env_clear()
            .env("HOME", self.path("home"));
        cmd
    }

    pub fn exec(&self, mut cmd: Command) -> Out {
        let start = Instant::now();
        let out = run_output(&mut cmd);
        let elapsed = start.elapsed();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed,
        }
    }

    /// `staticpin SUBCOMMAND --config <sandbox config> ARGS…`, for the
    /// subcommands that read the config (`resolve`, `pin`, `rollback`, `doctor`).
    pub fn run(&self, subcommand: &str, args: &[&str]) -> Out {
        self.run_env(&[], subcommand, args)
    }

    /// [`run`](Self::run) with extra environment variables.
    pub fn run_env(&self, env: &[(&str, &str)], subcommand: &str, args: &[&str]) -> Out {
        let mut cmd = self.command();
        cmd.envs(env.iter().copied())
            .arg(subcommand)
            .arg("--config")
            .arg(self.config_file())
            .args(args);
        self.exec(cmd)
    }

    /// `staticpin resolve --config <sandbox config> ARGS…`
    pub fn resolve(&self, args: &[&str]) -> Out {
        self.run("resolve", args)
    }

    /// `resolve` with extra environment variables.
    pub fn resolve_env(&self, env: &[(&str, &str)], args: &[&str]) -> Out {
        self.run_env(env, "resolve", args)
    }

    /// `staticpin ARGS…` as given, still with the cleared environment: for
    /// `--help`, `--version` and `check-config FILE`, which take no `--config`.
    pub fn raw(&self, args: &[&str]) -> Out {
        let mut cmd = self.command();
        cmd.args(args);
        self.exec(cmd)
    }
}
