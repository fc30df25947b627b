//! Crash safety and failure isolation of `staticpin pin`, end to end: the
//! real binary against a real registry, killed, starved of disk, denied
//! permission, and checked by a real containerd.
//!
//! Every run is sealed off from the machine: an empty `--config`, empty
//! kubelet root and certs dirs, a private `--backup-dir`, an empty HOME, a
//! private working directory and a cleared environment.
//!
//! Run with `--test-threads=1`: the SIGKILL test measures timings.
//! `STATICPIN_SAFETY_SEED` replays a SIGKILL schedule,
//! `STATICPIN_SAFETY_ITERATIONS` changes how many kills it does (default 100)
//! and `STATICPIN_SAFETY_PAD_KIB` the comment padding per manifest.

// tests/support is vendored as is (not rustfmt-formatted); keep `cargo fmt`
// from rewriting it.
mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{cli, oracle_digest, run, run_output, wait_until, Layout, Registry};

const BIN: &str = env!("CARGO_BIN_EXE_staticpin");

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The shared hermetic sandbox (see `support::cli`: explicit config naming
/// its kubelet root, certs dir, backup root and lock file; cleared
/// environment), with its paths at hand for the assertions here.
struct Sandbox {
    inner: cli::Sandbox,
    home: PathBuf,
    cwd: PathBuf,
    kubelet: PathBuf,
    certs: PathBuf,
    config: PathBuf,
    backups: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let inner = cli::Sandbox::new();
        Sandbox {
            home: inner.path("home"),
            cwd: inner.path("cwd"),
            kubelet: inner.path("kubelet"),
            certs: inner.certs(),
            config: inner.config_file(),
            backups: inner.path("backups"),
            inner,
        }
    }

    fn path(&self) -> PathBuf {
        self.inner.path("")
    }

    /// Creates (if needed) and returns a directory under the sandbox.
    fn dir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// `pin`, the sandbox config, and the registry's flags.
    fn pin_args(&self, reg: &Registry) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["pin".into(), "--config".into()];
        a.push(self.config.clone().into());
        a.push("--insecure-registry".into());
        a.push(reg.host.clone().into());
        for s in ["--timeout", "10", "--retries", "1"] {
            a.push(s.into());
        }
        a
    }

    /// Runs `program` (staticpin itself, or a wrapper such as setpriv) in
    /// the sandbox with a cleared environment.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        c
    }

    /// `staticpin pin <sealing flags>`; append flags and paths.
    fn pin(&self, reg: &Registry) -> Command {
        let mut c = self.command(BIN);
        c.args(self.pin_args(reg));
        c
    }
}

/// Pushes a single-arch image as `app:v1` and returns (image, pinned
/// image) where pinned uses the digest the registry really serves.
fn push_app(sb: &Sandbox, reg: &Registry) -> (String, String) {
    Layout::image(&sb.dir("layout"), "v1", "amd64", "pin-safety").push(reg, "app", "v1", None);
    let digest = oracle_digest(reg, "app", "v1", None);
    let image = format!("{}/app:v1", reg.host);
    let pinned = format!("{image}@{digest}");
    (image, pinned)
}

/// A kubeadm-style static pod manifest, with `pad` bytes of comments split
/// around the pod so the image sits in the middle of a big file.
fn manifest(name: &str, image: &str, pad: usize) -> String {
    let mut head = String::new();
    let mut tail = String::new();
    let mut i = 0;
    while head.len() + tail.len() < pad {
        let line = format!(
            "# {name} padding line {i:06}: the quick brown fox jumps over the lazy dog, 0123456789\n"
        );
        if i % 2 == 0 {
            head.push_str(&line);
        } else {
            tail.push_str(&line);
        }
        i += 1;
    }
    format!(
        "{head}apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: kube-system\n  labels:\n    component: {name}\n    tier: control-plane\nspec:\n  hostNetwork: true\n  priorityClassName: system-node-critical\n  containers:\n  - name: {name}\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command:\n    - /bin/{name}\n    - --v=2\n    resources:\n      requests:\n        cpu: 100m\n{tail}"
    )
}

/// The pinned form, computed independently of staticpin: the single
/// `image:` line is the only change.
fn pinned_manifest(original: &str, image: &str, pinned: &str) -> String {
    let from = format!("\n    image: {image}\n");
    let to = format!("\n    image: {pinned}\n");
    assert_eq!(original.matches(&from).count(), 1, "one image line");
    original.replacen(&from, &to, 1)
}

/// Sorted names in `dir`.
fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".staticpin-") && name.ends_with(".tmp")
}

/// Every file under `dir`, recursively, for "no temp file anywhere".
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn describe(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    format!(
        "status {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Makes the spawned child run under RLIMIT_FSIZE = `limit` bytes with
/// SIGXFSZ ignored, so an over-limit write() fails with EFBIG instead of
/// killing the process.
fn limit_file_size(cmd: &mut Command, limit: u64) {
    // SAFETY: between fork and exec we only call the async-signal-safe
    // signal() and setrlimit(), and allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// xorshift64*: enough randomness for kill timings, replayable by seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi.saturating_sub(lo)).mul_f64(self.unit())
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

// ---------------------------------------------------------------------------
// 1. SIGKILL at random moments
// ---------------------------------------------------------------------------

const KILL_FILES: usize = 40;
/// Comment padding per manifest. An unkilled run's write phase is dominated
/// by its six fsyncs per file (backup, backup index, manifest, and their
/// directories), about 5 ms a file here, so even small files give a window
/// of some 150 ms. Padding mostly adds YAML parsing in the debug binary
/// (three parses per file): at 200 KiB a run took 6.5 s and 100 kills took
/// 15 minutes; at 2 KiB a run takes ~0.2 s and the test ~35 s.
const KILL_PAD_KIB: usize = 2;

/// Writes fresh copies of the originals into an empty `dir`.
fn restore(dir: &Path, names: &[String], originals: &[String]) {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    fs::create_dir(dir).unwrap();
    for (n, o) in names.iter().zip(originals) {
        fs::write(dir.join(n), o).unwrap();
    }
}

/// Waits until the backup root holds more than `before` entries (the first
/// backup of a run, just before its first manifest write) or the child
/// exits. Returns whether the write phase was seen.
fn wait_for_write_phase(backups: &Path, before: usize, child: &mut Child) -> bool {
    loop {
        if fs::read_dir(backups).map(|d| d.count()).unwrap_or(0) > before {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn backup_runs(sb: &Sandbox) -> usize {
    fs::read_dir(&sb.backups).unwrap().count()
}

/// The manifest set of the SIGKILL test and how to run it unkilled.
struct KillSet<'a> {
    sb: &'a Sandbox,
    reg: &'a Registry,
    dir: &'a Path,
    names: &'a [String],
    originals: &'a [String],
    expected: &'a [String],
}

impl KillSet<'_> {
    /// Restores the originals and runs staticpin to completion; checks the
    /// result is exactly the expected pinned set. Returns (how long the run
    /// took, when its first backup appeared).
    fn clean_run(&self) -> (Duration, Duration) {
        restore(self.dir, self.names, self.originals);
        let before = backup_runs(self.sb);
        let t = Instant::now();
        let mut child = self
            .sb
            .pin(self.reg)
            .arg(self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Drain pipes on threads so a chatty child cannot block on them.
        let mut so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let so = std::thread::spawn(move || io::read_to_string(&mut so).unwrap());
        let se = std::thread::spawn(move || io::read_to_string(&mut se).unwrap());
        let saw_writes = wait_for_write_phase(&self.sb.backups, before, &mut child);
        let write_at = t.elapsed();
        let status = child.wait().unwrap();
        let total = t.elapsed();
        let (so, se) = (so.join().unwrap(), se.join().unwrap());
        assert!(status.success(), "clean run failed: {status}\n{so}\n{se}");
        assert!(saw_writes, "the clean run's write phase was never observed");
        assert!(
            so.contains(&format!(
                "{KILL_FILES} files: {KILL_FILES} pinned, 0 unchanged, 0 failed"
            )),
            "{so}"
        );
        for (n, e) in self.names.iter().zip(self.expected) {
            assert!(
                fs::read_to_string(self.dir.join(n)).unwrap() == *e,
                "{n}: the clean run's output differs from the expected pinned manifest"
            );
        }
        assert_eq!(
            dir_names(self.dir),
            self.names,
            "clean run left extra files"
        );
        (total, write_at)
    }
}

#[derive(Default, Debug)]
struct KillStats {
    iterations: usize,
    timed: usize,
    write_phase: usize,
    exited_before_kill: usize,
    none_pinned: usize,
    all_pinned: usize,
    mid_run: usize,
    temp_left: usize,
    temp_left_by_mid_run: usize,
}

#[test]
fn sigkill_during_writes_never_leaves_partial_or_extra_files() {
    let test_start = Instant::now();
    let sb = Sandbox::new();
    let reg = Registry::plain(&sb.dir("storage"));
    let (image, pinned_image) = push_app(&sb, &reg);

    let pad = env_u64("STATICPIN_SAFETY_PAD_KIB").map_or(KILL_PAD_KIB, |k| k as usize) * 1024;
    let names: Vec<String> = (0..KILL_FILES)
        .map(|i| format!("pod-{i:02}.yaml"))
        .collect();
    let originals: Vec<String> = names
        .iter()
        .map(|n| manifest(n.trim_end_matches(".yaml"), &image, pad))
        .collect();
    let expected: Vec<String> = originals
        .iter()
        .map(|o| pinned_manifest(o, &image, &pinned_image))
        .collect();
    let dir = sb.path().join("manifests");

    let kill_set = KillSet {
        sb: &sb,
        reg: &reg,
        dir: &dir,
        names: &names,
        originals: &originals,
        expected: &expected,
    };

    // Clean runs: staticpin's output must equal the independent expectation,
    // and they tell how long a run takes and when its writes begin. More
    // are taken every 10 kills, so the schedule follows the machine's load
    // (other tests in this binary, parallel builds) instead of a first guess.
    let mut timings: Vec<(Duration, Duration)> = (0..3).map(|_| kill_set.clean_run()).collect();
    let estimate = |timings: &[(Duration, Duration)]| {
        // The fastest of the last three is the least disturbed.
        let recent = &timings[timings.len().saturating_sub(3)..];
        let run_time = recent.iter().map(|t| t.0).min().unwrap();
        let write_at = recent.iter().map(|t| t.1).min().unwrap().min(run_time);
        (run_time, run_time.saturating_sub(write_at))
    };

    let seed = env_u64("STATICPIN_SAFETY_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let iterations = env_u64("STATICPIN_SAFETY_ITERATIONS").unwrap_or(100) as usize;
    eprintln!(
        "sigkill: seed {seed} (replay with STATICPIN_SAFETY_SEED={seed}); {iterations} iterations; \
         {KILL_FILES} files of {} bytes; clean runs (total, writes start at) {timings:?}",
        originals[0].len()
    );
    let mut rng = Rng::new(seed);
    let mut stats = KillStats::default();

    for it in 0..iterations {
        if it > 0 && it % 10 == 0 {
            timings.push(kill_set.clean_run());
        }
        let (run_time, window) = estimate(&timings);
        restore(&dir, &names, &originals);
        let before = backup_runs(&sb);
        // Half the kills are timed from spawn, uniformly over 1.3 times an
        // unkilled run (so some land after the last write, or after exit);
        // the other half wait for the write phase to begin (the first
        // backup appears) and then land uniformly over 1.2 times its
        // measured length, so most of those hit between two writes. The
        // second kind keeps the window covered when the machine is loaded
        // and timings from spawn drift.
        let write_phase = it % 2 == 1;
        let t = Instant::now();
        let mut child = sb
            .pin(&reg)
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let delay;
        if write_phase {
            stats.write_phase += 1;
            wait_for_write_phase(&sb.backups, before, &mut child);
            delay = rng.duration(Duration::ZERO, window.mul_f64(1.2));
            std::thread::sleep(delay);
        } else {
            stats.timed += 1;
            delay = rng.duration(Duration::ZERO, run_time.mul_f64(1.3));
            if let Some(rest) = delay.checked_sub(t.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        if child.try_wait().unwrap().is_some() {
            stats.exited_before_kill += 1;
        } else {
            child.kill().unwrap();
        }
        // Reaped, so the next run sees the pid as dead and cleans up.
        child.wait().unwrap();
        let killed_at = t.elapsed();
        let ctx = format!(
            "iteration {it} (seed {seed}, {} kill, delay {delay:?}, killed at {killed_at:?})",
            if write_phase { "write-phase" } else { "timed" }
        );

        // Each manifest is the complete old or the complete new file.
        let mut pinned = 0;
        for ((n, o), e) in names.iter().zip(&originals).zip(&expected) {
            let got = fs::read(dir.join(n)).unwrap_or_else(|err| panic!("{ctx}: read {n}: {err}"));
            if got == e.as_bytes() {
                pinned += 1;
            } else if got != o.as_bytes() {
                panic!(
                    "{ctx}: {n} is neither the original ({} bytes) nor the pinned file ({} bytes): {} bytes",
                    o.len(),
                    e.len(),
                    got.len()
                );
            }
        }
        // No extra non-dot file; the only dot files are the killed run's temps.
        let mut temps = 0;
        for name in dir_names(&dir) {
            if names.contains(&name) {
                continue;
            }
            let own_temp = names.iter().any(|n| {
                name.starts_with(&format!(".{n}.staticpin-{pid}-")) && name.ends_with(".tmp")
            });
            assert!(
                own_temp,
                "{ctx}: unexpected file {name:?} in the manifest directory: {:?}",
                dir_names(&dir)
            );
            temps += 1;
        }
        stats.iterations += 1;
        match pinned {
            0 => stats.none_pinned += 1,
            KILL_FILES => stats.all_pinned += 1,
            _ => {
                stats.mid_run += 1;
                if temps > 0 {
                    stats.temp_left_by_mid_run += 1;
                }
            }
        }
        if temps > 0 {
            stats.temp_left += 1;
        }

        // A later run converges and removes the dead run's temp files.
        let out = run_output(sb.pin(&reg).arg(&dir));
        assert!(
            out.status.success(),
            "{ctx}: recovery run: {}",
            describe(&out)
        );
        for (n, e) in names.iter().zip(&expected) {
            assert!(
                fs::read(dir.join(n)).unwrap() == e.as_bytes(),
                "{ctx}: {n} not pinned after the recovery run"
            );
        }
        let left = dir_names(&dir);
        assert_eq!(left, names, "{ctx}: files left after the recovery run");
        if temps > 0 {
            let (_, stderr) = text(&out);
            assert!(
                stderr.contains("removed a temp file left by an interrupted run"),
                "{ctx}: recovery run did not report the stale temp: {stderr}"
            );
        }
    }

    // Informational: a kill while a backup was being written leaves a temp
    // file in that run's backup directory; nothing cleans those up except
    // pruning the whole run. They are outside the manifest directory.
    let backup_temps = all_files(&sb.backups)
        .iter()
        .filter(|f| is_temp_name(&f.file_name().unwrap().to_string_lossy()))
        .count();
    let elapsed = test_start.elapsed();
    eprintln!(
        "sigkill: {} of {iterations} kills landed mid-run (some but not all files pinned); \
         {stats:?}; {backup_temps} temp files left in the (pruned) backup root; \
         clean runs (total, writes start at) {timings:?}; whole test took {elapsed:?}",
        stats.mid_run
    );
    // The point of the test is the window between the first and the last
    // write; make sure it was hit, not just the time before or after it.
    assert!(
        stats.mid_run >= iterations / 10,
        "only {} of {iterations} kills landed mid-run (seed {seed}): {stats:?}",
        stats.mid_run
    );
}

/// The same recovery when staticpin is pointed at the manifest file rather
/// than its directory (`staticpin pin /etc/kubernetes/manifests/etcd.yaml`).
#[test]
fn a_later_run_on_a_file_removes_the_stale_temp_beside_it() {
    let sb = Sandbox::new();
    let reg = Registry::plain(&sb.dir("storage"));
    let (image, pinned) = push_app(&sb, &reg);
    let dir = sb.dir("manifests");
    let (path, original) = one_manifest(&dir, &image, 512);
    // A temp exactly as a SIGKILLed run leaves it: the pid of a process
    // that has exited and been reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale = dir.join(format!(".kube-apiserver.yaml.staticpin-{dead_pid}-0.tmp"));
    fs::write(&stale, &original[..100]).unwrap();

    let out = run_output(sb.pin(&reg).arg(&path));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        pinned_manifest(&original, &image, &pinned)
    );
    assert_eq!(
        dir_names(&dir),
        ["kube-apiserver.yaml"],
        "stale temp of a dead run left beside the manifest"
    );
}

// ---------------------------------------------------------------------------
// 2. Disk full
// ---------------------------------------------------------------------------

/// Writes `dir/kube-apiserver.yaml` with about `pad` bytes of comments.
fn one_manifest(dir: &Path, image: &str, pad: usize) -> (PathBuf, String) {
    let path = dir.join("kube-apiserver.yaml");
    let body = manifest("kube-apiserver", image, pad);
    fs::write(&path, &body).unwrap();
    (path, body)
}

#[test]
fn disk_full_on_temp_file_leaves_original_intact() {
    let sb = Sandbox::new();
    let reg = Registry::plain(&sb.dir("storage"));
    let (image, _) = push_app(&sb, &reg);

    // (a) The limit is exactly the original's size: the backup (a copy of
    // the original) and the small backup index fit, but the pinned file is
    // longer, so writing the manifest's temp file fails with EFBIG.
    let dir = sb.dir("manifests-a");
    let (path, original) = one_manifest(&dir, &image, 8 * 1024);
    let mut cmd = sb.pin(&reg);
    cmd.arg(&dir);
    limit_file_size(&mut cmd, original.len() as u64);
    let out = run_output(&mut cmd);
    assert_failed_cleanly(
        &out,
        &dir,
        &path,
        &original,
        "cannot write temp file for {p}: File too large",
    );
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&format!("{}: failed", path.display())),
        "{stdout}"
    );
    // The backup was taken first (the message names the temp file, not
    // the backup), then withdrawn with the write that did not happen: a run
    // that wrote nothing leaves no run for `rollback` to find.
    assert_eq!(all_files(&sb.backups), Vec::<PathBuf>::new());
    assert_eq!(dir_names(&sb.backups), Vec::<String>::new());

    // (b) A limit below the original's size: now the backup itself cannot
    // be written, and the manifest must not be touched either.
    let dir = sb.dir("manifests-b");
    let (path, original) = one_manifest(&dir, &image, 8 * 1024);
    let mut cmd = sb.pin(&reg);
    cmd.arg(&dir);
    limit_file_size(&mut cmd, 4096);
    let out = run_output(&mut cmd);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        original,
        "manifest changed"
    );
    assert_eq!(
        dir_names(&dir),
        ["kube-apiserver.yaml"],
        "temp file left behind"
    );
    let p = path.display();
    assert!(
        stderr.contains(&format!(
            "staticpin: {p}: not written, backup failed: cannot write temp file for "
        )) && stderr.contains("File too large"),
        "{}",
        describe(&out)
    );
    let stray: Vec<_> = all_files(&sb.backups)
        .into_iter()
        .filter(|f| is_temp_name(&f.file_name().unwrap().to_string_lossy()))
        .collect();
    assert!(
        stray.is_empty(),
        "temp files left in the backup dir: {stray:?}"
    );
}

/// A node whose manifest writes keep failing (disk full, read-only or
/// foreign-owned directory) gets `staticpin pin` retried by its timer or
/// CI. Each attempt saves a backup before the write fails, so each leaves a
/// run directory; "keep the last 20 runs" must still hold, or a disk-full
/// node fills further with every retry.
#[test]
fn failing_writes_do_not_accumulate_backup_runs() {
    let sb = Sandbox::new();
    let reg = Registry::plain(&sb.dir("storage"));
    let (image, _) = push_app(&sb, &reg);
    let dir = sb.dir("manifests");
    let (path, original) = one_manifest(&dir, &image, 8 * 1024);
    for attempt in 1..=23 {
        let mut cmd = sb.pin(&reg);
        cmd.arg(&dir);
        // As in disk_full_on_temp_file_leaves_original_intact (a): the
        // backup fits, the manifest's temp file does not.
        limit_file_size(&mut cmd, original.len() as u64);
        let out = run_output(&mut cmd);
        assert_eq!(
            out.status.code(),
            Some(2),
            "attempt {attempt}: {}",
            describe(&out)
        );
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), original);
    let runs = dir_names(&sb.backups);
    assert!(
        runs.len() <= 20,
        "{} backup runs kept after 23 failed attempts (keepBackups is 20): {runs:?}",
        runs.len()
    );
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn enospc_on_tmpfs_temp_file_leaves_original_intact() {
    let sb = Sandbox::new();
    let mnt = sb.dir("tmpfs");
    if !is_root() {
        eprintln!(
            "SKIPPED enospc_on_tmpfs_temp_file_leaves_original_intact: needs root to mount a tmpfs"
        );
        return;
    }
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "SKIPPED enospc_on_tmpfs_temp_file_leaves_original_intact: mount -t tmpfs is not permitted here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!(
                "SKIPPED enospc_on_tmpfs_temp_file_leaves_original_intact: cannot run mount: {e}"
            );
            return;
        }
    }
    let _mount = Mount(mnt.clone());
    let reg = Registry::plain(&sb.dir("storage"));
    let (image, _) = push_app(&sb, &reg);

    // 40 KiB on a 64 KiB tmpfs: the original fits, a second copy does not.
    // The backup goes to the sandbox's backup dir on the normal disk.
    let (path, original) = one_manifest(&mnt, &image, 40 * 1024);
    let out = run_output(sb.pin(&reg).arg(&mnt));
    assert_failed_cleanly(
        &out,
        &mnt,
        &path,
        &original,
        "cannot write temp file for {p}: No space left on device",
    );
}

// ---------------------------------------------------------------------------
// 3. Permission denied
// ---------------------------------------------------------------------------

#[test]
fn permission_denied_on_temp_file_leaves_original_intact() {
    if !is_root() {
        eprintln!("SKIPPED permission_denied_on_temp_file_leaves_original_intact: needs root to switch to nobody");
        return;
    }
    let sb = Sandbox::new();
    let reg = Registry::plain(&sb.dir("storage"));
    let (image, _) = push_app(&sb, &reg);

    // nobody may traverse the sandbox and read everything in it, and write
    // only the backup dir; the manifest dir and manifest are root's.
    let mode = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    mode(&sb.path(), 0o755);
    for d in [&sb.home, &sb.cwd, &sb.kubelet, &sb.certs] {
        mode(d, 0o755);
    }
    mode(&sb.config, 0o644);
    mode(&sb.backups, 0o777);
    // nobody must get past the run lock to reach the write.
    let lock = sb.path().join("lock");
    fs::write(&lock, b"").unwrap();
    mode(&lock, 0o666);
    let dir = sb.dir("manifests");
    mode(&dir, 0o755);
    let (path, original) = one_manifest(&dir, &image, 1024);
    mode(&path, 0o644);

    // The build's target dir may sit where nobody cannot reach (/root/...),
    // so run a link or copy of the binary from inside the sandbox.
    let bin = sb.path().join("staticpin");
    if fs::hard_link(BIN, &bin).is_err() {
        fs::copy(BIN, &bin).unwrap();
    }

    let mut cmd = sb.command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(sb.pin_args(&reg))
        .arg(&dir);
    let out = run_output(&mut cmd);
    assert_failed_cleanly(
        &out,
        &dir,
        &path,
        &original,
        "cannot create temp file for {p}: Permission denied",
    );
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o644)
    );
}

// ---------------------------------------------------------------------------
// 4. Mode and owner
// ---------------------------------------------------------------------------

#[test]
fn mode_and_owner_are_kept() {
    if !is_root() {
        eprintln!("SKIPPED mode_and_owner_are_kept: needs root to chown");
        return;
    }
    let sb = Sandbox::new();
    let reg = Registry::plain(&sb.dir("storage"));
    let (image, pinned) = push_app(&sb, &reg);
    let dir = sb.dir("manifests");
    let (path, original) = one_manifest(&dir, &image, 512);
    std::os::unix::fs::chown(&path, Some(1234), Some(5678)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let inode_before = fs::metadata(&path).unwrap().ino();

    let out = run_output(sb.pin(&reg).arg(&dir));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        pinned_manifest(&original, &image, &pinned)
    );
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600, "mode");
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678), "owner");
    assert_ne!(
        meta.ino(),
        inode_before,
        "replaced by rename, not rewritten"
    );
    assert_eq!(dir_names(&dir), ["kube-apiserver.yaml"]);
}

// ---------------------------------------------------------------------------
// 5. containerd pulls what staticpin wrote
// ---------------------------------------------------------------------------

/// A private containerd (root, state, socket, opt dir under one temp dir,
/// CRI disabled), killed and removed on drop.
struct Containerd {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

const CTR_NAMESPACE: &str = "staticpin-test";

impl Containerd {
    fn start() -> Containerd {
        // Short path: the socket path must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("ctrd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let sock = d.join("sock");
        let log = d.join("containerd.log");
        let config = d.join("config.toml");
        fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = sock.display(),
                opt = d.join("opt").display(),
            ),
        )
        .unwrap();
        let logf = fs::File::create(&log).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("cannot start containerd (is it installed?)");
        let mut c = Containerd {
            child,
            sock,
            log,
            _dir: dir,
        };
        let ready = wait_until(Duration::from_secs(20), || {
            if let Some(st) = c.child.try_wait().unwrap() {
                panic!(
                    "containerd exited early with {st}\n{}",
                    support::file_tail(&c.log, 40)
                );
            }
            c.ctr()
                .arg("version")
                .output()
                .ok()?
                .status
                .success()
                .then_some(())
        });
        if ready.is_none() {
            panic!(
                "containerd did not answer within 20 s\n{}",
                support::file_tail(&c.log, 40)
            );
        }
        c
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(&self.sock).args(["-n", CTR_NAMESPACE]);
        c.stdin(Stdio::null());
        c
    }

    fn pull(&self, reference: &str) {
        let out = run_output(
            self.ctr()
                .args(["images", "pull", "--plain-http", reference]),
        );
        assert!(
            out.status.success(),
            "ctr pull {reference}: {}\n--- containerd log ---\n{}",
            describe(&out),
            support::file_tail(&self.log, 30)
        );
    }

    /// `ctr images ls` as (name, digest) pairs.
    fn images(&self) -> BTreeMap<String, String> {
        let out = String::from_utf8(run(self.ctr().args(["images", "ls"]))).unwrap();
        out.lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some((cols.first()?.to_string(), cols.get(2)?.to_string()))
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the single `image:` line in a manifest.
fn image_value(path: &Path) -> String {
    let body = fs::read_to_string(path).unwrap();
    let values: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("image: "))
        .collect();
    assert_eq!(values.len(), 1, "{}", path.display());
    values[0].to_string()
}

#[test]
fn containerd_pulls_the_pinned_reference() {
    let sb = Sandbox::new();
    let reg = Registry::plain(&sb.dir("storage"));
    // Multi-arch, with the host's own architecture among them.
    Layout::index(
        &sb.dir("layout"),
        "v1",
        &["amd64", "arm64"],
        "pin-safety-multi",
    )
    .push(&reg, "app", "v1", None);
    let digest = oracle_digest(&reg, "app", "v1", None);
    let image = format!("{}/app:v1", reg.host);

    let tagged_dir = sb.dir("manifests-tagged");
    let (tagged_path, _) = one_manifest(&tagged_dir, &image, 256);
    let out = run_output(sb.pin(&reg).arg(&tagged_dir));
    assert!(out.status.success(), "{}", describe(&out));
    let tagged_ref = image_value(&tagged_path);
    assert_eq!(tagged_ref, format!("{image}@{digest}"));

    let bare_dir = sb.dir("manifests-digest-only");
    let (bare_path, _) = one_manifest(&bare_dir, &image, 256);
    let out = run_output(sb.pin(&reg).arg("--digest-only").arg(&bare_dir));
    assert!(out.status.success(), "{}", describe(&out));
    let bare_ref = image_value(&bare_path);
    assert_eq!(bare_ref, format!("{}/app@{digest}", reg.host));

    let ctrd = Containerd::start();
    for reference in [&tagged_ref, &bare_ref] {
        ctrd.pull(reference);
    }
    let images = ctrd.images();
    for reference in [&tagged_ref, &bare_ref] {
        assert_eq!(
            images.get(reference.as_str()),
            Some(&digest),
            "ctr images ls does not list {reference} at {digest}: {images:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 6. Resolution failure
// ---------------------------------------------------------------------------

#[test]
fn resolution_failure_leaves_file_byte_identical() {
    let sb = Sandbox::new();
    let reg = Registry::plain(&sb.dir("storage"));
    let (image, pinned) = push_app(&sb, &reg);
    let missing = format!("{}/app:v404", reg.host);

    let dir = sb.dir("manifests");
    let good = dir.join("a-good.yaml");
    let bad = dir.join("b-bad.yaml");
    let good_body = manifest("good", &image, 512);
    let bad_body = manifest("bad", &missing, 512);
    fs::write(&good, &good_body).unwrap();
    fs::write(&bad, &bad_body).unwrap();
    let bad_mtime = fs::metadata(&bad).unwrap().modified().unwrap();

    let out = run_output(sb.pin(&reg).arg(&dir));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(
        fs::read_to_string(&bad).unwrap(),
        bad_body,
        "bad file changed"
    );
    assert_eq!(fs::metadata(&bad).unwrap().modified().unwrap(), bad_mtime);
    assert_eq!(
        fs::read_to_string(&good).unwrap(),
        pinned_manifest(&good_body, &image, &pinned),
        "good file not pinned"
    );
    assert_eq!(dir_names(&dir), ["a-good.yaml", "b-bad.yaml"]);

    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("staticpin: {}: ", bad.display())))
        .unwrap_or_else(|| panic!("no error line naming {}: {}", bad.display(), describe(&out)));
    assert!(line.contains(&missing), "image not named: {line}");
    assert!(
        line.contains(&format!("(registry {})", reg.host)),
        "registry not named: {line}"
    );
    assert!(
        !stderr.contains(&good.display().to_string()),
        "the good file is reported as an error: {stderr}"
    );
    assert!(
        stdout.contains(&format!("{}: pinned 1", good.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}: failed", bad.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 files: 1 pinned, 0 unchanged, 1 failed"),
        "{stdout}"
    );

    // Only the good file was backed up.
    let backed_up: Vec<_> = all_files(&sb.backups)
        .into_iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n != "index.json")
        .collect();
    assert_eq!(backed_up, ["a-good.yaml"]);
}

/// The write failed at `failure` ("cannot write temp file for P: …"), and
/// nothing changed: exit 2, the manifest byte-identical, no file beside it.
fn assert_failed_cleanly(
    out: &std::process::Output,
    dir: &Path,
    path: &Path,
    original: &str,
    failure: &str,
) {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(2), "{}", describe(out));
    assert_eq!(
        fs::read_to_string(path).unwrap(),
        original,
        "manifest changed"
    );
    assert_eq!(
        dir_names(dir),
        ["kube-apiserver.yaml"],
        "extra file left behind"
    );
    let p = path.display();
    let want = format!("staticpin: {p}: {}", failure.replace("{p}", &p.to_string()));
    assert!(
        stderr.contains(&want),
        "missing {want:?}\n{}",
        describe(out)
    );
    assert!(
        stdout.contains("1 file: 0 pinned, 0 unchanged, 1 failed"),
        "{stdout}"
    );
}
