//! The store's write gate: every write of the store passes it shared, a backup holds it alone.
//!
//! sled 0.34 has no snapshot to read every tree at one instant, and its own global lock (taken
//! by each transaction) also blocks readers, so a backup cannot read under it. Instead each write
//! of the store's submodules (a sled insert or remove, or one transaction) holds this gate
//! shared, for the write alone; [`super::backup`] takes it exclusively, so while it copies no
//! write is half done and none starts: the copy is the store at one instant, the state a crash at
//! that instant would leave after everything written was flushed (which the engine recovers from
//! by design). Reads never take it.
//!
//! The gate is re-entrant per thread: a write that makes another (a run record setting its
//! timer) does not take it twice, which could deadlock behind a waiting backup.

use std::cell::Cell;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

thread_local! {
    /// How many [`Writing`] guards this thread holds (only the outermost holds the lock).
    static HELD: Cell<u32> = const { Cell::new(0) };
}

/// The gate of one store. Cheap to clone (its clones are the same gate).
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<RwLock<()>>);

/// A write passing the gate: held for the length of one write.
#[must_use]
pub(crate) struct Writing<'a> {
    _guard: Option<RwLockReadGuard<'a, ()>>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        HELD.with(|held| held.set(held.get() - 1));
    }
}

impl Gate {
    /// Waits while a backup copies, then lets one write through.
    pub(crate) fn writing(&self) -> Writing<'_> {
        let outer = HELD.with(|held| {
            let n = held.get();
            held.set(n + 1);
            n == 0
        });
        Writing {
            _guard: outer.then(|| self.0.read().unwrap_or_else(|e| e.into_inner())),
        }
    }

    /// Waits for the writes under way to finish and holds every later one back until dropped.
    pub(crate) fn quiesce(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}
