//! Config files: what one file may say ([`Fragment`]), how files merge, and
//! where each value came from, so validation can blame the right file.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{duration, ConfigError, ConfigPaths};
use crate::policy::RawPolicy;

/// One file's worth of settings, or the flags of one command line. `None`
/// means "not set here", so an earlier file's value (or the default) stands.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of staticpin settings"
)]
pub struct Fragment {
    /// `manifestDir`; see [`Settings`](super::Settings) for each key's meaning.
    pub manifest_dir: Option<PathBuf>,
    /// `backupDir`.
    pub backup_dir: Option<PathBuf>,
    /// `keepBackups`.
    pub keep_backups: Option<u32>,
    /// `dockerConfig`.
    pub docker_config: Option<PathBuf>,
    /// `kubeletRootDir`.
    pub kubelet_root_dir: Option<PathBuf>,
    /// `certsDirs`.
    pub certs_dirs: Option<Vec<PathBuf>>,
    /// `insecureRegistries`.
    pub insecure_registries: Option<Vec<String>>,
    /// `timeout`, bounded while it is read; see [`duration`].
    #[serde(default, deserialize_with = "duration::deserialize_timeout")]
    pub timeout: Option<Duration>,
    /// `connectTimeout`, bounded while it is read.
    #[serde(default, deserialize_with = "duration::deserialize_timeout")]
    pub connect_timeout: Option<Duration>,
    /// `deadline`: the whole run's registry traffic, bounded while it is read.
    #[serde(default, deserialize_with = "duration::deserialize_timeout")]
    pub deadline: Option<Duration>,
    /// `lockFile`.
    pub lock_file: Option<PathBuf>,
    /// `retries`.
    pub retries: Option<u32>,
    /// `concurrency`. Wider than the valid range so that 300 gets a range
    /// error naming the limits rather than a bare "expected u16".
    pub concurrency: Option<u64>,
    /// `digestOnly`.
    pub digest_only: Option<bool>,
    /// `admission`.
    pub admission: Option<AdmissionFragment>,
    /// `serve`: the webhook server, `staticpin serve`.
    pub serve: Option<ServeFragment>,
    /// `policy`: trusted registries and what happens to other images.
    pub policy: Option<RawPolicy>,
    /// `metricsFile`: the Prometheus text file written after every pass.
    pub metrics_file: Option<PathBuf>,
    /// `update`: move pins whose tag now names another digest.
    pub update: Option<bool>,
    // --- watch daemon keys ---
    /// `stateDir`.
    pub state_dir: Option<PathBuf>,
    /// `debounce`, bounded while it is read.
    #[serde(default, deserialize_with = "duration::deserialize_timeout")]
    pub debounce: Option<Duration>,
    /// `resync`, bounded while it is read.
    #[serde(default, deserialize_with = "duration::deserialize_timeout")]
    pub resync: Option<Duration>,
    /// `kubeadmTmpDir`.
    pub kubeadm_tmp_dir: Option<PathBuf>,
    /// `healthGate`.
    pub health_gate: Option<bool>,
    /// `offline`.
    pub offline: Option<bool>,
    /// Which file set each key, so validation can blame the right one. A key
    /// set without an entry here came from the command line or from code.
    #[serde(skip)]
    pub(super) origins: BTreeMap<&'static str, PathBuf>,
}

/// `policy.*` keys as origins record them: [`RawPolicy::keys_set`] spells
/// them without the `policy.` that errors and `check-config` show.
const POLICY_KEYS: [(&str, &str); 6] = [
    ("trustedRegistries", "policy.trustedRegistries"),
    ("untrusted", "policy.untrusted"),
    ("requireDigest", "policy.requireDigest"),
    ("denyLatest", "policy.denyLatest"),
    ("exemptNamespaces", "policy.exemptNamespaces"),
    ("allowBreakGlass", "policy.allowBreakGlass"),
];

/// The ImagePolicyWebhook wiring that `pin` applies and `doctor` checks.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with `enabled` and `configFile`"
)]
pub struct AdmissionFragment {
    /// `admission.enabled`.
    pub enabled: Option<bool>,
    /// `admission.configFile`.
    pub config_file: Option<PathBuf>,
}

/// `serve:`: where `staticpin serve` listens and with which credentials.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with listen, tlsCert, tlsKey, clientCA, mode and metricsListen"
)]
pub struct ServeFragment {
    /// `serve.listen`: a loopback `IP:PORT`.
    pub listen: Option<String>,
    /// `serve.tlsCert`: the serving certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// `serve.tlsKey`: its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// `serve.clientCA`: the CA that signs kube-apiserver's client certificate.
    #[serde(rename = "clientCA")]
    pub client_ca: Option<PathBuf>,
    /// `serve.mode`: `enforce` or `audit`.
    pub mode: Option<crate::policy::Mode>,
    /// `serve.metricsListen`: a loopback `IP:PORT` for /healthz and /metrics.
    pub metrics_listen: Option<String>,
}

impl ServeFragment {
    fn merge(self, later: ServeFragment) -> ServeFragment {
        ServeFragment {
            listen: later.listen.or(self.listen),
            tls_cert: later.tls_cert.or(self.tls_cert),
            tls_key: later.tls_key.or(self.tls_key),
            client_ca: later.client_ca.or(self.client_ca),
            mode: later.mode.or(self.mode),
            metrics_listen: later.metrics_listen.or(self.metrics_listen),
        }
    }

    fn keys_set(&self) -> Vec<&'static str> {
        [
            ("serve.listen", self.listen.is_some()),
            ("serve.tlsCert", self.tls_cert.is_some()),
            ("serve.tlsKey", self.tls_key.is_some()),
            ("serve.clientCA", self.client_ca.is_some()),
            ("serve.mode", self.mode.is_some()),
            ("serve.metricsListen", self.metrics_listen.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

impl Fragment {
    /// Overlays `later` on `self`: each key `later` sets wins. Lists are
    /// replaced whole, so a drop-in can shrink a list as well as grow it.
    /// `admission` merges per sub-key, like the top level.
    pub fn merge(self, later: Fragment) -> Fragment {
        let admission = match (self.admission, later.admission.clone()) {
            (Some(a), Some(b)) => Some(AdmissionFragment {
                enabled: b.enabled.or(a.enabled),
                config_file: b.config_file.or(a.config_file),
            }),
            (a, b) => b.or(a),
        };
        let serve = match (self.serve, later.serve.clone()) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => b.or(a),
        };
        let policy = match (self.policy, later.policy.clone()) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => b.or(a),
        };
        let mut origins = self.origins;
        for key in later.keys_set() {
            match later.origins.get(key) {
                Some(path) => origins.insert(key, path.clone()),
                // A flag overrode a file's value: the file is no longer to blame.
                None => origins.remove(key),
            };
        }
        Fragment {
            manifest_dir: later.manifest_dir.or(self.manifest_dir),
            backup_dir: later.backup_dir.or(self.backup_dir),
            keep_backups: later.keep_backups.or(self.keep_backups),
            docker_config: later.docker_config.or(self.docker_config),
            kubelet_root_dir: later.kubelet_root_dir.or(self.kubelet_root_dir),
            certs_dirs: later.certs_dirs.or(self.certs_dirs),
            insecure_registries: later.insecure_registries.or(self.insecure_registries),
            timeout: later.timeout.or(self.timeout),
            connect_timeout: later.connect_timeout.or(self.connect_timeout),
            deadline: later.deadline.or(self.deadline),
            lock_file: later.lock_file.or(self.lock_file),
            retries: later.retries.or(self.retries),
            concurrency: later.concurrency.or(self.concurrency),
            digest_only: later.digest_only.or(self.digest_only),
            admission,
            serve,
            policy,
            metrics_file: later.metrics_file.or(self.metrics_file),
            update: later.update.or(self.update),
            state_dir: later.state_dir.or(self.state_dir),
            debounce: later.debounce.or(self.debounce),
            resync: later.resync.or(self.resync),
            kubeadm_tmp_dir: later.kubeadm_tmp_dir.or(self.kubeadm_tmp_dir),
            health_gate: later.health_gate.or(self.health_gate),
            offline: later.offline.or(self.offline),
            origins,
        }
    }

    /// The keys this fragment sets, spelled as in the file.
    fn keys_set(&self) -> Vec<&'static str> {
        let admission = self.admission.as_ref();
        [
            ("manifestDir", self.manifest_dir.is_some()),
            ("backupDir", self.backup_dir.is_some()),
            ("keepBackups", self.keep_backups.is_some()),
            ("dockerConfig", self.docker_config.is_some()),
            ("kubeletRootDir", self.kubelet_root_dir.is_some()),
            ("certsDirs", self.certs_dirs.is_some()),
            ("insecureRegistries", self.insecure_registries.is_some()),
            ("timeout", self.timeout.is_some()),
            ("connectTimeout", self.connect_timeout.is_some()),
            ("deadline", self.deadline.is_some()),
            ("lockFile", self.lock_file.is_some()),
            ("retries", self.retries.is_some()),
            ("concurrency", self.concurrency.is_some()),
            ("digestOnly", self.digest_only.is_some()),
            ("stateDir", self.state_dir.is_some()),
            ("debounce", self.debounce.is_some()),
            ("resync", self.resync.is_some()),
            ("kubeadmTmpDir", self.kubeadm_tmp_dir.is_some()),
            ("healthGate", self.health_gate.is_some()),
            ("offline", self.offline.is_some()),
            (
                "admission.enabled",
                admission.is_some_and(|a| a.enabled.is_some()),
            ),
            (
                "admission.configFile",
                admission.is_some_and(|a| a.config_file.is_some()),
            ),
            ("metricsFile", self.metrics_file.is_some()),
            ("update", self.update.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .chain(self.serve.iter().flat_map(ServeFragment::keys_set))
        .chain(self.policy.iter().flat_map(|p| {
            p.keys_set().into_iter().filter_map(|k| {
                POLICY_KEYS
                    .iter()
                    .find(|(short, _)| *short == k)
                    .map(|(_, long)| *long)
            })
        }))
        .collect()
    }

    /// The file that set `key`, if a file did.
    pub(super) fn origin(&self, key: &str) -> Option<PathBuf> {
        self.origins.get(key).cloned()
    }
}

/// Reads and parses one file. An empty file, or one with only comments, is an
/// empty fragment.
pub fn load_file(path: &Path) -> Result<Fragment, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut fragment = parse(&bytes).map_err(|e| parse_error(path, &e))?;
    let origin = path.to_path_buf();
    fragment.origins = fragment
        .keys_set()
        .into_iter()
        .map(|k| (k, origin.clone()))
        .collect();
    Ok(fragment)
}

fn parse(bytes: &[u8]) -> Result<Fragment, serde_norway::Error> {
    // A struct needs a mapping, but a new or fully commented-out file has no
    // document at all; reading through `Option` turns that (and a bare `~`)
    // into "nothing set" while keeping typed errors, with locations, for any
    // file that has content.
    Ok(serde_norway::from_slice::<Option<Fragment>>(bytes)?.unwrap_or_default())
}

/// Moves the location out of serde_norway's message and in front of it, so
/// every config error reads `FILE: line L column C: what`.
fn parse_error(path: &Path, e: &serde_norway::Error) -> ConfigError {
    let mut message = e.to_string();
    let line_column = e.location().map(|l| (l.line(), l.column()));
    if let Some((line, column)) = line_column {
        message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
    }
    ConfigError::Parse {
        path: path.to_path_buf(),
        line_column,
        message,
    }
}

/// Drop-ins: regular `*.yaml` entries, no dotfiles (editors and package
/// managers leave `.foo.yaml.swp`-style files behind), sorted by name.
fn dropins(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_dir_err = |source| ConfigError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_dir_err(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_dir_err)?;
        let name = entry.file_name();
        let bytes = name.as_encoded_bytes();
        if bytes.starts_with(b".") || !bytes.ends_with(b".yaml") {
            continue;
        }
        // Follows symlinks; a dangling one is kept so reading it reports why.
        if entry.path().is_dir() {
            continue;
        }
        names.push(name);
    }
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// The main file and its drop-ins, merged in order, and the files read. A
/// missing main file or drop-in directory contributes nothing: a node needs
/// no config file to run.
pub fn read(paths: &ConfigPaths) -> Result<(Fragment, Vec<PathBuf>), ConfigError> {
    let mut merged = Fragment::default();
    let mut read = Vec::new();
    match load_file(&paths.main) {
        Ok(f) => {
            merged = f;
            read.push(paths.main.clone());
        }
        Err(ConfigError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for path in dropins(&paths.dropin_dir)? {
        merged = merged.merge(load_file(&path)?);
        read.push(path);
    }
    Ok((merged, read))
}
