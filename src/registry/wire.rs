//! The HTTP wire details of the registry client ([`super::client`]): origins
//! and authorities, reading bounded bodies, turning answers into typed
//! failures, credential headers marked sensitive, retry backoff.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};

use super::auth::{parse_challenge, Challenge};
use super::verify;
use super::{classify_transport, ErrorKind, Failure, Resolution};
use crate::credentials::Credential;
use crate::reference::{Digest, ImageRef};

/// distribution refuses manifests larger than this; so do we.
pub(super) const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The final answer to a request and where it came from.
pub(super) struct Followed {
    pub(super) resp: reqwest::Response,
    pub(super) url: Url,
    /// Whether `url` has the origin the request was made for.
    pub(super) same_origin: bool,
}

/// Scheme, host and port: the unit secrets are bound to.
pub(super) fn origin(url: &Url) -> (String, Option<String>, Option<u16>) {
    (
        url.scheme().to_string(),
        url.host_str().map(str::to_string),
        url.port_or_known_default(),
    )
}

/// `host[:port]` as written in certs directories and `insecureRegistries`.
pub(super) fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

pub(super) fn parse_url(url: &str) -> Result<Url, Failure> {
    Url::parse(url).map_err(|e| {
        Failure::new(
            ErrorKind::Protocol,
            format!("{} is not a URL: {e}", super::excerpt(url)),
        )
    })
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps only ever grow by whole entries, so a panic elsewhere cannot
    // leave one half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The digest a 200 answer to a manifest HEAD claims. Only drift reports use
/// it: nothing was seen to hash, so it is never written into a manifest.
pub(super) fn peeked(got: &Followed) -> Result<Resolution, Failure> {
    match verify::claimed_digest(got.resp.headers())? {
        Some(digest) => Ok(Resolution {
            digest,
            media_type: header_str(&got.resp, CONTENT_TYPE.as_str()),
            via: None,
        }),
        None => Err(Failure::new(
            ErrorKind::Protocol,
            format!("HEAD {} answered without Docker-Content-Digest", got.url),
        )),
    }
}

/// Reads and verifies a 200 answer to a manifest GET.
pub(super) async fn accept(got: Followed) -> Result<Resolution, Failure> {
    let from = if got.same_origin {
        String::new()
    } else {
        format!("via redirect to {}: ", authority(&got.url))
    };
    let with_origin = |mut f: Failure| {
        f.detail.insert_str(0, &from);
        f
    };
    let claimed = verify::claimed_digest(got.resp.headers()).map_err(with_origin)?;
    let content_type = header_str(&got.resp, CONTENT_TYPE.as_str());
    let body = read_limited(got.resp, MAX_MANIFEST_BYTES).await?;
    let digest = Digest::sha256_of(&body);
    if let Some(claimed) = &claimed {
        verify::check_claim(claimed, &body, &digest).map_err(with_origin)?;
    }
    let media_type = verify::manifest_type(&body, content_type.as_deref()).map_err(with_origin)?;
    Ok(Resolution {
        digest,
        media_type: Some(media_type),
        via: None,
    })
}

/// The failure for a manifest answer other than 200 or a first 401.
pub(super) fn refusal(
    status: StatusCode,
    got: &Followed,
    image: &ImageRef,
    cred: Option<&Credential>,
) -> Failure {
    match status {
        StatusCode::UNAUTHORIZED => unauthorized(image, cred),
        StatusCode::FORBIDDEN => Failure::new(
            ErrorKind::Forbidden,
            format!("access to {} denied", image.path()),
        ),
        StatusCode::NOT_FOUND => Failure::new(
            ErrorKind::NotFound,
            format!(
                "manifest {}:{} not found",
                image.path(),
                image.tag_or_latest()
            ),
        ),
        s => Failure::new(
            ErrorKind::Protocol,
            format!("GET {} answered unexpected {s}", got.url),
        ),
    }
}

pub(super) fn unauthorized(image: &ImageRef, cred: Option<&Credential>) -> Failure {
    let why = match cred {
        Some(_) => "the registry rejected the credentials configured for",
        None => "no credentials in the docker config match",
    };
    Failure::new(
        ErrorKind::Unauthorized,
        format!("{why} {}", image.canonical_name()),
    )
}

pub(super) fn challenge_of(resp: &reqwest::Response) -> Result<Challenge, Failure> {
    match resp.headers().get(WWW_AUTHENTICATE) {
        Some(v) => parse_challenge(v.to_str().map_err(|_| {
            Failure::new(
                ErrorKind::Protocol,
                "malformed WWW-Authenticate header: not ASCII",
            )
        })?),
        None => Err(Failure::new(
            ErrorKind::Protocol,
            format!(
                "{} answered 401 without a WWW-Authenticate challenge",
                resp.url()
            ),
        )),
    }
}

pub(super) fn basic(c: &Credential) -> HeaderValue {
    let raw = format!("{}:{}", c.username, c.password.expose());
    secret_header(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

pub(super) fn secret_header(value: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

pub(super) fn header_str(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

pub(super) async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, Failure> {
    let url = resp.url().to_string();
    let mut body = Vec::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                let (kind, text) = classify_transport(&e);
                return Err(Failure::new(kind, format!("reading {url}: {text}")));
            }
        };
        if body.len() + chunk.len() > limit {
            return Err(Failure::new(
                ErrorKind::Protocol,
                format!("{url} sent more than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(super) fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200) * 2u32.saturating_pow(attempt);
    // Cheap jitter so concurrent retries do not arrive in lockstep.
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100)
        .unwrap_or(0);
    base.min(Duration::from_secs(5)) + Duration::from_millis(jitter.into())
}

pub(super) fn is_loopback(host: &str) -> bool {
    let h = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:80"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("auth.docker.io"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) < Duration::from_millis(400));
        assert!(backoff(2) >= Duration::from_millis(800));
        assert!(backoff(30) <= Duration::from_millis(5100));
    }

    #[test]
    fn origins_and_authorities() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            origin(&u("https://r.io/v2/")),
            origin(&u("https://r.io:443/x"))
        );
        assert_ne!(origin(&u("https://r.io/")), origin(&u("http://r.io/")));
        assert_ne!(origin(&u("http://r.io:1/")), origin(&u("http://r.io:2/")));
        assert_eq!(authority(&u("https://r.io:5000/v2/")), "r.io:5000");
        assert_eq!(authority(&u("https://r.io/v2/")), "r.io");
        assert_eq!(authority(&u("http://[::1]:80/")), "[::1]");
    }
}
