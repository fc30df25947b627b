//! The configuration file: where it lives, how fragments merge, and what a
//! valid setting is.
//!
//! Configuration flows in three steps, as in zincati:
//!
//! 1. Each file parses into a [`Fragment`], whose fields are all optional and
//!    whose unknown keys are errors, so a typo fails loudly instead of being
//!    silently ignored on a control-plane node.
//! 2. Fragments [`merge`](Fragment::merge): the main file first, then the
//!    drop-ins in `config.d/` in lexical order; a later file wins per key and
//!    lists are replaced, not appended. This lets packaging ship defaults in one
//!    file and an operator override a single key in another.
//! 3. The merged fragment becomes [`Settings`]: every key defaulted and every
//!    value validated. Nothing downstream sees an `Option` or an unchecked value.
//!
//! Every error names the file it came from; parse errors also carry the line
//! and column, and validation errors the file that set the offending key.
//! The loader takes its paths as arguments so tests (and `check-config`) can
//! point it anywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the configuration is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPaths {
    /// The main file; a missing one means built-in defaults.
    pub main: PathBuf,
    /// Drop-ins: every `*.yaml` here (dotfiles excepted), in lexical order.
    pub dropin_dir: PathBuf,
}

impl Default for ConfigPaths {
    fn default() -> Self {
        ConfigPaths {
            main: PathBuf::from("/etc/staticpin/config.yaml"),
            dropin_dir: PathBuf::from("/etc/staticpin/config.d"),
        }
    }
}

/// Why configuration could not be loaded. Display always starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: cannot list drop-in directory: {source}", .dir.display())]
    ReadDir { dir: PathBuf, source: io::Error },
    /// Syntax errors, wrong types and unknown keys.
    #[error("{}: {}{message}", .path.display(), Location(.line_column))]
    Parse {
        path: PathBuf,
        /// 1-based line and column, when the YAML parser knows them.
        line_column: Option<(usize, usize)>,
        message: String,
    },
    /// A well-typed value outside its allowed range.
    #[error("{}{key}: {reason}", Origin(.origin))]
    Invalid {
        /// The file that set the value; `None` for fragments built in code.
        origin: Option<PathBuf>,
        /// The camelCase key, e.g. `keepBackups` or `admission.configFile`.
        key: String,
        reason: String,
    },
}

impl ConfigError {
    /// The file at fault, if the error is tied to one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigError::Read { path, .. } | ConfigError::Parse { path, .. } => Some(path),
            ConfigError::ReadDir { dir, .. } => Some(dir),
            ConfigError::Invalid { origin, .. } => origin.as_deref(),
        }
    }
}

struct Location<'a>(&'a Option<(usize, usize)>);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, "line {line} column {column}: "),
            None => Ok(()),
        }
    }
}

struct Origin<'a>(&'a Option<PathBuf>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}: ", path.display()),
            None => Ok(()),
        }
    }
}

/// One file's worth of settings. `None` means "not set here", so an earlier
/// file's value (or the default) stands.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of staticpin settings"
)]
pub struct Fragment {
    pub manifest_dir: Option<PathBuf>,
    pub backup_dir: Option<PathBuf>,
    pub keep_backups: Option<u32>,
    pub lock_file: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub kubelet_root_dir: Option<PathBuf>,
    pub certs_dirs: Option<Vec<PathBuf>>,
    pub insecure_registries: Option<Vec<String>>,
    /// Seconds.
    pub timeout: Option<f64>,
    /// Seconds.
    pub connect_timeout: Option<f64>,
    /// Seconds for the whole run's registry traffic.
    pub deadline: Option<f64>,
    pub retries: Option<u32>,
    // Wider than the valid range so that 300 gets a range error naming the
    // limits rather than a bare "expected u16".
    pub concurrency: Option<u64>,
    pub digest_only: Option<bool>,
    pub admission: Option<AdmissionFragment>,
    /// Which file set each key, so validation can blame the right one.
    #[serde(skip)]
    origins: BTreeMap<&'static str, PathBuf>,
}

/// Reserved for the admission-control feature; parsed and type-checked only.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with `enabled` and `configFile`"
)]
pub struct AdmissionFragment {
    pub enabled: Option<bool>,
    pub config_file: Option<PathBuf>,
}

impl Fragment {
    /// Overlays `later` on `self`: each key `later` sets wins. Lists are
    /// replaced whole, so a drop-in can shrink a list as well as grow it.
    /// `admission` merges per sub-key, like the top level.
    pub fn merge(self, later: Fragment) -> Fragment {
        let admission = match (self.admission, later.admission) {
            (Some(a), Some(b)) => Some(AdmissionFragment {
                enabled: b.enabled.or(a.enabled),
                config_file: b.config_file.or(a.config_file),
            }),
            (a, b) => b.or(a),
        };
        let mut origins = self.origins;
        origins.extend(later.origins);
        Fragment {
            manifest_dir: later.manifest_dir.or(self.manifest_dir),
            backup_dir: later.backup_dir.or(self.backup_dir),
            keep_backups: later.keep_backups.or(self.keep_backups),
            lock_file: later.lock_file.or(self.lock_file),
            docker_config: later.docker_config.or(self.docker_config),
            kubelet_root_dir: later.kubelet_root_dir.or(self.kubelet_root_dir),
            certs_dirs: later.certs_dirs.or(self.certs_dirs),
            insecure_registries: later.insecure_registries.or(self.insecure_registries),
            timeout: later.timeout.or(self.timeout),
            connect_timeout: later.connect_timeout.or(self.connect_timeout),
            deadline: later.deadline.or(self.deadline),
            retries: later.retries.or(self.retries),
            concurrency: later.concurrency.or(self.concurrency),
            digest_only: later.digest_only.or(self.digest_only),
            admission,
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
            ("lockFile", self.lock_file.is_some()),
            ("dockerConfig", self.docker_config.is_some()),
            ("kubeletRootDir", self.kubelet_root_dir.is_some()),
            ("certsDirs", self.certs_dirs.is_some()),
            ("insecureRegistries", self.insecure_registries.is_some()),
            ("timeout", self.timeout.is_some()),
            ("connectTimeout", self.connect_timeout.is_some()),
            ("deadline", self.deadline.is_some()),
            ("retries", self.retries.is_some()),
            ("concurrency", self.concurrency.is_some()),
            ("digestOnly", self.digest_only.is_some()),
            (
                "admission.enabled",
                admission.is_some_and(|a| a.enabled.is_some()),
            ),
            (
                "admission.configFile",
                admission.is_some_and(|a| a.config_file.is_some()),
            ),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

/// The highest `concurrency` accepted; more would only get staticpin
/// rate-limited by registries that a handful of static pods never need.
pub const MAX_CONCURRENCY: u64 = 256;

/// Fully defaulted, validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub manifest_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub keep_backups: u32,
    /// The run lock every writing run takes.
    pub lock_file: PathBuf,
    /// `None`: search for a docker config the way kubelet does.
    pub docker_config: Option<PathBuf>,
    pub kubelet_root_dir: PathBuf,
    pub certs_dirs: Vec<PathBuf>,
    pub insecure_registries: Vec<String>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub deadline: Duration,
    pub retries: u32,
    pub concurrency: usize,
    pub digest_only: bool,
    pub admission: AdmissionSettings,
}

/// Reserved; nothing reads it yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionSettings {
    pub enabled: bool,
    pub config_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        // Registry defaults come from the resolver itself, so the config file
        // and a config-less run cannot drift apart.
        let registry = crate::registry::Settings::default();
        Settings {
            manifest_dir: PathBuf::from("/etc/kubernetes/manifests"),
            backup_dir: PathBuf::from("/var/lib/staticpin/backups"),
            keep_backups: 20,
            lock_file: PathBuf::from(crate::pass::lock::DEFAULT_LOCK_FILE),
            docker_config: None,
            kubelet_root_dir: PathBuf::from("/var/lib/kubelet"),
            certs_dirs: registry.certs_dirs,
            insecure_registries: registry.insecure_registries,
            timeout: registry.request_timeout,
            connect_timeout: registry.connect_timeout,
            deadline: registry.deadline,
            retries: registry.max_retries,
            concurrency: registry.concurrency,
            digest_only: false,
            admission: AdmissionSettings::default(),
        }
    }
}

impl Settings {
    /// Applies defaults to every unset key and validates every set one.
    pub fn from_fragment(fragment: Fragment) -> Result<Settings, ConfigError> {
        let origins = &fragment.origins;
        let invalid = |key: &str, reason: String| {
            let base = key.split('[').next().unwrap_or(key);
            ConfigError::Invalid {
                origin: origins.get(base).cloned(),
                key: key.to_string(),
                reason,
            }
        };
        let path = |key: &str, value: Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
            match value {
                Some(p) => check_path(&p)
                    .map(|()| Some(p))
                    .map_err(|r| invalid(key, r)),
                None => Ok(None),
            }
        };
        let seconds = |key: &str, value: Option<f64>| -> Result<Option<Duration>, ConfigError> {
            value
                .map(|v| match Duration::try_from_secs_f64(v) {
                    Ok(d) if !d.is_zero() => Ok(d),
                    _ => Err(invalid(
                        key,
                        format!("must be a positive number of seconds, got {v}"),
                    )),
                })
                .transpose()
        };

        let defaults = Settings::default();
        let keep_backups = match fragment.keep_backups {
            Some(0) => return Err(invalid("keepBackups", "must be at least 1, got 0".into())),
            Some(n) => n,
            None => defaults.keep_backups,
        };
        let concurrency = match fragment.concurrency {
            Some(n) if !(1..=MAX_CONCURRENCY).contains(&n) => {
                return Err(invalid(
                    "concurrency",
                    format!("must be between 1 and {MAX_CONCURRENCY}, got {n}"),
                ))
            }
            // In range, so it fits any usize.
            Some(n) => n as usize,
            None => defaults.concurrency,
        };
        let certs_dirs = match fragment.certs_dirs {
            Some(dirs) => {
                for (i, d) in dirs.iter().enumerate() {
                    check_path(d).map_err(|r| invalid(&format!("certsDirs[{i}]"), r))?;
                }
                dirs
            }
            None => defaults.certs_dirs,
        };
        let insecure_registries = match fragment.insecure_registries {
            Some(hosts) => {
                for (i, h) in hosts.iter().enumerate() {
                    check_host_port(h)
                        .map_err(|r| invalid(&format!("insecureRegistries[{i}]"), r))?;
                }
                hosts
            }
            None => defaults.insecure_registries,
        };
        let admission = fragment.admission.unwrap_or_default();
        let manifest_dir =
            path("manifestDir", fragment.manifest_dir)?.unwrap_or(defaults.manifest_dir);
        let backup_dir = path("backupDir", fragment.backup_dir)?.unwrap_or(defaults.backup_dir);
        // kubelet runs every file in its manifest directory (it does not
        // recurse), so backups there would start as duplicate pods.
        if backup_dir == manifest_dir {
            return Err(invalid(
                "backupDir",
                format!(
                    "must not be manifestDir ({}): kubelet would run the backups",
                    manifest_dir.display()
                ),
            ));
        }

        Ok(Settings {
            manifest_dir,
            backup_dir,
            keep_backups,
            lock_file: path("lockFile", fragment.lock_file)?.unwrap_or(defaults.lock_file),
            docker_config: path("dockerConfig", fragment.docker_config)?,
            kubelet_root_dir: path("kubeletRootDir", fragment.kubelet_root_dir)?
                .unwrap_or(defaults.kubelet_root_dir),
            certs_dirs,
            insecure_registries,
            timeout: seconds("timeout", fragment.timeout)?.unwrap_or(defaults.timeout),
            connect_timeout: seconds("connectTimeout", fragment.connect_timeout)?
                .unwrap_or(defaults.connect_timeout),
            deadline: seconds("deadline", fragment.deadline)?.unwrap_or(defaults.deadline),
            retries: fragment.retries.unwrap_or(defaults.retries),
            concurrency,
            digest_only: fragment.digest_only.unwrap_or(defaults.digest_only),
            admission: AdmissionSettings {
                enabled: admission.enabled.unwrap_or(defaults.admission.enabled),
                config_file: path("admission.configFile", admission.config_file)?,
            },
        })
    }
}

/// Paths must be absolute: the daemon runs with `/` as its working directory
/// while `check-config` runs from a shell, so a relative path would be checked
/// against one directory and used against another.
fn check_path(p: &Path) -> Result<(), String> {
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

/// `host[:port]` as it appears before the first `/` of an image reference;
/// the resolver compares entries to that text, so a scheme or path would
/// never match and would silently leave the registry secure.
fn check_host_port(s: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{s:?} {why}; expected host[:port], e.g. registry.local:5000"
        ))
    };
    if s.is_empty() {
        return bad("is empty");
    }
    if s.contains("://") {
        return bad("has a scheme");
    }
    if s.contains('/') {
        return bad("has a path");
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return bad("has an unclosed IPv6 bracket");
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("is not a valid IPv6 address");
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(p) => (None, Some(p)),
                None => return bad("has text after the IPv6 address"),
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(p) = port {
        if !p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u16>(), Ok(1..)) {
            return bad("has an invalid port");
        }
    }
    if let Some(h) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !h.split('.').all(label_ok) {
            return bad("is not a valid host name");
        }
    }
    Ok(())
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

/// Loads the main file and its drop-ins and returns the settings and the
/// files read, in the order they were applied. A missing main file or drop-in
/// directory means defaults: a node needs no config file to run.
pub fn load(paths: &ConfigPaths) -> Result<(Settings, Vec<PathBuf>), ConfigError> {
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
    Ok((Settings::from_fragment(merged)?, read))
}

/// `staticpin check-config FILE`: the file alone, over the defaults. Unlike
/// [`load`], a missing file is an error, because the operator named it.
pub fn check(path: &Path) -> Result<Settings, ConfigError> {
    Settings::from_fragment(load_file(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A temp dir laid out like /etc/staticpin.
    struct Etc {
        dir: tempfile::TempDir,
    }

    impl Etc {
        fn new() -> Etc {
            Etc {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn paths(&self) -> ConfigPaths {
            ConfigPaths {
                main: self.dir.path().join("config.yaml"),
                dropin_dir: self.dir.path().join("config.d"),
            }
        }
        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
            path
        }
    }

    fn check_text(text: &str) -> (PathBuf, Result<Settings, ConfigError>, Etc) {
        let etc = Etc::new();
        let path = etc.write("config.yaml", text);
        let result = check(&path);
        (path, result, etc)
    }

    fn check_err(text: &str) -> String {
        let (path, result, _etc) = check_text(text);
        let msg = result.expect_err("expected an error").to_string();
        assert!(
            msg.starts_with(&format!("{}: ", path.display())),
            "error does not start with the file: {msg}"
        );
        msg
    }

    #[test]
    fn no_files_means_defaults() {
        let etc = Etc::new();
        let (settings, read) = load(&etc.paths()).unwrap();
        assert_eq!(settings, Settings::default());
        assert!(read.is_empty());
        assert_eq!(
            settings.manifest_dir,
            Path::new("/etc/kubernetes/manifests")
        );
        assert_eq!(settings.backup_dir, Path::new("/var/lib/staticpin/backups"));
        assert_eq!(settings.keep_backups, 20);
        assert_eq!(settings.docker_config, None);
        assert_eq!(settings.kubelet_root_dir, Path::new("/var/lib/kubelet"));
        assert_eq!(
            settings.certs_dirs,
            [
                Path::new("/etc/containerd/certs.d"),
                Path::new("/etc/docker/certs.d")
            ]
        );
        assert!(settings.insecure_registries.is_empty());
        assert_eq!(settings.timeout, Duration::from_secs(30));
        assert_eq!(settings.connect_timeout, Duration::from_secs(10));
        assert_eq!(settings.retries, 3);
        assert_eq!(settings.concurrency, 8);
        assert!(!settings.digest_only);
        assert_eq!(settings.admission, AdmissionSettings::default());
    }

    #[test]
    fn default_paths_are_under_etc_staticpin() {
        let p = ConfigPaths::default();
        assert_eq!(p.main, Path::new("/etc/staticpin/config.yaml"));
        assert_eq!(p.dropin_dir, Path::new("/etc/staticpin/config.d"));
    }

    #[test]
    fn dropins_merge_in_lexical_order_and_replace_lists() {
        let etc = Etc::new();
        let main = etc.write(
            "config.yaml",
            "keepBackups: 5\ntimeout: 60\ncertsDirs: [/a, /b]\nadmission:\n  enabled: true\n",
        );
        // Written out of order, so directory order cannot make the test pass.
        let second = etc.write(
            "config.d/20-second.yaml",
            "keepBackups: 7\ncertsDirs: [/c]\nadmission:\n  configFile: /etc/adm.yaml\n",
        );
        let first = etc.write("config.d/10-first.yaml", "keepBackups: 6\nretries: 1\n");
        etc.write("config.d/.30-hidden.yaml", "keepBackups: 99\n");
        etc.write("config.d/40-disabled.yaml.bak", "keepBackups: 98\n");
        etc.write("config.d/50-notes.txt", "not yaml at all: [\n");
        etc.write("config.d/60-dir.yaml/inner.yaml", "keepBackups: 97\n");

        let (settings, read) = load(&etc.paths()).unwrap();
        assert_eq!(read, [main, first, second]);
        assert_eq!(settings.keep_backups, 7);
        assert_eq!(settings.retries, 1);
        assert_eq!(settings.timeout, Duration::from_secs(60));
        assert_eq!(settings.certs_dirs, [Path::new("/c")]);
        assert_eq!(
            settings.admission,
            AdmissionSettings {
                enabled: true,
                config_file: Some(PathBuf::from("/etc/adm.yaml")),
            }
        );
        // Untouched keys keep their defaults.
        assert_eq!(settings.concurrency, 8);
    }

    #[test]
    fn dropins_apply_without_a_main_file() {
        let etc = Etc::new();
        let only = etc.write("config.d/10-only.yaml", "digestOnly: true\n");
        let (settings, read) = load(&etc.paths()).unwrap();
        assert_eq!(read, [only]);
        assert!(settings.digest_only);
    }

    #[test]
    fn empty_list_replaces_a_default_list() {
        let (_, result, _etc) = check_text("certsDirs: []\n");
        assert!(result.unwrap().certs_dirs.is_empty());
    }

    #[test]
    fn validation_blames_the_file_that_set_the_value() {
        let etc = Etc::new();
        etc.write("config.yaml", "concurrency: 0\n");
        let bad = etc.write("config.d/10-bad.yaml", "keepBackups: 0\n");
        etc.write("config.d/20-fix.yaml", "concurrency: 4\n");
        let err = load(&etc.paths()).unwrap_err();
        assert_eq!(err.path(), Some(bad.as_path()));
        assert_eq!(
            err.to_string(),
            format!("{}: keepBackups: must be at least 1, got 0", bad.display())
        );
    }

    #[test]
    fn a_bad_dropin_stops_loading() {
        let etc = Etc::new();
        etc.write("config.yaml", "retries: 2\n");
        let bad = etc.write("config.d/10-bad.yaml", "retries: [\n");
        let err = load(&etc.paths()).unwrap_err();
        assert_eq!(err.path(), Some(bad.as_path()));
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let msg =
            check_err("# staticpin\nkeepBackups: 3\nmanifestDirr: /etc/kubernetes/manifests\n");
        let (_, rest) = msg.split_once(": ").unwrap();
        assert!(
            rest.starts_with(
                "line 3 column 1: unknown field `manifestDirr`, expected one of `manifestDir`"
            ),
            "{msg}"
        );
        // The location is not repeated at the end.
        assert!(!rest.contains(" at line"), "{msg}");
        // The internal origin bookkeeping is not a key.
        assert!(!rest.contains("origins"), "{msg}");
    }

    #[test]
    fn unknown_nested_key_names_the_path() {
        let msg = check_err("admission:\n  enable: true\n");
        assert!(
            msg.contains("line 2 column 3: admission: unknown field `enable`"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_names_file_and_line() {
        let msg = check_err("keepBackups: 3\ndigestOnly: yes\n");
        assert!(
            msg.contains(": line 2 column 13: digestOnly: invalid type"),
            "{msg}"
        );

        let msg = check_err("timeout: soon\n");
        assert!(
            msg.contains(": line 1 column 10: timeout: invalid type"),
            "{msg}"
        );

        let msg = check_err("certsDirs: /etc/docker/certs.d\n");
        assert!(
            msg.contains(": line 1 column 12: certsDirs: invalid type"),
            "{msg}"
        );

        let msg = check_err("retries: -1\n");
        assert!(
            msg.contains(": line 1 column 10: retries: invalid type: integer `-1`"),
            "{msg}"
        );

        let msg = check_err("- manifestDir: /x\n");
        assert!(
            msg.contains("expected a mapping of staticpin settings"),
            "{msg}"
        );
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let msg = check_err("keepBackups: 3\ncertsDirs: [/a, /b\n");
        assert!(msg.contains(": line "), "{msg}");
        let msg = check_err("keepBackups: 1\n\tretries: 2\n");
        assert!(msg.contains(": line 2 column "), "{msg}");
    }

    #[test]
    fn duplicate_key_is_an_error() {
        // serde reports duplicates at the end of the mapping, so the location
        // is the mapping's start; the key name is what makes it findable.
        let msg = check_err("retries: 1\nretries: 2\n");
        assert!(msg.contains("duplicate field `retries`"), "{msg}");
    }

    #[test]
    fn each_validation_failure() {
        let cases: &[(&str, &str)] = &[
            ("keepBackups: 0", "keepBackups: must be at least 1"),
            (
                "concurrency: 0",
                "concurrency: must be between 1 and 256, got 0",
            ),
            (
                "concurrency: 257",
                "concurrency: must be between 1 and 256, got 257",
            ),
            (
                "timeout: 0",
                "timeout: must be a positive number of seconds",
            ),
            (
                "timeout: -5",
                "timeout: must be a positive number of seconds",
            ),
            (
                "timeout: .nan",
                "timeout: must be a positive number of seconds",
            ),
            (
                "timeout: .inf",
                "timeout: must be a positive number of seconds",
            ),
            (
                "connectTimeout: 0.0",
                "connectTimeout: must be a positive number of seconds",
            ),
            ("manifestDir: ''", "manifestDir: must not be empty"),
            (
                "manifestDir: manifests",
                "manifestDir: must be an absolute path",
            ),
            ("backupDir: ''", "backupDir: must not be empty"),
            ("dockerConfig: ''", "dockerConfig: must not be empty"),
            (
                "kubeletRootDir: relative/kubelet",
                "kubeletRootDir: must be an absolute path",
            ),
            ("certsDirs: [/ok, '']", "certsDirs[1]: must not be empty"),
            (
                "insecureRegistries: ['']",
                "insecureRegistries[0]: \"\" is empty",
            ),
            (
                "insecureRegistries: [http://reg:5000]",
                "insecureRegistries[0]: \"http://reg:5000\" has a scheme",
            ),
            ("insecureRegistries: [reg.local/library]", "has a path"),
            (
                "insecureRegistries: [reg.local, 'reg:port']",
                "insecureRegistries[1]: \"reg:port\" has an invalid port",
            ),
            ("insecureRegistries: ['reg:0']", "has an invalid port"),
            ("insecureRegistries: ['reg:65536']", "has an invalid port"),
            ("insecureRegistries: ['reg:']", "has an invalid port"),
            ("insecureRegistries: ['a:1:2']", "has an invalid port"),
            (
                "insecureRegistries: [under_score.local]",
                "is not a valid host name",
            ),
            (
                "insecureRegistries: ['-bad.local']",
                "is not a valid host name",
            ),
            (
                "insecureRegistries: ['reg..local']",
                "is not a valid host name",
            ),
            (
                "insecureRegistries: ['has space']",
                "is not a valid host name",
            ),
            (
                "insecureRegistries: ['[::1']",
                "has an unclosed IPv6 bracket",
            ),
            (
                "insecureRegistries: ['[nope]:5000']",
                "is not a valid IPv6 address",
            ),
            (
                "insecureRegistries: ['[::1]5000']",
                "has text after the IPv6 address",
            ),
            (
                "admission:\n  configFile: ''",
                "admission.configFile: must not be empty",
            ),
            (
                "backupDir: /etc/kubernetes/manifests/",
                "backupDir: must not be manifestDir",
            ),
            (
                "manifestDir: /x\nbackupDir: /x",
                "backupDir: must not be manifestDir (/x)",
            ),
        ];
        for (text, want) in cases {
            let msg = check_err(&format!("{text}\n"));
            assert!(msg.contains(want), "{text:?}: got {msg:?}, want {want:?}");
        }
    }

    #[test]
    fn accepted_registry_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "reg.example.com",
            "10.0.0.1:443",
            "[::1]",
            "[fd00::1]:5000",
            "Reg-1.local",
        ] {
            assert_eq!(check_host_port(h), Ok(()), "{h}");
        }
    }

    #[test]
    fn validation_without_origin_names_the_key() {
        let fragment = Fragment {
            keep_backups: Some(0),
            ..Fragment::default()
        };
        let err = Settings::from_fragment(fragment).unwrap_err();
        assert_eq!(err.path(), None);
        assert_eq!(err.to_string(), "keepBackups: must be at least 1, got 0");
    }

    #[test]
    fn every_key_parses() {
        let (_, result, _etc) = check_text(
            "manifestDir: /m\nbackupDir: /b\nkeepBackups: 1\nlockFile: /l\ndockerConfig: /root/.docker/config.json\n\
             kubeletRootDir: /k\ncertsDirs: [/c]\ninsecureRegistries: ['reg.local:5000', '[::1]:5000']\n\
             timeout: 2.5\nconnectTimeout: 1\ndeadline: 90\nretries: 0\nconcurrency: 256\ndigestOnly: true\n\
             admission:\n  enabled: false\n  configFile: /a.yaml\n",
        );
        let s = result.unwrap();
        assert_eq!(
            s,
            Settings {
                manifest_dir: "/m".into(),
                backup_dir: "/b".into(),
                keep_backups: 1,
                lock_file: "/l".into(),
                docker_config: Some("/root/.docker/config.json".into()),
                kubelet_root_dir: "/k".into(),
                certs_dirs: vec!["/c".into()],
                insecure_registries: vec!["reg.local:5000".into(), "[::1]:5000".into()],
                timeout: Duration::from_millis(2500),
                connect_timeout: Duration::from_secs(1),
                deadline: Duration::from_secs(90),
                retries: 0,
                concurrency: 256,
                digest_only: true,
                admission: AdmissionSettings {
                    enabled: false,
                    config_file: Some("/a.yaml".into()),
                },
            }
        );
    }

    #[test]
    fn empty_and_comment_only_files_are_empty_fragments() {
        for text in ["", "\n", "# nothing here\n# at all\n", "---\n", "~\n"] {
            let (_, result, _etc) = check_text(text);
            assert_eq!(result.unwrap(), Settings::default(), "{text:?}");
        }
    }

    #[test]
    fn a_null_value_means_not_set() {
        let etc = Etc::new();
        etc.write("config.yaml", "retries: 5\n");
        etc.write("config.d/10-x.yaml", "retries:\n");
        let (settings, _) = load(&etc.paths()).unwrap();
        assert_eq!(settings.retries, 5);
    }

    #[test]
    fn check_of_a_missing_file_names_it() {
        let etc = Etc::new();
        let missing = etc.dir.path().join("nope.yaml");
        let err = check(&missing).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot read: ", missing.display())),
            "{err}"
        );
    }

    #[test]
    fn unreadable_main_file_is_an_error_for_load() {
        // A directory where the file should be: not "missing", so not defaults.
        let etc = Etc::new();
        fs::create_dir(etc.paths().main).unwrap();
        let err = load(&etc.paths()).unwrap_err();
        assert_eq!(err.path(), Some(etc.paths().main.as_path()));
    }

    #[test]
    fn dropin_dir_that_is_a_file_is_an_error() {
        let etc = Etc::new();
        etc.write("config.d", "oops\n");
        let err = load(&etc.paths()).unwrap_err();
        assert!(matches!(err, ConfigError::ReadDir { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with(&etc.paths().dropin_dir.display().to_string()));
    }

    #[test]
    fn origins_follow_the_last_writer() {
        let a = Fragment {
            retries: Some(1),
            keep_backups: Some(1),
            origins: [
                ("retries", PathBuf::from("/a")),
                ("keepBackups", PathBuf::from("/a")),
            ]
            .into(),
            ..Fragment::default()
        };
        let b = Fragment {
            retries: Some(2),
            origins: [("retries", PathBuf::from("/b"))].into(),
            ..Fragment::default()
        };
        let m = a.merge(b);
        assert_eq!(m.retries, Some(2));
        assert_eq!(m.keep_backups, Some(1));
        assert_eq!(m.origins["retries"], Path::new("/b"));
        assert_eq!(m.origins["keepBackups"], Path::new("/a"));
    }

    #[test]
    fn shipped_example_passes_check() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml"));
        let settings = check(path).unwrap_or_else(|e| panic!("{e}"));
        // The example documents the defaults, so it must not change them.
        assert_eq!(settings, Settings::default());
    }
}
