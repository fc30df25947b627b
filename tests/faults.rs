//! `staticpin resolve` against a scripted fault server: the registry
//! misbehaviours a real `docker-registry` will not produce on demand
//! (missing or lying digest headers, 5xx, 429, hangs, resets, malformed
//! challenges).
//!
//! The resolver always probes `https://HOST/v2/` first and falls back to
//! plain HTTP for `--insecure-registry` hosts only when that TLS handshake
//! fails. `FaultServer` waits for a complete HTTP head (`\r\n\r\n`), which a
//! TLS ClientHello never contains, so on its own it would leave the probe
//! hanging until `--timeout`. Each test therefore puts a small [`Front`] in
//! front of it: a connection that starts with a TLS record gets the
//! `400 Bad Request` a real plain-HTTP server (Go's net/http) sends, and
//! every other connection is relayed to the fault server byte for byte,
//! including resets. The scripts below hence start with the `GET /v2/`
//! step.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use support::cli::{Out, Sandbox};
use support::http::Server;
use support::*;

// ---------------------------------------------------------------------------
// Harness

/// Relays plain HTTP to a `FaultServer`; answers TLS ClientHellos with 400.
struct Front {
    /// "127.0.0.1:PORT" — the registry host the CLI is pointed at.
    host: String,
    hellos: Arc<AtomicUsize>,
    _server: Server,
}

impl Front {
    fn start(upstream: &str) -> Front {
        let hellos = Arc::new(AtomicUsize::new(0));
        let server = {
            let (hellos, upstream) = (hellos.clone(), upstream.to_string());
            Server::start("front", move |stream, _| relay(stream, &upstream, &hellos))
        };
        Front {
            host: server.host.clone(),
            hellos,
            _server: server,
        }
    }

    /// TLS handshakes attempted against this host so far.
    fn tls_hellos(&self) -> usize {
        self.hellos.load(Ordering::SeqCst)
    }
}

fn relay(mut client: TcpStream, upstream: &str, hellos: &AtomicUsize) {
    client.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut buf = vec![0u8; 64 * 1024];
    // Peek, don't consume: if the upstream resets, dropping the client with
    // its request unread makes the kernel reset the client connection too.
    let head_len = loop {
        let n = match client.peek(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if buf[0] == 0x16 {
            // A TLS handshake record: answer like a plain-HTTP server.
            hellos.fetch_add(1, Ordering::SeqCst);
            let _ = client.read(&mut buf);
            let _ = client.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = client.shutdown(Shutdown::Write);
            // Drain until the client gives up, so closing never sends an RST
            // that could overtake the 400.
            client.set_read_timeout(Some(Duration::from_secs(2))).ok();
            while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
            return;
        }
        if let Some(p) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if n == buf.len() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    if up.write_all(&buf[..head_len]).is_err() {
        return;
    }
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match up.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if client.write_all(&chunk[..n]).is_err() {
                    return;
                }
            }
            // Upstream reset: return without consuming → RST to the client.
            Err(_) => return,
        }
    }
    let mut head = vec![0u8; head_len];
    let _ = client.read_exact(&mut head);
    let _ = client.shutdown(Shutdown::Write);
}

/// A fault server behind a [`Front`].
struct Faulty {
    server: FaultServer,
    front: Front,
}

impl Faulty {
    /// `script` starts with the answer to the plain-HTTP `GET /v2/` probe.
    fn start(script: Vec<FaultStep>) -> Faulty {
        let server = FaultServer::start(script);
        let front = Front::start(&server.host);
        Faulty { server, front }
    }

    fn host(&self) -> &str {
        &self.front.host
    }

    fn image(&self, repo_tag: &str) -> String {
        format!("{}/{}", self.front.host, repo_tag)
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Manifest requests of any method (HEAD or GET) so far.
    fn manifest_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.contains("/manifests/"))
            .count()
    }

    fn log(&self) -> String {
        self.requests()
            .iter()
            .map(|r| format!("  step {}: {} {}", r.step, r.method, r.path))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A small but real OCI manifest body (what the fault server "stores").
fn manifest_body() -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": format!("sha256:{}", "a".repeat(64)), "size": 2},
        "layers": [],
    }))
    .unwrap()
}

fn v2_ok() -> FaultStep {
    FaultStep::respond(200, &[("Content-Type", "application/json")], b"{}")
}

// ---------------------------------------------------------------------------
// Digest header handling

#[test]
fn digest_is_the_hash_of_the_manifest_bytes_received() {
    let body = manifest_body();
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, None),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, None),
        FaultStep::status(500),
    ]);
    let image = f.image("app/x:v1");
    let sb = Sandbox::new();
    let out = sb.resolve(&["--insecure-registry", f.host(), "-o", "json", &image]);
    assert_eq!(out.code, 0, "{out}\n{}", f.log());
    let want = sha256_digest(&body);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json[0]["digest"], want.as_str());
    assert_eq!(json[0]["pinned"], format!("{image}@{want}").as_str());
    assert_eq!(json[0]["mediaType"], MT_OCI_MANIFEST);
    assert!(f.manifest_requests() <= 2, "{}", f.log());
    let get = f
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.path.contains("/manifests/"))
        .expect("the bytes must be fetched to be hashed");
    let accept = get.header("accept").unwrap_or_default().to_string();
    for mt in [
        MT_OCI_INDEX,
        MT_OCI_MANIFEST,
        MT_DOCKER_LIST,
        MT_DOCKER_MANIFEST,
    ] {
        assert!(accept.contains(mt), "GET Accept lacks {mt}: {accept}");
    }
    assert_eq!(f.front.tls_hellos(), 1, "one TLS probe, then plain HTTP");
}

/// Runs one resolve against a registry that answers every manifest request
/// with `step`; returns the output and the image.
fn resolve_against(step: FaultStep) -> (Faulty, Out, String) {
    let f = Faulty::start(vec![v2_ok(), step]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    (f, out, image)
}

/// Exit 2, nothing pinned, a failure line of `kind` naming the registry.
fn assert_refused<'a>(f: &Faulty, out: &'a Out, image: &str, kind: &str) -> &'a str {
    assert_eq!(out.code, 2, "{out}\n{}", f.log());
    assert_eq!(out.stdout, "", "nothing may be pinned\n{out}");
    let line = out.failure(image);
    assert!(
        line.contains(&format!("(registry {}): {kind}: ", f.host())),
        "{line}"
    );
    assert!(f.manifest_requests() <= 2, "{}", f.log());
    line
}

#[test]
fn head_digest_for_bytes_the_registry_does_not_serve_is_never_pinned() {
    let body = manifest_body();
    let lie = format!("sha256:{}", "c".repeat(64));
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::by_method(
            FaultStep::manifest(b"", MT_OCI_MANIFEST, Some(&lie)),
            FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&sha256_digest(&body))),
        ),
    ]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert!(!out.stdout.contains(&lie), "pinned the HEAD's lie\n{out}");
    assert_eq!(out.code, 0, "{out}\n{}", f.log());
    assert_eq!(
        out.stdout.trim(),
        format!("{image}@{}", sha256_digest(&body)),
        "the digest of the bytes GET served"
    );
    assert!(f.manifest_requests() <= 2, "{}", f.log());
}

#[test]
fn get_whose_digest_header_disagrees_with_the_body_is_refused() {
    let body = manifest_body();
    let lie = format!("sha256:{}", "b".repeat(64));
    let step = FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&lie));
    let (f, out, image) = resolve_against(FaultStep::by_method(step.clone(), step));
    let line = assert_refused(&f, &out, &image, "bad digest");
    assert!(
        line.contains(&lie) && line.contains(&sha256_digest(&body)),
        "{line}"
    );
}

#[test]
fn two_digest_headers_are_refused() {
    let body = manifest_body();
    let good = sha256_digest(&body);
    let other = format!("sha256:{}", "d".repeat(64));
    for pair in [[&good, &other], [&other, &good], [&good, &good]] {
        let step = FaultStep::respond(
            200,
            &[
                ("Content-Type", MT_OCI_MANIFEST),
                ("Docker-Content-Digest", pair[0]),
                ("Docker-Content-Digest", pair[1]),
            ],
            &body,
        );
        let (f, out, image) = resolve_against(step);
        let line = assert_refused(&f, &out, &image, "bad digest");
        assert!(line.contains("Docker-Content-Digest"), "{line}");
    }
}

#[test]
fn malformed_digest_header_is_refused() {
    let body = manifest_body();
    for bad in [
        "sha256:not-hex".to_string(),
        format!("{},{}", sha256_digest(&body), sha256_digest(b"x")),
    ] {
        let (f, out, image) =
            resolve_against(FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&bad)));
        assert_refused(&f, &out, &image, "bad digest");
    }
}

#[test]
fn html_error_page_with_200_is_not_a_manifest() {
    // Long, multi-byte, and a quote near the cut: the excerpt must be short
    // and cut on a character boundary.
    let mut page = String::from("<!DOCTYPE html><html><body><h1>Proxy login ✓</h1>");
    while page.len() < 8000 {
        page.push_str("ünïcödé “quoted” text ");
    }
    page.push_str("</body></html>");
    for (content_type, digest) in [
        ("text/html; charset=utf-8", None),
        (MT_OCI_MANIFEST, Some(sha256_digest(page.as_bytes()))),
    ] {
        let (f, out, image) = resolve_against(FaultStep::manifest(
            page.as_bytes(),
            content_type,
            digest.as_deref(),
        ));
        let line = assert_refused(&f, &out, &image, "protocol error");
        assert!(line.contains("not a manifest"), "{line}");
        assert!(line.contains("<!DOCTYPE html>"), "quotes the start: {line}");
        assert!(
            line.len() < 700,
            "quoted body not cut ({} bytes): {line}",
            line.len()
        );
    }
}

#[test]
fn json_that_is_no_manifest_is_refused() {
    let errors =
        br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
    for (body, ct) in [
        (errors.to_vec(), "application/json"),
        (errors.to_vec(), MT_OCI_MANIFEST),
        // An index served as a manifest: the shape and the type disagree.
        (
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "manifests": []}))
                .unwrap(),
            MT_OCI_MANIFEST,
        ),
        // The body says index, the header says manifest.
        (
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}))
                .unwrap(),
            MT_OCI_MANIFEST,
        ),
        // Neither the body nor the header says what it is.
        (
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": []})).unwrap(),
            "application/json",
        ),
    ] {
        let digest = sha256_digest(&body);
        let (f, out, image) = resolve_against(FaultStep::manifest(&body, ct, Some(&digest)));
        let line = assert_refused(&f, &out, &image, "protocol error");
        assert!(line.contains("manifest"), "{line}");
    }
}

#[test]
fn schema1_manifests_are_refused() {
    let body = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 1,
        "name": "app/x",
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": format!("sha256:{}", "a".repeat(64))}],
        "history": [{"v1Compatibility": "{}"}],
        "signatures": [],
    }))
    .unwrap();
    for ct in [
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/json",
    ] {
        let digest = sha256_digest(&body);
        let (f, out, image) = resolve_against(FaultStep::manifest(&body, ct, Some(&digest)));
        let line = assert_refused(&f, &out, &image, "protocol error");
        assert!(line.contains("schema 1"), "{line}");
    }
}

#[test]
fn sha512_digests_are_verified_and_then_refused() {
    use sha2::Digest as _;
    let body = manifest_body();
    let hex: String = sha2::Sha512::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let honest = format!("sha512:{hex}");
    let (f, out, image) =
        resolve_against(FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&honest)));
    let line = assert_refused(&f, &out, &image, "protocol error");
    assert!(line.contains("sha512") && line.contains("sha256"), "{line}");

    let lie = format!("sha512:{}", "e".repeat(128));
    let (f, out, image) = resolve_against(FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&lie)));
    let line = assert_refused(&f, &out, &image, "bad digest");
    assert!(line.contains(&lie), "{line}");
}

// ---------------------------------------------------------------------------
// Retries

#[test]
fn server_error_then_success_is_retried() {
    let body = manifest_body();
    let digest = sha256_digest(&body);
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::status(500),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&digest)),
        FaultStep::status(500),
    ]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 0, "{out}\n{}", f.log());
    assert_eq!(out.stdout.trim(), format!("{image}@{digest}"));
    let asked: Vec<usize> = f
        .requests()
        .iter()
        .filter(|r| r.path == "/v2/app/x/manifests/v1")
        .map(|r| r.step)
        .collect();
    assert_eq!(
        asked,
        [1, 2],
        "answered 500, then retried and answered 200\n{}",
        f.log()
    );
}

#[test]
fn server_errors_exhaust_the_retry_budget() {
    let f = Faulty::start(vec![v2_ok(), FaultStep::status(503)]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), "--retries", "2", &image]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.failure(&image).contains(": server error: "), "{out}");
    assert_eq!(
        f.manifest_requests(),
        3,
        "first attempt + 2 retries\n{}",
        f.log()
    );
}

#[test]
fn rate_limited_with_short_retry_after_waits_and_succeeds() {
    let body = manifest_body();
    let digest = sha256_digest(&body);
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::respond(429, &[("Retry-After", "1")], b""),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&digest)),
        FaultStep::status(500),
    ]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 0, "{out}\n{}", f.log());
    assert_eq!(out.stdout.trim(), format!("{image}@{digest}"));
    assert!(
        out.elapsed >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {out}"
    );
    assert_eq!(f.manifest_requests(), 2, "{}", f.log());
}

#[test]
fn rate_limited_with_long_retry_after_fails_fast() {
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::respond(429, &[("Retry-After", "3600")], b""),
    ]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 2, "{out}");
    let line = out.failure(&image);
    assert!(line.contains(": rate limited: "), "{line}");
    assert!(
        line.contains("3600"),
        "the wait asked for should be named: {line}"
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "should give up at once: {out}"
    );
    assert_eq!(f.manifest_requests(), 1, "{}", f.log());
}

#[test]
fn connection_reset_then_success_is_retried() {
    let body = manifest_body();
    let digest = sha256_digest(&body);
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::Reset,
        FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&digest)),
        FaultStep::status(500),
    ]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 0, "{out}\n{}", f.log());
    assert_eq!(out.stdout.trim(), format!("{image}@{digest}"));
    let asked: Vec<usize> = f
        .requests()
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .map(|r| r.step)
        .collect();
    assert_eq!(asked, [1, 2], "reset request retried\n{}", f.log());
}

// ---------------------------------------------------------------------------
// Timeouts

#[test]
fn hanging_registry_times_out() {
    let f = Faulty::start(vec![v2_ok(), FaultStep::Hang(Duration::from_secs(60))]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), "--timeout", "1", &image]);
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.stdout, "");
    let line = out.failure(&image);
    assert!(line.contains(": timeout: "), "{line}");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}: {out}",
        out.elapsed
    );
    assert_eq!(
        f.manifest_requests(),
        1,
        "timeouts are not retried\n{}",
        f.log()
    );
}

// ---------------------------------------------------------------------------
// Auth challenges

#[test]
fn malformed_www_authenticate_on_probe_is_a_protocol_error() {
    let f = Faulty::start(vec![FaultStep::unauthorized(r#"Bearer service="x""#)]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 2, "{out}");
    let line = out.failure(&image);
    assert!(line.contains(": protocol error: "), "{line}");
    assert!(line.contains("WWW-Authenticate"), "{line}");
    assert_eq!(f.manifest_requests(), 0, "{}", f.log());
}

#[test]
fn malformed_www_authenticate_on_manifest_is_a_protocol_error() {
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::unauthorized(r#"Bearer service="x""#),
    ]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 2, "{out}");
    let line = out.failure(&image);
    assert!(
        line.contains(": protocol error: ") && line.contains("WWW-Authenticate"),
        "{line}"
    );
    assert_eq!(f.manifest_requests(), 1, "{}", f.log());
}

#[test]
fn not_found_is_not_retried() {
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::json(
            404,
            &serde_json::json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}),
        ),
        FaultStep::status(500),
    ]);
    let image = f.image("app/x:missing");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 2, "{out}");
    let line = out.failure(&image);
    assert!(line.contains(": not found: "), "{line}");
    assert!(line.contains(&format!("(registry {})", f.host())), "{line}");
    assert_eq!(
        f.manifest_requests(),
        1,
        "404 must not be retried\n{}",
        f.log()
    );
}

#[test]
fn rejected_basic_credentials_are_not_retried_nor_printed() {
    let user = "carol";
    let pass = "fault-SECRET-pw-71";
    let f = Faulty::start(vec![FaultStep::unauthorized(r#"Basic realm="test""#)]);
    let image = f.image("app/x:v1");
    let sb = Sandbox::new();
    let cfg = sb.path("config.json");
    docker_config(&cfg, &[(f.host(), user, pass)]);
    let out = sb.resolve(&[
        "--insecure-registry",
        f.host(),
        "--docker-config",
        cfg.to_str().unwrap(),
        "-vvv",
        &image,
    ]);
    assert_eq!(out.code, 2, "{out}");
    let line = out.failure(&image);
    assert!(line.contains(": unauthorized: "), "{line}");
    let heads: Vec<RecordedRequest> = f
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/manifests/"))
        .collect();
    assert_eq!(heads.len(), 1, "401 must not be retried\n{}", f.log());
    let want = format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
    assert_eq!(
        heads[0].header("authorization"),
        Some(want.as_str()),
        "credentials were sent"
    );
    let b64 = STANDARD.encode(format!("{user}:{pass}"));
    for leak in [pass, b64.as_str()] {
        assert!(
            !out.stdout.contains(leak) && !out.stderr.contains(leak),
            "secret leaked:\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------
// Redirects: credentials, headers and client certificates stay with their origin

const A_USER: &str = "alice";
const A_PASS: &str = "origin-SECRET-pw-42";
const A_HEADER: &str = "HOSTS-TOML-SECRET-7";

/// A plain-HTTP second origin that records what it is sent.
fn other_origin() -> FaultServer {
    FaultServer::start(vec![FaultStep::status(500)])
}

/// No request `to` received carries anything of the origin's secrets.
fn assert_nothing_of_origin_reached(to: &FaultServer) {
    let basic = STANDARD.encode(format!("{A_USER}:{A_PASS}"));
    for r in to.requests() {
        let all = format!("{:?}", r.headers);
        for secret in [A_PASS, basic.as_str(), A_HEADER] {
            assert!(!all.contains(secret), "{secret} reached {}: {r:?}", to.host);
        }
        assert!(
            r.header("referer").is_none(),
            "a Referer reached {}: {r:?}",
            to.host
        );
    }
}

#[test]
fn cross_origin_redirect_target_challenge_never_gets_the_registry_credentials() {
    let b = other_origin();
    let body = manifest_body();
    let digest = sha256_digest(&body);
    b.set_script(vec![
        FaultStep::unauthorized(&format!(
            r#"Bearer realm="http://{}/token",service="other""#,
            b.host
        )),
        FaultStep::json(200, &serde_json::json!({"token": "token-of-b"})),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&digest)),
    ]);
    let target = format!("{}/v2/app/x/manifests/v1", b.url());
    let f = Faulty::start(vec![
        FaultStep::unauthorized(r#"Basic realm="a""#),
        FaultStep::redirect(307, &target),
    ]);
    let image = f.image("app/x:v1");
    let sb = Sandbox::new();
    let cfg = sb.config("config.json", &[(f.host(), A_USER, A_PASS)]);
    let out = sb.resolve(&[
        "--insecure-registry",
        f.host(),
        "--insecure-registry",
        &b.host,
        "--docker-config",
        &cfg,
        &image,
    ]);
    assert_nothing_of_origin_reached(&b);
    let at_a = f
        .requests()
        .into_iter()
        .find(|r| r.path.contains("/manifests/"))
        .expect("asked the registry");
    assert!(
        at_a.header("authorization")
            .is_some_and(|a| a.starts_with("Basic ")),
        "the registry itself gets its credentials: {at_a:?}"
    );
    // The target's own challenge may be answered anonymously.
    assert_eq!(out.code, 0, "{out}\nA:\n{}\nB: {:?}", f.log(), b.requests());
    assert_eq!(out.stdout.trim(), format!("{image}@{digest}"));
    let token_req = b
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/token"))
        .unwrap();
    assert!(token_req.header("authorization").is_none(), "{token_req:?}");
    let last = b.requests().into_iter().last().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer token-of-b"));
    out.assert_no_leak(&[A_PASS]);
}

#[test]
fn redirect_to_another_origin_carries_no_authorization_nor_hosts_toml_headers() {
    let b = other_origin();
    let body = manifest_body();
    let digest = sha256_digest(&body);
    b.set_script(vec![FaultStep::manifest(
        &body,
        MT_OCI_MANIFEST,
        Some(&digest),
    )]);
    let target = format!("{}/v2/app/x/manifests/v1", b.url());
    let f = Faulty::start(vec![
        FaultStep::unauthorized(r#"Basic realm="a""#),
        FaultStep::redirect(302, &target),
    ]);
    let image = f.image("app/x:v1");
    let sb = Sandbox::new();
    let ns = sb.certs().join(f.host());
    std::fs::create_dir_all(&ns).unwrap();
    std::fs::write(
        ns.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n[header]\n  x-registry-key = \"{A_HEADER}\"\n",
            f.host()
        ),
    )
    .unwrap();
    let cfg = sb.config("config.json", &[(f.host(), A_USER, A_PASS)]);
    let out = sb.resolve(&[
        "--insecure-registry",
        &b.host,
        "--docker-config",
        &cfg,
        &image,
    ]);
    let at_a = f
        .requests()
        .into_iter()
        .find(|r| r.path.contains("/manifests/"))
        .expect("asked the registry");
    assert_eq!(at_a.header("x-registry-key"), Some(A_HEADER), "{at_a:?}");
    assert!(at_a.header("authorization").is_some(), "{at_a:?}");
    assert!(b.request_count() > 0, "never followed\n{out}");
    assert_nothing_of_origin_reached(&b);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.trim(), format!("{image}@{digest}"));
}

#[test]
fn redirect_to_another_origin_presents_no_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), "mtls-ca");
    // The target accepts any client certificate of this CA, so a request
    // reaching its access log proves that one was presented.
    let target = Registry::start(
        &tmp.path().join("storage"),
        RegistryOptions {
            client_cas: vec![pki.ca_crt.clone()],
            ..Default::default()
        }
        .with_tls(&pki),
    );
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::redirect(
            307,
            &format!("https://{}/v2/app/x/manifests/v1", target.host),
        ),
    ]);
    let image = f.image("app/x:v1");
    let sb = Sandbox::new();
    sb.trust(&target.host, &pki);
    let (cert, key) = pki.client_cert("staticpin-for-a");
    let d = sb.certs().join(f.host());
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(cert, d.join("client.cert")).unwrap();
    std::fs::copy(key, d.join("client.key")).unwrap();
    let before = target.total_requests();
    let out = sb.resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 2, "{out}");
    // TLS 1.3 reports a missing certificate only by closing the connection.
    assert!(
        out.failure(&image).contains(&target.host),
        "the redirect was followed, and the target refused it\n{out}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        target.total_requests(),
        before,
        "the registry's client certificate was presented to {}\n{}",
        target.host,
        target.log_contents()
    );
}

#[test]
fn redirect_loop_is_a_protocol_error_and_not_retried() {
    let f = Faulty::start(vec![v2_ok(), FaultStep::status(500)]);
    let here = format!("http://{}/v2/app/x/manifests/v1", f.host());
    f.server
        .set_script(vec![v2_ok(), FaultStep::redirect(307, &here)]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 2, "{out}");
    let line = out.failure(&image);
    assert!(line.contains(": protocol error: "), "{line}");
    assert!(line.contains("redirect"), "{line}");
    assert!(
        f.manifest_requests() <= 12,
        "a loop is not retried\n{}",
        f.log()
    );
}

// ---------------------------------------------------------------------------
// Per-run state

#[test]
fn failed_v2_probe_is_not_cached_for_the_run() {
    let body = manifest_body();
    let digest = sha256_digest(&body);
    let f = Faulty::start(vec![
        FaultStep::status(503),
        v2_ok(),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&digest)),
    ]);
    let x = f.image("app/x:v1");
    let y = f.image("app/y:v1");
    let out = Sandbox::new().resolve(&[
        "--insecure-registry",
        f.host(),
        "--retries",
        "0",
        "--concurrency",
        "1",
        &x,
        &y,
    ]);
    assert_eq!(out.code, 2, "{out}\n{}", f.log());
    assert!(out.failure(&x).contains(": server error: "), "{out}");
    assert_eq!(
        out.stdout.trim(),
        format!("{y}@{digest}"),
        "the second image probes again\n{}",
        f.log()
    );
}

/// `--concurrency N` puts up to N requests in flight at once, and 1 means
/// one at a time: the server sees the overlap, not just the bound.
#[test]
fn concurrency_bounds_and_uses_parallel_requests() {
    let body = manifest_body();
    let digest = sha256_digest(&body);
    // Every answer (the /v2/ probe too) is a slow manifest, so requests
    // that can overlap do.
    let slow = FaultStep::Delay(
        Duration::from_millis(400),
        Box::new(FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&digest))),
    );
    for (concurrency, want) in [("4", 2..=4), ("1", 1..=1)] {
        let f = Faulty::start(vec![slow.clone()]);
        let images: Vec<String> = (0..4).map(|i| f.image(&format!("app/x{i}:v1"))).collect();
        let mut args = vec![
            "--insecure-registry",
            f.host(),
            "--concurrency",
            concurrency,
        ];
        args.extend(images.iter().map(String::as_str));
        let out = Sandbox::new().resolve(&args);
        assert_eq!(out.code, 0, "{out}\n{}", f.log());
        let max = f.server.max_in_flight();
        assert!(
            want.contains(&max),
            "--concurrency {concurrency}: {max} requests at once\n{}",
            f.log()
        );
    }
}

#[test]
fn the_whole_run_has_a_deadline() {
    let f = Faulty::start(vec![v2_ok(), FaultStep::Hang(Duration::from_secs(60))]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&[
        "--insecure-registry",
        f.host(),
        "--timeout",
        "30",
        "--deadline",
        "2",
        &image,
    ]);
    assert_eq!(out.code, 2, "{out}");
    let line = out.failure(&image);
    assert!(
        line.contains(": timeout: ") && line.contains("deadline"),
        "{line}"
    );
    assert!(out.elapsed < Duration::from_secs(6), "{out}");
}

// ---------------------------------------------------------------------------
// Drift peeks with HEAD; --update pins only verified bytes

/// `status` asks with HEAD and reports the registry's claim; `pin --update`
/// moves the pin only to the digest of the bytes a GET served, never to the
/// HEAD's claim.
#[test]
fn status_peeks_with_head_and_update_pins_only_verified_bytes() {
    let body = manifest_body();
    let good = sha256_digest(&body);
    let claim = format!("sha256:{}", "c".repeat(64));
    let old = format!("sha256:{}", "d".repeat(64));
    let script = || {
        vec![
            v2_ok(),
            FaultStep::by_method(
                FaultStep::manifest(b"", MT_OCI_MANIFEST, Some(&claim)),
                FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&good)),
            ),
        ]
    };
    let f = Faulty::start(script());
    let sb = Sandbox::new();
    let image = f.image("app/x:v1");
    let file = sb.path("manifests/x.yaml");
    let text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers:\n  - name: x\n    image: {image}@{old}\n"
    );
    std::fs::write(&file, &text).unwrap();

    let out = sb.run("status", &["--insecure-registry", f.host(), "-o", "json"]);
    assert_eq!(out.code, 1, "{out}\n{}", f.log());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["images"][0]["drift"], "drifted", "{out}");
    assert_eq!(v["images"][0]["tagDigest"], claim.as_str(), "{out}");
    let manifests: Vec<_> = f
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/manifests/"))
        .collect();
    assert_eq!(manifests.len(), 1, "one HEAD per tag\n{}", f.log());
    assert_eq!(manifests[0].method, "HEAD", "{}", f.log());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text,
        "status writes nothing"
    );

    f.server.set_script(script());
    let out = sb.run("pin", &["--insecure-registry", f.host(), "--update"]);
    assert_eq!(out.code, 0, "{out}\n{}", f.log());
    let now = std::fs::read_to_string(&file).unwrap();
    assert_eq!(now, text.replace(&old, &good), "pinned the GET's bytes");
    assert!(!now.contains(&claim));
    assert!(
        f.requests()
            .iter()
            .filter(|r| r.path.contains("/manifests/"))
            .skip(1)
            .all(|r| r.method == "GET"),
        "{}",
        f.log()
    );
}
