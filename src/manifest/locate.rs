//! From parser positions to bytes: character indices to byte offsets, and
//! the exact bytes of a scalar (between its quotes, past any anchor or tag),
//! checked against the value the parser decoded. Shared by the image
//! locator and the edit engine.

use std::ops::Range;

use saphyr_parser::ScalarStyle;

use super::parse::Quoting;

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
            let open = skip_properties(text, start);
            if bytes.get(open) != Some(&q) {
                return Err("opening quote not found after its anchor, tag or comment".into());
            }
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

/// The byte offset of a node's own text: past any anchor (`&a`), tag
/// (`!t`, `!<…>`), spaces, line breaks and comments before it.
fn skip_properties(text: &str, mut i: usize) -> usize {
    let b = text.as_bytes();
    while let Some(&c) = b.get(i) {
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => {
                while b.get(i).is_some_and(|&c| c != b'\n' && c != b'\r') {
                    i += 1;
                }
            }
            b'!' if b.get(i + 1) == Some(&b'<') => {
                while b.get(i).is_some_and(|&c| c != b'>') {
                    i += 1;
                }
                i += 1;
            }
            b'&' | b'!' => {
                while b.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    i += 1;
                }
            }
            _ => break,
        }
    }
    i
}
