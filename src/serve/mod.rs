//! `staticpin serve`: the ImagePolicyWebhook backend (and a validating
//! admission webhook), on the node's loopback, for the node's own kube-apiserver.
//!
//! This module owns the server's life: binding the two loopback listeners
//! (decisions over mutual TLS, `/healthz` and `/metrics` in plain HTTP),
//! bounding connections, reloading the policy on SIGHUP, telling systemd
//! (`READY=1`, `STATUS=`, `RELOADING=1`, `STOPPING=1`) and draining on
//! SIGTERM. The decision itself is [`crate::policy::review::decide`]: a pure
//! function of the request and the loaded policy, so the request path does no
//! network or disk I/O.
//!
//! HTTP is hyper 1 (with hyper-util's tokio glue) and TLS is rustls through
//! tokio-rustls: well-kept crates already in the dependency tree through the
//! registry client, rather than a hand-written parser on the admission path.
//!
//! - [`tls`]: the server TLS configuration, client certificates required.
//! - [`http`]: the routes, body limit and answers.
//! - [`conn`]: one connection: request and idle clocks, graceful drain.
//! - [`metrics`]: Prometheus counters and the latency histogram.
//! - [`notify`]: the sd_notify messages.

pub mod conn;
pub mod http;
pub mod metrics;
use crate::notify;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::Settings;
use crate::policy::{Mode, Policy};

/// Default bound on a request from its first byte to its answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle keep-alive timeout; above client-go's 90 s (see [`conn`]).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default bound on decision-port connections open at once. kube-apiserver
/// keeps a handful; the bound only stops a runaway client.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Connections to the metrics port open at once.
const MAX_METRICS_CONNECTIONS: usize = 16;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SIGTERM waits for requests in progress before exiting anyway.
/// Below systemd's default TimeoutStopSec (90 s).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a request is decided with; replaced whole on reload.
pub struct Loaded {
    /// The `policy:` settings every review is judged by.
    pub policy: Policy,
    /// Enforce denials, or only record them.
    pub mode: Mode,
    /// Serving certificate and client CA; new connections take the current one.
    pub tls: Arc<rustls::ServerConfig>,
}

impl Loaded {
    /// Builds everything from settings, reading the TLS files; fails without
    /// side effects, so a reload can keep the previous state.
    pub fn from_settings(settings: &Settings) -> Result<Loaded, String> {
        Ok(Loaded {
            policy: settings.policy.clone(),
            mode: settings.serve.mode,
            tls: tls::server_config(&settings.serve)?,
        })
    }

    fn status(&self, listen: SocketAddr) -> String {
        let mode = match self.mode {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        };
        format!(
            "serving on https://{listen} (mode {mode}, {} trusted registry prefix(es))",
            self.policy.trusted_registries.len()
        )
    }
}

/// State shared by every connection.
pub struct Shared {
    current: RwLock<Arc<Loaded>>,
    /// Counters for `/metrics`; they survive reloads.
    pub metrics: metrics::Metrics,
}

impl Shared {
    /// The policy, mode and TLS config in force now.
    pub fn current(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(g) => g.clone(),
            // A writer only swaps an Arc; a poisoned lock still holds a whole one.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, loaded: Loaded) {
        let new = Arc::new(loaded);
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

/// How the server runs; the addresses are fixed for the process's life.
pub struct Options {
    /// Request and idle timeouts, for both ports' connections.
    pub timeouts: conn::Timeouts,
    /// Decision-port connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// Reads and validates the configuration again (files, then the command
    /// line's flags); called at start and on every SIGHUP.
    pub load: Box<dyn Fn() -> Result<Settings, String> + Send + Sync>,
}

/// Runs until SIGTERM or SIGINT, then drains. `Err` only for start-up
/// failures (configuration, TLS files, binding); the caller exits 2.
pub async fn run(opts: Options) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};

    let settings = (opts.load)()?;
    let listen = settings.serve.listen;
    let metrics_listen = settings.serve.metrics_listen;
    let loaded = Loaded::from_settings(&settings)?;
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
    };
    let listener = bind(listen, "serve.listen").await?;
    let metrics_listener = bind(metrics_listen, "serve.metricsListen").await?;
    let signal_err = |e: std::io::Error| format!("cannot install signal handlers: {e}");
    let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;

    let status = loaded.status(listen);
    let shared = Arc::new(Shared {
        current: RwLock::new(Arc::new(loaded)),
        metrics: metrics::Metrics::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let conns = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let metrics_conns = Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS));

    tracing::warn!("{status}; /healthz and /metrics on http://{metrics_listen}");
    notify::ready(&status);

    loop {
        tokio::select! {
            accepted = accept(&listener, &conns) => {
                let Some((tcp, peer, permit)) = accepted else { continue };
                spawn_decisions(tcp, peer, permit, &shared, &stop_rx, opts.timeouts);
            }
            accepted = accept(&metrics_listener, &metrics_conns) => {
                let Some((tcp, peer, permit)) = accepted else { continue };
                spawn_health(tcp, peer, permit, &shared, &stop_rx, opts.timeouts);
            }
            _ = hup.recv() => reload(&opts, &shared, listen, metrics_listen),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    notify::stopping("draining");
    tracing::warn!("stopping: no new connections; answering the requests in progress");
    drop(listener);
    drop(metrics_listener);
    let _ = stop_tx.send(true);
    drain(&conns, opts.max_connections).await;
    tracing::warn!("stopped");
    Ok(())
}

/// Serves one decision connection on its own task: TLS first (bounded, so a
/// silent peer cannot hold a permit), then requests until it closes or we stop.
fn spawn_decisions(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
    timeouts: conn::Timeouts,
) {
    use std::sync::atomic::Ordering;
    // The acceptor is taken now, so a reload never changes a handshake midway.
    let acceptor = TlsAcceptor::from(shared.current().tls.clone());
    let shared = shared.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tcp.set_nodelay(true);
        let handshake = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(format!("refused: {e}")),
            Err(_) => Err("timed out".to_string()),
        };
        let tls = match handshake {
            Ok(tls) => tls,
            Err(why) => {
                shared
                    .metrics
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!("TLS handshake with {peer} {why}");
                return;
            }
        };
        let handler_shared = shared.clone();
        conn::serve(
            tls,
            move |req| http::decisions(req, handler_shared.clone()),
            timeouts,
            stop,
            peer,
        )
        .await;
    });
}

/// Serves one `/healthz` and `/metrics` connection on its own task.
fn spawn_health(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
    timeouts: conn::Timeouts,
) {
    let shared = shared.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        let _permit = permit;
        conn::serve(
            tcp,
            move |req| http::health(req, shared.clone()),
            timeouts,
            stop,
            peer,
        )
        .await;
    });
}

/// Waits until every decision connection has given back its permit, or
/// [`DRAIN_TIMEOUT`] passes: systemd would kill us soon after anyway.
async fn drain(conns: &Semaphore, max_connections: usize) {
    let all = u32::try_from(max_connections.max(1)).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, conns.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!("gave up waiting for connections after {DRAIN_TIMEOUT:?}");
    }
}

/// A permit, then a connection: at the bound, new connections wait in the
/// kernel's backlog instead of being accepted and starved. Cancel-safe.
async fn accept(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
) -> Option<(tokio::net::TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = limit.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((tcp, peer)) => Some((tcp, peer, permit)),
        Err(e) => {
            // EMFILE and friends: back off instead of spinning.
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// SIGHUP: read everything again and switch only if all of it is valid.
fn reload(opts: &Options, shared: &Shared, listen: SocketAddr, metrics_listen: SocketAddr) {
    use std::sync::atomic::Ordering;
    notify::reloading();
    match (opts.load)().and_then(|s| {
        if s.serve.listen != listen || s.serve.metrics_listen != metrics_listen {
            tracing::warn!(
                "serve.listen and serve.metricsListen changes take effect on restart; still on {listen} and {metrics_listen}"
            );
        }
        Loaded::from_settings(&s)
    }) {
        Ok(loaded) => {
            let status = loaded.status(listen);
            shared.replace(loaded);
            shared.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("reloaded: {status}");
            notify::ready(&status);
        }
        Err(e) => {
            shared.metrics.reloads_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!("reload refused, keeping the previous policy: {e}");
            let status = format!("{} (last reload failed: {e})", shared.current().status(listen));
            notify::ready(&status);
        }
    }
}
