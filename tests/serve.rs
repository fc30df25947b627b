//! `staticpin serve` end to end: `admission init --local-webhook` sets both
//! ends up, the server runs as a process, and kube-apiserver's side is played
//! by a client built only from the admission config and kubeconfig that init
//! wrote (URL, CA, client certificate and key), sending bodies in the exact
//! shape kube-apiserver sends them.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::cli::Sandbox;
use support::webhook::{image_review, Conn, Ends};
use support::{free_port, wait_until, Pki};

const DIGEST: &str = "sha256:0d3bc3b4e2bc0c9bb2b07a3d7bbb8cd9c4cc1c8a6e0b1b7a7b3f5c8f0b3b7f11";

const POLICY: &str = "policy:
  trustedRegistries: [registry.k8s.io, docker.io/library]
  untrusted: deny
  requireDigest: true
  denyLatest: true
  exemptNamespaces: [ci-sandbox]
  allowBreakGlass: true
";

/// A node: the sandbox, the files init wrote, and the config serve reads.
struct Node {
    sb: Sandbox,
    port: u16,
    metrics_port: u16,
    ends: Ends,
}

impl Node {
    fn new(policy: &str) -> Node {
        let sb = Sandbox::new();
        let port = free_port();
        let metrics_port = free_port();
        let out = sb.raw(&[
            "admission",
            "init",
            "--local-webhook",
            "--port",
            &port.to_string(),
            "--dir",
            sb.path("admission").to_str().unwrap(),
            "--serve-dir",
            sb.path("serve").to_str().unwrap(),
            "--serve-config",
            sb.path("config.d/50-local-webhook.yaml").to_str().unwrap(),
            "--manifest-dir",
            sb.path("manifests").to_str().unwrap(),
        ]);
        assert_eq!(out.code, 0, "{out}");
        let ends = Ends::from_admission_config(&sb.path("admission/admission_config.yaml"));
        assert_eq!(ends.url, format!("https://127.0.0.1:{port}/imagepolicy"));
        let node = Node {
            sb,
            port,
            metrics_port,
            ends,
        };
        node.set_policy(policy);
        node
    }

    /// The sandbox config: paths, `policy`, then init's `serve:` drop-in
    /// (read through `--config`, which takes one file) plus a metrics port.
    fn set_policy(&self, policy: &str) {
        let dropin =
            std::fs::read_to_string(self.sb.path("config.d/50-local-webhook.yaml")).unwrap();
        self.sb.write_config(&format!(
            "{policy}{dropin}  metricsListen: 127.0.0.1:{}\n",
            self.metrics_port
        ));
    }

    fn start(&self, args: &[&str]) -> Server {
        let log = self.sb.path(&format!("serve-{}.log", free_port()));
        let mut cmd = self.sb.command();
        cmd.arg("-v")
            .arg("serve")
            .arg("--config")
            .arg(self.sb.config_file())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let server = Server {
            child,
            log,
            metrics_port: self.metrics_port,
        };
        let up = wait_until(Duration::from_secs(10), || {
            server.get("/healthz").filter(|(s, _)| *s == 200)
        });
        assert!(up.is_some(), "serve did not come up:\n{}", server.log());
        server
    }

    fn conn(&self) -> Conn {
        Conn::connect(&self.ends, self.ends.apiserver_tls()).unwrap()
    }

    fn review(&self, conn: &mut Conn, body: &[u8]) -> Value {
        let r = conn.post(&self.ends.path, body).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

struct Server {
    child: Child,
    log: PathBuf,
    metrics_port: u16,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A plain-HTTP GET on the metrics port: (status, body).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    }

    fn metric(&self, line_start: &str) -> u64 {
        let (_, body) = self.get("/metrics").unwrap();
        body.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits for the exit code (None: still running after 40 s).
    fn wait(&mut self) -> Option<i32> {
        wait_until(Duration::from_secs(40), || {
            self.child
                .try_wait()
                .unwrap()
                .map(|s| s.code().unwrap_or(-1))
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pinned(name: &str) -> String {
    format!("{name}@{DIGEST}")
}

fn status(v: &Value) -> (bool, String) {
    (
        v["status"]["allowed"].as_bool().unwrap(),
        v["status"]["reason"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn image_reviews_as_kube_apiserver_sends_them() {
    let node = Node::new(POLICY);
    let server = node.start(&[]);
    let mut c = node.conn();
    let none = json!({});

    // Containers plus init containers, all pinned and trusted.
    let apiserver = pinned("registry.k8s.io/kube-apiserver:v1.31.0");
    let busybox = pinned("docker.io/library/busybox:1.36");
    let v = node.review(
        &mut c,
        &image_review(&[&apiserver, &busybox], &none, "default"),
    );
    assert_eq!(
        v,
        json!({"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","status":{"allowed":true}})
    );

    // A mirror pod of a pinned static pod: kubelet's copy, reviewed like any pod.
    let v = node.review(&mut c, &image_review(&[&apiserver], &none, "kube-system"));
    assert_eq!(status(&v), (true, String::new()));

    // Each rule, denied with its reason.
    for (image, want) in [
        (
            pinned("quay.io/evil/miner:1"),
            "is not under any trusted registry prefix",
        ),
        (
            "registry.k8s.io/pause:3.9".to_string(),
            "is not pinned by digest (policy.requireDigest)",
        ),
        (
            "registry.k8s.io/pause:latest".to_string(),
            "uses the mutable tag \"latest\" (policy.denyLatest)",
        ),
        (
            "registry.k8s.io/pause".to_string(),
            "has neither tag nor digest",
        ),
        (
            "registry.k8s.io/Pause:UPPER!".to_string(),
            "is not a valid image reference",
        ),
        (
            pinned("docker.io/evil/nginx:1"),
            "is not under any trusted registry prefix",
        ),
    ] {
        let v = node.review(
            &mut c,
            &image_review(&[&apiserver, &image], &none, "default"),
        );
        let (allowed, reason) = status(&v);
        assert!(!allowed, "{image} allowed");
        assert!(reason.starts_with("1 of 2 images denied"), "{reason}");
        assert!(reason.contains(want), "{image}: {reason}");
    }

    // An ephemeral-containers review carries only the ephemeral container.
    let v = node.review(&mut c, &image_review(&["busybox:latest"], &none, "default"));
    assert!(!status(&v).0);
    let v = node.review(&mut c, &image_review(&[&busybox], &none, "default"));
    assert!(status(&v).0);

    // Exempt namespace: allowed without checks, and said so in the audit annotations.
    let v = node.review(
        &mut c,
        &image_review(&["quay.io/x/y:latest"], &none, "ci-sandbox"),
    );
    assert_eq!(v["status"]["allowed"], true);
    assert_eq!(
        v["status"]["auditAnnotations"]["exempt-namespace"],
        "ci-sandbox"
    );

    // Break-glass through the filtered annotations: admitted, audited, logged loudly.
    let glass = json!({"break-glass.image-policy.k8s.io/reason": "INC-4711 registry outage"});
    let v = node.review(&mut c, &image_review(&["quay.io/x/y:1"], &glass, "default"));
    assert_eq!(v["status"]["allowed"], true, "{v}");
    assert_eq!(
        v["status"]["auditAnnotations"]["break-glass"],
        "INC-4711 registry outage"
    );
    assert!(v["status"]["auditAnnotations"]["would-deny"]
        .as_str()
        .unwrap()
        .contains("quay.io/x/y:1"));
    // An empty reason does not break the glass.
    let empty = json!({"break-glass.image-policy.k8s.io/reason": " "});
    let v = node.review(&mut c, &image_review(&["quay.io/x/y:1"], &empty, "default"));
    assert_eq!(v["status"]["allowed"], false);

    // One log line per decision, with namespace, images, verdict and reason.
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains("BREAK-GLASS")
            && l.contains("namespace=\"default\"")
            && l.contains("quay.io/x/y:1")
            && l.contains("verdict=\"allow\"")
            && l.contains("reason=\"break-glass\"")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("verdict=\"deny\"")
            && l.contains("reason=\"untrusted-registry\"")
            && l.contains("quay.io/evil/miner:1")),
        "{log}"
    );
    assert!(server.metric(
        "staticpin_serve_decisions_total{endpoint=\"/imagepolicy\",verdict=\"deny\",reason=\"not-digest-pinned\"}"
    ) >= 1);
    assert!(server.metric("staticpin_serve_decision_duration_seconds_count") >= 13);
}

#[test]
fn admission_review_echoes_the_uid() {
    let node = Node::new(POLICY);
    let _server = node.start(&[]);
    let mut c = node.conn();
    let review = |uid: &str, image: &str| {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default",
                "operation": "CREATE",
                "userInfo": {"username": "system:node:cp-1"},
                "object": {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "web", "namespace": "default",
                                 "annotations": {"kubernetes.io/config.mirror": "abc"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}
                },
                "dryRun": false
            }
        })
        .to_string()
    };
    let r = c
        .post("/validate", review("7d3c-11", "quay.io/x/y:1").as_bytes())
        .unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "7d3c-11");
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["status"]["code"], 403);
    let ok = pinned("registry.k8s.io/etcd:3.5.15-0");
    let v = c
        .post("/validate", review("u-2", &ok).as_bytes())
        .unwrap()
        .json();
    assert_eq!(v["response"], json!({"uid": "u-2", "allowed": true}));
    // An AdmissionReview sent to the ImageReview endpoint is a 400, not a decision.
    let r = c
        .post(&node.ends.path, review("u-3", &ok).as_bytes())
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("imagepolicy.k8s.io/v1alpha1"),
        "{}",
        r.text()
    );
}

#[test]
fn audit_mode_allows_and_records_what_would_be_denied() {
    let node = Node::new(POLICY);
    let server = node.start(&["--mode", "audit"]);
    let mut c = node.conn();
    let v = node.review(
        &mut c,
        &image_review(&["quay.io/x/y:latest"], &json!({}), "default"),
    );
    assert_eq!(v["status"]["allowed"], true, "{v}");
    let would = v["status"]["auditAnnotations"]["would-deny"]
        .as_str()
        .unwrap();
    assert!(would.contains("quay.io/x/y:latest"), "{would}");
    assert!(server
        .log()
        .lines()
        .any(|l| l.contains("WARN") && l.contains("reason=\"audit-would-deny\"")));
}

#[test]
fn handshakes_without_the_right_client_certificate_fail() {
    let node = Node::new(POLICY);
    let server = node.start(&[]);
    let body = image_review(&["quay.io/x/y:1"], &json!({}), "default");

    // No client certificate: the handshake (TLS 1.3: the first read) fails.
    let refused = |tls| match Conn::connect(&node.ends, tls) {
        Err(e) => e.to_string(),
        Ok(mut c) => match c.post(&node.ends.path, &body) {
            Err(e) => e.to_string(),
            Ok(r) => panic!("answered {} without a trusted client certificate", r.status),
        },
    };
    let e = refused(node.ends.tls(None));
    assert!(
        e.contains("CertificateRequired") || e.contains("certificate"),
        "{e}"
    );

    // A client certificate from another CA.
    let other = Pki::new(&node.sb.path("other-pki"), "other");
    let (cert, key) = other.client_cert("kube-apiserver");
    let e = refused(node.ends.tls(Some((&cert, &key))));
    assert!(e.contains("certificate") || e.contains("alert"), "{e}");

    // Plain HTTP on the TLS port: no HTTP answer at all.
    let mut s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /imagepolicy HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        !out.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    // Still answering kube-apiserver.
    let mut c = node.conn();
    assert_eq!(node.review(&mut c, &body)["status"]["allowed"], false);
    assert!(server.metric("staticpin_serve_tls_handshake_failures_total") >= 3);
}

#[test]
fn bad_bodies_get_clean_errors_and_the_server_keeps_answering() {
    let node = Node::new(POLICY);
    let server = node.start(&["--request-timeout", "2s"]);
    let good = image_review(
        &[&pinned("registry.k8s.io/pause:3.9")],
        &json!({}),
        "default",
    );
    let mut c = node.conn();
    for (body, want) in [
        (b"{not json".to_vec(), "request body is not a valid ImageReview"),
        (b"".to_vec(), "request body is not a valid ImageReview"),
        (
            br#"{"apiVersion":"imagepolicy.k8s.io/v1beta9","kind":"ImageReview"}"#.to_vec(),
            "expected apiVersion \"imagepolicy.k8s.io/v1alpha1\"",
        ),
        (
            br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"Pod"}"#.to_vec(),
            "expected kind \"ImageReview\"",
        ),
        (
            br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":"x"}}"#.to_vec(),
            "not a valid ImageReview",
        ),
    ] {
        let r = c.post(&node.ends.path, &body).unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(want), "{}", r.text());
    }
    // The same keep-alive connection still gets decisions.
    assert_eq!(node.review(&mut c, &good)["status"]["allowed"], true);

    // Oversized: declared, and sent chunked without a length.
    // The declared length is refused before the body is read.
    let head = c.request_head(&node.ends.path, 1024 * 1024 + 1);
    c.write_raw(head.as_bytes()).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    let mut c = node.conn();
    let mut chunked = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        node.ends.path
    )
    .into_bytes();
    for _ in 0..17 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 64 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let _ = c.write_raw(&chunked);
    assert_eq!(c.read_response().unwrap().status, 413);

    // Wrong route and method.
    let mut c = node.conn();
    assert_eq!(c.post("/nope", &good).unwrap().status, 404);

    // A slow client: half a request head, then nothing. Others are answered
    // meanwhile; the slow one is cut off after --request-timeout.
    let mut slow = node.conn();
    slow.write_raw(b"POST /imagepolicy HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    let mut other = node.conn();
    assert_eq!(node.review(&mut other, &good)["status"]["allowed"], true);
    let start = std::time::Instant::now();
    let e = slow
        .read_response()
        .err()
        .expect("a half request was answered");
    assert!(start.elapsed() < Duration::from_secs(10), "{e}");
    assert_eq!(node.review(&mut other, &good)["status"]["allowed"], true);
    assert!(server.metric("staticpin_serve_refused_requests_total{code=\"413\"}") >= 2);
    assert!(server.metric("staticpin_serve_refused_requests_total{code=\"400\"}") >= 5);
}

#[test]
fn sighup_reloads_a_valid_policy_and_keeps_the_old_one_otherwise() {
    let node = Node::new(POLICY);
    let server = node.start(&[]);
    let quay = pinned("quay.io/team/app:1");
    let body = image_review(&[&quay], &json!({}), "default");
    let mut c = node.conn();
    assert_eq!(node.review(&mut c, &body)["status"]["allowed"], false);

    node.set_policy(&POLICY.replace("docker.io/library]", "docker.io/library, quay.io/team]"));
    server.signal("HUP");
    let reloaded = wait_until(Duration::from_secs(10), || {
        (server.metric("staticpin_serve_policy_reloads_total{result=\"ok\"}") == 1).then_some(())
    });
    assert!(reloaded.is_some(), "{}", server.log());
    assert_eq!(node.review(&mut c, &body)["status"]["allowed"], true);

    // An invalid policy is refused whole; the previous one stays in force.
    node.set_policy(&POLICY.replace("[ci-sandbox]", "[Not_A_Namespace]"));
    server.signal("HUP");
    let refused = wait_until(Duration::from_secs(10), || {
        (server.metric("staticpin_serve_policy_reloads_total{result=\"failed\"}") == 1)
            .then_some(())
    });
    assert!(refused.is_some(), "{}", server.log());
    assert_eq!(node.review(&mut c, &body)["status"]["allowed"], true);
    let log = server.log();
    assert!(
        log.contains("reload refused, keeping the previous policy")
            && log.contains("policy.exemptNamespaces[0]"),
        "{log}"
    );
}

#[test]
fn sigterm_answers_requests_in_progress_and_exits_zero() {
    let node = Node::new(POLICY);
    let mut server = node.start(&[]);
    let body = image_review(
        &[&pinned("registry.k8s.io/pause:3.9")],
        &json!({}),
        "default",
    );

    // Load: keep-alive clients asking as fast as they can.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (ends, body, stop, answered) = (
                node.ends.clone(),
                body.clone(),
                stop.clone(),
                answered.clone(),
            );
            std::thread::spawn(move || {
                let mut partial = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = Conn::connect(&ends, ends.apiserver_tls()) else {
                        break; // the listener is closed: stopping
                    };
                    loop {
                        match c.post(&ends.path, &body) {
                            Ok(r) => {
                                // Every answer given is whole and a decision.
                                assert_eq!(r.status, 200);
                                assert_eq!(r.json()["status"]["allowed"], true);
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                            Err(_) => {
                                partial += 1;
                                break;
                            }
                        }
                    }
                }
                partial
            })
        })
        .collect();
    wait_until(Duration::from_secs(10), || {
        (answered.load(Ordering::Relaxed) > 200).then_some(())
    })
    .expect("no load");

    // A request in flight: head and half the body sent when SIGTERM arrives.
    let mut inflight = node.conn();
    let head = inflight.request_head(&node.ends.path, body.len());
    inflight.write_raw(head.as_bytes()).unwrap();
    inflight.write_raw(&body[..body.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    inflight.write_raw(&body[body.len() / 2..]).unwrap();
    let r = inflight.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"]["allowed"], true);

    assert_eq!(server.wait(), Some(0), "{}", server.log());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(server.log().contains("stopping"), "{}", server.log());
}

#[test]
fn listen_addresses_must_be_loopback() {
    let node = Node::new(POLICY);
    let out = node.sb.run("serve", &["--listen", "0.0.0.0:8443"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("not a loopback address"), "{out}");
    node.sb
        .write_config("serve:\n  metricsListen: 192.0.2.1:9843\n");
    let out = node.sb.run("serve", &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("serve.metricsListen") && out.stderr.contains("not a loopback"),
        "{out}"
    );
    // Without TLS files serve says which key is missing.
    node.sb.write_config("");
    let out = node.sb.run("serve", &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("serve.tlsCert is not set"), "{out}");
}

#[test]
fn policy_check_prints_each_verdict_offline() {
    let sb = Sandbox::new();
    sb.write_config(POLICY);
    let config = sb.config_file().display().to_string();
    let check = |images: &[&str]| {
        let mut args = vec!["policy", "check", "--config", &config];
        args.extend_from_slice(images);
        sb.raw(&args)
    };
    let ok = pinned("registry.k8s.io/pause:3.9");
    let out = check(&[&ok]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.starts_with("allow"), "{out}");
    let out = check(&[&ok, "quay.io/x/y:latest"]);
    assert_eq!(out.code, 1, "{out}");
    let deny = out.lines()[1];
    assert!(
        deny.starts_with("deny")
            && deny.contains("[untrusted-registry]")
            && deny.contains("policy.denyLatest"),
        "{out}"
    );
    let out = check(&["not a/ref"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stdout.contains("[invalid-reference]"), "{out}");
}

#[test]
fn local_init_is_consistent_private_and_checked_by_doctor() {
    let node = Node::new(POLICY);
    let sb = &node.sb;
    for key in ["admission/webhook-client.key", "serve/tls.key"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(sb.path(key)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    // doctor: the two ends match.
    let adm = sb.path("admission/admission_config.yaml");
    let doctor = |sb: &Sandbox| sb.run("doctor", &["--admission-config", adm.to_str().unwrap()]);
    let out = doctor(sb);
    for check in [
        "webhook-serving-pair",
        "webhook-client-pair",
        "webhook-cert-expiry",
    ] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(check)),
            "{check}\n{out}"
        );
    }
    // serve's client CA replaced by another CA: doctor says kube-apiserver would be refused.
    let other = Pki::new(&sb.path("other-pki"), "other");
    std::fs::copy(&other.ca_crt, sb.path("serve/client-ca.crt")).unwrap();
    let out = doctor(sb);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("webhook-client-pair")),
        "{out}"
    );
    // A second init run now regenerates only with --force.
    let args = |force: bool| {
        let mut a = vec![
            "admission".to_string(),
            "init".into(),
            "--local-webhook".into(),
            "--port".into(),
            node.port.to_string(),
            "--dir".into(),
            sb.path("admission").display().to_string(),
            "--serve-dir".into(),
            sb.path("serve").display().to_string(),
            "--serve-config".into(),
            sb.path("config.d/50-local-webhook.yaml")
                .display()
                .to_string(),
            "--manifest-dir".into(),
            sb.path("manifests").display().to_string(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let run = |a: Vec<String>| sb.raw(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(args(false));
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--force"), "{out}");
    let out = run(args(true));
    assert_eq!(out.code, 0, "{out}");
    let out = run(args(false));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .lines()
            .take(9)
            .all(|l| l.starts_with("unchanged")),
        "{out}"
    );
    let out = doctor(sb);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("PASS") && l.contains("webhook-client-pair")),
        "{out}"
    );
}

/// `systemd/staticpin-serve.service` verifies cleanly and scores at most 2.0
/// on `systemd-analyze security --offline=true`. Skipped visibly without
/// systemd-analyze, except under CI, where its absence fails.
#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/staticpin-serve.service");
    if !support::systemd::have_analyze("systemd_unit_verifies_and_is_hardened") {
        return;
    }
    let text = std::fs::read_to_string(&unit).unwrap();
    for want in [
        "Type=notify",
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
        "ProtectSystem=strict",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(text.lines().any(|l| l == want), "unit lacks {want}");
    }
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("ReadWritePaths=") && l.len() > "ReadWritePaths=".len()),
        "the unit must have no writable paths"
    );
    support::systemd::verify(&unit);
    let (score, stdout) = support::systemd::exposure(&unit);
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{stdout}");
}
