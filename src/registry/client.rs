//! The OCI distribution client: HEAD a manifest, fall back to GET, verify.
//!
//! This is written on reqwest (the HTTP stack `oci-client` itself uses)
//! rather than through `oci-client`, because pinning needs control that crate
//! does not expose: per-host CA and client-certificate trust, typed 429/5xx
//! handling with `Retry-After`, kubelet's try-each-credential order, and the
//! exact bytes of a GET so the digest can be computed and checked here.
//!
//! One endpoint probe (`GET /v2/`) per host learns the auth scheme (and, for
//! insecure hosts, whether it speaks TLS) once, shared by every image on that
//! host; afterwards every manifest request goes out already authenticated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tokio::sync::OnceCell;

use super::auth::{parse_challenge, parse_token_response, Challenge, TokenCache};
use super::hosts::{load as load_hosts, HostEndpoint};
use super::tls::{client_config, find_host_certs, HostCerts};
use super::{ErrorKind, Failure, Resolution, ResolveError, Resolver, Settings};
use crate::credentials::Credential;
use crate::reference::{Digest, ImageRef};

/// Every manifest type, so a multi-arch tag answers with its index digest
/// (a narrower list makes registries serve a platform manifest or a 404).
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json";

/// distribution refuses manifests larger than this; so do we.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

pub struct HttpResolver {
    settings: Settings,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    tokens: TokenCache,
}

struct Host {
    /// `host[:port]`, for messages.
    name: String,
    client: Result<reqwest::Client, Failure>,
    /// From hosts.toml: a fixed URL. Otherwise the scheme is probed.
    fixed: Option<HostEndpoint>,
    insecure: bool,
    endpoint: OnceCell<Result<Endpoint, Failure>>,
}

#[derive(Clone)]
struct Endpoint {
    base: String,
    challenge: Challenge,
    override_path: bool,
    /// `?ns=<namespace>` for mirrors, as containerd sends it.
    ns: Option<String>,
    headers: HeaderMap,
}

impl Endpoint {
    fn manifest_url(&self, image: &ImageRef) -> String {
        let prefix = if self.override_path { "" } else { "/v2" };
        let mut url = format!(
            "{}{prefix}/{}/manifests/{}",
            self.base,
            image.path(),
            image.tag_or_latest()
        );
        if let Some(ns) = &self.ns {
            url.push_str("?ns=");
            url.push_str(ns);
        }
        url
    }
}

impl HttpResolver {
    pub fn new(settings: Settings) -> HttpResolver {
        HttpResolver {
            settings,
            hosts: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
        }
    }

    fn is_insecure(&self, host: &str) -> bool {
        self.settings.insecure_registries.iter().any(|h| {
            h.trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
                == host
        })
    }

    fn build_client(&self, certs: &HostCerts, insecure: bool) -> Result<reqwest::Client, Failure> {
        client_config(certs, insecure).and_then(|tls| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .connect_timeout(self.settings.connect_timeout)
                .timeout(self.settings.request_timeout)
                .user_agent(concat!("staticpin/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| Failure::new(ErrorKind::Config, format!("HTTP client: {e}")))
        })
    }

    /// The hosts to ask for this image, in containerd's order: hosts.toml's
    /// resolving mirrors then its server, or else the registry itself.
    fn hosts(&self, image: &ImageRef) -> Result<Vec<Arc<Host>>, Failure> {
        let default_server = format!("https://{}", image.registry_host());
        let configured = load_hosts(&self.settings.certs_dirs, image.domain(), &default_server)?;
        let mut table = self.hosts.lock().expect("host table poisoned");
        let mut get = |key: String, make: &dyn Fn() -> Host| {
            table.entry(key).or_insert_with(|| Arc::new(make())).clone()
        };
        Ok(match configured {
            Some(endpoints) => endpoints
                .into_iter()
                .map(|ep| {
                    get(format!("{ep:?}"), &|| {
                        let name = ep.authority().to_string();
                        let insecure = ep.skip_verify || self.is_insecure(&name);
                        Host {
                            client: self.build_client(&ep.certs, insecure),
                            name,
                            fixed: Some(ep.clone()),
                            insecure,
                            endpoint: OnceCell::new(),
                        }
                    })
                })
                .collect(),
            None => {
                let name = image.registry_host().to_string();
                vec![get(name.clone(), &|| {
                    let insecure = self.is_insecure(&name) || self.is_insecure(image.domain());
                    let certs =
                        find_host_certs(&self.settings.certs_dirs, &[&name, image.domain()]);
                    Host {
                        client: self.build_client(&certs, insecure),
                        name: name.clone(),
                        fixed: None,
                        insecure,
                        endpoint: OnceCell::new(),
                    }
                })]
            }
        })
    }

    /// Sends with bounded retries on 429, 5xx and connection failures.
    async fn send(
        &self,
        client: &reqwest::Client,
        method: Method,
        url: &str,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, Failure> {
        let mut attempt = 0;
        loop {
            let result = client
                .request(method.clone(), url)
                .headers(headers.clone())
                .send()
                .await;
            let wait = match result {
                Ok(resp)
                    if resp.status() == StatusCode::TOO_MANY_REQUESTS
                        || resp.status().is_server_error() =>
                {
                    let status = resp.status();
                    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                        ErrorKind::RateLimited
                    } else {
                        ErrorKind::Server
                    };
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let fail = |extra: String| {
                        Failure::new(kind, format!("{method} {url} answered {status}{extra}"))
                    };
                    if attempt >= self.settings.max_retries {
                        return Err(fail(format!(" after {} attempts", attempt + 1)));
                    }
                    match retry_after {
                        Some(w) if w > self.settings.max_retry_after => {
                            return Err(fail(format!(
                                " with Retry-After {} s, longer than the {} s staticpin waits",
                                w.as_secs(),
                                self.settings.max_retry_after.as_secs()
                            )))
                        }
                        Some(w) => w,
                        None => backoff(attempt),
                    }
                }
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    let f = classify(&e, url);
                    if f.kind != ErrorKind::Connect || attempt >= self.settings.max_retries {
                        return Err(f);
                    }
                    backoff(attempt)
                }
            };
            tracing::debug!("retrying {method} {url} in {wait:?}");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Probes `/v2/` once per host to learn its scheme and auth challenge.
    async fn endpoint(&self, host: &Host, image: &ImageRef) -> Result<Endpoint, Failure> {
        let mut ep = host
            .endpoint
            .get_or_init(|| async {
                let client = host.client.clone()?;
                if let Some(fixed) = &host.fixed {
                    let mut headers = HeaderMap::new();
                    for (k, v) in &fixed.headers {
                        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                            Failure::new(ErrorKind::Config, format!("hosts.toml header name {k:?} is invalid"))
                        })?;
                        let value = HeaderValue::from_str(v).map_err(|_| {
                            Failure::new(ErrorKind::Config, format!("hosts.toml header {k:?} has an invalid value"))
                        })?;
                        headers.append(name, value);
                    }
                    let mut ep = if fixed.override_path {
                        // No /v2/ to probe; a 401 on the first request says how to authenticate.
                        Endpoint {
                            base: fixed.url.clone(),
                            challenge: Challenge::None,
                            override_path: true,
                            ns: None,
                            headers: HeaderMap::new(),
                        }
                    } else {
                        self.probe(&client, &fixed.url).await?
                    };
                    ep.headers = headers;
                    return Ok(ep);
                }
                let https = format!("https://{}", host.name);
                match self.probe(&client, &https).await {
                    Err(f) if host.insecure && matches!(f.kind, ErrorKind::Tls | ErrorKind::Connect) => {
                        // Docker's rule for insecure registries: TLS if offered, else plain HTTP.
                        tracing::debug!("{}: no TLS ({}), using plain HTTP", host.name, f.detail);
                        self.probe(&client, &format!("http://{}", host.name)).await
                    }
                    Err(mut f) if f.kind == ErrorKind::Tls => {
                        f.detail.push_str(&format!(
                            " (if {} is a plain-HTTP or self-signed registry you trust, mark it with --insecure-registry {}; for a private CA put ca.crt under a certs directory)",
                            host.name, host.name
                        ));
                        Err(f)
                    }
                    other => other,
                }
            })
            .await
            .clone()?;
        if host.fixed.as_ref().is_some_and(|f| f.mirror) {
            ep.ns = Some(image.domain().to_string());
        }
        Ok(ep)
    }

    async fn probe(&self, client: &reqwest::Client, base: &str) -> Result<Endpoint, Failure> {
        let resp = self
            .send(
                client,
                Method::GET,
                &format!("{base}/v2/"),
                HeaderMap::new(),
            )
            .await?;
        let challenge = if resp.status() == StatusCode::UNAUTHORIZED {
            challenge_of(&resp)?
        } else {
            Challenge::None
        };
        Ok(Endpoint {
            base: base.to_string(),
            challenge,
            override_path: false,
            ns: None,
            headers: HeaderMap::new(),
        })
    }

    async fn authorization(
        &self,
        client: &reqwest::Client,
        host: &str,
        challenge: &Challenge,
        image: &ImageRef,
        cred: Option<&Credential>,
    ) -> Result<Option<HeaderValue>, Failure> {
        match challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => Ok(cred.map(|c| {
                let raw = format!("{}:{}", c.username, c.password.expose());
                secret_header(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            })),
            Challenge::Bearer { realm, service, .. } => {
                // Always ask for this repository's pull scope: the scope in a
                // probe challenge (if any) is for some other request.
                let scope = format!("repository:{}:pull", image.path());
                let service = service.as_deref().unwrap_or("");
                let key = TokenCache::key(realm, service, &scope, cred);
                let token = self
                    .tokens
                    .get_or_fetch(key, || {
                        self.fetch_token(client, host, realm, service, &scope, cred)
                    })
                    .await?;
                Ok(Some(secret_header(&format!("Bearer {}", token.expose()))))
            }
        }
    }

    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        host: &str,
        realm: &str,
        service: &str,
        scope: &str,
        cred: Option<&Credential>,
    ) -> Result<(crate::credentials::Secret, Duration), Failure> {
        let realm_host = realm
            .split_once("://")
            .map(|(_, r)| r.split('/').next().unwrap_or(""))
            .unwrap_or("");
        if cred.is_some()
            && realm.starts_with("http://")
            && !is_loopback(realm_host)
            && !self.is_insecure(realm_host)
        {
            return Err(Failure::new(
                ErrorKind::Config,
                format!("token realm {realm} is plain HTTP; refusing to send credentials there (mark {realm_host} with --insecure-registry to allow it)"),
            ));
        }
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            Failure::new(
                ErrorKind::Protocol,
                format!("token realm {realm:?} is not a URL: {e}"),
            )
        })?;
        {
            let mut q = url.query_pairs_mut();
            if !service.is_empty() {
                q.append_pair("service", service);
            }
            q.append_pair("scope", scope);
        }
        let mut headers = HeaderMap::new();
        if let Some(c) = cred {
            let raw = format!("{}:{}", c.username, c.password.expose());
            headers.insert(
                AUTHORIZATION,
                secret_header(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )),
            );
        }
        let resp = self
            .send(client, Method::GET, url.as_str(), headers)
            .await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let who = if cred.is_some() {
                "the configured credentials"
            } else {
                "anonymous access (no credentials matched this image)"
            };
            return Err(Failure::new(
                ErrorKind::Unauthorized,
                format!("token server {realm} for {host} refused {who}: {status}"),
            ));
        }
        if !status.is_success() {
            return Err(Failure::new(
                ErrorKind::Protocol,
                format!("token server {realm} answered {status}"),
            ));
        }
        let body = read_limited(resp, 1 << 20).await?;
        parse_token_response(&body)
    }

    /// One attempt with one credential (or none).
    async fn resolve_with(
        &self,
        client: &reqwest::Client,
        host: &Host,
        endpoint: &Endpoint,
        image: &ImageRef,
        cred: Option<&Credential>,
    ) -> Result<Resolution, Failure> {
        let url = endpoint.manifest_url(image);
        let mut challenge = endpoint.challenge.clone();
        let mut reauthed = false;
        loop {
            let mut headers = endpoint.headers.clone();
            headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
            if let Some(a) = self
                .authorization(client, &host.name, &challenge, image, cred)
                .await?
            {
                headers.insert(AUTHORIZATION, a);
            }
            let resp = self
                .send(client, Method::HEAD, &url, headers.clone())
                .await?;
            match resp.status() {
                StatusCode::OK => {
                    let media_type = header_str(&resp, CONTENT_TYPE.as_str());
                    match header_str(&resp, "docker-content-digest").map(|d| Digest::parse(&d)) {
                        Some(Ok(digest)) if digest.algorithm() == "sha256" => {
                            return Ok(Resolution { digest, media_type })
                        }
                        Some(Ok(_)) | None => {}
                        Some(Err(e)) => {
                            tracing::warn!("{url}: ignoring Docker-Content-Digest: {e}")
                        }
                    }
                    return self.get_and_hash(client, &url, headers).await;
                }
                StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
                    return self.get_and_hash(client, &url, headers).await;
                }
                StatusCode::UNAUTHORIZED if !reauthed => {
                    // The probe may have been open while the repository is not.
                    let fresh = challenge_of(&resp)?;
                    reauthed = true;
                    if fresh == challenge && !matches!(fresh, Challenge::Bearer { .. }) {
                        return Err(unauthorized(image, cred));
                    }
                    challenge = fresh;
                }
                StatusCode::UNAUTHORIZED => return Err(unauthorized(image, cred)),
                StatusCode::FORBIDDEN => {
                    return Err(Failure::new(
                        ErrorKind::Forbidden,
                        format!("access to {} denied", image.path()),
                    ))
                }
                StatusCode::NOT_FOUND => {
                    return Err(Failure::new(
                        ErrorKind::NotFound,
                        format!(
                            "manifest {}:{} not found",
                            image.path(),
                            image.tag_or_latest()
                        ),
                    ))
                }
                s => {
                    return Err(Failure::new(
                        ErrorKind::Protocol,
                        format!("HEAD {url} answered unexpected {s}"),
                    ))
                }
            }
        }
    }

    /// GET the manifest and hash the exact bytes. A digest header that
    /// disagrees with the body means something between us and the registry
    /// is lying; that is never pinned.
    async fn get_and_hash(
        &self,
        client: &reqwest::Client,
        url: &str,
        headers: HeaderMap,
    ) -> Result<Resolution, Failure> {
        let resp = self.send(client, Method::GET, url, headers).await?;
        if resp.status() != StatusCode::OK {
            return Err(Failure::new(
                ErrorKind::Protocol,
                format!("GET {url} answered {} after HEAD succeeded", resp.status()),
            ));
        }
        let media_type = header_str(&resp, CONTENT_TYPE.as_str());
        let claimed = header_str(&resp, "docker-content-digest");
        let body = read_limited(resp, MAX_MANIFEST_BYTES).await?;
        let digest = Digest::sha256_of(&body);
        if let Some(claimed) = claimed {
            if claimed != digest.to_string() {
                return Err(Failure::new(
                    ErrorKind::BadDigest,
                    format!("registry claims Docker-Content-Digest {claimed} but the manifest it sent hashes to {digest}"),
                ));
            }
        }
        Ok(Resolution { digest, media_type })
    }
}

impl Resolver for HttpResolver {
    async fn resolve(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
        if image.digest().is_some() {
            return Err(
                Failure::new(ErrorKind::InvalidReference, "already pinned").for_image(image)
            );
        }
        let hosts = self.hosts(image).map_err(|f| f.for_image(image))?;
        let mut first_error = None;
        // Like containerd, a failing mirror hands over to the next host.
        for host in hosts {
            match self.resolve_at(&host, image).await {
                Ok(r) => return Ok(r),
                Err(mut f) => {
                    if host.fixed.as_ref().is_some_and(|e| e.mirror) {
                        f.detail = format!("via mirror {}: {}", host.name, f.detail);
                    }
                    tracing::debug!("{image}: {}: {}", host.name, f.detail);
                    first_error.get_or_insert(f);
                }
            }
        }
        Err(first_error.expect("at least one host").for_image(image))
    }
}

impl HttpResolver {
    async fn resolve_at(&self, host: &Host, image: &ImageRef) -> Result<Resolution, Failure> {
        let client = host.client.clone()?;
        let endpoint = self.endpoint(host, image).await?;
        let creds = self.settings.keyring.lookup(&image.canonical_name());
        let candidates: Vec<Option<&Credential>> = if creds.is_empty() {
            vec![None]
        } else {
            creds.iter().map(Some).collect()
        };
        let mut last = None;
        // kubelet tries every matching credential in turn; so do we.
        for cred in candidates {
            match self
                .resolve_with(&client, host, &endpoint, image, cred)
                .await
            {
                Err(f) if f.kind == ErrorKind::Unauthorized => last = Some(f),
                other => return other,
            }
        }
        Err(last.expect("at least one candidate"))
    }
}

fn unauthorized(image: &ImageRef, cred: Option<&Credential>) -> Failure {
    let why = match cred {
        Some(_) => "the registry rejected the credentials configured for",
        None => "no credentials in the docker config match",
    };
    Failure::new(
        ErrorKind::Unauthorized,
        format!("{why} {}", image.canonical_name()),
    )
}

fn challenge_of(resp: &reqwest::Response) -> Result<Challenge, Failure> {
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

fn secret_header(value: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

fn header_str(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, Failure> {
    let url = resp.url().to_string();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e, &url))? {
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

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200) * 2u32.saturating_pow(attempt);
    // Cheap jitter so concurrent retries do not arrive in lockstep.
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100)
        .unwrap_or(0);
    base.min(Duration::from_secs(5)) + Duration::from_millis(jitter.into())
}

fn is_loopback(host: &str) -> bool {
    let h = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Turns a transport error into a failure class with a readable chain.
fn classify(e: &reqwest::Error, url: &str) -> Failure {
    let mut chain = Vec::new();
    let mut tls = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // io::Error hides its payload from source(); look inside.
            if let Some(inner) = io.get_ref() {
                if inner.downcast_ref::<rustls::Error>().is_some() {
                    tls = true;
                }
                chain.push(inner.to_string());
            }
        }
        let msg = err.to_string();
        if !chain.iter().any(|c| c == &msg) {
            chain.push(msg);
        }
        source = err.source();
    }
    let text = chain.join(": ");
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if tls
        || text.contains("certificate")
        || text.contains("InvalidContentType")
        || text.contains("corrupt message")
    {
        ErrorKind::Tls
    } else {
        ErrorKind::Connect
    };
    let detail = if kind == ErrorKind::Timeout {
        format!("no answer from {url} in time ({text})")
    } else {
        text
    };
    Failure::new(kind, detail)
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
}
