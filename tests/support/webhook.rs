//! kube-apiserver's side of the ImagePolicyWebhook, for tests and the
//! benchmark: a client built only from what kube-apiserver reads — the
//! AdmissionConfiguration, the webhook kubeconfig it names (server URL, CA,
//! client certificate and key) — and a keep-alive HTTP/1.1 client over
//! rustls. Also included by `benches/serve.rs` via `#[path]`, so it uses
//! only the crate's own dependencies.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What kube-apiserver knows of the webhook.
#[derive(Debug, Clone)]
pub struct Ends {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn rel(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl Ends {
    /// Follows `plugins[ImagePolicyWebhook].configuration.imagePolicy.kubeConfigFile`
    /// to the kubeconfig and its current context, as kube-apiserver does.
    pub fn from_admission_config(path: &Path) -> Ends {
        let text = std::fs::read_to_string(path).unwrap();
        let cfg: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        let plugin = cfg["plugins"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some("ImagePolicyWebhook"))
            .expect("no ImagePolicyWebhook plugin");
        let kc_path = rel(
            path.parent().unwrap(),
            plugin["configuration"]["imagePolicy"]["kubeConfigFile"]
                .as_str()
                .unwrap(),
        );
        let kc: serde_norway::Value =
            serde_norway::from_str(&std::fs::read_to_string(&kc_path).unwrap()).unwrap();
        let current = kc["current-context"].as_str().unwrap();
        let find = |list: &str, name: &str| {
            kc[list]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|e| e["name"].as_str() == Some(name))
                .cloned()
                .unwrap_or_else(|| panic!("no {list} entry {name}"))
        };
        let ctx = find("contexts", current);
        let cluster = find("clusters", ctx["context"]["cluster"].as_str().unwrap());
        let user = find("users", ctx["context"]["user"].as_str().unwrap());
        let base = kc_path.parent().unwrap();
        let url = cluster["cluster"]["server"].as_str().unwrap().to_string();
        let rest = url.strip_prefix("https://").expect("https URL");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = authority.rsplit_once(':').unwrap();
        Ends {
            host: host.to_string(),
            port: port.parse().unwrap(),
            path: path.to_string(),
            ca: rel(
                base,
                cluster["cluster"]["certificate-authority"]
                    .as_str()
                    .unwrap(),
            ),
            cert: rel(base, user["user"]["client-certificate"].as_str().unwrap()),
            key: rel(base, user["user"]["client-key"].as_str().unwrap()),
            url,
        }
    }

    /// A TLS client with this CA and, when `client` is given, that
    /// certificate and key (kube-apiserver's by default).
    pub fn tls(&self, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect();
                let key = PrivateKeyDer::from_pem_file(key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        })
    }

    /// kube-apiserver's own TLS client.
    pub fn apiserver_tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls(Some((&self.cert, &self.key)))
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection.
pub struct Conn {
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    host: String,
}

impl Conn {
    /// Connects and completes the handshake (so a refused certificate is an error here).
    pub fn connect(ends: &Ends, tls: Arc<rustls::ClientConfig>) -> io::Result<Conn> {
        let tcp = TcpStream::connect((ends.host.as_str(), ends.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(ends.host.clone()).map_err(io::Error::other)?;
        let conn = rustls::ClientConnection::new(tls, name).map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        // TLS 1.3: the server checks the client certificate after our Finished;
        // its verdict (an alert) arrives with the first read.
        Ok(Conn {
            stream: BufReader::new(stream),
            host: ends.host.clone(),
        })
    }

    /// Writes raw bytes (for half-sent requests).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let s = self.stream.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    pub fn request_head(&self, path: &str, len: usize) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {len}\r\n\r\n",
            self.host
        )
    }

    pub fn post(&mut self, path: &str, body: &[u8]) -> io::Result<Response> {
        let mut req = self.request_head(path, body.len()).into_bytes();
        req.extend_from_slice(body);
        self.write_raw(&req)?;
        self.read_response()
    }

    pub fn read_response(&mut self) -> io::Result<Response> {
        let mut line = String::new();
        if self.stream.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().map_err(io::Error::other)?;
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body)?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// An ImageReview exactly as `imagePolicyWebhook.Admit` encodes it (Go's
/// field order, an empty ObjectMeta, the `omitempty` spec, a zero status).
pub fn image_review(images: &[&str], annotations: &serde_json::Value, namespace: &str) -> Vec<u8> {
    let containers: Vec<serde_json::Value> = images
        .iter()
        .map(|i| serde_json::json!({ "image": i }))
        .collect();
    let mut spec = serde_json::Map::new();
    if !containers.is_empty() {
        spec.insert("containers".into(), containers.into());
    }
    if annotations.as_object().is_some_and(|a| !a.is_empty()) {
        spec.insert("annotations".into(), annotations.clone());
    }
    if !namespace.is_empty() {
        spec.insert("namespace".into(), namespace.into());
    }
    format!(
        r#"{{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{{"creationTimestamp":null}},"spec":{},"status":{{"allowed":false}}}}"#,
        serde_json::Value::Object(spec)
    )
    .into_bytes()
}
