//! Benchmark: resolving a kubeadm control plane's five images.
//!
//! Starts a local TLS + htpasswd Basic `docker-registry`, pushes the five
//! kubeadm control-plane images (kube-apiserver, kube-controller-manager,
//! kube-scheduler, kube-proxy, etcd; each an amd64+arm64 OCI index) under
//! registry.k8s.io's repository names, and measures, interleaved in one run
//! (2 warm-ups, then the median of 15 repetitions), the wall time of:
//!
//! 1. the release `staticpin resolve` over the five images (one GET per
//!    image: it hashes and parses the manifest bytes it pins);
//! 2. a `skopeo inspect --raw` loop over the same images;
//! 3. ONE `curl --parallel --parallel-immediate -I` batch of the same five
//!    HEAD requests (same Basic credentials, full Accept header, --cacert):
//!    the floor.
//!
//! Target (issue 2): staticpin ≤ 1.5 × the curl floor. The benchmark also
//! checks that staticpin's digests equal curl's `Docker-Content-Digest`
//! headers and the sha256 of skopeo's raw manifests.
//!
//! Run: `cargo build --release && cargo bench --bench resolve`
//! (`cargo bench` builds the `staticpin` binary with the bench profile,
//! which inherits `release`; its path comes from `CARGO_BIN_EXE_staticpin`.)
//! Set `STATICPIN_BENCH_REPS` to change the number of repetitions.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{oracle_digest, sha256_digest, Layout, Pki, Registry, ALL_MANIFEST_TYPES};

const USER: &str = "kubeadm";
const PASS: &str = "bench-pass-1";
const WARMUPS: usize = 2;
const DEFAULT_REPS: usize = 15;
const TARGET_RATIO: f64 = 1.5;

/// (repository, tag) as on registry.k8s.io for Kubernetes v1.31.
const IMAGES: [(&str, &str); 5] = [
    ("kube-apiserver", "v1.31.2"),
    ("kube-controller-manager", "v1.31.2"),
    ("kube-scheduler", "v1.31.2"),
    ("kube-proxy", "v1.31.2"),
    ("etcd", "3.5.15-0"),
];

fn main() {
    // libtest-style flags (`--bench`, filters) are accepted and ignored.
    let reps: usize = std::env::var("STATICPIN_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_REPS);
    for tool in ["docker-registry", "skopeo", "curl", "openssl", "htpasswd"] {
        if !support::have_tool(tool) {
            fail(&format!(
                "{tool} is not on PATH (Debian: docker-registry skopeo curl openssl apache2-utils)"
            ));
        }
    }
    let staticpin = staticpin_binary();

    // ---- fixture -------------------------------------------------------
    let tmp = tempfile::Builder::new()
        .prefix("staticpin-bench-")
        .tempdir()
        .expect("tempdir");
    let root = tmp.path();
    let pki = Pki::new(root, "registry-ca");
    let reg = Registry::tls_basic(&root.join("storage"), &pki, USER, PASS);
    let layout = root.join("layout");
    let mut oracle = Vec::new();
    for (repo, tag) in IMAGES {
        Layout::index(&layout, repo, &["amd64", "arm64"], &format!("{repo}:{tag}")).push(
            &reg,
            repo,
            tag,
            Some((USER, PASS)),
        );
        oracle.push(oracle_digest(&reg, repo, tag, Some((USER, PASS))));
    }
    let images: Vec<String> = IMAGES
        .iter()
        .map(|(r, t)| format!("{}/{r}:{t}", reg.host))
        .collect();

    // staticpin's world: certs dir, docker config, empty HOME/cwd/kubelet dir.
    let certs = root.join("certs");
    std::fs::create_dir_all(certs.join(&reg.host)).unwrap();
    std::fs::copy(&pki.ca_crt, certs.join(&reg.host).join("ca.crt")).unwrap();
    let config = root.join("docker-config.json");
    support::docker_config(&config, &[(&reg.host, USER, PASS)]);
    for d in ["home", "cwd", "kubelet"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let skopeo_certs = pki.ca_dir();
    let skopeo_auth = root.join("skopeo-auth.json");

    let run_staticpin = || {
        let mut c = Command::new(&staticpin);
        c.current_dir(root.join("cwd"))
            .env("HOME", root.join("home"))
            .env_remove("STATICPIN_LOG")
            .arg("resolve")
            .arg("--kubelet-root-dir")
            .arg(root.join("kubelet"))
            .arg("--certs-dir")
            .arg(&certs)
            .arg("--docker-config")
            .arg(&config)
            .args(&images);
        timed(c)
    };
    let run_skopeo = || {
        let start = Instant::now();
        let outs: Vec<Output> = IMAGES
            .iter()
            .map(|(repo, tag)| {
                let mut c = Command::new("skopeo");
                c.env("REGISTRY_AUTH_FILE", &skopeo_auth)
                    .args([
                        "--insecure-policy",
                        "inspect",
                        "--raw",
                        "--retry-times",
                        "0",
                        "--cert-dir",
                    ])
                    .arg(&skopeo_certs)
                    .arg(format!("--creds={USER}:{PASS}"))
                    .arg(format!("docker://{}/{repo}:{tag}", reg.host));
                output(c)
            })
            .collect();
        (start.elapsed(), outs)
    };
    let run_curl = || {
        let mut c = Command::new("curl");
        c.args(["--parallel", "--parallel-immediate", "-s", "-I"])
            .arg("-u")
            .arg(format!("{USER}:{PASS}"))
            .arg("--cacert")
            .arg(&pki.ca_crt)
            .arg("-H")
            .arg(format!("Accept: {ALL_MANIFEST_TYPES}"))
            .arg("-w")
            .arg("%{http_code} %header{docker-content-digest} %{url}\\n");
        for (repo, tag) in IMAGES {
            c.arg("-o").arg("/dev/null");
            c.arg(format!("https://{}/v2/{repo}/manifests/{tag}", reg.host));
        }
        timed(c)
    };

    // ---- correctness (also the first warm-up) ---------------------------
    let (_, sp) = run_staticpin();
    check_success("staticpin", &sp);
    let sp_digests: Vec<String> = String::from_utf8_lossy(&sp.stdout)
        .lines()
        .map(|l| {
            l.rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default()
        })
        .collect();
    let (_, sk) = run_skopeo();
    let sk_digests: Vec<String> = sk
        .iter()
        .map(|o| {
            check_success("skopeo inspect", o);
            sha256_digest(&o.stdout)
        })
        .collect();
    let (_, cu) = run_curl();
    check_success("curl", &cu);
    let cu_digests = curl_digests(&cu, &images, &reg.host);
    let mut agree = true;
    println!("digests:");
    for (i, image) in images.iter().enumerate() {
        let same = sp_digests.get(i) == Some(&cu_digests[i])
            && cu_digests[i] == sk_digests[i]
            && sk_digests[i] == oracle[i];
        agree &= same;
        println!(
            "  {:<4} {image} {}",
            if same { "ok" } else { "DIFF" },
            cu_digests[i]
        );
        if !same {
            println!(
                "       staticpin {:?}\n       skopeo    {}\n       oracle    {}",
                sp_digests.get(i),
                sk_digests[i],
                oracle[i]
            );
        }
    }
    if !agree || sp_digests.len() != images.len() {
        fail("staticpin's digests differ from curl's Docker-Content-Digest / skopeo's manifests");
    }
    println!(
        "  staticpin digests == curl Docker-Content-Digest == sha256(skopeo inspect --raw): yes\n"
    );

    // ---- timing ---------------------------------------------------------
    for _ in 1..WARMUPS {
        run_staticpin();
        run_skopeo();
        run_curl();
    }
    let (mut t_sp, mut t_sk, mut t_cu) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        // Interleaved, so drift on a shared machine hits all three alike.
        let (d, o) = run_staticpin();
        check_success("staticpin", &o);
        t_sp.push(d);
        let (d, os) = run_skopeo();
        os.iter().for_each(|o| check_success("skopeo inspect", o));
        t_sk.push(d);
        let (d, o) = run_curl();
        check_success("curl", &o);
        curl_digests(&o, &images, &reg.host); // every timed batch answered 200
        t_cu.push(d);
    }

    let (sp_med, sk_med, cu_med) = (median(&mut t_sp), median(&mut t_sk), median(&mut t_cu));
    println!(
        "Resolving {} multi-arch images from a local TLS + Basic registry ({}), median of {reps} runs after {WARMUPS} warm-ups:\n",
        images.len(),
        reg.host
    );
    println!(
        "  {:<44} {:>10} {:>10} {:>10} {:>9}",
        "", "median ms", "min ms", "max ms", "÷ curl"
    );
    for (name, med, all) in [
        ("staticpin resolve (5 images, one process)", sp_med, &t_sp),
        ("skopeo inspect --raw loop (5 processes)", sk_med, &t_sk),
        ("curl --parallel -I batch (floor)", cu_med, &t_cu),
    ] {
        println!(
            "  {:<44} {:>10.1} {:>10.1} {:>10.1} {:>8.2}×",
            name,
            ms(med),
            ms(*all.iter().min().unwrap()),
            ms(*all.iter().max().unwrap()),
            ms(med) / ms(cu_med)
        );
    }
    let ratio = ms(sp_med) / ms(cu_med);
    println!();
    println!("  staticpin / curl = {:.2}×", ratio);
    println!("  skopeo    / curl = {:.2}×", ms(sk_med) / ms(cu_med));
    println!(
        "  target staticpin ≤ {TARGET_RATIO}× curl: {}",
        if ratio <= TARGET_RATIO {
            "MET"
        } else {
            "NOT MET"
        }
    );
    println!("\n  binary: {}", staticpin.display());
}

/// The release binary. Cargo gives benchmarks `CARGO_BIN_EXE_<name>` (built
/// with the bench profile, which inherits `release`); otherwise look for
/// `release/staticpin` under CARGO_TARGET_DIR or the crate's `target/`.
fn staticpin_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(p) = option_env!("CARGO_BIN_EXE_staticpin") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(d) =
        std::env::var_os("CARGO_TARGET_DIR").or(option_env!("CARGO_TARGET_DIR").map(Into::into))
    {
        candidates.push(PathBuf::from(d).join("release/staticpin"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/staticpin"));
    for c in &candidates {
        if c.is_file() {
            if !c.components().any(|p| p.as_os_str() == "release") {
                println!(
                    "warning: {} does not look like a release build",
                    c.display()
                );
            }
            return c.clone();
        }
    }
    fail(&format!(
        "no release staticpin binary found (looked at {}); run `cargo build --release && cargo bench --bench resolve`",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    ))
}

fn output(mut c: Command) -> Output {
    c.stdin(Stdio::null());
    c.output()
        .unwrap_or_else(|e| fail(&format!("cannot run {c:?}: {e}")))
}

fn timed(c: Command) -> (Duration, Output) {
    let start = Instant::now();
    let out = output(c);
    (start.elapsed(), out)
}

fn check_success(what: &str, o: &Output) {
    if !o.status.success() {
        fail(&format!(
            "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
}

/// Digest per image from curl's `-w` lines (any order); panics unless every
/// request answered 200 with a digest.
fn curl_digests(o: &Output, images: &[String], host: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&o.stdout);
    images
        .iter()
        .map(|image| {
            let (name, tag) = image[host.len() + 1..].rsplit_once(':').unwrap();
            let url = format!("https://{host}/v2/{name}/manifests/{tag}");
            let line = text
                .lines()
                .find(|l| l.ends_with(&format!(" {url}")))
                .unwrap_or_else(|| fail(&format!("curl printed nothing for {url}:\n{text}")));
            let mut parts = line.split(' ');
            let (status, digest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if status != "200" || !digest.starts_with("sha256:") {
                fail(&format!(
                    "curl: {url} answered {status} with digest {digest:?}:\n{text}"
                ));
            }
            digest.to_string()
        })
        .collect()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fail(msg: &str) -> ! {
    eprintln!("bench resolve: {msg}");
    std::process::exit(1);
}
