//! Is kube-apiserver healthy? The probe staticpin runs after it changes
//! kube-apiserver.yaml, so that a change which keeps the apiserver from
//! coming back can be rolled back (the rollback itself lives with `pin`).
//!
//! This module owns three things:
//! - [`liveness_url`]: the URL kubelet's livenessProbe for kube-apiserver
//!   hits, read from the manifest, so the default check asks exactly what
//!   kubelet asks.
//! - [`HealthCheck`]'s TLS trust: system roots plus the cluster CA, with an
//!   optional client certificate. Verification is never switched off.
//! - [`wait_healthy`]: polling `GET url` until it answers 200 with the body
//!   `ok`, or the overall timeout passes.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use serde::Deserialize;

use crate::admission::wiring::{find_target, ContainerView, Target};

/// The cluster CA on kubeadm nodes. It signs the apiserver's serving
/// certificate, so with no `--health-ca` it is trusted if present.
pub const DEFAULT_CLUSTER_CA: &str = "/etc/kubernetes/pki/ca.crt";

/// What to poll, whom to trust, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// e.g. `https://192.0.2.10:6443/livez` (see [`liveness_url`]).
    pub url: String,
    /// An extra CA to trust on top of the system roots. `None` means the
    /// system roots plus [`DEFAULT_CLUSTER_CA`] if that file exists.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for clusters that turned anonymous
    /// auth off. kubeadm allows anonymous `/livez`, so usually `None`.
    pub client: Option<(PathBuf, PathBuf)>,
    /// Overall budget, from the call to giving up. Default 300 s.
    pub timeout: Duration,
    /// Time between the starts of two probes. Default 2 s.
    pub interval: Duration,
    /// Budget for one probe (connect, TLS, answer, body). Default 5 s.
    pub request_timeout: Duration,
    /// Count an `ok` only after some probe has failed. Default `false`.
    ///
    /// Right after kube-apiserver.yaml changes, the *old* apiserver is still
    /// running: kubelet notices the file (inotify, or its 20 s resync), stops
    /// the old pod and only then starts the new one. An `ok` in that window
    /// says nothing about the new configuration. kube-apiserver needs
    /// seconds to start, so a restart shows up as refused connections or
    /// failing probes; with this set, success means "went away and came
    /// back". If it never goes away, the result is `NeverHealthy`.
    pub await_restart: bool,
}

impl HealthCheck {
    /// A check of `url` with the defaults above.
    pub fn new(url: impl Into<String>) -> HealthCheck {
        HealthCheck {
            url: url.into(),
            ca: None,
            client: None,
            timeout: crate::config::DEFAULT_HEALTH_TIMEOUT,
            interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            await_restart: false,
        }
    }

    /// Checks the URL, reads the CA and client files and builds the client,
    /// without sending anything. Run it before changing the manifest, so a
    /// typo in `--health-ca` fails the run instead of forcing a rollback.
    pub fn validate(&self) -> Result<(), HealthError> {
        self.build_client().map(|_| ())
    }

    fn build_client(&self) -> Result<reqwest::Client, HealthError> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| HealthError::Config(format!("health URL {:?}: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(HealthError::Config(format!(
                "health URL {:?}: expected http:// or https:// with a host",
                self.url
            )));
        }
        let tls = tls_config(
            self.ca.as_deref(),
            Path::new(DEFAULT_CLUSTER_CA),
            &self.client,
        )?;
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            // The apiserver is on this node (or its own network): a proxy
            // from HTTPS_PROXY would at best add a hop and at worst answer
            // for it. kubelet's probes do not use proxies either.
            .no_proxy()
            // A fresh connection per probe, as kubelet's probes do: a pooled
            // connection could outlive the listener it is meant to test.
            .pool_max_idle_per_host(0)
            // /livez answers directly; a redirect is not "ok".
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.request_timeout)
            .user_agent(concat!("staticpin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HealthError::Config(format!("HTTP client: {e}")))
    }
}

/// Why the apiserver could not be shown healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Nothing was probed: bad URL, unreadable CA or client certificate.
    #[error("health check: {0}")]
    Config(String),
    /// Probed until the timeout; no probe answered healthy.
    #[error("{url} did not answer healthy within {waited:.1?}; last probe: {last}")]
    NeverHealthy {
        /// The URL probed.
        url: String,
        /// How long it was probed for.
        waited: Duration,
        /// The last probe's status and body, or its transport error.
        last: String,
    },
}

/// Polls until `GET url` returns 200 with body "ok" (trimmed; apiserver
/// `/livez` returns "ok") or the timeout passes. Returns the time it took.
pub async fn wait_healthy(check: &HealthCheck) -> Result<Duration, HealthError> {
    let start = Instant::now();
    // A budget no clock can represent is a caller's bug, not a reason to panic.
    let deadline = start
        .checked_add(check.timeout)
        .ok_or_else(|| HealthError::Config(format!("timeout {:?} is too long", check.timeout)))?;
    let client = check.build_client()?;
    let mut seen_down = false;
    let mut probes = 0u32;
    loop {
        let probe_start = Instant::now();
        probes += 1;
        // Clamped so that the overall timeout holds even for a server that
        // accepts and then says nothing.
        let budget = check
            .request_timeout
            .min(deadline.saturating_duration_since(probe_start));
        let last = match tokio::time::timeout(budget, probe(&client, &check.url)).await {
            Ok(Ok(())) if seen_down || !check.await_restart => {
                let took = start.elapsed();
                tracing::info!(
                    "{} is healthy after {took:.1?} ({probes} probes)",
                    check.url
                );
                return Ok(took);
            }
            Ok(Ok(())) => "answered ok, but has not gone down since the manifest changed: \
                           the old apiserver may still be running"
                .to_string(),
            Ok(Err(reason)) => {
                seen_down = true;
                reason
            }
            Err(_) => {
                seen_down = true;
                format!("no answer within {budget:.1?}")
            }
        };
        tracing::debug!("health probe {probes} of {}: {last}", check.url);
        let next = probe_start
            .checked_add(check.interval)
            .filter(|next| *next < deadline);
        let Some(next) = next else {
            // No time for another probe. Waiting out the rest keeps the
            // promise the caller made the operator ("up to 300 s").
            tokio::time::sleep_until(deadline.into()).await;
            return Err(HealthError::NeverHealthy {
                url: check.url.clone(),
                waited: start.elapsed(),
                last,
            });
        };
        tokio::time::sleep_until(next.into()).await;
    }
}

/// One GET. `Err` carries a one-line reason for the log and the error.
async fn probe(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let mut resp = client.get(url).send().await.map_err(|e| describe(&e))?;
    let status = resp.status();
    // /livez answers "ok" or a few lines of checks; read a bounded prefix so
    // that something else on the port cannot make us buffer without limit.
    let mut body = Vec::new();
    while body.len() < 4096 {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) => return Err(format!("HTTP {status}, then {}", describe(&e))),
        }
    }
    let text = String::from_utf8_lossy(&body);
    if status == reqwest::StatusCode::OK && text.trim() == "ok" {
        return Ok(());
    }
    let excerpt = one_line(&text, 200);
    Err(if status == reqwest::StatusCode::OK {
        format!("HTTP {status} but the body is not \"ok\": {excerpt:?}")
    } else {
        format!("HTTP {status}: {excerpt:?}")
    })
}

/// Collapses a multi-line body (the apiserver lists one check per line)
/// into one line of at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match joined.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &joined[..i]),
        None => joined,
    }
}

/// A transport error as "TLS error: …" or "connection failed: …" with its
/// whole cause chain (see [`crate::trust::classify`]).
fn describe(e: &reqwest::Error) -> String {
    use crate::trust::Transport;
    let (kind, chain) = crate::trust::classify(e);
    let kind = match kind {
        Transport::Timeout => "timed out",
        Transport::Tls => "TLS error",
        Transport::Connect => "connection failed",
        Transport::Redirect | Transport::Other => "request failed",
    };
    format!("{kind}: {chain}")
}

/// The rustls config from [`crate::trust::client`] (system roots plus a CA
/// file, optional client certificate), with `ca` or else `default_ca` if it
/// exists as the extra CA.
fn tls_config(
    ca: Option<&Path>,
    default_ca: &Path,
    client: &Option<(PathBuf, PathBuf)>,
) -> Result<ClientConfig, HealthError> {
    // An explicit CA replaces the default rather than adding to it: the
    // operator said which CA signs this apiserver.
    let extra = match ca {
        Some(p) => Some(p),
        None if default_ca.exists() => Some(default_ca),
        None => None,
    };
    let cas: Vec<PathBuf> = extra.into_iter().map(Path::to_path_buf).collect();
    let mut config =
        crate::trust::client::client_config(&cas, client.as_ref(), false).map_err(|e| match e {
            crate::trust::TrustError::File(d) | crate::trust::TrustError::Tls(d) => {
                HealthError::Config(d)
            }
        })?;
    // HTTP/1.1 only, as kubelet's probes: one request per connection needs
    // nothing from h2, and it is the protocol the tests exercise.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

// The slice of a Pod that kubelet reads to run an httpGet liveness probe.
// Unknown fields are ignored; wrong types are errors.

#[derive(Deserialize)]
struct PodDoc {
    metadata: Option<Metadata>,
    spec: Option<PodSpec>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    host_network: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    #[serde(default)]
    name: String,
    command: Option<Vec<serde_norway::Value>>,
    #[serde(default)]
    args: Vec<serde_norway::Value>,
    image: Option<String>,
    #[serde(default)]
    ports: Vec<ContainerPort>,
    liveness_probe: Option<Probe>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    name: Option<String>,
    container_port: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    http_get: Option<HttpGet>,
}

#[derive(Deserialize)]
struct HttpGet {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<IntOrString>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

impl Container {
    /// This container as the one Pod model sees it.
    fn view(&self) -> ContainerView<'_> {
        fn strs(v: &[serde_norway::Value]) -> Vec<Option<&str>> {
            v.iter().map(|s| s.as_str()).collect()
        }
        ContainerView {
            name: Some(self.name.as_str()),
            command: self.command.as_deref().map(strs),
            args: strs(&self.args),
            image: self.image.as_deref(),
        }
    }

    /// kubelet's rule: a string port is a container port name, or failing
    /// that a number written as a string.
    fn resolve_port(&self, port: &IntOrString) -> Result<u16, String> {
        let n = match port {
            IntOrString::Int(n) => *n,
            IntOrString::Str(name) => {
                let named = self
                    .ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name))
                    .and_then(|p| p.container_port);
                match named.or_else(|| name.parse().ok()) {
                    Some(n) => n,
                    None => {
                        return Err(format!(
                            "livenessProbe port {name:?} is not a port name of container {:?}",
                            self.name
                        ))
                    }
                }
            }
        };
        u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("livenessProbe port {n} is not a valid port number"))
    }
}

/// The URL kubelet's livenessProbe for kube-apiserver would hit, from the
/// manifest text, e.g. `https://192.0.2.10:6443/livez`.
///
/// The container is the one admission wiring targets
/// ([`crate::admission::wiring::find_target`]), wrapped or not; a Pod with
/// none falls back to its first container with an `httpGet` liveness probe.
pub fn liveness_url(manifest_yaml: &str) -> Result<String, String> {
    let doc: PodDoc = serde_norway::from_str(manifest_yaml)
        .map_err(|e| format!("manifest does not parse as a Pod: {e}"))?;
    let spec = doc.spec.ok_or("manifest has no spec")?;
    let labelled = doc
        .metadata
        .as_ref()
        .and_then(|m| m.labels.get("component"))
        .and_then(|v| v.as_str())
        == Some("kube-apiserver");
    let views: Vec<ContainerView> = spec.containers.iter().map(Container::view).collect();
    // If the apiserver container has no httpGet probe, that is the answer:
    // another container's probe would say nothing about the apiserver.
    let container = match find_target(&views, labelled) {
        Some(Target::Ambiguous { indices }) => {
            return Err(format!(
                "containers {indices:?} all run kube-apiserver; pass the health URL explicitly"
            ))
        }
        Some(t) => t
            .index()
            .and_then(|i| spec.containers.get(i))
            .ok_or("the kube-apiserver container vanished")?,
        None => spec
            .containers
            .iter()
            .find(|c| {
                c.liveness_probe
                    .as_ref()
                    .is_some_and(|p| p.http_get.is_some())
            })
            .ok_or("no kube-apiserver container and no container with a livenessProbe.httpGet")?,
    };
    let get = container
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .ok_or_else(|| {
            format!(
                "container {:?} has no livenessProbe.httpGet",
                container.name
            )
        })?;

    // kubelet lower-cases the scheme; the API only admits HTTP and HTTPS.
    let scheme = get.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "livenessProbe scheme {scheme:?} is not HTTP or HTTPS"
        ));
    }
    let host = match get.host.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => h.to_string(),
        // kubelet's default host is the pod IP. A static kube-apiserver runs
        // with hostNetwork, so its pod IP is one of the node's addresses,
        // which the manifest does not name. The apiserver listens on all
        // addresses by default (--bind-address 0.0.0.0), so loopback reaches
        // the same listener; its certificate must then carry IP:127.0.0.1
        // (kubeadm writes the host explicitly, so this rarely applies).
        None if spec.host_network => "127.0.0.1".to_string(),
        None => {
            return Err("livenessProbe has no host and the pod is not hostNetwork: \
                 kubelet would use the pod IP, which the manifest does not say"
                .to_string())
        }
    };
    let host = match host.parse::<Ipv6Addr>() {
        Ok(_) => format!("[{host}]"),
        Err(_) => host,
    };
    let port = container.resolve_port(
        get.port
            .as_ref()
            .ok_or("livenessProbe.httpGet has no port")?,
    )?;
    let path = get.path.as_deref().unwrap_or("");
    let slash = if path.starts_with('/') { "" } else { "/" };
    Ok(format!("{scheme}://{host}:{port}{slash}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEADM: &str = r#"apiVersion: v1
kind: Pod
metadata:
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=192.0.2.10
    - --secure-port=6443
    image: registry.k8s.io/kube-apiserver:v1.31.0
    livenessProbe:
      failureThreshold: 8
      httpGet:
        host: 192.0.2.10
        path: /livez
        port: 6443
        scheme: HTTPS
      initialDelaySeconds: 10
    name: kube-apiserver
    readinessProbe:
      httpGet:
        host: 192.0.2.10
        path: /readyz
        port: 6443
        scheme: HTTPS
  hostNetwork: true
"#;

    #[test]
    fn kubeadm_probe() {
        assert_eq!(
            liveness_url(KUBEADM).unwrap(),
            "https://192.0.2.10:6443/livez"
        );
    }

    #[tokio::test]
    async fn an_unrepresentable_timeout_is_an_error_not_a_panic() {
        let check = HealthCheck {
            timeout: Duration::MAX,
            ..HealthCheck::new("http://127.0.0.1:1/livez")
        };
        let err = wait_healthy(&check).await.unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }

    #[test]
    fn named_port_resolves_through_container_ports() {
        let m = KUBEADM.replace("port: 6443", "port: https").replace(
            "    name: kube-apiserver\n",
            "    name: kube-apiserver\n    ports:\n    - containerPort: 8443\n      name: https\n",
        );
        assert_eq!(liveness_url(&m).unwrap(), "https://192.0.2.10:8443/livez");
    }

    #[test]
    fn unknown_named_port_is_an_error() {
        let m = KUBEADM.replace("port: 6443", "port: secure");
        let err = liveness_url(&m).unwrap_err();
        assert!(err.contains("\"secure\""), "{err}");
    }

    #[test]
    fn port_number_as_string_is_accepted_like_kubelet() {
        let m = KUBEADM.replace("port: 6443", "port: \"6443\"");
        assert_eq!(liveness_url(&m).unwrap(), "https://192.0.2.10:6443/livez");
    }

    #[test]
    fn missing_host_is_loopback_for_host_network() {
        let m = KUBEADM.replace(
            "        host: 192.0.2.10\n        path: /livez",
            "        path: /livez",
        );
        assert_eq!(liveness_url(&m).unwrap(), "https://127.0.0.1:6443/livez");
    }

    #[test]
    fn missing_host_without_host_network_is_an_error() {
        let m = KUBEADM
            .replace(
                "        host: 192.0.2.10\n        path: /livez",
                "        path: /livez",
            )
            .replace("  hostNetwork: true\n", "");
        assert!(liveness_url(&m).unwrap_err().contains("pod IP"));
    }

    #[test]
    fn missing_probe_is_an_error() {
        let start = KUBEADM.find("    livenessProbe:").unwrap();
        let end = KUBEADM.find("    name: kube-apiserver").unwrap();
        let m = format!("{}{}", &KUBEADM[..start], &KUBEADM[end..]);
        let err = liveness_url(&m).unwrap_err();
        assert!(err.contains("livenessProbe.httpGet"), "{err}");
    }

    #[test]
    fn defaults_scheme_http_and_path_root_and_brackets_ipv6() {
        let m = "spec:\n  containers:\n  - name: c\n    livenessProbe:\n      httpGet:\n        host: \"fd00::1\"\n        port: 8080\n";
        assert_eq!(liveness_url(m).unwrap(), "http://[fd00::1]:8080/");
    }

    #[test]
    fn apiserver_container_wins_over_an_earlier_sidecar() {
        let m = KUBEADM.replace(
            "  containers:\n",
            "  containers:\n  - name: sidecar\n    image: x\n    livenessProbe:\n      httpGet:\n        port: 9000\n",
        );
        assert_eq!(liveness_url(&m).unwrap(), "https://192.0.2.10:6443/livez");
    }

    #[test]
    fn json_manifest_and_args_form() {
        let m = r#"{"spec":{"hostNetwork":true,"containers":[{"name":"api","command":["/usr/local/bin/sh"],"args":["kube-apiserver","--secure-port=6443"],"livenessProbe":{"httpGet":{"scheme":"HTTPS","port":6443,"path":"livez"}}}]}}"#;
        assert_eq!(liveness_url(m).unwrap(), "https://127.0.0.1:6443/livez");
    }

    #[test]
    fn bad_scheme_and_port_are_errors() {
        assert!(liveness_url(&KUBEADM.replace("scheme: HTTPS", "scheme: TCP")).is_err());
        assert!(liveness_url(&KUBEADM.replace("port: 6443", "port: 70000")).is_err());
        assert!(liveness_url("not: [a pod").is_err());
    }

    #[test]
    fn explicit_ca_replaces_the_default_and_a_missing_default_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let garbage = d.path().join("garbage.crt");
        std::fs::write(&garbage, "not a pem").unwrap();
        let missing = d.path().join("missing.crt");
        // The default is read only when it exists and no CA was given.
        assert!(tls_config(None, &missing, &None).is_ok());
        let err = tls_config(None, &garbage, &None).unwrap_err().to_string();
        assert!(err.contains("garbage.crt"), "{err}");
        let err = tls_config(Some(&missing), &missing, &None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.crt"), "{err}");
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "",
            "localhost:6443/livez",
            "ftp://127.0.0.1/livez",
            "https://",
        ] {
            assert!(
                matches!(
                    HealthCheck::new(url).validate(),
                    Err(HealthError::Config(_))
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn long_bodies_become_one_short_line() {
        assert_eq!(
            one_line("[+]ping ok\n[-]etcd failed\n\n", 100),
            "[+]ping ok; [-]etcd failed"
        );
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
