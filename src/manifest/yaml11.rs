//! Where kubelet's reader (go-yaml v2, YAML 1.1, then a JSON conversion)
//! and staticpin's (saphyr-parser, YAML 1.2) could read the same bytes
//! differently: keys, tags, characters, directives and scalar resolution.
//! Each check refuses such a file rather than guess; [`super::parse`] runs
//! them while it builds the tree.

use std::collections::HashMap;

use saphyr_parser::{ScalarStyle, Tag};

use super::parse::Node;
use super::Skip;

/// Duplicate keys (go-yaml keeps the last, silently), merge keys (go-yaml
/// applies them, in an order no other reader shares) and keys that are not
/// scalars (kubelet's JSON conversion rejects them) are all refused.
pub(super) fn check_key(
    k: &Node,
    tagged: bool,
    seen: &mut HashMap<String, usize>,
) -> Result<(), Skip> {
    match k {
        Node::Scalar { value, span, style } => {
            let line = span.start.line();
            if value == "<<" {
                return Err(Skip::error(format!(
                    "merge key `<<` on line {line}: kubelet's YAML reader merges it in, staticpin does not apply merge keys, so it will not read this file"
                )));
            }
            let key =
                json_key(value, *style == ScalarStyle::Plain && !tagged).ok_or_else(|| {
                    Skip::error(format!(
                        "null mapping key on line {line}: kubelet cannot convert it to JSON"
                    ))
                })?;
            if let Some(first) = seen.insert(key, line) {
                return Err(Skip::error(format!(
                    "duplicate key {value:?} on line {line} (first on line {first}): kubelet's YAML reader silently keeps the last one, so staticpin will not read this file"
                )));
            }
            Ok(())
        }
        Node::Alias => Err(Skip::error(
            "a YAML alias is used as a mapping key; staticpin will not read this file",
        )),
        _ => Err(Skip::error(
            "a mapping key is a list or mapping; kubelet cannot convert that to JSON",
        )),
    }
}

/// The JSON object key kubelet's YAML-to-JSON step makes of a mapping key
/// (`yes` and `true` both become `"true"`, `0x10` and `16` both `"16"`);
/// `None` for a null key, which it rejects.
pub(super) fn json_key(value: &str, resolvable: bool) -> Option<String> {
    if !resolvable {
        return Some(value.to_string());
    }
    Some(match yaml11_non_string(value) {
        Some("null") => return None,
        Some("a boolean") => {
            let yes = [
                "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE",
            ];
            (if yes.contains(&value) {
                "true"
            } else {
                "false"
            })
            .to_string()
        }
        Some("an integer") => {
            go_int_value(value).map_or_else(|| value.to_string(), |v| v.to_string())
        }
        _ => value.to_string(),
    })
}

pub(super) fn go_int_value(s: &str) -> Option<i128> {
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    let (neg, t) = match plain.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, plain.strip_prefix('+').unwrap_or(&plain)),
    };
    let (radix, digits) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (16, h)
    } else if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        (8, o)
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        (2, b)
    } else if t.len() > 1 && t.starts_with('0') {
        (8, &t[1..])
    } else {
        (10, t)
    };
    let v = i128::from_str_radix(digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

/// Only `!!str` (on scalars) and the standard `!!map`/`!!seq` tags are read
/// the same way by both parsers; go-yaml decodes `!!binary`, for example.
pub(super) fn check_tag(tag: Option<&Tag>, kind: &str, line: usize) -> Result<(), Skip> {
    let Some(tag) = tag else { return Ok(()) };
    let full = format!("{}{}", tag.handle, tag.suffix);
    if full.strip_prefix("tag:yaml.org,2002:") == Some(kind) {
        return Ok(());
    }
    Err(Skip::error(format!(
        "YAML tag `{full}` on line {line}: staticpin reads only !!str tags, so it will not read this file"
    )))
}

/// go-yaml v2 rejects `x:y` inside a plain scalar in a flow collection
/// ("found unexpected ':'"), where YAML 1.2 reads one string.
pub(super) fn check_flow_plain(value: &str, line: usize) -> Result<(), Skip> {
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek().is_some_and(|n| !n.is_whitespace()) {
            return Err(Skip::error(format!(
                "`{value}` on line {line} is an unquoted value with `:` inside a flow collection ([…] or {{…}}); kubelet's YAML reader rejects it, so quote it"
            )));
        }
    }
    Ok(())
}

/// Characters the two readers disagree on, or that go-yaml rejects.
pub(super) fn check_characters(text: &str) -> Result<(), Skip> {
    let mut line = 1;
    // Only spaces and tabs so far on this line.
    let mut indent = true;
    for (i, c) in text.char_indices() {
        let why = match c {
            '\n' | '\r' => {
                line += usize::from(c == '\n');
                indent = true;
                continue;
            }
            // go-yaml rejects a tab where a line's tokens start (outside
            // block scalars); saphyr is laxer, so refuse the whole class.
            '\t' if indent => {
                return Err(Skip::error(format!(
                    "line {line} has a tab in its indentation; kubelet's YAML reader rejects most tabs there, so staticpin will not read this file"
                )))
            }
            ' ' => continue,
            '\u{feff}' if i == 0 => continue,
            '\u{feff}' => "a byte order mark that is not at the start of the file",
            '\u{85}' | '\u{2028}' | '\u{2029}' => {
                "a line break to kubelet's YAML 1.1 reader but not to staticpin's parser"
            }
            '\t' | '\u{21}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' => {
                indent = false;
                continue;
            }
            c if c >= '\u{10000}' => {
                indent = false;
                continue;
            }
            _ => "a control character kubelet's YAML reader rejects",
        };
        return Err(Skip::error(format!(
            "line {line} contains U+{:04X}, {why}; staticpin will not read this file",
            c as u32
        )));
    }
    Ok(())
}

/// `%YAML 1.1` is all go-yaml v2 accepts; `%TAG` only matters through the
/// tags it defines, which [`check_tag`] sees resolved.
pub(super) fn check_directives(text: &str) -> Result<(), Skip> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, l) in text.lines().enumerate() {
        let l = l.trim_end();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some(d) = l.strip_prefix('%') else { break };
        let mut words = d.split_whitespace();
        match (words.next(), words.next()) {
            (Some("YAML"), Some("1.1")) | (Some("TAG"), _) => {}
            _ => {
                return Err(Skip::error(format!(
                    "directive `%{d}` on line {}: kubelet's YAML reader accepts only %YAML 1.1",
                    n + 1
                )))
            }
        }
    }
    Ok(())
}

/// What go-yaml v2 resolves a plain scalar to when it is not a string
/// (`resolve.go`): null, bool, int or float. Timestamps stay strings when
/// decoding into `interface{}`, as kubelet does.
pub(crate) fn yaml11_non_string(s: &str) -> Option<&'static str> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some("null"),
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" | "n"
        | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            return Some("a boolean")
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Some("a float"),
        _ => {}
    }
    let first = s.chars().next()?;
    if first == '.' {
        return go_float(s).then_some("a float");
    }
    if !(first.is_ascii_digit() || first == '+' || first == '-') {
        return None;
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    if go_int(&plain) {
        return Some("an integer");
    }
    let float_like = {
        let t = plain.strip_prefix(['+', '-']).unwrap_or(&plain);
        let (mant, exp) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], Some(&t[i + 1..])),
            None => (t, None),
        };
        let mant_ok = match mant.split_once('.') {
            Some(("", frac)) => !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()),
            Some((int, frac)) => {
                !int.is_empty()
                    && int.bytes().all(|b| b.is_ascii_digit())
                    && frac.bytes().all(|b| b.is_ascii_digit())
            }
            None => !mant.is_empty() && mant.bytes().all(|b| b.is_ascii_digit()),
        };
        let exp_ok = exp.is_none_or(|e| {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        });
        mant_ok && exp_ok
    };
    if float_like && go_float(&plain) {
        return Some("a float");
    }
    let bin = plain
        .strip_prefix("0b")
        .or_else(|| plain.strip_prefix("-0b"));
    if bin.is_some_and(|b| !b.is_empty() && b.bytes().all(|c| c == b'0' || c == b'1')) {
        return Some("an integer");
    }
    None
}

/// `strconv.ParseInt(s, 0, 64)` or `ParseUint(s, 0, 64)` would succeed
/// (range aside: an overflowing number is still not a string to go-yaml's
/// caller, which then fails the decode, so it counts as a number here).
fn go_int(s: &str) -> bool {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits = |d: &str, radix: u32| !d.is_empty() && d.chars().all(|c| c.is_digit(radix));
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        digits(h, 16)
    } else if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        digits(o, 8)
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        digits(b, 2)
    } else if t.len() > 1 && t.starts_with('0') {
        digits(&t[1..], 8)
    } else {
        digits(t, 10)
    }
}

fn go_float(s: &str) -> bool {
    // Go's ParseFloat also takes "inf"/"nan" words, which cannot start with
    // the characters that get us here except after a sign.
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    if ["inf", "infinity", "nan"].contains(&t.to_ascii_lowercase().as_str()) {
        return true;
    }
    s.parse::<f64>().is_ok() && !t.starts_with(|c: char| c.is_ascii_alphabetic())
}
