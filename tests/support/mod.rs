//! Integration-test support for staticpin: real registries, a token issuer,
//! OCI layouts, a scripted fault server, and the small shared helpers
//! (free ports, running CLIs, a tiny HTTP/1.1 client) they all use.
//!
//! Layout of this module (copy the whole directory to `tests/support/`):
//! - `mod.rs`       — `free_port`, `run`/`run_output`, `wait_until`, re-exports.
//! - `http.rs`      — minimal HTTP/1.1 request parsing/writing + a plain-TCP client.
//! - `pki.rs`       — test CAs, server and client certificates (openssl CLI).
//! - `registry.rs`  — `docker-registry serve` in plain / TLS+Basic / token modes.
//! - `token.rs`     — distribution-spec token server (RS256 JWT with x5c).
//! - `oci.rs`       — OCI image layouts, `push` (skopeo copy), `oracle_digest`.
//! - `docker_config.rs` — docker `config.json` writers.
//! - `fault.rs`     — scripted HTTP server for timeouts, resets and odd answers.
//!
//! Needs on PATH: `docker-registry`, `skopeo`, `openssl`, `htpasswd`, `tar`
//! (Debian: docker-registry skopeo openssl apache2-utils tar); Python tools
//! (`kubernetes-validate`, PyYAML) come from the venv `.ci/deps` creates, via
//! [`venv_bin`]. Everything binds to 127.0.0.1 only. Dependencies: std,
//! sha2 0.10, serde_json 1, base64 0.22, tempfile 3.
//!
//! Tests over the shared real-manifest corpus (kept outside the project) find
//! it through [`shared_corpus`]: they run when it is there, print a visible
//! skip line when it is not, and fail without it when `CI` is set.
#![allow(dead_code, unused_imports)]

pub mod apiserver;
pub mod cli;
pub mod docker_config;
pub mod fault;
pub mod http;
pub mod node;
pub mod oci;
pub mod pki;
pub mod proxy;
pub mod registry;
pub mod systemd;
pub mod token;
pub mod webhook;

pub use docker_config::{docker_config, docker_config_raw};
pub use fault::{FaultServer, FaultStep, RecordedRequest};
pub use http::{http_request, http_request_body, HttpResponse};
pub use oci::{
    oci_image, oci_index, oracle_digest, oracle_manifest, push, push_as, sha256_digest, Layout,
    ALL_MANIFEST_TYPES, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_CONFIG, MT_OCI_INDEX,
    MT_OCI_LAYER, MT_OCI_MANIFEST,
};
pub use pki::Pki;
pub use registry::{AccessEntry, Registry, RegistryAuth, RegistryOptions};
pub use token::{TokenIssuer, TokenIssuerInfo, TokenRequest, TokenResponseStyle};

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A port that was free on 127.0.0.1 a moment ago (bind :0, read, drop).
/// Another process may grab it before you bind; `Registry` retries for that.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Runs a command to completion; panics with its stderr/stdout if it fails.
/// Returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = run_output(cmd);
    if !out.status.success() {
        panic!(
            "command failed ({}): {:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            out.status,
            cmd,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    out.stdout
}

/// Runs a command to completion and returns its output whatever the status;
/// panics only if it cannot be spawned (e.g. the tool is not installed).
pub fn run_output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {} (is it installed?)", cmd, e))
}

/// Polls `f` every 20 ms until it returns `Some`, or `None` after `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Last `n` lines of a (log) file, for panic messages.
pub fn file_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// True if `tool` can be found on PATH.
pub fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// `bin/<tool>` of the Python virtual environment with the test tools
/// (`kubernetes-validate`, `python3` with PyYAML): `$STATICPIN_VENV` if set,
/// else `<crate>/target/venv`, which `.ci/deps` creates. Panics, saying how
/// to get it, when the tool is not there: a missing oracle is not a pass.
pub fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var_os("STATICPIN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv"));
    let bin = venv.join("bin").join(tool);
    assert!(
        bin.is_file(),
        "{} is missing: run `bash .ci/deps` (it creates target/venv), or point STATICPIN_VENV at a venv that has it",
        bin.display()
    );
    bin
}

/// `<shared>/<rel>`, where `<shared>` is `$STATICPIN_SHARED` if set, else
/// `shared/` beside the clone (`<crate>/../shared`), where CI lays it.
///
/// `None` when it is absent: the project's own tests must pass on a clone
/// alone. The skip is printed past the test harness's output capture, so
/// `cargo test` shows it. With `CI` set, absence fails the test instead.
pub fn shared_corpus(rel: &str, test: &str) -> Option<PathBuf> {
    let root = std::env::var_os("STATICPIN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let dir = root.join(rel);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none_or(|v| v.is_empty()),
        "{test}: the shared corpus {} is required when CI is set",
        dir.display()
    );
    // Straight to the process's stderr: libtest captures only the print macros.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: shared corpus {} not found (set STATICPIN_SHARED to its location)",
        dir.display()
    );
    None
}
