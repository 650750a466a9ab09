//! Records: the people and SaaS users that workflows act on, and the rules for writing them.
//!
//! A record is a JSON object of fields ([`Fields`]) in one of two collections
//! ([`Collection::People`], [`Collection::SaasUsers`]). Its [`RecordKey`] is derived from its fields
//! (see [`KeyRule`]): a person by their lowercased email, a SaaS user by its lowercased `app` and
//! email (`calendly/jane@acme.com`), so the same person imported twice in a different case is one
//! record. Writes are upserts in a [`WriteMode`]; an update merges the written fields into the stored
//! ones (fields a workflow saved onto the record, such as `webex_status`, survive a re-import), and
//! reports whether it created, updated or left the record unchanged ([`Outcome`]).
//!
//! [`RecordStore`] is the API over the store: every write goes through one sled transaction with the
//! run requests and traces it triggers (see [`crate::trigger`]), so a crash loses or duplicates
//! neither. [`import`] streams CSV, JSON and JSONL files into it in batches.

use std::fmt;

use serde_json::Value;

pub use crate::compile::{Collection, RecordEvent};
pub use crate::store::records::RecordStore;

pub mod import;

/// A record's fields.
pub type Fields = serde_json::Map<String, Value>;

/// A record's key within its collection: `jane@acme.com`, or `calendly/jane@acme.com` for a SaaS user.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct RecordKey(String);

impl RecordKey {
    /// A key as typed by a user (`records show people Jane@Acme.com`): trimmed and lowercased.
    pub fn parse(text: &str) -> RecordKey {
        RecordKey(text.trim().to_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The email part of the key (the whole key for a person, after `app/` for a SaaS user).
    pub fn email(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, email)| email)
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record's identity across collections: `people/jane@acme.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Subject {
    #[serde(with = "collection_name")]
    pub collection: Collection,
    pub key: RecordKey,
}

impl Subject {
    pub fn new(collection: Collection, key: RecordKey) -> Subject {
        Subject { collection, key }
    }

    /// A run's subject: this record, with its fields as the run starts.
    pub fn with_record(&self, fields: Fields) -> crate::store::history::Subject {
        crate::store::history::Subject {
            collection: self.collection.name().to_owned(),
            key: self.key.to_string(),
            record: Value::Object(fields),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.collection.name(), self.key)
    }
}

/// Serde for [`Collection`] by name (`people`, `saas_users`).
pub mod collection_name {
    use super::Collection;

    pub fn serialize<S: serde::Serializer>(c: &Collection, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.name())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Collection, D::Error> {
        let name = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        Collection::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown collection `{name}`")))
    }
}

/// Which fields identify a record.
///
/// `people` are keyed by `field` (default `email`); `saas_users` by `app` and `field` together. Both
/// are trimmed and lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    pub collection: Collection,
    pub field: String,
}

/// Why a record has no key. An empty (or blank) key field counts as missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("missing `{field}`")]
    Missing { field: String },
    #[error("`{field}` must be text, found {found}")]
    NotText { field: String, found: &'static str },
    #[error("`{field}` must not contain `/`")]
    Slash { field: String },
}

impl KeyRule {
    /// The default rule of `collection`: its records are keyed by `email`.
    pub fn new(collection: Collection) -> KeyRule {
        KeyRule {
            collection,
            field: "email".to_owned(),
        }
    }

    /// Keys by `field` instead of `email`.
    pub fn with_field(collection: Collection, field: impl Into<String>) -> KeyRule {
        KeyRule {
            collection,
            field: field.into(),
        }
    }

    /// The key of a record with these fields.
    pub fn key(&self, fields: &Fields) -> Result<RecordKey, KeyError> {
        let main = key_part(fields, &self.field)?;
        match self.collection {
            Collection::People => Ok(RecordKey(main)),
            Collection::SaasUsers => {
                let app = key_part(fields, "app")?;
                if app.contains('/') {
                    return Err(KeyError::Slash {
                        field: "app".to_owned(),
                    });
                }
                Ok(RecordKey(format!("{app}/{main}")))
            }
        }
    }
}

fn key_part(fields: &Fields, field: &str) -> Result<String, KeyError> {
    let text = match fields.get(field) {
        None | Some(Value::Null) => {
            return Err(KeyError::Missing {
                field: field.to_owned(),
            })
        }
        Some(Value::String(s)) => s.trim().to_lowercase(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(KeyError::NotText {
                field: field.to_owned(),
                found: json_type(other),
            })
        }
    };
    if text.is_empty() {
        return Err(KeyError::Missing {
            field: field.to_owned(),
        });
    }
    Ok(text)
}

/// A JSON value's type, for messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// How an upsert treats existing and missing records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WriteMode {
    /// Create missing records and update existing ones.
    #[default]
    CreateUpdate,
    /// Only create: an existing record is left as it is.
    CreateOnly,
    /// Only update: a missing record is not created.
    UpdateOnly,
}

/// What one write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    /// The record already had these values (or `create_only` met an existing record).
    Unchanged,
    /// `update_only` met a missing record: nothing was written.
    Skipped,
    /// A delete removed the record.
    Deleted,
    /// A delete found nothing.
    NotFound,
}

impl Outcome {
    /// The record event this outcome is, if any.
    pub fn event(self) -> Option<RecordEvent> {
        match self {
            Outcome::Created => Some(RecordEvent::Created),
            Outcome::Updated => Some(RecordEvent::Updated),
            Outcome::Deleted => Some(RecordEvent::Deleted),
            Outcome::Unchanged | Outcome::Skipped | Outcome::NotFound => None,
        }
    }
}

/// One change to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Merge `fields` into the record (creating it), as `mode` allows.
    Upsert { fields: Fields, mode: WriteMode },
    /// Remove the record.
    Delete,
}

/// A change to one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub subject: Subject,
    pub change: Change,
}

/// Applies `change` to the stored record `old`: the new record (None when deleted) and the outcome.
pub fn apply(old: Option<&Fields>, change: &Change) -> (Option<Fields>, Outcome) {
    match (change, old) {
        (Change::Delete, None) => (None, Outcome::NotFound),
        (Change::Delete, Some(_)) => (None, Outcome::Deleted),
        (Change::Upsert { mode, .. }, None) if *mode == WriteMode::UpdateOnly => {
            (None, Outcome::Skipped)
        }
        (Change::Upsert { fields, .. }, None) => (Some(fields.clone()), Outcome::Created),
        (Change::Upsert { mode, .. }, Some(old)) if *mode == WriteMode::CreateOnly => {
            (Some(old.clone()), Outcome::Unchanged)
        }
        (Change::Upsert { fields, .. }, Some(old)) => {
            if fields.iter().all(|(k, v)| old.get(k) == Some(v)) {
                return (Some(old.clone()), Outcome::Unchanged);
            }
            let mut merged = old.clone();
            for (k, v) in fields {
                merged.insert(k.clone(), v.clone());
            }
            (Some(merged), Outcome::Updated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn keys_are_lowercased_and_saas_users_include_the_app() {
        let f = fields(json!({"email": " Jane@ACME.com ", "app": "Calendly"}));
        assert_eq!(
            KeyRule::new(Collection::People).key(&f).unwrap().as_str(),
            "jane@acme.com"
        );
        let key = KeyRule::new(Collection::SaasUsers).key(&f).unwrap();
        assert_eq!(key.as_str(), "calendly/jane@acme.com");
        assert_eq!(key.email(), "jane@acme.com");
    }

    #[test]
    fn key_errors_name_the_field() {
        let people = KeyRule::new(Collection::People);
        let err = |v| people.key(&fields(v)).unwrap_err().to_string();
        assert_eq!(err(json!({"name": "x"})), "missing `email`");
        assert_eq!(err(json!({"email": "  "})), "missing `email`");
        assert_eq!(
            err(json!({"email": ["a"]})),
            "`email` must be text, found a list"
        );
        let saas = KeyRule::new(Collection::SaasUsers);
        assert_eq!(
            saas.key(&fields(json!({"email": "a@b.c"})))
                .unwrap_err()
                .to_string(),
            "missing `app`"
        );
    }

    #[test]
    fn upserts_merge_and_report_what_they_did() {
        let old = fields(json!({"email": "a@b.c", "status": "active", "saved": 1}));
        let upsert = |v, mode| Change::Upsert {
            fields: fields(v),
            mode,
        };
        let (new, outcome) = apply(
            Some(&old),
            &upsert(json!({"status": "terminated"}), WriteMode::CreateUpdate),
        );
        assert_eq!(outcome, Outcome::Updated);
        assert_eq!(
            Value::Object(new.unwrap()),
            json!({"email": "a@b.c", "status": "terminated", "saved": 1})
        );
        let same = upsert(json!({"status": "active"}), WriteMode::CreateUpdate);
        assert_eq!(apply(Some(&old), &same).1, Outcome::Unchanged);
        let create_only = upsert(json!({"status": "x"}), WriteMode::CreateOnly);
        assert_eq!(apply(Some(&old), &create_only).1, Outcome::Unchanged);
        assert_eq!(apply(None, &create_only).1, Outcome::Created);
        let update_only = upsert(json!({"status": "x"}), WriteMode::UpdateOnly);
        assert_eq!(apply(None, &update_only), (None, Outcome::Skipped));
        assert_eq!(apply(Some(&old), &update_only).1, Outcome::Updated);
        assert_eq!(apply(Some(&old), &Change::Delete), (None, Outcome::Deleted));
        assert_eq!(apply(None, &Change::Delete), (None, Outcome::NotFound));
    }
}
