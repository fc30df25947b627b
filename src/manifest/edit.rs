//! The one byte-preserving YAML edit engine, used by image pins
//! ([`super::splice`]) and by kube-apiserver wiring
//! ([`crate::admission::wiring`]) alike.
//!
//! Edits are byte ranges of the original text replaced by new text: a
//! scalar's bytes between its quotes (quoting style kept), or new list items
//! and keys that copy the layout of their neighbours. They are applied in one
//! pass; everything else keeps every byte. Each text edit is paired with the
//! structural [`Change`] it is meant to make, and [`verify`] proves with an
//! independent parser (serde_norway, libyaml based) that the new first
//! document is the old one with exactly those changes.

use serde::Deserialize;
use serde_norway::Value;

use super::parse::{byte_offsets, locate_scalar, Node, Quoting};

/// One text change: replace `range` (empty for an insertion) with `text`.
/// `order` breaks ties between insertions at the same position.
pub struct TextEdit {
    start: usize,
    end: usize,
    /// Tie-breaker among edits at the same position: lower goes first.
    pub order: usize,
    /// The replacement text, already encoded for its quoting and layout.
    pub text: String,
}

impl TextEdit {
    /// Replaces the bytes in `range` of the original text with `text`.
    pub fn replace(range: std::ops::Range<usize>, order: usize, text: String) -> TextEdit {
        TextEdit {
            start: range.start,
            end: range.end,
            order,
            text,
        }
    }
}

/// The same change, structurally, for verification.
pub enum Change {
    /// A scalar at `path` becomes the string `value`.
    Set {
        /// Where the scalar is, from the document root.
        path: Vec<Seg>,
        /// The new string value.
        value: String,
    },
    /// `value` is inserted into the list at `path`, at `index`.
    Insert {
        /// The list, from the document root.
        path: Vec<Seg>,
        /// Position in the list as it was before any insertion.
        index: usize,
        /// The matching text edit's order, so insertions at one index verify in
        /// text order.
        order: usize,
        /// The new item, as the independent parser should read it.
        value: Value,
    },
}

/// One step of a path into the document: a mapping key or a list index.
#[derive(Clone)]
pub enum Seg {
    /// A mapping key.
    Key(&'static str),
    /// A list index, 0-based.
    Index(usize),
}

/// An edit session over one text: the text edits, their structural twins,
/// and a line per change for the report.
pub struct Editor<'a> {
    /// The original text; edit positions are byte offsets into it.
    pub text: &'a str,
    /// The line ending for inserted lines: `\r\n` if the text uses any, else
    /// `\n`.
    pub eol: &'static str,
    /// The text edits so far.
    pub edits: Vec<TextEdit>,
    /// Their structural twins, for [`verify`].
    pub changes: Vec<Change>,
    /// One human-readable line per change, for the report.
    pub summary: Vec<String>,
    /// The last order handed out by [`Editor::next_order`].
    pub order: usize,
}

impl<'a> Editor<'a> {
    /// An empty session over `text`.
    pub fn new(text: &'a str) -> Editor<'a> {
        Editor {
            text,
            eol: if text.contains("\r\n") { "\r\n" } else { "\n" },
            edits: Vec::new(),
            changes: Vec::new(),
            summary: Vec::new(),
            order: 0,
        }
    }

    /// The edited text: every edit applied, nothing verified yet.
    pub fn apply(&mut self) -> String {
        apply(self.text, &mut self.edits)
    }

    /// Byte offset of the parser's character index `char_index` in the text.
    pub fn byte(&self, char_index: usize) -> usize {
        byte_offsets(self.text, [char_index])[0]
    }

    /// A fresh order, later than every one handed out before.
    pub fn next_order(&mut self) -> usize {
        self.order += 1;
        self.order
    }
}

/// The path of item `i` in list `field` under `cpath`, e.g. a container's
/// `command[i]`.
pub fn field_path(cpath: &[Seg], field: &'static str, i: usize) -> Vec<Seg> {
    let mut p = cpath.to_vec();
    p.push(Seg::Key(field));
    p.push(Seg::Index(i));
    p
}

pub(crate) fn set_scalar(
    cx: &mut Editor,
    item: &Node,
    path: Vec<Seg>,
    value: &str,
) -> Result<(), String> {
    let Node::Scalar {
        value: old,
        style,
        span,
    } = item
    else {
        return Err("the item to set is not a string".into());
    };
    let start = cx.byte(span.start.index());
    let end = cx.byte(span.end.index());
    let (quoting, inner) = locate_scalar(cx.text, start, end, old, *style)?;
    if quoting == Quoting::Plain {
        plain_safe(value)?;
    }
    let order = cx.next_order();
    cx.edits.push(TextEdit {
        start: inner.start,
        end: inner.end,
        order,
        text: encode(value, quoting),
    });
    cx.changes.push(Change::Set {
        path,
        value: value.to_string(),
    });
    Ok(())
}

/// Values staticpin writes as plain scalars must read back as the same string.
pub fn plain_safe(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:".contains(&b))
        && !v.contains(": ")
        && !v.ends_with(':');
    if ok {
        Ok(())
    } else {
        Err(format!("{v:?} needs quoting; refusing to write it"))
    }
}

/// A block sequence item's layout: where its line starts, the text before
/// its content (`    - `), and the content's column.
pub struct ItemLayout {
    /// Byte offset where the item's line starts.
    pub line_start: usize,
    /// Everything on the line before the content, dash included, e.g. `    - `.
    pub dash_prefix: String,
    /// Column of the content, in bytes: the indent a continuation line needs.
    pub content_col: usize,
}

pub(crate) fn layout(cx: &Editor, item: &Node) -> Result<ItemLayout, String> {
    let b = cx.byte(item.first_char().ok_or("empty list item")?);
    let line_start = cx.text[..b].rfind('\n').map_or(0, |i| i + 1);
    let prefix = &cx.text[line_start..b];
    let trimmed = prefix.trim_start_matches(' ');
    if !(trimmed.starts_with('-') && trimmed[1..].chars().all(|c| c == ' ') && trimmed.len() > 1) {
        return Err(format!(
            "list item on line {} is not laid out as \"- value\"; refusing to edit it",
            cx.text[..b].matches('\n').count() + 1
        ));
    }
    Ok(ItemLayout {
        line_start,
        dash_prefix: prefix.to_string(),
        content_col: prefix.len(),
    })
}

/// Where to insert a new item so it lands at `index`: before that item's
/// line, or after the last item's line.
pub(crate) fn insertion_point(
    cx: &Editor,
    items: &[Node],
    index: usize,
) -> Result<(usize, bool), String> {
    if let Some(next) = items.get(index) {
        return Ok((layout(cx, next)?.line_start, false));
    }
    let last = items.last().ok_or("cannot extend an empty list")?;
    let end = cx.byte(last.last_char().ok_or("empty list item")?);
    match cx.text[end..].find('\n') {
        Some(i) => Ok((end + i + 1, false)),
        None => Ok((cx.text.len(), true)),
    }
}

/// Index at which `key` keeps `keys` sorted, or the end when they are not sorted.
pub fn sorted_index(keys: &[String], key: &str) -> usize {
    if keys.windows(2).all(|w| w[0] <= w[1]) {
        keys.iter()
            .position(|k| k.as_str() > key)
            .unwrap_or(keys.len())
    } else {
        keys.len()
    }
}

pub(crate) fn block_items<'n>(list: &'n Node, what: &str) -> Result<&'n [Node], String> {
    match list {
        Node::Seq { flow: false, items } if !items.is_empty() => Ok(items),
        Node::Seq { flow: true, .. } => Err(format!(
            "{what} is a flow-style [..] list; staticpin only extends block lists"
        )),
        _ => Err(format!(
            "{what} is empty or not a list; staticpin only extends existing block lists"
        )),
    }
}

pub(crate) fn insert_item(
    cx: &mut Editor,
    items: &[Node],
    index: usize,
    body: String,
    path: Vec<Seg>,
    value: Value,
) -> Result<(), String> {
    let (pos, needs_eol) = insertion_point(cx, items, index)?;
    let text = if needs_eol {
        format!("{}{body}", cx.eol)
    } else {
        format!("{body}{}", cx.eol)
    };
    let order = cx.next_order();
    cx.edits.push(TextEdit {
        start: pos,
        end: pos,
        order,
        text,
    });
    cx.changes.push(Change::Insert {
        path,
        index,
        order,
        value,
    });
    Ok(())
}

/// Applies `edits` to `text` in position order (sorting them) and returns the
/// new text; unverified.
pub fn apply(text: &str, edits: &mut [TextEdit]) -> String {
    edits.sort_by_key(|e| (e.start, e.order));
    let mut out = String::with_capacity(text.len() + 512);
    let mut pos = 0;
    for e in edits.iter() {
        out.push_str(&text[pos..e.start]);
        out.push_str(&e.text);
        pos = e.end.max(pos);
    }
    out.push_str(&text[pos..]);
    out
}

/// The new text's first document must parse to the old one with exactly
/// these changes.
pub fn verify(old: &str, new: &str, changes: &[Change]) -> Result<(), String> {
    let mut expected =
        first_document(old).map_err(|e| format!("original does not parse as YAML: {e}"))?;
    let got = first_document(new)
        .map_err(|e| format!("rewritten manifest does not parse as YAML: {e}"))?;
    let mut inserts: Vec<&Change> = changes
        .iter()
        .filter(|c| matches!(c, Change::Insert { .. }))
        .collect();
    // Later positions first, so earlier indices stay valid.
    inserts.sort_by_key(|c| match c {
        Change::Insert { index, order, .. } => std::cmp::Reverse((*index, *order)),
        Change::Set { .. } => unreachable!(),
    });
    for c in changes
        .iter()
        .filter(|c| matches!(c, Change::Set { .. }))
        .chain(inserts)
    {
        match c {
            Change::Set { path, value } => {
                *walk(&mut expected, path)? = Value::String(value.clone());
            }
            Change::Insert {
                path, index, value, ..
            } => {
                walk(&mut expected, path)?
                    .as_sequence_mut()
                    .ok_or("insertion target is not a list")?
                    .insert(*index, value.clone());
            }
        }
    }
    if expected != got {
        return Err(
            "the rewritten document differs from the original beyond the intended edits".into(),
        );
    }
    Ok(())
}

/// The first document, which is all kubelet reads; later ones are never
/// edited.
fn first_document(text: &str) -> Result<Value, String> {
    // kubelet's reader skips a leading BOM; serde_norway's keeps it as text.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc = serde_norway::Deserializer::from_str(text)
        .next()
        .ok_or("no document")?;
    Value::deserialize(doc).map_err(|e| e.to_string())
}

/// The scalar text for `value` in the given quoting style.
pub fn encode(value: &str, quoting: Quoting) -> String {
    match quoting {
        Quoting::Plain => value.to_string(),
        Quoting::Single => value.replace('\'', "''"),
        Quoting::Double => value.replace('\\', "\\\\").replace('"', "\\\""),
    }
}

fn walk<'v>(v: &'v mut Value, path: &[Seg]) -> Result<&'v mut Value, String> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Seg::Key(k) => cur.get_mut(*k),
            Seg::Index(i) => cur.get_mut(*i),
        }
        .ok_or("path missing in the independent parse")?;
    }
    Ok(cur)
}
