//! TLS trust per registry host, from the same certs directories the runtime uses
//! (docker layout; hosts.toml entries are read by `hosts`).
//!
//! containerd and docker read `<dir>/<host[:port]>/` for extra CAs (`*.crt`)
//! and client certificates (`*.cert` + `*.key`). staticpin builds one rustls
//! config per host (through [`crate::trust::client`]) from the system roots
//! plus those files, so it trusts
//! exactly what the node's runtime trusts, host by host. Verification is only
//! switched off for hosts the operator marked insecure.

use std::path::PathBuf;

use rustls::ClientConfig;

use super::{ErrorKind, Failure};
use crate::trust::{self, TrustError};

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

/// Builds the rustls config for one host (see [`crate::trust::client`]).
pub(crate) fn client_config(certs: &HostCerts, insecure: bool) -> Result<ClientConfig, Failure> {
    trust::client::client_config(&certs.cas, certs.client.as_ref(), insecure).map_err(|e| match e {
        TrustError::File(detail) => Failure::new(ErrorKind::Config, detail),
        TrustError::Tls(detail) => Failure::new(ErrorKind::Tls, detail),
    })
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
