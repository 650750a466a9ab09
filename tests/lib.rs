//! blockyard's integration tests: one binary, one module per area, sharing the harness in `support`.

mod auth;
mod browser;
mod console;
mod demo;
mod exec;
mod fuzz;
mod generate;
mod guard;
mod http;
mod notify;
mod plan;
mod records;
mod runs;
mod sandbox;
mod seedjobs;
mod serve;
mod server;
mod store;
mod support;
mod triggers;
mod validate;
