//! Test PKI made with the `openssl` CLI: one CA per `Pki`, a server
//! certificate for 127.0.0.1/localhost signed by it, and client certificates
//! on demand (for mTLS). Keys are EC P-256 in PKCS#8 PEM (fast to make;
//! accepted by Go, rustls and curl). Each `Pki` lives in `dir/name/` and is
//! independent of every other one, so two names give two unrelated CAs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::run;

#[derive(Clone, Debug)]
pub struct Pki {
    /// `dir/name/`: holds everything below plus CSRs, serials and ext files.
    pub dir: PathBuf,
    pub ca_crt: PathBuf,
    pub ca_key: PathBuf,
    /// Server certificate: CN=localhost, SAN IP:127.0.0.1, DNS:localhost,
    /// EKU serverAuth, signed by `ca_crt`.
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
}

fn gen_ec_key(path: &Path) {
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(path));
}

impl Pki {
    /// Creates `dir/name/` with a fresh CA (CN="staticpin test CA NAME") and a
    /// server certificate for 127.0.0.1 + localhost. Panics on openssl errors.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let d = dir.join(name);
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {}", d.display(), e));
        let ca_key = d.join("ca.key");
        let ca_crt = d.join("ca.crt");
        gen_ec_key(&ca_key);
        run(Command::new("openssl")
            .args(["req", "-x509", "-new", "-sha256", "-days", "3650", "-key"])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_crt)
            .args(["-subj", &format!("/CN=staticpin test CA {}", name)])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
        let pki = Pki {
            server_crt: d.join("server.crt"),
            server_key: d.join("server.key"),
            dir: d,
            ca_crt,
            ca_key,
        };
        pki.sign_leaf(
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        pki
    }

    /// `admission init` arguments for a webhook this CA serves (at
    /// 127.0.0.1:9443), kube-apiserver's client certificate signed by it,
    /// files into `dir`, mount checked against `manifest_dir`.
    pub fn admission_init_args(&self, dir: &Path, manifest_dir: &Path) -> Vec<std::ffi::OsString> {
        let (cert, key) = self.client_cert("kube-apiserver");
        vec![
            "admission".into(),
            "init".into(),
            "--webhook-url".into(),
            "https://127.0.0.1:9443/check-image".into(),
            "--webhook-ca".into(),
            self.ca_crt.clone().into(),
            "--client-cert".into(),
            cert.into(),
            "--client-key".into(),
            key.into(),
            "--dir".into(),
            dir.into(),
            "--manifest-dir".into(),
            manifest_dir.into(),
        ]
    }

    /// A client certificate (EKU clientAuth, CN=`cn`) signed by this CA.
    /// Returns (cert, key) paths: `dir/client-CN.crt`, `dir/client-CN.key`.
    pub fn client_cert(&self, cn: &str) -> (PathBuf, PathBuf) {
        let base = format!(
            "client-{}",
            cn.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        self.sign_leaf(&base, cn, "extendedKeyUsage=clientAuth\n")
    }

    /// A leaf certificate with arbitrary extra extensions (openssl ext-file
    /// syntax), e.g. a server cert with the wrong SAN for hostname tests.
    /// Returns (crt, key) at `dir/BASE.crt` / `dir/BASE.key`.
    pub fn sign_leaf(&self, base: &str, cn: &str, extra_ext: &str) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{}.key", base));
        let csr = self.dir.join(format!("{}.csr", base));
        let crt = self.dir.join(format!("{}.crt", base));
        let ext = self.dir.join(format!("{}.ext", base));
        fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{}",
                extra_ext
            ),
        )
        .expect("write ext file");
        gen_ec_key(&key);
        run(Command::new("openssl")
            .args(["req", "-new", "-sha256", "-key"])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", &format!("/CN={}", cn)]));
        run(Command::new("openssl")
            .args(["x509", "-req", "-sha256", "-days", "825", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&self.ca_crt)
            .arg("-CAkey")
            .arg(&self.ca_key)
            .arg("-CAserial")
            .arg(self.dir.join("ca.srl"))
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt));
        (crt, key)
    }

    /// A directory holding only `ca.crt`, in the layout skopeo's
    /// `--cert-dir` / containerd's certs.d expect (a `*.crt` is a CA).
    pub fn ca_dir(&self) -> PathBuf {
        let d = self.dir.join("ca-only");
        if !d.join("ca.crt").exists() {
            fs::create_dir_all(&d).expect("mkdir ca-only");
            fs::copy(&self.ca_crt, d.join("ca.crt")).expect("copy ca.crt");
        }
        d
    }

    /// The CA certificate as PEM text.
    pub fn ca_pem(&self) -> String {
        fs::read_to_string(&self.ca_crt).expect("read ca.crt")
    }
}
