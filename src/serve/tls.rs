//! The decision port's TLS: the serving certificate and, always, client
//! certificates verified against `serve.clientCA` (kube-apiserver's client
//! certificate from its webhook kubeconfig). A connection without one, or with
//! one from another CA, fails the handshake: no request is ever read from it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::admission::preflight::{
    key_matches_cert, parse_cert_chain, parse_private_key, KeyMatch,
};
use crate::config::ServeSettings;

/// Reads the three files `serve` needs and builds the TLS configuration.
/// Every error names the file and the `serve.*` key that points at it.
pub fn server_config(settings: &ServeSettings) -> Result<Arc<ServerConfig>, String> {
    let need = |p: &Option<std::path::PathBuf>, key: &str| {
        p.clone().ok_or_else(|| {
            format!(
                "serve.{key} is not set (staticpin admission init --local-webhook writes a \
                 drop-in that sets it)"
            )
        })
    };
    let cert_path = need(&settings.tls_cert, "tlsCert")?;
    let key_path = need(&settings.tls_key, "tlsKey")?;
    let ca_path = need(&settings.client_ca, "clientCA")?;
    build(&cert_path, &key_path, &ca_path)
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("serve.{key} {}: cannot read: {e}", path.display()))
}

fn build(cert_path: &Path, key_path: &Path, ca_path: &Path) -> Result<Arc<ServerConfig>, String> {
    let at = |key: &str, path: &Path, why: String| format!("serve.{key} {}: {why}", path.display());
    let chain = parse_cert_chain(&read(cert_path, "tlsCert")?)
        .map_err(|why| at("tlsCert", cert_path, why))?;
    let key =
        parse_private_key(&read(key_path, "tlsKey")?).map_err(|why| at("tlsKey", key_path, why))?;
    if let Some(leaf) = chain.first() {
        if let Ok(KeyMatch::No) = key_matches_cert(leaf, key.clone_key()) {
            return Err(at(
                "tlsKey",
                key_path,
                format!("does not match the certificate {}", cert_path.display()),
            ));
        }
    }
    let roots =
        client_roots(&read(ca_path, "clientCA")?).map_err(|why| at("clientCA", ca_path, why))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| at("clientCA", ca_path, format!("unusable as a client CA: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| at("tlsCert", cert_path, format!("unusable with its key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in a PEM bundle as a trust anchor; at least one.
pub(crate) fn client_roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM: {e}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("holds no usable CA certificate".to_string());
    }
    Ok(roots)
}
