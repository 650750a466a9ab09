//! `max_connections`: how many requests to one credential are open at once, counted by a loopback
//! server that holds each request for a while or until a group of them is open together. The
//! assertions are on counts: a cap the client breaks shows as a higher peak, however slow the
//! machine.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use blockyard::config::Config;
use blockyard::http::Clock;
use blockyard::preset::PresetRegistry;
use serde_json::{json, Value};
use tokio::sync::watch;

/// What the server saw.
#[derive(Debug, Default)]
struct Counts {
    /// Requests being answered now.
    open: usize,
    /// The most ever open at once.
    peak: usize,
    /// Requests received in all.
    seen: usize,
}

struct Gate {
    counts: Mutex<Counts>,
    /// Bumped each time `group` requests are open together, which answers all of them.
    released: watch::Sender<u64>,
    group: usize,
    /// How long a request is held at most when its group does not fill.
    hold: Duration,
}

/// Holds each request until `gate.group` requests are open, or for `gate.hold`.
async fn held(State(gate): State<Arc<Gate>>) -> Json<Value> {
    let mut released = gate.released.subscribe();
    {
        let mut counts = gate.counts.lock().unwrap();
        counts.open += 1;
        counts.seen += 1;
        counts.peak = counts.peak.max(counts.open);
        if counts.open >= gate.group {
            gate.released.send_modify(|generation| *generation += 1);
        }
    }
    let _ = tokio::time::timeout(gate.hold, released.changed()).await;
    gate.counts.lock().unwrap().open -= 1;
    Json(json!({"resource": {"uri": "https://api.calendly.com/users/U1"}}))
}

/// Sends `calls` `calendly.current_user` calls at once through one client whose credential has
/// `cap_line` (a `max_connections` line, or nothing), against a server that answers them in
/// groups of `group` or after `hold`; returns what the server counted.
async fn open_at_once(cap_line: &str, calls: usize, group: usize, hold: Duration) -> Counts {
    let gate = Arc::new(Gate {
        counts: Mutex::new(Counts::default()),
        released: watch::Sender::new(0),
        group,
        hold,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new()
        .fallback(held)
        .with_state(Arc::clone(&gate));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let text = format!(
        "credentials:\n  calendly:\n    vendor: calendly\n    auth: bearer\n    token: t\n    base_url: http://{addr}/calendly\n    rate_limit_per_minute: 0\n{cap_line}"
    );
    let config = Config::parse(Path::new("b.yaml"), &text).unwrap();
    let client = super::client(&config, PresetRegistry::builtin(), Clock::virtual_clock());
    let mut tasks = Vec::new();
    for _ in 0..calls {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            super::call_as(&client, "calendly.current_user", "calendly", &json!({}))
                .await
                .map(|exchange| exchange.response.status)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 200);
    }
    server.abort();
    let counts = std::mem::take(&mut *gate.counts.lock().unwrap());
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_the_requests_open_at_once() {
    // Each request is held 250 ms (the group of 10 never fills), long enough for the other
    // calls to arrive if nothing held them back: without the cap the peak is 10.
    let counts = open_at_once(
        "    max_connections: 2\n",
        10,
        10,
        Duration::from_millis(250),
    )
    .await;
    assert_eq!((counts.seen, counts.peak), (10, 2), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cap_or_under_the_default_every_call_is_open_at_once() {
    // Answered only once all ten are open: a cap below ten would leave them waiting (10 s, then
    // a peak below 10).
    for cap_line in ["    max_connections: 0\n", ""] {
        let counts = open_at_once(cap_line, 10, 10, Duration::from_secs(10)).await;
        assert_eq!(
            (counts.seen, counts.peak),
            (10, 10),
            "{cap_line:?}: {counts:?}"
        );
    }
}
