//! Where the pass finds the ImagePolicyWebhook wiring of kube-apiserver.yaml.
//!
//! The policy itself (which container, which flags, which mount, and what
//! staticpin refuses) lives in [`crate::admission::wiring`]; this path stays
//! so that callers outside `admission` need not know the module tree.

pub use crate::admission::wiring::*;
