//! Registry authentication: `WWW-Authenticate` challenges and the token flow.
//!
//! Parsing is strict because a malformed challenge is a registry bug the
//! operator needs to hear about, not something to guess around. Tokens are
//! cached until shortly before they expire, keyed by realm, service, scope
//! and a hash of the credential, so two credentials never share a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::credentials::Secret;
use crate::reference::Digest;

use super::{ErrorKind, Failure};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// The registry answered without asking for credentials.
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses an RFC 7235 challenge: `Scheme k="v", k2=v2`.
pub(crate) fn parse_challenge(header: &str) -> Result<Challenge, Failure> {
    let malformed = |why: &str| {
        Failure::new(
            ErrorKind::Protocol,
            format!(
                "malformed WWW-Authenticate header {}: {why}",
                super::excerpt(header)
            ),
        )
    };
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], header[i..].trim_start()),
        None => (header, ""),
    };
    let params = parse_params(rest).map_err(|w| malformed(&w))?;
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Ok(Challenge::Basic),
        "bearer" => {
            let realm = params
                .get("realm")
                .filter(|r| !r.is_empty())
                .ok_or_else(|| malformed("Bearer challenge without realm"))?;
            if !(realm.starts_with("https://") || realm.starts_with("http://")) {
                return Err(malformed("realm is not an http(s) URL"));
            }
            Ok(Challenge::Bearer {
                realm: realm.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
        }
        "" => Err(malformed("empty challenge")),
        other => Err(malformed(&format!(
            "unsupported scheme {}",
            super::excerpt(other)
        ))),
    }
}

fn parse_params(s: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_ascii_lowercase();
        if key.is_empty() || i >= b.len() || b[i] != b'=' {
            return Err(format!(
                "parameter {} has no value",
                super::excerpt(&s[start..i])
            ));
        }
        i += 1;
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut v = String::new();
            // Walk characters, not bytes: an escaped multi-byte character
            // must not leave `i` inside it.
            let mut chars = s[i..].char_indices();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted string".into()),
                    Some((at, '"')) => {
                        i += at + 1;
                        break;
                    }
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => v.push(c),
                        None => return Err("unterminated quoted string".into()),
                    },
                    Some((_, c)) => v.push(c),
                }
            }
            v
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            s[vs..i].to_string()
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// A token server's answer (distribution `token.md`).
#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Default lifetime when the server omits `expires_in`, per the spec.
const DEFAULT_TOKEN_LIFETIME: u64 = 60;

/// Longest a token is kept, whatever the server says: a run is minutes, and
/// an absurd `expires_in` must not overflow the clock arithmetic.
const MAX_TOKEN_LIFETIME: u64 = 3600;

pub(crate) fn parse_token_response(body: &[u8]) -> Result<(Secret, Duration), Failure> {
    // serde quotes offending values, which here may be a token: keep only
    // the position.
    let r: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            ErrorKind::Protocol,
            format!(
                "token server sent an unusable answer (at line {} column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let token = r
        .token
        .filter(|t| !t.is_empty())
        .or(r.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| Failure::new(ErrorKind::Protocol, "token server response has no token"))?;
    let life = r
        .expires_in
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .min(MAX_TOKEN_LIFETIME);
    Ok((Secret::new(token), Duration::from_secs(life)))
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: String,
    scope: String,
    /// sha256 of `user:password`, so the cache never holds a second copy of the secret.
    identity: String,
}

/// One slot per key; concurrent resolutions of the same repository wait on
/// the slot, so each token is fetched once however many tags need it.
type Slot = Arc<tokio::sync::Mutex<Option<(Secret, Instant)>>>;

#[derive(Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Slot>>,
}

impl TokenCache {
    pub(crate) fn key(
        realm: &str,
        service: &str,
        scope: &str,
        cred: Option<&crate::credentials::Credential>,
    ) -> CacheKey {
        let identity = match cred {
            Some(c) => {
                Digest::sha256_of(format!("{}:{}", c.username, c.password.expose()).as_bytes())
                    .to_string()
            }
            None => "anonymous".to_string(),
        };
        CacheKey(TokenKey {
            realm: realm.into(),
            service: service.into(),
            scope: scope.into(),
            identity,
        })
    }

    /// The cached token, or the result of `fetch` (cached until shortly
    /// before it expires, so a token never runs out mid-request).
    pub(crate) async fn get_or_fetch<F, Fut>(
        &self,
        key: CacheKey,
        fetch: F,
    ) -> Result<Secret, Failure>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Secret, Duration), Failure>>,
    {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.0)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some((token, until)) = slot.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = fetch().await?;
        // The token server chooses `expires_in`; a day bounds the Instant arithmetic.
        let lifetime = lifetime.min(crate::config::duration::MAX);
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        if let Some(until) = Instant::now().checked_add(lifetime - margin) {
            *slot = Some((token.clone(), until));
        }
        Ok(token)
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey(TokenKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="test""#).unwrap(),
            Challenge::Basic
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#
            )
            .unwrap(),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            }
        );
        assert!(matches!(
            parse_challenge("bearer realm=http://127.0.0.1:1/token, service=svc").unwrap(),
            Challenge::Bearer { .. }
        ));
    }

    #[test]
    fn rejects_malformed_challenges() {
        for h in [
            "",
            "Bearer",
            r#"Bearer service="x""#,
            r#"Bearer realm="https://x"#,
            "Bearer realm",
            r#"Bearer realm="ftp://x""#,
            r#"Negotiate abc="x""#,
        ] {
            let e = parse_challenge(h).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Protocol, "{h}");
            assert!(
                e.detail.contains("malformed WWW-Authenticate"),
                "{}",
                e.detail
            );
        }
    }

    #[test]
    fn quoted_challenges_are_cut_and_escapes_keep_char_boundaries() {
        let long = format!("Bearer realm=\"https://x/{}", "ü".repeat(5000));
        let e = parse_challenge(&long).unwrap_err();
        assert!(e.detail.chars().count() < 400, "{}", e.detail);
        assert_eq!(
            parse_challenge("Bearer realm=\"https://a/\\é\\\"\", service=\"s\\✓\"").unwrap(),
            Challenge::Bearer {
                realm: "https://a/é\"".into(),
                service: Some("s✓".into()),
                scope: None,
            }
        );
        for h in ["Bearer realm=\"\\é", "Bearer realm=\"\\", "Bearer a=\"é\\"] {
            assert!(parse_challenge(h).is_err(), "{h}");
        }
    }

    proptest::proptest! {
        #[test]
        fn challenge_parser_never_panics(s in "\\PC{0,300}") {
            let _ = parse_challenge(&s);
        }

        #[test]
        fn challenge_parser_never_panics_near_valid(
            scheme in "(Bearer|Basic|bearer| |)",
            params in proptest::collection::vec(("[a-z]{0,6}", "[\"\\\\=, a-zé✓/:]{0,12}"), 0..5),
        ) {
            let mut h = scheme;
            h.push(' ');
            for (k, v) in params {
                h.push_str(&format!("{k}={v},"));
            }
            let _ = parse_challenge(&h);
        }

        #[test]
        fn token_response_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_token_response(&bytes);
        }
    }

    #[test]
    fn a_token_lifetime_beyond_the_clock_is_no_panic() {
        let body = format!(r#"{{"token":"t","expires_in":{}}}"#, u64::MAX);
        let (_, life) = parse_token_response(body.as_bytes()).unwrap();
        let cache = TokenCache::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let k = || TokenCache::key("r", "s", "scope", None);
        rt.block_on(async {
            for _ in 0..2 {
                cache
                    .get_or_fetch(k(), || async move { Ok((Secret::new("t"), life)) })
                    .await
                    .unwrap();
            }
        });
    }

    #[test]
    fn token_response_defaults_and_cache_expiry() {
        let (t, life) = parse_token_response(br#"{"access_token":"abc"}"#).unwrap();
        assert_eq!(t.expose(), "abc");
        assert_eq!(life, Duration::from_secs(60));
        assert!(parse_token_response(br#"{"token":""}"#).is_err());
        let cache = TokenCache::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let fetches = std::sync::atomic::AtomicUsize::new(0);
        let fetch = |life: Duration| {
            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Ok((Secret::new("t"), life)) }
        };
        let k = || TokenCache::key("r", "s", "scope", None);
        rt.block_on(async {
            cache
                .get_or_fetch(k(), || fetch(Duration::from_secs(60)))
                .await
                .unwrap();
            cache
                .get_or_fetch(k(), || fetch(Duration::from_secs(60)))
                .await
                .unwrap();
        });
        assert_eq!(
            fetches.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "cached"
        );
        let other = TokenCache::default();
        rt.block_on(async {
            other
                .get_or_fetch(k(), || fetch(Duration::from_millis(1)))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            other
                .get_or_fetch(k(), || fetch(Duration::from_millis(1)))
                .await
                .unwrap();
        });
        assert_eq!(
            fetches.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "expired tokens are fetched again"
        );
    }
}
