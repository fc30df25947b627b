//! A scripted HTTP/1.1 server (plain, 127.0.0.1) for things a real registry
//! won't do: hangs, connection resets, truncated bodies, wrong digests, odd
//! statuses. Each request consumes the next `FaultStep` (the last one
//! repeats); every request is recorded for assertions. One request per
//! connection: answers carry `Connection: close`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::{find_header, head_end, parse_head, response_head, Server};

#[derive(Clone, Debug)]
pub enum FaultStep {
    /// A complete answer. `Content-Length: body.len()` and `Connection:
    /// close` are added unless given in `headers`. HEAD gets no body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Read the request, then say nothing for this long, then close (FIN).
    Hang(Duration),
    /// Read the request head, then close with unread data in the socket,
    /// which makes the kernel send a TCP RST (client sees "connection reset").
    Reset,
    /// Read the request, then close cleanly without any answer (client sees
    /// an empty reply / unexpected EOF).
    Close,
    /// Wait, then perform the inner step (slow-but-answers cases).
    Delay(Duration, Box<FaultStep>),
    /// Announce the full body (Content-Length) but send only the first
    /// `send` bytes, then close.
    Truncated {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        send: usize,
    },
    /// `head` answers a HEAD request, `other` every other method: a
    /// registry that says one thing on HEAD and another on GET.
    ByMethod {
        head: Box<FaultStep>,
        other: Box<FaultStep>,
    },
}

impl FaultStep {
    /// 200 with Content-Type `media_type`, Content-Length, and optionally
    /// `Docker-Content-Digest: digest_header` (may be deliberately wrong).
    pub fn manifest(body: &[u8], media_type: &str, digest_header: Option<&str>) -> FaultStep {
        let mut headers = vec![("Content-Type".to_string(), media_type.to_string())];
        if let Some(d) = digest_header {
            headers.push(("Docker-Content-Digest".to_string(), d.to_string()));
        }
        FaultStep::Respond {
            status: 200,
            headers,
            body: body.to_vec(),
        }
    }

    /// A bare status with an empty body.
    pub fn status(status: u16) -> FaultStep {
        FaultStep::Respond {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    /// A status with headers and a body.
    pub fn respond(status: u16, headers: &[(&str, &str)], body: &[u8]) -> FaultStep {
        FaultStep::Respond {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    /// A JSON answer (Content-Type: application/json).
    pub fn json(status: u16, value: &serde_json::Value) -> FaultStep {
        FaultStep::respond(
            status,
            &[("Content-Type", "application/json")],
            &serde_json::to_vec(value).unwrap(),
        )
    }

    /// 401 with a `WWW-Authenticate` header given verbatim, e.g.
    /// `Bearer realm="http://127.0.0.1:1/token",service="x"`.
    pub fn unauthorized(www_authenticate: &str) -> FaultStep {
        FaultStep::respond(
            401,
            &[
                ("WWW-Authenticate", www_authenticate),
                ("Content-Type", "application/json"),
            ],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
    }

    /// HEAD gets `head`, GET (and anything else) gets `other`.
    pub fn by_method(head: FaultStep, other: FaultStep) -> FaultStep {
        FaultStep::ByMethod {
            head: Box::new(head),
            other: Box::new(other),
        }
    }

    /// The step that answers a request with this method.
    fn for_method(self, method: &str) -> FaultStep {
        match self {
            FaultStep::ByMethod { head, other } => {
                if method == "HEAD" { *head } else { *other }.for_method(method)
            }
            step => step,
        }
    }

    /// 302/307 redirect to `location`.
    pub fn redirect(status: u16, location: &str) -> FaultStep {
        FaultStep::respond(status, &[("Location", location)], b"")
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Request target as sent (path + query).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Index of the step that answered it.
    pub step: usize,
}

impl RecordedRequest {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

struct State {
    script: Vec<FaultStep>,
    next: usize,
    requests: Vec<RecordedRequest>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: usize,
    max_in_flight: usize,
}

/// Counts a request as in flight until dropped, on every return path.
struct InFlight<'s>(&'s Mutex<State>);

impl<'s> InFlight<'s> {
    fn enter(state: &'s Mutex<State>) -> InFlight<'s> {
        let mut st = state.lock().unwrap();
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.lock() {
            st.in_flight -= 1;
        }
    }
}

pub struct FaultServer {
    pub port: u16,
    /// "127.0.0.1:PORT"
    pub host: String,
    state: Arc<Mutex<State>>,
    _server: Server,
}

impl FaultServer {
    /// Starts serving `script` on a free 127.0.0.1 port. Panics if empty.
    pub fn start(script: Vec<FaultStep>) -> FaultServer {
        assert!(!script.is_empty(), "FaultServer needs at least one step");
        let state = Arc::new(Mutex::new(State {
            script,
            next: 0,
            requests: Vec::new(),
            in_flight: 0,
            max_in_flight: 0,
        }));
        let server = {
            let state = state.clone();
            Server::start("fault-server", move |stream, stop| {
                handle(stream, &state, stop)
            })
        };
        FaultServer {
            port: server.port,
            host: server.host.clone(),
            state,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// Every request received so far, in the order steps were assigned.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// Replaces the script and restarts it from its first step (the request
    /// record is kept). Useful when a step must name the server's own port.
    pub fn set_script(&self, script: Vec<FaultStep>) {
        assert!(!script.is_empty(), "FaultServer needs at least one step");
        let mut st = self.state.lock().unwrap();
        st.script = script;
        st.next = 0;
    }
}

/// Sleeps up to `d`, returning early once the server is stopped.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(25)));
    }
}

fn handle(mut stream: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    // Peek (don't consume) until the head is complete, so that a Reset step
    // can close with unread data and force an RST.
    let mut buf = vec![0u8; 64 * 1024];
    let head_len = loop {
        let n = match stream.peek(&mut buf) {
            Ok(0) | Err(_) => return, // closed (or the Drop wake-up)
            Ok(n) => n,
        };
        if let Some(e) = head_end(&buf[..n]) {
            break e;
        }
        if n == buf.len() || stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let Ok(req) = parse_head(&buf[..head_len]) else {
        return;
    };
    let _in_flight = InFlight::enter(state);
    let (step, idx, rec_pos) = {
        let mut st = state.lock().unwrap();
        let idx = st.next.min(st.script.len() - 1);
        st.next += 1;
        let step = st.script[idx].clone().for_method(&req.method);
        st.requests.push(RecordedRequest {
            method: req.method.clone(),
            path: req.target.clone(),
            headers: req.headers.clone(),
            body: Vec::new(),
            step: idx,
        });
        (step, idx, st.requests.len() - 1)
    };
    let _ = idx;
    // Reset (possibly behind Delays): never consume the request.
    let mut inner = &step;
    let mut delay = Duration::ZERO;
    while let FaultStep::Delay(d, next) = inner {
        delay += *d;
        inner = next;
    }
    if matches!(inner, FaultStep::Reset) {
        sleep_unless_stopped(delay, stop);
        drop(stream); // unread bytes in the receive queue → RST
        return;
    }
    // Consume the head and the body.
    let mut head = vec![0u8; head_len];
    if stream.read_exact(&mut head).is_err() {
        return;
    }
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if len > 0 && stream.read_exact(&mut body).is_ok() {
        state.lock().unwrap().requests[rec_pos].body = body;
    }
    perform(stream, &step, req.method == "HEAD", stop);
}

fn perform(mut stream: TcpStream, step: &FaultStep, is_head: bool, stop: &AtomicBool) {
    match step {
        FaultStep::Respond {
            status,
            headers,
            body,
        } => {
            let mut out = response_head(*status, headers, body.len());
            if !is_head {
                out.extend_from_slice(body);
            }
            let _ = stream.write_all(&out);
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Write);
        }
        FaultStep::Hang(d) => {
            sleep_unless_stopped(*d, stop);
        }
        FaultStep::Reset => {
            // Unreachable: handled before the request is consumed.
            drop(stream);
        }
        FaultStep::ByMethod { .. } => {
            // Unreachable: resolved by `for_method` when the request arrived.
            drop(stream);
        }
        FaultStep::Close => {
            let _ = stream.shutdown(Shutdown::Both);
        }
        FaultStep::Delay(d, inner) => {
            sleep_unless_stopped(*d, stop);
            perform(stream, inner, is_head, stop);
        }
        FaultStep::Truncated {
            status,
            headers,
            body,
            send,
        } => {
            let mut out = response_head(*status, headers, body.len());
            if !is_head {
                out.extend_from_slice(&body[..(*send).min(body.len())]);
            }
            let _ = stream.write_all(&out);
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}
