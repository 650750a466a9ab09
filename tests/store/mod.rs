//! The store seam: the data dir's format version, backup and restore, and the behaviour suite
//! every store backend runs ([`suite`]).

mod backup;
mod format;
mod postgres;
mod suite;
