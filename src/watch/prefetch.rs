//! Asking the registry while the debounce runs.
//!
//! A manifest that was closed after writing or renamed in is complete, so
//! the daemon reads it at once and starts resolving its unpinned tags in the
//! background; the pass that follows the debounce finds the answers ready
//! (or in flight) instead of starting the round trip only then. The pass
//! still plans from the bytes it reads itself and asks for anything not
//! prefetched, so a prefetch only ever moves a question earlier, by at most
//! [`Prefetch::fresh_for`]. Every answer is the same verified GET a pass
//! makes; a failed one is not reused, the pass asks again.
//!
//! Nothing is fetched for a file the trust policy refuses (no request to a
//! registry the node does not trust), nor in offline mode.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::pass::plan;
use crate::policy::Policy;
use crate::reference::ImageRef;
use crate::registry::{ask_key, HttpResolver, Resolution, ResolveError, Resolver};

type Key = (String, String, String);

struct Slot {
    started: Instant,
    /// `None` when the prefetch failed: the pass asks again.
    answer: OnceCell<Option<Resolution>>,
}

/// Answers fetched ahead of the next pass, keyed like [`ask_key`].
pub struct Prefetch {
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    fresh_for: Duration,
}

impl Prefetch {
    /// Answers older than `fresh_for` are not used: a pass comes at most a
    /// few debounce periods after the event that started its prefetch.
    pub fn new(fresh_for: Duration) -> Prefetch {
        Prefetch {
            slots: Mutex::new(HashMap::new()),
            fresh_for,
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<Key, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts resolving the unpinned images of the complete manifest at
    /// `path`, unless the policy refuses it. A file that cannot be read or
    /// parsed is left to the pass, which reports it.
    pub fn manifest(&self, path: &Path, http: &Arc<HttpResolver>, policy: &Policy, update: bool) {
        let Ok(loaded) = plan::load(path) else {
            return;
        };
        if !plan::refusals(&loaded, policy).is_empty() {
            return;
        }
        // A prefetch comes between passes, usually long after the last one
        // started: it is a run of its own, with a whole deadline.
        http.start_run();
        let now = Instant::now();
        let mut slots = self.slots();
        slots.retain(|_, s| now.duration_since(s.started) < self.fresh_for);
        for (_, image) in &loaded.sites {
            let ask = plan::to_ask(image, update);
            if ask.digest().is_some() {
                continue;
            }
            let key = ask_key(&ask);
            if slots.contains_key(&key) {
                continue;
            }
            let slot = Arc::new(Slot {
                started: now,
                answer: OnceCell::new(),
            });
            slots.insert(key, slot.clone());
            let http = http.clone();
            tokio::spawn(async move {
                slot.answer
                    .get_or_init(|| async { http.resolve(&ask).await.ok() })
                    .await;
            });
        }
    }

    /// The fresh slot for `image`, if one was started.
    fn slot(&self, image: &ImageRef) -> Option<Arc<Slot>> {
        let slots = self.slots();
        let slot = slots.get(&ask_key(image))?;
        (slot.started.elapsed() < self.fresh_for).then(|| slot.clone())
    }

    /// Forgets everything: each pass starts from its own questions.
    pub fn clear(&self) {
        self.slots().clear();
    }
}

/// A resolver that takes prefetched answers first.
pub struct Prefetched<'a, R> {
    /// The resolver asked for anything not prefetched.
    pub inner: &'a R,
    /// The answers started during the debounce.
    pub prefetch: &'a Prefetch,
}

impl<R: Resolver> Resolver for Prefetched<'_, R> {
    async fn resolve(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
        if let Some(slot) = self.prefetch.slot(image) {
            // In flight: wait for it rather than asking twice. Not yet
            // polled: this call does the asking, once, for both, and keeps
            // its own error.
            let mut asked = None;
            let answer = slot
                .answer
                .get_or_init(|| async {
                    let r = self.inner.resolve(image).await;
                    let keep = r.as_ref().ok().cloned();
                    asked = Some(r);
                    keep
                })
                .await
                .clone();
            if let Some(r) = asked {
                return r;
            }
            if let Some(r) = answer {
                return Ok(r);
            }
        }
        self.inner.resolve(image).await
    }

    async fn head_digest(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
        self.inner.head_digest(image).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Digest;
    use crate::registry::{ErrorKind, Failure};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts questions; fails them while `fail` is set.
    #[derive(Default)]
    struct Counting {
        asked: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Resolver for Counting {
        async fn resolve(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(Failure::new(ErrorKind::Server, "503").for_image(image));
            }
            Ok(Resolution {
                digest: Digest::sha256_of(image.normalized().as_bytes()),
                media_type: None,
                via: None,
            })
        }
    }

    fn slot_for(p: &Prefetch, image: &ImageRef, age: Duration) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            started: Instant::now() - age,
            answer: OnceCell::new(),
        });
        p.slots().insert(ask_key(image), slot.clone());
        slot
    }

    #[tokio::test]
    async fn a_prefetched_answer_is_asked_once_and_shared() {
        let inner = Counting::default();
        let p = Prefetch::new(Duration::from_secs(5));
        let image = ImageRef::parse("registry.k8s.io/etcd:3.5.16-0").unwrap();
        let slot = slot_for(&p, &image, Duration::ZERO);
        let r = Prefetched {
            inner: &inner,
            prefetch: &p,
        };
        let first = r.resolve(&image).await.unwrap();
        assert_eq!(r.resolve(&image).await.unwrap(), first);
        assert_eq!(inner.asked.load(Ordering::SeqCst), 1);
        assert!(slot.answer.get().is_some());
    }

    #[tokio::test]
    async fn stale_or_failed_prefetches_are_asked_again() {
        let inner = Counting::default();
        let p = Prefetch::new(Duration::from_secs(5));
        let r = Prefetched {
            inner: &inner,
            prefetch: &p,
        };
        let stale = ImageRef::parse("registry.k8s.io/etcd:3.5.16-0").unwrap();
        let slot = slot_for(&p, &stale, Duration::from_secs(10));
        slot.answer.set(None).unwrap();
        r.resolve(&stale).await.unwrap();
        assert_eq!(inner.asked.load(Ordering::SeqCst), 1);

        let failed = ImageRef::parse("registry.k8s.io/pause:3.10").unwrap();
        slot_for(&p, &failed, Duration::ZERO);
        inner.fail.store(true, Ordering::SeqCst);
        assert!(r.resolve(&failed).await.is_err());
        inner.fail.store(false, Ordering::SeqCst);
        assert!(r.resolve(&failed).await.is_ok(), "a failure is not kept");
        assert_eq!(inner.asked.load(Ordering::SeqCst), 3);
    }
}
