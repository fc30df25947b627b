//! `staticpin watch`, binary-level, against a real docker-registry: the
//! notify protocol (a NOTIFY_SOCKET this test listens on), file events
//! from kubeadm-style renames and slow in-place writes, the kubeadm upgrade
//! hold, a registry going away, the health gate's memory, reload and stop.
//! Every test counts writes (backups in the backup tree, and the daemon's
//! "written" log lines) and checks they equal the changes needed. Plus the
//! systemd unit: `systemd-analyze verify` and its security exposure.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::apiserver::{write_livez, Apiserver, ETCD_DOWN, OK};
use support::node::{pod, Node, BIN};
use support::{wait_until, Pki};

const WAIT: Duration = Duration::from_secs(20);

/// A running `staticpin watch`, its notify datagrams and its stderr.
struct Watch {
    child: Option<Child>,
    notes: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

fn watch(node: &Node, extra: &[&str]) -> Watch {
    watch_env(node, extra, &[])
}

fn watch_env(node: &Node, extra: &[&str], env: &[(&str, &str)]) -> Watch {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let sock_path = node.path(&format!("notify-{}.sock", N.fetch_add(1, Ordering::SeqCst)));
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let notes = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (notes, stop) = (notes.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    notes.lock().unwrap().push(text);
                }
            }
        });
    }
    let mut cmd = node.watch_command(&sock_path);
    cmd.envs(env.iter().copied())
        .stderr(Stdio::piped())
        .args(["--timeout", "5", "--retries", "0", "--debounce", "50ms"])
        .args(extra);
    if !extra.contains(&"--health-url") {
        cmd.arg("--no-health-gate");
    }
    if !extra.contains(&"--resync") {
        cmd.args(["--resync", "30s"]);
    }
    let mut child = cmd.spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    {
        let log = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    Watch {
        child: Some(child),
        notes,
        log,
        stop,
    }
}

impl Watch {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }

    fn count(&self, what: &str) -> usize {
        self.notes()
            .iter()
            .filter(|n| n.lines().any(|l| l == what))
            .count()
    }

    /// Waits until `n` notifications carry the line `what`.
    fn wait_note(&self, what: &str, n: usize) {
        wait_until(WAIT, || (self.count(what) >= n).then_some(())).unwrap_or_else(|| {
            panic!(
                "no {n}× {what:?}; got {:?}\n--- log ---\n{}",
                self.notes(),
                self.log()
            )
        })
    }

    fn wait_log(&self, needle: &str) {
        wait_until(WAIT, || self.log().contains(needle).then_some(()))
            .unwrap_or_else(|| panic!("log never said {needle:?}\n--- log ---\n{}", self.log()))
    }

    fn last_status(&self) -> String {
        self.notes()
            .iter()
            .rev()
            .flat_map(|n| n.lines().map(str::to_string).collect::<Vec<_>>())
            .find(|l| l.starts_with("STATUS="))
            .unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM; the exit code and how long it took.
    fn terminate(&mut self) -> (Option<i32>, Duration) {
        let start = Instant::now();
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        let status = wait_until(Duration::from_secs(10), || child.try_wait().unwrap())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("watch did not exit on SIGTERM")
            });
        (status.code(), start.elapsed())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Files backed up so far: one per write staticpin made.
fn writes(node: &Node) -> usize {
    node.runs()
        .iter()
        .map(|run| {
            std::fs::read_dir(node.backups().join(run))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() != "index.json")
                .count()
        })
        .sum()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn wait_file(p: &Path, want: &str, w: &Watch) {
    wait_until(WAIT, || (read(p) == want).then_some(())).unwrap_or_else(|| {
        panic!(
            "{} never became\n{want}\nit is\n{}\n--- log ---\n{}",
            p.display(),
            read(p),
            w.log()
        )
    })
}

/// Long enough for a debounced event (50 ms) and the pass after it.
fn settle() {
    std::thread::sleep(Duration::from_millis(600));
}

/// A stand-in kube-apiserver whose `/livez` says etcd is down until told
/// otherwise, for the health gate to judge.
struct Unhealthy {
    _srv: Apiserver,
    www: PathBuf,
    url: String,
    ca: String,
}

impl Unhealthy {
    fn start(node: &Node, pki: &Pki) -> Unhealthy {
        let www = node.path("www");
        std::fs::create_dir_all(&www).unwrap();
        write_livez(&www, ETCD_DOWN);
        let srv = Apiserver::start(&www, &pki.server_crt, &pki.server_key, &[]);
        Unhealthy {
            url: srv.url(),
            ca: pki.ca_crt.display().to_string(),
            _srv: srv,
            www,
        }
    }

    /// The gate's flags (no settle time, `timeout` seconds), then `more`.
    fn flags<'a>(&'a self, timeout: &'a str, more: &[&'a str]) -> Vec<&'a str> {
        let mut f = vec![
            "--health-url",
            self.url.as_str(),
            "--health-ca",
            self.ca.as_str(),
            "--health-settle",
            "0",
            "--health-timeout",
            timeout,
        ];
        f.extend_from_slice(more);
        f
    }
}

/// The first pass wrote, the gate failed, the file holds `original` again.
fn wait_rolled_back(w: &Watch, file: &Path, original: &str) {
    w.wait_note("READY=1", 1);
    // Normally before READY=1; later if a loaded machine made the first
    // pass's registry request time out and the retry did it.
    w.wait_log("restored the previous manifest");
    assert_eq!(read(file), original, "{}", w.log());
}

/// After an input changed, the refused change is tried again exactly once:
/// the `n`th write comes, and several resyncs later no other has.
fn retried_once(node: &Node, w: &Watch, n: usize, after: &str) {
    wait_until(WAIT, || (writes(node) == n).then_some(()))
        .unwrap_or_else(|| panic!("not retried after {after}\n{}", w.log()));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(writes(node), n, "{}", w.log());
}

/// A manifest written elsewhere on the same file system and renamed in,
/// as kubeadm upgrade does.
fn rename_in(from_dir: &Path, to: &Path, text: &str) {
    std::fs::create_dir_all(from_dir).unwrap();
    let staged = from_dir.join(to.file_name().unwrap());
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

#[test]
fn ready_after_the_first_pass_then_a_dropped_in_manifest_is_pinned() {
    let node = Node::new("");
    let sched = node.push("kube-scheduler", "v1.31.0");
    let etcd = node.push("etcd", "3.5.16-0");
    let a = node.manifests().join("kube-scheduler.yaml");
    let image_a = format!("{}/kube-scheduler:v1.31.0", node.reg.host);
    std::fs::write(&a, pod("kube-scheduler", &image_a, "a")).unwrap();

    let w = watch(&node, &[]);
    w.wait_note("READY=1", 1);
    // Before the first pass, systemd is told how long it may take (the run
    // deadline, 5 min by default, plus a minute; the gate is off here).
    assert!(
        w.notes()
            .first()
            .is_some_and(|n| n.lines().any(|l| l == "EXTEND_TIMEOUT_USEC=360000000")),
        "{:?}",
        w.notes()
    );
    // READY=1 only after the first pass: the file is pinned by then.
    assert_eq!(
        read(&a),
        pod("kube-scheduler", &format!("{image_a}@{sched}"), "a")
    );
    assert!(
        w.last_status().contains("1 manifests: 1 pinned"),
        "{:?}",
        w.notes()
    );

    let b = node.manifests().join("etcd.yaml");
    let image_b = format!("{}/etcd:3.5.16-0", node.reg.host);
    std::fs::write(&b, pod("etcd", &image_b, "b")).unwrap();
    wait_file(&b, &pod("etcd", &format!("{image_b}@{etcd}"), "b"), &w);
    w.wait_log(&format!("{image_b} -> {image_b}@{etcd}"));

    // Its own rename raised events; the pass after them wrote nothing.
    settle();
    assert_eq!(writes(&node), 2, "{}", w.log());
    assert_eq!(w.log().matches(": written (").count(), 2, "{}", w.log());
    wait_until(WAIT, || {
        w.last_status()
            .contains("2 manifests: 2 pinned")
            .then_some(())
    })
    .expect("STATUS kept current");
}

#[test]
fn kubeadm_upgrade_renames_are_repinned_but_not_while_kubeadm_runs() {
    let node = Node::new("");
    let v1 = node.push("kube-scheduler", "v1.31.0");
    let v2 = node.push("kube-scheduler", "v1.31.1");
    let v3 = node.push("kube-scheduler", "v1.32.0");
    let img = |t: &str| format!("{}/kube-scheduler:{t}", node.reg.host);
    let file = node.manifests().join("kube-scheduler.yaml");
    std::fs::write(&file, pod("kube-scheduler", &img("v1.31.0"), "x")).unwrap();
    let w = watch(&node, &[]);
    w.wait_note("READY=1", 1);
    assert!(read(&file).contains(&v1));

    // kubeadm writes the new manifest beside (same file system) and renames it over.
    let tmp = node.path("kubeadm-tmp");
    rename_in(
        &tmp.join("staging-a"),
        &file,
        &pod("kube-scheduler", &img("v1.31.1"), "x"),
    );
    wait_file(
        &file,
        &pod("kube-scheduler", &format!("{}@{v2}", img("v1.31.1")), "x"),
        &w,
    );

    // Mid-upgrade: the staging directory exists; nothing is written.
    let staging = tmp.join("kubeadm-upgraded-manifests123");
    let upgraded = pod("kube-scheduler", &img("v1.32.0"), "x");
    rename_in(&staging, &file, &upgraded);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        read(&file),
        upgraded,
        "written during the upgrade\n{}",
        w.log()
    );
    assert!(
        w.log().contains("kubeadm upgrade in progress"),
        "{}",
        w.log()
    );
    assert!(
        w.last_status().contains("kubeadm upgrade"),
        "{:?}",
        w.notes()
    );
    // The backup directories kubeadm leaves behind do not hold anything.
    std::fs::create_dir_all(tmp.join("kubeadm-backup-manifests-2026-01-01-00-00-00")).unwrap();
    std::fs::remove_dir_all(&staging).unwrap();
    wait_file(
        &file,
        &pod("kube-scheduler", &format!("{}@{v3}", img("v1.32.0")), "x"),
        &w,
    );
    settle();
    assert_eq!(writes(&node), 3, "{}", w.log());
}

#[test]
fn a_slowly_written_file_is_pinned_once_complete_and_never_half_way() {
    let node = Node::new("");
    let digest = node.push("kube-scheduler", "v1.31.0");
    let etcd_digest = node.push("etcd", "3.5.16-0");
    let image = format!("{}/kube-scheduler:v1.31.0", node.reg.host);
    let w = watch(&node, &[]);
    w.wait_note("READY=1", 1);

    let full = pod("kube-scheduler", &image, "slow");
    // The first half is itself a valid Pod: acting on it would pin and
    // rename it, and the writer's second half would land in the old inode.
    let cut = full.find("    command:").unwrap();
    let file = node.manifests().join("kube-scheduler.yaml");
    let mut f = std::fs::File::create(&file).unwrap();
    f.write_all(&full.as_bytes()[..cut]).unwrap();
    f.flush().unwrap();
    // Another file's event runs a pass while this one is still open.
    let etcd = node.manifests().join("etcd.yaml");
    let etcd_image = format!("{}/etcd:3.5.16-0", node.reg.host);
    std::fs::write(&etcd, pod("etcd", &etcd_image, "e")).unwrap();
    wait_file(
        &etcd,
        &pod("etcd", &format!("{etcd_image}@{etcd_digest}"), "e"),
        &w,
    );
    settle();
    assert_eq!(
        read(&file),
        full[..cut],
        "touched while still open\n{}",
        w.log()
    );
    f.write_all(&full.as_bytes()[cut..]).unwrap();
    drop(f);
    wait_file(
        &file,
        &full.replace(&image, &format!("{image}@{digest}")),
        &w,
    );
    settle();
    assert_eq!(writes(&node), 2, "{}", w.log());

    // Half a Pod that does not parse is reported once and never rewritten.
    let broken = node.manifests().join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: [\n",
    )
    .unwrap();
    settle();
    std::fs::write(node.manifests().join("notes.txt"), "x").unwrap();
    settle();
    assert_eq!(
        read(&broken),
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: [\n"
    );
    assert_eq!(
        w.log().matches("broken.yaml: skipped").count(),
        1,
        "{}",
        w.log()
    );
    assert_eq!(writes(&node), 2, "{}", w.log());
}

#[test]
fn registry_down_leaves_files_alone_retries_and_pins_from_the_cache() {
    let mut node = Node::new("");
    let v1 = node.push("kube-scheduler", "v1.31.0");
    let v2 = node.push("kube-scheduler", "v1.31.1");
    let host = node.reg.host.clone();
    let img = |t: &str| format!("{host}/kube-scheduler:{t}");
    let a = node.manifests().join("a.yaml");
    std::fs::write(&a, pod("kube-scheduler", &img("v1.31.0"), "a")).unwrap();
    let mut w = watch(&node, &[]);
    w.wait_note("READY=1", 1);
    assert!(read(&a).contains(&v1));
    assert!(node.path("state/digests.json").is_file());

    node.reg.stop();
    let b = node.manifests().join("b.yaml");
    let b_text = pod("kube-scheduler", &img("v1.31.1"), "b");
    std::fs::write(&b, &b_text).unwrap();
    w.wait_log("b.yaml: ");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(read(&b), b_text);
    assert!(w.alive(), "{}", w.log());
    // Logged once per state change, not once per attempt.
    assert_eq!(
        w.log().matches("retrying with backoff").count(),
        1,
        "{}",
        w.log()
    );

    node.reg.restart();
    wait_file(
        &b,
        &pod("kube-scheduler", &format!("{}@{v2}", img("v1.31.1")), "b"),
        &w,
    );
    assert_eq!(writes(&node), 2);

    // Restarted while the registry is down: a tag seen before comes from the cache.
    let (code, _) = w.terminate();
    assert_eq!(code, Some(0));
    node.reg.stop();
    let c = node.manifests().join("c.yaml");
    std::fs::write(&c, pod("kube-scheduler", &img("v1.31.0"), "c")).unwrap();
    let w = watch(&node, &[]);
    w.wait_note("READY=1", 1);
    assert_eq!(
        read(&c),
        pod("kube-scheduler", &format!("{}@{v1}", img("v1.31.0")), "c"),
        "{}",
        w.log()
    );
    w.wait_log("from cache, resolved at ");
    assert_eq!(writes(&node), 3);
}

#[test]
fn a_change_that_fails_the_health_gate_is_rolled_back_once_and_not_retried() {
    let node = Node::new("");
    node.push("kube-apiserver", "v1.31.0");
    let pki = Pki::new(node.tmp.path(), "cluster");
    let down = Unhealthy::start(&node, &pki);
    let image = format!("{}/kube-apiserver:v1.31.0", node.reg.host);
    let file = node.manifests().join("kube-apiserver.yaml");
    let original = pod("kube-apiserver", &image, "original");
    std::fs::write(&file, &original).unwrap();

    let w = watch(&node, &down.flags("1", &["--resync", "300ms"]));
    wait_rolled_back(&w, &file, &original);
    wait_until(WAIT, || {
        w.last_status()
            .contains("failed the health gate")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}", w.notes()));
    // Several resyncs later: still only the one write.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(writes(&node), 1, "{}", w.log());
    assert_eq!(read(&file), original);
    assert!(node.path("state/gate-memory.json").is_file());

    // The input changes: tried again, once.
    let edited = pod("kube-apiserver", &image, "edited");
    node.kubeadm_write(&file, &edited);
    retried_once(&node, &w, 2, "an edit");
    assert_eq!(read(&file), edited);
}

/// [`admission_init`], then wiring switched on in the config file (not a
/// flag: under systemd the daemon runs with none); the admission config.
fn admission_enabled(node: &Node, webhook: &Pki, dir: &Path) -> PathBuf {
    admission_init(node, webhook, dir);
    let admission_config = dir.join("admission_config.yaml");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(node.path("config.yaml"))
        .unwrap();
    writeln!(
        f,
        "admission:\n  enabled: true\n  configFile: {}",
        admission_config.display()
    )
    .unwrap();
    admission_config
}

/// `staticpin admission init` into `dir`, for a webhook signed by `webhook`.
fn admission_init(node: &Node, webhook: &Pki, dir: &Path) {
    let out = support::run_output(
        Command::new(BIN)
            .env_clear()
            .env("HOME", node.path("home"))
            .current_dir(node.path("cwd"))
            .args(webhook.admission_init_args(dir, &node.manifests())),
    );
    assert!(
        out.status.success(),
        "admission init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kubeadm's kube-apiserver manifest from the wiring fixtures (`wiring` as
/// kubeadm writes it, `wiring-expected` as wired into `admission`), running
/// `image`; `extra` flags stand in for a later kubeadm edit.
fn apiserver_manifest(set: &str, admission: &Path, image: &str, extra: &[&str]) -> String {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(set)
        .join("kubeadm-default.yaml");
    let text = read(&fixture).replace("{{ADMISSION}}", admission.to_str().unwrap());
    let old = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .expect("the fixture names an image")
        .to_string();
    let mut text = text.replace(&old, image);
    for flag in extra {
        text = text.replace(
            "    - kube-apiserver\n",
            &format!("    - kube-apiserver\n    - {flag}\n"),
        );
    }
    text
}

fn sha256_hex(bytes: &[u8]) -> String {
    support::sha256_digest(bytes)["sha256:".len()..].to_string()
}

/// The one change the health gate's memory holds: (before, after, inputs).
fn refused(node: &Node, file: &Path) -> (String, String, String) {
    let text = read(&node.path("state/gate-memory.json"));
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(entries.len(), 1, "{text}");
    let e = &entries[0];
    assert_eq!(e["file"].as_str(), file.to_str(), "{text}");
    let field = |k: &str| {
        e[k].as_str()
            .unwrap_or_else(|| panic!("no {k}: {text}"))
            .to_string()
    };
    (field("before"), field("after"), field("inputs"))
}

/// The case: the apiserver image is already pinned, so the only
/// change the daemon wants is the ImagePolicyWebhook wiring, and an
/// apiserver that never comes back must not be restarted into it on every
/// resync. Both inputs the memory watches are changed in turn: the
/// manifest (a kubeadm edit) and the admission files.
#[test]
fn a_wiring_change_that_fails_the_health_gate_is_rolled_back_once_and_not_retried() {
    let node = Node::new("");
    let digest = node.push("kube-apiserver", "v1.31.0");
    let cluster = Pki::new(node.tmp.path(), "cluster");
    let webhook = Pki::new(node.tmp.path(), "webhook");
    let admission = node.path("admission");
    let admission_config = admission_enabled(&node, &webhook, &admission);

    let down = Unhealthy::start(&node, &cluster);
    let image = format!("{}/kube-apiserver:v1.31.0@{digest}", node.reg.host);
    let file = node.manifests().join("kube-apiserver.yaml");
    let original = apiserver_manifest("wiring", &admission, &image, &[]);
    std::fs::write(&file, &original).unwrap();

    let w = watch(&node, &down.flags("1", &["--resync", "300ms"]));
    wait_rolled_back(&w, &file, &original);
    // The write before the rollback is logged like any other.
    assert!(
        w.log().contains("written (0 pinned, admission wired)"),
        "{}",
        w.log()
    );
    wait_until(WAIT, || {
        w.last_status()
            .contains("failed the health gate")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}", w.notes()));
    assert!(
        w.last_status().contains("apiserver not wired"),
        "{:?}",
        w.notes()
    );
    // What failed the gate was the golden wiring and nothing else: no pin,
    // no other edit. The log does not say, so the memory's hash tells.
    let wired = apiserver_manifest("wiring-expected", &admission, &image, &[]);
    let (before, after, inputs) = refused(&node, &file);
    assert_eq!(before, sha256_hex(original.as_bytes()));
    assert_eq!(after, sha256_hex(wired.as_bytes()));
    // Several resyncs later: still only the one write.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(writes(&node), 1, "{}", w.log());
    assert_eq!(read(&file), original);

    // The manifest changes: tried again, once.
    let edited = apiserver_manifest("wiring", &admission, &image, &["--v=2"]);
    node.kubeadm_write(&file, &edited);
    retried_once(&node, &w, 2, "a manifest edit");
    assert_eq!(read(&file), edited);
    let (before, after_edit, same_inputs) = refused(&node, &file);
    assert_eq!(before, sha256_hex(edited.as_bytes()));
    assert_ne!(after_edit, after);
    assert_eq!(same_inputs, inputs);

    // An admission file changes: tried again, once.
    let text = read(&admission_config);
    std::fs::write(&admission_config, format!("{text}# rotated\n")).unwrap();
    retried_once(&node, &w, 3, "an admission file change");
    assert_eq!(read(&file), edited);
    let (before, after, new_inputs) = refused(&node, &file);
    assert_eq!(before, sha256_hex(edited.as_bytes()));
    assert_eq!(after, after_edit);
    assert_ne!(new_inputs, inputs);
    assert_eq!(
        w.log()
            .matches("did not become healthy after the change and it was rolled back")
            .count(),
        3,
        "{}",
        w.log()
    );
}

#[test]
fn sighup_reloads_or_keeps_the_old_config_and_sigterm_exits_quickly() {
    let node = Node::new("");
    let digest = node.push("etcd", "3.5.16-0");
    // WatchdogSec=1s: the loop itself pings at half that, idle or not.
    let mut w = watch_env(&node, &[], &[("WATCHDOG_USEC", "1000000")]);
    w.wait_note("READY=1", 1);
    w.wait_note("WATCHDOG=1", 2);

    let config = node.path("config.yaml");
    let good = read(&config);
    std::fs::write(&config, format!("{good}keepBackups: 5\n")).unwrap();
    w.signal("HUP");
    w.wait_note("READY=1", 2);
    let reloading = w
        .notes()
        .into_iter()
        .find(|n| n.lines().any(|l| l == "RELOADING=1"))
        .unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    assert!(w.log().contains("configuration reloaded"), "{}", w.log());

    std::fs::write(&config, format!("{good}keepBackupz: 5\n")).unwrap();
    w.signal("HUP");
    w.wait_note("READY=1", 3);
    assert_eq!(w.count("RELOADING=1"), 2);
    assert!(
        w.last_status().contains("config reload failed"),
        "{:?}",
        w.notes()
    );
    assert!(w.log().contains("keepBackupz"), "{}", w.log());
    assert!(w.alive());

    // The old config still works.
    let image = format!("{}/etcd:3.5.16-0", node.reg.host);
    let file = node.manifests().join("etcd.yaml");
    std::fs::write(&file, pod("etcd", &image, "x")).unwrap();
    wait_file(&file, &pod("etcd", &format!("{image}@{digest}"), "x"), &w);
    assert_eq!(writes(&node), 1);

    let (code, took) = w.terminate();
    assert_eq!(code, Some(0), "{}", w.log());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(w.count("STOPPING=1") >= 1, "{:?}", w.notes());
}

/// `systemd-analyze verify` needs ExecStart to exist, so the check runs on a
/// copy pointing at the built binary; the security score on the unit itself.
#[test]
fn the_unit_verifies_and_its_exposure_is_at_most_2_5() {
    if !support::systemd::have_analyze("the_unit_verifies_and_its_exposure_is_at_most_2_5") {
        return;
    }
    let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/staticpin.service");
    let text = read(&unit);
    assert!(text.contains("ExecStart=/usr/bin/staticpin watch\n"));
    assert!(!text.contains("Before=kubelet"), "must never delay kubelet");
    support::systemd::verify(&unit);
    let (score, text) = support::systemd::exposure(&unit);
    assert!(score <= 2.5, "exposure {score}:\n{text}");
}

/// The one-shot `pin` shares the daemon's cache: a registry that cannot be
/// reached still gets a tag seen before pinned, and the report says so;
/// `--offline` asks nobody and pins only what the cache knows.
#[test]
fn one_shot_pin_uses_the_same_digest_cache() {
    let mut node = Node::new("");
    let digest = node.push("etcd", "3.5.16-0");
    node.push("etcd", "3.6.0-0");
    let host = node.reg.host.clone();
    let image = format!("{host}/etcd:3.5.16-0");
    let a = node.manifests().join("a.yaml");
    std::fs::write(&a, pod("etcd", &image, "a")).unwrap();
    let out = node.run("pin", &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!out.stdout.contains("from cache"), "{out}");
    let cache = node.path("state/digests.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cache).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    node.reg.stop();
    let b = node.manifests().join("b.yaml");
    std::fs::write(&b, pod("etcd", &image, "b")).unwrap();
    let c = node.manifests().join("c.yaml");
    let unseen = pod("etcd", &format!("{host}/etcd:3.6.0-0"), "c");
    std::fs::write(&c, &unseen).unwrap();
    let out = node.run("pin", &["--retries", "0"]);
    assert_eq!(out.code, Some(2), "c was never resolved: {out}");
    assert_eq!(
        read(&b),
        pod("etcd", &format!("{image}@{digest}"), "b"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("{image}: from cache, resolved at 20")),
        "{out}"
    );
    assert_eq!(read(&c), unseen);

    std::fs::write(&b, pod("etcd", &image, "b2")).unwrap();
    let out = node.run("pin", &["--offline"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stdout.contains("(offline)"), "{out}");
    assert!(
        out.stderr
            .contains("offline, and the digest cache has no entry"),
        "{out}"
    );
    assert_eq!(read(&b), pod("etcd", &format!("{image}@{digest}"), "b2"));
    assert_eq!(read(&c), unseen);
}

/// Issue 10 in the daemon: each resync checks pinned tags for drift and
/// reports a new drift once (log, STATUS=, the metrics file), but moves the
/// pin only when `update: true` is configured.
#[test]
fn drift_is_reported_on_resync_and_moved_only_with_update() {
    let node = Node::new("");
    let metrics = node.path("textfile/staticpin.prom");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    let config = node.path("config.yaml");
    let append = |line: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    };
    append(&format!("metricsFile: {}", metrics.display()));
    let old = node.push("app", "v1");
    let file = node.manifests().join("app.yaml");
    let image = format!("{}/app:v1", node.reg.host);
    std::fs::write(&file, pod("app", &image, "a")).unwrap();

    let mut w = watch(&node, &["--resync", "1s"]);
    w.wait_note("READY=1", 1);
    let pinned_old = pod("app", &format!("{image}@{old}"), "a");
    assert_eq!(read(&file), pinned_old);

    // The tag moves on to new content.
    support::Layout::image(
        &node.path("layouts/app-v1-b"),
        "v1",
        "amd64",
        "app:v1 again",
    )
    .push(&node.reg, "app", "v1", None);
    let new = support::oracle_digest(&node.reg, "app", "v1", None);
    assert_ne!(new, old);
    w.wait_log(&format!(
        "tag drifted, now names {new}; left pinned (update is off)"
    ));
    wait_until(WAIT, || w.last_status().contains("1 drifted").then_some(()))
        .unwrap_or_else(|| panic!("STATUS never said drifted: {:?}", w.notes()));
    wait_until(WAIT, || {
        std::fs::read_to_string(&metrics)
            .ok()
            .filter(|m| m.contains("staticpin_images{state=\"drifted\"} 1"))
    })
    .unwrap_or_else(|| {
        panic!(
            "metrics never showed the drift: {:?}",
            std::fs::read_to_string(&metrics)
        )
    });
    // Several resyncs later: logged once, and the pin has not moved.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(w.log().matches("tag drifted").count(), 1, "{}", w.log());
    assert_eq!(read(&file), pinned_old);
    assert_eq!(w.terminate().0, Some(0));

    // With update: true the daemon's pass moves the pin to the new digest.
    append("update: true");
    let w = watch(&node, &["--resync", "1s"]);
    wait_file(&file, &pod("app", &format!("{image}@{new}"), "a"), &w);
}

/// The run deadline bounds one pass, not the daemon's lifetime: a daemon
/// that has been up longer than `deadline` still reaches its registry.
#[test]
fn the_deadline_is_per_pass_not_per_daemon() {
    let node = Node::new("");
    let w = watch(&node, &["--deadline", "2s"]);
    w.wait_note("READY=1", 1);
    std::thread::sleep(Duration::from_millis(2500));
    let digest = node.push("late", "v1");
    let file = node.manifests().join("late.yaml");
    let image = format!("{}/late:v1", node.reg.host);
    std::fs::write(&file, pod("late", &image, "a")).unwrap();
    wait_file(&file, &pod("late", &format!("{image}@{digest}"), "a"), &w);
}

/// SIGTERM while a kube-apiserver change waits for the health gate: the
/// daemon still exits 0 within 2 s, and the unverified change is rolled
/// back rather than left behind unchecked. Being stopped is no verdict on
/// the change, so nothing is remembered and the next start tries it again.
#[test]
fn sigterm_during_the_health_gate_rolls_back_and_forgets_nothing() {
    let node = Node::new("");
    let digest = node.push("kube-apiserver", "v1.31.0");
    let pki = Pki::new(node.tmp.path(), "cluster");
    let down = Unhealthy::start(&node, &pki);
    let image = format!("{}/kube-apiserver:v1.31.0", node.reg.host);
    let file = node.manifests().join("kube-apiserver.yaml");
    let original = pod("kube-apiserver", &image, "original");
    std::fs::write(&file, &original).unwrap();

    let gate = down.flags("60", &[]);
    let mut w = watch(&node, &gate);
    let pinned = pod("kube-apiserver", &format!("{image}@{digest}"), "original");
    wait_file(&file, &pinned, &w);

    let (code, took) = w.terminate();
    assert_eq!(code, Some(0), "{}", w.log());
    assert!(took < Duration::from_secs(2), "took {took:?}\n{}", w.log());
    assert_eq!(read(&file), original, "{}", w.log());
    // systemd was told the first pass may take the deadline (300 s), the
    // gate (0 + 60 s) and a minute: no start timeout cuts the gate short.
    assert_eq!(
        w.count("EXTEND_TIMEOUT_USEC=420000000"),
        1,
        "{:?}",
        w.notes()
    );
    let log = w.log();
    assert!(
        log.contains("stopped before kube-apiserver answered healthy")
            && log.contains("restored the previous manifest"),
        "{log}"
    );
    assert_eq!(writes(&node), 1);
    let memory = std::fs::read_to_string(node.path("state/gate-memory.json")).unwrap_or_default();
    assert!(!memory.contains("kube-apiserver.yaml"), "{memory}");

    // Healthy now: the next start applies the change and keeps it.
    write_livez(&down.www, OK);
    let w = watch(&node, &gate);
    w.wait_note("READY=1", 1);
    assert_eq!(read(&file), pinned, "{}", w.log());
    assert_eq!(writes(&node), 2);
}

/// The manifest directory missing at start, then appearing, then replaced
/// by another directory (renamed away and a new one renamed in): seen
/// through the parent's watch each time, re-armed, and its files pinned.
#[test]
fn a_manifest_directory_that_appears_later_or_is_replaced_is_watched_again() {
    let node = Node::new("");
    let digest = node.push("etcd", "3.5.16-0");
    let image = format!("{}/etcd:3.5.16-0", node.reg.host);
    let dir = node.manifests();
    std::fs::remove_dir_all(&dir).unwrap();

    let w = watch(&node, &[]);
    w.wait_note("READY=1", 1);
    assert!(w.last_status().contains("waiting for"), "{:?}", w.notes());

    let first = node.path("manifests.first");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::write(first.join("etcd.yaml"), pod("etcd", &image, "one")).unwrap();
    std::fs::rename(&first, &dir).unwrap();
    let file = dir.join("etcd.yaml");
    wait_file(&file, &pod("etcd", &format!("{image}@{digest}"), "one"), &w);

    let next = node.path("manifests.next");
    std::fs::create_dir_all(&next).unwrap();
    std::fs::write(next.join("etcd.yaml"), pod("etcd", &image, "two")).unwrap();
    std::fs::rename(&dir, node.path("manifests.old")).unwrap();
    std::fs::rename(&next, &dir).unwrap();
    wait_file(&file, &pod("etcd", &format!("{image}@{digest}"), "two"), &w);

    // And the new directory's own events still arrive.
    std::fs::write(dir.join("etcd.yaml"), pod("etcd", &image, "three")).unwrap();
    wait_file(
        &file,
        &pod("etcd", &format!("{image}@{digest}"), "three"),
        &w,
    );
    settle();
    assert_eq!(writes(&node), 3, "{}", w.log());
}

/// The daemon's prefetch runs between passes, typically long after the
/// last pass began; the run deadline must not have already run out for it.
/// Seen through the library: a prefetched answer means the fallback
/// resolver (which always fails) is never needed.
#[test]
fn a_prefetch_long_after_the_last_pass_still_reaches_the_registry() {
    use staticpin::policy::Policy;
    use staticpin::reference::ImageRef;
    use staticpin::registry::{self, HttpResolver, Resolution, ResolveError, Resolver};
    use staticpin::watch::prefetch::{Prefetch, Prefetched};

    struct Unreachable;
    impl Resolver for Unreachable {
        async fn resolve(&self, image: &ImageRef) -> Result<Resolution, ResolveError> {
            Err(ResolveError {
                image: image.to_string(),
                registry: image.registry_host().to_string(),
                kind: registry::ErrorKind::Connect,
                detail: "the test's fallback: the prefetch did not answer".into(),
            })
        }
    }

    let node = Node::new("");
    let digest = node.push("etcd", "3.5.16-0");
    let image = format!("{}/etcd:3.5.16-0", node.reg.host);
    let file = node.manifests().join("etcd.yaml");
    std::fs::write(&file, pod("etcd", &image, "a")).unwrap();
    let certs = node.path("no-certs");
    std::fs::create_dir_all(&certs).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = Arc::new(HttpResolver::new(registry::Settings {
            insecure_registries: vec![node.reg.host.clone()],
            certs_dirs: vec![certs],
            deadline: Duration::from_millis(300),
            ..Default::default()
        }));
        // Idle for longer than the deadline since the resolver's last run.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let prefetch = Prefetch::new(Duration::from_secs(30));
        prefetch.manifest(&file, &http, &Policy::default(), false);
        // Let the prefetch task start (and claim its answer) before asking.
        tokio::task::yield_now().await;
        let resolver = Prefetched {
            inner: &Unreachable,
            prefetch: &prefetch,
        };
        let answer = resolver.resolve(&ImageRef::parse(&image).unwrap()).await;
        assert_eq!(answer.unwrap().digest.to_string(), digest);
    });
}

/// STATUS says "apiserver wired" only while the wiring is in place and its
/// admission files pass preflight: broken admission files turn it into
/// "apiserver wiring failing" (before, it kept saying "wired").
#[test]
fn status_says_apiserver_wired_only_while_the_wiring_holds() {
    let node = Node::new("");
    let digest = node.push("kube-apiserver", "v1.31.0");
    let webhook = Pki::new(node.tmp.path(), "webhook");
    let admission = node.path("admission");
    let admission_config = admission_enabled(&node, &webhook, &admission);
    let image = format!("{}/kube-apiserver:v1.31.0@{digest}", node.reg.host);
    let file = node.manifests().join("kube-apiserver.yaml");
    std::fs::write(&file, apiserver_manifest("wiring", &admission, &image, &[])).unwrap();

    let w = watch(&node, &[]);
    w.wait_note("READY=1", 1);
    assert!(
        w.last_status()
            .contains("1 manifests: 1 pinned, apiserver wired;"),
        "{:?}\n{}",
        w.notes(),
        w.log()
    );
    assert_eq!(writes(&node), 1, "{}", w.log());

    std::fs::write(&admission_config, "apiVersion: [not yaml\n").unwrap();
    wait_until(WAIT, || {
        w.last_status()
            .contains("apiserver wiring failing")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", w.notes(), w.log()));
    assert_eq!(writes(&node), 1, "nothing written: {}", w.log());
}
