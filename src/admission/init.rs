//! `staticpin admission init`: render the ImagePolicyWebhook admission config
//! and its webhook kubeconfig into one directory, with copies of the CA,
//! client certificate and key, so that a single hostPath mount of that
//! directory gives kube-apiserver everything it reads.
//!
//! Inputs are checked before anything is written (an https URL, parseable
//! PEM, a key that matches its certificate, a directory outside kubelet's
//! manifest directory), existing files are only replaced with `force`, and
//! the result must pass [`preflight`] with the directory as the only mount.
//! Files are written certificates first and the admission config last, so an
//! interrupted run never leaves a config that points at missing files.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::preflight::{
    self, has_failures, preflight, Admission, DurationField, Finding, KeyMatch, Verdict, ALLOW_TTL,
    DENY_TTL, RETRY_BACKOFF,
};
use crate::fsutil::{self, FsError};

/// Where the rendered files go by default: outside kubelet's manifest
/// directory, and a directory of its own to mount into kube-apiserver.
pub const DEFAULT_DIR: &str = "/etc/kubernetes/admission";
/// kubelet's static pod directory, which `--dir` must stay out of.
pub const DEFAULT_MANIFEST_DIR: &str = crate::config::DEFAULT_MANIFEST_DIR;
/// The CKS defaults: cache answers 50 s, retry after 500 ms.
pub const DEFAULT_ALLOW_TTL: i64 = 50;
/// Seconds kube-apiserver caches a denial.
pub const DEFAULT_DENY_TTL: i64 = 50;
/// Milliseconds before kube-apiserver's first retry of a failed call.
pub const DEFAULT_RETRY_BACKOFF_MS: i64 = 500;
/// The admission config, the file for `--admission-control-config-file`.
/// Written last.
pub const CONFIG_FILE: &str = "admission_config.yaml";
/// The webhook kubeconfig the admission config's `kubeConfigFile` names.
pub const KUBECONFIG_FILE: &str = "kubeconf";
/// Copy of the CA bundle that verifies the webhook backend.
pub const CA_FILE: &str = "webhook-ca.crt";
/// Copy of the client certificate kube-apiserver presents to the backend.
pub const CLIENT_CERT_FILE: &str = "webhook-client.crt";
/// Copy of that certificate's private key, written mode 0600.
pub const CLIENT_KEY_FILE: &str = "webhook-client.key";

/// Names inside the rendered kubeconfig.
const CLUSTER: &str = "image-policy-webhook";
const USER: &str = "kube-apiserver";

/// What `admission init` renders and where; [`InitOptions::new`] fills in
/// the CKS defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// Where kube-apiserver POSTs ImageReviews, path included.
    pub webhook_url: String,
    /// PEM CA bundle that verifies the webhook backend's serving certificate.
    pub webhook_ca: PathBuf,
    /// PEM client certificate (chain) kube-apiserver presents to the backend.
    pub client_cert: PathBuf,
    /// Its PEM private key.
    pub client_key: PathBuf,
    /// Seconds; see [`preflight`] for the ranges and sentinels.
    pub allow_ttl: i64,
    /// Seconds kube-apiserver caches a denial; same ranges as `allow_ttl`.
    pub deny_ttl: i64,
    /// Milliseconds.
    pub retry_backoff: i64,
    /// `defaultAllow`: admit every image when the backend cannot be reached
    /// (fail open). Off by default: fail closed.
    pub default_allow: bool,
    /// Where the files go; also the directory to mount into kube-apiserver.
    pub dir: PathBuf,
    /// kubelet's static pod directory, which `dir` must stay out of.
    pub manifest_dir: PathBuf,
    /// Replace existing files whose contents differ.
    pub force: bool,
}

impl InitOptions {
    /// The CKS defaults: 50 s TTLs, 500 ms backoff, fail closed, in
    /// /etc/kubernetes/admission.
    pub fn new(
        webhook_url: impl Into<String>,
        webhook_ca: impl Into<PathBuf>,
        client_cert: impl Into<PathBuf>,
        client_key: impl Into<PathBuf>,
    ) -> InitOptions {
        InitOptions {
            webhook_url: webhook_url.into(),
            webhook_ca: webhook_ca.into(),
            client_cert: client_cert.into(),
            client_key: client_key.into(),
            allow_ttl: DEFAULT_ALLOW_TTL,
            deny_ttl: DEFAULT_DENY_TTL,
            retry_backoff: DEFAULT_RETRY_BACKOFF_MS,
            default_allow: false,
            dir: PathBuf::from(DEFAULT_DIR),
            manifest_dir: PathBuf::from(DEFAULT_MANIFEST_DIR),
            force: false,
        }
    }
}

/// What writing one file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    /// The file did not exist.
    Created,
    /// The file existed with other bytes or mode (only with `force`).
    Replaced,
    /// Already held exactly these bytes and mode.
    Unchanged,
}

impl fmt::Display for FileOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileOutcome::Created => "created",
            FileOutcome::Replaced => "replaced",
            FileOutcome::Unchanged => "unchanged",
        })
    }
}

/// What `admission init` wrote, and the preflight of the result.
#[derive(Debug)]
pub struct InitReport {
    /// Absolute: the directory to mount into kube-apiserver.
    pub dir: PathBuf,
    /// The file for `--admission-control-config-file`.
    pub config_file: PathBuf,
    /// Every file, in the order written.
    pub files: Vec<(PathBuf, FileOutcome)>,
    /// What preflight learnt from the written files, for wiring them into
    /// kube-apiserver.yaml.
    pub admission: Admission,
    /// The preflight run on the written files.
    pub findings: Vec<Finding>,
}

/// Why `admission init` wrote nothing, or wrote files that must not be used.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("--webhook-url must be an https:// URL with a host (kube-apiserver calls the webhook over TLS only), got {url:?}")]
    /// The webhook URL is not https with a host.
    NotHttps {
        /// The URL as given.
        url: String,
    },
    #[error("--{flag} {reason}")]
    /// A TTL or backoff outside the range kube-apiserver accepts.
    Duration {
        /// The flag, without its leading `--`.
        flag: &'static str,
        /// The accepted range and the value given.
        reason: String,
    },
    #[error(
        "--dir {} is {} the manifest directory {}: kubelet would try to run every file in it as a static pod; use a directory outside it, such as {DEFAULT_DIR}",
        .dir.display(),
        if .dir == .manifest_dir { "itself" } else { "inside" },
        .manifest_dir.display()
    )]
    /// `--dir` (or another output) is kubelet's manifest directory or
    /// inside it.
    InManifestDir {
        /// The offending directory, normalised.
        dir: PathBuf,
        /// kubelet's manifest directory, normalised.
        manifest_dir: PathBuf,
    },
    /// `/` or a system directory: wiring would refuse to mount it.
    #[error("--dir {0}")]
    NotDedicated(String),
    #[error("{}: {reason}", .path.display())]
    /// An input file that cannot be read or does not hold the PEM it should.
    Input {
        /// The input file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    #[error("{}: the key does not match the certificate {}", .key.display(), .cert.display())]
    /// The client key does not belong to the client certificate.
    KeyMismatch {
        /// The client certificate.
        cert: PathBuf,
        /// The key that does not match it.
        key: PathBuf,
    },
    #[error("refusing to overwrite {}: the contents differ; pass --force to replace them", list(.paths))]
    /// Files already exist with other contents and `force` is off; nothing
    /// was written.
    Exists {
        /// Every conflicting file.
        paths: Vec<PathBuf>,
    },
    #[error("cannot create directory {}: {source}", .dir.display())]
    /// An output directory could not be created.
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing a file (or syncing its directory) failed.
    #[error(transparent)]
    Write(#[from] FsError),
    /// The files were written but do not pass preflight; kube-apiserver must
    /// not be pointed at them. The report holds the findings.
    #[error("the files written to {} fail preflight", .0.dir.display())]
    Preflight(Box<InitReport>),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One file to write.
#[derive(Clone)]
struct Planned {
    path: PathBuf,
    bytes: Vec<u8>,
    mode: u32,
}

/// Validates the inputs, writes the files, and runs preflight on them.
pub fn init(opts: &InitOptions) -> Result<InitReport, InitError> {
    let (dir, inputs) = check_inputs(opts)?;
    let plan = planned_files(opts, &dir, inputs, &header(opts, &dir)).to_vec();
    write_and_check(opts, &dir, plan, &[])
}

/// Writes `plan` (creating `dir` and `extra_dirs`) and runs preflight.
fn write_and_check(
    opts: &InitOptions,
    dir: &Path,
    plan: Vec<Planned>,
    extra_dirs: &[PathBuf],
) -> Result<InitReport, InitError> {
    let dir = dir.to_path_buf();
    let config_file = dir.join(CONFIG_FILE);
    // Decide every file before writing any, so a refusal writes nothing.
    let outcomes = decide(&plan, opts.force)?;
    create_dir(&dir)?;
    for d in extra_dirs {
        create_dir(d)?;
    }
    let mut files = Vec::with_capacity(plan.len());
    for (p, outcome) in plan.iter().zip(outcomes) {
        match outcome {
            FileOutcome::Created => fsutil::write_new_file_atomically(&p.path, &p.bytes, p.mode)?,
            // Our own file: replace it whole, with our mode, rather than
            // keep a looser mode an old copy of the key may have had.
            FileOutcome::Replaced => fsutil::write_file_atomically(&p.path, &p.bytes, p.mode)?,
            FileOutcome::Unchanged => {}
        }
        files.push((p.path.clone(), outcome));
    }

    let (admission, findings) = preflight(&config_file, std::slice::from_ref(&dir));
    let report = InitReport {
        dir,
        config_file,
        files,
        admission,
        findings,
    };
    if has_failures(&report.findings) {
        return Err(InitError::Preflight(Box::new(report)));
    }
    Ok(report)
}

/// The PEM inputs, read and checked: CA bundle, client certificate, key.
struct Inputs {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// Everything that can be checked before a file is written; returns the
/// normalised directory and the inputs.
fn check_inputs(opts: &InitOptions) -> Result<(PathBuf, Inputs), InitError> {
    let dir = check_settings(opts)?;
    let ca = read_input(&opts.webhook_ca)?;
    preflight::parse_ca(&ca).map_err(|reason| input_error(&opts.webhook_ca, reason))?;
    let cert = read_input(&opts.client_cert)?;
    let chain = preflight::parse_cert_chain(&cert)
        .map_err(|reason| input_error(&opts.client_cert, reason))?;
    let key = read_input(&opts.client_key)?;
    let parsed_key = preflight::parse_private_key(&key)
        .map_err(|reason| input_error(&opts.client_key, reason))?;
    let matched = match chain.first() {
        Some(leaf) => preflight::key_matches_cert(leaf, parsed_key),
        None => Err("holds no certificate".to_string()),
    };
    match matched {
        Ok(KeyMatch::Yes) | Ok(KeyMatch::Unknown) => {}
        Ok(KeyMatch::No) => {
            return Err(InitError::KeyMismatch {
                cert: opts.client_cert.clone(),
                key: opts.client_key.clone(),
            })
        }
        Err(reason) => return Err(input_error(&opts.client_key, reason)),
    }
    Ok((dir, Inputs { ca, cert, key }))
}

/// The URL, durations and directory, checked before anything is read or written.
fn check_settings(opts: &InitOptions) -> Result<PathBuf, InitError> {
    if preflight::https_host(&opts.webhook_url).is_none() {
        return Err(InitError::NotHttps {
            url: opts.webhook_url.clone(),
        });
    }
    for (flag, field, value) in [
        ("allow-ttl", &ALLOW_TTL, opts.allow_ttl),
        ("deny-ttl", &DENY_TTL, opts.deny_ttl),
        ("retry-backoff", &RETRY_BACKOFF, opts.retry_backoff),
    ] {
        check_duration(flag, field, value)?;
    }
    let dir = preflight::normalize(&opts.dir);
    outside_manifest_dir(&dir, opts)?;
    crate::admission::wiring::dedicated_dir(&dir).map_err(InitError::NotDedicated)?;
    Ok(dir)
}

fn outside_manifest_dir(dir: &Path, opts: &InitOptions) -> Result<(), InitError> {
    let manifest_dir = preflight::normalize(&opts.manifest_dir);
    // Compare with symlinks resolved too: /etc/kubernetes/manifests may be a
    // link, and --dir may reach it through one.
    if dir.starts_with(&manifest_dir) || real(dir).starts_with(real(&manifest_dir)) {
        return Err(InitError::InManifestDir {
            dir: dir.to_path_buf(),
            manifest_dir,
        });
    }
    Ok(())
}

/// The files to write, dependencies first and the admission config last
/// (see the module doc).
fn planned_files(opts: &InitOptions, dir: &Path, inputs: Inputs, header: &str) -> [Planned; 5] {
    let kubeconfig = dir.join(KUBECONFIG_FILE);
    let ca_file = dir.join(CA_FILE);
    let cert_file = dir.join(CLIENT_CERT_FILE);
    let key_file = dir.join(CLIENT_KEY_FILE);
    let kubeconfig_text =
        render_kubeconfig(header, &opts.webhook_url, &ca_file, &cert_file, &key_file);
    let config_text = render_admission_config(header, opts, &kubeconfig);
    let file = |path: PathBuf, bytes: Vec<u8>, mode: u32| Planned { path, bytes, mode };
    [
        file(ca_file.clone(), inputs.ca, 0o644),
        file(cert_file.clone(), inputs.cert, 0o644),
        file(key_file.clone(), inputs.key, 0o600),
        file(kubeconfig, kubeconfig_text.into_bytes(), 0o644),
        file(dir.join(CONFIG_FILE), config_text.into_bytes(), 0o644),
    ]
}

/// What writing each file would do; refuses to replace a file that
/// differs unless `force`.
fn decide(plan: &[Planned], force: bool) -> Result<Vec<FileOutcome>, InitError> {
    let mut outcomes = Vec::with_capacity(plan.len());
    let mut conflicts = Vec::new();
    for p in plan {
        let outcome = match fs::symlink_metadata(&p.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => FileOutcome::Created,
            Err(e) => return Err(FsError::io(fsutil::Step::Stat, &p.path, e).into()),
            Ok(meta)
                if meta.is_file()
                    && meta.mode() & 0o7777 == p.mode
                    && fs::read(&p.path).is_ok_and(|b| b == p.bytes) =>
            {
                FileOutcome::Unchanged
            }
            Ok(_) if force => FileOutcome::Replaced,
            Ok(_) => {
                conflicts.push(p.path.clone());
                FileOutcome::Replaced
            }
        };
        outcomes.push(outcome);
    }
    if !conflicts.is_empty() {
        return Err(InitError::Exists { paths: conflicts });
    }
    Ok(outcomes)
}

fn check_duration(flag: &'static str, field: &DurationField, value: i64) -> Result<(), InitError> {
    match field.check(value) {
        Verdict::Pass(_) | Verdict::Warn(_) => Ok(()),
        Verdict::Fail(_) => Err(InitError::Duration {
            flag,
            reason: format!("{}, got {value}", field.expected()),
        }),
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>, InitError> {
    fs::read(path).map_err(|e| input_error(path, format!("cannot read: {e}")))
}

fn input_error(path: &Path, reason: String) -> InitError {
    InitError::Input {
        path: path.to_path_buf(),
        reason,
    }
}

/// `p` with symlinks resolved as far as it exists.
fn real(p: &Path) -> PathBuf {
    let mut existing = p;
    let mut rest = Vec::new();
    loop {
        if let Ok(mut out) = fs::canonicalize(existing) {
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), InitError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| InitError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    // Make the new directory entry durable before files appear in it.
    if let Some(parent) = dir.parent() {
        fsutil::fsync_dir(parent)?;
    }
    Ok(())
}

/// The comment block at the top of both rendered files.
fn header(opts: &InitOptions, dir: &Path) -> String {
    let abs = |p: &Path| shell_word(&preflight::normalize(p).display().to_string());
    let mut args = vec![
        format!("--webhook-url {}", shell_word(&opts.webhook_url)),
        format!("--webhook-ca {}", abs(&opts.webhook_ca)),
        format!("--client-cert {}", abs(&opts.client_cert)),
        format!("--client-key {}", abs(&opts.client_key)),
        format!(
            "--allow-ttl={} --deny-ttl={} --retry-backoff={}",
            opts.allow_ttl, opts.deny_ttl, opts.retry_backoff
        ),
    ];
    if opts.default_allow {
        args.push("--default-allow".to_string());
    }
    args.push(format!("--dir {}", abs(dir)));
    header_with(&args)
}

/// The header for a command with these arguments.
fn header_with(args: &[String]) -> String {
    let command = args
        .iter()
        .map(|a| format!(" \\\n#     {a}"))
        .collect::<String>();
    format!(
        "# Generated by `staticpin admission init`. kube-apiserver reads this file only\n\
         # at start-up, so a change takes effect when kube-apiserver restarts.\n\
         # Hand edits are overwritten when the files are regenerated with:\n\
         #   staticpin admission init --force{command}\n"
    )
}

/// The AdmissionConfiguration with the ImagePolicyWebhook settings embedded.
pub fn render_admission_config(header: &str, opts: &InitOptions, kubeconfig: &Path) -> String {
    let fails = if opts.default_allow {
        "true: if the backend cannot be reached, every image is admitted (fail open)"
    } else {
        "false: if the backend cannot be reached, every pod is rejected (fail closed)"
    };
    format!(
        "{header}\
apiVersion: {api_version}
kind: {kind}
plugins:
- name: {plugin}
  configuration:
    imagePolicy:
      kubeConfigFile: {kubeconfig}
      # Seconds to cache an allowed / a denied answer (1-1800; 0 default, -1 off).
      allowTTL: {allow}
      denyTTL: {deny}
      # Milliseconds before the first retry (1-300000; 0 default, -1 off).
      retryBackoff: {backoff}
      # {fails}
      defaultAllow: {default_allow}
",
        api_version = preflight::API_VERSION,
        kind = preflight::KIND,
        plugin = preflight::PLUGIN_NAME,
        kubeconfig = yaml_scalar(&kubeconfig.display().to_string()),
        allow = opts.allow_ttl,
        deny = opts.deny_ttl,
        backoff = opts.retry_backoff,
        default_allow = opts.default_allow,
    )
}

/// A kubeconfig with one cluster (the backend), one user (kube-apiserver's
/// client certificate) and the context joining them.
pub fn render_kubeconfig(header: &str, url: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    let s = |p: &Path| yaml_scalar(&p.display().to_string());
    format!(
        "{header}\
apiVersion: v1
kind: Config
clusters:
- name: {CLUSTER}
  cluster:
    # CA that signed the webhook backend's serving certificate.
    certificate-authority: {ca}
    # kube-apiserver POSTs ImageReviews to exactly this URL.
    server: {url}
users:
- name: {USER}
  user:
    # What kube-apiserver presents to the backend.
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: {CLUSTER}
  context:
    cluster: {CLUSTER}
    user: {USER}
current-context: {CLUSTER}
preferences: {{}}
",
        ca = s(ca),
        url = yaml_scalar(url),
        cert = s(cert),
        key = s(key),
    )
}

/// A plain YAML scalar when that cannot be misread, else a double-quoted one
/// (JSON string syntax is valid YAML).
fn yaml_scalar(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-:+=".contains(c);
    let plain = s.starts_with(|c: char| c == '/' || c.is_ascii_alphabetic())
        && s.chars().all(safe)
        && !s.ends_with(':')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::Value::from(s).to_string()
    }
}

/// A word a POSIX shell reads back as `s`.
fn shell_word(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Where `--local-webhook` puts serve's end.
pub const DEFAULT_SERVE_DIR: &str = "/etc/staticpin/serve";
/// The drop-in that points `staticpin serve` at its end.
pub const DEFAULT_LOCAL_DROPIN: &str = "/etc/staticpin/config.d/50-local-webhook.yaml";
/// The decision port kube-apiserver calls on its own loopback.
pub const DEFAULT_LOCAL_PORT: u16 = 8443;
/// serve's generated serving certificate, in the serve directory.
pub const SERVE_CERT_FILE: &str = "tls.crt";
/// Its private key, mode 0600.
pub const SERVE_KEY_FILE: &str = "tls.key";
/// The CA serve verifies kube-apiserver's client certificate against.
pub const SERVE_CLIENT_CA_FILE: &str = "client-ca.crt";

/// `admission init --local-webhook`: both ends of the webhook on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOptions {
    /// The loopback port serve listens on and kube-apiserver calls.
    pub port: u16,
    /// serve's certificate, key and client CA.
    pub serve_dir: PathBuf,
    /// The `serve:` drop-in.
    pub dropin: PathBuf,
}

impl LocalOptions {
    /// The URL kube-apiserver calls.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/imagepolicy", self.port)
    }
}

/// Generates a matching certificate pair and writes both ends: the admission
/// config, kubeconfig and kube-apiserver's client credentials in `opts.dir`;
/// serve's certificate, key and client CA in `local.serve_dir`; and the
/// `serve:` drop-in. When every file is already there and the two ends match,
/// nothing is regenerated: a second run changes nothing.
pub fn init_local(opts: &InitOptions, local: &LocalOptions) -> Result<InitReport, InitError> {
    let mut opts = opts.clone();
    opts.webhook_url = local.url();
    let dir = check_settings(&opts)?;
    let serve_dir = preflight::normalize(&local.serve_dir);
    let dropin = preflight::normalize(&local.dropin);
    outside_manifest_dir(&serve_dir, &opts)?;
    outside_manifest_dir(&dropin, &opts)?;
    let dropin_dir = dropin.parent().map(Path::to_path_buf).unwrap_or_default();
    let serve_cert = serve_dir.join(SERVE_CERT_FILE);
    let serve_key = serve_dir.join(SERVE_KEY_FILE);
    let serve_ca = serve_dir.join(SERVE_CLIENT_CA_FILE);
    let mut header = local_header(&opts, local, &dir);

    if !opts.force {
        if let Some(report) =
            already_matching(&dir, local, [&serve_cert, &serve_key, &serve_ca, &dropin])
        {
            return report;
        }
    }
    let pki = crate::admission::local::generate().map_err(|reason| InitError::Input {
        path: serve_dir.clone(),
        reason,
    })?;
    let inputs = Inputs {
        ca: pki.serving_ca.clone().into_bytes(),
        cert: pki.client_cert.clone().into_bytes(),
        key: pki.client_key.clone().into_bytes(),
    };
    let dropin_header = header.replacen(
        "kube-apiserver reads this file only\n# at start-up, so a change takes effect when kube-apiserver restarts.",
        "staticpin serve reads this file at\n# start and on reload (systemctl reload staticpin-serve, i.e. SIGHUP).",
        1,
    );
    let dropin_text = format!(
        "{dropin_header}serve:\n  listen: 127.0.0.1:{port}\n  tlsCert: {cert}\n  tlsKey: {key}\n  clientCA: {ca}\n",
        port = local.port,
        cert = yaml_scalar(&serve_cert.display().to_string()),
        key = yaml_scalar(&serve_key.display().to_string()),
        ca = yaml_scalar(&serve_ca.display().to_string()),
    );
    header.push_str(&format!(
        "# serve's end: {} (serve.* in {}).\n",
        serve_dir.display(),
        dropin.display()
    ));
    let file = |path: PathBuf, bytes: String, mode: u32| Planned {
        path,
        bytes: bytes.into_bytes(),
        mode,
    };
    let mut plan = vec![
        file(serve_cert, pki.serve_cert, 0o644),
        file(serve_key, pki.serve_key, 0o600),
        file(serve_ca, pki.client_ca, 0o644),
        file(dropin, dropin_text, 0o644),
    ];
    plan.extend(planned_files(&opts, &dir, inputs, &header));
    write_and_check(&opts, &dir, plan, &[serve_dir, dropin_dir])
}

/// The report for a second run, when every file exists and the ends match.
fn already_matching(
    dir: &Path,
    local: &LocalOptions,
    serve_files: [&PathBuf; 4],
) -> Option<Result<InitReport, InitError>> {
    let admission_files = [
        CA_FILE,
        CLIENT_CERT_FILE,
        CLIENT_KEY_FILE,
        KUBECONFIG_FILE,
        CONFIG_FILE,
    ]
    .map(|f| dir.join(f));
    let all: Vec<PathBuf> = serve_files
        .iter()
        .map(|p| p.to_path_buf())
        .chain(admission_files)
        .collect();
    if !all.iter().all(|p| p.is_file()) {
        return None;
    }
    let client = preflight::client_end(&dir.join(KUBECONFIG_FILE)).ok()?;
    if client.server != local.url() {
        return None;
    }
    let serve = crate::admission::local::ServeEnd {
        cert_pem: fs::read(serve_files[0]).ok()?,
        client_ca_pem: fs::read(serve_files[2]).ok()?,
    };
    let ends = crate::admission::local::check_ends(&client, &serve);
    if ends.iter().any(|c| c.level != preflight::Level::Pass) {
        return None;
    }
    let files = all
        .into_iter()
        .map(|p| (p, FileOutcome::Unchanged))
        .collect();
    let config_file = dir.join(CONFIG_FILE);
    let (admission, findings) = preflight(&config_file, &[dir.to_path_buf()]);
    let report = InitReport {
        dir: dir.to_path_buf(),
        config_file,
        files,
        admission,
        findings,
    };
    Some(if has_failures(&report.findings) {
        Err(InitError::Preflight(Box::new(report)))
    } else {
        Ok(report)
    })
}

fn local_header(opts: &InitOptions, local: &LocalOptions, dir: &Path) -> String {
    let abs = |p: &Path| shell_word(&preflight::normalize(p).display().to_string());
    let mut args = vec![
        format!("--local-webhook --port {}", local.port),
        format!(
            "--allow-ttl={} --deny-ttl={} --retry-backoff={}",
            opts.allow_ttl, opts.deny_ttl, opts.retry_backoff
        ),
    ];
    if opts.default_allow {
        args.push("--default-allow".to_string());
    }
    args.push(format!("--dir {}", abs(dir)));
    args.push(format!("--serve-dir {}", abs(&local.serve_dir)));
    args.push(format!("--serve-config {}", abs(&local.dropin)));
    header_with(&args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_that_yaml_would_misread_are_quoted() {
        assert_eq!(
            yaml_scalar("/etc/kubernetes/admission/kubeconf"),
            "/etc/kubernetes/admission/kubeconf"
        );
        assert_eq!(
            yaml_scalar("https://h:1234/check-image"),
            "https://h:1234/check-image"
        );
        assert_eq!(yaml_scalar("https://h/x?a=b&c"), "\"https://h/x?a=b&c\"");
        assert_eq!(yaml_scalar("/dir with space/k"), "\"/dir with space/k\"");
        assert_eq!(yaml_scalar("yes"), "\"yes\"");
        assert_eq!(yaml_scalar("/a #b"), "\"/a #b\"");
        for s in ["https://h/x?a=b&c", "/dir with space/k", "/a #b", "/x\"y'"] {
            let v: String = serde_norway::from_str(&yaml_scalar(s)).unwrap();
            assert_eq!(v, s);
        }
    }

    #[test]
    fn shell_words_round_trip_through_sh() {
        for s in ["/etc/x", "https://h/x?a=b&c", "it's", "a b"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_word(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }

    #[test]
    fn rendered_files_parse_with_the_inputs() {
        let mut opts = InitOptions::new("https://h:1/p", "/src/ca", "/src/c", "/src/k");
        opts.default_allow = true;
        opts.allow_ttl = -1;
        let dir = Path::new("/etc/kubernetes/admission");
        let h = header(&opts, dir);
        assert!(h.lines().all(|l| l.starts_with('#')), "{h}");
        assert!(h.contains("--default-allow"), "{h}");
        let cfg = render_admission_config(&h, &opts, &dir.join("kubeconf"));
        let v: serde_norway::Value = serde_norway::from_str(&cfg).unwrap();
        let ip = &v["plugins"][0]["configuration"]["imagePolicy"];
        assert_eq!(
            ip["kubeConfigFile"].as_str(),
            Some("/etc/kubernetes/admission/kubeconf")
        );
        assert_eq!(ip["allowTTL"].as_i64(), Some(-1));
        assert_eq!(ip["defaultAllow"].as_bool(), Some(true));
        let kc = render_kubeconfig(
            &h,
            "https://h:1/p",
            &dir.join("a"),
            &dir.join("b"),
            &dir.join("c"),
        );
        let v: serde_norway::Value = serde_norway::from_str(&kc).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://h:1/p")
        );
        assert_eq!(v["current-context"].as_str(), Some(CLUSTER));
    }
}
