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
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use support::cli::Sandbox;
use support::*;

// ---------------------------------------------------------------------------
// Harness

/// Relays plain HTTP to a `FaultServer`; answers TLS ClientHellos with 400.
struct Front {
    /// "127.0.0.1:PORT" — the registry host the CLI is pointed at.
    host: String,
    hellos: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Front {
    fn start(upstream: &str) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").expect("front bind");
        let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let hellos = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (hellos, stop, upstream) = (hellos.clone(), stop.clone(), upstream.to_string());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let (hellos, upstream) = (hellos.clone(), upstream.clone());
                    std::thread::spawn(move || relay(stream, &upstream, &hellos));
                }
            })
        };
        Front {
            host,
            hellos,
            stop,
            thread: Some(thread),
        }
    }

    /// TLS handshakes attempted against this host so far.
    fn tls_hellos(&self) -> usize {
        self.hellos.load(Ordering::SeqCst)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.host.parse().unwrap(), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

    fn count(&self, method: &str, path_part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_part))
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
fn head_without_digest_header_falls_back_to_get_and_hashes_the_body() {
    let body = manifest_body();
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, None), // HEAD: no digest
        FaultStep::manifest(&body, MT_OCI_MANIFEST, None), // GET: body only
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
    assert_eq!(f.count("HEAD", "/v2/app/x/manifests/v1"), 1, "{}", f.log());
    assert_eq!(f.count("GET", "/v2/app/x/manifests/v1"), 1, "{}", f.log());
    let get = f
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.path.contains("/manifests/"))
        .unwrap();
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

#[test]
fn get_whose_digest_header_disagrees_with_the_body_is_refused() {
    let body = manifest_body();
    let lie = format!("sha256:{}", "b".repeat(64));
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, None),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, Some(&lie)),
        FaultStep::status(500),
    ]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(
        out.stdout, "",
        "a lying registry must never produce a pin\n{out}"
    );
    let line = out.failure(&image);
    assert!(line.contains(": bad digest: "), "{line}");
    assert!(
        line.contains(&lie) && line.contains(&sha256_digest(&body)),
        "{line}"
    );
}

#[test]
fn malformed_digest_header_on_head_falls_back_to_get() {
    let body = manifest_body();
    let f = Faulty::start(vec![
        v2_ok(),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, Some("sha256:not-hex")),
        FaultStep::manifest(&body, MT_OCI_MANIFEST, None),
        FaultStep::status(500),
    ]);
    let image = f.image("app/x:v1");
    let out = Sandbox::new().resolve(&["--insecure-registry", f.host(), &image]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout.trim(),
        format!("{image}@{}", sha256_digest(&body))
    );
    assert_eq!(f.count("GET", "/manifests/"), 1, "{}", f.log());
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
    let heads: Vec<usize> = f
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.path == "/v2/app/x/manifests/v1")
        .map(|r| r.step)
        .collect();
    assert_eq!(
        heads,
        [1, 2],
        "HEAD answered 500, then retried and answered 200\n{}",
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
        f.count("HEAD", "/manifests/"),
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
    assert_eq!(f.count("HEAD", "/manifests/"), 2, "{}", f.log());
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
    assert_eq!(f.count("HEAD", "/manifests/"), 1, "{}", f.log());
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
    let heads: Vec<usize> = f
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.path.contains("/manifests/"))
        .map(|r| r.step)
        .collect();
    assert_eq!(heads, [1, 2], "reset HEAD retried\n{}", f.log());
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
        f.count("HEAD", "/manifests/"),
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
    assert_eq!(f.count("HEAD", "/manifests/"), 0, "{}", f.log());
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
    assert_eq!(f.count("HEAD", "/manifests/"), 1, "{}", f.log());
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
        f.count("HEAD", "/manifests/"),
        1,
        "404 must not be retried\n{}",
        f.log()
    );
    assert_eq!(f.count("GET", "/manifests/"), 0, "{}", f.log());
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
        .filter(|r| r.method == "HEAD" && r.path.contains("/manifests/"))
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
