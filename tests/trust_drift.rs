//! Trusted registries, tag drift and the metrics file, end to end: the real
//! binary against a real registry on 127.0.0.1, images pushed with skopeo,
//! digests checked against skopeo's oracle, metrics files checked by
//! `promtool check metrics`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::node::{pod, Node, Out};
use support::{oracle_digest, run_output, Layout};

/// `promtool check metrics` on a file: must pass. Without promtool the check
/// is skipped visibly, and fails under CI, where `.ci/deps` installs it.
fn promtool_check(file: &Path) {
    if !support::have_tool("promtool") {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool missing under CI (Debian package prometheus; .ci/deps installs it)"
        );
        eprintln!(
            "SKIP promtool check of {}: promtool not installed",
            file.display()
        );
        return;
    }
    let out = run_output(
        Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(file).unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics {}: {}{}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// The value of one sample line (`name{labels}` exactly) in a metrics file.
fn sample(file: &Path, series: &str) -> f64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn add_config(node: &Node, extra: &str) {
    let path = node.path("config.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(path, text).unwrap();
}

fn status(node: &Node, args: &[&str]) -> Out {
    let mut all = vec!["--insecure-registry", node.reg.host.as_str()];
    all.extend_from_slice(args);
    Out::from(run_output(&mut node.command("status", &all, &[])))
}

/// Gatekeeper's allowed-repos and kube-image-bouncer bypasses, plus case and
/// port variants: under `deny` each file is left byte-identical, pin exits 2
/// and names file, container and image. No registry is asked (the names are
/// not resolvable, and a refused file's images are never looked up).
#[test]
fn deny_refuses_every_prefix_bypass_and_leaves_the_file_byte_identical() {
    let node = Node::new("");
    add_config(
        &node,
        "policy:\n  trustedRegistries: [registry.k8s.io, docker.io/library, 'myreg:5000/team/']\n  untrusted: deny\n",
    );
    let bypasses = [
        "registry.k8s.io.evil.com/pause:3.9",
        "registry.k8s.iox/pause:3.9",
        "evil.com/registry.k8s.io/pause:3.9",
        "docker.io/libraryx/nginx:1.25",
        "libraryx/nginx:1.25",
        "index.docker.io/libraryx/nginx:1.25",
        "myreg:5000/teamx/app:1",
        "myreg/team/app:1",
        "myreg:5001/team/app:1",
        "myreg:50001/team/app:1",
        "MYREG:5000/teamx/app:1",
        "registry.k8s.io:443/pause:3.9",
        "docker.io/team/app:1",
    ];
    for (i, image) in bypasses.iter().enumerate() {
        let file = node.manifests().join(format!("p{i}.yaml"));
        let text = pod(&format!("c{i}"), image, "x");
        std::fs::write(&file, &text).unwrap();
        let out = node.run("pin", &[file.to_str().unwrap()]);
        assert_eq!(out.code, Some(2), "{image}: {out}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "{image}");
        assert!(out.stderr.contains("policy violation"), "{image}: {out}");
        assert!(
            out.stderr.contains(file.to_str().unwrap()),
            "{image}: {out}"
        );
        assert!(
            out.stderr.contains(&format!("container c{i}")),
            "{image}: {out}"
        );
        assert!(out.stderr.contains(image), "{image}: {out}");
        // --check flags it too, without failing (exit 1: something to act on).
        let check = node.run("pin", &["--check", file.to_str().unwrap()]);
        assert_eq!(check.code, Some(1), "{image}: {check}");
        assert!(check.stdout.contains("is untrusted"), "{image}: {check}");
        std::fs::remove_file(&file).unwrap();
    }
    assert!(node.runs().is_empty(), "nothing was backed up or written");
}

/// The same boundaries against the real registry: one server reachable as
/// `127.0.0.1:PORT` and as `localhost:PORT`, trusted only under
/// `127.0.0.1:PORT/team`. `warn` pins everything and reports the outsiders;
/// `deny` pins the trusted file and leaves the others byte-identical.
#[test]
fn trusted_prefixes_end_to_end_through_pin() {
    let node = Node::new("");
    let host = node.reg.host.clone();
    let port = host.rsplit_once(':').unwrap().1.to_string();
    let local = format!("localhost:{port}");
    let team = node.push("team/app", "v1");
    let teamx = node.push("teamx/app", "v1");
    add_config(
        &node,
        &format!("policy:\n  trustedRegistries: ['{host}/team/']\n"),
    );
    let cases = [
        ("trusted", format!("{host}/team/app:v1"), team.clone(), true),
        (
            "sibling",
            format!("{host}/teamx/app:v1"),
            teamx.clone(),
            false,
        ),
        (
            "otherhost",
            format!("{local}/team/app:v1"),
            team.clone(),
            false,
        ),
    ];
    let write_all = || {
        for (name, image, _, _) in &cases {
            std::fs::write(
                node.manifests().join(format!("{name}.yaml")),
                pod(name, image, "m"),
            )
            .unwrap();
        }
    };
    write_all();
    let metrics = node.path("warn.prom");
    let out = Out::from(run_output(&mut node.command(
        "pin",
        &["--metrics-file", metrics.to_str().unwrap(), "-o", "json"],
        &[&local],
    )));
    assert_eq!(out.code, Some(0), "warn pins: {out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["untrusted"], 2, "{out}");
    for (name, image, digest, trusted) in &cases {
        let text = std::fs::read_to_string(node.manifests().join(format!("{name}.yaml"))).unwrap();
        assert!(
            text.contains(&format!("image: {image}@{digest}\n")),
            "{name}: {text}"
        );
        let f = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| {
                f["path"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/{name}.yaml"))
            })
            .unwrap();
        assert_eq!(f["images"][0]["trusted"], *trusted, "{name}: {f}");
        assert_eq!(f["images"][0]["container"], *name, "{name}: {f}");
    }
    assert_eq!(
        sample(&metrics, "staticpin_images{state=\"untrusted\"}"),
        2.0
    );
    assert_eq!(sample(&metrics, "staticpin_images{state=\"pinned\"}"), 3.0);
    assert_eq!(sample(&metrics, "staticpin_manifest_writes_total"), 3.0);
    promtool_check(&metrics);

    // status: pinned, current, trusted yes/no → exit 1 for the untrusted.
    let st = status(&node, &["--insecure-registry", &local, "-o", "json"]);
    assert_eq!(st.code, Some(1), "{st}");
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let rows = v["images"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["drift"] == "current"), "{st}");
    assert_eq!(rows.iter().filter(|r| r["trusted"] == false).count(), 2);

    // deny over the files as they were: only the trusted one changes.
    add_config(&node, "  untrusted: deny\n");
    write_all();
    let before: Vec<String> = cases
        .iter()
        .map(|(n, ..)| std::fs::read_to_string(node.manifests().join(format!("{n}.yaml"))).unwrap())
        .collect();
    let metrics = node.path("deny.prom");
    let out = Out::from(run_output(&mut node.command(
        "pin",
        &["--metrics-file", metrics.to_str().unwrap()],
        &[&local],
    )));
    assert_eq!(out.code, Some(2), "deny fails: {out}");
    for ((name, image, digest, trusted), old) in cases.iter().zip(&before) {
        let now = std::fs::read_to_string(node.manifests().join(format!("{name}.yaml"))).unwrap();
        if *trusted {
            assert!(now.contains(&format!("{image}@{digest}")), "{name}: {now}");
        } else {
            assert_eq!(&now, old, "{name} must be byte-identical");
            assert!(out.stderr.contains(image.as_str()), "{name}: {out}");
        }
    }
    assert_eq!(
        sample(&metrics, "staticpin_manifests{state=\"failed\"}"),
        2.0
    );
    assert_eq!(sample(&metrics, "staticpin_manifests{state=\"ok\"}"), 1.0);
    assert_eq!(sample(&metrics, "staticpin_last_pass_success"), 0.0);
    promtool_check(&metrics);

    // doctor fails on untrusted images under deny.
    let doc = node.run("doctor", &[]);
    assert_eq!(doc.code, Some(2), "{doc}");
    assert!(
        doc.stdout.contains("untrusted") || doc.stdout.contains("not under any trusted"),
        "{doc}"
    );
}

/// Push a tag, pin, re-push the tag with new content: status says drifted,
/// pin leaves it, pin --update moves it to the new digest (skopeo's), and a
/// second pin --update changes nothing.
#[test]
fn drift_is_reported_and_moved_only_with_update() {
    let node = Node::new("");
    let host = node.reg.host.clone();
    let old = node.push("drift/app", "v1");
    let image = format!("{host}/drift/app:v1");
    let file = node.manifests().join("app.yaml");
    std::fs::write(&file, pod("app", &image, "d")).unwrap();
    let out = node.run("pin", &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let pinned = std::fs::read_to_string(&file).unwrap();
    assert!(pinned.contains(&format!("{image}@{old}\n")), "{pinned}");

    let st = status(&node, &[]);
    assert_eq!(st.code, Some(0), "current and no policy: {st}");
    assert!(st.stdout.contains("current"), "{st}");
    assert!(st.stdout.contains("no registry policy"), "{st}");

    // Re-push the tag with different content.
    let layout = node.path("layouts/drift-v1-new");
    Layout::image(&layout, "v1", "amd64", "new content").push(&node.reg, "drift/app", "v1", None);
    let new = oracle_digest(&node.reg, "drift/app", "v1", None);
    assert_ne!(old, new);

    let metrics = node.path("status.prom");
    let st = status(
        &node,
        &["-o", "json", "--metrics-file", metrics.to_str().unwrap()],
    );
    assert_eq!(st.code, Some(1), "drifted: {st}");
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let row = &v["images"][0];
    assert_eq!(row["drift"], "drifted", "{st}");
    assert_eq!(row["digest"], old.as_str());
    assert_eq!(row["tagDigest"], new.as_str());
    assert_eq!(row["reference"], image.as_str());
    assert_eq!(row["container"], "app");
    assert_eq!(sample(&metrics, "staticpin_images{state=\"drifted\"}"), 1.0);
    promtool_check(&metrics);
    let text = status(&node, &[]);
    assert!(text.stdout.contains("drifted"), "{text}");

    // Without --update a pin never moves.
    let out = node.run("pin", &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), pinned);

    // --update --dry-run shows the move and writes nothing.
    let out = node.run("pin", &["--update", "--dry-run"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout.contains(&format!("+    image: {image}@{new}")),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), pinned);

    let metrics = node.path("update.prom");
    let out = node.run(
        "pin",
        &["--update", "--metrics-file", metrics.to_str().unwrap()],
    );
    assert_eq!(out.code, Some(0), "{out}");
    let moved = std::fs::read_to_string(&file).unwrap();
    assert_eq!(moved, pinned.replace(&old, &new));
    assert_eq!(sample(&metrics, "staticpin_manifest_writes_total"), 1.0);
    assert_eq!(sample(&metrics, "staticpin_images{state=\"pinned\"}"), 1.0);
    assert_eq!(sample(&metrics, "staticpin_images{state=\"drifted\"}"), 0.0);
    promtool_check(&metrics);

    let runs = node.runs().len();
    let out = node.run("pin", &["--update"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), moved);
    assert_eq!(node.runs().len(), runs, "a second --update writes nothing");
    assert_eq!(status(&node, &[]).code, Some(0));
}

/// A pass where an image fails to resolve: failed manifest, a counted
/// resolve error by registry and kind, success 0; promtool clean.
#[test]
fn metrics_after_a_failing_pass() {
    let node = Node::new("");
    let host = node.reg.host.clone();
    let ok = node.push("ok/app", "v1");
    std::fs::write(
        node.manifests().join("ok.yaml"),
        pod("ok", &format!("{host}/ok/app:v1"), "a"),
    )
    .unwrap();
    let missing = pod("gone", &format!("{host}/gone/app:v1"), "b");
    std::fs::write(node.manifests().join("gone.yaml"), &missing).unwrap();
    let metrics = node.path("fail.prom");
    let out = node.run("pin", &["--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(std::fs::read_to_string(node.manifests().join("ok.yaml"))
        .unwrap()
        .contains(&ok));
    assert_eq!(
        std::fs::read_to_string(node.manifests().join("gone.yaml")).unwrap(),
        missing
    );
    assert_eq!(sample(&metrics, "staticpin_manifests{state=\"ok\"}"), 1.0);
    assert_eq!(
        sample(&metrics, "staticpin_manifests{state=\"failed\"}"),
        1.0
    );
    assert_eq!(
        sample(&metrics, "staticpin_images{state=\"unpinned\"}"),
        1.0
    );
    assert_eq!(sample(&metrics, "staticpin_last_pass_success"), 0.0);
    assert_eq!(
        sample(
            &metrics,
            &format!("staticpin_resolve_errors_total{{registry=\"{host}\",kind=\"not_found\"}}")
        ),
        1.0
    );
    assert!(sample(&metrics, "staticpin_last_pass_timestamp_seconds") > 1.7e9);
    // Only the finished file is in the directory: the temp was renamed.
    let names: Vec<String> = std::fs::read_dir(node.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("prom"))
        .collect();
    assert_eq!(names, vec!["fail.prom".to_string()]);
    promtool_check(&metrics);

    // A drift check whose HEAD fails: unknown, exit 2, counted, success 0.
    std::fs::remove_file(node.manifests().join("gone.yaml")).unwrap();
    std::fs::write(
        node.manifests().join("gone.yaml"),
        pod("gone", &format!("{host}/gone/app:v1@{ok}"), "b"),
    )
    .unwrap();
    let metrics = node.path("status.prom");
    let st = status(&node, &["--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(st.code, Some(2), "{st}");
    assert!(
        st.stdout.contains("unknown (") && st.stdout.contains("not found"),
        "{st}"
    );
    assert_eq!(sample(&metrics, "staticpin_last_pass_success"), 0.0);
    assert_eq!(
        sample(
            &metrics,
            &format!("staticpin_resolve_errors_total{{registry=\"{host}\",kind=\"not_found\"}}")
        ),
        1.0
    );
    promtool_check(&metrics);

    // check-config reports the policy, and says when there is none.
    let out = Out::from(run_output(
        Command::new(support::node::BIN)
            .arg("check-config")
            .arg(node.path("config.yaml")),
    ));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("no registry policy"), "{out}");
}

/// The shipped alert rules load (`promtool check rules`) and fire as their
/// unit test says (`promtool test rules`); skipped visibly without promtool,
/// failing under CI.
#[test]
fn example_alert_rules_check_and_fire() {
    if !support::have_tool("promtool") {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool missing under CI"
        );
        eprintln!("SKIP promtool check rules: promtool not installed");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prometheus");
    for args in [
        ["check", "rules", "staticpin.rules.yml"],
        ["test", "rules", "staticpin.rules.test.yml"],
    ] {
        let out = run_output(Command::new("promtool").args(args).current_dir(&dir));
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An image pulled through a hosts.toml mirror is judged by its name: trusted
/// under `docker.io/library` (the mirror is shown in the report), refused
/// under deny when only the mirror's host is trusted.
#[test]
fn a_mirrored_image_is_judged_by_its_name_and_shows_its_mirror() {
    let node = Node::new("");
    let mirror = node.reg.host.clone();
    let digest = node.push("library/nginx", "1.27");
    let hub = node.path("certs/docker.io");
    std::fs::create_dir_all(&hub).unwrap();
    std::fs::write(
        hub.join("hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\ncapabilities = [\"pull\"]\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    add_config(&node, "policy:\n  untrusted: deny\n");
    let file = node.manifests().join("web.yaml");
    let text = pod("web", "nginx:1.27", "n");
    std::fs::write(&file, &text).unwrap();

    // Trusting only the mirror's host: the name is docker.io/library/nginx.
    let out = node.run("pin", &["--trusted-registry", &mirror]);
    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert!(out.stderr.contains("docker.io/library/nginx"), "{out}");

    let out = node.run(
        "pin",
        &["--trusted-registry", "docker.io/library", "-o", "json"],
    );
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text.replace("nginx:1.27", &format!("nginx:1.27@{digest}"))
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let img = &v["files"][0]["images"][0];
    assert_eq!(img["trusted"], true, "{out}");
    assert_eq!(img["via"], mirror.as_str(), "{out}");
}
