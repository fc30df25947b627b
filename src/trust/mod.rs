//! Trust and PKI, in one place: what staticpin trusts when it talks TLS, and
//! how it reads and checks certificates and keys.
//!
//! - [`certs`]: PEM (rustls-pki-types) and X.509 (x509-parser): CA bundles,
//!   chains, private keys, key↔certificate matching, validity times.
//! - [`client`]: rustls client configs from system roots, CA files and a
//!   client certificate, for the registry client and the health gate.
//! - [`classify`]: what a failed HTTP request's transport error was (timeout,
//!   TLS, connection), with its whole cause chain, for both clients' errors.

pub mod certs;
pub mod client;

/// Why a TLS client config could not be built.
#[derive(Debug)]
pub enum TrustError {
    /// A CA, certificate or key file is unreadable or unusable; names the file.
    File(String),
    /// The TLS library refused the configuration itself.
    Tls(String),
}

/// What kind of failure a transport error was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The connect or request timeout passed.
    Timeout,
    /// A redirect error: only reachable for clients that follow redirects.
    Redirect,
    /// Any rustls failure, or a handshake that met plain HTTP.
    Tls,
    /// The connection could not be made.
    Connect,
    /// Anything else on the way (a reset mid-request, a broken body).
    Other,
}

/// Classifies a reqwest error and spells out its whole cause chain, because
/// the top-level message ("error sending request") alone does not say what
/// to fix.
pub fn classify(e: &reqwest::Error) -> (Transport, String) {
    let mut chain: Vec<String> = Vec::new();
    let mut tls = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        tls |= err.downcast_ref::<rustls::Error>().is_some();
        // io::Error hides its payload from source(), and hyper-rustls wraps
        // tokio-rustls' io::Error(rustls::Error) in another io::Error: look
        // inside, all the way down.
        let mut io = err.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(|e| e.get_ref()) {
            tls |= inner.downcast_ref::<rustls::Error>().is_some();
            io = inner.downcast_ref::<std::io::Error>();
            if io.is_none() {
                chain.push(inner.to_string());
            }
        }
        let msg = err.to_string();
        if !chain.contains(&msg) {
            chain.push(msg);
        }
        source = err.source();
    }
    let text = chain.join(": ");
    let kind = if e.is_timeout() {
        Transport::Timeout
    } else if e.is_redirect() {
        Transport::Redirect
    } else if tls
        || text.contains("certificate")
        || text.contains("InvalidContentType")
        || text.contains("corrupt message")
    {
        Transport::Tls
    } else if e.is_connect() {
        Transport::Connect
    } else {
        Transport::Other
    };
    (kind, text)
}
