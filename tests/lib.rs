//! blockyard's integration tests: one binary, one module per area, sharing the harness in `support`.

mod demo;
mod exec;
mod generate;
mod guard;
mod http;
mod plan;
mod records;
mod runs;
mod sandbox;
mod seedjobs;
mod serve;
mod server;
mod support;
mod triggers;
mod validate;
