//! blockyard: a workflow automation engine for SaaS user lifecycle work.
//!
//! A workflow is a YAML graph of blocks (Begin → API calls → role retrieval → End). The library is laid
//! out as the pipeline a workflow goes through:
//!
//! 1. [`spec`] reads the YAML into `*Spec` types that mirror it exactly, keeping the line and column
//!    of every key and value so that errors can point at them;
//! 2. [`preset`] holds the vendor presets (Calendly, Webex, SCIM 2.0) that API blocks call, as data;
//! 3. [`compile`] checks a spec against the presets and produces a [`compile::Workflow`]: a petgraph
//!    graph with templates parsed and rhai compiled, or every error found, at once;
//! 4. [`graph`] draws a compiled workflow as mermaid or Graphviz dot, and as the console's SVG.
//!
//! [`http`] performs preset actions against the vendors (credentials, retries, rate limits,
//! pagination, redaction), configured by [`config`] (`blockyard.yaml`).
//!
//! [`exec`] runs a compiled workflow on tokio, recording every step in the history of
//! [`store`]; [`replay`] re-runs a recorded run, live or offline against the recording. [`as_of`] is
//! the instant the time helpers read, so that an offline replay renders as of the recorded run.
//!
//! [`service`] is `blockyard serve`: the scheduler, the trigger queue's worker and the HTTP API of
//! [`server`] over one data dir.
//!
//! [`sandbox`] serves simulated vendors over HTTP for tests, the demo and benchmarks.
//!
//! `fuzzing` (hidden from the docs) holds the properties every parser of hostile input keeps, which
//! the property tests, the fuzz targets of `fuzz/` and the replay of saved failing inputs check.

pub mod as_of;
pub mod compile;
pub mod config;
pub mod exec;
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod http;
pub mod notify;
pub mod plan;
pub mod preset;
pub mod records;
pub mod replay;
pub mod rules;
pub mod sandbox;
pub mod schedule;
pub mod server;
pub mod service;
pub mod spec;
pub mod store;
pub mod template;
pub mod trigger;
