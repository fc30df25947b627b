//! The persisted digest cache (`<stateDir>/digests.json`): what each tag
//! last resolved to, so a node whose registry is unreachable still pins a
//! tag it has seen before, and `--offline` pins from it alone.
//!
//! [`CachingResolver`] wraps any [`Resolver`], so the pass does not know the
//! cache exists. It falls back to the cache only on connection-level
//! failures (connect, timeout): a 401, a 404 or a bad reference is an answer
//! from the registry and stays an error, whatever the cache says.
//!
//! Every cached digest was first recorded from a successful resolution, and
//! the registry module only answers with the digest of bytes it fetched,
//! hashed and parsed as a manifest or index. Pinning from the cache therefore
//! keeps the rule that a digest is written only after staticpin saw bytes
//! hashing to it; the cache only remembers *when* it saw them.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{ErrorKind, Failure, Resolution, ResolveError, Resolver};
use crate::fsutil;
use crate::reference::{Digest, ImageRef};

/// The cache file inside the state directory.
pub const CACHE_FILE: &str = "digests.json";
const FILE_VERSION: u32 = 1;
// The cache names private registries and their repositories: root-only.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// One tag's last successful resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// The digest the tag named, e.g. `sha256:…`.
    pub digest: String,
    /// The manifest's media type, when the answer said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The registry host the reference names.
    pub registry: String,
    /// RFC 3339 UTC, e.g. `2026-11-30T09:45:00Z`.
    pub resolved_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    /// Normalised `host/path:tag` → entry; a BTreeMap keeps the file stable.
    entries: BTreeMap<String, CacheEntry>,
}

/// A digest taken from the cache instead of the registry, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheHit {
    /// The reference as the manifest spells it.
    pub image: String,
    /// The cached digest used for it.
    pub digest: String,
    /// When that digest was resolved (the entry's `resolvedAt`).
    pub resolved_at: String,
    /// Why the registry was not used: its error, or `--offline`.
    pub why: String,
}

impl std::fmt::Display for CacheHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: from cache, resolved at {} ({})",
            self.image, self.resolved_at, self.why
        )
    }
}

/// The cache in memory, loaded from and saved to one file.
#[derive(Debug)]
pub struct DigestCache {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, CacheEntry>>,
    dirty: Mutex<bool>,
}

impl DigestCache {
    /// `<state_dir>/digests.json`, read if it is there. A missing file is an
    /// empty cache; an unreadable or damaged one is too, with a warning, so
    /// a bad cache never stops pinning from the registry.
    pub fn load(state_dir: &Path) -> DigestCache {
        let path = state_dir.join(CACHE_FILE);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                Ok(f) => f
                    .entries
                    .into_iter()
                    .filter(|(_, e)| Digest::parse(&e.digest).is_ok())
                    .collect(),
                Err(e) => {
                    tracing::warn!("{}: ignoring a damaged digest cache: {e}", path.display());
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!("{}: cannot read the digest cache: {e}", path.display());
                BTreeMap::new()
            }
        };
        DigestCache {
            path,
            entries: Mutex::new(entries),
            dirty: Mutex::new(false),
        }
    }

    /// The cache file, `<state_dir>/digests.json`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many tags the cache holds.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether the cache holds no tag at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key(image: &ImageRef) -> String {
        format!(
            "{}/{}:{}",
            image.registry_host(),
            image.path(),
            image.tag_or_latest()
        )
    }

    /// The last digest recorded for the image's `host/path:tag`, if any.
    pub fn get(&self, image: &ImageRef) -> Option<CacheEntry> {
        self.entries.lock().ok()?.get(&Self::key(image)).cloned()
    }

    fn record(&self, image: &ImageRef, r: &Resolution) {
        let entry = CacheEntry {
            digest: r.digest.to_string(),
            media_type: r.media_type.clone(),
            registry: image.registry_host().to_string(),
            resolved_at: rfc3339(SystemTime::now()),
        };
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        // Only a changed digest marks the file for writing: the time of a
        // confirmation is not worth a write on every pass.
        let changed = entries
            .get(&Self::key(image))
            .is_none_or(|old| old.digest != entry.digest || old.media_type != entry.media_type);
        if changed {
            entries.insert(Self::key(image), entry);
            if let Ok(mut d) = self.dirty.lock() {
                *d = true;
            }
        }
    }

    /// Writes the file if anything changed since the last save: atomically,
    /// mode 0600, creating the state directory (0700) if needed.
    pub fn save(&self) -> Result<bool, String> {
        let mut dirty = self.dirty.lock().map_err(|_| "cache lock poisoned")?;
        if !*dirty {
            return Ok(false);
        }
        let entries = self
            .entries
            .lock()
            .map_err(|_| "cache lock poisoned")?
            .clone();
        let file = CacheFile {
            version: FILE_VERSION,
            entries,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        }
        fsutil::write_file_atomically(&self.path, &json, FILE_MODE)
            .map_err(|e| format!("cannot save the digest cache: {e}"))?;
        *dirty = false;
        Ok(true)
    }
}

/// A [`Resolver`] that records every answer in a [`DigestCache`] and
/// answers from it when the registry cannot be reached (or, `offline`,
/// always).
pub struct CachingResolver<'a, R> {
    inner: &'a R,
    cache: &'a DigestCache,
    offline: bool,
    hits: Mutex<Vec<CacheHit>>,
}

impl<'a, R: Resolver> CachingResolver<'a, R> {
    /// Wraps `inner`: answers go into `cache`, and with `offline` every answer
    /// comes from it and nothing reaches the registry.
    pub fn new(inner: &'a R, cache: &'a DigestCache, offline: bool) -> Self {
        CachingResolver {
            inner,
            cache,
            offline,
            hits: Mutex::new(Vec::new()),
        }
    }

    /// The answers taken from the cache since the last call, for the report.
    pub fn take_hits(&self) -> Vec<CacheHit> {
        self.hits
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    }

    fn cached(&self, image: &ImageRef, why: String) -> Option<Resolution> {
        let entry = self.cache.get(image)?;
        let digest = Digest::parse(&entry.digest).ok()?;
        if let Ok(mut h) = self.hits.lock() {
            h.push(CacheHit {
                image: image.original().to_string(),
                digest: entry.digest.clone(),
                resolved_at: entry.resolved_at.clone(),
                why,
            });
        }
        Some(Resolution {
            digest,
            media_type: entry.media_type,
            via: None,
        })
    }
}

/// Failures that say nothing about the tag, only that the registry could
/// not be reached: the only ones the cache may answer for.
fn unreachable(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Connect | ErrorKind::Timeout)
}

impl<R: Resolver> Resolver for CachingResolver<'_, R> {
    async fn resolve(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
        if self.offline {
            return self.cached(image, "offline".into()).ok_or_else(|| {
                Failure::new(
                    ErrorKind::Config,
                    "offline, and the digest cache has no entry for this tag",
                )
                .for_image(image)
            });
        }
        match self.inner.resolve(image).await {
            Ok(r) => {
                self.cache.record(image, &r);
                Ok(r)
            }
            Err(e) if unreachable(e.kind) => match self.cached(image, e.kind.to_string()) {
                Some(r) => Ok(r),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

/// `2026-11-30T09:45:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let s = crate::backup::format_timestamp(t);
    // format_timestamp is fixed-width `YYYYMMDDTHHMMSS.ffffffZ`.
    match (
        s.get(0..4),
        s.get(4..6),
        s.get(6..8),
        s.get(9..11),
        s.get(11..13),
        s.get(13..15),
    ) {
        (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) => {
            format!("{y}-{mo}-{d}T{h}:{mi}:{se}Z")
        }
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flaky {
        down: AtomicBool,
        kind: ErrorKind,
    }

    impl Resolver for Flaky {
        async fn resolve(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(Failure::new(self.kind, "down").for_image(image));
            }
            Ok(Resolution {
                digest: Digest::sha256_of(image.normalized().as_bytes()),
                media_type: Some("application/vnd.oci.image.index.v1+json".into()),
                via: None,
            })
        }
    }

    #[tokio::test]
    async fn unreachable_registry_answers_from_cache_but_not_on_401_or_404() {
        let dir = tempfile::tempdir().unwrap();
        let img = ImageRef::parse("r.io/a:v1").unwrap();
        let other = ImageRef::parse("r.io/b:v1").unwrap();
        for (kind, from_cache) in [
            (ErrorKind::Connect, true),
            (ErrorKind::Timeout, true),
            (ErrorKind::Unauthorized, false),
            (ErrorKind::NotFound, false),
            (ErrorKind::Server, false),
        ] {
            let inner = Flaky {
                down: AtomicBool::new(false),
                kind,
            };
            let cache = DigestCache::load(dir.path());
            let r = CachingResolver::new(&inner, &cache, false);
            let want = r.resolve(&img).await.unwrap();
            assert!(cache.save().unwrap() || !cache.is_empty());
            inner.down.store(true, Ordering::SeqCst);
            let cache = DigestCache::load(dir.path());
            let r = CachingResolver::new(&inner, &cache, false);
            let got = r.resolve(&img).await;
            assert_eq!(got.is_ok(), from_cache, "{kind:?}");
            if from_cache {
                assert_eq!(got.unwrap(), want);
                let hits = r.take_hits();
                assert_eq!(hits.len(), 1);
                assert!(hits[0].to_string().contains("from cache, resolved at 20"));
            }
            assert!(r.resolve(&other).await.is_err(), "never seen: no answer");
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(CACHE_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn offline_asks_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Flaky {
            down: AtomicBool::new(false),
            kind: ErrorKind::Connect,
        };
        let img = ImageRef::parse("r.io/a:v1").unwrap();
        let cache = DigestCache::load(dir.path());
        let r = CachingResolver::new(&inner, &cache, true);
        let err = r.resolve(&img).await.unwrap_err();
        assert!(err.to_string().contains("offline"), "{err}");
        CachingResolver::new(&inner, &cache, false)
            .resolve(&img)
            .await
            .unwrap();
        inner.down.store(true, Ordering::SeqCst);
        assert!(r.resolve(&img).await.is_ok());
        assert_eq!(r.take_hits()[0].why, "offline");
    }
}
