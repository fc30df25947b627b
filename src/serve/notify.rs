//! systemd's notify protocol for `Type=notify`: READY=1 once both listeners
//! are bound, STATUS= with what is served, RELOADING=1 (with MONOTONIC_USEC,
//! which systemd ≥ 253 requires) around a SIGHUP reload, STOPPING=1 on
//! SIGTERM. Without `NOTIFY_SOCKET` (tests, a shell) each call does nothing.
//! A failed send is logged, never fatal: the server works without systemd.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}
