//! Tag drift: whether the tag of each pinned image still names the digest it
//! was pinned to. `staticpin status` prints it; a daemon's resync calls
//! [`status`] and reports changes.
//!
//! Read-only and cheap: one HEAD per unique tag (the registry's claimed
//! `Docker-Content-Digest`, through [`Resolver::head_digest`]), no lock, no
//! write. A HEAD never pins anything: `pin --update` moves a pin only to a
//! digest whose bytes it fetched and verified. [`classify`] is the pure core.

use std::collections::HashMap;
use std::path::PathBuf;

use futures_util::stream::{self, StreamExt};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::report::{Mode, Report};
use super::{plan, scan_all, Scanned};
use crate::policy::{self, Policy, Trust};
use crate::reference::{Digest, ImageRef};
use crate::registry::{Resolution, ResolveError, Resolver};

/// How a pinned image's tag stands against its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// The tag names the pinned digest.
    Current,
    /// The tag now names `now`.
    Drifted {
        /// The digest the tag names now, as the registry claims it.
        now: Digest,
    },
    /// No digest in the manifest: nothing to drift from (pin it first).
    NotPinned,
    /// `name@digest` without a tag: nothing to compare with.
    NoTag,
    /// The registry could not be asked (the error names it and its kind).
    Failed(ResolveError),
}

impl Drift {
    /// `current`, `drifted` or `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            Drift::Current => "current",
            Drift::Drifted { .. } => "drifted",
            _ => "unknown",
        }
    }

    /// Why it is unknown, for `unknown (reason)`.
    pub fn reason(&self) -> Option<String> {
        match self {
            Drift::NotPinned => Some("not pinned".into()),
            Drift::NoTag => Some("pinned without a tag".into()),
            Drift::Failed(e) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// One image in one manifest.
#[derive(Debug, Clone)]
pub struct StatusRow {
    /// The manifest it is in.
    pub file: PathBuf,
    /// 1-based line of the image value.
    pub line: usize,
    /// The container's (or image volume's) name, when the manifest gives one.
    pub container: Option<String>,
    /// The reference as written, without its digest.
    pub reference: String,
    /// The pinned digest, if any.
    pub digest: Option<String>,
    /// `None`: no registry policy.
    pub trusted: Option<bool>,
    /// Whether the tag still names the pinned digest.
    pub drift: Drift,
}

/// `status` for a set of manifests: a row per image, and per-file scan
/// outcomes (failed or skipped files) in `report`.
#[derive(Debug)]
pub struct Status {
    /// One row per image, manifest by manifest.
    pub rows: Vec<StatusRow>,
    /// The pass report of the scan: files that failed or were skipped, for the
    /// exit code and the JSON.
    pub report: Report,
}

impl Status {
    /// Something is broken: a file could not be read, or a registry asked
    /// about a pinned tag failed.
    pub fn has_errors(&self) -> bool {
        self.report.has_errors()
            || self
                .rows
                .iter()
                .any(|r| matches!(r.drift, Drift::Failed(_)))
    }

    /// Something to act on: drifted, untrusted or unpinned images.
    pub fn needs_attention(&self) -> bool {
        self.rows.iter().any(|r| {
            matches!(r.drift, Drift::Drifted { .. } | Drift::NotPinned) || r.trusted == Some(false)
        })
    }
}

/// The pure core: a manifest's reference and the answer for its tag (if one
/// was asked) → its drift.
pub fn classify(image: &ImageRef, head: Option<&Result<Resolution, ResolveError>>) -> Drift {
    let Some(pinned) = image.digest() else {
        return Drift::NotPinned;
    };
    if image.tag().is_none() {
        return Drift::NoTag;
    }
    match head {
        Some(Ok(r)) if &r.digest == pinned => Drift::Current,
        Some(Ok(r)) => Drift::Drifted {
            now: r.digest.clone(),
        },
        Some(Err(e)) => Drift::Failed(e.clone()),
        None => Drift::Failed(ResolveError {
            image: image.original().to_string(),
            registry: image.registry_host().to_string(),
            kind: crate::registry::ErrorKind::Protocol,
            detail: "no answer was recorded".into(),
        }),
    }
}

/// Every image under `paths` with its trust and drift. One HEAD per unique
/// pinned tag, at most `concurrency` at a time; nothing is written.
pub async fn status<R: Resolver>(
    paths: &[PathBuf],
    policy: &Policy,
    resolver: &R,
    concurrency: usize,
) -> Status {
    let Scanned { report, loaded } = scan_all(paths, Mode::Check);
    type Key = (String, String, String);
    let key = |r: &ImageRef| -> Key {
        (
            r.registry_host().to_string(),
            r.path().to_string(),
            r.tag_or_latest().to_string(),
        )
    };
    let mut unique: HashMap<Key, ImageRef> = HashMap::new();
    for (_, l) in &loaded {
        for (_, r) in &l.sites {
            if r.digest().is_some() && r.tag().is_some() {
                let tagged = plan::to_ask(r, true);
                unique.entry(key(&tagged)).or_insert(tagged);
            }
        }
    }
    let answers: HashMap<Key, Result<Resolution, ResolveError>> = stream::iter(unique)
        .map(|(k, r)| async move { (k, resolver.head_digest(&r).await) })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut rows = Vec::new();
    for (_, l) in &loaded {
        for (site, r) in &l.sites {
            let trusted = match policy::evaluate(r, policy).trust {
                Trust::NoPolicy => None,
                Trust::Trusted(_) => Some(true),
                Trust::Untrusted | Trust::Unknown => Some(false),
            };
            let reference = r
                .original()
                .rsplit_once('@')
                .map_or(r.original(), |(name, _)| name)
                .to_string();
            rows.push(StatusRow {
                file: l.path.clone(),
                line: site.line,
                container: site.container.clone(),
                reference,
                digest: r.digest().map(ToString::to_string),
                trusted,
                drift: classify(r, answers.get(&key(r))),
            });
        }
    }
    Status { rows, report }
}

impl Serialize for StatusRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("file", &self.file)?;
        m.serialize_entry("line", &self.line)?;
        m.serialize_entry("container", &self.container)?;
        m.serialize_entry("reference", &self.reference)?;
        m.serialize_entry("digest", &self.digest)?;
        m.serialize_entry("trusted", &self.trusted)?;
        m.serialize_entry("drift", self.drift.label())?;
        m.serialize_entry("driftReason", &self.drift.reason())?;
        if let Drift::Drifted { now } = &self.drift {
            m.serialize_entry("tagDigest", &now.to_string())?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ErrorKind;

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn classifies_each_case() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let ok = |d: &Digest| {
            Ok(Resolution {
                digest: d.clone(),
                media_type: None,
                via: None,
            })
        };
        let pinned = r(&format!("r.io/x:v1@{a}"));
        assert_eq!(classify(&pinned, Some(&ok(&a))), Drift::Current);
        assert_eq!(
            classify(&pinned, Some(&ok(&b))),
            Drift::Drifted { now: b.clone() }
        );
        assert_eq!(classify(&r("r.io/x:v1"), None), Drift::NotPinned);
        assert_eq!(classify(&r(&format!("r.io/x@{a}")), None), Drift::NoTag);
        let err = Err(ResolveError {
            image: "r.io/x:v1".into(),
            registry: "r.io".into(),
            kind: ErrorKind::Timeout,
            detail: "slow".into(),
        });
        let d = classify(&pinned, Some(&err));
        assert_eq!(d.label(), "unknown");
        assert!(d.reason().unwrap().contains("timeout"), "{d:?}");
    }
}
