//! Trusted-registry prefixes: parsing and path-boundary matching.
//!
//! A prefix is a registry host (with its port, if any) followed by zero or more
//! repository path components. It is compared with the *normalised* reference
//! (`nginx` is `docker.io/library/nginx`), component by component, never as a
//! string prefix: Gatekeeper's allowed-repos template used `startswith` and so
//! trusted `registry.k8s.io.evil.com/…` for `registry.k8s.io`.

use std::fmt;

use crate::reference::{self, ImageRef, DOCKER_HUB, LEGACY_DOCKER_HUB};

use super::PolicyError;

/// One entry of `policy.trustedRegistries`, normalised.
///
/// The host is lowercased (DNS and TLS ignore case) and `index.docker.io` is
/// `docker.io`; the port is part of the host and must match exactly. The path
/// is taken literally: `docker.io/library` holds Docker Hub's official images,
/// `docker.io/bitnami` the bitnami organisation's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrustedPrefix {
    domain: String,
    /// Without leading or trailing `/`; empty trusts the whole registry.
    path: String,
}

impl TrustedPrefix {
    /// Parses `host[:port][/path…][/]`. A tag, a digest, a scheme, a wildcard or
    /// a first component that is not a registry host are errors naming the value.
    pub fn parse(s: &str) -> Result<TrustedPrefix, PolicyError> {
        parse(s).map_err(|reason| PolicyError::Prefix {
            prefix: s.to_string(),
            reason,
        })
    }

    /// The registry host, lowercased, with its port.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path below the host; empty for a whole registry.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether `image`'s repository lies at or below this prefix.
    ///
    /// Host and port must be equal (case-insensitively, after Docker Hub's
    /// legacy name is folded); the path must be equal or continue with `/`.
    pub fn matches(&self, image: &ImageRef) -> bool {
        // Compared without allocating: the webhook runs this per image per request.
        let domain = image.domain();
        let same_host = domain.eq_ignore_ascii_case(&self.domain)
            || (self.domain == DOCKER_HUB && domain.eq_ignore_ascii_case(LEGACY_DOCKER_HUB));
        if !same_host {
            return false;
        }
        if self.path.is_empty() {
            return true;
        }
        match image.path().strip_prefix(self.path.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl fmt::Display for TrustedPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.domain)
        } else {
            write!(f, "{}/{}", self.domain, self.path)
        }
    }
}

impl std::str::FromStr for TrustedPrefix {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustedPrefix::parse(s)
    }
}

/// Lowercase, and Docker Hub's legacy host folded into `docker.io`, as
/// [`TrustedPrefix::matches`] compares a reference's domain.
fn canonical_domain(domain: &str) -> String {
    let lower = domain.to_ascii_lowercase();
    if lower == LEGACY_DOCKER_HUB {
        DOCKER_HUB.to_string()
    } else {
        lower
    }
}

fn parse(s: &str) -> Result<TrustedPrefix, String> {
    if s.is_empty() {
        return Err("prefix is empty".into());
    }
    if s.trim() != s {
        return Err("prefix has leading or trailing whitespace".into());
    }
    if s.contains("://") {
        return Err("write the registry host without a scheme, e.g. registry.k8s.io".into());
    }
    if s.contains('*') {
        return Err(
            "wildcards are not supported; a prefix already trusts everything below it".into(),
        );
    }
    if s.contains('@') {
        return Err("a trusted registry prefix cannot contain a digest".into());
    }
    // One trailing slash means the same as none; more would be an empty component.
    let s = s.strip_suffix('/').unwrap_or(s);
    let (domain, path) = match s.split_once('/') {
        Some((d, p)) => (d, Some(p)),
        None => (s, None),
    };
    if domain.is_empty() {
        return Err("prefix must start with a registry host".into());
    }
    if !reference::looks_like_domain(domain) {
        return Err(format!(
            "{domain:?} is not a registry host (a host has a '.' or a ':port', or is localhost); \
             for Docker Hub write docker.io/{s}"
        ));
    }
    reference::validate_domain(domain)?;
    if let Some(path) = path {
        if let Some((_, after)) = path.rsplit_once(':') {
            return Err(format!(
                "a trusted registry prefix cannot carry a tag (\":{after}\")"
            ));
        }
        for component in path.split('/') {
            reference::validate_path_component(component)?;
        }
    }
    Ok(TrustedPrefix {
        domain: canonical_domain(domain),
        path: path.unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> TrustedPrefix {
        TrustedPrefix::parse(s).unwrap()
    }

    fn trusts(p: &str, image: &str) -> bool {
        prefix(p).matches(&ImageRef::parse(image).unwrap())
    }

    #[test]
    fn normalises() {
        for (given, want) in [
            ("registry.k8s.io", "registry.k8s.io"),
            ("registry.k8s.io/", "registry.k8s.io"),
            ("Registry.K8s.IO/", "registry.k8s.io"),
            ("index.docker.io/library", "docker.io/library"),
            ("INDEX.docker.io/library/", "docker.io/library"),
            ("docker.io/bitnami", "docker.io/bitnami"),
            ("myreg:5000/team", "myreg:5000/team"),
            ("localhost", "localhost"),
            ("localhost:5000/a/b", "localhost:5000/a/b"),
            ("[::1]:5000/team", "[::1]:5000/team"),
        ] {
            assert_eq!(prefix(given).to_string(), want, "{given:?}");
        }
        assert_eq!(prefix("myreg:5000/team/").path(), "team");
        assert_eq!(prefix("myreg:5000/team/").domain(), "myreg:5000");
    }

    #[test]
    fn rejects_naming_the_value() {
        for (bad, why) in [
            ("", "empty"),
            (" registry.k8s.io", "whitespace"),
            ("registry.k8s.io/pause:3.9", "tag"),
            ("registry.k8s.io/pause:3.9/", "tag"),
            (
                "registry.k8s.io/pause@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "digest",
            ),
            ("https://registry.k8s.io", "scheme"),
            ("registry.k8s.io/*", "wildcard"),
            ("*.k8s.io", "wildcard"),
            ("/registry.k8s.io", "registry host"),
            ("/", "registry host"),
            ("openpolicyagent", "docker.io/openpolicyagent"),
            ("library/nginx", "docker.io/library/nginx"),
            ("registry.k8s.io//pause", "path component"),
            ("registry.k8s.io//", "path component"),
            ("myreg.io/Team", "path component"),
            ("my_reg.io/team", "host"),
            ("myreg.io:port/team", "port"),
            ("-bad.io", "host"),
        ] {
            let e = TrustedPrefix::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    /// Each row: prefix, image, trusted. The untrusted rows are the bypasses
    /// shipped by Gatekeeper's allowed-repos (`startswith` on the raw string,
    /// gatekeeper-library#80) and kube-image-bouncer (only the first component
    /// compared, so a host entry trusts every repository on that host and a
    /// path entry never matches), plus case and port variants.
    #[test]
    fn path_boundary_table() {
        let table: &[(&str, &str, bool)] = &[
            // Host boundary.
            ("registry.k8s.io", "registry.k8s.io/pause:3.9", true),
            ("registry.k8s.io", "registry.k8s.io/sig/app:v1", true),
            ("registry.k8s.io", "registry.k8s.io.evil.com/pause:3.9", false),
            ("registry.k8s.io", "registry.k8s.iox/pause:3.9", false),
            ("registry.k8s.io", "evil.com/registry.k8s.io/pause:3.9", false),
            ("registry.k8s.io", "evil.com/registry.k8s.io:3.9", false),
            ("registry.k8s.io", "registry.k8s.io:443/pause:3.9", false),
            ("registry.k8s.io/", "registry.k8s.io/pause", true),
            ("registry.k8s.io/", "registry.k8s.io.evil.com/pause", false),
            // Gatekeeper's sample constraint: "openpolicyagent" let
            // "openpolicyagentnotreally" through; with the trailing slash
            // users were told to add, the unnormalised `docker.io/…` spelling
            // of the same repository was refused instead.
            ("docker.io/openpolicyagent", "openpolicyagent/opa:1", true),
            ("docker.io/openpolicyagent", "docker.io/openpolicyagent/opa:1", true),
            ("docker.io/openpolicyagent", "index.docker.io/openpolicyagent/opa", true),
            ("docker.io/openpolicyagent", "openpolicyagentnotreally/opa:1", false),
            ("docker.io/openpolicyagent", "openpolicyagent.evil.com/opa:1", false),
            // Normalised Docker Hub names.
            ("docker.io/library", "nginx", true),
            ("docker.io/library", "nginx:1.25", true),
            ("docker.io/library", "library/nginx", true),
            ("docker.io/library", "docker.io/nginx", true),
            ("docker.io/library", "index.docker.io/nginx", true),
            ("docker.io/library", "docker.io/library/nginx", true),
            ("docker.io/library", "docker.io/libraryx/nginx", false),
            ("docker.io/library", "libraryx/nginx", false),
            ("docker.io/library", "evil/nginx", false),
            ("docker.io/library", "docker.io.evil.com/library/nginx", false),
            ("docker.io/library", "evil.com/docker.io/library/nginx", false),
            ("index.docker.io/library", "nginx", true),
            // kube-image-bouncer compared the host only: "docker.io" trusted
            // every Hub user. A path prefix narrows the trust.
            ("docker.io/library/nginx", "nginx", true),
            ("docker.io/library/nginx", "nginx-evil", false),
            ("docker.io/library/nginx", "docker.io/library/nginxx", false),
            ("docker.io/myorg", "docker.io/evil/app", false),
            ("docker.io/myorg", "docker.io/myorg/app", true),
            ("docker.io", "evil/app", true),
            ("docker.io", "docker.io.evil.com/app", false),
            // Ports are part of the host and must match exactly.
            ("myreg:5000/team", "myreg:5000/team/app", true),
            ("myreg:5000/team", "myreg:5000/team/sub/app:v1", true),
            ("myreg:5000/team", "myreg:5000/teamx/app", false),
            ("myreg:5000/team", "myreg/team/app", false),
            ("myreg:5000/team", "myreg:5001/team/app", false),
            ("myreg:5000/team", "myreg:50000/team/app", false),
            ("myreg:5000/team", "myreg.evil.com:5000/team/app", false),
            ("myreg:5000/team", "evil.com/myreg/team/app", false),
            ("myreg.io/team", "myreg.io:5000/team/app", false),
            ("localhost:5000", "localhost:5000/app", true),
            ("localhost:5000", "localhost/app", false),
            ("localhost:5000", "localhost:50001/app", false),
            ("localhost", "localhost/app", true),
            ("localhost", "localhostx.io/app", false),
            // Host case never matters; path case is fixed by the grammar
            // (uppercase paths do not parse, see `rejects_naming_the_value`).
            ("registry.k8s.io", "REGISTRY.K8S.IO/pause:3.9", true),
            ("Registry.K8s.IO", "registry.k8s.io/pause:3.9", true),
            ("MyReg:5000/team", "myreg:5000/team/app", true),
            ("myreg:5000/team", "MyReg:5000/team/app", true),
            ("myreg:5000/team", "MyReg:5001/team/app", false),
            ("docker.io/library", "Docker.IO/library/nginx", true),
            // Digests and tags do not change the repository.
            (
                "registry.k8s.io",
                "registry.k8s.io/kube-apiserver:v1.31.0@sha256:1111111111111111111111111111111111111111111111111111111111111111",
                true,
            ),
            (
                "registry.k8s.io",
                "registry.k8s.io.evil.com/kube-apiserver@sha256:1111111111111111111111111111111111111111111111111111111111111111",
                false,
            ),
            // IPv6 hosts.
            ("[::1]:5000", "[::1]:5000/app", true),
            ("[::1]:5000", "[::1]:5001/app", false),
            ("[::1]", "[::1]:5000/app", false),
        ];
        let mut failures = Vec::new();
        for &(p, image, want) in table {
            if trusts(p, image) != want {
                failures.push(format!("{p:?} trusts {image:?}: want {want}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
