//! Finding the image scalars of a Pod manifest, with exact byte ranges.
//!
//! saphyr-parser's event spans say where each scalar is, but in characters,
//! not bytes, starting at any anchor or tag, and (for quoted scalars) running
//! on into a trailing comment. So the span only tells us where to look: the
//! scalar's own text is then delimited here and checked against the value
//! the parser decoded. Anything that cannot be located unambiguously is an
//! error for that file, never a guess.

use std::ops::Range;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::Skip;

/// The container lists kubelet pulls images for.
pub const CONTAINER_FIELDS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quoting {
    Plain,
    Single,
    Double,
}

/// One `image:` value in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSite {
    /// `containers`, `initContainers` or `ephemeralContainers`.
    pub field: &'static str,
    /// Index within that list.
    pub index: usize,
    pub container: Option<String>,
    /// The decoded value.
    pub value: String,
    pub quoting: Quoting,
    /// Byte range of the scalar's text between any quotes.
    pub inner: Range<usize>,
    /// 1-based line of the value.
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub name: Option<String>,
    pub images: Vec<ImageSite>,
}

/// A minimal document tree with the positions that editing needs.
/// Positions are saphyr's character indices; convert with [`byte_offsets`].
pub(crate) enum Node {
    Scalar {
        value: String,
        style: ScalarStyle,
        span: Span,
    },
    Seq {
        items: Vec<Node>,
        /// `[`…`]` rather than `- ` items.
        flow: bool,
    },
    Map(Vec<(Node, Node)>),
    Alias,
}

impl Node {
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find_map(|(k, v)| match k {
                Node::Scalar { value, .. } if value == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub(crate) fn items(&self) -> &[Node] {
        match self {
            Node::Seq { items, .. } => items,
            _ => &[],
        }
    }

    /// Character index where the node's first scalar starts.
    pub(crate) fn first_char(&self) -> Option<usize> {
        match self {
            Node::Scalar { span, .. } => Some(span.start.index()),
            Node::Seq { items, .. } => items.first().and_then(Node::first_char),
            Node::Map(entries) => entries.first().and_then(|(k, _)| k.first_char()),
            Node::Alias => None,
        }
    }

    /// Character index where the node's last scalar ends (for quoted
    /// scalars this may include a trailing comment on the same line).
    pub(crate) fn last_char(&self) -> Option<usize> {
        match self {
            Node::Scalar { span, .. } => Some(span.end.index()),
            Node::Seq { items, .. } => items.iter().filter_map(Node::last_char).max(),
            Node::Map(entries) => entries
                .iter()
                .flat_map(|(k, v)| [k.last_char(), v.last_char()])
                .flatten()
                .max(),
            Node::Alias => None,
        }
    }
}

/// Decides whether `text` is a single Pod and locates its images.
pub fn inspect(text: &str) -> Result<Pod, Skip> {
    let docs = parse_documents(text)?;
    let root = match docs.len() {
        0 => return Err(Skip::error("empty file: no Pod document")),
        1 => &docs[0],
        n => {
            return Err(Skip::error(format!(
                "{n} YAML documents; kubelet reads one Pod per file"
            )))
        }
    };
    if !matches!(root, Node::Map(_)) {
        return Err(Skip::error("top level is not a mapping, so not a Pod"));
    }
    match root.get("kind").and_then(Node::as_str) {
        Some("Pod") => {}
        Some(other) => return Err(Skip::benign(format!("kind is {other}, not Pod"))),
        None => return Err(Skip::benign("no kind: Pod")),
    }
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .map(str::to_string);
    let mut images = Vec::new();
    let mut wanted = Vec::new();
    let spec = root.get("spec");
    for field in CONTAINER_FIELDS {
        let Some(list) = spec.and_then(|s| s.get(field)) else {
            continue;
        };
        let Node::Seq {
            items: containers, ..
        } = list
        else {
            return Err(Skip::error(format!("spec.{field} is not a list")));
        };
        for (index, c) in containers.iter().enumerate() {
            match c.get("image") {
                None => {}
                Some(Node::Scalar { value, style, span }) => {
                    wanted.push((field, index, c, value, *style, *span))
                }
                Some(_) => {
                    return Err(Skip::error(format!(
                        "spec.{field}[{index}].image is not a plain string (alias, list or mapping)"
                    )))
                }
            }
        }
    }
    let offsets = byte_offsets(text, wanted.iter().map(|w| w.5.start.index()));
    for ((field, index, c, value, style, span), start) in wanted.into_iter().zip(offsets) {
        let site_err = |why: &str| {
            Skip::error(format!(
                "spec.{field}[{index}].image on line {}: {why}",
                span.start.line()
            ))
        };
        let end = byte_offsets(text, [span.end.index()])[0];
        let (quoting, inner) =
            locate_scalar(text, start, end, value, style).map_err(|w| site_err(&w))?;
        images.push(ImageSite {
            field,
            index,
            container: c.get("name").and_then(Node::as_str).map(str::to_string),
            value: value.clone(),
            quoting,
            inner,
            line: span.start.line(),
        });
    }
    Ok(Pod { name, images })
}

pub(crate) fn parse_documents(text: &str) -> Result<Vec<Node>, Skip> {
    let mut events = Parser::new_from_str(text).peekable();
    let mut docs = Vec::new();
    let mut next = || -> Result<Option<(Event<'_>, Span)>, Skip> {
        events
            .next()
            .transpose()
            .map_err(|e| Skip::error(format!("not valid YAML: {e}")))
    };
    loop {
        match next()? {
            None | Some((Event::StreamEnd, _)) => return Ok(docs),
            Some((Event::DocumentStart(_), _)) => {
                let first =
                    next()?.ok_or_else(|| Skip::error("not valid YAML: truncated document"))?;
                docs.push(build(first, &mut next)?);
                match next()? {
                    Some((Event::DocumentEnd, _)) => {}
                    _ => return Err(Skip::error("not valid YAML: document does not end")),
                }
            }
            Some(_) => {}
        }
    }
}

fn build<'a>(
    first: (Event<'a>, Span),
    next: &mut impl FnMut() -> Result<Option<(Event<'a>, Span)>, Skip>,
) -> Result<Node, Skip> {
    let truncated = || Skip::error("not valid YAML: truncated");
    Ok(match first.0 {
        Event::Scalar(v, style, _, _) => Node::Scalar {
            value: v.into_owned(),
            style,
            span: first.1,
        },
        Event::Alias(_) => Node::Alias,
        Event::SequenceStart(..) => {
            let flow = first.1.start.index() != first.1.end.index();
            let mut items = Vec::new();
            loop {
                let ev = next()?.ok_or_else(truncated)?;
                if matches!(ev.0, Event::SequenceEnd) {
                    break;
                }
                items.push(build(ev, next)?);
            }
            Node::Seq { items, flow }
        }
        Event::MappingStart(..) => {
            let mut entries = Vec::new();
            loop {
                let ev = next()?.ok_or_else(truncated)?;
                if matches!(ev.0, Event::MappingEnd) {
                    break;
                }
                let k = build(ev, next)?;
                let v = build(next()?.ok_or_else(truncated)?, next)?;
                entries.push((k, v));
            }
            Node::Map(entries)
        }
        _ => return Err(Skip::error("not valid YAML: unexpected event")),
    })
}

/// Converts character indices (in any order) to byte offsets in one pass.
pub(crate) fn byte_offsets(
    text: &str,
    char_indices: impl IntoIterator<Item = usize>,
) -> Vec<usize> {
    let wanted: Vec<usize> = char_indices.into_iter().collect();
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|&i| wanted[i]);
    let mut out = vec![text.len(); wanted.len()];
    let mut it = order.into_iter().peekable();
    for (ci, (bi, _)) in text.char_indices().enumerate() {
        while let Some(&i) = it.peek() {
            if wanted[i] != ci {
                break;
            }
            out[i] = bi;
            it.next();
        }
    }
    out
}

/// Finds the scalar's own text inside `text[start..end]` (the span may include
/// anchors and tags before it and, for quoted styles, a comment after it).
pub(crate) fn locate_scalar(
    text: &str,
    start: usize,
    end: usize,
    value: &str,
    style: ScalarStyle,
) -> Result<(Quoting, Range<usize>), String> {
    let span = &text[start..end.max(start)];
    match style {
        ScalarStyle::Plain => {
            // Plain spans end exactly at the scalar; properties come before it.
            if value.contains(['\n', '\r']) || !span.ends_with(value) {
                return Err("multi-line plain scalars are not supported".into());
            }
            Ok((Quoting::Plain, end - value.len()..end))
        }
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
            let q = if style == ScalarStyle::SingleQuoted {
                b'\''
            } else {
                b'"'
            };
            let bytes = text.as_bytes();
            let open = start
                + span
                    .bytes()
                    .position(|b| b == q)
                    .ok_or("opening quote not found")?;
            let mut i = open + 1;
            let close = loop {
                match bytes.get(i) {
                    None => return Err("closing quote not found".into()),
                    Some(b'\\') if q == b'"' => i += 2,
                    Some(&b) if b == q && q == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
                    Some(&b) if b == q => break i,
                    Some(_) => i += 1,
                }
            };
            let raw = &text[open + 1..close];
            if raw.contains(['\n', '\r']) {
                return Err("quoted scalars spanning lines are not supported".into());
            }
            let decoded_ok = if q == b'\'' {
                raw.replace("''", "'") == value
            } else {
                !raw.contains('\\') && raw == value || raw.contains('\\')
            };
            if !decoded_ok {
                return Err("scalar text does not match its parsed value".into());
            }
            let quoting = if q == b'\'' {
                Quoting::Single
            } else {
                Quoting::Double
            };
            Ok((quoting, open + 1..close))
        }
        _ => Err("block scalars (| or >) are not supported for image".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites(text: &str) -> Vec<(String, Quoting, String)> {
        inspect(text)
            .unwrap()
            .images
            .into_iter()
            .map(|s| {
                (
                    s.value.clone(),
                    s.quoting,
                    text[s.inner.clone()].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn finds_every_style() {
        let text = "apiVersion: v1\r\nkind: Pod\r\nmetadata: {name: é-pod}\r\nspec:\r\n  initContainers:\r\n  - image: 'init:1' # c'mt\r\n    name: i\r\n  containers:\r\n  - name: a\r\n    image: \"a:1\"  # \"q\"\r\n  - {name: b, image: &x b:2}\r\n  - name: c\r\n    image: !!str c:3";
        let s = sites(text);
        assert_eq!(
            s,
            [
                ("a:1".into(), Quoting::Double, "a:1".into()),
                ("b:2".into(), Quoting::Plain, "b:2".into()),
                ("c:3".into(), Quoting::Plain, "c:3".into()),
                ("init:1".into(), Quoting::Single, "init:1".into()),
            ]
        );
        let pod = inspect(text).unwrap();
        assert_eq!(pod.name.as_deref(), Some("é-pod"));
        assert_eq!(pod.images[0].line, 10);
        assert_eq!(pod.images[0].container.as_deref(), Some("a"));
    }

    #[test]
    fn json_manifest() {
        let text = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"x","image":"reg:5000/x:v1"}]}}"#;
        assert_eq!(
            sites(text),
            [(
                "reg:5000/x:v1".into(),
                Quoting::Double,
                "reg:5000/x:v1".into()
            )]
        );
    }

    #[test]
    fn skips_with_reasons() {
        let err = |t: &str| inspect(t).unwrap_err();
        assert!(err("").reason.contains("empty"));
        assert!(err("kind: Pod\n---\nkind: Pod\n")
            .reason
            .contains("2 YAML documents"));
        let d = err("kind: Deployment\n");
        assert!(!d.is_error && d.reason.contains("Deployment"));
        assert!(err("kind: Pod\nspec: {containers: [")
            .reason
            .contains("not valid YAML"));
        assert!(err("- a\n").reason.contains("not a mapping"));
        assert!(
            err("kind: Pod\nspec:\n  containers:\n  - image: |\n      x\n")
                .reason
                .contains("block scalar")
        );
        assert!(
            err("kind: Pod\nx: &i a\nspec:\n  containers:\n  - image: *i\n")
                .reason
                .contains("alias")
        );
    }

    #[test]
    fn byte_offsets_handle_multibyte() {
        assert_eq!(byte_offsets("aé€b", [3, 0, 2, 4]), [6, 0, 3, 7]);
    }
}
