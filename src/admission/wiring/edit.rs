//! The text-edit engine of the wiring: edits that copy the layout of
//! neighbouring list items, applied in one pass, then proven against an
//! independent parse (serde_norway) to change exactly the intended values.

use serde_norway::Value;

use crate::manifest::parse::{byte_offsets, locate_scalar, Node, Quoting};
use crate::manifest::splice::encode;

/// One text change: replace `range` (empty for an insertion) with `text`.
/// `order` breaks ties between insertions at the same position.
pub(super) struct TextEdit {
    start: usize,
    end: usize,
    pub(super) order: usize,
    pub(super) text: String,
}

/// The same change, structurally, for verification.
pub(super) enum Change {
    Set {
        path: Vec<Seg>,
        value: String,
    },
    Insert {
        path: Vec<Seg>,
        index: usize,
        order: usize,
        value: Value,
    },
}

#[derive(Clone)]
pub(super) enum Seg {
    Key(&'static str),
    Index(usize),
}

pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    pub(super) eol: &'static str,
    pub(super) edits: Vec<TextEdit>,
    pub(super) changes: Vec<Change>,
    pub(super) summary: Vec<String>,
    pub(super) order: usize,
}

impl<'a> Ctx<'a> {
    pub(super) fn byte(&self, char_index: usize) -> usize {
        byte_offsets(self.text, [char_index])[0]
    }

    pub(super) fn next_order(&mut self) -> usize {
        self.order += 1;
        self.order
    }
}

pub(super) fn field_path(cpath: &[Seg], field: &'static str, i: usize) -> Vec<Seg> {
    let mut p = cpath.to_vec();
    p.push(Seg::Key(field));
    p.push(Seg::Index(i));
    p
}

pub(super) fn set_scalar(
    cx: &mut Ctx,
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
        return Err("flag item is not a string".into());
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
pub(super) fn plain_safe(v: &str) -> Result<(), String> {
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
pub(super) struct ItemLayout {
    pub(super) line_start: usize,
    pub(super) dash_prefix: String,
    pub(super) content_col: usize,
}

pub(super) fn layout(cx: &Ctx, item: &Node) -> Result<ItemLayout, String> {
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
pub(super) fn insertion_point(
    cx: &Ctx,
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
pub(super) fn sorted_index(keys: &[String], key: &str) -> usize {
    if keys.windows(2).all(|w| w[0] <= w[1]) {
        keys.iter()
            .position(|k| k.as_str() > key)
            .unwrap_or(keys.len())
    } else {
        keys.len()
    }
}

pub(super) fn block_items<'n>(list: &'n Node, what: &str) -> Result<&'n [Node], String> {
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

pub(super) fn insert_item(
    cx: &mut Ctx,
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

pub(super) fn apply(text: &str, edits: &mut [TextEdit]) -> String {
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

/// The new text must parse to the old document with exactly these changes.
pub(super) fn verify(old: &str, new: &str, changes: &[Change]) -> Result<(), String> {
    let mut expected: Value =
        serde_norway::from_str(old).map_err(|e| format!("original does not parse: {e}"))?;
    let got: Value = serde_norway::from_str(new)
        .map_err(|e| format!("rewritten manifest does not parse: {e}"))?;
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
        return Err("refusing to write: the rewritten kube-apiserver manifest differs from the intended change; this is a staticpin bug".into());
    }
    Ok(())
}

pub(super) fn walk<'v>(v: &'v mut Value, path: &[Seg]) -> Result<&'v mut Value, String> {
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
