//! Registry credentials, found and matched exactly as kubelet does.
//!
//! Static pods cannot carry imagePullSecrets, so the runtime pulls them with
//! the node-wide docker config that kubelet reads (`pkg/credentialprovider`).
//! staticpin must authenticate with the same file and the same matching rules,
//! or it would pin images the node cannot pull (or fail where the node works).
//! Secrets live in [`Secret`], whose `Debug` is redacted and which has no
//! `Display`, so they cannot leak through formatting by accident.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value so it can only be read through [`Secret::expose`].
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value itself, only to build requests (auth headers, cache keys);
    /// never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A username and password for a registry, from an `auths` entry (its
/// `auth` field decoded, or `username`/`password`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The user name; not secret, may be logged.
    pub username: String,
    /// The password or token; redacted in `Debug`.
    pub password: Secret,
}

/// Where a docker config was found, or why none was.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A docker config exists but cannot be read.
    #[error("cannot read docker config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A docker config is not JSON kubelet would accept; the reason never
    /// includes a secret.
    #[error("cannot parse docker config {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        reason: String,
    },
}

/// kubelet's working directory under systemd. kubelet searches its cwd, so
/// staticpin searches this one and never the caller's: `sudo staticpin pin`
/// run from a directory another user controls must not read their file.
const KUBELET_CWD: &str = "/";

/// kubelet's search order: every `config.json` location first, then every
/// `.dockercfg` location. `root_dir` is kubelet's `--root-dir`.
pub fn search_paths(root_dir: &Path, home: Option<&Path>) -> Vec<PathBuf> {
    let cwd = Path::new(KUBELET_CWD);
    let mut json = vec![root_dir.join("config.json"), cwd.join("config.json")];
    let mut legacy = vec![root_dir.join(".dockercfg"), cwd.join(".dockercfg")];
    if let Some(home) = home {
        json.push(home.join(".docker").join("config.json"));
        legacy.push(home.join(".dockercfg"));
    }
    json.push(PathBuf::from("/.docker/config.json"));
    legacy.push(PathBuf::from("/.dockercfg"));
    json.extend(legacy);
    json
}

/// The node's keyring: the first search path that reads and parses wins;
/// unreadable or unparsable files are skipped, as kubelet does.
pub fn discover(paths: &[PathBuf]) -> (Keyring, Option<PathBuf>) {
    for p in paths {
        match load_file(p) {
            Ok(k) => return (k, Some(p.clone())),
            Err(CredentialError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("skipping docker config: {e}"),
        }
    }
    (Keyring::default(), None)
}

/// Loads one file explicitly (`--docker-config`); here a parse error is fatal.
pub fn load_file(path: &Path) -> Result<Keyring, CredentialError> {
    let bytes = std::fs::read(path).map_err(|source| CredentialError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let legacy = path.file_name().is_some_and(|n| n == ".dockercfg");
    parse_config(&bytes, legacy).map_err(|reason| CredentialError::Parse {
        path: path.to_path_buf(),
        reason,
    })
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: HashMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

/// Parses `config.json` (`{"auths": {...}}`) or legacy `.dockercfg` (the bare map).
/// Only `auths` matters: kubelet ignores credsStore/credHelpers/identitytoken.
pub fn parse_config(bytes: &[u8], legacy: bool) -> Result<Keyring, String> {
    let auths: HashMap<String, Entry> = if legacy {
        serde_json::from_slice(bytes).map_err(|e| json_error(&e))?
    } else {
        serde_json::from_slice::<ConfigJson>(bytes)
            .map_err(|e| json_error(&e))?
            .auths
    };
    let mut keyring = Keyring::default();
    for (key, entry) in auths {
        let cred = if entry.auth.is_empty() {
            Credential {
                username: entry.username,
                password: Secret::new(entry.password),
            }
        } else {
            decode_auth(&entry.auth).map_err(|e| format!("entry {key:?}: {e}"))?
        };
        keyring.add(&key, cred);
    }
    keyring.finish();
    Ok(keyring)
}

/// A JSON error that is safe to print for a file holding secrets. serde's
/// type errors quote the offending value (`invalid type: string "dXNlcjpw…"`
/// or `integer `1234``), which here is an `auth` string or a password, so
/// only the position and the kind of mistake are kept.
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "read error",
        Category::Syntax => "invalid JSON",
        Category::Eof => "unexpected end of the file",
        Category::Data => {
            "unexpected value (expected {\"auths\": {\"REGISTRY\": {\"auth\": \"BASE64\"}}} or username and password strings)"
        }
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

fn decode_auth(auth: &str) -> Result<Credential, String> {
    let engine = if auth.ends_with('=') {
        &base64::engine::general_purpose::STANDARD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    const WHY: &str = "unable to parse auth field, must be formatted as base64(username:password)";
    let raw = engine.decode(auth.trim()).map_err(|_| WHY.to_string())?;
    let text = String::from_utf8(raw).map_err(|_| WHY.to_string())?;
    let (user, pass) = text.split_once(':').ok_or_else(|| WHY.to_string())?;
    Ok(Credential {
        username: user.to_string(),
        password: Secret::new(pass),
    })
}

/// Normalised keys with their credentials, most specific first.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    index: Vec<String>,
    creds: HashMap<String, Vec<Credential>>,
}

const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

impl Keyring {
    fn add(&mut self, key: &str, cred: Credential) {
        let key = normalize_key(key);
        let list = self.creds.entry(key.clone()).or_default();
        if list.is_empty() {
            self.index.push(key);
        }
        list.push(cred);
    }

    fn finish(&mut self) {
        // kubelet reverse-sorts so longer, more specific paths match first.
        self.index.sort();
        self.index.reverse();
    }

    /// No credentials at all: every pull is anonymous.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// All credentials for a normalised repository name such as
    /// `docker.io/library/nginx`, in the order kubelet would try them.
    pub fn lookup(&self, canonical_name: &str) -> Vec<Credential> {
        let mut out = Vec::new();
        for key in &self.index {
            if urls_match(key, canonical_name) {
                out.extend(self.creds[key].iter().cloned());
            }
        }
        if out.is_empty() && is_default_registry_match(canonical_name) {
            if let Some(c) = self.creds.get(DEFAULT_REGISTRY_HOST) {
                out.extend(c.iter().cloned());
            }
        }
        out
    }
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `host/v2/path` → `host/path`.
fn normalize_key(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = if path.starts_with("/v1/") || path.starts_with("/v2/") {
        &path[3..]
    } else {
        path
    };
    if path.is_empty() || path == "/" {
        host.to_string()
    } else {
        format!("{host}{path}")
    }
}

fn split_url(s: &str) -> (Vec<&str>, &str, &str) {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let (hostport, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
        _ => (hostport, ""),
    };
    (host.split('.').collect(), port, path)
}

/// kubelet's `urlsMatchStr`: equal port, equal label count, each label a glob
/// match, and the key's path a prefix of the image's path.
fn urls_match(key: &str, image: &str) -> bool {
    let (key_labels, key_port, key_path) = split_url(key);
    let (img_labels, img_port, img_path) = split_url(image);
    key_port == img_port
        && key_labels.len() == img_labels.len()
        && key_labels
            .iter()
            .zip(&img_labels)
            .all(|(k, i)| glob_match(k, i))
        && img_path.starts_with(key_path)
}

fn is_default_registry_match(image: &str) -> bool {
    let Some((first, _)) = image.split_once('/') else {
        return true;
    };
    first == "docker.io" || first == DEFAULT_REGISTRY_HOST || !first.contains(['.', ':'])
}

/// Go's `filepath.Match` for one label: `*`, `?`, `[...]` with ranges and `^`,
/// and `\` escapes. A malformed pattern matches nothing, as in kubelet.
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n).unwrap_or(false)
}

fn glob_at(p: &[char], n: &[char]) -> Option<bool> {
    match p.first() {
        None => Some(n.is_empty()),
        Some('*') => {
            for skip in 0..=n.len() {
                if glob_at(&p[1..], &n[skip..])? {
                    return Some(true);
                }
            }
            Some(false)
        }
        Some('?') => Some(!n.is_empty() && glob_at(&p[1..], &n[1..])?),
        Some('[') => {
            let Some(&c) = n.first() else {
                return Some(false);
            };
            let (matched, used) = class_match(&p[1..], c)?;
            Some(matched && glob_at(&p[1 + used..], &n[1..])?)
        }
        Some('\\') => {
            let c = *p.get(1)?;
            Some(n.first() == Some(&c) && glob_at(&p[2..], &n[1..])?)
        }
        Some(&c) => Some(n.first() == Some(&c) && glob_at(&p[1..], &n[1..])?),
    }
}

/// Returns whether `c` is in the class and how many pattern chars it used
/// (including the closing `]`). `None` means a malformed class.
fn class_match(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = p.first() == Some(&'^');
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if lo == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            lo
        };
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&x| x != ']') {
            hi = *p.get(i + 1)?;
            i += 2;
        }
        if lo <= c && c <= hi {
            found = true;
        }
    }
    Some((found != negate, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(json: &str) -> Keyring {
        parse_config(json.as_bytes(), false).unwrap()
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn kubelet_doc_examples() {
        // From kubernetes.io "Interpretation of config.json".
        for (key, image, want) in [
            ("*.kubernetes.io", "abc.kubernetes.io/x", true),
            ("*.kubernetes.io", "kubernetes.io/x", false),
            ("*.*.kubernetes.io", "abc.kubernetes.io/x", false),
            ("*.*.kubernetes.io", "abc.def.kubernetes.io/x", true),
            ("prefix.*.io", "prefix.kubernetes.io/x", true),
            ("*-good.kubernetes.io", "prefix-good.kubernetes.io/x", true),
            ("my-registry.io/images", "my-registry.io/images/app", true),
            ("my-registry.io/images", "my-registry.io/other/app", false),
            ("my-registry.io", "my-registry.io:5000/app", false),
            ("my-registry.io:5000", "my-registry.io:5000/app", true),
            ("a.[b-d].io", "a.c.io/x", true),
            ("a.[^b-d].io", "a.c.io/x", false),
            ("a.?.io", "a.x.io/x", true),
        ] {
            let k = keyring(&format!(
                r#"{{"auths":{{"{key}":{{"auth":"{}"}}}}}}"#,
                b64("u:p")
            ));
            assert_eq!(!k.lookup(image).is_empty(), want, "{key} vs {image}");
        }
    }

    #[test]
    fn docker_hub_aliases_and_order() {
        let json = format!(
            r#"{{"auths":{{
                "https://index.docker.io/v1/":{{"auth":"{}"}},
                "registry.example.com":{{"username":"short","password":"p1"}},
                "registry.example.com/team":{{"auth":"{}"}},
                "registry-1.docker.io":{{"auth":"{}"}}
            }}}}"#,
            b64("hub:secret"),
            // unpadded base64 must be accepted too
            b64("team:pw:with:colons").trim_end_matches('='),
            b64("wrong:x"),
        );
        let k = keyring(&json);
        let hub = k.lookup("docker.io/library/nginx");
        assert_eq!(hub.len(), 1);
        assert_eq!(hub[0].username, "hub");
        assert_eq!(hub[0].password.expose(), "secret");
        let team = k.lookup("registry.example.com/team/app");
        assert_eq!(
            team.iter().map(|c| c.username.as_str()).collect::<Vec<_>>(),
            ["team", "short"],
            "most specific first"
        );
        assert_eq!(team[0].password.expose(), "pw:with:colons");
        assert!(k.lookup("quay.io/x/y").is_empty());
    }

    #[test]
    fn bad_auth_field_names_entry_not_secret() {
        let err = parse_config(br#"{"auths":{"h":{"auth":"bm9jb2xvbg=="}}}"#, false).unwrap_err();
        assert!(
            err.contains("\"h\"") && err.contains("base64(username:password)"),
            "{err}"
        );
        assert!(!err.contains("nocolon"));
        let legacy = parse_config(br#"{"h.io":{"username":"u","password":"p"}}"#, true).unwrap();
        assert_eq!(legacy.lookup("h.io/a").len(), 1);
    }

    #[test]
    fn search_order_and_first_parsable_wins() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("kubelet");
        let home = d.path().join("home");
        std::fs::create_dir_all(root.clone()).unwrap();
        std::fs::create_dir_all(home.join(".docker")).unwrap();
        let paths = search_paths(&root, Some(&home));
        assert_eq!(paths[0], root.join("config.json"));
        assert_eq!(
            paths[1],
            Path::new("/config.json"),
            "kubelet's cwd, not ours"
        );
        assert_eq!(paths[2], home.join(".docker/config.json"));
        assert_eq!(paths[4], root.join(".dockercfg"));
        let cwd = std::env::current_dir().unwrap();
        if cwd != Path::new("/") {
            assert!(!paths.iter().any(|p| p.starts_with(&cwd)), "{paths:?}");
        }
        std::fs::write(root.join("config.json"), "not json").unwrap();
        std::fs::write(
            home.join(".docker/config.json"),
            r#"{"auths":{"r.io":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let (k, from) = discover(&paths);
        assert_eq!(from.unwrap(), home.join(".docker/config.json"));
        assert_eq!(k.lookup("r.io/x").len(), 1);
    }

    #[test]
    fn malformed_configs_never_echo_values() {
        let secret = "c2VjcmV0LXVzZXI6aHVudGVyMg==";
        for (text, legacy) in [
            (format!(r#"{{"auths":{{"h":"{secret}"}}}}"#), false),
            (r#"{"auths":{"h":{"auth":123456789}}}"#.to_string(), false),
            (
                r#"{"auths":{"h":{"password":987654321}}}"#.to_string(),
                false,
            ),
            (
                r#"{"auths":{"h":{"password":{"x":"hunter2"}}}}"#.to_string(),
                false,
            ),
            (format!(r#"{{"h":"{secret}"}}"#), true),
            (format!(r#"{{"auths":["{secret}"]}}"#), false),
            (format!(r#"{{"auths":{{"h":{{"auth":"{secret}" "#), false),
        ] {
            let err = parse_config(text.as_bytes(), legacy).unwrap_err();
            for s in [secret, "123456789", "987654321", "hunter2"] {
                assert!(!err.contains(s), "{err}");
            }
            assert!(err.contains("line 1 column"), "{err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256), legacy: bool) {
            let _ = parse_config(&bytes, legacy);
        }

        #[test]
        fn parser_never_panics_on_near_json(
            key in "[a-z0-9.:/*\\[\\]^?-]{0,20}",
            auth in "[A-Za-z0-9+/=:]{0,40}",
            user in ".{0,10}",
        ) {
            let text = serde_json::json!({"auths": {key.clone(): {"auth": auth, "username": user}}}).to_string();
            if let Ok(k) = parse_config(text.as_bytes(), false) {
                let _ = k.lookup(&format!("{key}/x"));
            }
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let c = Credential {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
