//! containerd's registry host configuration (`<certs.d>/<namespace>/hosts.toml`).
//!
//! containerd resolves a tag through the `[host."…"]` entries that have the
//! `resolve` capability, in file order, and then the `server`. A digest that
//! staticpin pins must come from the same place the runtime would ask, so the
//! same file drives staticpin's endpoint order, CAs, client certificates,
//! `skip_verify` and headers. Without a hosts.toml, the namespace's registry
//! is used directly, with the docker certs-directory layout.

use std::path::{Path, PathBuf};

use super::tls::HostCerts;
use super::{ErrorKind, Failure};

/// One place to ask for a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostEndpoint {
    /// `scheme://host[:port][/prefix]`, without a trailing slash.
    pub url: String,
    /// The `/v2` prefix is not added (`override_path = true`).
    pub override_path: bool,
    /// A mirror, as opposed to the namespace's own server: gets `?ns=`.
    pub mirror: bool,
    pub certs: HostCerts,
    pub skip_verify: bool,
    pub headers: Vec<(String, String)>,
}

impl HostEndpoint {
    /// `host[:port]` of the URL, for messages.
    pub fn authority(&self) -> &str {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }
}

/// The directory names containerd tries for a namespace, in order.
pub(crate) fn namespace_dirs(namespace: &str) -> Vec<String> {
    let mut names = Vec::new();
    if let Some((h, p)) = namespace.rsplit_once(':') {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            names.push(format!("{h}_{p}_"));
        }
    }
    names.push(namespace.to_string());
    names
}

/// Finds and parses the hosts.toml for `namespace` (e.g. `docker.io`), falling
/// back to `_default`. `Ok(None)` means no hosts.toml applies.
pub(crate) fn load(
    certs_dirs: &[PathBuf],
    namespace: &str,
    default_server: &str,
) -> Result<Option<Vec<HostEndpoint>>, Failure> {
    for dir in certs_dirs {
        let mut candidates: Vec<PathBuf> = namespace_dirs(namespace)
            .into_iter()
            .map(|n| dir.join(n))
            .collect();
        candidates.push(dir.join("_default"));
        for d in candidates {
            let file = d.join("hosts.toml");
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    return parse(&text, &d, default_server).map(Some).map_err(|why| {
                        Failure::new(ErrorKind::Config, format!("{}: {why}", file.display()))
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Failure::new(
                        ErrorKind::Config,
                        format!("cannot read {}: {e}", file.display()),
                    ))
                }
            }
        }
    }
    Ok(None)
}

/// Endpoints that may resolve a tag, in the order containerd tries them.
pub(crate) fn parse(
    text: &str,
    dir: &Path,
    default_server: &str,
) -> Result<Vec<HostEndpoint>, String> {
    // toml's Display quotes the offending line, which may be a header
    // holding a token: report the line number and the message only.
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|r| text.get(..r.start).unwrap_or("").matches('\n').count() + 1);
        match line {
            Some(l) => format!("line {l}: {}", e.message().trim()),
            None => e.message().trim().to_string(),
        }
    })?;
    let mut out = Vec::new();
    if let Some(hosts) = table.get("host") {
        let hosts = hosts
            .as_table()
            .ok_or("`host` must be a table of [host.\"URL\"] entries")?;
        for (url, entry) in hosts {
            let entry = entry
                .as_table()
                .ok_or_else(|| format!("host {url:?} must be a table"))?;
            let caps = capabilities(entry)?;
            if !caps.iter().any(|c| c == "resolve") {
                // containerd never resolves tags through pull-only mirrors.
                continue;
            }
            out.push(endpoint(url, entry, dir, true)?);
        }
    }
    let server = match table.get("server") {
        Some(v) => v.as_str().ok_or("`server` must be a string")?.to_string(),
        None => default_server.to_string(),
    };
    let caps = capabilities(&table)?;
    if caps.iter().any(|c| c == "resolve") {
        out.push(endpoint(&server, &table, dir, false)?);
    }
    if out.is_empty() {
        return Err("no host has the \"resolve\" capability, so tags cannot be resolved".into());
    }
    Ok(out)
}

fn capabilities(t: &toml::Table) -> Result<Vec<String>, String> {
    match t.get("capabilities") {
        None => Ok(vec!["pull".into(), "resolve".into(), "push".into()]),
        Some(v) => v
            .as_array()
            .ok_or("`capabilities` must be a list")?
            .iter()
            .map(|c| {
                c.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "capabilities must be strings".to_string())
            })
            .collect(),
    }
}

fn paths(v: &toml::Value, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let one = |v: &toml::Value| {
        v.as_str()
            .map(|s| dir.join(s))
            .ok_or_else(|| "expected a path string".to_string())
    };
    match v {
        toml::Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// A host URL must say where to connect and nothing else: userinfo would be
/// a password in a file that is not meant to hold one (and would reach every
/// redirect target), and a query or fragment has no place in a base URL.
fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!(
            "host {} must start with https:// or http://",
            super::excerpt(url)
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("host {} is not a URL: {e}", super::excerpt(url)))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let scheme = parsed.scheme();
        let shown = match url.split_once("://").and_then(|(_, r)| r.rsplit_once('@')) {
            Some((_, rest)) => format!("{scheme}://…@{rest}"),
            None => format!("{scheme}://…"),
        };
        return Err(format!(
            "host {} contains userinfo (user:password@); put credentials in the docker config, not in hosts.toml",
            super::excerpt(&shown)
        ));
    }
    if parsed.query().is_some() || url.contains('?') {
        return Err(format!(
            "host {} must not contain a query",
            super::excerpt(url)
        ));
    }
    if parsed.fragment().is_some() || url.contains('#') {
        return Err(format!(
            "host {} must not contain a fragment",
            super::excerpt(url)
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("host {} has no host name", super::excerpt(url)));
    }
    Ok(())
}

fn endpoint(url: &str, t: &toml::Table, dir: &Path, mirror: bool) -> Result<HostEndpoint, String> {
    check_url(url)?;
    let mut certs = HostCerts::default();
    if let Some(ca) = t.get("ca") {
        certs.cas = paths(ca, dir)?;
    }
    if let Some(client) = t.get("client") {
        // "pem" | ["pem", …] | [["cert", "key"], …]: the first pair wins.
        let first = match client {
            toml::Value::Array(items) => items.first().cloned(),
            other => Some(other.clone()),
        };
        certs.client = match first {
            Some(toml::Value::Array(pair)) => {
                let p = paths(&toml::Value::Array(pair), dir)?;
                match p.as_slice() {
                    [cert, key] => Some((cert.clone(), key.clone())),
                    [both] => Some((both.clone(), both.clone())),
                    _ => return Err("client pairs must be [cert, key]".into()),
                }
            }
            Some(v) => {
                let p = paths(&v, dir)?.remove(0);
                Some((p.clone(), p))
            }
            None => None,
        };
    }
    let skip_verify = match t.get("skip_verify") {
        Some(v) => v.as_bool().ok_or("`skip_verify` must be true or false")?,
        None => false,
    };
    let override_path = match t.get("override_path") {
        Some(v) => v.as_bool().ok_or("`override_path` must be true or false")?,
        None => false,
    };
    let mut headers = Vec::new();
    if let Some(h) = t.get("header") {
        for (k, v) in h.as_table().ok_or("`header` must be a table")? {
            match v {
                toml::Value::String(s) => headers.push((k.clone(), s.clone())),
                toml::Value::Array(items) => {
                    for i in items {
                        headers.push((
                            k.clone(),
                            i.as_str()
                                .ok_or("header values must be strings")?
                                .to_string(),
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "header {k:?} must be a string or a list of strings"
                    ))
                }
            }
        }
    }
    Ok(HostEndpoint {
        url: url.trim_end_matches('/').to_string(),
        override_path,
        mirror,
        certs,
        skip_verify,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_docs_example() {
        let text = r#"
server = "https://registry-1.docker.io"    # Exclude this to not use upstream

[host."https://public-mirror.example.com"]
  capabilities = ["pull"]

[host."https://docker-mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"
  [host."https://docker-mirror.internal".header]
    x-custom = ["a", "b"]

[host."http://plain.internal:5000/prefix/"]
  override_path = true
  skip_verify = true
  client = [["c.cert", "c.key"]]
"#;
        let dir = Path::new("/etc/containerd/certs.d/docker.io");
        let eps = parse(text, dir, "https://docker.io").unwrap();
        let urls: Vec<&str> = eps.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://docker-mirror.internal",
                "http://plain.internal:5000/prefix",
                "https://registry-1.docker.io"
            ],
            "pull-only mirror skipped, file order kept, server last"
        );
        assert_eq!(eps[0].certs.cas, [dir.join("docker-mirror.crt")]);
        assert_eq!(eps[0].headers.len(), 2);
        assert!(eps[0].mirror && !eps[2].mirror);
        assert!(eps[1].override_path && eps[1].skip_verify);
        assert_eq!(
            eps[1].certs.client,
            Some((dir.join("c.cert"), dir.join("c.key")))
        );
        assert_eq!(eps[1].authority(), "plain.internal:5000");
    }

    #[test]
    fn lookup_order_and_errors() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(namespace_dirs("reg:5000"), ["reg_5000_", "reg:5000"]);
        assert!(load(&[d.path().to_path_buf()], "docker.io", "https://x")
            .unwrap()
            .is_none());
        std::fs::create_dir_all(d.path().join("_default")).unwrap();
        std::fs::write(
            d.path().join("_default/hosts.toml"),
            "server = \"https://fallback\"\n",
        )
        .unwrap();
        let eps = load(&[d.path().to_path_buf()], "quay.io", "https://quay.io")
            .unwrap()
            .unwrap();
        assert_eq!(eps[0].url, "https://fallback");
        std::fs::create_dir_all(d.path().join("quay.io")).unwrap();
        std::fs::write(d.path().join("quay.io/hosts.toml"), "server = 5\n").unwrap();
        let err = load(&[d.path().to_path_buf()], "quay.io", "https://quay.io").unwrap_err();
        assert!(
            err.detail.contains("quay.io/hosts.toml") && err.detail.contains("server"),
            "{}",
            err.detail
        );
        assert!(parse("capabilities = [\"pull\"]\n", d.path(), "https://x").is_err());
    }

    #[test]
    fn urls_with_userinfo_query_or_fragment_are_config_errors_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("r.io")).unwrap();
        for (text, why) in [
            ("server = \"https://bob:Pw-SECRET@r.io\"\n", "userinfo"),
            ("server = \"https://bob@r.io\"\n", "userinfo"),
            ("[host.\"https://u:Pw-SECRET@mirror.io\"]\n", "userinfo"),
            ("server = \"https://r.io/v2?x=1\"\n", "query"),
            ("server = \"https://r.io/?\"\n", "query"),
            ("[host.\"https://mirror.io/#frag\"]\n", "fragment"),
            ("server = \"https://\"\n", "URL"),
        ] {
            std::fs::write(d.path().join("r.io/hosts.toml"), text).unwrap();
            let err = load(&[d.path().to_path_buf()], "r.io", "https://r.io").unwrap_err();
            assert_eq!(err.kind, ErrorKind::Config);
            assert!(err.detail.contains("r.io/hosts.toml"), "{}", err.detail);
            assert!(err.detail.contains(why), "{text}: {}", err.detail);
            assert!(!err.detail.contains("Pw-SECRET"), "{}", err.detail);
        }
    }

    #[test]
    fn toml_syntax_errors_do_not_quote_the_line() {
        let err = parse(
            "server = \"https://r.io\"\n[header]\n  authorization = \"Bearer TOKEN-SECRET\n",
            Path::new("/d"),
            "https://r.io",
        )
        .unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains("TOKEN-SECRET"), "{err}");
    }
}
