//! PEM and X.509: CA bundles, certificate chains, private keys, whether a
//! key belongs to a certificate, and validity times.
//!
//! PEM is read with `rustls-pki-types` (the same reader [`super::client`]
//! uses for the registry and health clients) and certificates with `x509-parser`, which takes
//! X.509 v1 as Go does (`openssl x509 -req` without extensions makes v1
//! certificates; webpki refuses them) and reports malformed DER as errors.
//! Validity times are x509-parser's `ASN1Time`, compared as Unix seconds and
//! shown through its `time` calendar: no hand-written DER or date code.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;
use x509_parser::x509::SubjectPublicKeyInfo;

pub(crate) struct CaInfo {
    pub count: usize,
    /// Set when every certificate has expired: the latest notAfter.
    pub all_expired: Option<String>,
}

fn x509<'a>(cert: &'a CertificateDer<'_>) -> Option<X509Certificate<'a>> {
    X509Certificate::from_der(cert.as_ref())
        .ok()
        .map(|(_, c)| c)
}

/// At least one parseable certificate, as Go's `AppendCertsFromPEM` needs
/// (it skips the ones it cannot parse).
pub(crate) fn parse_ca(pem: &[u8]) -> Result<CaInfo, String> {
    let certs = pem_certificates(pem)?;
    let parsed: Vec<X509Certificate> = certs.iter().filter_map(x509).collect();
    if parsed.is_empty() {
        return Err("no certificate in it parses as X.509".to_string());
    }
    let now = ASN1Time::now().timestamp();
    let all_expired = parsed
        .iter()
        .all(|c| c.validity().not_after.timestamp() < now)
        .then(|| {
            parsed
                .iter()
                .map(|c| c.validity().not_after)
                .max_by_key(ASN1Time::timestamp)
                .map(show)
        })
        .flatten();
    Ok(CaInfo {
        count: parsed.len(),
        all_expired,
    })
}

pub(crate) fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(if PrivateKeyDer::from_pem_slice(pem).is_ok() {
            "holds a private key, not a certificate (are the certificate and key swapped?)"
                .to_string()
        } else {
            "has no PEM CERTIFICATE block".to_string()
        });
    }
    Ok(certs)
}

/// A client certificate chain, leaf first, each parseable as X.509.
pub(crate) fn parse_cert_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = pem_certificates(pem)?;
    if let Some(i) = certs.iter().position(|c| x509(c).is_none()) {
        return Err(format!("certificate #{} does not parse as X.509", i + 1));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC), as Go's
/// `tls.X509KeyPair` takes it.
pub(crate) fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        if pem_certificates(pem).is_ok() {
            "holds a certificate, not a private key (are the certificate and key swapped?)"
                .to_string()
        } else {
            format!("has no PEM private key block (unencrypted PKCS#8, RSA or EC): {e}")
        }
    })
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyMatch {
    Yes,
    No,
    /// The key type cannot report its public key.
    Unknown,
}

/// Whether `key` is the private half of `cert`'s public key: rustls's own
/// `CertifiedKey::keys_match` comparison (the signing key's public key
/// against the certificate's), on the key bits only, since the algorithm
/// identifier may legitimately differ in encoding (RSA with or without NULL
/// parameters).
pub(crate) fn key_matches_cert(
    cert: &CertificateDer<'_>,
    key: PrivateKeyDer<'static>,
) -> Result<KeyMatch, String> {
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        format!("cannot load the private key: {e} (RSA, ECDSA P-256/P-384 and Ed25519 keys can be checked)")
    })?;
    let Some(key_spki) = signing.public_key() else {
        return Ok(KeyMatch::Unknown);
    };
    let cert = x509(cert).ok_or("the certificate does not parse as X.509")?;
    let cert_bits = &cert.tbs_certificate.subject_pki.subject_public_key.data;
    Ok(match SubjectPublicKeyInfo::from_der(key_spki.as_ref()) {
        Ok((_, k)) if k.subject_public_key.data == *cert_bits => KeyMatch::Yes,
        Ok(_) => KeyMatch::No,
        Err(_) => KeyMatch::Unknown,
    })
}

pub(crate) enum Expiry {
    Valid,
    Expired(String),
    NotYetValid(String),
}

/// Where now stands in the certificate's validity; `None` if it does not parse.
pub(crate) fn cert_expiry(cert: &CertificateDer<'_>) -> Option<Expiry> {
    let c = x509(cert)?;
    let v = c.validity();
    let now = ASN1Time::now().timestamp();
    Some(if now > v.not_after.timestamp() {
        Expiry::Expired(show(v.not_after))
    } else if now < v.not_before.timestamp() {
        Expiry::NotYetValid(show(v.not_before))
    } else {
        Expiry::Valid
    })
}

/// `2001-01-01 00:00:00 UTC`, as the messages have always shown it.
fn show(t: ASN1Time) -> String {
    let d = t.to_datetime();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission/pki");

    fn cert(name: &str) -> CertificateDer<'static> {
        let pem = std::fs::read(std::path::Path::new(PKI).join(name)).unwrap();
        CertificateDer::from_pem_slice(&pem).unwrap()
    }

    #[test]
    fn times_show_in_utc_and_v1_certificates_parse() {
        match cert_expiry(&cert("client-expired.crt")) {
            Some(Expiry::Expired(when)) => assert_eq!(when, "2001-01-01 00:00:00 UTC"),
            _ => panic!("client-expired.crt is not expired"),
        }
        assert!(matches!(
            cert_expiry(&cert("client-v1.crt")),
            Some(Expiry::Valid)
        ));
        assert!(matches!(cert_expiry(&cert("ca.crt")), Some(Expiry::Valid)));
    }
}
