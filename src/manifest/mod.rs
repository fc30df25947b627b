//! Static pod manifests: which files kubelet reads, where their images are,
//! and how to change only those bytes.
//!
//! - [`scan`] applies kubelet's file-source rules to a path.
//! - [`parse`] finds the image scalars of a single-Pod document with their
//!   exact byte ranges, or says why the file is not one.
//! - [`splice`] rewrites those ranges and proves, with an independent YAML
//!   parser, that nothing else in the document changed.

pub mod parse;
pub mod scan;
pub mod splice;

/// kubelet reads at most this much of a manifest (`maxConfigLength`).
pub const MAX_MANIFEST_BYTES: u64 = 10 << 20;

/// Why a file was left alone. `is_error` decides whether it fails the run:
/// a subdirectory or a Deployment in a CI folder is fine to pass over, a
/// truncated or multi-document manifest is something kubelet would reject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub reason: String,
    pub is_error: bool,
}

impl Skip {
    pub fn benign(reason: impl Into<String>) -> Skip {
        Skip {
            reason: reason.into(),
            is_error: false,
        }
    }
    pub fn error(reason: impl Into<String>) -> Skip {
        Skip {
            reason: reason.into(),
            is_error: true,
        }
    }
}
