//! `health::wait_healthy` against a real HTTPS server standing in for
//! kube-apiserver: `openssl s_server -HTTP` serves the file `livez` from its
//! working directory, and that file carries the whole answer (status line,
//! headers, body), so a test scripts healthy, failing and late answers by
//! writing it. Needs `openssl` on PATH.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use staticpin::health::{wait_healthy, HealthCheck, HealthError};
use support::apiserver::{write_livez, Apiserver, ETCD_DOWN, OK};
use support::{free_port, Pki};

struct Setup {
    dir: tempfile::TempDir,
    pki: Pki,
    www: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cluster");
    let www = dir.path().join("www");
    fs::create_dir_all(&www).unwrap();
    Setup { pki, www, dir }
}

fn check(url: String, ca: &Path, timeout: Duration) -> HealthCheck {
    HealthCheck {
        ca: Some(ca.to_path_buf()),
        timeout,
        interval: Duration::from_millis(200),
        request_timeout: Duration::from_secs(1),
        ..HealthCheck::new(url)
    }
}

/// Asserts `NeverHealthy` for `url`, after at least `timeout`, and returns
/// `last`.
fn never_healthy(result: Result<Duration, HealthError>, url: &str, timeout: Duration) -> String {
    match result {
        Err(e @ HealthError::NeverHealthy { .. }) => {
            let text = e.to_string();
            let HealthError::NeverHealthy {
                url: u,
                waited,
                last,
            } = e
            else {
                unreachable!()
            };
            eprintln!("{text}");
            assert_eq!(u, url);
            assert!(text.contains(url), "{text}");
            assert!(text.contains(&last), "{text}");
            assert!(waited >= timeout, "gave up early: {waited:?}");
            assert!(
                waited < timeout + Duration::from_secs(2),
                "overran: {waited:?}"
            );
            last
        }
        other => panic!("expected NeverHealthy, got {other:?}"),
    }
}

#[tokio::test]
async fn healthy_answers_at_once() {
    let s = setup();
    write_livez(&s.www, OK);
    let srv = Apiserver::start(&s.www, &s.pki.server_crt, &s.pki.server_key, &[]);
    let took = wait_healthy(&check(srv.url(), &s.pki.ca_crt, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn failing_livez_is_never_healthy_and_says_why() {
    let s = setup();
    write_livez(&s.www, ETCD_DOWN);
    let srv = Apiserver::start(&s.www, &s.pki.server_crt, &s.pki.server_key, &[]);
    let timeout = Duration::from_secs(3);
    let last = never_healthy(
        wait_healthy(&check(srv.url(), &s.pki.ca_crt, timeout)).await,
        &srv.url(),
        timeout,
    );
    assert!(last.contains("HTTP 500"), "{last}");
    assert!(last.contains("[-]etcd failed"), "{last}");
}

/// s_server answers a missing file with "200 ok" and an error text, not
/// 404, which is a fine test that the body, not just the status, counts.
#[tokio::test]
async fn missing_livez_is_never_healthy() {
    let s = setup();
    let srv = Apiserver::start(&s.www, &s.pki.server_crt, &s.pki.server_key, &[]);
    let timeout = Duration::from_secs(3);
    let last = never_healthy(
        wait_healthy(&check(srv.url(), &s.pki.ca_crt, timeout)).await,
        &srv.url(),
        timeout,
    );
    assert!(
        last.contains("HTTP 200 OK but the body is not \"ok\""),
        "{last}"
    );
    assert!(last.contains("Error opening"), "{last}");
}

#[tokio::test]
async fn healthy_after_a_delay() {
    let s = setup();
    write_livez(&s.www, ETCD_DOWN);
    let srv = Apiserver::start(&s.www, &s.pki.server_crt, &s.pki.server_key, &[]);
    let c = check(srv.url(), &s.pki.ca_crt, Duration::from_secs(10));
    // join! polls wait_healthy first, so its clock starts before the delay.
    let (result, ()) = tokio::join!(wait_healthy(&c), async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        write_livez(&s.www, OK);
    });
    let took = result.unwrap();
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test]
async fn wrong_ca_is_a_tls_error() {
    let s = setup();
    let other = Pki::new(s.dir.path(), "other");
    write_livez(&s.www, OK);
    let srv = Apiserver::start(&s.www, &s.pki.server_crt, &s.pki.server_key, &[]);
    let timeout = Duration::from_secs(2);
    let last = never_healthy(
        wait_healthy(&check(srv.url(), &other.ca_crt, timeout)).await,
        &srv.url(),
        timeout,
    );
    assert!(last.starts_with("TLS error"), "{last}");
    assert!(last.contains("UnknownIssuer"), "{last}");
}

/// The default host for a probe without one is 127.0.0.1, which only works
/// if the serving certificate names it; this is what the operator sees.
#[tokio::test]
async fn certificate_without_the_ip_is_a_tls_error() {
    let s = setup();
    let (crt, key) = s.pki.sign_leaf(
        "dns-only",
        "localhost",
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    write_livez(&s.www, OK);
    let srv = Apiserver::start(&s.www, &crt, &key, &[]);
    let timeout = Duration::from_secs(1);
    let last = never_healthy(
        wait_healthy(&check(srv.url(), &s.pki.ca_crt, timeout)).await,
        &srv.url(),
        timeout,
    );
    assert!(last.starts_with("TLS error"), "{last}");
    assert!(last.contains("not valid for name"), "{last}");
    // The same server by the name it does carry is fine.
    let by_name = format!("https://localhost:{}/livez", srv.port);
    wait_healthy(&check(by_name, &s.pki.ca_crt, Duration::from_secs(5)))
        .await
        .unwrap();
}

#[tokio::test]
async fn server_down_is_a_connection_error() {
    let s = setup();
    let url = format!("https://127.0.0.1:{}/livez", free_port());
    let timeout = Duration::from_secs(2);
    let last = never_healthy(
        wait_healthy(&check(url.clone(), &s.pki.ca_crt, timeout)).await,
        &url,
        timeout,
    );
    assert!(last.starts_with("connection failed"), "{last}");
    assert!(last.contains("refused"), "{last}");
}

#[tokio::test]
async fn client_certificate_for_servers_that_require_one() {
    let s = setup();
    write_livez(&s.www, OK);
    let ca = s.pki.ca_crt.to_str().unwrap().to_string();
    let srv = Apiserver::start(
        &s.www,
        &s.pki.server_crt,
        &s.pki.server_key,
        &["-Verify", "1", "-CAfile", &ca],
    );
    let timeout = Duration::from_secs(1);
    let anonymous = check(srv.url(), &s.pki.ca_crt, timeout);
    let last = never_healthy(wait_healthy(&anonymous).await, &srv.url(), timeout);
    assert!(last.starts_with("TLS error"), "{last}");
    let with_cert = HealthCheck {
        client: Some(s.pki.client_cert("staticpin")),
        timeout: Duration::from_secs(5),
        ..anonymous
    };
    wait_healthy(&with_cert).await.unwrap();
}

#[tokio::test]
async fn unreadable_files_fail_before_any_probe() {
    let s = setup();
    let missing = s.dir.path().join("nope.crt");
    let started = Instant::now();
    let err = wait_healthy(&check(
        "https://127.0.0.1:1/livez".to_string(),
        &missing,
        Duration::from_secs(30),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, HealthError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("nope.crt"), "{err}");
    let err = HealthCheck {
        client: Some((s.pki.server_crt.clone(), missing.clone())),
        ..check(
            "https://127.0.0.1:1/livez".into(),
            &s.pki.ca_crt,
            Duration::from_secs(30),
        )
    }
    .validate()
    .unwrap_err();
    assert!(err.to_string().contains("nope.crt"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// With `await_restart`, the old apiserver's "ok" does not count; the new
/// one's does, once the old one has gone away.
#[tokio::test]
async fn await_restart_wants_down_then_up() {
    let s = setup();
    write_livez(&s.www, OK);
    let mut srv = Some(Apiserver::start(
        &s.www,
        &s.pki.server_crt,
        &s.pki.server_key,
        &[],
    ));
    let port = srv.as_ref().unwrap().port;
    // The old apiserver answers before the gate starts, as on a node: a
    // stand-in still busy with its readiness connect would otherwise fail
    // the first probe, which counts as the restart's "down".
    wait_healthy(&check(
        srv.as_ref().unwrap().url(),
        &s.pki.ca_crt,
        Duration::from_secs(10),
    ))
    .await
    .unwrap();
    let c = HealthCheck {
        await_restart: true,
        ..check(
            srv.as_ref().unwrap().url(),
            &s.pki.ca_crt,
            Duration::from_secs(10),
        )
    };
    let (result, ()) = tokio::join!(wait_healthy(&c), async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        srv = None; // kubelet stops the old pod
        tokio::time::sleep(Duration::from_millis(700)).await;
        srv = Some(
            Apiserver::start_on(port, &s.www, &s.pki.server_crt, &s.pki.server_key, &[])
                .expect("restart on the same port"),
        );
    });
    let took = result.unwrap();
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(srv);
}

#[tokio::test]
async fn await_restart_without_a_restart_is_never_healthy() {
    let s = setup();
    write_livez(&s.www, OK);
    let srv = Apiserver::start(&s.www, &s.pki.server_crt, &s.pki.server_key, &[]);
    let timeout = Duration::from_secs(2);
    let c = HealthCheck {
        await_restart: true,
        ..check(srv.url(), &s.pki.ca_crt, timeout)
    };
    let last = never_healthy(wait_healthy(&c).await, &srv.url(), timeout);
    assert!(
        last.contains("old apiserver may still be running"),
        "{last}"
    );
}

/// One Pod model: the probe is read from the very container the admission
/// flags are wired into, never from a sidecar that happens to come first.
#[test]
fn liveness_url_comes_from_the_apiserver_container() {
    let manifest = "apiVersion: v1
kind: Pod
metadata:
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
spec:
  hostNetwork: true
  containers:
  - name: proxy
    image: registry.example/proxy:1
    livenessProbe:
      httpGet:
        port: 9000
        path: /healthz
  - name: kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.31.0
    args:
    - --secure-port=6443
    livenessProbe:
      httpGet:
        host: 192.0.2.10
        port: 6443
        path: /livez
        scheme: HTTPS
";
    assert_eq!(
        staticpin::health::liveness_url(manifest).unwrap(),
        "https://192.0.2.10:6443/livez"
    );
    assert_eq!(staticpin::apiserver::container_index(manifest), Some(1));
    // A shell-wrapped apiserver is still the apiserver's container for the
    // probe (and refused for wiring).
    let wrapped = manifest.replace(
        "    args:\n    - --secure-port=6443\n",
        "    command:\n    - sh\n    - -c\n    - exec kube-apiserver --secure-port=6443\n",
    );
    assert_eq!(
        staticpin::health::liveness_url(&wrapped).unwrap(),
        "https://192.0.2.10:6443/livez"
    );
    assert_eq!(staticpin::apiserver::container_index(&wrapped), Some(1));
    assert!(staticpin::apiserver::is_apiserver(&wrapped));
}
