//! The seam through which a run writes `save:` fields onto its subject record.
//!
//! Records (`people`, `saas_users`) belong to the records module; until the two meet, the executor
//! writes through [`SubjectWriter`], which merges fields into the JSON object stored in the
//! `records` tree under `collection/key` (the key lowercased), creating it when absent. It is the
//! only thing the executor needs from records, so reconciling the two is a one-file change.

use serde_json::{Map, Value};

use super::{trees, Store, StoreError};

/// Writes saved fields onto subject records.
#[derive(Clone, Debug)]
pub struct SubjectWriter {
    tree: sled::Tree,
}

impl SubjectWriter {
    pub fn open(store: &Store) -> Result<SubjectWriter, StoreError> {
        Ok(SubjectWriter {
            tree: store.tree(trees::RECORDS)?,
        })
    }

    fn key(collection: &str, key: &str) -> Vec<u8> {
        format!("{collection}/{}", key.to_lowercase()).into_bytes()
    }

    /// Merges `fields` into the record (atomically) and returns the record as now stored.
    pub fn merge(
        &self,
        collection: &str,
        key: &str,
        base: &Value,
        fields: &Map<String, Value>,
    ) -> Result<Value, StoreError> {
        let key = SubjectWriter::key(collection, key);
        let mut merged = Value::Null;
        self.tree.update_and_fetch(&key, |old| {
            let mut record = old
                .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(bytes).ok())
                .or_else(|| base.as_object().cloned())
                .unwrap_or_default();
            for (name, value) in fields {
                record.insert(name.clone(), value.clone());
            }
            let value = Value::Object(record);
            let bytes = serde_json::to_vec(&value).ok();
            merged = value;
            bytes
        })?;
        Ok(merged)
    }

    /// The stored record, if any.
    pub fn get(&self, collection: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let key = SubjectWriter::key(collection, key);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|err| StoreError::Corrupt {
                        tree: trees::RECORDS,
                        key: String::from_utf8_lossy(&key).into_owned(),
                        message: err.to_string(),
                    })
            }
        }
    }
}
