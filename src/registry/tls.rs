//! TLS trust per registry host, from the same certs directories the runtime uses
//! (docker layout; hosts.toml entries are read by `hosts`).
//!
//! containerd and docker read `<dir>/<host[:port]>/` for extra CAs (`*.crt`)
//! and client certificates (`*.cert` + `*.key`). staticpin builds one rustls
//! config per host from the system roots plus those files, so it trusts
//! exactly what the node's runtime trusts, host by host. Verification is only
//! switched off for hosts the operator marked insecure.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{ErrorKind, Failure};

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

/// The certificate material found for one host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HostCerts {
    pub cas: Vec<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
}

pub(crate) fn find_host_certs(certs_dirs: &[PathBuf], hosts: &[&str]) -> HostCerts {
    let mut found = HostCerts::default();
    for dir in certs_dirs {
        for host in hosts {
            for name in super::hosts::namespace_dirs(host) {
                let d = dir.join(name);
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                let mut files: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                files.sort();
                for f in files {
                    match f.extension().and_then(|e| e.to_str()) {
                        Some("crt") => found.cas.push(f),
                        Some("cert") if found.client.is_none() => {
                            let key = f.with_extension("key");
                            if key.exists() {
                                found.client = Some((f, key));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    found
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            Failure::new(
                ErrorKind::Config,
                format!("cannot read {}: {e}", path.display()),
            )
        })?
        .collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(Failure::new(
            ErrorKind::Config,
            format!("{} contains no PEM certificate", path.display()),
        )),
        Err(e) => Err(Failure::new(
            ErrorKind::Config,
            format!("cannot parse {}: {e}", path.display()),
        )),
    }
}

/// Builds the rustls config for one host.
pub(crate) fn client_config(certs: &HostCerts, insecure: bool) -> Result<ClientConfig, Failure> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new(ErrorKind::Tls, e.to_string()))?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        for ca in &certs.cas {
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| {
                    Failure::new(
                        ErrorKind::Config,
                        format!("CA {} is not usable: {e}", ca.display()),
                    )
                })?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match &certs.client {
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Failure::new(
                    ErrorKind::Config,
                    format!("cannot read client key {}: {e}", key.display()),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Failure::new(
                    ErrorKind::Config,
                    format!("client certificate {}: {e}", cert.display()),
                )
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
    fn finds_containerd_and_docker_layouts() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::create_dir_all(a.join("reg.example:5000")).unwrap();
        std::fs::create_dir_all(b.join("reg.example_5000_")).unwrap();
        std::fs::write(a.join("reg.example:5000/ca.crt"), "x").unwrap();
        std::fs::write(b.join("reg.example_5000_/extra.crt"), "x").unwrap();
        std::fs::write(b.join("reg.example_5000_/client.cert"), "x").unwrap();
        std::fs::write(b.join("reg.example_5000_/client.key"), "x").unwrap();
        let found = find_host_certs(&[a.clone(), b.clone()], &["reg.example:5000"]);
        assert_eq!(found.cas.len(), 2);
        assert!(found.client.is_some());
        assert!(find_host_certs(&[a, b], &["other:5000"]).cas.is_empty());
    }

    #[test]
    fn garbage_ca_is_a_config_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca.crt");
        std::fs::write(&ca, "not a pem").unwrap();
        let certs = HostCerts {
            cas: vec![ca.clone()],
            client: None,
        };
        let err = client_config(&certs, false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(
            err.detail.contains(&ca.display().to_string()),
            "{}",
            err.detail
        );
    }
}
