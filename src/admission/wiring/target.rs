//! Which container of a Pod is kube-apiserver: the one answer used both for
//! wiring the admission flags and for reading the liveness probe that the
//! health gate polls, so the two can never look at different containers.
//!
//! A container runs kube-apiserver *directly* when its `command[0]` is the
//! binary (basename `kube-apiserver`), or when it has no `command` and runs a
//! kube-apiserver image, whose entrypoint then gets `args`. Flags added to
//! such a container reach kube-apiserver. Anything else that still looks like
//! the apiserver (a shell running `exec kube-apiserver …`, hyperkube, an
//! image or label saying so) is *wrapped*: its probe is the apiserver's, but
//! flags appended to it would become a shell's `$0`, `$1`, … and never reach
//! kube-apiserver, so wiring refuses it.

/// The parts of a container the decision reads, from whichever parser the
/// caller used. A non-string item in `command` or `args` is `None`.
#[derive(Debug, Clone, Default)]
pub struct ContainerView<'a> {
    /// The container's `name`; `kube-apiserver` marks a look-alike in a
    /// labelled Pod and wins ties between look-alikes.
    pub name: Option<&'a str>,
    /// `None` when the field is absent; an empty list counts as absent, as
    /// for kubelet (the image's entrypoint runs).
    pub command: Option<Vec<Option<&'a str>>>,
    /// `args`; empty when absent.
    pub args: Vec<Option<&'a str>>,
    /// The container's `image`, as written.
    pub image: Option<&'a str>,
}

/// The kube-apiserver container, and whether flags can be wired into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Runs the binary directly; flags added to `command`/`args` reach it.
    Direct {
        /// Its index in `spec.containers`.
        index: usize,
    },
    /// Runs kube-apiserver through something else; `why` says what.
    Wrapped {
        /// Its index in `spec.containers`.
        index: usize,
        /// What runs instead and how to fix it: the message wiring
        /// refuses with.
        why: String,
    },
    /// More than one container runs kube-apiserver directly.
    Ambiguous {
        /// Their indices in `spec.containers`.
        indices: Vec<usize>,
    },
}

impl Target {
    /// The container to read the apiserver's probe from, if there is one.
    pub fn index(&self) -> Option<usize> {
        match self {
            Target::Direct { index } | Target::Wrapped { index, .. } => Some(*index),
            Target::Ambiguous { .. } => None,
        }
    }
}

const BINARY: &str = "kube-apiserver";

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// `registry.k8s.io/kube-apiserver:v1.31.0@sha256:…` → true; also the
/// per-architecture names (`kube-apiserver-amd64`) older releases used.
fn is_apiserver_image(image: &str) -> bool {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = basename(no_digest);
    let repo = last.split(':').next().unwrap_or(last);
    const ARCHES: [&str; 5] = ["-amd64", "-arm64", "-arm", "-ppc64le", "-s390x"];
    repo == BINARY
        || repo
            .strip_prefix(BINARY)
            .is_some_and(|arch| ARCHES.contains(&arch))
}

fn command<'v, 'a>(c: &'v ContainerView<'a>) -> Option<&'v [Option<&'a str>]> {
    c.command.as_deref().filter(|v| !v.is_empty())
}

fn runs_directly(c: &ContainerView) -> bool {
    match command(c) {
        Some(cmd) => cmd[0].is_some_and(|c0| basename(c0) == BINARY),
        None => c.image.is_some_and(is_apiserver_image),
    }
}

/// Whether `argv[i]` starts kube-apiserver: the program a wrapper such as
/// hyperkube or tini is given, or a shell script that runs it (first word,
/// or after `exec`, `;`, `&&`, `||`, `|`). An item that is the value of a
/// preceding `--flag` (e.g. `--target kube-apiserver`) does not count.
fn runs_in(argv: &[Option<&str>], i: usize) -> bool {
    let Some(item) = argv[i] else { return false };
    let value_of_flag = i
        .checked_sub(1)
        .and_then(|p| argv[p])
        .is_some_and(|p| p.starts_with('-') && !p.contains('=') && p != "-c" && p != "--");
    if value_of_flag {
        return false;
    }
    // Words, with `None` for a separator that starts a new command.
    let mut tokens: Vec<Option<&str>> = Vec::new();
    let mut start = 0;
    for (at, ch) in item.char_indices() {
        let separator = ";&|()".contains(ch);
        if ch.is_whitespace() || separator {
            tokens.push(Some(&item[start..at]));
            if separator {
                tokens.push(None);
            }
            start = at + ch.len_utf8();
        }
    }
    tokens.push(Some(&item[start..]));
    let mut at_command = true;
    for token in tokens {
        match token {
            None => at_command = true,
            Some("") => {}
            Some(word) if at_command && basename(word) == BINARY => return true,
            Some(word) => at_command = word == "exec",
        }
    }
    false
}

/// Why a container that looks like kube-apiserver is not running it
/// directly, or `None` when it does not look like kube-apiserver at all.
fn wrapped(c: &ContainerView, labelled: bool) -> Option<String> {
    let argv: Vec<Option<&str>> = command(c)
        .unwrap_or(&[])
        .iter()
        .chain(&c.args)
        .copied()
        .collect();
    let mentions = (0..argv.len()).any(|i| runs_in(&argv, i));
    let image = c.image.is_some_and(is_apiserver_image);
    let named = labelled && c.name == Some(BINARY);
    if !(mentions || image || named) {
        return None;
    }
    Some(match command(c) {
        Some(cmd) => format!(
            "container {:?} runs {} as command[0], not the {BINARY} binary: flags added to it would never reach kube-apiserver (a shell or other wrapper is not wired); run {BINARY} as command[0]",
            c.name.unwrap_or(""),
            cmd[0].map_or("a non-string".to_string(), |s| format!("{s:?}")),
        ),
        None => format!(
            "container {:?} has no command and its image {:?} is not a kube-apiserver image, so staticpin cannot tell what runs the flags",
            c.name.unwrap_or(""),
            c.image.unwrap_or(""),
        ),
    })
}

/// Decides which container is kube-apiserver. `labelled`: the Pod carries
/// `component: kube-apiserver`, as kubeadm's does.
pub fn find(containers: &[ContainerView], labelled: bool) -> Option<Target> {
    let direct: Vec<usize> = (0..containers.len())
        .filter(|&i| runs_directly(&containers[i]))
        .collect();
    match direct.as_slice() {
        [index] => return Some(Target::Direct { index: *index }),
        [] => {}
        _ => return Some(Target::Ambiguous { indices: direct }),
    }
    // Prefer the container named kube-apiserver among the look-alikes.
    let mut candidates: Vec<(usize, String)> = containers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| wrapped(c, labelled).map(|why| (i, why)))
        .collect();
    candidates.sort_by_key(|(i, _)| containers[*i].name != Some(BINARY));
    let (index, why) = candidates.into_iter().next()?;
    Some(Target::Wrapped { index, why })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(cmd: Option<&[&'a str]>, args: &[&'a str], image: &'a str) -> ContainerView<'a> {
        ContainerView {
            name: Some("c"),
            command: cmd.map(|c| c.iter().map(|s| Some(*s)).collect()),
            args: args.iter().map(|s| Some(*s)).collect(),
            image: Some(image),
        }
    }

    #[test]
    fn decisions() {
        let api = "registry.k8s.io/kube-apiserver:v1.31.0";
        let cases: &[(ContainerView, Option<&str>)] = &[
            (
                view(Some(&["kube-apiserver", "--a=1"]), &[], "x"),
                Some("direct"),
            ),
            (
                view(Some(&["/usr/local/bin/kube-apiserver"]), &["--a"], "x"),
                Some("direct"),
            ),
            (view(None, &["--a=1"], api), Some("direct")),
            (
                view(
                    Some(&[]),
                    &["--a=1"],
                    "k8s.gcr.io/kube-apiserver-amd64:v1.10@sha256:00",
                ),
                Some("direct"),
            ),
            (
                view(Some(&["sh", "-c", "exec kube-apiserver --a"]), &[], api),
                Some("wrapped"),
            ),
            (
                view(Some(&["/hyperkube", "kube-apiserver"]), &[], "x"),
                Some("wrapped"),
            ),
            (view(Some(&["kube-apiserver-proxy"]), &[], "x"), None),
            (
                view(None, &["--a"], "registry.example/kube-apiserver-shim:1"),
                None,
            ),
            (view(None, &["--a"], "registry.example/etcd:3"), None),
            (
                view(Some(&["sh"]), &["kube-apiserver"], "x"),
                Some("wrapped"),
            ),
        ];
        for (c, want) in cases {
            let got = find(std::slice::from_ref(c), false).map(|t| match t {
                Target::Direct { .. } => "direct",
                Target::Wrapped { .. } => "wrapped",
                Target::Ambiguous { .. } => "ambiguous",
            });
            assert_eq!(got, *want, "{c:?}");
        }
    }

    #[test]
    fn two_direct_containers_are_ambiguous_and_names_break_look_alike_ties() {
        let a = view(Some(&["kube-apiserver"]), &[], "x");
        assert_eq!(
            find(&[a.clone(), a.clone()], false),
            Some(Target::Ambiguous {
                indices: vec![0, 1]
            })
        );
        let mut named = view(Some(&["sh", "-c", "run"]), &[], "x");
        named.name = Some("kube-apiserver");
        let other = view(Some(&["sh", "-c", "kube-apiserver"]), &[], "x");
        assert_eq!(
            find(&[other.clone(), named.clone()], true).and_then(|t| t.index()),
            Some(1)
        );
        assert_eq!(find(&[named], false), None);
    }
}
