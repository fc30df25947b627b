//! The local webhook's two ends: kube-apiserver's (the webhook kubeconfig)
//! and `staticpin serve`'s (the `serve:` settings). This module makes a
//! matching pair ([`generate`], for `admission init --local-webhook`) and
//! checks that a pair matches ([`check_ends`], for `doctor` and init's
//! idempotence) with the verifiers the two sides use: rustls's WebPKI server
//! verifier for what kube-apiserver checks of serve's certificate (chain and
//! the URL's host as SAN), its client verifier for what serve checks of
//! kube-apiserver's.
//!
//! The two CAs are separate (a serving CA and a client CA), so that
//! neither certificate can pose as the other side. Their private keys are
//! never written: renewal is running `init --local-webhook --force` again,
//! which replaces every file at once.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::preflight::{https_host, ClientEnd, Level};

/// Lifetime of every generated certificate, like kubeadm's leaf certificates.
pub const VALIDITY_DAYS: i64 = 365;
/// `doctor` warns this long before a certificate expires.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Every PEM file of a matching pair.
pub struct LocalPki {
    /// Verifies serve's certificate: kube-apiserver's `certificate-authority`.
    pub serving_ca: String,
    /// serve's serving certificate, for 127.0.0.1 and localhost.
    pub serve_cert: String,
    /// Its private key.
    pub serve_key: String,
    /// Verifies kube-apiserver's client certificate: serve's `clientCA`.
    pub client_ca: String,
    /// The certificate kube-apiserver presents to serve.
    pub client_cert: String,
    /// Its private key.
    pub client_key: String,
}

fn params(cn: &str, days: i64) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    let now = time::OffsetDateTime::now_utc();
    // A little slack for a node whose clock is behind the one that made it.
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(days);
    Ok(p)
}

fn ca(cn: &str) -> Result<(String, Issuer<'static, KeyPair>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut p = params(cn, VALIDITY_DAYS)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(p, key)))
}

/// A fresh pair: serving CA → serve's certificate (IP SAN 127.0.0.1, DNS
/// localhost); client CA → kube-apiserver's client certificate. ECDSA P-256.
pub fn generate() -> Result<LocalPki, String> {
    let err = |e: rcgen::Error| format!("cannot generate the webhook certificates: {e}");
    let (serving_ca, serving_issuer) = ca("staticpin local webhook serving CA").map_err(err)?;
    let (client_ca, client_issuer) = ca("staticpin local webhook client CA").map_err(err)?;

    let serve_key = KeyPair::generate().map_err(err)?;
    let mut p = params("staticpin serve", VALIDITY_DAYS).map_err(err)?;
    p.subject_alt_names = vec![
        SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
        SanType::DnsName("localhost".try_into().map_err(err)?),
    ];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serve_cert = p.signed_by(&serve_key, &serving_issuer).map_err(err)?;

    let client_key = KeyPair::generate().map_err(err)?;
    let mut p = params("kube-apiserver image policy webhook client", VALIDITY_DAYS).map_err(err)?;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = p.signed_by(&client_key, &client_issuer).map_err(err)?;

    Ok(LocalPki {
        serving_ca,
        serve_cert: serve_cert.pem(),
        serve_key: serve_key.serialize_pem(),
        client_ca,
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

/// serve's end, as read from its `serve:` settings.
pub struct ServeEnd {
    /// serve's serving certificate chain (PEM), leaf first.
    pub cert_pem: Vec<u8>,
    /// The CA bundle (PEM) serve verifies client certificates against.
    pub client_ca_pem: Vec<u8>,
}

/// One result of comparing the ends.
pub struct EndCheck {
    /// Whether the ends match, and how badly not.
    pub level: Level,
    /// The check's stable name for `doctor`'s table, e.g.
    /// `webhook-serving-pair`.
    pub check: &'static str,
    /// What was found, for a person.
    pub message: String,
}

/// Whether kube-apiserver (with `client`) and serve (with `serve`) would
/// complete a handshake, and how long their certificates last.
pub fn check_ends(client: &ClientEnd, serve: &ServeEnd) -> Vec<EndCheck> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let now = UnixTime::now();
    let mut out = vec![
        serving_pair(client, serve, &provider, now),
        client_pair(client, serve, &provider, now),
    ];
    out.extend(expiry_checks(client, serve));
    out
}

fn end_check(level: Level, check: &'static str, message: String) -> EndCheck {
    EndCheck {
        level,
        check,
        message,
    }
}

/// kube-apiserver's side: does its CA accept serve's certificate for the URL's host?
fn serving_pair(
    client: &ClientEnd,
    serve: &ServeEnd,
    provider: &Arc<CryptoProvider>,
    now: UnixTime,
) -> EndCheck {
    const CHECK: &str = "webhook-serving-pair";
    let (cas, chain) = match (certs(&client.ca_pem), certs(&serve.cert_pem)) {
        (Ok(cas), Ok(chain)) => (cas, chain),
        (Err(e), _) => return end_check(Level::Fail, CHECK, format!("the kubeconfig's CA {e}")),
        (_, Err(e)) => return end_check(Level::Fail, CHECK, format!("serve.tlsCert {e}")),
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(cas);
    let host = https_host(&client.server)
        .unwrap_or("")
        .trim_matches(['[', ']']);
    let verdict = ServerName::try_from(host.to_string())
        .map_err(|e| {
            format!(
                "the kubeconfig server {:?} has no usable host: {e}",
                client.server
            )
        })
        .and_then(|name| {
            let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("the kubeconfig CA is unusable: {e}"))?;
            v.verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    match verdict {
        Ok(()) => end_check(
            Level::Pass,
            CHECK,
            format!("the kubeconfig's CA accepts serve's certificate for {host}"),
        ),
        Err(e) => end_check(
            Level::Fail,
            CHECK,
            format!(
                "kube-apiserver would refuse serve's certificate: {e} (the kubeconfig's \
                 certificate-authority must have signed serve.tlsCert, with {host} as a SAN)"
            ),
        ),
    }
}

/// serve's side: does its client CA accept kube-apiserver's certificate?
fn client_pair(
    client: &ClientEnd,
    serve: &ServeEnd,
    provider: &Arc<CryptoProvider>,
    now: UnixTime,
) -> EndCheck {
    const CHECK: &str = "webhook-client-pair";
    let (cas, chain) = match (certs(&serve.client_ca_pem), certs(&client.client_cert_pem)) {
        (Ok(cas), Ok(chain)) => (cas, chain),
        (Err(e), _) => return end_check(Level::Fail, CHECK, format!("serve.clientCA {e}")),
        (_, Err(e)) => {
            return end_check(
                Level::Fail,
                CHECK,
                format!("the kubeconfig's client certificate {e}"),
            )
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(cas);
    let verdict = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("serve.clientCA is unusable: {e}"))
        .and_then(|v| {
            v.verify_client_cert(&chain[0], &chain[1..], now)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    match verdict {
        Ok(()) => end_check(
            Level::Pass,
            CHECK,
            "serve's client CA accepts the kubeconfig's client certificate".into(),
        ),
        Err(e) => end_check(
            Level::Fail,
            CHECK,
            format!(
                "serve would refuse kube-apiserver's client certificate: {e} \
                 (serve.clientCA must have signed the kubeconfig's client-certificate)"
            ),
        ),
    }
}

/// One check per certificate near or past its end; a single pass when none is.
fn expiry_checks(client: &ClientEnd, serve: &ServeEnd) -> Vec<EndCheck> {
    const CHECK: &str = "webhook-cert-expiry";
    let mut out = Vec::new();
    for (what, pem) in [
        ("the kubeconfig's CA", &client.ca_pem),
        (
            "the kubeconfig's client certificate",
            &client.client_cert_pem,
        ),
        ("serve.tlsCert", &serve.cert_pem),
        ("serve.clientCA", &serve.client_ca_pem),
    ] {
        for der in certs(pem).unwrap_or_default() {
            if let Some((level, message)) = expiry(what, &der) {
                out.push(end_check(level, CHECK, message));
            }
        }
    }
    if out.is_empty() {
        out.push(end_check(
            Level::Pass,
            CHECK,
            format!("every certificate is valid for more than {EXPIRY_WARNING_DAYS} days"),
        ));
    }
    out
}

/// A warning within [`EXPIRY_WARNING_DAYS`] of notAfter, a failure after it.
fn expiry(what: &str, der: &CertificateDer<'_>) -> Option<(Level, String)> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let subject = cert.subject().to_string();
    let days = (not_after - now).div_euclid(86_400);
    if not_after < now {
        Some((Level::Fail, format!("{what} ({subject}) has expired; renew with `staticpin admission init --local-webhook --force`")))
    } else if days < EXPIRY_WARNING_DAYS {
        Some((
            Level::Warn,
            format!("{what} ({subject}) expires in {days} day(s); renew with `staticpin admission init --local-webhook --force`"),
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(pki: &LocalPki) -> (ClientEnd, ServeEnd) {
        (
            ClientEnd {
                server: "https://127.0.0.1:8443/imagepolicy".into(),
                ca_pem: pki.serving_ca.clone().into_bytes(),
                client_cert_pem: pki.client_cert.clone().into_bytes(),
            },
            ServeEnd {
                cert_pem: pki.serve_cert.clone().into_bytes(),
                client_ca_pem: pki.client_ca.clone().into_bytes(),
            },
        )
    }

    fn levels(checks: &[EndCheck]) -> Vec<(&'static str, Level)> {
        checks.iter().map(|c| (c.check, c.level)).collect()
    }

    #[test]
    fn a_generated_pair_matches_and_crossed_ends_do_not() {
        let pki = generate().unwrap();
        let (client, serve) = ends(&pki);
        assert_eq!(
            levels(&check_ends(&client, &serve)),
            [
                ("webhook-serving-pair", Level::Pass),
                ("webhook-client-pair", Level::Pass),
                ("webhook-cert-expiry", Level::Pass),
            ]
        );
        // The two CAs are separate: neither verifies the other side's certificate.
        let crossed_client = ClientEnd {
            ca_pem: pki.client_ca.clone().into_bytes(),
            ..client.clone()
        };
        let crossed_serve = ServeEnd {
            client_ca_pem: pki.serving_ca.clone().into_bytes(),
            cert_pem: serve.cert_pem.clone(),
        };
        let checks = check_ends(&crossed_client, &crossed_serve);
        assert_eq!(checks[0].level, Level::Fail, "{}", checks[0].message);
        assert_eq!(checks[1].level, Level::Fail, "{}", checks[1].message);
        // A URL whose host is not in serve's certificate.
        let other_host = ClientEnd {
            server: "https://10.0.0.1:8443/imagepolicy".into(),
            ..client
        };
        let checks = check_ends(&other_host, &serve);
        assert_eq!(checks[0].level, Level::Fail);
        assert!(
            checks[0].message.contains("10.0.0.1"),
            "{}",
            checks[0].message
        );
    }

    #[test]
    fn expiry_warns_thirty_days_ahead_and_fails_after() {
        let key = KeyPair::generate().unwrap();
        let cert = |days: i64| {
            let mut p = params("soon", 0).unwrap();
            p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
            p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(400);
            p.self_signed(&key).unwrap().der().clone()
        };
        assert!(expiry("x", &cert(31)).is_none());
        let (level, message) = expiry("serve.tlsCert", &cert(10)).unwrap();
        assert_eq!(level, Level::Warn);
        assert!(
            message.contains("expires in 9 day") || message.contains("expires in 10 day"),
            "{message}"
        );
        assert!(message.contains("--local-webhook --force"), "{message}");
        let (level, message) = expiry("serve.tlsCert", &cert(-1)).unwrap();
        assert_eq!(level, Level::Fail);
        assert!(message.contains("has expired"), "{message}");
    }
}
