//! Which files under a path are manifests, by kubelet's own rules.
//!
//! kubelet globs `[^.]*` in the directory, sorts the names, follows symlinks
//! and skips subdirectories without recursing. Matching that exactly matters:
//! a file staticpin ignored but kubelet runs would go unpinned.

use std::path::{Path, PathBuf};

use super::Skip;

/// One directory entry (or the file given), classified as kubelet would.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// A regular file (or a symlink to one): kubelet reads it as a manifest.
    File(PathBuf),
    /// Not read as a manifest, with the reason.
    Skipped(PathBuf, Skip),
}

/// Lists the manifests at `path`: the file itself, or the directory's
/// non-dot entries in byte order. The error does not repeat `path`: the
/// caller reports it with the path.
pub fn scan(path: &Path) -> Result<Vec<Entry>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Ok(vec![classify(path.to_path_buf(), Ok(meta))]);
    }
    let mut names = Vec::new();
    let unlisted = |e: std::io::Error| format!("cannot list directory: {e}");
    for entry in std::fs::read_dir(path).map_err(unlisted)? {
        let entry = entry.map_err(unlisted)?;
        let name = entry.file_name();
        if !name.as_encoded_bytes().starts_with(b".") {
            names.push(name);
        }
    }
    // Go's sort.Strings compares bytes, as does OsString's Ord on Unix.
    names.sort();
    Ok(names
        .into_iter()
        .map(|n| {
            let p = path.join(n);
            let meta = std::fs::metadata(&p);
            classify(p, meta)
        })
        .collect())
}

fn classify(p: PathBuf, meta: std::io::Result<std::fs::Metadata>) -> Entry {
    match meta {
        Ok(m) if m.is_file() => Entry::File(p),
        Ok(m) if m.is_dir() => {
            Entry::Skipped(p, Skip::benign("directory (kubelet does not recurse)"))
        }
        Ok(_) => Entry::Skipped(p, Skip::benign("not a regular file")),
        Err(e) => Entry::Skipped(p, Skip::error(format!("cannot stat: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_kubelet_rules() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for f in [
            "b.yaml",
            "a.json",
            "Z.bak",
            "noext",
            ".hidden.yaml",
            ".b.yaml.staticpin-1-1.tmp",
        ] {
            std::fs::write(p.join(f), "x").unwrap();
        }
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("sub/c.yaml"), "x").unwrap();
        std::os::unix::fs::symlink(p.join("b.yaml"), p.join("link.yaml")).unwrap();
        std::os::unix::fs::symlink(p.join("gone"), p.join("dangling.yaml")).unwrap();
        let names: Vec<String> = scan(p)
            .unwrap()
            .iter()
            .map(|e| match e {
                Entry::File(f) => f.file_name().unwrap().to_string_lossy().into_owned(),
                Entry::Skipped(f, s) => format!(
                    "{}:{}",
                    f.file_name().unwrap().to_string_lossy(),
                    s.is_error
                ),
            })
            .collect();
        assert_eq!(
            names,
            [
                "Z.bak",
                "a.json",
                "b.yaml",
                "dangling.yaml:true",
                "link.yaml",
                "noext",
                "sub:false"
            ]
        );
        assert_eq!(
            scan(&p.join("a.json")).unwrap(),
            vec![Entry::File(p.join("a.json"))]
        );
        // The caller reports the path; the error says only what went wrong.
        let missing = scan(&p.join("missing")).unwrap_err();
        assert!(!missing.contains("missing"), "{missing}");
        assert!(missing.contains("os error 2"), "{missing}");
    }
}
