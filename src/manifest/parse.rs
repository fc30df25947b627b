//! Finding the image scalars of a Pod manifest, with exact byte ranges, as
//! kubelet reads the file, or a refusal saying why staticpin will not.
//!
//! kubelet decodes static pods with go-yaml v2 (YAML 1.1); saphyr-parser,
//! which gives us positions, is a YAML 1.2 parser. Where the two can read
//! the same bytes differently (duplicate keys, `<<` merges, NEL/LS/PS line
//! breaks, tags, aliases, 1.1 scalar resolution) the file is refused here,
//! so that every mode that goes through [`inspect`] sees the same answer.
//!
//! saphyr-parser's event spans say where each scalar is, but in characters,
//! not bytes, starting at any anchor or tag, and (for quoted scalars) running
//! on into a trailing comment. So the span only tells us where to look: the
//! scalar's own text is then delimited here and checked against the value
//! the parser decoded. Anything that cannot be located unambiguously is an
//! error for that file, never a guess.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

pub(crate) use super::locate::{byte_offsets, locate_scalar};
pub(crate) use super::yaml11::yaml11_non_string;
use super::yaml11::{check_characters, check_directives, check_flow_plain, check_key, check_tag};
use super::{check_size, Skip};

/// The container lists kubelet pulls images for.
pub const CONTAINER_FIELDS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// `spec.volumes[].image.reference` (kubelet's ImageVolume feature) is the
/// other place kubelet pulls images from; its sites use this `field`.
pub const VOLUMES_FIELD: &str = "volumes";

/// Real Pods nest about a dozen levels; anything far deeper is refused, so
/// that code walking the tree recursively stays far from the stack's end.
pub const MAX_DEPTH: usize = 64;

/// Static pods have no use for aliases beyond a few; many are how YAML
/// "billion laughs" bombs expand (go-yaml v2 rejects excessive aliasing).
pub const MAX_ALIASES: usize = 100;

/// Alias expansions (counted as serde_norway counts its "jumps") allowed in
/// a document; serde_norway gives up at 100 per event, far above this.
pub const MAX_ALIAS_EXPANSIONS: u64 = 1000;

/// How an image scalar is quoted in the file. A pin keeps it, save for the
/// one case [`written_quoting`](super::splice::written_quoting) describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quoting {
    /// No quotes.
    Plain,
    /// `'…'`.
    Single,
    /// `"…"`.
    Double,
}

/// One image value in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSite {
    /// `containers`, `initContainers`, `ephemeralContainers` or `volumes`.
    pub field: &'static str,
    /// Index within that list.
    pub index: usize,
    /// The container's (or volume's) name.
    pub container: Option<String>,
    /// The decoded value.
    pub value: String,
    /// How the value is quoted; the new value is written the same way.
    pub quoting: Quoting,
    /// Byte range of the scalar's text between any quotes.
    pub inner: Range<usize>,
    /// 1-based line of the value.
    pub line: usize,
    /// Inside a flow collection (`[…]`, `{…}`), where go-yaml rejects a
    /// plain value containing `x:y`, so a pinned value must be quoted.
    pub flow: bool,
}

impl ImageSite {
    /// Where the value sits, e.g. `spec.containers[0].image`.
    pub fn path(&self) -> String {
        if self.field == VOLUMES_FIELD {
            format!("spec.volumes[{}].image.reference", self.index)
        } else {
            format!("spec.{}[{}].image", self.field, self.index)
        }
    }
}

/// What [`inspect`] found in a Pod manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// `metadata.name`, when it is a string.
    pub name: Option<String>,
    /// Every image site: containers, initContainers, ephemeralContainers, then
    /// image volumes.
    pub images: Vec<ImageSite>,
    /// Things the operator should know that do not stop pinning (e.g. a
    /// second document kubelet ignores).
    pub notes: Vec<String>,
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

    fn is_empty_scalar(&self) -> bool {
        matches!(self, Node::Scalar { value, style: ScalarStyle::Plain, .. } if value.is_empty())
    }
}

/// The documents of a file plus what [`inspect`] needs to know about
/// anchors: which character ranges carry an anchor that something aliases.
pub(crate) struct Parsed {
    pub(crate) docs: Vec<Node>,
    /// `(range of the anchored node in chars, line of the anchor, line of an alias)`.
    aliased_anchors: Vec<(Range<usize>, usize, usize)>,
    /// Start (in chars) of every plain scalar inside a flow collection.
    flow_plain: HashSet<usize>,
}

/// Decides whether `text` is a single Pod and locates its images.
pub fn inspect(text: &str) -> Result<Pod, Skip> {
    check_size(text.len()).map_err(Skip::error)?;
    let parsed = parse(text)?;
    let docs = &parsed.docs;
    let root = first_root(docs)?;
    let mut notes = Vec::new();
    let later = docs[1..].iter().filter(|d| !d.is_empty_scalar()).count();
    if later > 0 {
        notes.push(format!(
            "{later} more YAML document(s) after the first are ignored, as kubelet reads only the first"
        ));
    }
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
    let wanted = image_nodes(root)?;
    // One pass over the text for every position, however many images.
    let offsets = byte_offsets(
        text,
        wanted
            .iter()
            .flat_map(|w| [w.span.start.index(), w.span.end.index()]),
    );
    let images = wanted
        .into_iter()
        .zip(offsets.chunks(2))
        .map(|(w, ends)| locate_site(text, &parsed, w, ends[0]..ends[1]))
        .collect::<Result<Vec<_>, _>>()?;
    json_cross_check(text, &images)?;
    Ok(Pod {
        name,
        images,
        notes,
    })
}

/// One image scalar, located to its exact bytes (`bytes`: the parser's span
/// in bytes) and checked: not under an aliased anchor, a string to YAML 1.1,
/// not empty, without escapes.
fn locate_site(
    text: &str,
    parsed: &Parsed,
    w: Wanted<'_>,
    bytes: Range<usize>,
) -> Result<ImageSite, Skip> {
    let (start, end) = (bytes.start, bytes.end);
    let line = w.span.start.line();
    let path = if w.field == VOLUMES_FIELD {
        format!("spec.volumes[{}].image.reference", w.index)
    } else {
        format!("spec.{}[{}].image", w.field, w.index)
    };
    let site_err = |why: &str| Skip::error(format!("{path} on line {line}: {why}"));
    let at = w.span.start.index();
    if let Some((_, anchor_line, alias_line)) = parsed
        .aliased_anchors
        .iter()
        .find(|(r, _, _)| r.start <= at && at <= r.end)
    {
        return Err(site_err(&format!(
            "it lies under a YAML anchor (line {anchor_line}) that is aliased on line \
             {alias_line}; pinning it would also change what the alias stands for, so \
             staticpin does not pin images inside aliased anchors"
        )));
    }
    // Scalars may only carry `!!str` tags (see `check_tag`).
    let tagged = text[start..end.max(start)]
        .split_whitespace()
        .any(|t| t.starts_with('!'));
    if w.style == ScalarStyle::Plain && !tagged {
        if let Some(kind) = yaml11_non_string(w.value) {
            return Err(site_err(&format!(
                "`{}` is {kind} to kubelet's YAML 1.1 reader, not a string; quote it",
                w.value
            )));
        }
    }
    if w.value.is_empty() {
        return Err(site_err("the image value is empty, which kubelet rejects"));
    }
    let (quoting, inner) =
        locate_scalar(text, start, end, w.value, w.style).map_err(|e| site_err(&e))?;
    if quoting == Quoting::Double && text[inner.clone()].contains('\\') {
        // No image reference needs one, and YAML 1.1, YAML 1.2 and JSON
        // do not agree on every escape.
        return Err(site_err(
            "the image value contains a backslash escape; staticpin does not rewrite escaped image values",
        ));
    }
    Ok(ImageSite {
        field: w.field,
        index: w.index,
        container: w
            .owner
            .and_then(|c| c.get("name"))
            .and_then(Node::as_str)
            .map(str::to_string),
        value: w.value.to_string(),
        quoting,
        inner,
        line,
        flow: parsed.flow_plain.contains(&at),
    })
}

/// An image scalar found in the tree, before it is located in the text.
struct Wanted<'n> {
    field: &'static str,
    index: usize,
    owner: Option<&'n Node>,
    value: &'n str,
    style: ScalarStyle,
    span: Span,
}

fn image_nodes(root: &Node) -> Result<Vec<Wanted<'_>>, Skip> {
    let alias = |path: &str| {
        Skip::error(format!(
            "{path} is a YAML alias; staticpin does not follow aliases to images \
             (kubelet would pull the anchored image there too), so it will not pin this file"
        ))
    };
    let mut out = Vec::new();
    let spec = match root.get("spec") {
        Some(Node::Alias) => return Err(alias("spec")),
        s => s,
    };
    for field in CONTAINER_FIELDS.into_iter().chain([VOLUMES_FIELD]) {
        let Some(list) = spec.and_then(|s| s.get(field)) else {
            continue;
        };
        let items = match list {
            Node::Seq { items, .. } => items,
            Node::Alias => return Err(alias(&format!("spec.{field}"))),
            Node::Scalar { value, style, .. }
                if value.is_empty() && *style == ScalarStyle::Plain =>
            {
                continue
            }
            _ => return Err(Skip::error(format!("spec.{field} is not a list"))),
        };
        for (index, c) in items.iter().enumerate() {
            if matches!(c, Node::Alias) {
                return Err(alias(&format!("spec.{field}[{index}]")));
            }
            let (node, path) = if field == VOLUMES_FIELD {
                match c.get("image") {
                    None => continue,
                    Some(Node::Alias) => {
                        return Err(alias(&format!("spec.volumes[{index}].image")))
                    }
                    Some(m @ Node::Map(_)) => (
                        m.get("reference"),
                        format!("spec.volumes[{index}].image.reference"),
                    ),
                    Some(_) => {
                        return Err(Skip::error(format!(
                            "spec.volumes[{index}].image is not a mapping with a reference"
                        )))
                    }
                }
            } else {
                (c.get("image"), format!("spec.{field}[{index}].image"))
            };
            match node {
                None => {}
                Some(Node::Scalar { value, style, span }) => out.push(Wanted {
                    field,
                    index,
                    owner: Some(c),
                    value,
                    style: *style,
                    span: *span,
                }),
                Some(Node::Alias) => return Err(alias(&path)),
                Some(_) => {
                    return Err(Skip::error(format!(
                        "{path} is not a string (it is a list or mapping)"
                    )))
                }
            }
        }
    }
    Ok(out)
}

/// The document kubelet reads: the first, which must not be empty.
fn first_root(docs: &[Node]) -> Result<&Node, Skip> {
    match docs.first() {
        None => Err(Skip::error("empty file: no Pod document")),
        Some(r) if r.is_empty_scalar() => Err(Skip::error(
            "the first document is empty; kubelet reads only the first document of a file",
        )),
        Some(r) => Ok(r),
    }
}

/// The tree of the document kubelet reads, accepting exactly the files
/// [`inspect`] accepts as YAML: later documents are ignored.
pub(crate) fn first_document(text: &str) -> Result<Node, Skip> {
    let mut docs = parse_documents(text)?;
    first_root(&docs)?;
    Ok(docs.swap_remove(0))
}

/// Parses every document of `text` into a tree, refusing what kubelet's
/// reader would see differently (see the module docs).
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Node>, Skip> {
    parse(text).map(|p| p.docs)
}

pub(crate) fn parse(text: &str) -> Result<Parsed, Skip> {
    check_characters(text)?;
    check_directives(text)?;
    let mut events = Parser::new_from_str(text);
    let mut next = || -> Result<Option<(Event<'_>, Span)>, Skip> {
        // After an error the parser keeps yielding errors: stop at the first.
        events.next().transpose().map_err(|e| {
            let e = e.to_string();
            Skip::error(if e.contains("recursion limit") {
                format!("nested too many levels deep for staticpin's YAML parser ({e}); no Pod needs that, and staticpin does not read such files")
            } else {
                format!("staticpin's YAML parser cannot read it: {e} (kubelet may read it, but staticpin will not guess)")
            })
        })
    };
    let mut b = Builder {
        cursor: CharCursor::new(text),
        anchors: HashMap::new(),
        aliases: Vec::new(),
        flow: 0,
        flow_plain: HashSet::new(),
        str_tagged: HashSet::new(),
        anchor_jumps: HashMap::new(),
    };
    let mut docs = Vec::new();
    loop {
        match next()? {
            None | Some((Event::StreamEnd, _)) => break,
            Some((Event::DocumentStart(_), _)) => {
                let first =
                    next()?.ok_or_else(|| Skip::error("not valid YAML: truncated document"))?;
                docs.push(b.build(first, &mut next)?);
                match next()? {
                    Some((Event::DocumentEnd, _)) => {}
                    _ => return Err(Skip::error("not valid YAML: document does not end")),
                }
            }
            Some(_) => {}
        }
    }
    let mut aliased_anchors = Vec::new();
    for (id, alias_line) in &b.aliases {
        if let Some((range, line)) = b.anchors.get(id) {
            aliased_anchors.push((range.clone(), *line, *alias_line));
        }
    }
    aliased_anchors.sort_by_key(|a| a.0.start);
    Ok(Parsed {
        docs,
        aliased_anchors,
        flow_plain: b.flow_plain,
    })
}

struct Builder<'t> {
    cursor: CharCursor<'t>,
    /// Anchor id to (range of the anchored node, in chars; line).
    anchors: HashMap<usize, (Range<usize>, usize)>,
    /// Anchor ids that are aliased, with the line of one alias.
    aliases: Vec<(usize, usize)>,
    /// How many flow collections (`[`, `{`) enclose the current node.
    flow: usize,
    flow_plain: HashSet<usize>,
    /// Start (in chars) of every scalar tagged `!!str` (so never resolved).
    str_tagged: HashSet<usize>,
    /// Anchor id to the alias expansions that expanding it takes.
    anchor_jumps: HashMap<usize, u64>,
}

/// A collection being built: the iterative stand-in for a recursive call,
/// so hostile nesting can never exhaust the stack.
enum Open {
    Seq {
        items: Vec<Node>,
        flow: bool,
        anchor: usize,
        start: Span,
        line: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        seen: HashMap<String, usize>,
        flow: bool,
        anchor: usize,
        start: Span,
        line: usize,
    },
}

impl Builder<'_> {
    /// A collection closes: leave its flow context, record its anchor's
    /// range, and count its alias expansions into the enclosing one.
    fn close(
        &mut self,
        frame_jumps: &mut Vec<u64>,
        flow: bool,
        anchor: usize,
        start: Span,
        end: Span,
        line: usize,
    ) {
        self.flow -= usize::from(flow);
        self.anchor(anchor, start, end, line);
        let inner = frame_jumps.pop().unwrap_or(0);
        if let Some(outer) = frame_jumps.last_mut() {
            *outer = outer.saturating_add(inner);
        }
        if anchor != 0 {
            self.anchor_jumps.insert(anchor, inner);
        }
    }

    /// Builds the node that starts with `first`, pulling further events.
    fn build<'a>(
        &mut self,
        first: (Event<'a>, Span),
        next: &mut impl FnMut() -> Result<Option<(Event<'a>, Span)>, Skip>,
    ) -> Result<Node, Skip> {
        let mut stack: Vec<Open> = Vec::new();
        // Alias expansions inside each open collection, and in the whole
        // document: a reader that expands aliases (serde_norway in `verify`,
        // go-yaml in kubelet) does this much work, so "billion laughs"
        // documents are refused here instead of failing there.
        let mut frame_jumps: Vec<u64> = Vec::new();
        let mut jumps: u64 = 0;
        let mut event = Some(first);
        loop {
            let (ev, span) = match event.take() {
                Some(e) => e,
                None => next()?.ok_or_else(|| Skip::error("not valid YAML: truncated"))?,
            };
            let line = span.start.line();
            let done = match ev {
                Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                    Some(Open::Seq {
                        items,
                        flow,
                        anchor,
                        start,
                        line,
                    }) if matches!(ev, Event::SequenceEnd) => {
                        self.close(&mut frame_jumps, flow, anchor, start, span, line);
                        Node::Seq { items, flow }
                    }
                    Some(Open::Map {
                        entries,
                        key: None,
                        flow,
                        anchor,
                        start,
                        line,
                        ..
                    }) if matches!(ev, Event::MappingEnd) => {
                        self.close(&mut frame_jumps, flow, anchor, start, span, line);
                        Node::Map(entries)
                    }
                    _ => {
                        return Err(Skip::error(
                            "not valid YAML: unexpected end of a collection",
                        ))
                    }
                },
                Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                    let seq = matches!(ev, Event::SequenceStart(..));
                    let open = self.open(seq, anchor, tag.as_deref(), span, stack.len())?;
                    frame_jumps.push(0);
                    stack.push(open);
                    continue;
                }
                Event::Scalar(v, style, anchor, tag) => {
                    self.scalar(&v, style, anchor, tag.as_deref(), span)?
                }
                Event::Alias(id) => self.alias(id, line, &mut jumps, &mut frame_jumps)?,
                _ => return Err(Skip::error("not valid YAML: unexpected event")),
            };
            // Hand the finished node to its parent, or return it.
            match stack.last_mut() {
                None => return Ok(done),
                Some(Open::Seq { items, .. }) => items.push(done),
                Some(Open::Map {
                    entries, key, seen, ..
                }) => match key.take() {
                    None => {
                        let tagged = matches!(&done, Node::Scalar { span, .. } if self.str_tagged.contains(&span.start.index()));
                        check_key(&done, tagged, seen)?;
                        *key = Some(done);
                    }
                    Some(k) => entries.push((k, done)),
                },
            }
        }
    }

    /// A collection starts: its tag is checked, its depth bounded, and
    /// whether it is flow style noted.
    fn open(
        &mut self,
        seq: bool,
        anchor: usize,
        tag: Option<&Tag>,
        span: Span,
        depth: usize,
    ) -> Result<Open, Skip> {
        let line = span.start.line();
        check_tag(tag, if seq { "seq" } else { "map" }, line)?;
        if depth >= MAX_DEPTH {
            return Err(Skip::error(format!(
                "nested more than {MAX_DEPTH} levels deep (line {line}); no Pod needs that, and staticpin does not read such files"
            )));
        }
        // A flow collection's start event ends at its `[` or `{`;
        // a block one's is empty or covers only its anchor and tag.
        let flow = span.end.index() > span.start.index()
            && matches!(self.cursor.char_at(span.end.index() - 1), Some('[' | '{'));
        self.flow += usize::from(flow);
        Ok(if seq {
            Open::Seq {
                items: Vec::new(),
                flow,
                anchor,
                start: span,
                line,
            }
        } else {
            Open::Map {
                entries: Vec::new(),
                key: None,
                seen: HashMap::new(),
                flow,
                anchor,
                start: span,
                line,
            }
        })
    }

    fn scalar(
        &mut self,
        v: &str,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        span: Span,
    ) -> Result<Node, Skip> {
        let line = span.start.line();
        check_tag(tag, "str", line)?;
        if tag.is_some() {
            self.str_tagged.insert(span.start.index());
        }
        if style == ScalarStyle::Plain && self.flow > 0 {
            check_flow_plain(v, line)?;
            self.flow_plain.insert(span.start.index());
        }
        self.anchor(anchor, span, span, line);
        Ok(Node::Scalar {
            value: v.to_owned(),
            style,
            span,
        })
    }

    /// An alias: counted, with the expansions it stands for, against the
    /// document's and the enclosing collection's budgets.
    fn alias(
        &mut self,
        id: usize,
        line: usize,
        jumps: &mut u64,
        frame_jumps: &mut [u64],
    ) -> Result<Node, Skip> {
        self.aliases.push((id, line));
        let j = 1 + self.anchor_jumps.get(&id).copied().unwrap_or(0);
        *jumps = jumps.saturating_add(j);
        if let Some(f) = frame_jumps.last_mut() {
            *f = f.saturating_add(j);
        }
        if *jumps > MAX_ALIAS_EXPANSIONS {
            return Err(Skip::error(format!(
                "YAML aliases on line {line} and before expand more than {MAX_ALIAS_EXPANSIONS} times; staticpin does not read such files (kubelet's reader also rejects excessive aliasing)"
            )));
        }
        if self.aliases.len() > MAX_ALIASES {
            return Err(Skip::error(format!(
                "more than {MAX_ALIASES} YAML aliases; staticpin does not read such files (kubelet's reader also limits aliasing)"
            )));
        }
        Ok(Node::Alias)
    }

    fn anchor(&mut self, id: usize, start: Span, end: Span, line: usize) {
        if id != 0 {
            self.anchors
                .insert(id, (start.start.index()..end.end.index(), line));
        }
    }
}

/// Characters by saphyr's character index, for positions that only move
/// forward as events arrive (so the whole walk stays linear).
struct CharCursor<'t> {
    text: &'t str,
    chars: usize,
    bytes: usize,
}

impl<'t> CharCursor<'t> {
    fn new(text: &'t str) -> Self {
        CharCursor {
            text,
            chars: 0,
            bytes: 0,
        }
    }

    fn char_at(&mut self, index: usize) -> Option<char> {
        if index < self.chars {
            *self = CharCursor::new(self.text);
        }
        while self.chars < index {
            let c = self.text[self.bytes..].chars().next()?;
            self.bytes += c.len_utf8();
            self.chars += 1;
        }
        self.text[self.bytes..].chars().next()
    }
}

/// A file whose first non-space character is `{` never reaches the YAML
/// reader: kubelet decodes it as strict JSON. It must then be valid JSON
/// with exactly the image values found here.
fn json_cross_check(text: &str, images: &[ImageSite]) -> Result<(), Skip> {
    if !text.trim_start().starts_with('{') {
        return Ok(());
    }
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Skip::error(format!(
            "it starts with `{{`, so kubelet reads it as JSON, and it is not valid JSON: {e}"
        ))
    })?;
    for s in images {
        let item = &json["spec"][s.field][s.index];
        let v = if s.field == VOLUMES_FIELD {
            &item["image"]["reference"]
        } else {
            &item["image"]
        };
        if v.as_str() != Some(s.value.as_str()) {
            return Err(Skip::error(format!(
                "{} on line {}: a JSON reader sees {v}, staticpin's YAML parser sees {:?}; staticpin will not guess",
                s.path(),
                s.line,
                s.value
            )));
        }
    }
    Ok(())
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
        let text = "apiVersion: v1\r\nkind: Pod\r\nmetadata: {name: é-pod}\r\nspec:\r\n  initContainers:\r\n  - image: 'init:1' # c'mt\r\n    name: i\r\n  containers:\r\n  - name: a\r\n    image: \"a:1\"  # \"q\"\r\n  - {name: b, image: &x b2}\r\n  - name: c\r\n    image: !!str c:3";
        let s = sites(text);
        assert_eq!(
            s,
            [
                ("a:1".into(), Quoting::Double, "a:1".into()),
                ("b2".into(), Quoting::Plain, "b2".into()),
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
        let two = inspect("kind: Pod\n---\nkind: Pod\n").unwrap();
        assert!(two.notes[0].contains("ignored"), "{:?}", two.notes);
        let d = err("kind: Deployment\n");
        assert!(!d.is_error && d.reason.contains("Deployment"));
        assert!(err("kind: Pod\nspec: {containers: [")
            .reason
            .contains("cannot read it"));
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
        assert!(err("kind: Pod\nspec:\n  containers:\n  - {image: a:1}\n")
            .reason
            .contains("flow collection"));
    }

    #[test]
    fn yaml11_resolution_of_plain_scalars() {
        for s in [
            "",
            "~",
            "NULL",
            "y",
            "No",
            "on",
            "0",
            "-12",
            "0777",
            "0x1f",
            "0o7",
            "0b101",
            "-0b1",
            "1_000",
            "1.5",
            ".5",
            "1e3",
            "-1.5E+3",
            ".inf",
            "-.Inf",
            ".NaN",
            "+1",
            "99999999999999999999",
        ] {
            assert!(
                yaml11_non_string(s).is_some(),
                "{s:?} is not a string to go-yaml"
            );
        }
        for s in [
            "nginx",
            "1:20",
            "2001-12-14",
            "0x",
            "1e",
            "1.2.3",
            "0b2",
            "08a",
            "-",
            "+.",
            "registry:5000/x",
            ".hidden",
            "1password/op:2",
            "yes/no",
            "0xZZ",
        ] {
            assert_eq!(yaml11_non_string(s), None, "{s:?} is a string to go-yaml");
        }
    }

    #[test]
    fn byte_offsets_handle_multibyte() {
        assert_eq!(byte_offsets("aé€b", [3, 0, 2, 4]), [6, 0, 3, 7]);
    }
}
