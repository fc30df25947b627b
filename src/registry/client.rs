//! The OCI distribution client: GET a tag's manifest, verify it, hash it.
//!
//! This is written on reqwest (the HTTP stack `oci-client` itself uses)
//! rather than through `oci-client`, because pinning needs control that crate
//! does not expose: per-host CA and client-certificate trust, typed 429/5xx
//! handling with `Retry-After`, kubelet's try-each-credential order, redirects
//! that cannot carry secrets elsewhere, and the exact bytes of the manifest.
//!
//! A tag is resolved with one `GET manifests/<tag>` (two when the repository
//! asks for a token the probe did not): the digest is the sha256 of the
//! bytes received, checked by [`super::verify`]. A HEAD would save the body
//! but its `Docker-Content-Digest` is only a claim about bytes not seen, and
//! a HEAD followed by `GET manifests/<digest>` costs a second round trip (and
//! the GET counts against pull rate limits all the same).
//!
//! One endpoint probe (`GET /v2/`) per host learns the auth scheme (and, for
//! insecure hosts, whether it speaks TLS), shared by every image on that
//! host. Only a successful probe is kept: a failed one is asked again by the
//! next image rather than failing the whole run.
//!
//! Redirects are followed by hand. Within the request's origin (scheme, host,
//! port) everything is sent as before; to any other origin the request goes
//! out with no `Authorization`, no hosts.toml headers and through a client
//! without the host's client certificate, and a challenge from there is only
//! ever answered anonymously. No `Referer` is ever sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::OnceCell;

use super::auth::{parse_token_response, Challenge, TokenCache};
use super::hosts::{load as load_hosts, HostEndpoint};
use super::tls::{client_config, find_host_certs, HostCerts};
use super::wire::{
    accept, authority, backoff, basic, challenge_of, is_loopback, lock, origin, parse_url, peeked,
    read_limited, refusal, secret_header, unauthorized, Followed,
};
use super::{classify_transport, ErrorKind, Failure, Resolution, ResolveError, Resolver, Settings};
use crate::credentials::{Credential, Secret};
use crate::reference::ImageRef;

/// Every manifest type, so a multi-arch tag answers with its index digest
/// (a narrower list makes registries serve a platform manifest or a 404).
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json";

/// Redirects followed for one request; registries use one or two.
const MAX_REDIRECTS: usize = 5;

/// The real [`Resolver`]: the OCI distribution API as containerd speaks it
/// (hosts.toml mirrors, per-host certs, token auth), with each host's client,
/// endpoint and tokens kept for reuse across runs.
pub struct HttpResolver {
    settings: Settings,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// Clients for origins reached by redirect or token realm: the CAs of
    /// that origin's certs directory, never a client certificate.
    foreign: Mutex<HashMap<String, Result<reqwest::Client, Failure>>>,
    tokens: TokenCache,
    /// When the whole run must be over; `None` if too far away to represent.
    /// A daemon keeps one resolver (and its connections) for many runs, so
    /// each run restarts it with [`HttpResolver::start_run`].
    deadline: Mutex<Option<tokio::time::Instant>>,
}

struct Host {
    /// `host[:port]`, for messages.
    name: String,
    client: Result<reqwest::Client, Failure>,
    /// From hosts.toml: a fixed URL. Otherwise the scheme is probed.
    fixed: Option<HostEndpoint>,
    insecure: bool,
    endpoint: OnceCell<Endpoint>,
}

#[derive(Clone)]
struct Endpoint {
    base: String,
    challenge: Challenge,
    override_path: bool,
    /// `?ns=<namespace>` for mirrors, as containerd sends it.
    ns: Option<String>,
    /// hosts.toml headers: for this origin only.
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
    /// A resolver for `settings`; its first run's deadline starts now.
    pub fn new(settings: Settings) -> HttpResolver {
        let deadline = tokio::time::Instant::now().checked_add(settings.deadline);
        HttpResolver {
            settings,
            hosts: Mutex::new(HashMap::new()),
            foreign: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
            deadline: Mutex::new(deadline),
        }
    }

    /// Starts a new run: its registry traffic gets a whole `deadline` from
    /// now. `new` starts the first; a long-lived caller (the daemon) calls
    /// this before each pass, keeping its connections and tokens.
    pub fn start_run(&self) {
        *lock(&self.deadline) = tokio::time::Instant::now().checked_add(self.settings.deadline);
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
                .redirect(reqwest::redirect::Policy::none())
                .referer(false)
                .user_agent(concat!("staticpin/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| Failure::new(ErrorKind::Config, format!("HTTP client: {e}")))
        })
    }

    /// A client for an origin that is not the registry host being asked:
    /// its own CAs, and no client certificate, which belongs to the host.
    fn foreign_client(&self, authority: &str) -> Result<reqwest::Client, Failure> {
        lock(&self.foreign)
            .entry(authority.to_string())
            .or_insert_with(|| {
                let certs = HostCerts {
                    cas: find_host_certs(&self.settings.certs_dirs, &[authority]).cas,
                    client: None,
                };
                self.build_client(&certs, self.is_insecure(authority))
            })
            .clone()
    }

    /// The hosts to ask for this image, in containerd's order: hosts.toml's
    /// resolving mirrors then its server, or else the registry itself.
    fn hosts(&self, image: &ImageRef) -> Result<Vec<Arc<Host>>, Failure> {
        let default_server = format!("https://{}", image.registry_host());
        let configured = load_hosts(&self.settings.certs_dirs, image.domain(), &default_server)?;
        let mut table = lock(&self.hosts);
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
                    let (kind, text) = classify_transport(&e);
                    let f = Failure::new(
                        kind,
                        if kind == ErrorKind::Timeout {
                            format!("no answer from {url} in time ({text})")
                        } else {
                            text
                        },
                    );
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

    /// Sends `headers` (the origin's own: credentials, hosts.toml headers)
    /// and follows redirects by hand. A hop to another origin gets only the
    /// `Accept` header and a client without the host's client certificate;
    /// a loop or a downgrade to plain HTTP is a protocol error.
    async fn follow(
        &self,
        client: &reqwest::Client,
        method: Method,
        url: &str,
        headers: HeaderMap,
    ) -> Result<Followed, Failure> {
        let start = parse_url(url)?;
        let home = origin(&start);
        let mut seen = vec![start.clone()];
        let mut current = start;
        let mut hop_client = client.clone();
        let mut hop_headers = headers.clone();
        loop {
            let resp = self
                .send(&hop_client, method.clone(), current.as_str(), hop_headers)
                .await?;
            let status = resp.status();
            let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            if !redirect {
                return Ok(Followed {
                    resp,
                    same_origin: origin(&current) == home,
                    url: current,
                });
            }
            let next = self.redirect_target(&resp, &current, &seen)?;
            if origin(&next) == home {
                hop_client = client.clone();
                hop_headers = headers.clone();
            } else {
                tracing::debug!(
                    "{} redirected to another origin: {next}",
                    super::excerpt(current.as_str())
                );
                hop_client = self.foreign_client(&authority(&next))?;
                hop_headers = HeaderMap::new();
                if let Some(accept) = headers.get(ACCEPT) {
                    hop_headers.insert(ACCEPT, accept.clone());
                }
            }
            seen.push(next.clone());
            current = next;
        }
    }

    /// Where a redirect answer points, checked: a URL, HTTP(S), no
    /// userinfo, no loop, not too many hops, no downgrade to plain HTTP
    /// unless the target is marked insecure.
    fn redirect_target(
        &self,
        resp: &reqwest::Response,
        current: &Url,
        seen: &[Url],
    ) -> Result<Url, Failure> {
        let protocol = |why: String| Failure::new(ErrorKind::Protocol, why);
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                protocol(format!(
                    "{} answered {status} without a Location",
                    super::excerpt(current.as_str())
                ))
            })?;
        let mut next = current.join(location).map_err(|e| {
            protocol(format!(
                "{} redirected to {}, which is not a URL: {e}",
                super::excerpt(current.as_str()),
                super::excerpt(location)
            ))
        })?;
        // Userinfo in a Location would become a Basic header: drop it.
        let _ = next.set_username("");
        let _ = next.set_password(None);
        next.set_fragment(None);
        if !matches!(next.scheme(), "http" | "https") {
            return Err(protocol(format!(
                "{} redirected to {}, not HTTP",
                super::excerpt(current.as_str()),
                super::excerpt(next.as_str())
            )));
        }
        if seen.contains(&next) {
            return Err(protocol(format!(
                "redirect loop: {} redirected back to {}",
                super::excerpt(current.as_str()),
                super::excerpt(next.as_str())
            )));
        }
        if seen.len() > MAX_REDIRECTS {
            return Err(protocol(format!(
                "more than {MAX_REDIRECTS} redirects, the last to {}",
                super::excerpt(next.as_str())
            )));
        }
        if current.scheme() == "https"
            && next.scheme() == "http"
            && !self.is_insecure(&authority(&next))
        {
            return Err(protocol(format!(
                "{} redirected to plain HTTP {}; refusing the downgrade",
                super::excerpt(current.as_str()),
                super::excerpt(next.as_str())
            )));
        }
        Ok(next)
    }

    /// Probes `/v2/` to learn the host's scheme and auth challenge; only a
    /// success is kept for the run.
    async fn endpoint(&self, host: &Host, image: &ImageRef) -> Result<Endpoint, Failure> {
        let mut ep = host
            .endpoint
            .get_or_try_init(|| self.discover(host))
            .await?
            .clone();
        if host.fixed.as_ref().is_some_and(|f| f.mirror) {
            ep.ns = Some(image.domain().to_string());
        }
        Ok(ep)
    }

    async fn discover(&self, host: &Host) -> Result<Endpoint, Failure> {
        let client = host.client.clone()?;
        if let Some(fixed) = &host.fixed {
            let mut headers = HeaderMap::new();
            for (k, v) in &fixed.headers {
                let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    Failure::new(
                        ErrorKind::Config,
                        format!("hosts.toml header name {} is invalid", super::excerpt(k)),
                    )
                })?;
                let mut value = HeaderValue::from_str(v).map_err(|_| {
                    Failure::new(
                        ErrorKind::Config,
                        format!(
                            "hosts.toml header {} has an invalid value",
                            super::excerpt(k)
                        ),
                    )
                })?;
                // Header values may be tokens: keep them out of trace logs.
                value.set_sensitive(true);
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
                self.probe(&client, &fixed.url, headers.clone()).await?
            };
            ep.headers = headers;
            return Ok(ep);
        }
        let https = format!("https://{}", host.name);
        match self.probe(&client, &https, HeaderMap::new()).await {
            Err(f) if host.insecure && matches!(f.kind, ErrorKind::Tls | ErrorKind::Connect) => {
                // Docker's rule for insecure registries: TLS if offered, else plain HTTP.
                tracing::debug!("{}: no TLS ({}), using plain HTTP", host.name, f.detail);
                self.probe(&client, &format!("http://{}", host.name), HeaderMap::new())
                    .await
            }
            Err(mut f) if f.kind == ErrorKind::Tls => {
                f.detail.push_str(&format!(
                    " (if {} is a plain-HTTP or self-signed registry you trust, list it in insecureRegistries; for a private CA put ca.crt under a certs directory)",
                    host.name
                ));
                Err(f)
            }
            other => other,
        }
    }

    async fn probe(
        &self,
        client: &reqwest::Client,
        base: &str,
        headers: HeaderMap,
    ) -> Result<Endpoint, Failure> {
        let got = self
            .follow(client, Method::GET, &format!("{base}/v2/"), headers)
            .await?;
        // A challenge from another origin is not this host's to adopt: the
        // first manifest request learns the host's own.
        let challenge = if got.same_origin && got.resp.status() == StatusCode::UNAUTHORIZED {
            challenge_of(&got.resp)?
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
        base: &str,
        host: &str,
        challenge: &Challenge,
        scope: &str,
        cred: Option<&Credential>,
    ) -> Result<Option<HeaderValue>, Failure> {
        match challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => Ok(cred.map(basic)),
            Challenge::Bearer { realm, service, .. } => {
                let service = service.as_deref().unwrap_or("");
                let key = TokenCache::key(realm, service, scope, cred);
                let token = self
                    .tokens
                    .get_or_fetch(key, || {
                        self.fetch_token(client, base, host, realm, service, scope, cred)
                    })
                    .await?;
                Ok(Some(secret_header(&format!("Bearer {}", token.expose()))))
            }
        }
    }

    /// Asks `realm` for a token. The realm is named by the host's own
    /// challenge, so the host's credentials may go there (as docker and
    /// containerd send them), but its client certificate only if the realm
    /// is the host's own origin.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        base: &str,
        host: &str,
        realm: &str,
        service: &str,
        scope: &str,
        cred: Option<&Credential>,
    ) -> Result<(Secret, Duration), Failure> {
        let mut url = parse_url(realm)?;
        let realm_host = authority(&url);
        if cred.is_some()
            && url.scheme() == "http"
            && !is_loopback(&realm_host)
            && !self.is_insecure(&realm_host)
        {
            return Err(Failure::new(
                ErrorKind::Config,
                format!("token realm {realm} is plain HTTP; refusing to send credentials there (list {realm_host} in insecureRegistries to allow it)"),
            ));
        }
        {
            let mut q = url.query_pairs_mut();
            if !service.is_empty() {
                q.append_pair("service", service);
            }
            q.append_pair("scope", scope);
        }
        let same_origin = parse_url(base).is_ok_and(|b| origin(&b) == origin(&url));
        let realm_client = if same_origin {
            client.clone()
        } else {
            self.foreign_client(&realm_host)?
        };
        let mut headers = HeaderMap::new();
        if let Some(c) = cred {
            headers.insert(AUTHORIZATION, basic(c));
        }
        let got = self
            .follow(&realm_client, Method::GET, url.as_str(), headers)
            .await?;
        let status = got.resp.status();
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
        let body = read_limited(got.resp, 1 << 20).await?;
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
        method: &Method,
    ) -> Result<Resolution, Failure> {
        let url = endpoint.manifest_url(image);
        // Always ask for this repository's pull scope: the scope in a
        // probe challenge (if any) is for some other request.
        let scope = format!("repository:{}:pull", image.path());
        let mut challenge = endpoint.challenge.clone();
        let mut reauthed = false;
        loop {
            let mut headers = endpoint.headers.clone();
            headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
            if let Some(a) = self
                .authorization(client, &endpoint.base, &host.name, &challenge, &scope, cred)
                .await?
            {
                headers.insert(AUTHORIZATION, a);
            }
            let got = self.follow(client, method.clone(), &url, headers).await?;
            if !got.same_origin && got.resp.status() == StatusCode::UNAUTHORIZED {
                return self
                    .answer_foreign_challenge(got, image, &host.name, method)
                    .await;
            }
            match got.resp.status() {
                StatusCode::OK if *method == Method::HEAD => return peeked(&got),
                StatusCode::OK => return accept(got).await,
                StatusCode::UNAUTHORIZED if !reauthed => {
                    // The probe may have been open while the repository is not.
                    let fresh = challenge_of(&got.resp)?;
                    reauthed = true;
                    if fresh == challenge && !matches!(fresh, Challenge::Bearer { .. }) {
                        return Err(unauthorized(image, cred));
                    }
                    challenge = fresh;
                }
                other => return Err(refusal(other, &got, image, cred)),
            }
        }
    }

    /// A redirect target asked for credentials. Only an anonymous token is
    /// ever fetched for it: the registry's credentials are the registry's.
    async fn answer_foreign_challenge(
        &self,
        got: Followed,
        image: &ImageRef,
        registry: &str,
        method: &Method,
    ) -> Result<Resolution, Failure> {
        let target = authority(&got.url);
        let Challenge::Bearer {
            realm,
            service,
            scope,
        } = challenge_of(&got.resp)?
        else {
            return Err(Failure::new(
                ErrorKind::Unauthorized,
                format!("{registry} redirected to {target}, which asks for credentials; staticpin sends a registry's credentials only to that registry"),
            ));
        };
        let client = self.foreign_client(&target)?;
        let base = format!("{}://{target}", got.url.scheme());
        let scope = scope.unwrap_or_else(|| {
            let repo = got
                .url
                .path()
                .strip_prefix("/v2/")
                .and_then(|p| p.rsplit_once("/manifests/"))
                .map_or(image.path(), |(repo, _)| repo);
            format!("repository:{repo}:pull")
        });
        let challenge = Challenge::Bearer {
            realm,
            service,
            scope: None,
        };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        if let Some(a) = self
            .authorization(&client, &base, &target, &challenge, &scope, None)
            .await?
        {
            headers.insert(AUTHORIZATION, a);
        }
        let again = self
            .follow(&client, method.clone(), got.url.as_str(), headers)
            .await?;
        match again.resp.status() {
            StatusCode::OK if *method == Method::HEAD => peeked(&again),
            StatusCode::OK => accept(again).await,
            StatusCode::UNAUTHORIZED => Err(Failure::new(
                ErrorKind::Unauthorized,
                format!("{registry} redirected to {target}, which refused anonymous access; staticpin sends a registry's credentials only to that registry"),
            )),
            other => Err(refusal(other, &again, image, None)),
        }
    }

    async fn resolve_at(
        &self,
        host: &Host,
        image: &ImageRef,
        method: &Method,
    ) -> Result<Resolution, Failure> {
        let client = host.client.clone()?;
        let endpoint = self.endpoint(host, image).await?;
        let creds = self.settings.keyring.lookup(&image.canonical_name());
        let candidates: Vec<Option<&Credential>> = if creds.is_empty() {
            vec![None]
        } else {
            creds.iter().map(Some).collect()
        };
        let mut last = Failure::new(ErrorKind::Unauthorized, "no credentials tried");
        // kubelet tries every matching credential in turn; so do we.
        for cred in candidates {
            match self
                .resolve_with(&client, host, &endpoint, image, cred, method)
                .await
            {
                Err(f) if f.kind == ErrorKind::Unauthorized => last = f,
                other => return other,
            }
        }
        Err(last)
    }

    async fn resolve_hosts(
        &self,
        image: &ImageRef,
        method: &Method,
    ) -> Result<Resolution, Failure> {
        let hosts = self.hosts(image)?;
        let mut first_error = None;
        // Like containerd, a failing mirror hands over to the next host.
        for host in hosts {
            match self.resolve_at(&host, image, method).await {
                Ok(mut r) => {
                    if host.fixed.as_ref().is_some_and(|e| e.mirror) {
                        r.via = Some(host.name.clone());
                    }
                    return Ok(r);
                }
                Err(mut f) => {
                    if host.fixed.as_ref().is_some_and(|e| e.mirror) {
                        f.detail = format!("via mirror {}: {}", host.name, f.detail);
                    }
                    tracing::debug!("{image}: {}: {}", host.name, f.detail);
                    first_error.get_or_insert(f);
                }
            }
        }
        Err(first_error
            .unwrap_or_else(|| Failure::new(ErrorKind::Config, "no registry host to ask")))
    }
}

impl Resolver for HttpResolver {
    async fn resolve(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
        self.ask(image, &Method::GET).await
    }

    async fn head_digest(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
        self.ask(image, &Method::HEAD).await
    }
}

impl HttpResolver {
    /// One manifest request for a tag, within the run's deadline: GET to
    /// pin (verified bytes), HEAD to peek (a claimed digest, for drift only).
    async fn ask(&self, image: &ImageRef, method: &Method) -> Result<Resolution, ResolveError> {
        if image.digest().is_some() {
            return Err(
                Failure::new(ErrorKind::InvalidReference, "already pinned").for_image(image)
            );
        }
        let work = self.resolve_hosts(image, method);
        let deadline = *lock(&self.deadline);
        let result = match deadline {
            Some(at) => tokio::time::timeout_at(at, work).await.unwrap_or_else(|_| {
                Err(Failure::new(
                    ErrorKind::Timeout,
                    format!(
                        "the run's deadline of {} s passed before the registry answered",
                        self.settings.deadline.as_secs_f64()
                    ),
                ))
            }),
            None => work.await,
        };
        result.map_err(|f| f.for_image(image))
    }
}
