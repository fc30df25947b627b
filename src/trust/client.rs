//! rustls client configs: the system roots (read once per process), extra
//! CA files, an optional client certificate, and the no-verification
//! verifier for registries the operator marked insecure. The registry client
//! and the health gate both build their TLS here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::TrustError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// System roots are read once per process: loading them costs milliseconds
/// and most runs talk to only one or two hosts.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::debug!("system CA store: {e}");
        }
        loaded.certs
    })
}

/// Every PEM certificate in a file; none is an error naming the file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TrustError::File(format!("cannot read {}: {e}", path.display())))?
        .collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(TrustError::File(format!(
            "{} contains no PEM certificate",
            path.display()
        ))),
        Err(e) => Err(TrustError::File(format!(
            "cannot parse {}: {e}",
            path.display()
        ))),
    }
}

/// Builds a rustls client config: system roots plus the CA files in `cas`,
/// and the client certificate and key if given. `insecure` switches server
/// verification off; only registries the operator marked insecure ask for it.
pub fn client_config(
    cas: &[PathBuf],
    client: Option<&(PathBuf, PathBuf)>,
    insecure: bool,
) -> Result<ClientConfig, TrustError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::Tls(e.to_string()))?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        for ca in cas {
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| {
                    TrustError::File(format!("CA {} is not usable: {e}", ca.display()))
                })?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match client {
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                TrustError::File(format!("cannot read client key {}: {e}", key.display()))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                TrustError::File(format!("client certificate {}: {e}", cert.display()))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Used only for registries the operator explicitly marked insecure.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_ca_is_a_file_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca.crt");
        std::fs::write(&ca, "not a pem").unwrap();
        match client_config(std::slice::from_ref(&ca), None, false) {
            Err(TrustError::File(detail)) => {
                assert!(detail.contains(&ca.display().to_string()), "{detail}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
