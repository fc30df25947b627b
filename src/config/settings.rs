//! Validated settings: every default defined once, every value checked once,
//! whether it came from a file, a drop-in or a flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::Mode;

use super::{duration, ConfigError, Fragment};
use crate::policy::{Policy, PolicyError};

/// kubelet's `staticPodPath` on kubeadm nodes.
pub const DEFAULT_MANIFEST_DIR: &str = "/etc/kubernetes/manifests";
/// Outside the manifest directory, so kubelet never runs a backup.
pub const DEFAULT_BACKUP_DIR: &str = "/var/lib/staticpin/backups";
/// Backup runs kept; older ones are pruned.
pub const DEFAULT_KEEP_BACKUPS: u32 = 20;
/// kubelet's `--root-dir`, whose `config.json` kubelet searches first.
pub const DEFAULT_KUBELET_ROOT_DIR: &str = "/var/lib/kubelet";
/// Where containerd and then docker look for per-registry CAs and hosts.toml.
pub const DEFAULT_CERTS_DIRS: [&str; 2] = ["/etc/containerd/certs.d", "/etc/docker/certs.d"];
/// One whole registry request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Establishing one connection to a registry.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole run's registry traffic; later answers count as timeouts.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// The run lock every writing run takes; under systemd's RuntimeDirectory.
pub const DEFAULT_LOCK_FILE: &str = "/run/staticpin/lock";
/// Retries after the first attempt, on 429, 5xx and connection failures.
pub const DEFAULT_RETRIES: u32 = 3;
/// Registry requests in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// How long the health gate waits for kube-apiserver to answer healthy.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the health gate lets kubelet notice a changed manifest before
/// probing; kubelet relists every 20 s.
pub const DEFAULT_HEALTH_SETTLE: Duration = Duration::from_secs(25);

// --- watch daemon defaults ---
/// The daemon's own state: the digest cache and the health-gate memory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/staticpin";
/// How long the daemon lets a burst of file events settle before a pass.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(250);
/// The daemon's periodic full pass, catching anything an event missed.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
/// Where `kubeadm upgrade` stages new manifests while it runs.
pub const DEFAULT_KUBEADM_TMP_DIR: &str = "/etc/kubernetes/tmp";
/// Where `staticpin serve` answers kube-apiserver: the node's own loopback.
pub const DEFAULT_SERVE_LISTEN: &str = "127.0.0.1:8443";
/// Where `staticpin serve` answers /healthz and /metrics, in plain HTTP.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9843";

/// The highest `concurrency` accepted; more would only get staticpin
/// rate-limited by registries that a handful of static pods never need.
pub const MAX_CONCURRENCY: u64 = 256;

/// Fully defaulted, validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// kubelet's static pod directory: what `pin` and `doctor` read by default.
    pub manifest_dir: PathBuf,
    /// Where originals are saved before a change; never `manifest_dir`.
    pub backup_dir: PathBuf,
    /// Backup runs kept, at least 1.
    pub keep_backups: u32,
    /// `None`: search for a docker config the way kubelet does.
    pub docker_config: Option<PathBuf>,
    /// kubelet's `--root-dir`; its `config.json` is searched first.
    pub kubelet_root_dir: PathBuf,
    /// containerd/docker certs directories (CAs, client certs, hosts.toml), in order.
    pub certs_dirs: Vec<PathBuf>,
    /// `host[:port]` entries with TLS verification off and plain HTTP allowed.
    pub insecure_registries: Vec<String>,
    /// One whole registry request, within [`duration::MAX`].
    pub timeout: Duration,
    /// Establishing one connection, within [`duration::MAX`].
    pub connect_timeout: Duration,
    /// The whole run's registry traffic, within [`duration::MAX`].
    pub deadline: Duration,
    /// The run lock every writing run takes.
    pub lock_file: PathBuf,
    /// Retries after the first attempt, on 429, 5xx and connection failures.
    pub retries: u32,
    /// Registry requests in flight at once, 1 to [`MAX_CONCURRENCY`].
    pub concurrency: usize,
    /// Write `name@sha256:…` instead of `name:tag@sha256:…`.
    pub digest_only: bool,
    /// ImagePolicyWebhook wiring.
    pub admission: AdmissionSettings,
    /// The webhook server.
    pub serve: ServeSettings,
    /// Trusted registries and what `pin` does with other images; the
    /// default is no registry policy.
    pub policy: Policy,
    /// The Prometheus text file written after every pass; `None`: none.
    pub metrics_file: Option<PathBuf>,
    /// Move pins whose tag now resolves to another (verified) digest.
    pub update: bool,
    // --- watch daemon settings ---
    /// The digest cache (`digests.json`) and the daemon's memory live here.
    pub state_dir: PathBuf,
    /// Quiet time after a file event before the daemon's pass.
    pub debounce: Duration,
    /// The daemon's periodic full pass.
    pub resync: Duration,
    /// A `kubeadm-upgraded-manifests*` directory here means an upgrade runs.
    pub kubeadm_tmp_dir: PathBuf,
    /// The daemon gates kube-apiserver.yaml changes on its health.
    pub health_gate: bool,
    /// Pin from the digest cache only; ask no registry.
    pub offline: bool,
}

/// `staticpin serve`: loopback addresses only, TLS material as paths (read
/// when the server starts or reloads, so a bad file names itself then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    /// The decision port (HTTPS, client certificates required); loopback.
    pub listen: SocketAddr,
    /// /healthz and /metrics (plain HTTP); loopback, never the decision port.
    pub metrics_listen: SocketAddr,
    /// Serving certificate chain; `serve` refuses to start without it.
    pub tls_cert: Option<PathBuf>,
    /// Its private key.
    pub tls_key: Option<PathBuf>,
    /// CA that signed kube-apiserver's client certificate.
    pub client_ca: Option<PathBuf>,
    /// Enforce denials, or only record them.
    pub mode: Mode,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9843)),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            mode: Mode::Enforce,
        }
    }
}

/// A listen address for `serve`: `IP:PORT` with a loopback IP. staticpin
/// serve is reached by the node's own kube-apiserver only; anything wider
/// would put the admission decision on the network.
pub fn check_loopback_listen(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|_| {
        format!("expected a loopback IP:PORT such as {DEFAULT_SERVE_LISTEN}, got {s:?}")
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: staticpin serve listens only on the node's \
             loopback (127.0.0.0/8 or [::1]), where the node's own kube-apiserver calls it"
        ));
    }
    if addr.port() == 0 {
        return Err(format!("{s:?} has no port"));
    }
    Ok(addr)
}

/// Whether `pin` wires ImagePolicyWebhook into kube-apiserver.yaml (and
/// `doctor` checks it), and with which AdmissionConfiguration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Whether `pin` wires it.
    pub enabled: bool,
    /// Always set when `enabled` is.
    pub config_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            manifest_dir: PathBuf::from(DEFAULT_MANIFEST_DIR),
            backup_dir: PathBuf::from(DEFAULT_BACKUP_DIR),
            keep_backups: DEFAULT_KEEP_BACKUPS,
            docker_config: None,
            kubelet_root_dir: PathBuf::from(DEFAULT_KUBELET_ROOT_DIR),
            certs_dirs: DEFAULT_CERTS_DIRS.iter().map(PathBuf::from).collect(),
            insecure_registries: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            lock_file: PathBuf::from(DEFAULT_LOCK_FILE),
            retries: DEFAULT_RETRIES,
            concurrency: DEFAULT_CONCURRENCY,
            digest_only: false,
            admission: AdmissionSettings::default(),
            serve: ServeSettings::default(),
            policy: Policy::default(),
            metrics_file: None,
            update: false,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            debounce: DEFAULT_DEBOUNCE,
            resync: DEFAULT_RESYNC,
            kubeadm_tmp_dir: PathBuf::from(DEFAULT_KUBEADM_TMP_DIR),
            health_gate: true,
            offline: false,
        }
    }
}

impl Settings {
    /// Applies defaults to every unset key and validates every set one.
    pub fn from_fragment(fragment: Fragment) -> Result<Settings, ConfigError> {
        let c = Check(&fragment);
        let defaults = Settings::default();
        // The groups run in the order the keys were always checked, so a
        // fragment with several bad keys still reports the same first one.
        let (keep_backups, concurrency) = c.limits(&defaults)?;
        let (certs_dirs, insecure_registries) = c.registry_hosts(&defaults)?;
        let (manifest_dir, backup_dir) = c.dirs(&defaults)?;
        let admission = c.admission(&defaults)?;
        let serve = c.serve(&defaults)?;
        let policy = c.policy()?;
        let metrics_file = c.path("metricsFile", fragment.metrics_file.clone())?;

        Ok(Settings {
            manifest_dir,
            backup_dir,
            keep_backups,
            docker_config: c.path("dockerConfig", fragment.docker_config.clone())?,
            kubelet_root_dir: c
                .path("kubeletRootDir", fragment.kubelet_root_dir.clone())?
                .unwrap_or(defaults.kubelet_root_dir),
            certs_dirs,
            insecure_registries,
            timeout: c.timeout("timeout", fragment.timeout, defaults.timeout)?,
            connect_timeout: c.timeout(
                "connectTimeout",
                fragment.connect_timeout,
                defaults.connect_timeout,
            )?,
            deadline: c.timeout("deadline", fragment.deadline, defaults.deadline)?,
            lock_file: c
                .path("lockFile", fragment.lock_file.clone())?
                .unwrap_or(defaults.lock_file),
            retries: fragment.retries.unwrap_or(defaults.retries),
            concurrency,
            digest_only: fragment.digest_only.unwrap_or(defaults.digest_only),
            admission,
            serve,
            policy,
            metrics_file,
            update: fragment.update.unwrap_or(defaults.update),
            state_dir: c
                .path("stateDir", fragment.state_dir.clone())?
                .unwrap_or(defaults.state_dir),
            debounce: c.timeout("debounce", fragment.debounce, defaults.debounce)?,
            resync: c.timeout("resync", fragment.resync, defaults.resync)?,
            kubeadm_tmp_dir: c
                .path("kubeadmTmpDir", fragment.kubeadm_tmp_dir.clone())?
                .unwrap_or(defaults.kubeadm_tmp_dir),
            health_gate: fragment.health_gate.unwrap_or(defaults.health_gate),
            offline: fragment.offline.unwrap_or(defaults.offline),
        })
    }
}

/// Validates one fragment's keys, one group at a time; every error it makes
/// names the file (or flag) the offending key came from.
struct Check<'a>(&'a Fragment);

impl Check<'_> {
    fn invalid(&self, key: &str, reason: String) -> ConfigError {
        // `certsDirs[2]` was set by whoever set `certsDirs`.
        let base = key.split('[').next().unwrap_or(key);
        ConfigError::Invalid {
            origin: self.0.origin(base),
            key: key.to_string(),
            reason,
        }
    }

    fn path(&self, key: &str, value: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
        match value {
            Some(p) => check_path(&p)
                .map(|()| Some(p))
                .map_err(|r| self.invalid(key, r)),
            None => Ok(None),
        }
    }

    fn timeout(
        &self,
        key: &str,
        value: Option<Duration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(d) => duration::check_timeout(d).map_err(|r| self.invalid(key, r)),
            None => Ok(default),
        }
    }

    fn listen(
        &self,
        key: &str,
        value: &Option<String>,
        default: SocketAddr,
    ) -> Result<SocketAddr, ConfigError> {
        match value {
            Some(s) => check_loopback_listen(s).map_err(|r| self.invalid(key, r)),
            None => Ok(default),
        }
    }

    /// `keepBackups` and `concurrency`.
    fn limits(&self, defaults: &Settings) -> Result<(u32, usize), ConfigError> {
        let keep_backups = match self.0.keep_backups {
            Some(0) => return Err(self.invalid("keepBackups", "must be at least 1, got 0".into())),
            Some(n) => n,
            None => defaults.keep_backups,
        };
        let concurrency = match self.0.concurrency {
            Some(n) => check_concurrency(n).map_err(|r| self.invalid("concurrency", r))?,
            None => defaults.concurrency,
        };
        Ok((keep_backups, concurrency))
    }

    /// `certsDirs` and `insecureRegistries`: per-registry TLS settings.
    fn registry_hosts(
        &self,
        defaults: &Settings,
    ) -> Result<(Vec<PathBuf>, Vec<String>), ConfigError> {
        let certs_dirs = match &self.0.certs_dirs {
            Some(dirs) => {
                for (i, d) in dirs.iter().enumerate() {
                    check_path(d).map_err(|r| self.invalid(&format!("certsDirs[{i}]"), r))?;
                }
                dirs.clone()
            }
            None => defaults.certs_dirs.clone(),
        };
        let insecure_registries = match &self.0.insecure_registries {
            Some(hosts) => {
                for (i, h) in hosts.iter().enumerate() {
                    check_registry_host(h)
                        .map_err(|r| self.invalid(&format!("insecureRegistries[{i}]"), r))?;
                }
                hosts.clone()
            }
            None => defaults.insecure_registries.clone(),
        };
        Ok((certs_dirs, insecure_registries))
    }

    /// `manifestDir` and `backupDir`, which must never be the same.
    fn dirs(&self, defaults: &Settings) -> Result<(PathBuf, PathBuf), ConfigError> {
        let manifest_dir = self
            .path("manifestDir", self.0.manifest_dir.clone())?
            .unwrap_or_else(|| defaults.manifest_dir.clone());
        let backup_dir = self
            .path("backupDir", self.0.backup_dir.clone())?
            .unwrap_or_else(|| defaults.backup_dir.clone());
        // kubelet runs every file in its manifest directory (it does not
        // recurse), so backups there would start as duplicate pods.
        if backup_dir == manifest_dir {
            return Err(self.invalid(
                "backupDir",
                format!(
                    "must not be manifestDir ({}): kubelet would run the backups",
                    manifest_dir.display()
                ),
            ));
        }
        Ok((manifest_dir, backup_dir))
    }

    /// `admission.*`: a config file whenever wiring is enabled.
    fn admission(&self, defaults: &Settings) -> Result<AdmissionSettings, ConfigError> {
        let admission = self.0.admission.clone().unwrap_or_default();
        let enabled = admission.enabled.unwrap_or(defaults.admission.enabled);
        let config_file = self.path("admission.configFile", admission.config_file)?;
        if enabled && config_file.is_none() {
            // Blame the file that turned it on: that is where the key is missing.
            return Err(ConfigError::Invalid {
                origin: self.0.origin("admission.enabled"),
                key: "admission.configFile".into(),
                reason: "must be set when admission.enabled is true".into(),
            });
        }
        Ok(AdmissionSettings {
            enabled,
            config_file,
        })
    }

    /// `serve.*`: loopback listeners that never share a port.
    fn serve(&self, defaults: &Settings) -> Result<ServeSettings, ConfigError> {
        let serve_fragment = self.0.serve.clone().unwrap_or_default();
        let serve = ServeSettings {
            listen: self.listen(
                "serve.listen",
                &serve_fragment.listen,
                defaults.serve.listen,
            )?,
            metrics_listen: self.listen(
                "serve.metricsListen",
                &serve_fragment.metrics_listen,
                defaults.serve.metrics_listen,
            )?,
            tls_cert: self.path("serve.tlsCert", serve_fragment.tls_cert.clone())?,
            tls_key: self.path("serve.tlsKey", serve_fragment.tls_key.clone())?,
            client_ca: self.path("serve.clientCA", serve_fragment.client_ca.clone())?,
            mode: serve_fragment.mode.unwrap_or_default(),
        };
        if serve.listen == serve.metrics_listen {
            // Blame the key that was set: the other one is at its default.
            let (key, other) = if serve_fragment.metrics_listen.is_some() {
                ("serve.metricsListen", "serve.listen")
            } else {
                ("serve.listen", "serve.metricsListen")
            };
            return Err(self.invalid(
                key,
                format!(
                    "must differ from {other} ({}): metrics are never served on the decision port",
                    serve.listen
                ),
            ));
        }
        Ok(serve)
    }

    /// `policy.*`: the policy engine owns its own checks; its errors keep
    /// their key so the origin is the file that set it.
    fn policy(&self) -> Result<Policy, ConfigError> {
        Policy::from_raw(&self.0.policy.clone().unwrap_or_default()).map_err(|e| match e {
            PolicyError::Invalid { key, reason } => self.invalid(&key, reason),
            other => self.invalid("policy", other.to_string()),
        })
    }
}

/// Paths must be absolute: the daemon runs with `/` as its working directory
/// while `check-config` runs from a shell, so a relative path would be checked
/// against one directory and used against another.
pub fn check_path(p: &Path) -> Result<(), String> {
    if p.as_os_str().is_empty() {
        Err("must not be empty".into())
    } else if !p.is_absolute() {
        Err(format!(
            "must be an absolute path, got {:?}",
            p.display().to_string()
        ))
    } else {
        Ok(())
    }
}

/// `concurrency`, 1 to [`MAX_CONCURRENCY`].
pub fn check_concurrency(n: u64) -> Result<usize, String> {
    let out_of_range = || format!("must be between 1 and {MAX_CONCURRENCY}, got {n}");
    if !(1..=MAX_CONCURRENCY).contains(&n) {
        return Err(out_of_range());
    }
    usize::try_from(n).map_err(|_| out_of_range())
}

/// An `insecureRegistries` entry: `host[:port]` exactly as it appears before
/// the first `/` of an image reference. The resolver compares entries to that
/// text, so a scheme or path would never match and would silently leave the
/// registry secure; the grammar is the image reference's own.
pub fn check_registry_host(s: &str) -> Result<(), String> {
    crate::reference::check_host_port(s)
        .map_err(|why| format!("{s:?} {why}; expected host[:port], e.g. registry.local:5000"))
}
