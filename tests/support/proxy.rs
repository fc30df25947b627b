//! A slow network in front of a real server: a TCP proxy on 127.0.0.1 that
//! holds every new connection for a set delay before it connects upstream
//! and pipes bytes both ways. Tests use it to keep staticpin resolving for
//! as long as they need (e.g. while a kubeadm-style rename replaces a
//! manifest mid-run), with a real docker-registry still answering.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::Server;

pub struct DelayProxy {
    pub port: u16,
    /// "127.0.0.1:PORT", to use as the registry host in image references.
    pub host: String,
    connections: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
    _server: Server,
}

impl DelayProxy {
    /// Proxies to `upstream` ("127.0.0.1:PORT"), holding each new
    /// connection for `delay` first.
    pub fn start(upstream: &str, delay: Duration) -> DelayProxy {
        let connections = Arc::new(AtomicUsize::new(0));
        let delay = Arc::new(Mutex::new(delay));
        let server = {
            let (c, d, up) = (connections.clone(), delay.clone(), upstream.to_string());
            Server::start("delay-proxy", move |client, _| {
                c.fetch_add(1, Ordering::SeqCst);
                let wait = *d.lock().unwrap();
                std::thread::sleep(wait);
                if let Ok(server) = TcpStream::connect(&up) {
                    let _ = pipe(client, server);
                }
            })
        };
        DelayProxy {
            port: server.port,
            host: server.host.clone(),
            connections,
            delay,
            _server: server,
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
