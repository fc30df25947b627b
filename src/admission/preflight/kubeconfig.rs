//! Step 4: the webhook kubeconfig as client-go's clientcmd loads it, and
//! the CA and client credentials it names.

use std::collections::HashSet;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use serde_norway::Value;

use super::*;

impl Run {
    /// Step 4: the webhook kubeconfig, its CA and client credentials.
    pub(super) fn kubeconfig(&mut self, path: &Path, from: &Path, from_field: &str) {
        let Some(kc) = self.load_kubeconfig(path, from, from_field) else {
            return;
        };
        let Some(Current {
            cluster_index,
            cluster,
            user_index,
            user,
        }) = self.current(path, &kc)
        else {
            return;
        };
        let base = parent(path).to_path_buf();
        self.server(path, cluster_index, &cluster);
        self.ca(path, &base, cluster_index, &cluster);
        self.client_cert(path, &base, user_index, &user);
    }

    /// Reads and decodes the kubeconfig as clientcmd does, refusing what it
    /// refuses: another version or kind, a repeated name.
    fn load_kubeconfig(
        &mut self,
        path: &Path,
        from: &Path,
        from_field: &str,
    ) -> Option<KubeConfig> {
        const C: &str = CHECK_KUBECONFIG;
        let bytes = self.read_referenced(C, path, from, from_field)?;
        let kc: KubeConfig = match parse_typed::<Option<KubeConfig>>(&bytes) {
            Ok(kc) => kc.unwrap_or_default(),
            Err(e) => {
                self.fail(
                    site(C, path),
                    format!("{e} (expected a kubeconfig, kind: Config)"),
                );
                return None;
            }
        };
        if let Some(v) = kc.api_version.as_deref().filter(|v| *v != "v1") {
            self.fail(
                site(C, path).at("apiVersion"),
                format!("must be v1, got {v:?}"),
            );
            return None;
        }
        if let Some(k) = kc.kind.as_deref().filter(|k| *k != "Config") {
            self.fail(
                site(C, path).at("kind"),
                format!("must be Config, got {k:?}"),
            );
            return None;
        }
        // clientcmd turns these lists into maps and rejects a repeated name.
        let clusters = kc.clusters().iter().map(|c| c.name.as_deref()).collect();
        let users = kc.users().iter().map(|u| u.name.as_deref()).collect();
        let contexts = kc.contexts().iter().map(|c| c.name.as_deref()).collect();
        let dup = duplicate(clusters, "clusters")
            .or_else(|| duplicate(users, "users"))
            .or_else(|| duplicate(contexts, "contexts"));
        if let Some((field, name)) = dup {
            self.fail(
                site(C, path).at(&field),
                format!("duplicate name {name:?}: the kubeconfig loader rejects the file"),
            );
            return None;
        }
        Some(kc)
    }

    /// The cluster and user current-context selects.
    fn current(&mut self, path: &Path, kc: &KubeConfig) -> Option<Current> {
        const C: &str = CHECK_KUBECONFIG;
        let Some(current) = kc.current_context.as_deref().filter(|c| !c.is_empty()) else {
            self.fail(
                site(C, path).at("current-context"),
                "not set: kube-apiserver cannot tell which cluster and user to use for the webhook",
            );
            return None;
        };
        let Some((ci, ctx)) = kc
            .contexts()
            .iter()
            .enumerate()
            .find(|(_, c)| c.name.as_deref() == Some(current))
        else {
            self.fail(
                site(C, path).at("current-context"),
                format!("names context {current:?}, which is not in contexts"),
            );
            return None;
        };
        let ctx = ctx.context.clone().unwrap_or_default();
        let cluster_name = ctx.cluster.unwrap_or_default();
        let by_name = |n: Option<&str>, want: &str| n == Some(want) && !want.is_empty();
        let Some((cluster_index, cluster)) = kc
            .clusters()
            .iter()
            .enumerate()
            .find(|(_, c)| by_name(c.name.as_deref(), &cluster_name))
        else {
            self.fail(
                site(C, path).at(&format!("contexts[{ci}].context.cluster")),
                format!("names cluster {cluster_name:?}, which is not in clusters"),
            );
            return None;
        };
        let user_name = ctx.user.unwrap_or_default();
        let Some((user_index, user)) = kc
            .users()
            .iter()
            .enumerate()
            .find(|(_, u)| by_name(u.name.as_deref(), &user_name))
        else {
            self.fail(
                site(C, path).at(&format!("contexts[{ci}].context.user")),
                format!("names user {user_name:?}, which is not in users"),
            );
            return None;
        };
        self.pass(
            site(C, path).at("current-context"),
            format!("{current:?}: cluster {cluster_name:?}, user {user_name:?}"),
        );
        Some(Current {
            cluster_index,
            cluster: cluster.cluster.clone().unwrap_or_default(),
            user_index,
            user: user.user.clone().unwrap_or_default(),
        })
    }

    fn server(&mut self, path: &Path, ci: usize, cluster: &Cluster) {
        const C: &str = CHECK_SERVER;
        let field = format!("clusters[{ci}].cluster.server");
        match cluster.server.as_deref().filter(|s| !s.is_empty()) {
            None => self.fail(site(C, path).at(&field), "not set: the webhook backend's https:// URL"),
            Some(s) => match https_host(s) {
                Some(_) => self.pass(site(C, path).at(&field), s.to_string()),
                None => self.fail(site(C, path).at(&field), format!("must be an https:// URL with a host (the webhook backend is only called over TLS), got {s:?}")),
            },
        }
    }

    fn ca(&mut self, path: &Path, base: &Path, ci: usize, cluster: &Cluster) {
        const C: &str = CHECK_CA;
        let at = format!("clusters[{ci}].cluster");
        let insecure = cluster.insecure_skip_tls_verify.unwrap_or(false);
        let loaded = self.load_pem(
            C,
            path,
            base,
            (
                &format!("{at}.certificate-authority"),
                &cluster.certificate_authority,
            ),
            (
                &format!("{at}.certificate-authority-data"),
                &cluster.certificate_authority_data,
            ),
        );
        if insecure {
            let field = format!("{at}.insecure-skip-tls-verify");
            if matches!(loaded, Loaded::Absent) {
                self.warn(site(C, path).at(&field), "true: the webhook backend's certificate is not verified, so anyone on the path can answer for it");
            } else {
                // client-go: "specifying a root certificates file with the
                // insecure flag is not allowed", when the webhook is built.
                self.fail(site(C, path).at(&field), "true together with a certificate authority: client-go refuses the combination and kube-apiserver does not start; remove one");
            }
            return;
        }
        match loaded {
            Loaded::Absent => self.warn(site(C, path).at(&format!("{at}.certificate-authority")), "not set: the backend's certificate is checked against the system roots inside the kube-apiserver image"),
            Loaded::Failed => {}
            Loaded::Pem(Pem {
                bytes,
                field,
                source,
            }) => match parse_ca(&bytes) {
                Ok(info) => {
                    let msg = format!("{source}: {} certificate(s)", info.count);
                    match info.all_expired {
                        Some(when) => self.warn(site(C, path).at(&field), format!("{msg}, all expired (the last on {when}): the backend's certificate cannot verify")),
                        None => self.pass(site(C, path).at(&field), msg),
                    }
                }
                Err(e) => self.fail(site(C, path).at(&field), format!("{source}: {e}")),
            },
        }
    }

    fn client_cert(&mut self, path: &Path, base: &Path, ui: usize, user: &User) {
        const C: &str = CHECK_CLIENT_CERT;
        let at = format!("users[{ui}].user");
        let cert_field = format!("{at}.client-certificate");
        let key_field = format!("{at}.client-key");
        let cert = self.load_pem(
            C,
            path,
            base,
            (&cert_field, &user.client_certificate),
            (&format!("{cert_field}-data"), &user.client_certificate_data),
        );
        let key = self.load_pem(
            C,
            path,
            base,
            (&key_field, &user.client_key),
            (&format!("{key_field}-data"), &user.client_key_data),
        );
        if let Some(token_file) = user.token_file.as_deref().filter(|t| !t.is_empty()) {
            let token_file = resolve(base, token_file);
            self.read_referenced(C, &token_file, path, &format!("{at}.tokenFile"));
        }
        let (cert, key) = match (cert, key) {
            (Loaded::Failed, _) | (_, Loaded::Failed) => return,
            (Loaded::Absent, Loaded::Absent) => {
                let other = user.other_credentials();
                if other.is_empty() {
                    self.fail(site(C, path).at(&cert_field), "not set, and the user has no other credentials: kube-apiserver cannot authenticate to the webhook backend; set client-certificate and client-key");
                } else {
                    self.warn(site(C, path).at(&at), format!("authenticates with {}, which staticpin does not check; the documented setup is client-certificate and client-key", other.join(" and ")));
                }
                return;
            }
            (Loaded::Pem(_), Loaded::Absent) => {
                self.fail(
                    site(C, path).at(&key_field),
                    "not set: a client certificate needs its key (client-key or client-key-data)",
                );
                return;
            }
            (Loaded::Absent, Loaded::Pem(_)) => {
                self.fail(site(C, path).at(&cert_field), "not set: a client key needs its certificate (client-certificate or client-certificate-data)");
                return;
            }
            (Loaded::Pem(cert), Loaded::Pem(key)) => (cert, key),
        };
        self.key_pair(path, &cert, &key);
    }

    /// The client certificate parses, its key loads and matches, and it is
    /// within its validity.
    fn key_pair(&mut self, path: &Path, cert: &Pem, key: &Pem) {
        const C: &str = CHECK_CLIENT_CERT;
        let leaf = match parse_cert_chain(&cert.bytes) {
            Ok(chain) => chain.into_iter().next(),
            Err(e) => {
                self.fail(
                    site(C, path).at(&cert.field),
                    format!("{}: {e}", cert.source),
                );
                return;
            }
        };
        let parsed_key = match parse_private_key(&key.bytes) {
            Ok(k) => k,
            Err(e) => {
                self.fail(site(C, path).at(&key.field), format!("{}: {e}", key.source));
                return;
            }
        };
        let Some(leaf) = leaf else { return };
        let (cert_at, key_at) = (site(C, path).at(&cert.field), site(C, path).at(&key.field));
        match key_matches_cert(&leaf, parsed_key) {
            Ok(KeyMatch::Yes) => {
                let msg = format!("{}: the key in {} matches it", cert.source, key.source);
                match cert_expiry(&leaf) {
                    Some(Expiry::Expired(when)) => self.warn(cert_at, format!("{msg}, but it expired on {when}: the backend will refuse the TLS handshake")),
                    Some(Expiry::NotYetValid(when)) => self.warn(cert_at, format!("{msg}, but it is not valid before {when}")),
                    _ => self.pass(cert_at, msg),
                }
            }
            Ok(KeyMatch::Unknown) => self.warn(
                key_at,
                format!(
                    "{}: cannot tell whether this key matches the certificate in {}",
                    key.source, cert.source
                ),
            ),
            Ok(KeyMatch::No) => self.fail(
                key_at,
                format!(
                "{}: the key does not match the certificate in {}: kube-apiserver does not start",
                key.source, cert.source
            ),
            ),
            Err(e) => self.fail(key_at, format!("{}: {e}", key.source)),
        }
    }

    /// A file field and its inline `-data` twin, as client-go reads them.
    fn load_pem(
        &mut self,
        check: &'static str,
        kubeconfig: &Path,
        base: &Path,
        (file_field, file): (&str, &Option<String>),
        (data_field, data): (&str, &Option<String>),
    ) -> Loaded {
        let file = file.as_deref().filter(|s| !s.is_empty());
        let data = data.as_deref().filter(|s| !s.is_empty());
        match (file, data) {
            (Some(_), Some(_)) => {
                let short = file_field.rsplit('.').next().unwrap_or(file_field);
                self.fail(site(check, kubeconfig).at(data_field), format!("set together with {short}: client-go refuses a kubeconfig with both and kube-apiserver does not start; keep one"));
                Loaded::Failed
            }
            (Some(f), None) => {
                let p = resolve(base, f);
                match self.read_referenced(check, &p, kubeconfig, file_field) {
                    Some(bytes) => Loaded::Pem(Pem {
                        bytes,
                        field: file_field.to_string(),
                        source: p.display().to_string(),
                    }),
                    None => Loaded::Failed,
                }
            }
            (None, Some(d)) => {
                // Go decodes []byte fields as standard base64; line breaks
                // are skipped.
                let compact: String = d.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                match base64::engine::general_purpose::STANDARD.decode(compact) {
                    Ok(bytes) => Loaded::Pem(Pem {
                        bytes,
                        field: data_field.to_string(),
                        source: "the inline data".to_string(),
                    }),
                    Err(e) => {
                        self.fail(
                            site(check, kubeconfig).at(data_field),
                            format!("is not valid base64: {e}"),
                        );
                        Loaded::Failed
                    }
                }
            }
            (None, None) => Loaded::Absent,
        }
    }
}

/// A certificate or key as read from a kubeconfig.
enum Loaded {
    Absent,
    /// Already reported.
    Failed,
    Pem(Pem),
}

struct Pem {
    bytes: Vec<u8>,
    /// The field it came from.
    field: String,
    /// The file path, or "the inline data", for messages.
    source: String,
}

// The kubeconfig, as far as the webhook uses it. Unknown keys are ignored, as
// clientcmd does.
#[derive(Debug, Default, Deserialize)]
struct KubeConfig {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    clusters: Option<Vec<NamedCluster>>,
    users: Option<Vec<NamedUser>>,
    contexts: Option<Vec<NamedContext>>,
    #[serde(rename = "current-context")]
    current_context: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: Option<String>,
    cluster: Option<Cluster>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Cluster {
    server: Option<String>,
    #[serde(rename = "certificate-authority")]
    certificate_authority: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify")]
    insecure_skip_tls_verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: Option<String>,
    user: Option<User>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct User {
    #[serde(rename = "client-certificate")]
    client_certificate: Option<String>,
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key")]
    client_key: Option<String>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    username: Option<String>,
    exec: Option<Value>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<Value>,
}

impl User {
    fn other_credentials(&self) -> Vec<&'static str> {
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        let mut v = Vec::new();
        if set(&self.token) || set(&self.token_file) {
            v.push("a bearer token");
        }
        if set(&self.username) {
            v.push("basic auth");
        }
        if self.exec.as_ref().is_some_and(|e| !e.is_null()) {
            v.push("an exec plugin");
        }
        if self.auth_provider.as_ref().is_some_and(|e| !e.is_null()) {
            v.push("an auth-provider");
        }
        v
    }
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: Option<String>,
    context: Option<Context>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Context {
    cluster: Option<String>,
    user: Option<String>,
}

/// What current-context selects, with the list indices for field paths.
struct Current {
    cluster_index: usize,
    cluster: Cluster,
    user_index: usize,
    user: User,
}

impl KubeConfig {
    fn clusters(&self) -> &[NamedCluster] {
        self.clusters.as_deref().unwrap_or_default()
    }

    fn users(&self) -> &[NamedUser] {
        self.users.as_deref().unwrap_or_default()
    }

    fn contexts(&self) -> &[NamedContext] {
        self.contexts.as_deref().unwrap_or_default()
    }
}

fn duplicate(names: Vec<Option<&str>>, list: &str) -> Option<(String, String)> {
    let mut seen = HashSet::new();
    for (i, n) in names.into_iter().enumerate() {
        let n = n.unwrap_or("");
        if !seen.insert(n) {
            return Some((format!("{list}[{i}].name"), n.to_string()));
        }
    }
    None
}

/// The webhook's client side as kube-apiserver loads it from a kubeconfig:
/// the URL it calls, the CA it trusts and the certificate it presents (PEM).
/// For `doctor` and `admission init --local-webhook`, which compare them with
/// `serve`'s end.
#[derive(Debug, Clone)]
pub struct ClientEnd {
    /// The cluster's `server`: the URL kube-apiserver POSTs to.
    pub server: String,
    /// The CA bundle that verifies the backend's certificate.
    pub ca_pem: Vec<u8>,
    /// The client certificate (chain) kube-apiserver presents.
    pub client_cert_pem: Vec<u8>,
}

/// Reads `path` the way clientcmd does for the fields [`ClientEnd`] holds:
/// current-context's cluster and user, `-data` or a file relative to the
/// kubeconfig's directory. Errors name the file and field.
pub fn client_end(path: &Path) -> Result<ClientEnd, String> {
    let at = |field: &str, why: String| format!("{}: {field}: {why}", path.display());
    let bytes = fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let kc: KubeConfig = parse_typed::<Option<KubeConfig>>(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .unwrap_or_default();
    let current = kc.current_context.clone().unwrap_or_default();
    let context = kc
        .contexts()
        .iter()
        .find(|c| c.name.as_deref() == Some(current.as_str()))
        .and_then(|c| c.context.clone())
        .ok_or_else(|| at("current-context", format!("no context named {current:?}")))?;
    let cluster_name = context.cluster.unwrap_or_default();
    let cluster = kc
        .clusters()
        .iter()
        .find(|c| c.name.as_deref() == Some(cluster_name.as_str()))
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| at("clusters", format!("no cluster named {cluster_name:?}")))?;
    let user_name = context.user.unwrap_or_default();
    let user = kc
        .users()
        .iter()
        .find(|u| u.name.as_deref() == Some(user_name.as_str()))
        .and_then(|u| u.user.clone())
        .ok_or_else(|| at("users", format!("no user named {user_name:?}")))?;
    let base = parent(path).to_path_buf();
    let load =
        |data: &Option<String>, file: &Option<String>, field: &str| -> Result<Vec<u8>, String> {
            if let Some(d) = data.as_deref().filter(|d| !d.is_empty()) {
                return base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map_err(|e| at(&format!("{field}-data"), format!("is not base64: {e}")));
            }
            match file.as_deref().filter(|f| !f.is_empty()) {
                Some(f) => {
                    let p = resolve(&base, f);
                    fs::read(&p).map_err(|e| at(field, format!("cannot read {}: {e}", p.display())))
                }
                None => Err(at(field, "is not set".to_string())),
            }
        };
    Ok(ClientEnd {
        server: cluster.server.clone().unwrap_or_default(),
        ca_pem: load(
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
            "certificate-authority",
        )?,
        client_cert_pem: load(
            &user.client_certificate_data,
            &user.client_certificate,
            "client-certificate",
        )?,
    })
}
