//! Planning one file: its bytes as read, the resolver's answers and the
//! options in, the new text and what changed out, or a typed reason not to
//! touch it. Nothing here writes; the only reads are the admission files
//! the preflight proves valid before kube-apiserver.yaml may change.

use std::path::{Path, PathBuf};

use super::report::{FileError, ImageReport, Mode};
use super::Options;
use crate::admission::preflight;
use crate::apiserver;
use crate::backup::ImageChange;
use crate::manifest::parse::{inspect, ImageSite};
use crate::manifest::splice::{apply, verify, Edit};
use crate::manifest::{Skip, MAX_MANIFEST_BYTES};
use crate::reference::ImageRef;
use crate::registry::{Resolution, ResolveError};

/// A manifest read and understood, before any resolution.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub path: PathBuf,
    /// The exact bytes read: what the plan is made from, what the backup
    /// holds, and what the compare-and-swap expects to find.
    pub text: String,
    pub sites: Vec<(ImageSite, ImageRef)>,
    pub is_apiserver: bool,
}

/// Why a file cannot even be planned.
#[derive(Debug)]
pub enum LoadError {
    Skipped(Skip),
    Failed(FileError),
}

/// Reads `path` and finds its images.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let io = |what| move |source| LoadError::Failed(FileError::Io { what, source });
    let meta = std::fs::metadata(path).map_err(io("stat"))?;
    if meta.len() >= MAX_MANIFEST_BYTES {
        return Err(LoadError::Skipped(Skip::error(format!(
            "{} bytes is at or over kubelet's 10 MiB manifest limit",
            meta.len()
        ))));
    }
    let bytes = std::fs::read(path).map_err(io("read"))?;
    parse(path, bytes)
}

/// [`load`] without the file system.
pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Loaded, LoadError> {
    let text =
        String::from_utf8(bytes).map_err(|_| LoadError::Skipped(Skip::error("not UTF-8 text")))?;
    let pod = inspect(&text).map_err(LoadError::Skipped)?;
    for note in &pod.notes {
        tracing::warn!("{}: {note}", path.display());
    }
    let mut sites = Vec::new();
    for site in pod.images {
        let r = ImageRef::parse(&site.value).map_err(|source| {
            LoadError::Failed(FileError::InvalidReference {
                line: site.line,
                source,
            })
        })?;
        sites.push((site, r));
    }
    let is_apiserver = apiserver::is_apiserver(&text);
    Ok(Loaded {
        path: path.to_path_buf(),
        text,
        sites,
        is_apiserver,
    })
}

/// The change to make to one file.
#[derive(Debug)]
pub struct Plan {
    pub new_text: String,
    pub images: Vec<ImageReport>,
    /// How many images get a digest.
    pub pinned: usize,
    /// The admission wiring changes the file.
    pub wired: bool,
    /// Wiring done and preflight warnings, for the report.
    pub admission: Vec<String>,
}

impl Plan {
    pub fn changes(&self, old: &str) -> bool {
        self.new_text != old
    }

    /// Image values before and after, for the backup index.
    pub fn image_changes(&self) -> Vec<ImageChange> {
        self.images
            .iter()
            .filter_map(|i| {
                i.pinned.as_ref().map(|to| ImageChange {
                    from: i.image.clone(),
                    to: to.clone(),
                })
            })
            .collect()
    }
}

/// `--check`: the images without a digest; no resolver involved.
pub fn unpinned(l: &Loaded) -> Vec<ImageReport> {
    l.sites
        .iter()
        .filter(|(_, r)| r.digest().is_none())
        .map(|(s, r)| ImageReport {
            line: s.line,
            image: r.original().to_string(),
            pinned: None,
            error: None,
        })
        .collect()
}

/// Plans `l` from one answer per image site (in order). An error carries
/// the per-image reports so the caller can still show what failed where.
pub fn plan(
    l: &Loaded,
    answers: Vec<Result<Resolution, ResolveError>>,
    options: &Options,
) -> Result<Plan, (FileError, Vec<ImageReport>)> {
    debug_assert_ne!(options.mode, Mode::Check, "check mode does not plan");
    let mut edits = Vec::new();
    let mut errors = Vec::new();
    let mut images = Vec::new();
    let mut answers = answers.into_iter();
    for (site, image) in &l.sites {
        let mut item = ImageReport {
            line: site.line,
            image: image.original().to_string(),
            pinned: None,
            error: None,
        };
        match answers.next() {
            Some(Ok(_)) if image.digest().is_some() => {}
            Some(Ok(res)) => {
                let new_value = if options.digest_only {
                    image.pinned_digest_only(&res.digest)
                } else {
                    image.pinned(&res.digest)
                };
                item.pinned = Some(new_value.clone());
                edits.push(Edit {
                    site: site.clone(),
                    new_value,
                });
            }
            Some(Err(e)) => {
                item.error = Some(e.clone());
                errors.push(e);
            }
            None => {
                return Err((
                    FileError::Verify(format!("no resolver answer for line {}", site.line)),
                    images,
                ))
            }
        }
        images.push(item);
    }
    if !errors.is_empty() {
        return Err((FileError::Resolve(errors), images));
    }
    let mut new_text = l.text.clone();
    if !edits.is_empty() {
        new_text = apply(&l.text, &edits);
        // Before verify: a result kubelet would reject is refused whatever it says.
        check_size(&new_text).map_err(|e| (e, images.clone()))?;
        if let Err(why) = verify(&l.text, &new_text, &edits) {
            return Err((FileError::Verify(why), images));
        }
    }
    let mut admission = Vec::new();
    let mut wired = false;
    if let (Some(req), true) = (&options.admission, l.is_apiserver) {
        match wire_admission(&new_text, req) {
            Ok((text, notes)) => {
                wired = text != new_text;
                new_text = text;
                admission = notes;
            }
            Err(why) => return Err((FileError::Admission(why), images)),
        }
    }
    check_size(&new_text).map_err(|e| (e, images.clone()))?;
    Ok(Plan {
        new_text,
        pinned: edits.len(),
        images,
        wired,
        admission,
    })
}

/// kubelet rejects a manifest of 10 MiB or more; pinning adds 72 bytes per image.
fn check_size(text: &str) -> Result<(), FileError> {
    crate::manifest::check_size(text.len()).map_err(FileError::TooLarge)
}

/// Plans the admission wiring and proves the admission files valid before
/// any byte of the manifest changes: a wired-in config the apiserver cannot
/// load would leave it crash-looping.
fn wire_admission(text: &str, req: &apiserver::Request) -> Result<(String, Vec<String>), String> {
    let plan =
        apiserver::plan(text, req).map_err(|why| format!("admission wiring refused: {why}"))?;
    let (_, findings) = preflight::preflight(&req.config_file, &plan.mounted);
    if preflight::has_failures(&findings) {
        let failures: Vec<String> = findings
            .iter()
            .filter(|f| f.level == preflight::Level::Fail)
            .map(|f| f.to_string())
            .collect();
        return Err(format!(
            "admission preflight failed, kube-apiserver manifest left untouched: {}",
            failures.join("; ")
        ));
    }
    let mut notes = plan.changes;
    for w in findings
        .iter()
        .filter(|f| f.level == preflight::Level::Warn)
    {
        tracing::warn!("{w}");
        notes.push(format!("warning: {w}"));
    }
    Ok((plan.new_text, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Digest;
    use crate::registry::ErrorKind;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: a\n    image: r.io/a:v1   # keep\n  - name: b\n    image: r.io/b:v2\n";

    fn options(digest_only: bool) -> Options {
        Options {
            mode: Mode::Apply,
            digest_only,
            ..Options::default()
        }
    }

    fn loaded(text: &str) -> Loaded {
        parse(Path::new("/m/p.yaml"), text.as_bytes().to_vec()).unwrap()
    }

    /// A fake resolver's answers: a digest derived from the name, or the
    /// error for names listed in `failing`.
    fn answers(l: &Loaded, failing: &[(&str, ErrorKind)]) -> Vec<Result<Resolution, ResolveError>> {
        l.sites
            .iter()
            .map(
                |(_, r)| match failing.iter().find(|(n, _)| r.original().contains(n)) {
                    Some((_, kind)) => Err(ResolveError {
                        image: r.original().to_string(),
                        registry: r.registry_host().to_string(),
                        kind: *kind,
                        detail: "scripted".into(),
                    }),
                    None => Ok(Resolution {
                        digest: r
                            .digest()
                            .cloned()
                            .unwrap_or_else(|| Digest::sha256_of(r.normalized().as_bytes())),
                        media_type: None,
                    }),
                },
            )
            .collect()
    }

    #[test]
    fn pins_every_image_and_keeps_every_other_byte() {
        let l = loaded(POD);
        let p = plan(&l, answers(&l, &[]), &options(false)).unwrap();
        let a = Digest::sha256_of(b"r.io/a:v1");
        let b = Digest::sha256_of(b"r.io/b:v2");
        assert_eq!(
            p.new_text,
            POD.replace("r.io/a:v1", &format!("r.io/a:v1@{a}"))
                .replace("r.io/b:v2", &format!("r.io/b:v2@{b}"))
        );
        assert_eq!((p.pinned, p.wired), (2, false));
        assert_eq!(p.images[0].line, 8);
        assert_eq!(
            p.image_changes()[1],
            ImageChange {
                from: "r.io/b:v2".into(),
                to: format!("r.io/b:v2@{b}")
            }
        );
        let bare = plan(&l, answers(&l, &[]), &options(true)).unwrap();
        assert!(bare
            .new_text
            .contains(&format!("image: r.io/a@{a}   # keep")));
    }

    #[test]
    fn a_pinned_file_plans_no_change() {
        let l = loaded(POD);
        let once = plan(&l, answers(&l, &[]), &options(false)).unwrap();
        let l2 = loaded(&once.new_text);
        let twice = plan(&l2, answers(&l2, &[]), &options(false)).unwrap();
        assert!(!twice.changes(&l2.text));
        assert_eq!(twice.pinned, 0);
        assert!(unpinned(&l2).is_empty());
        assert_eq!(unpinned(&l).len(), 2);
    }

    #[test]
    fn failing_answers_fail_the_file_with_their_kind() {
        let l = loaded(POD);
        let (err, images) = plan(
            &l,
            answers(&l, &[("r.io/b", ErrorKind::Timeout)]),
            &options(false),
        )
        .unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(
            err.to_string()
                .contains("r.io/b:v2 (registry r.io): timeout"),
            "{err}"
        );
        assert_eq!(images.len(), 2);
        assert!(images[0].pinned.is_some() && images[1].error.is_some());

        let (err, _) = plan(
            &l,
            answers(
                &l,
                &[
                    ("r.io/a", ErrorKind::NotFound),
                    ("r.io/b", ErrorKind::Timeout),
                ],
            ),
            &options(false),
        )
        .unwrap_err();
        match &err {
            FileError::Resolve(es) => assert_eq!(es.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(
            !err.is_transient(),
            "one permanent failure makes it permanent"
        );
    }

    #[test]
    fn too_few_answers_is_an_error_not_a_panic() {
        let l = loaded(POD);
        let mut a = answers(&l, &[]);
        a.pop();
        assert!(plan(&l, a, &options(false)).is_err());
    }

    #[test]
    fn invalid_references_fail_at_load_with_their_line() {
        let text = POD.replace("r.io/b:v2", "r.io/B:v2");
        match parse(Path::new("/m/p.yaml"), text.into_bytes()) {
            Err(LoadError::Failed(e @ FileError::InvalidReference { line: 10, .. })) => {
                assert!(e.to_string().contains("\"r.io/B:v2\""), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(Path::new("/m/p.yaml"), vec![0xff, 0xfe]),
            Err(LoadError::Skipped(_))
        ));
    }
}
