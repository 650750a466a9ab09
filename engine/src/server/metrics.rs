//! `GET /metrics`: the service's metrics in the Prometheus text format (`prometheus-client`).
//!
//! The families are registered once, in one process-wide [`Metrics`] ([`metrics`]), and updated
//! where things happen: a run's start and end (the engine's submit and the end of every run it
//! executes, resumed ones included), every vendor
//! request, in-call retry and rate-limit wait, and each call's duration by preset (the HTTP
//! client), and each store flush ([`crate::store::Store::flush_blocking`], through the hook
//! [`crate::store::observe_flushes`], set when the metrics are first used). Updating one is a
//! label lookup in a pre-registered family and an atomic add. What is a state rather than an
//! event (the queue's depth and its oldest request's age, the runs waiting for approval or
//! retrying) is read from the store when `/metrics` is scraped.
//!
//! | metric | labels |
//! |---|---|
//! | `blockyard_runs_started_total` | `workflow` |
//! | `blockyard_runs_finished_total` | `workflow`, `outcome` (the run's status) |
//! | `blockyard_block_duration_seconds` (histogram) | `preset`: an API block's vendor call, retries included |
//! | `blockyard_vendor_requests_total` | `vendor`, `status` (the HTTP status, or `error` when no answer came) |
//! | `blockyard_vendor_retries_total` | `vendor`: requests sent again within a call |
//! | `blockyard_rate_limit_waits_total` | `vendor`: requests that waited for the rate limiter |
//! | `blockyard_queue_depth` | |
//! | `blockyard_queue_oldest_age_seconds` | 0 when the queue is empty |
//! | `blockyard_runs_waiting` | `status`: `waiting_approval`, `retrying`, `waiting` or `held` |
//! | `blockyard_store_flush_seconds` (histogram) | |
//! | `blockyard_retention_runs_deleted_total` | whole runs `serve`'s retention deleted ([`crate::service::retention`]) |
//! | `blockyard_retention_payloads_pruned_total` | runs whose payloads it blanked |

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::ApiError;
use crate::service::Shared;
use crate::store::api::RunQueue;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkflowLabel {
    pub workflow: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub workflow: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PresetLabel {
    pub preset: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VendorLabel {
    pub vendor: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub vendor: String,
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The registered families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub runs_started: Family<WorkflowLabel, Counter>,
    pub runs_finished: Family<OutcomeLabels, Counter>,
    pub block_duration: Histograms<PresetLabel>,
    pub vendor_requests: Family<RequestLabels, Counter>,
    pub vendor_retries: Family<VendorLabel, Counter>,
    pub rate_limit_waits: Family<VendorLabel, Counter>,
    queue_depth: Gauge,
    queue_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    runs_waiting: Family<StatusLabel, Gauge>,
    pub store_flush: Histogram,
    pub retention_runs_deleted: Counter,
    pub retention_payloads_pruned: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("blockyard");
        let runs_started = Family::<WorkflowLabel, Counter>::default();
        registry.register("runs_started", "Runs started", runs_started.clone());
        let runs_finished = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs finished, by outcome",
            runs_finished.clone(),
        );
        let block_duration: Histograms<PresetLabel> = Family::new_with_constructor(seconds);
        registry.register(
            "block_duration_seconds",
            "An API block's vendor call, retries included",
            block_duration.clone(),
        );
        let vendor_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "vendor_requests",
            "Requests sent to vendors, by answer status",
            vendor_requests.clone(),
        );
        let vendor_retries = Family::<VendorLabel, Counter>::default();
        registry.register(
            "vendor_retries",
            "Vendor requests sent again within a call",
            vendor_retries.clone(),
        );
        let rate_limit_waits = Family::<VendorLabel, Counter>::default();
        registry.register(
            "rate_limit_waits",
            "Vendor requests that waited for the rate limiter",
            rate_limit_waits.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Triggered run requests queued, held ones included",
            queue_depth.clone(),
        );
        let queue_oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest queued run request (0: none)",
            queue_oldest.clone(),
        );
        let runs_waiting = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "runs_waiting",
            "Unfinished runs waiting for approval or for a retry",
            runs_waiting.clone(),
        );
        let store_flush = seconds();
        registry.register(
            "store_flush_seconds",
            "Store flushes (sled flush and fsync)",
            store_flush.clone(),
        );
        let retention_runs_deleted = Counter::default();
        registry.register(
            "retention_runs_deleted",
            "Whole finished runs deleted by retention (`retention.runs_after`)",
            retention_runs_deleted.clone(),
        );
        let retention_payloads_pruned = Counter::default();
        registry.register(
            "retention_payloads_pruned",
            "Finished runs whose payloads retention blanked (`retention.payloads_after`)",
            retention_payloads_pruned.clone(),
        );
        Metrics {
            registry,
            retention_runs_deleted,
            retention_payloads_pruned,
            runs_started,
            runs_finished,
            block_duration,
            vendor_requests,
            vendor_retries,
            rate_limit_waits,
            queue_depth,
            queue_oldest,
            runs_waiting,
            store_flush,
        }
    }

    /// A vendor request answered with `status` (`None`: no answer).
    pub fn vendor_request(&self, vendor: &str, status: Option<u16>) {
        let status = match status {
            Some(code) => code.to_string(),
            None => "error".to_owned(),
        };
        self.vendor_requests
            .get_or_create(&RequestLabels {
                vendor: vendor.to_owned(),
                status,
            })
            .inc();
    }

    pub fn vendor_retry(&self, vendor: &str) {
        self.vendor_retries
            .get_or_create(&VendorLabel {
                vendor: vendor.to_owned(),
            })
            .inc();
    }

    pub fn rate_limit_wait(&self, vendor: &str) {
        self.rate_limit_waits
            .get_or_create(&VendorLabel {
                vendor: vendor.to_owned(),
            })
            .inc();
    }

    pub fn block_took(&self, preset: &crate::preset::PresetId, took: Duration) {
        self.block_duration
            .get_or_create(&PresetLabel {
                preset: preset.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn run_started(&self, workflow: &str) {
        self.runs_started
            .get_or_create(&WorkflowLabel {
                workflow: workflow.to_owned(),
            })
            .inc();
    }

    pub fn run_finished(&self, workflow: &str, outcome: &str) {
        self.runs_finished
            .get_or_create(&OutcomeLabels {
                workflow: workflow.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
        // The store reports its flushes through a hook: it does not import the layers above it.
        crate::store::observe_flushes(|took| metrics().store_flush.observe(took.as_secs_f64()));
        Metrics::new()
    });
    &METRICS
}

/// `GET /metrics` (and `/api/metrics`). Role: viewer.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "the service's metrics in the OpenMetrics text format (Prometheus reads it) (also served at `/metrics`, outside `/api`)", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = super::api::ApiErrorBody), (status = 401, description = "no valid bearer token", body = super::api::ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = super::api::ApiErrorBody)))]
pub(super) async fn serve_metrics(
    State(shared): State<Arc<Shared>>,
    _: super::api::Params<super::api::NoQuery>,
) -> Result<Response, ApiError> {
    let m = metrics();
    let queue = shared.queue.pending().await?;
    m.queue_depth.set(shared.queue.size().await? as i64);
    let oldest = queue
        .iter()
        .map(|e| e.id.datetime())
        .min()
        .map(|at| (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    m.queue_oldest.set(oldest);
    let parked = shared.engine.history().parked_counts().await?;
    for (status, count) in parked {
        m.runs_waiting
            .get_or_create(&StatusLabel {
                status: status.name(),
            })
            .set(count as i64);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry)
        .map_err(super::api::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
