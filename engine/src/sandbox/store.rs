//! [`Table`]: the one collection every vendor keeps its records in.
//!
//! Rows live in a `BTreeMap` keyed by an insertion sequence number, with a hash index from the
//! vendor's id. Cursor pagination resumes from a sequence number, so deleting or adding rows
//! between pages never repeats or skips the rows that stay.

use std::collections::{BTreeMap, HashMap};

/// Records of one kind, in insertion order, addressable by id.
#[derive(Debug, Clone)]
pub(crate) struct Table<T> {
    rows: BTreeMap<u64, (String, T)>,
    index: HashMap<String, u64>,
    next: u64,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            rows: BTreeMap::new(),
            index: HashMap::new(),
            next: 0,
        }
    }
}

/// One page of a listing: the rows and the sequence number the next page starts at.
pub(crate) struct Page<'a, T> {
    pub(crate) rows: Vec<&'a T>,
    pub(crate) next: Option<u64>,
}

impl<T> Table<T> {
    /// Inserts (or replaces, keeping its position) the row with `id`.
    pub(crate) fn insert(&mut self, id: String, row: T) {
        if let Some(seq) = self.index.get(&id) {
            if let Some(slot) = self.rows.get_mut(seq) {
                slot.1 = row;
                return;
            }
        }
        let seq = self.next;
        self.next += 1;
        self.index.insert(id.clone(), seq);
        self.rows.insert(seq, (id, row));
    }

    pub(crate) fn get(&self, id: &str) -> Option<&T> {
        self.index
            .get(id)
            .and_then(|seq| self.rows.get(seq))
            .map(|(_, row)| row)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        let seq = self.index.get(id)?;
        self.rows.get_mut(seq).map(|(_, row)| row)
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<T> {
        let seq = self.index.remove(id)?;
        self.rows.remove(&seq).map(|(_, row)| row)
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn values(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.rows.values().map(|(_, row)| row)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.rows.values_mut().map(|(_, row)| row)
    }

    /// Up to `count` rows matching `keep`, starting at sequence number `from`.
    pub(crate) fn page(&self, from: u64, count: usize, keep: impl Fn(&T) -> bool) -> Page<'_, T> {
        let mut rows = Vec::with_capacity(count.min(1024));
        let mut next = None;
        for (seq, (_, row)) in self.rows.range(from..) {
            if !keep(row) {
                continue;
            }
            if rows.len() == count {
                next = Some(*seq);
                break;
            }
            rows.push(row);
        }
        Page { rows, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_resume_after_deletes_without_repeats() {
        let mut t = Table::default();
        for i in 0..10 {
            t.insert(format!("id{i}"), i);
        }
        let first = t.page(0, 4, |_| true);
        assert_eq!(first.rows, vec![&0, &1, &2, &3]);
        let next = first.next.unwrap();
        t.remove("id2");
        t.remove("id4");
        let second = t.page(next, 4, |_| true);
        assert_eq!(second.rows, vec![&5, &6, &7, &8]);
        let last = t.page(second.next.unwrap(), 4, |_| true);
        assert_eq!(last.rows, vec![&9]);
        assert!(last.next.is_none());
        let even = t.page(0, 100, |v| v % 2 == 0);
        assert_eq!(even.rows, vec![&0, &6, &8]);
        t.insert("id0".into(), 100);
        assert_eq!(
            t.values().next(),
            Some(&100),
            "replacing keeps the position"
        );
        assert_eq!(t.len(), 8);
    }
}
