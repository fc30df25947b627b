//! Test images without a container engine: writes OCI image layouts
//! (single-arch images and multi-arch indexes, tiny but valid uncompressed
//! tar layers), pushes them with `skopeo copy --all`, and reads back the
//! digest the registry really serves (`oracle_digest`, the independent
//! oracle for resolver tests).
//!
//! One layout dir may hold many tags: each call adds (or replaces) one
//! `org.opencontainers.image.ref.name` entry in `index.json`; blobs are
//! content-addressed and shared. Not safe for two threads writing the same
//! dir at once — use one dir per test. Output is deterministic: same
//! (tag, arch(es), seed) → same digests; different seed → different digests.
//!
//! Note: pushing to a registry makes skopeo gzip the layers and rewrite the
//! manifests, so the pushed digest differs from `Layout::digest`. Always use
//! `oracle_digest` for "what the registry serves".

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::registry::Registry;
use super::run;
use super::token::hex;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The four manifest media types, comma-separated, for an `Accept` header.
pub const ALL_MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What one `Layout::image` / `Layout::index` call wrote.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
    pub tag: String,
    /// Digest of the tagged manifest/index as written in the layout
    /// (NOT what a registry serves after a push).
    pub digest: String,
    pub media_type: &'static str,
    /// (platform "linux/ARCH[/VARIANT]", image manifest digest) per image.
    pub manifests: Vec<(String, String)>,
}

/// "sha256:<hex>" of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn write_blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = sha256_digest(bytes);
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).expect("create blobs/sha256");
    let p = blobs.join(&digest["sha256:".len()..]);
    if !p.exists() {
        fs::write(&p, bytes).unwrap_or_else(|e| panic!("write blob {}: {}", p.display(), e));
    }
    (digest, bytes.len())
}

/// "arm64" → ("arm64", None); "arm/v7" → ("arm", Some("v7")).
fn split_arch(arch: &str) -> (&str, Option<&str>) {
    match arch.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (arch, None),
    }
}

/// A deterministic uncompressed tar with one file, `staticpin-seed.txt`,
/// whose content names the seed and the arch. Built with GNU tar.
pub fn layer_tar(seed: &str, arch: &str) -> Vec<u8> {
    let staging = tempfile::Builder::new()
        .prefix("layer-")
        .tempdir()
        .expect("tempdir");
    fs::write(
        staging.path().join("staticpin-seed.txt"),
        format!("staticpin test layer\nseed={}\narch={}\n", seed, arch),
    )
    .expect("write layer file");
    run(Command::new("tar")
        .args([
            "--create",
            "--format=ustar",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--sort=name",
            "--mode=a=r,u+w",
            "--file=-",
            "-C",
        ])
        .arg(staging.path())
        .arg("staticpin-seed.txt"))
}

/// Writes layer + config + manifest blobs for one linux/`arch` image.
/// Returns (manifest digest, size, platform JSON).
fn write_image(dir: &Path, arch: &str, seed: &str) -> (String, usize, Value) {
    let (architecture, variant) = split_arch(arch);
    let layer = layer_tar(seed, arch);
    let (layer_digest, layer_size) = write_blob(dir, &layer);
    let mut config = json!({
        "architecture": architecture,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "config": {"Labels": {"staticpin.test.seed": seed}},
    });
    let mut platform = json!({"architecture": architecture, "os": "linux"});
    if let Some(v) = variant {
        config["variant"] = json!(v);
        platform["variant"] = json!(v);
    }
    let (config_digest, config_size) = write_blob(dir, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MT_OCI_LAYER, "digest": layer_digest, "size": layer_size}],
    });
    let (d, s) = write_blob(dir, &serde_json::to_vec(&manifest).unwrap());
    (d, s, platform)
}

/// Adds/replaces the `tag` entry in `dir/index.json` (creates the layout).
fn set_tag(dir: &Path, tag: &str, media_type: &str, digest: &str, size: usize) {
    fs::create_dir_all(dir).expect("create layout dir");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let index_path = dir.join("index.json");
    let mut index: Value = match fs::read(&index_path) {
        Ok(b) => serde_json::from_slice(&b).expect("parse existing index.json"),
        Err(_) => json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}),
    };
    let list = index["manifests"]
        .as_array_mut()
        .expect("index.json manifests");
    list.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
    list.push(json!({
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {REF_NAME: tag},
    }));
    fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).expect("write index.json");
}

fn platform_string(p: &Value) -> String {
    let mut s = format!(
        "{}/{}",
        p["os"].as_str().unwrap(),
        p["architecture"].as_str().unwrap()
    );
    if let Some(v) = p["variant"].as_str() {
        s.push('/');
        s.push_str(v);
    }
    s
}

impl Layout {
    /// One single-arch linux/`arch` image tagged `tag` in layout `dir`.
    /// `arch` may carry a variant: "arm/v7".
    pub fn image(dir: &Path, tag: &str, arch: &str, seed: &str) -> Layout {
        let (digest, size, platform) = write_image(dir, arch, seed);
        set_tag(dir, tag, MT_OCI_MANIFEST, &digest, size);
        Layout {
            dir: dir.to_path_buf(),
            tag: tag.into(),
            digest: digest.clone(),
            media_type: MT_OCI_MANIFEST,
            manifests: vec![(platform_string(&platform), digest)],
        }
    }

    /// A multi-arch OCI index over one image per arch, tagged `tag`.
    pub fn index(dir: &Path, tag: &str, arches: &[&str], seed: &str) -> Layout {
        assert!(!arches.is_empty(), "oci_index needs at least one arch");
        let mut entries = Vec::new();
        let mut manifests = Vec::new();
        for arch in arches {
            let (d, s, platform) = write_image(dir, arch, seed);
            manifests.push((platform_string(&platform), d.clone()));
            entries.push(
                json!({"mediaType": MT_OCI_MANIFEST, "digest": d, "size": s, "platform": platform}),
            );
        }
        let index = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries});
        let (digest, size) = write_blob(dir, &serde_json::to_vec(&index).unwrap());
        set_tag(dir, tag, MT_OCI_INDEX, &digest, size);
        Layout {
            dir: dir.to_path_buf(),
            tag: tag.into(),
            digest,
            media_type: MT_OCI_INDEX,
            manifests,
        }
    }

    /// `push(self.dir, self.tag, ...)`.
    pub fn push(&self, reg: &Registry, repo: &str, dest_tag: &str, creds: Option<(&str, &str)>) {
        push(&self.dir, &self.tag, reg, repo, dest_tag, creds)
    }
}

/// Writes a single-arch image tagged `tag` into layout `dir`; returns `dir`.
pub fn oci_image(dir: &Path, tag: &str, arch: &str, seed: &str) -> PathBuf {
    Layout::image(dir, tag, arch, seed).dir
}

/// Writes a multi-arch index tagged `tag` into layout `dir`; returns `dir`.
pub fn oci_index(dir: &Path, tag: &str, arches: &[&str], seed: &str) -> PathBuf {
    Layout::index(dir, tag, arches, seed).dir
}

/// skopeo with a private empty auth file (so no host credentials leak in)
/// and no signature policy lookup.
fn skopeo(auth_dir: &Path) -> Command {
    let mut c = Command::new("skopeo");
    c.env("REGISTRY_AUTH_FILE", auth_dir.join("auth.json"));
    c.arg("--insecure-policy");
    c
}

/// `skopeo copy --all oci:LAYOUT:TAG docker://HOST/REPO:DEST_TAG`, without
/// TLS verification. Panics with skopeo's output on failure. For a token
/// registry pass credentials of a user the issuer knows (anonymous gets pull
/// only). Re-pushing a tag with other content moves it (drift tests).
pub fn push(
    layout: &Path,
    tag: &str,
    reg: &Registry,
    repo: &str,
    dest_tag: &str,
    creds: Option<(&str, &str)>,
) {
    push_as(layout, tag, reg, repo, dest_tag, creds, None)
}

/// `push` converting to a manifest `format` on the way (skopeo's
/// `--format`: `oci` or `v2s2`, which turns an OCI index into a Docker
/// manifest list and an OCI manifest into a Docker v2 manifest).
pub fn push_as(
    layout: &Path,
    tag: &str,
    reg: &Registry,
    repo: &str,
    dest_tag: &str,
    creds: Option<(&str, &str)>,
    format: Option<&str>,
) {
    let auth = tempfile::tempdir().expect("tempdir");
    let mut c = skopeo(auth.path());
    c.args([
        "copy",
        "--all",
        "--retry-times",
        "0",
        "--dest-tls-verify=false",
    ]);
    if let Some(f) = format {
        c.arg(format!("--format={f}"));
    }
    if let Some((u, p)) = creds {
        c.arg(format!("--dest-creds={}:{}", u, p));
    }
    c.arg(format!("oci:{}:{}", layout.display(), tag));
    c.arg(format!("docker://{}/{}:{}", reg.host, repo, dest_tag));
    run(&mut c);
}

/// Raw manifest bytes the registry serves for REPO:TAG (`skopeo inspect
/// --raw`, which accepts all manifest types: an index for multi-arch tags).
pub fn oracle_manifest(
    reg: &Registry,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &str)>,
) -> Vec<u8> {
    let auth = tempfile::tempdir().expect("tempdir");
    let mut c = skopeo(auth.path());
    c.args([
        "inspect",
        "--raw",
        "--retry-times",
        "0",
        "--tls-verify=false",
    ]);
    if let Some((u, p)) = creds {
        c.arg(format!("--creds={}:{}", u, p));
    }
    c.arg(format!("docker://{}/{}:{}", reg.host, repo, tag));
    run(&mut c)
}

/// "sha256:<hex>" of the manifest bytes the registry serves for REPO:TAG —
/// the independent oracle for resolved digests.
pub fn oracle_digest(reg: &Registry, repo: &str, tag: &str, creds: Option<(&str, &str)>) -> String {
    sha256_digest(&oracle_manifest(reg, repo, tag, creds))
}
