//! Property tests: reference normalisation, and pinning generated Pods
//! (random comments, quoting, indentation, line endings) through the real
//! pinning pass with a fake resolver.

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use staticpin::backup::BackupStore;
use staticpin::pass::{self, Mode, Outcome};
use staticpin::reference::{Digest, ImageRef};
use staticpin::registry::{Resolution, ResolveError, Resolver};

fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}((\\.|_|__|-{1,2})[a-z0-9]{1,4}){0,2}"
}

fn reference() -> impl Strategy<Value = String> {
    let domain = prop_oneof![
        Just(String::new()),
        Just("docker.io/".to_string()),
        Just("index.docker.io/".to_string()),
        Just("localhost/".to_string()),
        Just("Registry.Example.com/".to_string()),
        (1u16..65535).prop_map(|p| format!("127.0.0.1:{p}/")),
        "[a-z]{1,5}\\.[a-z]{2,3}".prop_map(|d| format!("{d}/")),
    ];
    let tag = prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}".prop_map(|t| format!(":{t}"))
    ];
    let digest = prop_oneof![
        Just(String::new()),
        "[0-9a-f]{64}".prop_map(|h| format!("@sha256:{h}"))
    ];
    // Without a domain, a first component with a dot would itself be read as
    // a domain (as in distribution), so the first one never has a dot.
    let first = "[a-z0-9]{1,6}((_|__|-{1,2})[a-z0-9]{1,4}){0,2}";
    (
        domain,
        first,
        prop::collection::vec(component(), 0..3),
        tag,
        digest,
    )
        .prop_map(|(d, first, rest, t, g)| {
            let mut path = vec![first];
            path.extend(rest);
            format!("{d}{}{t}{g}", path.join("/"))
        })
}

proptest! {
    #[test]
    fn normalising_is_idempotent_and_display_round_trips(s in reference()) {
        let r = ImageRef::parse(&s).unwrap();
        prop_assert_eq!(r.to_string(), s.clone());
        let n = r.normalized();
        let again = ImageRef::parse(&n).unwrap();
        prop_assert_eq!(&again.normalized(), &n);
        prop_assert_eq!(again.canonical_name(), r.canonical_name());
        if let Some(d) = r.digest() {
            prop_assert!(n.ends_with(&d.to_string()));
        }
    }
}

/// Answers every tag with a digest derived from its name, and counts calls.
struct Fake(AtomicUsize);

impl Resolver for Fake {
    async fn resolve(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Resolution {
            digest: Digest::sha256_of(image.normalized().as_bytes()),
            media_type: None,
            via: None,
        })
    }
}

#[derive(Debug, Clone)]
struct GenPod {
    indent: usize,
    indented_seq: bool,
    crlf: bool,
    final_newline: bool,
    containers: Vec<(u8, String, Option<String>)>,
    init: Vec<(u8, String, Option<String>)>,
    header_comment: Option<String>,
}

fn comment() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[a-zA-Z0-9 :'\"#@éü,\\[\\]{}-]{0,24}")
}

fn image_entry() -> impl Strategy<Value = (u8, String, Option<String>)> {
    let img = prop_oneof![
        Just("registry.k8s.io/kube-apiserver:v1.31.0".to_string()),
        Just("registry.k8s.io/etcd:3.5.16-0".to_string()),
        Just("nginx".to_string()),
        Just("127.0.0.1:5000/team/app:v1".to_string()),
        Just(format!(
            "registry.k8s.io/pause:3.10@sha256:{}",
            "ab".repeat(32)
        )),
    ];
    (0u8..3, img, comment())
}

fn gen_pod() -> impl Strategy<Value = GenPod> {
    (
        prop_oneof![Just(2usize), Just(4)],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(image_entry(), 1..4),
        prop::collection::vec(image_entry(), 0..2),
        comment(),
    )
        .prop_map(
            |(indent, indented_seq, crlf, final_newline, containers, init, header_comment)| {
                GenPod {
                    indent,
                    indented_seq,
                    crlf,
                    final_newline,
                    containers,
                    init,
                    header_comment,
                }
            },
        )
}

fn render(p: &GenPod) -> String {
    let i1 = " ".repeat(p.indent);
    let seq = if p.indented_seq {
        i1.clone()
    } else {
        String::new()
    };
    let item = format!("{i1}{seq}");
    let mut lines = Vec::new();
    if let Some(c) = &p.header_comment {
        lines.push(format!("# {c}"));
    }
    lines.push("apiVersion: v1".into());
    lines.push("kind: Pod".into());
    lines.push("metadata:".into());
    lines.push(format!("{i1}name: gen"));
    lines.push(format!("{i1}namespace: kube-system"));
    lines.push("spec:".into());
    for (field, list) in [("initContainers", &p.init), ("containers", &p.containers)] {
        if list.is_empty() {
            continue;
        }
        lines.push(format!("{i1}{field}:"));
        for (n, (quote, image, c)) in list.iter().enumerate() {
            let value = match quote {
                0 => image.clone(),
                1 => format!("'{image}'"),
                _ => format!("\"{image}\""),
            };
            let tail = c.as_ref().map(|c| format!("  # {c}")).unwrap_or_default();
            lines.push(format!("{seq}{i1}- name: c{n}"));
            lines.push(format!("{item}{}image: {value}{tail}", " ".repeat(2)));
            lines.push(format!("{item}  args: [\"--n={n}\"]"));
        }
    }
    let eol = if p.crlf { "\r\n" } else { "\n" };
    let mut text = lines.join(eol);
    if p.final_newline {
        text.push_str(eol);
    }
    text
}

fn yaml(text: &str) -> serde_norway::Value {
    serde_norway::from_str(text).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn pinning_changes_only_images_and_is_idempotent(p in gen_pod()) {
        let text = render(&p);
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("m");
        std::fs::create_dir(&manifests).unwrap();
        let file = manifests.join("pod.yaml");
        std::fs::write(&file, &text).unwrap();
        let store = BackupStore::new(dir.path().join("b"));
        let options = pass::Options {
            mode: Mode::Apply,
            concurrency: 4,
            lock: pass::LockSettings { path: dir.path().join("lock"), ..Default::default() },
            ..Default::default()
        };
        let fake = Fake(AtomicUsize::new(0));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

        let report = rt.block_on(pass::run_once(std::slice::from_ref(&manifests), &options, &fake, Some(&store))).unwrap();
        prop_assert_eq!(report.files.len(), 1);
        let new = std::fs::read_to_string(&file).unwrap();
        let unpinned = p.containers.iter().chain(&p.init).filter(|(_, i, _)| !i.contains('@')).count();
        if unpinned == 0 {
            prop_assert!(matches!(report.files[0].outcome, Outcome::Unchanged));
            prop_assert_eq!(&new, &text);
        } else {
            prop_assert!(matches!(report.files[0].outcome, Outcome::Changed { pinned, wired: false } if pinned == unpinned), "{:?}", report.files[0].outcome);
        }

        // Same document except the images, each now `original@sha256:…`.
        let mut expected = yaml(&text);
        for field in ["containers", "initContainers"] {
            if let Some(list) = expected.get_mut("spec").and_then(|s| s.get_mut(field)).and_then(|l| l.as_sequence_mut()) {
                for c in list {
                    let img = c.get("image").unwrap().as_str().unwrap().to_string();
                    if !img.contains('@') {
                        let d = Digest::sha256_of(ImageRef::parse(&img).unwrap().normalized().as_bytes());
                        *c.get_mut("image").unwrap() = serde_norway::Value::String(format!("{img}@{d}"));
                    }
                }
            }
        }
        prop_assert_eq!(yaml(&new), expected);
        // Outside image values, every line is byte-identical.
        let (old_lines, new_lines): (Vec<&str>, Vec<&str>) = (text.split('\n').collect(), new.split('\n').collect());
        prop_assert_eq!(old_lines.len(), new_lines.len());
        for (a, b) in old_lines.iter().zip(&new_lines) {
            if a != b {
                prop_assert!(a.contains("image:"), "non-image line changed: {:?} -> {:?}", a, b);
            }
        }

        // A second run changes nothing and asks nobody.
        let calls = fake.0.load(Ordering::SeqCst);
        let again = rt.block_on(pass::run_once(std::slice::from_ref(&manifests), &options, &fake, Some(&store))).unwrap();
        prop_assert!(matches!(again.files[0].outcome, Outcome::Unchanged));
        prop_assert_eq!(fake.0.load(Ordering::SeqCst), calls);
        prop_assert_eq!(std::fs::read_to_string(&file).unwrap(), new);
    }
}

// The manifest reader against arbitrary input: it answers (a Pod or a
// refusal) without panicking, quickly, and whatever it accepts it can edit
// and verify.

use std::time::{Duration, Instant};

use staticpin::manifest::parse::inspect;
use staticpin::manifest::splice::{apply, verify, Edit};

/// Reads, pins and verifies `text`; `limit` bounds the time (debug build,
/// shared machine: generous, but a quadratic blow-up still fails).
fn exercise_reader(text: &str, limit: Duration) {
    let start = Instant::now();
    if let Ok(pod) = inspect(text) {
        for s in &pod.images {
            assert!(text.get(s.inner.clone()).is_some(), "{:?}", s.inner);
        }
        let edits: Vec<Edit> = pod
            .images
            .iter()
            .map(|s| Edit {
                site: s.clone(),
                new_value: format!("{}@sha256:{}", s.value, "4".repeat(64)),
            })
            .collect();
        let new = apply(text, &edits);
        // Whatever the reader accepts, pinning must verify: a failure here
        // would reach users as "this is a staticpin bug".
        if let Err(e) = verify(text, &new, &edits) {
            panic!("accepted but pinning does not verify ({e}): {text:?}");
        }
    }
    let _ = verify(text, text, &[]);
    let took = start.elapsed();
    assert!(took < limit, "took {took:?} on {} bytes", text.len());
}

fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("- "),
        Just("["),
        Just("]"),
        Just("{"),
        Just("}"),
        Just(", "),
        Just(": "),
        Just("\n"),
        Just("\r\n"),
        Just("\r"),
        Just("  "),
        Just("\t"),
        Just("image"),
        Just("containers"),
        Just("volumes"),
        Just("reference"),
        Just("spec"),
        Just("kind: Pod\n"),
        Just("&a "),
        Just("*a"),
        Just("<<"),
        Just("'"),
        Just("\""),
        Just("# "),
        Just("---\n"),
        Just("...\n"),
        Just("\u{2028}"),
        Just("\u{85}"),
        Just("\u{feff}"),
        Just("!!str "),
        Just("!!binary "),
        Just("? "),
        Just("|\n"),
        Just(">-\n"),
        Just("%YAML 1.1\n"),
        Just("\\"),
        Just("reg:5000/a:1"),
        Just("é"),
        Just("~"),
        Just("yes"),
        Just("0x1F"),
        Just("@sha256:"),
    ];
    prop::collection::vec(token, 0..120).prop_map(|v| v.concat())
}

const POD_PREFIX: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: a\n    image: ";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn manifest_reader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise_reader(&String::from_utf8_lossy(&bytes), Duration::from_secs(2));
    }

    #[test]
    fn manifest_reader_survives_yamlish_text(text in yamlish(), in_pod in any::<bool>()) {
        if in_pod {
            exercise_reader(&format!("{POD_PREFIX}{text}"), Duration::from_secs(2));
        } else {
            exercise_reader(&text, Duration::from_secs(2));
        }
    }
}

#[test]
fn manifest_reader_survives_large_hostile_input() {
    let laughs = {
        let mut t = String::from("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = format!("*l{}", i - 1);
            t.push_str(&format!(
                "    l{i}: &l{i} [{}]\n",
                [prev.as_str(); 10].join(", ")
            ));
        }
        t.push_str("spec:\n  containers:\n  - {name: a, image: \"reg.example/app:1\"}\n");
        t
    };
    for text in [
        "- ".repeat(10_000),
        "[".repeat(1 << 20),
        "{a: ".repeat(100_000),
        format!("{POD_PREFIX}x\n{}", "    a: b\n".repeat(100_000)),
        format!(
            "{POD_PREFIX}x\n    env:\n{}",
            "    - {name: a, value: b}\n".repeat(50_000)
        ),
        laughs,
        format!("{POD_PREFIX}\"{}\"\n", "\\".repeat(100_001)),
        format!("{POD_PREFIX}'{}\n", "x".repeat(1 << 20)),
    ] {
        exercise_reader(&text, Duration::from_secs(90));
    }
}
