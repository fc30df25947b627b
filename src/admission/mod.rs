//! ImagePolicyWebhook admission: everything staticpin knows about the files
//! kube-apiserver reads for it, kept apart from the manifest editing.
//!
//! - [`preflight`]: the read-only checks that must pass before any byte of
//!   kube-apiserver.yaml changes, each reported with the file and field at fault.
//! - [`init`]: `staticpin admission init`, which renders an admission config and
//!   webhook kubeconfig that pass those checks.
//! - [`local`]: the local webhook's certificate pair (`init --local-webhook`, `doctor`).
//! - [`wiring`]: the flags, mount and volume staticpin adds to
//!   kube-apiserver.yaml, which container gets them, and what it refuses
//!   (re-exported as `crate::apiserver` for the pass).

pub mod init;
pub mod local;
pub mod preflight;
pub mod wiring;
