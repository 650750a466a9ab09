//! The store seam: the data dir's format version, backup and restore, and the behaviour suite
//! every store backend runs ([`suite`]), and what several workers on one store need of it
//! ([`workers`]), and what the vendor client of several workers on PostgreSQL shares ([`vendors`]).

mod backup;
mod format;
mod leases;
mod postgres;
mod suite;
mod vendors;
mod workers;
