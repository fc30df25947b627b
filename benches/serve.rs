//! `cargo bench --bench serve`: `staticpin serve` (release build) driven the
//! way kube-apiserver drives it — keep-alive TLS with the client certificate
//! from `admission init --local-webhook` — from several concurrent
//! connections. Prints decisions per second, p50/p99 latency per request and
//! the server's resident memory. Clients and server share the machine.
//!
//! Targets (issue 11): ≥ 5,000 decisions/s, p99 ≤ 5 ms, RSS ≤ 20 MiB.
//! Env: SERVE_BENCH_CONNECTIONS (default 8), SERVE_BENCH_SECS (default 5).

#[path = "../tests/support/webhook.rs"]
mod webhook;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use webhook::{image_review, Conn, Ends};

const DIGEST: &str = "sha256:0d3bc3b4e2bc0c9bb2b07a3d7bbb8cd9c4cc1c8a6e0b1b7a7b3f5c8f0b3b7f11";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing of
    // the sort and only wants the target to build and run quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let connections = env_or("SERVE_BENCH_CONNECTIONS", 8) as usize;
    let secs = if quick {
        1
    } else {
        env_or("SERVE_BENCH_SECS", 5)
    };
    let bin = env!("CARGO_BIN_EXE_staticpin");
    let dir = tempfile::tempdir().unwrap();
    let p = |rel: &str| dir.path().join(rel);
    let port = free_port();
    let metrics_port = free_port();
    std::fs::create_dir_all(p("manifests")).unwrap();
    let out = Command::new(bin)
        .args([
            "admission",
            "init",
            "--local-webhook",
            "--port",
            &port.to_string(),
        ])
        .arg("--dir")
        .arg(p("admission"))
        .arg("--serve-dir")
        .arg(p("serve"))
        .arg("--serve-config")
        .arg(p("config.d/50-local-webhook.yaml"))
        .arg("--manifest-dir")
        .arg(p("manifests"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dropin = std::fs::read_to_string(p("config.d/50-local-webhook.yaml")).unwrap();
    std::fs::write(
        p("config.yaml"),
        format!(
            "policy:\n  trustedRegistries: [registry.k8s.io, docker.io/library]\n  untrusted: deny\n  \
             requireDigest: true\n  denyLatest: true\n{dropin}  metricsListen: 127.0.0.1:{metrics_port}\n"
        ),
    )
    .unwrap();
    let mut server = Command::new(bin)
        .args(["serve", "--config"])
        .arg(p("config.yaml"))
        .env("STATICPIN_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = server.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", metrics_port)).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let ends = Ends::from_admission_config(&p("admission/admission_config.yaml"));
    let allowed = image_review(
        &[
            &format!("registry.k8s.io/kube-apiserver:v1.31.0@{DIGEST}"),
            &format!("docker.io/library/busybox:1.36@{DIGEST}"),
        ],
        &serde_json::json!({}),
        "default",
    );
    let denied = image_review(
        &["quay.io/team/app:latest"],
        &serde_json::json!({}),
        "default",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Arc::new(AtomicBool::new(true));
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let (ends, stop, warm) = (ends.clone(), stop.clone(), warm.clone());
            let body = if i % 4 == 3 {
                denied.clone()
            } else {
                allowed.clone()
            };
            std::thread::spawn(move || {
                let mut conn = Conn::connect(&ends, ends.apiserver_tls()).unwrap();
                let mut latencies = Vec::with_capacity(100_000);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = conn.post(&ends.path, &body).unwrap();
                    let took = t.elapsed();
                    assert_eq!(r.status, 200);
                    if !warm.load(Ordering::Relaxed) {
                        latencies.push(took);
                    }
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(if quick { 200 } else { 1000 }));
    warm.store(false, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let rss_kib = status_kib(pid, "VmRSS:");
    let hwm_kib = status_kib(pid, "VmHWM:");
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    let n = all.len();
    let pct = |q: f64| all[((n as f64 * q) as usize).min(n.saturating_sub(1))];
    let rate = n as f64 / elapsed.as_secs_f64();

    let mut metrics = String::new();
    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", metrics_port)) {
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let _ = s.read_to_string(&mut metrics);
    }
    let server_count = metrics
        .lines()
        .find(|l| l.starts_with("staticpin_serve_decision_duration_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("?")
        .to_string();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let code = server.wait().unwrap().code();

    println!("staticpin serve benchmark ({connections} keep-alive mTLS connections, {secs} s, {} CPUs shared with the clients)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("  decisions/s : {rate:.0} ({n} decisions; server counted {server_count} including warm-up)");
    println!("  latency p50 : {:.3} ms", pct(0.50).as_secs_f64() * 1e3);
    println!("  latency p99 : {:.3} ms", pct(0.99).as_secs_f64() * 1e3);
    println!(
        "  latency max : {:.3} ms",
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  server RSS  : {:.1} MiB now, {:.1} MiB peak",
        rss_kib as f64 / 1024.0,
        hwm_kib as f64 / 1024.0
    );
    println!("  exit after SIGTERM: {code:?}");
    println!(
        "  targets: >= 5000/s {}, p99 <= 5 ms {}, RSS <= 20 MiB {}",
        if rate >= 5000.0 { "met" } else { "MISSED" },
        if pct(0.99) <= Duration::from_millis(5) {
            "met"
        } else {
            "MISSED"
        },
        if hwm_kib <= 20 * 1024 {
            "met"
        } else {
            "MISSED"
        },
    );
}
