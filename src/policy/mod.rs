//! The image trust policy: which images are acceptable, and why not.
//!
//! This module owns the `policy:` settings ([`Policy`], parsed from
//! [`RawPolicy`]), trusted-registry prefixes and their path-boundary matching
//! ([`TrustedPrefix`]), the verdict on one image ([`evaluate`]) and the
//! decision on a whole ImageReview or AdmissionReview ([`decide`], in
//! [`review`]). It is pure: no I/O, no clock, no logging. `pin` calls
//! [`evaluate_registry`] before pinning a static-pod image and [`evaluate`] to
//! report what the webhook would say of it; the webhook server (`serve`) calls
//! [`decide`] on every request, so a decision is a function of the request and
//! the loaded policy alone and answers in microseconds.
//!
//! A pinned image whose mirror (containerd `hosts.toml`) differs from its name
//! is judged by its **name**: the name is the registry the node is asked to
//! trust, and the mirror is an implementation detail of the pull. Callers pass
//! the reference as written in the manifest, never the mirror it resolved through.

mod prefix;
pub mod review;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::reference::ImageRef;

pub use prefix::TrustedPrefix;
pub use review::{decide, Decision, Mode, Outcome, ReviewError, ReviewRequest};

/// Longest human message or reason staticpin puts on the wire, in bytes. The
/// apiserver shows it to users and stores it in audit events; an image name
/// from a hostile pod spec must not make either unbounded.
pub const MAX_REASON_LEN: usize = 1024;

/// Longest image string quoted in a message, in bytes. Valid references are
/// shorter (255 for the name, 128 for the tag, 135 for a sha512 digest).
const MAX_QUOTED_IMAGE: usize = 600;

/// Why a policy or one of its prefixes is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("trusted registry prefix {prefix:?}: {reason}")]
    /// A trusted registry prefix that does not parse.
    Prefix {
        /// The prefix as written.
        prefix: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting outside its allowed values; `key` is spelled as in the file,
    /// e.g. `policy.trustedRegistries[2]`.
    #[error("{key}: {reason}")]
    Invalid {
        /// The offending setting.
        key: String,
        /// What is wrong, quoting the value.
        reason: String,
    },
}

/// What happens to an image outside every trusted prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Untrusted {
    /// Allowed (pinned, admitted) and reported as untrusted.
    #[default]
    Warn,
    /// Refused: `pin` leaves the file as it is, the webhook denies the pod.
    Deny,
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Untrusted::Warn => "warn",
            Untrusted::Deny => "deny",
        })
    }
}

/// The `policy:` mapping as written: every key optional so that config
/// fragments can [`merge`](RawPolicy::merge) per key, unknown keys rejected so
/// a typo on a control-plane node fails loudly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of policy settings"
)]
pub struct RawPolicy {
    /// `trustedRegistries`: registry prefixes (`host[:port][/path]`) whose
    /// images are trusted; empty means no registry policy.
    pub trusted_registries: Option<Vec<String>>,
    /// `untrusted`: `warn` (the default) or `deny` for an image outside
    /// every trusted prefix.
    pub untrusted: Option<Untrusted>,
    /// `requireDigest`: the webhook denies images without a digest.
    pub require_digest: Option<bool>,
    /// `denyLatest`: the webhook denies `:latest` and untagged images
    /// that carry no digest.
    pub deny_latest: Option<bool>,
    /// `exemptNamespaces`: namespaces whose pods the webhook admits unchecked.
    pub exempt_namespaces: Option<Vec<String>>,
    /// `allowBreakGlass`: a pod carrying a break-glass reason is admitted
    /// despite denials.
    pub allow_break_glass: Option<bool>,
}

impl RawPolicy {
    /// Overlays `later` on `self`: each key `later` sets wins; lists are
    /// replaced whole, like every other list in the configuration.
    pub fn merge(self, later: RawPolicy) -> RawPolicy {
        RawPolicy {
            trusted_registries: later.trusted_registries.or(self.trusted_registries),
            untrusted: later.untrusted.or(self.untrusted),
            require_digest: later.require_digest.or(self.require_digest),
            deny_latest: later.deny_latest.or(self.deny_latest),
            exempt_namespaces: later.exempt_namespaces.or(self.exempt_namespaces),
            allow_break_glass: later.allow_break_glass.or(self.allow_break_glass),
        }
    }

    /// The keys this fragment sets, spelled as in the file (without `policy.`).
    pub fn keys_set(&self) -> Vec<&'static str> {
        [
            ("trustedRegistries", self.trusted_registries.is_some()),
            ("untrusted", self.untrusted.is_some()),
            ("requireDigest", self.require_digest.is_some()),
            ("denyLatest", self.deny_latest.is_some()),
            ("exemptNamespaces", self.exempt_namespaces.is_some()),
            ("allowBreakGlass", self.allow_break_glass.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

/// The validated policy. The default is "no policy": nothing is trusted or
/// distrusted, tags and `latest` are fine, nothing is exempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct Policy {
    /// Empty means no registry policy: every registry is acceptable.
    pub trusted_registries: Vec<TrustedPrefix>,
    /// What happens to an image outside every trusted prefix.
    pub untrusted: Untrusted,
    /// Deny images without a digest. Judged by the webhook and reports, not
    /// by `pin`, whose pinning is what satisfies it.
    pub require_digest: bool,
    /// Deny `:latest` and references with neither tag nor digest.
    pub deny_latest: bool,
    /// Namespaces the webhook admits without checks. Static pods are never
    /// exempt: `pin` has no namespace to consult.
    pub exempt_namespaces: Vec<String>,
    /// Admit a pod that would be denied when it carries a non-empty
    /// [`BREAK_GLASS_ANNOTATION`](review::BREAK_GLASS_ANNOTATION), and log
    /// it loudly.
    pub allow_break_glass: bool,
}

impl TryFrom<RawPolicy> for Policy {
    type Error = PolicyError;

    fn try_from(raw: RawPolicy) -> Result<Self, Self::Error> {
        Policy::from_raw(&raw)
    }
}

impl Policy {
    /// Validates a (merged) raw policy. Errors name the offending key, e.g.
    /// `policy.trustedRegistries[1]`, and quote the value.
    pub fn from_raw(raw: &RawPolicy) -> Result<Policy, PolicyError> {
        let mut trusted_registries = Vec::new();
        for (i, s) in raw.trusted_registries.iter().flatten().enumerate() {
            let p = TrustedPrefix::parse(s).map_err(|e| PolicyError::Invalid {
                key: format!("policy.trustedRegistries[{i}]"),
                reason: e.to_string(),
            })?;
            if !trusted_registries.contains(&p) {
                trusted_registries.push(p);
            }
        }
        let mut exempt_namespaces: Vec<String> = Vec::new();
        for (i, ns) in raw.exempt_namespaces.iter().flatten().enumerate() {
            check_namespace(ns).map_err(|reason| PolicyError::Invalid {
                key: format!("policy.exemptNamespaces[{i}]"),
                reason,
            })?;
            if !exempt_namespaces.contains(ns) {
                exempt_namespaces.push(ns.clone());
            }
        }
        Ok(Policy {
            trusted_registries,
            untrusted: raw.untrusted.unwrap_or_default(),
            require_digest: raw.require_digest.unwrap_or(false),
            deny_latest: raw.deny_latest.unwrap_or(false),
            exempt_namespaces,
            allow_break_glass: raw.allow_break_glass.unwrap_or(false),
        })
    }

    /// Whether any registry is distrusted at all.
    pub fn has_registry_policy(&self) -> bool {
        !self.trusted_registries.is_empty()
    }

    /// The first prefix that trusts `image`, if any.
    pub fn trusted_by(&self, image: &ImageRef) -> Option<&TrustedPrefix> {
        self.trusted_registries.iter().find(|p| p.matches(image))
    }

    /// Whether the webhook admits pods in `namespace` without checks.
    pub fn is_exempt(&self, namespace: &str) -> bool {
        self.exempt_namespaces.iter().any(|n| n == namespace)
    }

    /// One line per setting, for `check-config` and `doctor`.
    pub fn summary(&self) -> Vec<String> {
        let registries = if self.trusted_registries.is_empty() {
            "none (no registry policy: every registry is accepted)".to_string()
        } else {
            join_display(&self.trusted_registries, ", ")
        };
        let exempt = if self.exempt_namespaces.is_empty() {
            "none".to_string()
        } else {
            self.exempt_namespaces.join(", ")
        };
        vec![
            format!("policy.trustedRegistries: {registries}"),
            format!("policy.untrusted: {}", self.untrusted),
            format!("policy.requireDigest: {}", self.require_digest),
            format!("policy.denyLatest: {}", self.deny_latest),
            format!("policy.exemptNamespaces: {exempt}"),
            format!("policy.allowBreakGlass: {}", self.allow_break_glass),
        ]
    }
}

/// A namespace name: an RFC 1123 label, as the apiserver enforces.
fn check_namespace(ns: &str) -> Result<(), String> {
    let b = ns.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a namespace name (lowercase letters, digits and '-', at most 63, \
             no wildcards)",
            bounded(ns, 80)
        ))
    }
}

/// A policy rule an image can break. [`code`](Rule::code) is stable: metrics,
/// logs, audit annotations and scripts match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The image string is not a valid reference.
    InvalidReference,
    /// Under no trusted registry prefix.
    UntrustedRegistry,
    /// No digest, with `requireDigest` on.
    NotDigestPinned,
    /// `:latest` or no tag, and no digest, with `denyLatest` on.
    LatestTag,
}

impl Rule {
    /// The stable kebab-case code, e.g. `untrusted-registry`.
    pub fn code(self) -> &'static str {
        match self {
            Rule::InvalidReference => "invalid-reference",
            Rule::UntrustedRegistry => "untrusted-registry",
            Rule::NotDigestPinned => "not-digest-pinned",
            Rule::LatestTag => "latest-tag",
        }
    }

    /// The setting that asks for the rule; invalid references break the grammar.
    pub fn key(self) -> &'static str {
        match self {
            Rule::InvalidReference => "image reference grammar",
            Rule::UntrustedRegistry => "policy.trustedRegistries",
            Rule::NotDigestPinned => "policy.requireDigest",
            Rule::LatestTag => "policy.denyLatest",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Whether a finding refuses the image or only reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Refuses the image.
    Deny,
    /// Only reported; the image is allowed.
    Warn,
}

/// One broken rule, with a message naming the image and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule broken.
    pub rule: Rule,
    /// Whether it refuses the image.
    pub severity: Severity,
    /// For humans; names the image and the setting.
    pub message: String,
}

/// How the image stands against `policy.trustedRegistries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The trust list is empty: there is no registry policy.
    NoPolicy,
    /// Trusted by this prefix (the first that matches).
    Trusted(TrustedPrefix),
    /// Under no trusted prefix.
    Untrusted,
    /// The reference does not parse, so its registry is unknown.
    Unknown,
}

impl Trust {
    /// `yes`, `no`, `no policy` or `unknown`, for status tables.
    pub fn label(&self) -> &'static str {
        match self {
            Trust::NoPolicy => "no policy",
            Trust::Trusted(_) => "yes",
            Trust::Untrusted => "no",
            Trust::Unknown => "unknown",
        }
    }
}

/// The policy's judgement of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The image as given (the name, not a mirror).
    pub image: String,
    /// How it stands against the trusted registries.
    pub trust: Trust,
    /// Denials first (in [`Rule`] order), then warnings.
    pub findings: Vec<Finding>,
}

impl Verdict {
    /// No finding denies the image.
    pub fn allowed(&self) -> bool {
        self.denials().next().is_none()
    }

    /// The rule behind the first denial; `None` when allowed.
    pub fn reason(&self) -> Option<Rule> {
        self.denials().next().map(|f| f.rule)
    }

    /// The findings that refuse the image, in [`Rule`] order.
    pub fn denials(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Deny)
    }

    /// The findings that are only reported.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warn)
    }

    /// One line for humans: every finding, or why the image passed.
    pub fn message(&self) -> String {
        if !self.findings.is_empty() {
            let all: Vec<&str> = self.findings.iter().map(|f| f.message.as_str()).collect();
            return bounded(&all.join("; "), MAX_REASON_LEN);
        }
        let image = quote(&self.image);
        match &self.trust {
            Trust::Trusted(p) => format!("image {image} is allowed: trusted by {p}"),
            _ => format!(
                "image {image} is allowed (no registry policy: policy.trustedRegistries is empty)"
            ),
        }
    }
}

/// Judges one parsed reference against the policy. Pure and total.
///
/// Pass the reference as written in the manifest or pod (its *name*), not the
/// mirror it was or will be pulled through.
///
/// `denyLatest` is about mutability: a reference with a digest is pulled by
/// that digest whatever its tag says, so `name:latest@sha256:…` passes it; a
/// reference with neither tag nor digest means `:latest` and fails it.
pub fn evaluate(image: &ImageRef, policy: &Policy) -> Verdict {
    judge(image, policy, false)
}

/// [`evaluate`] with only the registry rule: whether `pin` may pin this image.
///
/// Pinning is what satisfies `requireDigest` and `denyLatest` (a pinned
/// reference carries a digest), so judging an image about to be pinned by them
/// would refuse exactly the work that fixes it. `pin --check`, `status` and
/// `doctor` use [`evaluate`] to show what the webhook would say of the file as
/// it is.
pub fn evaluate_registry(image: &ImageRef, policy: &Policy) -> Verdict {
    judge(image, policy, true)
}

fn judge(image: &ImageRef, policy: &Policy, registry_only: bool) -> Verdict {
    let quoted = quote(image.original());
    let mut findings = Vec::new();
    let trust = if !policy.has_registry_policy() {
        Trust::NoPolicy
    } else if let Some(p) = policy.trusted_by(image) {
        Trust::Trusted(p.clone())
    } else {
        findings.push(Finding {
            rule: Rule::UntrustedRegistry,
            severity: match policy.untrusted {
                Untrusted::Warn => Severity::Warn,
                Untrusted::Deny => Severity::Deny,
            },
            message: format!(
                "image {quoted} (repository {}) is not under any trusted registry prefix \
                 (policy.trustedRegistries: {})",
                image.canonical_name(),
                bounded(&join_display(&policy.trusted_registries, ", "), 300)
            ),
        });
        Trust::Untrusted
    };
    if !registry_only && policy.require_digest && image.digest().is_none() {
        findings.push(Finding {
            rule: Rule::NotDigestPinned,
            severity: Severity::Deny,
            message: format!("image {quoted} is not pinned by digest (policy.requireDigest)"),
        });
    }
    if !registry_only && policy.deny_latest && image.digest().is_none() {
        let message = match image.tag() {
            Some("latest") => Some(format!(
                "image {quoted} uses the mutable tag \"latest\" (policy.denyLatest)"
            )),
            None => Some(format!(
                "image {quoted} has neither tag nor digest, so it means \":latest\" \
                 (policy.denyLatest)"
            )),
            Some(_) => None,
        };
        if let Some(message) = message {
            findings.push(Finding {
                rule: Rule::LatestTag,
                severity: Severity::Deny,
                message,
            });
        }
    }
    sort_findings(&mut findings);
    Verdict {
        image: image.original().to_string(),
        trust,
        findings,
    }
}

/// [`evaluate`] for an image string from a pod spec or the command line. An
/// unparsable reference is denied (`invalid-reference`): no runtime could pull
/// it, and its registry cannot be known.
pub fn evaluate_str(image: &str, policy: &Policy) -> Verdict {
    match ImageRef::parse(image) {
        Ok(r) => evaluate(&r, policy),
        Err(e) => Verdict {
            image: image.to_string(),
            trust: Trust::Unknown,
            findings: vec![Finding {
                rule: Rule::InvalidReference,
                severity: Severity::Deny,
                message: format!(
                    "image {} is not a valid image reference: {}",
                    quote(image),
                    bounded(&e.reason, 200)
                ),
            }],
        },
    }
}

fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by_key(|f| (f.severity == Severity::Warn, f.rule));
}

fn join_display<T: fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// `s` quoted with Rust escapes (control characters from a hostile pod spec
/// cannot forge log lines) and cut to a bounded length.
fn quote(s: &str) -> String {
    if s.len() <= MAX_QUOTED_IMAGE {
        format!("{s:?}")
    } else {
        format!("{:?}…", bounded(s, MAX_QUOTED_IMAGE))
    }
}

/// At most `max` bytes of `s`, cut on a character boundary, marked with `…`
/// when cut.
pub(crate) fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn policy(trusted: &[&str]) -> Policy {
        Policy::from_raw(&RawPolicy {
            trusted_registries: Some(trusted.iter().map(|s| s.to_string()).collect()),
            ..RawPolicy::default()
        })
        .unwrap()
    }

    fn yaml(s: &str) -> Result<Policy, String> {
        serde_norway::from_str::<Policy>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn deserialises_camel_case_with_defaults() {
        let p = yaml(
            "trustedRegistries: [registry.k8s.io/, index.docker.io/library]\n\
             untrusted: deny\nrequireDigest: true\ndenyLatest: true\n\
             exemptNamespaces: [tools]\nallowBreakGlass: true\n",
        )
        .unwrap();
        assert_eq!(
            join_display(&p.trusted_registries, ","),
            "registry.k8s.io,docker.io/library"
        );
        assert_eq!(p.untrusted, Untrusted::Deny);
        assert!(p.require_digest && p.deny_latest && p.allow_break_glass);
        assert_eq!(p.exempt_namespaces, ["tools"]);

        let p = yaml("{}").unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.untrusted, Untrusted::Warn);
        assert!(!p.has_registry_policy());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values_naming_the_key() {
        let e = yaml("trustedRegistry: [registry.k8s.io]").unwrap_err();
        assert!(e.contains("trustedRegistry"), "{e}");
        let e = yaml("untrusted: block").unwrap_err();
        assert!(e.contains("warn") && e.contains("deny"), "{e}");
        let e =
            yaml("trustedRegistries: [registry.k8s.io, 'registry.k8s.io/pause:3.9']").unwrap_err();
        assert!(e.contains("policy.trustedRegistries[1]"), "{e}");
        assert!(e.contains("\"registry.k8s.io/pause:3.9\""), "{e}");
        let e = yaml("exemptNamespaces: [ok, 'kube-*']").unwrap_err();
        assert!(
            e.contains("policy.exemptNamespaces[1]") && e.contains("kube-*"),
            "{e}"
        );
        let e = Policy::from_raw(&RawPolicy {
            trusted_registries: Some(vec!["".into()]),
            ..RawPolicy::default()
        })
        .unwrap_err();
        assert_eq!(
            e,
            PolicyError::Invalid {
                key: "policy.trustedRegistries[0]".into(),
                reason: "trusted registry prefix \"\": prefix is empty".into()
            }
        );
    }

    #[test]
    fn merges_per_key_and_dedupes() {
        let base = RawPolicy {
            trusted_registries: Some(vec!["registry.k8s.io".into()]),
            untrusted: Some(Untrusted::Deny),
            ..RawPolicy::default()
        };
        let later = RawPolicy {
            trusted_registries: Some(vec!["a.io".into(), "A.io/".into()]),
            deny_latest: Some(true),
            ..RawPolicy::default()
        };
        assert_eq!(later.keys_set(), ["trustedRegistries", "denyLatest"]);
        let p = Policy::from_raw(&base.merge(later)).unwrap();
        assert_eq!(join_display(&p.trusted_registries, ","), "a.io");
        assert_eq!(p.untrusted, Untrusted::Deny);
        assert!(p.deny_latest);
    }

    #[test]
    fn empty_trust_list_is_no_policy_and_says_so() {
        let v = evaluate_str("evil.com/x:1", &Policy::default());
        assert!(v.allowed());
        assert_eq!(v.trust, Trust::NoPolicy);
        assert!(
            v.message().contains("no registry policy"),
            "{}",
            v.message()
        );
        assert!(Policy::default().summary()[0].contains("no registry policy"));
    }

    #[test]
    fn untrusted_warns_or_denies() {
        let mut p = policy(&["registry.k8s.io"]);
        let v = evaluate_str("registry.k8s.io.evil.com/pause:3.9", &p);
        assert!(v.allowed());
        assert_eq!(v.trust, Trust::Untrusted);
        assert_eq!(v.warnings().next().unwrap().rule, Rule::UntrustedRegistry);
        p.untrusted = Untrusted::Deny;
        let v = evaluate_str("registry.k8s.io.evil.com/pause:3.9", &p);
        assert!(!v.allowed());
        assert_eq!(v.reason(), Some(Rule::UntrustedRegistry));
        let m = v.message();
        assert!(
            m.contains("\"registry.k8s.io.evil.com/pause:3.9\"")
                && m.contains("policy.trustedRegistries: registry.k8s.io"),
            "{m}"
        );
        let v = evaluate_str("registry.k8s.io/pause:3.9", &p);
        assert!(v.allowed());
        assert_eq!(
            v.trust,
            Trust::Trusted(TrustedPrefix::parse("registry.k8s.io").unwrap())
        );
        assert!(v.message().contains("trusted by registry.k8s.io"));
        // Already pinned does not mean trusted.
        let v = evaluate_str(&format!("evil.com/kube-apiserver:v1@{D}"), &p);
        assert_eq!(v.reason(), Some(Rule::UntrustedRegistry));
    }

    #[test]
    fn digest_and_latest_rules() {
        let p = Policy {
            require_digest: true,
            deny_latest: true,
            ..Policy::default()
        };
        let table: &[(String, &[Rule])] = &[
            ("nginx".into(), &[Rule::NotDigestPinned, Rule::LatestTag]),
            (
                "nginx:latest".into(),
                &[Rule::NotDigestPinned, Rule::LatestTag],
            ),
            ("nginx:1.25".into(), &[Rule::NotDigestPinned]),
            ("nginx:latestish".into(), &[Rule::NotDigestPinned]),
            (format!("nginx@{D}"), &[]),
            (format!("nginx:latest@{D}"), &[]),
            (format!("registry.k8s.io/pause:3.9@{D}"), &[]),
            ("Nginx".into(), &[Rule::InvalidReference]),
            ("".into(), &[Rule::InvalidReference]),
        ];
        for (image, want) in table {
            let v = evaluate_str(image, &p);
            let got: Vec<Rule> = v.findings.iter().map(|f| f.rule).collect();
            assert_eq!(&got, want, "{image:?}");
            assert_eq!(v.allowed(), want.is_empty(), "{image:?}");
            for f in &v.findings {
                assert!(f.message.contains(&format!("{image:?}")), "{}", f.message);
                if f.rule != Rule::InvalidReference {
                    assert!(f.message.contains(f.rule.key()), "{}", f.message);
                }
            }
        }
        let v = evaluate_str("nginx", &p);
        assert_eq!(v.reason(), Some(Rule::NotDigestPinned));
        let codes: Vec<&str> = [
            Rule::InvalidReference,
            Rule::UntrustedRegistry,
            Rule::NotDigestPinned,
            Rule::LatestTag,
        ]
        .map(Rule::code)
        .to_vec();
        assert_eq!(
            codes,
            [
                "invalid-reference",
                "untrusted-registry",
                "not-digest-pinned",
                "latest-tag"
            ]
        );
    }

    #[test]
    fn registry_only_evaluation_for_pinning() {
        let mut p = policy(&["registry.k8s.io"]);
        p.require_digest = true;
        p.deny_latest = true;
        let image = ImageRef::parse("registry.k8s.io/pause").unwrap();
        assert_eq!(evaluate(&image, &p).reason(), Some(Rule::NotDigestPinned));
        assert!(evaluate_registry(&image, &p).allowed());
        p.untrusted = Untrusted::Deny;
        let image = ImageRef::parse("evil.com/pause:latest").unwrap();
        let v = evaluate_registry(&image, &p);
        assert_eq!(v.reason(), Some(Rule::UntrustedRegistry));
        assert_eq!(v.findings.len(), 1);
    }

    #[test]
    fn messages_are_bounded_and_escaped() {
        let long = format!("evil.com/{}\n", "a".repeat(5000));
        let v = evaluate_str(&long, &policy(&["registry.k8s.io"]));
        assert_eq!(v.reason(), Some(Rule::InvalidReference));
        let m = v.message();
        assert!(m.len() <= MAX_REASON_LEN, "{}", m.len());
        assert!(!m.contains('\n'));
        assert_eq!(bounded("äää", 4), "…");
        assert_eq!(bounded("abcdef", 5), "ab…");
        assert_eq!(bounded("abc", 3), "abc");
    }
}
