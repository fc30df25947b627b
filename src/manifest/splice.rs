//! Byte-exact rewriting of image scalars, and the proof that it was exact.
//!
//! Only the bytes between a scalar's quotes (or of a plain scalar) change;
//! the quoting style is kept. Before anything is written, the new text is
//! parsed twice more: by our locator (the images must be exactly the intended
//! values, in the same places) and by serde_norway, an independent libyaml
//! based parser (the whole document must equal the old one with only those
//! values replaced). A mismatch is a bug in staticpin and blocks the write.

use serde::Deserialize;
use serde_norway::Value;

use super::parse::{inspect, ImageSite, Quoting, VOLUMES_FIELD};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub site: ImageSite,
    pub new_value: String,
}

/// The scalar text for `value` in the given quoting style.
pub fn encode(value: &str, quoting: Quoting) -> String {
    match quoting {
        Quoting::Plain => value.to_string(),
        Quoting::Single => value.replace('\'', "''"),
        Quoting::Double => value.replace('\\', "\\\\").replace('"', "\\\""),
    }
}

/// How an edit's new value is written: in its old quoting, except that a
/// plain value in a flow collection gains double quotes when the new value
/// has a `:` (go-yaml v2 rejects `x:y` in a plain scalar there).
pub fn written_quoting(site: &ImageSite, new_value: &str) -> Quoting {
    if site.quoting == Quoting::Plain && site.flow && new_value.contains(':') {
        Quoting::Double
    } else {
        site.quoting
    }
}

/// Replaces each edit's scalar text. Edits must not overlap.
pub fn apply(text: &str, edits: &[Edit]) -> String {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| e.site.inner.start);
    let extra: usize = sorted.iter().map(|e| e.new_value.len() + 2).sum();
    let mut out = String::with_capacity(text.len() + extra);
    let mut pos = 0;
    for e in sorted {
        out.push_str(&text[pos..e.site.inner.start]);
        let quoting = written_quoting(&e.site, &e.new_value);
        let added_quotes = quoting != e.site.quoting;
        if added_quotes {
            out.push('"');
        }
        out.push_str(&encode(&e.new_value, quoting));
        if added_quotes {
            out.push('"');
        }
        pos = e.site.inner.end;
    }
    out.push_str(&text[pos..]);
    out
}

/// Checks that `new` is `old` with exactly the edits applied, semantically.
pub fn verify(old: &str, new: &str, edits: &[Edit]) -> Result<(), String> {
    let before = inspect(old).map_err(|s| format!("original no longer parses: {}", s.reason))?;
    let after =
        inspect(new).map_err(|s| format!("rewritten manifest does not parse: {}", s.reason))?;
    if before.name != after.name {
        return Err("metadata.name changed".into());
    }
    let mut expected = before.images.clone();
    for e in edits {
        let slot = expected
            .iter_mut()
            .find(|s| s.field == e.site.field && s.index == e.site.index)
            .ok_or("edit for an image that is not in the file")?;
        slot.value = e.new_value.clone();
        slot.quoting = written_quoting(&e.site, &e.new_value);
    }
    let key = |s: &ImageSite| (s.field, s.index, s.value.clone(), s.quoting);
    if before.notes != after.notes {
        return Err("the documents after the first changed".into());
    }
    if expected.iter().map(key).ne(after.images.iter().map(key)) {
        return Err("image values after rewriting are not the intended ones".into());
    }

    let mut old_doc =
        first_document(old).map_err(|e| format!("original does not parse as YAML: {e}"))?;
    let new_doc = first_document(new)
        .map_err(|e| format!("rewritten manifest does not parse as YAML: {e}"))?;
    for e in edits {
        let item = old_doc
            .get_mut("spec")
            .and_then(|s| s.get_mut(e.site.field))
            .and_then(|l| l.get_mut(e.site.index));
        let slot = if e.site.field == VOLUMES_FIELD {
            item.and_then(|v| v.get_mut("image"))
                .and_then(|i| i.get_mut("reference"))
        } else {
            item.and_then(|c| c.get_mut("image"))
        }
        .ok_or("independent parser does not see the image being edited")?;
        *slot = Value::String(e.new_value.clone());
    }
    if old_doc != new_doc {
        return Err("rewritten document differs from the original beyond the image values".into());
    }
    Ok(())
}

/// The first document, which is all kubelet reads; later ones are never
/// edited (every image site is in the first).
fn first_document(text: &str) -> Result<Value, String> {
    // kubelet's reader skips a leading BOM; serde_norway's keeps it as text.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc = serde_norway::Deserializer::from_str(text)
        .next()
        .ok_or("no document")?;
    Value::deserialize(doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin_all(text: &str) -> String {
        let pod = inspect(text).unwrap();
        let edits: Vec<Edit> = pod
            .images
            .into_iter()
            .map(|s| Edit {
                new_value: format!("{}@sha256:{}", s.value, "a".repeat(64)),
                site: s,
            })
            .collect();
        let new = apply(text, &edits);
        verify(text, &new, &edits).unwrap();
        new
    }

    #[test]
    fn keeps_every_other_byte() {
        let text = "# top\r\nkind: Pod\r\nmetadata: {name: x}   # ü\r\nspec:\r\n  containers:\r\n  - image: 'a:1'  # it's\r\n    name: a\r\n  - {name: b, image: \"b:2\"} # \"c\"\r\n  - name: c\r\n    image:    c:3 # tail";
        let new = pin_all(text);
        let h = "a".repeat(64);
        let want = text
            .replace("'a:1'", &format!("'a:1@sha256:{h}'"))
            .replace("\"b:2\"", &format!("\"b:2@sha256:{h}\""))
            .replace("c:3 #", &format!("c:3@sha256:{h} #"));
        assert_eq!(new, want);
    }

    #[test]
    fn verify_catches_collateral_damage() {
        let text =
            "kind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n  - {name: a, image: a}\n";
        let pod = inspect(text).unwrap();
        let edits = vec![Edit {
            site: pod.images[0].clone(),
            new_value: "a@sha256:00".into(),
        }];
        let mut bad = apply(text, &edits);
        bad = bad.replace("name: a", "name: z");
        assert!(verify(text, &bad, &edits).unwrap_err().contains("differs"));
        let wrong = text.replace("image: a", "image: b");
        assert!(verify(text, &wrong, &edits)
            .unwrap_err()
            .contains("intended"));
    }

    #[test]
    fn encodes_quotes() {
        assert_eq!(encode("it's", Quoting::Single), "it''s");
        assert_eq!(encode("a\"b\\", Quoting::Double), "a\\\"b\\\\");
    }
}
