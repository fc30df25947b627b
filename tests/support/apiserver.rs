//! A stand-in for kube-apiserver's /livez: `openssl s_server -HTTP` serves
//! the file `livez` from its working directory, and that file carries the
//! whole answer (status line, headers, body), so a test scripts healthy,
//! failing and late answers by writing it. Needs `openssl` on PATH.

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

pub const OK: &str = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nok";
/// What kube-apiserver answers when a livez check fails.
pub const ETCD_DOWN: &str =
    "HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n\
    [+]ping ok\n[-]etcd failed: reason withheld\nlivez check failed\n";

/// A running `openssl s_server`; killed on drop.
pub struct Apiserver {
    child: Child,
    pub port: u16,
}

impl Apiserver {
    /// Serves `www/` with `cert`/`key` on a free port.
    pub fn start(www: &Path, cert: &Path, key: &Path, extra: &[&str]) -> Apiserver {
        // free_port can race with other tests; a lost race shows up as
        // s_server exiting, so try a few ports.
        for _ in 0..5 {
            if let Some(s) = Apiserver::start_on(free_port(), www, cert, key, extra) {
                return s;
            }
        }
        panic!("openssl s_server did not start on any of 5 ports");
    }

    pub fn start_on(
        port: u16,
        www: &Path,
        cert: &Path,
        key: &Path,
        extra: &[&str],
    ) -> Option<Apiserver> {
        fs::create_dir_all(www).unwrap();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-HTTP", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .args(extra)
            .current_dir(www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_server (is openssl installed?)");
        let mut server = Apiserver { child, port };
        // A bare TCP connect shows it listens; s_server shrugs off the
        // aborted handshake and keeps accepting.
        let up = wait_until(Duration::from_secs(5), || {
            if server.child.try_wait().unwrap().is_some() {
                return Some(false);
            }
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| true)
        });
        match up {
            Some(true) => Some(server),
            _ => {
                let _ = server.child.kill();
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/livez", self.port)
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces `www/livez` atomically, so s_server never reads half a file.
pub fn write_livez(www: &Path, answer: &str) {
    let tmp = www.join(".livez.tmp");
    fs::write(&tmp, answer).unwrap();
    fs::rename(&tmp, www.join("livez")).unwrap();
}
