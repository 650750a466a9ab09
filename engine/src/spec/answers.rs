//! `answers:`: the vendor answers an API block counts as results rather than failures.
//!
//! An entry is a status (`404`), the name `not_found` (a 404, or the empty list a find preset
//! answers with), or `{status, when}` where `when` is a rhai condition over the answer. Values stay
//! as written here; [`crate::compile`] checks them (a status between 100 and 599 that is not a
//! success already nor a transient failure, no entry twice). Hand-written visitors (as in
//! [`super::targets`]) keep serde's error precise instead of "data did not match any variant".

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// What an entry matches, as written: a number, or a name (`not_found`, or a status in quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerStatus {
    Code(i64),
    Name(String),
}

impl fmt::Display for AnswerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerStatus::Code(code) => write!(f, "{code}"),
            AnswerStatus::Name(name) => f.write_str(name),
        }
    }
}

impl JsonSchema for AnswerStatus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AnswerStatus".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        AnswerStatusRepr::json_schema(generator)
    }
}

/// Schema form: an HTTP status, or `not_found`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum AnswerStatusRepr {
    /// An HTTP status between 100 and 599 that is not a 2xx, 429, 502, 503 or 504.
    Code(#[schemars(range(min = 100, max = 599))] u16),
    /// A 404, or the empty list a find preset's `not_found` describes.
    NotFound(NotFoundName),
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum NotFoundName {
    NotFound,
}

impl<'de> Deserialize<'de> for AnswerStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AnswerStatus, D::Error> {
        deserializer.deserialize_any(StatusVisitor)
    }
}

struct StatusVisitor;

impl Visitor<'_> for StatusVisitor {
    type Value = AnswerStatus;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an HTTP status such as 404, or `not_found`")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<AnswerStatus, E> {
        Ok(AnswerStatus::Code(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<AnswerStatus, E> {
        Ok(AnswerStatus::Code(i64::try_from(v).unwrap_or(i64::MAX)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<AnswerStatus, E> {
        Ok(AnswerStatus::Name(v.to_owned()))
    }
}

/// One entry of `answers:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerSpec {
    /// The status that is an answer (`409`), or `not_found`.
    pub status: AnswerStatus,
    /// A rhai condition over `status`, `response`, `headers`, `record` and `vars`: the answer
    /// counts only when it is true (`response.title == "Already Invited"`).
    #[serde(default)]
    pub when: Option<String>,
    /// Written as a bare status or name rather than a mapping (where errors point).
    #[serde(skip)]
    #[schemars(skip)]
    pub bare: bool,
}

/// The entries of `answers:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers(pub Vec<AnswerSpec>);

impl Answers {
    pub fn iter(&self) -> impl Iterator<Item = &AnswerSpec> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Schema form: a list of statuses, `not_found` and `{status, when}` entries.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum AnswerEntryRepr {
    Status(AnswerStatus),
    Conditional(AnswerSpec),
}

impl JsonSchema for Answers {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Answers".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Vec::<AnswerEntryRepr>::json_schema(generator)
    }
}

impl<'de> Deserialize<'de> for Answers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Answers, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Answers;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of statuses, `not_found` or `{status, when}` entries")
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Answers, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element::<AnswerEntry>()? {
                    entries.push(entry.0);
                }
                Ok(Answers(entries))
            }
        }
        deserializer.deserialize_seq(ListVisitor)
    }
}

/// One entry: a bare status or name, or `{status, when}`.
struct AnswerEntry(AnswerSpec);

impl<'de> Deserialize<'de> for AnswerEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AnswerEntry, D::Error> {
        deserializer.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

impl EntryVisitor {
    fn bare(status: AnswerStatus) -> AnswerEntry {
        AnswerEntry(AnswerSpec {
            status,
            when: None,
            bare: true,
        })
    }
}

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = AnswerEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an HTTP status such as 404, `not_found`, or `{status, when}`")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<AnswerEntry, E> {
        StatusVisitor.visit_i64(v).map(EntryVisitor::bare)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<AnswerEntry, E> {
        StatusVisitor.visit_u64(v).map(EntryVisitor::bare)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<AnswerEntry, E> {
        StatusVisitor.visit_str(v).map(EntryVisitor::bare)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AnswerEntry, A::Error> {
        AnswerSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(AnswerEntry)
    }
}
