//! What staticpin accepts as "the manifest this tag names": the one check
//! every digest passes before it may be written.
//!
//! Pinning is a lasting commitment (kubelet restarts the pod at once, and a
//! digest the registry cannot serve keeps etcd or the scheduler down), so the
//! digest is never taken from a header. It is the sha256 of the bytes
//! staticpin received, and those bytes must be JSON of one of the four
//! manifest kinds a runtime pulls. A `Docker-Content-Digest` header is only a
//! cross-check: if present it must be one value and agree with the bytes.
//!
//! The media type is decided like this: the body's own `mediaType` field wins
//! when present (it is covered by the digest; the header is not). When the
//! `Content-Type` header also names a manifest type, the two must agree. When
//! the body has no `mediaType` (allowed for OCI), the `Content-Type` must name
//! one of the four. Either way the JSON must have the shape of that type
//! (`manifests` for an index or list; `config` and `layers` for a manifest),
//! which is what turns away JSON error bodies served with status 200.

use reqwest::header::HeaderMap;
use sha2::{Digest as _, Sha512};

use super::{excerpt, ErrorKind, Failure};
use crate::reference::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The types a runtime pulls by digest, most specific first.
const ACCEPTED: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

const SCHEMA1: [&str; 3] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.container.image.v1+json",
];

fn is_list(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// The `Docker-Content-Digest` the registry claims, if any. Several values
/// (as separate headers or joined by a proxy) mean something between us and
/// the registry is confused, and nothing it says can be trusted.
pub(crate) fn claimed_digest(headers: &HeaderMap) -> Result<Option<Digest>, Failure> {
    let values: Vec<_> = headers.get_all("docker-content-digest").iter().collect();
    match values.as_slice() {
        [] => Ok(None),
        [one] => {
            let text = one.to_str().map_err(|_| {
                Failure::new(
                    ErrorKind::BadDigest,
                    "Docker-Content-Digest header is not ASCII",
                )
            })?;
            Digest::parse(text.trim()).map(Some).map_err(|e| {
                Failure::new(
                    ErrorKind::BadDigest,
                    format!("Docker-Content-Digest header is not one digest: {e}"),
                )
            })
        }
        several => Err(Failure::new(
            ErrorKind::BadDigest,
            format!(
                "sent {} Docker-Content-Digest headers for one manifest",
                several.len()
            ),
        )),
    }
}

/// Checks a claimed digest against the bytes. A correct sha512 claim is
/// still refused: such a registry addresses content by sha512, and nothing
/// says it serves the manifest under the sha256 digest staticpin would write.
pub(crate) fn check_claim(claimed: &Digest, body: &[u8], sha256: &Digest) -> Result<(), Failure> {
    let matches = match claimed.algorithm() {
        "sha256" => claimed == sha256,
        "sha512" => {
            let hex: String = Sha512::digest(body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            claimed.to_string() == format!("sha512:{hex}")
        }
        other => {
            return Err(Failure::new(
                ErrorKind::Protocol,
                format!(
                    "identifies manifests by {other} digests ({claimed}); staticpin verifies sha256 and sha512 only and pins sha256 digests"
                ),
            ))
        }
    };
    if !matches {
        return Err(Failure::new(
            ErrorKind::BadDigest,
            format!(
                "registry claims Docker-Content-Digest {claimed} but the manifest it sent hashes to {}",
                if claimed.algorithm() == "sha256" {
                    sha256.to_string()
                } else {
                    format!("something else (sha256 {sha256})")
                }
            ),
        ));
    }
    if claimed.algorithm() != "sha256" {
        return Err(Failure::new(
            ErrorKind::Protocol,
            format!(
                "identifies manifests by sha512 digests ({claimed}, verified); staticpin pins only sha256 digests and cannot know this registry serves the manifest by one"
            ),
        ));
    }
    Ok(())
}

/// The media type of `body` if it is a manifest staticpin may pin, or why not.
pub(crate) fn manifest_type(body: &[u8], content_type: Option<&str>) -> Result<String, Failure> {
    let header = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty());
    let not_manifest = |why: &str| {
        Failure::new(
            ErrorKind::Protocol,
            format!(
                "the answer is not a manifest ({why}; Content-Type {}): {}",
                header.as_deref().unwrap_or("none"),
                excerpt(&String::from_utf8_lossy(body))
            ),
        )
    };
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| not_manifest("not JSON"))?;
    let obj = json
        .as_object()
        .ok_or_else(|| not_manifest("not a JSON object"))?;
    let field = match obj.get("mediaType") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(not_manifest("mediaType is not a string")),
    };
    let schema1 = |t: Option<&str>| t.is_some_and(|t| SCHEMA1.contains(&t));
    if obj.get("schemaVersion").and_then(|v| v.as_i64()) == Some(1)
        || schema1(field)
        || schema1(header.as_deref())
    {
        return Err(Failure::new(
            ErrorKind::Protocol,
            "the registry sent a schema 1 manifest, which containerd no longer pulls; push the image again with a current tool",
        ));
    }
    if obj.get("schemaVersion").and_then(|v| v.as_i64()) != Some(2) {
        return Err(not_manifest("no schemaVersion 2"));
    }
    let header_type = header.as_deref().filter(|h| ACCEPTED.contains(h));
    let media_type = match (field, header_type) {
        (Some(f), _) if !ACCEPTED.contains(&f) => {
            return Err(not_manifest(&format!(
                "mediaType {} is not one staticpin pins",
                excerpt(f)
            )))
        }
        (Some(f), Some(h)) if f != h => {
            return Err(not_manifest(&format!(
                "the body says {f} but the Content-Type says {h}"
            )))
        }
        (Some(f), _) => f.to_string(),
        (None, Some(h)) => h.to_string(),
        (None, None) => {
            return Err(not_manifest(
                "neither its mediaType nor the Content-Type names a manifest type",
            ))
        }
    };
    let shaped = if is_list(&media_type) {
        obj.get("manifests").is_some_and(|m| m.is_array())
    } else {
        obj.get("config").is_some_and(|c| c.is_object())
            && obj.get("layers").is_some_and(|l| l.is_array())
    };
    if !shaped {
        return Err(not_manifest(&format!(
            "the JSON does not have the fields of {media_type}"
        )));
    }
    Ok(media_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn manifest(mt: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({"schemaVersion": 2, "config": {}, "layers": []});
        if let Some(mt) = mt {
            v["mediaType"] = mt.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn media_type_from_body_or_header() {
        assert_eq!(
            manifest_type(&manifest(Some(OCI_MANIFEST)), None).unwrap(),
            OCI_MANIFEST
        );
        assert_eq!(
            manifest_type(
                &manifest(None),
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")
            )
            .unwrap(),
            OCI_MANIFEST
        );
        // A generic header does not contradict the body.
        assert_eq!(
            manifest_type(&manifest(Some(DOCKER_MANIFEST)), Some("application/json")).unwrap(),
            DOCKER_MANIFEST
        );
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(manifest_type(index, Some(OCI_INDEX)).unwrap(), OCI_INDEX);
        for (body, ct) in [
            (manifest(None), None),
            (manifest(Some(OCI_MANIFEST)), Some(DOCKER_MANIFEST)),
            (index.to_vec(), Some(OCI_MANIFEST)),
            (manifest(Some("text/html")), None),
            (b"[]".to_vec(), Some(OCI_INDEX)),
            (b"\xff\xfe".to_vec(), Some(OCI_INDEX)),
        ] {
            assert!(manifest_type(&body, ct).is_err(), "{body:?} {ct:?}");
        }
    }

    #[test]
    fn digest_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(claimed_digest(&h).unwrap(), None);
        let d = Digest::sha256_of(b"x");
        h.append(
            "docker-content-digest",
            HeaderValue::from_str(&d.to_string()).unwrap(),
        );
        assert_eq!(claimed_digest(&h).unwrap(), Some(d.clone()));
        h.append(
            "docker-content-digest",
            HeaderValue::from_str(&d.to_string()).unwrap(),
        );
        assert_eq!(claimed_digest(&h).unwrap_err().kind, ErrorKind::BadDigest);
        assert!(check_claim(&d, b"x", &d).is_ok());
        let other = Digest::sha256_of(b"y");
        assert_eq!(
            check_claim(&other, b"x", &d).unwrap_err().kind,
            ErrorKind::BadDigest
        );
    }
}
