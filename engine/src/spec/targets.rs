//! `next:` and `on_failure:` edges, and other "one or a list" values.
//!
//! An edge list is written as one id (`next: end`), a list (`next: [a, b]`), or entries with a
//! condition (`next: [{to: a, when: 'record.role == "admin"'}, b]`). Hand-written visitors (rather
//! than `#[serde(untagged)]`) keep serde's error precise: "expected a block id or a list", not "data
//! did not match any variant".

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// One edge: the target block and an optional rhai condition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The block this edge leads to.
    pub to: String,
    /// A rhai expression; the edge is taken only when it is true.
    #[serde(default)]
    pub when: Option<String>,
}

/// The edges of `next` or `on_failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets(pub Vec<TargetSpec>);

impl Targets {
    pub fn iter(&self) -> impl Iterator<Item = &TargetSpec> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Schema form: a block id, or a list of block ids and `{to, when}` entries.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum TargetsRepr {
    One(String),
    Conditional(TargetSpec),
    Many(Vec<TargetEntryRepr>),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum TargetEntryRepr {
    Id(String),
    Conditional(TargetSpec),
}

impl JsonSchema for Targets {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Targets".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        TargetsRepr::json_schema(generator)
    }
}

impl<'de> Deserialize<'de> for Targets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Targets, D::Error> {
        deserializer.deserialize_any(TargetsVisitor)
    }
}

struct TargetsVisitor;

impl<'de> Visitor<'de> for TargetsVisitor {
    type Value = Targets;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a block id, a list of block ids, or `{to: ID, when: EXPR}` entries")
    }

    fn visit_str<E: de::Error>(self, id: &str) -> Result<Targets, E> {
        EntryVisitor
            .visit_str(id)
            .map(|entry| Targets(vec![entry.0]))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Targets, E> {
        Ok(Targets::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Targets, A::Error> {
        let mut targets = Vec::new();
        while let Some(entry) = seq.next_element::<TargetEntry>()? {
            targets.push(entry.0);
        }
        Ok(Targets(targets))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Targets, A::Error> {
        EntryVisitor
            .visit_map(map)
            .map(|entry| Targets(vec![entry.0]))
    }
}

/// One entry of an edge list: a block id or `{to, when}`.
struct TargetEntry(TargetSpec);

impl<'de> Deserialize<'de> for TargetEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TargetEntry, D::Error> {
        deserializer.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = TargetEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a block id or `{to: ID, when: EXPR}`")
    }

    fn visit_str<E: de::Error>(self, id: &str) -> Result<TargetEntry, E> {
        Ok(TargetEntry(TargetSpec {
            to: id.to_owned(),
            when: None,
        }))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetEntry, A::Error> {
        TargetSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(TargetEntry)
    }
}

/// One string or a list of strings (`on: updated`, `on: [created, updated]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum StringListRepr {
    One(String),
    Many(Vec<String>),
}

impl JsonSchema for StringList {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StringList".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        StringListRepr::json_schema(generator)
    }
}

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StringList, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StringList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<StringList, E> {
                Ok(StringList(vec![s.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StringList(items))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}
