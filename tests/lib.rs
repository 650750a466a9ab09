//! blockyard's integration tests: one binary, one module per area, sharing the harness in `support`.

mod exec;
mod generate;
mod http;
mod sandbox;
mod support;
mod validate;
