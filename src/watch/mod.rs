//! `staticpin watch`: the node daemon that keeps static pods pinned and the
//! apiserver wired, unattended, under systemd.
//!
//! It owns the loop only; every pass is [`pass::run_once`] (lock, plan,
//! compare-and-swap commit, gate, report, pruning), fed by:
//!
//! - [`events`]: inotify events on the manifest directory (and its parent,
//!   the kubeadm tmp dir and the admission directory), read on the tokio
//!   reactor with a mask that never asks for reads; dotfiles dropped, files
//!   still being written held back; debounced here on a tokio timer (no
//!   thread ticks while idle);
//! - [`prefetch`]: the registry asked during the debounce for manifests
//!   that are already complete;
//! - [`upgrade`]: no writes while `kubeadm upgrade` runs (bounded hold);
//! - [`backoff`]: transient failures retried 1 s doubling to 5 min;
//! - [`memory`]: a kube-apiserver change the health gate rolled back is not
//!   applied again until its inputs change;
//! - the digest cache ([`crate::registry::cache`]) behind the resolver;
//! - [`notify`]: READY / STATUS / RELOADING / STOPPING / WATCHDOG.
//!
//! No per-file, per-registry or reload error ends the daemon: only SIGTERM
//! or SIGINT do (exit 0), or a setup failure before the first pass (exit 2).

pub mod backoff;
pub mod events;
pub mod memory;
pub mod prefetch;
use crate::notify;
pub mod upgrade;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::backup::BackupStore;
use crate::config;
use crate::pass::drift::{self, Drift};
use crate::pass::metrics::{self, Counters, Metrics};
use crate::pass::{self, FileError, FileReport, GateRollback, Outcome, Report};
use crate::registry::cache::{rfc3339, CachingResolver, DigestCache};
use crate::registry::{self, HttpResolver};
use events::{Roots, Tracker};
use memory::{sha256_hex, GateMemory, Refused};
use prefetch::{Prefetch, Prefetched};

/// Everything one configuration decides; rebuilt on SIGHUP.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The validated config: paths, intervals and the daemon's own settings.
    pub settings: config::Settings,
    /// How to reach registries, derived from the same config.
    pub registry: registry::Settings,
    /// How each pass runs: mode, admission wiring, health gate, policy, lock.
    pub options: pass::Options,
}

/// Loads the configuration (files, then the command line's flags).
pub type Loader = Box<dyn Fn() -> Result<Setup, String>>;

/// How long a pass in flight gets to wind down after SIGTERM: systemd and
/// the issue allow 2 s for the whole exit.
const STOP_GRACE: Duration = Duration::from_millis(1500);

/// A burst of events that never goes quiet still gets a pass after this
/// many debounce periods.
const MAX_SETTLE: u32 = 4;

/// The debounce: a pass once events have been quiet for `debounce`, or
/// `MAX_SETTLE` debounces after the first one. A deadline, not a ticking
/// thread, so an idle daemon sleeps until the resync.
#[derive(Default)]
struct Settle {
    first: Option<tokio::time::Instant>,
    due: Option<tokio::time::Instant>,
}

impl Settle {
    fn poke(&mut self, debounce: Duration) {
        let now = tokio::time::Instant::now();
        let first = *self.first.get_or_insert(now);
        self.due = Some((now + debounce).min(first + debounce * MAX_SETTLE));
    }

    async fn quiet(&self) {
        match self.due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    fn clear(&mut self) {
        *self = Settle::default();
    }
}

/// Per-file state as last logged, so each change is logged once.
#[derive(Debug, Default)]
struct FileState {
    logged: String,
    failing: bool,
    ok: bool,
    /// The kube-apiserver manifest, whose last outcome says whether the
    /// admission wiring is in place.
    apiserver: bool,
}

struct Retry {
    attempts: u32,
    due: Instant,
}

/// A pseudo-path for the run lock's retry entry.
const LOCK_KEY: &str = "<run lock>";

struct Daemon {
    setup: Setup,
    http: Arc<HttpResolver>,
    /// Registry answers started during the debounce, for the next pass.
    prefetch: Prefetch,
    cache: DigestCache,
    memory: GateMemory,
    store: BackupStore,
    tracker: Tracker,
    roots: Roots,
    watch: Option<events::Watch>,
    /// Set on SIGTERM / SIGINT; handed to every pass.
    stop: pass::Stop,
    files: BTreeMap<PathBuf, FileState>,
    retry: BTreeMap<PathBuf, Retry>,
    blocked: Vec<Refused>,
    hold_since: Option<Instant>,
    hold_warned: bool,
    last_pass: Option<SystemTime>,
    reload_error: Option<String>,
    pass_errors: Vec<String>,
    writes: u64,
    /// Registry failures and writes since start, for the metrics file.
    counters: Counters,
    /// The next pass also checks every pinned tag for drift (at start and
    /// on each resync: one HEAD per tag, never a pin).
    drift_due: bool,
    /// `file:line reference` → the digest its tag names now, for each image
    /// found drifted by the last check; logged once when it appears.
    drifted: BTreeMap<String, String>,
}

fn roots(setup: &Setup) -> Roots {
    Roots {
        manifest_dir: setup.settings.manifest_dir.clone(),
        kubeadm_tmp_dir: setup.settings.kubeadm_tmp_dir.clone(),
        admission_dir: setup
            .options
            .admission
            .as_ref()
            .map(|r| r.mount_dir.clone()),
    }
}

/// Runs until SIGTERM or SIGINT; the exit code.
pub async fn run(load: Loader) -> u8 {
    let setup = match load() {
        Ok(s) => s,
        Err(e) => return crate::cli::fail(e),
    };
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (mut term, mut int, mut hup) = match signals {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return crate::cli::fail(format!("cannot handle signals: {e}"))
        }
    };
    let (stop_tx, stop) = pass::Stop::new();
    // READY=1 comes after the first pass, which may take the whole run
    // deadline and then the health gate: a start timeout killing it then
    // would roll the change back, and Restart= would loop on it.
    notify::extend_start(first_pass_bound(&setup));
    let mut d = Daemon::new(setup, stop);
    d.arm();
    let mut watchdog = Watchdog::new(notify::watchdog_interval());
    let mut pending = true;
    let mut settle = Settle::default();
    let mut ready = false;
    let mut resync_at = tokio::time::Instant::now() + d.setup.settings.resync;
    loop {
        if pending && !d.held() {
            pending = false;
            if d.watch.is_none() {
                d.arm();
            }
            if d.pass_unless_stopped(&mut term, &mut int, &mut watchdog, &stop_tx)
                .await
            {
                break;
            }
        }
        if !ready {
            notify::ready(&d.status());
            ready = true;
            tracing::info!("ready: {}", d.status());
        }
        let retry_due = d.retry.values().map(|r| r.due).min();
        let retry_sleep = async {
            match retry_due {
                Some(due) if !pending => tokio::time::sleep_until(due.into()).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            event = next_event(&mut d.watch) => match event {
                Some(Ok(e)) => {
                    // Classified as it comes, in order, so the write marks
                    // follow each file; only the pass waits for quiet.
                    let wake = d.tracker.classify(&d.roots, [&e]);
                    if wake.pass {
                        d.prefetch_for(&e);
                    }
                    if wake.rearm {
                        d.arm();
                    }
                    if wake.admission {
                        tracing::warn!("admission files changed; checking them again");
                    }
                    if wake.any() {
                        settle.poke(d.setup.settings.debounce);
                    }
                }
                // Watched again before the next pass, not here: a watch
                // that keeps failing must not spin the loop.
                Some(Err(e)) => {
                    tracing::warn!("file watch error: {e}; watching again and running a full pass");
                    d.tracker.forget_all();
                    d.watch = None;
                    settle.poke(d.setup.settings.debounce);
                }
                None => {
                    tracing::warn!("file watch ended; watching again and running a full pass");
                    d.watch = None;
                    settle.poke(d.setup.settings.debounce);
                }
            },
            () = settle.quiet() => {
                settle.clear();
                pending = true;
            }
            _ = tokio::time::sleep_until(resync_at) => {
                resync_at = tokio::time::Instant::now() + d.setup.settings.resync;
                tracing::debug!("periodic resync");
                d.drift_due = true;
                pending = true;
            }
            _ = retry_sleep => pending = true,
            // While held for a kubeadm upgrade, look again each second; the
            // tmp dir's own events usually come first.
            _ = tokio::time::sleep(Duration::from_secs(1)), if pending => {}
            () = watchdog.due() => watchdog.ping(),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                d.reload(&load);
                resync_at = tokio::time::Instant::now() + d.setup.settings.resync;
                pending = true;
            }
        }
    }
    notify::stopping("stopping");
    tracing::info!("stopping");
    crate::cli::EXIT_OK
}

/// The longest the first pass can take: the registry deadline, the health
/// gate's settle time and timeout, and a minute for everything else.
fn first_pass_bound(setup: &Setup) -> Duration {
    let gate = setup
        .options
        .health
        .as_ref()
        .map_or(Duration::ZERO, |g| g.settle.saturating_add(g.timeout));
    setup
        .registry
        .deadline
        .saturating_add(gate)
        .saturating_add(Duration::from_secs(60))
}

/// How long a prefetched answer may wait for its pass: the longest a
/// debounce can hold a pass back, and a second more.
fn fresh_for(setup: &Setup) -> Duration {
    setup.settings.debounce * (MAX_SETTLE + 1) + Duration::from_secs(1)
}

/// The next file event, or never while nothing is watched.
async fn next_event(watch: &mut Option<events::Watch>) -> Option<std::io::Result<events::Event>> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// `WATCHDOG=1` on a fixed schedule: a deadline kept across loop turns,
/// so a steady stream of events cannot keep postponing it.
struct Watchdog {
    every: Option<Duration>,
    next: tokio::time::Instant,
}

impl Watchdog {
    fn new(every: Option<Duration>) -> Watchdog {
        Watchdog {
            every,
            next: tokio::time::Instant::now() + every.unwrap_or_default(),
        }
    }

    async fn due(&self) {
        match self.every {
            Some(_) => tokio::time::sleep_until(self.next).await,
            None => std::future::pending().await,
        }
    }

    fn ping(&mut self) {
        notify::watchdog();
        self.next = tokio::time::Instant::now() + self.every.unwrap_or_default();
    }
}

impl Daemon {
    fn new(setup: Setup, stop: pass::Stop) -> Daemon {
        let cache = DigestCache::load(&setup.settings.state_dir);
        let memory = GateMemory::load(&setup.settings.state_dir);
        Daemon {
            http: Arc::new(HttpResolver::new(setup.registry.clone())),
            prefetch: Prefetch::new(fresh_for(&setup)),
            store: BackupStore::new(setup.settings.backup_dir.clone()),
            roots: roots(&setup),
            setup,
            cache,
            memory,
            tracker: Tracker::default(),
            watch: None,
            stop,
            files: BTreeMap::new(),
            retry: BTreeMap::new(),
            blocked: Vec::new(),
            hold_since: None,
            hold_warned: false,
            last_pass: None,
            reload_error: None,
            pass_errors: Vec::new(),
            writes: 0,
            counters: Counters::default(),
            drift_due: true,
            drifted: BTreeMap::new(),
        }
    }

    /// (Re)creates the watches: the manifest directory and its parent (so
    /// a directory that is missing, replaced or renamed is seen coming
    /// back), the kubeadm tmp dir and its parent, and the admission dir.
    fn arm(&mut self) {
        // Dropping the old watch closes its descriptor and all its watches.
        self.watch = None;
        let r = &self.roots;
        let mut dirs: Vec<&Path> = Vec::new();
        for d in [r.manifest_dir.as_path(), r.kubeadm_tmp_dir.as_path()] {
            dirs.push(d);
            if let Some(p) = d.parent() {
                dirs.push(p);
            }
        }
        if let Some(a) = &r.admission_dir {
            dirs.push(a);
        }
        dirs.sort();
        dirs.dedup();
        let dirs: Vec<&Path> = dirs.into_iter().filter(|d| d.is_dir()).collect();
        let (watch, failed) = match events::Watch::new(&dirs) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("cannot watch files: {e}; relying on the periodic resync");
                return;
            }
        };
        for (dir, e) in failed {
            tracing::warn!("cannot watch {}: {e}", dir.display());
        }
        if !r.manifest_dir.is_dir() {
            tracing::warn!(
                "manifest directory {} does not exist; waiting for it",
                r.manifest_dir.display()
            );
        }
        self.watch = Some(watch);
    }

    /// Whether to hold off writing because `kubeadm upgrade` is running.
    fn held(&mut self) -> bool {
        if upgrade::in_progress(&self.setup.settings.kubeadm_tmp_dir) {
            let since = *self.hold_since.get_or_insert_with(|| {
                tracing::warn!(
                    "kubeadm upgrade in progress ({} has a kubeadm-upgraded-manifests directory); \
                     holding off until it finishes",
                    self.setup.settings.kubeadm_tmp_dir.display()
                );
                notify::status("holding: kubeadm upgrade in progress");
                Instant::now()
            });
            if since.elapsed() < upgrade::MAX_HOLD {
                return true;
            }
            if !self.hold_warned {
                self.hold_warned = true;
                tracing::warn!(
                    "kubeadm upgrade still in progress after {} min; proceeding anyway",
                    upgrade::MAX_HOLD.as_secs() / 60
                );
            }
            false
        } else {
            if self.hold_since.take().is_some() {
                tracing::info!("kubeadm upgrade finished; pinning again");
            }
            self.hold_warned = false;
            false
        }
    }

    /// One pass; on SIGTERM or SIGINT it is told to stop (no new writes,
    /// a change still waiting for the health gate rolled back) and given
    /// [`STOP_GRACE`] to finish before it is dropped, which can only happen
    /// between writes. True when the daemon is to stop.
    async fn pass_unless_stopped(
        &mut self,
        term: &mut Signal,
        int: &mut Signal,
        watchdog: &mut Watchdog,
        stop: &tokio::sync::watch::Sender<bool>,
    ) -> bool {
        let pass = self.pass();
        tokio::pin!(pass);
        loop {
            tokio::select! {
                () = &mut pass => return false,
                _ = term.recv() => break,
                _ = int.recv() => break,
                () = watchdog.due() => watchdog.ping(),
            }
        }
        stop.send_replace(true);
        if tokio::time::timeout(STOP_GRACE, pass).await.is_err() {
            tracing::warn!("stopping mid-pass; nothing is half-written");
        }
        true
    }

    /// A manifest that is complete now (closed after writing, or renamed
    /// in) gets its tags asked for while the debounce runs.
    fn prefetch_for(&self, e: &events::Event) {
        let complete = matches!(e.kind, events::Kind::CloseWrite | events::Kind::MovedTo);
        let in_dir = e.path.parent() == Some(self.roots.manifest_dir.as_path());
        if !complete || !in_dir || self.setup.settings.offline {
            return;
        }
        self.prefetch.manifest(
            &e.path,
            &self.http,
            &self.setup.options.policy,
            self.setup.options.update,
        );
    }

    /// Fingerprint of what a kube-apiserver change was made from besides
    /// the manifest: the settings and the admission files.
    fn inputs(&self) -> String {
        let mut text = format!("{:?}", self.setup.settings);
        if let Some(dir) = &self.roots.admission_dir {
            let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|it| it.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            names.sort();
            for p in names {
                let bytes = std::fs::read(&p).unwrap_or_default();
                text.push_str(&format!("\n{} {}", p.display(), sha256_hex(&bytes)));
            }
        }
        sha256_hex(text.as_bytes())
    }

    /// What this pass covers: the manifest directory, or its files minus
    /// those still being written and those the gate memory holds back.
    /// `None` when the directory is missing.
    fn targets(&mut self) -> Option<Vec<PathBuf>> {
        let dir = self.setup.settings.manifest_dir.clone();
        if !dir.is_dir() {
            return None;
        }
        let stale = self.setup.settings.resync.max(Duration::from_secs(60));
        let writing = self.tracker.writing(stale);
        let inputs = self.inputs();
        self.blocked = self.memory.blocked(&inputs);
        if writing.is_empty() && self.blocked.is_empty() {
            return Some(vec![dir]);
        }
        for w in &writing {
            tracing::debug!("{}: still being written; not touched yet", w.display());
        }
        let entries = std::fs::read_dir(&dir).ok()?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| !n.as_encoded_bytes().starts_with(b"."))
            })
            .filter(|p| !writing.contains(p) && !self.blocked.iter().any(|b| &b.file == p))
            .collect();
        files.sort();
        Some(files)
    }

    async fn pass(&mut self) {
        let Some(paths) = self.targets() else {
            self.last_pass = Some(SystemTime::now());
            notify::status(&self.status());
            return;
        };
        let started = Instant::now();
        // The run deadline is per pass, not per daemon lifetime.
        self.http.start_run();
        self.setup.options.stop = self.stop.clone();
        let prefetched = Prefetched {
            inner: &*self.http,
            prefetch: &self.prefetch,
        };
        let resolver = CachingResolver::new(&prefetched, &self.cache, self.setup.settings.offline);
        let result = if paths.is_empty() {
            Ok(Report::new(pass::Mode::Apply))
        } else {
            pass::run_once(&paths, &self.setup.options, &resolver, Some(&self.store)).await
        };
        for hit in resolver.take_hits() {
            tracing::warn!("{hit}");
        }
        drop(resolver);
        self.prefetch.clear();
        if let Err(e) = self.cache.save() {
            tracing::warn!("{}: {e}", self.cache.path().display());
        }
        self.last_pass = Some(SystemTime::now());
        let now = Instant::now();
        // Entries due by now were retried by this pass (or their file was
        // left out of it); the report schedules the ones still failing.
        self.retry.retain(|_, r| r.due > now);
        if self.drift_due {
            self.drift_due = false;
            self.check_drift().await;
        }
        match result {
            Ok(report) => {
                self.retry.remove(Path::new(LOCK_KEY));
                self.write_metrics(&report, started.elapsed());
                self.absorb(report).await;
            }
            Err(e) => {
                tracing::warn!("pass skipped: {e}");
                self.schedule(PathBuf::from(LOCK_KEY));
            }
        }
        tracing::debug!("pass took {:?}", started.elapsed());
        notify::status(&self.status());
    }

    /// Checks every pinned tag in the manifest directory for drift and
    /// reports each change once. Moving pins is the pass's job, and only
    /// with `update: true`; this only looks.
    async fn check_drift(&mut self) {
        let dir = vec![self.setup.settings.manifest_dir.clone()];
        let status = drift::status(
            &dir,
            &self.setup.settings.policy,
            &*self.http,
            self.setup.registry.concurrency,
        )
        .await;
        self.counters.record_status(&status);
        let mut now = BTreeMap::new();
        for r in &status.rows {
            if let Drift::Drifted { now: digest } = &r.drift {
                let key = format!("{}:{} {}", r.file.display(), r.line, r.reference);
                now.insert(key, digest.to_string());
            }
        }
        for (key, digest) in &now {
            if self.drifted.get(key) != Some(digest) {
                let action = if self.setup.settings.update {
                    "update is on: the pass re-pins it"
                } else {
                    "left pinned (update is off)"
                };
                tracing::warn!("{key}: tag drifted, now names {digest}; {action}");
            }
        }
        for key in self.drifted.keys().filter(|k| !now.contains_key(*k)) {
            tracing::info!("{key}: no longer drifted");
        }
        self.drifted = now;
    }

    /// The metrics file (`metricsFile`) after every pass; drift is the last
    /// check's, since a pass does not look at pinned tags.
    fn write_metrics(&mut self, report: &Report, took: Duration) {
        self.counters.record(report);
        let Some(file) = self.setup.settings.metrics_file.clone() else {
            return;
        };
        let mut m = Metrics::from_report(
            report,
            self.setup.options.admission.is_some(),
            &self.counters,
            SystemTime::now(),
            took,
        );
        m.images.drifted = self.drifted.len() as u64;
        if let Err(e) = metrics::write_textfile(&file, &m) {
            tracing::warn!("{}: cannot write metrics: {e}", file.display());
        }
    }

    fn schedule(&mut self, path: PathBuf) {
        let attempts = self.retry.get(&path).map_or(0, |r| r.attempts) + 1;
        let wait = backoff::delay(attempts, &path);
        tracing::debug!("{}: retry {attempts} in {wait:.1?}", path.display());
        self.retry.insert(
            path,
            Retry {
                attempts,
                due: Instant::now() + wait,
            },
        );
    }

    async fn absorb(&mut self, report: Report) {
        let mut seen = Vec::new();
        for f in &report.files {
            seen.push(f.path.clone());
            self.log_writes(f);
            if let Outcome::Failed(FileError::Unhealthy {
                reason,
                rollback: GateRollback::Restored(_),
            }) = &f.outcome
            {
                self.remember_rollback(f, reason);
            }
            let (state, level) = describe(f);
            let failing = f.is_error();
            let entry = self.files.entry(f.path.clone()).or_default();
            let changed = entry.logged != state;
            if changed {
                match level {
                    tracing::Level::ERROR => tracing::error!("{}: {state}", f.path.display()),
                    tracing::Level::WARN => tracing::warn!("{}: {state}", f.path.display()),
                    _ if entry.failing => {
                        tracing::info!("{}: {state} (recovered)", f.path.display())
                    }
                    _ => tracing::debug!("{}: {state}", f.path.display()),
                }
                entry.logged = state;
            }
            entry.failing = failing;
            entry.ok = matches!(f.outcome, Outcome::Changed { .. } | Outcome::Unchanged);
            entry.apiserver = f.is_apiserver;
            match &f.outcome {
                Outcome::Failed(e) if e.is_transient() => self.schedule(f.path.clone()),
                _ => {
                    self.retry.remove(&f.path);
                }
            }
        }
        // Files removed or moved out no longer count.
        self.files.retain(|p, _| seen.contains(p) || p.exists());
        if report.errors != self.pass_errors {
            for e in &report.errors {
                tracing::error!("{e}");
            }
            self.pass_errors = report.errors.clone();
        }
    }

    /// Every write, with the file and each image before → after.
    fn log_writes(&mut self, f: &FileReport) {
        // A change the health gate then rolled back was still written, and
        // is logged like any other write before its rollback is.
        let (pinned, wired) = match f.outcome {
            Outcome::Changed { pinned, wired } => (pinned, wired),
            _ if f.written.is_some() => (
                f.images.iter().filter(|i| i.pinned.is_some()).count(),
                f.wired,
            ),
            _ => return,
        };
        self.writes += 1;
        for i in &f.images {
            if let Some(to) = &i.pinned {
                tracing::info!("{}:{}: {} -> {to}", f.path.display(), i.line, i.image);
            }
        }
        if wired {
            tracing::info!("{}: admission wired", f.path.display());
        }
        tracing::info!(
            "{}: written ({pinned} pinned{}), backup {}",
            f.path.display(),
            if wired { ", admission wired" } else { "" },
            f.backup
                .as_ref()
                .map_or_else(|| "none".into(), |b| b.display().to_string())
        );
    }

    fn remember_rollback(&mut self, f: &FileReport, reason: &str) {
        let (Ok(current), Some(written)) = (std::fs::read(&f.path), f.written.as_ref()) else {
            return;
        };
        tracing::error!(
            "{}: kube-apiserver did not become healthy after the change and it was rolled back; \
             not applying it again until the manifest, the config or the admission files change",
            f.path.display()
        );
        self.memory.remember(Refused {
            file: f.path.clone(),
            before: sha256_hex(&current),
            after: sha256_hex(written),
            inputs: self.inputs(),
            at: rfc3339(SystemTime::now()),
            reason: reason.to_string(),
        });
        self.blocked = self.memory.entries().to_vec();
    }

    /// SIGHUP: the configuration and drop-ins again. An invalid one is
    /// logged and shown in STATUS, and the old one stays in force.
    fn reload(&mut self, load: &Loader) {
        notify::reloading();
        match load() {
            Ok(setup) => {
                tracing::info!("configuration reloaded");
                let rearm = roots(&setup) != self.roots;
                if setup.settings.state_dir != self.setup.settings.state_dir {
                    self.cache = DigestCache::load(&setup.settings.state_dir);
                    self.memory = GateMemory::load(&setup.settings.state_dir);
                }
                self.http = Arc::new(HttpResolver::new(setup.registry.clone()));
                self.prefetch = Prefetch::new(fresh_for(&setup));
                self.store = BackupStore::new(setup.settings.backup_dir.clone());
                self.roots = roots(&setup);
                self.setup = setup;
                self.reload_error = None;
                if rearm {
                    self.arm();
                }
            }
            Err(e) => {
                tracing::error!("configuration reload failed, keeping the previous one: {e}");
                self.reload_error = Some(e);
            }
        }
        notify::ready(&self.status());
    }

    /// `5 manifests: 5 pinned, apiserver wired; last pass 12:03:04Z; 0 failing`.
    fn status(&self) -> String {
        let dir = &self.setup.settings.manifest_dir;
        let mut s = if !dir.is_dir() {
            format!("waiting for {}", dir.display())
        } else {
            let in_dir: Vec<_> = self
                .files
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir.as_path()))
                .collect();
            let pinned = in_dir.iter().filter(|(_, s)| s.ok).count();
            let failing = in_dir.iter().filter(|(_, s)| s.failing).count();
            // Wired only when the apiserver manifest's last pass succeeded
            // with wiring requested: planned wiring that applied, or found
            // in place. A failed preflight leaves it unconfirmed.
            let apiserver_ok = in_dir.iter().find(|(_, s)| s.apiserver).map(|(_, s)| s.ok);
            let wired = match (&self.setup.options.admission, apiserver_ok) {
                (None, _) => "",
                (Some(_), _) if !self.blocked.is_empty() => ", apiserver not wired",
                (Some(_), Some(true)) => ", apiserver wired",
                (Some(_), Some(false)) => ", apiserver wiring failing",
                (Some(_), None) => ", no kube-apiserver manifest to wire",
            };
            let last = self
                .last_pass
                .map(|t| rfc3339(t).get(11..).unwrap_or_default().to_string())
                .unwrap_or_else(|| "never".into());
            format!(
                "{} manifests: {pinned} pinned{wired}; last pass {last}; {failing} failing",
                in_dir.len()
            )
        };
        if !self.drifted.is_empty() {
            s.push_str(&format!("; {} drifted", self.drifted.len()));
        }
        if self.hold_since.is_some() && !self.hold_warned {
            s.push_str("; holding: kubeadm upgrade in progress");
        }
        for b in &self.blocked {
            s.push_str(&format!(
                "; not re-applying a change to {} that failed the health gate at {}",
                b.file.display(),
                b.at
            ));
        }
        if let Some(e) = &self.reload_error {
            s.push_str(&format!(
                "; config reload failed, previous config kept: {e}"
            ));
        }
        s
    }
}

/// A file's state as one line, and how loudly to log a change to it.
fn describe(f: &FileReport) -> (String, tracing::Level) {
    use tracing::Level;
    match &f.outcome {
        Outcome::Changed { .. } | Outcome::Unchanged => ("pinned".into(), Level::DEBUG),
        Outcome::Unpinned(n) => (format!("{n} unpinned"), Level::WARN),
        Outcome::Skipped(s) if s.is_error => (
            format!("skipped ({}); will look again on the next change", s.reason),
            Level::WARN,
        ),
        Outcome::Skipped(s) => (format!("skipped ({})", s.reason), Level::DEBUG),
        Outcome::Failed(e) if e.is_transient() => (
            format!("{e}; left as it is, retrying with backoff"),
            Level::WARN,
        ),
        Outcome::Failed(FileError::Write(e))
            if e.io_kind() == Some(std::io::ErrorKind::ReadOnlyFilesystem) =>
        {
            (
                format!(
                    "{e}; left as it is. Under the systemd unit the manifest directory is \
                     writable only if it existed when the service started: \
                     `systemctl restart staticpin`"
                ),
                Level::ERROR,
            )
        }
        Outcome::Failed(e) => (
            format!("{e}; left as it is until it or the config changes"),
            Level::ERROR,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::{FsError, Step};

    #[test]
    fn a_read_only_manifest_directory_says_how_to_fix_it() {
        let path = Path::new("/etc/kubernetes/manifests/etcd.yaml");
        let erofs = std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem);
        let f = FileReport::new(
            path,
            Outcome::Failed(FileError::Write(FsError::io(Step::CreateTemp, path, erofs))),
        );
        let (text, level) = describe(&f);
        assert_eq!(level, tracing::Level::ERROR);
        assert!(text.contains("systemctl restart staticpin"), "{text}");

        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let f = FileReport::new(
            path,
            Outcome::Failed(FileError::Write(FsError::io(
                Step::CreateTemp,
                path,
                denied,
            ))),
        );
        assert!(!describe(&f).0.contains("systemctl"));
    }
}
