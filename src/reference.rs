//! Image references: parsing, normalisation and the pinned spellings.
//!
//! This follows the `distribution/reference` grammar that kubelet and
//! containerd use (`ParseNormalizedNamed`), so that staticpin resolves exactly
//! the repository the runtime would pull. The user's original spelling is kept
//! because the pinned output must be the original string plus `@sha256:…`:
//! rewriting `nginx` to `docker.io/library/nginx` would be a semantic no-op but
//! a needless diff in a file an operator reads.

use std::fmt;

/// Docker Hub's canonical domain after normalisation.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy domain, normalised to [`DOCKER_HUB`].
pub const LEGACY_DOCKER_HUB: &str = "index.docker.io";
/// The host that actually serves Docker Hub's registry API.
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A content digest such as `sha256:<64 hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: String,
    hex: String,
}

impl Digest {
    /// Parses `algo:hex`, accepting only the algorithms go-digest registers
    /// (and therefore containerd can verify), with lowercase hex of the right length.
    pub fn parse(s: &str) -> Result<Digest, String> {
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("digest {s:?} has no algorithm prefix"))?;
        let want = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            other => return Err(format!("unsupported digest algorithm {other:?}")),
        };
        if hex.len() != want || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "digest {s:?} must have {want} lowercase hex characters after {algorithm:?}"
            ));
        }
        Ok(Digest {
            algorithm: algorithm.to_string(),
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of exactly these bytes.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        use sha2::{Digest as _, Sha256};
        let sum = Sha256::digest(bytes);
        let mut hex = String::with_capacity(64);
        for b in sum {
            hex.push_str(&format!("{b:02x}"));
        }
        Digest {
            algorithm: "sha256".into(),
            hex,
        }
    }

    /// `sha256`, `sha384` or `sha512`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

/// A parsed image reference. Equality ignores the original spelling.
#[derive(Clone, Debug)]
pub struct ImageRef {
    original: String,
    /// The name as the user wrote it (without tag or digest).
    original_name: String,
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl PartialEq for ImageRef {
    fn eq(&self, other: &Self) -> bool {
        self.domain == other.domain
            && self.path == other.path
            && self.tag == other.tag
            && self.digest == other.digest
    }
}
impl Eq for ImageRef {}

/// Why a reference is invalid; the message always quotes the reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    /// The reference as given.
    pub reference: String,
    /// Which rule of the grammar it breaks.
    pub reason: String,
}

impl ImageRef {
    /// Parses and normalises `s` as kubelet does (`ParseNormalizedNamed`):
    /// `nginx` is `docker.io/library/nginx`. Whitespace, a bare image ID or an
    /// unsupported digest are errors.
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        parse(s).map_err(|reason| ReferenceError {
            reference: s.to_string(),
            reason,
        })
    }

    /// The string exactly as written.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// Normalised domain: `docker.io` for Docker Hub, otherwise as written.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Normalised repository path, e.g. `library/nginx`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag as written; `None` when there is none (kubelet then pulls
    /// `latest`, unless there is a digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest after `@`, if pinned.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The tag kubelet would pull when none is given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// `docker.io/library/nginx`: the key for credential lookups.
    pub fn canonical_name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The host:port that serves the registry API for this reference.
    pub fn registry_host(&self) -> &str {
        if self.domain == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.domain
        }
    }

    /// Fully normalised form (`docker.io/library/nginx:latest`). Parsing it
    /// again yields an equal reference.
    pub fn normalized(&self) -> String {
        let mut s = self.canonical_name();
        match (&self.tag, &self.digest) {
            (Some(t), _) => {
                s.push(':');
                s.push_str(t);
            }
            (None, None) => s.push_str(":latest"),
            (None, Some(_)) => {}
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    /// The original spelling with the digest appended, keeping the tag for humans.
    pub fn pinned(&self, digest: &Digest) -> String {
        format!("{}@{}", self.original, digest)
    }

    /// `<name as written>@digest`, the "imageID" form without the tag.
    pub fn pinned_digest_only(&self, digest: &Digest) -> String {
        format!("{}@{}", self.original_name, digest)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

fn parse(s: &str) -> Result<ImageRef, String> {
    if s.is_empty() {
        return Err("reference is empty".into());
    }
    if s.trim() != s {
        return Err("reference has leading or trailing whitespace".into());
    }
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("a bare 64-character hex string is an image ID, not a repository".into());
    }

    let (before_digest, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(Digest::parse(d)?)),
        None => (s, None),
    };

    // The domain is split off before the tag, because a port also uses ':'.
    let (domain, remainder) = split_domain(before_digest);
    let (remote, tag) = match remainder.rfind(':') {
        Some(i) => (&remainder[..i], Some(&remainder[i + 1..])),
        None => (remainder, None),
    };
    let original_name = match tag {
        Some(t) => &before_digest[..before_digest.len() - t.len() - 1],
        None => before_digest,
    };

    let domain = match domain {
        Some(d) => {
            validate_domain(d)?;
            if d == LEGACY_DOCKER_HUB {
                DOCKER_HUB.to_string()
            } else {
                d.to_string()
            }
        }
        None => DOCKER_HUB.to_string(),
    };
    if remote.is_empty() {
        return Err("repository name is empty".into());
    }
    if remote.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "repository name {remote:?} must be lowercase (only the registry host may contain uppercase)"
        ));
    }
    let path = if domain == DOCKER_HUB && !remote.contains('/') {
        format!("library/{remote}")
    } else {
        remote.to_string()
    };
    for component in path.split('/') {
        validate_path_component(component)?;
    }
    if path.len() > MAX_NAME_LEN || domain.len() + 1 + path.len() > MAX_NAME_LEN {
        return Err(format!(
            "repository name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(t) = tag {
        validate_tag(t)?;
    }
    Ok(ImageRef {
        original: s.to_string(),
        original_name: original_name.to_string(),
        domain,
        path,
        tag: tag.map(str::to_string),
        digest,
    })
}

/// distribution's `splitDockerDomain`: the first component is a domain only if
/// it looks like one (has `.` or `:`, is `localhost`, or has uppercase).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if looks_like_domain(first) => (Some(first), rest),
        _ => (None, name),
    }
}

/// Whether a first name component is a registry host rather than a Docker Hub
/// path component. The trust policy uses the same test, so a prefix can never
/// name a host that no reference could have.
pub(crate) fn looks_like_domain(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

pub(crate) fn validate_domain(d: &str) -> Result<(), String> {
    check_host_port(d).map_err(|why| format!("registry host {d:?} {why}"))
}

/// The one `host[:port]` grammar: the part of an image reference before its
/// first `/` when that part names a registry. Also what `insecureRegistries`
/// entries must be, since they are compared to that text. Returns why not,
/// as a phrase to follow the quoted text.
pub fn check_host_port(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.contains("://") {
        return Err("has a scheme");
    }
    if s.contains('/') {
        return Err("has a path");
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err("has an unclosed IPv6 bracket");
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("is not a valid IPv6 address");
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(p) => (None, Some(p)),
                None => return Err("has text after the IPv6 address"),
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    // Digits only (no sign, no spaces), and a port a connection can use.
    if let Some(p) = port {
        if !p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u16>(), Ok(1..)) {
            return Err("has an invalid port");
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
            return Err("is not a valid host name");
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
pub(crate) fn validate_path_component(c: &str) -> Result<(), String> {
    let err = || {
        Err(format!(
            "path component {c:?} must be lowercase letters and digits separated by '.', '_', '__' or dashes"
        ))
    };
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return err();
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return err();
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(t: &str) -> Result<(), String> {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if t.is_empty() {
        return Err("tag is empty".into());
    }
    if t.len() > MAX_TAG_LEN {
        return Err(format!(
            "tag is {} characters long; the limit is {MAX_TAG_LEN}",
            t.len()
        ));
    }
    let b = t.as_bytes();
    if !word(b[0]) || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        return Err(format!(
            "tag {t:?} may only contain letters, digits, '_', '.' and '-', and must not start with '.' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().normalized()
    }

    #[test]
    fn normalises_like_distribution() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(
            norm("index.docker.io/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(norm("docker.io/foo/bar:x"), "docker.io/foo/bar:x");
        assert_eq!(norm("localhost/foo"), "localhost/foo:latest");
        assert_eq!(
            norm("localhost:5000/foo/bar:v1"),
            "localhost:5000/foo/bar:v1"
        );
        assert_eq!(
            norm("Registry.Example.COM/app"),
            "Registry.Example.COM/app:latest"
        );
        assert_eq!(norm("[::1]:5000/app:v"), "[::1]:5000/app:v");
        assert_eq!(
            norm("registry.k8s.io/kube-apiserver:v1.31.0"),
            "registry.k8s.io/kube-apiserver:v1.31.0"
        );
        // Without a slash a port cannot be told from a tag, as in Docker.
        assert_eq!(norm("localhost:5000"), "docker.io/library/localhost:5000");
    }

    #[test]
    fn keeps_tag_and_digest_and_original_spelling() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        let r = ImageRef::parse(&format!("nginx:1.25@{d}")).unwrap();
        assert_eq!(r.tag(), Some("1.25"));
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(r.normalized(), format!("docker.io/library/nginx:1.25@{d}"));
        let r = ImageRef::parse("localhost:5000/app:v1").unwrap();
        let dg = Digest::parse(&d).unwrap();
        assert_eq!(r.pinned(&dg), format!("localhost:5000/app:v1@{d}"));
        assert_eq!(r.pinned_digest_only(&dg), format!("localhost:5000/app@{d}"));
        assert_eq!(r.registry_host(), "localhost:5000");
        assert_eq!(
            ImageRef::parse("nginx").unwrap().registry_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn rejects_with_quoted_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("Nginx", "lowercase"),
            ("example.com/Foo", "lowercase"),
            ("nginx:", "tag is empty"),
            ("nginx:-x", "must not start"),
            ("nginx@sha256:abc", "64 lowercase hex"),
            (
                "nginx@md5:0123456789abcdef0123456789abcdef",
                "unsupported digest",
            ),
            ("a//b", "path component"),
            ("foo_-bar", "path component"),
            (" nginx", "whitespace"),
            ("example.com:port/x", "invalid port"),
            ("example.com:0/x", "invalid port"),
            ("example.com:65536/x", "invalid port"),
            ("a:1:2/x", "invalid port"),
            ("[::1/x", "unclosed IPv6 bracket"),
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains(why), "{bad:?}: {msg}");
        }
        let long = format!("nginx:{}", "a".repeat(129));
        assert!(ImageRef::parse(&long)
            .unwrap_err()
            .reason
            .contains("limit is 128"));
        assert!(ImageRef::parse(&format!("nginx:{}", "a".repeat(128))).is_ok());
    }
}
