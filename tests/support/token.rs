//! A distribution-spec token server (docker "Bearer" auth) on plain HTTP
//! 127.0.0.1, in background std threads. Issues RS256 JWTs whose header
//! carries `x5c` = [DER of the signing cert]; the same cert is the registry's
//! `rootcertbundle`. Signing uses `openssl dgst -sha256 -sign`.
//!
//! Policy: valid Basic credentials → every requested action; no credentials →
//! `pull` only (if `allow_anonymous`, else 401); wrong credentials → 401.
//! GET `realm?service=..&scope=..` (scope may repeat) and the OAuth2 POST form
//! (`grant_type=password`) are both served.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{parse_form, read_request, write_response, Request, Server};
use super::run;

/// What a registry needs to trust an issuer (`auth.token` config).
#[derive(Clone, Debug)]
pub struct TokenIssuerInfo {
    /// `http://127.0.0.1:PORT/token`
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM cert that signs tokens (the registry's `rootcertbundle`).
    pub signer_cert: PathBuf,
}

/// Which token fields the JSON response carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenResponseStyle {
    /// `token` and `access_token` (default).
    Both,
    TokenOnly,
    AccessTokenOnly,
}

/// One request the issuer saw (for assertions).
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    /// Raw request target, e.g. `/token?service=..&scope=..`.
    pub target: String,
    /// Basic-auth user name, if any was sent (valid or not).
    pub user: Option<String>,
    pub service: Option<String>,
    pub scopes: Vec<String>,
    /// Status the issuer answered with.
    pub status: u16,
}

struct State {
    service: String,
    issuer: String,
    key: PathBuf,
    x5c: String,
    users: Mutex<Vec<(String, String)>>,
    allow_anonymous: AtomicBool,
    expires_in: AtomicU64,
    style: Mutex<TokenResponseStyle>,
    requests: AtomicUsize,
    tokens: AtomicUsize,
    log: Mutex<Vec<TokenRequest>>,
    seq: AtomicU64,
}

pub struct TokenIssuer {
    pub port: u16,
    /// "127.0.0.1:PORT"
    pub host: String,
    pub service: String,
    pub issuer: String,
    /// PEM certificate (RSA 2048, self-signed) whose key signs the tokens.
    pub signer_cert: PathBuf,
    pub signer_key: PathBuf,
    state: Arc<State>,
    _server: Server,
}

impl TokenIssuer {
    /// Creates a signing key+cert in `dir` (`token-signer.key/.crt`) and
    /// starts serving on a free 127.0.0.1 port. `users` are (user, pass).
    pub fn start(
        dir: &Path,
        service: &str,
        issuer: &str,
        users: &[(&str, &str)],
        allow_anonymous: bool,
    ) -> TokenIssuer {
        std::fs::create_dir_all(dir).expect("create token issuer dir");
        let key = dir.join("token-signer.key");
        let crt = dir.join("token-signer.crt");
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .args(["-subj", "/CN=staticpin test token signer"]));
        let der = run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&crt));
        let state = Arc::new(State {
            service: service.to_string(),
            issuer: issuer.to_string(),
            key: key.clone(),
            x5c: STANDARD.encode(der),
            users: Mutex::new(
                users
                    .iter()
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .collect(),
            ),
            allow_anonymous: AtomicBool::new(allow_anonymous),
            expires_in: AtomicU64::new(300),
            style: Mutex::new(TokenResponseStyle::Both),
            requests: AtomicUsize::new(0),
            tokens: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
        });
        let server = {
            let state = state.clone();
            Server::start("token-issuer", move |stream, _| handle(stream, &state))
        };
        TokenIssuer {
            port: server.port,
            host: server.host.clone(),
            service: service.to_string(),
            issuer: issuer.to_string(),
            signer_cert: crt,
            signer_key: key,
            state,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT/token`
    pub fn realm_url(&self) -> String {
        format!("http://{}/token", self.host)
    }

    pub fn info(&self) -> TokenIssuerInfo {
        TokenIssuerInfo {
            realm: self.realm_url(),
            service: self.service.clone(),
            issuer: self.issuer.clone(),
            signer_cert: self.signer_cert.clone(),
        }
    }

    /// Number of requests to the token endpoint served so far (any outcome).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Number of tokens issued (200 answers) so far.
    pub fn tokens_issued(&self) -> usize {
        self.state.tokens.load(Ordering::SeqCst)
    }

    /// Every request seen so far, in arrival order.
    pub fn request_log(&self) -> Vec<TokenRequest> {
        self.state.log.lock().unwrap().clone()
    }

    /// `expires_in` (and the JWT lifetime) for tokens issued from now on.
    /// Default 300 s. Note the registry allows 60 s of clock leeway on `exp`.
    pub fn set_expires_in(&self, secs: u64) {
        self.state.expires_in.store(secs, Ordering::SeqCst);
    }

    pub fn set_allow_anonymous(&self, allow: bool) {
        self.state.allow_anonymous.store(allow, Ordering::SeqCst);
    }

    pub fn add_user(&self, user: &str, pass: &str) {
        self.state
            .users
            .lock()
            .unwrap()
            .push((user.into(), pass.into()));
    }

    pub fn set_response_style(&self, style: TokenResponseStyle) {
        *self.state.style.lock().unwrap() = style;
    }

    /// Mints a token directly (no HTTP), e.g. to hand a client a token for a
    /// different scope. `actions` like `["pull"]`.
    pub fn mint(&self, sub: &str, repo: &str, actions: &[&str], expires_in: u64) -> String {
        let access = vec![json!({"type": "repository", "name": repo, "actions": actions})];
        make_jwt(&self.state, sub, access, expires_in).expect("mint token")
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// RFC 3339 UTC timestamp for a unix time (no external crates).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        y,
        m,
        d,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn make_jwt(
    state: &State,
    sub: &str,
    access: Vec<Value>,
    expires_in: u64,
) -> Result<String, String> {
    let now = now_secs();
    let seq = state.seq.fetch_add(1, Ordering::SeqCst);
    let jti = hex(&Sha256::digest(format!(
        "{}-{}-{}-{:?}",
        std::process::id(),
        now,
        seq,
        SystemTime::now()
    )))[..32]
        .to_string();
    let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [state.x5c]});
    let claims = json!({
        "iss": state.issuer,
        "sub": sub,
        "aud": state.service,
        "exp": now + expires_in,
        "nbf": now,
        "iat": now,
        "jti": jti,
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&state.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn openssl dgst: {}", e))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .map_err(|e| format!("write to openssl: {}", e))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("openssl dgst: {}", e))?;
    if !out.status.success() {
        return Err(format!(
            "openssl dgst failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(format!(
        "{}.{}",
        signing_input,
        URL_SAFE_NO_PAD.encode(out.stdout)
    ))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{:02x}", x)).collect()
}

fn handle(mut stream: TcpStream, state: &State) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let req = match read_request(&mut stream) {
        Ok(r) => r,
        Err(_) => return, // includes the Drop wake-up connection
    };
    let (status, headers, body, entry) = answer(&req, state);
    if let Some(e) = entry {
        state.requests.fetch_add(1, Ordering::SeqCst);
        if status == 200 {
            state.tokens.fetch_add(1, Ordering::SeqCst);
        }
        state.log.lock().unwrap().push(e);
    }
    let _ = write_response(&mut stream, req.method == "HEAD", status, &headers, &body);
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>, Option<TokenRequest>);

fn json_headers() -> Vec<(String, String)> {
    vec![("Content-Type".into(), "application/json".into())]
}

fn error_body(code: &str, msg: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"errors": [{"code": code, "message": msg}]})).unwrap()
}

fn answer(req: &Request, state: &State) -> Answer {
    if req.path() != "/token" {
        return (
            404,
            json_headers(),
            error_body("NOT_FOUND", "only /token is served"),
            None,
        );
    }
    let params: Vec<(String, String)> = match req.method.as_str() {
        "GET" => req.query(),
        "POST" => {
            let mut p = req.query();
            p.extend(parse_form(&String::from_utf8_lossy(&req.body)));
            p
        }
        _ => {
            return (
                405,
                json_headers(),
                error_body("UNSUPPORTED", "method"),
                None,
            )
        }
    };
    let get = |k: &str| params.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    // Scopes: repeated params, each possibly space-separated (OAuth2 form).
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| {
            v.split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    let service = get("service");

    // Credentials: Basic header, or OAuth2 password grant in a POST form.
    let mut creds: Option<(String, String)> = None;
    let mut bad_header = false;
    if let Some(h) = req.header("authorization") {
        match h.split_once(' ') {
            Some((scheme, b64)) if scheme.eq_ignore_ascii_case("basic") => {
                match STANDARD
                    .decode(b64.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                {
                    Some(s) => {
                        let (u, p) = s.split_once(':').unwrap_or((s.as_str(), ""));
                        creds = Some((u.to_string(), p.to_string()));
                    }
                    None => bad_header = true,
                }
            }
            _ => bad_header = true,
        }
    }
    if req.method == "POST" && get("grant_type").as_deref() == Some("password") {
        creds = Some((
            get("username").unwrap_or_default(),
            get("password").unwrap_or_default(),
        ));
    }
    let mut entry = TokenRequest {
        method: req.method.clone(),
        target: req.target.clone(),
        user: creds.as_ref().map(|(u, _)| u.clone()),
        service: service.clone(),
        scopes: scopes.clone(),
        status: 0,
    };
    let mut reply = |status: u16, headers: Vec<(String, String)>, body: Vec<u8>| -> Answer {
        entry.status = status;
        (status, headers, body, Some(entry.clone()))
    };
    let unauthorized = |msg: &str| {
        let mut h = json_headers();
        h.push((
            "WWW-Authenticate".into(),
            "Basic realm=\"staticpin-test-token\"".into(),
        ));
        (401u16, h, error_body("UNAUTHORIZED", msg))
    };

    if let Some(s) = &service {
        if s != &state.service {
            return reply(
                400,
                json_headers(),
                error_body("INVALID_REQUEST", &format!("unknown service {:?}", s)),
            );
        }
    }
    if req.method == "POST" {
        match get("grant_type").as_deref() {
            Some("password") => {}
            other => {
                return reply(
                    400,
                    json_headers(),
                    error_body("UNSUPPORTED_GRANT_TYPE", &format!("{:?}", other)),
                );
            }
        }
    }
    if bad_header {
        let (s, h, b) = unauthorized("unsupported or malformed Authorization header");
        return reply(s, h, b);
    }
    let (subject, full) = match &creds {
        Some((u, p)) => {
            let ok = state
                .users
                .lock()
                .unwrap()
                .iter()
                .any(|(uu, pp)| uu == u && pp == p);
            if !ok {
                let (s, h, b) = unauthorized("invalid username or password");
                return reply(s, h, b);
            }
            (u.clone(), true)
        }
        None => {
            if !state.allow_anonymous.load(Ordering::SeqCst) {
                let (s, h, b) = unauthorized("authentication required");
                return reply(s, h, b);
            }
            (String::new(), false)
        }
    };
    let mut access = Vec::new();
    for scope in &scopes {
        // type:name:actions — name may itself contain ':' (host:port/name).
        let Some((typ, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .filter(|a| full || (typ == "repository" && *a == "pull"))
            .collect();
        if !granted.is_empty() {
            access.push(json!({"type": typ, "name": name, "actions": granted}));
        }
    }
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    let jwt = match make_jwt(state, &subject, access, expires_in) {
        Ok(t) => t,
        Err(e) => return reply(500, json_headers(), error_body("INTERNAL", &e)),
    };
    let issued_at = rfc3339(now_secs());
    let style = *state.style.lock().unwrap();
    let body = match style {
        TokenResponseStyle::Both => {
            json!({"token": jwt, "access_token": jwt, "expires_in": expires_in, "issued_at": issued_at})
        }
        TokenResponseStyle::TokenOnly => {
            json!({"token": jwt, "expires_in": expires_in, "issued_at": issued_at})
        }
        TokenResponseStyle::AccessTokenOnly => {
            json!({"access_token": jwt, "expires_in": expires_in, "issued_at": issued_at})
        }
    };
    reply(200, json_headers(), serde_json::to_vec(&body).unwrap())
}

/// Decodes a JWT's claims (no verification) — handy in assertions.
pub fn jwt_claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("JWT has 3 parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url claims"))
        .expect("claims JSON")
}
