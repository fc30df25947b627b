//! Writers for docker-style `config.json` credential files
//! (`{"auths": {KEY: {"auth": base64("user:pass")}}}`), plus a raw variant
//! for odd shapes (identitytoken, credHelpers, malformed entries, ...).

use std::fs;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

/// Writes `path` (creating parent dirs) with one `auths` entry per
/// (key, user, pass); key is e.g. "127.0.0.1:5000" or "https://host:port".
pub fn docker_config(path: &Path, entries: &[(&str, &str, &str)]) {
    let mut auths = Map::new();
    for (key, user, pass) in entries {
        auths.insert(
            key.to_string(),
            json!({"auth": STANDARD.encode(format!("{}:{}", user, pass))}),
        );
    }
    docker_config_raw(path, &json!({"auths": auths}));
}

/// Writes any JSON value to `path` (creating parent dirs).
pub fn docker_config_raw(path: &Path, value: &Value) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create docker config dir");
    }
    fs::write(path, serde_json::to_vec_pretty(value).unwrap())
        .unwrap_or_else(|e| panic!("write {}: {}", path.display(), e));
}
