//! blockyard's integration tests: one binary, one module per area, sharing the harness in `support`.

mod generate;
mod http;
mod sandbox;
mod server;
mod support;
mod validate;
