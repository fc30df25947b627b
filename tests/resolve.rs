//! `staticpin resolve` against real `docker-registry` instances (plain HTTP,
//! TLS + htpasswd Basic, token auth with our own RS256 issuer), with images
//! pushed by skopeo. Every pinned digest is checked against the independent
//! oracle `skopeo inspect --raw | sha256`.
//!
//! Every invocation runs in a [`Sandbox`]: private HOME, cwd, kubelet root
//! dir and certs dir, so the machine's own docker configs and CAs never leak
//! in.

mod support;

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use support::cli::{Out, Sandbox};
use support::*;

// ---------------------------------------------------------------------------
// Harness

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("staticpin-fixture-")
        .tempdir()
        .unwrap()
}

/// Asserts one successful text line per image, in order, each `IMAGE@DIGEST`.
fn assert_pinned(out: &Out, expected: &[(&str, &str)]) {
    let want: Vec<String> = expected.iter().map(|(i, d)| format!("{i}@{d}")).collect();
    assert_eq!(out.lines(), want, "{out}");
}

// ---------------------------------------------------------------------------
// Fixtures

const USER: &str = "alice";
/// `alice:` + this is 17 bytes, so its base64 ends in `=` (padding matters).
const PASS: &str = "s3cret-pass";
const WRONG: &str = "Wr0ng-PASSWORD-zz";

/// A TLS + htpasswd registry with `team/app:v1` (multi-arch) pushed.
struct BasicFixture {
    _tmp: tempfile::TempDir,
    pki: Pki,
    reg: Registry,
    image: String,
    digest: String,
}

fn basic_fixture() -> BasicFixture {
    let tmp = tmpdir();
    let pki = Pki::new(tmp.path(), "registry-ca");
    let reg = Registry::tls_basic(&tmp.path().join("storage"), &pki, USER, PASS);
    let layout = Layout::index(
        &tmp.path().join("layout"),
        "app",
        &["amd64", "arm64"],
        "basic",
    );
    layout.push(&reg, "team/app", "v1", Some((USER, PASS)));
    let digest = oracle_digest(&reg, "team/app", "v1", Some((USER, PASS)));
    let image = format!("{}/team/app:v1", reg.host);
    BasicFixture {
        _tmp: tmp,
        pki,
        reg,
        image,
        digest,
    }
}

/// A plain-HTTP registry with `app/single:v1` (amd64) and `app/multi:v1`
/// (amd64+arm64 OCI index).
struct PlainFixture {
    _tmp: tempfile::TempDir,
    reg: Registry,
    single: String,
    single_digest: String,
    multi: String,
    multi_digest: String,
}

fn plain_fixture() -> PlainFixture {
    let tmp = tmpdir();
    let reg = Registry::plain(&tmp.path().join("storage"));
    let dir = tmp.path().join("layout");
    Layout::image(&dir, "single", "amd64", "plain-single").push(&reg, "app/single", "v1", None);
    Layout::index(&dir, "multi", &["amd64", "arm64"], "plain-multi").push(
        &reg,
        "app/multi",
        "v1",
        None,
    );
    PlainFixture {
        single: format!("{}/app/single:v1", reg.host),
        single_digest: oracle_digest(&reg, "app/single", "v1", None),
        multi: format!("{}/app/multi:v1", reg.host),
        multi_digest: oracle_digest(&reg, "app/multi", "v1", None),
        reg,
        _tmp: tmp,
    }
}

// ---------------------------------------------------------------------------
// Plain HTTP

#[test]
fn plain_http_single_and_multi_arch_match_skopeo() {
    let f = plain_fixture();
    let sb = Sandbox::new();
    let out = sb.resolve(&["--insecure-registry", &f.reg.host, &f.single, &f.multi]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(
        &out,
        &[(&f.single, &f.single_digest), (&f.multi, &f.multi_digest)],
    );

    let out = sb.resolve(&[
        "--insecure-registry",
        &f.reg.host,
        "-o",
        "json",
        &f.single,
        &f.multi,
    ]);
    assert_eq!(out.code, 0, "{out}");
    let items = out.json();
    assert_eq!(items.len(), 2, "{out}");
    assert_eq!(
        items[0],
        json!({
            "image": f.single,
            "pinned": format!("{}@{}", f.single, f.single_digest),
            "digest": f.single_digest,
            "mediaType": MT_OCI_MANIFEST,
        })
    );
    assert_eq!(
        items[1],
        json!({
            "image": f.multi,
            "pinned": format!("{}@{}", f.multi, f.multi_digest),
            "digest": f.multi_digest,
            "mediaType": MT_OCI_INDEX,
        }),
        "a multi-arch tag pins to the index digest"
    );
    // The oracle's bytes for the multi-arch tag really are an index.
    let raw: Value =
        serde_json::from_slice(&oracle_manifest(&f.reg, "app/multi", "v1", None)).unwrap();
    assert_eq!(raw["mediaType"], MT_OCI_INDEX);
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(2));
}

#[test]
fn docker_v2_manifests_and_lists_pin_with_their_media_types() {
    let tmp = tmpdir();
    let reg = Registry::plain(&tmp.path().join("storage"));
    let dir = tmp.path().join("layout");
    let single = Layout::image(&dir, "single", "amd64", "docker-single");
    push_as(
        &single.dir,
        "single",
        &reg,
        "app/dsingle",
        "v1",
        None,
        Some("v2s2"),
    );
    let multi = Layout::index(&dir, "multi", &["amd64", "arm64"], "docker-multi");
    push_as(
        &multi.dir,
        "multi",
        &reg,
        "app/dmulti",
        "v1",
        None,
        Some("v2s2"),
    );
    let sb = Sandbox::new();
    let images = [
        format!("{}/app/dsingle:v1", reg.host),
        format!("{}/app/dmulti:v1", reg.host),
    ];
    let before = reg.manifest_requests();
    let out = sb.resolve(&[
        "--insecure-registry",
        &reg.host,
        "-o",
        "json",
        &images[0],
        &images[1],
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        reg.wait_manifest_requests(before + 2, Duration::from_secs(2)) - before,
        2,
        "one request per tag\n{}",
        reg.log_contents()
    );
    let items = out.json();
    for (item, (image, repo)) in items
        .iter()
        .zip(images.iter().zip(["app/dsingle", "app/dmulti"]))
    {
        let raw: Value = serde_json::from_slice(&oracle_manifest(&reg, repo, "v1", None)).unwrap();
        assert_eq!(
            item["digest"],
            oracle_digest(&reg, repo, "v1", None).as_str(),
            "{image}"
        );
        assert_eq!(item["mediaType"], raw["mediaType"], "{image}");
    }
    assert_eq!(items[0]["mediaType"], MT_DOCKER_MANIFEST, "{out}");
    assert_eq!(items[1]["mediaType"], MT_DOCKER_LIST, "{out}");
}

#[test]
fn plain_http_registry_not_marked_insecure_is_refused() {
    let f = plain_fixture();
    let before = f.reg.manifest_requests();
    let out = Sandbox::new().resolve(&[&f.single]);
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.stdout, "");
    let line = out.failure(&f.single);
    assert!(
        line.contains(&format!("(registry {}): TLS error: ", f.reg.host)),
        "{line}"
    );
    assert!(
        line.contains(&format!("if {} is a plain-HTTP", f.reg.host))
            && line.contains("list it in insecureRegistries"),
        "{line}"
    );
    assert_eq!(
        f.reg.manifest_requests(),
        before,
        "nothing asked over plain HTTP"
    );
}

#[test]
fn unknown_tag_is_not_found() {
    let f = plain_fixture();
    let image = format!("{}/app/single:no-such-tag", f.reg.host);
    let out = Sandbox::new().resolve(&["--insecure-registry", &f.reg.host, &image]);
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.stdout, "");
    let line = out.failure(&image);
    assert!(
        line.contains(&format!("(registry {}): not found: ", f.reg.host)),
        "{line}"
    );
    assert!(line.contains(&image), "{line}");
    assert!(line.contains("127.0.0.1:"), "{line}");
}

#[test]
fn unknown_repository_is_not_found() {
    let f = plain_fixture();
    let image = format!("{}/app/nothing-here:v1", f.reg.host);
    let out = Sandbox::new().resolve(&["--insecure-registry", &f.reg.host, &image]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.failure(&image).contains(": not found: "), "{out}");
}

#[test]
fn digested_reference_is_printed_unchanged_without_asking() {
    let f = plain_fixture();
    let pinned_name = format!("{}/app/single@{}", f.reg.host, f.single_digest);
    let pinned_tag = format!("{}@{}", f.single, f.single_digest);
    // A digest the registry does not have: proves nothing is asked.
    let unknown = format!("{}/app/ghost:v9@sha256:{}", f.reg.host, "0".repeat(64));
    let before = f.reg.manifest_requests();
    let total = f.reg.total_requests();
    let out = Sandbox::new().resolve(&[
        "--insecure-registry",
        &f.reg.host,
        &pinned_name,
        &pinned_tag,
        &unknown,
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.lines(),
        [pinned_name.as_str(), pinned_tag.as_str(), unknown.as_str()],
        "{out}"
    );
    assert_eq!(
        f.reg.manifest_requests(),
        before,
        "a pinned reference must not reach the registry"
    );
    assert_eq!(f.reg.total_requests(), total, "not even the /v2/ probe");

    let out = Sandbox::new().resolve(&["-o", "json", &pinned_tag]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.json(),
        [
            json!({"image": pinned_tag, "pinned": pinned_tag, "digest": f.single_digest, "mediaType": null})
        ]
    );
}

#[test]
fn the_same_image_twice_is_asked_once() {
    let f = plain_fixture();
    let before = f.reg.manifest_requests();
    let out = Sandbox::new().resolve(&[
        "--insecure-registry",
        &f.reg.host,
        &f.multi,
        &f.single,
        &f.multi,
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(
        &out,
        &[
            (&f.multi, &f.multi_digest),
            (&f.single, &f.single_digest),
            (&f.multi, &f.multi_digest),
        ],
    );
    let after = f
        .reg
        .wait_manifest_requests(before + 2, Duration::from_secs(2));
    assert_eq!(
        after - before,
        2,
        "one manifest request per unique image\n{}",
        f.reg.log_contents()
    );
}

#[test]
fn output_follows_argument_order_with_failures_mixed_in() {
    let f = plain_fixture();
    let missing = format!("{}/app/single:missing", f.reg.host);
    let invalid = "example.com/Bad";
    let args = [
        f.multi.as_str(),
        missing.as_str(),
        f.single.as_str(),
        invalid,
        f.multi.as_str(),
    ];
    let sb = Sandbox::new();

    let mut cli = vec!["--insecure-registry", f.reg.host.as_str()];
    cli.extend(args);
    let out = sb.resolve(&cli);
    assert_eq!(out.code, 2, "{out}");
    assert_pinned(
        &out,
        &[
            (&f.multi, &f.multi_digest),
            (&f.single, &f.single_digest),
            (&f.multi, &f.multi_digest),
        ],
    );
    assert!(out.failure(&missing).contains(": not found: "), "{out}");
    assert!(
        out.stderr
            .contains("staticpin: invalid image reference \"example.com/Bad\": "),
        "{out}"
    );
    assert!(out.stderr.contains("2 of 5 images failed"), "{out}");

    cli.insert(0, "json");
    cli.insert(0, "-o");
    let out = sb.resolve(&cli);
    assert_eq!(out.code, 2, "{out}");
    let items = out.json();
    assert_eq!(items.len(), 5, "one JSON item per argument\n{out}");
    for (item, arg) in items.iter().zip(args) {
        assert_eq!(item["image"], arg, "{out}");
    }
    for i in [0, 2, 4] {
        let mut keys: Vec<&str> = items[i]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["digest", "image", "mediaType", "pinned"], "{out}");
    }
    assert_eq!(items[0]["digest"], f.multi_digest.as_str());
    assert_eq!(items[2]["digest"], f.single_digest.as_str());
    for i in [1, 3] {
        let mut keys: Vec<&str> = items[i]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["error", "image", "kind", "registry"], "{out}");
    }
    assert_eq!(items[1]["kind"], "not found");
    assert_eq!(items[1]["registry"], f.reg.host.as_str());
    assert!(items[1]["error"].as_str().unwrap().contains(&missing));
    assert_eq!(items[3]["kind"], "invalid reference");
}

// ---------------------------------------------------------------------------
// TLS + Basic

#[test]
fn tls_basic_with_certs_dir_and_docker_config() {
    let f = basic_fixture();
    let sb = Sandbox::new();
    sb.trust(&f.reg.host, &f.pki);
    let cfg = sb.config("config.json", &[(&f.reg.host, USER, PASS)]);
    let out = sb.resolve(&["--docker-config", &cfg, &f.image]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(&out, &[(&f.image, &f.digest)]);
    out.assert_no_leak(&[PASS]);
}

#[test]
fn tls_basic_credentials_found_in_kubelet_root_dir() {
    let f = basic_fixture();
    let sb = Sandbox::new();
    sb.trust(&f.reg.host, &f.pki);
    docker_config(
        &sb.path("kubelet").join("config.json"),
        &[(&f.reg.host, USER, PASS)],
    );
    let out = sb.resolve(&[&f.image]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(&out, &[(&f.image, &f.digest)]);
}

#[test]
fn tls_basic_wrong_password_is_unauthorized_and_never_printed() {
    let f = basic_fixture();
    let sb = Sandbox::new();
    sb.trust(&f.reg.host, &f.pki);
    let cfg = sb.config("config.json", &[(&f.reg.host, USER, WRONG)]);
    let b64 = STANDARD.encode(format!("{USER}:{WRONG}"));
    let secrets = [WRONG, b64.as_str()];
    let check = |out: &Out| {
        assert_eq!(out.code, 2, "{out}");
        if !out.stdout.starts_with('[') {
            assert_eq!(out.stdout, "", "nothing pinned");
        }
        let line = out.failure(&f.image);
        assert!(
            line.contains(&format!("(registry {}): unauthorized: ", f.reg.host)),
            "{line}"
        );
        out.assert_no_leak(&secrets);
    };
    check(&sb.resolve(&["--docker-config", &cfg, &f.image]));
    let out = sb.resolve(&["--docker-config", &cfg, "-o", "json", &f.image]);
    check(&out);
    assert_eq!(out.json()[0]["kind"], "unauthorized", "{out}");

    // -vvv, with the config found by kubelet's search (so there is logging).
    docker_config(
        &sb.path("kubelet").join("config.json"),
        &[(&f.reg.host, USER, WRONG)],
    );
    let out = sb.resolve(&["-vvv", &f.image]);
    check(&out);
    assert!(
        out.stderr.contains("using registry credentials from"),
        "-vvv logs nothing?\n{out}"
    );

    // Trace logging of every crate (hyper, reqwest, rustls) leaks nothing either.
    let out = sb.resolve_env(&[("STATICPIN_LOG", "trace")], &["-vvv", &f.image]);
    check(&out);
    assert!(
        out.stderr.lines().count() > 10,
        "STATICPIN_LOG=trace logs little?\n{out}"
    );
}

#[test]
fn insecure_registry_skips_tls_verification() {
    let f = basic_fixture();
    let sb = Sandbox::new(); // no CA for the host anywhere
    let cfg = sb.config("config.json", &[(&f.reg.host, USER, PASS)]);
    let out = sb.resolve(&[
        "--insecure-registry",
        &f.reg.host,
        "--docker-config",
        &cfg,
        &f.image,
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(&out, &[(&f.image, &f.digest)]);
}

#[test]
fn kubelet_search_path_first_parsable_file_wins() {
    let f = basic_fixture();
    let host = f.reg.host.as_str();
    let sb = Sandbox::new();
    sb.trust(host, &f.pki);
    if Path::new("/.docker/config.json").exists() || Path::new("/.dockercfg").exists() {
        eprintln!("skipping: this machine has /.docker/config.json or /.dockercfg");
        return;
    }
    // Only a legacy .dockercfg in HOME (bare map, no "auths").
    let legacy = json!({host: {"auth": STANDARD.encode(format!("{USER}:{PASS}"))}});
    docker_config_raw(&sb.path("home").join(".dockercfg"), &legacy);
    let out = sb.resolve(&[&f.image]);
    assert_eq!(out.code, 0, "HOME/.dockercfg: {out}");
    assert_pinned(&out, &[(&f.image, &f.digest)]);

    // HOME/.docker/config.json comes before any .dockercfg.
    docker_config(
        &sb.path("home").join(".docker/config.json"),
        &[(host, USER, WRONG)],
    );
    let out = sb.resolve(&[&f.image]);
    assert_eq!(out.code, 2, "HOME/.docker/config.json should win: {out}");
    assert!(out.failure(&f.image).contains(": unauthorized: "), "{out}");

    // kubelet runs in `/`: a config.json in the caller's working directory
    // (perhaps one another user controls) is never read.
    docker_config(&sb.path("cwd").join("config.json"), &[(host, USER, PASS)]);
    let out = sb.resolve(&[&f.image]);
    assert_eq!(out.code, 2, "cwd/config.json must be ignored: {out}");
    assert!(out.failure(&f.image).contains(": unauthorized: "), "{out}");
    docker_config(
        &sb.path("home").join(".docker/config.json"),
        &[(host, USER, PASS)],
    );
    let out = sb.resolve(&[&f.image]);
    assert_eq!(out.code, 0, "HOME/.docker/config.json: {out}");

    // An unparsable file is skipped; the kubelet root dir comes first.
    std::fs::write(sb.path("kubelet").join("config.json"), "{ not json").unwrap();
    let out = sb.resolve(&[&f.image]);
    assert_eq!(
        out.code, 0,
        "unparsable kubelet config.json is skipped: {out}"
    );
    docker_config(
        &sb.path("kubelet").join("config.json"),
        &[(host, USER, WRONG)],
    );
    let out = sb.resolve(&[&f.image]);
    assert_eq!(
        out.code, 2,
        "kubelet root dir config.json should win: {out}"
    );
    out.assert_no_leak(&[WRONG, PASS]);
}

#[test]
fn malformed_docker_configs_never_echo_secrets() {
    let secret_b64 = STANDARD.encode("admin:Very-SECRET-9");
    let cases = [
        json!({"auths": {"reg.example": secret_b64}}),
        json!({"auths": {"reg.example": {"auth": 31415926535u64}}}),
        json!({"auths": {"reg.example": {"username": "u", "password": 27182818284u64}}}),
        json!({"auths": {"reg.example": {"username": "u", "password": ["Very-SECRET-9"]}}}),
        json!({"auths": [secret_b64]}),
        json!({"auths": {"reg.example": {"auth": STANDARD.encode("no-colon-Very-SECRET-9")}}}),
    ];
    let secrets = [
        secret_b64.as_str(),
        "Very-SECRET-9",
        "31415926535",
        "27182818284",
    ];
    let sb = Sandbox::new();
    for (i, value) in cases.iter().enumerate() {
        let cfg = sb.config_raw(&format!("c{i}.json"), value);
        // Named explicitly: a fatal error naming the file.
        let out = sb.resolve(&["--docker-config", &cfg, "127.0.0.1:1/app:v1"]);
        assert_eq!(out.code, 2, "{value}: {out}");
        assert!(out.stderr.contains(&cfg), "names the file: {out}");
        out.assert_no_leak(&secrets);
        // Found by kubelet's search: a warning, and the run goes on.
        docker_config_raw(&sb.path("kubelet").join("config.json"), value);
        let out = sb.resolve(&["-v", "example.com/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"]);
        assert_eq!(out.code, 0, "{value}: {out}");
        assert!(out.stderr.contains("skipping docker config"), "{out}");
        out.assert_no_leak(&secrets);
    }
    // Legacy .dockercfg: the bare map.
    std::fs::remove_file(sb.path("kubelet").join("config.json")).unwrap();
    docker_config_raw(
        &sb.path("kubelet").join(".dockercfg"),
        &json!({"reg.example": secret_b64}),
    );
    let out = sb.resolve(&[
        "-v",
        "example.com/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ]);
    assert!(out.stderr.contains(".dockercfg"), "{out}");
    out.assert_no_leak(&secrets);
}

#[test]
fn tls_untrusted_ca_is_a_tls_error() {
    let f = basic_fixture();
    let other = Pki::new(f._tmp.path(), "unrelated-ca");
    let sb = Sandbox::new();
    sb.trust(&f.reg.host, &other);
    let cfg = sb.config("config.json", &[(&f.reg.host, USER, PASS)]);
    let before = f.reg.manifest_requests();
    let out = sb.resolve(&["--docker-config", &cfg, &f.image]);
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.stdout, "");
    assert!(out.failure(&f.image).contains(": TLS error: "), "{out}");
    assert_eq!(f.reg.manifest_requests(), before);
    out.assert_no_leak(&[PASS]);

    // No CA at all for the host: the system roots do not know the test CA.
    let sb = Sandbox::new();
    let out = sb.resolve(&["--docker-config", &cfg, &f.image]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.failure(&f.image).contains(": TLS error: "), "{out}");
}

#[test]
fn tls_basic_without_credentials_is_unauthorized() {
    let f = basic_fixture();
    let sb = Sandbox::new();
    sb.trust(&f.reg.host, &f.pki);
    let out = sb.resolve(&[&f.image]);
    assert_eq!(out.code, 2, "{out}");
    let line = out.failure(&f.image);
    assert!(line.contains(": unauthorized: "), "{line}");
    assert!(
        line.contains("no credentials"),
        "should say none matched: {line}"
    );
}

// ---------------------------------------------------------------------------
// kubelet credential matching (real Basic registry, several entries per file)

/// Entries that must never match `127.0.0.1:PORT/team/app`.
fn decoys(host: &str) -> Vec<(String, &'static str, &'static str)> {
    vec![
        ("https://index.docker.io/v1/".to_string(), "hub", "hub-pw"),
        ("registry.example.com".to_string(), "ex", "ex-pw"),
        (format!("{host}/other"), "other", "other-pw"),
    ]
}

fn with_decoys<'a>(
    host: &str,
    entries: &[(&'a str, &'a str, &'a str)],
) -> Vec<(String, String, String)> {
    let mut all: Vec<(String, String, String)> = entries
        .iter()
        .map(|(k, u, p)| (k.to_string(), u.to_string(), p.to_string()))
        .collect();
    all.extend(
        decoys(host)
            .into_iter()
            .map(|(k, u, p)| (k, u.to_string(), p.to_string())),
    );
    all
}

fn config_of(sb: &Sandbox, name: &str, entries: &[(String, String, String)]) -> String {
    let refs: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|(k, u, p)| (k.as_str(), u.as_str(), p.as_str()))
        .collect();
    sb.config(name, &refs)
}

fn manifest_statuses(reg: &Registry) -> Vec<u16> {
    reg.access_log()
        .iter()
        .filter(|e| e.path.contains("/manifests/") && (e.method == "HEAD" || e.method == "GET"))
        .map(|e| e.status)
        .collect()
}

/// kubelet tries each matching docker-config entry, most specific path
/// first: a right `/team` entry means the wrong host-wide one is never
/// sent; a wrong one is answered 401 and the host-wide one follows.
#[test]
fn credential_entries_are_tried_most_specific_first() {
    let f = basic_fixture();
    let team = format!("{}/team", f.reg.host);
    for (team_pass, host_pass, statuses) in
        [(PASS, WRONG, &[200][..]), (WRONG, PASS, &[401, 200][..])]
    {
        let sb = Sandbox::new();
        sb.trust(&f.reg.host, &f.pki);
        let cfg = config_of(
            &sb,
            "c.json",
            &with_decoys(
                &f.reg.host,
                &[(&team, USER, team_pass), (&f.reg.host, USER, host_pass)],
            ),
        );
        let before = manifest_statuses(&f.reg).len();
        let out = sb.resolve(&["--docker-config", &cfg, &f.image]);
        assert_eq!(out.code, 0, "{out}");
        assert_pinned(&out, &[(&f.image, &f.digest)]);
        out.assert_no_leak(&[WRONG, PASS]);
        f.reg
            .wait_manifest_requests(before + statuses.len(), Duration::from_secs(2));
        assert_eq!(
            manifest_statuses(&f.reg)[before..],
            *statuses,
            "team entry {team_pass:?}, host entry {host_pass:?}"
        );
    }
}

#[test]
fn per_label_glob_key_matches() {
    let f = basic_fixture();
    let sb = Sandbox::new();
    sb.trust(&f.reg.host, &f.pki);
    let glob = format!("127.0.0.*:{}", f.reg.port);
    let cfg = config_of(
        &sb,
        "c.json",
        &with_decoys(&f.reg.host, &[(&glob, USER, PASS)]),
    );
    let out = sb.resolve(&["--docker-config", &cfg, &f.image]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(&out, &[(&f.image, &f.digest)]);

    // A glob for the wrong label count does not match.
    let bad_glob = format!("127.*:{}", f.reg.port);
    let cfg = config_of(
        &sb,
        "c2.json",
        &with_decoys(&f.reg.host, &[(&bad_glob, USER, PASS)]),
    );
    let out = sb.resolve(&["--docker-config", &cfg, &f.image]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.failure(&f.image).contains(": unauthorized: "), "{out}");
}

#[test]
fn key_with_another_port_or_no_port_does_not_match() {
    let f = basic_fixture();
    let sb = Sandbox::new();
    sb.trust(&f.reg.host, &f.pki);
    let other_port = format!(
        "127.0.0.1:{}",
        if f.reg.port == 65535 {
            1
        } else {
            f.reg.port + 1
        }
    );
    for key in [other_port.as_str(), "127.0.0.1", "https://127.0.0.1"] {
        let cfg = config_of(
            &sb,
            "c.json",
            &with_decoys(&f.reg.host, &[(key, USER, PASS)]),
        );
        let out = sb.resolve(&["--docker-config", &cfg, &f.image]);
        assert_eq!(out.code, 2, "key {key}: {out}");
        let line = out.failure(&f.image);
        assert!(
            line.contains(": unauthorized: ") && line.contains("no credentials"),
            "key {key}: {line}"
        );
    }
}

#[test]
fn key_spellings_with_scheme_and_v2_suffix_match() {
    let f = basic_fixture();
    let sb = Sandbox::new();
    sb.trust(&f.reg.host, &f.pki);
    for key in [
        format!("https://{}", f.reg.host),
        format!("https://{}/v2/", f.reg.host),
    ] {
        let cfg = config_of(&sb, "c.json", &[(key.clone(), USER.into(), PASS.into())]);
        let out = sb.resolve(&["--docker-config", &cfg, &f.image]);
        assert_eq!(out.code, 0, "key {key}: {out}");
        assert_pinned(&out, &[(&f.image, &f.digest)]);
    }
}

#[test]
fn auth_field_padded_unpadded_and_username_password() {
    let f = basic_fixture();
    let sb = Sandbox::new();
    sb.trust(&f.reg.host, &f.pki);
    let padded = STANDARD.encode(format!("{USER}:{PASS}"));
    let unpadded = STANDARD_NO_PAD.encode(format!("{USER}:{PASS}"));
    assert!(
        padded.ends_with('=') && !unpadded.ends_with('='),
        "fixture must exercise padding"
    );
    let decoy = json!({"auth": STANDARD.encode("hub:hub-pw")});
    let shapes = [
        ("padded auth", json!({"auth": padded})),
        ("unpadded auth", json!({"auth": unpadded})),
        (
            "username/password",
            json!({"username": USER, "password": PASS}),
        ),
    ];
    for (what, entry) in shapes {
        let cfg = sb.config_raw(
            "c.json",
            &json!({"auths": {
                "https://index.docker.io/v1/": decoy,
                (f.reg.host.clone()): entry,
                "quay.io": {"username": "q", "password": "q-pw"},
            }}),
        );
        let out = sb.resolve(&["--docker-config", &cfg, &f.image]);
        assert_eq!(out.code, 0, "{what}: {out}");
        assert_pinned(&out, &[(&f.image, &f.digest)]);
        out.assert_no_leak(&[PASS, &padded]);
    }
}

// ---------------------------------------------------------------------------
// Token auth

const SERVICE: &str = "staticpin-test-registry";
const ISSUER: &str = "staticpin-test-issuer";
const TOKEN_USER: &str = "bob";
const TOKEN_PASS: &str = "t0ken-user-pass";

/// Token issuer + TLS registry with `team/app:v1` and `:v2` (multi-arch).
struct TokenFixture {
    _tmp: tempfile::TempDir,
    pki: Pki,
    issuer: TokenIssuer,
    reg: Registry,
    v1: String,
    v1_digest: String,
    v2: String,
    v2_digest: String,
}

fn token_fixture(allow_anonymous: bool) -> TokenFixture {
    let tmp = tmpdir();
    let pki = Pki::new(tmp.path(), "registry-ca");
    let issuer = TokenIssuer::start(
        &tmp.path().join("issuer"),
        SERVICE,
        ISSUER,
        &[(TOKEN_USER, TOKEN_PASS)],
        allow_anonymous,
    );
    let reg = Registry::token(&tmp.path().join("storage"), &issuer, Some(&pki));
    let dir = tmp.path().join("layout");
    let creds = Some((TOKEN_USER, TOKEN_PASS));
    Layout::index(&dir, "v1", &["amd64", "arm64"], "token-v1").push(&reg, "team/app", "v1", creds);
    Layout::index(&dir, "v2", &["amd64", "arm64"], "token-v2").push(&reg, "team/app", "v2", creds);
    let v1_digest = oracle_digest(&reg, "team/app", "v1", creds);
    let v2_digest = oracle_digest(&reg, "team/app", "v2", creds);
    assert_ne!(v1_digest, v2_digest);
    TokenFixture {
        v1: format!("{}/team/app:v1", reg.host),
        v2: format!("{}/team/app:v2", reg.host),
        v1_digest,
        v2_digest,
        _tmp: tmp,
        pki,
        issuer,
        reg,
    }
}

impl TokenFixture {
    fn sandbox(&self) -> Sandbox {
        let sb = Sandbox::new();
        sb.trust(&self.reg.host, &self.pki);
        sb
    }
}

#[test]
fn token_auth_with_credentials() {
    let f = token_fixture(false);
    let sb = f.sandbox();
    let cfg = sb.config("config.json", &[(&f.reg.host, TOKEN_USER, TOKEN_PASS)]);
    let seen = f.issuer.request_log().len();
    let out = sb.resolve(&["--docker-config", &cfg, &f.v1]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(&out, &[(&f.v1, &f.v1_digest)]);
    out.assert_no_leak(&[TOKEN_PASS]);
    let log = f.issuer.request_log();
    let ours = &log[seen..];
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0].user.as_deref(), Some(TOKEN_USER));
    assert_eq!(ours[0].service.as_deref(), Some(SERVICE));
    assert_eq!(ours[0].scopes, ["repository:team/app:pull"]);
    assert_eq!(ours[0].status, 200);
}

#[test]
fn token_auth_anonymous() {
    let f = token_fixture(true);
    let sb = f.sandbox();
    let seen = f.issuer.request_log().len();
    let out = sb.resolve(&[&f.v1]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(&out, &[(&f.v1, &f.v1_digest)]);
    let log = f.issuer.request_log();
    assert!(!log[seen..].is_empty());
    assert!(
        log[seen..]
            .iter()
            .all(|r| r.user.is_none() && r.status == 200),
        "{:?}",
        &log[seen..]
    );
}

#[test]
fn token_auth_anonymous_refused_is_unauthorized() {
    let f = token_fixture(false);
    let out = f.sandbox().resolve(&[&f.v1]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.failure(&f.v1).contains(": unauthorized: "), "{out}");
}

#[test]
fn token_auth_wrong_password_is_unauthorized_and_never_printed() {
    let f = token_fixture(false);
    let sb = f.sandbox();
    let cfg = sb.config("config.json", &[(&f.reg.host, TOKEN_USER, WRONG)]);
    let b64 = STANDARD.encode(format!("{TOKEN_USER}:{WRONG}"));
    for (env, args) in [
        (vec![], vec!["--docker-config", &cfg, &f.v1]),
        (
            vec![("STATICPIN_LOG", "trace")],
            vec!["-vvv", "--docker-config", &cfg, &f.v1],
        ),
    ] {
        let out = sb.resolve_env(&env, &args);
        assert_eq!(out.code, 2, "{out}");
        assert_eq!(out.stdout, "");
        let line = out.failure(&f.v1);
        assert!(
            line.contains(&format!("(registry {}): unauthorized: ", f.reg.host)),
            "{line}"
        );
        out.assert_no_leak(&[WRONG, &b64]);
    }
}

#[test]
fn token_is_fetched_once_for_two_tags_of_one_repository_sequentially() {
    let f = token_fixture(false);
    let sb = f.sandbox();
    let cfg = sb.config("config.json", &[(&f.reg.host, TOKEN_USER, TOKEN_PASS)]);
    let before = f.issuer.requests();
    let out = sb.resolve(&["--concurrency", "1", "--docker-config", &cfg, &f.v1, &f.v2]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(&out, &[(&f.v1, &f.v1_digest), (&f.v2, &f.v2_digest)]);
    assert_eq!(
        f.issuer.requests() - before,
        1,
        "{:?}",
        f.issuer.request_log()
    );
}

#[test]
fn token_is_fetched_once_for_two_tags_of_one_repository() {
    let f = token_fixture(false);
    let sb = f.sandbox();
    let cfg = sb.config("config.json", &[(&f.reg.host, TOKEN_USER, TOKEN_PASS)]);
    let before = f.issuer.requests();
    let out = sb.resolve(&["--docker-config", &cfg, &f.v1, &f.v2]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(&out, &[(&f.v1, &f.v1_digest), (&f.v2, &f.v2_digest)]);
    out.assert_no_leak(&[TOKEN_PASS]);
    assert_eq!(
        f.issuer.requests() - before,
        1,
        "two tags of one repository must share one token\n{:?}",
        &f.issuer.request_log()[before..]
    );
}

#[test]
fn redirect_to_a_token_registry_is_answered_only_anonymously() {
    // Another origin redirects to the real token registry. The credentials
    // configured for that origin are valid at the issuer too, so sending
    // them there would "work": the issuer's log proves they never arrive.
    let f = token_fixture(true);
    let origin = FaultServer::start(vec![FaultStep::status(500)]);
    origin.set_script(vec![
        FaultStep::unauthorized(r#"Basic realm="origin""#),
        FaultStep::redirect(
            307,
            &format!("https://{}/v2/team/app/manifests/v1", f.reg.host),
        ),
    ]);
    let sb = f.sandbox();
    let ns = sb.certs().join(&origin.host);
    std::fs::create_dir_all(&ns).unwrap();
    std::fs::write(
        ns.join("hosts.toml"),
        format!("server = \"http://{}\"\n", origin.host),
    )
    .unwrap();
    let cfg = sb.config("config.json", &[(&origin.host, TOKEN_USER, TOKEN_PASS)]);
    let image = format!("{}/team/app:v1", origin.host);
    let seen = f.issuer.request_log().len();
    let out = sb.resolve(&["--docker-config", &cfg, &image]);
    assert_eq!(out.code, 0, "{out}");
    assert_pinned(&out, &[(&image, &f.v1_digest)]);
    let log = f.issuer.request_log();
    assert!(!log[seen..].is_empty());
    assert!(
        log[seen..].iter().all(|r| r.user.is_none()),
        "{:?}",
        &log[seen..]
    );

    f.issuer.set_allow_anonymous(false);
    let seen = f.issuer.request_log().len();
    let image = format!("{}/team/app:v2", origin.host);
    let out = sb.resolve(&["--docker-config", &cfg, &image]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.failure(&image).contains(": unauthorized: "), "{out}");
    assert!(
        f.issuer.request_log()[seen..]
            .iter()
            .all(|r| r.user.is_none()),
        "{:?}",
        f.issuer.request_log()
    );
    out.assert_no_leak(&[TOKEN_PASS]);
}

// ---------------------------------------------------------------------------
// CLI surface

#[test]
fn help_and_version() {
    let sb = Sandbox::new();
    let out = sb.raw(&["--version"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout.trim(),
        format!("staticpin {}", env!("CARGO_PKG_VERSION"))
    );
    let out = sb.raw(&["--help"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("resolve"), "{out}");
    let out = sb.raw(&["resolve", "--help"]);
    assert_eq!(out.code, 0, "{out}");
    for flag in [
        "--docker-config",
        "--kubelet-root-dir",
        "--certs-dir",
        "--insecure-registry",
        "--timeout",
        "--connect-timeout",
        "--retries",
        "--concurrency",
        "--deadline",
        "--output",
    ] {
        assert!(
            out.stdout.contains(flag),
            "resolve --help lacks {flag}\n{out}"
        );
    }
}

#[test]
fn invalid_references_are_rejected_naming_the_reference() {
    let sb = Sandbox::new();
    for bad in [
        "example.com/Bad",
        "nginx:-x",
        "example.com/app:v1@sha256:abc",
    ] {
        let out = sb.resolve(&[bad]);
        assert_eq!(out.code, 2, "{bad}: {out}");
        assert_eq!(out.stdout, "", "{bad}: {out}");
        let quoted = format!("invalid image reference {bad:?}: ");
        assert!(out.stderr.contains(&quoted), "{bad}: {out}");
    }
    let out = sb.resolve(&["example.com/Bad"]);
    assert!(
        out.stderr.contains("\"Bad\"") && out.stderr.contains("lowercase"),
        "says what is wrong\n{out}"
    );
    // Argument errors are exit 2 as well (clap's usage error code).
    let out = sb.resolve(&[]);
    assert_eq!(out.code, 2, "{out}");
}
