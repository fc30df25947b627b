//! Image pins: byte-exact rewriting of image scalars through the
//! [`super::edit`] engine, and the proof that it was exact.
//!
//! Only the bytes between a scalar's quotes (or of a plain scalar) change;
//! the quoting style is kept. Before anything is written, the new text is
//! parsed twice more: by our locator (the images must be exactly the intended
//! values, in the same places) and by serde_norway, an independent libyaml
//! based parser (the whole document must equal the old one with only those
//! values replaced). A mismatch is a bug in staticpin and blocks the write.

use super::edit::{self, Change, Seg, TextEdit};
use super::parse::{inspect, ImageSite, Quoting, VOLUMES_FIELD};

pub use super::edit::encode;

/// One image pin: the site to change and the value it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    /// Where the old value is, as [`inspect`] found it.
    pub site: ImageSite,
    /// The whole new reference, e.g. `name:tag@sha256:…`; encoded for the
    /// site's quoting when written.
    pub new_value: String,
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
    let mut text_edits: Vec<TextEdit> = edits
        .iter()
        .enumerate()
        .map(|(order, e)| {
            let quoting = written_quoting(&e.site, &e.new_value);
            let mut new = encode(&e.new_value, quoting);
            if quoting != e.site.quoting {
                new = format!("\"{new}\"");
            }
            TextEdit::replace(e.site.inner.clone(), order, new)
        })
        .collect();
    edit::apply(text, &mut text_edits)
}

/// Where an image site is in the Pod, for the independent parse.
fn image_path(site: &ImageSite) -> Vec<Seg> {
    let mut path = vec![
        Seg::Key("spec"),
        Seg::Key(site.field),
        Seg::Index(site.index),
    ];
    path.push(Seg::Key("image"));
    if site.field == VOLUMES_FIELD {
        path.push(Seg::Key("reference"));
    }
    path
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

    let changes: Vec<Change> = edits
        .iter()
        .map(|e| Change::Set {
            path: image_path(&e.site),
            value: e.new_value.clone(),
        })
        .collect();
    edit::verify(old, new, &changes)
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
