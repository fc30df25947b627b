//! staticpin: pin Kubernetes static pod images to registry digests, on the node.
//!
//! The crate is a library with a thin binary so that every part can be tested
//! without a process boundary. The module tree follows the data flow:
//!
//! - [`reference`]: image reference grammar and normalisation (pure).
//! - [`credentials`]: kubelet's docker-config search and host matching.
//! - [`manifest`]: kubelet's file rules, image scalars and byte-exact splicing.
//! - [`registry`]: digest resolution over the OCI distribution API.
//! - [`trust`]: TLS and PKI: PEM, X.509, key matching, rustls client configs,
//!   and the transport-error classifier shared by the registry and health clients.
//! - [`apiserver`]: ImagePolicyWebhook flags, mount and volume in kube-apiserver.yaml.
//! - [`fsutil`]: atomic, fsync'd, owner- and mode-preserving file replacement.
//! - [`backup`]: runs recorded outside the manifest directory, and undoing one.
//! - [`health`]: polling kube-apiserver's /livez after a change, for the rollback gate.
//! - [`policy`]: trusted registries, digest and tag rules, and the webhook's review decision (pure).
//! - [`pass`]: one pinning pass: lock, plan per file, resolve once, verify,
//!   back up, compare-and-swap write, health gate, report.
//! - [`config`]: the YAML config file and its drop-ins, merged and validated.
//! - [`admission`]: ImagePolicyWebhook preflight checks and `admission init`.
//! - [`notify`]: systemd's notify protocol, for both services.
//! - [`watch`]: the node daemon: file events, kubeadm hold, backoff, sd-notify.
//! - [`serve`]: the webhook server on loopback (mutual TLS, reload, drain, metrics).
//! - [`cli`]: argument parsing and the subcommands, mapping results to exit codes.

// No unwrap outside tests: a panic on a control-plane node is a failed run
// with no message. (Tests unwrap freely; the Cargo.toml [lints] hold everywhere.)
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
// Every public item says what it is for; CI's `clippy -D warnings` holds it.
#![warn(missing_docs)]

pub mod admission;
pub mod apiserver;
pub mod backup;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod fsutil;
pub mod health;
pub mod manifest;
pub mod notify;
pub mod pass;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod serve;
pub mod trust;
pub mod watch;
