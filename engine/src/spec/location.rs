//! Where every key and value of a YAML document sits in its file.
//!
//! serde gives us typed data but forgets positions (and tagged enums lose even the position of the
//! first error), so the loader reads each file twice: once with serde into `*Spec` types, once here
//! with yaml-rust2's event parser into a [`SourceMap`] from paths (`blocks.delete.with.email`) to the
//! 1-based line and column of the key and of the value. Any error that can name a path can then point
//! at the exact token the user has to fix. The same walk notices duplicate keys, which serde would
//! either reject without a position or silently merge.

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
#[derive(Debug, Default)]
pub struct SourceMap {
    spans: HashMap<YamlPath, Span>,
    duplicates: Vec<DuplicateKey>,
}

impl SourceMap {
    /// Walks `text` and records every position. A document with a syntax error yields the
    /// positions read before the error (the serde pass reports the error itself).
    pub fn build(text: &str) -> SourceMap {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        // Errors are reported by serde_yaml with their own position; keep what was read.
        let _ = parser.load(&mut walker, false);
        SourceMap {
            spans: walker.spans,
            duplicates: walker.duplicates,
        }
    }

    pub fn span(&self, path: &YamlPath) -> Option<Span> {
        self.spans.get(path).copied()
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
        let mut path = path.clone();
        loop {
            if let Some(span) = self.spans.get(&path) {
                return pick(*span);
            }
            match path.parent() {
                Some(parent) => path = parent,
                None => return Location::START,
            }
        }
    }

    /// Keys that appear twice in the same mapping, in document order.
    pub fn duplicates(&self) -> &[DuplicateKey] {
        &self.duplicates
    }
}

enum Frame {
    Mapping {
        path: YamlPath,
        /// The key read and awaiting its value.
        pending_key: Option<(String, Location)>,
        seen: HashMap<String, Location>,
        first_key: bool,
    },
    Sequence {
        path: YamlPath,
        next_index: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    spans: HashMap<YamlPath, Span>,
    duplicates: Vec<DuplicateKey>,
}

impl Walker {
    /// Where the next value goes, or `None` when the next scalar is a mapping key.
    fn value_slot(&mut self) -> Option<(YamlPath, Option<Location>)> {
        match self.stack.last_mut() {
            None => Some((YamlPath::root(), None)),
            Some(Frame::Sequence { path, next_index }) => {
                let slot = path.index(*next_index);
                *next_index += 1;
                Some((slot, None))
            }
            Some(Frame::Mapping {
                path, pending_key, ..
            }) => {
                let (key, at) = pending_key.take()?;
                Some((path.key(&key), Some(at)))
            }
        }
    }

    fn record(&mut self, path: YamlPath, key: Option<Location>, value: Location) {
        self.spans.insert(path, Span { key, value });
    }

    /// A block mapping's start marker points past its first key; use the key instead.
    fn note_first_key(&mut self, at: Location) {
        if let Some(Frame::Mapping {
            path, first_key, ..
        }) = self.stack.last_mut()
        {
            if std::mem::take(first_key) {
                if let Some(span) = self.spans.get_mut(path) {
                    if at < span.value {
                        span.value = at;
                    }
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
                Some((path, key)) => self.record(path, key, at),
                None => {
                    self.note_first_key(at);
                    if let Some(Frame::Mapping {
                        path,
                        pending_key,
                        seen,
                        ..
                    }) = self.stack.last_mut()
                    {
                        if let Some(first) = seen.get(&text) {
                            self.duplicates.push(DuplicateKey {
                                path: path.key(&text),
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
                if let Some((path, key)) = self.value_slot() {
                    self.record(path, key, at);
                }
            }
            Event::MappingStart(..) => {
                // A mapping used as a key is not something workflows need; give it a dummy slot.
                let (path, key) = self
                    .value_slot()
                    .unwrap_or_else(|| (YamlPath::root().key("?"), None));
                self.record(path.clone(), key, at);
                self.stack.push(Frame::Mapping {
                    path,
                    pending_key: None,
                    seen: HashMap::new(),
                    first_key: true,
                });
            }
            Event::SequenceStart(..) => {
                let (path, key) = self
                    .value_slot()
                    .unwrap_or_else(|| (YamlPath::root().key("?"), None));
                self.record(path.clone(), key, at);
                self.stack.push(Frame::Sequence {
                    path,
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
