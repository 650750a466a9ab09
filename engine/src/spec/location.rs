//! Where every key and value of a YAML document sits in its file.
//!
//! serde gives us typed data but forgets positions (and tagged enums lose even the position of the
//! first error), so the loader reads each file twice: once with serde into `*Spec` types, once here
//! with yaml-rust2's event parser into a [`SourceMap`] from paths (`blocks.delete.with.email`) to the
//! 1-based line and column of the key and of the value. Any error that can name a path can then point
//! at the exact token the user has to fix. The same walk notices duplicate keys, which serde would
//! either reject without a position or silently merge. The walk reads events one by one (no
//! recursion) and keeps each node once, so neither the stack nor the map grows with depth times
//! size; [`super::limits`] bounds the depth before a file gets here.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Location {
    pub line: u32,
    pub column: u32,
}

impl Location {
    pub const START: Location = Location { line: 1, column: 1 };

    pub fn new(line: u32, column: u32) -> Location {
        Location { line, column }
    }

    fn from_marker(mark: Marker) -> Location {
        Location {
            line: mark.line() as u32,
            column: mark.col() as u32 + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path into a YAML document, `blocks.delete.next[1]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct YamlPath(Vec<Segment>);

impl YamlPath {
    pub fn root() -> YamlPath {
        YamlPath(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: &str) -> YamlPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        YamlPath(segments)
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> YamlPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        YamlPath(segments)
    }

    /// This path extended by a serde_path_to_error path (`retry.max_attempts`, `next[0].to`).
    pub fn join_serde(&self, path: &serde_path_to_error::Path) -> YamlPath {
        use serde_path_to_error::Segment as S;
        let mut out = self.clone();
        for segment in path.iter() {
            match segment {
                S::Seq { index } => out.0.push(Segment::Index(*index)),
                S::Map { key } => out.0.push(Segment::Key(key.clone())),
                S::Enum { variant } => out.0.push(Segment::Key(variant.clone())),
                S::Unknown => {}
            }
        }
        out
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn parent(&self) -> Option<YamlPath> {
        let (_, rest) = self.0.split_last()?;
        Some(YamlPath(rest.to_vec()))
    }

    pub fn last_key(&self) -> Option<&str> {
        match self.0.last()? {
            Segment::Key(key) => Some(key),
            Segment::Index(_) => None,
        }
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Where a key and its value sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The key's position, for values inside a mapping.
    pub key: Option<Location>,
    /// The value's position (for a mapping, its first key or its `{`).
    pub value: Location,
}

/// A key that appears twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub path: YamlPath,
    pub first: Location,
    pub again: Location,
}

/// Positions of every key and value in a document, by path.
///
/// Each node is kept once, with its parent and the segment that leads to it, so the map grows with
/// the size of the document however deep it nests (a map from whole paths kept every ancestor of
/// every node: 322 MB for 3,000 levels). A path is looked up segment by segment from the root.
#[derive(Debug, Default)]
pub struct SourceMap {
    nodes: Vec<Node>,
    /// (parent node, segment) → child node.
    children: HashMap<(u32, Segment), u32>,
    duplicates: Vec<DuplicateKey>,
}

/// One key or value of the document.
#[derive(Debug)]
struct Node {
    /// `None` for the document's root.
    parent: Option<u32>,
    segment: Option<Segment>,
    span: Span,
}

impl SourceMap {
    /// Walks `text` and records every position. A document with a syntax error yields the
    /// positions read before the error (the serde pass reports the error itself).
    pub fn build(text: &str) -> SourceMap {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        // Event by event (`Parser::load` recurses once per level of nesting), the first document
        // only. Errors are reported by serde_yaml with their own position; keep what was read.
        while let Ok((event, mark)) = parser.next_token() {
            if matches!(event, Event::StreamEnd | Event::DocumentEnd) {
                break;
            }
            walker.on_event(event, mark);
        }
        walker.map
    }

    pub fn span(&self, path: &YamlPath) -> Option<Span> {
        match self.deepest(path) {
            (Some(node), found) if found == path.0.len() => Some(self.nodes[node as usize].span),
            _ => None,
        }
    }

    /// The position of the key at `path`, else of its value, else of the nearest ancestor.
    pub fn key_location(&self, path: &YamlPath) -> Location {
        self.locate(path, |span| span.key.unwrap_or(span.value))
    }

    /// The position of the value at `path`, else of the nearest ancestor.
    pub fn value_location(&self, path: &YamlPath) -> Location {
        self.locate(path, |span| span.value)
    }

    fn locate(&self, path: &YamlPath, pick: impl Fn(Span) -> Location) -> Location {
        match self.deepest(path) {
            (Some(node), _) => pick(self.nodes[node as usize].span),
            (None, _) => Location::START,
        }
    }

    /// The deepest node on `path` that the document has, and how many segments lead to it.
    fn deepest(&self, path: &YamlPath) -> (Option<u32>, usize) {
        if self.nodes.is_empty() {
            return (None, 0);
        }
        let mut node = 0;
        for (depth, segment) in path.0.iter().enumerate() {
            match self.children.get(&(node, segment.clone())) {
                Some(&child) => node = child,
                None => return (Some(node), depth),
            }
        }
        (Some(node), path.0.len())
    }

    /// The path of `node`, built from its ancestors.
    fn path_of(&self, mut node: u32) -> YamlPath {
        let mut segments = Vec::new();
        loop {
            let Node {
                parent, segment, ..
            } = &self.nodes[node as usize];
            segments.extend(segment.clone());
            match parent {
                Some(parent) => node = *parent,
                None => break,
            }
        }
        segments.reverse();
        YamlPath(segments)
    }

    /// Keys that appear twice in the same mapping, in document order.
    pub fn duplicates(&self) -> &[DuplicateKey] {
        &self.duplicates
    }
}

enum Frame {
    Mapping {
        node: u32,
        /// The key read and awaiting its value.
        pending_key: Option<(String, Location)>,
        seen: HashMap<String, Location>,
        first_key: bool,
    },
    Sequence {
        node: u32,
        next_index: usize,
    },
}

/// Where a value goes: under a parent by a segment, or the document's root.
type Slot = Option<(u32, Segment)>;

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    map: SourceMap,
}

impl Walker {
    /// Where the next value goes (and its key's position), or `None` when the next scalar is a
    /// mapping key.
    fn value_slot(&mut self) -> Option<(Slot, Option<Location>)> {
        match self.stack.last_mut() {
            None => Some((None, None)),
            Some(Frame::Sequence { node, next_index }) => {
                let slot = (*node, Segment::Index(*next_index));
                *next_index += 1;
                Some((Some(slot), None))
            }
            Some(Frame::Mapping {
                node, pending_key, ..
            }) => {
                let (key, at) = pending_key.take()?;
                Some((Some((*node, Segment::Key(key))), Some(at)))
            }
        }
    }

    /// A slot for a mapping or sequence used as a key, which workflows do not need: a dummy `?`
    /// under the root.
    fn dummy_slot() -> (Slot, Option<Location>) {
        (Some((0, Segment::Key("?".to_owned()))), None)
    }

    fn record(&mut self, slot: Slot, key: Option<Location>, value: Location) -> u32 {
        let map = &mut self.map;
        let id = u32::try_from(map.nodes.len()).unwrap_or(u32::MAX);
        let span = Span { key, value };
        match slot {
            None => map.nodes.push(Node {
                parent: None,
                segment: None,
                span,
            }),
            Some((parent, segment)) => {
                map.nodes.push(Node {
                    parent: Some(parent),
                    segment: Some(segment.clone()),
                    span,
                });
                map.children.insert((parent, segment), id);
            }
        }
        id
    }

    /// A block mapping's start marker points past its first key; use the key instead.
    fn note_first_key(&mut self, at: Location) {
        if let Some(Frame::Mapping {
            node, first_key, ..
        }) = self.stack.last_mut()
        {
            if std::mem::take(first_key) {
                let span = &mut self.map.nodes[*node as usize].span;
                if at < span.value {
                    span.value = at;
                }
            }
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let at = Location::from_marker(mark);
        match event {
            Event::Scalar(text, ..) => match self.value_slot() {
                Some((slot, key)) => {
                    self.record(slot, key, at);
                }
                None => {
                    self.note_first_key(at);
                    if let Some(Frame::Mapping {
                        node,
                        pending_key,
                        seen,
                        ..
                    }) = self.stack.last_mut()
                    {
                        if let Some(first) = seen.get(&text) {
                            let path = self.map.path_of(*node).key(&text);
                            self.map.duplicates.push(DuplicateKey {
                                path,
                                first: *first,
                                again: at,
                            });
                        } else {
                            seen.insert(text.clone(), at);
                        }
                        *pending_key = Some((text, at));
                    }
                }
            },
            Event::Alias(_) => {
                if let Some((slot, key)) = self.value_slot() {
                    self.record(slot, key, at);
                }
            }
            Event::MappingStart(..) => {
                let (slot, key) = self.value_slot().unwrap_or_else(Walker::dummy_slot);
                let node = self.record(slot, key, at);
                self.stack.push(Frame::Mapping {
                    node,
                    pending_key: None,
                    seen: HashMap::new(),
                    first_key: true,
                });
            }
            Event::SequenceStart(..) => {
                let (slot, key) = self.value_slot().unwrap_or_else(Walker::dummy_slot);
                let node = self.record(slot, key, at);
                self.stack.push(Frame::Sequence {
                    node,
                    next_index: 0,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segments: &[&str]) -> YamlPath {
        segments
            .iter()
            .fold(YamlPath::root(), |path, segment| match segment.parse() {
                Ok(index) => path.index(index),
                Err(_) => path.key(segment),
            })
    }

    #[test]
    fn keys_and_values_have_one_based_positions() {
        let map = SourceMap::build("name: x\nblocks:\n  a:\n    type: api\n    next: [b, \"c\"]\n");
        let span = map.span(&path(&["blocks", "a", "type"])).unwrap();
        assert_eq!(span.key, Some(Location::new(4, 5)));
        assert_eq!(span.value, Location::new(4, 11));
        assert_eq!(
            map.value_location(&path(&["blocks", "a", "next", "1"])),
            Location::new(5, 15)
        );
        // A block mapping is located at its first key.
        assert_eq!(
            map.value_location(&path(&["blocks", "a"])),
            Location::new(4, 5)
        );
        assert_eq!(
            map.key_location(&path(&["blocks", "a"])),
            Location::new(3, 3)
        );
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let map = SourceMap::build("blocks:\n  a:\n    type: api\n");
        assert_eq!(
            map.key_location(&path(&["blocks", "a", "nope"])),
            Location::new(2, 3)
        );
    }

    #[test]
    fn a_deep_document_is_walked_without_recursion() {
        // 1,000 levels of block mappings overflowed a test thread's stack when the walk recursed.
        let mut text = String::new();
        for level in 0..1000 {
            text.push_str(&" ".repeat(level));
            text.push_str("k:\n");
        }
        let map = SourceMap::build(&text);
        let deepest = path(&["k"; 1000]);
        assert_eq!(map.key_location(&deepest), Location::new(1000, 1000));
    }

    #[test]
    fn duplicate_keys_are_noticed() {
        let map = SourceMap::build("blocks:\n  a: {type: end}\n  a: {type: end}\n");
        assert_eq!(
            map.duplicates(),
            &[DuplicateKey {
                path: path(&["blocks", "a"]),
                first: Location::new(2, 3),
                again: Location::new(3, 3),
            }]
        );
    }
}
