//! Resolving image references to manifest digests.
//!
//! [`Resolver`] is the seam between the pure planning code and the network:
//! [`HttpResolver`] talks the OCI distribution API the way containerd does,
//! and tests can substitute a fake. [`resolve_all`] owns the per-run rules:
//! each unique reference is asked once, a bounded number run concurrently,
//! and references that already carry a digest never reach the resolver.

mod auth;
pub mod cache;
mod client;
mod hosts;
pub(crate) mod tls;
mod verify;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

pub use client::HttpResolver;

use crate::config;
use crate::credentials::Keyring;
use crate::reference::{Digest, ImageRef};

/// What a tag resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The manifest digest: verified against the fetched bytes for a GET, the
    /// registry's claim for a HEAD, the reference's own when already pinned.
    pub digest: Digest,
    /// The manifest's media type, e.g. an OCI index for multi-arch tags.
    /// `None` when the reference was already pinned and nothing was asked.
    pub media_type: Option<String>,
    /// The hosts.toml mirror that answered, when not the registry itself.
    /// Reports show it; policy judges the image by its name, never by this.
    pub via: Option<String>,
}

/// Failure classes a caller or operator branches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not a reference a registry can be asked about (or already pinned).
    InvalidReference,
    /// The registry has no such repository or tag (404).
    NotFound,
    /// No credentials, or the ones tried were refused (401).
    Unauthorized,
    /// The registry refused access to the repository (403).
    Forbidden,
    /// The TLS handshake or certificate verification failed.
    Tls,
    /// A request, or the run's whole deadline, ran out.
    Timeout,
    /// The connection could not be made or broke.
    Connect,
    /// The registry's digest is malformed, ambiguous, or does not match the
    /// bytes.
    BadDigest,
    /// Too many requests (429), after any retries.
    RateLimited,
    /// The registry kept failing (5xx), after any retries.
    Server,
    /// An answer staticpin cannot use: not a manifest, an unexpected status, a
    /// malformed challenge or token answer, an unsupported digest algorithm.
    Protocol,
    /// staticpin's own setup is wrong: hosts.toml, the HTTP client, credentials
    /// that would go over plain HTTP, or offline with no cached digest.
    Config,
}

impl ErrorKind {
    /// The kind in words, as messages print it; `metrics` derives its label
    /// from it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidReference => "invalid reference",
            ErrorKind::NotFound => "not found",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Tls => "TLS error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connection failed",
            ErrorKind::BadDigest => "bad digest",
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::Server => "server error",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Config => "configuration error",
        }
    }

    /// Whether the same request may succeed if simply tried again later.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::Connect | ErrorKind::RateLimited | ErrorKind::Server
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure for one image at one registry. The message never contains
/// credentials: details are built only from statuses, headers we chose to
/// quote, and transport errors (which carry URLs without userinfo).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ResolveError {
    /// The reference as the manifest spells it.
    pub image: String,
    /// The registry host the reference names (not a mirror that was tried).
    pub registry: String,
    /// The failure class, for retries and exit decisions.
    pub kind: ErrorKind,
    /// What happened, in words, with no credentials in it.
    pub detail: String,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ErrorKind::InvalidReference {
            // No registry was chosen; quote the text so stray spaces show.
            return write!(
                f,
                "invalid image reference {:?}: {}",
                self.image, self.detail
            );
        }
        write!(
            f,
            "{} (registry {}): {}: {}",
            self.image, self.registry, self.kind, self.detail
        )
    }
}

/// A failure not yet tied to an image (e.g. a host's TLS setup); cloned into
/// a [`ResolveError`] for every image that hits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Failure {
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
        }
    }

    pub(crate) fn for_image(self, image: &ImageRef) -> ResolveError {
        ResolveError {
            image: image.original().to_string(),
            registry: image.registry_host().to_string(),
            kind: self.kind,
            detail: self.detail,
        }
    }
}

/// Anything that can turn a tagged reference into a digest.
pub trait Resolver: Sync {
    /// The digest the tag names now, from a GET whose bytes are verified
    /// against it: what `pin` writes.
    fn resolve(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<Resolution, ResolveError>> + Send;

    /// The digest the tag names now, as cheaply as the registry allows (a
    /// HEAD's `Docker-Content-Digest`): for drift reports only, never to pin.
    /// The default asks [`resolve`](Resolver::resolve), which fakes rely on.
    fn head_digest(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<Resolution, ResolveError>> + Send {
        self.resolve(image)
    }
}

/// How to reach registries; built from flags and config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Credentials from the docker config kubelet would use.
    pub keyring: Keyring,
    /// containerd/docker style certs directories, searched in order.
    pub certs_dirs: Vec<PathBuf>,
    /// `host[:port]` entries for which TLS verification is off and plain HTTP allowed.
    pub insecure_registries: Vec<String>,
    /// Establishing one connection.
    pub connect_timeout: Duration,
    /// One whole request, including its body.
    pub request_timeout: Duration,
    /// Retries after the first attempt, for 429, 5xx and connection resets.
    pub max_retries: u32,
    /// Longest `Retry-After` staticpin will wait before giving up.
    pub max_retry_after: Duration,
    /// Registry requests in flight at once.
    pub concurrency: usize,
    /// The whole run's budget: images not resolved by then fail as timeouts,
    /// so an unattended run cannot hang on a registry that trickles.
    pub deadline: Duration,
}

impl Default for Settings {
    /// The config file's defaults, so a run without one (and `--check`)
    /// cannot drift from a run with one.
    fn default() -> Self {
        Settings {
            keyring: Keyring::default(),
            certs_dirs: config::DEFAULT_CERTS_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            insecure_registries: Vec::new(),
            connect_timeout: config::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: config::DEFAULT_TIMEOUT,
            max_retries: config::DEFAULT_RETRIES,
            max_retry_after: Duration::from_secs(30),
            concurrency: config::DEFAULT_CONCURRENCY,
            deadline: config::DEFAULT_DEADLINE,
        }
    }
}

/// What one question to a registry is about: host, repository, tag. Two
/// references with the same key get the same answer.
pub fn ask_key(r: &ImageRef) -> (String, String, String) {
    (
        r.registry_host().to_string(),
        r.path().to_string(),
        r.tag_or_latest().to_string(),
    )
}

/// Resolves every reference, in input order. Unique tagged references are
/// each asked once, at most `concurrency` at a time; references that already
/// carry a digest are answered without any request, which is what makes a
/// second run over pinned manifests silent on the network.
pub async fn resolve_all<R: Resolver>(
    resolver: &R,
    refs: &[ImageRef],
    concurrency: usize,
) -> Vec<Result<Resolution, ResolveError>> {
    let mut unique: Vec<&ImageRef> = Vec::new();
    let mut seen = HashMap::new();
    for r in refs.iter().filter(|r| r.digest().is_none()) {
        seen.entry(ask_key(r)).or_insert_with(|| {
            unique.push(r);
            unique.len() - 1
        });
    }
    let answers: Vec<(usize, Result<Resolution, ResolveError>)> =
        stream::iter(unique.iter().enumerate())
            .map(|(i, r)| async move { (i, resolver.resolve(r).await) })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    let by_index: HashMap<usize, Result<Resolution, ResolveError>> = answers.into_iter().collect();
    refs.iter()
        .map(|r| match r.digest() {
            Some(d) => Ok(Resolution {
                digest: d.clone(),
                media_type: None,
                via: None,
            }),
            None => {
                let answer = seen
                    .get(&ask_key(r))
                    .and_then(|i| by_index.get(i))
                    .cloned()
                    .unwrap_or_else(|| {
                        Err(Failure::new(ErrorKind::Protocol, "no answer was recorded")
                            .for_image(r))
                    });
                // A shared answer must still name the spelling this caller used.
                answer.map_err(|e| ResolveError {
                    image: r.original().to_string(),
                    ..e
                })
            }
        })
        .collect()
}

/// Registry text (a challenge, a body, a header) as it may be quoted in a
/// message: escaped, and cut to about 200 characters on a character boundary,
/// so a hostile or broken registry cannot flood the operator's terminal.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{:?}… ({} bytes in all)", &text[..cut], text.len()),
        None => format!("{text:?}"),
    }
}

/// Sorts a transport error into a failure class, with the readable chain of
/// causes (the top-level "error sending request" alone does not say what to
/// fix). One classifier for every HTTP client staticpin runs: `health` keeps
/// a drifted copy (`describe`) that is to call this instead. A timeout is
/// [`ErrorKind::Timeout`], any rustls failure (or a handshake that met plain
/// HTTP) [`ErrorKind::Tls`], everything else [`ErrorKind::Connect`], which
/// the registry client retries.
pub fn classify_transport(e: &reqwest::Error) -> (ErrorKind, String) {
    use crate::trust::Transport;
    let (kind, text) = crate::trust::classify(e);
    let kind = match kind {
        Transport::Timeout => ErrorKind::Timeout,
        Transport::Redirect => ErrorKind::Protocol,
        Transport::Tls => ErrorKind::Tls,
        Transport::Connect | Transport::Other => ErrorKind::Connect,
    };
    (kind, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fake {
        calls: AtomicUsize,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl Resolver for Fake {
        async fn resolve(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if image.path().contains("missing") {
                return Err(Failure::new(ErrorKind::NotFound, "no such tag").for_image(image));
            }
            Ok(Resolution {
                digest: Digest::sha256_of(image.normalized().as_bytes()),
                media_type: Some("x".into()),
                via: None,
            })
        }
    }

    #[tokio::test]
    async fn dedupes_bounds_and_skips_pinned() {
        let fake = Fake {
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        };
        let pinned = format!("r.io/a@sha256:{}", "0".repeat(64));
        let names: Vec<String> = (0..10)
            .map(|i| format!("r.io/img{i}:v"))
            .chain([
                "nginx".into(),
                "docker.io/library/nginx:latest".into(),
                pinned.clone(),
            ])
            .chain(["r.io/missing:v".into()])
            .collect();
        let refs: Vec<ImageRef> = names.iter().map(|n| ImageRef::parse(n).unwrap()).collect();
        let out = resolve_all(&fake, &refs, 3).await;
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            12,
            "nginx twice is one request, pinned none"
        );
        // Bounded, and actually parallel: 12 slow requests under a bound
        // of 3 overlap.
        let max = fake.max_in_flight.load(Ordering::SeqCst);
        assert!((2..=3).contains(&max), "{max} in flight at once");
        assert_eq!(out[10].as_ref().unwrap(), out[11].as_ref().unwrap());
        assert_eq!(
            out[12].as_ref().unwrap().digest.to_string(),
            pinned.split('@').nth(1).unwrap()
        );
        assert_eq!(out[13].as_ref().unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn excerpts_are_short_and_cut_on_char_boundaries() {
        assert_eq!(excerpt("a\"b"), "\"a\\\"b\"");
        for unit in ["é", "✓", "😀", "a"] {
            for extra in 0..4 {
                let text = format!("{}{}", "x".repeat(extra), unit.repeat(500));
                let e = excerpt(&text);
                assert!(e.chars().count() < 240, "{e}");
                assert!(e.contains("bytes in all"), "{e}");
            }
        }
    }
}
