//! Real registries: `docker-registry serve CONFIG` (distribution 2.8) on a
//! free 127.0.0.1 port, plain HTTP or TLS, with no auth, htpasswd Basic auth
//! or token auth. The config is written as JSON (valid YAML), the access log
//! is on, stdout+stderr go to `registry.log` in a private temp dir, and the
//! child is killed and reaped on Drop. Several registries may share one
//! storage dir (an image pushed through one is visible through all).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::http::http_request;
use super::pki::Pki;
use super::token::{TokenIssuer, TokenIssuerInfo};
use super::{file_tail, free_port, run, wait_until};

#[derive(Clone, Debug, Default)]
pub enum RegistryAuth {
    #[default]
    None,
    Basic {
        user: String,
        pass: String,
    },
    Token(TokenIssuerInfo),
}

/// Everything `Registry::start` can vary. The named constructors cover the
/// usual cases; use this for e.g. TLS without auth, or mTLS.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    pub auth: RegistryAuth,
    /// (certificate, key) PEM files: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA PEM files for `http.tls.clientcas` (require client certs: mTLS).
    pub client_cas: Vec<PathBuf>,
    /// Use exactly this port (no retry on another port). Default: a free one.
    pub port: Option<u16>,
}

impl RegistryOptions {
    pub fn with_tls(mut self, pki: &Pki) -> Self {
        self.tls = Some((pki.server_crt.clone(), pki.server_key.clone()));
        self
    }
}

/// One access-log request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    pub method: String,
    pub path: String,
    pub status: u16,
}

pub struct Registry {
    pub port: u16,
    /// "127.0.0.1:PORT"
    pub host: String,
    pub tls: bool,
    pub auth: RegistryAuth,
    pub storage: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    opts: RegistryOptions,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

const START_ATTEMPTS: usize = 5;
/// Generous: on a loaded 2-core CI machine a registry that has logged
/// "listening" once took over 10 s to answer its first request. Only a
/// registry that never starts waits this long.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Registry {
    /// Plain HTTP, no auth.
    pub fn plain(storage: &Path) -> Registry {
        Registry::start(storage, RegistryOptions::default())
    }

    /// HTTPS with `pki.server_crt`, htpasswd (bcrypt) Basic auth for one user.
    pub fn tls_basic(storage: &Path, pki: &Pki, user: &str, pass: &str) -> Registry {
        Registry::start(
            storage,
            RegistryOptions {
                auth: RegistryAuth::Basic {
                    user: user.into(),
                    pass: pass.into(),
                },
                ..Default::default()
            }
            .with_tls(pki),
        )
    }

    /// Token auth against `issuer` (realm = its URL); HTTPS if `tls` is given.
    pub fn token(storage: &Path, issuer: &TokenIssuer, tls: Option<&Pki>) -> Registry {
        let mut o = RegistryOptions {
            auth: RegistryAuth::Token(issuer.info()),
            ..Default::default()
        };
        if let Some(p) = tls {
            o = o.with_tls(p);
        }
        Registry::start(storage, o)
    }

    /// General constructor. With `opts.port == None`, retries on another
    /// free port if the chosen one was taken in between ("address already in
    /// use" in the log). Panics with config + log tail on any other failure.
    pub fn start(storage: &Path, opts: RegistryOptions) -> Registry {
        let attempts = if opts.port.is_some() {
            1
        } else {
            START_ATTEMPTS
        };
        let mut last_err = String::new();
        for attempt in 1..=attempts {
            match Registry::try_start(storage, opts.clone()) {
                Ok(r) => return r,
                Err(e) => {
                    let in_use = e.contains("address already in use");
                    last_err = format!("attempt {}: {}", attempt, e);
                    if !in_use {
                        break;
                    }
                }
            }
        }
        panic!("registry did not start: {}", last_err);
    }

    /// One start attempt (on `opts.port` or a free port); the error holds
    /// the config and the log tail. For tests of start-up failures.
    pub fn try_start(storage: &Path, opts: RegistryOptions) -> Result<Registry, String> {
        fs::create_dir_all(storage).map_err(|e| format!("create {}: {}", storage.display(), e))?;
        let tmp = tempfile::Builder::new()
            .prefix("registry-")
            .tempdir()
            .expect("tempdir");
        let config_path = tmp.path().join("config.yml");
        let log_path = tmp.path().join("registry.log");
        let port = opts.port.unwrap_or_else(free_port);
        let host = format!("127.0.0.1:{}", port);

        let mut http = json!({"addr": host, "secret": "staticpin-test-secret"});
        if let Some((crt, key)) = &opts.tls {
            let mut tls = json!({"certificate": crt, "key": key});
            if !opts.client_cas.is_empty() {
                tls["clientcas"] = json!(opts.client_cas);
            }
            http["tls"] = tls;
        }
        let mut cfg = json!({
            "version": "0.1",
            "log": {"accesslog": {"disabled": false}, "level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": storage},
                "delete": {"enabled": true},
                "maintenance": {"uploadpurging": {"enabled": false}},
            },
            "http": http,
        });
        match &opts.auth {
            RegistryAuth::None => {}
            RegistryAuth::Basic { user, pass } => {
                let line = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
                let htpasswd = tmp.path().join("htpasswd");
                fs::write(&htpasswd, &line).expect("write htpasswd");
                cfg["auth"] = json!({"htpasswd": {"realm": "test", "path": htpasswd}});
            }
            RegistryAuth::Token(info) => {
                cfg["auth"] = json!({"token": {
                    "realm": info.realm,
                    "service": info.service,
                    "issuer": info.issuer,
                    "rootcertbundle": info.signer_cert,
                }});
            }
        }
        fs::write(&config_path, serde_json::to_vec_pretty(&cfg).unwrap())
            .expect("write registry config");
        let mut reg = Registry {
            port,
            host,
            tls: opts.tls.is_some(),
            auth: opts.auth.clone(),
            storage: storage.to_path_buf(),
            config_path,
            log_path,
            opts,
            child: None,
            _tmp: tmp,
        };
        reg.spawn_and_wait()?;
        Ok(reg)
    }

    /// Starts the child (log appended) and waits until it serves.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start docker-registry: {} (is it installed?)", e));
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stop();
                Err(format!(
                    "{} on {}\n--- config ---\n{}\n--- registry log tail ---\n{}",
                    e,
                    self.host,
                    fs::read_to_string(&self.config_path).unwrap_or_default(),
                    file_tail(&self.log_path, 30)
                ))
            }
        }
    }

    /// Starts it again after `stop()`, on the same port with the same
    /// config; the log (and so the request counts) continues. Panics if the
    /// port was taken meanwhile.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!("registry restart failed: {}", e);
        }
    }

    /// Waits for "listening on 127.0.0.1:PORT" in the log (so the port is
    /// ours, not someone else's) and then for an HTTP answer.
    fn wait_ready(&mut self) -> Result<(), String> {
        let needle = format!("listening on {}", self.host);
        // The log is appended across restarts: wait for one more occurrence.
        let seen = self.log_contents().matches(&needle).count();
        let ok = wait_until(READY_TIMEOUT, || {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Some(Err(format!("docker-registry exited early with {}", st)));
            }
            if self.log_contents().matches(&needle).count() <= seen {
                return None;
            }
            // Plain: GET /v2/ must answer 200/401. TLS: a Go HTTPS server
            // answers a plain-HTTP request with "400 Bad Request"; any HTTP
            // answer proves it is serving (std has no TLS).
            match http_request("GET", &self.host, "/v2/", &[]) {
                Ok(r) if self.tls || r.status == 200 || r.status == 401 => Some(Ok(())),
                _ => None,
            }
        });
        ok.unwrap_or_else(|| {
            Err(format!(
                "no answer on {} within {:?}",
                self.host, READY_TIMEOUT
            ))
        })
    }

    /// `http://HOST` or `https://HOST`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.host
        )
    }

    /// Basic credentials of a `tls_basic` registry.
    pub fn basic_creds(&self) -> Option<(&str, &str)> {
        match &self.auth {
            RegistryAuth::Basic { user, pass } => Some((user.as_str(), pass.as_str())),
            _ => None,
        }
    }

    /// Everything the registry printed so far (app log + access log).
    pub fn log_contents(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Parsed access-log lines (`... "METHOD PATH HTTP/1.1" STATUS ...`).
    pub fn access_log(&self) -> Vec<AccessEntry> {
        self.log_contents()
            .lines()
            .filter_map(parse_access_line)
            .collect()
    }

    /// Number of HEAD/GET requests to `/v2/<name>/manifests/<ref>` so far.
    /// The registry writes the access-log line before Go flushes a small
    /// response, so a request the client has seen answered is normally
    /// already counted (see `wait_manifest_requests` for large bodies).
    pub fn manifest_requests(&self) -> usize {
        self.access_log()
            .iter()
            .filter(|e| {
                (e.method == "HEAD" || e.method == "GET")
                    && e.path.starts_with("/v2/")
                    && e.path.contains("/manifests/")
            })
            .count()
    }

    /// Polls (up to `timeout`) until `manifest_requests() >= n`; returns the
    /// last count. For the rare case where a client saw the answer before
    /// the access-log line was written (bodies over ~4 KiB).
    pub fn wait_manifest_requests(&self, n: usize, timeout: Duration) -> usize {
        wait_until(timeout, || {
            let c = self.manifest_requests();
            (c >= n).then_some(c)
        })
        .unwrap_or_else(|| self.manifest_requests())
    }

    /// Number of requests of any kind so far.
    pub fn total_requests(&self) -> usize {
        self.access_log().len()
    }

    /// Kills the registry now (e.g. to test "registry down"); Drop does the
    /// same. The port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn parse_access_line(line: &str) -> Option<AccessEntry> {
    // 127.0.0.1 - - [27/Nov/2025:19:30:00 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "curl/7.88.1"
    let start = line.find("] \"")? + 3;
    let rest = &line[start..];
    let end = rest.find('"')?;
    let mut req = rest[..end].split(' ');
    let method = req.next()?.to_string();
    let path = req.next()?.to_string();
    let proto = req.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    let status = rest[end + 1..]
        .trim_start()
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some(AccessEntry {
        method,
        path,
        status,
    })
}
