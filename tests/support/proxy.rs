//! A slow network in front of a real server: a TCP proxy on 127.0.0.1 that
//! holds every new connection for a set delay before it connects upstream
//! and pipes bytes both ways. Tests use it to keep staticpin resolving for
//! as long as they need (e.g. while a kubeadm-style rename replaces a
//! manifest mid-run), with a real docker-registry still answering.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct DelayProxy {
    pub port: u16,
    /// "127.0.0.1:PORT", to use as the registry host in image references.
    pub host: String,
    connections: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    /// Proxies to `upstream` ("127.0.0.1:PORT"), holding each new
    /// connection for `delay` first.
    pub fn start(upstream: &str, delay: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let delay = Arc::new(Mutex::new(delay));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, d, s, up) = (
            connections.clone(),
            delay.clone(),
            stop.clone(),
            upstream.to_string(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let wait = *d.lock().unwrap();
                let up = up.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(wait);
                    if let Ok(server) = TcpStream::connect(&up) {
                        let _ = pipe(client, server);
                    }
                });
            }
        });
        DelayProxy {
            port,
            host: format!("127.0.0.1:{port}"),
            connections,
            delay,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pipe(client: TcpStream, server: TcpStream) -> io::Result<()> {
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    let (mut s_read, mut c_write) = (server, client);
    let up = std::thread::spawn(move || {
        let _ = copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let _ = copy(&mut s_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}
