//! Talking to systemd over `NOTIFY_SOCKET` (`Type=notify`) for both
//! services, `watch` and `serve`: READY, STATUS, RELOADING with its
//! MONOTONIC_USEC, EXTEND_TIMEOUT_USEC, STOPPING and the watchdog. Outside systemd (no
//! `NOTIFY_SOCKET`) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends `states`; a failure (only possible with a `NOTIFY_SOCKET` set) is
/// logged and otherwise ignored: a lost notification must never stop a
/// service.
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Tells systemd that starting may take up to `within` from now, beyond
/// `TimeoutStartSec=` if need be (never shorter: systemd only extends).
pub fn extend_start(within: Duration) {
    let usec = u32::try_from(within.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

/// READY=1 with a status line: sent once started, and again when a reload
/// has finished (or failed and the old settings stand).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new STATUS= line for `systemctl status`, with no change of state.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// systemd ≥ 253 (`Type=notify-reload`) waits for RELOADING=1 with the
/// monotonic time it was sent at; older ones ignore the extra field, so
/// both always go together.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::debug!("cannot read CLOCK_MONOTONIC: {e}");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// STOPPING=1, with what the service is doing meanwhile as its status.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// WATCHDOG=1: the service is alive; send every [`watchdog_interval`].
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Half of `WatchdogSec=`, the interval to ping at, when the watchdog is on.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
