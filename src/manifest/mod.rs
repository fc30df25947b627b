//! Static pod manifests: which files kubelet reads, where their images are,
//! and how to change only those bytes.
//!
//! - [`scan`] applies kubelet's file-source rules to a path.
//! - [`parse`] finds the image scalars of a Pod document with their exact
//!   byte ranges, reading the file as kubelet does, or says why it will not.
//! - [`edit`] is the one byte-preserving edit engine: scalar replacement,
//!   list items and keys that copy their neighbours' layout, and the proof
//!   against an independent parser that only the intended values changed.
//! - `yaml11` holds the checks where kubelet's YAML 1.1 reader and ours
//!   could disagree; `locate` turns parser positions into exact bytes.
//! - [`splice`] rewrites those ranges and proves, with an independent YAML
//!   parser, that nothing else in the document changed.

pub mod edit;
mod locate;
pub mod parse;
pub mod scan;
pub mod splice;
mod yaml11;

/// kubelet's `maxConfigLength`: it rejects a manifest of this many bytes
/// or more (`ReadAtMost` fails once it has handed out the limit).
pub const MAX_MANIFEST_BYTES: u64 = 10 << 20;

/// Whether kubelet would read a manifest of `len` bytes. Check files before
/// reading them and every rewritten text before writing it: pinning adds
/// 72 bytes per image, so a file near the limit can grow past it.
pub fn check_size(len: usize) -> Result<(), String> {
    if (len as u64) < MAX_MANIFEST_BYTES {
        Ok(())
    } else {
        Err(format!(
            "{len} bytes: kubelet rejects manifests of 10 MiB ({MAX_MANIFEST_BYTES} bytes) or more"
        ))
    }
}

/// Why a file was left alone. `is_error` decides whether it fails the run:
/// a subdirectory or a Deployment in a CI folder is fine to pass over; a
/// truncated manifest is something kubelet would reject, and one kubelet may
/// read differently from staticpin (duplicate keys, merge keys, …) must not
/// be reported as pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// Why, in words, for the report.
    pub reason: String,
    /// Whether the skip fails the run (exit 2) rather than passing over the
    /// file.
    pub is_error: bool,
}

impl Skip {
    /// A skip that does not fail the run: the file is simply not a manifest to
    /// pin.
    pub fn benign(reason: impl Into<String>) -> Skip {
        Skip {
            reason: reason.into(),
            is_error: false,
        }
    }
    /// A skip that fails the run: kubelet would reject the file, or might read
    /// it differently from staticpin.
    pub fn error(reason: impl Into<String>) -> Skip {
        Skip {
            reason: reason.into(),
            is_error: true,
        }
    }
}
