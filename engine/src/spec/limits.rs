//! The bounds a YAML document must keep before anything is built from it.
//!
//! A workflow, preset or config file is read by serde_yaml into values and by yaml-rust2 into a
//! [`super::SourceMap`]; both cost more than the text when the text is hostile: 10,000 nested
//! mappings once overflowed the stack (and a position map keeps every ancestor of every node, so
//! it grows with depth times size), and an anchor on a 1 MB string aliased 2,000 times expands to
//! 2 GB. [`check`] walks yaml-rust2's event stream once, without recursion and keeping only a
//! stack of open nodes and the size of each anchored node, and refuses a document that nests more
//! than [`MAX_DEPTH`] mappings and lists or whose aliases expand to more than
//! [`MAX_ALIAS_EXPANSION`] bytes, at the position where it passes the limit. A document with a
//! syntax error passes: the parsers that follow report it with their own position.
//!
//! The pass costs about half of a serde_yaml parse, so the workflow loader skips it where it cannot
//! find anything serde_yaml would not: a file without `&` has no anchor to alias, and serde_yaml
//! refuses more than [`MAX_DEPTH`] levels itself (iteratively, without overflowing); the position
//! map, which a file with errors needs, is built only after the check.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

use super::Location;

/// The deepest mappings and lists may nest (the document's own mapping is level 1): serde_yaml's
/// own limit, so a file it reads passes this check too.
pub const MAX_DEPTH: usize = 128;
/// The most bytes aliases may expand to, summed over every alias in a document (a scalar counts
/// its text and one byte, a mapping or list one byte plus its contents).
pub const MAX_ALIAS_EXPANSION: u64 = 1 << 20;

/// Which bound a document passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YamlLimit {
    /// Nesting deeper than [`MAX_DEPTH`].
    Depth,
    /// Aliases expanding to more than [`MAX_ALIAS_EXPANSION`] bytes.
    AliasExpansion,
}

impl YamlLimit {
    /// What to do about it.
    pub fn hint(self) -> String {
        match self {
            YamlLimit::Depth => format!("nest mappings and lists at most {MAX_DEPTH} levels"),
            YamlLimit::AliasExpansion => {
                "alias large values fewer times (1 MiB of expansion is the limit)".to_owned()
            }
        }
    }
}

impl fmt::Display for YamlLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            YamlLimit::Depth => write!(f, "yaml nested more than {MAX_DEPTH} levels deep"),
            YamlLimit::AliasExpansion => write!(f, "yaml aliases expand to more than 1 MiB"),
        }
    }
}

/// A bound a document passes, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitError {
    pub limit: YamlLimit,
    pub location: Location,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}; {}",
            self.location,
            self.limit,
            self.limit.hint()
        )
    }
}

impl std::error::Error for LimitError {}

/// Checks `text` against [`MAX_DEPTH`] and [`MAX_ALIAS_EXPANSION`] (see the module doc).
pub fn check(text: &str) -> Result<(), LimitError> {
    let mut parser = Parser::new_from_str(text);
    // The open mappings and lists: their anchor (0 for none) and their size so far.
    let mut open: Vec<(usize, u64)> = Vec::new();
    let mut anchored: HashMap<usize, u64> = HashMap::new();
    let mut expanded: u64 = 0;
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            // The scanner reads a flow collection ahead to its end and gives up past 255 levels,
            // before the parser has passed ours.
            Err(err) if err.info() == "recursion limit exceeded" => {
                return Err(LimitError {
                    limit: YamlLimit::Depth,
                    location: location(*err.marker()),
                })
            }
            Err(_) => return Ok(()),
        };
        let size = match event {
            Event::StreamEnd => return Ok(()),
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    // A block mapping's start is marked past its first key: point at the key.
                    let mut at = location(mark);
                    if let Ok((Event::Scalar(..), key)) = parser.peek() {
                        at = at.min(location(*key));
                    }
                    return Err(LimitError {
                        limit: YamlLimit::Depth,
                        location: at,
                    });
                }
                open.push((anchor, 1));
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let Some((anchor, size)) = open.pop() else {
                    continue;
                };
                if anchor != 0 {
                    anchored.insert(anchor, size);
                }
                size
            }
            Event::Scalar(text, _, anchor, _) => {
                let size = text.len() as u64 + 1;
                if anchor != 0 {
                    anchored.insert(anchor, size);
                }
                size
            }
            Event::Alias(anchor) => {
                // An alias of a node still open (a recursive one) is the parsers' to refuse.
                let size = anchored.get(&anchor).copied().unwrap_or(1);
                expanded = expanded.saturating_add(size);
                if expanded > MAX_ALIAS_EXPANSION {
                    return Err(LimitError {
                        limit: YamlLimit::AliasExpansion,
                        location: location(mark),
                    });
                }
                size
            }
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {
                continue
            }
        };
        if let Some((_, parent)) = open.last_mut() {
            *parent = parent.saturating_add(size);
        }
    }
}

fn location(mark: Marker) -> Location {
    Location::new(mark.line() as u32, mark.col() as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(depth: usize) -> String {
        format!("{}1{}", "{k: ".repeat(depth), "}".repeat(depth))
    }

    #[test]
    fn depth_is_counted_in_mappings_and_lists_of_either_style() {
        assert_eq!(check(&flow(MAX_DEPTH)), Ok(()));
        let too_deep = |column| {
            Err(LimitError {
                limit: YamlLimit::Depth,
                location: Location::new(1, column),
            })
        };
        assert_eq!(
            check(&flow(MAX_DEPTH + 1)),
            too_deep(4 * MAX_DEPTH as u32 + 1)
        );
        // Past 255 levels yaml-rust2's scanner stops first, at the 256th.
        assert_eq!(check(&flow(10_000)), too_deep(4 * 255 + 1));
        let lists = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(
            check(&lists).unwrap_err().location,
            Location::new(1, MAX_DEPTH as u32 + 1)
        );
    }

    #[test]
    fn nested_aliases_count_what_they_expand_to() {
        // Each level aliases the one before ten times: 10^n copies of the first.
        let mut text = String::from("a0: &a0 \"xxxxxxxxx\"\n");
        for n in 1..=6 {
            let copies = vec![format!("*a{}", n - 1); 10].join(", ");
            text.push_str(&format!("a{n}: &a{n} [{copies}]\n"));
        }
        let err = check(&text).unwrap_err();
        assert_eq!(err.limit, YamlLimit::AliasExpansion);
        assert_eq!(err.location.line, 6);
        // A few small aliases are fine, and so is a syntax error (reported by the parsers).
        assert_eq!(check("a: &a {x: 1}\nb: *a\nc: *a\n"), Ok(()));
        assert_eq!(check("a: [1\n"), Ok(()));
    }
}
