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
use crate::policy::{self, Policy, Trust, Verdict};
use crate::reference::ImageRef;
use crate::registry::{Resolution, ResolveError};

/// A manifest read and understood, before any resolution.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The manifest as scanned; the path written back to.
    pub path: PathBuf,
    /// The exact bytes read: what the plan is made from, what the backup
    /// holds, and what the compare-and-swap expects to find.
    pub text: String,
    /// Each image value with its parsed reference, in [`inspect`]'s order:
    /// containers, initContainers, ephemeralContainers, then image volumes.
    pub sites: Vec<(ImageSite, ImageRef)>,
    /// kube-apiserver's manifest: the one admission wiring and the health gate
    /// apply to.
    pub is_apiserver: bool,
}

/// Why a file cannot even be planned.
#[derive(Debug)]
pub enum LoadError {
    /// Left alone, as a skip: too big, not UTF-8, or not read as kubelet reads
    /// it.
    Skipped(Skip),
    /// Unreadable, or an image value that is not a reference.
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
    /// The whole file after the change; the old text when nothing changes.
    pub new_text: String,
    /// Every image site, in [`Loaded::sites`] order, with what this plan does
    /// to it.
    pub images: Vec<ImageReport>,
    /// How many images get a digest.
    pub pinned: usize,
    /// The admission wiring changes the file.
    pub wired: bool,
    /// Wiring done and preflight warnings, for the report.
    pub admission: Vec<String>,
}

impl Plan {
    /// Whether writing the plan over `old` would change anything.
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
    flagged(l, &Policy::default())
}

/// `--check` and `doctor`: the images without a digest or outside the trusted
/// registries (pinned or not), judged as the webhook would judge the file as
/// it is. No resolver involved.
pub fn flagged(l: &Loaded, policy: &Policy) -> Vec<ImageReport> {
    l.sites
        .iter()
        .map(|(s, r)| report_for(s, r, &policy::evaluate(r, policy)))
        .filter(|i| !i.had_digest() || i.trusted == Some(false))
        .collect()
}

/// An image's report with the policy's say on it. Judged by its name as
/// written, never the mirror it resolves through.
fn report_for(site: &ImageSite, image: &ImageRef, verdict: &Verdict) -> ImageReport {
    let trusted = match verdict.trust {
        Trust::NoPolicy => None,
        Trust::Trusted(_) => Some(true),
        Trust::Untrusted | Trust::Unknown => Some(false),
    };
    ImageReport {
        line: site.line,
        image: image.original().to_string(),
        container: site.container.clone(),
        trusted,
        policy: (!verdict.findings.is_empty()).then(|| verdict.message()),
        ..ImageReport::default()
    }
}

/// Why `policy` refuses to let `pin` touch this file: one entry per image
/// `policy.untrusted: deny` rejects, naming its container and line. Empty
/// when the file may be pinned.
pub fn refusals(l: &Loaded, policy: &Policy) -> Vec<String> {
    l.sites
        .iter()
        .filter_map(|(site, image)| {
            let verdict = policy::evaluate_registry(image, policy);
            (!verdict.allowed()).then(|| {
                format!(
                    "container {} (line {}): {}",
                    site.container.as_deref().unwrap_or("(unnamed)"),
                    site.line,
                    verdict.message()
                )
            })
        })
        .collect()
}

/// What the resolver is asked for a site: the reference itself, or under
/// `--update` the tag of a pinned `name:tag@digest`, so a moved tag shows.
pub fn to_ask(image: &ImageRef, update: bool) -> ImageRef {
    if update && image.tag().is_some() && image.digest().is_some() {
        if let Some(tagged) = without_digest(image) {
            return tagged;
        }
    }
    image.clone()
}

/// `name:tag@digest` as `name:tag`.
fn without_digest(image: &ImageRef) -> Option<ImageRef> {
    let (name, _) = image.original().rsplit_once('@')?;
    ImageRef::parse(name).ok()
}

/// Plans `l` from one answer per image site (in order). An error carries
/// the per-image reports so the caller can still show what failed where.
pub fn plan(
    l: &Loaded,
    answers: Vec<Result<Resolution, ResolveError>>,
    options: &Options,
) -> Result<Plan, (FileError, Vec<ImageReport>)> {
    debug_assert_ne!(options.mode, Mode::Check, "check mode does not plan");
    // Refused before any answer is looked at: a denied file is left exactly
    // as it is, whatever the registries said (the pass does not even ask).
    let refused = refusals(l, &options.policy);
    if !refused.is_empty() {
        let images = l
            .sites
            .iter()
            .map(|(s, r)| report_for(s, r, &policy::evaluate_registry(r, &options.policy)))
            .collect();
        return Err((FileError::Policy(refused), images));
    }
    let mut edits = Vec::new();
    let mut errors = Vec::new();
    let mut images = Vec::new();
    let mut answers = answers.into_iter();
    for (site, image) in &l.sites {
        let mut item = report_for(
            site,
            image,
            &policy::evaluate_registry(image, &options.policy),
        );
        match answers.next() {
            Some(Ok(res)) => edits.extend(edit_for(site, image, &res, options, &mut item)),
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
    let mut new_text = edited(&l.text, &edits).map_err(|e| (e, images.clone()))?;
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

/// The edit one resolver answer asks for, if any, noted in `item`.
fn edit_for(
    site: &ImageSite,
    image: &ImageRef,
    res: &Resolution,
    options: &Options,
    item: &mut ImageReport,
) -> Option<Edit> {
    if image.digest().is_some() {
        // Only `--update` asks for a pinned image's tag; otherwise
        // the answer is the pinned digest itself and nothing moves.
        let moved = options.update && image.digest() != Some(&res.digest);
        let tagged = without_digest(image).filter(|_| moved)?;
        let new_value = tagged.pinned(&res.digest);
        item.pinned = Some(new_value.clone());
        item.drifted = true;
        item.via = res.via.clone();
        return Some(Edit {
            site: site.clone(),
            new_value,
        });
    }
    item.via = res.via.clone();
    let new_value = if options.digest_only {
        image.pinned_digest_only(&res.digest)
    } else {
        image.pinned(&res.digest)
    };
    item.pinned = Some(new_value.clone());
    Some(Edit {
        site: site.clone(),
        new_value,
    })
}

/// `text` with `edits` applied and proven to change nothing else; `text`
/// itself when there is nothing to edit.
fn edited(text: &str, edits: &[Edit]) -> Result<String, FileError> {
    if edits.is_empty() {
        return Ok(text.to_string());
    }
    let new_text = apply(text, edits);
    // Before verify: a result kubelet would reject is refused whatever it says.
    check_size(&new_text)?;
    verify(text, &new_text, edits).map_err(FileError::Verify)?;
    Ok(new_text)
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
                        via: None,
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

    fn with_policy(trusted: &[&str], untrusted: crate::policy::Untrusted, update: bool) -> Options {
        let raw = crate::policy::RawPolicy {
            trusted_registries: Some(trusted.iter().map(|s| s.to_string()).collect()),
            untrusted: Some(untrusted),
            ..Default::default()
        };
        Options {
            policy: Policy::from_raw(&raw).unwrap(),
            update,
            ..options(false)
        }
    }

    #[test]
    fn warn_pins_and_reports_untrusted_images_by_name() {
        use crate::policy::Untrusted::Warn;
        let l = loaded(POD);
        // r.io/a is trusted; r.io/b sits beside the prefix, not under it.
        let o = with_policy(&["r.io/a"], Warn, false);
        let mut a = answers(&l, &[]);
        // A mirror answered for b: still judged by its name.
        if let Some(Ok(res)) = a.get_mut(1) {
            res.via = Some("mirror.local:5000".into());
        }
        let p = plan(&l, a, &o).unwrap();
        assert_eq!(p.pinned, 2);
        assert_eq!(p.images[0].trusted, Some(true));
        assert_eq!(p.images[1].trusted, Some(false));
        assert_eq!(p.images[1].container.as_deref(), Some("b"));
        assert_eq!(p.images[1].via.as_deref(), Some("mirror.local:5000"));
        assert!(p.images[1].policy.as_ref().unwrap().contains("r.io/b:v2"));
        // No policy: trust is not reported at all.
        let p = plan(&l, answers(&l, &[]), &options(false)).unwrap();
        assert!(p.images.iter().all(|i| i.trusted.is_none()));
    }

    #[test]
    fn deny_refuses_the_whole_file_naming_container_and_image() {
        use crate::policy::Untrusted::Deny;
        let l = loaded(POD);
        let o = with_policy(&["r.io/a", "r.io/bb", "r.io.evil.com"], Deny, false);
        let (err, images) = plan(&l, answers(&l, &[]), &o).unwrap_err();
        match &err {
            FileError::Policy(v) => {
                assert_eq!(v.len(), 1, "{v:?}");
                assert!(v[0].contains("container b (line 10)"), "{v:?}");
                assert!(v[0].contains("r.io/b:v2"), "{v:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(images.iter().all(|i| i.pinned.is_none()));
        assert!(!err.is_transient());
        // Refused before the answers are read: none are needed.
        assert!(matches!(
            plan(&l, Vec::new(), &o),
            Err((FileError::Policy(_), _))
        ));
        // Already-pinned images are judged too.
        let pinned = plan(&l, answers(&l, &[]), &options(false)).unwrap();
        let l2 = loaded(&pinned.new_text);
        assert!(matches!(
            plan(&l2, answers(&l2, &[]), &o),
            Err((FileError::Policy(_), _))
        ));
        assert_eq!(refusals(&l2, &o.policy).len(), 1);
        assert_eq!(flagged(&l2, &o.policy).len(), 1);
        // Trusting both: pins.
        let ok = with_policy(&["r.io"], Deny, false);
        assert_eq!(plan(&l, answers(&l, &[]), &ok).unwrap().pinned, 2);
    }

    #[test]
    fn update_moves_only_drifted_pins_and_only_when_asked() {
        let l = loaded(POD);
        let once = plan(&l, answers(&l, &[]), &options(false)).unwrap();
        let l2 = loaded(&once.new_text);
        // The tag of r.io/b now names another digest.
        let moved = Digest::sha256_of(b"moved");
        let tag_answers = |l: &Loaded| -> Vec<Result<Resolution, ResolveError>> {
            l.sites
                .iter()
                .map(|(_, r)| {
                    let asked = to_ask(r, true);
                    assert!(asked.digest().is_none());
                    Ok(Resolution {
                        digest: if asked.path() == "b" {
                            moved.clone()
                        } else {
                            Digest::sha256_of(asked.original().as_bytes())
                        },
                        media_type: None,
                        via: None,
                    })
                })
                .collect()
        };
        // Without --update the answers are ignored for pinned images.
        let still = plan(&l2, tag_answers(&l2), &options(false)).unwrap();
        assert!(!still.changes(&l2.text));
        let upd = Options {
            update: true,
            ..options(false)
        };
        let p = plan(&l2, tag_answers(&l2), &upd).unwrap();
        assert_eq!(p.pinned, 1);
        assert!(p.images[1].drifted && !p.images[0].drifted);
        assert!(p.new_text.contains(&format!("image: r.io/b:v2@{moved}\n")));
        assert!(p.new_text.contains("r.io/a:v1@"));
        let l3 = loaded(&p.new_text);
        assert!(!plan(&l3, tag_answers(&l3), &upd).unwrap().changes(&l3.text));
        // to_ask leaves everything else alone.
        assert_eq!(to_ask(&l.sites[0].1, true).original(), "r.io/a:v1");
        assert!(to_ask(&l2.sites[0].1, false).digest().is_some());
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
